//! The engine: one state machine per `[[vrrp.group]]`, fed with adverts,
//! timers and tracking verdicts; what they decide is carried out here
//! (forwarding switched, addresses assigned or withdrawn, gratuitous ARP /
//! unsolicited NA sent, adverts sent to the group or to each peer).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tokio::sync::watch;

use super::packet::Advert;
use super::publish::unix_ms;
use super::receive::{self, receive};
use super::socket::{Received, VrrpSocket};
use super::state::{Action, Event, Machine, Params, State};
use super::track::Tracking;
use super::{Effects, Nic, Placement, announce, placements, primary_addresses};
use crate::api::VrrpStatus;
use crate::config::{VrrpConfig, VrrpGroup};

pub(super) struct Group {
    pub(super) cfg: VrrpGroup,
    pub(super) machine: Machine,
    /// The addresses its master holds, by NIC.
    placements: Vec<Placement>,
    /// What the data plane was last told for this group's VIPs.
    forwarding: Option<bool>,
    pub(super) sent: u64,
    pub(super) received: u64,
    pub(super) last_at_unix_ms: u64,
}

pub struct Engine {
    cfg: VrrpConfig,
    pub(super) groups: Vec<Group>,
    v4: Option<Arc<VrrpSocket>>,
    v6: Option<Arc<VrrpSocket>>,
    epoch: Instant,
    pub(super) counters: BTreeMap<String, u64>,
    pub(super) tracking: Tracking,
    effects: Box<dyn Effects>,
    pub(super) status: Arc<Mutex<VrrpStatus>>,
    /// Per group: the control plane restarted while this node was its
    /// master, within its lease: carry on as master.
    resume: Vec<bool>,
}

/// How the engine is to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The process goes, the data plane stays (a restart, a SIGTERM): no
    /// resignation, the addresses stay. A restart within the lease resumes
    /// as master; otherwise a backup takes over after its master-down
    /// interval, as after a crash.
    Leave,
    /// The node is taken out (`xlb down`): resign (priority 0) so that a
    /// backup takes over after its skew time, and withdraw the addresses.
    Down,
}

impl Engine {
    /// Opens the sockets the groups need. Does not change anything yet.
    /// `server` is the `server_interface`, where groups' server addresses
    /// go.
    pub fn new(
        cfg: VrrpConfig,
        nic: Nic,
        server: Option<Nic>,
        effects: Box<dyn Effects>,
        status: Arc<Mutex<VrrpStatus>>,
        resume: Vec<bool>,
    ) -> Result<Self> {
        let all_vips: Vec<IpAddr> = cfg
            .groups
            .iter()
            .flat_map(|g| g.addresses.clone())
            .collect();
        let (p4, p6) = primary_addresses(nic.index, &all_vips)?;
        let need_v4 = cfg.groups.iter().any(|g| !g.is_ipv6());
        let need_v6 = cfg.groups.iter().any(VrrpGroup::is_ipv6);
        let v4 = match (need_v4, p4) {
            (false, _) => None,
            (true, None) => anyhow::bail!(
                "{} has no IPv4 address of its own (besides the VIPs) to send VRRP adverts from",
                nic.name
            ),
            (true, Some(src)) => Some(Arc::new(
                VrrpSocket::open_v4(&nic.name, nic.index, src)
                    .with_context(|| format!("opening the IPv4 VRRP socket on {}", nic.name))?,
            )),
        };
        let v6 = match (need_v6, p6) {
            (false, _) => None,
            (true, None) => anyhow::bail!(
                "{} has no IPv6 link-local address to send VRRP adverts from",
                nic.name
            ),
            (true, Some(src)) => Some(Arc::new(
                VrrpSocket::open_v6(&nic.name, nic.index, src)
                    .with_context(|| format!("opening the IPv6 VRRP socket on {}", nic.name))?,
            )),
        };
        let mut groups = Vec::with_capacity(cfg.groups.len());
        for g in &cfg.groups {
            let primary = if g.is_ipv6() {
                p6.map(IpAddr::from)
            } else {
                p4.map(IpAddr::from)
            };
            groups.push(Group {
                machine: Machine::new(Params {
                    priority: g.priority,
                    preempt: g.preempt,
                    interval_cs: g.interval_cs,
                    primary: primary.expect("checked above"),
                }),
                placements: placements(g, &nic, server.as_ref())?,
                cfg: g.clone(),
                forwarding: None,
                sent: 0,
                received: 0,
                last_at_unix_ms: 0,
            });
        }
        let counters = receive::counters();
        Ok(Self {
            cfg,
            groups,
            v4,
            v6,
            epoch: Instant::now(),
            counters,
            tracking: Tracking { failing: None },
            effects,
            status,
            resume,
        })
    }

    pub(super) fn peers(&self) -> &[IpAddr] {
        &self.cfg.peers
    }

