//! VRRP's per-VIP switch: a VIP whose group this node does not master is
//! marked standby in its `VipMeta`, and the XDP program leaves its traffic
//! to the kernel. One update of the VIP's hash-map entry flips it.

use anyhow::Result;
use lb_common::VIP_F_STANDBY;

use super::Controller;

impl Controller {
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
        for (key, slot) in &self.vips {
            if !names.contains(&slot.config.name) {
                continue;
            }
            let mut meta = self.dp.maps.vip(key)?;
            meta.flags &= !VIP_F_STANDBY;
            if standby {
                meta.flags |= VIP_F_STANDBY;
            }
            self.dp.maps.set_vip(key, &meta)?;
            tracing::info!(vip = %slot.config.name, forwarding = !standby, "VIP forwarding switched");
        }
        Ok(())
    }

    /// Whether this node forwards the VIP named `name`.
    pub fn forwards(&self, name: &str) -> bool {
        !self.standby.contains(name)
    }
}
