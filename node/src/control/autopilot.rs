//! Autopilot: the leader keeps Raft membership in step with gossip.
//!
//! - A gossip member that is alive and not in Raft is added as a learner.
//! - A learner that has been alive for the stabilization time and has
//!   caught up with the leader's log is promoted to voter while there are
//!   fewer than `max_voters` voters; the others stay learners (they still
//!   receive the replicated config and serve traffic).
//! - A member that left gracefully is removed at once; one that gossip has
//!   held down for `dead_node_timeout` is removed. A voter is removed only
//!   if the remaining voters still have a live majority. A node that stops
//!   without leaving (SIGTERM by default) is down, not left: restarted within
//!   `dead_node_timeout` it is alive again (a new gossip incarnation, `since`
//!   reset) and keeps its seat.
//! - A member removed from Raft while gossip still held it up (a leave: Raft
//!   first, then gossip) is not added back under that gossip incarnation
//!   ([`Departed`]); a restart has a new incarnation and is added again.
//!
//! [`plan`] is a pure function of (Raft membership, replication progress,
//! gossip view, departed members, now) returning at most one change; [`run`] executes one
//! change at a time on the leader (openraft allows one membership change in
//! flight). Members Raft knows but gossip never saw are left alone.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use ferry_gossip::{GossipHandle, MemberState, MemberView};
use ferry_raft_store::types::Raft;
use ferry_raft_store::{NodeId, NodeInfo, is_leader};
use openraft::ChangeMembers;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cluster::contacts::node_label;
use crate::cluster::server::MEMBERSHIP_TIMEOUT;
use crate::telemetry::metrics::{AUTOPILOT_CHANGES, Metrics};

/// A learner within this many entries of the leader's last log index
/// counts as caught up.
const CATCH_UP_LAG: u64 = 16;
/// How often the leader re-evaluates, besides on every view change.
const TICK: Duration = Duration::from_millis(500);
/// Pause after a refused or failed change.
const RETRY: Duration = Duration::from_secs(1);
/// How many departed gossip identities are remembered; older ones fall out.
const DEPARTED_CAPACITY: usize = 64;

/// Autopilot settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutopilotConfig {
    /// Most voters (odd).
    pub max_voters: usize,
    /// A member down in gossip this long is removed.
    pub dead_node_timeout: Duration,
    /// A learner must have been alive this long before promotion.
    pub stabilization: Duration,
}

/// One membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    AddLearner { id: NodeId, info: NodeInfo },
    Promote { id: NodeId },
    Remove { id: NodeId, voter: bool, why: &'static str },
}

impl Change {
    /// The `change` label of `ferry_autopilot_changes_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Change::AddLearner { .. } => "add_learner",
            Change::Promote { .. } => "promote",
            Change::Remove { .. } => "remove",
        }
    }
}

/// What [`plan`] looks at.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub self_id: NodeId,
    pub voters: &'a BTreeSet<NodeId>,
    /// Every Raft member (voters and learners) with its stored info.
    pub nodes: &'a BTreeMap<NodeId, NodeInfo>,
    /// The leader's replication progress: last matched log index per member.
    pub matched: &'a BTreeMap<NodeId, Option<u64>>,
    pub last_log_index: u64,
    pub view: &'a MemberView,
    /// Gossip identities removed from Raft while up (see [`Departed`]).
    pub departed: &'a Departed,
    pub now: Instant,
}

/// The gossip identities, `(id, incarnation)`, of members that left the
/// Raft membership while gossip held them up. Every node keeps it from the
/// membership changes it sees, leader or not, so a new leader knows it too:
/// a leaving leader removes itself, then a follower takes over while the
/// old leader is still alive in gossip for a moment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Departed {
    /// The membership seen last (none before the first observation).
    last: Option<BTreeSet<NodeId>>,
    gone: VecDeque<(NodeId, u64)>,
}

impl Departed {
    /// Notes the members of `last` that are not in `nodes` and are up in
    /// `view`, with their current gossip incarnation.
    pub fn observe(&mut self, nodes: &BTreeMap<NodeId, NodeInfo>, view: &MemberView) {
        let now: BTreeSet<NodeId> = nodes.keys().copied().collect();
        for &id in self.last.iter().flat_map(|last| last.difference(&now)) {
            let Some(m) = view.get(id).filter(|m| m.state.is_up()) else { continue };
            let key = (id, m.identity.incarnation);
            if !self.gone.contains(&key) {
                if self.gone.len() == DEPARTED_CAPACITY {
                    self.gone.pop_front();
                }
                self.gone.push_back(key);
            }
        }
        self.last = Some(now);
    }

