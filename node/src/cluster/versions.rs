//! Which version and cluster protocol every member speaks, the cluster
//! version, and the gate on features ([`crate::version`]).
//!
//! Each member answers [`Message::NodeStatus`] with its version and
//! protocol. [`Versions::probe`] asks every voter and learner at once; a
//! member that does not answer (down, or unreachable) is *unknown*. The
//! cluster version is the lowest protocol among the members, and is unknown
//! while any member's is. The last probe is kept for `/v1/status`, and a
//! task refreshes it every [`REFRESH`] ([`Versions::run`]).
//!
//! The gate ([`Versions::check`]) probes afresh: a node refuses a write
//! that uses a feature unless every member is known to speak it, so a
//! member that is down when the write is made counts as behind. The node
//! that receives the write checks, and the leader again before proposing
//! (an older leader could not read it at all). It is asked only for writes
//! that use a feature, which are rare.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_client::api::ClusterVersion;
use ferry_raft_store::types::Raft;
use ferry_raft_store::{NodeId, NodeInfo};
use tokio_util::sync::CancellationToken;

use crate::cluster::message::{Message, WriteError};
use crate::cluster::transport::Transport;
use crate::version::{self, FEATURES, NodeVersion};

/// How often [`Versions::run`] asks every member.
pub const REFRESH: Duration = Duration::from_secs(5);

/// Longest wait for one member's answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// One voter or learner and what it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberVersion {
    pub id: NodeId,
    pub name: String,
    /// `None`: it did not answer.
    pub version: Option<NodeVersion>,
}

impl MemberVersion {
    /// `n2 (0.1.0+0123456789ab, protocol 3)`, or `n2 (version unknown: no answer)`.
    fn describe(&self) -> String {
        let name = if self.name.is_empty() { format!("node {}", self.id) } else { self.name.clone() };
        match &self.version {
            Some(v) => format!("{name} ({v})"),
            None => format!("{name} (version unknown: no answer)"),
        }
    }
}

/// The cluster version of `members` (the lowest protocol, unknown while a
/// member's is), as `/v1/status` shows it.
pub fn cluster_version(members: &[MemberVersion]) -> ClusterVersion {
    let unknown: Vec<String> =
        members.iter().filter(|m| m.version.is_none()).map(MemberVersion::describe).collect();
    let lowest = members.iter().filter_map(|m| m.version.as_ref()).min_by_key(|v| v.protocol);
    match lowest {
        Some(v) if unknown.is_empty() => ClusterVersion {
            protocol: Some(v.protocol),
            version: Some(v.version.clone()),
            features: version::features_of(v.protocol),
            unknown,
        },
        _ => ClusterVersion { protocol: None, version: None, features: Vec::new(), unknown },
    }
}

/// Refuses a write using `used` (feature names) unless every one of
/// `members` speaks each: [`WriteError::FeatureNotEnabled`] names the first
/// feature missing and the members behind on it.
pub fn check(used: &[&str], members: &[MemberVersion]) -> Result<(), WriteError> {
    for name in used {
        // A name missing from the table is a feature of this build alone.
        let since = FEATURES.iter().find(|f| f.name == *name).map_or(version::PROTOCOL, |f| f.since);
        let behind: Vec<String> = members
            .iter()
            .filter(|m| m.version.as_ref().is_none_or(|v| v.protocol < since))
            .map(MemberVersion::describe)
            .collect();
        if !behind.is_empty() {
            return Err(WriteError::FeatureNotEnabled { feature: (*name).to_string(), since, behind });
        }
    }
    Ok(())
}

/// Probes members' versions for one node; see the module doc.
#[derive(Clone)]
pub struct Versions {
    node_id: NodeId,
    name: String,
    raft: Raft,
    transport: Arc<Transport>,
    last: Arc<Mutex<Option<ClusterVersion>>>,
}

impl std::fmt::Debug for Versions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Versions").field("node_id", &self.node_id).field("last", &self.last()).finish()
    }
}

