//! Packets per second through veth: a generator on the client's veth, the
//! load balancer node, three sinks (the backends' NICs). xlb DSR (the real
//! `xlb run`, native XDP) against nftables DNAT, in the same run; the
//! generator and the measurement ([`PpsPath`]) also serve the NAT figures
//! ([`super::nat_pps`]).
//!
//! The generator is `xdp-gen` run with BPF_PROG_TEST_RUN in live-frames
//! mode (BPF_F_TEST_XDP_LIVE_FRAMES): the program writes a template frame
//! (set as its global `GEN_FRAME`) and its `XDP_TX` sends it out of the
//! client's veth, with no socket or skb on the sending side. (pktgen would
//! do too, but is not built into every kernel.)
//! Every frame is a 60-byte UDP packet to VIP:9 from one of 1,024 source
//! ports. The sinks count what their NIC received; nothing listens on
//! port 9, so their stack drops it. Everything shares the machine's CPUs,
//! so the figure is what the whole path sustains, compared side by side.
//!
//! Since the path (generator, bridges, the sinks' stacks) costs most of
//! it, every round also runs the floor path: the load-balancer node runs
//! `xdp-fwd` (every frame to backend 1, MAC rewrite, `XDP_TX` or redirect)
//! instead of a load balancer. Each setup is then measured again at one
//! offered rate for all (half the round's lowest saturated rate), with the
//! CPU time of the path's tasks ([`super::cpu`]); a setup's CPU time per
//! delivered packet minus the floor path's is what the load balancer
//! itself costs.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, ensure};
use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions};
use xlb_testbed::frames::{Frame, Mac};
use xlb_testbed::netns::NetNs;
use xlb_testbed::topology::{Xlb, link_stats, status_vip};

use super::cpu::{CpuClock, machine_busy};
use super::topo::{Bench, SINK_PORT, ensure_no_xdp, link, stop_xlb, xdp_attached};
use super::{median, say, spread};

/// Frames per BPF_PROG_TEST_RUN call; the generator loops until its time
/// is up (and never more than `MAX_CALLS` times).
const CHUNK: u32 = 20_000;
const MAX_CALLS: u32 = 20_000;
/// Frames per live-frames batch (the kernel's maximum is 256).
const BATCH: u32 = 64;
const WARMUP: Duration = Duration::from_millis(300);
/// Time for queues to drain before the sinks are read.
const DRAIN: Duration = Duration::from_millis(300);
/// The generator's template size (`GEN_FRAME_LEN` in lb-ebpf/src/gen.rs).
const GEN_FRAME_LEN: usize = 60;
/// The paced rate of a round, as a share of its lowest saturated delivered
/// rate: low enough that no setup drops, even with the machine's other
/// load drifting.
const PACED_SHARE: f64 = 0.5;
/// Frames per BPF_PROG_TEST_RUN call when paced.
const PACED_CHUNK: u32 = 2_000;

/// How fast the generator sends.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// As fast as the path drains.
    Saturated,
    /// This many frames per second.
    Paced(f64),
}

pub struct Row {
    pub setup: &'static str,
    /// Frames generated per second.
    pub offered: f64,
    /// Frames received by the backends per second (median over rounds).
    pub delivered: f64,
    /// Lowest and highest round of `delivered`.
    pub range: (f64, f64),
    /// `delivered` / xlb's `delivered`.
    pub ratio: f64,
    /// Offered rate of the paced runs (median over rounds).
    pub paced: f64,
    /// Delivered / offered of the paced runs (median over rounds).
    pub paced_delivered: f64,
    /// CPU time per delivered packet at the paced rate, ns (median, range).
    pub cpu_ns: f64,
    pub cpu_range: (f64, f64),
    /// `cpu_ns` minus the floor path's in the same round (median, range);
    /// `None` for the floor path itself.
    pub marginal_ns: Option<(f64, (f64, f64))>,
    /// The control plane's CPU time at the paced rate, as a share of one
    /// core (median; 0 for setups without one).
    pub control_share: f64,
    /// CPU time per delivered packet when saturated, ns (median).
    pub saturated_cpu_ns: f64,
}

/// Where a packets-per-second case runs: the generator's veth, the sinks,
/// and the load-balancer node (for error messages).
pub struct PpsPath<'a> {
    pub client: &'a NetNs,
    /// The client's veth, in the client's namespace.
    pub client_ifindex: u32,
    /// (namespace, NIC) of every sink.
    pub sinks: Vec<(&'a NetNs, String)>,
    pub lb: &'a NetNs,
    pub lb_ifnames: Vec<String>,
}

