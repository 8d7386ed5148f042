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
mod trace;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{
    LB_F_FORWARDING, LB_F_NAT, LB_F_OWN_MAC, LbConfig, MODE_NAT, VIP_F_STANDBY, bytes_to_words,
    drop, global,
    trace::{
        self as tr, CT_HIT, CT_NONE, Decision, KIND_FLOW, KIND_ICMP_ERROR, KIND_MALFORMED,
        KIND_NAT_REPLY, KIND_NEIGHBOUR, NO_REASON, NOTED, pass,
    },
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
    let decision = process(&ctx, len);
    let action = tr::verdict(decision);
    // Counted once, from the verdict, so that rx = pass + forward + drop
    // even when a forward falls back to the kernel (next hop unresolved,
    // a rewrite that did not fit).
    let outcome = match action {
        xdp_action::XDP_PASS => global::PASS,
        xdp_action::XDP_TX | xdp_action::XDP_REDIRECT => global::FORWARD,
        _ => global::DROP,
    };
    stats::global(outcome, len);
    if decision & NOTED != 0 {
        // The recorder returns the verdict itself.
        trace::hand_over(&ctx, decision);
    }
    action
}

/// The verdict, and with a trace running, what led to it (`Decision`).
#[inline(always)]
fn process(ctx: &XdpContext, len: u64) -> Decision {
    let flow = match parse::parse(ctx) {
        Parsed::Pass => return xdp_action::XDP_PASS as Decision,
        Parsed::Drop(reason) => {
            stats::dropped(reason);
            let what = trace::what(KIND_MALFORMED, 0, CT_NONE, reason as u8);
            return trace::done_unconfigured(what, xdp_action::XDP_DROP);
        }
        Parsed::DropIfVip(reason, flow) => {
            let (action, reason) = if lookup::is_vip_address(&flow) {
                stats::dropped(reason);
                (xdp_action::XDP_DROP, reason as u8)
            } else {
                (xdp_action::XDP_PASS, pass::NOT_VIP)
            };
            let what = trace::what(KIND_FLOW, flow.family, CT_NONE, reason);
            return trace::done_unconfigured(what, action);
        }
        Parsed::Flow(flow) => flow,
        Parsed::IcmpError(flow) => return icmp_error(ctx, &flow, len),
        Parsed::NeighbourQuery { target, family } => {
            return neighbour_query(&target, family);
        }
    };
    let Some(cfg) = maps::LB_CONFIG.get(0) else {
        return xdp_action::XDP_PASS as Decision;
    };
    let site = trace::Site::new(cfg, KIND_FLOW, flow.family);
    // Nothing is forwarded until the control plane has switched the node
    // on (VRRP backups are per VIP: VIP_F_STANDBY, below).
    if cfg.flags & LB_F_FORWARDING == 0 {
        return site.pass(pass::NOT_FORWARDING);
    }
    // The connection table first: an entry names its backend, whose VIP
    // index finds the VIP in an array (`VIP_SLOTS`); only a packet without
    // one (a new flow, an all-ports VIP, a VIP changed since) looks the VIP
    // up by hash, and only if `VIP_FILTER` does not rule it out first.
    let found = if lookup::may_be_vip(&flow) {
        let entry = conntrack::find(&flow);
        let known = match entry.as_ref().and_then(|e| e.backend()) {
            Some(backend) => lookup::vip_of_entry(&flow, backend),
            None => None,
        };
        known
            .or_else(|| lookup::vip(&flow))
            .map(|meta| (meta, entry))
    } else {
        None
    };
    let Some((meta, entry)) = found else {
        if cfg.flags & LB_F_NAT != 0 {
            return nat_reply(ctx, cfg, &flow);
        }
        return site.pass(pass::NOT_VIP);
    };
    let site = site.vip();
    // A VIP whose VRRP group is mastered elsewhere is not ours to forward.
    if meta.flags & VIP_F_STANDBY != 0 {
        return site.pass(pass::STANDBY);
    }
    // Nor is a frame sent to another host's MAC (flooded by a switch).
    if cfg.flags & LB_F_OWN_MAC != 0 && !forward::addressed_to(ctx, &cfg.mac) {
        return site.pass(pass::OTHER_MAC);
    }
    stats::vip(meta.index, len);
    let nat = meta.mode == MODE_NAT;
    // Maglev only decides new flows.
    let now = conntrack::coarse_now();
    let (id, backend, ct) = match conntrack::check(entry, &flow, cfg, now) {
        Ok((id, backend)) => (id, backend, CT_HIT),
        Err(miss) => match lookup::backend(&meta, &flow.key) {
            Ok((id, backend)) => {
                // NAT cannot translate replies of a flow it does not
                // remember, so NAT flows bypass the insert budget.
                conntrack::remember(&flow, id, backend, cfg, now, nat);
                (id, backend, miss)
            }
            Err(reason) => {
                stats::dropped(reason);
                let site = site.looked_up(miss);
                return site.done(reason as u8, xdp_action::XDP_DROP);
            }
        },
    };
    stats::backend(id, len);
    let site = site.looked_up(ct).chose();
    if !nat {
        if !forward::rewrite_macs(ctx, &backend.mac, &cfg.mac) {
            return site.pass(pass::REWRITE_FAILED);
        }
        return site.done(NO_REASON, xdp_action::XDP_TX);
    }
    let Some(translated) = nat::rewrite(
        ctx,
        &flow,
        Side::Dst,
        &bytes_to_words(&backend.addr),
        backend.port,
    ) else {
        return site.pass(pass::REWRITE_FAILED);
    };
    nat::keep_reverse(&flow, &translated, ct == CT_HIT);
    site.translated(nat::forward(ctx, &flow, &translated))
}

