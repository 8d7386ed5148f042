//! The `[conntrack]` section: size and timeouts of the connection table.

use serde::Deserialize;
use toml::Spanned;

use super::Validator;

/// Connection-table settings (all optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// Entries in the LRU table (changing it needs a restart).
    pub size: u32,
    /// Idle seconds before an established TCP entry is forgotten.
    pub tcp_timeout: u32,
    /// Seconds an entry lives after a FIN or RST.
    pub tcp_closing_timeout: u32,
    pub udp_timeout: u32,
    /// New entries per CPU per second (0 = unlimited); above it new flows
    /// are balanced by Maglev without being remembered.
    pub new_flows_per_cpu: u32,
}

pub const MIN_SIZE: i64 = 1024;
pub const MAX_SIZE: i64 = 16 * 1024 * 1024;
const MAX_TIMEOUT: i64 = 7 * 24 * 3600;

impl Default for ConntrackConfig {
    fn default() -> Self {
        Self {
            size: lb_common::DEFAULT_FLOW_TABLE_SIZE,
            tcp_timeout: 900,
            tcp_closing_timeout: 10,
            udp_timeout: 30,
            new_flows_per_cpu: 100_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConntrack {
    #[serde(default)]
    size: Option<Spanned<i64>>,
    #[serde(default)]
    tcp_timeout: Option<Spanned<i64>>,
    #[serde(default)]
    tcp_closing_timeout: Option<Spanned<i64>>,
    #[serde(default)]
    udp_timeout: Option<Spanned<i64>>,
    #[serde(default)]
    new_flows_per_cpu: Option<Spanned<i64>>,
}

impl Validator<'_> {
    pub(super) fn conntrack(&mut self, raw: Option<&RawConntrack>) -> ConntrackConfig {
        let d = ConntrackConfig::default();
        let Some(raw) = raw else { return d };
        ConntrackConfig {
            size: self.int_in(&raw.size, "conntrack.size", MIN_SIZE..=MAX_SIZE, d.size),
            tcp_timeout: self.int_in(
                &raw.tcp_timeout,
                "conntrack.tcp_timeout",
                0..=MAX_TIMEOUT,
                d.tcp_timeout,
            ),
            tcp_closing_timeout: self.int_in(
                &raw.tcp_closing_timeout,
                "conntrack.tcp_closing_timeout",
                0..=MAX_TIMEOUT,
                d.tcp_closing_timeout,
            ),
            udp_timeout: self.int_in(
                &raw.udp_timeout,
                "conntrack.udp_timeout",
                0..=MAX_TIMEOUT,
                d.udp_timeout,
            ),
            new_flows_per_cpu: self.int_in(
                &raw.new_flows_per_cpu,
                "conntrack.new_flows_per_cpu",
                0..=100_000_000,
                d.new_flows_per_cpu,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn defaults_apply_without_a_section() {
        let c = Config::parse("interface = \"eth0\"\n", "t.toml").unwrap();
        assert_eq!(c.conntrack, super::ConntrackConfig::default());
    }

    #[test]
    fn section_is_read() {
        let c = Config::parse(
            "interface = \"eth0\"\n[conntrack]\nsize = 4096\ntcp_timeout = 60\n\
             tcp_closing_timeout = 2\nudp_timeout = 5\nnew_flows_per_cpu = 0\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            c.conntrack,
            super::ConntrackConfig {
                size: 4096,
                tcp_timeout: 60,
                tcp_closing_timeout: 2,
                udp_timeout: 5,
                new_flows_per_cpu: 0,
            }
        );
    }

    #[test]
    fn out_of_range_and_unknown_fields_name_line_and_field() {
        let e = Config::parse("interface = \"eth0\"\n[conntrack]\nsize = 10\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml:3:8: conntrack.size: 10 is out of range"),
            "{e}"
        );
        let e = Config::parse("interface = \"eth0\"\n[conntrack]\nsizes = 10\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml:3:") && e.contains("sizes"), "{e}");
    }
}
