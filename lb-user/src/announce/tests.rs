//! The announcer over addresses held in memory, with the kernel's
//! lifetimes simulated: what it adds, renews, keeps and removes.

use std::collections::BTreeMap;

use anyhow::{Result, bail};

use super::*;

/// An interface table in memory: interface `lo` (index 1) and `vips`
/// (index 7); addresses with the instant their lifetime runs out.
#[derive(Default)]
struct Memory {
    addrs: BTreeMap<(u32, IpAddr), Instant>,
    now: Option<Instant>,
    calls: usize,
    fail_hold: bool,
}

impl Memory {
    fn on(&self, ifindex: u32) -> Vec<IpAddr> {
        let now = self.now.unwrap_or_else(Instant::now);
        self.addrs
            .iter()
            .filter(|((i, _), until)| *i == ifindex && **until > now)
            .map(|((_, a), _)| *a)
            .collect()
    }
}

impl AddressTable for Memory {
    fn interface(&mut self, name: &str) -> Result<u32> {
        match name {
            "lo" => Ok(1),
            "vips" => Ok(7),
            _ => bail!("interface {name} not found"),
        }
    }
    fn held(&mut self, ifindex: u32) -> Result<Vec<IpAddr>> {
        Ok(self.on(ifindex))
    }
    fn hold(&mut self, ifindex: u32, _: &str, addr: IpAddr, lifetime_s: u32) -> Result<()> {
        self.calls += 1;
        if self.fail_hold {
            bail!("Cannot allocate memory (os error 12)");
        }
        let now = self.now.unwrap_or_else(Instant::now);
        self.addrs.insert(
            (ifindex, addr),
            now + Duration::from_secs(u64::from(lifetime_s)),
        );
        Ok(())
    }
    fn release(&mut self, ifindex: u32, addr: IpAddr) -> Result<()> {
        self.calls += 1;
        self.addrs.remove(&(ifindex, addr));
        Ok(())
    }
}

fn cfg() -> AnnounceConfig {
    AnnounceConfig {
        interface: "lo".into(),
        lifetime_s: 9,
        withdraw_wait_ms: 0,
        vips: vec!["web4".into(), "web6".into()],
    }
}

fn vips(usable4: usize, usable6: usize) -> Vec<Serving> {
    let v = |name: &str, addr: &str, usable| Serving {
        name: name.into(),
        address: addr.parse().unwrap(),
        usable,
        backends: 3,
        min_usable: 1,
        forwarding: true,
    };
    vec![
        v("web4", "198.18.0.100", usable4),
        v("web6", "fd00:18::100", usable6),
    ]
}

/// An update `ms` after `t0`, with the table's clock at the same instant.
fn at(a: &mut Announcer<Memory>, t0: Instant, ms: u64, vips: &[Serving]) {
    let now = t0 + Duration::from_millis(ms);
    a.table_mut().now = Some(now);
    a.update(vips, now);
}

fn a4() -> IpAddr {
    "198.18.0.100".parse().unwrap()
}
fn a6() -> IpAddr {
    "fd00:18::100".parse().unwrap()
}

#[test]
fn servable_vips_are_held_with_their_lifetime_and_renewed_every_third() {
    let t0 = Instant::now();
    let mut a = Announcer::start(Memory::default(), &cfg()).unwrap();
    at(&mut a, t0, 0, &vips(3, 3));
    assert_eq!(a.table_mut().on(1), [a4(), a6()]);
    assert_eq!(
        a.status("web4").unwrap().detail,
        "announced: 3 of 3 backends usable (min_usable 1)"
    );
    let calls = a.table_mut().calls;
    // Within a third of the lifetime nothing is written.
    at(&mut a, t0, 2_000, &vips(3, 3));
    assert_eq!(a.table_mut().calls, calls);
    // At a third, both are renewed: they outlive the first lifetime.
    at(&mut a, t0, 3_000, &vips(3, 3));
    assert_eq!(a.table_mut().calls, calls + 2);
    a.table_mut().now = Some(t0 + Duration::from_secs(10));
    assert_eq!(a.table_mut().on(1), [a4(), a6()]);
    // Not renewed again: gone once the renewed lifetime ran out.
    a.table_mut().now = Some(t0 + Duration::from_secs(12));
    assert!(a.table_mut().on(1).is_empty());
}

