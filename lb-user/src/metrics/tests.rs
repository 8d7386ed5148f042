//! The rendering of a known status, read back with a strict parser of the
//! OpenMetrics text format (the subset xlb emits), and the HTTP responder
//! on loopback.

use std::collections::BTreeMap;
use std::time::Duration;

use super::server::{self, Asked, Limits};
use super::*;
use crate::api::status::*;
use crate::health::{CheckTally, DURATION_BOUNDS_S, Outcome, Tally};
use crate::maps::TableUse;

// ---------------------------------------------------------------------------
// A parser of what `render` writes.

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    /// Family name → type, in order of appearance.
    types: Vec<(String, String)>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the one sample named `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == want)
            .collect();
        assert_eq!(found.len(), 1, "{name}{want:?} in {:#?}", self.named(name));
        found[0].value
    }

    fn named(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }

    fn family_type(&self, family: &str) -> Option<&str> {
        self.types
            .iter()
            .find(|(f, _)| f == family)
            .map(|(_, t)| t.as_str())
    }
}

/// The sample-name suffixes each type allows after its family name.
fn suffixes(kind: &str) -> &'static [&'static str] {
    match kind {
        "counter" => &["_total"],
        "gauge" => &[""],
        "info" => &["_info"],
        "histogram" => &["_bucket", "_sum", "_count"],
        _ => &[],
    }
}

/// Parses OpenMetrics text strictly: every sample follows the `# TYPE` of
/// its family and has a suffix that type allows, no series repeats, label
/// values are quoted and escaped, and the text ends with `# EOF`.
fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let body = text
        .strip_suffix("# EOF\n")
        .ok_or("does not end with \"# EOF\\n\"")?;
    let mut current: Option<(String, String)> = None;
    let mut seen = std::collections::HashSet::new();
    for (n, line) in body.lines().enumerate() {
        let at = |m: &str| format!("line {}: {m}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (what, family, arg) = (parts.next(), parts.next(), parts.next());
            let family = family.ok_or_else(|| at("no family name"))?.to_owned();
            match what {
                Some("TYPE") => {
                    let kind = arg.ok_or_else(|| at("no type"))?.to_owned();
                    if suffixes(&kind).is_empty() {
                        return Err(at("unknown type"));
                    }
                    if out.types.iter().any(|(f, _)| *f == family) {
                        return Err(at("family declared twice"));
                    }
                    out.types.push((family.clone(), kind.clone()));
                    current = Some((family, kind));
                }
                Some("HELP") | Some("UNIT") => {}
                _ => return Err(at("unknown comment")),
            }
            continue;
        }
        let (family, kind) = current
            .as_ref()
            .ok_or_else(|| at("sample before any TYPE"))?;
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => return Err(at("no value")),
        };
        let suffix = name
            .strip_prefix(family.as_str())
            .ok_or_else(|| at("sample outside its family"))?;
        if !suffixes(kind).contains(&suffix) {
            return Err(at("suffix not allowed for the type"));
        }
        let (labels, value) = if let Some(inner) = rest.strip_prefix('{') {
            parse_labels(inner).map_err(|e| at(&e))?
        } else {
            (BTreeMap::new(), rest)
        };
        let value = value
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().map_err(|_| at("bad value"))?,
        };
        if !seen.insert((name.to_owned(), format!("{labels:?}"))) {
            return Err(at("series repeated"));
        }
        out.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(out)
}

/// `a="x",b="y"} rest` → the labels and `rest` (with its leading space).
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut chars = s.char_indices().peekable();
    loop {
        let start = chars.peek().map(|(i, _)| *i).ok_or("unterminated labels")?;
        if s[start..].starts_with('}') {
            return Ok((labels, &s[start + 1..]));
        }
        let eq = s[start..].find("=\"").ok_or("no =\"")? + start;
        let key = s[start..eq].to_owned();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name {key:?}"));
        }
        while chars.next_if(|(i, _)| *i < eq + 2).is_some() {}
        let mut value = String::new();
        loop {
            match chars.next().ok_or("unterminated value")?.1 {
                '"' => break,
                '\\' => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    c @ ('"' | '\\') => value.push(c),
                    c => return Err(format!("bad escape \\{c}")),
                },
                c => value.push(c),
            }
        }
        if labels.insert(key.clone(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        if chars.next_if(|(_, c)| *c == ',').is_none() && chars.peek().map(|(_, c)| *c) != Some('}')
        {
            return Err("expected , or }".into());
        }
    }
}

