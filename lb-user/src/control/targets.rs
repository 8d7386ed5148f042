//! What the daemon's per-backend tasks ask, from the model: every
//! backend's health check and feedback agent, those of the file and those
//! added at runtime alike, so that the daemon starts and stops its tasks
//! from one place whatever changed the backends.

use std::net::IpAddr;

use lb_common::VipKey;

use super::Controller;
use crate::{
    config::{AgentConfig, CheckConfig},
    maps::MapStore,
};

impl<M: MapStore> Controller<M> {
    /// Every checked backend: VIP, address, its check.
    pub fn check_targets(&self) -> Vec<(VipKey, IpAddr, CheckConfig)> {
        self.vips
            .values()
            .flat_map(|v| {
                v.backends
                    .iter()
                    .filter_map(|b| Some((v.key, b.config.address, b.config.check.clone()?)))
            })
            .collect()
    }

    /// Every backend whose VIP's feedback comes from an agent: VIP,
    /// address, the agent.
    pub fn agent_targets(&self) -> Vec<(VipKey, IpAddr, AgentConfig)> {
        self.vips
            .values()
            .flat_map(|v| {
                v.backends.iter().filter_map(|b| {
                    let agent = b.feedback.as_ref()?.agent()?;
                    Some((v.key, b.config.address, agent.clone()))
                })
            })
            .collect()
    }
}
