//! VRRP's part of `xlb status`: the engine publishes a snapshot after every
//! event; the control socket reads it.

use super::engine::Engine;
use crate::api::{VrrpGroupStatus, VrrpStatus, VrrpTransition};
use std::sync::Mutex;

pub(super) use crate::clock::unix_ms;

impl Engine {
    /// Replaces the shared snapshot with the engine's state now.
    pub(super) fn publish(&self) {
        let groups = self
            .groups
            .iter()
            .map(|g| {
                let m = &g.machine;
                VrrpGroupStatus {
                    vrid: g.cfg.vrid,
                    family: if g.cfg.is_ipv6() { "ipv6" } else { "ipv4" }.into(),
                    state: m.state().as_str().into(),
                    priority: m.priority(),
                    configured_priority: g.cfg.priority,
                    preempt: g.cfg.preempt,
                    advert_interval_cs: g.cfg.interval_cs,
                    master: m.master().map(|a| a.to_string()),
                    vips: g.cfg.vips.clone(),
                    server_addresses: g
                        .cfg
                        .server_addresses
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    adverts_sent: g.sent,
                    adverts_received: g.received,
                    last_transition: m.last_transition().map(|(_, from, to, reason)| {
                        VrrpTransition {
                            from: from.as_str().into(),
                            to: to.as_str().into(),
                            reason: reason.to_string(),
                            at_unix_ms: g.last_at_unix_ms,
                            ago_ms: 0,
                        }
                    }),
                }
            })
            .collect();
        let snapshot = VrrpStatus {
            groups,
            tracking: self.tracking.failing.clone().unwrap_or_else(|| "ok".into()),
            counters: self.counters.clone(),
            peers: self.peers().iter().map(ToString::to_string).collect(),
        };
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }
}

/// A status snapshot with `ago_ms` filled in for now.
pub fn status_now(shared: &Mutex<VrrpStatus>) -> VrrpStatus {
    let mut s = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let now = unix_ms();
    for g in &mut s.groups {
        if let Some(t) = &mut g.last_transition {
            t.ago_ms = now.saturating_sub(t.at_unix_ms);
        }
    }
    s
}
