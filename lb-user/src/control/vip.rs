//! One VIP as the controller keeps it: its settings, its backends (each
//! holding its own config and state), and what of it the data plane has
//! been given. [`Vip::sync`] writes the backends, the ring (only when its
//! input changed) and the VIP entry, in the order that never lets a packet
//! reach a ring naming a backend whose entry is not written yet. Every write
//! is idempotent, and the record of what was written is updated only after
//! it succeeded, so a sync that failed half-way is completed by the next.

use std::net::IpAddr;

use anyhow::{Context as _, Result};
use lb_common::{
    MODE_DSR, MODE_NAT, NO_BACKEND, VIP_F_SOURCE_AFFINITY, VIP_F_STANDBY, VipKey, VipMeta,
};

use super::backend::Backend;
use crate::{
    config::{Affinity, Mode, OnDown, Protocol, VipConfig},
    maglev,
    maps::MapStore,
};

/// What the controller keeps of a [`VipConfig`] besides its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VipSettings {
    pub(super) name: String,
    pub(super) address: IpAddr,
    pub(super) port: u16,
    pub(super) protocol: Protocol,
    pub(super) mode: Mode,
    pub(super) ring_size: u32,
    pub(super) affinity: Affinity,
    pub(super) on_down: OnDown,
}

impl From<&VipConfig> for VipSettings {
    fn from(v: &VipConfig) -> Self {
        Self {
            name: v.name.clone(),
            address: v.address,
            port: v.port,
            protocol: v.protocol,
            mode: v.mode,
            ring_size: v.ring_size,
            affinity: v.affinity,
            on_down: v.on_down,
        }
    }
}

/// The input of a ring: its size and its members in backend order. The
/// ring is rebuilt only when this changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RingInput {
    pub(super) size: u32,
    pub(super) members: Vec<maglev::Member>,
}

#[derive(Debug)]
pub(super) struct Vip {
    pub(super) key: VipKey,
    /// Index into `RINGS` and `VIP_STATS`, stable for the VIP's life.
    pub(super) index: u32,
    pub(super) settings: VipSettings,
    pub(super) backends: Vec<Backend>,
    /// The ring the data plane has, `None` before the first install.
    pub(super) ring: Option<RingInput>,
    /// The `VIPS` entry the data plane has, `None` before it is published.
    pub(super) published: Option<VipMeta>,
    /// `VIP_ADDRS` has this VIP's address.
    pub(super) addr_published: bool,
    /// The last sync completed; a VIP whose sync failed is synced again on
    /// the next neighbour refresh.
    pub(super) synced: bool,
    /// A fresh index whose counters (a previous VIP's) are not reset yet.
    reset_counters: bool,
    /// Gone from the configuration, but unpublishing it failed: retried.
    pub(super) removing: bool,
}

