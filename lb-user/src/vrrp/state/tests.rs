use super::*;

const ME: &str = "198.18.0.1";
const PEER_LOW: &str = "198.18.0.0"; // lower address than ME
const PEER_HIGH: &str = "198.18.0.3";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn machine(priority: u8, preempt: bool) -> Machine {
    Machine::new(Params {
        priority,
        preempt,
        interval_cs: 100,
        primary: ip(ME),
    })
}

fn advert(from: &str, priority: u8) -> Event {
    Event::Advert {
        from: ip(from),
        priority,
        interval_cs: 100,
    }
}

fn transitions(actions: &[Action]) -> Vec<(State, State)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Transition { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

fn sends(actions: &[Action]) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendAdvert { priority } => Some(*priority),
            _ => None,
        })
        .collect()
}

#[test]
fn timing_formulas_match_the_rfc() {
    // 1 s interval, priority 100: skew (156 × 100) / 256 = 60 cs.
    assert_eq!(skew_cs(100, 100), 60);
    assert_eq!(master_down_cs(100, 100), 360);
    assert_eq!(skew_cs(254, 100), 0);
    assert_eq!(skew_cs(1, 100), 99);
    assert_eq!(master_down_cs(200, 20), 64);
}

#[test]
fn startup_goes_backup_then_master_after_master_down_interval() {
    let mut m = machine(100, true);
    let a = m.handle(ms(0), Event::Startup);
    assert_eq!(transitions(&a), vec![(State::Init, State::Backup)]);
    assert_eq!(m.next_deadline(), Some(ms(3600)));
    assert!(m.poll(ms(3599)).is_empty());
    let a = m.poll(ms(3600));
    assert_eq!(transitions(&a), vec![(State::Backup, State::Master)]);
    assert_eq!(sends(&a), vec![100]);
    assert_eq!(m.master(), Some(ip(ME)));
    assert_eq!(m.last_transition().unwrap().3, Reason::MasterDown);
    // Then an advert every interval.
    assert_eq!(m.next_deadline(), Some(ms(4600)));
    assert_eq!(sends(&m.poll(ms(4600))), vec![100]);
    assert_eq!(m.next_deadline(), Some(ms(5600)));
}

#[test]
fn adverts_from_a_master_keep_a_backup_backup() {
    let mut m = machine(100, true);
    m.handle(ms(0), Event::Startup);
    for t in (0..10_000).step_by(1000) {
        assert!(m.handle(ms(t), advert(PEER_HIGH, 150)).is_empty());
        assert!(transitions(&m.poll(ms(t + 999))).is_empty());
    }
    assert_eq!(m.state(), State::Backup);
    assert_eq!(m.master(), Some(ip(PEER_HIGH)));
    // The master falls silent: master-down after its last advert.
    assert!(m.poll(ms(9000 + 3599)).is_empty());
    assert_eq!(
        transitions(&m.poll(ms(9000 + 3600))),
        vec![(State::Backup, State::Master)]
    );
}

#[test]
fn backup_uses_the_masters_interval() {
    let mut m = machine(100, true);
    m.handle(ms(0), Event::Startup);
    m.handle(
        ms(0),
        Event::Advert {
            from: ip(PEER_HIGH),
            priority: 150,
            interval_cs: 20,
        },
    );
    assert_eq!(m.master_interval_cs(), 20);
    // 3 × 20 + (156 × 20) / 256 = 60 + 12 = 72 cs.
    assert_eq!(m.next_deadline(), Some(ms(720)));
}

#[test]
fn preempt_on_ignores_lower_priority_master_and_takes_over() {
    let mut m = machine(100, true);
    m.handle(ms(0), Event::Startup);
    for t in (0..5000).step_by(1000) {
        m.handle(ms(t), advert(PEER_HIGH, 50));
    }
    // The lower master's adverts did not reset the timer.
    let a = m.poll(ms(3600));
    assert_eq!(transitions(&a), vec![(State::Backup, State::Master)]);
    // As master, a lower-priority advert is ignored: the other side steps down.
    assert!(m.handle(ms(3700), advert(PEER_HIGH, 50)).is_empty());
    assert_eq!(m.state(), State::Master);
}

