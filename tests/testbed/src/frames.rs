//! Test frames, all built with etherparse, and the BPF_PROG_TEST_RUN
//! driver: the one frame builder of the tests and the benchmarks.
//! Checksums are etherparse's own (its builder computes them, and
//! [`assert_checksums`] recomputes them with its `calc_*` functions), so
//! nothing here shares code with the data plane's incremental updates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    EtherType, Ethernet2Header, Icmpv4Type, Icmpv6Type, IpHeaders, Ipv4Header, Ipv4HeaderSlice,
    Ipv4Options, Ipv6Header, LinkSlice, NetSlice, PacketBuilder, PacketBuilderStep, SlicedPacket,
    TransportSlice, VlanId, icmpv4::DestUnreachableHeader,
};
use lb_common::FlowKey;

pub type Mac = [u8; 6];

pub const LB_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];
pub const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 2);
pub const ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0xfe);
pub const ETH: usize = 14;
/// A small request-sized payload.
pub const REQUEST: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
const DNS_QUERY: &[u8] = b"\x12\x34 a DNS-ish query";

pub fn words4(a: Ipv4Addr) -> [u32; 4] {
    [u32::from_ne_bytes(a.octets()), 0, 0, 0]
}

pub fn words6(a: Ipv6Addr) -> [u32; 4] {
    let o = a.octets();
    std::array::from_fn(|i| u32::from_ne_bytes(o[i * 4..i * 4 + 4].try_into().unwrap()))
}

pub fn key4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey {
        src: words4(src),
        dst: words4(dst),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto,
        _pad: [0; 3],
    }
}

pub fn key6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey {
        src: words6(src),
        dst: words6(dst),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto,
        _pad: [0; 3],
    }
}

/// The transport of a quoted packet (see [`Frame::too_big`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp,
    Udp,
}

/// The headers of a frame below its transport: Ethernet (optionally with
/// an 802.1Q tag) and IPv4 (TTL 64, DF, id 0, optionally with options) or
/// IPv6 (hop limit 64), by the family of the addresses. Its methods write
/// whole frames.
#[derive(Clone, Debug)]
pub struct Frame {
    src_mac: Mac,
    dst_mac: Mac,
    src: IpAddr,
    dst: IpAddr,
    vlan: Option<u16>,
    ipv4_options: Vec<u8>,
    l4_checksum: bool,
}

impl Frame {
    pub fn new(
        src_mac: Mac,
        dst_mac: Mac,
        src: impl Into<IpAddr>,
        dst: impl Into<IpAddr>,
    ) -> Frame {
        let (src, dst) = (src.into(), dst.into());
        assert_eq!(src.is_ipv4(), dst.is_ipv4(), "{src} and {dst}: one family");
        Frame {
            src_mac,
            dst_mac,
            src,
            dst,
            vlan: None,
            ipv4_options: Vec::new(),
            l4_checksum: true,
        }
    }

    /// From the test client ([`CLIENT_MAC`], [`CLIENT4`] or [`CLIENT6`]) to
    /// `dst` through the load balancer ([`LB_MAC`]).
    pub fn from_client(dst: impl Into<IpAddr>) -> Frame {
        let dst = dst.into();
        let src: IpAddr = if dst.is_ipv4() {
            CLIENT4.into()
        } else {
            CLIENT6.into()
        };
        Frame::new(CLIENT_MAC, LB_MAC, src, dst)
    }

    /// With an 802.1Q tag of VLAN `id`.
    pub fn vlan(mut self, id: u16) -> Frame {
        self.vlan = Some(id);
        self
    }

    /// With IPv4 options (a multiple of 4 bytes, at most 40).
    pub fn ipv4_options(mut self, options: &[u8]) -> Frame {
        assert!(self.src.is_ipv4(), "IPv4 options on an IPv6 frame");
        self.ipv4_options = options.to_vec();
        self
    }

    /// With the TCP or UDP checksum left 0: "none" for IPv4 UDP; wrong
    /// otherwise, for programs that never check it (the benchmarks).
    pub fn no_l4_checksum(mut self) -> Frame {
        self.l4_checksum = false;
        self
    }

