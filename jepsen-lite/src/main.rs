//! `jepsen-lite`: runs the partition suite against real `ferryd` processes
//! (`test`) and checks a run directory's history (`check`).
//!
//! Exit status (`test` and `check` alike):
//! - 0: every checker decided, and none found a violation;
//! - 1: a checker found a violation;
//! - 2: no verdict: bad input (arguments, an unreadable or malformed history
//!   or `checker.json`), a machine that cannot run the suite (not root, no
//!   `ip`/`iptables`), or a run that broke down; nothing was checked;
//! - 3: undecided: the history was checked and the results written, no
//!   violation was found, but some checker could not decide (a search past
//!   its budget, a fault never healed). A distinct code, not 2, because the
//!   run and its files are complete and the remedy differs (a larger budget,
//!   a longer run); see [`jepsen_lite::results::EXIT_UNDECIDED`].

use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

use clap::{Parser, Subcommand};
use jepsen_lite::nemesis::Nemesis;
use jepsen_lite::run::{RunError, TestOptions, Workload};
use jepsen_lite::run_dir::RunDir;

/// The names ferryd's `FERRYD_UNSAFE_FAULT` takes.
const UNSAFE_FAULTS: [&str; 3] = ["stale-reads", "no-write-deadline", "skip-sync"];
/// `--quick`'s windows: short faults, shorter heals, one long partition.
const QUICK_FAULT: Duration = Duration::from_secs(7);
const QUICK_HEAL: Duration = Duration::from_secs(3);
const QUICK_LONG_FAULT: Duration = Duration::from_secs(20);

#[derive(Debug, Parser)]
#[command(name = "jepsen-lite", about = "ferry's partition test suite")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the suite against real ferryd processes in network namespaces (needs root),
    /// then check the history. Prints the seed; the same seed replays the same schedule.
    Test(TestArgs),
    /// The echo backend the traffic workload uses (started by `test` in every node namespace).
    #[command(hide = true)]
    Backend {
        #[arg(long)]
        name: String,
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    /// Re-check a saved run: read RUN_DIR/history.jsonl (and RUN_DIR/checker.json if present),
    /// write results.json, summary.txt and report.html there, and print the summary.
    Check {
        /// The run directory.
        run_dir: PathBuf,
        /// Search steps of the linearizability checker before it answers unknown
        /// (overrides checker.json).
        #[arg(long)]
        max_steps: Option<u64>,
    },
}

#[derive(Debug, clap::Args)]
struct TestArgs {
    /// Every nemesis once on 5 nodes with all three workloads (about 3 minutes); the CI suite.
    #[arg(long, conflicts_with_all = ["nemesis", "time"])]
    quick: bool,
    /// Number of ferryd nodes (1-9).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Workloads, comma-separated: register, set, traffic.
    #[arg(long, value_delimiter = ',', default_value = "register")]
    workload: Vec<String>,
    /// Nemeses, comma-separated: partition-random-halves, partition-majorities-ring, bridge,
    /// isolate-leader, partition-random-node, partition-one-way, partition-long, packet-loss,
    /// lagging-node, kill, pause, kill-all, power-loss, membership, bootstrap-partition; or all.
    #[arg(long, value_delimiter = ',', default_value = "partition-random-halves")]
    nemesis: Vec<String>,
    /// Seconds of faults (fault and heal windows in turn).
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// Seconds each fault lasts.
    #[arg(long, default_value_t = 10)]
    fault_secs: u64,
    /// Seconds of healed cluster after each fault.
    #[arg(long, default_value_t = 10)]
    heal_secs: u64,
    /// Seconds a partition-long fault lasts.
    #[arg(long, default_value_t = 150)]
    long_fault_secs: u64,
    /// Seed of every random choice (default: from the clock; printed at the start).
    #[arg(long)]
    seed: Option<u64>,
    /// Client processes per workload.
    #[arg(long, default_value_t = 3)]
    concurrency: usize,
    /// Resends (same request id) of a register write whose outcome was unknown; 0 leaves
    /// indeterminate writes alone, which bounded_indeterminacy needs to see a late one.
    #[arg(long, default_value_t = jepsen_lite::workload::register::RETRIES)]
    register_retries: usize,
    /// The ferryd binary (default: next to jepsen-lite).
    #[arg(long)]
    ferryd: Option<PathBuf>,
    /// Where to write the run (default: jepsen-runs/<seed>-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Turn on ferryd's fault switch (FERRYD_UNSAFE_FAULT) on every node, e.g. stale-reads:
    /// the run must then be found invalid. A comma-separated list: stale-reads,
    /// no-write-deadline, skip-sync.
    #[arg(long, value_name = "FAULT")]
    unsafe_fault: Option<String>,
    /// ferryd's log filter (its RUST_LOG) on every node, e.g. info,openraft=debug.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    ferryd_log: String,
}

