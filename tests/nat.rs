//! NAT golden packets through the real XDP program with BPF_PROG_TEST_RUN.
//!
//! `bpf_fib_lookup` needs real routes, so each test runs on a thread in a
//! fresh anonymous network namespace (gone when the thread ends) with two
//! veth ends standing in for the client-side (`c0`, 198.18.0.1/24,
//! fd00:18::1/64) and server-side (`s0`, 198.18.1.1/24, fd00:19::1/64) NICs,
//! static neighbours and forwarding on. Output checksums are verified with
//! etherparse, independently of the program's incremental updates.
//! Needs root.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::Command,
};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use lb_user::{config::Config, netlink};
use xlb_testbed::{fakes::FakeNeighbours, frames::*, lb::Lb};

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x100);
/// Two-armed backend (behind s0) and one-armed backend (on c0's subnet).
const BACKEND4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
const BACKEND4_SAME_LINK: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 21);
const BACKEND4_NO_NEIGH: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 12);
const BACKEND6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x19, 0, 0, 0, 0, 0, 0x11);
const BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x10, 0x0b];

fn sh(args: &str) {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sysctl(path: &str) {
    std::fs::write(path, "1").unwrap_or_else(|e| panic!("{path}: {e}"));
}

struct Lab {
    controller: Lb,
    c0: netlink::Interface,
    s0: netlink::Interface,
}

/// Runs `f` in a private network namespace set up as described above.
fn in_lab(test: &str, config: &str, f: impl FnOnce(&mut Lab) + Send) {
    if !xlb_testbed::require_root(test) {
        return;
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            sh("link set lo up");
            sh("link add c0 type veth peer name c0p");
            sh("link add s0 type veth peer name s0p");
            for l in ["c0", "c0p", "s0", "s0p"] {
                sh(&format!("link set {l} up"));
            }
            sh("addr add 198.18.0.1/24 dev c0");
            sh("addr add fd00:18::1/64 dev c0 nodad");
            sh("addr add 198.18.1.1/24 dev s0");
            sh("addr add fd00:19::1/64 dev s0 nodad");
            let client = CLIENT_MAC.map(|b| format!("{b:02x}")).join(":");
            let backend = BACKEND_MAC.map(|b| format!("{b:02x}")).join(":");
            sh(&format!(
                "neigh add 198.18.0.2 lladdr {client} dev c0 nud permanent"
            ));
            sh(&format!(
                "neigh add fd00:18::2 lladdr {client} dev c0 nud permanent"
            ));
            sh(&format!(
                "neigh add {BACKEND4} lladdr {backend} dev s0 nud permanent"
            ));
            sh(&format!(
                "neigh add {BACKEND4_SAME_LINK} lladdr {backend} dev c0 nud permanent"
            ));
            sh(&format!(
                "neigh add {BACKEND6} lladdr {backend} dev s0 nud permanent"
            ));
            // /proc/sys/net shows the namespace of the thread that opens it.
            sysctl("/proc/sys/net/ipv4/ip_forward");
            sysctl("/proc/sys/net/ipv6/conf/all/forwarding");

            let c0 = netlink::interface_by_name("c0").unwrap();
            let s0 = netlink::interface_by_name("s0").unwrap();
            let mut controller = Lb::load_on("c0", c0.mac);
            controller.maps_mut().add_tx_port(c0.index).unwrap();
            controller.maps_mut().add_tx_port(s0.index).unwrap();
            let cfg = Config::parse(config, "nat.toml").expect("valid config");
            controller
                .apply(&cfg, &mut FakeNeighbours::default())
                .unwrap();
            f(&mut Lab { controller, c0, s0 });
        });
    });
}

impl Lab {
    /// Runs `input` as if received on `ifindex`.
    fn run(&self, input: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
        self.controller.run_on(ifindex, input)
    }

    fn counter(&self, name: &str) -> u64 {
        self.controller.status().unwrap().conntrack[name]
    }
}

