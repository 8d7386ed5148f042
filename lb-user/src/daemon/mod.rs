//! `xlb run`: load, fill the maps, attach, serve, and clean up on exit.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot},
};

use crate::{
    api::{Reply, Request, VrrpStatus},
    config::{Config, XdpMode},
    control::{self, ApplyError, Neighbours, Node},
    ctl,
    dataplane::Dataplane,
    health::Scheduler,
    maps::Maps,
    netlink, vrrp,
};

/// The controller of the kernel's maps.
type Controller = control::Controller<Maps>;

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
    // Dropping `dp` detaches the program: it lives until this function
    // returns.
    let (mut dp, maps) = Dataplane::load_with_flow_table(config.conntrack.size)?;
    let mut neighbours = KernelNeighbours {
        ifindex: iface.index,
    };
    let mut controller = Controller::new(
        maps,
        Node {
            interface: config.interface.clone(),
            mac: iface.mac,
        },
    );
    // With VRRP every group's VIPs start as standby, before the program is
    // attached; the engine switches a group's VIPs on when it becomes master.
    if let Some(v) = &config.vrrp {
        for g in &v.groups {
            controller.set_standby(&g.vips, true)?;
        }
    }
    controller.apply(&config, &mut neighbours)?;
    let (native, generic) = match config.xdp_mode {
        XdpMode::Auto => (true, true),
        XdpMode::Native => (true, false),
        XdpMode::Generic => (false, true),
    };
    check_forwarding(&config)?;
    // After the first `apply`, so that the first packet already sees every
    // VIP.
    let attached = dp.attach(&config.interface, native, generic)?;
    controller.set_attached(attached);
    controller.maps_mut().add_tx_port(iface.index)?;
    if let Some(server) = &config.server_interface {
        let s = netlink::interface_by_name(server)
            .with_context(|| format!("server_interface {server} from {}", config_path.display()))?;
        dp.attach(server, native, generic)?;
        controller.maps_mut().add_tx_port(s.index)?;
        tracing::info!(interface = %server, "attached to the server-side interface");
    }
    tracing::info!(interface = %iface.name, mode = attached.as_str(), vips = config.vips.len(),
        vrrp = config.vrrp.is_some(), "xlb attached");

    let (mut checks, mut results) = Scheduler::new();
    checks.reconcile(&config);
    if !checks.is_empty() {
        tracing::info!(checks = checks.len(), "health checks started");
    }

    let controller = Arc::new(Mutex::new(controller));
    let vrrp_status = Arc::new(Mutex::new(VrrpStatus::default()));
    let (stop_vrrp, stop_rx) = tokio::sync::watch::channel(false);
    let mut vrrp_task = match &config.vrrp {
        Some(vc) => {
            let nic = vrrp::Nic {
                name: iface.name.clone(),
                index: iface.index,
                mac: iface.mac,
            };
            let effects = Box::new(DaemonEffects {
                controller: controller.clone(),
                ifindex: iface.index,
            });
            let engine = vrrp::Engine::new(vc.clone(), nic.clone(), effects, vrrp_status.clone())
                .context("starting VRRP")?;
            let tracking = vrrp::start_tracking(vc, &nic).await;
            Some(tokio::spawn(engine.run(tracking, stop_rx)))
        }
        None => None,
    };
    let has_vrrp = vrrp_task.is_some();
    let socket = config.control_socket.clone();
    let served = controller.clone();
    let served_vrrp = vrrp_status.clone();
    // A reload needs the running config and the checks, which this loop
    // owns: the socket hands it over and waits for the answer.
    let (reload_tx, mut reload_rx) = mpsc::channel::<oneshot::Sender<Reply>>(4);
    let mut server = tokio::spawn({
        let socket = socket.clone();
        async move {
            ctl::serve(&socket, move |req| {
                let served = served.clone();
                let served_vrrp = has_vrrp.then(|| served_vrrp.clone());
                let reload_tx = reload_tx.clone();
                async move {
                    handle_request(req, &served, served_vrrp.as_deref(), &reload_tx).await
                }
            })
            .await
        }
    });
    let _socket_file = RemoveOnDrop(socket);

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut running = config;
    // A deadline rather than a fresh `sleep(tick)` per turn: health results
    // arrive many times a second and would otherwise restart the sleep
    // before it ever fires.
    let mut last_refresh = tokio::time::Instant::now();
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
                tracing::info!("SIGHUP: reloading {}", config_path.display());
                let _ = reload(config_path, &mut running, &mut checks, &controller, &mut neighbours);
            }
            Some(reply) = reload_rx.recv() => {
                tracing::info!("reload requested on the control socket");
                let answer = reload(config_path, &mut running, &mut checks, &controller, &mut neighbours);
                let _ = reply.send(answer);
            }
            Some(result) = results.recv() => {
                if checks.is_current(&result)
                    && let Err(e) = lock(&controller).record_check(&result.vip, result.addr, result.outcome)
                {
                    tracing::warn!(error = format!("{e:#}"), "applying a health-check result failed");
                }
            }
            res = async { vrrp_task.as_mut().expect("guarded").await }, if vrrp_task.is_some() => {
                return Err(match res {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => anyhow!("VRRP stopped"),
                    Err(e) => anyhow!(e),
                }).context("VRRP");
            }
            res = &mut server => {
                return Err(match res {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => anyhow!("control socket closed"),
                    Err(e) => anyhow!(e),
                }).context("control socket");
            }
            _ = tokio::time::sleep_until(last_refresh + tick) => {
                last_refresh = tokio::time::Instant::now();
                if let Err(e) = lock(&controller).expire_retired(std::time::Instant::now()) {
                    tracing::warn!(error = format!("{e:#}"), "freeing removed backends failed");
                }
                if let Err(e) = lock(&controller).refresh_neighbours(&mut neighbours) {
                    tracing::warn!(error = format!("{e:#}"), "neighbour refresh failed");
                }
            }
        }
    }
    if let Some(task) = vrrp_task {
        // Resign (priority 0 adverts) and withdraw the VIPs before the
        // program goes, so that a backup takes over after its skew time.
        let _ = stop_vrrp.send(true);
        match tokio::time::timeout(Duration::from_secs(2), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = format!("{e:#}"), "VRRP shutdown"),
            Ok(Err(e)) => tracing::warn!(error = %e, "VRRP task failed"),
            Err(_) => tracing::warn!("VRRP did not shut down within 2 s"),
        }
    }
    tracing::info!("shutting down: detaching XDP program");
    server.abort();
    drop(dp);
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

