//! The VRRP settings the two-node tests share (`e2e_vrrp`, `e2e_sync`):
//! a fast advert interval, a master and a backup priority, the two
//! groups keepalived's interop tests also run, and the failover bound
//! those settings promise.

use std::time::Duration;

use crate::config::{Vrrp, VrrpGroup};

/// Advert interval, centiseconds.
pub const INTERVAL_CS: u16 = 20;
pub const MASTER_PRIORITY: u8 = 150;
pub const BACKUP_PRIORITY: u8 = 100;

/// The bound for a backup to take over from a master that fell silent:
/// the backup's master-down interval (3 × advert interval + its skew),
/// and 1 s.
pub fn failover_bound() -> Duration {
    let down_cs = lb_user::vrrp::state::master_down_cs(BACKUP_PRIORITY, INTERVAL_CS);
    Duration::from_millis(u64::from(down_cs) * 10 + 1000)
}

/// `[vrrp]` at `priority`: VRID 51 with web4 and 52 with web6, as
/// keepalived's two instances in the interop tests.
pub fn vrrp_config(priority: u8) -> Vrrp {
    let group = |vrid, vip| {
        VrrpGroup::new(vrid, &[vip])
            .priority(priority)
            .interval_cs(INTERVAL_CS)
    };
    Vrrp {
        garp_repeat: Some(3),
        garp_interval_ms: Some(50),
        groups: vec![group(51, "web4"), group(52, "web6")],
        ..Vrrp::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failover_bound_is_three_intervals_and_the_skew_plus_a_second() {
        // 3 × 200 ms + (156 × 20 / 256 = 12 cs) + 1 s.
        assert_eq!(failover_bound(), Duration::from_millis(600 + 120 + 1000));
    }
}
