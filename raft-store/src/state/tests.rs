//! Unit tests of the pure apply logic: CAS, deletes, weights, idempotency,
//! validation, and that apply never panics on arbitrary commands.

use ferry_client::chaos::{ChaosPolicy, ChaosScope, Direction, Toxic, ToxicKind};
use ferry_client::{BackendSpec, Balance, RouteSpec};

use super::*;
use crate::RECENT_CAPACITY;

fn route(name: &str, listen: &str) -> RouteSpec {
    serde_json::from_value(serde_json::json!({
        "name": name, "listen": listen,
        "backends": [{"id": "a", "addr": "127.0.0.1:9001"}, {"id": "b", "addr": "127.0.0.1:9002"}]
    }))
    .expect("valid route json")
}

fn policy(name: &str) -> ChaosPolicy {
    ChaosPolicy {
        name: name.into(),
        toxics: vec![Toxic {
            direction: Direction::Downstream,
            kind: ToxicKind::Latency { latency_ms: 100, jitter_ms: 10 },
        }],
        scope: ChaosScope::default(),
        toxicity: 0.5,
        expires_at: None,
        seed: None,
    }
}

fn put(r: RouteSpec, cas: Option<u64>) -> Request {
    Request::new(Command::PutRoute { route: r, cas })
}

fn applied(index: u64) -> Response {
    Response::Applied { index, revision: index }
}

fn rejected(error: StateError) -> Response {
    Response::Rejected { error }
}

#[test]
fn cas_create_update_and_conflict() {
    let mut s = ClusterState::default();
    assert_eq!(s.apply(3, &put(route("web", ":7000"), Some(0))), applied(3));
    assert_eq!(s.routes["web"].revision, 3);
    assert_eq!(s.index, 3);
    // Create-only fails once it exists, reporting the current revision.
    assert_eq!(
        s.apply(4, &put(route("web", ":7000"), Some(0))),
        rejected(StateError::CasMismatch { current: 3 })
    );
    // A stale revision fails; the right one succeeds.
    assert_eq!(
        s.apply(5, &put(route("web", ":7001"), Some(2))),
        rejected(StateError::CasMismatch { current: 3 })
    );
    assert_eq!(s.index, 3, "a rejected command leaves the config index alone");
    assert_eq!(s.apply(6, &put(route("web", ":7001"), Some(3))), applied(6));
    assert_eq!(s.routes["web"].spec.listen, ":7001");
    assert_eq!(s.routes["web"].revision, 6);
    // Unconditional writes always apply.
    assert_eq!(s.apply(7, &put(route("web", ":7002"), None)), applied(7));
    // CAS on a missing object reports 0.
    assert_eq!(
        s.apply(8, &put(route("api", ":7003"), Some(7))),
        rejected(StateError::CasMismatch { current: 0 })
    );
}

#[test]
fn delete_with_cas() {
    let mut s = ClusterState::default();
    s.apply(2, &put(route("web", ":7000"), None));
    let del = |cas| Request::new(Command::DeleteRoute { name: "web".into(), cas });
    assert_eq!(s.apply(3, &del(Some(1))), rejected(StateError::CasMismatch { current: 2 }));
    assert!(s.routes.contains_key("web"));
    assert_eq!(s.apply(4, &del(Some(2))), applied(4));
    assert!(s.routes.is_empty());
    assert_eq!(s.index, 4);
    assert_eq!(s.apply(5, &del(None)), rejected(StateError::NotFound { what: "route \"web\"".into() }));
    assert_eq!(s.apply(6, &del(Some(4))), rejected(StateError::CasMismatch { current: 0 }));
    assert_eq!(s.index, 4);
}

