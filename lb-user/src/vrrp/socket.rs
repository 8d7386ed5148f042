//! The thin shell around the VRRP raw sockets: one per address family,
//! bound to the NIC, joined to the VRRP group, sending with TTL / hop limit
//! 255 to the group or (with `vrrp.peers`) to each peer, received from on
//! tokio's reactor. A raw socket of protocol 112 gets both the group's
//! adverts and those sent to the node's own address. Everything it
//! receives goes through [`super::packet`] unchanged.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd as _;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, recvmsg, sendmsg,
    setsockopt, sockopt,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::{Interest, unix::AsyncFd};

use super::packet::{GROUP_V4, GROUP_V6, IPPROTO_VRRP, REQUIRED_TTL};

/// Big enough for any advert (255 IPv6 addresses) plus an IPv4 header.
const RECV_BUF: usize = 8 + 255 * 16 + 60;

/// A received datagram, before any check.
#[derive(Debug)]
pub struct Received {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL / hop limit it arrived with.
    pub ttl: u8,
    /// The VRRP message (IPv4: the IP header has been parsed off by the
    /// caller via [`super::packet::parse_ipv4`]; here it is still there).
    pub bytes: Vec<u8>,
}

pub struct VrrpSocket {
    /// Non-blocking; readiness comes from tokio's reactor.
    fd: AsyncFd<Socket>,
    ifindex: u32,
    /// Source address of everything we send (IPv6: our link-local address).
    src: IpAddr,
}

