//! `Outbox`: the foca `Runtime`, which only enqueues.
//!
//! It wraps foca's `AccumulatingRuntime`; the driver drains it after every
//! call into foca (send, schedule, notify). The per-packet `DataSent` /
//! `DataReceived` notifications of the `unstable-notifications` feature are
//! dropped here, before they are cloned; only `ProbeFailed` is wanted from it.

use std::time::Duration;

use bytes::Bytes;
use foca::{AccumulatingRuntime, Notification, OwnedNotification, Runtime, Timer};

use crate::identity::NodeIdentity;

/// Everything one foca call asked for, in order.
#[derive(Default)]
pub struct Outbox {
    inner: AccumulatingRuntime<NodeIdentity>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("backlog", &self.inner.backlog()).finish()
    }
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Next datagram to send: destination identity and foca payload.
    pub fn next_send(&mut self) -> Option<(NodeIdentity, Bytes)> {
        self.inner.to_send()
    }

    /// Next timer to schedule, relative to now.
    pub fn next_timer(&mut self) -> Option<(Duration, Timer<NodeIdentity>)> {
        self.inner.to_schedule()
    }

    /// Next notification.
    pub fn next_notification(&mut self) -> Option<OwnedNotification<NodeIdentity>> {
        self.inner.to_notify()
    }
}

impl Runtime<NodeIdentity> for Outbox {
    fn notify(&mut self, notification: Notification<'_, NodeIdentity>) {
        match notification {
            Notification::DataSent(_) | Notification::DataReceived(_) => {}
            other => self.inner.notify(other),
        }
    }

    fn send_to(&mut self, to: NodeIdentity, data: &[u8]) {
        self.inner.send_to(to, data);
    }

    fn submit_after(&mut self, event: Timer<NodeIdentity>, after: Duration) {
        self.inner.submit_after(event, after);
    }
}
