//! End-to-end backup tiers: real namespaces, real nginx backends, the real
//! `xlb run`. Three primaries (tier 0) and two backups (tier 1) behind one
//! VIP with `min_usable = 2`. Primaries are taken down one by one by failing
//! their HTTP check (the checked file is removed; nginx keeps serving `/`),
//! so that the long-lived connections to them go on. New connections must
//! go only to the primaries while at least two pass their checks, to the
//! last primary and both backups once only one does, and back to the
//! primaries alone when they return; 50 long-lived connections (and 10 more
//! opened while the backups serve) see no error and never change backend.
//! Needs root.

use std::{collections::BTreeSet, net::SocketAddr, path::PathBuf, time::Duration};

use lb_user::api::{BackendState, Status};
use xlb_testbed::config::{Backend, HealthCheck, Vip};
use xlb_testbed::running::{require_root, status, xlb_exe};
use xlb_testbed::topology::{Topology, VIP_PORT, Xlb, http_bodies, status_vip};
use xlb_testbed::traffic::Traffic;

const PRIMARIES: usize = 3;
const BACKUPS: usize = 2;
const MIN_USABLE: u32 = 2;
/// The checked path: nginx serves it from a file the test removes.
const CHECK_PATH: &str = "/big";
const INTERVAL_MS: u64 = 300;
const TIMEOUT_MS: u64 = 250;
const RISE: u32 = 2;
const FALL: u32 = 2;
/// New connections per phase.
const REQUESTS: usize = 60;
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);
const LONG_LIVED: usize = 50;
/// Opened while the backups serve, to see them stay when the backups leave.
const ON_BACKUPS: usize = 10;
const PERIOD: Duration = Duration::from_millis(100);
/// How long a check change may take to show in `xlb status`: `fall` (or
/// `rise`) checks, plus scheduling slack.
const CHANGE_LIMIT: Duration = Duration::from_secs(5);

/// Backend `i`'s name in the config, which is also what its nginx answers
/// on `/`: backends 1-3 are the primaries, 4 and 5 the backups.
fn name(i: usize) -> String {
    format!("backend-{i}")
}

struct Running {
    xlb: Xlb,
    topo: Topology,
}

impl Running {
    fn start() -> Running {
        let topo = Topology::dsr(PRIMARIES + BACKUPS).unwrap_or_else(|e| panic!("topology: {e:#}"));
        let mut check = HealthCheck::new("http").timing(INTERVAL_MS, TIMEOUT_MS, RISE, FALL);
        check.path = Some(CHECK_PATH.to_owned());
        let mut vip = Vip::new("web4", topo.vip4(), VIP_PORT)
            .health(check)
            .backends((1..=PRIMARIES + BACKUPS).map(|i| {
                let tier = u8::from(i > PRIMARIES);
                Backend::new(topo.backend_addr4(i))
                    .name(&name(i))
                    .tier(tier)
            }));
        vip.min_usable = Some(MIN_USABLE);
        let config = topo.lb_config().vip(vip);
        let path = config.write(&topo.config_path()).expect("write config");
        let xlb = topo.start_xlb(&xlb_exe(), &path).expect("start xlb");
        let r = Running { xlb, topo };
        r.wait("the primaries active and the backups backup", |s| {
            tiers_are(s, &[1, 2, 3], &[4, 5], &[0])
        });
        r
    }

    /// The file nginx of backend `i` serves the checked path from.
    fn checked_file(&self, i: usize) -> PathBuf {
        self.topo
            .dir()
            .join(format!("b{i}"))
            .join("www")
            .join("big")
    }

    /// Makes backend `i`'s check fail (404) or pass again; `/` is served
    /// throughout.
    fn set_check(&self, i: usize, pass: bool) {
        let file = self.checked_file(i);
        if pass {
            std::fs::write(&file, "backend up\n").expect("restore the checked file");
        } else {
            std::fs::remove_file(&file).expect("remove the checked file");
        }
    }

