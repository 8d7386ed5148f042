//! Backends at runtime (`xlb backend add|remove`): how long an add takes
//! from the command to the new backend in the kernel's ring, and how many
//! ring slots and flows move per add and per remove against the ideal.
//!
//! The timing runs the real `xlb run` in the DSR topology: the file names
//! backends 1..=3 of VIP web4, backend 4 is added with the CLI (a process
//! through the control socket, as an orchestrator would), and the pinned
//! ring (`xlb_testbed::pinned::Ring`) is read in a tight loop until one of
//! its first slots names backend 4 (with a quarter of the slots, 64 slots
//! without it happen by chance with probability 0.75^64 ≈ 1e-8). Between
//! adds the backend is removed and the ring read until it is gone. The
//! first add is timed apart: the kernel has never resolved that backend's
//! MAC, and a DSR backend joins the ring only with its MAC.
//!
//! The movement is computed on the tables `xlb` builds
//! (`maglev::build_table`, N equal-weight backends, the default ring):
//! the share of slots whose backend changes, and of a fixed set of
//! synthetic flows hashed with `lb_common::flow_hash`, when a backend is
//! added (ideal 1/(N+1): only the newcomer's share moves) and when one of
//! N is removed (ideal 1/N).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::maps::{Array, Map, MapData};
use lb_common::{BackendInfo, DEFAULT_RING_SIZE, map_names as names};
use lb_user::maglev;
use xlb_testbed::{
    config::{Backend, Vip},
    pinned,
    topology::{Topology, VIP_PORT, status_vip},
};

use super::{controlplane, median, say};

/// Backend counts of the movement table.
pub const SIZES: [u32; 3] = [10, 100, 1_000];

/// Slots of the ring read to find the new backend.
const PROBE_SLOTS: u32 = 64;

/// How long one add may take before the run fails.
const LIMIT: Duration = Duration::from_secs(10);

/// One N of the movement table.
#[derive(Debug, Clone)]
pub struct Moved {
    pub backends: u32,
    pub slots: u32,
    pub flows: usize,
    /// N → N+1: share of slots and of flows whose backend changed.
    pub add_slots: f64,
    pub add_flows: f64,
    /// N → N−1 (the middle one leaves).
    pub remove_slots: f64,
    pub remove_flows: f64,
}

#[derive(Debug, Clone)]
pub struct Results {
    /// The first add, whose MAC the kernel had to resolve: command to ring, ms.
    pub cold_ms: f64,
    /// Later adds (MAC known): command to ring, ms, each.
    pub add_ms: Vec<f64>,
    /// The same adds as the daemon timed them (request to ring published).
    pub daemon_ms: Vec<f64>,
    pub moved: Vec<Moved>,
}

