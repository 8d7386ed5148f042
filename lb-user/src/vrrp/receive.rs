//! The strict receive path of VRRP adverts, pure: which group a datagram
//! belongs to, or why it is ignored (counted by reason in `xlb status`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::packet::{self, Advert, Reject};
use super::socket::Received;
use super::state::Event;
use crate::config::VrrpGroup;

/// The strict receive path, pure: a datagram from the IPv4 (IP header
/// included) or IPv6 socket, our own source address, `vrrp.peers` (empty:
/// any source), and the groups as (VRID, is IPv6). Ok: the index of the
/// group, the sender, the advert.
///
/// With peers, a source not among them is refused before anything of the
/// packet is looked at: like a firewall rule, whatever it claims.
pub fn classify(
    r: &Received,
    v6: bool,
    own: Option<IpAddr>,
    peers: &[IpAddr],
    groups: &[(u8, bool)],
) -> Result<(usize, IpAddr, Advert), Reject> {
    let (src, dst, ttl, msg) = if v6 {
        (r.src, r.dst, r.ttl, r.bytes.as_slice())
    } else {
        let p = packet::parse_ipv4(&r.bytes)?;
        (IpAddr::from(p.src), IpAddr::from(p.dst), p.ttl, p.payload)
    };
    if own == Some(src) {
        return Err(Reject::OwnAddress);
    }
    if !peers.is_empty() && !peers.contains(&src) {
        return Err(Reject::NotAPeer);
    }
    let advert = Advert::decode(msg, src, dst, ttl)?;
    let i = groups
        .iter()
        .position(|&(vrid, g6)| vrid == advert.vrid && g6 == v6)
        .ok_or(Reject::UnknownVrid)?;
    // The address list has the sender's family by construction: decode
    // reads addresses of the size of the packet's source.
    Ok((i, src, advert))
}

/// The receive counters of `xlb status`, all at zero: `accepted`,
/// `address_mismatch`, `interval_mismatch` and one per [`Reject`].
pub fn counters() -> BTreeMap<String, u64> {
    let mut counters = BTreeMap::new();
    for name in ["accepted", "address_mismatch", "interval_mismatch"] {
        counters.insert(name.to_string(), 0);
    }
    for r in Reject::ALL {
        counters.insert(r.as_str().to_string(), 0);
    }
    counters
}

