//! `xlb run`: bring the data plane up (or take over the one that runs),
//! serve the control socket, health checks, neighbour refresh and VRRP,
//! and on exit leave the data plane forwarding (`xlb down` removes it).
//!
//! - `start`: bring-up against the pinned state.
//! - `reload`: SIGHUP and `xlb reload`.
//! - `down`: taking the node out, also without a running process.
//! - `delivery`: frames forwarded that the NIC cannot send.
//! - `backends`: `xlb backend add|remove`.
//! - `access`: who may ask what on the control socket.
//! - `syncing`: the connection sync's start, and what a reload does to it.

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

mod access;
mod backends;
mod delivery;
mod down;
mod metrics;
mod probes;
mod reload;
mod start;
mod syncing;

pub use access::Policy;
pub use down::down_offline;
pub use start::Options;

use crate::{
    announce::{Announcer, KernelAddresses},
    api::{BackendSpec, Reply, Request, TraceInterface, VrrpStatus},
    config::Config,
    control::{self, Adopted, Neighbours},
    ctl,
    maps::Maps,
    netlink, sync,
    vrrp::{self, Stop},
};

/// The controller of the kernel's maps.
type Controller = control::Controller<Maps>;

/// Route health injection, when the running config has `[announce]`.
type Announcing = Mutex<Option<Announcer<KernelAddresses>>>;

/// Connection sync, when the running config has `[sync]`.
type Syncing = Mutex<Option<sync::Running>>;

/// How often the announcements are re-judged when nothing else happens
/// (changes made through the control socket, such as a drain, show up
/// here).
const ANNOUNCE_TICK: Duration = Duration::from_millis(200);

/// Neighbour entries of the load balancer's NIC, from the kernel.
pub struct KernelNeighbours {
    pub ifindex: u32,
    /// One socket for every probe.
    pub prober: netlink::Prober,
}

impl Neighbours for KernelNeighbours {
    fn lookup(&mut self) -> Result<HashMap<IpAddr, [u8; 6]>> {
        Ok(netlink::neighbours(self.ifindex)?)
    }

    fn probe(&mut self, addr: IpAddr) -> Result<()> {
        Ok(self.prober.probe(self.ifindex, addr)?)
    }
}

/// How often backend MACs are re-read from the neighbour table; faster
/// while some backend is still unresolved.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(1);
const NEIGHBOUR_REFRESH_UNRESOLVED: Duration = Duration::from_millis(200);

/// Most health-check results applied under one hold of the controller.
const HEALTH_BATCH: usize = 4096;

fn lock(c: &Mutex<Controller>) -> std::sync::MutexGuard<'_, Controller> {
    // A panic while holding the lock leaves the maps as they were written;
    // serving on is better than stopping the balancer.
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the control socket hands to the loop, which owns the running
/// config: the reply goes back on the oneshot.
enum Command {
    Reload,
    Down,
    /// `xlb backend add`: the loop owns the health checks and the
    /// neighbour table's socket.
    BackendAdd {
        vip: String,
        backend: BackendSpec,
    },
    BackendRemove {
        vip: String,
        backend: String,
    },
}

use crate::clock::monotonic_ns;
use probes::Probes;
use syncing::lock_syncing;

/// What a trace's reader needs besides the controller's answer, fixed at
/// start: where the records are pinned, the interfaces by index.
struct TraceSite {
    state_dir: PathBuf,
    interfaces: Vec<TraceInterface>,
}

/// How long the control plane vouches for a VRRP master's VIPs: its own
/// master-down interval, the time a backup waits before taking over. A
/// restart within it resumes as master; past it, the data plane stops
/// answering ARP/ND for the VIPs (`CONTROL_LEASE`). `None` without VRRP.
fn lease(config: &Config) -> Option<Duration> {
    let v = config.vrrp.as_ref()?;
    v.groups
        .iter()
        .map(|g| vrrp::state::centis(vrrp::state::master_down_cs(g.priority, g.interval_cs)))
        .max()
}

