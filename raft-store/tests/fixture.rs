//! Golden bytes of the persisted formats. If one of these fails, the on-disk
//! or snapshot encoding changed. Since format version 4 ferry's types are
//! self-describing, so a field added with a default changes no fixture; a
//! change that does needs a new format version, a decoder for the old one,
//! and fixtures for the new one. Never regenerate these files to make the
//! test pass.
//!
//! - `*_v1.hex`: written by format version 1 (before backends had `node`).
//! - `*_v2.hex`: written by format version 2 (before remembered request ids
//!   kept their command's digest).
//! - `*_v3.hex`: written by format version 3 (positional bincode). Their
//!   digests are dropped on reading (`Persisted::from_positional`).
//! - `*_v4.hex`: today's format, decoded and re-encoded byte for byte.
//!
//! Versions 1 to 3 must keep decoding to today's types; they are no longer
//! what this build writes.
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
        scope: ChaosScope { routes: vec!["web".into()], nodes: vec![], backends: vec![] },
        toxicity: 0.25,
        expires_at: Some(1_900_000_000_000),
        seed: None,
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
    check_old("log_entry_v2.hex", &log_entry())?;
    check_old("log_entry_put_route_v2.hex", &put_route(pinned("web", ":7000")))?;
    check_old(
        "log_entry_seed_routes_v2.hex",
        &seed_routes(vec![route("api", "127.0.0.1:7001"), pinned("web", ":7000")]),
    )?;
    check_old("stored_route_v2.hex", &StoredRoute { spec: pinned("web", ":7000"), revision: 7 })?;
    Ok(())
}

/// Version 3 bytes decode to today's types, their digests dropped: format 3
/// digested positional bytes that format 4 no longer writes.
#[test]
fn version_3_decodes_without_digests() -> Result<()> {
    check_old("cluster_state_v3.hex", &pinned_state(false))?;
    check_old("snapshot_v3.hex", &snapshot(pinned_state(false)))?;
    check_old("log_entry_v3.hex", &log_entry())?;
    // A request read from a version-3 entry remembers no digest when
    // applied; the same request in a version-4 entry does.
    let bytes = unhex(include_str!("fixtures/log_entry_v3.hex").trim()).context("hex")?;
    for (entry, digest) in
        [(decode::<Entry>(&bytes)?, None), (log_entry(), command_digest(&policy_command()))]
    {
        let EntryPayload::Normal(request) = entry.payload else { panic!("a normal entry") };
        let mut state = ClusterState::default();
        state.apply(10, &request);
        let id = request.id.context("an id")?;
        assert_eq!(state.recent.get(id).map(|r| r.digest), Some(digest));
    }
    Ok(())
}

#[test]
fn version_4_round_trips() -> Result<()> {
    check("cluster_state_v4.hex", &pinned_state(true))?;
    check("snapshot_v4.hex", &snapshot(pinned_state(true)))?;
    check("log_entry_v4.hex", &log_entry())?;
    check("log_entry_put_route_v4.hex", &put_route(pinned("web", ":7000")))?;
    check(
        "log_entry_seed_routes_v4.hex",
        &seed_routes(vec![route("api", "127.0.0.1:7001"), pinned("web", ":7000")]),
    )?;
    Ok(())
}

/// A log entry's layout with any payload in place of the request: how a
/// test writes the bytes another version would.
#[derive(Serialize)]
struct EntryOf<P> {
    log_id: LogId,
    payload: PayloadOf<P>,
}

/// openraft's `EntryPayload` layout (the variants in order).
#[derive(Serialize)]
#[allow(dead_code)]
enum PayloadOf<P> {
    Blank,
    Normal(P),
    Membership(Membership<u64, NodeInfo>),
}

/// A JSON document written the way a self-describing type is in bincode.
struct Embedded(serde_json::Value);

impl Serialize for Embedded {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes = serde_json::to_vec(&self.0).map_err(serde::ser::Error::custom)?;
        s.serialize_bytes(&bytes)
    }
}

