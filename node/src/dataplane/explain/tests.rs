use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ferry_client::RouteSpec;
use tokio::sync::Notify;

use super::*;
use crate::dataplane::backend::BackendState;
use crate::dataplane::peers::{Peer, SelfNode};
use crate::dataplane::table::{RouteInput, RouteState};
use crate::telemetry::metrics::Metrics;

/// Distinct client keys hashed by the brute-force counts.
const KEYS: u32 = 100_000;

fn spec(json: serde_json::Value) -> RouteSpec {
    serde_json::from_value(json).expect("route json")
}

/// The long-lived state of a route's backends, shared by the tables built
/// before and after a change (as the registry shares it).
struct Live {
    metrics: Metrics,
    route: Arc<RouteState>,
    backends: HashMap<String, Arc<BackendState>>,
}

impl Live {
    fn new(name: &str) -> Self {
        let metrics = Metrics::new().expect("metrics");
        let route = Arc::new(RouteState::new(name, &metrics));
        Self { metrics, route, backends: HashMap::new() }
    }

    fn backend(&mut self, spec: &RouteSpec, id: &str) -> Arc<BackendState> {
        let addr = spec.backends.iter().find(|b| b.id == id).map(|b| b.addr.clone()).unwrap_or_default();
        let metrics = &self.metrics;
        Arc::clone(self.backends.entry(id.to_string()).or_insert_with(|| {
            Arc::new(BackendState::new(&spec.name, id, &addr, Arc::new(Notify::new()), metrics))
        }))
    }

    fn input(&mut self, spec: &RouteSpec) -> RouteInput {
        let backends = spec.backends.iter().map(|b| self.backend(spec, &b.id)).collect();
        let resolved = spec
            .backends
            .iter()
            .map(|b| Resolved {
                addrs: Arc::from([b.addr.parse::<SocketAddr>().expect("literal")]),
                error: None,
            })
            .collect();
        RouteInput {
            spec: Arc::new(spec.clone()),
            listen: "127.0.0.1:0".parse().expect("addr"),
            state: Arc::clone(&self.route),
            backends,
            resolved,
            chaos: Arc::default(),
        }
    }
}

fn three_peers() -> Arc<PeerDirectory> {
    let peer = |id: u64, state| Peer {
        id,
        name: format!("n{id}"),
        state,
        cluster_addr: SocketAddr::from(([127, 0, 0, id as u8], 7947)),
    };
    Arc::new(PeerDirectory::new(
        SelfNode { id: 1, name: "n1".into() },
        [peer(2, PeerState::Alive), peer(3, PeerState::Alive), peer(4, PeerState::Down)],
    ))
}

fn client(i: u32) -> SocketAddr {
    SocketAddr::from((i.wrapping_mul(2_654_435_761).to_be_bytes(), 1))
}

/// The backend id a new connection from `client` goes to first, by the
/// data plane's own call.
fn first(table: &RoutingTable, route: &str, client: SocketAddr) -> Option<String> {
    let r = table.get(route).expect("route");
    r.candidates(client).as_slice().first().map(|&i| r.spec.backends[i as usize].id.clone())
}

/// Within 4.5 standard deviations of a binomial count over [`KEYS`] keys
/// (a sampled share misses its exact value by more about once in 150,000
/// comparisons), plus a little for float sums.
fn close(sampled: f64, exact: f64) -> bool {
    let sd = (exact * (1.0 - exact) / f64::from(KEYS)).sqrt();
    (sampled - exact).abs() <= 4.5 * sd + 1e-9
}