#[test]
fn a_vip_without_usable_backends_is_withdrawn_and_comes_back_alone() {
    let t0 = Instant::now();
    let mut a = Announcer::start(Memory::default(), &cfg()).unwrap();
    a.update(&vips(3, 3), t0);
    a.update(&vips(0, 3), t0 + Duration::from_millis(100));
    assert_eq!(a.table_mut().on(1), [a6()]);
    let s = a.status("web4").unwrap();
    assert!(!s.announced);
    assert_eq!(s.detail, "withdrawn: 0 of 3 backends usable (min_usable 1)");
    // web6 was not touched: no renewal is due yet.
    let calls = a.table_mut().calls;
    a.update(&vips(1, 3), t0 + Duration::from_millis(200));
    assert_eq!(a.table_mut().calls, calls + 1, "only web4 is added back");
    assert_eq!(a.table_mut().on(1), [a4(), a6()]);
}

#[test]
fn a_restart_keeps_what_the_predecessor_announced_and_drops_the_rest() {
    let mut mem = Memory::default();
    let stale: IpAddr = "198.18.0.200".parse().unwrap();
    let t0 = Instant::now();
    for addr in [a4(), a6(), stale] {
        mem.hold(1, "lo", addr, 9).unwrap();
    }
    let mut a = Announcer::start(mem, &cfg()).unwrap();
    assert_eq!(a.held().len(), 3);
    a.update(&vips(3, 0), t0);
    assert_eq!(a.table_mut().on(1), [a4()]);
}

#[test]
fn a_dead_announcer_leaves_nothing_after_the_lifetime() {
    let t0 = Instant::now();
    let mut a = Announcer::start(Memory::default(), &cfg()).unwrap();
    at(&mut a, t0, 0, &vips(3, 3));
    let mut mem = std::mem::take(a.table_mut());
    drop(a);
    mem.now = Some(t0 + Duration::from_millis(8_999));
    assert_eq!(mem.on(1).len(), 2);
    mem.now = Some(t0 + Duration::from_secs(9));
    assert!(mem.on(1).is_empty(), "the kernel removes them");
}

#[test]
fn withdraw_all_and_a_new_interface_move_everything() {
    let t0 = Instant::now();
    let mut a = Announcer::start(Memory::default(), &cfg()).unwrap();
    a.update(&vips(3, 3), t0);
    let mut moved = cfg();
    moved.interface = "vips".into();
    a.reconfigure(&moved).unwrap();
    assert!(a.table_mut().on(1).is_empty());
    a.update(&vips(3, 3), t0);
    assert_eq!(a.table_mut().on(7), [a4(), a6()]);
    assert_eq!(a.withdraw_all(&vips(3, 3)), 2);
    assert!(a.table_mut().on(7).is_empty());
    assert_eq!(
        a.status("web6").unwrap().detail,
        "withdrawn: the node is going down"
    );
    moved.interface = "nope".into();
    assert!(a.reconfigure(&moved).is_err());
}

#[test]
fn a_failed_add_is_shown_and_retried() {
    let t0 = Instant::now();
    let mut a = Announcer::start(Memory::default(), &cfg()).unwrap();
    a.table_mut().fail_hold = true;
    a.update(&vips(3, 3), t0);
    let s = a.status("web4").unwrap();
    assert!(!s.announced);
    assert!(s.detail.contains("Cannot allocate memory"), "{}", s.detail);
    a.table_mut().fail_hold = false;
    a.update(&vips(3, 3), t0 + Duration::from_millis(10));
    assert!(a.status("web4").unwrap().announced);
    assert_eq!(a.table_mut().on(1), [a4(), a6()]);
}
