//! The `xlb` binary's edges: a broken config is refused with an error that
//! names the file, line and field, before anything is loaded or attached.
//! No root needed: validation comes first.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn xlb() -> Command {
    Command::new(xlb_testbed::running::xlb_exe())
}

/// A config file in a directory of its own, removed with it on drop (tests
/// run in parallel, so each file gets its own directory).
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn write(name: &str, text: &str) -> ConfigFile {
    let dir = std::env::temp_dir().join(format!("xlb-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    ConfigFile(path)
}

const GOOD: &str = r#"interface = "xlb-none0"
[[vip]]
name = "web"
address = "198.18.0.100"
port = 80
[[vip.backend]]
address = "198.18.0.11"
"#;

#[test]
fn check_accepts_a_valid_file() {
    let path = write("good.toml", GOOD);
    let out = xlb()
        .args(["check", "--config"])
        .arg(path.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 VIPs, 1 backends)"));
}

#[test]
fn run_refuses_a_broken_file_naming_line_and_field() {
    let bad = GOOD.replace(
        "address = \"198.18.0.11\"",
        "address = \"198.18.0.11\"\nweight = 20000",
    );
    let path = write("bad-weight.toml", &bad);
    for cmd in ["run", "check"] {
        let out = xlb()
            .args([cmd, "--config"])
            .arg(path.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd} accepted a bad file");
        assert!(
            err.contains("bad-weight.toml:8:"),
            "{cmd}: no line in {err}"
        );
        assert!(
            err.contains("vip[0].backend[0].weight"),
            "{cmd}: no field in {err}"
        );
        // Refused before loading: nothing about BPF or the interface.
        assert!(
            !err.contains("XDP") && !err.contains("xlb-none0"),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn run_refuses_unknown_fields_and_syntax_errors() {
    for (name, text, needle) in [
        (
            "unknown.toml",
            GOOD.replace("port = 80", "port = 80\nprot = \"tcp\""),
            "prot",
        ),
        (
            "syntax.toml",
            GOOD.replace("port = 80", "port = = 80"),
            "syntax.toml:5:",
        ),
        (
            "dup.toml",
            format!("{GOOD}{}", &GOOD[GOOD.find("[[vip]]").unwrap()..]),
            "duplicate",
        ),
    ] {
        let path = write(name, &text);
        let out = xlb()
            .args(["run", "--config"])
            .arg(path.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} accepted");
        assert!(err.contains(needle), "{name}: expected {needle:?} in {err}");
    }
}

#[test]
fn status_without_a_daemon_says_so() {
    let out = xlb()
        .args(["status", "--socket", "/nonexistent/xlb.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is `xlb run` running"), "{err}");
}

#[test]
fn run_without_a_config_says_what_to_pass_and_starts_nothing() {
    let out = xlb().arg("run").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs --config FILE"), "{err}");
    assert!(err.contains("cargo xtask run"), "{err}");
}

/// A group the file names for the control socket must exist: `check`
/// and `run` look it up and refuse, saying which field, before anything
/// is touched.
#[test]
fn check_and_run_refuse_a_control_socket_group_that_does_not_exist() {
    let text = format!("control_socket_admin_group = \"xlb-no-such-group-here\"\n{GOOD}");
    let path = write("group.toml", &text);
    for cmd in ["check", "run"] {
        let out = xlb()
            .args([cmd, "--config"])
            .arg(path.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(
                "control_socket_admin_group: no group \"xlb-no-such-group-here\" (not in \
                 /etc/group or NSS)"
            ),
            "{cmd}: {err}"
        );
    }
}

/// Valid field by field, but more backends than the data plane has ids:
/// `check` applies it to maps in memory, which refuse it as the kernel's
/// would.
#[test]
fn check_refuses_more_backends_than_the_data_plane_has_ids() {
    let mut text = String::from(
        "interface = \"xlb-none0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.100\"\nport = 80\n",
    );
    for i in 0..lb_common::MAX_BACKENDS {
        let a = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 19, 0, 0)) + i);
        text.push_str(&format!("[[vip.backend]]\naddress = \"{a}\"\n"));
    }
    let path = write("huge.toml", &text);
    let out = xlb()
        .args(["check", "--config"])
        .arg(path.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot be served"), "{err}");
    assert!(err.contains("too many backends (limit 65535)"), "{err}");
}

/// Logs written to a pipe (a file, the journal) carry no colour codes;
/// `--log-format json` (or `XLB_LOG_FORMAT=json`) writes one JSON object
/// per line, with the level, the message and the fields.
#[test]
fn logs_are_plain_off_a_terminal_and_json_on_request() {
    let path = write("logs.toml", GOOD);
    let plain = xlb()
        .args(["check", "--config"])
        .arg(path.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plain.stderr);
    assert!(text.contains("INFO"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "colour codes in piped logs: {text:?}"
    );

    let by_flag = xlb()
        .args(["--log-format", "json", "check", "--config"])
        .arg(path.path())
        .output()
        .unwrap();
    let by_env = xlb()
        .env("XLB_LOG_FORMAT", "json")
        .args(["check", "--config"])
        .arg(path.path())
        .output()
        .unwrap();
    for out in [by_flag, by_env] {
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = text.lines().collect();
        assert!(!lines.is_empty(), "no log lines");
        for line in lines {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
        }
        assert!(
            text.contains(r#""message":"VIP added","vip":"web""#),
            "{text}"
        );
    }
}
