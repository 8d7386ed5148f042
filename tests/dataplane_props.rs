//! The data-plane property test: a million generated and mutated frames
//! through the real XDP program with BPF_PROG_TEST_RUN, each checked
//! against a reference classifier written here with etherparse.
//!
//! Frames: valid flows to DSR and NAT VIPs (IPv4 and IPv6, TCP and UDP)
//! with their header fields at edge values, 802.1Q/802.1ad tags, IPv4
//! options, IPv6 extension headers, TCP options; NAT replies; ICMP
//! errors quoting random flows; ARP and neighbour solicitations; other
//! protocols and random bytes; and all of those truncated, bit-flipped,
//! with a field set to an edge value or bytes overwritten.
//!
//! Checked on every frame: the verdict and the output frame are the
//! reference's, byte for byte, so a frame is forwarded only if it parses
//! as a VIP flow (or a NAT reply or an ICMP error about one), a DSR
//! forward differs from its input only in the MAC addresses, a NAT
//! forward carries exactly the translated addresses and ports, and each
//! checksum it rewrites keeps its input's validity (a valid one stays
//! valid, checked with etherparse; a broken one stays broken by as much);
//! a NAT forward leaves the reverse entry its replies need. Checked per
//! batch of frames, from the program's own counters: `rx = pass +
//! forward + drop` (packets and bytes), each drop counted under the one
//! reason the reference gives, the VIP, backend and NAT counters. A batch
//! whose counters differ is run again frame by frame to name the frame.
//!
//! The reference's rules (what "parses as a VIP flow" means):
//! - Ethernet II with at most one 802.1Q or 802.1ad tag; anything else,
//!   and anything that is not IPv4, IPv6 or an ARP request, goes to the
//!   kernel untouched.
//! - IPv4: a header etherparse cannot read is dropped (`ipv4_truncated`
//!   when cut short, `ipv4_bad_header` for a wrong version or IHL), to a
//!   VIP or not. IPv6: a header cut short is dropped (`ipv6_truncated`);
//!   a version other than 6 goes to the kernel, which drops it (the
//!   drop-reason table has no free slot for a reason of its own).
//! - TCP or UDP to a VIP address: an IPv4 fragment is dropped
//!   (`fragment`), a transport header etherparse cannot read (TCP: with
//!   its options) is dropped (`l4_truncated`); the same to other
//!   addresses goes to the kernel. IPv6 extension headers go to the
//!   kernel. The IP and UDP length fields and the checksums are not
//!   checked: DSR hands the packet to the backend's stack as it came, NAT
//!   rewrites what it translates and leaves the rest to the backend.
//! - A flow to a VIP (exact port first, then an all-ports VIP) goes to the
//!   backend `lb_common::flow_hash` (or `source_hash`) picks in the ring
//!   the controller installed; a VIP without backends drops
//!   (`no_backend`). A TCP/UDP packet to no VIP whose key `NAT_REVERSE`
//!   holds is a NAT reply, translated back to the VIP.
//! - ICMP "fragmentation needed" (type 3 code 4) quoting an option-less
//!   IPv4 TCP/UDP header with its ports, and ICMPv6 "packet too big"
//!   (type 2, any code: RFC 4443 says the receiver ignores it) quoting an
//!   IPv6 TCP/UDP header with its ports go to the backend of the client's
//!   flow they quote, whatever their outer destination (NAT rewrites it to
//!   the backend's); other ICMP goes to the kernel, as do ICMP fragments.
//! - An ARP request or a neighbour solicitation for a VIP address is
//!   dropped (`orphan_neigh`): the test runs with the control-plane lease
//!   run out; for other addresses it goes to the kernel.
//! - A NAT forward asks the kernel's FIB of the lab (`nat_lab`): to a
//!   neighbour it knows, out of the NIC the route names (`XDP_TX` back
//!   out of the same NIC, `XDP_REDIRECT` to the other); an IP length over
//!   the 1500-byte MTU, a route that is not unicast, a link-local,
//!   multicast or loopback IPv6 address, or no route: translated, to the
//!   kernel; a neighbour it does not know: translated, to the kernel,
//!   counted `nat_no_neigh`.
//!
//! Deterministic: frame `i` is generated from the seed and `i` alone.
//! `XLB_PROPS_SEED` (decimal or 0x-hex) changes the seed, `XLB_PROPS_FRAMES`
//! the number of frames; `XLB_PROPS_REPLAY=i` runs frames 0..=i (the
//! state frame i met) and prints frame i in full; `XLB_PROPS_HEX` (with
//! `XLB_PROPS_NIC=c0|s0`) runs one given frame on a fresh program. A
//! failure prints the seed, the frame index, the frame in hex and the
//! replay command. Needs root.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use etherparse::{
    EtherType, Ethernet2Header, Ethernet2HeaderSlice, Icmpv4Header, Icmpv4Slice, Icmpv4Type,
    Icmpv6Header, Icmpv6Slice, Icmpv6Type, IpFragOffset, IpNumber, Ipv4Dscp, Ipv4Ecn, Ipv4Header,
    Ipv4HeaderSlice, Ipv4Options, Ipv6Extensions, Ipv6FlowLabel, Ipv6FragmentHeader, Ipv6Header,
    Ipv6HeaderSlice, Ipv6RawExtHeader, Ipv6RoutingExtensions, SingleVlanHeader,
    SingleVlanHeaderSlice, TcpHeader, TcpHeaderSlice, UdpHeader, UdpHeaderSlice, VlanId, VlanPcp,
    err,
};
use lb_common::{
    BackendInfo, Counters, FlowKey, IPPROTO_TCP, IPPROTO_UDP, LB_F_NAT, LB_F_OWN_MAC, MODE_NAT,
    VIP_F_SOURCE_AFFINITY, VipKey, addr_bytes, ct, drop, flow_hash, global, source_hash,
};
use lb_user::{config::Config, maps::MapStore};
use xlb_testbed::{
    config::{Backend, Vip, XlbConfig},
    fakes::FakeNeighbours,
    frames::{LB_MAC, Mac, assert_checksums, from_hex, to_hex},
    nat_lab::{self, Lab, Neighbour, Nic, S0_MAC},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const DEFAULT_SEED: u64 = 0x786c_6270_726f_7073;
const DEFAULT_FRAMES: u64 = 1_000_000;
/// Frames per counter check.
const BATCH: u64 = 1000;
/// The lab's veths' MTU (the kernel's default).
const MTU: u32 = 1500;

// ---------------------------------------------------------------------
// The lab: addresses, VIPs, backends, neighbours.

const CLIENTS: u8 = 8;
const CLIENT_PORT0: u16 = 40000;
const CLIENT_PORTS: u16 = 32;
const ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0xfe);

fn client4(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 2 + i)
}

fn client6(i: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 2 + u16::from(i))
}

fn client_mac(i: u8) -> Mac {
    [0x02, 0, 0, 0, 0x01, i]
}

fn ip4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse().unwrap())
}

fn ip6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse().unwrap())
}

/// One VIP of the lab: backends by (address, port; 0: the VIP's).
#[derive(Clone, Copy)]
struct VipRow {
    name: &'static str,
    addr: &'static str,
    port: u16,
    udp: bool,
    nat: bool,
    affinity: bool,
    backends: &'static [(&'static str, u16)],
}

impl VipRow {
    const fn dsr(
        name: &'static str,
        addr: &'static str,
        port: u16,
        backends: &'static [(&'static str, u16)],
    ) -> VipRow {
        VipRow {
            name,
            addr,
            port,
            udp: false,
            nat: false,
            affinity: false,
            backends,
        }
    }

    const fn nat(
        name: &'static str,
        addr: &'static str,
        port: u16,
        backends: &'static [(&'static str, u16)],
    ) -> VipRow {
        VipRow {
            nat: true,
            ..VipRow::dsr(name, addr, port, backends)
        }
    }

    const fn udp(self) -> VipRow {
        VipRow { udp: true, ..self }
    }

    const fn affinity(self) -> VipRow {
        VipRow {
            affinity: true,
            ..self
        }
    }
}

/// DSR VIPs on the client side's prefixes (two whose only backend has no
/// MAC: no backend); NAT VIPs with their backends behind s0, one on c0's
/// own segment, one whose neighbour the kernel does not know. Each NAT
/// backend (address, port) is in one VIP only, so that each reply key
/// has one VIP.
const VIPS: &[VipRow] = &[
    VipRow::dsr(
        "web",
        "198.18.0.100",
        80,
        &[("198.18.0.11", 0), ("198.18.0.12", 0), ("198.18.0.13", 0)],
    ),
    VipRow::dsr(
        "any",
        "198.18.0.200",
        0,
        &[("198.18.0.14", 0), ("198.18.0.15", 0)],
    ),
    VipRow::dsr(
        "sticky",
        "198.18.0.101",
        443,
        &[("198.18.0.16", 0), ("198.18.0.17", 0)],
    )
    .affinity(),
    VipRow::dsr("empty", "198.18.0.102", 80, &[("198.18.0.99", 0)]),
    VipRow::dsr(
        "dns6",
        "fd00:18::100",
        53,
        &[("fd00:18::11", 0), ("fd00:18::12", 0), ("fd00:18::13", 0)],
    )
    .udp(),
    VipRow::dsr(
        "web6",
        "fd00:18::101",
        80,
        &[("fd00:18::14", 0), ("fd00:18::15", 0)],
    ),
    VipRow::dsr("empty6", "fd00:18::102", 53, &[("fd00:18::99", 0)]).udp(),
    VipRow::nat(
        "nweb",
        "198.18.0.110",
        80,
        &[("198.18.1.11", 8080), ("198.18.1.12", 8080)],
    ),
    VipRow::nat("ndns", "198.18.0.110", 53, &[("198.18.1.13", 5353)]).udp(),
    VipRow::nat("nany", "198.18.0.111", 0, &[("198.18.1.14", 0)]).udp(),
    VipRow::nat("onearm", "198.18.0.112", 80, &[("198.18.0.21", 0)]),
    VipRow::nat("noneigh", "198.18.0.113", 80, &[("198.18.1.15", 0)]),
    VipRow::nat(
        "nweb6",
        "fd00:18::110",
        80,
        &[("fd00:19::11", 8080), ("fd00:19::12", 8080)],
    ),
    VipRow::nat("ndns6", "fd00:18::110", 53, &[("fd00:19::13", 5353)]).udp(),
];

/// DSR backends without a MAC (their VIP has no backend).
const NO_MAC: [&str; 2] = ["198.18.0.99", "fd00:18::99"];
/// NAT backends the kernel has no neighbour entry for.
const NO_NEIGH: [&str; 1] = ["198.18.1.15"];

