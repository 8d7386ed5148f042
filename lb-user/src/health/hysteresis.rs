//! The health state machine of one backend: pure, no I/O, no clock.
//!
//! Check results go in one at a time; the state changes only after `rise`
//! consecutive successes (to `Up`) or `fall` consecutive failures (to
//! `Down`). The counts are *consecutive*: one result of the other kind resets
//! them, so an alternating (flapping) check never changes the state. A
//! cumulative count, which some balancers keep, would eventually flip it.
//!
//! A backend starts `Unknown` (not in the Maglev table) and its first result
//! decides at once: there is no earlier state worth protecting, and waiting
//! `rise` intervals would keep a fresh node out of service for nothing.

pub use crate::api::Health;

/// Rise/fall hysteresis over consecutive check results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hysteresis {
    rise: u32,
    fall: u32,
    state: Health,
    /// Results in a row that agree with `last_ok` (the consecutive count).
    streak: u32,
    last_ok: Option<bool>,
}

impl Hysteresis {
    /// A machine in state `Unknown`. `rise` and `fall` are at least 1.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self::with_state(Health::Unknown, rise, fall)
    }

    /// A machine that starts in `state` (a backend that was already serving
    /// when checks were added to it starts `Up`).
    pub fn with_state(state: Health, rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            state,
            streak: 0,
            last_ok: None,
        }
    }

    pub fn state(&self) -> Health {
        self.state
    }

    /// How many results in a row agreed with the last one.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Changes the thresholds (a reload) without forgetting state or streak.
    pub fn set_thresholds(&mut self, rise: u32, fall: u32) {
        self.rise = rise.max(1);
        self.fall = fall.max(1);
    }

    /// Feeds one result; returns the new state if it changed.
    pub fn observe(&mut self, ok: bool) -> Option<Health> {
        if self.last_ok == Some(ok) {
            self.streak = self.streak.saturating_add(1);
        } else {
            self.streak = 1;
            self.last_ok = Some(ok);
        }
        let next = match (self.state, ok) {
            (Health::Unknown, true) => Health::Up,
            (Health::Unknown, false) => Health::Down,
            (Health::Down, true) if self.streak >= self.rise => Health::Up,
            (Health::Up, false) if self.streak >= self.fall => Health::Down,
            (s, _) => s,
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `results` ("+" ok, "-" fail); returns the state after each.
    fn run(h: &mut Hysteresis, results: &str) -> String {
        results
            .chars()
            .map(|c| {
                h.observe(c == '+');
                match h.state() {
                    Health::Unknown => '?',
                    Health::Up => 'U',
                    Health::Down => 'D',
                }
            })
            .collect()
    }

    #[test]
    fn first_result_decides_from_unknown() {
        assert_eq!(Hysteresis::new(3, 3).observe(true), Some(Health::Up));
        assert_eq!(Hysteresis::new(3, 3).observe(false), Some(Health::Down));
    }

    #[test]
    fn goes_down_after_exactly_fall_consecutive_failures() {
        let mut h = Hysteresis::with_state(Health::Up, 2, 3);
        assert_eq!(run(&mut h, "--"), "UU");
        assert_eq!(h.observe(false), Some(Health::Down));
        assert_eq!(h.streak(), 3);
        assert_eq!(h.observe(false), None, "a change is reported once");
    }

    #[test]
    fn comes_back_after_exactly_rise_consecutive_successes() {
        let mut h = Hysteresis::with_state(Health::Down, 2, 3);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(Health::Up));
        assert_eq!(h.observe(true), None);
    }

    #[test]
    fn counts_are_consecutive_not_cumulative() {
        // 5 failures in total, never 3 in a row: stays up.
        let mut h = Hysteresis::with_state(Health::Up, 2, 3);
        assert_eq!(run(&mut h, "--+--+-+"), "UUUUUUUU");
        // 5 successes in total, never 2 in a row: stays down.
        let mut h = Hysteresis::with_state(Health::Down, 2, 3);
        assert_eq!(run(&mut h, "+-+-+-+-+"), "DDDDDDDDD");
    }

    #[test]
    fn flapping_input_does_not_flap_the_output() {
        for (rise, fall) in [(2, 2), (2, 3), (3, 2), (5, 5)] {
            for start in [Health::Up, Health::Down] {
                let mut h = Hysteresis::with_state(start, rise, fall);
                let changes = (0..1000)
                    .filter(|i| h.observe(i % 2 == 0).is_some())
                    .count();
                assert_eq!(changes, 0, "rise {rise} fall {fall} from {start}");
            }
        }
    }

    #[test]
    fn rise_and_fall_of_one_follow_every_result() {
        let mut h = Hysteresis::with_state(Health::Up, 1, 1);
        assert_eq!(run(&mut h, "-+-+"), "DUDU");
    }

    #[test]
    fn full_cycle_with_noise() {
        let mut h = Hysteresis::new(2, 3);
        assert_eq!(
            run(&mut h, "+-+---+-++"),
            //          first success decides; then 3 in a row down; 2 in a row up
            "UUUUUDDDDU"
        );
    }

    #[test]
    fn zero_thresholds_are_treated_as_one() {
        let mut h = Hysteresis::with_state(Health::Up, 0, 0);
        assert_eq!(h.observe(false), Some(Health::Down));
    }

    #[test]
    fn new_thresholds_apply_to_the_running_streak() {
        let mut h = Hysteresis::with_state(Health::Up, 2, 5);
        run(&mut h, "--");
        h.set_thresholds(2, 3);
        assert_eq!(h.observe(false), Some(Health::Down));
    }
}
