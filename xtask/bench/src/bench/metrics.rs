//! What scraping `/metrics` costs.
//!
//! The health checker: the real `xlb run` in a private namespace with one
//! NAT VIP over 1,000 backends checked over HTTP every second (the
//! backends are addresses of 198.18.0.0/16 made local on the namespace's
//! loopback, answered by one small HTTP server in this process, which
//! notes when each backend's check arrives). The run alternates phases
//! without scraping and with one `GET /metrics` per second, and reports
//! each kind's checks per second, period error (the time between two
//! checks of one backend, against the interval) and xlb's CPU time.
//!
//! The data plane: the conntrack-hit case of the data-plane section
//! (BPF_PROG_TEST_RUN) with nobody reading its maps, with a thread that
//! reads every counter a scrape reads once a second, and with one that
//! reads them back to back.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, ensure};
use lb_user::maps::MapStore as _;
use xlb_testbed::config::{Backend, HealthCheck, Vip, XlbConfig};
use xlb_testbed::netns::{BpfDir, TempDir};
use xlb_testbed::topology::spawn_xlb;

use super::health::{process_cpu, target, target_namespace};
use super::{dataplane, median, say};

pub const BACKENDS: usize = 1000;
pub const INTERVAL_MS: u64 = 1000;
const METRICS: &str = "127.0.0.1:9477";
const SCRAPE_EVERY: Duration = Duration::from_secs(1);

/// One kind of phase of the health-checker run.
#[derive(Debug, Clone)]
pub struct HealthRow {
    /// Scraped once a second.
    pub scraping: bool,
    /// Time spent in phases of this kind.
    pub run: Duration,
    pub checks: usize,
    /// |period - interval| in ms: p50, p99, max.
    pub drift_ms: (f64, f64, f64),
    /// xlb's CPU time (every thread) over wall time, in % of one core.
    pub cpu_percent: f64,
    /// Scraping only: how long a scrape took (p50, max, ms) and the page.
    pub scrape_ms: Option<(f64, f64)>,
    pub scrapes: usize,
    pub page_bytes: usize,
}

/// One row of the data-plane part.
#[derive(Debug, Clone)]
pub struct DataplaneRow {
    pub reading: &'static str,
    /// Median of the kernel's average ns per run.
    pub ns: f64,
    /// Rounds of every counter a scrape reads, per second.
    pub reads_per_s: f64,
}

pub struct Results {
    pub health: Vec<HealthRow>,
    pub dataplane: Vec<DataplaneRow>,
    /// Backends of the data-plane fixture (every one's counters are read).
    pub dataplane_backends: u32,
}

pub fn run(xlb_exe: &Path, quick: bool) -> Result<Results> {
    let health = health(xlb_exe, quick).context("health checker with and without scraping")?;
    let (dataplane, dataplane_backends) =
        dataplane_part(quick).context("data plane with and without scraping")?;
    Ok(Results {
        health,
        dataplane,
        dataplane_backends,
    })
}

// ---------------------------------------------------------------------------
// The health checker.

fn config(ifname: &str, state: &Path, socket: &Path, weight: u32) -> XlbConfig {
    let health = HealthCheck {
        interval_ms: Some(INTERVAL_MS),
        timeout_ms: Some(500),
        ..HealthCheck::new("http")
    };
    // NAT: a backend needs no neighbour entry to be usable, so the
    // neighbour refresh has nothing to chase.
    XlbConfig::new(ifname)
        .xdp_mode("generic")
        .state_dir(state)
        .control_socket(socket)
        .metrics(METRICS.parse().expect("an address"))
        .vip(
            Vip::new("scale", Ipv4Addr::new(198, 19, 255, 1), 80)
                .nat()
                .health(health)
                .backends((0..BACKENDS).map(|i| Backend::new(target(i)).weight(weight))),
        )
}

/// Answers every check with a 200 and notes which backend address it was
/// for and when, until `stop`.
fn serve(listener: TcpListener, seen: Arc<Mutex<Vec<(IpAddr, Instant)>>>, stop: Arc<AtomicBool>) {
    let _ = listener.set_nonblocking(true);
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut c, _)) => {
                let at = Instant::now();
                if let Ok(local) = c.local_addr() {
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((local.ip(), at));
                }
                let _ = c.set_nonblocking(false);
                let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// `GET /metrics` from the calling thread's namespace: the page.
fn scrape(addr: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8(buf).context("the page is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no response head"))?;
    ensure!(head.starts_with("HTTP/1.1 200 "), "scrape: {head}");
    ensure!(body.ends_with("# EOF\n"), "a page without # EOF");
    Ok(body.to_owned())
}