    fn link_len(&self) -> usize {
        ETH + if self.vlan.is_some() { 4 } else { 0 }
    }

    fn ip_len(&self) -> usize {
        match self.src {
            IpAddr::V4(_) => 20 + self.ipv4_options.len(),
            IpAddr::V6(_) => 40,
        }
    }

    fn ip_headers(&self) -> IpHeaders {
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => IpHeaders::Ipv4(
                Ipv4Header {
                    source: src.octets(),
                    destination: dst.octets(),
                    time_to_live: 64,
                    options: Ipv4Options::try_from(&self.ipv4_options[..])
                        .expect("valid IPv4 options"),
                    ..Default::default()
                },
                Default::default(),
            ),
            (IpAddr::V6(src), IpAddr::V6(dst)) => IpHeaders::Ipv6(
                Ipv6Header {
                    source: src.octets(),
                    destination: dst.octets(),
                    hop_limit: 64,
                    ..Default::default()
                },
                Default::default(),
            ),
            _ => unreachable!("checked in Frame::new"),
        }
    }

    fn builder(&self) -> PacketBuilderStep<IpHeaders> {
        let eth = PacketBuilder::ethernet2(self.src_mac, self.dst_mac);
        match self.vlan {
            Some(id) => eth
                .single_vlan(VlanId::try_new(id).expect("VLAN id"))
                .ip(self.ip_headers()),
            None => eth.ip(self.ip_headers()),
        }
    }

    /// Zeroes the L4 checksum at `offset` in the transport header, if asked.
    fn finish(&self, mut frame: Vec<u8>, offset: usize) -> Vec<u8> {
        if !self.l4_checksum {
            let at = self.link_len() + self.ip_len() + offset;
            frame[at..at + 2].copy_from_slice(&[0, 0]);
        }
        frame
    }

    /// A TCP segment with `flags` (any of `S`, `A`, `F`, `R`; `A` acks 1),
    /// sequence number 1000 and window 64240.
    pub fn tcp(&self, sport: u16, dport: u16, flags: &str, payload: &[u8]) -> Vec<u8> {
        let mut b = self.builder().tcp(sport, dport, 1000, 64240);
        for f in flags.chars() {
            b = match f {
                'S' => b.syn(),
                'A' => b.ack(1),
                'F' => b.fin(),
                'R' => b.rst(),
                _ => panic!("unknown TCP flag {f}"),
            };
        }
        let mut f = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut f, payload).unwrap();
        self.finish(f, 16)
    }

    pub fn udp(&self, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let b = self.builder().udp(sport, dport);
        let mut f = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut f, payload).unwrap();
        self.finish(f, 6)
    }

    /// An ICMP echo request (id 1, sequence 1).
    pub fn icmp_echo(&self, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        self.builder()
            .icmpv4_echo_request(1, 1)
            .write(&mut f, payload)
            .unwrap();
        f
    }

    /// What a router (the source) sends the destination when the
    /// destination's packet to `to` was too big: IPv4 "fragmentation
    /// needed" (next-hop MTU 1400) or IPv6 "packet too big" (MTU 1280),
    /// quoting the IP header and the first 8 bytes of a TCP (sequence 1)
    /// or UDP packet with 1,400 bytes of payload.
    pub fn too_big(&self, to: impl Into<IpAddr>, l4: L4, sport: u16, dport: u16) -> Vec<u8> {
        self.too_big_quoting(self.dst, to, l4, sport, dport)
    }

    /// As [`Frame::too_big`], quoting a packet from `from` (not
    /// necessarily this frame's destination) to `to`.
    pub fn too_big_quoting(
        &self,
        from: impl Into<IpAddr>,
        to: impl Into<IpAddr>,
        l4: L4,
        sport: u16,
        dport: u16,
    ) -> Vec<u8> {
        let quoted_frame = Frame::new([0; 6], [0; 6], from, to);
        let b = PacketBuilder::ip(quoted_frame.ip_headers());
        let mut quoted = Vec::new();
        match l4 {
            L4::Tcp => b
                .tcp(sport, dport, 1, 1000)
                .ack(1)
                .write(&mut quoted, &[0u8; 1400]),
            L4::Udp => b.udp(sport, dport).write(&mut quoted, &[0u8; 1400]),
        }
        .unwrap();
        quoted.truncate(quoted_frame.ip_len() + 8);
        let mut f = Vec::new();
        match self.src {
            IpAddr::V4(_) => self
                .builder()
                .icmpv4(Icmpv4Type::DestinationUnreachable(
                    DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
                ))
                .write(&mut f, &quoted),
            IpAddr::V6(_) => self
                .builder()
                .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1280 })
                .write(&mut f, &quoted),
        }
        .unwrap();
        f
    }
}

