//! The DSR topology.
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
//! suppressed (arp_ignore=1, arp_announce=2). Each backend runs nginx on
//! port 80.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, ensure};

use crate::config::{Backend, Vip, Vrrp, XlbConfig};

use super::{
    CLIENT_HOST, Hosts, LB_HOST, LinkStats, VIP_PORT, VIP4, VIP6, Xlb, add_veth, addr4, addr6,
    attach_xdp_pass, backend_host, ethtool, http_get, ip, link_stats, nginx, spawn_node,
};
use crate::netns::{ManagedChild, NetNs};

mod faults;
pub use faults::Serve;

/// The second xlb node of [`Topology::vrrp_pair`].
const LB2_HOST: u8 = 3;

/// The DSR topology; see the module docs. The namespaces, names and
/// addresses it shares with the NAT topology come from [`Hosts`], which it
/// dereferences to.
#[derive(Debug)]
pub struct Topology {
    // Fields drop in this order after `Drop::drop` (which stops nginx): the
    // peers' XDP programs, the second node, then the other namespaces (ends
    // before the switch) and the temp dir.
    /// One per backend; `None` while stopped (see [`Topology::stop_backend`]).
    nginx: Vec<Option<ManagedChild>>,
    /// Backends that accept connections and never answer (see
    /// [`Topology::silence_backend`]); stopped on drop.
    silent: Vec<faults::SilentServer>,
    /// The XDP_PASS programs on the bridge-side peers of the xlb NICs (see
    /// [`attach_xdp_pass`]); detached when dropped.
    peer_xdp: Vec<aya::Ebpf>,
    /// The second xlb node ([`Topology::vrrp_pair`] only).
    lb2: Option<NetNs>,
    hosts: Hosts,
}

