//! The NAT end-to-end environment: lb_user's two-armed NAT topology
//! (client and nginx backends on separate segments, the load-balancer node
//! routing between them; namespaces with a per-run prefix, torn down on
//! drop, panic and Ctrl-C), plus what the NAT benchmarks need on top of it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use xlb_testbed::frames::Mac;
use xlb_testbed::topology::{BACKEND_PORT, NatLayout, NatTopology, VIP_PORT, Xlb};

use super::e2e::PpsPath;
use super::nft::{Dnat, Service};
use super::say;
use super::topo::{BACKENDS, SINK_PORT, link, xlb_config};

pub struct NatBench {
    pub topo: NatTopology,
    xlb_exe: PathBuf,
    pub lb_mac: Mac,
    pub client_mac: Mac,
    client_ifindex: u32,
}

impl NatBench {
    pub fn build(xlb_exe: PathBuf) -> Result<NatBench> {
        let topo = NatTopology::build(NatLayout::TwoArmed, BACKENDS)?;
        // The generator XDP_TXes out of the client's veth: its peer needs a
        // NAPI ring (GRO or XDP), as in the DSR environment.
        let peer = format!("{}pc", topo.prefix());
        topo.switch()
            .run(["ethtool", "-K", &peer, "gro", "on"])
            .with_context(|| format!("enabling GRO on {peer}"))?;
        let (_, lb_mac) = link(topo.lb(), &topo.lb_ifname())?;
        let (client_ifindex, client_mac) = link(topo.client(), &topo.client_ifname())?;
        say(&format!(
            "  topology {} (two-armed NAT) ready",
            topo.prefix()
        ));
        Ok(NatBench {
            topo,
            xlb_exe,
            lb_mac,
            client_mac,
            client_ifindex,
        })
    }

    /// (VIP, backends) of the two services: VIP4:80/tcp to nginx on
    /// [`BACKEND_PORT`] (for wrk), VIP4:9/udp to port 9 (for the packet
    /// generator; nothing listens there).
    fn services(&self) -> [Service; 2] {
        let t = &self.topo;
        let service = |proto, port, backend_port| Service {
            proto,
            vip: SocketAddr::new(t.vip4().into(), port),
            backends: (1..=BACKENDS)
                .map(|i| SocketAddr::new(t.backend_addr4(i).into(), backend_port))
                .collect(),
        };
        [
            service("tcp", VIP_PORT, BACKEND_PORT),
            service("udp", SINK_PORT, SINK_PORT),
        ]
    }

    /// Starts `xlb run` in native XDP mode on both NICs with NAT VIPs
    /// "web4" and "sink4" (see [`NatBench::services`]); returns once all are
    /// active.
    pub fn start_xlb(&self) -> Result<Xlb> {
        let t = &self.topo;
        let [web, sink] = self.services();
        let path = xlb_config(
            &t.lb_ifname(),
            t.lb_server_ifname().as_deref(),
            &t.control_socket(),
            &t.state_dir("lb"),
            true,
            &[("web4", web), ("sink4", sink)],
        )
        .write(&t.dir().join("bench-xlb-nat.toml"))?;
        let xlb = t.start_xlb(&self.xlb_exe, &path)?;
        xlb.wait_ready(Duration::from_secs(20))?;
        Ok(xlb)
    }

    /// nftables DNAT of the same services. No masquerade: the backends
    /// route through the node, and conntrack translates their replies.
    /// (The topology turned forwarding on.)
    pub fn dnat(&self) -> Result<Dnat<'_>> {
        let t = &self.topo;
        Dnat::apply(t.lb(), t.dir(), "xlb_bench_nat", &self.services(), false)
    }

    /// The generator's path: the client's veth, every backend's NIC as a
    /// sink, both of the xlb node's NICs.
    pub fn pps_path(&self) -> PpsPath<'_> {
        let t = &self.topo;
        PpsPath {
            client: t.client(),
            client_ifindex: self.client_ifindex,
            sinks: (1..=BACKENDS)
                .map(|i| (t.backend(i), t.backend_ifname(i)))
                .collect(),
            lb: t.lb(),
            lb_ifnames: std::iter::once(t.lb_ifname())
                .chain(t.lb_server_ifname())
                .collect(),
        }
    }
}
