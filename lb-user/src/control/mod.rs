//! Turns a validated [`Config`] plus the kernel's neighbour table into the
//! state of the data plane's maps, and keeps it there.
//!
//! The controller owns its model: one [`Vip`](vip::Vip) per VIP, each with
//! a `Vec` of backends that hold their own config and state, the ids it has
//! handed out, the backends that are retiring, and `LB_CONFIG` (it is the
//! only writer of that map). It talks to the maps only through
//! [`MapStore`], so the same bookkeeping runs against the kernel's maps in
//! `xlb run` and against [`crate::maps::MemoryMaps`] in `xlb check` and the
//! unit tests.
//!
//! VIP indices and backend ids are allocated once per identity and kept
//! across reloads, so counters survive and unchanged rings are not touched.
//! A backend is in its VIP's Maglev ring only while it is *usable*: its MAC
//! is known (DSR), its weight (runtime override or file) is above zero, and
//! its health check (if any) says up, and only while its tier serves: tiers
//! join from the lowest up until they have `min_usable` usable backends
//! between them (`tiers`). Leaving the ring affects new flows
//! only: the backend's `BACKENDS` entry stays active, so flows the
//! connection table already tracks keep reaching it, unless `on_down =
//! "reschedule"` flags the entry so that those flows are hashed again.
//!
//! - `backend`, `vip`: the model and what of it each map entry says.
//! - `feedback`: `[vip.feedback]` signals scaling the backends' ring weights.
//! - `adopt`: taking over the state a previous control plane left.
//! - `ids`: VIP indices, backend ids and generations.
//! - `retire`: removed backends that finish their flows.
//! - `leftovers`: map entries of removed VIPs and backends still to clear.
//! - `neighbours`: backend MACs from the neighbour table.
//! - `runtime`: health results and `xlb backend drain|undrain|weight`.
//! - `runtime_backends`: `xlb backend add|remove`, and what a reload or a
//!   restart keeps of them.
//! - `server`: VRRP's server addresses, marked with the VIP addresses.
//! - `standby`: VRRP's per-VIP switch.
//! - `status`: what `xlb status` shows.
//! - `tiers`: which backup tiers take new flows (pure).
//! - `trace`: `xlb trace`'s filter and flag, and their deadline.

mod adopt;
mod backend;
mod feedback;
mod ids;
mod leftovers;
mod neighbours;
mod retire;
mod rings;
mod runtime;
mod runtime_backends;
mod server;
mod standby;
mod status;
mod sync;
mod targets;
mod tiers;
mod trace;
mod vip;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow, bail};
use lb_common::{
    LB_F_FORWARDING, LB_F_NAT, LB_F_OWN_MAC, LB_F_SYNC, LB_F_TRACE, LbConfig, MAX_BACKENDS,
    MAX_VIPS, VipKey,
};

pub use adopt::Adopted;
pub use neighbours::{Neighbours, NoNeighbours};
pub use runtime_backends::Added;

use self::{
    backend::Backend,
    ids::Ids,
    leftovers::Leftovers,
    retire::Retiring,
    server::ServerAddresses,
    trace::Tracing,
    vip::{Vip, VipSettings},
};
use crate::{
    config::{Config, ConntrackConfig, Mode, VipConfig},
    dataplane::Attached,
    maps::MapStore,
};

/// Why [`Controller::apply`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Nothing changed: the configuration cannot be served as it is (more
    /// VIPs or backends than ids), or the neighbour table could not be read.
    #[error("{0:#}")]
    Refused(anyhow::Error),
    /// The controller holds the new configuration, but some map write
    /// failed; [`Controller::refresh_neighbours`] retries it.
    #[error("{0:#}")]
    Incomplete(anyhow::Error),
}

/// An apply under way ([`Controller::begin_apply`]).
pub struct Applying {
    /// The VIPs of the configuration, in the order they are written.
    pending: Vec<VipKey>,
    /// How many of `pending` are written.
    done: usize,
    servers: std::collections::BTreeSet<VipKey>,
    nat: bool,
    table: HashMap<IpAddr, [u8; 6]>,
    tables: rings::Tables,
    first_error: Option<anyhow::Error>,
}

impl Applying {
    /// VIPs written so far, of how many.
    pub fn progress(&self) -> (usize, usize) {
        (self.done, self.pending.len())
    }
}

/// What the controller knows of the node it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The NIC the program is attached to (for status).
    pub interface: String,
    /// Its MAC: the source address of every frame the data plane forwards.
    pub mac: [u8; 6],
}

