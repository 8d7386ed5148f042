//! `vrrp_advert`: the VRRP advert decoder and the strict receive checks
//! (`lb_user::vrrp::packet`, `lb_user::vrrp::receive`), and what an
//! accepted advert does to a group's state machine
//! (`lb_user::vrrp::state`).

use std::net::IpAddr;
use std::time::Duration;

use lb_user::checksum::pseudo_header_checksum;
use lb_user::config::VrrpGroup;
use lb_user::vrrp::packet::{
    self, Advert, GROUP_V4, GROUP_V6, HEADER_LEN, IPPROTO_VRRP, MAX_INTERVAL_CS, Reject,
};
use lb_user::vrrp::receive::{classify, counters, receive};
use lb_user::vrrp::socket::Received;
use lb_user::vrrp::state::{Event, Machine, Params, State};

use crate::input::Input;

/// This node's addresses (IPv4, IPv6 link-local).
pub const OWN: [&str; 2] = ["198.18.0.1", "fe80::1"];
/// The sources an input can claim: the first two of each family are the
/// peers (in peers mode), the last is this node.
pub const SOURCES_V4: [&str; 4] = ["198.18.0.3", "198.18.0.4", "198.18.0.66", OWN[0]];
pub const SOURCES_V6: [&str; 4] = ["fe80::3", "fe80::4", "fe80::66", OWN[1]];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// VRID 51 over IPv4 and IPv6, 52 over IPv6.
pub fn groups() -> Vec<VrrpGroup> {
    let group = |vrid, addrs: &[&str]| VrrpGroup {
        vrid,
        priority: 100,
        preempt: true,
        interval_cs: 100,
        vips: vec![format!("vip{vrid}")],
        addresses: addrs.iter().map(|a| ip(a)).collect(),
        server_addresses: Vec::new(),
    };
    vec![
        group(51, &["198.18.0.100", "198.18.0.101"]),
        group(52, &["fe80::200:5eff:fe00:234", "fd00:18::100"]),
        group(51, &["fe80::200:5eff:fe00:233", "fd00:18::101"]),
    ]
}

/// Sets the VRRP checksum of the message at `at` in `bytes`, as sent from
/// `src` to `dst`.
pub fn fix_checksum(bytes: &mut [u8], at: usize, src: IpAddr, dst: IpAddr) {
    if bytes.len() < at + HEADER_LEN {
        return;
    }
    bytes[at + 6..at + 8].fill(0);
    let c = pseudo_header_checksum(src, dst, IPPROTO_VRRP, &bytes[at..]);
    bytes[at + 6..at + 8].copy_from_slice(&c.to_be_bytes());
}

/// The decoder on its own: what it accepts is within its bounds and
/// encodes back.
fn check_decode(msg: &[u8], src: IpAddr, dst: IpAddr, ttl: u8) {
    let got = Advert::decode(msg, src, dst, ttl);
    assert_eq!(
        got,
        Advert::decode(msg, src, dst, ttl),
        "the same advert twice"
    );
    let a = match got {
        Ok(a) => a,
        Err(reject) => {
            // The reason is the first check, in the documented order, that
            // the message fails.
            let alen = if src.is_ipv4() { 4 } else { 16 };
            let reason = if ttl != packet::REQUIRED_TTL {
                Reject::BadTtl
            } else if msg.len() < HEADER_LEN {
                Reject::Malformed
            } else if msg[0] >> 4 != 3 {
                Reject::BadVersion
            } else if msg[0] & 0x0f != 1 {
                Reject::BadType
            } else if msg.len() < HEADER_LEN + usize::from(msg[3]) * alen {
                Reject::Malformed
            } else if pseudo_header_checksum(src, dst, IPPROTO_VRRP, msg) != 0 {
                Reject::BadChecksum
            } else {
                assert_eq!(u16::from_be_bytes([msg[4], msg[5]]) & MAX_INTERVAL_CS, 0);
                Reject::BadInterval
            };
            assert_eq!(reject, reason, "{msg:02x?}");
            return;
        }
    };
    assert_eq!(ttl, packet::REQUIRED_TTL);
    assert!(
        (1..=MAX_INTERVAL_CS).contains(&a.interval_cs),
        "interval {}",
        a.interval_cs
    );
    assert_eq!(a.addresses.len(), usize::from(msg[3]));
    assert!(a.addresses.iter().all(|x| x.is_ipv4() == src.is_ipv4()));
    let bytes = a.encode(src, dst);
    assert_eq!(
        Advert::decode(&bytes, src, dst, ttl),
        Ok(a.clone()),
        "encode then decode"
    );
    // Byte for byte what came in, unless it had trailing bytes or set the
    // reserved bits (both ignored).
    if bytes.len() == msg.len() && msg[4] >> 4 == 0 {
        assert_eq!(bytes, msg, "decode then encode");
    }
}

