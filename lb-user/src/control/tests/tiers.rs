//! Backup tiers on the controller: which backends the ring holds as the
//! primaries go down and come back, what `xlb status` says of them, and
//! that a backup leaving the ring keeps its established flows.

use super::*;

/// VIP "web" (ring 13, `min_usable`, a TCP check with rise = fall = 1 and
/// `on_down`) with backends `b<last>` of weight 1 in `tier`; ids follow
/// the order.
fn tiered(backends: &[(u8, u8)], min_usable: u32, on_down: &str) -> Config {
    let mut text = format!(
        "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.100\"\nport = 80\n\
         ring_size = 13\nmin_usable = {min_usable}\n[vip.health]\ntype = \"tcp\"\nrise = 1\n\
         fall = 1\non_down = \"{on_down}\"\n"
    );
    for (last, tier) in backends {
        text.push_str(&format!(
            "[[vip.backend]]\nname = \"b{last}\"\naddress = \"198.18.0.{last}\"\ntier = {tier}\n"
        ));
    }
    Config::parse(&text, "test.toml").expect("valid test config")
}

/// Three primaries b11..b13 (ids 1..3) and two backups b21, b22 (ids 4, 5).
const FIVE: [(u8, u8); 5] = [(11, 0), (12, 0), (13, 0), (21, 1), (22, 1)];

/// Ring members as (address last byte, id, weight 1).
fn ring_of(members: &[(u8, u32)]) -> Vec<u32> {
    let m: Vec<(u8, u32, u32)> = members.iter().map(|&(l, id)| (l, id, 1)).collect();
    expected_ring(&m)
}

fn serving(c: &Controller<MemoryMaps>) -> Vec<u8> {
    c.status().unwrap().vips[0].serving_tiers.clone()
}

fn up_all(c: &mut Controller<MemoryMaps>, lasts: &[u8]) {
    for &last in lasts {
        c.record_check(&key(), ip(last), outcome(true)).unwrap();
    }
}

fn started(on_down: &str) -> (Controller<MemoryMaps>, Table) {
    let mut c = controller();
    let mut n = table(&[11, 12, 13, 21, 22]);
    c.apply(&tiered(&FIVE, 2, on_down), &mut n).unwrap();
    up_all(&mut c, &[11, 12, 13, 21, 22]);
    (c, n)
}

#[test]
fn backups_join_exactly_when_the_primaries_fall_below_min_usable_and_leave_when_they_return() {
    let (mut c, _) = started("keep");
    let primaries = ring_of(&[(11, 1), (12, 2), (13, 3)]);
    assert_eq!(c.maps().rings[&0], primaries);
    assert_eq!(serving(&c), [0]);
    assert_eq!(state(&c, "b21"), BackendState::Backup);
    assert_eq!(state(&c, "b22"), BackendState::Backup);
    assert_eq!(c.status().unwrap().vips[0].backends[3].tier, 1);

    // Two primaries left: still min_usable, the backups stay out.
    c.record_check(&key(), ip(11), outcome(false)).unwrap();
    assert_eq!(c.maps().rings[&0], ring_of(&[(12, 2), (13, 3)]));
    assert_eq!(state(&c, "b21"), BackendState::Backup);

    // One primary left: tier 1 joins with both its backends.
    c.record_check(&key(), ip(12), outcome(false)).unwrap();
    assert_eq!(c.maps().rings[&0], ring_of(&[(13, 3), (21, 4), (22, 5)]));
    assert_eq!(serving(&c), [0, 1]);
    assert_eq!(state(&c, "b21"), BackendState::Active);
    assert_eq!(c.status().unwrap().vips[0].usable_backends, 3);

    // Every primary down: the backups alone.
    c.record_check(&key(), ip(13), outcome(false)).unwrap();
    assert_eq!(c.maps().rings[&0], ring_of(&[(21, 4), (22, 5)]));

    // One primary back is not enough; two are, and the backups leave.
    c.record_check(&key(), ip(11), outcome(true)).unwrap();
    assert_eq!(c.maps().rings[&0], ring_of(&[(11, 1), (21, 4), (22, 5)]));
    c.record_check(&key(), ip(12), outcome(true)).unwrap();
    assert_eq!(c.maps().rings[&0], ring_of(&[(11, 1), (12, 2)]));
    assert_eq!(serving(&c), [0]);
    assert_eq!(state(&c, "b22"), BackendState::Backup);
}

