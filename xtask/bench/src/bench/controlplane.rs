//! Control-plane figures: how long a 65,537-slot Maglev table takes to
//! build (and to install into the kernel as a fresh ring), and what share
//! of flows changes backend when one of N backends leaves, against the
//! ideal 1/N (only the leaving backend's flows move). A last row repeats
//! N = 1,000 with the largest table, which docs/config.md recommends for
//! VIPs with that many backends.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use anyhow::Result;
use lb_common::{DEFAULT_RING_SIZE, FlowKey, IPPROTO_TCP, MAX_RING_SIZE, flow_hash};
use lb_user::{dataplane::Dataplane, maglev, maps::MapStore};

use super::median;

/// (backends, table slots).
pub const SIZES: [(u32, u32); 4] = [
    (10, DEFAULT_RING_SIZE),
    (100, DEFAULT_RING_SIZE),
    (1_000, DEFAULT_RING_SIZE),
    (1_000, MAX_RING_SIZE),
];

pub struct Row {
    pub backends: u32,
    pub slots: u32,
    /// Median `build_table` time, ms.
    pub build_ms: f64,
    /// Median time to create, fill and publish the ring in the kernel, ms.
    pub install_ms: f64,
    pub flows: usize,
    /// Share of flows whose backend changed when one backend left.
    pub moved: f64,
    /// 1/N.
    pub ideal: f64,
}

pub(super) fn members(n: u32) -> Vec<maglev::Member> {
    (0..n)
        .map(|i| maglev::Member {
            identity: maglev::identity(
                IpAddr::V4(Ipv4Addr::new(198, 18, 16 + (i >> 8) as u8, i as u8)),
                80,
            ),
            weight: 1,
        })
        .collect()
}

/// `count` pseudo-random client 5-tuples to one VIP (a fixed LCG, so
/// every run hashes the same flows).
pub(super) fn flow_hashes(count: usize) -> Vec<u32> {
    let mut x: u64 = 0x786c_6220_6265_6e63;
    let vip = u32::from_ne_bytes([198, 18, 0, 100]);
    (0..count)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let r = x >> 16;
            let client = Ipv4Addr::new(198, 18, (r >> 40) as u8 | 0x80, (r >> 32) as u8);
            flow_hash(&FlowKey {
                src: [u32::from_ne_bytes(client.octets()), 0, 0, 0],
                dst: [vip, 0, 0, 0],
                sport: (1024 + (r as u16 % 64_000)).to_be(),
                dport: 80u16.to_be(),
                proto: IPPROTO_TCP,
                _pad: [0; 3],
            })
        })
        .collect()
}

/// Share of `hashes` that map to a different identity in `after` than in
/// `before`.
pub(super) fn moved_share(
    hashes: &[u32],
    before: (&[u32], &[maglev::Member]),
    after: (&[u32], &[maglev::Member]),
) -> f64 {
    let m = before.0.len() as u32;
    let owner = |(table, members): (&[u32], &[maglev::Member]), h: u32| {
        members[table[(h % m) as usize] as usize].identity
    };
    let moved = hashes
        .iter()
        .filter(|&&h| owner(before, h) != owner(after, h))
        .count();
    moved as f64 / hashes.len() as f64
}

pub struct Results {
    pub rows: Vec<Row>,
    /// Median time to install an empty ring: map creation plus the
    /// publishing update, whose RCU wait dominates.
    pub empty_ring_ms: f64,
}

pub fn run(quick: bool) -> Result<Results> {
    let (trials, flows) = if quick { (3, 200_000) } else { (9, 1_000_000) };
    let hashes = flow_hashes(flows);
    // The program must stay loaded while its maps are used.
    let (_dp, mut maps) = Dataplane::load()?;
    let mut rows = Vec::new();
    for (n, slots) in SIZES {
        let all = members(n);
        let mut build = Vec::with_capacity(trials);
        let mut install = Vec::with_capacity(trials);
        let mut table = Vec::new();
        for _ in 0..trials {
            let t = Instant::now();
            table = maglev::build_table(&all, slots);
            build.push(t.elapsed().as_secs_f64() * 1e3);
            let ids: Vec<u32> = table.iter().map(|&i| i + 1).collect();
            let t = Instant::now();
            maps.install_ring(0, &ids)?;
            install.push(t.elapsed().as_secs_f64() * 1e3);
        }
        // The middle backend leaves.
        let mut rest = all.clone();
        rest.remove(n as usize / 2);
        let after = maglev::build_table(&rest, slots);
        let moved = moved_share(&hashes, (&table, &all), (&after, &rest));
        let row = Row {
            backends: n,
            slots,
            build_ms: median(&mut build),
            install_ms: median(&mut install),
            flows,
            moved,
            ideal: 1.0 / f64::from(n),
        };
        super::say(&format!(
            "  {n:>5} backends, {slots:>7} slots: build {:.1} ms, install {:.1} ms, moved {:.3} % (ideal {:.3} %)",
            row.build_ms,
            row.install_ms,
            row.moved * 100.0,
            row.ideal * 100.0
        ));
        rows.push(row);
    }
    let mut empty = Vec::with_capacity(trials);
    for _ in 0..trials {
        let t = Instant::now();
        maps.install_ring(1, &[])?;
        empty.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let empty_ring_ms = median(&mut empty);
    super::say(&format!("  empty ring install {empty_ring_ms:.1} ms"));
    Ok(Results {
        rows,
        empty_ring_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_one_of_ten_moves_about_a_tenth_of_flows() {
        let hashes = flow_hashes(20_000);
        let all = members(10);
        let mut rest = all.clone();
        rest.remove(5);
        let before = maglev::build_table(&all, DEFAULT_RING_SIZE);
        let after = maglev::build_table(&rest, DEFAULT_RING_SIZE);
        let moved = moved_share(&hashes, (&before, &all), (&after, &rest));
        assert!((0.09..0.13).contains(&moved), "moved {moved}");
        assert_eq!(moved_share(&hashes, (&before, &all), (&before, &all)), 0.0);
    }
}
