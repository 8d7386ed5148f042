//! `xlb backend add|remove` in the daemon: the wait for a new DSR
//! backend's MAC, so that the reply comes once the backend is in the ring.
//! (Who may: `access`.)

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use super::{Controller, KernelNeighbours, lock, probes::Probes};
use crate::{
    api::{BackendSpec, Reply},
    control::Neighbours as _,
};

/// How long an add waits for the kernel to resolve a new DSR backend's MAC
/// before it replies without it (the neighbour refresh adds the backend to
/// the ring when the MAC comes).
const RESOLVE_WAIT: Duration = Duration::from_secs(1);

/// How often the neighbour table is read meanwhile.
const RESOLVE_POLL: Duration = Duration::from_millis(2);

/// Adds `spec` to VIP `vip`, starts its health check and agent, and, for a DSR
/// backend whose MAC is not known yet, waits up to [`RESOLVE_WAIT`] for it.
pub(super) async fn add(
    vip: &str,
    spec: &BackendSpec,
    controller: &Mutex<Controller>,
    neighbours: &mut KernelNeighbours,
    probes: &mut Probes,
) -> Reply {
    let started = Instant::now();
    let added = lock(controller).add_backend(vip, spec, neighbours);
    let added = match added {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(vip, address = %spec.address, error = format!("{e:#}"),
                "xlb backend add refused");
            return Reply::Error {
                message: format!("{e:#}"),
            };
        }
    };
    probes.reconcile(controller);
    let mut message = added.message;
    if !added.in_ring && lock(controller).waits_for_mac(&added.vip, added.address) {
        let deadline = started + RESOLVE_WAIT;
        loop {
            tokio::time::sleep(RESOLVE_POLL).await;
            let known = neighbours
                .lookup()
                .is_ok_and(|t| t.contains_key(&added.address));
            if known {
                let mut c = lock(controller);
                if let Err(e) = c.refresh_neighbours(neighbours) {
                    tracing::warn!(error = format!("{e:#}"), "neighbour refresh failed");
                }
                let ms = started.elapsed().as_secs_f64() * 1e3;
                if c.in_ring(&added.vip, added.address) {
                    tracing::info!(vip, backend = %added.name, elapsed_ms = format!("{ms:.1}"),
                        "runtime backend's MAC resolved: in the ring");
                    message.push_str(&format!(
                        "; MAC resolved: in the ring {ms:.1} ms after the request"
                    ));
                } else {
                    message.push_str(&format!("; MAC resolved after {ms:.1} ms"));
                }
                break;
            }
            if Instant::now() >= deadline {
                message.push_str(&format!(
                    "; its MAC is still unknown after {} ms: it joins the ring once the \
                     neighbour table has it",
                    RESOLVE_WAIT.as_millis()
                ));
                break;
            }
        }
    }
    Reply::Ok { message }
}

/// Removes runtime backend `backend` of VIP `vip` and stops its check and
/// agent.
pub(super) fn remove(
    vip: &str,
    backend: &str,
    controller: &Mutex<Controller>,
    probes: &mut Probes,
) -> Reply {
    let removed = lock(controller).remove_backend(vip, backend);
    match removed {
        Ok(message) => {
            probes.reconcile(controller);
            Reply::Ok { message }
        }
        Err(e) => Reply::Error {
            message: format!("{e:#}"),
        },
    }
}
