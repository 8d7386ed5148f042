//! Data-plane cost per packet with BPF_PROG_TEST_RUN: the kernel runs the
//! program `REPEAT` times on one frame and reports the average time per run.
//! Every case runs against the floor (swap MACs, `XDP_TX`) in the same run.
//!
//! Maps are filled through `lb_user::maps` (the same calls the controller
//! makes). Scale: `vips` entries in `VIPS`/`VIP_ADDRS` and `backends` active
//! backends. Only the VIP under test gets a ring (65,537 slots, Maglev over
//! all backends): the program reads only the ring of the VIP a packet hits,
//! and each ring installation costs the kernel a `synchronize_rcu` (a
//! map-in-map update waits for running programs), over two minutes for
//! 10,000 rings. Backends are shared by all VIPs (the data plane cannot
//! tell: it only follows ids).

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result, anyhow, ensure};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use lb_common::addr_bytes;
use lb_common::{
    BACKEND_F_ACTIVE, BACKEND_F_RESCHEDULE, BackendInfo, DEFAULT_FLOW_TABLE_SIZE,
    DEFAULT_RING_SIZE, FAMILY_V4, FAMILY_V6, FlowKey, FlowState, IPPROTO_TCP, IPPROTO_UDP,
    LB_F_FORWARDING, LB_F_SYNC, LB_F_TRACE, LbConfig, MODE_DSR, TraceFilter, VipKey, VipMeta, ct,
    map_names, sync_stat, trace,
};
use lb_user::{
    dataplane::Dataplane,
    maglev,
    maps::{MapStore, Maps},
};
use xlb_testbed::frames::{Frame, Mac, REQUEST, with_bad_ihl};

use super::median;

/// Runs per BPF_PROG_TEST_RUN call (the kernel averages over them).
pub const REPEAT: u32 = 1_000_000;
const LB_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];
const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 2);
const NOT_VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const PORT4: u16 = 80;
const PORT6: u16 = 53;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Program {
    /// `xdp-floor`: swap MACs, `XDP_TX`.
    Floor,
    /// xlb's program.
    Xlb,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Packet {
    /// IPv4 TCP SYN to the VIP under test.
    Tcp4Vip,
    /// IPv6 UDP to the VIP under test.
    Udp6Vip,
    /// IPv4 TCP to an address that carries no VIP.
    Tcp4NotVip,
    /// IPv4 TCP to the VIP with IHL 4.
    Ipv4BadIhl,
}

impl Packet {
    fn family(self) -> u8 {
        match self {
            Packet::Udp6Vip => FAMILY_V6,
            _ => FAMILY_V4,
        }
    }
}

/// What the connection table does with the case's (repeated) packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Conntrack {
    /// Not consulted (floor, non-VIP, malformed).
    None,
    /// The first run inserts the flow, every later run finds it.
    Hit,
    /// Every run misses and inserts: the backends are flagged
    /// `BACKEND_F_RESCHEDULE` (`on_down = "reschedule"`), so the entry the
    /// previous run made is rejected, Maglev chooses again and the entry is
    /// rewritten. (One BACKENDS read more than a first packet pays.)
    Miss,
}

/// One row of the table: a program, a packet, the map contents, and the
/// verdict the program must return (else the case did not measure what it
/// claims, and the run fails; so does a hit or miss case whose
/// connection-table counters say otherwise).
#[derive(Clone, Debug)]
pub struct Case {
    pub name: &'static str,
    pub program: Program,
    pub packet: Packet,
    pub vips: u32,
    pub backends: u32,
    pub conntrack: Conntrack,
    /// The connection table made this size and filled with other flows
    /// first; `None`: the default size, holding only this case's flow.
    pub table_full: Option<u32>,
    /// Connection sync on (`LB_F_SYNC`): inserts and closings are reported
    /// through the ring buffer.
    pub sync: Sync,
    /// A packet trace on (`LB_F_TRACE`).
    pub trace: Trace,
    pub verdict: u32,
}

/// A packet trace in a case.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Trace {
    Off,
    /// On, its filter taking other packets only (another client): the
    /// flag, the hand-over to the recorder and the filter's test.
    Filtered,
    /// On, its filter taking the packet: every run is recorded, a thread
    /// reading the ring as `xlb trace` does.
    Recorded,
}

