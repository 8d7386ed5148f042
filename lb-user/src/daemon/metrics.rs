//! What `xlb status` and `/metrics` read, and the metrics server of
//! `[metrics]`: started with the daemon, restarted by a reload that
//! changes the section, stopped by one that removes it.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::Result;
use tokio::{net::TcpListener, task::JoinHandle};

use super::{Announcing, Controller, Syncing, lock, lock_announcing, lock_syncing};
use crate::{
    api::{DataplaneStatus, Status, VrrpStatus},
    config::MetricsConfig,
    maps::ConnectionTables,
    metrics::{self, BuildInfo, COUNT_EVERY, Snapshot, TablesCount, server},
    vrrp,
};

/// Where the status comes from: the controller (its model and the data
/// plane's counters), VRRP's snapshot, the announcer and the sync.
pub(super) struct Sources {
    pub(super) controller: Arc<Mutex<Controller>>,
    /// `None` without `[vrrp]`.
    pub(super) vrrp: Option<Arc<Mutex<VrrpStatus>>>,
    pub(super) announcing: Arc<Announcing>,
    pub(super) syncing: Arc<Syncing>,
    /// Known once the program is attached.
    pub(super) dataplane: Mutex<Option<DataplaneStatus>>,
}

impl Sources {
    /// What `xlb status` shows.
    pub(super) fn status(&self) -> Result<Status> {
        Ok(self.status_with(|_| ())?.0)
    }

    /// The status, and `also` of the controller read under the same lock.
    /// One lock at a time: the daemon's loop takes the announcer's, then
    /// the controller's.
    fn status_with<T>(&self, also: impl FnOnce(&Controller) -> T) -> Result<(Status, T)> {
        let (status, extra) = {
            let c = lock(&self.controller);
            (c.status(), also(&c))
        };
        let mut s = status?;
        s.vrrp = self.vrrp.as_deref().map(vrrp::status_now);
        s.dataplane = self
            .dataplane
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        s.sync = lock_syncing(&self.syncing)
            .as_ref()
            .map(|r| r.shared.status());
        if let Some(a) = lock_announcing(&self.announcing).as_ref() {
            for v in &mut s.vips {
                v.announce = a.status(&v.name);
            }
        }
        Ok((s, extra))
    }
}

/// The connection tables and their last count.
struct Tables {
    maps: Option<ConnectionTables>,
    last: Mutex<Option<(Instant, TablesCount)>>,
}

impl Tables {
    fn open(state_dir: &Path) -> Tables {
        let maps = ConnectionTables::open(state_dir)
            .inspect_err(|e| {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "metrics: the connection tables cannot be counted"
                );
            })
            .ok();
        Tables {
            maps,
            last: Mutex::new(None),
        }
    }

    /// The last count, walked again when older than [`COUNT_EVERY`].
    fn count(&self) -> Option<TablesCount> {
        let maps = self.maps.as_ref()?;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = last
            .as_ref()
            .filter(|(at, _)| at.elapsed() < COUNT_EVERY)
            .copied();
        let (at, count) = match fresh {
            Some(c) => c,
            None => {
                let started = Instant::now();
                let (flows, nat_reverse) = maps.count();
                let count = TablesCount {
                    flows,
                    nat_reverse,
                    took: started.elapsed(),
                    age: std::time::Duration::ZERO,
                };
                *last = Some((started, count));
                (started, count)
            }
        };
        Some(TablesCount {
            age: at.elapsed(),
            ..count
        })
    }
}

/// The running metrics server; stops when dropped.
pub(super) struct Metrics {
    pub(super) config: MetricsConfig,
    task: JoinHandle<()>,
}

impl Metrics {
    /// Stops the server and waits until its listener is closed.
    async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Metrics {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds the configured address.
pub(super) async fn listen(cfg: &MetricsConfig) -> Result<TcpListener> {
    server::bind(cfg.listen).await
}

/// Serves `/metrics` on `listener`.
pub(super) fn start(
    cfg: MetricsConfig,
    listener: TcpListener,
    sources: Arc<Sources>,
    state_dir: &Path,
) -> Metrics {
    let tables = Tables::open(state_dir);
    let build = BuildInfo::of_this_binary();
    let page: server::Page = Arc::new(move || {
        let (status, checks) = sources.status_with(Controller::check_tallies)?;
        Ok(metrics::render(Snapshot {
            status,
            checks,
            tables: tables.count(),
            build: build.clone(),
        }))
    });
    tracing::info!(listen = %cfg.listen, "metrics: serving /metrics");
    Metrics {
        config: cfg,
        task: tokio::spawn(server::serve(listener, page, server::Limits::DEFAULT)),
    }
}

/// After a reload: the server follows the running config's `[metrics]`
/// (restarted on the new address, or stopped). An address that cannot be
/// bound leaves metrics off, said in the log.
pub(super) async fn reconfigure(
    current: &mut Option<Metrics>,
    wanted: Option<MetricsConfig>,
    sources: &Arc<Sources>,
    state_dir: &Path,
) {
    if current.as_ref().map(|m| m.config) == wanted {
        return;
    }
    // The old listener goes before the new one binds (the same port may
    // be wanted on another address).
    // Said before the listener closes, so that whoever sees it closed
    // finds the reason in the log already.
    if let Some(old) = current.take() {
        if wanted.is_none() {
            tracing::info!("metrics: [metrics] removed, stopped");
        }
        old.stop().await;
    }
    let Some(cfg) = wanted else { return };
    match listen(&cfg).await {
        Ok(l) => *current = Some(start(cfg, l, sources.clone(), state_dir)),
        Err(e) => tracing::error!(
            error = format!("{e:#}"),
            "metrics: the new [metrics] cannot be served; metrics are off"
        ),
    }
}
