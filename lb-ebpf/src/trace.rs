//! Packet traces (`xlb trace`). Every site that returns a verdict hands
//! it, with what led to it, to a [`Site`] (or [`done`]); while
//! `LB_F_TRACE` is off that is one flag test, made where the packet's
//! `LB_CONFIG` is read, and a register test per verdict. On, the site
//! packs its decision into the value it returns (`trace::Decision`,
//! marked `NOTED`), and the program's exit hands it to the recorder,
//! [`xlb_trace`], by a tail call: the decision already uses nearly all of
//! the 512 bytes of stack BPF gives a program, and a tail call starts
//! the recorder on a stack of its own. The recorder reads the packet's
//! addresses again, finds the VIP and the backend again in the maps, and
//! keeps the packets `TRACE_FILTER` matches in `TRACE_EVENTS`, their first
//! bytes included.

use core::ptr::addr_of_mut;

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_xdp_load_bytes, macros::xdp, programs::XdpContext,
};
pub use lb_common::trace::what;
use lb_common::{
    FlowKey, LB_F_TRACE, LbConfig, NO_BACKEND, TRACE_CAPTURE, TraceFilter, bytes_to_words,
    trace::{self, Decision},
};

use crate::{
    conntrack::{BPF_RB_NO_WAKEUP, now},
    lookup,
    maps::{FLOWS, LB_CONFIG, NAT_REVERSE, TRACE_EVENTS, TRACE_FILTER, TRACE_NOTE, TRACE_PROGS},
    parse::{self, Parsed},
    stats,
};

/// Returns `action`, with the decision packed in if a trace runs.
#[inline(always)]
pub fn done(cfg: &LbConfig, what: Decision, action: u32) -> Decision {
    if cfg.flags & LB_F_TRACE != 0 {
        return what | action as Decision;
    }
    action as Decision
}

/// [`done`] for a site that has not read `LB_CONFIG` (malformed packets,
/// neighbour queries: never the forwarding path).
#[inline(always)]
pub fn done_unconfigured(what: Decision, action: u32) -> Decision {
    match LB_CONFIG.get(0) {
        Some(cfg) => done(cfg, what, action),
        None => action as Decision,
    }
}

/// What a packet's decision sites trace, the verdict and its reason
/// aside: zero unless a trace runs, so that the flag is tested once.
#[derive(Clone, Copy)]
pub struct Site(Decision);

impl Site {
    #[inline(always)]
    pub fn new(cfg: &LbConfig, kind: u8, family: u8) -> Site {
        if cfg.flags & LB_F_TRACE != 0 {
            Site(what(kind, family, trace::CT_NONE, 0))
        } else {
            Site(0)
        }
    }

    /// The packet matched a VIP.
    #[inline(always)]
    pub fn vip(self) -> Site {
        self.mark(trace::MATCHED_VIP)
    }

    /// The connection table said `ct`.
    #[inline(always)]
    pub fn looked_up(self, ct: u8) -> Site {
        self.mark((ct as Decision) << 8)
    }

    /// A backend was chosen.
    #[inline(always)]
    pub fn chose(self) -> Site {
        self.mark(trace::CHOSE_BACKEND)
    }

    #[inline(always)]
    fn mark(self, bits: Decision) -> Site {
        if self.0 == 0 {
            return self;
        }
        Site(self.0 | bits)
    }

    /// The verdict `action`, for `reason` (`drop::*`, `trace::pass::*` or
    /// `NO_REASON`).
    #[inline(always)]
    pub fn done(self, reason: u8, action: u32) -> Decision {
        if self.0 == 0 {
            return action as Decision;
        }
        self.0 | (reason as Decision) << 16 | action as Decision
    }

    /// To the kernel, for `reason` (`trace::pass`).
    #[inline(always)]
    pub fn pass(self, reason: u8) -> Decision {
        self.done(reason, xdp_action::XDP_PASS)
    }

