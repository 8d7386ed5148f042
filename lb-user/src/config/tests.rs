use super::errors::{join_lines, line_col};
use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

const ORIGIN: &str = "xlb.toml";

/// The example of the brief plus an IPv6 VIP. Line numbers matter.
const FULL: &str = r#"interface = "eth0"
xdp_mode = "auto"
control_socket = "/run/xlb/xlb.sock"

[[vip]]
name = "web"
address = "198.18.0.100"
port = 80
protocol = "tcp"
mode = "dsr"
ring_size = 65537
affinity = "flow"

[[vip.backend]]
address = "198.18.0.11"
weight = 1
name = "web1"

[[vip.backend]]
address = "198.18.0.12"
weight = 1
name = "web2"

[[vip.backend]]
address = "198.18.0.13"
weight = 2
name = "web3"

[[vip]]
name = "dns6"
address = "2001:db8::53"
port = 53
protocol = "udp"
ring_size = 251
affinity = "source"

[[vip.backend]]
address = "2001:db8::a"

[[vip.backend]]
address = "2001:db8::b"
weight = 0
name = "b-draining"
"#;

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse::<Ipv4Addr>().unwrap())
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
}

fn backend(name: &str, address: IpAddr, port: u16, weight: u32) -> BackendConfig {
    BackendConfig {
        name: name.to_owned(),
        address,
        port,
        weight,
        tier: 0,
        check: None,
    }
}

fn errors(text: &str) -> Vec<ConfigError> {
    match Config::parse(text, ORIGIN) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => e.0,
    }
}

/// The single error of `text`, checked for line, column and field; the
/// message is returned for further checks.
#[track_caller]
fn one_error(text: &str, line: usize, column: usize, field: &str) -> String {
    let errs = errors(text);
    assert_eq!(
        errs.len(),
        1,
        "expected one error, got:\n{}",
        join_lines(&errs)
    );
    let e = &errs[0];
    assert_eq!(
        (e.origin.as_str(), e.line, e.column, e.field.as_str()),
        (ORIGIN, line, column, field),
        "{e}"
    );
    e.message.clone()
}

/// A config with one IPv4 VIP whose `[[vip]]` header is line 3 and
/// whose extra `vip_lines` start at line 6, followed by `rest`.
fn with_vip(vip_lines: &str, rest: &str) -> String {
    format!(
        "interface = \"eth0\"\n\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.100\"\n{vip_lines}{rest}"
    )
}

#[test]
fn full_example_parses_to_the_exact_expected_struct() {
    let config = Config::parse(FULL, ORIGIN).unwrap();
    let expected = Config {
        interface: "eth0".into(),
        xdp_mode: XdpMode::Auto,
        control_socket: PathBuf::from("/run/xlb/xlb.sock"),
        control_socket_group: None,
        control_socket_admin_group: None,
        server_interface: None,
        state_dir: PathBuf::from("/sys/fs/bpf/xlb/eth0"),
        conntrack: ConntrackConfig::default(),
        vips: vec![
            VipConfig {
                name: "web".into(),
                address: v4("198.18.0.100"),
                port: 80,
                protocol: Protocol::Tcp,
                mode: Mode::Dsr,
                ring_size: 65_537,
                affinity: Affinity::Flow,
                on_down: OnDown::Keep,
                health: None,
                min_usable: 1,
                feedback: None,
                backends: vec![
                    backend("web1", v4("198.18.0.11"), 80, 1),
                    backend("web2", v4("198.18.0.12"), 80, 1),
                    backend("web3", v4("198.18.0.13"), 80, 2),
                ],
            },
            VipConfig {
                name: "dns6".into(),
                address: v6("2001:db8::53"),
                port: 53,
                protocol: Protocol::Udp,
                mode: Mode::Dsr,
                ring_size: 251,
                affinity: Affinity::Source,
                on_down: OnDown::Keep,
                health: None,
                min_usable: 1,
                feedback: None,
                backends: vec![
                    backend("2001:db8::a", v6("2001:db8::a"), 53, 1),
                    backend("b-draining", v6("2001:db8::b"), 53, 0),
                ],
            },
        ],
        vrrp: None,
        announce: None,
        sync: None,
        metrics: None,
    };
    assert_eq!(config, expected);
}

