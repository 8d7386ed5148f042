//! Turns a validated [`Config`] plus the kernel's neighbour table into the
//! state of the BPF maps, and keeps it there.
//!
//! VIP indices and backend ids are allocated once per identity and kept
//! across reloads, so counters survive and unchanged rings are not touched.
//! A backend is in its VIP's Maglev ring only while it is *usable*: its MAC
//! is known, its weight (runtime override or file) is above zero, and its
//! health check (if any) says up. Leaving the ring affects new flows only:
//! the backend's `BACKENDS` entry stays active, so flows the connection
//! table already tracks keep reaching it, unless `on_down = "reschedule"`
//! flags the entry so that those flows are hashed again.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
};

use anyhow::{Context as _, Result, bail};
use lb_common::{
    BACKEND_F_ACTIVE, BackendInfo, FAMILY_V4, FAMILY_V6, LB_F_FORWARDING, LB_F_NAT, LbConfig,
    MAX_BACKENDS, MAX_VIPS, MODE_DSR, MODE_NAT, VIP_F_SOURCE_AFFINITY, VIP_F_STANDBY, VipKey,
    VipMeta, ct, drop, global,
};

mod retire;
mod standby;

use crate::{
    config::{Affinity, BackendConfig, Config, ConntrackConfig, Mode, VipConfig},
    dataplane::{Attached, Dataplane},
    health::{Health, Tracker},
    maglev,
    maps::Maps,
    status::{BackendState, BackendStatus, Status, VipStatus},
};

mod backend;
mod runtime;

pub use backend::BackendAction;
use backend::BackendSlot;

/// Where neighbour MACs come from: the kernel (netlink) in production, a
/// table in tests.
pub trait Neighbours {
    fn lookup(&mut self) -> Result<HashMap<IpAddr, [u8; 6]>>;
    fn probe(&mut self, addr: IpAddr) -> Result<()>;
}

/// `addr` as the data plane stores it (IPv4 in the first four bytes), and
/// its family.
pub fn addr_bytes(addr: IpAddr) -> ([u8; 16], u8) {
    match addr {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (b, FAMILY_V4)
        }
        IpAddr::V6(a) => (a.octets(), FAMILY_V6),
    }
}

pub fn vip_key(vip: &VipConfig) -> VipKey {
    let (addr, family) = addr_bytes(vip.address);
    VipKey {
        addr,
        port: vip.port.to_be(),
        proto: vip.protocol.number(),
        family,
    }
}

/// The key marking an address as carrying VIPs (port and protocol zero).
fn vip_addr_key(key: &VipKey) -> VipKey {
    VipKey {
        port: 0,
        proto: 0,
        ..*key
    }
}

/// Ids from `1..limit` (0 is reserved), lowest free first.
struct IdPool {
    next: u32,
    free: Vec<u32>,
    limit: u32,
}

impl IdPool {
    fn new(first: u32, limit: u32) -> Self {
        Self {
            next: first,
            free: Vec::new(),
            limit,
        }
    }

    fn take(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop() {
            return Some(id);
        }
        if self.next >= self.limit {
            return None;
        }
        self.next += 1;
        Some(self.next - 1)
    }

    fn give(&mut self, id: u32) {
        self.free.push(id);
    }

    /// How many more ids `take` can hand out.
    fn available(&self) -> usize {
        self.free.len() + (self.limit - self.next) as usize
    }
}

/// A known MAC is given up only after this many consecutive refreshes
/// without a usable neighbour entry: entries briefly vanish or go INCOMPLETE
/// while the kernel revalidates them, and dropping the backend from the ring
/// for that would move its flows for nothing.
const MAC_LOST_AFTER: u32 = 3;

struct VipSlot {
    index: u32,
    config: VipConfig,
    backends: Vec<BackendSlot>,
    /// The input of the ring currently installed (its size and members);
    /// the ring is rebuilt only when this changes.
    installed: Option<(u32, Vec<maglev::Member>)>,
}

pub struct Controller {
    dp: Dataplane,
    interface: String,
    attached: Option<Attached>,
    vips: BTreeMap<VipKey, VipSlot>,
    vip_pool: IdPool,
    backend_pool: IdPool,
    /// Current generation of every backend id.
    generations: Vec<u16>,
    /// Names of VIPs whose VRRP group this node does not master.
    standby: std::collections::HashSet<String>,
    /// Backends removed from the configuration whose flows may go on.
    retired: Vec<retire::Retired>,
    /// Connection-table settings (how long removed backends are kept).
    conntrack: ConntrackConfig,
}

