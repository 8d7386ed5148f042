//! Control-plane reaction times, end to end with the real `xlb run` in
//! lb_user's namespace topologies:
//! * [`removal`]: a backend's nginx is stopped (by its handle); how long
//!   until xlb logs it DOWN, and until no new connection is sent to it.
//! * [`vrrp`]: the VRRP master's xlb is SIGKILLed (by its PID); how long
//!   until new connections succeed again through the backup.
//!
//! A client in its own namespace opens a new connection to the VIP every
//! [`PROBE_GAP`] throughout; each figure is measured over a few rounds and
//! reported (median and range) next to the bound the configuration promises.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use lb_user::api::{BackendState, Status};
use lb_user::vrrp::state::{master_down_cs, skew_cs};
use xlb_testbed::config::{Backend, HealthCheck, Vip, XlbConfig};
use xlb_testbed::topology::{Serve, Topology, VIP_PORT, Xlb};

use super::{median, say, spread};

/// Health check of the removal figure: HTTP, every `HC_INTERVAL_MS`, out
/// after `HC_FALL` failures. (`timeout_ms` may not exceed `interval_ms`.)
pub const HC_INTERVAL_MS: u64 = 200;
pub const HC_TIMEOUT_MS: u64 = 200;
pub const HC_FALL: u32 = 3;
const HC_RISE: u32 = 2;
/// VRRP advert interval (centiseconds) and the two nodes' priorities.
pub(super) use xlb_testbed::vrrp_pair::{
    BACKUP_PRIORITY, INTERVAL_CS as VRRP_INTERVAL_CS, MASTER_PRIORITY, vrrp_config,
};
/// Backends behind the VIP.
pub(super) const BACKENDS: usize = 3;
/// Time between the starts of two probe connections.
pub const PROBE_GAP: Duration = Duration::from_millis(10);
/// A probe connection that has not been answered by then has failed.
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);

pub struct Row {
    /// What is timed, from which event to which.
    pub event: &'static str,
    /// The same in a few words (plot labels).
    pub short: &'static str,
    /// The bound the configuration promises, and how it is made up.
    pub bound_ms: f64,
    pub bound_formula: String,
    /// One figure per round, ms.
    pub samples: Vec<f64>,
    /// Median and (lowest, highest) of `samples`.
    pub median_ms: f64,
    pub range_ms: (f64, f64),
    /// Failed client connections per round, median.
    pub failed: f64,
    /// Long-lived connections that got every answer through the event, of
    /// how many, over every round (where the row measures them).
    pub survived: Option<(usize, usize)>,
}

pub(super) fn row(
    (event, short): (&'static str, &'static str),
    bound_ms: f64,
    bound_formula: String,
    samples: Vec<f64>,
    failed: Vec<f64>,
) -> Row {
    let range_ms = spread(&samples);
    let median_ms = median(&mut samples.clone());
    let failed = median(&mut failed.clone());
    Row {
        event,
        short,
        bound_ms,
        bound_formula,
        samples,
        median_ms,
        range_ms,
        failed,
        survived: None,
    }
}

pub fn rounds(quick: bool) -> usize {
    if quick { 2 } else { 5 }
}

/// The longest a dead backend may stay in: the first failing check up to an
/// interval after the death, `fall - 1` more intervals, the last check
/// taking up to `timeout`.
pub fn removal_bound_ms() -> f64 {
    (HC_INTERVAL_MS * u64::from(HC_FALL) + HC_TIMEOUT_MS) as f64
}

/// 3 × advert interval + the backup's skew ((256 − priority) × interval /
/// 256) + 1 s.
pub fn vrrp_bound_ms() -> f64 {
    f64::from(master_down_cs(BACKUP_PRIORITY, VRRP_INTERVAL_CS) * 10 + 1000)
}

/// One probe: when it started and which backend answered (`None`: the
/// connection failed or was not answered in time).
pub(super) struct Probe {
    pub(super) at: Instant,
    pub(super) answer: Option<String>,
}

