//! Connection sync (`[sync]`) between the two nodes of a VRRP pair, with
//! the real `xlb run` in the DSR topology: node 1 master, node 2 backup,
//! each sending the flows its data plane reports to the other.
//! * Lag: single new flows (one SYN each, written onto the client's
//!   segment), one every [`LAG_GAP`]; each is timed from just before its
//!   frame leaves the client to the moment its entry exists in node 2's
//!   pinned `FLOWS`, which this process busy-polls.
//! * Throughput: a flood of new flows from many source ports through node
//!   1; both nodes' sync counters are sampled every [`SAMPLE_EVERY`] over
//!   the control sockets until node 2's table holds every flow node 1
//!   inserted (or [`CONVERGE_TIMEOUT`]).

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use lb_common::{FlowKey, IPPROTO_TCP};
use lb_user::api::{Reply, Request, Status};
use xlb_testbed::config::{ConnSync, Conntrack, XlbConfig};
use xlb_testbed::frames::{Frame, key4};
use xlb_testbed::inject::{self, FrameSender};
use xlb_testbed::pinned::Flows;
use xlb_testbed::topology::{Topology, VIP_PORT, VIP4, Xlb};

use super::failover::{BACKENDS, BACKUP_PRIORITY, MASTER_PRIORITY, vrrp_config, wait_vrrp};
use super::say;

/// The sweep's period (`sync.refresh_s`): what the ring buffer lost
/// reaches the peer with the next sweep.
pub const REFRESH_S: u32 = 2;
/// VRRP adverts every second: a loaded machine does not make the backup
/// take over in the middle of the flood (master-down interval 3.6 s).
pub const ADVERT_CS: u16 = 100;
/// Time between the starts of two single flows of the lag figure.
pub const LAG_GAP: Duration = Duration::from_millis(10);
/// A single flow not on node 2 by then counts as missing.
pub const LAG_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the flood's counters are read.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// How long node 2 gets to hold every flood flow.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Sources of the single flows and of the flood: off the segment, so the
/// backends' answers go nowhere and no client resets them.
const LAG_SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 101, 1);
const LAG_FIRST_PORT: u16 = 20_000;
const FLOOD_FIRST: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
/// Every flood flow's source is in 198.18.100.0/24 (50,000 ports per
/// address: far fewer than 256 addresses).
const FLOOD_PREFIX: [u8; 3] = [198, 18, 100];

/// Single flows timed for the lag.
pub fn lag_flows(quick: bool) -> usize {
    if quick { 50 } else { 200 }
}

/// New flows in the flood.
pub fn flood_flows(quick: bool) -> usize {
    if quick { 30_000 } else { 100_000 }
}

/// First packet on node 1 → entry in node 2's table.
#[derive(Debug, Clone)]
pub struct Lag {
    /// Single flows sent, and of them seen on node 2 within [`LAG_TIMEOUT`].
    pub flows: usize,
    pub seen: usize,
    /// New entries node 1's data plane made meanwhile (its `insert`).
    pub inserted: u64,
    /// Over the flows seen, µs.
    pub median_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Node 1's own figure (first packet → entry sent), from its status
    /// after these flows, µs.
    pub sender_median_us: Option<u64>,
    pub sender_p99_us: Option<u64>,
    /// Node 1's reports read meanwhile (what its figure is over).
    pub sender_reports: u64,
}

/// A counter's progress: its change between the first and the last sample
/// that saw it move, over the time between those samples.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// The whole change in the window (from the last value before it).
    pub total: u64,
    /// First → last moving sample.
    pub over: Duration,
    /// (last − first moving sample's value) / `over`; when only one sample
    /// moved, the change since the sample before over the time since it.
    pub per_s: f64,
}

