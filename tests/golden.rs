//! Golden packets through the real XDP program with BPF_PROG_TEST_RUN, in
//! Katran's fixture style: each case is a row {description, input frame,
//! expected verdict, expected output frame, counters it moves}, and one
//! runner ([`Harness::check`]) runs a row and checks all of it, so adding a
//! case is adding a row to [`fixtures`].
//!
//! A DSR forward must equal the input with only the two MAC addresses
//! changed, to the backend `lb_common`'s hash predicts for the installed
//! ring; anything else must come out as it went in. A row's counters are
//! checked exactly: every counter not named by the row must not move.
//! Needs root (BPF); see `xlb_testbed::require_root`.

use std::net::{Ipv4Addr, Ipv6Addr};

use lb_common::{
    BACKEND_F_ACTIVE, BackendInfo, Counters, FAMILY_V4, FAMILY_V6, FlowKey, IPPROTO_TCP,
    IPPROTO_UDP, LB_F_FORWARDING, LB_F_OWN_MAC, LbConfig, MODE_DSR, VIP_F_SOURCE_AFFINITY,
    VIP_F_STANDBY, VipKey, VipMeta, ct, drop, flow_hash, global, source_hash,
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
const BACKENDS: u32 = 6;

// Literal frames, computed outside this crate with Python 3.11, scapy 2.5
// and mmh3 5.3, not copied from the program's output:
//
//   l3 = IP(src="198.18.0.2", dst="198.18.0.100", ttl=64, id=0, flags="DF")
//        / TCP(sport=40000, dport=80, seq=1000, flags="S", window=64240)
//        / b"GET / HTTP/1.1\r\n\r\n"
//   DSR_IN  = raw(Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01") / l3)
//   DSR_OUT = raw(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:10:02") / l3)
//
// scapy computed the IPv4 and TCP checksums (ae33, a93b); the script
// checked them again with a hand-written RFC 1071 sum, and the runner
// checks them once more with etherparse (`assert_checksums`). Backend 2:
// mmh3.hash(key, 0x786c6221, signed=False) = 0x6541a29e of the 40 key bytes
// (198.18.0.2, 12 zero bytes, 198.18.0.100, 12 zero bytes, 9c40 0050, 06,
// three zero bytes) is slot 1 of the 13-slot ring, which holds backend 2.

/// Client → VIP4:80, TCP SYN, as it reaches the load balancer.
const DSR_IN: &str = "
    020000000001 020000000002 0800
    4500003a 00004000 4006ae33 c6120002 c6120064
    9c400050 000003e8 00000000 5002faf0 a93b0000
    474554202f20485454502f312e310d0a0d0a";
/// The same, on its way to backend 2: only the MACs differ.
const DSR_OUT: &str = "
    020000001002 020000000001 0800
    4500003a 00004000 4006ae33 c6120002 c6120064
    9c400050 000003e8 00000000 5002faf0 a93b0000
    474554202f20485454502f312e310d0a0d0a";
const DSR_BACKEND: u32 = 2;

/// One golden packet.
struct Case {
    what: String,
    input: Vec<u8>,
    verdict: u32,
    output: Vec<u8>,
    counts: Counts,
}

/// The counters a case moves besides `rx` and the global counter of its
/// verdict (pass, forward, drop), which every packet moves; each by one
/// packet of the input's length. Nothing else may move.
#[derive(Clone, Copy, Debug)]
enum Counts {
    Nothing,
    /// A drop reason: malformed traffic, dropped before any VIP lookup.
    Drop(u32),
    /// VIP `vip` and backend `backend`: a forward.
    Forward {
        vip: u32,
        backend: u32,
    },
    /// VIP `vip` and a drop reason: VIP traffic with nowhere to go.
    VipDrop {
        vip: u32,
        reason: u32,
    },
    /// Backend `backend` and the connection table's `icmp_to_flow`: an ICMP
    /// error sent to the backend of the flow it quotes.
    IcmpToFlow {
        backend: u32,
    },
}

/// Forwarded by DSR to backend `id` of VIP `vip`: only the MACs change.
fn forwarded(what: impl Into<String>, input: Vec<u8>, vip: u32, id: u32) -> Case {
    Case {
        what: what.into(),
        output: dsr_rewritten(&input, id),
        input,
        verdict: XDP_TX,
        counts: Counts::Forward { vip, backend: id },
    }
}

/// Left to the kernel byte for byte.
fn passed(what: &str, input: Vec<u8>) -> Case {
    Case {
        what: what.into(),
        output: input.clone(),
        input,
        verdict: XDP_PASS,
        counts: Counts::Nothing,
    }
}

/// Dropped untouched and counted by `reason`.
fn dropped(what: &str, input: Vec<u8>, reason: u32) -> Case {
    Case {
        what: what.into(),
        output: input.clone(),
        input,
        verdict: XDP_DROP,
        counts: Counts::Drop(reason),
    }
}

/// The same frame with the MACs a DSR forward to backend `id` must produce.
fn dsr_rewritten(input: &[u8], id: u32) -> Vec<u8> {
    let mut out = input.to_vec();
    out[..6].copy_from_slice(&backend_mac(id));
    out[6..12].copy_from_slice(&LB_MAC);
    out
}

/// `frame` cut to its first `len` bytes.
fn cut(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    frame.truncate(len);
    frame
}

/// `frame` with byte `at` set to `value`.
fn set(mut frame: Vec<u8>, at: usize, value: u8) -> Vec<u8> {
    frame[at] = value;
    frame
}

/// Every single-packet case, on one harness, in order. Rows do not depend
/// on each other: a flow seen twice keeps its backend either way.
fn fixtures(h: &Harness) -> Vec<Case> {
    let tcp = IPPROTO_TCP;
    let good = tcp4(VIP4, 40000, 80);
    let good6 = udp6(VIP6, 5353, 53);
    let other = tcp4(OTHER4, 40000, 22);
    vec![
        // VIP traffic: forwarded with only the MACs rewritten.
        h.forwarded(
            "IPv4 TCP SYN to VIP4:80",
            tcp4(VIP4, 40000, 80),
            0,
            key4(CLIENT4, VIP4, 40000, 80, tcp),
        ),
        Case {
            what: "IPv4 TCP SYN to VIP4:80, literal frames from scapy".into(),
            input: from_hex(DSR_IN),
            verdict: XDP_TX,
            output: from_hex(DSR_OUT),
            counts: Counts::Forward {
                vip: 0,
                backend: DSR_BACKEND,
            },
        },
        h.forwarded(
            "IPv6 UDP to [VIP6]:53",
            udp6(VIP6, 5353, 53),
            1,
            key6(CLIENT6, VIP6, 5353, 53, IPPROTO_UDP),
        ),
        h.forwarded(
            "all-ports VIP, port 22",
            tcp4(VIP4_ALL_PORTS, 41000, 22),
            2,
            key4(CLIENT4, VIP4_ALL_PORTS, 41000, 22, tcp),
        ),
        h.forwarded(
            "all-ports VIP, port 443",
            tcp4(VIP4_ALL_PORTS, 41000, 443),
            2,
            key4(CLIENT4, VIP4_ALL_PORTS, 41000, 443, tcp),
        ),
        h.forwarded(
            "all-ports VIP, port 8443",
            tcp4(VIP4_ALL_PORTS, 41000, 8443),
            2,
            key4(CLIENT4, VIP4_ALL_PORTS, 41000, 8443, tcp),
        ),
        h.forwarded(
            "all-ports VIP, port 65535",
            tcp4(VIP4_ALL_PORTS, 41000, 65535),
            2,
            key4(CLIENT4, VIP4_ALL_PORTS, 41000, 65535, tcp),
        ),
        h.forwarded(
            "IPv4 options (NOP NOP NOP EOL) are kept",
            Frame::from_client(VIP4)
                .ipv4_options(&[1, 1, 1, 0])
                .tcp(40001, 80, "S", REQUEST),
            0,
            key4(CLIENT4, VIP4, 40001, 80, tcp),
        ),
        h.forwarded(
            "802.1Q tag (VLAN 100) is kept",
            Frame::from_client(VIP4).vlan(100).tcp(40001, 80, "S", b"x"),
            0,
            key4(CLIENT4, VIP4, 40001, 80, tcp),
        ),
        Case {
            what: "VIP without backends: dropped and counted".into(),
            input: tcp4(VIP4_EMPTY, 40000, 80),
            verdict: XDP_DROP,
            output: tcp4(VIP4_EMPTY, 40000, 80),
            counts: Counts::VipDrop {
                vip: 4,
                reason: drop::NO_BACKEND,
            },
        },
        // ICMP errors about a VIP's packet go to the backend of the flow
        // they quote, so that its stack lowers the path MTU.
        Case {
            what: "IPv6 packet too big quoting [VIP6]:53 → client:5353".into(),
            ..h.icmp_to_flow(
                packet_too_big6(VIP6, CLIENT6, L4::Udp, 53, 5353),
                1,
                key6(CLIENT6, VIP6, 5353, 53, IPPROTO_UDP),
            )
        },
        Case {
            what: "IPv4 fragmentation needed quoting VIP4:80 → client:40000".into(),
            ..h.icmp_to_flow(
                frag_needed4(VIP4, CLIENT4, 80, 40000),
                0,
                key4(CLIENT4, VIP4, 40000, 80, tcp),
            )
        },
        // Not VIP traffic: to the kernel byte for byte, nothing counted.
        passed("VIP address, wrong port", tcp4(VIP4, 40000, 81)),
        passed("SSH to the node's own address", other.clone()),
        passed(
            "UDP to a TCP-only VIP",
            Frame::from_client(VIP4).udp(40000, 80, b"u"),
        ),
        passed("ARP request for the VIP", arp_request(VIP4)),
        passed(
            "ICMP echo to the VIP",
            Frame::from_client(VIP4).icmp_echo(b"ping"),
        ),
        passed("IPv6 to another port", udp6(VIP6, 5353, 54)),
        passed("non-VIP TCP header cut", cut(other.clone(), ETH + 20 + 12)),
        passed(
            "non-VIP IPv4 fragment (offset 16)",
            set(other.clone(), ETH + 7, 0x10),
        ),
        passed(
            "ICMP error quoting no VIP flow",
            frag_needed4(OTHER4, CLIENT4, 22, 40000),
        ),
        // Malformed traffic: dropped and counted by reason; nothing
        // half-parsed is forwarded.
        dropped(
            "IPv4 header cut at 10 bytes",
            cut(good.clone(), ETH + 10),
            drop::IPV4_TRUNCATED,
        ),
        dropped("IHL 4", with_bad_ihl(good.clone()), drop::IPV4_BAD_HEADER),
        dropped(
            "version 6 in an IPv4 frame",
            set(good.clone(), ETH, 0x65),
            drop::IPV4_BAD_HEADER,
        ),
        dropped(
            "IHL 6 but 20 bytes",
            set(cut(good.clone(), ETH + 20), ETH, 0x46),
            drop::IPV4_TRUNCATED,
        ),
        dropped(
            "TCP header cut at 12 bytes",
            cut(good.clone(), ETH + 20 + 12),
            drop::L4_TRUNCATED,
        ),
        dropped(
            "TCP data offset 4",
            set(good.clone(), ETH + 20 + 12, 0x40),
            drop::L4_TRUNCATED,
        ),
        dropped(
            "IPv4 fragment to a VIP (more fragments)",
            set(good.clone(), ETH + 6, 0x20),
            drop::FRAGMENT,
        ),
        // Found by the data-plane property test (tests/dataplane_props.rs).
        dropped(
            "TCP data offset 6 (4 bytes of options) but only 20 bytes",
            set(cut(good, ETH + 20 + 20), ETH + 20 + 12, 0x60),
            drop::L4_TRUNCATED,
        ),
        passed(
            "non-VIP TCP options cut",
            set(cut(other.clone(), ETH + 20 + 20), ETH + 20 + 12, 0x60),
        ),
        passed(
            "fragmentation needed in an IPv4 fragment (more fragments)",
            set(frag_needed4(VIP4, CLIENT4, 80, 40000), ETH + 6, 0x20),
        ),
        passed(
            "fragmentation needed in a later IPv4 fragment (offset 8)",
            set(frag_needed4(VIP4, CLIENT4, 80, 40000), ETH + 7, 0x01),
        ),
        passed(
            "IPv6 ethertype, version 4 in the header",
            set(good6.clone(), ETH, 0x46),
        ),
        passed(
            "packet too big quoting a header of version 4",
            set(
                packet_too_big6(VIP6, CLIENT6, L4::Udp, 53, 5353),
                ETH + 40 + 8,
                0x46,
            ),
        ),
        dropped(
            "IPv6 header cut at 30 bytes",
            cut(good6, ETH + 30),
            drop::IPV6_TRUNCATED,
        ),
    ]
}

/// The data plane's clock (`bpf_ktime_get_ns` is CLOCK_MONOTONIC).
fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Who-has for a VIP address is the kernel's to answer while a control
/// plane holds the lease (or when there is none: no VRRP); once it has run
/// out, the node's control plane is gone and a backup owns the VIPs, so
/// ARP requests and neighbour solicitations for VIPs are left unanswered
/// (and counted). Queries for other addresses always reach the kernel.
#[test]
fn neighbour_queries_for_vips_go_unanswered_only_once_the_lease_ran_out() {
    let Some(mut h) =
        harness("neighbour_queries_for_vips_go_unanswered_only_once_the_lease_ran_out")
    else {
        return;
    };
    let now = monotonic_ns();
    for (lease, state) in [
        (0, "no lease"),
        (now + 60_000_000_000, "lease running"),
        (now - 1, "lease run out"),
    ] {
        h.maps.set_lease(lease).unwrap();
        let expired = lease != 0 && lease < now;
        for (query, vip, what) in [
            (arp_request(VIP4), true, "ARP request for VIP4"),
            (
                arp_request(OTHER4),
                false,
                "ARP request for the node's own address",
            ),
            (
                neighbour_solicitation(VIP6),
                true,
                "neighbour solicitation for VIP6",
            ),
            (
                neighbour_solicitation(CLIENT6),
                false,
                "neighbour solicitation for another address",
            ),
        ] {
            let what = format!("{what}, {state}");
            let case = if vip && expired {
                dropped(&what, query, drop::ORPHAN_NEIGH)
            } else {
                passed(&what, query)
            };
            h.check(&case);
        }
    }
}

#[test]
fn every_fixture_gets_its_verdict_output_and_counters() {
    let Some(h) = harness("every_fixture_gets_its_verdict_output_and_counters") else {
        return;
    };
    for case in fixtures(&h) {
        h.check(&case);
    }
}

/// The literal frames agree with the builder and with `lb_common`: scapy
/// and etherparse build the same bytes, and mmh3 and `flow_hash` pick the
/// same backend.
#[test]
fn literal_frames_match_the_frame_builder_and_the_flow_hash() {
    let ring = ring(&[1, 2, 3]);
    let hash = flow_hash(&key4(CLIENT4, VIP4, 40000, 80, IPPROTO_TCP));
    assert_eq!(ring[(hash % RING_SIZE) as usize], DSR_BACKEND);
    let input = tcp4(VIP4, 40000, 80);
    assert_eq!(to_hex(&input), to_hex(&from_hex(DSR_IN)));
    assert_eq!(
        to_hex(&dsr_rewritten(&input, DSR_BACKEND)),
        to_hex(&from_hex(DSR_OUT))
    );
}

#[test]
fn every_flow_goes_to_the_backend_lb_common_predicts() {
    let Some(h) = harness("every_flow_goes_to_the_backend_lb_common_predicts") else {
        return;
    };
    let mut seen = [0u32; 4];
    for sport in 30000..30300u16 {
        let key = key4(CLIENT4, VIP4, sport, 80, IPPROTO_TCP);
        h.check(&h.forwarded(format!("sport {sport}"), tcp4(VIP4, sport, 80), 0, key));
        seen[h.predict(0, &key) as usize] += 1;
    }
    assert!(seen[1..].iter().all(|&n| n > 50), "uneven spread {seen:?}");
}

#[test]
fn source_affinity_sends_every_flow_of_a_client_to_one_backend() {
    let Some(h) = harness("source_affinity_sends_every_flow_of_a_client_to_one_backend") else {
        return;
    };
    let id = h.predict(3, &key4(CLIENT4, VIP4_AFFINITY, 1, 80, IPPROTO_TCP));
    for sport in 40000..40050u16 {
        let input = tcp4(VIP4_AFFINITY, sport, 80);
        h.check(&forwarded(format!("sport {sport}"), input, 3, id));
    }
}

#[test]
fn ring_swap_takes_effect_for_the_next_packet() {
    let Some(mut h) = harness("ring_swap_takes_effect_for_the_next_packet") else {
        return;
    };
    let input = tcp4(VIP4, 40000, 80);
    let before = h.predict(0, &key4(CLIENT4, VIP4, 40000, 80, IPPROTO_TCP));
    let other = if before == 3 { 2 } else { 3 };
    h.maps.install_ring(0, &vec![other; 251]).unwrap();
    h.check(&forwarded("after the swap", input.clone(), 0, other));
    // A slot naming an inactive backend is a counted drop, not a forward.
    h.maps.clear_backend(other).unwrap();
    h.check(&Case {
        what: "its backend cleared".into(),
        output: input.clone(),
        input,
        verdict: XDP_DROP,
        counts: Counts::VipDrop {
            vip: 0,
            reason: drop::BAD_BACKEND,
        },
    });
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
    h.check(&passed("VIP traffic on a backup", tcp4(VIP4, 40000, 80)));
}

/// A connection-table hit finds its VIP through its backend
/// (`BackendInfo::vip` → `VIP_SLOTS`), not by `VIPS`: it must still see
/// every change to that VIP at once. Made standby, its flows go to the
/// kernel; active again, they go on to their backend; removed, or its index
/// given to another VIP, its packets are no VIP's, though their entries
/// are still in the table; back, the entry serves again.
#[test]
fn a_conntrack_hit_sees_its_vip_go_standby_removed_or_its_index_reused() {
    let Some(mut h) =
        harness("a_conntrack_hit_sees_its_vip_go_standby_removed_or_its_index_reused")
    else {
        return;
    };
    let key = vip4(VIP4, 80, IPPROTO_TCP);
    let meta = |flags| VipMeta {
        index: 0,
        mode: MODE_DSR,
        flags,
        _pad: 0,
    };
    let input = tcp4(VIP4, 41000, 80);
    let flow = key4(CLIENT4, VIP4, 41000, 80, IPPROTO_TCP);
    h.check(&h.forwarded("first packet (insert)", input.clone(), 0, flow));
    h.check(&h.forwarded("second packet (hit)", input.clone(), 0, flow));
    let hits = |h: &Harness| h.maps.conntrack_stats().unwrap()[ct::HIT as usize];
    let before = hits(&h);

    h.maps.set_vip(&key, &meta(VIP_F_STANDBY)).unwrap();
    h.check(&passed("its VIP made standby", input.clone()));
    h.maps.set_vip(&key, &meta(0)).unwrap();
    h.check(&h.forwarded("its VIP active again", input.clone(), 0, flow));

    h.maps.remove_vip(&key).unwrap();
    h.check(&passed("its VIP removed", input.clone()));
    // Index 0 given to another VIP on the same address.
    let other = vip4(VIP4, 81, IPPROTO_TCP);
    h.maps.set_vip(&other, &meta(0)).unwrap();
    h.check(&passed("its VIP's index reused", input.clone()));
    h.maps.remove_vip(&other).unwrap();
    h.maps.set_vip(&key, &meta(0)).unwrap();
    h.check(&h.forwarded("its VIP back", input, 0, flow));
    // The entry served throughout: two hits while the VIP was there.
    assert_eq!(hits(&h) - before, 2);
}

/// On a one-NIC node (`LB_F_OWN_MAC`), a VIP frame a switch flooded to
/// this node for another host's MAC is not forwarded (every node that got
/// the copy would forward it): it goes to the kernel, which drops it as
/// another host's. Addressed to this node, it is forwarded as always.
#[test]
fn vip_frames_for_another_mac_go_to_the_kernel_on_a_one_nic_node() {
    let Some(mut h) = harness("vip_frames_for_another_mac_go_to_the_kernel_on_a_one_nic_node")
    else {
        return;
    };
    h.maps
        .set_config(&LbConfig {
            mac: LB_MAC,
            flags: LB_F_FORWARDING | LB_F_OWN_MAC,
            ..Default::default()
        })
        .unwrap();
    let other_node: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    let flooded = Frame::new(CLIENT_MAC, other_node, CLIENT4, VIP4).tcp(40000, 80, "S", REQUEST);
    h.check(&passed("a VIP frame for another node's MAC", flooded));
    let key = key4(CLIENT4, VIP4, 40000, 80, IPPROTO_TCP);
    let ours = h.forwarded(
        "the same frame for this node's MAC",
        tcp4(VIP4, 40000, 80),
        0,
        key,
    );
    h.check(&ours);
    let too_big =
        Frame::new(CLIENT_MAC, other_node, ROUTER4, VIP4).too_big(CLIENT4, L4::Tcp, 80, 40000);
    h.check(&passed("an ICMP error for another node's MAC", too_big));
}

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

/// Backend `id` of VIP index `vip`.
fn backend(addr: [u8; 16], family: u8, id: u32, vip: u32) -> BackendInfo {
    BackendInfo {
        addr,
        port: 0,
        family,
        flags: BACKEND_F_ACTIVE,
        mac: backend_mac(id),
        generation: 0,
        vip,
    }
}

struct Vip {
    key: VipKey,
    flags: u32,
    ring: Vec<u32>,
}

struct Harness {
    maps: Maps,
    dp: Dataplane,
    /// By VIP index.
    vips: Vec<Vip>,
}

/// Every counter a golden packet may move: the global ones, the drop
/// reasons, the VIPs', the backends' (by id, 0 unused) and the connection
/// table's `icmp_to_flow`. (The table's hit/miss bookkeeping is the
/// control suite's subject, not this one's.)
#[derive(Clone, Debug, PartialEq)]
struct Snapshot {
    globals: [Counters; global::COUNT as usize],
    drops: [u64; drop::COUNT as usize],
    vips: Vec<Counters>,
    backends: Vec<Counters>,
    icmp_to_flow: u64,
}

impl Snapshot {
    /// What `case` must leave after this.
    fn after(&self, case: &Case) -> Snapshot {
        let len = case.input.len() as u64;
        let add = |c: &mut Counters| {
            c.packets += 1;
            c.bytes += len;
        };
        let mut s = self.clone();
        add(&mut s.globals[global::RX as usize]);
        let outcome = match case.verdict {
            XDP_PASS => global::PASS,
            XDP_TX => global::FORWARD,
            _ => global::DROP,
        };
        add(&mut s.globals[outcome as usize]);
        match case.counts {
            Counts::Nothing => {}
            Counts::Drop(reason) => s.drops[reason as usize] += 1,
            Counts::Forward { vip, backend } => {
                add(&mut s.vips[vip as usize]);
                add(&mut s.backends[backend as usize]);
            }
            Counts::VipDrop { vip, reason } => {
                add(&mut s.vips[vip as usize]);
                s.drops[reason as usize] += 1;
            }
            Counts::IcmpToFlow { backend } => {
                add(&mut s.backends[backend as usize]);
                s.icmp_to_flow += 1;
            }
        }
        s
    }
}

impl Harness {
    /// VIP index 0: VIP4:80/tcp → backends 1,2,3
    /// VIP index 1: [VIP6]:53/udp → backends 4,5,6
    /// VIP index 2: VIP4_ALL_PORTS:*/tcp → backends 1,2,3
    /// VIP index 3: VIP4_AFFINITY:80/tcp, source affinity → backends 1,2,3
    /// VIP index 4: VIP4_EMPTY:80/tcp, empty ring
    ///
    /// Backends 1–3 belong to VIP 0 (`BackendInfo::vip`) and 4–6 to VIP 1,
    /// so that hits on VIPs 0 and 1 find their VIP through the backend
    /// (`VIP_SLOTS`), and hits on VIPs 2 and 3, whose backends name
    /// another VIP, by `VIPS`, as every hit did before.
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
            m.set_backend(id, &backend(addr, FAMILY_V4, id, 0)).unwrap();
        }
        for id in 4..=BACKENDS {
            let addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x10 + id as u16).octets();
            m.set_backend(id, &backend(addr, FAMILY_V6, id, 1)).unwrap();
        }
        let vip = |key, flags, ring| Vip { key, flags, ring };
        let vips = vec![
            vip(vip4(VIP4, 80, IPPROTO_TCP), 0, ring(&[1, 2, 3])),
            vip(vip6(VIP6, 53, IPPROTO_UDP), 0, ring(&[4, 5, 6])),
            vip(vip4(VIP4_ALL_PORTS, 0, IPPROTO_TCP), 0, ring(&[1, 2, 3])),
            vip(
                vip4(VIP4_AFFINITY, 80, IPPROTO_TCP),
                VIP_F_SOURCE_AFFINITY,
                ring(&[1, 2, 3]),
            ),
            vip(vip4(VIP4_EMPTY, 80, IPPROTO_TCP), 0, vec![]),
        ];
        for (index, v) in vips.iter().enumerate() {
            let meta = VipMeta {
                index: index as u32,
                mode: MODE_DSR,
                flags: v.flags,
                _pad: 0,
            };
            m.set_vip(&v.key, &meta).unwrap();
            m.set_vip_addr(&VipKey {
                port: 0,
                proto: 0,
                ..v.key
            })
            .unwrap();
            m.install_ring(index as u32, &v.ring).unwrap();
        }
        Self { maps, dp, vips }
    }

    /// The backend id the data plane must choose for `key` on VIP `index`
    /// (by its ring as installed here).
    fn predict(&self, index: u32, key: &FlowKey) -> u32 {
        let vip = &self.vips[index as usize];
        let hash = if vip.flags & VIP_F_SOURCE_AFFINITY != 0 {
            source_hash(&key.src)
        } else {
            flow_hash(key)
        };
        vip.ring[(hash % vip.ring.len() as u32) as usize]
    }

    /// `input`, of flow `key`, forwarded to the backend [`Harness::predict`]s.
    fn forwarded(&self, what: impl Into<String>, input: Vec<u8>, vip: u32, key: FlowKey) -> Case {
        forwarded(what, input, vip, self.predict(vip, &key))
    }

    /// An ICMP error about flow `key` of VIP `vip`, sent as is (DSR) to the
    /// flow's backend.
    fn icmp_to_flow(&self, input: Vec<u8>, vip: u32, key: FlowKey) -> Case {
        let backend = self.predict(vip, &key);
        Case {
            what: String::new(),
            output: dsr_rewritten(&input, backend),
            input,
            verdict: XDP_TX,
            counts: Counts::IcmpToFlow { backend },
        }
    }

    fn snapshot(&self) -> Snapshot {
        let m = &self.maps;
        Snapshot {
            globals: m.globals().unwrap(),
            drops: m.drops().unwrap(),
            vips: (0..self.vips.len() as u32)
                .map(|i| m.vip_counters(i).unwrap())
                .collect(),
            backends: (0..=BACKENDS)
                .map(|id| m.backend_counters(id).unwrap())
                .collect(),
            icmp_to_flow: m.conntrack_stats().unwrap()[ct::ICMP_TO_FLOW as usize],
        }
    }

    /// Runs one case: its verdict, its output byte for byte (a forwarded
    /// frame's checksums recomputed by etherparse as well), and exactly
    /// the counters it names.
    fn check(&self, case: &Case) {
        let what = &case.what;
        let before = self.snapshot();
        let (verdict, out) = run_xdp(self.dp.program(), &case.input, None);
        assert_eq!(verdict, case.verdict, "{what}: verdict");
        assert_eq!(to_hex(&out), to_hex(&case.output), "{what}: output frame");
        if verdict == XDP_TX {
            assert_checksums(&out);
        }
        assert_eq!(self.snapshot(), before.after(case), "{what}: counters");
    }
}

