//! The control plane against the real XDP program, without namespaces: a
//! config applied through `Controller` must make every flow land where
//! `maglev::build_table` says, and reloads must keep what stays.
//! Needs root (BPF).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
};

use lb_common::{FLOW_F_CLOSING, FlowState, IPPROTO_TCP, flow_hash};
use lb_user::{
    api::{BackendState, BackendStatus, Status},
    config::{Config, ConntrackConfig},
    maglev,
};
use xlb_testbed::{
    config::{Backend, Vip, XlbConfig},
    fakes::FakeNeighbours,
    frames::*,
    lb::Lb,
};

const XDP_DROP: u32 = 1;
const XDP_TX: u32 = 3;
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

fn mac(last: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x10, last]
}

fn backend_ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
}

/// VIP "web" (198.18.0.100:80, ring 251) over backends b<last>.
fn config(backends: &[(u8, u32)]) -> Config {
    XlbConfig::new("eth0")
        .vip(
            Vip::new("web", VIP, 80)
                .ring_size(251)
                .backends(backends.iter().map(|&(last, weight)| {
                    Backend::new(backend_ip(last))
                        .name(&format!("b{last}"))
                        .weight(weight)
                })),
        )
        .parse()
        .expect("valid test config")
}

fn controller() -> Lb {
    Lb::load()
}

/// A controller whose neighbour table knows the backends `lasts`.
fn with_backends(lasts: &[u8]) -> (Lb, FakeNeighbours) {
    let mut n = FakeNeighbours::default();
    for &last in lasts {
        n.table.insert(backend_ip(last), mac(last));
    }
    (controller(), n)
}

/// Sends one SYN from `sport` and returns the verdict and, if forwarded,
/// the last byte of the destination MAC (which backend got it).
fn send(c: &Lb, sport: u16) -> (u32, Option<u8>) {
    send_flags(c, sport, "S")
}

fn send_flags(c: &Lb, sport: u16, flags: &str) -> (u32, Option<u8>) {
    let input = tcp4_flags(VIP, sport, 80, flags);
    let (verdict, out) = run(c, &input);
    let fwd = (verdict == XDP_TX).then(|| {
        assert_eq!(&out[6..12], &LB_MAC, "source MAC is ours");
        assert_eq!(&out[12..], &input[12..], "L3+ untouched");
        out[5]
    });
    (verdict, fwd)
}

/// Runs one frame through the program: verdict and output frame.
fn run(c: &Lb, input: &[u8]) -> (u32, Vec<u8>) {
    c.run(input)
}

/// The backend (last address byte) the installed Maglev table must give
/// `sport`, computed independently from the config.
fn predict(cfg: &Config, sport: u16, usable: &[u8]) -> u8 {
    let vip = &cfg.vips[0];
    let members: Vec<(u8, maglev::Member)> = vip
        .backends
        .iter()
        .filter_map(|b| {
            let IpAddr::V4(a) = b.address else {
                unreachable!()
            };
            let last = a.octets()[3];
            (usable.contains(&last) && b.weight > 0).then(|| {
                (
                    last,
                    maglev::Member {
                        identity: maglev::identity(b.address, vip.port),
                        weight: b.weight,
                    },
                )
            })
        })
        .collect();
    let table = maglev::build_table(
        &members.iter().map(|(_, m)| *m).collect::<Vec<_>>(),
        vip.ring_size,
    );
    let hash = flow_hash(&key4(CLIENT4, VIP, sport, 80, IPPROTO_TCP));
    members[table[(hash % vip.ring_size) as usize] as usize].0
}

fn backend<'a>(s: &'a Status, name: &str) -> &'a BackendStatus {
    s.vips[0]
        .backends
        .iter()
        .find(|b| b.name == name)
        .unwrap_or_else(|| panic!("no backend {name} in status"))
}

