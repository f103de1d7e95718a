//! The search of [`super`] on one register: Wing & Gong's depth-first search
//! with Lowe's memoization, on Porcupine's entry list, with the reductions
//! and the windowed memo the module documentation describes and proves.

use std::collections::HashSet;

use super::Config;
use super::supply::Supply;

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

/// Where the search stands: the value, and whether the last operation
/// linearized was indeterminate (then an observer must follow). The decided
/// operations are those whose entries are out of the list.
#[derive(Debug, Clone, Copy)]
struct Node {
    value: Option<i64>,
    after_indeterminate: bool,
}

/// What a frame did to its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    /// Linearized, as one choice among the candidates.
    Chosen,
    /// A read linearized alone: when it fails, so does the node it left.
    ForcedRead,
    /// An indeterminate operation whose return was reached: it never happened.
    Omitted,
}

/// One decided operation on the stack, with the node it left.
#[derive(Debug, Clone, Copy)]
struct Frame {
    call: usize,
    node: Node,
    how: Move,
}

/// A memoized node: the first return entry left, the calls left before it
/// (in list order), the value and the flag. The calls before the first
/// return and that return determine the decided set (see the module docs).
#[derive(Debug, PartialEq, Eq, Hash)]
struct MemoKey {
    first_return: u32,
    open_calls: Box<[u32]>,
    value: Option<i64>,
    after_indeterminate: bool,
}

impl MemoKey {
    /// Approximate heap and table bytes of one memoized node.
    fn bytes(&self) -> u64 {
        64 + 4 * self.open_calls.len() as u64
    }
}

const HEAD: usize = 0;
const NIL: usize = usize::MAX;

#[derive(Debug)]
pub(super) struct Search {
    pub(super) ops: Vec<Candidate>,
    /// `entries[0]` is the list head; the entries follow in time order.
    entries: Vec<Entry>,
    /// Each operation's call entry.
    call_entry: Vec<usize>,
    next: Vec<usize>,
    prev: Vec<usize>,
    cache: HashSet<MemoKey>,
    cache_bytes: u64,
    pub(super) steps: u64,
    max_steps: u64,
    max_cache_bytes: u64,
    pub(super) deepest: Option<Deepest>,
    diagnose: bool,
    /// The most operations decided at a dead end.
    deepest_depth: usize,
    supply: Supply,
}

impl Search {
    /// `ops` are (operation, call time, return time); every return is finite.
    /// `diagnose`: remember the deepest dead end, for the explanation of an
    /// invalid verdict. It costs a copy of the stack at each new depth, so
    /// the checker searches without it first, and again with it only when
    /// the history is not linearizable (the search is deterministic).
    pub(super) fn new(ops: &[(Candidate, u64, u64)], config: &Config, diagnose: bool) -> Self {
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
        let mut call_entry = vec![NIL; ops.len()];
        for &(_, kind, op) in &order {
            match kind {
                Kind::Return => return_of[op] = entries.len(),
                Kind::Call => call_entry[op] = entries.len(),
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
        let candidates: Vec<Candidate> = ops.iter().map(|(c, ..)| *c).collect();
        Search {
            supply: Supply::new(&candidates),
            ops: candidates,
            entries,
            call_entry,
            next,
            prev,
            cache: HashSet::new(),
            cache_bytes: 0,
            steps: 0,
            max_steps: config.max_steps,
            max_cache_bytes: config.max_cache_bytes,
            diagnose,
            deepest_depth: 0,
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

    /// Decides a call: lifts it and its return out of the list.
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
        let mut node = Node { value: initial, after_indeterminate: false };
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
                    let Some(on) = self.forced(read, Move::ForcedRead, &mut node, &mut stack) else {
                        return SearchOutcome::NotLinearizable;
                    };
                    (entry, fresh) = on;
                    continue;
                }
            }
            let e = self.entries[entry];
            if e.kind == Kind::Return {
                if self.ops[e.op].indeterminate {
                    // Every choice before this return was tried: what is
                    // left is that the operation never happened.
                    let call = self.call_entry[e.op];
                    let Some(on) = self.forced(call, Move::Omitted, &mut node, &mut stack) else {
                        return SearchOutcome::NotLinearizable;
                    };
                    (entry, fresh) = on;
                    continue;
                }
                self.note_dead_end(&stack, node.value, entry);
                let Some(next) = self.backtrack(&mut node, &mut stack) else {
                    return SearchOutcome::NotLinearizable;
                };
                entry = next;
                continue;
            }
            if self.linearize(entry, &mut node, &mut stack, Move::Chosen) {
                entry = self.next[HEAD];
                fresh = true;
            } else {
                entry = self.next[entry];
            }
        }
        SearchOutcome::Linearizable
    }

    /// Takes a move that is the node's only way on (`ForcedRead`,
    /// `Omitted`). Returns the entry to go on from and whether it starts a
    /// fresh node: the new node's first entry, or, when the move leads to a
    /// node seen before (which failed, so this one fails too), the entry
    /// after backtracking; `None` when the stack runs out.
    fn forced(
        &mut self,
        call: usize,
        how: Move,
        node: &mut Node,
        stack: &mut Vec<Frame>,
    ) -> Option<(usize, bool)> {
        if self.linearize(call, node, stack, how) {
            return Some((self.next[HEAD], true));
        }
        self.backtrack(node, stack).map(|entry| (entry, false))
    }

