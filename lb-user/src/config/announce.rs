//! The `[announce]` section: route health injection for ECMP (reference:
//! the `[announce]` section of `docs/config.md`, and `docs/scale-out.md`).

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Deserialize;
use toml::Spanned;

use super::checks::check_ifname;
use super::{Validator, VipConfig};

pub const DEFAULT_INTERFACE: &str = "lo";
/// How long an announcement outlives the last `xlb` that renewed it.
pub const DEFAULT_LIFETIME_S: u32 = 10;
/// How long `xlb down` keeps forwarding after withdrawing.
pub const DEFAULT_WITHDRAW_WAIT_MS: u32 = 2000;

/// Offer the VIP addresses to a routing daemon (BIRD, FRR) while this node
/// can serve them: as host addresses on `interface`, which the daemon
/// exports over BGP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// Where the addresses go (`lo` unless the daemon watches another).
    pub interface: String,
    /// Valid lifetime of each address; xlb renews it every third of it.
    /// If no xlb renews it, the kernel removes the address and the daemon
    /// withdraws the route: the bound on how long a node whose control
    /// plane died keeps attracting traffic.
    pub lifetime_s: u32,
    /// `xlb down`: time between the withdrawal and the detach, during
    /// which the data plane still forwards what the routers send.
    pub withdraw_wait_ms: u32,
    /// Names of the announced VIPs (every VIP when the file lists none).
    pub vips: Vec<String>,
}

