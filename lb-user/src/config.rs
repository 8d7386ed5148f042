//! The declarative configuration file: parsing and validation, pure.
//!
//! Operators describe the whole load balancer in one TOML file (reference:
//! `docs/config.md`). [`Config::parse`] turns its text into a [`Config`] or
//! into [`ConfigErrors`], every one of which names the file, the line and
//! column, and the field path (`vip[1].backend[0].weight`) of the offending
//! value:
//!
//! ```text
//! xlb.toml:14:10: vip[1].backend[0].weight: 20000 is out of range 0..=10000
//! ```
//!
//! Parsing runs in two stages. The TOML crate deserialises the text into raw
//! structs that keep the span of every value (`toml::Spanned`) and reject
//! unknown fields; a syntax or type error stops there (it is necessarily
//! single), and its byte span is mapped to a field path. The semantic checks
//! (ranges, primality, duplicates, address families, names) then run over the
//! raw structs and collect *every* error before giving up.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod announce;
mod checks;
mod conntrack;
mod errors;
mod feedback;
mod health;
mod metrics;
mod socket;
mod sync;
mod validate;
mod vrrp;

use checks::check_unicast;
use errors::toml_error;
pub use errors::{ConfigError, ConfigErrors};
use validate::{RawConfig, Validator};

pub use announce::AnnounceConfig;
pub use checks::{check_backend_address, check_backend_port};
pub use conntrack::ConntrackConfig;
pub use feedback::{AgentConfig, FeedbackConfig, FeedbackSource};
pub use health::{CheckConfig, CheckKind, OnDown, StatusCodes, VipCheck};
pub use metrics::MetricsConfig;
pub use socket::GroupRef;
pub use sync::{SyncConfig, SyncPeers};
pub use vrrp::{VrrpConfig, VrrpGroup, default_link_local};

/// Where the control socket lives unless `control_socket` says otherwise.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/xlb/xlb.sock";

/// Where pinned state lives unless `state_dir` says otherwise: one
/// directory per interface under this one.
pub const DEFAULT_STATE_ROOT: &str = "/sys/fs/bpf/xlb";

/// `DEFAULT_STATE_ROOT/<interface>`.
pub fn default_state_dir(interface: &str) -> PathBuf {
    Path::new(DEFAULT_STATE_ROOT).join(interface)
}

/// Largest backend weight.
pub const MAX_WEIGHT: u32 = 10_000;

/// Smallest Maglev table size accepted.
pub const MIN_RING_SIZE: u32 = 7;

/// Longest VIP name.
pub const MAX_NAME_LEN: usize = 64;

/// Linux `IFNAMSIZ` minus the terminating NUL.
const MAX_IFNAME_LEN: usize = 15;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The NIC the XDP program attaches to.
    pub interface: String,
    pub xdp_mode: XdpMode,
    pub control_socket: PathBuf,
    /// The control socket's group: its members may connect (the socket is
    /// mode 0660) and read the status. `None`: mode 0600, root only.
    pub control_socket_group: Option<GroupRef>,
    /// Members of this group may also change state (reload, drain, add,
    /// trace, down). `None`: root only.
    pub control_socket_admin_group: Option<GroupRef>,
    /// Second NIC, towards the backends, for a two-armed NAT layout.
    pub server_interface: Option<String>,
    /// The bpffs directory of the pinned data plane (maps and links), which
    /// outlives the process.
    pub state_dir: PathBuf,
    pub conntrack: ConntrackConfig,
    pub vips: Vec<VipConfig>,
    /// `[vrrp]`: share the VIPs with other nodes. Without it the node
    /// always forwards.
    pub vrrp: Option<VrrpConfig>,
    /// `[announce]`: offer the VIPs to a routing daemon while they can be
    /// served (ECMP across active nodes).
    pub announce: Option<AnnounceConfig>,
    /// `[sync]`: share the connection table with the other nodes.
    pub sync: Option<SyncConfig>,
    /// `[metrics]`: serve Prometheus metrics over HTTP. Off without it.
    pub metrics: Option<MetricsConfig>,
}

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic mode with a warning.
    Auto,
    /// Native (driver) mode only; fail if the driver lacks XDP support.
    Native,
    /// Generic (skb) mode: works on any NIC, slower.
    Generic,
}

