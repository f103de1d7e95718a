//! openraft's type configuration for ferry: node ids, the node metadata kept
//! in the Raft membership, and the log's request and response types.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::command::{Request, Response};

/// A Raft node id: a random u64 persisted in the node's data dir, never reused.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// ferry's openraft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// What the Raft membership records about a node, so that any member can
/// reach it: its cluster port (Raft RPCs, forwarded writes) and its admin API.
///
/// Self-describing ([`ferry_client::selfdesc`]): it is in every membership
/// (log entries, snapshots, votes' neighbours), so it can gain fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct NodeInfo {
    /// The node's name (`[node] name`).
    pub name: String,
    /// `IP:PORT` of the cluster transport.
    pub cluster_addr: String,
    /// `IP:PORT` of the admin HTTP API.
    pub admin_addr: String,
}

ferry_client::self_describing!(NodeInfo);

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (cluster {}, admin {})", self.name, self.cluster_addr, self.admin_addr)
    }
}

/// A log entry of ferry's Raft log.
pub type Entry = openraft::Entry<TypeConfig>;
/// ferry's Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// Log id with ferry's node id.
pub type LogId = openraft::LogId<NodeId>;
/// Vote with ferry's node id.
pub type Vote = openraft::Vote<NodeId>;
/// The membership as stored with its log id.
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
/// A built snapshot.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// openraft's storage error with ferry's node id.
pub type StorageError = openraft::StorageError<NodeId>;
