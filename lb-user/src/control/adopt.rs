//! A restarted control plane takes over what its predecessor left in the
//! pinned maps instead of starting from nothing: every VIP with its index,
//! every backend with its id, generation, MAC and runtime drain/weight,
//! the retired backends with the end of their grace, a digest of each
//! installed ring, and the address marks of no VIP (VRRP server
//! addresses). The first `apply` then writes only what the config
//! changes: an unchanged config writes nothing, so traffic never notices
//! the restart.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, ensure};
use lb_common::{LB_F_FORWARDING, LB_F_NAT, OWNER_F_IN_USE, OWNER_F_RETIRED, VipKey};

use super::{
    Controller,
    backend::{Backend, owner_address},
    retire::instant_of_unix,
    vip::Vip,
};
use crate::maps::MapStore;

/// What [`Controller::adopt`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Adopted {
    pub vips: usize,
    pub backends: usize,
    pub retired: usize,
    /// `VIP_ADDRS` marks of no VIP (VRRP server addresses).
    pub other_addrs: usize,
    /// `CONTROL_LEASE` as the predecessor left it (0: none).
    pub lease_until_ns: u64,
}

impl<M: MapStore> Controller<M> {
    /// Reads the state a previous control plane left in the maps into the
    /// model. Writes nothing (ids of VIPs that are gone are freed by the
    /// next `apply`). Call once, before the first `apply`; on maps that
    /// are empty it finds nothing.
    pub fn adopt(&mut self) -> Result<Adopted> {
        ensure!(self.vips.is_empty(), "adopt runs before the first apply");
        let lb = self.maps.config()?;
        if lb.flags & LB_F_FORWARDING != 0 {
            self.lb_config = Some(lb);
            self.nat = lb.flags & LB_F_NAT != 0;
        }
        let mut found = Adopted {
            lease_until_ns: self.maps.lease()?,
            ..Adopted::default()
        };
        let mut by_index: BTreeMap<u32, Vip> = BTreeMap::new();
        for (key, meta) in self.maps.vips()? {
            let digest = self.maps.ring_digest(meta.index)?;
            let addr = self.maps.is_vip_addr(&key.address_only())?;
            by_index.insert(meta.index, Vip::adopted(key, meta, digest, addr));
        }
        let mut used = BTreeSet::new();
        let mut generations = Vec::new();
        for (id, owner) in self.maps.owners()? {
            generations.push((id, owner.generation));
            if owner.flags & OWNER_F_IN_USE == 0 {
                continue;
            }
            used.insert(id);
            let info = self.maps.backend(id)?;
            let mut backend = Backend::adopted(id, &owner, &info);
            backend.written = Some((info, owner));
            match by_index.get_mut(&owner.vip) {
                Some(vip) if owner.flags & OWNER_F_RETIRED != 0 => {
                    let until = instant_of_unix(owner.retired_until_unix_s);
                    self.retiring
                        .retire(vip.key, vip.index, vip.name(), backend, until);
                    found.retired += 1;
                }
                Some(vip) => {
                    vip.backends.push(backend);
                    found.backends += 1;
                }
                None => {
                    tracing::info!(backend = %owner_address(&owner), id,
                        "backend of a VIP that is gone: its entry is freed");
                    self.leftovers.backend(id, owner.generation);
                }
            }
        }
        // The owner records of adopted retired backends already say so.
        for r in self.retiring.unrecorded() {
            r.recorded = true;
        }
        // Marks of no VIP: the server addresses of VRRP groups (kept; the
        // first apply clears those the config no longer has).
        let vip_addrs: BTreeSet<VipKey> = by_index
            .values()
            .filter(|v| v.addr_published)
            .map(|v| v.key.address_only())
            .collect();
        let others: Vec<VipKey> = self
            .maps
            .vip_addrs()?
            .into_iter()
            .filter(|a| !vip_addrs.contains(a))
            .collect();
        found.other_addrs = others.len();
        self.server_addrs.adopt(others);
        let indices: BTreeSet<u32> = by_index.keys().copied().collect();
        self.ids.adopt(&indices, &used, generations);
        found.vips = by_index.len();
        self.vips = by_index.into_values().map(|v| (v.key, v)).collect();
        if found.vips > 0 {
            tracing::info!(
                vips = found.vips,
                backends = found.backends,
                retired = found.retired,
                other_addresses = found.other_addrs,
                "adopted the data plane's state"
            );
        }
        Ok(found)
    }
}
