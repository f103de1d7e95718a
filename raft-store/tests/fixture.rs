//! Golden bytes of the persisted formats (version 1). If one of these fails,
//! the on-disk or snapshot encoding changed: bump `codec::FORMAT_VERSION`,
//! keep a decoder for version 1, and add a fixture for the new version —
//! never regenerate these files to make the test pass.
//!
//! To create a fixture for a *new* file: `FERRY_WRITE_FIXTURES=1 cargo test
//! -p ferry-raft-store --test fixture` (existing files are never overwritten).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use ferry_client::chaos::{ChaosPolicy, ChaosScope, Direction, Toxic, ToxicKind};
use ferry_client::{FieldError, RouteSpec};
use ferry_raft_store::codec::{decode, encode};
use ferry_raft_store::recent::RecentRequests;
use ferry_raft_store::types::{Entry, LogId};
use ferry_raft_store::{ClusterState, Command, Request, Response, StateError, StoredPolicy, StoredRoute};
use openraft::{CommittedLeaderId, EntryPayload};
use serde::Serialize;
use serde::de::DeserializeOwned;

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

fn cluster_state() -> ClusterState {
    let routes = BTreeMap::from([
        ("api".to_string(), StoredRoute { spec: route("api", "127.0.0.1:7001"), revision: 4 }),
        ("web".to_string(), StoredRoute { spec: route("web", ":7000"), revision: 7 }),
    ]);
    let chaos = BTreeMap::from([("slow".to_string(), StoredPolicy { policy: policy(), revision: 9 })]);
    let recent = RecentRequests::from_parts(
        12,
        [
            (u128::MAX - 1, Response::Applied { index: 9, revision: 9 }),
            (
                42,
                Response::Rejected {
                    error: StateError::Invalid { errors: vec![FieldError::new("route.listen", "bad")] },
                },
            ),
            (43, Response::Rejected { error: StateError::CasMismatch { current: 7 } }),
        ],
    );
    ClusterState { routes, chaos, index: 9, recent }
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

/// Decodes the fixture and compares with `expected`; the bytes of `expected`
/// must also equal the fixture (the encoding is deterministic).
fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    file: &str,
    expected: &T,
) -> Result<()> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(file);
    if std::env::var_os("FERRY_WRITE_FIXTURES").is_some() && !path.exists() {
        std::fs::write(&path, hex(&encode(expected)?) + "\n")?;
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let bytes = unhex(text.trim()).context("fixture is not hex")?;
    let decoded: T = decode(&bytes).with_context(|| format!("decode {file}"))?;
    assert_eq!(&decoded, expected, "{file} decodes to a different value");
    assert_eq!(hex(&encode(expected)?), text.trim(), "{file}: the encoding of the same value changed");
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[test]
fn cluster_state_v1_decodes() -> Result<()> {
    check("cluster_state_v1.hex", &cluster_state())
}

#[test]
fn log_entry_v1_decodes() -> Result<()> {
    check("log_entry_v1.hex", &log_entry())
}

#[test]
fn an_unknown_version_is_an_error() {
    let mut bytes = encode(&cluster_state()).expect("encode");
    bytes[1] = 2;
    assert!(decode::<ClusterState>(&bytes).is_err());
}
