//! Backends that come and go at runtime (`xlb backend add|remove`), for an
//! orchestrator that registers a container the moment it listens.
//!
//! A runtime backend is a [`Backend`] like the file's, with `runtime` set:
//! it passes the file's checks (address family, unicast, the port rule,
//! weight range, no duplicate address, at most `ring_size` backends, the
//! backend id space), gets the VIP's `[vip.health]` check and follows its
//! `[vip.feedback]`, and is in the ring by the time the command returns. How it relates to the file:
//!
//! - a reload keeps it (its drain and weight too); a reload whose file
//!   names the same address for its VIP takes it over (it is then a file
//!   backend); a reload that drops its VIP removes it with the VIP;
//! - a restart keeps it: its owner record carries `OWNER_F_RUNTIME` and its
//!   weight, and [`Controller::adopt`] reads them back;
//! - `xlb backend remove` retires it like a backend removed from the file:
//!   it leaves the ring at once and finishes its established flows.
//!
//! It is never written to the file.

use std::{net::IpAddr, time::Instant};

use anyhow::{Result, anyhow, bail};
use lb_common::{MAX_BACKENDS, VipKey};

use super::{Controller, Neighbours, backend::Backend, retire, vip::Vip};
use crate::{
    api::BackendSpec,
    config::{
        BackendConfig, MAX_WEIGHT, Mode, VipConfig, check_backend_address, check_backend_port,
    },
    maps::MapStore,
};

/// What [`Controller::add_backend`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The VIP it was added to.
    pub vip: VipKey,
    /// The name it goes by (its address, or `ADDRESS:PORT`).
    pub name: String,
    pub address: IpAddr,
    /// It is in the ring now. A DSR backend whose MAC the neighbour table
    /// does not know yet, or one whose health check has not passed, joins
    /// later.
    pub in_ring: bool,
    /// A sentence saying what was done.
    pub message: String,
}

