//! The `[vrrp]` section: parsing and validation (reference: the VRRP
//! section of `docs/config.md`).

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Deserialize;
use toml::Spanned;

use super::{Validator, VipConfig};

/// Default number of gratuitous ARPs / unsolicited NAs per address on
/// becoming master.
pub const DEFAULT_GARP_REPEAT: u32 = 3;
pub const DEFAULT_GARP_INTERVAL_MS: u32 = 100;
/// Default advert interval: 1 s, as in RFC 5798.
pub const DEFAULT_INTERVAL_CS: u16 = 100;
pub const DEFAULT_PRIORITY: u8 = 100;
pub const DEFAULT_TRACK_INTERVAL_MS: u32 = 1000;
pub const DEFAULT_TRACK_FALL: u32 = 3;
/// Most distinct addresses one group may have: the advert counts them in
/// one byte.
pub const MAX_GROUP_ADDRESSES: usize = 255;

/// VRRP between xlb nodes (and keepalived).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpConfig {
    pub garp_repeat: u32,
    pub garp_interval_ms: u32,
    /// Tracking: the NIC must have carrier.
    pub track_link: bool,
    /// Tracking: this address (the upstream gateway) must answer ICMP echo.
    pub track_address: Option<IpAddr>,
    pub track_interval_ms: u32,
    /// Consecutive failed echoes before the address counts as unreachable.
    pub track_fall: u32,
    /// Priority lowered by this much while tracking fails; 0 = go to FAULT.
    pub track_penalty: u8,
    /// `peers`: the other nodes' addresses. Empty: adverts go to the
    /// multicast group and are accepted from any source. Otherwise adverts
    /// are accepted only from these sources and sent by unicast to each
    /// peer of the group's family (IPv6 peers are link-local addresses,
    /// the source of IPv6 adverts).
    pub peers: Vec<IpAddr>,
    pub groups: Vec<VrrpGroup>,
}

/// One virtual router: a VRID and the VIPs it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpGroup {
    pub vrid: u8,
    pub priority: u8,
    pub preempt: bool,
    /// Advertisement interval, centiseconds.
    pub interval_cs: u16,
    /// Names of the VIPs.
    pub vips: Vec<String>,
    /// Their distinct addresses, in order: what the adverts list and what
    /// the master assigns to the NIC. All of one family.
    pub addresses: Vec<IpAddr>,
    /// Addresses the master also holds, on `server_interface` (the
    /// backends' gateway in a two-armed NAT pair). Either family; not
    /// listed in the adverts.
    pub server_addresses: Vec<IpAddr>,
}

impl VrrpGroup {
    pub fn is_ipv6(&self) -> bool {
        self.addresses.first().is_some_and(IpAddr::is_ipv6)
    }
}

