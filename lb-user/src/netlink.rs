//! Blocking rtnetlink queries for the control plane.
//!
//! The data plane forwards by rewriting the destination MAC, so backend MACs
//! must come from the kernel's neighbour table (never from configuration),
//! and backends the kernel has not resolved yet must be nudged into it.
//!
//! Every call opens its own `NETLINK_ROUTE` socket. A socket is bound to the
//! network namespace of the thread that creates it, so each call acts on the
//! namespace of the calling thread at the time of the call.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressProtocol,
    AddressScope, CacheInfo,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

mod conn;
use conn::Connection;
#[cfg(test)]
use conn::{NLMSG_HDRLEN, NLMSGERR_ATTR_MSG, error_tlvs, extack_message, kernel_error};

/// A network interface as the load balancer needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    /// Administratively up (`IFF_UP`); says nothing about carrier.
    pub up: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("interface {0} not found")]
    InterfaceNotFound(String),
    #[error("interface with index {0} not found")]
    InterfaceIndexNotFound(u32),
    #[error("interface {name} has no Ethernet address (hardware address is {len} bytes)")]
    NotEthernet { name: String, len: usize },
    #[error("{op}: netlink socket error: {source}")]
    Socket {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("{op} failed: {source}{}", kernel_detail(.detail))]
    Kernel {
        op: String,
        #[source]
        source: io::Error,
        /// The kernel's extended-ack message, when it sent one.
        detail: Option<String>,
    },
    #[error("{op}: unexpected reply from the kernel: {detail}")]
    Protocol { op: String, detail: String },
}

impl NetlinkError {
    /// The errno behind the failure, if the kernel or the socket reported one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Socket { source, .. } | Self::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

fn kernel_detail(detail: &Option<String>) -> String {
    detail
        .as_deref()
        .map(|msg| format!(" ({msg})"))
        .unwrap_or_default()
}

/// Looks an interface up by name (or altname) with `RTM_GETLINK`.
pub fn interface_by_name(name: &str) -> Result<Interface, NetlinkError> {
    // The kernel rejects over-long names with EINVAL/ERANGE rather than
    // ENODEV; such a name cannot exist, so report it as not found.
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(NetlinkError::InterfaceNotFound(name.to_owned()));
    }
    let op = format!("RTM_GETLINK for interface {name}");
    let mut request = LinkMessage::default();
    request
        .attributes
        .push(LinkAttribute::IfName(name.to_owned()));
    let mut conn = Connection::open(&op)?;
    let replies = conn
        .request(RouteNetlinkMessage::GetLink(request), NLM_F_ACK, &op)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENODEV) => NetlinkError::InterfaceNotFound(name.to_owned()),
            _ => e,
        })?;
    let link = single_link(replies, &op)?;
    interface_from_link(link, name)
}

/// MACs of usable neighbour entries on `ifindex` (states REACHABLE, STALE,
/// DELAY, PROBE, PERMANENT, NOARP with a 6-byte lladdr; not INCOMPLETE or
/// FAILED), IPv4 and IPv6, from one `RTM_GETNEIGH` dump.
pub fn neighbours(ifindex: u32) -> Result<HashMap<IpAddr, [u8; 6]>, NetlinkError> {
    let op = format!("RTM_GETNEIGH dump on interface index {ifindex}");
    let mut conn = Connection::open(&op)?;
    // A dump filtered on a missing ifindex is merely empty; a vanished
    // interface must not look like one with no neighbours.
    link_by_index(&mut conn, ifindex)?;
    let mut request = NeighbourMessage::default();
    // AF_UNSPEC covers the ARP and ND tables in one dump; NDA_IFINDEX makes
    // the kernel filter by device.
    request
        .attributes
        .push(NeighbourAttribute::IfIndex(ifindex));
    let replies = conn.request(RouteNetlinkMessage::GetNeighbour(request), NLM_F_DUMP, &op)?;
    Ok(replies
        .iter()
        .filter_map(|reply| match reply {
            RouteNetlinkMessage::NewNeighbour(msg) => usable_neighbour(msg, ifindex),
            _ => None,
        })
        .collect())
}

