//! `xlb trace`: what the data plane decided for each packet that matches
//! a filter, printed as it happens and optionally written to a pcapng
//! capture with the decision as each packet's comment.
//!
//! The CLI asks the running daemon to start the trace (the controller
//! writes the filter and sets `LB_F_TRACE`, with a deadline the daemon
//! and the data plane both keep), then reads the pinned `TRACE_EVENTS`
//! ring buffer itself. Reading it here rather than streaming through the
//! daemon keeps per-packet work off the daemon, whose two threads run
//! health checks, VRRP and the sync, and keeps the control socket one
//! request, one reply. A CLI that dies leaves the trace to its deadline.
//!
//! - `filter`: the request's filter in the data plane's terms.
//! - `render`: a record in words.
//! - `pcapng`: the capture file.

pub mod filter;
pub mod pcapng;
pub mod render;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use aya::maps::{Map, MapData, PerCpuArray, RingBuf};
use lb_common::{TRACE_CAPTURE, TraceRecord, trace};

use crate::api::{Reply, Request, TraceSpec, TraceStarted};
use crate::clock::{monotonic_ns, realtime_ns};
use crate::ctl;

/// How often the ring is read: the data plane submits records without
/// waking the reader (a wake-up would cost it an interrupt per packet).
const POLL: Duration = Duration::from_millis(5);

/// What to trace and where to put it.
#[derive(Debug, Clone)]
pub struct Options {
    pub spec: TraceSpec,
    /// Stop after this many packets.
    pub count: usize,
    /// Also write the packets to this pcapng file.
    pub pcap: Option<PathBuf>,
}

/// Why the trace ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Count,
    Time,
    Interrupted,
}

/// What a trace saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub packets: usize,
    /// Records the data plane could not queue (the ring was full), during
    /// this trace.
    pub lost: u64,
    pub ended: Ended,
    /// The filter in words, as the daemon understood it.
    pub filter: String,
}

/// Starts a trace through the daemon on `socket`, prints a line per
/// packet to `out` (and to the capture), and ends it.
pub fn run(socket: &Path, opts: &Options, out: &mut dyn Write) -> Result<Summary> {
    if opts.count == 0 {
        bail!("--count must be at least 1");
    }
    let started = match ctl::call(socket, &Request::Trace(opts.spec.clone()))? {
        Reply::Trace(s) => *s,
        Reply::Error { message } => bail!("daemon: {message}"),
        other => bail!("daemon: unexpected reply {other:?}"),
    };
    eprintln!(
        "xlb trace: tracing {} (trace {}) for {} s or {} packets; Ctrl-C stops",
        started.filter, started.id, opts.spec.seconds, opts.count
    );
    let result = follow(&started, opts, out);
    // Ended now rather than at its deadline; if this fails, the deadline
    // still ends it.
    match ctl::call(socket, &Request::TraceStop { id: started.id }) {
        Ok(Reply::Ok { .. }) => {}
        Ok(other) => eprintln!("xlb trace: stopping the trace: {other:?}"),
        Err(e) => eprintln!("xlb trace: stopping the trace: {e:#}"),
    }
    result
}

fn open_pins(s: &TraceStarted) -> Result<(RingBuf<MapData>, PerCpuArray<MapData, u64>)> {
    let hint = "xlb trace reads the data plane's pinned maps: run it as root, on the \
                daemon's host";
    let data = MapData::from_pin(&s.ring_pin)
        .with_context(|| format!("opening {} ({hint})", s.ring_pin))?;
    let ring = RingBuf::try_from(Map::RingBuf(data))
        .with_context(|| format!("{} is not a ring buffer", s.ring_pin))?;
    let data = MapData::from_pin(&s.stats_pin)
        .with_context(|| format!("opening {} ({hint})", s.stats_pin))?;
    let stats = PerCpuArray::try_from(Map::PerCpuArray(data))
        .with_context(|| format!("{} has an unexpected layout", s.stats_pin))?;
    Ok((ring, stats))
}

fn lost(stats: &PerCpuArray<MapData, u64>) -> Result<u64> {
    Ok(stats
        .get(&trace::stat::LOST, 0)
        .context("reading TRACE_STATS")?
        .iter()
        .sum())
}

/// Reads the ring until `opts.count` packets, the trace's deadline, or
/// SIGINT/SIGTERM.
fn follow(s: &TraceStarted, opts: &Options, out: &mut dyn Write) -> Result<Summary> {
    let (mut ring, stats) = open_pins(s)?;
    let lost_before = lost(&stats)?;
    let mut pcap = match &opts.pcap {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let w = pcapng::Writer::new(std::io::BufWriter::new(file), TRACE_CAPTURE as u32)
                .with_context(|| format!("writing {}", path.display()))?;
            Some((path, w))
        }
        None => None,
    };
    // Records carry the data plane's clock; the capture and the lines
    // show wall-clock time.
    let to_unix = realtime_ns().wrapping_sub(monotonic_ns());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut packets = 0;
    let ended = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut tick = tokio::time::interval(POLL);
        loop {
            // The deadline is checked before the last read, so that what
            // the data plane recorded up to it is read.
            let past_deadline = monotonic_ns() > s.until_ns;
            tokio::select! {
                _ = tick.tick() => {}
                _ = sigint.recv() => return Ok(Ended::Interrupted),
                _ = sigterm.recv() => return Ok(Ended::Interrupted),
            }
            while let Some(item) = ring.next() {
                let Some(r) = TraceRecord::from_bytes(&item) else {
                    continue;
                };
                drop(item);
                // Left in the ring by an earlier trace whose reader died.
                if r.at < s.since_ns {
                    continue;
                }
                let unix_ns = r.at.wrapping_add(to_unix);
                writeln!(out, "{}", render::line(&r, s, unix_ns))?;
                if let Some((path, w)) = &mut pcap {
                    let comment = format!("xlb: {}", render::decision(&r, s));
                    let ifname = render::interface(r.ifindex, s);
                    w.packet(r.ifindex, &ifname, unix_ns, r.len, r.packet(), &comment)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                packets += 1;
                if packets >= opts.count {
                    return Ok(Ended::Count);
                }
            }
            out.flush()?;
            if past_deadline {
                return Ok(Ended::Time);
            }
        }
    });
    let ended: Result<Ended> = ended;
    let ended = ended?;
    out.flush()?;
    if let Some((path, mut w)) = pcap {
        w.flush()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(Summary {
        packets,
        lost: lost(&stats)?.saturating_sub(lost_before),
        ended,
        filter: s.filter.clone(),
    })
}

/// The summary line `xlb trace` ends with.
pub fn summary_line(s: &Summary, opts: &Options) -> String {
    let why = match s.ended {
        Ended::Count => format!("--count {} reached", opts.count),
        Ended::Time => format!("{} s passed", opts.spec.seconds),
        Ended::Interrupted => "interrupted".to_owned(),
    };
    let lost = if s.lost > 0 {
        format!(
            "; {} records lost (the ring buffer was full: narrow the filter)",
            s.lost
        )
    } else {
        String::new()
    };
    let pcap = opts
        .pcap
        .as_ref()
        .map_or_else(String::new, |p| format!(", written to {}", p.display()));
    format!(
        "xlb trace: {} packets ({}){pcap}: {why}{lost}",
        s.packets, s.filter
    )
}
