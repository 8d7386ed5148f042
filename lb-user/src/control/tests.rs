//! The controller's bookkeeping on [`MemoryMaps`]: no kernel, no root. The
//! root suite (`tests/control.rs`) proves the kernel's maps end up the same.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use lb_common::{
    BACKEND_F_ACTIVE, BACKEND_F_RESCHEDULE, LB_F_FORWARDING, LB_F_NAT, LB_F_OWN_MAC, MAX_BACKENDS,
    NO_BACKEND, VIP_F_STANDBY, VipKey,
};

use super::*;
use crate::{
    api::{BackendAction, BackendState},
    config::Config,
    health::Outcome,
    maglev,
    maps::MemoryMaps,
};

mod runtime;
mod tiers;

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

#[derive(Default)]
struct Table(HashMap<IpAddr, [u8; 6]>);

impl Neighbours for Table {
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

fn mac(last: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0x10, last]
}

/// Knows the MAC of every backend `lasts`.
fn table(lasts: &[u8]) -> Table {
    Table(lasts.iter().map(|&l| (ip(l), mac(l))).collect())
}

fn controller() -> Controller<MemoryMaps> {
    Controller::new(
        MemoryMaps::new(),
        Node {
            interface: "eth0".into(),
            mac: MAC,
        },
    )
}

/// VIP "web" 198.18.0.100:80 (ring 13, `extra` appended to the VIP) with
/// backends `b<last>` of `weight`.
fn config_with(backends: &[(u8, u32)], extra: &str) -> Config {
    let mut text = format!(
        "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.100\"\nport = 80\n\
         ring_size = 13\n{extra}\n"
    );
    for (last, weight) in backends {
        text.push_str(&format!(
            "[[vip.backend]]\nname = \"b{last}\"\naddress = \"198.18.0.{last}\"\nweight = {weight}\n"
        ));
    }
    Config::parse(&text, "test.toml").expect("valid test config")
}

fn config(backends: &[(u8, u32)]) -> Config {
    config_with(backends, "")
}

fn key() -> VipKey {
    config(&[]).vips.first().map_or_else(
        || VipKey::new("198.18.0.100".parse().unwrap(), 80, 6),
        |v| v.key(),
    )
}

/// The ring Maglev gives these (address last byte, id, weight) members.
fn expected_ring(members: &[(u8, u32, u32)]) -> Vec<u32> {
    let m: Vec<maglev::Member> = members
        .iter()
        .map(|&(last, _, weight)| maglev::Member {
            identity: maglev::identity(ip(last), 80),
            weight,
        })
        .collect();
    maglev::build_table(&m, 13)
        .iter()
        .map(|&i| {
            if i == maglev::EMPTY {
                NO_BACKEND
            } else {
                members[i as usize].1
            }
        })
        .collect()
}

fn ids(c: &Controller<MemoryMaps>) -> Vec<(String, u32)> {
    c.vips[&key()]
        .backends
        .iter()
        .map(|b| (b.config.name.clone(), b.id))
        .collect()
}

fn state(c: &Controller<MemoryMaps>, backend: &str) -> BackendState {
    c.status().unwrap().vips[0]
        .backends
        .iter()
        .find(|b| b.name == backend)
        .unwrap_or_else(|| panic!("no backend {backend}"))
        .state
}

fn outcome(ok: bool) -> Outcome {
    Outcome {
        ok,
        latency: Duration::from_millis(1),
        detail: if ok { "ok" } else { "refused" }.into(),
    }
}

#[test]
fn a_new_vip_is_published_with_its_real_ring_in_one_install() {
    let mut c = controller();
    c.apply(
        &config(&[(11, 1), (12, 1), (13, 2)]),
        &mut table(&[11, 12, 13]),
    )
    .unwrap();
    let m = c.maps();
    let meta = m.vips[&key()];
    assert_eq!(meta.index, 0);
    assert!(m.vip_addrs.contains(&key().address_only()));
    assert_eq!(
        m.rings[&0],
        expected_ring(&[(11, 1, 1), (12, 2, 1), (13, 3, 2)])
    );
    assert_eq!(m.ring_installs, 1, "no empty ring first");
    for (id, last) in [(1, 11), (2, 12), (3, 13)] {
        let b = m.backends[&id];
        assert_eq!(b.flags, BACKEND_F_ACTIVE);
        assert_eq!(b.mac, mac(last));
        assert_eq!(b.generation, 1);
    }
}

#[test]
fn lb_config_has_our_mac_the_node_flags_and_the_conntrack_settings() {
    let mut c = controller();
    assert_eq!(c.maps().config, LbConfig::default(), "nothing before apply");
    let mut cfg = config(&[(11, 1)]);
    cfg.conntrack.tcp_timeout = 123;
    cfg.conntrack.new_flows_per_cpu = 7;
    c.apply(&cfg, &mut table(&[11])).unwrap();
    let lb = c.maps().config;
    assert_eq!(lb.mac, MAC);
    // One NIC: VIP frames to other MACs are not ours.
    assert_eq!(lb.flags, LB_F_FORWARDING | LB_F_OWN_MAC);
    assert_eq!((lb.tcp_timeout, lb.new_flows_per_cpu), (123, 7));
    let nat = config_with(&[(11, 1)], "mode = \"nat\"");
    c.apply(&nat, &mut table(&[])).unwrap();
    assert_eq!(
        c.maps().config.flags,
        LB_F_FORWARDING | LB_F_NAT | LB_F_OWN_MAC
    );
    let mut two_armed = nat.clone();
    two_armed.server_interface = Some("eth1".into());
    c.apply(&two_armed, &mut table(&[])).unwrap();
    assert_eq!(
        c.maps().config.flags,
        LB_F_FORWARDING | LB_F_NAT,
        "VIP frames may come in on either NIC"
    );
    c.apply(&config(&[(11, 1)]), &mut table(&[11])).unwrap();
    assert_eq!(
        c.maps().config.flags,
        LB_F_FORWARDING | LB_F_OWN_MAC,
        "NAT flag cleared"
    );
}

