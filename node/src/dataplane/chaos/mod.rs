//! Chaos on live traffic: which replicated policies act on which
//! connections, decided by a pure, seeded function.
//!
//! The publisher resolves, for each route on this node, the policies in
//! scope and not expired into a [`RouteChaos`] it puts in the routing table
//! and in the route's long-lived state ([`ChaosCell`]): a connection reads
//! the one its table entry holds, with no lock or map lookup, and an
//! established connection is told of a change through the cell.
//!
//! [`decide`] is the decision: for each policy that covers the connection's
//! backend, a PRNG seeded by the policy's seed and the connection's
//! identity ([`ConnId`]: node, route, the route's connection ordinal on
//! this node) rolls `toxicity`, and then draws every jitter and slice size
//! of that connection. The same seed and connection sequence give the same
//! decisions, on every run and every build.
//!
//! - [`shape`]: the shaped copy of one direction (latency, bandwidth,
//!   slicer, timeout, reset_peer, limit_data, slow_close).

pub mod shape;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use ferry_client::RouteSpec;
use ferry_client::chaos::{ChaosPolicy, Toxic, ToxicKind};
use prometheus::{Histogram, IntCounter};
use tokio::sync::Notify;

use super::stop::Stop;
use crate::telemetry::metrics::Metrics;

/// A policy as it applies to one route on this node.
#[derive(Debug)]
pub struct ActivePolicy {
    pub name: String,
    /// The index of the write that stored it.
    pub revision: u64,
    /// [`ChaosPolicy::effective_seed`].
    pub seed: u64,
    pub toxicity: f64,
    pub toxics: Vec<Toxic>,
    /// `backends[i]`: the policy hits connections to the route's backend
    /// `i`; `None`: every backend.
    pub backends: Option<Vec<bool>>,
    /// `ferry_chaos_connections_total{policy,route}`.
    pub connections: IntCounter,
}

impl ActivePolicy {
    /// Whether the policy covers connections to backend `backend`.
    pub fn covers(&self, backend: usize) -> bool {
        self.backends.as_ref().is_none_or(|m| m.get(backend).copied().unwrap_or(false))
    }
}

/// The policies in effect on one route of this node, by name.
#[derive(Debug, Default)]
pub struct RouteChaos {
    pub policies: Vec<Arc<ActivePolicy>>,
    /// FNV-1a of this node's name and of the route's, for [`ConnId`].
    pub node: u64,
    pub route: u64,
}

impl RouteChaos {
    /// No policy in effect.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The same policies (names, revisions, backend masks): a rebuild that
    /// yields this disturbs no connection.
    pub fn same_as(&self, other: &RouteChaos) -> bool {
        self.policies.len() == other.policies.len()
            && self
                .policies
                .iter()
                .zip(&other.policies)
                .all(|(a, b)| a.name == b.name && a.revision == b.revision && a.backends == b.backends)
    }

    /// The identity of the route's connection `ordinal` on this node.
    pub fn conn(&self, ordinal: u64) -> ConnId {
        ConnId { node: self.node, route: self.route, ordinal }
    }

    /// The names of the policies, in order.
    pub fn names(&self) -> Vec<String> {
        self.policies.iter().map(|p| p.name.clone()).collect()
    }
}

/// A stored policy and its revision, as the publisher receives them.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyInput {
    pub policy: ChaosPolicy,
    pub revision: u64,
}

/// Whether `p` is in effect on node `node` for route `route` at `now_ms`
/// (Unix milliseconds): in scope and not expired.
pub fn in_effect(p: &ChaosPolicy, node: &str, route: &RouteSpec, now_ms: u64) -> bool {
    p.in_scope(node, &route.name)
        && p.expires_at.is_none_or(|at| now_ms < at)
        && (p.scope.backends.is_empty() || route.backends.iter().any(|b| p.scope.backends.contains(&b.id)))
}

/// The policies of `policies` in effect on node `node` for `route` at
/// `now_ms`, in name order (the order their toxics apply).
pub fn resolve(
    policies: &[PolicyInput],
    node: &str,
    route: &RouteSpec,
    now_ms: u64,
    metrics: &Metrics,
) -> RouteChaos {
    let mut active: Vec<Arc<ActivePolicy>> = policies
        .iter()
        .filter(|i| in_effect(&i.policy, node, route, now_ms))
        .map(|i| {
            let p = &i.policy;
            let backends = (!p.scope.backends.is_empty())
                .then(|| route.backends.iter().map(|b| p.scope.backends.contains(&b.id)).collect());
            Arc::new(ActivePolicy {
                name: p.name.clone(),
                revision: i.revision,
                seed: p.effective_seed(i.revision),
                toxicity: p.toxicity,
                toxics: p.toxics.clone(),
                backends,
                connections: metrics.chaos_connections_total.with_label_values(&[&p.name, &route.name]),
            })
        })
        .collect();
    active.sort_by(|a, b| a.name.cmp(&b.name));
    RouteChaos { policies: active, node: fnv(node), route: fnv(&route.name) }
}

/// The earliest `expires_at` of `policies` after `now_ms`: when the table
/// must be rebuilt.
pub fn next_expiry(policies: &[PolicyInput], now_ms: u64) -> Option<u64> {
    policies.iter().filter_map(|i| i.policy.expires_at).filter(|at| *at > now_ms).min()
}

/// Who a connection is, for its decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId {
    /// FNV-1a of this node's name.
    pub node: u64,
    /// FNV-1a of the route's name.
    pub route: u64,
    /// The route's connection ordinal on this node (0 for the first
    /// connection after the node started).
    pub ordinal: u64,
}

