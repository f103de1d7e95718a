//! Histories generated from real executions of registers (valid, and made
//! invalid on purpose), the brute-force cross-check, and the scaling figures.

use super::*;
use End::{Fail, Info, Ok as Done, Open};
use Op::{Cas, Read, Write};

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

/// A generated history: (key, operation), in each process's order.
struct Generated {
    specs: Vec<(u32, Spec)>,
}

/// Runs `n` random operations of `procs` processes against `keys` real
/// registers: each takes effect at a random instant inside its interval, so
/// the history is linearizable. Written values are unique over every key,
/// and never 0 (the initial value).
fn generate(seed: u64, procs: u32, n: usize, keys: u32) -> Generated {
    generate_values(seed, procs, n, keys, None)
}

/// As [`generate`], with written values drawn from `1..=values` when given
/// (so that they repeat, as in a register of few values) instead of unique.
fn generate_values(seed: u64, procs: u32, n: usize, keys: u32, values: Option<u64>) -> Generated {
    let mut rng = Rng(seed);
    // (process, key, kind, invoke, complete, effect instant, indeterminate, happens)
    let mut planned = Vec::new();
    let mut clock = vec![0_u64; procs as usize];
    let mut fresh = 1_i64;
    for _ in 0..n {
        let p = rng.below(u64::from(procs)) as u32;
        let key = rng.below(u64::from(keys)) as u32;
        let invoke = clock[p as usize] + rng.below(50);
        let complete = invoke + 1 + rng.below(100);
        clock[p as usize] = complete + 1;
        let at = invoke + rng.below(complete - invoke + 1);
        let kind = rng.below(10);
        let indeterminate = kind >= 4 && rng.chance(5);
        let happens = !indeterminate || rng.chance(50);
        planned.push((p, key, kind, invoke, complete, at, indeterminate, happens));
    }
    // Apply in effect order.
    let mut order: Vec<usize> = (0..planned.len()).collect();
    order.sort_by_key(|&i| (planned[i].5, i));
    let mut value = vec![0_i64; keys as usize];
    let mut written = vec![vec![0_i64]; keys as usize];
    let mut ops: Vec<Option<(Op, bool)>> = vec![None; planned.len()];
    for i in order {
        let (_, key, kind, _, _, _, _, happens) = planned[i];
        let k = key as usize;
        let (op, ok) = match kind {
            0..=3 => (Read(Some(value[k])), true),
            4..=6 => {
                fresh = next_value(&mut rng, fresh, values);
                (Write(fresh), true)
            }
            _ => {
                fresh = next_value(&mut rng, fresh, values);
                // Mostly expect the current value, sometimes an older one.
                let expected = if rng.chance(70) {
                    value[k]
                } else {
                    written[k][rng.below(written[k].len() as u64) as usize]
                };
                (Cas(expected, fresh), expected == value[k])
            }
        };
        if happens
            && ok
            && let Write(v) | Cas(_, v) = op
        {
            value[k] = v;
            written[k].push(v);
        }
        ops[i] = Some((op, ok));
    }
    let mut specs = Vec::new();
    // As in Jepsen, a process whose operation is indeterminate is retired for a new one.
    let mut id: Vec<u32> = (0..procs).collect();
    let mut next_id = procs;
    for (i, (p, key, _, invoke, complete, _, indeterminate, _)) in planned.into_iter().enumerate() {
        let Some((op, ok)) = ops[i].take() else { continue };
        let end = match (indeterminate, ok) {
            (true, _) if complete % 2 == 0 => Open,
            (true, _) => Info(complete),
            (false, true) => Done(complete),
            (false, false) => Fail(complete),
        };
        specs.push((key, (id[p as usize], op, invoke, end)));
        if indeterminate {
            id[p as usize] = next_id;
            next_id += 1;
        }
    }
    Generated { specs }
}

