//! The VIP addresses on the NIC (netlink), and the node's own addresses
//! that adverts are sent from.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result, anyhow};

use crate::netlink;

/// Netlink-backed address effects (forwarding is the caller's).
pub fn assign_addresses(ifindex: u32, addrs: &[IpAddr]) -> Result<()> {
    for a in addrs {
        netlink::add_host_address(ifindex, *a).with_context(|| format!("assigning VIP {a}"))?;
    }
    Ok(())
}

pub fn withdraw_addresses(ifindex: u32, addrs: &[IpAddr]) -> Result<()> {
    let mut first_err = None;
    // Withdraw every one even if one fails: a VIP left behind answers ARP.
    for a in addrs {
        if let Err(e) = netlink::del_host_address(ifindex, *a) {
            first_err.get_or_insert(anyhow!(e).context(format!("withdrawing VIP {a}")));
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
        IpAddr::V6(v) if a.link_scope => Some(v),
        _ => None,
    });
    Ok((v4, v6))
}
