//! What every topology has: the per-run prefix, its temp dir, and the
//! namespaces of the switch, the xlb node, the client and the backends,
//! with the names and addresses they share. [`super::Topology`] and
//! [`super::NatTopology`] both dereference to [`Hosts`].

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use anyhow::ensure;

use super::{CLIENT_HOST, MAX_BACKENDS, VIP4, VIP6, Xlb, addr4, addr6, pick_prefix, spawn_xlb};
use crate::netns::{self, BpfDir, NetNs, TempDir};

#[derive(Debug)]
pub struct Hosts {
    /// Pinned xlb state of every node (`/sys/fs/bpf/xlb-<prefix>`):
    /// dropped first, so no data plane outlives its topology.
    pins: BpfDir,
    prefix: String,
    // Dropped in this order: the ends (backends, client, xlb node) before
    // the switch that holds their peers, the temp dir last.
    backends: Vec<NetNs>,
    client: NetNs,
    lb: NetNs,
    switch: NetNs,
    dir: TempDir,
}

impl Hosts {
    /// Picks a free prefix and creates the namespaces `<p>sw`, `<p>lb`,
    /// `<p>c` and `<p>b1`..`<p>b<backends>` (1..=20 backends). On error,
    /// whatever was created is removed.
    pub(super) fn create(backends: usize) -> anyhow::Result<Hosts> {
        ensure!(netns::is_root(), "building a network topology needs root");
        ensure!(
            (1..=MAX_BACKENDS).contains(&backends),
            "backends must be in 1..={MAX_BACKENDS}, got {backends}"
        );
        let (prefix, dir) = pick_prefix()?;
        let pins = BpfDir::create(&format!("xlb-{prefix}"))?;
        let p = prefix.as_str();
        // Created in this order; on error, locals drop in reverse.
        let switch = NetNs::create(&format!("{p}sw"))?;
        let lb = NetNs::create(&format!("{p}lb"))?;
        let client = NetNs::create(&format!("{p}c"))?;
        let mut backend_ns = Vec::with_capacity(backends);
        for i in 1..=backends {
            backend_ns.push(NetNs::create(&format!("{p}b{i}"))?);
        }
        Ok(Hosts {
            pins,
            prefix,
            backends: backend_ns,
            client,
            lb,
            switch,
            dir,
        })
    }

    /// Every namespace.
    pub(super) fn all_ns(&self) -> impl Iterator<Item = &NetNs> {
        [&self.switch, &self.lb, &self.client]
            .into_iter()
            .chain(self.backends.iter())
    }

    pub(super) fn backends(&self) -> &[NetNs] {
        &self.backends
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
    /// The xlb node's namespace.
    pub fn lb(&self) -> &NetNs {
        &self.lb
    }
    /// The switch namespace (holds the bridges and the bridge-side veths).
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
    /// The xlb node's (client-side) NIC, inside [`Hosts::lb`]; the config's
    /// `interface`.
    pub fn lb_ifname(&self) -> String {
        format!("{}lb", self.prefix)
    }
    /// The bridge-side peer of [`Hosts::lb_ifname`], inside
    /// [`Hosts::switch`].
    pub fn lb_peer_ifname(&self) -> String {
        format!("{}plb", self.prefix)
    }
    /// The client's NIC.
    pub fn client_ifname(&self) -> String {
        format!("{}c", self.prefix)
    }
    /// Backend `i`'s NIC.
    pub fn backend_ifname(&self, i: usize) -> String {
        format!("{}b{i}", self.prefix)
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
    /// The state_dir of xlb node `node` ("lb", "lb2", ...), under the
    /// topology's bpffs directory.
    pub fn state_dir(&self, node: &str) -> PathBuf {
        self.pins.path().join(node)
    }
    /// Where the topology's xlb config is written (`<dir>/xlb.toml`).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("xlb.toml")
    }
    /// The xlb control socket the topologies' configs name.
    pub fn control_socket(&self) -> PathBuf {
        self.dir.path().join("xlb.sock")
    }

    /// Starts `xlb run --config CONFIG` inside the xlb namespace; its stderr
    /// (and stdout) go to `<dir>/xlb.log`.
    pub fn start_xlb(&self, xlb_exe: &Path, config: &Path) -> anyhow::Result<Xlb> {
        self.start_xlb_with(xlb_exe, config, &[])
    }

    /// [`Hosts::start_xlb`] with more arguments for `xlb run`.
    pub fn start_xlb_with(
        &self,
        xlb_exe: &Path,
        config: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Xlb> {
        spawn_xlb(
            &self.lb,
            "xlb",
            xlb_exe,
            config,
            extra,
            &self.control_socket(),
            self.dir().join("xlb.log"),
        )
    }
}
