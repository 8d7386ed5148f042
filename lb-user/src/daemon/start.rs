//! Bringing the data plane up: open the state directory, check what is
//! pinned there against the program about to run, load the program
//! against the pinned maps, let the controller adopt what its predecessor
//! left ([`open`]), apply the config ([`apply`], in steps, the controller
//! free in between for the control socket), and attach through the pinned
//! links ([`attach`]; an atomic program swap when a link is already
//! there). Every step before the swap leaves a running data plane as it
//! was; a refusal says why.
//!
//! A data plane taken over is swapped only after the apply, so that the
//! new program's first packet sees every VIP (the old one serves the
//! pinned maps meanwhile). A fresh one is attached first: it passes every
//! packet until the apply writes `LB_CONFIG`, and each VIP then serves as
//! soon as its batch of rings is in.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

use anyhow::{Context as _, Result, anyhow, bail};

use super::{Controller, KernelNeighbours, lock};
use crate::{
    EBPF_OBJECT,
    api::DataplaneStatus,
    config::{Config, XdpMode},
    control::{Adopted, ApplyError, Node},
    dataplane::{Attached, Dataplane, Linked, pinned_program},
    netlink,
    state::{self, Found, LinkRole, Place, StateDir},
};

/// How `xlb run` was asked to start.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Discard the pinned state first (drops every connection).
    pub reset_state: bool,
    /// Load the XDP program from this object file instead of the one built
    /// into xlb.
    pub xdp_object: Option<PathBuf>,
}

/// A data plane up and attached.
pub(super) struct Up {
    pub(super) dp: Dataplane,
    pub(super) state: StateDir,
    pub(super) status: DataplaneStatus,
}

/// A data plane loaded against the pinned maps, its controller having
/// adopted them, not attached yet.
pub(super) struct Opened {
    dp: Dataplane,
    state: StateDir,
    meta: lb_common::StateMeta,
    migrate: Vec<&'static str>,
    running_mode: Option<Attached>,
    native: bool,
    generic: bool,
    iface: netlink::Interface,
    server: Option<netlink::Interface>,
    /// The state directory held nothing: attach before the apply.
    fresh: bool,
}

impl Opened {
    pub(super) fn state_path(&self) -> &Path {
        self.state.path()
    }

    /// Whether to attach before the apply (see the module's comment).
    pub(super) fn attach_first(&self) -> bool {
        self.fresh
    }
}

pub(super) fn open(
    config: &Config,
    config_path: &Path,
    opts: &Options,
    set_standby: impl FnOnce(&mut Controller, &Adopted, bool) -> Result<()>,
) -> Result<(Controller, Opened)> {
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
    let server =
        match &config.server_interface {
            Some(name) => Some(netlink::interface_by_name(name).with_context(|| {
                format!("server_interface {name} from {}", config_path.display())
            })?),
            None => None,
        };
    let object_file;
    let object: &[u8] = match &opts.xdp_object {
        Some(path) => {
            object_file = std::fs::read(path)
                .with_context(|| format!("reading the XDP object {}", path.display()))?;
            &object_file
        }
        None => EBPF_OBJECT,
    };

    let state = StateDir::open(&config.state_dir)?;
    if opts.reset_state && !state.pins()?.is_empty() {
        tracing::warn!(dir = %state.path().display(),
            "--reset-state: discarding the pinned data plane (its connections are lost)");
        state.reset()?;
    }
    let flows = config.conntrack.size;
    let specs = state::object_specs(object, flows)?;
    let place = Place::here(iface.index, server.as_ref().map_or(0, |s| s.index))?;
    let found = state.inspect(&specs, &place)?;
    let fresh = matches!(found, Found::Empty);
    let (meta, migrate, was_running) = match found {
        Found::Empty => (None, Vec::new(), false),
        Found::Compatible {
            meta,
            migrate,
            running,
        } => (Some(meta), migrate, running),
    };
    let (native, generic) = match config.xdp_mode {
        XdpMode::Auto => (true, true),
        XdpMode::Native => (true, false),
        XdpMode::Generic => (false, true),
    };
    let running_mode = meta.and_then(|m| Attached::from_flags(m.xdp_flags));
    if was_running
        && let Some(mode) = running_mode
        && !(mode == Attached::Native && native || mode == Attached::Generic && generic)
    {
        bail!(
            "the data plane in {} runs in {} mode, the config asks for xdp_mode = \"{}\": \
             changing modes re-attaches the program, which drops traffic for a moment; \
             `xlb run --reset-state` accepts that",
            state.path().display(),
            mode.as_str(),
            config.xdp_mode.as_str()
        );
    }

    let (dp, mut maps) = Dataplane::open(object, &state, flows, &migrate)?;
    let meta = match meta {
        Some(m) => m,
        None => {
            let m = state::new_meta(&place, 0);
            maps.set_state_meta(&m)?;
            m
        }
    };
    for name in &migrate {
        // First pass, while the old program still runs on the old table.
        let n = maps.copy_connections(name, &state.map_pin(name))?;
        tracing::info!(
            map = name,
            entries = n,
            flows,
            "connection table resized: entries copied to the new table"
        );
    }
    let mut controller = Controller::new(
        maps,
        Node {
            interface: config.interface.clone(),
            mac: iface.mac,
        },
    );
    let adopted = controller.adopt()?;
    set_standby(&mut controller, &adopted, was_running)?;
    super::check_forwarding(config)?;
    let opened = Opened {
        dp,
        state,
        meta,
        migrate,
        running_mode,
        native,
        generic,
        iface,
        server,
        fresh,
    };
    Ok((controller, opened))
}