#[test]
fn chaos_policies_put_and_delete_with_cas() {
    let mut s = ClusterState::default();
    let put_p = |p, cas| Request::new(Command::PutChaosPolicy { policy: p, cas });
    assert_eq!(s.apply(2, &put_p(policy("slow"), Some(0))), applied(2));
    assert_eq!(s.apply(3, &put_p(policy("slow"), Some(0))), rejected(StateError::CasMismatch { current: 2 }));
    let mut bad = policy("slow");
    bad.toxicity = 2.0;
    let Response::Rejected { error: StateError::Invalid { errors } } = s.apply(4, &put_p(bad, None)) else {
        panic!("invalid policy must be rejected")
    };
    assert_eq!(errors[0].path, "policy.toxicity");
    let del = |cas| Request::new(Command::DeleteChaosPolicy { name: "slow".into(), cas });
    assert_eq!(s.apply(5, &del(Some(3))), rejected(StateError::CasMismatch { current: 2 }));
    assert_eq!(s.apply(6, &del(Some(2))), applied(6));
    assert_eq!(
        s.apply(7, &del(None)),
        rejected(StateError::NotFound { what: "chaos policy \"slow\"".into() })
    );
    assert!(s.chaos.is_empty());
}

#[test]
fn set_backend_weight_and_its_errors() {
    let mut s = ClusterState::default();
    s.apply(2, &put(route("web", ":7000"), None));
    let w = |route: &str, backend: &str, weight, cas| {
        Request::new(Command::SetBackendWeight { route: route.into(), backend: backend.into(), weight, cas })
    };
    assert_eq!(s.apply(3, &w("web", "a", 5, Some(2))), applied(3));
    assert_eq!(s.routes["web"].spec.backends[0].weight, 5);
    assert_eq!(s.routes["web"].revision, 3);
    assert_eq!(s.apply(4, &w("web", "a", 6, Some(2))), rejected(StateError::CasMismatch { current: 3 }));
    assert_eq!(
        s.apply(5, &w("nope", "a", 1, None)),
        rejected(StateError::NotFound { what: "route \"nope\"".into() })
    );
    assert_eq!(
        s.apply(6, &w("web", "zz", 1, None)),
        rejected(StateError::NotFound { what: "backend \"zz\" of route \"web\"".into() })
    );
    let Response::Rejected { error: StateError::Invalid { errors } } = s.apply(7, &w("web", "a", 257, None))
    else {
        panic!("weight 257 must be rejected")
    };
    assert_eq!(errors[0].path, "weight");
    // b -> 0 is fine, then a -> 0 would leave no backend taking traffic.
    assert_eq!(s.apply(8, &w("web", "b", 0, None)), applied(8));
    let Response::Rejected { error: StateError::Invalid { errors } } = s.apply(9, &w("web", "a", 0, None))
    else {
        panic!("all-zero weights must be rejected")
    };
    assert_eq!(errors[0].path, "route.backends");
    assert_eq!(s.routes["web"].spec.backends[0].weight, 5);
    assert_eq!(s.index, 8);
}

#[test]
fn invalid_route_is_rejected_with_field_paths_and_changes_nothing() {
    let mut s = ClusterState::default();
    s.apply(2, &put(route("web", "127.0.0.1:7000"), None));
    let before = s.clone();
    let mut bad = route("api", "nowhere");
    bad.backends[1].addr = "x".into();
    bad.connect_timeout_ms = 0;
    let Response::Rejected { error: StateError::Invalid { errors } } = s.apply(3, &put(bad, None)) else {
        panic!("invalid route must be rejected")
    };
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["route.listen", "route.connect_timeout_ms", "route.backends[1].addr"]);
    assert_eq!(s, before);
    // The same explicit listen string as another route is a conflict ...
    let Response::Rejected { error: StateError::Invalid { errors } } =
        s.apply(4, &put(route("api", "127.0.0.1:7000"), None))
    else {
        panic!("listen conflict must be rejected")
    };
    assert_eq!(errors[0].path, "route.listen");
    assert!(errors[0].message.contains("\"web\""), "{}", errors[0].message);
    // ... but not with itself, and port 0 never conflicts.
    assert_eq!(s.apply(5, &put(route("web", "127.0.0.1:7000"), None)), applied(5));
    assert_eq!(s.apply(6, &put(route("z1", "127.0.0.1:0"), None)), applied(6));
    assert_eq!(s.apply(7, &put(route("z2", "127.0.0.1:0"), None)), applied(7));
}