#[test]
fn defaults_are_applied() {
    let text = "interface = \"eth1\"\n[[vip]]\nname = \"v\"\naddress = \"10.0.0.1\"\n\
                    [[vip.backend]]\naddress = \"10.0.0.2\"\n";
    let config = Config::parse(text, ORIGIN).unwrap();
    assert_eq!(config.xdp_mode, XdpMode::Auto);
    assert_eq!(config.control_socket, PathBuf::from(DEFAULT_CONTROL_SOCKET));
    let vip = &config.vips[0];
    assert_eq!(vip.port, 0);
    assert_eq!(vip.protocol, Protocol::Tcp);
    assert_eq!(vip.mode, Mode::Dsr);
    assert_eq!(vip.ring_size, lb_common::DEFAULT_RING_SIZE);
    assert_eq!(vip.affinity, Affinity::Flow);
    assert_eq!(
        vip.backends,
        vec![backend("10.0.0.2", v4("10.0.0.2"), 0, 1)]
    );
}

#[test]
fn interface_alone_is_a_valid_config_with_no_vips() {
    let config = Config::parse("interface = \"eth0\"\n", ORIGIN).unwrap();
    assert!(config.vips.is_empty());
    let config = Config::parse("interface = \"eth0\"\nvip = []\n", ORIGIN).unwrap();
    assert!(config.vips.is_empty());
}

#[test]
fn vip_without_backends_is_valid() {
    let config = Config::parse(&with_vip("", ""), ORIGIN).unwrap();
    assert!(config.vips[0].backends.is_empty());
}

#[test]
fn explicit_xdp_modes_and_control_socket_are_read() {
    for (s, mode) in [
        ("auto", XdpMode::Auto),
        ("native", XdpMode::Native),
        ("generic", XdpMode::Generic),
    ] {
        let text =
            format!("interface = \"eth0\"\nxdp_mode = \"{s}\"\ncontrol_socket = \"/tmp/x.sock\"\n");
        let config = Config::parse(&text, ORIGIN).unwrap();
        assert_eq!(config.xdp_mode, mode);
        assert_eq!(config.control_socket, PathBuf::from("/tmp/x.sock"));
    }
}

#[test]
fn unknown_field_at_top_level_gives_its_line_and_name() {
    let msg = one_error("interface = \"eth0\"\n\nlisten = 1\n", 3, 1, "listen");
    assert!(msg.contains("unknown field `listen`"), "{msg}");
}

#[test]
fn unknown_field_in_vip_gives_its_line_and_path() {
    let msg = one_error(&with_vip("weight = 3\n", ""), 6, 1, "vip[0].weight");
    assert!(msg.contains("unknown field `weight`"), "{msg}");
}

#[test]
fn unknown_field_in_backend_gives_its_line_and_path() {
    let text = with_vip(
        "",
        "\n[[vip.backend]]\naddress = \"198.18.0.11\"\n\n[[vip.backend]]\naddress = \"198.18.0.12\"\nmac = \"x\"\n",
    );
    let msg = one_error(&text, 12, 1, "vip[0].backend[1].mac");
    assert!(msg.contains("unknown field `mac`"), "{msg}");
}

#[test]
fn unknown_field_in_second_vip_is_indexed() {
    let text = format!("{FULL}\n[[vip]]\nname = \"x\"\naddress = \"10.1.1.1\"\nmtu = 9000\n");
    one_error(&text, 48, 1, "vip[2].mtu");
}

#[test]
fn bad_vip_address_gives_line_and_path() {
    let text = "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.300\"\n";
    let msg = one_error(text, 4, 11, "vip[0].address");
    assert!(msg.contains("invalid IP address"), "{msg}");
}

#[test]
fn bad_backend_address_gives_line_and_path() {
    let text = with_vip("", "[[vip.backend]]\naddress = \"web1.example\"\n");
    let msg = one_error(&text, 7, 11, "vip[0].backend[0].address");
    assert!(msg.contains("invalid IP address"), "{msg}");
}

#[test]
fn unspecified_or_multicast_addresses_are_rejected() {
    let text = "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"0.0.0.0\"\n";
    let msg = one_error(text, 4, 11, "vip[0].address");
    assert!(msg.contains("unspecified"), "{msg}");
    let text = with_vip("", "[[vip.backend]]\naddress = \"224.0.0.1\"\n");
    let msg = one_error(&text, 7, 11, "vip[0].backend[0].address");
    assert!(msg.contains("multicast"), "{msg}");
}

#[test]
fn ipv6_backend_under_ipv4_vip_is_rejected() {
    let text = with_vip(
        "",
        "[[vip.backend]]\naddress = \"198.18.0.11\"\n[[vip.backend]]\naddress = \"2001:db8::1\"\n",
    );
    let msg = one_error(&text, 9, 11, "vip[0].backend[1].address");
    assert!(
        msg.contains("IPv6 backend 2001:db8::1 under IPv4 VIP 198.18.0.100"),
        "{msg}"
    );
}

