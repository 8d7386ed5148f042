//! The floor of the data-plane benchmark: the least an XDP forwarder can do
//! (swap the two MAC addresses, `XDP_TX`). `cargo xtask bench` reports every
//! xlb case as a ratio to this program's cost per packet.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

const ETH_ALEN: usize = 6;

#[xdp]
pub fn xdp_floor(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 2 * ETH_ALEN > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    let dst = start as *mut [u8; ETH_ALEN];
    let src = (start + ETH_ALEN) as *mut [u8; ETH_ALEN];
    // SAFETY: both MAC fields lie inside the packet (checked above); byte
    // arrays need no alignment.
    unsafe {
        let d = dst.read();
        dst.write(src.read());
        src.write(d);
    }
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
