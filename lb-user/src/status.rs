//! What `xlb status` shows: the JSON the daemon serves on its control socket
//! and the table printed for people.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// In the Maglev table.
    Active,
    /// Weight 0: gets no new flows.
    Draining,
    /// MAC not (yet) in the kernel's neighbour table: gets no traffic.
    Unresolved,
}

impl BackendState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Active => "active",
            BackendState::Draining => "draining",
            BackendState::Unresolved => "unresolved",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub name: String,
    pub address: String,
    pub weight: u32,
    pub mac: Option<String>,
    pub state: BackendState,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipStatus {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub protocol: String,
    pub mode: String,
    pub affinity: String,
    pub ring_size: u32,
    pub packets: u64,
    pub bytes: u64,
    pub backends: Vec<BackendStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub interface: String,
    pub xdp_mode: String,
    /// Whether this node forwards VIP traffic.
    pub forwarding: bool,
    pub vips: Vec<VipStatus>,
    /// Packets seen, passed to the kernel, forwarded, dropped.
    pub global: BTreeMap<String, u64>,
    /// Dropped packets by reason.
    pub drops: BTreeMap<String, u64>,
    /// Connection-table events (hits, misses, inserts, refusals, ...).
    #[serde(default)]
    pub conntrack: BTreeMap<String, u64>,
}

fn endpoint(address: &str, port: u16) -> String {
    let port = if port == 0 {
        "*".to_string()
    } else {
        port.to_string()
    };
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

impl Status {
    /// A table in the spirit of `ipvsadm -Ln --stats`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "xlb on {} (XDP {}), {}",
            self.interface,
            self.xdp_mode,
            if self.forwarding {
                "forwarding"
            } else {
                "NOT forwarding (backup)"
            }
        );
        let _ = writeln!(
            out,
            "{:<4} {:<44} {:<10} {:>7} {:>12} {:>14}",
            "Prot", "VIP / Backend", "State", "Weight", "Packets", "Bytes"
        );
        for v in &self.vips {
            let _ = writeln!(
                out,
                "{:<4} {:<44} {:<10} {:>7} {:>12} {:>14}",
                v.protocol.to_uppercase(),
                format!("{} {} ({})", endpoint(&v.address, v.port), v.name, v.mode),
                v.affinity,
                "",
                v.packets,
                v.bytes
            );
            for b in &v.backends {
                let mac = b.mac.as_deref().unwrap_or("mac ?");
                let _ = writeln!(
                    out,
                    "  -> {:<44} {:<10} {:>7} {:>12} {:>14}",
                    format!("{} {} {}", b.address, b.name, mac),
                    b.state.as_str(),
                    b.weight,
                    b.packets,
                    b.bytes
                );
            }
        }
        let list = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(out, "packets: {}", list(&self.global));
        let _ = writeln!(out, "drops:   {}", list(&self.drops));
        let _ = writeln!(out, "flows:   {}", list(&self.conntrack));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            interface: "eth0".into(),
            xdp_mode: "native".into(),
            forwarding: true,
            vips: vec![VipStatus {
                name: "web".into(),
                address: "fd00:18::100".into(),
                port: 80,
                protocol: "tcp".into(),
                mode: "dsr".into(),
                affinity: "flow".into(),
                ring_size: 65537,
                packets: 10,
                bytes: 1000,
                backends: vec![BackendStatus {
                    name: "b1".into(),
                    address: "fd00:18::11".into(),
                    weight: 0,
                    mac: None,
                    state: BackendState::Unresolved,
                    packets: 0,
                    bytes: 0,
                }],
            }],
            global: [("rx".to_string(), 10)].into_iter().collect(),
            drops: [("no_backend".to_string(), 3)].into_iter().collect(),
            conntrack: [("hit".to_string(), 7)].into_iter().collect(),
        }
    }

    #[test]
    fn json_round_trips_with_lowercase_states() {
        let s = sample();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""state":"unresolved""#), "{json}");
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
    }

    #[test]
    fn table_names_every_vip_and_backend() {
        let t = sample().render();
        assert!(t.contains("[fd00:18::100]:80 web (dsr)"), "{t}");
        assert!(t.contains("fd00:18::11 b1 mac ?"), "{t}");
        assert!(t.contains("unresolved"), "{t}");
        assert!(t.contains("drops:   no_backend=3"), "{t}");
    }
}
