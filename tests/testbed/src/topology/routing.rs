//! Real routing daemons in namespaces: BIRD 2 and FRR (zebra, bfdd,
//! bgpd), with the configurations `docs/scale-out.md` shows. The texts are
//! made here, from the addresses of a topology; a unit test renders them
//! with the documentation's addresses and compares them with the
//! documentation's blocks, so the docs say exactly what the tests run.
//!
//! Each xlb node runs a daemon of its own, peering over eBGP (with BFD)
//! with the router, and exports the VIP addresses xlb puts on the announce
//! interface; the router runs a daemon that installs the routes it learns
//! as one ECMP route per VIP.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::netns::{ManagedChild, NetNs};

pub const BIRD: &str = "/usr/sbin/bird";
pub const FRR_DIR: &str = "/usr/lib/frr";

/// Which daemon a topology runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    Bird,
    Frr,
}

/// The BGP side of one xlb node.
#[derive(Debug, Clone)]
pub struct NodePeering {
    pub nic: String,
    /// Where xlb puts the VIP addresses (`[announce] interface`).
    pub announce_interface: String,
    pub asn: u32,
    pub addr4: Ipv4Addr,
    pub addr6: Ipv6Addr,
    pub router_asn: u32,
    pub router4: Ipv4Addr,
    pub router6: Ipv6Addr,
    /// The prefixes the VIPs are taken from: only host routes inside them
    /// are exported.
    pub vips4: &'static str,
    pub vips6: &'static str,
}

/// The BGP side of the router in front of the nodes.
#[derive(Debug, Clone)]
pub struct RouterPeering {
    pub nic: String,
    pub asn: u32,
    pub addr4: Ipv4Addr,
    pub addr6: Ipv6Addr,
    pub node_asn: u32,
    pub nodes: Vec<(Ipv4Addr, Ipv6Addr)>,
}

/// BFD: 100 ms intervals, 3 missed packets, on both sides.
const BFD_INTERVAL_MS: u32 = 100;
const BFD_MULTIPLIER: u32 = 3;

/// How long a node's loss takes to be seen when its link breaks: BFD's
/// detection time.
pub fn bfd_detection() -> Duration {
    Duration::from_millis(u64::from(BFD_INTERVAL_MS * BFD_MULTIPLIER))
}

/// `bird.conf` of an xlb node.
pub fn bird_node(p: &NodePeering) -> String {
    let NodePeering {
        nic,
        announce_interface,
        asn,
        addr4,
        addr6,
        router_asn,
        router4,
        router6,
        vips4,
        vips6,
    } = p;
    format!(
        r#"router id {addr4};

protocol device {{
    scan time 10;
}}

# The VIP addresses xlb holds on {announce_interface} while it can serve them.
protocol direct xlb_vips {{
    ipv4;
    ipv6;
    interface "{announce_interface}";
}}

protocol bfd {{
    interface "{nic}" {{
        min rx interval {BFD_INTERVAL_MS} ms;
        min tx interval {BFD_INTERVAL_MS} ms;
        multiplier {BFD_MULTIPLIER};
    }};
}}

protocol bgp uplink4 {{
    local {addr4} as {asn};
    neighbor {router4} as {router_asn};
    hold time 3;
    keepalive time 1;
    connect retry time 1;
    error wait time 1, 10;
    graceful restart off;
    bfd on;
    ipv4 {{
        import none;
        export where proto = "xlb_vips" && net ~ [ {vips4}{{32,32}} ];
    }};
}}

protocol bgp uplink6 {{
    local {addr6} as {asn};
    neighbor {router6} as {router_asn};
    hold time 3;
    keepalive time 1;
    connect retry time 1;
    error wait time 1, 10;
    graceful restart off;
    bfd on;
    ipv6 {{
        import none;
        export where proto = "xlb_vips" && net ~ [ {vips6}{{128,128}} ];
    }};
}}
"#
    )
}

