//! `[vip.health]` and `[vip.backend.health]`: health checks in the config
//! file. Part of the configuration module (same validator, same error
//! format); kept apart because config.rs is long enough.
//!
//! A VIP's table sets the check of all its backends; a backend's table
//! overrides single fields (or sets a check for that backend alone). Each
//! table is validated against the check type that applies to it, so a field
//! the type does not use (a `path` on a `tcp` check) is an error where it is
//! written, while an inherited one (a VIP's `path` under a backend whose
//! override says `type = "tcp"`) is simply unused.

use std::fmt;
use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::Validator;

/// Defaults, also documented in docs/config.md.
pub const DEFAULT_INTERVAL_MS: u64 = 2000;
pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
pub const DEFAULT_PATH: &str = "/";
pub const DEFAULT_EXPECT_STATUS: &str = "200-299";
const INTERVAL_MS: RangeInclusive<i64> = 100..=3_600_000;
const TIMEOUT_MS: RangeInclusive<i64> = 10..=3_600_000;
const COUNT: RangeInclusive<i64> = 1..=100;
const MAX_PATH_LEN: usize = 1024;
const MAX_HOST_LEN: usize = 255;

/// The four levels of check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// ICMP / ICMPv6 echo to the backend address (L3).
    Icmp,
    /// A TCP connection to `port` is accepted (L4).
    Tcp,
    /// `GET path` answers with a status in `expect_status` (L7).
    Http,
    /// As `Http`, and the body contains `expect_body` (the application works).
    HttpContent,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Icmp => "icmp",
            CheckKind::Tcp => "tcp",
            CheckKind::Http => "http",
            CheckKind::HttpContent => "http_content",
        }
    }

    fn uses_port(self) -> bool {
        self != CheckKind::Icmp
    }

    fn is_http(self) -> bool {
        matches!(self, CheckKind::Http | CheckKind::HttpContent)
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a backend's established flows when its checks say down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDown {
    /// Only new flows avoid it; flows in the connection table stay (an
    /// overloaded server mistaken for dead keeps its users).
    #[default]
    Keep,
    /// Its flows are removed from the connection table, so they are hashed
    /// again onto live backends.
    Reschedule,
}

impl OnDown {
    pub fn as_str(self) -> &'static str {
        match self {
            OnDown::Keep => "keep",
            OnDown::Reschedule => "reschedule",
        }
    }
}

/// A set of HTTP status codes, written `"200-299,304"` (also `"2xx"` or a
/// bare integer in the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCodes(Vec<RangeInclusive<u16>>);

impl StatusCodes {
    /// Parses a comma-separated list of codes (`200`), ranges (`200-204`)
    /// and classes (`2xx`), each within 100..=599.
    pub fn parse(text: &str) -> Result<StatusCodes, String> {
        let mut ranges = Vec::new();
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(format!("{text:?}: empty entry in the list"));
            }
            let code = |s: &str| -> Result<u16, String> {
                let s = s.trim();
                match s.parse::<u16>() {
                    Ok(c) if (100..=599).contains(&c) => Ok(c),
                    _ => Err(format!("{s:?} is not an HTTP status code (100-599)")),
                }
            };
            let range = if let Some(class) = item.strip_suffix("xx").or(item.strip_suffix("XX")) {
                let lo = code(&format!("{class}00"))?;
                lo..=lo + 99
            } else if let Some((lo, hi)) = item.split_once('-') {
                let (lo, hi) = (code(lo)?, code(hi)?);
                if lo > hi {
                    return Err(format!("{item:?}: range runs backwards"));
                }
                lo..=hi
            } else {
                let c = code(item)?;
                c..=c
            };
            ranges.push(range);
        }
        Ok(StatusCodes(ranges))
    }

    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|r| r.contains(&code))
    }
}

impl fmt::Display for StatusCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

/// The effective check of one backend (VIP table merged with the backend's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    pub kind: CheckKind,
    /// Port checked (TCP and HTTP); defaults to the port the backend serves
    /// on (the VIP port, or the backend's own `port` under NAT).
    pub port: u16,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub path: String,
    /// Host header; `None` = the backend address.
    pub host: Option<String>,
    pub expect_status: StatusCodes,
    /// Required for `http_content`.
    pub expect_body: Option<String>,
}

/// A VIP's `[vip.health]` as a check of its own: the check of a backend
/// added at runtime (`xlb backend add`), which has no section to merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipCheck {
    /// The section's check, on the VIP's port unless it sets `port`.
    pub check: CheckConfig,
    /// The section sets `port`: every backend is checked there.
    pub port_set: bool,
}

