//! Loading the XDP object and attaching it to a NIC.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        ProgramInfo, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use lb_common::{PROGRAM_NAME, TRACE_PROGRAM_NAME, map_names as names};

use crate::{EBPF_OBJECT, maps::Maps, state::StateDir};

/// The loaded XDP program. Dropping it detaches the program; its maps
/// (handed out by [`Dataplane::load`] as [`Maps`]) live as long as their
/// handles.
pub struct Dataplane {
    ebpf: Ebpf,
    /// The link [`Dataplane::attach`] made last.
    last_link: Option<aya::programs::xdp::XdpLinkId>,
}

/// `XDP_FLAGS_SKB_MODE` and `XDP_FLAGS_DRV_MODE` (linux/if_link.h).
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// How the program ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    Native,
    Generic,
}

impl Attached {
    pub fn as_str(self) -> &'static str {
        match self {
            Attached::Native => "native",
            Attached::Generic => "generic",
        }
    }

    /// The `XDP_FLAGS_*` mode bit of this mode.
    pub fn flags(self) -> u32 {
        match self {
            Attached::Native => XDP_FLAGS_DRV_MODE,
            Attached::Generic => XDP_FLAGS_SKB_MODE,
        }
    }

    /// The mode `flags` (`XDP_FLAGS_*`) name, if one.
    pub fn from_flags(flags: u32) -> Option<Attached> {
        if flags & XDP_FLAGS_DRV_MODE != 0 {
            Some(Attached::Native)
        } else if flags & XDP_FLAGS_SKB_MODE != 0 {
            Some(Attached::Generic)
        } else {
            None
        }
    }
}

/// What [`Dataplane::attach_pinned`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linked {
    /// No link was pinned: attached in this mode, and the link pinned.
    Created(Attached),
    /// The pinned link ran another program: this one replaced it in one
    /// atomic update.
    Updated,
    /// The pinned link already ran this program (same tag): kept as it is.
    Kept,
}

impl Dataplane {
    /// Loads the embedded object into the kernel (verifier included), without
    /// attaching it anywhere, with the default connection-table size.
    pub fn load() -> Result<(Self, Maps)> {
        Self::load_with_flow_table(lb_common::DEFAULT_FLOW_TABLE_SIZE)
    }

    /// Like [`Dataplane::load`], with `flows` entries in the connection table.
    pub fn load_with_flow_table(flows: u32) -> Result<(Self, Maps)> {
        let ebpf = EbpfLoader::new()
            .map_max_entries(names::FLOWS, flows)
            .map_max_entries(names::NAT_REVERSE, flows)
            .load(EBPF_OBJECT)
            .context("loading the XDP object (are we root, and is the kernel BTF-enabled?)")?;
        Self::finish(ebpf)
    }

    /// Loads `object` against the maps pinned in `state`, creating and
    /// pinning the ones missing, with `flows` entries in the connection
    /// tables. The maps named in `migrate` are created afresh beside the
    /// pinned ones ([`StateDir::next_pin`]) for the caller to fill and put in place.
    pub fn open(
        object: &[u8],
        state: &StateDir,
        flows: u32,
        migrate: &[&str],
    ) -> Result<(Self, Maps)> {
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(names::FLOWS, flows)
            .map_max_entries(names::NAT_REVERSE, flows);
        let pins: Vec<(&str, PathBuf)> = names::ALL
            .iter()
            .map(|&name| {
                if migrate.contains(&name) {
                    (name, state.next_pin(name))
                } else {
                    (name, state.map_pin(name))
                }
            })
            .collect();
        for (name, pin) in &pins {
            if migrate.contains(name) && pin.exists() {
                // Left by a migration that did not finish: start it again.
                std::fs::remove_file(pin).with_context(|| format!("removing {}", pin.display()))?;
            }
            loader.map_pin_path(name, pin.as_path());
        }
        let ebpf = loader.load(object).with_context(|| {
            format!(
                "loading the XDP object against the state in {}",
                state.path().display()
            )
        })?;
        Self::finish(ebpf)
    }

