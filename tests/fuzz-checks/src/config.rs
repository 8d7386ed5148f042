//! `config`: the configuration file's parser and validator
//! (`lb_user::config::Config::parse`), and the status-code lists of HTTP
//! checks (`StatusCodes`), which it parses.

use std::collections::HashSet;
use std::time::Duration;

use lb_user::config::{
    CheckConfig, CheckKind, Config, ConfigErrors, FeedbackSource, MAX_NAME_LEN, MAX_WEIGHT,
    MIN_RING_SIZE, Mode, StatusCodes,
};
use lb_user::maglev::is_prime;

const ORIGIN: &str = "fuzz.toml";

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// The documented bounds of a health check (docs/config.md, `[vip.health]`).
fn check_check(c: &CheckConfig, what: &str) {
    assert!(
        (100..=3_600_000).contains(&ms(c.interval)),
        "{what}: interval {:?}",
        c.interval
    );
    assert!(
        (10..=3_600_000).contains(&ms(c.timeout)) && c.timeout <= c.interval,
        "{what}: timeout {:?}",
        c.timeout
    );
    assert!(
        (1..=100).contains(&c.rise) && (1..=100).contains(&c.fall),
        "{what}"
    );
    assert!(c.kind == CheckKind::Icmp || c.port != 0, "{what}: port 0");
    if matches!(c.kind, CheckKind::Http | CheckKind::HttpContent) {
        assert!(
            c.path.starts_with('/') && c.path.len() <= 1024,
            "{what}: path {:?}",
            c.path
        );
        assert!(
            !c.path
                .contains(|ch: char| ch.is_whitespace() || ch.is_control())
        );
        if let Some(h) = &c.host {
            assert!(
                h.len() <= 255 && !h.contains(|ch: char| ch.is_whitespace() || ch.is_control())
            );
        }
        check_status_codes(&c.expect_status, what);
    }
    assert_eq!(
        c.expect_body.is_some(),
        c.kind == CheckKind::HttpContent,
        "{what}: expect_body"
    );
    assert!(c.expect_body.as_ref().is_none_or(|b| !b.is_empty()));
}

/// Every code of a list within 100..=599, and its text parses back to it.
fn check_status_codes(s: &StatusCodes, what: &str) {
    let text = s.to_string();
    assert_eq!(
        StatusCodes::parse(&text).as_ref(),
        Ok(s),
        "{what}: {text:?} parses to another list"
    );
    assert!(
        !s.contains(99) && !s.contains(600) && !s.contains(0),
        "{what}: {text}"
    );
    for item in text.split(',') {
        let (lo, hi) = item.split_once('-').unwrap_or((item, item));
        let (lo, hi): (u16, u16) = (lo.parse().unwrap(), hi.parse().unwrap());
        assert!(100 <= lo && lo <= hi && hi <= 599, "{what}: {text}");
        assert!(s.contains(lo) && s.contains(hi));
    }
}

