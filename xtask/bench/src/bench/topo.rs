//! The end-to-end environment: lb_user's DSR topology (client, xlb node and
//! nginx backends on one bridged L2 segment, all in network namespaces with
//! a per-run prefix, torn down on drop, panic and Ctrl-C), plus what the
//! benchmarks need on top of it.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use lb_user::netlink;
use xlb_testbed::config::{Backend, Vip, XlbConfig};
use xlb_testbed::frames::Mac;
use xlb_testbed::netns::{ManagedChild, NetNs};
use xlb_testbed::topology::{Topology, VIP_PORT, Xlb};

use super::e2e::PpsPath;
use super::nft::{Dnat, Service};
use super::{Options, say};

/// Backends (nginx) behind every setup.
pub const BACKENDS: usize = 3;
/// UDP port of the packets-per-second VIP. Nothing listens there: a sink
/// counts what its NIC received and its stack drops it.
pub const SINK_PORT: u16 = 9;

pub struct Bench {
    pub topo: Topology,
    pub xlb_exe: PathBuf,
    pub lb_mac: Mac,
    pub client_mac: Mac,
    pub client_ifindex: u32,
}

/// (ifindex, MAC) of `ifname` in `ns`.
pub fn link(ns: &NetNs, ifname: &str) -> Result<(u32, Mac)> {
    let nic = ns
        .in_ns(|| netlink::interface_by_name(ifname))
        .with_context(|| format!("{ifname} in {}", ns.name()))?;
    Ok((nic.index, nic.mac))
}

impl Bench {
    pub fn build(opts: &Options) -> Result<Bench> {
        let topo = Topology::dsr(BACKENDS)?;
        // Frames the generator XDP_TXes out of the client's veth are queued
        // to the peer's NAPI ring, which exists only with GRO on (or XDP)
        // there: the same reason the topology does it for the xlb peer.
        let peer = format!("{}pc", topo.prefix());
        topo.switch()
            .run(["ethtool", "-K", &peer, "gro", "on"])
            .with_context(|| format!("enabling GRO on {peer}"))?;
        let (_, lb_mac) = link(topo.lb(), &topo.lb_ifname())?;
        let (client_ifindex, client_mac) = link(topo.client(), &topo.client_ifname())?;
        say(&format!("  topology {} ready", topo.prefix()));
        Ok(Bench {
            topo,
            xlb_exe: opts.xlb_exe.clone(),
            lb_mac,
            client_mac,
            client_ifindex,
        })
    }

    pub fn backends4(&self) -> Vec<Ipv4Addr> {
        (1..=BACKENDS).map(|i| self.topo.backend_addr4(i)).collect()
    }

    /// VIP4:80/tcp (for wrk) and VIP4:9/udp (for the packet generator)
    /// over every backend.
    fn services(&self) -> [Service; 2] {
        let service = |proto, port| Service {
            proto,
            vip: SocketAddr::new(self.topo.vip4().into(), port),
            backends: self
                .backends4()
                .into_iter()
                .map(|b| SocketAddr::new(b.into(), port))
                .collect(),
        };
        [service("tcp", VIP_PORT), service("udp", SINK_PORT)]
    }

    /// Starts `xlb run` (DSR) with VIPs "web4" and "sink4" (see
    /// [`Bench::services`]); returns once all are active.
    pub fn start_xlb(&self) -> Result<Xlb> {
        let t = &self.topo;
        let [web, sink] = self.services();
        let path = xlb_config(
            &t.lb_ifname(),
            None,
            &t.control_socket(),
            &t.state_dir("lb"),
            false,
            &[("web4", web), ("sink4", sink)],
        )
        .write(&t.dir().join("bench-xlb.toml"))?;
        let xlb = t.start_xlb(&self.xlb_exe, &path)?;
        xlb.wait_ready(Duration::from_secs(20))?;
        Ok(xlb)
    }

