//! The operations of one key that take part in the search, each with the
//! interval the search gives it: an `ok` operation its own, an indeterminate
//! write or cas its invocation and its *horizon* (the module docs of
//! [`super`] prove that it is linearized before it or never).

use std::collections::HashMap;

use super::search::{Candidate, Step};
use crate::history::Op;
use crate::operation::{Operation, Outcome};

/// The search's operations of one key, and how many were left out.
#[derive(Debug, Default)]
pub(super) struct Candidates {
    /// (operation, call time, return time).
    pub(super) ops: Vec<(Candidate, u64, u64)>,
    /// Of those, the indeterminate ones.
    pub(super) indeterminate: usize,
    /// Failed operations, indeterminate reads, and indeterminate writes and
    /// cas that no observer can follow.
    pub(super) dropped: usize,
}

/// An indeterminate write or cas: its index in `ops`, the value it leaves,
/// the value a cas expects, its invocation.
struct Pending {
    op: usize,
    leaves: i64,
    expects: Option<i64>,
    invoke: u64,
}

/// Selects the register operations of one key (`ops`, in invocation order)
/// and gives every indeterminate one its horizon.
pub(super) fn candidates(ops: &[&Operation]) -> Candidates {
    // The latest return of a definite observer of each value: an ok read of
    // it, or an ok cas expecting it.
    let mut observed_until: HashMap<i64, u64> = HashMap::new();
    for op in ops {
        let seen = match (&op.op, op.outcome) {
            (Op::Read(Some(v)), Outcome::Ok) | (Op::Cas(v, _), Outcome::Ok) => *v,
            _ => continue,
        };
        let ret = op.complete_ns.unwrap_or(u64::MAX);
        let until = observed_until.entry(seen).or_insert(ret);
        *until = (*until).max(ret);
    }
    let mut out = Candidates::default();
    let mut pending = Vec::new();
    for op in ops {
        let step = match (&op.op, op.outcome) {
            (Op::Read(_) | Op::Write(_) | Op::Cas(..), Outcome::Fail) | (Op::Read(_), Outcome::Info) => {
                out.dropped += 1;
                continue;
            }
            (Op::Read(Some(v)), _) => Step::Read(*v),
            (Op::Write(v), _) => Step::Write(*v),
            (Op::Cas(e, n), _) => Step::Cas(*e, *n),
            _ => continue,
        };
        let indeterminate = op.outcome == Outcome::Info;
        let candidate = Candidate { id: op.id, step, indeterminate };
        if indeterminate {
            let (leaves, expects) = match step {
                Step::Write(v) => (v, None),
                Step::Cas(e, n) => (n, Some(e)),
                Step::Read(_) => continue,
            };
            pending.push(Pending { op: out.ops.len(), leaves, expects, invoke: op.invoke_ns });
        }
        out.ops.push((candidate, op.invoke_ns, op.complete_ns.unwrap_or(u64::MAX)));
    }
    let horizon = horizons(&pending, &observed_until);
    let mut keep = vec![true; out.ops.len()];
    for (p, h) in pending.iter().zip(horizon) {
        match h {
            Some(h) if h >= p.invoke => out.ops[p.op].2 = h,
            // No observer can follow it: it is left out (reduction 1).
            _ => keep[p.op] = false,
        }
    }
    let before = out.ops.len();
    let mut i = 0;
    out.ops.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    out.dropped += before - out.ops.len();
    out.indeterminate = out.ops.iter().filter(|(c, ..)| c.indeterminate).count();
    out
}

/// The horizon of each indeterminate operation: the latest return of a
/// definite observer of its value, or of the horizon of an indeterminate cas
/// expecting its value (transitively); `None` when there is none.
fn horizons(pending: &[Pending], observed_until: &HashMap<i64, u64>) -> Vec<Option<u64>> {
    let mut horizon: Vec<Option<u64>> =
        pending.iter().map(|p| observed_until.get(&p.leaves).copied()).collect();
    // Indeterminate cas by the value they expect.
    let mut expecting: HashMap<i64, Vec<usize>> = HashMap::new();
    for (i, p) in pending.iter().enumerate() {
        if let Some(e) = p.expects {
            expecting.entry(e).or_default().push(i);
        }
    }
    // A fixpoint: horizons only grow, and each is one of finitely many returns.
    let mut changed = true;
    while changed {
        changed = false;
        for (x, p) in pending.iter().enumerate() {
            let Some(observers) = expecting.get(&p.leaves) else { continue };
            let best = observers.iter().filter_map(|&c| horizon[c]).max();
            if best > horizon[x] {
                horizon[x] = best;
                changed = true;
            }
        }
    }
    horizon
}
