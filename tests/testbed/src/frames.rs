//! Frame builders shared by the data-plane tests.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::PacketBuilder;
use lb_common::FlowKey;

pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 2);
pub const ETH: usize = 14;

pub fn words4(a: Ipv4Addr) -> [u32; 4] {
    [u32::from_ne_bytes(a.octets()), 0, 0, 0]
}

pub fn words6(a: Ipv6Addr) -> [u32; 4] {
    let o = a.octets();
    std::array::from_fn(|i| u32::from_ne_bytes(o[i * 4..i * 4 + 4].try_into().unwrap()))
}

pub fn key4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey {
        src: words4(src),
        dst: words4(dst),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto,
        _pad: [0; 3],
    }
}

/// A TCP segment with the given flags (`"S"`, `"A"`, `"FA"`, `"R"`).
pub fn tcp4_flags(dst: Ipv4Addr, sport: u16, dport: u16, flags: &str) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT4.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 64240);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(1),
            'F' => b.fin(),
            'R' => b.rst(),
            _ => panic!("unknown TCP flag {f}"),
        };
    }
    let mut buf = Vec::new();
    b.write(&mut buf, b"data").unwrap();
    buf
}

pub fn tcp4(dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT4.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 64240)
        .syn();
    let payload = b"GET / HTTP/1.1\r\n\r\n";
    let mut buf = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut buf, payload).unwrap();
    buf
}

pub fn udp6(dst: Ipv6Addr, sport: u16, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(CLIENT6.octets(), dst.octets(), 64)
        .udp(sport, dport);
    let payload = b"\x12\x34 a DNS-ish query";
    let mut buf = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut buf, payload).unwrap();
    buf
}

/// Inserts 4 bytes of IPv4 options (NOP NOP NOP EOL), fixing IHL, total
/// length and the header checksum.
pub fn with_ipv4_options(frame: &[u8]) -> Vec<u8> {
    let mut out = frame[..ETH + 20].to_vec();
    out.extend_from_slice(&[1, 1, 1, 0]);
    out.extend_from_slice(&frame[ETH + 20..]);
    out[ETH] = 0x46;
    let total = u16::from_be_bytes([out[ETH + 2], out[ETH + 3]]) + 4;
    out[ETH + 2..ETH + 4].copy_from_slice(&total.to_be_bytes());
    out[ETH + 10..ETH + 12].copy_from_slice(&[0, 0]);
    let sum = ipv4_checksum(&out[ETH..ETH + 24]);
    out[ETH + 10..ETH + 12].copy_from_slice(&sum.to_be_bytes());
    out
}

pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether `data` (with its checksum field in place) sums to all ones in
/// one's complement: the independent check of any Internet checksum.
pub fn checksum_ok(data: &[u8]) -> bool {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

/// IPv6 pseudo-header for upper-layer checksums (RFC 8200 8.1).
pub fn ipv6_pseudo(src: &[u8], dst: &[u8], len: usize, next: u8) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(src);
    p.extend_from_slice(dst);
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, next]);
    p
}

pub const ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0xfe);

/// What a router sends back when the VIP's packet `from → to` (TCP) was
/// too big: an ICMP "fragmentation needed" to the VIP quoting the IPv4
/// header and the first 8 bytes of TCP.
pub fn frag_needed4(from: Ipv4Addr, to: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut quoted = Vec::new();
    PacketBuilder::ipv4(from.octets(), to.octets(), 64)
        .tcp(sport, dport, 1, 1000)
        .ack(1)
        .write(&mut quoted, &[0u8; 1400])
        .unwrap();
    quoted.truncate(28);
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(ROUTER4.octets(), from.octets(), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ))
        .write(&mut f, &quoted)
        .unwrap();
    f
}

/// IPv6 "packet too big" for the VIP's UDP or TCP packet `from → to`.
pub fn packet_too_big6(from: Ipv6Addr, to: Ipv6Addr, sport: u16, dport: u16, tcp: bool) -> Vec<u8> {
    let mut quoted = Vec::new();
    let ip = PacketBuilder::ipv6(from.octets(), to.octets(), 64);
    if tcp {
        ip.tcp(sport, dport, 1, 1000)
            .ack(1)
            .write(&mut quoted, &[0u8; 1400])
            .unwrap();
    } else {
        ip.udp(sport, dport)
            .write(&mut quoted, &[0u8; 1400])
            .unwrap();
    }
    quoted.truncate(48);
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(ROUTER6.octets(), from.octets(), 64)
        .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
        .write(&mut f, &quoted)
        .unwrap();
    f
}

/// Runs `input` through `prog` with BPF_PROG_TEST_RUN, as if received on
/// interface `ifindex` (`None`: the kernel's default, loopback). Returns
/// the verdict and the output frame.
pub fn run_xdp(prog: &aya::programs::Xdp, input: &[u8], ifindex: Option<u32>) -> (u32, Vec<u8>) {
    use aya::programs::{TestRun as _, TestRunOptions};
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex.
    let ctx: Option<Vec<u8>> = ifindex.map(|i| {
        [0, input.len() as u32, 0, i, 0, 0]
            .iter()
            .flat_map(|w: &u32| w.to_ne_bytes())
            .collect()
    });
    let mut out = vec![0u8; input.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            ctx_in: ctx.as_deref(),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}
