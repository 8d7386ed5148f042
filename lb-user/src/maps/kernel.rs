//! The only code that touches BPF maps. Every handle is taken from the
//! loaded object once, by the name both sides share (`lb_common::map_names`).

use std::os::fd::AsFd as _;

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, ArrayOfMaps, DevMapHash, HashMap, MapData, MapError, PerCpuArray},
};
use lb_common::{
    BackendInfo, BackendOwner, Counters, FlowKey, FlowState, LbConfig, MAX_BACKENDS, MAX_VIPS,
    RING_FIRST_SLOT, RingElement, StateMeta, TraceFilter, VipKey, VipMeta, VipSlot, bytes_to_words,
    ct, drop, global, map_names as names, nat_stat, ring_elements, vip_filter_slot,
};

use super::{MapStore, rings::Staged};

/// Handles to every map of the data plane.
pub struct Maps {
    vips: HashMap<MapData, VipKey, VipMeta>,
    vip_slots: Array<MapData, VipSlot>,
    vip_filter: Array<MapData, u32>,
    vip_addrs: HashMap<MapData, VipKey, u32>,
    rings: ArrayOfMaps<MapData, Array<MapData, RingElement>>,
    backends: Array<MapData, BackendInfo>,
    config: Array<MapData, LbConfig>,
    trace_filter: Array<MapData, TraceFilter>,
    vip_stats: PerCpuArray<MapData, Counters>,
    backend_stats: PerCpuArray<MapData, Counters>,
    drop_stats: PerCpuArray<MapData, u64>,
    global_stats: PerCpuArray<MapData, Counters>,
    ct_stats: PerCpuArray<MapData, u64>,
    nat_stats: PerCpuArray<MapData, u64>,
    flows: HashMap<MapData, FlowKey, FlowState>,
    nat_reverse: HashMap<MapData, FlowKey, VipKey>,
    tx_ports: DevMapHash<MapData>,
    lease: Array<MapData, u64>,
    owners: Array<MapData, BackendOwner>,
    ring_inputs: Array<MapData, u64>,
    state: Array<MapData, StateMeta>,
    /// Rings made and filled, waiting for [`MapStore::publish_rings`].
    staged: Staged,
}

fn take<T>(ebpf: &mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} not found in the XDP object"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type or layout"))
}

impl Maps {
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self> {
        // A descriptor of RINGS of its own, for the batch updates aya has
        // no call for.
        let outer = match ebpf.map(names::RINGS) {
            Some(aya::maps::Map::ArrayOfMaps(data)) => data
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .context("duplicating the RINGS descriptor")?,
            _ => return Err(anyhow!("map {} not found in the XDP object", names::RINGS)),
        };
        Ok(Self {
            staged: Staged::new(outer),
            vips: take(ebpf, names::VIPS)?,
            vip_slots: take(ebpf, names::VIP_SLOTS)?,
            vip_filter: take(ebpf, names::VIP_FILTER)?,
            vip_addrs: take(ebpf, names::VIP_ADDRS)?,
            rings: take(ebpf, names::RINGS)?,
            backends: take(ebpf, names::BACKENDS)?,
            config: take(ebpf, names::LB_CONFIG)?,
            trace_filter: take(ebpf, names::TRACE_FILTER)?,
            vip_stats: take(ebpf, names::VIP_STATS)?,
            backend_stats: take(ebpf, names::BACKEND_STATS)?,
            drop_stats: take(ebpf, names::DROP_STATS)?,
            global_stats: take(ebpf, names::GLOBAL_STATS)?,
            ct_stats: take(ebpf, names::CT_STATS)?,
            nat_stats: take(ebpf, names::NAT_STATS)?,
            flows: take(ebpf, names::FLOWS)?,
            nat_reverse: take(ebpf, names::NAT_REVERSE)?,
            tx_ports: take(ebpf, names::TX_PORTS)?,
            lease: take(ebpf, names::CONTROL_LEASE)?,
            owners: take(ebpf, names::BACKEND_OWNERS)?,
            ring_inputs: take(ebpf, names::RING_INPUTS)?,
            state: take(ebpf, names::XLB_STATE)?,
        })
    }

    /// What the pinned state is and where it serves (all zero if unset).
    pub fn state_meta(&self) -> Result<StateMeta> {
        self.state.get(&0, 0).context("reading XLB_STATE")
    }

    pub fn set_state_meta(&mut self, meta: &StateMeta) -> Result<()> {
        self.state.set(0, meta, 0).context("writing XLB_STATE")
    }

