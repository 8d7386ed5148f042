//! The short helpers end-to-end tests start from: the `xlb` binary under
//! test, a topology with a ready xlb, and counters out of its status.

use std::path::PathBuf;
use std::time::Duration;

use lb_user::api::Status;

pub use crate::netns::require_root;
use crate::topology::{NatLayout, NatTopology, Topology, Xlb};

/// Weights used by the balancing tests.
pub const WEIGHTS: [u32; 3] = [1, 1, 2];

/// The `xlb` binary under test: `$XLB_EXE` if set (`cargo xtask test` and
/// `cargo xtask bench` set it to the binary they have just built), else
/// `xlb` in the cargo profile directory this test binary runs from
/// (`target/debug/deps/<test>` → `target/debug/xlb`). Panics, saying how to
/// build it, if there is none: an end-to-end test must not run against
/// nothing.
pub fn xlb_exe() -> PathBuf {
    if let Some(exe) = std::env::var_os("XLB_EXE") {
        return PathBuf::from(exe);
    }
    let me = std::env::current_exe().expect("the test binary's own path");
    let profile_dir = me
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .expect("the test binary lives in a cargo target directory");
    let exe = profile_dir.join("xlb");
    assert!(
        exe.is_file(),
        "no xlb binary at {}: run the tests with `cargo xtask test` (which builds it), \
         or `cargo build --bin xlb` first, or set XLB_EXE",
        exe.display()
    );
    exe
}

/// `xlb <args> --socket SOCK`: the CLI against a running daemon's control
/// socket; what it exited with and printed.
pub fn xlb_cli(socket: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(xlb_exe())
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .expect("run xlb")
}

/// A user the tests run the CLI as: numeric ids only, so that nothing is
/// added to /etc/passwd or /etc/group (the kernel checks numbers; names
/// are only for people).
#[derive(Debug, Clone)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl User {
    /// `xlb <args> --socket SOCK` as this user: `setpriv` sets the ids in
    /// the child before it execs `xlb`.
    pub fn xlb(&self, socket: &std::path::Path, args: &[&str]) -> std::process::Output {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid));
        if self.groups.is_empty() {
            cmd.arg("--clear-groups");
        } else {
            let list: Vec<String> = self.groups.iter().map(u32::to_string).collect();
            cmd.arg(format!("--groups={}", list.join(",")));
        }
        cmd.arg(xlb_exe())
            .args(args)
            .arg("--socket")
            .arg(socket)
            .output()
            .expect("run setpriv")
    }
}

/// A topology with xlb running in its lb namespace. Field order is drop
/// order: xlb is SIGTERMed before the namespaces go away.
pub struct Running {
    pub xlb: Xlb,
    pub topo: Topology,
}

/// Starts `xlb run` inside the lb namespace of `topo` with `weights`; the
/// returned guard SIGTERMs it on drop.
pub fn start_xlb(topo: &Topology, weights: &[u32]) -> Xlb {
    let config = topo.write_xlb_config(weights).expect("write xlb config");
    topo.start_xlb(&xlb_exe(), &config).expect("start xlb")
}

/// Waits (bounded) until every backend is "active"; panics naming the last
/// status seen and xlb's log tail.
pub fn wait_ready(xlb: &Xlb) -> Status {
    xlb.wait_ready(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("xlb never became ready: {e:#}"))
}

/// `xlb status --json`, parsed.
pub fn status(xlb: &Xlb) -> Status {
    xlb.status().unwrap_or_else(|e| {
        panic!(
            "xlb status failed: {e:#}\n--- xlb log ---\n{}",
            xlb.log_tail(30)
        )
    })
}

/// Builds a DSR topology with `weights.len()` backends and a ready xlb.
pub fn start(weights: &[u32]) -> Running {
    let topo = Topology::dsr(weights.len()).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let xlb = start_xlb(&topo, weights);
    wait_ready(&xlb);
    Running { xlb, topo }
}

/// A NAT topology with xlb running in its lb namespace (drop order: xlb
/// first).
pub struct RunningNat {
    pub xlb: Xlb,
    pub topo: NatTopology,
}

/// Builds a NAT topology with `backends` nginx backends and starts a ready
/// xlb whose config holds the `(backend, weight)` pairs of `config`.
pub fn start_nat(layout: NatLayout, backends: usize, config: &[(usize, u32)]) -> RunningNat {
    let topo = NatTopology::build(layout, backends).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let path = topo.write_xlb_config(config).expect("write xlb config");
    let xlb = topo.start_xlb(&xlb_exe(), &path).expect("start xlb");
    wait_ready(&xlb);
    RunningNat { xlb, topo }
}

/// A connection-table counter from the status (`hit`, `nat_reply`, ...).
pub fn conntrack_counter(status: &Status, name: &str) -> u64 {
    *status
        .conntrack
        .get(name)
        .unwrap_or_else(|| panic!("no conntrack counter {name:?} in status {status:?}"))
}

/// A VIP's `packets` counter.
pub fn vip_packets(status: &Status, vip: &str) -> u64 {
    crate::topology::status_vip(status, vip)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .packets
}

/// Per-backend packet counter of a VIP, by backend name.
pub fn backend_packets(status: &Status, vip: &str, backend: &str) -> u64 {
    crate::topology::status_vip(status, vip)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .backend(backend)
        .unwrap_or_else(|| panic!("no backend {backend} in VIP {vip}: {status:?}"))
        .packets
}
