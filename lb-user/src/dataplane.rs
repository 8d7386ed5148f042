//! Loading the XDP object and attaching it to a NIC.

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    programs::{Xdp, XdpMode},
};
use lb_common::PROGRAM_NAME;

use crate::{EBPF_OBJECT, maps::Maps};

/// The loaded XDP program. Dropping it detaches the program; its maps
/// (handed out by [`Dataplane::load`] as [`Maps`]) live as long as their
/// handles.
pub struct Dataplane {
    ebpf: Ebpf,
}

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
}

impl Dataplane {
    /// Loads the embedded object into the kernel (verifier included), without
    /// attaching it anywhere, with the default connection-table size.
    pub fn load() -> Result<(Self, Maps)> {
        Self::load_with_flow_table(lb_common::DEFAULT_FLOW_TABLE_SIZE)
    }

    /// Like [`Dataplane::load`], with `flows` entries in the connection table.
    pub fn load_with_flow_table(flows: u32) -> Result<(Self, Maps)> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(lb_common::map_names::FLOWS, flows)
            .map_max_entries(lb_common::map_names::NAT_REVERSE, flows)
            .load(EBPF_OBJECT)
            .context("loading the XDP object (are we root, and is the kernel BTF-enabled?)")?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| anyhow!("program {PROGRAM_NAME} missing from the object"))?
            .try_into()
            .context("program is not XDP")?;
        program
            .load()
            .context("the kernel rejected the XDP program")?;
        let maps = Maps::from_ebpf(&mut ebpf)?;
        Ok((Self { ebpf }, maps))
    }

    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM_NAME)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("program was checked at load")
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
                Ok(_) => return Ok(Attached::Native),
                Err(e) if allow_generic => native_error = Some(e),
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("attaching XDP in native mode to {interface}"));
                }
            }
        }
        self.program_mut()
            .attach(interface, XdpMode::Skb)
            .with_context(|| format!("attaching XDP in generic mode to {interface}"))?;
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