    /// The connection-table entry of `key`, if any.
    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowState>> {
        match self.flows.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).context("reading FLOWS"),
        }
    }

    /// Writes a connection-table entry (state restore, tests).
    pub fn set_flow(&mut self, key: &FlowKey, state: &FlowState) -> Result<()> {
        self.flows.insert(key, state, 0).context("writing FLOWS")
    }

    /// The VIP a NAT reply with this (backend → client) key is rewritten to.
    pub fn nat_reverse(&self, key: &FlowKey) -> Result<Option<VipKey>> {
        match self.nat_reverse.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).context("reading NAT_REVERSE"),
        }
    }

    /// Copies into the connection table `name` (FLOWS or NAT_REVERSE) the
    /// entries of the table pinned at `from` that it lacks: a resize.
    pub fn copy_connections(&mut self, name: &str, from: &std::path::Path) -> Result<usize> {
        match name {
            names::FLOWS => crate::state::copy_missing(from, &mut self.flows),
            names::NAT_REVERSE => crate::state::copy_missing(from, &mut self.nat_reverse),
            other => Err(anyhow!("{other} is not a connection table")),
        }
    }

    /// Clears VIP slot `index` if it still names `key`.
    fn clear_slot(&mut self, index: u32, key: &VipKey) -> Result<()> {
        let slot = self
            .vip_slots
            .get(&index, 0)
            .with_context(|| format!("reading VIP slot {index}"))?;
        if slot.key != *key {
            return Ok(());
        }
        self.vip_slots
            .set(index, VipSlot::default(), 0)
            .with_context(|| format!("clearing VIP slot {index}"))
    }

    /// Adds `by` to the count of `key`'s address in `VIP_FILTER`.
    fn count_in_filter(&mut self, key: &VipKey, by: i32) -> Result<()> {
        let slot = vip_filter_slot(&bytes_to_words(&key.addr));
        let n = self.filter_count(key)?;
        self.vip_filter
            .set(slot, n.saturating_add_signed(by), 0)
            .with_context(|| format!("writing VIP filter slot {slot}"))
    }

    /// How many VIPs `VIP_FILTER` counts at `key`'s address slot (shared
    /// by the addresses that hash alike): what lets a packet to that
    /// address reach the `VIPS` lookup.
    pub fn filter_count(&self, key: &VipKey) -> Result<u32> {
        let slot = vip_filter_slot(&bytes_to_words(&key.addr));
        self.vip_filter
            .get(&slot, 0)
            .with_context(|| format!("reading VIP filter slot {slot}"))
    }

    /// Lets NAT redirect packets out of interface `ifindex`.
    pub fn add_tx_port(&mut self, ifindex: u32) -> Result<()> {
        self.tx_ports
            .insert(ifindex, ifindex, None, 0)
            .with_context(|| format!("adding interface {ifindex} to TX_PORTS"))
    }
}

impl MapStore for Maps {
    fn set_config(&mut self, config: &LbConfig) -> Result<()> {
        self.config.set(0, config, 0).context("writing LB_CONFIG")
    }

    fn config(&self) -> Result<LbConfig> {
        self.config.get(&0, 0).context("reading LB_CONFIG")
    }

    fn set_trace_filter(&mut self, filter: &TraceFilter) -> Result<()> {
        self.trace_filter
            .set(0, filter, 0)
            .context("writing TRACE_FILTER")
    }

    /// Besides `VIPS`: `VIP_FILTER` counts the VIP before a packet can
    /// find it, and `VIP_SLOTS` names it at its index (the slot of an
    /// index it left is cleared first).
    fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<()> {
        let new = match self.vip(key)? {
            None => {
                self.count_in_filter(key, 1)?;
                true
            }
            Some(old) if old.index != meta.index => {
                self.clear_slot(old.index, key)?;
                false
            }
            Some(_) => false,
        };
        let written = self
            .vip_slots
            .set(
                meta.index,
                VipSlot {
                    key: *key,
                    meta: *meta,
                },
                0,
            )
            .with_context(|| format!("writing VIP slot {}", meta.index))
            .and_then(|()| {
                self.vips
                    .insert(key, meta, 0)
                    .with_context(|| format!("inserting VIP {key:?}"))
            });
        if written.is_err() && new {
            // Not in VIPS after all: uncounted, or every retry of the
            // write would count it once more and the address would never
            // leave the filter.
            let _ = self.count_in_filter(key, -1);
        }
        written
    }

