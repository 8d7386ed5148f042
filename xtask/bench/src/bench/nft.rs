//! nftables DNAT in the xlb node's namespace: the kernel's own L4 load
//! balancer, the comparison point for xlb. A jhash of the client address
//! and port picks the backend (per flow, like xlb's 5-tuple hash); the
//! source is masqueraded so that TCP replies come back through the node
//! (one-armed, as the backends sit on the client's L2 segment).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::Result;
use lb_user::netns::NetNs;

const TABLE: &str = "xlb_bench";

/// The rule set, live while this lives.
pub struct Dnat<'a> {
    ns: &'a NetNs,
}

/// The rules for `vip` (`tcp_port` and `udp_port`) over `backends`.
fn ruleset(vip: Ipv4Addr, tcp_port: u16, udp_port: u16, backends: &[Ipv4Addr]) -> String {
    let map = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{i} : {b}"))
        .collect::<Vec<_>>()
        .join(", ");
    let all = backends
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let n = backends.len();
    let mut s = String::new();
    let _ = writeln!(s, "table ip {TABLE} {{");
    let _ = writeln!(s, "  chain prerouting {{");
    let _ = writeln!(
        s,
        "    type nat hook prerouting priority dstnat; policy accept;"
    );
    for (proto, port) in [("tcp", tcp_port), ("udp", udp_port)] {
        let _ = writeln!(
            s,
            "    ip daddr {vip} {proto} dport {port} counter dnat to jhash ip saddr . {proto} sport mod {n} map {{ {map} }}"
        );
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "  chain postrouting {{");
    let _ = writeln!(
        s,
        "    type nat hook postrouting priority srcnat; policy accept;"
    );
    let _ = writeln!(
        s,
        "    ct status dnat ip daddr {{ {all} }} counter masquerade"
    );
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "}}");
    s
}

impl<'a> Dnat<'a> {
    /// Enables forwarding in `ns` (without ICMP redirects: in and out is the
    /// same NIC) and loads the rules from a file in `dir`.
    pub fn apply(
        ns: &'a NetNs,
        ifname: &str,
        dir: &Path,
        vip: Ipv4Addr,
        ports: (u16, u16),
        backends: &[Ipv4Addr],
    ) -> Result<Dnat<'a>> {
        ns.sysctl(&[
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.send_redirects=0",
            &format!("net.ipv4.conf.{ifname}.send_redirects=0"),
        ])?;
        let path = dir.join("bench-dnat.nft");
        std::fs::write(&path, ruleset(vip, ports.0, ports.1, backends))?;
        ns.run([std::ffi::OsStr::new("nft"), "-f".as_ref(), path.as_os_str()])?;
        Ok(Dnat { ns })
    }
}

impl Dnat<'_> {
    /// The rule set with its counters, for error messages.
    pub fn listing(&self) -> String {
        self.ns
            .run(["nft", "list", "table", "ip", TABLE])
            .unwrap_or_else(|e| format!("{e:#}"))
    }
}

impl Drop for Dnat<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.ns.run(["nft", "delete", "table", "ip", TABLE]) {
            eprintln!("bench: removing the nftables table: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_maps_every_backend() {
        let b = [Ipv4Addr::new(198, 18, 0, 11), Ipv4Addr::new(198, 18, 0, 12)];
        let r = ruleset(Ipv4Addr::new(198, 18, 0, 100), 80, 9, &b);
        assert!(r.contains("tcp dport 80 counter dnat to jhash ip saddr . tcp sport mod 2 map { 0 : 198.18.0.11, 1 : 198.18.0.12 }"));
        assert!(r.contains("udp dport 9 counter dnat"));
        assert!(r.contains("masquerade"));
    }
}
