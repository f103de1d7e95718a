//! Active health checks: a TCP connect to the backend every interval, with
//! HAProxy's rise/fall hysteresis. One task per checked backend, ended by the
//! backend's cancel token when the registry drops it.

use std::sync::Arc;
use std::time::Duration;

use ferry_client::HealthCheckSpec;
use prometheus::IntCounter;
use tokio::net::TcpStream;
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

/// Spawns the check task of `backend`.
pub fn spawn(backend: Arc<BackendState>, spec: HealthCheckSpec, pass: IntCounter, fail: IntCounter) {
    tokio::spawn(async move {
        let cancel = backend.cancel.clone();
        tokio::select! {
            () = run(&backend, spec, pass, fail) => {}
            () = cancel.cancelled() => {}
        }
    });
}

async fn run(backend: &BackendState, spec: HealthCheckSpec, pass: IntCounter, fail: IntCounter) {
    let mut state = Hysteresis::new(spec.rise, spec.fall);
    let timeout = Duration::from_millis(spec.timeout_ms);
    let mut tick = tokio::time::interval(Duration::from_millis(spec.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let passed =
            matches!(tokio::time::timeout(timeout, TcpStream::connect(backend.addr)).await, Ok(Ok(_)));
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
