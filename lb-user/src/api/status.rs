//! What `xlb status` shows: the JSON the daemon serves on its control
//! socket. [`super::render`] prints it as a table for people.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a backend's health checks say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No result yet.
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// In the Maglev table.
    Active,
    /// Weight 0: gets no new flows.
    Draining,
    /// MAC not (yet) in the kernel's neighbour table: gets no traffic.
    Unresolved,
    /// Its health check failed `fall` times in a row: no new flows.
    Down,
    /// Health-checked, no result yet: no new flows until the first success.
    Pending,
    /// Taken out of the configuration: no new flows; its established flows
    /// go on until they have been idle for the connection-table timeout.
    Removed,
    /// Usable, but its tier does not serve (the lower tiers have
    /// `min_usable` usable backends): no new flows; established flows go on.
    Backup,
}

impl BackendState {
    /// Every state, in the order `xlb status` explains them.
    pub const ALL: [BackendState; 7] = [
        BackendState::Active,
        BackendState::Backup,
        BackendState::Draining,
        BackendState::Unresolved,
        BackendState::Down,
        BackendState::Pending,
        BackendState::Removed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Active => "active",
            BackendState::Draining => "draining",
            BackendState::Unresolved => "unresolved",
            BackendState::Down => "down",
            BackendState::Pending => "pending",
            BackendState::Removed => "removed",
            BackendState::Backup => "backup",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub name: String,
    pub address: String,
    pub weight: u32,
    pub mac: Option<String>,
    pub state: BackendState,
    pub packets: u64,
    pub bytes: u64,
    // Fields added with health checks; `default` keeps older JSON readable.
    /// The weight in the configuration file (`weight` is the one in use).
    #[serde(default)]
    pub config_weight: u32,
    /// Drained at runtime (`xlb backend drain`) until undrained or reloaded.
    #[serde(default)]
    pub drained: bool,
    /// Weight set at runtime (`xlb backend weight`) until a reload.
    #[serde(default)]
    pub weight_override: Option<u32>,
    /// The health check and its last result; absent if not checked.
    #[serde(default)]
    pub health: Option<HealthStatus>,
    /// Its backup tier (`[[vip.backend]] tier`, 0 = primary).
    #[serde(default)]
    pub tier: u8,
    /// The member weight the ring is built with: `weight`, or with
    /// `[vip.feedback]` `weight` × the effective percent (so that nothing
    /// rounds to 0). 0 while drained.
    #[serde(default)]
    pub effective_weight: u32,
    /// `[vip.feedback]`: the signal and the effective percent; absent for a
    /// VIP without feedback.
    #[serde(default)]
    pub feedback: Option<FeedbackStatus>,
    /// Where it came from: the configuration file, or `xlb backend add`.
    #[serde(default)]
    pub source: BackendSource,
}

/// A backend's feedback (`[vip.feedback]`) as `xlb status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackStatus {
    /// `agent` or `response_time`.
    pub source: String,
    /// The effective percent the weight is scaled by (from the floor to 100).
    pub percent: u8,
    /// What the signal asked for last (before the floor, hysteresis and
    /// period); absent before the first signal.
    pub wanted_percent: Option<u8>,
    /// The agent's last reply, what went wrong, or the last check's
    /// response time.
    pub last: Option<String>,
    /// `response_time`: the smoothed response time, in microseconds.
    pub smoothed_rtt_us: Option<u64>,
    /// How many times the effective percent changed.
    pub changes: u64,
    /// Seconds since it last changed; absent if it never did.
    pub changed_ago_s: Option<u64>,
    /// Agent replies that were not a percentage (the weight stayed).
    pub bad_replies: u64,
    /// Questions the agent did not answer (the weight stayed).
    pub unanswered: u64,
}

/// Where a backend came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendSource {
    /// The configuration file.
    #[default]
    File,
    /// `xlb backend add`: kept across reloads and restarts until `xlb
    /// backend remove`.
    Runtime,
}

impl BackendSource {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendSource::File => "file",
            BackendSource::Runtime => "runtime",
        }
    }
}

/// A backend's health check as `xlb status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// What is checked, e.g. `http GET :80/ expect 200-299`.
    pub check: String,
    pub state: Health,
    /// Whether the last check passed; absent before the first result.
    pub last_ok: Option<bool>,
    /// What the last check saw ("HTTP 200", "connection refused", ...).
    pub last_detail: Option<String>,
    /// How long the last check took, in microseconds.
    pub last_latency_us: Option<u64>,
    /// Results in a row that agree with the last one.
    pub consecutive: u32,
    /// Seconds since the health state last changed (or since checks began).
    pub since_change_s: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipStatus {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub protocol: String,
    pub mode: String,
    pub affinity: String,
    pub ring_size: u32,
    /// False while this node is not the VRRP master of the VIP's group.
    #[serde(default = "yes")]
    pub forwarding: bool,
    pub packets: u64,
    pub bytes: u64,
    pub backends: Vec<BackendStatus>,
    /// Backends in the Maglev table now; 0 with backends configured means
    /// new connections are dropped (counted as `no_backend`).
    #[serde(default)]
    pub usable_backends: usize,
    /// The backend tiers whose usable backends take new flows, lowest
    /// first: the lowest tiers that together have `min_usable` usable
    /// backends (every tier if they never do). Empty without backends.
    #[serde(default)]
    pub serving_tiers: Vec<u8>,
    /// `keep` or `reschedule`: what a failed check does to established flows.
    #[serde(default)]
    pub on_down: String,
    /// With `[announce]`: whether this node announces the VIP's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<AnnounceStatus>,
}

