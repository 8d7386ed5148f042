//! The sync message, version 1 (reference: "Connection sync" in
//! `docs/architecture.md`). Every field is in network byte order.
//!
//! ```text
//! header, 32 bytes:
//!   0  magic "XLBS"        4  version (1)   5  kind (1 flows, 2 hello)
//!   6  entry count (u16)   8  epoch (u64: the sender's start, unix ns)
//!  16  sequence (u64, from 1 per epoch)    24  sent at (u64, unix ms)
//! entries, 64 bytes each (flows only, at most MAX_ENTRIES):
//!   0  family (4, 6)   1  protocol (6, 17)   2  flags   3  event
//!   4  client address (16)   20  VIP address (16)
//!  36  client port   38  VIP port   40  backend address (16)
//!  56  backend port (0: the VIP's port)   58  zero (2)   60  age (u32, ms)
//! tag, 32 bytes: HMAC-SHA256 over header and entries.
//! ```
//!
//! IPv4 addresses fill the first four bytes of their 16, the rest zero.
//! Decoding checks the length, magic and version first and every entry
//! field after the tag has been verified (`auth`); nothing here trusts
//! the input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{FAMILY_V4, FAMILY_V6, IPPROTO_TCP, IPPROTO_UDP};

pub const MAGIC: [u8; 4] = *b"XLBS";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 32;
pub const ENTRY_LEN: usize = 64;
pub const TAG_LEN: usize = 32;
/// Entries per message: the largest message (1,344 bytes) fits a
/// 1,500-byte MTU over IPv6.
pub const MAX_ENTRIES: usize = 20;
pub const MAX_LEN: usize = HEADER_LEN + MAX_ENTRIES * ENTRY_LEN + TAG_LEN;

/// What a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Connection-table entries.
    Flows = 1,
    /// "I have just started: send me your table."
    Hello = 2,
}

/// Entry flag: the flow is closing (FIN or RST seen).
pub const F_CLOSING: u8 = 1 << 0;
/// Entry flag: the VIP translates (NAT): the receiver installs the reverse
/// entry for the backend's replies as well.
pub const F_NAT: u8 = 1 << 1;
const KNOWN_FLAGS: u8 = F_CLOSING | F_NAT;

/// Why an entry is in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The first packet of a flow.
    New = 1,
    /// The flow started closing.
    Closing = 2,
    /// Still alive: a periodic sweep, or a full table.
    Refresh = 3,
}

/// The header fields that are not lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub epoch: u64,
    pub seq: u64,
    pub sent_unix_ms: u64,
}

/// One flow as the origin has it: its 5-tuple (client → VIP), the backend
/// by address and port (identities both nodes share; local ids differ),
/// and how old it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub client: IpAddr,
    pub client_port: u16,
    pub vip: IpAddr,
    pub vip_port: u16,
    pub proto: u8,
    pub backend: IpAddr,
    /// 0: the packet's destination port is kept.
    pub backend_port: u16,
    pub flags: u8,
    pub event: Event,
    /// Milliseconds since the origin last saw a packet of the flow.
    pub age_ms: u32,
}

/// Why a datagram was not accepted as a message (counted by this name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Shorter than its header and tag, or than its entry count says.
    Truncated,
    /// Longer than the largest message, or than its entry count says.
    Oversize,
    BadMagic,
    BadVersion,
    /// The tag does not verify: wrong key, or altered in transit.
    BadMac,
    /// Authentic, but a field is out of range (unknown kind, family,
    /// protocol, flag, event; an IPv4 address with stray bytes).
    Malformed,
}

fn put_addr(out: &mut [u8], a: IpAddr) {
    match a {
        IpAddr::V4(v4) => {
            out[..4].copy_from_slice(&v4.octets());
            out[4..16].fill(0);
        }
        IpAddr::V6(v6) => out[..16].copy_from_slice(&v6.octets()),
    }
}

