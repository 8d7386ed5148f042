//! Health results and runtime operations through `Controller`, against the
//! real XDP program (BPF_PROG_TEST_RUN, no namespaces): a backend whose
//! checks fail leaves the Maglev table, comes back after `rise`, a flapping
//! check changes nothing, drains and runtime weights apply until a reload.
//! Needs root (BPF).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    sync::atomic::{AtomicU16, Ordering},
    time::Duration,
};

use anyhow::Result;
use lb_common::{IPPROTO_TCP, VipKey, flow_hash};
use lb_user::{
    api::{BackendAction, BackendState, BackendStatus, Health, Status},
    config::Config,
    control::Neighbours,
    health::Outcome,
    maglev,
};
use xlb_testbed::{
    config::{Backend, HealthCheck, Vip, XlbConfig},
    frames::*,
    lb::Lb,
};

const XDP_DROP: u32 = 1;
const XDP_TX: u32 = 3;
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// Flows per check of the table.
const FLOWS: u16 = 300;
/// Source ports for new flows: each check of the table uses ports no
/// earlier packet used, so the connection table cannot answer for Maglev.
static NEXT_SPORT: AtomicU16 = AtomicU16::new(10_000);

struct StaticNeighbours(HashMap<IpAddr, [u8; 6]>);

impl Neighbours for StaticNeighbours {
    fn lookup(&mut self) -> Result<HashMap<IpAddr, [u8; 6]>> {
        Ok(self.0.clone())
    }
    fn probe(&mut self, _: IpAddr) -> Result<()> {
        Ok(())
    }
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
}

/// A check of `kind` with these rise and fall counts.
fn check(kind: &str, rise: u32, fall: u32) -> HealthCheck {
    HealthCheck {
        rise: Some(rise),
        fall: Some(fall),
        ..HealthCheck::new(kind)
    }
}

/// VIP "web" with backends b11, b12, b13 (weight 1), all resolved, and
/// `health` as its `[vip.health]`.
fn setup(health: HealthCheck) -> (Lb, Config, VipKey, StaticNeighbours) {
    let cfg = XlbConfig::new("eth0")
        .vip(
            Vip::new("web", VIP, 80)
                .ring_size(251)
                .health(health)
                .backends([11, 12, 13].map(|l| Backend::new(ip(l)).name(&format!("b{l}")))),
        )
        .parse()
        .expect("valid test config");
    let mut c = Lb::load();
    let mut n = StaticNeighbours(
        [11, 12, 13]
            .into_iter()
            .map(|l| (ip(l), [2, 0, 0, 0, 0x10, l]))
            .collect(),
    );
    c.apply(&cfg, &mut n).unwrap();
    let key = cfg.vips[0].key();
    (c, cfg, key, n)
}

fn result(ok: bool) -> Outcome {
    Outcome {
        ok,
        latency: Duration::from_micros(300),
        detail: if ok { "HTTP 200" } else { "connection refused" }.into(),
    }
}

fn feed(c: &mut Lb, key: &VipKey, last: u8, ok: bool) {
    c.record_check(key, ip(last), result(ok)).unwrap();
}

/// Verdict and receiving backend (last MAC byte) of one SYN.
fn send(c: &Lb, sport: u16) -> (u32, Option<u8>) {
    send_frame(c, &tcp4(VIP, sport, 80))
}

/// As [`send`], for a mid-connection segment (ACK, no SYN).
fn send_ack(c: &Lb, sport: u16) -> (u32, Option<u8>) {
    send_frame(c, &tcp4_flags(VIP, sport, 80, "A"))
}

fn send_frame(c: &Lb, input: &[u8]) -> (u32, Option<u8>) {
    let (verdict, out) = c.run(input);
    (verdict, (verdict == XDP_TX).then(|| out[5]))
}

/// Where Maglev must send `sport` with these (backend, weight) members.
fn predict(sport: u16, members: &[(u8, u32)]) -> u8 {
    let m: Vec<maglev::Member> = members
        .iter()
        .map(|(l, w)| maglev::Member {
            identity: maglev::identity(ip(*l), 80),
            weight: *w,
        })
        .collect();
    let table = maglev::build_table(&m, 251);
    let hash = flow_hash(&key4(CLIENT4, VIP, sport, 80, IPPROTO_TCP));
    members[table[(hash % 251) as usize] as usize].0
}

/// New flows go where the Maglev table of `members` says.
#[track_caller]
fn assert_flows(c: &Lb, members: &[(u8, u32)]) {
    let first = NEXT_SPORT.fetch_add(FLOWS, Ordering::Relaxed);
    for sport in first..first + FLOWS {
        let (verdict, to) = send(c, sport);
        assert_eq!(verdict, XDP_TX, "sport {sport}");
        assert_eq!(to, Some(predict(sport, members)), "sport {sport}");
    }
}