/// Asks the kernel to resolve `addr` on `ifindex` (ARP request / neighbour
/// solicitation sent by the kernel itself), creating the entry if needed.
///
/// Equivalent to `ip neigh replace ADDR dev DEV use`, except that a new entry
/// is created in state NONE rather than PERMANENT, so it stays subject to
/// garbage collection. PERMANENT and NOARP entries are left untouched: the
/// kernel strips NUD_PERMANENT from an entry that receives NTF_USE. A
/// non-permanent entry turned permanent by someone else between our lookup
/// and our request would still lose that state; netlink offers no
/// compare-and-set to close that window.
pub fn probe_neighbour(ifindex: u32, addr: IpAddr) -> Result<(), NetlinkError> {
    let op = format!("RTM_NEWNEIGH (NTF_USE) for {addr} on interface index {ifindex}");
    probe_on(&mut Connection::open(&op)?, ifindex, addr)
}

/// [`probe_neighbour`] for many addresses over one netlink socket, opened
/// on the first probe and kept (opened again after a probe that failed, so
/// that a broken exchange cannot spill into the next).
#[derive(Default)]
pub struct Prober {
    conn: Option<Connection>,
}

impl Prober {
    pub fn probe(&mut self, ifindex: u32, addr: IpAddr) -> Result<(), NetlinkError> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => Connection::open("opening a netlink socket for neighbour probes")?,
        };
        let result = probe_on(&mut conn, ifindex, addr);
        if result.is_ok() {
            self.conn = Some(conn);
        }
        result
    }
}

fn probe_on(conn: &mut Connection, ifindex: u32, addr: IpAddr) -> Result<(), NetlinkError> {
    let op = format!("RTM_NEWNEIGH (NTF_USE) for {addr} on interface index {ifindex}");
    for _ in 0..PROBE_ATTEMPTS {
        let existing = lookup_neighbour(conn, ifindex, addr)?;
        if let Some(state) = existing.filter(|&s| is_static(s)) {
            tracing::debug!(%addr, ifindex, %state, "static neighbour entry, not probing");
            return Ok(());
        }
        // Without an entry, NLM_F_EXCL makes the kernel refuse (EEXIST) if one
        // appeared since the lookup, as it might be permanent; with one,
        // leaving out NLM_F_CREATE makes it refuse (ENOENT) if it vanished.
        let (flags, race_errno) = match existing {
            None => (NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, libc::EEXIST),
            Some(_) => (NLM_F_ACK, libc::ENOENT),
        };
        let request = RouteNetlinkMessage::NewNeighbour(use_request(ifindex, addr));
        match conn.request(request, flags, &op) {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(race_errno) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                return Err(NetlinkError::InterfaceIndexNotFound(ifindex));
            }
            Err(e) => return Err(e),
        }
    }
    Err(NetlinkError::Protocol {
        op,
        detail: format!("the entry kept changing under us {PROBE_ATTEMPTS} times in a row"),
    })
}

/// Whether `ifindex` is up and has carrier (`IFF_UP` and `IFF_LOWER_UP`):
/// VRRP's link tracking.
pub fn carrier(ifindex: u32) -> Result<bool, NetlinkError> {
    let op = format!("RTM_GETLINK for interface index {ifindex}");
    let mut conn = Connection::open(&op)?;
    let link = link_by_index(&mut conn, ifindex)?;
    Ok(link.header.flags.contains(LinkFlags::Up) && link.header.flags.contains(LinkFlags::LowerUp))
}

/// What the data plane's delivery depends on: whether the NIC is a veth
/// (whose XDP_TX and XDP_REDIRECT frames reach the peer only if the peer
/// runs an XDP program or has GRO on) and how many frames it failed to
/// send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkFacts {
    pub veth: bool,
    pub tx_dropped: u64,
}