/// Connection sync in a case.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sync {
    Off,
    /// On, a thread reading the ring buffer as the sync does.
    Drained,
    /// On, nobody reading: the ring is full, every report is lost (for a
    /// hit, which reports nothing: sync on, no reader).
    Full,
}

impl Case {
    fn xlb(name: &'static str, packet: Packet, scale: (u32, u32), verdict: u32) -> Case {
        Case {
            name,
            program: Program::Xlb,
            packet,
            vips: scale.0,
            backends: scale.1,
            conntrack: Conntrack::None,
            table_full: None,
            sync: Sync::Off,
            trace: Trace::Off,
            verdict,
        }
    }

    fn dsr(name: &'static str, packet: Packet, scale: (u32, u32), ct: Conntrack) -> Case {
        Case {
            conntrack: ct,
            ..Case::xlb(name, packet, scale, XDP_TX)
        }
    }

    /// The default-size table, full.
    fn full(self) -> Case {
        self.full_of(DEFAULT_FLOW_TABLE_SIZE)
    }

    /// A table of `entries`, full.
    fn full_of(self, entries: u32) -> Case {
        Case {
            table_full: Some(entries),
            ..self
        }
    }

    fn sync(self, sync: Sync) -> Case {
        Case { sync, ..self }
    }

    fn trace(self, trace: Trace) -> Case {
        Case { trace, ..self }
    }
}

pub struct Row {
    pub case: Case,
    /// Median over trials of the kernel's average ns per run.
    pub ns: f64,
    /// `ns` / the floor's `ns`.
    pub ratio: f64,
    /// Sync on, a miss: the share of inserts whose report reached the
    /// ring (the rest were lost, the ring being full); trace recorded:
    /// the share of runs whose record did.
    pub reported: Option<f64>,
}

/// The calls the program makes on a case's path, in order: helpers, hash
/// map operations (the verifier turns each into a call of the map's own
/// function) and lookups in a Maglev ring (an inner map, which the
/// verifier does not inline); array lookups it inlines are not calls.
/// Read off the code path the case's counters prove; every kind of call
/// named here is one of the loaded program's call sites ([`super::code`]).
pub fn calls(case: &Case) -> Vec<&'static str> {
    let mut out = Vec::new();
    match (case.program, case.packet) {
        (Program::Floor, _) | (_, Packet::Ipv4BadIhl | Packet::Tcp4NotVip) => return out,
        _ => {}
    }
    // The entry's backend names the VIP: no VIPS lookup, hit or miss.
    out.extend(["FLOWS lookup", "bpf_ktime_get_coarse_ns"]);
    if case.conntrack == Conntrack::Miss {
        out.extend(["ring size lookup", "ring slot lookup", "FLOWS update"]);
        match case.sync {
            Sync::Off => {}
            Sync::Drained => out.extend([
                "bpf_ringbuf_reserve",
                "bpf_ktime_get_ns",
                "bpf_ringbuf_submit",
            ]),
            // Reserving fails: the report is lost.
            Sync::Full => out.push("bpf_ringbuf_reserve"),
        }
    }
    if case.trace != Trace::Off {
        out.push("bpf_tail_call");
    }
    if case.trace == Trace::Recorded {
        // The recorder finds the VIP and the backend again.
        out.extend(["bpf_ktime_get_ns", "VIPS lookup"]);
        if case.conntrack == Conntrack::Hit {
            out.push("FLOWS lookup");
        } else {
            out.extend(["ring size lookup", "ring slot lookup"]);
        }
        out.extend([
            "bpf_ringbuf_reserve",
            "bpf_xdp_load_bytes",
            "bpf_ringbuf_submit",
        ]);
    }
    out
}

pub fn verdict_name(v: u32) -> &'static str {
    match v {
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        _ => "?",
    }
}

const HIT4: &str = "DSR, conntrack hit, IPv4 TCP";
const HIT6: &str = "DSR, conntrack hit, IPv6 UDP";
const MISS4: &str = "DSR, conntrack miss + insert, IPv4 TCP";
const MISS6: &str = "DSR, conntrack miss + insert, IPv6 UDP";

