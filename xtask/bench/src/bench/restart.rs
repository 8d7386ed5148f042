//! Restarts, crashes and upgrades of `xlb` under load: 50 keep-alive
//! connections that each send a request every 50 ms and a loop opening a
//! new connection every 20 ms, through each event in turn, in the DSR
//! topology with the real daemon. What is measured: long-lived
//! connections lost, new connections that failed, and the longest pause a
//! client saw. The cold restart (`xlb down`, then a start: no pinned state
//! to adopt) is how every restart behaved before the data plane outlived
//! the process.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use xlb_testbed::topology::{Topology, VIP_PORT, Xlb};
use xlb_testbed::traffic::Traffic;
use xlb_testbed::xdp::XLB_VARIANT_OBJECT;

use super::{rounds, say};

pub const LONG_LIVED: usize = 50;
pub const PERIOD: Duration = Duration::from_millis(50);
pub const NEW_EVERY: Duration = Duration::from_millis(20);
const BACKENDS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Term,
    Kill,
    Upgrade,
    Cold,
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Event::Term => "restart: SIGTERM, then start",
            Event::Kill => "crash: SIGKILL, then start",
            Event::Upgrade => "upgrade: SIGTERM, then start another program build",
            Event::Cold => "cold restart: `xlb down`, then start (the old behaviour)",
        }
    }
}

/// One event, over every round.
#[derive(Debug, Clone)]
pub struct Row {
    pub event: &'static str,
    /// Long-lived connections lost, over all rounds, of `connections`.
    pub lost: usize,
    pub connections: usize,
    /// New connections that failed, of `new`.
    pub failed_new: usize,
    pub new: usize,
    /// The longest pause a surviving long-lived connection saw: the median
    /// over the rounds, and the worst (NaN: none survived).
    pub pause_ms: f64,
    pub worst_pause_ms: f64,
}

fn start(topo: &Topology, exe: &Path, config: &Path, extra: &[&str]) -> Result<Xlb> {
    let xlb = topo.start_xlb_with(exe, config, extra)?;
    xlb.wait_ready(Duration::from_secs(20))?;
    Ok(xlb)
}

pub fn run(xlb_exe: &Path, quick: bool) -> Result<Vec<Row>> {
    let topo = Topology::dsr(BACKENDS)?;
    say(&format!("  topology {} ready", topo.prefix()));
    let config = topo.write_xlb_config(&[1; BACKENDS])?;
    let vip = std::net::SocketAddr::new(topo.vip4().into(), VIP_PORT);
    let mut xlb = start(&topo, xlb_exe, &config, &[])?;
    let mut rows = Vec::new();
    for event in [Event::Term, Event::Kill, Event::Upgrade, Event::Cold] {
        let mut row = Row {
            event: event.name(),
            lost: 0,
            connections: 0,
            failed_new: 0,
            new: 0,
            pause_ms: 0.0,
            worst_pause_ms: 0.0,
        };
        let mut pauses = Vec::new();
        for round in 0..rounds(quick) {
            let traffic = Traffic::start(topo.client(), vip, LONG_LIVED, PERIOD, Some(NEW_EVERY))
                .context("starting the clients")?;
            std::thread::sleep(Duration::from_secs(1));
            match event {
                Event::Term | Event::Upgrade => {
                    xlb.stop(Duration::from_secs(5));
                }
                Event::Kill => xlb.kill_now()?,
                Event::Cold => {
                    let out = std::process::Command::new(xlb_exe)
                        .arg("down")
                        .arg("--socket")
                        .arg(topo.control_socket())
                        .output()?;
                    if !out.status.success() {
                        bail!("xlb down failed: {out:?}");
                    }
                }
            }
            // Upgrades alternate between the two builds, so every round swaps.
            let extra: &[&str] = if event == Event::Upgrade && round % 2 == 0 {
                &["--xdp-object", XLB_VARIANT_OBJECT]
            } else {
                &[]
            };
            xlb = start(&topo, xlb_exe, &config, extra)?;
            std::thread::sleep(Duration::from_secs(1));
            let report = traffic.stop();
            say(&format!(
                "  {}, round {}: {}",
                event.name(),
                round + 1,
                report.summary()
            ));
            row.lost += LONG_LIVED - report.survivors();
            row.connections += LONG_LIVED;
            row.failed_new += report.failed_attempts().len();
            row.new += report.attempts.len();
            if report.survivors() > 0 {
                pauses.push(report.longest_pause().as_secs_f64() * 1000.0);
            }
        }
        // No survivor in any round: no pause to report.
        row.worst_pause_ms = pauses.iter().copied().fold(f64::NAN, f64::max);
        row.pause_ms = if pauses.is_empty() {
            f64::NAN
        } else {
            super::median(&mut pauses)
        };
        rows.push(row);
    }
    drop(xlb);
    Ok(rows)
}
