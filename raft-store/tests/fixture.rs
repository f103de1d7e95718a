//! Golden bytes of the persisted formats. If one of these fails, the on-disk
//! or snapshot encoding changed: bump `codec::FORMAT_VERSION`, keep a decoder
//! for the old versions, and add fixtures for the new one — never regenerate
//! these files to make the test pass.
//!
//! - `*_v1.hex`: written by format version 1 (before backends had `node`).
//!   They must keep decoding, to today's types with `node: None`; they are
//!   no longer what this build writes.
//! - `*_v2.hex`: written by format version 2 (before remembered request ids
//!   kept their command's digest). They must keep decoding, the memory's
//!   entries with `digest: None`. The types that did not change in version 3
//!   (log entries, stored routes) still encode to these bytes but for the
//!   version prefix.
//! - `*_v3.hex`: today's format, decoded and re-encoded byte for byte.
//!
//! To create a fixture for a *new* file: `FERRY_WRITE_FIXTURES=1 cargo test
//! -p ferry-raft-store --test fixture` (existing files are never overwritten).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use ferry_client::chaos::{ChaosPolicy, ChaosScope, Direction, Toxic, ToxicKind};
use ferry_client::{FieldError, RouteSpec};
use ferry_raft_store::codec::Persisted;
use ferry_raft_store::codec::{decode, encode};
use ferry_raft_store::digest::command_digest;
use ferry_raft_store::recent::{RecentRequests, Remembered};
use ferry_raft_store::snapshot::SnapshotEnvelope;
use ferry_raft_store::types::{Entry, LogId, StoredMembership};
use ferry_raft_store::{
    ClusterState, Command, NodeInfo, Request, Response, StateError, StoredPolicy, StoredRoute,
};
use openraft::{CommittedLeaderId, EntryPayload, Membership};
use serde::Serialize;

fn route(name: &str, listen: &str) -> RouteSpec {
    serde_json::from_value(serde_json::json!({
        "name": name, "listen": listen, "balance": "consistent_hash",
        "backends": [{"id": "a", "addr": "127.0.0.1:9001", "weight": 3}, {"id": "b", "addr": "[::1]:9002"}],
        "health_check": {"interval_ms": 500}
    }))
    .expect("valid route json")
}

fn policy() -> ChaosPolicy {
    ChaosPolicy {
        name: "slow".into(),
        toxics: vec![
            Toxic {
                direction: Direction::Downstream,
                kind: ToxicKind::Latency { latency_ms: 100, jitter_ms: 10 },
            },
            Toxic {
                direction: Direction::Upstream,
                kind: ToxicKind::Slicer { average_size: 64, size_variation: 8, delay_us: 50 },
            },
            Toxic { direction: Direction::Upstream, kind: ToxicKind::Refuse {} },
        ],
        scope: ChaosScope { routes: vec!["web".into()], nodes: vec![] },
        toxicity: 0.25,
        expires_at: Some(1_900_000_000_000),
    }
}

/// The cluster state of the fixtures; `digests` gives each remembered id
/// the digest of a command (format version 3), or none (versions 1 and 2).
fn cluster_state_with(digests: bool) -> ClusterState {
    let routes = BTreeMap::from([
        ("api".to_string(), StoredRoute { spec: route("api", "127.0.0.1:7001"), revision: 4 }),
        ("web".to_string(), StoredRoute { spec: route("web", ":7000"), revision: 7 }),
    ]);
    let chaos = BTreeMap::from([("slow".to_string(), StoredPolicy { policy: policy(), revision: 9 })]);
    let digest = |cmd: Command| if digests { command_digest(&cmd) } else { None };
    let delete = |name: &str| Command::DeleteRoute { name: name.into(), cas: None };
    let recent = RecentRequests::from_parts(
        12,
        [
            Remembered::new(
                u128::MAX - 1,
                digest(delete("api")),
                Response::Applied { index: 9, revision: 9 },
            ),
            Remembered::new(
                42,
                digest(Command::PutRoute { route: route("x", "bad"), cas: None }),
                Response::Rejected {
                    error: StateError::Invalid { errors: vec![FieldError::new("route.listen", "bad")] },
                },
            ),
            Remembered::new(
                43,
                digest(delete("web")),
                Response::Rejected { error: StateError::CasMismatch { current: 7 } },
            ),
        ],
    );
    ClusterState { routes, chaos, index: 9, recent }
}