#[test]
fn the_parser_refuses_what_it_must() {
    for (text, why) in [
        ("# TYPE xlb_a counter\nxlb_a_total 1\n", "EOF"),
        ("xlb_a 1\n# EOF\n", "before any TYPE"),
        ("# TYPE xlb_a counter\nxlb_a 1\n# EOF\n", "suffix"),
        ("# TYPE xlb_a gauge\nxlb_b 1\n# EOF\n", "outside"),
        (
            "# TYPE xlb_a gauge\nxlb_a{x=\"1\"} 1\nxlb_a{x=\"1\"} 2\n# EOF\n",
            "repeated",
        ),
        (
            "# TYPE xlb_a gauge\nxlb_a{x=\"1} 1\n# EOF\n",
            "unterminated",
        ),
        (
            "# TYPE xlb_a gauge\nxlb_a{x=\"\\q\"} 1\n# EOF\n",
            "bad escape",
        ),
    ] {
        let e = parse(text).unwrap_err();
        assert!(e.contains(why), "{text:?}: {e}");
    }
    let ok = parse("# TYPE xlb_a gauge\nxlb_a{x=\"a\\\"b\\\\c\",y=\"\"} -1.5\n# EOF\n").unwrap();
    assert_eq!(ok.value("xlb_a", &[("x", "a\"b\\c"), ("y", "")]), -1.5);
}

// ---------------------------------------------------------------------------
// A known snapshot.

fn backend(name: &str, state: BackendState, packets: u64, health: Option<Health>) -> BackendStatus {
    BackendStatus {
        name: name.into(),
        // backend-N at 198.18.0.1N.
        address: format!("198.18.0.1{}", &name[name.len() - 1..]),
        weight: if state == BackendState::Active { 2 } else { 0 },
        mac: None,
        state,
        packets,
        bytes: packets * 100,
        config_weight: 2,
        drained: false,
        weight_override: None,
        health: health.map(|state| HealthStatus {
            check: "http GET :80/ expect 200-299".into(),
            state,
            last_ok: Some(state == Health::Up),
            last_detail: None,
            last_latency_us: Some(800),
            consecutive: 3,
            since_change_s: 12,
        }),
        tier: 0,
        effective_weight: if state == BackendState::Active { 2 } else { 0 },
        feedback: None,
        source: BackendSource::File,
    }
}

