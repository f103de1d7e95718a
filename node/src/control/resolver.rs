//! Looking up backend host names: the [`Resolve`] trait (a name and a port
//! to addresses), the system resolver behind it, and [`lookup`], which
//! bounds one call by `[node] resolve_timeout_ms`.
//!
//! Only the control plane calls this (the publisher, when routes are applied
//! and on `[node] resolve_interval_ms`); connections never resolve, they
//! read the addresses the routing table holds.
//!
//! The system resolver is getaddrinfo(3) (so `/etc/hosts`, `nsswitch.conf`
//! and `resolv.conf` apply, as for every other program on the host) on
//! tokio's blocking pool. getaddrinfo cannot be cancelled: a lookup that
//! times out keeps its thread until the C library gives up. So a lookup
//! holds one of [`MAX_PARALLEL`] permits until getaddrinfo returns, not
//! until its caller stops waiting: a hung resolver ties up at most that many
//! threads, and the lookups waiting for a permit time out like the rest.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ferry_client::HostPort;
use tokio::sync::Semaphore;
use tokio::task::{Id, JoinSet};

/// Lookups the system resolver runs at once (threads of tokio's blocking
/// pool it may hold).
pub const MAX_PARALLEL: usize = 8;
/// Default `[node] resolve_interval_ms`: HAProxy's `hold valid` (10 s).
pub const DEFAULT_INTERVAL_MS: u64 = 10_000;
/// Default `[node] resolve_timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 2_000;
/// Most addresses kept of one answer (in the resolver's order): a
/// connection tries a backend's addresses in turn, each with the route's
/// connect timeout, so this bounds how long one backend can take.
pub const MAX_ADDRS: usize = 8;

/// Why a name has no addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No answer within `resolve_timeout_ms`.
    #[error("no answer within {0} ms")]
    Timeout(u64),
    /// The resolver answered with an error (unknown name, no address of
    /// that family, server failure, ...), as the C library words it.
    #[error("{0}")]
    Lookup(String),
    /// The resolver answered, with no address.
    #[error("the name has no address")]
    Empty,
}

/// One lookup in progress.
pub type Lookup = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// Turns a host name and port into addresses, in the order to try them.
/// The system resolver in production; tests inject their own.
pub trait Resolve: Send + Sync + fmt::Debug + 'static {
    /// Looks up `host` (a valid host name) with `port`.
    fn lookup(&self, host: &str, port: u16) -> Lookup;
}

/// getaddrinfo(3) on tokio's blocking pool; see the module doc.
#[derive(Debug)]
pub struct SystemResolver {
    permits: Arc<Semaphore>,
}

impl SystemResolver {
    /// A resolver running at most [`MAX_PARALLEL`] lookups at once.
    pub fn new() -> Self {
        Self { permits: Arc::new(Semaphore::new(MAX_PARALLEL)) }
    }
}

impl Default for SystemResolver {
    fn default() -> Self {
        Self::new()
    }
}

impl Resolve for SystemResolver {
    fn lookup(&self, host: &str, port: u16) -> Lookup {
        let permits = Arc::clone(&self.permits);
        let host = host.to_string();
        Box::pin(async move {
            let permit = permits.acquire_owned().await.map_err(io::Error::other)?;
            let blocking = tokio::task::spawn_blocking(move || {
                // Released when getaddrinfo returns, whoever still waits.
                let _permit = permit;
                // Addresses in getaddrinfo's order (RFC 6724: IPv6 first
                // when the host has IPv6 connectivity).
                (host.as_str(), port).to_socket_addrs().map(Iterator::collect)
            });
            blocking.await.map_err(io::Error::other)?
        })
    }
}

/// How often and how long names are looked up: `[node] resolve_interval_ms`
/// and `resolve_timeout_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolveSettings {
    /// Between two lookups of one name.
    pub interval: Duration,
    /// Longest wait for one answer.
    pub timeout: Duration,
}

impl Default for ResolveSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(DEFAULT_INTERVAL_MS),
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
        }
    }
}