    /// Translated by NAT, then `action` (a pass: the kernel routes it).
    #[inline(always)]
    pub fn translated(self, action: u32) -> Decision {
        let reason = if action == xdp_action::XDP_PASS {
            trace::pass::NAT_TO_KERNEL
        } else {
            trace::NO_REASON
        };
        self.mark(trace::TRANSLATED).done(reason, action)
    }
}

/// Hands a `NOTED` decision to the recorder, which returns its verdict
/// for this program. Returns only if the recorder is not there (not
/// loaded yet): the packet then goes on untraced.
#[inline(always)]
pub fn hand_over(ctx: &XdpContext, d: Decision) {
    let Some(note) = TRACE_NOTE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU slot from a successful lookup; this CPU runs this
    // packet to its end (the recorder included) before any other.
    unsafe { *note = d };
    // SAFETY: slot 0 holds the recorder, an XDP program of this object,
    // which returns the verdict `d` holds.
    unsafe { TRACE_PROGS.tail_call(ctx, 0) };
}

/// The recorder: records the packet `TRACE_NOTE` holds the decision of,
/// if the filter takes it and the trace has not run out, and returns that
/// decision's verdict.
#[xdp]
pub fn xlb_trace(ctx: XdpContext) -> u32 {
    let Some(d) = TRACE_NOTE.get(0).copied() else {
        return xdp_action::XDP_PASS;
    };
    record(&ctx, d);
    trace::verdict(d)
}

/// Whether the filter takes a packet of `key` (`family`) that got
/// `verdict`.
#[inline(always)]
fn matches(f: &TraceFilter, key: &FlowKey, family: u8, verdict: u32) -> bool {
    if f.flags & trace::F_DROPS_ONLY != 0 && verdict != xdp_action::XDP_DROP {
        return false;
    }
    if (f.family != 0 && f.family != family)
        || (f.proto != 0 && f.proto != key.proto)
        || (f.dst_port != 0 && f.dst_port != key.dport)
        || (f.port != 0 && f.port != key.sport && f.port != key.dport)
    {
        return false;
    }
    for i in 0..4 {
        if key.src[i] & f.src_mask[i] != f.src[i] || key.dst[i] & f.dst_mask[i] != f.dst[i] {
            return false;
        }
    }
    true
}

fn reversed(k: &FlowKey) -> FlowKey {
    FlowKey {
        src: k.dst,
        dst: k.src,
        sport: k.dport,
        dport: k.sport,
        ..*k
    }
}

/// The client's flow the packet belongs to, read again from the packet as
/// the decision left it (a DSR forward changes only the MACs), and that
/// flow's parse for the lookups (`None` for what has no flow).
#[inline(always)]
fn client_flow(ctx: &XdpContext, d: Decision) -> Option<parse::Flow> {
    let mut flow = match parse::parse(ctx) {
        Parsed::Flow(f) | Parsed::DropIfVip(_, f) | Parsed::IcmpError(f) => f,
        Parsed::NeighbourQuery { target, family } => parse::Flow {
            key: FlowKey {
                dst: target,
                ..FlowKey::default()
            },
            family,
            tcp_flags: 0,
            l3: 0,
            l4: 0,
        },
        Parsed::Drop(_) | Parsed::Pass => return None,
    };
    if trace::kind(d) == trace::KIND_NAT_REPLY {
        // Translated back: VIP → client.
        flow.key = reversed(&flow.key);
    } else if d & trace::TRANSLATED != 0 && trace::kind(d) == trace::KIND_FLOW {
        // Translated: client → backend. The backend's reply entry names
        // the VIP the client sent to.
        // SAFETY: the value is copied out at once.
        if let Some(vip) = unsafe { NAT_REVERSE.get(reversed(&flow.key)) }.copied() {
            flow.key.dst = bytes_to_words(&vip.addr);
            flow.key.dport = vip.port;
        }
    }
    Some(flow)
}

