//! Removed backends finish their flows, as IPVS keeps a deleted real server
//! in its "trash" while connections still use it: a backend taken out of
//! the configuration leaves the Maglev ring at once (no new flows), but its
//! id and `BACKENDS` entry stay for the connection table's idle timeout, so
//! its established connections go on. Re-added within that time, it gets
//! the same id and generation back and nothing is lost.

use std::{
    net::IpAddr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use lb_common::{BackendOwner, OWNER_F_IN_USE, OWNER_F_RETIRED, VipKey};

use super::backend::Backend;
use crate::config::{ConntrackConfig, Protocol};

/// Entries that never time out (timeout 0) still free a removed backend
/// after this long.
const MAX_GRACE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug)]
pub(super) struct Retired {
    pub(super) vip: VipKey,
    /// `VipMeta::index` of `vip`.
    pub(super) vip_index: u32,
    pub(super) backend: Backend,
    pub(super) until: Instant,
    /// Its owner record says retired, until when.
    pub(super) recorded: bool,
}

impl Retired {
    /// The owner record of a retired backend: its grace's end in Unix time,
    /// which a restarted controller reads back.
    pub(super) fn owner(&self) -> BackendOwner {
        let left = self.until.saturating_duration_since(Instant::now());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        BackendOwner {
            flags: OWNER_F_IN_USE | OWNER_F_RETIRED,
            retired_until_unix_s: (now + left).as_secs(),
            ..self.backend.owner(self.vip_index, false)
        }
    }
}

/// The `Instant` of a Unix time in seconds (now, if it has passed).
pub(super) fn instant_of_unix(secs: u64) -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Instant::now() + Duration::from_secs(secs).saturating_sub(now)
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

/// The backends removed from the configuration whose flows may go on.
#[derive(Debug, Default)]
pub(super) struct Retiring {
    list: Vec<Retired>,
}

impl Retiring {
    /// `backend`, removed from `vip` (index `vip_index`), finishes its flows
    /// until `until`.
    pub(super) fn retire(
        &mut self,
        vip: VipKey,
        vip_index: u32,
        vip_name: &str,
        backend: Backend,
        until: Instant,
    ) {
        let grace = until.saturating_duration_since(Instant::now());
        tracing::info!(vip = %vip_name, backend = %backend.config.name, grace_s = grace.as_secs(),
            "backend removed: no new flows; established flows continue until idle");
        self.list.push(Retired {
            vip,
            vip_index,
            backend,
            until,
            recorded: false,
        });
    }

    /// Those whose owner record does not say retired yet.
    pub(super) fn unrecorded(&mut self) -> impl Iterator<Item = &mut Retired> {
        self.list.iter_mut().filter(|r| !r.recorded)
    }

    /// Whether `address`, removed from `vip`, is still within its grace.
    pub(super) fn contains(&self, vip: &VipKey, address: IpAddr) -> bool {
        self.list
            .iter()
            .any(|r| r.vip == *vip && r.backend.config.address == address)
    }

    /// Takes back the backend `address` removed from `vip`, if its grace has
    /// not ended.
    pub(super) fn take(&mut self, vip: &VipKey, address: IpAddr) -> Option<Backend> {
        let i = self
            .list
            .iter()
            .position(|r| r.vip == *vip && r.backend.config.address == address)?;
        Some(self.list.swap_remove(i).backend)
    }

    /// Removes and returns those whose grace has ended by `now`, or, with
    /// `vip`, all of that VIP's (the VIP itself is gone).
    pub(super) fn expire(&mut self, now: Instant, vip: Option<&VipKey>) -> Vec<Backend> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.list.len() {
            let r = &self.list[i];
            if r.until <= now || vip == Some(&r.vip) {
                out.push(self.list.swap_remove(i).backend);
            } else {
                i += 1;
            }
        }
        out
    }

    /// The removed backends of `vip`.
    pub(super) fn of<'a>(&'a self, vip: &'a VipKey) -> impl Iterator<Item = &'a Backend> + 'a {
        self.list
            .iter()
            .filter(move |r| r.vip == *vip)
            .map(|r| &r.backend)
    }
}