/// The flood.
#[derive(Debug, Clone)]
pub struct Flood {
    /// SYNs asked for, written, and how long the writing took.
    pub asked: usize,
    pub sent: usize,
    pub took: Duration,
    /// Node 1's new entries (conntrack `insert`), and its data plane's
    /// reports: queued on the ring buffer, lost (ring full), and read by
    /// its sync.
    pub inserted: u64,
    pub reported: u64,
    pub lost: u64,
    pub read: u64,
    /// Before node 1's first sweep after the flood's start: the ring
    /// buffer's reports only.
    pub live_sent: Option<Rate>,
    pub live_installed: Option<Rate>,
    /// From that sweep on, until node 2 held every flood flow (nothing if
    /// it did before): sent by node 1, and received by node 2 (installed,
    /// or already held: an entry it has from the reports is kept).
    pub sweep_sent: Option<Rate>,
    pub sweep_received: Option<Rate>,
    /// Flood flows in node 1's table, and of them in node 2's at the end.
    pub want: usize,
    pub have: usize,
    /// Flood start → node 2 holds every one of them (`None`: not within
    /// [`CONVERGE_TIMEOUT`]), and whether that time is the sample of node
    /// 2's install counter that first counted them all (before any sweep,
    /// confirmed by the first look into its table; to within a sample) or
    /// the end of the look into its table that found the last of them.
    pub converged: Option<(Duration, bool)>,
    /// Sweeps node 1 began after the flood's start, until convergence.
    pub sweeps: u64,
}

#[derive(Debug, Clone)]
pub struct Results {
    pub lag: Lag,
    pub flood: Flood,
    /// Anything that looked wrong: counters of drops and errors that
    /// moved, reports that do not add up, VRRP states that changed.
    pub notes: Vec<String>,
}

/// `status` over the control socket (no `xlb status` process per sample).
fn status(socket: &Path) -> Result<Status> {
    match lb_user::ctl::call(socket, &Request::Status)? {
        Reply::Status(s) => Ok(*s),
        Reply::Ok { message } | Reply::Error { message } => {
            bail!("status on {}: {message}", socket.display())
        }
        Reply::Trace(_) => bail!("status on {}: a trace reply", socket.display()),
    }
}

/// A sync counter (0 until the first event of its kind).
fn counter(s: &Status, name: &str) -> u64 {
    s.sync
        .as_ref()
        .and_then(|y| y.counters.get(name).copied())
        .unwrap_or(0)
}

fn inserts(s: &Status) -> u64 {
    s.conntrack.get("insert").copied().unwrap_or(0)
}

/// A fresh 32-byte key, hex, readable by its owner only.
fn write_key(dir: &Path) -> Result<PathBuf> {
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .context("reading /dev/urandom")?;
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join("sync.key");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{hex}"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn node_config(topo: &Topology, n: usize, priority: u8, key_file: &Path) -> XlbConfig {
    let mut vrrp = vrrp_config(priority);
    for g in &mut vrrp.groups {
        g.advert_interval_cs = Some(ADVERT_CS);
    }
    topo.node_config(n, &[1; BACKENDS])
        .vrrp(vrrp)
        .sync(ConnSync {
            peers: Some(vec![topo.node_addr4(3 - n).into()]),
            key_file: key_file.to_owned(),
            refresh_s: Some(REFRESH_S),
            ..ConnSync::default()
        })
        .conntrack(Conntrack {
            new_flows_per_cpu: Some(0),
            ..Conntrack::default()
        })
}

fn start_node(topo: &Topology, xlb_exe: &Path, n: usize, priority: u8, key: &Path) -> Result<Xlb> {
    let path =
        node_config(topo, n, priority, key).write(&topo.dir().join(format!("xlb{n}.toml")))?;
    let xlb = topo.start_node(n, xlb_exe, &path)?;
    xlb.wait_ready(Duration::from_secs(20))?;
    Ok(xlb)
}