/// The cases, floor first. Scale points: every combination of 1, 100,
/// 10,000 VIPs and 3, 100, 1,000 backends (quick: the diagonal).
//
// NAT is measured in `nat_cost`, one packet per call: its rewrite is not
// idempotent, and the kernel does not reset the frame between the runs of
// one call.
pub fn cases(quick: bool) -> Vec<Case> {
    let scales: Vec<(u32, u32)> = if quick {
        vec![(1, 3), (100, 100), (10_000, 1_000)]
    } else {
        [1, 100, 10_000]
            .into_iter()
            .flat_map(|v| [3, 100, 1_000].into_iter().map(move |b| (v, b)))
            .collect()
    };
    let mut out = vec![Case {
        name: "floor: swap MACs, XDP_TX",
        program: Program::Floor,
        packet: Packet::Tcp4Vip,
        vips: 0,
        backends: 0,
        conntrack: Conntrack::None,
        table_full: None,
        sync: Sync::Off,
        trace: Trace::Off,
        verdict: XDP_TX,
    }];
    for scale in scales {
        out.push(Case::dsr(HIT4, Packet::Tcp4Vip, scale, Conntrack::Hit));
        out.push(Case::dsr(HIT6, Packet::Udp6Vip, scale, Conntrack::Hit));
    }
    let (small, large) = ((1, 3), (10_000, 1_000));
    out.extend([
        Case::dsr(MISS4, Packet::Tcp4Vip, small, Conntrack::Miss),
        Case::dsr(MISS6, Packet::Udp6Vip, small, Conntrack::Miss),
        Case::dsr(MISS4, Packet::Tcp4Vip, large, Conntrack::Miss),
        // A hit reports nothing: no reader thread to disturb the figure.
        Case::dsr(HIT4, Packet::Tcp4Vip, small, Conntrack::Hit).sync(Sync::Full),
        Case::dsr(MISS4, Packet::Tcp4Vip, small, Conntrack::Miss).sync(Sync::Drained),
        Case::dsr(MISS4, Packet::Tcp4Vip, small, Conntrack::Miss).sync(Sync::Full),
        // Tracing off is every other row; on, filtering this packet out,
        // then recording it.
        Case::dsr(HIT4, Packet::Tcp4Vip, small, Conntrack::Hit).trace(Trace::Filtered),
        Case::dsr(HIT4, Packet::Tcp4Vip, small, Conntrack::Hit).trace(Trace::Recorded),
        Case::dsr(MISS4, Packet::Tcp4Vip, small, Conntrack::Miss).trace(Trace::Recorded),
        Case::dsr(HIT4, Packet::Tcp4Vip, small, Conntrack::Hit).full(),
        Case::dsr(MISS4, Packet::Tcp4Vip, small, Conntrack::Miss).full(),
        Case::xlb(
            "non-VIP pass, IPv4 TCP",
            Packet::Tcp4NotVip,
            small,
            XDP_PASS,
        ),
        Case::xlb(
            "non-VIP pass, IPv4 TCP",
            Packet::Tcp4NotVip,
            large,
            XDP_PASS,
        ),
        Case::xlb(
            "malformed drop (IPv4 IHL 4)",
            Packet::Ipv4BadIhl,
            small,
            XDP_DROP,
        ),
    ]);
    // The larger tables `[conntrack] size` allows, full: a hit stays one
    // hash lookup.
    let big = if quick {
        &super::scale::FLOW_SIZES[..1]
    } else {
        &super::scale::FLOW_SIZES[..]
    };
    for &entries in big {
        out.push(Case::dsr(HIT4, Packet::Tcp4Vip, small, Conntrack::Hit).full_of(entries));
    }
    out
}

fn vip4(index: u32) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, (index >> 8) as u8, index as u8)
}

fn vip6(index: u32) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x19, 0, 0, 0, 0, 0, index as u16)
}

fn backend_addr(id: u32, family: u8) -> std::net::IpAddr {
    if family == FAMILY_V4 {
        Ipv4Addr::new(198, 18, 16 + (id >> 8) as u8, id as u8).into()
    } else {
        Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 1, id as u16).into()
    }
}

/// The VIP a case's packet is sent to: the last one inserted.
fn target(vips: u32) -> u32 {
    vips - 1
}

