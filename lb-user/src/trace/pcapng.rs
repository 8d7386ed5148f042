//! A pcapng writer (the IETF draft "PCAP Next Generation Capture File
//! Format", the format Wireshark writes and tcpdump reads), for what `xlb
//! trace --pcap` captures: one section, one interface description per
//! interface packets came in on, and one enhanced packet block per packet
//! with the data plane's decision in its comment option.
//!
//! Written by hand: four block types with fixed layouts, where a crate
//! would bring a reader and formats xlb does not use.

use std::io::Write;

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 0x0000_0001;
const EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const LINKTYPE_ETHERNET: u16 = 1;

const OPT_ENDOFOPT: u16 = 0;
const OPT_COMMENT: u16 = 1;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;
/// `epb_flags` direction bits: inbound.
const EPB_INBOUND: u32 = 1;

/// Pads `v` with zeros to a multiple of 4 bytes.
fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

fn option(body: &mut Vec<u8>, code: u16, value: &[u8]) {
    body.extend_from_slice(&code.to_ne_bytes());
    // Option values are at most 65,535 bytes; a longer comment is cut.
    let value = &value[..value.len().min(usize::from(u16::MAX))];
    body.extend_from_slice(&(value.len() as u16).to_ne_bytes());
    body.extend_from_slice(value);
    pad4(body);
}

fn end_of_options(body: &mut Vec<u8>) {
    body.extend_from_slice(&OPT_ENDOFOPT.to_ne_bytes());
    body.extend_from_slice(&0u16.to_ne_bytes());
}

/// A block: type, total length, `body`, total length again.
fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let total = (12 + body.len()) as u32;
    let mut b = Vec::with_capacity(total as usize);
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(&total.to_ne_bytes());
    b.extend_from_slice(body);
    b.extend_from_slice(&total.to_ne_bytes());
    b
}

/// Writes a capture to `W`, in this machine's byte order (the byte-order
/// magic tells readers which).
pub struct Writer<W: Write> {
    out: W,
    /// Interface indices, in the order of their description blocks (a
    /// packet names its interface by that position).
    interfaces: Vec<u32>,
    snaplen: u32,
}

impl<W: Write> Writer<W> {
    /// Starts a section; packets are cut to `snaplen` bytes.
    pub fn new(mut out: W, snaplen: u32) -> std::io::Result<Self> {
        let mut body = Vec::new();
        body.extend_from_slice(&BYTE_ORDER_MAGIC.to_ne_bytes());
        body.extend_from_slice(&1u16.to_ne_bytes());
        body.extend_from_slice(&0u16.to_ne_bytes());
        // Section length: not given.
        body.extend_from_slice(&(-1i64).to_ne_bytes());
        out.write_all(&block(SHB, &body))?;
        Ok(Self {
            out,
            interfaces: Vec::new(),
            snaplen,
        })
    }

    /// The position of interface `ifindex`, described (as `name`) the
    /// first time it is seen.
    fn interface(&mut self, ifindex: u32, name: &str) -> std::io::Result<u32> {
        if let Some(i) = self.interfaces.iter().position(|&x| x == ifindex) {
            return Ok(i as u32);
        }
        let mut body = Vec::new();
        body.extend_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
        body.extend_from_slice(&0u16.to_ne_bytes());
        body.extend_from_slice(&self.snaplen.to_ne_bytes());
        option(&mut body, IF_NAME, name.as_bytes());
        // Time stamps in nanoseconds (10^-9).
        option(&mut body, IF_TSRESOL, &[9]);
        end_of_options(&mut body);
        self.out.write_all(&block(IDB, &body))?;
        self.interfaces.push(ifindex);
        Ok(self.interfaces.len() as u32 - 1)
    }