/// Enters the network namespace `ns` (by name) on the calling thread.
fn enter_ns(ns: &str) -> Result<()> {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("setns({path})"))?;
    Ok(())
}

/// `GET /` on a new connection; the body, trimmed.
pub(super) fn get_once(addr: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)?;
    s.set_read_timeout(Some(PROBE_TIMEOUT))?;
    s.set_write_timeout(Some(PROBE_TIMEOUT))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP answer: {text:?}"))?;
    ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(body.trim().to_owned())
}

/// New connections to `addr` from namespace `ns`, one every [`PROBE_GAP`],
/// until `stop`. Runs on its own thread (it enters `ns`), so that the
/// topology stays free for the caller to change.
pub(super) fn probe_loop(ns: &str, addr: SocketAddr, stop: &AtomicBool) -> Result<Vec<Probe>> {
    enter_ns(ns)?;
    let mut out = Vec::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let at = Instant::now();
        out.push(Probe {
            at,
            answer: get_once(addr).ok().filter(|b| b.starts_with("backend-")),
        });
        next += PROBE_GAP;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
        // Bounded: a runaway caller still ends the probes.
        ensure!(out.len() < 100_000, "prober ran away");
    }
    Ok(out)
}

/// When new connections work again after `since` (the first success after
/// the last failure), how many failed, and how many were tried.
pub(super) fn recovered(probes: &[Probe], since: Instant) -> Option<(Duration, usize, usize)> {
    let after: Vec<&Probe> = probes.iter().filter(|p| p.at >= since).collect();
    let last_fail = after.iter().rposition(|p| p.answer.is_none());
    let first_good = match last_fail {
        None => after.first(),
        Some(i) => after.get(i + 1),
    }?;
    let failed = after.iter().filter(|p| p.answer.is_none()).count();
    Some((first_good.at.duration_since(since), failed, after.len()))
}

/// How long after `since` xlb logged `backend` of VIP web4 DOWN.
fn down_logged_after(xlb: &Xlb, backend: &str, since: SystemTime) -> Option<Duration> {
    let backend = format!("backend={backend} ");
    xlb.logged_after(since, |l| {
        l.contains("backend health: DOWN") && l.contains("vip=web4 ") && l.contains(&backend)
    })
}

fn backend_state(status: &Status, name: &str) -> Option<BackendState> {
    Some(status.vip("web4")?.backend(name)?.state)
}

/// The removal topology's xlb config: VIP web4 (IPv4, port 80) over every
/// backend, with an HTTP health check.
fn removal_config(t: &Topology) -> XlbConfig {
    let health = HealthCheck::new("http").timing(HC_INTERVAL_MS, HC_TIMEOUT_MS, HC_RISE, HC_FALL);
    XlbConfig::new(&t.lb_ifname())
        .xdp_mode("native")
        .control_socket(&t.control_socket())
        .state_dir(&t.state_dir("lb"))
        .vip(
            Vip::new("web4", t.vip4(), VIP_PORT)
                .health(health)
                .backends(
                    (1..=t.backend_count())
                        .map(|i| Backend::new(t.backend_addr4(i)).name(&format!("backend-{i}"))),
                ),
        )
}