fn frame(case: &Case) -> Vec<u8> {
    let vip = target(case.vips.max(1));
    // L4 checksums left 0: xlb never checks them (DSR).
    let syn4 = |dst| {
        Frame::new(CLIENT_MAC, LB_MAC, CLIENT4, dst)
            .no_l4_checksum()
            .tcp(40_000, PORT4, "S", REQUEST)
    };
    match case.packet {
        Packet::Tcp4Vip => syn4(vip4(vip)),
        Packet::Udp6Vip => Frame::new(CLIENT_MAC, LB_MAC, CLIENT6, vip6(vip))
            .no_l4_checksum()
            .udp(40_000, PORT6, REQUEST),
        Packet::Tcp4NotVip => Frame::new(CLIENT_MAC, LB_MAC, CLIENT4, NOT_VIP4)
            .no_l4_checksum()
            .tcp(40_000, 22, "S", REQUEST),
        Packet::Ipv4BadIhl => with_bad_ihl(syn4(vip4(vip))),
    }
}

/// What a fixture holds; cases with the same key share one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Fixture {
    vips: u32,
    backends: u32,
    family: u8,
    reschedule: bool,
    table_full: Option<u32>,
    /// Each sync case gets its own fixture: it takes the ring buffer out.
    sync: Sync,
    /// So does each trace case.
    trace: Trace,
}

impl Fixture {
    fn of(case: &Case) -> Fixture {
        Fixture {
            vips: case.vips,
            backends: case.backends,
            family: case.packet.family(),
            reschedule: case.conntrack == Conntrack::Miss,
            table_full: case.table_full,
            sync: case.sync,
            trace: case.trace,
        }
    }
}

/// Fills the connection table (of `entries`) with flows from other
/// clients (to the first backend; the entries are never looked up, they
/// only make the table full so that an insert evicts): clients of
/// 198.18.0.0/15 from port 1024 on, 256 ports each (up to 2^25 flows; the
/// cases' own client uses port 40000).
fn fill_flows(maps: &mut Maps, entries: u32) -> Result<()> {
    ensure!(
        entries <= 1 << 25,
        "{entries} flows: more than the key space"
    );
    for i in 0..entries {
        let client = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (i >> 8));
        let key = FlowKey {
            src: [u32::from_ne_bytes(client.octets()), 0, 0, 0],
            dst: [u32::from_ne_bytes(vip4(0).octets()), 0, 0, 0],
            sport: (1024 + (i & 0xff) as u16).to_be(),
            dport: PORT4.to_be(),
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        };
        maps.set_flow(
            &key,
            &FlowState {
                backend: 1,
                ..Default::default()
            },
        )?;
    }
    Ok(())
}

/// A loaded xlb program whose maps hold what `f` describes.
fn fixture(f: Fixture) -> Result<(Dataplane, Maps)> {
    let Fixture {
        vips,
        backends,
        family,
        reschedule,
        table_full,
        sync,
        trace,
    } = f;
    let (dp, mut maps) =
        Dataplane::load_with_flow_table(table_full.unwrap_or(DEFAULT_FLOW_TABLE_SIZE))?;
    let m = &mut maps;
    let mut flags = LB_F_FORWARDING;
    if sync != Sync::Off {
        flags |= LB_F_SYNC;
    }
    if trace != Trace::Off {
        flags |= LB_F_TRACE;
        // Filtered: the packets of another client only.
        let client = if trace == Trace::Filtered {
            Ipv4Addr::new(198, 18, 0, 3)
        } else {
            CLIENT4
        };
        m.set_trace_filter(&TraceFilter {
            src: [u32::from_ne_bytes(client.octets()), 0, 0, 0],
            src_mask: [u32::MAX, 0, 0, 0],
            until: u64::MAX,
            ..Default::default()
        })?;
    }
    m.set_config(&LbConfig {
        mac: LB_MAC,
        flags,
        ..Default::default()
    })?;
    let port = if family == FAMILY_V4 { PORT4 } else { PORT6 };
    let mut members = Vec::new();
    for id in 1..=backends {
        let addr = backend_addr(id, family);
        m.set_backend(
            id,
            &BackendInfo {
                addr: addr_bytes(addr).0,
                port: port.to_be(),
                family,
                flags: if reschedule {
                    BACKEND_F_ACTIVE | BACKEND_F_RESCHEDULE
                } else {
                    BACKEND_F_ACTIVE
                },
                mac: [0x02, 0, 0, 0x10, (id >> 8) as u8, id as u8],
                generation: 0,
                // The VIP under test: the only one that has a ring.
                vip: target(vips),
            },
        )?;
        members.push(maglev::Member {
            identity: maglev::identity(addr, port),
            weight: 1,
        });
    }
    // Member index i is backend id i + 1.
    let full: Vec<u32> = maglev::build_table(&members, DEFAULT_RING_SIZE)
        .iter()
        .map(|&i| i + 1)
        .collect();
    for index in 0..vips {
        let (addr, proto) = if family == FAMILY_V4 {
            (addr_bytes(vip4(index).into()).0, IPPROTO_TCP)
        } else {
            (addr_bytes(vip6(index).into()).0, IPPROTO_UDP)
        };
        let key = VipKey {
            addr,
            port: port.to_be(),
            proto,
            family,
        };
        if index == target(vips) {
            m.install_ring(index, &full)?;
        }
        m.set_vip(
            &key,
            &VipMeta {
                index,
                mode: MODE_DSR,
                flags: 0,
                _pad: 0,
            },
        )?;
        m.set_vip_addr(&VipKey {
            port: 0,
            proto: 0,
            ..key
        })?;
    }
    if let Some(entries) = table_full {
        fill_flows(&mut maps, entries)?;
    }
    Ok((dp, maps))
}