/// The next written value: a fresh one, or one of `1..=values`.
fn next_value(rng: &mut Rng, fresh: i64, values: Option<u64>) -> i64 {
    match values {
        Some(n) => 1 + rng.below(n) as i64,
        None => fresh + 1,
    }
}

fn check_specs(specs: &[(u32, Spec)]) -> LinearizableReport {
    check(&keyed_history(specs), &Config { initial: Some(0), ..Config::default() })
}

#[test]
fn generated_histories_are_linearizable() {
    for seed in 0..40 {
        let g = generate(seed, 5, 120, 1 + seed as u32 % 3);
        let r = check_specs(&g.specs);
        assert_eq!(r.valid, Validity::Valid, "seed {seed}: {}", r.summary());
    }
}

fn ok_reads(specs: &[(u32, Spec)]) -> Vec<usize> {
    specs
        .iter()
        .enumerate()
        .filter(|(_, (_, s))| matches!(s, (_, Read(Some(_)), _, Done(_))))
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn a_read_of_a_value_never_written_is_always_found() {
    for seed in 0..20 {
        let mut g = generate(seed, 5, 120, 1 + seed as u32 % 3);
        let reads = ok_reads(&g.specs);
        let victim = reads[reads.len() / 2];
        g.specs[victim].1.1 = Read(Some(-1));
        let r = check_specs(&g.specs);
        assert_eq!(r.valid, Validity::Invalid, "seed {seed}: {}", r.summary());
        assert_eq!(r.invalid_keys, vec![g.specs[victim].0], "seed {seed}");
    }
}

/// Finds a read invoked after a write of `v` on its key was overwritten by
/// another write that completed before the read: reading `v` there is
/// stale, whatever the order. Looks at reads from `from` on.
fn stale_read(specs: &[(u32, Spec)], from: usize) -> Option<(usize, i64)> {
    let done = |s: &Spec| match s.3 {
        Done(t) => Some(t),
        _ => None,
    };
    let writes: Vec<(u32, i64, u64, u64)> = specs
        .iter()
        .filter_map(|(key, s)| match (&s.1, done(s)) {
            (Write(v) | Cas(_, v), Some(t)) => Some((*key, *v, s.2, t)),
            _ => None,
        })
        .collect();
    // Every write of a value that may have taken effect: (key, value, latest instant).
    let may_write: Vec<(u32, i64, u64)> = specs
        .iter()
        .filter_map(|(key, s)| match (&s.1, s.3) {
            (Write(v) | Cas(_, v), Done(t)) => Some((*key, *v, t)),
            (Write(v) | Cas(_, v), Info(_) | Open) => Some((*key, *v, u64::MAX)),
            _ => None,
        })
        .collect();
    for r in ok_reads(specs).into_iter().filter(|&r| r >= from) {
        let (key, read) = &specs[r];
        for &(k, v, _, first_done) in writes.iter().filter(|w| w.0 == *key) {
            // Overwritten by a write of another value after every write of v.
            let overwritten = writes.iter().any(|&(k2, w, invoke, done)| {
                k2 == k
                    && w != v
                    && invoke > first_done
                    && done < read.2
                    && may_write.iter().all(|&(k3, x, until)| k3 != k || x != v || until < invoke)
            });
            if overwritten && read.1 != Read(Some(v)) {
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
        let mut g = generate(seed, 5, 120, 1 + seed as u32 % 3);
        let Some((read, v)) = stale_read(&g.specs, 0) else { continue };
        g.specs[read].1.1 = Read(Some(v));
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
        let mut g = generate(1000 + seed, 5, 120, 1);
        let mut rng = Rng(seed);
        let reads = ok_reads(&g.specs);
        let victim = reads[rng.below(reads.len() as u64) as usize];
        let Read(Some(old)) = g.specs[victim].1.1 else { continue };
        // Another value that was written at some point.
        let values: Vec<i64> = g
            .specs
            .iter()
            .filter_map(|(_, s)| match (&s.1, s.3) {
                (Write(v) | Cas(_, v), Done(_)) if *v != old => Some(*v),
                _ => None,
            })
            .collect();
        g.specs[victim].1.1 = Read(Some(values[rng.below(values.len() as u64) as usize]));
        if check_specs(&g.specs).valid == Validity::Invalid {
            invalid += 1;
        }
    }
    assert!(invalid * 10 >= trials * 8, "only {invalid} of {trials} corruptions found");
}

#[test]
fn five_hundred_ops_of_five_processes_check_quickly() {
    let g = generate(7, 5, 500, 1);
    let started = Instant::now();
    let r = check_specs(&g.specs);
    assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
    assert!(r.steps < 100_000, "{} steps", r.steps);
    let mut corrupted = g.specs.clone();
    let Some((read, v)) = stale_read(&corrupted, 0) else { panic!("no stale read to construct") };
    corrupted[read].1.1 = Read(Some(v));
    let bad = check_specs(&corrupted);
    assert_eq!(bad.valid, Validity::Invalid, "{}", bad.summary());
    eprintln!(
        "500 ops: valid in {} steps, invalid in {} steps, both in {:?}",
        r.steps,
        bad.steps,
        started.elapsed()
    );
}

/// Twenty processes, 10,000 operations on 10 keys, and the same with a
/// stale read near the end: both decided within an 8 MiB memo. (On one
/// register, 20 processes and 10,000 operations reached the 512 MiB cap when
/// every memoized state held a bitset of every operation.)
#[test]
fn twenty_processes_on_ten_keys_are_decided_within_a_small_memo() {
    let config = Config { initial: Some(0), max_cache_bytes: 8 << 20, ..Config::default() };
    let g = generate(42, 20, 10_000, 10);
    let r = check(&keyed_history(&g.specs), &config);
    assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
    let mut bad = g.specs.clone();
    let Some((read, v)) = stale_read(&bad, bad.len() * 9 / 10) else { panic!("no stale read to construct") };
    bad[read].1.1 = Read(Some(v));
    let r = check(&keyed_history(&bad), &config);
    assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
}

/// Twenty processes and 10,000 operations on one register: without
/// reduction 4 (a value needed that nothing left can write) the search took
/// 2.3 M steps; with it, tens of thousands, and the stale read is found at
/// once.
#[test]
fn values_nothing_can_write_again_cut_the_search() {
    let config = Config { initial: Some(0), max_steps: 200_000, ..Config::default() };
    let g = generate(42, 20, 10_000, 1);
    let r = check(&keyed_history(&g.specs), &config);
    assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
    let mut bad = g.specs.clone();
    let Some((read, v)) = stale_read(&bad, bad.len() * 9 / 10) else { panic!("no stale read to construct") };
    bad[read].1.1 = Read(Some(v));
    let r = check(&keyed_history(&bad), &config);
    assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
    assert!(r.steps < 1_000, "{} steps", r.steps);
    let violation = r.violation.expect("explained");
    assert_eq!(violation.op, read, "the stale read is named: {}", violation.explanation);
}

/// The definition, by brute force: some subset of the indeterminate
/// operations, with every definite one, has a legal order of every key's
/// operations respecting real time (keys are not separated, so the
/// partition by key is checked too).
fn brute_force(specs: &[(u32, Spec)], initial: Option<i64>) -> bool {
    // (key, step, invoke, return, indeterminate) of the operations that take part
    type BruteOp = (usize, Step, u64, u64, bool);
    let ops: Vec<BruteOp> = specs
        .iter()
        .filter_map(|(key, (_, op, invoke, end))| {
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
            Some((*key as usize, step, *invoke, ret, info))
        })
        .collect();
    fn search(ops: &[BruteOp], left: &mut Vec<usize>, values: &mut [Option<i64>]) -> bool {
        if left.is_empty() {
            return true;
        }
        for k in 0..left.len() {
            let o = left[k];
            let (key, step, invoke, ..) = ops[o];
            // o can go next if nothing left completed before it was invoked.
            if left.iter().any(|&q| ops[q].3 < invoke) {
                continue;
            }
            if let Some(after) = apply(values[key], step) {
                let before = std::mem::replace(&mut values[key], after);
                left.remove(k);
                let found = search(ops, left, values);
                left.insert(k, o);
                values[key] = before;
                if found {
                    return true;
                }
            }
        }
        false
    }
    let keys = ops.iter().map(|o| o.0 + 1).max().unwrap_or(0);
    let info: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].4).collect();
    (0..1_u32 << info.len()).any(|mask| {
        let mut left: Vec<usize> = (0..ops.len())
            .filter(|i| !ops[*i].4 || info.iter().position(|j| j == i).is_some_and(|b| mask & (1 << b) != 0))
            .collect();
        search(&ops, &mut left, &mut vec![initial; keys])
    })
}

/// Small random histories over few values (so that values repeat), on one
/// key or two: the search, with its reductions, horizons and partition by
/// key, agrees with the brute force.
#[test]
fn the_search_agrees_with_brute_force_on_small_histories() {
    let mut rng = Rng(2024);
    let (mut valid, mut invalid, mut two_keys) = (0, 0, 0);
    for round in 0..3000 {
        let mut specs: Vec<(u32, Spec)> = Vec::new();
        let mut clock = [0_u64; 3];
        let keys = 1 + round % 2;
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
            let key = rng.below(keys) as u32;
            specs.push((key, (p as u32 + 10 * specs.len() as u32, op, invoke, end)));
        }
        for initial in [Some(0), None] {
            let expected = brute_force(&specs, initial);
            let r = check(&keyed_history(&specs), &Config { initial, ..Config::default() });
            let got = r.valid == Validity::Valid;
            assert_eq!(got, expected, "round {round}, initial {initial:?}: {specs:?}\n{}", r.summary());
            if expected {
                valid += 1
            } else {
                invalid += 1
            }
            two_keys += usize::from(r.keys == 2);
        }
    }
    assert!(valid > 1000 && invalid > 1000, "{valid} valid, {invalid} invalid: both kinds are exercised");
    assert!(two_keys > 2000, "{two_keys} checks of two keys");
}

