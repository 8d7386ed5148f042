//! nftables DNAT in the load-balancer node's namespace: the kernel's own L4
//! load balancer, the comparison point for xlb. A jhash of the client
//! address and port picks the backend (per flow, like xlb's 5-tuple hash);
//! conntrack translates the replies back.
//!
//! In the DSR topology the backends share the client's segment, so the
//! rules also masquerade: otherwise a backend would answer the client
//! directly, from its own address. In the NAT topologies the backends
//! route through the node and no masquerade is needed.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context as _, Result};
use xlb_testbed::netns::NetNs;

/// One DNAT rule: traffic to `vip` over `proto` goes to one of `backends`.
pub struct Service {
    /// `"tcp"` or `"udp"`.
    pub proto: &'static str,
    pub vip: SocketAddr,
    pub backends: Vec<SocketAddr>,
}

/// The rule set of table `table` (IPv4 only, as are the benchmarks).
fn ruleset(table: &str, services: &[Service], masquerade: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "table ip {table} {{");
    let _ = writeln!(s, "  chain prerouting {{");
    let _ = writeln!(
        s,
        "    type nat hook prerouting priority dstnat; policy accept;"
    );
    for svc in services {
        let map = svc
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| format!("{i} : {} . {}", b.ip(), b.port()))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            s,
            "    ip daddr {} {proto} dport {} counter dnat ip to jhash ip saddr . {proto} sport \
             mod {} map {{ {map} }}",
            svc.vip.ip(),
            svc.vip.port(),
            svc.backends.len(),
            proto = svc.proto,
        );
    }
    let _ = writeln!(s, "  }}");
    if masquerade {
        let mut all: Vec<String> = services
            .iter()
            .flat_map(|svc| svc.backends.iter().map(|b| b.ip().to_string()))
            .collect();
        all.sort();
        all.dedup();
        let _ = writeln!(s, "  chain postrouting {{");
        let _ = writeln!(
            s,
            "    type nat hook postrouting priority srcnat; policy accept;"
        );
        let _ = writeln!(
            s,
            "    ct status dnat ip daddr {{ {} }} counter masquerade",
            all.join(", ")
        );
        let _ = writeln!(s, "  }}");
    }
    let _ = writeln!(s, "}}");
    s
}

/// The rule set, live while this lives.
pub struct Dnat<'a> {
    ns: &'a NetNs,
    table: &'static str,
}

impl<'a> Dnat<'a> {
    /// Loads table `table` with `services` into `ns`, from a file in `dir`.
    /// Forwarding must already be on in `ns`.
    pub fn apply(
        ns: &'a NetNs,
        dir: &Path,
        table: &'static str,
        services: &[Service],
        masquerade: bool,
    ) -> Result<Dnat<'a>> {
        let path = dir.join(format!("{table}.nft"));
        std::fs::write(&path, ruleset(table, services, masquerade))?;
        ns.run([std::ffi::OsStr::new("nft"), "-f".as_ref(), path.as_os_str()])
            .with_context(|| format!("loading the nftables table {table}"))?;
        Ok(Dnat { ns, table })
    }

    /// The rule set with its counters, for error messages.
    pub fn listing(&self) -> String {
        self.ns
            .run(["nft", "list", "table", "ip", self.table])
            .unwrap_or_else(|e| format!("{e:#}"))
    }
}

impl Drop for Dnat<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.ns.run(["nft", "delete", "table", "ip", self.table]) {
            eprintln!("bench: removing the nftables table {}: {e:#}", self.table);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(proto: &'static str, vip: &str, backends: &[&str]) -> Service {
        Service {
            proto,
            vip: vip.parse().unwrap(),
            backends: backends.iter().map(|b| b.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn every_service_maps_every_backend_with_its_port() {
        let r = ruleset(
            "t",
            &[
                service(
                    "tcp",
                    "198.18.0.100:80",
                    &["198.18.1.11:8080", "198.18.1.12:8080"],
                ),
                service("udp", "198.18.0.100:9", &["198.18.1.11:9"]),
            ],
            false,
        );
        assert!(
            r.contains(
                "ip daddr 198.18.0.100 tcp dport 80 counter dnat ip to jhash ip saddr . tcp sport \
                 mod 2 map { 0 : 198.18.1.11 . 8080, 1 : 198.18.1.12 . 8080 }"
            ),
            "{r}"
        );
        assert!(
            r.contains(
                "ip daddr 198.18.0.100 udp dport 9 counter dnat ip to jhash ip saddr . udp sport \
                 mod 1 map { 0 : 198.18.1.11 . 9 }"
            ),
            "{r}"
        );
        assert!(!r.contains("masquerade"), "{r}");
    }

    #[test]
    fn masquerade_covers_each_backend_once() {
        let b = ["198.18.0.11:80", "198.18.0.12:80"];
        let r = ruleset(
            "t",
            &[
                service("tcp", "198.18.0.100:80", &b),
                service("udp", "198.18.0.100:9", &["198.18.0.11:9", "198.18.0.12:9"]),
            ],
            true,
        );
        assert!(
            r.contains("ct status dnat ip daddr { 198.18.0.11, 198.18.0.12 } counter masquerade"),
            "{r}"
        );
    }
}
