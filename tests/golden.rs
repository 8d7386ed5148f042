//! Golden packets through the real XDP program with BPF_PROG_TEST_RUN.
//!
//! Each case is data: a description, an input frame, the expected verdict and
//! the expected output frame (Katran's fixture style). Forwarded frames must
//! equal the input with only the two MAC addresses changed, and the backend
//! must be the one `lb_common`'s hash predicts for the installed ring.
//! Needs root (BPF); see `xlb_testbed::running::require_root`.

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{PacketBuilder, VlanId};
use lb_common::{
    BACKEND_F_ACTIVE, BackendInfo, FAMILY_V4, FAMILY_V6, FlowKey, IPPROTO_TCP, IPPROTO_UDP,
    LB_F_FORWARDING, LbConfig, MODE_DSR, VIP_F_SOURCE_AFFINITY, VipKey, VipMeta, drop, flow_hash,
    global, source_hash,
};
use lb_user::{
    dataplane::Dataplane,
    maps::{MapStore, Maps},
};
use xlb_testbed::frames::*;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const VIP4_AFFINITY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
const VIP4_EMPTY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 102);
const VIP4_ALL_PORTS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x100);
const OTHER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const RING_SIZE: u32 = 13;

fn backend_mac(id: u32) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x10, id as u8]
}

fn v4(addr: Ipv4Addr) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&addr.octets());
    a
}

fn vip4(addr: Ipv4Addr, port: u16, proto: u8) -> VipKey {
    VipKey {
        addr: v4(addr),
        port: port.to_be(),
        proto,
        family: FAMILY_V4,
    }
}

fn vip6(addr: Ipv6Addr, port: u16, proto: u8) -> VipKey {
    VipKey {
        addr: addr.octets(),
        port: port.to_be(),
        proto,
        family: FAMILY_V6,
    }
}

/// A ring whose slot `i` holds one of `ids`, round-robin.
fn ring(ids: &[u32]) -> Vec<u32> {
    (0..RING_SIZE as usize)
        .map(|i| ids[i % ids.len()])
        .collect()
}

struct Harness {
    maps: Maps,
    dp: Dataplane,
    rings: Vec<Vec<u32>>,
}

impl Harness {
    /// VIP index 0: VIP4:80/tcp → backends 1,2,3
    /// VIP index 1: [VIP6]:53/udp → backends 4,5,6
    /// VIP index 2: VIP4_ALL_PORTS:*/tcp → backends 1,2,3
    /// VIP index 3: VIP4_AFFINITY:80/tcp, source affinity → backends 1,2,3
    /// VIP index 4: VIP4_EMPTY:80/tcp, empty ring
    fn new() -> Self {
        let (dp, mut maps) = Dataplane::load().expect("load XDP program");
        let m = &mut maps;
        m.set_config(&LbConfig {
            mac: LB_MAC,
            flags: LB_F_FORWARDING,
            ..Default::default()
        })
        .unwrap();
        for id in 1..=3u32 {
            let addr = v4(Ipv4Addr::new(198, 18, 0, 10 + id as u8));
            m.set_backend(id, &backend(addr, FAMILY_V4, id)).unwrap();
        }
        for id in 4..=6u32 {
            let addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x10 + id as u16).octets();
            m.set_backend(id, &backend(addr, FAMILY_V6, id)).unwrap();
        }
        let vips = [
            (vip4(VIP4, 80, IPPROTO_TCP), 0, 0),
            (vip6(VIP6, 53, IPPROTO_UDP), 1, 0),
            (vip4(VIP4_ALL_PORTS, 0, IPPROTO_TCP), 2, 0),
            (
                vip4(VIP4_AFFINITY, 80, IPPROTO_TCP),
                3,
                VIP_F_SOURCE_AFFINITY,
            ),
            (vip4(VIP4_EMPTY, 80, IPPROTO_TCP), 4, 0),
        ];
        let rings = vec![
            ring(&[1, 2, 3]),
            ring(&[4, 5, 6]),
            ring(&[1, 2, 3]),
            ring(&[1, 2, 3]),
            vec![],
        ];
        for ((key, index, flags), slots) in vips.iter().zip(&rings) {
            let meta = VipMeta {
                index: *index,
                mode: MODE_DSR,
                flags: *flags,
                _pad: 0,
            };
            m.set_vip(key, &meta).unwrap();
            m.set_vip_addr(&VipKey {
                port: 0,
                proto: 0,
                ..*key
            })
            .unwrap();
            m.install_ring(*index, slots).unwrap();
        }
        Self { maps, dp, rings }
    }

    fn run(&self, input: &[u8]) -> (u32, Vec<u8>) {
        run_xdp(self.dp.program(), input, None)
    }

    /// The backend id the data plane must choose for `key` on VIP `index`.
    fn predict(&self, index: usize, key: &FlowKey, affinity: bool) -> u32 {
        let hash = if affinity {
            source_hash(&key.src)
        } else {
            flow_hash(key)
        };
        let ring = &self.rings[index];
        ring[(hash % ring.len() as u32) as usize]
    }

    fn drops(&self) -> [u64; drop::COUNT as usize] {
        self.maps.drops().unwrap()
    }
}

