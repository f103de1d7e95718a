//! Hand-made valid and invalid register histories; histories generated
//! from real executions are in `generated`.

use super::*;
use crate::history::{Event, Op};

mod generated;

/// How a hand-made operation ends.
#[derive(Debug, Clone, Copy)]
enum End {
    Ok(u64),
    Fail(u64),
    Info(u64),
    /// Never completes.
    Open,
}

/// One hand-made operation: process, op (with its result), invocation, end.
type Spec = (u32, Op, u64, End);

/// Builds a history of key 0 from operations listed in each process's order.
fn history(specs: &[Spec]) -> History {
    let keyed: Vec<(u32, Spec)> = specs.iter().map(|s| (0, s.clone())).collect();
    keyed_history(&keyed)
}

/// Builds a history from (key, operation), listed in each process's order.
fn keyed_history(specs: &[(u32, Spec)]) -> History {
    let mut events = Vec::new();
    for (key, (p, op, invoke, end)) in specs {
        let key = *key;
        let node = format!("n{}", p % 3 + 1);
        let invoked = match op {
            Op::Read(_) => Op::Read(None),
            other => other.clone(),
        };
        events.push(Event::invoke(*p, &node, invoked.clone(), *invoke).with_key(key));
        let completion = match *end {
            End::Ok(t) => Event::ok(*p, &node, op.clone(), t),
            End::Fail(t) => Event::fail(*p, &node, invoked, t, "409"),
            End::Info(t) => Event::info(*p, &node, invoked, t, "timeout"),
            End::Open => continue,
        };
        events.push(completion.with_key(key));
    }
    match History::from_events(events) {
        Ok(h) => h,
        Err(e) => panic!("bad hand-made history: {e}"),
    }
}

fn verdict(specs: &[Spec], initial: Option<i64>) -> LinearizableReport {
    check(&history(specs), &Config { initial, ..Config::default() })
}

fn assert_valid(specs: &[Spec], initial: Option<i64>) {
    let r = verdict(specs, initial);
    assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
}

fn assert_invalid(specs: &[Spec], initial: Option<i64>) -> Violation {
    let r = verdict(specs, initial);
    assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
    r.violation.clone().unwrap_or_else(|| panic!("an invalid verdict explains itself: {r:?}"))
}

use End::{Fail, Info, Ok as Done, Open};
use Op::{Cas, Read, Write};

// === valid ===

#[test]
fn an_empty_history_is_linearizable() {
    assert_valid(&[], Some(0));
}

#[test]
fn sequential_reads_see_the_last_write() {
    assert_valid(
        &[(0, Read(Some(0)), 0, Done(1)), (0, Write(3), 2, Done(3)), (1, Read(Some(3)), 4, Done(5))],
        Some(0),
    );
}

#[test]
fn concurrent_writes_may_be_seen_in_either_order() {
    let writes = [(0, Write(1), 0, Done(10)), (1, Write(2), 0, Done(10))];
    // Either write may come last; a read during both sees either.
    for last in [1, 2] {
        let first = 3 - last;
        let mut h = writes.to_vec();
        h.push((2, Read(Some(first)), 1, Done(2)));
        h.push((2, Read(Some(last)), 11, Done(12)));
        h.push((3, Read(Some(last)), 13, Done(14)));
        assert_valid(&h, Some(0));
    }
}

#[test]
fn touching_intervals_count_as_concurrent() {
    // The read is invoked at the instant the write completes: it may precede it.
    assert_valid(&[(0, Write(1), 0, Done(10)), (1, Read(Some(0)), 10, Done(20))], Some(0));
}

#[test]
fn a_cas_chain_is_linearizable() {
    assert_valid(
        &[
            (0, Cas(0, 1), 0, Done(1)),
            (1, Cas(1, 2), 2, Done(3)),
            (0, Cas(2, 3), 4, Done(5)),
            (2, Read(Some(3)), 6, Done(7)),
        ],
        Some(0),
    );
}

#[test]
fn concurrent_cas_one_wins_and_the_failed_one_is_dropped() {
    assert_valid(
        &[(0, Cas(0, 1), 0, Done(10)), (1, Cas(0, 2), 0, Fail(10)), (2, Read(Some(1)), 11, Done(12))],
        Some(0),
    );
}

#[test]
fn an_indeterminate_write_may_have_happened() {
    assert_valid(
        &[(0, Write(1), 0, Done(1)), (1, Write(2), 2, Info(3)), (2, Read(Some(2)), 20, Done(30))],
        Some(0),
    );
}

