//! What connection sync asks of the controller: this node's VIPs and
//! backend ids by the identities nodes share (VIP key, backend address
//! and port), retiring backends included, since their flows go on.

use lb_common::MODE_NAT;

use super::Controller;
use crate::{
    maps::MapStore,
    sync::{DirVip, Directory},
};

impl<M: MapStore> Controller<M> {
    pub fn sync_directory(&self) -> Directory {
        let mut d = Directory::default();
        for (key, vip) in &self.vips {
            let Some(meta) = vip.published else { continue };
            d.add_vip(
                *key,
                DirVip {
                    index: meta.index,
                    nat: meta.mode == MODE_NAT,
                    standby: self.standby.contains(vip.name()),
                },
            );
            let retiring = self.retiring.of(key);
            for b in vip.backends.iter().chain(retiring) {
                d.add_backend(*key, b.id, b.generation, b.config.address, b.config.port);
            }
        }
        d
    }
}