fn backend(addr: [u8; 16], family: u8, id: u32) -> BackendInfo {
    BackendInfo {
        addr,
        port: 0,
        family,
        flags: BACKEND_F_ACTIVE,
        mac: backend_mac(id),
        generation: 0,
    }
}

/// The same frame with the MACs a DSR forward to backend `id` must produce.
fn dsr_rewritten(input: &[u8], id: u32) -> Vec<u8> {
    let mut out = input.to_vec();
    out[..6].copy_from_slice(&backend_mac(id));
    out[6..12].copy_from_slice(&LB_MAC);
    out
}

fn harness(test: &str) -> Option<Harness> {
    xlb_testbed::require_root(test).then(Harness::new)
}

#[test]
fn ipv4_tcp_to_vip_is_forwarded_with_only_macs_rewritten() {
    let Some(h) = harness("ipv4_tcp_to_vip_is_forwarded_with_only_macs_rewritten") else {
        return;
    };
    let input = tcp4(VIP4, 40000, 80);
    let id = h.predict(0, &key4(CLIENT4, VIP4, 40000, 80, IPPROTO_TCP), false);
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, XDP_TX);
    assert_eq!(out, dsr_rewritten(&input, id));
    let vip = h.maps.vip_counters(0).unwrap();
    assert_eq!((vip.packets, vip.bytes), (1, input.len() as u64));
    let be = h.maps.backend_counters(id).unwrap();
    assert_eq!((be.packets, be.bytes), (1, input.len() as u64));
    let g = h.maps.globals().unwrap();
    assert_eq!(g[global::FORWARD as usize].packets, 1);
    assert_eq!(g[global::PASS as usize].packets, 0);
}

#[test]
fn ipv6_udp_to_vip_is_forwarded_with_only_macs_rewritten() {
    let Some(h) = harness("ipv6_udp_to_vip_is_forwarded_with_only_macs_rewritten") else {
        return;
    };
    let input = udp6(VIP6, 5353, 53);
    let key = FlowKey {
        src: words6(CLIENT6),
        dst: words6(VIP6),
        sport: 5353u16.to_be(),
        dport: 53u16.to_be(),
        proto: IPPROTO_UDP,
        _pad: [0; 3],
    };
    let id = h.predict(1, &key, false);
    assert!((4..=6).contains(&id));
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, XDP_TX);
    assert_eq!(out, dsr_rewritten(&input, id));
    assert_eq!(h.maps.backend_counters(id).unwrap().packets, 1);
}

#[test]
fn every_flow_goes_to_the_backend_lb_common_predicts() {
    let Some(h) = harness("every_flow_goes_to_the_backend_lb_common_predicts") else {
        return;
    };
    let mut seen = [0u32; 4];
    for sport in 30000..30300u16 {
        let input = tcp4(VIP4, sport, 80);
        let id = h.predict(0, &key4(CLIENT4, VIP4, sport, 80, IPPROTO_TCP), false);
        let (verdict, out) = h.run(&input);
        assert_eq!(verdict, XDP_TX, "sport {sport}");
        assert_eq!(out, dsr_rewritten(&input, id), "sport {sport}");
        seen[id as usize] += 1;
    }
    assert!(seen[1..].iter().all(|&n| n > 50), "uneven spread {seen:?}");
}

#[test]
fn source_affinity_sends_every_flow_of_a_client_to_one_backend() {
    let Some(h) = harness("source_affinity_sends_every_flow_of_a_client_to_one_backend") else {
        return;
    };
    let id = h.predict(3, &key4(CLIENT4, VIP4_AFFINITY, 1, 80, IPPROTO_TCP), true);
    for sport in 40000..40050u16 {
        let input = tcp4(VIP4_AFFINITY, sport, 80);
        let (verdict, out) = h.run(&input);
        assert_eq!(verdict, XDP_TX);
        assert_eq!(out, dsr_rewritten(&input, id), "sport {sport}");
    }
}

#[test]
fn all_ports_vip_matches_any_port() {
    let Some(h) = harness("all_ports_vip_matches_any_port") else {
        return;
    };
    for dport in [22u16, 443, 8443, 65535] {
        let input = tcp4(VIP4_ALL_PORTS, 41000, dport);
        let id = h.predict(
            2,
            &key4(CLIENT4, VIP4_ALL_PORTS, 41000, dport, IPPROTO_TCP),
            false,
        );
        let (verdict, out) = h.run(&input);
        assert_eq!(verdict, XDP_TX, "port {dport}");
        assert_eq!(out, dsr_rewritten(&input, id));
    }
}