/// A TCP SYN from the client to `dst` with a request-sized payload.
pub fn tcp4(dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    Frame::from_client(dst).tcp(sport, dport, "S", REQUEST)
}

/// A TCP segment from the client with the given flags (`"S"`, `"A"`,
/// `"FA"`, `"R"`).
pub fn tcp4_flags(dst: Ipv4Addr, sport: u16, dport: u16, flags: &str) -> Vec<u8> {
    Frame::from_client(dst).tcp(sport, dport, flags, b"data")
}

/// A DNS-sized UDP datagram from the client.
pub fn udp6(dst: Ipv6Addr, sport: u16, dport: u16) -> Vec<u8> {
    Frame::from_client(dst).udp(sport, dport, DNS_QUERY)
}

/// What a router sends back when the VIP's packet `from → to` (TCP) was
/// too big: an ICMP "fragmentation needed" to the VIP.
pub fn frag_needed4(from: Ipv4Addr, to: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    Frame::new(CLIENT_MAC, LB_MAC, ROUTER4, from).too_big(to, L4::Tcp, sport, dport)
}

/// IPv6 "packet too big" for the VIP's packet `from → to`.
pub fn packet_too_big6(from: Ipv6Addr, to: Ipv6Addr, l4: L4, sport: u16, dport: u16) -> Vec<u8> {
    Frame::new(CLIENT_MAC, LB_MAC, ROUTER6, from).too_big(to, l4, sport, dport)
}

/// A broadcast ARP request from the client for `target`. etherparse 0.16
/// writes the Ethernet header; it has no ARP type, so the body (RFC 826)
/// is spelled out.
pub fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::new();
    Ethernet2Header {
        source: CLIENT_MAC,
        destination: [0xff; 6],
        ether_type: EtherType::ARP,
    }
    .write(&mut f)
    .unwrap();
    // Ethernet, IPv4, address lengths 6 and 4, request.
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&CLIENT4.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// An IPv6 neighbour solicitation from the client for `target` (RFC 4861
/// 4.3: to the solicited-node multicast address, hop limit 255, with the
/// client's link-layer address as an option).
pub fn neighbour_solicitation(target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    );
    let g = group.octets();
    let dst_mac = [0x33, 0x33, g[12], g[13], g[14], g[15]];
    let mut body = t.to_vec();
    body.extend_from_slice(&[1, 1]); // source link-layer address, 8 bytes
    body.extend_from_slice(&CLIENT_MAC);
    let ip = Ipv6Header {
        source: CLIENT6.octets(),
        destination: g,
        hop_limit: 255,
        ..Default::default()
    };
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, dst_mac)
        .ip(IpHeaders::Ipv6(ip, Default::default()))
        .icmpv6(Icmpv6Type::Unknown {
            type_u8: 135,
            code_u8: 0,
            bytes5to8: [0; 4],
        })
        .write(&mut f, &body)
        .unwrap();
    f
}

/// `frame` (IPv4, untagged) with its IHL set to 4: a malformed header.
pub fn with_bad_ihl(mut frame: Vec<u8>) -> Vec<u8> {
    frame[ETH] = 0x44;
    frame
}

