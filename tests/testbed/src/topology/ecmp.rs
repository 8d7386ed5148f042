//! The ECMP topology: several active xlb nodes behind a router that
//! spreads VIP traffic over them by BGP multipath.
//!
//! ```text
//!   client ns ─ <p>c ─── <p>rc ─ router ns ─ <p>r ─ <p>pr ──┐
//!   xlb node n ─ <p>lb<n> ─ <p>plb<n> ───────────────────────┤ bridge <p>br
//!   backend i ─ <p>b<i> ─ <p>pb<i> ──────────────────────────┘ (switch ns <p>sw)
//! ```
//!
//! The client segment is 198.18.1.0/24 + fd00:19::/64 (client .2 / ::2,
//! router .1 / ::1); the server segment 198.18.0.0/24 + fd00:18::/64
//! (router .254 / ::254, xlb node n .(4+n) / ::(4+n), backend i .(10+i) /
//! ::(10+i)). The router forwards, hashes multipath routes on the 5-tuple
//! and learns the VIPs (.100 / ::100) over eBGP from a routing daemon on
//! every xlb node (BIRD or FRR, with BFD), each of which exports what its
//! xlb announces on `lo`. Backends hold the VIPs on `lo` and answer the
//! client directly through the router (DSR).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

use super::routing::{self, Daemon, NodePeering, RouterPeering, Stack};
use super::{
    Hosts, VIP_PORT, VIP4, VIP6, Xlb, add_veth, attach_xdp_pass, backend_host, ethtool, http_get,
    ip, net_addr4, net_addr6, nginx, spawn_node,
};
use crate::config::{Announce, Backend, Vip, XlbConfig};
use crate::netns::{ManagedChild, NetNs};

/// Most xlb nodes.
pub const MAX_NODES: usize = 4;
const NODE_HOST_BASE: u8 = 4;
const ROUTER_HOST: u8 = 254;
/// The client segment: 198.18.1.0/24.
const EDGE_NET: u8 = 1;
const SERVER_NET: u8 = 0;
const ROUTER_ASN: u32 = 65000;
const NODE_ASN: u32 = 65001;
/// The table of the router's pinned paths (see [`EcmpTopology::pin_path`]).
const PIN_TABLE: u32 = 100;

/// See the module docs.
#[derive(Debug)]
pub struct EcmpTopology {
    // Dropped in this order: the routing daemons, nginx, the peers' XDP
    // programs, the extra namespaces, then the hosts (and the temp dir).
    daemons: Vec<Option<Daemon>>,
    nginx: Vec<ManagedChild>,
    peer_xdp: Vec<aya::Ebpf>,
    /// Nodes 2..: node 1 is the hosts' `lb`.
    extra_nodes: Vec<NetNs>,
    router: NetNs,
    stack: Stack,
    nodes: usize,
    hosts: Hosts,
}

impl Drop for EcmpTopology {
    fn drop(&mut self) {
        self.daemons.clear();
        for child in self.nginx.drain(..) {
            child.stop(Duration::from_secs(2));
        }
    }
}