#[test]
fn ipv4_options_and_vlan_tag_are_kept() {
    let Some(h) = harness("ipv4_options_and_vlan_tag_are_kept") else {
        return;
    };
    let key = key4(CLIENT4, VIP4, 40001, 80, IPPROTO_TCP);
    let id = h.predict(0, &key, false);

    let input = with_ipv4_options(&tcp4(VIP4, 40001, 80));
    etherparse::SlicedPacket::from_ethernet(&input).expect("options frame is well formed");
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, XDP_TX, "IPv4 with options");
    assert_eq!(out, dsr_rewritten(&input, id));

    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .single_vlan(VlanId::try_new(100).unwrap())
        .ipv4(CLIENT4.octets(), VIP4.octets(), 64)
        .tcp(40001, 80, 1, 1000)
        .syn();
    let mut input = Vec::new();
    b.write(&mut input, b"x").unwrap();
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, XDP_TX, "802.1Q tagged");
    assert_eq!(out, dsr_rewritten(&input, id));
    assert_eq!(&out[12..16], &[0x81, 0x00, 0x00, 100], "tag kept");
}

/// Traffic that is not for a VIP reaches the kernel byte for byte.
#[test]
fn non_vip_traffic_passes_untouched() {
    let Some(h) = harness("non_vip_traffic_passes_untouched") else {
        return;
    };
    let arp = {
        let mut f = Vec::new();
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&CLIENT_MAC);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&CLIENT_MAC);
        f.extend_from_slice(&CLIENT4.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&VIP4.octets());
        f
    };
    let icmp_to_vip = {
        let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
            .ipv4(CLIENT4.octets(), VIP4.octets(), 64)
            .icmpv4_echo_request(1, 1);
        let mut f = Vec::new();
        b.write(&mut f, b"ping").unwrap();
        f
    };
    let cases: [(&str, Vec<u8>); 6] = [
        ("VIP address, wrong port", tcp4(VIP4, 40000, 81)),
        ("SSH to the node's own address", tcp4(OTHER4, 40000, 22)),
        ("UDP to a TCP-only VIP", {
            let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
                .ipv4(CLIENT4.octets(), VIP4.octets(), 64)
                .udp(40000, 80);
            let mut f = Vec::new();
            b.write(&mut f, b"u").unwrap();
            f
        }),
        ("ARP request for the VIP", arp),
        ("ICMP echo to the VIP", icmp_to_vip),
        ("IPv6 to another port", udp6(VIP6, 5353, 54)),
    ];
    for (what, input) in cases {
        let (verdict, out) = h.run(&input);
        assert_eq!(verdict, XDP_PASS, "{what}");
        assert_eq!(out, input, "{what}");
    }
    assert_eq!(h.drops(), [0; drop::COUNT as usize]);
    let g = h.maps.globals().unwrap();
    assert_eq!(g[global::PASS as usize].packets, 6);
}

/// Malformed packets are dropped and counted by reason; nothing half-parsed
/// is forwarded.
#[test]
fn malformed_packets_are_dropped_and_counted() {
    let Some(h) = harness("malformed_packets_are_dropped_and_counted") else {
        return;
    };
    let good = tcp4(VIP4, 40000, 80);
    let mut bad_ihl = good.clone();
    bad_ihl[ETH] = 0x44;
    let mut bad_version = good.clone();
    bad_version[ETH] = 0x65;
    let mut options_cut = good[..ETH + 20].to_vec();
    options_cut[ETH] = 0x46;
    let mut bad_doff = good.clone();
    bad_doff[ETH + 20 + 12] = 0x40;
    let mut fragment = good.clone();
    fragment[ETH + 6] = 0x20; // more fragments
    let v6 = udp6(VIP6, 5353, 53);
    let cases: [(&str, Vec<u8>, u32); 8] = [
        (
            "IPv4 header cut at 10 bytes",
            good[..ETH + 10].to_vec(),
            drop::IPV4_TRUNCATED,
        ),
        ("IHL 4", bad_ihl, drop::IPV4_BAD_HEADER),
        (
            "version 6 in an IPv4 frame",
            bad_version,
            drop::IPV4_BAD_HEADER,
        ),
        ("IHL 6 but 20 bytes", options_cut, drop::IPV4_TRUNCATED),
        (
            "TCP header cut at 12 bytes",
            good[..ETH + 20 + 12].to_vec(),
            drop::L4_TRUNCATED,
        ),
        ("TCP data offset 4", bad_doff, drop::L4_TRUNCATED),
        ("IPv4 fragment to a VIP", fragment, drop::FRAGMENT),
        (
            "IPv6 header cut at 30 bytes",
            v6[..ETH + 30].to_vec(),
            drop::IPV6_TRUNCATED,
        ),
    ];
    let mut expected = [0u64; drop::COUNT as usize];
    for (what, input, reason) in cases {
        let (verdict, _) = h.run(&input);
        assert_eq!(verdict, XDP_DROP, "{what}");
        expected[reason as usize] += 1;
        assert_eq!(h.drops(), expected, "{what}");
    }
    assert_eq!(
        h.maps.globals().unwrap()[global::FORWARD as usize].packets,
        0
    );
}

