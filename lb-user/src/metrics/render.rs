//! A [`Snapshot`] as OpenMetrics text. The names, types and labels here
//! are what `docs/operations.md` documents and the alert rules there use:
//! change them together.
//!
//! Families are emitted only when they have samples (no VRRP family
//! without `[vrrp]`). Counters get `_total` from the encoder.

use std::collections::HashSet;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet, text},
    metrics::MetricType,
    registry::{Registry, Unit},
};

use super::Snapshot;
use crate::{
    api::{BackendState, Health, SyncStatus, VrrpStatus},
    health::{DURATION_BOUNDS_S, Tally},
    vrrp::state::State as VrrpState,
};

/// What `GET /metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The connection-table counters that are NAT's (the rest are the
/// connection table's own events).
const NAT_REPLY: &str = "nat_reply";
const NAT_NO_NEIGH: &str = "nat_no_neigh";
const NAT_REVERSE_RESTORED: &str = "nat_reverse_restored";

/// The snapshot as OpenMetrics text, `# EOF` included.
pub fn render(snapshot: Snapshot) -> String {
    let mut registry = Registry::with_prefix("xlb");
    registry.register_collector(Box::new(Render(snapshot)));
    let mut out = String::new();
    // Writing into a String fails only if an encoder does, which ours do
    // not: label values are escaped, numbers always format.
    text::encode(&mut out, &registry).expect("encoding into a String");
    out
}

#[derive(Debug)]
struct Render(Snapshot);

type Labels = Vec<(&'static str, String)>;

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}

/// One family: its descriptor, then a sample per row (none: nothing at all).
struct Family<'e, 'a> {
    enc: &'e mut DescriptorEncoder<'a>,
}

impl Family<'_, '_> {
    fn write<V>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        kind: MetricType,
        rows: Vec<(Labels, V)>,
        sample: impl Fn(&mut MetricEncoder, &V) -> std::fmt::Result,
    ) -> std::fmt::Result {
        if rows.is_empty() {
            return Ok(());
        }
        let mut m = self.enc.encode_descriptor(name, help, unit, kind)?;
        for (l, v) in &rows {
            if l.is_empty() {
                sample(&mut m, v)?;
            } else {
                sample(&mut m.encode_family(l)?, v)?;
            }
        }
        Ok(())
    }

    fn counter(&mut self, name: &str, help: &str, rows: Vec<(Labels, u64)>) -> std::fmt::Result {
        self.write(name, help, None, MetricType::Counter, rows, |m, v| {
            m.encode_counter::<NoLabelSet, _, f64>(v, None)
        })
    }

    fn gauge(&mut self, name: &str, help: &str, rows: Vec<(Labels, i64)>) -> std::fmt::Result {
        self.write(name, help, None, MetricType::Gauge, rows, |m, v| {
            m.encode_gauge(v)
        })
    }

    fn seconds(&mut self, name: &str, help: &str, rows: Vec<(Labels, f64)>) -> std::fmt::Result {
        self.write(
            name,
            help,
            Some(&Unit::Seconds),
            MetricType::Gauge,
            rows,
            |m, v| m.encode_gauge(v),
        )
    }

    fn info(&mut self, name: &str, help: &str, rows: Vec<Labels>) -> std::fmt::Result {
        // An info's labels are its value, not a family's.
        let rows = rows.into_iter().map(|l| (Labels::new(), l)).collect();
        self.write(name, help, None, MetricType::Info, rows, |m, l: &Labels| {
            m.encode_info(l)
        })
    }
}

impl Collector for Render {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let mut f = Family { enc: &mut enc };
        let s = &self.0;
        node(&mut f, s)?;
        vips(&mut f, s)?;
        backends(&mut f, s)?;
        checks(&mut f, s)?;
        conntrack(&mut f, s)?;
        if let Some(v) = &s.status.vrrp {
            vrrp(&mut f, v)?;
        }
        if let Some(sy) = &s.status.sync {
            sync(&mut f, sy)?;
        }
        Ok(())
    }
}