#[test]
fn ipv4_backend_under_ipv6_vip_is_rejected() {
    let text = "interface = \"eth0\"\n[[vip]]\nname = \"v6\"\naddress = \"2001:db8::1\"\n\
                    [[vip.backend]]\naddress = \"10.0.0.1\"\n";
    let msg = one_error(text, 6, 11, "vip[0].backend[0].address");
    assert!(
        msg.contains("IPv4 backend 10.0.0.1 under IPv6 VIP"),
        "{msg}"
    );
}

#[test]
fn duplicate_vip_is_reported_on_the_second_with_the_first_line() {
    let text = r#"interface = "eth0"

[[vip]]
name = "a"
address = "198.18.0.100"
port = 80

[[vip]]
name = "b"
address = "198.18.0.100"
port = 80
protocol = "tcp"
"#;
    let msg = one_error(text, 10, 11, "vip[1].address");
    assert_eq!(
        msg,
        "duplicate VIP 198.18.0.100 port 80 tcp: already defined by vip[0] at line 5"
    );
}

#[test]
fn same_address_with_other_port_or_protocol_is_not_a_duplicate() {
    let text = r#"interface = "eth0"
[[vip]]
name = "a"
address = "198.18.0.100"
port = 80
[[vip]]
name = "b"
address = "198.18.0.100"
port = 80
protocol = "udp"
[[vip]]
name = "c"
address = "198.18.0.100"
port = 443
[[vip]]
name = "d"
address = "198.18.0.100"
"#;
    assert_eq!(Config::parse(text, ORIGIN).unwrap().vips.len(), 4);
}

#[test]
fn duplicate_vip_name_is_reported_with_the_first_line() {
    let text = r#"interface = "eth0"
[[vip]]
name = "web"
address = "198.18.0.100"
[[vip]]
name = "web"
address = "198.18.0.101"
"#;
    let msg = one_error(text, 6, 8, "vip[1].name");
    assert_eq!(
        msg,
        "duplicate VIP name \"web\": already used by vip[0] at line 3"
    );
}

#[test]
fn invalid_vip_names_are_rejected() {
    for bad in ["", "web site", "wéb", &"x".repeat(65)] {
        let text =
            format!("interface = \"eth0\"\n[[vip]]\nname = \"{bad}\"\naddress = \"10.0.0.1\"\n");
        let msg = one_error(&text, 3, 8, "vip[0].name");
        assert!(msg.contains("not a valid VIP name"), "{msg}");
    }
    let ok = format!(
        "interface = \"eth0\"\n[[vip]]\nname = \"{}\"\naddress = \"10.0.0.1\"\n",
        "A-z_0.9".repeat(9) + "x"
    );
    Config::parse(&ok, ORIGIN).unwrap();
}

#[test]
fn duplicate_backend_address_is_reported_with_the_first_line() {
    let text = with_vip(
        "",
        "[[vip.backend]]\naddress = \"198.18.0.11\"\nname = \"a\"\n[[vip.backend]]\naddress = \"198.18.0.11\"\nname = \"b\"\n",
    );
    let msg = one_error(&text, 10, 11, "vip[0].backend[1].address");
    assert_eq!(
        msg,
        "duplicate backend address 198.18.0.11: already vip[0].backend[0] at line 7"
    );
}

#[test]
fn same_backend_under_two_vips_is_fine() {
    let text = r#"interface = "eth0"
[[vip]]
name = "a"
address = "198.18.0.100"
[[vip.backend]]
address = "198.18.0.11"
[[vip]]
name = "b"
address = "198.18.0.101"
[[vip.backend]]
address = "198.18.0.11"
"#;
    Config::parse(text, ORIGIN).unwrap();
}

#[test]
fn duplicate_backend_name_is_rejected_including_default_names() {
    let text = with_vip(
        "",
        "[[vip.backend]]\naddress = \"198.18.0.11\"\nname = \"x\"\n[[vip.backend]]\naddress = \"198.18.0.12\"\nname = \"x\"\n",
    );
    let msg = one_error(&text, 11, 8, "vip[0].backend[1].name");
    assert!(msg.starts_with("duplicate backend name \"x\""), "{msg}");
    // An explicit name equal to another backend's default name.
    let text = with_vip(
        "",
        "[[vip.backend]]\naddress = \"198.18.0.11\"\n[[vip.backend]]\naddress = \"198.18.0.12\"\nname = \"198.18.0.11\"\n",
    );
    let msg = one_error(&text, 10, 8, "vip[0].backend[1].name");
    assert!(
        msg.contains("already used by vip[0].backend[0] at line 7"),
        "{msg}"
    );
}