#[test]
fn a_reload_keeps_ids_and_counters_and_an_unchanged_one_installs_nothing() {
    let mut c = controller();
    let mut n = table(&[11, 12, 13, 14]);
    c.apply(&config(&[(11, 1), (12, 1), (13, 1)]), &mut n)
        .unwrap();
    c.maps_mut().count_backend(1, 10, 1000);
    c.maps_mut().count_vip(0, 10, 1000);
    let installs = c.maps().ring_installs;
    c.apply(&config(&[(11, 1), (12, 1), (13, 1)]), &mut n)
        .unwrap();
    assert_eq!(c.maps().ring_installs, installs, "same input, same ring");

    // b12 leaves, b14 joins: the others keep their ids and counters.
    c.apply(&config(&[(11, 1), (13, 1), (14, 1)]), &mut n)
        .unwrap();
    assert_eq!(
        ids(&c),
        [("b11".into(), 1), ("b13".into(), 3), ("b14".into(), 4)]
    );
    let s = c.status().unwrap();
    assert_eq!(s.vips[0].packets, 10);
    assert_eq!(s.vips[0].backends[0].packets, 10);
    assert_eq!(s.vips[0].backends[2].packets, 0);
    assert_eq!(
        c.maps().rings[&0],
        expected_ring(&[(11, 1, 1), (13, 3, 1), (14, 4, 1)])
    );
}

#[test]
fn a_removed_backend_keeps_its_entry_until_its_grace_ends_then_its_id_is_reused() {
    let mut c = controller();
    let mut n = table(&[11, 12, 13]);
    c.apply(&config(&[(11, 1), (12, 1)]), &mut n).unwrap();
    c.apply(&config(&[(11, 1)]), &mut n).unwrap();
    assert_eq!(state(&c, "b12"), BackendState::Removed);
    assert_eq!(
        c.maps().backends[&2].flags,
        BACKEND_F_ACTIVE,
        "its flows go on"
    );
    assert!(!c.maps().rings[&0].contains(&2), "no new flows");
    // A day later (TCP timeout 900 s) the grace is over.
    c.expire_retired(Instant::now() + Duration::from_secs(86_400))
        .unwrap();
    assert!(!c.maps().backends.contains_key(&2), "entry cleared");
    assert!(
        c.status().unwrap().vips[0]
            .backends
            .iter()
            .all(|b| b.name != "b12")
    );
    c.apply(&config(&[(11, 1), (13, 1)]), &mut n).unwrap();
    let b13 = c.maps().backends[&2];
    assert_eq!(b13.mac, mac(13), "b13 got the freed id");
    assert_eq!(b13.generation, 2, "with a new generation");
}

#[test]
fn a_backend_readded_within_its_grace_gets_its_id_and_generation_back() {
    let mut c = controller();
    let mut n = table(&[11, 12]);
    c.apply(&config(&[(11, 1), (12, 1)]), &mut n).unwrap();
    c.maps_mut().count_backend(2, 5, 500);
    c.apply(&config(&[(11, 1)]), &mut n).unwrap();
    c.apply(&config(&[(11, 1), (12, 1)]), &mut n).unwrap();
    assert_eq!(ids(&c), [("b11".into(), 1), ("b12".into(), 2)]);
    let b12 = c.maps().backends[&2];
    assert_eq!(b12.generation, 1);
    assert_eq!(c.status().unwrap().vips[0].backends[1].packets, 5);
    assert_eq!(c.status().unwrap().vips[0].backends.len(), 2);
}

#[test]
fn removing_a_vip_frees_its_index_ring_and_ids() {
    let mut c = controller();
    let mut n = table(&[11, 12]);
    c.apply(&config(&[(11, 1), (12, 1)]), &mut n).unwrap();
    c.maps_mut().count_vip(0, 3, 300);
    c.apply(
        &Config::parse("interface = \"eth0\"\n", "t").unwrap(),
        &mut n,
    )
    .unwrap();
    let m = c.maps();
    assert!(m.vips.is_empty() && m.vip_addrs.is_empty());
    assert_eq!(m.rings[&0], Vec::<u32>::new(), "ring emptied");
    assert!(m.backends.is_empty(), "entries cleared");
    assert!(c.status().unwrap().vips.is_empty());
    // Back again: index 0 and fresh counters.
    c.apply(&config(&[(11, 1)]), &mut n).unwrap();
    assert_eq!(c.maps().vips[&key()].index, 0);
    assert_eq!(c.status().unwrap().vips[0].packets, 0);
}

#[test]
fn a_vip_address_stays_marked_while_another_vip_uses_it() {
    let text = |second: bool| {
        let mut t = String::from(
            "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"198.18.0.100\"\nport = 80\n\
             [[vip.backend]]\naddress = \"198.18.0.11\"\n",
        );
        if second {
            t.push_str(
                "[[vip]]\nname = \"b\"\naddress = \"198.18.0.100\"\nport = 443\n\
                 [[vip.backend]]\naddress = \"198.18.0.11\"\n",
            );
        }
        Config::parse(&t, "t").unwrap()
    };
    let mut c = controller();
    let mut n = table(&[11]);
    c.apply(&text(true), &mut n).unwrap();
    assert_eq!(c.maps().vips.len(), 2);
    let addr = key().address_only();
    assert!(c.maps().vip_addrs.contains(&addr));
    c.apply(&text(false), &mut n).unwrap();
    assert_eq!(c.maps().vips.len(), 1);
    assert!(c.maps().vip_addrs.contains(&addr), "still carries VIP a");
}

#[test]
fn a_config_over_the_backend_limit_is_refused_and_changes_nothing() {
    let mut c = controller();
    let mut n = table(&[11, 12]);
    let small = config(&[(11, 1), (12, 1)]);
    c.apply(&small, &mut n).unwrap();
    let before = c.maps().clone();
    let mut huge = small.clone();
    let template = huge.vips[0].backends[0].clone();
    huge.vips[0].backends = (0..MAX_BACKENDS)
        .map(|i| {
            let mut b = template.clone();
            b.address = IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + i));
            b.name = b.address.to_string();
            b
        })
        .collect();
    let err = c.apply(&huge, &mut n).unwrap_err();
    assert!(matches!(err, ApplyError::Refused(_)), "{err}");
    assert!(err.to_string().contains("too many backends"), "{err}");
    assert_eq!(*c.maps(), before, "no map touched");
    assert_eq!(ids(&c).len(), 2, "the model kept both backends");
    c.apply(&small, &mut n).unwrap();
}

#[test]
fn a_duplicate_backend_address_from_code_is_refused_without_losing_backends() {
    let mut c = controller();
    let mut n = table(&[11, 12]);
    c.apply(&config(&[(11, 1), (12, 1)]), &mut n).unwrap();
    let mut bad = config(&[(11, 1), (12, 1)]);
    let dup = bad.vips[0].backends[0].clone();
    bad.vips[0].backends.push(dup);
    let err = c.apply(&bad, &mut n).unwrap_err();
    assert!(
        err.to_string().contains("duplicate backend address"),
        "{err}"
    );
    assert_eq!(ids(&c).len(), 2);
}

