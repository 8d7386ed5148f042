//! Route health injection: the VIP addresses this node can serve are
//! offered to the routing daemon (BIRD, FRR), which announces them over
//! BGP to the routers doing ECMP across the xlb nodes.
//!
//! The hand-off goes through the kernel: each announced VIP is a host
//! address on `[announce] interface` (`lo` by default) with xlb's address
//! protocol ([`crate::netlink::ANNOUNCE_PROTO`]) and a valid lifetime of
//! `lifetime_s`, which xlb renews every third of it. The daemon exports
//! the interface's addresses (BIRD: `protocol direct`; FRR: `redistribute
//! connected`); neither's configuration is read or written by xlb. If xlb
//! dies, nobody renews, the kernel removes the addresses when their
//! lifetime runs out and the daemon withdraws the routes: a node without a
//! control plane (no health checks) attracts traffic for at most
//! `lifetime_s`, while its data plane goes on forwarding what still comes.
//!
//! - `plan`: which addresses, and why (pure).
//! - [`Announcer`]: holds the addresses, over an [`AddressTable`] (the
//!   kernel's, or one in memory for tests).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::api::AnnounceStatus;
use crate::config::AnnounceConfig;
use crate::netlink;

pub mod plan;
pub use plan::{Plan, Serving, decide};

/// Where announced addresses live.
pub trait AddressTable {
    /// The index of interface `name`.
    fn interface(&mut self, name: &str) -> Result<u32>;
    /// The addresses with xlb's protocol on `ifindex`.
    fn held(&mut self, ifindex: u32) -> Result<Vec<IpAddr>>;
    /// Adds `addr` with a valid lifetime of `lifetime_s`, or renews it.
    fn hold(&mut self, ifindex: u32, ifname: &str, addr: IpAddr, lifetime_s: u32) -> Result<()>;
    /// Removes `addr`; absent is fine.
    fn release(&mut self, ifindex: u32, addr: IpAddr) -> Result<()>;
}

/// The kernel's addresses, through rtnetlink.
pub struct KernelAddresses;

impl AddressTable for KernelAddresses {
    fn interface(&mut self, name: &str) -> Result<u32> {
        Ok(netlink::interface_by_name(name)?.index)
    }
    fn held(&mut self, ifindex: u32) -> Result<Vec<IpAddr>> {
        Ok(netlink::held_addresses(ifindex)?)
    }
    fn hold(&mut self, ifindex: u32, ifname: &str, addr: IpAddr, lifetime_s: u32) -> Result<()> {
        Ok(netlink::hold_address(ifindex, ifname, addr, lifetime_s)?)
    }
    fn release(&mut self, ifindex: u32, addr: IpAddr) -> Result<()> {
        Ok(netlink::del_host_address(ifindex, addr)?)
    }
}

/// The announced addresses of this node; owns them on the interface.
pub struct Announcer<T: AddressTable> {
    table: T,
    cfg: AnnounceConfig,
    ifindex: u32,
    /// What is on the interface with xlb's protocol.
    held: BTreeSet<IpAddr>,
    /// When `held` was last renewed.
    renewed: Option<Instant>,
    plan: Plan,
    /// Addresses whose last add or renewal failed, with the error.
    failed: BTreeMap<IpAddr, String>,
}

impl<T: AddressTable> Announcer<T> {
    /// Takes over the addresses a predecessor left on the interface: the
    /// first [`Announcer::update`] keeps those still servable (renewing
    /// them) and removes the rest, so a restart does not flap a route.
    pub fn start(mut table: T, cfg: &AnnounceConfig) -> Result<Self> {
        let ifindex = table
            .interface(&cfg.interface)
            .with_context(|| format!("[announce] interface {}", cfg.interface))?;
        let held: BTreeSet<IpAddr> = table.held(ifindex)?.into_iter().collect();
        if !held.is_empty() {
            tracing::info!(interface = %cfg.interface, addresses = ?held,
                "announce: found the addresses a previous xlb announced");
        }
        Ok(Announcer {
            table,
            cfg: cfg.clone(),
            ifindex,
            held,
            renewed: None,
            plan: Plan::default(),
            failed: BTreeMap::new(),
        })
    }

    pub fn config(&self) -> &AnnounceConfig {
        &self.cfg
    }

    pub fn table_mut(&mut self) -> &mut T {
        &mut self.table
    }

