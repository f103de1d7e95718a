//! Hand-made valid and invalid register histories, and histories generated
//! from real sequential executions.

use super::*;
use crate::history::Event;

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

/// Builds a history from operations listed in each process's order.
fn history(specs: &[Spec]) -> History {
    let mut events = Vec::new();
    for (p, op, invoke, end) in specs {
        let node = format!("n{}", p % 3 + 1);
        let invoked = match op {
            Op::Read(_) => Op::Read(None),
            other => other.clone(),
        };
        events.push(Event::invoke(*p, &node, invoked.clone(), *invoke));
        match *end {
            End::Ok(t) => events.push(Event::ok(*p, &node, op.clone(), t)),
            End::Fail(t) => events.push(Event::fail(*p, &node, invoked, t, "409")),
            End::Info(t) => events.push(Event::info(*p, &node, invoked, t, "timeout")),
            End::Open => {}
        }
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
    specs.push((1, Read(Some(3)), 1000, Done(1001)));
    let v = assert_invalid(&specs, Some(0));
    assert_eq!(v.linearized.len(), 30);
    assert!(v.explanation.contains("it ends with:"), "{}", v.explanation);
    assert!(v.explanation.contains("write 29") && !v.explanation.contains("write 19 "), "{}", v.explanation);
}

#[test]
fn the_search_gives_up_past_its_budget() {
    // Many concurrent indeterminate writes, each observed by a concurrent
    // read, so that they can go in any order; then a contradiction.
    let mut specs: Vec<Spec> = (0..12).map(|p| (p, Write(i64::from(p) + 1), 0, Info(1))).collect();
    specs.extend((0..12).map(|p| (20 + p, Read(Some(i64::from(p) + 1)), 5, Done(6))));
    specs.push((40, Read(Some(99)), 7, Done(8)));
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

// === generated histories ===

/// splitmix64: a deterministic generator for the tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A generated operation: its spec and the instant it took effect (if it did).
struct Generated {
    specs: Vec<Spec>,
}

/// Runs `n` random operations of `procs` processes against a real register:
/// each takes effect at a random instant inside its interval, so the history
/// is linearizable. Written values are unique, and never 0 (the initial value).
fn generate(seed: u64, procs: u32, n: usize) -> Generated {
    let mut rng = Rng(seed);
    // (process, op before the run, invoke, complete, effect instant, indeterminate, happens)
    let mut planned = Vec::new();
    let mut clock = vec![0_u64; procs as usize];
    let mut fresh = 1_i64;
    for _ in 0..n {
        let p = rng.below(u64::from(procs)) as u32;
        let invoke = clock[p as usize] + rng.below(50);
        let complete = invoke + 1 + rng.below(100);
        clock[p as usize] = complete + 1;
        let at = invoke + rng.below(complete - invoke + 1);
        let kind = rng.below(10);
        let indeterminate = kind >= 4 && rng.chance(5);
        let happens = !indeterminate || rng.chance(50);
        planned.push((p, kind, invoke, complete, at, indeterminate, happens));
    }
    // Apply in effect order.
    let mut order: Vec<usize> = (0..planned.len()).collect();
    order.sort_by_key(|&i| (planned[i].4, i));
    let mut value = 0_i64;
    let mut written = vec![0_i64];
    let mut ops: Vec<Option<(Op, bool)>> = vec![None; planned.len()];
    for i in order {
        let (_, kind, _, _, _, _, happens) = planned[i];
        let (op, ok) = match kind {
            0..=3 => (Read(Some(value)), true),
            4..=6 => {
                fresh += 1;
                (Write(fresh), true)
            }
            _ => {
                fresh += 1;
                // Mostly expect the current value, sometimes an older one.
                let expected =
                    if rng.chance(70) { value } else { written[rng.below(written.len() as u64) as usize] };
                (Cas(expected, fresh), expected == value)
            }
        };
        if happens
            && ok
            && let Write(v) | Cas(_, v) = op
        {
            value = v;
            written.push(v);
        }
        ops[i] = Some((op, ok));
    }
    let mut specs = Vec::new();
    // As in Jepsen, a process whose operation is indeterminate is retired for a new one.
    let mut id: Vec<u32> = (0..procs).collect();
    let mut next_id = procs;
    for (i, (p, _, invoke, complete, _, indeterminate, _)) in planned.into_iter().enumerate() {
        let Some((op, ok)) = ops[i].take() else { continue };
        let end = match (indeterminate, ok) {
            (true, _) if complete % 2 == 0 => Open,
            (true, _) => Info(complete),
            (false, true) => Done(complete),
            (false, false) => Fail(complete),
        };
        specs.push((id[p as usize], op, invoke, end));
        if indeterminate {
            id[p as usize] = next_id;
            next_id += 1;
        }
    }
    Generated { specs }
}

fn check_specs(specs: &[Spec]) -> LinearizableReport {
    check(&history(specs), &Config { initial: Some(0), ..Config::default() })
}

#[test]
fn generated_histories_are_linearizable() {
    for seed in 0..40 {
        let g = generate(seed, 5, 120);
        let r = check_specs(&g.specs);
        assert_eq!(r.valid, Validity::Valid, "seed {seed}: {}", r.summary());
    }
}

fn ok_reads(specs: &[Spec]) -> Vec<usize> {
    specs
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s, (_, Read(Some(_)), _, Done(_))))
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn a_read_of_a_value_never_written_is_always_found() {
    for seed in 0..20 {
        let mut g = generate(seed, 5, 120);
        let reads = ok_reads(&g.specs);
        let victim = reads[reads.len() / 2];
        g.specs[victim].1 = Read(Some(-1));
        let r = check_specs(&g.specs);
        assert_eq!(r.valid, Validity::Invalid, "seed {seed}: {}", r.summary());
    }
}

/// Finds a read invoked after a write of `v` was overwritten by another write
/// that completed before the read: reading `v` there is stale, whatever the order.
fn stale_read(specs: &[Spec]) -> Option<(usize, i64)> {
    let done = |s: &Spec| match s.3 {
        Done(t) => Some(t),
        _ => None,
    };
    let writes: Vec<(i64, u64, u64)> = specs
        .iter()
        .filter_map(|s| match (&s.1, done(s)) {
            (Write(v) | Cas(_, v), Some(t)) => Some((*v, s.2, t)),
            _ => None,
        })
        .collect();
    for r in ok_reads(specs) {
        let read_invoke = specs[r].2;
        for &(v, _, first_done) in &writes {
            let overwritten =
                writes.iter().any(|&(w, invoke, done)| w != v && invoke > first_done && done < read_invoke);
            if overwritten && specs[r].1 != Read(Some(v)) {
                return Some((r, v));
            }
        }
    }
    None
}

#[test]
fn a_constructed_stale_read_is_always_found() {
    let mut found = 0;
    for seed in 0..20 {
        let mut g = generate(seed, 5, 120);
        let Some((read, v)) = stale_read(&g.specs) else { continue };
        g.specs[read].1 = Read(Some(v));
        let r = check_specs(&g.specs);
        assert_eq!(r.valid, Validity::Invalid, "seed {seed}: read #{read} → {v}: {}", r.summary());
        found += 1;
    }
    assert!(found >= 15, "only {found} of 20 seeds had a stale read to construct");
}

#[test]
fn most_random_corruptions_of_a_read_are_found() {
    let mut invalid = 0;
    let trials = 40;
    for seed in 0..trials {
        let mut g = generate(1000 + seed, 5, 120);
        let mut rng = Rng(seed);
        let reads = ok_reads(&g.specs);
        let victim = reads[rng.below(reads.len() as u64) as usize];
        let Read(Some(old)) = g.specs[victim].1 else { continue };
        // Another value that was written at some point.
        let values: Vec<i64> = g
            .specs
            .iter()
            .filter_map(|s| match (&s.1, s.3) {
                (Write(v) | Cas(_, v), Done(_)) if *v != old => Some(*v),
                _ => None,
            })
            .collect();
        g.specs[victim].1 = Read(Some(values[rng.below(values.len() as u64) as usize]));
        if check_specs(&g.specs).valid == Validity::Invalid {
            invalid += 1;
        }
    }
    assert!(invalid * 10 >= trials * 8, "only {invalid} of {trials} corruptions found");
}

#[test]
fn five_hundred_ops_of_five_processes_check_quickly() {
    let g = generate(7, 5, 500);
    let started = Instant::now();
    let r = check_specs(&g.specs);
    assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
    assert!(r.steps < 100_000, "{} steps", r.steps);
    let mut corrupted = g.specs.clone();
    let Some((read, v)) = stale_read(&corrupted) else { panic!("no stale read to construct") };
    corrupted[read].1 = Read(Some(v));
    let bad = check_specs(&corrupted);
    assert_eq!(bad.valid, Validity::Invalid, "{}", bad.summary());
    eprintln!(
        "500 ops: valid in {} steps, invalid in {} steps, both in {:?}",
        r.steps,
        bad.steps,
        started.elapsed()
    );
}

/// The definition, by brute force: some subset of the indeterminate
/// operations, with every definite one, has a legal order respecting real time.
fn brute_force(specs: &[Spec], initial: Option<i64>) -> bool {
    // (step, invoke, return) of the operations that take part
    let ops: Vec<(Step, u64, u64, bool)> = specs
        .iter()
        .filter_map(|(_, op, invoke, end)| {
            let (ret, info) = match end {
                Done(t) => (*t, false),
                Info(_) | Open => (u64::MAX, true),
                Fail(_) => return None,
            };
            let step = match op {
                Read(Some(v)) if !info => Step::Read(*v),
                Write(v) => Step::Write(*v),
                Cas(e, n) => Step::Cas(*e, *n),
                _ => return None,
            };
            Some((step, *invoke, ret, info))
        })
        .collect();
    fn search(ops: &[(Step, u64, u64, bool)], left: &mut Vec<usize>, value: Option<i64>) -> bool {
        if left.is_empty() {
            return true;
        }
        for k in 0..left.len() {
            let o = left[k];
            // o can go next if nothing left completed before it was invoked.
            if left.iter().any(|&q| ops[q].2 < ops[o].1) {
                continue;
            }
            if let Some(after) = apply(value, ops[o].0) {
                left.remove(k);
                let found = search(ops, left, after);
                left.insert(k, o);
                if found {
                    return true;
                }
            }
        }
        false
    }
    let info: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].3).collect();
    (0..1_u32 << info.len()).any(|mask| {
        let mut left: Vec<usize> = (0..ops.len())
            .filter(|i| !ops[*i].3 || info.iter().position(|j| j == i).is_some_and(|b| mask & (1 << b) != 0))
            .collect();
        search(&ops, &mut left, initial)
    })
}