/// What a configuration that validated must hold (docs/config.md).
fn check_config(c: &Config) {
    assert!(!c.interface.is_empty() && c.interface.len() <= 15);
    assert!(
        c.server_interface
            .as_ref()
            .is_none_or(|s| *s != c.interface)
    );
    assert!(c.state_dir.is_absolute());
    assert!(!c.control_socket.as_os_str().is_empty());
    assert!((1024..=16 * 1024 * 1024).contains(&c.conntrack.size));

    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    for v in &c.vips {
        let what = format!("vip {:?}", v.name);
        assert!(names.insert(&v.name), "{what}: name twice");
        assert!(
            keys.insert((v.address, v.port, v.protocol)),
            "{what}: key twice"
        );
        assert!(
            (1..=MAX_NAME_LEN).contains(&v.name.len())
                && v.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)),
            "{what}: name"
        );
        assert!(
            !v.address.is_unspecified() && !v.address.is_multicast(),
            "{what}: address {}",
            v.address
        );
        assert!(
            v.ring_size >= MIN_RING_SIZE
                && v.ring_size <= lb_common::MAX_RING_SIZE
                && is_prime(v.ring_size),
            "{what}: ring_size {}",
            v.ring_size
        );
        assert!(v.backends.len() <= v.ring_size as usize);
        assert!(
            v.min_usable >= 1 && v.min_usable as usize <= v.backends.len().max(1),
            "{what}: min_usable {}",
            v.min_usable
        );
        if let Some(h) = &v.health {
            check_check(&h.check, &what);
        }
        if let Some(f) = &v.feedback {
            assert!((1..=100).contains(&f.min_weight_percent), "{what}: floor");
            assert!(f.hysteresis_percent <= 99, "{what}: hysteresis");
            assert!((100..=86_400_000).contains(&ms(f.period)), "{what}: period");
            match &f.source {
                FeedbackSource::Agent(a) => {
                    assert!(a.port != 0);
                    assert!(a.timeout < a.interval && a.interval <= f.period, "{what}");
                    assert!(a.path.as_ref().is_none_or(|p| p.starts_with('/')));
                }
                FeedbackSource::ResponseTime { target } => {
                    assert!((1..=60_000).contains(&ms(*target)), "{what}: target");
                    assert!(v.health.is_some(), "{what}: response_time without checks");
                }
            }
        }
        let mut bnames = HashSet::new();
        let mut baddrs = HashSet::new();
        for b in &v.backends {
            let what = format!("{what} backend {:?}", b.name);
            assert!(bnames.insert(&b.name), "{what}: name twice");
            assert!(baddrs.insert(b.address), "{what}: address twice");
            assert!(
                (1..=MAX_NAME_LEN).contains(&b.name.len()) && !b.name.contains(char::is_control),
                "{what}: name"
            );
            assert_eq!(b.address.is_ipv4(), v.address.is_ipv4(), "{what}: family");
            assert!(b.weight <= MAX_WEIGHT, "{what}: weight {}", b.weight);
            match (v.mode, v.port) {
                (_, 0) => assert_eq!(b.port, 0, "{what}: port under an all-ports VIP"),
                (Mode::Dsr, p) => assert_eq!(b.port, p, "{what}: DSR translates no port"),
                (Mode::Nat, _) => assert_ne!(b.port, 0, "{what}: port 0"),
            }
            if let Some(check) = &b.check {
                check_check(check, &what);
            }
        }
    }

    if let Some(vrrp) = &c.vrrp {
        assert!(!vrrp.groups.is_empty());
        assert!(vrrp.track_penalty <= 253);
        let mut vrids = HashSet::new();
        let mut grouped = Vec::new();
        for g in &vrrp.groups {
            let what = format!("vrrp group {}", g.vrid);
            assert!(g.vrid >= 1, "{what}");
            assert!(vrids.insert((g.vrid, g.is_ipv6())), "{what}: twice");
            assert!(
                (1..=254).contains(&g.priority),
                "{what}: priority {}",
                g.priority
            );
            assert!(
                (1..=lb_user::vrrp::packet::MAX_INTERVAL_CS).contains(&g.interval_cs),
                "{what}: interval {}",
                g.interval_cs
            );
            assert!(
                !g.addresses.is_empty() && g.addresses.len() <= 255,
                "{what}: {} addresses",
                g.addresses.len()
            );
            let v6 = g.is_ipv6();
            assert!(
                g.addresses.iter().all(|a| a.is_ipv6() == v6),
                "{what}: families"
            );
            assert!(!g.vips.is_empty(), "{what}: no VIPs");
            grouped.extend(g.vips.iter());
        }
        // Every VIP in exactly one group.
        let mut all: Vec<&String> = c.vips.iter().map(|v| &v.name).collect();
        all.sort();
        grouped.sort();
        assert_eq!(grouped, all, "VIPs and groups");
    }
    if let Some(s) = &c.sync {
        assert!(s.port != 0 && (1..=3600).contains(&s.refresh_s));
        assert!(s.key_file.is_absolute());
    }
    if let Some(a) = &c.announce {
        assert!(c.vrrp.is_none(), "[announce] with [vrrp]");
        assert!(!a.interface.is_empty() && a.interface.len() <= 15);
        for name in &a.vips {
            assert!(c.vips.iter().any(|v| v.name == *name), "announce {name:?}");
        }
    }
}

fn check_errors(text: &str, errors: &ConfigErrors) {
    assert!(!errors.is_empty(), "an error result without errors");
    let lines = text.split('\n').count();
    for e in errors.iter() {
        assert_eq!(e.origin, ORIGIN);
        assert!(
            e.line >= 1 && e.line <= lines && e.column >= 1,
            "{e}: not a place in the text"
        );
        let line_len = text.split('\n').nth(e.line - 1).unwrap().chars().count();
        assert!(e.column <= line_len + 1, "{e}: column past the line's end");
        assert!(!e.message.is_empty(), "{e}: no message");
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!("{ORIGIN}:{}:{}:", e.line, e.column)),
            "{shown}"
        );
    }
    // In file order.
    let places: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.column)).collect();
    assert!(places.is_sorted(), "{places:?}");
}

/// Input: the text of a configuration file.
pub fn config(data: &[u8]) {
    // `Config::load` reads the file as UTF-8: other bytes fail there.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let got = Config::parse(text, ORIGIN);
    match &got {
        Ok(c) => check_config(c),
        Err(errors) => check_errors(text, errors),
    }
    assert_eq!(
        got.as_ref().map_err(|e| &e.0),
        Config::parse(text, ORIGIN).as_ref().map_err(|e| &e.0),
        "the same text twice"
    );
    // The same bytes as an `expect_status` list.
    let codes = StatusCodes::parse(text);
    if let Ok(s) = &codes {
        check_status_codes(s, "expect_status");
    }
}