/// The cluster state as versions 1 and 2 wrote it: no digests.
fn cluster_state() -> ClusterState {
    cluster_state_with(false)
}

/// `route(..)` with its backends pinned to nodes (format version 2).
fn pinned(name: &str, listen: &str) -> RouteSpec {
    let mut r = route(name, listen);
    r.backends[0].node = Some("n2".into());
    r.backends[1].node = Some("3".into());
    r
}

fn membership() -> StoredMembership {
    let node = NodeInfo {
        name: "n1".into(),
        cluster_addr: "127.0.0.1:7947".into(),
        admin_addr: "127.0.0.1:7948".into(),
    };
    let m = Membership::new(vec![[1u64].into()], BTreeMap::from([(1u64, node)]));
    StoredMembership::new(Some(LogId::new(CommittedLeaderId::new(3, 1), 8)), m)
}

fn put_route(route: RouteSpec) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(3, 2), 11),
        payload: EntryPayload::Normal(Request::with_id(
            0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            Command::PutRoute { route, cas: Some(0) },
        )),
    }
}

fn seed_routes(routes: Vec<RouteSpec>) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), 2),
        payload: EntryPayload::Normal(Request::new(Command::SeedRoutes { routes })),
    }
}

fn snapshot(state: ClusterState) -> SnapshotEnvelope {
    SnapshotEnvelope {
        state,
        last_applied: Some(LogId::new(CommittedLeaderId::new(3, 2), 10)),
        membership: membership(),
    }
}

fn log_entry() -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(3, 2), 10),
        payload: EntryPayload::Normal(Request::with_id(
            0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            Command::PutChaosPolicy { policy: policy(), cas: Some(9) },
        )),
    }
}

/// Decodes the fixture `file` (of the current format) and compares with
/// `expected`; the bytes of `expected` must also equal the fixture (the
/// encoding is deterministic).
fn check<T: Serialize + Persisted + PartialEq + std::fmt::Debug>(file: &str, expected: &T) -> Result<()> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(file);
    if std::env::var_os("FERRY_WRITE_FIXTURES").is_some() && !path.exists() {
        std::fs::write(&path, hex(&encode(expected)?) + "\n")?;
    }
    let text = check_old(file, expected)?;
    assert_eq!(hex(&encode(expected)?), text.trim(), "{file}: the encoding of the same value changed");
    Ok(())
}

/// Decodes the fixture `file` (of any format version) and compares with
/// `expected`; returns the fixture's text.
fn check_old<T: Persisted + PartialEq + std::fmt::Debug>(file: &str, expected: &T) -> Result<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(file);
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let bytes = unhex(text.trim()).context("fixture is not hex")?;
    let decoded: T = decode(&bytes).with_context(|| format!("decode {file}"))?;
    assert_eq!(&decoded, expected, "{file} decodes to a different value");
    Ok(text)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Version 1 bytes of every type that holds a route decode to today's types,
/// backends without a node.
#[test]
fn version_1_decodes() -> Result<()> {
    check_old("cluster_state_v1.hex", &cluster_state())?;
    check_old("log_entry_v1.hex", &log_entry())?;
    check_old("log_entry_put_route_v1.hex", &put_route(route("web", ":7000")))?;
    check_old(
        "log_entry_seed_routes_v1.hex",
        &seed_routes(vec![route("api", "127.0.0.1:7001"), route("web", ":7000")]),
    )?;
    check_old("stored_route_v1.hex", &StoredRoute { spec: route("web", ":7000"), revision: 7 })?;
    check_old("snapshot_v1.hex", &snapshot(cluster_state()))?;
    Ok(())
}

