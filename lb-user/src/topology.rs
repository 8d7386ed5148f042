//! The DSR test / demo topology, built from network namespaces.
//!
//! ```text
//!   client ns ─ <p>c ── <p>pc ┐
//!   xlb ns ──── <p>lb ─ <p>plb ┤ bridge <p>br (in switch ns <p>sw)
//!   backend i ─ <p>bi ─ <p>pbi ┘
//! ```
//!
//! One L2 segment 198.18.0.0/24 + fd00:18::/64: client .2 / ::2, xlb node
//! .1 / ::1 (plus the VIPs .100 / ::100 on its NIC, so it answers ARP/ND for
//! them), backend i .(10+i) / ::(10+i) with the VIPs on `lo` and ARP for them
//! suppressed (arp_ignore=1, arp_announce=2). Each backend runs a real nginx
//! answering `backend-<i>\n` on `/` and an ~8 KB body on `/big`.
//!
//! Everything (namespaces, links, nginx processes, the temp dir) carries a
//! per-run prefix and is torn down on drop, on panic unwinding, and on
//! SIGINT/SIGTERM (see [`crate::netns`]).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use serde_json::Value;

use crate::netns::{self, MAX_IFNAME, ManagedChild, NetNs, TempDir};

mod faults;
pub use faults::Serve;

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
/// The second xlb node of [`Topology::vrrp_pair`].
const LB2_HOST: u8 = 3;
const BACKEND_HOST_BASE: u8 = 10;

fn addr4(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, host)
}

/// fd00:18::<host>, the host number written with the same digits as in the
/// IPv4 address (backend 1 is 198.18.0.11 and fd00:18::11).
fn addr6(host: u8) -> Ipv6Addr {
    let group = u16::from_str_radix(&host.to_string(), 16).expect("decimal digits are hex digits");
    Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, group)
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

/// The DSR topology; see the module docs.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
    // Fields drop in this order after `Drop::drop` (which stops nginx): the
    // peer's XDP program, the namespaces (ends before the switch), the temp dir.
    /// One per backend; `None` while stopped (see [`Topology::stop_backend`]).
    nginx: Vec<Option<ManagedChild>>,
    /// Backends that accept connections and never answer (see
    /// [`Topology::silence_backend`]); stopped on drop.
    silent: Vec<faults::SilentServer>,
    /// The XDP_PASS programs on the bridge-side peers of the xlb NICs (see
    /// [`attach_xdp_pass`]); detached when dropped.
    peer_xdp: Vec<aya::Ebpf>,
    backends: Vec<NetNs>,
    client: NetNs,
    lb: NetNs,
    /// The second xlb node ([`Topology::vrrp_pair`] only).
    lb2: Option<NetNs>,
    switch: NetNs,
    dir: TempDir,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for child in self.nginx.drain(..).flatten() {
            child.stop(Duration::from_secs(2));
        }
        self.silent.clear();
        // Namespaces and the temp dir go with the fields.
    }
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

impl Topology {
    /// Builds the DSR topology with `backends` nginx backends (1..=20) and
    /// checks that the client reaches every backend on its own address.
    pub fn dsr(backends: usize) -> anyhow::Result<Topology> {
        Self::build(backends, false)
    }

    /// Like [`Topology::dsr`], with a second xlb node (namespace `<p>lb2`,
    /// NIC `<p>lb2`, 198.18.0.3 / fd00:18::3) on the same segment, and no VIP
    /// on either node's NIC: VRRP assigns them to the master.
    pub fn vrrp_pair(backends: usize) -> anyhow::Result<Topology> {
        Self::build(backends, true)
    }

