//! Futures polled only when their answer can have changed.
//!
//! A connection's task is woken for every chunk it moves (two wake-ups per
//! keep-alive request), and every wake-up polls each future the task waits
//! on. A future that has registered the task's waker (a timer, a stop
//! signal) wakes that waker itself once it is ready, so polling it again
//! with the same waker only registers it again: work on every wake-up, for
//! a stop signal under a lock. [`poll_when`] skips those polls.

use std::future::Future;
use std::pin::Pin;
use std::task::{Poll, Waker};

/// Polls `fut` only when `due(fut)` says it may be ready (a cheap check:
/// an atomic load) or when the task's waker is not the one `fut` last
/// registered. Polls are `unconstrained`: tokio's cooperative budget could
/// otherwise make a poll return `Pending` without registering the waker,
/// and the wait would then never be woken.
pub(crate) fn poll_when<'a, F: Future>(
    mut fut: Pin<&'a mut F>,
    due: impl Fn(&F) -> bool + 'a,
) -> impl Future<Output = F::Output> + 'a {
    let mut registered: Option<Waker> = None;
    std::future::poll_fn(move |cx| {
        let current = registered.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if current && !due(fut.as_ref().get_ref()) {
            return Poll::Pending;
        }
        let polled = std::pin::pin!(tokio::task::unconstrained(fut.as_mut())).poll(cx);
        if polled.is_pending() && !current {
            registered = Some(cx.waker().clone());
        }
        polled
    })
}

/// A waker that counts its wake-ups, for tests of who gets woken.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct CountingWaker(std::sync::atomic::AtomicUsize);

#[cfg(test)]
impl CountingWaker {
    /// A counter and a waker that bumps it.
    pub(crate) fn new() -> (std::sync::Arc<Self>, Waker) {
        let counter = std::sync::Arc::new(Self::default());
        (std::sync::Arc::clone(&counter), Waker::from(counter))
    }

    /// Wake-ups so far.
    pub(crate) fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
impl std::task::Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}
