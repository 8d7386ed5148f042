//! `ctl_request`: the control socket's request decoder, as
//! `lb_user::ctl::serve` runs it (one line, `serde_json` into
//! `lb_user::api::Request`), and the trace filter a trace request is
//! turned into (`lb_user::trace::filter`).

use std::net::IpAddr;

use lb_common::{FAMILY_V4, FAMILY_V6, IPPROTO_TCP, IPPROTO_UDP, VipKey};
use lb_user::api::{Reply, Request, TraceSpec};
use lb_user::trace::filter::{self, NamedVip};

fn vips() -> Vec<NamedVip> {
    let vip = |name: &str, addr: &str, port, proto| NamedVip {
        name: name.to_owned(),
        key: VipKey::new(addr.parse().unwrap(), port, proto),
    };
    vec![
        vip("web", "198.18.0.100", 80, IPPROTO_TCP),
        vip("dns6", "fd00:18::100", 53, IPPROTO_UDP),
        vip("all", "198.18.0.101", 0, IPPROTO_TCP),
    ]
}

fn masked(addr: [u32; 4], mask: [u32; 4]) -> bool {
    addr.iter().zip(mask).all(|(a, m)| a & !m == 0)
}

fn trace_filter(spec: &TraceSpec) {
    let vips = vips();
    let until = 5_000_000_000;
    let got = filter::build(spec, &vips, until);
    let again = filter::build(spec, &vips, until);
    assert_eq!(
        got.as_ref().map_err(|e| e.to_string()),
        again.as_ref().map_err(|e| e.to_string()),
        "the same trace spec twice"
    );
    let Ok((f, words)) = got else { return };
    assert!(!words.is_empty());
    assert_eq!(f.until, until);
    assert!(
        masked(f.src, f.src_mask) && masked(f.dst, f.dst_mask),
        "{f:?}"
    );
    assert!([0, FAMILY_V4, FAMILY_V6].contains(&f.family), "{f:?}");
    match spec.port {
        Some(p) => assert!(p != 0 && f.port == p.to_be()),
        None => assert_eq!(f.port, 0),
    }
    if let Some(c) = &spec.client {
        let (addr, len) = filter::parse_prefix(c).expect("the filter took it");
        assert!(len <= if addr.is_ipv4() { 32 } else { 128 });
        let family = if addr.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 };
        assert_eq!(f.family, family);
    }
    if spec.vip.is_none() {
        assert_eq!((f.dst, f.dst_mask, f.dst_port), ([0; 4], [0; 4], 0));
    } else if spec
        .vip
        .as_ref()
        .and_then(|v| v.parse::<IpAddr>().ok())
        .is_some()
        && !vips.iter().any(|n| Some(&n.name) == spec.vip.as_ref())
    {
        assert_eq!(f.dst_port, 0, "an address is every port");
    }
}

/// Input: what a client writes to the control socket.
pub fn ctl_request(data: &[u8]) {
    // `serve` reads one line into a String: bytes that are not UTF-8 are
    // an I/O error there, before any decoding.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let line = match text.find('\n') {
        Some(i) => &text[..=i],
        None => text,
    };
    let got = serde_json::from_str::<Request>(line);
    let reply = match &got {
        Ok(req) => {
            let json = serde_json::to_string(req).expect("a request serializes");
            let back: Request = serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("{json} does not decode: {e}"));
            assert_eq!(&back, req, "{json} decodes to another request");
            assert_eq!(serde_json::to_string(&back).unwrap(), json, "not stable");
            if let Request::Trace(spec) = req {
                trace_filter(spec);
            }
            Reply::Ok {
                message: String::new(),
            }
        }
        Err(e) => Reply::Error {
            message: format!("bad request: {e}"),
        },
    };
    // The reply goes back as one line.
    let out = serde_json::to_vec(&reply).expect("a reply serializes");
    assert!(!out.contains(&b'\n'));
    assert_eq!(
        got.map_err(|e| e.to_string()),
        serde_json::from_str::<Request>(line).map_err(|e| e.to_string()),
        "the same request twice"
    );
}