/// `bird.conf` of the router: every node a peer, the learned routes
/// merged into one multipath route per VIP in the kernel.
pub fn bird_router(r: &RouterPeering) -> String {
    let RouterPeering {
        nic,
        asn,
        addr4,
        addr6,
        node_asn,
        nodes,
    } = r;
    let mut peers = String::new();
    for (i, (a4, a6)) in nodes.iter().enumerate() {
        let n = i + 1;
        let _ = writeln!(
            peers,
            "protocol bgp node{n}_4 from xlb4 {{ neighbor {a4} as {node_asn}; }}"
        );
        let _ = writeln!(
            peers,
            "protocol bgp node{n}_6 from xlb6 {{ neighbor {a6} as {node_asn}; }}"
        );
    }
    format!(
        r#"router id {addr4};

protocol device {{
    scan time 10;
}}

# One route per VIP with a next hop per node that announces it.
protocol kernel {{
    ipv4 {{ import none; export all; }};
    merge paths on;
}}
protocol kernel {{
    ipv6 {{ import none; export all; }};
    merge paths on;
}}

protocol bfd {{
    interface "{nic}" {{
        min rx interval {BFD_INTERVAL_MS} ms;
        min tx interval {BFD_INTERVAL_MS} ms;
        multiplier {BFD_MULTIPLIER};
    }};
}}

template bgp xlb4 {{
    local {addr4} as {asn};
    hold time 3;
    keepalive time 1;
    connect retry time 1;
    error wait time 1, 10;
    graceful restart off;
    bfd on;
    ipv4 {{ import all; export none; }};
}}
template bgp xlb6 {{
    local {addr6} as {asn};
    hold time 3;
    keepalive time 1;
    connect retry time 1;
    error wait time 1, 10;
    graceful restart off;
    bfd on;
    ipv6 {{ import all; export none; }};
}}

{peers}"#
    )
}

/// FRR's `bfdd.conf` (both sides): the timers of the `xlb` profile.
pub fn frr_bfdd() -> String {
    format!(
        "bfd\n profile xlb\n  receive-interval {BFD_INTERVAL_MS}\n  \
         transmit-interval {BFD_INTERVAL_MS}\n  detect-multiplier {BFD_MULTIPLIER}\n \
         exit\n!\nexit\n"
    )
}

/// FRR's `bgpd.conf` of an xlb node.
pub fn frr_node(p: &NodePeering) -> String {
    let NodePeering {
        announce_interface,
        asn,
        addr4,
        router_asn,
        router4,
        router6,
        vips4,
        vips6,
        ..
    } = p;
    format!(
        r#"! The VIP addresses xlb holds on {announce_interface} while it can serve them.
ip prefix-list XLB-VIPS4 seq 5 permit {vips4} ge 32
ipv6 prefix-list XLB-VIPS6 seq 5 permit {vips6} ge 128
route-map XLB-VIPS4 permit 10
 match interface {announce_interface}
 match ip address prefix-list XLB-VIPS4
exit
route-map XLB-VIPS6 permit 10
 match interface {announce_interface}
 match ipv6 address prefix-list XLB-VIPS6
exit
!
router bgp {asn}
 bgp router-id {addr4}
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 bgp graceful-restart-disable
 neighbor {router4} remote-as {router_asn}
 neighbor {router4} timers 1 3
 neighbor {router4} timers connect 1
 neighbor {router4} bfd profile xlb
 neighbor {router6} remote-as {router_asn}
 neighbor {router6} timers 1 3
 neighbor {router6} timers connect 1
 neighbor {router6} bfd profile xlb
 address-family ipv4 unicast
  redistribute connected route-map XLB-VIPS4
  neighbor {router4} activate
 exit-address-family
 address-family ipv6 unicast
  redistribute connected route-map XLB-VIPS6
  neighbor {router6} activate
 exit-address-family
exit
"#
    )
}

