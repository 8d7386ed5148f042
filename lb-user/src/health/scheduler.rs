//! Runs every backend's check on its own schedule: one lightweight tokio
//! task per (VIP, backend), not a thread, so a thousand checks a second fit
//! on one core. Results go to the daemon over a channel.
//!
//! Each task first waits a random part of its interval, so checks started
//! together (at start-up, after a reload) do not all fire at once, and then
//! ticks on a fixed grid (`interval_at`): a slow check does not push the
//! later ones back, and ticks missed while the process was stalled are
//! skipped, not fired in a burst.

use std::{collections::HashMap, net::IpAddr, sync::Arc, time::Duration};

use lb_common::VipKey;
use tokio::{
    sync::mpsc,
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};

use super::{Outcome, checks, icmp::Pinger};
use crate::config::{CheckConfig, Config};

/// Room for this many results not yet taken by the daemon; a full channel
/// holds the checks back instead of growing.
const CHANNEL: usize = 4096;

/// One check's result, addressed to a backend of a VIP.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub vip: VipKey,
    pub addr: IpAddr,
    /// Which task produced it: results of a task that a reload replaced are
    /// dropped (see [`Scheduler::is_current`]).
    pub task: u64,
    pub outcome: Outcome,
}

struct Task {
    check: CheckConfig,
    id: u64,
    handle: JoinHandle<()>,
}

/// The running checks.
pub struct Scheduler {
    tasks: HashMap<(VipKey, IpAddr), Task>,
    tx: mpsc::Sender<CheckResult>,
    next_id: u64,
    pinger: Arc<Pinger>,
}

impl Scheduler {
    /// A scheduler with no checks, and the receiving end of its results.
    pub fn new() -> (Scheduler, mpsc::Receiver<CheckResult>) {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let s = Scheduler {
            tasks: HashMap::new(),
            tx,
            next_id: 0,
            pinger: Arc::new(Pinger::default()),
        };
        (s, rx)
    }

    /// Makes the running checks those of `config`: unchanged checks keep
    /// running undisturbed, changed ones restart, gone ones stop.
    pub fn reconcile(&mut self, config: &Config) {
        self.reconcile_with(config, &[]);
    }

    /// [`Scheduler::reconcile`], plus the checks of backends the file does
    /// not name (those added with `xlb backend add`): VIP, address, check.
    pub fn reconcile_with(&mut self, config: &Config, extra: &[(VipKey, IpAddr, CheckConfig)]) {
        let mut wanted: HashMap<(VipKey, IpAddr), &CheckConfig> = HashMap::new();
        for vip in &config.vips {
            let key = vip.key();
            for b in &vip.backends {
                if let Some(check) = &b.check {
                    wanted.insert((key, b.address), check);
                }
            }
        }
        for (vip, address, check) in extra {
            wanted.entry((*vip, *address)).or_insert(check);
        }
        self.tasks.retain(|k, task| {
            let keep = wanted.get(k).is_some_and(|c| **c == task.check);
            if !keep {
                task.handle.abort();
            }
            keep
        });
        for (key, check) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            self.next_id += 1;
            let id = self.next_id;
            let handle = tokio::spawn(run_task(
                check.clone(),
                key.0,
                key.1,
                id,
                self.tx.clone(),
                Arc::clone(&self.pinger),
            ));
            self.tasks.insert(
                key,
                Task {
                    check: check.clone(),
                    id,
                    handle,
                },
            );
        }
    }

    /// Whether `result` comes from the task currently checking its backend.
    pub fn is_current(&self, result: &CheckResult) -> bool {
        self.tasks
            .get(&(result.vip, result.addr))
            .is_some_and(|t| t.id == result.task)
    }

    /// Number of running checks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        for t in self.tasks.values() {
            t.handle.abort();
        }
    }
}

/// A random start offset in `[0, interval)`.
fn start_offset(interval: Duration) -> Duration {
    let ms = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(rand::random_range(0..ms))
}

async fn run_task(
    check: CheckConfig,
    vip: VipKey,
    addr: IpAddr,
    task: u64,
    tx: mpsc::Sender<CheckResult>,
    pinger: Arc<Pinger>,
) {
    let first = Instant::now() + start_offset(check.interval);
    let mut ticks = tokio::time::interval_at(first, check.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let outcome = checks::run(&check, addr, &pinger).await;
        let result = CheckResult {
            vip,
            addr,
            task,
            outcome,
        };
        if tx.send(result).await.is_err() {
            return; // the daemon is shutting down
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text_health: &str) -> Config {
        Config::parse(
            &format!(
                "interface = \"eth0\"\n[[vip]]\nname = \"w\"\naddress = \"127.0.0.2\"\nport = 1\n\
                 [vip.health]\n{text_health}\n\
                 [[vip.backend]]\naddress = \"127.0.0.1\"\n"
            ),
            "t.toml",
        )
        .unwrap()
    }

    #[test]
    fn offsets_stay_inside_the_interval() {
        let i = Duration::from_millis(1000);
        for _ in 0..1000 {
            assert!(start_offset(i) < i);
        }
        assert_eq!(start_offset(Duration::ZERO), Duration::ZERO);
    }

    /// Checks of a closed loopback port fail, on schedule; a reload with the
    /// same check keeps the task, a changed one replaces it and the old
    /// task's results are no longer current.
    #[tokio::test]
    async fn runs_reconciles_and_filters_stale_results() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let a = config(&format!(
            "type = \"tcp\"\nport = {port}\ninterval_ms = 100\ntimeout_ms = 50"
        ));
        let (mut s, mut rx) = Scheduler::new();
        s.reconcile(&a);
        assert_eq!(s.len(), 1);
        let start = Instant::now();
        let mut got = Vec::new();
        while got.len() < 5 {
            got.push(rx.recv().await.unwrap());
        }
        // On a 100 ms grid the 5th result cannot come before 4 intervals
        // have passed (checks never bunch up). No upper bound: a loaded
        // machine only makes it later.
        assert!(
            start.elapsed() >= Duration::from_millis(400),
            "5 results after only {:?}",
            start.elapsed()
        );
        assert!(got.iter().all(|r| !r.outcome.ok && s.is_current(r)));

        s.reconcile(&a);
        assert!(s.is_current(&got[0]), "an unchanged check keeps its task");
        let b = config(&format!(
            "type = \"tcp\"\nport = {port}\ninterval_ms = 200\ntimeout_ms = 50"
        ));
        s.reconcile(&b);
        assert!(!s.is_current(&got[0]), "a changed check gets a new task");
        let mut no_checks = b.clone();
        no_checks.vips[0].backends[0].check = None;
        s.reconcile(&no_checks);
        assert!(s.is_empty());
    }
}
