//! The admin API's accept loop: ferry's own, over hyper's HTTP/1.1
//! connection, so that a slow or greedy client cannot hold the port (what
//! HAProxy's `timeout http-request` and `maxconn` do).
//!
//! - **Connection cap** (`[admin] max_connections`): a connection over it
//!   gets a canned 503 `too_many_connections`, written without waiting
//!   (dropped if even that would block), and is closed at once: it never
//!   holds a file descriptor or a task.
//! - **Header timeout** (`header_timeout_ms`): hyper's
//!   `header_read_timeout`. hyper 1.12 starts it whenever it waits for a
//!   request head, so it also bounds an idle keep-alive connection waiting
//!   for its next request (see `Conn::poll_read_head` and `State::idle` in
//!   hyper's `proto/h1/conn.rs`). Such a connection is closed without an
//!   answer.
//! - **Body timeout** (`body_timeout_ms`): the whole body must arrive
//!   within it, else 408 `request_timeout` and the connection is closed
//!   (see [`super::service`]).
//! - **Errors hyper writes itself** (400, 414, 431) are replaced by the JSON
//!   error body (see [`super::wire_errors`]).
//! - **Shutdown**: when `stop` fires the listener closes, idle connections
//!   close, requests in flight get up to the request timeout to finish, and
//!   what is left is then closed.
//!
//! Every slow or refused client is counted in
//! `ferry_admin_connections_rejected_total{reason}` (`limit`,
//! `header_timeout`, `body_timeout`) and logged at WARN, at most one line
//! per [`LOG_EVERY`] with the number of the others, so a flood does not
//! flood the log. An idle keep-alive connection closed by the header
//! timeout after a whole exchange is not a slow client: it is not counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use ferry_client::api::ErrorBody;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::AdminState;
use super::wire_errors::{ErrorHeads, Exchange, error_response};
use crate::config::AdminSection;

/// Shortest time between two WARN lines about slow or refused clients.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Pause after an accept error such as "too many open files", so the loop
/// does not spin while the process is out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Values of the `reason` label of `ferry_admin_connections_rejected_total`.
pub const REJECT_REASONS: [&str; 3] = ["limit", "header_timeout", "body_timeout"];

/// How the admin port treats its clients (`[admin]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for a whole request head, and for the next request on
    /// an idle keep-alive connection.
    pub header_timeout: Duration,
    /// Longest wait for a whole request body, from the end of its head.
    pub body_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
    /// At shutdown, how long requests in flight may take to finish.
    pub grace: Duration,
}

impl From<&AdminSection> for Limits {
    fn from(a: &AdminSection) -> Self {
        Self {
            header_timeout: Duration::from_millis(a.header_timeout_ms),
            body_timeout: Duration::from_millis(a.body_timeout_ms),
            max_connections: a.max_connections,
            grace: Duration::from_millis(a.request_timeout_ms),
        }
    }
}

/// What every connection of the admin port shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub router: Router,
    pub state: AdminState,
    pub limits: Limits,
    slow_clients: Throttle,
}

impl Shared {
    /// Counts and (rate-limited) logs a slow or refused client.
    pub fn rejected(&self, reason: &'static str, peer: SocketAddr) {
        self.state.metrics.admin_connections_rejected_total.with_label_values(&[reason]).inc();
        let Some(others) = self.slow_clients.allow() else { return };
        let what = match reason {
            "limit" => format!("refused: {} admin connections are open already", self.limits.max_connections),
            "header_timeout" => {
                format!("closed: no whole request head within {:?}", self.limits.header_timeout)
            }
            _ => format!("closed: no whole request body within {:?}", self.limits.body_timeout),
        };
        warn!(
            %peer,
            reason,
            others_since_last_line = others,
            "admin client {what} (all are counted in ferry_admin_connections_rejected_total)"
        );
    }
}

/// At most one log line per [`LOG_EVERY`] about one kind of event.
#[derive(Debug)]
struct Throttle {
    start: Instant,
    /// Milliseconds since `start` before which no line is written.
    quiet_until_ms: AtomicU64,
    /// Events not logged since the last line.
    unlogged: AtomicU64,
}

impl Throttle {
    fn new() -> Self {
        Self { start: Instant::now(), quiet_until_ms: AtomicU64::new(0), unlogged: AtomicU64::new(0) }
    }