pub fn link_facts(ifindex: u32) -> Result<LinkFacts, NetlinkError> {
    use netlink_packet_route::link::{InfoKind, LinkInfo};
    let op = format!("RTM_GETLINK for interface index {ifindex}");
    let mut conn = Connection::open(&op)?;
    let link = link_by_index(&mut conn, ifindex)?;
    let mut facts = LinkFacts {
        veth: false,
        tx_dropped: 0,
    };
    for attr in link.attributes {
        match attr {
            LinkAttribute::Stats64(s) => facts.tx_dropped = s.tx_dropped,
            LinkAttribute::LinkInfo(infos) => {
                facts.veth |= infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
            }
            _ => {}
        }
    }
    Ok(facts)
}

/// An address configured on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddress {
    pub addr: IpAddr,
    pub prefix_len: u8,
    /// Link-local scope (IPv6 fe80::/10).
    pub link_scope: bool,
}

/// Addresses on `ifindex`, IPv4 and IPv6, in the kernel's order (for IPv4
/// the primary address of a subnet comes first).
pub fn addresses(ifindex: u32) -> Result<Vec<IfAddress>, NetlinkError> {
    let op = format!("RTM_GETADDR dump on interface index {ifindex}");
    let mut conn = Connection::open(&op)?;
    let replies = conn.request(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        NLM_F_DUMP,
        &op,
    )?;
    Ok(replies
        .iter()
        .filter_map(|r| match r {
            RouteNetlinkMessage::NewAddress(m) if m.header.index == ifindex => {
                // IFA_LOCAL is the local address on point-to-point links;
                // elsewhere IFA_ADDRESS is.
                let local = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(a) => Some(*a),
                    _ => None,
                });
                let address = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(a) => Some(*a),
                    _ => None,
                });
                local.or(address).map(|addr| IfAddress {
                    addr,
                    prefix_len: m.header.prefix_len,
                    link_scope: m.header.scope == AddressScope::Link,
                })
            }
            _ => None,
        })
        .collect())
}

fn address_request(ifindex: u32, addr: IpAddr) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = address_family(addr);
    m.header.prefix_len = if addr.is_ipv4() { 32 } else { 128 };
    m.header.index = ifindex;
    m.attributes.push(AddressAttribute::Local(addr));
    m.attributes.push(AddressAttribute::Address(addr));
    if addr.is_ipv6() {
        // A VIP is by design on several nodes over time; DAD would only
        // delay it (and fail while the old master still holds it).
        m.header.flags = AddressHeaderFlags::Nodad;
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        // Deprecated (preferred lifetime 0, valid forever): still answered
        // for and accepted, never picked as a source address. Otherwise the
        // /128 VIP wins source selection for the node's own connections to
        // the backends' subnet, and health checks sourced from it are
        // answered to the VIP on the backends' own `lo`.
        let mut lifetimes = CacheInfo::default();
        lifetimes.ifa_preferred = 0;
        lifetimes.ifa_valid = u32::MAX;
        m.attributes.push(AddressAttribute::CacheInfo(lifetimes));
    }
    m
}