#[test]
fn a_backup_whose_tier_stops_serving_keeps_its_established_flows() {
    // Even with on_down = "reschedule": a backup that leaves is not down.
    let (mut c, _) = started("reschedule");
    for last in [11, 12] {
        c.record_check(&key(), ip(last), outcome(false)).unwrap();
    }
    assert_eq!(state(&c, "b21"), BackendState::Active);
    let joined = c.maps().backends[&4];
    for last in [11, 12] {
        c.record_check(&key(), ip(last), outcome(true)).unwrap();
    }
    assert_eq!(state(&c, "b21"), BackendState::Backup);
    let left = c.maps().backends[&4];
    assert_eq!(left.flags, BACKEND_F_ACTIVE, "active, not rescheduled");
    assert_eq!(
        (left.generation, left.mac),
        (joined.generation, joined.mac),
        "the connection table's entries for it still match"
    );
    // The primaries that went down were flagged to reschedule, as always.
    c.record_check(&key(), ip(13), outcome(false)).unwrap();
    assert_eq!(
        c.maps().backends[&3].flags,
        BACKEND_F_ACTIVE | BACKEND_F_RESCHEDULE
    );
}

#[test]
fn drained_primaries_count_as_not_usable_for_the_tiers() {
    let (mut c, _) = started("keep");
    c.backend_action("web", "b11", BackendAction::Drain)
        .unwrap();
    c.backend_action("web", "b12", BackendAction::Weight(0))
        .unwrap();
    assert_eq!(c.maps().rings[&0], ring_of(&[(13, 3), (21, 4), (22, 5)]));
    c.backend_action("web", "b11", BackendAction::Undrain)
        .unwrap();
    assert_eq!(c.maps().rings[&0], ring_of(&[(11, 1), (13, 3)]));
}

#[test]
fn one_tier_ignores_min_usable_as_before() {
    let mut c = controller();
    let mut n = table(&[11, 12, 13]);
    c.apply(&tiered(&[(11, 0), (12, 0), (13, 0)], 3, "keep"), &mut n)
        .unwrap();
    up_all(&mut c, &[11, 12, 13]);
    c.record_check(&key(), ip(12), outcome(false)).unwrap();
    assert_eq!(c.maps().rings[&0], ring_of(&[(11, 1), (13, 3)]));
    assert_eq!(serving(&c), [0]);
}

#[test]
fn a_reload_that_moves_a_backend_to_another_tier_rebuilds_the_ring() {
    let (mut c, mut n) = started("keep");
    let installs = c.maps().ring_installs;
    // b13 becomes a backup: two primaries are still min_usable.
    let moved = [(11, 0), (12, 0), (13, 1), (21, 1), (22, 1)];
    c.apply(&tiered(&moved, 2, "keep"), &mut n).unwrap();
    assert_eq!(c.maps().ring_installs, installs + 1);
    assert_eq!(c.maps().rings[&0], ring_of(&[(11, 1), (12, 2)]));
    assert_eq!(state(&c, "b13"), BackendState::Backup);
    // b12 follows: tier 1 joins, b13 among it.
    let moved = [(11, 0), (12, 1), (13, 1), (21, 1), (22, 1)];
    c.apply(&tiered(&moved, 2, "keep"), &mut n).unwrap();
    assert_eq!(
        c.maps().rings[&0],
        ring_of(&[(11, 1), (12, 2), (13, 3), (21, 4), (22, 5)])
    );
}

#[test]
fn a_restart_keeps_backups_up_and_writes_nothing() {
    let (mut c, mut n) = started("keep");
    c.record_check(&key(), ip(11), outcome(false)).unwrap();
    let cfg = tiered(&FIVE, 2, "keep");
    let (mut next, _) = restarted(&c);
    next.apply(&cfg, &mut n).unwrap();
    assert_eq!(next.maps().writes, 0, "{:?}", next.maps());
    assert_eq!(state(&next, "b21"), BackendState::Backup, "up, not pending");
    // The backups need no first check after the restart to join.
    next.record_check(&key(), ip(12), outcome(false)).unwrap();
    assert_eq!(next.maps().rings[&0], ring_of(&[(13, 3), (21, 4), (22, 5)]));
}

#[test]
fn announce_counts_the_ring_so_joined_backups_keep_the_vip_servable() {
    let usable = |c: &Controller<MemoryMaps>| {
        let s = c.serving();
        (s[0].usable, s[0].min_usable)
    };
    let (mut c, _) = started("keep");
    assert_eq!(usable(&c), (3, 2));
    for last in [11, 12] {
        c.record_check(&key(), ip(last), outcome(false)).unwrap();
    }
    assert_eq!(usable(&c), (3, 2), "b13 and both backups");
    for last in [13, 21] {
        c.record_check(&key(), ip(last), outcome(false)).unwrap();
    }
    assert_eq!(usable(&c), (1, 2), "b22 alone is below min_usable");
}
