//! Test / demo topologies built from network namespaces, with real nginx
//! backends, and the helpers the demo and the end-to-end tests drive them
//! with (a running `xlb`, its status, an HTTP client, packet captures).
//!
//! * [`Topology`] (`dsr.rs`): client, xlb node and backends on one bridge,
//!   for direct server return.
//! * [`NatTopology`] (`nat.rs`): NAT, two-armed (client and backends on
//!   separate segments, xlb routing between them) or one-armed.
//! * [`EcmpTopology`] (`ecmp.rs`): several xlb nodes behind a router doing
//!   ECMP over BGP (BIRD or FRR, see `routing.rs`).
//! * [`Hosts`] (`hosts.rs`): what both have (namespaces, names, the shared
//!   addresses); both dereference to it.
//!
//! Everything (namespaces, links, nginx processes, the temp dir) carries a
//! per-run prefix and is torn down on drop, on panic unwinding, and on
//! SIGINT/SIGTERM (see [`crate::netns`]).

mod capture;
mod dsr;
mod ecmp;
mod hosts;
mod http;
mod nat;
mod nginx;
pub mod routing;

pub use capture::{Capture, Captured, source_of};
pub use dsr::{Serve, Topology};
pub use ecmp::EcmpTopology;
pub use hosts::Hosts;
pub(crate) use http::get_once;
pub use http::{
    KeepAlive, MAX_CONSECUTIVE_FAILURES, http_bodies, http_get, http_get_many, tcp_probe,
};
pub use nat::{BACKEND_PORT, NatLayout, NatTopology};

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail, ensure};
use lb_user::api::{Status, VipStatus};
use serde_json::Value;

use crate::netns::{self, MAX_IFNAME, ManagedChild, NetNs, TempDir};
use crate::xdp::attach_xdp_pass;

/// The IPv4 VIP.
pub const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// The IPv6 VIP.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x100);
/// The VIP port (nginx listens there on every backend).
pub const VIP_PORT: u16 = 80;
/// Most backends a topology may have.
pub const MAX_BACKENDS: usize = 20;
/// nginx binary.
pub const NGINX: &str = "/usr/sbin/nginx";
/// Size of the `/big` body.
pub const BIG_BODY_LEN: usize = 8192;

const LB_HOST: u8 = 1;
const CLIENT_HOST: u8 = 2;
const BACKEND_HOST_BASE: u8 = 10;

/// Subnet numbers: 198.18.<net>.0/24 and fd00:<18+net>::/64. Net 0 holds
/// the client (and, in DSR, everything); net 1 the NAT backends.
const CLIENT_NET: u8 = 0;
const SERVER_NET: u8 = 1;

fn net_addr4(net: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, net, host)
}

/// fd00:<18+net>::<host>, the host number written with the same digits as
/// in the IPv4 address (198.18.0.11 is fd00:18::11, 198.18.1.11 fd00:19::11).
fn net_addr6(net: u8, host: u8) -> Ipv6Addr {
    let group = u16::from_str_radix(&host.to_string(), 16).expect("decimal digits are hex digits");
    Ipv6Addr::new(0xfd00, 0x18 + u16::from(net), 0, 0, 0, 0, 0, group)
}

fn addr4(host: u8) -> Ipv4Addr {
    net_addr4(CLIENT_NET, host)
}

fn addr6(host: u8) -> Ipv6Addr {
    net_addr6(CLIENT_NET, host)
}

fn backend_host(i: usize) -> u8 {
    assert!(
        (1..=MAX_BACKENDS).contains(&i),
        "backend index {i} out of 1..={MAX_BACKENDS}"
    );
    BACKEND_HOST_BASE + i as u8
}

/// Counters of one interface, from `ip -s -j link`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

impl LinkStats {
    /// Counter growth since `before` (saturating).
    pub fn since(&self, before: &LinkStats) -> LinkStats {
        LinkStats {
            rx_packets: self.rx_packets.saturating_sub(before.rx_packets),
            rx_bytes: self.rx_bytes.saturating_sub(before.rx_bytes),
            tx_packets: self.tx_packets.saturating_sub(before.tx_packets),
            tx_bytes: self.tx_bytes.saturating_sub(before.tx_bytes),
        }
    }
}