/// Figures for the docs: `cargo test --release -p jepsen-lite scaling -- --ignored --nocapture`.
#[test]
#[ignore = "prints timings; run in release"]
fn scaling() {
    let runs = [
        (5, 500, 1, None),
        (5, 2_000, 1, None),
        (10, 2_000, 1, None),
        (5, 10_000, 1, None),
        (20, 10_000, 1, None),
        (30, 37_000, 1, None),
        (30, 37_000, 8, None),
        (30, 37_000, 100, None),
        (30, 37_000, 1, Some(5)),
        (30, 37_000, 1, Some(1_000)),
    ];
    for (procs, n, keys, values) in runs {
        let g = generate_values(42, procs, n, keys, values);
        let started = Instant::now();
        let r = check_specs(&g.specs);
        let valid_time = started.elapsed();
        let mut bad = g.specs.clone();
        // (Finding a stale read among repeated values is too slow here.)
        let stale = if values.is_none() { stale_read(&bad, bad.len() * 9 / 10) } else { None };
        let corrupted = stale.map(|(i, v)| {
            bad[i].1.1 = Read(Some(v));
            let started = Instant::now();
            let r = check_specs(&bad);
            (r.valid, r.steps, r.cache_entries, started.elapsed())
        });
        eprintln!(
            "{procs} processes, {n} ops on {keys} keys, values {values:?} ({} indeterminate): {:?} in {} steps, \
             {} memoized ({} bytes), {valid_time:?}; stale read near the end: {corrupted:?}",
            r.indeterminate, r.valid, r.steps, r.cache_entries, r.cache_bytes
        );
    }
}
