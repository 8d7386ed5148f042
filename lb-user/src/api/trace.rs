//! What `xlb trace` and the daemon say to each other: the trace asked for,
//! and the answer that lets the CLI read the records itself (where the
//! ring buffer is pinned, until when it fills, and the names of what the
//! records hold by number).

use serde::{Deserialize, Serialize};

/// The longest trace the daemon starts: a trace always ends by itself.
pub const MAX_TRACE_SECONDS: u32 = 3600;

/// Which packets to trace, for how long.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceSpec {
    /// A VIP's name (its address, port and protocol) or an address (every
    /// packet to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<String>,
    /// The client's address or prefix (`198.18.0.0/24`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Either port of the flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Only packets the data plane dropped.
    #[serde(default)]
    pub drops_only: bool,
    /// How long the data plane records (1..=`MAX_TRACE_SECONDS`).
    pub seconds: u32,
}

/// A running trace, as the daemon started it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStarted {
    /// Names the trace to `TraceStop`.
    pub id: u64,
    /// The pinned `TRACE_EVENTS` ring buffer and `TRACE_STATS` counters.
    pub ring_pin: String,
    pub stats_pin: String,
    /// CLOCK_MONOTONIC nanoseconds (the data plane's clock) at which the
    /// filter took effect and at which the data plane stops recording:
    /// records from before are a previous trace's, left in the ring.
    pub since_ns: u64,
    pub until_ns: u64,
    /// The filter in words, as the daemon understood it.
    pub filter: String,
    pub vips: Vec<TraceVip>,
    pub backends: Vec<TraceBackend>,
    pub interfaces: Vec<TraceInterface>,
}

/// A VIP, by the index records carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceVip {
    pub index: u32,
    pub name: String,
}

/// A backend, by the id records carry (retiring backends included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceBackend {
    pub id: u32,
    pub vip: String,
    pub name: String,
    pub address: String,
}

/// An interface the program is attached to, by index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceInterface {
    pub ifindex: u32,
    pub name: String,
}
