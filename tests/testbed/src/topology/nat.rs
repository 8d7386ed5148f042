//! The NAT topologies: the backends sit on their own subnet, route their
//! replies through the xlb node, and nginx listens on [`BACKEND_PORT`], so
//! the VIP's port 80 is translated.
//!
//! Two-armed (the xlb node routes between two segments):
//!
//! ```text
//!   client ns ─ <p>c ── <p>pc ─┤ bridge <p>brc
//!   xlb ns ──── <p>lb ─ <p>plb ┘               198.18.0.0/24, fd00:18::/64
//!          └─── <p>ls ─ <p>pls ┐
//!   backend i ─ <p>bi ─ <p>pbi ┤ bridge <p>brs 198.18.1.0/24, fd00:19::/64
//! ```
//!
//! One-armed (one segment, two subnets; the xlb NIC holds an address in
//! each, so a backend's reply to the client, being off-subnet, goes to xlb,
//! which translates it and sends it back out of the same NIC):
//!
//! ```text
//!   client ns ─ <p>c ── <p>pc ─┐
//!   xlb ns ──── <p>lb ─ <p>plb ┤ bridge <p>br
//!   backend i ─ <p>bi ─ <p>pbi ┘
//! ```
//!
//! VRRP pair (two-armed, [`NatTopology::vrrp_pair`]): a second xlb node
//! `<p>lb2` with NICs `<p>lb2` (client segment, .0.3 / fd00:18::3) and
//! `<p>ls2` (server segment, .1.3 / fd00:19::3); the first node's server
//! side is then .1.2 / fd00:19::2, and the backends' gateway .1.1 /
//! fd00:19::1 is held by the VRRP master (`server_addresses`), as are
//! the VIPs: no node has them on its NIC before VRRP assigns them.
//!
//! Addresses: client .0.2 / fd00:18::2; xlb client side .0.1 / fd00:18::1
//! plus the VIPs .0.100 / fd00:18::100 (so it answers ARP/ND for them);
//! xlb server side .1.1 / fd00:19::1; backend i .1.(10+i) / fd00:19::(10+i),
//! default routes via the xlb node's server-side address. The one-armed
//! client's default route is the xlb node (.0.1 / fd00:18::1); the
//! two-armed client has no route off its segment at all. The bridges live
//! in the switch namespace `<p>sw`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, ensure};

use crate::config::{Backend, Vip, XlbConfig};

use super::{
    CLIENT_HOST, CLIENT_NET, Hosts, LB_HOST, LinkStats, SERVER_NET, VIP_PORT, VIP4, VIP6, Xlb,
    add_veth, attach_xdp_pass, backend_host, ethtool, http_get, ip, link_stats, net_addr4,
    net_addr6, nginx, spawn_node,
};
use crate::netns::{ManagedChild, NetNs};

/// The port nginx listens on in the NAT topologies (the VIP's port is
/// [`VIP_PORT`]).
pub const BACKEND_PORT: u16 = 8080;

/// Where the backends are, relative to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatLayout {
    /// Client and backends on separate segments, one xlb NIC on each.
    TwoArmed,
    /// Everything on one segment; one xlb NIC.
    OneArmed,
}

impl NatLayout {
    pub fn as_str(self) -> &'static str {
        match self {
            NatLayout::TwoArmed => "two-armed",
            NatLayout::OneArmed => "one-armed",
        }
    }
}

/// One veth to wire: (namespace, inner name, peer name, bridge, addresses
/// of the inner end).
type VethEnd<'a> = (
    &'a NetNs,
    String,
    String,
    &'a str,
    Vec<(Ipv4Addr, Ipv6Addr)>,
);

