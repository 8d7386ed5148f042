//! VRRP end to end: two xlb nodes, a client and nginx backends on one
//! segment (`Topology::vrrp_pair`); for `vrrp.peers` a stranger on that
//! segment forging adverts, for `server_addresses` a second segment on
//! the nodes' server side. Needs root; each test builds its own topology.

use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lb_common::drop;
use lb_user::api::{Status, VrrpGroupStatus};
use lb_user::vrrp::packet::{self, Advert};
use serde_json::Value;
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use xlb_testbed::config::Vrrp;
use xlb_testbed::netns::{ManagedChild, NetNs};
use xlb_testbed::pinned;
use xlb_testbed::running::{WEIGHTS, require_root, xlb_exe};
use xlb_testbed::topology::{Topology, VIP_PORT, Xlb, http_bodies};
use xlb_testbed::traffic::Traffic;
use xlb_testbed::vrrp_pair::{
    BACKUP_PRIORITY, INTERVAL_CS, MASTER_PRIORITY, failover_bound, vrrp_config,
};

const LONG_LIVED: usize = 50;
/// Connections that keep sending (every `PERIOD`) through an event.
const SENDING: usize = 50;
const PERIOD: Duration = Duration::from_millis(50);

fn start_node(topo: &Topology, n: usize, vrrp: Vrrp) -> Xlb {
    let config = topo
        .write_node_config(n, &WEIGHTS, vrrp)
        .expect("write node config");
    let xlb = topo
        .start_node(n, &xlb_exe(), &config)
        .expect("start xlb node");
    xlb.wait_ready(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("xlb node {n} never became ready: {e:#}"));
    xlb
}

fn group(status: &Status, vrid: u8) -> Option<&VrrpGroupStatus> {
    status.vrrp.as_ref()?.group(vrid)
}

/// A VRRP receive counter (`accepted`, or a reason for ignoring an advert).
fn counter(status: &Status, name: &str) -> u64 {
    status
        .vrrp
        .as_ref()
        .and_then(|v| v.counters.get(name).copied())
        .unwrap_or_else(|| panic!("no VRRP counter {name} in {status}"))
}

/// What the last transition of group `vrid` gave as its reason.
fn last_reason(status: &Status, vrid: u8) -> String {
    group(status, vrid)
        .and_then(|g| g.last_transition.as_ref())
        .map(|t| t.reason.clone())
        .unwrap_or_default()
}

/// Polls until every group of `xlb` is in `state`; returns the status.
fn wait_state(xlb: &Xlb, state: &str, timeout: Duration) -> Status {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match xlb.status() {
            Ok(s) => {
                let all = [51, 52]
                    .iter()
                    .all(|v| group(&s, *v).is_some_and(|g| g.state == state));
                if all {
                    return s;
                }
                format!("{:?}", s.vrrp)
            }
            Err(e) => format!("{e:#}"),
        };
        assert!(
            Instant::now() < deadline,
            "xlb (log {}) not {state} after {timeout:?}; last vrrp status: {last}\n--- log ---\n{}",
            xlb.log_path().display(),
            xlb.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn forwarding(xlb: &Xlb) -> bool {
    xlb.status().expect("status").forwarding
}

/// MAC of `ifname` in `ns`.
fn link_mac(ns: &NetNs, ifname: &str) -> String {
    let out = ns.ip(["-j", "link", "show", "dev", ifname]).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["address"].as_str().unwrap().to_owned()
}

/// MAC of xlb node `n`'s NIC.
fn node_mac(topo: &Topology, n: usize) -> String {
    link_mac(topo.node(n), &topo.node_ifname(n))
}

/// Polls the client's neighbour entry for `vip` until it names `mac`.
fn wait_client_neigh(topo: &Topology, vip: &str, mac: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let out = topo
            .client()
            .ip(["neigh", "show", vip, "dev", &topo.client_ifname()])
            .unwrap();
        if out.contains(mac) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "client's neighbour entry for {vip} is {out:?} after {timeout:?}, want {mac}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn vip4(topo: &Topology) -> SocketAddr {
    SocketAddr::new(topo.vip4().into(), VIP_PORT)
}

fn vip6(topo: &Topology) -> SocketAddr {
    SocketAddr::new(topo.vip6().into(), VIP_PORT)
}

/// `n` new connections to `addr` all answered by a backend.
fn assert_serves(topo: &Topology, addr: SocketAddr, n: usize) {
    let bodies = http_bodies(topo.client(), addr, "/", n, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("{e:#}"));
    for (i, body) in bodies.iter().enumerate() {
        assert!(
            body.starts_with("backend-"),
            "request {i} to {addr}: {body:?}"
        );
    }
}

/// One request on an open keep-alive connection; returns the body.
fn keepalive_get(s: &mut TcpStream) -> anyhow::Result<String> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nUser-Agent: xlb-test\r\n\r\n")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        anyhow::ensure!(n > 0, "connection closed after {} bytes", buf.len());
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no content-length in {head:?}"))?;
        if buf.len() >= end + 4 + len {
            return Ok(String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned());
        }
    }
}

