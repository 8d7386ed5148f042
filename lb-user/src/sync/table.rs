//! Between connection-table entries and sync entries, both ways, over
//! [`FlowTable`] (the kernel's pinned `FLOWS` and `NAT_REVERSE`, or plain
//! memory in the tests).
//!
//! Nodes share no ids: a backend is named by its VIP and its address and
//! port, which the [`Directory`] (asked of the controller, which owns the
//! ids) turns into this node's id and generation.

use std::collections::HashMap;
use std::net::IpAddr;

use anyhow::Result;
use lb_common::{
    FAMILY_V4, FAMILY_V6, FLOW_F_CLOSING, FlowKey, FlowState, VipKey, addr_bytes, words_to_bytes,
};

use super::wire::{Entry, Event, F_CLOSING, F_NAT};

/// The connection tables of one node.
pub trait FlowTable {
    fn flow(&self, key: &FlowKey) -> Result<Option<FlowState>>;
    fn set_flow(&mut self, key: &FlowKey, state: &FlowState) -> Result<()>;
    /// `NAT_REVERSE`: the backend → client key of a NAT flow's replies.
    fn set_reverse(&mut self, reply: &FlowKey, vip: &VipKey) -> Result<()>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirVip {
    pub index: u32,
    pub nat: bool,
    /// VRRP backup for this VIP: its flows are someone else's to send.
    pub standby: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirBackend {
    vip: VipKey,
    addr: IpAddr,
    /// Host order; 0: the packet's port is kept.
    port: u16,
    generation: u16,
}

/// VIPs and backend ids of this node, by the identities nodes share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    vips: HashMap<VipKey, DirVip>,
    by_id: HashMap<u32, DirBackend>,
    by_identity: HashMap<(VipKey, IpAddr, u16), (u32, u16)>,
}

impl Directory {
    pub fn add_vip(&mut self, key: VipKey, vip: DirVip) {
        self.vips.insert(key, vip);
    }

    /// Backend `id` (current `generation`) of VIP `vip`, at `addr`:`port`.
    pub fn add_backend(&mut self, vip: VipKey, id: u32, generation: u16, addr: IpAddr, port: u16) {
        self.by_id.insert(
            id,
            DirBackend {
                vip,
                addr,
                port,
                generation,
            },
        );
        self.by_identity.insert((vip, addr, port), (id, generation));
    }

    pub fn backends(&self) -> usize {
        self.by_id.len()
    }

    /// The VIP a packet to `addr`:`port` (network order) is for: the exact
    /// key, else the address's all-ports VIP.
    fn vip_of(&self, addr: [u8; 16], family: u8, port: u16, proto: u8) -> Option<(VipKey, DirVip)> {
        let key = VipKey {
            addr,
            port,
            proto,
            family,
        };
        let any = VipKey { port: 0, ..key };
        self.vips
            .get(&key)
            .map(|v| (key, *v))
            .or_else(|| self.vips.get(&any).map(|v| (any, *v)))
    }

    /// The VIP of a connection-table key (whose family the key does not
    /// say: an IPv4 key has three zero words).
    fn vip_of_key(&self, key: &FlowKey) -> Option<(VipKey, DirVip, u8)> {
        let addr = words_to_bytes(&key.dst);
        let families: &[u8] = if key.dst[1..] == [0, 0, 0] {
            &[FAMILY_V4, FAMILY_V6]
        } else {
            &[FAMILY_V6]
        };
        families.iter().find_map(|&f| {
            self.vip_of(addr, f, key.dport, key.proto)
                .map(|(k, v)| (k, v, f))
        })
    }
}

/// Why an entry was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSent {
    /// The VIP is not this node's (any more), or this node is its backup.
    NotOurs,
    /// The backend id is unknown or has been reused since.
    StaleBackend,
}

fn ip_of(bytes: [u8; 16], family: u8) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        IpAddr::from(bytes)
    }
}

