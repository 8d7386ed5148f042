//! The control plane at scale: the real `xlb run` in a private namespace.
//!
//! - VIPs: 10,000 DSR VIPs (one address each) × 3 backends (static
//!   neighbour entries), with the default ring and again (a quick run)
//!   with rings of `SMALL_RING` slots. Measured from the spawn: when
//!   the first and the last VIP serve (the program is attached, and the
//!   VIP is in the pinned `VIPS`, which the controller writes only once its
//!   ring is in; every ring is then read back from the pinned `RINGS` and
//!   checked full, naming only the VIP's backends), how fast `xlb status`
//!   answers meanwhile (one request after another, 10 ms apart) and once
//!   every VIP serves (and how large its reply is), the daemon's CPU once idle (from /proc/PID/stat), its RSS, the BPF memory
//!   of the rings (`memlock` of each, from fdinfo), and how long a reload
//!   that changes one backend of one VIP takes (request to reply; the new
//!   ring is checked in the pinned map).
//! - Backends: one NAT VIP over 1,000 backends checked over TCP every
//!   second (local addresses of the namespace's loopback, one listener):
//!   the time from the spawn until every backend is in the ring, and the
//!   number of rings installed meanwhile (from xlb's log).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use aya::maps::{Array, ArrayOfMaps, HashMap, Map, MapData};
use lb_common::{BackendInfo, DEFAULT_RING_SIZE, VipKey, VipMeta, map_names as names};
use lb_user::api::{Reply, Request};
use xlb_testbed::config::{Backend, HealthCheck, Vip, XlbConfig};
use xlb_testbed::many_vips::{self, backend_addr, vip_addr};
use xlb_testbed::netns::{BpfDir, NetNs, TempDir};
use xlb_testbed::pinned;
use xlb_testbed::topology::{Xlb, spawn_xlb};

use super::health::{process_cpu, target, target_namespace};
use super::say;

pub const VIPS: usize = 10_000;
pub const BACKENDS_PER_VIP: usize = 3;
pub const HEALTH_BACKENDS: usize = 1000;
/// The smaller ring of the second run: a prime over 1,000 slots per
/// backend of a 3-backend VIP.
pub const SMALL_RING: u32 = 4099;
pub const HEALTH_INTERVAL_MS: u64 = 1000;

#[derive(Debug, Clone)]
pub struct VipsRun {
    pub vips: usize,
    pub ring_size: u32,
    /// From the spawn.
    pub first_serving_s: f64,
    pub all_serving_s: f64,
    /// From the spawn to the first status answer.
    pub first_answer_s: f64,
    /// Status requests answered until every VIP served, and their latency.
    pub answers: usize,
    pub failures: usize,
    pub status_p50_ms: f64,
    pub status_p99_ms: f64,
    pub status_max_ms: f64,
    /// Once every VIP serves and nothing is applied: p50 of 20 requests,
    /// and the size of the reply (JSON).
    pub status_rest_p50_ms: f64,
    pub status_mib: f64,
    pub idle_cpu_percent: f64,
    pub idle_s: f64,
    pub rss_mib: f64,
    /// memlock of one ring (the default size).
    pub ring_kib: f64,
    /// memlock of the pinned maps (everything but the rings).
    pub pinned_mib: f64,
    pub reload_ms: f64,
    /// Of which reading the file and applying it, by xlb's log.
    pub reload_read_ms: f64,
    pub reload_apply_ms: f64,
}

#[derive(Debug, Clone)]
pub struct HealthRun {
    pub backends: usize,
    pub interval_ms: u64,
    pub all_in_ring_s: f64,
    pub ring_installs: usize,
}

/// A connection-table size that loaded, and what its tables cost.
#[derive(Debug, Clone)]
pub struct FlowsRow {
    pub entries: u32,
    pub load_s: f64,
    /// memlock of FLOWS and of NAT_REVERSE.
    pub flows_mib: f64,
    pub nat_reverse_mib: f64,
}

pub struct Results {
    pub vips: VipsRun,
    /// The same VIPs with `ring_size = SMALL_RING`.
    pub small_rings: VipsRun,
    pub health: HealthRun,
    pub flows: Vec<FlowsRow>,
}

/// The connection-table sizes loaded.
pub const FLOW_SIZES: [u32; 2] = [4 << 20, 16 << 20];