#[test]
fn an_indeterminate_write_may_never_happen() {
    assert_valid(
        &[(0, Write(1), 0, Done(1)), (1, Write(2), 2, Info(3)), (2, Read(Some(1)), 20, Done(30))],
        Some(0),
    );
    // Nor must an open one, even with nothing after it.
    assert_valid(&[(0, Write(1), 0, Done(1)), (1, Cas(1, 2), 2, Open)], Some(0));
}

#[test]
fn an_indeterminate_write_may_take_effect_long_after_its_timeout() {
    assert_valid(
        &[
            (0, Write(1), 0, Done(1)),
            (1, Write(5), 2, Info(3)),
            (2, Read(Some(1)), 20, Done(30)),
            (2, Read(Some(1)), 40, Done(50)),
            (2, Read(Some(5)), 100, Done(110)),
        ],
        Some(0),
    );
}

#[test]
fn indeterminate_and_failed_reads_constrain_nothing() {
    assert_valid(
        &[(0, Write(1), 0, Done(1)), (1, Read(None), 2, Info(3)), (1, Read(None), 4, Fail(5))],
        Some(0),
    );
}

#[test]
fn an_unknown_initial_value_is_what_the_first_read_saw() {
    assert_valid(&[(0, Read(Some(42)), 0, Done(1)), (0, Cas(42, 1), 2, Done(3))], None);
    assert_invalid(&[(0, Read(Some(42)), 0, Done(1)), (0, Read(Some(41)), 2, Done(3))], None);
}

// === invalid ===

#[test]
fn a_stale_read_after_a_completed_write_is_found() {
    let v = assert_invalid(
        &[(0, Write(1), 0, Done(10)), (1, Write(2), 20, Done(30)), (2, Read(Some(1)), 40, Done(50))],
        Some(0),
    );
    assert_eq!(v.op, 2, "the stale read is the operation that cannot be linearized");
    assert_eq!(v.linearized, vec![0, 1]);
    assert_eq!(v.value, Some(2));
    assert!(v.explanation.contains("#2 p2 n3 read → 1"), "{}", v.explanation);
    assert!(v.explanation.contains("2 of 3 operations"), "{}", v.explanation);
}

#[test]
fn a_read_of_a_value_never_written_is_found() {
    let v = assert_invalid(&[(0, Write(1), 0, Done(10)), (1, Read(Some(7)), 5, Done(15))], Some(0));
    assert_eq!(v.op, 1);
}

#[test]
fn a_read_of_a_failed_write_is_found() {
    assert_invalid(&[(0, Write(7), 0, Fail(10)), (1, Read(Some(7)), 20, Done(30))], Some(0));
}

#[test]
fn a_cas_against_an_overwritten_value_is_found() {
    let v = assert_invalid(
        &[(0, Write(1), 0, Done(10)), (1, Write(2), 20, Done(30)), (0, Cas(1, 5), 40, Done(50))],
        Some(0),
    );
    assert_eq!(v.op, 2);
}

#[test]
fn an_indeterminate_write_cannot_be_undone() {
    // Once a read saw the indeterminate write, it happened: the older value cannot come back.
    assert_invalid(
        &[
            (0, Write(1), 0, Done(1)),
            (1, Write(2), 2, Info(3)),
            (2, Read(Some(2)), 10, Done(11)),
            (2, Read(Some(1)), 20, Done(21)),
        ],
        Some(0),
    );
}

#[test]
fn the_explanation_shows_the_end_of_a_long_prefix() {
    let mut specs: Vec<Spec> =
        (0..30).map(|i| (0, Write(i), i as u64 * 10, Done(i as u64 * 10 + 5))).collect();
    specs.push((1, Read(Some(28)), 1000, Done(1001)));
    let v = assert_invalid(&specs, Some(0));
    assert_eq!(v.linearized.len(), 30);
    assert!(v.explanation.contains("it ends with:"), "{}", v.explanation);
    assert!(v.explanation.contains("write 29") && !v.explanation.contains("write 19 "), "{}", v.explanation);
}

/// Twelve concurrent indeterminate writes of two values, read at once, then
/// reads alternating between the values more often than there are writes
/// left: many orders to try before the contradiction.
fn hard_history() -> Vec<Spec> {
    let mut specs: Vec<Spec> = (0..12).map(|p| (p, Write(i64::from(p % 2) + 1), 0, Info(1))).collect();
    specs.extend((0..12).map(|p| (20 + p, Read(Some(i64::from(p % 2) + 1)), 5, Done(6))));
    specs.extend((0..14).map(|i| (40, Read(Some(i % 2 + 1)), 10 + 2 * i as u64, Done(11 + 2 * i as u64))));
    specs
}

