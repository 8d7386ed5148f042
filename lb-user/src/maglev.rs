//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016), with weights.
//!
//! [`build_table`] turns a set of backends into a lookup table of a prime
//! size `M`; the data plane picks `table[hash(packet) % M]`. The table has
//! three properties xlb relies on:
//!
//! * **Balance**: with equal weights every backend owns `M / N` slots, give
//!   or take one; with weights, slot counts follow the weights.
//! * **Minimal disruption**: adding or removing one backend moves few slots
//!   besides those that the change must move.
//! * **Determinism**: the table depends only on the set of members (their
//!   identities and weights) and `M` — not on the order they are given in,
//!   not on the machine, not on the Rust version. Two active-active xlb nodes
//!   with the same configuration build byte-identical tables, so a flow hashes
//!   to the same backend whichever node receives it. This is why the hash
//!   below is written out here instead of using `std`'s `Hasher`s, whose
//!   output is not guaranteed stable across releases.
//!
//! # Algorithm
//!
//! Each member gets a permutation of the slots derived from its identity
//! alone: `offset = h1(id) % M`, `skip = h2(id) % (M - 1) + 1`, and its `j`-th
//! preference is `(offset + j * skip) % M`. Because `M` is prime, every
//! `skip` in `1..M` visits every slot exactly once.
//!
//! Members then take turns claiming their next preferred slot that is still
//! free (keeping a per-member cursor, so no preference is looked at twice),
//! until the table is full. Weights use the round-based fill: in round
//! `r = 0, 1, 2, …` member `i` claims
//! `floor((r + 1) * w_i / w_max) - floor(r * w_i / w_max)` slots, which is 0
//! or 1; the heaviest member claims one every round and a member of half its
//! weight every other round. Within a round members go in identity order.
//! Rather than scanning every member every round, a min-heap holds each
//! member's next claiming round, so a table costs `O(M log N)` heap work plus
//! the expected `O(M log M)` preference probes, whatever the weights.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;

/// Table entry of a slot that has no backend (no members, or all weights 0).
pub const EMPTY: u32 = u32::MAX;

/// One candidate backend of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Member {
    /// Stable identity, see [`identity`]. Must be unique within one table.
    pub identity: [u8; 18],
    /// Relative weight; 0 means the member gets no slots (draining).
    pub weight: u32,
}

/// The stable identity of a backend: its 16 address bytes (an IPv4 address
/// in the first 4, the other 12 zero) followed by the port, big-endian.
///
/// Only the identity feeds the permutation, so a backend keeps its
/// preferences whatever else changes in the configuration.
pub fn identity(addr: IpAddr, port: u16) -> [u8; 18] {
    let mut id = [0u8; 18];
    match addr {
        IpAddr::V4(a) => id[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => id[..16].copy_from_slice(&a.octets()),
    }
    id[16..].copy_from_slice(&port.to_be_bytes());
    id
}

/// True if `n` is a prime number.
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    // Trial division by 6k ± 1; at most ~11,000 steps for any u32.
    let n = u64::from(n);
    let mut d: u64 = 5;
    while d * d <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Seeds of the two hashes (arbitrary, fixed forever: changing them changes
/// every table).
const SEED_OFFSET: u64 = 0x786c_622d_6f66_6673; // "xlb-offs"
const SEED_SKIP: u64 = 0x786c_622d_736b_6970; // "xlb-skip"

/// MurmurHash3's 64-bit finaliser: full avalanche of FNV's weak low bits.
const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// Seeded FNV-1a 64 followed by `fmix64`. Stable by construction: it is
/// defined entirely in this file.
fn hash64(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET ^ fmix64(seed);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    fmix64(h)
}

/// A member taking part in the fill (weight > 0).
struct Filler {
    /// Index into the caller's `members`.
    index: u32,
    weight: u64,
    offset: u64,
    skip: u64,
    /// Next preference to try (the paper's `next[i]`).
    next: u64,
    /// Slots claimed so far.
    claimed: u64,
}

impl Filler {
    /// The round of this member's next claim: its `k`-th claim (from 0)
    /// happens in the first round `r` with `floor((r+1) w / W) >= k + 1`,
    /// i.e. `r = ceil((k + 1) W / w) - 1`.
    fn next_round(&self, w_max: u64) -> u64 {
        ((self.claimed + 1) * w_max).div_ceil(self.weight) - 1
    }
}

/// Builds a Maglev lookup table of `size` slots over `members`.
///
/// Returns `size` entries, each an index into `members` or [`EMPTY`]. Every
/// slot is filled if any weight is non-zero; members of weight 0 get none.
/// The mapping from slot to member *identity* does not depend on the order
/// of `members`. Identities must be unique; if two are equal the result may
/// depend on their relative order.
///
/// # Panics
///
/// If `size` is not prime (the permutations would not cover the table).
pub fn build_table(members: &[Member], size: u32) -> Vec<u32> {
    assert!(is_prime(size), "Maglev table size {size} is not prime");
    let m = u64::from(size);
    let mut table = vec![EMPTY; size as usize];

    // Identity order, so the caller's order cannot matter.
    let mut order: Vec<usize> = (0..members.len())
        .filter(|&i| members[i].weight > 0)
        .collect();
    order.sort_by(|&a, &b| members[a].identity.cmp(&members[b].identity));
    if order.is_empty() {
        return table;
    }

    let mut fillers: Vec<Filler> = order
        .iter()
        .map(|&i| {
            let id = &members[i].identity;
            Filler {
                index: u32::try_from(i).expect("more than u32::MAX members"),
                weight: u64::from(members[i].weight),
                offset: hash64(SEED_OFFSET, id) % m,
                skip: hash64(SEED_SKIP, id) % (m - 1) + 1,
                next: 0,
                claimed: 0,
            }
        })
        .collect();
    let w_max = fillers.iter().map(|f| f.weight).max().unwrap_or(1);

    // (round, position in identity order): pops in round order, and within
    // a round in identity order.
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = fillers
        .iter()
        .enumerate()
        .map(|(pos, f)| Reverse((f.next_round(w_max), pos)))
        .collect();

    let mut free = size as usize;
    while free > 0 {
        let Reverse((_, pos)) = heap.pop().expect("a member with weight > 0 exists");
        let f = &mut fillers[pos];
        // `m` is prime and `skip` in 1..m, so the preferences cycle through
        // every slot and a free one is always found.
        loop {
            let slot = ((f.offset + f.next * f.skip) % m) as usize;
            f.next += 1;
            if table[slot] == EMPTY {
                table[slot] = f.index;
                break;
            }
        }
        f.claimed += 1;
        free -= 1;
        heap.push(Reverse((f.next_round(w_max), pos)));
    }
    table
}

#[cfg(test)]
mod tests;
