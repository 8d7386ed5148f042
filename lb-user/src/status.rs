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
    /// Taken out of the configuration: no new flows; its established flows
    /// go on until they have been idle for the connection-table timeout.
    Removed,
}

impl BackendState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Active => "active",
            BackendState::Draining => "draining",
            BackendState::Unresolved => "unresolved",
            BackendState::Removed => "removed",
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
    /// False while this node is not the VRRP master of the VIP's group.
    #[serde(default = "yes")]
    pub forwarding: bool,
    pub packets: u64,
    pub bytes: u64,
    pub backends: Vec<BackendStatus>,
}

fn yes() -> bool {
    true
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
    /// VRRP, when the config has a `[vrrp]` section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrrp: Option<VrrpStatus>,
}

/// VRRP state of the node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpStatus {
    pub groups: Vec<VrrpGroupStatus>,
    /// Tracking verdict: "ok", or what fails ("link down", "198.18.0.254 unreachable").
    pub tracking: String,
    /// Received packets: "accepted" and one counter per reason for ignoring one.
    pub counters: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpGroupStatus {
    pub vrid: u8,
    pub family: String,
    /// init, backup, master or fault.
    pub state: String,
    /// Effective priority (configured minus tracking penalty).
    pub priority: u8,
    pub configured_priority: u8,
    pub preempt: bool,
    pub advert_interval_cs: u16,
    /// The current master's address, if known (ours when master).
    pub master: Option<String>,
    pub vips: Vec<String>,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub last_transition: Option<VrrpTransition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpTransition {
    pub from: String,
    pub to: String,
    pub reason: String,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// How long ago, when the status was taken.
    #[serde(default)]
    pub ago_ms: u64,
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
                format!(
                    "{} {} ({}{})",
                    endpoint(&v.address, v.port),
                    v.name,
                    v.mode,
                    if v.forwarding { "" } else { ", standby" }
                ),
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
        if let Some(v) = &self.vrrp {
            v.render(&mut out);
        }
        out
    }
}

impl VrrpStatus {
    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "vrrp: tracking {}", self.tracking);
        for g in &self.groups {
            let _ = writeln!(
                out,
                "  vrid {} ({}) {:<7} priority {} (configured {}, preempt {}) interval {}cs master {} vips {}",
                g.vrid,
                g.family,
                g.state.to_uppercase(),
                g.priority,
                g.configured_priority,
                if g.preempt { "on" } else { "off" },
                g.advert_interval_cs,
                g.master.as_deref().unwrap_or("?"),
                g.vips.join(","),
            );
            if let Some(t) = &g.last_transition {
                let _ = writeln!(
                    out,
                    "    last transition {} -> {} {:.1}s ago: {}",
                    t.from,
                    t.to,
                    t.ago_ms as f64 / 1000.0,
                    t.reason
                );
            }
        }
        let list = self
            .counters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(out, "  adverts: {list}");
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
                forwarding: true,
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
            vrrp: None,
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
        assert!(!t.contains("vrrp"), "{t}");
    }

    #[test]
    fn vrrp_section_shows_state_master_and_last_transition() {
        let mut s = sample();
        s.vrrp = Some(VrrpStatus {
            groups: vec![VrrpGroupStatus {
                vrid: 51,
                family: "ipv4".into(),
                state: "master".into(),
                priority: 150,
                configured_priority: 150,
                preempt: true,
                advert_interval_cs: 20,
                master: Some("198.18.0.1".into()),
                vips: vec!["web4".into()],
                adverts_sent: 10,
                adverts_received: 2,
                last_transition: Some(VrrpTransition {
                    from: "backup".into(),
                    to: "master".into(),
                    reason: "master down timer expired".into(),
                    at_unix_ms: 1,
                    ago_ms: 1500,
                }),
            }],
            tracking: "ok".into(),
            counters: [("bad_ttl".to_string(), 1)].into_iter().collect(),
        });
        let t = s.render();
        assert!(t.contains("vrid 51 (ipv4) MASTER"), "{t}");
        assert!(t.contains("master 198.18.0.1"), "{t}");
        assert!(
            t.contains("last transition backup -> master 1.5s ago: master down timer expired"),
            "{t}"
        );
        assert!(t.contains("bad_ttl=1"), "{t}");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
    }
}