/// Two VIPs: "web" with `web` backends, and "old" (198.18.0.101:80, one
/// backend b21) if `old`.
fn two_vips(web: &[(u8, u32)], old: bool) -> Config {
    let mut text = String::new();
    text.push_str(
        "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.100\"\nport = 80\n\
         ring_size = 13\n",
    );
    for (last, weight) in web {
        text.push_str(&format!(
            "[[vip.backend]]\nname = \"b{last}\"\naddress = \"198.18.0.{last}\"\nweight = {weight}\n"
        ));
    }
    if old {
        text.push_str(
            "[[vip]]\nname = \"old\"\naddress = \"198.18.0.101\"\nport = 80\nring_size = 13\n\
             [[vip.backend]]\nname = \"b21\"\naddress = \"198.18.0.21\"\n",
        );
    }
    Config::parse(&text, "test.toml").expect("valid test config")
}

/// What the data plane does with these maps, whatever ids the controller
/// picked: per VIP its entry (without the index) and its ring as backend
/// addresses; the backend entries by address (without the generation).
type View = (
    LbConfig,
    Vec<(VipKey, u32, u32, Vec<[u8; 16]>)>,
    Vec<VipKey>,
    Vec<([u8; 16], u16, u8, u8, [u8; 6])>,
);

fn view(m: &MemoryMaps) -> View {
    let addr = |id: &u32| m.backends.get(id).map_or([0xff; 16], |b| b.addr);
    let vips = m
        .vips
        .iter()
        .map(|(k, v)| {
            (
                *k,
                v.mode,
                v.flags,
                m.rings[&v.index].iter().map(addr).collect(),
            )
        })
        .collect();
    let mut backends: Vec<_> = m
        .backends
        .values()
        .map(|b| (b.addr, b.port, b.family, b.flags, b.mac))
        .collect();
    backends.sort();
    (
        m.config,
        vips,
        m.vip_addrs.iter().copied().collect(),
        backends,
    )
}

/// A map write that fails anywhere in a reload loses nothing: the model
/// holds the new config, and the next refresh leaves the maps exactly as a
/// reload that never failed would have: backends added, reweighted and
/// removed, a VIP removed with its address, ring and entries.
#[test]
fn a_map_write_failing_anywhere_in_a_reload_is_finished_by_the_next_refresh() {
    let old = two_vips(&[(11, 1), (12, 1), (13, 1)], true);
    let new = two_vips(&[(11, 2), (13, 1), (14, 1), (15, 1)], false);
    let mut n = table(&[11, 12, 13, 14, 15, 21]);
    let mut clean = controller();
    clean.apply(&old, &mut n).unwrap();
    clean.apply(&new, &mut n).unwrap();
    let mut writes = 0;
    loop {
        let mut c = controller();
        c.apply(&old, &mut n).unwrap();
        c.maps_mut().fail_after(writes);
        let failed = c.apply(&new, &mut n).is_err();
        c.maps_mut().heal();
        if !failed {
            assert!(writes > 10, "a reload writes more than {writes} times");
            break;
        }
        assert_eq!(
            ids(&c).len(),
            4,
            "after {writes} writes: every backend kept"
        );
        c.refresh_neighbours(&mut n).unwrap();
        assert_eq!(
            view(c.maps()),
            view(clean.maps()),
            "failing after {writes} writes"
        );
        assert_eq!(c.status().unwrap(), clean.status().unwrap());
        assert!(c.leftovers.is_empty(), "everything removed was cleared");
        // The old VIP comes back as it would have.
        c.apply(&old, &mut n).unwrap();
        let mut again = controller();
        again.apply(&old, &mut n).unwrap();
        again.apply(&new, &mut n).unwrap();
        again.apply(&old, &mut n).unwrap();
        assert_eq!(view(c.maps()), view(again.maps()));
        writes += 1;
    }
}

#[test]
fn standby_vips_are_published_flagged_and_switch_with_one_write() {
    let mut c = controller();
    let mut n = table(&[11]);
    c.set_standby(&["web".into(), "later".into()], true)
        .unwrap();
    c.apply(&config(&[(11, 1)]), &mut n).unwrap();
    assert_ne!(c.maps().vips[&key()].flags & VIP_F_STANDBY, 0);
    let s = c.status().unwrap();
    assert!(!s.vips[0].forwarding && !s.forwarding);
    c.set_standby(&["web".into()], false).unwrap();
    assert_eq!(c.maps().vips[&key()].flags & VIP_F_STANDBY, 0);
    assert!(c.status().unwrap().forwarding);
    assert!(!c.forwards("later"), "remembered for a VIP added later");
}

#[test]
fn an_unresolved_backend_joins_the_ring_when_its_mac_appears_and_leaves_after_three_misses() {
    let mut c = controller();
    let mut n = table(&[11]);
    c.apply(&config(&[(11, 1), (12, 1)]), &mut n).unwrap();
    assert_eq!(state(&c, "b12"), BackendState::Unresolved);
    assert!(c.has_unresolved());
    assert_eq!(c.maps().rings[&0], expected_ring(&[(11, 1, 1)]));
    assert_eq!(c.maps().backends.get(&2), None, "no entry without a MAC");
    n.0.insert(ip(12), mac(12));
    c.refresh_neighbours(&mut n).unwrap();
    assert!(!c.has_unresolved());
    assert_eq!(c.maps().rings[&0], expected_ring(&[(11, 1, 1), (12, 2, 1)]));
    n.0.remove(&ip(12));
    for _ in 1..neighbours::MAC_LOST_AFTER {
        c.refresh_neighbours(&mut n).unwrap();
        assert_eq!(state(&c, "b12"), BackendState::Active, "a brief gap");
    }
    c.refresh_neighbours(&mut n).unwrap();
    assert_eq!(state(&c, "b12"), BackendState::Unresolved);
    assert_eq!(c.maps().rings[&0], expected_ring(&[(11, 1, 1)]));
}

