//! Scale of the health checker: 1,000 backends checked by HTTP every second
//! on ONE thread (a current-thread tokio runtime), against a tiny HTTP
//! server on the loopback of a private network namespace. Prints checks
//! done, CPU time used by the checker thread and how far each backend's
//! check period strayed from the interval.
//!
//! A measurement, not a pass/fail timing test: it is `#[ignore]`d and
//! asserts only that (nearly) every check ran and passed. Run with
//! `cargo test --test health_scale -- --ignored --nocapture` as root.

mod common;

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use lb_user::{config::Config, health::Scheduler, netns::NetNs};

const BACKENDS: usize = 1000;
const RUN: Duration = Duration::from_secs(10);
const INTERVAL_MS: u64 = 1000;

/// utime + stime of the calling thread, in seconds.
fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ
}

fn config() -> Config {
    let mut text = format!(
        "interface = \"lo\"\n[[vip]]\nname = \"scale\"\naddress = \"127.0.0.1\"\nport = 80\n\
         [vip.health]\ntype = \"http\"\ninterval_ms = {INTERVAL_MS}\ntimeout_ms = 500\n"
    );
    for i in 0..BACKENDS {
        // 127.1.x.y: all local on lo, each its own backend (and 4-tuple space).
        let a = Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8);
        text.push_str(&format!("[[vip.backend]]\naddress = \"{a}\"\n"));
    }
    Config::parse(&text, "scale.toml").expect("valid config")
}

/// Answers every connection with a 200 after reading the request.
fn serve(listener: TcpListener, stop: Arc<AtomicBool>) {
    listener.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut c, _)) => {
                c.set_nonblocking(false).unwrap();
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

#[test]
#[ignore = "measurement; run with --ignored --nocapture as root"]
fn thousand_http_checks_a_second_on_one_thread() {
    if !common::require_root("thousand_http_checks_a_second_on_one_thread") {
        return;
    }
    let ns = NetNs::create(&format!("xs{:05x}", rand::random::<u32>() & 0xf_ffff)).unwrap();
    ns.ip(["link", "set", "lo", "up"]).unwrap();
    let listener = ns.in_ns(|| TcpListener::bind("0.0.0.0:80")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let server = std::thread::spawn({
        let stop = stop.clone();
        move || serve(listener, stop)
    });
    let config = config();

    let (results, cpu, wall) = ns.in_ns(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut s, mut rx) = Scheduler::new();
            let (cpu0, t0) = (thread_cpu(), Instant::now());
            s.reconcile(&config);
            let mut results: Vec<(IpAddr, Instant, bool)> = Vec::new();
            let end = tokio::time::Instant::now() + RUN;
            while let Ok(Some(r)) = tokio::time::timeout_at(end, rx.recv()).await {
                results.push((r.addr, Instant::now(), r.outcome.ok));
            }
            (results, thread_cpu() - cpu0, t0.elapsed())
        })
    });
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();

    let ok = results.iter().filter(|r| r.2).count();
    let mut by_backend: HashMap<IpAddr, Vec<Instant>> = HashMap::new();
    for (a, t, _) in &results {
        by_backend.entry(*a).or_default().push(*t);
    }
    let mut drift_ms: Vec<f64> = by_backend
        .values()
        .flat_map(|ts| {
            ts.windows(2)
                .map(|w| (w[1].duration_since(w[0]).as_secs_f64() * 1e3 - INTERVAL_MS as f64).abs())
        })
        .collect();
    drift_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| drift_ms[((drift_ms.len() - 1) as f64 * p) as usize];
    eprintln!(
        "{BACKENDS} backends, HTTP every {INTERVAL_MS} ms, one thread, {wall:.1?}: \
         {} checks ({ok} ok), {:.1} checks/s; checker CPU {cpu:.2} s = {:.1} % of one core; \
         period error p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        results.len(),
        results.len() as f64 / wall.as_secs_f64(),
        100.0 * cpu / wall.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
    );
    // Every backend checked in every full interval of the run (the first
    // starts within the first interval).
    let expected = BACKENDS * (RUN.as_millis() as usize / INTERVAL_MS as usize - 1);
    assert!(results.len() >= expected, "{} < {expected}", results.len());
    assert_eq!(ok, results.len(), "some checks failed");
}
