//! The floor of the end-to-end benchmark: the least a load-balancer node
//! does to hand every frame to one fixed backend. It writes the backend's
//! MAC as destination and the node's as source, optionally the backend's
//! IPv4 address as destination (for a NAT topology, whose backends drop
//! frames to the VIP), and sends the frame back out (`XDP_TX`) or out of
//! another NIC (`bpf_redirect`). Anything but IPv4 (ARP above all) goes to
//! the stack. No parsing beyond the EtherType, no map, no choice of backend:
//! `cargo xtask bench` subtracts this path's CPU time per packet from each
//! setup's, so what remains is what the setup adds.
//!
//! The loader sets every global; they are read-only, so the verifier
//! drops the branches a configuration does not take.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global, bindings::xdp_action, helpers::bpf_redirect, macros::xdp, programs::XdpContext,
};

const ETH_ALEN: usize = 6;
const ETH_HLEN: usize = 14;
const ETH_P_IP: [u8; 2] = [0x08, 0x00];
/// Offsets of the IPv4 header checksum and destination address in a frame
/// without VLAN tag.
const IP_CSUM_OFF: usize = ETH_HLEN + 10;
const IP_DADDR_OFF: usize = ETH_HLEN + 16;

#[unsafe(no_mangle)]
static FWD_DST_MAC: Global<[u8; ETH_ALEN]> = Global::new([0; ETH_ALEN]);
#[unsafe(no_mangle)]
static FWD_SRC_MAC: Global<[u8; ETH_ALEN]> = Global::new([0; ETH_ALEN]);
/// The NIC to redirect to; 0: `XDP_TX`.
#[unsafe(no_mangle)]
static FWD_IFINDEX: Global<u32> = Global::new(0);
/// The IPv4 destination to write; all zero: leave the address alone.
#[unsafe(no_mangle)]
static FWD_DADDR: Global<[u8; 4]> = Global::new([0; 4]);

#[xdp]
pub fn xdp_fwd(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + IP_DADDR_OFF + 4 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: the Ethernet header and the IPv4 header up to its destination
    // address lie inside the packet (checked above); byte arrays need no
    // alignment.
    unsafe {
        if ((start + 2 * ETH_ALEN) as *const [u8; 2]).read() != ETH_P_IP {
            return xdp_action::XDP_PASS;
        }
        (start as *mut [u8; ETH_ALEN]).write(FWD_DST_MAC.load());
        ((start + ETH_ALEN) as *mut [u8; ETH_ALEN]).write(FWD_SRC_MAC.load());
    }
    let daddr = FWD_DADDR.load();
    if daddr != [0; 4] {
        let addr = (start + IP_DADDR_OFF) as *mut [u8; 4];
        let csum = (start + IP_CSUM_OFF) as *mut [u8; 2];
        // SAFETY: as above.
        unsafe {
            let old = addr.read();
            csum.write(replace_in_checksum(csum.read(), old, daddr));
            addr.write(daddr);
        }
    }
    match FWD_IFINDEX.load() {
        0 => xdp_action::XDP_TX,
        // SAFETY: a BPF helper on plain integers.
        ifindex => unsafe { bpf_redirect(ifindex, 0) as u32 },
    }
}

/// The IPv4 header checksum `csum` after four bytes `old` become `new`
/// (RFC 1624: HC' = ~(~HC + ~m + m'), 16-bit words, network order).
fn replace_in_checksum(csum: [u8; 2], old: [u8; 4], new: [u8; 4]) -> [u8; 2] {
    let word = |b: [u8; 4], i: usize| u32::from(u16::from_be_bytes([b[i], b[i + 1]]));
    let mut sum = u32::from(!u16::from_be_bytes(csum));
    for i in [0, 2] {
        sum += u32::from(!(word(old, i) as u16)) + word(new, i);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (!(sum as u16)).to_be_bytes()
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