#[test]
fn the_search_gives_up_past_its_budget() {
    let specs = hard_history();
    let r = check(&history(&specs), &Config { initial: Some(0), ..Config::default() });
    assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
    assert!(r.steps > 1000, "the search has work to do: {} steps", r.steps);
    let r = check(&history(&specs), &Config { initial: Some(0), max_steps: 50, ..Config::default() });
    assert_eq!(r.valid, Validity::Unknown, "{}", r.summary());
    assert!(r.unknown_reason.as_deref().is_some_and(|s| s.contains("max_steps")), "{r:?}");
    let r = check(&history(&specs), &Config { initial: Some(0), max_cache_bytes: 1000, ..Config::default() });
    assert_eq!(r.valid, Validity::Unknown, "{}", r.summary());
    assert!(r.unknown_reason.as_deref().is_some_and(|s| s.contains("max_cache_bytes")), "{r:?}");
}

// === the reductions ===

#[test]
fn an_indeterminate_write_nothing_observed_is_left_out() {
    let specs = [
        (0, Write(1), 0, Done(1)),
        (1, Write(5), 2, Info(3)),
        (2, Cas(1, 6), 4, Info(5)),
        (3, Write(7), 6, Info(7)),
        (4, Read(Some(7)), 20, Done(21)),
    ];
    let r = verdict(&specs, Some(0));
    assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
    assert_eq!((r.ops, r.indeterminate, r.dropped), (3, 1, 2), "write 5 and cas 1→6 were never observed");
}

/// Sixteen indeterminate writes, each read at the end, around a long run of
/// definite operations, and a stale read last.
#[test]
fn indeterminate_writes_are_only_tried_before_an_observer() {
    let mut specs: Vec<Spec> = (0..16).map(|p| (p, Write(100 + i64::from(p)), 0, Info(1))).collect();
    let mut t = 10;
    for v in 1..=60 {
        specs.push((20, Write(v), t, Done(t + 1)));
        specs.push((20, Read(Some(v)), t + 2, Done(t + 3)));
        t += 10;
    }
    for p in 0..16 {
        specs.push((20, Read(Some(100 + i64::from(p))), t, Done(t + 1)));
        t += 10;
    }
    specs.push((20, Read(Some(60)), t, Done(t + 1)));
    let r = verdict(&specs, Some(0));
    assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
    assert!(r.steps < 50_000, "{} steps", r.steps);
}

/// Rounds of twenty concurrent reads of one value between writes, and a
/// stale read last.
#[test]
fn concurrent_reads_of_the_current_value_are_not_reordered() {
    let mut specs: Vec<Spec> = Vec::new();
    let mut t = 0;
    for v in 1..=3 {
        specs.push((0, Write(v), t, Done(t + 1)));
        specs.extend((1..=20).map(|p| (p, Read(Some(v)), t + 2, Done(t + 3))));
        t += 10;
    }
    specs.push((0, Read(Some(1)), t, Done(t + 1)));
    let r = verdict(&specs, Some(0));
    assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
    assert!(r.steps < 10_000, "{} steps", r.steps);
}

// === keys ===

#[test]
fn keys_are_independent_registers() {
    // On one register the read of 0 after the write of 1 would be stale.
    let specs = [(1, (0, Write(1), 0, Done(1))), (2, (1, Read(Some(0)), 2, Done(3)))];
    let r = check(&keyed_history(&specs), &Config { initial: Some(0), ..Config::default() });
    assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
    assert_eq!(r.keys, 2);
    assert_eq!(r.per_key.iter().map(|k| (k.key, k.ops)).collect::<Vec<_>>(), vec![(1, 1), (2, 1)]);
}