/// `sorted[q]`, as xlb's status picks its lag quantiles.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub fn run(xlb_exe: &Path, quick: bool) -> Result<Results> {
    let topo = Topology::vrrp_pair(BACKENDS)?;
    say(&format!("  topology {} ready", topo.prefix()));
    let key = write_key(topo.dir())?;
    let x1 = start_node(&topo, xlb_exe, 1, MASTER_PRIORITY, &key)?;
    wait_vrrp(&x1, 1, "master")?;
    let x2 = start_node(&topo, xlb_exe, 2, BACKUP_PRIORITY, &key)?;
    wait_vrrp(&x2, 2, "backup")?;
    // Node 1 heard node 2's hello: it sends to a peer that listens.
    // (Node 1's own hello went out before node 2 ran, and the full table
    // it answers with is empty, so node 2 hears nothing before the first
    // flow.)
    x1.wait_status(
        "node 1 accepting node 2's hello",
        Duration::from_secs(10),
        |s| counter(s, "hellos_received") > 0,
    )?;
    let (s1, s2) = (topo.node_socket(1), topo.node_socket(2));
    let (first1, first2) = (status(&s1)?, status(&s2)?);

    say(&format!(
        "  lag: {} single flows, one every {} ms",
        lag_flows(quick),
        LAG_GAP.as_millis()
    ));
    let lag = lag(&topo, lag_flows(quick))?;
    say(&format!(
        "  lag: {} of {} seen on node 2; median {:.0} µs, p99 {:.0} µs, max {:.0} µs; \
         node 1's own: median {:?} µs, p99 {:?} µs",
        lag.seen,
        lag.flows,
        lag.median_us,
        lag.p99_us,
        lag.max_us,
        lag.sender_median_us,
        lag.sender_p99_us
    ));

    say(&format!(
        "  throughput: a flood of {} new flows",
        flood_flows(quick)
    ));
    let flood = flood(&topo, flood_flows(quick))?;
    say(&format!(
        "  flood: {} SYNs in {:.0} ms; node 1 inserted {}, reported {}, lost {}; node 2 holds {} \
         of {} {}",
        flood.sent,
        flood.took.as_secs_f64() * 1e3,
        flood.inserted,
        flood.reported,
        flood.lost,
        flood.have,
        flood.want,
        flood.converged.map_or_else(
            || format!("after {} s (timed out)", CONVERGE_TIMEOUT.as_secs()),
            |(t, _)| format!("{:.0} ms after the flood began", t.as_secs_f64() * 1e3)
        )
    ));

    let (last1, last2) = (status(&s1)?, status(&s2)?);
    let mut notes = Vec::new();
    for (n, first, last) in [(1, &first1, &last1), (2, &first2, &last2)] {
        notes.extend(moved_errors(n, first, last));
    }
    let (read, reported) = (
        counter(&last1, "events_read") - counter(&first1, "events_read"),
        counter(&last1, "events_reported") - counter(&first1, "events_reported"),
    );
    if read != reported {
        notes.push(format!(
            "node 1's sync read {read} reports, its data plane queued {reported}"
        ));
    }
    if lag.inserted != lag.flows as u64 {
        notes.push(format!(
            "node 1 inserted {} entries for the {} single flows",
            lag.inserted, lag.flows
        ));
    }
    if flood.reported + flood.lost != flood.inserted {
        notes.push(format!(
            "node 1 inserted {} flood flows but reported {} and lost {} reports",
            flood.inserted, flood.reported, flood.lost
        ));
    }
    if flood.want as u64 != flood.inserted {
        notes.push(format!(
            "node 1's table holds {} flood flows, its insert counter says {}",
            flood.want, flood.inserted
        ));
    }
    for (n, s, want) in [(1, &last1, "master"), (2, &last2, "backup")] {
        let states: Vec<String> = s
            .vrrp
            .iter()
            .flat_map(|v| v.groups.iter().map(|g| g.state.clone()))
            .collect();
        if states.iter().any(|st| st != want) {
            notes.push(format!(
                "node {n}'s VRRP groups ended {states:?}, not {want}"
            ));
        }
    }
    for n in &notes {
        say(&format!("  note: {n}"));
    }
    x2.stop(Duration::from_secs(3));
    x1.stop(Duration::from_secs(3));
    Ok(Results { lag, flood, notes })
}

/// Drop and error counters of node `n`'s sync that moved between `first`
/// and `last`.
fn moved_errors(n: usize, first: &Status, last: &Status) -> Vec<String> {
    let bad = |name: &str| {
        name.starts_with("dropped_")
            || name.starts_with("not_sent_")
            || name.ends_with("_errors")
            || name.starts_with("flows_unknown_")
            || name == "flows_mode_mismatch"
    };
    let empty = BTreeMap::new();
    let counters = |s: &Status| s.sync.as_ref().map(|y| y.counters.clone());
    let (a, b) = (
        counters(first).unwrap_or_else(|| empty.clone()),
        counters(last).unwrap_or(empty),
    );
    b.iter()
        .filter(|(name, _)| bad(name))
        .filter_map(|(name, v)| {
            let d = v.saturating_sub(a.get(name).copied().unwrap_or(0));
            (d > 0).then(|| format!("node {n}: sync counter {name} +{d}"))
        })
        .collect()
}

