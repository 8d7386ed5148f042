//! Parsing and validation of health-check tables.

use super::super::{Config, ConfigError};
use super::*;

const ORIGIN: &str = "xlb.toml";

/// A VIP on port 80 (`[[vip]]` on line 2) with `health` as its
/// `[vip.health]` body (line 6 on), then two backends, the second with
/// `backend2` appended to it.
fn text(health: &str, backend2: &str) -> String {
    format!(
        "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.100\"\nport = 80\n\
         [vip.health]\n{health}\n\
         [[vip.backend]]\naddress = \"198.18.0.11\"\n\
         [[vip.backend]]\naddress = \"198.18.0.12\"\n{backend2}"
    )
}

fn errors(text: &str) -> Vec<ConfigError> {
    match Config::parse(text, ORIGIN) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => e.0,
    }
}

/// The single error: "line:col field: message".
#[track_caller]
fn one(text: &str) -> String {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:?}");
    format!(
        "{}:{} {}: {}",
        e[0].line, e[0].column, e[0].field, e[0].message
    )
}

fn checks(text: &str) -> Vec<Option<CheckConfig>> {
    Config::parse(text, ORIGIN)
        .unwrap_or_else(|e| panic!("{e}"))
        .vips[0]
        .backends
        .iter()
        .map(|b| b.check.clone())
        .collect()
}

