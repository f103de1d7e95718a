//! `ferryd`: the ferry node.
//!
//! Exit status: 0 after a clean shutdown or a valid `--check-config`; 2 for
//! bad arguments or configuration (one line per problem on stderr, naming the
//! field); 1 when the node cannot start (a port in use, …).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use ferry_client::snapshot::Snapshot;
use ferry_node::Node;
use ferry_node::config::{Config, ConfigErrors, Parsed};
use ferry_node::node::ApplyError;
use ferry_node::telemetry::tracing::{self as telemetry, LogFormat, TracingOptions};
use ferry_node::telemetry::tracing::{OTLP_ENDPOINT_ENV, check_otlp_endpoint, init as init_tracing};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

/// The three ways to run ferryd, shown by `--help` and when none is given.
const USAGE: &str = "\
ferryd --config FILE [OPTIONS]
       ferryd --data-dir DIR [--bind IP] [--name NAME] (--bootstrap-expect N | --join HOST[:PORT],...) [OPTIONS]
       ferryd --check-config FILE
       ferryd --restore-snapshot FILE (--config FILE | --data-dir DIR ...) [OPTIONS]";

/// A ferry node: an L4 (TCP) load balancer, configured from a TOML file or,
/// for a cluster node, from flags alone.
///
/// SIGHUP re-reads the file (routes only); SIGTERM or SIGINT stops accepting,
/// drains open connections for `[node] drain_timeout_ms` and exits 0; a second
/// signal closes the remaining connections at once. A cluster node keeps its
/// place on SIGTERM (it resumes on restart); `POST /v1/leave`, or
/// `[cluster] leave_on_terminate = true`, makes it leave first.
#[derive(Debug, Parser)]
#[command(name = "ferryd", version = ferry_node::version::LONG, override_usage = USAGE)]
struct Args {
    /// Configuration file to run with (optional when `--data-dir` is given:
    /// flags and defaults then make the whole configuration).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate FILE, print every problem (exit 2) or "ok" (exit 0), and exit.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// Admin API address; overrides `[admin] addr`.
    #[arg(long, value_name = "IP:PORT")]
    admin_addr: Option<SocketAddr>,
    /// Log format on stderr (text or json); overrides `[telemetry] log_format`.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// OTLP gRPC collector for traces, e.g. http://127.0.0.1:4317; overrides
    /// `[telemetry] otlp_endpoint` and OTEL_EXPORTER_OTLP_ENDPOINT ("" turns
    /// export off).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Node name, unique in the cluster; overrides `[node] name`.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Where the node keeps its id and cluster state; overrides
    /// `[node] data_dir`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// One IP for everything: `:PORT` route listeners, and the admin (7948),
    /// cluster (7947) and gossip (7946) addresses, keeping their ports.
    #[arg(long, value_name = "IP")]
    bind: Option<std::net::IpAddr>,
    /// Members to join, `HOST[:PORT]` (gossip port, 7946 by default),
    /// comma-separated; enables gossip. Overrides `[gossip] join`.
    #[arg(long, value_name = "HOST[:PORT],...", value_delimiter = ',')]
    join: Vec<String>,
    /// Form a new cluster once N members see each other; enables gossip.
    /// Overrides `[gossip] bootstrap_expect`.
    #[arg(long, value_name = "N")]
    bootstrap_expect: Option<usize>,
    /// Gossip timings, `lan` or `fast`; enables gossip. Overrides
    /// `[gossip] profile`.
    #[arg(long, value_name = "PROFILE")]
    gossip_profile: Option<String>,
    /// Seed a NEW cluster from a snapshot file (`GET /v1/snapshot`): its
    /// routes and chaos policies become the cluster's first config, instead
    /// of the file's routes. The data dir must hold no Raft state; the
    /// file's checksum is verified first. Start the other nodes of the new
    /// cluster as usual, with empty data dirs.
    #[arg(long, value_name = "FILE", conflicts_with = "check_config")]
    restore_snapshot: Option<PathBuf>,
}

impl Args {
    /// Reads the file (if any), applies flag overrides, validates: every
    /// problem of the file, the flags and the environment at once.
    fn load(&self, path: Option<&Path>) -> Result<Config, ConfigErrors> {
        let parsed = match path {
            Some(p) => Config::read_all(p),
            None => Parsed { config: Some(Config::default()), problems: Vec::new() },
        };
        parsed.validate(|config| self.apply_overrides(config, path.is_none()))
    }

