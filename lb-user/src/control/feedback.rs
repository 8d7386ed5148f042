//! `[vip.feedback]` in the controller: agents' answers reach each
//! backend's [`BackendFeedback`](crate::feedback::BackendFeedback) here
//! (response times arrive with the health-check results, in `runtime`);
//! a VIP whose effective weights changed gets a new ring through the usual
//! sync, which rebuilds the ring only if its input changed.

use std::collections::HashSet;

use anyhow::{Context as _, Result};
use lb_common::VipKey;

use super::{
    Controller,
    backend::{self, Backend},
};
use crate::{feedback::AgentResult, maps::MapStore};

impl<M: MapStore> Controller<M> {
    /// Feeds agents' answers (all those that queued up: one ring per VIP
    /// for all of them). Answers for backends no longer configured, or of
    /// VIPs without an agent source, are ignored.
    pub fn record_feedback(
        &mut self,
        results: impl IntoIterator<Item = AgentResult>,
    ) -> Result<()> {
        let now = crate::clock::monotonic_ns();
        let mut changed: Vec<VipKey> = Vec::new();
        let mut seen = HashSet::new();
        for r in results {
            let Some(v) = self.vips.get_mut(&r.vip) else {
                continue;
            };
            // The backends and the name are borrowed apart: no copy of
            // the name per answer.
            let Some(b) = backend::at(&mut v.backends, r.addr) else {
                continue;
            };
            let Some(f) = b.feedback.as_mut() else {
                continue;
            };
            if let Some((from, to)) = f.agent_answer(now, &r.answer) {
                log_change(&v.settings.name, b, from, to);
                if seen.insert(r.vip) {
                    changed.push(r.vip);
                }
            }
        }
        self.sync_vips(&changed)
            .context("applying feedback from the agents")
    }
}

/// One line per change of a backend's effective percent.
pub(super) fn log_change(vip: &str, b: &Backend, from: u8, to: u8) {
    tracing::info!(vip, backend = %b.config.name, from_percent = from, to_percent = to,
        weight = b.weight(), ring_weight = b.ring_weight(),
        "feedback: effective weight changed");
}