#[test]
fn a_failing_check_takes_a_backend_out_and_reschedule_flags_its_entry() {
    let health = "[vip.health]\ntype = \"tcp\"\nrise = 2\nfall = 2\non_down = \"reschedule\"";
    let mut c = controller();
    let mut n = table(&[11, 12]);
    c.apply(&config_with(&[(11, 1), (12, 1)], health), &mut n)
        .unwrap();
    assert_eq!(state(&c, "b11"), BackendState::Pending);
    assert_eq!(c.maps().rings[&0], Vec::<u32>::new(), "nobody checked yet");
    for last in [11, 12] {
        c.record_check(&key(), ip(last), outcome(true)).unwrap();
    }
    assert_eq!(c.maps().rings[&0], expected_ring(&[(11, 1, 1), (12, 2, 1)]));
    c.record_check(&key(), ip(12), outcome(false)).unwrap();
    assert_eq!(state(&c, "b12"), BackendState::Active, "one failure of two");
    c.record_check(&key(), ip(12), outcome(false)).unwrap();
    assert_eq!(state(&c, "b12"), BackendState::Down);
    assert_eq!(c.maps().rings[&0], expected_ring(&[(11, 1, 1)]));
    let b12 = c.maps().backends[&2];
    assert_eq!(b12.flags, BACKEND_F_ACTIVE | BACKEND_F_RESCHEDULE);
    // Results for backends or VIPs that are not configured are ignored.
    c.record_check(&key(), ip(99), outcome(false)).unwrap();
}

#[test]
fn check_tallies_count_every_result_by_vip_and_backend_name() {
    let health = "[vip.health]\ntype = \"tcp\"\nrise = 2\nfall = 2";
    let mut c = controller();
    let mut n = table(&[11, 12]);
    c.apply(&config_with(&[(11, 1), (12, 1)], health), &mut n)
        .unwrap();
    for ok in [true, true, false] {
        c.record_check(&key(), ip(11), outcome(ok)).unwrap();
    }
    c.record_check(&key(), ip(12), outcome(false)).unwrap();
    let mut got: Vec<(String, String, u64, u64)> = c
        .check_tallies()
        .into_iter()
        .map(|t| (t.vip, t.backend, t.tally.passed, t.tally.failed))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("web".to_owned(), "b11".to_owned(), 2, 1),
            ("web".to_owned(), "b12".to_owned(), 0, 1)
        ]
    );
}

#[test]
fn runtime_drain_and_weight_last_until_a_reload() {
    let mut c = controller();
    let mut n = table(&[11, 12]);
    let cfg = config(&[(11, 1), (12, 1)]);
    c.apply(&cfg, &mut n).unwrap();
    c.backend_action("web", "b12", BackendAction::Drain)
        .unwrap();
    assert_eq!(state(&c, "b12"), BackendState::Draining);
    assert_eq!(c.maps().rings[&0], expected_ring(&[(11, 1, 1)]));
    let msg = c
        .backend_action("web", "198.18.0.11", BackendAction::Weight(3))
        .unwrap();
    assert!(msg.contains("weight now 3 (file 1)"), "{msg}");
    assert_eq!(c.maps().rings[&0], expected_ring(&[(11, 1, 3)]));
    assert!(
        c.backend_action("web", "b11", BackendAction::Weight(10_001))
            .is_err()
    );
    assert!(
        c.backend_action("web", "nope", BackendAction::Drain)
            .is_err()
    );
    assert!(
        c.backend_action("nope", "b11", BackendAction::Drain)
            .is_err()
    );
    c.apply(&cfg, &mut n).unwrap();
    assert_eq!(c.maps().rings[&0], expected_ring(&[(11, 1, 1), (12, 2, 1)]));
}

// ---------------------------------------------------------------------------
// A restarted controller adopts what its predecessor left in the maps.

/// A controller over a copy of `c`'s maps (a restart: the maps outlive the
/// process), after `adopt`, with the write counter at zero.
fn restarted(c: &Controller<MemoryMaps>) -> (Controller<MemoryMaps>, Adopted) {
    let mut maps = c.maps().clone();
    maps.writes = 0;
    maps.ring_installs = 0;
    let mut next = Controller::new(
        maps,
        Node {
            interface: "eth0".into(),
            mac: MAC,
        },
    );
    let found = next.adopt().unwrap();
    assert_eq!(next.maps().writes, 0, "adopt writes nothing");
    (next, found)
}

#[test]
fn a_restart_with_the_same_config_writes_nothing_and_shows_the_same_status() {
    let health = "[vip.health]\ntype = \"tcp\"\nrise = 1\nfall = 1";
    let cfg = config_with(&[(11, 1), (12, 2), (13, 1)], health);
    let mut n = table(&[11, 12, 13]);
    let mut c = controller();
    c.apply(&cfg, &mut n).unwrap();
    for last in [11, 12, 13] {
        c.record_check(&key(), ip(last), outcome(true)).unwrap();
    }
    c.record_check(&key(), ip(13), outcome(false)).unwrap();
    c.backend_action("web", "b12", BackendAction::Weight(5))
        .unwrap();
    c.maps_mut().count_backend(1, 9, 900);
    let (mut next, found) = restarted(&c);
    assert_eq!((found.vips, found.backends), (1, 3));
    next.apply(&cfg, &mut n).unwrap();
    assert_eq!(
        next.maps().writes,
        0,
        "nothing to change: {:?}",
        next.maps()
    );
    let (before, after) = (c.status().unwrap(), next.status().unwrap());
    for (b, a) in before.vips[0].backends.iter().zip(&after.vips[0].backends) {
        assert_eq!(
            (&b.name, b.state, b.weight, b.weight_override, b.packets),
            (&a.name, a.state, a.weight, a.weight_override, a.packets)
        );
    }
    assert_eq!(
        before.vips[0].usable_backends,
        after.vips[0].usable_backends
    );
}

#[test]
fn a_restart_keeps_retired_backends_with_their_id_and_generation() {
    let mut n = table(&[11, 12]);
    let mut c = controller();
    c.apply(&config(&[(11, 1), (12, 1)]), &mut n).unwrap();
    c.apply(&config(&[(11, 1)]), &mut n).unwrap();
    let (mut next, found) = restarted(&c);
    assert_eq!((found.backends, found.retired), (1, 1));
    next.apply(&config(&[(11, 1)]), &mut n).unwrap();
    // Its name went with the config it was removed from: the address
    // stands in.
    assert_eq!(state(&next, "198.18.0.12"), BackendState::Removed);
    assert_eq!(next.maps().writes, 0);
    // Back within its grace: same id and generation, so its flows go on.
    next.apply(&config(&[(11, 1), (12, 1)]), &mut n).unwrap();
    assert_eq!(ids(&next), [("b11".into(), 1), ("b12".into(), 2)]);
    assert_eq!(next.maps().backends[&2].generation, 1);
}

