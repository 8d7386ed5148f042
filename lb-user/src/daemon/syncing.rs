//! The connection sync's life in the daemon: started with the config's
//! `[sync]`, and after every reload restarted, stopped or kept, as
//! [`change`] decides from the new `[sync]` and the key file's content.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, Result};

use super::{Controller, Syncing, lock};
use crate::{
    config::{Config, SyncConfig},
    netlink, sync,
};

pub(super) fn lock_syncing(s: &Syncing) -> std::sync::MutexGuard<'_, Option<sync::Running>> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the sync of `sc` with `key`: opens the pinned maps, binds the
/// socket.
pub(super) fn start(
    sc: &SyncConfig,
    key: sync::Key,
    config: &Config,
    state_dir: &Path,
    controller: &Arc<Mutex<Controller>>,
) -> Result<sync::Running> {
    let ifname = sc.interface.as_deref().unwrap_or(&config.interface);
    let iface =
        netlink::interface_by_name(ifname).with_context(|| format!("sync interface {ifname}"))?;
    let c = controller.clone();
    sync::start(sync::Start {
        config: sc,
        key,
        state_dir: state_dir.to_owned(),
        ifname: &iface.name,
        ifindex: iface.index,
        directory: Arc::new(move || lock(&c).sync_directory()),
    })
    .context("starting connection sync")
}

/// What a reload does to the running sync.
#[derive(Debug)]
pub(super) enum Change<'a> {
    /// Same `[sync]`, same key (or none before and none now).
    Keep,
    /// `[sync]` is gone.
    Stop,
    /// Start `config` with `key`, or restart with a new epoch: `[sync]` or
    /// the key changed.
    Start {
        config: &'a SyncConfig,
        key: sync::Key,
        why: &'static str,
    },
    /// The key file cannot be used: whatever runs goes on.
    BadKey(anyhow::Error),
}

/// Decides what a reload does: `running` is the sync that runs (its
/// `[sync]` and key), `wanted` the new config's `[sync]`, `load` reads a
/// key file. The key file is read again on every reload, so a key
/// rotated in place (same path, new content) takes effect.
pub(super) fn change<'a>(
    running: Option<(&SyncConfig, &sync::Key)>,
    wanted: Option<&'a SyncConfig>,
    load: impl FnOnce(&Path) -> Result<sync::Key>,
) -> Change<'a> {
    let Some(sc) = wanted else {
        return if running.is_some() {
            Change::Stop
        } else {
            Change::Keep
        };
    };
    let key = match load(&sc.key_file) {
        Ok(key) => key,
        Err(e) => return Change::BadKey(e),
    };
    let why = match running {
        None => "[sync] added",
        Some((config, _)) if config != sc => "[sync] changed",
        Some((_, old)) if *old != key => "the key file's key changed",
        Some(_) => return Change::Keep,
    };
    Change::Start {
        config: sc,
        key,
        why,
    }
}

/// After a reload: the sync follows the running config's `[sync]` and its
/// key file (see [`change`]).
pub(super) fn resync(
    syncing: &Syncing,
    running: &Config,
    state_dir: &Path,
    controller: &Arc<Mutex<Controller>>,
) {
    let mut s = lock_syncing(syncing);
    let current = s.as_ref().map(|r| (&r.config, &r.key));
    match change(current, running.sync.as_ref(), sync::Key::load) {
        Change::Keep => {}
        Change::Stop => {
            if let Some(old) = s.take() {
                old.stop();
            }
            tracing::info!("sync: [sync] removed, stopped");
        }
        Change::BadKey(e) => tracing::error!(
            error = format!("{e:#}"),
            "sync: the key file cannot be used; the running sync (if any) goes on unchanged"
        ),
        Change::Start { config, key, why } => {
            // The old socket is closed before the new one binds the port.
            if let Some(old) = s.take() {
                old.stop();
            }
            match start(config, key, running, state_dir, controller) {
                Ok(new) => {
                    tracing::info!("sync: {why}: restarted, a new epoch");
                    *s = Some(new);
                }
                Err(e) => tracing::error!(
                    error = format!("{e:#}"),
                    "sync: restarting failed; sync is off"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use anyhow::anyhow;

    use super::*;
    use crate::config::SyncPeers;

    fn config(port: u16) -> SyncConfig {
        SyncConfig { port, ..sample() }
    }

    fn sample() -> SyncConfig {
        let text = "interface = \"eth0\"\n[sync]\npeers = [\"198.18.0.3\"]\n\
                    key_file = \"/etc/xlb/sync.key\"\n";
        Config::parse(text, "test")
            .expect("sample")
            .sync
            .expect("[sync]")
    }

    fn key(byte: u8) -> sync::Key {
        sync::Key::from_bytes(&[byte; 32]).expect("32 bytes")
    }

    #[test]
    fn a_key_rotated_in_place_restarts_the_sync_and_an_unchanged_one_does_not() {
        let sc = sample();
        assert!(matches!(sc.peers, SyncPeers::Unicast(_)));
        let old = key(1);
        let same = change(Some((&sc, &old)), Some(&sc), |_| Ok(key(1)));
        assert!(matches!(same, Change::Keep), "{same:?}");
        let rotated = change(Some((&sc, &old)), Some(&sc), |p| {
            assert_eq!(p, PathBuf::from("/etc/xlb/sync.key"));
            Ok(key(2))
        });
        let Change::Start {
            config,
            key: new,
            why,
        } = rotated
        else {
            panic!("{rotated:?}");
        };
        assert!(new == key(2));
        assert_eq!(config, &sc);
        assert_eq!(why, "the key file's key changed");
    }

    #[test]
    fn a_new_or_changed_section_starts_and_a_removed_one_stops() {
        let (a, b) = (config(8849), config(8850));
        let k = key(1);
        assert!(matches!(
            change(None, Some(&a), |_| Ok(key(1))),
            Change::Start {
                why: "[sync] added",
                ..
            }
        ));
        assert!(matches!(
            change(Some((&a, &k)), Some(&b), |_| Ok(key(1))),
            Change::Start {
                why: "[sync] changed",
                ..
            }
        ));
        assert!(matches!(
            change(Some((&a, &k)), None, |_| unreachable!("no key to read")),
            Change::Stop
        ));
        assert!(matches!(
            change(None, None, |_| unreachable!("no key to read")),
            Change::Keep
        ));
    }

    #[test]
    fn an_unusable_key_file_keeps_what_runs() {
        let a = config(8849);
        let k = key(1);
        for running in [Some((&a, &k)), None] {
            let bad = change(running, Some(&a), |_| Err(anyhow!("mode 0644")));
            assert!(
                matches!(&bad, Change::BadKey(e) if e.to_string() == "mode 0644"),
                "{bad:?}"
            );
        }
    }
}
