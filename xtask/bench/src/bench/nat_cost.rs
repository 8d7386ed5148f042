//! NAT cost per packet. Unlike DSR, NAT cannot be measured by repeating one
//! frame inside one BPF_PROG_TEST_RUN call: the kernel does not reset the
//! frame between runs, and after the first rewrite it is addressed to the
//! backend, no longer to the VIP. So every call here carries one packet (a
//! fresh copy of the frame) and the figure is the median of the kernel's
//! time for that one run over [`calls`] calls; the floor is measured the
//! same way, so the ratio compares like with like (the per-call timer
//! overhead is in both).
//!
//! As in the DSR cases, the connection-table counters must show that every
//! call took the path its row names: a hit, a reply rewritten back, or a
//! miss and insert. The miss case flags its backend `reschedule` (as the
//! DSR miss case does), so each call finds the flow's entry stale, asks
//! Maglev and inserts again, without the table filling up. The new-flow
//! budget is off, so no insert is refused.
//!
//! `bpf_fib_lookup` needs routes and neighbours: the program runs on a
//! thread in a private network namespace (gone with the thread) set up as
//! in tests/nat.rs: client-side `c0` 198.18.0.1/24 + fd00:18::1/64,
//! server-side `s0` 198.18.1.1/24 + fd00:19::1/64, static neighbours,
//! forwarding on; the VIPs translate :80 to a backend's :8080 and :53 to
//! :5353, two-armed (XDP_REDIRECT through TX_PORTS).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use lb_common::{BACKEND_F_ACTIVE, BACKEND_F_RESCHEDULE, BackendInfo, addr_bytes, ct};
use lb_user::{
    config::Config,
    control::Neighbours,
    maps::{MapStore, Maps},
    netlink,
};
use xlb_testbed::config::{Backend, Conntrack, Vip, XlbConfig};
use xlb_testbed::frames::{Frame, Mac, REQUEST};
use xlb_testbed::lb::Lb;

use super::median;

const XDP_REDIRECT: u32 = 4;
const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];
const BACKEND_MAC: Mac = [0x02, 0, 0, 0, 0x10, 0x0b];
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 2);
const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x100);
const BACKEND4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
const BACKEND6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x19, 0, 0, 0, 0, 0, 0x11);

/// NAT VIPs web4 (IPv4 TCP) and dns6 (IPv6 UDP), one backend each on the
/// server side; no new-flow budget (every miss call inserts).
fn config() -> Result<Config> {
    XlbConfig::new("c0")
        .server_interface("s0")
        .conntrack(Conntrack {
            new_flows_per_cpu: Some(0),
            ..Conntrack::default()
        })
        .vip(
            Vip::new("web4", VIP4, 80)
                .nat()
                .backend(Backend::new(BACKEND4).port(8080)),
        )
        .vip(
            Vip::new("dns6", VIP6, 53)
                .udp()
                .nat()
                .backend(Backend::new(BACKEND6).port(5353)),
        )
        .parse()
}

/// A case's frame (every call sends a fresh copy of it).
type FrameOf<'a> = &'a dyn Fn() -> Vec<u8>;

pub struct Row {
    pub name: &'static str,
    /// Median of the kernel's time for one run, over the calls.
    pub ns: f64,
    /// `ns` / the floor's, measured the same way.
    pub ratio: f64,
    /// The calls on the row's path (as in `dataplane::calls`).
    pub calls: &'static [&'static str],
}

/// Calls (one packet each) per case.
pub fn calls(quick: bool) -> usize {
    if quick { 100_000 } else { 1_000_000 }
}

/// The connection-table counter that every call of a case must bump.
#[derive(Clone, Copy)]
enum Path {
    /// Miss, then insert (the backend is flagged `reschedule`).
    Miss,
    Hit,
    /// A reply from the backend, rewritten back to the VIP.
    Reply,
}

impl Path {
    /// The calls the program makes on this path, in order (see
    /// `dataplane::calls`). The flow's entry names its backend and so its
    /// VIP (no VIPS lookup); a reply's destination is no VIP's, which
    /// `VIP_FILTER` tells without a lookup.
    fn calls(self) -> &'static [&'static str] {
        const FORWARD: [&str; 2] = ["bpf_fib_lookup", "bpf_redirect_map"];
        match self {
            Path::Miss => &[
                "FLOWS lookup",
                "bpf_ktime_get_coarse_ns",
                "ring size lookup",
                "ring slot lookup",
                "FLOWS update",
                "NAT_REVERSE update",
                FORWARD[0],
                FORWARD[1],
            ],
            // The hit looks its reverse entry up (written again if the
            // LRU evicted it).
            Path::Hit => &[
                "FLOWS lookup",
                "bpf_ktime_get_coarse_ns",
                "NAT_REVERSE lookup",
                FORWARD[0],
                FORWARD[1],
            ],
            Path::Reply => &["NAT_REVERSE lookup", FORWARD[0], FORWARD[1]],
        }
    }
}