impl Deref for Topology {
    type Target = Hosts;
    fn deref(&self) -> &Hosts {
        &self.hosts
    }
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
        let hosts = Hosts::create(backends)?;
        let prefix = hosts.prefix().to_owned();
        let p = prefix.as_str();
        let lb2 = if pair {
            Some(NetNs::create(&format!("{p}lb2"))?)
        } else {
            None
        };
        let mut topo = Topology {
            nginx: Vec::new(),
            silent: Vec::new(),
            peer_xdp: Vec::new(),
            lb2,
            hosts,
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
                .switch()
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
        let p = self.prefix();
        // Namespace-wide settings before any link exists, so new links
        // inherit them (no DAD delays; backends never answer ARP for the VIP).
        for ns in self.all_ns() {
            ip(ns, "link set lo up")?;
            ns.sysctl(&[
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ])?;
        }
        for b in self.backends() {
            b.sysctl(&[
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
                "net.ipv4.conf.default.arp_ignore=1",
                "net.ipv4.conf.default.arp_announce=2",
            ])?;
        }

        let br = format!("{p}br");
        ip(
            self.switch(),
            &format!("link add {br} type bridge mcast_snooping 0 stp_state 0"),
        )?;
        ip(self.switch(), &format!("link set {br} up"))?;

        let mut ends: Vec<(&NetNs, String, String, u8)> = vec![
            (
                self.client(),
                format!("{p}c"),
                format!("{p}pc"),
                CLIENT_HOST,
            ),
            (self.lb(), format!("{p}lb"), format!("{p}plb"), LB_HOST),
        ];
        if let Some(lb2) = &self.lb2 {
            ends.push((lb2, format!("{p}lb2"), format!("{p}plb2"), LB2_HOST));
        }
        for (idx, b) in self.backends().iter().enumerate() {
            let i = idx + 1;
            ends.push((b, format!("{p}b{i}"), format!("{p}pb{i}"), backend_host(i)));
        }
        for (ns, inner, peer, host) in &ends {
            add_veth(self.switch(), &br, ns, inner, peer)?;
            let (a4, a6) = (addr4(*host), addr6(*host));
            ip(ns, &format!("addr add {a4}/24 dev {inner}"))?;
            ip(ns, &format!("addr add {a6}/64 dev {inner} nodad"))?;
            ip(ns, &format!("link set {inner} up"))?;
        }
        // On veth, frames sent by XDP_TX/XDP_REDIRECT are queued to the peer's
        // NAPI ring, which exists only with GRO on or an XDP program there.
        ethtool(self.switch(), &format!("-K {p}plb gro on"))?;
        if self.lb2.is_some() {
            ethtool(self.switch(), &format!("-K {p}plb2 gro on"))?;
        } else {
            // The xlb node owns the VIPs on its NIC: it answers ARP/ND for them
            // and the XDP program takes the VIP traffic before the stack sees
            // it. (With two nodes, VRRP assigns them to the master.)
            let lb_if = self.lb_ifname();
            ip(self.lb(), &format!("addr add {VIP4}/32 dev {lb_if}"))?;
            // Deprecated (preferred_lft 0): still answered for and accepted,
            // but never picked as the source of the node's own traffic.
            // Without it, IPv6 source selection prefers the /128 VIP (longest
            // match) for connections to the backends, and a health check's
            // reply would go to the VIP on the backend's own `lo`.
            ip(
                self.lb(),
                &format!("addr add {VIP6}/128 dev {lb_if} nodad preferred_lft 0"),
            )?;
        }

        // Backends accept VIP traffic on lo but never claim the VIP on the wire.
        for (idx, b) in self.backends().iter().enumerate() {
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
        let (b4, b6) = (|i| self.backend_addr4(i), |i| self.backend_addr6(i));
        self.nginx = nginx::start_all(self.dir(), self.backends(), VIP_PORT, |i| {
            [b4(i).into(), b6(i).into()]
        })?
        .into_iter()
        .map(Some)
        .collect();
        Ok(())
    }

    /// Every backend answers the client on its own addresses, with its own
    /// identity: proves the L2 segment, ARP/ND and nginx work.
    fn verify(&self) -> anyhow::Result<()> {
        for i in 1..=self.backend_count() {
            for ip in [
                IpAddr::from(self.backend_addr4(i)),
                IpAddr::from(self.backend_addr6(i)),
            ] {
                let addr = SocketAddr::new(ip, VIP_PORT);
                let (status, body) = http_get(self.client(), addr, "/", Duration::from_secs(3))
                    .with_context(|| format!("client -> backend-{i} at {addr}"))?;
                ensure!(
                    status == 200 && body == format!("backend-{i}\n"),
                    "client -> {addr}: got {status} {body:?}, want 200 \"backend-{i}\\n\""
                );
            }
        }
        Ok(())
    }

    /// One more host on the segment that the topology knows nothing of
    /// (a stranger: e.g. one that forges VRRP adverts): namespace and NIC
    /// `<p><name>`, 198.18.0.`host`/24 and fd00:18::`host`/64 besides its
    /// link-local address. `host` must not be one of the topology's (1, 2,
    /// 3, 11..=30). Removed when dropped (drop it before the topology, or
    /// the namespace outlives its link).
    pub fn attach_host(&self, name: &str, host: u8) -> anyhow::Result<NetNs> {
        ensure!(
            !matches!(host, 0..=3 | 10..=30 | 100 | 255),
            "host number {host} is taken by the topology"
        );
        let p = self.prefix();
        let ns = NetNs::create(&format!("{p}{name}"))?;
        ip(&ns, "link set lo up")?;
        ns.sysctl(&[
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ])?;
        let (inner, peer) = (format!("{p}{name}"), format!("{p}p{name}"));
        add_veth(self.switch(), &format!("{p}br"), &ns, &inner, &peer)
            .with_context(|| format!("attaching {inner} to the segment"))?;
        ip(&ns, &format!("addr add {}/24 dev {inner}", addr4(host)))?;
        ip(
            &ns,
            &format!("addr add {}/64 dev {inner} nodad", addr6(host)),
        )?;
        ip(&ns, &format!("link set {inner} up"))?;
        Ok(ns)
    }

    fn all_ns(&self) -> impl Iterator<Item = &NetNs> {
        self.hosts.all_ns().chain(self.lb2.iter())
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
    /// xlb node `n` (1 or 2; 2 only in [`Topology::vrrp_pair`]).
    pub fn node(&self, n: usize) -> &NetNs {
        match n {
            2 => self.lb2.as_ref().expect("node 2 exists only in vrrp_pair"),
            _ => self.lb(),
        }
    }

    /// NIC of xlb node `n`.
    pub fn node_ifname(&self, n: usize) -> String {
        match n {
            2 => format!("{}lb2", self.prefix()),
            _ => self.lb_ifname(),
        }
    }

    /// IPv4 address of xlb node `n`.
    pub fn node_addr4(&self, n: usize) -> Ipv4Addr {
        addr4(if n == 2 { LB2_HOST } else { LB_HOST })
    }

    /// Control socket of xlb node `n` in [`Topology::vrrp_pair`].
    pub fn node_socket(&self, n: usize) -> PathBuf {
        self.dir().join(format!("xlb{n}.sock"))
    }

    /// The config of xlb node `n` of a [`Topology::vrrp_pair`]: the VIPs of
    /// [`Topology::xlb_config`] on that node's NIC, control socket and
    /// state dir.
    pub fn node_config(&self, n: usize, weights: &[u32]) -> XlbConfig {
        let mut c = self.config_for(&self.node_ifname(n), &self.node_socket(n), weights);
        c.state_dir = Some(self.state_dir(&format!("lb{n}")));
        c
    }

    /// Writes the config of xlb node `n` with `vrrp` as its `[vrrp]`
    /// section; returns its path.
    pub fn write_node_config(
        &self,
        n: usize,
        weights: &[u32],
        vrrp: Vrrp,
    ) -> anyhow::Result<PathBuf> {
        self.node_config(n, weights)
            .vrrp(vrrp)
            .write(&self.dir().join(format!("xlb{n}.toml")))
    }

    /// Starts `xlb run --config CONFIG` on xlb node `n`; its output goes to
    /// `<dir>/xlb<n>-<k>.log` (k counts restarts).
    pub fn start_node(&self, n: usize, xlb_exe: &Path, config: &Path) -> anyhow::Result<Xlb> {
        spawn_node(
            self.dir(),
            self.node(n),
            n,
            xlb_exe,
            config,
            &self.node_socket(n),
        )
    }

    /// The xlb config of this topology: VIPs "web4" and "web6" (port 80,
    /// TCP, DSR) over backends "backend-<i>" with `weights[i-1]`, on the
    /// xlb node's NIC and the topology's control socket.
    pub fn xlb_config(&self, weights: &[u32]) -> XlbConfig {
        let mut c = self.config_for(&self.lb_ifname(), &self.control_socket(), weights);
        c.state_dir = Some(self.state_dir("lb"));
        c
    }

    /// The load-balancer node's config without any VIP: its NIC, control
    /// socket and state directory, for a test to add its own VIPs to.
    pub fn lb_config(&self) -> XlbConfig {
        XlbConfig::new(&self.lb_ifname())
            .control_socket(&self.control_socket())
            .state_dir(&self.state_dir("lb"))
    }

    /// Writes [`Topology::xlb_config`] into the temp dir; returns its path.
    pub fn write_xlb_config(&self, weights: &[u32]) -> anyhow::Result<PathBuf> {
        self.xlb_config(weights).write(&self.config_path())
    }

    fn config_for(&self, ifname: &str, socket: &Path, weights: &[u32]) -> XlbConfig {
        assert_eq!(
            weights.len(),
            self.backend_count(),
            "one weight per backend"
        );
        let vip = |name: &str, addr: IpAddr, backend: &dyn Fn(usize) -> IpAddr| {
            Vip::new(name, addr, VIP_PORT).backends(weights.iter().enumerate().map(|(idx, w)| {
                Backend::new(backend(idx + 1))
                    .name(&format!("backend-{}", idx + 1))
                    .weight(*w)
            }))
        };
        XlbConfig::new(ifname)
            .xdp_mode("auto")
            .control_socket(socket)
            .vip(vip("web4", VIP4.into(), &|i| self.backend_addr4(i).into()))
            .vip(vip("web6", VIP6.into(), &|i| self.backend_addr6(i).into()))
    }

    /// Takes away what makes XDP_TX into the xlb node's veth deliver: the
    /// peer's XDP program and its GRO. Frames xlb sends back out of its
    /// NIC are then dropped by the veth (the first-run trap of a user who
    /// follows the docs on veths).
    pub fn strip_peer_xdp(&mut self) -> anyhow::Result<()> {
        self.peer_xdp.clear();
        ethtool(
            self.switch(),
            &format!("-K {} gro off", self.lb_peer_ifname()),
        )
    }

    /// Counters of the xlb node's NIC.
    pub fn lb_link_stats(&self) -> anyhow::Result<LinkStats> {
        link_stats(self.lb(), &self.lb_ifname())
    }
}
