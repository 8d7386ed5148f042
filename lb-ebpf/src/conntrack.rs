//! The connection table: an established flow keeps its backend whatever
//! happens to the Maglev ring (backends added, removed, re-weighted,
//! drained, config reloaded).

use aya_ebpf::helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns};
use lb_common::{
    BACKEND_F_ACTIVE, BACKEND_F_RESCHEDULE, BackendInfo, FLOW_F_CLOSING, FLOW_TOUCH_NS, FlowEvent,
    FlowState, IPPROTO_TCP, LB_F_SYNC, LbConfig, ct, flow_event, sync_stat, trace,
};

use crate::{
    maps::{BACKENDS, FLOW_EVENTS, FLOWS, NEW_FLOW_BUDGET},
    parse::{Flow, TCP_FIN, TCP_RST, TCP_SYN},
    stats,
};

const NS_PER_SEC: u64 = 1_000_000_000;

/// CLOCK_MONOTONIC (`bpf_ktime_get_ns`): for what userspace compares
/// with its own clock to the microsecond (report and trace times).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without arguments or side effects.
    unsafe { bpf_ktime_get_ns() }
}

/// CLOCK_MONOTONIC as of the last tick (`bpf_ktime_get_coarse_ns`, at
/// most `lb_common::COARSE_CLOCK_LAG_NS` behind [`now`]): enough for
/// timeouts in seconds, and it reads a variable instead of the clock
/// source.
#[inline(always)]
pub fn coarse_now() -> u64 {
    // SAFETY: a helper without arguments or side effects.
    unsafe { bpf_ktime_get_coarse_ns() }
}

#[inline(always)]
fn closing(flow: &Flow) -> bool {
    flow.key.proto == IPPROTO_TCP && flow.tcp_flags & (TCP_FIN | TCP_RST) != 0
}

#[inline(always)]
fn timeout_ns(cfg: &LbConfig, proto: u8, flags: u16) -> u64 {
    let secs = if proto != IPPROTO_TCP {
        cfg.udp_timeout
    } else if flags & FLOW_F_CLOSING != 0 {
        cfg.tcp_closing_timeout
    } else {
        cfg.tcp_timeout
    };
    secs as u64 * NS_PER_SEC
}

/// A connection-table entry as found, and its backend's entry as it was
/// then (`None`: an id out of range).
pub struct Entry {
    ptr: *mut FlowState,
    backend: Option<&'static BackendInfo>,
}

impl Entry {
    #[inline(always)]
    pub fn backend(&self) -> Option<&'static BackendInfo> {
        self.backend
    }
}

/// The flow's entry in the connection table, if it has one.
#[inline(always)]
pub fn find(flow: &Flow) -> Option<Entry> {
    let ptr = FLOWS.get_ptr_mut(flow.key)?;
    // SAFETY: pointer from a successful lookup; the value is plain data.
    let id = unsafe { (*ptr).backend };
    Some(Entry {
        ptr,
        backend: BACKENDS.get(id),
    })
}

/// The backend remembered for this flow, if the entry is live and its
/// backend is still the one it was made for and still takes old flows;
/// else why not (`trace::CT_MISS`, `CT_EXPIRED`, `CT_STALE`).
#[inline(always)]
pub fn lookup(flow: &Flow, cfg: &LbConfig, now: u64) -> Result<(u32, &'static BackendInfo), u8> {
    check(find(flow), flow, cfg, now)
}

/// [`lookup`] of an entry already found (by [`find`]).
#[inline(always)]
pub fn check(
    entry: Option<Entry>,
    flow: &Flow,
    cfg: &LbConfig,
    now: u64,
) -> Result<(u32, &'static BackendInfo), u8> {
    let Some(Entry {
        ptr: entry,
        backend,
    }) = entry
    else {
        stats::conntrack(ct::MISS);
        if flow.key.proto == IPPROTO_TCP && flow.tcp_flags & TCP_SYN == 0 {
            stats::conntrack(ct::MISS_MIDFLOW);
        }
        return Err(trace::CT_MISS);
    };
    // SAFETY: pointer from a successful lookup (`find`); the value is
    // plain data. Concurrent writers (other CPUs, same flow) only store
    // whole timestamps and flag bits, so a stale read costs at most one
    // touch.
    let state = unsafe { *entry };
    let timeout = timeout_ns(cfg, flow.key.proto, state.flags);
    if timeout != 0 && now.saturating_sub(state.last_seen) > timeout {
        stats::conntrack(ct::EXPIRED);
        stats::conntrack(ct::MISS);
        return Err(trace::CT_EXPIRED);
    }
    // Read in place, not copied: a copy would be no less torn by a
    // concurrent rewrite from userspace, and costs stack.
    let Some(info) = backend.filter(|b| {
        b.flags & BACKEND_F_ACTIVE != 0
            && b.flags & BACKEND_F_RESCHEDULE == 0
            && b.generation == state.generation
    }) else {
        stats::conntrack(ct::STALE_BACKEND);
        stats::conntrack(ct::MISS);
        return Err(trace::CT_STALE);
    };
    let closing_now = closing(flow) && state.flags & FLOW_F_CLOSING == 0;
    if closing_now || now.saturating_sub(state.last_seen) > FLOW_TOUCH_NS {
        // SAFETY: as in `find`; field stores into the map value.
        unsafe {
            (*entry).last_seen = now;
            if closing_now {
                (*entry).flags |= FLOW_F_CLOSING;
            }
        }
    }
    if closing_now {
        report(cfg, flow, &state, flow_event::CLOSING);
    }
    stats::conntrack(ct::HIT);
    Ok((state.backend, info))
}