/// `cluster_state_with(digests)` with pinned backends (format version 2 on).
fn pinned_state(digests: bool) -> ClusterState {
    let mut state = cluster_state_with(digests);
    for r in state.routes.values_mut() {
        r.spec = pinned(&r.spec.name, &r.spec.listen);
    }
    state
}

/// Version 2 bytes decode to today's types, remembered ids without a digest.
#[test]
fn version_2_decodes() -> Result<()> {
    check_old("cluster_state_v2.hex", &pinned_state(false))?;
    check_old("snapshot_v2.hex", &snapshot(pinned_state(false)))?;
    // Unchanged in version 3: the same bytes but for the version prefix.
    check_as_v2("log_entry_v2.hex", &log_entry())?;
    check_as_v2("log_entry_put_route_v2.hex", &put_route(pinned("web", ":7000")))?;
    check_as_v2(
        "log_entry_seed_routes_v2.hex",
        &seed_routes(vec![route("api", "127.0.0.1:7001"), pinned("web", ":7000")]),
    )?;
    check_as_v2("stored_route_v2.hex", &StoredRoute { spec: pinned("web", ":7000"), revision: 7 })?;
    Ok(())
}

/// Decodes the version-2 fixture `file` of a type version 3 did not change,
/// and checks that today's encoding differs only in the version prefix.
fn check_as_v2<T: Serialize + Persisted + PartialEq + std::fmt::Debug>(
    file: &str,
    expected: &T,
) -> Result<()> {
    let text = check_old(file, expected)?;
    let mut bytes = encode(expected)?;
    assert_eq!(bytes[..2], [0, 3]);
    bytes[1] = 2;
    assert_eq!(hex(&bytes), text.trim(), "{file}: a type unchanged in version 3 encodes differently");
    Ok(())
}

#[test]
fn version_3_round_trips() -> Result<()> {
    check("cluster_state_v3.hex", &pinned_state(true))?;
    check("snapshot_v3.hex", &snapshot(pinned_state(true)))?;
    check("log_entry_v3.hex", &log_entry())?;
    Ok(())
}

/// Version 3 bytes of the request-id memory differ from version 2 only by
/// each entry's digest: a `Some` tag and a varint u128 each.
#[test]
fn version_3_adds_one_digest_per_remembered_id() -> Result<()> {
    let v3 = encode(&pinned_state(true))?;
    let v2 = unhex(include_str!("fixtures/cluster_state_v2.hex").trim()).context("hex")?;
    let digests: Vec<u128> = pinned_state(true).recent.iter().filter_map(|e| e.digest).collect();
    assert_eq!(digests.len(), 3);
    // A varint u128 above u64::MAX takes a tag byte and 16 bytes.
    let added: usize = digests.iter().map(|d| 1 + if *d > u128::from(u64::MAX) { 17 } else { 9 }).sum();
    assert_eq!(v3.len(), v2.len() + added);
    // Without digests, version 3 is version 2 plus one `None` tag per entry.
    assert_eq!(encode(&pinned_state(false))?.len(), v2.len() + 3);
    Ok(())
}

/// Version 1 and later bytes of a route differ only by the backends' `node`.
#[test]
fn version_2_adds_one_option_per_backend() -> Result<()> {
    let v2 = encode(&StoredRoute { spec: route("web", ":7000"), revision: 7 })?;
    let v1 = unhex(include_str!("fixtures/stored_route_v1.hex").trim()).context("hex")?;
    assert_eq!((v1[..2].to_vec(), v2[..2].to_vec()), (vec![0, 1], vec![0, 3]));
    // Two backends, each one byte longer (the `None` tag).
    assert_eq!(v2.len(), v1.len() + 2);
    Ok(())
}

#[test]
fn an_unknown_version_is_an_error() {
    let mut bytes = encode(&cluster_state()).expect("encode");
    bytes[1] = 4;
    assert!(decode::<ClusterState>(&bytes).is_err());
}