/// A NAT topology; see the module docs. The namespaces, names and
/// addresses it shares with the DSR topology come from [`Hosts`], which it
/// dereferences to.
#[derive(Debug)]
pub struct NatTopology {
    layout: NatLayout,
    // Drop order as in the DSR topology: nginx (in `Drop::drop`), the peers'
    // XDP programs, the namespaces, the temp dir.
    nginx: Vec<ManagedChild>,
    /// XDP_PASS on the bridge-side peer of every xlb NIC: frames that xlb
    /// sends with XDP_TX or XDP_REDIRECT into a veth are delivered promptly
    /// only if that veth's peer runs XDP (see the DSR topology).
    peer_xdp: Vec<aya::Ebpf>,
    /// The second xlb node ([`NatTopology::vrrp_pair`] only).
    lb2: Option<NetNs>,
    hosts: Hosts,
}

/// The second node of [`NatTopology::vrrp_pair`], and the first node's
/// server-side host number there (the gateway, host 1, floats).
const LB2_HOST: u8 = 3;
const LB1_SERVER_HOST: u8 = 2;

impl Deref for NatTopology {
    type Target = Hosts;
    fn deref(&self) -> &Hosts {
        &self.hosts
    }
}

impl Drop for NatTopology {
    fn drop(&mut self) {
        for child in self.nginx.drain(..) {
            child.stop(Duration::from_secs(2));
        }
    }
}

impl NatTopology {
    /// Builds the topology with `backends` nginx backends (1..=20) and
    /// checks that the xlb node reaches every backend on port
    /// [`BACKEND_PORT`].
    pub fn build(layout: NatLayout, backends: usize) -> anyhow::Result<NatTopology> {
        Self::create(layout, backends, false)
    }

    /// The two-armed topology with a second xlb node and the VIPs and the
    /// backends' gateway left to VRRP (see the module docs).
    pub fn vrrp_pair(backends: usize) -> anyhow::Result<NatTopology> {
        Self::create(NatLayout::TwoArmed, backends, true)
    }

    fn create(layout: NatLayout, backends: usize, pair: bool) -> anyhow::Result<NatTopology> {
        let hosts = Hosts::create(backends)?;
        let prefix = hosts.prefix().to_owned();
        let lb2 = if pair {
            Some(NetNs::create(&format!("{prefix}lb2"))?)
        } else {
            None
        };
        let mut topo = NatTopology {
            layout,
            nginx: Vec::new(),
            peer_xdp: Vec::new(),
            lb2,
            hosts,
        };
        let what = || format!("{} NAT topology {prefix}", layout.as_str());
        topo.wire()
            .with_context(|| format!("building {}", what()))?;
        let mut peers = vec![topo.lb_peer_ifname()];
        peers.extend(topo.lb_server_peer_ifname());
        if topo.lb2.is_some() {
            peers.extend([format!("{prefix}plb2"), format!("{prefix}pls2")]);
        }
        for peer in peers {
            let prog = topo
                .switch()
                .in_ns(|| attach_xdp_pass(&peer))
                .with_context(|| format!("attaching xdp_pass to {peer}"))?;
            topo.peer_xdp.push(prog);
        }
        let (b4, b6) = (|i| topo.backend_addr4(i), |i| topo.backend_addr6(i));
        topo.nginx = nginx::start_all(topo.dir(), topo.backends(), BACKEND_PORT, |i| {
            [b4(i).into(), b6(i).into()]
        })
        .with_context(|| format!("starting nginx in {}", what()))?;
        topo.verify()
            .with_context(|| format!("checking {}", what()))?;
        Ok(topo)
    }

    fn all_ns(&self) -> impl Iterator<Item = &NetNs> {
        self.hosts.all_ns().chain(self.lb2.iter())
    }

