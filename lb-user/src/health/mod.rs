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
pub mod tasks;

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

/// Upper bounds, in seconds, of the buckets in which [`Tally`] counts
/// check durations (a last bucket takes everything slower). From half a
/// millisecond (a check on the same segment) to the longest timeouts.
pub const DURATION_BOUNDS_S: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Every result a backend's checks gave since its tracker was made:
/// passes, failures and how long they took (what Prometheus shows as
/// counters and a histogram).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    /// Checks that took at most `DURATION_BOUNDS_S[i]` (and more than the
    /// bound before); the last entry: slower than every bound.
    pub buckets: [u64; DURATION_BOUNDS_S.len() + 1],
    /// The durations added up, in microseconds.
    pub duration_sum_us: u64,
}

impl Tally {
    pub fn record(&mut self, outcome: &Outcome) {
        if outcome.ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        let s = outcome.latency.as_secs_f64();
        let i = DURATION_BOUNDS_S
            .iter()
            .position(|&bound| s <= bound)
            .unwrap_or(DURATION_BOUNDS_S.len());
        self.buckets[i] += 1;
        let us = u64::try_from(outcome.latency.as_micros()).unwrap_or(u64::MAX);
        self.duration_sum_us = self.duration_sum_us.saturating_add(us);
    }

    /// Adds `other`'s counts to these (the checks of a VIP's backends).
    pub fn add(&mut self, other: &Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.duration_sum_us = self.duration_sum_us.saturating_add(other.duration_sum_us);
    }

    pub fn count(&self) -> u64 {
        self.passed + self.failed
    }
}

/// The [`Tally`] of one checked backend, by the configuration's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckTally {
    pub vip: String,
    pub backend: String,
    pub tally: Tally,
}

/// What a backend's checks have said so far.
#[derive(Debug, Clone)]
pub struct Tracker {
    machine: Hysteresis,
    check: String,
    last: Option<Outcome>,
    changed_at: Instant,
    tally: Tally,
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
            tally: Tally::default(),
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
            tally: Tally::default(),
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
        self.tally.record(&outcome);
        self.last = Some(outcome);
        change
    }

    /// Every result so far.
    pub fn tally(&self) -> &Tally {
        &self.tally
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

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(ok: bool, us: u64) -> Outcome {
        Outcome {
            ok,
            latency: Duration::from_micros(us),
            detail: String::new(),
        }
    }

    #[test]
    fn a_tally_counts_results_and_buckets_durations_by_upper_bound() {
        let mut t = Tally::default();
        // 0.5 ms is at the first bound (bounds are inclusive, as `le`).
        for (ok, us) in [
            (true, 500),
            (true, 501),
            (false, 3_000_000),
            (true, 2_500_000),
        ] {
            t.record(&outcome(ok, us));
        }
        assert_eq!((t.passed, t.failed, t.count()), (3, 1, 4));
        let mut want = [0u64; DURATION_BOUNDS_S.len() + 1];
        want[0] = 1; // <= 0.0005
        want[1] = 1; // <= 0.001
        want[11] = 1; // <= 2.5
        want[12] = 1; // slower than every bound
        assert_eq!(t.buckets, want);
        assert_eq!(t.duration_sum_us, 500 + 501 + 3_000_000 + 2_500_000);
        let mut sum = t.clone();
        sum.add(&t);
        assert_eq!((sum.passed, sum.failed, sum.buckets[12]), (6, 2, 2));
    }

    #[test]
    fn a_tracker_tallies_every_result_not_only_changes() {
        let check = crate::config::CheckConfig {
            rise: 2,
            fall: 2,
            ..test_check()
        };
        let mut tr = Tracker::new(&check, true);
        for ok in [true, false, true, false, false] {
            tr.observe(outcome(ok, 100));
        }
        assert_eq!((tr.tally().passed, tr.tally().failed), (2, 3));
        assert_eq!(tr.state(), Health::Down);
        tr.reconfigure(&check);
        assert_eq!(tr.tally().count(), 5, "a changed check keeps the counts");
    }

    fn test_check() -> crate::config::CheckConfig {
        crate::config::Config::parse(
            "interface = \"eth0\"\n[[vip]]\nname = \"w\"\naddress = \"198.18.0.100\"\n\
             port = 80\n[vip.health]\ntype = \"tcp\"\n[[vip.backend]]\naddress = \"198.18.0.11\"\n",
            "t.toml",
        )
        .unwrap()
        .vips[0]
            .backends[0]
            .check
            .clone()
            .unwrap()
    }
}
