//! VRRP's server addresses (`[[vrrp.group]] server_addresses`: the
//! backends' gateway, which the group's master holds on `server_interface`)
//! marked in `VIP_ADDRS`. A master killed outright leaves its addresses on
//! its NICs; the data plane stops answering ARP/ND for marked addresses
//! once the control-plane lease has run out, so a dead master stops
//! answering for the gateway as it does for the VIPs, and the backends
//! follow the new master's gratuitous ARP for good.
//!
//! The marks stay for as long as the config has the addresses, on every
//! node whichever is master: a mark matters only after the lease ran out.

use std::collections::BTreeSet;

use anyhow::Result;
use lb_common::VipKey;

use super::leftovers::Leftovers;
use crate::config::Config;
use crate::maps::MapStore;

#[derive(Debug, Default)]
pub(super) struct ServerAddresses {
    /// What the config has (address-only keys).
    wanted: BTreeSet<VipKey>,
    /// The marks the data plane has.
    marked: BTreeSet<VipKey>,
}

/// The address-only keys of `config`'s server addresses.
pub(super) fn of_config(config: &Config) -> BTreeSet<VipKey> {
    config
        .vrrp
        .iter()
        .flat_map(|v| &v.groups)
        .flat_map(|g| &g.server_addresses)
        .map(|a| VipKey::new(*a, 0, 0))
        .collect()
}

impl ServerAddresses {
    /// A restart: the `VIP_ADDRS` marks of no VIP are a predecessor's
    /// server addresses (or a removed VIP's mark it did not get to clear).
    /// Kept as marked; the next [`ServerAddresses::sync`] clears those the
    /// config does not have.
    pub(super) fn adopt(&mut self, marks: impl IntoIterator<Item = VipKey>) {
        self.marked.extend(marks);
    }

    /// The config's server addresses from now on.
    pub(super) fn want(&mut self, wanted: BTreeSet<VipKey>) {
        self.wanted = wanted;
    }

    /// The config has this address.
    pub(super) fn wants(&self, key: &VipKey) -> bool {
        self.wanted.contains(key)
    }

    /// Marks what is wanted and not marked; hands marks no longer wanted
    /// to `leftovers` (which keeps those a VIP uses). A failed write is
    /// retried by the next call.
    pub(super) fn sync(
        &mut self,
        maps: &mut impl MapStore,
        leftovers: &mut Leftovers,
    ) -> Result<()> {
        let mut first_error = None;
        for key in self
            .wanted
            .difference(&self.marked)
            .copied()
            .collect::<Vec<_>>()
        {
            match maps.set_vip_addr(&key) {
                Ok(()) => {
                    self.marked.insert(key);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let gone: Vec<VipKey> = self.marked.difference(&self.wanted).copied().collect();
        for key in gone {
            self.marked.remove(&key);
            leftovers.vip_addr(key);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Marks still to write.
    pub(super) fn unsynced(&self) -> bool {
        !self.wanted.is_subset(&self.marked)
    }
}