impl VipCheck {
    /// The check of a backend serving on `port`.
    pub fn for_port(&self, port: u16) -> CheckConfig {
        let mut c = self.check.clone();
        if !self.port_set && c.kind.uses_port() {
            c.port = port;
        }
        c
    }
}

impl CheckConfig {
    /// One line for logs and status: `http GET :80/health expect 200-299`.
    pub fn describe(&self) -> String {
        match self.kind {
            CheckKind::Icmp => "icmp echo".to_owned(),
            CheckKind::Tcp => format!("tcp connect :{}", self.port),
            CheckKind::Http | CheckKind::HttpContent => {
                let mut s = format!(
                    "{} GET :{}{} expect {}",
                    self.kind, self.port, self.path, self.expect_status
                );
                if let Some(b) = &self.expect_body {
                    s.push_str(&format!(" and body containing {b:?}"));
                }
                s
            }
        }
    }
}

/// A `[vip.health]` or `[vip.backend.health]` table, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    #[serde(rename = "type", default)]
    kind: Option<Spanned<CheckKind>>,
    #[serde(default)]
    port: Option<Spanned<i64>>,
    #[serde(default)]
    interval_ms: Option<Spanned<i64>>,
    #[serde(default)]
    timeout_ms: Option<Spanned<i64>>,
    #[serde(default)]
    rise: Option<Spanned<i64>>,
    #[serde(default)]
    fall: Option<Spanned<i64>>,
    #[serde(default)]
    path: Option<Spanned<String>>,
    #[serde(default)]
    host: Option<Spanned<String>>,
    #[serde(default)]
    expect_status: Option<Spanned<toml::Value>>,
    #[serde(default)]
    expect_body: Option<Spanned<String>>,
    #[serde(default)]
    tls: Option<Spanned<bool>>,
    #[serde(default)]
    on_down: Option<Spanned<OnDown>>,
}

/// One table's values after range checks (`None`: absent or invalid, the
/// latter already reported). Each value keeps its span for later errors.
#[derive(Default, Clone)]
pub(super) struct Section {
    kind: Option<(CheckKind, Range<usize>)>,
    port: Option<(u16, Range<usize>)>,
    interval_ms: Option<(u64, Range<usize>)>,
    timeout_ms: Option<(u64, Range<usize>)>,
    rise: Option<u32>,
    fall: Option<u32>,
    path: Option<String>,
    host: Option<String>,
    expect_status: Option<StatusCodes>,
    expect_body: Option<String>,
}

impl Section {
    /// `self` over `base`, field by field.
    fn over(&self, base: &Section) -> Section {
        Section {
            kind: self.kind.clone().or(base.kind.clone()),
            port: self.port.clone().or(base.port.clone()),
            interval_ms: self.interval_ms.clone().or(base.interval_ms.clone()),
            timeout_ms: self.timeout_ms.clone().or(base.timeout_ms.clone()),
            rise: self.rise.or(base.rise),
            fall: self.fall.or(base.fall),
            path: self.path.clone().or(base.path.clone()),
            host: self.host.clone().or(base.host.clone()),
            expect_status: self.expect_status.clone().or(base.expect_status.clone()),
            expect_body: self.expect_body.clone().or(base.expect_body.clone()),
        }
    }
}

/// Where a table is and what its fields are called in errors.
pub(super) struct Place<'a> {
    /// `vip[0].health` or `vip[0].backend[1].health`.
    pub path: &'a str,
    /// The table's own span.
    pub span: Range<usize>,
}

