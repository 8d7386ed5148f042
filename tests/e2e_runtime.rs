//! Backends at runtime, end to end: real namespaces, real nginx backends,
//! the real `xlb run`, and `xlb backend add|remove` from the command line.
//! The file names backends 1..=3; backend 4 is the one an orchestrator
//! registers at runtime. Needs root; each test has its own topology.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use lb_user::api::{BackendSource, BackendState, Status};
use xlb_testbed::config::{Backend, Vip};
use xlb_testbed::running::{require_root, status, wait_ready, xlb_cli, xlb_exe};
use xlb_testbed::topology::{Topology, VIP_PORT, Xlb, http_bodies, http_get, status_vip};
use xlb_testbed::traffic::Traffic;

const TIMEOUT: Duration = Duration::from_secs(3);
const LONG_LIVED: usize = 50;
const OPERATIONS: usize = 100;
/// How often each long-lived connection sends.
const PERIOD: Duration = Duration::from_millis(5);

struct Running {
    xlb: Xlb,
    topo: Topology,
    path: PathBuf,
}

/// Four nginx backends; the file's VIP web4 has backends 1..=3, weight 1.
fn start() -> Running {
    let topo = Topology::dsr(4).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let vip =
        Vip::new("web4", topo.vip4(), VIP_PORT).backends((1..=3).map(|i| {
            Backend::new(IpAddr::from(topo.backend_addr4(i))).name(&format!("backend-{i}"))
        }));
    let config = topo.lb_config().vip(vip);
    let path = config.write(&topo.config_path()).expect("write config");
    let xlb = topo.start_xlb(&xlb_exe(), &path).expect("start xlb");
    wait_ready(&xlb);
    Running { xlb, topo, path }
}

/// Runs `xlb <args>` and insists it succeeded; returns what it printed.
fn xlb_ok(r: &Running, args: &[&str]) -> String {
    let out = xlb_cli(&r.topo.control_socket(), args);
    assert!(
        out.status.success(),
        "xlb {args:?} failed: {}\n--- xlb log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        r.xlb.log_tail(20)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn backend4(r: &Running) -> String {
    r.topo.backend_addr4(4).to_string()
}

fn vip(r: &Running) -> SocketAddr {
    SocketAddr::new(r.topo.vip4().into(), VIP_PORT)
}

/// `count` new connections, by the backend that answered.
fn served(r: &Running, count: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let bodies = http_bodies(r.topo.client(), vip(r), "/", count, TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", r.xlb.log_tail(20)));
    for body in bodies {
        *out.entry(body).or_default() += 1;
    }
    out
}

fn runtime_backend<'a>(s: &'a Status, address: &str) -> &'a lb_user::api::BackendStatus {
    status_vip(s, "web4")
        .unwrap_or_else(|e| panic!("{e:#}"))
        .backends
        .iter()
        .find(|b| b.address == address && b.state != BackendState::Removed)
        .unwrap_or_else(|| panic!("no backend {address} in {s}"))
}

#[test]
fn a_backend_added_with_the_cli_answers_its_share_of_new_connections() {
    if !require_root("a_backend_added_with_the_cli_answers_its_share_of_new_connections") {
        return;
    }
    let r = start();
    let addr = backend4(&r);
    // A client opening new connections all along: the first one backend-4
    // answers dates the first packet forwarded to it (its SYN).
    let stop = AtomicBool::new(false);
    let (client, vip) = (r.topo.client(), vip(&r));
    let (command, printed, replied, first) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                if let Ok((200, body)) = http_get(client, vip, "/", TIMEOUT)
                    && body.trim() == "backend-4"
                {
                    return Some(sent);
                }
            }
            None
        });
        std::thread::sleep(Duration::from_millis(200));
        let command = Instant::now();
        let printed = xlb_ok(&r, &["backend", "add", "web4", &addr]);
        let replied = command.elapsed();
        while !watcher.is_finished() && command.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Relaxed);
        let first = watcher.join().expect("watcher").unwrap_or_else(|| {
            panic!(
                "backend-4 answered no connection within 5 s of `xlb backend add`: {printed}\n{}",
                r.xlb.log_tail(20)
            )
        });
        (command, printed, replied, first)
    });
    let to_first = first.saturating_duration_since(command);
    println!(
        "xlb backend add: CLI returned after {:.1} ms; first connection answered by the new \
         backend was sent {:.1} ms after the command started (reply: {})",
        replied.as_secs_f64() * 1e3,
        to_first.as_secs_f64() * 1e3,
        printed.trim()
    );
    assert!(printed.contains("added at runtime"), "{printed}");
    let s = status(&r.xlb);
    let b = runtime_backend(&s, &addr);
    assert_eq!(
        (b.source, b.state),
        (BackendSource::Runtime, BackendState::Active)
    );

    let got = served(&r, 400);
    let share = 100.0 * *got.get("backend-4").unwrap_or(&0) as f64 / 400.0;
    assert!(
        (share - 25.0).abs() <= 10.0,
        "backend-4 (weight 1 of 4) answered {share:.1}% of 400 new connections: {got:?}"
    );
}

