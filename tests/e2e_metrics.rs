//! `[metrics]` end to end: a real Prometheus (Debian's package) scrapes the
//! real `xlb run` every second from inside the xlb node's namespace, while
//! the client sends HTTP traffic through the DSR topology. The per-backend
//! packet rates Prometheus computes must match what nftables counted
//! arriving at each backend, within a bound the run itself gives; a
//! backend whose nginx is stopped must show as down, and the example
//! alert rules of docs/operations.md, checked by promtool and loaded into
//! Prometheus, must see it. Needs root.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use xlb_testbed::config::{Backend, HealthCheck, Vip, XlbConfig};
use xlb_testbed::counting::{Hook, PacketCounter};
use xlb_testbed::prometheus::{self, Prometheus, Scrape, sample_time, sample_value};
use xlb_testbed::running::{require_root, wait_ready, xlb_exe};
use xlb_testbed::topology::{Topology, VIP_PORT, http_get};
use xlb_testbed::traffic::Traffic;

/// xlb's metrics and Prometheus's API, both on the xlb node's loopback.
const METRICS: &str = "127.0.0.1:9477";
const PROMETHEUS_WEB: &str = "127.0.0.1:9090";
const SCRAPE: Duration = Duration::from_secs(1);
/// How long the counted traffic runs (after a warm-up of a few scrapes).
const WARM_UP: Duration = Duration::from_secs(3);
const MEASURE: Duration = Duration::from_secs(10);
/// How often the test reads the backends' nftables counters.
const READ_EVERY: Duration = Duration::from_millis(100);
const BACKENDS: usize = 3;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// The alert rules of docs/operations.md, as an operator copies them.
fn documented_rules() -> String {
    const DOCS: &str = include_str!("../docs/operations.md");
    DOCS.split("### Example alert rules")
        .nth(1)
        .and_then(|s| s.split("```yaml\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("a yaml block under \"### Example alert rules\" in docs/operations.md")
        .to_owned()
}

/// web4 and web6 over the three backends, checked over HTTP, with metrics.
fn config(topo: &Topology) -> XlbConfig {
    let health = HealthCheck::new("http").timing(300, 200, 2, 2);
    let vip = |name: &str, addr: std::net::IpAddr, v6: bool| {
        Vip::new(name, addr, VIP_PORT)
            .health(health.clone())
            .backends((1..=topo.backend_count()).map(|i| {
                let a: std::net::IpAddr = if v6 {
                    topo.backend_addr6(i).into()
                } else {
                    topo.backend_addr4(i).into()
                };
                Backend::new(a).name(&format!("backend-{i}"))
            }))
    };
    topo.lb_config()
        .metrics(METRICS.parse().unwrap())
        .vip(vip("web4", topo.vip4().into(), false))
        .vip(vip("web6", topo.vip6().into(), true))
}

/// One read of a backend's counter, bracketed by the times around it.
#[derive(Debug, Clone, Copy)]
struct Read {
    before: f64,
    after: f64,
    packets: u64,
}

/// The counter at Unix time `t` for a reading taken anywhere in
/// `[t, t + late]` (when xlb read its own counter for a scrape stamped
/// `t`): the midpoint of the last read done before `t` and the first one
/// begun after `t + late`, and half their difference, the most the
/// midpoint can be off.
fn at(reads: &[Read], t: f64, late: f64) -> Option<(f64, f64)> {
    let lo = reads.iter().rev().find(|r| r.after <= t)?;
    let hi = reads.iter().find(|r| r.before >= t + late)?;
    let (lo, hi) = (lo.packets as f64, hi.packets as f64);
    Some(((lo + hi) / 2.0, (hi - lo) / 2.0))
}

#[test]
fn prometheus_sees_backend_rates_that_match_the_traffic_and_a_stopped_backend_down() {
    if !require_root(
        "prometheus_sees_backend_rates_that_match_the_traffic_and_a_stopped_backend_down",
    ) {
        return;
    }
    let mut topo = Topology::dsr(BACKENDS).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let path = config(&topo)
        .write(&topo.config_path())
        .expect("write config");
    let xlb = topo.start_xlb(&xlb_exe(), &path).expect("start xlb");
    wait_ready(&xlb);

    // The rules as documented: promtool accepts them, Prometheus loads them.
    let rules: PathBuf = topo.dir().join("xlb-rules.yml");
    std::fs::write(&rules, documented_rules()).unwrap();
    let checked = prometheus::check_rules(&rules).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("promtool: {}", checked.trim());
    assert!(checked.contains("SUCCESS: 8 rules found"), "{checked}");

    let vip4 = SocketAddr::new(topo.vip4().into(), VIP_PORT);
    let vip6 = SocketAddr::new(topo.vip6().into(), VIP_PORT);
    let counters: Vec<PacketCounter> = (1..=BACKENDS)
        .map(|i| {
            PacketCounter::install(topo.backend(i), "xlbtest", Hook::Prerouting, &[vip4, vip6])
                .unwrap_or_else(|e| panic!("backend-{i}: {e:#}"))
        })
        .collect();

    let prom = Prometheus::start(
        topo.lb(),
        topo.dir(),
        &Scrape {
            job: "xlb".into(),
            targets: vec![METRICS.parse().unwrap()],
            interval: SCRAPE,
            rule_files: vec![rules.clone()],
        },
        PROMETHEUS_WEB.parse().unwrap(),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let ns = topo.lb();
    let groups = prom.get(ns, "/api/v1/rules").unwrap().1;
    assert_eq!(
        groups.matches("\"type\":\"alerting\"").count(),
        8,
        "the documented rules are loaded: {groups}"
    );

    // Keep-alive connections and a stream of new ones, so that every
    // backend gets some.
    let traffic = Traffic::start(
        topo.client(),
        vip4,
        12,
        Duration::from_millis(25),
        Some(Duration::from_millis(20)),
    )
    .unwrap_or_else(|e| panic!("traffic: {e:#}"));
    std::thread::sleep(WARM_UP);
    let mut reads: Vec<Vec<Read>> = vec![Vec::new(); BACKENDS];
    let (start, end) = (unix_now(), unix_now() + MEASURE.as_secs_f64());
    while unix_now() < end {
        let round = Instant::now();
        for (i, c) in counters.iter().enumerate() {
            let before = unix_now();
            let packets = c.packets(topo.backend(i + 1)).expect("nft counter");
            reads[i].push(Read {
                before,
                after: unix_now(),
                packets,
            });
        }
        std::thread::sleep(READ_EVERY.saturating_sub(round.elapsed()));
    }
    let report = traffic.stop();
    eprintln!("traffic: {}", report.summary());
    assert!(
        report.errors(1).is_empty(),
        "traffic failed: {:?}",
        report.errors(5)
    );
    // Two more scrapes, so that the last ones in the window are stored.
    std::thread::sleep(2 * SCRAPE);

    // The longest a scrape took: xlb read its counters at most this long
    // after the scrape's time stamp.
    let late = prom
        .scalar(
            ns,
            "max_over_time(scrape_duration_seconds{job=\"xlb\"}[30s])",
            Some(end),
        )
        .unwrap()
        .expect("scrape_duration_seconds for job xlb");
    assert_eq!(
        prom.scalar(ns, "up{job=\"xlb\"}", None).unwrap(),
        Some(1.0),
        "prometheus scrapes xlb"
    );
    // The info type is read as such: the build's series, with the tag of
    // the program xlb status names.
    let build = prom.query(ns, "xlb_build_info", None).unwrap();
    let tag = xlb_testbed::running::status(&xlb)
        .dataplane
        .expect("the data plane's status")
        .program_tag;
    assert_eq!(build.len(), 1, "{build:?}");
    assert_eq!(
        build[0]["metric"]["program_tag"].as_str(),
        Some(tag.as_str())
    );
    assert!(
        build[0]["metric"]["version"].as_str().is_some(),
        "{build:?}"
    );
    let samples = prom
        .query(
            ns,
            "xlb_backend_packets_total{vip=\"web4\"}[40s]",
            Some(end),
        )
        .unwrap();
    assert_eq!(samples.len(), BACKENDS, "{samples:?}");
    for series in &samples {
        let name = series["metric"]["backend"]
            .as_str()
            .expect("a backend label");
        let i: usize = name
            .strip_prefix("backend-")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("backend label {name:?}"));
        let r = &reads[i - 1];
        // Scrapes inside the counted window, with reads around them.
        let inside: Vec<(f64, f64)> = series["values"]
            .as_array()
            .expect("a range vector")
            .iter()
            .map(|p| (sample_time(p).unwrap(), sample_value(p).unwrap()))
            .filter(|(t, _)| at(r, *t, late).is_some())
            .collect();
        assert!(
            inside.len() >= 5,
            "{name}: only {} scrapes in the {MEASURE:?} window from {start:.3}: {series}",
            inside.len()
        );
        let ((t0, _), (t1, _)) = (inside[0], inside[inside.len() - 1]);
        let span = t1 - t0;
        // Prometheus's own rate() over exactly these samples: the window
        // starts half a scrape before the first, so rate() extrapolates
        // nothing and gives (last - first) / (t1 - t0).
        let window_ms = ((span + SCRAPE.as_secs_f64() / 2.0) * 1000.0).round();
        let prom_rate = prom
            .scalar(
                ns,
                &format!(
                    "rate(xlb_backend_packets_total{{vip=\"web4\",backend=\"{name}\"}}[{window_ms}ms])"
                ),
                Some(t1),
            )
            .unwrap()
            .unwrap_or_else(|| panic!("{name}: no rate"));
        let (n0, e0) = at(r, t0, late).unwrap();
        let (n1, e1) = at(r, t1, late).unwrap();
        let sent_rate = (n1 - n0) / span;
        let tolerance = (e0 + e1) / span;
        eprintln!(
            "{name}: prometheus rate {prom_rate:.2} packets/s, nftables at the backend \
             {sent_rate:.2} packets/s over {span:.3} s ({} scrapes), tolerance ±{tolerance:.2} \
             (reads around the scrapes, scrapes up to {:.1} ms late)",
            inside.len(),
            late * 1e3
        );
        assert!(
            sent_rate > 1.0,
            "{name} got no traffic to compare ({sent_rate:.2}/s)"
        );
        assert!(
            (prom_rate - sent_rate).abs() <= tolerance,
            "{name}: prometheus says {prom_rate:.3}/s, the backend received {sent_rate:.3}/s, \
             more than ±{tolerance:.3} apart"
        );
    }

    // A stopped backend goes down; Prometheus sees it, and the documented
    // rule notices (pending: it fires after its 1 m `for`).
    topo.stop_backend(2).unwrap();
    let ns = topo.lb();
    let b2 = "vip=\"web4\",backend=\"backend-2\"";
    let stopped = Instant::now();
    loop {
        let down = prom
            .scalar(
                ns,
                &format!("xlb_backend_state{{{b2},state=\"down\"}}"),
                None,
            )
            .unwrap();
        if down == Some(1.0) {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "backend-2 not down in prometheus after 15 s (last {down:?})\n--- xlb log ---\n{}",
            xlb.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "backend-2 down in prometheus {:?} after nginx stopped",
        stopped.elapsed()
    );
    for (expr, want) in [
        (format!("xlb_backend_health_up{{{b2}}}"), 0.0),
        (format!("xlb_backend_usable{{{b2}}}"), 0.0),
        (format!("xlb_backend_state{{{b2},state=\"active\"}}"), 0.0),
        ("xlb_vip_usable_backends{vip=\"web4\"}".to_owned(), 2.0),
        (
            "xlb_backend_usable{vip=\"web4\",backend=\"backend-1\"}".to_owned(),
            1.0,
        ),
    ] {
        assert_eq!(prom.scalar(ns, &expr, None).unwrap(), Some(want), "{expr}");
    }
    let failed = prom
        .scalar(
            ns,
            &format!("increase(xlb_health_checks_total{{{b2},result=\"failed\"}}[5s])"),
            None,
        )
        .unwrap()
        .unwrap_or(0.0);
    assert!(failed > 0.0, "backend-2's failed checks are counted");
    // The stopped nginx served both VIPs: both backend-2s are down.
    let alerts = loop {
        let a = prom
            .query(ns, "ALERTS{alertname=\"XlbBackendDown\"}", None)
            .unwrap();
        if a.len() >= 2 {
            break a;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(20),
            "XlbBackendDown not pending for both backend-2s after 20 s: {a:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let mut seen: Vec<(&str, &str, &str)> = alerts
        .iter()
        .map(|a| {
            let l = &a["metric"];
            (
                l["vip"].as_str().unwrap_or("?"),
                l["backend"].as_str().unwrap_or("?"),
                l["alertstate"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    seen.sort();
    eprintln!("alerts: {seen:?}");
    assert_eq!(seen.len(), 2, "{alerts:?}");
    for ((vip, backend, state), want) in seen.iter().zip(["web4", "web6"]) {
        assert_eq!((*vip, *backend), (want, "backend-2"), "{alerts:?}");
        assert!(matches!(*state, "pending" | "firing"), "{alerts:?}");
    }
}

/// `GET /metrics` on `addr` in the xlb node's namespace: the status, or
/// the error (a refused connection when nothing listens).
fn scrape(topo: &Topology, addr: &str) -> anyhow::Result<u16> {
    http_get(
        topo.lb(),
        addr.parse().unwrap(),
        "/metrics",
        Duration::from_secs(3),
    )
    .map(|(code, _)| code)
}

/// Polls until `scrape` of `addr` answers 200 (`up`) or is refused.
fn wait_serving(topo: &Topology, addr: &str, up: bool) {
    let start = Instant::now();
    loop {
        let got = scrape(topo, addr);
        if got.as_ref().is_ok_and(|c| *c == 200) == up {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{addr}: still {got:?} after 10 s, want {}",
            if up { "200" } else { "refused" }
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_taken_port_stops_xlb_before_the_data_plane_and_reloads_move_or_remove_the_server() {
    if !require_root(
        "a_taken_port_stops_xlb_before_the_data_plane_and_reloads_move_or_remove_the_server",
    ) {
        return;
    }
    let topo = Topology::dsr(1).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let with = |listen: Option<&str>| {
        let c = topo.xlb_config(&[1]);
        let c = match listen {
            Some(l) => c.metrics(l.parse().unwrap()),
            None => c,
        };
        c.write(&topo.config_path()).expect("write config")
    };
    let path = with(Some(METRICS));

    let squatter = topo
        .lb()
        .in_ns(|| TcpListener::bind(METRICS))
        .expect("binding the metrics port first");
    let refused = topo.start_xlb(&xlb_exe(), &path).expect("start xlb");
    let start = Instant::now();
    while refused.is_running() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "xlb runs with its metrics port taken:\n{}",
            refused.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = refused.log();
    assert!(
        log.contains("metrics.listen 127.0.0.1:9477: cannot listen"),
        "{log}"
    );
    let state = topo.state_dir("lb");
    assert!(
        std::fs::read_dir(&state).map_or(true, |mut d| d.next().is_none()),
        "the refused start pinned state in {}",
        state.display()
    );
    drop(refused);
    drop(squatter);

    let xlb = topo.start_xlb(&xlb_exe(), &path).expect("start xlb");
    wait_ready(&xlb);
    wait_serving(&topo, METRICS, true);

    let moved = "127.0.0.1:9478";
    with(Some(moved));
    xlb.reload().unwrap();
    wait_serving(&topo, moved, true);
    wait_serving(&topo, METRICS, false);

    with(None);
    xlb.reload().unwrap();
    wait_serving(&topo, moved, false);
    assert!(xlb.is_running(), "{}", xlb.log_tail(20));
    let log = xlb.log();
    assert!(log.contains("metrics: [metrics] removed, stopped"), "{log}");
}
