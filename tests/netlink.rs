//! Root tests of `lb_user::netlink` against the real kernel.
//!
//! Every test builds its own topology in fresh anonymous network namespaces,
//! each owned by a dedicated thread that called `unshare(CLONE_NEWNET)`: the
//! namespace disappears with its thread, so nothing needs cleaning up and the
//! host's links, addresses and neighbours are never touched. `ip` runs as a
//! child of such a thread and inherits its namespace.
//!
//!   lb namespace                          peer namespace
//!   xlb0 02:00:00:00:00:01  <--veth-->    xlb0p 02:00:00:00:00:02
//!        198.18.0.1/24 fd00::1/64              198.18.0.2/24 fd00::2/64
//!   xlb1 (veth, down, peer xlb1p)

use std::collections::HashMap;
use std::fs;
use std::net::IpAddr;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use lb_user::netlink::{self, NetlinkError};
use nix::sched::{CloneFlags, unshare};

const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const DOWN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];

/// Whether the test may run; panics in CI, where it must.
fn require_root(test: &str) -> bool {
    xlb_testbed::netns::require_root(test)
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread living in its own anonymous network namespace, running closures
/// sent to it.
struct Netns {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    tid: i32,
}

impl Netns {
    fn new() -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, started) = mpsc::channel();
        let thread = thread::spawn(move || {
            let before = own_netns();
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            assert_ne!(
                own_netns(),
                before,
                "unshare left the thread in its namespace"
            );
            ready.send(nix::unistd::gettid().as_raw()).unwrap();
            for job in queue {
                job();
            }
        });
        let tid = started
            .recv()
            .expect("the namespace thread died before entering its namespace");
        Self {
            jobs: Some(jobs),
            thread: Some(thread),
            tid,
        }
    }

    /// Runs `f` inside the namespace; a panic in `f` resurfaces here.
    fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (reply, result) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(panic::catch_unwind(AssertUnwindSafe(f)));
        });
        self.jobs.as_ref().unwrap().send(job).unwrap();
        match result.recv().expect("namespace thread is gone") {
            Ok(value) => value,
            Err(payload) => panic::resume_unwind(payload),
        }
    }

    /// A path to the namespace that other processes (like `ip`) can open.
    fn path(&self) -> String {
        format!("/proc/{}/task/{}/ns/net", std::process::id(), self.tid)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn own_netns() -> PathBuf {
    fs::read_link("/proc/thread-self/ns/net").expect("readlink /proc/thread-self/ns/net")
}

/// Runs `ip ARGS` in the calling thread's namespace, which must not be the
/// process's original one.
fn ip(args: &str) -> String {
    let original = fs::read_link("/proc/self/ns/net").expect("readlink /proc/self/ns/net");
    assert_ne!(
        own_netns(),
        original,
        "refusing to run `ip {args}` outside a test namespace"
    );
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip {args}`: {e}"));
    assert!(
        out.status.success(),
        "`ip {args}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The state column of `ip neigh show ADDR dev DEV nud all`, or `None` if
/// the kernel has no entry.
fn neigh_state(addr: &str, dev: &str) -> Option<String> {
    let out = ip(&format!("neigh show {addr} dev {dev} nud all"));
    out.lines()
        .find(|line| line.split_whitespace().next() == Some(addr))
        .and_then(|line| line.split_whitespace().last().map(str::to_owned))
}

/// The two namespaces of the diagram at the top of this file.
struct Topology {
    lb: Netns,
    _peer: Netns,
    ifindex: u32,
}

fn topology() -> Topology {
    let lb = Netns::new();
    let peer = Netns::new();
    let peer_path = peer.path();
    let ifindex = lb.run(move || {
        ip(&format!(
            "link add xlb0 address 02:00:00:00:00:01 type veth \
             peer name xlb0p address 02:00:00:00:00:02 netns {peer_path}"
        ));
        ip("link add xlb1 address 02:00:00:00:01:01 type veth peer name xlb1p");
        ip("addr add 198.18.0.1/24 dev xlb0");
        ip("addr add fd00::1/64 dev xlb0 nodad");
        ip("link set xlb0 up");
        nix::net::if_::if_nametoindex("xlb0").expect("if_nametoindex(xlb0)")
    });
    peer.run(|| {
        ip("addr add 198.18.0.2/24 dev xlb0p");
        ip("addr add fd00::2/64 dev xlb0p nodad");
        ip("link set xlb0p up");
    });
    Topology {
        lb,
        _peer: peer,
        ifindex,
    }
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Polls `neighbours` until `want` are all present with their MACs.
fn wait_for_neighbours(
    ifindex: u32,
    want: &[(IpAddr, [u8; 6])],
    within: Duration,
) -> HashMap<IpAddr, [u8; 6]> {
    let deadline = Instant::now() + within;
    loop {
        let got = netlink::neighbours(ifindex).expect("neighbours");
        if want.iter().all(|(ip, mac)| got.get(ip) == Some(mac)) || Instant::now() > deadline {
            return got;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn interface_by_name_reports_index_mac_and_state() {
    if !require_root("interface_by_name_reports_index_mac_and_state") {
        return;
    }
    let topo = topology();
    let ifindex = topo.ifindex;
    topo.lb.run(move || {
        let up = netlink::interface_by_name("xlb0").expect("xlb0");
        assert_eq!(
            up,
            netlink::Interface {
                name: "xlb0".into(),
                index: ifindex,
                mac: LB_MAC,
                up: true,
            }
        );

        let down = netlink::interface_by_name("xlb1").expect("xlb1");
        assert_eq!(down.name, "xlb1");
        assert_eq!(down.index, nix::net::if_::if_nametoindex("xlb1").unwrap());
        assert_eq!(down.mac, DOWN_MAC);
        assert!(!down.up);
    });
}

#[test]
fn interface_by_name_unknown_is_an_error() {
    if !require_root("interface_by_name_unknown_is_an_error") {
        return;
    }
    let ns = Netns::new();
    ns.run(|| {
        let err = netlink::interface_by_name("nope0").unwrap_err();
        assert!(
            matches!(&err, NetlinkError::InterfaceNotFound(name) if name == "nope0"),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("interface nope0 not found"),
            "{err}"
        );
    });
}

#[test]
fn neighbours_lists_usable_entries_only() {
    if !require_root("neighbours_lists_usable_entries_only") {
        return;
    }
    let topo = topology();
    let ifindex = topo.ifindex;
    topo.lb.run(move || {
        ip("neigh add 198.18.0.10 lladdr 02:00:00:00:00:10 dev xlb0 nud permanent");
        ip("neigh add fd00::10 lladdr 02:00:00:00:00:16 dev xlb0 nud permanent");
        ip("neigh add 198.18.0.11 lladdr 02:00:00:00:00:11 dev xlb0 nud stale");
        ip("neigh add 198.18.0.12 lladdr 02:00:00:00:00:12 dev xlb0 nud noarp");
        ip("neigh add 198.18.0.13 dev xlb0 nud incomplete");
        ip("neigh add 198.18.0.14 dev xlb0 nud failed");
        ip("neigh add fd00::13 dev xlb0 nud incomplete");
        ip("neigh add 198.18.1.10 lladdr 02:00:00:00:01:10 dev xlb1 nud permanent");
        // The unusable entries exist, or excluding them would prove nothing.
        assert_eq!(
            neigh_state("198.18.0.13", "xlb0").as_deref(),
            Some("INCOMPLETE")
        );
        assert_eq!(
            neigh_state("198.18.0.14", "xlb0").as_deref(),
            Some("FAILED")
        );
        assert_eq!(
            neigh_state("fd00::13", "xlb0").as_deref(),
            Some("INCOMPLETE")
        );

        let got = netlink::neighbours(ifindex).expect("neighbours");
        let expected = [
            ("198.18.0.10", [2, 0, 0, 0, 0, 0x10]),
            ("fd00::10", [2, 0, 0, 0, 0, 0x16]),
            ("198.18.0.11", [2, 0, 0, 0, 0, 0x11]),
            ("198.18.0.12", [2, 0, 0, 0, 0, 0x12]),
        ];
        for (ip, mac) in expected {
            assert_eq!(got.get(&addr(ip)), Some(&mac), "{ip} in {got:?}");
        }
        for ip in ["198.18.0.13", "198.18.0.14", "fd00::13", "198.18.1.10"] {
            assert!(
                !got.contains_key(&addr(ip)),
                "{ip} must be left out: {got:?}"
            );
        }
        // The kernel may add NOARP entries for multicast groups on its own.
        for ip in got.keys() {
            let ours = expected.iter().any(|(e, _)| addr(e) == *ip);
            assert!(ours || ip.is_multicast(), "unexpected entry {ip}: {got:?}");
        }
    });
}

#[test]
fn probe_neighbour_resolves_through_the_peer() {
    if !require_root("probe_neighbour_resolves_through_the_peer") {
        return;
    }
    let topo = topology();
    let ifindex = topo.ifindex;
    topo.lb.run(move || {
        let targets = [(addr("198.18.0.2"), PEER_MAC), (addr("fd00::2"), PEER_MAC)];
        let before = netlink::neighbours(ifindex).unwrap();
        for (ip, _) in targets {
            assert!(!before.contains_key(&ip), "{ip} resolved before the probe");
            netlink::probe_neighbour(ifindex, ip).expect("probe");
        }
        let got = wait_for_neighbours(ifindex, &targets, Duration::from_secs(3));
        for (ip, mac) in targets {
            assert_eq!(got.get(&ip), Some(&mac), "{ip} not resolved: {got:?}");
            assert_eq!(
                neigh_state(&ip.to_string(), "xlb0").as_deref(),
                Some("REACHABLE")
            );
            // Probing a resolved entry is harmless.
            netlink::probe_neighbour(ifindex, ip).expect("second probe");
        }
        let again = netlink::neighbours(ifindex).unwrap();
        for (ip, mac) in targets {
            assert_eq!(again.get(&ip), Some(&mac));
        }
    });
}

#[test]
fn probe_neighbour_creates_an_entry_for_an_unknown_address() {
    if !require_root("probe_neighbour_creates_an_entry_for_an_unknown_address") {
        return;
    }
    let topo = topology();
    let ifindex = topo.ifindex;
    topo.lb.run(move || {
        for ip in ["198.18.0.200", "fd00::200"] {
            assert_eq!(neigh_state(ip, "xlb0"), None);
            netlink::probe_neighbour(ifindex, addr(ip)).expect("probe");
            let state = neigh_state(ip, "xlb0");
            assert!(
                matches!(state.as_deref(), Some("INCOMPLETE" | "FAILED")),
                "{ip}: {state:?}"
            );
            // An entry already being resolved is probed again without error.
            netlink::probe_neighbour(ifindex, addr(ip)).expect("second probe");
            let got = netlink::neighbours(ifindex).unwrap();
            assert!(!got.contains_key(&addr(ip)), "{ip} has no MAC: {got:?}");
        }
    });
}

#[test]
fn probe_neighbour_leaves_static_entries_alone() {
    if !require_root("probe_neighbour_leaves_static_entries_alone") {
        return;
    }
    let topo = topology();
    let ifindex = topo.ifindex;
    topo.lb.run(move || {
        // Deliberately not the peer's MAC: were the entries turned into
        // dynamic ones, the peer's answer would replace it.
        ip("neigh add 198.18.0.2 lladdr 02:00:00:00:00:99 dev xlb0 nud permanent");
        ip("neigh add fd00::2 lladdr 02:00:00:00:00:99 dev xlb0 nud permanent");
        ip("neigh add 198.18.0.3 lladdr 02:00:00:00:00:98 dev xlb0 nud noarp");
        for ip in ["198.18.0.2", "fd00::2", "198.18.0.3"] {
            netlink::probe_neighbour(ifindex, addr(ip)).expect("probe");
        }
        thread::sleep(Duration::from_millis(500));
        assert_eq!(
            neigh_state("198.18.0.2", "xlb0").as_deref(),
            Some("PERMANENT")
        );
        assert_eq!(neigh_state("fd00::2", "xlb0").as_deref(), Some("PERMANENT"));
        assert_eq!(neigh_state("198.18.0.3", "xlb0").as_deref(), Some("NOARP"));
        let got = netlink::neighbours(ifindex).unwrap();
        assert_eq!(got.get(&addr("198.18.0.2")), Some(&[2, 0, 0, 0, 0, 0x99]));
        assert_eq!(got.get(&addr("fd00::2")), Some(&[2, 0, 0, 0, 0, 0x99]));
        assert_eq!(got.get(&addr("198.18.0.3")), Some(&[2, 0, 0, 0, 0, 0x98]));
    });
}

#[test]
fn missing_interface_index_is_named_in_errors() {
    if !require_root("missing_interface_index_is_named_in_errors") {
        return;
    }
    let ns = Netns::new();
    ns.run(|| {
        let err = netlink::neighbours(9999).unwrap_err();
        assert!(
            matches!(err, NetlinkError::InterfaceIndexNotFound(9999)),
            "{err:?}"
        );
        assert!(err.to_string().contains("9999"), "{err}");

        let err = netlink::probe_neighbour(9999, addr("198.18.0.2")).unwrap_err();
        assert!(
            matches!(err, NetlinkError::InterfaceIndexNotFound(9999)),
            "{err:?}"
        );
    });
}

#[test]
fn host_addresses_are_added_listed_and_removed_idempotently() {
    if !require_root("host_addresses_are_added_listed_and_removed_idempotently") {
        return;
    }
    let t = topology();
    let ifindex = t.ifindex;
    t.lb.run(move || {
        let vips = [addr("198.18.0.100"), addr("fd00::100")];
        for v in vips {
            netlink::add_host_address(ifindex, v).expect("add");
            // Already there is fine: a master re-entering MASTER re-adds.
            netlink::add_host_address(ifindex, v).expect("add again");
        }
        let listed = netlink::addresses(ifindex).expect("addresses");
        for v in vips {
            let a = listed.iter().find(|a| a.addr == v).expect("VIP listed");
            assert_eq!(a.prefix_len, if v.is_ipv4() { 32 } else { 128 });
        }
        // The NIC's own IPv4 address comes first: VRRP sends from it.
        let first_v4 = listed.iter().find(|a| a.addr.is_ipv4()).unwrap();
        assert_eq!(first_v4.addr, addr("198.18.0.1"));
        // The kernel adds the link-local address asynchronously after the
        // link comes up: wait for it (bounded) rather than race it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while !netlink::addresses(ifindex)
            .expect("addresses")
            .iter()
            .any(|a| a.link_scope && a.addr.is_ipv6())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "no IPv6 link-local address within 3 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // No DAD: the IPv6 VIP is usable at once, not tentative.
        let shown = ip("-6 addr show dev xlb0");
        let line = shown.lines().find(|l| l.contains("fd00::100")).unwrap();
        assert!(!line.contains("tentative"), "{line}");
        // Deprecated: never the source of the node's own traffic (health
        // checks to the backends), still a local address.
        assert!(line.contains("deprecated"), "{line}");
        for v in vips {
            netlink::del_host_address(ifindex, v).expect("del");
            netlink::del_host_address(ifindex, v).expect("del again");
        }
        let listed = netlink::addresses(ifindex).expect("addresses");
        assert!(listed.iter().all(|a| !vips.contains(&a.addr)), "{listed:?}");
    });
}

#[test]
fn carrier_follows_the_link() {
    if !require_root("carrier_follows_the_link") {
        return;
    }
    let t = topology();
    let ifindex = t.ifindex;
    t.lb.run(move || {
        assert!(netlink::carrier(ifindex).expect("carrier"));
        ip("link set xlb0 down");
        assert!(!netlink::carrier(ifindex).expect("carrier"));
        // xlb1 is down and its peer too.
        let down = nix::net::if_::if_nametoindex("xlb1").unwrap();
        assert!(!netlink::carrier(down).expect("carrier"));
    });
}
