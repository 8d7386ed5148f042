//! Packet rewrites. DSR touches only the Ethernet addresses: the IP and L4
//! bytes (and so their checksums) reach the backend exactly as sent.

use aya_ebpf::programs::XdpContext;

const ETH_ALEN: usize = 6;
const ETH_DST_OFF: usize = 0;
const ETH_SRC_OFF: usize = ETH_ALEN;

/// Rewrite destination MAC to the backend's and source MAC to ours.
/// Returns `false` if the frame is too short (never, after parsing).
#[inline(always)]
pub fn dsr(ctx: &XdpContext, backend_mac: &[u8; ETH_ALEN], our_mac: &[u8; ETH_ALEN]) -> bool {
    let start = ctx.data();
    if start + 2 * ETH_ALEN > ctx.data_end() {
        return false;
    }
    let eth = start as *mut [u8; ETH_ALEN];
    // SAFETY: both 6-byte fields lie inside the packet (checked above); the
    // packet buffer is writable in XDP and byte arrays need no alignment.
    unsafe {
        eth.byte_add(ETH_DST_OFF).write(*backend_mac);
        eth.byte_add(ETH_SRC_OFF).write(*our_mac);
    }
    true
}