#[test]
fn applied_config_forwards_every_flow_where_maglev_predicts() {
    if !xlb_testbed::require_root("applied_config_forwards_every_flow_where_maglev_predicts") {
        return;
    }
    let (mut c, mut n) = with_backends(&[11, 12, 13]);
    let cfg = config(&[(11, 1), (12, 1), (13, 2)]);
    c.apply(&cfg, &mut n).unwrap();
    let mut got = HashMap::<u8, u32>::new();
    for sport in 20000..20400 {
        let (verdict, to) = send(&c, sport);
        assert_eq!(verdict, XDP_TX);
        let to = to.unwrap();
        assert_eq!(to, predict(&cfg, sport, &[11, 12, 13]), "sport {sport}");
        *got.entry(to).or_default() += 1;
    }
    assert_eq!(got.len(), 3, "every backend used: {got:?}");
    let s = c.status().unwrap();
    assert_eq!(s.vips[0].packets, 400);
    let total: u64 = s.vips[0].backends.iter().map(|b| b.packets).sum();
    assert_eq!(total, 400);
    assert!(
        s.vips[0]
            .backends
            .iter()
            .all(|b| b.state == BackendState::Active)
    );
}

#[test]
fn a_reload_that_only_changes_ring_size_rebuilds_the_ring() {
    if !xlb_testbed::require_root("a_reload_that_only_changes_ring_size_rebuilds_the_ring") {
        return;
    }
    let (mut c, mut n) = with_backends(&[11, 12, 13]);
    let old = config(&[(11, 1), (12, 1), (13, 1)]);
    c.apply(&old, &mut n).unwrap();
    // The same backends over a smaller ring: the data plane must hash into
    // the new size, or flows land where the old table says.
    let mut cfg = old.clone();
    cfg.vips[0].ring_size = 13;
    c.apply(&cfg, &mut n).unwrap();
    let mut moved = 0;
    for sport in 20000..20400 {
        let (verdict, to) = send(&c, sport);
        assert_eq!(verdict, XDP_TX);
        let to = to.unwrap();
        assert_eq!(to, predict(&cfg, sport, &[11, 12, 13]), "sport {sport}");
        moved += usize::from(to != predict(&old, sport, &[11, 12, 13]));
    }
    assert!(moved > 0, "the two ring sizes place some flow differently");
}

#[test]
fn a_reload_over_the_backend_limit_is_refused_and_keeps_the_vip() {
    if !xlb_testbed::require_root("a_reload_over_the_backend_limit_is_refused_and_keeps_the_vip") {
        return;
    }
    let (mut c, mut n) = with_backends(&[11, 12, 13]);
    let cfg = config(&[(11, 1), (12, 1), (13, 1)]);
    c.apply(&cfg, &mut n).unwrap();
    // One VIP with more backends than there are ids.
    let huge = XlbConfig::new("eth0")
        .vip(
            Vip::new("web", VIP, 80).backends((0..lb_common::MAX_BACKENDS).map(|i| {
                Backend::new(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 1)) + i))
            })),
        )
        .parse()
        .expect("valid config");
    let err = c.apply(&huge, &mut n).unwrap_err();
    assert!(format!("{err:#}").contains("too many backends"), "{err:#}");
    // The VIP still knows its three backends and forwards to them.
    let s = c.status().unwrap();
    assert_eq!(s.vips[0].backends.len(), 3, "{:?}", s.vips[0].backends);
    for sport in 20000..20100 {
        let (verdict, to) = send(&c, sport);
        assert_eq!(verdict, XDP_TX);
        assert_eq!(
            to.unwrap(),
            predict(&cfg, sport, &[11, 12, 13]),
            "sport {sport}"
        );
    }
    // And the old file applies again.
    c.apply(&cfg, &mut n).unwrap();
}

