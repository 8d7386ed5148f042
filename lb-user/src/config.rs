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

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::maglev;

mod conntrack;
mod health;
mod vrrp;

pub use conntrack::ConntrackConfig;
pub use health::{CheckConfig, CheckKind, OnDown, StatusCodes};
pub use vrrp::{VrrpConfig, VrrpGroup};

/// Where the control socket lives unless `control_socket` says otherwise.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/xlb/xlb.sock";

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
    /// Second NIC, towards the backends, for a two-armed NAT layout.
    pub server_interface: Option<String>,
    pub conntrack: ConntrackConfig,
    pub vips: Vec<VipConfig>,
    /// `[vrrp]`: share the VIPs with other nodes. Without it the node
    /// always forwards.
    pub vrrp: Option<VrrpConfig>,
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
    /// The health check (the VIP's `[vip.health]` merged with the backend's
    /// own); `None` = not checked, always considered up.
    pub check: Option<CheckConfig>,
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

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name as given (or `<string>`-like origin of the text).
    pub origin: String,
    /// 1-based; 0 when the error is not about a place in the text (the file
    /// could not be read).
    pub line: usize,
    /// 1-based, in characters; 0 when `line` is 0.
    pub column: usize,
    /// Path of the offending field, e.g. `vip[1].backend[0].weight`; empty
    /// for errors about the whole file.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.origin)?;
        if self.line != 0 {
            write!(f, "{}:{}:", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, " {}:", self.field)?;
        }
        write!(f, " {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// All the problems found in a configuration file, in file order for
/// semantic errors. Displays one error per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", join_lines(.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

fn join_lines(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

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

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &origin),
            Err(e) => Err(ConfigError {
                origin,
                line: 0,
                column: 0,
                field: String::new(),
                message: format!("cannot read configuration file: {e}"),
            }
            .into()),
        }
    }
}

// ---------------------------------------------------------------------------
// Raw, span-keeping structs: exactly the file's schema.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interface: Spanned<String>,
    #[serde(default)]
    xdp_mode: Option<Spanned<XdpMode>>,
    #[serde(default)]
    control_socket: Option<Spanned<String>>,
    #[serde(default)]
    server_interface: Option<Spanned<String>>,
    #[serde(default)]
    conntrack: Option<conntrack::RawConntrack>,
    #[serde(default)]
    vip: Vec<Spanned<RawVip>>,
    #[serde(default)]
    vrrp: Option<Spanned<vrrp::RawVrrp>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVip {
    name: Spanned<String>,
    address: Spanned<IpAddr>,
    // Integers are read wide and range-checked here, so that an out-of-range
    // value is a collected semantic error with our wording.
    #[serde(default)]
    port: Option<Spanned<i64>>,
    #[serde(default)]
    protocol: Option<Spanned<Protocol>>,
    #[serde(default)]
    mode: Option<Spanned<Mode>>,
    #[serde(default)]
    ring_size: Option<Spanned<i64>>,
    #[serde(default)]
    affinity: Option<Spanned<Affinity>>,
    #[serde(default)]
    backend: Vec<Spanned<RawBackend>>,
    #[serde(default)]
    health: Option<Spanned<health::RawHealth>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: Spanned<IpAddr>,
    #[serde(default)]
    port: Option<Spanned<i64>>,
    #[serde(default)]
    weight: Option<Spanned<i64>>,
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    health: Option<Spanned<health::RawHealth>>,
}

// ---------------------------------------------------------------------------
// Semantic validation.

