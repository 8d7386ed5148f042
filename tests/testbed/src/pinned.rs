//! Reading and spoiling an xlb node's pinned state directly, as the tests
//! of restarts, crashes and upgrades need: counters while no `xlb`
//! process runs, and incompatible maps or records that a start must
//! refuse.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use aya::maps::{Array, ArrayOfMaps, Map, MapData, PerCpuArray};
use lb_common::{
    Counters, FlowKey, FlowState, RING_FIRST_SLOT, RingElement, StateMeta, drop,
    map_names as names, ring_word,
};

use crate::netns::NetNs;

fn per_cpu<V: aya::Pod>(state: &Path, name: &str) -> anyhow::Result<PerCpuArray<MapData, V>> {
    let pin = state.join(name);
    let data = MapData::from_pin(&pin).with_context(|| format!("opening {}", pin.display()))?;
    PerCpuArray::try_from(Map::PerCpuArray(data)).map_err(|e| anyhow!("{name}: {e}"))
}

/// VIP `index`'s packets and bytes, summed over CPUs, from the pinned
/// `VIP_STATS`.
pub fn vip_counters(state: &Path, index: u32) -> anyhow::Result<Counters> {
    let values = per_cpu::<Counters>(state, names::VIP_STATS)?.get(&index, 0)?;
    let mut total = Counters::default();
    for v in values.iter() {
        total.add(v);
    }
    Ok(total)
}

/// Drops of `reason` (`lb_common::drop`), summed over CPUs.
pub fn drops(state: &Path, reason: u32) -> anyhow::Result<u64> {
    anyhow::ensure!(reason < drop::COUNT, "no drop reason {reason}");
    let values = per_cpu::<u64>(state, names::DROP_STATS)?.get(&reason, 0)?;
    Ok(values.iter().sum())
}

/// The pinned `XLB_STATE` record.
pub fn meta(state: &Path) -> anyhow::Result<StateMeta> {
    let pin = state.join(names::XLB_STATE);
    let data = MapData::from_pin(&pin).with_context(|| format!("opening {}", pin.display()))?;
    let map: Array<MapData, StateMeta> =
        Array::try_from(Map::Array(data)).map_err(|e| anyhow!("XLB_STATE: {e}"))?;
    Ok(map.get(&0, 0)?)
}

/// Rewrites the pinned `XLB_STATE` record's layout version: state "made by
/// another xlb".
pub fn set_layout(state: &Path, layout: u32) -> anyhow::Result<()> {
    let pin = state.join(names::XLB_STATE);
    let data = MapData::from_pin(&pin).with_context(|| format!("opening {}", pin.display()))?;
    let mut map: Array<MapData, StateMeta> =
        Array::try_from(Map::Array(data)).map_err(|e| anyhow!("XLB_STATE: {e}"))?;
    let mut m = map.get(&0, 0)?;
    m.layout = layout;
    map.set(0, m, 0)?;
    Ok(())
}

/// Replaces the pin of `RING_INPUTS` (an array of `u64`) with an array of
/// `u32` of the same length: a map "from another layout". The program
/// that runs keeps its own map (it holds it by descriptor, not by path).
pub fn spoil_ring_inputs(state: &Path) -> anyhow::Result<()> {
    let pin = state.join(names::RING_INPUTS);
    std::fs::remove_file(&pin).with_context(|| format!("unpinning {}", pin.display()))?;
    let other: Array<MapData, u32> =
        Array::create(lb_common::MAX_VIPS, 0).context("creating the impostor map")?;
    other
        .pin(&pin)
        .with_context(|| format!("pinning the impostor at {}", pin.display()))?;
    Ok(())
}

