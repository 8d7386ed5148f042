//! NAT mode: rewrite addresses and ports with incrementally updated
//! checksums (RFC 1624), and find the next hop with the kernel's FIB.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{bpf_fib_lookup as FibParams, xdp_action},
    helpers::bpf_fib_lookup,
    programs::XdpContext,
};
use lb_common::{
    FAMILY_V4, FlowKey, IPPROTO_TCP, IPPROTO_UDP, VipKey, bytes_to_words, ct, nat_stat,
    words_to_bytes,
};

use crate::{
    forward,
    maps::{NAT_REVERSE, NAT_SCRATCH, TX_PORTS},
    parse::{Flow, ptr_at},
    stats,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const FIB_SUCCESS: i64 = 0;
const FIB_NO_NEIGH: i64 = 7;

/// 16-bit words of an IPv4 header (20 bytes) and where its fields are.
const V4_WORDS: usize = 10;
const V4_CSUM: usize = 5;
const V4_TOT_LEN: usize = 1;
const V4_SRC: usize = 6;
const V4_DST: usize = 8;
/// 16-bit words of the IPv6 fixed header.
const V6_WORDS: usize = 20;
const V6_PAYLOAD_LEN: usize = 2;
const V6_SRC: usize = 4;
const V6_DST: usize = 12;
const TCP_WORDS: usize = 10;
const TCP_CSUM: usize = 8;
const UDP_WORDS: usize = 4;
const UDP_CSUM: usize = 3;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
}

