//! The damper between a feedback signal and the ring: it turns the percent
//! a signal asks for into the effective percent a backend's weight is
//! scaled by, so that a noisy or flapping signal does not churn the ring.
//! Pure; the caller passes the clock (CLOCK_MONOTONIC nanoseconds,
//! [`crate::clock::monotonic_ns`]).
//!
//! - **Floor**: the effective percent never goes below
//!   `min_weight_percent`: a loaded backend keeps some new flows, and an
//!   agent reporting 0 % is not taken for a dead backend (health checks
//!   decide that).
//! - **Hysteresis**: the effective percent moves only when the wanted one
//!   differs from it by more than `hysteresis_percent` points, or when the
//!   wanted one is exactly 100 % or the floor (so that a backend that has
//!   recovered gets all of its weight back, however small the step).
//! - **Period**: at most one change per `period`. The first change is
//!   allowed at once (a backend that starts loaded is weighted down on its
//!   first report); later ones wait until a period has passed since the
//!   last, and then take the signal as it is at that moment.

use std::time::Duration;

use crate::config::FeedbackConfig;

/// The thresholds of a damper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub min_weight_percent: u8,
    pub hysteresis_percent: u8,
    pub period: Duration,
}

impl From<&FeedbackConfig> for Settings {
    fn from(c: &FeedbackConfig) -> Self {
        Self {
            min_weight_percent: c.min_weight_percent,
            hysteresis_percent: c.hysteresis_percent,
            period: c.period,
        }
    }
}

/// One backend's effective percent and when it last changed.
#[derive(Debug, Clone)]
pub struct Damper {
    settings: Settings,
    percent: u8,
    changed_at_ns: Option<u64>,
    changes: u64,
}

impl Damper {
    /// A damper at 100 %: a backend gets its whole weight until a signal
    /// says otherwise.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            percent: 100,
            changed_at_ns: None,
            changes: 0,
        }
    }

    /// The effective percent, from the floor to 100.
    pub fn percent(&self) -> u8 {
        self.percent
    }

    /// How many times the effective percent changed.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// When it last changed (`None`: never).
    pub fn changed_at_ns(&self) -> Option<u64> {
        self.changed_at_ns
    }

    /// New thresholds (a reload): the percent stays, raised to a higher
    /// floor if there is one.
    pub fn reconfigure(&mut self, settings: Settings) {
        self.settings = settings;
        self.percent = self.percent.max(settings.min_weight_percent);
    }

    /// A signal asking for `wanted` percent at `now_ns`. Returns
    /// `Some((from, to))` if the effective percent changed.
    pub fn offer(&mut self, now_ns: u64, wanted: u8) -> Option<(u8, u8)> {
        let s = self.settings;
        let target = wanted.clamp(s.min_weight_percent, 100);
        if target == self.percent {
            return None;
        }
        let far = target.abs_diff(self.percent) > s.hysteresis_percent;
        let at_bound = target == 100 || target == s.min_weight_percent;
        if !(far || at_bound) {
            return None;
        }
        let period_ns = u64::try_from(s.period.as_nanos()).unwrap_or(u64::MAX);
        if let Some(at) = self.changed_at_ns
            && now_ns.saturating_sub(at) < period_ns
        {
            return None;
        }
        let from = self.percent;
        self.percent = target;
        self.changed_at_ns = Some(now_ns);
        self.changes += 1;
        Some((from, target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn damper(min: u8, hysteresis: u8, period_ms: u64) -> Damper {
        Damper::new(Settings {
            min_weight_percent: min,
            hysteresis_percent: hysteresis,
            period: Duration::from_millis(period_ms),
        })
    }

    #[test]
    fn a_signal_flapping_every_check_changes_it_at_most_once_per_period() {
        let mut d = damper(10, 10, 1000);
        // A check every 100 ms for 10 s, flipping between 100 % and 30 %.
        let mut change_times = Vec::new();
        for i in 0..100u64 {
            let wanted = if i % 2 == 0 { 30 } else { 100 };
            if d.offer(1_000 * MS + i * 100 * MS, wanted).is_some() {
                change_times.push(i * 100);
            }
        }
        assert!(
            change_times.windows(2).all(|w| w[1] - w[0] >= 1000),
            "changes closer than a period: {change_times:?}"
        );
        // 10 s of signal, one change per period at most, and the period
        // does let the signal through.
        assert!((5..=10).contains(&change_times.len()), "{change_times:?}");
        assert_eq!(d.changes(), change_times.len() as u64);
    }

    #[test]
    fn a_steady_change_passes_once_it_exceeds_the_hysteresis() {
        let mut d = damper(10, 10, 1000);
        assert_eq!(d.offer(0, 95), None, "5 points: within the hysteresis");
        assert_eq!(d.offer(0, 90), None, "10 points: not more than it");
        assert_eq!(d.offer(0, 89), Some((100, 89)), "11 points: more");
        // Later steps wait for the period, then pass if large enough.
        assert_eq!(d.offer(500 * MS, 50), None, "within the period");
        assert_eq!(d.offer(1000 * MS, 80), None, "9 points from 89");
        assert_eq!(d.offer(1000 * MS, 50), Some((89, 50)));
        assert_eq!(d.percent(), 50);
        assert_eq!(d.changed_at_ns(), Some(1000 * MS));
    }

    #[test]
    fn reaching_100_or_the_floor_passes_within_the_hysteresis() {
        let mut d = damper(20, 10, 0);
        assert_eq!(d.offer(0, 25), Some((100, 25)));
        assert_eq!(d.offer(1, 20), Some((25, 20)), "the floor, 5 points away");
        assert_eq!(d.offer(2, 0), None, "below the floor is the floor");
        assert_eq!(d.offer(3, 95), Some((20, 95)));
        assert_eq!(d.offer(4, 100), Some((95, 100)), "100 %, 5 points away");
    }

    #[test]
    fn the_floor_holds_whatever_the_signal() {
        let mut d = damper(30, 0, 0);
        for (t, wanted) in [0u8, 1, 29, 5, 0].into_iter().enumerate() {
            d.offer(t as u64, wanted);
            assert_eq!(d.percent(), 30, "wanted {wanted}");
        }
        // A higher floor after a reload lifts the percent with it.
        let mut d = damper(10, 0, 0);
        d.offer(0, 10);
        d.reconfigure(Settings {
            min_weight_percent: 40,
            hysteresis_percent: 0,
            period: Duration::ZERO,
        });
        assert_eq!(d.percent(), 40);
    }

    #[test]
    fn the_first_change_is_at_once_and_a_steady_signal_changes_nothing_more() {
        let mut d = damper(10, 10, 10_000);
        assert_eq!(d.offer(5 * MS, 25), Some((100, 25)));
        for i in 1..1000u64 {
            assert_eq!(d.offer(5 * MS + i * 100 * MS, 25), None);
        }
        assert_eq!(d.changes(), 1);
    }
}