/// Link-local (fe80::/10).
fn is_link_local(a: std::net::Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// The link-local address of an IPv6 group without `link_local`: the
/// EUI-64 address of VRRP's IPv6 virtual MAC 00:00:5e:00:02:<vrid>
/// (RFC 5798 7.3), e.g. fe80::200:5eff:fe00:234 for VRID 52.
pub fn default_link_local(vrid: u8) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        0x0200,
        0x5eff,
        0xfe00,
        0x0200 | u16::from(vrid),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVrrp {
    #[serde(default)]
    garp_repeat: Option<Spanned<i64>>,
    #[serde(default)]
    garp_interval_ms: Option<Spanned<i64>>,
    #[serde(default)]
    track_link: Option<bool>,
    #[serde(default)]
    track_address: Option<Spanned<IpAddr>>,
    #[serde(default)]
    track_interval_ms: Option<Spanned<i64>>,
    #[serde(default)]
    track_fall: Option<Spanned<i64>>,
    #[serde(default)]
    track_penalty: Option<Spanned<i64>>,
    #[serde(default)]
    peers: Option<Spanned<Vec<Spanned<IpAddr>>>>,
    #[serde(default)]
    group: Vec<Spanned<RawGroup>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    vrid: Spanned<i64>,
    #[serde(default)]
    priority: Option<Spanned<i64>>,
    #[serde(default)]
    preempt: Option<bool>,
    #[serde(default)]
    advert_interval_cs: Option<Spanned<i64>>,
    vips: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    server_addresses: Option<Spanned<Vec<Spanned<IpAddr>>>>,
    #[serde(default)]
    link_local: Option<Spanned<std::net::Ipv6Addr>>,
}

impl Validator<'_> {
    /// `server_interface`: whether the config has one (server addresses
    /// need it).
    pub(super) fn vrrp(
        &mut self,
        raw: &Spanned<RawVrrp>,
        vips: &[VipConfig],
        server_interface: bool,
    ) -> VrrpConfig {
        let r = raw.get_ref();
        let garp_repeat = self.int_in(
            &r.garp_repeat,
            "vrrp.garp_repeat",
            1..=100,
            DEFAULT_GARP_REPEAT,
        );
        let garp_interval_ms = self.int_in(
            &r.garp_interval_ms,
            "vrrp.garp_interval_ms",
            10..=10_000,
            DEFAULT_GARP_INTERVAL_MS,
        );
        let track_interval_ms = self.int_in(
            &r.track_interval_ms,
            "vrrp.track_interval_ms",
            100..=60_000,
            DEFAULT_TRACK_INTERVAL_MS,
        );
        let track_fall = self.int_in(
            &r.track_fall,
            "vrrp.track_fall",
            1..=100,
            DEFAULT_TRACK_FALL,
        );
        let track_penalty = self.int_in(&r.track_penalty, "vrrp.track_penalty", 0..=253, 0u8);
        if let Some(a) = &r.track_address
            && let Err(why) = super::check_unicast(*a.get_ref())
        {
            self.error(
                a.span(),
                "vrrp.track_address",
                format!("{} cannot be tracked: {why}", a.get_ref()),
            );
        }
        if r.group.is_empty() {
            self.error(
                raw.span(),
                "vrrp.group",
                "[vrrp] needs at least one [[vrrp.group]]",
            );
        }

        let by_name: HashMap<&str, &VipConfig> =
            vips.iter().map(|v| (v.name.as_str(), v)).collect();
        let peers = self.peers(r.peers.as_ref(), vips);
        // Server address → (group index, index in its list).
        let mut server_seen: HashMap<IpAddr, (usize, usize)> = HashMap::new();
        // (family is v6, vrid) → (group index, byte offset); VRIDs are per family.
        let mut seen_vrid: HashMap<(bool, u8), (usize, usize)> = HashMap::new();
        // VIP address → group index: ARP/ND is per address, so every VIP on
        // one address must move with one group.
        let mut addr_group: HashMap<IpAddr, usize> = HashMap::new();
        let mut vip_group: HashMap<String, usize> = HashMap::new();
        let mut groups = Vec::with_capacity(r.group.len());
        for (i, g) in r.group.iter().enumerate() {
            let p = format!("vrrp.group[{i}]");
            let g = g.get_ref();
            let vrid = self.int_in(&Some(g.vrid.clone()), &format!("{p}.vrid"), 1..=255, 1u8);
            let priority = match &g.priority {
                Some(v) if *v.get_ref() == 255 => {
                    self.error(
                        v.span(),
                        format!("{p}.priority"),
                        "255 is reserved for the owner of the addresses; \
                         xlb never owns VIP addresses, use 1..=254",
                    );
                    DEFAULT_PRIORITY
                }
                v => self.int_in(v, &format!("{p}.priority"), 1..=254, DEFAULT_PRIORITY),
            };
            let interval_cs = self.int_in(
                &g.advert_interval_cs,
                &format!("{p}.advert_interval_cs"),
                1..=i64::from(super::super::vrrp::packet::MAX_INTERVAL_CS),
                DEFAULT_INTERVAL_CS,
            );
            let mut names = Vec::new();
            let mut addresses: Vec<IpAddr> = Vec::new();
            if g.vips.get_ref().is_empty() {
                self.error(g.vips.span(), format!("{p}.vips"), "names no VIP");
            }
            for (j, n) in g.vips.get_ref().iter().enumerate() {
                let field = format!("{p}.vips[{j}]");
                let name = n.get_ref();
                let Some(vip) = by_name.get(name.as_str()) else {
                    self.error(n.span(), field, format!("no VIP is named {name:?}"));
                    continue;
                };
                if let Some(&k) = vip_group.get(name) {
                    self.error(
                        n.span(),
                        field,
                        format!("VIP {name:?} is already in vrrp.group[{k}]"),
                    );
                    continue;
                }
                if let Some(first) = addresses.first()
                    && first.is_ipv4() != vip.address.is_ipv4()
                {
                    self.error(
                        n.span(),
                        field,
                        format!(
                            "VIP {name:?} ({}) mixes address families in one group; \
                             a virtual router is IPv4 or IPv6: use one group per family",
                            vip.address
                        ),
                    );
                    continue;
                }
                match addr_group.get(&vip.address) {
                    Some(&k) if k != i => {
                        self.error(
                            n.span(),
                            field,
                            format!(
                                "VIP {name:?} shares address {} with a VIP of vrrp.group[{k}]; \
                                 all VIPs on one address must be in one group",
                                vip.address
                            ),
                        );
                        continue;
                    }
                    _ => {}
                }
                addr_group.insert(vip.address, i);
                vip_group.insert(name.clone(), i);
                names.push(name.clone());
                if !addresses.contains(&vip.address) {
                    addresses.push(vip.address);
                }
            }
            let v6 = addresses.first().is_some_and(IpAddr::is_ipv6);
            // RFC 5798 5.2.9: an IPv6 advert's first address is the virtual
            // router's link-local address (keepalived warns otherwise).
            match (&g.link_local, v6) {
                (Some(ll), false) => self.error(
                    ll.span(),
                    format!("{p}.link_local"),
                    "only IPv6 groups have a link-local address",
                ),
                (Some(ll), true) if !is_link_local(*ll.get_ref()) => self.error(
                    ll.span(),
                    format!("{p}.link_local"),
                    format!("{} is not a link-local address (fe80::/10)", ll.get_ref()),
                ),
                _ => {}
            }
            if v6 {
                let ll = g
                    .link_local
                    .as_ref()
                    .map_or_else(|| default_link_local(vrid), |l| *l.get_ref());
                addresses.retain(|a| *a != IpAddr::V6(ll));
                addresses.insert(0, IpAddr::V6(ll));
            }
            // The advert's address count is one byte.
            if addresses.len() > MAX_GROUP_ADDRESSES {
                self.error(
                    g.vips.span(),
                    format!("{p}.vips"),
                    format!(
                        "the group's VIPs have {} distinct addresses; a VRRP advert \
                         lists at most {MAX_GROUP_ADDRESSES}: split the group",
                        addresses.len()
                    ),
                );
            }
            let vrid_at = g.vrid.span().start;
            if let Some(&(k, at)) = seen_vrid.get(&(v6, vrid)) {
                let l = self.line(at);
                self.error(
                    g.vrid.span(),
                    format!("{p}.vrid"),
                    format!(
                        "VRID {vrid} is already used by vrrp.group[{k}] at line {l} \
                         for the same address family"
                    ),
                );
            } else {
                seen_vrid.insert((v6, vrid), (i, vrid_at));
            }
            let server_addresses = match &g.server_addresses {
                None => Vec::new(),
                Some(list) => {
                    if !server_interface {
                        self.error(
                            list.span(),
                            format!("{p}.server_addresses"),
                            "needs server_interface: server addresses are assigned on the \
                             NIC towards the backends",
                        );
                    }
                    self.server_addresses(i, list, vips, &mut server_seen)
                }
            };
            groups.push(VrrpGroup {
                vrid,
                priority,
                preempt: g.preempt.unwrap_or(true),
                interval_cs,
                vips: names,
                addresses,
                server_addresses,
            });
        }
        if let Some(list) = &r.peers
            && !peers.is_empty()
        {
            for (v6, family) in [(false, "IPv4"), (true, "IPv6")] {
                let without = groups
                    .iter()
                    .position(|g| !g.addresses.is_empty() && g.is_ipv6() == v6);
                if let Some(k) = without
                    && !peers.iter().any(|a| a.is_ipv6() == v6)
                {
                    self.error(
                        list.span(),
                        "vrrp.peers",
                        format!(
                            "no {family} peer, but vrrp.group[{k}] is an {family} group: \
                             with peers, adverts go only to the listed peers, so it would \
                             talk to nobody; list the {family} peers too"
                        ),
                    );
                }
            }
        }
        for v in vips {
            if !vip_group.contains_key(&v.name) {
                self.error(
                    raw.span(),
                    "vrrp",
                    format!(
                        "VIP {:?} is in no vrrp group; with [vrrp] every VIP must be in one",
                        v.name
                    ),
                );
            }
        }
        VrrpConfig {
            garp_repeat,
            garp_interval_ms,
            track_link: r.track_link.unwrap_or(true),
            track_address: r.track_address.as_ref().map(|a| *a.get_ref()),
            track_interval_ms,
            track_fall,
            track_penalty,
            peers,
            groups,
        }
    }

    /// `vrrp.peers`: unicast, no duplicates, no VIP addresses, IPv6 ones
    /// link-local. What passes is returned.
    fn peers(
        &mut self,
        raw: Option<&Spanned<Vec<Spanned<IpAddr>>>>,
        vips: &[VipConfig],
    ) -> Vec<IpAddr> {
        let Some(list) = raw else {
            return Vec::new();
        };
        if list.get_ref().is_empty() {
            self.error(
                list.span(),
                "vrrp.peers",
                "is empty, which would accept no advert; leave it out to use multicast",
            );
        }
        let mut peers: Vec<IpAddr> = Vec::new();
        for (j, a) in list.get_ref().iter().enumerate() {
            let field = format!("vrrp.peers[{j}]");
            let addr = *a.get_ref();
            let why = if let Err(why) = super::check_unicast(addr) {
                Some(why.to_owned())
            } else if let IpAddr::V6(v6) = addr
                && !v6.is_unicast_link_local()
            {
                Some(
                    "IPv6 adverts are sent from the link-local address (RFC 5798): \
                     list the peer's fe80:: address (`ip -6 addr show dev IFACE scope link`)"
                        .to_owned(),
                )
            } else if let Some(v) = vips.iter().find(|v| v.address == addr) {
                Some(format!(
                    "it is the address of VIP {:?}; a peer is another node's own address",
                    v.name
                ))
            } else {
                peers
                    .iter()
                    .position(|p| *p == addr)
                    .map(|k| format!("duplicate of vrrp.peers[{k}]"))
            };
            match why {
                Some(why) => self.error(a.span(), field, format!("{addr} cannot be a peer: {why}")),
                None => peers.push(addr),
            }
        }
        peers
    }

    /// `vrrp.group[i].server_addresses`: unicast, no VIP addresses, each
    /// in one group only (`seen`, across groups).
    fn server_addresses(
        &mut self,
        i: usize,
        list: &Spanned<Vec<Spanned<IpAddr>>>,
        vips: &[VipConfig],
        seen: &mut HashMap<IpAddr, (usize, usize)>,
    ) -> Vec<IpAddr> {
        let mut out = Vec::new();
        for (j, a) in list.get_ref().iter().enumerate() {
            let field = format!("vrrp.group[{i}].server_addresses[{j}]");
            let addr = *a.get_ref();
            let why = if let Err(why) = super::check_unicast(addr) {
                Some(why.to_owned())
            } else if let Some(v) = vips.iter().find(|v| v.address == addr) {
                Some(format!(
                    "it is the address of VIP {:?}; VIP addresses go on interface with \
                     the group that carries them",
                    v.name
                ))
            } else {
                seen.get(&addr)
                    .map(|&(k, l)| format!("already vrrp.group[{k}].server_addresses[{l}]"))
            };
            match why {
                Some(why) => self.error(
                    a.span(),
                    field,
                    format!("{addr} cannot be a server address: {why}"),
                ),
                None => {
                    seen.insert(addr, (i, j));
                    out.push(addr);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    const VIPS: &str = "interface = \"eth0\"\n\
        [[vip]]\nname = \"web4\"\naddress = \"198.18.0.100\"\nport = 80\n\
        [[vip]]\nname = \"ssh4\"\naddress = \"198.18.0.100\"\nport = 22\n\
        [[vip]]\nname = \"web6\"\naddress = \"fd00:18::100\"\nport = 80\n";

    fn parse(vrrp: &str) -> Result<Config, Vec<String>> {
        Config::parse(&format!("{VIPS}{vrrp}"), "xlb.toml")
            .map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_group_with_more_addresses_than_an_advert_lists_is_refused() {
        let group = |n: u32| {
            let mut text = String::from("interface = \"eth0\"\n");
            let mut names = Vec::new();
            for i in 0..n {
                let a =
                    std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 18, 1, 0)) + i);
                text.push_str(&format!(
                    "[[vip]]\nname = \"v{i}\"\naddress = \"{a}\"\nport = 80\n"
                ));
                names.push(format!("\"v{i}\""));
            }
            text.push_str(&format!(
                "[vrrp]\n[[vrrp.group]]\nvrid = 51\nvips = [{}]\n",
                names.join(", ")
            ));
            Config::parse(&text, "xlb.toml").map_err(|e| e.to_string())
        };
        assert!(group(MAX_GROUP_ADDRESSES as u32).is_ok());
        let err = group(MAX_GROUP_ADDRESSES as u32 + 1).unwrap_err();
        assert!(
            err.contains("vrrp.group[0].vips") && err.contains("256 distinct addresses"),
            "{err}"
        );
    }

    #[test]
    fn an_ipv6_group_advertises_its_link_local_address_first() {
        assert_eq!(
            default_link_local(52),
            "fe80::200:5eff:fe00:234"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
        );
        let c = parse(
            "[vrrp]\n[[vrrp.group]]\nvrid = 51\nvips = [\"web4\", \"ssh4\"]\n\
             [[vrrp.group]]\nvrid = 52\nlink_local = \"fe80::52\"\nvips = [\"web6\"]\n",
        )
        .unwrap();
        let want: Vec<IpAddr> = vec!["fe80::52".parse().unwrap(), "fd00:18::100".parse().unwrap()];
        assert_eq!(c.vrrp.unwrap().groups[1].addresses, want);
        let errs = parse(
            "[vrrp]\n[[vrrp.group]]\nvrid = 52\nlink_local = \"fd00::1\"\nvips = [\"web6\"]\n\
             [[vrrp.group]]\nvrid = 51\nlink_local = \"fe80::1\"\nvips = [\"web4\"]\n",
        )
        .unwrap_err()
        .join("\n");
        assert!(
            errs.contains("vrrp.group[0].link_local: fd00::1 is not a link-local address"),
            "{errs}"
        );
        assert!(
            errs.contains("vrrp.group[1].link_local: only IPv6 groups"),
            "{errs}"
        );
    }

    #[test]
    fn full_section_parses_with_defaults_filled_in() {
        let c = parse(
            "[vrrp]\ntrack_address = \"198.18.0.254\"\ntrack_penalty = 60\n\
             [[vrrp.group]]\nvrid = 51\npriority = 150\nadvert_interval_cs = 20\nvips = [\"web4\", \"ssh4\"]\n\
             [[vrrp.group]]\nvrid = 51\npreempt = false\nvips = [\"web6\"]\n",
        )
        .unwrap();
        let v = c.vrrp.unwrap();
        assert_eq!(
            v,
            VrrpConfig {
                garp_repeat: DEFAULT_GARP_REPEAT,
                garp_interval_ms: DEFAULT_GARP_INTERVAL_MS,
                track_link: true,
                track_address: Some("198.18.0.254".parse().unwrap()),
                track_interval_ms: DEFAULT_TRACK_INTERVAL_MS,
                track_fall: DEFAULT_TRACK_FALL,
                track_penalty: 60,
                peers: Vec::new(),
                groups: vec![
                    VrrpGroup {
                        vrid: 51,
                        priority: 150,
                        preempt: true,
                        interval_cs: 20,
                        vips: vec!["web4".into(), "ssh4".into()],
                        // Two VIPs on one address: listed once.
                        addresses: vec!["198.18.0.100".parse().unwrap()],
                        server_addresses: Vec::new(),
                    },
                    // The same VRID is fine in the other address family.
                    VrrpGroup {
                        vrid: 51,
                        priority: DEFAULT_PRIORITY,
                        preempt: false,
                        interval_cs: DEFAULT_INTERVAL_CS,
                        vips: vec!["web6".into()],
                        addresses: vec![
                            "fe80::200:5eff:fe00:233".parse().unwrap(),
                            "fd00:18::100".parse().unwrap()
                        ],
                        server_addresses: Vec::new(),
                    },
                ],
            }
        );
        assert!(v.groups[1].is_ipv6());
    }

    #[test]
    fn no_section_means_standalone() {
        assert_eq!(parse("").unwrap().vrrp, None);
    }

    #[test]
    fn errors_name_line_and_field() {
        let errs = parse(
            "[vrrp]\ngarp_repeat = 0\n\
             [[vrrp.group]]\nvrid = 256\npriority = 255\nvips = [\"web4\", \"nope\", \"web6\"]\n\
             [[vrrp.group]]\nvrid = 7\nadvert_interval_cs = 5000\nvips = [\"ssh4\"]\n",
        )
        .unwrap_err();
        let want = [
            "xlb.toml:15:15: vrrp.garp_repeat: 0 is out of range 1..=100",
            "xlb.toml:17:8: vrrp.group[0].vrid: 256 is out of range 1..=255",
            "xlb.toml:18:12: vrrp.group[0].priority: 255 is reserved",
            "xlb.toml:19:17: vrrp.group[0].vips[1]: no VIP is named \"nope\"",
            "xlb.toml:19:25: vrrp.group[0].vips[2]: VIP \"web6\" (fd00:18::100) mixes address families",
            "xlb.toml:22:22: vrrp.group[1].advert_interval_cs: 5000 is out of range 1..=4095",
            "xlb.toml:23:9: vrrp.group[1].vips[0]: VIP \"ssh4\" shares address 198.18.0.100",
        ];
        for w in want {
            assert!(
                errs.iter().any(|e| e.starts_with(w)),
                "missing {w:?} in {errs:#?}"
            );
        }
        // web6 and ssh4 end up in no group: reported at the [vrrp] header.
        assert!(
            errs.iter()
                .any(|e| e.starts_with("xlb.toml:14:1: vrrp: VIP \"web6\" is in no vrrp group")),
            "{errs:#?}"
        );
        assert_eq!(errs.len(), 9, "{errs:#?}");
    }

    #[test]
    fn duplicate_vrid_and_vip_in_two_groups_are_refused() {
        let errs = parse(
            "[vrrp]\n[[vrrp.group]]\nvrid = 9\nvips = [\"web4\", \"ssh4\"]\n\
             [[vrrp.group]]\nvrid = 9\nvips = [\"web4\"]\n\
             [[vrrp.group]]\nvrid = 10\nvips = [\"web6\"]\n",
        )
        .unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.contains("vrrp.group[1].vrid: VRID 9 is already used by vrrp.group[0]")),
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|e| e
                    .contains("vrrp.group[1].vips[0]: VIP \"web4\" is already in vrrp.group[0]")),
            "{errs:#?}"
        );
    }

    #[test]
    fn docs_example_is_valid() {
        let block = super::super::tests::doc_blocks("toml")
            .into_iter()
            .find(|b| b.contains("[vrrp]"))
            .expect("a toml block with [vrrp] in docs/config.md");
        let c = Config::parse(&block, "config.md").unwrap();
        let v = c.vrrp.unwrap();
        assert_eq!(v.groups.len(), 2);
        assert_eq!(v.groups[0].interval_cs, 20);
        assert!(v.groups[1].is_ipv6());
        assert_eq!(v.track_address, Some("198.18.0.254".parse().unwrap()));
    }

    #[test]
    fn docs_peers_and_server_addresses_examples_are_valid() {
        let blocks: Vec<String> = super::super::tests::doc_blocks("toml")
            .into_iter()
            .filter(|b| b.contains("[vrrp]") && b.contains("peers = "))
            .collect();
        assert_eq!(
            blocks.len(),
            2,
            "the peers and the server addresses examples"
        );
        let pair = Config::parse(&blocks[0], "config.md")
            .unwrap()
            .vrrp
            .unwrap();
        assert_eq!(
            pair.peers,
            ips(&["198.18.0.1", "fe80::1", "198.18.0.3", "fe80::3"])
        );
        let nat = Config::parse(&blocks[1], "config.md").unwrap();
        assert_eq!(nat.server_interface.as_deref(), Some("eth1"));
        assert_eq!(
            nat.vrrp.unwrap().groups[0].server_addresses,
            ips(&["198.18.1.1", "fd00:19::1"])
        );
    }

    #[test]
    fn docs_peers_error_is_the_validators() {
        const DOCS: &str = include_str!("../../../docs/config.md");
        let errs = parse(&format!("[vrrp]\npeers = [\"198.18.0.3\"]\n{TWO_GROUPS}")).unwrap_err();
        assert!(
            DOCS.contains(&errs[0]),
            "docs/config.md quotes {:?}",
            errs[0]
        );
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    const TWO_GROUPS: &str = "[[vrrp.group]]\nvrid = 51\nvips = [\"web4\", \"ssh4\"]\n\
        [[vrrp.group]]\nvrid = 52\nvips = [\"web6\"]\n";

    #[test]
    fn peers_of_both_families_parse() {
        let c = parse(&format!(
            "[vrrp]\npeers = [\"198.18.0.3\", \"fe80::3\", \"198.18.0.4\"]\n{TWO_GROUPS}"
        ))
        .unwrap();
        assert_eq!(
            c.vrrp.unwrap().peers,
            ips(&["198.18.0.3", "fe80::3", "198.18.0.4"])
        );
    }

    #[test]
    fn bad_peers_are_refused_by_field() {
        let errs = parse(&format!(
            "[vrrp]\npeers = [\"198.18.0.3\", \"224.0.0.18\", \"fd00:18::3\", \
             \"198.18.0.100\", \"198.18.0.3\", \"fe80::3\"]\n{TWO_GROUPS}"
        ))
        .unwrap_err();
        let want = [
            "xlb.toml:15:24: vrrp.peers[1]: 224.0.0.18 cannot be a peer: multicast address",
            "xlb.toml:15:38: vrrp.peers[2]: fd00:18::3 cannot be a peer: IPv6 adverts are sent \
             from the link-local address",
            "xlb.toml:15:52: vrrp.peers[3]: 198.18.0.100 cannot be a peer: it is the address \
             of VIP \"web4\"",
            "xlb.toml:15:68: vrrp.peers[4]: 198.18.0.3 cannot be a peer: duplicate of vrrp.peers[0]",
        ];
        for w in want {
            assert!(
                errs.iter().any(|e| e.starts_with(w)),
                "missing {w:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
    }

    #[test]
    fn peers_without_a_family_a_group_uses_are_refused() {
        // An IPv4 peer only, but VRID 52 is an IPv6 group: its adverts
        // would go to nobody.
        let errs = parse(&format!("[vrrp]\npeers = [\"198.18.0.3\"]\n{TWO_GROUPS}")).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(
            errs[0].starts_with(
                "xlb.toml:15:9: vrrp.peers: no IPv6 peer, but vrrp.group[1] is an IPv6 group"
            ),
            "{errs:#?}"
        );
        // Only IPv4 groups: an IPv4 peer is all it needs.
        let v4_only = "[vrrp]\npeers = [\"198.18.0.3\"]\n\
            [[vrrp.group]]\nvrid = 51\nvips = [\"web4\", \"ssh4\", \"web6\"]\n";
        let errs = parse(v4_only).unwrap_err();
        assert!(
            errs.iter().all(|e| !e.contains("peer")),
            "the family mix is the error here, not the peers: {errs:#?}"
        );
        // An empty list is refused, not taken as "no filter".
        let errs = parse(&format!("[vrrp]\npeers = []\n{TWO_GROUPS}")).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.starts_with("xlb.toml:15:9: vrrp.peers: is empty")),
            "{errs:#?}"
        );
    }

    #[test]
    fn server_addresses_parse_with_a_server_interface() {
        let c = Config::parse(
            &format!(
                "server_interface = \"eth1\"\n{VIPS}[vrrp]\n\
                 [[vrrp.group]]\nvrid = 51\nvips = [\"web4\", \"ssh4\"]\n\
                 server_addresses = [\"198.18.1.1\", \"fd00:19::1\"]\n\
                 [[vrrp.group]]\nvrid = 52\nvips = [\"web6\"]\n"
            ),
            "xlb.toml",
        )
        .unwrap();
        let v = c.vrrp.unwrap();
        // Either family: the gateway of both, moving with the IPv4 group.
        assert_eq!(
            v.groups[0].server_addresses,
            ips(&["198.18.1.1", "fd00:19::1"])
        );
        assert!(v.groups[1].server_addresses.is_empty());
        // Not in the adverts: the group's addresses are its VIPs' only.
        assert_eq!(v.groups[0].addresses, ips(&["198.18.0.100"]));
    }

    #[test]
    fn bad_server_addresses_are_refused_by_field() {
        let errs = parse(
            "[vrrp]\n\
             [[vrrp.group]]\nvrid = 51\nvips = [\"web4\", \"ssh4\"]\n\
             server_addresses = [\"198.18.1.1\", \"198.18.0.100\", \"ff02::1\"]\n\
             [[vrrp.group]]\nvrid = 52\nvips = [\"web6\"]\n\
             server_addresses = [\"198.18.1.1\"]\n",
        )
        .unwrap_err();
        let want = [
            // No server_interface: said once per group that has them.
            "xlb.toml:18:20: vrrp.group[0].server_addresses: needs server_interface",
            "xlb.toml:18:35: vrrp.group[0].server_addresses[1]: 198.18.0.100 cannot be a server \
             address: it is the address of VIP \"web4\"",
            "xlb.toml:18:51: vrrp.group[0].server_addresses[2]: ff02::1 cannot be a server \
             address: multicast address",
            "xlb.toml:22:20: vrrp.group[1].server_addresses: needs server_interface",
            "xlb.toml:22:21: vrrp.group[1].server_addresses[0]: 198.18.1.1 cannot be a server \
             address: already vrrp.group[0].server_addresses[0]",
        ];
        for w in want {
            assert!(
                errs.iter().any(|e| e.starts_with(w)),
                "missing {w:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let errs = parse("[vrrp]\nbogus = 1\n").unwrap_err();
        assert!(errs[0].contains("bogus"), "{errs:#?}");
    }
}
