//! The data plane outlives the control plane: restarts, crashes and
//! upgrades of `xlb` lose no connection, while no `xlb` runs traffic still
//! flows, incompatible pinned state is refused without touching what
//! runs, `xlb down` leaves nothing, and two instances keep their own
//! state. Real namespaces, real nginx, the real `xlb`; long-lived
//! connections that keep sending through every event, plus a loop of new
//! connections. Needs root.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use lb_user::api::Status;
use xlb_testbed::config::XlbConfig;
use xlb_testbed::pinned;
use xlb_testbed::running::{WEIGHTS, require_root, xlb_exe};
use xlb_testbed::topology::{
    Capture, Hosts, NatLayout, NatTopology, Topology, VIP_PORT, Xlb, http_get_many,
};
use xlb_testbed::traffic::{Report, Traffic};
use xlb_testbed::xdp::XLB_VARIANT_OBJECT;

const LONG_LIVED: usize = 50;
const PERIOD: Duration = Duration::from_millis(50);
const NEW_EVERY: Duration = Duration::from_millis(20);
const READY: Duration = Duration::from_secs(20);

/// What happens to the running `xlb`.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// SIGTERM, then a new `xlb`.
    Term,
    /// SIGKILL (a crash), then a new `xlb`.
    Kill,
    /// SIGTERM, then a new `xlb` running a different program build, which
    /// replaces the attached one in place.
    Upgrade,
}

fn vip(hosts: &Hosts) -> SocketAddr {
    SocketAddr::new(hosts.vip4().into(), VIP_PORT)
}

fn start(hosts: &Hosts, config: &std::path::Path, extra: &[&str]) -> Xlb {
    let xlb = hosts
        .start_xlb_with(&xlb_exe(), config, extra)
        .expect("start xlb");
    xlb.wait_ready(READY)
        .unwrap_or_else(|e| panic!("xlb never became ready: {e:#}"));
    xlb
}

fn dataplane(xlb: &Xlb) -> lb_user::api::DataplaneStatus {
    xlb.status()
        .expect("status")
        .dataplane
        .expect("status names the data plane")
}

/// RSTs the client receives from the VIP.
fn rst_capture(hosts: &Hosts, name: &str) -> Capture {
    let filter = format!(
        "tcp and src host {} and tcp[tcpflags] & tcp-rst != 0",
        hosts.vip4()
    );
    Capture::start(
        hosts.client(),
        &hosts.client_ifname(),
        &filter,
        10_000,
        hosts.dir(),
        name,
    )
    .expect("start tcpdump")
}

/// `event` happens to `xlb` while traffic flows; returns the new `xlb`,
/// the traffic report and the RSTs the client got.
fn through(
    hosts: &Hosts,
    xlb: Xlb,
    config: &std::path::Path,
    event: Event,
) -> (Xlb, Report, Vec<String>) {
    let before = dataplane(&xlb);
    let rsts = rst_capture(hosts, &format!("rst-{event:?}"));
    let traffic = Traffic::start(
        hosts.client(),
        vip(hosts),
        LONG_LIVED,
        PERIOD,
        Some(NEW_EVERY),
    )
    .expect("start traffic");
    std::thread::sleep(Duration::from_secs(1));
    match event {
        Event::Term | Event::Upgrade => assert!(xlb.stop(Duration::from_secs(5)), "SIGTERM"),
        Event::Kill => {
            xlb.kill_now().expect("SIGKILL");
            drop(xlb);
        }
    }
    // A moment with no control plane at all.
    std::thread::sleep(Duration::from_millis(500));
    let extra: &[&str] = match event {
        Event::Upgrade => &["--xdp-object", XLB_VARIANT_OBJECT],
        _ => &[],
    };
    let next = start(hosts, config, extra);
    std::thread::sleep(Duration::from_secs(1));
    let report = traffic.stop();
    let rsts: Vec<String> = rsts
        .finish()
        .expect("tcpdump")
        .lines
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let after = dataplane(&next);
    match event {
        Event::Upgrade => {
            assert_eq!(after.start, "upgraded", "{after:?}");
            assert_ne!(
                after.program_tag, before.program_tag,
                "a different program runs"
            );
        }
        _ => {
            assert_eq!(after.start, "adopted", "{after:?}");
            assert_eq!(after.program_tag, before.program_tag);
        }
    }
    assert_eq!(after.state_created_unix_s, before.state_created_unix_s);
    (next, report, rsts)
}

