//! `xlb run` with thousands of VIPs: every VIP ends up served by the data
//! plane, and the control socket answers while they go in. How fast is
//! the benchmark's business (`cargo xtask bench --only scale`); nothing
//! here depends on the machine's speed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use aya::maps::{Array, HashMap, Map, MapData};
use lb_common::{BACKEND_F_ACTIVE, BackendInfo, VipKey, VipMeta, addr_bytes, map_names as names};
use lb_user::api::{Reply, Request};
use xlb_testbed::many_vips::{self, backend_addr, backend_mac, vip_addr};
use xlb_testbed::netns::{BpfDir, NetNs, TempDir};
use xlb_testbed::pinned;
use xlb_testbed::running::{require_root, xlb_exe};
use xlb_testbed::topology::{log_time, spawn_xlb};

const VIPS: usize = 4000;
const RING: u32 = 4099;

/// VIP i has backends i % 3 and (i + 1) % 3, so that neighbouring VIPs
/// differ.
fn backends_of(i: usize) -> [usize; 2] {
    [i % 3, (i + 1) % 3]
}

#[test]
fn thousands_of_vips_all_serve_and_the_socket_answers_while_they_go_in() {
    if !require_root("thousands_of_vips_all_serve_and_the_socket_answers_while_they_go_in") {
        return;
    }
    let name = format!("ts{:05x}", std::process::id() & 0xf_ffff);
    let ns = NetNs::create(&name).unwrap();
    let dir = TempDir::create(&name).unwrap();
    let state = BpfDir::create(&name).unwrap();
    let ifname = format!("{name}a");
    ns.ip(["link", "set", "lo", "up"]).unwrap();
    ns.add_veth_pair(&ifname, &format!("{name}b")).unwrap();
    many_vips::add_backends(&ns, &ifname, 0..3).unwrap();
    let socket = dir.path().join("xlb.sock");
    let conf = dir.path().join("xlb.toml");
    std::fs::write(
        &conf,
        many_vips::config((&ifname, state.path(), &socket), VIPS, Some(RING), |i| {
            backends_of(i).to_vec()
        }),
    )
    .unwrap();

    // Status back to back from the spawn: (when it was answered, how many
    // VIPs had a ring then), and the requests that failed once the socket
    // was there.
    let stop = Arc::new(AtomicBool::new(false));
    let poller = std::thread::spawn({
        let (socket, stop) = (socket.clone(), stop.clone());
        move || {
            let (mut answers, mut failures) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                if !socket.exists() {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                match lb_user::ctl::call(&socket, &Request::Status) {
                    Ok(Reply::Status(s)) => {
                        let serving = s.vips.iter().filter(|v| v.usable_backends > 0).count();
                        answers.push((SystemTime::now(), serving));
                    }
                    Ok(other) => failures.push(format!("{other:?}")),
                    Err(e) => failures.push(format!("{e:#}")),
                }
            }
            (answers, failures)
        }
    });
    let xlb = spawn_xlb(
        &ns,
        "xlb (scale test)",
        &xlb_exe(),
        &conf,
        &[],
        &socket,
        dir.path().join("xlb.log"),
    )
    .unwrap();
    let ready = xlb.wait_status("every VIP with a ring", Duration::from_secs(300), |s| {
        s.vips.len() == VIPS && s.vips.iter().all(|v| v.usable_backends == 2)
    });
    stop.store(true, Ordering::Relaxed);
    let (answers, failures) = poller.join().unwrap();
    let log = xlb.log();
    ready.unwrap();

    // The socket answered during the start: before the apply was done, by
    // xlb's own log. (The start writes 16 batches of rings, each waiting
    // for an RCU grace period, and lets the socket in between them.)
    let applied = log
        .lines()
        .find(|l| l.contains("configuration applied"))
        .and_then(log_time)
        .expect("the apply is logged");
    assert!(
        failures.is_empty(),
        "status failed: {:?}",
        &failures[..failures.len().min(3)]
    );
    let (first, serving) = answers.first().copied().expect("status answered");
    assert!(
        first < applied,
        "no status answer before the apply ended ({} answers)",
        answers.len()
    );
    assert!(
        serving < VIPS,
        "the first answer already saw every VIP served"
    );

    // Every VIP forwards: in VIPS, its ring full (each sampled slot names
    // one of its own two backends, and both appear), their entries active
    // with the neighbours' MACs.
    let vips: HashMap<MapData, VipKey, VipMeta> = HashMap::try_from(Map::HashMap(
        MapData::from_pin(state.path().join(names::VIPS)).unwrap(),
    ))
    .unwrap();
    let backends: Array<MapData, BackendInfo> = Array::try_from(Map::Array(
        MapData::from_pin(state.path().join(names::BACKENDS)).unwrap(),
    ))
    .unwrap();
    for i in 0..VIPS {
        let key = VipKey::new(vip_addr(i).into(), 80, lb_common::IPPROTO_TCP);
        let meta = vips
            .get(&key, 0)
            .unwrap_or_else(|e| panic!("VIP {i} not in VIPS: {e}"));
        let ring = pinned::Ring::open(state.path(), meta.index).unwrap();
        assert_eq!(ring.size, RING, "VIP {i}: ring size");
        let mut seen = BTreeSet::new();
        for slot in (0..RING).step_by(97) {
            let id = ring.slot(slot).unwrap();
            let b = backends.get(&id, 0).unwrap();
            assert_ne!(
                b.flags & BACKEND_F_ACTIVE,
                0,
                "VIP {i}: slot {slot} names backend {id}"
            );
            seen.insert((b.addr, b.mac));
        }
        let want: BTreeSet<([u8; 16], [u8; 6])> = backends_of(i)
            .iter()
            .map(|&b| (addr_bytes(backend_addr(b).into()).0, backend_mac(b)))
            .collect();
        assert_eq!(seen, want, "VIP {i}: the ring's backends");
    }
    drop(xlb);
    drop(ns);
}