/// (start time, success) of back-to-back new connections until `stop`.
fn probe_loop(topo: &Topology, addr: SocketAddr, stop: &AtomicBool) -> Vec<(Instant, bool)> {
    topo.client().in_ns(|| {
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let ok = (|| -> anyhow::Result<bool> {
                let timeout = Duration::from_millis(250);
                let mut s = TcpStream::connect_timeout(&addr, timeout)?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                s.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")?;
                let mut body = String::new();
                s.read_to_string(&mut body)?;
                Ok(body.contains("backend-"))
            })()
            .unwrap_or(false);
            out.push((t, ok));
            if !ok {
                // A refused connection returns at once; do not spin.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        out
    })
}

/// Time from `since` until new connections succeed again for good: the start
/// of the first successful attempt after the last failed one.
fn recovery(samples: &[(Instant, bool)], since: Instant) -> Option<Duration> {
    let after: Vec<_> = samples.iter().filter(|(t, _)| *t >= since).collect();
    let last_fail = after.iter().rposition(|(_, ok)| !ok);
    let first_good = match last_fail {
        None => after.first(),
        Some(i) => after.get(i + 1),
    }?;
    Some(first_good.0.saturating_duration_since(since))
}

#[test]
fn vrrp_failover_on_sigkill_then_preemption_back() {
    if !require_root("vrrp_failover_on_sigkill_then_preemption_back") {
        return;
    }
    let topo = Topology::vrrp_pair(WEIGHTS.len()).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let x1 = start_node(&topo, 1, vrrp_config(MASTER_PRIORITY));
    wait_state(&x1, "master", Duration::from_secs(10));
    assert!(forwarding(&x1), "master must forward");
    let x2 = start_node(&topo, 2, vrrp_config(BACKUP_PRIORITY));
    wait_state(&x2, "backup", Duration::from_secs(10));
    assert!(!forwarding(&x2), "backup must not forward");
    // Both families' adverts pass the strict receive path.
    std::thread::sleep(Duration::from_millis(500));
    let s2 = x2.status().expect("status");
    for vrid in [51, 52] {
        let g = group(&s2, vrid).unwrap();
        assert!(g.adverts_received > 0, "{s2}");
    }
    for bad in ["bad_checksum", "bad_ttl", "malformed", "unknown_vrid"] {
        assert_eq!(counter(&s2, bad), 0, "{bad}: {s2}");
    }
    assert_eq!(
        group(&s2, 51).unwrap().master,
        Some(topo.node_addr4(1).to_string()),
        "backup knows the master: {s2}"
    );
    // Only the master holds the VIPs.
    let has_vip = |n: usize| {
        topo.node(n)
            .ip(["-o", "addr", "show", "dev", &topo.node_ifname(n)])
            .unwrap()
            .contains(&topo.vip4().to_string())
    };
    assert!(has_vip(1) && !has_vip(2), "VIP placement");
    assert_serves(&topo, vip4(&topo), 20);
    assert_serves(&topo, vip6(&topo), 20);

    // Long-lived keep-alive connections through the master.
    let mut long: Vec<TcpStream> = topo.client().in_ns(|| {
        (0..LONG_LIVED)
            .map(|_| {
                let mut s = TcpStream::connect_timeout(&vip4(&topo), Duration::from_secs(2))
                    .expect("long-lived connect");
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                keepalive_get(&mut s).expect("first request on a long-lived connection");
                s
            })
            .collect()
    });

    let stop = AtomicBool::new(false);
    let (kill_at, samples) = std::thread::scope(|s| {
        let prober = s.spawn(|| probe_loop(&topo, vip4(&topo), &stop));
        std::thread::sleep(Duration::from_millis(500));
        let kill_at = Instant::now();
        x1.kill_now().expect("SIGKILL node 1");
        wait_state(&x2, "master", Duration::from_secs(10));
        std::thread::sleep(failover_bound() + Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        (kill_at, prober.join().expect("prober"))
    });
    let took = recovery(&samples, kill_at).expect("no successful connection after the kill");
    let failed = samples
        .iter()
        .filter(|(t, ok)| *t >= kill_at && !ok)
        .count();
    let _ = writeln!(
        std::io::stderr(),
        "VRRP failover (SIGKILL of the master): new connections succeed again {:.0} ms after the kill \
         ({failed} failed attempts; bound {:?})",
        took.as_secs_f64() * 1000.0,
        failover_bound()
    );
    assert!(
        took <= failover_bound(),
        "new connections took {took:?} to recover, bound {:?}",
        failover_bound()
    );
    assert!(forwarding(&x2), "new master must forward");
    assert!(has_vip(2), "new master holds the VIP");
    // The gratuitous ARP and unsolicited NA moved the client's caches long
    // before they would have expired.
    let mac2 = node_mac(&topo, 2);
    wait_client_neigh(
        &topo,
        &topo.vip4().to_string(),
        &mac2,
        Duration::from_secs(1),
    );
    wait_client_neigh(
        &topo,
        &topo.vip6().to_string(),
        &mac2,
        Duration::from_secs(1),
    );
    assert_serves(&topo, vip6(&topo), 10);

    // DSR with identical Maglev tables: the new master sends each flow to
    // the backend that holds its TCP state.
    let survived = long
        .iter_mut()
        .map(|s| keepalive_get(s).is_ok_and(|b| b.starts_with("backend-")))
        .filter(|ok| *ok)
        .count();
    let _ = writeln!(
        std::io::stderr(),
        "long-lived connections surviving the failover: {survived} of {LONG_LIVED}"
    );
    assert_eq!(survived, LONG_LIVED, "flows lost in the failover");

    // The old master comes back; with preemption it takes over again.
    let x1 = start_node(&topo, 1, vrrp_config(MASTER_PRIORITY));
    let s1 = wait_state(&x1, "master", Duration::from_secs(10));
    wait_state(&x2, "backup", Duration::from_secs(5));
    assert!(!forwarding(&x2), "preempted node must stop forwarding");
    assert!(has_vip(1) && !has_vip(2), "VIP placement after preemption");
    let reason = last_reason(&s1, 51);
    assert!(reason.contains("master down"), "{s1}");
    let s2 = x2.status().unwrap();
    let reason = last_reason(&s2, 51);
    assert!(reason.contains("priority 150"), "{s2}");
    assert_serves(&topo, vip4(&topo), 20);

    // `xlb down` takes the node out: it resigns (priority 0), so the
    // backup takes over after its skew time instead of the whole
    // master-down interval, and withdraws its VIPs.
    let t = Instant::now();
    xlb_down(&topo.node_socket(1));
    let s2 = wait_state(&x2, "master", Duration::from_secs(3));
    let _ = writeln!(
        std::io::stderr(),
        "VRRP handover on `xlb down` of the master: {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let reason = last_reason(&s2, 51);
    assert!(reason.contains("resigned"), "{s2}");
    assert!(!has_vip(1), "a master taken down withdraws its VIPs");
    let deadline = Instant::now() + Duration::from_secs(5);
    while x1.is_running() {
        assert!(Instant::now() < deadline, "xlb still runs after down");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_serves(&topo, vip4(&topo), 10);
}

/// `xlb down` on the node whose control socket is `socket`.
fn xlb_down(socket: &std::path::Path) {
    let out = std::process::Command::new(xlb_exe())
        .arg("down")
        .arg("--socket")
        .arg(socket)
        .output()
        .expect("run xlb down");
    assert!(out.status.success(), "xlb down: {out:?}");
}

/// 50 connections that keep sending through a SIGKILL of the master's
/// `xlb`: its data plane goes on forwarding them until the backup (with
/// the same Maglev tables) takes the VIPs over, and from then on the
/// backup does. Once its lease has run out, the dead master leaves ARP
/// requests for the VIP unanswered, so no client is pulled back to it.
#[test]
fn vrrp_sigkill_of_the_master_loses_no_sending_connection() {
    if !require_root("vrrp_sigkill_of_the_master_loses_no_sending_connection") {
        return;
    }
    let topo = Topology::vrrp_pair(WEIGHTS.len()).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let x1 = start_node(&topo, 1, vrrp_config(MASTER_PRIORITY));
    wait_state(&x1, "master", Duration::from_secs(10));
    let x2 = start_node(&topo, 2, vrrp_config(BACKUP_PRIORITY));
    wait_state(&x2, "backup", Duration::from_secs(10));
    let traffic =
        Traffic::start(topo.client(), vip4(&topo), SENDING, PERIOD, None).expect("start traffic");
    std::thread::sleep(Duration::from_millis(500));
    x1.kill_now().expect("SIGKILL node 1");
    wait_state(&x2, "master", failover_bound());
    std::thread::sleep(Duration::from_secs(1));
    let report = traffic.stop();
    let _ = writeln!(
        std::io::stderr(),
        "SIGKILL of the master: {}",
        report.summary()
    );
    assert_eq!(
        report.survivors(),
        SENDING,
        "{}: {:?}",
        report.summary(),
        report.errors(5)
    );

    // The client asks again who has the VIP: only node 2 answers.
    let mac2 = node_mac(&topo, 2);
    for round in 0..5 {
        topo.client()
            .ip(["neigh", "flush", "dev", &topo.client_ifname()])
            .unwrap();
        assert_serves(&topo, vip4(&topo), 1);
        let out = topo
            .client()
            .ip(["neigh", "show", &topo.vip4().to_string()])
            .unwrap();
        assert!(
            out.contains(&mac2),
            "round {round}: the VIP resolves to {out:?}, want node 2 ({mac2})"
        );
    }
    let unanswered = pinned::drops(&topo.state_dir("lb1"), drop::ORPHAN_NEIGH).unwrap();
    assert!(
        unanswered >= 5,
        "node 1 left {unanswered} ARP requests unanswered"
    );
}

/// A master whose `xlb` restarts within the master-down interval stays
/// master: it resumes at once, no backup takes over, and 50 connections
/// that keep sending through it see nothing.
#[test]
fn vrrp_restart_of_the_master_within_master_down_causes_no_failover() {
    if !require_root("vrrp_restart_of_the_master_within_master_down_causes_no_failover") {
        return;
    }
    let topo = Topology::vrrp_pair(WEIGHTS.len()).unwrap_or_else(|e| panic!("topology: {e:#}"));
    // 1 s adverts: a master-down interval (3.6 s) a restart fits in.
    let slow = |priority| {
        let mut v = vrrp_config(priority);
        for g in &mut v.groups {
            g.advert_interval_cs = Some(100);
        }
        v
    };
    let x1 = start_node(&topo, 1, slow(MASTER_PRIORITY));
    wait_state(&x1, "master", Duration::from_secs(10));
    let x2 = start_node(&topo, 2, slow(BACKUP_PRIORITY));
    wait_state(&x2, "backup", Duration::from_secs(10));
    let backup_before = x2.status().unwrap();
    let traffic =
        Traffic::start(topo.client(), vip4(&topo), SENDING, PERIOD, None).expect("start traffic");
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    assert!(x1.stop(Duration::from_secs(3)), "SIGTERM node 1");
    let x1 = start_node(&topo, 1, slow(MASTER_PRIORITY));
    let s1 = wait_state(&x1, "master", Duration::from_secs(2));
    let restart = t.elapsed();
    std::thread::sleep(Duration::from_secs(4));
    let report = traffic.stop();
    let _ = writeln!(
        std::io::stderr(),
        "restart of the master in {:.0} ms: {}",
        restart.as_secs_f64() * 1000.0,
        report.summary()
    );
    assert!(last_reason(&s1, 51).contains("resumed"), "{s1}");
    let s2 = x2.status().unwrap();
    for vrid in [51, 52] {
        let (before, after) = (
            group(&backup_before, vrid).unwrap(),
            group(&s2, vrid).unwrap(),
        );
        assert_eq!(after.state, "backup", "{s2}");
        let when = |g: &VrrpGroupStatus| {
            g.last_transition
                .as_ref()
                .map(|t| (t.at_unix_ms, t.to.clone()))
        };
        assert_eq!(
            when(before),
            when(after),
            "node 2 never changed state: {s2}"
        );
    }
    assert_eq!(
        report.survivors(),
        SENDING,
        "{}: {:?}",
        report.summary(),
        report.errors(5)
    );
}

#[test]
fn vrrp_tracking_failure_hands_over() {
    if !require_root("vrrp_tracking_failure_hands_over") {
        return;
    }
    let topo = Topology::vrrp_pair(WEIGHTS.len()).unwrap_or_else(|e| panic!("topology: {e:#}"));
    // The client stands in for the upstream gateway.
    let tracked = |priority| Vrrp {
        track_address: Some(topo.client_addr4().into()),
        track_interval_ms: Some(200),
        track_fall: Some(2),
        ..vrrp_config(priority)
    };
    let x1 = start_node(&topo, 1, tracked(MASTER_PRIORITY));
    wait_state(&x1, "master", Duration::from_secs(10));
    let x2 = start_node(&topo, 2, tracked(BACKUP_PRIORITY));
    wait_state(&x2, "backup", Duration::from_secs(10));

    // The master's uplink breaks: the gateway becomes unreachable from it.
    let gw = format!("{}/32", topo.client_addr4());
    topo.node(1)
        .ip(["route", "add", "prohibit", &gw])
        .expect("break node 1's path to the gateway");
    let s1 = wait_state(&x1, "fault", Duration::from_secs(5));
    assert!(
        s1.vrrp
            .as_ref()
            .is_some_and(|v| v.tracking.contains("unreachable")),
        "{s1}"
    );
    assert!(!forwarding(&x1), "a node in FAULT must not forward");
    wait_state(&x2, "master", Duration::from_secs(3));
    assert_serves(&topo, vip4(&topo), 20);

    // Repaired: node 1 returns to backup, then preempts.
    topo.node(1)
        .ip(["route", "del", "prohibit", &gw])
        .expect("repair node 1's path");
    wait_state(&x1, "master", Duration::from_secs(10));
    wait_state(&x2, "backup", Duration::from_secs(5));
    assert_serves(&topo, vip4(&topo), 20);

    // Link tracking: node 1's NIC loses its link.
    let nic = topo.node_ifname(1);
    topo.node(1)
        .ip(["link", "set", &nic, "down"])
        .expect("take node 1's link down");
    let s1 = wait_state(&x1, "fault", Duration::from_secs(5));
    assert!(
        s1.vrrp
            .as_ref()
            .is_some_and(|v| v.tracking.contains("link")),
        "{s1}"
    );
    wait_state(&x2, "master", Duration::from_secs(3));
    assert_serves(&topo, vip4(&topo), 10);
    topo.node(1)
        .ip(["link", "set", &nic, "up"])
        .expect("bring node 1's link up");
    wait_state(&x1, "master", Duration::from_secs(10));
    wait_state(&x2, "backup", Duration::from_secs(5));
    x1.wait_ready(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("node 1 backends after link up: {e:#}"));
    assert_serves(&topo, vip4(&topo), 10);
    assert_serves(&topo, vip6(&topo), 10);
}

// ---------------------------------------------------------------------------
// keepalived as the peer (IPv4 group only).

const KEEPALIVED: &str = "/usr/sbin/keepalived";

/// keepalived's configuration as docs/operations.md gives it ("keepalived
/// as a peer"), on node 2's NIC at `priority`: the example runs as
/// written.
fn documented_keepalived_conf(topo: &Topology, priority: u64) -> String {
    const DOCS: &str = include_str!("../docs/operations.md");
    let from = DOCS
        .find("### keepalived as a peer")
        .expect("the keepalived section of docs/operations.md");
    let block = &DOCS[from..];
    let start = block.find("```\n").expect("its config block") + 4;
    let conf = &block[start..start + block[start..].find("```").expect("closed")];
    assert!(
        conf.contains(&format!("{}/32", topo.vip4()))
            && conf.contains(&format!("{}/128", topo.vip6()))
            && conf.contains(&format!("advert_int {}", f64::from(INTERVAL_CS) / 100.0)),
        "the documented example no longer matches the test topology:\n{conf}"
    );
    conf.replace(
        "interface eth0",
        &format!("interface {}", topo.node_ifname(2)),
    )
    .replace("priority 100", &format!("priority {priority}"))
}

/// Starts keepalived (VRRP only) on node 2 with the documented
/// configuration, every file it writes inside the topology's temp dir.
/// Killed by PID (SIGTERM, then SIGKILL) when the returned guard drops.
fn start_keepalived(topo: &Topology, priority: u64, run: usize) -> ManagedChild {
    let dir = topo.dir().join(format!("keepalived-{run}"));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("keepalived.conf");
    std::fs::write(&conf, documented_keepalived_conf(topo, priority)).unwrap();
    let log = std::fs::File::create(dir.join("keepalived.log")).unwrap();
    let mut cmd = topo.node(2).exec([KEEPALIVED]);
    cmd.arg("--dont-fork")
        .arg("--log-console")
        .arg("--no-syslog")
        .arg("--log-detail")
        .arg("--vrrp")
        .arg(format!("--use-file={}", conf.display()))
        .arg(format!("--pid={}", dir.join("keepalived.pid").display()))
        .arg(format!("--vrrp_pid={}", dir.join("vrrp.pid").display()))
        .arg(format!(
            "--checkers_pid={}",
            dir.join("checkers.pid").display()
        ))
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    ManagedChild::spawn("keepalived", &mut cmd).expect("start keepalived")
}

/// The documented example runs without a warning from keepalived.
fn assert_no_keepalived_warnings(log: &str) {
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("warning") || l.contains("should be link local")
        })
        .collect();
    assert!(warned.is_empty(), "keepalived warned: {warned:#?}");
}

fn keepalived_log(topo: &Topology, run: usize) -> String {
    std::fs::read_to_string(topo.dir().join(format!("keepalived-{run}/keepalived.log")))
        .unwrap_or_default()
}

/// Polls until `node` does (or does not) hold the IPv4 VIP.
fn wait_vip(
    topo: &Topology,
    node: usize,
    present: bool,
    timeout: Duration,
    log: &dyn Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let addrs = topo
            .node(node)
            .ip(["-o", "addr", "show", "dev", &topo.node_ifname(node)])
            .unwrap();
        if addrs.contains(&format!("{}/32", topo.vip4())) == present {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {node} {} the VIP after {timeout:?}: {addrs}\n--- log ---\n{}",
            if present {
                "does not hold"
            } else {
                "still holds"
            },
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_clean_receive(status: &Status) {
    assert!(
        counter(status, "accepted") > 0,
        "no advert accepted: {status}"
    );
    for bad in [
        "bad_checksum",
        "bad_ttl",
        "bad_version",
        "malformed",
        "bad_interval",
    ] {
        assert_eq!(
            counter(status, bad),
            0,
            "{bad} adverts from keepalived: {status}"
        );
    }
}

#[test]
fn vrrp_interop_xlb_higher_priority_than_keepalived() {
    if !require_root("vrrp_interop_xlb_higher_priority_than_keepalived") {
        return;
    }
    let topo = Topology::vrrp_pair(WEIGHTS.len()).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let config = topo
        .write_node_config(1, &WEIGHTS, vrrp_config(150))
        .unwrap();
    let start_xlb = || {
        let x = topo.start_node(1, &xlb_exe(), &config).unwrap();
        x.wait_ready(Duration::from_secs(20)).unwrap();
        x
    };
    let ka = start_keepalived(&topo, 100, 1);
    let ka_log = || keepalived_log(&topo, 1);
    // Alone, keepalived becomes master.
    wait_vip(&topo, 2, true, Duration::from_secs(10), &ka_log);
    // xlb (150, preempt) joins and takes over; keepalived steps down.
    let x1 = start_xlb();
    wait_state(&x1, "master", Duration::from_secs(10));
    wait_vip(&topo, 2, false, Duration::from_secs(5), &ka_log);
    assert_serves(&topo, vip4(&topo), 10);
    assert_serves(&topo, vip6(&topo), 10);
    let s = x1.status().unwrap();
    assert_clean_receive(&s);
    for vrid in [51, 52] {
        assert!(
            group(&s, vrid).unwrap().adverts_received > 0,
            "no advert from keepalived for VRID {vrid}: {s}"
        );
    }
    assert!(
        ka.try_wait().unwrap().is_none(),
        "keepalived exited:\n{}",
        ka_log()
    );

    // xlb is lost: keepalived takes over within the bound.
    x1.kill_now().unwrap();
    let t = Instant::now();
    wait_vip(&topo, 2, true, failover_bound(), &ka_log);
    let _ = writeln!(
        std::io::stderr(),
        "interop: keepalived took over from a killed xlb master in {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    // xlb comes back and preempts again.
    let x1 = start_xlb();
    wait_state(&x1, "master", Duration::from_secs(10));
    wait_vip(&topo, 2, false, Duration::from_secs(5), &ka_log);
    assert_no_keepalived_warnings(&ka_log());
    drop(ka);
}

#[test]
fn vrrp_interop_keepalived_higher_priority_than_xlb() {
    if !require_root("vrrp_interop_keepalived_higher_priority_than_xlb") {
        return;
    }
    let topo = Topology::vrrp_pair(WEIGHTS.len()).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let config = topo
        .write_node_config(1, &WEIGHTS, vrrp_config(100))
        .unwrap();
    let x1 = topo.start_node(1, &xlb_exe(), &config).unwrap();
    x1.wait_ready(Duration::from_secs(20)).unwrap();
    // Alone, xlb becomes master of both groups.
    wait_state(&x1, "master", Duration::from_secs(10));
    // keepalived (200) joins and preempts; both of xlb's groups become backup.
    let ka = start_keepalived(&topo, 200, 1);
    let ka_log = || keepalived_log(&topo, 1);
    wait_vip(&topo, 2, true, Duration::from_secs(10), &ka_log);
    let s = wait_state(&x1, "backup", Duration::from_secs(5));
    assert!(!forwarding(&x1), "backup of keepalived must not forward");
    assert_eq!(
        group(&s, 51).unwrap().master,
        Some(topo.node_addr4(2).to_string()),
        "{s}"
    );
    let m6 = group(&s, 52).unwrap().master.clone().unwrap_or_default();
    assert!(
        m6.starts_with("fe80::"),
        "IPv6 master is keepalived's link-local: {s}"
    );
    wait_vip(&topo, 1, false, Duration::from_secs(2), &|| x1.log_tail(30));
    assert_clean_receive(&s);

    // keepalived's node loses its link: xlb takes over within the bound.
    topo.node(2)
        .ip(["link", "set", &topo.node_ifname(2), "down"])
        .unwrap();
    let t = Instant::now();
    wait_vip(&topo, 1, true, failover_bound(), &|| x1.log_tail(30));
    let _ = writeln!(
        std::io::stderr(),
        "interop: xlb took over from a lost keepalived master in {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    wait_state(&x1, "master", Duration::from_secs(2));
    assert_serves(&topo, vip4(&topo), 10);
    assert_serves(&topo, vip6(&topo), 10);
    assert_no_keepalived_warnings(&ka_log());
    drop(ka);
}

// ---------------------------------------------------------------------------
// `vrrp.peers`: against forged adverts from a stranger on the segment.

/// Host number of the stranger on the segment: 198.18.0.66.
const STRANGER_HOST: u8 = 66;

/// The link-local address of `ifname` in `ns`: the source of its IPv6
/// adverts.
fn link_local(ns: &NetNs, ifname: &str) -> Ipv6Addr {
    let out = ns
        .ip(["-j", "-6", "addr", "show", "dev", ifname, "scope", "link"])
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    // `ip -j` leaves `{}` where the filter dropped an address.
    // Not a group's virtual link-local address, which a master holds too.
    let virtual_ll: Vec<Ipv6Addr> = [51, 52]
        .into_iter()
        .map(lb_user::config::default_link_local)
        .collect();
    v[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["local"].as_str()?.parse::<Ipv6Addr>().ok())
        .find(|a| !virtual_ll.contains(a))
        .unwrap_or_else(|| panic!("no link-local address on {ifname}: {out}"))
}

/// [`vrrp_config`] with `peers`: both nodes' IPv4 and link-local
/// addresses, one list for both nodes (each leaves itself out).
fn with_peers(topo: &Topology, priority: u8) -> Vrrp {
    let peers = (1..=2)
        .flat_map(|n| {
            [
                IpAddr::from(topo.node_addr4(n)),
                link_local(topo.node(n), &topo.node_ifname(n)).into(),
            ]
        })
        .collect();
    Vrrp {
        peers: Some(peers),
        ..vrrp_config(priority)
    }
}

/// How long the stranger listens before it forges anything: some adverts
/// of a multicasting master's (every 200 ms) reach it meanwhile.
const LISTEN_FIRST: Duration = Duration::from_millis(600);

/// What the stranger did and heard.
#[derive(Debug)]
struct Forged {
    /// Rounds: each one IPv4 advert to 224.0.0.18, one to each unicast
    /// target, one IPv6 advert to ff02::12.
    rounds: u64,
    /// VRRP packets of others that reached it (IPv4 and IPv6).
    heard: u64,
}

/// From the stranger `ns` (NIC `ifname`, 198.18.0.66 and `src6`), after
/// [`LISTEN_FIRST`] of listening only, every 100 ms for `duration`: forged
/// VRRPv3 adverts claiming priority 254 for
/// the pair's groups, VRID 51 (IPv4, the IPv4 VIP) to 224.0.0.18 and by
/// unicast to each of `unicast_to`, VRID 52 (IPv6, the IPv6 VIP) to
/// ff02::12 from its link-local address. Valid in every field, TTL / hop
/// limit 255 and checksum included (xlb's own codec, which keepalived's
/// adverts are pinned against). All along counts the VRRP packets that
/// others send to the groups.
fn forge_adverts(
    ns: &NetNs,
    ifname: &str,
    src6: Ipv6Addr,
    unicast_to: &[Ipv4Addr],
    duration: Duration,
) -> Forged {
    let src4 = Ipv4Addr::new(198, 18, 0, STRANGER_HOST);
    let v4 = |vip: IpAddr| Advert {
        vrid: 51,
        priority: 254,
        interval_cs: INTERVAL_CS,
        addresses: vec![vip],
    };
    let (advert4, advert6) = (
        v4(IpAddr::V4(xlb_testbed::topology::VIP4)),
        Advert {
            vrid: 52,
            ..v4(IpAddr::V6(xlb_testbed::topology::VIP6))
        },
    );
    ns.in_ns(|| {
        let ifindex = nix::net::if_::if_nametoindex(ifname).expect("stranger's ifindex");
        let vrrp = || Some(Protocol::from(i32::from(packet::IPPROTO_VRRP)));
        let s4 = Socket::new(Domain::IPV4, Type::RAW, vrrp()).unwrap();
        s4.bind_device(Some(ifname.as_bytes())).unwrap();
        s4.set_multicast_if_v4(&src4).unwrap();
        s4.set_multicast_ttl_v4(255).unwrap();
        s4.set_ttl_v4(255).unwrap();
        s4.set_multicast_loop_v4(false).unwrap();
        s4.join_multicast_v4_n(&packet::GROUP_V4, &InterfaceIndexOrAddress::Index(ifindex))
            .unwrap();
        s4.set_nonblocking(true).unwrap();
        // IPv6: bound to the link-local source the checksum covers; a
        // second, unbound socket listens (a bound raw socket would hear
        // only what is sent to its address).
        let s6 = Socket::new(Domain::IPV6, Type::RAW, vrrp()).unwrap();
        s6.bind_device(Some(ifname.as_bytes())).unwrap();
        s6.bind(&SocketAddrV6::new(src6, 0, 0, ifindex).into())
            .unwrap();
        s6.set_multicast_if_v6(ifindex).unwrap();
        s6.set_multicast_hops_v6(255).unwrap();
        s6.set_multicast_loop_v6(false).unwrap();
        let l6 = Socket::new(Domain::IPV6, Type::RAW, vrrp()).unwrap();
        l6.bind_device(Some(ifname.as_bytes())).unwrap();
        l6.join_multicast_v6(&packet::GROUP_V6, ifindex).unwrap();
        l6.set_nonblocking(true).unwrap();

        let group4 = SocketAddrV4::new(packet::GROUP_V4, 0);
        let group6 = SocketAddrV6::new(packet::GROUP_V6, 0, 0, ifindex);
        let mut forged = Forged {
            rounds: 0,
            heard: 0,
        };
        let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
        let mut drain = |forged: &mut Forged| {
            for s in [&s4, &l6] {
                while s.recv_from(&mut buf).is_ok() {
                    forged.heard += 1;
                }
            }
        };
        let listening = Instant::now() + LISTEN_FIRST;
        while Instant::now() < listening {
            std::thread::sleep(Duration::from_millis(100));
            drain(&mut forged);
        }
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            let msg = advert4.encode(src4.into(), packet::GROUP_V4.into());
            s4.send_to(&msg, &group4.into())
                .expect("forged IPv4 advert");
            for to in unicast_to {
                let msg = advert4.encode(src4.into(), (*to).into());
                s4.send_to(&msg, &SocketAddrV4::new(*to, 0).into())
                    .expect("forged unicast advert");
            }
            let msg = advert6.encode(src6.into(), packet::GROUP_V6.into());
            s6.send_to(&msg, &group6.into())
                .expect("forged IPv6 advert");
            forged.rounds += 1;
            std::thread::sleep(Duration::from_millis(100));
            drain(&mut forged);
        }
        forged
    })
}

/// Both groups' state on `xlb`, with the masters it knows.
fn states(xlb: &Xlb) -> Vec<(u8, String, Option<String>)> {
    let s = xlb.status().expect("status");
    [51, 52]
        .iter()
        .map(|v| {
            let g = group(&s, *v).unwrap();
            (*v, g.state.clone(), g.master.clone())
        })
        .collect()
}

/// With `peers` on both nodes, a stranger on the segment that forges
/// priority-254 adverts for both groups (multicast, and unicast to each
/// node) for 3 s changes nothing: the master stays master, the backup
/// stays backup, every forged advert is counted as `not_a_peer` on both,
/// and 50 connections that keep sending through it all survive. The
/// nodes' own adverts go by unicast: the stranger hears none of them.
#[test]
fn vrrp_peers_ignore_forged_adverts_from_a_stranger() {
    if !require_root("vrrp_peers_ignore_forged_adverts_from_a_stranger") {
        return;
    }
    let topo = Topology::vrrp_pair(WEIGHTS.len()).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let stranger = topo
        .attach_host("atk", STRANGER_HOST)
        .expect("attach the stranger");
    let stranger_if = format!("{}atk", topo.prefix());
    let stranger6 = link_local(&stranger, &stranger_if);
    let x1 = start_node(&topo, 1, with_peers(&topo, MASTER_PRIORITY));
    wait_state(&x1, "master", Duration::from_secs(10));
    let x2 = start_node(&topo, 2, with_peers(&topo, BACKUP_PRIORITY));
    wait_state(&x2, "backup", Duration::from_secs(10));
    let before = [x1.status().unwrap(), x2.status().unwrap()];
    for s in &before {
        assert_eq!(counter(s, "not_a_peer"), 0, "{s}");
    }
    let traffic =
        Traffic::start(topo.client(), vip4(&topo), SENDING, PERIOD, None).expect("start traffic");
    std::thread::sleep(Duration::from_millis(500));

    let nodes = [topo.node_addr4(1), topo.node_addr4(2)];
    let forged = std::thread::scope(|s| {
        let forger = s.spawn(|| {
            forge_adverts(
                &stranger,
                &stranger_if,
                stranger6,
                &nodes,
                Duration::from_secs(3),
            )
        });
        while !forger.is_finished() {
            for (v, state, _) in states(&x1) {
                assert_eq!(state, "master", "node 1, VRID {v}: {}", x1.log_tail(20));
            }
            for (v, state, master) in states(&x2) {
                assert_eq!(state, "backup", "node 2, VRID {v}: {}", x2.log_tail(20));
                let want = if v == 51 {
                    topo.node_addr4(1).to_string()
                } else {
                    link_local(topo.node(1), &topo.node_ifname(1)).to_string()
                };
                assert_eq!(master, Some(want), "node 2 follows node 1, VRID {v}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        forger.join().expect("forger")
    });
    // Let the last forged ones arrive.
    std::thread::sleep(Duration::from_millis(200));
    let report = traffic.stop();
    let _ = writeln!(
        std::io::stderr(),
        "forged adverts with peers: {forged:?}; traffic: {}",
        report.summary()
    );
    assert!(forged.rounds >= 20, "{forged:?}");
    let when = |s: &Status, vrid| {
        group(s, vrid)
            .and_then(|g| g.last_transition.as_ref())
            .map(|t| t.at_unix_ms)
    };
    let after = [x1.status().unwrap(), x2.status().unwrap()];
    for (n, (b, a)) in before.iter().zip(&after).enumerate() {
        // Per round: IPv4 to the group, IPv4 to this node, IPv6 to the group.
        assert_eq!(
            counter(a, "not_a_peer"),
            3 * forged.rounds,
            "node {}: every forged advert counted: {a}",
            n + 1
        );
        for vrid in [51, 52] {
            assert_eq!(
                when(b, vrid),
                when(a, vrid),
                "node {} VRID {vrid} never changed state: {a}",
                n + 1
            );
        }
        for bad in ["bad_checksum", "bad_ttl", "malformed", "unknown_vrid"] {
            assert_eq!(counter(a, bad), 0, "{bad}: {a}");
        }
    }
    // The master's unicast adverts kept reaching the backup.
    for vrid in [51, 52] {
        let (b, a) = (
            group(&before[1], vrid).unwrap(),
            group(&after[1], vrid).unwrap(),
        );
        assert!(
            a.adverts_received >= b.adverts_received + 10,
            "VRID {vrid}: {} then {}",
            b.adverts_received,
            a.adverts_received
        );
    }
    assert_eq!(
        forged.heard, 0,
        "the nodes' adverts are unicast to each other, none to the groups"
    );
    assert_eq!(
        report.survivors(),
        SENDING,
        "{}: {:?}",
        report.summary(),
        report.errors(5)
    );
    drop(stranger);
}

/// The same forged adverts without `peers` take both groups over: the
/// master steps down to the stranger's priority 254 and the backup
/// follows it. Proves that the forgery of the test above is a valid
/// advert, and that `peers` is what stops it. Once the stranger stops,
/// node 1 is master again after the master-down interval.
#[test]
fn vrrp_without_peers_a_forged_advert_takes_over() {
    if !require_root("vrrp_without_peers_a_forged_advert_takes_over") {
        return;
    }
    let topo = Topology::vrrp_pair(WEIGHTS.len()).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let stranger = topo
        .attach_host("atk", STRANGER_HOST)
        .expect("attach the stranger");
    let stranger_if = format!("{}atk", topo.prefix());
    let stranger6 = link_local(&stranger, &stranger_if);
    let x1 = start_node(&topo, 1, vrrp_config(MASTER_PRIORITY));
    wait_state(&x1, "master", Duration::from_secs(10));
    let x2 = start_node(&topo, 2, vrrp_config(BACKUP_PRIORITY));
    wait_state(&x2, "backup", Duration::from_secs(10));

    let started = Instant::now() + LISTEN_FIRST;
    let (forged, took) = std::thread::scope(|s| {
        let forger = s.spawn(|| {
            forge_adverts(
                &stranger,
                &stranger_if,
                stranger6,
                &[],
                Duration::from_secs(2),
            )
        });
        let s1 = wait_state(&x1, "backup", LISTEN_FIRST + Duration::from_secs(1));
        let took = started.elapsed();
        let want = [
            (51, Ipv4Addr::new(198, 18, 0, STRANGER_HOST).to_string()),
            (52, stranger6.to_string()),
        ];
        for (vrid, stranger) in &want {
            let g = group(&s1, *vrid).unwrap();
            assert_eq!(g.master.as_ref(), Some(stranger), "node 1: {s1}");
            assert!(
                last_reason(&s1, *vrid)
                    .contains(&format!("advert from {stranger} with priority 254")),
                "{s1}"
            );
        }
        let s2 = wait_state(&x2, "backup", Duration::from_secs(1));
        for (vrid, stranger) in &want {
            assert_eq!(
                group(&s2, *vrid).unwrap().master.as_ref(),
                Some(stranger),
                "node 2 follows the stranger: {s2}"
            );
        }
        (forger.join().expect("forger"), took)
    });
    let _ = writeln!(
        std::io::stderr(),
        "without peers, a forged priority-254 advert took the master over in {:.0} ms ({forged:?})",
        took.as_secs_f64() * 1000.0
    );
    for x in [&x1, &x2] {
        let s = x.status().unwrap();
        assert_eq!(counter(&s, "not_a_peer"), 0, "{s}");
    }
    // Multicast: the stranger heard node 1's adverts before it forged.
    assert!(forged.heard >= 2, "{forged:?}");
    // The stranger goes quiet: its master-down interval later node 1 (150)
    // takes over again.
    wait_state(&x1, "master", failover_bound());
    wait_state(&x2, "backup", Duration::from_secs(1));
    assert_serves(&topo, vip4(&topo), 10);
    drop(stranger);
}

/// With `peers`, adverts go by unicast, and a SIGKILL of the master is
/// still a failover within the bound: the backup stops hearing the
/// master's unicast adverts and takes over, 50 sending connections
/// survive. Node 1 comes back and preempts by its own unicast adverts.
#[test]
fn vrrp_peers_failover_on_sigkill() {
    if !require_root("vrrp_peers_failover_on_sigkill") {
        return;
    }
    let topo = Topology::vrrp_pair(WEIGHTS.len()).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let x1 = start_node(&topo, 1, with_peers(&topo, MASTER_PRIORITY));
    wait_state(&x1, "master", Duration::from_secs(10));
    let x2 = start_node(&topo, 2, with_peers(&topo, BACKUP_PRIORITY));
    let s2 = wait_state(&x2, "backup", Duration::from_secs(10));
    let peers = s2.vrrp.as_ref().map(|v| v.peers.len());
    assert_eq!(peers, Some(4), "status lists the peers: {s2}");
    std::thread::sleep(Duration::from_millis(500));
    let s2 = x2.status().unwrap();
    for vrid in [51, 52] {
        assert!(group(&s2, vrid).unwrap().adverts_received > 0, "{s2}");
    }
    for quiet in ["not_a_peer", "bad_checksum", "bad_ttl", "malformed"] {
        assert_eq!(counter(&s2, quiet), 0, "{quiet}: {s2}");
    }
    assert_serves(&topo, vip6(&topo), 10);

    let traffic =
        Traffic::start(topo.client(), vip4(&topo), SENDING, PERIOD, None).expect("start traffic");
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    x1.kill_now().expect("SIGKILL node 1");
    wait_state(&x2, "master", failover_bound());
    let took = t.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let report = traffic.stop();
    let _ = writeln!(
        std::io::stderr(),
        "with peers, SIGKILL of the master: backup master after {:.0} ms (bound {:?}); {}",
        took.as_secs_f64() * 1000.0,
        failover_bound(),
        report.summary()
    );
    assert_eq!(
        report.survivors(),
        SENDING,
        "{}: {:?}",
        report.summary(),
        report.errors(5)
    );
    assert!(forwarding(&x2), "new master must forward");
    assert_serves(&topo, vip4(&topo), 10);
    assert_serves(&topo, vip6(&topo), 10);

    let x1 = start_node(&topo, 1, with_peers(&topo, MASTER_PRIORITY));
    wait_state(&x1, "master", Duration::from_secs(10));
    let s2 = wait_state(&x2, "backup", Duration::from_secs(5));
    assert!(last_reason(&s2, 51).contains("priority 150"), "{s2}");
    assert_serves(&topo, vip4(&topo), 10);
}

// ---------------------------------------------------------------------------
// `server_addresses`: the backends' gateway moves with the master.

/// The server address of the tests (IPv4, IPv6): the backends' gateway.
const GATEWAY4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x19, 0, 0, 0, 0, 0, 1);

/// A segment on the nodes' server side: namespace `<p>srv` with a bridge
/// `sbr` that a veth from each node joins (`<p>s<n>` in node n, its
/// `server_interface`); the namespace stands in for a backend, at
/// 198.18.1.50 / fd00:19::50 on the bridge.
fn server_side(topo: &Topology) -> NetNs {
    let p = topo.prefix();
    let ns = NetNs::create(&format!("{p}srv")).expect("server-side namespace");
    ns.sysctl(&[
        "net.ipv6.conf.all.accept_dad=0",
        "net.ipv6.conf.default.accept_dad=0",
    ])
    .unwrap();
    let ip = |ns: &NetNs, line: &str| {
        ns.ip(line.split_whitespace())
            .unwrap_or_else(|e| panic!("{line}: {e:#}"));
    };
    ip(&ns, "link set lo up");
    ip(&ns, "link add sbr type bridge mcast_snooping 0 stp_state 0");
    ip(&ns, "link set sbr up");
    for n in 1..=2 {
        let (inner, peer) = (format!("{p}s{n}"), format!("{p}ps{n}"));
        ip(
            topo.node(n),
            &format!(
                "link add {inner} type veth peer name {peer} netns {}",
                ns.name()
            ),
        );
        ip(&ns, &format!("link set {peer} master sbr up"));
        ip(topo.node(n), &format!("link set {inner} up"));
    }
    ip(&ns, "addr add 198.18.1.50/24 dev sbr");
    ip(&ns, "addr add fd00:19::50/64 dev sbr nodad");
    ns
}

/// Node n's `server_interface` in [`server_side`].
fn server_ifname(topo: &Topology, n: usize) -> String {
    format!("{}s{n}", topo.prefix())
}

/// The config of node n with [`server_side`]'s NIC as `server_interface`
/// and the gateway addresses in VRID 51's `server_addresses`.
fn start_with_gateway(topo: &Topology, n: usize, priority: u8) -> Xlb {
    let mut vrrp = vrrp_config(priority);
    vrrp.groups[0] = vrrp.groups[0]
        .clone()
        .server_addresses(&[GATEWAY4.into(), GATEWAY6.into()]);
    let config = topo
        .node_config(n, &WEIGHTS)
        .server_interface(&server_ifname(topo, n))
        .vrrp(vrrp)
        .write(&topo.dir().join(format!("xlb{n}.toml")))
        .expect("write node config");
    let xlb = topo
        .start_node(n, &xlb_exe(), &config)
        .expect("start xlb node");
    xlb.wait_ready(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("xlb node {n} never became ready: {e:#}"));
    xlb
}

/// Whether node n holds `addr` on its server NIC.
fn holds_gateway(topo: &Topology, n: usize, addr: IpAddr) -> bool {
    let out = topo
        .node(n)
        .ip(["-o", "addr", "show", "dev", &server_ifname(topo, n)])
        .unwrap();
    out.split_whitespace()
        .any(|w| w.split('/').next() == Some(&addr.to_string()))
}

/// MAC of node n's server NIC.
fn server_mac(topo: &Topology, n: usize) -> String {
    link_mac(topo.node(n), &server_ifname(topo, n))
}

/// The MAC the server side has for `addr`, polled until `want` (after one
/// datagram sent there, which makes it resolve `addr` if it has no entry).
fn wait_gateway_neigh(srv: &NetNs, addr: IpAddr, want: &str, timeout: Duration) {
    srv.in_ns(|| {
        let from: IpAddr = if addr.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let s = std::net::UdpSocket::bind((from, 0)).unwrap();
        s.send_to(b"who has the gateway", (addr, 9)).unwrap();
    });
    let deadline = Instant::now() + timeout;
    loop {
        let out = srv
            .ip(["neigh", "show", &addr.to_string(), "dev", "sbr"])
            .unwrap();
        if out.contains(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server side's entry for {addr} is {out:?} after {timeout:?}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `server_addresses` move with the master on the server NIC, are not in
/// the adverts, and a SIGKILLed master, which keeps them on its NIC,
/// stops answering ARP/ND for them once its lease ran out: the backends'
/// gateway resolves to the new master every time. `xlb down` withdraws
/// them.
#[test]
fn vrrp_server_addresses_move_with_the_master() {
    if !require_root("vrrp_server_addresses_move_with_the_master") {
        return;
    }
    let topo = Topology::vrrp_pair(WEIGHTS.len()).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let srv = server_side(&topo);
    let gateways = [IpAddr::from(GATEWAY4), IpAddr::from(GATEWAY6)];
    let x1 = start_with_gateway(&topo, 1, MASTER_PRIORITY);
    wait_state(&x1, "master", Duration::from_secs(10));
    let x2 = start_with_gateway(&topo, 2, BACKUP_PRIORITY);
    wait_state(&x2, "backup", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    for g in gateways {
        assert!(holds_gateway(&topo, 1, g), "the master holds {g}");
        assert!(!holds_gateway(&topo, 2, g), "the backup does not hold {g}");
    }
    let s2 = x2.status().unwrap();
    assert_eq!(
        group(&s2, 51).unwrap().server_addresses,
        ["198.18.1.1", "fd00:19::1"],
        "{s2}"
    );
    // The adverts list the VIPs only, as configured on both nodes.
    assert!(counter(&s2, "accepted") > 0, "{s2}");
    assert_eq!(counter(&s2, "address_mismatch"), 0, "{s2}");
    let (mac1, mac2) = (server_mac(&topo, 1), server_mac(&topo, 2));
    for g in gateways {
        wait_gateway_neigh(&srv, g, &mac1, Duration::from_secs(2));
    }

    x1.kill_now().expect("SIGKILL node 1");
    wait_state(&x2, "master", failover_bound());
    for g in gateways {
        assert!(holds_gateway(&topo, 2, g), "the new master holds {g}");
        // Moved by its gratuitous ARP / unsolicited NA, no flush needed.
        wait_gateway_neigh(&srv, g, &mac2, Duration::from_secs(1));
    }
    // Past node 1's lease: it still holds the addresses, but its data
    // plane no longer lets its kernel answer for them.
    std::thread::sleep(Duration::from_secs(1));
    assert!(holds_gateway(&topo, 1, gateways[0]), "SIGKILL leaves them");
    let rounds = 5;
    for round in 0..rounds {
        srv.ip(["neigh", "flush", "dev", "sbr"]).unwrap();
        for g in gateways {
            // Had node 1 answered too, the first answer would have won
            // some of the rounds (and the drop count below says it did
            // not answer at all).
            wait_gateway_neigh(&srv, g, &mac2, Duration::from_secs(1));
            let out = srv.ip(["neigh", "show", &g.to_string()]).unwrap();
            assert!(
                !out.contains(&mac1),
                "round {round}: {g} resolves to node 1 ({mac1}): {out}"
            );
        }
    }
    let unanswered = pinned::drops(&topo.state_dir("lb1"), drop::ORPHAN_NEIGH).unwrap();
    assert!(
        unanswered >= 2 * rounds,
        "node 1 left only {unanswered} ARP/ND queries unanswered"
    );

    // Node 1 returns and preempts: the gateway goes back with the VIPs.
    let x1 = start_with_gateway(&topo, 1, MASTER_PRIORITY);
    wait_state(&x1, "master", Duration::from_secs(10));
    wait_state(&x2, "backup", Duration::from_secs(5));
    for g in gateways {
        assert!(holds_gateway(&topo, 1, g), "node 1 holds {g} again");
        assert!(!holds_gateway(&topo, 2, g), "node 2 withdrew {g}");
        wait_gateway_neigh(&srv, g, &mac1, Duration::from_secs(1));
    }
    // `xlb down` withdraws them with the VIPs; node 2 takes them.
    xlb_down(&topo.node_socket(1));
    wait_state(&x2, "master", Duration::from_secs(3));
    for g in gateways {
        assert!(!holds_gateway(&topo, 1, g), "down withdrew {g}");
        assert!(holds_gateway(&topo, 2, g), "node 2 holds {g}");
    }
    drop(srv);
}