/// Names `.` and `..` and listen port 0 are refused as new input (the
/// API and the file check before proposing), but a log written before that
/// rule keeps applying as it did: a node that rejected such an entry in
/// apply would diverge from the nodes, or the version, that applied it.
#[test]
fn apply_keeps_the_rules_stored_entries_were_written_under() {
    let mut s = ClusterState::default();
    let mut dots = route("..", "127.0.0.1:0");
    dots.backends[0].id = ".".into();
    assert_eq!(s.apply(1, &put(dots, None)), applied(1));
    let w = Command::SetBackendWeight { route: "..".into(), backend: ".".into(), weight: 3, cas: None };
    assert_eq!(s.apply(2, &Request::new(w)), applied(2));
    assert_eq!(
        s.apply(3, &Request::new(Command::PutChaosPolicy { policy: policy("."), cas: None })),
        applied(3)
    );
    let seed = Command::SeedRoutes { routes: vec![route(".", ":0")] };
    assert_eq!(check(&ClusterState::default(), &seed), Ok(()));
}

#[test]
fn a_retried_request_id_returns_the_original_response_and_applies_once() {
    let mut s = ClusterState::default();
    let req = Request::with_id(42, Command::PutRoute { route: route("web", ":7000"), cas: Some(0) });
    assert_eq!(s.apply(2, &req), applied(2));
    // Someone else changes the route; the retry must not overwrite it.
    s.apply(3, &put(route("web", ":7001"), None));
    assert_eq!(s.apply(4, &req), applied(2));
    assert_eq!(s.index, 3);
    assert_eq!(s.routes["web"].spec.listen, ":7001");
    assert_eq!(s.routes["web"].revision, 3);
    // A rejection is remembered too.
    let del = Request::with_id(43, Command::DeleteRoute { name: "nope".into(), cas: None });
    let first = s.apply(5, &del);
    s.apply(6, &put(route("nope", ":7005"), None));
    assert_eq!(s.apply(7, &del), first);
    assert!(s.routes.contains_key("nope"));
}

/// The example: a weight PUT, then a DELETE of the route with the
/// same request id. The delete must be refused, not answered with the
/// weight change's success while the route stays.
#[test]
fn a_request_id_reused_for_another_command_is_refused_and_changes_nothing() {
    let mut s = ClusterState::default();
    assert_eq!(s.apply(2, &put(route("w1b", ":7000"), None)), applied(2));
    let weight = Request::with_id(
        0xabc,
        Command::SetBackendWeight { route: "w1b".into(), backend: "a".into(), weight: 5, cas: None },
    );
    assert_eq!(s.apply(3, &weight), applied(3));
    let before = s.clone();
    let delete = Request::with_id(0xabc, Command::DeleteRoute { name: "w1b".into(), cas: None });
    assert_eq!(s.apply(4, &delete), rejected(StateError::RequestIdReused { id: 0xabc }));
    assert_eq!(s, before, "a refused reuse changed the state (routes, index or the memory)");
    assert!(s.routes.contains_key("w1b"));
    // The identical retry still gets the original answer, even after the
    // refused reuse, and applies nothing.
    assert_eq!(s.apply(5, &weight), applied(3));
    assert_eq!(s, before);
    // Any difference counts: the compare-and-set condition too.
    let with_cas = Request::with_id(
        0xabc,
        Command::SetBackendWeight { route: "w1b".into(), backend: "a".into(), weight: 5, cas: Some(3) },
    );
    assert_eq!(s.apply(6, &with_cas), rejected(StateError::RequestIdReused { id: 0xabc }));
    // A remembered rejection is guarded the same way.
    let missing = Request::with_id(0xdef, Command::DeleteRoute { name: "nope".into(), cas: None });
    let first = s.apply(7, &missing);
    assert!(matches!(first, Response::Rejected { error: StateError::NotFound { .. } }), "{first:?}");
    let reuse = Request::with_id(0xdef, Command::DeleteRoute { name: "w1b".into(), cas: None });
    assert_eq!(s.apply(8, &reuse), rejected(StateError::RequestIdReused { id: 0xdef }));
    assert!(s.routes.contains_key("w1b"));
    assert_eq!(s.index, 3);
}

