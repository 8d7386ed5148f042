//! End-to-end `[vip.feedback]` with `source = "agent"`: real namespaces,
//! real nginx backends, the real `xlb run`, and a small agent per backend
//! that this test runs in the backend's namespace (a TCP listener that
//! writes one line per connection, as HAProxy's agent-check expects). xlb
//! must weight new connections by what the agents say, and a flapping
//! agent must not change the ring more often than `period_ms`. Needs root;
//! each test has its own topology.

use std::{
    io::{ErrorKind, Write as _},
    net::{SocketAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use lb_user::api::{BackendState, Status};
use xlb_testbed::config::{Backend, Feedback, Vip, XlbConfig};
use xlb_testbed::netns::NetNs;
use xlb_testbed::running::{require_root, status, wait_ready, xlb_exe};
use xlb_testbed::topology::{Topology, VIP_PORT, Xlb, http_get_many, log_time, status_vip};

const AGENT_PORT: u16 = 9100;
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

/// An agent in a backend's namespace: each connection gets the line
/// `reply(n)` for the n-th connection (from 0), then the close.
struct Agent {
    stop: Arc<AtomicBool>,
    asked: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Agent {
    fn start(ns: &NetNs, reply: impl Fn(u64) -> String + Send + 'static) -> Agent {
        let listener =
            ns.in_ns(|| TcpListener::bind(("0.0.0.0", AGENT_PORT)).expect("bind the agent's port"));
        listener.set_nonblocking(true).expect("non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(AtomicU64::new(0));
        let thread = std::thread::spawn({
            let (stop, asked) = (stop.clone(), asked.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            let n = asked.fetch_add(1, Ordering::Relaxed);
                            let _ = s.set_nonblocking(false);
                            let _ = s.write_all(reply(n).as_bytes());
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => panic!("agent accept: {e}"),
                    }
                }
            }
        });
        Agent {
            stop,
            asked,
            thread: Some(thread),
        }
    }

    fn asked(&self) -> u64 {
        self.asked.load(Ordering::Relaxed)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// VIP web4 on port 80 over every backend of `topo` (weight 1 each), with
/// the agents asked every `interval_ms` and at most one change per
/// `period_ms`.
fn config(topo: &Topology, interval_ms: u64, period_ms: u64) -> XlbConfig {
    let vip = Vip::new("web4", topo.vip4(), VIP_PORT)
        .feedback(Feedback::agent(
            AGENT_PORT,
            interval_ms,
            interval_ms / 2,
            period_ms,
        ))
        .backends(
            (1..=topo.backend_count())
                .map(|i| Backend::new(topo.backend_addr4(i)).name(&format!("backend-{i}"))),
        );
    topo.lb_config().vip(vip)
}

fn start(topo: &Topology, config: &XlbConfig) -> Xlb {
    let path = config.write(&topo.config_path()).expect("write config");
    let xlb = topo.start_xlb(&xlb_exe(), &path).expect("start xlb");
    wait_ready(&xlb);
    xlb
}

/// Polls until `ok(status)`; panics after `limit`, naming the status and
/// the log.
fn wait_for(xlb: &Xlb, what: &str, limit: Duration, ok: impl Fn(&Status) -> bool) -> Status {
    let since = Instant::now();
    loop {
        let s = status(xlb);
        if ok(&s) {
            return s;
        }
        if since.elapsed() > limit {
            panic!(
                "{what}: not after {limit:?}: {s}\n--- xlb log ---\n{}",
                xlb.log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The feedback percent of each backend of web4, in config order
/// (`None`: no agent reply yet).
fn percents(s: &Status) -> Vec<Option<u8>> {
    status_vip(s, "web4")
        .unwrap()
        .backends
        .iter()
        .map(|b| {
            let f = b.feedback.as_ref()?;
            f.wanted_percent.map(|_| f.percent)
        })
        .collect()
}

#[test]
fn a_backend_whose_agent_reports_25_percent_gets_a_quarter_of_its_weight_in_new_connections() {
    if !require_root("a_backend_whose_agent_reports_25_percent_gets_a_quarter_of_its_weight") {
        return;
    }
    let topo = Topology::dsr(3).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let wanted = [25u8, 100, 100];
    let _agents: Vec<Agent> = wanted
        .iter()
        .enumerate()
        .map(|(i, &p)| Agent::start(topo.backend(i + 1), move |_| format!("{p}%\n")))
        .collect();
    let xlb = start(&topo, &config(&topo, 200, 1000));
    let s = wait_for(
        &xlb,
        "every agent's reply applied",
        Duration::from_secs(10),
        |s| {
            percents(s) == wanted.map(Some)
                && status_vip(s, "web4")
                    .unwrap()
                    .backends
                    .iter()
                    .all(|b| b.state == BackendState::Active)
        },
    );
    let vip = status_vip(&s, "web4").unwrap();
    let ring: Vec<u32> = vip.backends.iter().map(|b| b.effective_weight).collect();
    assert_eq!(ring, [25, 100, 100], "weight 1 × the agents' percent");
    assert_eq!(
        vip.backends.iter().map(|b| b.weight).collect::<Vec<_>>(),
        [1, 1, 1],
        "the configured weight is unchanged"
    );

    const CONNECTIONS: usize = 1000;
    let addr = SocketAddr::new(topo.vip4().into(), VIP_PORT);
    let mut got = [0usize; 3];
    for (n, r) in http_get_many(topo.client(), addr, "/", CONNECTIONS, HTTP_TIMEOUT)
        .into_iter()
        .enumerate()
    {
        let (code, body) = r.unwrap_or_else(|e| {
            panic!(
                "connection {n} failed: {e:#}\n--- xlb log ---\n{}",
                xlb.log_tail(30)
            )
        });
        assert_eq!(code, 200, "connection {n}: {body:?}");
        let i: usize = body
            .trim()
            .strip_prefix("backend-")
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("connection {n}: body {body:?}"));
        got[i - 1] += 1;
    }
    let total: u32 = ring.iter().sum();
    let expected = f64::from(ring[0]) / f64::from(total);
    let configured = 1.0 / 3.0;
    let share = got[0] as f64 / CONNECTIONS as f64;
    println!(
        "backend-1 (agent 25 %): {} of {CONNECTIONS} new connections = {:.1} %; expected from \
         the ring weights 25:100:100 {:.1} %, its configured share {:.1} % (a quarter of it: \
         {:.1} %); others {:?}",
        got[0],
        share * 100.0,
        expected * 100.0,
        configured * 100.0,
        configured * 25.0,
        &got[1..]
    );
    assert!(
        (share - expected).abs() <= 0.05,
        "backend-1 got {:.1} % of new connections, expected {:.1} % ± 5 points: {got:?}",
        share * 100.0,
        expected * 100.0
    );
    for (i, &n) in got.iter().enumerate().skip(1) {
        let share = n as f64 / CONNECTIONS as f64;
        let expected = f64::from(ring[i]) / f64::from(total);
        assert!(
            (share - expected).abs() <= 0.05,
            "backend-{} got {:.1} %, expected {:.1} % ± 5 points: {got:?}",
            i + 1,
            share * 100.0,
            expected * 100.0
        );
    }
}

/// Log lines of xlb stamped at or after `since` that contain every one of
/// `parts`, with their times.
fn lines_after(xlb: &Xlb, since: SystemTime, parts: &[&str]) -> Vec<SystemTime> {
    xlb.log()
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .filter_map(log_time)
        .filter(|t| *t >= since)
        .collect()
}

#[test]
fn an_agent_flapping_every_check_changes_the_ring_at_most_once_per_period() {
    if !require_root("an_agent_flapping_every_check_changes_the_ring_at_most_once_per_period") {
        return;
    }
    const INTERVAL_MS: u64 = 200;
    const PERIOD_MS: u64 = 1500;
    let topo = Topology::dsr(3).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let flapping = Agent::start(topo.backend(1), |n| {
        if n % 2 == 0 { "30%\n" } else { "100%\n" }.to_owned()
    });
    let _steady: Vec<Agent> = (2..=3)
        .map(|i| Agent::start(topo.backend(i), |_| "100%\n".to_owned()))
        .collect();
    let xlb = start(&topo, &config(&topo, INTERVAL_MS, PERIOD_MS));
    wait_for(&xlb, "every backend active", Duration::from_secs(10), |s| {
        status_vip(s, "web4")
            .unwrap()
            .backends
            .iter()
            .all(|b| b.state == BackendState::Active)
    });
    let since = SystemTime::now();
    let asked_before = flapping.asked();
    let window = Duration::from_millis(PERIOD_MS * 5);
    std::thread::sleep(window);
    let until = SystemTime::now();
    let asked = flapping.asked() - asked_before;

    let within = |times: Vec<SystemTime>| -> Vec<SystemTime> {
        times.into_iter().filter(|t| *t <= until).collect()
    };
    let installs = within(lines_after(
        &xlb,
        since,
        &["Maglev table installed", "vip=web4 "],
    ));
    let changes = within(lines_after(
        &xlb,
        since,
        &["feedback: effective weight changed", "backend=backend-1 "],
    ));
    let s = status(&xlb);
    let f = status_vip(&s, "web4").unwrap().backends[0]
        .feedback
        .clone()
        .expect("backend-1 has feedback");
    println!(
        "flapping agent asked {asked} times in {window:?} (period {PERIOD_MS} ms): {} weight \
         changes, {} ring installs for web4; status says {} changes in all, last {:?}",
        changes.len(),
        installs.len(),
        f.changes,
        f.last
    );
    // The signal changed on every question; the ring at most once per
    // period (plus one: a change just after `since` and one just before
    // `until` both count).
    assert!(
        asked >= window.as_millis() as u64 / INTERVAL_MS / 2,
        "the agent was asked only {asked} times"
    );
    let bound = (window.as_millis() as u64 / PERIOD_MS + 1) as usize;
    assert!(
        installs.len() <= bound,
        "{} ring installs in {window:?}, at most {bound} allowed\n{}",
        installs.len(),
        xlb.log_tail(40)
    );
    assert!(
        changes.len() >= 2,
        "the period must let the signal through: {} changes",
        changes.len()
    );
    for w in changes.windows(2) {
        let gap = w[1].duration_since(w[0]).unwrap_or_default();
        assert!(
            gap >= Duration::from_millis(PERIOD_MS - 50),
            "two weight changes {gap:?} apart, the period is {PERIOD_MS} ms"
        );
    }
    assert_eq!(
        installs.len(),
        changes.len(),
        "each ring install in the window is one of backend-1's weight changes"
    );
}