    fn resumes(&self, i: usize) -> bool {
        self.resume.get(i).copied().unwrap_or(false)
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn tracking_event(&self) -> Event {
        let failing = self.tracking.failing.is_some();
        Event::Tracking {
            fault: failing && self.cfg.track_penalty == 0,
            penalty: if failing { self.cfg.track_penalty } else { 0 },
        }
    }

    /// Runs until `stop` says how to stop ([`Stop`]).
    pub async fn run(
        mut self,
        tracking: watch::Receiver<Tracking>,
        mut stop: watch::Receiver<Option<Stop>>,
    ) -> Result<()> {
        let mut tracking = Some(tracking);
        // Groups that resume keep forwarding and their addresses; of the
        // others, a predecessor killed while master may have left the VIPs
        // and server addresses behind.
        let mut stale = Vec::new();
        for i in 0..self.groups.len() {
            if self.resumes(i) {
                self.groups[i].forwarding = Some(true);
            } else {
                stale.extend(self.groups[i].placements.clone());
            }
        }
        self.update_forwarding();
        for p in &stale {
            if let Err(e) = self.effects.withdraw(&p.nic, &p.addrs) {
                tracing::warn!(
                    interface = %p.nic.name,
                    error = format!("{e:#}"),
                    "withdrawing stale addresses at startup"
                );
            }
        }
        if let Some(t) = &mut tracking {
            self.tracking = t.borrow_and_update().clone();
        }
        // Owned here, so that waiting on them borrows nothing of `self`.
        let (v4, v6) = (self.v4.clone(), self.v6.clone());
        let now = self.now();
        for i in 0..self.groups.len() {
            let ev = self.tracking_event();
            let mut actions = self.groups[i].machine.handle(now, ev);
            let start = if self.resumes(i) {
                Event::Resume
            } else {
                Event::Startup
            };
            actions.extend(self.groups[i].machine.handle(now, start));
            self.apply(i, actions);
        }
        self.publish();
        loop {
            let deadline = self
                .groups
                .iter()
                .filter_map(|g| g.machine.next_deadline())
                .min()
                .map(|d| tokio::time::Instant::from_std(self.epoch + d));
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let recv4 = next_packet(v4.as_deref());
            let recv6 = next_packet(v6.as_deref());
            tokio::select! {
                _ = sleep => {
                    let now = self.now();
                    for i in 0..self.groups.len() {
                        let actions = self.groups[i].machine.poll(now);
                        self.apply(i, actions);
                    }
                }
                r = recv4 => self.received(r, false),
                r = recv6 => self.received(r, true),
                t = next_verdict(&mut tracking) => {
                    let Some(t) = t else {
                        // The tracker is gone: keep the last verdict.
                        tracking = None;
                        continue;
                    };
                    if t != self.tracking {
                        match &t.failing {
                            Some(what) => tracing::warn!(failing = %what, "VRRP tracking failed"),
                            None => tracing::info!("VRRP tracking recovered"),
                        }
                        self.tracking = t;
                        let now = self.now();
                        for i in 0..self.groups.len() {
                            let ev = self.tracking_event();
                            let actions = self.groups[i].machine.handle(now, ev);
                            self.apply(i, actions);
                        }
                    }
                }
                _ = stop.changed() => break,
            }
            self.publish();
        }
        if *stop.borrow() == Some(Stop::Leave) {
            tracing::info!("VRRP stops without resigning: the VIPs stay with the data plane");
            return Ok(());
        }
        let now = self.now();
        for i in 0..self.groups.len() {
            let actions = self.groups[i].machine.handle(now, Event::Shutdown);
            self.apply(i, actions);
        }
        self.publish();
        Ok(())
    }

    fn received(&mut self, r: std::io::Result<Received>, v6: bool) {
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, v6, "VRRP receive failed");
                return;
            }
        };
        let sock = if v6 { &self.v6 } else { &self.v4 };
        let own = sock.as_ref().map(|s| s.source());
        let groups: Vec<&VrrpGroup> = self.groups.iter().map(|g| &g.cfg).collect();
        let Some((i, event)) = receive(&r, v6, own, &self.cfg.peers, &groups, &mut self.counters)
        else {
            return;
        };
        let now = self.now();
        self.groups[i].received += 1;
        let actions = self.groups[i].machine.handle(now, event);
        self.apply(i, actions);
    }

    fn apply(&mut self, i: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::SendAdvert { priority } => self.send_advert(i, priority),
                Action::Transition { from, to, reason } => {
                    let g = &mut self.groups[i];
                    g.last_at_unix_ms = unix_ms();
                    tracing::info!(
                        vrid = g.cfg.vrid,
                        from = from.as_str(),
                        to = to.as_str(),
                        %reason,
                        priority = g.machine.priority(),
                        "VRRP transition"
                    );
                    let placements = g.placements.clone();
                    if to == State::Master {
                        self.update_forwarding();
                        for p in &placements {
                            if let Err(e) = self.effects.assign(&p.nic, &p.addrs) {
                                tracing::error!(interface = %p.nic.name,
                                    error = format!("{e:#}"), "assigning addresses");
                            }
                        }
                        for p in &placements {
                            self.announce(p);
                        }
                    } else if from == State::Master || to == State::Init {
                        // Stop forwarding before the addresses go.
                        self.update_forwarding();
                        for p in &placements {
                            if let Err(e) = self.effects.withdraw(&p.nic, &p.addrs) {
                                tracing::error!(interface = %p.nic.name,
                                    error = format!("{e:#}"), "withdrawing addresses");
                            }
                        }
                    }
                }
            }
        }
    }

    /// Each group's VIPs are forwarded exactly while the group is master
    /// here: a node that is master of one group and backup of another
    /// forwards only the first group's VIPs.
    fn update_forwarding(&mut self) {
        for g in &mut self.groups {
            let on = g.machine.state() == State::Master;
            if g.forwarding == Some(on) {
                continue;
            }
            match self.effects.set_forwarding(&g.cfg.vips, on) {
                Ok(()) => {
                    tracing::info!(
                        vrid = g.cfg.vrid,
                        forwarding = on,
                        "VIP forwarding switched"
                    );
                    g.forwarding = Some(on);
                }
                Err(e) => tracing::error!(error = format!("{e:#}"), "switching forwarding"),
            }
        }
    }

    fn send_advert(&mut self, i: usize, priority: u8) {
        let g = &mut self.groups[i];
        let sock = if g.cfg.is_ipv6() { &self.v6 } else { &self.v4 };
        let Some(sock) = sock else { return };
        let advert = Advert {
            vrid: g.cfg.vrid,
            priority,
            interval_cs: g.cfg.interval_cs,
            addresses: g.cfg.addresses.clone(),
        };
        let mut sent = false;
        for to in destinations(&self.cfg.peers, sock.source(), sock.group()) {
            // The checksum covers the destination: one message per peer.
            let bytes = advert.encode(sock.source(), to);
            match sock.send(&bytes, to) {
                Ok(()) => sent = true,
                Err(e) => {
                    tracing::warn!(vrid = g.cfg.vrid, %to, error = %e, "sending VRRP advert");
                }
            }
        }
        if sent {
            g.sent += 1;
        }
    }

    /// Gratuitous ARP / unsolicited NA for `p`'s addresses out of its NIC,
    /// `garp_repeat` times, in the background.
    fn announce(&self, p: &Placement) {
        let addrs = &p.addrs;
        let v4: Vec<Ipv4Addr> = addrs
            .iter()
            .filter_map(|a| match a {
                IpAddr::V4(v) => Some(*v),
                _ => None,
            })
            .collect();
        let v6: Vec<Ipv6Addr> = addrs
            .iter()
            .filter_map(|a| match a {
                IpAddr::V6(v) => Some(*v),
                _ => None,
            })
            .collect();
        let nic = p.nic.clone();
        let repeat = self.cfg.garp_repeat;
        let gap = Duration::from_millis(u64::from(self.cfg.garp_interval_ms));
        tokio::task::spawn_blocking(move || {
            for n in 0..repeat {
                if n > 0 {
                    std::thread::sleep(gap);
                }
                if let Err(e) = announce::send_garps(&nic.name, nic.mac, &v4) {
                    tracing::warn!(error = %e, "sending gratuitous ARP");
                }
                if let Err(e) = announce::send_nas(&nic.name, nic.index, nic.mac, &v6) {
                    tracing::warn!(error = %e, "sending unsolicited neighbour advertisement");
                }
            }
        });
    }
}