/// Entries written before digests existed (formats 1 and 2) answer their
/// original response to any command, as they always did.
#[test]
fn an_id_remembered_without_a_digest_answers_its_original_response() {
    let mut s = ClusterState::default();
    s.apply(2, &put(route("w1b", ":7000"), None));
    s.recent.insert(Remembered::new(0xabc, None, applied(2)));
    let delete = Request::with_id(0xabc, Command::DeleteRoute { name: "w1b".into(), cas: None });
    assert_eq!(s.apply(3, &delete), applied(2));
    assert!(s.routes.contains_key("w1b"));
    assert_eq!(s.index, 2);
}

/// A batch is applied request by request: an id reused inside one batch,
/// or across batches, is refused like one in its own entry.
#[test]
fn a_request_id_reused_inside_a_batch_is_refused() {
    let mut s = ClusterState::default();
    let create = Request::with_id(7, Command::PutRoute { route: route("web", ":7000"), cas: Some(0) });
    let other = Request::with_id(7, Command::PutRoute { route: route("web", ":7001"), cas: Some(0) });
    let r = s.apply(3, &batch(vec![create.clone(), other.clone(), create.clone()]));
    let reused = rejected(StateError::RequestIdReused { id: 7 });
    assert_eq!(r, Response::Batch { responses: vec![applied(3), reused.clone(), applied(3)] });
    assert_eq!(s.routes["web"].spec.listen, ":7000");
    assert_eq!(s.apply(4, &batch(vec![other])), Response::Batch { responses: vec![reused] });
    assert_eq!(s.index, 3);
}

#[test]
fn request_id_memory_is_bounded_and_evicts_oldest_first() {
    let mut s = ClusterState::default();
    let del =
        |id: u64| Request::with_id(u128::from(id), Command::DeleteRoute { name: "x".into(), cas: None });
    let total = RECENT_CAPACITY as u64 + 3;
    for id in 1..=total {
        s.apply(id, &del(id));
    }
    assert_eq!(s.recent.len(), RECENT_CAPACITY);
    assert_eq!(s.recent.first_seq(), 3);
    assert!(s.recent.get(1).is_none() && s.recent.get(3).is_none());
    assert!(s.recent.get(4).is_some() && s.recent.get(u128::from(total)).is_some());
    // An evicted id is applied again (the bound is the retry window).
    assert_eq!(s.apply(total + 1, &put(route("x", ":7000"), None)), applied(total + 1));
    assert_eq!(s.apply(total + 2, &del(1)), applied(total + 2));
    assert!(s.routes.is_empty());
}

