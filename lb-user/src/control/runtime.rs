//! What changes a running backend's place in the ring besides the config
//! file and the neighbour table: health-check results and the runtime
//! commands `xlb backend drain|undrain|weight`.

use std::net::IpAddr;

use anyhow::{Context as _, Result, bail};
use lb_common::VipKey;

use super::{Controller, backend};
use crate::{
    api::BackendAction,
    config::MAX_WEIGHT,
    health::{Health, Outcome},
    maps::MapStore,
};

impl<M: MapStore> Controller<M> {
    /// Feeds one health-check result of backend `addr` of VIP `vip`. A
    /// state change is logged once, with the check, what it saw and how long
    /// it took, and takes the backend out of (or back into) the ring.
    /// Results for backends no longer configured are ignored.
    pub fn record_check(&mut self, vip: &VipKey, addr: IpAddr, outcome: Outcome) -> Result<()> {
        self.record_checks([(*vip, addr, outcome)])
    }

    /// Feeds many health-check results at once (those that queued up while
    /// the controller was busy): each VIP whose usable backends changed gets
    /// one new ring for all of them, however many results changed it (the
    /// first results of 1,000 backends of one VIP build one ring, not
    /// 1,000), and the rings of all those VIPs are published together.
    pub fn record_checks(
        &mut self,
        results: impl IntoIterator<Item = (VipKey, IpAddr, Outcome)>,
    ) -> Result<()> {
        let mut changed: Vec<VipKey> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (vip, addr, outcome) in results {
            if self.observe_check(&vip, addr, outcome) && seen.insert(vip) {
                changed.push(vip);
            }
        }
        // With on_down = "reschedule" this also flags the backend entry, so
        // its tracked flows are hashed again, onto the ring written here.
        self.sync_vips(&changed)
            .context("applying health-check results")
    }

    /// Feeds one result to its backend's tracker (and, with `source =
    /// "response_time"`, a passed check's duration to its feedback);
    /// whether its health or its ring weight changed (logged here).
    fn observe_check(&mut self, vip: &VipKey, addr: IpAddr, outcome: Outcome) -> bool {
        let Some(v) = self.vips.get_mut(vip) else {
            return false;
        };
        // The backends and the settings are borrowed apart: no copy of the
        // VIP's name per check.
        let (on_down, vname) = (v.settings.on_down, &v.settings.name);
        let Some(b) = backend::at(&mut v.backends, addr) else {
            return false;
        };
        let reweighted = outcome.ok
            && b.feedback
                .as_mut()
                .and_then(|f| f.response_time(crate::clock::monotonic_ns(), outcome.latency))
                .inspect(|&(from, to)| super::feedback::log_change(vname, b, from, to))
                .is_some();
        let Some(tracker) = b.health.as_mut() else {
            return reweighted;
        };
        let (detail, latency_ms) = (outcome.detail.clone(), outcome.latency.as_secs_f64() * 1e3);
        let Some((from, to)) = tracker.observe(outcome) else {
            return reweighted;
        };
        let (consecutive, check) = (tracker.streak(), tracker.check().to_owned());
        let bname = b.config.name.as_str();
        if to == Health::Up {
            tracing::info!(vip = %vname, backend = %bname, %from, %to, check, result = detail,
                latency_ms = format!("{latency_ms:.1}"), consecutive, "backend health: UP, eligible for new flows again");
        } else {
            tracing::warn!(vip = %vname, backend = %bname, %from, %to, check, result = detail,
                latency_ms = format!("{latency_ms:.1}"), consecutive, on_down = on_down.as_str(),
                "backend health: DOWN, out of the table for new flows");
        }
        true
    }

    /// Backends whose drain or weight was set at runtime (`xlb backend`),
    /// which the next apply of the file resets.
    pub fn runtime_overrides(&self) -> usize {
        self.vips
            .values()
            .flat_map(|v| v.backends.iter())
            .filter(|b| !b.runtime && (b.drained || b.weight_override.is_some()))
            .count()
    }

    /// Applies a runtime drain/undrain/weight to backend `backend` (its name,
    /// or its address) of VIP `vip` (its name). Lasts until undone or until a
    /// reload applies the file. Returns a sentence saying what was done.
    pub fn backend_action(
        &mut self,
        vip: &str,
        backend: &str,
        action: BackendAction,
    ) -> Result<String> {
        if let BackendAction::Weight(w) = action
            && w > MAX_WEIGHT
        {
            bail!("weight {w} is out of range 0..={MAX_WEIGHT}");
        }
        let key = self.vip_named(vip)?;
        let v = self.vips.get_mut(&key).expect("found above");
        let Some(i) = v.find_backend(backend) else {
            bail!("VIP {vip} has no backend named {backend:?}");
        };
        let b = &mut v.backends[i];
        match action {
            BackendAction::Drain => b.drained = true,
            BackendAction::Undrain => b.drained = false,
            // A runtime backend's weight is its own: no file weight to
            // return to.
            BackendAction::Weight(w) if b.runtime => b.config.weight = w,
            BackendAction::Weight(w) => b.weight_override = Some(w),
        }
        let what = match action {
            BackendAction::Drain => "drained".to_owned(),
            BackendAction::Undrain => "undrained".to_owned(),
            BackendAction::Weight(w) => format!("runtime weight {w}"),
        };
        let message = if b.runtime {
            format!(
                "{vip}/{}: {what}, weight now {} (added at runtime); a reload keeps it",
                b.config.name,
                b.weight()
            )
        } else {
            format!(
                "{vip}/{}: {what}, weight now {} (file {}); a reload applies the file again",
                b.config.name,
                b.weight(),
                b.config.weight
            )
        };
        tracing::info!(vip, backend = %b.config.name, ?action, "{message}");
        let standby = self.standby.contains(vip);
        v.sync(&mut self.maps, standby)?;
        Ok(message)
    }
}
