//! The maps as plain data. Same sizes and the same refusals as the kernel's
//! (a VIP table that is full, an id past the end, removing what is not
//! there), so a dry run fails where the real maps would; no packet ever
//! counts here, so counters move only when a test says so.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail, ensure};
use lb_common::{
    BackendInfo, BackendOwner, Counters, LbConfig, MAX_BACKENDS, MAX_VIPS, TraceFilter, VipKey,
    VipMeta, ct, drop, global, nat_stat,
};

use super::MapStore;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryMaps {
    pub config: LbConfig,
    pub trace_filter: TraceFilter,
    pub vips: BTreeMap<VipKey, VipMeta>,
    pub vip_addrs: BTreeSet<VipKey>,
    pub rings: BTreeMap<u32, Vec<u32>>,
    /// Entries that are not all zero.
    pub backends: BTreeMap<u32, BackendInfo>,
    pub owners: BTreeMap<u32, BackendOwner>,
    pub ring_digests: BTreeMap<u32, u64>,
    pub lease: u64,
    pub vip_stats: BTreeMap<u32, Counters>,
    pub backend_stats: BTreeMap<u32, Counters>,
    pub conntrack: [u64; ct::COUNT as usize],
    pub nat: [u64; nat_stat::COUNT as usize],
    pub drops: [u64; drop::COUNT as usize],
    pub globals: [Counters; global::COUNT as usize],
    /// Rings staged and not published yet.
    pub staged: BTreeMap<u32, Vec<u32>>,
    /// Rings installed so far.
    pub ring_installs: u64,
    /// Publications of staged rings so far (each costs the kernel one RCU
    /// grace period, however many rings it publishes).
    pub ring_publishes: u64,
    /// Writes so far, of any kind.
    pub writes: u64,
    /// Writes allowed before every further write fails (`None`: no limit).
    pub fail_after: Option<u64>,
}

impl MemoryMaps {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every write after the next `writes` fail, as a kernel out of
    /// memory would.
    pub fn fail_after(&mut self, writes: u64) {
        self.fail_after = Some(writes);
    }

    /// Lets writes succeed again.
    pub fn heal(&mut self) {
        self.fail_after = None;
    }

    /// Traffic the data plane would have counted for backend `id`.
    pub fn count_backend(&mut self, id: u32, packets: u64, bytes: u64) {
        self.backend_stats
            .entry(id)
            .or_default()
            .add(&Counters { packets, bytes });
    }

    /// Traffic the data plane would have counted for VIP `index`.
    pub fn count_vip(&mut self, index: u32, packets: u64, bytes: u64) {
        self.vip_stats
            .entry(index)
            .or_default()
            .add(&Counters { packets, bytes });
    }

    fn write(&mut self) -> Result<()> {
        self.writes += 1;
        match &mut self.fail_after {
            Some(0) => bail!("write refused (MemoryMaps::fail_after)"),
            Some(n) => *n -= 1,
            None => {}
        }
        Ok(())
    }
}

fn vip_index(index: u32) -> Result<()> {
    ensure!(index < MAX_VIPS, "VIP index {index} out of bounds");
    Ok(())
}

fn backend_id(id: u32) -> Result<()> {
    ensure!(id < MAX_BACKENDS, "backend id {id} out of bounds");
    Ok(())
}

impl MapStore for MemoryMaps {
    fn set_config(&mut self, config: &LbConfig) -> Result<()> {
        self.write()?;
        self.config = *config;
        Ok(())
    }

    fn config(&self) -> Result<LbConfig> {
        Ok(self.config)
    }

    fn set_trace_filter(&mut self, filter: &TraceFilter) -> Result<()> {
        self.write()?;
        self.trace_filter = *filter;
        Ok(())
    }

    fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<()> {
        self.write()?;
        ensure!(
            self.vips.contains_key(key) || self.vips.len() < MAX_VIPS as usize,
            "inserting VIP {key:?}: the VIP table is full"
        );
        self.vips.insert(*key, *meta);
        Ok(())
    }

    fn vip(&self, key: &VipKey) -> Result<Option<VipMeta>> {
        Ok(self.vips.get(key).copied())
    }

    fn remove_vip(&mut self, key: &VipKey) -> Result<()> {
        self.write()?;
        ensure!(
            self.vips.remove(key).is_some(),
            "removing VIP {key:?}: no such VIP"
        );
        Ok(())
    }

