//! The daemon's per-backend tasks, health checks and feedback agents,
//! kept equal to the controller's backends (those of the file and those
//! added at runtime) after anything that changes them: the start, a
//! reload, `xlb backend add` and `remove`.

use std::sync::Mutex;

use tokio::sync::mpsc;

use super::{Controller, lock};
use crate::{
    feedback::{AgentResult, Agents},
    health::{CheckResult, Scheduler},
};

pub(super) struct Probes {
    pub(super) checks: Scheduler,
    pub(super) agents: Agents,
}

impl Probes {
    /// None running yet, and the receiving ends of their results.
    pub(super) fn new() -> (
        Probes,
        mpsc::Receiver<CheckResult>,
        mpsc::Receiver<AgentResult>,
    ) {
        let (checks, results) = Scheduler::new();
        let (agents, answers) = Agents::new();
        (Probes { checks, agents }, results, answers)
    }

    /// Starts and stops tasks to match the controller's backends.
    pub(super) fn reconcile(&mut self, controller: &Mutex<Controller>) {
        let (checks, agents) = {
            let c = lock(controller);
            (c.check_targets(), c.agent_targets())
        };
        self.checks.reconcile_targets(&checks);
        self.agents.reconcile_targets(&agents);
    }
}
