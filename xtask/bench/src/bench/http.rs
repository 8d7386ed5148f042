//! wrk from the client namespace to VIP:80 through xlb (DSR), HAProxy in
//! TCP mode on the xlb node, and nftables DNAT on the xlb node, the same
//! three nginx backends behind each. Every round runs the setups in that
//! order. DNAT's conntrack entries outlive its table, but the kernel only
//! consults conntrack in a namespace while some rule set needs it, and the
//! DNAT table is the only one: HAProxy's connections never meet them.
//! Two runs per setup: keep-alive (requests/s) and `Connection: close`
//! (one connection per request: connections/s).
//!
//! Every round also runs the floor path (the node runs `xdp-fwd`: every
//! frame to backend 1, MAC rewrite, `XDP_TX`; backend 1 answers the client
//! directly, as in DSR), and every run counts the CPU time of the path's
//! tasks ([`super::cpu`]: wrk, nginx, HAProxy, the softirqs they set off)
//! per request; a setup's CPU time per request minus the floor path's in
//! the same mode is what the load balancer adds. wrk runs closed-loop, so
//! each setup runs at the rate it sustains.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use xlb_testbed::netns::{ManagedChild, NetNs};
use xlb_testbed::topology::{VIP_PORT, http_get, link_stats};

use super::cpu::CpuClock;
use super::e2e::Forwarder;
use super::topo::{Bench, ensure_no_xdp, link, run_bounded, stop_xlb};
use super::{median, say, spread};

/// Concurrent connections of wrk (nginx allows 1,024 per backend).
pub const CONNECTIONS: u32 = 32;
const THREADS: u32 = 1;

pub struct Row {
    pub setup: &'static str,
    /// "keep-alive" or "new connection per request".
    pub mode: &'static str,
    /// Median over rounds.
    pub requests_per_s: f64,
    /// Lowest and highest round.
    pub range: (f64, f64),
    /// Over all rounds.
    pub requests: u64,
    /// Socket errors and non-2xx/3xx responses, over all rounds.
    pub errors: u64,
    /// `requests_per_s` / xlb's in the same mode.
    pub ratio: f64,
    /// CPU time of the path's tasks per request, µs (median, range).
    pub cpu_us: f64,
    pub cpu_range: (f64, f64),
    /// `cpu_us` minus the floor path's in the same round and mode (median,
    /// range); `None` for the floor path and where there is none.
    pub marginal_us: Option<(f64, (f64, f64))>,
}

pub(super) struct Wrk {
    pub(super) requests_per_s: f64,
    pub(super) requests: u64,
    pub(super) errors: u64,
    /// CPU time of the path's tasks over the run (set by
    /// [`both_modes_at`]).
    pub(super) cpu: Duration,
}

impl Wrk {
    fn cpu_us_per_request(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.requests as f64
    }
}

/// The numbers out of wrk's report.
fn parse_wrk(text: &str) -> Result<Wrk> {
    let mut rps = None;
    let mut requests = None;
    let mut errors = 0u64;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if line.contains(" requests in ") {
            requests = line.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().unwrap_or(0);
        }
    }
    Ok(Wrk {
        requests_per_s: rps.ok_or_else(|| anyhow!("no Requests/sec in wrk output:\n{text}"))?,
        requests: requests.ok_or_else(|| anyhow!("no request count in wrk output:\n{text}"))?,
        errors,
        cpu: Duration::ZERO,
    })
}

