//! The two stages of parsing after the TOML syntax: the raw, span-keeping
//! structs that mirror the file's schema, and the [`Validator`] that checks
//! them and collects every error with its position. The sections with
//! modules of their own (`conntrack`, `health`, `vrrp`) extend the validator
//! there.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::checks::{
    check_backend_address, check_backend_name, check_backend_port, check_ifname, check_unicast,
    check_vip_name,
};
use super::errors::line_col;
use super::{
    Affinity, BackendConfig, Config, ConfigError, DEFAULT_CONTROL_SOCKET, MAX_WEIGHT,
    MIN_RING_SIZE, Mode, Protocol, VipConfig, XdpMode, announce, conntrack, default_state_dir,
    feedback, health, metrics, socket, sync, vrrp,
};
use crate::maglev;

// ---------------------------------------------------------------------------
// Raw, span-keeping structs: exactly the file's schema.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    interface: Spanned<String>,
    #[serde(default)]
    xdp_mode: Option<Spanned<XdpMode>>,
    #[serde(default)]
    control_socket: Option<Spanned<String>>,
    #[serde(default)]
    control_socket_group: Option<Spanned<socket::RawGroup>>,
    #[serde(default)]
    control_socket_admin_group: Option<Spanned<socket::RawGroup>>,
    #[serde(default)]
    server_interface: Option<Spanned<String>>,
    #[serde(default)]
    state_dir: Option<Spanned<String>>,
    #[serde(default)]
    conntrack: Option<conntrack::RawConntrack>,
    #[serde(default)]
    vip: Vec<Spanned<RawVip>>,
    #[serde(default)]
    vrrp: Option<Spanned<vrrp::RawVrrp>>,
    #[serde(default)]
    announce: Option<Spanned<announce::RawAnnounce>>,
    #[serde(default)]
    sync: Option<Spanned<sync::RawSync>>,
    #[serde(default)]
    metrics: Option<Spanned<metrics::RawMetrics>>,
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
    min_usable: Option<Spanned<i64>>,
    #[serde(default)]
    backend: Vec<Spanned<RawBackend>>,
    #[serde(default)]
    health: Option<Spanned<health::RawHealth>>,
    #[serde(default)]
    feedback: Option<Spanned<feedback::RawFeedback>>,
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
    tier: Option<Spanned<i64>>,
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    health: Option<Spanned<health::RawHealth>>,
}

// ---------------------------------------------------------------------------
// Semantic validation.

pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) origin: &'a str,
    pub(super) errors: Vec<ConfigError>,
}

