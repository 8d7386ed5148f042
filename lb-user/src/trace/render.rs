//! A trace record in words: one line per packet for the terminal, and the
//! decision alone for a capture's packet comment. Pure.

use std::net::IpAddr;

use lb_common::{
    FAMILY_V4, FAMILY_V6, IPPROTO_TCP, IPPROTO_UDP, TraceRecord, drop, trace, words_to_bytes,
};

use crate::api::TraceStarted;

/// The XDP action's name.
pub fn verdict(v: u8) -> &'static str {
    match v {
        0 => "XDP_ABORTED",
        1 => "XDP_DROP",
        2 => "XDP_PASS",
        3 => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "XDP_?",
    }
}

/// Why: a drop's reason (`lb_common::drop`), a pass's (`trace::pass`).
pub fn reason(r: &TraceRecord) -> Option<&'static str> {
    let i = usize::from(r.reason);
    match r.verdict {
        1 => drop::NAMES.get(i).copied(),
        2 => trace::pass::NAMES.get(i).copied(),
        _ => None,
    }
}

fn addr(words: &[u32; 4], family: u8) -> Option<IpAddr> {
    let b = words_to_bytes(words);
    match family {
        FAMILY_V4 => Some(IpAddr::from([b[0], b[1], b[2], b[3]])),
        FAMILY_V6 => Some(IpAddr::from(b)),
        _ => None,
    }
}

fn endpoint(words: &[u32; 4], port: u16, family: u8) -> String {
    let port = u16::from_be(port);
    match addr(words, family) {
        Some(IpAddr::V6(a)) => format!("[{a}]:{port}"),
        Some(a) => format!("{a}:{port}"),
        None => "?".into(),
    }
}

/// What the packet was: its flow, or what stands for it.
pub fn packet(r: &TraceRecord) -> String {
    let k = &r.key;
    let flow = || {
        let proto = match k.proto {
            IPPROTO_TCP => "tcp".to_owned(),
            IPPROTO_UDP => "udp".to_owned(),
            p => format!("proto {p}"),
        };
        format!(
            "{} > {} {proto}",
            endpoint(&k.src, k.sport, r.family),
            endpoint(&k.dst, k.dport, r.family)
        )
    };
    let what = match r.kind {
        trace::KIND_ICMP_ERROR => format!("icmp error for {}", flow()),
        trace::KIND_NAT_REPLY => format!("nat reply for {}", flow()),
        trace::KIND_NEIGHBOUR => match addr(&k.dst, r.family) {
            Some(a) => format!("who-has {a}"),
            None => "who-has ?".into(),
        },
        trace::KIND_MALFORMED => "malformed".into(),
        _ => flow(),
    };
    format!("{what} len {}", r.len)
}

/// What the data plane decided: VIP, connection table, backend, verdict
/// and why.
pub fn decision(r: &TraceRecord, d: &TraceStarted) -> String {
    let mut parts = Vec::new();
    if r.vip != trace::NO_VIP {
        match d.vips.iter().find(|v| v.index == r.vip) {
            Some(v) => parts.push(format!("vip {}", v.name)),
            None => parts.push(format!("vip #{}", r.vip)),
        }
    }
    if r.conntrack != trace::CT_NONE {
        let ct = trace::CT_NAMES
            .get(usize::from(r.conntrack))
            .unwrap_or(&"?");
        parts.push(format!("conntrack {ct}"));
    }
    if r.backend != 0 {
        match d.backends.iter().find(|b| b.id == r.backend) {
            Some(b) => parts.push(format!("backend {} ({})", b.name, b.address)),
            None => parts.push(format!("backend #{}", r.backend)),
        }
    }
    let mut v = verdict(r.verdict).to_owned();
    if let Some(why) = reason(r) {
        v.push_str(&format!(" ({why})"));
    }
    parts.push(v);
    parts.join(", ")
}

/// The interface's name, from the daemon's list.
pub fn interface(ifindex: u32, d: &TraceStarted) -> String {
    d.interfaces
        .iter()
        .find(|i| i.ifindex == ifindex)
        .map_or_else(|| format!("if{ifindex}"), |i| i.name.clone())
}

