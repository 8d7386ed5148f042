//! End-to-end health checks: real namespaces, real nginx backends, the real
//! `xlb run`. Backends are stopped, restarted, made to serve a wrong body or
//! to accept and never answer; xlb must take them out (and back) on its own,
//! within the bounds the check parameters promise, and clients must never be
//! sent to a backend that is out. Needs root; each test has its own topology.

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use lb_user::api::{BackendState, BackendStatus, Status};
use xlb_testbed::config::{Backend, HealthCheck, Vip, XlbConfig};
use xlb_testbed::running::{require_root, status, xlb_cli, xlb_exe};
use xlb_testbed::topology::{KeepAlive, Serve, Topology, VIP_PORT, Xlb, http_bodies, status_vip};

const INTERVAL_MS: u64 = 300;
const TIMEOUT_MS: u64 = 200;
const RISE: u32 = 2;
const FALL: u32 = 2;
/// Added to the promised bounds for scheduling jitter. The bounds are
/// checked against the time stamp of xlb's own log line for the change, so
/// polling `xlb status` adds nothing to it.
const SLACK: Duration = Duration::from_millis(150);
/// How long to poll `xlb status` for a change before giving up.
const POLL_LIMIT: Duration = Duration::from_secs(5);
const REQUESTS: usize = 60;
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest a dead backend may stay in: `fall` failed checks, the first
/// one up to an interval after the failure, the last one taking `timeout`.
fn down_bound() -> Duration {
    Duration::from_millis(INTERVAL_MS * u64::from(FALL) + TIMEOUT_MS) + SLACK
}

/// The longest a recovered backend may stay out: `rise` good checks.
fn up_bound() -> Duration {
    Duration::from_millis(INTERVAL_MS * u64::from(RISE) + TIMEOUT_MS) + SLACK
}

/// A check of `kind` with the test timings.
fn health(kind: &str) -> HealthCheck {
    HealthCheck::new(kind).timing(INTERVAL_MS, TIMEOUT_MS, RISE, FALL)
}

/// VIPs web4 and web6 on port 80 over every backend, checked by `health4`
/// and `health6`.
fn config(topo: &Topology, health4: HealthCheck, health6: HealthCheck) -> XlbConfig {
    let vip = |name: &str, addr: std::net::IpAddr, health: HealthCheck, v6: bool| {
        Vip::new(name, addr, VIP_PORT)
            .health(health)
            .backends((1..=topo.backend_count()).map(|i| {
                let addr: std::net::IpAddr = if v6 {
                    topo.backend_addr6(i).into()
                } else {
                    topo.backend_addr4(i).into()
                };
                Backend::new(addr).name(&format!("backend-{i}"))
            }))
    };
    topo.lb_config()
        .vip(vip("web4", topo.vip4().into(), health4, false))
        .vip(vip("web6", topo.vip6().into(), health6, true))
}

struct Running {
    xlb: Xlb,
    topo: Topology,
    config: XlbConfig,
    path: PathBuf,
}

fn start(health4: HealthCheck, health6: HealthCheck) -> Running {
    let topo = Topology::dsr(3).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let config = config(&topo, health4, health6);
    let path = config.write(&topo.config_path()).expect("write config");
    let xlb = topo.start_xlb(&xlb_exe(), &path).expect("start xlb");
    xlb_testbed::running::wait_ready(&xlb);
    Running {
        xlb,
        topo,
        config,
        path,
    }
}

fn backend<'a>(status: &'a Status, vip: &str, name: &str) -> &'a BackendStatus {
    status_vip(status, vip)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .backend(name)
        .unwrap_or_else(|| panic!("no {vip}/{name} in {status}"))
}

fn state(status: &Status, vip: &str, name: &str) -> BackendState {
    backend(status, vip, name).state
}

/// What the last check of `vip`/`name` saw.
fn last_detail(status: &Status, vip: &str, name: &str) -> String {
    backend(status, vip, name)
        .health
        .as_ref()
        .and_then(|h| h.last_detail.clone())
        .unwrap_or_default()
}

