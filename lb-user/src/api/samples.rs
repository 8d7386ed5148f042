//! Status parts the api's tests share.

use super::status::*;

/// A VRRP section with every field set: VRID 51, master, one transition.
pub(super) fn vrrp_master() -> VrrpStatus {
    VrrpStatus {
        groups: vec![VrrpGroupStatus {
            vrid: 51,
            family: "ipv4".into(),
            state: "master".into(),
            priority: 150,
            configured_priority: 150,
            preempt: true,
            advert_interval_cs: 20,
            master: Some("198.18.0.1".into()),
            vips: vec!["web4".into()],
            server_addresses: vec!["198.18.1.1".into()],
            adverts_sent: 10,
            adverts_received: 2,
            last_transition: Some(VrrpTransition {
                from: "backup".into(),
                to: "master".into(),
                reason: "master down timer expired".into(),
                at_unix_ms: 1,
                ago_ms: 1500,
            }),
        }],
        tracking: "ok".into(),
        counters: [("bad_ttl".to_string(), 1)].into_iter().collect(),
        peers: vec!["198.18.0.3".into(), "fe80::3".into()],
    }
}
