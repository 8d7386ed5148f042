//! ICMP and ICMPv6 echo for L3 checks, over one raw socket per address
//! family shared by every check.
//!
//! A raw ICMP socket receives a copy of every ICMP packet the host gets, so
//! one socket per check would make N checks parse N² replies. One shared
//! socket and a reader task that hands each echo reply to the check waiting
//! for its (address, sequence) keeps it linear. Raw sockets need
//! CAP_NET_RAW, which `xlb run` has anyway (it loads BPF programs).
//!
//! The sockets are non-blocking and driven by tokio's reactor through
//! [`AsyncFd`].

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, Ordering},
    },
};

use nix::sys::socket::{SockaddrStorage, recvfrom};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::{OnceCell, oneshot},
};

use crate::checksum;

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
const ECHO_HEADER_LEN: usize = 8;
const PAYLOAD: &[u8] = b"xlb-health-check";

/// Pings backends. Sockets are opened on first use, so a configuration
/// without ICMP checks opens none.
#[derive(Default)]
pub struct Pinger {
    v4: OnceCell<Arc<Family>>,
    v6: OnceCell<Arc<Family>>,
}

type Waiters = Mutex<HashMap<(IpAddr, u16), oneshot::Sender<()>>>;

struct Family {
    socket: AsyncFd<Socket>,
    ident: u16,
    next_seq: AtomicU16,
    waiters: Waiters,
}

/// Removes a waiter when its ping is dropped (timed out or done).
struct WaiterGuard<'a> {
    waiters: &'a Waiters,
    key: (IpAddr, u16),
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        lock(self.waiters).remove(&self.key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pinger {
    /// Sends one echo request to `addr` and waits for its reply (no timeout
    /// here; the caller bounds it).
    pub async fn ping(&self, addr: IpAddr) -> io::Result<()> {
        let cell = if addr.is_ipv4() { &self.v4 } else { &self.v6 };
        let family = cell
            .get_or_try_init(|| async { Family::open(addr.is_ipv4()) })
            .await?;
        let seq = family.next_seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&family.waiters).insert((addr, seq), tx);
        let _guard = WaiterGuard {
            waiters: &family.waiters,
            key: (addr, seq),
        };
        let packet = echo_request(addr.is_ipv4(), family.ident, seq);
        family.send_to(&packet, addr).await?;
        rx.await
            .map_err(|_| io::Error::other("ICMP reader stopped"))
    }
}

impl Family {
    fn open(v4: bool) -> io::Result<Arc<Family>> {
        let (domain, proto) = if v4 {
            (Domain::IPV4, Protocol::ICMPV4)
        } else {
            (Domain::IPV6, Protocol::ICMPV6)
        };
        let socket = Socket::new(domain, Type::RAW, Some(proto)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("opening a raw ICMP socket (needs CAP_NET_RAW): {e}"),
            )
        })?;
        socket.set_nonblocking(true)?;
        socket.set_cloexec(true)?;
        let socket = crate::async_socket::register(socket)?;
        let family = Arc::new(Family {
            socket,
            // Tells our replies from those to other pingers on the host.
            ident: rand::random(),
            next_seq: AtomicU16::new(rand::random()),
            waiters: Mutex::new(HashMap::new()),
        });
        tokio::spawn(read_replies(Arc::clone(&family), v4));
        Ok(family)
    }

    async fn send_to(&self, packet: &[u8], addr: IpAddr) -> io::Result<()> {
        let to = SockAddr::from(SocketAddr::new(addr, 0));
        self.socket
            .async_io(Interest::WRITABLE, |s| s.send_to(packet, &to))
            .await
            .map(drop)
    }

    /// The next datagram into `buf`: its length and sender. (nix's
    /// `recvfrom` takes an initialised buffer, socket2's does not.)
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Option<IpAddr>)> {
        let (n, from) = self
            .socket
            .async_io(Interest::READABLE, |s| {
                recvfrom::<SockaddrStorage>(s.as_raw_fd(), buf)
                    .map_err(|e| io::Error::from_raw_os_error(e as i32))
            })
            .await?;
        let from = from.and_then(|a| {
            a.as_sockaddr_in()
                .map(|a| IpAddr::from(a.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|a| IpAddr::from(a.ip())))
        });
        Ok((n, from))
    }
}

