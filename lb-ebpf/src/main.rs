//! xlb's XDP program: match VIP traffic, pick a backend by Maglev, forward
//! by MAC rewrite (DSR) or address translation (NAT). Everything else goes
//! to the kernel untouched.
#![no_std]
#![no_main]

mod conntrack;
mod forward;
mod lookup;
mod maps;
mod nat;
mod parse;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{
    LB_F_FORWARDING, LB_F_NAT, LB_F_OWN_MAC, MODE_NAT, VIP_F_STANDBY, bytes_to_words, ct, drop,
    global,
};

use crate::{nat::Side, parse::Parsed};

#[xdp]
pub fn xlb(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    // The tests' "different build" of this program (tests/testbed-ebpf):
    // other instructions, the same behaviour.
    #[cfg(xlb_variant)]
    let len = core::hint::black_box(len);
    stats::global(global::RX, len);
    let action = process(&ctx, len);
    // Counted once, from the verdict, so that rx = pass + forward + drop
    // even when a forward falls back to the kernel (next hop unresolved,
    // a rewrite that did not fit).
    let outcome = match action {
        xdp_action::XDP_PASS => global::PASS,
        xdp_action::XDP_TX | xdp_action::XDP_REDIRECT => global::FORWARD,
        _ => global::DROP,
    };
    stats::global(outcome, len);
    action
}

#[inline(always)]
fn process(ctx: &XdpContext, len: u64) -> u32 {
    let flow = match parse::parse(ctx) {
        Parsed::Pass => return xdp_action::XDP_PASS,
        Parsed::Drop(reason) => {
            stats::dropped(reason);
            return xdp_action::XDP_DROP;
        }
        Parsed::DropIfVip(reason, flow) => {
            if lookup::is_vip_address(&flow) {
                stats::dropped(reason);
                return xdp_action::XDP_DROP;
            }
            return xdp_action::XDP_PASS;
        }
        Parsed::Flow(flow) => flow,
        Parsed::IcmpError(flow) => return icmp_error(ctx, &flow, len),
        Parsed::NeighbourQuery { target, family } => return neighbour_query(&target, family),
    };
    let Some(cfg) = maps::LB_CONFIG.get(0) else {
        return xdp_action::XDP_PASS;
    };
    // Nothing is forwarded until the control plane has switched the node
    // on (VRRP backups are per VIP: VIP_F_STANDBY, below).
    if cfg.flags & LB_F_FORWARDING == 0 {
        return xdp_action::XDP_PASS;
    }
    let Some(meta) = lookup::vip(&flow) else {
        if cfg.flags & LB_F_NAT != 0 {
            return nat_reply(ctx, &flow);
        }
        return xdp_action::XDP_PASS;
    };
    // A VIP whose VRRP group is mastered elsewhere is not ours to forward.
    if meta.flags & VIP_F_STANDBY != 0 {
        return xdp_action::XDP_PASS;
    }
    // Nor is a frame sent to another host's MAC (flooded by a switch).
    if cfg.flags & LB_F_OWN_MAC != 0 && !forward::addressed_to(ctx, &cfg.mac) {
        return xdp_action::XDP_PASS;
    }
    stats::vip(meta.index, len);
    let nat = meta.mode == MODE_NAT;
    // The connection table first: Maglev only decides new flows.
    let now = conntrack::now();
    let (id, backend, new_flow) = match conntrack::lookup(&flow, cfg, now) {
        Some((id, backend)) => (id, backend, false),
        None => match lookup::backend(&meta, &flow.key) {
            Ok((id, backend)) => {
                // NAT cannot translate replies of a flow it does not
                // remember, so NAT flows bypass the insert budget.
                conntrack::remember(&flow, id, &backend, cfg, now, nat);
                (id, backend, true)
            }
            Err(reason) => {
                stats::dropped(reason);
                return xdp_action::XDP_DROP;
            }
        },
    };
    stats::backend(id, len);
    if !nat {
        if !forward::rewrite_macs(ctx, &backend.mac, &cfg.mac) {
            return xdp_action::XDP_PASS;
        }
        return xdp_action::XDP_TX;
    }
    let Some(translated) = nat::rewrite(
        ctx,
        &flow,
        Side::Dst,
        &bytes_to_words(&backend.addr),
        backend.port,
    ) else {
        return xdp_action::XDP_PASS;
    };
    if new_flow {
        nat::remember_reverse(&flow, &translated);
    }
    nat::forward(ctx, &flow, &translated)
}

/// An ICMP "fragmentation needed" / "packet too big" about a packet the
/// VIP sent goes to the backend that owns the quoted flow, so that its
/// stack lowers the path MTU (DSR: as is; NAT: translated). Errors that
/// quote no VIP flow go to the kernel.
#[inline(always)]
fn icmp_error(ctx: &XdpContext, flow: &parse::Flow, len: u64) -> u32 {
    let Some(cfg) = maps::LB_CONFIG.get(0) else {
        return xdp_action::XDP_PASS;
    };
    if cfg.flags & LB_F_FORWARDING == 0 {
        return xdp_action::XDP_PASS;
    }
    let Some(meta) = lookup::vip(flow).filter(|m| m.flags & VIP_F_STANDBY == 0) else {
        return xdp_action::XDP_PASS;
    };
    if cfg.flags & LB_F_OWN_MAC != 0 && !forward::addressed_to(ctx, &cfg.mac) {
        return xdp_action::XDP_PASS;
    }
    // The flow's backend: from the table, else where Maglev sends it.
    let found = match conntrack::lookup(flow, cfg, conntrack::now()) {
        Some(found) => Some(found),
        None => lookup::backend(&meta, &flow.key).ok(),
    };
    let Some((id, backend)) = found else {
        return xdp_action::XDP_PASS;
    };
    stats::conntrack(ct::ICMP_TO_FLOW);
    stats::backend(id, len);
    if meta.mode != MODE_NAT {
        if !forward::rewrite_macs(ctx, &backend.mac, &cfg.mac) {
            return xdp_action::XDP_PASS;
        }
        return xdp_action::XDP_TX;
    }
    match nat::icmp_to_backend(ctx, flow, &bytes_to_words(&backend.addr), backend.port) {
        Some(key) => nat::forward(ctx, flow, &key),
        None => xdp_action::XDP_PASS,
    }
}

/// Who-has for an address: the kernel's to answer, unless it asks for a VIP
/// while no control plane holds the lease. Then this node's control plane
/// is gone, a VRRP backup has taken the VIPs over, and an answer from here
/// would pull the clients back to a node nobody manages.
#[inline(always)]
fn neighbour_query(target: &[u32; 4], family: u8) -> u32 {
    let lease = maps::CONTROL_LEASE.get(0).copied().unwrap_or(0);
    if lease != 0 && conntrack::now() > lease && lookup::is_vip_addr(target, family) {
        stats::dropped(drop::ORPHAN_NEIGH);
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_PASS
}

/// A packet that is not for a VIP: if it is a NAT backend's reply, put the
/// VIP back as its source and send it to the client; anything else goes to
/// the kernel untouched.
#[inline(always)]
fn nat_reply(ctx: &XdpContext, flow: &parse::Flow) -> u32 {
    let Some((vip, port)) = nat::reverse(flow) else {
        return xdp_action::XDP_PASS;
    };
    let Some(translated) = nat::rewrite(ctx, flow, Side::Src, &vip, port) else {
        return xdp_action::XDP_PASS;
    };
    stats::conntrack(ct::NAT_REPLY);
    nat::forward(ctx, flow, &translated)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