    fn over_budget(&self) -> Option<SearchOutcome> {
        let why = if self.steps > self.max_steps {
            format!("gave up after {} steps (max_steps)", self.max_steps)
        } else if self.cache_bytes >= self.max_cache_bytes {
            format!("gave up after {} memoized states (max_cache_bytes)", self.cache.len())
        } else {
            return None;
        };
        Some(SearchOutcome::GaveUp(format!(
            "{why}, {} of {} ops decided at best",
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

    /// The memo key of the list as it stands, with `node`.
    fn key(&self, node: Node) -> MemoKey {
        let mut open_calls = Vec::new();
        let mut i = self.next[HEAD];
        while i != NIL && self.entries[i].kind == Kind::Call {
            open_calls.push(i as u32);
            i = self.next[i];
        }
        MemoKey {
            first_return: if i == NIL { u32::MAX } else { i as u32 },
            open_calls: open_calls.into_boxed_slice(),
            value: node.value,
            after_indeterminate: node.after_indeterminate,
        }
    }

    /// Decides the call `entry` (linearizes it, or omits it) if that is
    /// legal here, allowed, and leads to a node not seen before.
    fn linearize(&mut self, entry: usize, node: &mut Node, stack: &mut Vec<Frame>, how: Move) -> bool {
        let op = self.entries[entry].op;
        let candidate = self.ops[op];
        let after = if how == Move::Omitted {
            *node
        } else {
            // After an indeterminate operation, a write would make it pointless.
            if node.after_indeterminate && matches!(candidate.step, Step::Write(_)) {
                return false;
            }
            let Some(value) = apply(node.value, candidate.step) else { return false };
            Node { value, after_indeterminate: candidate.indeterminate }
        };
        self.supply.decide(op);
        if self.supply.dead(after.value) {
            self.note_starved(stack, entry, after.value);
            self.supply.undecide(op);
            return false;
        }
        self.lift(entry);
        let key = self.key(after);
        let bytes = key.bytes();
        if !self.cache.insert(key) {
            self.unlift(entry);
            self.supply.undecide(op);
            return false;
        }
        self.cache_bytes += bytes;
        stack.push(Frame { call: entry, node: *node, how });
        *node = after;
        true
    }

    /// Undoes frames up to and including the last chosen one, and returns
    /// the entry after its call; `None` when the stack runs out.
    fn backtrack(&mut self, node: &mut Node, stack: &mut Vec<Frame>) -> Option<usize> {
        loop {
            let frame = stack.pop()?;
            *node = frame.node;
            self.unlift(frame.call);
            self.supply.undecide(self.entries[frame.call].op);
            if frame.how == Move::Chosen {
                return Some(self.next[frame.call]);
            }
        }
    }

    /// Memoized nodes.
    pub(super) fn cache_entries(&self) -> usize {
        self.cache.len()
    }

    /// Approximate bytes of the memo.
    pub(super) fn cache_bytes(&self) -> u64 {
        self.cache_bytes
    }

    fn deepest_len(&self) -> usize {
        self.deepest_depth
    }

    /// Notes the depth of a dead end; true when it is the deepest yet and
    /// the search diagnoses.
    fn deeper(&mut self, depth: usize) -> bool {
        if depth <= self.deepest_depth && self.deepest.is_some() {
            return false;
        }
        self.deepest_depth = self.deepest_depth.max(depth);
        self.diagnose
    }

    /// Remembers a dead end of reduction 4 if it is the deepest: `entry`
    /// (a call, decided, not lifted) left the register at `value` while an
    /// operation left needs a value nothing left can write. The last invoked
    /// of those operations is named as stuck (a stale read is usually the
    /// late one); the candidates are the calls before the first return.
    fn note_starved(&mut self, stack: &[Frame], entry: usize, value: Option<i64>) {
        if !self.deeper(stack.len() + 1) {
            return;
        }
        let Some(starved) = self.supply.starved(value) else { return };
        let (mut pending, mut stuck) = (Vec::new(), None);
        let mut candidates = true;
        let mut i = self.next[HEAD];
        while i != NIL {
            let e = self.entries[i];
            candidates &= e.kind == Kind::Call || e.op == self.entries[entry].op;
            if i != entry && e.kind == Kind::Call {
                if self.supply.observed_by(e.op) == Some(starved) {
                    stuck = Some(e.op);
                }
                if candidates {
                    pending.push(e.op);
                }
            }
            i = self.next[i];
        }
        let Some(stuck) = stuck else { return };
        let mut linearized: Vec<usize> =
            stack.iter().filter(|f| f.how != Move::Omitted).map(|f| self.entries[f.call].op).collect();
        linearized.push(self.entries[entry].op);
        pending.retain(|&p| p != stuck);
        self.deepest = Some(Deepest { linearized, value, stuck, pending });
    }

    /// Remembers the deepest dead end: the prefix, and the calls left before `stuck`.
    fn note_dead_end(&mut self, stack: &[Frame], value: Option<i64>, stuck: usize) {
        if !self.deeper(stack.len()) {
            return;
        }
        let linearized: Vec<usize> =
            stack.iter().filter(|f| f.how != Move::Omitted).map(|f| self.entries[f.call].op).collect();
        let mut pending = Vec::new();
        let mut i = self.next[HEAD];
        while i != NIL && i != stuck {
            if self.entries[i].kind == Kind::Call {
                pending.push(self.entries[i].op);
            }
            i = self.next[i];
        }
        self.deepest = Some(Deepest { linearized, value, stuck: self.entries[stuck].op, pending });
    }
}