#[test]
fn an_id_freed_before_a_restart_gets_a_new_generation_after_it() {
    let mut n = table(&[11, 12, 14]);
    let mut c = controller();
    c.apply(&config(&[(11, 1), (12, 1)]), &mut n).unwrap();
    c.apply(&config(&[(11, 1)]), &mut n).unwrap();
    c.expire_retired(Instant::now() + Duration::from_secs(2 * 86_400))
        .unwrap();
    assert_eq!(
        c.maps().owners[&2].generation,
        1,
        "a free id keeps its generation"
    );
    let (mut next, _) = restarted(&c);
    next.apply(&config(&[(11, 1), (14, 1)]), &mut n).unwrap();
    assert_eq!(ids(&next)[1], ("b14".into(), 2));
    assert_eq!(
        next.maps().backends[&2].generation,
        2,
        "b12's flows must not follow the id to b14"
    );
}

#[test]
fn a_restart_keeps_runtime_drains_and_weights() {
    let mut n = table(&[11, 12, 13]);
    let mut c = controller();
    let cfg = config(&[(11, 1), (12, 1), (13, 1)]);
    c.apply(&cfg, &mut n).unwrap();
    c.backend_action("web", "b12", BackendAction::Drain)
        .unwrap();
    c.backend_action("web", "b13", BackendAction::Weight(4))
        .unwrap();
    let (mut next, _) = restarted(&c);
    next.apply(&cfg, &mut n).unwrap();
    assert_eq!(state(&next, "b12"), BackendState::Draining, "still drained");
    let b13 = next.status().unwrap().vips[0].backends[2].clone();
    assert_eq!((b13.weight, b13.weight_override), (4, Some(4)));
    assert_eq!(next.maps().writes, 0);
    // A reload (not a restart) applies the file again, as always.
    next.apply(&cfg, &mut n).unwrap();
    assert_eq!(state(&next, "b12"), BackendState::Active);
}

#[test]
fn after_a_restart_a_changed_config_writes_only_what_it_changes() {
    let mut n = table(&[11, 12, 13]);
    let mut c = controller();
    c.apply(&config(&[(11, 1), (12, 1)]), &mut n).unwrap();
    let (mut next, _) = restarted(&c);
    // A backend joins: its counters, entry and owner record, the ring and
    // its digest; nothing of b11 or b12.
    next.apply(&config(&[(11, 1), (12, 1), (13, 1)]), &mut n)
        .unwrap();
    assert_eq!(next.maps().ring_installs, 1);
    assert_eq!(next.maps().writes, 5, "{:?}", next.maps());
}

#[test]
fn a_vip_gone_from_the_config_at_restart_is_removed_with_its_backends() {
    let mut n = table(&[11, 21]);
    let mut c = controller();
    c.apply(&two_vips(&[(11, 1)], true), &mut n).unwrap();
    let (mut next, found) = restarted(&c);
    assert_eq!(found.vips, 2);
    next.apply(&two_vips(&[(11, 1)], false), &mut n).unwrap();
    let mut clean = controller();
    clean.apply(&two_vips(&[(11, 1)], false), &mut n).unwrap();
    assert_eq!(view(next.maps()), view(clean.maps()));
    assert_eq!(next.status().unwrap().vips.len(), 1);
}

/// The slots of VIP index 0's ring, by backend address: what a packet
/// meets, whatever ids the node gave its backends.
fn ring_by_address(c: &Controller<MemoryMaps>) -> Vec<Option<[u8; 16]>> {
    let ring = &c.maps().rings[&0];
    ring[1..]
        .iter()
        .map(|&id| (id != NO_BACKEND).then(|| c.maps().backends[&id].addr))
        .collect()
}

/// Active-active nodes (ECMP) must send a flow to the same backend
/// whichever node gets it: two nodes with the same file build the same
/// table even when their histories gave the backends other ids.
#[test]
fn nodes_with_the_same_config_and_other_histories_build_the_same_table() {
    let final_cfg = config(&[(11, 1), (12, 2), (13, 1)]);
    let mut n = table(&[11, 12, 13, 14]);
    let mut a = controller();
    a.apply(&final_cfg, &mut n).unwrap();
    let mut b = controller();
    for step in [
        config(&[(14, 1), (13, 1)]),
        config(&[(13, 1), (12, 5), (11, 1)]),
        config(&[(12, 2)]),
        final_cfg.clone(),
    ] {
        b.apply(&step, &mut n).unwrap();
    }
    assert_ne!(ids(&a), ids(&b), "the histories gave other ids");
    assert_eq!(ring_by_address(&a), ring_by_address(&b));
    // And after a restart of one of them (adoption), still the same.
    let (mut b2, _) = restarted(&b);
    b2.apply(&final_cfg, &mut n).unwrap();
    assert_eq!(ring_by_address(&a), ring_by_address(&b2));
}

#[test]
fn nodes_with_different_ids_meet_in_the_sync_directory() {
    use crate::sync::{MemoryTable, entry_of, install, wire::Event};
    // Node A gave b11 id 1 and b12 id 2; node B saw b12 first.
    let (mut a, mut b) = (controller(), controller());
    let mut n = table(&[11, 12, 13]);
    a.apply(&config(&[(11, 1), (12, 1), (13, 1)]), &mut n)
        .unwrap();
    b.apply(&config(&[(12, 1)]), &mut n).unwrap();
    b.apply(&config(&[(12, 1), (11, 1), (13, 1)]), &mut n)
        .unwrap();
    // b13 is removed on both: retiring, its flows go on.
    a.apply(&config(&[(11, 1), (12, 1)]), &mut n).unwrap();
    b.apply(&config(&[(12, 1), (11, 1)]), &mut n).unwrap();
    b.set_standby(&["web".into()], true).unwrap();
    let (da, db) = (a.sync_directory(), b.sync_directory());
    assert_eq!((da.backends(), db.backends()), (3, 3));

    let id_of = |c: &Controller<MemoryMaps>, last: u8| {
        c.vips[&key()]
            .backends
            .iter()
            .chain(c.retiring.of(&key()))
            .find(|x| x.config.address == ip(last))
            .map(|x| (x.id, x.generation))
            .unwrap()
    };
    for last in [11, 12, 13] {
        let (id, generation) = id_of(&a, last);
        let flow = lb_common::FlowKey {
            src: [u32::from_ne_bytes([198, 18, 0, 2]), 0, 0, 0],
            dst: [u32::from_ne_bytes([198, 18, 0, 100]), 0, 0, 0],
            sport: 40_000u16.to_be(),
            dport: 80u16.to_be(),
            proto: lb_common::IPPROTO_TCP,
            _pad: [0; 3],
        };
        let state = lb_common::FlowState {
            backend: id,
            generation,
            flags: 0,
            last_seen: 1_000_000_000,
        };
        let e = entry_of(&da, &flow, &state, Event::New, 2_000_000_000).unwrap();
        assert_eq!(e.backend, ip(last));
        let mut t = MemoryTable::default();
        install(&db, &mut t, &e, 5_000_000_000).unwrap();
        let got = t.flows[&flow];
        assert_eq!((got.backend, got.generation), id_of(&b, last), "b{last}");
        assert_eq!(got.last_seen, 4_000_000_000);
    }
    // B is the VIP's backup: it sends none of its flows.
    let (id, generation) = id_of(&b, 11);
    let flow = lb_common::FlowKey {
        dst: [u32::from_ne_bytes([198, 18, 0, 100]), 0, 0, 0],
        dport: 80u16.to_be(),
        proto: lb_common::IPPROTO_TCP,
        ..Default::default()
    };
    let state = lb_common::FlowState {
        backend: id,
        generation,
        ..Default::default()
    };
    assert!(entry_of(&db, &flow, &state, Event::New, 0).is_err());
}