/// The sync entry of this node's connection-table entry, `now_ns` on the
/// data plane's clock (CLOCK_MONOTONIC).
pub fn entry_of(
    dir: &Directory,
    key: &FlowKey,
    state: &FlowState,
    event: Event,
    now_ns: u64,
) -> Result<Entry, NotSent> {
    let (vip_key, vip, family) = dir.vip_of_key(key).ok_or(NotSent::NotOurs)?;
    if vip.standby {
        return Err(NotSent::NotOurs);
    }
    let b = dir
        .by_id
        .get(&state.backend)
        .filter(|b| b.generation == state.generation && b.vip == vip_key)
        .ok_or(NotSent::StaleBackend)?;
    let age_ms = now_ns.saturating_sub(state.last_seen) / 1_000_000;
    let mut flags = 0;
    if state.flags & FLOW_F_CLOSING != 0 || event == Event::Closing {
        flags |= F_CLOSING;
    }
    if vip.nat {
        flags |= F_NAT;
    }
    Ok(Entry {
        client: ip_of(words_to_bytes(&key.src), family),
        client_port: u16::from_be(key.sport),
        vip: ip_of(words_to_bytes(&key.dst), family),
        vip_port: u16::from_be(key.dport),
        proto: key.proto,
        backend: b.addr,
        backend_port: b.port,
        flags,
        event,
        age_ms: u32::try_from(age_ms).unwrap_or(u32::MAX),
    })
}

/// What became of a received entry (counted by this name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    Done,
    /// This node has the flow, seen at least as recently: kept.
    Older,
    /// No such VIP here.
    UnknownVip,
    /// The VIP has no backend at that address and port here.
    UnknownBackend,
    /// The VIP translates here and not there, or the other way round.
    ModeMismatch,
}

/// Installs a received entry as this node's data plane would have made
/// it: the connection-table entry to this node's id of the same backend,
/// last seen `age_ms` before `now_ns`, and for NAT the reverse entry of
/// the replies. An entry this node has seen as recently is left alone.
pub fn install(
    dir: &Directory,
    table: &mut impl FlowTable,
    e: &Entry,
    now_ns: u64,
) -> Result<Installed> {
    let (vip_bytes, family) = addr_bytes(e.vip);
    let Some((vip_key, vip)) = dir.vip_of(vip_bytes, family, e.vip_port.to_be(), e.proto) else {
        return Ok(Installed::UnknownVip);
    };
    if vip.nat != (e.flags & F_NAT != 0) {
        return Ok(Installed::ModeMismatch);
    }
    let Some(&(id, generation)) = dir.by_identity.get(&(vip_key, e.backend, e.backend_port)) else {
        return Ok(Installed::UnknownBackend);
    };
    let key = FlowKey::new(e.client, e.vip, e.client_port, e.vip_port, e.proto);
    // Never 0: an entry is as old as the data plane's clock at most.
    let last_seen = now_ns
        .saturating_sub(u64::from(e.age_ms) * 1_000_000)
        .max(1);
    if let Some(local) = table.flow(&key)?
        && local.last_seen >= last_seen
    {
        return Ok(Installed::Older);
    }
    let state = FlowState {
        backend: id,
        generation,
        flags: if e.flags & F_CLOSING != 0 {
            FLOW_F_CLOSING
        } else {
            0
        },
        last_seen,
    };
    if vip.nat {
        // As the data plane derives it from the translated packet: the
        // backend answers from its port (the VIP's when it keeps it) to
        // the client's.
        let sport = if e.backend_port == 0 {
            e.vip_port
        } else {
            e.backend_port
        };
        let reply = FlowKey::new(e.backend, e.client, sport, e.client_port, e.proto);
        let back_to = VipKey {
            addr: vip_bytes,
            port: e.vip_port.to_be(),
            proto: e.proto,
            family,
        };
        // The reverse entry first: a flow entry without it would forward
        // requests whose replies nobody translates.
        table.set_reverse(&reply, &back_to)?;
    }
    table.set_flow(&key, &state)?;
    Ok(Installed::Done)
}

