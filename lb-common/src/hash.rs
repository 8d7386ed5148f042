//! The flow hash, shared so that userspace (and tests) can predict exactly
//! which Maglev slot, and so which backend, a packet will get.
//!
//! MurmurHash3's 32-bit mixing over fixed-size words: straight-line code with
//! no loops or tables, which the BPF verifier accepts without unrolling
//! concerns, and good avalanche so that neighbouring ports spread evenly.

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
    h = mix(h, ((key.sport as u32) << 16) | key.dport as u32);
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

    /// Pinned values: a change to the hash moves every flow between xlb
    /// versions (and between two nodes running different ones). The values
    /// are MurmurHash3_x86_32 (Python's `mmh3`, seed "xlb!") of the key's
    /// 40 and 16 bytes as they lie in memory, computed outside this crate.
    #[test]
    fn hash_is_murmur3_of_the_key_bytes() {
        assert_eq!(flow_hash(&key(40000)), 0xf20e_aa2f);
        assert_eq!(source_hash(&key(40000).src), 0x543d_6aed);
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