/// Whether an XDP program is attached to `ifname` in `ns`.
pub fn xdp_attached(ns: &NetNs, ifname: &str) -> anyhow::Result<bool> {
    let out = ns.ip(["-d", "-j", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j link")?;
    Ok(v[0].get("xdp").is_some())
}

fn flow_table(state: &Path) -> anyhow::Result<aya::maps::HashMap<MapData, FlowKey, FlowState>> {
    let pin = state.join(names::FLOWS);
    let data = MapData::from_pin(&pin).with_context(|| format!("opening {}", pin.display()))?;
    aya::maps::HashMap::try_from(Map::LruHashMap(data)).map_err(|e| anyhow!("FLOWS: {e}"))
}

/// Every entry of the pinned connection table.
pub fn flows(state: &Path) -> anyhow::Result<Vec<(FlowKey, FlowState)>> {
    Ok(flow_table(state)?.iter().filter_map(Result::ok).collect())
}

/// The connection-table entry of `key`, if any.
pub fn flow(state: &Path, key: &FlowKey) -> anyhow::Result<Option<FlowState>> {
    match flow_table(state)?.get(key, 0) {
        Ok(v) => Ok(Some(v)),
        Err(aya::maps::MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e).context("reading FLOWS"),
    }
}

/// The NAT reverse entry of `key` (backend → client), if any.
pub fn nat_reverse(state: &Path, key: &FlowKey) -> anyhow::Result<Option<lb_common::VipKey>> {
    let pin = state.join(names::NAT_REVERSE);
    let data = MapData::from_pin(&pin).with_context(|| format!("opening {}", pin.display()))?;
    let map: aya::maps::HashMap<MapData, FlowKey, lb_common::VipKey> =
        aya::maps::HashMap::try_from(Map::LruHashMap(data))
            .map_err(|e| anyhow!("NAT_REVERSE: {e}"))?;
    match map.get(key, 0) {
        Ok(v) => Ok(Some(v)),
        Err(aya::maps::MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e).context("reading NAT_REVERSE"),
    }
}

/// The data plane's flow-report counters (`lb_common::sync_stat`),
/// summed over CPUs.
pub fn sync_stat(state: &Path, index: u32) -> anyhow::Result<u64> {
    let values = per_cpu::<u64>(state, names::SYNC_STATS)?.get(&index, 0)?;
    Ok(values.iter().sum())
}

/// The pinned connection table, opened once: for reading many keys, or
/// one key many times, without reopening the pin for each.
pub struct Flows {
    map: aya::maps::HashMap<MapData, FlowKey, FlowState>,
}

impl Flows {
    pub fn open(state: &Path) -> anyhow::Result<Flows> {
        Ok(Flows {
            map: flow_table(state)?,
        })
    }

    /// The entry of `key`, if any.
    pub fn get(&self, key: &FlowKey) -> anyhow::Result<Option<FlowState>> {
        match self.map.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).context("reading FLOWS"),
        }
    }

    /// Every entry.
    pub fn all(&self) -> Vec<(FlowKey, FlowState)> {
        self.map.iter().filter_map(Result::ok).collect()
    }
}

/// The pinned ring of VIP `index` (`RINGS`), read word by word.
pub struct Ring {
    map: Array<MapData, RingElement>,
    /// Its size (word 0).
    pub size: u32,
}

impl Ring {
    pub fn open(state: &Path, index: u32) -> anyhow::Result<Self> {
        let pin = state.join(names::RINGS);
        let data = MapData::from_pin(&pin).with_context(|| format!("opening {}", pin.display()))?;
        let rings: ArrayOfMaps<MapData, MapData> =
            ArrayOfMaps::try_from(Map::ArrayOfMaps(data)).map_err(|e| anyhow!("RINGS: {e}"))?;
        let inner = rings
            .get(&index, 0)
            .with_context(|| format!("the ring of VIP index {index}"))?;
        let map = Array::try_from(Map::Array(inner)).map_err(|e| anyhow!("ring: {e}"))?;
        let mut ring = Self { map, size: 0 };
        ring.size = ring.word(0)?;
        Ok(ring)
    }

    fn word(&self, word: u32) -> anyhow::Result<u32> {
        let (element, at) = ring_word(word);
        Ok(self.map.get(&element, 0)?[at])
    }

    /// The backend id in slot `slot` (`0..size`).
    pub fn slot(&self, slot: u32) -> anyhow::Result<u32> {
        anyhow::ensure!(slot < self.size, "slot {slot} of a ring of {}", self.size);
        self.word(RING_FIRST_SLOT + slot)
    }
}
