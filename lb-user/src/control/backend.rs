//! One backend as the controller keeps it: its configuration and its state
//! (id, MAC, health record, runtime drain/weight) in one struct. Decides
//! whether it is usable (in the Maglev ring) and what the data plane's
//! `BACKENDS` entry says.

use std::net::IpAddr;

use lb_common::{
    BACKEND_F_ACTIVE, BACKEND_F_RESCHEDULE, BackendInfo, BackendOwner, FAMILY_V4, OWNER_F_DOWN,
    OWNER_F_DRAINED, OWNER_F_IN_RING, OWNER_F_IN_USE, OWNER_F_RUNTIME, OWNER_F_WEIGHT, addr_bytes,
};

use crate::{
    config::{BackendConfig, CheckConfig, FeedbackConfig, Mode, OnDown},
    feedback::BackendFeedback,
    health::{Health, Tracker},
    maglev,
};

/// Neighbour refreshes (200 ms apart while a MAC is unknown) a backend
/// that was never resolved may take before its VIP having no usable
/// backend is an error rather than a start-up.
pub(super) const RESOLVE_GRACE: u32 = 10;

#[derive(Debug)]
pub(super) struct Backend {
    pub(super) config: BackendConfig,
    pub(super) id: u32,
    /// `BackendInfo::generation` of this id for this backend.
    pub(super) generation: u16,
    pub(super) mac: Option<[u8; 6]>,
    /// Consecutive refreshes that found no usable neighbour entry while a
    /// MAC was known.
    pub(super) missing: u32,
    /// Consecutive refreshes that found no MAC while none was known: a
    /// new backend is still being resolved for [`RESOLVE_GRACE`] of them.
    pub(super) unresolved_for: u32,
    /// `None`: not health-checked.
    pub(super) health: Option<Tracker>,
    pub(super) drained: bool,
    pub(super) weight_override: Option<u32>,
    /// A fresh id whose counters (a previous owner's) are not reset yet.
    pub(super) reset_counters: bool,
    /// What the data plane has of it (its entry and its owner record), so
    /// that a sync writes only what changed.
    pub(super) written: Option<(BackendInfo, BackendOwner)>,
    /// Taken over from a previous control plane, with this health: the
    /// first reconfigure keeps its runtime drain/weight (they were the
    /// operator's, not the file's) and starts its checks there.
    pub(super) adopted: Option<Health>,
    /// Its VIP's `[vip.feedback]` state; `None` without feedback.
    pub(super) feedback: Option<BackendFeedback>,
    /// Added at runtime (`xlb backend add`), not by the file: a reload
    /// keeps it, and its `config.weight` is the one it was added with
    /// (`xlb backend weight` changes that; there is no file weight).
    pub(super) runtime: bool,
}

impl Backend {
    /// A new backend; `mac` is what the neighbour table knows of it now.
    pub(super) fn new(
        id: u32,
        generation: u16,
        config: BackendConfig,
        mac: Option<[u8; 6]>,
    ) -> Self {
        Self {
            health: config.check.as_ref().map(|c| Tracker::new(c, false)),
            config,
            id,
            generation,
            mac,
            missing: 0,
            unresolved_for: 0,
            drained: false,
            weight_override: None,
            reset_counters: true,
            written: None,
            adopted: None,
            feedback: None,
            runtime: false,
        }
    }

    /// A backend a previous control plane left in the maps: `owner` and
    /// `info` as it wrote them. Its config is a placeholder until the first
    /// reconfigure (the file's) replaces it.
    pub(super) fn adopted(id: u32, owner: &BackendOwner, info: &BackendInfo) -> Self {
        let address = owner_address(owner);
        let active = info.flags & BACKEND_F_ACTIVE != 0;
        // In the ring: it was usable, so it was healthy (or unchecked).
        let health = if owner.flags & OWNER_F_DOWN != 0 {
            Health::Down
        } else if owner.flags & OWNER_F_IN_RING != 0 {
            Health::Up
        } else {
            Health::Unknown
        };
        let runtime = owner.flags & OWNER_F_RUNTIME != 0;
        Self {
            config: BackendConfig {
                name: address.to_string(),
                address,
                port: u16::from_be(owner.port),
                weight: if runtime { owner.weight_override } else { 1 },
                tier: owner.tier,
                check: None,
            },
            id,
            generation: owner.generation,
            mac: active.then_some(info.mac),
            missing: 0,
            unresolved_for: 0,
            health: None,
            drained: owner.flags & OWNER_F_DRAINED != 0,
            weight_override: (!runtime && owner.flags & OWNER_F_WEIGHT != 0)
                .then_some(owner.weight_override),
            reset_counters: false,
            written: None,
            adopted: Some(health),
            feedback: None,
            runtime,
        }
    }

    /// The owner record of this backend of VIP `vip`.
    pub(super) fn owner(&self, vip: u32, in_ring: bool) -> BackendOwner {
        let (addr, family) = addr_bytes(self.config.address);
        let mut flags = OWNER_F_IN_USE;
        if self.drained {
            flags |= OWNER_F_DRAINED;
        }
        if self.weight_override.is_some() {
            flags |= OWNER_F_WEIGHT;
        }
        if self.runtime {
            flags |= OWNER_F_RUNTIME;
        }
        if in_ring {
            flags |= OWNER_F_IN_RING;
        }
        if self
            .health
            .as_ref()
            .is_some_and(|t| t.state() == Health::Down)
        {
            flags |= OWNER_F_DOWN;
        }
        BackendOwner {
            addr,
            port: self.config.port.to_be(),
            family,
            tier: self.config.tier,
            vip,
            generation: self.generation,
            flags,
            weight_override: if self.runtime {
                self.config.weight
            } else {
                self.weight_override.unwrap_or(0)
            },
            retired_until_unix_s: 0,
        }
    }