fn harness(test: &str) -> Option<Harness> {
    xlb_testbed::require_root(test).then(Harness::new)
}

/// With connection sync on (`LB_F_SYNC`), the data plane reports each new
/// flow and each flow's first FIN or RST into `FLOW_EVENTS`, once, with
/// its key, backend and generation; hits report nothing, and the packets
/// are forwarded exactly as without sync.
#[test]
fn with_sync_each_new_and_closing_flow_is_reported_once() {
    use aya::maps::{Map, RingBuf};
    use lb_common::{FLOW_F_CLOSING, FlowEvent, LB_F_SYNC, flow_event, map_names};
    let Some(mut h) = harness("with_sync_each_new_and_closing_flow_is_reported_once") else {
        return;
    };
    h.maps
        .set_config(&LbConfig {
            mac: LB_MAC,
            flags: LB_F_FORWARDING | LB_F_SYNC,
            ..Default::default()
        })
        .unwrap();
    let mut ring = match h.dp.take_map(map_names::FLOW_EVENTS) {
        Some(m @ Map::RingBuf(_)) => RingBuf::try_from(m).unwrap(),
        other => panic!("FLOW_EVENTS is {other:?}"),
    };
    // (what, client port, TCP flags, the report it makes)
    let rows: [(&str, u16, &str, Option<u8>); 6] = [
        ("a SYN: a new flow", 40000, "S", Some(flow_event::NEW)),
        ("its next segment: a hit", 40000, "A", None),
        (
            "its FIN: the flow starts closing",
            40000,
            "AF",
            Some(flow_event::CLOSING),
        ),
        ("a second FIN: already closing", 40000, "AF", None),
        (
            "another client port: a new flow",
            40001,
            "S",
            Some(flow_event::NEW),
        ),
        ("its RST: closing", 40001, "AR", Some(flow_event::CLOSING)),
    ];
    for (what, port, flags, report) in rows {
        let key = key4(CLIENT4, VIP4, port, 80, IPPROTO_TCP);
        let case = h.forwarded(what, tcp4_flags(VIP4, port, 80, flags), 0, key);
        let Counts::Forward { backend, .. } = case.counts else {
            unreachable!("a forward")
        };
        h.check(&case);
        let mut got = Vec::new();
        while let Some(item) = ring.next() {
            got.push(FlowEvent::from_bytes(&item).expect("a FlowEvent record"));
        }
        match report {
            None => assert!(got.is_empty(), "{what}: reported {got:?}"),
            Some(kind) => {
                assert_eq!(got.len(), 1, "{what}: {got:?}");
                let e = got[0];
                assert_eq!(
                    (e.kind, e.key, e.backend, e.family),
                    (kind, key, backend, 4),
                    "{what}"
                );
                assert_eq!(
                    e.generation,
                    h.maps.backend(backend).unwrap().generation,
                    "{what}"
                );
                let closing = kind == flow_event::CLOSING;
                assert_eq!(e.flags & FLOW_F_CLOSING != 0, closing, "{what}: flags");
                assert!(e.at > 0, "{what}: time");
            }
        }
    }
}