/// `HH:MM:SS.micros` (UTC) of Unix nanoseconds.
pub fn clock(unix_ns: u64) -> String {
    let s = unix_ns / 1_000_000_000;
    let us = (unix_ns % 1_000_000_000) / 1_000;
    let day = s % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{us:06}",
        day / 3600,
        day % 3600 / 60,
        day % 60
    )
}

/// One line for the terminal.
pub fn line(r: &TraceRecord, d: &TraceStarted, unix_ns: u64) -> String {
    format!(
        "{} {} {}: {}",
        clock(unix_ns),
        interface(r.ifindex, d),
        packet(r),
        decision(r, d)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{TraceBackend, TraceInterface, TraceVip};
    use lb_common::{FlowKey, TRACE_CAPTURE, addr_bytes, bytes_to_words};

    fn started() -> TraceStarted {
        TraceStarted {
            vips: vec![TraceVip {
                index: 0,
                name: "web4".into(),
            }],
            backends: vec![TraceBackend {
                id: 2,
                vip: "web4".into(),
                name: "backend-2".into(),
                address: "198.18.0.12".into(),
            }],
            interfaces: vec![TraceInterface {
                ifindex: 5,
                name: "eth0".into(),
            }],
            ..TraceStarted::default()
        }
    }

    fn record(src: &str, dst: &str) -> TraceRecord {
        let (s, family) = addr_bytes(src.parse().unwrap());
        let (d, _) = addr_bytes(dst.parse().unwrap());
        TraceRecord {
            at: 0,
            key: FlowKey {
                src: bytes_to_words(&s),
                dst: bytes_to_words(&d),
                sport: 40000u16.to_be(),
                dport: 80u16.to_be(),
                proto: IPPROTO_TCP,
                _pad: [0; 3],
            },
            vip: 0,
            backend: 2,
            ifindex: 5,
            len: 74,
            verdict: 3,
            conntrack: trace::CT_MISS,
            reason: trace::NO_REASON,
            family,
            kind: trace::KIND_FLOW,
            _pad: 0,
            captured: 0,
            data: [0; TRACE_CAPTURE],
        }
    }

    #[test]
    fn a_forward_names_vip_conntrack_backend_and_verdict() {
        let r = record("198.18.0.2", "198.18.0.100");
        assert_eq!(
            line(&r, &started(), 3_723_000_004_000),
            "01:02:03.000004 eth0 198.18.0.2:40000 > 198.18.0.100:80 tcp len 74: vip web4, \
             conntrack miss, backend backend-2 (198.18.0.12), XDP_TX"
        );
    }

    #[test]
    fn passes_and_drops_say_why() {
        let mut r = record("fd00:18::2", "fd00:18::1");
        (r.vip, r.backend, r.conntrack) = (trace::NO_VIP, 0, trace::CT_NONE);
        (r.verdict, r.reason, r.ifindex) = (2, trace::pass::NOT_VIP, 9);
        assert_eq!(
            line(&r, &started(), 0),
            "00:00:00.000000 if9 [fd00:18::2]:40000 > [fd00:18::1]:80 tcp len 74: \
             XDP_PASS (not_vip)"
        );
        let mut r = record("198.18.0.2", "198.18.0.102");
        (r.vip, r.backend, r.verdict, r.reason) = (7, 0, 1, drop::NO_BACKEND as u8);
        assert_eq!(
            decision(&r, &started()),
            "vip #7, conntrack miss, XDP_DROP (no_backend)"
        );
        r.kind = trace::KIND_MALFORMED;
        (r.vip, r.conntrack, r.reason) = (trace::NO_VIP, 0, drop::IPV4_BAD_HEADER as u8);
        assert_eq!(packet(&r), "malformed len 74");
        assert_eq!(decision(&r, &started()), "XDP_DROP (ipv4_bad_header)");
    }

    #[test]
    fn icmp_errors_replies_and_queries_name_the_flow_they_belong_to() {
        let mut r = record("198.18.0.2", "198.18.0.100");
        r.kind = trace::KIND_ICMP_ERROR;
        assert!(packet(&r).starts_with("icmp error for 198.18.0.2:40000 > 198.18.0.100:80"));
        r.kind = trace::KIND_NAT_REPLY;
        assert!(packet(&r).starts_with("nat reply for 198.18.0.2:40000"));
        r.kind = trace::KIND_NEIGHBOUR;
        assert_eq!(packet(&r), "who-has 198.18.0.100 len 74");
    }
}
