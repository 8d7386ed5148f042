//! `xlb status --json` is documented key by key in docs/operations.md: a
//! key the code adds without documenting it, or a documented example that
//! no longer parses, fails here.

use std::collections::BTreeSet;

use serde_json::Value;

use super::status::*;

const DOCS: &str = include_str!("../../../docs/operations.md");

/// Maps whose keys are counter names (documented with the counters).
const COUNTER_MAPS: [&str; 5] = [
    "global",
    "drops",
    "conntrack",
    "vrrp.counters",
    "sync.counters",
];

fn paths(v: &Value, at: &str, out: &mut BTreeSet<String>) {
    if COUNTER_MAPS.contains(&at) {
        out.insert(at.to_owned());
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                out.insert(p.clone());
                paths(v, &p, out);
            }
        }
        Value::Array(a) => {
            for v in a {
                paths(v, &format!("{at}[]"), out);
            }
        }
        _ => {}
    }
}

/// The fenced `json` block of the `xlb status --json` section.
fn example() -> &'static str {
    let from = DOCS
        .find("### `xlb status --json`")
        .expect("a `xlb status --json` section in docs/operations.md");
    let block = &DOCS[from..];
    let start = block.find("```json\n").expect("a json example") + "```json\n".len();
    &block[start..start + block[start..].find("```").expect("closed")]
}

/// A status with every optional part present.
fn everything() -> Status {
    let mut s: Status = serde_json::from_str(example()).expect("the docs example parses");
    let b = &mut s.vips[0].backends[0];
    b.weight_override = Some(5);
    b.health = Some(HealthStatus {
        check: "http GET :80/ expect 200-299".into(),
        state: Health::Up,
        last_ok: Some(true),
        last_detail: Some("HTTP 200".into()),
        last_latency_us: Some(600),
        consecutive: 3,
        since_change_s: 12,
    });
    b.feedback = Some(FeedbackStatus {
        source: "agent".into(),
        percent: 25,
        wanted_percent: Some(25),
        last: Some("25%".into()),
        smoothed_rtt_us: Some(900),
        changes: 1,
        changed_ago_s: Some(3),
        bad_replies: 0,
        unanswered: 0,
    });
    s.vips[0].announce = Some(AnnounceStatus {
        announced: true,
        interface: "lo".into(),
        detail: "announced".into(),
    });
    s.vrrp = Some(super::samples::vrrp_master());
    s.sync = Some(SyncStatus {
        peers: vec![SyncPeerStatus::default()],
        lag_us_median: Some(1),
        lag_us_p99: Some(1),
        ..SyncStatus::default()
    });
    s
}

#[test]
fn the_documented_example_is_what_this_version_says() {
    let s: Status = serde_json::from_str(example()).expect("the docs example parses");
    assert_eq!(s.version, STATUS_VERSION);
    // Nothing in the example that the schema does not have.
    let mut documented = BTreeSet::new();
    paths(
        &serde_json::from_str(example()).unwrap(),
        "",
        &mut documented,
    );
    let mut real = BTreeSet::new();
    paths(&serde_json::to_value(&s).unwrap(), "", &mut real);
    assert_eq!(documented, real);
}

#[test]
fn every_key_is_in_the_reference() {
    let mut all = BTreeSet::new();
    paths(&serde_json::to_value(everything()).unwrap(), "", &mut all);
    let from = DOCS.find("### `xlb status --json`").unwrap();
    let section = &DOCS[from..];
    let section = &section[..section[4..].find("\n## ").map_or(section.len(), |i| i + 4)];
    let missing: Vec<&String> = all
        .iter()
        .filter(|p| !section.contains(&format!("`{p}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "undocumented keys of xlb status --json: {missing:?}"
    );
}

#[test]
fn the_documented_text_is_the_render_of_the_documented_json() {
    let s: Status = serde_json::from_str(example()).unwrap();
    let from = DOCS.find("### `xlb status --json`").unwrap();
    let section = &DOCS[from..];
    let start = section.find("```text\n").expect("a text rendering") + "```text\n".len();
    let text = &section[start..start + section[start..].find("```").unwrap()];
    assert_eq!(text, s.render());
}