const CONFIG: &str = r#"interface = "c0"
server_interface = "s0"
[[vip]]
name = "web4"
address = "198.18.0.100"
port = 80
mode = "nat"
ring_size = 7
[[vip.backend]]
address = "198.18.1.11"
port = 8080
[[vip]]
name = "dns4"
address = "198.18.0.100"
port = 53
protocol = "udp"
mode = "nat"
ring_size = 7
[[vip.backend]]
address = "198.18.1.11"
port = 5353
[[vip]]
name = "web6"
address = "fd00:18::100"
port = 80
mode = "nat"
ring_size = 7
[[vip.backend]]
address = "fd00:19::11"
port = 8080
[[vip]]
name = "onearm"
address = "198.18.0.101"
port = 80
mode = "nat"
ring_size = 7
[[vip.backend]]
address = "198.18.0.21"
[[vip]]
name = "unresolved"
address = "198.18.0.102"
port = 80
mode = "nat"
ring_size = 7
[[vip.backend]]
address = "198.18.1.12"
"#;

fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, csum: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport);
    let mut f = Vec::new();
    b.write(&mut f, b"query").unwrap();
    if !csum {
        f[ETH + 20 + 6..ETH + 20 + 8].copy_from_slice(&[0, 0]);
    }
    f
}

fn tcp4_between(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 7, 1000)
        .ack(1);
    let mut f = Vec::new();
    b.write(&mut f, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    f
}

fn tcp6_between(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 7, 1000)
        .syn();
    let mut f = Vec::new();
    b.write(&mut f, b"hello").unwrap();
    f
}

/// Addresses, ports and MACs of a frame, with every checksum recomputed by
/// etherparse and compared to the one in the frame.
#[derive(Debug, PartialEq)]
struct Seen {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
}

fn inspect(frame: &[u8]) -> Seen {
    let p = SlicedPacket::from_ethernet(frame).expect("well-formed frame");
    let eth = p.link.as_ref().unwrap();
    let etherparse::LinkSlice::Ethernet2(eth) = eth else {
        panic!("not Ethernet II")
    };
    let (src, dst, payload_src);
    match p.net.as_ref().unwrap() {
        NetSlice::Ipv4(ip) => {
            let h = ip.header().to_header();
            assert_eq!(
                h.header_checksum,
                h.calc_header_checksum(),
                "IPv4 header checksum"
            );
            src = IpAddr::V4(h.source.into());
            dst = IpAddr::V4(h.destination.into());
            payload_src = Some((h, None));
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header().to_header();
            src = IpAddr::V6(h.source.into());
            dst = IpAddr::V6(h.destination.into());
            payload_src = Some((Default::default(), Some(h)));
        }
    }
    let (v4, v6) = payload_src.unwrap();
    let (sport, dport) = match p.transport.as_ref().unwrap() {
        TransportSlice::Tcp(t) => {
            let h = t.to_header();
            let want = match &v6 {
                None => h.calc_checksum_ipv4(&v4, t.payload()).unwrap(),
                Some(h6) => h.calc_checksum_ipv6(h6, t.payload()).unwrap(),
            };
            assert_eq!(h.checksum, want, "TCP checksum");
            (h.source_port, h.destination_port)
        }
        TransportSlice::Udp(u) => {
            let h = u.to_header();
            if h.checksum != 0 || v6.is_some() {
                let want = match &v6 {
                    None => h.calc_checksum_ipv4(&v4, u.payload()).unwrap(),
                    Some(h6) => h.calc_checksum_ipv6(h6, u.payload()).unwrap(),
                };
                assert_eq!(h.checksum, want, "UDP checksum");
            }
            (h.source_port, h.destination_port)
        }
        _ => panic!("not TCP/UDP"),
    };
    Seen {
        dst_mac: eth.destination(),
        src_mac: eth.source(),
        src,
        dst,
        sport,
        dport,
    }
}

#[test]
fn nat_ipv4_tcp_inbound_and_reply_two_armed() {
    in_lab("nat_ipv4_tcp_inbound_and_reply_two_armed", CONFIG, |lab| {
        let input = tcp4_between(CLIENT4, VIP4, 40000, 80);
        let (verdict, out) = lab.run(&input, lab.c0.index);
        assert_eq!(verdict, XDP_REDIRECT, "to the server-side NIC");
        assert_eq!(
            inspect(&out),
            Seen {
                dst_mac: BACKEND_MAC,
                src_mac: lab.s0.mac,
                src: CLIENT4.into(),
                dst: BACKEND4.into(),
                sport: 40000,
                dport: 8080,
            }
        );
        assert_eq!(
            &out[ETH + 20 + 20..],
            &input[ETH + 20 + 20..],
            "payload intact"
        );

        // The backend's reply comes back in on s0 and leaves as the VIP.
        let reply = tcp4_between(BACKEND4, CLIENT4, 8080, 40000);
        let (verdict, out) = lab.run(&reply, lab.s0.index);
        assert_eq!(verdict, XDP_REDIRECT, "to the client-side NIC");
        assert_eq!(
            inspect(&out),
            Seen {
                dst_mac: CLIENT_MAC,
                src_mac: lab.c0.mac,
                src: VIP4.into(),
                dst: CLIENT4.into(),
                sport: 80,
                dport: 40000,
            }
        );
        assert_eq!(lab.counter("nat_reply"), 1);
    });
}

