//! From what `xlb trace` asks for to the `TraceFilter` the data plane
//! tests each packet against. Pure: the controller calls it with its
//! VIPs, the unit tests with theirs.

use std::net::IpAddr;

use anyhow::{Result, anyhow, bail};
use lb_common::{FAMILY_V4, FAMILY_V6, TraceFilter, VipKey, addr_bytes, bytes_to_words, trace};

use crate::api::TraceSpec;

/// A VIP a trace may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedVip {
    pub name: String,
    pub key: VipKey,
}

/// `addr/len` as address words and mask words (as in `FlowKey`), the
/// address masked.
fn prefix_words(addr: IpAddr, len: u8) -> ([u32; 4], [u32; 4]) {
    let (bytes, _) = addr_bytes(addr);
    let mut mask = [0u8; 16];
    for (i, m) in mask.iter_mut().enumerate() {
        let bits = (len as usize).saturating_sub(i * 8).min(8);
        *m = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
    }
    let masked: [u8; 16] = std::array::from_fn(|i| bytes[i] & mask[i]);
    (bytes_to_words(&masked), bytes_to_words(&mask))
}

/// An address or prefix (`ADDR` or `ADDR/LEN`).
pub fn parse_prefix(s: &str) -> Result<(IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| anyhow!("client {s:?}: not an address or prefix (ADDR or ADDR/LEN)"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| anyhow!("client {s:?}: prefix length must be 0..={max}"))?,
    };
    Ok((addr, len))
}

fn family_of(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 }
}

/// The filter of `spec` among `vips`, recording until `until_ns`, and the
/// filter in words.
pub fn build(spec: &TraceSpec, vips: &[NamedVip], until_ns: u64) -> Result<(TraceFilter, String)> {
    let mut f = TraceFilter {
        until: until_ns,
        ..TraceFilter::default()
    };
    let mut words = Vec::new();
    if let Some(v) = &spec.vip {
        if let Some(named) = vips.iter().find(|n| n.name == *v) {
            let k = named.key;
            let (dst, mask) = prefix_words(ip_of(&k), 128);
            f.dst = dst;
            f.dst_mask = mask;
            f.dst_port = k.port;
            f.proto = k.proto;
            f.family = k.family;
            words.push(format!("VIP {v}"));
        } else if let Ok(addr) = v.parse::<IpAddr>() {
            let (dst, mask) = prefix_words(addr, 128);
            f.dst = dst;
            f.dst_mask = mask;
            f.family = family_of(addr);
            words.push(format!("to {addr}"));
        } else {
            let mut names: Vec<&str> = vips.iter().map(|n| n.name.as_str()).collect();
            names.sort_unstable();
            bail!(
                "no VIP named {v:?} (VIPs: {}); give a VIP's name or an address",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            );
        }
    }
    if let Some(c) = &spec.client {
        let (addr, len) = parse_prefix(c)?;
        let family = family_of(addr);
        if f.family != 0 && f.family != family {
            bail!(
                "client {c} is IPv{family} and the VIP IPv{}: no packet could match",
                f.family
            );
        }
        (f.src, f.src_mask) = prefix_words(addr, len);
        f.family = family;
        words.push(format!("from {c}"));
    }
    if let Some(p) = spec.port {
        if p == 0 {
            bail!("port 0 matches no packet");
        }
        f.port = p.to_be();
        words.push(format!("port {p}"));
    }
    if spec.drops_only {
        f.flags |= trace::F_DROPS_ONLY;
        words.push("dropped only".into());
    }
    let words = if words.is_empty() {
        "every packet".to_owned()
    } else {
        words.join(", ")
    };
    Ok((f, words))
}

