//! A set of integers kept as disjoint, non-adjacent closed intervals: the
//! allocated addresses of a pool. Memory grows with the number of runs of
//! consecutive allocations, never with the size of the pool, and every
//! operation is O(log runs), so a nearly full /8 or an IPv6 /0 costs the same
//! per allocation as an empty /24.

use std::collections::BTreeMap;

/// Disjoint closed intervals `start → end`; no two are adjacent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    runs: BTreeMap<u128, u128>,
    len: u128,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    /// How many values it holds.
    pub fn len(&self) -> u128 {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many runs it is stored as.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// The runs, in order.
    pub fn iter_runs(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.runs.iter().map(|(s, e)| (*s, *e))
    }

    /// Every value, in order.
    pub fn iter(&self) -> impl Iterator<Item = u128> + '_ {
        self.runs.iter().flat_map(|(s, e)| *s..=*e)
    }

    /// Whether `x` is in the set.
    pub fn contains(&self, x: u128) -> bool {
        self.runs.range(..=x).next_back().is_some_and(|(_, e)| *e >= x)
    }

    /// Adds `x`; `false` when it was there already.
    pub fn insert(&mut self, x: u128) -> bool {
        if self.contains(x) {
            return false;
        }
        let prev = self.runs.range(..x).next_back().map(|(s, e)| (*s, *e)).filter(|(_, e)| e.checked_add(1) == Some(x));
        let next = x.checked_add(1).and_then(|n| self.runs.get(&n).map(|e| (n, *e)));
        match (prev, next) {
            (Some((ps, _)), Some((ns, ne))) => {
                self.runs.remove(&ns);
                self.runs.insert(ps, ne);
            }
            (Some((ps, _)), None) => {
                self.runs.insert(ps, x);
            }
            (None, Some((ns, ne))) => {
                self.runs.remove(&ns);
                self.runs.insert(x, ne);
            }
            (None, None) => {
                self.runs.insert(x, x);
            }
        }
        self.len += 1;
        true
    }

    /// Removes `x`; `false` when it was not there.
    pub fn remove(&mut self, x: u128) -> bool {
        let Some((s, e)) = self.runs.range(..=x).next_back().map(|(s, e)| (*s, *e)).filter(|(_, e)| *e >= x) else {
            return false;
        };
        self.runs.remove(&s);
        if s < x {
            self.runs.insert(s, x - 1);
        }
        if x < e {
            self.runs.insert(x + 1, e);
        }
        self.len -= 1;
        true
    }

    /// The smallest value in `[from, hi]` not in the set.
    pub fn first_free(&self, from: u128, hi: u128) -> Option<u128> {
        if from > hi {
            return None;
        }
        // Runs are never adjacent, so the value after the run covering
        // `from` is free.
        let y = match self.runs.range(..=from).next_back() {
            Some((_, e)) if *e >= from => e.checked_add(1)?,
            _ => from,
        };
        (y <= hi).then_some(y)
    }

    /// Adds a whole run of values (used when loading).
    pub fn insert_run(&mut self, s: u128, e: u128) {
        // Loading from our own output: runs arrive disjoint and in order, so
        // this is a plain insert; anything else is merged value by value.
        let overlaps =
            self.runs.range(..=e).next_back().is_some_and(|(_, pe)| pe.checked_add(1).is_some_and(|p| p >= s));
        if !overlaps && s <= e {
            self.runs.insert(s, e);
            self.len += e - s + 1;
        } else {
            for x in s..=e {
                self.insert(x);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn merges_and_splits() {
        let mut r = RangeSet::new();
        for x in [5, 7, 6, 1, 2, 3] {
            assert!(r.insert(x));
        }
        assert!(!r.insert(6));
        assert_eq!(r.iter_runs().collect::<Vec<_>>(), vec![(1, 3), (5, 7)]);
        assert!(r.insert(4));
        assert_eq!(r.iter_runs().collect::<Vec<_>>(), vec![(1, 7)]);
        assert!(r.remove(4));
        assert!(!r.remove(4));
        assert_eq!(r.iter_runs().collect::<Vec<_>>(), vec![(1, 3), (5, 7)]);
        assert_eq!(r.len(), 6);
        assert_eq!(r.first_free(1, 10), Some(4));
        assert_eq!(r.first_free(5, 7), None);
        assert_eq!(r.first_free(0, 10), Some(0));
    }

    #[test]
    fn edges_of_u128() {
        let mut r = RangeSet::new();
        assert!(r.insert(u128::MAX));
        assert!(r.insert(u128::MAX - 1));
        assert_eq!(r.first_free(u128::MAX - 1, u128::MAX), None);
        assert!(r.insert(0));
        assert_eq!(r.first_free(0, u128::MAX), Some(1));
        assert!(r.remove(u128::MAX));
        assert_eq!(r.first_free(u128::MAX - 1, u128::MAX), Some(u128::MAX));
    }

    #[test]
    fn random_operations_match_a_plain_set() {
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut r = RangeSet::new();
        let mut model = BTreeSet::new();
        for _ in 0..20_000 {
            let x = (next() % 300) as u128;
            if next() % 3 == 0 {
                assert_eq!(r.remove(x), model.remove(&x));
            } else {
                assert_eq!(r.insert(x), model.insert(x));
            }
            let from = (next() % 300) as u128;
            let want = (from..=299).find(|y| !model.contains(y));
            assert_eq!(r.first_free(from, 299), want);
        }
        assert_eq!(r.iter().collect::<BTreeSet<_>>(), model);
        assert_eq!(r.len() as usize, model.len());
        // Runs are disjoint and never adjacent.
        let runs: Vec<_> = r.iter_runs().collect();
        assert!(runs.windows(2).all(|w| w[0].1 + 1 < w[1].0));
    }
}
