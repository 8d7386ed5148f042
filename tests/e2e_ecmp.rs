//! Several active xlb nodes behind a router doing ECMP: each node's
//! routing daemon (BIRD 2, or FRR) exports the VIP addresses its xlb
//! announces while it can serve them, the router spreads connections over
//! the nodes by 5-tuple, and every node sends a flow to the same backend.
//! Real namespaces, real BIRD and FRR, real nginx, the real `xlb`. Needs
//! root.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lb_user::api::Status;
use xlb_testbed::config::{Announce, HealthCheck, XlbConfig};
use xlb_testbed::running::{WEIGHTS, require_root, xlb_exe};
use xlb_testbed::topology::routing::{Stack, bfd_detection};
use xlb_testbed::topology::{EcmpTopology, KeepAlive, VIP_PORT, Xlb, http_get_many};
use xlb_testbed::traffic::{Report, Traffic};

const NODES: usize = 3;
const READY: Duration = Duration::from_secs(20);
/// BGP session set-up and route propagation, with margin.
const CONVERGE: Duration = Duration::from_secs(15);

/// A topology with an xlb on every node, each announcing both VIPs, and
/// the router's routes carrying all of them.
struct Farm {
    xlbs: Vec<Option<Xlb>>,
    topo: EcmpTopology,
}

impl Farm {
    fn start(stack: Stack) -> Farm {
        Self::start_with(stack, |_, c| c)
    }

    /// [`Farm::start`] with node `n`'s config passed through `edit`.
    fn start_with(stack: Stack, edit: impl Fn(usize, XlbConfig) -> XlbConfig) -> Farm {
        let topo = EcmpTopology::build(WEIGHTS.len(), NODES, stack)
            .unwrap_or_else(|e| panic!("topology: {e:#}"));
        let mut xlbs = Vec::new();
        for n in 1..=NODES {
            let config = topo
                .write_node_config(n, &edit(n, topo.node_config(n, &WEIGHTS)))
                .expect("config");
            let xlb = topo.start_node(n, &xlb_exe(), &config).expect("start xlb");
            xlb.wait_ready(READY)
                .unwrap_or_else(|e| panic!("node {n}: {e:#}"));
            xlbs.push(Some(xlb));
        }
        let farm = Farm { xlbs, topo };
        for vip in farm.vips() {
            farm.topo
                .wait_nexthops(vip, NODES, CONVERGE)
                .unwrap_or_else(|e| panic!("{e:#}"));
        }
        farm
    }

    fn vips(&self) -> [IpAddr; 2] {
        [self.topo.vip4().into(), self.topo.vip6().into()]
    }

    fn xlb(&self, n: usize) -> &Xlb {
        self.xlbs[n - 1].as_ref().expect("node's xlb runs")
    }

    fn status(&self, n: usize) -> Status {
        self.xlb(n)
            .status()
            .unwrap_or_else(|e| panic!("node {n} status: {e:#}"))
    }

    fn vip4(&self) -> SocketAddr {
        SocketAddr::new(self.topo.vip4().into(), VIP_PORT)
    }

    fn hops(&self, vip: IpAddr) -> usize {
        self.topo.nexthops(vip).expect("router routes").len()
    }

    /// Waits until the router's route to `vip` has `count` next hops;
    /// returns how long it took.
    fn wait_hops(&self, vip: IpAddr, count: usize, timeout: Duration) -> Duration {
        self.topo
            .wait_nexthops(vip, count, timeout)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }
}

fn announced(s: &Status, vip: &str) -> Option<lb_user::api::AnnounceStatus> {
    s.vip(vip).and_then(|v| v.announce.clone())
}

fn conntrack(s: &Status, what: &str) -> u64 {
    s.conntrack.get(what).copied().unwrap_or(0)
}

fn vip_packets(s: &Status, name: &str) -> u64 {
    s.vip(name).map_or(0, |v| v.packets)
}

