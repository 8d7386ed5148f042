//! Runs every backend's check on its own schedule: one lightweight tokio
//! task per (VIP, backend), not a thread, so a thousand checks a second fit
//! on one core (the task set and its tick grid: [`super::tasks`]). Results
//! go to the daemon over a channel.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use lb_common::VipKey;
use tokio::sync::mpsc;

use super::{
    Outcome, checks,
    icmp::Pinger,
    tasks::{self, BackendTasks, Target},
};
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

/// The running checks.
pub struct Scheduler {
    tasks: BackendTasks<CheckConfig>,
    tx: mpsc::Sender<CheckResult>,
    pinger: Arc<Pinger>,
}

impl Scheduler {
    /// A scheduler with no checks, and the receiving end of its results.
    pub fn new() -> (Scheduler, mpsc::Receiver<CheckResult>) {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let s = Scheduler {
            tasks: BackendTasks::new(),
            tx,
            pinger: Arc::new(Pinger::default()),
        };
        (s, rx)
    }

    /// Makes the running checks those of `config`'s backends (the daemon
    /// asks the controller instead, which also has the backends added at
    /// runtime: [`Scheduler::reconcile_targets`]).
    pub fn reconcile(&mut self, config: &Config) {
        let targets: Vec<(VipKey, IpAddr, CheckConfig)> = config
            .vips
            .iter()
            .flat_map(|vip| {
                vip.backends
                    .iter()
                    .filter_map(move |b| Some((vip.key(), b.address, b.check.clone()?)))
            })
            .collect();
        self.reconcile_targets(&targets);
    }

    /// Makes the running checks those of `targets` (VIP, backend address,
    /// check): unchanged checks keep running undisturbed, changed ones
    /// restart, gone ones stop.
    pub fn reconcile_targets(&mut self, targets: &[(VipKey, IpAddr, CheckConfig)]) {
        let wanted: HashMap<Target, &CheckConfig> =
            targets.iter().map(|(v, a, c)| ((*v, *a), c)).collect();
        let (tx, pinger) = (&self.tx, &self.pinger);
        self.tasks.reconcile(wanted, |check, (vip, addr), id| {
            tokio::spawn(run_task(
                check.clone(),
                vip,
                addr,
                id,
                tx.clone(),
                Arc::clone(pinger),
            ))
        });
    }

    /// Whether `result` comes from the task currently checking its backend.
    pub fn is_current(&self, result: &CheckResult) -> bool {
        self.tasks
            .is_current((result.vip, result.addr), result.task)
    }

    /// Number of running checks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

async fn run_task(
    check: CheckConfig,
    vip: VipKey,
    addr: IpAddr,
    task: u64,
    tx: mpsc::Sender<CheckResult>,
    pinger: Arc<Pinger>,
) {
    let mut ticks = tasks::grid(check.interval);
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
    use std::time::Duration;

    use tokio::time::Instant;

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
