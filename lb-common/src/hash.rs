//! The flow hash, shared so that userspace (and tests) can predict exactly
//! which Maglev slot, and so which backend, a packet will get.
//!
//! Both hashes are MurmurHash3_x86_32 with seed `0x786c6221` ("xlb!") of the
//! key's bytes exactly as they lie in memory (`FlowKey`'s 40 bytes, the
//! source address's 16), read as little-endian 32-bit words as MurmurHash3
//! reads them: on the little-endian machines xlb runs on (x86-64, arm64, and
//! the `bpfel` target) each word is the field's native `u32`, so the code
//! mixes the fields directly and stays straight-line, without loops or
//! tables, which the BPF verifier accepts at no cost.
//!
//! The hash is frozen: nodes that balance one VIP together, and successive
//! versions of one node, must put every flow on the same Maglev slot. Any
//! implementation of MurmurHash3_x86_32 over the bytes above (Python's
//! `mmh3.hash(key, 0x786c6221, signed=False)`, for one) reproduces it.

use crate::FlowKey;

const SEED: u32 = 0x786c_6221; // "xlb!"
const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline(always)]
const fn mix(h: u32, k: u32) -> u32 {
    let k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
const fn finish(mut h: u32, len: u32) -> u32 {
    h ^= len;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Hash of the whole 5-tuple: every flow may land on a different backend.
#[inline(always)]
pub fn flow_hash(key: &FlowKey) -> u32 {
    let mut h = SEED;
    h = mix(h, key.src[0]);
    h = mix(h, key.src[1]);
    h = mix(h, key.src[2]);
    h = mix(h, key.src[3]);
    h = mix(h, key.dst[0]);
    h = mix(h, key.dst[1]);
    h = mix(h, key.dst[2]);
    h = mix(h, key.dst[3]);
    // Bytes 32..36: the source port, then the destination port, both as
    // stored (network order); read little-endian, the source port is the
    // low half.
    h = mix(h, ((key.dport as u32) << 16) | key.sport as u32);
    // Bytes 36..40: the protocol, then three bytes of zero padding.
    h = mix(h, key.proto as u32);
    finish(h, 40)
}

/// Hash of the client address only: every flow of one client lands on the
/// same backend (source-IP affinity).
#[inline(always)]
pub fn source_hash(src: &[u32; 4]) -> u32 {
    let mut h = SEED;
    h = mix(h, src[0]);
    h = mix(h, src[1]);
    h = mix(h, src[2]);
    h = mix(h, src[3]);
    finish(h, 16)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{format, string::String};

    use super::*;

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            src: [u32::from_ne_bytes([198, 18, 0, 2]), 0, 0, 0],
            dst: [u32::from_ne_bytes([198, 18, 0, 100]), 0, 0, 0],
            sport: sport.to_be(),
            dport: 80u16.to_be(),
            proto: 6,
            _pad: [0; 3],
        }
    }

    #[test]
    fn hash_is_a_pure_function_of_the_tuple() {
        assert_eq!(flow_hash(&key(40000)), flow_hash(&key(40000)));
        assert_ne!(flow_hash(&key(40000)), flow_hash(&key(40001)));
    }

    #[test]
    fn hash_spreads_consecutive_ports_over_buckets() {
        let mut buckets = [0u32; 8];
        for port in 30000..38000u16 {
            buckets[(flow_hash(&key(port)) % 8) as usize] += 1;
        }
        for b in buckets {
            assert!((900..1100).contains(&b), "uneven buckets {buckets:?}");
        }
    }

    /// The key's bytes as they lie in memory, and `key(40000)`'s.
    fn bytes(k: &FlowKey) -> [u8; 40] {
        let mut b = [0u8; 40];
        for i in 0..4 {
            b[i * 4..i * 4 + 4].copy_from_slice(&k.src[i].to_ne_bytes());
            b[16 + i * 4..20 + i * 4].copy_from_slice(&k.dst[i].to_ne_bytes());
        }
        b[32..34].copy_from_slice(&k.sport.to_ne_bytes());
        b[34..36].copy_from_slice(&k.dport.to_ne_bytes());
        b[36] = k.proto;
        b
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn key6() -> FlowKey {
        let w = |a: [u8; 16]| -> [u32; 4] {
            core::array::from_fn(|i| u32::from_ne_bytes(a[i * 4..i * 4 + 4].try_into().unwrap()))
        };
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[0xfd, 0, 0, 0x18]);
        src[15] = 2;
        let mut dst = src;
        dst[14] = 1;
        dst[15] = 0;
        FlowKey {
            src: w(src),
            dst: w(dst),
            sport: 5353u16.to_be(),
            dport: 53u16.to_be(),
            proto: 17,
            _pad: [0; 3],
        }
    }

    /// Pinned values: a change to the hash moves every flow between xlb
    /// versions (and between two nodes running different ones). Each pin was
    /// computed outside this crate, with Python's `mmh3` 5.3 (the reference
    /// MurmurHash3_x86_32), from the hex bytes the test also checks:
    /// `mmh3.hash(bytes.fromhex(HEX), 0x786c6221, signed=False)`.
    #[test]
    fn hash_is_murmur3_of_the_key_bytes() {
        let v4 = key(40000);
        assert_eq!(
            hex(&bytes(&v4)),
            "c6120002000000000000000000000000c61200640000000000000000000000009c40005006000000"
        );
        assert_eq!(flow_hash(&v4), 0x6541_a29e);
        assert_eq!(source_hash(&v4.src), 0x543d_6aed);
        let v6 = key6();
        assert_eq!(
            hex(&bytes(&v6)),
            "fd000018000000000000000000000002fd00001800000000000000000000010014e9003511000000"
        );
        assert_eq!(flow_hash(&v6), 0xebb4_02fd);
        assert_eq!(source_hash(&v6.src), 0x1974_22e5);
    }

    #[test]
    fn every_field_of_the_tuple_changes_the_flow_hash() {
        let base = key(40000);
        let h = flow_hash(&base);
        let differs = |k: FlowKey| assert_ne!(flow_hash(&k), h, "{k:?}");
        for i in 0..4 {
            let mut k = base;
            k.src[i] ^= 1;
            differs(k);
            let mut k = base;
            k.dst[i] ^= 1;
            differs(k);
        }
        differs(key(40001));
        let mut k = base;
        k.dport ^= 1;
        differs(k);
        let mut k = base;
        k.proto = 17;
        differs(k);
        let mut other = base;
        other.src[0] ^= 1;
        assert_ne!(source_hash(&other.src), source_hash(&base.src));
    }

    #[test]
    fn source_hash_ignores_everything_but_the_client() {
        let a = key(1);
        let b = key(2);
        assert_eq!(source_hash(&a.src), source_hash(&b.src));
    }
}