/// Applies `config`, a batch of VIPs at a time, letting go of the
/// controller between batches so that the control socket answers
/// throughout a long start.
pub(super) async fn apply(
    config: &Config,
    config_path: &Path,
    controller: &Mutex<Controller>,
    neighbours: &mut KernelNeighbours,
) -> Result<()> {
    let what = |e: ApplyError| anyhow!("applying {}: {e}", config_path.display());
    let started = std::time::Instant::now();
    let mut applying = lock(controller)
        .begin_apply(config, neighbours)
        .map_err(what)?;
    while lock(controller).apply_step(&mut applying) {
        // A moment for whoever waits for the controller (the lock is not
        // fair: re-taken at once, it would starve the control socket).
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let (vips, _) = applying.progress();
    lock(controller)
        .finish_apply(applying, neighbours)
        .map_err(what)?;
    tracing::info!(
        vips,
        ms = started.elapsed().as_millis() as u64,
        "configuration applied"
    );
    Ok(())
}

/// Attaches the program of `opened` through the pinned links.
pub(super) fn attach(opened: Opened, controller: &mut Controller, config: &Config) -> Result<Up> {
    let Opened {
        mut dp,
        state,
        mut meta,
        migrate,
        running_mode,
        native,
        generic,
        iface,
        server,
        fresh: _,
    } = opened;
    // The program takes over here (see the module's comment for when).
    let mut links = vec![(LinkRole::Client, iface.name.clone())];
    if let Some(s) = &server {
        links.push((LinkRole::Server, s.name.clone()));
    }
    let mut how = None;
    for (role, ifname) in &links {
        let linked = dp.attach_pinned(ifname, &state.link_pin(*role), native, generic)?;
        tracing::info!(interface = %ifname, ?linked, "XDP link");
        let native_now = match linked {
            Linked::Created(mode) => mode == Attached::Native,
            _ => running_mode == Some(Attached::Native),
        };
        if native_now
            && let Ok(index) = netlink::interface_by_name(ifname).map(|i| i.index)
            && netlink::link_facts(index).is_ok_and(|f| f.veth)
        {
            tracing::info!(interface = %ifname,
                "native XDP on a veth: forwarded frames reach the peer only if it runs an XDP \
                 program (or has GRO on); xlb reports it if the NIC drops what it forwards");
        }
        if let Linked::Created(mode) = linked {
            meta.xdp_flags = mode.flags();
        }
        how.get_or_insert(linked);
    }
    for name in &migrate {
        // Second pass, now that the old table is frozen; then the new one
        // takes the old one's place on bpffs.
        let n = controller
            .maps_mut()
            .copy_connections(name, &state.map_pin(name))?;
        let (old, next) = (state.map_pin(name), state.next_pin(name));
        std::fs::remove_file(&old).with_context(|| format!("unpinning {}", old.display()))?;
        std::fs::rename(&next, &old)
            .with_context(|| format!("renaming {} to {}", next.display(), old.display()))?;
        tracing::info!(map = name, entries = n, "connection table migrated");
    }
    controller.maps_mut().set_state_meta(&meta)?;
    if let Some(mode) = Attached::from_flags(meta.xdp_flags) {
        controller.set_attached(mode);
    }
    controller.maps_mut().add_tx_port(iface.index)?;
    if let Some(s) = &server {
        controller.maps_mut().add_tx_port(s.index)?;
    }

    let program = pinned_program(&state.link_pin(LinkRole::Client))?;
    let start = match how {
        _ if !migrate.is_empty() => "migrated",
        Some(Linked::Created(_)) => "created",
        Some(Linked::Updated) => "upgraded",
        Some(Linked::Kept) | None => "adopted",
    };
    let status = DataplaneStatus {
        program_id: program.id(),
        program_tag: format!("{:016x}", program.tag()),
        program_loaded_unix_s: program
            .loaded_at()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs()),
        state_dir: state.path().display().to_string(),
        state_created_unix_s: meta.created_unix_s,
        start: start.to_owned(),
    };
    tracing::info!(interface = %iface.name, program = status.program_id, tag = %status.program_tag,
        start, state = %status.state_dir, vips = config.vips.len(), vrrp = config.vrrp.is_some(),
        "xlb serving");
    Ok(Up { dp, state, status })
}