#[test]
fn weight_out_of_range_gives_line_column_and_path() {
    let text = with_vip(
        "",
        "[[vip.backend]]\naddress = \"198.18.0.11\"\nweight = 20000\n",
    );
    let errs = errors(&text);
    assert_eq!(
        errs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["xlb.toml:8:10: vip[0].backend[0].weight: 20000 is out of range 0..=10000"]
    );
    let text = with_vip(
        "",
        "[[vip.backend]]\naddress = \"198.18.0.11\"\nweight = -1\n",
    );
    let msg = one_error(&text, 8, 10, "vip[0].backend[0].weight");
    assert_eq!(msg, "-1 is out of range 0..=10000");
}

#[test]
fn weight_bounds_are_inclusive() {
    let text = with_vip(
        "",
        "[[vip.backend]]\naddress = \"198.18.0.11\"\nweight = 0\n[[vip.backend]]\naddress = \"198.18.0.12\"\nweight = 10000\n",
    );
    let config = Config::parse(&text, ORIGIN).unwrap();
    let weights: Vec<u32> = config.vips[0].backends.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [0, MAX_WEIGHT]);
}

#[test]
fn tier_defaults_to_0_and_takes_0_to_255() {
    let text = with_vip(
        "port = 80\n",
        "[[vip.backend]]\naddress = \"198.18.0.11\"\n[[vip.backend]]\naddress = \"198.18.0.12\"\ntier = 255\n",
    );
    let config = Config::parse(&text, ORIGIN).unwrap();
    let tiers: Vec<u8> = config.vips[0].backends.iter().map(|b| b.tier).collect();
    assert_eq!(tiers, [0, 255]);
}

#[test]
fn tier_out_of_range_gives_line_column_and_path() {
    for (tier, msg) in [
        ("256", "256 is out of range 0..=255"),
        ("-1", "-1 is out of range 0..=255"),
    ] {
        let text = with_vip(
            "port = 80\n",
            &format!("[[vip.backend]]\naddress = \"198.18.0.11\"\ntier = {tier}\n"),
        );
        assert_eq!(one_error(&text, 9, 8, "vip[0].backend[0].tier"), msg);
    }
}

#[test]
fn port_out_of_range_is_rejected() {
    let msg = one_error(&with_vip("port = 65536\n", ""), 6, 8, "vip[0].port");
    assert_eq!(msg, "65536 is out of range 0..=65535");
    let config = Config::parse(&with_vip("port = 65535\n", ""), ORIGIN).unwrap();
    assert_eq!(config.vips[0].port, 65_535);
}

#[test]
fn wrong_type_is_a_type_error_with_line_and_path() {
    let msg = one_error(&with_vip("port = \"80\"\n", ""), 6, 8, "vip[0].port");
    assert_eq!(msg, "invalid type: string \"80\", expected an integer");
}

#[test]
fn datetime_value_is_a_type_error_with_line_and_path() {
    let msg = one_error(&with_vip("port = 1979-05-27\n", ""), 6, 8, "vip[0].port");
    assert!(msg.starts_with("invalid type: datetime"), "{msg}");
}

#[test]
fn vip_as_plain_table_is_a_type_error() {
    let msg = one_error("interface = \"eth0\"\n[vip]\nname = \"a\"\n", 2, 1, "vip");
    assert!(msg.contains("expected an array"), "{msg}");
}

#[test]
fn ring_size_not_prime_is_rejected_with_nearest_primes() {
    let msg = one_error(
        &with_vip("ring_size = 65536\n", ""),
        6,
        13,
        "vip[0].ring_size",
    );
    assert_eq!(
        msg,
        "65536 is not prime; the Maglev table size must be prime (nearest primes: 65521, 65537)"
    );
}

#[test]
fn ring_size_too_large_is_rejected() {
    let msg = one_error(
        &with_vip("ring_size = 1048583\n", ""),
        6,
        13,
        "vip[0].ring_size",
    );
    assert_eq!(msg, "1048583 is out of range 7..=1048573");
    // The largest allowed size is accepted.
    let config = Config::parse(&with_vip("ring_size = 1048573\n", ""), ORIGIN).unwrap();
    assert_eq!(config.vips[0].ring_size, lb_common::MAX_RING_SIZE);
}