/// The VIP index and backend id of decision `d` for `flow`: the VIP by
/// the flow's address and port, the backend from the connection table
/// (a hit), else by the Maglev ring (a miss, as it chose).
#[inline(always)]
fn vip_and_backend(flow: &parse::Flow, d: Decision) -> (u32, u32) {
    if d & trace::MATCHED_VIP == 0 {
        return (trace::NO_VIP, NO_BACKEND);
    }
    let Some(meta) = lookup::vip(flow) else {
        return (trace::NO_VIP, NO_BACKEND);
    };
    if d & trace::CHOSE_BACKEND == 0 {
        return (meta.index, NO_BACKEND);
    }
    if trace::conntrack(d) == trace::CT_HIT {
        // SAFETY: the value is copied out at once.
        if let Some(s) = unsafe { FLOWS.get(flow.key) }.copied() {
            return (meta.index, s.backend);
        }
    }
    let id = lookup::backend(&meta, &flow.key).map_or(NO_BACKEND, |(id, _)| id);
    (meta.index, id)
}

#[inline(always)]
fn record(ctx: &XdpContext, d: Decision) {
    let Some(f) = TRACE_FILTER.get(0) else {
        return;
    };
    let verdict = trace::verdict(d);
    let family = trace::family(d);
    let flow = client_flow(ctx, d);
    let key = flow.as_ref().map_or(FlowKey::default(), |f| f.key);
    if !matches(f, &key, family, verdict) {
        return;
    }
    let at = now();
    if at > f.until {
        return;
    }
    let (vip, backend) = match &flow {
        Some(flow) => vip_and_backend(flow, d),
        None => (trace::NO_VIP, NO_BACKEND),
    };
    let Some(mut slot) = TRACE_EVENTS.reserve(0) else {
        stats::trace(trace::stat::LOST);
        return;
    };
    let r = slot.as_mut_ptr();
    let md = ctx.ctx;
    // SAFETY: `md` is the program's context. `r` points to a reserved
    // slot of the ring the size of a `TraceRecord`, ours until submitted;
    // every field is written through it without reading, and
    // `bpf_xdp_load_bytes` writes at most `TRACE_CAPTURE` bytes into
    // `data`, which has that size. `n` is a local, read once.
    unsafe {
        let len = (*md).data_end.wrapping_sub((*md).data);
        addr_of_mut!((*r).at).write(at);
        addr_of_mut!((*r).key).write(key);
        addr_of_mut!((*r).vip).write(vip);
        addr_of_mut!((*r).backend).write(backend);
        addr_of_mut!((*r).ifindex).write((*md).ingress_ifindex);
        addr_of_mut!((*r).len).write(len);
        addr_of_mut!((*r).verdict).write(verdict as u8);
        addr_of_mut!((*r).conntrack).write(trace::conntrack(d));
        addr_of_mut!((*r).reason).write(trace::reason(d));
        addr_of_mut!((*r).family).write(family);
        addr_of_mut!((*r).kind).write(trace::kind(d));
        addr_of_mut!((*r)._pad).write(0);
        // 64 bits wide and read back through memory, so that the
        // compiler neither turns the test below into one on the packet
        // pointers nor truncates `n` between test and use: the verifier
        // must see this very `n` bounded (the helper takes no zero size).
        let n = u64::from(len).min(TRACE_CAPTURE as u64);
        let n = core::ptr::read_volatile(&n);
        let mut captured = 0;
        if n > 0 && n <= TRACE_CAPTURE as u64 {
            let data = addr_of_mut!((*r).data).cast();
            if bpf_xdp_load_bytes(md, 0, data, n as u32) == 0 {
                captured = n as u16;
            }
        }
        addr_of_mut!((*r).captured).write(captured);
    }
    slot.submit(BPF_RB_NO_WAKEUP);
    stats::trace(trace::stat::RECORDED);
}
