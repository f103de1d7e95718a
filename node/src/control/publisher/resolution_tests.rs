//! The publisher's host-name resolution under tokio's paused clock, with a
//! scripted resolver: a name is resolved before its route is published and
//! again every interval; only a changed answer rebuilds the table; the hold
//! rule; a hung lookup costs an apply its timeout and holds up no other name.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::tests::{Harness, harness};
use super::*;
use crate::control::resolver::{Lookup, Resolve, ResolveSettings};
use crate::dataplane::table::Resolved;

const INTERVAL: Duration = Duration::from_millis(1_000);
const TIMEOUT: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
enum Reply {
    Addrs(Vec<SocketAddr>),
    Fail(&'static str),
    Hang,
}

/// Answers each host as the test last set it, and counts lookups.
#[derive(Debug, Default)]
struct Scripted {
    replies: Mutex<HashMap<String, Reply>>,
    calls: Mutex<HashMap<String, usize>>,
}

impl Scripted {
    fn set(&self, host: &str, reply: Reply) {
        self.replies.lock().expect("lock").insert(host.into(), reply);
    }

    fn calls(&self, host: &str) -> usize {
        self.calls.lock().expect("lock").get(host).copied().unwrap_or(0)
    }
}

impl Resolve for Scripted {
    fn lookup(&self, host: &str, _port: u16) -> Lookup {
        *self.calls.lock().expect("lock").entry(host.to_string()).or_default() += 1;
        let reply = self.replies.lock().expect("lock").get(host).cloned();
        Box::pin(async move {
            match reply {
                Some(Reply::Addrs(addrs)) => Ok(addrs),
                Some(Reply::Fail(message)) => Err(io::Error::other(message)),
                Some(Reply::Hang) => std::future::pending().await,
                None => Err(io::Error::other("not scripted")),
            }
        })
    }
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|s| s.parse().expect("addr")).collect()
}

/// A running publisher resolving with `resolver`.
struct Running {
    commands: mpsc::Sender<Command>,
    table: Arc<ArcSwap<RoutingTable>>,
    metrics: Metrics,
}

impl Running {
    fn start(resolver: &Arc<Scripted>) -> Self {
        let Harness { publisher, table, changed, metrics, .. } = harness();
        let settings = ResolveSettings { interval: INTERVAL, timeout: TIMEOUT };
        let resolver: Arc<dyn Resolve> = Arc::clone(resolver) as Arc<dyn Resolve>;
        let publisher = publisher.with_resolver(resolver, settings);
        let (commands, rx) = mpsc::channel(4);
        tokio::spawn(publisher.run(rx, changed));
        Self { commands, table, metrics }
    }

    async fn apply(&self, backends: serde_json::Value) {
        let route: RouteSpec = serde_json::from_value(serde_json::json!({
            "name": "web", "listen": "127.0.0.1:0", "balance": "consistent_hash", "backends": backends
        }))
        .expect("route json");
        let (reply, done) = oneshot::channel();
        let cmd = Command::ApplyRoutes { routes: vec![route], all_or_nothing: true, reply };
        self.commands.send(cmd).await.expect("publisher runs");
        assert!(done.await.expect("publisher replies").is_empty(), "the route binds");
    }

    fn route(&self) -> Arc<crate::dataplane::table::RouteEntry> {
        Arc::clone(self.table.load().get("web").expect("route web"))
    }

    fn generation(&self) -> u64 {
        self.table.load().generation
    }

    fn failures(&self, backend: &str) -> u64 {
        self.metrics.backend_resolve_failures_total.with_label_values(&["web", backend]).get()
    }

    fn gauge(&self, backend: &str) -> i64 {
        self.metrics.backend_resolved_addresses.with_label_values(&["web", backend]).get()
    }
}

fn resolved(list: &[&str], error: Option<&str>) -> Resolved {
    Resolved { addrs: Arc::from(addrs(list)), error: error.map(Arc::from) }
}

