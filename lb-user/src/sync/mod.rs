//! Connection sync between xlb nodes (`[sync]`): every node sends the
//! flows it forwards to its peers, and installs theirs, so that the node
//! that takes over a VIP (VRRP failover, an ECMP rehash) forwards each
//! established flow to the backend it started on, and translates the
//! replies of NAT flows.
//!
//! - `wire`: the message format, pure.
//! - `auth`: the pre-shared key and the HMAC-SHA256 tag.
//! - `replay`: sequence windows per sender against replayed messages.
//! - `receive`: the checks of a received datagram, in order (pure).
//! - `table`: connection-table entries to sync entries and back, over a
//!   trait (the kernel's maps, or memory in the tests).
//! - `engine`: the running task: ring buffer, socket, sweeps, status.

mod auth;
mod engine;
pub mod receive;
mod replay;
mod table;
pub mod wire;

pub use auth::{Key, MIN_KEY_LEN};
pub use engine::{DirectorySource, Running, Shared, Start, start};
pub use replay::{Replay, Verdict};
pub use table::{DirVip, Directory, FlowTable, Installed, MemoryTable, entry_of, install};