async fn next_packet(sock: Option<&VrrpSocket>) -> std::io::Result<Received> {
    match sock {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_verdict(rx: &mut Option<watch::Receiver<Tracking>>) -> Option<Tracking> {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow_and_update().clone()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// Where an advert from `source` goes: without peers, to `group`; with
/// peers, to each peer of `source`'s family but this node itself (so that
/// every node can carry the same list).
fn destinations(peers: &[IpAddr], source: IpAddr, group: IpAddr) -> Vec<IpAddr> {
    if peers.is_empty() {
        return vec![group];
    }
    peers
        .iter()
        .copied()
        .filter(|p| p.is_ipv6() == source.is_ipv6() && *p != source)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vrrp::packet::{GROUP_V4, GROUP_V6};

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn adverts_go_to_the_group_or_to_each_peer_of_the_family() {
        let (src4, src6) = ("198.18.0.1".parse().unwrap(), "fe80::1".parse().unwrap());
        assert_eq!(
            destinations(&[], src4, GROUP_V4.into()),
            vec![IpAddr::from(GROUP_V4)]
        );
        // One list on every node: the node's own address is skipped.
        let peers = ips(&[
            "198.18.0.1",
            "198.18.0.3",
            "fe80::1",
            "fe80::3",
            "198.18.0.4",
        ]);
        assert_eq!(
            destinations(&peers, src4, GROUP_V4.into()),
            ips(&["198.18.0.3", "198.18.0.4"])
        );
        assert_eq!(
            destinations(&peers, src6, GROUP_V6.into()),
            ips(&["fe80::3"])
        );
    }
}