/// Arbitrary commands from a seeded generator: apply must never panic, every
/// stored object must be valid, revisions never exceed the config index, and
/// a rejected command must leave routes, policies and index unchanged.
#[test]
fn apply_never_panics_and_keeps_invariants_on_random_commands() {
    let seed = 0x5eed_f377;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut s = ClusterState::default();
    let names = ["web", "api", "db", "", "bad name", "x.y"];
    let listens = [":7000", ":7001", "127.0.0.1:7000", "127.0.0.1:0", "nope", ":99999"];
    for index in 1..=5_000u64 {
        let name = names[rng.usize(..names.len())].to_string();
        let cas = match rng.u8(..4) {
            0 => None,
            1 => Some(0),
            2 => Some(rng.u64(..index + 1)),
            _ => s.routes.get(&name).map(|r| r.revision),
        };
        let command = match rng.u8(..5) {
            0 => {
                let mut r = route(&name, listens[rng.usize(..listens.len())]);
                r.balance = if rng.bool() { Balance::ConsistentHash } else { Balance::Weighted };
                r.vnodes = [0, 1, 100, u32::MAX][rng.usize(..4)];
                for _ in 0..rng.usize(..3) {
                    let id = names[rng.usize(..names.len())].to_string();
                    let weight = [0, 1, 256, 257, u32::MAX][rng.usize(..5)];
                    r.backends.push(BackendSpec { id, addr: "127.0.0.1:1".into(), weight, node: None });
                }
                if rng.bool() {
                    r.backends.clear();
                }
                Command::PutRoute { route: r, cas }
            }
            1 => Command::DeleteRoute { name, cas },
            2 => Command::SetBackendWeight {
                route: name,
                backend: ["a", "b", "c"][rng.usize(..3)].into(),
                weight: [0, 1, 256, 257, u32::MAX][rng.usize(..5)],
                cas,
            },
            3 => {
                let mut p = policy(&name);
                p.toxicity = [0.0, 0.5, 1.0, -1.0, f64::NAN, f64::INFINITY][rng.usize(..6)];
                if rng.bool() {
                    p.toxics.push(Toxic {
                        direction: Direction::Upstream,
                        kind: ToxicKind::Slicer {
                            average_size: rng.u64(..3),
                            size_variation: rng.u64(..3),
                            delay_us: rng.u64(..),
                        },
                    });
                }
                Command::PutChaosPolicy { policy: p, cas }
            }
            _ => Command::DeleteChaosPolicy { name, cas },
        };
        let id = if rng.bool() { Some(u128::from(rng.u8(..50))) } else { None };
        let req = Request { id, command, digestless: false };
        let before = (s.routes.clone(), s.chaos.clone(), s.index);
        match s.apply(index, &req) {
            Response::Applied { index: i, .. } if i == index => assert_eq!(s.index, index),
            Response::Applied { .. } | Response::Rejected { .. } => {
                assert_eq!(
                    (s.routes.clone(), s.chaos.clone(), s.index),
                    before,
                    "seed {seed:#x} index {index}"
                )
            }
            Response::Internal { .. } | Response::Batch { .. } => {
                panic!("apply of a plain command answers Applied or Rejected")
            }
        }
        for r in s.routes.values() {
            let mut errors = Vec::new();
            r.spec.validate_with(Rules::Stored, "route", &mut errors);
            assert!(errors.is_empty(), "seed {seed:#x}: stored invalid route {errors:?}");
            assert!(r.revision <= s.index);
        }
        for p in s.chaos.values() {
            assert!(p.policy.validate_with(Rules::Stored, "policy").is_empty());
            assert!(p.revision <= s.index);
        }
    }
    assert!(s.index > 0, "the generator should produce some valid commands");
}

#[test]
fn seed_routes_apply_only_to_a_cluster_without_config() {
    let mut st = ClusterState::default();
    let seed = Request::new(Command::SeedRoutes { routes: vec![route("a", ":7000"), route("b", ":7001")] });
    assert_eq!(st.apply(3, &seed), applied(3));
    assert_eq!(st.routes.len(), 2);
    assert_eq!(st.revision(Target::Route("a")), 3);
    // Deleted through the API, then proposed again (a wiped node 1 that
    // bootstraps again): nothing comes back.
    assert_eq!(st.apply(4, &Request::new(Command::DeleteRoute { name: "a".into(), cas: None })), applied(4));
    assert_eq!(st.apply(5, &seed), rejected(StateError::CasMismatch { current: 4 }));
    assert!(!st.routes.contains_key("a"));
    assert_eq!(st.index, 4);
}

