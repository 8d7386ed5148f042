//! `sync_message`: the connection-sync message (`lb_user::sync::wire`),
//! the receive checks in front of it (`lb_user::sync::receive`: framing,
//! tag, fields, replay) and what the receiver installs
//! (`lb_user::sync::install`).

use std::net::IpAddr;

use lb_common::{FAMILY_V4, FAMILY_V6, FLOW_F_CLOSING, FlowKey, IPPROTO_TCP, IPPROTO_UDP, VipKey};
use lb_user::sync::receive::{self, Policy};
use lb_user::sync::wire::{
    self, ENTRY_LEN, Entry, F_CLOSING, F_NAT, HEADER_LEN, Kind, MAGIC, MAX_ENTRIES, MAX_LEN,
    TAG_LEN, VERSION,
};
use lb_user::sync::{DirVip, Directory, Installed, Key, MemoryTable, Replay, install};

use crate::input::Input;

/// The cluster key of the checks (and of the seeds).
pub const KEY: &[u8] = b"xlb-fuzz-0123456789abcdef0123456789";
/// "Now" on the receiver's clock, unix ms, and the skew it allows.
pub const NOW_MS: u64 = 1_700_000_000_000;
pub const MAX_SKEW_MS: u64 = 30_000;
/// "Now" on the data plane's clock (CLOCK_MONOTONIC ns).
const NOW_NS: u64 = 3_600_000_000_000;

/// The senders an input can claim: the first two are the peers.
pub const SENDERS: [&str; 4] = ["198.18.0.3", "fd00:18::3", "198.18.0.66", "fd00:18::66"];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// NAT 198.18.0.100:80/tcp with two backends on 8080, DSR all-ports
/// fd00:18::100/tcp with one, DSR 198.18.0.101:53/udp with one.
pub fn directory() -> Directory {
    let mut d = Directory::default();
    let nat = VipKey::new(ip("198.18.0.100"), 80, IPPROTO_TCP);
    let dsr6 = VipKey::new(ip("fd00:18::100"), 0, IPPROTO_TCP);
    let dns = VipKey::new(ip("198.18.0.101"), 53, IPPROTO_UDP);
    for (index, (key, nat)) in [(nat, true), (dsr6, false), (dns, false)]
        .into_iter()
        .enumerate()
    {
        let vip = DirVip {
            index: index as u32,
            nat,
            standby: false,
        };
        d.add_vip(key, vip);
    }
    d.add_backend(nat, 10, 3, ip("198.18.1.11"), 8080);
    d.add_backend(nat, 11, 1, ip("198.18.1.12"), 8080);
    d.add_backend(dsr6, 20, 7, ip("fd00:19::11"), 0);
    d.add_backend(dns, 30, 1, ip("198.18.1.21"), 53);
    d
}

fn check_entry(e: &Entry) {
    let family = |a: IpAddr| if a.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 };
    assert!(
        family(e.client) == family(e.vip) && family(e.backend) == family(e.vip),
        "one family per entry: {e:?}"
    );
    assert!([IPPROTO_TCP, IPPROTO_UDP].contains(&e.proto), "{e:?}");
    assert_eq!(e.flags & !(F_CLOSING | F_NAT), 0, "{e:?}");
}

/// Decodes the signed part on its own (whatever its length: `decode` is
/// public) and checks what it accepts.
fn check_decode(signed: &[u8]) -> Option<(wire::Header, Vec<Entry>)> {
    let got = wire::decode(signed);
    assert_eq!(got, wire::decode(signed), "the same message twice");
    let (header, entries) = got.ok()?;
    assert!(entries.len() <= MAX_ENTRIES, "{} entries", entries.len());
    assert!(header.kind == Kind::Flows || entries.is_empty());
    assert!(header.epoch != 0 && header.seq != 0);
    entries.iter().for_each(check_entry);
    assert_eq!(
        wire::encode(&header, &entries),
        signed,
        "decode then encode gives other bytes"
    );
    Some((header, entries))
}

/// Installs accepted entries; a refused one changes no table.
fn check_install(entries: &[Entry]) {
    let dir = directory();
    let mut table = MemoryTable::default();
    for e in entries {
        let (flows, reverse) = (table.flows.clone(), table.reverse.clone());
        let done = install(&dir, &mut table, e, NOW_NS).expect("memory never fails");
        let key = FlowKey::new(e.client, e.vip, e.client_port, e.vip_port, e.proto);
        if done != Installed::Done {
            assert!(
                table.flows == flows && table.reverse == reverse,
                "{done:?} changed the table"
            );
            continue;
        }
        let state = table.flows[&key];
        assert!(
            state.last_seen >= 1 && state.last_seen <= NOW_NS,
            "{state:?}"
        );
        assert_eq!(
            state.flags & FLOW_F_CLOSING != 0,
            e.flags & F_CLOSING != 0,
            "{state:?}"
        );
        assert!([10, 11, 20, 30].contains(&state.backend), "{state:?}");
        if e.flags & F_NAT != 0 {
            // The backend's replies, from its port (the VIP's when it keeps
            // it) back to the client, go back to the VIP.
            let sport = if e.backend_port == 0 {
                e.vip_port
            } else {
                e.backend_port
            };
            let reply = FlowKey::new(e.backend, e.client, sport, e.client_port, e.proto);
            let back_to = VipKey::new(e.vip, e.vip_port, e.proto);
            assert_eq!(table.reverse.get(&reply), Some(&back_to), "{e:?}");
        } else {
            assert!(table.reverse == reverse, "a DSR flow wrote a reverse entry");
        }
    }
}

