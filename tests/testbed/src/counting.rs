//! Packets to TCP addresses counted by nftables inside a namespace: what a
//! backend received, or a client sent, independently of xlb's own
//! counters. The table goes with the namespace.

use std::net::SocketAddr;

use anyhow::{Context as _, ensure};

use crate::netns::NetNs;

/// Where in the namespace packets are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Arriving, before anything else sees them (priority raw).
    Prerouting,
    /// Sent by the namespace's own sockets.
    Output,
}

/// A counter of packets to a set of TCP destinations in one namespace.
#[derive(Debug)]
pub struct PacketCounter {
    table: String,
}

impl PacketCounter {
    /// Installs table `inet <table>` in `ns`, counting TCP packets to any
    /// of `dests` at `hook`.
    pub fn install(
        ns: &NetNs,
        table: &str,
        hook: Hook,
        dests: &[SocketAddr],
    ) -> anyhow::Result<PacketCounter> {
        ensure!(!dests.is_empty(), "nothing to count");
        let hook = match hook {
            Hook::Prerouting => "prerouting",
            Hook::Output => "output",
        };
        let mut rules = String::new();
        for d in dests {
            let family = if d.is_ipv4() { "ip" } else { "ip6" };
            rules.push_str(&format!(
                "    {family} daddr {} tcp dport {} counter\n",
                d.ip(),
                d.port()
            ));
        }
        let text = format!(
            "table inet {table} {{\n  chain count {{\n    type filter hook {hook} priority -300; \
             policy accept;\n{rules}  }}\n}}\n"
        );
        let path = std::env::temp_dir().join(format!("{}-{table}.nft", ns.name()));
        std::fs::write(&path, &text)?;
        let r = ns.run(["nft", "-f", &path.display().to_string()]);
        let _ = std::fs::remove_file(&path);
        r.with_context(|| format!("installing the counter:\n{text}"))?;
        Ok(PacketCounter {
            table: table.to_owned(),
        })
    }

    /// Packets counted so far.
    pub fn packets(&self, ns: &NetNs) -> anyhow::Result<u64> {
        let json = ns.run(["nft", "-j", "list", "table", "inet", &self.table])?;
        let v: serde_json::Value = serde_json::from_str(&json)
            .with_context(|| format!("nft -j output is not JSON: {json}"))?;
        let mut total = 0;
        for item in v["nftables"].as_array().into_iter().flatten() {
            for e in item["rule"]["expr"].as_array().into_iter().flatten() {
                if let Some(n) = e["counter"]["packets"].as_u64() {
                    total += n;
                }
            }
        }
        Ok(total)
    }
}
