//! Health-checker scale: 1,000 backends checked over HTTP every second by
//! lb_user's scheduler on ONE thread (a current-thread tokio runtime), as
//! `xlb run` does it. The backends are addresses of 198.18.0.0/16 made
//! local on the loopback of a private namespace, answered by one tiny HTTP
//! server. Reports checks done, the checker thread's CPU time and how far
//! each backend's check period strayed from the interval.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, ensure};
use lb_user::{config::Config, health::Scheduler};
use xlb_testbed::config::{Backend, HealthCheck, Vip, XlbConfig};
use xlb_testbed::netns::NetNs;

use super::say;

pub const BACKENDS: usize = 1000;
pub const INTERVAL_MS: u64 = 1000;

pub struct Results {
    pub run: Duration,
    pub checks: usize,
    pub ok: usize,
    /// CPU time of the checker thread over wall time, in % of one core.
    pub cpu_percent: f64,
    /// |period - interval| in ms: p50, p99, max.
    pub drift_ms: (f64, f64, f64),
}

/// utime + stime, in seconds, from a `/proc/.../stat` file.
fn stat_cpu(path: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(path)?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall.
    let rest = &stat[stat.rfind(')').ok_or_else(|| anyhow!("bad stat"))? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0) // USER_HZ
}

/// utime + stime of the calling thread, in seconds.
fn thread_cpu() -> Result<f64> {
    stat_cpu("/proc/thread-self/stat")
}

/// utime + stime of process `pid`, in seconds.
pub(super) fn process_cpu(pid: u32) -> Result<f64> {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

/// Health-check target `i` of the benches: an address of 198.18.0.0/16,
/// which [`target_namespace`] makes local.
pub(super) fn target(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// A namespace `name` in which every address of 198.18.0.0/16 is local
/// (as 127/8 is), and the listener on port 80 that answers the checks of
/// every [`target`].
pub(super) fn target_namespace(name: &str) -> Result<(NetNs, TcpListener)> {
    let ns = NetNs::create(name)?;
    ns.ip(["link", "set", "lo", "up"])?;
    ns.ip(["route", "add", "local", "198.18.0.0/16", "dev", "lo"])?;
    let listener = ns
        .in_ns(|| TcpListener::bind("0.0.0.0:80"))
        .context("binding the health-check target")?;
    Ok((ns, listener))
}

fn config() -> Result<Config> {
    let health = HealthCheck {
        interval_ms: Some(INTERVAL_MS),
        timeout_ms: Some(500),
        ..HealthCheck::new("http")
    };
    XlbConfig::new("lo")
        .vip(
            Vip::new("scale", Ipv4Addr::new(198, 18, 255, 1), 80)
                .health(health)
                .backends((0..BACKENDS).map(|i| Backend::new(target(i)))),
        )
        .parse()
}

/// Answers every connection with a 200 after reading the request.
fn serve(listener: TcpListener, stop: Arc<AtomicBool>) {
    let _ = listener.set_nonblocking(true);
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut c, _)) => {
                let _ = c.set_nonblocking(false);
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

pub fn run(quick: bool) -> Result<Results> {
    let run = Duration::from_secs(if quick { 5 } else { 10 });
    let name = format!("xh{:05x}", std::process::id() & 0xf_ffff);
    let (ns, listener) = target_namespace(&name)?;
    let stop = Arc::new(AtomicBool::new(false));
    let server = std::thread::spawn({
        let stop = stop.clone();
        move || serve(listener, stop)
    });
    let config = config()?;

    let measured = ns.in_ns(|| -> Result<_> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let (mut s, mut rx) = Scheduler::new();
            let (cpu0, t0) = (thread_cpu()?, Instant::now());
            s.reconcile(&config);
            let mut results: Vec<(IpAddr, Instant, bool)> = Vec::new();
            let end = tokio::time::Instant::now() + run;
            while let Ok(Some(r)) = tokio::time::timeout_at(end, rx.recv()).await {
                results.push((r.addr, Instant::now(), r.outcome.ok));
            }
            Ok((results, thread_cpu()? - cpu0, t0.elapsed()))
        })
    });
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    drop(ns);
    let (results, cpu, wall) = measured?;

    let ok = results.iter().filter(|r| r.2).count();
    let mut by_backend: HashMap<IpAddr, Vec<Instant>> = HashMap::new();
    for (a, t, _) in &results {
        by_backend.entry(*a).or_default().push(*t);
    }
    let mut drift: Vec<f64> = by_backend
        .values()
        .flat_map(|ts| {
            ts.windows(2)
                .map(|w| (w[1].duration_since(w[0]).as_secs_f64() * 1e3 - INTERVAL_MS as f64).abs())
        })
        .collect();
    // Every backend checked in every full interval of the run.
    let expected = BACKENDS * (run.as_millis() as usize / INTERVAL_MS as usize - 1);
    ensure!(
        results.len() >= expected && !drift.is_empty(),
        "only {} checks in {run:?}, want at least {expected}",
        results.len()
    );
    drift.sort_by(f64::total_cmp);
    let pct = |p: f64| drift[((drift.len() - 1) as f64 * p) as usize];
    let r = Results {
        run: wall,
        checks: results.len(),
        ok,
        cpu_percent: 100.0 * cpu / wall.as_secs_f64(),
        drift_ms: (pct(0.5), pct(0.99), pct(1.0)),
    };
    say(&format!(
        "  {} checks ({} ok) in {:.1?}, checker CPU {:.1} % of a core, period error p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        r.checks, r.ok, r.run, r.cpu_percent, r.drift_ms.0, r.drift_ms.1, r.drift_ms.2
    ));
    Ok(r)
}
