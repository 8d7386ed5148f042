//! A node with thousands of VIPs, for the scale test and the scale
//! benchmark: one namespace, one veth pair, backends that exist only as
//! permanent neighbour entries, and the config text written directly (the
//! typed builder's serializer takes minutes for 10,000 VIPs).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::netns::NetNs;

/// VIP `i`'s address (one address per VIP, port 80).
pub fn vip_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// Backend `b`'s address.
pub fn backend_addr(b: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, b as u8 + 1)
}

/// Backend `b`'s MAC (its permanent neighbour entry).
pub fn backend_mac(b: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x01, b as u8 + 1]
}

/// Permanent neighbour entries on `ifname` for `backends`, so that xlb
/// resolves them without anybody answering.
pub fn add_backends(
    ns: &NetNs,
    ifname: &str,
    backends: impl IntoIterator<Item = usize>,
) -> anyhow::Result<()> {
    for b in backends {
        let mac = backend_mac(b).map(|o| format!("{o:02x}")).join(":");
        let addr = backend_addr(b).to_string();
        ns.ip([
            "neigh",
            "add",
            &addr,
            "lladdr",
            &mac,
            "dev",
            ifname,
            "nud",
            "permanent",
        ])?;
    }
    Ok(())
}

/// The config of `vips` DSR VIPs on `ifname` (generic XDP), VIP `i` over
/// the backends `backends_of(i)`, with `ring` slots if given.
pub fn config(
    (ifname, state, socket): (&str, &Path, &Path),
    vips: usize,
    ring: Option<u32>,
    backends_of: impl Fn(usize) -> Vec<usize>,
) -> String {
    let mut text = format!(
        "interface = {ifname:?}\nxdp_mode = \"generic\"\nstate_dir = {:?}\n\
         control_socket = {:?}\n",
        state.display().to_string(),
        socket.display().to_string()
    );
    for i in 0..vips {
        let _ = writeln!(
            text,
            "[[vip]]\nname = \"v{i}\"\naddress = \"{}\"\nport = 80",
            vip_addr(i)
        );
        if let Some(ring) = ring {
            let _ = writeln!(text, "ring_size = {ring}");
        }
        for b in backends_of(i) {
            let _ = writeln!(text, "[[vip.backend]]\naddress = \"{}\"", backend_addr(b));
        }
    }
    text
}
