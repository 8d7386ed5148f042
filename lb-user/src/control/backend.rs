//! Per-backend state the controller keeps besides the config: MAC, id,
//! health-check record, and runtime drain/weight. Decides whether a backend
//! is usable (in the Maglev ring).

use lb_common::BACKEND_F_RESCHEDULE;

use crate::{
    config::{BackendConfig, Mode, OnDown},
    health::{Health, Tracker},
};

/// A runtime change to one backend (`xlb backend ...`), kept until undone or
/// until a reload applies the file again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendAction {
    /// No new flows (weight 0), established ones continue.
    Drain,
    /// Ends a drain: back to the runtime or file weight.
    Undrain,
    /// Replaces the file's weight.
    Weight(u32),
}

pub(super) struct BackendSlot {
    pub(super) id: u32,
    /// `BackendInfo::generation` of this id for this backend.
    pub(super) generation: u16,
    pub(super) mac: Option<[u8; 6]>,
    /// Consecutive refreshes that found no usable neighbour entry while a
    /// MAC was known.
    pub(super) missing: u32,
    /// `None`: not health-checked.
    pub(super) health: Option<Tracker>,
    pub(super) drained: bool,
    pub(super) weight_override: Option<u32>,
}

impl BackendSlot {
    /// A new backend; `mac` is what the neighbour table knows of it now.
    pub(super) fn new(
        id: u32,
        generation: u16,
        config: &BackendConfig,
        mac: Option<[u8; 6]>,
    ) -> Self {
        Self {
            id,
            generation,
            mac,
            missing: 0,
            health: config.check.as_ref().map(|c| Tracker::new(c, false)),
            drained: false,
            weight_override: None,
        }
    }

    /// The weight the ring uses: 0 while drained, else the runtime weight or
    /// the file's.
    pub(super) fn weight(&self, config: &BackendConfig) -> u32 {
        if self.drained {
            0
        } else {
            self.weight_override.unwrap_or(config.weight)
        }
    }

    pub(super) fn health_up(&self) -> bool {
        self.health.as_ref().is_none_or(|t| t.state() == Health::Up)
    }

    /// In the ring: reachable (NAT routes through the kernel's FIB, DSR
    /// needs the MAC), weight above 0, and healthy.
    pub(super) fn usable(&self, config: &BackendConfig, mode: Mode) -> bool {
        (mode == Mode::Nat || self.mac.is_some()) && self.weight(config) > 0 && self.health_up()
    }

    /// `BACKEND_F_RESCHEDULE` while the checks say down and the VIP asks for
    /// established flows to move: the data plane then ignores its
    /// connection-table entries and hashes those flows onto the ring again.
    pub(super) fn reschedule_flag(&self, on_down: OnDown) -> u8 {
        let down = self
            .health
            .as_ref()
            .is_some_and(|t| t.state() == Health::Down);
        if down && on_down == OnDown::Reschedule {
            BACKEND_F_RESCHEDULE
        } else {
            0
        }
    }

    /// A reload: the check may have changed, and runtime overrides end.
    pub(super) fn reconfigure(&mut self, vip: &str, config: &BackendConfig) {
        self.health = match (self.health.take(), &config.check) {
            (_, None) => None,
            (Some(mut t), Some(c)) => {
                t.reconfigure(c);
                Some(t)
            }
            // Checks added to a backend that was serving: it stays in until
            // a check fails `fall` times.
            (None, Some(c)) => Some(Tracker::new(c, true)),
        };
        if self.drained || self.weight_override.is_some() {
            tracing::warn!(vip, backend = %config.name, drained = self.drained,
                runtime_weight = ?self.weight_override, file_weight = config.weight,
                "reload: runtime drain/weight of this backend discarded, the file's weight applies");
        }
        self.drained = false;
        self.weight_override = None;
    }
}