#[test]
fn invalid_seed_is_rejected_whole() {
    let mut st = ClusterState::default();
    let mut bad = route("b", ":7001");
    bad.backends[0].addr = "x".into();
    let resp = st.apply(1, &Request::new(Command::SeedRoutes { routes: vec![route("a", ":7000"), bad] }));
    assert!(matches!(resp, Response::Rejected { error: StateError::Invalid { .. } }), "{resp:?}");
    assert!(st.routes.is_empty());
    assert_eq!(st.index, 0);
}

fn weight(route: &str, backend: &str, weight: u32, cas: Option<u64>) -> Request {
    Request::new(Command::SetBackendWeight { route: route.into(), backend: backend.into(), weight, cas })
}

fn batch(requests: Vec<Request>) -> Request {
    Request::new(Command::Batch { requests })
}

#[test]
fn a_batch_gives_every_change_its_own_config_index_and_revision() {
    let mut s = ClusterState::default();
    assert_eq!(s.apply(2, &put(route("web", ":7000"), None)), applied(2));
    // Three changes in the entry at log index 5: indexes 5, 6, 7.
    let r = s.apply(
        5,
        &batch(vec![
            weight("web", "a", 3, Some(2)),
            weight("web", "b", 4, None),
            put(route("api", ":7001"), None),
        ]),
    );
    assert_eq!(r, Response::Batch { responses: vec![applied(5), applied(6), applied(7)] });
    assert_eq!((s.index, s.routes["web"].revision, s.routes["api"].revision), (7, 6, 7));
    assert_eq!(s.routes["web"].spec.backends.iter().map(|b| b.weight).collect::<Vec<_>>(), [3, 4]);
    // The config index now runs ahead of the log: the next entry takes 8.
    assert_eq!(s.apply(6, &weight("web", "a", 5, None)), applied(8));
    // Once the log passes it again, changes take their log index.
    assert_eq!(s.apply(20, &weight("web", "a", 6, None)), applied(20));
}

#[test]
fn compare_and_set_inside_a_batch_sees_the_changes_before_it() {
    let mut s = ClusterState::default();
    assert_eq!(s.apply(1, &put(route("web", ":7000"), None)), applied(1));
    // Two writers read revision 1; only the first in the batch may win, and
    // the loser is told the winner's revision.
    let r = s.apply(4, &batch(vec![weight("web", "a", 2, Some(1)), weight("web", "a", 3, Some(1))]));
    let lost = rejected(StateError::CasMismatch { current: 4 });
    assert_eq!(r, Response::Batch { responses: vec![applied(4), lost] });
    assert_eq!(s.routes["web"].spec.backends[0].weight, 2);
    // A create-only put after a delete in the same batch succeeds.
    let r = s.apply(
        5,
        &batch(vec![
            Request::new(Command::DeleteRoute { name: "web".into(), cas: Some(4) }),
            put(route("web", ":7002"), Some(0)),
        ]),
    );
    assert_eq!(r, Response::Batch { responses: vec![applied(5), applied(6)] });
    assert_eq!(s.routes["web"].revision, 6);
}

#[test]
fn request_ids_inside_a_batch_apply_once() {
    let mut s = ClusterState::default();
    let create = Request::with_id(7, Command::PutRoute { route: route("web", ":7000"), cas: Some(0) });
    // The same id twice in one batch (a retry racing its original), then
    // again in a later entry: one change, three equal answers.
    let r = s.apply(3, &batch(vec![create.clone(), create.clone()]));
    assert_eq!(r, Response::Batch { responses: vec![applied(3), applied(3)] });
    assert_eq!(s.apply(9, &create), applied(3));
    assert_eq!(s.index, 3);
}

