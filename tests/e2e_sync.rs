//! Connection sync end to end: two xlb nodes in a VRRP pair share their
//! connection tables (`[sync]`), so that the node that takes over keeps
//! every established flow on its backend, NAT replies included; forged
//! and replayed sync messages install nothing; a flood of new flows costs
//! counted report losses, never a stall. Needs root; each test builds its
//! own topology.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lb_common::{IPPROTO_TCP, sync_stat};
use lb_user::api::Status;
use lb_user::sync::{Key, wire};
use xlb_testbed::config::{ConnSync, Conntrack, XlbConfig};
use xlb_testbed::frames::key4;
use xlb_testbed::inject;
use xlb_testbed::netns::NetNs;
use xlb_testbed::pinned;
use xlb_testbed::running::{require_root, xlb_exe};
use xlb_testbed::topology::{NatTopology, Topology, VIP_PORT, VIP4, Xlb};
use xlb_testbed::traffic::Traffic;
use xlb_testbed::vrrp_pair::{BACKUP_PRIORITY, MASTER_PRIORITY, failover_bound, vrrp_config};

const SENDING: usize = 50;
const PERIOD: Duration = Duration::from_millis(50);
const SYNC_PORT: u16 = 8849;

/// A 64-character key in `dir`, readable by its owner only.
fn write_key(dir: &Path) -> PathBuf {
    let path = dir.join("sync.key");
    // Created 0600, never readable by others, as `umask 077` does in the
    // docs.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("create the key");
    file.write_all(b"6a0b3c9d8e7f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081920a\n")
        .expect("write the key");
    path
}

fn key(dir: &Path) -> Key {
    Key::load(&dir.join("sync.key")).expect("the test's key")
}

fn sync_section(key_file: &Path, peer: IpAddr, refresh_s: u32) -> ConnSync {
    ConnSync {
        peers: Some(vec![peer]),
        key_file: key_file.to_owned(),
        refresh_s: Some(refresh_s),
        ..ConnSync::default()
    }
}

fn start(config: XlbConfig, path: PathBuf, start: impl FnOnce(&Path) -> Xlb) -> Xlb {
    let path = config.write(&path).expect("write config");
    let xlb = start(&path);
    xlb.wait_ready(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("xlb never became ready: {e:#}"));
    xlb
}