    fn vips(&self) -> Result<Vec<(VipKey, VipMeta)>> {
        Ok(self.vips.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn set_vip_addr(&mut self, key: &VipKey) -> Result<()> {
        self.write()?;
        ensure!(
            self.vip_addrs.contains(key) || self.vip_addrs.len() < MAX_VIPS as usize,
            "inserting VIP address {key:?}: the table is full"
        );
        self.vip_addrs.insert(*key);
        Ok(())
    }

    fn is_vip_addr(&self, key: &VipKey) -> Result<bool> {
        Ok(self.vip_addrs.contains(key))
    }

    fn remove_vip_addr(&mut self, key: &VipKey) -> Result<()> {
        self.write()?;
        ensure!(
            self.vip_addrs.remove(key),
            "removing VIP address {key:?}: not there"
        );
        Ok(())
    }

    fn vip_addrs(&self) -> Result<Vec<VipKey>> {
        Ok(self.vip_addrs.iter().copied().collect())
    }

    fn set_owner(&mut self, id: u32, owner: &BackendOwner) -> Result<()> {
        backend_id(id)?;
        self.write()?;
        if *owner == BackendOwner::default() {
            self.owners.remove(&id);
        } else {
            self.owners.insert(id, *owner);
        }
        Ok(())
    }

    fn owners(&self) -> Result<Vec<(u32, BackendOwner)>> {
        Ok(self.owners.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn set_ring_digest(&mut self, index: u32, digest: u64) -> Result<()> {
        vip_index(index)?;
        self.write()?;
        if digest == 0 {
            self.ring_digests.remove(&index);
        } else {
            self.ring_digests.insert(index, digest);
        }
        Ok(())
    }

    fn ring_digest(&self, index: u32) -> Result<u64> {
        vip_index(index)?;
        Ok(self.ring_digests.get(&index).copied().unwrap_or(0))
    }

    fn set_lease(&mut self, until_ns: u64) -> Result<()> {
        self.write()?;
        self.lease = until_ns;
        Ok(())
    }

    fn lease(&self) -> Result<u64> {
        Ok(self.lease)
    }

    fn all_vip_counters(&self) -> Result<Vec<Counters>> {
        let mut out = vec![Counters::default(); MAX_VIPS as usize];
        for (i, c) in &self.vip_stats {
            out[*i as usize] = *c;
        }
        Ok(out)
    }

    fn all_backend_counters(&self) -> Result<Vec<Counters>> {
        let mut out = vec![Counters::default(); MAX_BACKENDS as usize];
        for (i, c) in &self.backend_stats {
            out[*i as usize] = *c;
        }
        Ok(out)
    }

    fn stage_ring(&mut self, index: u32, slots: &[u32]) -> Result<()> {
        vip_index(index)?;
        self.staged.insert(index, slots.to_vec());
        Ok(())
    }

    fn publish_rings(&mut self) -> Result<()> {
        let staged = std::mem::take(&mut self.staged);
        if staged.is_empty() {
            return Ok(());
        }
        self.write()?;
        self.ring_installs += staged.len() as u64;
        self.ring_publishes += 1;
        self.rings.extend(staged);
        Ok(())
    }

    fn staged_rings(&self) -> usize {
        self.staged.len()
    }

    fn ring(&self, index: u32) -> Result<Option<Vec<u32>>> {
        vip_index(index)?;
        Ok(self.rings.get(&index).cloned())
    }

    fn set_backend(&mut self, id: u32, info: &BackendInfo) -> Result<()> {
        backend_id(id)?;
        self.write()?;
        if *info == BackendInfo::default() {
            self.backends.remove(&id);
        } else {
            self.backends.insert(id, *info);
        }
        Ok(())
    }

    fn backend(&self, id: u32) -> Result<BackendInfo> {
        backend_id(id)?;
        Ok(self.backends.get(&id).copied().unwrap_or_default())
    }

    fn vip_counters(&self, index: u32) -> Result<Counters> {
        vip_index(index)?;
        Ok(self.vip_stats.get(&index).copied().unwrap_or_default())
    }

    fn backend_counters(&self, id: u32) -> Result<Counters> {
        backend_id(id)?;
        Ok(self.backend_stats.get(&id).copied().unwrap_or_default())
    }

    fn reset_vip_counters(&mut self, index: u32) -> Result<()> {
        vip_index(index)?;
        self.write()?;
        self.vip_stats.remove(&index);
        Ok(())
    }

    fn reset_backend_counters(&mut self, id: u32) -> Result<()> {
        backend_id(id)?;
        self.write()?;
        self.backend_stats.remove(&id);
        Ok(())
    }

    fn conntrack_stats(&self) -> Result<[u64; ct::COUNT as usize]> {
        Ok(self.conntrack)
    }

    fn nat_stats(&self) -> Result<[u64; nat_stat::COUNT as usize]> {
        Ok(self.nat)
    }

    fn drops(&self) -> Result<[u64; drop::COUNT as usize]> {
        Ok(self.drops)
    }

    fn globals(&self) -> Result<[Counters; global::COUNT as usize]> {
        Ok(self.globals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_the_kernel_refuses() {
        let mut m = MemoryMaps::new();
        let key = VipKey::new("198.18.0.100".parse().unwrap(), 80, 6);
        assert!(m.remove_vip(&key).is_err(), "removing a missing VIP");
        assert!(
            m.set_backend(MAX_BACKENDS, &BackendInfo::default())
                .is_err()
        );
        assert!(m.install_ring(MAX_VIPS, &[]).is_err());
        assert_eq!(m.ring(0).unwrap(), None);
        m.install_ring(0, &[1, 2]).unwrap();
        assert_eq!(m.ring(0).unwrap(), Some(vec![1, 2]));
        assert_eq!(m.ring_installs, 1);
    }

    #[test]
    fn staged_rings_appear_together_on_publish() {
        let mut m = MemoryMaps::new();
        m.stage_ring(0, &[1]).unwrap();
        m.stage_ring(1, &[2]).unwrap();
        assert_eq!(m.ring(0).unwrap(), None, "staged is not visible");
        assert_eq!(m.staged_rings(), 2);
        m.publish_rings().unwrap();
        assert_eq!(m.ring(1).unwrap(), Some(vec![2]));
        assert_eq!(
            (m.ring_installs, m.ring_publishes, m.staged_rings()),
            (2, 1, 0)
        );
    }

    #[test]
    fn injected_failures_stop_every_later_write() {
        let mut m = MemoryMaps::new();
        m.fail_after(1);
        m.install_ring(0, &[1]).unwrap();
        assert!(m.install_ring(1, &[1]).is_err());
        assert!(m.set_config(&LbConfig::default()).is_err());
        m.heal();
        m.install_ring(1, &[1]).unwrap();
    }
}
