//! Frames for the benchmarks, built by hand (they are few and fixed).
//! IPv4 header checksums are right; L4 checksums are left 0: xlb never
//! checks them, and a zero UDP checksum over IPv4 means "none", which the
//! end-to-end sinks accept.

use std::net::{Ipv4Addr, Ipv6Addr};

pub type Mac = [u8; 6];

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const TCP_SYN: u8 = 0x02;
/// A small request-sized payload.
const PAYLOAD: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

fn ethernet(dst: Mac, src: Mac, ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4(f: &mut Vec<u8>, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4_len: usize) {
    let start = f.len();
    let total = u16::try_from(20 + l4_len).expect("small frame");
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]); // id 0, DF, TTL 64
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    let sum = ipv4_checksum(&f[start..]);
    f[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
}

fn tcp_syn(f: &mut Vec<u8>, sport: u16, dport: u16) {
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x03, 0xe8, 0, 0, 0, 0]); // seq 1000, ack 0
    f.extend_from_slice(&[0x50, TCP_SYN, 0xfa, 0xf0, 0, 0, 0, 0]); // doff 5, win 64240
    f.extend_from_slice(PAYLOAD);
}

fn udp(f: &mut Vec<u8>, sport: u16, dport: u16, payload: &[u8]) {
    let len = u16::try_from(8 + payload.len()).expect("small frame");
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
}

/// IPv4 TCP SYN with a request-sized payload.
pub fn tcp4(
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let mut f = ethernet(dst_mac, src_mac, ETH_P_IP);
    ipv4(&mut f, src, dst, IPPROTO_TCP, 20 + PAYLOAD.len());
    tcp_syn(&mut f, sport, dport);
    f
}

/// IPv4 UDP with `payload`.
pub fn udp4(
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = ethernet(dst_mac, src_mac, ETH_P_IP);
    ipv4(&mut f, src, dst, IPPROTO_UDP, 8 + payload.len());
    udp(&mut f, sport, dport, payload);
    f
}

/// IPv6 UDP with a request-sized payload.
pub fn udp6(
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let mut f = ethernet(dst_mac, src_mac, ETH_P_IPV6);
    let len = u16::try_from(8 + PAYLOAD.len()).expect("small frame");
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[IPPROTO_UDP, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    udp(&mut f, sport, dport, PAYLOAD);
    f
}

/// `frame` with its IPv4 IHL set to 4: a malformed header xlb drops.
pub fn with_bad_ihl(mut frame: Vec<u8>) -> Vec<u8> {
    frame[ETH_HLEN] = 0x44;
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_verifies_to_zero() {
        let f = tcp4(
            [2; 6],
            [4; 6],
            Ipv4Addr::new(198, 18, 0, 2),
            Ipv4Addr::new(198, 18, 0, 100),
            1,
            80,
        );
        assert_eq!(ipv4_checksum(&f[ETH_HLEN..ETH_HLEN + 20]), 0);
        assert_eq!(f.len(), ETH_HLEN + 20 + 20 + PAYLOAD.len());
    }

    #[test]
    fn udp_lengths_are_consistent() {
        let f = udp4(
            [2; 6],
            [4; 6],
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::LOCALHOST,
            1,
            9,
            &[0; 18],
        );
        assert_eq!(f.len(), 60);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 46);
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 26);
        let g = udp6(
            [2; 6],
            [4; 6],
            Ipv6Addr::LOCALHOST,
            Ipv6Addr::LOCALHOST,
            1,
            53,
        );
        assert_eq!(
            usize::from(u16::from_be_bytes([g[18], g[19]])),
            g.len() - ETH_HLEN - 40
        );
    }
}
