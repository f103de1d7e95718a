//! ferry-tests: the integration-test harness and test backends.
//!
//! # Layout
//! - [`backend`]: in-process TCP backends: greeters (say their name, then
//!   echo), a blackhole (connects time out), and a way to kill them.
//! - [`node`]: a `ferryd` node in-process on port 0 plus an admin client.
//! - [`client`]: client-side helpers (greet through a route, from a chosen
//!   loopback source address).
//! - [`cluster`]: a Raft cluster of in-process nodes, node `i` on
//!   `127.0.N.i` with the same ports on every node.
//! - [`http`]: an HTTP/1.1 client for the admin API (any method, headers).
//!
//! Scenarios live in `tests/tests/`, one per file. Everything runs on
//! 127.0.0.0/8 with OS-chosen ports; conditions are polled with deadlines,
//! never slept on.

pub mod backend;
pub mod client;
pub mod cluster;
pub mod http;
pub mod node;

use std::future::Future;
use std::time::Duration;

/// Environment variable that turns on the nodes' logs in tests: set it (to
/// anything) and `RUST_LOG` filters as for `ferryd`, e.g.
/// `FERRY_TEST_LOG=1 RUST_LOG=ferry_node=debug cargo test -p ferry-tests`.
/// The lines go straight to stderr, not through the test's captured output.
pub const LOG_ENV: &str = "FERRY_TEST_LOG";

/// Installs ferryd's log subscriber once per test binary when [`LOG_ENV`]
/// is set; otherwise does nothing. Called by every harness that starts a
/// node.
pub fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if std::env::var_os(LOG_ENV).is_none_or(|v| v.is_empty()) {
        return;
    }
    ONCE.call_once(|| {
        let opts = ferry_node::telemetry::tracing::TracingOptions {
            format: ferry_node::telemetry::tracing::LogFormat::Text,
            otlp_endpoint: None,
            service_name: "ferry-tests".into(),
            node_name: "test".into(),
        };
        match ferry_node::telemetry::tracing::init(&opts) {
            // No exporter: nothing to flush, the guard may go.
            Ok(guard) => drop(guard),
            Err(e) => eprintln!("{LOG_ENV}: cannot install the log subscriber: {e}"),
        }
    });
}

/// Polls `check` every 10 ms until it returns `Some`, or fails after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
