//! Packets per second through NAT: the generator of [`super::e2e`] on the
//! client's veth, the load-balancer node routing between the client's and
//! the backends' segments (two-armed), three sinks (the backends' NICs).
//! xlb NAT (the real `xlb run`, native XDP on both NICs, translating
//! VIP:9 to backend:9) against nftables DNAT of the same service, in the
//! same run.
//!
//! The backends sit on their own segment, reachable only through the node:
//! a frame reaches a sink only if the setup translated it and the node
//! forwarded it. xlb's VIP counter is still checked against the sinks.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, ensure};
use xlb_testbed::topology::Xlb;

use super::e2e::{PpsPath, Row, Sample, check_forwarded, compare, sink_frame};
use super::nat_topo::NatBench;

pub const SETUPS: [&str; 2] = ["xlb NAT (two-armed)", "nftables DNAT (two-armed)"];

pub fn run(b: &NatBench, quick: bool) -> Result<Vec<Row>> {
    let t = &b.topo;
    let frame = sink_frame(b.lb_mac, b.client_mac, t.client_addr4(), t.vip4());
    let path = b.pps_path();
    compare(
        quick,
        &[
            (SETUPS[0], &|d| through_xlb(b, &path, &frame, d)),
            (SETUPS[1], &|d| through_dnat(b, &path, &frame, d)),
        ],
    )
}

fn through_xlb(b: &NatBench, path: &PpsPath, frame: &[u8], duration: Duration) -> Result<Sample> {
    let xlb = b.start_xlb()?;
    let sample = path
        .measure(frame, duration, &|| xlb.log_tail(20))
        .and_then(|s| {
            check_forwarded(&xlb, "sink4", &s)?;
            check_not_passed(&xlb, &s)?;
            Ok(s)
        })
        .context("xlb NAT");
    xlb.stop(Duration::from_secs(3));
    sample
}

/// Proof that XDP forwarded the frames itself: a frame whose next hop the
/// kernel had not resolved is passed to the stack to forward (and counted
/// as `nat_no_neigh`), which would make this a measure of the kernel.
fn check_not_passed(xlb: &Xlb, sample: &Sample) -> Result<()> {
    let status = xlb.status()?;
    let passed = *status
        .conntrack
        .get("nat_no_neigh")
        .ok_or_else(|| anyhow!("no conntrack.nat_no_neigh in status {status}"))?;
    ensure!(
        passed as f64 <= 0.01 * sample.delivered as f64,
        "xlb passed {passed} of {} delivered frames to the kernel (next hop unresolved)",
        sample.delivered
    );
    Ok(())
}

fn through_dnat(b: &NatBench, path: &PpsPath, frame: &[u8], duration: Duration) -> Result<Sample> {
    let dnat = b.dnat()?;
    path.measure(frame, duration, &|| dnat.listing())
        .context("nftables DNAT (two-armed)")
}