#[test]
fn key_space_shares_and_moves_equal_a_brute_force_count() {
    let backend = |id: &str, port: u16, weight: u32, node: Option<&str>| serde_json::json!({"id": id, "addr": format!("127.0.0.1:{port}"), "weight": weight, "node": node});
    let before = spec(serde_json::json!({
        "name": "h", "listen": "127.0.0.1:0", "balance": "consistent_hash",
        "backends": [backend("a", 1, 1, None), backend("b", 2, 2, Some("n2")), backend("c", 3, 1, None),
                     backend("d", 4, 1, Some("n3")), backend("gone", 5, 1, Some("n4"))]
    }));
    // b leaves, d doubles, e and f arrive (f on an alive peer), c stays down.
    let after = spec(serde_json::json!({
        "name": "h", "listen": "127.0.0.1:0", "balance": "consistent_hash",
        "backends": [backend("a", 1, 1, None), backend("c", 3, 1, None), backend("d", 4, 2, Some("n3")),
                     backend("e", 6, 1, None), backend("f", 7, 1, Some("n2")), backend("gone", 5, 1, Some("n4"))]
    }));
    let peers = three_peers();
    let mut live = Live::new("h");
    let inp = live.input(&before);
    live.backend(&before, "c").set_check_up(false);
    let t1 = RoutingTable::build(1, vec![inp], &RoutingTable::default(), &peers, 0);
    let plan = dry_run(&t1, &after, 0, "n1", 7);
    let t2 = RoutingTable::build(2, vec![live.input(&after)], &t1, &peers, 0);

    let mut count_before: HashMap<String, u32> = HashMap::new();
    let mut count_after: HashMap<String, u32> = HashMap::new();
    let (mut away, mut gained) = (HashMap::<String, u32>::new(), HashMap::<String, u32>::new());
    let mut moved = 0u32;
    for i in 0..KEYS {
        let (b, a) = (first(&t1, "h", client(i)), first(&t2, "h", client(i)));
        *count_before.entry(b.clone().unwrap_or_default()).or_default() += 1;
        *count_after.entry(a.clone().unwrap_or_default()).or_default() += 1;
        if a != b {
            moved += 1;
            *away.entry(b.unwrap_or_default()).or_default() += 1;
            *gained.entry(a.unwrap_or_default()).or_default() += 1;
        }
    }
    let frac =
        |m: &HashMap<String, u32>, id: &str| f64::from(m.get(id).copied().unwrap_or(0)) / f64::from(KEYS);
    let exact = |v: Option<f64>| v.expect("a share");
    assert!(
        close(f64::from(moved) / f64::from(KEYS), exact(plan.moved)),
        "moved {moved} vs {:?}",
        plan.moved
    );
    assert_eq!(
        plan.backends.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c", "d", "gone", "e", "f"]
    );
    for b in &plan.backends {
        let id = b.id.as_str();
        if let Some(share) = b.before {
            assert!(
                close(frac(&count_before, id), share),
                "{id} before: {} vs {share}",
                frac(&count_before, id)
            );
        }
        if let Some(share) = b.after {
            assert!(
                close(frac(&count_after, id), share),
                "{id} after: {} vs {share}",
                frac(&count_after, id)
            );
        }
        assert!(
            close(frac(&away, id), exact(b.moved_away)),
            "{id} away: {} vs {:?}",
            frac(&away, id),
            b.moved_away
        );
        assert!(
            close(frac(&gained, id), exact(b.moved_in)),
            "{id} in: {} vs {:?}",
            frac(&gained, id),
            b.moved_in
        );
    }
    // The shape, not only the agreement: c is down and "gone" unreachable
    // on both sides, b leaves, e and f arrive.
    let by_id: HashMap<&str, &DryRunBackend> = plan.backends.iter().map(|b| (b.id.as_str(), b)).collect();
    assert_eq!((by_id["c"].before, by_id["c"].after, by_id["c"].healthy), (Some(0.0), Some(0.0), false));
    assert_eq!((by_id["gone"].before, by_id["gone"].after), (Some(0.0), Some(0.0)));
    assert_eq!((by_id["b"].after, by_id["e"].before), (None, None));
    assert_eq!(by_id["b"].moved_away, by_id["b"].before, "every key of b moves");
    assert!(by_id["b"].before.is_some_and(|s| s > 0.3), "b has weight 2 of 4: {:?}", by_id["b"].before);
    let total_after: f64 = plan.backends.iter().filter_map(|b| b.after).sum();
    assert!((total_after - 1.0).abs() < 1e-9, "{total_after}");
    assert_eq!(
        (plan.before.as_ref().map(|s| s.share_of), plan.after.share_of),
        (Some(ShareOf::KeySpace), ShareOf::KeySpace)
    );
    assert_eq!((plan.index, plan.table_generation), (7, 1));
    // Nothing was changed by asking.
    assert_eq!(t1.get("h").expect("route").spec.backends.len(), 5);
}

