//! SIGHUP and `xlb reload`: apply a changed config file to the running
//! data plane, or refuse it and keep the running one.

use std::path::Path;
use std::sync::Mutex;

use super::{Controller, KernelNeighbours, lock, probes::Probes};
use crate::{api::Reply, config::Config, control::ApplyError};

/// Applies a changed config file and says how it went. A file that does
/// not parse, that changes what only a restart can change, or that needs
/// more ids than there are is refused and the running config stays. A
/// file that was applied but whose map writes failed part-way is the
/// running config from then on (the controller holds it and retries the
/// writes); the reply says so.
pub(super) fn reload(
    path: &Path,
    running: &mut Config,
    probes: &mut Probes,
    controller: &Mutex<Controller>,
    neighbours: &mut KernelNeighbours,
) -> Reply {
    let started = std::time::Instant::now();
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("reload rejected, keeping the running config:\n{e}");
            return Reply::Error {
                message: format!("reload rejected, the running config stays:\n{e}"),
            };
        }
    };
    if new.interface != running.interface
        || new.server_interface != running.server_interface
        || new.state_dir != running.state_dir
        || new.control_socket != running.control_socket
        || new.control_socket_group != running.control_socket_group
        || new.control_socket_admin_group != running.control_socket_admin_group
        || new.xdp_mode != running.xdp_mode
        || new.conntrack.size != running.conntrack.size
        || new.vrrp != running.vrrp
    {
        let message = "reload rejected: interface, server_interface, state_dir, xdp_mode, \
                       control_socket (and its groups), conntrack.size and [vrrp] change only \
                       with a restart"
            .to_owned();
        tracing::error!("{message}");
        return Reply::Error { message };
    }
    // A key file that became readable to others (or was replaced by
    // another user's) is refused here too, with how to fix it, not only
    // when [sync] changed.
    if let Some(sc) = &new.sync
        && let Err(e) = crate::sync::Key::load(&sc.key_file)
    {
        let message = format!("reload rejected, the running config stays: {e:#}");
        tracing::error!("{message}");
        return Reply::Error { message };
    }
    if let Some(a) = &new.announce
        && let Err(e) = crate::netlink::interface_by_name(&a.interface)
    {
        let message = format!("reload rejected: [announce] interface {}: {e}", a.interface);
        tracing::error!("{message}");
        return Reply::Error { message };
    }
    let read_ms = started.elapsed().as_secs_f64() * 1e3;
    let overrides = lock(controller).runtime_overrides();
    let applying = std::time::Instant::now();
    let result = lock(controller).apply(&new, neighbours);
    match result {
        Err(ApplyError::Refused(e)) => {
            tracing::error!(
                error = format!("{e:#}"),
                "reload rejected, keeping the running config"
            );
            return Reply::Error {
                message: format!("reload rejected, the running config stays: {e:#}"),
            };
        }
        Err(ApplyError::Incomplete(e)) => {
            tracing::error!(
                error = format!("{e:#}"),
                "reload: writing the maps failed part-way; retrying every second"
            );
            probes.reconcile(controller);
            *running = new;
            return Reply::Error {
                message: format!(
                    "reload applied, but writing the maps failed part-way (xlb retries every \
                     second; `xlb status` shows what the data plane has): {e:#}"
                ),
            };
        }
        Ok(()) => {}
    }
    probes.reconcile(controller);
    *running = new;
    tracing::info!(
        vips = running.vips.len(),
        read_ms = format!("{read_ms:.1}"),
        apply_ms = format!("{:.1}", applying.elapsed().as_secs_f64() * 1e3),
        "configuration reloaded"
    );
    let reset = match overrides {
        0 => String::new(),
        1 => "; 1 runtime drain/weight setting was reset to the file's".to_owned(),
        n => format!("; {n} runtime drain/weight settings were reset to the file's"),
    };
    Reply::Ok {
        message: format!(
            "reloaded {}: {} VIPs, {} health checks{reset}",
            path.display(),
            running.vips.len(),
            probes.checks.len()
        ),
    }
}
