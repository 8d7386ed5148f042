//! `xlb backend add|remove` on [`MemoryMaps`]: the same checks as the
//! file, the ring on return, and what reloads and restarts keep.

use super::*;
use crate::api::{BackendSource, BackendSpec};

fn spec(last: u8, weight: u32) -> BackendSpec {
    BackendSpec {
        address: ip(last),
        port: None,
        weight: Some(weight),
        tier: None,
    }
}

fn source(c: &Controller<MemoryMaps>, backend: &str) -> BackendSource {
    c.status().unwrap().vips[0]
        .backends
        .iter()
        .find(|b| b.name == backend)
        .unwrap_or_else(|| panic!("no backend {backend}"))
        .source
}

/// "web" with b11 and b12, applied, every MAC of 11..=20 known.
fn serving() -> (Controller<MemoryMaps>, Table, Config) {
    let mut c = controller();
    let mut n = table(&(11..=20).collect::<Vec<u8>>());
    let cfg = config(&[(11, 1), (12, 1)]);
    c.apply(&cfg, &mut n).unwrap();
    (c, n, cfg)
}

#[test]
fn an_added_backend_is_in_the_ring_when_the_call_returns() {
    let (mut c, mut n, _) = serving();
    let installs = c.maps().ring_installs;
    let added = c.add_backend("web", &spec(13, 2), &mut n).unwrap();
    assert!(added.in_ring, "{added:?}");
    assert_eq!(added.name, "198.18.0.13");
    assert!(
        added
            .message
            .contains("added at runtime (port 80, weight 2), in the ring"),
        "{}",
        added.message
    );
    assert_eq!(c.maps().ring_installs, installs + 1, "one ring install");
    assert_eq!(
        c.maps().rings[&0],
        expected_ring(&[(11, 1, 1), (12, 2, 1), (13, 3, 2)])
    );
    assert_eq!(state(&c, "198.18.0.13"), BackendState::Active);
    assert_eq!(source(&c, "198.18.0.13"), BackendSource::Runtime);
    assert_eq!(source(&c, "b11"), BackendSource::File);
    assert_eq!(
        c.maps().owners[&3].flags & lb_common::OWNER_F_RUNTIME,
        lb_common::OWNER_F_RUNTIME
    );
    assert_eq!(
        c.maps().owners[&3].weight_override,
        2,
        "its weight, for a restart"
    );
}

#[test]
fn bad_additions_are_refused_with_a_reason_and_change_nothing() {
    let (mut c, mut n, _) = serving();
    let writes = c.maps().writes;
    let v6 = BackendSpec {
        address: "fd00::13".parse().unwrap(),
        ..spec(13, 1)
    };
    let multicast = BackendSpec {
        address: "224.0.0.9".parse().unwrap(),
        ..spec(13, 1)
    };
    let cases: [(&str, BackendSpec, &str); 6] = [
        (
            "web",
            spec(11, 1),
            "VIP web already has backend 198.18.0.11 (\"b11\", from the file)",
        ),
        (
            "web",
            v6,
            "IPv6 backend fd00::13 under IPv4 VIP 198.18.0.100",
        ),
        (
            "web",
            multicast,
            "224.0.0.9 cannot be a backend: multicast address",
        ),
        (
            "web",
            spec(13, 10_001),
            "weight 10001 is out of range 0..=10000",
        ),
        (
            "web",
            BackendSpec {
                port: Some(8080),
                ..spec(13, 1)
            },
            "port 8080 differs from the VIP's port 80",
        ),
        ("nope", spec(13, 1), "no VIP named \"nope\""),
    ];
    for (vip, s, want) in cases {
        let err = c.add_backend(vip, &s, &mut n).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains(want), "{vip} {s:?}: {err}");
    }
    assert_eq!(c.maps().writes, writes, "nothing written");
    assert_eq!(c.status().unwrap().vips[0].backends.len(), 2);
}