/// Input: a mode byte (bit 0: IPv6; bit 1: peers mode; bit 2: fix the
/// checksum; bits 3-4: the source; bit 5: sent to this node rather than the
/// group), the TTL / hop limit, a byte for the receiving machine's state,
/// then the datagram as the socket gives it (IPv4: with its IP header,
/// whose addresses the source choice overwrites).
pub fn vrrp_advert(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let ttl = input.byte();
    let machine_byte = input.byte();
    let mut bytes = input.rest().to_vec();
    let v6 = mode & 1 != 0;
    let pick = usize::from(mode >> 3) & 3;
    let (src, own, group) = if v6 {
        (ip(SOURCES_V6[pick]), ip(OWN[1]), IpAddr::from(GROUP_V6))
    } else {
        (ip(SOURCES_V4[pick]), ip(OWN[0]), IpAddr::from(GROUP_V4))
    };
    let dst = if mode & 0x20 != 0 { own } else { group };
    let peers: Vec<IpAddr> = if mode & 2 != 0 {
        [SOURCES_V4[0], SOURCES_V4[1], SOURCES_V6[0], SOURCES_V6[1]]
            .iter()
            .map(|a| ip(a))
            .collect()
    } else {
        Vec::new()
    };
    if !v6 && bytes.len() >= 20 {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
            unreachable!()
        };
        bytes[12..16].copy_from_slice(&s.octets());
        bytes[16..20].copy_from_slice(&d.octets());
    }
    if mode & 4 != 0 {
        // Where the message is: all of an IPv6 datagram, the payload of an
        // IPv4 packet.
        let span = if v6 {
            Some((0, bytes.len()))
        } else {
            packet::parse_ipv4(&bytes).ok().map(|p| {
                let ihl = usize::from(bytes[0] & 0x0f) * 4;
                (ihl, ihl + p.payload.len())
            })
        };
        if let Some((at, end)) = span {
            fix_checksum(&mut bytes[..end], at, src, dst);
        }
    }
    let r = Received {
        src,
        dst,
        ttl: if v6 { ttl } else { 0 },
        bytes,
    };

    // The IPv4 header parser.
    let (msg, msg_ttl, msg_dst) = if v6 {
        (Some(r.bytes.as_slice()), ttl, dst)
    } else {
        match packet::parse_ipv4(&r.bytes) {
            Ok(p) => {
                let ihl = usize::from(r.bytes[0] & 0x0f) * 4;
                assert!(ihl >= 20 && r.bytes[0] >> 4 == 4);
                assert_eq!(r.bytes[9], IPPROTO_VRRP);
                assert_eq!(p.payload, &r.bytes[ihl..ihl + p.payload.len()]);
                assert_eq!(
                    ihl + p.payload.len(),
                    usize::from(u16::from_be_bytes([r.bytes[2], r.bytes[3]]))
                );
                assert_eq!((p.ttl, IpAddr::from(p.src)), (r.bytes[8], src));
                (Some(p.payload), p.ttl, IpAddr::from(p.dst))
            }
            Err(e) => {
                assert_eq!(e, Reject::Malformed);
                (None, 0, dst)
            }
        }
    };
    if let Some(msg) = msg {
        check_decode(msg, src, msg_dst, msg_ttl);
    }

    // The receive checks.
    let groups = groups();
    let keys: Vec<(u8, bool)> = groups.iter().map(|g| (g.vrid, g.is_ipv6())).collect();
    let got = classify(&r, v6, Some(own), &peers, &keys);
    assert_eq!(
        got,
        classify(&r, v6, Some(own), &peers, &keys),
        "the same datagram twice"
    );
    if let Ok((i, from, advert)) = &got {
        assert_eq!(*from, src);
        assert_ne!(*from, own, "our own advert accepted");
        assert!(peers.is_empty() || peers.contains(from), "not a peer");
        assert_eq!(keys[*i], (advert.vrid, v6));
        assert_eq!(
            Ok(advert.clone()),
            Advert::decode(msg.expect("accepted"), src, msg_dst, msg_ttl)
        );
    }
    if !peers.is_empty() && !peers.contains(&src) && src != own && msg.is_some() {
        assert_eq!(got.as_ref().err(), Some(&Reject::NotAPeer));
    }

    // The engine's part: a refused datagram moves its reason's counter and
    // nothing else, and reaches no machine; an accepted one is an event
    // for its group's machine.
    let refs: Vec<&VrrpGroup> = groups.iter().collect();
    let mut counted = counters();
    let before = counted.clone();
    let event = receive(&r, v6, Some(own), &peers, &refs, &mut counted);
    let moved: Vec<(&String, u64)> = counted
        .iter()
        .filter(|&(k, v)| before.get(k) != Some(v))
        .map(|(k, v)| (k, *v - before[k]))
        .collect();
    match (&got, &event) {
        (Err(reject), None) => {
            assert_eq!(moved, [(&reject.as_str().to_string(), 1)], "counters");
        }
        (Ok((i, from, advert)), Some((j, ev))) => {
            assert_eq!(i, j);
            assert_eq!(
                *ev,
                Event::Advert {
                    from: *from,
                    priority: advert.priority,
                    interval_cs: advert.interval_cs,
                }
            );
            assert_eq!(counted["accepted"], 1);
            assert!(moved.iter().all(|(_, n)| *n == 1));
            feed(&groups[*i], ev.clone(), machine_byte);
        }
        (got, event) => panic!("classify {got:?} but the engine {event:?}"),
    }
}

