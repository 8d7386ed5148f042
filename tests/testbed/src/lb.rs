//! The real XDP program, loaded but not attached, with a controller over
//! its maps: the root suites drive it with BPF_PROG_TEST_RUN, without
//! namespaces. It dereferences to its [`Controller`].

use std::ops::{Deref, DerefMut};

use aya::programs::Xdp;
use lb_user::{
    control::{Controller, Node},
    dataplane::Dataplane,
    maps::Maps,
};

use crate::frames::{LB_MAC, run_xdp};

pub struct Lb {
    // The controller (and its maps) first: fields drop in order.
    controller: Controller<Maps>,
    dp: Dataplane,
}

impl Lb {
    /// Loads the program with the default connection-table size; the
    /// controller's node has [`LB_MAC`] on "eth0".
    pub fn load() -> Lb {
        Self::load_on("eth0", LB_MAC)
    }

    /// Loads the program; the controller's node has `mac` on `interface`.
    pub fn load_on(interface: &str, mac: [u8; 6]) -> Lb {
        Self::load_sized(interface, mac, lb_common::DEFAULT_FLOW_TABLE_SIZE)
    }

    /// As [`Lb::load_on`], with `flows` entries in the connection tables.
    pub fn load_sized(interface: &str, mac: [u8; 6], flows: u32) -> Lb {
        let (dp, maps) = Dataplane::load_with_flow_table(flows).expect("load the XDP program");
        let node = Node {
            interface: interface.into(),
            mac,
        };
        Lb {
            controller: Controller::new(maps, node),
            dp,
        }
    }

    pub fn program(&self) -> &Xdp {
        self.dp.program()
    }

    /// Runs one frame through the program as if received on the loopback
    /// interface: its verdict and output frame.
    pub fn run(&self, input: &[u8]) -> (u32, Vec<u8>) {
        run_xdp(self.program(), input, None)
    }

    /// As [`Lb::run`], as if received on interface `ifindex`.
    pub fn run_on(&self, ifindex: u32, input: &[u8]) -> (u32, Vec<u8>) {
        run_xdp(self.program(), input, Some(ifindex))
    }
}

impl Deref for Lb {
    type Target = Controller<Maps>;
    fn deref(&self) -> &Controller<Maps> {
        &self.controller
    }
}

impl DerefMut for Lb {
    fn deref_mut(&mut self) -> &mut Controller<Maps> {
        &mut self.controller
    }
}