#[test]
fn unresolved_backend_gets_no_flows_until_its_mac_appears() {
    if !xlb_testbed::require_root("unresolved_backend_gets_no_flows_until_its_mac_appears") {
        return;
    }
    let mut c = controller();
    let mut n = FakeNeighbours::default();
    n.table.insert(backend_ip(11), mac(11));
    n.table.insert(backend_ip(12), mac(12));
    let cfg = config(&[(11, 1), (12, 1), (13, 1)]);
    c.apply(&cfg, &mut n).unwrap();
    assert!(
        n.probed.contains(&backend_ip(13)),
        "the missing MAC is probed"
    );
    let s = c.status().unwrap();
    assert_eq!(backend(&s, "b13").state, BackendState::Unresolved);
    assert_eq!(backend(&s, "b13").mac, None);
    for sport in 30000..30200 {
        assert_eq!(send(&c, sport).1, Some(predict(&cfg, sport, &[11, 12])));
    }
    // The kernel resolves it: the next refresh puts it in the table.
    n.table.insert(backend_ip(13), mac(13));
    c.refresh_neighbours(&mut n).unwrap();
    assert!(!c.has_unresolved());
    for sport in 31000..31200 {
        assert_eq!(send(&c, sport).1, Some(predict(&cfg, sport, &[11, 12, 13])));
    }
}

#[test]
fn reload_keeps_counters_of_backends_that_stay_and_drains_weight_zero() {
    if !xlb_testbed::require_root(
        "reload_keeps_counters_of_backends_that_stay_and_drains_weight_zero",
    ) {
        return;
    }
    let (mut c, mut n) = with_backends(&[11, 12, 13, 14]);
    c.apply(&config(&[(11, 1), (12, 1), (13, 1)]), &mut n)
        .unwrap();
    let first: Vec<u8> = (40000..40300).map(|p| send(&c, p).1.unwrap()).collect();
    let before = c.status().unwrap();

    // b12 drains, b13 leaves, b14 joins.
    let cfg = config(&[(11, 1), (12, 0), (14, 1)]);
    c.apply(&cfg, &mut n).unwrap();
    let after = c.status().unwrap();
    assert_eq!(
        backend(&after, "b11").packets,
        backend(&before, "b11").packets
    );
    assert_eq!(
        backend(&after, "b12").packets,
        backend(&before, "b12").packets
    );
    assert_eq!(backend(&after, "b12").state, BackendState::Draining);
    assert_eq!(
        backend(&after, "b14").packets,
        0,
        "a new backend starts at zero"
    );
    assert_eq!(backend(&after, "b13").state, BackendState::Removed);
    // Established flows keep their backend: drained b12's and removed b13's
    // too (a removed backend finishes its flows, as in IPVS).
    for (sport, was) in (40000..40300u16).zip(&first) {
        assert_eq!(
            send_flags(&c, sport, "A").1,
            Some(*was),
            "sport {sport} moved"
        );
    }
    // New flows never go to the draining backend.
    for sport in 41000..41300 {
        let to = send(&c, sport).1.unwrap();
        assert_eq!(to, predict(&cfg, sport, &[11, 12, 14]), "sport {sport}");
        assert!(
            to == 11 || to == 14,
            "draining/removed backend got a new flow"
        );
    }
}

#[test]
fn vip_with_every_backend_drained_drops_and_counts() {
    if !xlb_testbed::require_root("vip_with_every_backend_drained_drops_and_counts") {
        return;
    }
    let mut c = controller();
    let mut n = FakeNeighbours::default();
    n.table.insert(backend_ip(11), mac(11));
    c.apply(&config(&[(11, 0)]), &mut n).unwrap();
    assert_eq!(send(&c, 1234).0, XDP_DROP);
    let s = c.status().unwrap();
    assert_eq!(s.drops["no_backend"], 1);
    // Removing the VIP leaves its traffic to the kernel.
    c.apply(&XlbConfig::new("eth0").parse().unwrap(), &mut n)
        .unwrap();
    assert_eq!(send(&c, 1234).0, 2 /* XDP_PASS */);
    assert!(c.status().unwrap().vips.is_empty());
}

