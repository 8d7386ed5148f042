//! xlb's XDP program: match VIP traffic, pick a backend by Maglev, forward
//! by MAC rewrite (DSR). Everything else goes to the kernel untouched.
#![no_std]
#![no_main]

mod conntrack;
mod forward;
mod lookup;
mod maps;
mod parse;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{LB_F_FORWARDING, global};

use crate::parse::Parsed;

#[xdp]
pub fn xlb(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    stats::global(global::RX, len);
    let action = process(&ctx, len);
    if action == xdp_action::XDP_PASS {
        stats::global(global::PASS, len);
    }
    action
}

#[inline(always)]
fn process(ctx: &XdpContext, len: u64) -> u32 {
    let flow = match parse::parse(ctx) {
        Parsed::Pass => return xdp_action::XDP_PASS,
        Parsed::Drop(reason) => {
            stats::dropped(reason, len);
            return xdp_action::XDP_DROP;
        }
        Parsed::DropIfVip(reason, flow) => {
            if lookup::is_vip_address(&flow) {
                stats::dropped(reason, len);
                return xdp_action::XDP_DROP;
            }
            return xdp_action::XDP_PASS;
        }
        Parsed::Flow(flow) => flow,
    };
    let Some(meta) = lookup::vip(&flow) else {
        return xdp_action::XDP_PASS;
    };
    let Some(cfg) = maps::LB_CONFIG.get(0) else {
        return xdp_action::XDP_PASS;
    };
    // A backup node leaves VIP traffic to the kernel (which no longer owns
    // the VIP): only the master forwards.
    if cfg.flags & LB_F_FORWARDING == 0 {
        return xdp_action::XDP_PASS;
    }
    stats::vip(meta.index, len);
    // The connection table first: Maglev only decides new flows.
    let now = conntrack::now();
    let (id, backend) = match conntrack::lookup(&flow, cfg, now) {
        Some(found) => found,
        None => match lookup::backend(&meta, &flow.key) {
            Ok((id, backend)) => {
                conntrack::remember(&flow, id, &backend, cfg, now);
                (id, backend)
            }
            Err(reason) => {
                stats::dropped(reason, len);
                return xdp_action::XDP_DROP;
            }
        },
    };
    if !forward::dsr(ctx, &backend.mac, &cfg.mac) {
        stats::dropped(lb_common::drop::L4_TRUNCATED, len);
        return xdp_action::XDP_DROP;
    }
    stats::backend(id, len);
    stats::global(global::FORWARD, len);
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