fn backend_mac(addr: IpAddr) -> Mac {
    let (b, _) = addr_bytes(addr);
    let last = match addr {
        IpAddr::V4(_) => b[3],
        IpAddr::V6(_) => b[15],
    };
    let side = if addr.is_ipv4() { 0x10 } else { 0x16 };
    [0x02, 0, 0, 0, side, last]
}

fn config() -> Config {
    let mut cfg = XlbConfig::new("c0").server_interface("s0");
    for row in VIPS {
        let addr: IpAddr = row.addr.parse().unwrap();
        let mut v = Vip::new(row.name, addr, row.port).ring_size(13);
        if row.udp {
            v = v.udp();
        }
        if row.nat {
            v = v.nat();
        }
        if row.affinity {
            v = v.source_affinity();
        }
        for &(b, bport) in row.backends {
            let mut b = Backend::new(b.parse::<IpAddr>().unwrap());
            if bport != 0 {
                b = b.port(bport);
            }
            v = v.backend(b);
        }
        cfg = cfg.vip(v);
    }
    cfg.parse().expect("valid config")
}

/// The kernel's neighbours: the clients, the NAT backends but
/// [`NO_NEIGH`]'s.
fn lab_neighbours() -> Vec<Neighbour> {
    let mut n = Vec::new();
    for i in 0..CLIENTS {
        for addr in [IpAddr::V4(client4(i)), IpAddr::V6(client6(i))] {
            n.push(Neighbour {
                addr,
                mac: client_mac(i),
                nic: Nic::C0,
            });
        }
    }
    for row in VIPS.iter().filter(|r| r.nat) {
        for &(b, _) in row.backends {
            if NO_NEIGH.contains(&b) {
                continue;
            }
            let addr: IpAddr = b.parse().unwrap();
            n.push(Neighbour {
                addr,
                mac: backend_mac(addr),
                nic: route(addr).expect("a backend on a lab prefix"),
            });
        }
    }
    n
}

/// The DSR backends' MACs, as the controller's neighbour table.
fn dsr_macs() -> FakeNeighbours {
    let mut f = FakeNeighbours::default();
    for row in VIPS.iter().filter(|r| !r.nat) {
        for &(b, _) in row.backends {
            if !NO_MAC.contains(&b) {
                let addr: IpAddr = b.parse().unwrap();
                f.table.insert(addr, backend_mac(addr));
            }
        }
    }
    f
}

/// The NIC of the lab's prefix `addr` is on, if any.
fn route(addr: IpAddr) -> Option<Nic> {
    match addr {
        IpAddr::V4(a) => match a.octets() {
            [198, 18, 0, _] => Some(Nic::C0),
            [198, 18, 1, _] => Some(Nic::S0),
            _ => None,
        },
        IpAddr::V6(a) => match a.segments() {
            [0xfd00, 0x18, 0, 0, ..] => Some(Nic::C0),
            [0xfd00, 0x19, 0, 0, ..] => Some(Nic::S0),
            _ => None,
        },
    }
}

fn nic_mac(nic: Nic) -> Mac {
    match nic {
        Nic::C0 => LB_MAC,
        Nic::S0 => S0_MAC,
    }
}

// ---------------------------------------------------------------------
// A small deterministic generator (SplitMix64).

struct Rng(u64);

impl Rng {
    fn for_frame(seed: u64, index: u64) -> Rng {
        let mut r = Rng(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: usize, hi_inclusive: usize) -> usize {
        lo + self.below((hi_inclusive - lo + 1) as u64) as usize
    }

    /// True with probability `percent` %.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn u8(&mut self) -> u8 {
        self.next() as u8
    }

    fn u16(&mut self) -> u16 {
        self.next() as u16
    }

    fn u32(&mut self) -> u32 {
        self.next() as u32
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            let k = (n - v.len()).min(8);
            v.extend_from_slice(&self.next().to_le_bytes()[..k]);
        }
        v
    }

    /// One of `edges` mostly, else any value.
    fn edge_u16(&mut self, edges: &[u16]) -> u16 {
        if self.chance(80) {
            *self.pick(edges)
        } else {
            self.u16()
        }
    }

    fn edge_u8(&mut self, edges: &[u8]) -> u8 {
        if self.chance(80) {
            *self.pick(edges)
        } else {
            self.u8()
        }
    }

    fn edge_u32(&mut self) -> u32 {
        if self.chance(60) {
            *self.pick(&[0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, 0xffff_ffff])
        } else {
            self.u32()
        }
    }
}

const PORT_EDGES: [u16; 8] = [0, 1, 53, 80, 1023, 1024, 65534, 65535];

// ---------------------------------------------------------------------
// The model of the lab the reference and the generator share: the VIPs as
// the controller installed them.

#[derive(Clone, Debug)]
struct VipModel {
    addr: IpAddr,
    port: u16,
    proto: u8,
    nat: bool,
    affinity: bool,
    index: u32,
    /// Backend ids by ring slot (empty: no backend).
    ring: Vec<u32>,
    /// The backend ids in this VIP's ring.
    backends: Vec<u32>,
}

struct World {
    vips: Vec<VipModel>,
    by_key: HashMap<(IpAddr, u16, u8), usize>,
    addrs: HashSet<IpAddr>,
    backends: HashMap<u32, BackendInfo>,
    neighbours: HashMap<IpAddr, (Mac, Nic)>,
    lb_mac: Mac,
    own_mac_only: bool,
}

fn ip_of(b: &BackendInfo) -> IpAddr {
    if b.family == lb_common::FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(b.addr[0], b.addr[1], b.addr[2], b.addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(b.addr))
    }
}

impl World {
    /// The VIPs as installed: their rings and backends read from the maps.
    fn read(lab: &Lab) -> World {
        let m = lab.lb.maps();
        let cfg = m.config().unwrap();
        assert_ne!(cfg.flags & LB_F_NAT, 0, "a node with NAT VIPs");
        let mut vips = Vec::new();
        let mut backends = HashMap::new();
        for (key, meta) in m.vips().unwrap() {
            let addr = match key.family {
                lb_common::FAMILY_V4 => IpAddr::V4(Ipv4Addr::new(
                    key.addr[0],
                    key.addr[1],
                    key.addr[2],
                    key.addr[3],
                )),
                _ => IpAddr::V6(Ipv6Addr::from(key.addr)),
            };
            let port = u16::from_be(key.port);
            let ring = m.ring(meta.index).unwrap().unwrap_or_default();
            let mut ids: Vec<u32> = ring.clone();
            ids.sort();
            ids.dedup();
            for &id in &ids {
                backends.insert(id, m.backend(id).unwrap());
            }
            vips.push(VipModel {
                addr,
                port,
                proto: key.proto,
                nat: meta.mode == MODE_NAT,
                affinity: meta.flags & VIP_F_SOURCE_AFFINITY != 0,
                index: meta.index,
                ring,
                backends: ids,
            });
        }
        vips.sort_by_key(|v| v.index);
        assert_eq!(vips.len(), VIPS.len(), "every VIP installed");
        let by_key = vips
            .iter()
            .enumerate()
            .map(|(i, v)| ((v.addr, v.port, v.proto), i))
            .collect();
        let addrs = vips.iter().map(|v| v.addr).collect();
        let neighbours = lab_neighbours()
            .into_iter()
            .map(|n| (n.addr, (n.mac, n.nic)))
            .collect();
        World {
            vips,
            by_key,
            addrs,
            backends,
            neighbours,
            lb_mac: cfg.mac,
            own_mac_only: cfg.flags & LB_F_OWN_MAC != 0,
        }
    }

    /// The VIP a packet to (`dst`, `dport`, `proto`) belongs to: its
    /// exact port's, else the address's all-ports VIP.
    fn vip(&self, dst: IpAddr, dport: u16, proto: u8) -> Option<&VipModel> {
        self.by_key
            .get(&(dst, dport, proto))
            .or_else(|| self.by_key.get(&(dst, 0, proto)))
            .map(|&i| &self.vips[i])
    }

    /// The backend the ring gives flow `key` of `vip`.
    fn backend(&self, vip: &VipModel, key: &FlowKey) -> Option<(u32, &BackendInfo)> {
        if vip.ring.is_empty() {
            return None;
        }
        let hash = if vip.affinity {
            source_hash(&key.src)
        } else {
            flow_hash(key)
        };
        let id = vip.ring[(hash % vip.ring.len() as u32) as usize];
        self.backends.get(&id).map(|b| (id, b))
    }
}

// ---------------------------------------------------------------------
// The generator.

/// Header offsets of a generated frame, for mutations that aim at fields.
#[derive(Clone, Copy, Default)]
struct Layout {
    ethertype: usize,
    l3: Option<(usize, bool)>,
    l4: Option<(usize, u8)>,
    /// The quoted IP header of an ICMP error.
    quote: Option<(usize, bool)>,
}

struct Generated {
    frame: Vec<u8>,
    nic: Nic,
    /// Built, not mutated: every checksum in it is right.
    pristine: bool,
    base: &'static str,
}

struct Gen<'a> {
    rng: Rng,
    world: &'a World,
}

/// TCP for UDP and UDP for TCP.
fn other_transport(proto: u8) -> u8 {
    if proto == IPPROTO_TCP {
        IPPROTO_UDP
    } else {
        IPPROTO_TCP
    }
}

fn ip_addr_pair(src: IpAddr, dst: IpAddr) -> (IpAddr, IpAddr) {
    assert_eq!(src.is_ipv4(), dst.is_ipv4());
    (src, dst)
}

