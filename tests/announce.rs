//! Root test of `lb_user::vrrp::announce`: gratuitous ARP frames really
//! leave the named interface, byte for byte as `garp_frame` builds them.
//!
//! The test runs on a thread that called `unshare(CLONE_NEWNET)`: its
//! anonymous namespace, with the veth pairs made in it, disappears with the
//! thread, so nothing needs cleaning up and the host's links are never seen.
//!
//!   garp0 <--veth--> garp0p   (sends / captures)
//!   other0 <--veth--> other0p (must see nothing)

use std::fs;
use std::io::Read as _;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use lb_user::vrrp::announce::{garp_frame, send_garps};
use nix::sched::{CloneFlags, unshare};
use socket2::Socket;

const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const ETH_P_ARP: u16 = 0x0806;

/// Runs `ip ARGS` in the calling thread's namespace, which must not be the
/// process's original one.
fn ip(args: &str) {
    let own = fs::read_link("/proc/thread-self/ns/net").expect("readlink thread-self");
    let original = fs::read_link("/proc/self/ns/net").expect("readlink self");
    assert_ne!(
        own, original,
        "refusing to run `ip {args}` outside a test namespace"
    );
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip {args}`: {e}"));
    assert!(
        out.status.success(),
        "`ip {args}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A packet socket receiving the ARP frames that arrive on `ifname`.
fn arp_capture(ifname: &str) -> Socket {
    let s = xlb_testbed::inject::packet_socket(ifname, Some(ETH_P_ARP)).expect("the capture");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    s
}

/// Every frame `s` receives until `quiet` passes without one.
fn drain(mut s: &Socket, quiet: Duration) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut last = Instant::now();
    let mut buf = [0u8; 2048];
    while last.elapsed() < quiet {
        match s.read(&mut buf) {
            Ok(n) => {
                frames.push(buf[..n].to_vec());
                last = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("capture: {e}"),
        }
    }
    frames
}

#[test]
fn garps_leave_the_named_interface_byte_for_byte() {
    if !xlb_testbed::netns::require_root("garps_leave_the_named_interface_byte_for_byte") {
        return;
    }
    std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        ip("link add garp0 type veth peer name garp0p");
        ip("link add other0 type veth peer name other0p");
        for l in ["garp0", "garp0p", "other0", "other0p"] {
            ip(&format!("link set {l} up"));
        }
        let peer = arp_capture("garp0p");
        let other = arp_capture("other0p");
        let addrs = [
            Ipv4Addr::new(198, 18, 0, 100),
            Ipv4Addr::new(198, 18, 0, 101),
        ];

        send_garps("garp0", MAC, &addrs).expect("send_garps");

        let want: Vec<Vec<u8>> = addrs.iter().map(|a| garp_frame(MAC, *a)).collect();
        assert_eq!(drain(&peer, Duration::from_millis(500)), want);
        assert_eq!(
            drain(&other, Duration::from_millis(100)),
            Vec::<Vec<u8>>::new()
        );

        let e = send_garps("nonesuch0", MAC, &addrs).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p));
}
