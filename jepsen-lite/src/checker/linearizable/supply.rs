//! Reduction 4 of [`super`]: which values the undecided operations can
//! still write, and which they still need. A node where the register does
//! not hold `v`, a definite operation left observes `v`, and no operation
//! left leaves `v`, is a dead end.

use std::collections::HashMap;

use super::search::{Candidate, Step};

/// Per value: undecided operations that leave it, and undecided definite
/// operations that observe it.
#[derive(Debug)]
pub(super) struct Supply {
    value_id: HashMap<i64, usize>,
    /// Per op: the value it leaves (writes, cas) and the one it observes
    /// (definite reads and cas), as value ids.
    leaves: Vec<Option<usize>>,
    observes: Vec<Option<usize>>,
    writers: Vec<u32>,
    observers: Vec<u32>,
    /// Values with observers left and no writer left.
    starving: usize,
}

impl Supply {
    pub(super) fn new(ops: &[Candidate]) -> Self {
        let mut value_id: HashMap<i64, usize> = HashMap::new();
        let mut id = |v: i64| {
            let n = value_id.len();
            *value_id.entry(v).or_insert(n)
        };
        let mut leaves = Vec::with_capacity(ops.len());
        let mut observes = Vec::with_capacity(ops.len());
        for op in ops {
            let (left, seen) = match op.step {
                Step::Read(v) => (None, Some(v)),
                Step::Write(v) => (Some(v), None),
                Step::Cas(e, n) => (Some(n), Some(e)),
            };
            leaves.push(left.map(&mut id));
            // An indeterminate cas may be left out: it needs nothing.
            observes.push(seen.filter(|_| !op.indeterminate).map(&mut id));
        }
        let n = value_id.len();
        let mut supply =
            Supply { value_id, leaves, observes, writers: vec![0; n], observers: vec![0; n], starving: 0 };
        for op in 0..ops.len() {
            supply.add(op, 1);
        }
        supply
    }

    fn is_starving(&self, v: usize) -> bool {
        self.writers[v] == 0 && self.observers[v] > 0
    }

    /// Adds `delta` (±1) to the counts of `op`'s values.
    fn add(&mut self, op: usize, delta: i32) {
        for (value, writer) in [(self.leaves[op], true), (self.observes[op], false)] {
            let Some(v) = value else { continue };
            let before = self.is_starving(v);
            let count = if writer { &mut self.writers[v] } else { &mut self.observers[v] };
            *count = count.saturating_add_signed(delta);
            match (before, self.is_starving(v)) {
                (false, true) => self.starving += 1,
                (true, false) => self.starving -= 1,
                _ => {}
            }
        }
    }

    /// `op` is decided (linearized or omitted).
    pub(super) fn decide(&mut self, op: usize) {
        self.add(op, -1);
    }

    /// Undoes [`Supply::decide`].
    pub(super) fn undecide(&mut self, op: usize) {
        self.add(op, 1);
    }

    /// A value (id) needed that nothing left can write, other than `value`.
    pub(super) fn starved(&self, value: Option<i64>) -> Option<usize> {
        let current = value.and_then(|v| self.value_id.get(&v).copied());
        (0..self.writers.len()).find(|&v| Some(v) != current && self.is_starving(v))
    }

    /// The value (id) a definite operation observes.
    pub(super) fn observed_by(&self, op: usize) -> Option<usize> {
        self.observes[op]
    }

    /// True when, with the register at `value`, some value is needed that
    /// nothing left can write. An unknown value (nothing decided it yet)
    /// may still be any of them.
    pub(super) fn dead(&self, value: Option<i64>) -> bool {
        let Some(value) = value else { return false };
        let current = self.value_id.get(&value).is_some_and(|&v| self.is_starving(v));
        self.starving > usize::from(current)
    }
}