pub struct Controller<M: MapStore> {
    maps: M,
    node: Node,
    attached: Option<Attached>,
    vips: BTreeMap<VipKey, Vip>,
    ids: Ids,
    /// Names of VIPs whose VRRP group this node does not master.
    standby: HashSet<String>,
    retiring: Retiring,
    leftovers: Leftovers,
    server_addrs: ServerAddresses,
    /// Connection-table settings (timeouts; how long removed backends stay).
    conntrack: ConntrackConfig,
    /// Some VIP is in NAT mode.
    nat: bool,
    /// The node has one NIC (no `server_interface`): VIP frames to another
    /// MAC are not its own (`LB_F_OWN_MAC`).
    one_nic: bool,
    /// `[sync]`: the data plane reports new and closing flows
    /// (`LB_F_SYNC`).
    sync: bool,
    /// A packet trace runs (`LB_F_TRACE`), until its deadline.
    trace: Option<Tracing>,
    /// Traces started so far (the last one's id).
    trace_ids: u64,
    /// The `LB_CONFIG` the data plane has, `None` before the first write.
    lb_config: Option<LbConfig>,
}

impl<M: MapStore> Controller<M> {
    /// A controller of an empty data plane: nothing is forwarded (the
    /// program passes everything) until the first [`Controller::apply`].
    pub fn new(maps: M, node: Node) -> Self {
        Self {
            maps,
            node,
            attached: None,
            vips: BTreeMap::new(),
            ids: Ids::new(),
            standby: HashSet::new(),
            retiring: Retiring::default(),
            leftovers: Leftovers::default(),
            server_addrs: ServerAddresses::default(),
            conntrack: ConntrackConfig::default(),
            nat: false,
            one_nic: false,
            sync: false,
            trace: None,
            trace_ids: 0,
            lb_config: None,
        }
    }

    pub fn maps(&self) -> &M {
        &self.maps
    }

    /// The maps, for what is not bookkeeping (interfaces NAT may redirect
    /// to, connection-table entries in tests).
    pub fn maps_mut(&mut self) -> &mut M {
        &mut self.maps
    }

    /// Records how the program was attached (shown in status).
    pub fn set_attached(&mut self, attached: Attached) {
        self.attached.get_or_insert(attached);
    }

    /// Makes the maps serve `config`'s VIPs. VIPs and backends that stay keep
    /// their index/id (and counters); new ones are added, gone ones removed.
    ///
    /// A configuration that needs more VIP indices or backend ids than are
    /// free is refused before anything changes. A map write that fails
    /// leaves the model at the new configuration and the VIP marked
    /// unsynced; [`Controller::refresh_neighbours`] finishes it.
    pub fn apply(
        &mut self,
        config: &Config,
        neighbours: &mut dyn Neighbours,
    ) -> Result<(), ApplyError> {
        let mut applying = self.begin_apply(config, neighbours)?;
        while self.apply_step(&mut applying) {}
        self.finish_apply(applying, neighbours)
    }

