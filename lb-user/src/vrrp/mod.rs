//! VRRP version 3 (RFC 5798) between xlb nodes, and with keepalived.
//!
//! - [`state`]: the pure state machine of one virtual router.
//! - [`packet`]: the advert codec; [`receive`]: the strict receive checks.
//! - [`socket`], [`announce`]: the thin shells around sockets; [`track`]:
//!   link and upstream tracking.
//! - [`engine`]: runs one machine per `[[vrrp.group]]`, feeds it adverts,
//!   timers and tracking results, and carries out what it decides: on
//!   MASTER the XDP program is switched to forwarding the group's VIPs,
//!   their addresses are added to the NIC (so the kernel answers ARP/ND
//!   for them), then announced by gratuitous ARP / unsolicited NA; on
//!   leaving MASTER forwarding stops first, then the addresses go.
//! - [`addresses`]: the VIPs on the NIC and the node's own source
//!   addresses; [`publish`]: VRRP's part of `xlb status`.

mod addresses;
pub mod announce;
mod engine;
pub mod packet;
mod publish;
pub mod receive;
pub mod socket;
pub mod state;
pub mod track;

use std::net::IpAddr;

use anyhow::Result;

pub use addresses::{assign_addresses, primary_addresses, withdraw_addresses};
pub use engine::{Engine, Stop};
pub use publish::status_now;
pub use track::{Tracking, start_tracking};

/// What VRRP changes outside itself. The daemon implements it over the BPF
/// maps (through the controller, which owns them) and netlink.
pub trait Effects: Send {
    /// Starts (`on`) or stops forwarding the traffic of the VIPs named
    /// `vips` (one group's).
    fn set_forwarding(&mut self, vips: &[String], on: bool) -> Result<()>;
    /// Adds the VIP addresses to the NIC.
    fn assign(&mut self, addrs: &[IpAddr]) -> Result<()>;
    /// Removes them.
    fn withdraw(&mut self, addrs: &[IpAddr]) -> Result<()>;
}

/// The NIC VRRP runs on.
#[derive(Debug, Clone)]
pub struct Nic {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
}
