//! The xlb control plane: loader, map owner, configuration, health and CLI.

pub mod config;
pub mod dataplane;
pub mod demo;
pub mod maglev;
pub mod maps;
pub mod netlink;
pub mod netns;
pub mod topology;

/// The compiled XDP object, built by `build.rs` from `lb-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb"));
