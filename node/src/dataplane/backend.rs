//! Live state of one backend: open connections, active-check verdict and
//! passive ejection.
//!
//! A `BackendState` outlives routing-table rebuilds: the registry hands the
//! same `Arc` to every table while the route name, backend id, configured
//! address and health-check settings stay the same, so health and connection
//! counts carry across reloads, and across new answers for a host name. Every field is an atomic: the data plane updates it without
//! locks, and a health transition wakes the table publisher through `changed`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

use prometheus::{IntCounter, IntGauge};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::telemetry::metrics::Metrics;

/// Longest ejection, as a multiple of the route's `eject_backoff_ms`.
const MAX_BACKOFF_SHIFT: u32 = 6;

/// How a connect attempt to a backend ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectResult {
    Ok,
    Refused,
    Timeout,
    Error,
}

impl ConnectResult {
    /// The `result` label value.
    pub fn label(self) -> &'static str {
        match self {
            ConnectResult::Ok => "ok",
            ConnectResult::Refused => "refused",
            ConnectResult::Timeout => "timeout",
            ConnectResult::Error => "error",
        }
    }
}

/// Passive ejection settings of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectPolicy {
    /// Consecutive connect failures that eject (0: never).
    pub after_failures: u32,
    /// First ejection period in ms; doubles per ejection in a row.
    pub backoff_ms: u64,
}

/// Live state of one backend of one route.
#[derive(Debug)]
pub struct BackendState {
    pub route: String,
    pub id: String,
    /// The configured `addr` (`IP:PORT` or `HOST:PORT`), for logs; the
    /// addresses connected to are in the routing table.
    pub addr: String,
    active: AtomicU64,
    check_up: AtomicBool,
    consecutive_failures: AtomicU32,
    /// Ejected while `now_ms < ejected_until_ms`; 0 when never ejected.
    ejected_until_ms: AtomicU64,
    ejections_in_row: AtomicU32,
    changed: Arc<Notify>,
    /// Cancels this backend's health-check task when the registry drops it.
    pub(crate) cancel: CancellationToken,
    m: BackendMetrics,
}

#[derive(Debug)]
struct BackendMetrics {
    ok: IntCounter,
    refused: IntCounter,
    timeout: IntCounter,
    error: IntCounter,
    ejections: IntCounter,
    pub healthy: IntGauge,
}

impl BackendState {
    /// A backend that starts healthy (not ejected, check up).
    pub fn new(route: &str, id: &str, addr: &str, changed: Arc<Notify>, metrics: &Metrics) -> Self {
        let conn = |r: &str| metrics.proxy_connections_total.with_label_values(&[route, id, r]);
        Self {
            route: route.to_string(),
            id: id.to_string(),
            addr: addr.to_string(),
            active: AtomicU64::new(0),
            check_up: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections_in_row: AtomicU32::new(0),
            changed,
            cancel: CancellationToken::new(),
            m: BackendMetrics {
                ok: conn("ok"),
                refused: conn("refused"),
                timeout: conn("timeout"),
                error: conn("error"),
                ejections: metrics.backend_ejections_total.with_label_values(&[route, id]),
                healthy: metrics.backend_healthy.with_label_values(&[route, id]),
            },
        }
    }

    /// Open connections to this backend.
    pub fn active(&self) -> u64 {
        self.active.load(Relaxed)
    }

