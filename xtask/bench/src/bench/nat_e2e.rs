//! wrk through xlb NAT, HAProxy in TCP mode and nftables DNAT, in lb_user's
//! two-armed NAT topology (client and backends on separate segments, the
//! load-balancer node routing between them; nginx on port 8080 behind
//! VIP:80). Every round runs the setups in turn, both wrk modes each, as
//! [`super::http`] does for DSR. No setup masquerades: the backends see the
//! client's address and reply through the node, which translates back.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, ensure};
use xlb_testbed::topology::{BACKEND_PORT, VIP_PORT, backend_counters};

use super::http::{Row, Wrk, both_modes_at, rows, spawn_haproxy, wrk_clock};
use super::nat_topo::NatBench;
use super::topo::{BACKENDS, ensure_no_xdp, stop_xlb};

pub const SETUPS: [&str; 3] = [
    "xlb NAT (two-armed)",
    "HAProxy (TCP mode)",
    "nftables DNAT (jhash)",
];

/// One round: every setup in turn, both modes each; `[setup][mode]`.
fn round(b: &NatBench, duration: Duration) -> Result<Vec<Vec<Wrk>>> {
    let t = &b.topo;
    let vip = SocketAddr::new(t.vip4().into(), VIP_PORT);
    let servers: Vec<SocketAddr> = (1..=BACKENDS)
        .map(|i| SocketAddr::new(t.backend_addr4(i).into(), BACKEND_PORT))
        .collect();
    let (client, dir, lb) = (t.client(), t.dir(), t.lb());
    let backends = || (1..=t.backend_count()).map(|i| t.backend(i));
    let nics: Vec<String> = std::iter::once(t.lb_ifname())
        .chain(t.lb_server_ifname())
        .collect();
    let clock = wrk_clock(client, lb, backends(), &[])?;

    let xlb = b.start_xlb()?;
    let xlb_clock = wrk_clock(client, lb, backends(), &[xlb.pid()])?;
    let x = both_modes_at(client, dir, vip, SETUPS[0], duration, &xlb_clock).and_then(|x| {
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
    stop_xlb(xlb)?;
    let x = x?;

    ensure_no_xdp(lb, &nics, SETUPS[1])?;
    let haproxy = spawn_haproxy(lb, dir, vip, &servers)?;
    let h = both_modes_at(client, dir, vip, SETUPS[1], duration, &clock);
    haproxy.stop(Duration::from_secs(3));
    let h = h?;

    ensure_no_xdp(lb, &nics, SETUPS[2])?;
    let dnat = b.dnat()?;
    let n = both_modes_at(client, dir, vip, SETUPS[2], duration, &clock)?;
    drop(dnat);
    Ok(vec![x, h, n])
}

/// Rounds of every setup in turn; each row is the median over rounds, the
/// ratio against xlb NAT in the same mode.
pub fn run(b: &NatBench, quick: bool) -> Result<Vec<Row>> {
    let duration = Duration::from_secs(if quick { 2 } else { 5 });
    let mut rounds = Vec::new();
    for _ in 0..super::rounds(quick) {
        rounds.push(round(b, duration)?);
    }
    Ok(rows(&SETUPS, &rounds, 0, None))
}