#[test]
fn a_briefly_missing_neighbour_entry_does_not_move_flows() {
    if !xlb_testbed::require_root("a_briefly_missing_neighbour_entry_does_not_move_flows") {
        return;
    }
    let (mut c, mut n) = with_backends(&[11, 12]);
    let cfg = config(&[(11, 1), (12, 1)]);
    c.apply(&cfg, &mut n).unwrap();
    n.probed.clear();
    // The kernel garbage-collects b12's entry; xlb keeps revalidating it.
    n.table.remove(&backend_ip(12));
    for _ in 0..2 {
        c.refresh_neighbours(&mut n).unwrap();
        for sport in 50000..50100 {
            assert_eq!(send(&c, sport).1, Some(predict(&cfg, sport, &[11, 12])));
        }
    }
    assert!(
        n.probed.contains(&backend_ip(11)),
        "resolved backends are revalidated too"
    );
    assert!(n.probed.contains(&backend_ip(12)));
    // Gone for good: after MAC_LOST_AFTER refreshes it leaves the ring.
    c.refresh_neighbours(&mut n).unwrap();
    let s = c.status().unwrap();
    assert_eq!(backend(&s, "b12").state, BackendState::Unresolved);
    for sport in 51000..51100 {
        assert_eq!(send(&c, sport).1, Some(11));
    }
}

// ---------------------------------------------------------------------------
// Connection table

fn flow_key(sport: u16) -> lb_common::FlowKey {
    key4(CLIENT4, VIP, sport, 80, IPPROTO_TCP)
}

/// Runs the rest of the test on CPU 0: per-CPU state (the new-flow budget)
/// must not change under the test's feet.
fn pin_to_cpu0() {
    let mut set = nix::sched::CpuSet::new();
    set.set(0).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
}

#[test]
fn tracked_flow_keeps_its_backend_when_the_ring_changes() {
    if !xlb_testbed::require_root("tracked_flow_keeps_its_backend_when_the_ring_changes") {
        return;
    }
    let (mut c, mut n) = with_backends(&[11, 12, 13, 14]);
    c.apply(&config(&[(11, 1), (12, 1)]), &mut n).unwrap();
    let first: Vec<u8> = (60000..60200).map(|p| send(&c, p).1.unwrap()).collect();
    // Two backends join: Maglev would move about half of these flows.
    let cfg = config(&[(11, 1), (12, 1), (13, 1), (14, 1)]);
    c.apply(&cfg, &mut n).unwrap();
    let mut would_move = 0;
    for (sport, was) in (60000..60200u16).zip(&first) {
        assert_eq!(send_flags(&c, sport, "A").1, Some(*was), "sport {sport}");
        would_move += usize::from(predict(&cfg, sport, &[11, 12, 13, 14]) != *was);
    }
    assert!(
        would_move > 50,
        "the new ring must disagree for many flows ({would_move})"
    );
    let s = c.status().unwrap();
    assert_eq!(s.conntrack["insert"], 200);
    assert_eq!(s.conntrack["hit"], 200);
    // New flows use the new ring.
    for sport in 61000..61100 {
        assert_eq!(
            send(&c, sport).1,
            Some(predict(&cfg, sport, &[11, 12, 13, 14]))
        );
    }
}

