//! End-to-end NAT tests: real namespaces, real nginx backends on port 8080
//! behind a VIP on port 80, the real `xlb run` on the xlb node's NIC(s),
//! two-armed and one-armed, IPv4 and IPv6. Needs root; each test builds its
//! own topology (own prefix), so they run in parallel.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{RunningNat, backend_packets, conntrack_counter, require_root, start_nat, status};
use lb_user::topology::{Capture, NatLayout, VIP_PORT, http_get_many, source_of};

const REQUESTS: usize = 300;
const TIMEOUT: Duration = Duration::from_secs(3);
/// Backends 1..=3 with weights 1:1:2.
const BACKENDS: [(usize, u32); 3] = [(1, 1), (2, 1), (3, 2)];

/// (VIP name, VIP address and port) for one address family.
fn vip(running: &RunningNat, v6: bool) -> (&'static str, SocketAddr) {
    let t = &running.topo;
    if v6 {
        ("web6", SocketAddr::new(t.vip6().into(), VIP_PORT))
    } else {
        ("web4", SocketAddr::new(t.vip4().into(), VIP_PORT))
    }
}

/// Counts answers per backend; panics on any failed or non-200 request.
fn tally(
    running: &RunningNat,
    vip_addr: SocketAddr,
    results: Vec<anyhow::Result<(u16, String)>>,
) -> BTreeMap<String, usize> {
    let mut served = BTreeMap::new();
    for (n, r) in results.into_iter().enumerate() {
        let (code, body) = r.unwrap_or_else(|e| {
            panic!(
                "request {n} to {vip_addr} failed: {e:#}\n--- xlb log ---\n{}",
                running.xlb.log_tail(20)
            )
        });
        assert_eq!(
            code, 200,
            "request {n} to {vip_addr}: status {code}, body {body:?}"
        );
        let name = body.trim().to_owned();
        assert!(
            name.starts_with("backend-"),
            "request {n}: unexpected body {body:?}"
        );
        *served.entry(name).or_default() += 1;
    }
    served
}

/// 300 connections to the VIP (port 80; nginx listens on 8080 only, so
/// every answer proves the port translation) are all answered, spread
/// 1:1:2 within 10 points, and the client never receives a packet from a
/// backend address: a capture of everything the client's NIC receives
/// holds the VIP's replies and nothing from the backend subnet.
fn balances_300_connections_and_hides_the_backends(layout: NatLayout, v6: bool) {
    let running = start_nat(layout, BACKENDS.len(), &BACKENDS);
    let t = &running.topo;
    let (vip_name, vip_addr) = vip(&running, v6);
    let before = status(&running.xlb);
    let capture = Capture::start(
        t.client(),
        &t.client_ifname(),
        "ip or ip6",
        20 * REQUESTS,
        t.dir(),
        "client-rx",
    )
    .unwrap_or_else(|e| panic!("capture on the client: {e:#}"));

    let results = http_get_many(t.client(), vip_addr, "/", REQUESTS, TIMEOUT);
    let served = tally(&running, vip_addr, results);
    let captured = capture.finish().expect("capture output");
    let lines = &captured.lines;
    let after = status(&running.xlb);

    let total_weight: u32 = BACKENDS.iter().map(|(_, w)| w).sum();
    for (i, w) in BACKENDS {
        let name = format!("backend-{i}");
        let got = served.get(&name).copied().unwrap_or(0);
        assert!(got > 0, "{name} served nothing via {vip_addr}: {served:?}");
        let share = 100.0 * got as f64 / REQUESTS as f64;
        let want = 100.0 * f64::from(w) / f64::from(total_weight);
        assert!(
            (share - want).abs() <= 10.0,
            "{name} (weight {w}) served {share:.1}% of {vip_addr}, want {want:.1}% ± 10: {served:?}"
        );
        let pkts =
            backend_packets(&after, vip_name, &name) - backend_packets(&before, vip_name, &name);
        assert!(
            pkts > 0,
            "xlb counted no packets to {name} on {vip_name}: {after}"
        );
    }

    // A capture that fell behind could have missed a leaked packet.
    assert_eq!(
        captured.dropped_by_kernel(),
        Some(0),
        "the client capture lost packets: {}",
        captured.report
    );
    let from_backends: Vec<&String> = lines
        .iter()
        .filter(|l| source_of(l).is_some_and(|ip| t.is_backend_subnet(ip)))
        .collect();
    assert!(
        from_backends.is_empty(),
        "the client received {} packet(s) from backend addresses, e.g. {:?}",
        from_backends.len(),
        &from_backends[..from_backends.len().min(5)]
    );
    let from_vip = lines
        .iter()
        .filter(|l| source_of(l) == Some(vip_addr.ip()))
        .count();
    assert!(
        from_vip >= 2 * REQUESTS,
        "the capture saw only {from_vip} packets from the VIP for {REQUESTS} connections \
         (capture broken?); tcpdump: {}; {} lines, first: {:?}",
        captured.report,
        lines.len(),
        &lines[..lines.len().min(5)]
    );
    // The replies were translated by the XDP program, not by the kernel.
    let replies = conntrack_counter(&after, "nat_reply") - conntrack_counter(&before, "nat_reply");
    assert!(
        replies >= (2 * REQUESTS) as u64,
        "xlb translated only {replies} backend replies for {REQUESTS} connections: {after}"
    );
}

#[test]
fn nat_two_armed_ipv4_balances_300_connections_and_hides_the_backends() {
    if require_root("nat_two_armed_ipv4_balances_300_connections_and_hides_the_backends") {
        balances_300_connections_and_hides_the_backends(NatLayout::TwoArmed, false);
    }
}

#[test]
fn nat_two_armed_ipv6_balances_300_connections_and_hides_the_backends() {
    if require_root("nat_two_armed_ipv6_balances_300_connections_and_hides_the_backends") {
        balances_300_connections_and_hides_the_backends(NatLayout::TwoArmed, true);
    }
}

#[test]
fn nat_one_armed_ipv4_balances_300_connections_and_hides_the_backends() {
    if require_root("nat_one_armed_ipv4_balances_300_connections_and_hides_the_backends") {
        balances_300_connections_and_hides_the_backends(NatLayout::OneArmed, false);
    }
}

#[test]
fn nat_one_armed_ipv6_balances_300_connections_and_hides_the_backends() {
    if require_root("nat_one_armed_ipv6_balances_300_connections_and_hides_the_backends") {
        balances_300_connections_and_hides_the_backends(NatLayout::OneArmed, true);
    }
}