fn get_addr(b: &[u8], family: u8) -> Option<IpAddr> {
    let bytes: [u8; 16] = b[..16].try_into().ok()?;
    if family == FAMILY_V4 {
        if bytes[4..].iter().any(|&x| x != 0) {
            return None;
        }
        Some(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into())
    } else {
        Some(Ipv6Addr::from(bytes).into())
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The bytes the tag covers: header and entries. The caller appends the
/// tag (`auth::Key::seal`).
pub fn encode(header: &Header, entries: &[Entry]) -> Vec<u8> {
    assert!(
        entries.len() <= MAX_ENTRIES,
        "at most {MAX_ENTRIES} entries"
    );
    assert!(
        header.kind == Kind::Flows || entries.is_empty(),
        "only flow messages carry entries"
    );
    let mut out = vec![0u8; HEADER_LEN + entries.len() * ENTRY_LEN];
    out[..4].copy_from_slice(&MAGIC);
    out[4] = VERSION;
    out[5] = header.kind as u8;
    out[6..8].copy_from_slice(&(entries.len() as u16).to_be_bytes());
    out[8..16].copy_from_slice(&header.epoch.to_be_bytes());
    out[16..24].copy_from_slice(&header.seq.to_be_bytes());
    out[24..32].copy_from_slice(&header.sent_unix_ms.to_be_bytes());
    for (i, e) in entries.iter().enumerate() {
        let b = &mut out[HEADER_LEN + i * ENTRY_LEN..][..ENTRY_LEN];
        b[0] = if e.vip.is_ipv4() {
            FAMILY_V4
        } else {
            FAMILY_V6
        };
        b[1] = e.proto;
        b[2] = e.flags;
        b[3] = e.event as u8;
        put_addr(&mut b[4..20], e.client);
        put_addr(&mut b[20..36], e.vip);
        b[36..38].copy_from_slice(&e.client_port.to_be_bytes());
        b[38..40].copy_from_slice(&e.vip_port.to_be_bytes());
        put_addr(&mut b[40..56], e.backend);
        b[56..58].copy_from_slice(&e.backend_port.to_be_bytes());
        b[60..64].copy_from_slice(&e.age_ms.to_be_bytes());
    }
    out
}

/// The magic, version and entry count of a header (`bytes` holds at least
/// [`HEADER_LEN`]): the count, if a message may carry that many.
fn header_count(bytes: &[u8]) -> Result<usize, Reject> {
    if bytes[..4] != MAGIC {
        return Err(Reject::BadMagic);
    }
    if bytes[4] != VERSION {
        return Err(Reject::BadVersion);
    }
    let count = usize::from(be16(bytes, 6));
    if count > MAX_ENTRIES {
        return Err(Reject::Malformed);
    }
    Ok(count)
}

/// Checks a datagram's framing (before its tag is verified): returns the
/// length of the signed part.
pub fn frame(datagram: &[u8]) -> Result<usize, Reject> {
    if datagram.len() > MAX_LEN {
        return Err(Reject::Oversize);
    }
    if datagram.len() < HEADER_LEN + TAG_LEN {
        return Err(Reject::Truncated);
    }
    let want = HEADER_LEN + header_count(datagram)? * ENTRY_LEN + TAG_LEN;
    match datagram.len().cmp(&want) {
        std::cmp::Ordering::Less => Err(Reject::Truncated),
        std::cmp::Ordering::Greater => Err(Reject::Oversize),
        std::cmp::Ordering::Equal => Ok(want - TAG_LEN),
    }
}

/// Decodes the signed part of a framed, verified message. It checks the
/// header as [`frame`] does: it takes only what [`encode`] can write,
/// whatever it is given.
pub fn decode(signed: &[u8]) -> Result<(Header, Vec<Entry>), Reject> {
    if signed.len() < HEADER_LEN {
        return Err(Reject::Truncated);
    }
    let count = header_count(signed)?;
    let kind = match signed[5] {
        1 => Kind::Flows,
        2 => Kind::Hello,
        _ => return Err(Reject::Malformed),
    };
    if signed.len() != HEADER_LEN + count * ENTRY_LEN || kind == Kind::Hello && count != 0 {
        return Err(Reject::Malformed);
    }
    let header = Header {
        kind,
        epoch: be64(signed, 8),
        seq: be64(signed, 16),
        sent_unix_ms: be64(signed, 24),
    };
    if header.epoch == 0 || header.seq == 0 {
        return Err(Reject::Malformed);
    }
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        let b = &signed[HEADER_LEN + i * ENTRY_LEN..][..ENTRY_LEN];
        let family = b[0];
        if family != FAMILY_V4 && family != FAMILY_V6 {
            return Err(Reject::Malformed);
        }
        let proto = b[1];
        if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
            return Err(Reject::Malformed);
        }
        let flags = b[2];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(Reject::Malformed);
        }
        let event = match b[3] {
            1 => Event::New,
            2 => Event::Closing,
            3 => Event::Refresh,
            _ => return Err(Reject::Malformed),
        };
        let (Some(client), Some(vip), Some(backend)) = (
            get_addr(&b[4..20], family),
            get_addr(&b[20..36], family),
            get_addr(&b[40..56], family),
        ) else {
            return Err(Reject::Malformed);
        };
        if b[58..60] != [0, 0] {
            return Err(Reject::Malformed);
        }
        entries.push(Entry {
            client,
            client_port: be16(b, 36),
            vip,
            vip_port: be16(b, 38),
            proto,
            backend,
            backend_port: be16(b, 56),
            flags,
            event,
            age_ms: be32(b, 60),
        });
    }
    Ok((header, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn entry(i: u16, v6: bool) -> Entry {
        let (client, vip, backend): (IpAddr, IpAddr, IpAddr) = if v6 {
            (
                "fd00:18::2".parse().unwrap(),
                "fd00:18::100".parse().unwrap(),
                "fd00:19::11".parse().unwrap(),
            )
        } else {
            (
                "198.18.0.2".parse().unwrap(),
                "198.18.0.100".parse().unwrap(),
                "198.18.1.11".parse().unwrap(),
            )
        };
        Entry {
            client,
            client_port: 40_000 + i,
            vip,
            vip_port: 80,
            proto: IPPROTO_TCP,
            backend,
            backend_port: 8080,
            flags: F_NAT,
            event: Event::New,
            age_ms: u32::from(i) * 7,
        }
    }

    fn header(kind: Kind) -> Header {
        Header {
            kind,
            epoch: 0x1122_3344_5566_7788,
            seq: 9,
            sent_unix_ms: 1_700_000_000_123,
        }
    }

    fn framed(signed: &[u8]) -> Vec<u8> {
        let mut d = signed.to_vec();
        d.extend_from_slice(&[0u8; TAG_LEN]);
        d
    }

    #[test]
    fn a_full_message_round_trips_field_by_field() {
        let entries: Vec<Entry> = (0..MAX_ENTRIES as u16)
            .map(|i| entry(i, i % 2 == 1))
            .collect();
        let signed = encode(&header(Kind::Flows), &entries);
        assert_eq!(signed.len(), HEADER_LEN + MAX_ENTRIES * ENTRY_LEN);
        let d = framed(&signed);
        assert_eq!(d.len(), MAX_LEN);
        assert_eq!(frame(&d), Ok(signed.len()));
        let (h, back) = decode(&signed).unwrap();
        assert_eq!(h, header(Kind::Flows));
        assert_eq!(back, entries);
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let signed = encode(&header(Kind::Flows), &[entry(1, false)]);
        assert_eq!(&signed[..8], b"XLBS\x01\x01\x00\x01");
        assert_eq!(&signed[8..16], &0x1122_3344_5566_7788u64.to_be_bytes());
        let e = &signed[HEADER_LEN..];
        assert_eq!(&e[..4], &[4, 6, F_NAT, 1]);
        assert_eq!(&e[4..8], &[198, 18, 0, 2]);
        assert_eq!(&e[20..24], &[198, 18, 0, 100]);
        assert_eq!(&e[36..40], &[0x9c, 0x41, 0, 80]);
        assert_eq!(&e[40..44], &[198, 18, 1, 11]);
        assert_eq!(&e[56..64], &[0x1f, 0x90, 0, 0, 0, 0, 0, 7]);
    }

    #[test]
    fn framing_rejects_by_reason() {
        let signed = encode(&header(Kind::Flows), &[entry(1, false), entry(2, false)]);
        let d = framed(&signed);
        assert_eq!(frame(&d[..40]), Err(Reject::Truncated));
        assert_eq!(frame(&d[..d.len() - 1]), Err(Reject::Truncated));
        let mut long = d.clone();
        long.push(0);
        assert_eq!(frame(&long), Err(Reject::Oversize));
        assert_eq!(frame(&vec![0u8; MAX_LEN + 1]), Err(Reject::Oversize));
        let mut magic = d.clone();
        magic[0] = b'Y';
        assert_eq!(frame(&magic), Err(Reject::BadMagic));
        let mut version = d.clone();
        version[4] = 2;
        assert_eq!(frame(&version), Err(Reject::BadVersion));
        let mut count = d.clone();
        count[6..8].copy_from_slice(&21u16.to_be_bytes());
        assert_eq!(frame(&count), Err(Reject::Malformed));
    }

    #[test]
    fn every_out_of_range_field_is_malformed() {
        let signed = encode(&header(Kind::Flows), &[entry(1, false)]);
        let e = HEADER_LEN;
        let cases: [(&str, usize, u8); 8] = [
            ("kind", 5, 3),
            ("family", e, 5),
            ("protocol", e + 1, 1),
            ("flag", e + 2, 0x80),
            ("event", e + 3, 0),
            ("IPv4 client with stray bytes", e + 10, 1),
            ("IPv4 backend with stray bytes", e + 50, 1),
            ("padding", e + 58, 1),
        ];
        for (what, at, value) in cases {
            let mut bad = signed.clone();
            bad[at] = value;
            assert_eq!(decode(&bad), Err(Reject::Malformed), "{what}");
        }
        let mut zero_seq = signed.clone();
        zero_seq[16..24].fill(0);
        assert_eq!(decode(&zero_seq), Err(Reject::Malformed), "sequence 0");
        let mut hello_with_entries = signed;
        hello_with_entries[5] = Kind::Hello as u8;
        assert_eq!(decode(&hello_with_entries), Err(Reject::Malformed));
    }

    #[test]
    fn hello_is_a_header_only() {
        let signed = encode(&header(Kind::Hello), &[]);
        assert_eq!(frame(&framed(&signed)), Ok(HEADER_LEN));
        assert_eq!(decode(&signed).unwrap(), (header(Kind::Hello), Vec::new()));
    }

    #[test]
    fn decode_alone_takes_only_what_encode_writes() {
        // Found by the sync_message fuzz target: decode read the count of
        // a 6-byte input out of bounds, and took any magic and version
        // (frame checks them, but decode is public).
        assert_eq!(decode(b"XLBS\x01\x01"), Err(Reject::Truncated));
        let signed = encode(&header(Kind::Flows), &[entry(1, false)]);
        let mut magic = signed.clone();
        magic[..4].copy_from_slice(b"BXLS");
        assert_eq!(decode(&magic), Err(Reject::BadMagic));
        let mut version = signed.clone();
        version[4] = 2;
        assert_eq!(decode(&version), Err(Reject::BadVersion));
        // More entries than a message may carry, each of them valid.
        let mut long = encode(&header(Kind::Flows), &[]);
        let count = MAX_ENTRIES as u16 + 1;
        long[6..8].copy_from_slice(&count.to_be_bytes());
        for _ in 0..count {
            long.extend_from_slice(&signed[HEADER_LEN..]);
        }
        assert_eq!(decode(&long), Err(Reject::Malformed));
    }
}