    /// Whether node `id` left the membership under gossip incarnation
    /// `incarnation`.
    pub fn contains(&self, id: NodeId, incarnation: u64) -> bool {
        self.gone.contains(&(id, incarnation))
    }
}

/// The next change to make, if any: dead members first, then promotions,
/// then new learners; lowest id first within each.
pub fn plan(i: &Inputs<'_>, cfg: &AutopilotConfig) -> Option<Change> {
    remove_dead(i, cfg).or_else(|| promote(i, cfg)).or_else(|| add_learner(i))
}

fn remove_dead(i: &Inputs<'_>, cfg: &AutopilotConfig) -> Option<Change> {
    for &id in i.nodes.keys() {
        if id == i.self_id {
            continue;
        }
        let Some(member) = i.view.get(id) else { continue };
        let why = match member.state {
            MemberState::Left => "left",
            MemberState::Down if i.now.saturating_duration_since(member.since) >= cfg.dead_node_timeout => {
                "down"
            }
            _ => continue,
        };
        let voter = i.voters.contains(&id);
        if voter && !quorum_survives_removal(i, id) {
            continue;
        }
        return Some(Change::Remove { id, voter, why });
    }
    None
}

/// Whether the voters without `id` still have a live majority (this node,
/// the leader, counts as live).
pub fn quorum_survives_removal(i: &Inputs<'_>, id: NodeId) -> bool {
    let remaining: Vec<NodeId> = i.voters.iter().copied().filter(|&v| v != id).collect();
    let live = remaining
        .iter()
        .filter(|&&v| v == i.self_id || i.view.state_of(v).is_some_and(MemberState::is_up))
        .count();
    !remaining.is_empty() && live > remaining.len() / 2
}

fn promote(i: &Inputs<'_>, cfg: &AutopilotConfig) -> Option<Change> {
    if i.voters.len() >= cfg.max_voters {
        return None;
    }
    let floor = i.last_log_index.saturating_sub(CATCH_UP_LAG);
    i.nodes
        .keys()
        .filter(|id| !i.voters.contains(id))
        .find(|&&id| {
            let stable = i.view.get(id).is_some_and(|m| {
                m.state == MemberState::Alive && i.now.saturating_duration_since(m.since) >= cfg.stabilization
            });
            let caught_up = i.matched.get(&id).copied().flatten().is_some_and(|m| m >= floor);
            stable && caught_up
        })
        .map(|&id| Change::Promote { id })
}

fn add_learner(i: &Inputs<'_>) -> Option<Change> {
    i.view
        .members
        .values()
        // Never itself: a leader outside the membership removed itself.
        .filter(|m| m.state == MemberState::Alive && m.identity.id != 0 && m.identity.id != i.self_id)
        .filter(|m| !i.nodes.contains_key(&m.identity.id))
        .filter(|m| !i.departed.contains(m.identity.id, m.identity.incarnation))
        .find(|m| {
            let clash = i.nodes.values().any(|n| n.name == m.identity.name);
            if clash {
                warn!(
                    node = m.identity.id, name = %m.identity.name,
                    "not adding a member whose name another member already has"
                );
            }
            !clash
        })
        .map(|m| Change::AddLearner {
            id: m.identity.id,
            info: NodeInfo {
                name: m.identity.name.clone(),
                cluster_addr: m.identity.cluster_addr.to_string(),
                admin_addr: m.identity.admin_addr.to_string(),
            },
        })
}