    /// Whether this event may be logged, with the number of those that
    /// were not since the last line; `None` if it is too soon.
    fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let until = self.quiet_until_ms.load(Relaxed);
        let next = now.saturating_add(u64::try_from(LOG_EVERY.as_millis()).unwrap_or(u64::MAX));
        if now < until || self.quiet_until_ms.compare_exchange(until, next, Relaxed, Relaxed).is_err() {
            self.unlogged.fetch_add(1, Relaxed);
            return None;
        }
        Some(self.unlogged.swap(0, Relaxed))
    }
}

/// Serves the admin API on `listener` until `stop` fires.
pub async fn serve(listener: TcpListener, state: AdminState, limits: Limits, stop: CancellationToken) {
    let router = super::router(state.clone());
    let shared = Arc::new(Shared { router, state, limits, slow_clients: Throttle::new() });
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let hard_stop = CancellationToken::new();
    let accept_errors = Throttle::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // A client that reset before accept costs nothing; running
                // out of descriptors needs a pause and an operator.
                use std::io::ErrorKind::{ConnectionAborted, ConnectionReset};
                if matches!(e.kind(), ConnectionAborted | ConnectionReset) {
                    debug!(error = %e, "admin accept failed");
                } else if let Some(others) = accept_errors.allow() {
                    warn!(error = %e, others_since_last_line = others, "admin API cannot accept connections");
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refuse(tcp, peer, &shared);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tracker.spawn(connection(tcp, peer, slot, Arc::clone(&shared), stop.clone(), hard_stop.clone()));
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(limits.grace, tracker.wait()).await.is_err() {
        warn!(
            connections = tracker.len(),
            grace_ms = limits.grace.as_millis() as u64,
            "admin requests still running at the end of the shutdown grace period: closing them"
        );
        hard_stop.cancel();
        tracker.wait().await;
    }
}

/// Answers a connection over the cap with a 503 and closes it, without
/// waiting for anything.
fn refuse(tcp: TcpStream, peer: SocketAddr, shared: &Shared) {
    shared.rejected("limit", peer);
    let body = ErrorBody::new(
        "too_many_connections",
        format!(
            "the admin API serves at most {} connections at once ([admin] max_connections): retry shortly",
            shared.limits.max_connections
        ),
    );
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let answer = error_response(StatusCode::SERVICE_UNAVAILABLE, &body, shared.state.index());
    // A new socket's send buffer has room for this; if not, it is closed
    // without an answer rather than waited on.
    let _ = tcp.try_write(&answer);
    // Read what the client already sent: closing a socket with unread
    // bytes resets the connection, which can discard the answer.
    let mut sink = [0u8; 4096];
    for _ in 0..4 {
        if !matches!(tcp.try_read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
}

/// Serves one connection until it closes, times out or is stopped.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    stop: CancellationToken,
    hard_stop: CancellationToken,
) {
    let _slot = slot;
    let _open = OpenConnection::new(&shared);
    let exchange = Arc::new(Exchange::default());
    let replacement = {
        let shared = Arc::clone(&shared);
        Box::new(move |status: u16| super::service::parse_error_answer(&shared, status))
    };
    let io = TokioIo::new(ErrorHeads::new(tcp, Arc::clone(&exchange), replacement));
    let service = {
        let (shared, exchange) = (Arc::clone(&shared), Arc::clone(&exchange));
        hyper::service::service_fn(move |req| {
            super::service::handle(req, Arc::clone(&shared), Arc::clone(&exchange), peer)
        })
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.header_timeout)
        .keep_alive(true)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn.as_mut() => r,
                () = hard_stop.cancelled() => return,
            }
        }
    };
    match result {
        Ok(()) => {}
        Err(e) if e.is_timeout() && exchange.idle() => {
            debug!(%peer, "idle admin keep-alive connection closed")
        }
        Err(e) if e.is_timeout() => shared.rejected("header_timeout", peer),
        Err(e) => debug!(%peer, error = %e, "admin connection ended"),
    }
}

/// Keeps `ferry_admin_connections` while a connection is served.
struct OpenConnection(prometheus::IntGauge);

impl OpenConnection {
    fn new(shared: &Shared) -> Self {
        let gauge = shared.state.metrics.admin_connections.clone();
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_allows_one_line_per_period_and_counts_the_rest() {
        let t = Throttle::new();
        assert_eq!(t.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(t.allow(), None);
        }
        // As if the period had passed.
        t.quiet_until_ms.store(0, Relaxed);
        assert_eq!(t.allow(), Some(5));
        assert_eq!(t.allow(), None);
    }
}