/// Fails unless the connection-table counters show that (nearly) every
/// run of a hit or miss case was a hit or a miss.
pub(super) fn check_conntrack(
    case: &Case,
    before: &[u64],
    after: &[u64],
    trials: usize,
) -> Result<()> {
    let counter = match case.conntrack {
        Conntrack::None => return Ok(()),
        Conntrack::Hit => ct::HIT,
        Conntrack::Miss => ct::MISS,
    } as usize;
    let runs = trials as u64 * u64::from(REPEAT);
    let seen = after[counter] - before[counter];
    ensure!(
        seen as f64 >= 0.99 * runs as f64,
        "{:?}: the connection table counted {seen} of {runs} runs as {}",
        case.conntrack,
        ct::NAMES[counter]
    );
    Ok(())
}

/// Median over `trials` of the kernel's average ns per run; fails if the
/// program's verdict is not `want`.
pub(super) fn measure(prog: &Xdp, frame: &[u8], want: u32, trials: usize) -> Result<f64> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut ns = Vec::with_capacity(trials);
    for _ in 0..trials {
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat: REPEAT,
                ..Default::default()
            })
            .context("BPF_PROG_TEST_RUN")?;
        ensure!(
            r.return_value == want,
            "verdict {} ({}), want {}",
            r.return_value,
            verdict_name(r.return_value),
            verdict_name(want)
        );
        ns.push(r.duration.as_nanos() as f64);
    }
    Ok(median(&mut ns))
}

/// [`measure`] beside one of the program's ring buffers (`ring`), read
/// as fast as a thread can while it runs (`drain`) or not at all, with
/// the per-CPU counters `stats` summed before and after: returns the ns
/// and each counter of `counters` that the runs added.
fn measure_beside_ring<const N: usize>(
    dp: &mut Dataplane,
    (ring, stats): (&str, &str),
    counters: [u32; N],
    drain: bool,
    (frame, verdict, trials): (&[u8], u32, usize),
) -> Result<(f64, [u64; N])> {
    use aya::maps::{Map, MapData, PerCpuArray, RingBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut reader = match dp.take_map(ring) {
        Some(Map::RingBuf(m)) => RingBuf::try_from(Map::RingBuf(m))?,
        _ => return Err(anyhow!("no {ring} ring buffer")),
    };
    let stats: PerCpuArray<MapData, u64> = match dp.take_map(stats) {
        Some(m) => PerCpuArray::try_from(m)?,
        None => return Err(anyhow!("no {stats}")),
    };
    let read = || -> Result<[u64; N]> {
        let mut out = [0; N];
        for (o, i) in out.iter_mut().zip(counters) {
            *o = stats.get(&i, 0)?.iter().sum();
        }
        Ok(out)
    };
    let before = read()?;
    let stop = AtomicBool::new(false);
    let ns = std::thread::scope(|s| {
        if drain {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    while reader.next().is_some() {}
                    std::hint::spin_loop();
                }
            });
        }
        let ns = measure(dp.program(), frame, verdict, trials);
        stop.store(true, Ordering::Relaxed);
        ns
    })?;
    let mut added = read()?;
    for (a, b) in added.iter_mut().zip(before) {
        *a -= b;
    }
    Ok((ns, added))
}

