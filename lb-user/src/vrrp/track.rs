//! Tracking: is the NIC's link up, is the upstream address reachable? One
//! ICMP echo per probe, over a raw socket (the daemon runs as root;
//! unprivileged ping sockets are off by default); [`ping`] blocks, so the
//! probe loop of [`start_tracking`] runs it off the async runtime.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

use nix::sys::socket::{SockaddrStorage, recvfrom};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use super::Nic;
use crate::config::VrrpConfig;
use crate::netlink;

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

fn icmp_checksum(b: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for c in b.chunks(2) {
        let hi = u32::from(c[0]) << 8;
        acc += hi | c.get(1).copied().map_or(0, u32::from);
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// An echo request (IPv4 with checksum; IPv6's is filled by the kernel).
pub fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let kind = if v6 {
        ICMPV6_ECHO_REQUEST
    } else {
        ICMP_ECHO_REQUEST
    };
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(b"xlb-vrrp-track");
    if !v6 {
        let c = icmp_checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
    }
    m
}

/// Is `reply` (ICMP message, no IP header) the echo reply to (id, seq)?
pub fn is_reply(v6: bool, reply: &[u8], id: u16, seq: u16) -> bool {
    let kind = if v6 {
        ICMPV6_ECHO_REPLY
    } else {
        ICMP_ECHO_REPLY
    };
    reply.len() >= 8
        && reply[0] == kind
        && reply[4..6] == id.to_be_bytes()
        && reply[6..8] == seq.to_be_bytes()
}

/// Sends one echo request to `addr` and waits up to `timeout` for the reply.
/// Ok(false): no reply in time (or the kernel refused to send: no route).
///
/// The socket is not bound to the NIC: the probe follows the node's routing
/// table, as its traffic to the upstream would (and a device-bound socket
/// would make the kernel assume the address on-link when no route exists).
pub fn ping(addr: IpAddr, id: u16, seq: u16, timeout: Duration) -> io::Result<bool> {
    let v6 = addr.is_ipv6();
    let (domain, proto) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    let s = Socket::new(domain, Type::RAW, Some(proto))?;
    let to = SocketAddr::new(addr, 0);
    if let Err(e) = s.send_to(&echo_request(v6, id, seq), &to.into()) {
        // Unreachable, prohibited, no neighbour: the address is not reachable.
        tracing::debug!(%addr, error = %e, "tracking echo not sent");
        return Ok(false);
    }
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        s.set_read_timeout(Some(left))?;
        let (n, from) = match recvfrom::<SockaddrStorage>(s.as_raw_fd(), &mut buf) {
            Ok(r) => r,
            Err(nix::Error::EAGAIN | nix::Error::ETIMEDOUT) => return Ok(false),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(io::Error::from_raw_os_error(e as i32)),
        };
        let from_ip = from.and_then(|f| {
            f.as_sockaddr_in()
                .map(|a| IpAddr::from(a.ip()))
                .or_else(|| f.as_sockaddr_in6().map(|a| IpAddr::from(a.ip())))
        });
        if from_ip != Some(addr) {
            continue;
        }
        // IPv4 raw sockets deliver the IP header, IPv6 ones do not.
        let msg = if v6 {
            &buf[..n]
        } else {
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            &buf[ihl.min(n)..n]
        };
        if is_reply(v6, msg, id, seq) {
            return Ok(true);
        }
    }
}

/// The tracking verdict, published by the tracking task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracking {
    /// None: all fine; Some(what fails).
    pub failing: Option<String>,
}

/// Probes link and upstream address every `track_interval_ms` and publishes
/// the verdict. The first probe is published before this returns the
/// receiver, so a node with a broken cable starts in FAULT (or with the
/// penalty) instead of becoming master first.
pub async fn start_tracking(cfg: &VrrpConfig, nic: &Nic) -> watch::Receiver<Tracking> {
    let interval = Duration::from_millis(u64::from(cfg.track_interval_ms));
    let timeout = interval.min(Duration::from_secs(1));
    let (track_link, addr, fall) = (cfg.track_link, cfg.track_address, cfg.track_fall);
    let nic = nic.clone();
    let id: u16 = rand::random();
    let probe = move |seq: u16, nic: Nic| async move {
        let link_ok = !track_link || netlink::carrier(nic.index).unwrap_or(false);
        let addr_ok = match addr {
            None => true,
            Some(a) if link_ok => tokio::task::spawn_blocking(move || ping(a, id, seq, timeout))
                .await
                .map(|r| r.unwrap_or(false))
                .unwrap_or(false),
            Some(_) => false,
        };
        (link_ok, addr_ok)
    };
    let name = nic.name.clone();
    let verdict = move |link_ok: bool, addr_down: bool| Tracking {
        failing: if !link_ok {
            Some(format!("link {name} down"))
        } else if addr_down {
            addr.map(|a| format!("{a} unreachable"))
        } else {
            None
        },
    };
    let (link_ok, addr_ok) = probe(0, nic.clone()).await;
    let mut addr_down = !addr_ok;
    let (tx, rx) = watch::channel(verdict(link_ok, addr_down));
    if !track_link && addr.is_none() {
        return rx;
    }
    tokio::spawn(async move {
        let mut misses = if addr_ok { 0 } else { fall };
        let mut seq: u16 = 0;
        loop {
            tokio::time::sleep(interval).await;
            seq = seq.wrapping_add(1);
            let (link_ok, addr_ok) = probe(seq, nic.clone()).await;
            // Down after `fall` misses in a row, up again on one answer: a
            // lossy path must not flap mastership on every lost echo.
            misses = if addr_ok { 0 } else { misses + 1 };
            if addr_ok {
                addr_down = false;
            } else if misses >= fall {
                addr_down = true;
            }
            if tx.send(verdict(link_ok, addr_down)).is_err() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksums_to_zero_and_matches_its_reply() {
        let m = echo_request(false, 0x1234, 7);
        assert_eq!(icmp_checksum(&m), 0);
        let mut reply = m.clone();
        reply[0] = ICMP_ECHO_REPLY;
        assert!(is_reply(false, &reply, 0x1234, 7));
        assert!(!is_reply(false, &reply, 0x1234, 8));
        assert!(!is_reply(false, &m, 0x1234, 7));
        let mut r6 = echo_request(true, 1, 2);
        r6[0] = ICMPV6_ECHO_REPLY;
        assert!(is_reply(true, &r6, 1, 2));
    }
}