/// What the engine does with a datagram, without the IO: the checks of
/// [`classify`] against `groups`, counted in `counters`; for an accepted
/// advert, the index of its group and the event for that group's machine.
/// A refused datagram changes nothing but its reason's counter.
pub fn receive(
    r: &Received,
    v6: bool,
    own: Option<IpAddr>,
    peers: &[IpAddr],
    groups: &[&VrrpGroup],
    counters: &mut BTreeMap<String, u64>,
) -> Option<(usize, Event)> {
    let mut count = |what: &str| *counters.entry(what.to_string()).or_default() += 1;
    let keys: Vec<(u8, bool)> = groups.iter().map(|g| (g.vrid, g.is_ipv6())).collect();
    let (i, from, advert) = match classify(r, v6, own, peers, &keys) {
        Ok(accepted) => accepted,
        Err(reject) => {
            tracing::debug!(src = %r.src, reason = %reject, "VRRP packet ignored");
            count(reject.as_str());
            return None;
        }
    };
    count("accepted");
    let g = groups[i];
    let mut ours = g.addresses.clone();
    let mut theirs = advert.addresses;
    ours.sort();
    theirs.sort();
    if ours != theirs {
        count("address_mismatch");
    }
    if advert.interval_cs != g.interval_cs {
        // RFC 5798 6.4.2: a backup follows the master's interval.
        count("interval_mismatch");
    }
    Some((
        i,
        Event::Advert {
            from,
            priority: advert.priority,
            interval_cs: advert.interval_cs,
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// An IPv4 datagram to the VRRP group as the raw socket delivers it.
    fn v4_datagram(src: &str, ttl: u8, advert: &Advert) -> Received {
        v4_datagram_to(src, packet::GROUP_V4, ttl, advert)
    }

    /// An IPv4 datagram to `dst` (the group, or a unicast address).
    fn v4_datagram_to(src: &str, dst: Ipv4Addr, ttl: u8, advert: &Advert) -> Received {
        let msg = advert.encode(ip(src), dst.into());
        let mut b = vec![0x45, 0, 0, 0, 0, 0, 0, 0, ttl, packet::IPPROTO_VRRP, 0, 0];
        b.extend_from_slice(&src.parse::<Ipv4Addr>().unwrap().octets());
        b.extend_from_slice(&dst.octets());
        b.extend_from_slice(&msg);
        let len = b.len() as u16;
        b[2..4].copy_from_slice(&len.to_be_bytes());
        Received {
            src: ip(src),
            dst: packet::GROUP_V4.into(),
            ttl: 0,
            bytes: b,
        }
    }

    fn v6_datagram(src: &str, hop_limit: u8, advert: &Advert) -> Received {
        v6_datagram_to(src, packet::GROUP_V6.into(), hop_limit, advert)
    }

    fn v6_datagram_to(src: &str, dst: IpAddr, hop_limit: u8, advert: &Advert) -> Received {
        Received {
            src: ip(src),
            dst,
            ttl: hop_limit,
            bytes: advert.encode(ip(src), dst),
        }
    }

    fn advert(vrid: u8, addrs: &[&str]) -> Advert {
        Advert {
            vrid,
            priority: 100,
            interval_cs: 100,
            addresses: addrs.iter().map(|a| ip(a)).collect(),
        }
    }

    const GROUPS: [(u8, bool); 3] = [(51, false), (52, true), (51, true)];

    #[test]
    fn accepts_adverts_for_our_groups_by_family() {
        let a = advert(51, &["198.18.0.100"]);
        let (i, from, got) = classify(
            &v4_datagram("198.18.0.3", 255, &a),
            false,
            Some(ip("198.18.0.1")),
            &[],
            &GROUPS,
        )
        .unwrap();
        assert_eq!((i, from, got), (0, ip("198.18.0.3"), a));
        // VRID 51 over IPv6 is the third group, not the IPv4 one.
        let a6 = advert(51, &["fd00:18::100"]);
        let (i, _, _) =
            classify(&v6_datagram("fe80::3", 255, &a6), true, None, &[], &GROUPS).unwrap();
        assert_eq!(i, 2);
    }

    #[test]
    fn refuses_own_foreign_and_unrouted_adverts() {
        let own = Some(ip("198.18.0.1"));
        let a = advert(51, &["198.18.0.100"]);
        let r = |d: &Received, v6| classify(d, v6, own, &[], &GROUPS).map(|_| ()).unwrap_err();
        assert_eq!(
            r(&v4_datagram("198.18.0.1", 255, &a), false),
            Reject::OwnAddress
        );
        assert_eq!(r(&v4_datagram("198.18.0.3", 64, &a), false), Reject::BadTtl);
        assert_eq!(
            r(
                &v4_datagram("198.18.0.3", 255, &advert(9, &["198.18.0.100"])),
                false
            ),
            Reject::UnknownVrid
        );
        // IPv6 hop limit comes from ancillary data.
        let a6 = advert(52, &["fd00:18::100"]);
        assert_eq!(r(&v6_datagram("fe80::3", 254, &a6), true), Reject::BadTtl);
        // An IPv4 advert body that claims VRID 52 arrives on the IPv4
        // socket: no IPv4 group 52.
        assert_eq!(
            r(
                &v4_datagram("198.18.0.3", 255, &advert(52, &["198.18.0.100"])),
                false
            ),
            Reject::UnknownVrid
        );
        // Truncated IPv4 header.
        let mut short = v4_datagram("198.18.0.3", 255, &a);
        short.bytes.truncate(10);
        assert_eq!(r(&short, false), Reject::Malformed);
    }

    const PEERS: [&str; 2] = ["198.18.0.3", "fe80::3"];

    fn peers() -> Vec<IpAddr> {
        PEERS.iter().map(|p| ip(p)).collect()
    }

    #[test]
    fn with_peers_accepts_their_adverts_multicast_and_unicast() {
        let own = ip("198.18.0.1");
        let a = advert(51, &["198.18.0.100"]);
        for d in [
            v4_datagram("198.18.0.3", 255, &a),
            // keepalived's unicast_peer and xlb's peers send to our address.
            v4_datagram_to("198.18.0.3", Ipv4Addr::new(198, 18, 0, 1), 255, &a),
        ] {
            let (i, from, _) = classify(&d, false, Some(own), &peers(), &GROUPS).unwrap();
            assert_eq!((i, from), (0, ip("198.18.0.3")));
        }
        let a6 = advert(52, &["fd00:18::100"]);
        for d in [
            v6_datagram("fe80::3", 255, &a6),
            v6_datagram_to("fe80::3", ip("fe80::1"), 255, &a6),
        ] {
            let (i, _, _) = classify(&d, true, Some(ip("fe80::1")), &peers(), &GROUPS).unwrap();
            assert_eq!(i, 1);
        }
    }

    #[test]
    fn with_peers_refuses_any_other_source_whatever_it_claims() {
        let own = Some(ip("198.18.0.1"));
        // A forged takeover: valid, priority 254, the real VRID.
        let forged = Advert {
            priority: 254,
            ..advert(51, &["198.18.0.100"])
        };
        let r = |d: &Received, v6| {
            classify(d, v6, own, &peers(), &GROUPS)
                .map(|_| ())
                .unwrap_err()
        };
        assert_eq!(
            r(&v4_datagram("198.18.0.66", 255, &forged), false),
            Reject::NotAPeer
        );
        assert_eq!(
            r(
                &v4_datagram_to("198.18.0.66", Ipv4Addr::new(198, 18, 0, 1), 255, &forged),
                false
            ),
            Reject::NotAPeer
        );
        // Refused before it is decoded: a non-peer's garbage counts as
        // not_a_peer, not as malformed.
        let mut garbage = v4_datagram("198.18.0.66", 64, &forged);
        garbage.bytes.truncate(24);
        garbage.bytes[2..4].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(r(&garbage, false), Reject::NotAPeer);
        // IPv6: a peer's global address is not its link-local source.
        let a6 = Advert {
            priority: 254,
            ..advert(52, &["fd00:18::100"])
        };
        assert_eq!(
            r(&v6_datagram("fe80::66", 255, &a6), true),
            Reject::NotAPeer
        );
        assert_eq!(
            r(&v6_datagram("fd00:18::3", 255, &a6), true),
            Reject::NotAPeer
        );
        // Our own adverts stay own_address; a peer's bad TTL stays bad_ttl.
        assert_eq!(
            r(&v4_datagram("198.18.0.1", 255, &forged), false),
            Reject::OwnAddress
        );
        assert_eq!(
            r(&v4_datagram("198.18.0.3", 64, &forged), false),
            Reject::BadTtl
        );
    }

    #[test]
    fn without_peers_the_same_forged_advert_is_accepted() {
        let forged = Advert {
            priority: 254,
            ..advert(51, &["198.18.0.100"])
        };
        let (i, from, got) = classify(
            &v4_datagram("198.18.0.66", 255, &forged),
            false,
            Some(ip("198.18.0.1")),
            &[],
            &GROUPS,
        )
        .unwrap();
        assert_eq!((i, from, got.priority), (0, ip("198.18.0.66"), 254));
    }

    fn group(vrid: u8, addrs: &[&str]) -> VrrpGroup {
        VrrpGroup {
            vrid,
            priority: 100,
            preempt: true,
            interval_cs: 100,
            vips: vec!["web".into()],
            addresses: addrs.iter().map(|a| ip(a)).collect(),
            server_addresses: Vec::new(),
        }
    }

    #[test]
    fn the_engine_counts_a_refused_advert_and_feeds_an_accepted_one_to_its_group() {
        let g4 = group(51, &["198.18.0.100"]);
        let g6 = group(52, &["fd00:18::100"]);
        let groups = [&g4, &g6];
        let mut counters = counters();
        let before = counters.clone();
        let own = Some(ip("198.18.0.1"));
        let foreign = v4_datagram("198.18.0.3", 255, &advert(9, &["198.18.0.100"]));
        assert_eq!(
            receive(&foreign, false, own, &[], &groups, &mut counters),
            None
        );
        let mut want = before.clone();
        *want.get_mut("unknown_vrid").unwrap() += 1;
        assert_eq!(counters, want, "only the reason's counter moved");
        // Another address list and interval: accepted, and counted as such.
        let other = Advert {
            interval_cs: 20,
            ..advert(51, &["198.18.0.101"])
        };
        let d = v4_datagram("198.18.0.3", 255, &other);
        assert_eq!(
            receive(&d, false, own, &[], &groups, &mut counters),
            Some((
                0,
                Event::Advert {
                    from: ip("198.18.0.3"),
                    priority: 100,
                    interval_cs: 20,
                }
            ))
        );
        for name in ["accepted", "address_mismatch", "interval_mismatch"] {
            assert_eq!(counters[name], 1, "{name}");
        }
    }
}
