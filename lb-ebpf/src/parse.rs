//! Header parsing: Ethernet (one 802.1Q tag), IPv4 (with options), IPv6
//! (fixed header), TCP and UDP. Every read is bounds-checked against
//! `data_end` so the verifier can prove it.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    FAMILY_V4, FAMILY_V6, FlowKey, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, drop,
};

const ETH_HLEN: usize = 14;
const ETH_TYPE_OFF: usize = 12;
const VLAN_HLEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

const IPV4_MIN_HLEN: usize = 20;
const IPV4_PROTO_OFF: usize = 9;
const IPV4_FRAG_OFF: usize = 6;
/// More-fragments flag and fragment offset; DF (0x4000) is allowed.
const IPV4_FRAG_MASK: u16 = 0x3FFF;
const IPV4_SRC_OFF: usize = 12;
const IPV4_DST_OFF: usize = 16;

const IPV6_HLEN: usize = 40;
const IPV6_NEXT_OFF: usize = 6;
const IPV6_SRC_OFF: usize = 8;
const IPV6_DST_OFF: usize = 24;

const TCP_MIN_HLEN: usize = 20;
const TCP_DOFF_OFF: usize = 12;
const TCP_FLAGS_OFF: usize = 13;
const UDP_HLEN: usize = 8;

/// What the parser found.
pub enum Parsed {
    /// Not something xlb balances: hand it to the kernel untouched.
    Pass,
    /// Malformed IP header: the destination itself cannot be trusted.
    Drop(u32),
    /// An IPv4 fragment or truncated L4 header: dropped if it is addressed to
    /// a VIP address, passed otherwise.
    DropIfVip(u32, Flow),
    /// A TCP or UDP packet with its 5-tuple.
    Flow(Flow),
    /// An ICMP "fragmentation needed" / "packet too big" whose quoted
    /// header is TCP or UDP: `key` is the 5-tuple of the client's flow
    /// that the quoted (VIP → client) packet belongs to.
    IcmpError(Flow),
    /// An ARP request or IPv6 neighbour solicitation: who has `target`?
    /// (IPv4: word 0 only.)
    NeighbourQuery { target: [u32; 4], family: u8 },
}

pub struct Flow {
    pub key: FlowKey,
    pub family: u8,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
    /// Offsets of the IP and TCP/UDP (or ICMP) headers (for rewrites).
    pub l3: usize,
    pub l4: usize,
}

const ICMP_HLEN: usize = 8;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// A quoted IPv4 header without options (options there are not followed).
const IPV4_NO_OPTIONS: u8 = 0x45;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;

/// Pointer to a `T` at `offset` bytes into the packet, if it fits.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    // SAFETY: `ptr_at` checked that the whole `T` lies inside the packet;
    // packet data has no alignment guarantee, hence `read_unaligned`.
    ptr_at::<T>(ctx, offset).map(|p| unsafe { p.read_unaligned() })
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Parsed {
    let Some(mut proto) = read::<u16>(ctx, ETH_TYPE_OFF).map(u16::from_be) else {
        return Parsed::Pass;
    };
    let mut l3 = ETH_HLEN;
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        let Some(inner) = read::<u16>(ctx, ETH_TYPE_OFF + VLAN_HLEN).map(u16::from_be) else {
            return Parsed::Pass;
        };
        proto = inner;
        l3 += VLAN_HLEN;
    }
    match proto {
        ETH_P_IP => parse_ipv4(ctx, l3),
        ETH_P_IPV6 => parse_ipv6(ctx, l3),
        ETH_P_ARP => parse_arp(ctx, l3),
        _ => Parsed::Pass,
    }
}

const ARP_LEN: usize = 28;
const ARP_OP_REQUEST: u16 = 1;
const ARP_TPA_OFF: usize = 24;