impl<M: MapStore> Controller<M> {
    /// Adds backend `spec` to VIP `vip` (its name) and installs its ring
    /// before returning. `neighbours` gives a DSR backend its MAC (and is
    /// asked to resolve it if it does not know it yet).
    pub fn add_backend(
        &mut self,
        vip: &str,
        spec: &BackendSpec,
        neighbours: &mut dyn Neighbours,
    ) -> Result<Added> {
        let started = Instant::now();
        let key = self.vip_named(vip)?;
        let v = &self.vips[&key];
        let s = &v.settings;
        let address = spec.address;
        let weight = spec.weight.unwrap_or(1);
        if weight > MAX_WEIGHT {
            bail!("weight {weight} is out of range 0..={MAX_WEIGHT}");
        }
        check_backend_address(s.address, address).map_err(|why| anyhow!("VIP {vip}: {why}"))?;
        let port = match spec.port {
            None => s.port,
            Some(0) => bail!("port 0 is out of range 1..=65535"),
            Some(p) => {
                check_backend_port(s.mode, s.port, p).map_err(|why| anyhow!("VIP {vip}: {why}"))?;
                p
            }
        };
        if let Some(b) = v.backends.iter().find(|b| b.config.address == address) {
            bail!(
                "VIP {vip} already has backend {address} ({:?}, from the {})",
                b.config.name,
                if b.runtime { "command line" } else { "file" }
            );
        }
        if v.backends.len() >= s.ring_size as usize {
            bail!(
                "VIP {vip} has {} backends, as many as its ring_size {} has slots; \
                 the Maglev table needs at least one slot per backend",
                v.backends.len(),
                s.ring_size
            );
        }
        let name = runtime_name(v, address, port).ok_or_else(|| {
            anyhow!("VIP {vip}: the names {address} and {address}:{port} are taken")
        })?;
        // The VIP's check (on the backend's port) and feedback, as a
        // backend of the file gets them.
        let check = v
            .applied
            .as_ref()
            .and_then(|c| c.health.as_ref())
            .map(|h| h.for_port(port));
        let feedback = v.applied.as_ref().and_then(|c| c.feedback.clone());
        let config = BackendConfig {
            name: name.clone(),
            address,
            port,
            weight,
            tier: spec.tier.unwrap_or(0),
            check,
        };
        let mac = if s.mode == Mode::Dsr {
            let mac = neighbours
                .lookup()
                .map_err(|e| e.context("reading the neighbour table"))?
                .get(&address)
                .copied();
            if mac.is_none()
                && let Err(e) = neighbours.probe(address)
            {
                tracing::debug!(backend = %address, error = %e, "neighbour probe failed");
            }
            mac
        } else {
            None
        };
        let mut backend = match self.retiring.take(&key, address) {
            // Removed within its grace: same id and generation, so the flows
            // it still carries keep matching.
            Some(mut back) => {
                back.config = config.clone();
                back.health = None;
                back.drained = false;
                back.weight_override = None;
                back.mac = back.mac.or(mac);
                back
            }
            None => {
                let Some(&[(id, generation)]) = self.ids.take_backends(1).as_deref() else {
                    bail!(
                        "too many backends (limit {}): no backend id is free (removed backends \
                         keep theirs until their flows have had time to end)",
                        MAX_BACKENDS - 1
                    );
                };
                Backend::new(id, generation, config.clone(), mac)
            }
        };
        backend.runtime = true;
        backend.follow_feedback(feedback.as_ref());
        // Not checked yet: out of the ring until its check passes `rise`
        // times, as a backend new in the file.
        backend.health = config
            .check
            .as_ref()
            .map(|c| crate::health::Tracker::new(c, false));
        let standby = self.standby.contains(vip);
        let v = self.vips.get_mut(&key).expect("found above");
        v.backends.push(backend);
        let synced = v.sync(&mut self.maps, standby);
        let mode = v.settings.mode;
        let b = v.backends.last().expect("pushed");
        let (in_ring, reachable) = (b.usable(mode), b.reachable(mode));
        let record = self.record_retired();
        synced?;
        record?;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        let state = if in_ring {
            "in the ring"
        } else if !reachable {
            "not in the ring until its MAC is resolved"
        } else if weight == 0 {
            "weight 0: no new flows"
        } else {
            "not in the ring until its health check passes"
        };
        let message = format!(
            "{vip}/{name}: added at runtime (port {port}, weight {weight}), {state}, \
             {elapsed_ms:.1} ms; a reload keeps it, `xlb backend remove` removes it"
        );
        tracing::info!(vip, backend = %name, %address, port, weight, in_ring,
            elapsed_ms = format!("{elapsed_ms:.1}"), "backend added at runtime");
        Ok(Added {
            vip: key,
            name,
            address,
            in_ring,
            message,
        })
    }

    /// Removes backend `backend` (its name or address), added at runtime,
    /// from VIP `vip`: it leaves the ring at once, and its established
    /// flows go on until the connection table's idle timeout, as a backend
    /// removed from the file. A backend of the file is refused: the next
    /// reload would bring it back (`xlb backend drain` stops its new flows).
    pub fn remove_backend(&mut self, vip: &str, backend: &str) -> Result<String> {
        let started = Instant::now();
        let key = self.vip_named(vip)?;
        let v = self.vips.get_mut(&key).expect("found above");
        let Some(i) = v.find_backend(backend) else {
            bail!("VIP {vip} has no backend named {backend:?}");
        };
        if !v.backends[i].runtime {
            bail!(
                "VIP {vip}: backend {:?} is in the configuration file: remove it there and \
                 reload (or `xlb backend drain` it); only backends added with `xlb backend \
                 add` are removed at runtime",
                v.backends[i].config.name
            );
        }
        let b = v.backends.remove(i);
        let name = b.config.name.clone();
        let grace = retire::grace(&self.conntrack, v.settings.protocol);
        self.retiring
            .retire(key, v.index, vip, b, Instant::now() + grace);
        let standby = self.standby.contains(vip);
        let synced = v.sync(&mut self.maps, standby);
        let record = self.record_retired();
        synced?;
        record?;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        tracing::info!(vip, backend = %name, elapsed_ms = format!("{elapsed_ms:.1}"),
            "runtime backend removed");
        Ok(format!(
            "{vip}/{name}: removed, {elapsed_ms:.1} ms; no new flows, established flows \
             continue for up to {} s",
            grace.as_secs()
        ))
    }