    /// Counts a connection open until the guard drops.
    pub fn open_connection(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Relaxed);
        ActiveGuard(Arc::clone(self))
    }

    /// The active check's verdict (true when the route has no check).
    pub fn check_up(&self) -> bool {
        self.check_up.load(Relaxed)
    }

    /// Milliseconds of ejection left at `now_ms`, if ejected.
    pub fn ejected_for(&self, now_ms: u64) -> Option<u64> {
        let until = self.ejected_until_ms.load(Relaxed);
        (until > now_ms).then(|| until - now_ms)
    }

    /// The time an ejection ends, if one is running at `now_ms`.
    pub fn ejected_until(&self, now_ms: u64) -> Option<u64> {
        let until = self.ejected_until_ms.load(Relaxed);
        (until > now_ms).then_some(until)
    }

    /// Takes new connections at `now_ms`.
    pub fn healthy(&self, now_ms: u64) -> bool {
        self.check_up() && self.ejected_for(now_ms).is_none()
    }

    /// Publishes the health gauge (called by the table builder).
    pub fn set_healthy_gauge(&self, healthy: bool) {
        self.m.healthy.set(i64::from(healthy));
    }

    /// Records an active-check transition; wakes the publisher on a change.
    pub fn set_check_up(&self, up: bool) {
        if self.check_up.swap(up, Relaxed) != up {
            self.changed.notify_one();
        }
    }

    /// Records the outcome of a connect attempt at `now_ms`. Returns the end
    /// of a new ejection when this failure ejects the backend.
    pub fn record_connect(&self, result: ConnectResult, now_ms: u64, policy: EjectPolicy) -> Option<u64> {
        match result {
            ConnectResult::Ok => {
                self.m.ok.inc();
                // Loads first: the common case writes nothing to a shared line.
                if self.consecutive_failures.load(Relaxed) != 0 {
                    self.consecutive_failures.store(0, Relaxed);
                }
                if self.ejections_in_row.load(Relaxed) != 0 {
                    self.ejections_in_row.store(0, Relaxed);
                }
                None
            }
            ConnectResult::Refused | ConnectResult::Timeout | ConnectResult::Error => {
                match result {
                    ConnectResult::Refused => self.m.refused.inc(),
                    ConnectResult::Timeout => self.m.timeout.inc(),
                    _ => self.m.error.inc(),
                }
                self.failure(now_ms, policy)
            }
        }
    }

    fn failure(&self, now_ms: u64, policy: EjectPolicy) -> Option<u64> {
        let failures = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if policy.after_failures == 0 {
            return None;
        }
        // A backend back from an ejection is on probation: its first failure
        // ejects it again, for twice as long.
        let on_probation = self.ejections_in_row.load(Relaxed) > 0;
        if failures < policy.after_failures && !on_probation {
            return None;
        }
        let current = self.ejected_until_ms.load(Relaxed);
        if current > now_ms {
            return None; // already ejected by a concurrent failure
        }
        let shift = self.ejections_in_row.load(Relaxed).min(MAX_BACKOFF_SHIFT);
        let until = now_ms + (policy.backoff_ms << shift);
        if self.ejected_until_ms.compare_exchange(current, until, Relaxed, Relaxed).is_err() {
            return None;
        }
        self.ejections_in_row.fetch_add(1, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        self.m.ejections.inc();
        self.changed.notify_one();
        Some(until)
    }
}

/// Decrements a backend's open-connection count on drop.
#[derive(Debug)]
pub struct ActiveGuard(Arc<BackendState>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> BackendState {
        let metrics = Metrics::new().expect("metrics");
        BackendState::new("r", "a", "127.0.0.1:1", Arc::new(Notify::new()), &metrics)
    }

    const POLICY: EjectPolicy = EjectPolicy { after_failures: 3, backoff_ms: 1000 };

    #[test]
    fn ejects_after_consecutive_failures_only() {
        let b = backend();
        assert_eq!(b.record_connect(ConnectResult::Refused, 0, POLICY), None);
        assert_eq!(b.record_connect(ConnectResult::Refused, 0, POLICY), None);
        assert_eq!(b.record_connect(ConnectResult::Ok, 0, POLICY), None);
        assert_eq!(b.record_connect(ConnectResult::Refused, 0, POLICY), None);
        assert_eq!(b.record_connect(ConnectResult::Timeout, 0, POLICY), None);
        assert_eq!(b.record_connect(ConnectResult::Error, 10, POLICY), Some(1010));
        assert!(!b.healthy(500));
        assert!(b.healthy(1010));
    }

    #[test]
    fn backoff_doubles_on_probation_failures_and_resets_on_success() {
        let b = backend();
        for _ in 0..3 {
            b.record_connect(ConnectResult::Refused, 0, POLICY);
        }
        assert_eq!(b.ejected_until(0), Some(1000));
        // Back from ejection: one failure re-ejects for twice as long.
        assert_eq!(b.record_connect(ConnectResult::Refused, 1000, POLICY), Some(3000));
        assert_eq!(b.record_connect(ConnectResult::Refused, 3000, POLICY), Some(7000));
        b.record_connect(ConnectResult::Ok, 7000, POLICY);
        assert_eq!(b.record_connect(ConnectResult::Refused, 7000, POLICY), None);
    }

    #[test]
    fn backoff_is_capped() {
        let b = backend();
        let mut now = 0;
        for _ in 0..3 {
            b.record_connect(ConnectResult::Refused, now, POLICY);
        }
        for _ in 0..20 {
            now = b.ejected_until(now).unwrap_or(now);
            b.record_connect(ConnectResult::Refused, now, POLICY);
        }
        assert_eq!(b.ejected_for(now), Some(1000 << MAX_BACKOFF_SHIFT));
    }

    #[test]
    fn zero_threshold_never_ejects() {
        let b = backend();
        let off = EjectPolicy { after_failures: 0, backoff_ms: 1000 };
        for _ in 0..10 {
            assert_eq!(b.record_connect(ConnectResult::Refused, 0, off), None);
        }
        assert!(b.healthy(0));
    }

    #[test]
    fn check_verdict_and_active_count() {
        let b = Arc::new(backend());
        b.set_check_up(false);
        assert!(!b.healthy(0));
        let g = b.open_connection();
        assert_eq!(b.active(), 1);
        drop(g);
        assert_eq!(b.active(), 0);
    }
}
