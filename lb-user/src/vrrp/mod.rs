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
//!   for them), and the group's server addresses to `server_interface`,
//!   then all are announced by gratuitous ARP / unsolicited NA; on leaving
//!   MASTER forwarding stops first, then the addresses go. With
//!   `vrrp.peers`, adverts go by unicast to each peer and only the peers'
//!   are accepted.
//! - [`addresses`]: which addresses go on which NIC, the addresses on the
//!   NICs and the node's own source addresses; [`publish`]: VRRP's part
//!   of `xlb status`.

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

pub use addresses::{
    Placement, assign_addresses, placements, primary_addresses, withdraw_addresses,
};
pub use engine::{Engine, Stop};
pub use publish::status_now;
pub use track::{Tracking, start_tracking};

/// What VRRP changes outside itself. The daemon implements it over the BPF
/// maps (through the controller, which owns them) and netlink.
pub trait Effects: Send {
    /// Starts (`on`) or stops forwarding the traffic of the VIPs named
    /// `vips` (one group's).
    fn set_forwarding(&mut self, vips: &[String], on: bool) -> Result<()>;
    /// Adds `addrs` (a group's VIP or server addresses) to `nic`.
    fn assign(&mut self, nic: &Nic, addrs: &[IpAddr]) -> Result<()>;
    /// Removes them.
    fn withdraw(&mut self, nic: &Nic, addrs: &[IpAddr]) -> Result<()>;
}

/// A NIC the master holds addresses on: the one VRRP runs on, or the
/// `server_interface`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
}