/// [`measure`] with connection sync on: a thread reads the ring buffer
/// as the sync does (`Sync::Drained`), or nobody does and it stays full
/// (`Sync::Full`). Fails unless the report counters prove it: most
/// inserts reported (the reader may fall behind now and then: the share
/// is returned and shown), or nearly every one lost.
fn measure_sync(
    dp: &mut Dataplane,
    case: &Case,
    frame: &[u8],
    trials: usize,
) -> Result<(f64, Option<f64>)> {
    // Full: fill the ring before measuring.
    if case.sync == Sync::Full {
        measure(dp.program(), frame, case.verdict, 1)?;
    }
    let (ns, [lost, reported]) = measure_beside_ring(
        dp,
        (map_names::FLOW_EVENTS, map_names::SYNC_STATS),
        [sync_stat::EVENTS_LOST, sync_stat::EVENTS_REPORTED],
        case.sync == Sync::Drained,
        (frame, case.verdict, trials),
    )?;
    let inserts = lost + reported;
    if case.conntrack != Conntrack::Miss {
        // A hit reports nothing (the first run's insert at most).
        ensure!(inserts <= 1, "{inserts} reports from conntrack hits");
        return Ok((ns, None));
    }
    let runs = trials as u64 * u64::from(REPEAT);
    ensure!(
        inserts as f64 >= 0.99 * runs as f64,
        "{inserts} reports for {runs} inserts"
    );
    let share = reported as f64 / inserts as f64;
    match case.sync {
        Sync::Full => ensure!(
            share <= 0.01,
            "{reported} of {inserts} reported with the ring full"
        ),
        _ => ensure!(
            share >= 0.9,
            "only {reported} of {inserts} reported with a reader"
        ),
    }
    Ok((ns, Some(share)))
}

/// The IPv4 TCP conntrack-hit case at `scale` (VIPs, backends), loaded:
/// the case, its frame, the program and its maps.
pub(super) fn hit4(scale: (u32, u32)) -> Result<(Case, Vec<u8>, Dataplane, Maps)> {
    let case = Case::dsr(HIT4, Packet::Tcp4Vip, scale, Conntrack::Hit);
    let (dp, maps) = fixture(Fixture::of(&case))?;
    Ok((case.clone(), frame(&case), dp, maps))
}

/// [`measure`] with a trace on: filtered out, nothing may be recorded;
/// recorded, a thread reads the ring as `xlb trace` does, and (nearly)
/// every run must have made a record or counted a lost one. Returns the
/// share of runs recorded.
fn measure_trace(
    dp: &mut Dataplane,
    case: &Case,
    frame: &[u8],
    trials: usize,
) -> Result<(f64, Option<f64>)> {
    let (ns, [recorded, lost]) = measure_beside_ring(
        dp,
        (map_names::TRACE_EVENTS, map_names::TRACE_STATS),
        [trace::stat::RECORDED, trace::stat::LOST],
        case.trace == Trace::Recorded,
        (frame, case.verdict, trials),
    )?;
    if case.trace == Trace::Filtered {
        ensure!(
            recorded + lost == 0,
            "{recorded} records of a filtered-out packet"
        );
        return Ok((ns, None));
    }
    let runs = trials as u64 * u64::from(REPEAT);
    ensure!(
        (recorded + lost) as f64 >= 0.99 * runs as f64,
        "{} records for {runs} runs",
        recorded + lost
    );
    Ok((ns, Some(recorded as f64 / (recorded + lost) as f64)))
}

/// BPF_PROG_TEST_RUN calls per case; the report takes their median.
pub fn trials(quick: bool) -> usize {
    if quick { 3 } else { 7 }
}