    fn vip(&self, key: &VipKey) -> Result<Option<VipMeta>> {
        match self.vips.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading VIP {key:?}")),
        }
    }

    /// `VIPS` first, then what [`set_vip`](MapStore::set_vip) wrote beside.
    fn remove_vip(&mut self, key: &VipKey) -> Result<()> {
        let old = self.vip(key)?;
        self.vips
            .remove(key)
            .with_context(|| format!("removing VIP {key:?}"))?;
        if let Some(old) = old {
            self.clear_slot(old.index, key)?;
            self.count_in_filter(key, -1)?;
        }
        Ok(())
    }

    fn vips(&self) -> Result<Vec<(VipKey, VipMeta)>> {
        self.vips
            .iter()
            .collect::<Result<_, _>>()
            .context("reading VIPS")
    }

    fn set_vip_addr(&mut self, key: &VipKey) -> Result<()> {
        self.vip_addrs
            .insert(key, 1, 0)
            .with_context(|| format!("inserting VIP address {key:?}"))
    }

    fn is_vip_addr(&self, key: &VipKey) -> Result<bool> {
        match self.vip_addrs.get(key, 0) {
            Ok(_) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("reading VIP address {key:?}")),
        }
    }

    fn remove_vip_addr(&mut self, key: &VipKey) -> Result<()> {
        self.vip_addrs
            .remove(key)
            .with_context(|| format!("removing VIP address {key:?}"))
    }

    fn vip_addrs(&self) -> Result<Vec<VipKey>> {
        self.vip_addrs
            .keys()
            .collect::<Result<_, _>>()
            .context("reading VIP_ADDRS")
    }

    /// The new ring is a fresh map, filled completely before the update of
    /// the outer array that publishes it: a packet sees the old ring or the
    /// new one, never a mix. An empty `slots` publishes a ring of size 0,
    /// which the data plane treats as "no backend".
    fn stage_ring(&mut self, index: u32, slots: &[u32]) -> Result<()> {
        self.staged
            .stage(index, slots)
            .with_context(|| format!("the ring of VIP index {index}"))
    }

    fn publish_rings(&mut self) -> Result<()> {
        self.staged.publish()
    }

    fn staged_rings(&self) -> usize {
        self.staged.len()
    }

    fn ring(&self, index: u32) -> Result<Option<Vec<u32>>> {
        let ring = match self.rings.get(&index, 0) {
            Ok(r) => r,
            Err(MapError::KeyNotFound) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading the ring of VIP {index}")),
        };
        let first: RingElement = ring.get(&0, 0).context("reading a ring's size")?;
        let size = first[0];
        // Every element once, its words in order (word 0: the size).
        let mut words = first.to_vec();
        for e in 1..ring_elements(size) {
            let element: RingElement = ring.get(&e, 0).context("reading a ring slot")?;
            words.extend(element);
        }
        let first_slot = RING_FIRST_SLOT as usize;
        Ok(Some(words[first_slot..first_slot + size as usize].to_vec()))
    }

    fn set_backend(&mut self, id: u32, info: &BackendInfo) -> Result<()> {
        self.backends
            .set(id, info, 0)
            .with_context(|| format!("writing backend {id}"))
    }

    fn backend(&self, id: u32) -> Result<BackendInfo> {
        self.backends
            .get(&id, 0)
            .with_context(|| format!("reading backend {id}"))
    }

    fn set_owner(&mut self, id: u32, owner: &BackendOwner) -> Result<()> {
        self.owners
            .set(id, owner, 0)
            .with_context(|| format!("writing the owner of backend {id}"))
    }

    fn owners(&self) -> Result<Vec<(u32, BackendOwner)>> {
        let mut out = Vec::new();
        for id in 0..MAX_BACKENDS {
            let o = self.owners.get(&id, 0).context("reading BACKEND_OWNERS")?;
            if o != BackendOwner::default() {
                out.push((id, o));
            }
        }
        Ok(out)
    }

    fn set_ring_digest(&mut self, index: u32, digest: u64) -> Result<()> {
        self.ring_inputs
            .set(index, digest, 0)
            .with_context(|| format!("writing the ring digest of VIP index {index}"))
    }

    fn ring_digest(&self, index: u32) -> Result<u64> {
        self.ring_inputs
            .get(&index, 0)
            .with_context(|| format!("reading the ring digest of VIP index {index}"))
    }

    fn set_lease(&mut self, until_ns: u64) -> Result<()> {
        self.lease
            .set(0, until_ns, 0)
            .context("writing CONTROL_LEASE")
    }

    fn lease(&self) -> Result<u64> {
        self.lease.get(&0, 0).context("reading CONTROL_LEASE")
    }

    fn vip_counters(&self, index: u32) -> Result<Counters> {
        sum_counters(&self.vip_stats, index)
    }

    fn backend_counters(&self, id: u32) -> Result<Counters> {
        sum_counters(&self.backend_stats, id)
    }

    fn all_vip_counters(&self) -> Result<Vec<Counters>> {
        sum_all(&self.vip_stats, MAX_VIPS).context("reading VIP_STATS")
    }

    fn all_backend_counters(&self) -> Result<Vec<Counters>> {
        sum_all(&self.backend_stats, MAX_BACKENDS).context("reading BACKEND_STATS")
    }

    fn reset_vip_counters(&mut self, index: u32) -> Result<()> {
        reset(&mut self.vip_stats, index)
    }

    fn reset_backend_counters(&mut self, id: u32) -> Result<()> {
        reset(&mut self.backend_stats, id)
    }

    fn conntrack_stats(&self) -> Result<[u64; ct::COUNT as usize]> {
        sum_u64(&self.ct_stats, "CT_STATS")
    }

    fn nat_stats(&self) -> Result<[u64; nat_stat::COUNT as usize]> {
        sum_u64(&self.nat_stats, "NAT_STATS")
    }

    fn drops(&self) -> Result<[u64; drop::COUNT as usize]> {
        sum_u64(&self.drop_stats, "DROP_STATS")
    }

    fn globals(&self) -> Result<[Counters; global::COUNT as usize]> {
        let mut out = [Counters::default(); global::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = sum_counters(&self.global_stats, i as u32)?;
        }
        Ok(out)
    }
}