/// Phases of one kind: their spans, and the scrapes made in them.
struct Phase {
    scraping: bool,
    from: Instant,
    to: Instant,
    cpu_s: f64,
    scrapes: Vec<(Duration, usize)>,
}

fn health(xlb_exe: &Path, quick: bool) -> Result<Vec<HealthRow>> {
    let phase_len = Duration::from_secs(if quick { 4 } else { 10 });
    let phases = if quick { 2 } else { 4 };
    let name = format!("xm{:05x}", std::process::id() & 0xf_ffff);
    let (ns, listener) = target_namespace(&name)?;
    let dir = TempDir::create(&name)?;
    let state = BpfDir::create(&name)?;
    let ifname = format!("{name}a");
    ns.add_veth_pair(&ifname, &format!("{name}b"))?;
    ns.sysctl(&["net.ipv4.ip_forward=1"])?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let server = std::thread::spawn({
        let (seen, stop) = (seen.clone(), stop.clone());
        move || serve(listener, seen, stop)
    });
    let socket = dir.path().join("xlb.sock");
    // Drained at first: each backend whose first check passes would
    // otherwise install a new ring, one after the other (a ring install
    // waits for an RCU grace period, about 100 ms here), and 1,000 of
    // them take minutes. Once every check has passed, a reload with
    // weight 1 installs one ring with all of them.
    let conf = dir.path().join("xlb.toml");
    let path = config(&ifname, state.path(), &socket, 0).write(&conf)?;
    let xlb = spawn_xlb(
        &ns,
        "xlb (metrics bench)",
        xlb_exe,
        &path,
        &[],
        &socket,
        dir.path().join("xlb.log"),
    )?;
    let measured = (|| -> Result<Vec<Phase>> {
        xlb.wait_status(
            "every backend's first check passed",
            Duration::from_secs(30),
            |st| {
                st.vips.iter().all(|v| {
                    v.backends.iter().all(|b| {
                        b.health
                            .as_ref()
                            .is_some_and(|h| h.state == lb_user::api::Health::Up)
                    })
                })
            },
        )?;
        config(&ifname, state.path(), &socket, 1).write(&conf)?;
        xlb.reload()?;
        xlb.wait_ready(Duration::from_secs(30))?;
        // Every check's random start offset has passed.
        std::thread::sleep(Duration::from_millis(INTERVAL_MS * 2));
        let addr: SocketAddr = METRICS.parse()?;
        let mut out = Vec::new();
        for k in 0..phases * 2 {
            let scraping = k % 2 == 1;
            let (from, cpu0) = (Instant::now(), process_cpu(xlb.pid())?);
            let mut scrapes = Vec::new();
            while from.elapsed() < phase_len {
                let tick = Instant::now();
                if scraping {
                    let page = ns.in_ns(|| scrape(addr))?;
                    scrapes.push((tick.elapsed(), page.len()));
                }
                let next = (tick + SCRAPE_EVERY).min(from + phase_len);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            out.push(Phase {
                scraping,
                from,
                to: Instant::now(),
                cpu_s: process_cpu(xlb.pid())? - cpu0,
                scrapes,
            });
        }
        Ok(out)
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    let log = xlb.log_tail(20);
    drop(xlb);
    drop(ns);
    let phases = measured.with_context(|| format!("--- xlb log ---\n{log}"))?;
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    let rows: Vec<HealthRow> = [false, true]
        .into_iter()
        .map(|scraping| summarize(&phases, &seen, scraping))
        .collect::<Result<_>>()?;
    for r in &rows {
        let scraped = match r.scrape_ms {
            Some((p50, max)) => format!(
                ", {} scrapes of {} KiB: p50 {p50:.1} ms, max {max:.1} ms",
                r.scrapes,
                r.page_bytes / 1024
            ),
            None => String::new(),
        };
        say(&format!(
            "  {}: {} checks in {:.1?}, xlb CPU {:.1} % of a core, period error p50 {:.1} ms, \
             p99 {:.1} ms, max {:.1} ms{scraped}",
            if r.scraping {
                "1 scrape/s"
            } else {
                "no scrape "
            },
            r.checks,
            r.run,
            r.cpu_percent,
            r.drift_ms.0,
            r.drift_ms.1,
            r.drift_ms.2
        ));
    }
    Ok(rows)
}

/// The figures of the phases of one kind.
fn summarize(phases: &[Phase], seen: &[(IpAddr, Instant)], scraping: bool) -> Result<HealthRow> {
    let mine: Vec<&Phase> = phases.iter().filter(|p| p.scraping == scraping).collect();
    let inside = |t: Instant| mine.iter().any(|p| p.from <= t && t < p.to);
    let checks = seen.iter().filter(|(_, t)| inside(*t)).count();
    let mut by_backend: HashMap<IpAddr, Vec<Instant>> = HashMap::new();
    for (a, t) in seen {
        by_backend.entry(*a).or_default().push(*t);
    }
    // A period counts for the kind of phase both its checks fell in.
    let mut drift: Vec<f64> = by_backend
        .values()
        .flat_map(|ts| ts.windows(2))
        .filter(|w| mine.iter().any(|p| p.from <= w[0] && w[1] < p.to))
        .map(|w| (w[1].duration_since(w[0]).as_secs_f64() * 1e3 - INTERVAL_MS as f64).abs())
        .collect();
    let run: Duration = mine.iter().map(|p| p.to - p.from).sum();
    let expected =
        BACKENDS * (run.as_millis() as usize / INTERVAL_MS as usize).saturating_sub(mine.len());
    ensure!(
        checks >= expected && !drift.is_empty(),
        "only {checks} checks in {run:?} of phases with scraping {scraping}, want at least {expected}"
    );
    drift.sort_by(f64::total_cmp);
    let pct = |p: f64| drift[((drift.len() - 1) as f64 * p) as usize];
    let mut ms: Vec<f64> = mine
        .iter()
        .flat_map(|p| p.scrapes.iter().map(|(d, _)| d.as_secs_f64() * 1e3))
        .collect();
    let scrapes = ms.len();
    let page_bytes = mine
        .iter()
        .flat_map(|p| p.scrapes.iter().map(|(_, n)| *n))
        .max()
        .unwrap_or(0);
    let scrape_ms = (!ms.is_empty()).then(|| {
        let max = ms.iter().copied().fold(0.0, f64::max);
        (median(&mut ms), max)
    });
    Ok(HealthRow {
        scraping,
        run,
        checks,
        drift_ms: (pct(0.5), pct(0.99), pct(1.0)),
        cpu_percent: 100.0 * mine.iter().map(|p| p.cpu_s).sum::<f64>() / run.as_secs_f64(),
        scrape_ms,
        scrapes,
        page_bytes,
    })
}

// ---------------------------------------------------------------------------
// The data plane.

/// Every counter a scrape reads from the maps: the VIP's, each backend's,
/// the global ones, the drops, the connection table's.
fn read_all(maps: &lb_user::maps::Maps, backends: u32) -> Result<()> {
    maps.vip_counters(0)?;
    for id in 1..=backends {
        maps.backend_counters(id)?;
    }
    maps.globals()?;
    maps.drops()?;
    maps.conntrack_stats()?;
    Ok(())
}

fn dataplane_part(quick: bool) -> Result<(Vec<DataplaneRow>, u32)> {
    // Enough calls (of a million runs each) to span several seconds, so
    // that the once-a-second reader reads during some of them.
    let calls = if quick { 40 } else { 120 };
    let scale = (1, 1000);
    let (case, frame, dp, maps) = dataplane::hit4(scale)?;
    let mut rows = Vec::new();
    for (reading, every) in [
        ("nobody", None),
        ("every counter once a second", Some(SCRAPE_EVERY)),
        ("every counter back to back", Some(Duration::ZERO)),
    ] {
        let before = maps.conntrack_stats()?;
        let stop = AtomicBool::new(false);
        let rounds = AtomicU64::new(0);
        let started = Instant::now();
        let ns = std::thread::scope(|s| -> Result<f64> {
            let (maps, stop, rounds) = (&maps, &stop, &rounds);
            let reader = every.map(|every| {
                s.spawn(move || -> Result<()> {
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        read_all(maps, scale.1)?;
                        rounds.fetch_add(1, Ordering::Relaxed);
                        while t.elapsed() < every && !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                    Ok(())
                })
            });
            let ns = dataplane::measure(dp.program(), &frame, case.verdict, calls);
            stop.store(true, Ordering::Relaxed);
            if let Some(r) = reader {
                r.join().map_err(|_| anyhow!("the reader panicked"))??;
            }
            ns
        })?;
        let elapsed = started.elapsed().as_secs_f64();
        dataplane::check_conntrack(&case, &before, &maps.conntrack_stats()?, calls)?;
        let reads_per_s = rounds.load(Ordering::Relaxed) as f64 / elapsed;
        say(&format!(
            "  conntrack hit, counters read by {reading}: {ns:.1} ns/packet \
             ({reads_per_s:.1} reads of {} backends' counters per second)",
            scale.1
        ));
        rows.push(DataplaneRow {
            reading,
            ns,
            reads_per_s,
        });
    }
    drop(dp);
    Ok((rows, scale.1))
}
