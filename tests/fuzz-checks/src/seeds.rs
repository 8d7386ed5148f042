//! Valid inputs of every target, built by the codecs' own encoders (and
//! the configuration examples of the docs): where the corpora started,
//! and inputs `tests/fuzz_corpus.rs` checks even if a corpus minimization
//! dropped them. `xlb-fuzz-seeds DIR` writes them out.

use std::net::IpAddr;

use lb_common::{IPPROTO_TCP, IPPROTO_UDP};
use lb_user::api::{BackendAction, BackendSpec, Request, TraceSpec};
use lb_user::health::icmp::echo_request;
use lb_user::sync::Key;
use lb_user::sync::wire::{self, Entry, Event, F_CLOSING, F_NAT, Header, Kind};
use lb_user::vrrp::packet::{Advert, GROUP_V4, GROUP_V6, IPPROTO_VRRP};

use crate::{sync, vrrp};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The ```toml blocks of the docs.
fn doc_configs() -> Vec<Vec<u8>> {
    let docs = [
        include_str!("../../../docs/config.md"),
        include_str!("../../../docs/operations.md"),
        include_str!("../../../docs/nat-backends.md"),
        include_str!("../../../docs/scale-out.md"),
    ];
    let mut out = Vec::new();
    for doc in docs {
        let mut rest = doc;
        while let Some(start) = rest.find("```toml\n") {
            let body = &rest[start + 8..];
            let end = body.find("```").unwrap_or(body.len());
            out.push(body.as_bytes()[..end].to_vec());
            rest = &body[end..];
        }
    }
    out
}

fn config() -> Vec<Vec<u8>> {
    let mut out = doc_configs();
    out.push(b"interface = \"eth0\"\n".to_vec());
    out.push(
        b"interface = \"eth0\"\n\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.100\"\nport = 80\n\
          \n[vip.health]\ntype = \"http\"\nexpect_status = \"2xx,304\"\n\n[[vip.backend]]\n\
          address = \"198.18.0.11\"\nweight = 20000\n"
            .to_vec(),
    );
    out.push(b"200-299,304".to_vec());
    out
}

fn ctl_request() -> Vec<Vec<u8>> {
    let requests = [
        Request::Status,
        Request::Reload,
        Request::Down,
        Request::Backend {
            vip: "web".into(),
            backend: "b1".into(),
            action: BackendAction::Drain,
        },
        Request::Backend {
            vip: "web".into(),
            backend: "b1".into(),
            action: BackendAction::Weight(3),
        },
        Request::BackendAdd {
            vip: "web".into(),
            backend: BackendSpec {
                address: ip("fd00:18::7"),
                port: Some(8080),
                weight: Some(2),
                tier: Some(1),
            },
        },
        Request::BackendRemove {
            vip: "web".into(),
            backend: "198.18.0.7".into(),
        },
        Request::Trace(TraceSpec {
            vip: Some("web".into()),
            client: Some("198.18.0.0/24".into()),
            port: Some(80),
            drops_only: true,
            seconds: 30,
        }),
        Request::Trace(TraceSpec {
            vip: Some("fd00:18::100".into()),
            client: Some("fd00:18::/64".into()),
            seconds: 5,
            ..TraceSpec::default()
        }),
        Request::TraceStop { id: 7 },
    ];
    requests
        .iter()
        .map(|r| {
            let mut line = serde_json::to_vec(r).unwrap();
            line.push(b'\n');
            line
        })
        .collect()
}

fn http_response() -> Vec<Vec<u8>> {
    let responses: [&[u8]; 6] = [
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 10\r\n\r\nbackend-1\n",
        b"HTTP/1.0 503 Service Unavailable\r\nServer: x\r\n\r\ndown",
        b"HTTP/1.1 200 OK\r\ncontent-LENGTH:  2\r\n\r\nokay",
        b"HTTP/1.1 204 No Content\n\n",
        b"HTTP/1.1 301 Moved\r\nLocation: /x\r\n folded\r\nno colon\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
    ];
    responses
        .iter()
        .map(|r| {
            // Needle: "backend".
            let mut input = vec![7u8];
            input.extend_from_slice(b"backend");
            input.extend_from_slice(r);
            input
        })
        .collect()
}

fn icmp_echo() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for v4 in [true, false] {
        let mut reply = echo_request(v4, 0x1234, 7);
        reply[0] = if v4 { 0 } else { 129 };
        let mut input = vec![u8::from(!v4), 0x12, 0x34, 0, 7, 0];
        if v4 {
            let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 198, 18, 0, 11];
            ip.extend_from_slice(&[198, 18, 0, 1]);
            input.extend_from_slice(&ip);
        }
        input.extend_from_slice(&reply);
        out.push(input);
    }
    out
}

