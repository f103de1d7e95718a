//! Active health checks: a TCP connect to the backend every interval, with
//! HAProxy's rise/fall hysteresis. One task per checked backend, ended by the
//! backend's cancel token when the registry drops it.
//!
//! The backend's addresses come from the control plane on a watch channel
//! (a host name's answer changes over time). A check tries them in turn,
//! each within `timeout_ms`, and passes when one accepts, as a connection
//! would. A backend with no address (its name does not resolve) is not
//! checked: the check would say nothing the resolution has not said, and the
//! backend is unhealthy already.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_client::HealthCheckSpec;
use prometheus::IntCounter;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{info, warn};

use super::backend::BackendState;

/// Rise/fall counting: the decision part of a health check, free of I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    rise: u32,
    fall: u32,
    up: bool,
    streak: u32,
}

impl Hysteresis {
    /// Starts up, as HAProxy does.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self { rise, fall, up: true, streak: 0 }
    }

    /// Feeds one check result; returns the new state when it changed.
    pub fn observe(&mut self, passed: bool) -> Option<bool> {
        if passed == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak >= needed {
            self.up = passed;
            self.streak = 0;
            return Some(passed);
        }
        None
    }
}

/// The addresses a check connects to, as the control plane last resolved
/// them.
pub type Addrs = watch::Receiver<Arc<[SocketAddr]>>;

/// Spawns the check task of `backend`, checking `addrs`.
pub fn spawn(
    backend: Arc<BackendState>,
    spec: HealthCheckSpec,
    addrs: Addrs,
    pass: IntCounter,
    fail: IntCounter,
) {
    tokio::spawn(async move {
        let cancel = backend.cancel.clone();
        tokio::select! {
            () = run(&backend, spec, addrs, pass, fail) => {}
            () = cancel.cancelled() => {}
        }
    });
}

/// True when one of `addrs` accepts a connection, each tried within `timeout`.
async fn probe(addrs: &[SocketAddr], timeout: Duration) -> bool {
    for &addr in addrs {
        if matches!(tokio::time::timeout(timeout, TcpStream::connect(addr)).await, Ok(Ok(_))) {
            return true;
        }
    }
    false
}

async fn run(
    backend: &BackendState,
    spec: HealthCheckSpec,
    addrs: Addrs,
    pass: IntCounter,
    fail: IntCounter,
) {
    let mut state = Hysteresis::new(spec.rise, spec.fall);
    let timeout = Duration::from_millis(spec.timeout_ms);
    let mut tick = tokio::time::interval(Duration::from_millis(spec.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Cloned, not borrowed: the borrow would block the sender across the probe.
        let current = Arc::clone(&*addrs.borrow());
        if current.is_empty() {
            continue;
        }
        let passed = probe(&current, timeout).await;
        if passed {
            pass.inc()
        } else {
            fail.inc()
        }
        if let Some(up) = state.observe(passed) {
            if up {
                info!(route = %backend.route, backend = %backend.id, addr = %backend.addr, "health check: up");
            } else {
                warn!(route = %backend.route, backend = %backend.id, addr = %backend.addr, "health check: down");
            }
            backend.set_check_up(up);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::Metrics;
    use tokio::sync::Notify;

    /// The check follows the addresses the control plane sends: none, no
    /// check; then a refusing address and an accepting one, a pass.
    #[tokio::test]
    async fn checks_follow_the_resolved_addresses() {
        let metrics = Metrics::new().expect("metrics");
        let backend =
            Arc::new(BackendState::new("r", "a", "a.example:80", Arc::new(Notify::new()), &metrics));
        let spec = HealthCheckSpec { interval_ms: 10, timeout_ms: 1_000, rise: 1, fall: 1 };
        let counter = |r: &str| metrics.health_checks_total.with_label_values(&["r", "a", r]);
        let (tx, rx) = watch::channel(Arc::<[SocketAddr]>::from([]));
        spawn(Arc::clone(&backend), spec, rx, counter("pass"), counter("fail"));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!((counter("pass").get(), counter("fail").get()), (0, 0), "no address, no check");

        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let closed_addr = closed.local_addr().expect("addr");
        drop(closed);
        tx.send_replace(Arc::from([closed_addr, open.local_addr().expect("addr")]));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while counter("pass").get() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no passing check");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(counter("fail").get(), 0, "the refusing first address failed the check");
        assert!(backend.check_up());
        backend.cancel.cancel();
    }

    #[test]
    fn fall_then_rise() {
        let mut h = Hysteresis::new(2, 3);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None, "a pass resets the fall streak");
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(false));
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(true));
        assert_eq!(h.observe(true), None);
    }
}