    /// The flags' overrides, and the problems with flags and environment.
    fn apply_overrides(&self, config: &mut Config, no_file: bool) -> Vec<ferry_client::FieldError> {
        let mut problems = Vec::new();
        if let Err(ConfigErrors(e)) = self.apply_cluster_flags(config, no_file) {
            problems.extend(e);
        }
        if let Some(ip) = self.bind {
            config.node.bind_addr = ip;
            config.admin.addr.set_ip(ip);
            if let Some(c) = &mut config.cluster {
                c.addr.set_ip(ip);
            }
            if let Some(g) = &mut config.gossip {
                let port = g.addr.map_or(ferry_node::config::GOSSIP_PORT, |a| a.port());
                g.addr = Some(SocketAddr::new(ip, port));
            }
        }
        if let Some(a) = self.admin_addr {
            config.admin.addr = a;
        }
        if let Some(f) = self.log_format {
            config.telemetry.log_format = f;
        }
        if let Some(e) = &self.otlp_endpoint {
            config.telemetry.otlp_endpoint = Some(e.clone());
        }
        // The environment's endpoint is used only when neither the file nor
        // the flag sets one: check it then, with the same rules.
        if let (None, Ok(ep)) = (&config.telemetry.otlp_endpoint, std::env::var(OTLP_ENDPOINT_ENV))
            && let Err(e) = check_otlp_endpoint(&ep)
        {
            problems.push(ferry_client::FieldError::new(OTLP_ENDPOINT_ENV, e));
        }
        problems
    }

    /// `--name`, `--data-dir`, `--join`, `--bootstrap-expect`,
    /// `--gossip-profile`. Gossip flags (or running with no file at all)
    /// turn on `[cluster]` and `[gossip]` with their defaults.
    fn apply_cluster_flags(&self, config: &mut Config, no_file: bool) -> Result<(), ConfigErrors> {
        if let Some(n) = &self.name {
            config.node.name.clone_from(n);
        }
        if let Some(d) = &self.data_dir {
            config.node.data_dir = Some(d.clone());
        }
        let profile = match self.gossip_profile.as_deref() {
            None => None,
            Some("lan") => Some(ferry_gossip::Profile::Lan),
            Some("fast") => Some(ferry_gossip::Profile::Fast),
            Some(other) => {
                return Err(ConfigErrors(vec![ferry_client::FieldError::new(
                    "--gossip-profile",
                    format!("expected lan or fast, got {other:?}"),
                )]));
            }
        };
        let wants_gossip =
            no_file || !self.join.is_empty() || self.bootstrap_expect.is_some() || profile.is_some();
        if wants_gossip {
            config.cluster.get_or_insert_with(ferry_node::config::ClusterSection::with_defaults);
            let gossip = config.gossip.get_or_insert_with(Default::default);
            if !self.join.is_empty() {
                gossip.join.clone_from(&self.join);
            }
            if let Some(n) = self.bootstrap_expect {
                gossip.bootstrap_expect = n;
            }
            if let Some(p) = profile {
                gossip.profile = p;
            }
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.config.is_none() && args.check_config.is_none() && args.data_dir.is_none() {
        // Either a file or a data dir is enough to run: say so, rather than
        // clap's "--config is required".
        Args::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "give a configuration file (--config FILE), a data dir to run a cluster node from \
                 flags (--data-dir DIR), or a file to check (--check-config FILE)",
            )
            .exit();
    }
    if let Some(path) = &args.check_config {
        return match args.load(Some(path)) {
            Ok(c) => {
                let n = c.routes.len();
                println!("{}: ok ({n} route{})", path.display(), if n == 1 { "" } else { "s" });
                ExitCode::SUCCESS
            }
            Err(e) => config_failure(Some(path), &e),
        };
    }
    let path = args.config.clone();
    let config = match args.load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => return config_failure(path.as_deref(), &e),
    };
    let restore = match &args.restore_snapshot {
        None => None,
        Some(file) => match restore_preflight(file, &config) {
            Ok(s) => Some(s),
            Err(problems) => {
                eprintln!("ferryd: cannot restore {}:", file.display());
                for problem in problems {
                    eprintln!("{problem}");
                }
                return ExitCode::from(2);
            }
        },
    };
    raise_fd_limit();
    // The main runtime carries the control plane and the admin API; it
    // carries the data plane too only when there are no dedicated workers.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.node.workers > 0 {
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferryd: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(args, path, config, restore))
}