impl Validator<'_> {
    fn int_opt<T: TryFrom<i64>>(
        &mut self,
        value: &Option<Spanned<i64>>,
        field: String,
        range: RangeInclusive<i64>,
    ) -> Option<(T, Range<usize>)> {
        let v = value.as_ref()?;
        let n = *v.get_ref();
        match T::try_from(n) {
            Ok(t) if range.contains(&n) => Some((t, v.span())),
            _ => {
                self.error(
                    v.span(),
                    field,
                    format!("{n} is out of range {}..={}", range.start(), range.end()),
                );
                None
            }
        }
    }

    /// An HTTP request path (a health check's, a feedback agent's): see
    /// [`Validator::http_text`].
    pub(super) fn http_path(
        &mut self,
        s: Option<&Spanned<String>>,
        field: String,
    ) -> Option<String> {
        self.http_text(s, field, MAX_PATH_LEN, true)
    }

    /// A text that goes into an HTTP request line or header: not empty, at
    /// most `max` bytes, no whitespace or control characters, and a `path`
    /// starts with '/'. `None` if absent or refused (with the error).
    fn http_text(
        &mut self,
        s: Option<&Spanned<String>>,
        field: String,
        max: usize,
        path: bool,
    ) -> Option<String> {
        let s = s?;
        let value = s.get_ref();
        let why = if value.is_empty() {
            Some("must not be empty".to_owned())
        } else if value.len() > max {
            Some(format!("longer than {max} bytes"))
        } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some(format!(
                "{value:?} contains whitespace or control characters"
            ))
        } else if path && !value.starts_with('/') {
            Some(format!("{value:?} must start with '/'"))
        } else {
            None
        };
        match why {
            Some(why) => {
                self.error(s.span(), field, why);
                None
            }
            None => Some(value.clone()),
        }
    }

    /// Range and syntax checks of one table's own fields.
    fn health_section(&mut self, raw: &RawHealth, at: &Place<'_>) -> Section {
        let p = at.path;
        if let Some(t) = &raw.tls
            && *t.get_ref()
        {
            self.error(
                t.span(),
                format!("{p}.tls"),
                "TLS health checks are not supported yet; check the plain-HTTP port \
                 or use type = \"tcp\"",
            );
        }
        let path = self.http_path(raw.path.as_ref(), format!("{p}.path"));
        let host = self.http_text(raw.host.as_ref(), format!("{p}.host"), MAX_HOST_LEN, false);
        let expect_body = match &raw.expect_body {
            Some(b) if b.get_ref().is_empty() => {
                self.error(b.span(), format!("{p}.expect_body"), "must not be empty");
                None
            }
            Some(b) => Some(b.get_ref().clone()),
            None => None,
        };
        let expect_status = raw.expect_status.as_ref().and_then(|s| {
            let parsed = match s.get_ref() {
                toml::Value::String(text) => StatusCodes::parse(text),
                toml::Value::Integer(n) => StatusCodes::parse(&n.to_string()),
                other => Err(format!(
                    "invalid type: {}, expected a status code or a string like \"200-299,304\"",
                    other.type_str()
                )),
            };
            parsed
                .map_err(|e| self.error(s.span(), format!("{p}.expect_status"), e))
                .ok()
        });
        Section {
            kind: raw.kind.as_ref().map(|k| (*k.get_ref(), k.span())),
            port: self.int_opt(&raw.port, format!("{p}.port"), 1..=65_535),
            interval_ms: self.int_opt(&raw.interval_ms, format!("{p}.interval_ms"), INTERVAL_MS),
            timeout_ms: self.int_opt(&raw.timeout_ms, format!("{p}.timeout_ms"), TIMEOUT_MS),
            rise: self
                .int_opt(&raw.rise, format!("{p}.rise"), COUNT)
                .map(|v| v.0),
            fall: self
                .int_opt(&raw.fall, format!("{p}.fall"), COUNT)
                .map(|v| v.0),
            path,
            host,
            expect_status,
            expect_body,
        }
    }

    /// Fields written in `raw` that a check of type `kind` does not use.
    fn health_relevance(&mut self, raw: &RawHealth, at: &Place<'_>, kind: CheckKind) {
        let p = at.path;
        let mut unused = |name: &str, span: Option<Range<usize>>, used: bool| {
            if let Some(span) = span
                && !used
            {
                self.error(
                    span,
                    format!("{p}.{name}"),
                    format!("not used by a {kind} check"),
                );
            }
        };
        unused(
            "port",
            raw.port.as_ref().map(Spanned::span),
            kind.uses_port(),
        );
        unused("path", raw.path.as_ref().map(Spanned::span), kind.is_http());
        unused("host", raw.host.as_ref().map(Spanned::span), kind.is_http());
        unused(
            "expect_status",
            raw.expect_status.as_ref().map(Spanned::span),
            kind.is_http(),
        );
        unused(
            "expect_body",
            raw.expect_body.as_ref().map(Spanned::span),
            kind == CheckKind::HttpContent,
        );
    }

    /// Validates a VIP's `[vip.health]`; returns its parsed values (the base
    /// of every backend's check), `on_down`, and the section as a check of
    /// its own (for backends added at runtime).
    pub(super) fn vip_health(
        &mut self,
        raw: Option<&Spanned<RawHealth>>,
        path: &str,
        vip_port: u16,
    ) -> (Option<Section>, OnDown, Option<VipCheck>) {
        let Some(raw) = raw else {
            return (None, OnDown::Keep, None);
        };
        let at = Place {
            path,
            span: raw.span(),
        };
        let r = raw.get_ref();
        let section = self.health_section(r, &at);
        match r.kind.as_ref() {
            Some(k) => self.health_relevance(r, &at, *k.get_ref()),
            None => self.error(
                at.span.clone(),
                format!("{path}.type"),
                "required field is missing",
            ),
        }
        let check = self
            .merged_check(&section, path, vip_port, true)
            .map(|check| VipCheck {
                check,
                port_set: section.port.is_some(),
            });
        let on_down = r.on_down.as_ref().map_or(OnDown::Keep, |o| *o.get_ref());
        (Some(section), on_down, check)
    }

    /// The effective check of one backend, from its VIP's section and its own
    /// `[vip.backend.health]`. `vip_port` is the port the backend serves on,
    /// the default port of its check.
    pub(super) fn backend_health(
        &mut self,
        vip: Option<&Section>,
        raw: Option<&Spanned<RawHealth>>,
        path: &str,
        vip_port: u16,
    ) -> Option<CheckConfig> {
        let base = vip.cloned().unwrap_or_default();
        let merged = match raw {
            None => {
                vip?;
                base
            }
            Some(raw) => {
                let at = Place {
                    path,
                    span: raw.span(),
                };
                let r = raw.get_ref();
                if let Some(o) = &r.on_down {
                    self.error(
                        o.span(),
                        format!("{path}.on_down"),
                        "on_down is set per VIP, in [vip.health]",
                    );
                }
                let own = self.health_section(r, &at);
                let merged = own.over(&base);
                match &merged.kind {
                    Some((k, _)) => self.health_relevance(r, &at, *k),
                    None => self.error(
                        at.span.clone(),
                        format!("{path}.type"),
                        "required field is missing (the VIP has no [vip.health] to inherit it from)",
                    ),
                }
                merged
            }
        };
        self.merged_check(&merged, path, vip_port, raw.is_some())
    }

    /// The check a merged section describes. Cross-field errors are reported
    /// only if `report` (the table being validated wrote something), so that
    /// a VIP-level mistake is reported once, not once per backend.
    fn merged_check(
        &mut self,
        merged: &Section,
        path: &str,
        vip_port: u16,
        report: bool,
    ) -> Option<CheckConfig> {
        let (kind, kind_span) = merged.kind.clone()?;
        let mut errors = Vec::new();
        let interval_ms = merged
            .interval_ms
            .as_ref()
            .map_or(DEFAULT_INTERVAL_MS, |v| v.0);
        let timeout_ms = merged
            .timeout_ms
            .as_ref()
            .map_or(DEFAULT_TIMEOUT_MS, |v| v.0);
        if timeout_ms > interval_ms {
            // Blame whichever of the two was written (the later one if both).
            let (field, span) = match (&merged.timeout_ms, &merged.interval_ms) {
                (Some((_, t)), Some((_, i))) if i.start > t.start => ("interval_ms", i.clone()),
                (Some((_, t)), _) => ("timeout_ms", t.clone()),
                (None, Some((_, i))) => ("interval_ms", i.clone()),
                (None, None) => ("timeout_ms", kind_span.clone()),
            };
            errors.push((
                span,
                field,
                format!(
                    "timeout_ms ({timeout_ms}) is longer than interval_ms ({interval_ms}); \
                     a check must end before the next one starts"
                ),
            ));
        }
        let port = match &merged.port {
            Some((p, _)) => *p,
            None if kind.uses_port() && vip_port == 0 => {
                errors.push((
                    kind_span.clone(),
                    "port",
                    format!(
                        "required for a {kind} check: the VIP covers all ports, so there is \
                         no VIP port to check"
                    ),
                ));
                0
            }
            None => vip_port,
        };
        if kind == CheckKind::HttpContent && merged.expect_body.is_none() {
            errors.push((
                kind_span,
                "expect_body",
                "required for an http_content check (the string the body must contain)".to_owned(),
            ));
        }
        if report {
            for (span, field, msg) in errors {
                self.error(span, format!("{path}.{field}"), msg);
            }
        }
        Some(CheckConfig {
            kind,
            port,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
            rise: merged.rise.unwrap_or(DEFAULT_RISE),
            fall: merged.fall.unwrap_or(DEFAULT_FALL),
            path: merged
                .path
                .clone()
                .unwrap_or_else(|| DEFAULT_PATH.to_owned()),
            host: merged.host.clone(),
            expect_status: merged.expect_status.clone().unwrap_or_else(|| {
                StatusCodes::parse(DEFAULT_EXPECT_STATUS).expect("valid default")
            }),
            expect_body: merged.expect_body.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
