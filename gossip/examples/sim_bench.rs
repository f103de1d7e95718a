//! The dissemination benchmark of `ops/bench/gossip.sh`: the in-memory foca
//! cluster of `ferry_gossip::sim` (no sockets, virtual time, 1 ms one-way
//! latency) at several sizes, for the `lan` and `fast` profiles.
//!
//! ```text
//! cargo run --release -p ferry-gossip --example sim_bench -- \
//!     [--sizes 10,30,100,300,1000] [--profiles lan,fast] [--seeds 3] [--step-ms 5]
//!     [--expected-members M]
//! ```
//!
//! `expected_members` (which scales foca's retransmissions, and the `lan`
//! suspicion timeout) is the cluster size unless `--expected-members` fixes it.
//!
//! Prints one JSON object per line on stdout, one per (profile, size, seed,
//! event):
//! - `"event":"crash"`: member n/2 stops (no leave). `first_down_ms` is when
//!   the first member declared it down (probe, suspicion), `all_down_ms` when
//!   the last one did; `spread_ms = all_down_ms - first_down_ms` is the
//!   dissemination part, also in gossip intervals (`spread_gossip_rounds`)
//!   and probe periods (`spread_probe_rounds`).
//! - `"event":"join"`: a new member announces itself to member 0;
//!   `all_up_ms` is when the last member reported it up, also in gossip
//!   intervals and probe periods.
//!
//! `packets_per_member_per_s` counts every datagram sent during the
//! measurement. `first_down_ms` has a resolution of `--step-ms`; the other
//! times are exact in virtual time.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ferry_gossip::GossipConfig;
use ferry_gossip::sim::SimCluster;

struct Args {
    sizes: Vec<usize>,
    profiles: Vec<String>,
    seeds: u64,
    step: Duration,
    expected_members: Option<u32>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        sizes: vec![10, 30, 100, 300, 1000],
        profiles: vec!["lan".to_owned(), "fast".to_owned()],
        seeds: 3,
        step: Duration::from_millis(5),
        expected_members: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--sizes" => {
                args.sizes = value
                    .split(',')
                    .map(|s| s.trim().parse::<usize>().map_err(|e| format!("--sizes {s}: {e}")))
                    .collect::<Result<_, _>>()?;
                if args.sizes.iter().any(|n| *n < 3) {
                    return Err("--sizes: every size must be at least 3".to_owned());
                }
            }
            "--profiles" => {
                args.profiles = value.split(',').map(|s| s.trim().to_owned()).collect();
                if let Some(bad) = args.profiles.iter().find(|p| *p != "lan" && *p != "fast") {
                    return Err(format!("--profiles: unknown profile {bad} (lan or fast)"));
                }
            }
            "--seeds" => args.seeds = value.parse().map_err(|e| format!("--seeds: {e}"))?,
            "--step-ms" => {
                let ms: u64 = value.parse().map_err(|e| format!("--step-ms: {e}"))?;
                if ms == 0 {
                    return Err("--step-ms must be > 0".to_owned());
                }
                args.step = Duration::from_millis(ms);
            }
            "--expected-members" => {
                let m: u32 = value.parse().map_err(|e| format!("--expected-members: {e}"))?;
                args.expected_members = Some(m);
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.seeds == 0 {
        return Err("--seeds must be > 0".to_owned());
    }
    Ok(args)
}