#[test]
fn removed_backend_or_reused_id_never_inherits_old_flows() {
    if !xlb_testbed::require_root("removed_backend_or_reused_id_never_inherits_old_flows") {
        return;
    }
    let (mut c, mut n) = with_backends(&[11, 12, 13, 14]);
    c.apply(&config(&[(11, 1), (12, 1)]), &mut n).unwrap();
    let on_12: Vec<u16> = (62000..62300)
        .filter(|&p| send(&c, p).1 == Some(12))
        .collect();
    assert!(!on_12.is_empty());
    // b12 leaves: its flows go on, new flows never reach it.
    c.apply(&config(&[(11, 1), (13, 1)]), &mut n).unwrap();
    for &sport in &on_12 {
        assert_eq!(send_flags(&c, sport, "A").1, Some(12), "sport {sport}");
    }
    assert!((63000..63200).all(|p| send(&c, p).1 != Some(12)));
    // Its grace over, its id is freed, and b14 joining takes it with a new
    // generation: b12's flows must not follow the id to b14.
    c.expire_retired(std::time::Instant::now() + std::time::Duration::from_secs(2 * 86400))
        .unwrap();
    let cfg = config(&[(11, 1), (13, 1), (14, 1)]);
    c.apply(&cfg, &mut n).unwrap();
    for &sport in &on_12 {
        assert_eq!(
            send_flags(&c, sport, "A").1,
            Some(predict(&cfg, sport, &[11, 13, 14])),
            "a flow of the freed backend is rebalanced by Maglev, sport {sport}"
        );
    }
    assert!(c.status().unwrap().conntrack["stale_backend"] > 0);
}

/// The data plane's clock (`bpf_ktime_get_ns` is CLOCK_MONOTONIC), read
/// from userspace.
fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// An entry idle for longer than the timeout is ignored, a live one is
/// obeyed, a FIN marks it closing. The entries are stamped with the data
/// plane's clock and the test waits the timeout out, so it holds however
/// long the machine has been up.
#[test]
fn idle_entries_expire_and_fin_marks_closing() {
    if !xlb_testbed::require_root("idle_entries_expire_and_fin_marks_closing") {
        return;
    }
    const TIMEOUT_S: u32 = 1;
    let mut c = controller();
    let mut n = FakeNeighbours::default();
    for last in [11, 12, 13] {
        n.table.insert(backend_ip(last), mac(last));
    }
    let mut cfg = config(&[(11, 1), (12, 1), (13, 1)]);
    cfg.conntrack.tcp_timeout = TIMEOUT_S;
    c.apply(&cfg, &mut n).unwrap();
    let sport = 63000;
    let to = send(&c, sport).1.unwrap();
    let other = if to == 11 { 12 } else { 11 };
    let other_id = c.status().unwrap().vips[0]
        .backends
        .iter()
        .position(|b| b.name == format!("b{other}"))
        .unwrap() as u32
        + 1;
    // An entry pointing elsewhere, last seen now; then idle past the timeout.
    let stale = FlowState {
        backend: other_id,
        generation: 1,
        flags: 0,
        last_seen: monotonic_ns(),
    };
    c.maps_mut().set_flow(&flow_key(sport), &stale).unwrap();
    let expired_at = stale.last_seen + u64::from(TIMEOUT_S) * 1_000_000_000;
    while monotonic_ns() <= expired_at + 50_000_000 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let expired_before = c.status().unwrap().conntrack["expired"];
    assert_eq!(
        send_flags(&c, sport, "A").1,
        Some(to),
        "expired entry ignored"
    );
    assert_eq!(c.status().unwrap().conntrack["expired"], expired_before + 1);
    // A live entry pointing elsewhere is obeyed (the table beats Maglev).
    let fresh = FlowState {
        last_seen: monotonic_ns(),
        ..stale
    };
    c.maps_mut().set_flow(&flow_key(sport), &fresh).unwrap();
    assert_eq!(send_flags(&c, sport, "A").1, Some(other));
    // FIN: still forwarded to the same backend, entry marked closing.
    assert_eq!(send_flags(&c, sport, "FA").1, Some(other));
    let state = c.maps().flow(&flow_key(sport)).unwrap().unwrap();
    assert_ne!(state.flags & FLOW_F_CLOSING, 0);
}