/// Runs autopilot until `stop`: acts only while this node is the leader.
pub async fn run(
    raft: Raft,
    gossip: GossipHandle,
    cfg: AutopilotConfig,
    metrics: Metrics,
    stop: CancellationToken,
) {
    for change in AUTOPILOT_CHANGES {
        metrics.autopilot_changes_total.with_label_values(&[change]);
    }
    let mut view_rx = gossip.subscribe();
    let mut raft_rx = raft.metrics();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut departed = Departed::default();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
            r = view_rx.changed() => if r.is_err() { return },
            r = raft_rx.changed() => if r.is_err() { return },
        }
        let (change, names) = {
            let m = raft_rx.borrow_and_update().clone();
            let membership = m.membership_config.membership();
            let nodes: BTreeMap<NodeId, NodeInfo> =
                membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
            let view = view_rx.borrow_and_update().clone();
            // Every node, leader or not, so that a new leader knows.
            departed.observe(&nodes, &view);
            if !is_leader(&m) {
                continue;
            }
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            let matched: BTreeMap<NodeId, Option<u64>> = m
                .replication
                .as_ref()
                .map(|r| r.iter().map(|(id, l)| (*id, l.as_ref().map(|l| l.index))).collect())
                .unwrap_or_default();
            let inputs = Inputs {
                self_id: m.id,
                voters: &voters,
                nodes: &nodes,
                matched: &matched,
                last_log_index: m.last_log_index.unwrap_or(0),
                view: &view,
                departed: &departed,
                now: Instant::now(),
            };
            (plan(&inputs, &cfg), (nodes, view))
        };
        let Some(change) = change else { continue };
        let node = change_node(&change, &names.0, &names.1);
        let label = change.label();
        match &change {
            Change::Remove { why, .. } => info!(change = label, %node, why, "autopilot: changing membership"),
            _ => info!(change = label, %node, "autopilot: changing membership"),
        }
        let result = match change {
            Change::AddLearner { id, info } => {
                tokio::time::timeout(MEMBERSHIP_TIMEOUT, raft.add_learner(id, info, false)).await
            }
            Change::Promote { id } => {
                let ids = BTreeSet::from([id]);
                tokio::time::timeout(
                    MEMBERSHIP_TIMEOUT,
                    raft.change_membership(ChangeMembers::AddVoterIds(ids), true),
                )
                .await
            }
            Change::Remove { id, voter, .. } => {
                let ids = BTreeSet::from([id]);
                let change =
                    if voter { ChangeMembers::RemoveVoters(ids) } else { ChangeMembers::RemoveNodes(ids) };
                tokio::time::timeout(MEMBERSHIP_TIMEOUT, raft.change_membership(change, false)).await
            }
        };
        match result {
            Ok(Ok(resp)) => {
                metrics.autopilot_changes_total.with_label_values(&[label]).inc();
                info!(change = label, %node, index = resp.log_id.index, "autopilot: membership changed");
            }
            Ok(Err(e)) => {
                warn!(change = label, %node, error = %e, "autopilot: membership change refused");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
            Err(_) => warn!(change = label, %node, "autopilot: membership change not committed in time"),
        }
    }
}