#[test]
fn a_new_route_moves_every_key_onto_its_backends() {
    let s = spec(serde_json::json!({
        "name": "new", "listen": "127.0.0.1:0", "balance": "consistent_hash",
        "backends": [{"id": "a", "addr": "127.0.0.1:1"}, {"id": "b", "addr": "127.0.0.1:2", "weight": 3}]
    }));
    let plan = dry_run(&RoutingTable::default(), &s, 0, "n1", 0);
    assert!(plan.before.is_none());
    assert_eq!(plan.moved, Some(1.0));
    let mut live = Live::new("new");
    let t = RoutingTable::build(1, vec![live.input(&s)], &RoutingTable::default(), &three_peers(), 0);
    let b_keys = (0..KEYS).filter(|&i| first(&t, "new", client(i)).as_deref() == Some("b")).count();
    let b = &plan.backends[1];
    assert_eq!((b.before, b.moved_in), (None, b.after));
    assert!(close(b_keys as f64 / f64::from(KEYS), b.after.expect("share")), "{b_keys} vs {:?}", b.after);
}

#[test]
fn connection_shares_equal_a_brute_force_count() {
    for balance in ["weighted", "round_robin", "random", "least_connections"] {
        let before = spec(serde_json::json!({
            "name": "w", "listen": "127.0.0.1:0", "balance": balance,
            "backends": [{"id": "a", "addr": "127.0.0.1:1", "weight": 5}, {"id": "b", "addr": "127.0.0.1:2", "weight": 3}]
        }));
        let after = spec(serde_json::json!({
            "name": "w", "listen": "127.0.0.1:0", "balance": balance,
            "backends": [{"id": "a", "addr": "127.0.0.1:1", "weight": 5}, {"id": "b", "addr": "127.0.0.1:2", "weight": 1},
                         {"id": "c", "addr": "127.0.0.1:3", "weight": 2}, {"id": "z", "addr": "127.0.0.1:4", "weight": 0}]
        }));
        let peers = three_peers();
        let mut live = Live::new("w");
        let t1 = RoutingTable::build(1, vec![live.input(&before)], &RoutingTable::default(), &peers, 0);
        let plan = dry_run(&t1, &after, 0, "n1", 1);
        assert_eq!(plan.moved, None, "{balance}");
        assert_eq!(plan.after.share_of, ShareOf::NewConnections);
        let t2 = RoutingTable::build(2, vec![live.input(&after)], &t1, &peers, 0);
        let mut count: HashMap<String, u32> = HashMap::new();
        // Every connection stays open, so least_connections sees the load
        // it balances (the others ignore it).
        let mut open = Vec::new();
        for i in 0..KEYS {
            let id = first(&t2, "w", client(i)).unwrap_or_default();
            open.push(live.backend(&after, &id).open_connection());
            *count.entry(id).or_default() += 1;
        }
        for b in &plan.backends {
            let sampled = f64::from(count.get(&b.id).copied().unwrap_or(0)) / f64::from(KEYS);
            let exact = b.after.expect("every backend stays");
            // The rotations repeat exactly: a count is off by at most one period.
            let ok = if balance == "random" {
                close(sampled, exact)
            } else {
                (sampled - exact).abs() <= 8.0 / f64::from(KEYS)
            };
            assert!(ok, "{balance} {}: {sampled} vs {exact}", b.id);
        }
        let shares: Vec<Option<f64>> = plan.backends.iter().map(|b| b.after).collect();
        let want = if balance == "round_robin" {
            vec![Some(1.0 / 3.0), Some(1.0 / 3.0), Some(1.0 / 3.0), Some(0.0)]
        } else {
            vec![Some(0.625), Some(0.125), Some(0.25), Some(0.0)]
        };
        assert!(
            shares.iter().zip(&want).all(|(a, b)| (a.unwrap_or(-1.0) - b.unwrap_or(0.0)).abs() < 1e-12),
            "{balance}: {shares:?}"
        );
        let before_a = plan.backends[0].before.expect("a before");
        let want_a = if balance == "round_robin" { 0.5 } else { 0.625 };
        assert!((before_a - want_a).abs() < 1e-12, "{balance}: {before_a}");
    }
}