/// One virtual service: an (address, port, protocol) and its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipConfig {
    pub name: String,
    pub address: IpAddr,
    /// 0 = all ports.
    pub port: u16,
    pub protocol: Protocol,
    pub mode: Mode,
    /// Maglev table size, a prime.
    pub ring_size: u32,
    pub affinity: Affinity,
    pub backends: Vec<BackendConfig>,
    /// What a failed health check does to established flows.
    pub on_down: OnDown,
    /// `[vip.health]` on its own: the check of backends added at runtime.
    pub health: Option<VipCheck>,
    /// The ring holds the lowest backend tiers that together have at least
    /// this many usable backends (or every tier); with `[announce]`, the VIP
    /// is announced only while the ring has at least this many members.
    pub min_usable: u32,
    /// `[vip.feedback]`: backends' weights scaled by their reported load
    /// or response time. `None`: the weights are the file's.
    pub feedback: Option<FeedbackConfig>,
}

/// Transport protocol of a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// Forwarding mode of a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Direct server return: rewrite the destination MAC only; backends
    /// answer clients directly.
    Dsr,
    /// Rewrite the destination to the backend (address and port); the
    /// backends' replies come back through xlb, which restores the VIP.
    Nat,
}

/// What the backend choice is hashed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Affinity {
    /// The 5-tuple: each connection may go to a different backend.
    Flow,
    /// The client address only: all of a client's connections go to one backend.
    Source,
}

/// One real server behind a VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub name: String,
    pub address: IpAddr,
    /// The port the backend serves on: the VIP's port unless a NAT VIP
    /// translates it; 0 for an all-ports VIP (the client's port is kept).
    pub port: u16,
    /// 0..=MAX_WEIGHT; 0 = draining (no new flows).
    pub weight: u32,
    /// Backup tier, 0 (the primaries, the default) to 255: new flows go to
    /// the lowest tiers that together have `min_usable` usable backends.
    pub tier: u8,
    /// The health check (the VIP's `[vip.health]` merged with the backend's
    /// own); `None` = not checked, always considered up.
    pub check: Option<CheckConfig>,
}

impl VipConfig {
    /// The data plane's key of this VIP.
    pub fn key(&self) -> lb_common::VipKey {
        lb_common::VipKey::new(self.address, self.port, self.protocol.number())
    }
}

impl XdpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

impl Protocol {
    /// The IP protocol number (6 or 17).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => lb_common::IPPROTO_TCP,
            Protocol::Udp => lb_common::IPPROTO_UDP,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Dsr => "dsr",
            Mode::Nat => "nat",
        }
    }
}

impl Affinity {
    pub fn as_str(self) -> &'static str {
        match self {
            Affinity::Flow => "flow",
            Affinity::Source => "source",
        }
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(XdpMode, Protocol, Mode, Affinity);

impl Config {
    /// Parses and validates configuration text. `origin` names the text in
    /// error messages (normally the file name).
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(text, origin, &e))?;
        let mut v = Validator {
            text,
            origin,
            errors: Vec::new(),
        };
        let config = v.config(raw);
        if v.errors.is_empty() {
            Ok(config)
        } else {
            // File order (stable: errors at one place keep check order).
            v.errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(v.errors))
        }
    }

    /// Reads and parses the file at `path`, if only root and xlb's own
    /// user may change it (see [`check_writers`]).
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let origin = path.display().to_string();
        match read_trusted(path) {
            Ok(text) => Config::parse(&text, &origin),
            Err(message) => Err(ConfigError {
                origin,
                line: 0,
                column: 0,
                field: String::new(),
                message,
            }
            .into()),
        }
    }
}

/// The text of the configuration file at `path` (a symlink is followed:
/// the file it names is the one checked and read).
fn read_trusted(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;
    let cannot = |e: std::io::Error| format!("cannot read configuration file: {e}");
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    check_writers(
        path,
        meta.mode(),
        meta.uid(),
        nix::unistd::geteuid().as_raw(),
    )?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(cannot)?;
    Ok(text)
}

/// A configuration file of `mode` owned by `owner` may be run by a daemon
/// of `euid`: it says what xlb forwards where, who may use its control
/// socket and where its sync key is, so one that others may write, or that
/// belongs to another user (who can make it writable at will), is refused.
/// Its group may write it: that is how a site lets its operators' group
/// edit it.
fn check_writers(path: &Path, mode: u32, owner: u32, euid: u32) -> Result<(), String> {
    let mode = mode & 0o7777;
    if mode & 0o002 != 0 {
        return Err(format!(
            "configuration file has mode {mode:04o}: others may write it, and so choose what \
             xlb forwards (chmod o-w {})",
            path.display()
        ));
    }
    match crate::file_owner::foreign("configuration file", path, owner, euid) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
