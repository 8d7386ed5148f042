//! The Internet checksum (RFC 1071) of what the control plane sends and
//! checks itself: ICMPv4 echo requests for health checks, and VRRP adverts,
//! whose checksum also covers an IPv4 or IPv6 pseudo-header.
//!
//! To compute a checksum, sum the message with its checksum field zero and
//! write the result there; to verify one, sum the message as received: a
//! correct one gives 0.

use std::net::{IpAddr, Ipv6Addr};

/// Adds `bytes` to `acc` as big-endian 16-bit words (an odd last byte is
/// padded with a zero byte). Not folded: chain calls, then [`fold`].
pub fn sum(acc: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(2);
    let mut acc = acc;
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// The one's-complement sum of `acc`: carries added back in until it fits
/// 16 bits. Not inverted.
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum of `data` alone (ICMPv4, the IPv4 header).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// The checksum of the upper-layer message `msg` of protocol `proto` sent
/// from `src` to `dst`, over the pseudo-header of RFC 768 (IPv4) or RFC
/// 8200 section 8.1 (IPv6). A pair of mixed families is summed as IPv6,
/// the IPv4 address mapped.
pub fn pseudo_header_checksum(src: IpAddr, dst: IpAddr, proto: u8, msg: &[u8]) -> u16 {
    let len = msg.len() as u64;
    let acc = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            // source, destination, zero, protocol, 16-bit length
            let acc = sum(sum(0, &s.octets()), &d.octets());
            acc + u64::from(proto) + (len & 0xffff)
        }
        (s, d) => {
            // source, destination, 32-bit length, three zeros, next header
            let acc = sum(sum(0, &v6(s).octets()), &v6(d).octets());
            acc + (len >> 16 & 0xffff) + (len & 0xffff) + u64::from(proto)
        }
    };
    !fold(sum(acc, msg))
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Writes the checksum into bytes 2..4 (where ICMP keeps it).
    fn fill(mut msg: Vec<u8>, c: impl Fn(&[u8]) -> u16) -> Vec<u8> {
        msg[2..4].copy_from_slice(&[0, 0]);
        let sum = c(&msg);
        msg[2..4].copy_from_slice(&sum.to_be_bytes());
        msg
    }

    #[test]
    fn sum_of_the_rfc1071_example() {
        // RFC 1071 section 3: the one's-complement sum of these is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn an_odd_last_byte_counts_as_the_high_byte_of_a_word() {
        assert_eq!(
            checksum(&[0x12, 0x34, 0x56]),
            checksum(&[0x12, 0x34, 0x56, 0])
        );
    }

    #[test]
    fn a_captured_ipv4_header_verifies() {
        // The IPv4 header of the keepalived advert in vrrp/packet.rs
        // (captured with tcpdump), checksum 0x147e in place.
        #[rustfmt::skip]
        let header = [
            0x45, 0xc0, 0x00, 0x20, 0x00, 0x08, 0x00, 0x00, 0xff, 0x70, 0x14, 0x7e,
            0xc6, 0x12, 0x00, 0x03, 0xe0, 0x00, 0x00, 0x12,
        ];
        assert_eq!(checksum(&header), 0);
        let mut zeroed = header;
        zeroed[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(checksum(&zeroed), 0x147e);
    }

    #[test]
    fn a_message_with_its_checksum_filled_in_verifies() {
        let msg = b"\x08\x00\xff\xff\x12\x34\x00\x07an odd-length payload".to_vec();
        assert_eq!(checksum(&fill(msg.clone(), checksum)), 0);
        for (s, d) in [
            (ip("198.18.0.1"), ip("224.0.0.18")),
            (ip("fe80::1"), ip("ff02::12")),
        ] {
            let filled = fill(msg.clone(), |m| pseudo_header_checksum(s, d, 112, m));
            assert_eq!(pseudo_header_checksum(s, d, 112, &filled), 0);
            // The pseudo-header is covered: another source, protocol or
            // length does not verify.
            let other = if s.is_ipv4() {
                ip("198.18.0.2")
            } else {
                ip("fe80::2")
            };
            assert_ne!(pseudo_header_checksum(other, d, 112, &filled), 0);
            assert_ne!(pseudo_header_checksum(s, d, 113, &filled), 0);
            assert_ne!(pseudo_header_checksum(s, d, 112, &filled[..20]), 0);
        }
    }
}
