//! The search of [`super`]: Wing & Gong's depth-first search with Lowe's
//! memoization, on Porcupine's entry list, with the reductions the module
//! documentation describes.

use std::collections::HashSet;

use super::Config;

/// A register operation the search works on.
#[derive(Debug, Clone, Copy)]
pub(super) enum Step {
    Read(i64),
    Write(i64),
    Cas(i64, i64),
}

/// Applies `step` to the register: the new value, or `None` if it is illegal there.
pub(super) fn apply(value: Option<i64>, step: Step) -> Option<Option<i64>> {
    match (step, value) {
        (Step::Read(v), Some(cur)) => (v == cur).then_some(value),
        // An unknown initial value is whatever the first read saw.
        (Step::Read(v), None) => Some(Some(v)),
        (Step::Write(v), _) => Some(Some(v)),
        (Step::Cas(expected, new), Some(cur)) => (expected == cur).then_some(Some(new)),
        (Step::Cas(_, new), None) => Some(Some(new)),
    }
}

/// An operation of the search: its history id, its step, whether it is indeterminate.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate {
    pub(super) id: usize,
    pub(super) step: Step,
    pub(super) indeterminate: bool,
}

/// Selects the register operations that take part in the search.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Call,
    Return,
}

/// One node of the entry list.
#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: Kind,
    /// Index into `Search::ops`.
    op: usize,
    /// A call's return entry.
    matching: usize,
}

