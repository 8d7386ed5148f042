//! What changes a running backend's place in the ring besides the config
//! file and the neighbour table: health-check results and the runtime
//! commands `xlb backend drain|undrain|weight`.

use std::net::IpAddr;

use anyhow::{Context as _, Result, bail};
use lb_common::VipKey;

use super::{BackendAction, Controller};
use crate::{
    config::MAX_WEIGHT,
    health::{Health, Outcome},
};

impl Controller {
    /// Feeds one health-check result of backend `addr` of VIP `vip`. A
    /// state change is logged once, with the check, what it saw and how long
    /// it took, and takes the backend out of (or back into) the ring.
    /// Results for backends no longer configured are ignored.
    pub fn record_check(&mut self, vip: &VipKey, addr: IpAddr, outcome: Outcome) -> Result<()> {
        let Some(slot) = self.vips.get_mut(vip) else {
            return Ok(());
        };
        let Some(i) = slot.config.backends.iter().position(|c| c.address == addr) else {
            return Ok(());
        };
        let b = &mut slot.backends[i];
        let Some(tracker) = b.health.as_mut() else {
            return Ok(());
        };
        let (detail, latency_ms) = (outcome.detail.clone(), outcome.latency.as_secs_f64() * 1e3);
        let Some((from, to)) = tracker.observe(outcome) else {
            return Ok(());
        };
        let (consecutive, check) = (tracker.streak(), tracker.check().to_owned());
        let (vname, bname) = (
            slot.config.name.clone(),
            slot.config.backends[i].name.clone(),
        );
        if to == Health::Up {
            tracing::info!(vip = %vname, backend = %bname, %from, %to, check, result = detail,
                latency_ms = format!("{latency_ms:.1}"), consecutive, "backend health: UP, eligible for new flows again");
        } else {
            tracing::warn!(vip = %vname, backend = %bname, %from, %to, check, result = detail,
                latency_ms = format!("{latency_ms:.1}"), consecutive, on_down = slot.config.on_down.as_str(),
                "backend health: DOWN, out of the table for new flows");
        }
        // With on_down = "reschedule" this also flags the backend entry, so
        // its tracked flows are hashed again, onto the ring written here.
        Self::sync_backends_and_ring(&mut self.dp.maps, slot)
            .with_context(|| format!("taking backend {bname} {to}"))
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
        let Some(slot) = self.vips.values_mut().find(|s| s.config.name == vip) else {
            bail!("no VIP named {vip:?}");
        };
        let Some(i) = slot
            .config
            .backends
            .iter()
            .position(|c| c.name == backend)
            .or_else(|| {
                let addr: IpAddr = backend.parse().ok()?;
                slot.config.backends.iter().position(|c| c.address == addr)
            })
        else {
            bail!("VIP {vip} has no backend named {backend:?}");
        };
        let b = &mut slot.backends[i];
        let c = &slot.config.backends[i];
        match action {
            BackendAction::Drain => b.drained = true,
            BackendAction::Undrain => b.drained = false,
            BackendAction::Weight(w) if w > MAX_WEIGHT => {
                bail!("weight {w} is out of range 0..={MAX_WEIGHT}")
            }
            BackendAction::Weight(w) => b.weight_override = Some(w),
        }
        let message = format!(
            "{vip}/{}: {}, weight now {} (file {}); a reload applies the file again",
            c.name,
            match action {
                BackendAction::Drain => "drained".to_owned(),
                BackendAction::Undrain => "undrained".to_owned(),
                BackendAction::Weight(w) => format!("runtime weight {w}"),
            },
            b.weight(c),
            c.weight
        );
        tracing::info!(vip, backend = %c.name, ?action, "{message}");
        Self::sync_backends_and_ring(&mut self.dp.maps, slot)?;
        Ok(message)
    }
}
