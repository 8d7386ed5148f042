//! `[vip.feedback]` in the controller: ring weights scaled by the damped
//! percent, VIPs without feedback exactly as before.

use super::*;
use crate::{
    feedback::{AgentResult, Answer, reply},
    maglev::Member,
};

const AGENT: &str = "[vip.feedback]\nsource = \"agent\"\nport = 9000\ninterval_ms = 100\ntimeout_ms = 50\nperiod_ms = 100";

fn answer(last: u8, text: &str) -> AgentResult {
    AgentResult {
        vip: key(),
        addr: ip(last),
        task: 1,
        answer: Answer::Reply {
            text: text.into(),
            parsed: reply::parse(text.as_bytes()),
        },
    }
}

fn members(c: &Controller<MemoryMaps>) -> Vec<Member> {
    c.vips[&key()].ring.as_ref().unwrap().members.clone()
}

#[test]
fn a_vip_without_feedback_builds_the_ring_input_and_digest_it_always_did() {
    let mut c = controller();
    c.apply(
        &config(&[(11, 1), (12, 3), (13, 0)]),
        &mut table(&[11, 12, 13]),
    )
    .unwrap();
    // Members as the controller built them before feedback existed: the
    // identity and the weight in use, nothing scaled.
    let before = vip::RingInput {
        size: 13,
        members: vec![
            Member {
                identity: maglev::identity(ip(11), 80),
                weight: 1,
            },
            Member {
                identity: maglev::identity(ip(12), 80),
                weight: 3,
            },
        ],
    };
    assert_eq!(members(&c), before.members);
    assert_eq!(c.maps().ring_digests[&0], before.digest());
    let s = c.status().unwrap();
    assert_eq!(s.vips[0].backends[1].effective_weight, 3);
    assert_eq!(s.vips[0].backends[1].feedback, None);
}

#[test]
fn an_agent_reply_scales_the_ring_weight_and_only_a_change_rebuilds_the_ring() {
    let mut c = controller();
    let mut n = table(&[11, 12]);
    c.apply(&config_with(&[(11, 1), (12, 2)], AGENT), &mut n)
        .unwrap();
    // Until an agent answers: weight × 100 %.
    assert_eq!(
        members(&c).iter().map(|m| m.weight).collect::<Vec<_>>(),
        [100, 200]
    );
    let installs = c.maps().ring_installs;
    c.record_feedback([answer(11, "25%\n"), answer(12, "0\n")])
        .unwrap();
    assert_eq!(
        members(&c).iter().map(|m| m.weight).collect::<Vec<_>>(),
        [25, 200],
        "load 0 is 100 % of the weight: no change for b12"
    );
    assert_eq!(c.maps().ring_installs, installs + 1, "one ring for both");
    assert_eq!(
        c.maps().rings[&0],
        expected_ring(&[(11, 1, 25), (12, 2, 200)])
    );
    // The same answers again, a bad reply, silence: no new ring.
    c.record_feedback([
        answer(11, "25%"),
        answer(12, "nonsense"),
        AgentResult {
            answer: Answer::NoAnswer("refused".into()),
            ..answer(12, "")
        },
    ])
    .unwrap();
    assert_eq!(c.maps().ring_installs, installs + 1);
    let s = c.status().unwrap();
    let (b11, b12) = (&s.vips[0].backends[0], &s.vips[0].backends[1]);
    assert_eq!((b11.weight, b11.effective_weight), (1, 25));
    let f = b12.feedback.as_ref().unwrap();
    assert_eq!((f.source.as_str(), f.percent), ("agent", 100));
    assert_eq!((f.bad_replies, f.unanswered), (1, 1));
    // Drained: 0 whatever the percent.
    c.backend_action("web", "b11", BackendAction::Drain)
        .unwrap();
    assert_eq!(c.status().unwrap().vips[0].backends[0].effective_weight, 0);
    assert_eq!(
        c.maps().rings[&0],
        expected_ring(&[(12, 2, 200)]),
        "a drained backend leaves the ring"
    );
}