fn spread(stack: Stack) {
    let farm = Farm::start(stack);
    for n in 1..=NODES {
        let s = farm.status(n);
        for name in ["web4", "web6"] {
            let a = s.vip(name).and_then(|v| v.announce.clone());
            assert!(
                a.as_ref().is_some_and(|a| a.announced),
                "node {n} {name}: {a:?}\n{s}"
            );
        }
    }
    let before: Vec<(u64, u64)> = (1..=NODES)
        .map(|n| {
            let s = farm.status(n);
            (vip_packets(&s, "web4"), vip_packets(&s, "web6"))
        })
        .collect();
    let mut by_backend = BTreeMap::new();
    for vip in farm.vips() {
        let results = http_get_many(
            farm.topo.client(),
            SocketAddr::new(vip, VIP_PORT),
            "/",
            300,
            Duration::from_secs(2),
        );
        for (i, r) in results.iter().enumerate() {
            match r {
                Ok((200, body)) => *by_backend.entry(body.trim().to_owned()).or_insert(0) += 1,
                other => panic!("{vip} request {i}: {other:?}"),
            }
        }
    }
    let mut shares = Vec::new();
    for n in 1..=NODES {
        let s = farm.status(n);
        let d4 = vip_packets(&s, "web4") - before[n - 1].0;
        let d6 = vip_packets(&s, "web6") - before[n - 1].1;
        shares.push((d4, d6));
        assert!(d4 > 0 && d6 > 0, "node {n} forwarded no share: {shares:?}");
    }
    eprintln!(
        "{stack:?}: 600 connections, every one answered; per-node VIP packets (web4, web6) {shares:?}; \
         by backend {by_backend:?}"
    );
    assert_eq!(by_backend.len(), WEIGHTS.len(), "{by_backend:?}");
    eprintln!("node 1's status:\n{}", farm.status(1));
}

#[test]
fn bird_ecmp_spreads_connections_over_every_node() {
    if !require_root("bird_ecmp_spreads_connections_over_every_node") {
        return;
    }
    spread(Stack::Bird);
}

#[test]
fn frr_ecmp_spreads_connections_over_every_node() {
    if !require_root("frr_ecmp_spreads_connections_over_every_node") {
        return;
    }
    spread(Stack::Frr);
}

/// One 5-tuple, sent through each node in turn (the router's path pinned
/// by source port), reaches the same backend: as a new connection on each
/// node, and as one connection moved from node to node mid-flow.
#[test]
fn the_same_five_tuple_reaches_the_same_backend_through_every_node() {
    if !require_root("the_same_five_tuple_reaches_the_same_backend_through_every_node") {
        return;
    }
    let farm = Farm::start(Stack::Bird);
    let timeout = Duration::from_secs(3);
    for sport in [40_000u16, 40_001, 40_002, 40_003] {
        let mut seen = Vec::new();
        for n in 1..=NODES {
            farm.topo.pin_path(sport, n).expect("pin the path");
            let mut c = KeepAlive::connect_from(farm.topo.client(), farm.vip4(), sport, timeout)
                .unwrap_or_else(|e| panic!("port {sport} through node {n}: {e:#}"));
            let (status, body) = c.get("/").expect("GET");
            assert_eq!(status, 200);
            seen.push(body.trim().to_owned());
            c.reset().unwrap();
        }
        eprintln!("port {sport}: backends through nodes 1..3: {seen:?}");
        assert!(seen.iter().all(|b| *b == seen[0]), "port {sport}: {seen:?}");
    }

    // Mid-flow: the path moves while the connection lives. The nodes it
    // moves to never saw its SYN (counted as miss_midflow) and still pick
    // the backend the first node did.
    let sport = 40_010;
    farm.topo.pin_path(sport, 1).unwrap();
    let mut c = KeepAlive::connect_from(farm.topo.client(), farm.vip4(), sport, timeout).unwrap();
    let first = c.get("/").unwrap().1;
    let midflow_before: Vec<u64> = (1..=NODES)
        .map(|n| conntrack(&farm.status(n), "miss_midflow"))
        .collect();
    for n in [2, 3, 1, 3] {
        farm.topo.pin_path(sport, n).unwrap();
        for _ in 0..3 {
            let (status, body) = c
                .get("/")
                .unwrap_or_else(|e| panic!("the connection moved to node {n}: {e:#}"));
            assert_eq!((status, &body), (200, &first), "after moving to node {n}");
        }
    }
    for n in [2, 3] {
        let after = conntrack(&farm.status(n), "miss_midflow");
        assert!(
            after > midflow_before[n - 1],
            "node {n} saw the moved connection mid-flow: {} -> {after}",
            midflow_before[n - 1]
        );
    }
    eprintln!(
        "one connection moved 1 -> 2 -> 3 -> 1 -> 3: every answer from {}",
        first.trim()
    );
}

/// How node 2 is lost.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// SIGTERM to its xlb and to its routing daemon (which closes its
    /// sessions).
    Stopped,
    /// Its link goes down: the router hears nothing, BFD notices.
    CutOff,
    /// `xlb down`: withdraw, forward on for withdraw_wait_ms, detach.
    Down,
}

