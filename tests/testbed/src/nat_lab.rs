//! The two-NIC namespace the NAT golden packets and the data-plane property
//! test run the real XDP program in. `bpf_fib_lookup` needs real routes and
//! neighbours, so [`in_lab`] runs its closure on a thread in a fresh
//! anonymous network namespace (gone when the thread ends) with two veth
//! ends standing in for the client-side (`c0`, [`LB_MAC`], 198.18.0.1/24,
//! fd00:18::1/64) and server-side (`s0`, [`S0_MAC`], 198.18.1.1/24,
//! fd00:19::1/64) NICs, the static neighbours the caller names, and
//! forwarding on. Nothing is attached: frames go through the program with
//! BPF_PROG_TEST_RUN as if received on `c0` or `s0`.

use std::{net::IpAddr, process::Command};

use lb_user::netlink;

use crate::{
    frames::{LB_MAC, Mac},
    lb::Lb,
};

/// The server-side NIC's MAC (the client side's is [`LB_MAC`]).
pub const S0_MAC: Mac = [0x02, 0, 0, 0, 0, 0x03];

/// Where a frame arrives, or where a neighbour lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Nic {
    /// Client side: 198.18.0.0/24, fd00:18::/64.
    C0,
    /// Server side: 198.18.1.0/24, fd00:19::/64.
    S0,
}

/// A permanent neighbour entry: `addr` has `mac`, behind `nic`.
#[derive(Clone, Copy, Debug)]
pub struct Neighbour {
    pub addr: IpAddr,
    pub mac: Mac,
    pub nic: Nic,
}

/// The program loaded in the lab, with a controller over its maps (not
/// yet given a configuration), and the two NICs.
pub struct Lab {
    pub lb: Lb,
    pub c0: netlink::Interface,
    pub s0: netlink::Interface,
}

impl Lab {
    /// The interface index of `nic`.
    pub fn ifindex(&self, nic: Nic) -> u32 {
        match nic {
            Nic::C0 => self.c0.index,
            Nic::S0 => self.s0.index,
        }
    }

    /// Runs `input` through the program as if received on `nic`.
    pub fn run_on(&self, nic: Nic, input: &[u8]) -> (u32, Vec<u8>) {
        self.lb.run_on(self.ifindex(nic), input)
    }
}

fn ip(args: &str) {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sysctl_on(path: &str) {
    std::fs::write(path, "1").unwrap_or_else(|e| panic!("{path}: {e}"));
}

fn mac_text(m: Mac) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// Runs `f` in a private network namespace set up as described above,
/// with `flows` entries in the connection tables (`None`: the default).
/// Returns `false` (and runs nothing) if the test cannot run (see
/// [`crate::require_root`]).
pub fn in_lab(
    test: &str,
    neighbours: &[Neighbour],
    flows: Option<u32>,
    f: impl FnOnce(&mut Lab) + Send,
) -> bool {
    if !crate::require_root(test) {
        return false;
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            ip("link set lo up");
            ip(&format!(
                "link add c0 address {} type veth peer name c0p",
                mac_text(LB_MAC)
            ));
            ip(&format!(
                "link add s0 address {} type veth peer name s0p",
                mac_text(S0_MAC)
            ));
            for l in ["c0", "c0p", "s0", "s0p"] {
                ip(&format!("link set {l} up"));
            }
            ip("addr add 198.18.0.1/24 dev c0");
            ip("addr add fd00:18::1/64 dev c0 nodad");
            ip("addr add 198.18.1.1/24 dev s0");
            ip("addr add fd00:19::1/64 dev s0 nodad");
            for n in neighbours {
                let dev = match n.nic {
                    Nic::C0 => "c0",
                    Nic::S0 => "s0",
                };
                ip(&format!(
                    "neigh add {} lladdr {} dev {dev} nud permanent",
                    n.addr,
                    mac_text(n.mac)
                ));
            }
            // /proc/sys/net shows the namespace of the thread that opens it.
            sysctl_on("/proc/sys/net/ipv4/ip_forward");
            sysctl_on("/proc/sys/net/ipv6/conf/all/forwarding");

            let c0 = netlink::interface_by_name("c0").unwrap();
            let s0 = netlink::interface_by_name("s0").unwrap();
            assert_eq!((c0.mac, s0.mac), (LB_MAC, crate::nat_lab::S0_MAC));
            let mut lb = match flows {
                Some(n) => Lb::load_sized("c0", c0.mac, n),
                None => Lb::load_on("c0", c0.mac),
            };
            lb.maps_mut().add_tx_port(c0.index).unwrap();
            lb.maps_mut().add_tx_port(s0.index).unwrap();
            f(&mut Lab { lb, c0, s0 });
        });
    });
    true
}
