//! `xlb-demo` (what `cargo xtask run` runs without arguments): a
//! self-contained demo of the real `xlb` binary in network namespaces.
//!
//! Builds a client, an xlb node and three nginx backends on one bridge,
//! runs xlb with weights 1:1:2 for an IPv4 and an IPv6 VIP, sends 300
//! requests to each VIP (one connection each), and prints who answered.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

use crate::netns;
use crate::topology::{
    BIG_BODY_LEN, Topology, VIP_PORT, backend_counters, http_get_many, status_vip, tcp_probe,
};

const WEIGHTS: [u32; 3] = [1, 1, 2];
const REQUESTS: usize = 300;
const BIG_REQUESTS: usize = 50;
const RESTART_REQUESTS: usize = 20;
const REQ_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs the demo against the `xlb` binary at `xlb_exe`.
pub fn run(xlb_exe: &Path) -> anyhow::Result<()> {
    ensure!(
        netns::is_root(),
        "the demo builds network namespaces and attaches XDP: run it as root \
         (e.g. `sudo -E cargo xtask run`)"
    );
    let started = Instant::now();
    println!("xlb demo: direct server return (DSR) load balancing in network namespaces");
    println!();
    println!("Building the topology: client, xlb node and 3 nginx backends on one bridge...");
    let topo = Topology::dsr(WEIGHTS.len())?;
    let p = topo.prefix();
    println!(
        "  namespaces {p}c (client {}), {p}lb (xlb {}), {p}b1..{p}b3 (backends {}..{}), {p}sw (bridge)",
        topo.client_addr4(),
        topo.lb_addr4(),
        topo.backend_addr4(1),
        topo.backend_addr4(3),
    );
    println!(
        "  VIPs {}:{VIP_PORT} and [{}]:{VIP_PORT} (on the xlb NIC; on lo of every backend)",
        topo.vip4(),
        topo.vip6()
    );

    let config = topo.write_xlb_config(&WEIGHTS)?;
    println!();
    println!(
        "Starting `xlb run` on {} in namespace {} (weights 1:1:2)...",
        topo.lb_ifname(),
        topo.lb().name()
    );
    let xlb = topo.start_xlb(xlb_exe, &config)?;
    let ready = xlb.wait_ready(Duration::from_secs(10))?;
    println!("  ready: XDP mode {}, pid {}", ready.xdp_mode, xlb.pid());

    let mut failures = Vec::new();
    let mut counts: Vec<(&str, IpAddr, BTreeMap<String, usize>, usize)> = Vec::new();
    for (vip_name, vip) in [
        ("web4", IpAddr::from(topo.vip4())),
        ("web6", topo.vip6().into()),
    ] {
        let results = http_get_many(
            topo.client(),
            SocketAddr::new(vip, VIP_PORT),
            "/",
            REQUESTS,
            REQ_TIMEOUT,
        );
        let mut per_backend = BTreeMap::new();
        let mut ok = 0;
        for r in results {
            match r {
                Ok((200, body)) => {
                    *per_backend.entry(body.trim().to_owned()).or_insert(0) += 1;
                    ok += 1;
                }
                Ok((status, body)) => failures.push(format!("{vip_name}: HTTP {status} {body:?}")),
                Err(e) => failures.push(format!("{vip_name}: {e:#}")),
            }
        }
        counts.push((vip_name, vip, per_backend, ok));
    }
    let status = xlb.status()?;

    let total_weight: u32 = WEIGHTS.iter().sum();
    for (vip_name, vip, per_backend, ok) in &counts {
        println!();
        let vip_pkts = status_vip(&status, vip_name)?.packets;
        println!(
            "VIP {vip_name} {}: {ok}/{REQUESTS} requests answered, {vip_pkts} client packets forwarded by xlb",
            SocketAddr::new(*vip, VIP_PORT)
        );
        println!(
            "  {:<10} {:>6} {:>9} {:>8} {:>9} {:>12} {:>10}",
            "backend", "weight", "expected", "replies", "observed", "xlb packets", "xlb bytes"
        );
        let counters = backend_counters(&status, vip_name)?;
        for (idx, w) in WEIGHTS.iter().enumerate() {
            let name = format!("backend-{}", idx + 1);
            let replies = per_backend.get(&name).copied().unwrap_or(0);
            let (pkts, bytes) = counters
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, p, b)| (*p, *b))
                .unwrap_or_default();
            println!(
                "  {:<10} {:>6} {:>8.1}% {:>8} {:>8.1}% {:>12} {:>10}",
                name,
                w,
                100.0 * f64::from(*w) / f64::from(total_weight),
                replies,
                100.0 * replies as f64 / REQUESTS as f64,
                pkts,
                bytes
            );
        }
    }

    // Replies bypass the load balancer: compare what the xlb NIC saw with
    // what the client received.
    println!();
    let before = topo.lb_link_stats()?;
    let big = http_get_many(
        topo.client(),
        SocketAddr::new(topo.vip4().into(), VIP_PORT),
        "/big",
        BIG_REQUESTS,
        REQ_TIMEOUT,
    );
    let delta = topo.lb_link_stats()?.since(&before);
    let received: usize = big
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|(_, body)| body.len())
        .sum();
    let big_ok = big.iter().filter(|r| r.is_ok()).count();
    println!(
        "Direct return: {big_ok} x GET /big ({} KiB each) gave the client {} KiB; \
         meanwhile the xlb NIC received {} KiB and sent {} KiB.",
        BIG_BODY_LEN / 1024,
        received / 1024,
        delta.rx_bytes / 1024,
        delta.tx_bytes / 1024
    );

    // Non-VIP traffic to the xlb node itself still reaches its stack.
    for ip in [IpAddr::from(topo.lb_addr4()), topo.lb_addr6().into()] {
        match tcp_probe(topo.lb(), topo.client(), ip, Duration::from_secs(2)) {
            Ok(()) => {
                println!("The xlb node's own address {ip} answers TCP (non-VIP traffic passes).")
            }
            Err(e) => failures.push(format!("xlb node {ip}: {e:#}")),
        }
    }

    // The data plane outlives the process: stop xlb, keep serving, start
    // it again and it adopts what runs.
    println!();
    if xlb.stop(Duration::from_secs(5)) {
        println!("Stopped xlb (SIGTERM): the XDP program stays attached with its pinned maps.");
    } else {
        println!("xlb did not exit on SIGTERM within 5 s; killed it.");
    }
    let vip4 = SocketAddr::new(topo.vip4().into(), VIP_PORT);
    let alone = http_get_many(topo.client(), vip4, "/", RESTART_REQUESTS, REQ_TIMEOUT);
    let alone_ok = alone.iter().filter(|r| r.is_ok()).count();
    println!(
        "  with no xlb process running: {alone_ok}/{RESTART_REQUESTS} requests to web4 answered"
    );
    if alone_ok != RESTART_REQUESTS {
        failures.push(format!(
            "{} of {RESTART_REQUESTS} requests failed with no xlb process",
            RESTART_REQUESTS - alone_ok
        ));
    }
    let xlb = topo.start_xlb(xlb_exe, &config)?;
    xlb.wait_ready(Duration::from_secs(10))?;
    let again = xlb.status()?;
    println!(
        "Started xlb again (pid {}); its `xlb status` says:",
        xlb.pid()
    );
    if let Some(line) = again
        .render()
        .lines()
        .find(|l| l.starts_with("data plane:"))
    {
        println!("  {line}");
    }
    println!(
        "  web4 counters carried over: {} client packets forwarded so far",
        status_vip(&again, "web4")?.packets
    );
    println!();
    match xlb.down() {
        Ok(msg) => println!("`xlb down`: {msg}"),
        Err(e) => failures.push(format!("xlb down: {e:#}")),
    }
    drop(topo);
    println!(
        "Removed the namespaces. Total time {:.1} s.",
        started.elapsed().as_secs_f64()
    );
    println!();
    println!("What happened: the XDP program on the xlb node picked a backend per connection");
    println!("(weighted 1:1:2) and bounced each client packet back out with the backend's MAC;");
    println!("the backends, holding the VIP on lo, answered the client directly, bypassing xlb.");

    if !failures.is_empty() {
        let shown: Vec<&String> = failures.iter().take(5).collect();
        bail!("{} request(s) failed, e.g.: {shown:#?}", failures.len());
    }
    for (vip_name, _, per_backend, _) in &counts {
        if per_backend.len() < WEIGHTS.len() {
            bail!(
                "VIP {vip_name}: only {} of {} backends answered",
                per_backend.len(),
                WEIGHTS.len()
            );
        }
    }
    Ok(())
}