fn assert_nothing_lost(what: &str, report: &Report, rsts: &[String], xlb: &Xlb) {
    eprintln!("{what}: {}", report.summary());
    assert!(
        report.survivors() == LONG_LIVED && report.failed_attempts().is_empty() && rsts.is_empty(),
        "{what}: {}\nerrors: {:#?}\nRSTs: {rsts:#?}\n--- xlb log ---\n{}",
        report.summary(),
        report.errors(10),
        xlb.log_tail(40)
    );
    assert!(
        report.attempts.len() > 50,
        "the new-connection loop ran: {}",
        report.summary()
    );
}

fn dsr(event: Event, test: &str) {
    if !require_root(test) {
        return;
    }
    let topo = Topology::dsr(WEIGHTS.len()).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let config = topo.write_xlb_config(&WEIGHTS).expect("config");
    let xlb = start(&topo, &config, &[]);
    assert_eq!(dataplane(&xlb).start, "created");
    let (xlb, report, rsts) = through(&topo, xlb, &config, event);
    assert_nothing_lost(&format!("DSR, {event:?}"), &report, &rsts, &xlb);
    assert_eq!(report.moved().len(), 0, "connections kept their backend");
}

fn nat(event: Event, test: &str) {
    if !require_root(test) {
        return;
    }
    let topo =
        NatTopology::build(NatLayout::TwoArmed, 3).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let config = topo
        .write_xlb_config(&[(1, 1), (2, 1), (3, 2)])
        .expect("config");
    let xlb = start(&topo, &config, &[]);
    let (xlb, report, rsts) = through(&topo, xlb, &config, event);
    assert_nothing_lost(&format!("NAT two-armed, {event:?}"), &report, &rsts, &xlb);
}

#[test]
fn dsr_connections_survive_sigterm_and_restart() {
    dsr(Event::Term, "dsr_connections_survive_sigterm_and_restart");
}

#[test]
fn dsr_connections_survive_sigkill_and_restart() {
    dsr(Event::Kill, "dsr_connections_survive_sigkill_and_restart");
}

#[test]
fn dsr_connections_survive_an_upgrade_to_another_program_build() {
    dsr(
        Event::Upgrade,
        "dsr_connections_survive_an_upgrade_to_another_program_build",
    );
}

#[test]
fn nat_connections_survive_sigterm_and_restart() {
    nat(Event::Term, "nat_connections_survive_sigterm_and_restart");
}

#[test]
fn nat_connections_survive_sigkill_and_restart() {
    nat(Event::Kill, "nat_connections_survive_sigkill_and_restart");
}

#[test]
fn nat_connections_survive_an_upgrade_to_another_program_build() {
    nat(
        Event::Upgrade,
        "nat_connections_survive_an_upgrade_to_another_program_build",
    );
}

/// With no `xlb` process at all, for 5 s, requests are answered and the
/// pinned counters move; the next `xlb` shows the packets in its status.
#[test]
fn traffic_flows_for_five_seconds_without_any_xlb_process() {
    if !require_root("traffic_flows_for_five_seconds_without_any_xlb_process") {
        return;
    }
    let topo = Topology::dsr(WEIGHTS.len()).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let config = topo.write_xlb_config(&WEIGHTS).expect("config");
    let xlb = start(&topo, &config, &[]);
    let index = 0; // web4, the first VIP of the config
    let state = topo.state_dir("lb");
    xlb.kill_now().expect("SIGKILL");
    drop(xlb);
    let before = pinned::vip_counters(&state, index).expect("pinned counters");
    let traffic = Traffic::start(topo.client(), vip(&topo), 10, PERIOD, Some(NEW_EVERY))
        .expect("start traffic");
    std::thread::sleep(Duration::from_secs(5));
    let report = traffic.stop();
    let after = pinned::vip_counters(&state, index).expect("pinned counters");
    eprintln!(
        "no xlb process: {}; VIP counter {} -> {} packets",
        report.summary(),
        before.packets,
        after.packets
    );
    assert!(report.ran_for >= Duration::from_secs(5));
    assert_eq!(report.survivors(), 10, "{:?}", report.errors(5));
    assert!(
        report.failed_attempts().is_empty(),
        "{:?}",
        report.errors(5)
    );
    let requests: usize =
        report.connections.iter().map(|c| c.requests).sum::<usize>() + report.attempts.len();
    assert!(
        after.packets >= before.packets + requests as u64,
        "{requests} requests, the counter moved by {}",
        after.packets - before.packets
    );
    let xlb = start(&topo, &config, &[]);
    let s = xlb.status().expect("status");
    let web4 = s.vip("web4").expect("web4");
    assert!(web4.packets >= after.packets, "{s}");
}