#[test]
fn ring_size_too_small_is_rejected() {
    let msg = one_error(&with_vip("ring_size = 5\n", ""), 6, 13, "vip[0].ring_size");
    assert_eq!(msg, "5 is out of range 7..=1048573");
    Config::parse(&with_vip("ring_size = 7\n", ""), ORIGIN).unwrap();
}

#[test]
fn ring_size_smaller_than_backend_count_is_rejected() {
    let backends: String = (1..=8)
        .map(|i| format!("[[vip.backend]]\naddress = \"198.18.0.{i}\"\n"))
        .collect();
    let msg = one_error(
        &with_vip("ring_size = 7\n", &backends),
        6,
        13,
        "vip[0].ring_size",
    );
    assert_eq!(
        msg,
        "7 is smaller than the number of backends (8); the Maglev table needs at least one slot per backend"
    );
    let seven: String = (1..=7)
        .map(|i| format!("[[vip.backend]]\naddress = \"198.18.0.{i}\"\n"))
        .collect();
    Config::parse(&with_vip("ring_size = 7\n", &seven), ORIGIN).unwrap();
}

#[test]
fn bad_protocol_string_is_rejected() {
    let msg = one_error(
        &with_vip("protocol = \"sctp\"\n", ""),
        6,
        12,
        "vip[0].protocol",
    );
    assert_eq!(msg, "unknown variant `sctp`, expected `tcp` or `udp`");
}

#[test]
fn protocol_is_case_sensitive() {
    one_error(
        &with_vip("protocol = \"TCP\"\n", ""),
        6,
        12,
        "vip[0].protocol",
    );
}

#[test]
fn nat_mode_translates_backend_ports() {
    let text = "interface = \"eth0\"\nserver_interface = \"eth1\"\n[[vip]]\nname = \"w\"\n\
                    address = \"198.18.0.100\"\nport = 80\nmode = \"nat\"\n[[vip.backend]]\n\
                    address = \"198.18.1.11\"\nport = 8080\n[[vip.backend]]\naddress = \"198.18.1.12\"\n";
    let c = Config::parse(text, ORIGIN).unwrap();
    assert_eq!(c.server_interface.as_deref(), Some("eth1"));
    assert_eq!(c.vips[0].mode, Mode::Nat);
    assert_eq!(c.vips[0].backends[0].port, 8080);
    assert_eq!(c.vips[0].backends[1].port, 80, "default: the VIP's port");
}

#[test]
fn port_translation_needs_nat_and_a_vip_port() {
    let dsr = with_vip(
        "",
        "\n[[vip.backend]]\naddress = \"198.18.0.11\"\nport = 8080\n",
    );
    let e = Config::parse(&dsr, ORIGIN).unwrap_err().to_string();
    assert!(
        e.contains("vip[0].backend[0].port") && e.contains("needs mode = \"nat\""),
        "{e}"
    );
    let text = "interface = \"eth0\"\n[[vip]]\nname = \"w\"\naddress = \"198.18.0.100\"\n\
                    mode = \"nat\"\n[[vip.backend]]\naddress = \"198.18.1.11\"\nport = 8080\n";
    let e = Config::parse(text, ORIGIN).unwrap_err().to_string();
    assert!(
        e.contains("xlb.toml:8:8: vip[0].backend[0].port") && e.contains("all-ports"),
        "{e}"
    );
    let text = "interface = \"eth0\"\nserver_interface = \"eth0\"\n";
    let e = Config::parse(text, ORIGIN).unwrap_err().to_string();
    assert!(
        e.contains("xlb.toml:2:20: server_interface: must differ"),
        "{e}"
    );
}

#[test]
fn bad_affinity_is_rejected() {
    let msg = one_error(
        &with_vip("affinity = \"sticky\"\n", ""),
        6,
        12,
        "vip[0].affinity",
    );
    assert_eq!(msg, "unknown variant `sticky`, expected `flow` or `source`");
}

#[test]
fn bad_xdp_mode_is_rejected() {
    let msg = one_error(
        "interface = \"eth0\"\nxdp_mode = \"offload\"\n",
        2,
        12,
        "xdp_mode",
    );
    assert_eq!(
        msg,
        "unknown variant `offload`, expected one of `auto`, `native`, `generic`"
    );
}