/// The order explain shows is the order the next connection gets, and
/// asking moves no counter.
#[test]
fn explain_shows_the_next_connections_order_without_taking_it() {
    for balance in ["weighted", "round_robin", "least_connections", "consistent_hash"] {
        let s = spec(serde_json::json!({
            "name": "r", "listen": "127.0.0.1:0", "balance": balance, "max_connect_attempts": 4,
            "backends": [{"id": "a", "addr": "127.0.0.1:1", "weight": 3}, {"id": "b", "addr": "127.0.0.1:2"},
                         {"id": "c", "addr": "127.0.0.1:3", "weight": 2}]
        }));
        let mut live = Live::new("r");
        let t = RoutingTable::build(1, vec![live.input(&s)], &RoutingTable::default(), &three_peers(), 0);
        let entry = t.get("r").expect("route");
        // Some load, for least_connections to weigh.
        let _held = live.backend(&s, "a").open_connection();
        for step in 0..12u32 {
            let c = client(step);
            let shown = explain(&t, entry, c, 0, "n1", 1);
            let again = explain(&t, entry, c, 0, "n1", 1);
            assert_eq!(shown, again, "{balance}: asking changed something");
            let order: Vec<&str> =
                shown.backends.iter().filter(|b| b.attempt.is_some()).map(|b| b.id.as_str()).collect();
            let taken = entry.candidates(c);
            let real: Vec<&str> =
                taken.as_slice().iter().map(|&i| s.backends[i as usize].id.as_str()).collect();
            assert_eq!(order, real, "{balance} step {step}");
            assert_eq!(shown.deterministic, balance == "consistent_hash");
            assert_eq!(shown.hash.is_some(), balance == "consistent_hash");
        }
    }
}

#[test]
fn explain_says_why_a_backend_is_not_tried() {
    let s = spec(serde_json::json!({
        "name": "x", "listen": "127.0.0.1:0", "balance": "consistent_hash", "max_connect_attempts": 2,
        "health_check": {},
        "backends": [{"id": "ok", "addr": "127.0.0.1:1"}, {"id": "zero", "addr": "127.0.0.1:2", "weight": 0},
                     {"id": "down", "addr": "127.0.0.1:3"}, {"id": "n4s", "addr": "127.0.0.1:4", "node": "n4"},
                     {"id": "who", "addr": "127.0.0.1:5", "node": "n9"}, {"id": "peer", "addr": "127.0.0.1:6", "node": "n2"},
                     {"id": "more", "addr": "127.0.0.1:7"}]
    }));
    let mut live = Live::new("x");
    live.backend(&s, "down").set_check_up(false);
    let t = RoutingTable::build(3, vec![live.input(&s)], &RoutingTable::default(), &three_peers(), 0);
    let entry = t.get("x").expect("route");
    let c: SocketAddr = "[::ffff:10.1.2.3]:4000".parse().expect("addr");
    let e = explain(&t, entry, c, 0, "n1", 9);
    let by_id: HashMap<&str, &ExplainBackend> = e.backends.iter().map(|b| (b.id.as_str(), b)).collect();
    let reason = |id: &str| by_id[id].reason.clone().unwrap_or_default();
    assert!(reason("zero").contains("weight 0"), "{}", reason("zero"));
    assert!(reason("down").contains("check is down"), "{}", reason("down"));
    assert!(reason("n4s").contains("n4 is down"), "{}", reason("n4s"));
    assert!(reason("who").contains("does not know"), "{}", reason("who"));
    let tried: Vec<&str> = e.backends.iter().filter(|b| b.attempt.is_some()).map(|b| b.id.as_str()).collect();
    assert_eq!(tried.len(), 2, "{tried:?}");
    let over: Vec<&str> = ["ok", "peer", "more"].into_iter().filter(|id| !tried.contains(id)).collect();
    assert!(over.iter().all(|id| reason(id).contains("max_connect_attempts")), "{over:?}");
    let peer = &by_id["peer"].owner;
    assert_eq!((peer.local, peer.node_id, peer.state.as_deref()), (false, Some(2), Some("alive")));
    assert_eq!((by_id["peer"].check.as_str(), by_id["ok"].check.as_str()), ("remote", "up"));
    let hash = e.hash.expect("hash");
    assert_eq!(hash.input, "10.1.2.3", "a mapped address hashes as IPv4, without the port");
    assert_eq!((e.index, e.table_generation), (9, 3));
    // The first candidate is the ring owner when that one is eligible.
    let owner = hash.ring_owner.expect("ring owner");
    if entry.balancer.mask()[entry.backend_index(&owner).expect("index")] {
        assert_eq!(tried[0], owner);
    }
}

