//! One periodic tokio task per (VIP, backend), as the health checks and
//! the feedback agents both run them: the set of running tasks, kept equal
//! to what is wanted (unchanged tasks go on, changed ones restart, gone
//! ones stop), each with an id so that the results of a replaced task can
//! be told apart; and the tick grid each task runs on.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use lb_common::VipKey;
use tokio::{
    task::JoinHandle,
    time::{Instant, Interval, MissedTickBehavior},
};

/// A backend of a VIP, as its task is known by.
pub type Target = (VipKey, IpAddr);

struct Task<C> {
    config: C,
    id: u64,
    handle: JoinHandle<()>,
}

/// The running tasks, each started from a configuration `C`.
pub struct BackendTasks<C> {
    tasks: HashMap<Target, Task<C>>,
    next_id: u64,
}

impl<C: Clone + PartialEq> BackendTasks<C> {
    pub fn new() -> Self {
        Self {
            tasks: HashMap::new(),
            next_id: 0,
        }
    }

    /// Makes the running tasks those of `wanted`: a task whose
    /// configuration is unchanged keeps running undisturbed, a changed one
    /// restarts, a gone one stops. `spawn` starts one: its configuration,
    /// its backend, its id.
    pub fn reconcile(
        &mut self,
        wanted: HashMap<Target, &C>,
        mut spawn: impl FnMut(&C, Target, u64) -> JoinHandle<()>,
    ) {
        self.tasks.retain(|k, task| {
            let keep = wanted.get(k).is_some_and(|c| **c == task.config);
            if !keep {
                task.handle.abort();
            }
            keep
        });
        for (target, config) in wanted {
            if self.tasks.contains_key(&target) {
                continue;
            }
            self.next_id += 1;
            let id = self.next_id;
            let handle = spawn(config, target, id);
            self.tasks.insert(
                target,
                Task {
                    config: config.clone(),
                    id,
                    handle,
                },
            );
        }
    }

    /// Whether task `id` is the one currently running for `target`.
    pub fn is_current(&self, target: Target, id: u64) -> bool {
        self.tasks.get(&target).is_some_and(|t| t.id == id)
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl<C: Clone + PartialEq> Default for BackendTasks<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> Drop for BackendTasks<C> {
    fn drop(&mut self) {
        for t in self.tasks.values() {
            t.handle.abort();
        }
    }
}

/// The ticks of a task that runs every `interval`: the first at a random
/// point of the first interval, so that tasks started together (at
/// start-up, after a reload) do not all fire at once, then on a fixed grid
/// (`interval_at`), so that a slow run does not push the later ones back;
/// ticks missed while the process was stalled are skipped, not fired in a
/// burst.
pub fn grid(interval: Duration) -> Interval {
    let mut ticks = tokio::time::interval_at(Instant::now() + start_offset(interval), interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    ticks
}

/// A random start offset in `[0, interval)`.
fn start_offset(interval: Duration) -> Duration {
    let ms = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(rand::random_range(0..ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_stay_inside_the_interval() {
        let i = Duration::from_millis(1000);
        for _ in 0..1000 {
            assert!(start_offset(i) < i);
        }
        assert_eq!(start_offset(Duration::ZERO), Duration::ZERO);
    }
}
