//! A typed builder for xlb config files, so that tests, the demo and the
//! benchmarks write configurations by field, never by pasting TOML
//! together. It renders through the `toml` crate (the text is always valid
//! TOML) and [`XlbConfig::parse`] runs it through xlb's own validator, so a
//! test that builds a config xlb would refuse fails at once, naming why.
//!
//! Field names mirror `docs/config.md`; `None` leaves a field out, so xlb's
//! default applies. Tests of the parser itself (broken files, error
//! messages) keep writing literal text: that text is what they test.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use lb_user::config::Config;
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct XlbConfig {
    pub interface: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_interface: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_socket: Option<PathBuf>,
    /// A numeric gid: tests use groups that need no /etc/group entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_socket_group: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_socket_admin_group: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conntrack: Option<Conntrack>,
    #[serde(rename = "vip", skip_serializing_if = "Vec::is_empty")]
    pub vips: Vec<Vip>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vrrp: Option<Vrrp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub announce: Option<Announce>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<ConnSync>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Metrics {
    /// `address:port`, as in the file.
    pub listen: String,
}

/// `[sync]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnSync {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<IpAddr>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    pub key_file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_s: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_skew_s: Option<u32>,
}

/// `[announce]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Announce {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetime_s: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withdraw_wait_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vips: Option<Vec<String>>,
}

/// `[conntrack]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Conntrack {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_timeout: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_closing_timeout: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_timeout: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_flows_per_cpu: Option<u32>,
}

/// `[[vip]]`.
#[derive(Debug, Clone, Serialize)]
pub struct Vip {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_usable: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Feedback>,
    #[serde(rename = "backend", skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<Backend>,
}

/// `[vip.feedback]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Feedback {
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_weight_percent: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hysteresis_percent: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_ms: Option<u64>,
}

/// `[[vip.backend]]`.
#[derive(Debug, Clone, Serialize)]
pub struct Backend {
    pub address: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
}

/// `[vip.health]` or `[vip.backend.health]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HealthCheck {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rise: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fall: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_down: Option<String>,
}

/// `[vrrp]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Vrrp {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub garp_repeat: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub garp_interval_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_link: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_address: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_interval_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_fall: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_penalty: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<IpAddr>>,
    #[serde(rename = "group", skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<VrrpGroup>,
}

/// `[[vrrp.group]]`.
#[derive(Debug, Clone, Serialize)]
pub struct VrrpGroup {
    pub vrid: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preempt: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advert_interval_cs: Option<u16>,
    pub vips: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_addresses: Option<Vec<IpAddr>>,
}

impl XlbConfig {
    /// A config for `interface` with nothing else set.
    pub fn new(interface: &str) -> XlbConfig {
        XlbConfig {
            interface: interface.to_owned(),
            ..XlbConfig::default()
        }
    }

    pub fn control_socket(mut self, path: &Path) -> Self {
        self.control_socket = Some(path.to_owned());
        self
    }

    /// `control_socket_group` (connect and read) and
    /// `control_socket_admin_group` (change state), as gids.
    pub fn control_socket_groups(mut self, read: Option<u32>, admin: Option<u32>) -> Self {
        self.control_socket_group = read;
        self.control_socket_admin_group = admin;
        self
    }

    pub fn state_dir(mut self, path: &Path) -> Self {
        self.state_dir = Some(path.to_owned());
        self
    }

    pub fn xdp_mode(mut self, mode: &str) -> Self {
        self.xdp_mode = Some(mode.to_owned());
        self
    }

    pub fn server_interface(mut self, name: &str) -> Self {
        self.server_interface = Some(name.to_owned());
        self
    }

    pub fn conntrack(mut self, conntrack: Conntrack) -> Self {
        self.conntrack = Some(conntrack);
        self
    }

    pub fn vip(mut self, vip: Vip) -> Self {
        self.vips.push(vip);
        self
    }

    pub fn vrrp(mut self, vrrp: Vrrp) -> Self {
        self.vrrp = Some(vrrp);
        self
    }

    pub fn announce(mut self, announce: Announce) -> Self {
        self.announce = Some(announce);
        self
    }

    pub fn sync(mut self, sync: ConnSync) -> Self {
        self.sync = Some(sync);
        self
    }

    /// `[metrics] listen = "<listen>"`.
    pub fn metrics(mut self, listen: std::net::SocketAddr) -> Self {
        self.metrics = Some(Metrics {
            listen: listen.to_string(),
        });
        self
    }

    /// The VIP named `name` (panics if there is none: a test's mistake).
    pub fn vip_mut(&mut self, name: &str) -> &mut Vip {
        self.vips
            .iter_mut()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no VIP {name} in this config"))
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a config of plain fields serialises")
    }

    /// The config as xlb reads it, through xlb's own parser and validator.
    pub fn parse(&self) -> anyhow::Result<Config> {
        let text = self.to_toml();
        Config::parse(&text, "test config")
            .map_err(|e| anyhow!("xlb refuses the test's config:\n{e}\n--- config ---\n{text}"))
    }

    /// Writes the file to `path` (through a temporary file and a rename, so
    /// a reload never reads half of it), after checking that xlb accepts it.
    pub fn write(&self, path: &Path) -> anyhow::Result<PathBuf> {
        self.parse()?;
        let tmp = path.with_extension("toml.new");
        std::fs::write(&tmp, self.to_toml())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(path.to_owned())
    }
}

impl Vip {
    /// A TCP VIP with xlb's defaults (DSR, flow affinity) and no backends.
    pub fn new(name: &str, address: impl Into<IpAddr>, port: u16) -> Vip {
        Vip {
            name: name.to_owned(),
            address: address.into(),
            port,
            protocol: None,
            mode: None,
            ring_size: None,
            affinity: None,
            min_usable: None,
            health: None,
            feedback: None,
            backends: Vec::new(),
        }
    }

