//! The hard stop of a listener's connections, waited on cheaply.
//!
//! Every connection waits for its listener's hard stop (the drain deadline)
//! for its whole life, and that wait is polled on every wake-up of the
//! connection's task: two per keep-alive request. A tokio-util
//! `CancellationToken` answers each of those polls with two mutex
//! acquisitions (its tree node, then its `Notify`'s waiter list), on a lock
//! the connections of both workers share. [`Stop::stopped`] registers the
//! task's waker once and then answers with one atomic load, going back to
//! the lock only if the task's waker changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

/// A one-way stop signal shared by a listener's connections. Cloning shares
/// it.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    stopped: AtomicBool,
    /// Bumped by each [`Stop::poke`].
    pokes: AtomicU64,
    notify: Notify,
}

impl Stop {
    /// A signal not yet given.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives the signal: every [`Stop::stopped`] completes, now and later.
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::Release);
        self.inner.notify.notify_waiters();
    }

    /// Wakes every task waiting in [`Stop::stopped`] without stopping
    /// anything: the connections then look at what changed (their route's
    /// chaos policies), on the registration they already hold.
    pub fn poke(&self) {
        self.inner.pokes.fetch_add(1, Ordering::Release);
        self.inner.notify.notify_waiters();
    }

    /// Whether the signal was given.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::Acquire)
    }

    /// Completes once the signal is given. Polling it costs one atomic load
    /// while the task's waker stays the one it registered
    /// ([`super::lazy::poll_when`]).
    ///
    /// A [`Stop::poke`] wakes the task (which is the point) and the wait
    /// registers again; it does not complete.
    pub async fn stopped(&self) {
        loop {
            // Created before the flag is read: a `stop` between the two
            // still completes it, as a `Notified` receives every
            // `notify_waiters` from its creation on, polled or not (so no
            // `enable`, which would take the waiter list's lock once more
            // per connection).
            let notified = std::pin::pin!(self.inner.notify.notified());
            let pokes = self.inner.pokes.load(Ordering::Acquire);
            if self.is_stopped() {
                return;
            }
            let poked = || self.inner.pokes.load(Ordering::Acquire) != pokes;
            super::lazy::poll_when(notified, |_| self.is_stopped() || poked()).await;
            if self.is_stopped() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::Context;

    use super::*;
    use crate::dataplane::lazy::CountingWaker;

    #[test]
    fn stop_wakes_the_latest_waker_and_completes_every_wait() {
        let stop = Stop::new();
        let ((first, w1), (second, w2)) = (CountingWaker::new(), CountingWaker::new());
        let mut wait = std::pin::pin!(stop.stopped());
        let mut other = std::pin::pin!(stop.stopped());
        assert!(wait.as_mut().poll(&mut Context::from_waker(&w1)).is_pending());
        assert!(wait.as_mut().poll(&mut Context::from_waker(&w1)).is_pending(), "the same waker again");
        // The task moved to another waker: that one must be woken, not the first.
        assert!(wait.as_mut().poll(&mut Context::from_waker(&w2)).is_pending());
        assert!(other.as_mut().poll(&mut Context::from_waker(&w1)).is_pending());
        assert!(!stop.is_stopped());
        stop.stop();
        assert!(stop.is_stopped());
        assert_eq!(second.count(), 1, "the waker registered last is woken");
        assert_eq!(first.count(), 1, "the other wait's waker is woken");
        assert!(wait.as_mut().poll(&mut Context::from_waker(&w2)).is_ready());
        assert!(other.as_mut().poll(&mut Context::from_waker(&w1)).is_ready());
        // A wait that starts after the signal completes at once.
        let mut late = std::pin::pin!(stop.stopped());
        assert!(late.as_mut().poll(&mut Context::from_waker(&w1)).is_ready());
    }

    /// A poke wakes the waiting task without completing the wait, and a
    /// stop after it still completes it (the wait registered again).
    #[test]
    fn a_poke_wakes_without_stopping_and_a_later_stop_still_completes() {
        let stop = Stop::new();
        let (count, waker) = CountingWaker::new();
        let mut wait = std::pin::pin!(stop.stopped());
        assert!(wait.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
        stop.poke();
        assert_eq!(count.count(), 1, "the poke wakes the task");
        assert!(wait.as_mut().poll(&mut Context::from_waker(&waker)).is_pending(), "and does not stop it");
        stop.stop();
        assert_eq!(count.count(), 2, "the stop after a poke wakes it too");
        assert!(wait.as_mut().poll(&mut Context::from_waker(&waker)).is_ready());
    }

    #[test]
    fn a_stop_given_before_the_first_poll_completes_the_wait() {
        let stop = Stop::new();
        let (_, waker) = CountingWaker::new();
        let mut wait = std::pin::pin!(stop.stopped());
        stop.stop();
        assert!(wait.as_mut().poll(&mut Context::from_waker(&waker)).is_ready());
    }

    #[tokio::test]
    async fn connections_on_another_runtime_see_the_stop() {
        let stop = Stop::new();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (s, (tx, rx)) = (stop.clone(), tokio::sync::oneshot::channel());
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let waits: Vec<_> = (0..3)
                    .map(|_| {
                        let s = s.clone();
                        tokio::spawn(async move { s.stopped().await })
                    })
                    .collect();
                let _ = tx.send(());
                for w in waits {
                    w.await.expect("wait task");
                }
            })
        });
        rx.await.expect("waits started");
        tokio::task::yield_now().await;
        stop.stop();
        let joined = tokio::task::spawn_blocking(move || thread.join().expect("runtime thread"));
        tokio::time::timeout(std::time::Duration::from_secs(5), joined)
            .await
            .expect("every wait on the other runtime ended within 5 s of the stop")
            .expect("join");
    }
}