impl Controller {
    pub fn new(dp: Dataplane, interface: &str) -> Self {
        Self {
            dp,
            interface: interface.to_string(),
            attached: None,
            vips: BTreeMap::new(),
            vip_pool: IdPool::new(0, MAX_VIPS),
            backend_pool: IdPool::new(1, MAX_BACKENDS),
            generations: vec![0; MAX_BACKENDS as usize],
            standby: Default::default(),
            retired: Vec::new(),
            conntrack: ConntrackConfig::default(),
        }
    }

    pub fn dataplane(&self) -> &Dataplane {
        &self.dp
    }

    pub fn maps(&mut self) -> &mut Maps {
        &mut self.dp.maps
    }

    /// Attaches the program to the configured interface; call after the
    /// first `apply` so that the first packet already sees every VIP.
    pub fn attach(&mut self, allow_native: bool, allow_generic: bool) -> Result<Attached> {
        let interface = self.interface.clone();
        self.attach_to(&interface, allow_native, allow_generic)
    }

    /// Attaches the program to one more interface (the server side of a
    /// two-armed NAT layout).
    pub fn attach_to(
        &mut self,
        interface: &str,
        allow_native: bool,
        allow_generic: bool,
    ) -> Result<Attached> {
        let attached = self.dp.attach(interface, allow_native, allow_generic)?;
        self.attached.get_or_insert(attached);
        Ok(attached)
    }