impl Gen<'_> {
    fn frame(&mut self) -> Generated {
        let r = self.rng.below(100);
        let (mut frame, nic, layout, base) = match r {
            0..=34 => self.vip_flow(),
            35..=46 => self.nat_reply(),
            47..=60 => self.icmp_error(),
            61..=64 => self.neighbour(),
            65..=91 => self.other_ip(),
            92..=95 => {
                let n = self.rng.range(14, 200);
                (
                    self.rng.bytes(n),
                    Nic::C0,
                    Layout::default(),
                    "random bytes",
                )
            }
            _ => self.random_after_ethernet(),
        };
        let pristine = !self.rng.chance(55);
        if !pristine {
            let n = self.rng.range(1, 3);
            for _ in 0..n {
                self.mutate(&mut frame, &layout);
            }
        }
        Generated {
            frame,
            nic,
            pristine,
            base,
        }
    }

    fn client(&mut self, v4: bool) -> (IpAddr, Mac) {
        let i = self.rng.below(u64::from(CLIENTS)) as u8;
        if self.rng.chance(5) {
            let odd: IpAddr = if v4 {
                *self.rng.pick(&[
                    ip4("0.0.0.0"),
                    ip4("255.255.255.255"),
                    ip4("198.18.0.0"),
                    ip4("198.18.0.1"),
                    ip4("198.18.0.255"),
                    ip4("198.18.0.77"),
                    ip4("127.0.0.1"),
                    ip4("224.0.0.1"),
                    ip4("198.19.0.2"),
                ])
            } else {
                *self.rng.pick(&[
                    ip6("::"),
                    ip6("::1"),
                    ip6("fe80::2"),
                    ip6("ff02::1"),
                    ip6("fd00:18::"),
                    ip6("fd00:18::1"),
                    ip6("fd00:18::77"),
                    ip6("fd00:99::2"),
                ])
            };
            return (odd, client_mac(i));
        }
        let a = if v4 {
            IpAddr::V4(client4(i))
        } else {
            IpAddr::V6(client6(i))
        };
        (a, client_mac(i))
    }

    fn client_port(&mut self) -> u16 {
        match self.rng.below(10) {
            0 => *self.rng.pick(&PORT_EDGES),
            1 => self.rng.u16(),
            _ => CLIENT_PORT0 + self.rng.below(u64::from(CLIENT_PORTS)) as u16,
        }
    }

    /// A destination port for `vip`: its own, or for an all-ports VIP one
    /// of a few (so that replies and errors meet the flows made earlier).
    fn vip_port(&mut self, vip: &VipModel) -> u16 {
        if vip.port != 0 {
            return vip.port;
        }
        if self.rng.chance(80) {
            *self.rng.pick(&[1, 22, 53, 80, 443, 8443, 65535])
        } else {
            self.rng.u16()
        }
    }

    fn payload(&mut self) -> Vec<u8> {
        let n = match self.rng.below(100) {
            0..=69 => self.rng.range(0, 40),
            70..=94 => self.rng.range(41, 600),
            _ => self.rng.range(1400, 1480),
        };
        self.rng.bytes(n)
    }

    fn ipv4_header(&mut self, src: Ipv4Addr, dst: Ipv4Addr, options: bool) -> Ipv4Header {
        let rng = &mut self.rng;
        let mut h = Ipv4Header {
            source: src.octets(),
            destination: dst.octets(),
            time_to_live: rng.edge_u8(&[0, 1, 64, 255]),
            identification: rng.edge_u16(&[0, 1, 0xffff]),
            dont_fragment: rng.chance(70),
            dscp: Ipv4Dscp::try_new(rng.u8() & 0x3f).unwrap(),
            ecn: Ipv4Ecn::try_new(rng.u8() & 3).unwrap(),
            ..Default::default()
        };
        if rng.chance(3) {
            h.more_fragments = rng.chance(50);
            let off = rng.edge_u16(&[0, 1, 0x1fff]) & 0x1fff;
            h.fragment_offset = IpFragOffset::try_new(off).unwrap();
        }
        if options && rng.chance(15) {
            let n = 4 * rng.range(1, 10);
            let mut o = rng.bytes(n);
            if rng.chance(50) {
                // Well-formed: NOPs and an end of options.
                o.fill(1);
                o[n - 1] = 0;
            }
            h.options = Ipv4Options::try_from(&o[..]).unwrap();
        }
        h
    }

    fn ipv6_header(&mut self, src: Ipv6Addr, dst: Ipv6Addr) -> Ipv6Header {
        let rng = &mut self.rng;
        Ipv6Header {
            traffic_class: rng.edge_u8(&[0, 0xff]),
            flow_label: Ipv6FlowLabel::try_new(rng.edge_u32() & 0xf_ffff).unwrap(),
            hop_limit: rng.edge_u8(&[0, 1, 64, 255]),
            source: src.octets(),
            destination: dst.octets(),
            ..Default::default()
        }
    }

    fn ipv6_extensions(&mut self) -> Ipv6Extensions {
        // Next headers are placeholders (59, none) the builder replaces;
        // 0 would read as a hop-by-hop header to write.
        let pad = |rng: &mut Rng| {
            let mut p = vec![0u8; 6 + 8 * rng.range(0, 2)];
            // PadN over the whole header.
            p[0] = 1;
            p[1] = (p.len() - 2) as u8;
            Ipv6RawExtHeader::new_raw(IpNumber(59), &p).unwrap()
        };
        let mut e = Ipv6Extensions::default();
        let mut any = false;
        while !any {
            if self.rng.chance(40) {
                e.hop_by_hop_options = Some(pad(&mut self.rng));
                any = true;
            }
            if self.rng.chance(30) {
                e.destination_options = Some(pad(&mut self.rng));
                any = true;
            }
            if self.rng.chance(20) {
                let r = Ipv6RawExtHeader::new_raw(IpNumber(59), &[0, 0, 0, 0, 0, 0]).unwrap();
                e.routing = Some(Ipv6RoutingExtensions {
                    routing: r,
                    final_destination_options: None,
                });
                any = true;
            }
            if self.rng.chance(30) {
                let off = IpFragOffset::try_new(self.rng.edge_u16(&[0, 1]) & 0x1fff).unwrap();
                e.fragment = Some(Ipv6FragmentHeader::new(
                    IpNumber(59),
                    off,
                    self.rng.chance(50),
                    self.rng.u32(),
                ));
                any = true;
            }
        }
        e
    }

    fn ip_headers(&mut self, src: IpAddr, dst: IpAddr, v6_ext: bool) -> (Ip, usize) {
        match ip_addr_pair(src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let h = self.ipv4_header(s, d, true);
                let len = h.header_len();
                (Ip::V4(h), len)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let h = self.ipv6_header(s, d);
                let exts = v6_ext.then(|| Box::new(self.ipv6_extensions()));
                let len = 40 + exts.as_ref().map_or(0, |e| e.header_len());
                (Ip::V6(h, exts), len)
            }
            _ => unreachable!(),
        }
    }

    fn tcp_header(&mut self, sport: u16, dport: u16) -> TcpHeader {
        let rng = &mut self.rng;
        let mut t = TcpHeader::new(sport, dport, rng.edge_u32(), rng.edge_u16(&[0, 1, 0xffff]));
        let flags = match rng.below(20) {
            0..=9 => 0x02,
            10..=15 => 0x10,
            16..=17 => 0x11,
            18 => 0x14,
            _ => rng.u8(),
        };
        t.fin = flags & 0x01 != 0;
        t.syn = flags & 0x02 != 0;
        t.rst = flags & 0x04 != 0;
        t.psh = flags & 0x08 != 0;
        t.ack = flags & 0x10 != 0;
        t.urg = flags & 0x20 != 0;
        t.ece = flags & 0x40 != 0;
        t.cwr = flags & 0x80 != 0;
        t.acknowledgment_number = if t.ack { rng.edge_u32() } else { 0 };
        t.urgent_pointer = if t.urg { rng.u16() } else { 0 };
        if rng.chance(15) {
            let n = 4 * rng.range(1, 10);
            t.set_options_raw(&rng.bytes(n)).unwrap();
        }
        t
    }

    /// An Ethernet frame (maybe tagged) around `ip` and its transport.
    /// Returns it and the length of its link header.
    fn build(&mut self, macs: (Mac, Mac), ip: Ip, l4: L4Spec, payload: &[u8]) -> (Vec<u8>, usize) {
        let packet = ip_packet(ip, l4, payload);
        let et = if packet[0] >> 4 == 4 {
            EtherType::IPV4
        } else {
            EtherType::IPV6
        };
        let rng = &mut self.rng;
        let tag = |rng: &mut Rng, ether_type| SingleVlanHeader {
            pcp: VlanPcp::try_new(rng.u8() & 7).unwrap(),
            drop_eligible_indicator: rng.chance(10),
            vlan_id: VlanId::try_new(rng.edge_u16(&[0, 1, 100, 4095]) & 0xfff).unwrap(),
            ether_type,
        };
        // No tag, 802.1Q, 802.1ad, or two (the program takes one).
        let tags = match rng.below(100) {
            0..=4 => vec![(EtherType::VLAN_TAGGED_FRAME, tag(rng, et))],
            5..=6 => vec![(EtherType::PROVIDER_BRIDGING, tag(rng, et))],
            7 => vec![
                (
                    EtherType::PROVIDER_BRIDGING,
                    tag(rng, EtherType::VLAN_TAGGED_FRAME),
                ),
                (EtherType::VLAN_TAGGED_FRAME, tag(rng, et)),
            ],
            _ => Vec::new(),
        };
        let mut f = Vec::with_capacity(22 + packet.len());
        let first = tags.first().map_or(et, |t| t.0);
        Ethernet2Header {
            destination: macs.1,
            source: macs.0,
            ether_type: first,
        }
        .write(&mut f)
        .unwrap();
        for (_, t) in &tags {
            t.write(&mut f).unwrap();
        }
        let link = f.len();
        f.extend(packet);
        (f, link)
    }

    fn l4_for(&mut self, proto: u8, sport: u16, dport: u16) -> L4Spec {
        if proto == IPPROTO_TCP {
            L4Spec::Tcp(self.tcp_header(sport, dport))
        } else {
            L4Spec::Udp(sport, dport)
        }
    }

    /// A TCP or UDP packet `src:sport → dst:dport`, with the offsets of its
    /// headers.
    #[allow(clippy::too_many_arguments)]
    fn transport(
        &mut self,
        macs: (Mac, Mac),
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        sport: u16,
        dport: u16,
        v6_ext: bool,
    ) -> (Vec<u8>, Layout) {
        let (ip, ip_len) = self.ip_headers(src, dst, v6_ext);
        let l4 = self.l4_for(proto, sport, dport);
        let payload = self.payload();
        let (mut f, link) = self.build(macs, ip, l4, &payload);
        let l4_at = link + ip_len;
        if proto == IPPROTO_UDP && src.is_ipv4() && self.rng.chance(10) {
            // No checksum: valid for IPv4.
            f[l4_at + 6..l4_at + 8].copy_from_slice(&[0, 0]);
        }
        let layout = Layout {
            ethertype: link - 2,
            l3: Some((link, src.is_ipv4())),
            l4: Some((l4_at, proto)),
            quote: None,
        };
        (f, layout)
    }

    fn dst_mac(&mut self) -> Mac {
        match self.rng.below(40) {
            0 => [0xff; 6],
            1 => {
                let mut m: Mac = self.rng.bytes(6).try_into().unwrap();
                m[0] &= 0xfe;
                m
            }
            _ => self.world.lb_mac,
        }
    }

    /// Where a frame arrives: the client side `client_percent` % of the
    /// time, else the server side.
    fn ingress(&mut self, client_percent: u64) -> Nic {
        if self.rng.chance(client_percent) {
            Nic::C0
        } else {
            Nic::S0
        }
    }

    fn vip_flow(&mut self) -> (Vec<u8>, Nic, Layout, &'static str) {
        let vip = self.rng.pick(&self.world.vips).clone();
        let (src, mac) = self.client(vip.addr.is_ipv4());
        let mut proto = vip.proto;
        if self.rng.chance(5) {
            proto = other_transport(proto);
        }
        let mut dport = self.vip_port(&vip);
        if self.rng.chance(5) {
            dport = dport.wrapping_add(*self.rng.pick(&[1, u16::MAX]));
        }
        let sport = self.client_port();
        let macs = (mac, self.dst_mac());
        let (f, layout) = self.transport(macs, src, vip.addr, proto, sport, dport, false);
        let nic = self.ingress(90);
        (f, nic, layout, "VIP flow")
    }

    fn nat_reply(&mut self) -> (Vec<u8>, Nic, Layout, &'static str) {
        let nat: Vec<&VipModel> = self.world.vips.iter().filter(|v| v.nat).collect();
        let vip = (*self.rng.pick(&nat)).clone();
        let (client, _) = self.client(vip.addr.is_ipv4());
        let cport = self.client_port();
        let vport = self.vip_port(&vip);
        let key = FlowKey::new(client, vip.addr, cport, vport, vip.proto);
        // The backend the flow went to, mostly.
        let id = match self.world.backend(&vip, &key) {
            Some((id, _)) if self.rng.chance(85) => id,
            _ => *self.rng.pick(&vip.backends),
        };
        let b = self.world.backends[&id];
        let baddr = ip_of(&b);
        let bport = match u16::from_be(b.port) {
            0 => vport,
            p => p,
        };
        let nic = route(baddr).unwrap();
        let macs = (backend_mac(baddr), nic_mac(nic));
        let (f, layout) = self.transport(macs, baddr, client, vip.proto, bport, cport, false);
        (f, nic, layout, "NAT reply")
    }

    fn icmp_error(&mut self) -> (Vec<u8>, Nic, Layout, &'static str) {
        let vip = self.rng.pick(&self.world.vips).clone();
        let v4 = vip.addr.is_ipv4();
        let (client, _) = self.client(v4);
        let cport = self.client_port();
        let vport = self.vip_port(&vip);
        let proto = if self.rng.chance(90) {
            vip.proto
        } else {
            *self.rng.pick(&[IPPROTO_TCP, IPPROTO_UDP, 1, 58])
        };
        // The quoted packet: VIP:port → client:port, cut after 8 bytes of
        // its transport header (RFC 792), or elsewhere.
        let (qip, qip_len) = match (vip.addr, client) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let options = self.rng.chance(10);
                let h = self.ipv4_header(s, d, options);
                let n = h.header_len();
                (Ip::V4(h), n)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => (Ip::V6(self.ipv6_header(s, d), None), 40),
            _ => unreachable!(),
        };
        let n = self.rng.range(0, 64);
        let body = self.rng.bytes(n);
        let l4 = match proto {
            IPPROTO_TCP => L4Spec::Tcp(self.tcp_header(vport, cport)),
            IPPROTO_UDP => L4Spec::Udp(vport, cport),
            p => L4Spec::Raw(IpNumber(p)),
        };
        let mut quoted = ip_packet(qip, l4, &body);
        let cut = match self.rng.below(10) {
            0..=7 => qip_len + 8,
            8 => quoted.len(),
            _ => self.rng.range(0, qip_len + 8),
        };
        quoted.truncate(cut.min(quoted.len()));
        let outer_dst = if self.rng.chance(85) {
            vip.addr
        } else {
            *self.rng.pick(&[
                client,
                if v4 {
                    ip4("198.18.0.1")
                } else {
                    ip6("fd00:18::1")
                },
            ])
        };
        let outer_src = if v4 {
            IpAddr::V4(ROUTER4)
        } else {
            IpAddr::V6(ROUTER6)
        };
        let (ip, ip_len) = self.ip_headers(outer_src, outer_dst, false);
        let (ty, code) = if self.rng.chance(80) {
            if v4 { (3, 4) } else { (2, 0) }
        } else if v4 {
            *self.rng.pick(&[
                (3, 1),
                (3, 3),
                (3, 13),
                (11, 0),
                (12, 0),
                (4, 0),
                (5, 1),
                (0, 0),
            ])
        } else {
            *self
                .rng
                .pick(&[(1, 4), (3, 0), (4, 0), (2, 1), (2, 255), (128, 0), (135, 0)])
        };
        let rest = match self.rng.below(4) {
            0 => [0, 0, 0x05, 0x78],
            1 => [0; 4],
            _ => [0, 0, 0xff, 0xff],
        };
        let l4 = if v4 {
            L4Spec::Icmp4(Icmpv4Type::Unknown {
                type_u8: ty,
                code_u8: code,
                bytes5to8: rest,
            })
        } else {
            L4Spec::Icmp6(Icmpv6Type::Unknown {
                type_u8: ty,
                code_u8: code,
                bytes5to8: rest,
            })
        };
        let macs = (client_mac(0), self.dst_mac());
        let (f, link) = self.build(macs, ip, l4, &quoted);
        let icmp = link + ip_len;
        let layout = Layout {
            ethertype: link - 2,
            l3: Some((link, v4)),
            l4: Some((icmp, if v4 { 1 } else { 58 })),
            quote: Some((icmp + 8, v4)),
        };
        let nic = self.ingress(90);
        (f, nic, layout, "ICMP error")
    }

    fn neighbour(&mut self) -> (Vec<u8>, Nic, Layout, &'static str) {
        let vip = self.rng.pick(&self.world.vips).addr;
        let v4 = self.rng.chance(50);
        let target = match (v4, self.rng.chance(60)) {
            (true, true) if vip.is_ipv4() => vip,
            (false, true) if vip.is_ipv6() => vip,
            (true, _) => ip4("198.18.0.1"),
            (false, _) => ip6("fd00:18::1"),
        };
        let mut f = match target {
            IpAddr::V4(t) => xlb_testbed::frames::arp_request(t),
            IpAddr::V6(t) => xlb_testbed::frames::neighbour_solicitation(t),
        };
        let layout = if v4 {
            Layout {
                ethertype: 12,
                ..Default::default()
            }
        } else {
            Layout {
                ethertype: 12,
                l3: Some((14, false)),
                l4: Some((54, 58)),
                quote: None,
            }
        };
        if self.rng.chance(20) {
            // A reply (ARP op 2, neighbour advertisement) instead.
            if v4 {
                f[21] = 2;
            } else {
                f[54] = 136;
            }
        }
        (f, Nic::C0, layout, "neighbour query")
    }

    fn other_ip(&mut self) -> (Vec<u8>, Nic, Layout, &'static str) {
        let vip = self.rng.pick(&self.world.vips).clone();
        let v4 = vip.addr.is_ipv4();
        let (src, mac) = self.client(v4);
        let macs = (mac, self.dst_mac());
        let nic = self.ingress(70);
        match self.rng.below(4) {
            0 => {
                // TCP/UDP to an address that carries no VIP.
                let dst = if v4 {
                    *self.rng.pick(&[
                        ip4("198.18.0.1"),
                        ip4("198.18.1.1"),
                        ip4("198.18.0.103"),
                        ip4("198.19.255.255"),
                        IpAddr::V4(client4(1)),
                    ])
                } else {
                    *self.rng.pick(&[
                        ip6("fd00:18::1"),
                        ip6("fd00:18::103"),
                        ip6("fd00:19::1"),
                        IpAddr::V6(client6(1)),
                    ])
                };
                let proto = *self.rng.pick(&[IPPROTO_TCP, IPPROTO_UDP]);
                let (sport, dport) = (self.client_port(), *self.rng.pick(&PORT_EDGES));
                let (f, l) = self.transport(macs, src, dst, proto, sport, dport, false);
                (f, nic, l, "TCP/UDP to no VIP")
            }
            1 => {
                // Another protocol to a VIP address.
                let p = *self.rng.pick(&[0u8, 2, 4, 41, 47, 50, 132, 255, 58, 1]);
                let (ip, ip_len) = self.ip_headers(src, vip.addr, false);
                let payload = self.payload();
                let (f, link) = self.build(macs, ip, L4Spec::Raw(IpNumber(p)), &payload);
                let l = Layout {
                    ethertype: link - 2,
                    l3: Some((link, v4)),
                    l4: Some((link + ip_len, p)),
                    quote: None,
                };
                (f, nic, l, "other protocol")
            }
            2 if !v4 => {
                // IPv6 extension headers before a VIP's transport.
                let dport = self.vip_port(&vip);
                let sport = self.client_port();
                let (f, l) = self.transport(macs, src, vip.addr, vip.proto, sport, dport, true);
                (f, nic, l, "IPv6 extension headers")
            }
            _ => {
                // A VIP address, the wrong port or protocol.
                let proto = if self.rng.chance(50) {
                    vip.proto
                } else {
                    other_transport(vip.proto)
                };
                let dport = *self.rng.pick(&PORT_EDGES);
                let sport = self.client_port();
                let (f, l) = self.transport(macs, src, vip.addr, proto, sport, dport, false);
                (f, nic, l, "VIP address, other port")
            }
        }
    }

    fn random_after_ethernet(&mut self) -> (Vec<u8>, Nic, Layout, &'static str) {
        let mut f = Vec::new();
        f.extend_from_slice(&self.world.lb_mac);
        f.extend_from_slice(&client_mac(0));
        let et = self
            .rng
            .edge_u16(&[0x0800, 0x86dd, 0x8100, 0x88a8, 0x0806, 0x9100]);
        f.extend_from_slice(&et.to_be_bytes());
        let n = self.rng.range(0, 100);
        f.extend(self.rng.bytes(n));
        (
            f,
            Nic::C0,
            Layout {
                ethertype: 12,
                ..Default::default()
            },
            "random after Ethernet",
        )
    }

    /// One mutation: a cut, bit flips, a header field set to an edge
    /// value, bytes overwritten, or bytes appended.
    fn mutate(&mut self, f: &mut Vec<u8>, l: &Layout) {
        let rng = &mut self.rng;
        match rng.below(100) {
            0..=24 if f.len() > 14 => {
                let mut cuts = vec![l.ethertype + 2];
                if let Some((a, _)) = l.l3 {
                    cuts.extend([a + 1, a + 19, a + 20, a + 39, a + 40]);
                }
                if let Some((a, _)) = l.l4 {
                    cuts.extend([a - 1, a, a + 1, a + 4, a + 7, a + 8, a + 19, a + 20, a + 27]);
                }
                if let Some((a, _)) = l.quote {
                    cuts.extend([
                        a + 19,
                        a + 20,
                        a + 23,
                        a + 24,
                        a + 39,
                        a + 40,
                        a + 43,
                        a + 44,
                    ]);
                }
                let cut = if rng.chance(60) {
                    *rng.pick(&cuts)
                } else {
                    rng.range(14, f.len() - 1)
                };
                f.truncate(cut.clamp(14, f.len()));
            }
            25..=59 => {
                let n = rng.range(1, 3);
                let hot = f.len().min(l.l4.map_or(64, |(a, _)| a + 24));
                for _ in 0..n {
                    let at = if rng.chance(70) {
                        rng.range(0, hot - 1)
                    } else {
                        rng.range(0, f.len() - 1)
                    };
                    f[at] ^= 1 << rng.below(8);
                }
            }
            60..=84 => {
                let fields = fields(l);
                let picked = (!fields.is_empty()).then(|| *rng.pick(&fields));
                if let Some((at, size, edges)) = picked
                    && at + size <= f.len()
                {
                    let v = rng.edge_u16(edges);
                    if size == 1 {
                        f[at] = v as u8;
                    } else {
                        f[at..at + 2].copy_from_slice(&v.to_be_bytes());
                    }
                }
            }
            85..=94 => {
                let n = rng.range(1, 8).min(f.len());
                let at = rng.range(0, f.len() - n);
                for b in &mut f[at..at + n] {
                    *b = rng.u8();
                }
            }
            _ => {
                let n = rng.range(1, 64);
                f.extend(rng.bytes(n));
            }
        }
    }
}

