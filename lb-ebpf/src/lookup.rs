//! VIP lookup and Maglev backend choice.

use lb_common::{
    BACKEND_F_ACTIVE, BackendInfo, FlowKey, NO_BACKEND, RING_FIRST_SLOT, VIP_F_SOURCE_AFFINITY,
    VipKey, VipMeta, bytes_to_words, drop, flow_hash, ring_word, source_hash, vip_filter_slot,
    words_to_bytes,
};

use crate::{
    maps::{BACKENDS, RINGS, VIP_ADDRS, VIP_FILTER, VIP_SLOTS, VIPS},
    parse::Flow,
};

/// Whether the flow's destination address may carry a VIP: `false` means
/// it carries none (`VIP_FILTER`, an array: no hash lookup).
#[inline(always)]
pub fn may_be_vip(flow: &Flow) -> bool {
    VIP_FILTER
        .get(vip_filter_slot(&flow.key.dst))
        .is_some_and(|n| *n != 0)
}

/// The VIP of a connection-table entry for `flow`, found through its
/// backend (`BackendInfo::vip` → `VIP_SLOTS`), if that slot holds exactly
/// the flow's (address, port, protocol) VIP: then `VIPS` would give the
/// same. `None` (the VIP was removed, its index reused, or it is an
/// all-ports VIP, which an exact-port one added since would shadow):
/// look it up with [`vip`].
#[inline(always)]
pub fn vip_of_entry(flow: &Flow, backend: &BackendInfo) -> Option<VipMeta> {
    let slot = VIP_SLOTS.get(backend.vip)?;
    // A slot userspace rewrites meanwhile may be read torn: a key half
    // cleared or half another VIP's fails the test, and a VIP's own
    // state is the old or the new either side of a change.
    let k = &slot.key;
    let same = k.port == flow.key.dport
        && k.proto == flow.key.proto
        && k.family == flow.family
        && bytes_to_words(&k.addr) == flow.key.dst;
    if same { Some(slot.meta) } else { None }
}

#[inline(always)]
fn vip_key(flow: &Flow, port: u16, proto: u8) -> VipKey {
    // IPv4 keys hold zeros in words 1..3, so one copy serves both families.
    VipKey {
        addr: words_to_bytes(&flow.key.dst),
        port,
        proto,
        family: flow.family,
    }
}

/// The VIP this flow is addressed to: exact port first, then all-ports.
#[inline(always)]
pub fn vip(flow: &Flow) -> Option<VipMeta> {
    let mut key = vip_key(flow, flow.key.dport, flow.key.proto);
    // SAFETY: the value is copied out at once; userspace replaces entries
    // whole (hash map updates are RCU), so the copy is never torn.
    if let Some(meta) = unsafe { VIPS.get(key) } {
        return Some(*meta);
    }
    key.port = 0;
    // SAFETY: as above.
    unsafe { VIPS.get(key) }.copied()
}

/// Whether the flow's destination address carries any VIP.
#[inline(always)]
pub fn is_vip_address(flow: &Flow) -> bool {
    is_vip_addr(&flow.key.dst, flow.family)
}

/// Whether `addr` (`FlowKey` words) of `family` carries any VIP.
#[inline(always)]
pub fn is_vip_addr(addr: &[u32; 4], family: u8) -> bool {
    let key = VipKey {
        addr: words_to_bytes(addr),
        port: 0,
        proto: 0,
        family,
    };
    // SAFETY: only presence is checked; the value is not read.
    unsafe { VIP_ADDRS.get(key) }.is_some()
}

/// Backend for a flow of `meta`'s VIP: hash → ring slot → backend id →
/// backend. Errors carry the drop reason.
#[inline(always)]
pub fn backend(meta: &VipMeta, key: &FlowKey) -> Result<(u32, &'static BackendInfo), u32> {
    let ring = RINGS.get(meta.index).ok_or(drop::NO_BACKEND)?;
    // Size and slots come from the same ring map, so they always match.
    let size = ring.get(0).ok_or(drop::NO_BACKEND)?[0];
    if size == 0 {
        return Err(drop::NO_BACKEND);
    }
    let hash = if meta.flags & VIP_F_SOURCE_AFFINITY != 0 {
        source_hash(&key.src)
    } else {
        flow_hash(key)
    };
    let (element, word) = ring_word(RING_FIRST_SLOT + hash % size);
    let id = ring.get(element).ok_or(drop::NO_BACKEND)?[word];
    if id == NO_BACKEND {
        return Err(drop::NO_BACKEND);
    }
    let info = BACKENDS.get(id).ok_or(drop::BAD_BACKEND)?;
    if info.flags & BACKEND_F_ACTIVE == 0 {
        return Err(drop::BAD_BACKEND);
    }
    Ok((id, info))
}
