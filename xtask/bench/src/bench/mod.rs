//! `cargo xtask bench`: how far xlb is from the limit and from what an
//! operator would otherwise run, measured side by side in one run and
//! reported as ratios (absolute figures on shared machines drift).
//!
//! Sections, each in its own module:
//! * [`dataplane`]: cost per packet with BPF_PROG_TEST_RUN against the floor
//!   program (swap MACs, `XDP_TX`); [`nat_cost`] the same for NAT, one
//!   packet per call.
//! * [`controlplane`]: Maglev table build and install time, flows moved
//!   when one backend leaves.
//! * [`backends`]: `xlb backend add` from the command to the ring in the
//!   kernel, and slots and flows moved per add and per remove.
//! * [`health`]: 1,000 HTTP health checks a second on one thread.
//! * [`metrics`]: what scraping `/metrics` once a second costs the health
//!   checker of the real `xlb run` (1,000 backends) and the data plane.
//! * [`failover`]: time from a backend's death to its removal, and VRRP
//!   failover time, with the real `xlb run` in namespaces.
//! * [`node_loss`]: an active node cut off, VRRP pair against ECMP nodes
//!   behind a BGP router: time until new connections work again, and the
//!   long-lived connections that survived.
//! * [`restart`]: connections lost and the longest pause through a
//!   restart, a crash and an upgrade of `xlb`, next to a cold restart.
//! * [`sync`]: connection sync in a VRRP pair: the lag from a flow's
//!   first packet to its entry on the peer, and the flows per second one
//!   node sends and the other installs during a flood of new flows.
//! * [`e2e`]: packets per second through veth, xlb DSR against nftables
//!   DNAT, with a live-frames XDP generator; [`nat_pps`] the same through
//!   xlb NAT, two-armed.
//! * [`http`]: wrk through xlb, HAProxy (TCP mode) and nftables DNAT.
//! * [`nat_e2e`]: the same through xlb NAT, two-armed.
//!
//! Benchmarks are not tests: no number fails the run, but a case that
//! cannot run (wrong verdict, nothing delivered, a tool missing) does.

pub mod backends;
pub mod code;
pub mod controlplane;
mod cpu;
pub mod dataplane;
pub mod e2e;
pub mod failover;
pub mod health;
pub mod http;
mod machine;
pub mod metrics;
pub mod nat_cost;
pub mod nat_e2e;
pub mod nat_pps;
mod nat_topo;
mod nft;
pub mod node_loss;
pub mod plot;
mod report;
pub mod restart;
pub mod scale;
pub mod sync;
mod topo;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{Context as _, Result};

pub use report::Report;

/// One section of the benchmark (`--only`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Section {
    Dataplane,
    Controlplane,
    /// `xlb backend add|remove` at runtime.
    Backends,
    Health,
    Metrics,
    Removal,
    Vrrp,
    NodeLoss,
    Restart,
    Sync,
    Pps,
    Http,
    NatPps,
    NatHttp,
    /// 10,000 VIPs, 1,000 checked backends, big connection tables.
    Scale,
}

pub struct Options {
    /// Fewer trials, shorter runs (about two minutes in all).
    pub quick: bool,
    /// Run only these sections and print them; docs/benchmarks.md is left
    /// alone (it always holds a complete run).
    pub only: Vec<Section>,
    /// The release `xlb` binary (the end-to-end cases run the real daemon).
    pub xlb_exe: PathBuf,
    /// Where `benchmarks.md` and `benchmarks/*.png` are written.
    pub docs: PathBuf,
}