struct Validator<'a> {
    text: &'a str,
    origin: &'a str,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn error(&mut self, span: Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        let (line, column) = line_col(self.text, span.start);
        self.errors.push(ConfigError {
            origin: self.origin.to_owned(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        });
    }

    fn line(&self, span: &Range<usize>) -> usize {
        line_col(self.text, span.start).0
    }

    /// An integer field within `range`, or `default` (after an error).
    fn int_in<T: TryFrom<i64> + Copy>(
        &mut self,
        value: &Option<Spanned<i64>>,
        field: &str,
        range: std::ops::RangeInclusive<i64>,
        default: T,
    ) -> T {
        let Some(v) = value else { return default };
        let n = *v.get_ref();
        match T::try_from(n) {
            Ok(t) if range.contains(&n) => t,
            _ => {
                self.error(
                    v.span(),
                    field,
                    format!("{n} is out of range {}..={}", range.start(), range.end()),
                );
                default
            }
        }
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let interface = raw.interface.get_ref().clone();
        if let Err(why) = check_ifname(&interface) {
            self.error(
                raw.interface.span(),
                "interface",
                format!("{interface:?} is not a valid interface name: {why}"),
            );
        }
        let control_socket = match &raw.control_socket {
            Some(s) if s.get_ref().is_empty() => {
                self.error(s.span(), "control_socket", "must not be empty");
                PathBuf::from(DEFAULT_CONTROL_SOCKET)
            }
            Some(s) => PathBuf::from(s.get_ref()),
            None => PathBuf::from(DEFAULT_CONTROL_SOCKET),
        };

        // First occurrence (index, line) of each VIP key and name.
        let mut seen_keys: HashMap<(IpAddr, u16, Protocol), (usize, usize)> = HashMap::new();
        let mut seen_names: HashMap<String, (usize, usize)> = HashMap::new();
        let mut vips = Vec::with_capacity(raw.vip.len());
        for (i, vip) in raw.vip.iter().enumerate() {
            let cfg = self.vip(i, vip.get_ref());
            let raw = vip.get_ref();

            let name_line = self.line(&raw.name.span());
            if let Some(&(j, line)) = seen_names.get(&cfg.name) {
                self.error(
                    raw.name.span(),
                    format!("vip[{i}].name"),
                    format!(
                        "duplicate VIP name {:?}: already used by vip[{j}] at line {line}",
                        cfg.name
                    ),
                );
            } else {
                seen_names.insert(cfg.name.clone(), (i, name_line));
            }

            // An out-of-range port (already reported) stands in as 0 in
            // `cfg`; comparing it would report a bogus duplicate.
            let port_ok = raw
                .port
                .as_ref()
                .is_none_or(|p| u16::try_from(*p.get_ref()).is_ok());
            let key = (cfg.address, cfg.port, cfg.protocol);
            let addr_line = self.line(&raw.address.span());
            match seen_keys.get(&key) {
                _ if !port_ok => {}
                Some(&(j, line)) => self.error(
                    raw.address.span(),
                    format!("vip[{i}].address"),
                    format!(
                        "duplicate VIP {}: already defined by vip[{j}] at line {line}",
                        describe_vip(&cfg)
                    ),
                ),
                None => {
                    seen_keys.insert(key, (i, addr_line));
                }
            }
            vips.push(cfg);
        }

        let server_interface = raw.server_interface.as_ref().map(|s| {
            let name = s.get_ref().clone();
            if let Err(why) = check_ifname(&name) {
                self.error(
                    s.span(),
                    "server_interface",
                    format!("{name:?} is not a valid interface name: {why}"),
                );
            } else if name == interface {
                self.error(
                    s.span(),
                    "server_interface",
                    "must differ from interface (leave it out for a one-armed layout)",
                );
            }
            name
        });

        let vrrp = raw.vrrp.as_ref().map(|r| self.vrrp(r, &vips));
        Config {
            interface,
            xdp_mode: raw.xdp_mode.map_or(XdpMode::Auto, |m| *m.get_ref()),
            control_socket,
            server_interface,
            conntrack: self.conntrack(raw.conntrack.as_ref()),
            vips,
            vrrp,
        }
    }

    fn vip(&mut self, i: usize, raw: &RawVip) -> VipConfig {
        let p = format!("vip[{i}]");
        let name = raw.name.get_ref().clone();
        if let Err(why) = check_vip_name(&name) {
            self.error(
                raw.name.span(),
                format!("{p}.name"),
                format!("{name:?} is not a valid VIP name: {why}"),
            );
        }
        let address = *raw.address.get_ref();
        if let Err(why) = check_unicast(address) {
            self.error(
                raw.address.span(),
                format!("{p}.address"),
                format!("{address} cannot be a VIP: {why}"),
            );
        }
        let port = self.int_in(&raw.port, &format!("{p}.port"), 0..=65_535, 0u16);

        let ring_size = match &raw.ring_size {
            None => lb_common::DEFAULT_RING_SIZE,
            Some(r) => self.ring_size(r, &format!("{p}.ring_size")),
        };
        let n_backends = raw.backend.len();
        if u64::try_from(n_backends).unwrap_or(u64::MAX) > u64::from(ring_size) {
            let span = raw.ring_size.as_ref().map_or(raw.name.span(), |r| r.span());
            self.error(
                span,
                format!("{p}.ring_size"),
                format!(
                    "{ring_size} is smaller than the number of backends ({n_backends}); \
                     the Maglev table needs at least one slot per backend"
                ),
            );
        }

        let (vip_health, on_down) =
            self.vip_health(raw.health.as_ref(), &format!("{p}.health"), port);

        // First occurrence (index, line) of each backend address and name.
        let mut seen_addrs: HashMap<IpAddr, (usize, usize)> = HashMap::new();
        let mut seen_names: HashMap<String, (usize, usize)> = HashMap::new();
        let mut backends = Vec::with_capacity(n_backends);
        for (j, b) in raw.backend.iter().enumerate() {
            let bp = format!("{p}.backend[{j}]");
            let b = b.get_ref();
            let baddr = *b.address.get_ref();
            let aspan = b.address.span();
            let aline = self.line(&aspan);
            if baddr.is_ipv4() != address.is_ipv4() {
                self.error(
                    aspan.clone(),
                    format!("{bp}.address"),
                    format!(
                        "{} backend {baddr} under {} VIP {address}: \
                         a backend must have the VIP's address family",
                        family(baddr),
                        family(address)
                    ),
                );
            } else if let Err(why) = check_unicast(baddr) {
                self.error(
                    aspan.clone(),
                    format!("{bp}.address"),
                    format!("{baddr} cannot be a backend: {why}"),
                );
            }
            if let Some(&(k, line)) = seen_addrs.get(&baddr) {
                self.error(
                    aspan.clone(),
                    format!("{bp}.address"),
                    format!(
                        "duplicate backend address {baddr}: already {p}.backend[{k}] at line {line}"
                    ),
                );
            } else {
                seen_addrs.insert(baddr, (j, aline));
            }

            let weight = self.int_in(
                &b.weight,
                &format!("{bp}.weight"),
                0..=i64::from(MAX_WEIGHT),
                1u32,
            );

            let (bname, nspan) = match &b.name {
                Some(n) => (n.get_ref().clone(), n.span()),
                None => (baddr.to_string(), aspan),
            };
            if b.name.is_some()
                && let Err(why) = check_backend_name(&bname)
            {
                self.error(
                    nspan.clone(),
                    format!("{bp}.name"),
                    format!("{bname:?} is not a valid backend name: {why}"),
                );
            }
            let nline = self.line(&nspan);
            if let Some(&(k, line)) = seen_names.get(&bname) {
                self.error(
                    nspan,
                    format!("{bp}.name"),
                    format!(
                        "duplicate backend name {bname:?}: already used by \
                         {p}.backend[{k}] at line {line}"
                    ),
                );
            } else {
                seen_names.insert(bname.clone(), (j, nline));
            }

            let mode = raw.mode.as_ref().map_or(Mode::Dsr, |s| *s.get_ref());
            let bport = match &b.port {
                None => port,
                Some(bp_raw) => {
                    let field = format!("{bp}.port");
                    let n = self.int_in(&b.port, &field, 1..=65_535, port);
                    if mode == Mode::Dsr && n != port {
                        self.error(
                            bp_raw.span(),
                            field,
                            format!(
                                "port {n} differs from the VIP's port {port}: \
                                 translating ports needs mode = \"nat\""
                            ),
                        );
                    } else if port == 0 {
                        self.error(
                            bp_raw.span(),
                            field,
                            "an all-ports VIP (port 0) keeps the client's destination port; \
                             remove the backend port",
                        );
                    }
                    n
                }
            };
            let check = self.backend_health(
                vip_health.as_ref(),
                b.health.as_ref(),
                &format!("{bp}.health"),
                bport,
            );
            backends.push(BackendConfig {
                name: bname,
                address: baddr,
                port: bport,
                weight,
                check,
            });
        }

        VipConfig {
            name,
            address,
            port,
            protocol: raw
                .protocol
                .as_ref()
                .map_or(Protocol::Tcp, |s| *s.get_ref()),
            mode: raw.mode.as_ref().map_or(Mode::Dsr, |s| *s.get_ref()),
            ring_size,
            affinity: raw
                .affinity
                .as_ref()
                .map_or(Affinity::Flow, |s| *s.get_ref()),
            backends,
            on_down,
        }
    }

    /// A valid ring size, or the default after an error.
    fn ring_size(&mut self, r: &Spanned<i64>, field: &str) -> u32 {
        let n = *r.get_ref();
        let (lo, hi) = (MIN_RING_SIZE, lb_common::MAX_RING_SIZE);
        match u32::try_from(n) {
            Ok(size) if (lo..=hi).contains(&size) => {
                if maglev::is_prime(size) {
                    return size;
                }
                let below = (lo..size).rev().find(|&k| maglev::is_prime(k));
                let above = (size + 1..=hi).find(|&k| maglev::is_prime(k));
                let hint = match (below, above) {
                    (Some(b), Some(a)) => format!(" (nearest primes: {b}, {a})"),
                    (Some(x), None) | (None, Some(x)) => format!(" (nearest prime: {x})"),
                    (None, None) => String::new(),
                };
                self.error(
                    r.span(),
                    field,
                    format!("{size} is not prime; the Maglev table size must be prime{hint}"),
                );
            }
            _ => self.error(r.span(), field, format!("{n} is out of range {lo}..={hi}")),
        }
        lb_common::DEFAULT_RING_SIZE
    }
}