/// FRR's `bgpd.conf` of the router.
pub fn frr_router(r: &RouterPeering) -> String {
    let RouterPeering {
        asn,
        addr4,
        node_asn,
        nodes,
        ..
    } = r;
    let mut members = String::new();
    for (a4, a6) in nodes {
        let _ = writeln!(members, " neighbor {a4} peer-group XLB4");
        let _ = writeln!(members, " neighbor {a6} peer-group XLB6");
    }
    format!(
        r#"router bgp {asn}
 bgp router-id {addr4}
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 bgp graceful-restart-disable
 neighbor XLB4 peer-group
 neighbor XLB4 remote-as {node_asn}
 neighbor XLB4 timers 1 3
 neighbor XLB4 timers connect 1
 neighbor XLB4 bfd profile xlb
 neighbor XLB6 peer-group
 neighbor XLB6 remote-as {node_asn}
 neighbor XLB6 timers 1 3
 neighbor XLB6 timers connect 1
 neighbor XLB6 bfd profile xlb
{members} address-family ipv4 unicast
  neighbor XLB4 activate
  maximum-paths 16
 exit-address-family
 address-family ipv6 unicast
  neighbor XLB6 activate
  maximum-paths 16
 exit-address-family
exit
"#
    )
}

/// A routing daemon (BIRD) or daemon set (FRR) running in a namespace;
/// stopped on drop.
#[derive(Debug)]
pub struct Daemon {
    what: String,
    dir: PathBuf,
    /// Started first, stopped last (FRR: zebra, bfdd, bgpd).
    children: Vec<ManagedChild>,
}

impl Daemon {
    /// Starts BIRD in `ns` with `conf`; its files go to `dir`.
    pub fn bird(ns: &NetNs, what: &str, dir: &Path, conf: &str) -> anyhow::Result<Daemon> {
        std::fs::create_dir_all(dir)?;
        let conf_path = dir.join("bird.conf");
        let log = dir.join("bird.log");
        // The log line is the test's own: the documented config has none.
        std::fs::write(
            &conf_path,
            format!("log \"{}\" all;\n{conf}", log.display()),
        )?;
        let out = std::fs::File::create(dir.join("bird.out"))?;
        let mut cmd = ns.exec([BIRD]);
        cmd.arg("-f")
            .arg("-c")
            .arg(&conf_path)
            .arg("-s")
            .arg(dir.join("bird.ctl"))
            .arg("-P")
            .arg(dir.join("bird.pid"))
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = ManagedChild::spawn(what, &mut cmd)?;
        Ok(Daemon {
            what: what.to_owned(),
            dir: dir.to_owned(),
            children: vec![child],
        })
    }