#[test]
fn sync_in_the_config_turns_the_reports_on() {
    let mut c = controller();
    let mut n = table(&[11]);
    c.apply(
        &config_with(
            &[(11, 1)],
            "[sync]\npeers = [\"198.18.0.3\"]\nkey_file = \"/k\"\n[[vip]]\nname = \"x\"\naddress = \"198.18.0.101\"\n",
        ),
        &mut n,
    )
    .unwrap();
    assert_ne!(c.maps().config.flags & lb_common::LB_F_SYNC, 0);
    c.apply(&config(&[(11, 1)]), &mut n).unwrap();
    assert_eq!(c.maps().config.flags & lb_common::LB_F_SYNC, 0);
}

// ---------------------------------------------------------------------------
// VRRP server addresses in VIP_ADDRS.

/// VIP "web" in a VRRP group whose master also holds `servers` on
/// `server_interface` (no `[vrrp]` at all when `None`).
fn with_servers(servers: Option<&[&str]>) -> Config {
    let mut text = String::from(
        "interface = \"eth0\"\nserver_interface = \"eth1\"\n\
         [[vip]]\nname = \"web\"\naddress = \"198.18.0.100\"\nport = 80\nring_size = 13\n\
         [[vip.backend]]\naddress = \"198.18.0.11\"\n",
    );
    if let Some(servers) = servers {
        let list: Vec<String> = servers.iter().map(|a| format!("{a:?}")).collect();
        text.push_str(&format!(
            "[vrrp]\n[[vrrp.group]]\nvrid = 51\nvips = [\"web\"]\nserver_addresses = [{}]\n",
            list.join(", ")
        ));
    }
    Config::parse(&text, "test.toml").expect("valid test config")
}

fn marks(c: &Controller<MemoryMaps>) -> Vec<VipKey> {
    c.maps().vip_addrs.iter().copied().collect()
}

fn marked(addrs: &[&str]) -> Vec<VipKey> {
    let mut v: Vec<VipKey> = addrs
        .iter()
        .map(|a| VipKey::new(a.parse().unwrap(), 0, 0))
        .collect();
    v.sort();
    v
}

#[test]
fn server_addresses_are_marked_with_the_vip_addresses() {
    let mut c = controller();
    let mut n = table(&[11]);
    c.apply(&with_servers(Some(&["198.18.1.1", "fd00:19::1"])), &mut n)
        .unwrap();
    // Marked whatever the VRRP state: the mark matters only once the lease
    // has run out.
    assert_eq!(
        marks(&c),
        marked(&["198.18.0.100", "198.18.1.1", "fd00:19::1"])
    );
    // A reload that drops one clears its mark, and only its.
    c.apply(&with_servers(Some(&["198.18.1.1"])), &mut n)
        .unwrap();
    assert_eq!(marks(&c), marked(&["198.18.0.100", "198.18.1.1"]));
    c.apply(&with_servers(None), &mut n).unwrap();
    assert_eq!(marks(&c), marked(&["198.18.0.100"]));
    assert!(c.leftovers.is_empty());
}

#[test]
fn a_restart_keeps_the_server_address_marks_and_clears_dropped_ones() {
    let both = with_servers(Some(&["198.18.1.1", "fd00:19::1"]));
    let mut n = table(&[11]);
    let mut c = controller();
    c.apply(&both, &mut n).unwrap();
    // The same config: adopted as they are, nothing written, nothing
    // removed in between.
    let (mut next, found) = restarted(&c);
    assert_eq!(found.other_addrs, 2);
    assert_eq!(marks(&next), marks(&c));
    next.apply(&both, &mut n).unwrap();
    assert_eq!(next.maps().writes, 0, "{:?}", next.maps());
    assert_eq!(marks(&next), marks(&c));
    // A restart with one address fewer clears its mark at the first apply.
    let (mut next, _) = restarted(&c);
    next.apply(&with_servers(Some(&["fd00:19::1"])), &mut n)
        .unwrap();
    assert_eq!(marks(&next), marked(&["198.18.0.100", "fd00:19::1"]));
}

#[test]
fn a_failed_server_address_mark_is_written_by_the_next_refresh() {
    let cfg = with_servers(Some(&["198.18.1.1"]));
    let mut n = table(&[11]);
    let mut clean = controller();
    clean.apply(&cfg, &mut n).unwrap();
    let mut writes = 0;
    loop {
        let mut c = controller();
        c.maps_mut().fail_after(writes);
        let failed = c.apply(&cfg, &mut n).is_err();
        c.maps_mut().heal();
        if !failed {
            break;
        }
        c.refresh_neighbours(&mut n).unwrap();
        assert_eq!(marks(&c), marks(&clean), "failing after {writes} writes");
        writes += 1;
    }
    assert!(writes > 0);
}