/// An ICMP "fragmentation needed" / "packet too big" about a packet the
/// VIP sent goes to the backend that owns the quoted flow, so that its
/// stack lowers the path MTU (DSR: as is; NAT: translated). Errors that
/// quote no VIP flow go to the kernel.
#[inline(always)]
fn icmp_error(ctx: &XdpContext, flow: &parse::Flow, len: u64) -> Decision {
    let Some(cfg) = maps::LB_CONFIG.get(0) else {
        return xdp_action::XDP_PASS as Decision;
    };
    let site = trace::Site::new(cfg, KIND_ICMP_ERROR, flow.family);
    if cfg.flags & LB_F_FORWARDING == 0 {
        return site.pass(pass::NOT_FORWARDING);
    }
    let Some(meta) = lookup::vip(flow) else {
        return site.pass(pass::NOT_VIP);
    };
    let site = site.vip();
    if meta.flags & VIP_F_STANDBY != 0 {
        return site.pass(pass::STANDBY);
    }
    if cfg.flags & LB_F_OWN_MAC != 0 && !forward::addressed_to(ctx, &cfg.mac) {
        return site.pass(pass::OTHER_MAC);
    }
    // The flow's backend: from the table, else where Maglev sends it.
    let (found, ct) = match conntrack::lookup(flow, cfg, conntrack::coarse_now()) {
        Ok(found) => (Some(found), CT_HIT),
        Err(miss) => (lookup::backend(&meta, &flow.key).ok(), miss),
    };
    let site = site.looked_up(ct);
    let Some((id, backend)) = found else {
        return site.pass(pass::NO_FLOW);
    };
    stats::conntrack(lb_common::ct::ICMP_TO_FLOW);
    stats::backend(id, len);
    let site = site.chose();
    if meta.mode != MODE_NAT {
        if !forward::rewrite_macs(ctx, &backend.mac, &cfg.mac) {
            return site.pass(pass::REWRITE_FAILED);
        }
        return site.done(NO_REASON, xdp_action::XDP_TX);
    }
    match nat::icmp_to_backend(ctx, flow, &bytes_to_words(&backend.addr), backend.port) {
        Some(key) => site.translated(nat::forward(ctx, flow, &key)),
        None => site.pass(pass::REWRITE_FAILED),
    }
}

/// Who-has for an address: the kernel's to answer, unless it asks for a VIP
/// while no control plane holds the lease. Then this node's control plane
/// is gone, a VRRP backup has taken the VIPs over, and an answer from here
/// would pull the clients back to a node nobody manages.
#[inline(always)]
fn neighbour_query(target: &[u32; 4], family: u8) -> Decision {
    let lease = maps::CONTROL_LEASE.get(0).copied().unwrap_or(0);
    let (action, reason) =
        if lease != 0 && conntrack::now() > lease && lookup::is_vip_addr(target, family) {
            stats::dropped(drop::ORPHAN_NEIGH);
            (xdp_action::XDP_DROP, drop::ORPHAN_NEIGH as u8)
        } else {
            (xdp_action::XDP_PASS, pass::NEIGHBOUR)
        };
    let what = trace::what(KIND_NEIGHBOUR, family, CT_NONE, reason);
    trace::done_unconfigured(what, action)
}

/// A packet that is not for a VIP: if it is a NAT backend's reply, put the
/// VIP back as its source and send it to the client; anything else goes to
/// the kernel untouched.
#[inline(always)]
fn nat_reply(ctx: &XdpContext, cfg: &LbConfig, flow: &parse::Flow) -> Decision {
    let Some((vip, port)) = nat::reverse(flow) else {
        let what = trace::what(KIND_FLOW, flow.family, CT_NONE, pass::NOT_VIP);
        return trace::done(cfg, what, xdp_action::XDP_PASS);
    };
    // A trace shows the reply as part of the client's flow.
    let site = trace::Site::new(cfg, KIND_NAT_REPLY, flow.family);
    let Some(translated) = nat::rewrite(ctx, flow, Side::Src, &vip, port) else {
        return site.pass(pass::REWRITE_FAILED);
    };
    stats::conntrack(lb_common::ct::NAT_REPLY);
    site.translated(nat::forward(ctx, flow, &translated))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
