//! Snapshot bytes: what a snapshot contains ([`SnapshotEnvelope`]) and how
//! the current snapshot is kept on disk ([`StoredSnapshot`]).
//!
//! A snapshot is the whole [`ClusterState`] (routes, policies, config index,
//! and the memory of request ids, so de-duplication survives a catch-up by
//! snapshot) plus the Raft position it reflects. Its bytes are
//! [`codec::encode`] of the envelope: the version prefix
//! versions the envelope.

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::state::ClusterState;
use crate::types::{LogId, SnapshotMeta, StoredMembership};

/// The content of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotEnvelope {
    /// The config at `last_applied`.
    pub state: ClusterState,
    /// The last log entry the state includes.
    pub last_applied: Option<LogId>,
    /// The membership in force at `last_applied`.
    pub membership: StoredMembership,
}

impl SnapshotEnvelope {
    /// The snapshot's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }

    /// Reads a snapshot's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        codec::decode(bytes)
    }
}

/// The current snapshot as kept in the state machine's tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSnapshot {
    /// openraft's metadata of the snapshot.
    pub meta: SnapshotMeta,
    /// The envelope's bytes.
    pub data: Vec<u8>,
}