    /// The weight the ring uses: 0 while drained, else the runtime weight or
    /// the file's.
    pub(super) fn weight(&self) -> u32 {
        if self.drained {
            0
        } else {
            self.weight_override.unwrap_or(self.config.weight)
        }
    }

    pub(super) fn health_up(&self) -> bool {
        self.health.as_ref().is_none_or(|t| t.state() == Health::Up)
    }

    /// Whether the data plane can send to it: NAT routes through the
    /// kernel's FIB, DSR needs the backend's own MAC.
    pub(super) fn reachable(&self, mode: Mode) -> bool {
        mode == Mode::Nat || self.mac.is_some()
    }

    /// In the ring: reachable, weight above 0, and healthy.
    pub(super) fn usable(&self, mode: Mode) -> bool {
        self.reachable(mode) && self.weight() > 0 && self.health_up()
    }

    /// The weight of its ring member: [`Backend::weight`], or with
    /// feedback that weight × the effective percent, in integers, so that a
    /// small weight at a small percent never rounds to 0 (and a VIP without
    /// feedback builds exactly the ring it always did).
    pub(super) fn ring_weight(&self) -> u32 {
        match &self.feedback {
            None => self.weight(),
            Some(f) => self.weight() * u32::from(f.percent()),
        }
    }

    /// Its Maglev ring member (identity and weight).
    pub(super) fn member(&self) -> maglev::Member {
        maglev::Member {
            identity: maglev::identity(self.config.address, self.config.port),
            weight: self.ring_weight(),
        }
    }

    /// Follows its VIP's `[vip.feedback]`: added, reconfigured (the state
    /// goes on) or removed.
    pub(super) fn follow_feedback(&mut self, config: Option<&FeedbackConfig>) {
        match (self.feedback.as_mut(), config) {
            (Some(f), Some(c)) => f.reconfigure(c),
            (None, Some(c)) => self.feedback = Some(BackendFeedback::new(c)),
            (_, None) => self.feedback = None,
        }
    }

    /// The `BACKENDS` entry. A backend that is only unhealthy or drained
    /// keeps an active entry, so the flows the connection table already
    /// tracks for it go on; an unreachable one gets an empty entry. `vip`
    /// is the index of the VIP it belongs to.
    pub(super) fn info(&self, vip: u32, mode: Mode, on_down: OnDown) -> BackendInfo {
        if !self.reachable(mode) {
            return BackendInfo::default();
        }
        let (addr, family) = addr_bytes(self.config.address);
        BackendInfo {
            addr,
            port: self.config.port.to_be(),
            family,
            flags: BACKEND_F_ACTIVE | self.reschedule_flag(on_down),
            mac: self.mac.unwrap_or_default(),
            generation: self.generation,
            vip,
        }
    }

    /// `BACKEND_F_RESCHEDULE` while the checks say down and the VIP asks for
    /// established flows to move: the data plane then ignores its
    /// connection-table entries and hashes those flows onto the ring again.
    fn reschedule_flag(&self, on_down: OnDown) -> u8 {
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

    /// A reload: the configuration may have changed (not the address, which
    /// is the backend's identity), and runtime overrides end. A backend
    /// added at runtime that the file now names becomes the file's.
    pub(super) fn reconfigure(&mut self, vip: &str, config: &BackendConfig) {
        if self.runtime {
            tracing::info!(vip, backend = %config.name,
                "reload: the file names this runtime backend; it is the file's from now on");
            self.runtime = false;
            self.config.weight = config.weight;
        }
        if self.adopted.is_some() {
            self.set_check(config.check.as_ref());
            self.config = config.clone();
            return;
        }
        self.set_check(config.check.as_ref());
        if self.drained || self.weight_override.is_some() {
            tracing::warn!(vip, backend = %config.name, drained = self.drained,
                runtime_weight = ?self.weight_override, file_weight = config.weight,
                "reload: runtime drain/weight of this backend discarded, the file's weight applies");
        }
        self.drained = false;
        self.weight_override = None;
        self.config = config.clone();
    }

    /// A reload, for a backend added at runtime that the file does not
    /// name: it stays as it is, and follows its VIP's `[vip.health]`
    /// (`check`). `name` is the name it goes by next to the file's.
    pub(super) fn keep_runtime(&mut self, name: String, check: Option<CheckConfig>) {
        self.set_check(check.as_ref());
        self.config.check = check;
        self.config.name = name;
    }

    /// Starts, changes or ends its health checks. An adopted backend's
    /// checks start from the health its predecessor recorded; checks added
    /// to a backend that was serving keep it in until they fail `fall`
    /// times.
    fn set_check(&mut self, check: Option<&CheckConfig>) {
        if let Some(health) = self.adopted.take() {
            self.health = check.map(|c| Tracker::with_state(c, health));
            return;
        }
        self.health = match (self.health.take(), check) {
            (_, None) => None,
            (Some(mut t), Some(c)) => {
                t.reconfigure(c);
                Some(t)
            }
            (None, Some(c)) => Some(Tracker::new(c, true)),
        };
    }
}

/// The backend at `address` among a VIP's `backends` (a free function, so
/// that the caller keeps the rest of its VIP borrowed apart).
pub(super) fn at(backends: &mut [Backend], address: IpAddr) -> Option<&mut Backend> {
    backends.iter_mut().find(|b| b.config.address == address)
}

/// The address an owner record names.
pub(super) fn owner_address(owner: &BackendOwner) -> IpAddr {
    if owner.family == FAMILY_V4 {
        IpAddr::from([owner.addr[0], owner.addr[1], owner.addr[2], owner.addr[3]])
    } else {
        IpAddr::from(owner.addr)
    }
}
