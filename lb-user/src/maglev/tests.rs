use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

const M: u32 = lb_common::DEFAULT_RING_SIZE;

fn v4_member(n: u32, weight: u32) -> Member {
    let addr = Ipv4Addr::from(0x0a00_0000 + n); // 10.0.x.y
    Member {
        identity: identity(IpAddr::V4(addr), 80),
        weight,
    }
}

fn members(n: u32) -> Vec<Member> {
    (1..=n).map(|i| v4_member(i, 1)).collect()
}

/// Slot count per caller index.
fn counts(table: &[u32], n: usize) -> Vec<usize> {
    let mut c = vec![0; n];
    for &e in table {
        if e != EMPTY {
            c[e as usize] += 1;
        }
    }
    c
}

/// The table expressed as identities, independent of caller indices.
fn by_identity(table: &[u32], members: &[Member]) -> Vec<Option<[u8; 18]>> {
    table
        .iter()
        .map(|&e| (e != EMPTY).then(|| members[e as usize].identity))
        .collect()
}

fn assert_balanced(n: u32) {
    let ms = members(n);
    let table = build_table(&ms, M);
    let mean = f64::from(M) / f64::from(n);
    for (i, &c) in counts(&table, ms.len()).iter().enumerate() {
        let dev = (c as f64 - mean).abs() / mean;
        assert!(
            dev <= 0.01,
            "n={n}: member {i} has {c} slots, mean {mean:.1}"
        );
    }
}

#[test]
fn equal_weights_balance_3_members_within_1_percent() {
    assert_balanced(3);
}

#[test]
fn equal_weights_balance_10_members_within_1_percent() {
    assert_balanced(10);
}

#[test]
fn equal_weights_balance_100_members_within_1_percent() {
    assert_balanced(100);
}

#[test]
fn weights_2_to_1_give_slot_ratio_2() {
    let ms = vec![v4_member(1, 2), v4_member(2, 1)];
    let c = counts(&build_table(&ms, M), 2);
    let ratio = c[0] as f64 / c[1] as f64;
    assert!((ratio - 2.0).abs() <= 0.02, "ratio {ratio} ({c:?})");
}

#[test]
fn weights_1_1_2_give_shares_25_25_50() {
    let ms = vec![v4_member(1, 1), v4_member(2, 1), v4_member(3, 2)];
    let c = counts(&build_table(&ms, M), 3);
    let share = |i: usize| 100.0 * c[i] as f64 / f64::from(M);
    for (i, want) in [(0, 25.0), (1, 25.0), (2, 50.0)] {
        assert!(
            (share(i) - want).abs() <= 1.0,
            "member {i}: {:.2}% (want {want}%)",
            share(i)
        );
    }
}

#[test]
fn large_weight_spread_is_honoured() {
    // 10000 : 1 : 1 — the light members still get their share.
    let ms = vec![v4_member(1, 10_000), v4_member(2, 1), v4_member(3, 1)];
    let c = counts(&build_table(&ms, M), 3);
    assert_eq!(c.iter().sum::<usize>(), M as usize);
    let expect_light = f64::from(M) / 10_002.0;
    for &light in &c[1..] {
        assert!((light as f64 - expect_light).abs() <= 1.0, "{c:?}");
    }
}

#[test]
fn weight_zero_member_gets_no_slots() {
    let ms = vec![v4_member(1, 1), v4_member(2, 0), v4_member(3, 1)];
    let table = build_table(&ms, M);
    let c = counts(&table, 3);
    assert_eq!(c[1], 0);
    assert_eq!(c[0] + c[2], M as usize);
}

#[test]
fn weight_zero_member_does_not_change_the_table() {
    // Draining a backend (weight 0) is the same as removing it.
    let with = vec![v4_member(1, 1), v4_member(2, 0), v4_member(3, 1)];
    let without = vec![v4_member(1, 1), v4_member(3, 1)];
    assert_eq!(
        by_identity(&build_table(&with, M), &with),
        by_identity(&build_table(&without, M), &without)
    );
}

#[test]
fn all_weights_zero_gives_all_empty() {
    let ms = vec![v4_member(1, 0), v4_member(2, 0)];
    let table = build_table(&ms, M);
    assert_eq!(table.len(), M as usize);
    assert!(table.iter().all(|&e| e == EMPTY));
}

#[test]
fn no_members_gives_all_empty() {
    let table = build_table(&[], M);
    assert_eq!(table.len(), M as usize);
    assert!(table.iter().all(|&e| e == EMPTY));
}