    fn wait(&self, what: &str, done: impl Fn(&Status) -> bool) -> Status {
        self.xlb
            .wait_status(what, CHANGE_LIMIT, done)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Waits until backend `i`'s checks say down.
    fn wait_down(&self, i: usize) -> Status {
        self.wait(&format!("{} down", name(i)), |s| {
            status_vip(s, "web4")
                .ok()
                .and_then(|v| v.backend(&name(i)))
                .is_some_and(|b| b.state == BackendState::Down)
        })
    }

    /// The backends that answered `REQUESTS` new connections; every one
    /// must succeed.
    fn new_connections(&self) -> BTreeSet<String> {
        http_bodies(self.topo.client(), self.vip4(), "/", REQUESTS, HTTP_TIMEOUT)
            .unwrap_or_else(|e| {
                panic!(
                    "new connections: {e:#}\n--- xlb log ---\n{}",
                    self.xlb.log_tail(30)
                )
            })
            .into_iter()
            .collect()
    }

    fn vip4(&self) -> SocketAddr {
        SocketAddr::new(self.topo.vip4().into(), VIP_PORT)
    }
}

/// `active` (in the ring) and `backup` (usable, tier not serving) are
/// exactly these backends, and `serving` the VIP's serving tiers.
fn tiers_are(s: &Status, active: &[usize], backup: &[usize], serving: &[u8]) -> bool {
    let Ok(v) = status_vip(s, "web4") else {
        return false;
    };
    let is = |i: &usize, st: BackendState| v.backend(&name(*i)).is_some_and(|b| b.state == st);
    active.iter().all(|i| is(i, BackendState::Active))
        && backup.iter().all(|i| is(i, BackendState::Backup))
        && v.serving_tiers == serving
        && v.usable_backends == active.len()
}

fn bodies(of: &[usize]) -> BTreeSet<String> {
    of.iter().map(|&i| name(i)).collect()
}

#[test]
fn backups_take_new_flows_exactly_below_min_usable_and_established_flows_stay() {
    if !require_root("backups_take_new_flows_exactly_below_min_usable_and_established_flows_stay") {
        return;
    }
    let r = Running::start();
    let long = Traffic::start(r.topo.client(), r.vip4(), LONG_LIVED, PERIOD, None)
        .expect("start the long-lived connections");

    // Three primaries pass: new flows to them only.
    assert_eq!(r.new_connections(), bodies(&[1, 2, 3]));

    // One primary fails its check: two left, still min_usable.
    r.set_check(1, false);
    let s = r.wait_down(1);
    assert!(
        tiers_are(&s, &[2, 3], &[4, 5], &[0]),
        "with 2 primaries up the backups stay out: {s}"
    );
    assert_eq!(r.new_connections(), bodies(&[2, 3]));

    // A second one fails: one primary left, below min_usable, so tier 1
    // joins in the same change of the ring.
    r.set_check(2, false);
    let s = r.wait_down(2);
    assert!(
        tiers_are(&s, &[3, 4, 5], &[], &[0, 1]),
        "with 1 primary up the backups must have joined: {s}"
    );
    assert_eq!(r.new_connections(), bodies(&[3, 4, 5]));
    eprintln!("{}", status(&r.xlb).render());
    let on_backups = Traffic::start(r.topo.client(), r.vip4(), ON_BACKUPS, PERIOD, None)
        .expect("start the connections opened while the backups serve");

    // One primary back: two again, the backups leave.
    r.set_check(1, true);
    let s = r.wait("backend-1 back, the backups out", |s| {
        tiers_are(s, &[1, 3], &[4, 5], &[0])
    });
    assert_eq!(status_vip(&s, "web4").unwrap().usable_backends, 2);
    assert_eq!(r.new_connections(), bodies(&[1, 3]));
    r.set_check(2, true);
    r.wait("every primary back", |s| {
        tiers_are(s, &[1, 2, 3], &[4, 5], &[0])
    });
    assert_eq!(r.new_connections(), bodies(&[1, 2, 3]));
    // Long enough for every long-lived connection to send through the
    // last change.
    std::thread::sleep(PERIOD * 10);

    let long = long.stop();
    let on_backups = on_backups.stop();
    eprintln!(
        "opened on the primaries: {}\nopened while the backups served: {}",
        long.summary(),
        on_backups.summary()
    );
    for (what, report, n) in [
        ("long-lived", &long, LONG_LIVED),
        ("opened on the backups", &on_backups, ON_BACKUPS),
    ] {
        assert_eq!(
            report.survivors(),
            n,
            "{what}: {}; {:?}\n--- xlb log ---\n{}",
            report.summary(),
            report.errors(5),
            r.xlb.log_tail(30)
        );
        let moved: Vec<_> = report
            .moved()
            .iter()
            .map(|c| (c.port, &c.served_by))
            .collect();
        assert!(
            moved.is_empty(),
            "{what}: (port, backends) that changed backend: {moved:?}"
        );
        for c in &report.connections {
            // One request per PERIOD from its start: at least a second's
            // worth, spanning the changes after it opened.
            assert!(
                c.requests >= 10,
                "{what}: port {} sent only {} requests",
                c.port,
                c.requests
            );
        }
    }
    // The connections opened while the backups served include some on
    // them, which stayed there after the backups left.
    let on_a_backup = on_backups
        .connections
        .iter()
        .filter(|c| c.served_by.iter().any(|b| bodies(&[4, 5]).contains(b)))
        .count();
    assert!(
        on_a_backup > 0,
        "no connection opened while the backups served landed on one"
    );
    let s = status(&r.xlb);
    for i in [4, 5] {
        let b = status_vip(&s, "web4").unwrap().backend(&name(i)).unwrap();
        assert_eq!(b.tier, 1);
        assert!(b.packets > 0, "{} never got traffic: {s}", name(i));
    }
}