    /// A reload: a new interface takes the addresses with it (removed
    /// from the old one, added to the new one by the next update).
    pub fn reconfigure(&mut self, cfg: &AnnounceConfig) -> Result<()> {
        if cfg.interface != self.cfg.interface {
            let ifindex = self
                .table
                .interface(&cfg.interface)
                .with_context(|| format!("[announce] interface {}", cfg.interface))?;
            self.release_all("[announce] interface changed");
            self.ifindex = ifindex;
            self.held = self.table.held(ifindex)?.into_iter().collect();
        }
        if cfg.lifetime_s != self.cfg.lifetime_s {
            // Every held address gets the new lifetime now.
            self.renewed = None;
        }
        self.cfg = cfg.clone();
        Ok(())
    }

    /// Makes the interface match what `vips` allow; renews the lifetimes
    /// when a third of it has passed. Failures are logged, kept for
    /// `xlb status` and retried on the next update.
    pub fn update(&mut self, vips: &[Serving], now: Instant) {
        let plan = decide(&self.cfg, vips, false);
        self.apply(plan, now);
    }

    /// Withdraws everything (`xlb down`). Returns how many were removed.
    pub fn withdraw_all(&mut self, vips: &[Serving]) -> usize {
        let n = self.held.len();
        let plan = decide(&self.cfg, vips, true);
        self.apply(plan, Instant::now());
        n - self.held.len()
    }

    fn apply(&mut self, plan: Plan, now: Instant) {
        let want: BTreeSet<IpAddr> = plan.announced().collect();
        let renew = self
            .renewed
            .is_none_or(|t| now.duration_since(t) >= self.renew_every());
        for addr in self.held.clone() {
            if !want.contains(&addr) {
                self.release(addr, &plan.withdrawn_because(addr));
            }
        }
        for &addr in &want {
            let fresh = !self.held.contains(&addr);
            if !fresh && !renew && !self.failed.contains_key(&addr) {
                continue;
            }
            let result =
                self.table
                    .hold(self.ifindex, &self.cfg.interface, addr, self.cfg.lifetime_s);
            match result {
                Ok(()) => {
                    if fresh {
                        tracing::info!(%addr, interface = %self.cfg.interface,
                            lifetime_s = self.cfg.lifetime_s, "announce: VIP address announced");
                    }
                    self.held.insert(addr);
                    self.failed.remove(&addr);
                }
                Err(e) => {
                    let e = format!("{e:#}");
                    if self.failed.get(&addr) != Some(&e) {
                        tracing::error!(%addr, error = %e, "announce: adding the VIP address failed");
                    }
                    self.failed.insert(addr, e);
                }
            }
        }
        if renew {
            self.renewed = Some(now);
        }
        self.plan = plan;
    }

    fn release(&mut self, addr: IpAddr, why: &str) {
        match self.table.release(self.ifindex, addr) {
            Ok(()) => {
                tracing::warn!(%addr, interface = %self.cfg.interface, why,
                    "announce: VIP address withdrawn");
                self.held.remove(&addr);
                self.failed.remove(&addr);
            }
            Err(e) => {
                let e = format!("{e:#}");
                if self.failed.get(&addr) != Some(&e) {
                    tracing::error!(%addr, error = %e, "announce: removing the VIP address failed");
                }
                self.failed.insert(addr, e);
            }
        }
    }

    fn release_all(&mut self, why: &str) {
        for addr in self.held.clone() {
            self.release(addr, why);
        }
    }

    /// How often the lifetimes are renewed: a third of the lifetime, so
    /// that two missed renewals in a row still leave one.
    pub fn renew_every(&self) -> Duration {
        Duration::from_secs(u64::from(self.cfg.lifetime_s)) / 3
    }

    /// The addresses held now.
    pub fn held(&self) -> &BTreeSet<IpAddr> {
        &self.held
    }

    /// What `xlb status` shows for VIP `name` (`None`: not announced by
    /// configuration).
    pub fn status(&self, name: &str) -> Option<AnnounceStatus> {
        let v = self.plan.vips.get(name)?;
        let failed = self.failed.get(&v.address).filter(|_| v.announce);
        let announced = v.announce && failed.is_none();
        let detail = match failed {
            Some(e) => format!("not announced: {e}"),
            None => v.reason.clone(),
        };
        Some(AnnounceStatus {
            announced,
            interface: self.cfg.interface.clone(),
            detail,
        })
    }
}

#[cfg(test)]
mod tests;