fn backend<'a>(s: &'a Status, name: &str) -> &'a BackendStatus {
    s.vips[0].backends.iter().find(|b| b.name == name).unwrap()
}

#[test]
fn failing_backend_leaves_after_fall_and_returns_after_rise() {
    if !xlb_testbed::require_root("failing_backend_leaves_after_fall_and_returns_after_rise") {
        return;
    }
    let (mut c, _, key, _) = setup(check("tcp", 2, 3));
    // Checked backends start pending: nothing is usable before a result.
    let s = c.status().unwrap();
    assert!(
        s.vips[0]
            .backends
            .iter()
            .all(|b| b.state == BackendState::Pending)
    );
    assert_eq!(s.vips[0].usable_backends, 0);
    assert_eq!(send(&c, 1).0, XDP_DROP);
    for last in [11, 12, 13] {
        feed(&mut c, &key, last, true);
    }
    assert_flows(&c, &[(11, 1), (12, 1), (13, 1)]);

    feed(&mut c, &key, 12, false);
    feed(&mut c, &key, 12, false);
    assert_flows(&c, &[(11, 1), (12, 1), (13, 1)]);
    feed(&mut c, &key, 12, false);
    assert_flows(&c, &[(11, 1), (13, 1)]);
    let s = c.status().unwrap();
    let b = backend(&s, "b12");
    assert_eq!(b.state, BackendState::Down);
    let h = b.health.as_ref().unwrap();
    assert_eq!(
        (h.state, h.last_ok, h.consecutive),
        (Health::Down, Some(false), 3)
    );
    assert_eq!(h.last_detail.as_deref(), Some("connection refused"));
    assert_eq!(h.last_latency_us, Some(300));
    assert_eq!(s.vips[0].usable_backends, 2);

    feed(&mut c, &key, 12, true);
    assert_flows(&c, &[(11, 1), (13, 1)]);
    feed(&mut c, &key, 12, true);
    assert_flows(&c, &[(11, 1), (12, 1), (13, 1)]);
    assert_eq!(
        backend(&c.status().unwrap(), "b12").state,
        BackendState::Active
    );
}

#[test]
fn flapping_check_does_not_flap_the_table() {
    if !xlb_testbed::require_root("flapping_check_does_not_flap_the_table") {
        return;
    }
    let (mut c, _, key, _) = setup(check("tcp", 2, 2));
    for last in [11, 12, 13] {
        feed(&mut c, &key, last, true);
    }
    for i in 0..50 {
        feed(&mut c, &key, 13, i % 2 == 1);
        assert_eq!(
            backend(&c.status().unwrap(), "b13").state,
            BackendState::Active
        );
    }
    assert_flows(&c, &[(11, 1), (12, 1), (13, 1)]);
}

#[test]
fn all_backends_down_drops_and_counts_no_backend() {
    if !xlb_testbed::require_root("all_backends_down_drops_and_counts_no_backend") {
        return;
    }
    let (mut c, _, key, _) = setup(check("icmp", 1, 1));
    for last in [11, 12, 13] {
        feed(&mut c, &key, last, true);
        feed(&mut c, &key, last, false);
    }
    assert_eq!(send(&c, 1).0, XDP_DROP);
    let s = c.status().unwrap();
    assert_eq!(s.drops["no_backend"], 1);
    assert_eq!(s.vips[0].usable_backends, 0);
    assert!(s.render().contains("no usable backend"), "{}", s.render());
    feed(&mut c, &key, 11, true);
    assert_flows(&c, &[(11, 1)]);
}

