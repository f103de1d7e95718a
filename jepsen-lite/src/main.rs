//! `jepsen-lite`: checks a run directory's history.
//!
//! Exit status: 0 when no checker found a violation, 1 when one did, 2 on bad
//! input (arguments, an unreadable or malformed history or `checker.json`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jepsen_lite::run_dir::RunDir;

#[derive(Debug, Parser)]
#[command(name = "jepsen-lite", about = "ferry's partition test suite")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
            ExitCode::from(if checked.results.valid { 0 } else { 1 })
        }
        Err(e) => {
            eprintln!("jepsen-lite: {e}");
            ExitCode::from(2)
        }
    }
}