    /// Makes the maps serve `config`'s VIPs. VIPs and backends that stay keep
    /// their index/id (and counters); new ones are added, gone ones removed.
    pub fn apply(&mut self, config: &Config, neighbours: &mut dyn Neighbours) -> Result<()> {
        // Read once, before anything changes: new DSR backends start with
        // the MAC the kernel already knows, so a new VIP's first ring is
        // its real one (one install, no "no usable backend" in between).
        let table = neighbours.lookup().context("reading the neighbour table")?;
        self.conntrack = config.conntrack;
        let wanted: BTreeMap<VipKey, &VipConfig> =
            config.vips.iter().map(|v| (vip_key(v), v)).collect();

        let gone: Vec<VipKey> = self
            .vips
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            self.remove_vip(&key)?;
        }
        for (key, vip) in wanted {
            self.upsert_vip(key, vip, &table)?;
        }
        // Replies are looked up in NAT_REVERSE only while some VIP needs it.
        let mut lb = self.dp.maps.config()?;
        if config.vips.iter().any(|v| v.mode == Mode::Nat) {
            lb.flags |= LB_F_NAT;
        } else {
            lb.flags &= !LB_F_NAT;
        }
        self.dp.maps.set_config(&lb)?;
        self.refresh_from(&table, neighbours)
    }

    fn remove_vip(&mut self, key: &VipKey) -> Result<()> {
        let Some(slot) = self.vips.remove(key) else {
            return Ok(());
        };
        // Unpublish first, then free what the data plane can no longer reach.
        self.dp.maps.remove_vip(key)?;
        if !self
            .vips
            .keys()
            .any(|k| vip_addr_key(k) == vip_addr_key(key))
        {
            self.dp.maps.remove_vip_addr(&vip_addr_key(key))?;
        }
        self.dp.maps.install_ring(slot.index, &[])?;
        for b in slot.backends {
            self.dp.maps.clear_backend(b.id)?;
            self.backend_pool.give(b.id);
        }
        self.free_retired(std::time::Instant::now(), Some(key))?;
        self.vip_pool.give(slot.index);
        tracing::info!(vip = %slot.config.name, "VIP removed");
        Ok(())
    }

    fn upsert_vip(
        &mut self,
        key: VipKey,
        vip: &VipConfig,
        neighbours: &HashMap<IpAddr, [u8; 6]>,
    ) -> Result<()> {
        if !self.vips.contains_key(&key) {
            let Some(index) = self.vip_pool.take() else {
                bail!("too many VIPs (limit {MAX_VIPS})");
            };
            self.dp.maps.reset_vip_counters(index)?;
            // No ring yet: `sync_backends_and_ring` installs the first one
            // (`installed` is None) before the VIP entry is published,
            // and every ring install costs the kernel an RCU grace period.
            self.vips.insert(
                key,
                VipSlot {
                    index,
                    config: vip.clone(),
                    backends: Vec::new(),
                    installed: None,
                },
            );
            tracing::info!(vip = %vip.name, address = %vip.address, port = vip.port,
                protocol = vip.protocol.as_str(), "VIP added");
        }
        // Nothing below may fail half-way: the backend slots are paired with
        // `slot.config.backends` by position, and a VIP left with one list
        // but not the other forgets its backends. So the ids come first.
        let slot = &self.vips[&key];
        let kept: HashSet<IpAddr> = slot
            .backends
            .iter()
            .zip(&slot.config.backends)
            .map(|(_, c)| c.address)
            .collect();
        let needed = vip
            .backends
            .iter()
            .filter(|b| !kept.contains(&b.address) && self.retired_index(&key, b.address).is_none())
            .count();
        if needed > self.backend_pool.available() {
            bail!(
                "too many backends (limit {}): VIP {} needs {needed} more ids, {} are free",
                MAX_BACKENDS - 1,
                vip.name,
                self.backend_pool.available()
            );
        }

        // Keep ids (and MACs) of backends that stay, by address.
        let slot = self.vips.get_mut(&key).expect("inserted above");
        let mut old: HashMap<IpAddr, (BackendConfig, BackendSlot)> = slot
            .backends
            .drain(..)
            .zip(slot.config.backends.iter())
            .map(|(b, c)| (c.address, (c.clone(), b)))
            .collect();
        let mut backends = Vec::with_capacity(vip.backends.len());
        let mut fresh = Vec::new();
        for b in &vip.backends {
            if let Some((_, mut kept)) = old.remove(&b.address) {
                kept.reconfigure(&vip.name, b);
                backends.push(kept);
            } else if let Some(mut back) = self.unretire(&key, b.address) {
                // Re-added within its grace: same id and generation, so the
                // flows it still carries keep matching.
                tracing::info!(vip = %vip.name, backend = %b.name, "removed backend re-added");
                back.reconfigure(&vip.name, b);
                backends.push(back);
            } else {
                let id = self.backend_pool.take().expect("counted above");
                fresh.push(id);
                // A new owner of the id: connection-table entries made for
                // the previous one must not match it.
                let generation = &mut self.generations[id as usize];
                *generation = generation.wrapping_add(1);
                let mac = neighbours.get(&b.address).copied();
                backends.push(BackendSlot::new(id, *generation, b, mac));
            }
        }
        let slot = self.vips.get_mut(&key).expect("inserted above");
        slot.backends = backends;
        slot.config = vip.clone();
        // Removed backends leave the ring (below) but keep their entry
        // until their flows have had time to end.
        let grace = retire::grace(&self.conntrack, vip.protocol);
        for (config, slot) in old.into_values() {
            self.retire(key, &vip.name, config, slot, grace);
        }
        for id in fresh {
            self.dp.maps.reset_backend_counters(id)?;
        }

        // Ring (without the removed backends) before the VIP entry that
        // makes it reachable.
        let slot = self.vips.get_mut(&key).expect("inserted above");
        Self::sync_backends_and_ring(&mut self.dp.maps, slot)?;
        let meta = VipMeta {
            index: slot.index,
            mode: match vip.mode {
                Mode::Dsr => MODE_DSR,
                Mode::Nat => MODE_NAT,
            },
            flags: match vip.affinity {
                Affinity::Flow => 0,
                Affinity::Source => VIP_F_SOURCE_AFFINITY,
            } | if self.standby.contains(&vip.name) {
                VIP_F_STANDBY
            } else {
                0
            },
            _pad: 0,
        };
        self.dp.maps.set_vip(&key, &meta)?;
        self.dp.maps.set_vip_addr(&vip_addr_key(&key))?;
        Ok(())
    }

    /// Writes every backend entry of `slot` and rebuilds its ring if the set
    /// of usable (resolved, weight > 0, healthy) backends or their weights
    /// changed. A backend that is only unhealthy keeps its active entry: the
    /// flows already tracked for it go on.
    fn sync_backends_and_ring(maps: &mut Maps, slot: &mut VipSlot) -> Result<()> {
        let vip = &slot.config;
        let mut members = Vec::new();
        let mut ids = Vec::new();
        for (b, c) in slot.backends.iter().zip(&vip.backends) {
            let (addr, family) = addr_bytes(c.address);
            // NAT finds the next hop with the kernel's FIB per packet; only
            // DSR needs the backend's own MAC.
            let reachable = vip.mode == Mode::Nat || b.mac.is_some();
            let info = if reachable {
                BackendInfo {
                    addr,
                    port: c.port.to_be(),
                    family,
                    flags: BACKEND_F_ACTIVE | b.reschedule_flag(vip.on_down),
                    mac: b.mac.unwrap_or_default(),
                    generation: b.generation,
                }
            } else {
                BackendInfo::default()
            };
            maps.set_backend(b.id, &info)?;
            if b.usable(c, vip.mode) {
                members.push(maglev::Member {
                    identity: maglev::identity(c.address, c.port),
                    weight: b.weight(c),
                });
                ids.push(b.id);
            }
        }
        let input = (vip.ring_size, members);
        if slot.installed.as_ref() == Some(&input) {
            return Ok(());
        }
        let had_members = slot.installed.as_ref().is_some_and(|(_, m)| !m.is_empty());
        let table = maglev::build_table(&input.1, vip.ring_size);
        let slots: Vec<u32> = if ids.is_empty() {
            Vec::new()
        } else {
            table
                .iter()
                .map(|&m| {
                    if m == maglev::EMPTY {
                        lb_common::NO_BACKEND
                    } else {
                        ids[m as usize]
                    }
                })
                .collect()
        };
        maps.install_ring(slot.index, &slots)
            .with_context(|| format!("installing the ring of VIP {}", vip.name))?;
        tracing::info!(vip = %vip.name, backends = ids.len(), slots = vip.ring_size,
            "Maglev table installed");
        if ids.is_empty() && !vip.backends.is_empty() {
            let count = |f: &dyn Fn(&BackendSlot, &BackendConfig) -> bool| {
                slot.backends
                    .iter()
                    .zip(&vip.backends)
                    .filter(|(b, c)| f(b, c))
                    .count()
            };
            tracing::error!(vip = %vip.name, backends = vip.backends.len(),
                unhealthy = count(&|b, _| !b.health_up()),
                weight_zero = count(&|b, c| b.weight(c) == 0),
                unresolved = count(&|b, _| b.mac.is_none()),
                "no usable backend: new connections to this VIP are dropped (counted as no_backend)");
        } else if !ids.is_empty() && !had_members && slot.installed.is_some() {
            tracing::info!(vip = %vip.name, backends = ids.len(), "VIP has usable backends again");
        }
        slot.installed = Some(input);
        Ok(())
    }

    /// Reads the neighbour table, updates backend MACs (and rings where the
    /// usable set changed), and asks the kernel to resolve or revalidate
    /// every backend. XDP forwarding never "uses" a neighbour entry in the
    /// kernel's eyes, so without these probes entries would go STALE and be
    /// garbage-collected under a backend that is serving traffic.
    pub fn refresh_neighbours(&mut self, neighbours: &mut dyn Neighbours) -> Result<()> {
        let table = neighbours.lookup().context("reading the neighbour table")?;
        self.refresh_from(&table, neighbours)
    }

    /// [`Controller::refresh_neighbours`] with the table already read.
    fn refresh_from(
        &mut self,
        table: &HashMap<IpAddr, [u8; 6]>,
        neighbours: &mut dyn Neighbours,
    ) -> Result<()> {
        for slot in self.vips.values_mut() {
            if slot.config.mode == Mode::Nat {
                continue;
            }
            let mut changed = false;
            for (b, c) in slot.backends.iter_mut().zip(&slot.config.backends) {
                let seen = table.get(&c.address).copied();
                let mac = match (seen, b.mac) {
                    (Some(m), _) => {
                        b.missing = 0;
                        Some(m)
                    }
                    (None, Some(old)) if b.missing + 1 < MAC_LOST_AFTER => {
                        b.missing += 1;
                        Some(old)
                    }
                    (None, _) => None,
                };
                if mac != b.mac {
                    match mac {
                        Some(m) => tracing::info!(vip = %slot.config.name, backend = %c.name,
                            mac = %crate::netlink::format_mac(&m), "backend MAC resolved"),
                        None => tracing::warn!(vip = %slot.config.name, backend = %c.name,
                            "backend MAC lost from the neighbour table: no new flows to it"),
                    }
                    b.mac = mac;
                    changed = true;
                }
                if let Err(e) = neighbours.probe(c.address) {
                    tracing::debug!(backend = %c.name, error = %e, "neighbour probe failed");
                }
            }
            if changed {
                Self::sync_backends_and_ring(&mut self.dp.maps, slot)?;
            }
        }
        Ok(())
    }

    pub fn has_unresolved(&self) -> bool {
        self.vips
            .values()
            .any(|s| s.config.mode == Mode::Dsr && s.backends.iter().any(|b| b.mac.is_none()))
    }

    pub fn status(&self) -> Result<Status> {
        let mut vips = Vec::new();
        for (key, slot) in &self.vips {
            let v = &slot.config;
            let c = self.dp.maps.vip_counters(slot.index)?;
            let mut backends = Vec::new();
            for (b, bc) in slot.backends.iter().zip(&v.backends) {
                let counters = self.dp.maps.backend_counters(b.id)?;
                let reachable = v.mode == Mode::Nat || b.mac.is_some();
                let health = b.health.as_ref().map(Tracker::state);
                let state = match (reachable, health, b.weight(bc)) {
                    (false, _, _) => BackendState::Unresolved,
                    (_, Some(Health::Down), _) => BackendState::Down,
                    (_, Some(Health::Unknown), _) => BackendState::Pending,
                    (true, _, 0) => BackendState::Draining,
                    (true, _, _) => BackendState::Active,
                };
                backends.push(BackendStatus {
                    name: bc.name.clone(),
                    address: bc.address.to_string(),
                    weight: b.weight(bc),
                    mac: b.mac.map(|m| crate::netlink::format_mac(&m)),
                    state,
                    packets: counters.packets,
                    bytes: counters.bytes,
                    config_weight: bc.weight,
                    drained: b.drained,
                    weight_override: b.weight_override,
                    health: b.health.as_ref().map(Tracker::status),
                });
            }
            backends.extend(self.retired_status(key)?);
            vips.push(VipStatus {
                name: v.name.clone(),
                address: v.address.to_string(),
                port: v.port,
                protocol: v.protocol.as_str().to_string(),
                mode: v.mode.as_str().to_string(),
                affinity: v.affinity.as_str().to_string(),
                ring_size: v.ring_size,
                forwarding: self.forwards(&v.name),
                packets: c.packets,
                bytes: c.bytes,
                usable_backends: slot.installed.as_ref().map_or(0, |(_, m)| m.len()),
                on_down: v.on_down.as_str().to_string(),
                backends,
            });
        }
        let globals = self.dp.maps.globals()?;
        let drops = self.dp.maps.drops()?;
        Ok(Status {
            interface: self.interface.clone(),
            xdp_mode: self
                .attached
                .map_or("detached", Attached::as_str)
                .to_string(),
            // The node forwards if its flag is on and some VIP is not standby.
            forwarding: self.dp.maps.config()?.flags & lb_common::LB_F_FORWARDING != 0
                && (self.vips.is_empty() || vips.iter().any(|v| v.forwarding)),
            vips,
            global: global::NAMES
                .iter()
                .zip(globals.iter())
                .map(|(n, c)| (n.to_string(), c.packets))
                .collect(),
            drops: drop::NAMES
                .iter()
                .zip(drops.iter())
                .map(|(n, c)| (n.to_string(), *c))
                .collect(),
            conntrack: ct::NAMES
                .iter()
                .zip(self.dp.maps.conntrack_stats()?.iter())
                .map(|(n, c)| (n.to_string(), *c))
                .collect(),
            // Filled in by the daemon, which owns the VRRP engine.
            vrrp: None,
        })
    }
}

/// The node-wide settings the data plane reads: our MAC, whether we
/// forward, and the connection table's timeouts and insert rate.
pub fn lb_config(mac: [u8; 6], forwarding: bool, ct: &ConntrackConfig) -> LbConfig {
    let base = LbConfig {
        mac,
        flags: if forwarding { LB_F_FORWARDING } else { 0 },
        ..LbConfig::default()
    };
    with_conntrack(base, ct)
}

/// `cfg` with the connection-table settings of `ct`; MAC and flags kept.
pub fn with_conntrack(cfg: LbConfig, ct: &ConntrackConfig) -> LbConfig {
    LbConfig {
        tcp_timeout: ct.tcp_timeout,
        tcp_closing_timeout: ct.tcp_closing_timeout,
        udp_timeout: ct.udp_timeout,
        new_flows_per_cpu: ct.new_flows_per_cpu,
        ..cfg
    }
}
