//! VRRP's per-VIP switch: a VIP whose group this node does not master is
//! marked standby in its `VipMeta`, and the XDP program leaves its traffic
//! to the kernel. One update of the VIP's hash-map entry flips it. And what
//! route health injection asks: which VIPs this node serves.

use anyhow::Result;
use lb_common::VIP_F_STANDBY;

use super::Controller;
use crate::announce::Serving;
use crate::maps::MapStore;

impl<M: MapStore> Controller<M> {
    /// Marks the VIPs named `names` standby (`true`) or forwarding.
    /// Names without a VIP are remembered, for a VIP added later.
    pub fn set_standby(&mut self, names: &[String], standby: bool) -> Result<()> {
        for name in names {
            if standby {
                self.standby.insert(name.clone());
            } else {
                self.standby.remove(name);
            }
        }
        let mut first_error = None;
        for vip in self.vips.values_mut() {
            if !names.iter().any(|n| n == vip.name()) {
                continue;
            }
            // A VIP not published yet gets the flag with its first sync.
            if vip.published.is_none() {
                continue;
            }
            match vip.publish(&mut self.maps, standby) {
                Ok(()) => tracing::info!(vip = %vip.name(), forwarding = !standby,
                    "VIP forwarding switched"),
                Err(e) => {
                    vip.synced = false;
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether the data plane forwards VIP `key` now (`None`: not
    /// published). A restarted control plane asks, before its first
    /// `apply`, what its predecessor left.
    pub fn published_forwarding(&self, key: &lb_common::VipKey) -> Option<bool> {
        let meta = self.vips.get(key)?.published?;
        Some(meta.flags & VIP_F_STANDBY == 0)
    }

    /// Whether this node forwards the VIP named `name`.
    pub fn forwards(&self, name: &str) -> bool {
        !self.standby.contains(name)
    }

    /// What route health injection needs to know of every configured VIP:
    /// whether the data plane forwards it and how many backends its ring
    /// has now.
    pub fn serving(&self) -> Vec<Serving> {
        let on = self
            .lb_config
            .is_some_and(|c| c.flags & lb_common::LB_F_FORWARDING != 0);
        self.vips
            .values()
            .filter(|v| !v.removing)
            .map(|v| Serving {
                name: v.name().to_owned(),
                address: v.settings.address,
                usable: v.usable_backends(),
                backends: v.backends.len(),
                min_usable: v.settings.min_usable,
                forwarding: on && v.published.is_some() && v.synced && self.forwards(v.name()),
            })
            .collect()
    }
}
