//! Logging and tracing setup: the global `tracing` subscriber and the
//! optional OTLP/gRPC span exporter.
//!
//! Call [`init`] once, early, from inside the tokio runtime, and keep the
//! returned [`TracingGuard`] alive until exit; then call
//! [`TracingGuard::shutdown`] (or drop it) to flush buffered spans.
//!
//! The OTLP exporter connects lazily: an unreachable collector never blocks
//! or fails startup; spans are simply dropped after the export timeout.

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use super::raft_noise;

/// Standard OpenTelemetry variable consulted when no endpoint is configured.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Per-attempt/overall timeout of one OTLP export.
pub const OTLP_EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// Instrumentation scope name of the spans ferry produces.
const TRACER_NAME: &str = "ferry-node";

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text (ANSI colours when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(r#"expected "text" or "json", got "{other}""#)),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// Options for [`init`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingOptions {
    /// Log line format on stderr.
    pub format: LogFormat,
    /// OTLP/gRPC collector endpoint, e.g. `http://127.0.0.1:4317`. When
    /// `None`, `OTEL_EXPORTER_OTLP_ENDPOINT` is used if set and non-empty;
    /// otherwise no spans are exported.
    pub otlp_endpoint: Option<String>,
    /// `service.name` resource attribute.
    pub service_name: String,
    /// `ferry.node` resource attribute.
    pub node_name: String,
}

/// Checks an OTLP endpoint as the exporter will use it: an `http://` URL
/// with a host (ferryd is built without TLS for the exporter, so `https://`
/// is refused here rather than when the exporter starts). An empty string
/// means "export nothing" and is accepted.
pub fn check_otlp_endpoint(endpoint: &str) -> Result<(), String> {
    let endpoint = endpoint.trim();
    if endpoint.is_empty() {
        return Ok(());
    }
    let uri: axum::http::Uri = endpoint.parse().map_err(|e| format!("invalid URL {endpoint:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!("expected an http:// URL (OTLP over TLS is not built in), got {endpoint:?}"));
        }
        _ => return Err(format!("expected an http:// URL such as http://127.0.0.1:4317, got {endpoint:?}")),
    }
    match uri.host() {
        Some(h) if !h.is_empty() => Ok(()),
        _ => Err(format!("no host in {endpoint:?}")),
    }
}

/// Returns the OTLP endpoint [`init`] will export to, if any: the explicit
/// option wins, else `OTEL_EXPORTER_OTLP_ENDPOINT` when set and non-empty.
pub fn otlp_enabled(opts: &TracingOptions) -> Option<String> {
    effective_endpoint(opts.otlp_endpoint.as_deref(), std::env::var(OTLP_ENDPOINT_ENV).ok().as_deref())
}

/// Pure part of [`otlp_enabled`] (testable without touching the environment).
fn effective_endpoint(option: Option<&str>, env: Option<&str>) -> Option<String> {
    let non_empty = |s: &str| {
        let s = s.trim();
        (!s.is_empty()).then(|| s.to_owned())
    };
    match option {
        Some(o) => non_empty(o),
        None => env.and_then(non_empty),
    }
}

/// Builds the OTLP/gRPC span exporter and a tracer provider with a batch
/// span processor.
///
/// Must be called from inside a tokio runtime (tonic's lazily-connecting
/// channel spawns its worker on the current runtime); returns an error
/// otherwise. Does not connect: it returns immediately even if nothing
/// listens at `endpoint`.
pub(crate) fn build_provider(
    endpoint: &str,
    service_name: &str,
    node_name: &str,
) -> anyhow::Result<SdkTracerProvider> {
    tokio::runtime::Handle::try_current()
        .context("the OTLP exporter must be built inside a tokio runtime")?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(OTLP_EXPORT_TIMEOUT)
        .build()
        .with_context(|| format!("building the OTLP span exporter for {endpoint}"))?;
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attribute(KeyValue::new("ferry.node", node_name.to_owned()))
        .build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// Keeps the OTLP pipeline alive; flushes and shuts it down on
/// [`shutdown`](Self::shutdown) or drop.
#[derive(Debug)]
pub struct TracingGuard {
    provider: Option<SdkTracerProvider>,
}

impl TracingGuard {
    /// Whether spans are being exported over OTLP.
    pub fn otlp_active(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes buffered spans and stops the exporter. Errors (e.g. an
    /// unreachable collector) are logged and otherwise ignored.
    ///
    /// This blocks for at most a few seconds. On a multi-thread tokio
    /// runtime it uses `block_in_place` so the exporter's connection task can
    /// keep running; on a current-thread runtime prefer calling it from
    /// `spawn_blocking`, or the flush can only end by timing out.
    pub fn shutdown(mut self) {
        self.shutdown_inner();
    }

    fn shutdown_inner(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        let run = move || provider.shutdown();
        let on_worker = matches!(
            tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()),
            Ok(tokio::runtime::RuntimeFlavor::MultiThread)
        );
        let result = if on_worker { tokio::task::block_in_place(run) } else { run() };
        if let Err(e) = result {
            ::tracing::warn!(error = %e, "OTLP tracer provider shutdown failed");
        }
    }
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        self.shutdown_inner();
    }
}

/// Targets of the crates the OTLP exporter itself runs on. Their spans are
/// never exported: with `RUST_LOG=debug` or `trace` each export would
/// otherwise produce spans that the next export sends, forever.
const EXPORTER_TARGETS: [&str; 5] = ["h2", "hyper", "hyper_util", "tonic", "tower"];

fn is_exporter_internal(target: &str) -> bool {
    target.starts_with("opentelemetry")
        || EXPORTER_TARGETS
            .iter()
            .any(|t| target.strip_prefix(t).is_some_and(|rest| rest.is_empty() || rest.starts_with("::")))
}

/// Installs the global `tracing` subscriber: an `EnvFilter` from `RUST_LOG`
/// (default `info`; unless `RUST_LOG` names openraft, openraft at `warn`
/// without its per-RPC failure lines, see [`raft_noise`](super::raft_noise)),
/// a text or JSON fmt layer writing to stderr, and, when
/// [`otlp_enabled`] returns an endpoint, an OpenTelemetry layer exporting
/// spans over OTLP/gRPC (3 s timeout, batch processor, resource
/// `service.name` and `ferry.node`).
///
/// Must be called from inside a tokio runtime when OTLP is enabled. Never
/// waits for the collector. Fails (without panicking) if a global subscriber
/// is already installed.
pub fn init(opts: &TracingOptions) -> anyhow::Result<TracingGuard> {
    let endpoint = otlp_enabled(opts);
    let provider =
        endpoint.as_deref().map(|ep| build_provider(ep, &opts.service_name, &opts.node_name)).transpose()?;

    let quiet_raft = raft_noise::applies(std::env::var("RUST_LOG").ok().as_deref());
    let mut filter = EnvFilter::builder().with_default_directive(LevelFilter::INFO.into()).from_env_lossy();
    if quiet_raft {
        filter = filter.add_directive(raft_noise::DIRECTIVE.parse().context("openraft's log directive")?);
    }
    let fmt_layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt_layer = match opts.format {
        LogFormat::Text => fmt_layer.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => fmt_layer.json().boxed(),
    }
    .with_filter(quiet_raft.then_some(raft_noise::RaftNoise));
    let otel_layer = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(TRACER_NAME))
            .with_filter(filter_fn(|meta| !is_exporter_internal(meta.target())))
    });

    let installed = tracing_subscriber::registry().with(filter).with(fmt_layer).with(otel_layer).try_init();
    if let Err(e) = installed {
        if let Some(p) = provider {
            // Nothing was exported yet; don't leave the batch thread behind.
            let _ = p.shutdown();
        }
        return Err(anyhow::Error::new(e).context("installing the global tracing subscriber"));
    }
    if let Some(ep) = &endpoint {
        ::tracing::info!(endpoint = %ep, "exporting spans over OTLP/gRPC");
    }
    Ok(TracingGuard { provider })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use opentelemetry::trace::{Span as _, Tracer as _};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[test]
    fn otlp_endpoints_are_http_urls_with_a_host() {
        for ok in ["http://127.0.0.1:4317", "http://collector:4317/", "http://[::1]:4317", "", "  "] {
            assert_eq!(check_otlp_endpoint(ok), Ok(()), "{ok:?}");
        }
        for (bad, says) in [
            ("http://bad host:1", "invalid URL"),
            ("http://", "invalid URL"),
            ("notaurl", "expected an http:// URL"),
            ("127.0.0.1:4317", "expected an http:// URL"),
            ("https://collector:4317", "TLS is not built in"),
            ("ftp://collector:4317", "expected an http:// URL"),
        ] {
            let e = check_otlp_endpoint(bad).expect_err(bad);
            assert!(e.contains(says) && e.contains(bad), "{bad:?}: {e}");
        }
    }

    #[test]
    fn log_format_parses() {
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("yaml".parse::<LogFormat>(), Err(r#"expected "text" or "json", got "yaml""#.to_owned()));
        assert_eq!(LogFormat::default(), LogFormat::Text);
        assert_eq!(LogFormat::Json.to_string(), "json");
    }

    #[test]
    fn exporter_internals_are_not_exported() {
        for t in [
            "h2",
            "h2::codec",
            "hyper_util::client",
            "tonic::transport",
            "tower::buffer",
            "opentelemetry_otlp",
        ] {
            assert!(is_exporter_internal(t), "{t}");
        }
        for t in ["ferry_node::dataplane", "h2o", "towering", "ferryd"] {
            assert!(!is_exporter_internal(t), "{t}");
        }
    }

    #[test]
    fn explicit_endpoint_wins_over_env() {
        let opt = Some("http://collector:4317");
        let env = Some("http://env:4317");
        assert_eq!(effective_endpoint(opt, env).as_deref(), Some("http://collector:4317"));
        assert_eq!(effective_endpoint(None, env).as_deref(), Some("http://env:4317"));
        assert_eq!(effective_endpoint(None, Some("  ")), None);
        assert_eq!(effective_endpoint(None, None), None);
    }

    #[test]
    fn build_provider_outside_runtime_is_an_error() {
        let err =
            build_provider("http://127.0.0.1:1", "ferry", "n1").expect_err("no runtime, so no exporter");
        assert!(err.to_string().contains("tokio runtime"), "{err:#}");
    }

    #[test]
    fn init_outside_runtime_with_otlp_fails_without_installing() {
        let opts = TracingOptions {
            format: LogFormat::Json,
            otlp_endpoint: Some("http://127.0.0.1:1".into()),
            service_name: "ferry".into(),
            node_name: "n1".into(),
        };
        assert!(init(&opts).is_err());
    }

    /// Runs a blocking otel call off the runtime, bounded in time.
    async fn bounded<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> (R, Duration) {
        let start = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(20), tokio::task::spawn_blocking(f))
            .await
            .unwrap_or_else(|_| panic!("{what} hung"))
            .unwrap_or_else(|e| panic!("{what} panicked: {e}"));
        (r, start.elapsed())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dead_collector_never_blocks() {
        // Nothing listens on port 1 (loopback only).
        let start = Instant::now();
        let provider = build_provider("http://127.0.0.1:1", "ferry-test", "node-a").expect("provider builds");
        assert!(start.elapsed() < Duration::from_secs(1), "building must not connect: {:?}", start.elapsed());

        // A span straight through the otel tracer...
        let tracer = provider.tracer(TRACER_NAME);
        let mut span = tracer.start("test-span");
        span.set_attribute(KeyValue::new("k", "v"));
        span.end();
        // ...and one through the tracing-opentelemetry layer (scoped, not global).
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer(TRACER_NAME)));
        ::tracing::subscriber::with_default(subscriber, || {
            ::tracing::info_span!("layer-span", route = "web").in_scope(|| {
                ::tracing::info!("inside");
            });
        });

        for round in 1..=2 {
            if round > 1 {
                // A flush with an empty queue exports nothing and returns
                // Ok, so queue a fresh span: the second export must reach
                // the (still alive) exporter and fail the same way.
                tracer.start(format!("test-span-{round}")).end();
            }
            let p = provider.clone();
            let (res, took) = bounded("force_flush", move || p.force_flush()).await;
            let err = res.expect_err("export to a dead collector must fail");
            let msg = err.to_string();
            eprintln!("force_flush #{round}: {took:?}: {msg}");
            assert!(took < Duration::from_secs(10), "flush #{round} took {took:?}");
            // The exporter must still be alive on the second round: the error
            // is a transport failure, not a dead channel.
            assert!(msg.contains("Unavailable"), "{msg}");
            assert!(!msg.to_lowercase().contains("closed"), "{msg}");
            assert!(!msg.to_lowercase().contains("shutdown"), "{msg}");
        }

        let p = provider.clone();
        let (res, took) = bounded("shutdown", move || p.shutdown()).await;
        eprintln!("shutdown: {took:?}: {res:?}");
        assert!(took < Duration::from_secs(10), "shutdown took {took:?}");

        // The guard's shutdown after the provider is already shut down must
        // neither panic nor hang (block_in_place on the multi-thread runtime).
        let guard = TracingGuard { provider: Some(provider) };
        assert!(guard.otlp_active());
        let start = Instant::now();
        guard.shutdown();
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
