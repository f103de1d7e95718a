//! `ferryctl`: the operator's command line for a ferry cluster, over its
//! admin API (see README's "CLI reference").
//!
//! Exit status: 0 ok; 1 server or transport error; 2 bad usage, or input
//! refused (client-side validation, or a 400 from the server); 3 CAS
//! conflict (409 `cas_mismatch`); 4 not found (404). See [`out::Exit`].
//!
//! Layout: one module per command group (`status`, `members`, `route`,
//! `chaos`, `watch`), the global flags and the connection in [`ctx`],
//! output (tables, durations, errors and exit codes) in [`out`], route
//! and policy files in [`file`].

mod chaos;
mod ctx;
mod explain;
mod file;
mod members;
mod out;
mod route;
mod snapshot;
mod status;
mod watch;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use ctx::{Ctx, Global};
use out::{Exit, Failure};

/// The operator's command line for a ferry cluster.
///
/// Exit status: 0 ok; 1 server or transport error; 2 bad usage or input
/// refused (400); 3 CAS conflict (409 cas_mismatch); 4 not found (404).
#[derive(Debug, Parser)]
#[command(name = "ferryctl", version)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// This node: name, version, Raft role, leader, term, index, routing
    /// table, connections, uptime, cluster version.
    Status,
    /// Every member this node knows, with its gossip state and Raft
    /// membership.
    Members(members::MembersArgs),
    /// This node (the first --addr) joins the gossip of the members at
    /// ADDR (gossip addresses, HOST[:PORT], port 7946 by default).
    Join(members::JoinArgs),
    /// This node (the first --addr) leaves the cluster, drains and stops.
    Leave,
    /// Removes a member that is down from the cluster, by id or name.
    ForceLeave(members::ForceLeaveArgs),
    /// Routes: list, get, put, delete, set a backend's weight.
    #[command(subcommand)]
    Route(route::RouteCmd),
    /// Chaos policies: list, get, put, delete, add (quick form).
    #[command(subcommand)]
    Chaos(chaos::ChaosCmd),
    /// Prints each change of routes, chaos policies or members, or runs a
    /// command per change.
    Watch(watch::WatchArgs),
    /// The backends this node (the first answering --addr) would try for
    /// a client, in order, and why: hash key and ring point, owner node
    /// and its state, health, ejection, weight, chaos.
    Explain(explain::ExplainArgs),
    /// Backups of the cluster's config: save, inspect, restore.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCmd),
    /// Prints a shell completion script.
    Completion(CompletionArgs),
}

#[derive(Debug, clap::Args)]
struct CompletionArgs {
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Cmd::Completion(c) = &cli.cmd {
        let shell = match c.shell {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        };
        clap_complete::generate(shell, &mut Cli::command(), "ferryctl", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let ctx = match Ctx::new(&cli.global, &matches) {
        Ok(ctx) => ctx,
        Err(f) => return f.report(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return Failure::new(Exit::Error, format!("cannot start the runtime: {e}")).report(),
    };
    match runtime.block_on(run(&ctx, cli.cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(),
    }
}

async fn run(ctx: &Ctx, cmd: Cmd) -> Result<(), Failure> {
    match cmd {
        Cmd::Status => status::run(ctx).await,
        Cmd::Members(a) => members::list(ctx, &a).await,
        Cmd::Join(a) => members::join(ctx, &a).await,
        Cmd::Leave => members::leave(ctx).await,
        Cmd::ForceLeave(a) => members::force_leave(ctx, &a).await,
        Cmd::Route(c) => route::run(ctx, c).await,
        Cmd::Chaos(c) => chaos::run(ctx, c).await,
        Cmd::Watch(a) => watch::run(ctx, &a).await,
        Cmd::Explain(a) => explain::run(ctx, &a).await,
        Cmd::Snapshot(c) => snapshot::run(ctx, c).await,
        Cmd::Completion(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ferryctl").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere_and_durations_are_human() {
        let cli =
            parse(&["route", "list", "--addr", "a:1,b:2", "-o", "json", "--timeout", "1m30s", "--stale"])
                .expect("valid");
        assert_eq!(cli.global.addr, ["a:1", "b:2"]);
        assert_eq!(cli.global.output, ctx::Output::Json);
        assert_eq!(cli.global.timeout, std::time::Duration::from_secs(90));
        assert!(cli.global.stale);
        for bad in ["5", "5x", "ms", "-1s", "99999999999999999999h"] {
            let flag = format!("--timeout={bad}");
            let e = parse(&[&flag, "status"]).expect_err(bad);
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.to_string().contains("--timeout"), "{e}");
        }
        assert_eq!(parse(&["-o", "yaml", "status"]).expect_err("yaml").exit_code(), 2);
        assert_eq!(parse(&["route", "weight", "web", "a", "x"]).expect_err("weight").exit_code(), 2);
    }

    #[test]
    fn both_token_flags_are_refused() {
        let args = ["ferryctl", "--token", "t", "--token-file", "/x", "status"];
        let m = Cli::command().try_get_matches_from(args).expect("parses");
        let cli = Cli::from_arg_matches(&m).expect("parses");
        let e = Ctx::new(&cli.global, &m).expect_err("both");
        assert_eq!(e.exit, Exit::Usage);
        assert!(e.lines[0].contains("--token") && e.lines[0].contains("--token-file"), "{:?}", e.lines);
    }
}