/// `struct xdp_md` for the generator: the frame spans the whole buffer and
/// arrives on `ifindex`, so `XDP_TX` leaves through it.
fn xdp_md(frame_len: usize, ifindex: u32) -> Vec<u8> {
    let fields: [u32; 6] = [0, frame_len as u32, 0, ifindex, 0, 0];
    fields.iter().flat_map(|f| f.to_ne_bytes()).collect()
}

impl PpsPath<'_> {
    /// Sends `frame` out of the client's veth for `duration` at `load`;
    /// returns frames sent and the time taken.
    fn generate(&self, frame: &[u8], duration: Duration, load: Load) -> Result<(u64, Duration)> {
        let ctx = xdp_md(frame.len(), self.client_ifindex);
        // The kernel resolves the ifindex in the caller's namespace.
        self.client.in_ns(|| -> Result<(u64, Duration)> {
            let template: [u8; GEN_FRAME_LEN] = frame.try_into().map_err(|_| {
                anyhow!(
                    "the generator sends {GEN_FRAME_LEN}-byte frames, not {}",
                    frame.len()
                )
            })?;
            let mut ebpf = aya::EbpfLoader::new()
                .override_global("GEN_FRAME", &template, true)
                .load(xlb_testbed::xdp::XDP_GEN_OBJECT)
                .context("loading xdp-gen")?;
            let prog = xlb_testbed::xdp::load_program(&mut ebpf, "xdp_gen")?;
            let chunk = match load {
                Load::Saturated => CHUNK,
                Load::Paced(_) => PACED_CHUNK,
            };
            let start = Instant::now();
            let mut sent = 0u64;
            for _ in 0..MAX_CALLS * (CHUNK / chunk) {
                if start.elapsed() >= duration {
                    break;
                }
                prog.test_run(TestRunOptions {
                    data_in: Some(frame),
                    ctx_in: Some(&ctx),
                    repeat: chunk,
                    attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                    ..Default::default()
                })
                .context("BPF_PROG_TEST_RUN in live-frames mode")?;
                sent += u64::from(chunk);
                if let Load::Paced(rate) = load {
                    let due = Duration::from_secs_f64(sent as f64 / rate);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            }
            Ok((sent, start.elapsed()))
        })
    }

    /// Packets received by each sink's NIC so far.
    fn sink_packets(&self) -> Result<Vec<u64>> {
        self.sinks
            .iter()
            .map(|(ns, nic)| Ok(link_stats(ns, nic)?.rx_packets))
            .collect()
    }

    /// The CPU time of the path's tasks: the generator (this process), and
    /// whatever runs in the client's, the node's and the sinks' namespaces.
    fn cpu_clock(&self, control: &[u32]) -> Result<CpuClock> {
        CpuClock::new(
            [self.client, self.lb]
                .into_iter()
                .chain(self.sinks.iter().map(|(ns, _)| *ns)),
            control,
        )
    }

    /// The load-balancer node's view, for error messages: its NICs' and IP
    /// counters.
    fn lb_diagnostics(&self) -> String {
        let mut out = String::new();
        for nic in &self.lb_ifnames {
            out += &self
                .lb
                .ip(["-s", "link", "show", "dev", nic])
                .unwrap_or_else(|e| format!("{e:#}"));
            out.push('\n');
        }
        out + &self
            .lb
            .run(["cat", "/proc/net/snmp"])
            .unwrap_or_else(|e| format!("{e:#}"))
    }

    /// Generates for `duration` through the setup currently in place and
    /// counts what the sinks got; `extra` adds setup-specific state to the
    /// error if the path is broken. The CPU time of `control` (the pids of
    /// a load balancer's control plane, whose work is per second, not per
    /// packet) is counted apart from the path's.
    pub fn measure(
        &self,
        frame: &[u8],
        duration: Duration,
        load: Load,
        control: &[u32],
        extra: &dyn Fn() -> String,
    ) -> Result<Sample> {
        let clock = self.cpu_clock(control)?;
        self.generate(frame, WARMUP, load)?;
        std::thread::sleep(DRAIN);
        let before = self.sink_packets()?;
        let (cpu0, busy0) = (clock.now()?, machine_busy()?);
        let (sent, elapsed) = self.generate(frame, duration, load)?;
        std::thread::sleep(DRAIN);
        let (cpu, busy) = (clock.now()? - cpu0, machine_busy()? - busy0);
        let (cpu, control_cpu) = (cpu.path, cpu.apart);
        let per_sink: Vec<u64> = self
            .sink_packets()?
            .iter()
            .zip(&before)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        let delivered = per_sink.iter().sum();
        ensure!(
            delivered as f64 >= MIN_DELIVERED * sent as f64,
            "only {delivered} of {sent} generated frames reached a backend\n{}\n{}",
            extra(),
            self.lb_diagnostics()
        );
        Ok(Sample {
            sent,
            delivered,
            per_sink,
            elapsed,
            cpu,
            control_cpu,
            machine_busy: busy,
        })
    }
}

