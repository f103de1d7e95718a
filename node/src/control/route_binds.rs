//! A route's listen address across the cluster: the addresses the members
//! hold for themselves, which the admin API checks before it proposes a
//! route (no node could bind one there, or `:PORT` would take a member's
//! own port), and the routes each live member could not bind, asked over the
//! cluster port ([`Message::BindFailures`]) for `GET /v1/routes`.
//!
//! Both are views of this node: a member it has not heard of yet is not in
//! them. What the API cannot know before proposing (a port another process
//! holds on one node, an IP that is not local to it) each node reports
//! after it applied the route.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_client::route::ReservedAddr;
use ferry_raft_store::NodeId;

use super::member::MemberHandle;
use crate::cluster::message::{BindReport, Message};

/// What the live members said about their listeners.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterBinds {
    /// One report per member that answered, this node's included.
    pub reports: Vec<BindReport>,
    /// Live members that did not answer in time (or could not: a node
    /// older than the question), as (id, name).
    pub unanswered: Vec<(NodeId, String)>,
}

impl MemberHandle {
    /// Every address a member holds for itself, as this node knows them:
    /// the cluster and admin addresses of every Raft member (a static
    /// member's admin address is known only for the member that formed the
    /// cluster, and for this node), and the gossip, cluster and admin
    /// addresses of every gossip member that has not left.
    pub fn member_addrs(&self) -> Vec<ReservedAddr> {
        let mut addrs = Vec::new();
        let label = |name: &str, id: NodeId| {
            if name.is_empty() { format!("node {id}") } else { format!("node {name}") }
        };
        let m = self.replica.raft().metrics().borrow().clone();
        for (id, info) in m.membership_config.membership().nodes() {
            let who = label(&info.name, *id);
            for (addr, what) in [(&info.cluster_addr, "cluster"), (&info.admin_addr, "admin")] {
                if let Ok(addr) = addr.parse::<SocketAddr>() {
                    addrs.push(ReservedAddr::new(addr, format!("{who}'s {what} address")));
                }
            }
        }
        let view = self.gossip.as_ref().map(ferry_gossip::GossipHandle::view);
        for status in view.iter().flat_map(|v| v.members.values()) {
            let i = &status.identity;
            if status.state == ferry_gossip::MemberState::Left || i.id == 0 {
                continue;
            }
            let who = label(&i.name, i.id);
            for (addr, what) in
                [(i.gossip_addr, "gossip"), (i.cluster_addr, "cluster"), (i.admin_addr, "admin")]
            {
                addrs.push(ReservedAddr::new(addr, format!("{who}'s {what} address")));
            }
        }
        addrs.dedup_by(|a, b| a.addr == b.addr);
        addrs
    }

    /// `own` (this node's report) and those of every other live member (a
    /// Raft member gossip holds alive or suspect, or any Raft member without
    /// gossip), each asked over the cluster port within `probe_timeout`, in
    /// parallel.
    pub async fn bind_reports(&self, own: BindReport, probe_timeout: Duration) -> ClusterBinds {
        let m = self.replica.raft().metrics().borrow().clone();
        let mut peers: BTreeMap<NodeId, (String, String)> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, info)| (*id, (info.name.clone(), info.cluster_addr.clone())))
            .collect();
        if let Some(view) = self.gossip.as_ref().map(ferry_gossip::GossipHandle::view) {
            for status in view.members.values() {
                let i = &status.identity;
                if status.state.is_up() {
                    peers.insert(i.id, (i.name.clone(), i.cluster_addr.to_string()));
                } else {
                    peers.remove(&i.id);
                }
            }
        }
        peers.remove(&self.node_id);
        let mut probes = tokio::task::JoinSet::new();
        for (id, (_, addr)) in &peers {
            let (id, addr, transport) = (*id, addr.clone(), Arc::clone(&self.transport));
            probes.spawn(async move {
                match transport.call_timeout(&addr, &Message::BindFailures, probe_timeout).await {
                    Ok(Message::BindFailuresResult(report)) if report.node_id == id => Some(report),
                    _ => None,
                }
            });
        }
        let mut binds = ClusterBinds { reports: vec![own], unanswered: Vec::new() };
        while let Some(joined) = probes.join_next().await {
            if let Ok(Some(report)) = joined
                && peers.remove(&report.node_id).is_some()
            {
                binds.reports.push(report);
            }
        }
        // Whoever is left did not answer (or its probe failed).
        binds.unanswered = peers.into_iter().map(|(id, (name, _))| (id, name)).collect();
        binds.reports.sort_by_key(|r| r.node_id);
        binds
    }
}