pub fn run(xlb_exe: &Path, quick: bool) -> Result<Results> {
    let default_rings = vips(xlb_exe, quick, DEFAULT_RING_SIZE).context("10,000 VIPs")?;
    let small_rings = vips(xlb_exe, true, SMALL_RING)
        .with_context(|| format!("10,000 VIPs with rings of {SMALL_RING} slots"))?;
    let health = health(xlb_exe).context("1,000 health-checked backends")?;
    let flows = FLOW_SIZES
        .iter()
        .map(|&n| flows(n).with_context(|| format!("a connection table of {n} entries")))
        .collect::<Result<_>>()?;
    Ok(Results {
        vips: default_rings,
        small_rings,
        health,
        flows,
    })
}

/// Loads the program with `entries`-entry connection tables against a
/// fresh state directory (pinned, as `xlb run` does) and reads what the
/// kernel charges for them.
fn flows(entries: u32) -> Result<FlowsRow> {
    let name = format!("xf{:05x}", std::process::id() & 0xf_ffff);
    let dir = BpfDir::create(&name)?;
    let state = lb_user::state::StateDir::open(dir.path())?;
    let t0 = Instant::now();
    let (dp, maps) =
        lb_user::dataplane::Dataplane::open(lb_user::EBPF_OBJECT, &state, entries, &[])?;
    let load_s = t0.elapsed().as_secs_f64();
    let mib = |map: &str| -> Result<f64> {
        let m = MapData::from_pin(state.map_pin(map))?;
        ensure!(
            aya::maps::MapInfo::from_pin(state.map_pin(map))?.max_entries() == entries,
            "{map} has another size"
        );
        Ok(memlock(&m)? as f64 / (1024.0 * 1024.0))
    };
    let row = FlowsRow {
        entries,
        load_s,
        flows_mib: mib(names::FLOWS)?,
        nat_reverse_mib: mib(names::NAT_REVERSE)?,
    };
    drop((dp, maps));
    state.reset()?;
    say(&format!(
        "  connection table of {entries} entries: loaded in {load_s:.2} s, FLOWS {:.0} MiB, \
         NAT_REVERSE {:.0} MiB",
        row.flows_mib, row.nat_reverse_mib
    ));
    Ok(row)
}

/// Writes the 10,000-VIP config to `path`; VIP `changed` gets backend 3
/// instead of 2. The text is written here (the testbed's serializer takes
/// minutes for 10,000 VIPs) and checked with xlb's own parser.
fn write_vips_config(
    path: &Path,
    ifname: &str,
    state: &Path,
    socket: &Path,
    changed: Option<usize>,
    ring: u32,
) -> Result<()> {
    let ring = (ring != DEFAULT_RING_SIZE).then_some(ring);
    let text = many_vips::config((ifname, state, socket), VIPS, ring, |i| {
        let mut backends = vec![0, 1, 2];
        if changed == Some(i) {
            backends[2] = 3;
        }
        backends
    });
    lb_user::config::Config::parse(&text, "scale bench config")
        .map_err(|e| anyhow!("xlb refuses the bench's config: {e}"))?;
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// VmRSS of process `pid`, in MiB.
fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .ok_or_else(|| anyhow!("no VmRSS"))?
        .parse::<f64>()?;
    Ok(kib / 1024.0)
}

/// The `memlock` the kernel charges for the map behind `map`.
fn memlock(map: &MapData) -> Result<u64> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let fd = map.fd().as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .ok_or_else(|| anyhow!("no memlock in fdinfo"))?
        .trim()
        .parse()
        .context("memlock")
}

fn pinned_vips(state: &Path) -> Result<HashMap<MapData, VipKey, VipMeta>> {
    let data = MapData::from_pin(state.join(names::VIPS))?;
    Ok(HashMap::try_from(Map::HashMap(data))?)
}

fn pinned_rings(state: &Path) -> Result<ArrayOfMaps<MapData, MapData>> {
    let data = MapData::from_pin(state.join(names::RINGS))?;
    Ok(ArrayOfMaps::try_from(Map::ArrayOfMaps(data))?)
}

fn pinned_backends(state: &Path) -> Result<Array<MapData, BackendInfo>> {
    let data = MapData::from_pin(state.join(names::BACKENDS))?;
    Ok(Array::try_from(Map::Array(data))?)
}