#[test]
fn bad_interface_names_are_rejected() {
    for (name, why) in [
        ("", "empty"),
        ("eth0.1234567890ab", "longer than 15 bytes"),
        ("eth/0", "contains '/'"),
        ("eth 0", "whitespace"),
        ("eth0:1", "contains ':'"),
        ("..", "reserved"),
    ] {
        let text = format!("xdp_mode = \"auto\"\ninterface = \"{name}\"\n");
        let msg = one_error(&text, 2, 13, "interface");
        assert!(msg.contains("is not a valid interface name"), "{msg}");
        assert!(msg.contains(why), "{name:?}: {msg}");
    }
    // 15 bytes is the longest valid name.
    Config::parse("interface = \"abcdefghijklmno\"\n", ORIGIN).unwrap();
}

#[test]
fn missing_interface_is_reported() {
    let msg = one_error("xdp_mode = \"auto\"\n", 1, 1, "interface");
    assert_eq!(msg, "required field is missing");
}

#[test]
fn missing_required_vip_and_backend_fields_are_reported() {
    let text = "interface = \"eth0\"\n\n[[vip]]\nname = \"web\"\n";
    one_error(text, 3, 1, "vip[0].address");
    let text = with_vip("", "\n[[vip.backend]]\nweight = 2\n");
    one_error(&text, 7, 1, "vip[0].backend[0].address");
}

#[test]
fn empty_control_socket_is_rejected() {
    one_error(
        "interface = \"eth0\"\ncontrol_socket = \"\"\n",
        2,
        18,
        "control_socket",
    );
}

#[test]
fn toml_syntax_error_gives_its_line() {
    let text = with_vip("port = = 80\n", "");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].line, errs[0].column), (6, 8));
    assert_eq!(errs[0].field, "vip[0].port");
    let msg = one_error("interface = \"eth0\n", 1, 18, "interface");
    assert!(msg.contains("invalid basic string"), "{msg}");
}

#[test]
fn a_syntax_error_the_toml_crate_has_no_words_for_still_says_what_is_wrong() {
    // Found by the config fuzz target: a form feed in a comment gave an
    // error with an empty message.
    let msg = one_error("# a comment\x0c\ninterface = \"eth0\"\n", 1, 12, "");
    assert_eq!(msg, "invalid TOML: unexpected \"\\u{c}\"");
}

#[test]
fn syntax_error_in_second_backend_gets_indexed_path() {
    let text = with_vip(
        "",
        "[[vip.backend]]\naddress = \"198.18.0.11\"\n[[vip.backend]]\naddress = \"198.18.0.12\"\nweight = 1 2\n",
    );
    let e = &errors(&text)[0];
    assert_eq!((e.line, e.field.as_str()), (10, "vip[0].backend[1].weight"));
}

#[test]
fn duplicate_toml_key_is_a_syntax_error() {
    let msg = one_error(&with_vip("name = \"again\"\n", ""), 6, 1, "vip[0].name");
    assert!(msg.contains("duplicate key"), "{msg}");
}

#[test]
fn several_errors_are_reported_together_in_file_order() {
    let text = r#"interface = "a very long interface name"

[[vip]]
name = "web"
address = "198.18.0.100"
port = 80
ring_size = 1000

[[vip.backend]]
address = "198.18.0.11"
weight = 20000

[[vip.backend]]
address = "2001:db8::1"

[[vip]]
name = "web"
address = "198.18.0.100"
port = 80
"#;
    let err = Config::parse(text, ORIGIN).unwrap_err();
    let expected = "\
xlb.toml:1:13: interface: \"a very long interface name\" is not a valid interface name: longer than 15 bytes
xlb.toml:7:13: vip[0].ring_size: 1000 is not prime; the Maglev table size must be prime (nearest primes: 997, 1009)
xlb.toml:11:10: vip[0].backend[0].weight: 20000 is out of range 0..=10000
xlb.toml:14:11: vip[0].backend[1].address: IPv6 backend 2001:db8::1 under IPv4 VIP 198.18.0.100: a backend must have the VIP's address family
xlb.toml:17:8: vip[1].name: duplicate VIP name \"web\": already used by vip[0] at line 4
xlb.toml:18:11: vip[1].address: duplicate VIP 198.18.0.100 port 80 tcp: already defined by vip[0] at line 5";
    assert_eq!(err.to_string(), expected);
    assert_eq!(err.len(), 6);
}

#[test]
fn errors_are_sorted_by_position_across_checks() {
    // vip[1]'s duplicate name (line 9) is found after its backend's
    // weight error (line 12) but printed before it.
    let text = r#"interface = "eth0"
[[vip]]
name = "a"
address = "198.18.0.100"
[[vip.backend]]
address = "198.18.0.11"
weight = 10001
[[vip]]
name = "a"
address = "198.18.0.101"
[[vip.backend]]
address = "198.18.0.12"
weight = 10002
"#;
    let lines: Vec<usize> = errors(text).iter().map(|e| e.line).collect();
    assert_eq!(lines, [7, 9, 13]);
}

