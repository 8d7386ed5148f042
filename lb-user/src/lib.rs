//! The xlb control plane: loader, map owner, configuration, health and CLI.

pub mod announce;
pub mod api;
mod async_socket;
pub mod checksum;
pub mod clock;
pub mod config;
pub mod control;
pub mod ctl;
pub mod daemon;
pub mod dataplane;
pub mod feedback;
mod file_owner;
pub mod health;
pub mod maglev;
pub mod maps;
pub mod metrics;
pub mod netlink;
pub mod state;
pub mod sync;
pub mod trace;
pub mod vrrp;

/// The compiled XDP object, built by `build.rs` from `lb-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb"));