#[test]
fn a_nested_batch_is_rejected_and_changes_nothing() {
    let mut s = ClusterState::default();
    let inner = batch(vec![put(route("web", ":7000"), None)]);
    let r = s.apply(3, &batch(vec![inner, put(route("api", ":7001"), None)]));
    let Response::Batch { responses } = r else { panic!("a batch answers Batch: {r:?}") };
    assert!(
        matches!(&responses[0], Response::Rejected { error: StateError::Invalid { errors } } if errors[0].path == "command"),
        "{responses:?}"
    );
    assert_eq!(responses[1], applied(3), "the rest of the batch still applies");
    assert!(!s.routes.contains_key("web"));
    assert!(!Request::new(Command::Batch { requests: Vec::new() }).batchable());
    assert!(!Request::new(Command::SeedRoutes { routes: Vec::new() }).batchable());
    assert!(weight("web", "a", 1, None).batchable());
}

/// A command uses `route_labels` exactly when a route in it has labels, a
/// batch when any of its requests does.
#[test]
fn commands_name_the_features_they_use() {
    let mut labeled: ferry_client::RouteSpec = serde_json::from_value(serde_json::json!({
        "name": "w", "listen": ":7000", "backends": [{"id": "a", "addr": "127.0.0.1:9001"}]
    }))
    .expect("valid route json");
    let plain = Command::PutRoute { route: labeled.clone(), cas: None };
    assert!(plain.features().is_empty());
    labeled.labels.insert("team".into(), "edge".into());
    let put = Command::PutRoute { route: labeled.clone(), cas: None };
    assert_eq!(put.features(), [crate::command::ROUTE_LABELS]);
    let seed = Command::SeedRoutes { routes: vec![labeled.clone()] };
    assert_eq!(seed.features(), [crate::command::ROUTE_LABELS]);
    let batch = Command::Batch {
        requests: vec![Request::new(plain.clone()), Request::new(put.clone()), Request::new(put)],
    };
    assert_eq!(batch.features(), [crate::command::ROUTE_LABELS]);
    assert!(Command::Batch { requests: vec![Request::new(plain)] }.features().is_empty());
}

/// A command uses `route_enabled` exactly when a route in it is disabled;
/// an enabled route uses nothing new (and serializes as before).
#[test]
fn a_disabled_route_uses_route_enabled() {
    let mut route: ferry_client::RouteSpec = serde_json::from_value(serde_json::json!({
        "name": "w", "listen": ":7000", "backends": [{"id": "a", "addr": "127.0.0.1:9001"}]
    }))
    .expect("valid route json");
    assert!(Command::PutRoute { route: route.clone(), cas: None }.features().is_empty());
    route.enabled = false;
    let put = Command::PutRoute { route: route.clone(), cas: None };
    assert_eq!(put.features(), [crate::command::ROUTE_ENABLED]);
    route.labels.insert("team".into(), "edge".into());
    let seed = Command::SeedRoutes { routes: vec![route.clone()] };
    assert_eq!(seed.features(), [crate::command::ROUTE_LABELS, crate::command::ROUTE_ENABLED]);
    let batch = Command::Batch { requests: vec![Request::new(put)] };
    assert_eq!(batch.features(), [crate::command::ROUTE_ENABLED]);
}

fn restore(routes: Vec<RouteSpec>, policies: Vec<ChaosPolicy>, cas: Option<u64>) -> Request {
    Request::new(Command::RestoreSnapshot { routes, policies, cas })
}

