//! The controller's unit tests run on `MemoryMaps`; this suite proves the
//! kernel's maps (`Maps`) behave the same: one sequence of configurations,
//! applied to a controller over each, leaves both with the same entries
//! after every step, and both refuse the same bad writes. Needs root (BPF).

use std::{collections::BTreeSet, net::IpAddr};

use lb_common::{BackendInfo, MAX_BACKENDS, MAX_VIPS, VipKey};
use lb_user::{
    config::Config,
    control::{Controller, Node},
    dataplane::Dataplane,
    maps::{MapStore, Maps, MemoryMaps},
};
use xlb_testbed::{
    config::{Backend, Vip, XlbConfig},
    fakes::FakeNeighbours,
    frames::LB_MAC,
};

fn node() -> Node {
    Node {
        interface: "eth0".into(),
        mac: LB_MAC,
    }
}

/// VIP `name` at `address:port` (ring 31) over backends 198.18.0.`last`
/// (weight).
fn vip(name: &str, address: &str, port: u16, backends: &[(u8, u32)]) -> Vip {
    let addr: IpAddr = address.parse().unwrap();
    Vip::new(name, addr, port)
        .ring_size(31)
        .backends(backends.iter().map(|&(last, weight)| {
            Backend::new([198, 18, 0, last])
                .name(&format!("b{last}"))
                .weight(weight)
        }))
}

fn config(vips: &[Vip]) -> Config {
    let mut cfg = XlbConfig::new("eth0");
    cfg.vips = vips.to_vec();
    cfg.parse().expect("valid test config")
}

/// Every VIP key, ring index and backend id either store may hold.
#[derive(Default)]
struct Seen {
    vips: BTreeSet<VipKey>,
    max_id: u32,
}

fn assert_same(real: &Maps, mem: &MemoryMaps, seen: &mut Seen, step: &str) {
    assert_eq!(real.config().unwrap(), mem.config, "{step}: LB_CONFIG");
    seen.vips.extend(mem.vips.keys().copied());
    for key in &seen.vips {
        assert_eq!(
            real.vip(key).unwrap(),
            mem.vips.get(key).copied(),
            "{step}: VIPS {key:?}"
        );
        let addr = key.address_only();
        assert_eq!(
            real.is_vip_addr(&addr).unwrap(),
            mem.vip_addrs.contains(&addr),
            "{step}: VIP_ADDRS {addr:?}"
        );
    }
    for index in 0..8 {
        assert_eq!(
            real.ring(index).unwrap(),
            mem.rings.get(&index).cloned(),
            "{step}: ring {index}"
        );
    }
    seen.max_id = seen
        .max_id
        .max(mem.backends.keys().copied().max().unwrap_or(0));
    for id in 0..=seen.max_id + 1 {
        assert_eq!(
            real.backend(id).unwrap(),
            mem.backends.get(&id).copied().unwrap_or_default(),
            "{step}: backend {id}"
        );
    }
}