async fn handle_request(
    req: Request,
    controller: &Mutex<Controller>,
    vrrp_status: Option<&Mutex<VrrpStatus>>,
    reload: &mpsc::Sender<oneshot::Sender<Reply>>,
) -> Reply {
    let error = |e: anyhow::Error| Reply::Error {
        message: format!("{e:#}"),
    };
    match req {
        Request::Status => match lock(controller).status() {
            Ok(mut s) => {
                s.vrrp = vrrp_status.map(vrrp::status_now);
                Reply::Status(s)
            }
            Err(e) => error(e),
        },
        Request::Backend {
            vip,
            backend,
            action,
        } => lock(controller)
            .backend_action(&vip, &backend, action)
            .map_or_else(error, |message| Reply::Ok { message }),
        Request::Reload => {
            let (tx, rx) = oneshot::channel();
            if reload.send(tx).await.is_err() {
                return error(anyhow!("the daemon is shutting down"));
            }
            rx.await
                .unwrap_or_else(|_| error(anyhow!("the daemon dropped the reload")))
        }
    }
}

/// Applies a changed config file and says how it went. A file that does
/// not parse, that changes what only a restart can change, or that needs
/// more ids than there are is refused and the running config stays. A
/// file that was applied but whose map writes failed part-way is the
/// running config from then on (the controller holds it and retries the
/// writes); the reply says so.
fn reload(
    path: &Path,
    running: &mut Config,
    checks: &mut Scheduler,
    controller: &Mutex<Controller>,
    neighbours: &mut KernelNeighbours,
) -> Reply {
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
        || new.control_socket != running.control_socket
        || new.xdp_mode != running.xdp_mode
        || new.conntrack.size != running.conntrack.size
        || new.vrrp != running.vrrp
    {
        let message = "reload rejected: interface, server_interface, xdp_mode, control_socket, \
                       conntrack.size and [vrrp] change only with a restart"
            .to_owned();
        tracing::error!("{message}");
        return Reply::Error { message };
    }
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
            checks.reconcile(&new);
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
    checks.reconcile(&new);
    *running = new;
    tracing::info!(vips = running.vips.len(), "configuration reloaded");
    Reply::Ok {
        message: format!(
            "reloaded {}: {} VIPs, {} health checks; runtime drain/weight settings were reset",
            path.display(),
            running.vips.len(),
            checks.len()
        ),
    }
}

/// VRRP's effects on this node: the per-VIP standby flag in the maps and
/// the VIP addresses on the NIC.
struct DaemonEffects {
    controller: Arc<Mutex<Controller>>,
    ifindex: u32,
}

impl vrrp::Effects for DaemonEffects {
    fn set_forwarding(&mut self, vips: &[String], on: bool) -> Result<()> {
        lock(&self.controller).set_standby(vips, !on)
    }

    fn assign(&mut self, addrs: &[IpAddr]) -> Result<()> {
        vrrp::assign_addresses(self.ifindex, addrs)
    }

    fn withdraw(&mut self, addrs: &[IpAddr]) -> Result<()> {
        vrrp::withdraw_addresses(self.ifindex, addrs)
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