/// A restore replaces the whole config in one change: what is not in the
/// snapshot is gone, what is in it gets the restore's index as revision;
/// the compare-and-set is on the config index.
#[test]
fn a_restore_replaces_the_whole_config_under_cas_on_the_index() {
    let mut s = ClusterState::default();
    s.apply(2, &put(route("old", ":7000"), None));
    s.apply(3, &put(route("web", ":7001"), None));
    s.apply(4, &Request::new(Command::PutChaosPolicy { policy: policy("gone"), cas: None }));
    let before = s.clone();
    let mut web = route("web", ":7002");
    web.backends.truncate(1);
    let snap = |cas| restore(vec![route("api", ":7003"), web.clone()], vec![policy("slow")], cas);
    // A stale index, or "never had config", is refused and changes nothing.
    assert_eq!(s.apply(5, &snap(Some(3))), rejected(StateError::CasMismatch { current: 4 }));
    assert_eq!(s.apply(6, &snap(Some(0))), rejected(StateError::CasMismatch { current: 4 }));
    assert_eq!(s, before);
    assert_eq!(s.apply(7, &snap(Some(4))), applied(7));
    assert_eq!(s.routes.keys().collect::<Vec<_>>(), ["api", "web"]);
    assert_eq!(s.routes["web"].spec, web);
    assert!(s.routes.values().all(|r| r.revision == 7));
    assert_eq!(s.chaos.keys().collect::<Vec<_>>(), ["slow"]);
    assert_eq!(s.chaos["slow"].revision, 7);
    assert_eq!(s.index, 7);
    // Unconditional: applies whatever the index; an empty snapshot empties.
    assert_eq!(s.apply(8, &restore(Vec::new(), Vec::new(), None)), applied(8));
    assert!(s.routes.is_empty() && s.chaos.is_empty());
    // Into a cluster that never had config, `Some(0)` applies.
    let mut fresh = ClusterState::default();
    assert_eq!(fresh.apply(3, &snap(Some(0))), applied(3));
    assert_eq!(fresh.routes.len(), 2);
    // The state after a restore survives a Raft snapshot (what a follower
    // that catches up by snapshot installs).
    let envelope = crate::snapshot::SnapshotEnvelope {
        state: fresh.clone(),
        last_applied: None,
        membership: Default::default(),
    };
    let back =
        crate::snapshot::SnapshotEnvelope::from_bytes(&envelope.to_bytes().expect("encode")).expect("decode");
    assert_eq!(back.state, fresh);
}

/// An invalid restore is refused whole, naming the field, and changes
/// nothing; it is never batched and names its feature.
#[test]
fn an_invalid_restore_changes_nothing_and_names_the_field() {
    let mut s = ClusterState::default();
    s.apply(2, &put(route("web", ":7000"), None));
    let before = s.clone();
    let mut bad = policy("slow");
    bad.toxicity = 2.0;
    let cases = [
        (restore(vec![route("a", ":7001"), route("a", ":7002")], Vec::new(), None), "routes[1].name"),
        (restore(vec![route("a", ":7001"), route("b", ":7001")], Vec::new(), None), "routes[1].listen"),
        (restore(Vec::new(), vec![bad], None), "policies[0].toxicity"),
        (restore(Vec::new(), vec![policy("p"), policy("p")], None), "policies[1].name"),
    ];
    for (req, path) in cases {
        let r = s.apply(3, &req);
        let Response::Rejected { error: StateError::Invalid { errors } } = &r else {
            panic!("{path}: must be rejected, got {r:?}")
        };
        assert_eq!(errors[0].path, path);
        assert_eq!(s, before, "{path}");
    }
    // Two routes on port 0 do not conflict.
    assert_eq!(s.apply(4, &restore(vec![route("a", ":0"), route("b", ":0")], Vec::new(), None)), applied(4));
    let r = restore(vec![route("a", ":7001")], Vec::new(), Some(0));
    assert!(!r.batchable());
    assert_eq!(r.command.features(), [crate::command::SNAPSHOT_RESTORE]);
    let mut labeled = route("a", ":7001");
    labeled.labels.insert("team".into(), "edge".into());
    let mut both = policy("p");
    both.toxics[0].direction = Direction::Both;
    let used = Command::RestoreSnapshot { routes: vec![labeled], policies: vec![both], cas: None };
    assert_eq!(
        used.features(),
        [crate::command::CHAOS_TRAFFIC, crate::command::ROUTE_LABELS, crate::command::SNAPSHOT_RESTORE]
    );
}
