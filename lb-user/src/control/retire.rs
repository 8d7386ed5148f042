//! Removed backends finish their flows, as IPVS keeps a deleted real server
//! in its "trash" while connections still use it: a backend taken out of
//! the configuration leaves the Maglev ring at once (no new flows), but its
//! id and `BACKENDS` entry stay for the connection table's idle timeout, so
//! its established connections go on. Re-added within that time, it gets
//! the same id and generation back and nothing is lost.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::Result;
use lb_common::VipKey;

use super::{BackendSlot, Controller};
use crate::{
    config::{BackendConfig, ConntrackConfig, Protocol},
    status::{BackendState, BackendStatus},
};

/// Entries that never time out (timeout 0) still free a removed backend
/// after this long.
const MAX_GRACE: Duration = Duration::from_secs(24 * 3600);

pub(super) struct Retired {
    vip: VipKey,
    config: BackendConfig,
    slot: BackendSlot,
    until: Instant,
}

/// How long a removed backend of a `protocol` VIP keeps its flows: as long
/// as an idle flow would stay in the connection table.
pub(super) fn grace(ct: &ConntrackConfig, protocol: Protocol) -> Duration {
    let secs = match protocol {
        Protocol::Tcp => ct.tcp_timeout,
        Protocol::Udp => ct.udp_timeout,
    };
    if secs == 0 {
        MAX_GRACE
    } else {
        Duration::from_secs(secs.into())
    }
}

impl Controller {
    pub(super) fn retire(
        &mut self,
        vip: VipKey,
        vip_name: &str,
        config: BackendConfig,
        slot: BackendSlot,
        grace: Duration,
    ) {
        tracing::info!(vip = %vip_name, backend = %config.name, grace_s = grace.as_secs(),
            "backend removed: no new flows; established flows continue until idle");
        self.retired.push(Retired {
            vip,
            config,
            slot,
            until: Instant::now() + grace,
        });
    }

    /// The slot of a backend removed from `vip` whose grace has not ended.
    pub(super) fn unretire(&mut self, vip: &VipKey, address: IpAddr) -> Option<BackendSlot> {
        let i = self.retired_index(vip, address)?;
        Some(self.retired.swap_remove(i).slot)
    }

    /// Where the removed backend `address` of `vip` is, if it is retiring.
    pub(super) fn retired_index(&self, vip: &VipKey, address: IpAddr) -> Option<usize> {
        self.retired
            .iter()
            .position(|r| r.vip == *vip && r.config.address == address)
    }

    /// Frees removed backends whose grace has ended (or, with `vip`, all of
    /// that VIP's at once: the VIP itself is gone).
    pub(super) fn free_retired(&mut self, now: Instant, vip: Option<&VipKey>) -> Result<()> {
        let mut i = 0;
        while i < self.retired.len() {
            let r = &self.retired[i];
            if r.until <= now || vip == Some(&r.vip) {
                let r = self.retired.swap_remove(i);
                self.dp.maps.clear_backend(r.slot.id)?;
                self.backend_pool.give(r.slot.id);
                tracing::debug!(backend = %r.config.name, "removed backend freed");
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Frees removed backends whose grace has ended; call periodically.
    pub fn expire_retired(&mut self, now: Instant) -> Result<()> {
        self.free_retired(now, None)
    }

    /// Status rows of `vip`'s removed backends that still carry flows.
    pub(super) fn retired_status(&self, vip: &VipKey) -> Result<Vec<BackendStatus>> {
        let mut rows = Vec::new();
        for r in self.retired.iter().filter(|r| r.vip == *vip) {
            let c = self.dp.maps.backend_counters(r.slot.id)?;
            rows.push(BackendStatus {
                name: r.config.name.clone(),
                address: r.config.address.to_string(),
                weight: 0,
                mac: r.slot.mac.map(|m| crate::netlink::format_mac(&m)),
                state: BackendState::Removed,
                packets: c.packets,
                bytes: c.bytes,
                config_weight: r.config.weight,
                drained: false,
                weight_override: None,
                // No longer checked: it only finishes its flows.
                health: None,
            });
        }
        Ok(rows)
    }
}