/// Input: a mode byte (bit 0: append the right tag to the rest; bit 1:
/// unicast from the peers only; bits 2-3: the sender; bit 4: the receiver's
/// clock is the message's send time plus the next byte in seconds), then
/// the datagram.
pub fn sync_message(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let delta_s = u64::from(input.byte());
    let rest = input.rest();
    let key = Key::from_bytes(KEY).expect("long enough");
    let datagram = if mode & 1 != 0 {
        key.seal(rest.to_vec())
    } else {
        rest.to_vec()
    };
    let from = ip(SENDERS[usize::from(mode >> 2) & 3]);
    let now_ms = if mode & 0x10 != 0 && datagram.len() >= HEADER_LEN {
        let sent = u64::from_be_bytes(datagram[24..32].try_into().unwrap());
        sent.saturating_add(delta_s * 1000)
    } else {
        NOW_MS
    };

    let framed = wire::frame(&datagram);
    match framed {
        Ok(n) => {
            assert_eq!(n + TAG_LEN, datagram.len());
            assert!(datagram.len() <= MAX_LEN);
            assert!(n >= HEADER_LEN && (n - HEADER_LEN).is_multiple_of(ENTRY_LEN));
            assert!(datagram[..4] == MAGIC && datagram[4] == VERSION);
        }
        // The reason is the first check, in the documented order, that
        // the datagram fails.
        Err(reject) => {
            let len = datagram.len();
            let want = |d: &[u8]| {
                HEADER_LEN + usize::from(u16::from_be_bytes([d[6], d[7]])) * ENTRY_LEN + TAG_LEN
            };
            let reason = if len > MAX_LEN {
                wire::Reject::Oversize
            } else if len < HEADER_LEN + TAG_LEN {
                wire::Reject::Truncated
            } else if datagram[..4] != MAGIC {
                wire::Reject::BadMagic
            } else if datagram[4] != VERSION {
                wire::Reject::BadVersion
            } else if want(&datagram) > MAX_LEN {
                wire::Reject::Malformed
            } else if len < want(&datagram) {
                wire::Reject::Truncated
            } else {
                assert!(len > want(&datagram));
                wire::Reject::Oversize
            };
            assert_eq!(reject, reason);
        }
    }
    let decoded = check_decode(rest);
    if datagram.len() >= TAG_LEN {
        check_decode(&datagram[..datagram.len() - TAG_LEN]);
    }

    // The receive path, against replay windows that already hold one
    // message of the first peer.
    let peers = [ip(SENDERS[0]), ip(SENDERS[1])];
    let policy = Policy {
        key: &key,
        peers: (mode & 2 != 0).then_some(&peers[..]),
        max_skew_ms: MAX_SKEW_MS,
    };
    let mut replay = Replay::default();
    replay.check(peers[0], 7, 5, NOW_MS, NOW_MS, MAX_SKEW_MS);
    let before = replay.clone();
    let got = receive::accept(&policy, &mut replay, &datagram, from, now_ms);
    let mut again = before.clone();
    assert_eq!(
        got,
        receive::accept(&policy, &mut again, &datagram, from, now_ms),
        "the same datagram twice"
    );
    match got {
        Err(counter) => {
            assert_eq!(replay, before, "{counter}: the replay windows changed");
            if let Err(r) = framed
                && counter != "dropped_unknown_peer"
            {
                assert_eq!(counter, receive::dropped(r));
            }
        }
        Ok((header, entries)) => {
            assert!(policy.peers.is_none_or(|p| p.contains(&from)));
            assert_eq!(framed, Ok(datagram.len() - TAG_LEN));
            assert!(key.verify(&datagram, datagram.len() - TAG_LEN));
            assert!(header.sent_unix_ms.abs_diff(now_ms) <= MAX_SKEW_MS);
            if mode & 1 != 0 {
                assert_eq!(decoded, Some((header, entries.clone())));
            }
            // Accepted once: the same datagram again is a replay.
            assert_eq!(
                receive::accept(&policy, &mut replay, &datagram, from, now_ms),
                Err("dropped_replay")
            );
            check_install(&entries);
        }
    }
}