    /// Starts FRR's zebra, bfdd and bgpd in `ns`, in the foreground, as
    /// user `frr` (its daemons refuse root without the `frrvty` group);
    /// their sockets, pid files and logs go to `dir`.
    pub fn frr(ns: &NetNs, what: &str, dir: &Path, bgpd: &str) -> anyhow::Result<Daemon> {
        std::fs::create_dir_all(dir)?;
        let chown = |p: &Path| {
            nix::unistd::chown(
                p,
                nix::unistd::User::from_name("frr")?.map(|u| u.uid),
                nix::unistd::Group::from_name("frr")?.map(|g| g.gid),
            )
        };
        chown(dir).with_context(|| format!("chown frr {}", dir.display()))?;
        let files = [
            ("zebra", format!("hostname {what}\n")),
            ("bfdd", frr_bfdd()),
            ("bgpd", bgpd.to_owned()),
        ];
        let mut children = Vec::new();
        for (daemon, conf) in files {
            let conf_path = dir.join(format!("{daemon}.conf"));
            std::fs::write(&conf_path, conf)?;
            chown(&conf_path)?;
            let out = std::fs::File::create(dir.join(format!("{daemon}.out")))?;
            let mut cmd = ns.exec([format!("{FRR_DIR}/{daemon}")]);
            cmd.arg("-f")
                .arg(&conf_path)
                .arg("-i")
                .arg(dir.join(format!("{daemon}.pid")))
                .arg("-z")
                .arg(dir.join("zserv.api"))
                .arg("--vty_socket")
                .arg(dir)
                .args(["-u", "frr", "-g", "frr", "-P", "0"])
                .arg("--log")
                .arg(format!(
                    "file:{}",
                    dir.join(format!("{daemon}.log")).display()
                ))
                .stdout(out.try_clone()?)
                .stderr(out);
            children.push(ManagedChild::spawn(&format!("{what} {daemon}"), &mut cmd)?);
            if daemon == "zebra" {
                // The others connect to zebra's socket at start.
                let sock = dir.join("zserv.api");
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while !sock.exists() {
                    anyhow::ensure!(
                        std::time::Instant::now() < deadline,
                        "{what}: zebra did not open {}",
                        sock.display()
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        Ok(Daemon {
            what: what.to_owned(),
            dir: dir.to_owned(),
            children,
        })
    }

    /// Whether every process still runs.
    pub fn is_running(&self) -> bool {
        self.children
            .iter()
            .all(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The daemon's log files, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "log" || e == "out") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                let _ = writeln!(out, "--- {} ---", p.display());
                for l in tail.into_iter().rev() {
                    let _ = writeln!(out, "{l}");
                }
            }
        }
        out
    }

    /// SIGTERM to every process (BIRD and bgpd close their sessions with a
    /// Cease notification), last started first.
    pub fn stop(mut self) {
        while let Some(c) = self.children.pop() {
            c.stop(Duration::from_secs(3));
        }
    }

    /// SIGKILL: the daemon crashes, its sessions are not closed.
    pub fn kill(&self) -> anyhow::Result<()> {
        for c in self.children.iter().rev() {
            c.kill_now()
                .with_context(|| format!("killing {}", self.what))?;
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        while let Some(c) = self.children.pop() {
            c.stop(Duration::from_secs(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peerings `docs/scale-out.md` shows: node 1 of three, and the
    /// router, on `eth0`, with the test topology's addresses.
    pub(super) fn doc_node() -> NodePeering {
        NodePeering {
            nic: "eth0".into(),
            announce_interface: "lo".into(),
            asn: 65001,
            addr4: "198.18.0.5".parse().unwrap(),
            addr6: "fd00:18::5".parse().unwrap(),
            router_asn: 65000,
            router4: "198.18.0.254".parse().unwrap(),
            router6: "fd00:18::254".parse().unwrap(),
            vips4: "198.18.0.0/24",
            vips6: "fd00:18::/64",
        }
    }

    pub(super) fn doc_router() -> RouterPeering {
        RouterPeering {
            nic: "eth0".into(),
            asn: 65000,
            addr4: "198.18.0.254".parse().unwrap(),
            addr6: "fd00:18::254".parse().unwrap(),
            node_asn: 65001,
            nodes: (5..=7)
                .map(|h| {
                    (
                        format!("198.18.0.{h}").parse().unwrap(),
                        format!("fd00:18::{h}").parse().unwrap(),
                    )
                })
                .collect(),
        }
    }

    /// The blocks of `docs/scale-out.md` marked `<!-- rendered: NAME -->`.
    fn doc_blocks() -> std::collections::BTreeMap<String, String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/scale-out.md");
        let text = std::fs::read_to_string(path).expect("docs/scale-out.md");
        let mut out = std::collections::BTreeMap::new();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let Some(name) = line
                .strip_prefix("<!-- rendered: ")
                .and_then(|l| l.strip_suffix(" -->"))
            else {
                continue;
            };
            let fence = lines.next().expect("a fenced block after the marker");
            assert!(fence.starts_with("```"), "{name}: {fence}");
            let mut block = String::new();
            for l in lines.by_ref() {
                if l == "```" {
                    break;
                }
                block.push_str(l);
                block.push('\n');
            }
            out.insert(name.to_owned(), block);
        }
        out
    }

    #[test]
    fn the_docs_show_exactly_the_configs_the_tests_run() {
        let blocks = doc_blocks();
        let want = [
            ("bird_node", bird_node(&doc_node())),
            ("bird_router", bird_router(&doc_router())),
            ("frr_node", frr_node(&doc_node())),
            ("frr_router", frr_router(&doc_router())),
            ("frr_bfdd", frr_bfdd()),
        ];
        for (name, text) in want {
            if std::env::var_os("XLB_PRINT_DOC_CONFIGS").is_some() {
                println!("<!-- rendered: {name} -->\n```\n{text}```\n");
                continue;
            }
            assert_eq!(
                blocks.get(name).map(String::as_str),
                Some(text.as_str()),
                "docs/scale-out.md block {name}"
            );
        }
    }
}