/// One's-complement update of a checksum for one 16-bit word changing.
/// Words are in wire order read as native integers: the one's-complement
/// sum does not care about byte order as long as it is consistent.
#[inline(always)]
fn csum_update(check: u16, old: u16, new: u16) -> u16 {
    let mut sum = (!check) as u32 + (!old) as u32 + new as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[inline(always)]
fn words_of(addr: &[u32; 4]) -> [u16; 8] {
    let mut w = [0u16; 8];
    let mut i = 0;
    while i < 4 {
        let b = addr[i].to_ne_bytes();
        w[2 * i] = u16::from_ne_bytes([b[0], b[1]]);
        w[2 * i + 1] = u16::from_ne_bytes([b[2], b[3]]);
        i += 1;
    }
    w
}

/// Rewrites `side`'s address in the IP header (IPv4: and its checksum;
/// IPv6 has none).
#[inline(always)]
fn rewrite_l3(ctx: &XdpContext, flow: &Flow, side: Side, new_w: &[u16; 8]) -> Option<()> {
    if flow.family == FAMILY_V4 {
        let p = ptr_at::<[u16; V4_WORDS]>(ctx, flow.l3)? as *mut [u16; V4_WORDS];
        // SAFETY: `ptr_at` bounds-checked the whole header; XDP packet
        // data is writable and the copy is unaligned-safe.
        let mut h = unsafe { p.read_unaligned() };
        let at = if side == Side::Src { V4_SRC } else { V4_DST };
        let mut csum = h[V4_CSUM];
        for i in 0..2 {
            csum = csum_update(csum, h[at + i], new_w[i]);
            h[at + i] = new_w[i];
        }
        h[V4_CSUM] = csum;
        // SAFETY: as above.
        unsafe { p.write_unaligned(h) };
    } else {
        let p = ptr_at::<[u16; V6_WORDS]>(ctx, flow.l3)? as *mut [u16; V6_WORDS];
        // SAFETY: as above.
        let mut h = unsafe { p.read_unaligned() };
        let at = if side == Side::Src { V6_SRC } else { V6_DST };
        h[at..at + 8].copy_from_slice(new_w);
        // SAFETY: as above.
        unsafe { p.write_unaligned(h) };
    }
    Some(())
}

/// Rewrites `side`'s address and (if `port != 0`) port of the packet.
/// `new_addr` is in the same word form as `FlowKey` addresses. Returns
/// the updated flow key, or `None` if a header is out of reach.
#[inline(always)]
pub fn rewrite(
    ctx: &XdpContext,
    flow: &Flow,
    side: Side,
    new_addr: &[u32; 4],
    port: u16,
) -> Option<FlowKey> {
    let mut key = flow.key;
    let (old_addr, old_port) = match side {
        Side::Src => (key.src, key.sport),
        Side::Dst => (key.dst, key.dport),
    };
    let new_port = if port == 0 { old_port } else { port };
    let old_w = words_of(&old_addr);
    let new_w = words_of(new_addr);
    let naddr_words = if flow.family == FAMILY_V4 { 2 } else { 8 };

    rewrite_l3(ctx, flow, side, &new_w)?;

    // L4: ports, and the checksum over ports and the pseudo-header addresses.
    let port_word = if side == Side::Src { 0 } else { 1 };
    if flow.key.proto == IPPROTO_TCP {
        let p = ptr_at::<[u16; TCP_WORDS]>(ctx, flow.l4)? as *mut [u16; TCP_WORDS];
        // SAFETY: as above.
        let mut h = unsafe { p.read_unaligned() };
        let mut csum = h[TCP_CSUM];
        for i in 0..naddr_words {
            csum = csum_update(csum, old_w[i], new_w[i]);
        }
        csum = csum_update(csum, h[port_word], new_port);
        h[port_word] = new_port;
        h[TCP_CSUM] = csum;
        // SAFETY: as above.
        unsafe { p.write_unaligned(h) };
    } else if flow.key.proto == IPPROTO_UDP {
        let p = ptr_at::<[u16; UDP_WORDS]>(ctx, flow.l4)? as *mut [u16; UDP_WORDS];
        // SAFETY: as above.
        let mut h = unsafe { p.read_unaligned() };
        // An IPv4 UDP checksum of 0 means "none" and stays so.
        if h[UDP_CSUM] != 0 || flow.family != FAMILY_V4 {
            let mut csum = h[UDP_CSUM];
            for i in 0..naddr_words {
                csum = csum_update(csum, old_w[i], new_w[i]);
            }
            csum = csum_update(csum, h[port_word], new_port);
            // 0 would read as "no checksum": UDP sends all ones instead.
            h[UDP_CSUM] = if csum == 0 { 0xffff } else { csum };
        }
        h[port_word] = new_port;
        // SAFETY: as above.
        unsafe { p.write_unaligned(h) };
    }

    match side {
        Side::Src => {
            key.src = *new_addr;
            key.sport = new_port;
        }
        Side::Dst => {
            key.dst = *new_addr;
            key.dport = new_port;
        }
    }
    Some(key)
}

/// ICMP "fragmentation needed" / "packet too big" for a NAT flow: the
/// outer destination (the VIP) and the quoted source (VIP:port, what the
/// client saw) become the backend's, so that the backend's stack finds
/// its own connection. Quoted TCP/UDP checksums are left alone (they are
/// often cut off, and stacks do not check them in ICMP quotes).
#[inline(always)]
pub fn icmp_to_backend(
    ctx: &XdpContext,
    flow: &Flow,
    new_addr: &[u32; 4],
    port: u16,
) -> Option<FlowKey> {
    let new_w = words_of(new_addr);
    let new_port = if port == 0 { flow.key.dport } else { port };
    if flow.family == FAMILY_V4 {
        rewrite_l3(ctx, flow, Side::Dst, &new_w)?;
        // ICMP header (4 words), quoted IPv4 header (10), quoted ports (2).
        const Q: usize = 4;
        let p = ptr_at::<[u16; 16]>(ctx, flow.l4)? as *mut [u16; 16];
        // SAFETY: bounds-checked pointer into the packet, as in `rewrite_l3`.
        let mut h = unsafe { p.read_unaligned() };
        let (mut icmp, mut quoted) = (h[1], h[Q + V4_CSUM]);
        for i in 0..2 {
            quoted = csum_update(quoted, h[Q + V4_SRC + i], new_w[i]);
            icmp = csum_update(icmp, h[Q + V4_SRC + i], new_w[i]);
            h[Q + V4_SRC + i] = new_w[i];
        }
        icmp = csum_update(icmp, h[Q + V4_CSUM], quoted);
        h[Q + V4_CSUM] = quoted;
        icmp = csum_update(icmp, h[Q + V4_WORDS], new_port);
        h[Q + V4_WORDS] = new_port;
        h[1] = icmp;
        // SAFETY: as above.
        unsafe { p.write_unaligned(h) };
    } else {
        // The outer destination (the fixed header's last 8 words; the
        // ICMPv6 header follows it), the ICMPv6 header (4), the quoted
        // IPv6 header (20), the quoted ports (2): one copy. The ICMPv6
        // checksum covers the outer destination, as it was, whether or
        // not it was the quoted source.
        const D: usize = 8;
        const Q: usize = D + 4;
        let p = ptr_at::<[u16; Q + 22]>(ctx, flow.l3 + V6_DST * 2)? as *mut [u16; Q + 22];
        // SAFETY: as above.
        let mut h = unsafe { p.read_unaligned() };
        let mut icmp = h[D + 1];
        for i in 0..8 {
            icmp = csum_update(icmp, h[i], new_w[i]);
            h[i] = new_w[i];
            icmp = csum_update(icmp, h[Q + V6_SRC + i], new_w[i]);
            h[Q + V6_SRC + i] = new_w[i];
        }
        icmp = csum_update(icmp, h[Q + V6_WORDS], new_port);
        h[Q + V6_WORDS] = new_port;
        h[D + 1] = icmp;
        // SAFETY: as above.
        unsafe { p.write_unaligned(h) };
    }
    let mut key = flow.key;
    key.dst = *new_addr;
    key.dport = new_port;
    Some(key)
}

/// Sends the (rewritten) packet towards `key.dst` by the kernel's routes
/// and neighbours: XDP_TX out of the same NIC, XDP_REDIRECT to another
/// NIC of `TX_PORTS`, or the kernel itself when the neighbour is not
/// resolved yet. The kernel forwards a translated request (resolving the
/// backend's neighbour), but drops a translated reply, whose source is a
/// local address (the VIP): with `LB_F_SYNC` the control plane is asked
/// to resolve the next hop (`conntrack::want_neighbour`), and the
/// client's retransmission goes through.
#[inline(always)]
pub fn forward(ctx: &XdpContext, flow: &Flow, key: &FlowKey) -> u32 {
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.l4_protocol = key.proto;
    p.sport = key.sport;
    p.dport = key.dport;
    p.ifindex = ctx.ingress_ifindex() as u32;
    if flow.family == FAMILY_V4 {
        p.family = AF_INET;
        let Some(h) = ptr_at::<[u16; V4_WORDS]>(ctx, flow.l3) else {
            return xdp_action::XDP_PASS;
        };
        // SAFETY: bounds-checked pointer into the packet.
        p.__bindgen_anon_1.tot_len = u16::from_be(unsafe { (*h)[V4_TOT_LEN] });
        p.__bindgen_anon_3.ipv4_src = key.src[0];
        p.__bindgen_anon_4.ipv4_dst = key.dst[0];
    } else {
        p.family = AF_INET6;
        let Some(h) = ptr_at::<[u16; V6_WORDS]>(ctx, flow.l3) else {
            return xdp_action::XDP_PASS;
        };
        // SAFETY: bounds-checked pointer into the packet.
        p.__bindgen_anon_1.tot_len =
            u16::from_be(unsafe { (*h)[V6_PAYLOAD_LEN] }).saturating_add(40);
        p.__bindgen_anon_3.ipv6_src = key.src;
        p.__bindgen_anon_4.ipv6_dst = key.dst;
    }
    // SAFETY: the helper reads and writes only `p`, whose size we pass.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            &mut p,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    if rc != FIB_SUCCESS {
        if rc == FIB_NO_NEIGH {
            stats::conntrack(ct::NAT_NO_NEIGH);
            // The lookup left the next hop and its interface in `p`.
            let hop = if flow.family == FAMILY_V4 {
                // SAFETY: the IPv4 member of the union, which the helper
                // wrote for an AF_INET lookup.
                [unsafe { p.__bindgen_anon_4.ipv4_dst }, 0, 0, 0]
            } else {
                // SAFETY: the IPv6 member, written for AF_INET6.
                unsafe { p.__bindgen_anon_4.ipv6_dst }
            };
            crate::conntrack::want_neighbour(flow.family, p.ifindex, hop);
        }
        return xdp_action::XDP_PASS;
    }
    if !forward::rewrite_macs(ctx, &p.dmac, &p.smac) {
        return xdp_action::XDP_PASS;
    }
    if p.ifindex == ctx.ingress_ifindex() as u32 {
        return xdp_action::XDP_TX;
    }
    TX_PORTS
        .redirect(p.ifindex, 0)
        .unwrap_or(xdp_action::XDP_PASS)
}

