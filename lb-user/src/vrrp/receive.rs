//! The strict receive path of VRRP adverts, pure: which group a datagram
//! belongs to, or why it is ignored (counted by reason in `xlb status`).

use std::net::IpAddr;

use super::packet::{self, Advert, Reject};
use super::socket::Received;

/// The strict receive path, pure: a datagram from the IPv4 (IP header
/// included) or IPv6 socket, our own source address, and the groups as
/// (VRID, is IPv6). Ok: the index of the group, the sender, the advert.
pub fn classify(
    r: &Received,
    v6: bool,
    own: Option<IpAddr>,
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
    let advert = Advert::decode(msg, src, dst, ttl)?;
    let i = groups
        .iter()
        .position(|&(vrid, g6)| vrid == advert.vrid && g6 == v6)
        .ok_or(Reject::UnknownVrid)?;
    // The address list has the sender's family by construction: decode
    // reads addresses of the size of the packet's source.
    Ok((i, src, advert))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// An IPv4 datagram as the raw socket delivers it.
    fn v4_datagram(src: &str, ttl: u8, advert: &Advert) -> Received {
        let msg = advert.encode(ip(src), packet::GROUP_V4.into());
        let mut b = vec![0x45, 0, 0, 0, 0, 0, 0, 0, ttl, packet::IPPROTO_VRRP, 0, 0];
        b.extend_from_slice(&src.parse::<Ipv4Addr>().unwrap().octets());
        b.extend_from_slice(&packet::GROUP_V4.octets());
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
        Received {
            src: ip(src),
            dst: packet::GROUP_V6.into(),
            ttl: hop_limit,
            bytes: advert.encode(ip(src), packet::GROUP_V6.into()),
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
            &GROUPS,
        )
        .unwrap();
        assert_eq!((i, from, got), (0, ip("198.18.0.3"), a));
        // VRID 51 over IPv6 is the third group, not the IPv4 one.
        let a6 = advert(51, &["fd00:18::100"]);
        let (i, _, _) = classify(&v6_datagram("fe80::3", 255, &a6), true, None, &GROUPS).unwrap();
        assert_eq!(i, 2);
    }

    #[test]
    fn refuses_own_foreign_and_unrouted_adverts() {
        let own = Some(ip("198.18.0.1"));
        let a = advert(51, &["198.18.0.100"]);
        let r = |d: &Received, v6| classify(d, v6, own, &GROUPS).map(|_| ()).unwrap_err();
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
}