/// Route health injection for one VIP (`[announce]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceStatus {
    /// The address is on the announce interface for the routing daemon.
    pub announced: bool,
    pub interface: String,
    /// Why: "announced: 3 of 3 backends usable (min_usable 1)",
    /// "withdrawn: ...", "not announced: <error>".
    pub detail: String,
}

fn yes() -> bool {
    true
}

/// The version of the `xlb status --json` schema (docs/operations.md):
/// raised when a key changes meaning or goes away; new keys may appear
/// within a version.
pub const STATUS_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// [`STATUS_VERSION`] of the daemon that answered (0: one older than
    /// the field).
    #[serde(default)]
    pub version: u32,
    pub interface: String,
    pub xdp_mode: String,
    /// Whether the data plane is switched on (per-VIP VRRP standby is in
    /// `VipStatus::forwarding`).
    pub forwarding: bool,
    pub vips: Vec<VipStatus>,
    /// Packets seen, passed to the kernel, forwarded, dropped.
    pub global: BTreeMap<String, u64>,
    /// Dropped packets by reason.
    pub drops: BTreeMap<String, u64>,
    /// Connection-table events (hits, misses, inserts, refusals, ...).
    #[serde(default)]
    pub conntrack: BTreeMap<String, u64>,
    /// VRRP, when the config has a `[vrrp]` section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrrp: Option<VrrpStatus>,
    /// The attached program and the pinned state it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane: Option<DataplaneStatus>,
    /// Connection sync, when the config has a `[sync]` section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncStatus>,
}

/// Connection sync between nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// "unicast" (a peer list) or "multicast" (a group).
    pub mode: String,
    /// The UDP port messages go to and come from.
    pub port: u16,
    /// This node's epoch (its sync start, Unix nanoseconds): peers reject
    /// older epochs of it as replays.
    pub epoch: u64,
    /// Peers listed or heard from.
    pub peers: Vec<SyncPeerStatus>,
    /// Messages and flows sent and received, drops by reason, the data
    /// plane's reports and lost reports.
    pub counters: BTreeMap<String, u64>,
    /// From a flow's first packet on this node to its entry leaving for
    /// the peers, over the last reported flows (microseconds).
    pub lag_us_median: Option<u64>,
    pub lag_us_p99: Option<u64>,
}

/// One peer of the sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPeerStatus {
    pub address: String,
    /// Since its last accepted message; `None`: never heard.
    pub last_heard_ms_ago: Option<u64>,
    /// Accepted messages and the flows they carried.
    pub messages: u64,
    pub flows: u64,
}

/// The XDP program and its pinned state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneStatus {
    /// The attached program's kernel id and tag (a hash of its code).
    pub program_id: u32,
    pub program_tag: String,
    /// When the attached program was loaded (Unix seconds).
    pub program_loaded_unix_s: u64,
    /// The bpffs directory of the pinned maps and links.
    pub state_dir: String,
    /// When that state was created (Unix seconds): counters and the
    /// connection table go back to then.
    pub state_created_unix_s: u64,
    /// What this process did at start: "created" the state, "adopted" it
    /// (same program), "upgraded" it (replaced the program), or
    /// "migrated" it (connection tables resized).
    pub start: String,
}

/// VRRP state of the node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpStatus {
    pub groups: Vec<VrrpGroupStatus>,
    /// Tracking verdict: "ok", or what fails ("link down", "198.18.0.254 unreachable").
    pub tracking: String,
    /// Received packets: "accepted" and one counter per reason for ignoring one.
    pub counters: BTreeMap<String, u64>,
    /// `vrrp.peers`: adverts go to them by unicast and only theirs are
    /// accepted. Empty: multicast.
    #[serde(default)]
    pub peers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpGroupStatus {
    pub vrid: u8,
    pub family: String,
    /// init, backup, master or fault.
    pub state: String,
    /// Effective priority (configured minus tracking penalty).
    pub priority: u8,
    pub configured_priority: u8,
    pub preempt: bool,
    pub advert_interval_cs: u16,
    /// The current master's address, if known (ours when master).
    pub master: Option<String>,
    pub vips: Vec<String>,
    /// Held with the VIPs on `server_interface`; not in the adverts.
    #[serde(default)]
    pub server_addresses: Vec<String>,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub last_transition: Option<VrrpTransition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpTransition {
    pub from: String,
    pub to: String,
    pub reason: String,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// How long ago, when the status was taken.
    #[serde(default)]
    pub ago_ms: u64,
}

impl Status {
    /// The VIP named `name`.
    pub fn vip(&self, name: &str) -> Option<&VipStatus> {
        self.vips.iter().find(|v| v.name == name)
    }

    /// Whether there is a VIP and every backend of every VIP is active.
    pub fn all_backends_active(&self) -> bool {
        !self.vips.is_empty()
            && self.vips.iter().all(|v| {
                !v.backends.is_empty() && v.backends.iter().all(|b| b.state == BackendState::Active)
            })
    }
}

impl VipStatus {
    /// The backend named `name`.
    pub fn backend(&self, name: &str) -> Option<&BackendStatus> {
        self.backends.iter().find(|b| b.name == name)
    }
}

impl VrrpStatus {
    /// The group with this virtual router id.
    pub fn group(&self, vrid: u8) -> Option<&VrrpGroupStatus> {
        self.groups.iter().find(|g| g.vrid == vrid)
    }
}