#[test]
fn out_of_range_port_does_not_also_report_a_duplicate() {
    let text = r#"interface = "eth0"
[[vip]]
name = "a"
address = "198.18.0.100"
[[vip]]
name = "b"
address = "198.18.0.100"
port = 70000
"#;
    let msg = one_error(text, 8, 8, "vip[1].port");
    assert_eq!(msg, "70000 is out of range 0..=65535");
}

#[test]
fn read_error_names_the_path_without_line() {
    let path = Path::new("/nonexistent/xlb-test/xlb.toml");
    let err = Config::load(path).unwrap_err();
    assert_eq!(err.len(), 1);
    let e = &err.0[0];
    assert_eq!((e.line, e.column, e.field.as_str()), (0, 0, ""));
    assert_eq!(e.origin, "/nonexistent/xlb-test/xlb.toml");
    let shown = err.to_string();
    assert!(
        shown.starts_with("/nonexistent/xlb-test/xlb.toml: cannot read configuration file: "),
        "{shown}"
    );
    assert!(shown.contains("No such file"), "{shown}");
}

#[test]
fn load_parses_a_file_and_names_it_in_errors() {
    let dir = std::env::temp_dir().join(format!("xlb-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    let bad = dir.join("bad.toml");
    std::fs::write(&good, FULL).unwrap();
    std::fs::write(&bad, "interface = \"eth0\"\nbogus = 1\n").unwrap();
    let config = Config::load(&good);
    let err = Config::load(&bad).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(config.unwrap(), Config::parse(FULL, ORIGIN).unwrap());
    assert!(
        err.to_string()
            .starts_with(&format!("{}:2:1: bogus: unknown field", bad.display())),
        "{err}"
    );
}

#[test]
fn a_configuration_others_may_write_or_another_user_owns_is_refused() {
    let path = Path::new("/etc/xlb/xlb.toml");
    for (mode, owner, euid) in [
        (0o644, 0, 0),
        (0o664, 0, 0),
        (0o600, 0, 0),
        (0o640, 990, 990),
    ] {
        assert_eq!(check_writers(path, mode, owner, euid), Ok(()), "{mode:o}");
    }
    assert_eq!(
        check_writers(path, 0o100666, 0, 0).unwrap_err(),
        "configuration file has mode 0666: others may write it, and so choose what xlb \
         forwards (chmod o-w /etc/xlb/xlb.toml)"
    );
    assert_eq!(
        check_writers(path, 0o644, 1000, 0).unwrap_err(),
        "configuration file belongs to uid 1000: it must belong to root (chown 0 \
         /etc/xlb/xlb.toml)"
    );
    assert_eq!(
        check_writers(path, 0o644, 1000, 990).unwrap_err(),
        "configuration file belongs to uid 1000: it must belong to root or uid 990, xlb's \
         own (chown 990 /etc/xlb/xlb.toml)"
    );
}

#[test]
fn load_refuses_a_world_writable_file_and_reads_it_once_fixed() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("xlb-config-mode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("xlb.toml");
    std::fs::write(&path, FULL).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    // A symlink to it: the file it names is the one checked.
    let link = dir.join("link.toml");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let refused = Config::load(&path);
    let refused_link = Config::load(&link);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let fixed = Config::load(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    for (p, r) in [(&path, refused), (&link, refused_link)] {
        let err = r.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{}: configuration file has mode 0666: others may write it",
                p.display()
            )),
            "{err}"
        );
    }
    assert_eq!(fixed.unwrap(), Config::parse(FULL, ORIGIN).unwrap());
}

#[test]
fn columns_count_characters_not_bytes() {
    let msg = one_error(
        "# héllo wörld\ninterface = \"eth0\"\nxdp_mode = \"ü\"\n",
        3,
        12,
        "xdp_mode",
    );
    assert!(msg.contains("unknown variant"), "{msg}");
    assert_eq!(line_col("ab\nçd", 5), (2, 2));
}

#[test]
fn error_display_formats() {
    let e = ConfigError {
        origin: "xlb.toml".into(),
        line: 14,
        column: 10,
        field: "vip[1].backend[0].weight".into(),
        message: "20000 is out of range 0..=10000".into(),
    };
    assert_eq!(
        e.to_string(),
        "xlb.toml:14:10: vip[1].backend[0].weight: 20000 is out of range 0..=10000"
    );
    let two = ConfigErrors(vec![e.clone(), e]);
    assert_eq!(two.to_string().lines().count(), 2);
}

