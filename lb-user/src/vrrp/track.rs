//! Tracking: is the NIC's link up, is the upstream address reachable? One
//! ICMP echo per probe, through the health checker's [`Pinger`] (one raw
//! socket per address family, shared by every probe).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Nic;
use crate::config::VrrpConfig;
use crate::health::icmp::Pinger;
use crate::netlink;

/// The tracking verdict, published by the tracking task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracking {
    /// None: all fine; Some(what fails).
    pub failing: Option<String>,
}

/// Probes link and upstream address every `track_interval_ms` and publishes
/// the verdict. The first probe is published before this returns the
/// receiver, so a node with a broken cable starts in FAULT (or with the
/// penalty) instead of becoming master first.
pub async fn start_tracking(cfg: &VrrpConfig, nic: &Nic) -> watch::Receiver<Tracking> {
    let interval = Duration::from_millis(u64::from(cfg.track_interval_ms));
    let timeout = interval.min(Duration::from_secs(1));
    let (track_link, addr, fall) = (cfg.track_link, cfg.track_address, cfg.track_fall);
    let nic = nic.clone();
    let pinger = Arc::new(Pinger::default());
    // An echo that cannot be sent (no route, no neighbour) or gets no reply
    // in time is a miss. The socket is not bound to the NIC: the probe
    // follows the node's routes, as its traffic to the upstream would.
    let probe = move |nic: Nic| {
        let pinger = Arc::clone(&pinger);
        async move {
            let link_ok = !track_link || netlink::carrier(nic.index).unwrap_or(false);
            let addr_ok = match addr {
                None => true,
                Some(a) if link_ok => {
                    matches!(
                        tokio::time::timeout(timeout, pinger.ping(a)).await,
                        Ok(Ok(()))
                    )
                }
                Some(_) => false,
            };
            (link_ok, addr_ok)
        }
    };
    let name = nic.name.clone();
    let verdict = move |link_ok: bool, addr_down: bool| Tracking {
        failing: if !link_ok {
            Some(format!("link {name} down"))
        } else if addr_down {
            addr.map(|a| format!("{a} unreachable"))
        } else {
            None
        },
    };
    let (link_ok, addr_ok) = probe(nic.clone()).await;
    let mut addr_down = !addr_ok;
    let (tx, rx) = watch::channel(verdict(link_ok, addr_down));
    if !track_link && addr.is_none() {
        return rx;
    }
    tokio::spawn(async move {
        let mut misses = if addr_ok { 0 } else { fall };
        loop {
            tokio::time::sleep(interval).await;
            let (link_ok, addr_ok) = probe(nic.clone()).await;
            // Down after `fall` misses in a row, up again on one answer: a
            // lossy path must not flap mastership on every lost echo.
            misses = if addr_ok { 0 } else { misses + 1 };
            if addr_ok {
                addr_down = false;
            } else if misses >= fall {
                addr_down = true;
            }
            if tx.send(verdict(link_ok, addr_down)).is_err() {
                return;
            }
        }
    });
    rx
}