/// Waits on the paused clock: the publisher's timers fire and its lookups
/// end on the way.
async fn pass(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(start_paused = true)]
async fn a_name_is_resolved_before_publishing_and_again_every_interval() {
    let resolver = Arc::new(Scripted::default());
    resolver.set("db.test", Reply::Addrs(addrs(&["10.0.0.1:5432"])));
    let p = Running::start(&resolver);
    p.apply(serde_json::json!([{"id": "db", "addr": "db.test:5432"}, {"id": "ip", "addr": "127.0.0.1:1"}]))
        .await;
    // The first table with the route already has the answer.
    let r = p.route();
    assert_eq!(r.resolved[0], resolved(&["10.0.0.1:5432"], None));
    assert_eq!(r.resolved[1], resolved(&["127.0.0.1:1"], None), "an IP literal is its own answer");
    assert_eq!(r.healthy, vec![true, true]);
    assert_eq!((resolver.calls("db.test"), p.gauge("db"), p.failures("db")), (1, 1, 0));
    let ring = Arc::clone(r.balancer.ring().expect("ring"));

    // The same answer again: no rebuild.
    let generation = p.generation();
    pass(INTERVAL + Duration::from_millis(1)).await;
    assert_eq!(resolver.calls("db.test"), 2);
    assert_eq!(p.generation(), generation, "an unchanged answer rebuilt the table");

    // A new answer: one rebuild, every address a candidate, the ring kept.
    resolver.set("db.test", Reply::Addrs(addrs(&["10.0.0.2:5432", "10.0.0.3:5432"])));
    pass(INTERVAL).await;
    assert_eq!(resolver.calls("db.test"), 3);
    assert_eq!(p.generation(), generation + 1);
    let r = p.route();
    assert_eq!(r.resolved[0], resolved(&["10.0.0.2:5432", "10.0.0.3:5432"], None));
    assert!(Arc::ptr_eq(&ring, r.balancer.ring().expect("ring")), "a new answer rebuilt the ring");
    assert_eq!(p.gauge("db"), 2);

    // Failures: the last answer is held, the error shows (one rebuild) ...
    resolver.set("db.test", Reply::Fail("Name or service not known"));
    pass(INTERVAL).await;
    let r = p.route();
    assert_eq!(
        r.resolved[0],
        resolved(&["10.0.0.2:5432", "10.0.0.3:5432"], Some("Name or service not known"))
    );
    assert_eq!(r.healthy, vec![true, true], "held through a failure");
    assert_eq!((p.generation(), p.failures("db")), (generation + 2, 1));
    pass(INTERVAL).await;
    assert_eq!((p.generation(), p.failures("db")), (generation + 2, 2), "the same error rebuilt the table");
    // ... until HOLD_FAILURES in a row: unhealthy, not a candidate, the route valid.
    pass(INTERVAL).await;
    let r = p.route();
    assert_eq!(r.resolved[0], resolved(&[], Some("Name or service not known")));
    assert_eq!(r.healthy, vec![false, true]);
    assert!(!r.panic_mode);
    assert_eq!(r.candidates("10.1.1.1:1".parse().expect("addr")).as_slice(), &[1]);
    assert_eq!((p.generation(), p.failures("db"), p.gauge("db")), (generation + 3, 3, 0));
    assert_eq!(p.metrics.backend_healthy.with_label_values(&["web", "db"]).get(), 0);

    // It resolves again: back, error gone.
    resolver.set("db.test", Reply::Addrs(addrs(&["10.0.0.4:5432"])));
    pass(INTERVAL).await;
    let r = p.route();
    assert_eq!(r.resolved[0], resolved(&["10.0.0.4:5432"], None));
    assert_eq!(r.healthy, vec![true, true]);
    assert_eq!(p.metrics.backend_healthy.with_label_values(&["web", "db"]).get(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hung_lookup_costs_an_apply_its_timeout_and_holds_up_no_other_name() {
    let resolver = Arc::new(Scripted::default());
    resolver.set("slow.test", Reply::Hang);
    resolver.set("fast.test", Reply::Addrs(addrs(&["10.0.0.9:80"])));
    let p = Running::start(&resolver);
    let started = tokio::time::Instant::now();
    p.apply(
        serde_json::json!([{"id": "slow", "addr": "slow.test:80"}, {"id": "fast", "addr": "fast.test:80"}]),
    )
    .await;
    assert_eq!(started.elapsed(), TIMEOUT, "new names are looked up in parallel, each within the timeout");
    let r = p.route();
    assert_eq!(r.resolved[0], resolved(&[], Some("no answer within 200 ms")));
    assert_eq!(r.resolved[1], resolved(&["10.0.0.9:80"], None));
    assert_eq!(r.healthy, vec![false, true]);
    assert_eq!(p.failures("slow"), 1, "a failure at apply time is counted");

    // Both are due again at TIMEOUT + INTERVAL: the fast name's new answer
    // is in the table while the slow lookup still hangs.
    resolver.set("fast.test", Reply::Addrs(addrs(&["10.0.0.10:80"])));
    pass(INTERVAL + Duration::from_millis(1)).await;
    assert_eq!(resolver.calls("slow.test"), 2);
    assert_eq!(p.route().resolved[1], resolved(&["10.0.0.10:80"], None));
    assert_eq!(p.failures("slow"), 1, "the second lookup is still running");
    pass(TIMEOUT).await;
    assert_eq!(p.failures("slow"), 2);
}

#[tokio::test(start_paused = true)]
async fn names_no_longer_used_are_not_looked_up_and_lose_their_series() {
    let resolver = Arc::new(Scripted::default());
    resolver.set("db.test", Reply::Addrs(addrs(&["10.0.0.1:5432"])));
    let p = Running::start(&resolver);
    p.apply(serde_json::json!([{"id": "db", "addr": "db.test:5432"}])).await;
    assert_eq!(p.gauge("db"), 1);
    p.apply(serde_json::json!([{"id": "db", "addr": "10.0.0.1:5432"}])).await;
    pass(INTERVAL * 3).await;
    assert_eq!(resolver.calls("db.test"), 1, "a name no route uses was looked up again");
    let text = String::from_utf8(p.metrics.encode().0).expect("utf-8");
    assert!(!text.contains("ferry_backend_resolved_addresses{"), "{text}");
    assert!(!text.contains("ferry_backend_resolve_failures_total{"), "{text}");
    // The IP literal is served.
    assert_eq!(p.route().resolved[0], resolved(&["10.0.0.1:5432"], None));
}