fn node(f: &mut Family, s: &Snapshot) -> std::fmt::Result {
    let st = &s.status;
    let tag = st
        .dataplane
        .as_ref()
        .map_or("none", |d| d.program_tag.as_str());
    f.info(
        "build",
        "The xlb binary: version, git commit, and the tag of the attached XDP program.",
        vec![labels([
            ("version", &s.build.version),
            ("commit", &s.build.commit),
            ("program_tag", tag),
        ])],
    )?;
    f.gauge(
        "forwarding",
        "1 while the data plane is switched on and some VIP is not on VRRP standby.",
        vec![(Labels::new(), flag(st.forwarding))],
    )?;
    if let Some(d) = &st.dataplane {
        f.seconds(
            "dataplane_program_loaded_timestamp",
            "When the attached XDP program was loaded (Unix time).",
            vec![(Labels::new(), d.program_loaded_unix_s as f64)],
        )?;
        f.seconds(
            "dataplane_state_created_timestamp",
            "When the pinned state was created (Unix time): the data plane's counters and \
             the connection table go back to then.",
            vec![(Labels::new(), d.state_created_unix_s as f64)],
        )?;
    }
    let rx = st.global.get("rx").copied();
    f.counter(
        "received_packets",
        "Packets the XDP program saw, summed over CPUs.",
        rx.map(|v| (Labels::new(), v)).into_iter().collect(),
    )?;
    f.counter(
        "packets",
        "Packets by verdict: passed to the kernel, forwarded to a backend, dropped.",
        st.global
            .iter()
            .filter(|(k, _)| k.as_str() != "rx")
            .map(|(k, v)| (labels([("verdict", k)]), *v))
            .collect(),
    )?;
    f.counter(
        "dropped_packets",
        "Dropped packets by reason.",
        st.drops
            .iter()
            .map(|(k, v)| (labels([("reason", k)]), *v))
            .collect(),
    )
}

fn vips(f: &mut Family, s: &Snapshot) -> std::fmt::Result {
    let vips = &s.status.vips;
    let by_vip = |value: &dyn Fn(&crate::api::VipStatus) -> i64| -> Vec<(Labels, i64)> {
        vips.iter()
            .map(|v| (labels([("vip", &v.name)]), value(v)))
            .collect()
    };
    f.info(
        "vip",
        "A VIP of the configuration: its address, port, protocol, mode and affinity.",
        vips.iter()
            .map(|v| {
                labels([
                    ("vip", &v.name),
                    ("address", &v.address),
                    ("port", &v.port.to_string()),
                    ("protocol", &v.protocol),
                    ("mode", &v.mode),
                    ("affinity", &v.affinity),
                ])
            })
            .collect(),
    )?;
    f.counter(
        "vip_packets",
        "Packets to the VIP, summed over CPUs.",
        vips.iter()
            .map(|v| (labels([("vip", &v.name)]), v.packets))
            .collect(),
    )?;
    f.counter(
        "vip_bytes",
        "Bytes to the VIP (the frames' length), summed over CPUs.",
        vips.iter()
            .map(|v| (labels([("vip", &v.name)]), v.bytes))
            .collect(),
    )?;
    f.gauge(
        "vip_forwarding",
        "1 while this node forwards the VIP; 0 while it is on VRRP standby.",
        by_vip(&|v| flag(v.forwarding)),
    )?;
    f.gauge(
        "vip_usable_backends",
        "Backends in the VIP's Maglev table now; 0 with backends configured means new \
         connections are dropped (as no_backend).",
        by_vip(&|v| v.usable_backends as i64),
    )?;
    f.gauge(
        "vip_serving_tier",
        "The highest backend tier taking new flows: 0 while the primaries have min_usable \
         usable backends, higher while backup tiers have joined. VIPs with backends only.",
        vips.iter()
            .filter_map(|v| {
                let top = v.serving_tiers.last()?;
                Some((labels([("vip", &v.name)]), i64::from(*top)))
            })
            .collect(),
    )?;
    f.gauge(
        "vip_configured_backends",
        "Backends the configuration gives the VIP (removed ones still finishing their flows \
         not counted).",
        by_vip(&|v| {
            v.backends
                .iter()
                .filter(|b| b.state != BackendState::Removed)
                .count() as i64
        }),
    )?;
    f.gauge(
        "vip_announced",
        "With [announce]: 1 while the VIP's address is announced to the routing daemon.",
        vips.iter()
            .filter_map(|v| {
                let a = v.announce.as_ref()?;
                Some((labels([("vip", &v.name)]), flag(a.announced)))
            })
            .collect(),
    )
}

/// Every (VIP, backend) once: a removed backend that shares its name with
/// a configured one (its address changed) is left out; its traffic is in
/// the VIP's counters.
fn unique_backends(s: &Snapshot) -> Vec<(&str, &crate::api::BackendStatus)> {
    let mut seen = HashSet::new();
    s.status
        .vips
        .iter()
        .flat_map(|v| v.backends.iter().map(move |b| (v.name.as_str(), b)))
        .filter(|(v, b)| seen.insert((*v, b.name.as_str())))
        .collect()
}