/// Below this share of the offered frames reaching the sinks, the path is
/// taken to be broken rather than slow, and the case fails.
const MIN_DELIVERED: f64 = 0.01;

/// What one measurement saw.
pub struct Sample {
    sent: u64,
    pub delivered: u64,
    /// `delivered` by sink, in [`PpsPath::sinks`] order.
    pub per_sink: Vec<u64>,
    elapsed: Duration,
    /// CPU time of the path's tasks during the measurement (and the drain
    /// after it).
    cpu: Duration,
    /// CPU time of the control-plane processes meanwhile.
    control_cpu: Duration,
    /// The whole machine's busy time meanwhile, for context.
    machine_busy: Duration,
}

impl Sample {
    fn rate(&self, count: u64) -> f64 {
        count as f64 / self.elapsed.as_secs_f64()
    }

    fn cpu_ns_per_packet(&self) -> f64 {
        self.cpu.as_nanos() as f64 / self.delivered as f64
    }

    /// The control plane's CPU time, as a share of one core.
    fn control_share(&self) -> f64 {
        self.control_cpu.as_secs_f64() / self.elapsed.as_secs_f64()
    }
}

/// A setup to measure: its name, and a measurement of the given length at
/// the given load.
pub type Setup<'a> = (&'static str, &'a dyn Fn(Duration, Load) -> Result<Sample>);

/// Rounds of the floor path and every setup in turn (so that drift on a
/// shared machine hits them alike): each round measures all saturated, then
/// all again at [`PACED_SHARE`] of the round's lowest delivered rate. One
/// row per setup, the floor path's first; ratios of delivered rates against
/// the first of `setups`, CPU time per packet against the floor path's.
pub fn compare(quick: bool, floor: Setup, setups: &[Setup]) -> Result<Vec<Row>> {
    let all: Vec<&Setup> = std::iter::once(&floor).chain(setups).collect();
    let mut runs: Vec<Runs> = all.iter().map(|_| Runs::default()).collect();
    for _ in 0..super::rounds(quick) {
        for ((_, measure), r) in all.iter().zip(&mut runs) {
            r.saturated.push(measure(duration(quick), Load::Saturated)?);
        }
        let rate = PACED_SHARE
            * runs
                .iter()
                .map(|r| {
                    r.saturated
                        .last()
                        .map_or(f64::INFINITY, |s| s.rate(s.delivered))
                })
                .fold(f64::INFINITY, f64::min);
        for ((name, measure), r) in all.iter().zip(&mut runs) {
            let s = measure(duration(quick), Load::Paced(rate))?;
            say(&format!(
                "  {name:<28} paced at {rate:>8.0} pps: delivered {:>8.0} pps, {:>6.0} ns CPU \
                 per packet ({:.0} % of the machine's busy time; control plane {:.2} % of a \
                 core)",
                s.rate(s.delivered),
                s.cpu_ns_per_packet(),
                100.0 * s.cpu.as_secs_f64() / s.machine_busy.as_secs_f64().max(1e-9),
                100.0 * s.control_share()
            ));
            r.paced.push(s);
        }
    }
    Ok(rows(all.iter().map(|(name, _)| *name).zip(runs).collect()))
}

/// One setup's samples over the rounds.
#[derive(Default)]
struct Runs {
    saturated: Vec<Sample>,
    paced: Vec<Sample>,
}