/// What `--restore-snapshot FILE` needs before anything starts: a cluster
/// node whose data dir holds no Raft state, and a snapshot file that
/// verifies. Every problem names the flag, field or setting.
fn restore_preflight(file: &Path, config: &Config) -> Result<Snapshot, Vec<String>> {
    let mut problems = Vec::new();
    if config.cluster.is_none() {
        problems.push(
            "--restore-snapshot: seeds a cluster, but this node runs standalone (no [cluster] section \
             or gossip flags)"
                .to_string(),
        );
    }
    match &config.node.data_dir {
        None => problems.push("node.data_dir: is required with --restore-snapshot".to_string()),
        Some(dir) => {
            let raft = dir.join("raft");
            let held = std::fs::read_dir(&raft).map(|mut d| d.next().is_some()).unwrap_or(false);
            if held {
                problems.push(format!(
                    "node.data_dir: {} already holds Raft state: a snapshot seeds only a new cluster, on \
                     empty data dirs (to replace a live cluster's config, use POST /v1/snapshot/restore)",
                    dir.display()
                ));
            }
        }
    }
    let snapshot = Snapshot::read_file(file).map_err(|e| {
        let mut all = problems.clone();
        all.extend(e.fields().iter().map(|f| format!("--restore-snapshot: {f}")));
        all
    })?;
    if !problems.is_empty() {
        return Err(problems);
    }
    if let Some(c) = &config.cluster
        && c.cluster_id != snapshot.cluster_id
    {
        // Allowed, and advised: a new id keeps survivors of the old
        // cluster out of the new one.
        eprintln!(
            "ferryd: restoring a snapshot of cluster {:?} into cluster {:?}",
            snapshot.cluster_id, c.cluster_id
        );
    }
    Ok(snapshot)
}

/// Prints one line per problem and returns exit status 2.
fn config_failure(path: Option<&Path>, e: &ConfigErrors) -> ExitCode {
    match path {
        Some(p) => eprintln!("ferryd: {} is invalid:", p.display()),
        None => eprintln!("ferryd: the configuration is invalid:"),
    }
    for problem in &e.0 {
        eprintln!("{problem}");
    }
    ExitCode::from(2)
}

async fn run(args: Args, path: Option<PathBuf>, config: Config, restore: Option<Snapshot>) -> ExitCode {
    let opts = TracingOptions {
        format: config.telemetry.log_format,
        otlp_endpoint: config.telemetry.otlp_endpoint.clone(),
        service_name: "ferryd".to_string(),
        node_name: config.node.name.clone(),
    };
    let guard = match init_tracing(&opts) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("ferryd: cannot set up logging: {e:#}");
            return ExitCode::from(1);
        }
    };
    let code = serve(&args, path.as_deref(), &config, restore).await;
    telemetry::TracingGuard::shutdown(guard);
    code
}

async fn serve(args: &Args, path: Option<&Path>, config: &Config, restore: Option<Snapshot>) -> ExitCode {
    let (mut hup, mut term, mut int) = match (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(h), Ok(t), Ok(i)) => (h, t, i),
        _ => {
            error!("cannot install signal handlers");
            return ExitCode::from(1);
        }
    };
    let node = match Node::start_with(config, restore).await {
        Ok(n) => n,
        Err(e) => {
            for line in e.to_string().lines() {
                error!("{line}");
            }
            return ExitCode::from(1);
        }
    };
    loop {
        tokio::select! {
            _ = hup.recv() => match path {
                Some(path) => reload(args, path, config, &node).await,
                None => warn!("SIGHUP: running without a config file, nothing to reload"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
            () = node.leave_requested() => {
                info!("leave requested through the admin API");
                break;
            }
        }
    }
    info!("shutdown requested");
    let second_signal = async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    let report = node.shutdown_or(second_signal).await;
    if report.forced > 0 {
        warn!(connections = report.forced, "closed connections that outlived the drain");
    }
    ExitCode::SUCCESS
}

/// SIGHUP: re-read the file; apply its routes, or keep the running ones.
async fn reload(args: &Args, path: &Path, running: &Config, node: &Node) {
    let metrics = node.metrics().config_reloads_total.clone();
    let config = match args.load(Some(path)) {
        Ok(c) => c,
        Err(e) => {
            metrics.with_label_values(&["error"]).inc();
            error!(file = %path.display(), "reload rejected; the running configuration stays");
            for problem in &e.0 {
                error!("{problem}");
            }
            return;
        }
    };
    if config.node != running.node || config.admin != running.admin || config.telemetry != running.telemetry {
        warn!("reload applies [[routes]] only: changes to [node], [admin] and [telemetry] need a restart");
    }
    match node.apply_routes(config.routes).await {
        Ok(()) => {
            metrics.with_label_values(&["ok"]).inc();
            info!(file = %path.display(), "configuration reloaded");
        }
        Err(ApplyError::Bind(errors)) => {
            metrics.with_label_values(&["error"]).inc();
            error!(file = %path.display(), "reload rejected; the running configuration stays");
            for e in errors {
                error!("{e}");
            }
        }
        Err(e) => {
            metrics.with_label_values(&["error"]).inc();
            error!("reload failed: {e}");
        }
    }
}

/// Route listeners and their connections need many descriptors: lift the
/// soft limit to the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