fn node_loss(stack: Stack, loss: Loss) {
    let mut farm = Farm::start(stack);
    let vip = IpAddr::from(farm.topo.vip4());
    let traffic = Traffic::start(
        farm.topo.client(),
        farm.vip4(),
        50,
        Duration::from_millis(50),
        Some(Duration::from_millis(20)),
    )
    .expect("start traffic");
    // Node 2 carries a share of them.
    let counts = |farm: &Farm| -> Vec<u64> {
        (1..=NODES)
            .map(|n| vip_packets(&farm.status(n), "web4"))
            .collect()
    };
    let before = counts(&farm);
    std::thread::sleep(Duration::from_millis(500));
    let after = counts(&farm);
    assert!(
        after[1] > before[1],
        "node 2 carries none of the connections"
    );
    let t = Instant::now();
    match loss {
        Loss::Stopped => {
            assert!(farm.xlbs[1].take().unwrap().stop(Duration::from_secs(5)));
            farm.topo.stop_routing(2);
        }
        Loss::CutOff => farm.topo.set_node_link(2, false).unwrap(),
        Loss::Down => {
            let msg = farm.xlbs[1].take().unwrap().down().expect("xlb down");
            assert!(msg.contains("2 announcements withdrawn"), "{msg}");
        }
    }
    let shrunk = farm.wait_hops(vip, NODES - 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    let report = traffic.stop();
    let (slow, last) = slow_after(&report, t);
    eprintln!(
        "{stack:?}, node 2 {loss:?}: the router's ECMP set shrank after {} ms; new connections \
         that failed or took over 200 ms: {slow}, the last started {} ms after the event; {}",
        shrunk.as_millis(),
        last.as_millis(),
        report.summary()
    );
    assert_eq!(
        report.survivors(),
        50,
        "{}: {:?}",
        report.summary(),
        report.errors(5)
    );
    assert!(
        report.failed_attempts().is_empty(),
        "{:?}",
        report.errors(5)
    );
    if matches!(loss, Loss::CutOff) {
        assert!(
            shrunk < bfd_detection() + Duration::from_secs(1),
            "BFD should notice within {:?}, took {shrunk:?}",
            bfd_detection()
        );
        // Back on the network: its backends resolve again, its xlb
        // announces again, its sessions come back, the router adds it.
        farm.topo.set_node_link(2, true).unwrap();
        let back = farm.wait_hops(vip, NODES, Duration::from_secs(20));
        eprintln!(
            "{stack:?}: node 2's link back: in the ECMP set again after {} ms",
            back.as_millis()
        );
    }
}

/// New connections started after `t` that failed or took over 200 ms, and
/// when (after `t`) the last of them started.
fn slow_after(report: &Report, t: Instant) -> (usize, Duration) {
    let slow: Vec<_> = report
        .attempts
        .iter()
        .filter(|a| a.at >= t && (a.result.is_err() || a.took > Duration::from_millis(200)))
        .collect();
    let last = slow
        .iter()
        .map(|a| a.at.duration_since(t))
        .max()
        .unwrap_or_default();
    (slow.len(), last)
}

#[test]
fn a_node_whose_xlb_and_bird_stop_loses_no_connection() {
    if !require_root("a_node_whose_xlb_and_bird_stop_loses_no_connection") {
        return;
    }
    node_loss(Stack::Bird, Loss::Stopped);
}

#[test]
fn a_node_cut_off_by_its_link_loses_no_connection() {
    if !require_root("a_node_cut_off_by_its_link_loses_no_connection") {
        return;
    }
    node_loss(Stack::Bird, Loss::CutOff);
}

#[test]
fn frr_a_node_cut_off_by_its_link_loses_no_connection() {
    if !require_root("frr_a_node_cut_off_by_its_link_loses_no_connection") {
        return;
    }
    node_loss(Stack::Frr, Loss::CutOff);
}

#[test]
fn a_node_taken_down_with_xlb_down_loses_no_connection() {
    if !require_root("a_node_taken_down_with_xlb_down_loses_no_connection") {
        return;
    }
    node_loss(Stack::Bird, Loss::Down);
}

const CHECK_INTERVAL_MS: u64 = 200;
const CHECK_TIMEOUT_MS: u64 = 200;
const RISE: u32 = 2;
const FALL: u32 = 2;

/// A node whose health checks see every backend of web4 down withdraws
/// web4's route (and only it) and announces it again when they recover;
/// a reload moves announcements without touching the others.
#[test]
fn an_unservable_vip_is_withdrawn_and_announced_again() {
    if !require_root("an_unservable_vip_is_withdrawn_and_announced_again") {
        return;
    }
    let check = HealthCheck::new("http").timing(CHECK_INTERVAL_MS, CHECK_TIMEOUT_MS, RISE, FALL);
    let farm = Farm::start_with(Stack::Bird, |_, mut c| {
        for v in &mut c.vips {
            v.health = Some(check.clone());
        }
        c
    });
    let (v4, v6) = (
        IpAddr::from(farm.topo.vip4()),
        IpAddr::from(farm.topo.vip6()),
    );
    // Node 2's checks of IPv4 backends are refused; what it forwards is
    // not (XDP sends it before any firewall).
    let nft = |args: &str| {
        farm.topo
            .node(2)
            .run(["nft"].into_iter().chain(args.split_whitespace()))
            .unwrap_or_else(|e| panic!("nft {args}: {e:#}"))
    };
    nft("add table inet xlbtest");
    nft("add chain inet xlbtest out { type filter hook output priority 0 ; }");
    let bound = Duration::from_millis(CHECK_INTERVAL_MS * u64::from(FALL) + CHECK_TIMEOUT_MS)
        + Duration::from_secs(1);
    let t = Instant::now();
    nft("add rule inet xlbtest out ip daddr 198.18.0.0/24 tcp dport 80 reject with tcp reset");
    let took = farm.wait_hops(v4, NODES - 1, bound * 2);
    assert!(
        !farm
            .topo
            .nexthops(v4)
            .unwrap()
            .contains(&farm.topo.node_addr4(2).into()),
        "node 2 is the one withdrawn"
    );
    assert_eq!(farm.hops(v6), NODES, "web6 stays announced by every node");
    let s2 = farm.status(2);
    let a = announced(&s2, "web4").unwrap();
    assert!(!a.announced, "{s2}");
    assert_eq!(a.detail, "withdrawn: 0 of 3 backends usable (min_usable 1)");
    assert!(announced(&s2, "web6").unwrap().announced, "{s2}");
    eprintln!("node 2 while web4 is withdrawn:\n{s2}");
    eprintln!(
        "every web4 backend down on node 2: its route withdrawn {} ms after the checks \
         started failing (bound {} ms)",
        took.as_millis(),
        bound.as_millis()
    );
    assert!(took <= bound, "withdrawn after {took:?}, bound {bound:?}");
    // New connections all succeed meanwhile: the router sends none to node 2.
    for (i, r) in http_get_many(
        farm.topo.client(),
        farm.vip4(),
        "/",
        60,
        Duration::from_secs(2),
    )
    .iter()
    .enumerate()
    {
        assert!(matches!(r, Ok((200, _))), "request {i}: {r:?}");
    }

    let t_back = Instant::now();
    nft("delete table inet xlbtest");
    let back = farm.wait_hops(v4, NODES, bound * 2);
    eprintln!(
        "checks pass again: announced {} ms later ({} ms since the outage began)",
        back.as_millis(),
        t.elapsed().as_millis()
    );
    let _ = t_back;
    for line in farm
        .xlb(2)
        .log()
        .lines()
        .filter(|l| l.contains("announce:"))
    {
        eprintln!("node 2: {line}");
    }

    // A reload that stops announcing web4 on node 3 withdraws it there,
    // and leaves web6's route as it is.
    let hops6 = farm.topo.nexthops(v6).unwrap();
    let mut c3 = farm.topo.node_config(3, &WEIGHTS);
    for v in &mut c3.vips {
        v.health = Some(check.clone());
    }
    c3.announce = Some(Announce {
        vips: Some(vec!["web6".into()]),
        ..Announce::default()
    });
    farm.topo.write_node_config(3, &c3).unwrap();
    farm.xlb(3).reload().unwrap();
    farm.wait_hops(v4, NODES - 1, Duration::from_secs(5));
    assert_eq!(
        farm.topo.nexthops(v6).unwrap(),
        hops6,
        "web6's route untouched"
    );
    let s3 = farm.status(3);
    assert!(announced(&s3, "web4").is_none(), "{s3}");
    assert!(announced(&s3, "web6").unwrap().announced, "{s3}");

    // Without [announce], node 3 announces nothing; with it back, all.
    c3.announce = None;
    farm.topo.write_node_config(3, &c3).unwrap();
    farm.xlb(3).reload().unwrap();
    farm.wait_hops(v6, NODES - 1, Duration::from_secs(5));
    assert_eq!(farm.hops(v4), NODES - 1);
    c3.announce = Some(Announce::default());
    farm.topo.write_node_config(3, &c3).unwrap();
    farm.xlb(3).reload().unwrap();
    farm.wait_hops(v4, NODES, Duration::from_secs(5));
    farm.wait_hops(v6, NODES, Duration::from_secs(5));
}

/// A node whose xlb dies keeps its routes for at most `lifetime_s` (its
/// addresses expire, nobody renews them), while its data plane forwards
/// on; an xlb restarted within the lifetime keeps the route throughout.
#[test]
fn a_dead_control_plane_is_withdrawn_after_its_lifetime_and_a_restart_keeps_the_route() {
    if !require_root(
        "a_dead_control_plane_is_withdrawn_after_its_lifetime_and_a_restart_keeps_the_route",
    ) {
        return;
    }
    const LIFETIME_S: u32 = 3;
    let mut farm = Farm::start_with(Stack::Bird, |_, c| {
        c.announce(Announce {
            lifetime_s: Some(LIFETIME_S),
            ..Announce::default()
        })
    });
    let vip = IpAddr::from(farm.topo.vip4());

    // Node 1 restarts within the lifetime: its next hop never leaves.
    let config1 = farm.topo.dir().join("xlb1.toml");
    let t = Instant::now();
    farm.xlb(1).kill_now().unwrap();
    farm.xlbs[0] = None;
    let restarted = farm.topo.start_node(1, &xlb_exe(), &config1).unwrap();
    let mut min_hops = NODES;
    while t.elapsed() < Duration::from_secs(u64::from(LIFETIME_S) + 2) {
        min_hops = min_hops.min(farm.hops(vip));
        std::thread::sleep(Duration::from_millis(20));
    }
    restarted.wait_ready(READY).unwrap();
    farm.xlbs[0] = Some(restarted);
    assert_eq!(
        min_hops, NODES,
        "node 1's route went away during its restart"
    );
    assert!(announced(&farm.status(1), "web4").unwrap().announced);

    // Node 3's xlb dies for good: the route goes when the lifetime ends.
    let traffic = Traffic::start(
        farm.topo.client(),
        farm.vip4(),
        20,
        Duration::from_millis(50),
        None,
    )
    .expect("traffic");
    let t = Instant::now();
    farm.xlb(3).kill_now().unwrap();
    farm.xlbs[2] = None;
    let gone = farm.wait_hops(
        vip,
        NODES - 1,
        Duration::from_secs(u64::from(LIFETIME_S) + 4),
    );
    let report = traffic.stop();
    eprintln!(
        "node 3's xlb killed: its route withdrawn after {} ms (lifetime {LIFETIME_S} s); {}",
        gone.as_millis(),
        report.summary()
    );
    // The kernel checks address lifetimes on a coarse timer (rounded up to
    // whole seconds): up to about a second late.
    assert!(
        gone <= Duration::from_secs(u64::from(LIFETIME_S) + 2),
        "withdrawn after {gone:?}"
    );
    // Renewed every third of the lifetime: the last renewal was at most a
    // third before the kill.
    assert!(
        gone >= Duration::from_secs(u64::from(LIFETIME_S)) * 2 / 3 - Duration::from_millis(500),
        "withdrawn after {gone:?}: before the lifetime could have run out"
    );
    assert_eq!(report.survivors(), 20, "{:?}", report.errors(5));
    let _ = t;

    // Node 1's xlb dies too, and the operator takes the node out with
    // `xlb down --config` (no daemon to ask): the announcements go at once,
    // then the data plane.
    farm.xlb(1).kill_now().unwrap();
    farm.xlbs[0] = None;
    let t = Instant::now();
    let down = {
        // In the node's network namespace (its lo), with the mounts of the
        // machine (its bpffs): as an operator on the node runs it.
        let mut cmd = std::process::Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", farm.topo.node(1).name()))
            .arg("--")
            .arg(xlb_exe())
            .args(["down", "--config"])
            .arg(&config1);
        std::thread::spawn(move || cmd.output().expect("run xlb down"))
    };
    let gone = farm
        .topo
        .wait_nexthops(vip, NODES - 2, Duration::from_secs(2));
    let out = down.join().expect("xlb down");
    let gone = gone.unwrap_or_else(|e| panic!("{e:#}\nxlb down: {out:?}"));
    let msg = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "xlb down: {out:?}");
    assert!(msg.contains("2 announcements withdrawn from lo"), "{msg}");
    assert!(msg.contains("program detached"), "{msg}");
    assert!(!farm.topo.node_state_dir(1).exists());
    eprintln!(
        "`xlb down --config` on node 1 (no daemon): its route withdrawn after {} ms; {}",
        gone.as_millis(),
        msg.trim()
    );
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "it forwarded on for withdraw_wait_ms"
    );
}