/// The backend addresses of the ring of VIP `index` (its slots' ids looked
/// up in `BACKENDS`), and the ring's size; every slot must name one.
fn ring_members(
    state: &Path,
    backends: &Array<MapData, BackendInfo>,
    index: u32,
    slots: &[u32],
) -> Result<(u32, BTreeSet<[u8; 16]>)> {
    let ring = pinned::Ring::open(state, index)?;
    let size = ring.size;
    let mut members = BTreeSet::new();
    for &slot in slots {
        let id = ring.slot(slot % size)?;
        ensure!(id != 0, "VIP index {index}: slot {slot} is empty");
        members.insert(backends.get(&id, 0)?.addr);
    }
    Ok((size, members))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Asks for the status every 10 ms until `stop`: (seconds since `t0`,
/// latency) of each answer, and the failures.
fn poll_status(
    socket: PathBuf,
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<(f64, f64)>, usize)> {
    std::thread::spawn(move || {
        let (mut answers, mut failures) = (Vec::new(), 0);
        while !stop.load(Ordering::Relaxed) {
            let at = Instant::now();
            if socket.exists() {
                match lb_user::ctl::call(&socket, &Request::Status) {
                    Ok(Reply::Status(_)) => answers.push((
                        at.duration_since(t0).as_secs_f64(),
                        at.elapsed().as_secs_f64() * 1e3,
                    )),
                    _ => failures += 1,
                }
            }
            std::thread::sleep(Duration::from_millis(10).saturating_sub(at.elapsed()));
        }
        (answers, failures)
    })
}

fn vips(xlb_exe: &Path, quick: bool, ring: u32) -> Result<VipsRun> {
    let idle = Duration::from_secs(if quick { 5 } else { 20 });
    let name = format!("xs{:05x}", std::process::id() & 0xf_ffff);
    let ns = NetNs::create(&name)?;
    let dir = TempDir::create(&name)?;
    let state = BpfDir::create(&name)?;
    let ifname = format!("{name}a");
    ns.ip(["link", "set", "lo", "up"])?;
    ns.add_veth_pair(&ifname, &format!("{name}b"))?;
    many_vips::add_backends(&ns, &ifname, 0..=BACKENDS_PER_VIP)?;
    let socket = dir.path().join("xlb.sock");
    let conf = dir.path().join("xlb.toml");
    write_vips_config(&conf, &ifname, state.path(), &socket, None, ring)?;
    let path = conf.clone();
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll_status(socket.clone(), t0, stop.clone());
    let xlb = spawn_xlb(
        &ns,
        "xlb (scale bench)",
        xlb_exe,
        &path,
        &[],
        &socket,
        dir.path().join("xlb.log"),
    );
    let measured = xlb.and_then(|xlb| {
        let r = measure_vips(
            &xlb,
            t0,
            state.path(),
            (&stop, idle),
            &socket,
            ring,
            |changed| write_vips_config(&conf, &ifname, state.path(), &socket, Some(changed), ring),
        );
        let log = xlb.log_tail(20);
        r.with_context(|| format!("--- xlb log ---\n{log}"))
    });
    stop.store(true, Ordering::Relaxed);
    let (answers, failures) = poller.join().map_err(|_| anyhow!("status poller"))?;
    let (first_serving_s, all_serving_s, mut run) = measured?;
    let during: Vec<(f64, f64)> = answers
        .iter()
        .copied()
        .filter(|&(t, _)| t <= all_serving_s)
        .collect();
    let mut lat: Vec<f64> = during.iter().map(|&(_, l)| l).collect();
    lat.sort_by(f64::total_cmp);
    run.first_serving_s = first_serving_s;
    run.all_serving_s = all_serving_s;
    run.first_answer_s = answers.first().map_or(f64::NAN, |a| a.0);
    run.answers = lat.len();
    run.failures = failures;
    run.status_p50_ms = percentile(&lat, 0.5);
    run.status_p99_ms = percentile(&lat, 0.99);
    run.status_max_ms = lat.last().copied().unwrap_or(f64::NAN);
    say(&format!(
        "  {} VIPs × {BACKENDS_PER_VIP}, rings of {} slots: first serving {:.2} s, all {:.2} s after the spawn; \
         status: first answer {:.2} s, {} answers until all served (p50 {:.1} ms, p99 {:.1} ms, \
         max {:.1} ms), {} failed; at rest p50 {:.1} ms for {:.1} MiB; idle CPU {:.2} % of a core over {:.0} s; RSS {:.0} MiB; \
         ring {:.0} KiB each, other pinned maps {:.0} MiB; one-backend reload {:.0} ms (read {:.0} ms, \
         apply {:.1} ms)",
        run.vips,
        run.ring_size,
        run.first_serving_s,
        run.all_serving_s,
        run.first_answer_s,
        run.answers,
        run.status_p50_ms,
        run.status_p99_ms,
        run.status_max_ms,
        run.failures,
        run.status_rest_p50_ms,
        run.status_mib,
        run.idle_cpu_percent,
        run.idle_s,
        run.rss_mib,
        run.ring_kib,
        run.pinned_mib,
        run.reload_ms,
        run.reload_read_ms,
        run.reload_apply_ms
    ));
    drop(ns);
    Ok(run)
}

/// Everything but the status figures (the poller's).
fn measure_vips(
    xlb: &Xlb,
    t0: Instant,
    state: &Path,
    (stop, idle): (&AtomicBool, Duration),
    socket: &Path,
    ring: u32,
    rewrite: impl Fn(usize) -> Result<()>,
) -> Result<(f64, f64, VipsRun)> {
    let deadline = t0 + Duration::from_secs(600);
    let link = state.join("link");
    let (mut first, mut vipsmap) = (None, None);
    let all = loop {
        if !xlb.is_running() {
            bail!("xlb exited during start");
        }
        ensure!(
            Instant::now() < deadline,
            "not every VIP served within 600 s"
        );
        if vipsmap.is_none() {
            vipsmap = pinned_vips(state).ok();
        }
        let attached = link.exists();
        let count = match (&vipsmap, attached) {
            (Some(m), true) => m.keys().filter(|k| k.is_ok()).count(),
            _ => 0,
        };
        let t = t0.elapsed().as_secs_f64();
        if count > 0 && first.is_none() {
            first = Some(t);
        }
        if count == VIPS {
            break t;
        }
        // Counting the keys of VIPS costs a system call per VIP: often
        // enough for the figure, seldom enough not to slow the start down.
        std::thread::sleep(Duration::from_millis(50));
    };
    let first = first.unwrap_or(all);
    // Every VIP's ring: `ring` slots, spread over it all naming its three
    // backends.
    let vipsmap = vipsmap.expect("read above");
    let rings = pinned_rings(state)?;
    let backends = pinned_backends(state)?;
    let want: BTreeSet<[u8; 16]> = (0..BACKENDS_PER_VIP)
        .map(|b| lb_common::addr_bytes(backend_addr(b).into()).0)
        .collect();
    let probe: Vec<u32> = (0..64).map(|k| k * 1021 + 7).collect();
    let mut ring_bytes = 0u64;
    let mut indices = std::collections::HashMap::new();
    for kv in vipsmap.iter() {
        let (key, meta) = kv?;
        let (size, members) = ring_members(state, &backends, meta.index, &probe)?;
        ensure!(size == ring, "ring of {size} slots, not {ring}");
        ensure!(
            members == want,
            "VIP index {}: ring names other backends",
            meta.index
        );
        if ring_bytes == 0 {
            ring_bytes = memlock(&rings.get(&meta.index, 0)?)?;
        }
        indices.insert(key, meta.index);
    }
    let mut pinned = 0u64;
    for entry in std::fs::read_dir(state)? {
        let path = entry?.path();
        // Link pins open too, but have no memlock.
        if let Ok(m) = MapData::from_pin(&path)
            && let Ok(bytes) = memlock(&m)
        {
            pinned += bytes;
        }
    }
    // Idle: a moment to settle, then CPU over `idle`. The status poller
    // stops first, so that it does not count.
    stop.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(2));
    let (c0, i0) = (process_cpu(xlb.pid())?, Instant::now());
    std::thread::sleep(idle);
    let idle_s = i0.elapsed().as_secs_f64();
    let idle_cpu_percent = (process_cpu(xlb.pid())? - c0) / idle_s * 100.0;
    let rss = rss_mib(xlb.pid())?;
    // Status at rest: what building, sending and reading the whole status
    // costs when the controller is not busy.
    let mut rest = Vec::new();
    let mut reply = None;
    for _ in 0..20 {
        let at = Instant::now();
        let r = lb_user::ctl::call(socket, &Request::Status)?;
        rest.push(at.elapsed().as_secs_f64() * 1e3);
        ensure!(matches!(r, Reply::Status(_)), "status: {r:?}");
        reply = Some(r);
    }
    rest.sort_by(f64::total_cmp);
    let status_bytes = serde_json::to_vec(&reply)?.len();
    // One backend of one VIP changes.
    let changed = VIPS / 2;
    rewrite(changed)?;
    let r0 = Instant::now();
    let reply = lb_user::ctl::call(socket, &Request::Reload)?;
    let reload_ms = r0.elapsed().as_secs_f64() * 1e3;
    ensure!(matches!(reply, Reply::Ok { .. }), "reload: {reply:?}");
    let key = VipKey::new(vip_addr(changed).into(), 80, lb_common::IPPROTO_TCP);
    let index = *indices
        .get(&key)
        .ok_or_else(|| anyhow!("VIP {changed} not found"))?;
    let (_, members) = ring_members(state, &backends, index, &probe)?;
    let now: BTreeSet<[u8; 16]> = [0, 1, 3]
        .iter()
        .map(|&b| lb_common::addr_bytes(backend_addr(b).into()).0)
        .collect();
    ensure!(members == now, "the reloaded VIP's ring did not change");
    let field = |name: &str| -> Result<f64> {
        let log = xlb.log();
        let line = log
            .lines()
            .rfind(|l| l.contains("configuration reloaded"))
            .ok_or_else(|| anyhow!("no reload logged"))?;
        let at = line
            .find(&format!("{name}="))
            .ok_or_else(|| anyhow!("no {name} in {line:?}"))?;
        let v = line[at + name.len() + 1..].trim_start_matches('"');
        let end = v
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(v.len());
        v[..end]
            .parse()
            .with_context(|| format!("{name} in {line:?}"))
    };
    let (reload_read_ms, reload_apply_ms) = (field("read_ms")?, field("apply_ms")?);
    Ok((
        first,
        all,
        VipsRun {
            vips: VIPS,
            ring_size: ring,
            first_serving_s: 0.0,
            all_serving_s: 0.0,
            first_answer_s: 0.0,
            answers: 0,
            failures: 0,
            status_p50_ms: 0.0,
            status_p99_ms: 0.0,
            status_max_ms: 0.0,
            idle_cpu_percent,
            idle_s,
            rss_mib: rss,
            status_rest_p50_ms: percentile(&rest, 0.5),
            status_mib: status_bytes as f64 / (1024.0 * 1024.0),
            ring_kib: ring_bytes as f64 / 1024.0,
            pinned_mib: pinned as f64 / (1024.0 * 1024.0),
            reload_ms,
            reload_read_ms,
            reload_apply_ms,
        },
    ))
}

fn health(xlb_exe: &Path) -> Result<HealthRun> {
    let name = format!("xh{:05x}", std::process::id() & 0xf_ffff);
    let (ns, listener) = target_namespace(&name)?;
    let dir = TempDir::create(&name)?;
    let state = BpfDir::create(&name)?;
    let ifname = format!("{name}a");
    ns.add_veth_pair(&ifname, &format!("{name}b"))?;
    ns.sysctl(&["net.ipv4.ip_forward=1"])?;
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(Mutex::new(0usize));
    let server = std::thread::spawn({
        let (stop, accepted) = (stop.clone(), accepted.clone());
        move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok(_) => *accepted.lock().unwrap_or_else(|e| e.into_inner()) += 1,
                    Err(_) => std::thread::sleep(Duration::from_micros(200)),
                }
            }
        }
    });
    let socket = dir.path().join("xlb.sock");
    let check = HealthCheck {
        interval_ms: Some(HEALTH_INTERVAL_MS),
        timeout_ms: Some(500),
        ..HealthCheck::new("tcp")
    };
    let config = XlbConfig::new(&ifname)
        .xdp_mode("generic")
        .state_dir(state.path())
        .control_socket(&socket)
        .vip(
            Vip::new("many", Ipv4Addr::new(198, 19, 255, 1), 80)
                .nat()
                .health(check)
                .backends((0..HEALTH_BACKENDS).map(|i| Backend::new(target(i)))),
        );
    let path = config.write(&dir.path().join("xlb.toml"))?;
    let t0 = Instant::now();
    let result = spawn_xlb(
        &ns,
        "xlb (scale bench, health)",
        xlb_exe,
        &path,
        &[],
        &socket,
        dir.path().join("xlb.log"),
    )
    .and_then(|xlb| {
        xlb.wait_status(
            "every backend in the ring",
            Duration::from_secs(120),
            |st| st.vips.iter().all(|v| v.usable_backends == HEALTH_BACKENDS),
        )?;
        let all_in_ring_s = t0.elapsed().as_secs_f64();
        let ring_installs = xlb
            .log()
            .lines()
            .filter(|l| l.contains("Maglev table installed"))
            .count();
        Ok(HealthRun {
            backends: HEALTH_BACKENDS,
            interval_ms: HEALTH_INTERVAL_MS,
            all_in_ring_s,
            ring_installs,
        })
    });
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    drop(ns);
    let run = result?;
    say(&format!(
        "  {} TCP-checked backends, checks every {} ms: all in the ring {:.2} s after the spawn \
         ({:.1} intervals), {} rings installed",
        run.backends,
        run.interval_ms,
        run.all_in_ring_s,
        run.all_in_ring_s * 1e3 / run.interval_ms as f64,
        run.ring_installs
    ));
    Ok(run)
}
