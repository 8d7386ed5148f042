//! The xlb control plane: loader, map owner, configuration, health and CLI.

pub mod config;
pub mod control;
pub mod ctl;
pub mod daemon;
pub mod dataplane;
pub mod demo;
pub mod health;
pub mod maglev;
pub mod maps;
pub mod netlink;
pub mod netns;
pub mod status;
pub mod topology;
pub mod vrrp;

/// The compiled XDP object, built by `build.rs` from `lb-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb"));

/// A pass-everything XDP program for the far end of test veths: XDP_TX
/// frames reach a veth peer reliably only when the peer runs XDP itself.
pub static XDP_PASS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-pass"));

/// The benchmark floor: swaps the MAC addresses and returns XDP_TX, the
/// least any XDP forwarder does (`cargo xtask bench`).
pub static XDP_FLOOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-floor"));

/// The benchmark's packet generator: XDP_TX of a template UDP frame with a
/// random source port, run in BPF_PROG_TEST_RUN live-frames mode.
pub static XDP_GEN_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-gen"));