/// Single flows from the client, each timed to its entry on node 2.
fn lag(topo: &Topology, flows: usize) -> Result<Lag> {
    let client_if = topo.client_ifname();
    let sender = FrameSender::open(topo.client(), &client_if)?;
    let src_mac = inject::mac_of(topo.client(), &client_if)?;
    let dst_mac = inject::mac_of(topo.node(1), &topo.node_ifname(1))?;
    let table2 = Flows::open(&topo.state_dir("lb2"))?;
    let s1 = topo.node_socket(1);
    let before = status(&s1)?;
    let mut lags_us = Vec::with_capacity(flows);
    for i in 0..flows {
        let sport = LAG_FIRST_PORT + u16::try_from(i)?;
        let frame = Frame::new(src_mac, dst_mac, LAG_SRC, VIP4).tcp(sport, VIP_PORT, "S", &[]);
        let key = key4(LAG_SRC, VIP4, sport, VIP_PORT, IPPROTO_TCP);
        ensure!(
            table2.get(&key)?.is_none(),
            "node 2 has flow {LAG_SRC}:{sport} before it was sent"
        );
        let t0 = Instant::now();
        sender.send(&frame)?;
        loop {
            if table2.get(&key)?.is_some() {
                lags_us.push(t0.elapsed().as_secs_f64() * 1e6);
                break;
            }
            if t0.elapsed() > LAG_TIMEOUT {
                break;
            }
            // Busy, but letting the nodes' threads in on a shared core.
            std::thread::yield_now();
        }
        std::thread::sleep((t0 + LAG_GAP).saturating_duration_since(Instant::now()));
    }
    let after = status(&s1)?;
    ensure!(
        !lags_us.is_empty(),
        "none of the {flows} single flows reached node 2 within {LAG_TIMEOUT:?}"
    );
    lags_us.sort_by(f64::total_cmp);
    let sync1 = after
        .sync
        .as_ref()
        .ok_or_else(|| anyhow!("node 1's status has no sync"))?;
    Ok(Lag {
        flows,
        seen: lags_us.len(),
        inserted: inserts(&after) - inserts(&before),
        median_us: quantile(&lags_us, 0.5),
        p99_us: quantile(&lags_us, 0.99),
        max_us: *lags_us.last().unwrap_or(&0.0),
        sender_median_us: sync1.lag_us_median,
        sender_p99_us: sync1.lag_us_p99,
        sender_reports: counter(&after, "events_read") - counter(&before, "events_read"),
    })
}

/// One reading of both nodes, each with the time since the flood's start
/// at which it was asked for.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at1: Duration,
    sent: u64,
    sweeps: u64,
    at2: Duration,
    installed: u64,
    /// Flows node 2 took in (installed, or kept its own newer entry).
    received: u64,
}

fn sample_loop(
    s1: &Path,
    s2: &Path,
    start: Instant,
    stop: &AtomicBool,
    out: &Mutex<Vec<Sample>>,
) -> Result<()> {
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let at1 = start.elapsed();
        let a = status(s1)?;
        let at2 = start.elapsed();
        let b = status(s2)?;
        out.lock()
            .map_err(|_| anyhow!("samples poisoned"))?
            .push(Sample {
                at1,
                sent: counter(&a, "flows_sent"),
                sweeps: counter(&a, "sweeps"),
                at2,
                installed: counter(&b, "flows_installed"),
                received: counter(&b, "flows_received"),
            });
        next += SAMPLE_EVERY;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(())
}

/// The progress of the counter `points` give (time, value) from `base`:
/// see [`Rate`]. `None` if it never moved.
fn rate(points: &[(Duration, u64)], base: (Duration, u64)) -> Option<Rate> {
    let mut prev = base;
    let mut moved = Vec::new();
    for (i, &p) in points.iter().enumerate() {
        if p.1 > prev.1 {
            moved.push(i);
        }
        prev = p;
    }
    let (&first, &last) = (moved.first()?, moved.last()?);
    let before = if first == 0 { base } else { points[first - 1] };
    let total = points[last].1 - before.1;
    let (from, flows) = if first == last {
        (before.0, total)
    } else {
        (points[first].0, points[last].1 - points[first].1)
    };
    let over = points[last].0.saturating_sub(from);
    Some(Rate {
        total,
        over,
        per_s: flows as f64 / over.as_secs_f64().max(1e-6),
    })
}

