//! `xlb run`: load, fill the maps, attach, serve, and clean up on exit.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::{Config, XdpMode},
    control::{self, Controller, Neighbours},
    ctl::{self, Reply, Request},
    dataplane::Dataplane,
    netlink,
};

/// Neighbour entries of the load balancer's NIC, from the kernel.
pub struct KernelNeighbours {
    pub ifindex: u32,
}

impl Neighbours for KernelNeighbours {
    fn lookup(&mut self) -> Result<HashMap<IpAddr, [u8; 6]>> {
        Ok(netlink::neighbours(self.ifindex)?)
    }

    fn probe(&mut self, addr: IpAddr) -> Result<()> {
        Ok(netlink::probe_neighbour(self.ifindex, addr)?)
    }
}

/// How often backend MACs are re-read from the neighbour table; faster
/// while some backend is still unresolved.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(1);
const NEIGHBOUR_REFRESH_UNRESOLVED: Duration = Duration::from_millis(200);

fn lock(c: &Mutex<Controller>) -> std::sync::MutexGuard<'_, Controller> {
    // A panic while holding the lock leaves the maps as they were written;
    // serving on is better than stopping the balancer.
    c.lock().unwrap_or_else(|e| e.into_inner())
}

pub async fn run(config_path: &Path) -> Result<()> {
    let config = Config::load(config_path).map_err(|e| anyhow!("{e}"))?;
    let iface = netlink::interface_by_name(&config.interface).with_context(|| {
        format!(
            "interface {} from {}",
            config.interface,
            config_path.display()
        )
    })?;
    if !iface.up {
        tracing::warn!(interface = %iface.name, "interface is down: no traffic until it comes up");
    }
    let mut dp = Dataplane::load_with_flow_table(config.conntrack.size)?;
    dp.maps
        .set_config(&control::lb_config(iface.mac, true, &config.conntrack))?;
    let mut neighbours = KernelNeighbours {
        ifindex: iface.index,
    };
    let mut controller = Controller::new(dp, &config.interface);
    controller.apply(&config, &mut neighbours)?;
    let (native, generic) = match config.xdp_mode {
        XdpMode::Auto => (true, true),
        XdpMode::Native => (true, false),
        XdpMode::Generic => (false, true),
    };
    check_forwarding(&config)?;
    let attached = controller.attach(native, generic)?;
    controller.maps().add_tx_port(iface.index)?;
    if let Some(server) = &config.server_interface {
        let s = netlink::interface_by_name(server)
            .with_context(|| format!("server_interface {server} from {}", config_path.display()))?;
        controller.attach_to(server, native, generic)?;
        controller.maps().add_tx_port(s.index)?;
        tracing::info!(interface = %server, "attached to the server-side interface");
    }
    tracing::info!(interface = %iface.name, mode = attached.as_str(), vips = config.vips.len(),
        "xlb attached and forwarding");

    let controller = Arc::new(Mutex::new(controller));
    let socket = config.control_socket.clone();
    let served = controller.clone();
    let mut server = tokio::spawn({
        let socket = socket.clone();
        async move {
            ctl::serve(&socket, move |req| match req {
                Request::Status => match lock(&served).status() {
                    Ok(s) => Reply::Status(s),
                    Err(e) => Reply::Error {
                        message: format!("{e:#}"),
                    },
                },
            })
            .await
        }
    });
    let _socket_file = RemoveOnDrop(socket);

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut running = config;
    loop {
        let tick = if lock(&controller).has_unresolved() {
            NEIGHBOUR_REFRESH_UNRESOLVED
        } else {
            NEIGHBOUR_REFRESH
        };
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => {
                if let Some(new) = reload(config_path, &running, &controller, &mut neighbours) {
                    running = new;
                }
            }
            res = &mut server => {
                return Err(match res {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => anyhow!("control socket closed"),
                    Err(e) => anyhow!(e),
                }).context("control socket");
            }
            _ = tokio::time::sleep(tick) => {
                if let Err(e) = lock(&controller).refresh_neighbours(&mut neighbours) {
                    tracing::warn!(error = format!("{e:#}"), "neighbour refresh failed");
                }
            }
        }
    }
    tracing::info!("shutting down: detaching XDP program");
    server.abort();
    Ok(())
}

/// NAT VIPs need the kernel to route: the XDP FIB lookup refuses to when
/// forwarding is off, and packets whose next hop is unresolved are handed
/// to the kernel to forward.
fn check_forwarding(config: &Config) -> Result<()> {
    use crate::config::Mode;
    let nat = |v4: bool| {
        config
            .vips
            .iter()
            .find(|v| v.mode == Mode::Nat && v.address.is_ipv4() == v4)
    };
    for (v4, knob) in [
        (true, "/proc/sys/net/ipv4/ip_forward"),
        (false, "/proc/sys/net/ipv6/conf/all/forwarding"),
    ] {
        let Some(vip) = nat(v4) else { continue };
        let on = std::fs::read_to_string(knob)
            .map(|v| v.trim() != "0")
            .unwrap_or(false);
        if !on {
            anyhow::bail!(
                "NAT VIP {} needs IP forwarding: {knob} is 0 (sysctl -w {}=1)",
                vip.name,
                knob.trim_start_matches("/proc/sys/").replace('/', ".")
            );
        }
    }
    Ok(())
}

/// Applies a changed config file. A file that does not parse, or that
/// changes what only a restart can change, is rejected and the running
/// config stays.
fn reload(
    path: &Path,
    running: &Config,
    controller: &Mutex<Controller>,
    neighbours: &mut KernelNeighbours,
) -> Option<Config> {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("reload rejected, keeping the running config:\n{e}");
            return None;
        }
    };
    if new.interface != running.interface
        || new.control_socket != running.control_socket
        || new.xdp_mode != running.xdp_mode
        || new.conntrack.size != running.conntrack.size
    {
        tracing::error!(
            "reload rejected: interface, xdp_mode, control_socket and conntrack.size change only with a restart"
        );
        return None;
    }
    let mut c = lock(controller);
    let timeouts = c.maps().config().map(|cfg| {
        let forwarding = cfg.flags & lb_common::LB_F_FORWARDING != 0;
        control::lb_config(cfg.mac, forwarding, &new.conntrack)
    });
    if let Err(e) = timeouts.and_then(|cfg| c.maps().set_config(&cfg)) {
        tracing::error!(
            error = format!("{e:#}"),
            "reload failed writing conntrack settings"
        );
        return None;
    }
    match c.apply(&new, neighbours) {
        Ok(()) => {
            tracing::info!(vips = new.vips.len(), "configuration reloaded");
            Some(new)
        }
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "reload failed part-way; maps may mix old and new backends"
            );
            None
        }
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