fn backends(f: &mut Family, s: &Snapshot) -> std::fmt::Result {
    let all = unique_backends(s);
    let key = |v: &str, b: &crate::api::BackendStatus| labels([("vip", v), ("backend", &b.name)]);
    let rows = |value: &dyn Fn(&crate::api::BackendStatus) -> i64| -> Vec<(Labels, i64)> {
        all.iter().map(|(v, b)| (key(v, b), value(b))).collect()
    };
    f.info(
        "backend",
        "A backend of a VIP, its address, and where it came from (source: file, or runtime \
         for `xlb backend add`).",
        all.iter()
            .map(|(v, b)| {
                labels([
                    ("vip", v),
                    ("backend", &b.name),
                    ("address", &b.address),
                    ("source", b.source.as_str()),
                ])
            })
            .collect(),
    )?;
    f.counter(
        "backend_packets",
        "Packets forwarded to the backend, summed over CPUs.",
        all.iter().map(|(v, b)| (key(v, b), b.packets)).collect(),
    )?;
    f.counter(
        "backend_bytes",
        "Bytes forwarded to the backend (the frames' length as received), summed over CPUs.",
        all.iter().map(|(v, b)| (key(v, b), b.bytes)).collect(),
    )?;
    f.gauge(
        "backend_state",
        "1 for the backend's state (active, backup, draining, unresolved, down, pending, \
         removed; see Backend states), 0 for the others.",
        all.iter()
            .flat_map(|(v, b)| {
                BackendState::ALL.iter().map(move |st| {
                    (
                        labels([("vip", v), ("backend", &b.name), ("state", st.as_str())]),
                        flag(b.state == *st),
                    )
                })
            })
            .collect(),
    )?;
    f.gauge(
        "backend_usable",
        "1 while the backend is in its VIP's Maglev table (state active) and gets new flows.",
        rows(&|b| flag(b.state == BackendState::Active)),
    )?;
    f.gauge(
        "backend_weight",
        "The weight in use: the configuration's, or a runtime `xlb backend weight`; 0 when \
         drained or removed.",
        rows(&|b| i64::from(b.weight)),
    )?;
    f.gauge(
        "backend_configured_weight",
        "The weight in the configuration file.",
        rows(&|b| i64::from(b.config_weight)),
    )?;
    f.gauge(
        "backend_tier",
        "The backend's backup tier (0: primary); see vip_serving_tier for the tiers \
         taking new flows.",
        rows(&|b| i64::from(b.tier)),
    )?;
    f.gauge(
        "backend_effective_weight",
        "The member weight the Maglev table is built with: the weight in use, or with \
         [vip.feedback] that weight times the effective percent; 0 when drained or removed.",
        rows(&|b| i64::from(b.effective_weight)),
    )?;
    f.gauge(
        "backend_feedback_percent",
        "Backends of VIPs with [vip.feedback] only: the effective percent their weight is \
         scaled by (from min_weight_percent to 100).",
        all.iter()
            .filter_map(|(v, b)| {
                let fb = b.feedback.as_ref()?;
                Some((key(v, b), i64::from(fb.percent)))
            })
            .collect(),
    )?;
    f.gauge(
        "backend_health_up",
        "Health-checked backends only: 1 while the checks say up, 0 while down or before \
         the first result.",
        all.iter()
            .filter_map(|(v, b)| {
                let h = b.health.as_ref()?;
                Some((key(v, b), flag(h.state == Health::Up)))
            })
            .collect(),
    )
}

fn checks(f: &mut Family, s: &Snapshot) -> std::fmt::Result {
    f.counter(
        "health_checks",
        "Health checks done, by result (passed, failed).",
        s.checks
            .iter()
            .flat_map(|c| {
                [("passed", c.tally.passed), ("failed", c.tally.failed)]
                    .into_iter()
                    .map(|(result, n)| {
                        (
                            labels([("vip", &c.vip), ("backend", &c.backend), ("result", result)]),
                            n,
                        )
                    })
            })
            .collect(),
    )?;
    // Per VIP: per backend would be a dozen series per backend.
    let mut per_vip: Vec<(&str, Tally)> = Vec::new();
    for c in &s.checks {
        match per_vip.iter_mut().find(|(v, _)| *v == c.vip) {
            Some((_, t)) => t.add(&c.tally),
            None => per_vip.push((&c.vip, c.tally.clone())),
        }
    }
    let rows = per_vip
        .into_iter()
        .map(|(v, t)| (labels([("vip", v)]), t))
        .collect();
    f.write(
        "health_check_duration",
        "How long the VIP's health checks took, from the start of a check to its result \
         or its timeout.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
        rows,
        |m, t: &Tally| {
            let buckets: Vec<(f64, u64)> = DURATION_BOUNDS_S
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(t.buckets.iter().copied())
                .collect();
            m.encode_histogram::<NoLabelSet>(
                t.duration_sum_us as f64 / 1e6,
                t.count(),
                &buckets,
                None,
            )
        },
    )
}