fn family(a: IpAddr) -> &'static str {
    if a.is_ipv4() { "IPv4" } else { "IPv6" }
}

fn describe_vip(v: &VipConfig) -> String {
    let port = if v.port == 0 {
        "all ports".to_owned()
    } else {
        format!("port {}", v.port)
    };
    format!("{} {port} {}", v.address, v.protocol)
}

/// Linux's `dev_valid_name()`.
fn check_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return Err("\".\" and \"..\" are reserved");
    }
    if name.contains('/') {
        return Err("contains '/'");
    }
    if name.contains(':') {
        return Err("contains ':'");
    }
    if name.chars().any(|c| c.is_whitespace() || c == '\0') {
        return Err("contains whitespace or NUL");
    }
    Ok(())
}

fn check_vip_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err("only letters, digits, '_', '.' and '-' are allowed");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("longer than 64 characters");
    }
    Ok(())
}

fn check_backend_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("longer than 64 bytes");
    }
    if name.chars().any(char::is_control) {
        return Err("contains control characters");
    }
    Ok(())
}

/// Addresses that can never be a VIP or a backend.
fn check_unicast(a: IpAddr) -> Result<(), &'static str> {
    if a.is_unspecified() {
        return Err("unspecified address");
    }
    if a.is_multicast() {
        return Err("multicast address");
    }
    if let IpAddr::V4(v4) = a
        && v4.is_broadcast()
    {
        return Err("broadcast address");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Positions and field paths of TOML errors.

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..offset].chars().count() + 1)
}

/// Turns a syntax or type error of the TOML crate into a [`ConfigErrors`].
fn toml_error(text: &str, origin: &str, e: &toml::de::Error) -> ConfigErrors {
    let span = e.span();
    let (line, column) = line_col(text, span.as_ref().map_or(0, |s| s.start));
    let mut message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
        .replace("expected i64", "expected an integer")
        .replace(
            "expected a sequence",
            "expected an array (write [[table]] for an array of tables)",
        );
    // A datetime reaches serde as a map; say what it really is.
    if let Some(s) = &span
        && text
            .get(s.clone())
            .is_some_and(|v| v.trim().parse::<toml::value::Datetime>().is_ok())
    {
        message = message.replace("invalid type: map,", "invalid type: datetime,");
    }
    // No span: the error is about the document as a whole.
    let mut field = span
        .and_then(|span| field_at(text, &span))
        .unwrap_or_default();
    // serde reports a missing field against the table that lacks it.
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some(name) = rest.strip_suffix('`')
    {
        field = join_path(&field, name);
        message = "required field is missing".to_owned();
    }
    ConfigError {
        origin: origin.to_owned(),
        line,
        column,
        field,
        message,
    }
    .into()
}