#[test]
fn a_start_waiting_for_macs_or_first_checks_is_not_an_error_until_its_grace_runs_out() {
    let mut c = controller();
    let mut nobody = table(&[]);
    c.apply(&config(&[(11, 1), (12, 1)]), &mut nobody).unwrap();
    let vip = |c: &Controller<MemoryMaps>| c.vips[&key()].only_starting();
    assert!(vip(&c), "no MAC yet, right after the start");
    // apply() itself read the neighbour table once.
    for _ in 2..super::backend::RESOLVE_GRACE {
        c.refresh_neighbours(&mut nobody).unwrap();
    }
    assert!(vip(&c), "still within the grace");
    c.refresh_neighbours(&mut nobody).unwrap();
    assert!(!vip(&c), "the grace ran out: an error now");
    // A weight of 0 is the operator's doing, never a start-up.
    let mut c = controller();
    c.apply(&config(&[(11, 0)]), &mut nobody).unwrap();
    assert!(!vip(&c));
    // Health checks not in yet: starting; one says down: not.
    let mut c = controller();
    let mut n = table(&[11]);
    let checked = config_with(&[(11, 1)], "[vip.health]\ntype = \"tcp\"\n");
    c.apply(&checked, &mut n).unwrap();
    assert!(vip(&c), "first checks not in");
    for _ in 0..5 {
        c.record_check(&key(), ip(11), outcome(false)).unwrap();
    }
    assert!(!vip(&c), "checked down");
}

#[test]
fn runtime_overrides_are_counted_until_a_reload_resets_them() {
    let mut c = controller();
    let mut n = table(&[11, 12]);
    c.apply(&config(&[(11, 1), (12, 1)]), &mut n).unwrap();
    assert_eq!(c.runtime_overrides(), 0);
    c.backend_action("web", "b11", BackendAction::Drain)
        .unwrap();
    c.backend_action("web", "b12", BackendAction::Weight(5))
        .unwrap();
    assert_eq!(c.runtime_overrides(), 2);
    c.apply(&config(&[(11, 1), (12, 1)]), &mut n).unwrap();
    assert_eq!(c.runtime_overrides(), 0);
}

// ---------------------------------------------------------------------------
// Packet traces.

fn trace_spec(vip: Option<&str>, seconds: u32) -> crate::api::TraceSpec {
    crate::api::TraceSpec {
        vip: vip.map(str::to_owned),
        seconds,
        ..Default::default()
    }
}

/// A trace writes its filter, then sets `LB_F_TRACE` beside the node's
/// other flags; it names the VIPs and backends records carry by number.
#[test]
fn a_trace_writes_its_filter_and_flag_and_names_what_records_number() {
    let mut c = controller();
    c.apply(&config(&[(11, 1), (12, 1)]), &mut table(&[11, 12]))
        .unwrap();
    let flags = c.maps().config.flags;
    let now = Instant::now();
    let t = c
        .start_trace(&trace_spec(Some("web"), 30), now, 1_000)
        .unwrap();
    assert_eq!(c.maps().config.flags, flags | lb_common::LB_F_TRACE);
    let f = c.maps().trace_filter;
    assert_eq!(f.until, 1_000 + 30_000_000_000);
    assert_eq!((f.dst_port, f.proto), (80u16.to_be(), 6));
    assert_eq!(
        (t.since_ns, t.until_ns, t.filter.as_str()),
        (1_000, f.until, "VIP web")
    );
    assert_eq!(t.vips.len(), 1);
    assert_eq!(t.vips[0].name, "web");
    let names: Vec<(&str, &str)> = t
        .backends
        .iter()
        .map(|b| (b.name.as_str(), b.address.as_str()))
        .collect();
    assert_eq!(names, [("b11", "198.18.0.11"), ("b12", "198.18.0.12")]);
    assert!(t.backends.iter().all(|b| b.id != 0 && b.vip == "web"));
    assert!(c.tracing());
}

/// One trace at a time (one ring, one reader); a stop names its trace;
/// the deadline ends a trace whose reader is gone, and only then.
#[test]
fn traces_run_one_at_a_time_and_end_when_stopped_or_at_their_deadline() {
    let mut c = controller();
    c.apply(&config(&[(11, 1)]), &mut table(&[11])).unwrap();
    let flags = c.maps().config.flags;
    let now = Instant::now();
    let first = c.start_trace(&trace_spec(None, 10), now, 0).unwrap();
    let e = c
        .start_trace(&trace_spec(None, 10), now + Duration::from_secs(1), 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("trace {} runs for 9 s more", first.id)),
        "{e}"
    );
    assert!(c.stop_trace(first.id + 1).is_err(), "another trace's id");
    c.stop_trace(first.id).unwrap();
    assert_eq!(c.maps().config.flags, flags);
    assert_eq!(c.maps().trace_filter, lb_common::TraceFilter::default());
    assert!(c.stop_trace(first.id).is_err(), "stopped already");

    let second = c.start_trace(&trace_spec(None, 10), now, 0).unwrap();
    assert!(second.id > first.id);
    c.expire_trace(now + Duration::from_secs(9)).unwrap();
    assert!(c.tracing(), "before its deadline");
    c.expire_trace(now + Duration::from_secs(10)).unwrap();
    assert!(!c.tracing());
    assert_eq!(c.maps().config.flags, flags);
    // A reload keeps a running trace's flag.
    c.start_trace(&trace_spec(None, 10), now, 0).unwrap();
    c.apply(&config(&[(11, 2)]), &mut table(&[11])).unwrap();
    assert_ne!(c.maps().config.flags & lb_common::LB_F_TRACE, 0);
    c.end_tracing().unwrap();
    assert_eq!(c.maps().config.flags & lb_common::LB_F_TRACE, 0);
}