    fn finish(mut ebpf: Ebpf) -> Result<(Self, Maps)> {
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| anyhow!("program {PROGRAM_NAME} missing from the object"))?
            .try_into()
            .context("program is not XDP")?;
        program
            .load()
            .context("the kernel rejected the XDP program")?;
        Self::load_recorder(&mut ebpf)?;
        let maps = Maps::from_ebpf(&mut ebpf)?;
        Ok((
            Self {
                ebpf,
                last_link: None,
            },
            maps,
        ))
    }

    /// Loads the trace's recorder and puts it in `TRACE_PROGS`, where the
    /// program tail-calls it for the packets a trace records.
    fn load_recorder(ebpf: &mut Ebpf) -> Result<()> {
        let recorder: &mut Xdp = ebpf
            .program_mut(TRACE_PROGRAM_NAME)
            .ok_or_else(|| anyhow!("program {TRACE_PROGRAM_NAME} missing from the object"))?
            .try_into()
            .context("the trace recorder is not XDP")?;
        recorder
            .load()
            .context("the kernel rejected the trace recorder")?;
        let fd = recorder
            .fd()
            .context("the trace recorder's descriptor")?
            .try_clone()
            .context("duplicating the trace recorder's descriptor")?;
        let map = ebpf
            .map_mut(names::TRACE_PROGS)
            .ok_or_else(|| anyhow!("map {} missing from the object", names::TRACE_PROGS))?;
        let mut progs = aya::maps::ProgramArray::try_from(map)
            .with_context(|| format!("{} is not a program array", names::TRACE_PROGS))?;
        progs
            .set(0, &fd, 0)
            .with_context(|| format!("installing the trace recorder in {}", names::TRACE_PROGS))
    }

    /// This program's kernel info (id, tag, load time).
    pub fn info(&self) -> Result<ProgramInfo> {
        self.program().info().context("reading the program's info")
    }

    /// Attaches to `interface` through the link pinned at `pin`, so that
    /// the program stays attached whatever happens to this process. A
    /// pinned link is given this program in one atomic update (no moment
    /// without a program), unless it already runs the same code; without
    /// one, a link is created (native mode first when both are allowed, as
    /// [`Dataplane::attach`]) and pinned.
    pub fn attach_pinned(
        &mut self,
        interface: &str,
        pin: &Path,
        allow_native: bool,
        allow_generic: bool,
    ) -> Result<Linked> {
        if pin.exists() {
            let running = pinned_program(pin)?;
            if running.tag() == self.info()?.tag() {
                return Ok(Linked::Kept);
            }
            let fd: FdLink = PinnedLink::from_pin(pin)
                .with_context(|| format!("opening the pinned link {}", pin.display()))?
                .into();
            let link = XdpLink::try_from(fd).context("the pinned link is not an XDP link")?;
            self.program_mut()
                .attach_to_link(link)
                .with_context(|| format!("replacing the program on {interface}"))?;
            return Ok(Linked::Updated);
        }
        let attached = self.attach(interface, allow_native, allow_generic)?;
        let id = self.last_link()?;
        let link = self
            .program_mut()
            .take_link(id)
            .context("taking the new XDP link")?;
        let fd = FdLink::try_from(link).map_err(|e| {
            anyhow!(
                "the kernel attached {interface} without a bpf_link ({e}); pinned attachment \
                 needs a kernel with XDP links (5.9 or later)"
            )
        })?;
        fd.pin(pin)
            .with_context(|| format!("pinning the XDP link at {}", pin.display()))?;
        Ok(Linked::Created(attached))
    }

    fn last_link(&mut self) -> Result<aya::programs::xdp::XdpLinkId> {
        self.last_link
            .take()
            .ok_or_else(|| anyhow!("no link was just attached"))
    }

    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM_NAME)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("program was checked at load")
    }

    /// A map [`Maps`] does not hold (the flow reports and their counters,
    /// which the sync opens from their pins), for benchmarks and tests of
    /// a data plane loaded without pins.
    pub fn take_map(&mut self, name: &str) -> Option<aya::maps::Map> {
        self.ebpf.take_map(name)
    }

    fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("program was checked at load")
    }

    /// Attaches to `interface`. With `allow_native`/`allow_generic` both set,
    /// native (driver) mode is tried first and generic is the fallback.
    pub fn attach(
        &mut self,
        interface: &str,
        allow_native: bool,
        allow_generic: bool,
    ) -> Result<Attached> {
        let mut native_error = None;
        if allow_native {
            match self.program_mut().attach(interface, XdpMode::Driver) {
                Ok(id) => {
                    self.last_link = Some(id);
                    return Ok(Attached::Native);
                }
                Err(e) if allow_generic => native_error = Some(e),
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("attaching XDP in native mode to {interface}"));
                }
            }
        }
        let id = self
            .program_mut()
            .attach(interface, XdpMode::Skb)
            .with_context(|| format!("attaching XDP in generic mode to {interface}"))?;
        self.last_link = Some(id);
        if let Some(e) = native_error {
            tracing::warn!(
                interface,
                error = %e,
                "native XDP unavailable, running in generic mode (slower)"
            );
        }
        Ok(Attached::Generic)
    }
}

/// The program the link pinned at `pin` runs.
pub fn pinned_program(pin: &Path) -> Result<ProgramInfo> {
    let link = PinnedLink::from_pin(pin)
        .with_context(|| format!("opening the pinned link {}", pin.display()))?;
    let fd: FdLink = link.into();
    let id = fd.info().context("reading the link's info")?.program_id();
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .ok_or_else(|| anyhow!("program {id} of the pinned link is not loaded"))
}
