//! Per-CPU counters: plain adds, no atomics, because each CPU owns its slot.

use lb_common::Counters;

use crate::maps::{
    BACKEND_STATS, CT_STATS, DROP_STATS, GLOBAL_STATS, NAT_STATS, SYNC_STATS, TRACE_STATS,
    VIP_STATS,
};

#[inline(always)]
fn bump(c: Option<*mut Counters>, bytes: u64) {
    if let Some(c) = c {
        // SAFETY: a per-CPU array slot is only written by this CPU, and the
        // pointer comes from a successful map lookup.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// Adds one to a per-CPU event count.
#[inline(always)]
fn one(c: Option<*mut u64>) {
    if let Some(c) = c {
        // SAFETY: as in `bump`: per-CPU slot from a successful lookup.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub fn global(index: u32, bytes: u64) {
    bump(GLOBAL_STATS.get_ptr_mut(index), bytes);
}

#[inline(always)]
pub fn vip(index: u32, bytes: u64) {
    bump(VIP_STATS.get_ptr_mut(index), bytes);
}

#[inline(always)]
pub fn backend(id: u32, bytes: u64) {
    bump(BACKEND_STATS.get_ptr_mut(id), bytes);
}

/// Counts a drop by reason (the global drop counter follows the verdict,
/// in `xlb`).
#[inline(always)]
pub fn dropped(reason: u32) {
    one(DROP_STATS.get_ptr_mut(reason));
}

#[inline(always)]
pub fn conntrack(event: u32) {
    one(CT_STATS.get_ptr_mut(event));
}

#[inline(always)]
pub fn nat(event: u32) {
    one(NAT_STATS.get_ptr_mut(event));
}

#[inline(always)]
pub fn sync(event: u32) {
    one(SYNC_STATS.get_ptr_mut(event));
}

#[inline(always)]
pub fn trace(event: u32) {
    one(TRACE_STATS.get_ptr_mut(event));
}