/// The cases' rows, and the code of the program they ran.
pub fn run(quick: bool) -> Result<(Vec<Row>, super::code::Code)> {
    let trials = trials(quick);
    let code = {
        let (dp, _maps) = Dataplane::load()?;
        super::code::inspect(dp.program()).context("inspecting the loaded program")?
    };
    let mut floor_ebpf =
        aya::Ebpf::load(xlb_testbed::xdp::XDP_FLOOR_OBJECT).context("loading the floor object")?;
    let floor = xlb_testbed::xdp::load_program(&mut floor_ebpf, "xdp_floor")?;

    let mut rows: Vec<Row> = Vec::new();
    let mut current: Option<(Fixture, (Dataplane, Maps))> = None;
    let mut floor_ns = None;
    for case in cases(quick) {
        let f = frame(&case);
        let mut reported = None;
        let ns = match case.program {
            Program::Floor => measure(floor, &f, case.verdict, trials),
            Program::Xlb => {
                let key = Fixture::of(&case);
                if current.as_ref().map(|(k, _)| *k) != Some(key) {
                    drop(current.take()); // free the old maps first
                    current = Some((key, fixture(key)?));
                }
                let (_, (dp, maps)) = current.as_mut().expect("set above");
                let before = maps.conntrack_stats()?;
                let ns = match (case.sync, case.trace) {
                    (Sync::Off, Trace::Off) => measure(dp.program(), &f, case.verdict, trials),
                    (Sync::Drained | Sync::Full, _) => {
                        measure_sync(dp, &case, &f, trials).map(|(ns, share)| {
                            reported = share;
                            ns
                        })
                    }
                    (Sync::Off, Trace::Filtered | Trace::Recorded) => {
                        measure_trace(dp, &case, &f, trials).map(|(ns, share)| {
                            reported = share;
                            ns
                        })
                    }
                };
                check_conntrack(&case, &before, &maps.conntrack_stats()?, trials)?;
                ns
            }
        }
        .with_context(|| {
            format!(
                "case {:?} ({} VIPs, {} backends)",
                case.name, case.vips, case.backends
            )
        })?;
        let base = *floor_ns.get_or_insert(ns);
        super::say(&format!(
            "  {:<40} {:>6} VIPs {:>5} backends  {ns:>5.0} ns",
            case.name, case.vips, case.backends
        ));
        rows.push(Row {
            ratio: ns / base.max(1.0),
            ns,
            case,
            reported,
        });
    }
    Ok((rows, code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_comes_first_and_every_scale_point_is_there() {
        for quick in [true, false] {
            let c = cases(quick);
            assert_eq!(c[0].program, Program::Floor);
            let hits = c
                .iter()
                .filter(|c| {
                    c.conntrack == Conntrack::Hit
                        && c.table_full.is_none()
                        && c.sync == Sync::Off
                        && c.trace == Trace::Off
                })
                .count();
            assert_eq!(hits, if quick { 6 } else { 18 });
            // Sync on: a hit, a miss with the reports read, one with the ring full.
            let sync: Vec<(Conntrack, Sync)> = c
                .iter()
                .filter(|c| c.sync != Sync::Off)
                .map(|c| (c.conntrack, c.sync))
                .collect();
            assert_eq!(
                sync,
                [
                    (Conntrack::Hit, Sync::Full),
                    (Conntrack::Miss, Sync::Drained),
                    (Conntrack::Miss, Sync::Full)
                ]
            );
            assert!(
                c.iter()
                    .any(|c| c.conntrack == Conntrack::Miss && c.table_full.is_some())
            );
            // Trace on: a hit filtered out, a hit and a miss recorded,
            // beside the trace-off hit at the same scale.
            let traced: Vec<(Conntrack, Trace)> = c
                .iter()
                .filter(|c| c.trace != Trace::Off)
                .map(|c| (c.conntrack, c.trace))
                .collect();
            assert_eq!(
                traced,
                [
                    (Conntrack::Hit, Trace::Filtered),
                    (Conntrack::Hit, Trace::Recorded),
                    (Conntrack::Miss, Trace::Recorded)
                ]
            );
            assert!(c.iter().any(|c| c.name == HIT4
                && (c.vips, c.backends) == (1, 3)
                && c.trace == Trace::Off
                && c.sync == Sync::Off));
        }
    }

    #[test]
    fn scale_fits_the_maps() {
        for c in cases(false) {
            assert!(c.vips <= lb_common::MAX_VIPS && c.backends < lb_common::MAX_BACKENDS);
            // Addresses stay distinct within 198.18.0.0/15.
            assert!(c.vips <= 1 << 16 && c.backends < 240 * 256);
        }
    }
}