fn vrrp_advert() -> Vec<Vec<u8>> {
    let groups = vrrp::groups();
    let mut out = Vec::new();
    // (mode, priority, group): see `vrrp::vrrp_advert` for the mode bits.
    for (mode, priority, g) in [
        (0x00u8, 100u8, 0usize),
        (0x02, 254, 0),
        (0x20, 0, 0),
        (0x01, 200, 1),
        (0x03, 100, 2),
        (0x09, 50, 1),
    ] {
        let v6 = mode & 1 != 0;
        let pick = usize::from(mode >> 3) & 3;
        let (src, own, group) = if v6 {
            (
                ip(vrrp::SOURCES_V6[pick]),
                ip(vrrp::OWN[1]),
                IpAddr::from(GROUP_V6),
            )
        } else {
            (
                ip(vrrp::SOURCES_V4[pick]),
                ip(vrrp::OWN[0]),
                IpAddr::from(GROUP_V4),
            )
        };
        let dst = if mode & 0x20 != 0 { own } else { group };
        let advert = Advert {
            vrid: groups[g].vrid,
            priority,
            interval_cs: 100,
            addresses: groups[g].addresses.clone(),
        };
        let msg = advert.encode(src, dst);
        let mut input = vec![mode, 255, priority];
        if !v6 {
            let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
                unreachable!()
            };
            let total = (20 + msg.len()) as u16;
            let [t0, t1] = total.to_be_bytes();
            input.extend_from_slice(&[0x45, 0xc0, t0, t1, 0, 0, 0, 0, 255, IPPROTO_VRRP, 0, 0]);
            input.extend_from_slice(&s.octets());
            input.extend_from_slice(&d.octets());
        }
        input.extend_from_slice(&msg);
        out.push(input);
    }
    out
}

fn sync_message() -> Vec<Vec<u8>> {
    let entry = |client: &str, port, vip: &str, vport, proto, backend: &str, bport, flags| Entry {
        client: ip(client),
        client_port: port,
        vip: ip(vip),
        vip_port: vport,
        proto,
        backend: ip(backend),
        backend_port: bport,
        flags,
        event: Event::New,
        age_ms: 1500,
    };
    let flows = vec![
        entry(
            "198.18.0.2",
            40_000,
            "198.18.0.100",
            80,
            IPPROTO_TCP,
            "198.18.1.11",
            8080,
            F_NAT,
        ),
        entry(
            "fd00:18::2",
            40_001,
            "fd00:18::100",
            443,
            IPPROTO_TCP,
            "fd00:19::11",
            0,
            F_CLOSING,
        ),
        entry(
            "198.18.0.2",
            53_000,
            "198.18.0.101",
            53,
            IPPROTO_UDP,
            "198.18.1.21",
            53,
            0,
        ),
    ];
    let header = |kind, seq| Header {
        kind,
        epoch: 9,
        seq,
        sent_unix_ms: sync::NOW_MS - 200,
    };
    let key = Key::from_bytes(sync::KEY).unwrap();
    let hello = wire::encode(&header(Kind::Hello, 1), &[]);
    let full = wire::encode(&header(Kind::Flows, 2), &flows);
    let one = wire::encode(&header(Kind::Flows, 3), &flows[..1]);
    vec![
        // Mode 1: the check appends the tag; from a peer.
        [&[0x01, 0][..], &hello].concat(),
        [&[0x03, 0][..], &full].concat(),
        [&[0x07, 0][..], &one].concat(),
        // Mode 0: the datagram as sent, tag included.
        [&[0x00, 0][..], &key.seal(full.clone())].concat(),
        // The receiver's clock follows the message.
        [&[0x11, 3][..], &one].concat(),
    ]
}

fn agent_reply() -> Vec<Vec<u8>> {
    [
        "75%\n",
        "25",
        "62.5%\r\n",
        "  0%  \r\n",
        "100\nmore",
        "up 75%",
        "101%",
    ]
    .iter()
    .map(|r| r.as_bytes().to_vec())
    .collect()
}

/// The seeds of fuzz target `target`.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "agent_reply" => agent_reply(),
        "config" => config(),
        "ctl_request" => ctl_request(),
        "http_response" => http_response(),
        "icmp_echo" => icmp_echo(),
        "sync_message" => sync_message(),
        "vrrp_advert" => vrrp_advert(),
        other => panic!("no fuzz target {other:?}"),
    }
}
