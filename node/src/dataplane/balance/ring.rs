//! The consistent-hash ring of a route.
//!
//! Points are placed by the `consistent_hash_ring` crate (FNV, so every
//! process builds the same ring from the same backends): a backend gets
//! `weight × vnodes` points, derived from its id, never from its position in
//! the list. We flatten the ring into sorted `(end, backend)` ranges once per
//! config change and answer a key by walking clockwise from its hash: the
//! first backend is the crate's own answer, the next distinct ones are where
//! the key would land if the earlier ones were removed. Skipping an unhealthy
//! backend during the walk therefore moves only the keys it held, and health
//! changes never rebuild the ring.

use std::hash::BuildHasher;

use consistent_hash_ring::RingBuilder;
use fnv::FnvBuildHasher;

/// A flattened ring: sorted, non-overlapping hash ranges, each owned by one
/// backend (an index into the route's backend list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashRing {
    /// `(last hash of the range, backend index)`, sorted by hash; adjacent
    /// ranges have different owners.
    ranges: Vec<(u64, u32)>,
    /// What the ring was built from, to reuse it when nothing changed.
    inputs: Vec<(String, u32)>,
    vnodes: u32,
}

impl HashRing {
    /// Builds the ring of `backends` (`(id, weight)` in route order); a
    /// backend of weight 0 gets no points.
    pub fn build(backends: &[(String, u32)], vnodes: u32) -> Self {
        let weighted: Vec<(String, usize)> = backends
            .iter()
            .filter(|(_, w)| *w > 0)
            .map(|(id, w)| (id.clone(), *w as usize * vnodes as usize))
            .collect();
        let ring = RingBuilder::default().weighted_nodes(&weighted).build();
        let index_of = |id: &String| backends.iter().position(|(b, _)| b == id).map(|i| i as u32);
        let mut ranges: Vec<(u64, u32)> = Vec::new();
        for r in ring.resident_ranges() {
            let Some(idx) = index_of(r.node()) else { continue };
            ranges.push((*r.keys().end(), idx));
        }
        // The crate reports the wrap-around range last; it belongs to the
        // first point's owner, and merging keeps owners alternating.
        ranges.dedup_by(|next, prev| {
            if next.1 == prev.1 {
                prev.0 = next.0;
                true
            } else {
                false
            }
        });
        Self { ranges, inputs: backends.to_vec(), vnodes }
    }

    /// True when building from these inputs would give this ring.
    pub fn built_from(&self, backends: &[(String, u32)], vnodes: u32) -> bool {
        self.vnodes == vnodes && self.inputs == backends
    }

    /// The ring position of a key: FNV (the crate's hasher) of the key's
    /// mixed bytes. FNV alone barely moves the high bits when only the last
    /// bytes differ, which would put a whole /24 of clients on one arc, so
    /// the key goes through splitmix64's finalizer first. Both functions are
    /// fixed forever: nodes of every version must agree (see the golden test).
    pub fn hash_key(key: &[u8]) -> u64 {
        FnvBuildHasher::default().hash_one(ring_key(key))
    }