/// With a trace on (`LB_F_TRACE` and a filter), the data plane records
/// each matching packet with what it decided for it: the client's flow,
/// the VIP, the connection table's outcome (a miss, then a hit; expired
/// and stale entries), the backend, the verdict and why (drop and pass
/// reasons), the length and the first bytes as sent on. The verdicts and
/// output frames are those of the untraced program, and a packet the
/// filter does not take is not recorded.
#[test]
fn a_trace_records_each_decision_with_its_reason() {
    use aya::maps::{Map, RingBuf};
    use lb_common::{
        FlowState, LB_F_TRACE, TRACE_CAPTURE, TraceFilter, TraceRecord, map_names, trace,
    };
    let Some(mut h) = harness("a_trace_records_each_decision_with_its_reason") else {
        return;
    };
    h.maps
        .set_config(&LbConfig {
            mac: LB_MAC,
            flags: LB_F_FORWARDING | LB_F_TRACE,
            tcp_timeout: 60,
            ..Default::default()
        })
        .unwrap();
    let filter = TraceFilter {
        until: monotonic_ns() + 60_000_000_000,
        ..TraceFilter::default()
    };
    h.maps.set_trace_filter(&filter).unwrap();
    let mut ring = match h.dp.take_map(map_names::TRACE_EVENTS) {
        Some(m @ Map::RingBuf(_)) => RingBuf::try_from(m).unwrap(),
        other => panic!("TRACE_EVENTS is {other:?}"),
    };
    let key = key4(CLIENT4, VIP4, 40000, 80, IPPROTO_TCP);
    let id = h.predict(0, &key);
    // An entry idle past the 60 s timeout, and one made for a previous
    // owner of its backend id (another generation).
    let expired_key = key4(CLIENT4, VIP4, 40001, 80, IPPROTO_TCP);
    let stale_key = key4(CLIENT4, VIP4, 40002, 80, IPPROTO_TCP);
    let old = FlowState {
        backend: h.predict(0, &expired_key),
        last_seen: 1,
        ..Default::default()
    };
    h.maps.set_flow(&expired_key, &old).unwrap();
    let stale = FlowState {
        backend: h.predict(0, &stale_key),
        generation: 7,
        last_seen: monotonic_ns(),
        ..Default::default()
    };
    h.maps.set_flow(&stale_key, &stale).unwrap();
    let no = trace::NO_REASON;
    let nv = trace::NO_VIP;
    let flow = trace::KIND_FLOW;
    let (tcp, v4) = (IPPROTO_TCP, FAMILY_V4);
    // (case, key the record must hold, family, kind, VIP, conntrack, backend, reason)
    type Row = (Case, FlowKey, u8, u8, u32, u8, u32, u8);
    let rows: Vec<Row> = vec![
        (
            h.forwarded("a SYN: a miss", tcp4(VIP4, 40000, 80), 0, key),
            key,
            v4,
            flow,
            0,
            trace::CT_MISS,
            id,
            no,
        ),
        (
            h.forwarded(
                "its next segment: a hit",
                tcp4_flags(VIP4, 40000, 80, "A"),
                0,
                key,
            ),
            key,
            v4,
            flow,
            0,
            trace::CT_HIT,
            id,
            no,
        ),
        (
            h.forwarded(
                "an entry idle too long",
                tcp4(VIP4, 40001, 80),
                0,
                expired_key,
            ),
            expired_key,
            v4,
            flow,
            0,
            trace::CT_EXPIRED,
            h.predict(0, &expired_key),
            no,
        ),
        (
            h.forwarded(
                "an entry of another generation",
                tcp4(VIP4, 40002, 80),
                0,
                stale_key,
            ),
            stale_key,
            v4,
            flow,
            0,
            trace::CT_STALE,
            h.predict(0, &stale_key),
            no,
        ),
        (
            h.forwarded(
                "IPv6 UDP: a miss",
                udp6(VIP6, 5353, 53),
                1,
                key6(CLIENT6, VIP6, 5353, 53, IPPROTO_UDP),
            ),
            key6(CLIENT6, VIP6, 5353, 53, IPPROTO_UDP),
            FAMILY_V6,
            flow,
            1,
            trace::CT_MISS,
            h.predict(1, &key6(CLIENT6, VIP6, 5353, 53, IPPROTO_UDP)),
            no,
        ),
        (
            Case {
                what: "a VIP without backends: dropped, no_backend".into(),
                input: tcp4(VIP4_EMPTY, 40000, 80),
                verdict: XDP_DROP,
                output: tcp4(VIP4_EMPTY, 40000, 80),
                counts: Counts::VipDrop {
                    vip: 4,
                    reason: drop::NO_BACKEND,
                },
            },
            key4(CLIENT4, VIP4_EMPTY, 40000, 80, tcp),
            v4,
            flow,
            4,
            trace::CT_MISS,
            0,
            drop::NO_BACKEND as u8,
        ),
        (
            passed(
                "another port: to the kernel, not_vip",
                tcp4(VIP4, 40000, 81),
            ),
            key4(CLIENT4, VIP4, 40000, 81, tcp),
            v4,
            flow,
            nv,
            trace::CT_NONE,
            0,
            trace::pass::NOT_VIP,
        ),
        (
            dropped(
                "IHL 4: dropped, ipv4_bad_header",
                with_bad_ihl(tcp4(VIP4, 40000, 80)),
                drop::IPV4_BAD_HEADER,
            ),
            FlowKey::default(),
            0,
            trace::KIND_MALFORMED,
            nv,
            trace::CT_NONE,
            0,
            drop::IPV4_BAD_HEADER as u8,
        ),
        (
            passed("ARP for the VIP: the kernel answers", arp_request(VIP4)),
            FlowKey {
                dst: key.dst,
                ..FlowKey::default()
            },
            v4,
            trace::KIND_NEIGHBOUR,
            nv,
            trace::CT_NONE,
            0,
            trace::pass::NEIGHBOUR,
        ),
    ];
    for (case, key, family, kind, vip, ct, backend, reason) in rows {
        let what = &case.what;
        h.check(&case);
        let mut got = Vec::new();
        while let Some(item) = ring.next() {
            got.push(TraceRecord::from_bytes(&item).expect("a TraceRecord"));
        }
        assert_eq!(got.len(), 1, "{what}: {got:?}");
        let r = got[0];
        assert_eq!(
            (r.key, r.family, r.kind),
            (key, family, kind),
            "{what}: flow"
        );
        assert_eq!(
            (r.vip, r.conntrack, r.backend, r.verdict, r.reason),
            (vip, ct, backend, case.verdict as u8, reason),
            "{what}: decision"
        );
        assert_eq!((r.len as usize, r.ifindex), (case.input.len(), 1), "{what}");
        let n = case.output.len().min(TRACE_CAPTURE);
        assert_eq!(
            to_hex(r.packet()),
            to_hex(&case.output[..n]),
            "{what}: bytes"
        );
        assert!(r.at > filter.until - 60_000_000_000, "{what}: time");
    }

    // A filter: only drops from this client; the rest is not recorded.
    let (src, src_mask) = (key.src, [u32::MAX, 0, 0, 0]);
    let drops = TraceFilter {
        src,
        src_mask,
        flags: trace::F_DROPS_ONLY,
        ..filter
    };
    h.maps.set_trace_filter(&drops).unwrap();
    h.check(&h.forwarded(
        "a hit, not a drop",
        tcp4_flags(VIP4, 40000, 80, "A"),
        0,
        key,
    ));
    assert!(
        ring.next().is_none(),
        "a forward recorded under a drops filter"
    );
    let other_client = Frame::new(CLIENT_MAC, LB_MAC, Ipv4Addr::new(198, 18, 0, 9), VIP4_EMPTY)
        .tcp(40000, 80, "S", REQUEST);
    h.check(&Case {
        what: "a drop from another client".into(),
        output: other_client.clone(),
        input: other_client,
        verdict: XDP_DROP,
        counts: Counts::VipDrop {
            vip: 4,
            reason: drop::NO_BACKEND,
        },
    });
    assert!(ring.next().is_none(), "another client's drop recorded");
    h.check(&Case {
        what: "a drop from this client".into(),
        input: tcp4(VIP4_EMPTY, 40001, 80),
        verdict: XDP_DROP,
        output: tcp4(VIP4_EMPTY, 40001, 80),
        counts: Counts::VipDrop {
            vip: 4,
            reason: drop::NO_BACKEND,
        },
    });
    let r = TraceRecord::from_bytes(&ring.next().expect("the drop recorded")).unwrap();
    assert_eq!(
        (r.verdict, r.reason),
        (XDP_DROP as u8, drop::NO_BACKEND as u8)
    );
    // Past the filter's deadline nothing is recorded, flag or not.
    h.maps
        .set_trace_filter(&TraceFilter {
            until: monotonic_ns() - 1,
            ..drops
        })
        .unwrap();
    h.check(&Case {
        what: "a drop after the deadline".into(),
        input: tcp4(VIP4_EMPTY, 40002, 80),
        verdict: XDP_DROP,
        output: tcp4(VIP4_EMPTY, 40002, 80),
        counts: Counts::VipDrop {
            vip: 4,
            reason: drop::NO_BACKEND,
        },
    });
    assert!(ring.next().is_none(), "recorded past the deadline");
}
