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
//!
//! The floor path ([`super::e2e`]) redirects every frame to backend 1 out
//! of the server-side NIC, with backend 1's address written in, so that
//! its sink sees what it sees from a NAT (a frame to its own address).

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, ensure};
use xlb_testbed::topology::Xlb;

use super::e2e::{
    Forwarder, Load, PpsPath, Row, Sample, check_floor, check_forwarded, compare, sink_frame,
};
use super::nat_topo::NatBench;
use super::topo::{ensure_no_xdp, link, stop_xlb};

pub const FLOOR: &str = "floor: rewrite to backend 1, redirect";
pub const SETUPS: [&str; 2] = ["xlb NAT (two-armed)", "nftables DNAT (two-armed)"];

pub fn run(b: &NatBench, quick: bool) -> Result<Vec<Row>> {
    let t = &b.topo;
    let frame = sink_frame(b.lb_mac, b.client_mac, t.client_addr4(), t.vip4());
    let path = b.pps_path();
    compare(
        quick,
        (FLOOR, &|d, load| through_floor(b, &path, &frame, d, load)),
        &[
            (SETUPS[0], &|d, load| through_xlb(b, &path, &frame, d, load)),
            (SETUPS[1], &|d, load| {
                through_dnat(b, &path, &frame, d, load)
            }),
        ],
    )
}

/// The floor path of the two-armed topology: `xdp-fwd` on the client-side
/// NIC writes backend 1's MAC and address and redirects out of the
/// server-side NIC.
fn through_floor(
    b: &NatBench,
    path: &PpsPath,
    frame: &[u8],
    duration: Duration,
    load: Load,
) -> Result<Sample> {
    let t = &b.topo;
    let server = t
        .lb_server_ifname()
        .ok_or_else(|| anyhow!("the two-armed topology has no server-side NIC"))?;
    let (server_ifindex, server_mac) = link(t.lb(), &server)?;
    let (_, backend_mac) = link(t.backend(1), &t.backend_ifname(1))?;
    let fwd = Forwarder {
        dst_mac: backend_mac,
        src_mac: server_mac,
        redirect: Some(server_ifindex),
        daddr: Some(t.backend_addr4(1)),
    };
    let _attached = fwd.attach(t.lb(), &t.lb_ifname())?;
    let sample = path
        .measure(frame, duration, load, &[], &String::new)
        .context("the floor path (two-armed)")?;
    check_floor(&sample)?;
    Ok(sample)
}

fn through_xlb(
    b: &NatBench,
    path: &PpsPath,
    frame: &[u8],
    duration: Duration,
    load: Load,
) -> Result<Sample> {
    let xlb = b.start_xlb()?;
    let sample = path
        .measure(frame, duration, load, &[xlb.pid()], &|| xlb.log_tail(20))
        .and_then(|s| {
            check_forwarded(&xlb, "sink4", &s)?;
            check_not_passed(&xlb, &s)?;
            Ok(s)
        })
        .context("xlb NAT");
    stop_xlb(xlb)?;
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

fn through_dnat(
    b: &NatBench,
    path: &PpsPath,
    frame: &[u8],
    duration: Duration,
    load: Load,
) -> Result<Sample> {
    ensure_no_xdp(path.lb, &path.lb_ifnames, "nftables DNAT (two-armed)")?;
    let dnat = b.dnat()?;
    path.measure(frame, duration, load, &[], &|| dnat.listing())
        .context("nftables DNAT (two-armed)")
}