fn flood_key(k: &FlowKey) -> bool {
    lb_common::words_to_bytes(&k.src)[..3] == FLOOD_PREFIX
}

/// The flood, sampled until node 2 holds every flood flow of node 1.
fn flood(topo: &Topology, count: usize) -> Result<Flood> {
    let (s1, s2) = (topo.node_socket(1), topo.node_socket(2));
    let client_if = topo.client_ifname();
    let src_mac = inject::mac_of(topo.client(), &client_if)?;
    let dst_mac = inject::mac_of(topo.node(1), &topo.node_ifname(1))?;
    let vip = SocketAddr::new(VIP4.into(), VIP_PORT);
    let (state1, state2) = (topo.state_dir("lb1"), topo.state_dir("lb2"));

    // Right after a sweep of node 1: the next is a whole period away, so
    // the first samples see the ring buffer's reports alone.
    let sweeps0 = counter(&status(&s1)?, "sweeps");
    let deadline = Instant::now() + Duration::from_secs(u64::from(3 * REFRESH_S));
    while counter(&status(&s1)?, "sweeps") == sweeps0 {
        ensure!(
            Instant::now() < deadline,
            "node 1 ran no sweep in {} s",
            3 * REFRESH_S
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // That sweep's own messages (flows of the lag figure) go first.
    let progress = || -> Result<(u64, u64)> {
        Ok((
            counter(&status(&s1)?, "flows_sent"),
            counter(&status(&s2)?, "flows_installed"),
        ))
    };
    let mut last = progress()?;
    loop {
        std::thread::sleep(Duration::from_millis(30));
        let now = progress()?;
        if now == last {
            break;
        }
        last = now;
    }
    let (b1, b2) = (status(&s1)?, status(&s2)?);
    let base = Sample {
        at1: Duration::ZERO,
        sent: counter(&b1, "flows_sent"),
        sweeps: counter(&b1, "sweeps"),
        at2: Duration::ZERO,
        installed: counter(&b2, "flows_installed"),
        received: counter(&b2, "flows_received"),
    };
    let samples = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let latest = || samples.lock().ok().and_then(|s| s.last().copied());
    let start = Instant::now();
    let (flooded, want, have, converged) = std::thread::scope(|s| -> Result<_> {
        let sampler = s.spawn(|| sample_loop(&s1, &s2, start, &stop, &samples));
        let result = (|| -> Result<_> {
            let flooded = inject::syn_flood(
                topo.client(),
                &client_if,
                src_mac,
                dst_mac,
                FLOOD_FIRST,
                vip,
                count,
            )?;
            let inserted = inserts(&status(&s1)?) - inserts(&b1);
            ensure!(inserted > 0, "no flood SYN made an entry on node 1");
            // Node 1's table is walked once the live reports are done with
            // (node 2 installed as many, or nothing moved for 100 ms, or
            // a sweep began), so that the walk does not compete with them.
            let mut moved = (Instant::now(), None);
            while start.elapsed() < CONVERGE_TIMEOUT {
                if let Some(l) = latest() {
                    if moved.1 != Some((l.sent, l.installed)) {
                        moved = (Instant::now(), Some((l.sent, l.installed)));
                    }
                    if l.installed - base.installed >= inserted
                        || l.sweeps != base.sweeps
                        || moved.0.elapsed() >= Duration::from_millis(100)
                    {
                        break;
                    }
                }
                std::thread::sleep(SAMPLE_EVERY / 2);
            }
            let mut missing: Vec<FlowKey> = Flows::open(&state1)?
                .all()
                .into_iter()
                .map(|(k, _)| k)
                .filter(flood_key)
                .collect();
            let want = missing.len();
            let table2 = Flows::open(&state2)?;
            // Each flow needs one install on node 2 at least: its table is
            // looked into only when the counter says it can be complete,
            // and then only for the flows still missing.
            let mut first_pass = true;
            let converged = loop {
                let timed_out = start.elapsed() > CONVERGE_TIMEOUT;
                let gate = latest().filter(|l| l.installed - base.installed >= want as u64);
                if gate.is_some() || timed_out {
                    let mut err = None;
                    missing.retain(|k| match table2.get(k) {
                        Ok(v) => v.is_none(),
                        Err(e) => {
                            err = Some(e);
                            true
                        }
                    });
                    if let Some(e) = err {
                        return Err(e);
                    }
                    if missing.is_empty() {
                        // Before any sweep, node 1 sent each flood flow
                        // once: a count of `want` installs then means all
                        // were in by the first sample that counted them
                        // (found below), which this first look confirms.
                        // Otherwise: by the end of this look.
                        let by_counter =
                            first_pass && gate.is_some_and(|g| g.sweeps == base.sweeps);
                        break Some((start.elapsed(), by_counter));
                    }
                    first_pass = false;
                }
                if timed_out {
                    break None;
                }
                std::thread::sleep(SAMPLE_EVERY);
            };
            Ok((flooded, want, want - missing.len(), converged))
        })();
        stop.store(true, Ordering::Relaxed);
        sampler
            .join()
            .map_err(|_| anyhow!("the sampler panicked"))??;
        result
    })?;
    let f1 = status(&s1)?;
    let samples = samples
        .into_inner()
        .map_err(|_| anyhow!("samples poisoned"))?;
    // Until the sweep: the ring buffer's reports; from it on: the sweep.
    let split = |ps: &[Sample]| {
        ps.iter()
            .position(|p| p.sweeps != base.sweeps)
            .unwrap_or(ps.len())
    };
    // The counter's first sample that counted them all (see above).
    let converged = converged.map(|(t, by_counter)| {
        samples[..split(&samples)]
            .iter()
            .find(|p| by_counter && p.installed - base.installed >= want as u64)
            .map_or((t, false), |p| (p.at2, true))
    });
    // Nothing after convergence counts.
    let end = converged.map_or(Duration::MAX, |(t, _)| t);
    let samples: Vec<Sample> = samples.into_iter().filter(|p| p.at2 <= end).collect();
    let (live, sweep) = samples.split_at(split(&samples));
    let sent = |ps: &[Sample]| ps.iter().map(|p| (p.at1, p.sent)).collect::<Vec<_>>();
    let installed = |ps: &[Sample]| ps.iter().map(|p| (p.at2, p.installed)).collect::<Vec<_>>();
    let received = |ps: &[Sample]| ps.iter().map(|p| (p.at2, p.received)).collect::<Vec<_>>();
    let last_live = live.last().copied().unwrap_or(base);
    let delta = |name: &str| counter(&f1, name) - counter(&b1, name);
    Ok(Flood {
        asked: count,
        sent: flooded.sent,
        took: flooded.took,
        inserted: inserts(&f1) - inserts(&b1),
        reported: delta("events_reported"),
        lost: delta("events_lost"),
        read: delta("events_read"),
        live_sent: rate(&sent(live), (base.at1, base.sent)),
        live_installed: rate(&installed(live), (base.at2, base.installed)),
        sweep_sent: rate(&sent(sweep), (last_live.at1, last_live.sent)),
        sweep_received: rate(&received(sweep), (last_live.at2, last_live.received)),
        want,
        have,
        converged,
        sweeps: samples.last().map_or(0, |p| p.sweeps - base.sweeps),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn rate_spans_the_first_to_the_last_moving_sample() {
        let points = [
            (ms(20), 0),
            (ms(40), 100),
            (ms(60), 300),
            (ms(80), 500),
            (ms(100), 500),
        ];
        let r = rate(&points, (ms(0), 0)).unwrap();
        assert_eq!(r.total, 500);
        assert_eq!(r.over, ms(40));
        assert!((r.per_s - 10_000.0).abs() < 1e-6);
    }

    #[test]
    fn rate_of_a_single_move_counts_from_the_sample_before() {
        let points = [(ms(20), 7), (ms(40), 57), (ms(60), 57)];
        let r = rate(&points, (ms(0), 7)).unwrap();
        assert_eq!(r.total, 50);
        assert_eq!(r.over, ms(20));
        assert!((r.per_s - 2_500.0).abs() < 1e-6);
        assert!(rate(&points[2..], (ms(40), 57)).is_none());
    }

    #[test]
    fn quantiles_pick_as_the_status_does() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 51.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[3.0], 0.99), 3.0);
    }
}
