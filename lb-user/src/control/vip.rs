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
    FAMILY_V4, IPPROTO_UDP, MODE_DSR, MODE_NAT, NO_BACKEND, VIP_F_SOURCE_AFFINITY, VIP_F_STANDBY,
    VipKey, VipMeta,
};

use super::{
    backend::{Backend, RESOLVE_GRACE},
    rings::{StagedRing, Tables},
    tiers,
};
use crate::{
    config::{Affinity, Mode, OnDown, Protocol, VipConfig},
    health::Health,
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
    pub(super) min_usable: u32,
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
            min_usable: v.min_usable,
        }
    }
}

/// The input of a ring: its size and its members in backend order. The
/// ring is rebuilt only when this changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct RingInput {
    pub(super) size: u32,
    pub(super) members: Vec<maglev::Member>,
}

impl RingInput {
    /// A digest of the input, kept next to the installed ring
    /// (`RING_INPUTS`): a restarted controller that builds the same input
    /// knows the installed ring is already the one it would install. A
    /// 64-bit FNV-1a over the size and each member's identity and weight;
    /// never 0 (which means "nothing recorded"). Frozen: changing it only
    /// makes the first restart after an upgrade reinstall every ring.
    pub(super) fn digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        // In identity order: the table does not depend on the members'
        // order, so neither does its digest.
        let mut members: Vec<&maglev::Member> = self.members.iter().collect();
        members.sort_by_key(|m| m.identity);
        eat(&self.size.to_le_bytes());
        for m in members {
            eat(&m.identity);
            eat(&m.weight.to_le_bytes());
        }
        h.max(1)
    }
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
    /// Taken over from a previous control plane: the digest of the ring it
    /// installed, whose input is not known until the config says it.
    pub(super) adopted_ring: Option<u64>,
    /// Gone from the configuration, but unpublishing it failed: retried.
    pub(super) removing: bool,
    /// The configuration the model was last brought to.
    pub(super) applied: Option<VipConfig>,
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
            adopted_ring: None,
            removing: false,
            applied: None,
        }
    }

    /// A VIP a previous control plane left in the maps. Its settings are
    /// placeholders (only the mode is known) until the config's replace
    /// them; a VIP the config no longer has is removed with them.
    pub(super) fn adopted(key: VipKey, meta: VipMeta, ring_digest: u64, addr: bool) -> Self {
        let address = if key.family == FAMILY_V4 {
            IpAddr::from([key.addr[0], key.addr[1], key.addr[2], key.addr[3]])
        } else {
            IpAddr::from(key.addr)
        };
        let port = u16::from_be(key.port);
        let protocol = if key.proto == IPPROTO_UDP {
            Protocol::Udp
        } else {
            Protocol::Tcp
        };
        let settings = VipSettings {
            name: format!("{address}:{port}/{}", protocol.as_str()),
            address,
            port,
            protocol,
            mode: if meta.mode == MODE_NAT {
                Mode::Nat
            } else {
                Mode::Dsr
            },
            ring_size: 0,
            affinity: if meta.flags & VIP_F_SOURCE_AFFINITY != 0 {
                Affinity::Source
            } else {
                Affinity::Flow
            },
            on_down: OnDown::Keep,
            min_usable: 1,
        };
        Self {
            key,
            index: meta.index,
            settings,
            backends: Vec::new(),
            ring: None,
            published: Some(meta),
            addr_published: addr,
            synced: true,
            reset_counters: false,
            adopted_ring: (ring_digest != 0).then_some(ring_digest),
            removing: false,
            applied: None,
        }
    }

    /// Whether applying `cfg` would change nothing: the model is at `cfg`
    /// and synced, and no runtime drain or weight (which an apply resets)
    /// is set on a backend of the file. A reload skips such a VIP, so that
    /// its cost follows what changed rather than how many VIPs there are.
    pub(super) fn unchanged_by(&self, cfg: &VipConfig) -> bool {
        self.applied.as_ref() == Some(cfg)
            && self.synced
            && !self.removing
            && self.backends.iter().all(|b| {
                b.adopted.is_none() && (b.runtime || !b.drained && b.weight_override.is_none())
            })
    }

    pub(super) fn name(&self) -> &str {
        &self.settings.name
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

    /// The highest backend tier that takes new flows now (see
    /// [`tiers::serving_cutoff`]); `None` without backends.
    pub(super) fn serving_cutoff(&self) -> Option<u8> {
        let mode = self.settings.mode;
        tiers::serving_cutoff(
            self.backends
                .iter()
                .map(|b| (b.config.tier, b.usable(mode))),
            self.settings.min_usable,
        )
    }

    /// The tiers that have backends and take new flows (at or below
    /// `cutoff`, [`Vip::serving_cutoff`]), lowest first.
    pub(super) fn serving_tiers(&self, cutoff: Option<u8>) -> Vec<u8> {
        tiers::serving_tiers(self.backends.iter().map(|b| b.config.tier), cutoff)
    }

    /// The backends the ring is built from: usable, in a serving tier.
    fn ring_members(&self) -> Vec<&Backend> {
        let mode = self.settings.mode;
        let Some(cutoff) = self.serving_cutoff() else {
            return Vec::new();
        };
        self.backends
            .iter()
            .filter(|b| b.usable(mode) && b.config.tier <= cutoff)
            .collect()
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
        let staged = self.sync_stage(maps, &mut Tables::default())?;
        if staged.is_some() {
            maps.publish_rings()
                .with_context(|| format!("installing the ring of VIP {}", self.name()))?;
        }
        self.sync_finish(maps, staged, standby)
    }

    /// The first half of [`Vip::sync`]: counters, backend entries, and the
    /// new ring staged (`Some`) if it changed. [`Vip::sync_finish`] follows
    /// once the staged rings are published.
    pub(super) fn sync_stage(
        &mut self,
        maps: &mut impl MapStore,
        tables: &mut Tables,
    ) -> Result<Option<StagedRing>> {
        self.synced = false;
        self.reset_counters(maps)?;
        self.write_backends(maps)?;
        self.stage_ring(maps, tables)
    }

    /// The second half of [`Vip::sync`], after the ring `staged` (if any)
    /// was published: records it, then writes the VIP entry.
    pub(super) fn sync_finish(
        &mut self,
        maps: &mut impl MapStore,
        staged: Option<StagedRing>,
        standby: bool,
    ) -> Result<()> {
        if let Some(ring) = staged {
            self.ring_published(maps, ring)?;
        }
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

    /// Writes the entry and the owner record of every backend whose
    /// changed since they were last written.
    fn write_backends(&mut self, maps: &mut impl MapStore) -> Result<()> {
        let (mode, on_down, index) = (self.settings.mode, self.settings.on_down, self.index);
        for b in &mut self.backends {
            // The owner's "in ring" flag records usable (healthy), whatever
            // its tier: a restart takes the health from it, so that a backup
            // which was not serving comes back up, not unchecked.
            let want = (b.info(index, mode, on_down), b.owner(index, b.usable(mode)));
            if b.written == Some(want) {
                continue;
            }
            maps.set_backend(b.id, &want.0)
                .and_then(|()| maps.set_owner(b.id, &want.1))
                .with_context(|| {
                    format!("VIP {}: backend {}", self.settings.name, b.config.name)
                })?;
            b.written = Some(want);
        }
        Ok(())
    }

    /// Stages the ring if its input changed since the last one published.
    fn stage_ring(
        &mut self,
        maps: &mut impl MapStore,
        tables: &mut Tables,
    ) -> Result<Option<StagedRing>> {
        let usable = self.ring_members();
        let input = RingInput {
            size: self.settings.ring_size,
            members: usable.iter().map(|b| b.member()).collect(),
        };
        if self.ring.as_ref() == Some(&input) {
            return Ok(None);
        }
        let digest = input.digest();
        if self.ring.is_none() && self.adopted_ring == Some(digest) {
            // The previous control plane installed exactly this ring.
            self.adopted_ring = None;
            self.ring = Some(input);
            return Ok(None);
        }
        let slots: Vec<u32> = if usable.is_empty() {
            Vec::new()
        } else {
            tables
                .table(&input)
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
        maps.stage_ring(self.index, &slots)
            .with_context(|| format!("building the ring of VIP {}", self.name()))?;
        Ok(Some(StagedRing { input, digest }))
    }

    /// Records a ring [`Vip::stage_ring`] made, now that it is published.
    fn ring_published(&mut self, maps: &mut impl MapStore, staged: StagedRing) -> Result<()> {
        let StagedRing { input, digest } = staged;
        maps.set_ring_digest(self.index, digest)
            .with_context(|| format!("installing the ring of VIP {}", self.name()))?;
        self.adopted_ring = None;
        let had_members = self.ring.as_ref().is_some_and(|r| !r.members.is_empty());
        let usable = input.members.len();
        tracing::info!(vip = %self.name(), backends = usable, slots = input.size,
            "Maglev table installed");
        if usable == 0 && !self.backends.is_empty() {
            self.report_unusable();
        } else if usable > 0 && !had_members && self.ring.is_some() {
            tracing::info!(vip = %self.name(), backends = usable, "VIP has usable backends");
        }
        self.ring = Some(input);
        Ok(())
    }

    /// Whether a VIP without usable backends is only starting: every
    /// backend that is out is out for no reason of its own yet (no MAC
    /// within its grace, no health verdict yet).
    pub(super) fn only_starting(&self) -> bool {
        let mode = self.settings.mode;
        self.backends.iter().all(|b| {
            let checked_down = b.health.as_ref().is_some_and(|t| t.state() == Health::Down);
            let lost = !b.reachable(mode) && b.unresolved_for >= RESOLVE_GRACE;
            b.weight() > 0 && !checked_down && !lost
        })
    }

    /// Says why the VIP has no usable backend: at INFO while it is only
    /// starting ([`Vip::only_starting`]), an ERROR otherwise.
    pub(super) fn report_unusable(&self) {
        let mode = self.settings.mode;
        let count = |f: &dyn Fn(&Backend) -> bool| self.backends.iter().filter(|b| f(b)).count();
        let unhealthy = count(&|b| !b.health_up());
        let weight_zero = count(&|b| b.weight() == 0);
        let unresolved = count(&|b| !b.reachable(mode));
        if self.only_starting() {
            tracing::info!(vip = %self.name(), backends = self.backends.len(), unresolved,
                unchecked = unhealthy,
                "VIP not serving yet: waiting for backend MACs and first health checks");
        } else {
            tracing::error!(vip = %self.name(), backends = self.backends.len(), unhealthy,
                weight_zero, unresolved,
                "no usable backend: new connections to this VIP are dropped (counted as no_backend)");
        }
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