impl Versions {
    /// Versions as node `node_id` named `name` sees them, through its Raft
    /// membership and `transport`.
    pub fn new(node_id: NodeId, name: &str, raft: Raft, transport: Arc<Transport>) -> Self {
        Self { node_id, name: name.to_string(), raft, transport, last: Arc::new(Mutex::new(None)) }
    }

    /// Every voter and learner with what it speaks (this node's own, known),
    /// each asked within `timeout`.
    pub async fn probe(&self, timeout: Duration) -> Vec<MemberVersion> {
        let members: BTreeMap<NodeId, NodeInfo> = {
            let m = self.raft.metrics().borrow().clone();
            m.membership_config.membership().nodes().map(|(id, info)| (*id, info.clone())).collect()
        };
        let mut probes = tokio::task::JoinSet::new();
        let mut out = Vec::with_capacity(members.len());
        for (id, info) in members {
            if id == self.node_id {
                let own = NodeVersion { version: version::version(), protocol: version::PROTOCOL };
                out.push(MemberVersion { id, name: self.name.clone(), version: Some(own) });
                continue;
            }
            let transport = Arc::clone(&self.transport);
            probes.spawn(async move {
                let answer = transport.call_timeout(&info.cluster_addr, &Message::NodeStatus, timeout).await;
                let version = match answer {
                    Ok(Message::NodeStatusResult(s)) if s.node_id == id => s.node_version(),
                    _ => None,
                };
                MemberVersion { id, name: info.name, version }
            });
        }
        while let Some(joined) = probes.join_next().await {
            if let Ok(m) = joined {
                out.push(m);
            }
        }
        out.sort_by_key(|m| m.id);
        *self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(cluster_version(&out));
        out
    }

    /// The cluster version from the last probe (`None` before the first).
    pub fn last(&self) -> Option<ClusterVersion> {
        self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The gate: probes every member and [`check`]s `used` against them.
    pub async fn check(&self, used: &[&str]) -> Result<(), WriteError> {
        if used.is_empty() {
            return Ok(());
        }
        check(used, &self.probe(PROBE_TIMEOUT).await)
    }

    /// Refreshes [`Versions::last`] every [`REFRESH`] until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            self.probe(PROBE_TIMEOUT).await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(REFRESH) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: NodeId, protocol: Option<u16>) -> MemberVersion {
        MemberVersion {
            id,
            name: format!("n{id}"),
            version: protocol.map(|p| NodeVersion { version: format!("0.{p}.0+abc"), protocol: p }),
        }
    }

    #[test]
    fn the_cluster_version_is_the_lowest_and_unknown_while_a_member_is() {
        let v = cluster_version(&[member(1, Some(4)), member(2, Some(3)), member(3, Some(4))]);
        assert_eq!(v.protocol, Some(3));
        assert_eq!(v.version.as_deref(), Some("0.3.0+abc"));
        assert!(v.unknown.is_empty());
        let v = cluster_version(&[member(1, Some(4)), member(2, None)]);
        assert_eq!(v.protocol, None);
        assert_eq!(v.unknown, ["n2 (version unknown: no answer)"]);
    }

    #[test]
    fn a_feature_is_refused_naming_every_member_behind() {
        let members = [member(1, Some(version::PROTOCOL)), member(2, Some(2)), member(3, None)];
        assert_eq!(check(&[], &members), Ok(()));
        let Err(WriteError::FeatureNotEnabled { feature, since, behind }) = check(&["x"], &members) else {
            panic!("a feature unknown to the table is this build's: n2 and n3 are behind");
        };
        assert_eq!((feature.as_str(), since), ("x", version::PROTOCOL));
        assert_eq!(behind, ["n2 (0.2.0+abc, protocol 2)", "n3 (version unknown: no answer)"]);
        let all = [member(1, Some(version::PROTOCOL)), member(2, Some(version::PROTOCOL + 1))];
        assert_eq!(check(&["x"], &all), Ok(()));
    }
}