/// One row per setup, from its rounds: medians, the rounds' range, the
/// ratio of delivered rates against the second setup (the first after the
/// floor path), CPU time per packet against the first (the floor path).
fn rows(setups: Vec<(&'static str, Runs)>) -> Vec<Row> {
    let rates = |runs: &[Sample], count: fn(&Sample) -> u64| -> Vec<f64> {
        runs.iter().map(|s| s.rate(count(s))).collect()
    };
    let pps = |runs: &[Sample], count: fn(&Sample) -> u64| median(&mut rates(runs, count));
    let base = pps(&setups[1].1.saturated, |s| s.delivered);
    let floor_cpu: Vec<f64> = setups[0]
        .1
        .paced
        .iter()
        .map(Sample::cpu_ns_per_packet)
        .collect();
    setups
        .iter()
        .enumerate()
        .map(|(i, (setup, runs))| {
            let sat = &runs.saturated;
            let (offered, delivered) = (pps(sat, |s| s.sent), pps(sat, |s| s.delivered));
            let mut cpu: Vec<f64> = runs.paced.iter().map(Sample::cpu_ns_per_packet).collect();
            let marginal: Vec<f64> = cpu.iter().zip(&floor_cpu).map(|(c, f)| c - f).collect();
            let mut control: Vec<f64> = runs.paced.iter().map(Sample::control_share).collect();
            let mut sat_cpu: Vec<f64> = sat.iter().map(Sample::cpu_ns_per_packet).collect();
            let mut shares: Vec<f64> = runs
                .paced
                .iter()
                .map(|s| s.delivered as f64 / s.sent as f64)
                .collect();
            let row = Row {
                setup,
                offered,
                delivered,
                range: spread(&rates(sat, |s| s.delivered)),
                ratio: delivered / base,
                paced: pps(&runs.paced, |s| s.sent),
                paced_delivered: median(&mut shares),
                cpu_range: spread(&cpu),
                cpu_ns: median(&mut cpu),
                control_share: median(&mut control),
                saturated_cpu_ns: median(&mut sat_cpu),
                marginal_ns: (i > 0).then(|| {
                    let range = spread(&marginal);
                    (median(&mut marginal.clone()), range)
                }),
            };
            say(&format!(
                "  {setup:<28} offered {offered:>10.0} pps, delivered {delivered:>10.0} pps \
                 ({:.0} ns CPU per packet); paced: {:>6.0} ns CPU per packet, {:>6.0} over the \
                 floor (median of {})",
                row.saturated_cpu_ns,
                row.cpu_ns,
                row.marginal_ns.map_or(0.0, |m| m.0),
                sat.len()
            ));
            row
        })
        .collect()
}

/// The generator's frame: UDP from `src` (source port rewritten per frame)
/// to `vip`:[`SINK_PORT`], addressed to the load balancer's MAC.
pub fn sink_frame(lb_mac: Mac, client_mac: Mac, src: Ipv4Addr, vip: Ipv4Addr) -> Vec<u8> {
    // No UDP checksum: the generator rewrites the source port per frame.
    Frame::new(client_mac, lb_mac, src, vip)
        .no_l4_checksum()
        .udp(10_000, SINK_PORT, &[0; 18])
}

/// The length of one measurement.
fn duration(quick: bool) -> Duration {
    Duration::from_secs(if quick { 2 } else { 5 })
}

pub const FLOOR: &str = "floor: MAC rewrite to backend 1, XDP_TX";

pub fn run(b: &Bench, quick: bool) -> Result<Vec<Row>> {
    let t = &b.topo;
    let frame = sink_frame(b.lb_mac, b.client_mac, t.client_addr4(), t.vip4());
    let path = b.pps_path();
    compare(
        quick,
        (FLOOR, &|d, load| through_floor(b, &path, &frame, d, load)),
        &[
            ("xlb DSR (native XDP)", &|d, load| {
                through_xlb(b, &path, &frame, d, load)
            }),
            ("nftables DNAT (jhash)", &|d, load| {
                through_dnat(b, &path, &frame, d, load)
            }),
        ],
    )
}

/// The floor path of the DSR topology: `xdp-fwd` on the node's NIC sends
/// every frame back out to backend 1 (the VIP is on its `lo`).
fn through_floor(
    b: &Bench,
    path: &PpsPath,
    frame: &[u8],
    duration: Duration,
    load: Load,
) -> Result<Sample> {
    let t = &b.topo;
    let (_, backend_mac) = link(t.backend(1), &t.backend_ifname(1))?;
    let fwd = Forwarder {
        dst_mac: backend_mac,
        src_mac: b.lb_mac,
        redirect: None,
        daddr: None,
    };
    let _attached = fwd.attach(t.lb(), &t.lb_ifname())?;
    let sample = path
        .measure(frame, duration, load, &[], &String::new)
        .context("the floor path")?;
    check_floor(&sample)?;
    Ok(sample)
}

/// `xdp-fwd` (the floor path's program, tests/testbed-ebpf/src/fwd.rs):
/// every frame to one backend.
pub struct Forwarder {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    /// The NIC to redirect to (its ifindex in the node's namespace);
    /// `None`: `XDP_TX`.
    pub redirect: Option<u32>,
    /// The IPv4 destination to write; `None`: the VIP stays.
    pub daddr: Option<Ipv4Addr>,
}

impl Forwarder {
    /// Attaches the program in native mode to `ifname` in `ns`; attached
    /// while the returned object lives.
    pub fn attach(&self, ns: &NetNs, ifname: &str) -> Result<aya::Ebpf> {
        ns.in_ns(|| -> Result<aya::Ebpf> {
            let daddr = self.daddr.map_or([0; 4], |a| a.octets());
            let ifindex = self.redirect.unwrap_or(0);
            let mut ebpf = aya::EbpfLoader::new()
                .override_global("FWD_DST_MAC", &self.dst_mac, true)
                .override_global("FWD_SRC_MAC", &self.src_mac, true)
                .override_global("FWD_IFINDEX", &ifindex, true)
                .override_global("FWD_DADDR", &daddr, true)
                .load(xlb_testbed::xdp::XDP_FWD_OBJECT)
                .context("loading xdp-fwd")?;
            let prog = xlb_testbed::xdp::load_program(&mut ebpf, "xdp_fwd")?;
            prog.attach(ifname, aya::programs::XdpMode::Driver)
                .with_context(|| {
                    format!(
                        "attaching xdp_fwd to {ifname} (native mode): {}",
                        ns.ip(["-d", "link", "show", "dev", ifname])
                            .unwrap_or_else(|e| format!("{e:#}"))
                    )
                })?;
            Ok(ebpf)
        })
        .and_then(|ebpf| {
            // The check the setups without a program rely on sees this one.
            ensure!(
                xdp_attached(ns, ifname)?,
                "xdp_fwd attached to {ifname}, but `ip link` shows no XDP program"
            );
            Ok(ebpf)
        })
    }
}

/// Proof that the floor program forwarded the frames: a frame leaves the
/// generator addressed to the node's MAC, so it reaches backend 1's NIC
/// only if the node rewrote it, and the others' not at all (a flooding
/// bridge would hand it to every sink alike).
pub fn check_floor(sample: &Sample) -> Result<()> {
    let others: u64 = sample.per_sink[1..].iter().sum();
    ensure!(
        sample.per_sink[0] as f64 >= 0.99 * sample.delivered as f64,
        "the floor path sent everything to backend 1, but the sinks got {:?}",
        sample.per_sink
    );
    ensure!(
        others as f64 <= 0.01 * sample.delivered as f64,
        "frames reached backends 2.. on the floor path: {:?}",
        sample.per_sink
    );
    Ok(())
}

fn through_xlb(
    b: &Bench,
    path: &PpsPath,
    frame: &[u8],
    duration: Duration,
    load: Load,
) -> Result<Sample> {
    let xlb = b.start_xlb()?;
    let sample = path
        .measure(frame, duration, load, &[xlb.pid()], &|| xlb.log_tail(20))
        .context("xlb DSR")
        .and_then(|s| check_forwarded(&xlb, "sink4", &s).map(|()| s));
    stop_xlb(xlb)?;
    sample
}

/// Proof that the frames went through xlb and not around it (in DSR, a
/// frame sent with stale headers could reach a backend directly): xlb's
/// counter of VIP `vip` holds at least 90 % of what the sinks got.
pub fn check_forwarded(xlb: &Xlb, vip: &str, sample: &Sample) -> Result<()> {
    let status = xlb.status()?;
    let forwarded = status_vip(&status, vip)?.packets;
    ensure!(
        forwarded as f64 >= 0.9 * sample.delivered as f64,
        "xlb counted {forwarded} packets on VIP {vip} but the backends got {}",
        sample.delivered
    );
    Ok(())
}

fn through_dnat(
    b: &Bench,
    path: &PpsPath,
    frame: &[u8],
    duration: Duration,
    load: Load,
) -> Result<Sample> {
    ensure_no_xdp(path.lb, &path.lb_ifnames, "nftables DNAT")?;
    let dnat = b.dnat()?;
    path.measure(frame, duration, load, &[], &|| dnat.listing())
        .context("nftables DNAT")
}
