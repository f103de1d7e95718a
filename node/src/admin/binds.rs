//! Where routes can listen, as the admin API sees it: the check of a new
//! route's `listen` before it is proposed (what the API can know is wrong
//! on every node), and which nodes could not bind a route (what only each
//! node can know), for `GET /v1/routes` and `/health/ready`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_client::api::{BindFailure, NodeName};
use ferry_client::route::{cluster_listen_conflict, reserved_conflict};
use ferry_client::{FieldError, RouteSpec};
use ferry_raft_store::ClusterState;

use super::request::ReadParams;
use super::{AdminState, ApiError};
use crate::cluster::message::BindReport;

/// Longest wait for one member's answer about its listeners.
const BIND_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Which nodes could not bind which route, and the members that did not say.
#[derive(Debug, Clone, Default)]
pub struct RouteBinds {
    by_route: BTreeMap<String, Vec<BindFailure>>,
    /// Live members that did not answer.
    pub unknown: Vec<NodeName>,
}

impl RouteBinds {
    /// The nodes that could not bind `route`.
    pub fn failures(&self, route: &str) -> Vec<BindFailure> {
        self.by_route.get(route).cloned().unwrap_or_default()
    }
}

impl AdminState {
    /// The routes this node could not bind, as it tells its peers.
    pub fn own_bind_report(&self) -> BindReport {
        let node_id = self.member.as_ref().map_or(0, |m| m.node_id);
        BindReport::new(node_id, &self.node_name, &self.bind_failures.load())
    }

    /// Which nodes could not bind which route: this node, and in cluster
    /// mode every live member (asked in parallel, each within 500 ms or the
    /// request timeout).
    pub async fn route_binds(&self) -> RouteBinds {
        let own = self.own_bind_report();
        let (reports, unanswered) = match &self.member {
            None => (vec![own], Vec::new()),
            Some(m) => {
                let binds = m.bind_reports(own, BIND_PROBE_TIMEOUT.min(self.request_timeout)).await;
                (binds.reports, binds.unanswered)
            }
        };
        let mut by_route: BTreeMap<String, Vec<BindFailure>> = BTreeMap::new();
        for report in reports {
            let node_id = self.member.is_some().then_some(report.node_id);
            for f in report.failures {
                by_route.entry(f.route).or_default().push(BindFailure {
                    node_id,
                    node: report.name.clone(),
                    addr: f.addr,
                    error: f.error,
                });
            }
        }
        let unknown = unanswered.into_iter().map(|(node_id, node)| NodeName { node_id, node }).collect();
        RouteBinds { by_route, unknown }
    }

    /// The state a read serves (see [`AdminState::read_state`]) and which
    /// nodes could not bind which route. Members are asked while the read
    /// barrier runs; after a blocking wait, once it ended (an answer from
    /// before a wait of minutes would be stale).
    pub async fn read_with_binds(
        &self,
        params: &ReadParams,
    ) -> Result<(Arc<ClusterState>, RouteBinds), ApiError> {
        if params.index.is_some() {
            let state = self.read_state(params).await?;
            return Ok((state, self.route_binds().await));
        }
        let (state, binds) = tokio::join!(self.read_state(params), self.route_binds());
        Ok((state?, binds))
    }

    /// What is wrong, on every node, with `route`'s `listen` (a valid one)
    /// in a cluster whose applied state is `state`: an address a member
    /// holds for itself (its admin, cluster or gossip address; `:PORT`
    /// against any of that port, since each node binds it on its own bind
    /// address), or a collision with another route that every node would
    /// have. Checked before proposing: it depends on the membership, which
    /// the state machine must not (its apply is deterministic). The path is
    /// the state machine's (`route.listen`).
    pub fn listen_problem(&self, route: &RouteSpec, state: &ClusterState) -> Option<FieldError> {
        let mut reserved = self.own_addrs.to_vec();
        if let Some(m) = &self.member {
            reserved.extend(m.member_addrs());
        }
        let others = state.routes.values().map(|r| &r.spec).filter(|r| r.name != route.name);
        reserved_conflict(&route.listen, None, &reserved)
            .or_else(|| cluster_listen_conflict(&route.listen, others))
            .map(|msg| FieldError::new("route.listen", msg))
    }
}