/// Time from a backend's death (its nginx stopped) to its removal, over
/// `rounds(quick)` rounds, a different backend each round (restarted and
/// back up before the next).
pub fn removal(xlb_exe: &std::path::Path, quick: bool) -> Result<Vec<Row>> {
    let mut topo = Topology::dsr(BACKENDS)?;
    say(&format!("  topology {} ready", topo.prefix()));
    let path = removal_config(&topo).write(&topo.dir().join("bench-removal.toml"))?;
    let xlb = topo.start_xlb(xlb_exe, &path)?;
    xlb.wait_ready(Duration::from_secs(20))?;
    let vip = SocketAddr::new(topo.vip4().into(), VIP_PORT);
    let client_ns = topo.client().name().to_owned();

    let (mut logged, mut last_fail, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds(quick) {
        let i = round % BACKENDS + 1;
        let name = format!("backend-{i}");
        let stop = AtomicBool::new(false);
        let (stopped, probes) = std::thread::scope(|s| -> Result<_> {
            let prober = s.spawn(|| probe_loop(&client_ns, vip, &stop));
            let result = (|| -> Result<_> {
                std::thread::sleep(Duration::from_millis(300));
                // Taken before the stop: the measured times can only be too long.
                let stopped = (Instant::now(), SystemTime::now());
                topo.stop_backend(i)?;
                let limit =
                    Duration::from_millis(removal_bound_ms() as u64) + Duration::from_secs(5);
                xlb.wait_status(&format!("{name} down"), limit, |s| {
                    backend_state(s, &name) == Some(BackendState::Down)
                })?;
                // Probes go on a while after the change, to catch late ones.
                std::thread::sleep(Duration::from_millis(500));
                Ok(stopped)
            })();
            stop.store(true, Ordering::Relaxed);
            let probes = prober.join().map_err(|_| anyhow!("prober panicked"))??;
            Ok((result?, probes))
        })?;
        let took = down_logged_after(&xlb, &name, stopped.1).ok_or_else(|| {
            anyhow!(
                "no DOWN line for web4/{name} after the stop\n--- xlb log ---\n{}",
                xlb.log_tail(30)
            )
        })?;
        let before: Vec<&Probe> = probes.iter().filter(|p| p.at < stopped.0).collect();
        ensure!(
            before
                .iter()
                .any(|p| p.answer.as_deref() == Some(name.as_str())),
            "no probe reached {name} before its nginx stopped ({} probes)",
            before.len()
        );
        let fails: Vec<&Probe> = probes
            .iter()
            .filter(|p| p.at >= stopped.0 && p.answer.is_none())
            .collect();
        let Some(last) = fails.last() else {
            bail!(
                "no new connection failed after {name}'s nginx stopped: were the probes sent to it?"
            );
        };
        let last_ms = last.at.duration_since(stopped.0).as_secs_f64() * 1e3;
        say(&format!(
            "  round {}: {name} stopped; DOWN logged after {:.0} ms, last failed new connection \
             {last_ms:.0} ms after the stop ({} failed of {} after the stop)",
            round + 1,
            took.as_secs_f64() * 1e3,
            fails.len(),
            probes.iter().filter(|p| p.at >= stopped.0).count()
        ));
        logged.push(took.as_secs_f64() * 1e3);
        last_fail.push(last_ms);
        failed.push(fails.len() as f64);

        topo.start_backend(i, Serve::Normal)?;
        xlb.wait_status(&format!("{name} back up"), Duration::from_secs(10), |s| {
            backend_state(s, &name) == Some(BackendState::Active)
        })?;
    }
    xlb.stop(Duration::from_secs(3));
    let bound =
        format!("interval {HC_INTERVAL_MS} ms × fall {HC_FALL} + timeout {HC_TIMEOUT_MS} ms");
    Ok(vec![
        row(
            (
                "backend's nginx stopped → xlb logs it DOWN",
                "removal: DOWN logged",
            ),
            removal_bound_ms(),
            bound.clone(),
            logged,
            failed.clone(),
        ),
        row(
            (
                "backend's nginx stopped → last new connection sent to it (refused)",
                "removal: last refused connection",
            ),
            removal_bound_ms(),
            bound,
            last_fail,
            failed,
        ),
    ])
}

/// True if both VRRP groups (51: web4, 52: web6) are in `state`.
fn vrrp_all(status: &Status, state: &str) -> bool {
    status
        .vrrp
        .as_ref()
        .is_some_and(|v| v.groups.len() == 2 && v.groups.iter().all(|g| g.state == state))
}

pub(super) fn wait_vrrp(xlb: &Xlb, node: usize, state: &str) -> Result<()> {
    xlb.wait_status(
        &format!("node {node} VRRP {state}"),
        Duration::from_secs(10),
        |s| vrrp_all(s, state),
    )
    .map(drop)
}

pub(super) fn start_node(
    topo: &Topology,
    xlb_exe: &std::path::Path,
    n: usize,
    priority: u8,
) -> Result<Xlb> {
    let config = topo.write_node_config(n, &[1; BACKENDS], vrrp_config(priority))?;
    let xlb = topo.start_node(n, xlb_exe, &config)?;
    xlb.wait_ready(Duration::from_secs(20))?;
    Ok(xlb)
}

/// VRRP failover time: the master's xlb SIGKILLed while the client opens
/// new connections, over `rounds(quick)` rounds (the killed node restarts
/// and takes over again, by preemption, before the next).
pub fn vrrp(xlb_exe: &std::path::Path, quick: bool) -> Result<Vec<Row>> {
    let topo = Topology::vrrp_pair(BACKENDS)?;
    say(&format!("  topology {} ready", topo.prefix()));
    let vip = SocketAddr::new(topo.vip4().into(), VIP_PORT);
    let client_ns = topo.client().name().to_owned();
    let mut x1 = start_node(&topo, xlb_exe, 1, MASTER_PRIORITY)?;
    wait_vrrp(&x1, 1, "master")?;
    let x2 = start_node(&topo, xlb_exe, 2, BACKUP_PRIORITY)?;
    wait_vrrp(&x2, 2, "backup")?;

    let (mut took, mut failed) = (Vec::new(), Vec::new());
    for round in 0..rounds(quick) {
        // The client reaches the VIP through node 1 before the kill.
        let deadline = Instant::now() + Duration::from_secs(5);
        while topo.client().in_ns(|| get_once(vip)).is_err() {
            ensure!(
                Instant::now() < deadline,
                "the VIP does not answer through node 1"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let stop = AtomicBool::new(false);
        let (kill_at, probes) = std::thread::scope(|s| -> Result<_> {
            let prober = s.spawn(|| probe_loop(&client_ns, vip, &stop));
            let result = (|| -> Result<_> {
                std::thread::sleep(Duration::from_millis(300));
                let kill_at = Instant::now();
                x1.kill_now()?;
                wait_vrrp(&x2, 2, "master")?;
                let until = kill_at + Duration::from_millis(vrrp_bound_ms() as u64 + 500);
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
                Ok(kill_at)
            })();
            stop.store(true, Ordering::Relaxed);
            let probes = prober.join().map_err(|_| anyhow!("prober panicked"))??;
            Ok((result?, probes))
        })?;
        ensure!(
            probes.iter().any(|p| p.at < kill_at && p.answer.is_some()),
            "no new connection succeeded before the kill"
        );
        let (back, n_failed, n) = recovered(&probes, kill_at).ok_or_else(|| {
            anyhow!("no new connection succeeded after the master's xlb was killed")
        })?;
        let ms = back.as_secs_f64() * 1e3;
        say(&format!(
            "  round {}: master's xlb SIGKILLed; new connections succeed again after {ms:.0} ms \
             ({n_failed} failed of {n})",
            round + 1,
        ));
        took.push(ms);
        failed.push(n_failed as f64);

        // Node 1 comes back and, with the higher priority, takes over again.
        x1 = start_node(&topo, xlb_exe, 1, MASTER_PRIORITY)?;
        wait_vrrp(&x1, 1, "master")?;
        wait_vrrp(&x2, 2, "backup")?;
    }
    x1.stop(Duration::from_secs(3));
    x2.stop(Duration::from_secs(3));
    Ok(vec![row(
        (
            "VRRP master's xlb SIGKILLed (its pinned data plane forwards on; the backup takes over) → new connections succeed again",
            "VRRP: xlb killed, connections succeed again",
        ),
        vrrp_bound_ms(),
        format!(
            "3 × advert {} ms + skew {} ms + 1 s",
            VRRP_INTERVAL_CS * 10,
            skew_cs(BACKUP_PRIORITY, VRRP_INTERVAL_CS) * 10
        ),
        took,
        failed,
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_follow_the_config() {
        assert_eq!(removal_bound_ms(), 800.0);
        assert_eq!(vrrp_bound_ms(), 1720.0);
    }
}