fn conntrack(f: &mut Family, s: &Snapshot) -> std::fmt::Result {
    let ct = &s.status.conntrack;
    f.counter(
        "conntrack_packets",
        "Connection-table events, one per packet: hit, miss, insert, refused (over \
         new_flows_per_cpu), expired, stale_backend, miss_midflow, icmp_to_flow.",
        ct.iter()
            // NAT's events have families of their own.
            .filter(|(k, _)| !k.starts_with("nat_"))
            .map(|(k, v)| (labels([("event", k)]), *v))
            .collect(),
    )?;
    let one = |name: &str| {
        ct.get(name)
            .map(|v| (Labels::new(), *v))
            .into_iter()
            .collect()
    };
    f.counter(
        "nat_reply_packets",
        "Replies from NAT backends rewritten back to the VIP.",
        one(NAT_REPLY),
    )?;
    f.counter(
        "nat_no_neighbour_packets",
        "NAT packets whose next hop the kernel had not resolved yet: passed to the kernel \
         to resolve it.",
        one(NAT_NO_NEIGH),
    )?;
    f.counter(
        "nat_reverse_restored_packets",
        "Packets of NAT flows whose reverse entry (NAT_REVERSE) the LRU had evicted while \
         their forward entry stayed: the entry was written again, so that the replies \
         that follow are translated.",
        one(NAT_REVERSE_RESTORED),
    )?;
    let Some(t) = &s.tables else {
        return Ok(());
    };
    let tables = [("flows", t.flows), ("nat_reverse", t.nat_reverse)];
    f.gauge(
        "conntrack_entries",
        "Entries in the connection tables (flows: FLOWS, nat_reverse: NAT_REVERSE), \
         counted by walking their keys at most every 10 s; idle entries stay until the \
         LRU reuses them.",
        tables
            .iter()
            .map(|(n, u)| (labels([("table", n)]), u.entries as i64))
            .collect(),
    )?;
    f.gauge(
        "conntrack_capacity",
        "Entries the connection tables hold ([conntrack] size).",
        tables
            .iter()
            .map(|(n, u)| (labels([("table", n)]), u.capacity as i64))
            .collect(),
    )?;
    f.seconds(
        "conntrack_count_duration",
        "How long the last walk over both connection tables took.",
        vec![(Labels::new(), t.took.as_secs_f64())],
    )?;
    f.seconds(
        "conntrack_count_age",
        "How old the entry counts are.",
        vec![(Labels::new(), t.age.as_secs_f64())],
    )
}

