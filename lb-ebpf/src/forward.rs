//! The Ethernet rewrite every forward ends with. DSR touches nothing else:
//! the IP and L4 bytes (and so their checksums) reach the backend exactly
//! as sent; NAT calls it after translating, with the MACs the FIB gave.

use aya_ebpf::programs::XdpContext;

const ETH_ALEN: usize = 6;
const ETH_DST_OFF: usize = 0;
const ETH_SRC_OFF: usize = ETH_ALEN;

/// Whether the frame's destination MAC is `mac`.
#[inline(always)]
pub fn addressed_to(ctx: &XdpContext, mac: &[u8; ETH_ALEN]) -> bool {
    let start = ctx.data();
    if start + ETH_ALEN > ctx.data_end() {
        return false;
    }
    // SAFETY: the 6 bytes lie inside the packet (checked above); byte
    // arrays need no alignment.
    let dst = unsafe { (start as *const [u8; ETH_ALEN]).read() };
    dst == *mac
}

/// Rewrites the destination MAC (the next hop's) and the source MAC
/// (ours). Returns `false` if the frame is too short (never, after parsing).
#[inline(always)]
pub fn rewrite_macs(ctx: &XdpContext, dst: &[u8; ETH_ALEN], src: &[u8; ETH_ALEN]) -> bool {
    let start = ctx.data();
    if start + 2 * ETH_ALEN > ctx.data_end() {
        return false;
    }
    let eth = start as *mut [u8; ETH_ALEN];
    // SAFETY: both 6-byte fields lie inside the packet (checked above); the
    // packet buffer is writable in XDP and byte arrays need no alignment.
    unsafe {
        eth.byte_add(ETH_DST_OFF).write(*dst);
        eth.byte_add(ETH_SRC_OFF).write(*src);
    }
    true
}