    /// One packet that arrived on `ifindex` (`ifname`) at `unix_ns`,
    /// `orig_len` bytes long, of which `data` were captured, with
    /// `comment`.
    pub fn packet(
        &mut self,
        ifindex: u32,
        ifname: &str,
        unix_ns: u64,
        orig_len: u32,
        data: &[u8],
        comment: &str,
    ) -> std::io::Result<()> {
        let id = self.interface(ifindex, ifname)?;
        let data = &data[..data.len().min(self.snaplen as usize)];
        let mut body = Vec::with_capacity(32 + data.len() + comment.len());
        body.extend_from_slice(&id.to_ne_bytes());
        body.extend_from_slice(&((unix_ns >> 32) as u32).to_ne_bytes());
        body.extend_from_slice(&(unix_ns as u32).to_ne_bytes());
        body.extend_from_slice(&(data.len() as u32).to_ne_bytes());
        body.extend_from_slice(&orig_len.max(data.len() as u32).to_ne_bytes());
        body.extend_from_slice(data);
        pad4(&mut body);
        option(&mut body, OPT_COMMENT, comment.as_bytes());
        option(&mut body, EPB_FLAGS, &EPB_INBOUND.to_ne_bytes());
        end_of_options(&mut body);
        self.out.write_all(&block(EPB, &body))
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_ne_bytes(b[o..o + 4].try_into().unwrap())
    }

    fn u16_at(b: &[u8], o: usize) -> u16 {
        u16::from_ne_bytes(b[o..o + 2].try_into().unwrap())
    }

    /// (type, body) of each block, checking both length fields.
    fn blocks(mut b: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let total = u32_at(b, 4) as usize;
            assert_eq!(total % 4, 0, "block length {total} not a multiple of 4");
            assert_eq!(u32_at(b, total - 4) as usize, total, "trailing length");
            out.push((u32_at(b, 0), b[8..total - 4].to_vec()));
            b = &b[total..];
        }
        out
    }

    /// (code, value) of each option in `b`, up to the end marker.
    fn options(mut b: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let (code, len) = (u16_at(b, 0), usize::from(u16_at(b, 2)));
            if code == OPT_ENDOFOPT {
                return out;
            }
            out.push((code, b[4..4 + len].to_vec()));
            b = &b[4 + len.div_ceil(4) * 4..];
        }
    }

    #[test]
    fn a_capture_is_a_section_interfaces_and_commented_packets() {
        let mut w = Writer::new(Vec::new(), 128).unwrap();
        let frame: Vec<u8> = (0..61).collect();
        w.packet(7, "eth0", 0x1_0000_0002, 61, &frame, "xlb: XDP_TX")
            .unwrap();
        w.packet(7, "eth0", 3, 1500, &[0xab; 200], "second")
            .unwrap();
        w.packet(9, "eth1", 4, 60, &frame[..60], "").unwrap();
        let b = blocks(&w.out);
        let kinds: Vec<u32> = b.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, [SHB, IDB, EPB, EPB, IDB, EPB]);
        let shb = &b[0].1;
        assert_eq!(u32_at(shb, 0), BYTE_ORDER_MAGIC);
        assert_eq!((u16_at(shb, 4), u16_at(shb, 6)), (1, 0));
        let idb = &b[1].1;
        assert_eq!(u16_at(idb, 0), LINKTYPE_ETHERNET);
        assert_eq!(u32_at(idb, 4), 128);
        assert_eq!(
            options(&idb[8..]),
            [(IF_NAME, b"eth0".to_vec()), (IF_TSRESOL, vec![9])]
        );
        let epb = &b[2].1;
        assert_eq!(u32_at(epb, 0), 0, "interface 0");
        assert_eq!((u32_at(epb, 4), u32_at(epb, 8)), (1, 2), "time stamp");
        assert_eq!((u32_at(epb, 12), u32_at(epb, 16)), (61, 61));
        assert_eq!(&epb[20..81], &frame[..]);
        assert_eq!(
            options(&epb[84..]),
            [
                (OPT_COMMENT, b"xlb: XDP_TX".to_vec()),
                (EPB_FLAGS, EPB_INBOUND.to_ne_bytes().to_vec())
            ]
        );
        let cut = &b[3].1;
        assert_eq!((u32_at(cut, 12), u32_at(cut, 16)), (128, 1500), "snaplen");
        assert_eq!(u32_at(&b[5].1, 0), 1, "the second interface");
    }
}
