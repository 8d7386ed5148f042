//! Traffic that proves "nothing lost": long-lived keep-alive connections
//! that each send a request every `period` through the event under test,
//! and a loop that opens a new connection every `new_every`, all from the
//! client namespace, every result recorded. Idle connections prove
//! nothing: a connection only survives an event if its packets kept
//! crossing it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::netns::NetNs;
use crate::topology::{KeepAlive, get_once};

/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections per driving thread.
const PER_THREAD: usize = 10;

/// Running traffic; [`Traffic::stop`] ends it and reports.
pub struct Traffic {
    ports: Vec<u16>,
    stop: Arc<AtomicBool>,
    long: Vec<JoinHandle<Vec<Connection>>>,
    fresh: Option<JoinHandle<Vec<Attempt>>>,
    started: Instant,
}

/// What one long-lived connection saw.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The client's port (tells the connection in a capture).
    pub port: u16,
    pub requests: usize,
    /// Failed requests, with what failed; the connection is given up at
    /// the first failure (a reset or a timeout ends it for real too).
    pub errors: Vec<String>,
    /// The body of every answer ("backend-N"): one name means the
    /// connection stayed on one backend.
    pub served_by: std::collections::BTreeSet<String>,
    /// The longest time between two answers (or from the start to the
    /// first): the longest pause the client saw.
    pub longest_pause: Duration,
}

/// One new connection of the loop.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: Instant,
    pub took: Duration,
    /// The answering backend, or what failed.
    pub result: Result<String, String>,
}

/// What [`Traffic::stop`] reports.
#[derive(Debug, Clone)]
pub struct Report {
    pub connections: Vec<Connection>,
    pub attempts: Vec<Attempt>,
    pub ran_for: Duration,
}

impl Report {
    /// Long-lived connections that got every answer.
    pub fn survivors(&self) -> usize {
        self.connections
            .iter()
            .filter(|c| c.errors.is_empty())
            .count()
    }

    /// Long-lived connections that were answered by more than one backend.
    pub fn moved(&self) -> Vec<&Connection> {
        self.connections
            .iter()
            .filter(|c| c.served_by.len() > 1)
            .collect()
    }

    /// New connections that failed.
    pub fn failed_attempts(&self) -> Vec<&Attempt> {
        self.attempts.iter().filter(|a| a.result.is_err()).collect()
    }

    /// The longest pause a surviving long-lived connection saw (zero if
    /// none survived: a lost connection's wait ends with its failure).
    pub fn longest_pause(&self) -> Duration {
        self.connections
            .iter()
            .filter(|c| c.errors.is_empty())
            .map(|c| c.longest_pause)
            .max()
            .unwrap_or_default()
    }

    /// One line for logs and failure messages.
    pub fn summary(&self) -> String {
        let requests: usize = self.connections.iter().map(|c| c.requests).sum();
        let moved = self.moved().len();
        format!(
            "{}/{} long-lived connections survived ({requests} requests, {moved} changed backend, \
             longest pause {:.0} ms); {} of {} new connections failed; over {:.1} s",
            self.survivors(),
            self.connections.len(),
            self.longest_pause().as_secs_f64() * 1000.0,
            self.failed_attempts().len(),
            self.attempts.len(),
            self.ran_for.as_secs_f64()
        )
    }

    /// The first errors, for failure messages.
    pub fn errors(&self, n: usize) -> Vec<String> {
        let long = self.connections.iter().flat_map(|c| {
            c.errors
                .iter()
                .map(move |e| format!("port {}: {e}", c.port))
        });
        let fresh = self
            .failed_attempts()
            .into_iter()
            .map(|a| format!("new connection: {}", a.result.clone().unwrap_err()));
        long.chain(fresh).take(n).collect()
    }
}

impl Traffic {
    /// Opens `long` keep-alive connections to `addr` from `ns` (each
    /// answered once before this returns) and starts them sending a request
    /// every `period`; with `new_every`, also a loop opening a new
    /// connection that often.
    pub fn start(
        ns: &NetNs,
        addr: SocketAddr,
        long: usize,
        period: Duration,
        new_every: Option<Duration>,
    ) -> anyhow::Result<Traffic> {
        let mut conns = Vec::with_capacity(long);
        for i in 0..long {
            let mut c = KeepAlive::connect(ns, addr, REQUEST_TIMEOUT)
                .with_context(|| format!("long-lived connection {i}"))?;
            let (code, body) = c
                .get("/")
                .with_context(|| format!("first request of connection {i}"))?;
            anyhow::ensure!(code == 200, "connection {i}: HTTP {code} {body:?}");
            conns.push((c, body.trim().to_owned()));
        }
        let ports = conns
            .iter()
            .map(|(c, _)| c.local_addr().map_or(0, |a| a.port()))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let mut threads = Vec::new();
        let mut rest = conns;
        while !rest.is_empty() {
            let batch: Vec<_> = rest.drain(..PER_THREAD.min(rest.len())).collect();
            let stop = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || drive(batch, period, &stop)));
        }
        let fresh = new_every.map(|every| {
            let stop = Arc::clone(&stop);
            ns.spawn(move || new_connections(addr, every, &stop))
        });
        Ok(Traffic {
            ports,
            stop,
            long: threads,
            fresh,
            started,
        })
    }

    /// The client ports of the long-lived connections, in order.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Stops sending; returns what every connection saw.
    pub fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let connections = self
            .long
            .into_iter()
            .flat_map(|t| t.join().expect("traffic thread"))
            .collect();
        let attempts = self
            .fresh
            .map(|t| t.join().expect("new-connection thread"))
            .unwrap_or_default();
        Report {
            connections,
            attempts,
            ran_for: self.started.elapsed(),
        }
    }
}

/// Sends on each connection every `period` until `stop`.
fn drive(batch: Vec<(KeepAlive, String)>, period: Duration, stop: &AtomicBool) -> Vec<Connection> {
    let now = Instant::now();
    let mut state: Vec<(KeepAlive, Connection, Instant)> = batch
        .into_iter()
        .map(|(c, first)| {
            let port = c.local_addr().map_or(0, |a| a.port());
            let conn = Connection {
                port,
                requests: 1,
                errors: Vec::new(),
                served_by: [first].into_iter().collect(),
                longest_pause: Duration::ZERO,
            };
            (c, conn, now)
        })
        .collect();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for (c, conn, last) in &mut state {
            if !conn.errors.is_empty() {
                continue;
            }
            match c.get("/") {
                Ok((200, body)) => {
                    conn.requests += 1;
                    conn.served_by.insert(body.trim().to_owned());
                }
                Ok((code, body)) => conn.errors.push(format!("HTTP {code} {body:?}")),
                Err(e) => conn.errors.push(format!("{e:#}")),
            }
            let t = Instant::now();
            conn.longest_pause = conn.longest_pause.max(t - *last);
            *last = t;
        }
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    state.into_iter().map(|(_, conn, _)| conn).collect()
}

/// A new connection every `every` until `stop` (on a thread inside the
/// client's namespace).
fn new_connections(addr: SocketAddr, every: Duration, stop: &AtomicBool) -> Vec<Attempt> {
    let mut out = Vec::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let at = Instant::now();
        let result = match get_once(addr, "/", REQUEST_TIMEOUT) {
            Ok((200, body)) => Ok(body.trim().to_owned()),
            Ok((code, body)) => Err(format!("HTTP {code} {body:?}")),
            Err(e) => Err(format!("{e:#}")),
        };
        out.push(Attempt {
            at,
            took: at.elapsed(),
            result,
        });
        next += every;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    out
}