    /// Whether backend `address` of VIP `vip` is in the ring now.
    pub fn in_ring(&self, vip: &VipKey, address: IpAddr) -> bool {
        self.vips.get(vip).is_some_and(|v| {
            v.ring.as_ref().is_some_and(|r| {
                v.backends
                    .iter()
                    .find(|b| b.config.address == address)
                    .is_some_and(|b| {
                        let id = crate::maglev::identity(address, b.config.port);
                        r.members.iter().any(|m| m.identity == id)
                    })
            })
        })
    }

    /// Whether backend `address` of DSR VIP `vip` waits for its MAC.
    pub fn waits_for_mac(&self, vip: &VipKey, address: IpAddr) -> bool {
        self.vips.get(vip).is_some_and(|v| {
            v.settings.mode == Mode::Dsr
                && v.backends
                    .iter()
                    .any(|b| b.config.address == address && b.mac.is_none())
        })
    }

    /// The key of the VIP named `name`, as the file configured it.
    pub(super) fn vip_named(&self, name: &str) -> Result<VipKey> {
        self.vips
            .values()
            .find(|v| v.settings.name == name && v.applied.is_some() && !v.removing)
            .map(|v| v.key)
            .ok_or_else(|| anyhow!("no VIP named {name:?}"))
    }
}

impl Vip {
    /// The position of the backend named `backend`, or at that address.
    pub(super) fn find_backend(&self, backend: &str) -> Option<usize> {
        self.backends
            .iter()
            .position(|b| b.config.name == backend)
            .or_else(|| {
                let addr: IpAddr = backend.parse().ok()?;
                self.backends.iter().position(|b| b.config.address == addr)
            })
    }
}

/// The name of a runtime backend at `address`:`port` of `vip`: its address,
/// or `ADDRESS:PORT` if a backend of the file has that name. `None` if both
/// are taken.
fn runtime_name(vip: &Vip, address: IpAddr, port: u16) -> Option<String> {
    let taken = |n: &str| {
        vip.backends
            .iter()
            .any(|b| b.config.name == n && b.config.address != address)
    };
    [address.to_string(), format!("{address}:{port}")]
        .into_iter()
        .find(|n| !taken(n))
}

/// A reload keeps runtime backend `b` of `vip` (whose file is now `cfg`):
/// it follows the VIP's `[vip.health]` and `[vip.feedback]`, and is renamed
/// if a backend of the file took its name.
pub(super) fn keep(vip: &mut Vip, cfg: &VipConfig, mut b: Backend) {
    let (address, port) = (b.config.address, b.config.port);
    let name = runtime_name(vip, address, port).unwrap_or_else(|| format!("{address}:{port}"));
    let check = cfg.health.as_ref().map(|h| h.for_port(port));
    b.keep_runtime(name, check);
    b.follow_feedback(cfg.feedback.as_ref());
    vip.backends.push(b);
}

/// Refuses a file for VIP `vip` whose backends and the runtime backends it
/// keeps would not fit its ring.
pub(super) fn check_room(vip: &Vip, cfg: &VipConfig) -> Result<()> {
    let kept = vip
        .backends
        .iter()
        .filter(|b| b.runtime && !cfg.backends.iter().any(|f| f.address == b.config.address))
        .count();
    let total = cfg.backends.len() + kept;
    if kept > 0 && total > cfg.ring_size as usize {
        bail!(
            "VIP {}: the file's {} backends and the {kept} added at runtime are more than \
             ring_size {} has slots; remove runtime backends first (`xlb backend remove`)",
            cfg.name,
            cfg.backends.len(),
            cfg.ring_size
        );
    }
    Ok(())
}