/// wrk from namespace `client` to `http://vip/`; its log goes to `dir`.
pub(super) fn wrk_at(
    client: &NetNs,
    dir: &Path,
    vip: SocketAddr,
    duration: Duration,
    close: bool,
) -> Result<Wrk> {
    let url = format!("http://{vip}/");
    let secs = format!("{}s", duration.as_secs());
    let mut cmd = client.exec(["wrk", "-t", &THREADS.to_string()]);
    cmd.args([
        "-c",
        &CONNECTIONS.to_string(),
        "-d",
        &secs,
        "--timeout",
        "2s",
    ]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(&url);
    let log = dir.join("bench-wrk.log");
    let out = run_bounded("wrk", &mut cmd, duration + Duration::from_secs(15), &log)?;
    let w = parse_wrk(&out)?;
    ensure!(w.requests > 0, "wrk completed no request to {url}:\n{out}");
    Ok(w)
}

/// HAProxy 2.x in TCP mode on the xlb node, round robin over the backends.
fn start_haproxy(b: &Bench) -> Result<ManagedChild> {
    let t = &b.topo;
    let servers: Vec<SocketAddr> = b
        .backends4()
        .iter()
        .map(|a| SocketAddr::new((*a).into(), VIP_PORT))
        .collect();
    let vip = SocketAddr::new(t.vip4().into(), VIP_PORT);
    let child = spawn_haproxy(t.lb(), t.dir(), vip, &servers)?;
    wait_serving(b, Duration::from_secs(5)).context("HAProxy never answered on the VIP")?;
    Ok(child)
}

/// HAProxy in TCP mode in namespace `lb`: `bind` → `servers`, round robin;
/// config and log in `dir`.
pub(super) fn spawn_haproxy(
    lb: &NetNs,
    dir: &Path,
    bind: SocketAddr,
    servers: &[SocketAddr],
) -> Result<ManagedChild> {
    let mut cfg = format!(
        "global\n    maxconn 4096\n\ndefaults\n    mode tcp\n    timeout connect 2s\n    \
         timeout client 30s\n    timeout server 30s\n\nfrontend vip\n    bind {bind}\n    \
         default_backend nginx\n\nbackend nginx\n    balance roundrobin\n"
    );
    for (i, addr) in servers.iter().enumerate() {
        cfg.push_str(&format!("    server b{} {addr}\n", i + 1));
    }
    let path = dir.join("bench-haproxy.cfg");
    std::fs::write(&path, cfg)?;
    let log = std::fs::File::create(dir.join("bench-haproxy.log"))?;
    let mut cmd = lb.exec(["haproxy", "-db", "-f"]);
    cmd.arg(&path).stdout(log.try_clone()?).stderr(log);
    ManagedChild::spawn("haproxy", &mut cmd)
}

/// Polls GET / on the VIP from the client until a backend answers.
fn wait_serving(b: &Bench, timeout: Duration) -> Result<()> {
    let vip = SocketAddr::new(b.topo.vip4().into(), VIP_PORT);
    wait_serving_at(b.topo.client(), vip, timeout)
}

/// Polls GET / on `vip` from namespace `client` until a backend answers.
pub(super) fn wait_serving_at(client: &NetNs, vip: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match http_get(client, vip, "/", Duration::from_millis(500)) {
            Ok((200, body)) if body.starts_with("backend-") => return Ok(()),
            Ok(other) => format!("{other:?}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("GET http://{vip}/: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(super) const MODES: [(&str, bool); 2] =
    [("keep-alive", false), ("new connection per request", true)];

/// An unmeasured wrk run before each setup's first, so that no setup pays
/// for cold caches, neighbour resolution or nginx warming up.
pub(super) const WARMUP: Duration = Duration::from_secs(1);

fn both_modes(b: &Bench, setup: &str, duration: Duration, clock: &CpuClock) -> Result<Vec<Wrk>> {
    let vip = SocketAddr::new(b.topo.vip4().into(), VIP_PORT);
    both_modes_at(b.topo.client(), b.topo.dir(), vip, setup, duration, clock)
}

/// The CPU clock of a wrk run: the client's, the node's and the backends'
/// namespaces (wrk, HAProxy, nginx), with `control` (xlb's pid) apart.
pub(super) fn wrk_clock<'a>(
    client: &'a NetNs,
    lb: &'a NetNs,
    backends: impl IntoIterator<Item = &'a NetNs>,
    control: &[u32],
) -> Result<CpuClock> {
    CpuClock::new([client, lb].into_iter().chain(backends), control)
}

/// An unmeasured warm-up, then wrk in every mode of [`MODES`], from
/// namespace `client` to `vip` through `setup`, with the CPU time of each
/// run on `clock`.
pub(super) fn both_modes_at(
    client: &NetNs,
    dir: &Path,
    vip: SocketAddr,
    setup: &str,
    duration: Duration,
    clock: &CpuClock,
) -> Result<Vec<Wrk>> {
    wait_serving_at(client, vip, Duration::from_secs(5))?;
    wrk_at(client, dir, vip, WARMUP, false).with_context(|| format!("warming up {setup}"))?;
    let mut out = Vec::new();
    for (mode, close) in MODES {
        let before = clock.now()?;
        let mut w = wrk_at(client, dir, vip, duration, close)
            .with_context(|| format!("wrk through {setup}, {mode}"))?;
        w.cpu = (clock.now()? - before).path;
        say(&format!(
            "  {setup:<24} {mode:<28} {:>9.0} req/s, {} errors, {:.1} µs CPU per request",
            w.requests_per_s,
            w.errors,
            w.cpu_us_per_request()
        ));
        out.push(w);
    }
    Ok(out)
}

const SETUPS: [&str; 4] = [
    "floor: MAC rewrite to backend 1, XDP_TX",
    "xlb DSR",
    "HAProxy (TCP mode)",
    "nftables DNAT (jhash)",
];

/// The client's source ports in each setup of [`SETUPS`], and the xlb
/// node's (HAProxy's connections to the backends; the DNAT setup's client
/// ports, which masquerading keeps, lie outside it). In `Connection: close`
/// runs every port is used many times over, and a backend keeps each
/// closed connection in TIME_WAIT for 60 s. It accepts a new SYN on such a
/// 4-tuple only if the sequence number or time stamp is newer, which holds
/// when the same peer opened both (both are monotonic per 4-tuple) and is
/// a coin toss when another setup did: the SYN then waits out a 1 s
/// retransmission. Disjoint port ranges keep one setup's 4-tuples at the
/// backends from meeting another's.
const CLIENT_PORTS: [(u16, u16); 3] = [(10_000, 27_999), (28_000, 45_999), (46_000, 63_999)];
const LB_PORTS: (u16, u16) = (10_000, 45_999);

/// Sets the ephemeral port range of `ns`.
fn port_range(ns: &NetNs, (lo, hi): (u16, u16)) -> Result<()> {
    ns.sysctl(&[&format!("net.ipv4.ip_local_port_range={lo} {hi}")])
}

/// One round: every setup in turn, both modes each; `[setup][mode]`.
fn round(b: &Bench, duration: Duration) -> Result<Vec<Vec<Wrk>>> {
    let t = &b.topo;
    let (client, lb) = (t.client(), t.lb());
    let backends = || (1..=t.backend_count()).map(|i| t.backend(i));
    let clock = wrk_clock(client, lb, backends(), &[])?;
    port_range(lb, LB_PORTS)?;
    // The floor path's connections are the client's to VIP:80, as xlb's:
    // the same peer, so they may share a port range.
    port_range(client, CLIENT_PORTS[0])?;
    let f = {
        let (_, backend_mac) = link(t.backend(1), &t.backend_ifname(1))?;
        let fwd = Forwarder {
            dst_mac: backend_mac,
            src_mac: b.lb_mac,
            redirect: None,
            daddr: None,
        };
        let _attached = fwd.attach(lb, &t.lb_ifname())?;
        let before = backend_packets(b)?;
        let f = both_modes(b, SETUPS[0], duration, &clock)?;
        check_one_backend(&before, &backend_packets(b)?)?;
        f
    };

    let xlb = b.start_xlb()?;
    let xlb_clock = wrk_clock(client, lb, backends(), &[xlb.pid()])?;
    let x = both_modes(b, SETUPS[1], duration, &xlb_clock);
    stop_xlb(xlb)?;
    let x = x?;

    port_range(client, CLIENT_PORTS[1])?;
    ensure_no_xdp(lb, &[t.lb_ifname()], SETUPS[2])?;
    let haproxy = start_haproxy(b)?;
    let h = both_modes(b, SETUPS[2], duration, &clock);
    haproxy.stop(Duration::from_secs(3));
    let h = h?;

    port_range(client, CLIENT_PORTS[2])?;
    ensure_no_xdp(lb, &[t.lb_ifname()], SETUPS[3])?;
    let dnat = b.dnat()?;
    let n = both_modes(b, SETUPS[3], duration, &clock)?;
    drop(dnat);
    Ok(vec![f, x, h, n])
}

/// Packets received by each backend's NIC so far.
fn backend_packets(b: &Bench) -> Result<Vec<u64>> {
    let t = &b.topo;
    (1..=t.backend_count())
        .map(|i| Ok(link_stats(t.backend(i), &t.backend_ifname(i))?.rx_packets))
        .collect()
}

/// Proof that the floor program forwarded the requests: every frame to the
/// VIP leaves the client addressed to the node's MAC, so backend 1 gets it
/// only if the node rewrote it, and the others get none of it.
fn check_one_backend(before: &[u64], after: &[u64]) -> Result<()> {
    let got: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let others: u64 = got[1..].iter().sum();
    ensure!(
        got[0] > 0 && others as f64 <= 0.01 * got[0] as f64,
        "the floor path sends everything to backend 1, but the backends got {got:?} packets"
    );
    Ok(())
}

/// Rounds of every setup in turn (so that drift on a shared machine hits
/// all setups alike); each row is the median over rounds.
pub fn run(b: &Bench, quick: bool) -> Result<Vec<Row>> {
    let duration = Duration::from_secs(if quick { 2 } else { 5 });
    let mut rounds = Vec::new();
    for _ in 0..super::rounds(quick) {
        rounds.push(round(b, duration)?);
    }
    Ok(rows(&SETUPS, &rounds, 1, Some(0)))
}

/// Rows (median over `rounds`, each `[setup][mode]`) for `setups`, every
/// ratio against setup `base` in the same mode, CPU time per request
/// against setup `floor` (if any) in the same round and mode.
pub(super) fn rows(
    setups: &[&'static str],
    rounds: &[Vec<Vec<Wrk>>],
    base: usize,
    floor: Option<usize>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for (si, setup) in setups.iter().enumerate() {
        for (mi, (mode, _)) in MODES.iter().enumerate() {
            let runs: Vec<&Wrk> = rounds.iter().map(|r| &r[si][mi]).collect();
            let mut rps: Vec<f64> = runs.iter().map(|w| w.requests_per_s).collect();
            let range = spread(&rps);
            let mut cpu: Vec<f64> = runs.iter().map(|w| w.cpu_us_per_request()).collect();
            let marginal_us = floor.filter(|&f| f != si).map(|f| {
                let mut m: Vec<f64> = rounds
                    .iter()
                    .map(|r| r[si][mi].cpu_us_per_request() - r[f][mi].cpu_us_per_request())
                    .collect();
                let range = spread(&m);
                (median(&mut m), range)
            });
            rows.push(Row {
                setup,
                mode,
                range,
                requests_per_s: median(&mut rps),
                requests: runs.iter().map(|w| w.requests).sum(),
                errors: runs.iter().map(|w| w.errors).sum(),
                ratio: 0.0,
                cpu_range: spread(&cpu),
                cpu_us: median(&mut cpu),
                marginal_us,
            });
        }
    }
    let n = MODES.len();
    let base: Vec<f64> = rows[base * n..(base + 1) * n]
        .iter()
        .map(|r| r.requests_per_s)
        .collect();
    for (i, r) in rows.iter_mut().enumerate() {
        r.ratio = r.requests_per_s / base[i % n];
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_wrk_report() {
        let text = "Running 5s test @ http://198.18.0.100:80/\n  1 threads and 32 connections\n  \
            Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     1.00ms  \
            0.50ms   9.00ms   90.00%\n  51234 requests in 5.00s, 7.80MB read\n  \
            Socket errors: connect 0, read 3, write 0, timeout 2\n  \
            Non-2xx or 3xx responses: 1\nRequests/sec:  10246.80\nTransfer/sec:      1.56MB\n";
        let w = parse_wrk(text).unwrap();
        assert_eq!(w.requests, 51234);
        assert_eq!(w.errors, 6);
        assert!((w.requests_per_s - 10246.8).abs() < 1e-9);
        assert!(parse_wrk("garbage").is_err());
    }
}
