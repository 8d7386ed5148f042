//! `xlb trace` against a running xlb (DSR topology): the lines it prints
//! for traffic the test sends, the capture it writes (read by tcpdump,
//! and block by block here, comments included, since no tool here shows
//! pcapng comments), and the trace's end. Needs root.

use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xlb_testbed::running::{WEIGHTS, require_root, start, xlb_exe};
use xlb_testbed::topology::{VIP_PORT, http_bodies};

const REQUESTS: usize = 3;
const TRACE_SECONDS: u32 = 6;

/// (comment, captured bytes, original length) of each enhanced packet
/// block of a pcapng file, after checking that it is one: a section
/// header with the byte-order magic, block lengths that agree, interface
/// descriptions of Ethernet before the packets that name them.
fn pcapng_packets(b: &[u8]) -> Vec<(String, Vec<u8>, u32)> {
    let u32_at = |b: &[u8], o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().unwrap());
    let u16_at = |b: &[u8], o: usize| u16::from_ne_bytes(b[o..o + 2].try_into().unwrap());
    assert!(b.len() > 28, "capture too short");
    assert_eq!(u32_at(b, 0), 0x0A0D_0D0A, "not a pcapng section header");
    assert_eq!(u32_at(b, 8), 0x1A2B_3C4D, "byte-order magic");
    let (mut at, mut interfaces, mut out) = (0, 0, Vec::new());
    while at < b.len() {
        let (kind, len) = (u32_at(b, at), u32_at(b, at + 4) as usize);
        assert!(len >= 12 && len % 4 == 0, "block length {len} at {at}");
        assert_eq!(
            u32_at(b, at + len - 4) as usize,
            len,
            "trailing length at {at}"
        );
        let body = &b[at + 8..at + len - 4];
        match kind {
            1 => {
                assert_eq!(u16_at(body, 0), 1, "link type Ethernet");
                interfaces += 1;
            }
            6 => {
                assert!(
                    u32_at(body, 0) < interfaces,
                    "packet of an undescribed interface"
                );
                let caplen = u32_at(body, 12) as usize;
                let orig = u32_at(body, 16);
                let data = body[20..20 + caplen].to_vec();
                let mut o = 20 + caplen.div_ceil(4) * 4;
                let mut comment = String::new();
                while o + 4 <= body.len() {
                    let (code, olen) = (u16_at(body, o), usize::from(u16_at(body, o + 2)));
                    if code == 0 {
                        break;
                    }
                    if code == 1 {
                        comment = String::from_utf8(body[o + 4..o + 4 + olen].to_vec()).unwrap();
                    }
                    o += 4 + olen.div_ceil(4) * 4;
                }
                out.push((comment, data, orig));
            }
            _ => {}
        }
        at += len;
    }
    out
}

#[test]
fn xlb_trace_prints_the_decisions_and_writes_a_capture_tcpdump_reads() {
    if !require_root("xlb_trace_prints_the_decisions_and_writes_a_capture_tcpdump_reads") {
        return;
    }
    let running = start(&WEIGHTS);
    let t = &running.topo;
    let socket = t.control_socket();
    let pcap = t.dir().join("trace.pcapng");
    let client = t.client_addr4().to_string();
    let mut trace = Command::new(xlb_exe())
        .arg("trace")
        .arg("--socket")
        .arg(&socket)
        .args(["--client", &client, "--count", "1000"])
        .args(["--seconds", &TRACE_SECONDS.to_string()])
        .arg("--pcap")
        .arg(&pcap)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start xlb trace");
    let mut stderr = BufReader::new(trace.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(
        first.starts_with(&format!("xlb trace: tracing from {client} (trace 1)")),
        "xlb trace said {first:?}\n--- xlb log ---\n{}",
        running.xlb.log_tail(20)
    );
    let started = Instant::now();

    // VIP traffic: each connection's first packet misses, the rest hit.
    let vip = SocketAddr::new(t.vip4().into(), VIP_PORT);
    http_bodies(t.client(), vip, "/", REQUESTS, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("{e:#}"));
    // The VIP's address, another port: not a VIP, to the kernel.
    let other = SocketAddr::new(IpAddr::V4(t.vip4()), VIP_PORT + 1);
    t.client()
        .in_ns(|| TcpStream::connect_timeout(&other, Duration::from_millis(300)))
        .ok();

    let out = trace.wait_with_output().expect("xlb trace");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "xlb trace failed: {rest}\n{stdout}");
    // Shown with --nocapture: what an operator sees.
    println!("--- xlb trace ---\n{first}{stdout}{rest}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(u64::from(TRACE_SECONDS) + 3),
        "the trace ran {took:?}, its limit is {TRACE_SECONDS} s"
    );
    assert!(
        rest.contains("packets (from ") && rest.contains(&format!("{TRACE_SECONDS} s passed")),
        "summary: {rest}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let vip_prefix = format!("{client}:");
    let to_vip = format!("> {}:{VIP_PORT} tcp", t.vip4());
    let misses: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains(&to_vip) && l.contains("vip web4, conntrack miss, backend backend-"))
        .collect();
    let hits = lines
        .iter()
        .filter(|l| l.contains(&to_vip) && l.contains("vip web4, conntrack hit, backend backend-"))
        .count();
    assert_eq!(misses.len(), REQUESTS, "one miss per connection:\n{stdout}");
    assert!(
        hits >= 2 * REQUESTS,
        "hits (ACK, request, FIN...):\n{stdout}"
    );
    for l in lines.iter().filter(|l| l.contains(&to_vip)) {
        assert!(l.contains(&vip_prefix) && l.ends_with(", XDP_TX"), "{l}");
        assert!(
            l.contains(&format!(" {} ", t.lb_ifname())),
            "interface: {l}"
        );
    }
    let passed = format!("> {}:{} tcp len ", t.vip4(), VIP_PORT + 1);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&passed) && l.ends_with(": XDP_PASS (not_vip)")),
        "the other port's SYN:\n{stdout}"
    );

    // The capture: one packet per line, in order, each with its decision.
    let bytes = std::fs::read(&pcap).expect("the capture");
    let packets = pcapng_packets(&bytes);
    assert_eq!(packets.len(), lines.len(), "one packet per line");
    for ((comment, data, orig), line) in packets.iter().zip(&lines) {
        let decision = line.split_once(": ").map(|(_, d)| d).unwrap();
        assert_eq!(comment, &format!("xlb: {decision}"), "comment of {line}");
        assert!(data.len() <= 128 && data.len() as u32 <= *orig, "{line}");
        assert!(line.contains(&format!(" len {orig}: ")), "{line}");
    }
    let dump = Command::new("tcpdump")
        .args(["-n", "-r"])
        .arg(&pcap)
        .output()
        .expect("tcpdump");
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.status.success(),
        "tcpdump -r failed: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    println!("--- tcpdump -n -r trace.pcapng ---\n{text}");
    assert_eq!(text.lines().count(), packets.len(), "tcpdump:\n{text}");
    let flow = format!("{client}.");
    assert!(
        text.lines()
            .filter(|l| l.contains(&format!("> {}.{VIP_PORT}:", t.vip4())))
            .all(|l| l.contains(&flow)),
        "tcpdump:\n{text}"
    );

    // The trace ended with the CLI: another starts at once.
    let again = Command::new(xlb_exe())
        .arg("trace")
        .arg("--socket")
        .arg(&socket)
        .args(["--vip", "web4", "--seconds", "1"])
        .output()
        .expect("xlb trace again");
    assert!(
        again.status.success(),
        "a second trace: {}",
        String::from_utf8_lossy(&again.stderr)
    );
}
