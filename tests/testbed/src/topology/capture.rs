//! Bounded packet captures (tcpdump) inside a topology namespace.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::netns::{ManagedChild, NetNs};

/// tcpdump binary.
pub const TCPDUMP: &str = "tcpdump";

/// A running `tcpdump -c MAX` that prints one line per packet to a file.
#[derive(Debug)]
pub struct Capture {
    child: ManagedChild,
    out: PathBuf,
    err: PathBuf,
}

impl Capture {
    /// Starts capturing packets that `ifname` (in `ns`) receives and that
    /// match the pcap `filter`, at most `max_packets` of them; waits (up to
    /// 5 s) until tcpdump listens. Its output goes to `dir/<name>.txt`.
    pub fn start(
        ns: &NetNs,
        ifname: &str,
        filter: &str,
        max_packets: usize,
        dir: &Path,
        name: &str,
    ) -> anyhow::Result<Capture> {
        let out = dir.join(format!("{name}.txt"));
        let err = dir.join(format!("{name}.err"));
        let mut cmd = ns.exec([TCPDUMP]);
        // Headers only (-s) and a large buffer (-B, KiB): the ring then
        // holds thousands of packets while tcpdump waits for a CPU.
        cmd.args(["-i", ifname, "-Q", "in", "-n", "-t", "-q", "-l"])
            .args(["-s", "128", "-B", "8192", "--immediate-mode"])
            .arg("-c")
            .arg(max_packets.to_string())
            .arg(filter)
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?);
        let child = ManagedChild::spawn(&format!("tcpdump on {ifname}"), &mut cmd)?;
        let capture = Capture { child, out, err };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = std::fs::read_to_string(&capture.err).unwrap_or_default();
            if log.contains("listening on") {
                return Ok(capture);
            }
            if let Some(st) = capture.child.try_wait()? {
                bail!("tcpdump exited ({st}) before listening: {}", log.trim());
            }
            if Instant::now() >= deadline {
                bail!("tcpdump not listening after 5 s: {}", log.trim());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops tcpdump; returns one line per captured packet and its
    /// closing report (packets captured, received, dropped by the kernel).
    pub fn finish(self) -> anyhow::Result<Captured> {
        // tcpdump drops what it has not printed yet when it is stopped: let
        // its output settle first (unchanged for 300 ms, at most 5 s).
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = None;
        let mut still = 0;
        while still < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(150));
            let len = std::fs::metadata(&self.out).map(|m| m.len()).ok();
            still = if len == last { still + 1 } else { 0 };
            last = len;
        }
        self.child.stop(Duration::from_secs(3));
        let text = std::fs::read_to_string(&self.out)
            .with_context(|| format!("reading {}", self.out.display()))?;
        let report = std::fs::read_to_string(&self.err).unwrap_or_default();
        Ok(Captured {
            lines: text.lines().map(str::to_owned).collect(),
            report: report
                .lines()
                .filter(|l| l.contains("packets"))
                .collect::<Vec<_>>()
                .join("; "),
        })
    }
}

/// What a [`Capture`] saw.
#[derive(Debug, Clone)]
pub struct Captured {
    /// One line of `tcpdump -n -t -q` output per packet.
    pub lines: Vec<String>,
    /// tcpdump's closing counts, e.g. "1500 packets captured; 1500 packets
    /// received by filter; 0 packets dropped by kernel".
    pub report: String,
}

impl Captured {
    /// "N packets dropped by kernel" from the report: packets the capture
    /// missed because tcpdump fell behind.
    pub fn dropped_by_kernel(&self) -> Option<u64> {
        self.report
            .split(';')
            .find(|part| part.contains("dropped by kernel"))
            .and_then(|part| part.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    }
}

/// The source address of a line of `tcpdump -n -t -q` output
/// (`IP 198.18.0.100.80 > 198.18.0.2.40000: tcp 0`,
/// `IP6 fd00:18::1 > fd00:18::2: ICMP6, ...`).
pub fn source_of(line: &str) -> Option<IpAddr> {
    let mut words = line.split_whitespace();
    let family = words.next()?;
    if family != "IP" && family != "IP6" {
        return None;
    }
    let src = words.next()?;
    src.parse()
        .ok()
        .or_else(|| src.rsplit_once('.').and_then(|(a, _)| a.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_of_reads_addresses_with_and_without_ports() {
        let v4: IpAddr = "198.18.0.100".parse().unwrap();
        let v6: IpAddr = "fd00:18::100".parse().unwrap();
        assert_eq!(
            source_of("IP 198.18.0.100.80 > 198.18.0.2.40000: tcp 0"),
            Some(v4)
        );
        assert_eq!(
            source_of("IP6 fd00:18::100.80 > fd00:18::2.40000: tcp 10"),
            Some(v6)
        );
        assert_eq!(
            source_of("IP 198.18.0.100 > 198.18.0.2: ICMP echo reply, id 1, seq 1, length 64"),
            Some(v4)
        );
        assert_eq!(source_of("ARP, Request who-has 198.18.0.1"), None);
    }

    #[test]
    fn dropped_by_kernel_is_read_from_the_report() {
        let c = Captured {
            lines: Vec::new(),
            report: "405 packets captured; 3002 packets received by filter; \
                     2195 packets dropped by kernel"
                .into(),
        };
        assert_eq!(c.dropped_by_kernel(), Some(2195));
        let none = Captured {
            lines: Vec::new(),
            report: String::new(),
        };
        assert_eq!(none.dropped_by_kernel(), None);
    }
}