fn counters(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

fn tally(results: &[(bool, u64)]) -> Tally {
    let mut t = Tally::default();
    for &(ok, us) in results {
        t.record(&Outcome {
            ok,
            latency: Duration::from_micros(us),
            detail: String::new(),
        });
    }
    t
}

fn sample() -> Snapshot {
    let status = Status {
        version: crate::api::status::STATUS_VERSION,
        interface: "eth0".into(),
        xdp_mode: "native".into(),
        forwarding: true,
        vips: vec![VipStatus {
            name: "web4".into(),
            address: "198.18.0.100".into(),
            port: 80,
            protocol: "tcp".into(),
            mode: "dsr".into(),
            affinity: "flow".into(),
            ring_size: 65537,
            forwarding: true,
            packets: 300,
            bytes: 30_000,
            backends: vec![
                backend("backend-1", BackendState::Active, 120, Some(Health::Up)),
                backend("backend-2", BackendState::Down, 80, Some(Health::Down)),
                // Its address changed: the old one finishes its flows.
                BackendStatus {
                    address: "198.18.0.22".into(),
                    ..backend("backend-2", BackendState::Removed, 5, None)
                },
                // A backup that joined: backend-2 is down, so tier 0 has
                // fewer than min_usable 2 usable backends.
                // Also weighted by its agent: 2 × 50 %.
                BackendStatus {
                    tier: 1,
                    effective_weight: 100,
                    feedback: Some(crate::api::FeedbackStatus {
                        source: "agent".into(),
                        percent: 50,
                        wanted_percent: Some(50),
                        last: Some("50%".into()),
                        smoothed_rtt_us: None,
                        changes: 1,
                        changed_ago_s: Some(4),
                        bad_replies: 0,
                        unanswered: 0,
                    }),
                    source: BackendSource::Runtime,
                    ..backend("backend-3", BackendState::Active, 95, None)
                },
            ],
            usable_backends: 2,
            serving_tiers: vec![0, 1],
            on_down: "keep".into(),
            announce: Some(AnnounceStatus {
                announced: true,
                interface: "lo".into(),
                detail: "announced".into(),
            }),
        }],
        global: counters(&[("rx", 1000), ("pass", 690), ("forward", 300), ("drop", 10)]),
        drops: counters(&[("no_backend", 7), ("fragment", 3)]),
        conntrack: counters(&[
            ("hit", 250),
            ("miss", 50),
            ("insert", 49),
            ("refused", 1),
            ("nat_reply", 0),
            ("nat_no_neigh", 2),
            ("nat_reverse_restored", 3),
        ]),
        vrrp: Some(VrrpStatus {
            groups: vec![VrrpGroupStatus {
                vrid: 51,
                family: "ipv4".into(),
                state: "master".into(),
                priority: 90,
                configured_priority: 100,
                preempt: true,
                advert_interval_cs: 100,
                master: Some("198.18.0.1".into()),
                vips: vec!["web4".into()],
                server_addresses: vec![],
                adverts_sent: 40,
                adverts_received: 3,
                last_transition: Some(VrrpTransition {
                    from: "backup".into(),
                    to: "master".into(),
                    reason: "master down".into(),
                    at_unix_ms: 1_795_399_751_250,
                    ago_ms: 10,
                }),
            }],
            tracking: "link down".into(),
            counters: counters(&[
                ("accepted", 3),
                ("address_mismatch", 1),
                ("interval_mismatch", 0),
                ("bad_checksum", 2),
                ("not_a_peer", 4),
            ]),
            peers: vec![],
        }),
        dataplane: Some(DataplaneStatus {
            program_id: 42,
            program_tag: "0123456789abcdef".into(),
            program_loaded_unix_s: 1_795_399_751,
            state_dir: "/sys/fs/bpf/xlb/eth0".into(),
            state_created_unix_s: 1_795_396_151,
            start: "adopted".into(),
        }),
        sync: Some(SyncStatus {
            mode: "unicast".into(),
            port: 8849,
            epoch: 1,
            peers: vec![
                SyncPeerStatus {
                    address: "198.18.0.3".into(),
                    last_heard_ms_ago: Some(250),
                    messages: 9,
                    flows: 90,
                },
                SyncPeerStatus {
                    address: "198.18.0.4".into(),
                    last_heard_ms_ago: None,
                    messages: 0,
                    flows: 0,
                },
            ],
            counters: counters(&[
                ("messages_sent", 11),
                ("dropped_bad_mac", 2),
                ("flows_installed", 88),
                ("events_lost", 5),
                ("events_reported", 60),
                ("send_errors", 1),
            ]),
            lag_us_median: Some(1500),
            lag_us_p99: None,
        }),
    };
    Snapshot {
        status,
        checks: vec![
            CheckTally {
                vip: "web4".into(),
                backend: "backend-1".into(),
                tally: tally(&[(true, 400), (true, 900), (true, 30_000)]),
            },
            CheckTally {
                vip: "web4".into(),
                backend: "backend-2".into(),
                tally: tally(&[(true, 700), (false, 3_000_000)]),
            },
        ],
        tables: Some(TablesCount {
            flows: TableUse {
                entries: 49,
                capacity: 262_144,
            },
            nat_reverse: TableUse {
                entries: 0,
                capacity: 262_144,
            },
            took: Duration::from_micros(2500),
            age: Duration::from_secs(3),
        }),
        build: BuildInfo {
            version: "0.1.0".into(),
            commit: "a3f7fb2".into(),
        },
    }
}

#[test]
fn a_known_snapshot_renders_its_counters_summed_and_labelled_by_name() {
    let text = render(sample());
    let m = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    fn b(name: &str) -> [(&str, &str); 2] {
        [("vip", "web4"), ("backend", name)]
    }
    assert_eq!(m.value("xlb_backend_packets_total", &b("backend-1")), 120.0);
    assert_eq!(m.value("xlb_backend_bytes_total", &b("backend-3")), 9_500.0);
    assert_eq!(m.value("xlb_vip_packets_total", &[("vip", "web4")]), 300.0);
    assert_eq!(m.value("xlb_vip_bytes_total", &[("vip", "web4")]), 30_000.0);
    assert_eq!(m.value("xlb_received_packets_total", &[]), 1000.0);
    assert_eq!(
        m.value("xlb_packets_total", &[("verdict", "forward")]),
        300.0
    );
    assert_eq!(
        m.value("xlb_dropped_packets_total", &[("reason", "no_backend")]),
        7.0
    );
    assert_eq!(
        m.value("xlb_conntrack_packets_total", &[("event", "hit")]),
        250.0
    );
    assert_eq!(m.value("xlb_nat_no_neighbour_packets_total", &[]), 2.0);
    assert_eq!(m.value("xlb_nat_reply_packets_total", &[]), 0.0);
    assert_eq!(m.value("xlb_nat_reverse_restored_packets_total", &[]), 3.0);
    assert!(
        m.named("xlb_conntrack_packets_total")
            .iter()
            .all(|s| !s.labels["event"].starts_with("nat_")),
        "NAT counters have families of their own"
    );
    assert_eq!(
        m.value("xlb_conntrack_entries", &[("table", "flows")]),
        49.0
    );
    assert_eq!(
        m.value("xlb_conntrack_capacity", &[("table", "nat_reverse")]),
        262_144.0
    );
    assert_eq!(m.value("xlb_conntrack_count_duration_seconds", &[]), 0.0025);
    assert_eq!(m.value("xlb_forwarding", &[]), 1.0);
    assert_eq!(m.value("xlb_vip_forwarding", &[("vip", "web4")]), 1.0);
    assert_eq!(m.value("xlb_vip_usable_backends", &[("vip", "web4")]), 2.0);
    assert_eq!(m.value("xlb_vip_serving_tier", &[("vip", "web4")]), 1.0);
    assert_eq!(
        m.value("xlb_vip_configured_backends", &[("vip", "web4")]),
        3.0
    );
    assert_eq!(m.value("xlb_vip_announced", &[("vip", "web4")]), 1.0);
    assert_eq!(
        m.value(
            "xlb_build_info",
            &[
                ("version", "0.1.0"),
                ("commit", "a3f7fb2"),
                ("program_tag", "0123456789abcdef")
            ]
        ),
        1.0
    );
    assert_eq!(
        m.value("xlb_dataplane_state_created_timestamp_seconds", &[]),
        1_795_396_151.0
    );
    assert_eq!(
        m.value(
            "xlb_vip_info",
            &[
                ("vip", "web4"),
                ("address", "198.18.0.100"),
                ("port", "80"),
                ("protocol", "tcp"),
                ("mode", "dsr"),
                ("affinity", "flow")
            ]
        ),
        1.0
    );
}

#[test]
fn backend_states_weights_and_health_are_one_series_each() {
    let m = parse(&render(sample())).unwrap();
    fn b(name: &str) -> [(&str, &str); 2] {
        [("vip", "web4"), ("backend", name)]
    }
    // A state set: exactly one state is 1 per backend.
    for (name, want) in [("backend-1", "active"), ("backend-2", "down")] {
        for st in BackendState::ALL {
            let mut l = b(name).to_vec();
            l.push(("state", st.as_str()));
            let v = m.value("xlb_backend_state", &l);
            assert_eq!(v, f64::from(st.as_str() == want), "{name} {}", st.as_str());
        }
    }
    assert_eq!(m.value("xlb_backend_usable", &b("backend-1")), 1.0);
    assert_eq!(m.value("xlb_backend_usable", &b("backend-2")), 0.0);
    assert_eq!(m.value("xlb_backend_weight", &b("backend-2")), 0.0);
    assert_eq!(
        m.value("xlb_backend_configured_weight", &b("backend-2")),
        2.0
    );
    assert_eq!(m.value("xlb_backend_tier", &b("backend-1")), 0.0);
    assert_eq!(m.value("xlb_backend_tier", &b("backend-3")), 1.0);
    assert_eq!(m.value("xlb_backend_health_up", &b("backend-1")), 1.0);
    assert_eq!(m.value("xlb_backend_health_up", &b("backend-2")), 0.0);
    // Configured and effective weight side by side; the feedback percent
    // only for the backend that has feedback.
    assert_eq!(m.value("xlb_backend_weight", &b("backend-3")), 2.0);
    assert_eq!(
        m.value("xlb_backend_effective_weight", &b("backend-3")),
        100.0
    );
    assert_eq!(
        m.value("xlb_backend_effective_weight", &b("backend-1")),
        2.0
    );
    assert_eq!(
        m.value("xlb_backend_feedback_percent", &b("backend-3")),
        50.0
    );
    assert_eq!(m.named("xlb_backend_feedback_percent").len(), 1);
    assert!(
        !m.named("xlb_backend_health_up")
            .iter()
            .any(|s| s.labels["backend"] == "backend-3"),
        "an unchecked backend has no health series"
    );
    // The removed backend-2 shares the name of the configured one: shown
    // once, as the configured one.
    assert_eq!(m.value("xlb_backend_packets_total", &b("backend-2")), 80.0);
    assert_eq!(
        m.value(
            "xlb_backend_info",
            &[
                ("vip", "web4"),
                ("backend", "backend-3"),
                ("address", "198.18.0.13"),
                ("source", "runtime")
            ]
        ),
        1.0,
        "a backend added with `xlb backend add` is labelled so"
    );
    assert_eq!(
        m.value(
            "xlb_backend_info",
            &[
                ("vip", "web4"),
                ("backend", "backend-2"),
                ("address", "198.18.0.12"),
                ("source", "file")
            ]
        ),
        1.0
    );
}

#[test]
fn health_checks_are_counted_per_backend_and_timed_per_vip() {
    let m = parse(&render(sample())).unwrap();
    let r = |backend: &str, result: &str| {
        m.value(
            "xlb_health_checks_total",
            &[("vip", "web4"), ("backend", backend), ("result", result)],
        )
    };
    assert_eq!(
        (r("backend-1", "passed"), r("backend-1", "failed")),
        (3.0, 0.0)
    );
    assert_eq!(
        (r("backend-2", "passed"), r("backend-2", "failed")),
        (1.0, 1.0)
    );
    let vip = [("vip", "web4")];
    assert_eq!(
        m.value("xlb_health_check_duration_seconds_count", &vip),
        5.0
    );
    let sum = m.value("xlb_health_check_duration_seconds_sum", &vip);
    assert!((sum - 3.0320).abs() < 1e-9, "{sum}");
    // Cumulative buckets: 400 µs and 700 µs under 1 ms, 900 µs too; 30 ms
    // under 50 ms; 3 s only in +Inf.
    let le = |bound: &str| {
        m.value(
            "xlb_health_check_duration_seconds_bucket",
            &[("vip", "web4"), ("le", bound)],
        )
    };
    assert_eq!(le("0.0005"), 1.0);
    assert_eq!(le("0.001"), 3.0);
    assert_eq!(le("0.025"), 3.0);
    assert_eq!(le("0.05"), 4.0);
    assert_eq!(le("2.5"), 4.0);
    assert_eq!(le("+Inf"), 5.0);
    assert_eq!(
        m.named("xlb_health_check_duration_seconds_bucket").len(),
        DURATION_BOUNDS_S.len() + 1
    );
    assert_eq!(
        m.family_type("xlb_health_check_duration_seconds"),
        Some("histogram")
    );
}

#[test]
fn vrrp_states_and_adverts_by_reason() {
    let m = parse(&render(sample())).unwrap();
    let g = [("vrid", "51"), ("family", "ipv4")];
    let state = |s: &str| {
        let mut l = g.to_vec();
        l.push(("state", s));
        m.value("xlb_vrrp_state", &l)
    };
    assert_eq!(
        [
            state("init"),
            state("backup"),
            state("master"),
            state("fault")
        ],
        [0.0, 0.0, 1.0, 0.0]
    );
    assert_eq!(m.value("xlb_vrrp_priority", &g), 90.0);
    assert_eq!(m.value("xlb_vrrp_configured_priority", &g), 100.0);
    assert_eq!(m.value("xlb_vrrp_adverts_sent_total", &g), 40.0);
    assert_eq!(m.value("xlb_vrrp_adverts_received_total", &g), 3.0);
    assert_eq!(
        m.value("xlb_vrrp_last_transition_timestamp_seconds", &g),
        1_795_399_751.25
    );
    assert_eq!(m.value("xlb_vrrp_tracking_ok", &[]), 0.0);
    assert_eq!(m.value("xlb_vrrp_adverts_accepted_total", &[]), 3.0);
    assert_eq!(
        m.value(
            "xlb_vrrp_adverts_mismatched_total",
            &[("field", "addresses")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "xlb_vrrp_adverts_mismatched_total",
            &[("field", "interval")]
        ),
        0.0
    );
    assert_eq!(
        m.value(
            "xlb_vrrp_adverts_rejected_total",
            &[("reason", "bad_checksum")]
        ),
        2.0
    );
    assert_eq!(
        m.value(
            "xlb_vrrp_adverts_rejected_total",
            &[("reason", "not_a_peer")]
        ),
        4.0
    );
    assert_eq!(m.named("xlb_vrrp_adverts_rejected_total").len(), 2);
}

#[test]
fn sync_counters_go_to_families_by_their_prefix() {
    let m = parse(&render(sample())).unwrap();
    assert_eq!(
        m.value("xlb_sync_messages_total", &[("event", "sent")]),
        11.0
    );
    assert_eq!(
        m.value("xlb_sync_messages_dropped_total", &[("reason", "bad_mac")]),
        2.0
    );
    assert_eq!(
        m.value("xlb_sync_flows_total", &[("event", "installed")]),
        88.0
    );
    assert_eq!(m.value("xlb_sync_reports_total", &[("event", "lost")]), 5.0);
    assert_eq!(
        m.value("xlb_sync_reports_total", &[("event", "reported")]),
        60.0
    );
    assert_eq!(
        m.value("xlb_sync_events_total", &[("event", "send_errors")]),
        1.0
    );
    assert_eq!(
        m.value("xlb_sync_peer_messages_total", &[("peer", "198.18.0.3")]),
        9.0
    );
    assert_eq!(
        m.value("xlb_sync_peer_flows_total", &[("peer", "198.18.0.4")]),
        0.0
    );
    assert_eq!(
        m.value(
            "xlb_sync_peer_last_heard_seconds",
            &[("peer", "198.18.0.3")]
        ),
        0.25
    );
    assert_eq!(
        m.named("xlb_sync_peer_last_heard_seconds").len(),
        1,
        "never heard"
    );
    assert_eq!(
        m.value("xlb_sync_lag_seconds", &[("quantile", "0.5")]),
        0.0015
    );
    assert_eq!(m.named("xlb_sync_lag_seconds").len(), 1);
}

#[test]
fn every_name_is_prefixed_and_every_counter_ends_in_total() {
    let m = parse(&render(sample())).unwrap();
    assert!(m.types.len() > 40, "{} families", m.types.len());
    for (family, kind) in &m.types {
        assert!(family.starts_with("xlb_"), "{family}");
        // The parser took only `<family>_total` samples for a counter; the
        // family itself must not say it again.
        assert!(!family.ends_with("_total"), "{family}");
        if kind == "counter" {
            assert!(!m.named(&format!("{family}_total")).is_empty(), "{family}");
        }
    }
}

#[test]
fn sections_the_node_lacks_leave_no_family() {
    let mut s = sample();
    s.status.vrrp = None;
    s.status.sync = None;
    s.status.dataplane = None;
    s.status.vips[0].announce = None;
    s.checks.clear();
    s.tables = None;
    let m = parse(&render(s)).unwrap();
    for gone in [
        "xlb_vrrp_",
        "xlb_sync_",
        "xlb_dataplane_",
        "xlb_vip_announced",
        "xlb_health_check",
        "xlb_conntrack_entries",
    ] {
        assert!(
            !m.types.iter().any(|(f, _)| f.starts_with(gone)),
            "{gone}: {:?}",
            m.types
        );
    }
    assert_eq!(
        m.value(
            "xlb_build_info",
            &[
                ("version", "0.1.0"),
                ("commit", "a3f7fb2"),
                ("program_tag", "none")
            ]
        ),
        1.0
    );
}

#[test]
fn odd_backend_names_are_escaped() {
    let mut s = sample();
    s.status.vips[0].backends[0].name = "rack \"A\" \\ 1".into();
    let m = parse(&render(s)).unwrap();
    assert_eq!(
        m.value(
            "xlb_backend_packets_total",
            &[("vip", "web4"), ("backend", "rack \"A\" \\ 1")]
        ),
        120.0
    );
}

/// The metrics reference in docs/operations.md names every family the
/// full sample renders, and nothing else.
#[test]
fn the_metrics_reference_lists_every_family() {
    const DOCS: &str = include_str!("../../../docs/operations.md");
    let reference = DOCS
        .split("### Metrics reference")
        .nth(1)
        .expect("a \"### Metrics reference\" section in docs/operations.md");
    let reference = reference.split("\n### ").next().unwrap_or(reference);
    let documented: std::collections::BTreeSet<String> = reference
        .lines()
        .filter_map(|l| l.strip_prefix("| `xlb_"))
        .filter_map(|l| l.split('`').next())
        .map(|n| format!("xlb_{n}"))
        .collect();
    let m = parse(&render(sample())).unwrap();
    let rendered: std::collections::BTreeSet<String> = m
        .types
        .iter()
        .map(|(family, kind)| match kind.as_str() {
            "counter" => format!("{family}_total"),
            "info" => format!("{family}_info"),
            _ => family.clone(),
        })
        .collect();
    assert_eq!(documented, rendered);
}

// ---------------------------------------------------------------------------
// The responder.

#[test]
fn only_get_and_head_of_metrics_are_answered() {
    let l = Limits::DEFAULT;
    let asked = |req: &str| server::parse(req.as_bytes(), &l);
    assert_eq!(
        asked("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
        Asked::Metrics { head: false }
    );
    assert_eq!(
        asked("GET /metrics?target=x HTTP/1.1\r\n\r\n"),
        Asked::Metrics { head: false }
    );
    assert_eq!(
        asked("HEAD /metrics HTTP/1.0\r\n\r\n"),
        Asked::Metrics { head: true }
    );
    assert_eq!(asked("GET /metrics HTTP/1.1\r\nHost: x\r\n"), Asked::More);
    let status = |req: &str| match asked(req) {
        Asked::Refused(r) => (r.status, r.allow),
        other => panic!("{req:?}: {other:?}"),
    };
    assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), ("404 Not Found", false));
    assert_eq!(
        status("GET /metricsx HTTP/1.1\r\n\r\n"),
        ("404 Not Found", false)
    );
    assert_eq!(
        status("POST /metrics HTTP/1.1\r\n\r\n"),
        ("405 Method Not Allowed", true)
    );
    assert_eq!(
        status("\x01\x02 nonsense\r\n\r\n"),
        ("400 Bad Request", false)
    );
    let big = format!("GET /metrics HTTP/1.1\r\nX: {}", "a".repeat(l.max_request));
    assert_eq!(status(&big), ("431 Request Header Fields Too Large", false));
    let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
    assert_eq!(
        status(&format!("GET /metrics HTTP/1.1\r\n{many}\r\n")),
        ("431 Request Header Fields Too Large", false)
    );
}

/// A server on loopback answering with `page`; its address.
async fn start(page: server::Page, limits: Limits) -> std::net::SocketAddr {
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(listener, page, limits));
    addr
}