#[test]
fn new_flows_above_the_rate_are_balanced_but_not_remembered() {
    if !xlb_testbed::require_root("new_flows_above_the_rate_are_balanced_but_not_remembered") {
        return;
    }
    pin_to_cpu0();
    let (mut c, mut n) = with_backends(&[11, 12]);
    let mut cfg = config(&[(11, 1), (12, 1)]);
    cfg.conntrack = ConntrackConfig {
        new_flows_per_cpu: 5,
        ..ConntrackConfig::default()
    };
    c.apply(&cfg, &mut n).unwrap();
    for sport in 64000..64020 {
        assert_eq!(send(&c, sport).1, Some(predict(&cfg, sport, &[11, 12])));
    }
    let s = c.status().unwrap();
    assert_eq!(s.conntrack["insert"], 5, "{:?}", s.conntrack);
    assert_eq!(s.conntrack["refused"], 15, "{:?}", s.conntrack);
    assert!(c.maps().flow(&flow_key(64000)).unwrap().is_some());
    assert!(c.maps().flow(&flow_key(64019)).unwrap().is_none());
}

#[test]
fn midflow_miss_is_counted_and_remembered() {
    if !xlb_testbed::require_root("midflow_miss_is_counted_and_remembered") {
        return;
    }
    let mut c = controller();
    let mut n = FakeNeighbours::default();
    n.table.insert(backend_ip(11), mac(11));
    c.apply(&config(&[(11, 1)]), &mut n).unwrap();
    assert_eq!(send_flags(&c, 65000, "A").1, Some(11));
    let s = c.status().unwrap();
    assert_eq!(s.conntrack["miss_midflow"], 1);
    assert!(c.maps().flow(&flow_key(65000)).unwrap().is_some());
    // A lone RST opens nothing.
    send_flags(&c, 65001, "R");
    assert!(c.maps().flow(&flow_key(65001)).unwrap().is_none());
}

#[test]
fn frag_needed_follows_the_tracked_flow_after_a_ring_change() {
    if !xlb_testbed::require_root("frag_needed_follows_the_tracked_flow_after_a_ring_change") {
        return;
    }
    let (mut c, mut n) = with_backends(&[11, 12, 13, 14]);
    c.apply(&config(&[(11, 1), (12, 1)]), &mut n).unwrap();
    let first: Vec<u8> = (45000..45100).map(|p| send(&c, p).1.unwrap()).collect();
    let cfg = config(&[(11, 1), (12, 1), (13, 1), (14, 1)]);
    c.apply(&cfg, &mut n).unwrap();
    for (sport, was) in (45000..45100u16).zip(&first) {
        let input = frag_needed4(VIP, CLIENT4, 80, sport);
        let (verdict, out) = run(&c, &input);
        assert_eq!(verdict, XDP_TX, "sport {sport}");
        assert_eq!(out[5], *was, "ICMP for sport {sport} went elsewhere");
        assert_eq!(&out[12..], &input[12..], "only MACs change");
    }
    assert_eq!(c.status().unwrap().conntrack["icmp_to_flow"], 100);
}

#[test]
fn a_standby_vip_is_left_to_the_kernel_while_others_forward() {
    if !xlb_testbed::require_root("a_standby_vip_is_left_to_the_kernel_while_others_forward") {
        return;
    }
    let (mut c, mut n) = with_backends(&[11]);
    // "web" is the VIP of `config`; "other" is not configured yet.
    c.set_standby(&["web".to_string(), "other".to_string()], true)
        .unwrap();
    c.apply(&config(&[(11, 1)]), &mut n).unwrap();
    assert_eq!(send(&c, 1000).0, 2 /* XDP_PASS */);
    let s = c.status().unwrap();
    assert!(!s.vips[0].forwarding && !s.forwarding, "{s:?}");
    assert!(s.render().contains("(dsr, standby)"));
    c.set_standby(&["web".to_string()], false).unwrap();
    assert_eq!(send(&c, 1000).1, Some(11));
    assert!(c.status().unwrap().vips[0].forwarding);
    assert!(!c.forwards("other"), "remembered for a VIP added later");
}