/// NAT needs no neighbour table of xlb's own (the FIB resolves next hops).
struct NoNeighbours;

impl Neighbours for NoNeighbours {
    fn lookup(&mut self) -> Result<std::collections::HashMap<std::net::IpAddr, [u8; 6]>> {
        Ok(Default::default())
    }
    fn probe(&mut self, _: std::net::IpAddr) -> Result<()> {
        Ok(())
    }
}

pub fn run(quick: bool) -> Result<Vec<Row>> {
    std::thread::scope(|s| {
        s.spawn(|| in_private_namespace(quick))
            .join()
            .map_err(|_| anyhow!("the NAT benchmark thread panicked"))?
    })
}

fn ip(args: &str) -> Result<()> {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!("ip {args}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn mac(m: Mac) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// Runs on its own thread: the namespace is the thread's alone.
fn in_private_namespace(quick: bool) -> Result<Vec<Row>> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
    for cmd in [
        "link set lo up".to_owned(),
        "link add c0 type veth peer name c0p".to_owned(),
        "link add s0 type veth peer name s0p".to_owned(),
        "link set c0 up".to_owned(),
        "link set c0p up".to_owned(),
        "link set s0 up".to_owned(),
        "link set s0p up".to_owned(),
        "addr add 198.18.0.1/24 dev c0".to_owned(),
        "addr add fd00:18::1/64 dev c0 nodad".to_owned(),
        "addr add 198.18.1.1/24 dev s0".to_owned(),
        "addr add fd00:19::1/64 dev s0 nodad".to_owned(),
        format!(
            "neigh add {CLIENT4} lladdr {} dev c0 nud permanent",
            mac(CLIENT_MAC)
        ),
        format!(
            "neigh add {CLIENT6} lladdr {} dev c0 nud permanent",
            mac(CLIENT_MAC)
        ),
        format!(
            "neigh add {BACKEND4} lladdr {} dev s0 nud permanent",
            mac(BACKEND_MAC)
        ),
        format!(
            "neigh add {BACKEND6} lladdr {} dev s0 nud permanent",
            mac(BACKEND_MAC)
        ),
    ] {
        ip(&cmd)?;
    }
    // /proc/sys/net shows the namespace of the thread that opens it.
    for knob in [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ] {
        std::fs::write(knob, "1").with_context(|| format!("writing {knob}"))?;
    }
    let c0 = netlink::interface_by_name("c0")?;
    let s0 = netlink::interface_by_name("s0")?;

    let mut floor_ebpf =
        aya::Ebpf::load(xlb_testbed::xdp::XDP_FLOOR_OBJECT).context("loading the floor object")?;
    let floor = xlb_testbed::xdp::load_program(&mut floor_ebpf, "xdp_floor")?;

    let mut controller = Lb::load_on("c0", c0.mac);
    controller.maps_mut().add_tx_port(c0.index)?;
    controller.maps_mut().add_tx_port(s0.index)?;
    controller.apply(&config()?, &mut NoNeighbours)?;
    let backend4 = backend_id(controller.maps(), BACKEND4.into())?;

    let n = calls(quick);
    let lb = c0.mac;
    // L4 checksums left 0, as they always were here: the incremental
    // updates cost the same for any value (only an IPv4 UDP 0, which none
    // of these is, would skip its update).
    let in4 = |sport: u16| {
        Frame::new(CLIENT_MAC, lb, CLIENT4, VIP4)
            .no_l4_checksum()
            .tcp(sport, 80, "S", REQUEST)
    };
    let in6 = |sport: u16| {
        Frame::new(CLIENT_MAC, lb, CLIENT6, VIP6)
            .no_l4_checksum()
            .udp(sport, 53, REQUEST)
    };
    let out4 = || {
        Frame::new(BACKEND_MAC, s0.mac, BACKEND4, CLIENT4)
            .no_l4_checksum()
            .tcp(8080, 40_000, "S", REQUEST)
    };
    let out6 = || {
        Frame::new(BACKEND_MAC, s0.mac, BACKEND6, CLIENT6)
            .no_l4_checksum()
            .udp(5353, 40_000, REQUEST)
    };

    let floor_ns = measure(floor, c0.index, n, 3, &|| in4(40_000))?;
    super::say(&format!(
        "  {:<62} {floor_ns:>5.0} ns",
        "floor, one packet per call"
    ));
    let mut rows = vec![Row {
        name: "floor: swap MACs, XDP_TX (one packet per call)",
        ns: floor_ns,
        ratio: 1.0,
        calls: &[],
    }];
    let cases: [(&str, u32, Path, FrameOf); 5] = [
        (
            "NAT in, miss + insert (Maglev, flow and reverse entry), IPv4 TCP",
            c0.index,
            Path::Miss,
            &|| in4(40_001),
        ),
        (
            "NAT in, conntrack hit, IPv4 TCP",
            c0.index,
            Path::Hit,
            &|| in4(40_000),
        ),
        (
            "NAT out: reply rewritten to the VIP, IPv4 TCP",
            s0.index,
            Path::Reply,
            &out4,
        ),
        (
            "NAT in, conntrack hit, IPv6 UDP",
            c0.index,
            Path::Hit,
            &|| in6(40_000),
        ),
        (
            "NAT out: reply rewritten to the VIP, IPv6 UDP",
            s0.index,
            Path::Reply,
            &out6,
        ),
    ];
    for (name, ifindex, path, frame) in cases {
        // A first call makes the flow of a hit or miss case (the reply
        // cases use the reverse entries of the hit cases before them).
        let xlb = controller.program();
        run_once(xlb, ifindex, &frame(), &mut vec![0u8; 2048])?;
        let before = controller.maps().conntrack_stats()?;
        // The miss case's backend is flagged `reschedule` for its calls
        // only, and restored even if they fail.
        let backend = controller.maps().backend(backend4)?;
        let miss = matches!(path, Path::Miss);
        if miss {
            let flagged = BackendInfo {
                flags: backend.flags | BACKEND_F_RESCHEDULE,
                ..backend
            };
            controller.maps_mut().set_backend(backend4, &flagged)?;
        }
        let ns = measure(controller.program(), ifindex, n, XDP_REDIRECT, frame);
        if miss {
            controller.maps_mut().set_backend(backend4, &backend)?;
        }
        let ns = ns.with_context(|| format!("case {name:?}"))?;
        let after = controller.maps().conntrack_stats()?;
        check_path(path, &before, &after, n).with_context(|| format!("case {name:?}"))?;
        super::say(&format!("  {name:<62} {ns:>5.0} ns"));
        rows.push(Row {
            name,
            ns,
            ratio: ns / floor_ns.max(1.0),
            calls: path.calls(),
        });
    }
    Ok(rows)
}

/// The id the controller gave the backend at `addr`.
fn backend_id(maps: &Maps, addr: std::net::IpAddr) -> Result<u32> {
    let (want, _) = addr_bytes(addr);
    for id in 1..lb_common::MAX_BACKENDS {
        let b = maps.backend(id)?;
        if b.flags & BACKEND_F_ACTIVE != 0 && b.addr == want {
            return Ok(id);
        }
    }
    bail!("no active backend {addr} in the data plane")
}

/// Fails unless the connection-table counters show that every one of the
/// `calls` calls took `path`.
fn check_path(path: Path, before: &[u64], after: &[u64], calls: usize) -> Result<()> {
    let counters: &[u32] = match path {
        Path::Miss => &[ct::MISS, ct::INSERT],
        Path::Hit => &[ct::HIT],
        Path::Reply => &[ct::NAT_REPLY],
    };
    for &c in counters {
        let c = c as usize;
        let seen = after[c] - before[c];
        ensure!(
            seen >= calls as u64,
            "the connection table counted {seen} of {calls} calls as {}",
            ct::NAMES[c]
        );
    }
    Ok(())
}

/// Median over `calls` BPF_PROG_TEST_RUN calls of one run each, as if
/// received on `ifindex`; fails unless every verdict is `want`.
fn measure(prog: &Xdp, ifindex: u32, calls: usize, want: u32, frame: FrameOf) -> Result<f64> {
    let mut ns = Vec::with_capacity(calls);
    let mut out = vec![0u8; 2048];
    let f = frame();
    for i in 0..calls {
        let (verdict, nanos) = run_once(prog, ifindex, &f, &mut out)?;
        ensure!(verdict == want, "call {i}: verdict {verdict}, want {want}");
        ns.push(nanos);
    }
    Ok(median(&mut ns))
}

fn run_once(prog: &Xdp, ifindex: u32, frame: &[u8], out: &mut [u8]) -> Result<(u32, f64)> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex.
    let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(out),
            ctx_in: Some(&ctx),
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    Ok((r.return_value, r.duration.as_nanos() as f64))
}
