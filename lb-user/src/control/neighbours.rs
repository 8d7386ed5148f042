//! Backend MAC addresses come from the kernel's neighbour table, not from
//! the config file: DSR forwards by rewriting the destination MAC.

use std::{collections::HashMap, net::IpAddr};

use anyhow::{Context as _, Result};

use super::{Controller, backend::RESOLVE_GRACE};
use crate::{config::Mode, maps::MapStore};

/// Where neighbour MACs come from: the kernel (netlink) in production, a
/// table in tests.
pub trait Neighbours {
    fn lookup(&mut self) -> Result<HashMap<IpAddr, [u8; 6]>>;
    /// Asks the kernel to resolve (or revalidate) `addr`; called once per
    /// address per refresh, however many VIPs have it as a backend.
    fn probe(&mut self, addr: IpAddr) -> Result<()>;
}

/// A neighbour table that knows nobody: for dry runs (`xlb check`), where
/// what matters is whether the configuration can be served at all.
pub struct NoNeighbours;

impl Neighbours for NoNeighbours {
    fn lookup(&mut self) -> Result<HashMap<IpAddr, [u8; 6]>> {
        Ok(HashMap::new())
    }
    fn probe(&mut self, _: IpAddr) -> Result<()> {
        Ok(())
    }
}

/// A known MAC is given up only after this many consecutive refreshes
/// without a usable neighbour entry: entries briefly vanish or go INCOMPLETE
/// while the kernel revalidates them, and dropping the backend from the ring
/// for that would move its flows for nothing.
pub(super) const MAC_LOST_AFTER: u32 = 3;

impl<M: MapStore> Controller<M> {
    /// Reads the neighbour table, updates backend MACs (and rings where the
    /// usable set changed), asks the kernel to resolve or revalidate every
    /// backend, and finishes any VIP whose last sync failed. XDP forwarding
    /// never "uses" a neighbour entry in the kernel's eyes, so without these
    /// probes entries would go STALE and be garbage-collected under a
    /// backend that is serving traffic.
    pub fn refresh_neighbours(&mut self, neighbours: &mut dyn Neighbours) -> Result<()> {
        let table = neighbours.lookup().context("reading the neighbour table")?;
        self.refresh_from(&table, neighbours)
    }

    /// [`Controller::refresh_neighbours`] with the table already read.
    pub(super) fn refresh_from(
        &mut self,
        table: &HashMap<IpAddr, [u8; 6]>,
        neighbours: &mut dyn Neighbours,
    ) -> Result<()> {
        let mut first_error = None;
        let mut changed_vips = Vec::new();
        // Each address once, however many VIPs share it.
        let mut probes = std::collections::BTreeSet::new();
        for vip in self.vips.values_mut() {
            if vip.settings.mode == Mode::Nat {
                continue;
            }
            let mut changed = false;
            let mut grace_ran_out = false;
            for b in &mut vip.backends {
                let seen = table.get(&b.config.address).copied();
                if seen.is_none() && b.mac.is_none() {
                    b.unresolved_for = b.unresolved_for.saturating_add(1);
                    grace_ran_out |= b.unresolved_for == RESOLVE_GRACE;
                } else {
                    b.unresolved_for = 0;
                }
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
                        Some(m) => {
                            tracing::info!(vip = %vip.settings.name, backend = %b.config.name,
                            mac = %crate::netlink::format_mac(&m), "backend MAC resolved")
                        }
                        None => tracing::warn!(vip = %vip.settings.name, backend = %b.config.name,
                            "backend MAC lost from the neighbour table: no new flows to it"),
                    }
                    b.mac = mac;
                    changed = true;
                }
                probes.insert(b.config.address);
            }
            if changed {
                changed_vips.push(vip.key);
            } else if grace_ran_out && vip.usable_backends() == 0 {
                // Start-up is over for this VIP and it still cannot serve.
                vip.report_unusable();
            }
        }
        for addr in probes {
            if let Err(e) = neighbours.probe(addr) {
                tracing::debug!(backend = %addr, error = %e, "neighbour probe failed");
            }
        }
        if let Err(e) = self.sync_vips(&changed_vips) {
            first_error.get_or_insert(e);
        }
        if let Err(e) = self.resync() {
            first_error.get_or_insert(e);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether some DSR backend's MAC is still unknown (the daemon then
    /// refreshes more often).
    pub fn has_unresolved(&self) -> bool {
        self.vips
            .values()
            .any(|v| v.settings.mode == Mode::Dsr && v.backends.iter().any(|b| b.mac.is_none()))
    }
}