#[test]
fn a_vip_takes_no_more_backends_than_its_ring_has_slots() {
    let (mut c, _, _) = serving();
    let mut n = table(&(11..=30).collect::<Vec<u8>>());
    // ring_size 13, two from the file.
    for last in 13..24 {
        c.add_backend("web", &spec(last, 1), &mut n).unwrap();
    }
    let err = c.add_backend("web", &spec(24, 1), &mut n).unwrap_err();
    assert!(
        format!("{err:#}").contains("has 13 backends, as many as its ring_size 13 has slots"),
        "{err:#}"
    );
    // And a reload whose file would overfill the ring with them is refused.
    let cfg = config(&[(11, 1), (12, 1), (24, 1)]);
    let err = c.apply(&cfg, &mut n).unwrap_err();
    assert!(
        format!("{err}").contains("remove runtime backends first"),
        "{err}"
    );
}

#[test]
fn a_removed_runtime_backend_finishes_its_flows_and_comes_back_with_its_id() {
    let (mut c, mut n, _) = serving();
    c.add_backend("web", &spec(13, 1), &mut n).unwrap();
    let msg = c.remove_backend("web", "198.18.0.13").unwrap();
    assert!(msg.contains("removed"), "{msg}");
    assert_eq!(c.maps().rings[&0], expected_ring(&[(11, 1, 1), (12, 2, 1)]));
    assert_eq!(state(&c, "198.18.0.13"), BackendState::Removed);
    // Its entry stays for its established flows.
    assert_eq!(
        c.maps().backends[&3].flags & BACKEND_F_ACTIVE,
        BACKEND_F_ACTIVE
    );
    let err = c.remove_backend("web", "b11").unwrap_err();
    assert!(
        format!("{err:#}").contains("is in the configuration file"),
        "{err:#}"
    );
    let err = c.remove_backend("web", "198.18.0.99").unwrap_err();
    assert!(format!("{err:#}").contains("no backend named"), "{err:#}");
    // Added again within its grace: same id and generation.
    c.add_backend("web", &spec(13, 1), &mut n).unwrap();
    assert_eq!(ids(&c)[2], ("198.18.0.13".into(), 3));
    assert_eq!(c.maps().backends[&3].generation, 1);
    assert_eq!(state(&c, "198.18.0.13"), BackendState::Active);
}

#[test]
fn a_reload_keeps_runtime_backends_and_the_file_can_take_them_over() {
    let (mut c, mut n, cfg) = serving();
    c.add_backend("web", &spec(13, 3), &mut n).unwrap();
    c.add_backend("web", &spec(14, 1), &mut n).unwrap();
    c.backend_action("web", "198.18.0.14", BackendAction::Drain)
        .unwrap();
    assert_eq!(c.runtime_overrides(), 0, "a reload does not reset it");
    c.apply(&cfg, &mut n).unwrap();
    assert_eq!(source(&c, "198.18.0.13"), BackendSource::Runtime);
    assert_eq!(
        state(&c, "198.18.0.14"),
        BackendState::Draining,
        "still drained"
    );
    assert_eq!(
        c.maps().rings[&0],
        expected_ring(&[(11, 1, 1), (12, 2, 1), (13, 3, 3)])
    );
    // The file names 198.18.0.13 now: it is the file's, with the file's
    // name and weight, and the same id.
    c.apply(&config(&[(11, 1), (12, 1), (13, 1)]), &mut n)
        .unwrap();
    assert_eq!(source(&c, "b13"), BackendSource::File);
    assert_eq!(ids(&c)[2], ("b13".into(), 3));
    assert_eq!(
        c.maps().rings[&0],
        expected_ring(&[(11, 1, 1), (12, 2, 1), (13, 3, 1)])
    );
    // And the file dropping it again retires it, as any file backend.
    c.apply(&cfg, &mut n).unwrap();
    assert_eq!(state(&c, "b13"), BackendState::Removed);
    assert_eq!(source(&c, "198.18.0.14"), BackendSource::Runtime);
}