/// Looks up `host:port` with `resolver` within `timeout`: the addresses in
/// the resolver's order, without duplicates, at most [`MAX_ADDRS`].
pub async fn lookup(
    resolver: &dyn Resolve,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, ResolveError> {
    let answer = tokio::time::timeout(timeout, resolver.lookup(host, port))
        .await
        .map_err(|_| ResolveError::Timeout(timeout.as_millis() as u64))?
        .map_err(|e| ResolveError::Lookup(e.to_string()))?;
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(answer.len().min(MAX_ADDRS));
    for a in answer {
        if !addrs.contains(&a) && addrs.len() < MAX_ADDRS {
            addrs.push(a);
        }
    }
    if addrs.is_empty() {
        return Err(ResolveError::Empty);
    }
    Ok(addrs)
}

/// The outcome of one lookup.
pub type Answer = Result<Vec<SocketAddr>, ResolveError>;

/// Lookups running in parallel, each on its own task and bounded by the
/// timeout, so a slow name never holds up another.
#[derive(Debug)]
pub struct Lookups {
    resolver: Arc<dyn Resolve>,
    timeout: Duration,
    tasks: JoinSet<(HostPort, Answer)>,
    /// Which name each task looks up, for a task that ends without saying.
    names: HashMap<Id, HostPort>,
}

impl Lookups {
    /// No lookup yet; each will use `resolver` within `timeout`.
    pub fn new(resolver: Arc<dyn Resolve>, timeout: Duration) -> Self {
        Self { resolver, timeout, tasks: JoinSet::new(), names: HashMap::new() }
    }

    /// Starts looking up `name`.
    pub fn spawn(&mut self, name: HostPort) {
        let resolver = Arc::clone(&self.resolver);
        let timeout = self.timeout;
        let key = name.clone();
        let task = self.tasks.spawn(async move {
            let answer = lookup(resolver.as_ref(), &name.host, name.port, timeout).await;
            (name, answer)
        });
        self.names.insert(task.id(), key);
    }

    /// True when no lookup runs.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The next lookup to end; `None` when none runs. A lookup whose task
    /// panicked ends with an error, so its name is not left waiting.
    pub async fn next(&mut self) -> Option<(HostPort, Answer)> {
        loop {
            match self.tasks.join_next_with_id().await? {
                Ok((id, done)) => {
                    self.names.remove(&id);
                    return Some(done);
                }
                Err(e) => {
                    if let Some(name) = self.names.remove(&e.id()) {
                        return Some((name, Err(ResolveError::Lookup(format!("the lookup failed: {e}")))));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(Vec<SocketAddr>);

    impl Resolve for Fixed {
        fn lookup(&self, _host: &str, _port: u16) -> Lookup {
            let answer = self.0.clone();
            Box::pin(async move { Ok(answer) })
        }
    }

    #[derive(Debug)]
    struct Hung;

    impl Resolve for Hung {
        fn lookup(&self, _host: &str, _port: u16) -> Lookup {
            Box::pin(std::future::pending())
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[tokio::test]
    async fn answers_keep_their_order_without_duplicates_and_are_capped() {
        let answer = vec![addr("[::1]:80"), addr("127.0.0.1:80"), addr("[::1]:80")];
        let got = lookup(&Fixed(answer), "h", 80, Duration::from_secs(1)).await;
        assert_eq!(got, Ok(vec![addr("[::1]:80"), addr("127.0.0.1:80")]));
        let many = (1..=20).map(|i| SocketAddr::from(([10, 0, 0, i], 80))).collect();
        let got = lookup(&Fixed(many), "h", 80, Duration::from_secs(1)).await.expect("answer");
        assert_eq!(got.len(), MAX_ADDRS);
        assert_eq!(got[0], addr("10.0.0.1:80"));
        assert_eq!(lookup(&Fixed(vec![]), "h", 80, Duration::from_secs(1)).await, Err(ResolveError::Empty));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_resolver_times_out() {
        let started = tokio::time::Instant::now();
        let got = lookup(&Hung, "h", 80, Duration::from_millis(2_000)).await;
        assert_eq!(got, Err(ResolveError::Timeout(2_000)));
        assert_eq!(started.elapsed(), Duration::from_millis(2_000));
    }

    #[tokio::test]
    async fn the_system_resolver_reads_localhost_and_refuses_an_invalid_name() {
        let r = SystemResolver::new();
        let got = lookup(&r, "localhost", 9, Duration::from_secs(5)).await.expect("localhost resolves");
        assert!(got.iter().all(|a| a.ip().is_loopback() && a.port() == 9), "{got:?}");
        // RFC 6761: `.invalid` never resolves.
        let got = lookup(&r, "nonexistent.invalid", 9, Duration::from_secs(5)).await;
        assert!(matches!(got, Err(ResolveError::Lookup(_) | ResolveError::Timeout(_))), "{got:?}");
    }
}
