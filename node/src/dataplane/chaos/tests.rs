use ferry_client::chaos::ChaosPolicy;

use super::*;

fn policy(json: serde_json::Value) -> ChaosPolicy {
    serde_json::from_value(json).expect("policy json")
}

fn route(json: serde_json::Value) -> RouteSpec {
    serde_json::from_value(json).expect("route json")
}

fn web() -> RouteSpec {
    route(serde_json::json!({"name": "web", "listen": ":7000", "backends": [
        {"id": "a", "addr": "127.0.0.1:1"}, {"id": "b", "addr": "127.0.0.1:2"}]}))
}

fn input(p: serde_json::Value, revision: u64) -> PolicyInput {
    PolicyInput { policy: policy(p), revision }
}

fn resolved(inputs: &[PolicyInput], node: &str, now_ms: u64) -> RouteChaos {
    let metrics = Metrics::new().expect("metrics");
    resolve(inputs, node, &web(), now_ms, &metrics)
}

/// Scope (routes, nodes, backends) and expiry decide what a route of a
/// node applies; the order is by name.
#[test]
fn resolution_follows_scope_and_expiry() {
    let inputs = [
        input(serde_json::json!({"name": "z-all", "toxics": [{"kind": {"refuse": {}}}]}), 5),
        input(
            serde_json::json!({"name": "n1-only", "scope": {"nodes": ["n1"]}, "toxics": [{"kind": {"refuse": {}}}]}),
            6,
        ),
        input(
            serde_json::json!({"name": "other-route", "scope": {"routes": ["api"]}, "toxics": [{"kind": {"refuse": {}}}]}),
            7,
        ),
        input(
            serde_json::json!({"name": "b-only", "scope": {"backends": ["b"]}, "toxics": [{"kind": {"refuse": {}}}]}),
            8,
        ),
        input(
            serde_json::json!({"name": "no-such-backend", "scope": {"backends": ["q"]}, "toxics": [{"kind": {"refuse": {}}}]}),
            9,
        ),
        input(
            serde_json::json!({"name": "expiring", "expires_at": 1000, "toxics": [{"kind": {"refuse": {}}}]}),
            10,
        ),
    ];
    assert_eq!(resolved(&inputs, "n1", 999).names(), ["b-only", "expiring", "n1-only", "z-all"]);
    assert_eq!(resolved(&inputs, "n2", 1000).names(), ["b-only", "z-all"], "n2 at the expiry");
    let b_only = resolved(&inputs, "n2", 0);
    assert_eq!(b_only.policies[0].backends, Some(vec![false, true]));
    assert!(!b_only.policies[0].covers(0) && b_only.policies[0].covers(1));
    assert_eq!(next_expiry(&inputs, 999), Some(1000));
    assert_eq!(next_expiry(&inputs, 1000), None);
    // A rebuild of the same inputs is the same set: no connection is disturbed.
    assert!(resolved(&inputs, "n1", 5).same_as(&resolved(&inputs, "n1", 6)));
    let mut changed = inputs.to_vec();
    changed[0].revision = 11;
    assert!(!resolved(&inputs, "n1", 5).same_as(&resolved(&changed, "n1", 5)));
}

/// The decision is pure: the same seed and connections give the same hits
/// and draws, two builds of the table agree, and toxicity is the share of
/// connections hit.
#[test]
fn decisions_are_deterministic_and_follow_toxicity() {
    let inputs = [input(
        serde_json::json!({"name": "half", "seed": 42, "toxicity": 0.5,
            "toxics": [{"kind": {"latency": {"latency_ms": 10, "jitter_ms": 5}}}]}),
        3,
    )];
    let (one, two) = (resolved(&inputs, "n1", 0), resolved(&inputs, "n1", 0));
    let hits = |chaos: &RouteChaos| -> Vec<(u64, u64)> {
        (0..2000)
            .filter_map(|o| decide(chaos, chaos.conn(o), 0).pop().map(|mut h| (o, h.rng.next_u64())))
            .collect()
    };
    let (a, b) = (hits(&one), hits(&two));
    assert_eq!(a, b, "two builds of the table decide alike");
    assert!((900..1100).contains(&a.len()), "toxicity 0.5 hit {} of 2000", a.len());
    // Another node or seed decides otherwise.
    assert_ne!(hits(&resolved(&inputs, "n2", 0)), a);
    let reseeded = [input(
        serde_json::json!({"name": "half", "seed": 43, "toxicity": 0.5,
            "toxics": [{"kind": {"latency": {"latency_ms": 10}}}]}),
        3,
    )];
    assert_ne!(hits(&resolved(&reseeded, "n1", 0)), a);
    // Toxicity 0 never hits, 1 always.
    for (t, want) in [(0.0, 0), (1.0, 100)] {
        let p =
            [input(serde_json::json!({"name": "t", "toxicity": t, "toxics": [{"kind": {"refuse": {}}}]}), 1)];
        let chaos = resolved(&p, "n1", 0);
        assert_eq!((0..100).filter(|o| !decide(&chaos, chaos.conn(*o), 0).is_empty()).count(), want);
    }
    // Without a seed, the one derived from name and revision.
    let unseeded = [input(serde_json::json!({"name": "u", "toxics": [{"kind": {"refuse": {}}}]}), 7)];
    let chaos = resolved(&unseeded, "n1", 0);
    assert_eq!(chaos.policies[0].seed, unseeded[0].policy.effective_seed(7));
    assert_ne!(unseeded[0].policy.effective_seed(7), unseeded[0].policy.effective_seed(8));
}

/// A backend scope leaves connections to other backends alone; refuse and
/// connect_delay act before the connect.
#[test]
fn backend_scope_and_the_connect_phase() {
    let inputs = [
        input(
            serde_json::json!({"name": "slow-b", "scope": {"backends": ["b"]},
            "toxics": [{"kind": {"connect_delay": {"delay_ms": 30}}}, {"kind": {"connect_delay": {"delay_ms": 20}}}]}),
            1,
        ),
        input(
            serde_json::json!({"name": "refuse-a", "scope": {"backends": ["a"]},
            "toxics": [{"kind": {"refuse": {}}}]}),
            2,
        ),
    ];
    let chaos = resolved(&inputs, "n1", 0);
    let to_a = decide(&chaos, chaos.conn(0), 0);
    let to_b = decide(&chaos, chaos.conn(0), 1);
    assert_eq!(connect_phase(&to_a), (true, Duration::ZERO));
    assert_eq!(connect_phase(&to_b), (false, Duration::from_millis(50)));
}

#[test]
fn the_prng_is_splitmix64() {
    // SplitMix64's published first outputs for seed 0.
    let mut r = Prng::new(0);
    assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
    assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    let mut r = Prng::new(1);
    for _ in 0..1000 {
        let v = r.between(3, 5);
        assert!((3..=5).contains(&v));
        let f = r.next_f64();
        assert!((0.0..1.0).contains(&f));
    }
}
