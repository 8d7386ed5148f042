//! The test XDP programs of `tests/testbed-ebpf`, embedded here (never in
//! `xlb`), and the helpers that load and attach them.

use anyhow::{Context as _, anyhow};

/// A pass-everything XDP program for the far end of test veths: XDP_TX
/// frames reach a veth peer reliably only when the peer runs XDP itself.
pub static XDP_PASS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-pass"));

/// The benchmark floor: swaps the MAC addresses and returns XDP_TX, the
/// least any XDP forwarder does (`cargo xtask bench`).
pub static XDP_FLOOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-floor"));

/// The end-to-end benchmark's floor: every frame to one fixed backend (MAC
/// rewrite, optionally the IPv4 destination too), `XDP_TX` or redirect.
pub static XDP_FWD_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-fwd"));

/// The benchmark's packet generator: XDP_TX of a template UDP frame with a
/// random source port, run in BPF_PROG_TEST_RUN live-frames mode.
pub static XDP_GEN_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-gen"));

/// xlb's own XDP program built with other code and the same behaviour
/// (`cfg(xlb_variant)`): a file for `xlb run --xdp-object`, to start a
/// "different program build" against running state.
pub const XLB_VARIANT_OBJECT: &str = concat!(env!("OUT_DIR"), "/xlb-variant");

/// Attaches the pass-everything program ([`XDP_PASS_OBJECT`]) in native
/// mode to `ifname` in the calling thread's namespace. It stays attached
/// while the returned object lives.
pub fn attach_xdp_pass(ifname: &str) -> anyhow::Result<aya::Ebpf> {
    const PROGRAM: &str = "xdp_pass";
    let mut ebpf = aya::Ebpf::load(XDP_PASS_OBJECT).context("loading the xdp-pass object")?;
    load_program(&mut ebpf, PROGRAM)?
        .attach(ifname, aya::programs::XdpMode::Driver)
        .with_context(|| format!("attaching xdp_pass to {ifname} (native mode)"))?;
    Ok(ebpf)
}

/// The XDP program `name` of `ebpf`, loaded into the kernel (verified,
/// not attached).
pub fn load_program<'a>(
    ebpf: &'a mut aya::Ebpf,
    name: &str,
) -> anyhow::Result<&'a mut aya::programs::Xdp> {
    let prog: &mut aya::programs::Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("no program {name} in the object"))?
        .try_into()?;
    prog.load()
        .with_context(|| format!("loading {name} into the kernel"))?;
    Ok(prog)
}