impl Validator<'_> {
    pub(super) fn error(
        &mut self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (line, column) = line_col(self.text, span.start);
        self.errors.push(ConfigError {
            origin: self.origin.to_owned(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        });
    }

    /// The line of byte `offset`. Counting lines scans the text, so callers
    /// keep offsets and ask only when an error needs the line.
    pub(super) fn line(&self, offset: usize) -> usize {
        line_col(self.text, offset).0
    }

    /// An integer field within `range`, or `default` (after an error).
    pub(super) fn int_in<T: TryFrom<i64> + Copy>(
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

    pub(super) fn config(&mut self, raw: RawConfig) -> Config {
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

        // First occurrence (index, byte offset) of each VIP key and name.
        let mut seen_keys: HashMap<(IpAddr, u16, Protocol), (usize, usize)> = HashMap::new();
        let mut seen_names: HashMap<String, (usize, usize)> = HashMap::new();
        let mut vips = Vec::with_capacity(raw.vip.len());
        for (i, vip) in raw.vip.iter().enumerate() {
            let cfg = self.vip(i, vip.get_ref());
            let raw = vip.get_ref();

            let name_at = raw.name.span().start;
            if let Some(&(j, at)) = seen_names.get(&cfg.name) {
                let line = self.line(at);
                self.error(
                    raw.name.span(),
                    format!("vip[{i}].name"),
                    format!(
                        "duplicate VIP name {:?}: already used by vip[{j}] at line {line}",
                        cfg.name
                    ),
                );
            } else {
                seen_names.insert(cfg.name.clone(), (i, name_at));
            }

            // An out-of-range port (already reported) stands in as 0 in
            // `cfg`; comparing it would report a bogus duplicate.
            let port_ok = raw
                .port
                .as_ref()
                .is_none_or(|p| u16::try_from(*p.get_ref()).is_ok());
            let key = (cfg.address, cfg.port, cfg.protocol);
            let addr_at = raw.address.span().start;
            match seen_keys.get(&key) {
                _ if !port_ok => {}
                Some(&(j, at)) => {
                    let line = self.line(at);
                    self.error(
                        raw.address.span(),
                        format!("vip[{i}].address"),
                        format!(
                            "duplicate VIP {}: already defined by vip[{j}] at line {line}",
                            describe_vip(&cfg)
                        ),
                    );
                }
                None => {
                    seen_keys.insert(key, (i, addr_at));
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

        let state_dir = match &raw.state_dir {
            Some(s) if !Path::new(s.get_ref()).is_absolute() => {
                self.error(
                    s.span(),
                    "state_dir",
                    format!("{:?} must be an absolute path (on bpffs)", s.get_ref()),
                );
                default_state_dir(&interface)
            }
            Some(s) => PathBuf::from(s.get_ref()),
            None => default_state_dir(&interface),
        };

        let vrrp = raw
            .vrrp
            .as_ref()
            .map(|r| self.vrrp(r, &vips, server_interface.is_some()));
        let announce = raw
            .announce
            .as_ref()
            .map(|r| self.announce(r, &vips, vrrp.is_some()));
        let sync = raw.sync.as_ref().map(|r| self.sync(r));
        let metrics = raw.metrics.as_ref().and_then(|r| self.metrics(r));
        let control_socket_group = self.group(&raw.control_socket_group, "control_socket_group");
        let control_socket_admin_group = self.group(
            &raw.control_socket_admin_group,
            "control_socket_admin_group",
        );
        Config {
            state_dir,
            interface,
            xdp_mode: raw.xdp_mode.map_or(XdpMode::Auto, |m| *m.get_ref()),
            control_socket,
            control_socket_group,
            control_socket_admin_group,
            server_interface,
            conntrack: self.conntrack(raw.conntrack.as_ref()),
            vips,
            vrrp,
            announce,
            sync,
            metrics,
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

        let min_usable = self.int_in(
            &raw.min_usable,
            &format!("{p}.min_usable"),
            1..=65_535,
            1u32,
        );
        if let Some(m) = &raw.min_usable
            && min_usable as usize > n_backends
        {
            self.error(
                m.span(),
                format!("{p}.min_usable"),
                format!(
                    "{min_usable} is more than the VIP's {n_backends} backends: \
                     it could never be announced"
                ),
            );
        }

        let (vip_health, on_down, health) =
            self.vip_health(raw.health.as_ref(), &format!("{p}.health"), port);
        let feedback = raw
            .feedback
            .as_ref()
            .and_then(|f| self.feedback(f, &p, raw.health.is_some()));

        // First occurrence (index, byte offset) of each backend address and name.
        let mut seen_addrs: HashMap<IpAddr, (usize, usize)> = HashMap::new();
        let mut seen_names: HashMap<String, (usize, usize)> = HashMap::new();
        let mut backends = Vec::with_capacity(n_backends);
        for (j, b) in raw.backend.iter().enumerate() {
            let bp = format!("{p}.backend[{j}]");
            let b = b.get_ref();
            let baddr = *b.address.get_ref();
            let aspan = b.address.span();
            let addr_at = aspan.start;
            if let Err(why) = check_backend_address(address, baddr) {
                self.error(aspan.clone(), format!("{bp}.address"), why);
            }
            if let Some(&(k, at)) = seen_addrs.get(&baddr) {
                let line = self.line(at);
                self.error(
                    aspan.clone(),
                    format!("{bp}.address"),
                    format!(
                        "duplicate backend address {baddr}: already {p}.backend[{k}] at line {line}"
                    ),
                );
            } else {
                seen_addrs.insert(baddr, (j, addr_at));
            }

            let weight = self.int_in(
                &b.weight,
                &format!("{bp}.weight"),
                0..=i64::from(MAX_WEIGHT),
                1u32,
            );
            let tier = self.int_in(&b.tier, &format!("{bp}.tier"), 0..=255, 0u8);

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
            let name_at = nspan.start;
            if let Some(&(k, at)) = seen_names.get(&bname) {
                let line = self.line(at);
                self.error(
                    nspan,
                    format!("{bp}.name"),
                    format!(
                        "duplicate backend name {bname:?}: already used by \
                         {p}.backend[{k}] at line {line}"
                    ),
                );
            } else {
                seen_names.insert(bname.clone(), (j, name_at));
            }

            let mode = raw.mode.as_ref().map_or(Mode::Dsr, |s| *s.get_ref());
            let bport = match &b.port {
                None => port,
                Some(bp_raw) => {
                    let field = format!("{bp}.port");
                    let n = self.int_in(&b.port, &field, 1..=65_535, port);
                    if let Err(why) = check_backend_port(mode, port, n) {
                        self.error(bp_raw.span(), field, why);
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
                tier,
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
            min_usable,
            backends,
            on_down,
            feedback,
            health,
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

fn describe_vip(v: &VipConfig) -> String {
    let port = if v.port == 0 {
        "all ports".to_owned()
    } else {
        format!("port {}", v.port)
    };
    format!("{} {port} {}", v.address, v.protocol)
}
