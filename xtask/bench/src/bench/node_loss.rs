//! Node loss: an active node is cut off (its link goes down, it says
//! nothing to anyone) while clients keep sending, in the two ways xlb runs
//! more than one node:
//! * [`vrrp`]: a VRRP pair; the master is cut off, the backup takes over
//!   after its master-down interval and announces itself.
//! * [`ecmp`]: three active nodes behind a router doing ECMP over BGP
//!   (BIRD, with BFD); one is cut off, the router drops it from the set.
//!
//! Each round runs 50 long-lived connections sending every 50 ms and a
//! probe opening a new connection every 10 ms from the client, then cuts
//! the node and times when new connections work again (the first success
//! after the last failure), counts the long-lived connections that got
//! every answer, and, for ECMP, when the router's set shrank. The node's
//! link then comes back and the next round waits until it serves again.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use lb_user::vrrp::state::skew_cs;
use xlb_testbed::topology::routing::{Stack, bfd_detection};
use xlb_testbed::topology::{EcmpTopology, Topology, VIP_PORT, Xlb};
use xlb_testbed::traffic::Traffic;

use super::failover::{
    self, BACKENDS, BACKUP_PRIORITY, MASTER_PRIORITY, Row, VRRP_INTERVAL_CS, probe_loop, recovered,
    start_node, wait_vrrp,
};
use super::say;

pub const LONG_LIVED: usize = 50;
pub const PERIOD: Duration = Duration::from_millis(50);
const NODES: usize = 3;

/// Rounds per setup: fewer than the other failover figures in quick mode,
/// each being a cut, a recovery and a re-join.
pub fn rounds(quick: bool) -> usize {
    if quick { 1 } else { failover::rounds(false) }
}

/// How long traffic runs on after the cut.
fn settle(quick: bool) -> Duration {
    Duration::from_millis(if quick { 1500 } else { 2000 })
}

/// What one round saw.
struct Round {
    /// Cut → new connections work again.
    back_ms: f64,
    failed: usize,
    survived: usize,
    /// Cut → the router's ECMP set shrank (ECMP only).
    shrunk_ms: Option<f64>,
}

/// Runs traffic from `client` to `vip`, calls `cut` (which returns once
/// the cut is in place and, for ECMP, how long the set took to shrink),
/// and lets the traffic run `settle` more.
fn round(
    client: &xlb_testbed::netns::NetNs,
    vip: SocketAddr,
    settle: Duration,
    cut: impl FnOnce() -> Result<Option<Duration>>,
) -> Result<Round> {
    let traffic = Traffic::start(client, vip, LONG_LIVED, PERIOD, None)?;
    let stop = AtomicBool::new(false);
    let ns = client.name().to_owned();
    let (at, shrunk, probes) = std::thread::scope(|s| -> Result<_> {
        let prober = s.spawn(|| probe_loop(&ns, vip, &stop));
        let result = (|| -> Result<_> {
            std::thread::sleep(Duration::from_millis(500));
            let at = Instant::now();
            let shrunk = cut()?;
            std::thread::sleep(settle);
            Ok((at, shrunk))
        })();
        stop.store(true, Ordering::Relaxed);
        let probes = prober.join().map_err(|_| anyhow!("prober panicked"))??;
        let (at, shrunk) = result?;
        Ok((at, shrunk, probes))
    })?;
    let report = traffic.stop();
    let (back, failed, _) = recovered(&probes, at)
        .ok_or_else(|| anyhow!("no new connection succeeded after the cut"))?;
    Ok(Round {
        back_ms: back.as_secs_f64() * 1e3,
        failed,
        survived: report.survivors(),
        shrunk_ms: shrunk.map(|d| d.as_secs_f64() * 1e3),
    })
}

fn rows(
    rounds: &[Round],
    back: (&'static str, &'static str),
    bound_ms: f64,
    formula: String,
) -> Vec<Row> {
    let survived = rounds.iter().map(|r| r.survived).sum();
    let total = LONG_LIVED * rounds.len();
    let failed: Vec<f64> = rounds.iter().map(|r| r.failed as f64).collect();
    let mut out = Vec::new();
    let shrunk: Vec<f64> = rounds.iter().filter_map(|r| r.shrunk_ms).collect();
    if !shrunk.is_empty() {
        let mut r = failover::row(
            (
                "ECMP: a node's link cut → the router's ECMP set shrinks",
                "ECMP: set shrinks",
            ),
            bound_ms,
            formula.clone(),
            shrunk,
            failed.clone(),
        );
        r.survived = Some((survived, total));
        out.push(r);
    }
    let mut r = failover::row(
        back,
        bound_ms,
        formula,
        rounds.iter().map(|r| r.back_ms).collect(),
        failed,
    );
    r.survived = Some((survived, total));
    out.push(r);
    out
}