/// Adds `addr` as a host address (/32, /128 without DAD) to `ifindex`.
/// Already present is fine.
pub fn add_host_address(ifindex: u32, addr: IpAddr) -> Result<(), NetlinkError> {
    let op = format!("RTM_NEWADDR {addr} on interface index {ifindex}");
    let mut conn = Connection::open(&op)?;
    let request = RouteNetlinkMessage::NewAddress(address_request(ifindex, addr));
    match conn.request(request, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &op) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the host address `addr` from `ifindex`. Already absent is fine.
pub fn del_host_address(ifindex: u32, addr: IpAddr) -> Result<(), NetlinkError> {
    let op = format!("RTM_DELADDR {addr} on interface index {ifindex}");
    let mut conn = Connection::open(&op)?;
    let request = RouteNetlinkMessage::DelAddress(address_request(ifindex, addr));
    match conn.request(request, NLM_F_ACK, &op) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `IFA_PROTO` of the addresses xlb announces (`ip -d addr` shows
/// `proto 0xb0`): how xlb tells its own from everyone else's.
pub const ANNOUNCE_PROTO: u8 = 0xb0;

/// Adds `addr` as a host address (/32, /128) to `ifindex` with xlb's
/// protocol and a valid lifetime of `lifetime_s`, or renews the lifetime of
/// the one there. The kernel removes it when the lifetime runs out. IPv4
/// gets the label `<ifname>:xlb`; IPv6 is deprecated (never picked as a
/// source) and skips DAD.
pub fn hold_address(
    ifindex: u32,
    ifname: &str,
    addr: IpAddr,
    lifetime_s: u32,
) -> Result<(), NetlinkError> {
    let op = format!("RTM_NEWADDR {addr} (lifetime {lifetime_s} s) on {ifname}");
    let mut m = AddressMessage::default();
    m.header.family = address_family(addr);
    m.header.prefix_len = if addr.is_ipv4() { 32 } else { 128 };
    m.header.index = ifindex;
    m.attributes.push(AddressAttribute::Local(addr));
    m.attributes.push(AddressAttribute::Address(addr));
    let mut lifetimes = CacheInfo::default();
    lifetimes.ifa_valid = lifetime_s;
    if addr.is_ipv4() {
        lifetimes.ifa_preferred = lifetime_s;
        // A label must begin with the interface's name; at most 15 bytes.
        let label: String = format!("{ifname}:xlb").chars().take(15).collect();
        if label.starts_with(ifname) && label.len() > ifname.len() {
            m.attributes.push(AddressAttribute::Label(label));
        }
    } else {
        m.header.flags = AddressHeaderFlags::Nodad;
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    m.attributes.push(AddressAttribute::CacheInfo(lifetimes));
    m.attributes
        .push(AddressAttribute::Protocol(AddressProtocol::Other(
            ANNOUNCE_PROTO,
        )));
    let mut conn = Connection::open(&op)?;
    conn.request(
        RouteNetlinkMessage::NewAddress(m),
        NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        &op,
    )?;
    Ok(())
}

/// The host addresses on `ifindex` that carry xlb's protocol
/// ([`ANNOUNCE_PROTO`]).
pub fn held_addresses(ifindex: u32) -> Result<Vec<IpAddr>, NetlinkError> {
    let op = format!("RTM_GETADDR dump on interface index {ifindex}");
    let mut conn = Connection::open(&op)?;
    let replies = conn.request(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        NLM_F_DUMP,
        &op,
    )?;
    Ok(replies
        .iter()
        .filter_map(|r| match r {
            RouteNetlinkMessage::NewAddress(m) if m.header.index == ifindex => {
                let ours = m.attributes.iter().any(|a| {
                    matches!(a, AddressAttribute::Protocol(p) if u8::from(*p) == ANNOUNCE_PROTO)
                });
                if !ours {
                    return None;
                }
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(a) => Some(*a),
                    AddressAttribute::Address(a) if a.is_ipv6() => Some(*a),
                    _ => None,
                })
            }
            _ => None,
        })
        .collect())
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

const PROBE_ATTEMPTS: usize = 3;

const NUD_REACHABLE: u16 = 0x02;
const NUD_STALE: u16 = 0x04;
const NUD_DELAY: u16 = 0x08;
const NUD_PROBE: u16 = 0x10;
const NUD_NOARP: u16 = 0x40;
const NUD_PERMANENT: u16 = 0x80;
/// The kernel's NUD_VALID: states in which an entry carries a link-layer
/// address that may be used.
const NUD_VALID: u16 =
    NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP;

/// The state is a bit mask in the kernel; the crate's enum only names single
/// bits, so test bits rather than match variants.
fn is_usable(state: NeighbourState) -> bool {
    u16::from(state) & NUD_VALID != 0
}

/// Entries an administrator (or the kernel, for NOARP devices) pinned; the
/// kernel never resolves them, so a probe has nothing to do but harm.
fn is_static(state: NeighbourState) -> bool {
    u16::from(state) & (NUD_PERMANENT | NUD_NOARP) != 0
}

fn usable_neighbour(msg: &NeighbourMessage, ifindex: u32) -> Option<(IpAddr, [u8; 6])> {
    if msg.header.ifindex != ifindex
        || !is_usable(msg.header.state)
        || msg.header.flags.contains(NeighbourFlags::Proxy)
    {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some((*a).into()),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => ip = Some((*a).into()),
            NeighbourAttribute::LinkLayerAddress(lladdr) => {
                mac = <[u8; 6]>::try_from(lladdr.as_slice()).ok();
            }
            _ => {}
        }
    }
    Some((ip?, mac?))
}

fn address_family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn use_request(ifindex: u32, addr: IpAddr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = address_family(addr);
    msg.header.ifindex = ifindex;
    // ip(8) sends PERMANENT here; the kernel ignores the state under NTF_USE
    // but would still exempt a newly created entry from garbage collection.
    msg.header.state = NeighbourState::None;
    msg.header.flags = NeighbourFlags::Use;
    msg.attributes
        .push(NeighbourAttribute::Destination(addr.into()));
    msg
}

/// The state of the entry for `addr` on `ifindex`, or `None` if there is none.
fn lookup_neighbour(
    conn: &mut Connection,
    ifindex: u32,
    addr: IpAddr,
) -> Result<Option<NeighbourState>, NetlinkError> {
    let op = format!("RTM_GETNEIGH for {addr} on interface index {ifindex}");
    let mut request = NeighbourMessage::default();
    request.header.family = address_family(addr);
    request.header.ifindex = ifindex;
    request
        .attributes
        .push(NeighbourAttribute::Destination(addr.into()));
    match conn.request(RouteNetlinkMessage::GetNeighbour(request), NLM_F_ACK, &op) {
        Ok(replies) => replies
            .into_iter()
            .find_map(|reply| match reply {
                RouteNetlinkMessage::NewNeighbour(msg) => Some(Some(msg.header.state)),
                _ => None,
            })
            .ok_or_else(|| NetlinkError::Protocol {
                op,
                detail: "acknowledged without a neighbour entry".into(),
            }),
        Err(e) => match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            Some(libc::ENODEV) => Err(NetlinkError::InterfaceIndexNotFound(ifindex)),
            _ => Err(e),
        },
    }
}

fn link_by_index(conn: &mut Connection, ifindex: u32) -> Result<LinkMessage, NetlinkError> {
    // Index 0 means "look up by name" to the kernel.
    if ifindex == 0 {
        return Err(NetlinkError::InterfaceIndexNotFound(ifindex));
    }
    let op = format!("RTM_GETLINK for interface index {ifindex}");
    let mut request = LinkMessage::default();
    request.header.index = ifindex;
    let replies = conn
        .request(RouteNetlinkMessage::GetLink(request), NLM_F_ACK, &op)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENODEV) => NetlinkError::InterfaceIndexNotFound(ifindex),
            _ => e,
        })?;
    single_link(replies, &op)
}

fn single_link(replies: Vec<RouteNetlinkMessage>, op: &str) -> Result<LinkMessage, NetlinkError> {
    replies
        .into_iter()
        .find_map(|reply| match reply {
            RouteNetlinkMessage::NewLink(link) => Some(link),
            _ => None,
        })
        .ok_or_else(|| NetlinkError::Protocol {
            op: op.to_owned(),
            detail: "acknowledged without a link".into(),
        })
}

fn interface_from_link(link: LinkMessage, requested: &str) -> Result<Interface, NetlinkError> {
    let mut name = None;
    let mut address = None;
    for attr in link.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n),
            LinkAttribute::Address(a) => address = Some(a),
            _ => {}
        }
    }
    // A lookup by altname answers with the primary name, which is the one
    // worth reporting.
    let name = name.unwrap_or_else(|| requested.to_owned());
    let address = address.unwrap_or_default();
    let Ok(mac) = <[u8; 6]>::try_from(address.as_slice()) else {
        return Err(NetlinkError::NotEthernet {
            name,
            len: address.len(),
        });
    };
    Ok(Interface {
        name,
        index: link.header.index,
        mac,
        up: link.header.flags.contains(LinkFlags::Up),
    })
}

#[cfg(test)]
mod tests;
