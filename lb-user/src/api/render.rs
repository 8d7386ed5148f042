//! `xlb status` for people: a table in the spirit of `ipvsadm -Ln --stats`.

use std::{collections::BTreeMap, fmt::Write as _};

use super::status::{BackendSource, FeedbackStatus, HealthStatus, Status, SyncStatus, VrrpStatus};

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
        let mut overrides = false;
        let _ = writeln!(
            out,
            "xlb on {} (XDP {}), {}",
            self.interface,
            self.xdp_mode,
            if self.forwarding {
                "forwarding"
            } else if !self.vips.is_empty() && self.vips.iter().all(|v| !v.forwarding) {
                "standby (VRRP backup of every VIP)"
            } else {
                "NOT forwarding (not configured)"
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
            if let Some(a) = &v.announce {
                let mark = if a.announced { "  " } else { "!!" };
                let _ = writeln!(out, "  {mark} route on {}: {}", a.interface, a.detail);
            }
            if v.usable_backends == 0 && !v.backends.is_empty() {
                let _ = writeln!(
                    out,
                    "  !! no usable backend: new connections are dropped (counted as no_backend)"
                );
            }
            let mut tiers: Vec<u8> = v.backends.iter().map(|b| b.tier).collect();
            tiers.sort_unstable();
            tiers.dedup();
            if tiers.len() > 1 {
                let list = |t: &[u8]| {
                    t.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let _ = writeln!(
                    out,
                    "     tiers {}: new flows to tier {}",
                    list(&tiers),
                    list(&v.serving_tiers)
                );
            }
            for b in &v.backends {
                // NAT forwards by the kernel's routes: no backend MAC.
                let mac = match (&b.mac, v.mode.as_str()) {
                    (Some(m), _) => m.as_str(),
                    (None, "nat") => "routed",
                    (None, _) => "mac ?",
                };
                let _ = writeln!(
                    out,
                    "  -> {:<44} {:<10} {:>7} {:>12} {:>14}",
                    format!("{} {} {}", b.address, b.name, mac),
                    b.state.as_str(),
                    b.weight,
                    b.packets,
                    b.bytes
                );
                if b.source == BackendSource::Runtime {
                    let drained = if b.drained { ", drained" } else { "" };
                    let _ = writeln!(
                        out,
                        "       added at runtime (`xlb backend add`){drained}, kept by `xlb reload`"
                    );
                } else if b.drained {
                    overrides = true;
                    let _ = writeln!(
                        out,
                        "       drained at runtime (file weight {})",
                        b.config_weight
                    );
                } else if let Some(w) = b.weight_override {
                    overrides = true;
                    let _ = writeln!(
                        out,
                        "       weight {w} set at runtime (file weight {})",
                        b.config_weight
                    );
                }
                if b.tier != 0 {
                    let _ = writeln!(out, "       tier {}", b.tier);
                }
                if let Some(h) = &b.health {
                    let _ = writeln!(out, "       {}", render_health(h));
                }
                if let Some(f) = &b.feedback {
                    let _ = writeln!(out, "       {}", render_feedback(f, b.effective_weight));
                }
            }
        }
        if overrides {
            let _ = writeln!(
                out,
                "note: runtime drain/weight settings last until `xlb reload` (or SIGHUP), which applies the file"
            );
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
        if let Some(s) = &self.sync {
            s.render(&mut out);
        }
        if let Some(d) = &self.dataplane {
            let _ = writeln!(
                out,
                "data plane: program {} tag {} loaded {} ({} at start); state {} since {}",
                d.program_id,
                d.program_tag,
                utc(d.program_loaded_unix_s),
                d.start,
                d.state_dir,
                utc(d.state_created_unix_s)
            );
        }
        out
    }
}

/// `2026-12-01 21:30:05 UTC` of a Unix time.
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date of a day count since 1970-01-01 (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The table of [`Status::render`].
impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

/// `health up (3 ok in a row, 12s): HTTP 200 in 0.4 ms [http GET :80/ ...]`
/// `feedback agent: 25 % (ring weight 25), last "25%", 1 change 12 s ago`.
fn render_feedback(f: &FeedbackStatus, ring_weight: u32) -> String {
    let mut s = format!(
        "feedback {}: {} % (ring weight {ring_weight})",
        f.source, f.percent
    );
    if let Some(w) = f.wanted_percent
        && w != f.percent
    {
        let _ = write!(s, ", asks {w} %");
    }
    if let Some(l) = &f.last {
        let _ = write!(s, ", last {l:?}");
    }
    if let Some(r) = f.smoothed_rtt_us {
        let _ = write!(s, ", smoothed {:.1} ms", r as f64 / 1e3);
    }
    let plural = if f.changes == 1 { "" } else { "s" };
    let _ = write!(s, ", {} change{plural}", f.changes);
    if let Some(ago) = f.changed_ago_s {
        let _ = write!(s, " (last {ago} s ago)");
    }
    if f.bad_replies > 0 || f.unanswered > 0 {
        let _ = write!(
            s,
            ", {} bad replies, {} unanswered",
            f.bad_replies, f.unanswered
        );
    }
    s
}

fn render_health(h: &HealthStatus) -> String {
    let last = match (h.last_ok, &h.last_detail) {
        (Some(ok), Some(detail)) => {
            let latency = h
                .last_latency_us
                .map(|us| format!(" in {:.1} ms", us as f64 / 1000.0))
                .unwrap_or_default();
            format!(
                "{} {} in a row, last: {detail}{latency}",
                h.consecutive,
                if ok { "ok" } else { "failed" }
            )
        }
        _ => "no result yet".to_owned(),
    };
    format!(
        "health {} for {}s ({last}) [{}]",
        h.state, h.since_change_s, h.check
    )
}

impl VrrpStatus {
    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "vrrp: tracking {}", self.tracking);
        if !self.peers.is_empty() {
            let _ = writeln!(out, "  peers {} (unicast)", self.peers.join(","));
        }
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
            if !g.server_addresses.is_empty() {
                let _ = writeln!(out, "    server addresses {}", g.server_addresses.join(","));
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

impl SyncStatus {
    fn render(&self, out: &mut String) {
        let lag = match (self.lag_us_median, self.lag_us_p99) {
            (Some(m), Some(p)) => format!("lag median {m} us, p99 {p} us"),
            _ => "lag: no flow sent yet".to_owned(),
        };
        let _ = writeln!(
            out,
            "sync: {} on port {}, epoch {}; {lag}",
            self.mode, self.port, self.epoch
        );
        for p in &self.peers {
            let heard = p.last_heard_ms_ago.map_or("never heard".to_owned(), |ms| {
                format!("heard {:.1}s ago", ms as f64 / 1000.0)
            });
            let _ = writeln!(
                out,
                "  peer {}: {heard}, {} messages, {} flows",
                p.address, p.messages, p.flows
            );
        }
        let list = self
            .counters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(out, "  counters: {list}");
    }
}

#[cfg(test)]
mod tests {
    use crate::api::status::*;

    fn sample() -> Status {
        Status {
            version: STATUS_VERSION,
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
                    config_weight: 0,
                    drained: false,
                    weight_override: None,
                    health: None,
                    tier: 0,
                    effective_weight: 0,
                    feedback: None,
                    source: BackendSource::File,
                }],
                usable_backends: 0,
                serving_tiers: vec![0],
                on_down: "keep".into(),
                announce: None,
            }],
            global: [("rx".to_string(), 10)].into_iter().collect(),
            drops: [("no_backend".to_string(), 3)].into_iter().collect(),
            conntrack: [("hit".to_string(), 7)].into_iter().collect(),
            vrrp: None,
            dataplane: None,
            sync: None,
        }
    }

    #[test]
    fn a_backend_with_feedback_shows_its_percent_ring_weight_and_signal() {
        let mut s = sample();
        let b = &mut s.vips[0].backends[0];
        b.effective_weight = 25;
        b.feedback = Some(super::super::status::FeedbackStatus {
            source: "agent".into(),
            percent: 25,
            wanted_percent: Some(30),
            last: Some("30%".into()),
            smoothed_rtt_us: None,
            changes: 1,
            changed_ago_s: Some(7),
            bad_replies: 2,
            unanswered: 0,
        });
        assert!(
            s.render().contains(
                "       feedback agent: 25 % (ring weight 25), asks 30 %, last \"30%\", \
                 1 change (last 7 s ago), 2 bad replies, 0 unanswered\n"
            ),
            "{}",
            s.render()
        );
    }

    #[test]
    fn the_data_plane_line_names_program_state_and_creation_time() {
        let mut s = sample();
        s.dataplane = Some(DataplaneStatus {
            program_id: 42,
            program_tag: "0123456789abcdef".into(),
            program_loaded_unix_s: 1_795_399_751,
            state_dir: "/sys/fs/bpf/xlb/eth0".into(),
            state_created_unix_s: 1_795_396_151,
            start: "adopted".into(),
        });
        let t = s.render();
        assert!(
            t.contains(
                "data plane: program 42 tag 0123456789abcdef loaded 2026-11-23 02:09:11 UTC \
                 (adopted at start); \
                 state /sys/fs/bpf/xlb/eth0 since 2026-11-23 01:09:11 UTC"
            ),
            "{t}"
        );
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
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
        assert!(t.contains("!! no usable backend"), "{t}");
        assert!(!t.contains("vrrp"), "{t}");
    }

    #[test]
    fn announcements_are_shown_under_their_vip() {
        let mut s = sample();
        s.vips[0].announce = Some(AnnounceStatus {
            announced: false,
            interface: "lo".into(),
            detail: "withdrawn: 0 of 1 backends usable (min_usable 1)".into(),
        });
        let t = s.render();
        assert!(
            t.contains("  !! route on lo: withdrawn: 0 of 1 backends usable (min_usable 1)"),
            "{t}"
        );
        s.vips[0].announce = Some(AnnounceStatus {
            announced: true,
            interface: "lo".into(),
            detail: "announced: 1 of 1 backends usable (min_usable 1)".into(),
        });
        let t = s.render();
        assert!(
            t.contains("     route on lo: announced: 1 of 1 backends usable (min_usable 1)"),
            "{t}"
        );
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
    }

    #[test]
    fn tiers_are_shown_only_when_a_vip_has_several() {
        let mut s = sample();
        assert!(!s.render().contains("tier"), "{}", s.render());
        let mut backup = s.vips[0].backends[0].clone();
        backup.name = "b2".into();
        backup.address = "fd00:18::12".into();
        backup.state = BackendState::Backup;
        backup.tier = 1;
        s.vips[0].backends.push(backup);
        let t = s.render();
        assert!(t.contains("     tiers 0, 1: new flows to tier 0\n"), "{t}");
        assert!(t.contains(" backup "), "{t}");
        assert!(t.contains("\n       tier 1\n"), "{t}");
        s.vips[0].serving_tiers = vec![0, 1];
        assert!(s.render().contains("tiers 0, 1: new flows to tier 0, 1"));
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""state":"backup""#), "{json}");
        assert!(json.contains(r#""serving_tiers":[0,1]"#), "{json}");
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
    }

    #[test]
    fn json_without_health_fields_still_parses() {
        // What a daemon from before health checks served.
        let old = r#"{"interface":"eth0","xdp_mode":"native","forwarding":true,
            "vips":[{"name":"web","address":"198.18.0.100","port":80,"protocol":"tcp",
            "mode":"dsr","affinity":"flow","ring_size":251,"packets":1,"bytes":2,
            "backends":[{"name":"b1","address":"198.18.0.11","weight":1,"mac":null,
            "state":"active","packets":1,"bytes":2}]}],"global":{},"drops":{}}"#;
        let s: Status = serde_json::from_str(old).unwrap();
        assert_eq!(s.vips[0].backends[0].health, None);
    }

    #[test]
    fn health_and_overrides_are_rendered() {
        let mut s = sample();
        let b = &mut s.vips[0].backends[0];
        b.state = BackendState::Down;
        b.config_weight = 1;
        b.drained = true;
        b.health = Some(HealthStatus {
            check: "tcp connect :80".into(),
            state: Health::Down,
            last_ok: Some(false),
            last_detail: Some("connection refused".into()),
            last_latency_us: Some(420),
            consecutive: 3,
            since_change_s: 12,
        });
        let t = s.render();
        assert!(t.contains(" down "), "{t}");
        assert!(t.contains("drained at runtime (file weight 1)"), "{t}");
        assert!(
            t.contains("health down for 12s (3 failed in a row, last: connection refused in 0.4 ms) [tcp connect :80]"),
            "{t}"
        );
        assert!(t.contains("until `xlb reload`"), "{t}");
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""state":"down""#), "{json}");
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
    }

    #[test]
    fn vrrp_section_shows_state_master_and_last_transition() {
        let mut s = sample();
        s.vrrp = Some(crate::api::samples::vrrp_master());
        let t = s.render();
        assert!(t.contains("vrid 51 (ipv4) MASTER"), "{t}");
        assert!(t.contains("master 198.18.0.1"), "{t}");
        assert!(
            t.contains("last transition backup -> master 1.5s ago: master down timer expired"),
            "{t}"
        );
        assert!(t.contains("bad_ttl=1"), "{t}");
        assert!(t.contains("peers 198.18.0.3,fe80::3 (unicast)"), "{t}");
        assert!(t.contains("server addresses 198.18.1.1"), "{t}");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
    }
}