    fn wire(&self) -> anyhow::Result<()> {
        let p = self.prefix();
        for ns in self.all_ns() {
            ip(ns, "link set lo up")?;
            ns.sysctl(&[
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ])?;
        }
        // xlb refuses NAT VIPs without forwarding: packets whose next hop is
        // not resolved yet are handed to the kernel to forward.
        for lb in std::iter::once(self.lb()).chain(self.lb2.iter()) {
            lb.sysctl(&["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])?;
        }
        if self.layout == NatLayout::OneArmed {
            // What the kernel forwards goes out of the NIC it came in on;
            // a router on a shared segment would tell the sender to go
            // direct, which is not what a one-armed balancer wants.
            self.lb().sysctl(&[
                "net.ipv4.conf.all.send_redirects=0",
                "net.ipv4.conf.default.send_redirects=0",
            ])?;
        }

        let (client_br, server_br) = match self.layout {
            NatLayout::TwoArmed => (format!("{p}brc"), format!("{p}brs")),
            NatLayout::OneArmed => (format!("{p}br"), format!("{p}br")),
        };
        let mut bridges = vec![&client_br];
        if server_br != client_br {
            bridges.push(&server_br);
        }
        for br in bridges {
            ip(
                self.switch(),
                &format!("link add {br} type bridge mcast_snooping 0 stp_state 0"),
            )?;
            ip(self.switch(), &format!("link set {br} up"))?;
        }

        let client_side = |host| (net_addr4(CLIENT_NET, host), net_addr6(CLIENT_NET, host));
        let server_side = |host| (net_addr4(SERVER_NET, host), net_addr6(SERVER_NET, host));
        let mut ends: Vec<VethEnd> = vec![
            (
                self.client(),
                self.client_ifname(),
                format!("{p}pc"),
                &client_br,
                vec![client_side(CLIENT_HOST)],
            ),
            (
                self.lb(),
                self.lb_ifname(),
                self.lb_peer_ifname(),
                &client_br,
                match self.layout {
                    NatLayout::TwoArmed => vec![client_side(LB_HOST)],
                    NatLayout::OneArmed => vec![client_side(LB_HOST), server_side(LB_HOST)],
                },
            ),
        ];
        let lb1_server = if self.lb2.is_some() {
            LB1_SERVER_HOST
        } else {
            LB_HOST
        };
        if let (Some(inner), Some(peer)) = (self.lb_server_ifname(), self.lb_server_peer_ifname()) {
            ends.push((
                self.lb(),
                inner,
                peer,
                &server_br,
                vec![server_side(lb1_server)],
            ));
        }
        if let Some(lb2) = &self.lb2 {
            ends.push((
                lb2,
                format!("{p}lb2"),
                format!("{p}plb2"),
                &client_br,
                vec![client_side(LB2_HOST)],
            ));
            ends.push((
                lb2,
                format!("{p}ls2"),
                format!("{p}pls2"),
                &server_br,
                vec![server_side(LB2_HOST)],
            ));
        }
        for (idx, b) in self.backends().iter().enumerate() {
            let i = idx + 1;
            ends.push((
                b,
                self.backend_ifname(i),
                format!("{p}pb{i}"),
                &server_br,
                vec![server_side(backend_host(i))],
            ));
        }
        for (ns, inner, peer, br, addrs) in &ends {
            add_veth(self.switch(), br, ns, inner, peer)?;
            for (a4, a6) in addrs {
                ip(ns, &format!("addr add {a4}/24 dev {inner}"))?;
                ip(ns, &format!("addr add {a6}/64 dev {inner} nodad"))?;
            }
            ip(ns, &format!("link set {inner} up"))?;
        }
        // XDP_TX/XDP_REDIRECT into a veth needs a NAPI ring on its peer
        // (GRO or an XDP program; `build` attaches xdp_pass as well).
        let mut peers: Vec<String> = std::iter::once(self.lb_peer_ifname())
            .chain(self.lb_server_peer_ifname())
            .collect();
        if self.lb2.is_some() {
            peers.extend([format!("{p}plb2"), format!("{p}pls2")]);
        }
        for peer in peers {
            ethtool(self.switch(), &format!("-K {peer} gro on"))?;
        }

        // With two nodes, VRRP assigns the VIPs (and the gateway) to the
        // master.
        if self.lb2.is_none() {
            let lb_if = self.lb_ifname();
            ip(self.lb(), &format!("addr add {VIP4}/32 dev {lb_if}"))?;
            ip(self.lb(), &format!("addr add {VIP6}/128 dev {lb_if} nodad"))?;
        }

        let (gw4, gw6) = server_side(LB_HOST);
        for (idx, b) in self.backends().iter().enumerate() {
            let nic = self.backend_ifname(idx + 1);
            ip(b, &format!("route add default via {gw4} dev {nic}"))?;
            ip(b, &format!("-6 route add default via {gw6} dev {nic}"))?;
        }
        if self.layout == NatLayout::OneArmed {
            let (gw4, gw6) = client_side(LB_HOST);
            let nic = self.client_ifname();
            ip(
                self.client(),
                &format!("route add default via {gw4} dev {nic}"),
            )?;
            ip(
                self.client(),
                &format!("-6 route add default via {gw6} dev {nic}"),
            )?;
        }
        Ok(())
    }

    /// The xlb node reaches every backend's nginx on its own addresses and
    /// gets that backend's identity back: proves the segments, the
    /// backends' addresses and routes back to xlb, and nginx.
    fn verify(&self) -> anyhow::Result<()> {
        for ns in std::iter::once(self.lb()).chain(self.lb2.iter()) {
            self.verify_from(ns)?;
        }
        Ok(())
    }

    fn verify_from(&self, ns: &NetNs) -> anyhow::Result<()> {
        for i in 1..=self.backend_count() {
            for ip in [
                IpAddr::from(self.backend_addr4(i)),
                self.backend_addr6(i).into(),
            ] {
                let addr = SocketAddr::new(ip, BACKEND_PORT);
                let (status, body) = http_get(ns, addr, "/", Duration::from_secs(3))
                    .with_context(|| format!("xlb node -> backend-{i} at {addr}"))?;
                ensure!(
                    status == 200 && body == format!("backend-{i}\n"),
                    "xlb node -> {addr}: got {status} {body:?}, want 200 \"backend-{i}\\n\""
                );
            }
        }
        Ok(())
    }

    pub fn layout(&self) -> NatLayout {
        self.layout
    }
    /// The xlb node's server-side NIC when two-armed; the config's
    /// `server_interface`.
    pub fn lb_server_ifname(&self) -> Option<String> {
        (self.layout == NatLayout::TwoArmed).then(|| format!("{}ls", self.prefix()))
    }
    /// The bridge-side peer of [`NatTopology::lb_server_ifname`].
    pub fn lb_server_peer_ifname(&self) -> Option<String> {
        (self.layout == NatLayout::TwoArmed).then(|| format!("{}pls", self.prefix()))
    }
    pub fn backend_addr4(&self, i: usize) -> Ipv4Addr {
        net_addr4(SERVER_NET, backend_host(i))
    }
    pub fn backend_addr6(&self, i: usize) -> Ipv6Addr {
        net_addr6(SERVER_NET, backend_host(i))
    }
    /// Whether `ip` lies in the backends' subnet (198.18.1.0/24 or
    /// fd00:19::/64).
    pub fn is_backend_subnet(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => a.octets()[..3] == net_addr4(SERVER_NET, 0).octets()[..3],
            IpAddr::V6(a) => a.segments()[..4] == net_addr6(SERVER_NET, 0).segments()[..4],
        }
    }
    /// The xlb config: NAT VIPs "web4" and "web6" on port 80/tcp, each with
    /// the backends `(i, weight)` listed (name "backend-<i>", port
    /// [`BACKEND_PORT`]); backends not listed are not in the config.
    pub fn xlb_config(&self, backends: &[(usize, u32)]) -> XlbConfig {
        for &(i, _) in backends {
            assert!(
                (1..=self.backend_count()).contains(&i),
                "no backend {i} in a topology of {}",
                self.backend_count()
            );
        }
        let vip = |name: &str, addr: IpAddr, v6: bool| {
            Vip::new(name, addr, VIP_PORT)
                .nat()
                .backends(backends.iter().map(|&(i, w)| {
                    let addr: IpAddr = if v6 {
                        self.backend_addr6(i).into()
                    } else {
                        self.backend_addr4(i).into()
                    };
                    Backend::new(addr)
                        .name(&format!("backend-{i}"))
                        .port(BACKEND_PORT)
                        .weight(w)
                }))
        };
        let mut cfg = XlbConfig::new(&self.lb_ifname())
            .xdp_mode("auto")
            .control_socket(&self.control_socket())
            .state_dir(&self.state_dir("lb"))
            .vip(vip("web4", VIP4.into(), false))
            .vip(vip("web6", VIP6.into(), true));
        if let Some(server) = self.lb_server_ifname() {
            cfg = cfg.server_interface(&server);
        }
        cfg
    }

    /// Writes (or rewrites) [`NatTopology::xlb_config`]; returns its path.
    pub fn write_xlb_config(&self, backends: &[(usize, u32)]) -> anyhow::Result<PathBuf> {
        self.xlb_config(backends).write(&self.config_path())
    }

    /// xlb node `n` (1 or 2) of a [`NatTopology::vrrp_pair`].
    pub fn node(&self, n: usize) -> &NetNs {
        match n {
            1 => self.lb(),
            2 => self.lb2.as_ref().expect("a VRRP pair"),
            _ => panic!("no xlb node {n}"),
        }
    }

    /// Node `n`'s client-side and server-side NICs.
    pub fn node_ifnames(&self, n: usize) -> (String, String) {
        let p = self.prefix();
        match n {
            1 => (self.lb_ifname(), format!("{p}ls")),
            2 => (format!("{p}lb2"), format!("{p}ls2")),
            _ => panic!("no xlb node {n}"),
        }
    }

    /// The bridge-side peers of node `n`'s NICs (set them down to cut the
    /// node off both segments).
    pub fn node_peer_ifnames(&self, n: usize) -> (String, String) {
        let p = self.prefix();
        match n {
            1 => (format!("{p}plb"), format!("{p}pls")),
            2 => (format!("{p}plb2"), format!("{p}pls2")),
            _ => panic!("no xlb node {n}"),
        }
    }

    /// Node `n`'s own server-side IPv4 address (what the sync peers use).
    pub fn node_server_addr4(&self, n: usize) -> Ipv4Addr {
        match n {
            1 => net_addr4(SERVER_NET, LB1_SERVER_HOST),
            2 => net_addr4(SERVER_NET, LB2_HOST),
            _ => panic!("no xlb node {n}"),
        }
    }

    /// The backends' gateway, which the VRRP master holds (198.18.1.1,
    /// fd00:19::1).
    pub fn gateway(&self) -> (Ipv4Addr, Ipv6Addr) {
        (
            net_addr4(SERVER_NET, LB_HOST),
            net_addr6(SERVER_NET, LB_HOST),
        )
    }

    /// Control socket of node `n`.
    pub fn node_socket(&self, n: usize) -> PathBuf {
        self.dir().join(format!("xlb{n}.sock"))
    }

    /// The config of node `n` of the pair: [`NatTopology::xlb_config`] on
    /// that node's NICs, socket and state dir.
    pub fn node_config(&self, n: usize, backends: &[(usize, u32)]) -> XlbConfig {
        let (client_if, server_if) = self.node_ifnames(n);
        let mut c = self.xlb_config(backends);
        c.interface = client_if;
        c.server_interface = Some(server_if);
        c.control_socket = Some(self.node_socket(n));
        c.state_dir = Some(self.state_dir(&format!("lb{n}")));
        c
    }

    /// Starts `xlb run --config CONFIG` on node `n`; its output goes to
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

    /// Counters of the client's NIC.
    pub fn client_link_stats(&self) -> anyhow::Result<LinkStats> {
        link_stats(self.client(), &self.client_ifname())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_sit_on_the_server_subnets() {
        assert_eq!(
            net_addr4(SERVER_NET, backend_host(2)),
            Ipv4Addr::new(198, 18, 1, 12)
        );
        assert_eq!(
            net_addr6(SERVER_NET, backend_host(2)),
            "fd00:19::12".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            net_addr6(SERVER_NET, LB_HOST),
            "fd00:19::1".parse::<Ipv6Addr>().unwrap()
        );
    }
}
