//! What the data plane still holds of removed VIPs and backends. A removed
//! VIP is unpublished first, so nothing below is reachable by a packet;
//! its ring, its address mark and its backends' entries are then cleared,
//! and each index or id goes back to its pool only once its entry is
//! cleared, so a reused id never starts with a stale entry. What could not
//! be cleared stays here and is retried.

use anyhow::Result;
use lb_common::{BackendOwner, VipKey};

use super::ids::Ids;
use crate::maps::MapStore;

#[derive(Debug, Default)]
pub(super) struct Leftovers {
    /// `VIP_ADDRS` marks of addresses no VIP may be using any more.
    vip_addrs: Vec<VipKey>,
    /// VIP indices whose ring is to be emptied.
    rings: Vec<u32>,
    /// Backend ids (and their generation, kept in the cleared owner record)
    /// whose entry is to be cleared.
    backends: Vec<(u32, u16)>,
}

impl Leftovers {
    pub(super) fn vip_addr(&mut self, key: VipKey) {
        self.vip_addrs.push(key);
    }

    pub(super) fn ring(&mut self, index: u32) {
        self.rings.push(index);
    }

    pub(super) fn backend(&mut self, id: u32, generation: u16) {
        self.backends.push((id, generation));
    }

    /// Clears what it can and returns those ids to `ids`. `in_use` says
    /// whether a live VIP has an address (it then keeps its mark).
    pub(super) fn clear(
        &mut self,
        maps: &mut impl MapStore,
        ids: &mut Ids,
        in_use: impl Fn(&VipKey) -> bool,
    ) -> Result<()> {
        let mut first_error = None;
        let mut keep = |r: Result<()>| match r {
            Ok(()) => false,
            Err(e) => {
                first_error.get_or_insert(e);
                true
            }
        };
        self.vip_addrs
            .retain(|a| !in_use(a) && keep(maps.remove_vip_addr(a)));
        self.rings.retain(|&index| {
            let r = maps
                .install_ring(index, &[])
                .and_then(|()| maps.set_ring_digest(index, 0));
            let failed = keep(r);
            if !failed {
                ids.vips.give(index);
            }
            failed
        });
        self.backends.retain(|&(id, generation)| {
            // A free id keeps its generation on record, so that a restarted
            // controller hands it out with a new one.
            let free = BackendOwner {
                generation,
                ..BackendOwner::default()
            };
            let r = maps
                .clear_backend(id)
                .and_then(|()| maps.set_owner(id, &free));
            let failed = keep(r);
            if !failed {
                ids.backends.give(id);
            }
            failed
        });
        first_error.map_or(Ok(()), Err)
    }

    /// Nothing left to clear.
    pub(super) fn is_empty(&self) -> bool {
        self.vip_addrs.is_empty() && self.rings.is_empty() && self.backends.is_empty()
    }
}
