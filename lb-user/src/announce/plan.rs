//! Which VIP addresses this node should announce, and why (pure).
//!
//! A route covers an address, so the decision is per address: announced
//! while every announced VIP on it can be served here (the node forwards
//! it and at least `min_usable` of its backends are usable), withdrawn as
//! soon as one cannot.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::config::AnnounceConfig;

/// What the controller says about one VIP (see `Controller::serving`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    pub name: String,
    pub address: IpAddr,
    /// Backends in its Maglev ring.
    pub usable: usize,
    pub backends: usize,
    pub min_usable: u32,
    /// The data plane forwards it (not standby, `LB_CONFIG` written).
    pub forwarding: bool,
}

impl Serving {
    fn servable(&self) -> bool {
        self.forwarding && self.usable >= self.min_usable as usize
    }

    /// Why it can or cannot be served, in words.
    fn state(&self) -> String {
        if !self.forwarding {
            return "not forwarding".to_owned();
        }
        format!(
            "{} of {} backends usable (min_usable {})",
            self.usable, self.backends, self.min_usable
        )
    }
}

/// The verdict on one VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub address: IpAddr,
    pub announce: bool,
    pub reason: String,
}

/// The plan: per address whether to announce it, per VIP why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub addresses: BTreeMap<IpAddr, bool>,
    pub vips: BTreeMap<String, Verdict>,
}

impl Plan {
    /// Why `addr` is not announced: the reason of its first withdrawn VIP.
    pub fn withdrawn_because(&self, addr: IpAddr) -> String {
        self.vips
            .iter()
            .find(|(_, v)| v.address == addr && !v.announce)
            .map_or_else(
                || "no announced VIP has this address".to_owned(),
                |(name, v)| format!("{name}: {}", v.reason),
            )
    }

    /// The addresses to hold.
    pub fn announced(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addresses
            .iter()
            .filter(|(_, on)| **on)
            .map(|(a, _)| *a)
    }
}

/// Decides for the VIPs `cfg` announces. `leaving`: the node is going
/// down, everything is withdrawn.
pub fn decide(cfg: &AnnounceConfig, vips: &[Serving], leaving: bool) -> Plan {
    let mut plan = Plan::default();
    let announced: Vec<&Serving> = vips.iter().filter(|v| cfg.announces(&v.name)).collect();
    // The first VIP on each address that cannot be served.
    let mut blocker: BTreeMap<IpAddr, &Serving> = BTreeMap::new();
    for v in &announced {
        plan.addresses.entry(v.address).or_insert(true);
        if !v.servable() {
            blocker.entry(v.address).or_insert(v);
        }
    }
    for (addr, on) in plan.addresses.iter_mut() {
        *on = !leaving && !blocker.contains_key(addr);
    }
    for v in &announced {
        let verdict = if leaving {
            Verdict {
                address: v.address,
                announce: false,
                reason: "withdrawn: the node is going down".to_owned(),
            }
        } else {
            match blocker.get(&v.address) {
                None => Verdict {
                    address: v.address,
                    announce: true,
                    reason: format!("announced: {}", v.state()),
                },
                Some(b) if b.name == v.name => Verdict {
                    address: v.address,
                    announce: false,
                    reason: format!("withdrawn: {}", v.state()),
                },
                Some(b) => Verdict {
                    address: v.address,
                    announce: false,
                    reason: format!(
                        "withdrawn: {} on the same address has {}",
                        b.name,
                        b.state()
                    ),
                },
            }
        };
        plan.vips.insert(v.name.clone(), verdict);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vips: &[&str]) -> AnnounceConfig {
        AnnounceConfig {
            interface: "lo".into(),
            lifetime_s: 10,
            withdraw_wait_ms: 0,
            vips: vips.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn vip(name: &str, addr: &str, usable: usize, min: u32) -> Serving {
        Serving {
            name: name.into(),
            address: addr.parse().unwrap(),
            usable,
            backends: 3,
            min_usable: min,
            forwarding: true,
        }
    }

    #[test]
    fn an_address_is_announced_while_every_vip_on_it_has_enough_backends() {
        let vips = [
            vip("web4", "198.18.0.100", 3, 1),
            vip("tls4", "198.18.0.100", 1, 2),
            vip("web6", "fd00:18::100", 1, 1),
        ];
        let plan = decide(&cfg(&["web4", "tls4", "web6"]), &vips, false);
        let a4: IpAddr = "198.18.0.100".parse().unwrap();
        let a6: IpAddr = "fd00:18::100".parse().unwrap();
        assert!(!plan.addresses[&a4]);
        assert!(plan.addresses[&a6]);
        assert_eq!(plan.announced().collect::<Vec<_>>(), [a6]);
        assert_eq!(
            plan.vips["tls4"].reason,
            "withdrawn: 1 of 3 backends usable (min_usable 2)"
        );
        assert_eq!(
            plan.vips["web4"].reason,
            "withdrawn: tls4 on the same address has 1 of 3 backends usable (min_usable 2)"
        );
        assert_eq!(
            plan.vips["web6"].reason,
            "announced: 1 of 3 backends usable (min_usable 1)"
        );
    }

    #[test]
    fn vips_not_listed_are_neither_announced_nor_judged() {
        let vips = [
            vip("web4", "198.18.0.100", 0, 1),
            vip("web6", "fd00:18::100", 2, 1),
        ];
        let plan = decide(&cfg(&["web6"]), &vips, false);
        assert_eq!(plan.addresses.len(), 1);
        assert!(!plan.vips.contains_key("web4"));
        assert!(plan.vips["web6"].announce);
    }

    #[test]
    fn a_vip_the_node_does_not_forward_is_withdrawn_and_leaving_withdraws_all() {
        let mut standby = vip("web4", "198.18.0.100", 3, 1);
        standby.forwarding = false;
        let plan = decide(&cfg(&["web4"]), &[standby], false);
        assert_eq!(plan.vips["web4"].reason, "withdrawn: not forwarding");
        let plan = decide(&cfg(&["web4"]), &[vip("web4", "198.18.0.100", 3, 1)], true);
        assert_eq!(plan.announced().count(), 0);
        assert_eq!(
            plan.vips["web4"].reason,
            "withdrawn: the node is going down"
        );
    }
}