/// A start that finds a pinned map of another shape, or state of another
/// layout version, refuses, saying what differs, and the data plane goes
/// on forwarding.
#[test]
fn incompatible_pinned_state_is_refused_and_the_data_plane_keeps_forwarding() {
    if !require_root("incompatible_pinned_state_is_refused_and_the_data_plane_keeps_forwarding") {
        return;
    }
    let topo = Topology::dsr(WEIGHTS.len()).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let config = topo.write_xlb_config(&WEIGHTS).expect("config");
    let state = topo.state_dir("lb");
    let xlb = start(&topo, &config, &[]);
    let traffic = Traffic::start(topo.client(), vip(&topo), 20, PERIOD, Some(NEW_EVERY))
        .expect("start traffic");
    assert!(xlb.stop(Duration::from_secs(5)));

    let refused = |what: &str| -> String {
        let x = topo.start_xlb(&xlb_exe(), &config).expect("spawn xlb");
        let deadline = Instant::now() + Duration::from_secs(20);
        while x.is_running() {
            assert!(
                Instant::now() < deadline,
                "{what}: xlb did not refuse:\n{}",
                x.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        x.log_tail(5)
    };

    pinned::spoil_ring_inputs(&state).expect("spoil RING_INPUTS");
    let log = refused("a map of another shape");
    assert!(
        log.contains("does not fit this program: RING_INPUTS: value 4 bytes (want 8)"),
        "{log}"
    );
    assert!(log.contains("the data plane keeps running"), "{log}");
    assert!(pinned::xdp_attached(topo.lb(), &topo.lb_ifname()).unwrap());

    let layout = pinned::meta(&state).expect("state record").layout;
    pinned::set_layout(&state, layout + 1).expect("set layout");
    let log = refused("another layout version");
    let want = format!(
        "layout version {}; this xlb uses version {layout}",
        layout + 1
    );
    assert!(log.contains(&want), "{log}");
    std::thread::sleep(Duration::from_secs(1));
    let report = traffic.stop();
    eprintln!("while refusing: {}", report.summary());
    assert_eq!(report.survivors(), 20, "{:?}", report.errors(5));
    assert!(
        report.failed_attempts().is_empty(),
        "{:?}",
        report.errors(5)
    );
}

/// `xlb down` — through the running daemon, and without one — leaves no
/// program attached, nothing pinned and no process.
#[test]
fn xlb_down_leaves_nothing_behind() {
    if !require_root("xlb_down_leaves_nothing_behind") {
        return;
    }
    let topo = Topology::dsr(WEIGHTS.len()).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let config = topo.write_xlb_config(&WEIGHTS).expect("config");
    let state = topo.state_dir("lb");
    let down = |args: &[&str]| {
        let out = Command::new(xlb_exe())
            .arg("down")
            .args(args)
            .output()
            .expect("run xlb down");
        assert!(out.status.success(), "xlb down: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let gone = |how: &str| {
        assert!(!state.exists(), "{how}: {} still exists", state.display());
        assert!(
            !pinned::xdp_attached(topo.lb(), &topo.lb_ifname()).unwrap(),
            "{how}: a program is still attached"
        );
    };

    // Through the daemon.
    let xlb = start(&topo, &config, &[]);
    let socket = topo.control_socket();
    let msg = down(&["--socket", socket.to_str().unwrap()]);
    assert!(msg.contains("program detached"), "{msg}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while xlb.is_running() {
        assert!(Instant::now() < deadline, "xlb still runs after down");
        std::thread::sleep(Duration::from_millis(20));
    }
    gone("down through the daemon");

    // Without one: a crashed xlb left its data plane.
    let xlb = start(&topo, &config, &[]);
    xlb.kill_now().expect("SIGKILL");
    assert!(pinned::xdp_attached(topo.lb(), &topo.lb_ifname()).unwrap());
    let msg = down(&["--config", config.to_str().unwrap()]);
    assert!(msg.contains("program detached"), "{msg}");
    gone("down without a daemon");
}

/// Two instances in two namespaces, each with its own state_dir: each
/// restart adopts its own state, counters included.
#[test]
fn two_instances_keep_their_own_pinned_state() {
    if !require_root("two_instances_keep_their_own_pinned_state") {
        return;
    }
    let a = Topology::dsr(WEIGHTS.len()).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let b = Topology::dsr(WEIGHTS.len()).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let mut nodes = Vec::new();
    for (topo, requests) in [(&a, 30), (&b, 90)] {
        let config = topo.write_xlb_config(&WEIGHTS).expect("config");
        let xlb = start(topo, &config, &[]);
        let answered = http_get_many(
            topo.client(),
            vip(topo),
            "/",
            requests,
            Duration::from_secs(2),
        );
        assert!(answered.iter().all(|r| r.is_ok()), "{answered:?}");
        let packets = web4(&xlb.status().unwrap()).packets;
        nodes.push((topo, config, xlb, packets));
    }
    assert_ne!(nodes[0].3, nodes[1].3, "different traffic on each");
    for (topo, config, xlb, packets) in nodes {
        xlb.kill_now().unwrap();
        drop(xlb);
        let again = start(topo, &config, &[]);
        let s = again.status().unwrap();
        assert_eq!(s.dataplane.as_ref().unwrap().start, "adopted");
        assert!(
            s.dataplane
                .as_ref()
                .unwrap()
                .state_dir
                .contains(topo.prefix()),
            "{s}"
        );
        // Its own counters carried over (30 connections are ~150 packets,
        // 90 are ~450: the other instance's would show).
        assert!(web4(&s).packets >= packets, "own counters: {s}");
        assert!(web4(&s).packets < packets + 100, "not the other's: {s}");
    }
}

fn web4(s: &Status) -> &lb_user::api::VipStatus {
    s.vip("web4").expect("web4")
}

/// `[conntrack] size` changed across a restart: the connection tables are
/// copied into tables of the new size and every NAT connection (whose
/// replies need their reverse entries) goes on.
#[test]
fn a_connection_table_resize_keeps_every_nat_connection() {
    if !require_root("a_connection_table_resize_keeps_every_nat_connection") {
        return;
    }
    let topo =
        NatTopology::build(NatLayout::TwoArmed, 3).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let sized = |size: u32| -> XlbConfig {
        let mut c = topo.xlb_config(&[(1, 1), (2, 1), (3, 1)]);
        c.conntrack = Some(xlb_testbed::config::Conntrack {
            size: Some(size),
            ..Default::default()
        });
        c
    };
    let path = sized(2048).write(&topo.config_path()).unwrap();
    let xlb = start(&topo, &path, &[]);
    let traffic = Traffic::start(topo.client(), vip(&topo), LONG_LIVED, PERIOD, None).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(xlb.stop(Duration::from_secs(5)));
    sized(8192).write(&topo.config_path()).unwrap();
    let next = start(&topo, &path, &[]);
    std::thread::sleep(Duration::from_secs(1));
    let report = traffic.stop();
    assert_eq!(dataplane(&next).start, "migrated");
    assert_nothing_lost_long("NAT, connection table resized", &report, &next);
}

fn assert_nothing_lost_long(what: &str, report: &Report, xlb: &Xlb) {
    eprintln!("{what}: {}", report.summary());
    assert!(
        report.survivors() == LONG_LIVED,
        "{what}: {}\nerrors: {:#?}\n--- xlb log ---\n{}",
        report.summary(),
        report.errors(10),
        xlb.log_tail(40)
    );
}