/// Who may add and remove at all is `tests/e2e_access.rs`'s.
#[test]
fn bad_input_is_refused_with_a_clear_message() {
    if !require_root("bad_input_is_refused_with_a_clear_message") {
        return;
    }
    let r = start();
    let socket = r.topo.control_socket();
    let addr = backend4(&r);
    for (args, want) in [
        (
            vec!["backend", "add", "web4", "fd00::4"],
            "IPv6 backend fd00::4 under IPv4 VIP",
        ),
        (
            vec!["backend", "add", "web4", &addr, "--weight", "20000"],
            "weight 20000 is out of range 0..=10000",
        ),
        (
            vec!["backend", "add", "web4", &addr, "--port", "8080"],
            "translating ports needs mode = \"nat\"",
        ),
        (
            vec!["backend", "add", "nope", &addr],
            "no VIP named \"nope\"",
        ),
        (
            vec!["backend", "add", "web4", "198.18.0.11"],
            "already has backend 198.18.0.11",
        ),
        (
            vec!["backend", "remove", "web4", "backend-1"],
            "is in the configuration file",
        ),
    ] {
        let out = xlb_cli(&socket, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(want),
            "{args:?}: {stderr}"
        );
    }
    let s = status(&r.xlb);
    assert_eq!(
        status_vip(&s, "web4").unwrap().backends.len(),
        3,
        "nothing was added"
    );
}

#[test]
fn fifty_long_lived_connections_see_no_error_through_100_adds_and_removes() {
    if !require_root("fifty_long_lived_connections_see_no_error_through_100_adds_and_removes") {
        return;
    }
    let r = start();
    let addr = backend4(&r);
    xlb_ok(&r, &["backend", "add", "web4", &addr]);
    // Some of the connections land on backend-4: its removals must not
    // break them.
    let long = Traffic::start(r.topo.client(), vip(&r), LONG_LIVED, PERIOD, None)
        .expect("start the long-lived connections");
    let started = Instant::now();
    for op in 0..OPERATIONS {
        if op % 2 == 0 {
            xlb_ok(&r, &["backend", "remove", "web4", &addr]);
        } else {
            xlb_ok(&r, &["backend", "add", "web4", &addr]);
        }
    }
    let took = started.elapsed();
    // A little longer, so the last change is also lived through.
    std::thread::sleep(Duration::from_millis(300));
    let report = long.stop();
    assert_eq!(
        report.survivors(),
        LONG_LIVED,
        "a long-lived connection broke: {:?}\n{}",
        report.errors(5),
        r.xlb.log_tail(30)
    );
    let moved: Vec<_> = report
        .moved()
        .iter()
        .map(|c| (c.port, &c.served_by))
        .collect();
    assert!(
        moved.is_empty(),
        "(port, backends) that changed backend: {moved:?}"
    );
    let mut on: BTreeMap<String, usize> = BTreeMap::new();
    for c in &report.connections {
        for b in &c.served_by {
            *on.entry(b.clone()).or_default() += 1;
        }
    }
    println!(
        "{OPERATIONS} add/remove operations in {:.0} ms ({:.1} ms each, CLI included); {}; \
         by backend: {on:?}",
        took.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e3 / OPERATIONS as f64,
        report.summary()
    );
    assert!(
        on.contains_key("backend-4"),
        "no long-lived connection was on backend-4: {on:?}"
    );
}

#[test]
fn reload_and_restart_keep_the_runtime_backend_serving() {
    if !require_root("reload_and_restart_keep_the_runtime_backend_serving") {
        return;
    }
    let r = start();
    let addr = backend4(&r);
    xlb_ok(&r, &["backend", "add", "web4", &addr, "--weight", "2"]);
    xlb_ok(&r, &["reload"]);
    let s = status(&r.xlb);
    let b = runtime_backend(&s, &addr);
    assert_eq!(
        (b.source, b.weight),
        (BackendSource::Runtime, 2),
        "after reload"
    );

    let Running { xlb, topo, path } = r;
    assert!(xlb.stop(Duration::from_secs(5)), "xlb ignored SIGTERM");
    let xlb = topo.start_xlb(&xlb_exe(), &path).expect("restart xlb");
    let r = Running { xlb, topo, path };
    wait_ready(&r.xlb);
    let s = status(&r.xlb);
    let b = runtime_backend(&s, &addr);
    assert_eq!(
        (b.source, b.state, b.weight),
        (BackendSource::Runtime, BackendState::Active, 2),
        "after restart: {s}"
    );
    let got = served(&r, 200);
    assert!(
        got.get("backend-4").copied().unwrap_or(0) > 0,
        "backend-4 answered nothing after the restart: {got:?}"
    );
    xlb_ok(&r, &["backend", "remove", "web4", &addr]);
    let got = served(&r, 50);
    assert_eq!(
        got.get("backend-4"),
        None,
        "removed, yet new connections reach it: {got:?}"
    );
}