/// An Ethernet/IPv4 ARP request; anything else ARP is the kernel's.
#[inline(always)]
fn parse_arp(ctx: &XdpContext, l3: usize) -> Parsed {
    let Some(a) = read::<[u8; ARP_LEN]>(ctx, l3) else {
        return Parsed::Pass;
    };
    // htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4, op request.
    if a[..6] != [0, 1, 0x08, 0x00, 6, 4] || u16::from_be_bytes([a[6], a[7]]) != ARP_OP_REQUEST {
        return Parsed::Pass;
    }
    Parsed::NeighbourQuery {
        target: [word(&a, ARP_TPA_OFF), 0, 0, 0],
        family: FAMILY_V4,
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l3: usize) -> Parsed {
    // One checked copy of the fixed header: every field comes from it.
    let Some(h) = read::<[u8; IPV4_MIN_HLEN]>(ctx, l3) else {
        return Parsed::Drop(drop::IPV4_TRUNCATED);
    };
    let ver_ihl = h[0];
    if ver_ihl >> 4 != 4 || ver_ihl & 0x0F < 5 {
        return Parsed::Drop(drop::IPV4_BAD_HEADER);
    }
    let hlen = ((ver_ihl & 0x0F) as usize) * 4;
    // Options included, the whole header must be there.
    if ctx.data() + l3 + hlen > ctx.data_end() {
        return Parsed::Drop(drop::IPV4_TRUNCATED);
    }
    let l4proto = h[IPV4_PROTO_OFF];
    if l4proto == IPPROTO_ICMP {
        if u16::from_be_bytes([h[IPV4_FRAG_OFF], h[IPV4_FRAG_OFF + 1]]) & IPV4_FRAG_MASK != 0 {
            return Parsed::Pass;
        }
        return parse_icmp4(ctx, l3, l3 + hlen);
    }
    if l4proto != IPPROTO_TCP && l4proto != IPPROTO_UDP {
        return Parsed::Pass;
    }
    let frag = u16::from_be_bytes([h[IPV4_FRAG_OFF], h[IPV4_FRAG_OFF + 1]]);
    let mut flow = Flow {
        key: FlowKey {
            src: [word(&h, IPV4_SRC_OFF), 0, 0, 0],
            dst: [word(&h, IPV4_DST_OFF), 0, 0, 0],
            proto: l4proto,
            ..FlowKey::default()
        },
        family: FAMILY_V4,
        tcp_flags: 0,
        l3,
        l4: l3 + hlen,
    };
    if frag & IPV4_FRAG_MASK != 0 {
        return Parsed::DropIfVip(drop::FRAGMENT, flow);
    }
    match parse_ports(ctx, l3 + hlen, l4proto) {
        Some((sport, dport, tcp_flags)) => {
            flow.key.sport = sport;
            flow.key.dport = dport;
            flow.tcp_flags = tcp_flags;
            Parsed::Flow(flow)
        }
        None => Parsed::DropIfVip(drop::L4_TRUNCATED, flow),
    }
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, l3: usize) -> Parsed {
    if ptr_at::<[u8; IPV6_HLEN]>(ctx, l3).is_none() {
        return Parsed::Drop(drop::IPV6_TRUNCATED);
    }
    let (Some(version), Some(next), Some(src), Some(dst)) = (
        read::<u8>(ctx, l3),
        read::<u8>(ctx, l3 + IPV6_NEXT_OFF),
        read::<[u32; 4]>(ctx, l3 + IPV6_SRC_OFF),
        read::<[u32; 4]>(ctx, l3 + IPV6_DST_OFF),
    ) else {
        return Parsed::Drop(drop::IPV6_TRUNCATED);
    };
    if version >> 4 != 6 {
        return Parsed::Pass;
    }
    if next == IPPROTO_ICMPV6 {
        return parse_icmp6(ctx, l3, l3 + IPV6_HLEN);
    }
    // Extension headers are left to the kernel.
    if next != IPPROTO_TCP && next != IPPROTO_UDP {
        return Parsed::Pass;
    }
    let mut flow = Flow {
        key: FlowKey {
            src,
            dst,
            proto: next,
            ..FlowKey::default()
        },
        family: FAMILY_V6,
        tcp_flags: 0,
        l3,
        l4: l3 + IPV6_HLEN,
    };
    match parse_ports(ctx, l3 + IPV6_HLEN, next) {
        Some((sport, dport, tcp_flags)) => {
            flow.key.sport = sport;
            flow.key.dport = dport;
            flow.tcp_flags = tcp_flags;
            Parsed::Flow(flow)
        }
        None => Parsed::DropIfVip(drop::L4_TRUNCATED, flow),
    }
}

/// Source and destination port (network byte order) and TCP flags of a
/// complete TCP or UDP header at `l4`. Each header is copied out through one checked
/// pointer: after a variable IPv4 header length the verifier only trusts
/// loads through the very pointer it saw bounds-checked.
#[inline(always)]
fn parse_ports(ctx: &XdpContext, l4: usize, proto: u8) -> Option<(u16, u16, u8)> {
    let (ports, flags) = if proto == IPPROTO_TCP {
        let h = read::<[u8; TCP_MIN_HLEN]>(ctx, l4)?;
        let hlen = ((h[TCP_DOFF_OFF] >> 4) as usize) * 4;
        if hlen < TCP_MIN_HLEN || ctx.data() + l4 + hlen > ctx.data_end() {
            return None;
        }
        ([h[0], h[1], h[2], h[3]], h[TCP_FLAGS_OFF])
    } else {
        let h = read::<[u8; UDP_HLEN]>(ctx, l4)?;
        ([h[0], h[1], h[2], h[3]], 0)
    };
    Some((
        u16::from_ne_bytes([ports[0], ports[1]]),
        u16::from_ne_bytes([ports[2], ports[3]]),
        flags,
    ))
}

#[inline(always)]
fn word(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// The flow an ICMP error quoting `src:sport → dst:dport` belongs to: the
/// quoted packet went from the VIP to the client, so the client's flow is
/// its reverse.
#[inline(always)]
fn quoted_flow(
    q_src: [u32; 4],
    q_dst: [u32; 4],
    ports: &[u8],
    proto: u8,
    family: u8,
    l3: usize,
    l4: usize,
) -> Parsed {
    Parsed::IcmpError(Flow {
        key: FlowKey {
            src: q_dst,
            dst: q_src,
            sport: u16::from_ne_bytes([ports[2], ports[3]]),
            dport: u16::from_ne_bytes([ports[0], ports[1]]),
            proto,
            _pad: [0; 3],
        },
        family,
        tcp_flags: 0,
        l3,
        l4,
    })
}

/// ICMP: only "fragmentation needed" quoting an option-less IPv4 TCP/UDP
/// header is steered; every other ICMP message goes to the kernel.
#[inline(always)]
fn parse_icmp4(ctx: &XdpContext, l3: usize, l4: usize) -> Parsed {
    // ICMP header, quoted IPv4 header, quoted ports: one checked copy.
    let Some(h) = read::<[u8; ICMP_HLEN + IPV4_MIN_HLEN + 4]>(ctx, l4) else {
        return Parsed::Pass;
    };
    let q = ICMP_HLEN;
    let proto = h[q + IPV4_PROTO_OFF];
    if h[0] != ICMP_DEST_UNREACH
        || h[1] != ICMP_FRAG_NEEDED
        || h[q] != IPV4_NO_OPTIONS
        || (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
    {
        return Parsed::Pass;
    }
    quoted_flow(
        [word(&h, q + IPV4_SRC_OFF), 0, 0, 0],
        [word(&h, q + IPV4_DST_OFF), 0, 0, 0],
        &h[q + IPV4_MIN_HLEN..],
        proto,
        FAMILY_V4,
        l3,
        l4,
    )
}

const ICMPV6_NEIGHBOUR_SOLICIT: u8 = 135;
/// Type, code, checksum, reserved, target address.
const ND_NS_LEN: usize = 24;
const ND_TARGET_OFF: usize = 8;

/// ICMPv6: "packet too big" quoting a TCP/UDP header right after the fixed
/// IPv6 header is steered, neighbour solicitations are reported; the rest
/// is the kernel's.
#[inline(always)]
fn parse_icmp6(ctx: &XdpContext, l3: usize, l4: usize) -> Parsed {
    if let Some(ns) = read::<[u8; ND_NS_LEN]>(ctx, l4)
        && ns[0] == ICMPV6_NEIGHBOUR_SOLICIT
    {
        let t = ND_TARGET_OFF;
        return Parsed::NeighbourQuery {
            target: [
                word(&ns, t),
                word(&ns, t + 4),
                word(&ns, t + 8),
                word(&ns, t + 12),
            ],
            family: FAMILY_V6,
        };
    }
    let Some(h) = read::<[u8; ICMP_HLEN + IPV6_HLEN + 4]>(ctx, l4) else {
        return Parsed::Pass;
    };
    let q = ICMP_HLEN;
    let proto = h[q + IPV6_NEXT_OFF];
    if h[0] != ICMPV6_PACKET_TOO_BIG
        || h[q] >> 4 != 6
        || (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
    {
        return Parsed::Pass;
    }
    let addr = |off: usize| {
        [
            word(&h, off),
            word(&h, off + 4),
            word(&h, off + 8),
            word(&h, off + 12),
        ]
    };
    quoted_flow(
        addr(q + IPV6_SRC_OFF),
        addr(q + IPV6_DST_OFF),
        &h[q + IPV6_HLEN..],
        proto,
        FAMILY_V6,
        l3,
        l4,
    )
}
