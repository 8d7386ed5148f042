//! What `xlb status` shows of the controller's model and the data plane's
//! counters (the daemon adds VRRP's part).

use anyhow::Result;
use lb_common::{Counters, LB_F_FORWARDING, ct, drop, global, nat_stat};

use super::{Controller, backend::Backend, vip::Vip};
use crate::{
    api::{BackendSource, BackendState, BackendStatus, Health, Status, VipStatus},
    dataplane::Attached,
    health::{CheckTally, Tracker},
    maps::MapStore,
    netlink::format_mac,
};

impl<M: MapStore> Controller<M> {
    pub fn status(&self) -> Result<Status> {
        // Two reads for every counter of every VIP and backend.
        let counters = Counts {
            vips: self.maps.all_vip_counters()?,
            backends: self.maps.all_backend_counters()?,
        };
        let mut vips = Vec::with_capacity(self.vips.len());
        for vip in self.vips.values() {
            vips.push(self.vip_status(vip, &counters));
        }
        let globals = self.maps.globals()?;
        let drops = self.maps.drops()?;
        let conntrack = self.maps.conntrack_stats()?;
        let nat = self.maps.nat_stats()?;
        let configured = self.maps.config()?.flags & LB_F_FORWARDING != 0;
        Ok(Status {
            version: crate::api::status::STATUS_VERSION,
            interface: self.node.interface.clone(),
            xdp_mode: self
                .attached
                .map_or("detached", Attached::as_str)
                .to_string(),
            // The node forwards if it is configured and some VIP is not
            // standby.
            forwarding: configured && (vips.is_empty() || vips.iter().any(|v| v.forwarding)),
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
            // NAT's events of their own map (`NAT_STATS`) among them,
            // named `nat_*` as NAT's others are.
            conntrack: ct::NAMES
                .iter()
                .zip(conntrack.iter())
                .map(|(n, c)| (n.to_string(), *c))
                .chain(
                    nat_stat::NAMES
                        .iter()
                        .zip(nat.iter())
                        .map(|(n, c)| (format!("nat_{n}"), *c)),
                )
                .collect(),
            // Filled in by the daemon, which owns the VRRP engine and the
            // program.
            vrrp: None,
            dataplane: None,
            sync: None,
        })
    }

    /// The results of every checked backend's checks so far (metrics; the
    /// status shows only the last result). Reads no map.
    pub fn check_tallies(&self) -> Vec<CheckTally> {
        let mut out = Vec::new();
        for vip in self.vips.values() {
            for b in &vip.backends {
                if let Some(t) = &b.health {
                    out.push(CheckTally {
                        vip: vip.settings.name.clone(),
                        backend: b.config.name.clone(),
                        tally: t.tally().clone(),
                    });
                }
            }
        }
        out
    }

    fn vip_status(&self, vip: &Vip, counters: &Counts) -> VipStatus {
        let s = &vip.settings;
        let c = counters.vip(vip.index);
        let cutoff = vip.serving_cutoff();
        let mut backends = Vec::with_capacity(vip.backends.len());
        let now_ns = crate::clock::monotonic_ns();
        for b in &vip.backends {
            let serving = cutoff.is_some_and(|c| b.config.tier <= c);
            backends.push(backend_status(b, vip, serving, counters, now_ns));
        }
        for b in self.retiring.of(&vip.key) {
            let c = counters.backend(b.id);
            backends.push(BackendStatus {
                name: b.config.name.clone(),
                address: b.config.address.to_string(),
                weight: 0,
                mac: b.mac.map(|m| format_mac(&m)),
                state: BackendState::Removed,
                packets: c.packets,
                bytes: c.bytes,
                config_weight: b.config.weight,
                drained: false,
                weight_override: None,
                // No longer checked: it only finishes its flows.
                health: None,
                tier: b.config.tier,
                effective_weight: 0,
                feedback: None,
                source: source(b),
            });
        }
        VipStatus {
            name: s.name.clone(),
            address: s.address.to_string(),
            port: s.port,
            protocol: s.protocol.as_str().to_string(),
            mode: s.mode.as_str().to_string(),
            affinity: s.affinity.as_str().to_string(),
            ring_size: s.ring_size,
            forwarding: self.forwards(&s.name),
            packets: c.packets,
            bytes: c.bytes,
            usable_backends: vip.usable_backends(),
            serving_tiers: vip.serving_tiers(cutoff),
            announce: None,
            on_down: s.on_down.as_str().to_string(),
            backends,
        }
    }
}

/// Every counter, read at once.
struct Counts {
    vips: Vec<Counters>,
    backends: Vec<Counters>,
}

impl Counts {
    fn vip(&self, index: u32) -> Counters {
        self.vips.get(index as usize).copied().unwrap_or_default()
    }

    fn backend(&self, id: u32) -> Counters {
        self.backends.get(id as usize).copied().unwrap_or_default()
    }
}

/// `serving`: its tier takes new flows.
fn backend_status(
    b: &Backend,
    vip: &Vip,
    serving: bool,
    all: &Counts,
    now_ns: u64,
) -> BackendStatus {
    let counters = all.backend(b.id);
    let health = b.health.as_ref().map(Tracker::state);
    let state = match (b.reachable(vip.settings.mode), health, b.weight()) {
        (false, _, _) => BackendState::Unresolved,
        (_, Some(Health::Down), _) => BackendState::Down,
        (_, Some(Health::Unknown), _) => BackendState::Pending,
        (true, _, 0) => BackendState::Draining,
        (true, _, _) if !serving => BackendState::Backup,
        (true, _, _) => BackendState::Active,
    };
    BackendStatus {
        name: b.config.name.clone(),
        address: b.config.address.to_string(),
        weight: b.weight(),
        mac: b.mac.map(|m| format_mac(&m)),
        state,
        packets: counters.packets,
        bytes: counters.bytes,
        config_weight: b.config.weight,
        drained: b.drained,
        weight_override: b.weight_override,
        health: b.health.as_ref().map(Tracker::status),
        tier: b.config.tier,
        effective_weight: b.ring_weight(),
        feedback: b.feedback.as_ref().map(|f| f.status(now_ns)),
        source: source(b),
    }
}

fn source(b: &Backend) -> BackendSource {
    if b.runtime {
        BackendSource::Runtime
    } else {
        BackendSource::File
    }
}
