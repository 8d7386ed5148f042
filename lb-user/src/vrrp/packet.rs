//! VRRP version 3 advertisements (RFC 5798 section 5): encoding, decoding and
//! the strict receive checks. Pure: no sockets.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! |                       IPvX Address(es)                        |
//! ```
//!
//! The checksum covers an IP pseudo-header (source, destination, protocol
//! 112, length) for IPv4 as well as IPv6; that is what distinguishes v3
//! from v2 on IPv4, and what keepalived sends with `vrrp_version 3`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// The only version spoken.
pub const VERSION: u8 = 3;
/// The only packet type RFC 5798 defines.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Adverts must arrive with this TTL / hop limit: proof they were not routed.
pub const REQUIRED_TTL: u8 = 255;
/// IPv4 destination of adverts.
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 destination of adverts.
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Fixed part of an advert, before the addresses.
pub const HEADER_LEN: usize = 8;
/// The interval field is 12 bits of centiseconds.
pub const MAX_INTERVAL_CS: u16 = 0x0fff;
/// Priority 0 in an advert: the master is resigning.
pub const PRIORITY_RESIGN: u8 = 0;

const IPV4_MIN_HEADER: usize = 20;

/// One decoded advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub vrid: u8,
    pub priority: u8,
    /// Centiseconds, 1..=4095.
    pub interval_cs: u16,
    /// All of the same family as the packet.
    pub addresses: Vec<IpAddr>,
}

/// Why a received packet was not accepted as an advert. Each maps to a
/// counter in `xlb status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("truncated or inconsistent length")]
    Malformed,
    #[error("TTL / hop limit is not 255")]
    BadTtl,
    #[error("version is not 3")]
    BadVersion,
    #[error("type is not advertisement")]
    BadType,
    #[error("bad checksum")]
    BadChecksum,
    #[error("advert interval 0")]
    BadInterval,
    #[error("sent by this node")]
    OwnAddress,
    #[error("source is not in vrrp.peers")]
    NotAPeer,
    #[error("no group with this VRID")]
    UnknownVrid,
}

impl Reject {
    /// Counter name in `xlb status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::BadTtl => "bad_ttl",
            Reject::BadVersion => "bad_version",
            Reject::BadType => "bad_type",
            Reject::BadChecksum => "bad_checksum",
            Reject::BadInterval => "bad_interval",
            Reject::OwnAddress => "own_address",
            Reject::NotAPeer => "not_a_peer",
            Reject::UnknownVrid => "unknown_vrid",
        }
    }

    pub const ALL: [Reject; 9] = [
        Reject::Malformed,
        Reject::BadTtl,
        Reject::BadVersion,
        Reject::BadType,
        Reject::BadChecksum,
        Reject::BadInterval,
        Reject::OwnAddress,
        Reject::NotAPeer,
        Reject::UnknownVrid,
    ];
}

/// The VRRP checksum of `msg` sent from `src` to `dst` (its own checksum
/// field zero to compute, or filled in to verify: a correct message then
/// gives 0).
fn checksum(src: IpAddr, dst: IpAddr, msg: &[u8]) -> u16 {
    crate::checksum::pseudo_header_checksum(src, dst, IPPROTO_VRRP, msg)
}

impl Advert {
    /// The VRRP message (no IP header) as sent from `src` to `dst`.
    pub fn encode(&self, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let interval = self.interval_cs.min(MAX_INTERVAL_CS);
        let mut out = Vec::with_capacity(HEADER_LEN + 16 * self.addresses.len());
        out.push((VERSION << 4) | TYPE_ADVERTISEMENT);
        out.push(self.vrid);
        out.push(self.priority);
        out.push(self.addresses.len().min(255) as u8);
        out.extend_from_slice(&interval.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        for a in self.addresses.iter().take(255) {
            match a {
                IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
            }
        }
        let c = checksum(src, dst, &out);
        out[6..8].copy_from_slice(&c.to_be_bytes());
        out
    }

    /// Decodes and checks a VRRP message (no IP header) received from `src`
    /// to `dst` with TTL / hop limit `ttl`.
    pub fn decode(msg: &[u8], src: IpAddr, dst: IpAddr, ttl: u8) -> Result<Advert, Reject> {
        if ttl != REQUIRED_TTL {
            return Err(Reject::BadTtl);
        }
        if msg.len() < HEADER_LEN {
            return Err(Reject::Malformed);
        }
        if msg[0] >> 4 != VERSION {
            return Err(Reject::BadVersion);
        }
        if msg[0] & 0x0f != TYPE_ADVERTISEMENT {
            return Err(Reject::BadType);
        }
        let count = usize::from(msg[3]);
        let alen = if src.is_ipv4() { 4 } else { 16 };
        // Trailing bytes are tolerated only as far as the checksum covers
        // them; a count that does not fit is malformed.
        if msg.len() < HEADER_LEN + count * alen {
            return Err(Reject::Malformed);
        }
        if checksum(src, dst, msg) != 0 {
            return Err(Reject::BadChecksum);
        }
        let interval_cs = u16::from_be_bytes([msg[4], msg[5]]) & MAX_INTERVAL_CS;
        if interval_cs == 0 {
            return Err(Reject::BadInterval);
        }
        let addresses = msg[HEADER_LEN..HEADER_LEN + count * alen]
            .chunks_exact(alen)
            .map(|c| match <[u8; 4]>::try_from(c) {
                Ok(b) => IpAddr::from(b),
                Err(_) => IpAddr::from(<[u8; 16]>::try_from(c).expect("16-byte chunk")),
            })
            .collect();
        Ok(Advert {
            vrid: msg[1],
            priority: msg[2],
            interval_cs,
            addresses,
        })
    }
}

/// The parts of a received IPv4 packet (raw sockets deliver the IP header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub payload: &'a [u8],
}