#[test]
fn status_code_lists() {
    let s = StatusCodes::parse("200-204, 301,4xx").unwrap();
    for (code, want) in [
        (200, true),
        (204, true),
        (205, false),
        (301, true),
        (302, false),
    ] {
        assert_eq!(s.contains(code), want, "{code}");
    }
    assert!(s.contains(404) && s.contains(499) && !s.contains(500));
    assert_eq!(s.to_string(), "200-204,301,400-499");
    for bad in [
        "", "200,", "abc", "600", "99", "204-200", "200-", "9xx", "2x",
    ] {
        assert!(StatusCodes::parse(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(
        StatusCodes::parse("204-200").unwrap_err(),
        "\"204-200\": range runs backwards"
    );
}

#[test]
fn no_health_table_means_no_checks() {
    let t = "interface = \"eth0\"\n[[vip]]\nname = \"w\"\naddress = \"198.18.0.100\"\n\
             [[vip.backend]]\naddress = \"198.18.0.11\"\n";
    assert_eq!(checks(t), [None]);
    assert_eq!(
        Config::parse(t, ORIGIN).unwrap().vips[0].on_down,
        OnDown::Keep
    );
}

#[test]
fn defaults_and_vip_port() {
    let c = checks(&text("type = \"http\"", ""));
    let c = c[0].as_ref().unwrap();
    assert_eq!(c.kind, CheckKind::Http);
    assert_eq!(c.port, 80);
    assert_eq!(c.interval, Duration::from_millis(DEFAULT_INTERVAL_MS));
    assert_eq!(c.timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS));
    assert_eq!((c.rise, c.fall), (DEFAULT_RISE, DEFAULT_FALL));
    assert_eq!(c.path, "/");
    assert_eq!(c.host, None);
    assert_eq!(c.expect_status.to_string(), "200-299");
    assert_eq!(c.describe(), "http GET :80/ expect 200-299");
}

#[test]
fn every_field_and_per_backend_override() {
    let t = text(
        "type = \"http_content\"\nport = 8080\ninterval_ms = 500\ntimeout_ms = 200\n\
         rise = 3\nfall = 4\npath = \"/health\"\nhost = \"www.example\"\n\
         expect_status = \"200,204\"\nexpect_body = \"OK\"\ntls = false\non_down = \"reschedule\"",
        "[vip.backend.health]\ntype = \"tcp\"\nport = 22\nfall = 1\n",
    );
    let config = Config::parse(&t, ORIGIN).unwrap();
    assert_eq!(config.vips[0].on_down, OnDown::Reschedule);
    let b1 = config.vips[0].backends[0].check.clone().unwrap();
    assert_eq!(
        b1,
        CheckConfig {
            kind: CheckKind::HttpContent,
            port: 8080,
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(200),
            rise: 3,
            fall: 4,
            path: "/health".into(),
            host: Some("www.example".into()),
            expect_status: StatusCodes::parse("200,204").unwrap(),
            expect_body: Some("OK".into()),
        }
    );
    // The override changes type, port and fall; the rest is inherited
    // (and the inherited HTTP fields are simply unused by tcp).
    let b2 = config.vips[0].backends[1].check.clone().unwrap();
    assert_eq!(
        (b2.kind, b2.port, b2.fall, b2.rise),
        (CheckKind::Tcp, 22, 1, 3)
    );
    assert_eq!(b2.interval, Duration::from_millis(500));
    assert_eq!(b2.describe(), "tcp connect :22");
}

#[test]
fn a_backend_can_have_a_check_of_its_own() {
    let t = "interface = \"eth0\"\n[[vip]]\nname = \"w\"\naddress = \"198.18.0.100\"\n\
             [[vip.backend]]\naddress = \"198.18.0.11\"\n\
             [[vip.backend]]\naddress = \"198.18.0.12\"\n[vip.backend.health]\ntype = \"icmp\"\n";
    let c = checks(t);
    assert_eq!(c[0], None);
    assert_eq!(c[1].as_ref().unwrap().kind, CheckKind::Icmp);
    // Without a type to inherit, the backend's table needs one.
    let t = t.replace("type = \"icmp\"", "rise = 2");
    assert_eq!(
        one(&t),
        "9:1 vip[0].backend[1].health.type: required field is missing \
         (the VIP has no [vip.health] to inherit it from)"
    );
}

#[test]
fn errors_name_line_and_field() {
    let cases = [
        ("", "6:1 vip[0].health.type: required field is missing"),
        (
            "type = \"http\"\nrise = 0",
            "8:8 vip[0].health.rise: 0 is out of range 1..=100",
        ),
        (
            "type = \"http\"\nfall = 101",
            "8:8 vip[0].health.fall: 101 is out of range 1..=100",
        ),
        (
            "type = \"tcp\"\nport = 0",
            "8:8 vip[0].health.port: 0 is out of range 1..=65535",
        ),
        (
            "type = \"http\"\ninterval_ms = 50",
            "8:15 vip[0].health.interval_ms: 50 is out of range 100..=3600000",
        ),
        (
            "type = \"http\"\ninterval_ms = 500",
            "8:15 vip[0].health.interval_ms: timeout_ms (1000) is longer than interval_ms (500); \
             a check must end before the next one starts",
        ),
        (
            "type = \"http\"\npath = \"health\"",
            "8:8 vip[0].health.path: \"health\" must start with '/'",
        ),
        (
            "type = \"http\"\npath = \"/a b\"",
            "8:8 vip[0].health.path: \"/a b\" contains whitespace or control characters",
        ),
        (
            "type = \"http\"\nhost = \"\"",
            "8:8 vip[0].health.host: must not be empty",
        ),
        (
            "type = \"http\"\nexpect_status = \"200-\"",
            "8:17 vip[0].health.expect_status: \"\" is not an HTTP status code (100-599)",
        ),
        (
            "type = \"http\"\nexpect_status = true",
            "8:17 vip[0].health.expect_status: invalid type: boolean, expected a status code \
             or a string like \"200-299,304\"",
        ),
        (
            "type = \"http_content\"",
            "7:8 vip[0].health.expect_body: required for an http_content check \
             (the string the body must contain)",
        ),
        (
            "type = \"http\"\nexpect_body = \"x\"",
            "8:15 vip[0].health.expect_body: not used by a http check",
        ),
        (
            "type = \"icmp\"\nport = 80",
            "8:8 vip[0].health.port: not used by a icmp check",
        ),
        (
            "type = \"tcp\"\npath = \"/\"",
            "8:8 vip[0].health.path: not used by a tcp check",
        ),
        (
            "type = \"http\"\ntls = true",
            "8:7 vip[0].health.tls: TLS health checks are not supported yet; check the \
             plain-HTTP port or use type = \"tcp\"",
        ),
    ];
    for (health, want) in cases {
        assert_eq!(one(&text(health, "")), want, "for {health:?}");
    }
}

#[test]
fn type_errors_stop_parsing_with_the_field_path() {
    let e = one(&text("type = \"smtp\"", ""));
    assert!(
        e.starts_with("7:8 vip[0].health.type: unknown variant `smtp`, expected one of `icmp`, `tcp`, `http`, `http_content`"),
        "{e}"
    );
    let e = one(&text("type = \"tcp\"\nretries = 3", ""));
    assert!(
        e.starts_with("8:1 vip[0].health.retries: unknown field `retries`"),
        "{e}"
    );
    let e = one(&text("type = \"tcp\"\non_down = \"panic\"", ""));
    assert!(
        e.contains("unknown variant `panic`, expected `keep` or `reschedule`"),
        "{e}"
    );
}

#[test]
fn backend_errors_point_into_the_backend_table() {
    let e = one(&text(
        "type = \"tcp\"",
        "[vip.backend.health]\non_down = \"keep\"\n",
    ));
    assert_eq!(
        e,
        "13:11 vip[0].backend[1].health.on_down: on_down is set per VIP, in [vip.health]"
    );
    let e = one(&text(
        "type = \"tcp\"",
        "[vip.backend.health]\npath = \"/\"\n",
    ));
    assert_eq!(
        e,
        "13:8 vip[0].backend[1].health.path: not used by a tcp check"
    );
    let e = one(&text(
        "type = \"http\"",
        "[vip.backend.health]\ntype = \"http_content\"\n",
    ));
    assert!(
        e.starts_with("13:8 vip[0].backend[1].health.expect_body: required"),
        "{e}"
    );
}

#[test]
fn all_ports_vip_needs_a_check_port_once() {
    let t = "interface = \"eth0\"\n[[vip]]\nname = \"w\"\naddress = \"198.18.0.100\"\n\
             [vip.health]\ntype = \"tcp\"\n\
             [[vip.backend]]\naddress = \"198.18.0.11\"\n\
             [[vip.backend]]\naddress = \"198.18.0.12\"\n";
    assert!(
        one(t).starts_with(
            "6:8 vip[0].health.port: required for a tcp check: the VIP covers all ports"
        ),
        "{}",
        one(t)
    );
    // ICMP needs no port.
    let icmp = t.replace("\"tcp\"", "\"icmp\"");
    assert_eq!(checks(&icmp).len(), 2);
}

#[test]
fn docs_health_example_is_valid() {
    const DOCS: &str = include_str!("../../../../docs/config.md");
    let start = DOCS
        .find("```toml\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.100\"\nport = 80\n\n[vip.health]")
        .expect("health example in docs/config.md");
    let body = &DOCS[start + "```toml\n".len()..];
    let body = &body[..body.find("```").unwrap()];
    let config = Config::parse(&format!("interface = \"eth0\"\n{body}"), "config.md")
        .unwrap_or_else(|e| panic!("{e}"));
    let b = &config.vips[0].backends;
    let c0 = b[0].check.as_ref().unwrap();
    assert_eq!(c0.kind, CheckKind::HttpContent);
    assert_eq!(
        c0.describe(),
        "http_content GET :80/healthz expect 200-299 and body containing \"OK\""
    );
    assert_eq!(b[1].check.as_ref().unwrap().describe(), "tcp connect :8080");
}

#[test]
fn check_port_defaults_to_the_nat_backend_port() {
    let t = "interface = \"eth0\"\n[[vip]]\nname = \"w\"\naddress = \"198.18.0.100\"\nport = 80\n\
             mode = \"nat\"\n[vip.health]\ntype = \"http\"\n\
             [[vip.backend]]\naddress = \"198.18.1.11\"\nport = 8080\n\
             [[vip.backend]]\naddress = \"198.18.1.12\"\n";
    let ports: Vec<u16> = checks(t).iter().map(|c| c.as_ref().unwrap().port).collect();
    assert_eq!(ports, [8080, 80]);
}
