//! Health checks: the checkers (ICMP, TCP, HTTP status, HTTP content), the
//! scheduler that runs them concurrently on the async runtime, and the
//! per-backend record (rise/fall hysteresis, last result) that decides
//! whether a backend may be in its VIP's Maglev table.
//!
//! Checks never touch BPF maps themselves: their results go to the daemon
//! loop, which feeds them to [`crate::control::Controller::record_check`].

pub mod checks;
pub mod http;
pub mod hysteresis;
pub mod icmp;
pub mod scheduler;

use std::time::{Duration, Instant};

pub use hysteresis::{Health, Hysteresis};
pub use scheduler::{CheckResult, Scheduler};

use crate::{api::HealthStatus, config::CheckConfig};

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// From the start of the check to its result (or to the timeout).
    pub latency: Duration,
    /// What the check saw: "HTTP 200", "connection refused", ...
    pub detail: String,
}

/// What a backend's checks have said so far.
#[derive(Debug, Clone)]
pub struct Tracker {
    machine: Hysteresis,
    check: String,
    last: Option<Outcome>,
    changed_at: Instant,
}

impl Tracker {
    /// A tracker for a backend that gets `check`. A backend that was already
    /// serving (checks added by a reload) starts up, so adding checks does
    /// not take it out before a check has failed; a new one starts unknown.
    pub fn new(check: &CheckConfig, serving: bool) -> Self {
        let state = if serving { Health::Up } else { Health::Unknown };
        Self {
            machine: Hysteresis::with_state(state, check.rise, check.fall),
            check: check.describe(),
            last: None,
            changed_at: Instant::now(),
        }
    }

    /// A tracker that starts in `state`: a backend taken over from a
    /// previous control plane keeps the health it had.
    pub fn with_state(check: &CheckConfig, state: Health) -> Self {
        Self {
            machine: Hysteresis::with_state(state, check.rise, check.fall),
            check: check.describe(),
            last: None,
            changed_at: Instant::now(),
        }
    }

    /// A reload changed the check: new thresholds, same state.
    pub fn reconfigure(&mut self, check: &CheckConfig) {
        self.machine.set_thresholds(check.rise, check.fall);
        self.check = check.describe();
    }

    pub fn state(&self) -> Health {
        self.machine.state()
    }

    /// What the check is, for logs.
    pub fn check(&self) -> &str {
        &self.check
    }

    pub fn streak(&self) -> u32 {
        self.machine.streak()
    }

    /// Records a result; returns `(from, to)` if the state changed.
    pub fn observe(&mut self, outcome: Outcome) -> Option<(Health, Health)> {
        let from = self.machine.state();
        let change = self.machine.observe(outcome.ok).map(|to| (from, to));
        if change.is_some() {
            self.changed_at = Instant::now();
        }
        self.last = Some(outcome);
        change
    }

    pub fn status(&self) -> HealthStatus {
        HealthStatus {
            check: self.check.clone(),
            state: self.machine.state(),
            last_ok: self.last.as_ref().map(|o| o.ok),
            last_detail: self.last.as_ref().map(|o| o.detail.clone()),
            last_latency_us: self
                .last
                .as_ref()
                .map(|o| u64::try_from(o.latency.as_micros()).unwrap_or(u64::MAX)),
            consecutive: self.machine.streak(),
            since_change_s: self.changed_at.elapsed().as_secs(),
        }
    }
}