#[test]
fn traces_that_cannot_end_or_match_are_refused_and_change_nothing() {
    let mut c = controller();
    c.apply(&config(&[(11, 1)]), &mut table(&[11])).unwrap();
    let before = c.maps().clone();
    let now = Instant::now();
    for (spec, want) in [
        (trace_spec(None, 0), "1 to 3600 seconds, not 0"),
        (trace_spec(None, 3601), "not 3601"),
        (
            trace_spec(Some("nope"), 5),
            "no VIP named \"nope\" (VIPs: web)",
        ),
    ] {
        let e = c.start_trace(&spec, now, 0).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    assert_eq!(c.maps(), &before);
    assert!(!c.tracing());
}

/// `vips` VIPs "v<port>" on 198.18.0.100, ports 1..=vips, each with the
/// backends `lasts` and a ring of `ring`, `extra` appended to each VIP.
fn many_vips(vips: u16, lasts: &[u8], ring: u32, extra: &str) -> Config {
    let mut text = String::from("interface = \"eth0\"\n");
    for port in 1..=vips {
        text.push_str(&format!(
            "[[vip]]\nname = \"v{port}\"\naddress = \"198.18.0.100\"\nport = {port}\n\
             ring_size = {ring}\n{extra}\n"
        ));
        for last in lasts {
            text.push_str(&format!(
                "[[vip.backend]]\nname = \"b{last}\"\naddress = \"198.18.0.{last}\"\n"
            ));
        }
    }
    Config::parse(&text, "test.toml").expect("valid test config")
}

#[test]
fn many_vips_publish_their_rings_in_batches_each_a_full_ring() {
    let mut c = controller();
    let config = many_vips(1000, &[11, 12, 13], 13, "");
    c.apply(&config, &mut table(&[11, 12, 13])).unwrap();
    let m = c.maps();
    assert_eq!(m.ring_installs, 1000, "one ring per VIP");
    assert_eq!(
        m.ring_publishes,
        1000usize.div_ceil(rings::BATCH_RINGS) as u64,
        "one publication per batch, not per ring"
    );
    assert_eq!(m.vips.len(), 1000);
    for vip in c.vips.values() {
        let ids: Vec<u32> = vip.backends.iter().map(|b| b.id).collect();
        let members: Vec<maglev::Member> = vip.backends.iter().map(|b| b.member()).collect();
        let want: Vec<u32> = maglev::build_table(&members, 13)
            .iter()
            .map(|&i| {
                if i == maglev::EMPTY {
                    NO_BACKEND
                } else {
                    ids[i as usize]
                }
            })
            .collect();
        assert_eq!(c.maps().rings[&vip.index], want, "VIP {}", vip.name());
    }
}

#[test]
fn a_stepped_apply_serves_each_batch_as_it_goes_in() {
    let mut c = controller();
    let config = many_vips(600, &[11], 13, "");
    let mut n = table(&[11]);
    let mut applying = c.begin_apply(&config, &mut n).unwrap();
    assert_eq!(applying.progress(), (0, 600));
    assert!(c.apply_step(&mut applying), "more to come");
    let (done, _) = applying.progress();
    assert_eq!(done, rings::BATCH_RINGS);
    assert_eq!(c.maps().vips.len(), done, "the first batch serves already");
    for vip in c.vips.values() {
        let published = c.maps().vips.contains_key(&vip.key);
        let ring = c.maps().rings.get(&vip.index);
        assert_eq!(
            published,
            ring.is_some_and(|r| !r.is_empty()),
            "no VIP before its ring"
        );
    }
    while c.apply_step(&mut applying) {}
    c.finish_apply(applying, &mut n).unwrap();
    assert_eq!(c.maps().vips.len(), 600);
    assert_eq!(c.maps().ring_publishes, 3);
}

#[test]
fn first_health_results_of_many_backends_build_one_ring() {
    let lasts: Vec<u8> = (1..=200).collect();
    let health = "[vip.health]\ntype = \"tcp\"\nrise = 2\nfall = 2";
    let mut c = controller();
    let mut n = table(&lasts);
    c.apply(&many_vips(1, &lasts, 251, health), &mut n).unwrap();
    let key = c.vips.keys().next().copied().unwrap();
    let before = c.maps().ring_installs;
    let results = |ok| lasts.iter().map(move |&l| (key, ip(l), outcome(ok)));
    // A first result decides at once (see `hysteresis`).
    c.record_checks(results(true)).unwrap();
    assert_eq!(
        c.maps().ring_installs,
        before + 1,
        "200 backends up: one new ring, not 200"
    );
    c.record_checks(results(true)).unwrap();
    assert_eq!(
        c.maps().ring_installs,
        before + 1,
        "nothing changed, no ring"
    );
    let index = c.vips[&key].index;
    let ring = &c.maps().rings[&index];
    let distinct: std::collections::BTreeSet<u32> = ring.iter().copied().collect();
    assert_eq!(distinct.len(), 200, "every backend is in the ring");
    assert_eq!(c.vips[&key].usable_backends(), 200);
}

#[test]
fn results_for_several_vips_publish_their_rings_together() {
    let health = "[vip.health]\ntype = \"tcp\"\nrise = 1\nfall = 1";
    let mut c = controller();
    let mut n = table(&[11, 12]);
    c.apply(&many_vips(20, &[11, 12], 13, health), &mut n)
        .unwrap();
    let (installs, publishes) = (c.maps().ring_installs, c.maps().ring_publishes);
    let keys: Vec<VipKey> = c.vips.keys().copied().collect();
    let results = keys
        .iter()
        .flat_map(|&k| [11, 12].map(|l| (k, ip(l), outcome(true))));
    c.record_checks(results).unwrap();
    assert_eq!(c.maps().ring_installs, installs + 20, "one ring per VIP");
    assert_eq!(
        c.maps().ring_publishes,
        publishes + 1,
        "all in one publication"
    );
}

/// A neighbour table that counts the probes it is asked for.
struct CountingTable(Table, HashMap<IpAddr, u32>);

impl Neighbours for CountingTable {
    fn lookup(&mut self) -> Result<HashMap<IpAddr, [u8; 6]>> {
        self.0.lookup()
    }
    fn probe(&mut self, addr: IpAddr) -> Result<()> {
        *self.1.entry(addr).or_default() += 1;
        Ok(())
    }
}

#[test]
fn a_refresh_probes_each_backend_address_once_whatever_the_vips() {
    let mut c = controller();
    let mut n = CountingTable(table(&[11, 12]), HashMap::new());
    c.apply(&many_vips(50, &[11, 12], 13, ""), &mut n).unwrap();
    n.1.clear();
    c.refresh_neighbours(&mut n).unwrap();
    assert_eq!(n.1, HashMap::from([(ip(11), 1), (ip(12), 1)]));
}

#[test]
fn a_reload_changing_one_vip_writes_only_that_vip() {
    let mut c = controller();
    let mut n = table(&[11, 12, 13, 14]);
    c.apply(&many_vips(1000, &[11, 12, 13], 13, ""), &mut n)
        .unwrap();
    let mut text = many_vips(1000, &[11, 12, 13], 13, "");
    let changed = text.vips[500].key();
    text.vips[500].backends[2].address = ip(14);
    text.vips[500].backends[2].name = "b14".into();
    let (writes, installs) = (c.maps().writes, c.maps().ring_installs);
    c.apply(&text, &mut n).unwrap();
    assert_eq!(c.maps().ring_installs, installs + 1, "one new ring");
    // The new backend's entry and owner, the ring, its digest, the
    // removed backend's owner record (retired).
    let written = c.maps().writes - writes;
    assert!(written <= 8, "{written} writes for one changed backend");
    let vip = &c.vips[&changed];
    let addrs: Vec<IpAddr> = vip.backends.iter().map(|b| b.config.address).collect();
    assert_eq!(addrs, [ip(11), ip(12), ip(14)]);
}

mod feedback;
