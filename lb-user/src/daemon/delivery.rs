//! Frames the data plane forwards but the NIC cannot send. On a veth,
//! XDP_TX and XDP_REDIRECT deliver only if the peer runs an XDP program
//! (or has GRO on): otherwise every frame is counted as forwarded by xlb
//! and dropped by the veth (`tx_dropped`), a silent blackhole. The watch
//! compares the two counters over each interval and says so, at most once
//! a minute while it lasts.

use std::time::{Duration, Instant};

/// Fewest forwarded packets in an interval worth judging.
const MIN_FORWARDED: u64 = 10;
const REPEAT_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct DeliveryWatch {
    last: Option<(u64, u64)>,
    said: Option<Instant>,
}

/// What an interval showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blackhole {
    pub forwarded: u64,
    pub dropped: u64,
}

impl DeliveryWatch {
    /// Takes the totals now: the data plane's forwarded packets and the
    /// NIC's `tx_dropped`. Returns what to report, when at least half of
    /// what was forwarded since the last judgement (once at least
    /// `MIN_FORWARDED` packets have been) was dropped by the NIC.
    pub fn observe(&mut self, forwarded: u64, tx_dropped: u64, now: Instant) -> Option<Blackhole> {
        let Some(base) = self.last else {
            self.last = Some((forwarded, tx_dropped));
            return None;
        };
        if forwarded < base.0 || tx_dropped < base.1 {
            // Counters that went back (a NIC recreated): start again.
            self.last = Some((forwarded, tx_dropped));
            return None;
        }
        let f = forwarded - base.0;
        // Light traffic is judged once enough of it has gone by.
        if f < MIN_FORWARDED {
            return None;
        }
        let d = tx_dropped - base.1;
        self.last = Some((forwarded, tx_dropped));
        if d * 2 < f
            || self
                .said
                .is_some_and(|t| now.duration_since(t) < REPEAT_EVERY)
        {
            return None;
        }
        self.said = Some(now);
        Some(Blackhole {
            forwarded: f,
            dropped: d,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nic_that_drops_what_is_forwarded_is_reported_once_a_minute() {
        let t0 = Instant::now();
        let mut w = DeliveryWatch::default();
        assert_eq!(w.observe(0, 0, t0), None, "the first call only records");
        // Delivering: the NIC drops nothing.
        assert_eq!(w.observe(1000, 3, t0 + Duration::from_secs(1)), None);
        // Too little traffic to judge yet: it adds up.
        assert_eq!(w.observe(1005, 8, t0 + Duration::from_secs(2)), None);
        assert_eq!(w.observe(1008, 11, t0 + Duration::from_secs(3)), None);
        let slow = w.observe(1012, 15, t0 + Duration::from_secs(4));
        assert_eq!(
            slow,
            Some(Blackhole {
                forwarded: 12,
                dropped: 12
            }),
            "a trickle, all dropped"
        );
        let mut w = DeliveryWatch::default();
        assert_eq!(w.observe(0, 0, t0), None);
        assert_eq!(w.observe(1000, 3, t0 + Duration::from_secs(1)), None);
        assert_eq!(w.observe(1005, 8, t0 + Duration::from_secs(2)), None);
        // Blackholing.
        let at = t0 + Duration::from_secs(3);
        assert_eq!(
            w.observe(1105, 105, at),
            Some(Blackhole {
                forwarded: 105,
                dropped: 102
            })
        );
        assert_eq!(
            w.observe(1205, 205, at + Duration::from_secs(1)),
            None,
            "said already"
        );
        assert!(w.observe(1305, 305, at + Duration::from_secs(61)).is_some());
        // Counters that went back (a NIC recreated) are no blackhole.
        assert_eq!(w.observe(10, 0, at + Duration::from_secs(200)), None);
    }
}