/// Reads `ifname`'s counters inside `ns`.
pub fn link_stats(ns: &NetNs, ifname: &str) -> anyhow::Result<LinkStats> {
    let out = ns.ip(["-s", "-j", "link", "show", "dev", ifname])?;
    let v: Value =
        serde_json::from_str(&out).with_context(|| format!("bad `ip -s -j link` output: {out}"))?;
    let s = &v[0]["stats64"];
    let get = |dir: &str, what: &str| {
        s[dir][what]
            .as_u64()
            .ok_or_else(|| anyhow!("no stats64.{dir}.{what} for {ifname} in {}", ns.name()))
    };
    Ok(LinkStats {
        rx_packets: get("rx", "packets")?,
        rx_bytes: get("rx", "bytes")?,
        tx_packets: get("tx", "packets")?,
        tx_bytes: get("tx", "bytes")?,
    })
}

/// Picks an unused per-run prefix: "x" + 5 lowercase hex digits.
fn pick_prefix() -> anyhow::Result<(String, TempDir)> {
    let existing = netns::run_cmd(Command::new(netns::IP).args(["netns", "list"]))?;
    for _ in 0..16 {
        let prefix = format!("x{:05x}", rand::random::<u32>() & 0xf_ffff);
        if existing.lines().any(|l| l.starts_with(&prefix)) {
            continue;
        }
        let name = format!("xlb-{prefix}");
        if std::path::Path::new(netns::BPFFS).join(&name).exists() {
            continue;
        }
        match TempDir::create(&name) {
            Ok(dir) => return Ok((prefix, dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create temp dir {name}")),
        }
    }
    bail!("could not find an unused topology prefix")
}

/// `ip -n NS <words of line>` (names and addresses never contain spaces).
fn ip(ns: &NetNs, line: &str) -> anyhow::Result<()> {
    ns.ip(line.split_whitespace()).map(drop)
}

/// `ethtool <words of line>` inside `ns`.
fn ethtool(ns: &NetNs, line: &str) -> anyhow::Result<()> {
    ns.run(std::iter::once("ethtool").chain(line.split_whitespace()))
        .map(drop)
}

/// A veth pair: `inner` in `ns`, `peer` in `switch` enslaved to `bridge`
/// and up (the caller brings `inner` up once it is addressed). TX checksum
/// offload is off on both ends: a partial checksum left for the offload is
/// never completed once XDP has sent the frame on.
fn add_veth(
    switch: &NetNs,
    bridge: &str,
    ns: &NetNs,
    inner: &str,
    peer: &str,
) -> anyhow::Result<()> {
    debug_assert!(inner.len() <= MAX_IFNAME && peer.len() <= MAX_IFNAME);
    let ns_name = ns.name();
    ip(
        switch,
        &format!("link add {peer} type veth peer name {inner} netns {ns_name}"),
    )?;
    ip(switch, &format!("link set {peer} master {bridge} up"))?;
    ethtool(switch, &format!("-K {peer} tx off"))?;
    ethtool(ns, &format!("-K {inner} tx off"))
}

/// Starts `xlb run --config CONFIG [extra]` inside `ns` (`what` names it
/// in messages); its stderr and stdout go to `log` (appended: a restart
/// adds to the same log).
///
/// Through `nsenter --net`, which enters only the network namespace, not
/// `ip netns exec`, which also makes a private mount namespace: xlb's
/// pinned state must be on the bpffs every restart sees, as it is on a
/// real node.
pub fn spawn_xlb(
    ns: &NetNs,
    what: &str,
    xlb_exe: &Path,
    config: &Path,
    extra: &[&str],
    socket: &Path,
    log: PathBuf,
) -> anyhow::Result<Xlb> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let err = out.try_clone()?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", ns.name()))
        .arg("--")
        .arg(xlb_exe)
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(extra)
        .stdout(out)
        .stderr(err);
    let child = ManagedChild::spawn(what, &mut cmd)?;
    Ok(Xlb {
        child,
        exe: xlb_exe.to_owned(),
        socket: socket.to_owned(),
        log,
    })
}

/// A running `xlb run` (a [`ManagedChild`]: SIGTERM on drop).
#[derive(Debug)]
pub struct Xlb {
    child: ManagedChild,
    exe: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Xlb {
    /// `xlb status --socket SOCK --json`, parsed.
    pub fn status(&self) -> anyhow::Result<Status> {
        xlb_status(&self.exe, &self.socket)
    }

    /// Polls status until every backend of every VIP is "active"; returns that
    /// status. The error names the last status (or error) seen and the log tail.
    pub fn wait_ready(&self, timeout: Duration) -> anyhow::Result<Status> {
        self.wait_status(
            "readiness (every backend \"active\")",
            timeout,
            Status::all_backends_active,
        )
    }

    /// Polls status until `done(status)` holds; returns that status. The
    /// error names `what`, the last status (or error) seen and the log tail.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Status) -> bool,
    ) -> anyhow::Result<Status> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("(no status yet)");
        loop {
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "xlb exited ({st}) while waiting for {what}; last status: {last}\n--- xlb log ---\n{}",
                    self.log_tail(30)
                );
            }
            match self.status() {
                Ok(v) if done(&v) => return Ok(v),
                Ok(v) => last = serde_json::to_string(&v).unwrap_or_default(),
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                bail!(
                    "no {what} after {timeout:?}; last status: {last}\n--- xlb log ---\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asks xlb to re-read its config file: SIGHUP to the process we
    /// started (refused if it has already exited, so the pid cannot have
    /// been reused).
    pub fn reload(&self) -> anyhow::Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!(
                "xlb exited ({st}); cannot reload\n--- xlb log ---\n{}",
                self.log_tail(30)
            );
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP)
            .with_context(|| format!("SIGHUP to xlb (pid {pid})"))
    }

    /// `xlb reload` through the control socket: returns once the daemon
    /// has applied the file (or refused it), unlike [`Xlb::reload`]'s
    /// SIGHUP, which returns at once.
    pub fn reload_now(&self) -> anyhow::Result<String> {
        self.cli("reload")
    }

    /// The last `n` lines of xlb's log, without terminal colour codes.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// xlb's whole log so far, without terminal colour codes.
    pub fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// How long after `since` xlb logged the first line that `matches`, by
    /// the line's own time stamp (see [`log_time`]): how tests and
    /// benchmarks time what xlb did by xlb's own clock.
    pub fn logged_after(
        &self,
        since: SystemTime,
        matches: impl Fn(&str) -> bool,
    ) -> Option<Duration> {
        self.log()
            .lines()
            .filter(|l| matches(l))
            .find_map(|l| log_time(l)?.duration_since(since).ok())
    }

    /// Path of xlb's log file (inside the topology's temp dir).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether xlb is still running.
    pub fn is_running(&self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. True if SIGTERM sufficed.
    pub fn stop(self, grace: Duration) -> bool {
        self.child.stop(grace)
    }

    /// `xlb down` through the control socket: the daemon resigns, removes
    /// its data plane and exits (waited for, up to 5 s). Returns what it
    /// printed.
    pub fn down(self) -> anyhow::Result<String> {
        let printed = self.cli("down")?;
        self.wait_exit(Duration::from_secs(5))
            .context("after `xlb down`")?;
        Ok(printed.trim().to_owned())
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.is_running() {
            ensure!(
                Instant::now() < deadline,
                "xlb still runs after {timeout:?}\n--- xlb log ---\n{}",
                self.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// `xlb CMD --socket SOCK`: what it printed on stdout, or an error with
    /// all it printed if it failed.
    fn cli(&self, cmd: &str) -> anyhow::Result<String> {
        let out = Command::new(&self.exe)
            .arg(cmd)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .with_context(|| format!("running xlb {cmd}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            out.status.success(),
            "xlb {cmd} failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(stdout)
    }

    /// SIGKILL by PID, no grace: a crash.
    pub fn kill_now(&self) -> anyhow::Result<()> {
        self.child.kill_now()
    }

    /// SIGSTOP (`true`) or SIGCONT: a control plane that stops running
    /// for a while, its data plane going on.
    pub fn freeze(&self, frozen: bool) -> anyhow::Result<()> {
        self.child.freeze(frozen)
    }
}

/// Removes ANSI escape sequences (`ESC [ ... final-byte`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Starts `xlb run --config CONFIG` as node `n` in `ns`, its output in
/// `<dir>/xlb<n>-<k>.log` (k counts the node's starts).
pub(crate) fn spawn_node(
    dir: &Path,
    ns: &NetNs,
    n: usize,
    xlb_exe: &Path,
    config: &Path,
    socket: &Path,
) -> anyhow::Result<Xlb> {
    let log = (1..)
        .map(|k| dir.join(format!("xlb{n}-{k}.log")))
        .find(|log| !log.exists())
        .expect("some start number is free");
    spawn_xlb(
        ns,
        &format!("xlb node {n}"),
        xlb_exe,
        config,
        &[],
        socket,
        log,
    )
}

/// Runs `xlb status --socket SOCK --json` (bounded to 5 s) and parses it.
pub fn xlb_status(xlb_exe: &Path, socket: &Path) -> anyhow::Result<Status> {
    let mut cmd = Command::new(xlb_exe);
    cmd.arg("status")
        .arg("--socket")
        .arg(socket)
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let line = netns::cmd_line(&cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run `{line}`"))?;
    // Read while it runs: the status of a thousand backends is more than a
    // pipe holds, and a child blocked writing it never exits.
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().context("stdout piped")?));
    let stderr = drain(Box::new(child.stderr.take().context("stderr piped")?));
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{line}` timed out");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "`{line}` failed ({status}): {}",
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    serde_json::from_slice(&stdout).with_context(|| {
        format!(
            "`{line}` printed invalid JSON: {}",
            String::from_utf8_lossy(&stdout)
        )
    })
}

/// The VIP named `name` in a status.
pub fn status_vip<'a>(status: &'a Status, name: &str) -> anyhow::Result<&'a VipStatus> {
    status.vip(name).ok_or_else(|| {
        anyhow!(
            "no VIP {name:?} in status {}",
            serde_json::to_string(status).unwrap_or_default()
        )
    })
}

/// Per-backend `(name, packets, bytes)` of VIP `vip` in a status.
pub fn backend_counters(status: &Status, vip: &str) -> anyhow::Result<Vec<(String, u64, u64)>> {
    Ok(status_vip(status, vip)?
        .backends
        .iter()
        .map(|b| (b.name.clone(), b.packets, b.bytes))
        .collect())
}

/// The time of an xlb log line, from the time stamp that starts it
/// (`2026-11-23T01:09:11.123456Z`): how tests and benchmarks time what xlb
/// did by xlb's own clock.
pub fn log_time(line: &str) -> Option<SystemTime> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if d.len() != 3 || t.len() != 3 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
    let nanos: u32 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(u64::try_from(secs).ok()?, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_log_time_stamps() {
        let t = log_time("2026-11-23T01:09:11.123456Z  WARN x").unwrap();
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1_795_396_151);
        assert_eq!(d.subsec_micros(), 123_456);
        assert!(log_time("garbage").is_none());
    }

    #[test]
    fn v6_addresses_reuse_the_v4_host_digits() {
        assert_eq!(addr6(LB_HOST), "fd00:18::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            addr6(backend_host(1)),
            "fd00:18::11".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(addr4(backend_host(3)), Ipv4Addr::new(198, 18, 0, 13));
        assert_eq!(addr6(100), VIP6);
        assert_eq!(addr4(100), VIP4);
    }

    #[test]
    fn strip_ansi_removes_colour_codes() {
        assert_eq!(
            strip_ansi("\x1b[2mtime\x1b[0m \x1b[32m INFO\x1b[0m msg"),
            "time  INFO msg"
        );
    }

    #[test]
    fn status_helpers_read_the_documented_json() {
        let json = r#"{"interface":"x","xdp_mode":"native","forwarding":true,"global":{},
            "drops":{},"vips":[{"name":"web4","address":"198.18.0.100","port":80,
            "protocol":"tcp","mode":"dsr","affinity":"flow","ring_size":13,"packets":7,
            "bytes":700,"backends":[
                {"name":"backend-1","address":"198.18.0.11","weight":1,"mac":null,
                 "state":"active","packets":3,"bytes":300},
                {"name":"backend-2","address":"198.18.0.12","weight":1,"mac":null,
                 "state":"unresolved","packets":4,"bytes":400}]}]}"#;
        let status: Status = serde_json::from_str(json).unwrap();
        assert!(!status.all_backends_active());
        assert_eq!(status_vip(&status, "web4").unwrap().packets, 7);
        assert!(status_vip(&status, "web6").is_err());
        assert_eq!(
            backend_counters(&status, "web4").unwrap(),
            vec![("backend-1".into(), 3, 300), ("backend-2".into(), 4, 400)]
        );
        let mut ready = status.clone();
        ready.vips[0].backends[1].state = lb_user::api::BackendState::Active;
        assert!(ready.all_backends_active());
    }
}