/// Connection tables in memory.
#[derive(Debug, Default)]
pub struct MemoryTable {
    pub flows: HashMap<FlowKey, FlowState>,
    pub reverse: HashMap<FlowKey, VipKey>,
}

impl FlowTable for MemoryTable {
    fn flow(&self, key: &FlowKey) -> Result<Option<FlowState>> {
        Ok(self.flows.get(key).copied())
    }
    fn set_flow(&mut self, key: &FlowKey, state: &FlowState) -> Result<()> {
        self.flows.insert(*key, *state);
        Ok(())
    }
    fn set_reverse(&mut self, reply: &FlowKey, vip: &VipKey) -> Result<()> {
        self.reverse.insert(*reply, *vip);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use lb_common::{IPPROTO_TCP, IPPROTO_UDP};

    use super::*;

    const NOW: u64 = 50_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// web4 (NAT, 198.18.0.100:80) with backends at .1.11 and .1.12 on
    /// 8080; web6 (DSR, all ports) with one backend. Ids differ per node.
    fn directory(base: u32, standby: bool) -> Directory {
        let mut d = Directory::default();
        let web4 = VipKey::new(ip("198.18.0.100"), 80, IPPROTO_TCP);
        let web6 = VipKey::new(ip("fd00:18::100"), 0, IPPROTO_TCP);
        d.add_vip(
            web4,
            DirVip {
                index: base,
                nat: true,
                standby,
            },
        );
        d.add_vip(
            web6,
            DirVip {
                index: base + 1,
                nat: false,
                standby,
            },
        );
        d.add_backend(web4, base + 10, 3, ip("198.18.1.11"), 8080);
        d.add_backend(web4, base + 11, 1, ip("198.18.1.12"), 8080);
        d.add_backend(web6, base + 20, 7, ip("fd00:18::11"), 0);
        d
    }

    fn state(backend: u32, generation: u16, age_ms: u64) -> FlowState {
        FlowState {
            backend,
            generation,
            flags: 0,
            last_seen: NOW - age_ms * 1_000_000,
        }
    }

    #[test]
    fn a_nat_flow_arrives_on_the_peer_with_its_reverse_entry_and_the_peers_ids() {
        let (a, b) = (directory(100, false), directory(500, true));
        let key = FlowKey::new(
            ip("198.18.0.2"),
            ip("198.18.0.100"),
            40_001,
            80,
            IPPROTO_TCP,
        );
        let e = entry_of(&a, &key, &state(111, 1, 1500), Event::New, NOW).unwrap();
        assert_eq!(e.backend, ip("198.18.1.12"));
        assert_eq!((e.backend_port, e.flags, e.age_ms), (8080, F_NAT, 1500));

        let mut t = MemoryTable::default();
        let peer_now = NOW + 7_000_000_000;
        assert_eq!(install(&b, &mut t, &e, peer_now).unwrap(), Installed::Done);
        let got = t.flows[&key];
        assert_eq!((got.backend, got.generation, got.flags), (511, 1, 0));
        assert_eq!(got.last_seen, peer_now - 1_500_000_000);
        let reply = FlowKey::new(
            ip("198.18.1.12"),
            ip("198.18.0.2"),
            8080,
            40_001,
            IPPROTO_TCP,
        );
        assert_eq!(
            t.reverse[&reply],
            VipKey::new(ip("198.18.0.100"), 80, IPPROTO_TCP)
        );
    }

    #[test]
    fn an_all_ports_dsr_flow_keeps_its_port_and_installs_no_reverse_entry() {
        let (a, b) = (directory(1, false), directory(9, false));
        let key = FlowKey::new(ip("fd00:18::2"), ip("fd00:18::100"), 5000, 443, IPPROTO_TCP);
        let mut closing = state(21, 7, 0);
        closing.flags = FLOW_F_CLOSING;
        let e = entry_of(&a, &key, &closing, Event::Closing, NOW).unwrap();
        assert_eq!((e.vip_port, e.backend_port, e.flags), (443, 0, F_CLOSING));
        let mut t = MemoryTable::default();
        assert_eq!(install(&b, &mut t, &e, NOW).unwrap(), Installed::Done);
        assert_eq!(t.flows[&key].backend, 29);
        assert_eq!(t.flows[&key].flags, FLOW_F_CLOSING);
        assert!(t.reverse.is_empty());
    }

    #[test]
    fn a_newer_local_entry_is_never_overridden_an_older_one_is() {
        let (a, b) = (directory(1, false), directory(9, false));
        let key = FlowKey::new(
            ip("198.18.0.2"),
            ip("198.18.0.100"),
            40_002,
            80,
            IPPROTO_TCP,
        );
        let e = entry_of(&a, &key, &state(11, 3, 2000), Event::Refresh, NOW).unwrap();
        let mut t = MemoryTable::default();
        let mine = state(20, 1, 500);
        t.flows.insert(key, mine);
        assert_eq!(install(&b, &mut t, &e, NOW).unwrap(), Installed::Older);
        assert_eq!(t.flows[&key], mine);
        assert!(t.reverse.is_empty());
        let stale = state(20, 1, 5000);
        t.flows.insert(key, stale);
        assert_eq!(install(&b, &mut t, &e, NOW).unwrap(), Installed::Done);
        assert_eq!(t.flows[&key].backend, 19);
    }

    #[test]
    fn what_the_receiver_cannot_map_is_refused_by_reason() {
        let (a, b) = (directory(1, false), directory(9, false));
        let key = FlowKey::new(
            ip("198.18.0.2"),
            ip("198.18.0.100"),
            40_003,
            80,
            IPPROTO_TCP,
        );
        let good = entry_of(&a, &key, &state(11, 3, 0), Event::New, NOW).unwrap();
        let mut t = MemoryTable::default();
        let cases = [
            (
                Entry {
                    vip: ip("198.18.0.101"),
                    ..good
                },
                Installed::UnknownVip,
            ),
            (
                Entry {
                    vip_port: 81,
                    ..good
                },
                Installed::UnknownVip,
            ),
            (
                Entry {
                    proto: IPPROTO_UDP,
                    ..good
                },
                Installed::UnknownVip,
            ),
            (
                Entry {
                    backend: ip("198.18.1.13"),
                    ..good
                },
                Installed::UnknownBackend,
            ),
            (
                Entry {
                    backend_port: 8081,
                    ..good
                },
                Installed::UnknownBackend,
            ),
            (Entry { flags: 0, ..good }, Installed::ModeMismatch),
        ];
        for (e, want) in cases {
            assert_eq!(install(&b, &mut t, &e, NOW).unwrap(), want, "{e:?}");
        }
        assert!(t.flows.is_empty() && t.reverse.is_empty());
    }

    #[test]
    fn a_node_sends_only_what_it_forwards_with_a_live_backend() {
        let a = directory(1, false);
        let key = FlowKey::new(
            ip("198.18.0.2"),
            ip("198.18.0.100"),
            40_004,
            80,
            IPPROTO_TCP,
        );
        assert_eq!(
            entry_of(&directory(1, true), &key, &state(11, 3, 0), Event::New, NOW),
            Err(NotSent::NotOurs)
        );
        assert_eq!(
            entry_of(&a, &key, &state(11, 4, 0), Event::New, NOW),
            Err(NotSent::StaleBackend)
        );
        // web6's backend id on web4's flow: not its VIP.
        assert_eq!(
            entry_of(&a, &key, &state(21, 7, 0), Event::New, NOW),
            Err(NotSent::StaleBackend)
        );
        let other = FlowKey::new(ip("198.18.0.2"), ip("198.18.0.99"), 1, 80, IPPROTO_TCP);
        assert_eq!(
            entry_of(&a, &other, &state(11, 3, 0), Event::New, NOW),
            Err(NotSent::NotOurs)
        );
    }
}