    fn build(backends: usize, pair: bool) -> anyhow::Result<Topology> {
        ensure!(netns::is_root(), "building a network topology needs root");
        ensure!(
            (1..=MAX_BACKENDS).contains(&backends),
            "backends must be in 1..={MAX_BACKENDS}, got {backends}"
        );
        let (prefix, dir) = pick_prefix()?;
        let p = prefix.as_str();
        // Created in this order; on error, locals drop in reverse (the
        // backends first, the temp dir last).
        let switch = NetNs::create(&format!("{p}sw"))?;
        let lb = NetNs::create(&format!("{p}lb"))?;
        let lb2 = if pair {
            Some(NetNs::create(&format!("{p}lb2"))?)
        } else {
            None
        };
        let client = NetNs::create(&format!("{p}c"))?;
        let mut backend_ns = Vec::with_capacity(backends);
        for i in 1..=backends {
            backend_ns.push(NetNs::create(&format!("{p}b{i}"))?);
        }
        let mut topo = Topology {
            prefix: prefix.clone(),
            nginx: Vec::new(),
            silent: Vec::new(),
            peer_xdp: Vec::new(),
            backends: backend_ns,
            client,
            lb,
            lb2,
            switch,
            dir,
        };
        topo.wire()
            .with_context(|| format!("building topology {prefix}"))?;
        // After an XDP_TX the veth driver wakes the peer's NAPI only if the
        // peer has an XDP program of its own (`veth_xdp_flush`); otherwise
        // the frames sit in the ring until unrelated traffic comes by.
        let mut peers = vec![topo.lb_peer_ifname()];
        if pair {
            peers.push(format!("{p}plb2"));
        }
        for peer in peers {
            let prog = topo
                .switch
                .in_ns(|| attach_xdp_pass(&peer))
                .with_context(|| format!("attaching xdp_pass to {peer}"))?;
            topo.peer_xdp.push(prog);
        }
        topo.start_nginx()
            .with_context(|| format!("starting nginx in topology {prefix}"))?;
        topo.verify()
            .with_context(|| format!("checking topology {prefix}"))?;
        Ok(topo)
    }

    fn wire(&self) -> anyhow::Result<()> {
        let p = &self.prefix;
        // Namespace-wide settings before any link exists, so new links
        // inherit them (no DAD delays; backends never answer ARP for the VIP).
        for ns in self.all_ns() {
            ip(ns, "link set lo up")?;
            ns.sysctl(&[
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ])?;
        }
        for b in &self.backends {
            b.sysctl(&[
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
                "net.ipv4.conf.default.arp_ignore=1",
                "net.ipv4.conf.default.arp_announce=2",
            ])?;
        }

        let br = format!("{p}br");
        ip(
            &self.switch,
            &format!("link add {br} type bridge mcast_snooping 0 stp_state 0"),
        )?;
        ip(&self.switch, &format!("link set {br} up"))?;

        let mut ends: Vec<(&NetNs, String, String, u8)> = vec![
            (&self.client, format!("{p}c"), format!("{p}pc"), CLIENT_HOST),
            (&self.lb, format!("{p}lb"), format!("{p}plb"), LB_HOST),
        ];
        if let Some(lb2) = &self.lb2 {
            ends.push((lb2, format!("{p}lb2"), format!("{p}plb2"), LB2_HOST));
        }
        for (idx, b) in self.backends.iter().enumerate() {
            let i = idx + 1;
            ends.push((b, format!("{p}b{i}"), format!("{p}pb{i}"), backend_host(i)));
        }
        for (ns, inner, peer, host) in &ends {
            debug_assert!(inner.len() <= MAX_IFNAME && peer.len() <= MAX_IFNAME);
            let ns_name = ns.name();
            ip(
                &self.switch,
                &format!("link add {peer} type veth peer name {inner} netns {ns_name}"),
            )?;
            ip(&self.switch, &format!("link set {peer} master {br} up"))?;
            // Partial checksums left by veth offload break after XDP_TX.
            ethtool(&self.switch, &format!("-K {peer} tx off"))?;
            ethtool(ns, &format!("-K {inner} tx off"))?;
            let (a4, a6) = (addr4(*host), addr6(*host));
            ip(ns, &format!("addr add {a4}/24 dev {inner}"))?;
            ip(ns, &format!("addr add {a6}/64 dev {inner} nodad"))?;
            ip(ns, &format!("link set {inner} up"))?;
        }
        // On veth, frames sent by XDP_TX/XDP_REDIRECT are queued to the peer's
        // NAPI ring, which exists only with GRO on or an XDP program there.
        ethtool(&self.switch, &format!("-K {p}plb gro on"))?;
        if self.lb2.is_some() {
            ethtool(&self.switch, &format!("-K {p}plb2 gro on"))?;
        } else {
            // The xlb node owns the VIPs on its NIC: it answers ARP/ND for them
            // and the XDP program takes the VIP traffic before the stack sees
            // it. (With two nodes, VRRP assigns them to the master.)
            let lb_if = self.lb_ifname();
            ip(&self.lb, &format!("addr add {VIP4}/32 dev {lb_if}"))?;
            // Deprecated (preferred_lft 0): still answered for and accepted,
            // but never picked as the source of the node's own traffic.
            // Without it, IPv6 source selection prefers the /128 VIP (longest
            // match) for connections to the backends, and a health check's
            // reply would go to the VIP on the backend's own `lo`.
            ip(
                &self.lb,
                &format!("addr add {VIP6}/128 dev {lb_if} nodad preferred_lft 0"),
            )?;
        }

        // Backends accept VIP traffic on lo but never claim the VIP on the wire.
        for (idx, b) in self.backends.iter().enumerate() {
            let nic = format!("{p}b{}", idx + 1);
            ip(b, &format!("addr add {VIP4}/32 dev lo"))?;
            ip(b, &format!("addr add {VIP6}/128 dev lo nodad"))?;
            b.sysctl(&[
                &format!("net.ipv4.conf.{nic}.arp_ignore=1"),
                &format!("net.ipv4.conf.{nic}.arp_announce=2"),
            ])?;
        }
        Ok(())
    }