fn ip_of(k: &VipKey) -> IpAddr {
    if k.family == FAMILY_V4 {
        IpAddr::from([k.addr[0], k.addr[1], k.addr[2], k.addr[3]])
    } else {
        IpAddr::from(k.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::{FlowKey, IPPROTO_TCP, IPPROTO_UDP};

    fn vips() -> Vec<NamedVip> {
        vec![
            NamedVip {
                name: "web4".into(),
                key: VipKey::new("198.18.0.100".parse().unwrap(), 80, IPPROTO_TCP),
            },
            NamedVip {
                name: "dns6".into(),
                key: VipKey::new("fd00:18::100".parse().unwrap(), 53, IPPROTO_UDP),
            },
        ]
    }

    fn spec() -> TraceSpec {
        TraceSpec {
            seconds: 30,
            ..TraceSpec::default()
        }
    }

    fn key(src: &str, dst: &str, sport: u16, dport: u16, proto: u8) -> FlowKey {
        let w = |s: &str| bytes_to_words(&addr_bytes(s.parse().unwrap()).0);
        FlowKey {
            src: w(src),
            dst: w(dst),
            sport: sport.to_be(),
            dport: dport.to_be(),
            proto,
            _pad: [0; 3],
        }
    }

    /// The data plane's test (lb-ebpf/src/trace.rs `matches`), without
    /// the verdict: so that the filter is checked on what it does.
    fn takes(f: &TraceFilter, k: &FlowKey, family: u8) -> bool {
        (f.family == 0 || f.family == family)
            && (f.proto == 0 || f.proto == k.proto)
            && (f.dst_port == 0 || f.dst_port == k.dport)
            && (f.port == 0 || f.port == k.sport || f.port == k.dport)
            && (0..4).all(|i| {
                k.src[i] & f.src_mask[i] == f.src[i] && k.dst[i] & f.dst_mask[i] == f.dst[i]
            })
    }

    #[test]
    fn no_filter_takes_every_packet() {
        let (f, words) = build(&spec(), &vips(), 5).unwrap();
        assert_eq!(words, "every packet");
        assert_eq!(f.until, 5);
        assert!(takes(&f, &key("10.0.0.1", "10.0.0.2", 1, 2, 6), 4));
        assert!(takes(&f, &FlowKey::default(), 0), "a malformed packet too");
    }

    #[test]
    fn a_vip_name_means_its_address_port_and_protocol() {
        let s = TraceSpec {
            vip: Some("web4".into()),
            ..spec()
        };
        let (f, words) = build(&s, &vips(), 0).unwrap();
        assert_eq!(words, "VIP web4");
        let tcp = IPPROTO_TCP;
        assert!(takes(
            &f,
            &key("198.18.0.2", "198.18.0.100", 40000, 80, tcp),
            4
        ));
        assert!(!takes(
            &f,
            &key("198.18.0.2", "198.18.0.100", 40000, 81, tcp),
            4
        ));
        assert!(!takes(
            &f,
            &key("198.18.0.2", "198.18.0.100", 40000, 80, 17),
            4
        ));
        assert!(!takes(
            &f,
            &key("198.18.0.2", "198.18.0.101", 40000, 80, tcp),
            4
        ));
    }

    #[test]
    fn a_vip_address_means_every_packet_to_it() {
        let s = TraceSpec {
            vip: Some("fd00:18::100".into()),
            ..spec()
        };
        let (f, words) = build(&s, &vips(), 0).unwrap();
        assert_eq!(words, "to fd00:18::100");
        assert!(takes(&f, &key("fd00:18::2", "fd00:18::100", 1, 9999, 6), 6));
        assert!(!takes(&f, &key("fd00:18::2", "fd00:18::101", 1, 53, 17), 6));
    }

    #[test]
    fn clients_match_by_prefix_and_ports_either_way() {
        let s = TraceSpec {
            client: Some("198.18.0.0/24".into()),
            port: Some(40000),
            ..spec()
        };
        let (f, words) = build(&s, &vips(), 0).unwrap();
        assert_eq!(words, "from 198.18.0.0/24, port 40000");
        assert!(takes(
            &f,
            &key("198.18.0.7", "198.18.0.100", 40000, 80, 6),
            4
        ));
        assert!(takes(
            &f,
            &key("198.18.0.7", "198.18.0.100", 80, 40000, 6),
            4
        ));
        assert!(!takes(
            &f,
            &key("198.18.1.7", "198.18.0.100", 40000, 80, 6),
            4
        ));
        assert!(!takes(
            &f,
            &key("198.18.0.7", "198.18.0.100", 40001, 80, 6),
            4
        ));
        assert!(!takes(&f, &key("fd00::7", "fd00::100", 40000, 80, 6), 6));
        // An odd prefix length masks inside a byte.
        let (f, _) = build(
            &TraceSpec {
                client: Some("fd00:18::80/121".into()),
                ..spec()
            },
            &[],
            0,
        )
        .unwrap();
        assert!(takes(&f, &key("fd00:18::ff", "fd00::1", 1, 2, 6), 6));
        assert!(!takes(&f, &key("fd00:18::7f", "fd00::1", 1, 2, 6), 6));
    }

    #[test]
    fn drops_only_sets_its_flag() {
        let s = TraceSpec {
            drops_only: true,
            ..spec()
        };
        let (f, words) = build(&s, &vips(), 0).unwrap();
        assert_eq!(f.flags, trace::F_DROPS_ONLY);
        assert_eq!(words, "dropped only");
    }

    #[test]
    fn what_cannot_match_is_refused_saying_why() {
        let bad = |s: TraceSpec| build(&s, &vips(), 0).unwrap_err().to_string();
        let e = bad(TraceSpec {
            vip: Some("nope".into()),
            ..spec()
        });
        assert!(
            e.contains("no VIP named \"nope\" (VIPs: dns6, web4)"),
            "{e}"
        );
        let e = bad(TraceSpec {
            vip: Some("web4".into()),
            client: Some("fd00::1".into()),
            ..spec()
        });
        assert!(e.contains("IPv6 and the VIP IPv4"), "{e}");
        let e = bad(TraceSpec {
            client: Some("198.18.0.0/33".into()),
            ..spec()
        });
        assert!(e.contains("prefix length must be 0..=32"), "{e}");
        let e = bad(TraceSpec {
            client: Some("client-1".into()),
            ..spec()
        });
        assert!(e.contains("not an address or prefix"), "{e}");
        assert!(
            bad(TraceSpec {
                port: Some(0),
                ..spec()
            })
            .contains("port 0")
        );
    }
}