#[test]
fn kernel_maps_end_up_as_memory_maps_after_every_step() {
    if !xlb_testbed::require_root("kernel_maps_end_up_as_memory_maps_after_every_step") {
        return;
    }
    let (_dp, maps) = Dataplane::load().expect("load the XDP program");
    let mut real = Controller::new(maps, node());
    let mut mem = Controller::new(MemoryMaps::new(), node());
    let mut n = FakeNeighbours::default();
    for last in [11, 12, 13, 14, 15] {
        n.table.insert(
            format!("198.18.0.{last}").parse().unwrap(),
            [2, 0, 0, 0, 0x10, last],
        );
    }
    let web = |b: &[(u8, u32)]| vip("web", "198.18.0.100", 80, b);
    let tls = |b: &[(u8, u32)]| vip("tls", "198.18.0.100", 443, b);
    let nat = |b: &[(u8, u32)]| vip("nat", "198.18.0.101", 0, b).nat();
    let affinity = |b: &[(u8, u32)]| vip("sticky", "198.18.0.102", 53, b).udp().source_affinity();
    let steps: Vec<(&str, Config)> = vec![
        ("one DSR VIP", config(&[web(&[(11, 1), (12, 1), (13, 2)])])),
        (
            "a second VIP on the same address, a NAT and an affinity VIP",
            config(&[
                web(&[(11, 1), (12, 1), (13, 2)]),
                tls(&[(11, 1), (14, 1)]),
                nat(&[(12, 1), (15, 3)]),
                affinity(&[(13, 1)]),
            ]),
        ),
        (
            "backends leave, join, drain and change weight",
            config(&[
                web(&[(11, 3), (13, 0), (15, 1)]),
                tls(&[(11, 1), (14, 1)]),
                nat(&[(12, 1), (15, 3)]),
                affinity(&[(13, 1)]),
            ]),
        ),
        (
            "a VIP goes, its address stays with the other",
            config(&[
                tls(&[(11, 1), (14, 1)]),
                nat(&[(12, 1), (15, 3)]),
                affinity(&[(13, 1)]),
            ]),
        ),
        ("everything goes", config(&[])),
        (
            "VIPs come back on reused indices and ids",
            config(&[web(&[(14, 1), (15, 1)]), nat(&[(11, 1)])]),
        ),
    ];
    let mut seen = Seen::default();
    for (step, cfg) in &steps {
        real.apply(cfg, &mut n).expect(step);
        mem.apply(cfg, &mut n).expect(step);
        assert_same(real.maps(), mem.maps(), &mut seen, step);
        assert_eq!(real.status().unwrap(), mem.status().unwrap(), "{step}");
    }
    // VRRP's switch, and a removed backend's grace ending.
    for standby in [true, false] {
        real.set_standby(&["web".into()], standby).unwrap();
        mem.set_standby(&["web".into()], standby).unwrap();
        assert_same(real.maps(), mem.maps(), &mut seen, "standby switch");
    }
    let later = std::time::Instant::now() + std::time::Duration::from_secs(3 * 86_400);
    real.expire_retired(later).unwrap();
    mem.expire_retired(later).unwrap();
    assert_same(real.maps(), mem.maps(), &mut seen, "grace over");
}

#[test]
fn kernel_maps_refuse_what_memory_maps_refuse() {
    if !xlb_testbed::require_root("kernel_maps_refuse_what_memory_maps_refuse") {
        return;
    }
    let (_dp, mut real) = Dataplane::load().expect("load the XDP program");
    let mut mem = MemoryMaps::new();
    let key = VipKey::new("198.18.0.100".parse().unwrap(), 80, 6);
    let stores: [&mut dyn MapStore; 2] = [&mut real, &mut mem];
    for m in stores {
        assert!(m.remove_vip(&key).is_err(), "removing a missing VIP");
        assert!(m.remove_vip_addr(&key.address_only()).is_err());
        assert!(
            m.set_backend(MAX_BACKENDS, &BackendInfo::default())
                .is_err()
        );
        assert!(m.backend(MAX_BACKENDS).is_err());
        assert!(m.install_ring(MAX_VIPS, &[1]).is_err());
        assert!(m.vip_counters(MAX_VIPS).is_err());
        assert_eq!(m.ring(3).unwrap(), None, "a ring never installed");
        assert_eq!(m.vip(&key).unwrap(), None);
        assert!(!m.is_vip_addr(&key.address_only()).unwrap());
    }
}

/// `VIP_FILTER` follows `VIPS`: counted when a VIP goes in, uncounted when
/// it leaves, and a write that fails (the table full) leaves the count as
/// it was, however often it is retried.
#[test]
fn the_vip_filter_counts_only_vips_that_are_in() {
    if !xlb_testbed::require_root("the_vip_filter_counts_only_vips_that_are_in") {
        return;
    }
    let (_dp, mut m) = Dataplane::load().expect("load the XDP program");
    let key = |i: u32| VipKey::new(std::net::Ipv4Addr::from(0xc613_0000 + i).into(), 80, 6);
    let meta = |i: u32| lb_common::VipMeta {
        index: i,
        ..Default::default()
    };
    let outsider = key(MAX_VIPS);
    assert_eq!(m.filter_count(&outsider).unwrap(), 0);
    for i in 0..MAX_VIPS {
        m.set_vip(&key(i), &meta(i)).unwrap();
    }
    let before = m.filter_count(&outsider).unwrap();
    for _ in 0..3 {
        assert!(m.set_vip(&outsider, &meta(0)).is_err(), "VIPS is full");
    }
    assert_eq!(m.filter_count(&outsider).unwrap(), before);
    // Rewriting a VIP counts nothing; removing it uncounts it.
    let first = m.filter_count(&key(0)).unwrap();
    m.set_vip(&key(0), &meta(0)).unwrap();
    assert_eq!(m.filter_count(&key(0)).unwrap(), first);
    m.remove_vip(&key(0)).unwrap();
    assert_eq!(m.filter_count(&key(0)).unwrap(), first - 1);
}