pub fn run(opts: &Options) -> Result<()> {
    let started = *START.get_or_init(Instant::now);
    let mut report = Report::new(machine::Machine::probe(), opts.quick);
    let wanted = |s: Section| opts.only.is_empty() || opts.only.contains(&s);

    if wanted(Section::Dataplane) {
        say("data plane: BPF_PROG_TEST_RUN");
        let (rows, code) = dataplane::run(opts.quick).context("data-plane benchmark")?;
        report.dataplane = rows;
        report.code = Some(code);
        say("data plane: NAT, one packet per call");
        report.nat = nat_cost::run(opts.quick).context("NAT cost benchmark")?;
    }
    if wanted(Section::Controlplane) {
        say("control plane: Maglev");
        let maglev = controlplane::run(opts.quick).context("control-plane benchmark")?;
        report.maglev = maglev.rows;
        report.empty_ring_ms = maglev.empty_ring_ms;
    }
    if wanted(Section::Backends) {
        say("control plane: backends added and removed at runtime");
        report.backends =
            Some(backends::run(&opts.xlb_exe, opts.quick).context("runtime-backends benchmark")?);
    }
    if wanted(Section::Health) {
        say("control plane: health checker, 1,000 backends");
        report.health = Some(health::run(opts.quick).context("health-checker benchmark")?);
    }
    if wanted(Section::Metrics) {
        say("control plane: scraping /metrics, 1,000 backends");
        report.metrics =
            Some(metrics::run(&opts.xlb_exe, opts.quick).context("metrics benchmark")?);
    }
    if wanted(Section::Removal) {
        say("control plane: a backend's death to its removal");
        let rows = failover::removal(&opts.xlb_exe, opts.quick).context("removal benchmark")?;
        report.failover.extend(rows);
    }
    if wanted(Section::Vrrp) {
        say("control plane: VRRP failover");
        let rows = failover::vrrp(&opts.xlb_exe, opts.quick).context("VRRP benchmark")?;
        report.failover.extend(rows);
    }
    if wanted(Section::NodeLoss) {
        say("control plane: node loss, VRRP pair");
        let rows =
            node_loss::vrrp(&opts.xlb_exe, opts.quick).context("VRRP node-loss benchmark")?;
        report.failover.extend(rows);
        say("control plane: node loss, three ECMP nodes behind BIRD");
        let rows =
            node_loss::ecmp(&opts.xlb_exe, opts.quick).context("ECMP node-loss benchmark")?;
        report.failover.extend(rows);
    }
    if wanted(Section::Restart) {
        say("control plane: restart, crash and upgrade under load");
        report.restart = restart::run(&opts.xlb_exe, opts.quick).context("restart benchmark")?;
    }
    if wanted(Section::Sync) {
        say("control plane: connection sync, VRRP pair");
        report.sync = Some(sync::run(&opts.xlb_exe, opts.quick).context("sync benchmark")?);
    }
    if wanted(Section::Scale) {
        say("control plane: 10,000 VIPs, 1,000 health-checked backends");
        report.scale = Some(scale::run(&opts.xlb_exe, opts.quick).context("scale benchmark")?);
    }
    if wanted(Section::Pps) || wanted(Section::Http) {
        say("end to end: topology");
        let topo = topo::Bench::build(opts).context("building the end-to-end topology")?;
        if wanted(Section::Pps) {
            say("end to end: packets per second");
            report.pps = e2e::run(&topo, opts.quick).context("packets-per-second benchmark")?;
        }
        if wanted(Section::Http) {
            say("end to end: wrk");
            report.http = http::run(&topo, opts.quick).context("wrk benchmark")?;
        }
    }
    if wanted(Section::NatPps) || wanted(Section::NatHttp) {
        say("end to end: NAT topology (two-armed)");
        let nat = nat_topo::NatBench::build(opts.xlb_exe.clone())
            .context("building the NAT end-to-end topology")?;
        if wanted(Section::NatPps) {
            say("end to end: packets per second through NAT");
            report.nat_pps =
                nat_pps::run(&nat, opts.quick).context("NAT packets-per-second benchmark")?;
        }
        if wanted(Section::NatHttp) {
            say("end to end: wrk through NAT");
            report.nat_http = nat_e2e::run(&nat, opts.quick).context("NAT wrk benchmark")?;
        }
    }
    report.elapsed = started.elapsed();
    if !opts.only.is_empty() {
        say("partial run (--only): docs/benchmarks.md left as it was");
        println!("{}", report.sections());
        return Ok(());
    }

    let md = opts.docs.join("benchmarks.md");
    let png_dir = opts.docs.join("benchmarks");
    std::fs::create_dir_all(&png_dir).with_context(|| format!("creating {}", png_dir.display()))?;
    let plots = plot::write_all(&report, &png_dir)?;
    std::fs::write(&md, report.markdown(&plots))
        .with_context(|| format!("writing {}", md.display()))?;
    say(&format!(
        "wrote {} and {} plots in {:.0?}",
        md.display(),
        plots.len(),
        started.elapsed()
    ));
    Ok(())
}

static START: OnceLock<Instant> = OnceLock::new();

/// Progress on stderr, with the time since the start.
fn say(msg: &str) {
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("bench {t:>6.1}s: {msg}");
}

/// Rounds of the end-to-end comparisons: each round runs every setup in
/// turn, and the reports take the median, so drift on a shared machine hits
/// every setup alike.
pub fn rounds(quick: bool) -> usize {
    if quick { 1 } else { 3 }
}

/// (lowest, highest) of `values`.
pub fn spread(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// Median of `values` (which must not be empty).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}
