//! Gratuitous ARP and unsolicited neighbour advertisements: on becoming
//! master, tell every host on the segment that the VIPs now live at this
//! NIC's MAC, so that clients and the router stop sending to the old master
//! without waiting for their caches to expire.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd as _;

use socket2::{Domain, Protocol, Socket, Type};

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IP: u16 = 0x0800;
const ARPHRD_ETHER: u16 = 1;
const ARPOP_REQUEST: u16 = 1;
const BROADCAST: [u8; 6] = [0xff; 6];
const ICMPV6_NEIGHBOR_ADVERT: u8 = 136;
/// NA flags: Override (replace whatever MAC the receiver has cached).
const NA_FLAG_OVERRIDE: u32 = 0x2000_0000;
const ND_OPT_TARGET_LL_ADDR: u8 = 2;
/// All-nodes multicast.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// A gratuitous ARP frame: a broadcast request whose sender and target
/// protocol address are both `addr` (the form Linux and keepalived use;
/// receivers with a cache entry for `addr` replace its MAC).
pub fn garp_frame(mac: [u8; 6], addr: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&ARPHRD_ETHER.to_be_bytes());
    f.extend_from_slice(&ETH_P_IP.to_be_bytes());
    f.push(6);
    f.push(4);
    f.extend_from_slice(&ARPOP_REQUEST.to_be_bytes());
    f.extend_from_slice(&mac);
    f.extend_from_slice(&addr.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&addr.octets());
    f
}

/// An unsolicited neighbour advertisement for `target` (ICMPv6 message
/// only; the kernel adds the IPv6 header and the checksum).
pub fn na_message(mac: [u8; 6], target: Ipv6Addr) -> Vec<u8> {
    let mut m = Vec::with_capacity(32);
    m.push(ICMPV6_NEIGHBOR_ADVERT);
    m.push(0); // code
    m.extend_from_slice(&[0, 0]); // checksum: filled by the kernel
    m.extend_from_slice(&NA_FLAG_OVERRIDE.to_be_bytes());
    m.extend_from_slice(&target.octets());
    m.push(ND_OPT_TARGET_LL_ADDR);
    m.push(1); // length in units of 8 bytes
    m.extend_from_slice(&mac);
    m
}

/// Sends one gratuitous ARP for each of `addrs` out of `ifname`.
///
/// Over a packet socket of protocol 0, so the kernel queues nothing to it
/// for reading, bound to the interface with the link address that
/// `getifaddrs` reports for it (its protocol field, 0, keeps the socket's).
pub fn send_garps(ifname: &str, mac: [u8; 6], addrs: &[Ipv4Addr]) -> io::Result<()> {
    if addrs.is_empty() {
        return Ok(());
    }
    let link = nix::ifaddrs::getifaddrs()
        .map_err(nix_err)?
        .filter(|i| i.interface_name == ifname)
        .find_map(|i| i.address?.as_link_addr().copied())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface {ifname}")))?;
    let s = Socket::new(Domain::PACKET, Type::RAW, None)?;
    s.set_cloexec(true)?;
    nix::sys::socket::bind(s.as_raw_fd(), &link).map_err(nix_err)?;
    for a in addrs {
        s.send(&garp_frame(mac, *a))?;
    }
    Ok(())
}

fn nix_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Sends one unsolicited NA for each of `addrs` to all nodes on `ifindex`.
pub fn send_nas(ifname: &str, ifindex: u32, mac: [u8; 6], addrs: &[Ipv6Addr]) -> io::Result<()> {
    if addrs.is_empty() {
        return Ok(());
    }
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    s.bind_device(Some(ifname.as_bytes()))?;
    s.set_multicast_if_v6(ifindex)?;
    // RFC 4861 7.1.2: receivers drop NAs with a hop limit other than 255.
    s.set_multicast_hops_v6(255)?;
    s.set_multicast_loop_v6(false)?;
    let to = SocketAddrV6::new(ALL_NODES, 0, 0, ifindex);
    for a in addrs {
        s.send_to(&na_message(mac, *a), &to.into())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

    #[test]
    fn garp_frame_bytes() {
        let f = garp_frame(MAC, Ipv4Addr::new(198, 18, 0, 100));
        #[rustfmt::skip]
        let want: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06,
            0, 1, 0x08, 0, 6, 4, 0, 1,
            2, 0, 0, 0, 0, 1, 198, 18, 0, 100,
            0, 0, 0, 0, 0, 0, 198, 18, 0, 100,
        ];
        assert_eq!(f, want.to_vec());
    }

    #[test]
    fn na_message_bytes() {
        let m = na_message(MAC, "fd00:18::100".parse().unwrap());
        #[rustfmt::skip]
        let want: [u8; 32] = [
            136, 0, 0, 0, 0x20, 0, 0, 0,
            0xfd, 0, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
            2, 1, 2, 0, 0, 0, 0, 1,
        ];
        assert_eq!(m, want.to_vec());
    }
}