impl EcmpTopology {
    /// Builds the topology with `nodes` xlb nodes (2..=4) and `backends`
    /// nginx backends, starts the routing daemons and checks the client
    /// reaches every backend through the router. No xlb runs yet.
    pub fn build(backends: usize, nodes: usize, stack: Stack) -> anyhow::Result<EcmpTopology> {
        ensure!(
            (2..=MAX_NODES).contains(&nodes),
            "nodes must be in 2..={MAX_NODES}"
        );
        let hosts = Hosts::create(backends)?;
        let p = hosts.prefix().to_owned();
        let router = NetNs::create(&format!("{p}r"))?;
        let mut extra_nodes = Vec::new();
        for n in 2..=nodes {
            extra_nodes.push(NetNs::create(&format!("{p}lb{n}"))?);
        }
        let mut topo = EcmpTopology {
            daemons: Vec::new(),
            nginx: Vec::new(),
            peer_xdp: Vec::new(),
            extra_nodes,
            router,
            stack,
            nodes,
            hosts,
        };
        topo.wire()
            .with_context(|| format!("building ECMP topology {p}"))?;
        for n in 1..=nodes {
            let peer = topo.node_peer_ifname(n);
            let prog = topo
                .hosts
                .switch()
                .in_ns(|| attach_xdp_pass(&peer))
                .with_context(|| format!("attaching xdp_pass to {peer}"))?;
            topo.peer_xdp.push(prog);
        }
        let (b4, b6) = (|i| topo.backend_addr4(i), |i| topo.backend_addr6(i));
        topo.nginx = nginx::start_all(topo.hosts.dir(), topo.hosts.backends(), VIP_PORT, |i| {
            [b4(i).into(), b6(i).into()]
        })
        .with_context(|| format!("starting nginx in {p}"))?;
        topo.start_router_daemon()?;
        for n in 1..=nodes {
            topo.start_routing(n)?;
        }
        topo.verify()
            .with_context(|| format!("checking ECMP topology {p}"))?;
        Ok(topo)
    }

    fn wire(&self) -> anyhow::Result<()> {
        let p = self.hosts.prefix();
        let all = [self.hosts.switch(), self.hosts.client(), &self.router]
            .into_iter()
            .chain(self.hosts.backends())
            .chain((1..=self.nodes).map(|n| self.node(n)));
        for ns in all {
            ip(ns, "link set lo up")?;
            ns.sysctl(&[
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ])?;
        }
        // Backends and nodes hold the VIPs on lo and never claim them on
        // the wire.
        let quiet = [
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.all.arp_announce=2",
            "net.ipv4.conf.default.arp_ignore=1",
            "net.ipv4.conf.default.arp_announce=2",
        ];
        for ns in self
            .hosts
            .backends()
            .iter()
            .chain((1..=self.nodes).map(|n| self.node(n)))
        {
            ns.sysctl(&quiet)?;
        }
        self.router.sysctl(&[
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            // Multipath routes hash on the 5-tuple, so one client's
            // connections spread over the nodes.
            "net.ipv4.fib_multipath_hash_policy=1",
            "net.ipv6.fib_multipath_hash_policy=1",
        ])?;

        let sw = self.hosts.switch();
        let br = format!("{p}br");
        ip(
            sw,
            &format!("link add {br} type bridge mcast_snooping 0 stp_state 0"),
        )?;
        ip(sw, &format!("link set {br} up"))?;

        let mut ends: Vec<(&NetNs, String, String, u8)> = vec![(
            &self.router,
            self.router_ifname(),
            format!("{p}pr"),
            ROUTER_HOST,
        )];
        for n in 1..=self.nodes {
            ends.push((
                self.node(n),
                self.node_ifname(n),
                self.node_peer_ifname(n),
                NODE_HOST_BASE + n as u8,
            ));
        }
        for (idx, b) in self.hosts.backends().iter().enumerate() {
            let i = idx + 1;
            ends.push((b, format!("{p}b{i}"), format!("{p}pb{i}"), backend_host(i)));
        }
        for (ns, inner, peer, host) in &ends {
            add_veth(sw, &br, ns, inner, peer)?;
            let (a4, a6) = (net_addr4(SERVER_NET, *host), net_addr6(SERVER_NET, *host));
            ip(ns, &format!("addr add {a4}/24 dev {inner}"))?;
            ip(ns, &format!("addr add {a6}/64 dev {inner} nodad"))?;
            ip(ns, &format!("link set {inner} up"))?;
        }
        for n in 1..=self.nodes {
            ethtool(sw, &format!("-K {} gro on", self.node_peer_ifname(n)))?;
        }

        // The client's own link to the router.
        let (c, rc) = (self.client_ifname(), format!("{p}rc"));
        ip(
            &self.router,
            &format!(
                "link add {rc} type veth peer name {c} netns {}",
                self.hosts.client().name()
            ),
        )?;
        ethtool(&self.router, &format!("-K {rc} tx off"))?;
        ethtool(self.hosts.client(), &format!("-K {c} tx off"))?;
        for (ns, dev, host) in [(&self.router, &rc, 1), (self.hosts.client(), &c, 2)] {
            let (a4, a6) = (net_addr4(EDGE_NET, host), net_addr6(EDGE_NET, host));
            ip(ns, &format!("addr add {a4}/24 dev {dev}"))?;
            ip(ns, &format!("addr add {a6}/64 dev {dev} nodad"))?;
            ip(ns, &format!("link set {dev} up"))?;
        }
        let (r4, r6) = (net_addr4(EDGE_NET, 1), net_addr6(EDGE_NET, 1));
        ip(self.hosts.client(), &format!("route add default via {r4}"))?;
        ip(
            self.hosts.client(),
            &format!("-6 route add default via {r6}"),
        )?;

        // Backends: the VIPs on lo, replies to the client through the router.
        let (g4, g6) = (self.router_addr4(), self.router_addr6());
        for b in self.hosts.backends() {
            ip(b, &format!("addr add {VIP4}/32 dev lo"))?;
            ip(b, &format!("addr add {VIP6}/128 dev lo nodad"))?;
            ip(b, &format!("route add default via {g4}"))?;
            ip(b, &format!("-6 route add default via {g6}"))?;
        }
        Ok(())
    }

