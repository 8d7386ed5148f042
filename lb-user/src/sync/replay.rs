//! Replay protection: per sender, its epoch (start time) and a window of
//! the last 64 sequence numbers, as IPsec's anti-replay window; plus a
//! bound on how far a message's send time may be from this node's clock,
//! so that a message captured before this node started cannot be played
//! back to it later.

use std::collections::HashMap;
use std::net::IpAddr;

/// Sequence numbers remembered below the highest one seen.
const WINDOW: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Fresh,
    /// Seen before, or older than the window, or from an earlier epoch of
    /// a sender that is still sending.
    Replay,
    /// Sent too long ago (or in the future) by this node's clock.
    Stale,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sender {
    epoch: u64,
    highest: u64,
    /// Bit i: `highest - i` was seen.
    seen: u64,
    last_unix_ms: u64,
}

/// What has been accepted from each sender.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    senders: HashMap<IpAddr, Sender>,
}

impl Replay {
    /// Judges (and on `Fresh`, records) message `seq` of `epoch` from
    /// `from`, sent at `sent_ms` (unix ms), received at `now_ms`.
    pub fn check(
        &mut self,
        from: IpAddr,
        epoch: u64,
        seq: u64,
        sent_ms: u64,
        now_ms: u64,
        max_skew_ms: u64,
    ) -> Verdict {
        if sent_ms.abs_diff(now_ms) > max_skew_ms {
            return Verdict::Stale;
        }
        let fresh = Sender {
            epoch,
            highest: seq,
            seen: 1,
            last_unix_ms: now_ms,
        };
        let Some(s) = self.senders.get_mut(&from) else {
            self.senders.insert(from, fresh);
            return Verdict::Fresh;
        };
        if epoch != s.epoch {
            // A restarted sender has a later epoch. An earlier one is taken
            // only once the current one has been silent for longer than any
            // message may be old (a sender whose clock went back).
            if epoch > s.epoch || now_ms.saturating_sub(s.last_unix_ms) > max_skew_ms {
                *s = fresh;
                return Verdict::Fresh;
            }
            return Verdict::Replay;
        }
        if seq > s.highest {
            let shift = seq - s.highest;
            s.seen = if shift >= WINDOW { 0 } else { s.seen << shift };
            s.seen |= 1;
            s.highest = seq;
        } else {
            let back = s.highest - seq;
            if back >= WINDOW || s.seen & (1 << back) != 0 {
                return Verdict::Replay;
            }
            s.seen |= 1 << back;
        }
        s.last_unix_ms = now_ms;
        Verdict::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKEW: u64 = 30_000;
    const NOW: u64 = 1_000_000;

    fn a() -> IpAddr {
        "198.18.0.3".parse().unwrap()
    }

    #[test]
    fn each_sequence_number_is_taken_once_within_the_window() {
        let mut r = Replay::default();
        assert_eq!(r.check(a(), 5, 1, NOW, NOW, SKEW), Verdict::Fresh);
        assert_eq!(r.check(a(), 5, 1, NOW, NOW, SKEW), Verdict::Replay);
        assert_eq!(r.check(a(), 5, 3, NOW, NOW, SKEW), Verdict::Fresh);
        // Reordered, not replayed.
        assert_eq!(r.check(a(), 5, 2, NOW, NOW, SKEW), Verdict::Fresh);
        assert_eq!(r.check(a(), 5, 2, NOW, NOW, SKEW), Verdict::Replay);
        assert_eq!(r.check(a(), 5, 100, NOW, NOW, SKEW), Verdict::Fresh);
        // 100 - 36 = 64: just outside the window.
        assert_eq!(r.check(a(), 5, 36, NOW, NOW, SKEW), Verdict::Replay);
        assert_eq!(r.check(a(), 5, 37, NOW, NOW, SKEW), Verdict::Fresh);
        assert_eq!(r.check(a(), 5, 37, NOW, NOW, SKEW), Verdict::Replay);
        // Another sender has its own window.
        let b: IpAddr = "198.18.0.4".parse().unwrap();
        assert_eq!(r.check(b, 5, 1, NOW, NOW, SKEW), Verdict::Fresh);
    }

    #[test]
    fn a_restart_starts_a_new_epoch_and_the_old_one_is_dead() {
        let mut r = Replay::default();
        assert_eq!(r.check(a(), 5, 10, NOW, NOW, SKEW), Verdict::Fresh);
        assert_eq!(r.check(a(), 6, 1, NOW, NOW + 1, SKEW), Verdict::Fresh);
        assert_eq!(r.check(a(), 5, 11, NOW, NOW + 2, SKEW), Verdict::Replay);
        // A sender whose clock went back is heard again once its previous
        // epoch has been silent for longer than the skew.
        assert_eq!(
            r.check(a(), 4, 1, NOW + SKEW + 10, NOW + SKEW + 10, SKEW),
            Verdict::Fresh
        );
    }

    #[test]
    fn messages_far_from_our_clock_are_stale() {
        let mut r = Replay::default();
        assert_eq!(
            r.check(a(), 5, 1, NOW - SKEW - 1, NOW, SKEW),
            Verdict::Stale
        );
        assert_eq!(
            r.check(a(), 5, 1, NOW + SKEW + 1, NOW, SKEW),
            Verdict::Stale
        );
        assert_eq!(r.check(a(), 5, 1, NOW - SKEW, NOW, SKEW), Verdict::Fresh);
    }
}
