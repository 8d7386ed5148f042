//! The data plane's maps as the controller sees them: [`MapStore`], the
//! few operations its bookkeeping needs, implemented by the real BPF maps
//! ([`Maps`], the only code that touches them) and by plain memory
//! ([`MemoryMaps`]: `xlb check` dry-runs a config against it, and the
//! controller's unit tests run on it without root).

mod batch;
mod kernel;
mod memory;
mod rings;

use anyhow::Result;
use lb_common::{
    BackendInfo, BackendOwner, Counters, LbConfig, TraceFilter, VipKey, VipMeta, ct, drop, global,
    nat_stat,
};

pub use kernel::{ConnectionTables, Maps, TableUse};
pub use memory::MemoryMaps;

/// What the controller reads and writes. Every write replaces a whole
/// entry, so repeating one is harmless: a sync that failed half-way is
/// finished by running it again.
pub trait MapStore {
    /// `LB_CONFIG`: the node-wide settings.
    fn set_config(&mut self, config: &LbConfig) -> Result<()>;
    fn config(&self) -> Result<LbConfig>;

    /// `TRACE_FILTER`: which packets a trace records (read by the data
    /// plane while `LB_F_TRACE` is set).
    fn set_trace_filter(&mut self, filter: &TraceFilter) -> Result<()>;

    /// `VIPS`: publishes (or replaces) a VIP.
    fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<()>;
    fn vip(&self, key: &VipKey) -> Result<Option<VipMeta>>;
    fn remove_vip(&mut self, key: &VipKey) -> Result<()>;
    /// Every VIP entry (what a restarted controller adopts).
    fn vips(&self) -> Result<Vec<(VipKey, VipMeta)>>;

    /// `VIP_ADDRS`: marks `key` (port and protocol zero) as an address
    /// that carries VIPs.
    fn set_vip_addr(&mut self, key: &VipKey) -> Result<()>;
    fn is_vip_addr(&self, key: &VipKey) -> Result<bool>;
    fn remove_vip_addr(&mut self, key: &VipKey) -> Result<()>;
    fn vip_addrs(&self) -> Result<Vec<VipKey>>;

    /// `RINGS`: makes the Maglev ring `slots` (backend ids; empty means
    /// "no backend") for VIP `index`, invisible to the data plane until
    /// [`MapStore::publish_rings`].
    fn stage_ring(&mut self, index: u32, slots: &[u32]) -> Result<()>;
    /// Replaces the ring of every staged VIP index with its staged ring,
    /// each in one step, for the cost of one ring install in all (the
    /// kernel waits one RCU grace period for the batch). On failure every
    /// ring staged is dropped, published or not.
    fn publish_rings(&mut self) -> Result<()>;
    /// Rings staged and not yet published.
    fn staged_rings(&self) -> usize;
    /// Replaces the ring of VIP `index` with `slots` in one step.
    fn install_ring(&mut self, index: u32, slots: &[u32]) -> Result<()> {
        self.stage_ring(index, slots)?;
        self.publish_rings()
    }
    /// The ring of VIP `index`, `None` if none was ever installed.
    fn ring(&self, index: u32) -> Result<Option<Vec<u32>>>;

    /// `BACKENDS`: the data plane's view of backend `id`.
    fn set_backend(&mut self, id: u32, info: &BackendInfo) -> Result<()>;
    /// All zero if unused.
    fn backend(&self, id: u32) -> Result<BackendInfo>;
    fn clear_backend(&mut self, id: u32) -> Result<()> {
        self.set_backend(id, &BackendInfo::default())
    }

    /// `BACKEND_OWNERS`: whose backend `id` is (the controller's record,
    /// kept with the data plane so that a restart gives ids back).
    fn set_owner(&mut self, id: u32, owner: &BackendOwner) -> Result<()>;
    /// Every id whose record is not all zero.
    fn owners(&self) -> Result<Vec<(u32, BackendOwner)>>;

    /// `RING_INPUTS`: the digest of the input the ring of VIP `index` was
    /// built from (0: none recorded).
    fn set_ring_digest(&mut self, index: u32, digest: u64) -> Result<()>;
    fn ring_digest(&self, index: u32) -> Result<u64>;

    /// `CONTROL_LEASE`: until when (CLOCK_MONOTONIC nanoseconds) the control
    /// plane vouches for the node; 0 = no lease.
    fn set_lease(&mut self, until_ns: u64) -> Result<()>;
    fn lease(&self) -> Result<u64>;

    /// Per-VIP and per-backend counters, summed over CPUs.
    fn vip_counters(&self, index: u32) -> Result<Counters>;
    fn backend_counters(&self, id: u32) -> Result<Counters>;
    /// Every VIP's and every backend's counters, indexed by VIP index and
    /// by backend id (`MAX_VIPS` and `MAX_BACKENDS` of them): what a
    /// status of thousands of VIPs reads, in one go.
    fn all_vip_counters(&self) -> Result<Vec<Counters>>;
    fn all_backend_counters(&self) -> Result<Vec<Counters>>;
    /// Resets the counters of a slot reused for a new VIP or backend.
    fn reset_vip_counters(&mut self, index: u32) -> Result<()>;
    fn reset_backend_counters(&mut self, id: u32) -> Result<()>;

    /// Connection-table events (indexed as `lb_common::ct`).
    fn conntrack_stats(&self) -> Result<[u64; ct::COUNT as usize]>;
    /// NAT events (indexed as `lb_common::nat_stat`).
    fn nat_stats(&self) -> Result<[u64; nat_stat::COUNT as usize]>;
    /// Drops by reason (indexed as `lb_common::drop`).
    fn drops(&self) -> Result<[u64; drop::COUNT as usize]>;
    /// Global counters (indexed as `lb_common::global`).
    fn globals(&self) -> Result<[Counters; global::COUNT as usize]>;
}