fn sum_u64<const N: usize>(map: &PerCpuArray<MapData, u64>, name: &str) -> Result<[u64; N]> {
    let mut out = [0u64; N];
    for (i, slot) in out.iter_mut().enumerate() {
        let values = map
            .get(&(i as u32), 0)
            .with_context(|| format!("reading {name}"))?;
        *slot = values.iter().sum();
    }
    Ok(out)
}

fn sum_counters(map: &PerCpuArray<MapData, Counters>, index: u32) -> Result<Counters> {
    let values = map
        .get(&index, 0)
        .with_context(|| format!("reading counters at {index}"))?;
    let mut total = Counters::default();
    for v in values.iter() {
        total.add(v);
    }
    Ok(total)
}

/// Every element of `map` (`entries` of them), summed over CPUs, with one
/// batch lookup.
fn sum_all(map: &PerCpuArray<MapData, Counters>, entries: u32) -> Result<Vec<Counters>> {
    use aya::maps::IterableMap as _;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let fd = map.map().fd().as_fd();
    let values = super::batch::lookup_percpu_array::<Counters>(fd, entries, cpus)?;
    Ok(values
        .chunks_exact(cpus)
        .map(|per_cpu| {
            let mut total = Counters::default();
            for v in per_cpu {
                total.add(v);
            }
            total
        })
        .collect())
}

fn reset(map: &mut PerCpuArray<MapData, Counters>, index: u32) -> Result<()> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let zeros = aya::maps::PerCpuValues::try_from(vec![Counters::default(); cpus])
        .context("building per-CPU zeros")?;
    map.set(index, zeros, 0)
        .with_context(|| format!("resetting counters at {index}"))
}

/// The connection tables (`FLOWS`, `NAT_REVERSE`), opened from their pins
/// for counting their entries apart from the controller, so that a walk
/// over a quarter of a million keys holds no lock the control plane needs.
pub struct ConnectionTables {
    flows: HashMap<MapData, FlowKey, FlowState>,
    nat_reverse: HashMap<MapData, FlowKey, VipKey>,
    /// `max_entries` of each.
    capacity: (u64, u64),
}

/// Entries in use and room of one connection table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableUse {
    pub entries: u64,
    pub capacity: u64,
}

fn open_lru<V: aya::Pod>(pin: &std::path::Path) -> Result<(HashMap<MapData, FlowKey, V>, u64)> {
    let what = || format!("opening {}", pin.display());
    let capacity = aya::maps::MapInfo::from_pin(pin)
        .with_context(what)?
        .max_entries();
    let data = MapData::from_pin(pin).with_context(what)?;
    let map = HashMap::try_from(aya::maps::Map::LruHashMap(data))
        .with_context(|| format!("{} has an unexpected layout", pin.display()))?;
    Ok((map, u64::from(capacity)))
}

impl ConnectionTables {
    pub fn open(state_dir: &std::path::Path) -> Result<Self> {
        let (flows, f) = open_lru(&state_dir.join(names::FLOWS))?;
        let (nat_reverse, r) = open_lru(&state_dir.join(names::NAT_REVERSE))?;
        Ok(Self {
            flows,
            nat_reverse,
            capacity: (f, r),
        })
    }

    /// `FLOWS` and `NAT_REVERSE`, counted by walking their keys: one system
    /// call per entry, no value copied. Entries that come and go during the
    /// walk may be missed or (the kernel restarts a walk whose last key
    /// vanished) counted twice; the count stops at the capacity.
    pub fn count(&self) -> (TableUse, TableUse) {
        fn walk<V: aya::Pod>(map: &HashMap<MapData, FlowKey, V>, capacity: u64) -> TableUse {
            let mut entries = 0;
            for key in map.keys() {
                if key.is_ok() {
                    entries += 1;
                }
                if entries >= capacity {
                    break;
                }
            }
            TableUse { entries, capacity }
        }
        (
            walk(&self.flows, self.capacity.0),
            walk(&self.nat_reverse, self.capacity.1),
        )
    }
}