fn nix_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl VrrpSocket {
    /// IPv4: protocol 112 to 224.0.0.18, sent from `src`.
    pub fn open_v4(ifname: &str, ifindex: u32, src: Ipv4Addr) -> io::Result<Self> {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_VRRP))),
        )?;
        s.set_nonblocking(true)?;
        s.set_cloexec(true)?;
        s.bind_device(Some(ifname.as_bytes()))?;
        s.join_multicast_v4_n(&GROUP_V4, &InterfaceIndexOrAddress::Index(ifindex))?;
        // The address form sets both the outgoing interface and the source
        // of multicast sends; bind() would also filter what we receive.
        s.set_multicast_if_v4(&src)?;
        s.set_multicast_ttl_v4(u32::from(REQUIRED_TTL))?;
        // Unicast adverts (to peers) too.
        s.set_ttl_v4(u32::from(REQUIRED_TTL))?;
        // Our own adverts would only be counted as "own address" drops.
        s.set_multicast_loop_v4(false)?;
        Ok(Self {
            fd: crate::async_socket::register(s)?,
            ifindex,
            src: src.into(),
        })
    }

    /// IPv6: next header 112 to ff02::12, sent from the link-local `src`.
    pub fn open_v6(ifname: &str, ifindex: u32, src: Ipv6Addr) -> io::Result<Self> {
        let s = Socket::new(
            Domain::IPV6,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_VRRP))),
        )?;
        s.set_nonblocking(true)?;
        s.set_cloexec(true)?;
        s.bind_device(Some(ifname.as_bytes()))?;
        s.join_multicast_v6(&GROUP_V6, ifindex)?;
        s.set_multicast_if_v6(ifindex)?;
        s.set_multicast_hops_v6(u32::from(REQUIRED_TTL))?;
        s.set_unicast_hops_v6(u32::from(REQUIRED_TTL))?;
        s.set_multicast_loop_v6(false)?;
        // IPv6 raw sockets do not deliver the IP header: ask for the hop
        // limit and the destination as ancillary data.
        setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true).map_err(nix_err)?;
        setsockopt(&s, sockopt::Ipv6RecvPacketInfo, &true).map_err(nix_err)?;
        Ok(Self {
            fd: crate::async_socket::register(s)?,
            ifindex,
            src: src.into(),
        })
    }

    pub fn source(&self) -> IpAddr {
        self.src
    }

    pub fn group(&self) -> IpAddr {
        if self.src.is_ipv4() {
            GROUP_V4.into()
        } else {
            GROUP_V6.into()
        }
    }

    /// Sends one VRRP message to `to`: the group, or a peer (an IPv6 peer
    /// is link-local, on this NIC). The message's checksum must have been
    /// computed for [`VrrpSocket::source`] and `to`. The socket does not
    /// block: an advert that finds the send buffer full fails with
    /// `WouldBlock` (the next one goes out an interval later, as after any
    /// send error).
    pub fn send(&self, msg: &[u8], to: IpAddr) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        let iov = [IoSlice::new(msg)];
        match (self.src, to) {
            (IpAddr::V4(_), IpAddr::V4(GROUP_V4)) => {
                // The source is the socket's multicast interface address.
                let to = SockaddrIn::from(SocketAddrV4::new(GROUP_V4, 0));
                sendmsg(fd, &iov, &[], MsgFlags::empty(), Some(&to)).map_err(nix_err)?;
            }
            (IpAddr::V4(src), IpAddr::V4(peer)) => {
                // Unicast: the route would pick the source; pin it (the
                // socket is unbound, so that it receives the group's
                // adverts as well as ours).
                let info = libc::in_pktinfo {
                    ipi_ifindex: self.ifindex as libc::c_int,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(src).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let to = SockaddrIn::from(SocketAddrV4::new(peer, 0));
                sendmsg(
                    fd,
                    &iov,
                    &[ControlMessage::Ipv4PacketInfo(&info)],
                    MsgFlags::empty(),
                    Some(&to),
                )
                .map_err(nix_err)?;
            }
            (IpAddr::V6(src), IpAddr::V6(to)) => {
                // The checksum was computed over this source: pin it.
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: src.octets(),
                    },
                    ipi6_ifindex: self.ifindex,
                };
                let to = SockaddrIn6::from(SocketAddrV6::new(to, 0, 0, self.ifindex));
                sendmsg(
                    fd,
                    &iov,
                    &[ControlMessage::Ipv6PacketInfo(&info)],
                    MsgFlags::empty(),
                    Some(&to),
                )
                .map_err(nix_err)?;
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{to} is not of the family of the socket from {}", self.src),
                ));
            }
        }
        Ok(())
    }

    /// Waits for the next datagram. Cancel-safe: dropping the future loses
    /// nothing, so the engine can `select!` on it.
    pub async fn recv(&self) -> io::Result<Received> {
        // Waits for readability and retries on WouldBlock (tokio's
        // `readable` + `try_io` loop).
        self.fd
            .async_io(Interest::READABLE, |_| self.recv_now())
            .await
    }

    fn recv_now(&self) -> io::Result<Received> {
        let fd = self.fd.as_raw_fd();
        let mut buf = vec![0u8; RECV_BUF];
        match self.src {
            IpAddr::V4(_) => {
                let mut iov = [IoSliceMut::new(&mut buf)];
                let msg = recvmsg::<SockaddrIn>(fd, &mut iov, None, MsgFlags::empty())
                    .map_err(nix_err)?;
                let n = msg.bytes;
                let src = msg.address.map_or(Ipv4Addr::UNSPECIFIED, |a| a.ip());
                buf.truncate(n);
                // TTL and destination come from the IP header, parsed later.
                Ok(Received {
                    src: src.into(),
                    dst: GROUP_V4.into(),
                    ttl: 0,
                    bytes: buf,
                })
            }
            IpAddr::V6(_) => {
                let mut cmsg = nix::cmsg_space!(libc::c_int, libc::in6_pktinfo);
                let mut iov = [IoSliceMut::new(&mut buf)];
                let msg = recvmsg::<SockaddrIn6>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
                    .map_err(nix_err)?;
                let n = msg.bytes;
                let src = msg.address.map_or(Ipv6Addr::UNSPECIFIED, |a| a.ip());
                let mut ttl = 0u8;
                let mut dst = Ipv6Addr::UNSPECIFIED;
                for c in msg.cmsgs().map_err(nix_err)? {
                    match c {
                        ControlMessageOwned::Ipv6HopLimit(h) => ttl = h.clamp(0, 255) as u8,
                        ControlMessageOwned::Ipv6PacketInfo(i) => {
                            dst = Ipv6Addr::from(i.ipi6_addr.s6_addr);
                        }
                        _ => {}
                    }
                }
                buf.truncate(n);
                Ok(Received {
                    src: src.into(),
                    dst: dst.into(),
                    ttl,
                    bytes: buf,
                })
            }
        }
    }
}
