//! The packet generator of the end-to-end benchmark. Run with
//! BPF_PROG_TEST_RUN in live-frames mode on a client veth, it sends a
//! template frame out of that veth (`XDP_TX`), each copy with a random UDP
//! source port out of `FLOWS`, so the load balancer sees many flows.
//!
//! Live-frames pages are recycled without being reset, and a frame comes
//! back to the pool as the path left it (MACs rewritten by xlb, addresses by
//! NAT, TTL decremented): so every run writes the whole template, which the
//! loader sets in `GEN_FRAME`, before choosing the port.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global, bindings::xdp_action, helpers::bpf_get_prandom_u32, macros::xdp, programs::XdpContext,
};

/// Length of the template: a minimum-size Ethernet frame without FCS.
pub const GEN_FRAME_LEN: usize = 60;
/// Offset of the UDP source port in an IPv4 frame without options.
const UDP_SPORT_OFF: usize = 14 + 20;
/// Source ports `SPORT_BASE..SPORT_BASE + FLOWS`.
const SPORT_BASE: u16 = 10_000;
const FLOWS: u32 = 1024;

/// The frame to send (an IPv4 UDP frame with checksum 0, i.e. none, so that
/// changing the port needs no fix-up). Set by the loader.
#[unsafe(no_mangle)]
static GEN_FRAME: Global<[u8; GEN_FRAME_LEN]> = Global::new([0; GEN_FRAME_LEN]);

#[xdp]
pub fn xdp_gen(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + GEN_FRAME_LEN > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let mut frame = GEN_FRAME.load();
    // SAFETY: a BPF helper without arguments or preconditions.
    let random = unsafe { bpf_get_prandom_u32() };
    let sport = (SPORT_BASE + (random % FLOWS) as u16).to_be_bytes();
    frame[UDP_SPORT_OFF] = sport[0];
    frame[UDP_SPORT_OFF + 1] = sport[1];
    // SAFETY: the packet holds at least GEN_FRAME_LEN bytes (checked above);
    // packet data has no alignment guarantee, hence `write_unaligned`.
    unsafe { (start as *mut [u8; GEN_FRAME_LEN]).write_unaligned(frame) };
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
