//! NAT under connection-table pressure, end to end: the two-armed NAT
//! topology with the smallest connection table xlb takes (`[conntrack]
//! size = 1024`: 1024 entries in `FLOWS`, as many in `NAT_REVERSE`), 50
//! long-lived keep-alive connections that each send a request every
//! 200 ms, and, while they send, three floods of 30 times the table in new
//! flows (TCP SYNs from off-subnet sources, written onto the client
//! segment by the test, 10,240 a second: the table turns over every
//! 100 ms, between a connection's requests but not within one).
//!
//! Each SYN is a new NAT flow (NAT flows bypass the insert budget) and
//! writes an entry in both tables, and the backends' SYN-ACKs keep the
//! flood's reverse entries in use, so the LRU evicts the live
//! connections' reverse entries while their forward entries stay. Each
//! such connection's next packet hits its forward entry, finds its
//! reverse entry gone and writes it again (`nat_reverse_restored`), before
//! the backend answers: every connection keeps working, on its backend.
//! (Before that rule, none did: their answers left untranslated.) Needs
//! root.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use xlb_testbed::{
    config::Conntrack,
    inject,
    running::{conntrack_counter, require_root, status, wait_ready, xlb_exe},
    topology::{NatLayout, NatTopology, VIP_PORT, VIP4},
    traffic::Traffic,
};

/// `[conntrack] size`: the smallest allowed.
const TABLE: u32 = 1024;
const LONG_LIVED: usize = 50;
const PERIOD: Duration = Duration::from_millis(200);
/// SYNs per flood, and floods.
const FLOOD: usize = 30 * TABLE as usize;
const FLOODS: usize = 3;
/// SYNs a second: the table turns over every 100 ms, well within the
/// time of a connection's request and answer.
const FLOOD_RATE: u32 = 10 * TABLE;
const BACKENDS: [(usize, u32); 3] = [(1, 1), (2, 1), (3, 1)];

#[test]
fn long_lived_nat_connections_survive_floods_of_new_flows_through_a_small_table() {
    if !require_root("long_lived_nat_connections_survive_floods_of_new_flows_through_a_small_table")
    {
        return;
    }
    let topo = NatTopology::build(NatLayout::TwoArmed, BACKENDS.len())
        .unwrap_or_else(|e| panic!("topology: {e:#}"));
    let config = topo
        .xlb_config(&BACKENDS)
        .conntrack(Conntrack {
            size: Some(TABLE),
            ..Conntrack::default()
        })
        .write(&topo.config_path())
        .expect("write xlb config");
    let xlb = topo.start_xlb(&xlb_exe(), &config).expect("start xlb");
    wait_ready(&xlb);

    let vip = SocketAddr::new(VIP4.into(), VIP_PORT);
    let traffic = Traffic::start(topo.client(), vip, LONG_LIVED, PERIOD, None).expect("traffic");
    let before = status(&xlb);
    let client_if = topo.client_ifname();
    let src_mac = inject::mac_of(topo.client(), &client_if).unwrap();
    let dst_mac = inject::mac_of(topo.lb(), &topo.lb_ifname()).unwrap();
    let started = Instant::now();
    let mut sent = 0;
    for round in 0..FLOODS {
        // Off-subnet sources: the backends' answers, translated, have
        // nowhere to go, and no client resets them. Each round its own
        // sources, so every SYN is a new flow.
        let first = Ipv4Addr::new(198, 18, 100 + round as u8 * 25, 1);
        let flooded = inject::syn_flood_paced(
            topo.client(),
            &client_if,
            (src_mac, dst_mac),
            first,
            vip,
            FLOOD,
            Some(FLOOD_RATE),
        )
        .expect("flood");
        sent += flooded.sent;
        // Let the connections go on between floods.
        std::thread::sleep(Duration::from_millis(500));
    }
    let flooding = started.elapsed();
    let after = status(&xlb);
    let report = traffic.stop();
    let delta = |name: &str| conntrack_counter(&after, name) - conntrack_counter(&before, name);
    let (inserted, restored, midflow) = (
        delta("insert"),
        delta("nat_reverse_restored"),
        delta("miss_midflow"),
    );
    let _ = writeln!(
        std::io::stderr(),
        "{sent} SYNs in {} floods over {:.1} s; inserted {inserted} entries into a table of \
         {TABLE}; {midflow} mid-flow misses (forward entries lost), {restored} reverse entries \
         restored; {}",
        FLOODS,
        flooding.as_secs_f64(),
        report.summary()
    );
    // The veths drop what their queues cannot take: what arrived is what
    // was inserted, and that must be far more than the table holds.
    assert!(
        inserted >= 10 * u64::from(TABLE),
        "only {inserted} new entries for {sent} SYNs: no pressure on a table of {TABLE}"
    );
    assert_eq!(
        report.survivors(),
        LONG_LIVED,
        "{}: {:?}\n--- xlb log ---\n{}",
        report.summary(),
        report.errors(5),
        xlb.log_tail(20)
    );
    assert!(
        restored > 0,
        "the floods evicted no live connection's reverse entry: the rule went untested"
    );
    assert!(
        report.moved().is_empty(),
        "connections changed backend: {:?}",
        report.moved()
    );
}