/// A set of linearized operations.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(n: usize) -> Self {
        Bitset(vec![0; n.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

#[derive(Debug)]
pub(super) enum SearchOutcome {
    Linearizable,
    NotLinearizable,
    GaveUp(String),
}

/// The deepest point the search reached before a dead end.
#[derive(Debug, Clone)]
pub(super) struct Deepest {
    /// Indices into `Search::ops`, in linearization order.
    pub(super) linearized: Vec<usize>,
    pub(super) value: Option<i64>,
    pub(super) stuck: usize,
    pub(super) pending: Vec<usize>,
}

/// Where the search stands: the value, the linearized set, and whether the
/// last operation linearized was indeterminate (then an observer must follow).
#[derive(Debug)]
struct Node {
    value: Option<i64>,
    linearized: Bitset,
    after_indeterminate: bool,
}

/// One linearized operation on the stack, with the node it left.
#[derive(Debug, Clone, Copy)]
struct Frame {
    call: usize,
    value: Option<i64>,
    after_indeterminate: bool,
    /// A read taken alone: when it fails, so does the node it left.
    forced: bool,
}

const HEAD: usize = 0;
const NIL: usize = usize::MAX;

#[derive(Debug)]
pub(super) struct Search {
    pub(super) ops: Vec<Candidate>,
    /// `entries[0]` is the list head; the entries follow in time order.
    entries: Vec<Entry>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// (linearized, value, whether the last one linearized was indeterminate)
    cache: HashSet<(Bitset, Option<i64>, bool)>,
    pub(super) steps: u64,
    max_steps: u64,
    max_cache_entries: usize,
    pub(super) deepest: Option<Deepest>,
}

impl Search {
    pub(super) fn new(ops: &[(Candidate, u64, u64)], config: &Config) -> Self {
        // (time, kind, op): calls sort before returns at the same instant.
        let mut order: Vec<(u64, Kind, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, (_, call, ret)) in ops.iter().enumerate() {
            order.push((*call, Kind::Call, i));
            order.push((*ret, Kind::Return, i));
        }
        order.sort_by_key(|&(time, kind, op)| (time, kind == Kind::Return, op));
        let head = Entry { kind: Kind::Call, op: NIL, matching: NIL };
        let mut entries = vec![head];
        let mut return_of = vec![NIL; ops.len()];
        for &(_, kind, op) in &order {
            if kind == Kind::Return {
                return_of[op] = entries.len();
            }
            entries.push(Entry { kind, op, matching: NIL });
        }
        for e in &mut entries[1..] {
            if e.kind == Kind::Call {
                e.matching = return_of[e.op];
            }
        }
        let n = entries.len();
        let next = (0..n).map(|i| if i + 1 < n { i + 1 } else { NIL }).collect();
        let prev = (0..n).map(|i| i.wrapping_sub(1)).collect();
        // Each memo entry holds a bitset, a value and the set's overhead.
        let entry_bytes = (ops.len().div_ceil(64) * 8 + 64) as u64;
        Search {
            ops: ops.iter().map(|(c, ..)| *c).collect(),
            entries,
            next,
            prev,
            cache: HashSet::new(),
            steps: 0,
            max_steps: config.max_steps,
            max_cache_entries: usize::try_from(config.max_cache_bytes / entry_bytes).unwrap_or(usize::MAX),
            deepest: None,
        }
    }

    /// Takes entry `i` out of the list; its own links stay, for `unlink_undo`.
    fn unlink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    /// Puts entry `i` back where it was.
    fn unlink_undo(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = i;
        if n != NIL {
            self.prev[n] = i;
        }
    }

    /// Linearizes a call: lifts it and its return out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.entries[call].matching);
    }

    /// Undoes `lift`, in reverse order.
    fn unlift(&mut self, call: usize) {
        self.unlink_undo(self.entries[call].matching);
        self.unlink_undo(call);
    }

    pub(super) fn run(&mut self, initial: Option<i64>) -> SearchOutcome {
        let mut node =
            Node { value: initial, linearized: Bitset::new(self.ops.len()), after_indeterminate: false };
        let mut stack: Vec<Frame> = Vec::new();
        let mut entry = self.next[HEAD];
        // A node just reached: a legal read goes first, alone.
        let mut fresh = true;
        while entry != NIL {
            self.steps += 1;
            if let Some(gave_up) = self.over_budget() {
                return gave_up;
            }
            if fresh {
                fresh = false;
                if let Some(read) = self.legal_read(node.value) {
                    if self.linearize(read, &mut node, &mut stack, true) {
                        entry = self.next[HEAD];
                        fresh = true;
                    } else {
                        // Seen before, and it failed: so does this node.
                        let Some(next) = self.backtrack(&mut node, &mut stack) else {
                            return SearchOutcome::NotLinearizable;
                        };
                        entry = next;
                    }
                    continue;
                }
            }
            let e = self.entries[entry];
            if e.kind == Kind::Return {
                if self.ops[e.op].indeterminate {
                    // Only indeterminate calls are left: they never happened.
                    return SearchOutcome::Linearizable;
                }
                self.note_dead_end(&stack, node.value, entry);
                let Some(next) = self.backtrack(&mut node, &mut stack) else {
                    return SearchOutcome::NotLinearizable;
                };
                entry = next;
                continue;
            }
            if self.linearize(entry, &mut node, &mut stack, false) {
                entry = self.next[HEAD];
                fresh = true;
            } else {
                entry = self.next[entry];
            }
        }
        SearchOutcome::Linearizable
    }

    fn over_budget(&self) -> Option<SearchOutcome> {
        let why = if self.steps > self.max_steps {
            format!("gave up after {} steps (max_steps)", self.max_steps)
        } else if self.cache.len() >= self.max_cache_entries {
            format!("gave up after {} memoized states (max_cache_bytes)", self.cache.len())
        } else {
            return None;
        };
        Some(SearchOutcome::GaveUp(format!(
            "{why}, {} of {} ops linearized at best",
            self.deepest_len(),
            self.ops.len()
        )))
    }

    /// A candidate read of the current value: a call before the first return.
    fn legal_read(&self, value: Option<i64>) -> Option<usize> {
        let value = value?;
        let mut i = self.next[HEAD];
        while i != NIL && self.entries[i].kind == Kind::Call {
            if matches!(self.ops[self.entries[i].op].step, Step::Read(v) if v == value) {
                return Some(i);
            }
            i = self.next[i];
        }
        None
    }

    /// Linearizes the call `entry` if it is legal here, allowed, and leads to
    /// a node not seen before; `forced` marks a read taken alone.
    fn linearize(&mut self, entry: usize, node: &mut Node, stack: &mut Vec<Frame>, forced: bool) -> bool {
        let op = self.entries[entry].op;
        let candidate = self.ops[op];
        // After an indeterminate operation, a write would make it pointless.
        if node.after_indeterminate && matches!(candidate.step, Step::Write(_)) {
            return false;
        }
        let Some(after) = apply(node.value, candidate.step) else { return false };
        let mut with = node.linearized.clone();
        with.set(op);
        if !self.cache.insert((with.clone(), after, candidate.indeterminate)) {
            return false;
        }
        stack.push(Frame {
            call: entry,
            value: node.value,
            after_indeterminate: node.after_indeterminate,
            forced,
        });
        *node = Node { value: after, linearized: with, after_indeterminate: candidate.indeterminate };
        self.lift(entry);
        true
    }

    /// Undoes frames up to and including the last one not forced, and returns
    /// the entry after its call; `None` when the stack runs out.
    fn backtrack(&mut self, node: &mut Node, stack: &mut Vec<Frame>) -> Option<usize> {
        loop {
            let frame = stack.pop()?;
            node.value = frame.value;
            node.after_indeterminate = frame.after_indeterminate;
            node.linearized.clear(self.entries[frame.call].op);
            self.unlift(frame.call);
            if !frame.forced {
                return Some(self.next[frame.call]);
            }
        }
    }

    /// Memoized nodes.
    pub(super) fn cache_entries(&self) -> usize {
        self.cache.len()
    }

    fn deepest_len(&self) -> usize {
        self.deepest.as_ref().map_or(0, |d| d.linearized.len())
    }

    /// Remembers the deepest dead end: the prefix, and the calls left before `stuck`.
    fn note_dead_end(&mut self, stack: &[Frame], value: Option<i64>, stuck: usize) {
        if self.deepest.as_ref().is_some_and(|d| d.linearized.len() >= stack.len()) {
            return;
        }
        let mut pending = Vec::new();
        let mut i = self.next[HEAD];
        while i != NIL && i != stuck {
            if self.entries[i].kind == Kind::Call {
                pending.push(self.entries[i].op);
            }
            i = self.next[i];
        }
        self.deepest = Some(Deepest {
            linearized: stack.iter().map(|f| self.entries[f.call].op).collect(),
            value,
            stuck: self.entries[stuck].op,
            pending,
        });
    }
}