#[test]
fn every_slot_filled_when_any_weight_is_positive() {
    for ms in [
        members(1),
        members(7),
        vec![v4_member(1, 0), v4_member(2, 3)],
        vec![v4_member(1, 10_000), v4_member(2, 1)],
    ] {
        for size in [7, 251, M] {
            let table = build_table(&ms, size);
            assert_eq!(table.len(), size as usize);
            assert!(
                table.iter().all(|&e| (e as usize) < ms.len()),
                "size {size}: empty or bad slot"
            );
        }
    }
}

#[test]
fn more_members_than_slots_fills_every_slot_once() {
    let ms = members(20);
    let table = build_table(&ms, 7);
    assert!(table.iter().all(|&e| (e as usize) < ms.len()));
    let c = counts(&table, ms.len());
    assert!(c.iter().all(|&x| x <= 1));
}

/// Of the slots whose owner (old table) is in `survivors`, the fraction
/// that the new table gives to the same identity.
fn kept_fraction(old: &[Option<[u8; 18]>], new: &[Option<[u8; 18]>], survivors: &[Member]) -> f64 {
    let alive: std::collections::HashSet<_> = survivors.iter().map(|m| m.identity).collect();
    let mut had = 0usize;
    let mut kept = 0usize;
    for (o, n) in old.iter().zip(new) {
        if let Some(o) = o
            && alive.contains(o)
        {
            had += 1;
            kept += usize::from(Some(*o) == *n);
        }
    }
    kept as f64 / had as f64
}

/// Removing one member: the survivors together keep at least 99% of the
/// slots they owned before (compared by identity), and each survivor
/// keeps at least 98% of its own.
fn assert_removal_disruption(n: u32) {
    let before = members(n);
    let old = by_identity(&build_table(&before, M), &before);
    for removed in [0, n as usize / 2, n as usize - 1] {
        let mut after = before.clone();
        after.remove(removed);
        let new = by_identity(&build_table(&after, M), &after);
        let kept = kept_fraction(&old, &new, &after);
        assert!(
            kept >= 0.99,
            "n={n}, removed #{removed}: survivors kept {:.3}%",
            kept * 100.0
        );
        for s in &after {
            let k = kept_fraction(&old, &new, std::slice::from_ref(s));
            assert!(k >= 0.98, "n={n}: one survivor kept only {:.3}%", k * 100.0);
        }
    }
}

#[test]
fn removing_one_of_10_members_keeps_99_percent_of_survivor_slots() {
    assert_removal_disruption(10);
}

#[test]
fn removing_one_of_100_members_keeps_99_percent_of_survivor_slots() {
    assert_removal_disruption(100);
}

/// Adding one member: of the slots that the newcomer does *not* take,
/// at least 99% stay with the member that owned them before.
fn assert_addition_disruption(n: u32) {
    let before = members(n);
    let old = by_identity(&build_table(&before, M), &before);
    let mut after = before.clone();
    let newcomer = v4_member(10_000, 1);
    after.push(newcomer);
    let new = by_identity(&build_table(&after, M), &after);
    let mut not_new = 0usize;
    let mut unchanged = 0usize;
    for (o, n) in old.iter().zip(&new) {
        if *n != Some(newcomer.identity) {
            not_new += 1;
            unchanged += usize::from(o == n);
        }
    }
    let frac = unchanged as f64 / not_new as f64;
    assert!(
        frac >= 0.99,
        "n={n}: only {:.3}% of non-newcomer slots unchanged",
        frac * 100.0
    );
    // And the newcomer gets its fair share.
    let share = (M as usize - not_new) as f64 / f64::from(M);
    assert!((share - 1.0 / f64::from(n + 1)).abs() < 0.01 / f64::from(n + 1) + 1e-9);
}

#[test]
fn adding_an_11th_member_keeps_99_percent_of_other_slots() {
    assert_addition_disruption(10);
}

#[test]
fn adding_a_101st_member_keeps_99_percent_of_other_slots() {
    assert_addition_disruption(100);
}

#[test]
fn same_input_gives_identical_table() {
    let ms = members(37);
    assert_eq!(build_table(&ms, M), build_table(&ms, M));
}

#[test]
fn shuffled_input_gives_identical_mapping_by_identity() {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut ms: Vec<Member> = (1..=50).map(|i| v4_member(i, 1 + i % 4)).collect();
    let reference = by_identity(&build_table(&ms, M), &ms);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..5 {
        ms.shuffle(&mut rng);
        assert_eq!(by_identity(&build_table(&ms, M), &ms), reference);
    }
    ms.reverse();
    assert_eq!(by_identity(&build_table(&ms, M), &ms), reference);
}

