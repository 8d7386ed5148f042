//! wrk through xlb NAT, HAProxy in TCP mode and nftables DNAT, in lb_user's
//! two-armed NAT topology (client and backends on separate segments, the
//! load-balancer node routing between them; nginx on port 8080 behind
//! VIP:80). Every round runs the setups in turn, both wrk modes each, as
//! [`super::http`] does for DSR. No setup masquerades: the backends see the
//! client's address and reply through the node, which translates back.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use lb_user::netns::NetNs;
use lb_user::topology::{BACKEND_PORT, NatLayout, NatTopology, VIP_PORT, backend_counters};

use super::http::{Row, Wrk, both_modes_at, rows, spawn_haproxy};
use super::say;

const BACKENDS: usize = 3;
const TABLE: &str = "xlb_bench_nat";

pub const SETUPS: [&str; 3] = [
    "xlb NAT (two-armed)",
    "HAProxy (TCP mode)",
    "nftables DNAT (jhash)",
];

/// DNAT of VIP:80/tcp to one of `backends` (port [`BACKEND_PORT`]), picked
/// by a jhash of the client's address and port; conntrack translates the
/// replies back.
fn ruleset(vip: SocketAddr, backends: &[SocketAddr]) -> String {
    let map = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{i} : {} . {}", b.ip(), b.port()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = String::new();
    let _ = writeln!(s, "table ip {TABLE} {{");
    let _ = writeln!(s, "  chain prerouting {{");
    let _ = writeln!(
        s,
        "    type nat hook prerouting priority dstnat; policy accept;"
    );
    let _ = writeln!(
        s,
        "    ip daddr {} tcp dport {} counter dnat ip to jhash ip saddr . tcp sport mod {} map {{ {map} }}",
        vip.ip(),
        vip.port(),
        backends.len()
    );
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "}}");
    s
}

/// The DNAT rule set in `ns`, live while this lives.
struct Dnat<'a> {
    ns: &'a NetNs,
}

impl<'a> Dnat<'a> {
    fn apply(ns: &'a NetNs, dir: &Path, vip: SocketAddr, backends: &[SocketAddr]) -> Result<Self> {
        let path = dir.join("bench-nat-dnat.nft");
        std::fs::write(&path, ruleset(vip, backends))?;
        ns.run([std::ffi::OsStr::new("nft"), "-f".as_ref(), path.as_os_str()])
            .context("loading the nftables DNAT rules")?;
        Ok(Dnat { ns })
    }
}

impl Drop for Dnat<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.ns.run(["nft", "delete", "table", "ip", TABLE]) {
            eprintln!("bench: removing the nftables table: {e:#}");
        }
    }
}

/// One round: every setup in turn, both modes each; `[setup][mode]`.
fn round(
    t: &NatTopology,
    xlb_exe: &Path,
    config: &Path,
    duration: Duration,
) -> Result<Vec<Vec<Wrk>>> {
    let vip = SocketAddr::new(t.vip4().into(), VIP_PORT);
    let servers: Vec<SocketAddr> = (1..=BACKENDS)
        .map(|i| SocketAddr::new(t.backend_addr4(i).into(), BACKEND_PORT))
        .collect();
    let (client, dir) = (t.client(), t.dir());

    let xlb = t.start_xlb(xlb_exe, config)?;
    xlb.wait_ready(Duration::from_secs(20))?;
    let x = both_modes_at(client, dir, vip, SETUPS[0], duration).and_then(|x| {
        // Proof that the XDP program translated the requests (the kernel
        // would have answered VIP:80 with a reset: nothing listens there).
        let packets: u64 = backend_counters(&xlb.status()?, "web4")?
            .iter()
            .map(|(_, p, _)| p)
            .sum();
        let requests: u64 = x.iter().map(|w| w.requests).sum();
        ensure!(
            packets >= requests,
            "xlb counted {packets} packets to the backends for {requests} requests"
        );
        Ok(x)
    });
    xlb.stop(Duration::from_secs(3));
    let x = x?;

    let haproxy = spawn_haproxy(t.lb(), dir, vip, &servers)?;
    let h = both_modes_at(client, dir, vip, SETUPS[1], duration);
    haproxy.stop(Duration::from_secs(3));
    let h = h?;

    let dnat = Dnat::apply(t.lb(), dir, vip, &servers)?;
    let n = both_modes_at(client, dir, vip, SETUPS[2], duration)?;
    drop(dnat);
    Ok(vec![x, h, n])
}

/// Rounds of every setup in turn; each row is the median over rounds, the
/// ratio against xlb NAT in the same mode.
pub fn run(xlb_exe: &Path, quick: bool) -> Result<Vec<Row>> {
    let duration = Duration::from_secs(if quick { 2 } else { 5 });
    let t = NatTopology::build(NatLayout::TwoArmed, BACKENDS)?;
    say(&format!("  topology {} (two-armed NAT) ready", t.prefix()));
    let weights: Vec<(usize, u32)> = (1..=BACKENDS).map(|i| (i, 1)).collect();
    let config = t.write_xlb_config(&weights)?;
    // Native XDP, as in the DSR figures.
    let text = std::fs::read_to_string(&config)?;
    std::fs::write(
        &config,
        text.replace("xdp_mode = \"auto\"", "xdp_mode = \"native\""),
    )?;
    let mut rounds = Vec::new();
    for _ in 0..super::rounds(quick) {
        rounds.push(round(&t, xlb_exe, &config, duration)?);
    }
    Ok(rows(&SETUPS, &rounds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_maps_every_backend_with_its_port() {
        let vip: SocketAddr = "198.18.0.100:80".parse().unwrap();
        let b: Vec<SocketAddr> = ["198.18.1.11:8080", "198.18.1.12:8080"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let r = ruleset(vip, &b);
        assert!(
            r.contains(
                "ip daddr 198.18.0.100 tcp dport 80 counter dnat ip to jhash ip saddr . tcp sport \
                 mod 2 map { 0 : 198.18.1.11 . 8080, 1 : 198.18.1.12 . 8080 }"
            ),
            "{r}"
        );
    }
}