/// Feeds an accepted advert to a machine of `group` in the state
/// `machine_byte` picks: its timers stay ahead of now, its interval and
/// priority within their ranges.
fn feed(group: &VrrpGroup, event: Event, machine_byte: u8) {
    let primary = ip(OWN[usize::from(group.is_ipv6())]);
    let mut m = Machine::new(Params {
        priority: 1 + machine_byte % 254,
        preempt: machine_byte & 1 != 0,
        interval_cs: group.interval_cs,
        primary,
    });
    let t0 = Duration::from_secs(10);
    match machine_byte >> 6 {
        0 => {}
        1 => {
            m.handle(t0, Event::Startup);
        }
        2 => {
            m.handle(t0, Event::Resume);
        }
        _ => {
            m.handle(
                t0,
                Event::Tracking {
                    fault: true,
                    penalty: 0,
                },
            );
            m.handle(t0, Event::Startup);
        }
    }
    let was = m.state();
    let now = t0 + Duration::from_millis(250);
    let actions = m.handle(now, event);
    assert!(
        (1..=MAX_INTERVAL_CS).contains(&m.master_interval_cs()),
        "master interval {}",
        m.master_interval_cs()
    );
    assert!((1..=254).contains(&m.priority()));
    match m.state() {
        State::Backup | State::Master => {
            let next = m.next_deadline().expect("a running machine has a timer");
            assert!(next >= now, "{next:?} before {now:?}");
        }
        State::Init | State::Fault => {
            assert_eq!(m.state(), was, "a stopped machine moved: {actions:?}");
        }
    }
}