/// `name (id N)` of the node `change` is about, named by the membership or
/// gossip.
fn change_node(change: &Change, nodes: &BTreeMap<NodeId, NodeInfo>, view: &MemberView) -> String {
    let id = match change {
        Change::AddLearner { id, .. } | Change::Promote { id } | Change::Remove { id, .. } => *id,
    };
    let name = match change {
        Change::AddLearner { info, .. } => Some(info.name.clone()),
        _ => nodes.get(&id).map(|n| n.name.clone()),
    }
    .filter(|n| !n.is_empty())
    .or_else(|| view.get(id).map(|m| m.identity.name.clone()))
    .unwrap_or_default();
    node_label(id, &name)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use ferry_gossip::{MemberStatus, NodeIdentity};

    use super::*;

    #[test]
    fn every_change_label_is_exported_at_start() {
        let info = NodeInfo::default();
        let changes = [
            Change::AddLearner { id: 1, info },
            Change::Promote { id: 1 },
            Change::Remove { id: 1, voter: true, why: "left" },
        ];
        for c in changes {
            assert!(AUTOPILOT_CHANGES.contains(&c.label()), "{} is not in AUTOPILOT_CHANGES", c.label());
        }
    }

    const CFG: AutopilotConfig = AutopilotConfig {
        max_voters: 5,
        dead_node_timeout: Duration::from_secs(30),
        stabilization: Duration::from_secs(2),
    };

    struct World {
        now: Instant,
        voters: BTreeSet<NodeId>,
        nodes: BTreeMap<NodeId, NodeInfo>,
        matched: BTreeMap<NodeId, Option<u64>>,
        view: MemberView,
        departed: Departed,
    }

    fn addr(id: u64, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, id as u8], port))
    }

    fn info(id: u64) -> NodeInfo {
        NodeInfo {
            name: format!("n{id}"),
            cluster_addr: addr(id, 7947).to_string(),
            admin_addr: addr(id, 7948).to_string(),
        }
    }

    impl World {
        /// Voters 1..=n, all alive for a minute and caught up at index 100.
        fn new(n: u64) -> Self {
            let now = Instant::now() + Duration::from_secs(3600);
            let mut w = World {
                now,
                voters: BTreeSet::new(),
                nodes: BTreeMap::new(),
                matched: BTreeMap::new(),
                view: MemberView { local_id: 1, version: 1, members: BTreeMap::new() },
                departed: Departed::default(),
            };
            for id in 1..=n {
                w.voters.insert(id);
                w.nodes.insert(id, info(id));
                w.matched.insert(id, Some(100));
                w.gossip(id, MemberState::Alive, 60);
            }
            w
        }

        fn gossip(&mut self, id: u64, state: MemberState, secs_ago: u64) {
            let identity =
                NodeIdentity::new(id, format!("n{id}"), addr(id, 7946), addr(id, 7947), addr(id, 7948));
            let since = self.now - Duration::from_secs(secs_ago);
            self.view.members.insert(id, MemberStatus { identity, state, since, since_unix_ms: 0 });
        }

        fn learner(&mut self, id: u64, matched: Option<u64>) {
            self.nodes.insert(id, info(id));
            self.matched.insert(id, matched);
        }

        fn plan(&self) -> Option<Change> {
            let i = Inputs {
                self_id: 1,
                voters: &self.voters,
                nodes: &self.nodes,
                matched: &self.matched,
                last_log_index: 100,
                view: &self.view,
                departed: &self.departed,
                now: self.now,
            };
            plan(&i, &CFG)
        }
    }

    #[test]
    fn a_steady_cluster_needs_nothing() {
        assert_eq!(World::new(3).plan(), None);
    }

    #[test]
    fn a_new_alive_member_becomes_a_learner_with_its_gossiped_addresses() {
        let mut w = World::new(3);
        w.gossip(9, MemberState::Alive, 0);
        assert_eq!(w.plan(), Some(Change::AddLearner { id: 9, info: info(9) }));
        w.view.members.get_mut(&9).expect("member").state = MemberState::Suspect;
        assert_eq!(w.plan(), None, "a suspect member waits");
    }

    #[test]
    fn a_member_with_a_taken_name_is_not_added() {
        let mut w = World::new(3);
        w.gossip(9, MemberState::Alive, 0);
        w.view.members.get_mut(&9).expect("member").identity.name = "n2".into();
        assert_eq!(w.plan(), None);
    }

    #[test]
    fn a_learner_is_promoted_once_stable_and_caught_up() {
        let mut w = World::new(3);
        w.learner(4, Some(10));
        w.gossip(4, MemberState::Alive, 60);
        assert_eq!(w.plan(), None, "far behind the leader's log");
        w.matched.insert(4, Some(90));
        assert_eq!(w.plan(), Some(Change::Promote { id: 4 }));
        w.gossip(4, MemberState::Alive, 1);
        assert_eq!(w.plan(), None, "alive for less than the stabilization time");
    }

    #[test]
    fn voters_stop_at_max_voters_and_the_rest_stay_learners() {
        let mut w = World::new(5);
        w.learner(6, Some(100));
        w.gossip(6, MemberState::Alive, 60);
        assert_eq!(w.plan(), None);
        w.voters.remove(&5);
        assert_eq!(w.plan(), Some(Change::Promote { id: 5 }), "lowest learner first");
    }

    #[test]
    fn a_dead_voter_is_removed_after_the_timeout_only() {
        let mut w = World::new(5);
        w.gossip(3, MemberState::Down, 10);
        assert_eq!(w.plan(), None, "down for less than dead_node_timeout");
        w.gossip(3, MemberState::Down, 31);
        assert_eq!(w.plan(), Some(Change::Remove { id: 3, voter: true, why: "down" }));
    }

    #[test]
    fn a_dead_voter_is_not_removed_when_the_rest_would_lack_a_live_majority() {
        // 5 voters, 3 down: the 4 remaining after a removal have only 2 live.
        let mut w = World::new(5);
        for id in [3, 4, 5] {
            w.gossip(id, MemberState::Down, 600);
        }
        assert_eq!(w.plan(), None);
        // 3 voters, one down: {1, 2} remain, both live.
        let mut w = World::new(3);
        w.gossip(3, MemberState::Down, 600);
        assert_eq!(w.plan(), Some(Change::Remove { id: 3, voter: true, why: "down" }));
        // 2 voters, one down: only this node would remain; that is a live majority of one.
        let mut w = World::new(2);
        w.gossip(2, MemberState::Down, 600);
        assert_eq!(w.plan(), Some(Change::Remove { id: 2, voter: true, why: "down" }));
    }

    #[test]
    fn a_member_that_left_is_removed_at_once_and_unknown_members_are_kept() {
        let mut w = World::new(3);
        w.gossip(2, MemberState::Left, 0);
        assert_eq!(w.plan(), Some(Change::Remove { id: 2, voter: true, why: "left" }));
        let mut w = World::new(3);
        w.view.members.remove(&3);
        assert_eq!(w.plan(), None, "gossip never saw node 3 (a static member)");
    }

    #[test]
    fn a_voter_that_restarted_within_the_dead_node_timeout_keeps_its_seat() {
        let mut w = World::new(3);
        let old = w.view.get(3).expect("n3").identity.incarnation;
        // Stopped without leaving: down (not left), for almost the timeout.
        w.gossip(3, MemberState::Down, 29);
        w.view.members.get_mut(&3).expect("n3").identity.incarnation = old;
        assert_eq!(w.plan(), None, "down for less than dead_node_timeout");
        // Back from the same data dir: same id, a new incarnation, alive
        // since now. Later, the old down time is long past; nothing changes.
        w.gossip(3, MemberState::Alive, 0);
        w.view.members.get_mut(&3).expect("n3").identity.incarnation = old + 1;
        assert_eq!(w.plan(), None);
        w.now += Duration::from_secs(120);
        assert_eq!(w.plan(), None, "alive again: its down time does not count");
        assert!(w.voters.contains(&3));
    }

    #[test]
    fn a_member_removed_while_alive_is_added_back_only_after_a_restart() {
        let mut w = World::new(3);
        w.departed.observe(&w.nodes, &w.view);
        // n3 leaves: Raft first (alive in gossip a moment longer).
        w.voters.remove(&3);
        w.nodes.remove(&3);
        w.departed.observe(&w.nodes, &w.view);
        let left = w.view.get(3).expect("n3").identity.incarnation;
        assert!(w.departed.contains(3, left));
        assert_eq!(w.plan(), None, "a leaving member is not added back");
        // It restarts from its data dir: a new incarnation.
        w.view.members.get_mut(&3).expect("n3").identity.incarnation = left + 1;
        assert!(matches!(w.plan(), Some(Change::AddLearner { id: 3, .. })), "{:?}", w.plan());

        // The leader removing itself does not add itself back either.
        let mut w = World::new(3);
        w.voters.remove(&1);
        w.nodes.remove(&1);
        assert_eq!(w.plan(), None);

        // A member removed while down is not remembered.
        let mut w = World::new(3);
        w.departed.observe(&w.nodes, &w.view);
        w.gossip(2, MemberState::Down, 600);
        w.voters.remove(&2);
        w.nodes.remove(&2);
        w.departed.observe(&w.nodes, &w.view);
        w.gossip(2, MemberState::Alive, 0);
        assert!(matches!(w.plan(), Some(Change::AddLearner { id: 2, .. })), "{:?}", w.plan());
    }

    #[test]
    fn departed_identities_are_bounded() {
        let mut d = Departed::default();
        let mut w = World::new(1);
        for id in 2..(DEPARTED_CAPACITY as u64 + 10) {
            w.nodes.insert(id, info(id));
            w.gossip(id, MemberState::Alive, 1);
        }
        d.observe(&w.nodes, &w.view);
        w.nodes.retain(|id, _| *id == 1);
        d.observe(&w.nodes, &w.view);
        assert_eq!(d.gone.len(), DEPARTED_CAPACITY);
        let last = DEPARTED_CAPACITY as u64 + 9;
        assert!(d.contains(last, w.view.get(last).expect("member").identity.incarnation));
    }

    #[test]
    fn a_dead_learner_is_removed_and_the_leader_never_removes_itself() {
        let mut w = World::new(3);
        w.learner(7, Some(100));
        w.gossip(7, MemberState::Down, 600);
        assert_eq!(w.plan(), Some(Change::Remove { id: 7, voter: false, why: "down" }));
        let mut w = World::new(3);
        w.gossip(1, MemberState::Left, 600);
        assert_eq!(w.plan(), None);
    }
}