#[test]
fn nat_ipv4_udp_keeps_a_zero_checksum_and_fixes_a_real_one() {
    in_lab(
        "nat_ipv4_udp_keeps_a_zero_checksum_and_fixes_a_real_one",
        CONFIG,
        |lab| {
            for csum in [true, false] {
                let sport = if csum { 5000 } else { 5001 };
                let input = udp4(CLIENT4, VIP4, sport, 53, csum);
                let (verdict, out) = lab.run(&input, lab.c0.index);
                assert_eq!(verdict, XDP_REDIRECT);
                let seen = inspect(&out);
                assert_eq!((seen.dst, seen.dport), (BACKEND4.into(), 5353));
                let udp_csum = &out[ETH + 20 + 6..ETH + 20 + 8];
                assert_eq!(
                    udp_csum == [0, 0],
                    !csum,
                    "zero stays zero, real stays real"
                );

                let reply = udp4(BACKEND4, CLIENT4, 5353, sport, csum);
                let (verdict, out) = lab.run(&reply, lab.s0.index);
                assert_eq!(verdict, XDP_REDIRECT);
                let seen = inspect(&out);
                assert_eq!((seen.src, seen.sport), (VIP4.into(), 53));
                assert_eq!((seen.dst, seen.dport), (CLIENT4.into(), sport));
                let udp_csum = &out[ETH + 20 + 6..ETH + 20 + 8];
                assert_eq!(
                    udp_csum == [0, 0],
                    !csum,
                    "reply: zero stays zero, real stays real"
                );
            }
        },
    );
}

#[test]
fn nat_ipv6_tcp_inbound_and_reply() {
    in_lab("nat_ipv6_tcp_inbound_and_reply", CONFIG, |lab| {
        let input = tcp6_between(CLIENT6, VIP6, 40000, 80);
        let (verdict, out) = lab.run(&input, lab.c0.index);
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eq!(
            inspect(&out),
            Seen {
                dst_mac: BACKEND_MAC,
                src_mac: lab.s0.mac,
                src: CLIENT6.into(),
                dst: BACKEND6.into(),
                sport: 40000,
                dport: 8080,
            }
        );
        let reply = tcp6_between(BACKEND6, CLIENT6, 8080, 40000);
        let (verdict, out) = lab.run(&reply, lab.s0.index);
        assert_eq!(verdict, XDP_REDIRECT);
        let seen = inspect(&out);
        assert_eq!(
            (seen.src, seen.sport, seen.dst),
            (VIP6.into(), 80, CLIENT6.into())
        );
    });
}

#[test]
fn nat_one_armed_goes_back_out_of_the_same_nic() {
    in_lab(
        "nat_one_armed_goes_back_out_of_the_same_nic",
        CONFIG,
        |lab| {
            let vip = Ipv4Addr::new(198, 18, 0, 101);
            let (verdict, out) = lab.run(&tcp4_between(CLIENT4, vip, 40000, 80), lab.c0.index);
            assert_eq!(verdict, XDP_TX);
            let seen = inspect(&out);
            assert_eq!(
                (seen.dst, seen.dport, seen.src_mac),
                (BACKEND4_SAME_LINK.into(), 80, lab.c0.mac)
            );
            let reply = tcp4_between(BACKEND4_SAME_LINK, CLIENT4, 80, 40000);
            let (verdict, out) = lab.run(&reply, lab.c0.index);
            assert_eq!(verdict, XDP_TX);
            assert_eq!(inspect(&out).src, IpAddr::from(vip));
        },
    );
}