    /// [`Controller::apply`] in steps, for a caller that lets others use
    /// the controller in between (the control socket while thousands of
    /// VIPs go in): checks the configuration and takes it into the model;
    /// [`Controller::apply_step`] then writes a batch of VIPs at a time,
    /// each serving as soon as its batch is in, and
    /// [`Controller::finish_apply`] does the rest. Between steps the
    /// model may be ahead of the maps for the VIPs still to write.
    pub fn begin_apply(
        &mut self,
        config: &Config,
        neighbours: &mut dyn Neighbours,
    ) -> Result<Applying, ApplyError> {
        // Read once, before anything changes: new DSR backends start with
        // the MAC the kernel already knows, so a new VIP's first ring is
        // its real one (one install, no "no usable backend" in between).
        let table = neighbours
            .lookup()
            .context("reading the neighbour table")
            .map_err(ApplyError::Refused)?;
        let wanted: BTreeMap<VipKey, &VipConfig> =
            config.vips.iter().map(|v| (v.key(), v)).collect();
        let servers = server::of_config(config);
        self.check_capacity(&wanted, servers.len())
            .map_err(ApplyError::Refused)?;

        // The connection-table settings first, with the flags as they are:
        // NAT's flag changes only once what it guards is rebuilt, or NAT
        // replies would pass untranslated while the VIPs are written.
        self.conntrack = config.conntrack;
        self.one_nic = config.server_interface.is_none();
        self.sync = config.sync.is_some();
        let mut first_error = self.write_lb_config().err();
        let gone: Vec<VipKey> = self
            .vips
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            if let Err(e) = self.remove_vip(&key) {
                first_error.get_or_insert(e);
            }
        }
        let mut pending = Vec::with_capacity(wanted.len());
        for (key, vip) in wanted {
            if self.vips.get(&key).is_some_and(|v| v.unchanged_by(vip)) {
                continue;
            }
            match self.upsert_vip(key, vip, &table) {
                Ok(()) => pending.push(key),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Ok(Applying {
            pending,
            done: 0,
            servers,
            nat: config.vips.iter().any(|v| v.mode == Mode::Nat),
            table,
            tables: rings::Tables::default(),
            first_error,
        })
    }

    /// Writes the next batch of VIPs of `applying`; `false` once none is
    /// left.
    pub fn apply_step(&mut self, applying: &mut Applying) -> bool {
        let rest = &applying.pending[applying.done..];
        if rest.is_empty() {
            return false;
        }
        let rest = rest.to_vec();
        let (taken, error) = self.sync_batch(&rest, &mut applying.tables);
        applying.done += taken;
        if let Some(e) = error {
            applying.first_error.get_or_insert(e);
        }
        applying.done < applying.pending.len()
    }

    /// The end of an apply: the server addresses, NAT's flag, the retired
    /// backends' records, and a neighbour refresh.
    pub fn finish_apply(
        &mut self,
        applying: Applying,
        neighbours: &mut dyn Neighbours,
    ) -> Result<(), ApplyError> {
        let Applying {
            servers,
            nat,
            table,
            mut first_error,
            ..
        } = applying;
        self.server_addrs.want(servers);
        if let Err(e) = self.sync_server_addrs() {
            first_error.get_or_insert(e);
        }
        // Replies are looked up in NAT_REVERSE only while some VIP needs it.
        self.nat = nat;
        if let Err(e) = self.write_lb_config() {
            first_error.get_or_insert(e);
        }
        if let Err(e) = self.record_retired() {
            first_error.get_or_insert(e);
        }
        if let Some(e) = first_error {
            return Err(ApplyError::Incomplete(e));
        }
        self.refresh_from(&table, neighbours)
            .map_err(ApplyError::Incomplete)
    }

    /// Refuses a configuration that needs more VIP indices, backend ids or
    /// address marks (VIP addresses and `servers` server addresses) than
    /// there are, counting what the VIPs it drops give back.
    fn check_capacity(&self, wanted: &BTreeMap<VipKey, &VipConfig>, servers: usize) -> Result<()> {
        let mut vips_needed = 0usize;
        let mut vips_freed = 0usize;
        let mut backends_needed = 0usize;
        let mut backends_freed = 0usize;
        for (key, vip) in &self.vips {
            if !wanted.contains_key(key) {
                vips_freed += 1;
                backends_freed += vip.backends.len() + self.retiring.of(key).count();
            }
        }
        for (key, cfg) in wanted {
            let Some(vip) = self.vips.get(key) else {
                vips_needed += 1;
                backends_needed += cfg.backends.len();
                continue;
            };
            runtime_backends::check_room(vip, cfg)?;
            let kept: HashSet<IpAddr> = vip.backends.iter().map(|b| b.config.address).collect();
            backends_needed += cfg
                .backends
                .iter()
                .filter(|b| !kept.contains(&b.address) && !self.retiring.contains(key, b.address))
                .count();
        }
        let vips_free = self.ids.vips.available() + vips_freed;
        if vips_needed > vips_free {
            bail!("too many VIPs (limit {MAX_VIPS}): {vips_needed} new, {vips_free} free");
        }
        let addresses: HashSet<VipKey> = wanted.keys().map(VipKey::address_only).collect();
        if addresses.len() + servers > MAX_VIPS as usize {
            bail!(
                "too many addresses (limit {MAX_VIPS}): {} VIP addresses and {servers} \
                 VRRP server addresses",
                addresses.len()
            );
        }
        let backends_free = self.ids.backends.available() + backends_freed;
        if backends_needed > backends_free {
            bail!(
                "too many backends (limit {}): the configuration needs {backends_needed} more \
                 backend ids, {backends_free} are free (removed backends keep theirs until \
                 their flows have had time to end)",
                MAX_BACKENDS - 1
            );
        }
        Ok(())
    }

    /// Writes `LB_CONFIG` if what it should say changed: our MAC, the
    /// node's flags (configured; some VIP in NAT mode; sync; a trace) and
    /// the connection-table settings.
    fn write_lb_config(&mut self) -> Result<()> {
        let ct = &self.conntrack;
        let mut flags = LB_F_FORWARDING;
        if self.nat {
            flags |= LB_F_NAT;
        }
        if self.one_nic {
            flags |= LB_F_OWN_MAC;
        }
        if self.sync {
            flags |= LB_F_SYNC;
        }
        if self.trace.is_some() {
            flags |= LB_F_TRACE;
        }
        let cfg = LbConfig {
            mac: self.node.mac,
            flags,
            tcp_timeout: ct.tcp_timeout,
            tcp_closing_timeout: ct.tcp_closing_timeout,
            udp_timeout: ct.udp_timeout,
            new_flows_per_cpu: ct.new_flows_per_cpu,
            ..LbConfig::default()
        };
        if self.lb_config != Some(cfg) {
            self.maps.set_config(&cfg)?;
            self.lb_config = Some(cfg);
        }
        Ok(())
    }

    /// Unpublishes a VIP, then frees what the data plane can no longer reach.
    fn remove_vip(&mut self, key: &VipKey) -> Result<()> {
        let Some(mut vip) = self.vips.remove(key) else {
            return Ok(());
        };
        if vip.published.is_some()
            && let Err(e) = self.maps.remove_vip(key)
        {
            // Still published: keep it, so the model says what the data
            // plane does, and try again on the next refresh.
            vip.removing = true;
            self.vips.insert(*key, vip);
            return Err(e.context(format!("removing VIP {key:?}")));
        }
        tracing::info!(vip = %vip.name(), "VIP removed");
        if vip.addr_published {
            self.leftovers.vip_addr(key.address_only());
        }
        self.leftovers.ring(vip.index);
        let retired = self.retiring.expire(Instant::now(), Some(key));
        for b in vip.backends.iter().chain(&retired) {
            self.leftovers.backend(b.id, b.generation);
        }
        self.clear_leftovers()
    }

    fn clear_leftovers(&mut self) -> Result<()> {
        let (vips, servers) = (&self.vips, &self.server_addrs);
        self.leftovers.clear(&mut self.maps, &mut self.ids, |a| {
            servers.wants(a)
                || vips
                    .values()
                    .any(|v| v.addr_published && v.key.address_only() == *a)
        })
    }

    /// Marks the config's server addresses, clears the marks of those it
    /// dropped.
    fn sync_server_addrs(&mut self) -> Result<()> {
        let marked = self.server_addrs.sync(&mut self.maps, &mut self.leftovers);
        let cleared = self.clear_leftovers();
        marked.and(cleared)
    }

    /// Adds VIP `key` or brings its model to `cfg` (synced later, in a
    /// batch). The VIP is back in the model whatever happened; one whose
    /// model could not be brought to `cfg` is left unsynced.
    fn upsert_vip(
        &mut self,
        key: VipKey,
        cfg: &VipConfig,
        neighbours: &HashMap<IpAddr, [u8; 6]>,
    ) -> Result<()> {
        let mut vip = match self.vips.remove(&key) {
            Some(mut v) => {
                v.removing = false;
                v
            }
            None => {
                let index = self
                    .ids
                    .vips
                    .take()
                    .ok_or_else(|| anyhow!("too many VIPs (limit {MAX_VIPS})"))?;
                tracing::info!(vip = %cfg.name, address = %cfg.address, port = cfg.port,
                    protocol = cfg.protocol.as_str(), "VIP added");
                Vip::new(key, index, VipSettings::from(cfg))
            }
        };
        let result = self.reconcile(&mut vip, cfg, neighbours);
        match result {
            Ok(()) => vip.applied = Some(cfg.clone()),
            Err(_) => {
                vip.synced = false;
                vip.applied = None;
            }
        }
        self.vips.insert(key, vip);
        result
    }

    /// Brings `vip`'s settings and backends to `cfg`: backends that stay
    /// keep their id, MAC and health record (matched by address); removed
    /// ones retire; re-added ones come back from retirement; new ones get
    /// fresh ids. Changes only the model.
    fn reconcile(
        &mut self,
        vip: &mut Vip,
        cfg: &VipConfig,
        neighbours: &HashMap<IpAddr, [u8; 6]>,
    ) -> Result<()> {
        let key = vip.key;
        // The validator refuses these; a config built in code might not.
        let mut seen = HashSet::new();
        if let Some(dup) = cfg.backends.iter().find(|b| !seen.insert(b.address)) {
            bail!(
                "VIP {}: duplicate backend address {}",
                cfg.name,
                dup.address
            );
        }
        let order: Vec<IpAddr> = vip.backends.iter().map(|b| b.config.address).collect();
        let mut old: HashMap<IpAddr, Backend> = vip
            .backends
            .drain(..)
            .map(|b| (b.config.address, b))
            .collect();
        let fresh_count = cfg
            .backends
            .iter()
            .filter(|b| !old.contains_key(&b.address) && !self.retiring.contains(&key, b.address))
            .count();
        // Counted against the pool by `check_capacity`; taken all at once so
        // nothing below can fail half-way.
        let Some(fresh) = self.ids.take_backends(fresh_count) else {
            vip.backends = old.into_values().collect();
            bail!("too many backends (limit {})", MAX_BACKENDS - 1);
        };
        // Addresses are unique (checked above), so each new backend takes
        // exactly one of these.
        let mut fresh = fresh.into_iter();
        for b in &cfg.backends {
            let backend = if let Some(mut kept) = old.remove(&b.address) {
                kept.reconfigure(&cfg.name, b);
                kept
            } else if let Some(mut back) = self.retiring.take(&key, b.address) {
                // Re-added within its grace: same id and generation, so the
                // flows it still carries keep matching.
                tracing::info!(vip = %cfg.name, backend = %b.name, "removed backend re-added");
                back.reconfigure(&cfg.name, b);
                back
            } else if let Some((id, generation)) = fresh.next() {
                Backend::new(
                    id,
                    generation,
                    b.clone(),
                    neighbours.get(&b.address).copied(),
                )
            } else {
                unreachable!("fresh ids were counted with the same test, addresses are unique")
            };
            let mut backend = backend;
            backend.follow_feedback(cfg.feedback.as_ref());
            vip.backends.push(backend);
        }
        vip.settings = VipSettings::from(cfg);
        // Backends added at runtime stay (in their order), unless the file
        // took them over above.
        for address in order {
            if let Some(b) = old.remove(&address) {
                if b.runtime {
                    runtime_backends::keep(vip, cfg, b);
                } else {
                    old.insert(address, b);
                }
            }
        }
        // Removed backends leave the ring (on sync) but keep their entry
        // until their flows have had time to end.
        let grace = retire::grace(&self.conntrack, cfg.protocol);
        for b in old.into_values() {
            self.retiring
                .retire(key, vip.index, &cfg.name, b, Instant::now() + grace);
        }
        Ok(())
    }

    /// Frees removed backends whose grace has ended; call periodically.
    pub fn expire_retired(&mut self, now: Instant) -> Result<()> {
        for b in self.retiring.expire(now, None) {
            tracing::debug!(backend = %b.config.name, "removed backend freed");
            self.leftovers.backend(b.id, b.generation);
        }
        self.clear_leftovers()
    }

    /// Records retired backends as such in their owner records.
    fn record_retired(&mut self) -> Result<()> {
        let mut first_error = None;
        for r in self.retiring.unrecorded() {
            match self.maps.set_owner(r.backend.id, &r.owner()) {
                Ok(()) => r.recorded = true,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Vouches for the node until `until_ns` (CLOCK_MONOTONIC nanoseconds;
    /// 0: no lease): see `CONTROL_LEASE`.
    pub fn renew_lease(&mut self, until_ns: u64) -> Result<()> {
        self.maps.set_lease(until_ns)
    }

    /// Finishes what failed before: removals, syncs, leftovers, `LB_CONFIG`.
    fn resync(&mut self) -> Result<()> {
        let mut first_error = None;
        let removing: Vec<VipKey> = self
            .vips
            .values()
            .filter(|v| v.removing)
            .map(|v| v.key)
            .collect();
        for key in removing {
            if let Err(e) = self.remove_vip(&key) {
                first_error.get_or_insert(e);
            }
        }
        let unsynced: Vec<VipKey> = self
            .vips
            .values()
            .filter(|v| !v.synced)
            .map(|v| v.key)
            .collect();
        if let Err(e) = self.sync_vips(&unsynced) {
            first_error.get_or_insert(e);
        }
        for key in &unsynced {
            if self.vips.get(key).is_some_and(|v| v.synced) {
                tracing::info!(vip = %self.vips[key].name(), "VIP synced after an earlier failure");
            }
        }
        if self.server_addrs.unsynced()
            && let Err(e) = self.sync_server_addrs()
        {
            first_error.get_or_insert(e);
        }
        if !self.leftovers.is_empty()
            && let Err(e) = self.clear_leftovers()
        {
            first_error.get_or_insert(e);
        }
        if let Err(e) = self.record_retired() {
            first_error.get_or_insert(e);
        }
        if let Err(e) = self.write_lb_config() {
            first_error.get_or_insert(e);
        }
        first_error.map_or(Ok(()), Err)
    }
}