/// Keeps the entry that translates the backend's replies of this flow:
/// written for a flow new to `FLOWS` (`known` false); for a known one
/// looked up, which marks it used for the LRU as its replies do, and
/// written again if the LRU evicted it meanwhile (counted), since the
/// forward entry alone would keep the flow on its backend while its
/// replies left untranslated. One more lookup per packet of a NAT flow.
#[inline(always)]
pub fn keep_reverse(flow: &Flow, translated: &FlowKey, known: bool) {
    // The reply's key is built in a per-CPU slot: the stack has no room
    // for it on the hit path.
    let Some(reply) = NAT_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU slot from a successful lookup, used only by this
    // CPU and only here, while this packet is processed.
    let reply = unsafe { &mut *reply };
    reply.src = translated.dst;
    reply.dst = translated.src;
    reply.sport = translated.dport;
    reply.dport = translated.sport;
    reply.proto = translated.proto;
    reply._pad = [0; 3];
    // Passed by reference: a `FlowKey` by value would be copied to the
    // stack.
    let reply: &FlowKey = reply;
    if known {
        if NAT_REVERSE.get_ptr(reply).is_some() {
            return;
        }
        stats::nat(nat_stat::REVERSE_RESTORED);
    }
    let vip = VipKey {
        addr: words_to_bytes(&flow.key.dst),
        port: flow.key.dport,
        proto: flow.key.proto,
        family: flow.family,
    };
    let _ = NAT_REVERSE.insert(reply, vip, 0);
}

/// The VIP a backend's reply must appear to come from, if it is one.
#[inline(always)]
pub fn reverse(flow: &Flow) -> Option<([u32; 4], u16)> {
    // SAFETY: the value is copied out at once.
    let vip = unsafe { NAT_REVERSE.get(flow.key) }.copied()?;
    Some((bytes_to_words(&vip.addr), vip.port))
}