/// Splits an IPv4 packet of protocol 112 into header fields and payload.
pub fn parse_ipv4(packet: &[u8]) -> Result<Ipv4Packet<'_>, Reject> {
    if packet.len() < IPV4_MIN_HEADER || packet[0] >> 4 != 4 {
        return Err(Reject::Malformed);
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if ihl < IPV4_MIN_HEADER || total < ihl || packet.len() < total || packet[9] != IPPROTO_VRRP {
        return Err(Reject::Malformed);
    }
    let addr = |o: usize| Ipv4Addr::new(packet[o], packet[o + 1], packet[o + 2], packet[o + 3]);
    Ok(Ipv4Packet {
        src: addr(12),
        dst: addr(16),
        ttl: packet[8],
        payload: &packet[ihl..total],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Worked out by hand from RFC 5798 §5.1 (and cross-checked with an
    /// independent one's-complement sum): VRID 51, priority 100, one
    /// address, 100 cs, from 198.18.0.1 to 224.0.0.18.
    const V4_ADVERT: [u8; 12] = [
        0x31, 51, 100, 1, // version 3 type 1, VRID, priority, count
        0x00, 100, 0xfd, 0x4d, // interval 100 cs, checksum
        198, 18, 0, 100, // the VIP
    ];

    /// VRID 52, priority 200, 20 cs, fd00:18::100, from fe80::1 to ff02::12.
    const V6_ADVERT: [u8; 24] = [
        0x31, 52, 200, 1, 0x00, 20, 0x0a, 0x7e, 0xfd, 0x00, 0x00, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0x01, 0x00,
    ];

    /// Captured with tcpdump from keepalived 2.2.7 (`vrrp_version 3`,
    /// VRID 51, priority 100, `advert_int 0.2`, VIP 198.18.0.100) on
    /// 198.18.0.3: the IPv4 header and the advert.
    #[rustfmt::skip]
    const KEEPALIVED_V4: [u8; 32] = [
        0x45, 0xc0, 0x00, 0x20, 0x00, 0x08, 0x00, 0x00, 0xff, 0x70, 0x14, 0x7e,
        0xc6, 0x12, 0x00, 0x03, 0xe0, 0x00, 0x00, 0x12,
        0x31, 0x33, 0x64, 0x01, 0x00, 0x14, 0xfd, 0x9b, 0xc6, 0x12, 0x00, 0x64,
    ];

    #[test]
    fn decodes_a_captured_keepalived_advert_and_encodes_the_same_bytes() {
        let p = parse_ipv4(&KEEPALIVED_V4).unwrap();
        assert_eq!(p.src, Ipv4Addr::new(198, 18, 0, 3));
        let a = Advert::decode(p.payload, p.src.into(), p.dst.into(), p.ttl).unwrap();
        assert_eq!(
            a,
            Advert {
                vrid: 51,
                priority: 100,
                interval_cs: 20,
                addresses: vec![ip("198.18.0.100")],
            }
        );
        assert_eq!(a.encode(p.src.into(), p.dst.into()), p.payload.to_vec());
    }

    #[test]
    fn encodes_ipv4_advert_to_known_bytes() {
        let a = Advert {
            vrid: 51,
            priority: 100,
            interval_cs: 100,
            addresses: vec![ip("198.18.0.100")],
        };
        assert_eq!(
            a.encode(ip("198.18.0.1"), GROUP_V4.into()),
            V4_ADVERT.to_vec()
        );
    }

    #[test]
    fn encodes_ipv6_advert_to_known_bytes() {
        let a = Advert {
            vrid: 52,
            priority: 200,
            interval_cs: 20,
            addresses: vec![ip("fd00:18::100")],
        };
        assert_eq!(a.encode(ip("fe80::1"), GROUP_V6.into()), V6_ADVERT.to_vec());
    }

    #[test]
    fn decodes_known_bytes() {
        let a = Advert::decode(&V4_ADVERT, ip("198.18.0.1"), GROUP_V4.into(), 255).unwrap();
        assert_eq!(
            a,
            Advert {
                vrid: 51,
                priority: 100,
                interval_cs: 100,
                addresses: vec![ip("198.18.0.100")],
            }
        );
        let a = Advert::decode(&V6_ADVERT, ip("fe80::1"), GROUP_V6.into(), 255).unwrap();
        assert_eq!(a.addresses, vec![ip("fd00:18::100")]);
        assert_eq!((a.vrid, a.priority, a.interval_cs), (52, 200, 20));
    }

    #[test]
    fn round_trips_many_addresses_and_resign() {
        let a = Advert {
            vrid: 1,
            priority: PRIORITY_RESIGN,
            interval_cs: MAX_INTERVAL_CS,
            addresses: vec![ip("198.18.0.100"), ip("198.18.0.101"), ip("198.18.0.102")],
        };
        let (s, d) = (ip("198.18.0.9"), IpAddr::from(GROUP_V4));
        assert_eq!(Advert::decode(&a.encode(s, d), s, d, 255).unwrap(), a);
    }

    #[test]
    fn rejects_malformed_and_foreign_adverts() {
        let (s, d) = (ip("198.18.0.1"), IpAddr::from(GROUP_V4));
        let dec = |b: &[u8], ttl| Advert::decode(b, s, d, ttl);
        assert_eq!(dec(&V4_ADVERT, 254), Err(Reject::BadTtl));
        assert_eq!(dec(&V4_ADVERT[..7], 255), Err(Reject::Malformed));
        // Count says 2 addresses, only one present.
        let mut b = V4_ADVERT;
        b[3] = 2;
        assert_eq!(dec(&b, 255), Err(Reject::Malformed));
        // Version 2 (with its own checksum irrelevant: version is checked first).
        let mut b = V4_ADVERT;
        b[0] = 0x21;
        assert_eq!(dec(&b, 255), Err(Reject::BadVersion));
        let mut b = V4_ADVERT;
        b[0] = 0x32;
        assert_eq!(dec(&b, 255), Err(Reject::BadType));
        // One flipped bit anywhere in the body.
        let mut b = V4_ADVERT;
        b[11] ^= 1;
        assert_eq!(dec(&b, 255), Err(Reject::BadChecksum));
        // Same bytes claimed from another source: the pseudo-header differs.
        assert_eq!(
            Advert::decode(&V4_ADVERT, ip("198.18.0.2"), d, 255),
            Err(Reject::BadChecksum)
        );
        // A v2-style checksum (no pseudo-header) is refused.
        let mut b = V4_ADVERT;
        b[6..8].copy_from_slice(&[0, 0]);
        let c = crate::checksum::checksum(&b);
        b[6..8].copy_from_slice(&c.to_be_bytes());
        assert_eq!(dec(&b, 255), Err(Reject::BadChecksum));
        // Interval 0, correctly checksummed.
        let zero = Advert {
            vrid: 51,
            priority: 100,
            interval_cs: 0,
            addresses: vec![ip("198.18.0.100")],
        }
        .encode(s, d);
        assert_eq!(dec(&zero, 255), Err(Reject::BadInterval));
    }

    #[test]
    fn parses_ipv4_header_with_options() {
        let mut pkt = vec![
            0x46,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            255,
            IPPROTO_VRRP,
            0,
            0,
            198,
            18,
            0,
            1,
            224,
            0,
            0,
            18,
        ];
        pkt.extend_from_slice(&[1, 1, 1, 1]); // 4 bytes of options (NOPs)
        pkt.extend_from_slice(&V4_ADVERT);
        let len = pkt.len() as u16;
        pkt[2..4].copy_from_slice(&len.to_be_bytes());
        pkt.extend_from_slice(&[0xee; 3]); // link-layer padding beyond total length
        let p = parse_ipv4(&pkt).unwrap();
        assert_eq!(
            (p.src, p.dst, p.ttl),
            (Ipv4Addr::new(198, 18, 0, 1), GROUP_V4, 255)
        );
        assert_eq!(p.payload, &V4_ADVERT);
        assert_eq!(parse_ipv4(&pkt[..19]), Err(Reject::Malformed));
        pkt[9] = 6;
        assert_eq!(parse_ipv4(&pkt), Err(Reject::Malformed));
    }
}