/// An IP header to write: IPv4, or IPv6 with its extension headers.
enum Ip {
    V4(Ipv4Header),
    V6(Ipv6Header, Option<Box<Ipv6Extensions>>),
}

/// An IP packet: `ip` around `l4` and `payload`, with the lengths and
/// checksums etherparse computes.
fn ip_packet(ip: Ip, l4: L4Spec, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    let proto = match (&ip, l4) {
        (Ip::V4(h), L4Spec::Tcp(mut tcp)) => {
            tcp.checksum = tcp.calc_checksum_ipv4(h, payload).unwrap();
            tcp.write(&mut t).unwrap();
            IpNumber::TCP
        }
        (Ip::V6(h, _), L4Spec::Tcp(mut tcp)) => {
            tcp.checksum = tcp.calc_checksum_ipv6(h, payload).unwrap();
            tcp.write(&mut t).unwrap();
            IpNumber::TCP
        }
        (Ip::V4(h), L4Spec::Udp(s, d)) => {
            let u = UdpHeader::with_ipv4_checksum(s, d, h, payload).unwrap();
            u.write(&mut t).unwrap();
            IpNumber::UDP
        }
        (Ip::V6(h, _), L4Spec::Udp(s, d)) => {
            let u = UdpHeader::with_ipv6_checksum(s, d, h, payload).unwrap();
            u.write(&mut t).unwrap();
            IpNumber::UDP
        }
        (_, L4Spec::Icmp4(ty)) => {
            Icmpv4Header::with_checksum(ty, payload)
                .write(&mut t)
                .unwrap();
            IpNumber::ICMP
        }
        (Ip::V6(h, _), L4Spec::Icmp6(ty)) => {
            let i = Icmpv6Header::with_checksum(ty, h.source, h.destination, payload).unwrap();
            i.write(&mut t).unwrap();
            IpNumber::IPV6_ICMP
        }
        (Ip::V4(_), L4Spec::Icmp6(_)) => unreachable!("ICMPv6 in IPv4"),
        (_, L4Spec::Raw(p)) => p,
    };
    let upper = t.len() + payload.len();
    let mut f = Vec::with_capacity(80 + upper);
    match ip {
        Ip::V4(mut h) => {
            h.protocol = proto;
            h.set_payload_len(upper).unwrap();
            // `write` computes the header checksum.
            h.write(&mut f).unwrap();
        }
        Ip::V6(mut h, None) => {
            h.next_header = proto;
            h.set_payload_length(upper).unwrap();
            h.write(&mut f).unwrap();
        }
        Ip::V6(mut h, Some(mut exts)) => {
            h.next_header = exts.set_next_headers(proto);
            h.set_payload_length(exts.header_len() + upper).unwrap();
            h.write(&mut f).unwrap();
            exts.write(&mut f, h.next_header).unwrap();
        }
    }
    f.extend(t);
    f.extend(payload);
    f
}