/// Polls until every VRRP group of `xlb` is in `state`.
fn wait_state(xlb: &Xlb, state: &str, timeout: Duration) -> Status {
    xlb.wait_status(&format!("every VRRP group {state}"), timeout, |s| {
        s.vrrp
            .as_ref()
            .is_some_and(|v| !v.groups.is_empty() && v.groups.iter().all(|g| g.state == state))
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// A sync counter of `status` (0 until the first event of its kind).
fn sync_counter(status: &Status, name: &str) -> u64 {
    let s = status
        .sync
        .as_ref()
        .unwrap_or_else(|| panic!("no sync in the status: {status}"));
    s.counters.get(name).copied().unwrap_or(0)
}

fn wait_sync(xlb: &Xlb, what: &str, timeout: Duration, done: impl Fn(&Status) -> bool) -> Status {
    xlb.wait_status(what, timeout, done)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The DSR pair with sync between the nodes' own addresses: node 1
/// master, node 2 backup, both ready. `edit` adjusts each node's config.
fn dsr_pair(
    topo: &Topology,
    weights: &[u32],
    refresh_s: u32,
    edit: impl Fn(XlbConfig) -> XlbConfig,
) -> (Xlb, Xlb) {
    let key_file = write_key(topo.dir());
    let config = |n: usize, priority| {
        let peer = topo.node_addr4(3 - n).into();
        edit(
            topo.node_config(n, weights)
                .vrrp(vrrp_config(priority))
                .sync(sync_section(&key_file, peer, refresh_s)),
        )
    };
    let x1 = start(
        config(1, MASTER_PRIORITY),
        topo.dir().join("xlb1.toml"),
        |p| topo.start_node(1, &xlb_exe(), p).expect("start node 1"),
    );
    wait_state(&x1, "master", Duration::from_secs(10));
    let x2 = start(
        config(2, BACKUP_PRIORITY),
        topo.dir().join("xlb2.toml"),
        |p| topo.start_node(2, &xlb_exe(), p).expect("start node 2"),
    );
    wait_state(&x2, "backup", Duration::from_secs(10));
    (x1, x2)
}

fn without_backend(mut c: XlbConfig, name: &str) -> XlbConfig {
    for vip in ["web4", "web6"] {
        c.vip_mut(vip)
            .backends
            .retain(|b| b.name.as_deref() != Some(name));
    }
    c
}

/// The backend (index into `backends`) Maglev gives the flow from the
/// client's `port` to VIP4:80, over DSR backends at `backends` (weight 1
/// each, port 80), with the default ring size.
fn maglev_choice(backends: &[Ipv4Addr], client: Ipv4Addr, port: u16) -> u32 {
    let members: Vec<lb_user::maglev::Member> = backends
        .iter()
        .map(|a| lb_user::maglev::Member {
            identity: lb_user::maglev::identity((*a).into(), VIP_PORT),
            weight: 1,
        })
        .collect();
    let size = lb_common::DEFAULT_RING_SIZE;
    let table = lb_user::maglev::build_table(&members, size);
    let hash = lb_common::hash::flow_hash(&key4(client, VIP4, port, VIP_PORT, IPPROTO_TCP));
    table[(hash % size) as usize]
}

/// DSR: 50 connections open over three backends; a fourth is added by
/// reload on both nodes (so Maglev now sends some of those flows
/// elsewhere); then the master is killed. Every connection goes on, on
/// the backend it started on: the backup had their entries from the sync.
#[test]
fn dsr_pair_backend_added_then_failover_keeps_every_connection() {
    if !require_root("dsr_pair_backend_added_then_failover_keeps_every_connection") {
        return;
    }
    let topo = Topology::vrrp_pair(4).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let weights = [1, 1, 1, 1];
    let (x1, x2) = dsr_pair(&topo, &weights, 10, |c| without_backend(c, "backend-4"));
    let vip = SocketAddr::new(VIP4.into(), VIP_PORT);
    let traffic = Traffic::start(topo.client(), vip, SENDING, PERIOD, None).expect("traffic");
    wait_sync(
        &x2,
        "the 50 flows installed on node 2",
        Duration::from_secs(10),
        |s| sync_counter(s, "flows_installed") >= SENDING as u64,
    );

    // Both nodes get the fourth backend.
    let key_file = topo.dir().join("sync.key");
    for (n, x, priority) in [(1, &x1, MASTER_PRIORITY), (2, &x2, BACKUP_PRIORITY)] {
        let peer = topo.node_addr4(3 - n).into();
        topo.node_config(n, &weights)
            .vrrp(vrrp_config(priority))
            .sync(sync_section(&key_file, peer, 10))
            .write(&topo.dir().join(format!("xlb{n}.toml")))
            .expect("rewrite config");
        x.reload().expect("reload");
        x.wait_status("backend-4 in the ring", Duration::from_secs(10), |s| {
            s.vips.iter().all(|v| v.usable_backends == 4)
        })
        .unwrap_or_else(|e| panic!("node {n}: {e:#}"));
    }
    std::thread::sleep(Duration::from_millis(300));
    x1.kill_now().expect("SIGKILL node 1");
    wait_state(&x2, "master", failover_bound());
    std::thread::sleep(Duration::from_secs(1));
    let report = traffic.stop();
    let _ = writeln!(
        std::io::stderr(),
        "backend added, then SIGKILL of the master: {}",
        report.summary()
    );

    // The test is only worth something if the new ring moved some of
    // these flows: count them with xlb's own Maglev and flow hash.
    let addrs: Vec<Ipv4Addr> = (1..=4).map(|i| topo.backend_addr4(i)).collect();
    let moved = report
        .connections
        .iter()
        .filter(|c| {
            let before = maglev_choice(&addrs[..3], topo.client_addr4(), c.port);
            let after = maglev_choice(&addrs, topo.client_addr4(), c.port);
            addrs[before as usize] != addrs[after as usize]
        })
        .count();
    assert!(
        moved > 0,
        "the added backend moved none of the 50 flows: the failover proves nothing"
    );
    let _ = writeln!(
        std::io::stderr(),
        "{moved} of {SENDING} flows hash elsewhere in the new ring"
    );
    assert_eq!(
        report.survivors(),
        SENDING,
        "{}: {:?}",
        report.summary(),
        report.errors(5)
    );
    let moved: Vec<_> = report
        .moved()
        .iter()
        .map(|c| (c.port, &c.served_by))
        .collect();
    assert!(
        moved.is_empty(),
        "connections (port, backends) that changed backends: {moved:?}"
    );
}

/// Waits up to 5 s for a sync datagram from `from` arriving on `ifname`
/// in `ns` while `trigger` runs; returns its UDP payload.
fn capture_sync_message(
    ns: &NetNs,
    ifname: &str,
    from: Ipv4Addr,
    trigger: impl FnOnce(),
) -> Vec<u8> {
    let ifname = ifname.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = ns.spawn(move || {
        let s = inject::packet_socket(&ifname, Some(libc::ETH_P_IP as u16)).expect("the capture");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let _ = tx.send(());
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            let Ok(n) = (&s).read(&mut buf) else { continue };
            let frame = &buf[..n];
            let Ok(p) = etherparse::SlicedPacket::from_ethernet(frame) else {
                continue;
            };
            let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
                continue;
            };
            let Some(etherparse::TransportSlice::Udp(udp)) = &p.transport else {
                continue;
            };
            if ip.header().source_addr() == from && udp.destination_port() == SYNC_PORT {
                return Some(udp.payload().to_vec());
            }
        }
        None
    });
    rx.recv().expect("capture ready");
    trigger();
    handle
        .join()
        .expect("capture thread")
        .expect("no sync message captured within 5 s")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// A sync message steering the flow from the client's port `port` to
/// backend-1, signed with `key`.
fn steering_message(
    key: &Key,
    epoch: u64,
    seq: u64,
    sent_ms: u64,
    topo: &Topology,
    port: u16,
) -> Vec<u8> {
    let entry = wire::Entry {
        client: topo.client_addr4().into(),
        client_port: port,
        vip: VIP4.into(),
        vip_port: VIP_PORT,
        proto: IPPROTO_TCP,
        backend: topo.backend_addr4(1).into(),
        backend_port: VIP_PORT,
        flags: 0,
        event: wire::Event::New,
        age_ms: 0,
    };
    let header = wire::Header {
        kind: wire::Kind::Flows,
        epoch,
        seq,
        sent_unix_ms: sent_ms,
    };
    key.seal(wire::encode(&header, &[entry]))
}

/// One row of the forgery table.
struct Attack {
    what: &'static str,
    /// The counter of node 2 that must count it.
    counter: &'static str,
    /// The source address it claims.
    from: SocketAddr,
    datagram: Vec<u8>,
    /// The client port of the flow it would install, if it carries one.
    steers: Option<u16>,
}

/// Forged, replayed, cut and oversized messages sent from a third
/// namespace (the client's), impersonating node 1 towards node 2: each is
/// dropped and counted by its reason, none installs a flow, and the
/// connections through node 1 never notice.
#[test]
fn forged_and_replayed_sync_messages_install_nothing() {
    if !require_root("forged_and_replayed_sync_messages_install_nothing") {
        return;
    }
    let topo = Topology::vrrp_pair(3).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let (_x1, x2) = dsr_pair(&topo, &[1, 1, 1], 10, |c| c);
    let vip = SocketAddr::new(VIP4.into(), VIP_PORT);
    let traffic = Traffic::start(topo.client(), vip, 20, PERIOD, None).expect("traffic");

    // A genuine message from node 1 to node 2, captured on node 2's NIC
    // while a new connection makes node 1 send one.
    let node1 = topo.node_addr4(1);
    let genuine = capture_sync_message(topo.node(2), &topo.node_ifname(2), node1, || {
        let _ = xlb_testbed::topology::http_get(topo.client(), vip, "/", Duration::from_secs(3));
    });
    let signed_len = wire::frame(&genuine).expect("a genuine message frames");
    let (header, _) = wire::decode(&genuine[..signed_len]).expect("a genuine message decodes");
    wait_sync(
        &x2,
        "the genuine message installed",
        Duration::from_secs(5),
        |s| sync_counter(s, "messages_accepted") > 0,
    );

    let right = key(topo.dir());
    let wrong = Key::from_bytes(b"not the cluster key, but long enough to be a key").unwrap();
    let from = SocketAddr::new(node1.into(), SYNC_PORT);
    let to = SocketAddr::new(topo.node_addr4(2).into(), SYNC_PORT);
    let client = SocketAddr::new(topo.client_addr4().into(), SYNC_PORT);
    let mut bad_magic = genuine.clone();
    bad_magic[..4].copy_from_slice(b"XLBX");
    let mut bad_version = genuine.clone();
    bad_version[4] = 9;
    let mut oversize = genuine.clone();
    oversize.resize(wire::MAX_LEN + 100, 0);
    let steer = |key: &Key, seq: u64, sent_ms: u64, port: u16| {
        steering_message(key, header.epoch, header.seq + seq, sent_ms, &topo, port)
    };
    let row = |what, counter, from, datagram, steers| Attack {
        what,
        counter,
        from,
        datagram,
        steers,
    };
    let attacks = [
        row(
            "signed with the wrong key",
            "dropped_bad_mac",
            from,
            steer(&wrong, 1000, now_ms(), 7001),
            Some(7001),
        ),
        row(
            "a replay of node 1's message",
            "dropped_replay",
            from,
            genuine.clone(),
            None,
        ),
        row(
            "cut short",
            "dropped_truncated",
            from,
            genuine[..genuine.len() - 10].to_vec(),
            None,
        ),
        row(
            "longer than any message",
            "dropped_oversize",
            from,
            oversize,
            None,
        ),
        row("another magic", "dropped_bad_magic", from, bad_magic, None),
        row(
            "another version",
            "dropped_bad_version",
            from,
            bad_version,
            None,
        ),
        row(
            "signed right, sent 10 minutes ago",
            "dropped_stale",
            from,
            steer(&right, 2000, now_ms() - 600_000, 7002),
            Some(7002),
        ),
        row(
            "signed right, from an address that is no peer",
            "dropped_unknown_peer",
            client,
            steer(&right, 3000, now_ms(), 7003),
            Some(7003),
        ),
    ];
    let before = x2.status().expect("status");
    for a in &attacks {
        for _ in 0..5 {
            inject::spoofed_udp(topo.client(), a.from, to, &a.datagram)
                .unwrap_or_else(|e| panic!("{}: {e:#}", a.what));
        }
    }
    let after = wait_sync(&x2, "every forgery counted", Duration::from_secs(5), |s| {
        attacks
            .iter()
            .all(|a| sync_counter(s, a.counter) >= sync_counter(&before, a.counter) + 5)
    });
    let state2 = topo.state_dir("lb2");
    for a in &attacks {
        assert_eq!(
            sync_counter(&after, a.counter) - sync_counter(&before, a.counter),
            5,
            "{}: {}",
            a.what,
            a.counter
        );
        if let Some(port) = a.steers {
            let k = key4(topo.client_addr4(), VIP4, port, VIP_PORT, IPPROTO_TCP);
            assert_eq!(
                pinned::flow(&state2, &k).expect("read FLOWS"),
                None,
                "{}: a flow was installed",
                a.what
            );
        }
    }
    let report = traffic.stop();
    assert_eq!(
        report.survivors(),
        20,
        "{}: {:?}",
        report.summary(),
        report.errors(5)
    );
}

/// 100,000 SYNs from as many source ports through node 1 while its
/// control plane is frozen (SIGSTOP: nobody reads the ring buffer, which
/// fills): the connections that keep sending through it never stall,
/// every new flow is either reported or counted as a lost report, and
/// once thawed, node 2 ends up with every one of them (the periodic sweep
/// sends what the ring buffer lost).
#[test]
fn a_flood_of_new_flows_is_counted_never_stalls_and_the_peer_converges() {
    if !require_root("a_flood_of_new_flows_is_counted_never_stalls_and_the_peer_converges") {
        return;
    }
    const FLOOD: usize = 100_000;
    let topo = Topology::vrrp_pair(3).unwrap_or_else(|e| panic!("topology: {e:#}"));
    // Adverts every second: the freeze stays well within the backup's
    // master-down interval (3.6 s), so node 1 stays master.
    let (x1, x2) = dsr_pair(&topo, &[1, 1, 1], 2, |mut c| {
        for g in &mut c.vrrp.as_mut().expect("vrrp").groups {
            g.advert_interval_cs = Some(100);
        }
        c.conntrack(Conntrack {
            new_flows_per_cpu: Some(0),
            ..Conntrack::default()
        })
    });
    let vip = SocketAddr::new(VIP4.into(), VIP_PORT);
    let traffic = Traffic::start(topo.client(), vip, 20, PERIOD, None).expect("traffic");
    std::thread::sleep(Duration::from_millis(300));
    let state1 = topo.state_dir("lb1");
    let counts = |x: &Xlb| {
        let s = x.status().expect("status");
        (
            s.conntrack.get("insert").copied().unwrap_or(0),
            pinned::sync_stat(&state1, sync_stat::EVENTS_REPORTED).unwrap(),
            pinned::sync_stat(&state1, sync_stat::EVENTS_LOST).unwrap(),
        )
    };
    let (ins0, rep0, lost0) = counts(&x1);
    let client_if = topo.client_ifname();
    let src_mac = inject::mac_of(topo.client(), &client_if).unwrap();
    let dst_mac = inject::mac_of(topo.node(1), &topo.node_ifname(1)).unwrap();
    // Off-subnet sources: the backends' answers go nowhere, and no
    // client resets them.
    let first = Ipv4Addr::new(198, 18, 100, 1);
    x1.freeze(true).expect("SIGSTOP node 1");
    let flooded = inject::syn_flood(
        topo.client(),
        &client_if,
        src_mac,
        dst_mac,
        first,
        vip,
        FLOOD,
    );
    x1.freeze(false).expect("SIGCONT node 1");
    let flooded = flooded.expect("flood");
    std::thread::sleep(Duration::from_millis(500));
    let (ins1, rep1, lost1) = counts(&x1);
    let report = traffic.stop();
    let _ = writeln!(
        std::io::stderr(),
        "flood: {} SYNs in {:?}; node 1 inserted {}, reported {}, lost {} reports; {}",
        flooded.sent,
        flooded.took,
        ins1 - ins0,
        rep1 - rep0,
        lost1 - lost0,
        report.summary()
    );
    // The veths drop what their queues cannot take: what arrived is what
    // node 1 inserted, and that must still be a flood.
    let arrived = ins1 - ins0;
    assert!(
        arrived >= FLOOD as u64 / 2,
        "only {arrived} of {FLOOD} SYNs arrived"
    );
    // The ring holds some 14,000 reports: with nobody reading, most are lost.
    assert!(lost1 > lost0, "no report was lost: the ring never filled");
    assert_eq!(
        (rep1 - rep0) + (lost1 - lost0),
        ins1 - ins0,
        "every new flow is reported or counted lost"
    );
    assert_eq!(
        report.survivors(),
        20,
        "{}: {:?}",
        report.summary(),
        report.errors(5)
    );
    assert!(
        report.longest_pause() < Duration::from_secs(2),
        "a connection stalled for {:?}",
        report.longest_pause()
    );

    // Node 2 converges: every flood flow node 1 has is in its table.
    let state2 = topo.state_dir("lb2");
    let flood_flows = |state: &Path| {
        pinned::flows(state)
            .expect("read FLOWS")
            .iter()
            .filter(|(k, _)| {
                let b = lb_common::words_to_bytes(&k.src);
                b[..3] == [198, 18, 100]
            })
            .count()
    };
    let want = flood_flows(&state1);
    assert_eq!(want as u64, arrived, "node 1's own table");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut have = 0;
    while Instant::now() < deadline {
        have = flood_flows(&state2);
        if have >= want {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let s2 = x2.status().expect("status");
    assert_eq!(
        have, want,
        "node 2 holds {have} of node 1's {want} flood flows; its sync: {:?}",
        s2.sync
    );
}

/// A node that joins (here: node 2 taken out with `xlb down`, its pinned
/// state gone, and started again) asks its peer for the whole table and
/// gets it: every flow node 1 forwards is in node 2's table before any
/// sweep could have sent it (`refresh_s` is an hour), so a failover right
/// after keeps them all.
#[test]
fn a_joining_node_gets_the_whole_table() {
    if !require_root("a_joining_node_gets_the_whole_table") {
        return;
    }
    const CONNECTIONS: usize = 20;
    let topo = Topology::vrrp_pair(3).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let (x1, x2) = dsr_pair(&topo, &[1, 1, 1], 3600, |c| c);
    let vip = SocketAddr::new(VIP4.into(), VIP_PORT);
    let traffic = Traffic::start(topo.client(), vip, CONNECTIONS, PERIOD, None).expect("traffic");
    x2.down().expect("xlb down on node 2");
    let state2 = topo.state_dir("lb2");
    assert!(
        pinned::flows(&state2).is_err(),
        "node 2's pinned state outlived xlb down"
    );
    let x2 = topo
        .start_node(2, &xlb_exe(), &topo.dir().join("xlb2.toml"))
        .expect("start node 2 again");
    wait_state(&x2, "backup", Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    let s2 = loop {
        let s2 = x2.status().expect("status");
        if sync_counter(&s2, "flows_installed") >= CONNECTIONS as u64 {
            break s2;
        }
        assert!(
            Instant::now() < deadline,
            "node 2 never got the whole table; node 2: {:?}\nnode 1: {:?}",
            s2.sync,
            x1.status().expect("status").sync
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let s1 = x1.status().expect("status");
    assert!(
        sync_counter(&s1, "hellos_received") >= 1 && sync_counter(&s1, "full_tables_sent") >= 1,
        "node 1 never answered a hello: {:?}",
        s1.sync
    );
    assert_eq!(sync_counter(&s2, "sweeps"), 0, "a sweep ran: {:?}", s2.sync);
    let report = traffic.stop();
    for c in &report.connections {
        let k = key4(topo.client_addr4(), VIP4, c.port, VIP_PORT, IPPROTO_TCP);
        assert!(
            pinned::flow(&state2, &k).expect("read FLOWS").is_some(),
            "the flow from port {} is not in node 2's table",
            c.port
        );
    }
    assert_eq!(
        report.survivors(),
        CONNECTIONS,
        "{}: {:?}",
        report.summary(),
        report.errors(5)
    );
}

/// A key rotated in place: the key file gets a new key and the nodes are
/// reloaded one after the other. Between the reloads the nodes' keys
/// differ, so the backup drops what the master sends (`bad_mac`) and
/// installs none of the flows that start then; once the backup is reloaded
/// too, its sync restarts with the new key and the master's whole table
/// reaches it, those flows included. Long-lived connections keep going
/// through all of it.
#[test]
fn a_key_rotated_in_place_is_taken_at_reload_and_the_backup_catches_up() {
    if !require_root("a_key_rotated_in_place_is_taken_at_reload_and_the_backup_catches_up") {
        return;
    }
    const CONNECTIONS: usize = 10;
    let topo = Topology::vrrp_pair(3).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let (x1, x2) = dsr_pair(&topo, &[1, 1, 1], 3600, |c| c);
    let vip = SocketAddr::new(VIP4.into(), VIP_PORT);
    let in_backup = |port: u16| {
        let k = key4(topo.client_addr4(), VIP4, port, VIP_PORT, IPPROTO_TCP);
        pinned::flow(&topo.state_dir("lb2"), &k)
            .expect("read node 2's FLOWS")
            .is_some()
    };
    let before = Traffic::start(topo.client(), vip, CONNECTIONS, PERIOD, None).expect("traffic");
    wait_sync(
        &x2,
        "the first flows on node 2",
        Duration::from_secs(10),
        |s| sync_counter(s, "flows_installed") >= CONNECTIONS as u64,
    );

    // Same path, same mode, another key.
    std::fs::write(
        topo.dir().join("sync.key"),
        b"0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0\n",
    )
    .expect("rotate the key");
    x1.reload_now().expect("reload node 1");
    let during = Traffic::start(topo.client(), vip, CONNECTIONS, PERIOD, None).expect("traffic");
    wait_sync(
        &x2,
        "node 2 dropping node 1's new key",
        Duration::from_secs(10),
        |s| sync_counter(s, "dropped_bad_mac") >= 1,
    );
    // Every flow that started between the reloads is running (it has sent
    // requests) before node 2 is looked at.
    std::thread::sleep(PERIOD * 10);
    let installed = during.ports().iter().filter(|p| in_backup(**p)).count();
    assert_eq!(
        installed,
        0,
        "node 2 installed flows sealed with a key it does not have yet; node 2: {:?}\nnode 1: {:?}",
        x2.status().expect("status").sync,
        x1.status().expect("status").sync
    );

    x2.reload_now().expect("reload node 2");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let missing = during.ports().iter().filter(|p| !in_backup(**p)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of the flows begun between the reloads never reached node 2; node 2: {:?}\nnode 1: {:?}",
            x2.status().expect("status").sync,
            x1.status().expect("status").sync
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let s1 = x1.status().expect("status");
    assert!(
        sync_counter(&s1, "full_tables_sent") >= 1,
        "node 1 never sent its table to the restarted node 2: {:?}",
        s1.sync
    );
    for (what, traffic) in [("before", before), ("during", during)] {
        let report = traffic.stop();
        assert!(
            report.connections.iter().all(|c| in_backup(c.port)),
            "a flow begun {what} the rotation is missing on node 2"
        );
        assert_eq!(
            report.survivors(),
            CONNECTIONS,
            "{what}: {}: {:?}",
            report.summary(),
            report.errors(5)
        );
    }
}

/// The NAT VRRP pair with sync between the nodes' server-side addresses:
/// node 1 master (VIPs and the backends' gateway), node 2 backup, both
/// tracking their links.
fn nat_pair(topo: &NatTopology) -> (Xlb, Xlb) {
    let key_file = write_key(topo.dir());
    let (gw4, gw6) = topo.gateway();
    let backends = [(1, 1), (2, 1), (3, 1)];
    let config = |n: usize, priority: u8| {
        let mut v = vrrp_config(priority);
        v.track_link = Some(true);
        v.groups[0] = v.groups[0].clone().server_addresses(&[gw4.into()]);
        v.groups[1] = v.groups[1].clone().server_addresses(&[gw6.into()]);
        let peer = topo.node_server_addr4(3 - n).into();
        topo.node_config(n, &backends)
            .vrrp(v)
            .sync(sync_section(&key_file, peer, 10))
    };
    let x1 = start(
        config(1, MASTER_PRIORITY),
        topo.dir().join("xlb1.toml"),
        |p| topo.start_node(1, &xlb_exe(), p).expect("start node 1"),
    );
    wait_state(&x1, "master", Duration::from_secs(10));
    let x2 = start(
        config(2, BACKUP_PRIORITY),
        topo.dir().join("xlb2.toml"),
        |p| topo.start_node(2, &xlb_exe(), p).expect("start node 2"),
    );
    wait_state(&x2, "backup", Duration::from_secs(10));
    (x1, x2)
}

/// How node 1 fails in a NAT failover test.
#[derive(Clone, Copy, Debug)]
enum Failure {
    /// SIGKILL of its `xlb`: its data plane goes on until node 2's
    /// gratuitous ARPs move clients and backends.
    Kill,
    /// Both its links cut (the bridge-side ends set down): nothing of it
    /// is reachable any more.
    CutLinks,
}

/// NAT two-armed, VRRP pair: 50 connections sending every 50 ms, then
/// node 1 fails; node 2 takes the VIPs and the gateway over and every
/// connection goes on, on its backend, its replies translated from the
/// entries node 1 synced.
fn nat_failover(failure: Failure) {
    let topo = NatTopology::vrrp_pair(3).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let (x1, x2) = nat_pair(&topo);
    let vip = SocketAddr::new(VIP4.into(), VIP_PORT);
    let traffic = Traffic::start(topo.client(), vip, SENDING, PERIOD, None).expect("traffic");
    let s2 = wait_sync(
        &x2,
        "the 50 flows installed on node 2",
        Duration::from_secs(10),
        |s| sync_counter(s, "flows_installed") >= SENDING as u64,
    );
    let sync_lines = |s: &Status| {
        s.render()
            .lines()
            .skip_while(|l| !l.starts_with("sync:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let _ = writeln!(
        std::io::stderr(),
        "before the failover, node 1:\n{}\nnode 2:\n{}",
        sync_lines(&x1.status().expect("status")),
        sync_lines(&s2)
    );
    let state2 = topo.state_dir("lb2");
    match failure {
        Failure::Kill => x1.kill_now().expect("SIGKILL node 1"),
        Failure::CutLinks => {
            let (c, s) = topo.node_peer_ifnames(1);
            for link in [c, s] {
                topo.switch()
                    .ip(["link", "set", &link, "down"])
                    .expect("cut a link of node 1");
            }
        }
    }
    wait_state(&x2, "master", failover_bound());
    std::thread::sleep(Duration::from_secs(1));
    let report = traffic.stop();
    let s2 = x2.status().expect("status");
    let _ = writeln!(
        std::io::stderr(),
        "NAT pair, {failure:?} of node 1: {}; node 2 conntrack {:?}",
        report.summary(),
        s2.conntrack
    );
    for c in &report.connections {
        let reply = key4(
            topo.backend_addr4(backend_of(c)),
            topo.client_addr4(),
            xlb_testbed::topology::BACKEND_PORT,
            c.port,
            IPPROTO_TCP,
        );
        assert!(
            pinned::nat_reverse(&state2, &reply)
                .expect("read NAT_REVERSE")
                .is_some(),
            "no reverse entry on node 2 for the connection from port {}",
            c.port
        );
    }
    assert_eq!(
        report.survivors(),
        SENDING,
        "{}: {:?}",
        report.summary(),
        report.errors(5)
    );
    // Node 2 served every packet from the synced entries: it never had
    // to choose a backend or make a reverse entry of its own.
    let ct = |name: &str| s2.conntrack.get(name).copied().unwrap_or(0);
    assert!(
        ct("nat_reply") > 0,
        "node 2 translated no reply: {:?}",
        s2.conntrack
    );
    assert!(ct("hit") > 0, "{:?}", s2.conntrack);
    assert_eq!(
        (ct("miss"), ct("insert")),
        (0, 0),
        "node 2 missed synced flows: {:?}",
        s2.conntrack
    );
    // A reply whose next hop node 2 had not resolved was reported, and
    // node 2 asked the kernel to resolve it.
    if ct("nat_no_neigh") > 0 {
        assert!(
            sync_counter(&s2, "neighbour_probes") > 0,
            "unresolved next hops, no probe: {:?}",
            s2.sync
        );
    }
    drop(x1);
}

/// The backend (1..) that answered a connection ("backend-N").
fn backend_of(c: &xlb_testbed::traffic::Connection) -> usize {
    let name = c.served_by.iter().next().expect("answered at least once");
    name.trim_start_matches("backend-")
        .parse()
        .unwrap_or_else(|_| panic!("answer {name:?}"))
}

#[test]
fn nat_pair_sigkill_of_the_master_keeps_every_connection() {
    if !require_root("nat_pair_sigkill_of_the_master_keeps_every_connection") {
        return;
    }
    nat_failover(Failure::Kill);
}

#[test]
fn nat_pair_links_of_the_master_cut_keeps_every_connection() {
    if !require_root("nat_pair_links_of_the_master_cut_keeps_every_connection") {
        return;
    }
    nat_failover(Failure::CutLinks);
}

/// Sync over a multicast group instead of a peer list: the backup
/// installs the master's flows. A reload without `[sync]` stops it (the
/// status loses its sync part); one with it back starts it again, with a
/// new epoch, and the master answers the new epoch's hello.
#[test]
fn multicast_sync_and_reloads_that_stop_and_restart_it() {
    if !require_root("multicast_sync_and_reloads_that_stop_and_restart_it") {
        return;
    }
    const CONNECTIONS: usize = 10;
    let topo = Topology::vrrp_pair(3).unwrap_or_else(|e| panic!("topology: {e:#}"));
    let group: IpAddr = "239.18.0.81".parse().unwrap();
    let multicast = |mut c: XlbConfig| {
        let s = c.sync.as_mut().expect("sync");
        s.peers = None;
        s.group = Some(group);
        c
    };
    let (x1, x2) = dsr_pair(&topo, &[1, 1, 1], 3600, multicast);
    let vip = SocketAddr::new(VIP4.into(), VIP_PORT);
    let traffic = Traffic::start(topo.client(), vip, CONNECTIONS, PERIOD, None).expect("traffic");
    let s2 = wait_sync(
        &x2,
        "the flows over multicast",
        Duration::from_secs(10),
        |s| sync_counter(s, "flows_installed") >= CONNECTIONS as u64,
    );
    let sync2 = s2.sync.as_ref().expect("sync");
    assert_eq!(sync2.mode, "multicast");
    assert!(
        sync2
            .peers
            .iter()
            .any(|p| p.address == topo.node_addr4(1).to_string()),
        "node 1 heard as a peer: {sync2:?}"
    );

    // Without [sync]: stopped.
    let path = topo.dir().join("xlb2.toml");
    let key_file = topo.dir().join("sync.key");
    let mut off = topo
        .node_config(2, &[1, 1, 1])
        .vrrp(vrrp_config(BACKUP_PRIORITY));
    off.sync = None;
    off.write(&path).expect("write");
    x2.reload().expect("reload");
    x2.wait_status("sync stopped", Duration::from_secs(5), |s| s.sync.is_none())
        .unwrap_or_else(|e| panic!("{e:#}"));
    // With it again: a new epoch, and the whole table from node 1.
    let epoch = sync2.epoch;
    multicast(
        topo.node_config(2, &[1, 1, 1])
            .vrrp(vrrp_config(BACKUP_PRIORITY))
            .sync(sync_section(&key_file, topo.node_addr4(1).into(), 3600)),
    )
    .write(&path)
    .expect("write");
    x2.reload().expect("reload");
    let s2 = wait_sync(
        &x2,
        "sync restarted with the table",
        Duration::from_secs(10),
        |s| {
            s.sync.as_ref().is_some_and(|y| y.epoch != epoch)
                && sync_counter(s, "flows_installed") + sync_counter(s, "flows_kept_newer_local")
                    >= CONNECTIONS as u64
        },
    );
    assert!(s2.sync.as_ref().unwrap().epoch > epoch);
    let report = traffic.stop();
    assert_eq!(report.survivors(), CONNECTIONS, "{}", report.summary());
    drop(x1);
}
