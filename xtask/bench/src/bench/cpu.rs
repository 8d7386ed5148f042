//! CPU time spent on an end-to-end path, counted per task so that what
//! other work on a shared machine burns stays out of it.
//!
//! On veth the whole path runs in softirq, and a softirq runs where it was
//! raised: in the task that sent the packet (the generator, wrk, nginx,
//! HAProxy, all in this run's namespaces or this process) or, once the
//! kernel defers it, in a `ksoftirqd` thread. So the path's CPU time is the
//! sum over
//! * this process and its reaped children (`getrusage`: the generator
//!   threads, wrk),
//! * every thread of every process in the run's namespaces (xlb, HAProxy,
//!   nginx; `/proc/<pid>/task/*/schedstat`),
//! * the `ksoftirqd` threads.
//!
//! All three are the scheduler's run time in ns (without IRQ time
//! accounting the kernel leaves softirq time in the task it interrupted),
//! not tick samples. What the sum misses: softirq work that interrupts
//! another machine user's task or the idle task (timers, e.g. TCP delayed
//! ACKs), and it counts what other users defer to `ksoftirqd`.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt as _;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use nix::sys::resource::{UsageWho, getrusage};
use xlb_testbed::netns::NetNs;

/// Reads the CPU time of one run's tasks (see the module docs).
pub struct CpuClock {
    /// Inodes of the run's network namespaces.
    namespaces: HashSet<u64>,
    /// Processes in them counted apart (a load balancer's control plane:
    /// a cost per second, not per packet).
    apart: Vec<u32>,
}

/// CPU time so far: of the path's tasks, and of the processes counted
/// apart.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reading {
    pub path: Duration,
    pub apart: Duration,
}

impl std::ops::Sub for Reading {
    type Output = Reading;
    fn sub(self, before: Reading) -> Reading {
        Reading {
            path: self.path.saturating_sub(before.path),
            apart: self.apart.saturating_sub(before.apart),
        }
    }
}

impl CpuClock {
    /// A clock over the tasks of `namespaces` (and this process, its
    /// children and `ksoftirqd`), with the processes `apart` (and their
    /// threads) counted separately.
    pub fn new<'a>(
        namespaces: impl IntoIterator<Item = &'a NetNs>,
        apart: &[u32],
    ) -> Result<CpuClock> {
        let namespaces = namespaces
            .into_iter()
            .map(|ns| {
                let path = format!("/run/netns/{}", ns.name());
                std::fs::metadata(&path)
                    .map(|m| m.ino())
                    .with_context(|| format!("stat {path}"))
            })
            .collect::<Result<_>>()?;
        Ok(CpuClock {
            namespaces,
            apart: apart.to_vec(),
        })
    }

    /// CPU time so far of every task counted (see the module docs).
    pub fn now(&self) -> Result<Reading> {
        let mut ns = 0u64;
        let mut apart = 0u64;
        for who in [UsageWho::RUSAGE_SELF, UsageWho::RUSAGE_CHILDREN] {
            let r = getrusage(who).context("getrusage")?;
            for t in [r.user_time(), r.system_time()] {
                ns += t.tv_sec() as u64 * 1_000_000_000 + t.tv_usec() as u64 * 1_000;
            }
        }
        let me = std::process::id();
        for entry in std::fs::read_dir("/proc").context("reading /proc")? {
            let Some(pid) = entry?
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            if self.apart.contains(&pid) {
                apart += process_run_time(pid);
                continue;
            }
            // A process may exit while we look: it then counts nothing here
            // (and, if it was our child, in RUSAGE_CHILDREN once reaped).
            let counted = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("ksoftirqd/"))
                || std::fs::read_link(format!("/proc/{pid}/ns/net"))
                    .ok()
                    .and_then(|l| netns_inode(l.to_str()?))
                    .is_some_and(|ino| self.namespaces.contains(&ino));
            if counted {
                ns += process_run_time(pid);
            }
        }
        Ok(Reading {
            path: Duration::from_nanos(ns),
            apart: Duration::from_nanos(apart),
        })
    }
}

/// Run time in ns of every live thread of `pid` (0 if it is gone).
fn process_run_time(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| {
            let path = t.ok()?.path().join("schedstat");
            parse_schedstat(&std::fs::read_to_string(path).ok()?)
        })
        .sum()
}

/// The run time (first field, ns) of a `schedstat` line.
fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The inode of a `/proc/<pid>/ns/net` link (`net:[4026531840]`).
fn netns_inode(link: &str) -> Option<u64> {
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// The machine's busy time so far over all CPUs (user, nice, system, irq,
/// softirq; not idle, iowait or steal), from `/proc/stat`, for context:
/// how much of the machine the counted tasks were.
pub fn machine_busy() -> Result<Duration> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let ticks = parse_proc_stat_busy(&text).ok_or_else(|| anyhow!("no cpu line in /proc/stat"))?;
    // USER_HZ is 100 on every Linux architecture xlb runs on.
    Ok(Duration::from_millis(ticks * 10))
}

/// Busy ticks of the aggregate `cpu` line of `/proc/stat`.
fn parse_proc_stat_busy(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    Some(f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_run_time_of_a_schedstat_line() {
        assert_eq!(
            parse_schedstat("19268818516 42479045965 237649\n"),
            Some(19268818516)
        );
        assert_eq!(parse_schedstat(""), None);
    }

    #[test]
    fn reads_the_inode_of_a_netns_link() {
        assert_eq!(netns_inode("net:[4026531840]"), Some(4026531840));
        assert_eq!(netns_inode("mnt:[4026531840]"), None);
    }

    #[test]
    fn busy_time_leaves_out_idle_iowait_and_steal() {
        let text = "cpu  100 2 30 5000 7 1 40 900 0 0\ncpu0 50 1 15 2500 3 0 20 450 0 0\n";
        assert_eq!(parse_proc_stat_busy(text), Some(100 + 2 + 30 + 1 + 40));
        assert_eq!(parse_proc_stat_busy("intr 1 2\n"), None);
    }
}