    fn start_router_daemon(&mut self) -> anyhow::Result<()> {
        let r = RouterPeering {
            nic: self.router_ifname(),
            asn: ROUTER_ASN,
            addr4: self.router_addr4(),
            addr6: self.router_addr6(),
            node_asn: NODE_ASN,
            nodes: (1..=self.nodes)
                .map(|n| (self.node_addr4(n), self.node_addr6(n)))
                .collect(),
        };
        let dir = self.routing_dir("router");
        let d = match self.stack {
            Stack::Bird => {
                Daemon::bird(&self.router, "router bird", &dir, &routing::bird_router(&r))?
            }
            Stack::Frr => Daemon::frr(&self.router, "router frr", &dir, &routing::frr_router(&r))?,
        };
        self.daemons.insert(0, Some(d));
        Ok(())
    }

    /// The routing side of node `n`: what its daemon's config is made of.
    pub fn node_peering(&self, n: usize) -> NodePeering {
        NodePeering {
            nic: self.node_ifname(n),
            announce_interface: "lo".into(),
            asn: NODE_ASN,
            addr4: self.node_addr4(n),
            addr6: self.node_addr6(n),
            router_asn: ROUTER_ASN,
            router4: self.router_addr4(),
            router6: self.router_addr6(),
            vips4: "198.18.0.0/24",
            vips6: "fd00:18::/64",
        }
    }

    /// Starts node `n`'s routing daemon (again, after [`Self::stop_routing`]).
    pub fn start_routing(&mut self, n: usize) -> anyhow::Result<()> {
        let peering = self.node_peering(n);
        let dir = self.routing_dir(&format!("lb{n}"));
        let what = format!("node {n} routing");
        let d = match self.stack {
            Stack::Bird => Daemon::bird(self.node(n), &what, &dir, &routing::bird_node(&peering))?,
            Stack::Frr => Daemon::frr(self.node(n), &what, &dir, &routing::frr_node(&peering))?,
        };
        while self.daemons.len() <= n {
            self.daemons.push(None);
        }
        self.daemons[n] = Some(d);
        Ok(())
    }

    /// SIGTERM to node `n`'s routing daemon: it closes its sessions.
    pub fn stop_routing(&mut self, n: usize) {
        if let Some(d) = self.daemons.get_mut(n).and_then(Option::take) {
            d.stop();
        }
    }