#[test]
fn response_times_of_passed_checks_weight_the_backends() {
    let extra = "[vip.health]\ntype = \"tcp\"\nrise = 1\nfall = 1\n\
                 [vip.feedback]\nsource = \"response_time\"\ntarget_ms = 10\nperiod_ms = 100";
    let mut c = controller();
    c.apply(
        &config_with(&[(11, 1), (12, 1)], extra),
        &mut table(&[11, 12]),
    )
    .unwrap();
    let check = |ok: bool, ms: u64| Outcome {
        ok,
        latency: Duration::from_millis(ms),
        detail: String::new(),
    };
    c.record_check(&key(), ip(11), check(true, 40)).unwrap();
    c.record_check(&key(), ip(12), check(true, 2)).unwrap();
    // 100 × 10 / 40 = 25 %.
    assert_eq!(
        members(&c).iter().map(|m| m.weight).collect::<Vec<_>>(),
        [25, 100]
    );
    // A failed check's duration (a timeout) is not a response time.
    std::thread::sleep(Duration::from_millis(110));
    c.record_check(&key(), ip(12), check(false, 1000)).unwrap();
    let s = c.status().unwrap();
    assert_eq!(
        s.vips[0].backends[1].feedback.as_ref().unwrap().percent,
        100
    );
}

#[test]
fn a_reload_keeps_the_effective_percent_and_removing_feedback_restores_the_weights() {
    let mut c = controller();
    let mut n = table(&[11, 12]);
    let cfg = config_with(&[(11, 1), (12, 1)], AGENT);
    c.apply(&cfg, &mut n).unwrap();
    c.record_feedback([answer(11, "50%")]).unwrap();
    let installs = c.maps().ring_installs;
    c.apply(
        &config_with(&[(11, 1), (12, 1), (13, 1)], AGENT),
        &mut table(&[11, 12, 13]),
    )
    .unwrap();
    assert_eq!(
        members(&c).iter().map(|m| m.weight).collect::<Vec<_>>(),
        [50, 100, 100],
        "the percent survives a reload that changes the VIP"
    );
    c.apply(
        &config(&[(11, 1), (12, 1), (13, 1)]),
        &mut table(&[11, 12, 13]),
    )
    .unwrap();
    assert_eq!(
        members(&c).iter().map(|m| m.weight).collect::<Vec<_>>(),
        [1, 1, 1]
    );
    assert_eq!(c.maps().ring_installs, installs + 2);
}

#[test]
fn a_backend_added_at_runtime_follows_its_vips_feedback_and_its_agent_is_asked() {
    let mut c = controller();
    let mut n = table(&[11, 12, 13]);
    let with_agent = config_with(&[(11, 1), (12, 1)], AGENT);
    c.apply(&with_agent, &mut n).unwrap();
    let spec = crate::api::BackendSpec {
        address: ip(13),
        port: None,
        weight: Some(1),
        tier: None,
    };
    c.add_backend("web", &spec, &mut n).unwrap();
    let asked = |c: &Controller<MemoryMaps>| {
        let mut a: Vec<IpAddr> = c.agent_targets().iter().map(|t| t.1).collect();
        a.sort();
        a
    };
    assert_eq!(
        asked(&c),
        [ip(11), ip(12), ip(13)],
        "asked as the file's are"
    );
    c.record_feedback([answer(13, "25%")]).unwrap();
    assert_eq!(
        members(&c).iter().map(|m| m.weight).collect::<Vec<_>>(),
        [100, 100, 25]
    );
    // A reload keeps it, and its feedback state with it.
    c.apply(&with_agent, &mut n).unwrap();
    let f = c.status().unwrap().vips[0].backends[2].feedback.clone();
    assert_eq!(f.map(|f| f.percent), Some(25));
    // Feedback gone from the file: gone for it too.
    c.apply(&config(&[(11, 1), (12, 1)]), &mut n).unwrap();
    assert!(c.agent_targets().is_empty());
    assert_eq!(c.status().unwrap().vips[0].backends[2].feedback, None);
    assert_eq!(
        members(&c).iter().map(|m| m.weight).collect::<Vec<_>>(),
        [1, 1, 1]
    );
}
