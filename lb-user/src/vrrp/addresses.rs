//! Which addresses a group's master holds on which NIC, the addresses on
//! the NICs (netlink), and the node's own addresses that adverts are sent
//! from.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result, anyhow, bail};

use super::Nic;
use crate::config::VrrpGroup;
use crate::netlink;

/// One NIC's share of the addresses a group's master holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub nic: Nic,
    pub addrs: Vec<IpAddr>,
}

/// Where the master of `group` holds its addresses: the VIP addresses on
/// `nic` (the one VRRP runs on), the server addresses on `server` (the
/// `server_interface`). Assigned together on becoming master, withdrawn
/// together on leaving it; the adverts list only the VIP addresses. No
/// placement is empty.
pub fn placements(group: &VrrpGroup, nic: &Nic, server: Option<&Nic>) -> Result<Vec<Placement>> {
    let mut out = vec![Placement {
        nic: nic.clone(),
        addrs: group.addresses.clone(),
    }];
    if !group.server_addresses.is_empty() {
        let Some(server) = server else {
            bail!(
                "VRID {}: server addresses need server_interface",
                group.vrid
            );
        };
        out.push(Placement {
            nic: server.clone(),
            addrs: group.server_addresses.clone(),
        });
    }
    out.retain(|p| !p.addrs.is_empty());
    Ok(out)
}

/// Netlink-backed address effects (forwarding is the caller's).
pub fn assign_addresses(ifindex: u32, addrs: &[IpAddr]) -> Result<()> {
    for a in addrs {
        netlink::add_host_address(ifindex, *a).with_context(|| format!("assigning {a}"))?;
    }
    Ok(())
}

pub fn withdraw_addresses(ifindex: u32, addrs: &[IpAddr]) -> Result<()> {
    let mut first_err = None;
    // Withdraw every one even if one fails: an address left behind
    // answers ARP.
    for a in addrs {
        if let Err(e) = netlink::del_host_address(ifindex, *a) {
            first_err.get_or_insert(anyhow!(e).context(format!("withdrawing {a}")));
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Source addresses for adverts: the first IPv4 address of the NIC that is
/// not a VIP, and its IPv6 link-local address.
pub fn primary_addresses(
    ifindex: u32,
    vips: &[IpAddr],
) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    let addrs = netlink::addresses(ifindex)?;
    let v4 = addrs.iter().find_map(|a| match a.addr {
        IpAddr::V4(v) if !vips.contains(&a.addr) => Some(v),
        _ => None,
    });
    let v6 = addrs.iter().find_map(|a| match a.addr {
        // Not the group's virtual link-local address, which the master
        // holds too.
        IpAddr::V6(v) if a.link_scope && !vips.contains(&a.addr) => Some(v),
        _ => None,
    });
    Ok((v4, v6))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(name: &str, index: u32) -> Nic {
        Nic {
            name: name.into(),
            index,
            mac: [2, 0, 0, 0, 0, index as u8],
        }
    }

    fn group(vips: &[&str], server: &[&str]) -> VrrpGroup {
        let ips = |l: &[&str]| l.iter().map(|a| a.parse().unwrap()).collect();
        VrrpGroup {
            vrid: 51,
            priority: 100,
            preempt: true,
            interval_cs: 100,
            vips: vec!["web4".into()],
            addresses: ips(vips),
            server_addresses: ips(server),
        }
    }

    #[test]
    fn server_addresses_go_on_the_server_nic_with_the_vips() {
        let (eth0, eth1) = (nic("eth0", 2), nic("eth1", 3));
        let g = group(&["198.18.0.100"], &["198.18.1.1", "fd00:19::1"]);
        assert_eq!(
            placements(&g, &eth0, Some(&eth1)).unwrap(),
            vec![
                Placement {
                    nic: eth0.clone(),
                    addrs: g.addresses.clone(),
                },
                Placement {
                    nic: eth1.clone(),
                    addrs: g.server_addresses.clone(),
                },
            ]
        );
        // Without server addresses the server NIC is left alone.
        let plain = group(&["198.18.0.100"], &[]);
        assert_eq!(
            placements(&plain, &eth0, Some(&eth1)).unwrap(),
            vec![Placement {
                nic: eth0.clone(),
                addrs: plain.addresses.clone(),
            }]
        );
        assert_eq!(placements(&plain, &eth0, None).unwrap().len(), 1);
        // The validator refuses this; a config built in code might not.
        let err = placements(&g, &eth0, None).unwrap_err().to_string();
        assert!(err.contains("server_interface"), "{err}");
    }
}