    /// The router's and every node's daemon logs.
    pub fn routing_logs(&self) -> String {
        self.daemons.iter().flatten().map(Daemon::logs).collect()
    }

    fn routing_dir(&self, who: &str) -> PathBuf {
        self.hosts.dir().join("routing").join(who)
    }

    /// The client proves it reaches every backend's own address through
    /// the router, and the router learns nothing yet (no xlb runs).
    fn verify(&self) -> anyhow::Result<()> {
        for i in 1..=self.hosts.backend_count() {
            for addr in [
                IpAddr::from(self.backend_addr4(i)),
                IpAddr::from(self.backend_addr6(i)),
            ] {
                let to = SocketAddr::new(addr, VIP_PORT);
                let (status, body) = http_get(self.hosts.client(), to, "/", Duration::from_secs(3))
                    .with_context(|| format!("client -> backend-{i} at {to}"))?;
                ensure!(
                    status == 200 && body == format!("backend-{i}\n"),
                    "client -> {to}: {status} {body:?}"
                );
            }
        }
        Ok(())
    }

    pub fn prefix(&self) -> &str {
        self.hosts.prefix()
    }
    pub fn dir(&self) -> &Path {
        self.hosts.dir()
    }
    pub fn stack(&self) -> Stack {
        self.stack
    }
    pub fn nodes(&self) -> usize {
        self.nodes
    }
    pub fn client(&self) -> &NetNs {
        self.hosts.client()
    }
    pub fn router(&self) -> &NetNs {
        &self.router
    }
    pub fn backend(&self, i: usize) -> &NetNs {
        self.hosts.backend(i)
    }
    pub fn backend_count(&self) -> usize {
        self.hosts.backend_count()
    }
    pub fn vip4(&self) -> Ipv4Addr {
        VIP4
    }
    pub fn vip6(&self) -> Ipv6Addr {
        VIP6
    }
    pub fn client_ifname(&self) -> String {
        format!("{}c", self.prefix())
    }
    pub fn client_addr4(&self) -> Ipv4Addr {
        net_addr4(EDGE_NET, 2)
    }
    pub fn router_ifname(&self) -> String {
        format!("{}r", self.prefix())
    }
    pub fn router_addr4(&self) -> Ipv4Addr {
        net_addr4(SERVER_NET, ROUTER_HOST)
    }
    pub fn router_addr6(&self) -> Ipv6Addr {
        net_addr6(SERVER_NET, ROUTER_HOST)
    }
    pub fn backend_addr4(&self, i: usize) -> Ipv4Addr {
        net_addr4(SERVER_NET, backend_host(i))
    }
    pub fn backend_addr6(&self, i: usize) -> Ipv6Addr {
        net_addr6(SERVER_NET, backend_host(i))
    }

    /// xlb node `n` (1-based).
    pub fn node(&self, n: usize) -> &NetNs {
        assert!((1..=self.nodes).contains(&n), "no node {n}");
        if n == 1 {
            self.hosts.lb()
        } else {
            &self.extra_nodes[n - 2]
        }
    }
    pub fn node_ifname(&self, n: usize) -> String {
        if n == 1 {
            self.hosts.lb_ifname()
        } else {
            format!("{}lb{n}", self.prefix())
        }
    }
    fn node_peer_ifname(&self, n: usize) -> String {
        if n == 1 {
            self.hosts.lb_peer_ifname()
        } else {
            format!("{}plb{n}", self.prefix())
        }
    }
    pub fn node_addr4(&self, n: usize) -> Ipv4Addr {
        net_addr4(SERVER_NET, NODE_HOST_BASE + n as u8)
    }
    pub fn node_addr6(&self, n: usize) -> Ipv6Addr {
        net_addr6(SERVER_NET, NODE_HOST_BASE + n as u8)
    }
    pub fn node_socket(&self, n: usize) -> PathBuf {
        self.dir().join(format!("xlb{n}.sock"))
    }
    pub fn node_state_dir(&self, n: usize) -> PathBuf {
        self.hosts.state_dir(&format!("lb{n}"))
    }