fn join_path(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The field path of the innermost key or value whose span holds `span`.
///
/// Uses a span-keeping generic parse of the document when that succeeds
/// (type errors), else a line scan for table headers (syntax errors).
fn field_at(text: &str, span: &Range<usize>) -> Option<String> {
    match toml::from_str::<Node>(text) {
        Ok(root) => {
            let mut index = Vec::new();
            root.index("", &mut index);
            // Innermost = shortest; on a tie (an array of tables and its
            // only element share a span) the later, deeper entry wins.
            let mut best: Option<(usize, String)> = None;
            for (s, path) in index {
                let holds = s.start <= span.start
                    && (span.start < s.end || s == *span)
                    && s.end >= span.end;
                if holds && best.as_ref().is_none_or(|(len, _)| s.len() <= *len) {
                    best = Some((s.len(), path));
                }
            }
            // Held by nothing: the root table (e.g. a missing top-level field).
            Some(best.map(|(_, path)| path).unwrap_or_default())
        }
        Err(_) => scan_field(text, span.start),
    }
}

/// A TOML document reduced to its shape and spans.
enum Node {
    Leaf,
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    /// Appends (span, path) for every key and value below this node.
    fn index(&self, path: &str, out: &mut Vec<(Range<usize>, String)>) {
        match self {
            Node::Leaf => {}
            Node::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    out.push((item.span(), p.clone()));
                    item.get_ref().index(&p, out);
                }
            }
            Node::Map(entries) => {
                for (key, value) in entries {
                    let p = join_path(path, key.get_ref());
                    out.push((key.span(), p.clone()));
                    out.push((value.span(), p.clone()));
                    value.get_ref().index(&p, out);
                }
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any TOML value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                // A datetime arrives as a map with a plain-string key and
                // fails here; the caller then falls back to the line scan.
                let mut entries = Vec::new();
                while let Some(entry) = a.next_entry()? {
                    entries.push(entry);
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// Best-effort field path for a syntax error at byte `offset`: the last
/// table header before it (array-of-tables headers counted into indices)
/// plus the key on the error's line, if that line is `key = ...`.
fn scan_field(text: &str, offset: usize) -> Option<String> {
    let (err_line, _) = line_col(text, offset);
    // Count of `[[x]]` tables seen per resolved path (`vip`, `vip[0].backend`).
    let mut arrays: HashMap<String, usize> = HashMap::new();
    let mut table = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let is_err_line = n + 1 == err_line;
        if let Some(inner) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let (parent, last) = resolve_header(inner, &arrays);
            let key = join_path(&parent, &last);
            let count = arrays.entry(key.clone()).or_insert(0);
            table = format!("{key}[{count}]");
            *count += 1;
        } else if let Some(inner) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            let (parent, last) = resolve_header(inner, &arrays);
            table = join_path(&parent, &last);
        } else if is_err_line && let Some((key, _)) = line.split_once('=') {
            let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
            if !key.is_empty() && !key.contains(char::is_whitespace) {
                return Some(join_path(&table, key));
            }
        }
        if is_err_line {
            break;
        }
    }
    if table.is_empty() { None } else { Some(table) }
}

/// Resolves a dotted header into (parent path with array indices, last key).
fn resolve_header(inner: &str, arrays: &HashMap<String, usize>) -> (String, String) {
    let parts: Vec<&str> = inner
        .split('.')
        .map(|p| p.trim().trim_matches(|c| c == '"' || c == '\''))
        .collect();
    let (last, parents) = parts.split_last().unwrap_or((&"", &[]));
    let mut path = String::new();
    for part in parents {
        path = join_path(&path, part);
        if let Some(&count) = arrays.get(&path) {
            path = format!("{path}[{}]", count.saturating_sub(1));
        }
    }
    (path, (*last).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const ORIGIN: &str = "xlb.toml";

    /// The example of the brief plus an IPv6 VIP. Line numbers matter.
    const FULL: &str = r#"interface = "eth0"
xdp_mode = "auto"
control_socket = "/run/xlb/xlb.sock"

[[vip]]
name = "web"
address = "198.18.0.100"
port = 80
protocol = "tcp"
mode = "dsr"
ring_size = 65537
affinity = "flow"

[[vip.backend]]
address = "198.18.0.11"
weight = 1
name = "web1"

[[vip.backend]]
address = "198.18.0.12"
weight = 1
name = "web2"

[[vip.backend]]
address = "198.18.0.13"
weight = 2
name = "web3"

[[vip]]
name = "dns6"
address = "2001:db8::53"
port = 53
protocol = "udp"
ring_size = 251
affinity = "source"

[[vip.backend]]
address = "2001:db8::a"

[[vip.backend]]
address = "2001:db8::b"
weight = 0
name = "b-draining"
"#;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse::<Ipv4Addr>().unwrap())
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
    }

    fn backend(name: &str, address: IpAddr, port: u16, weight: u32) -> BackendConfig {
        BackendConfig {
            name: name.to_owned(),
            address,
            port,
            weight,
            check: None,
        }
    }

    fn errors(text: &str) -> Vec<ConfigError> {
        match Config::parse(text, ORIGIN) {
            Ok(c) => panic!("expected errors, got {c:?}"),
            Err(e) => e.0,
        }
    }

    /// The single error of `text`, checked for line, column and field; the
    /// message is returned for further checks.
    #[track_caller]
    fn one_error(text: &str, line: usize, column: usize, field: &str) -> String {
        let errs = errors(text);
        assert_eq!(
            errs.len(),
            1,
            "expected one error, got:\n{}",
            join_lines(&errs)
        );
        let e = &errs[0];
        assert_eq!(
            (e.origin.as_str(), e.line, e.column, e.field.as_str()),
            (ORIGIN, line, column, field),
            "{e}"
        );
        e.message.clone()
    }

    /// A config with one IPv4 VIP whose `[[vip]]` header is line 3 and
    /// whose extra `vip_lines` start at line 6, followed by `rest`.
    fn with_vip(vip_lines: &str, rest: &str) -> String {
        format!(
            "interface = \"eth0\"\n\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.100\"\n{vip_lines}{rest}"
        )
    }

    #[test]
    fn full_example_parses_to_the_exact_expected_struct() {
        let config = Config::parse(FULL, ORIGIN).unwrap();
        let expected = Config {
            interface: "eth0".into(),
            xdp_mode: XdpMode::Auto,
            control_socket: PathBuf::from("/run/xlb/xlb.sock"),
            server_interface: None,
            conntrack: ConntrackConfig::default(),
            vips: vec![
                VipConfig {
                    name: "web".into(),
                    address: v4("198.18.0.100"),
                    port: 80,
                    protocol: Protocol::Tcp,
                    mode: Mode::Dsr,
                    ring_size: 65_537,
                    affinity: Affinity::Flow,
                    on_down: OnDown::Keep,
                    backends: vec![
                        backend("web1", v4("198.18.0.11"), 80, 1),
                        backend("web2", v4("198.18.0.12"), 80, 1),
                        backend("web3", v4("198.18.0.13"), 80, 2),
                    ],
                },
                VipConfig {
                    name: "dns6".into(),
                    address: v6("2001:db8::53"),
                    port: 53,
                    protocol: Protocol::Udp,
                    mode: Mode::Dsr,
                    ring_size: 251,
                    affinity: Affinity::Source,
                    on_down: OnDown::Keep,
                    backends: vec![
                        backend("2001:db8::a", v6("2001:db8::a"), 53, 1),
                        backend("b-draining", v6("2001:db8::b"), 53, 0),
                    ],
                },
            ],
            vrrp: None,
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn defaults_are_applied() {
        let text = "interface = \"eth1\"\n[[vip]]\nname = \"v\"\naddress = \"10.0.0.1\"\n\
                    [[vip.backend]]\naddress = \"10.0.0.2\"\n";
        let config = Config::parse(text, ORIGIN).unwrap();
        assert_eq!(config.xdp_mode, XdpMode::Auto);
        assert_eq!(config.control_socket, PathBuf::from(DEFAULT_CONTROL_SOCKET));
        let vip = &config.vips[0];
        assert_eq!(vip.port, 0);
        assert_eq!(vip.protocol, Protocol::Tcp);
        assert_eq!(vip.mode, Mode::Dsr);
        assert_eq!(vip.ring_size, lb_common::DEFAULT_RING_SIZE);
        assert_eq!(vip.affinity, Affinity::Flow);
        assert_eq!(
            vip.backends,
            vec![backend("10.0.0.2", v4("10.0.0.2"), 0, 1)]
        );
    }

    #[test]
    fn interface_alone_is_a_valid_config_with_no_vips() {
        let config = Config::parse("interface = \"eth0\"\n", ORIGIN).unwrap();
        assert!(config.vips.is_empty());
        let config = Config::parse("interface = \"eth0\"\nvip = []\n", ORIGIN).unwrap();
        assert!(config.vips.is_empty());
    }

    #[test]
    fn vip_without_backends_is_valid() {
        let config = Config::parse(&with_vip("", ""), ORIGIN).unwrap();
        assert!(config.vips[0].backends.is_empty());
    }

    #[test]
    fn explicit_xdp_modes_and_control_socket_are_read() {
        for (s, mode) in [
            ("auto", XdpMode::Auto),
            ("native", XdpMode::Native),
            ("generic", XdpMode::Generic),
        ] {
            let text = format!(
                "interface = \"eth0\"\nxdp_mode = \"{s}\"\ncontrol_socket = \"/tmp/x.sock\"\n"
            );
            let config = Config::parse(&text, ORIGIN).unwrap();
            assert_eq!(config.xdp_mode, mode);
            assert_eq!(config.control_socket, PathBuf::from("/tmp/x.sock"));
        }
    }

    #[test]
    fn unknown_field_at_top_level_gives_its_line_and_name() {
        let msg = one_error("interface = \"eth0\"\n\nlisten = 1\n", 3, 1, "listen");
        assert!(msg.contains("unknown field `listen`"), "{msg}");
    }

    #[test]
    fn unknown_field_in_vip_gives_its_line_and_path() {
        let msg = one_error(&with_vip("weight = 3\n", ""), 6, 1, "vip[0].weight");
        assert!(msg.contains("unknown field `weight`"), "{msg}");
    }

    #[test]
    fn unknown_field_in_backend_gives_its_line_and_path() {
        let text = with_vip(
            "",
            "\n[[vip.backend]]\naddress = \"198.18.0.11\"\n\n[[vip.backend]]\naddress = \"198.18.0.12\"\nmac = \"x\"\n",
        );
        let msg = one_error(&text, 12, 1, "vip[0].backend[1].mac");
        assert!(msg.contains("unknown field `mac`"), "{msg}");
    }

    #[test]
    fn unknown_field_in_second_vip_is_indexed() {
        let text = format!("{FULL}\n[[vip]]\nname = \"x\"\naddress = \"10.1.1.1\"\nmtu = 9000\n");
        one_error(&text, 48, 1, "vip[2].mtu");
    }

    #[test]
    fn bad_vip_address_gives_line_and_path() {
        let text = "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.300\"\n";
        let msg = one_error(text, 4, 11, "vip[0].address");
        assert!(msg.contains("invalid IP address"), "{msg}");
    }

    #[test]
    fn bad_backend_address_gives_line_and_path() {
        let text = with_vip("", "[[vip.backend]]\naddress = \"web1.example\"\n");
        let msg = one_error(&text, 7, 11, "vip[0].backend[0].address");
        assert!(msg.contains("invalid IP address"), "{msg}");
    }

    #[test]
    fn unspecified_or_multicast_addresses_are_rejected() {
        let text = "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"0.0.0.0\"\n";
        let msg = one_error(text, 4, 11, "vip[0].address");
        assert!(msg.contains("unspecified"), "{msg}");
        let text = with_vip("", "[[vip.backend]]\naddress = \"224.0.0.1\"\n");
        let msg = one_error(&text, 7, 11, "vip[0].backend[0].address");
        assert!(msg.contains("multicast"), "{msg}");
    }

    #[test]
    fn ipv6_backend_under_ipv4_vip_is_rejected() {
        let text = with_vip(
            "",
            "[[vip.backend]]\naddress = \"198.18.0.11\"\n[[vip.backend]]\naddress = \"2001:db8::1\"\n",
        );
        let msg = one_error(&text, 9, 11, "vip[0].backend[1].address");
        assert!(
            msg.contains("IPv6 backend 2001:db8::1 under IPv4 VIP 198.18.0.100"),
            "{msg}"
        );
    }

    #[test]
    fn ipv4_backend_under_ipv6_vip_is_rejected() {
        let text = "interface = \"eth0\"\n[[vip]]\nname = \"v6\"\naddress = \"2001:db8::1\"\n\
                    [[vip.backend]]\naddress = \"10.0.0.1\"\n";
        let msg = one_error(text, 6, 11, "vip[0].backend[0].address");
        assert!(
            msg.contains("IPv4 backend 10.0.0.1 under IPv6 VIP"),
            "{msg}"
        );
    }

    #[test]
    fn duplicate_vip_is_reported_on_the_second_with_the_first_line() {
        let text = r#"interface = "eth0"

[[vip]]
name = "a"
address = "198.18.0.100"
port = 80

[[vip]]
name = "b"
address = "198.18.0.100"
port = 80
protocol = "tcp"
"#;
        let msg = one_error(text, 10, 11, "vip[1].address");
        assert_eq!(
            msg,
            "duplicate VIP 198.18.0.100 port 80 tcp: already defined by vip[0] at line 5"
        );
    }

    #[test]
    fn same_address_with_other_port_or_protocol_is_not_a_duplicate() {
        let text = r#"interface = "eth0"
[[vip]]
name = "a"
address = "198.18.0.100"
port = 80
[[vip]]
name = "b"
address = "198.18.0.100"
port = 80
protocol = "udp"
[[vip]]
name = "c"
address = "198.18.0.100"
port = 443
[[vip]]
name = "d"
address = "198.18.0.100"
"#;
        assert_eq!(Config::parse(text, ORIGIN).unwrap().vips.len(), 4);
    }

    #[test]
    fn duplicate_vip_name_is_reported_with_the_first_line() {
        let text = r#"interface = "eth0"
[[vip]]
name = "web"
address = "198.18.0.100"
[[vip]]
name = "web"
address = "198.18.0.101"
"#;
        let msg = one_error(text, 6, 8, "vip[1].name");
        assert_eq!(
            msg,
            "duplicate VIP name \"web\": already used by vip[0] at line 3"
        );
    }

    #[test]
    fn invalid_vip_names_are_rejected() {
        for bad in ["", "web site", "wéb", &"x".repeat(65)] {
            let text = format!(
                "interface = \"eth0\"\n[[vip]]\nname = \"{bad}\"\naddress = \"10.0.0.1\"\n"
            );
            let msg = one_error(&text, 3, 8, "vip[0].name");
            assert!(msg.contains("not a valid VIP name"), "{msg}");
        }
        let ok = format!(
            "interface = \"eth0\"\n[[vip]]\nname = \"{}\"\naddress = \"10.0.0.1\"\n",
            "A-z_0.9".repeat(9) + "x"
        );
        Config::parse(&ok, ORIGIN).unwrap();
    }

    #[test]
    fn duplicate_backend_address_is_reported_with_the_first_line() {
        let text = with_vip(
            "",
            "[[vip.backend]]\naddress = \"198.18.0.11\"\nname = \"a\"\n[[vip.backend]]\naddress = \"198.18.0.11\"\nname = \"b\"\n",
        );
        let msg = one_error(&text, 10, 11, "vip[0].backend[1].address");
        assert_eq!(
            msg,
            "duplicate backend address 198.18.0.11: already vip[0].backend[0] at line 7"
        );
    }

    #[test]
    fn same_backend_under_two_vips_is_fine() {
        let text = r#"interface = "eth0"
[[vip]]
name = "a"
address = "198.18.0.100"
[[vip.backend]]
address = "198.18.0.11"
[[vip]]
name = "b"
address = "198.18.0.101"
[[vip.backend]]
address = "198.18.0.11"
"#;
        Config::parse(text, ORIGIN).unwrap();
    }

    #[test]
    fn duplicate_backend_name_is_rejected_including_default_names() {
        let text = with_vip(
            "",
            "[[vip.backend]]\naddress = \"198.18.0.11\"\nname = \"x\"\n[[vip.backend]]\naddress = \"198.18.0.12\"\nname = \"x\"\n",
        );
        let msg = one_error(&text, 11, 8, "vip[0].backend[1].name");
        assert!(msg.starts_with("duplicate backend name \"x\""), "{msg}");
        // An explicit name equal to another backend's default name.
        let text = with_vip(
            "",
            "[[vip.backend]]\naddress = \"198.18.0.11\"\n[[vip.backend]]\naddress = \"198.18.0.12\"\nname = \"198.18.0.11\"\n",
        );
        let msg = one_error(&text, 10, 8, "vip[0].backend[1].name");
        assert!(
            msg.contains("already used by vip[0].backend[0] at line 7"),
            "{msg}"
        );
    }

    #[test]
    fn weight_out_of_range_gives_line_column_and_path() {
        let text = with_vip(
            "",
            "[[vip.backend]]\naddress = \"198.18.0.11\"\nweight = 20000\n",
        );
        let errs = errors(&text);
        assert_eq!(
            errs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["xlb.toml:8:10: vip[0].backend[0].weight: 20000 is out of range 0..=10000"]
        );
        let text = with_vip(
            "",
            "[[vip.backend]]\naddress = \"198.18.0.11\"\nweight = -1\n",
        );
        let msg = one_error(&text, 8, 10, "vip[0].backend[0].weight");
        assert_eq!(msg, "-1 is out of range 0..=10000");
    }

    #[test]
    fn weight_bounds_are_inclusive() {
        let text = with_vip(
            "",
            "[[vip.backend]]\naddress = \"198.18.0.11\"\nweight = 0\n[[vip.backend]]\naddress = \"198.18.0.12\"\nweight = 10000\n",
        );
        let config = Config::parse(&text, ORIGIN).unwrap();
        let weights: Vec<u32> = config.vips[0].backends.iter().map(|b| b.weight).collect();
        assert_eq!(weights, [0, MAX_WEIGHT]);
    }

    #[test]
    fn port_out_of_range_is_rejected() {
        let msg = one_error(&with_vip("port = 65536\n", ""), 6, 8, "vip[0].port");
        assert_eq!(msg, "65536 is out of range 0..=65535");
        let config = Config::parse(&with_vip("port = 65535\n", ""), ORIGIN).unwrap();
        assert_eq!(config.vips[0].port, 65_535);
    }

    #[test]
    fn wrong_type_is_a_type_error_with_line_and_path() {
        let msg = one_error(&with_vip("port = \"80\"\n", ""), 6, 8, "vip[0].port");
        assert_eq!(msg, "invalid type: string \"80\", expected an integer");
    }

    #[test]
    fn datetime_value_is_a_type_error_with_line_and_path() {
        let msg = one_error(&with_vip("port = 1979-05-27\n", ""), 6, 8, "vip[0].port");
        assert!(msg.starts_with("invalid type: datetime"), "{msg}");
    }

    #[test]
    fn vip_as_plain_table_is_a_type_error() {
        let msg = one_error("interface = \"eth0\"\n[vip]\nname = \"a\"\n", 2, 1, "vip");
        assert!(msg.contains("expected an array"), "{msg}");
    }

    #[test]
    fn ring_size_not_prime_is_rejected_with_nearest_primes() {
        let msg = one_error(
            &with_vip("ring_size = 65536\n", ""),
            6,
            13,
            "vip[0].ring_size",
        );
        assert_eq!(
            msg,
            "65536 is not prime; the Maglev table size must be prime (nearest primes: 65521, 65537)"
        );
    }

    #[test]
    fn ring_size_too_large_is_rejected() {
        let msg = one_error(
            &with_vip("ring_size = 1048583\n", ""),
            6,
            13,
            "vip[0].ring_size",
        );
        assert_eq!(msg, "1048583 is out of range 7..=1048573");
        // The largest allowed size is accepted.
        let config = Config::parse(&with_vip("ring_size = 1048573\n", ""), ORIGIN).unwrap();
        assert_eq!(config.vips[0].ring_size, lb_common::MAX_RING_SIZE);
    }

    #[test]
    fn ring_size_too_small_is_rejected() {
        let msg = one_error(&with_vip("ring_size = 5\n", ""), 6, 13, "vip[0].ring_size");
        assert_eq!(msg, "5 is out of range 7..=1048573");
        Config::parse(&with_vip("ring_size = 7\n", ""), ORIGIN).unwrap();
    }

    #[test]
    fn ring_size_smaller_than_backend_count_is_rejected() {
        let backends: String = (1..=8)
            .map(|i| format!("[[vip.backend]]\naddress = \"198.18.0.{i}\"\n"))
            .collect();
        let msg = one_error(
            &with_vip("ring_size = 7\n", &backends),
            6,
            13,
            "vip[0].ring_size",
        );
        assert_eq!(
            msg,
            "7 is smaller than the number of backends (8); the Maglev table needs at least one slot per backend"
        );
        let seven: String = (1..=7)
            .map(|i| format!("[[vip.backend]]\naddress = \"198.18.0.{i}\"\n"))
            .collect();
        Config::parse(&with_vip("ring_size = 7\n", &seven), ORIGIN).unwrap();
    }

    #[test]
    fn bad_protocol_string_is_rejected() {
        let msg = one_error(
            &with_vip("protocol = \"sctp\"\n", ""),
            6,
            12,
            "vip[0].protocol",
        );
        assert_eq!(msg, "unknown variant `sctp`, expected `tcp` or `udp`");
    }

    #[test]
    fn protocol_is_case_sensitive() {
        one_error(
            &with_vip("protocol = \"TCP\"\n", ""),
            6,
            12,
            "vip[0].protocol",
        );
    }

    #[test]
    fn nat_mode_translates_backend_ports() {
        let text = "interface = \"eth0\"\nserver_interface = \"eth1\"\n[[vip]]\nname = \"w\"\n\
                    address = \"198.18.0.100\"\nport = 80\nmode = \"nat\"\n[[vip.backend]]\n\
                    address = \"198.18.1.11\"\nport = 8080\n[[vip.backend]]\naddress = \"198.18.1.12\"\n";
        let c = Config::parse(text, ORIGIN).unwrap();
        assert_eq!(c.server_interface.as_deref(), Some("eth1"));
        assert_eq!(c.vips[0].mode, Mode::Nat);
        assert_eq!(c.vips[0].backends[0].port, 8080);
        assert_eq!(c.vips[0].backends[1].port, 80, "default: the VIP's port");
    }

    #[test]
    fn port_translation_needs_nat_and_a_vip_port() {
        let dsr = with_vip(
            "",
            "\n[[vip.backend]]\naddress = \"198.18.0.11\"\nport = 8080\n",
        );
        let e = Config::parse(&dsr, ORIGIN).unwrap_err().to_string();
        assert!(
            e.contains("vip[0].backend[0].port") && e.contains("needs mode = \"nat\""),
            "{e}"
        );
        let text = "interface = \"eth0\"\n[[vip]]\nname = \"w\"\naddress = \"198.18.0.100\"\n\
                    mode = \"nat\"\n[[vip.backend]]\naddress = \"198.18.1.11\"\nport = 8080\n";
        let e = Config::parse(text, ORIGIN).unwrap_err().to_string();
        assert!(
            e.contains("xlb.toml:8:8: vip[0].backend[0].port") && e.contains("all-ports"),
            "{e}"
        );
        let text = "interface = \"eth0\"\nserver_interface = \"eth0\"\n";
        let e = Config::parse(text, ORIGIN).unwrap_err().to_string();
        assert!(
            e.contains("xlb.toml:2:20: server_interface: must differ"),
            "{e}"
        );
    }

    #[test]
    fn bad_affinity_is_rejected() {
        let msg = one_error(
            &with_vip("affinity = \"sticky\"\n", ""),
            6,
            12,
            "vip[0].affinity",
        );
        assert_eq!(msg, "unknown variant `sticky`, expected `flow` or `source`");
    }

    #[test]
    fn bad_xdp_mode_is_rejected() {
        let msg = one_error(
            "interface = \"eth0\"\nxdp_mode = \"offload\"\n",
            2,
            12,
            "xdp_mode",
        );
        assert_eq!(
            msg,
            "unknown variant `offload`, expected one of `auto`, `native`, `generic`"
        );
    }

    #[test]
    fn bad_interface_names_are_rejected() {
        for (name, why) in [
            ("", "empty"),
            ("eth0.1234567890ab", "longer than 15 bytes"),
            ("eth/0", "contains '/'"),
            ("eth 0", "whitespace"),
            ("eth0:1", "contains ':'"),
            ("..", "reserved"),
        ] {
            let text = format!("xdp_mode = \"auto\"\ninterface = \"{name}\"\n");
            let msg = one_error(&text, 2, 13, "interface");
            assert!(msg.contains("is not a valid interface name"), "{msg}");
            assert!(msg.contains(why), "{name:?}: {msg}");
        }
        // 15 bytes is the longest valid name.
        Config::parse("interface = \"abcdefghijklmno\"\n", ORIGIN).unwrap();
    }

    #[test]
    fn missing_interface_is_reported() {
        let msg = one_error("xdp_mode = \"auto\"\n", 1, 1, "interface");
        assert_eq!(msg, "required field is missing");
    }

    #[test]
    fn missing_required_vip_and_backend_fields_are_reported() {
        let text = "interface = \"eth0\"\n\n[[vip]]\nname = \"web\"\n";
        one_error(text, 3, 1, "vip[0].address");
        let text = with_vip("", "\n[[vip.backend]]\nweight = 2\n");
        one_error(&text, 7, 1, "vip[0].backend[0].address");
    }

    #[test]
    fn empty_control_socket_is_rejected() {
        one_error(
            "interface = \"eth0\"\ncontrol_socket = \"\"\n",
            2,
            18,
            "control_socket",
        );
    }

    #[test]
    fn toml_syntax_error_gives_its_line() {
        let text = with_vip("port = = 80\n", "");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1);
        assert_eq!((errs[0].line, errs[0].column), (6, 8));
        assert_eq!(errs[0].field, "vip[0].port");
        let msg = one_error("interface = \"eth0\n", 1, 18, "interface");
        assert!(msg.contains("invalid basic string"), "{msg}");
    }

    #[test]
    fn syntax_error_in_second_backend_gets_indexed_path() {
        let text = with_vip(
            "",
            "[[vip.backend]]\naddress = \"198.18.0.11\"\n[[vip.backend]]\naddress = \"198.18.0.12\"\nweight = 1 2\n",
        );
        let e = &errors(&text)[0];
        assert_eq!((e.line, e.field.as_str()), (10, "vip[0].backend[1].weight"));
    }

    #[test]
    fn duplicate_toml_key_is_a_syntax_error() {
        let msg = one_error(&with_vip("name = \"again\"\n", ""), 6, 1, "vip[0].name");
        assert!(msg.contains("duplicate key"), "{msg}");
    }

    #[test]
    fn several_errors_are_reported_together_in_file_order() {
        let text = r#"interface = "a very long interface name"

[[vip]]
name = "web"
address = "198.18.0.100"
port = 80
ring_size = 1000

[[vip.backend]]
address = "198.18.0.11"
weight = 20000

[[vip.backend]]
address = "2001:db8::1"

[[vip]]
name = "web"
address = "198.18.0.100"
port = 80
"#;
        let err = Config::parse(text, ORIGIN).unwrap_err();
        let expected = "\
xlb.toml:1:13: interface: \"a very long interface name\" is not a valid interface name: longer than 15 bytes
xlb.toml:7:13: vip[0].ring_size: 1000 is not prime; the Maglev table size must be prime (nearest primes: 997, 1009)
xlb.toml:11:10: vip[0].backend[0].weight: 20000 is out of range 0..=10000
xlb.toml:14:11: vip[0].backend[1].address: IPv6 backend 2001:db8::1 under IPv4 VIP 198.18.0.100: a backend must have the VIP's address family
xlb.toml:17:8: vip[1].name: duplicate VIP name \"web\": already used by vip[0] at line 4
xlb.toml:18:11: vip[1].address: duplicate VIP 198.18.0.100 port 80 tcp: already defined by vip[0] at line 5";
        assert_eq!(err.to_string(), expected);
        assert_eq!(err.len(), 6);
    }

    #[test]
    fn errors_are_sorted_by_position_across_checks() {
        // vip[1]'s duplicate name (line 9) is found after its backend's
        // weight error (line 12) but printed before it.
        let text = r#"interface = "eth0"
[[vip]]
name = "a"
address = "198.18.0.100"
[[vip.backend]]
address = "198.18.0.11"
weight = 10001
[[vip]]
name = "a"
address = "198.18.0.101"
[[vip.backend]]
address = "198.18.0.12"
weight = 10002
"#;
        let lines: Vec<usize> = errors(text).iter().map(|e| e.line).collect();
        assert_eq!(lines, [7, 9, 13]);
    }

    #[test]
    fn out_of_range_port_does_not_also_report_a_duplicate() {
        let text = r#"interface = "eth0"
[[vip]]
name = "a"
address = "198.18.0.100"
[[vip]]
name = "b"
address = "198.18.0.100"
port = 70000
"#;
        let msg = one_error(text, 8, 8, "vip[1].port");
        assert_eq!(msg, "70000 is out of range 0..=65535");
    }

    #[test]
    fn read_error_names_the_path_without_line() {
        let path = Path::new("/nonexistent/xlb-test/xlb.toml");
        let err = Config::load(path).unwrap_err();
        assert_eq!(err.len(), 1);
        let e = &err.0[0];
        assert_eq!((e.line, e.column, e.field.as_str()), (0, 0, ""));
        assert_eq!(e.origin, "/nonexistent/xlb-test/xlb.toml");
        let shown = err.to_string();
        assert!(
            shown.starts_with("/nonexistent/xlb-test/xlb.toml: cannot read configuration file: "),
            "{shown}"
        );
        assert!(shown.contains("No such file"), "{shown}");
    }

    #[test]
    fn load_parses_a_file_and_names_it_in_errors() {
        let dir = std::env::temp_dir().join(format!("xlb-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        let bad = dir.join("bad.toml");
        std::fs::write(&good, FULL).unwrap();
        std::fs::write(&bad, "interface = \"eth0\"\nbogus = 1\n").unwrap();
        let config = Config::load(&good);
        let err = Config::load(&bad).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(config.unwrap(), Config::parse(FULL, ORIGIN).unwrap());
        assert!(
            err.to_string()
                .starts_with(&format!("{}:2:1: bogus: unknown field", bad.display())),
            "{err}"
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let msg = one_error(
            "# héllo wörld\ninterface = \"eth0\"\nxdp_mode = \"ü\"\n",
            3,
            12,
            "xdp_mode",
        );
        assert!(msg.contains("unknown variant"), "{msg}");
        assert_eq!(line_col("ab\nçd", 5), (2, 2));
    }

    #[test]
    fn error_display_formats() {
        let e = ConfigError {
            origin: "xlb.toml".into(),
            line: 14,
            column: 10,
            field: "vip[1].backend[0].weight".into(),
            message: "20000 is out of range 0..=10000".into(),
        };
        assert_eq!(
            e.to_string(),
            "xlb.toml:14:10: vip[1].backend[0].weight: 20000 is out of range 0..=10000"
        );
        let two = ConfigErrors(vec![e.clone(), e]);
        assert_eq!(two.to_string().lines().count(), 2);
    }

    /// The fenced blocks of `docs/config.md` with the given info string.
    fn doc_blocks(info: &str) -> Vec<String> {
        const DOCS: &str = include_str!("../../docs/config.md");
        let mut blocks = Vec::new();
        let mut open: Option<(bool, String)> = None;
        for line in DOCS.lines() {
            match (&mut open, line.strip_prefix("```")) {
                (None, Some(tag)) => open = Some((tag == info, String::new())),
                (Some((wanted, body)), Some("")) => {
                    if *wanted {
                        blocks.push(std::mem::take(body));
                    }
                    open = None;
                }
                (Some((_, body)), _) => {
                    body.push_str(line);
                    body.push('\n');
                }
                (None, None) => {}
            }
        }
        blocks
    }

    #[test]
    fn docs_full_example_is_valid() {
        let example = &doc_blocks("toml")[0];
        let config = Config::parse(example, "config.md").unwrap();
        assert_eq!(config.vips.len(), 2);
        let weights: Vec<u32> = config.vips[0].backends.iter().map(|b| b.weight).collect();
        assert_eq!(weights, [1, 1, 2]);
        assert!(config.vips[1].address.is_ipv6());
    }

    #[test]
    fn docs_error_example_is_the_real_output() {
        let bad = &doc_blocks("toml")[1];
        let shown = doc_blocks("")
            .into_iter()
            .find(|b| b.starts_with("xlb.toml:1:13:"))
            .expect("error output block");
        let err = Config::parse(bad, "xlb.toml").unwrap_err();
        assert_eq!(format!("{err}\n"), shown);
        // The shorter samples of syntax and type errors are real too.
        let samples = doc_blocks("")
            .into_iter()
            .find(|b| b.contains("unknown variant `sctp`"))
            .expect("samples block");
        let texts = [
            with_vip("weight = 3\n", ""),
            with_vip("protocol = \"sctp\"\n", ""),
            with_vip("port = \"80\"\n", ""),
            "interface = \"eth0\"\n\n[[vip]]\nname = \"web\"\n".to_owned(),
            with_vip("port = = 80\n", ""),
        ];
        let outputs: String = texts
            .iter()
            .map(|t| format!("{}\n", Config::parse(t, "xlb.toml").unwrap_err()))
            .collect();
        assert_eq!(outputs, samples);
    }

    #[test]
    fn enum_helpers() {
        assert_eq!(Protocol::Tcp.number(), 6);
        assert_eq!(Protocol::Udp.number(), 17);
        assert_eq!(Protocol::Udp.as_str(), "udp");
        assert_eq!(Mode::Dsr.as_str(), "dsr");
        assert_eq!(Affinity::Source.as_str(), "source");
        assert_eq!(XdpMode::Generic.to_string(), "generic");
    }
}