#[test]
fn a_runtime_backend_gets_its_vips_health_check() {
    let health = "[vip.health]\ntype = \"tcp\"\nrise = 1\nfall = 1";
    let mut c = controller();
    let mut n = table(&[11, 13]);
    c.apply(&config_with(&[(11, 1)], health), &mut n).unwrap();
    let added = c.add_backend("web", &spec(13, 1), &mut n).unwrap();
    assert!(!added.in_ring, "out until its check passes");
    assert!(
        added.message.contains("until its health check passes"),
        "{}",
        added.message
    );
    // Checked as the file's backend is: both are the daemon's targets.
    let targets = c.check_targets();
    assert_eq!(targets.len(), 2, "{targets:?}");
    let checks: Vec<_> = targets.iter().filter(|t| t.1 == ip(13)).collect();
    assert_eq!(checks.len(), 1);
    assert_eq!((checks[0].1, checks[0].2.port), (ip(13), 80));
    c.record_check(&key(), ip(13), outcome(true)).unwrap();
    assert!(c.in_ring(&key(), ip(13)));
}

#[test]
fn a_restart_restores_runtime_backends_and_writes_nothing() {
    let (mut c, mut n, cfg) = serving();
    c.add_backend("web", &spec(13, 3), &mut n).unwrap();
    c.backend_action("web", "198.18.0.13", BackendAction::Weight(4))
        .unwrap();
    let (mut next, found) = restarted(&c);
    assert_eq!(found.backends, 3);
    next.apply(&cfg, &mut n).unwrap();
    assert_eq!(next.maps().writes, 0, "{:?}", next.maps());
    assert_eq!(source(&next, "198.18.0.13"), BackendSource::Runtime);
    let b = next.status().unwrap().vips[0].backends[2].clone();
    assert_eq!((b.weight, b.config_weight, b.weight_override), (4, 4, None));
    assert_eq!(
        next.maps().rings[&0],
        expected_ring(&[(11, 1, 1), (12, 2, 1), (13, 3, 4)])
    );
    // Removable after the restart, as before it.
    next.remove_backend("web", "198.18.0.13").unwrap();
    assert_eq!(
        next.maps().rings[&0],
        expected_ring(&[(11, 1, 1), (12, 2, 1)])
    );
}

#[test]
fn a_vip_gone_from_the_file_takes_its_runtime_backends_with_it() {
    let mut n = table(&[11, 13, 21]);
    let mut c = controller();
    c.apply(&two_vips(&[(11, 1)], true), &mut n).unwrap();
    c.add_backend("old", &spec(13, 1), &mut n).unwrap();
    c.apply(&two_vips(&[(11, 1)], false), &mut n).unwrap();
    let s = c.status().unwrap();
    assert!(
        s.vips
            .iter()
            .flat_map(|v| &v.backends)
            .all(|b| b.source == BackendSource::File && b.address != "198.18.0.13"),
        "{s:?}"
    );
}

#[test]
fn a_runtime_backup_waits_in_its_tier_and_keeps_it_across_a_restart() {
    let (mut c, mut n, cfg) = serving();
    let backup = BackendSpec {
        tier: Some(1),
        ..spec(13, 1)
    };
    c.add_backend("web", &backup, &mut n).unwrap();
    // Two primaries reach min_usable 1: the backup stays out of the ring.
    assert_eq!(state(&c, "198.18.0.13"), BackendState::Backup);
    assert_eq!(c.maps().rings[&0], expected_ring(&[(11, 1, 1), (12, 2, 1)]));
    assert_eq!(c.maps().owners[&3].tier, 1);
    let (next, _) = restarted(&c);
    let mut next = next;
    next.apply(&cfg, &mut n).unwrap();
    let b = next.status().unwrap().vips[0].backends[2].clone();
    assert_eq!((b.tier, b.state), (1, BackendState::Backup));
    assert_eq!(next.maps().writes, 0, "{:?}", next.maps());
}