    fn start_nginx(&mut self) -> anyhow::Result<()> {
        for i in 1..=self.backends.len() {
            let child = self.spawn_nginx(i, &format!("backend-{i}\n"))?;
            self.nginx.push(Some(child));
        }
        for i in 1..=self.backends.len() {
            self.wait_nginx(i, Duration::from_secs(5))?;
        }
        Ok(())
    }

    /// Starts backend `i`'s nginx answering `body` on `/` (not waiting for it).
    fn spawn_nginx(&self, i: usize, body: &str) -> anyhow::Result<ManagedChild> {
        let dir = self.dir.path().join(format!("b{i}"));
        std::fs::create_dir_all(dir.join("www"))?;
        std::fs::create_dir_all(dir.join("tmp"))?;
        std::fs::write(dir.join("www").join("big"), big_body(i))?;
        let conf = nginx_conf(&dir, i, body);
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let stderr = std::fs::File::create(dir.join("stderr.log"))?;
        let mut cmd = self.backends[i - 1].exec([NGINX]);
        cmd.arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(stderr);
        ManagedChild::spawn(&format!("nginx backend-{i}"), &mut cmd)
    }

    fn wait_nginx(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let targets = [
            SocketAddr::new(self.backend_addr4(i).into(), VIP_PORT),
            SocketAddr::new(self.backend_addr6(i).into(), VIP_PORT),
        ];
        let deadline = Instant::now() + timeout;
        let Some(child) = self.nginx[i - 1].as_ref() else {
            bail!("nginx backend-{i} is stopped");
        };
        loop {
            let up = self.backends[i - 1].in_ns(|| {
                targets
                    .iter()
                    .all(|t| TcpStream::connect_timeout(t, Duration::from_millis(200)).is_ok())
            });
            if up {
                return Ok(());
            }
            let dir = self.dir.path().join(format!("b{i}"));
            let logs = || {
                let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
                format!("{}{}", read("stderr.log"), read("error.log"))
            };
            if let Some(status) = child.try_wait()? {
                bail!("nginx backend-{i} exited ({status}): {}", logs().trim());
            }
            if Instant::now() >= deadline {
                bail!(
                    "nginx backend-{i} not listening on {} and {} after {timeout:?}: {}",
                    targets[0],
                    targets[1],
                    logs().trim()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every backend answers the client on its own addresses, with its own
    /// identity: proves the L2 segment, ARP/ND and nginx work.
    fn verify(&self) -> anyhow::Result<()> {
        for i in 1..=self.backends.len() {
            for ip in [
                IpAddr::from(self.backend_addr4(i)),
                IpAddr::from(self.backend_addr6(i)),
            ] {
                let addr = SocketAddr::new(ip, VIP_PORT);
                let (status, body) = http_get(&self.client, addr, "/", Duration::from_secs(3))
                    .with_context(|| format!("client -> backend-{i} at {addr}"))?;
                ensure!(
                    status == 200 && body == format!("backend-{i}\n"),
                    "client -> {addr}: got {status} {body:?}, want 200 \"backend-{i}\\n\""
                );
            }
        }
        Ok(())
    }

    fn all_ns(&self) -> impl Iterator<Item = &NetNs> {
        [&self.switch, &self.lb, &self.client]
            .into_iter()
            .chain(self.lb2.iter())
            .chain(self.backends.iter())
    }

    /// The per-run prefix of every namespace and link name.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// The temp dir (configs, logs, control socket); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// The client namespace.
    pub fn client(&self) -> &NetNs {
        &self.client
    }
    /// The xlb namespace.
    pub fn lb(&self) -> &NetNs {
        &self.lb
    }
    /// The switch namespace (holds the bridge and the bridge-side veths).
    pub fn switch(&self) -> &NetNs {
        &self.switch
    }
    /// Backend `i` (1-based).
    pub fn backend(&self, i: usize) -> &NetNs {
        &self.backends[i - 1]
    }
    /// Number of backends.
    pub fn backend_count(&self) -> usize {
        self.backends.len()
    }
    /// The xlb node's NIC (inside [`Topology::lb`]).
    pub fn lb_ifname(&self) -> String {
        format!("{}lb", self.prefix)
    }
    /// The client's NIC.
    pub fn client_ifname(&self) -> String {
        format!("{}c", self.prefix)
    }
    /// Backend `i`'s NIC.
    pub fn backend_ifname(&self, i: usize) -> String {
        format!("{}b{i}", self.prefix)
    }
    /// The bridge-side peer of the xlb NIC (inside [`Topology::switch`]).
    pub fn lb_peer_ifname(&self) -> String {
        format!("{}plb", self.prefix)
    }
    pub fn vip4(&self) -> Ipv4Addr {
        VIP4
    }
    pub fn vip6(&self) -> Ipv6Addr {
        VIP6
    }
    pub fn client_addr4(&self) -> Ipv4Addr {
        addr4(CLIENT_HOST)
    }
    pub fn client_addr6(&self) -> Ipv6Addr {
        addr6(CLIENT_HOST)
    }
    pub fn lb_addr4(&self) -> Ipv4Addr {
        addr4(LB_HOST)
    }
    pub fn lb_addr6(&self) -> Ipv6Addr {
        addr6(LB_HOST)
    }
    pub fn backend_addr4(&self, i: usize) -> Ipv4Addr {
        addr4(backend_host(i))
    }
    pub fn backend_addr6(&self, i: usize) -> Ipv6Addr {
        addr6(backend_host(i))
    }
    /// The xlb control socket path used by [`Topology::write_xlb_config`].
    pub fn control_socket(&self) -> PathBuf {
        self.dir.path().join("xlb.sock")
    }

    /// xlb node `n` (1 or 2; 2 only in [`Topology::vrrp_pair`]).
    pub fn node(&self, n: usize) -> &NetNs {
        match n {
            2 => self.lb2.as_ref().expect("node 2 exists only in vrrp_pair"),
            _ => &self.lb,
        }
    }

    /// NIC of xlb node `n`.
    pub fn node_ifname(&self, n: usize) -> String {
        match n {
            2 => format!("{}lb2", self.prefix),
            _ => self.lb_ifname(),
        }
    }

    /// IPv4 address of xlb node `n`.
    pub fn node_addr4(&self, n: usize) -> Ipv4Addr {
        addr4(if n == 2 { LB2_HOST } else { LB_HOST })
    }

    /// Control socket of xlb node `n` in [`Topology::vrrp_pair`].
    pub fn node_socket(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("xlb{n}.sock"))
    }

    /// Writes the config of xlb node `n` of a [`Topology::vrrp_pair`]: the
    /// VIPs of [`Topology::write_xlb_config`] plus `vrrp` (the `[vrrp]`
    /// section, verbatim). Returns its path.
    pub fn write_node_config(
        &self,
        n: usize,
        weights: &[u32],
        vrrp: &str,
    ) -> anyhow::Result<PathBuf> {
        let mut s = self.xlb_config_text(&self.node_ifname(n), &self.node_socket(n), weights)?;
        s.push('\n');
        s.push_str(vrrp);
        let path = self.dir.path().join(format!("xlb{n}.toml"));
        std::fs::write(&path, s).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Starts `xlb run --config CONFIG` on xlb node `n`; its output goes to
    /// `<dir>/xlb<n>-<k>.log` (k counts restarts).
    pub fn start_node(&self, n: usize, xlb_exe: &Path, config: &Path) -> anyhow::Result<Xlb> {
        let mut k = 1;
        let log = loop {
            let log = self.dir.path().join(format!("xlb{n}-{k}.log"));
            if !log.exists() {
                break log;
            }
            k += 1;
        };
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = self.node(n).exec([xlb_exe.as_os_str()]);
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .stdout(out)
            .stderr(err);
        let child = ManagedChild::spawn(&format!("xlb node {n}"), &mut cmd)?;
        Ok(Xlb {
            child,
            exe: xlb_exe.to_owned(),
            socket: self.node_socket(n),
            log,
        })
    }

    /// Writes an xlb config (VIPs "web4" and "web6", port 80/tcp, backends
    /// "backend-<i>" with `weights[i-1]`) into the temp dir; returns its path.
    pub fn write_xlb_config(&self, weights: &[u32]) -> anyhow::Result<PathBuf> {
        let s = self.xlb_config_text(&self.lb_ifname(), &self.control_socket(), weights)?;
        let path = self.dir.path().join("xlb.toml");
        std::fs::write(&path, s).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    fn xlb_config_text(
        &self,
        ifname: &str,
        socket: &Path,
        weights: &[u32],
    ) -> anyhow::Result<String> {
        ensure!(
            weights.len() == self.backends.len(),
            "{} weights for {} backends",
            weights.len(),
            self.backends.len()
        );
        let mut s = String::new();
        writeln!(s, "interface = \"{ifname}\"")?;
        writeln!(s, "xdp_mode = \"auto\"")?;
        writeln!(s, "control_socket = \"{}\"", socket.display())?;
        for (name, vip, v6) in [
            ("web4", IpAddr::from(VIP4), false),
            ("web6", VIP6.into(), true),
        ] {
            writeln!(s, "\n[[vip]]")?;
            writeln!(s, "name = \"{name}\"")?;
            writeln!(s, "address = \"{vip}\"")?;
            writeln!(s, "port = {VIP_PORT}")?;
            writeln!(s, "protocol = \"tcp\"")?;
            for (idx, w) in weights.iter().enumerate() {
                let i = idx + 1;
                let addr: IpAddr = if v6 {
                    self.backend_addr6(i).into()
                } else {
                    self.backend_addr4(i).into()
                };
                writeln!(s, "\n[[vip.backend]]")?;
                writeln!(s, "name = \"backend-{i}\"")?;
                writeln!(s, "address = \"{addr}\"")?;
                writeln!(s, "weight = {w}")?;
            }
        }
        Ok(s)
    }

    /// Starts `xlb run --config CONFIG` inside the xlb namespace; its stderr
    /// (and stdout) go to `<dir>/xlb.log`.
    pub fn start_xlb(&self, xlb_exe: &Path, config: &Path) -> anyhow::Result<Xlb> {
        let log = self.dir.path().join("xlb.log");
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = self.lb.exec([xlb_exe.as_os_str()]);
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .stdout(out)
            .stderr(err);
        let child = ManagedChild::spawn("xlb", &mut cmd)?;
        Ok(Xlb {
            child,
            exe: xlb_exe.to_owned(),
            socket: self.control_socket(),
            log,
        })
    }

    /// Counters of the xlb node's NIC.
    pub fn lb_link_stats(&self) -> anyhow::Result<LinkStats> {
        link_stats(&self.lb, &self.lb_ifname())
    }
}

/// Attaches the pass-everything XDP program ([`crate::XDP_PASS_OBJECT`]) in
/// native mode to `ifname` in the calling thread's namespace. It stays
/// attached while the returned object lives.
pub fn attach_xdp_pass(ifname: &str) -> anyhow::Result<aya::Ebpf> {
    const PROGRAM: &str = "xdp_pass";
    let mut ebpf =
        aya::Ebpf::load(crate::XDP_PASS_OBJECT).context("loading the xdp-pass object")?;
    let prog: &mut aya::programs::Xdp = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| anyhow!("no program {PROGRAM} in the xdp-pass object"))?
        .try_into()?;
    prog.load().context("loading xdp_pass into the kernel")?;
    prog.attach(ifname, aya::programs::XdpMode::Driver)
        .with_context(|| format!("attaching xdp_pass to {ifname} (native mode)"))?;
    Ok(ebpf)
}

fn nginx_conf(dir: &Path, i: usize, body: &str) -> String {
    let d = dir.display();
    let body = body
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!(
        r#"# nginx for xlb test backend-{i} (generated)
master_process off;
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    default_type text/plain;
    server {{
        listen 0.0.0.0:{VIP_PORT};
        listen [::]:{VIP_PORT} ipv6only=on;
        location / {{
            return 200 "{body}";
        }}
        location = /big {{
            root {d}/www;
        }}
    }}
}}
"#
    )
}

/// `/big` of backend `i`: first line `backend-<i>`, BIG_BODY_LEN bytes total.
fn big_body(i: usize) -> Vec<u8> {
    let mut body = format!("backend-{i}\n").into_bytes();
    let line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
    while body.len() < BIG_BODY_LEN {
        let n = line.len().min(BIG_BODY_LEN - body.len());
        body.extend_from_slice(&line[..n]);
    }
    body
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
    pub fn status(&self) -> anyhow::Result<Value> {
        xlb_status(&self.exe, &self.socket)
    }

    /// Polls status until every backend of every VIP is "active"; returns that
    /// status. The error names the last status (or error) seen and the log tail.
    pub fn wait_ready(&self, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("(no status yet)");
        loop {
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "xlb exited ({st}) before becoming ready; last status: {last}\n--- xlb log ---\n{}",
                    self.log_tail(30)
                );
            }
            match self.status() {
                Ok(v) if all_backends_active(&v) => return Ok(v),
                Ok(v) => last = v.to_string(),
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                bail!(
                    "xlb not ready after {timeout:?} (want every backend \"active\"); last status: {last}\n--- xlb log ---\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `n` lines of xlb's log, without terminal colour codes.
    pub fn log_tail(&self, n: usize) -> String {
        let text = strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default());
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
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

    /// SIGKILL by PID, no grace: a crash.
    pub fn kill_now(&self) -> anyhow::Result<()> {
        self.child.kill_now()
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

/// Runs `xlb status --socket SOCK --json` (bounded to 5 s) and parses it.
pub fn xlb_status(xlb_exe: &Path, socket: &Path) -> anyhow::Result<Value> {
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
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{line}` timed out");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "`{line}` printed invalid JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// True if the status has at least one VIP and every backend is "active".
pub fn all_backends_active(status: &Value) -> bool {
    let Some(vips) = status["vips"].as_array() else {
        return false;
    };
    !vips.is_empty()
        && vips.iter().all(|v| {
            v["backends"].as_array().is_some_and(|bs| {
                !bs.is_empty() && bs.iter().all(|b| b["state"].as_str() == Some("active"))
            })
        })
}

/// The VIP object named `name` in a status.
pub fn status_vip<'a>(status: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    status["vips"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"].as_str() == Some(name)))
        .ok_or_else(|| anyhow!("no VIP {name:?} in status {status}"))
}

/// Per-backend `(name, packets, bytes)` of VIP `vip` in a status.
pub fn backend_counters(status: &Value, vip: &str) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let v = status_vip(status, vip)?;
    let bs = v["backends"]
        .as_array()
        .ok_or_else(|| anyhow!("VIP {vip} has no backends array: {v}"))?;
    bs.iter()
        .map(|b| {
            Ok((
                b["name"].as_str().unwrap_or("?").to_owned(),
                b["packets"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("no packets in {b}"))?,
                b["bytes"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("no bytes in {b}"))?,
            ))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// HTTP client (std only): one new TCP connection per request.

/// One `GET path` to `addr` from inside `ns` on a new connection
/// (`Connection: close`); returns (status, body).
pub fn http_get(
    ns: &NetNs,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    ns.in_ns(|| get_once(addr, path, timeout))
}

/// After this many consecutive failures [`http_get_many`] stops early.
pub const MAX_CONSECUTIVE_FAILURES: usize = 3;

/// `count` sequential [`http_get`]s (each on a new connection) in one
/// namespace thread; per-request results, in order. Stops early after
/// [`MAX_CONSECUTIVE_FAILURES`] consecutive failures (the remaining entries
/// are errors saying so), so a broken path costs a few timeouts, not `count`.
pub fn http_get_many(
    ns: &NetNs,
    addr: SocketAddr,
    path: &str,
    count: usize,
    timeout: Duration,
) -> Vec<anyhow::Result<(u16, String)>> {
    ns.in_ns(|| {
        let mut out = Vec::with_capacity(count);
        let mut failed_in_a_row = 0;
        for _ in 0..count {
            if failed_in_a_row >= MAX_CONSECUTIVE_FAILURES {
                out.push(Err(anyhow!(
                    "GET http://{addr}{path}: not sent, {MAX_CONSECUTIVE_FAILURES} requests in a row failed"
                )));
                continue;
            }
            let r = get_once(addr, path, timeout);
            failed_in_a_row = if r.is_ok() { 0 } else { failed_in_a_row + 1 };
            out.push(r);
        }
        out
    })
}

fn get_once(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| anyhow!("GET http://{addr}{path}: timed out after {timeout:?}"))
    };
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect to {addr}"))?;
    s.set_nodelay(true)?;
    s.set_write_timeout(Some(remaining()?))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: xlb-test\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .with_context(|| format!("send to {addr}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        s.set_read_timeout(Some(remaining()?))?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if buf.is_empty() => {
                return Err(e).with_context(|| format!("read from {addr}"));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("read from {addr} after {} bytes", buf.len()));
            }
        }
    }
    let _ = s.shutdown(Shutdown::Both);
    parse_response(&buf).with_context(|| format!("GET http://{addr}{path}"))
}

fn parse_response(buf: &[u8]) -> anyhow::Result<(u16, String)> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("incomplete response ({} bytes)", buf.len()))?;
    let head = std::str::from_utf8(&buf[..end]).context("non-UTF-8 headers")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let mut body = &buf[end + 4..];
    for l in lines {
        if let Some((k, v)) = l.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            let len: usize = v.trim().parse().context("bad Content-Length")?;
            ensure!(
                body.len() >= len,
                "short body: {} of {len} bytes",
                body.len()
            );
            body = &body[..len];
        }
    }
    Ok((status, String::from_utf8_lossy(body).into_owned()))
}

/// Proves `server_ns` answers TCP on `ip`: binds a listener there (ephemeral
/// port), connects from `client_ns`, and reads a greeting back.
pub fn tcp_probe(
    server_ns: &NetNs,
    client_ns: &NetNs,
    ip: IpAddr,
    timeout: Duration,
) -> anyhow::Result<()> {
    let listener = server_ns
        .in_ns(|| TcpListener::bind(SocketAddr::new(ip, 0)))
        .with_context(|| format!("bind {ip} in {}", server_ns.name()))?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    std::thread::scope(|s| {
        let server = s.spawn(|| -> anyhow::Result<()> {
            loop {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        conn.set_nonblocking(false)?;
                        conn.set_write_timeout(Some(timeout))?;
                        conn.write_all(b"xlb-node\n")?;
                        return Ok(());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() >= deadline {
                            bail!("no connection accepted on {addr} within {timeout:?}");
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        });
        let client = client_ns.in_ns(|| -> anyhow::Result<()> {
            let mut c = TcpStream::connect_timeout(&addr, timeout)
                .with_context(|| format!("connect to {addr}"))?;
            c.set_read_timeout(Some(timeout))?;
            let mut got = String::new();
            c.read_to_string(&mut got)
                .with_context(|| format!("read from {addr}"))?;
            ensure!(
                got == "xlb-node\n",
                "unexpected greeting {got:?} from {addr}"
            );
            Ok(())
        });
        let server = server
            .join()
            .map_err(|_| anyhow!("probe server panicked"))?;
        client.and(server)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn parse_response_honours_content_length() {
        let raw = b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 10\r\n\r\nbackend-1\nTRAILING";
        assert_eq!(
            parse_response(raw).unwrap(),
            (200, "backend-1\n".to_owned())
        );
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nback";
        assert!(parse_response(short).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn big_body_names_its_backend_and_has_the_promised_size() {
        let body = big_body(2);
        assert_eq!(body.len(), BIG_BODY_LEN);
        assert!(body.starts_with(b"backend-2\n"));
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
        let status: Value = serde_json::from_str(
            r#"{"vips":[{"name":"web4","packets":7,"backends":[
                {"name":"backend-1","state":"active","packets":3,"bytes":300},
                {"name":"backend-2","state":"unresolved","packets":4,"bytes":400}]}]}"#,
        )
        .unwrap();
        assert!(!all_backends_active(&status));
        assert_eq!(status_vip(&status, "web4").unwrap()["packets"], 7);
        assert!(status_vip(&status, "web6").is_err());
        assert_eq!(
            backend_counters(&status, "web4").unwrap(),
            vec![("backend-1".into(), 3, 300), ("backend-2".into(), 4, 400)]
        );
        let mut ready = status.clone();
        ready["vips"][0]["backends"][1]["state"] = "active".into();
        assert!(all_backends_active(&ready));
    }
}