    /// Node `n`'s xlb config: VIPs "web4" and "web6" (TCP port 80, DSR)
    /// over every backend with `weights`, announced on `lo`.
    pub fn node_config(&self, n: usize, weights: &[u32]) -> XlbConfig {
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
        XlbConfig::new(&self.node_ifname(n))
            .xdp_mode("auto")
            .control_socket(&self.node_socket(n))
            .state_dir(&self.node_state_dir(n))
            .vip(vip("web4", VIP4.into(), &|i| self.backend_addr4(i).into()))
            .vip(vip("web6", VIP6.into(), &|i| self.backend_addr6(i).into()))
            .announce(Announce::default())
    }

    /// Writes `config` as node `n`'s file; returns its path.
    pub fn write_node_config(&self, n: usize, config: &XlbConfig) -> anyhow::Result<PathBuf> {
        config.write(&self.dir().join(format!("xlb{n}.toml")))
    }

    /// Starts `xlb run --config CONFIG` on node `n`; its output goes to
    /// `<dir>/xlb<n>-<k>.log` (k counts starts).
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

    /// The next hops of the router's route to `vip` (empty: no route).
    pub fn nexthops(&self, vip: IpAddr) -> anyhow::Result<Vec<IpAddr>> {
        let family = if vip.is_ipv4() { "-4" } else { "-6" };
        let out = self
            .router
            .ip([family, "-j", "route", "show", &vip.to_string()])?;
        let routes: Value =
            serde_json::from_str(&out).with_context(|| format!("`ip -j route`: {out}"))?;
        let mut hops = Vec::new();
        for r in routes.as_array().into_iter().flatten() {
            if r["dst"].as_str() != Some(&vip.to_string()) {
                continue;
            }
            let gateways: Vec<&Value> = match r["nexthops"].as_array() {
                Some(list) => list.iter().map(|h| &h["gateway"]).collect(),
                None => vec![&r["gateway"]],
            };
            for g in gateways {
                if let Some(a) = g.as_str().and_then(|s| s.parse().ok()) {
                    hops.push(a);
                }
            }
        }
        hops.sort();
        Ok(hops)
    }

    /// Waits until the router's route to `vip` has `count` next hops;
    /// returns how long that took.
    pub fn wait_nexthops(
        &self,
        vip: IpAddr,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let hops = self.nexthops(vip)?;
            if hops.len() == count {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "the router's route to {vip} has next hops {hops:?} after {timeout:?}, \
                     want {count}\n{}",
                    self.routing_logs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Takes node `n`'s link down (or up): the node is cut off without a
    /// word to its peers.
    pub fn set_node_link(&self, n: usize, up: bool) -> anyhow::Result<()> {
        let state = if up { "up" } else { "down" };
        ip(
            self.node(n),
            &format!("link set {} {state}", self.node_ifname(n)),
        )
    }

    /// Sends the client's TCP connections from source port `sport` to the
    /// IPv4 VIP through node `n` only, whatever ECMP would pick: a policy
    /// rule and a table of the router's own.
    pub fn pin_path(&self, sport: u16, n: usize) -> anyhow::Result<()> {
        let rule = format!(
            "rule add iif {}rc ipproto tcp sport {sport} lookup {PIN_TABLE}",
            self.prefix()
        );
        let have = self.router.ip(["rule", "show"])?;
        if !have.contains(&format!("sport {sport} lookup {PIN_TABLE}")) {
            ip(&self.router, &rule)?;
        }
        ip(
            &self.router,
            &format!(
                "route replace {VIP4}/32 via {} dev {} table {PIN_TABLE}",
                self.node_addr4(n),
                self.router_ifname()
            ),
        )
    }
}
