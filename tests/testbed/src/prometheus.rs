//! A real Prometheus server (Debian's `prometheus`, installed by `cargo
//! xtask setup`) started in a namespace to scrape xlb, its storage in a
//! test's temp dir, stopped by its pid on drop ([`ManagedChild`]); its
//! HTTP API's queries; `promtool check rules`.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use serde_json::Value;

use crate::netns::{ManagedChild, NetNs, TERM_GRACE};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// What the server scrapes and how often.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub job: String,
    pub targets: Vec<SocketAddr>,
    /// Also the rule evaluation interval.
    pub interval: Duration,
    pub rule_files: Vec<PathBuf>,
}

/// A running Prometheus.
#[derive(Debug)]
pub struct Prometheus {
    child: Option<ManagedChild>,
    /// Its web UI and API, in its namespace.
    web: SocketAddr,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            c.stop(TERM_GRACE);
        }
    }
}

/// Seconds, as Prometheus's durations want them (`1s`, `500ms`).
fn duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// `prometheus.yml` for `scrape`.
fn config(scrape: &Scrape) -> String {
    let mut s = String::new();
    let i = duration(scrape.interval);
    let _ = writeln!(s, "global:");
    let _ = writeln!(s, "  scrape_interval: {i}");
    let _ = writeln!(s, "  scrape_timeout: {i}");
    let _ = writeln!(s, "  evaluation_interval: {i}");
    if !scrape.rule_files.is_empty() {
        let _ = writeln!(s, "rule_files:");
        for f in &scrape.rule_files {
            let _ = writeln!(s, "  - {:?}", f.display().to_string());
        }
    }
    let _ = writeln!(s, "scrape_configs:");
    let _ = writeln!(s, "  - job_name: {:?}", scrape.job);
    let _ = writeln!(s, "    static_configs:");
    let targets: Vec<String> = scrape
        .targets
        .iter()
        .map(|t| format!("{:?}", t.to_string()))
        .collect();
    let _ = writeln!(s, "      - targets: [{}]", targets.join(", "));
    s
}

impl Prometheus {
    /// Starts Prometheus in `ns` with its config, storage and log under
    /// `dir`, its API on `web`; waits (bounded) until it is ready.
    pub fn start(
        ns: &NetNs,
        dir: &Path,
        scrape: &Scrape,
        web: SocketAddr,
    ) -> anyhow::Result<Prometheus> {
        ensure!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: run `cargo xtask setup` (Debian package prometheus)"
        );
        let dir = dir.join("prometheus");
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("prometheus.yml");
        std::fs::write(&conf, config(scrape))?;
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = ns.exec([PROMETHEUS]);
        cmd.arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .arg("--storage.tsdb.retention.time=1h")
            .stdout(Stdio::null())
            .stderr(out);
        let child = ManagedChild::spawn("prometheus", &mut cmd)?;
        let p = Prometheus {
            child: Some(child),
            web,
            log,
        };
        p.wait_ready(ns, Duration::from_secs(30))?;
        Ok(p)
    }

    fn wait_ready(&self, ns: &NetNs, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(c) = &self.child
                && let Some(status) = c.try_wait()?
            {
                bail!("prometheus exited ({status}):\n{}", self.log_tail(20));
            }
            if let Ok((200, _)) = self.get(ns, "/-/ready") {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!(
                    "prometheus not ready after {limit:?}:\n{}",
                    self.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `GET path` on its API from inside `ns` (HTTP/1.0: the answer is
    /// never chunked); (status, body).
    pub fn get(&self, ns: &NetNs, path: &str) -> anyhow::Result<(u16, String)> {
        let web = self.web;
        ns.in_ns(|| {
            let timeout = Duration::from_secs(5);
            let mut s = TcpStream::connect_timeout(&web, timeout)
                .with_context(|| format!("connect to prometheus at {web}"))?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: {web}\r\n\r\n")?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf)
                .with_context(|| format!("reading GET {path}"))?;
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(end) = resp.parse(&buf)? else {
                bail!("GET {path}: incomplete answer ({} bytes)", buf.len());
            };
            let code = resp.code.context("no status")?;
            Ok((code, String::from_utf8_lossy(&buf[end..]).into_owned()))
        })
    }

    /// `/api/v1/query` of `expr` (at Unix time `at`, or now): the
    /// `data.result` array.
    pub fn query(&self, ns: &NetNs, expr: &str, at: Option<f64>) -> anyhow::Result<Vec<Value>> {
        let mut path = format!("/api/v1/query?query={}", urlencode(expr));
        if let Some(t) = at {
            let _ = write!(path, "&time={t:.3}");
        }
        let (code, body) = self.get(ns, &path)?;
        let v: Value = serde_json::from_str(&body)
            .with_context(|| format!("query {expr:?}: HTTP {code}, not JSON: {body}"))?;
        ensure!(
            code == 200 && v["status"] == "success",
            "query {expr:?}: HTTP {code}: {body}"
        );
        v["data"]["result"]
            .as_array()
            .cloned()
            .ok_or_else(|| anyhow!("query {expr:?}: no result array in {body}"))
    }

    /// The value of the one series `expr` gives (an instant vector), or
    /// `None` when it gives none.
    pub fn scalar(&self, ns: &NetNs, expr: &str, at: Option<f64>) -> anyhow::Result<Option<f64>> {
        let r = self.query(ns, expr, at)?;
        ensure!(r.len() <= 1, "{expr:?} gave {} series: {r:?}", r.len());
        r.first().map(|s| sample_value(&s["value"])).transpose()
    }
}

/// The number of a `[time, "value"]` pair.
pub fn sample_value(pair: &Value) -> anyhow::Result<f64> {
    let v = pair[1]
        .as_str()
        .ok_or_else(|| anyhow!("not a sample: {pair}"))?;
    v.parse().with_context(|| format!("not a number: {v:?}"))
}

/// The Unix time of a `[time, "value"]` pair.
pub fn sample_time(pair: &Value) -> anyhow::Result<f64> {
    pair[0]
        .as_f64()
        .ok_or_else(|| anyhow!("not a sample: {pair}"))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `promtool check rules FILE`: its output on success, an error with it
/// otherwise.
pub fn check_rules(file: &Path) -> anyhow::Result<String> {
    let out = Command::new(PROMTOOL)
        .arg("check")
        .arg("rules")
        .arg(file)
        .output()
        .with_context(|| format!("running {PROMTOOL} (cargo xtask setup installs it)"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "promtool check rules failed:\n{text}");
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            urlencode("rate(x{a=\"b c\"}[5s])"),
            "rate%28x%7Ba%3D%22b%20c%22%7D%5B5s%5D%29"
        );
    }

    #[test]
    fn the_config_names_rules_targets_and_intervals() {
        let c = config(&Scrape {
            job: "xlb".into(),
            targets: vec!["127.0.0.1:9477".parse().unwrap()],
            interval: Duration::from_secs(1),
            rule_files: vec!["/tmp/r.yml".into()],
        });
        assert!(c.contains("  scrape_interval: 1s\n"), "{c}");
        assert!(c.contains("rule_files:\n  - \"/tmp/r.yml\"\n"), "{c}");
        assert!(c.contains("      - targets: [\"127.0.0.1:9477\"]\n"), "{c}");
    }
}