    pub fn udp(mut self) -> Self {
        self.protocol = Some("udp".into());
        self
    }

    pub fn nat(mut self) -> Self {
        self.mode = Some("nat".into());
        self
    }

    pub fn ring_size(mut self, size: u32) -> Self {
        self.ring_size = Some(size);
        self
    }

    pub fn source_affinity(mut self) -> Self {
        self.affinity = Some("source".into());
        self
    }

    pub fn health(mut self, health: HealthCheck) -> Self {
        self.health = Some(health);
        self
    }

    pub fn feedback(mut self, feedback: Feedback) -> Self {
        self.feedback = Some(feedback);
        self
    }

    pub fn backend(mut self, backend: Backend) -> Self {
        self.backends.push(backend);
        self
    }

    pub fn backends(mut self, backends: impl IntoIterator<Item = Backend>) -> Self {
        self.backends.extend(backends);
        self
    }
}

impl Backend {
    /// A backend at `address` with xlb's defaults (weight 1, the VIP's port).
    pub fn new(address: impl Into<IpAddr>) -> Backend {
        Backend {
            address: address.into(),
            name: None,
            port: None,
            weight: None,
            tier: None,
            health: None,
        }
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = Some(weight);
        self
    }

    pub fn tier(mut self, tier: u8) -> Self {
        self.tier = Some(tier);
        self
    }

    pub fn health(mut self, health: HealthCheck) -> Self {
        self.health = Some(health);
        self
    }
}

impl HealthCheck {
    /// A check of `kind` (`icmp`, `tcp`, `http`, `http_content`).
    pub fn new(kind: &str) -> HealthCheck {
        HealthCheck {
            kind: Some(kind.to_owned()),
            ..HealthCheck::default()
        }
    }

    /// Interval and timeout in milliseconds, rise and fall counts.
    pub fn timing(mut self, interval_ms: u64, timeout_ms: u64, rise: u32, fall: u32) -> Self {
        self.interval_ms = Some(interval_ms);
        self.timeout_ms = Some(timeout_ms);
        self.rise = Some(rise);
        self.fall = Some(fall);
        self
    }
}

impl VrrpGroup {
    pub fn new(vrid: u8, vips: &[&str]) -> VrrpGroup {
        VrrpGroup {
            vrid,
            priority: None,
            preempt: None,
            advert_interval_cs: None,
            vips: vips.iter().map(|v| (*v).to_owned()).collect(),
            server_addresses: None,
        }
    }

    pub fn server_addresses(mut self, addrs: &[IpAddr]) -> Self {
        self.server_addresses = Some(addrs.to_vec());
        self
    }

    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    pub fn interval_cs(mut self, cs: u16) -> Self {
        self.advert_interval_cs = Some(cs);
        self
    }

    pub fn preempt(mut self, preempt: bool) -> Self {
        self.preempt = Some(preempt);
        self
    }
}

impl Feedback {
    /// `source = "agent"` on `port` (plain TCP) with `interval_ms`,
    /// `timeout_ms` and `period_ms`; xlb's defaults for the rest.
    pub fn agent(port: u16, interval_ms: u64, timeout_ms: u64, period_ms: u64) -> Feedback {
        Feedback {
            source: "agent".into(),
            port: Some(port),
            interval_ms: Some(interval_ms),
            timeout_ms: Some(timeout_ms),
            period_ms: Some(period_ms),
            ..Feedback::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_xlb_reads_back() {
        let cfg = XlbConfig::new("eth0")
            .control_socket(Path::new("/tmp/x.sock"))
            .conntrack(Conntrack {
                tcp_timeout: Some(60),
                ..Conntrack::default()
            })
            .vip(
                Vip::new("web", "198.18.0.100".parse::<IpAddr>().unwrap(), 80)
                    .ring_size(13)
                    .health(HealthCheck::new("http").timing(100, 50, 2, 3))
                    .backend(Backend::new([198, 18, 0, 11]).name("b1").weight(2))
                    .backend(Backend::new([198, 18, 0, 12])),
            )
            .vip(
                Vip::new("dns", "fd00:18::100".parse::<IpAddr>().unwrap(), 53)
                    .udp()
                    .nat()
                    .backend(Backend::new("fd00:19::11".parse::<IpAddr>().unwrap()).port(5353)),
            )
            .vrrp(Vrrp {
                garp_repeat: Some(2),
                groups: vec![
                    VrrpGroup::new(51, &["web"]).priority(150),
                    VrrpGroup::new(52, &["dns"]),
                ],
                ..Vrrp::default()
            });
        let c = cfg.parse().unwrap();
        assert_eq!(c.interface, "eth0");
        assert_eq!(c.conntrack.tcp_timeout, 60);
        assert_eq!(c.vips.len(), 2);
        let web = &c.vips[0];
        assert_eq!((web.ring_size, web.backends.len()), (13, 2));
        assert_eq!(
            (web.backends[0].name.as_str(), web.backends[0].weight),
            ("b1", 2)
        );
        let check = web.backends[1].check.as_ref().unwrap();
        assert_eq!((check.rise, check.fall), (2, 3));
        assert_eq!(c.vips[1].backends[0].port, 5353);
        assert_eq!(c.vrrp.unwrap().groups[0].priority, 150);
    }

    #[test]
    fn a_config_xlb_refuses_is_refused_naming_the_field() {
        let cfg = XlbConfig::new("eth0").vip(
            Vip::new("web", [198, 18, 0, 100], 80)
                .backend(Backend::new([198, 18, 0, 11]).weight(20_000)),
        );
        let e = cfg.parse().unwrap_err().to_string();
        assert!(e.contains("vip[0].backend[0].weight"), "{e}");
    }
}