/// 3 × advert interval + the backup's skew + 1 s, as for the VRRP kill.
fn vrrp_bound_ms() -> f64 {
    failover::vrrp_bound_ms()
}

/// BFD's detection time + 1 s.
fn ecmp_bound_ms() -> f64 {
    bfd_detection().as_secs_f64() * 1e3 + 1000.0
}

/// The VRRP pair: node 1 (master) is cut off every round, then comes back
/// and takes over again by preemption.
pub fn vrrp(xlb_exe: &Path, quick: bool) -> Result<Vec<Row>> {
    let topo = Topology::vrrp_pair(BACKENDS)?;
    say(&format!("  topology {} ready", topo.prefix()));
    let vip = SocketAddr::new(topo.vip4().into(), VIP_PORT);
    let x1 = start_node(&topo, xlb_exe, 1, MASTER_PRIORITY)?;
    wait_vrrp(&x1, 1, "master")?;
    let x2 = start_node(&topo, xlb_exe, 2, BACKUP_PRIORITY)?;
    wait_vrrp(&x2, 2, "backup")?;
    let nic = topo.node_ifname(1);
    let mut done = Vec::new();
    for n in 0..rounds(quick) {
        let r = round(topo.client(), vip, settle(quick), || {
            topo.node(1).ip(["link", "set", &nic, "down"])?;
            wait_vrrp(&x2, 2, "master")?;
            Ok(None)
        })?;
        say(&format!(
            "  round {}: VRRP master cut off; new connections work again after {:.0} ms \
             ({} failed); {}/{LONG_LIVED} long-lived connections survived",
            n + 1,
            r.back_ms,
            r.failed,
            r.survived
        ));
        done.push(r);
        topo.node(1).ip(["link", "set", &nic, "up"])?;
        wait_vrrp(&x1, 1, "master")?;
        wait_vrrp(&x2, 2, "backup")?;
    }
    x1.stop(Duration::from_secs(3));
    x2.stop(Duration::from_secs(3));
    Ok(rows(
        &done,
        (
            "VRRP: the master's link cut → new connections succeed again",
            "VRRP: link cut",
        ),
        vrrp_bound_ms(),
        format!(
            "3 × advert {} ms + skew {} ms + 1 s",
            VRRP_INTERVAL_CS * 10,
            skew_cs(BACKUP_PRIORITY, VRRP_INTERVAL_CS) * 10
        ),
    ))
}

/// Three ECMP nodes behind a BIRD router: node 2 is cut off every round,
/// then comes back and is announced again.
pub fn ecmp(xlb_exe: &Path, quick: bool) -> Result<Vec<Row>> {
    let topo = EcmpTopology::build(BACKENDS, NODES, Stack::Bird)?;
    say(&format!("  topology {} ready", topo.prefix()));
    let vip4 = IpAddr::from(topo.vip4());
    let vip = SocketAddr::new(vip4, VIP_PORT);
    let mut xlbs: Vec<Xlb> = Vec::new();
    for n in 1..=NODES {
        let config = topo.write_node_config(n, &topo.node_config(n, &[1; BACKENDS]))?;
        let xlb = topo.start_node(n, xlb_exe, &config)?;
        xlb.wait_ready(Duration::from_secs(20))
            .with_context(|| format!("node {n}"))?;
        xlbs.push(xlb);
    }
    topo.wait_nexthops(vip4, NODES, Duration::from_secs(15))?;
    let mut done = Vec::new();
    for n in 0..rounds(quick) {
        let r = round(topo.client(), vip, settle(quick), || {
            let at = Instant::now();
            topo.set_node_link(2, false)?;
            topo.wait_nexthops(vip4, NODES - 1, Duration::from_secs(10))?;
            Ok(Some(at.elapsed()))
        })?;
        say(&format!(
            "  round {}: ECMP node cut off; set shrank after {:.0} ms, new connections work \
             again after {:.0} ms ({} failed); {}/{LONG_LIVED} long-lived connections survived",
            n + 1,
            r.shrunk_ms.unwrap_or_default(),
            r.back_ms,
            r.failed,
            r.survived
        ));
        done.push(r);
        topo.set_node_link(2, true)?;
        topo.wait_nexthops(vip4, NODES, Duration::from_secs(15))?;
    }
    for x in xlbs {
        x.stop(Duration::from_secs(3));
    }
    Ok(rows(
        &done,
        (
            "ECMP: a node's link cut → new connections succeed again",
            "ECMP: link cut",
        ),
        ecmp_bound_ms(),
        format!("BFD 3 × {} ms + 1 s", bfd_detection().as_millis() / 3),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_user::vrrp::state::master_down_cs;

    #[test]
    fn bounds_follow_the_config() {
        assert_eq!(ecmp_bound_ms(), 1300.0);
        assert_eq!(
            vrrp_bound_ms(),
            f64::from(master_down_cs(BACKUP_PRIORITY, VRRP_INTERVAL_CS) * 10 + 1000)
        );
    }
}
