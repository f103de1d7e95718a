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
