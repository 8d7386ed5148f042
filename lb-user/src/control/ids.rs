//! VIP indices and backend ids: handed out once per identity, kept across
//! reloads (so counters survive and unchanged rings are not touched), and
//! reused after they are freed, with a new generation for backend ids so
//! that connection-table entries of the previous owner stop matching.

use lb_common::{MAX_BACKENDS, MAX_VIPS};

/// Ids from `first..limit`, lowest never-used first, then freed ones.
#[derive(Debug)]
pub(super) struct IdPool {
    next: u32,
    free: Vec<u32>,
    limit: u32,
}

impl IdPool {
    fn new(first: u32, limit: u32) -> Self {
        Self {
            next: first,
            free: Vec::new(),
            limit,
        }
    }

    /// A pool in which `used` are taken (a restarted controller's ids).
    fn with_used(first: u32, limit: u32, used: &std::collections::BTreeSet<u32>) -> Self {
        let next = used.last().map_or(first, |&max| (max + 1).max(first));
        // Lowest first: `take` pops from the end.
        let free = (first..next)
            .rev()
            .filter(|id| !used.contains(id))
            .collect();
        Self { next, free, limit }
    }

    pub(super) fn take(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop() {
            return Some(id);
        }
        if self.next >= self.limit {
            return None;
        }
        self.next += 1;
        Some(self.next - 1)
    }

    pub(super) fn give(&mut self, id: u32) {
        debug_assert!(!self.free.contains(&id), "id {id} freed twice");
        self.free.push(id);
    }

    /// How many more ids `take` can hand out.
    pub(super) fn available(&self) -> usize {
        self.free.len() + (self.limit - self.next) as usize
    }
}

/// Every id the controller hands out.
#[derive(Debug)]
pub(super) struct Ids {
    /// VIP indices (`RINGS`, `VIP_STATS`): `0..MAX_VIPS`.
    pub(super) vips: IdPool,
    /// Backend ids (`BACKENDS`): `1..MAX_BACKENDS`; 0 means "no backend".
    pub(super) backends: IdPool,
    /// Current generation of every backend id.
    generations: Vec<u16>,
}

impl Ids {
    pub(super) fn new() -> Self {
        Self {
            vips: IdPool::new(0, MAX_VIPS),
            backends: IdPool::new(1, MAX_BACKENDS),
            generations: vec![0; MAX_BACKENDS as usize],
        }
    }

    /// Takes over the ids a previous controller left in use, and the
    /// generation of every backend id (in use or not).
    pub(super) fn adopt(
        &mut self,
        vips: &std::collections::BTreeSet<u32>,
        backends: &std::collections::BTreeSet<u32>,
        generations: impl IntoIterator<Item = (u32, u16)>,
    ) {
        self.vips = IdPool::with_used(0, MAX_VIPS, vips);
        self.backends = IdPool::with_used(1, MAX_BACKENDS, backends);
        for (id, g) in generations {
            if let Some(slot) = self.generations.get_mut(id as usize) {
                *slot = g;
            }
        }
    }

    /// `n` backend ids with their new generations, or `None` (and nothing
    /// taken) if fewer than `n` are free.
    pub(super) fn take_backends(&mut self, n: usize) -> Option<Vec<(u32, u16)>> {
        if n > self.backends.available() {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let id = self.backends.take()?;
            // A new owner of the id: entries made for the previous one
            // must not match it.
            let generation = &mut self.generations[id as usize];
            *generation = generation.wrapping_add(1);
            out.push((id, *generation));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_start_low_are_reused_and_run_out() {
        let mut p = IdPool::new(1, 4);
        assert_eq!((p.take(), p.take()), (Some(1), Some(2)));
        p.give(1);
        assert_eq!(p.available(), 2);
        assert_eq!(p.take(), Some(1), "a freed id is handed out again");
        assert_eq!(p.take(), Some(3));
        assert_eq!(p.take(), None, "limit is exclusive");
        assert_eq!(p.available(), 0);
    }

    #[test]
    fn a_reused_backend_id_gets_a_new_generation() {
        let mut ids = Ids::new();
        let first = ids.take_backends(2).unwrap();
        assert_eq!(first, vec![(1, 1), (2, 1)]);
        ids.backends.give(2);
        assert_eq!(ids.take_backends(1).unwrap(), vec![(2, 2)]);
    }

    #[test]
    fn an_adopted_pool_skips_the_ids_in_use_and_hands_out_the_lowest_free() {
        let used = [1, 2, 5].into_iter().collect();
        let mut p = IdPool::with_used(1, 10, &used);
        assert_eq!((p.take(), p.take(), p.take()), (Some(3), Some(4), Some(6)));
        assert_eq!(p.available(), 3);
        let mut ids = Ids::new();
        ids.adopt(&Default::default(), &used, [(3, 7)]);
        assert_eq!(
            ids.take_backends(1).unwrap(),
            vec![(3, 8)],
            "generation continues"
        );
    }

    #[test]
    fn a_request_for_too_many_backend_ids_takes_none() {
        let mut ids = Ids::new();
        let all = ids.backends.available();
        assert_eq!(all, MAX_BACKENDS as usize - 1);
        assert!(ids.take_backends(all + 1).is_none());
        assert_eq!(ids.backends.available(), all);
    }
}