impl AnnounceConfig {
    pub fn announces(&self, vip: &str) -> bool {
        self.vips.iter().any(|v| v == vip)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAnnounce {
    #[serde(default)]
    interface: Option<Spanned<String>>,
    #[serde(default)]
    lifetime_s: Option<Spanned<i64>>,
    #[serde(default)]
    withdraw_wait_ms: Option<Spanned<i64>>,
    #[serde(default)]
    vips: Option<Spanned<Vec<Spanned<String>>>>,
}

impl Validator<'_> {
    pub(super) fn announce(
        &mut self,
        raw: &Spanned<RawAnnounce>,
        vips: &[VipConfig],
        vrrp: bool,
    ) -> AnnounceConfig {
        let r = raw.get_ref();
        if vrrp {
            self.error(
                raw.span(),
                "announce",
                "[announce] and [vrrp] cannot be used together: a VIP is either \
                 announced by every node (ECMP) or held by one (VRRP); see docs/scale-out.md",
            );
        }
        let interface = match &r.interface {
            Some(i) => {
                let name = i.get_ref().clone();
                if let Err(why) = check_ifname(&name) {
                    self.error(
                        i.span(),
                        "announce.interface",
                        format!("{name:?} is not a valid interface name: {why}"),
                    );
                }
                name
            }
            None => DEFAULT_INTERFACE.to_owned(),
        };
        let lifetime_s = self.int_in(
            &r.lifetime_s,
            "announce.lifetime_s",
            3..=3600,
            DEFAULT_LIFETIME_S,
        );
        let withdraw_wait_ms = self.int_in(
            &r.withdraw_wait_ms,
            "announce.withdraw_wait_ms",
            0..=60_000,
            DEFAULT_WITHDRAW_WAIT_MS,
        );
        let by_name: HashMap<&str, &VipConfig> =
            vips.iter().map(|v| (v.name.as_str(), v)).collect();
        let names: Vec<String> = match &r.vips {
            None => vips.iter().map(|v| v.name.clone()).collect(),
            Some(list) => {
                if list.get_ref().is_empty() {
                    self.error(
                        list.span(),
                        "announce.vips",
                        "names no VIP (leave it out to announce every VIP)",
                    );
                }
                let mut names: Vec<String> = Vec::new();
                for (j, n) in list.get_ref().iter().enumerate() {
                    let field = format!("announce.vips[{j}]");
                    let name = n.get_ref();
                    if !by_name.contains_key(name.as_str()) {
                        self.error(n.span(), field, format!("no VIP is named {name:?}"));
                    } else if names.contains(name) {
                        self.error(n.span(), field, format!("VIP {name:?} is listed twice"));
                    } else {
                        names.push(name.clone());
                    }
                }
                // A route covers an address, every port of it: all VIPs on
                // an announced address must be announced, or the node would
                // attract traffic for one it never vouched for.
                let announced: HashMap<IpAddr, &str> = names
                    .iter()
                    .filter_map(|n| by_name.get(n.as_str()).map(|v| (v.address, n.as_str())))
                    .collect();
                for v in vips {
                    if let Some(other) = announced.get(&v.address)
                        && !names.contains(&v.name)
                    {
                        self.error(
                            list.span(),
                            "announce.vips",
                            format!(
                                "VIP {:?} shares address {} with the announced VIP {other:?}: \
                                 a route covers the whole address, list it too",
                                v.name, v.address
                            ),
                        );
                    }
                }
                names
            }
        };
        AnnounceConfig {
            interface,
            lifetime_s,
            withdraw_wait_ms,
            vips: names,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    const VIPS: &str = "interface = \"eth0\"\n\
        [[vip]]\nname = \"web4\"\naddress = \"198.18.0.100\"\nport = 80\n\
        [[vip.backend]]\naddress = \"198.18.0.11\"\n\
        [[vip.backend]]\naddress = \"198.18.0.12\"\n\
        [[vip]]\nname = \"tls4\"\naddress = \"198.18.0.100\"\nport = 443\n\
        [[vip]]\nname = \"web6\"\naddress = \"fd00:18::100\"\nport = 80\n";

    fn parse(extra: &str) -> Result<Config, Vec<String>> {
        Config::parse(&format!("{VIPS}{extra}"), "xlb.toml")
            .map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn defaults_announce_every_vip_on_lo() {
        let c = parse("[announce]\n").unwrap();
        let a = c.announce.unwrap();
        assert_eq!(a.interface, "lo");
        assert_eq!(a.lifetime_s, DEFAULT_LIFETIME_S);
        assert_eq!(a.withdraw_wait_ms, DEFAULT_WITHDRAW_WAIT_MS);
        assert_eq!(a.vips, ["web4", "tls4", "web6"]);
        assert_eq!(c.vips[0].min_usable, 1);
    }

    #[test]
    fn a_listed_vip_must_exist_and_bring_every_vip_of_its_address() {
        let errs = parse("[announce]\nvips = [\"web4\", \"nope\", \"web6\", \"web6\"]\n")
            .unwrap_err()
            .join("\n");
        assert!(
            errs.contains("announce.vips[1]: no VIP is named \"nope\""),
            "{errs}"
        );
        assert!(
            errs.contains("announce.vips[3]: VIP \"web6\" is listed twice"),
            "{errs}"
        );
        assert!(
            errs.contains(
                "VIP \"tls4\" shares address 198.18.0.100 with the announced VIP \"web4\""
            ),
            "{errs}"
        );
        let ok = parse("[announce]\nvips = [\"web6\"]\n").unwrap();
        assert_eq!(ok.announce.unwrap().vips, ["web6"]);
    }

    #[test]
    fn ranges_interface_and_vrrp_are_checked() {
        let errs = parse(
            "[announce]\ninterface = \"a/b\"\nlifetime_s = 2\nwithdraw_wait_ms = 60001\n\
             [vrrp]\n[[vrrp.group]]\nvrid = 1\nvips = [\"web4\", \"tls4\"]\n\
             [[vrrp.group]]\nvrid = 1\nvips = [\"web6\"]\n",
        )
        .unwrap_err()
        .join("\n");
        for want in [
            "announce.interface: \"a/b\" is not a valid interface name",
            "announce.lifetime_s: 2 is out of range 3..=3600",
            "announce.withdraw_wait_ms: 60001 is out of range 0..=60000",
            "announce: [announce] and [vrrp] cannot be used together",
        ] {
            assert!(errs.contains(want), "{want}: {errs}");
        }
    }

    #[test]
    fn min_usable_must_be_reachable() {
        let text = VIPS.replace(
            "port = 80\n[[vip.backend]]",
            "port = 80\nmin_usable = 3\n[[vip.backend]]",
        );
        let errs = Config::parse(&text, "xlb.toml").unwrap_err().to_string();
        assert!(
            errs.contains("vip[0].min_usable: 3 is more than the VIP's 2 backends"),
            "{errs}"
        );
        let text = VIPS.replace(
            "port = 80\n[[vip.backend]]",
            "port = 80\nmin_usable = 2\n[[vip.backend]]",
        );
        let c = Config::parse(&text, "xlb.toml").unwrap();
        assert_eq!(c.vips[0].min_usable, 2);
    }
}