/// Parses `frame` with etherparse and recomputes every checksum it
/// carries with etherparse's `calc_*` functions: IPv4 header, TCP, UDP
/// (an IPv4 UDP checksum of 0 means none), ICMPv4 and ICMPv6, and the
/// IPv4 header an ICMPv4 error quotes. Panics, naming the checksum, on
/// the first one that differs.
pub fn assert_checksums(frame: &[u8]) {
    let p = SlicedPacket::from_ethernet(frame).expect("well-formed frame");
    assert!(
        matches!(p.link, Some(LinkSlice::Ethernet2(_))),
        "not Ethernet II"
    );
    let (src, dst) = match p.net.as_ref().expect("an IP packet") {
        NetSlice::Ipv4(ip) => {
            let h = ip.header().to_header();
            assert_eq!(
                h.header_checksum,
                h.calc_header_checksum(),
                "IPv4 header checksum"
            );
            (IpAddr::from(h.source), IpAddr::from(h.destination))
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header();
            (
                IpAddr::from(h.source_addr()),
                IpAddr::from(h.destination_addr()),
            )
        }
    };
    let v6 = |a: IpAddr| match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => panic!("IPv6 transport in IPv4"),
    };
    let v4 = |a: IpAddr| match a {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => panic!("IPv4 transport in IPv6"),
    };
    match p.transport.as_ref().expect("a transport header") {
        TransportSlice::Tcp(t) => {
            let want = match src {
                IpAddr::V4(_) => t.calc_checksum_ipv4(v4(src), v4(dst)),
                IpAddr::V6(_) => t.calc_checksum_ipv6(v6(src), v6(dst)),
            };
            assert_eq!(t.checksum(), want.unwrap(), "TCP checksum");
        }
        TransportSlice::Udp(u) => {
            let h = u.to_header();
            let want = match src {
                IpAddr::V4(_) if h.checksum == 0 => 0,
                IpAddr::V4(_) => h
                    .calc_checksum_ipv4_raw(v4(src), v4(dst), u.payload())
                    .unwrap(),
                IpAddr::V6(_) => h
                    .calc_checksum_ipv6_raw(v6(src), v6(dst), u.payload())
                    .unwrap(),
            };
            assert_eq!(h.checksum, want, "UDP checksum");
        }
        TransportSlice::Icmpv4(icmp) => {
            let want = icmp.icmp_type().calc_checksum(icmp.payload());
            assert_eq!(icmp.checksum(), want, "ICMP checksum");
            if let Icmpv4Type::DestinationUnreachable(_) = icmp.icmp_type() {
                let quoted = Ipv4HeaderSlice::from_slice(icmp.payload())
                    .expect("a quoted IPv4 header")
                    .to_header();
                assert_eq!(
                    quoted.header_checksum,
                    quoted.calc_header_checksum(),
                    "quoted IPv4 header checksum"
                );
            }
        }
        TransportSlice::Icmpv6(icmp) => {
            let want = icmp
                .icmp_type()
                .calc_checksum(v6(src), v6(dst), icmp.payload())
                .unwrap();
            assert_eq!(icmp.checksum(), want, "ICMPv6 checksum");
        }
    }
}

/// A frame as hex, to compare frames with readable failures.
pub fn to_hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect()
}

/// A frame from hex (literal frames in tests); whitespace is ignored.
pub fn from_hex(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits
        .chunks(2)
        .map(|d| u8::from_str_radix(std::str::from_utf8(d).unwrap(), 16).expect("hex digit"))
        .collect()
}

/// Runs `input` through `prog` with BPF_PROG_TEST_RUN, as if received on
/// interface `ifindex` (`None`: the kernel's default, loopback). Returns
/// the verdict and the output frame.
pub fn run_xdp(prog: &aya::programs::Xdp, input: &[u8], ifindex: Option<u32>) -> (u32, Vec<u8>) {
    use aya::programs::{TestRun as _, TestRunOptions};
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex.
    let ctx: Option<Vec<u8>> = ifindex.map(|i| {
        [0, input.len() as u32, 0, i, 0, 0]
            .iter()
            .flat_map(|w: &u32| w.to_ne_bytes())
            .collect()
    });
    let mut out = vec![0u8; input.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            ctx_in: ctx.as_deref(),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}