pub async fn run(config_path: &Path, opts: &Options) -> Result<()> {
    let config = Config::load(config_path).map_err(|e| anyhow!("{e}"))?;
    // An unknown group stops xlb before it touches the data plane.
    let policy = Arc::new(access::Policy::of(&config)?);
    // So does a sync key others may read: refused before anything runs.
    let sync_key = match &config.sync {
        Some(sc) => Some(sync::Key::load(&sc.key_file)?),
        None => None,
    };
    // Bound first: a taken port stops xlb before it touches the data plane.
    let metrics_listener = match &config.metrics {
        Some(m) => Some(metrics::listen(m).await?),
        None => None,
    };
    let iface = netlink::interface_by_name(&config.interface).with_context(|| {
        format!(
            "interface {} from {}",
            config.interface,
            config_path.display()
        )
    })?;
    let mut neighbours = KernelNeighbours {
        ifindex: iface.index,
        prober: netlink::Prober::default(),
    };
    let lease = lease(&config);
    // Per VRRP group: resume as master (the node was master, and the
    // predecessor's lease has not run out), or start as standby.
    let mut resume = Vec::new();
    let (controller, opened) = start::open(
        &config,
        config_path,
        opts,
        |c: &mut Controller, adopted: &Adopted, was_running: bool| {
            let Some(v) = &config.vrrp else {
                return Ok(());
            };
            let leased = was_running && adopted.lease_until_ns > monotonic_ns();
            for g in &v.groups {
                let forwarding = g.vips.iter().all(|name| {
                    config
                        .vips
                        .iter()
                        .find(|vip| vip.name == *name)
                        .and_then(|vip| c.published_forwarding(&vip.key()))
                        == Some(true)
                });
                let again = leased && forwarding;
                if again {
                    tracing::info!(
                        vrid = g.vrid,
                        "VRRP: master before the restart, within its lease: resuming as master"
                    );
                }
                resume.push(again);
                c.set_standby(&g.vips, !again)?;
            }
            Ok(())
        },
    )?;
    let controller = Arc::new(Mutex::new(controller));
    let announcing: Arc<Announcing> = Arc::new(Mutex::new(None));
    let syncing: Arc<Syncing> = Arc::new(Mutex::new(None));
    let vrrp_status = Arc::new(Mutex::new(VrrpStatus::default()));
    let has_vrrp = config.vrrp.is_some();
    let sources = Arc::new(metrics::Sources {
        controller: controller.clone(),
        vrrp: has_vrrp.then(|| vrrp_status.clone()),
        announcing: announcing.clone(),
        syncing: syncing.clone(),
        dataplane: Mutex::new(None),
    });
    let mut interfaces = vec![TraceInterface {
        ifindex: iface.index,
        name: iface.name.clone(),
    }];
    if let Some(name) = &config.server_interface
        && let Ok(s) = netlink::interface_by_name(name)
    {
        interfaces.push(TraceInterface {
            ifindex: s.index,
            name: s.name,
        });
    }
    let trace_site = Arc::new(TraceSite {
        state_dir: opened.state_path().to_owned(),
        interfaces,
    });
    // The socket answers from here on, while the VIPs go in: `xlb status`
    // shows them as they are published. A reload or `down` waits for the
    // loop, which owns the running config (and, for `down`, the data
    // plane): the socket hands them over and waits for the answer.
    let access = policy.socket_access();
    let (listener, _socket_file) = ctl::bind(&config.control_socket, access)?;
    tracing::info!(
        socket = %config.control_socket.display(),
        mode = format!("{:04o}", access.socket_mode()),
        group = policy.socket_group().map(|g| g.label.as_str()),
        "control socket listening"
    );
    let (command_tx, mut command_rx) = mpsc::channel::<(Command, oneshot::Sender<Reply>)>(4);
    let mut server = tokio::spawn({
        let sources = sources.clone();
        async move {
            ctl::serve(listener, move |req, peer| {
                let sources = sources.clone();
                let command_tx = command_tx.clone();
                let trace_site = trace_site.clone();
                let policy = policy.clone();
                async move {
                    if let Err(message) = policy.check(&req, peer.as_ref()) {
                        tracing::warn!(
                            request = access::command(&req),
                            "control socket: {message}"
                        );
                        return Reply::Error { message };
                    }
                    handle_request(req, &sources, &trace_site, &command_tx).await
                }
            })
            .await
        }
    });

    let mut opened = Some(opened);
    let mut up = None;
    if opened.as_ref().is_some_and(start::Opened::attach_first) {
        let o = opened.take().expect("checked");
        up = Some(start::attach(o, &mut lock(&controller), &config)?);
    }
    start::apply(&config, config_path, &controller, &mut neighbours).await?;
    if let Some(o) = opened.take() {
        up = Some(start::attach(o, &mut lock(&controller), &config)?);
    }
    let start::Up {
        dp,
        state,
        status: dataplane,
    } = up.expect("attached before or after the apply");
    *sources.dataplane.lock().unwrap_or_else(|e| e.into_inner()) = Some(dataplane);
    lock(&controller).renew_lease(lease.map_or(0, |l| monotonic_ns() + l.as_nanos() as u64))?;
    if let Some(a) = &config.announce {
        *lock_announcing(&announcing) = Some(Announcer::start(KernelAddresses, a)?);
    }

    let (mut probes, mut results, mut answers) = Probes::new();
    // From the controller: backends added at runtime before a restart are
    // checked and asked too.
    probes.reconcile(&controller);
    if !probes.checks.is_empty() {
        tracing::info!(checks = probes.checks.len(), "health checks started");
    }
    if !probes.agents.is_empty() {
        tracing::info!(agents = probes.agents.len(), "feedback agents asked");
    }

    if let (Some(sc), Some(key)) = (&config.sync, sync_key) {
        *lock_syncing(&syncing) =
            Some(syncing::start(sc, key, &config, state.path(), &controller)?);
    }
    let (stop_vrrp, stop_rx) = tokio::sync::watch::channel(None);
    let mut vrrp_task = match &config.vrrp {
        Some(vc) => {
            let nic = vrrp::Nic {
                name: iface.name.clone(),
                index: iface.index,
                mac: iface.mac,
            };
            let server = match &config.server_interface {
                Some(name) => {
                    let s = netlink::interface_by_name(name)
                        .with_context(|| format!("server_interface {name}"))?;
                    Some(vrrp::Nic {
                        name: s.name,
                        index: s.index,
                        mac: s.mac,
                    })
                }
                None => None,
            };
            let effects = Box::new(DaemonEffects {
                controller: controller.clone(),
            });
            let engine = vrrp::Engine::new(
                vc.clone(),
                nic.clone(),
                server,
                effects,
                vrrp_status.clone(),
                resume,
            )
            .context("starting VRRP")?;
            let tracking = vrrp::start_tracking(vc, &nic).await;
            Some(tokio::spawn(engine.run(tracking, stop_rx)))
        }
        None => None,
    };
    let mut metrics_server = match (config.metrics, metrics_listener) {
        (Some(cfg), Some(listener)) => {
            Some(metrics::start(cfg, listener, sources.clone(), state.path()))
        }
        _ => None,
    };

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut running = config;
    // A deadline rather than a fresh `sleep(tick)` per turn: health results
    // arrive many times a second and would otherwise restart the sleep
    // before it ever fires.
    let mut last_refresh = tokio::time::Instant::now();
    // Renewed four times per lease, so one late turn never lets it lapse.
    let renew_every = lease.map(|l| (l / 4).max(Duration::from_millis(20)));
    let mut last_renew = tokio::time::Instant::now();
    let mut down: Option<oneshot::Sender<Reply>> = None;
    let mut delivery: Vec<delivery::DeliveryWatch> = Vec::new();
    let nics: Vec<(String, u32)> = std::iter::once(&running.interface)
        .chain(running.server_interface.as_ref())
        .filter_map(|n| {
            netlink::interface_by_name(n)
                .ok()
                .map(|i| (i.name, i.index))
        })
        .collect();
    loop {
        let tick = if lock(&controller).has_unresolved() {
            NEIGHBOUR_REFRESH_UNRESOLVED
        } else {
            NEIGHBOUR_REFRESH
        };
        let renew_at = last_renew + renew_every.unwrap_or(Duration::from_secs(3600));
        let announce_on = lock_announcing(&announcing).is_some();
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: reloading {}", config_path.display());
                let _ = reload::reload(config_path, &mut running, &mut probes, &controller, &mut neighbours);
                reannounce(&announcing, &running);
                syncing::resync(&syncing, &running, state.path(), &controller);
                metrics::reconfigure(&mut metrics_server, running.metrics, &sources, state.path()).await;
            }
            Some((command, reply)) = command_rx.recv() => match command {
                Command::Reload => {
                    tracing::info!("reload requested on the control socket");
                    let answer = reload::reload(config_path, &mut running, &mut probes, &controller, &mut neighbours);
                    reannounce(&announcing, &running);
                    syncing::resync(&syncing, &running, state.path(), &controller);
                    metrics::reconfigure(&mut metrics_server, running.metrics, &sources, state.path()).await;
                    let _ = reply.send(answer);
                }
                Command::Down => {
                    tracing::info!("`xlb down` requested on the control socket");
                    down = Some(reply);
                    break;
                }
                Command::BackendAdd { vip, backend } => {
                    let answer = backends::add(&vip, &backend, &controller, &mut neighbours, &mut probes).await;
                    let _ = reply.send(answer);
                }
                Command::BackendRemove { vip, backend } => {
                    let answer = backends::remove(&vip, &backend, &controller, &mut probes);
                    let _ = reply.send(answer);
                }
            },
            Some(first) = results.recv() => {
                // Together with every result that queued up meanwhile: one
                // ring per VIP for all of them.
                let mut batch = vec![first];
                while batch.len() < HEALTH_BATCH
                    && let Ok(r) = results.try_recv()
                {
                    batch.push(r);
                }
                let current = batch
                    .into_iter()
                    .filter(|r| probes.checks.is_current(r))
                    .map(|r| (r.vip, r.addr, r.outcome));
                if let Err(e) = lock(&controller).record_checks(current) {
                    tracing::warn!(error = format!("{e:#}"), "applying health-check results failed");
                }
            }
            Some(first) = answers.recv() => {
                let mut batch = vec![first];
                while batch.len() < HEALTH_BATCH
                    && let Ok(r) = answers.try_recv()
                {
                    batch.push(r);
                }
                let current = batch.into_iter().filter(|r| probes.agents.is_current(r));
                if let Err(e) = lock(&controller).record_feedback(current) {
                    tracing::warn!(error = format!("{e:#}"), "applying feedback failed");
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
            _ = tokio::time::sleep_until(renew_at), if renew_every.is_some() => {
                last_renew = tokio::time::Instant::now();
                let until = monotonic_ns() + lease.map_or(0, |l| l.as_nanos() as u64);
                if let Err(e) = lock(&controller).renew_lease(until) {
                    tracing::warn!(error = format!("{e:#}"), "renewing the control-plane lease failed");
                }
            }
            _ = tokio::time::sleep_until(last_refresh + tick) => {
                last_refresh = tokio::time::Instant::now();
                if let Err(e) = lock(&controller).expire_retired(std::time::Instant::now()) {
                    tracing::warn!(error = format!("{e:#}"), "freeing removed backends failed");
                }
                if let Err(e) = lock(&controller).expire_trace(std::time::Instant::now()) {
                    tracing::warn!(error = format!("{e:#}"), "ending a trace failed");
                }
                if let Err(e) = lock(&controller).refresh_neighbours(&mut neighbours) {
                    tracing::warn!(error = format!("{e:#}"), "neighbour refresh failed");
                }
                watch_delivery(&mut delivery, &controller, &nics);
            }
            _ = tokio::time::sleep(ANNOUNCE_TICK), if announce_on => {}
        }
        // Whatever happened may have changed which VIPs this node can
        // serve: the announcements follow at once.
        if announce_on {
            let serving = lock(&controller).serving();
            if let Some(a) = lock_announcing(&announcing).as_mut() {
                a.update(&serving, std::time::Instant::now());
            }
        }
    }
    let how = if down.is_some() {
        Stop::Down
    } else {
        Stop::Leave
    };
    if let Some(task) = vrrp_task {
        // Down: resign (priority 0 adverts) and withdraw the VIPs before the
        // program goes, so that a backup takes over after its skew time.
        // Leave: the VIPs stay with the data plane.
        let _ = stop_vrrp.send(Some(how));
        match tokio::time::timeout(Duration::from_secs(2), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = format!("{e:#}"), "VRRP shutdown"),
            Ok(Err(e)) => tracing::warn!(error = %e, "VRRP task failed"),
            Err(_) => tracing::warn!("VRRP did not shut down within 2 s"),
        }
    }
    server.abort();
    metrics_server.take();
    if let Err(e) = lock(&controller).end_tracing() {
        tracing::warn!(error = format!("{e:#}"), "ending the trace failed");
    }
    // The reports stop with the sync; the ring buffer stays with the
    // data plane (a full one only counts lost reports).
    lock_syncing(&syncing).take();
    match down {
        None => {
            tracing::info!(state = %state.path().display(),
                "exiting; the data plane keeps forwarding with its pinned state (`xlb down` removes it)");
            // The process's handles go; the pinned links keep the program
            // attached.
            drop(dp);
        }
        Some(reply) => {
            // Routers stop sending before the program goes: withdraw, then
            // keep forwarding what is still in flight for a while.
            let serving = lock(&controller).serving();
            let withdrawal = lock_announcing(&announcing).as_mut().map(|a| {
                let n = a.withdraw_all(&serving);
                (
                    n,
                    Duration::from_millis(u64::from(a.config().withdraw_wait_ms)),
                )
            });
            let mut withdrawn = String::new();
            if let Some((n, wait)) = withdrawal {
                tracing::info!(
                    addresses = n,
                    wait_ms = wait.as_millis() as u64,
                    "down: announcements withdrawn; forwarding on while the routers converge"
                );
                withdrawn = format!(
                    "{n} announcements withdrawn, forwarded {} ms more, ",
                    wait.as_millis()
                );
                tokio::time::sleep(wait).await;
            }
            let done = state.remove().map(|()| drop(dp));
            let answer = match done {
                Ok(()) => {
                    tracing::info!("down: program detached, pinned state removed");
                    let vrrp = if has_vrrp {
                        "VRRP resigned and its addresses withdrawn, "
                    } else {
                        ""
                    };
                    Reply::Ok {
                        message: format!(
                            "down: {vrrp}{withdrawn}program detached, pinned state removed"
                        ),
                    }
                }
                Err(e) => Reply::Error {
                    message: format!("down: {e:#}"),
                },
            };
            let _ = reply.send(answer);
            // Give the socket task a moment to write the reply.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Compares what the data plane forwarded with what each NIC failed to
/// send since the last turn (see `delivery`).
fn watch_delivery(
    watches: &mut Vec<delivery::DeliveryWatch>,
    controller: &Mutex<Controller>,
    nics: &[(String, u32)],
) {
    use crate::maps::MapStore as _;
    let Ok(globals) = lock(controller).maps().globals() else {
        return;
    };
    let forwarded = globals[lb_common::global::FORWARD as usize].packets;
    watches.resize_with(nics.len(), Default::default);
    for ((name, index), w) in nics.iter().zip(watches.iter_mut()) {
        let Ok(facts) = netlink::link_facts(*index) else {
            continue;
        };
        if let Some(b) = w.observe(forwarded, facts.tx_dropped, std::time::Instant::now()) {
            let hint = if facts.veth {
                "a veth delivers XDP_TX/XDP_REDIRECT frames only if its peer runs an XDP \
                 program (or has GRO on: ethtool -K PEER gro on); or set xdp_mode = \"generic\""
            } else {
                "check the driver's XDP transmit support (ethtool -S)"
            };
            tracing::error!(interface = %name, forwarded = b.forwarded, tx_dropped = b.dropped,
                "the NIC drops what the data plane forwards: {hint}");
        }
    }
}

fn lock_announcing(
    a: &Announcing,
) -> std::sync::MutexGuard<'_, Option<Announcer<KernelAddresses>>> {
    a.lock().unwrap_or_else(|e| e.into_inner())
}

/// After a reload: the announcer follows the running config's
/// `[announce]` (started, reconfigured, or withdrawn and stopped).
fn reannounce(announcing: &Announcing, running: &Config) {
    let mut a = lock_announcing(announcing);
    match (a.as_mut(), &running.announce) {
        (Some(current), Some(cfg)) => {
            if let Err(e) = current.reconfigure(cfg) {
                tracing::error!(error = format!("{e:#}"), "announce: reconfiguring failed");
            }
        }
        (None, Some(cfg)) => match Announcer::start(KernelAddresses, cfg) {
            Ok(new) => *a = Some(new),
            Err(e) => tracing::error!(error = format!("{e:#}"), "announce: starting failed"),
        },
        (Some(current), None) => {
            let n = current.withdraw_all(&[]);
            tracing::info!(
                addresses = n,
                "announce: [announce] removed, every address withdrawn"
            );
            *a = None;
        }
        (None, None) => {}
    }
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

/// Carries out `req`, which the caller has allowed (`access`).
async fn handle_request(
    req: Request,
    sources: &metrics::Sources,
    trace_site: &TraceSite,
    commands: &mpsc::Sender<(Command, oneshot::Sender<Reply>)>,
) -> Reply {
    let error = |e: anyhow::Error| Reply::Error {
        message: format!("{e:#}"),
    };
    let command = match req {
        Request::Status => {
            return sources
                .status()
                .map_or_else(error, |s| Reply::Status(Box::new(s)));
        }
        Request::Backend {
            vip,
            backend,
            action,
        } => {
            return lock(&sources.controller)
                .backend_action(&vip, &backend, action)
                .map_or_else(error, |message| Reply::Ok { message });
        }
        Request::Trace(spec) => {
            let started = lock(&sources.controller).start_trace(
                &spec,
                std::time::Instant::now(),
                monotonic_ns(),
            );
            return match started {
                Ok(mut t) => {
                    let pin = |name: &str| trace_site.state_dir.join(name).display().to_string();
                    t.ring_pin = pin(lb_common::map_names::TRACE_EVENTS);
                    t.stats_pin = pin(lb_common::map_names::TRACE_STATS);
                    t.interfaces = trace_site.interfaces.clone();
                    Reply::Trace(Box::new(t))
                }
                Err(e) => error(e),
            };
        }
        Request::TraceStop { id } => {
            return lock(&sources.controller)
                .stop_trace(id)
                .map_or_else(error, |()| Reply::Ok {
                    message: format!("trace {id} stopped"),
                });
        }
        Request::BackendAdd { vip, backend } => Command::BackendAdd { vip, backend },
        Request::BackendRemove { vip, backend } => Command::BackendRemove { vip, backend },
        Request::Reload => Command::Reload,
        Request::Down => Command::Down,
    };
    let (tx, rx) = oneshot::channel();
    if commands.send((command, tx)).await.is_err() {
        return error(anyhow!("the daemon is shutting down"));
    }
    rx.await
        .unwrap_or_else(|_| error(anyhow!("the daemon dropped the request")))
}

/// VRRP's effects on this node: the per-VIP standby flag in the maps and
/// the groups' addresses on the NICs.
struct DaemonEffects {
    controller: Arc<Mutex<Controller>>,
}

impl vrrp::Effects for DaemonEffects {
    fn set_forwarding(&mut self, vips: &[String], on: bool) -> Result<()> {
        lock(&self.controller).set_standby(vips, !on)
    }

    fn assign(&mut self, nic: &vrrp::Nic, addrs: &[IpAddr]) -> Result<()> {
        vrrp::assign_addresses(nic.index, addrs).with_context(|| format!("on {}", nic.name))
    }

    fn withdraw(&mut self, nic: &vrrp::Nic, addrs: &[IpAddr]) -> Result<()> {
        vrrp::withdraw_addresses(nic.index, addrs).with_context(|| format!("on {}", nic.name))
    }
}