#[test]
fn table_is_pinned_across_versions() {
    // Golden values: if this fails, the hash or the fill changed and two
    // xlb nodes of different versions would disagree on every flow.
    let ms = vec![v4_member(1, 1), v4_member(2, 1), v4_member(3, 2)];
    let table = build_table(&ms, 13);
    assert_eq!(table, GOLDEN_13);
    assert_eq!(hash64(SEED_OFFSET, &ms[0].identity), GOLDEN_H1);
}
// Also reproduced by an independent Python implementation of the
// round-scan fill when this was written.
const GOLDEN_13: [u32; 13] = [1, 0, 2, 0, 2, 2, 2, 2, 1, 0, 2, 1, 2];
const GOLDEN_H1: u64 = 0x2ba6_19ab_b69f_d150;

/// The fill exactly as specified: every round, every member in identity
/// order claims `floor((r+1)w/W) - floor(rw/W)` slots.
fn build_table_round_scan(members: &[Member], size: u32) -> Vec<u32> {
    let m = u64::from(size);
    let mut table = vec![EMPTY; size as usize];
    let mut order: Vec<usize> = (0..members.len())
        .filter(|&i| members[i].weight > 0)
        .collect();
    order.sort_by_key(|&i| members[i].identity);
    let Some(w_max) = order.iter().map(|&i| u64::from(members[i].weight)).max() else {
        return table;
    };
    let mut next = vec![0u64; members.len()];
    let mut free = size;
    for r in 0u64.. {
        for &i in &order {
            let w = u64::from(members[i].weight);
            let claims = (r + 1) * w / w_max - r * w / w_max;
            if claims == 0 {
                continue;
            }
            let id = &members[i].identity;
            let offset = hash64(SEED_OFFSET, id) % m;
            let skip = hash64(SEED_SKIP, id) % (m - 1) + 1;
            loop {
                let slot = ((offset + next[i] * skip) % m) as usize;
                next[i] += 1;
                if table[slot] == EMPTY {
                    table[slot] = i as u32;
                    break;
                }
            }
            free -= 1;
            if free == 0 {
                return table;
            }
        }
    }
    unreachable!()
}

#[test]
fn heap_fill_equals_the_round_scan_definition() {
    let weight_sets: [&[u32]; 6] = [
        &[1, 1, 1],
        &[2, 1],
        &[1, 1, 2],
        &[3, 0, 7, 7, 10],
        &[10_000, 1, 1, 9_999, 5_000],
        &[6, 4, 9, 2, 2, 1, 8, 3, 3, 5, 7],
    ];
    for ws in weight_sets {
        let ms: Vec<Member> = (0u32..)
            .zip(ws)
            .map(|(i, &w)| v4_member(i + 1, w))
            .collect();
        for size in [7, 251, 4_099] {
            assert_eq!(
                build_table(&ms, size),
                build_table_round_scan(&ms, size),
                "weights {ws:?}, size {size}"
            );
        }
    }
}

#[test]
fn identity_layout_v4_and_v6() {
    let v4 = identity(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 11)), 0x1f90);
    assert_eq!(
        v4,
        [
            198, 18, 0, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x1f, 0x90
        ]
    );
    let v6 = identity(IpAddr::V6(Ipv6Addr::LOCALHOST), 80);
    assert_eq!(&v6[..16], &Ipv6Addr::LOCALHOST.octets());
    assert_eq!(&v6[16..], &[0, 80]);
}

#[test]
fn is_prime_on_known_primes_and_composites() {
    for p in [2, 3, 5, 7, 13, 251, 65_537, 1_048_573, 4_294_967_291] {
        assert!(is_prime(p), "{p} is prime");
    }
    for c in [
        0,
        1,
        4,
        9,
        25,
        65_535,
        1_048_575,
        4_294_967_295,
        65_521 * 65_519,
    ] {
        assert!(!is_prime(c), "{c} is not prime");
    }
    assert!(is_prime(lb_common::DEFAULT_RING_SIZE));
    assert!(is_prime(lb_common::MAX_RING_SIZE));
}

#[test]
#[should_panic(expected = "not prime")]
fn non_prime_size_panics() {
    build_table(&members(3), 65_535);
}

#[test]
fn thousand_members_build_quickly() {
    // Smoke test of the complexity; the timing bound is only checked in
    // release builds (debug builds are ~20x slower).
    let ms: Vec<Member> = (1..=1000).map(|i| v4_member(i, 1 + i % 7)).collect();
    let start = std::time::Instant::now();
    let table = build_table(&ms, M);
    let took = start.elapsed();
    assert!(table.iter().all(|&e| e != EMPTY));
    if !cfg!(debug_assertions) {
        assert!(took.as_millis() < 500, "took {took:?}");
    }
}