#[test]
fn preempt_off_accepts_lower_priority_master() {
    let mut m = machine(100, false);
    m.handle(ms(0), Event::Startup);
    for t in (0..10_000).step_by(1000) {
        m.handle(ms(t), advert(PEER_HIGH, 50));
        assert!(m.poll(ms(t + 999)).is_empty());
    }
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn master_steps_down_for_higher_priority() {
    let mut m = machine(100, true);
    m.handle(ms(0), Event::Startup);
    m.poll(ms(3600));
    let a = m.handle(ms(4000), advert(PEER_LOW, 101));
    assert_eq!(transitions(&a), vec![(State::Master, State::Backup)]);
    assert!(sends(&a).is_empty());
    assert_eq!(m.master(), Some(ip(PEER_LOW)));
    assert_eq!(
        m.last_transition().unwrap().3,
        Reason::Preempted {
            by: ip(PEER_LOW),
            priority: 101
        }
    );
    assert_eq!(m.next_deadline(), Some(ms(4000 + 3600)));
}

#[test]
fn equal_priority_tie_breaks_by_primary_address() {
    let mut m = machine(100, true);
    m.handle(ms(0), Event::Startup);
    m.poll(ms(3600));
    // Lower address, same priority: we stay master.
    assert!(m.handle(ms(4000), advert(PEER_LOW, 100)).is_empty());
    assert_eq!(m.state(), State::Master);
    // Higher address, same priority: it wins.
    let a = m.handle(ms(4100), advert(PEER_HIGH, 100));
    assert_eq!(transitions(&a), vec![(State::Master, State::Backup)]);
}

#[test]
fn ipv6_tie_break_compares_whole_addresses() {
    let mut m = Machine::new(Params {
        priority: 100,
        preempt: true,
        interval_cs: 100,
        primary: ip("fe80::1:0"),
    });
    m.handle(ms(0), Event::Startup);
    m.poll(ms(3600));
    assert!(m.handle(ms(3700), advert("fe80::ffff", 100)).is_empty());
    assert_eq!(m.state(), State::Master);
    m.handle(ms(3800), advert("fe80::2:0", 100));
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn resigning_master_hands_over_after_skew_time() {
    let mut m = machine(100, true);
    m.handle(ms(0), Event::Startup);
    m.handle(ms(1000), advert(PEER_HIGH, 200));
    assert!(m.handle(ms(2000), advert(PEER_HIGH, 0)).is_empty());
    // Skew = 60 cs at priority 100.
    assert_eq!(m.next_deadline(), Some(ms(2600)));
    assert!(m.poll(ms(2599)).is_empty());
    let a = m.poll(ms(2600));
    assert_eq!(transitions(&a), vec![(State::Backup, State::Master)]);
    assert_eq!(m.last_transition().unwrap().3, Reason::MasterResigned);
}

#[test]
fn shutdown_of_a_master_resigns() {
    let mut m = machine(100, true);
    m.handle(ms(0), Event::Startup);
    m.poll(ms(3600));
    let a = m.handle(ms(4000), Event::Shutdown);
    assert_eq!(sends(&a), vec![0]);
    assert_eq!(transitions(&a), vec![(State::Master, State::Init)]);
    assert_eq!(m.next_deadline(), None);
}

#[test]
fn master_answers_another_resignation() {
    let mut m = machine(100, true);
    m.handle(ms(0), Event::Startup);
    m.poll(ms(3600));
    let a = m.handle(ms(3700), advert(PEER_HIGH, 0));
    assert_eq!(sends(&a), vec![100]);
    assert_eq!(m.state(), State::Master);
    assert_eq!(m.next_deadline(), Some(ms(4700)));
}

#[test]
fn tracking_fault_resigns_mastership_and_blocks_it() {
    let mut m = machine(100, true);
    m.handle(ms(0), Event::Startup);
    m.poll(ms(3600));
    let a = m.handle(
        ms(4000),
        Event::Tracking {
            fault: true,
            penalty: 0,
        },
    );
    assert_eq!(sends(&a), vec![0]);
    assert_eq!(transitions(&a), vec![(State::Master, State::Fault)]);
    // No timers: never becomes master, whatever it hears.
    assert_eq!(m.next_deadline(), None);
    assert!(m.poll(ms(100_000)).is_empty());
    m.handle(ms(100_000), advert(PEER_LOW, 1));
    assert_eq!(m.state(), State::Fault);
    let a = m.handle(
        ms(200_000),
        Event::Tracking {
            fault: false,
            penalty: 0,
        },
    );
    assert_eq!(transitions(&a), vec![(State::Fault, State::Backup)]);
    assert_eq!(m.next_deadline(), Some(ms(203_600)));
}

#[test]
fn fault_before_startup_starts_in_fault() {
    let mut m = machine(100, true);
    m.handle(
        ms(0),
        Event::Tracking {
            fault: true,
            penalty: 0,
        },
    );
    assert_eq!(m.state(), State::Init);
    let a = m.handle(ms(0), Event::Startup);
    assert_eq!(transitions(&a), vec![(State::Init, State::Fault)]);
}

#[test]
fn tracking_penalty_lowers_priority_and_lets_a_preempting_peer_win() {
    let mut m = machine(150, true);
    m.handle(ms(0), Event::Startup);
    m.poll(ms(3600));
    m.handle(
        ms(4000),
        Event::Tracking {
            fault: false,
            penalty: 100,
        },
    );
    assert_eq!(m.priority(), 50);
    assert_eq!(sends(&m.poll(ms(4600))), vec![50]);
    // A backup at 100 with preemption sees 50 < 100, takes over, and
    // its advert makes us step down.
    let a = m.handle(ms(5000), advert(PEER_LOW, 100));
    assert_eq!(transitions(&a), vec![(State::Master, State::Backup)]);
    // Penalty never drives the priority to 0 (that would mean resigning).
    m.handle(
        ms(6000),
        Event::Tracking {
            fault: false,
            penalty: 255,
        },
    );
    assert_eq!(m.priority(), 1);
}

#[test]
fn a_resumed_master_adverts_at_once_and_keeps_advertising() {
    let mut m = machine(150, true);
    let a = m.handle(ms(0), Event::Resume);
    assert_eq!(transitions(&a), [(State::Init, State::Master)]);
    assert!(a.contains(&Action::SendAdvert { priority: 150 }), "{a:?}");
    assert_eq!(m.master(), Some(ip(ME)));
    let a = m.poll(ms(1000));
    assert_eq!(a, [Action::SendAdvert { priority: 150 }]);
    // Resume is only for a machine that has not started.
    assert!(m.handle(ms(1100), Event::Resume).is_empty());
}

#[test]
fn a_resumed_master_yields_to_a_better_master_that_took_over_meanwhile() {
    let mut m = machine(100, true);
    m.handle(ms(0), Event::Resume);
    let a = m.handle(ms(10), advert(PEER_HIGH, 150));
    assert_eq!(transitions(&a), [(State::Master, State::Backup)]);
}

#[test]
fn a_resume_under_failed_tracking_is_a_fault() {
    let mut m = machine(150, true);
    m.handle(
        ms(0),
        Event::Tracking {
            fault: true,
            penalty: 0,
        },
    );
    let a = m.handle(ms(0), Event::Resume);
    assert_eq!(transitions(&a), [(State::Init, State::Fault)]);
}