/// Sends `req`; everything the server wrote before closing.
async fn exchange(addr: std::net::SocketAddr, req: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A server that closes at once may reset the connection: what was
    // read until then is the answer.
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("the server closes after answering");
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_over_loopback_get_the_page_and_errors_get_500() {
    let page: server::Page = std::sync::Arc::new(|| Ok(render(sample())));
    let addr = start(page, Limits::DEFAULT).await;
    let got = exchange(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, body) = got.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains(&format!("Content-Type: {CONTENT_TYPE}")),
        "{head}"
    );
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    assert!(head.contains("Connection: close"), "{head}");
    parse(body).unwrap();
    let head_only = exchange(addr, "HEAD /metrics HTTP/1.1\r\n\r\n").await;
    assert!(head_only.ends_with("\r\n\r\n"), "{head_only}");
    assert!(
        exchange(addr, "GET /x HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404 ")
    );

    let failing: server::Page = std::sync::Arc::new(|| Err(anyhow::anyhow!("maps gone")));
    let addr = start(failing, Limits::DEFAULT).await;
    let got = exchange(addr, "GET /metrics HTTP/1.1\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 500 "), "{got}");
    assert!(got.ends_with("maps gone\n"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_and_extra_connections_are_closed() {
    use tokio::io::AsyncReadExt as _;
    let limits = Limits {
        read_timeout: Duration::from_millis(300),
        max_connections: 1,
        ..Limits::DEFAULT
    };
    let page: server::Page = std::sync::Arc::new(|| Ok("# EOF\n".to_owned()));
    let addr = start(page, limits).await;
    // The silent one holds the only slot until its read timeout.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let extra = exchange(addr, "GET /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!(
        extra, "",
        "a connection over the limit is closed unanswered"
    );
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut buf))
        .await
        .expect("the silent client is dropped")
        .unwrap();
    assert!(buf.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Its slot is free again.
    let again = exchange(addr, "GET /metrics HTTP/1.1\r\n\r\n").await;
    assert!(again.starts_with("HTTP/1.1 200 OK"), "{again}");
}