enum L4Spec {
    Tcp(TcpHeader),
    Udp(u16, u16),
    Icmp4(Icmpv4Type),
    Icmp6(Icmpv6Type),
    Raw(IpNumber),
}

/// (offset, size 1 or 2, edge values) of the header fields of a layout.
fn fields(l: &Layout) -> Vec<(usize, usize, &'static [u16])> {
    const ETHERTYPES: &[u16] = &[0x0800, 0x86dd, 0x8100, 0x88a8, 0x0806, 0, 0xffff];
    const V4_VER_IHL: &[u16] = &[0x45, 0x44, 0x40, 0x4f, 0x46, 0x55, 0x65, 0x00, 0xff];
    const LEN16: &[u16] = &[0, 1, 20, 40, 1500, 1501, 0x7fff, 0xffff];
    const FRAG: &[u16] = &[0, 0x4000, 0x2000, 0x0001, 0x1fff, 0x3fff, 0xffff];
    const PROTOS: &[u16] = &[6, 17, 1, 58, 0, 43, 44, 47, 59, 60, 255];
    const V6_VER: &[u16] = &[0x60, 0x40, 0x00, 0x6f, 0xf0, 0x70];
    const BYTE: &[u16] = &[0, 1, 0x7f, 0x80, 0xff];
    const DOFF: &[u16] = &[0x50, 0x40, 0x00, 0xf0, 0x60, 0xa0, 0x5f];
    const TCP_FLAGS: &[u16] = &[0, 0x01, 0x02, 0x04, 0x10, 0x11, 0x12, 0x14, 0xff];
    const CSUM: &[u16] = &[0, 0xffff, 1];
    const ICMP_TYPES: &[u16] = &[0, 2, 3, 4, 8, 11, 128, 135, 136, 255];
    const ICMP_CODES: &[u16] = &[0, 1, 3, 4, 255];
    let mut f: Vec<(usize, usize, &'static [u16])> = vec![(l.ethertype, 2, ETHERTYPES)];
    if let Some((a, v4)) = l.l3 {
        if v4 {
            f.extend([
                (a, 1, V4_VER_IHL),
                (a + 2, 2, LEN16),
                (a + 6, 2, FRAG),
                (a + 8, 1, BYTE),
                (a + 9, 1, PROTOS),
                (a + 10, 2, CSUM),
                (a + 12, 2, &PORT_EDGES[..]),
                (a + 16, 2, &PORT_EDGES[..]),
            ]);
        } else {
            f.extend([
                (a, 1, V6_VER),
                (a + 4, 2, LEN16),
                (a + 6, 1, PROTOS),
                (a + 7, 1, BYTE),
                (a + 8, 2, &PORT_EDGES[..]),
                (a + 24, 2, &PORT_EDGES[..]),
            ]);
        }
    }
    match l.l4 {
        Some((a, 6)) => f.extend([
            (a, 2, &PORT_EDGES[..]),
            (a + 2, 2, &PORT_EDGES[..]),
            (a + 12, 1, DOFF),
            (a + 13, 1, TCP_FLAGS),
            (a + 16, 2, CSUM),
        ]),
        Some((a, 17)) => f.extend([
            (a, 2, &PORT_EDGES[..]),
            (a + 2, 2, &PORT_EDGES[..]),
            (a + 4, 2, LEN16),
            (a + 6, 2, CSUM),
        ]),
        Some((a, 1 | 58)) => {
            f.extend([(a, 1, ICMP_TYPES), (a + 1, 1, ICMP_CODES), (a + 2, 2, CSUM)])
        }
        _ => {}
    }
    if let Some((q, v4)) = l.quote {
        if v4 {
            f.extend([
                (q, 1, V4_VER_IHL),
                (q + 9, 1, PROTOS),
                (q + 12, 2, &PORT_EDGES[..]),
                (q + 20, 2, &PORT_EDGES[..]),
                (q + 22, 2, &PORT_EDGES[..]),
            ]);
        } else {
            f.extend([
                (q, 1, V6_VER),
                (q + 6, 1, PROTOS),
                (q + 8, 2, &PORT_EDGES[..]),
                (q + 40, 2, &PORT_EDGES[..]),
                (q + 42, 2, &PORT_EDGES[..]),
            ]);
        }
    }
    f
}

fn generate(world: &World, seed: u64, index: u64) -> Generated {
    let mut g = Gen {
        rng: Rng::for_frame(seed, index),
        world,
    };
    g.frame()
}

// ---------------------------------------------------------------------
// The reference classifier.

/// A checksum a NAT rewrite updates, and what it covers.
#[derive(Clone, Copy, Debug)]
enum Csum {
    /// The IPv4 header at this offset.
    Ipv4Header(usize),
    /// TCP or UDP at `l4` (checksum at `field`), its pseudo-header from
    /// the IP header at `l3`.
    Transport {
        l3: usize,
        l4: usize,
        field: usize,
        udp: bool,
        v4: bool,
    },
    /// ICMPv4 at this offset.
    Icmp4(usize),
    /// ICMPv6 at `l4`, its pseudo-header from the IPv6 header at `l3`.
    Icmp6 { l3: usize, l4: usize },
}

impl Csum {
    fn field(&self) -> usize {
        match *self {
            Csum::Ipv4Header(at) => at + 10,
            Csum::Transport { field, .. } => field,
            Csum::Icmp4(at) | Csum::Icmp6 { l4: at, .. } => at + 2,
        }
    }
}

/// RFC 1071 sum of `b` (odd length: padded with a zero byte), not folded
/// to 16 bits yet.
fn sum16(b: &[u8]) -> u64 {
    b.chunks(2)
        .map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// The one's-complement sum a checksum over what `c` covers comes to
/// (all ones when it is right), folded, with 0 and 0xffff the same.
fn residual(f: &[u8], c: Csum) -> u16 {
    let pseudo = |l3: usize, v4: bool, proto: u8, len: usize| -> u64 {
        let (a, n) = if v4 { (l3 + 12, 8) } else { (l3 + 8, 32) };
        sum16(&f[a..a + n]) + u64::from(proto) + len as u64
    };
    let mut s = match c {
        Csum::Ipv4Header(at) => {
            let ihl = usize::from(f[at] & 0xf) * 4;
            sum16(&f[at..at + ihl])
        }
        Csum::Transport {
            l3, l4, udp, v4, ..
        } => {
            let proto = if udp { IPPROTO_UDP } else { IPPROTO_TCP };
            pseudo(l3, v4, proto, f.len() - l4) + sum16(&f[l4..])
        }
        Csum::Icmp4(at) => sum16(&f[at..]),
        Csum::Icmp6 { l3, l4 } => pseudo(l3, false, 58, f.len() - l4) + sum16(&f[l4..]),
    };
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    (s as u16) % 0xffff
}

/// What the program must do with a frame.
#[derive(Clone, Debug)]
struct Expect {
    what: &'static str,
    verdict: u32,
    /// The output frame; its [`Expect::csums`] fields are whatever the
    /// program wrote, checked by their residuals instead.
    output: Vec<u8>,
    csums: Vec<Csum>,
    drop: Option<u32>,
    /// Connection-table counters it moves by one (`ct::*`).
    events: Vec<u32>,
    vip: Option<u32>,
    backend: Option<u32>,
    /// The reverse entry a NAT forward must leave.
    reverse: Option<(FlowKey, VipKey)>,
}

impl Expect {
    fn untouched(what: &'static str, f: &[u8], verdict: u32, drop: Option<u32>) -> Expect {
        Expect {
            what,
            verdict,
            output: f.to_vec(),
            csums: Vec::new(),
            drop,
            events: Vec::new(),
            vip: None,
            backend: None,
            reverse: None,
        }
    }
}

fn pass(what: &'static str, f: &[u8]) -> Expect {
    Expect::untouched(what, f, XDP_PASS, None)
}

fn dropped(what: &'static str, f: &[u8], reason: u32) -> Expect {
    Expect::untouched(what, f, XDP_DROP, Some(reason))
}

/// Where a packet leaves by the lab's FIB.
enum Fib {
    Sent {
        nic: Nic,
        mac: Mac,
    },
    NoNeigh,
    /// Not forwarded: no route, not unicast, over the MTU.
    Refused,
}

/// The IPv6 addresses the kernel never forwards (`rt6_need_strict`):
/// multicast, link-local, loopback.
fn strict6(a: IpAddr) -> bool {
    match a {
        IpAddr::V6(a) => a.is_multicast() || a.is_loopback() || a.segments()[0] & 0xffc0 == 0xfe80,
        IpAddr::V4(_) => false,
    }
}

/// A flow as the reference parsed it.
struct Parsed<'a> {
    f: &'a [u8],
    nic: Nic,
    l3: usize,
    l4: usize,
    v4: bool,
    src: IpAddr,
    dst: IpAddr,
    /// The IP length the program hands the FIB (IPv4 total length, IPv6
    /// payload length + 40).
    ip_len: u32,
}

impl World {
    fn classify(&self, f: &[u8], nic: Nic, lab: &Lab) -> Expect {
        let Ok(eth) = Ethernet2HeaderSlice::from_slice(f) else {
            return pass("no Ethernet header", f);
        };
        let (mut et, mut l3) = (eth.ether_type(), 14);
        if et == EtherType::VLAN_TAGGED_FRAME || et == EtherType::PROVIDER_BRIDGING {
            let Ok(tag) = SingleVlanHeaderSlice::from_slice(&f[14..]) else {
                return pass("a cut VLAN tag", f);
            };
            et = tag.ether_type();
            l3 = 18;
        }
        match et {
            EtherType::IPV4 => self.ipv4(f, nic, l3, lab),
            EtherType::IPV6 => self.ipv6(f, nic, l3, lab),
            EtherType::ARP => self.arp(f, l3),
            _ => pass("not IP", f),
        }
    }

    fn arp(&self, f: &[u8], l3: usize) -> Expect {
        let a = &f[l3..];
        if a.len() < 28 || a[..8] != [0, 1, 0x08, 0, 6, 4, 0, 1] {
            return pass("ARP, not a request", f);
        }
        let target = IpAddr::V4(Ipv4Addr::new(a[24], a[25], a[26], a[27]));
        self.neighbour_query(f, target)
    }

    fn neighbour_query(&self, f: &[u8], target: IpAddr) -> Expect {
        if self.addrs.contains(&target) {
            dropped("who-has a VIP, lease run out", f, drop::ORPHAN_NEIGH)
        } else {
            pass("who-has another address", f)
        }
    }

    fn ipv4(&self, f: &[u8], nic: Nic, l3: usize, lab: &Lab) -> Expect {
        use err::ipv4::HeaderSliceError;
        let ip = match Ipv4HeaderSlice::from_slice(&f[l3..]) {
            Ok(ip) => ip,
            Err(HeaderSliceError::Len(_)) => return dropped("IPv4 cut", f, drop::IPV4_TRUNCATED),
            Err(HeaderSliceError::Content(_)) => {
                return dropped("IPv4 bad header", f, drop::IPV4_BAD_HEADER);
            }
        };
        let p = Parsed {
            f,
            nic,
            l3,
            l4: l3 + ip.slice().len(),
            v4: true,
            src: IpAddr::V4(ip.source_addr()),
            dst: IpAddr::V4(ip.destination_addr()),
            ip_len: u32::from(ip.total_len()),
        };
        let fragment = ip.more_fragments() || ip.fragments_offset().value() != 0;
        match ip.protocol() {
            IpNumber::ICMP if fragment => pass("an ICMP fragment", f),
            IpNumber::ICMP => self.icmp4(&p, lab),
            IpNumber::TCP | IpNumber::UDP if fragment => {
                self.if_vip_address(&p, "IPv4 fragment", drop::FRAGMENT)
            }
            IpNumber::TCP => self.tcp_udp(&p, IPPROTO_TCP, lab),
            IpNumber::UDP => self.tcp_udp(&p, IPPROTO_UDP, lab),
            _ => pass("IPv4, another protocol", f),
        }
    }

    fn ipv6(&self, f: &[u8], nic: Nic, l3: usize, lab: &Lab) -> Expect {
        use err::ipv6::HeaderSliceError;
        let ip = match Ipv6HeaderSlice::from_slice(&f[l3..]) {
            Ok(ip) => ip,
            Err(HeaderSliceError::Len(_)) => return dropped("IPv6 cut", f, drop::IPV6_TRUNCATED),
            Err(HeaderSliceError::Content(_)) => return pass("IPv6, another version", f),
        };
        let p = Parsed {
            f,
            nic,
            l3,
            l4: l3 + 40,
            v4: false,
            src: IpAddr::V6(ip.source_addr()),
            dst: IpAddr::V6(ip.destination_addr()),
            ip_len: (u32::from(ip.payload_length()) + 40).min(0xffff),
        };
        match ip.next_header() {
            IpNumber::IPV6_ICMP => self.icmp6(&p, lab),
            IpNumber::TCP => self.tcp_udp(&p, IPPROTO_TCP, lab),
            IpNumber::UDP => self.tcp_udp(&p, IPPROTO_UDP, lab),
            _ => pass("IPv6 extension header or another protocol", f),
        }
    }

    fn if_vip_address(&self, p: &Parsed, what: &'static str, reason: u32) -> Expect {
        if self.addrs.contains(&p.dst) {
            dropped(what, p.f, reason)
        } else {
            pass("malformed, to no VIP", p.f)
        }
    }

    fn tcp_udp(&self, p: &Parsed, proto: u8, lab: &Lab) -> Expect {
        let l4 = &p.f[p.l4..];
        let ports = if proto == IPPROTO_TCP {
            TcpHeaderSlice::from_slice(l4)
                .ok()
                .map(|t| (t.source_port(), t.destination_port()))
        } else {
            UdpHeaderSlice::from_slice(l4)
                .ok()
                .map(|u| (u.source_port(), u.destination_port()))
        };
        let Some((sport, dport)) = ports else {
            return self.if_vip_address(p, "transport header cut", drop::L4_TRUNCATED);
        };
        let key = FlowKey::new(p.src, p.dst, sport, dport, proto);
        let Some(vip) = self.vip(p.dst, dport, proto) else {
            return self.nat_reply(p, &key, lab);
        };
        if self.own_mac_only && p.f[..6] != self.lb_mac {
            return pass("a VIP frame for another MAC", p.f);
        }
        let Some((id, b)) = self.backend(vip, &key) else {
            let mut e = dropped("VIP without backends", p.f, drop::NO_BACKEND);
            e.vip = Some(vip.index);
            return e;
        };
        let mut e = if !vip.nat {
            self.dsr(p.f, b, "DSR forward")
        } else {
            self.nat_forward(p, vip, &key, b)
        };
        e.vip = Some(vip.index);
        e.backend = Some(id);
        e
    }

    fn dsr(&self, f: &[u8], b: &BackendInfo, what: &'static str) -> Expect {
        let mut out = f.to_vec();
        out[..6].copy_from_slice(&b.mac);
        out[6..12].copy_from_slice(&self.lb_mac);
        Expect {
            output: out,
            ..Expect::untouched(what, f, XDP_TX, None)
        }
    }

    fn transport_csums(p: &Parsed, proto: u8) -> Vec<Csum> {
        let udp = proto == IPPROTO_UDP;
        let mut c = vec![Csum::Transport {
            l3: p.l3,
            l4: p.l4,
            field: p.l4 + if udp { 6 } else { 16 },
            udp,
            v4: p.v4,
        }];
        if p.v4 {
            c.push(Csum::Ipv4Header(p.l3));
        }
        c
    }

    fn nat_forward(&self, p: &Parsed, vip: &VipModel, key: &FlowKey, b: &BackendInfo) -> Expect {
        let dport = u16::from_be(key.dport);
        let new_port = match u16::from_be(b.port) {
            0 => dport,
            port => port,
        };
        let baddr = ip_of(b);
        let mut out = p.f.to_vec();
        let (abytes, _) = addr_bytes(baddr);
        let dst_at = p.l3 + if p.v4 { 16 } else { 24 };
        let n = if p.v4 { 4 } else { 16 };
        out[dst_at..dst_at + n].copy_from_slice(&abytes[..n]);
        out[p.l4 + 2..p.l4 + 4].copy_from_slice(&new_port.to_be_bytes());
        let reverse = (
            FlowKey::new(baddr, p.src, new_port, u16::from_be(key.sport), key.proto),
            VipKey::new(vip.addr, dport, key.proto),
        );
        let mut e = Expect {
            csums: Self::transport_csums(p, key.proto),
            reverse: Some(reverse),
            ..Expect::untouched("NAT forward", p.f, XDP_PASS, None)
        };
        self.send(&mut e, out, p, p.src, baddr);
        e
    }

    fn nat_reply(&self, p: &Parsed, key: &FlowKey, lab: &Lab) -> Expect {
        let Some(vip) = lab.lb.maps().nat_reverse(key).unwrap() else {
            return pass("not VIP traffic", p.f);
        };
        let vaddr = match vip.family {
            lb_common::FAMILY_V4 => IpAddr::V4(Ipv4Addr::new(
                vip.addr[0],
                vip.addr[1],
                vip.addr[2],
                vip.addr[3],
            )),
            _ => IpAddr::V6(Ipv6Addr::from(vip.addr)),
        };
        let new_port = match u16::from_be(vip.port) {
            0 => u16::from_be(key.sport),
            port => port,
        };
        let mut out = p.f.to_vec();
        let (abytes, _) = addr_bytes(vaddr);
        let src_at = p.l3 + if p.v4 { 12 } else { 8 };
        let n = if p.v4 { 4 } else { 16 };
        out[src_at..src_at + n].copy_from_slice(&abytes[..n]);
        out[p.l4..p.l4 + 2].copy_from_slice(&new_port.to_be_bytes());
        let mut e = Expect {
            csums: Self::transport_csums(p, key.proto),
            events: vec![ct::NAT_REPLY],
            ..Expect::untouched("NAT reply", p.f, XDP_PASS, None)
        };
        self.send(&mut e, out, p, vaddr, p.dst);
        e
    }

    /// Completes `e` for a translated frame `out` sent by the FIB from
    /// `src` to `dst`.
    fn send(&self, e: &mut Expect, mut out: Vec<u8>, p: &Parsed, src: IpAddr, dst: IpAddr) {
        match self.fib(src, dst, p.ip_len) {
            Fib::Sent { nic, mac } => {
                out[..6].copy_from_slice(&mac);
                out[6..12].copy_from_slice(&nic_mac(nic));
                e.verdict = if nic == p.nic { XDP_TX } else { XDP_REDIRECT };
            }
            Fib::NoNeigh => {
                e.events.push(ct::NAT_NO_NEIGH);
                e.what = match e.what {
                    "NAT forward" => "NAT forward, no neighbour",
                    "NAT reply" => "NAT reply, no neighbour",
                    _ => "NAT ICMP error, no neighbour",
                };
            }
            Fib::Refused => {
                e.what = match e.what {
                    "NAT forward" => "NAT forward, FIB refused",
                    "NAT reply" => "NAT reply, FIB refused",
                    _ => "NAT ICMP error, FIB refused",
                };
            }
        }
        e.output = out;
    }

    /// The lab's FIB (`bpf_fib_lookup` in XDP: the route, then the MTU,
    /// then the neighbour).
    fn fib(&self, src: IpAddr, dst: IpAddr, ip_len: u32) -> Fib {
        if strict6(src) || strict6(dst) {
            return Fib::Refused;
        }
        let Some(nic) = route(dst) else {
            return Fib::Refused;
        };
        let not_unicast = match dst {
            IpAddr::V4(a) => matches!(a.octets()[3], 1 | 255),
            // The NICs' own addresses and the subnet-router anycast ones.
            IpAddr::V6(a) => matches!(a.segments()[4..], [0, 0, 0, 0 | 1]),
        };
        if not_unicast || ip_len > MTU {
            return Fib::Refused;
        }
        match self.neighbours.get(&dst) {
            Some(&(mac, at)) if at == nic => Fib::Sent { nic, mac },
            _ => Fib::NoNeigh,
        }
    }

    fn icmp4(&self, p: &Parsed, lab: &Lab) -> Expect {
        let f = p.f;
        let Ok(icmp) = Icmpv4Slice::from_slice(&f[p.l4..]) else {
            return pass("ICMP cut", f);
        };
        if (icmp.type_u8(), icmp.code_u8()) != (3, 4) {
            return pass("ICMP, not fragmentation needed", f);
        }
        let quote = icmp.payload();
        let Ok(q) = Ipv4HeaderSlice::from_slice(quote) else {
            return pass("ICMP error, no IPv4 quote", f);
        };
        if q.ihl() != 5 {
            return pass("ICMP error quoting IPv4 options", f);
        }
        self.icmp_error(
            p,
            q.protocol().0,
            IpAddr::V4(q.source_addr()),
            IpAddr::V4(q.destination_addr()),
            20,
            lab,
        )
    }

    fn icmp6(&self, p: &Parsed, lab: &Lab) -> Expect {
        let f = p.f;
        let Ok(icmp) = Icmpv6Slice::from_slice(&f[p.l4..]) else {
            return pass("ICMPv6 cut", f);
        };
        let body = &f[p.l4..];
        if icmp.type_u8() == 135 && body.len() >= 24 {
            let t: [u8; 16] = body[8..24].try_into().unwrap();
            return self.neighbour_query(f, IpAddr::V6(Ipv6Addr::from(t)));
        }
        if icmp.type_u8() != 2 {
            return pass("ICMPv6, not packet too big", f);
        }
        let Ok(q) = Ipv6HeaderSlice::from_slice(&body[8..]) else {
            return pass("ICMPv6 error, no IPv6 quote", f);
        };
        self.icmp_error(
            p,
            q.next_header().0,
            IpAddr::V6(q.source_addr()),
            IpAddr::V6(q.destination_addr()),
            40,
            lab,
        )
    }

    /// An ICMP error quoting `qsrc → qdst` (`proto`, an IP header of
    /// `qlen` bytes): about the client's flow `qdst → qsrc`.
    fn icmp_error(
        &self,
        p: &Parsed,
        proto: u8,
        qsrc: IpAddr,
        qdst: IpAddr,
        qlen: usize,
        _lab: &Lab,
    ) -> Expect {
        let f = p.f;
        let q = p.l4 + 8;
        if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
            return pass("ICMP error quoting another protocol", f);
        }
        if f.len() < q + qlen + 4 {
            return pass("ICMP error, quoted ports cut", f);
        }
        let qs = q + qlen;
        let qsport = u16::from_be_bytes([f[qs], f[qs + 1]]);
        let qdport = u16::from_be_bytes([f[qs + 2], f[qs + 3]]);
        let key = FlowKey::new(qdst, qsrc, qdport, qsport, proto);
        let Some(vip) = self.vip(qsrc, qsport, proto) else {
            return pass("ICMP error about no VIP", f);
        };
        if self.own_mac_only && f[..6] != self.lb_mac {
            return pass("an ICMP error for another MAC", f);
        }
        let Some((id, b)) = self.backend(vip, &key) else {
            return pass("ICMP error about a VIP without backends", f);
        };
        let mut e = if !vip.nat {
            self.dsr(f, b, "ICMP error, DSR")
        } else {
            let baddr = ip_of(b);
            let new_port = match u16::from_be(b.port) {
                0 => qsport,
                port => port,
            };
            let (abytes, _) = addr_bytes(baddr);
            let n = if p.v4 { 4 } else { 16 };
            let mut out = f.to_vec();
            let dst_at = p.l3 + if p.v4 { 16 } else { 24 };
            out[dst_at..dst_at + n].copy_from_slice(&abytes[..n]);
            let qsrc_at = q + if p.v4 { 12 } else { 8 };
            out[qsrc_at..qsrc_at + n].copy_from_slice(&abytes[..n]);
            out[qs..qs + 2].copy_from_slice(&new_port.to_be_bytes());
            let csums = if p.v4 {
                vec![
                    Csum::Ipv4Header(p.l3),
                    Csum::Icmp4(p.l4),
                    Csum::Ipv4Header(q),
                ]
            } else {
                vec![Csum::Icmp6 { l3: p.l3, l4: p.l4 }]
            };
            let mut e = Expect {
                csums,
                ..Expect::untouched("NAT ICMP error", f, XDP_PASS, None)
            };
            // The program asks the FIB for the client's flow, translated.
            self.send(&mut e, out, p, qdst, baddr);
            e
        };
        e.events.push(ct::ICMP_TO_FLOW);
        e.backend = Some(id);
        e
    }
}