#[test]
fn drain_and_runtime_weight_last_until_a_reload() {
    if !xlb_testbed::require_root("drain_and_runtime_weight_last_until_a_reload") {
        return;
    }
    let (mut c, cfg, key, mut n) = setup(HealthCheck::new("tcp"));
    for last in [11, 12, 13] {
        feed(&mut c, &key, last, true);
    }
    let msg = c
        .backend_action("web", "b11", BackendAction::Drain)
        .unwrap();
    assert!(msg.contains("drained"), "{msg}");
    // By address works too.
    c.backend_action("web", "198.18.0.12", BackendAction::Weight(3))
        .unwrap();
    assert_flows(&c, &[(12, 3), (13, 1)]);
    let s = c.status().unwrap();
    let (b11, b12) = (backend(&s, "b11"), backend(&s, "b12"));
    assert_eq!(
        (b11.state, b11.weight, b11.drained),
        (BackendState::Draining, 0, true)
    );
    assert_eq!(
        (b12.weight, b12.config_weight, b12.weight_override),
        (3, 1, Some(3))
    );

    c.backend_action("web", "b11", BackendAction::Undrain)
        .unwrap();
    assert_flows(&c, &[(11, 1), (12, 3), (13, 1)]);

    assert!(
        c.backend_action("web", "nope", BackendAction::Drain)
            .is_err()
    );
    assert!(
        c.backend_action("nope", "b11", BackendAction::Drain)
            .is_err()
    );
    assert!(
        c.backend_action("web", "b11", BackendAction::Weight(10_001))
            .is_err()
    );

    // A reload applies the file: overrides end, health state stays.
    c.backend_action("web", "b13", BackendAction::Drain)
        .unwrap();
    c.apply(&cfg, &mut n).unwrap();
    assert_flows(&c, &[(11, 1), (12, 1), (13, 1)]);
    let s = c.status().unwrap();
    assert!(
        s.vips[0]
            .backends
            .iter()
            .all(|b| !b.drained && b.weight_override.is_none())
    );
    assert!(
        s.vips[0]
            .backends
            .iter()
            .all(|b| b.state == BackendState::Active)
    );
}

/// Established flows (in the connection table) of a backend that goes down
/// stay with it under `on_down = "keep"` and are hashed again under
/// `"reschedule"`; new flows avoid it either way.
fn established_flows_on_down(on_down: &str) {
    let (mut c, _, key, _) = setup(HealthCheck {
        fall: Some(1),
        on_down: Some(on_down.into()),
        ..HealthCheck::new("tcp")
    });
    for last in [11, 12, 13] {
        feed(&mut c, &key, last, true);
    }
    let first = NEXT_SPORT.fetch_add(FLOWS, Ordering::Relaxed);
    let to_b12: Vec<u16> = (first..first + FLOWS)
        .filter(|&sport| send(&c, sport).1 == Some(12))
        .collect();
    assert!(to_b12.len() > 50, "{} flows to b12", to_b12.len());
    feed(&mut c, &key, 12, false);
    assert_flows(&c, &[(11, 1), (13, 1)]);
    for &sport in &to_b12 {
        let (verdict, to) = send_ack(&c, sport);
        assert_eq!(verdict, XDP_TX);
        let want = if on_down == "keep" {
            12
        } else {
            predict(sport, &[(11, 1), (13, 1)])
        };
        assert_eq!(
            to,
            Some(want),
            "{on_down}: established flow from port {sport}"
        );
    }
}

#[test]
fn on_down_keep_leaves_established_flows_on_the_backend() {
    if xlb_testbed::require_root("on_down_keep_leaves_established_flows_on_the_backend") {
        established_flows_on_down("keep");
    }
}

#[test]
fn on_down_reschedule_moves_established_flows() {
    if xlb_testbed::require_root("on_down_reschedule_moves_established_flows") {
        established_flows_on_down("reschedule");
    }
}

#[test]
fn checks_added_by_a_reload_do_not_take_serving_backends_out() {
    if !xlb_testbed::require_root("checks_added_by_a_reload_do_not_take_serving_backends_out") {
        return;
    }
    let (mut c, with_checks, key, mut n) = setup(HealthCheck {
        fall: Some(2),
        ..HealthCheck::new("tcp")
    });
    let mut unchecked = with_checks.clone();
    for b in &mut unchecked.vips[0].backends {
        b.check = None;
    }
    // Serving without checks...
    c.apply(&unchecked, &mut n).unwrap();
    let s = c.status().unwrap();
    assert!(
        s.vips[0]
            .backends
            .iter()
            .all(|b| b.state == BackendState::Active && b.health.is_none())
    );
    assert_flows(&c, &[(11, 1), (12, 1), (13, 1)]);
    // ... then checks are added: they stay in until `fall` failures.
    c.apply(&with_checks, &mut n).unwrap();
    let s = c.status().unwrap();
    assert!(
        s.vips[0]
            .backends
            .iter()
            .all(|b| b.state == BackendState::Active)
    );
    assert_eq!(
        backend(&s, "b11").health.as_ref().unwrap().state,
        Health::Up
    );
    assert_flows(&c, &[(11, 1), (12, 1), (13, 1)]);
    feed(&mut c, &key, 11, false);
    assert_flows(&c, &[(11, 1), (12, 1), (13, 1)]);
    feed(&mut c, &key, 11, false);
    assert_flows(&c, &[(12, 1), (13, 1)]);
    // A reload that keeps the check keeps the state too.
    c.apply(&with_checks, &mut n).unwrap();
    assert_eq!(
        backend(&c.status().unwrap(), "b11").state,
        BackendState::Down
    );
}