fn vrrp(f: &mut Family, v: &VrrpStatus) -> std::fmt::Result {
    let group = |g: &crate::api::VrrpGroupStatus| {
        labels([("vrid", &g.vrid.to_string()), ("family", &g.family)])
    };
    f.gauge(
        "vrrp_state",
        "1 for the VRRP group's state (init, backup, master, fault), 0 for the others.",
        v.groups
            .iter()
            .flat_map(|g| {
                VrrpState::ALL.iter().map(move |st| {
                    let mut l = group(g);
                    l.push(("state", st.as_str().to_owned()));
                    (l, flag(g.state == st.as_str()))
                })
            })
            .collect(),
    )?;
    f.gauge(
        "vrrp_priority",
        "The group's effective priority (configured minus the tracking penalty).",
        v.groups
            .iter()
            .map(|g| (group(g), i64::from(g.priority)))
            .collect(),
    )?;
    f.gauge(
        "vrrp_configured_priority",
        "The group's priority in the configuration.",
        v.groups
            .iter()
            .map(|g| (group(g), i64::from(g.configured_priority)))
            .collect(),
    )?;
    f.counter(
        "vrrp_adverts_sent",
        "Adverts this node sent for the group.",
        v.groups
            .iter()
            .map(|g| (group(g), g.adverts_sent))
            .collect(),
    )?;
    f.counter(
        "vrrp_adverts_received",
        "Adverts accepted for the group.",
        v.groups
            .iter()
            .map(|g| (group(g), g.adverts_received))
            .collect(),
    )?;
    f.seconds(
        "vrrp_last_transition_timestamp",
        "When the group last changed state (Unix time); absent before its first change.",
        v.groups
            .iter()
            .filter_map(|g| {
                let t = g.last_transition.as_ref()?;
                Some((group(g), t.at_unix_ms as f64 / 1e3))
            })
            .collect(),
    )?;
    f.gauge(
        "vrrp_tracking_ok",
        "1 while every tracked interface and address is fine; 0 puts the groups in fault.",
        vec![(Labels::new(), flag(v.tracking == "ok"))],
    )?;
    fn mismatch(k: &str) -> Option<&str> {
        k.strip_suffix("_mismatch")
    }
    f.counter(
        "vrrp_adverts_accepted",
        "Received VRRP packets accepted as adverts (of any group of this node).",
        v.counters
            .get("accepted")
            .map(|n| (Labels::new(), *n))
            .into_iter()
            .collect(),
    )?;
    f.counter(
        "vrrp_adverts_mismatched",
        "Accepted adverts whose addresses or interval differ from this node's group (a \
         misconfigured peer).",
        v.counters
            .iter()
            .filter_map(|(k, n)| {
                let field = match mismatch(k)? {
                    "address" => "addresses",
                    other => other,
                };
                Some((labels([("field", field)]), *n))
            })
            .collect(),
    )?;
    f.counter(
        "vrrp_adverts_rejected",
        "Received VRRP packets not accepted, by reason.",
        v.counters
            .iter()
            .filter(|(k, _)| k.as_str() != "accepted" && mismatch(k).is_none())
            .map(|(k, n)| (labels([("reason", k)]), *n))
            .collect(),
    )
}

/// Where one of the sync's counters goes: (family, label, value).
fn sync_counter(name: &str) -> (&'static str, &'static str, &str) {
    for (prefix, family, label) in [
        ("dropped_", "sync_messages_dropped", "reason"),
        ("messages_", "sync_messages", "event"),
        ("flows_", "sync_flows", "event"),
        ("events_", "sync_reports", "event"),
    ] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return (family, label, rest);
        }
    }
    ("sync_events", "event", name)
}

fn sync(f: &mut Family, s: &SyncStatus) -> std::fmt::Result {
    for (family, help) in [
        (
            "sync_messages",
            "Sync messages sent, received, and accepted (authentic, fresh, from a peer).",
        ),
        (
            "sync_messages_dropped",
            "Received sync messages dropped, by reason.",
        ),
        (
            "sync_flows",
            "Flows in sync messages: sent, received, installed, and not installed by reason.",
        ),
        (
            "sync_reports",
            "The data plane's flow reports to the control plane: reported, read, and lost \
             (the ring buffer was full: that flow reaches the peers only with the next refresh).",
        ),
        (
            "sync_events",
            "Other sync events: hellos received, neighbour probes, flows not sent, errors.",
        ),
    ] {
        let rows = s
            .counters
            .iter()
            .filter_map(|(k, v)| {
                let (fam, label, value) = sync_counter(k);
                (fam == family).then(|| (labels([(label, value)]), *v))
            })
            .collect();
        f.counter(family, help, rows)?;
    }
    let peer = |p: &crate::api::SyncPeerStatus| labels([("peer", &p.address)]);
    f.counter(
        "sync_peer_messages",
        "Messages accepted from the peer.",
        s.peers.iter().map(|p| (peer(p), p.messages)).collect(),
    )?;
    f.counter(
        "sync_peer_flows",
        "Flows in the messages accepted from the peer.",
        s.peers.iter().map(|p| (peer(p), p.flows)).collect(),
    )?;
    f.seconds(
        "sync_peer_last_heard",
        "Since the peer's last accepted message; absent while never heard.",
        s.peers
            .iter()
            .filter_map(|p| Some((peer(p), p.last_heard_ms_ago? as f64 / 1e3)))
            .collect(),
    )?;
    f.seconds(
        "sync_lag",
        "From a flow's first packet on this node to its entry leaving for the peers, over \
         the last reported flows: median and 99th percentile.",
        [("0.5", s.lag_us_median), ("0.99", s.lag_us_p99)]
            .into_iter()
            .filter_map(|(q, v)| Some((labels([("quantile", q)]), v? as f64 / 1e6)))
            .collect(),
    )
}