// ---------------------------------------------------------------------
// Checks.

/// Checks one frame's verdict and output against the reference.
fn check_frame(
    input: &[u8],
    pristine: bool,
    e: &Expect,
    verdict: u32,
    out: &[u8],
) -> Result<(), String> {
    if verdict != e.verdict {
        return Err(format!(
            "verdict {verdict}, the reference says {} ({})",
            e.verdict, e.what
        ));
    }
    let mut want = e.output.clone();
    if out.len() == want.len() {
        for c in &e.csums {
            let at = c.field();
            want[at..at + 2].copy_from_slice(&out[at..at + 2]);
        }
    }
    if want != out {
        return Err(format!(
            "output differs from the reference's ({})\n  want:     {}",
            e.what,
            to_hex(&want)
        ));
    }
    for &c in &e.csums {
        let at = c.field();
        let (was, now) = (
            u16::from_be_bytes([input[at], input[at + 1]]),
            u16::from_be_bytes([out[at], out[at + 1]]),
        );
        if let Csum::Transport {
            udp: true,
            v4: true,
            ..
        } = c
            && was == 0
        {
            if now != 0 {
                return Err(format!("IPv4 UDP without a checksum got one ({now:#06x})"));
            }
            continue;
        }
        // The reference's addresses differ, so compare what each frame's
        // own sum comes to.
        let (r_in, r_out) = (residual(input, c), residual(out, c));
        if r_in != r_out {
            return Err(format!(
                "{c:?}: the rewrite changed the checksum's validity (residual {r_in:#06x} → {r_out:#06x})"
            ));
        }
    }
    if pristine && !e.csums.is_empty() {
        let out = out.to_vec();
        std::panic::catch_unwind(move || assert_checksums(&out))
            .map_err(|p| format!("etherparse: {:?}", p.downcast_ref::<String>()))?;
    }
    Ok(())
}

