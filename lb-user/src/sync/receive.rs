//! The checks of a received sync datagram, pure: the sender, the framing,
//! the tag, every field, then replay, in that order. Nothing is decoded
//! field by field before its tag verifies, and only an authentic,
//! well-formed message is recorded against replays: a dropped datagram
//! leaves the replay windows as they were.

use std::net::IpAddr;

use super::auth::Key;
use super::replay::{Replay, Verdict};
use super::wire::{self, Entry, Header};

/// What a datagram is checked against.
pub struct Policy<'a> {
    pub key: &'a Key,
    /// Unicast: the only senders accepted. `None` (multicast): any sender
    /// that has the key.
    pub peers: Option<&'a [IpAddr]>,
    /// How far a message's send time may be from `now_ms`.
    pub max_skew_ms: u64,
}

/// Checks `datagram` from `from` (canonical: an IPv4 sender as IPv4),
/// received at `now_ms` (unix ms): the message, or the name of the counter
/// its drop is counted under.
pub fn accept(
    policy: &Policy<'_>,
    replay: &mut Replay,
    datagram: &[u8],
    from: IpAddr,
    now_ms: u64,
) -> Result<(Header, Vec<Entry>), &'static str> {
    if policy.peers.is_some_and(|p| !p.contains(&from)) {
        return Err("dropped_unknown_peer");
    }
    let signed_len = wire::frame(datagram).map_err(dropped)?;
    if !policy.key.verify(datagram, signed_len) {
        return Err(dropped(wire::Reject::BadMac));
    }
    let (header, entries) = wire::decode(&datagram[..signed_len]).map_err(dropped)?;
    match replay.check(
        from,
        header.epoch,
        header.seq,
        header.sent_unix_ms,
        now_ms,
        policy.max_skew_ms,
    ) {
        Verdict::Fresh => Ok((header, entries)),
        Verdict::Replay => Err("dropped_replay"),
        Verdict::Stale => Err("dropped_stale"),
    }
}

/// The counter of a wire reject.
pub fn dropped(r: wire::Reject) -> &'static str {
    match r {
        wire::Reject::Truncated => "dropped_truncated",
        wire::Reject::Oversize => "dropped_oversize",
        wire::Reject::BadMagic => "dropped_bad_magic",
        wire::Reject::BadVersion => "dropped_bad_version",
        wire::Reject::BadMac => "dropped_bad_mac",
        wire::Reject::Malformed => "dropped_malformed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::wire::{Kind, encode};

    const NOW: u64 = 1_700_000_000_000;
    const SKEW: u64 = 30_000;

    fn key() -> Key {
        Key::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap()
    }

    fn hello(seq: u64) -> Vec<u8> {
        let h = Header {
            kind: Kind::Hello,
            epoch: 7,
            seq,
            sent_unix_ms: NOW,
        };
        key().seal(encode(&h, &[]))
    }

    fn peer() -> IpAddr {
        "198.18.0.3".parse().unwrap()
    }

    #[test]
    fn an_authentic_message_is_taken_once_and_drops_leave_the_windows_alone() {
        let k = key();
        let peers = [peer()];
        let policy = Policy {
            key: &k,
            peers: Some(&peers),
            max_skew_ms: SKEW,
        };
        let mut replay = Replay::default();
        let stranger: IpAddr = "198.18.0.66".parse().unwrap();
        assert_eq!(
            accept(&policy, &mut replay, &hello(1), stranger, NOW).map(|_| ()),
            Err("dropped_unknown_peer")
        );
        let mut forged = hello(1);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(
            accept(&policy, &mut replay, &forged, peer(), NOW).map(|_| ()),
            Err("dropped_bad_mac")
        );
        assert_eq!(
            accept(&policy, &mut replay, &hello(1), peer(), NOW + SKEW + 1).map(|_| ()),
            Err("dropped_stale")
        );
        assert_eq!(replay, Replay::default(), "no drop recorded a sequence");
        let (h, entries) = accept(&policy, &mut replay, &hello(1), peer(), NOW).unwrap();
        assert_eq!((h.seq, entries.len()), (1, 0));
        assert_eq!(
            accept(&policy, &mut replay, &hello(1), peer(), NOW).map(|_| ()),
            Err("dropped_replay")
        );
    }
}
