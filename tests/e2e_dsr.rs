//! End-to-end DSR tests: real namespaces, real nginx backends, the real
//! `xlb run` attached to the xlb node's veth. Needs root; each test builds
//! its own topology (own prefix), so they run in parallel.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use xlb_testbed::running::{WEIGHTS, backend_packets, require_root, start, status, vip_packets};
use xlb_testbed::topology::{BIG_BODY_LEN, VIP_PORT, http_get_many, link_stats, tcp_probe};

const REQUESTS: usize = 300;
const BIG_REQUESTS: usize = 100;
const TIMEOUT: Duration = Duration::from_secs(3);

/// (VIP name, other VIP name, VIP address) for one address family.
fn vip(
    running: &xlb_testbed::running::Running,
    v6: bool,
) -> (&'static str, &'static str, SocketAddr) {
    let t = &running.topo;
    if v6 {
        ("web6", "web4", SocketAddr::new(t.vip6().into(), VIP_PORT))
    } else {
        ("web4", "web6", SocketAddr::new(t.vip4().into(), VIP_PORT))
    }
}

fn balances_300_connections_by_weight(v6: bool) {
    let running = start(&WEIGHTS);
    let (vip_name, other_vip, vip_addr) = vip(&running, v6);
    let before = status(&running.xlb);

    let results = http_get_many(running.topo.client(), vip_addr, "/", REQUESTS, TIMEOUT);

    let mut served: BTreeMap<String, usize> = BTreeMap::new();
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
    let after = status(&running.xlb);

    let total_weight: u32 = WEIGHTS.iter().sum();
    for (idx, w) in WEIGHTS.iter().enumerate() {
        let name = format!("backend-{}", idx + 1);
        let got = served.get(&name).copied().unwrap_or(0);
        assert!(got > 0, "{name} served nothing via {vip_addr}: {served:?}");
        let share = 100.0 * got as f64 / REQUESTS as f64;
        let want = 100.0 * f64::from(*w) / f64::from(total_weight);
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
    let vip_pkts = vip_packets(&after, vip_name) - vip_packets(&before, vip_name);
    assert!(
        vip_pkts >= (REQUESTS * 3) as u64,
        "{vip_name}: {vip_pkts} packets for {REQUESTS} connections (want >= 3 per connection): {after}"
    );
    assert_eq!(
        vip_packets(&after, other_vip),
        vip_packets(&before, other_vip),
        "{other_vip} counted packets while only {vip_name} was used: {after}"
    );
}

#[test]
fn dsr_ipv4_balances_300_connections_by_weight() {
    if require_root("dsr_ipv4_balances_300_connections_by_weight") {
        balances_300_connections_by_weight(false);
    }
}

#[test]
fn dsr_ipv6_balances_300_connections_by_weight() {
    if require_root("dsr_ipv6_balances_300_connections_by_weight") {
        balances_300_connections_by_weight(true);
    }
}

/// Replies go from the backends straight to the client: the xlb NIC sees
/// (and XDP_TX-sends) only the small client->VIP packets, while the backends'
/// NICs send at least every response byte the client received.
fn replies_bypass_the_load_balancer(v6: bool) {
    let running = start(&WEIGHTS);
    let t = &running.topo;
    let (_, _, vip_addr) = vip(&running, v6);
    let backend_tx = || -> u64 {
        (1..=t.backend_count())
            .map(|i| {
                link_stats(t.backend(i), &t.backend_ifname(i))
                    .expect("backend link stats")
                    .tx_bytes
            })
            .sum()
    };
    let lb_before = t.lb_link_stats().expect("lb link stats");
    let backends_before = backend_tx();

    let results = http_get_many(t.client(), vip_addr, "/big", BIG_REQUESTS, TIMEOUT);
    let mut received = 0u64;
    for (n, r) in results.into_iter().enumerate() {
        let (code, body) = r.unwrap_or_else(|e| panic!("GET /big #{n} via {vip_addr}: {e:#}"));
        assert_eq!(code, 200, "GET /big #{n} via {vip_addr}");
        assert_eq!(body.len(), BIG_BODY_LEN, "GET /big #{n}: body length");
        assert!(
            body.starts_with("backend-"),
            "GET /big #{n}: body {:?}",
            &body[..20]
        );
        received += body.len() as u64;
    }

    let lb = t.lb_link_stats().expect("lb link stats").since(&lb_before);
    let backends_sent = backend_tx() - backends_before;
    let limit = received / 4;
    assert!(
        lb.rx_bytes < limit,
        "xlb NIC received {} bytes while the client got {received} response bytes (limit 25%): replies did not bypass xlb",
        lb.rx_bytes
    );
    assert!(
        lb.tx_bytes < limit,
        "xlb NIC sent {} bytes while the client got {received} response bytes (limit 25%)",
        lb.tx_bytes
    );
    assert!(
        backends_sent >= received,
        "backends sent {backends_sent} bytes but the client received {received} body bytes"
    );
}

#[test]
fn dsr_ipv4_replies_bypass_the_load_balancer() {
    if require_root("dsr_ipv4_replies_bypass_the_load_balancer") {
        replies_bypass_the_load_balancer(false);
    }
}

#[test]
fn dsr_ipv6_replies_bypass_the_load_balancer() {
    if require_root("dsr_ipv6_replies_bypass_the_load_balancer") {
        replies_bypass_the_load_balancer(true);
    }
}

#[test]
fn lb_node_own_address_still_answers() {
    if !require_root("lb_node_own_address_still_answers") {
        return;
    }
    let running = start(&WEIGHTS);
    let t = &running.topo;
    for ip in [IpAddr::from(t.lb_addr4()), t.lb_addr6().into()] {
        tcp_probe(t.lb(), t.client(), ip, TIMEOUT)
            .unwrap_or_else(|e| panic!("TCP to the xlb node's own address {ip} failed: {e:#}"));
    }
    assert!(running.xlb.is_running(), "xlb exited during the test");
}

/// The first-run trap of a veth whose peer runs no XDP program: native
/// XDP_TX frames are dropped by the veth. xlb says so (an ERROR naming the
/// NIC, the counts and the fix) instead of counting them as forwarded in
/// silence; and a normal start logs no ERROR at all.
#[test]
fn a_veth_peer_that_cannot_receive_xdp_frames_is_reported() {
    if !require_root("a_veth_peer_that_cannot_receive_xdp_frames_is_reported") {
        return;
    }
    let mut topo = xlb_testbed::topology::Topology::dsr(WEIGHTS.len())
        .unwrap_or_else(|e| panic!("topology: {e:#}"));
    let xlb = xlb_testbed::running::start_xlb(&topo, &WEIGHTS);
    xlb_testbed::running::wait_ready(&xlb);
    let started = xlb.log();
    assert!(
        !started.lines().any(|l| l.contains(" ERROR ")),
        "a start that converges logged an error:\n{started}"
    );
    topo.strip_peer_xdp().expect("strip the peer's XDP");
    let vip = SocketAddr::new(topo.vip4().into(), VIP_PORT);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let wanted = "the NIC drops what the data plane forwards";
    while !xlb.log().contains(wanted) {
        assert!(
            std::time::Instant::now() < deadline,
            "no report of the blackhole; lb link: {}\nlog:\n{}",
            topo.lb()
                .ip(["-s", "-s", "-d", "link", "show", &topo.lb_ifname()])
                .unwrap_or_default(),
            xlb.log()
        );
        // Each attempt's SYN is forwarded and dropped by the veth.
        let _ =
            xlb_testbed::topology::http_get(topo.client(), vip, "/", Duration::from_millis(300));
    }
    let line = xlb
        .log()
        .lines()
        .find(|l| l.contains(wanted))
        .unwrap()
        .to_owned();
    assert!(
        line.contains(" ERROR ")
            && line.contains(&format!("interface={}", topo.lb_ifname()))
            && line.contains("its peer runs an XDP program"),
        "{line}"
    );
}