/// The counters a batch is checked by.
#[derive(Clone, Debug, PartialEq, Default)]
struct Tally {
    globals: [Counters; global::COUNT as usize],
    drops: [u64; drop::COUNT as usize],
    events: BTreeMap<u32, u64>,
    vips: BTreeMap<u32, Counters>,
    backends: BTreeMap<u32, Counters>,
}

const EVENTS: [u32; 3] = [ct::NAT_REPLY, ct::NAT_NO_NEIGH, ct::ICMP_TO_FLOW];

impl Tally {
    fn read(lab: &Lab, world: &World) -> Tally {
        let m = lab.lb.maps();
        let ct = m.conntrack_stats().unwrap();
        Tally {
            globals: m.globals().unwrap(),
            drops: m.drops().unwrap(),
            events: EVENTS.iter().map(|&e| (e, ct[e as usize])).collect(),
            vips: world
                .vips
                .iter()
                .map(|v| (v.index, m.vip_counters(v.index).unwrap()))
                .collect(),
            backends: world
                .backends
                .keys()
                .map(|&id| (id, m.backend_counters(id).unwrap()))
                .collect(),
        }
    }

    /// Adds what `e` moves for a frame of `len` bytes.
    fn add(&mut self, e: &Expect, len: usize) {
        let one = Counters {
            packets: 1,
            bytes: len as u64,
        };
        let outcome = match e.verdict {
            XDP_PASS => global::PASS,
            XDP_TX | XDP_REDIRECT => global::FORWARD,
            _ => global::DROP,
        };
        self.globals[global::RX as usize].add(&one);
        self.globals[outcome as usize].add(&one);
        if let Some(r) = e.drop {
            self.drops[r as usize] += 1;
        }
        for ev in &e.events {
            *self.events.get_mut(ev).unwrap() += 1;
        }
        if let Some(v) = e.vip {
            self.vips.get_mut(&v).unwrap().add(&one);
        }
        if let Some(b) = e.backend {
            self.backends.get_mut(&b).unwrap().add(&one);
        }
    }