/// `extra` after `interface = "eth0"`, parsed as `xlb.toml`; the errors
/// as one text.
pub(super) fn parse_with_interface(extra: &str) -> Result<Config, String> {
    Config::parse(&format!("interface = \"eth0\"\n{extra}"), "xlb.toml").map_err(|e| e.to_string())
}

/// The fenced blocks of `docs/config.md` with the given info string.
pub(super) fn doc_blocks(info: &str) -> Vec<String> {
    const DOCS: &str = include_str!("../../../docs/config.md");
    let mut blocks = Vec::new();
    let mut open: Option<(bool, String)> = None;
    for line in DOCS.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(tag)) => open = Some((tag == info, String::new())),
            (Some((wanted, body)), Some("")) => {
                if *wanted {
                    blocks.push(std::mem::take(body));
                }
                open = None;
            }
            (Some((_, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

#[test]
fn docs_full_example_is_valid() {
    let example = &doc_blocks("toml")[0];
    let config = Config::parse(example, "config.md").unwrap();
    assert_eq!(config.vips.len(), 2);
    let weights: Vec<u32> = config.vips[0].backends.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [1, 1, 2]);
    assert!(config.vips[1].address.is_ipv6());
}

#[test]
fn docs_error_example_is_the_real_output() {
    let bad = &doc_blocks("toml")[1];
    let shown = doc_blocks("")
        .into_iter()
        .find(|b| b.starts_with("xlb.toml:1:13:"))
        .expect("error output block");
    let err = Config::parse(bad, "xlb.toml").unwrap_err();
    assert_eq!(format!("{err}\n"), shown);
    // The shorter samples of syntax and type errors are real too.
    let samples = doc_blocks("")
        .into_iter()
        .find(|b| b.contains("unknown variant `sctp`"))
        .expect("samples block");
    let texts = [
        with_vip("weight = 3\n", ""),
        with_vip("protocol = \"sctp\"\n", ""),
        with_vip("port = \"80\"\n", ""),
        "interface = \"eth0\"\n\n[[vip]]\nname = \"web\"\n".to_owned(),
        with_vip("port = = 80\n", ""),
    ];
    let outputs: String = texts
        .iter()
        .map(|t| format!("{}\n", Config::parse(t, "xlb.toml").unwrap_err()))
        .collect();
    assert_eq!(outputs, samples);
}

#[test]
fn enum_helpers() {
    assert_eq!(Protocol::Tcp.number(), 6);
    assert_eq!(Protocol::Udp.number(), 17);
    assert_eq!(Protocol::Udp.as_str(), "udp");
    assert_eq!(Mode::Dsr.as_str(), "dsr");
    assert_eq!(Affinity::Source.as_str(), "source");
    assert_eq!(XdpMode::Generic.to_string(), "generic");
}

#[test]
fn state_dir_defaults_per_interface_and_must_be_absolute() {
    let c = Config::parse("interface = \"eth1\"\n", ORIGIN).unwrap();
    assert_eq!(c.state_dir, PathBuf::from("/sys/fs/bpf/xlb/eth1"));
    let c = Config::parse(
        "interface = \"eth1\"\nstate_dir = \"/sys/fs/bpf/lb-a\"\n",
        ORIGIN,
    )
    .unwrap();
    assert_eq!(c.state_dir, PathBuf::from("/sys/fs/bpf/lb-a"));
    let e = Config::parse("interface = \"eth1\"\nstate_dir = \"xlb\"\n", ORIGIN)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("2:13: state_dir: \"xlb\" must be an absolute path"),
        "{e}"
    );
}

#[test]
fn a_value_that_does_not_parse_is_shown() {
    let text = "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.1000\"\n";
    let err = Config::parse(text, "xlb.toml").unwrap_err().to_string();
    assert_eq!(
        err,
        "xlb.toml:4:11: vip[0].address: invalid IP address syntax (found \"198.18.0.1000\")"
    );
}

#[test]
fn docs_backup_tier_example_is_valid() {
    let block = doc_blocks("toml")
        .into_iter()
        .find(|b| b.contains("tier = 1"))
        .expect("the backup tiers example in docs/config.md");
    let config = Config::parse(&block, "config.md").unwrap();
    let vip = &config.vips[0];
    assert_eq!(vip.min_usable, 2);
    let tiers: Vec<u8> = vip.backends.iter().map(|b| b.tier).collect();
    assert_eq!(tiers, [0, 0, 0, 1, 1]);
}
