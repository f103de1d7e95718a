//! `bootstrap_expect`: forming a new cluster from gossip.
//!
//! Every node started with `bootstrap_expect = N` and no Raft state waits
//! until gossip shows at least N alive members, then asks each of them over
//! the cluster port whether it has Raft state and whether it was started
//! with `bootstrap_expect` too. If nobody has state and at least N members
//! bootstrap, the one with the lowest id among those initializes Raft with
//! the N lowest of them (itself included); the caller then seeds the file's
//! routes. The others get the membership from the new leader; members that
//! only `join` are brought in by autopilot.
//!
//! - Any start order works: nothing happens until N bootstrapping members
//!   see each other, and only one of them (the lowest id) acts.
//! - Restarts during bootstrap are safe: a node that has initialized keeps
//!   its state on disk and answers "initialized" from then on, so nobody
//!   initializes twice; a node joining an existing cluster finds a member
//!   with state and waits for autopilot instead.
//! - The view must hold still for a moment before acting, so members that
//!   are starting at the same time are seen.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_gossip::{GossipHandle, MemberState, MemberView};
use ferry_raft_store::{NodeId, NodeInfo};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::replica::Replica;
use crate::cluster::message::{Message, NodeStatus};
use crate::cluster::transport::Transport;

/// The view must be unchanged this long before the lowest member acts.
const SETTLE: Duration = Duration::from_secs(1);
/// Longest wait for one member's status answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between checks.
const RETRY: Duration = Duration::from_millis(250);

/// How the bootstrap of this node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This node initialized the cluster.
    Initialized,
    /// Raft state arrived from a leader, or another member already had it.
    Joined,
    Stopped,
}

/// Waits for `expect` members and forms the cluster if this node is the
/// lowest; returns how it ended.
pub async fn run(
    expect: usize,
    replica: Arc<Replica>,
    gossip: GossipHandle,
    transport: Arc<Transport>,
    stop: CancellationToken,
) -> Outcome {
    let raft = replica.raft().clone();
    let self_id = gossip.identity().id;
    let mut view_rx = gossip.subscribe();
    let mut raft_rx = raft.metrics();
    let mut waiting_logged = false;
    loop {
        if raft.is_initialized().await.unwrap_or(true) {
            info!("bootstrap: this node has cluster state");
            return Outcome::Joined;
        }
        let view = view_rx.borrow_and_update().clone();
        let alive: Vec<_> = view.members.values().filter(|m| m.state == MemberState::Alive).collect();
        if alive.len() < expect {
            if !waiting_logged {
                info!(seen = alive.len(), expect, "bootstrap: waiting for members");
                waiting_logged = true;
            }
        } else {
            let settled = tokio::select! {
                () = stop.cancelled() => return Outcome::Stopped,
                () = tokio::time::sleep(SETTLE) => view_rx.borrow().version == view.version,
            };
            if settled {
                let others = alive.iter().filter(|m| m.identity.id != self_id);
                match probe(&transport, others.map(|m| m.identity.cluster_addr.to_string())).await {
                    Probe::Statuses(statuses) => {
                        let mut candidates: Vec<NodeId> = statuses
                            .iter()
                            .filter(|s| s.bootstrap_expect > 0)
                            .map(|s| s.node_id)
                            .chain([self_id])
                            .collect();
                        candidates.sort_unstable();
                        candidates.truncate(expect);
                        if candidates.len() == expect && candidates[0] == self_id {
                            return initialize(&raft, &view, &candidates).await;
                        }
                    }
                    Probe::Initialized(addr) => {
                        info!(member = %addr, "bootstrap: a member already has cluster state; waiting to be added");
                        return Outcome::Joined;
                    }
                    Probe::Unreachable(addr) => {
                        info!(member = %addr, "bootstrap: a member did not answer; retrying");
                    }
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return Outcome::Stopped,
            () = tokio::time::sleep(RETRY) => {}
            r = view_rx.changed() => if r.is_err() { return Outcome::Stopped },
            r = raft_rx.changed() => if r.is_err() { return Outcome::Stopped },
        }
    }
}

/// Initializes Raft with `ids` as voters, their addresses from gossip.
async fn initialize(raft: &ferry_raft_store::types::Raft, view: &MemberView, ids: &[NodeId]) -> Outcome {
    let members: BTreeMap<NodeId, NodeInfo> = ids
        .iter()
        .filter_map(|id| view.get(*id))
        .map(|m| {
            let info = NodeInfo {
                name: m.identity.name.clone(),
                cluster_addr: m.identity.cluster_addr.to_string(),
                admin_addr: m.identity.admin_addr.to_string(),
            };
            (m.identity.id, info)
        })
        .collect();
    let named: Vec<String> =
        members.iter().map(|(id, n)| crate::cluster::contacts::node_label(*id, &n.name)).collect();
    info!(members = ?named, "bootstrap: initializing a new cluster");
    match raft.initialize(members).await {
        Ok(()) => Outcome::Initialized,
        Err(e) => {
            warn!(error = %e, "bootstrap: initialization refused");
            Outcome::Joined
        }
    }
}

enum Probe {
    /// Nobody has Raft state; here is what each member said.
    Statuses(Vec<NodeStatus>),
    Initialized(String),
    Unreachable(String),
}

/// Asks every address whether it has Raft state and whether it bootstraps.
async fn probe(transport: &Transport, addrs: impl Iterator<Item = String>) -> Probe {
    let mut statuses = Vec::new();
    for addr in addrs {
        match transport.call_timeout(&addr, &Message::NodeStatus, PROBE_TIMEOUT).await {
            Ok(Message::NodeStatusResult(s)) if s.initialized => return Probe::Initialized(addr),
            Ok(Message::NodeStatusResult(s)) => statuses.push(s),
            Ok(other) => {
                warn!(member = %addr, answer = other.kind(), "bootstrap: unexpected status answer");
                return Probe::Unreachable(addr);
            }
            Err(e) => {
                tracing::debug!(member = %addr, error = %e, "bootstrap: status probe failed");
                return Probe::Unreachable(addr);
            }
        }
    }
    Probe::Statuses(statuses)
}