/// Small random histories over few values (so that values repeat): the
/// search, with its reductions, agrees with the brute force.
#[test]
fn the_search_agrees_with_brute_force_on_small_histories() {
    let mut rng = Rng(2024);
    let (mut valid, mut invalid) = (0, 0);
    for round in 0..3000 {
        let mut specs: Vec<Spec> = Vec::new();
        let mut clock = [0_u64; 3];
        for _ in 0..(3 + rng.below(5)) {
            let p = rng.below(3) as usize;
            let invoke = clock[p] + rng.below(4);
            let complete = invoke + 1 + rng.below(6);
            clock[p] = complete + 1;
            let v = rng.below(3) as i64;
            let op = match rng.below(3) {
                0 => Read(Some(v)),
                1 => Write(v),
                _ => Cas(v, rng.below(3) as i64),
            };
            let end = match (rng.below(10), &op) {
                (0..=1, Write(_) | Cas(..)) => Info(complete),
                (2, _) => Fail(complete),
                _ => Done(complete),
            };
            specs.push((p as u32 + 10 * specs.len() as u32, op, invoke, end));
        }
        for initial in [Some(0), None] {
            let expected = brute_force(&specs, initial);
            let r = verdict(&specs, initial);
            let got = r.valid == Validity::Valid;
            assert_eq!(got, expected, "round {round}, initial {initial:?}: {specs:?}\n{}", r.summary());
            if expected { valid += 1 } else { invalid += 1 }
        }
    }
    assert!(valid > 1000 && invalid > 1000, "{valid} valid, {invalid} invalid: both kinds are exercised");
}

/// Figures for the docs: `cargo test --release -p jepsen-lite scaling -- --ignored --nocapture`.
#[test]
#[ignore = "prints timings; run in release"]
fn scaling() {
    for (procs, n) in [(5, 500), (5, 2_000), (10, 2_000), (5, 10_000), (20, 10_000)] {
        let g = generate(42, procs, n);
        let started = Instant::now();
        let r = check_specs(&g.specs);
        let valid_time = started.elapsed();
        let mut bad = g.specs.clone();
        let last = stale_read(&bad[bad.len() * 9 / 10..]).map(|(i, v)| (i + bad.len() * 9 / 10, v));
        let corrupted = last.map(|(i, v)| {
            bad[i].1 = Read(Some(v));
            let started = Instant::now();
            let r = check_specs(&bad);
            (r.valid, r.steps, started.elapsed())
        });
        eprintln!(
            "{procs} processes, {n} ops ({} indeterminate): {:?} in {} steps, {valid_time:?}; \
             stale read near the end: {corrupted:?}",
            r.indeterminate, r.valid, r.steps
        );
    }
}