/// Polls until `vip`/`name` is in `want`; returns how long that took.
/// Panics after `limit`, naming the last status and the log.
fn wait_state(
    r: &Running,
    vip: &str,
    name: &str,
    want: BackendState,
    since: Instant,
    limit: Duration,
) -> Duration {
    loop {
        let s = status(&r.xlb);
        if state(&s, vip, name) == want {
            return since.elapsed();
        }
        if since.elapsed() > limit {
            panic!(
                "{vip}/{name} not {} after {limit:?}: {:?}\n--- xlb log ---\n{}",
                want.as_str(),
                backend(&s, vip, name),
                r.xlb.log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Bodies (trimmed) of `REQUESTS` new connections to the VIP; every one
/// must succeed with 200.
fn bodies(r: &Running, v6: bool) -> Vec<String> {
    let ip = if v6 {
        r.topo.vip6().into()
    } else {
        r.topo.vip4().into()
    };
    let addr = SocketAddr::new(ip, VIP_PORT);
    http_bodies(r.topo.client(), addr, "/", REQUESTS, HTTP_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n--- xlb log ---\n{}", r.xlb.log_tail(30)))
}

fn packets(status: &Status, vip: &str, name: &str) -> u64 {
    backend(status, vip, name).packets
}

/// A keep-alive connection to the IPv4 VIP from the client namespace.
fn keep_alive(r: &Running) -> KeepAlive {
    let addr = SocketAddr::new(r.topo.vip4().into(), VIP_PORT);
    KeepAlive::connect(r.topo.client(), addr, HTTP_TIMEOUT).expect("connect to the VIP")
}

/// `GET /` on a keep-alive connection: the body, trimmed (status must be 200).
fn get_on(c: &mut KeepAlive) -> anyhow::Result<String> {
    let (code, body) = c.get("/")?;
    anyhow::ensure!(code == 200, "status {code}: {body:?}");
    Ok(body.trim().to_owned())
}

/// How long after `since` xlb logged the health change (`"UP"` or
/// `"DOWN"`) of `vip`/`name`: the first such line stamped after `since`.
fn change_logged_after(
    r: &Running,
    vip: &str,
    name: &str,
    to: &str,
    since: SystemTime,
) -> Duration {
    let (change, vip_field, backend_field) = (
        format!("backend health: {to}"),
        format!("vip={vip} "),
        format!("backend={name} "),
    );
    r.xlb
        .logged_after(since, |l| {
            l.contains(&change) && l.contains(&vip_field) && l.contains(&backend_field)
        })
        .unwrap_or_else(|| {
            panic!(
                "no {to} line for {vip}/{name} after the change in:\n{}",
                r.xlb.log()
            )
        })
}

#[test]
fn stopped_backend_leaves_in_time_and_returns_after_rise() {
    if !require_root("stopped_backend_leaves_in_time_and_returns_after_rise") {
        return;
    }
    let mut r = start(health("http"), health("tcp"));
    // Taken before the stop: the measured time can only be too long.
    let stopped = (Instant::now(), SystemTime::now());
    r.topo.stop_backend(1).unwrap();
    for vip in ["web4", "web6"] {
        wait_state(
            &r,
            vip,
            "backend-1",
            BackendState::Down,
            stopped.0,
            POLL_LIMIT,
        );
        let took = change_logged_after(&r, vip, "backend-1", "DOWN", stopped.1);
        eprintln!(
            "{vip}/backend-1 down {took:?} after nginx stopped (bound {:?})",
            down_bound()
        );
        assert!(took <= down_bound(), "{vip}: down after {took:?}");
    }
    let before = status(&r.xlb);
    let detail = last_detail(&before, "web4", "backend-1");
    assert!(detail.contains("refused"), "{detail}");
    for v6 in [false, true] {
        let got = bodies(&r, v6);
        assert!(!got.contains(&"backend-1".to_owned()), "{got:?}");
    }
    let after = status(&r.xlb);
    for vip in ["web4", "web6"] {
        assert_eq!(
            packets(&after, vip, "backend-1"),
            packets(&before, vip, "backend-1"),
            "{vip}: a new connection reached the stopped backend"
        );
    }

    r.topo.start_backend(1, Serve::Normal).unwrap();
    // Taken once nginx listens: no check can pass earlier.
    let started = (Instant::now(), SystemTime::now());
    for vip in ["web4", "web6"] {
        wait_state(
            &r,
            vip,
            "backend-1",
            BackendState::Active,
            started.0,
            POLL_LIMIT,
        );
        let took = change_logged_after(&r, vip, "backend-1", "UP", started.1);
        eprintln!(
            "{vip}/backend-1 back {took:?} after nginx started (bound {:?})",
            up_bound()
        );
        assert!(took <= up_bound(), "{vip}: back after {took:?}");
    }
    let got = bodies(&r, false);
    assert!(got.contains(&"backend-1".to_owned()), "{got:?}");

    // Each change logged once, with its reason.
    let log = r.xlb.log();
    let downs: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("backend health: DOWN") && l.contains("web4") && l.contains("backend-1")
        })
        .collect();
    assert_eq!(downs.len(), 1, "{downs:?}");
    assert!(
        downs[0].contains("refused") && downs[0].contains("latency_ms"),
        "{}",
        downs[0]
    );
}

#[test]
fn content_check_catches_a_wrong_body_and_timeouts_catch_a_silent_backend() {
    if !require_root("content_check_catches_a_wrong_body_and_timeouts_catch_a_silent_backend") {
        return;
    }
    let mut r = start(
        HealthCheck {
            expect_body: Some("backend-".into()),
            ..health("http_content")
        },
        health("http"),
    );
    r.topo.start_backend(2, Serve::WrongBody).unwrap();
    r.topo.silence_backend(3).unwrap();
    let t0 = Instant::now();
    wait_state(&r, "web4", "backend-2", BackendState::Down, t0, POLL_LIMIT);
    wait_state(&r, "web4", "backend-3", BackendState::Down, t0, POLL_LIMIT);
    wait_state(&r, "web6", "backend-3", BackendState::Down, t0, POLL_LIMIT);
    // The status-only check keeps the wrong-body backend for several more
    // intervals, with passing results.
    std::thread::sleep(Duration::from_millis(INTERVAL_MS * u64::from(FALL + 2)));
    let s = status(&r.xlb);
    assert_eq!(state(&s, "web6", "backend-2"), BackendState::Active, "{s}");
    let web6_b2 = backend(&s, "web6", "backend-2").health.as_ref();
    assert_eq!(web6_b2.and_then(|h| h.last_ok), Some(true), "{s}");
    let wrong = last_detail(&s, "web4", "backend-2");
    assert!(wrong.contains("lacks"), "{wrong}");
    let silent = last_detail(&s, "web6", "backend-3");
    assert!(silent.contains("no complete HTTP answer"), "{silent}");

    // No client is sent to the silent backend (it would time out) nor, via
    // the content-checked VIP, to the wrong body.
    assert!(bodies(&r, false).iter().all(|b| b == "backend-1"));
    let v6 = bodies(&r, true);
    assert!(
        v6.iter().all(|b| b == "backend-1" || b == "maintenance"),
        "{v6:?}"
    );
    assert!(v6.iter().any(|b| b == "maintenance"), "{v6:?}");
}

#[test]
fn drain_weight_and_reload_at_runtime_broken_reload_changes_nothing() {
    if !require_root("drain_weight_and_reload_at_runtime_broken_reload_changes_nothing") {
        return;
    }
    // web6 is checked by ICMP echo: ready means pings work end to end.
    let r = start(health("http"), health("icmp"));
    let sock = r.topo.control_socket();
    let text = String::from_utf8(xlb_cli(&sock, &["status"]).stdout).unwrap();
    eprintln!("{text}");
    assert!(
        text.contains("health up") && text.contains("[icmp echo]"),
        "{text}"
    );

    // A long-lived connection to backend-1, opened before the drain.
    let mut long = (0..40)
        .map(|_| keep_alive(&r))
        .find_map(|mut c| (get_on(&mut c).unwrap() == "backend-1").then_some(c))
        .expect("one of 40 connections lands on backend-1");

    let out = xlb_cli(&sock, &["backend", "drain", "web4", "backend-1"]);
    assert!(out.status.success(), "{out:?}");
    let before = status(&r.xlb);
    assert_eq!(state(&before, "web4", "backend-1"), BackendState::Draining);
    assert!(bodies(&r, false).iter().all(|b| b != "backend-1"));
    assert_eq!(
        packets(&status(&r.xlb), "web4", "backend-1"),
        packets(&before, "web4", "backend-1"),
        "a drained backend got a new connection"
    );
    // The connection opened before the drain goes on being served by it:
    // the connection table keeps it there.
    for _ in 0..5 {
        assert_eq!(
            get_on(&mut long).expect("request on the drained backend's connection"),
            "backend-1"
        );
    }
    let out = xlb_cli(&sock, &["backend", "undrain", "web4", "backend-1"]);
    assert!(out.status.success(), "{out:?}");
    assert!(bodies(&r, false).iter().any(|b| b == "backend-1"));

    let out = xlb_cli(&sock, &["backend", "weight", "web4", "backend-2", "0"]);
    assert!(out.status.success(), "{out:?}");
    assert!(bodies(&r, false).iter().all(|b| b != "backend-2"));
    let out = xlb_cli(&sock, &["backend", "drain", "web4", "backend-9"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no backend named"),
        "{out:?}"
    );

    // A broken file is refused, by `xlb reload` and by SIGHUP alike, and
    // nothing changes: the runtime weight stays, traffic flows.
    let mut broken = r.config.clone();
    broken.vip_mut("web4").health.as_mut().unwrap().rise = Some(0);
    std::fs::write(&r.path, broken.to_toml()).unwrap();
    let out = xlb_cli(&sock, &["reload"]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("vip[0].health.rise: 0 is out of range 1..=100"),
        "{err}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(r.xlb.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(r.xlb.is_running());
    let s = status(&r.xlb);
    assert_eq!(backend(&s, "web4", "backend-2").weight_override, Some(0));
    assert!(bodies(&r, false).iter().all(|b| b != "backend-2"));
    assert!(bodies(&r, true).len() == REQUESTS);

    // A good file is applied and resets the runtime weight.
    let mut changed = r.config.clone();
    changed.vip_mut("web4").health.as_mut().unwrap().fall = Some(3);
    changed.write(&r.path).unwrap();
    let out = xlb_cli(&sock, &["reload"]);
    assert!(out.status.success(), "{out:?}");
    let s = status(&r.xlb);
    assert_eq!(backend(&s, "web4", "backend-2").weight_override, None);
    assert_eq!(state(&s, "web4", "backend-2"), BackendState::Active);
    assert!(bodies(&r, false).iter().any(|b| b == "backend-2"));
}
