//! Stand-ins for what the controller asks the kernel, for the root suites
//! that drive `Controller` against the real XDP program without namespaces.

use std::{collections::HashMap, net::IpAddr};

/// A neighbour table the test controls; records the probes it is asked for.
#[derive(Debug, Default)]
pub struct FakeNeighbours {
    pub table: HashMap<IpAddr, [u8; 6]>,
    pub probed: Vec<IpAddr>,
}

impl lb_user::control::Neighbours for FakeNeighbours {
    fn lookup(&mut self) -> anyhow::Result<HashMap<IpAddr, [u8; 6]>> {
        Ok(self.table.clone())
    }
    fn probe(&mut self, addr: IpAddr) -> anyhow::Result<()> {
        self.probed.push(addr);
        Ok(())
    }
}