fn config(profile: &str, n: usize, expected: Option<u32>) -> Result<GossipConfig, String> {
    let expected_members = match expected {
        Some(m) => m,
        None => u32::try_from(n).map_err(|_| format!("size {n} too large"))?,
    };
    let base = if profile == "fast" { GossipConfig::fast("sim-bench") } else { GossipConfig::default() };
    GossipConfig { cluster_id: "sim-bench".to_owned(), expected_members, ..base }
        .validate()
        .map_err(|e| e.to_string())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sim_bench: {e}");
            return ExitCode::from(2);
        }
    };
    for profile in &args.profiles {
        for &n in &args.sizes {
            let cfg = match config(profile, n, args.expected_members) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("sim_bench: {profile} n={n}: {e}");
                    return ExitCode::from(2);
                }
            };
            let t = cfg.timings();
            let foca = cfg.foca_config();
            let warmup = t.probe_period * 5;
            // a generous bound: several times the crash-to-down bound
            let limit = (cfg.detection_bound() + foca.suspect_to_down_after) * 4 + Duration::from_secs(5);
            let log2n = (n as f64).log2();
            let common = |seed: u64| {
                format!(
                    "\"profile\":\"{profile}\",\"n\":{n},\"seed\":{seed},\"log2_n\":{log2n:.3},\
                     \"expected_members\":{},\"probe_period_ms\":{},\"gossip_interval_ms\":{},\"suspect_to_down_ms\":{},\"max_transmissions\":{}",
                    cfg.expected_members,
                    ms(t.probe_period),
                    ms(t.gossip_interval),
                    ms(foca.suspect_to_down_after),
                    foca.max_transmissions.get()
                )
            };
            for seed in 1..=args.seeds {
                // crash: stepwise, so that the first declaration is seen too
                let wall = Instant::now();
                let mut sim = SimCluster::new(n, &cfg, seed);
                sim.run_for(warmup);
                let victim = n / 2;
                let (mut elapsed, mut packets) = (Duration::ZERO, 0_u64);
                let mut first_down: Option<Duration> = None;
                let mut last = None;
                while elapsed < limit {
                    let r = sim.measure_crash(victim, args.step);
                    elapsed += r.elapsed;
                    packets += r.packets;
                    if first_down.is_none() && r.reached > 0 {
                        first_down = Some(elapsed);
                    }
                    let done = r.reached == r.expected;
                    last = Some(r);
                    if done {
                        break;
                    }
                }
                let Some(r) = last else { continue };
                let complete = r.reached == r.expected;
                let first = first_down.unwrap_or(elapsed);
                let spread = elapsed.saturating_sub(first);
                let secs = elapsed.as_secs_f64().max(f64::EPSILON);
                println!(
                    "{{\"event\":\"crash\",{},\"expected\":{},\"reached\":{},\"complete\":{complete},\
                     \"first_down_ms\":{:.1},\"all_down_ms\":{:.1},\"spread_ms\":{:.1},\
                     \"all_down_probe_rounds\":{:.2},\"spread_probe_rounds\":{:.2},\"spread_gossip_rounds\":{:.2},\
                     \"packets\":{packets},\"packets_per_member_per_s\":{:.2},\"wall_s\":{:.2}}}",
                    common(seed),
                    r.expected,
                    r.reached,
                    ms(first),
                    ms(elapsed),
                    ms(spread),
                    elapsed.as_secs_f64() / t.probe_period.as_secs_f64(),
                    spread.as_secs_f64() / t.probe_period.as_secs_f64(),
                    spread.as_secs_f64() / t.gossip_interval.as_secs_f64(),
                    packets as f64 / n as f64 / secs,
                    wall.elapsed().as_secs_f64(),
                );

                // join: a fresh cluster with the same seed
                let wall = Instant::now();
                let mut sim = SimCluster::new(n, &cfg, seed);
                sim.run_for(warmup);
                let r = sim.measure_join(limit);
                println!(
                    "{{\"event\":\"join\",{},\"expected\":{},\"reached\":{},\"complete\":{},\
                     \"all_up_ms\":{:.1},\"all_up_probe_rounds\":{:.2},\"all_up_gossip_rounds\":{:.2},\
                     \"packets\":{},\"packets_per_member_per_s\":{:.2},\"wall_s\":{:.2}}}",
                    common(seed),
                    r.expected,
                    r.reached,
                    r.reached == r.expected,
                    ms(r.elapsed),
                    r.rounds,
                    r.elapsed.as_secs_f64() / t.gossip_interval.as_secs_f64(),
                    r.packets,
                    r.packets_per_member_per_sec,
                    wall.elapsed().as_secs_f64(),
                );
            }
        }
    }
    ExitCode::SUCCESS
}