pub fn run(xlb_exe: &Path, quick: bool) -> Result<Results> {
    let (adds, flows) = if quick { (5, 200_000) } else { (20, 1_000_000) };
    let moved = movement(flows);
    let topo = Topology::dsr(4)?;
    say(&format!("  topology {} ready", topo.prefix()));
    let vip = Vip::new("web4", topo.vip4(), VIP_PORT).backends(
        (1..=3).map(|i| Backend::new(IpAddr::from(topo.backend_addr4(i))).name(&format!("b{i}"))),
    );
    let state = topo.state_dir("lb");
    let config = topo.lb_config().vip(vip).write(&topo.config_path())?;
    let xlb = topo.start_xlb(xlb_exe, &config)?;
    let status = xlb.wait_ready(Duration::from_secs(20))?;
    ensure!(
        status_vip(&status, "web4")?.backends.len() == 3,
        "web4 should start with 3 backends"
    );
    // web4 is the only VIP: index 0.
    let watch = Watch::new(&state, 0, topo.backend_addr4(4))?;
    let address = topo.backend_addr4(4).to_string();
    let socket = topo.control_socket();
    let cli = |args: &[&str]| -> Result<String> {
        let out = Command::new(xlb_exe)
            .args(args)
            .arg("--socket")
            .arg(&socket)
            .output()?;
        if !out.status.success() {
            bail!(
                "xlb {args:?}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                xlb.log_tail(20)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let timed = |what: &str| -> Result<(f64, f64)> {
        let t = Instant::now();
        let reply = cli(&["backend", "add", "web4", &address])?;
        while !watch.in_ring()? {
            ensure!(
                t.elapsed() < LIMIT,
                "{what}: not in the ring after {LIMIT:?}: {reply}"
            );
        }
        let ms = t.elapsed().as_secs_f64() * 1e3;
        Ok((ms, daemon_ms(&reply)?))
    };
    let (cold_ms, cold_daemon) = timed("first add")?;
    say(&format!(
        "  first add (MAC unresolved): {cold_ms:.1} ms to the ring (the daemon: {cold_daemon:.1} ms \
         to its ring without the MAC)"
    ));
    let mut add_ms = Vec::new();
    let mut daemon = Vec::new();
    for n in 0..adds {
        cli(&["backend", "remove", "web4", &address])?;
        let t = Instant::now();
        while watch.in_ring()? {
            ensure!(
                t.elapsed() < LIMIT,
                "removal {n}: still in the ring after {LIMIT:?}"
            );
        }
        let (ms, d) = timed(&format!("add {n}"))?;
        add_ms.push(ms);
        daemon.push(d);
    }
    let mut sorted = add_ms.clone();
    say(&format!(
        "  {adds} adds (MAC known): median {:.1} ms, max {:.1} ms to the ring; the daemon's \
         median {:.1} ms",
        median(&mut sorted),
        sorted.last().copied().unwrap_or(f64::NAN),
        median(&mut daemon.clone())
    ));
    xlb.stop(Duration::from_secs(5));
    Ok(Results {
        cold_ms,
        add_ms,
        daemon_ms: daemon,
        moved,
    })
}

/// The time the daemon's reply names: "…, 1.8 ms; …".
fn daemon_ms(reply: &str) -> Result<f64> {
    let end = reply
        .find(" ms;")
        .with_context(|| format!("no time in the reply {reply:?}"))?;
    let start = reply[..end].rfind(' ').map_or(0, |i| i + 1);
    reply[start..end]
        .parse()
        .with_context(|| format!("the time in the reply {reply:?}"))
}

/// Whether the pinned ring of one VIP names one backend (by address, in
/// `BACKENDS`), in its first [`PROBE_SLOTS`] slots.
struct Watch<'a> {
    state: &'a Path,
    index: u32,
    address: [u8; 16],
    backends: Array<MapData, BackendInfo>,
}

impl<'a> Watch<'a> {
    fn new(state: &'a Path, index: u32, address: Ipv4Addr) -> Result<Self> {
        let data = MapData::from_pin(state.join(names::BACKENDS))?;
        let (address, _) = lb_common::addr_bytes(IpAddr::V4(address));
        Ok(Self {
            state,
            index,
            address,
            backends: Array::try_from(Map::Array(data))?,
        })
    }

    fn in_ring(&self) -> Result<bool> {
        // Published rings are new inner maps: open the current one.
        let ring = pinned::Ring::open(self.state, self.index)?;
        let mut seen: HashMap<u32, bool> = HashMap::new();
        for slot in 0..PROBE_SLOTS.min(ring.size) {
            let id = ring.slot(slot)?;
            if id == 0 {
                continue;
            }
            let ours = match seen.get(&id) {
                Some(&o) => o,
                None => {
                    let o = self.backends.get(&id, 0)?.addr == self.address;
                    seen.insert(id, o);
                    o
                }
            };
            if ours {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Share of slots whose member identity differs between two tables.
fn moved_slots(before: (&[u32], &[maglev::Member]), after: (&[u32], &[maglev::Member])) -> f64 {
    let moved = before
        .0
        .iter()
        .zip(after.0)
        .filter(|&(&b, &a)| before.1[b as usize].identity != after.1[a as usize].identity)
        .count();
    moved as f64 / before.0.len() as f64
}

fn movement(flows: usize) -> Vec<Moved> {
    let hashes = controlplane::flow_hashes(flows);
    let slots = DEFAULT_RING_SIZE;
    SIZES
        .iter()
        .map(|&n| {
            let grown = controlplane::members(n + 1);
            let all = &grown[..n as usize];
            let base = maglev::build_table(all, slots);
            let added = maglev::build_table(&grown, slots);
            let mut rest = all.to_vec();
            rest.remove(n as usize / 2);
            let removed = maglev::build_table(&rest, slots);
            let row = Moved {
                backends: n,
                slots,
                flows,
                add_slots: moved_slots((&base, all), (&added, &grown)),
                add_flows: controlplane::moved_share(&hashes, (&base, all), (&added, &grown)),
                remove_slots: moved_slots((&base, all), (&removed, &rest)),
                remove_flows: controlplane::moved_share(&hashes, (&base, all), (&removed, &rest)),
            };
            say(&format!(
                "  N = {n}: add moves {:.3} % of slots, {:.3} % of flows (ideal {:.3} %); remove \
                 {:.3} % / {:.3} % (ideal {:.3} %)",
                row.add_slots * 100.0,
                row.add_flows * 100.0,
                100.0 / f64::from(n + 1),
                row.remove_slots * 100.0,
                row.remove_flows * 100.0,
                100.0 / f64::from(n)
            ));
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_an_eleventh_backend_moves_about_an_eleventh() {
        let m = &movement(20_000)[0];
        assert_eq!(m.backends, 10);
        assert!((0.08..0.12).contains(&m.add_slots), "{m:?}");
        assert!((0.08..0.12).contains(&m.add_flows), "{m:?}");
        assert!((0.09..0.13).contains(&m.remove_slots), "{m:?}");
    }

    #[test]
    fn the_daemons_time_is_read_from_its_reply() {
        let reply = "web4/198.18.0.14: added at runtime (port 80, weight 1), in the ring, 1.8 ms; \
                     a reload keeps it";
        assert_eq!(daemon_ms(reply).unwrap(), 1.8);
        assert!(daemon_ms("no time").is_err());
    }
}