impl TestArgs {
    fn options(&self) -> Result<TestOptions, String> {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
        let (nodes, workloads, nemeses, fault, heal, time) = if self.quick {
            let (f, h) = (QUICK_FAULT, QUICK_HEAL);
            // Every scheduled nemesis once (membership runs beside them, the
            // bootstrap partition before them), partition-long the longest.
            let scheduled = Nemesis::ALL.len() as u32 - 2;
            let time = (f + h) * (scheduled - 1) + QUICK_LONG_FAULT + h;
            (5, vec![Workload::Register, Workload::Set, Workload::Traffic], Nemesis::ALL.to_vec(), f, h, time)
        } else {
            let workloads = self.workload.iter().map(|w| w.parse()).collect::<Result<Vec<Workload>, _>>()?;
            let nemeses = if self.nemesis.iter().any(|n| n == "all") {
                Nemesis::ALL.to_vec()
            } else {
                self.nemesis.iter().map(|n| n.parse()).collect::<Result<Vec<Nemesis>, _>>()?
            };
            if self.nodes == 0 || self.nodes > 9 {
                return Err(format!("--nodes: must be 1 to 9, got {}", self.nodes));
            }
            if self.fault_secs == 0 || self.time == 0 || self.long_fault_secs == 0 {
                return Err("--time, --fault-secs and --long-fault-secs must be greater than 0".into());
            }
            let (f, h) = (Duration::from_secs(self.fault_secs), Duration::from_secs(self.heal_secs));
            (self.nodes, workloads, nemeses, f, h, Duration::from_secs(self.time))
        };
        if let Some(faults) = &self.unsafe_fault
            && let Some(f) = faults.split(',').find(|f| !UNSAFE_FAULTS.contains(f))
        {
            return Err(format!(
                "--unsafe-fault: unknown fault {f:?} (expected {})",
                UNSAFE_FAULTS.join(", ")
            ));
        }
        let ferryd = match &self.ferryd {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("ferryd")))
                .ok_or("--ferryd: cannot locate ferryd next to jepsen-lite; pass --ferryd")?,
        };
        let run_dir = self.out.clone().unwrap_or_else(|| {
            let t =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            PathBuf::from("jepsen-runs").join(format!("{seed}-{t}"))
        });
        Ok(TestOptions {
            nodes,
            workloads,
            nemeses,
            time,
            fault,
            long_fault: if self.quick { QUICK_LONG_FAULT } else { Duration::from_secs(self.long_fault_secs) },
            heal,
            settle: Duration::from_secs(10),
            seed,
            ferryd,
            run_dir,
            concurrency: self.concurrency,
            register_retries: self.register_retries,
            unsafe_fault: self.unsafe_fault.clone(),
            ferryd_log: self.ferryd_log.clone(),
        })
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Check { run_dir, max_steps } => check(RunDir::new(run_dir), max_steps),
        Command::Test(args) => test(&args),
        Command::Backend { name, listen } => backend(name, listen),
    }
}

fn test(args: &TestArgs) -> ExitCode {
    let opts = match args.options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("jepsen-lite: {e}");
            return ExitCode::from(2);
        }
    };
    match jepsen_lite::run::run(&opts) {
        Ok(checked) => {
            print!("{}", checked.summary);
            println!("seed {}; report: {}", opts.seed, opts.run_dir.join("report.html").display());
            ExitCode::from(checked.results.exit_status())
        }
        Err(RunError::Prereq(e)) => {
            eprintln!("jepsen-lite: {e}");
            ExitCode::from(2)
        }
        Err(RunError::Failed(e)) => {
            eprintln!("jepsen-lite: the run failed (seed {}): {e:#}", opts.seed);
            ExitCode::from(2)
        }
    }
}

fn backend(name: String, listen: std::net::SocketAddr) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jepsen-lite backend: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(jepsen_lite::backend::serve(name, listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jepsen-lite backend: cannot listen on {listen}: {e}");
            ExitCode::from(1)
        }
    }
}

fn check(run: RunDir, max_steps: Option<u64>) -> ExitCode {
    let checked = run.load_config().and_then(|mut config| {
        if let Some(steps) = max_steps {
            config.linearizable.max_steps = steps;
        }
        run.check(&config)
    });
    match checked {
        Ok(checked) => {
            print!("{}", checked.summary);
            println!("wrote {}", run.results_path().display());
            ExitCode::from(checked.results.exit_status())
        }
        Err(e) => {
            eprintln!("jepsen-lite: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(args: &[&str]) -> Result<TestOptions, String> {
        let cli =
            Cli::try_parse_from(["jepsen-lite", "test"].iter().chain(args)).map_err(|e| e.to_string())?;
        match cli.command {
            Command::Test(t) => t.options(),
            other => Err(format!("parsed as {other:?}")),
        }
    }

    #[test]
    fn quick_runs_every_nemesis_once_in_about_three_minutes() -> Result<(), String> {
        let o = options(&["--quick", "--seed", "1"])?;
        assert_eq!(o.nemeses, Nemesis::ALL.to_vec());
        assert_eq!(o.long_fault, QUICK_LONG_FAULT);
        // The bootstrap partition, the schedule and the settle time.
        let total = o.fault + o.time + o.settle;
        assert!(total <= Duration::from_secs(165), "{total:?}");
        let mut rng = fastrand::Rng::with_seed(1);
        let scheduled: Vec<Nemesis> = Nemesis::ALL
            .into_iter()
            .filter(|n| !matches!(n, Nemesis::Membership | Nemesis::BootstrapPartition))
            .collect();
        let timing = jepsen_lite::nemesis::Timing { fault: o.fault, long_fault: o.long_fault, heal: o.heal };
        let windows = jepsen_lite::nemesis::schedule(&scheduled, timing, o.time, &mut rng);
        assert_eq!(windows.len(), scheduled.len(), "each once: {windows:?}");
        Ok(())
    }

    #[test]
    fn all_names_every_nemesis_and_long_faults_are_set_apart() -> Result<(), String> {
        let o = options(&["--nemesis", "all", "--long-fault-secs", "120"])?;
        assert_eq!(o.nemeses, Nemesis::ALL.to_vec());
        assert_eq!(o.long_fault, Duration::from_secs(120));
        let e = options(&["--long-fault-secs", "0"]).expect_err("zero");
        assert!(e.contains("--long-fault-secs"), "{e}");
        Ok(())
    }
}