    /// nftables DNAT of VIP4:80/tcp and VIP4:9/udp over every backend, with
    /// forwarding on and ICMP redirects off (in and out is the same NIC);
    /// masqueraded, so that replies return through the node.
    pub fn dnat(&self) -> Result<Dnat<'_>> {
        let t = &self.topo;
        t.lb().sysctl(&[
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.send_redirects=0",
            &format!("net.ipv4.conf.{}.send_redirects=0", t.lb_ifname()),
        ])?;
        Dnat::apply(t.lb(), t.dir(), "xlb_bench", &self.services(), true)
    }

    /// The generator's path: the client's veth, every backend's NIC as a
    /// sink, the xlb node's NIC.
    pub fn pps_path(&self) -> PpsPath<'_> {
        let t = &self.topo;
        PpsPath {
            client: t.client(),
            client_ifindex: self.client_ifindex,
            sinks: (1..=BACKENDS)
                .map(|i| (t.backend(i), t.backend_ifname(i)))
                .collect(),
            lb: t.lb(),
            lb_ifnames: vec![t.lb_ifname()],
        }
    }
}

/// The `xlb run` config of the end-to-end benchmarks: native XDP on
/// `interface` (and `server_interface`), control socket `socket`, and one
/// VIP per (name, service), DSR or (`nat`) NAT to the backends' ports.
pub fn xlb_config(
    interface: &str,
    server_interface: Option<&str>,
    socket: &Path,
    state_dir: &Path,
    nat: bool,
    vips: &[(&str, Service)],
) -> XlbConfig {
    let mut cfg = XlbConfig::new(interface)
        .xdp_mode("native")
        .control_socket(socket)
        .state_dir(state_dir);
    if let Some(server) = server_interface {
        cfg = cfg.server_interface(server);
    }
    for (name, svc) in vips {
        let mut vip = Vip::new(name, svc.vip.ip(), svc.vip.port());
        vip.protocol = Some(svc.proto.to_owned());
        if nat {
            vip = vip.nat();
        }
        cfg = cfg.vip(vip.backends(svc.backends.iter().enumerate().map(|(i, b)| {
            let backend = Backend::new(b.ip())
                .name(&format!("backend-{}", i + 1))
                .weight(1);
            if nat { backend.port(b.port()) } else { backend }
        })));
    }
    cfg
}

/// Stops `xlb` with `xlb down`, which removes its data plane. SIGTERM
/// would leave the XDP program attached and forwarding with its pinned
/// state (by design: a restart must not drop traffic), and the setups
/// measured after it would still go through xlb.
pub fn stop_xlb(xlb: Xlb) -> Result<()> {
    xlb.down().map(drop).context("stopping xlb with `xlb down`")
}

/// Whether an XDP program is attached to `ifname` in `ns`.
pub fn xdp_attached(ns: &NetNs, ifname: &str) -> Result<bool> {
    let out = ns.ip(["-j", "link", "show", "dev", ifname])?;
    let v: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("bad `ip -j link` output: {out}"))?;
    Ok(v[0].get("xdp").is_some())
}

/// Proof that a setup without xlb runs without it: no XDP program on the
/// node's NICs, where a left-over one would take the VIP's traffic first.
pub fn ensure_no_xdp(ns: &NetNs, ifnames: &[String], setup: &str) -> Result<()> {
    for nic in ifnames {
        if xdp_attached(ns, nic)? {
            bail!(
                "{setup}: an XDP program is still attached to {nic}: {}",
                ns.ip(["link", "show", "dev", nic]).unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Runs `cmd` (a [`ManagedChild`], so Ctrl-C kills it) with stdout and
/// stderr to `log`; SIGTERM/SIGKILL if it outlives `limit`. Returns the
/// output; fails if the command fails or times out.
pub fn run_bounded(what: &str, cmd: &mut Command, limit: Duration, log: &Path) -> Result<String> {
    let file = File::create(log)?;
    cmd.stdout(file.try_clone()?).stderr(file);
    let child = ManagedChild::spawn(what, cmd)?;
    let deadline = Instant::now() + limit;
    let read = || std::fs::read_to_string(log).unwrap_or_default();
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("{what} failed ({status}): {}", read().trim());
            }
            return Ok(read());
        }
        if Instant::now() >= deadline {
            child.stop(Duration::from_secs(1));
            bail!("{what} did not finish within {limit:?}: {}", read().trim());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