    /// Backend indices clockwise from `hash`, one per range, wrapping once;
    /// a backend may appear more than once (callers skip repeats).
    pub fn walk(&self, hash: u64) -> impl Iterator<Item = u32> + '_ {
        let start = self.ranges.partition_point(|(end, _)| *end < hash);
        let n = self.ranges.len();
        (0..n).map(move |k| self.ranges[(start + k) % n].1)
    }

    /// The hash space cut into arcs, each answered first by one backend
    /// once those outside `mask` are skipped: `(last point of the arc,
    /// backend)`, sorted, the last ending at `u64::MAX`; `None` where no
    /// backend of `mask` has points. A point belongs to the first arc whose
    /// last point is at or above it, the rule [`HashRing::walk`] starts
    /// by, and its backend is the first of `mask` on that walk (the tests
    /// check both, key by key). For exact shares of the key space.
    pub fn arcs(&self, mask: &[bool]) -> Vec<(u64, Option<u32>)> {
        let n = self.ranges.len();
        let eligible = |k: usize| mask.get(self.ranges[k].1 as usize).copied().unwrap_or(false);
        // first[k]: the first backend of `mask` clockwise from range k. Two
        // passes backwards: the first finds who answers past the end (the
        // walk wraps), the second fills in.
        let mut first: Vec<Option<u32>> = vec![None; n];
        let mut carry = None;
        for pass in 0..2 {
            for k in (0..n).rev() {
                if eligible(k) {
                    carry = Some(self.ranges[k].1);
                }
                if pass == 1 {
                    first[k] = carry;
                }
            }
        }
        let mut arcs: Vec<(u64, Option<u32>)> = Vec::with_capacity(n + 1);
        for (k, &(end, _)) in self.ranges.iter().enumerate() {
            arcs.push((end, first[k]));
        }
        // Past the last range the walk wraps to the first.
        if arcs.last().is_none_or(|(end, _)| *end < u64::MAX) {
            arcs.push((u64::MAX, first.first().copied().flatten()));
        }
        arcs.dedup_by(|next, prev| {
            if next.1 == prev.1 {
                prev.0 = next.0;
                true
            } else {
                false
            }
        });
        arcs
    }

    /// Number of ranges (for tests and status).
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// True when no backend has points.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// The value the ring hashes for `key`: 8 well-mixed bytes.
pub fn ring_key(key: &[u8]) -> [u8; 8] {
    let mut h = FnvBuildHasher::default().hash_one(key);
    // splitmix64 finalizer.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (h ^ (h >> 31)).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn backends(ws: &[(&str, u32)]) -> Vec<(String, u32)> {
        ws.iter().map(|(id, w)| (id.to_string(), *w)).collect()
    }

    fn key(i: u32) -> [u8; 4] {
        i.to_be_bytes()
    }

    fn first(ring: &HashRing, k: &[u8]) -> u32 {
        ring.walk(HashRing::hash_key(k)).next().expect("non-empty ring")
    }

    #[test]
    fn first_choice_matches_the_crate() {
        let bs = backends(&[("a", 1), ("b", 2), ("c", 1), ("d", 3)]);
        let ring = HashRing::build(&bs, 100);
        let crate_ring = RingBuilder::default()
            .weighted_nodes(&bs.iter().map(|(id, w)| (id.clone(), *w as usize * 100)).collect::<Vec<_>>())
            .build();
        for i in 0..5_000 {
            let k = key(i);
            let ours = &bs[first(&ring, &k) as usize].0;
            let theirs = crate_ring.try_get(ring_key(&k)).expect("non-empty");
            assert_eq!(ours, theirs, "key {i}");
        }
    }

    /// Golden values: the ring must not change across versions or processes,
    /// or nodes of mixed versions would disagree.
    #[test]
    fn golden_placement() {
        let ring = HashRing::build(&backends(&[("a", 1), ("b", 1), ("c", 1)]), 100);
        let got: Vec<u32> = (0..12).map(|i| first(&ring, &key(i))).collect();
        assert_eq!(got, GOLDEN);
    }
    const GOLDEN: [u32; 12] = [0, 1, 1, 0, 1, 2, 2, 2, 0, 0, 2, 2];

    #[test]
    fn two_builds_agree_on_every_key() {
        let bs = backends(&[("a", 3), ("b", 1), ("c", 2)]);
        let (r1, r2) = (HashRing::build(&bs, 100), HashRing::build(&bs, 100));
        assert_eq!(r1, r2);
        for i in 0..10_000 {
            assert_eq!(first(&r1, &key(i)), first(&r2, &key(i)));
        }
    }

    #[test]
    fn removing_a_backend_moves_only_its_keys() {
        let all = backends(&[("a", 1), ("b", 1), ("c", 1), ("d", 1)]);
        let without_c = backends(&[("a", 1), ("b", 1), ("d", 1)]);
        let (r1, r2) = (HashRing::build(&all, 100), HashRing::build(&without_c, 100));
        let mut moved = 0;
        for i in 0..20_000 {
            let before = &all[first(&r1, &key(i)) as usize].0;
            let after = &without_c[first(&r2, &key(i)) as usize].0;
            if before != "c" {
                assert_eq!(before, after, "key {i} moved though its backend stayed");
            } else {
                moved += 1;
                // ...and goes where the walk of the old ring said it would.
                let next = r1.walk(HashRing::hash_key(&key(i))).find(|&b| all[b as usize].0 != "c");
                assert_eq!(Some(after), next.map(|b| &all[b as usize].0));
            }
        }
        assert!((3_500..6_500).contains(&moved), "c held {moved} of 20000 keys");
    }

    #[test]
    fn doubling_a_weight_roughly_doubles_its_share() {
        let share = |ws: &[(&str, u32)], who: u32| {
            let ring = HashRing::build(&backends(ws), 100);
            (0..40_000).filter(|&i| first(&ring, &key(i)) == who).count() as f64 / 40_000.0
        };
        let even = share(&[("a", 1), ("b", 1), ("c", 1), ("d", 1)], 0);
        let double = share(&[("a", 2), ("b", 1), ("c", 1), ("d", 1)], 0);
        // Ideal: 25% -> 40%.
        assert!((0.21..0.29).contains(&even), "even share {even}");
        assert!((0.35..0.45).contains(&double), "doubled share {double}");
    }

    #[test]
    fn walk_visits_every_backend() {
        let bs = backends(&[("a", 1), ("b", 1), ("c", 1), ("z", 0)]);
        let ring = HashRing::build(&bs, 50);
        let mut seen = HashMap::new();
        for b in ring.walk(HashRing::hash_key(b"k")) {
            *seen.entry(b).or_insert(0) += 1;
        }
        let mut ids: Vec<u32> = seen.into_keys().collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![0, 1, 2], "weight 0 has no points");
    }

    /// A point's arc names the backend the walk reaches first among the
    /// eligible ones: checked at random points and at every arc's ends.
    #[test]
    fn arcs_follow_the_walk() {
        let bs = backends(&[("a", 1), ("b", 2), ("c", 1), ("d", 1), ("z", 0)]);
        let ring = HashRing::build(&bs, 40);
        for mask in [
            vec![true; 5],
            vec![true, false, true, false, true],
            vec![false; 5],
            vec![false, false, true, false, false],
        ] {
            let arcs = ring.arcs(&mask);
            assert_eq!(arcs.last().map(|a| a.0), Some(u64::MAX));
            let owner = |h: u64| arcs[arcs.partition_point(|(end, _)| *end < h)].1;
            let walked = |h: u64| ring.walk(h).find(|&b| mask[b as usize]);
            let mut points: Vec<u64> = (0..20_000u32).map(|i| HashRing::hash_key(&key(i))).collect();
            points.extend(arcs.iter().flat_map(|(end, _)| [*end, end.wrapping_add(1)]));
            points.extend([0, u64::MAX]);
            for h in points {
                assert_eq!(owner(h), walked(h), "point {h} with {mask:?}");
            }
        }
    }

    #[test]
    fn reuse_is_keyed_on_inputs() {
        let bs = backends(&[("a", 1), ("b", 1)]);
        let ring = HashRing::build(&bs, 10);
        assert!(ring.built_from(&bs, 10));
        assert!(!ring.built_from(&bs, 11));
        assert!(!ring.built_from(&backends(&[("a", 2), ("b", 1)]), 10));
    }
}