impl ConnId {
    /// The identity of connection `ordinal` of `route` on `node`.
    pub fn new(node: &str, route: &str, ordinal: u64) -> Self {
        Self { node: fnv(node), route: fnv(route), ordinal }
    }
}

/// FNV-1a 64 of `s`.
pub fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// SplitMix64: small, fast, and the same on every build (the decisions a
/// seed gives must not change with a dependency's version).
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi]`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// SplitMix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A policy that hit a connection, and the PRNG of its draws on it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub policy: Arc<ActivePolicy>,
    pub rng: Prng,
}

/// The policies of `chaos` that hit connection `id` to backend `backend`,
/// in order: pure, and the same for the same inputs.
pub fn decide(chaos: &RouteChaos, id: ConnId, backend: usize) -> Vec<Hit> {
    let mut hits = Vec::new();
    for p in chaos.policies.iter().filter(|p| p.covers(backend)) {
        let mut rng = Prng::new(mix(p.seed ^ mix(id.node ^ mix(id.route ^ mix(id.ordinal)))));
        let roll = rng.next_f64();
        let hit = roll < p.toxicity;
        tracing::debug!(policy = %p.name, seed = p.seed, conn = id.ordinal, backend, roll, hit, "chaos decision");
        if hit {
            hits.push(Hit { policy: Arc::clone(p), rng });
        }
    }
    hits
}

/// What the hits do before the backend connect: refuse the connection, or
/// hold it (the sum of the `connect_delay` toxics).
pub fn connect_phase(hits: &[Hit]) -> (bool, Duration) {
    let mut refuse = false;
    let mut delay = 0u64;
    for t in hits.iter().flat_map(|h| &h.policy.toxics) {
        match t.kind {
            ToxicKind::Refuse {} => refuse = true,
            ToxicKind::ConnectDelay { delay_ms } => delay = delay.saturating_add(delay_ms),
            _ => {}
        }
    }
    (refuse, Duration::from_millis(delay))
}

/// Chaos metric handles shared by a node's connections.
#[derive(Debug, Clone)]
pub struct ChaosMetrics {
    pub delay: Histogram,
    pub resets: IntCounter,
}

impl ChaosMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            delay: metrics.chaos_injected_delay_seconds.clone(),
            resets: metrics.chaos_resets_total.clone(),
        }
    }
}

/// A route's policies as they change, for its established connections:
/// the current [`RouteChaos`], a generation bumped by each change, and a
/// wake-up. Lives in the route's long-lived state.
#[derive(Debug, Default)]
pub struct ChaosCell {
    current: ArcSwap<RouteChaos>,
    generation: AtomicU64,
    notify: Notify,
    /// The hard stops of the route's accept loops: a change pokes them,
    /// waking every connection of the route on the registration it
    /// already holds (a plain connection waiting for data then decides
    /// again, so that a `timeout` reaches an idle connection).
    stops: std::sync::Mutex<Vec<Stop>>,
}

impl ChaosCell {
    /// The generation: bumped by each change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// `f` of the policies in effect now, without taking a reference count
    /// (a connection start on both cores would contend on it).
    pub fn with_current<R>(&self, f: impl FnOnce(&RouteChaos) -> R) -> R {
        f(&self.current.load())
    }

    /// Replaces the policies if they differ; true if they did, and then
    /// every connection of the route is told.
    pub fn set(&self, chaos: &Arc<RouteChaos>) -> bool {
        if self.current.load().same_as(chaos) {
            return false;
        }
        self.current.store(Arc::clone(chaos));
        self.generation.fetch_add(1, Ordering::Release);
        self.notify.notify_waiters();
        let mut stops = self.stops.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        stops.retain(|s| !s.is_stopped());
        for s in stops.iter() {
            s.poke();
        }
        true
    }

    /// Pokes `stop` at each change from now on (an accept loop's hard
    /// stop, until it is given).
    pub fn wake_on_change(&self, stop: Stop) {
        let mut stops = self.stops.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        stops.retain(|s| !s.is_stopped());
        stops.push(stop);
    }

    /// A watch for the next change after now: take it before reading
    /// [`ChaosCell::current`], so that no change is missed.
    pub fn watch(&self) -> ChangeWatch<'_> {
        ChangeWatch {
            cell: self,
            seen: self.generation.load(Ordering::Acquire),
            fired: AtomicBool::new(false),
        }
    }
}

/// One segment's wait for a change of its route's policies (see
/// [`ChaosCell::watch`]). The copy's pumps check [`ChangeWatch::fired`] at
/// their safe points (waiting for a read).
#[derive(Debug)]
pub struct ChangeWatch<'a> {
    cell: &'a ChaosCell,
    seen: u64,
    fired: AtomicBool,
}

impl ChangeWatch<'_> {
    /// Whether the policies changed (as far as this task has seen).
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::Relaxed)
    }

    fn moved(&self) -> bool {
        self.cell.generation.load(Ordering::Acquire) != self.seen
    }

    /// Never completes: once the policies change it marks the watch fired
    /// and wakes the task, so that the pumps reach a safe point and return.
    /// The notification registers the task once and is polled again only
    /// when the generation moved or the task's waker changed
    /// (`lazy::poll_when`); a change between [`ChaosCell::watch`] and that
    /// registration is seen by the generation check after it.
    pub async fn run(&self) {
        let notified = std::pin::pin!(self.cell.notify.notified());
        let mut wait = std::pin::pin!(super::lazy::poll_when(notified, |_| self.moved()));
        std::future::poll_fn(|cx| {
            if self.fired() {
                return Poll::Pending;
            }
            let woken = wait.as_mut().poll(cx).is_ready();
            if woken || self.moved() {
                self.fired.store(true, Ordering::Relaxed);
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests;
