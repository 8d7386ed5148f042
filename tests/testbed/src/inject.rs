//! Frames and datagrams a test writes onto a segment itself, from inside
//! one of its namespaces: a bounded flood of TCP SYNs (AF_PACKET, one
//! frame per new flow) and UDP datagrams with a source address of the
//! test's choosing (raw IP), as an attacker on the segment would send.
//! Every sender stops after the count it is given.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use std::os::fd::AsRawFd as _;

use socket2::{Domain, Protocol, Socket, Type};

use crate::frames::Frame;
use crate::netns::NetNs;

/// The MAC of `ifname` in `ns`.
pub fn mac_of(ns: &NetNs, ifname: &str) -> anyhow::Result<[u8; 6]> {
    let out = ns.ip(["-j", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j link")?;
    let text = v[0]["address"]
        .as_str()
        .with_context(|| format!("no MAC for {ifname}: {out}"))?;
    let mut mac = [0u8; 6];
    for (i, part) in text.split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(part, 16).with_context(|| format!("MAC {text}"))?;
    }
    Ok(mac)
}

/// A packet socket bound to `ifname` in the calling thread's namespace.
/// With `ethertype` it receives that protocol's frames (and sends);
/// without, it sends what it is given and receives nothing.
pub fn packet_socket(ifname: &str, ethertype: Option<u16>) -> anyhow::Result<Socket> {
    let protocol = ethertype.map(|t| Protocol::from(i32::from(t.to_be())));
    let s = Socket::new(Domain::PACKET, Type::RAW, protocol).context("AF_PACKET socket")?;
    let link = nix::ifaddrs::getifaddrs()
        .context("getifaddrs")?
        .filter(|i| i.interface_name == ifname)
        .find_map(|i| i.address?.as_link_addr().copied())
        .with_context(|| format!("no link address for {ifname}"))?;
    nix::sys::socket::bind(s.as_raw_fd(), &link).with_context(|| format!("binding to {ifname}"))?;
    Ok(s)
}

/// What a flood did.
#[derive(Debug, Clone, Copy)]
pub struct Flooded {
    pub sent: usize,
    pub took: Duration,
}

/// Sends one SYN to `dst` from each of `count` distinct (address, port)
/// pairs: addresses `first_src`, `first_src + 1`, ..., 50,000 ports each
/// (10000..60000), out of `ifname` in `ns`, framed from `src_mac` to
/// `dst_mac`, as fast as the link takes them. Each is a new flow for a
/// load balancer.
pub fn syn_flood(
    ns: &NetNs,
    ifname: &str,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    first_src: Ipv4Addr,
    dst: SocketAddr,
    count: usize,
) -> anyhow::Result<Flooded> {
    syn_flood_paced(ns, ifname, (src_mac, dst_mac), first_src, dst, count, None)
}

/// [`syn_flood`] at no more than `per_second` SYNs a second (`None`: as
/// fast as the link takes them), `macs` being (source, destination).
pub fn syn_flood_paced(
    ns: &NetNs,
    ifname: &str,
    (src_mac, dst_mac): ([u8; 6], [u8; 6]),
    first_src: Ipv4Addr,
    dst: SocketAddr,
    count: usize,
    per_second: Option<u32>,
) -> anyhow::Result<Flooded> {
    const PORTS: u32 = 50_000;
    let IpAddr::V4(dst_ip) = dst.ip() else {
        anyhow::bail!("the flood is IPv4");
    };
    let ifname = ifname.to_owned();
    ns.in_ns(move || {
        let s = packet_socket(&ifname, None)?;
        // Built first, so that the sending runs at the link's pace.
        let frames: Vec<Vec<u8>> = (0..count as u32)
            .map(|i| {
                let src = Ipv4Addr::from(u32::from(first_src) + i / PORTS);
                let sport = 10_000 + (i % PORTS) as u16;
                Frame::new(src_mac, dst_mac, src, dst_ip).tcp(sport, dst.port(), "S", &[])
            })
            .collect();
        let start = Instant::now();
        let mut sent = 0;
        for frame in &frames {
            if let Some(rate) = per_second {
                // Sent on schedule, a millisecond's worth at a time.
                let due = start + Duration::from_secs_f64(sent as f64 / f64::from(rate.max(1)));
                let now = Instant::now();
                if due > now + Duration::from_millis(1) {
                    std::thread::sleep(due - now);
                }
            }
            // A full device queue is the one reason to retry.
            loop {
                match s.send(frame) {
                    Ok(_) => break,
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    Err(e) => return Err(e).context("sending a SYN"),
                }
            }
            sent += 1;
        }
        Ok(Flooded {
            sent,
            took: start.elapsed(),
        })
    })
}

/// Sends `payload` as a UDP datagram from `src` to `dst` out of `ns`,
/// whatever addresses `ns` has (a raw IP socket writes the header):
/// what a host on the segment can do to impersonate another.
pub fn spoofed_udp(
    ns: &NetNs,
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
) -> anyhow::Result<()> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        anyhow::bail!("spoofed datagrams are IPv4");
    };
    let builder =
        etherparse::PacketBuilder::ipv4(s.octets(), d.octets(), 64).udp(src.port(), dst.port());
    let mut packet = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut packet, payload)
        .context("building the datagram")?;
    ns.in_ns(move || {
        // IPPROTO_RAW implies IP_HDRINCL: the packet goes out as written.
        let sock = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )
        .context("raw socket")?;
        sock.send_to(&packet, &SocketAddr::new(d.into(), 0).into())
            .context("sending the spoofed datagram")?;
        Ok(())
    })
}

/// A packet socket bound to `ifname` in a namespace, opened once: sends
/// prebuilt frames one `send` each, from whichever thread calls it (the
/// socket stays on its namespace's interface), so that a caller can time
/// a single frame without a thread hop or a socket set-up in the way.
pub struct FrameSender {
    socket: Socket,
}

impl FrameSender {
    /// Opens the socket on `ifname` in `ns`.
    pub fn open(ns: &NetNs, ifname: &str) -> anyhow::Result<FrameSender> {
        let ifname = ifname.to_owned();
        ns.in_ns(move || {
            Ok(FrameSender {
                socket: packet_socket(&ifname, None)?,
            })
        })
    }

    /// Sends `frame` (retrying while the device queue is full).
    pub fn send(&self, frame: &[u8]) -> anyhow::Result<()> {
        loop {
            match self.socket.send(frame) {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(e) => return Err(e).context("sending a frame"),
            }
        }
    }
}