#[test]
fn reply_without_a_flow_and_unknown_next_hop_go_to_the_kernel() {
    in_lab(
        "reply_without_a_flow_and_unknown_next_hop_go_to_the_kernel",
        CONFIG,
        |lab| {
            // A packet from a backend that matches no NAT flow: untouched.
            let stray = tcp4_between(BACKEND4, CLIENT4, 8080, 41234);
            let (verdict, out) = lab.run(&stray, lab.s0.index);
            assert_eq!(verdict, XDP_PASS);
            assert_eq!(out, stray);
            // Next hop not in the neighbour table: rewritten, then passed to the
            // kernel, which resolves it and forwards (never dropped silently).
            let vip = Ipv4Addr::new(198, 18, 0, 102);
            let (verdict, out) = lab.run(&tcp4_between(CLIENT4, vip, 40000, 80), lab.c0.index);
            assert_eq!(verdict, XDP_PASS);
            assert_eq!(inspect(&out).dst, IpAddr::from(BACKEND4_NO_NEIGH));
            assert_eq!(lab.counter("nat_no_neigh"), 1);
            // Both packets went to the kernel: counted as passed, once each,
            // and never also as forwarded.
            let global = lab.controller.status().unwrap().global;
            assert_eq!((global["pass"], global["forward"]), (2, 0), "{global:?}");
            assert_eq!(
                global["rx"],
                global["pass"] + global["forward"] + global["drop"]
            );
        },
    );
}

#[test]
fn nat_flow_keeps_its_backend_and_reverse_entry_is_recorded() {
    in_lab(
        "nat_flow_keeps_its_backend_and_reverse_entry_is_recorded",
        CONFIG,
        |lab| {
            lab.run(&tcp4_between(CLIENT4, VIP4, 42000, 80), lab.c0.index);
            let reply_key = key4(BACKEND4, CLIENT4, 8080, 42000, 6);
            let vip = lab
                .controller
                .maps()
                .nat_reverse(&reply_key)
                .unwrap()
                .expect("reverse entry");
            assert_eq!(&vip.addr[..4], &VIP4.octets());
            assert_eq!(u16::from_be(vip.port), 80);
            let flow = lab
                .controller
                .maps()
                .flow(&key4(CLIENT4, VIP4, 42000, 80, 6))
                .unwrap();
            assert!(flow.is_some(), "forward entry");
        },
    );
}

#[test]
fn nat_frag_needed_is_translated_for_the_backend() {
    in_lab(
        "nat_frag_needed_is_translated_for_the_backend",
        CONFIG,
        |lab| {
            lab.run(&tcp4_between(CLIENT4, VIP4, 43000, 80), lab.c0.index);
            let input = frag_needed4(VIP4, CLIENT4, 80, 43000);
            let (verdict, out) = lab.run(&input, lab.c0.index);
            assert_eq!(verdict, XDP_REDIRECT);
            let ip = &out[ETH..ETH + 20];
            assert!(checksum_ok(ip), "outer IPv4 checksum");
            assert_eq!(&ip[16..20], &BACKEND4.octets(), "outer destination");
            let icmp = &out[ETH + 20..];
            assert!(checksum_ok(icmp), "ICMP checksum");
            let quoted = &icmp[8..28];
            assert!(checksum_ok(quoted), "quoted IPv4 checksum");
            assert_eq!(&quoted[12..16], &BACKEND4.octets(), "quoted source");
            assert_eq!(&quoted[16..20], &CLIENT4.octets(), "quoted destination");
            assert_eq!(
                u16::from_be_bytes([icmp[28], icmp[29]]),
                8080,
                "quoted port"
            );
            assert_eq!(&out[..6], &BACKEND_MAC);
        },
    );
}

#[test]
fn nat_packet_too_big_is_translated_for_the_backend() {
    in_lab(
        "nat_packet_too_big_is_translated_for_the_backend",
        CONFIG,
        |lab| {
            lab.run(&tcp6_between(CLIENT6, VIP6, 43001, 80), lab.c0.index);
            let input = packet_too_big6(VIP6, CLIENT6, L4::Tcp, 80, 43001);
            let (verdict, out) = lab.run(&input, lab.c0.index);
            assert_eq!(verdict, XDP_REDIRECT);
            let ip = &out[ETH..ETH + 40];
            assert_eq!(&ip[24..40], &BACKEND6.octets(), "outer destination");
            let icmp = &out[ETH + 40..];
            let mut summed = ipv6_pseudo(&ip[8..24], &ip[24..40], icmp.len(), 58);
            summed.extend_from_slice(icmp);
            assert!(checksum_ok(&summed), "ICMPv6 checksum");
            assert_eq!(&icmp[8 + 8..8 + 24], &BACKEND6.octets(), "quoted source");
            assert_eq!(
                u16::from_be_bytes([icmp[48], icmp[49]]),
                8080,
                "quoted port"
            );
        },
    );
}
