//! `ferryd`: the ferry node.
//!
//! Exit status: 0 after a clean shutdown or a valid `--check-config`; 2 for
//! bad arguments or configuration (one line per problem on stderr, naming the
//! field); 1 when the node cannot start (a port in use, …).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use ferry_node::Node;
use ferry_node::config::{Config, ConfigErrors};
use ferry_node::node::ApplyError;
use ferry_node::telemetry::tracing::{self as telemetry, LogFormat, TracingOptions};
use ferry_node::telemetry::tracing::{init as init_tracing, otlp_enabled};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

/// A ferry node: an L4 (TCP) load balancer configured from a TOML file.
///
/// SIGHUP re-reads the file (routes only); SIGTERM or SIGINT stops accepting,
/// drains open connections for `[node] drain_timeout_ms` and exits 0; a second
/// signal closes the remaining connections at once.
#[derive(Debug, Parser)]
#[command(name = "ferryd", version)]
struct Args {
    /// Configuration file to run with.
    #[arg(long, value_name = "FILE", required_unless_present = "check_config")]
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
    /// `[telemetry] otlp_endpoint` and OTEL_EXPORTER_OTLP_ENDPOINT.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
}

impl Args {
    /// Reads the file, applies flag overrides, validates.
    fn load(&self, path: &Path) -> Result<Config, ConfigErrors> {
        let mut config = Config::read(path)?;
        if let Some(a) = self.admin_addr {
            config.admin.addr = a;
        }
        if let Some(f) = self.log_format {
            config.telemetry.log_format = f;
        }
        if let Some(e) = &self.otlp_endpoint {
            config.telemetry.otlp_endpoint = Some(e.clone());
        }
        config.validate()
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.check_config {
        return match args.load(path) {
            Ok(c) => {
                let n = c.routes.len();
                println!("{}: ok ({n} route{})", path.display(), if n == 1 { "" } else { "s" });
                ExitCode::SUCCESS
            }
            Err(e) => config_failure(path, &e),
        };
    }
    let Some(path) = args.config.clone() else { return ExitCode::from(2) };
    let config = match args.load(&path) {
        Ok(c) => c,
        Err(e) => return config_failure(&path, &e),
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
    runtime.block_on(run(args, path, config))
}

/// Prints one line per problem and returns exit status 2.
fn config_failure(path: &Path, e: &ConfigErrors) -> ExitCode {
    eprintln!("ferryd: {} is invalid:", path.display());
    for problem in &e.0 {
        eprintln!("{problem}");
    }
    ExitCode::from(2)
}

async fn run(args: Args, path: PathBuf, config: Config) -> ExitCode {
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
    if let Some(endpoint) = otlp_enabled(&opts) {
        info!(%endpoint, "exporting traces over OTLP");
    }
    let code = serve(&args, &path, &config).await;
    telemetry::TracingGuard::shutdown(guard);
    code
}

async fn serve(args: &Args, path: &Path, config: &Config) -> ExitCode {
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
    let node = match Node::start(config).await {
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
            _ = hup.recv() => reload(args, path, config, &node).await,
            _ = term.recv() => break,
            _ = int.recv() => break,
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
    let config = match args.load(path) {
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
            for e in errors {
                error!("reload: {e}");
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