/// A route entry with a request id below 2^64 (serde_json's `Value` holds
/// no larger integer).
fn small_put_route() -> Entry {
    let mut entry = put_route(pinned("web", ":7000"));
    if let EntryPayload::Normal(r) = &mut entry.payload {
        r.id = Some(42);
    }
    entry
}

/// `entry` as format 4 bytes, its request's JSON document changed by `edit`.
fn entry_bytes_with(entry: &Entry, edit: impl FnOnce(&mut serde_json::Value)) -> Result<Vec<u8>> {
    let EntryPayload::Normal(request) = &entry.payload else { anyhow::bail!("a normal entry") };
    let mut doc = serde_json::to_value(request)?;
    edit(&mut doc);
    encode(&EntryOf { log_id: entry.log_id, payload: PayloadOf::Normal(Embedded(doc)) }).map_err(Into::into)
}

/// The layout above writes what another version would: an entry whose
/// request document is today's, fields in another order (serde_json's
/// `Value` sorts them), reads as the same entry.
#[test]
fn a_log_entry_is_its_requests_json_document_in_the_bincode_frame() -> Result<()> {
    let entry = small_put_route();
    let bytes = entry_bytes_with(&entry, |_| {})?;
    assert_ne!(bytes, encode(&entry)?, "the fields are in another order");
    assert_eq!(decode::<Entry>(&bytes)?, entry);
    Ok(())
}

/// A route written by an older version, without a field this build has
/// (here every field with a default: the oldest routes), reads with the
/// defaults; no format version is needed for a field added that way. This
/// is also how a newer build reads today's bytes: today's type stands for
/// the older one.
#[test]
fn a_field_missing_from_older_bytes_reads_as_its_default() -> Result<()> {
    let entry = small_put_route();
    let bytes = entry_bytes_with(&entry, |doc| {
        let route = &mut doc["command"]["PutRoute"]["route"];
        let obj = route.as_object_mut().expect("a route object");
        obj.retain(|k, _| k == "name" || k == "listen" || k == "backends");
        for b in obj["backends"].as_array_mut().expect("backends") {
            b.as_object_mut().expect("a backend").remove("weight");
        }
    })?;
    let decoded: Entry = decode(&bytes)?;
    let EntryPayload::Normal(request) = decoded.payload else { panic!("a normal entry") };
    let Command::PutRoute { route, .. } = request.command else { panic!("a route") };
    let mut expected = pinned("web", ":7000");
    expected.balance = Default::default();
    expected.health_check = None;
    for b in &mut expected.backends {
        b.weight = 1;
    }
    assert_eq!(route, expected);
    Ok(())
}

/// A route from a newer version that uses a field this build does not know
/// is refused, naming the field: applying it without the setting would
/// route differently from the nodes that know it.
#[test]
fn a_field_this_build_does_not_know_is_refused_by_name() -> Result<()> {
    let entry = small_put_route();
    let bytes = entry_bytes_with(&entry, |doc| {
        doc["command"]["PutRoute"]["route"]["send_proxy"] = serde_json::json!("v2");
    })?;
    let err = decode::<Entry>(&bytes).expect_err("an unknown route field is refused").to_string();
    assert!(err.contains("Request") && err.contains("unknown field `send_proxy`"), "{err}");
    // A new command variant likewise.
    let bytes = entry_bytes_with(&entry, |doc| {
        doc["command"] = serde_json::json!({"PutCertificate": {"name": "x"}});
    })?;
    let err = decode::<Entry>(&bytes).expect_err("an unknown command is refused").to_string();
    assert!(err.contains("unknown variant `PutCertificate`"), "{err}");
    Ok(())
}

fn policy_command() -> Command {
    Command::PutChaosPolicy { policy: policy(), cas: Some(9) }
}

#[test]
fn an_unknown_version_is_an_error() {
    let mut bytes = encode(&cluster_state()).expect("encode");
    bytes[1] = 5;
    assert!(decode::<ClusterState>(&bytes).is_err());
}