async fn read_replies(family: Arc<Family>, v4: bool) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = match family.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "ICMP health-check socket: receive failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Some((ident, seq)) = echo_reply(v4, &buf[..n])
            && ident == family.ident
            && let Some(from) = from
            && let Some(tx) = lock(&family.waiters).remove(&(from, seq))
        {
            let _ = tx.send(());
        }
    }
}

/// An echo request. ICMPv4 needs our checksum; for ICMPv6 raw sockets the
/// kernel computes it (it covers a pseudo-header we do not see).
pub fn echo_request(v4: bool, ident: u16, seq: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(ECHO_HEADER_LEN + PAYLOAD.len());
    p.push(if v4 {
        ICMP_ECHO_REQUEST
    } else {
        ICMPV6_ECHO_REQUEST
    });
    p.push(0); // code
    p.extend_from_slice(&[0, 0]); // checksum
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(PAYLOAD);
    if v4 {
        let sum = checksum::checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// (identifier, sequence) of an echo reply. A raw IPv4 socket delivers the
/// IP header too (version 4, at least 20 bytes); an ICMPv6 one does not.
pub fn echo_reply(v4: bool, packet: &[u8]) -> Option<(u16, u16)> {
    let icmp = if v4 {
        let first = *packet.first()?;
        let ihl = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || ihl < 20 {
            return None;
        }
        packet.get(ihl..)?
    } else {
        packet
    };
    let want = if v4 {
        ICMP_ECHO_REPLY
    } else {
        ICMPV6_ECHO_REPLY
    };
    if icmp.len() < ECHO_HEADER_LEN || icmp[0] != want || icmp[1] != 0 {
        return None;
    }
    Some((
        u16::from_be_bytes([icmp[4], icmp[5]]),
        u16::from_be_bytes([icmp[6], icmp[7]]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_v4_carries_a_valid_checksum() {
        let p = echo_request(true, 0x1234, 7);
        assert_eq!(checksum::checksum(&p), 0);
    }

    #[test]
    fn echo_request_layout() {
        let p = echo_request(false, 0xabcd, 0x0102);
        assert_eq!(&p[..8], &[128, 0, 0, 0, 0xab, 0xcd, 0x01, 0x02]);
        assert!(p.ends_with(PAYLOAD));
    }

    #[test]
    fn echo_reply_parsing() {
        // IPv4: 20-byte header (IHL 5), then an echo reply.
        let mut v4 = vec![0x45; 1];
        v4.extend_from_slice(&[0; 19]);
        v4.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 9]);
        assert_eq!(echo_reply(true, &v4), Some((0x1234, 9)));
        // An echo request (our own, looped back) is not a reply.
        v4[20] = ICMP_ECHO_REQUEST;
        assert_eq!(echo_reply(true, &v4), None);
        assert_eq!(echo_reply(true, &v4[..25]), None);
        // Found by the icmp_echo fuzz target: a header length below 20
        // bytes (here 0, the version 0 too) had the ICMP message read from
        // inside the IP header.
        assert_eq!(echo_reply(true, &[0, 0, 0, 0, 0, 0, 0, 0, 0x40, 1]), None);
        let mut ihl4 = vec![0x44];
        ihl4.extend_from_slice(&[0; 15]);
        ihl4.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 9]);
        assert_eq!(echo_reply(true, &ihl4), None, "IHL 4");
        ihl4[0] = 0x65;
        assert_eq!(echo_reply(true, &ihl4), None, "version 6");
        let v6 = [129, 0, 0, 0, 0, 1, 0, 2];
        assert_eq!(echo_reply(false, &v6), Some((1, 2)));
        assert_eq!(echo_reply(false, &[1, 0, 0, 0, 0, 1, 0, 2]), None);
    }
}
