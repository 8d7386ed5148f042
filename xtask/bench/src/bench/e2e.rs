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

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, ensure};
use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp};
use xlb_testbed::frames::{Frame, Mac};
use xlb_testbed::netns::NetNs;
use xlb_testbed::topology::{Xlb, link_stats, status_vip};

use super::topo::{Bench, SINK_PORT};
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
    /// Sends `frame` out of the client's veth for `duration`; returns frames
    /// sent and the time taken.
    fn generate(&self, frame: &[u8], duration: Duration) -> Result<(u64, Duration)> {
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
            let prog: &mut Xdp = ebpf
                .program_mut("xdp_gen")
                .ok_or_else(|| anyhow!("no program xdp_gen in the object"))?
                .try_into()?;
            prog.load().context("loading xdp_gen")?;
            let start = Instant::now();
            let mut sent = 0u64;
            for _ in 0..MAX_CALLS {
                if start.elapsed() >= duration {
                    break;
                }
                prog.test_run(TestRunOptions {
                    data_in: Some(frame),
                    ctx_in: Some(&ctx),
                    repeat: CHUNK,
                    attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                    ..Default::default()
                })
                .context("BPF_PROG_TEST_RUN in live-frames mode")?;
                sent += u64::from(CHUNK);
            }
            Ok((sent, start.elapsed()))
        })
    }

    /// Packets received by all sinks' NICs so far.
    fn sink_packets(&self) -> Result<u64> {
        let mut total = 0;
        for (ns, nic) in &self.sinks {
            total += link_stats(ns, nic)?.rx_packets;
        }
        Ok(total)
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
    /// error if the path is broken.
    pub fn measure(
        &self,
        frame: &[u8],
        duration: Duration,
        extra: &dyn Fn() -> String,
    ) -> Result<Sample> {
        self.generate(frame, WARMUP)?;
        std::thread::sleep(DRAIN);
        let before = self.sink_packets()?;
        let (sent, elapsed) = self.generate(frame, duration)?;
        std::thread::sleep(DRAIN);
        let delivered = self.sink_packets()?.saturating_sub(before);
        ensure!(
            delivered as f64 >= MIN_DELIVERED * sent as f64,
            "only {delivered} of {sent} generated frames reached a backend\n{}\n{}",
            extra(),
            self.lb_diagnostics()
        );
        Ok(Sample {
            sent,
            delivered,
            elapsed,
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
    elapsed: Duration,
}

/// A setup to measure: its name, and a measurement of the given length.
pub type Setup<'a> = (&'static str, &'a dyn Fn(Duration) -> Result<Sample>);

/// Rounds of every setup in turn (so that drift on a shared machine hits
/// them alike), then one row per setup; ratios against the first.
pub fn compare(quick: bool, setups: &[Setup]) -> Result<Vec<Row>> {
    let mut runs: Vec<(&'static str, Vec<Sample>)> =
        setups.iter().map(|&(name, _)| (name, Vec::new())).collect();
    for _ in 0..super::rounds(quick) {
        for ((_, measure), (_, samples)) in setups.iter().zip(&mut runs) {
            samples.push(measure(duration(quick))?);
        }
    }
    Ok(rows(runs))
}

/// One row per setup, from its rounds: medians, the rounds' range, and the
/// ratio against the first setup.
fn rows(setups: Vec<(&'static str, Vec<Sample>)>) -> Vec<Row> {
    let rates = |runs: &[Sample], count: fn(&Sample) -> u64| -> Vec<f64> {
        runs.iter()
            .map(|s| count(s) as f64 / s.elapsed.as_secs_f64())
            .collect()
    };
    let pps = |runs: &[Sample], count: fn(&Sample) -> u64| median(&mut rates(runs, count));
    let base = pps(&setups[0].1, |s| s.delivered);
    setups
        .into_iter()
        .map(|(setup, runs)| {
            let (offered, delivered) = (pps(&runs, |s| s.sent), pps(&runs, |s| s.delivered));
            say(&format!(
                "  {setup:<28} offered {offered:>10.0} pps, delivered {delivered:>10.0} pps (median of {})",
                runs.len()
            ));
            Row {
                setup,
                offered,
                delivered,
                range: spread(&rates(&runs, |s| s.delivered)),
                ratio: delivered / base,
            }
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

pub fn run(b: &Bench, quick: bool) -> Result<Vec<Row>> {
    let t = &b.topo;
    let frame = sink_frame(b.lb_mac, b.client_mac, t.client_addr4(), t.vip4());
    let path = b.pps_path();
    compare(
        quick,
        &[
            ("xlb DSR (native XDP)", &|d| {
                through_xlb(b, &path, &frame, d)
            }),
            ("nftables DNAT (jhash)", &|d| {
                through_dnat(b, &path, &frame, d)
            }),
        ],
    )
}

fn through_xlb(b: &Bench, path: &PpsPath, frame: &[u8], duration: Duration) -> Result<Sample> {
    let xlb = b.start_xlb()?;
    let sample = path
        .measure(frame, duration, &|| xlb.log_tail(20))
        .context("xlb DSR")?;
    check_forwarded(&xlb, "sink4", &sample)?;
    xlb.stop(Duration::from_secs(3));
    Ok(sample)
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

fn through_dnat(b: &Bench, path: &PpsPath, frame: &[u8], duration: Duration) -> Result<Sample> {
    let dnat = b.dnat()?;
    path.measure(frame, duration, &|| dnat.listing())
        .context("nftables DNAT")
}