#[test]
fn truncated_or_fragmented_non_vip_traffic_is_left_to_the_kernel() {
    let Some(h) = harness("truncated_or_fragmented_non_vip_traffic_is_left_to_the_kernel") else {
        return;
    };
    let other = tcp4(OTHER4, 40000, 22);
    let mut fragment = other.clone();
    fragment[ETH + 7] = 0x10; // fragment offset 16
    for (what, input) in [
        ("TCP header cut", other[..ETH + 20 + 12].to_vec()),
        ("fragment", fragment),
    ] {
        let (verdict, out) = h.run(&input);
        assert_eq!(verdict, XDP_PASS, "{what}");
        assert_eq!(out, input);
    }
    assert_eq!(h.drops(), [0; drop::COUNT as usize]);
}

#[test]
fn vip_without_backends_drops_and_counts() {
    let Some(h) = harness("vip_without_backends_drops_and_counts") else {
        return;
    };
    let (verdict, _) = h.run(&tcp4(VIP4_EMPTY, 40000, 80));
    assert_eq!(verdict, XDP_DROP);
    assert_eq!(h.drops()[drop::NO_BACKEND as usize], 1);
    assert_eq!(h.maps.vip_counters(4).unwrap().packets, 1);
}

#[test]
fn ring_swap_takes_effect_for_the_next_packet() {
    let Some(mut h) = harness("ring_swap_takes_effect_for_the_next_packet") else {
        return;
    };
    let input = tcp4(VIP4, 40000, 80);
    let before = h.predict(0, &key4(CLIENT4, VIP4, 40000, 80, IPPROTO_TCP), false);
    let other = if before == 3 { 2 } else { 3 };
    h.maps.install_ring(0, &vec![other; 251]).unwrap();
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, XDP_TX);
    assert_eq!(out, dsr_rewritten(&input, other));
    // A slot naming an inactive backend is a counted drop, not a forward.
    h.maps.clear_backend(other).unwrap();
    let (verdict, _) = h.run(&input);
    assert_eq!(verdict, XDP_DROP);
    assert_eq!(h.drops()[drop::BAD_BACKEND as usize], 1);
}

#[test]
fn backup_node_passes_vip_traffic_to_the_kernel() {
    let Some(mut h) = harness("backup_node_passes_vip_traffic_to_the_kernel") else {
        return;
    };
    h.maps
        .set_config(&LbConfig {
            mac: LB_MAC,
            flags: 0,
            ..Default::default()
        })
        .unwrap();
    let input = tcp4(VIP4, 40000, 80);
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(out, input);
}

#[test]
fn packet_too_big_goes_to_the_backend_of_the_flow_it_quotes() {
    let Some(h) = harness("packet_too_big_goes_to_the_backend_of_the_flow_it_quotes") else {
        return;
    };
    // The backend answered [fd00:18::2]:5353 from [VIP6]:53; a router on the
    // way back says the reply was too big.
    let input = packet_too_big6(VIP6, CLIENT6, L4::Udp, 53, 5353);
    let key = FlowKey {
        src: words6(CLIENT6),
        dst: words6(VIP6),
        sport: 5353u16.to_be(),
        dport: 53u16.to_be(),
        proto: IPPROTO_UDP,
        _pad: [0; 3],
    };
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, XDP_TX);
    assert_eq!(out, dsr_rewritten(&input, h.predict(1, &key, false)));
    // Same for IPv4 "fragmentation needed".
    let input = frag_needed4(VIP4, CLIENT4, 80, 40000);
    let id = h.predict(0, &key4(CLIENT4, VIP4, 40000, 80, IPPROTO_TCP), false);
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, XDP_TX);
    assert_eq!(out, dsr_rewritten(&input, id));
    // An error quoting something that is no VIP flow is the kernel's.
    let other = frag_needed4(OTHER4, CLIENT4, 22, 40000);
    assert_eq!(h.run(&other), (XDP_PASS, other.clone()));
}
