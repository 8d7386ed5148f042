//! Rings built and published in batches. Publishing a ring costs the
//! kernel an RCU grace period (milliseconds) however many rings go at once
//! (`MapStore::publish_rings`), so the controller stages the new rings of
//! many VIPs and publishes them together; and VIPs with the same usable
//! backends (the same Maglev input) share the work of building the table.

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use lb_common::VipKey;

use super::{Controller, vip::RingInput};
use crate::{maglev, maps::MapStore};

/// Most rings staged before they are published: each staged ring holds a
/// descriptor until then.
pub(super) const BATCH_RINGS: usize = 256;
/// Most ring slots staged before they are published (32 MiB of rings;
/// 128 rings of the default size), so that one batch stays short and
/// whoever waits for the controller (the control socket) waits little.
pub(super) const BATCH_SLOTS: u64 = 1 << 23;

/// A ring staged for a VIP and the input it was built from, recorded once
/// it is published.
#[derive(Debug)]
pub(super) struct StagedRing {
    pub(super) input: RingInput,
    pub(super) digest: u64,
}

/// Maglev tables (slot → member position) by input, for the VIPs synced
/// together: many VIPs on the same backends need one table. Holds a few
/// tables at most.
#[derive(Debug, Default)]
pub(super) struct Tables {
    tables: HashMap<RingInput, Vec<u32>>,
}

const TABLES_KEPT: usize = 8;

impl Tables {
    /// The table of `input` (its members' positions in `input.members`).
    pub(super) fn table(&mut self, input: &RingInput) -> &[u32] {
        if !self.tables.contains_key(input) {
            if self.tables.len() >= TABLES_KEPT {
                self.tables.clear();
            }
            let table = maglev::build_table(&input.members, input.size);
            self.tables.insert(input.clone(), table);
        }
        &self.tables[input]
    }
}

impl<M: MapStore> Controller<M> {
    /// Syncs the VIPs `keys` (those in the model), their new rings
    /// published in batches: each VIP serves its new ring as soon as its
    /// batch is in. Goes on past a VIP that fails (left unsynced, for the
    /// next refresh) and returns the first error.
    pub(super) fn sync_vips(&mut self, keys: &[VipKey]) -> Result<()> {
        let mut first_error = None;
        let mut tables = Tables::default();
        let mut rest = keys;
        while !rest.is_empty() {
            let (taken, error) = self.sync_batch(rest, &mut tables);
            if let Some(e) = error {
                first_error.get_or_insert(e);
            }
            rest = &rest[taken..];
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Syncs VIPs from the front of `keys` until a batch is full, then
    /// publishes their rings and finishes them. Returns how many keys it
    /// took (at least one) and the first error.
    pub(super) fn sync_batch(
        &mut self,
        keys: &[VipKey],
        tables: &mut Tables,
    ) -> (usize, Option<anyhow::Error>) {
        let mut first_error = None;
        let mut staged = Vec::new();
        let (mut rings, mut slots, mut taken) = (0usize, 0u64, 0usize);
        for key in keys {
            if rings >= BATCH_RINGS || slots >= BATCH_SLOTS {
                break;
            }
            taken += 1;
            let Some(vip) = self.vips.get_mut(key) else {
                continue;
            };
            match vip.sync_stage(&mut self.maps, tables) {
                Ok(ring) => {
                    if let Some(r) = &ring {
                        rings += 1;
                        slots += u64::from(r.input.size);
                    }
                    staged.push((*key, ring));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let published = self
            .maps
            .publish_rings()
            .with_context(|| format!("publishing {rings} rings"));
        let published = match published {
            Ok(()) => true,
            Err(e) => {
                first_error.get_or_insert(e);
                false
            }
        };
        for (key, ring) in staged {
            if ring.is_some() && !published {
                // Unsynced: staged again on the next refresh.
                continue;
            }
            let Some(vip) = self.vips.get_mut(&key) else {
                continue;
            };
            let standby = self.standby.contains(vip.name());
            if let Err(e) = vip.sync_finish(&mut self.maps, ring, standby) {
                first_error.get_or_insert(e);
            }
        }
        (taken.max(1).min(keys.len()), first_error)
    }
}