#[test]
fn the_invalid_key_is_named_with_its_operations() {
    let specs = [
        (1, (0, Write(1), 0, Done(10))),
        (3, (1, Write(5), 0, Done(10))),
        (1, (2, Read(Some(1)), 20, Done(30))),
        (3, (3, Write(6), 20, Done(30))),
        (3, (4, Read(Some(5)), 40, Done(50))),
        (7, (5, Read(Some(0)), 40, Done(50))),
    ];
    let r = check(&keyed_history(&specs), &Config { initial: Some(0), ..Config::default() });
    assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
    assert_eq!((r.keys, r.invalid_keys.clone(), r.unknown_keys.len()), (3, vec![3], 0));
    let v = r.violation.clone().expect("a violation");
    assert_eq!((v.key, v.op), (3, 4), "the stale read of key 3");
    assert_eq!(v.key_ops, vec![1, 3, 4], "every operation of key 3, by id");
    assert!(v.explanation.contains("key 3 (3 operations)"), "{}", v.explanation);
    let verdicts: Vec<(u32, Validity)> = r.per_key.iter().map(|k| (k.key, k.valid)).collect();
    assert_eq!(verdicts, vec![(1, Validity::Valid), (3, Validity::Invalid), (7, Validity::Valid)]);
    let json = serde_json::to_value(&r).expect("serializes");
    assert_eq!(json["invalid_keys"], serde_json::json!([3]));
    assert_eq!(json["violation"]["key"], 3);
}

#[test]
fn an_undecided_key_makes_the_verdict_unknown_but_an_invalid_one_wins() {
    let mut specs: Vec<(u32, Spec)> = hard_history().into_iter().map(|s| (1, s)).collect();
    let config = Config { initial: Some(0), max_steps: 50, ..Config::default() };
    let r = check(&keyed_history(&specs), &config);
    assert_eq!((r.valid, r.unknown_keys.clone()), (Validity::Unknown, vec![1]), "{}", r.summary());
    assert!(r.summary().contains("key 1: gave up after 50 steps"), "{}", r.summary());
    // A key found invalid decides the verdict.
    specs.push((2, (50, Write(1), 0, Done(1))));
    specs.push((2, (51, Read(Some(0)), 2, Done(3))));
    let r = check(&keyed_history(&specs), &config);
    assert_eq!((r.valid, r.invalid_keys.clone()), (Validity::Invalid, vec![2]), "{}", r.summary());
}

// === horizons ===

#[test]
fn an_indeterminate_write_whose_observers_all_came_before_it_is_left_out() {
    let specs = [
        (0, Read(Some(5)), 0, Done(1)),
        (1, Write(5), 2, Info(3)),
        (0, Write(6), 4, Done(5)),
        (0, Read(Some(6)), 6, Done(7)),
    ];
    let r = verdict(&specs, None);
    assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
    assert_eq!((r.ops, r.dropped), (3, 1), "{r:?}");
}

#[test]
fn an_indeterminate_write_is_tried_until_its_last_observer_returns() {
    // Write 5 may happen just before the read of 5 that overlaps the write of 6.
    assert_valid(
        &[
            (0, Write(5), 0, Info(1)),
            (1, Write(6), 10, Done(30)),
            (2, Read(Some(5)), 20, Done(40)),
            (2, Read(Some(6)), 50, Done(60)),
        ],
        Some(0),
    );
    // Through a chain of indeterminate cas: 5, then 5→7, then a read of 7.
    assert_valid(
        &[
            (0, Write(5), 0, Info(1)),
            (1, Cas(5, 7), 2, Info(3)),
            (2, Write(6), 10, Done(11)),
            (2, Read(Some(6)), 12, Done(13)),
            (3, Read(Some(7)), 20, Done(30)),
        ],
        Some(0),
    );
    // Past its horizon it cannot happen: the read of 5 came back before 6 was written.
    assert_invalid(
        &[
            (0, Write(5), 0, Info(1)),
            (2, Read(Some(5)), 2, Done(3)),
            (1, Write(6), 10, Done(11)),
            (2, Read(Some(5)), 20, Done(30)),
        ],
        Some(0),
    );
}

/// A long history of a few processes: the memo's keys name the operations
/// open at one point, not every operation of the history.
#[test]
fn the_memo_scales_with_concurrency_not_length() {
    let mut specs: Vec<Spec> = Vec::new();
    let mut t = 0;
    for v in 1..=3000 {
        specs.push((0, Write(v), t, Done(t + 10)));
        specs.push((1, Read(Some(v - 1)), t + 1, Done(t + 11)));
        specs.push((2, Read(Some(v)), t + 12, Done(t + 13)));
        if v % 100 == 0 {
            // An indeterminate write read at once, and one never read.
            specs.push((100 + v as u32, Write(-v), t + 14, Info(t + 15)));
            specs.push((3, Read(Some(-v)), t + 16, Done(t + 17)));
            specs.push((3, Write(v), t + 18, Done(t + 19)));
        }
        t += 20;
    }
    let r = verdict(&specs, Some(0));
    assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
    let per_entry = r.cache_bytes / r.cache_entries as u64;
    assert!(per_entry <= 64 + 4 * 4, "{per_entry} bytes per memoized state for {} ops", r.ops);
}