/// The chaos policies in effect are listed, each backend names those that
/// act on it, and `hits_next` is the decision the next connection gets.
#[test]
fn explain_shows_the_chaos_the_next_connection_meets() {
    use crate::dataplane::chaos::{self, PolicyInput};
    let s = spec(serde_json::json!({
        "name": "c", "listen": "127.0.0.1:0", "balance": "round_robin",
        "backends": [{"id": "a", "addr": "127.0.0.1:1"}, {"id": "b", "addr": "127.0.0.1:2"}]
    }));
    let policy = |name: &str, toxicity: f64, backends: &[&str]| PolicyInput {
        policy: serde_json::from_value(serde_json::json!({
            "name": name, "toxicity": toxicity, "scope": {"backends": backends},
            "toxics": [{"kind": {"latency": {"latency_ms": 10}}}]
        }))
        .expect("policy"),
        revision: 3,
    };
    let mut live = Live::new("c");
    let mut inp = live.input(&s);
    let policies = [policy("half", 0.5, &[]), policy("only-b", 1.0, &["b"])];
    inp.chaos = Arc::new(chaos::resolve(&policies, "n1", &s, 0, &live.metrics));
    let t = RoutingTable::build(1, vec![inp], &RoutingTable::default(), &three_peers(), 0);
    let entry = t.get("c").expect("route");
    let c = client(0);
    let mut hits = (0, 0);
    for _ in 0..40 {
        let e = explain(&t, entry, c, 0, "n1", 1);
        assert_eq!(e.chaos.iter().map(|p| p.policy.as_str()).collect::<Vec<_>>(), ["half", "only-b"]);
        assert_eq!(e.chaos[1].backends, Some(vec!["b".to_string()]));
        let first = e.backends[0].id.clone();
        let want_b = if first == "b" { vec!["half", "only-b"] } else { vec!["half"] };
        assert_eq!(e.backends[0].chaos, want_b);
        assert_eq!(e.chaos[1].hits_next, (first == "b").then_some(true));
        // The connection takes the ordinal and the turn explain showed.
        let ordinal = entry.state.next_ordinal();
        assert_eq!(ordinal, e.next_connection);
        let idx = entry.candidates(c).as_slice()[0] as usize;
        assert_eq!(s.backends[idx].id, first);
        let decided = chaos::decide(&entry.chaos, entry.chaos.conn(ordinal), idx);
        let half = decided.iter().any(|h| h.policy.name == "half");
        assert_eq!(e.chaos[0].hits_next, Some(half));
        if half {
            hits.0 += 1;
        } else {
            hits.1 += 1;
        }
    }
    assert!(hits.0 > 5 && hits.1 > 5, "toxicity 0.5 hit {hits:?}");
}

/// A backend keeps its health in the plan while the node would keep its
/// state (same id, address and check); under a new address it starts
/// afresh, healthy, as the node would start it.
#[test]
fn a_backend_keeps_its_health_only_while_the_node_keeps_its_state() {
    let route = |c_addr: &str, interval: u64| {
        spec(serde_json::json!({
            "name": "k", "listen": "127.0.0.1:0", "balance": "consistent_hash",
            "health_check": {"interval_ms": interval},
            "backends": [{"id": "a", "addr": "127.0.0.1:1"}, {"id": "c", "addr": c_addr}]
        }))
    };
    let mut live = Live::new("k");
    let inp = live.input(&route("127.0.0.1:3", 1000));
    live.backend(&route("127.0.0.1:3", 1000), "c").set_check_up(false);
    let t = RoutingTable::build(1, vec![inp], &RoutingTable::default(), &three_peers(), 0);
    let c_of = |plan: &DryRun| plan.backends.iter().find(|b| b.id == "c").cloned().expect("c");
    let kept = c_of(&dry_run(&t, &route("127.0.0.1:3", 1000), 0, "n1", 1));
    assert_eq!((kept.healthy, kept.after), (false, Some(0.0)));
    for changed in [route("127.0.0.1:4", 1000), route("127.0.0.1:3", 2000)] {
        let fresh = c_of(&dry_run(&t, &changed, 0, "n1", 1));
        assert!(fresh.healthy && fresh.after.is_some_and(|s| s > 0.2), "{fresh:?}");
    }
}