    /// The program's own invariants, whatever the reference says.
    fn consistent(&self) -> Result<(), String> {
        let g = |i: u32| self.globals[i as usize];
        let (rx, pass, fwd, drop) = (
            g(global::RX),
            g(global::PASS),
            g(global::FORWARD),
            g(global::DROP),
        );
        if rx.packets != pass.packets + fwd.packets + drop.packets
            || rx.bytes != pass.bytes + fwd.bytes + drop.bytes
        {
            return Err(format!(
                "rx {rx:?} is not pass {pass:?} + forward {fwd:?} + drop {drop:?}"
            ));
        }
        let reasons: u64 = self.drops.iter().sum();
        if reasons != g(global::DROP).packets {
            return Err(format!(
                "{} drops, {reasons} counted by reason",
                g(global::DROP).packets
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------
// The run.

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    Some(
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => v.parse(),
        }
        .unwrap_or_else(|e| panic!("{name}={v}: {e}")),
    )
}

fn setup(lab: &mut Lab) -> World {
    lab.lb.apply(&config(), &mut dsr_macs()).unwrap();
    // Lease run out (any time past 0): who-has for a VIP is dropped.
    lab.lb.maps_mut().set_lease(1).unwrap();
    World::read(lab)
}

struct Failure {
    seed: u64,
    index: u64,
    nic: Nic,
    input: Vec<u8>,
    message: String,
}

impl Failure {
    fn report(&self, verdict: Option<(u32, &[u8])>) -> String {
        let got = verdict.map_or(String::new(), |(v, out)| {
            format!("\n  got:      verdict {v}: {}", to_hex(out))
        });
        format!(
            "data-plane property broken at frame {} of seed {:#x}, received on {:?}: {}\n  input:    {}{got}\n\
             replay: XLB_PROPS_SEED={:#x} XLB_PROPS_REPLAY={} cargo xtask test -p xlb-tests --test dataplane_props -- --nocapture",
            self.index,
            self.seed,
            self.nic,
            self.message,
            to_hex(&self.input),
            self.seed,
            self.index
        )
    }
}

/// Runs one frame and checks it; `Err` names what broke.
fn run_one(lab: &Lab, world: &World, g: &Generated) -> (Expect, u32, Vec<u8>, Result<(), String>) {
    let e = world.classify(&g.frame, g.nic, lab);
    let (verdict, out) = lab.run_on(g.nic, &g.frame);
    let mut r = check_frame(&g.frame, g.pristine, &e, verdict, &out);
    if r.is_ok()
        && let Some((key, vip)) = &e.reverse
    {
        let got = lab.lb.maps().nat_reverse(key).unwrap();
        if got.as_ref() != Some(vip) {
            r = Err(format!(
                "after a NAT forward NAT_REVERSE holds {got:?} for its replies, not {vip:?}"
            ));
        }
    }
    (e, verdict, out, r)
}

fn print_frame(index: u64, g: &Generated, e: &Expect, verdict: u32, out: &[u8]) {
    println!(
        "frame {index} ({}, {}, on {:?}):\n  input:    {}\n  reference: {} verdict {} drop {:?} events {:?} vip {:?} backend {:?}\n  want:     {}\n  got:      verdict {verdict}: {}",
        g.base,
        if g.pristine { "as built" } else { "mutated" },
        g.nic,
        to_hex(&g.frame),
        e.what,
        e.verdict,
        e.drop,
        e.events,
        e.vip,
        e.backend,
        to_hex(&e.output),
        to_hex(out),
    );
}

#[test]
fn a_million_generated_and_mutated_frames_keep_the_data_plane_invariants() {
    let seed = env_u64("XLB_PROPS_SEED").unwrap_or(DEFAULT_SEED);
    let frames = env_u64("XLB_PROPS_FRAMES").unwrap_or(DEFAULT_FRAMES);
    let replay = env_u64("XLB_PROPS_REPLAY");
    let hex = std::env::var("XLB_PROPS_HEX").ok();
    nat_lab::in_lab(
        "a_million_generated_and_mutated_frames_keep_the_data_plane_invariants",
        &lab_neighbours(),
        None,
        |lab| {
            let world = setup(lab);
            if let Some(hex) = hex {
                let nic = match std::env::var("XLB_PROPS_NIC").as_deref() {
                    Ok("s0") => Nic::S0,
                    _ => Nic::C0,
                };
                let g = Generated {
                    frame: from_hex(&hex),
                    nic,
                    pristine: false,
                    base: "XLB_PROPS_HEX",
                };
                let (e, verdict, out, r) = run_one(lab, &world, &g);
                print_frame(0, &g, &e, verdict, &out);
                r.unwrap();
                return;
            }
            let seen = run(lab, &world, seed, replay.map_or(frames, |i| i + 1), replay);
            if replay.is_none() && frames >= 100_000 {
                covered(&seen, frames);
            }
        },
    );
}

/// The same frames through connection tables of 1024 entries (the
/// smallest `[conntrack] size`), which their flows overflow hundreds of
/// times: the verdicts do not depend on what the tables kept, and every
/// NAT forward still leaves the reverse entry its replies need, written
/// again if the LRU had evicted it while the flow's forward entry stayed
/// (`NAT_STATS` counts those).
#[test]
fn the_invariants_hold_with_a_connection_table_under_pressure() {
    const FRAMES: u64 = 200_000;
    let seed = env_u64("XLB_PROPS_SEED").unwrap_or(DEFAULT_SEED);
    nat_lab::in_lab(
        "the_invariants_hold_with_a_connection_table_under_pressure",
        &lab_neighbours(),
        Some(1024),
        |lab| {
            let world = setup(lab);
            run(lab, &world, seed, FRAMES, None);
            let m = lab.lb.maps();
            let ct = m.conntrack_stats().unwrap();
            let restored = m.nat_stats().unwrap()[lb_common::nat_stat::REVERSE_RESTORED as usize];
            println!(
                "{} entries inserted into tables of 1024; {restored} reverse entries restored",
                ct[ct::INSERT as usize]
            );
            assert!(
                ct[ct::INSERT as usize] > 10 * 1024,
                "the frames did not overflow the table"
            );
            assert!(
                restored > 0,
                "no reverse entry was evicted: the rule went untested"
            );
        },
    );
}

/// Runs frames `0..frames` of `seed`, checking each and each batch;
/// returns how many frames had each outcome.
fn run(
    lab: &Lab,
    world: &World,
    seed: u64,
    frames: u64,
    replay: Option<u64>,
) -> BTreeMap<&'static str, u64> {
    println!("seed {seed:#x}, {frames} frames");
    let started = Instant::now();
    let mut seen: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut batch_start = 0;
    // `XLB_PROPS_MAX_FAILURES`: how many failing frames to report before
    // stopping (a batch with one is not checked by its counters).
    let max_failures = env_u64("XLB_PROPS_MAX_FAILURES").unwrap_or(1);
    let mut failures = Vec::new();
    while batch_start < frames {
        let failed_before = failures.len();
        let batch_end = (batch_start + BATCH).min(frames);
        let before = Tally::read(lab, world);
        let mut want = before.clone();
        for i in batch_start..batch_end {
            let g = generate(world, seed, i);
            let (e, verdict, out, r) = run_one(lab, world, &g);
            if replay == Some(i) {
                print_frame(i, &g, &e, verdict, &out);
            }
            if let Err(message) = r {
                let f = Failure {
                    seed,
                    index: i,
                    nic: g.nic,
                    input: g.frame.clone(),
                    message,
                };
                failures.push(f.report(Some((verdict, &out))));
                if failures.len() as u64 >= max_failures {
                    panic!("{}", failures.join("\n\n"));
                }
            }
            want.add(&e, g.frame.len());
            *seen.entry(e.what).or_default() += 1;
        }
        let after = Tally::read(lab, world);
        if let Err(m) = after.consistent() {
            panic!("seed {seed:#x}, frames {batch_start}..{batch_end}: {m}");
        }
        if after != want && failures.len() == failed_before {
            blame(
                lab,
                world,
                seed,
                batch_start..batch_end,
                &before,
                &after,
                &want,
            );
        }
        batch_start = batch_end;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let took = started.elapsed();
    println!(
        "{frames} frames in {:.1} s ({:.1} µs a frame)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / frames as f64
    );
    for (what, n) in &seen {
        println!("  {n:>8}  {what}");
    }
    seen
}

/// A batch whose counters differ from the reference's: run its frames
/// again one by one, each with its own counters, and name the first that
/// moves other counters than the reference says.
fn blame(
    lab: &Lab,
    world: &World,
    seed: u64,
    batch: std::ops::Range<u64>,
    before: &Tally,
    after: &Tally,
    want: &Tally,
) -> ! {
    for i in batch.clone() {
        let g = generate(world, seed, i);
        let t0 = Tally::read(lab, world);
        let (e, verdict, out, _) = run_one(lab, world, &g);
        let mut w = t0.clone();
        w.add(&e, g.frame.len());
        let t1 = Tally::read(lab, world);
        if t1 != w {
            let f = Failure {
                seed,
                index: i,
                nic: g.nic,
                input: g.frame.clone(),
                message: format!(
                    "counters differ from the reference's ({}):\n  want {w:?}\n  got  {t1:?}",
                    e.what
                ),
            };
            panic!("{}", f.report(Some((verdict, &out))));
        }
    }
    panic!(
        "seed {seed:#x}, frames {}..{}: the batch's counters differ from the reference's, but no \
         frame's did when run again:\n  before {before:?}\n  want   {want:?}\n  got    {after:?}",
        batch.start, batch.end
    );
}

/// Every outcome the test is about happened, often enough to mean
/// something.
fn covered(seen: &BTreeMap<&'static str, u64>, frames: u64) {
    let at_least = |what: &str, share_per_mille: u64| {
        let n = seen.get(what).copied().unwrap_or(0);
        assert!(
            n * 1000 >= frames * share_per_mille,
            "only {n} of {frames} frames were `{what}`"
        );
    };
    for (what, per_mille) in [
        ("DSR forward", 50),
        ("NAT forward", 30),
        ("NAT reply", 20),
        ("ICMP error, DSR", 10),
        ("NAT ICMP error", 5),
        ("NAT forward, no neighbour", 1),
        ("NAT forward, FIB refused", 1),
        ("IPv4 cut", 1),
        ("IPv4 bad header", 1),
        ("IPv6 cut", 1),
        ("transport header cut", 1),
        ("IPv4 fragment", 1),
        ("VIP without backends", 5),
        ("who-has a VIP, lease run out", 1),
        ("not VIP traffic", 50),
    ] {
        at_least(what, per_mille);
    }
}