impl Vip {
    pub(super) fn new(key: VipKey, index: u32, settings: VipSettings) -> Self {
        Self {
            key,
            index,
            settings,
            backends: Vec::new(),
            ring: None,
            published: None,
            addr_published: false,
            synced: false,
            reset_counters: true,
            removing: false,
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.settings.name
    }

    /// The backend at `address`, if this VIP has one.
    pub(super) fn backend_mut(&mut self, address: IpAddr) -> Option<&mut Backend> {
        self.backends
            .iter_mut()
            .find(|b| b.config.address == address)
    }

    /// The `VIPS` entry this VIP should have.
    pub(super) fn meta(&self, standby: bool) -> VipMeta {
        VipMeta {
            index: self.index,
            mode: match self.settings.mode {
                Mode::Dsr => MODE_DSR,
                Mode::Nat => MODE_NAT,
            },
            flags: match self.settings.affinity {
                Affinity::Flow => 0,
                Affinity::Source => VIP_F_SOURCE_AFFINITY,
            } | if standby { VIP_F_STANDBY } else { 0 },
            _pad: 0,
        }
    }

    /// Backends in the ring now (what the data plane uses for new flows).
    pub(super) fn usable_backends(&self) -> usize {
        self.ring.as_ref().map_or(0, |r| r.members.len())
    }

    /// Makes the data plane match this VIP: the counters of fresh ids
    /// reset, every backend entry, the ring (rebuilt only when the set of
    /// usable backends, their weights or the size changed), then the VIP
    /// entry (with `standby`) and its address.
    pub(super) fn sync(&mut self, maps: &mut impl MapStore, standby: bool) -> Result<()> {
        self.synced = false;
        self.reset_counters(maps)?;
        self.write_backends(maps)?;
        self.write_ring(maps)?;
        self.publish(maps, standby)?;
        self.synced = true;
        Ok(())
    }

    fn reset_counters(&mut self, maps: &mut impl MapStore) -> Result<()> {
        if self.reset_counters {
            maps.reset_vip_counters(self.index)?;
            self.reset_counters = false;
        }
        for b in self.backends.iter_mut().filter(|b| b.reset_counters) {
            maps.reset_backend_counters(b.id)?;
            b.reset_counters = false;
        }
        Ok(())
    }

    fn write_backends(&self, maps: &mut impl MapStore) -> Result<()> {
        let (mode, on_down) = (self.settings.mode, self.settings.on_down);
        for b in &self.backends {
            maps.set_backend(b.id, &b.info(mode, on_down))
                .with_context(|| format!("VIP {}: backend {}", self.name(), b.config.name))?;
        }
        Ok(())
    }

    fn write_ring(&mut self, maps: &mut impl MapStore) -> Result<()> {
        let mode = self.settings.mode;
        let usable: Vec<&Backend> = self.backends.iter().filter(|b| b.usable(mode)).collect();
        let input = RingInput {
            size: self.settings.ring_size,
            members: usable.iter().map(|b| b.member()).collect(),
        };
        if self.ring.as_ref() == Some(&input) {
            return Ok(());
        }
        let had_members = self.ring.as_ref().is_some_and(|r| !r.members.is_empty());
        let slots: Vec<u32> = if usable.is_empty() {
            Vec::new()
        } else {
            maglev::build_table(&input.members, input.size)
                .iter()
                .map(|&m| {
                    if m == maglev::EMPTY {
                        NO_BACKEND
                    } else {
                        usable[m as usize].id
                    }
                })
                .collect()
        };
        maps.install_ring(self.index, &slots)
            .with_context(|| format!("installing the ring of VIP {}", self.name()))?;
        tracing::info!(vip = %self.name(), backends = usable.len(), slots = input.size,
            "Maglev table installed");
        if usable.is_empty() && !self.backends.is_empty() {
            let count =
                |f: &dyn Fn(&Backend) -> bool| self.backends.iter().filter(|b| f(b)).count();
            tracing::error!(vip = %self.name(), backends = self.backends.len(),
                unhealthy = count(&|b| !b.health_up()),
                weight_zero = count(&|b| b.weight() == 0),
                unresolved = count(&|b| !b.reachable(mode)),
                "no usable backend: new connections to this VIP are dropped (counted as no_backend)");
        } else if !usable.is_empty() && !had_members && self.ring.is_some() {
            tracing::info!(vip = %self.name(), backends = usable.len(), "VIP has usable backends again");
        }
        self.ring = Some(input);
        Ok(())
    }

    /// Writes the `VIPS` entry if it differs from the published one, and
    /// marks the address as carrying VIPs.
    pub(super) fn publish(&mut self, maps: &mut impl MapStore, standby: bool) -> Result<()> {
        let meta = self.meta(standby);
        if self.published != Some(meta) {
            maps.set_vip(&self.key, &meta)?;
            self.published = Some(meta);
        }
        if !self.addr_published {
            maps.set_vip_addr(&self.key.address_only())?;
            self.addr_published = true;
        }
        Ok(())
    }
}