/// Whether this CPU may insert another entry now (token bucket, one
/// second of burst).
#[inline(always)]
fn take_budget(cfg: &LbConfig, now: u64) -> bool {
    let rate = cfg.new_flows_per_cpu as u64;
    if rate == 0 {
        return true;
    }
    let Some(b) = NEW_FLOW_BUDGET.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: per-CPU slot from a successful lookup, touched only by this CPU.
    unsafe {
        let elapsed = now.saturating_sub((*b).last_refill).min(NS_PER_SEC);
        let tokens = ((*b).tokens + elapsed * rate / NS_PER_SEC).min(rate);
        (*b).last_refill = now;
        if tokens == 0 {
            (*b).tokens = 0;
            return false;
        }
        (*b).tokens = tokens - 1;
    }
    true
}

/// Remembers the backend Maglev chose for a new flow, unless the new-flow
/// budget is spent (the flow is then balanced statelessly; `force` skips
/// the budget) or the packet is a RST.
#[inline(always)]
pub fn remember(flow: &Flow, id: u32, info: &BackendInfo, cfg: &LbConfig, now: u64, force: bool) {
    // A lone RST does not open a flow worth keeping. A FIN that missed is
    // kept, marked closing (its short timeout), like any mid-flow miss.
    if flow.key.proto == IPPROTO_TCP && flow.tcp_flags & TCP_RST != 0 {
        return;
    }
    // A mid-flow packet (no SYN) that missed is kept too: after a restart
    // or an eviction it is the first packet we see of a live connection.
    if !force && !take_budget(cfg, now) {
        stats::conntrack(ct::REFUSED);
        return;
    }
    let state = FlowState {
        backend: id,
        generation: info.generation,
        flags: if closing(flow) { FLOW_F_CLOSING } else { 0 },
        last_seen: now,
    };
    if FLOWS.insert(flow.key, state, 0).is_ok() {
        stats::conntrack(ct::INSERT);
        report(cfg, flow, &state, flow_event::NEW);
    }
}

/// `bpf_ringbuf_submit` flag: do not wake the reader. A wake-up is an
/// interrupt-work item (a self-IPI): measured at about 6 µs per report on
/// a virtual machine, when the reader keeps up and every report would
/// wake it. The sync polls the ring every millisecond instead, and `xlb
/// trace` every few.
pub const BPF_RB_NO_WAKEUP: u64 = 1;

/// Tells the control plane about a flow for its peers (`LB_F_SYNC`). A
/// full ring buffer loses the report, counted; it never holds the packet.
#[inline(always)]
fn report(cfg: &LbConfig, flow: &Flow, state: &FlowState, kind: u8) {
    if cfg.flags & LB_F_SYNC == 0 {
        return;
    }
    let closing = if kind == flow_event::CLOSING {
        FLOW_F_CLOSING
    } else {
        0
    };
    // Written in place in the ring: the program has no stack to spare
    // for a copy.
    let Some(mut slot) = FLOW_EVENTS.reserve(0) else {
        stats::sync(sync_stat::EVENTS_LOST);
        return;
    };
    slot.write(FlowEvent {
        key: flow.key,
        backend: state.backend,
        generation: state.generation,
        flags: state.flags | closing,
        kind,
        family: flow.family,
        _pad: [0; 6],
        // The sync measures its lag from this: the precise clock (only
        // reports pay for it).
        at: now(),
    });
    slot.submit(BPF_RB_NO_WAKEUP);
    stats::sync(sync_stat::EVENTS_REPORTED);
}

/// Asks the control plane (while it reads the reports: `LB_F_SYNC`) to
/// resolve next hop `addr` (`FlowKey` words) on interface `ifindex`: a
/// node that took NAT flows over from a peer has no neighbour entries for
/// them yet, and the kernel would drop a translated reply it is handed
/// (its source is a local address).
#[inline(always)]
pub fn want_neighbour(family: u8, ifindex: u32, addr: [u32; 4]) {
    let Some(cfg) = crate::maps::LB_CONFIG.get(0) else {
        return;
    };
    if cfg.flags & LB_F_SYNC == 0 {
        return;
    }
    let Some(mut slot) = FLOW_EVENTS.reserve(0) else {
        stats::sync(sync_stat::EVENTS_LOST);
        return;
    };
    slot.write(FlowEvent {
        key: lb_common::FlowKey {
            src: [0; 4],
            dst: addr,
            sport: 0,
            dport: 0,
            proto: 0,
            _pad: [0; 3],
        },
        backend: ifindex,
        generation: 0,
        flags: 0,
        kind: flow_event::NEIGH,
        family,
        _pad: [0; 6],
        at: now(),
    });
    slot.submit(BPF_RB_NO_WAKEUP);
    stats::sync(sync_stat::EVENTS_REPORTED);
}
