//! Backup tiers (overflow allocation): which of a VIP's backend tiers take
//! new flows. Pure.
//!
//! Tiers join from the lowest number up, each with all its usable backends,
//! until the joined tiers have at least `min_usable` usable backends between
//! them, or every tier has joined. The ring holds the usable backends of the
//! joined tiers only. Tier numbers need not be contiguous: only the tiers
//! some backend has count. A VIP whose backends are all in one tier has that
//! tier serving whatever happens, which is the behaviour without tiers.

/// The highest tier that serves new flows, from each backend's `(tier,
/// usable)`: every backend whose tier is at or below it and that is usable
/// is a ring member. `None` for a VIP without backends.
pub(super) fn serving_cutoff(
    backends: impl IntoIterator<Item = (u8, bool)>,
    min_usable: u32,
) -> Option<u8> {
    // Usable backends per tier, for the tiers that have backends.
    let mut per_tier: [Option<u32>; 256] = [None; 256];
    for (tier, usable) in backends {
        let n = per_tier[usize::from(tier)].get_or_insert(0);
        *n += u32::from(usable);
    }
    let mut joined = 0u32;
    let mut cutoff = None;
    for (tier, n) in per_tier.iter().enumerate() {
        let Some(n) = n else { continue };
        // Every index is below 256.
        cutoff = u8::try_from(tier).ok();
        joined += n;
        if joined >= min_usable {
            break;
        }
    }
    cutoff
}

/// The tiers that have backends and serve (at or below `cutoff`), lowest
/// first, as `xlb status` lists them.
pub(super) fn serving_tiers(tiers: impl IntoIterator<Item = u8>, cutoff: Option<u8>) -> Vec<u8> {
    let Some(cutoff) = cutoff else {
        return Vec::new();
    };
    let mut out: Vec<u8> = tiers.into_iter().filter(|&t| t <= cutoff).collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(tier, usable)` from a compact form: one `(tier, up, down)` per tier.
    fn backends(tiers: &[(u8, usize, usize)]) -> Vec<(u8, bool)> {
        let mut out = Vec::new();
        for &(tier, up, down) in tiers {
            out.extend(std::iter::repeat_n((tier, true), up));
            out.extend(std::iter::repeat_n((tier, false), down));
        }
        out
    }

    #[test]
    fn one_tier_always_serves_alone() {
        assert_eq!(serving_cutoff(backends(&[(0, 3, 0)]), 1), Some(0));
        assert_eq!(serving_cutoff(backends(&[(0, 1, 2)]), 2), Some(0));
        assert_eq!(serving_cutoff(backends(&[(0, 0, 3)]), 1), Some(0));
    }

    #[test]
    fn primaries_serve_alone_while_they_have_min_usable() {
        let b = backends(&[(0, 2, 1), (1, 2, 0)]);
        assert_eq!(serving_cutoff(b, 2), Some(0));
    }

    #[test]
    fn the_backup_tier_joins_when_primaries_fall_below_min_usable() {
        let b = backends(&[(0, 1, 2), (1, 2, 0)]);
        assert_eq!(serving_cutoff(b, 2), Some(1));
    }

    #[test]
    fn tiers_join_cumulatively_until_the_sum_reaches_min_usable() {
        // 1 + 1 < 3, so tier 2 joins too; tier 3 stays out.
        let b = backends(&[(0, 1, 1), (1, 1, 1), (2, 1, 0), (3, 4, 0)]);
        assert_eq!(serving_cutoff(b.clone(), 3), Some(2));
        assert_eq!(serving_cutoff(b, 2), Some(1));
    }

    #[test]
    fn gaps_in_tier_numbers_are_skipped() {
        let b = backends(&[(0, 0, 2), (10, 1, 0), (200, 3, 0)]);
        assert_eq!(serving_cutoff(b.clone(), 1), Some(10));
        assert_eq!(serving_cutoff(b.clone(), 2), Some(200));
        assert_eq!(serving_tiers(b.iter().map(|&(t, _)| t), Some(10)), [0, 10]);
    }

    #[test]
    fn min_usable_larger_than_any_tier_joins_every_tier() {
        let b = backends(&[(0, 2, 0), (1, 2, 0), (2, 2, 0)]);
        assert_eq!(serving_cutoff(b, 5), Some(2));
        // More than there are usable at all: still every tier, not none.
        let b = backends(&[(0, 1, 0), (1, 1, 0)]);
        assert_eq!(serving_cutoff(b, 5), Some(1));
    }

    #[test]
    fn all_down_joins_every_tier() {
        let b = backends(&[(0, 0, 3), (1, 0, 2)]);
        assert_eq!(serving_cutoff(b.clone(), 1), Some(1));
        assert_eq!(serving_tiers(b.iter().map(|&(t, _)| t), Some(1)), [0, 1]);
    }

    #[test]
    fn weight_zero_backends_count_as_not_usable() {
        // The caller passes usable = false for a drained (weight 0)
        // backend: two primaries, one drained, leave one usable < 2.
        let b = [(0, true), (0, false), (1, true)];
        assert_eq!(serving_cutoff(b, 2), Some(1));
    }

    #[test]
    fn a_tier_that_comes_back_makes_the_higher_tier_leave() {
        let mut b = backends(&[(0, 0, 3), (1, 2, 0)]);
        assert_eq!(serving_cutoff(b.clone(), 2), Some(1));
        b[0].1 = true;
        assert_eq!(serving_cutoff(b.clone(), 2), Some(1));
        b[1].1 = true;
        assert_eq!(serving_cutoff(b, 2), Some(0));
    }

    #[test]
    fn no_backends_no_tier() {
        assert_eq!(serving_cutoff([], 1), None);
        assert!(serving_tiers([], None).is_empty());
    }
}
