//! The ICMP health checker's shared raw sockets against the real kernel:
//! echo requests to loopback get their replies. Needs root (CAP_NET_RAW).

use std::time::Duration;

use lb_user::health::icmp::Pinger;

#[tokio::test]
async fn pings_loopback_through_the_shared_sockets() {
    if !xlb_testbed::require_root("pings_loopback_through_the_shared_sockets") {
        return;
    }
    let p = Pinger::default();
    for addr in ["127.0.0.1", "::1"] {
        for _ in 0..3 {
            tokio::time::timeout(Duration::from_secs(2), p.ping(addr.parse().unwrap()))
                .await
                .unwrap_or_else(|_| panic!("no echo reply from {addr} within 2 s"))
                .unwrap_or_else(|e| panic!("ping {addr}: {e}"));
        }
    }
}
