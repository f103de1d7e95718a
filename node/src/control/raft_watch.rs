//! Watches this node's Raft: keeps the `ferry_raft_*` and cluster-transport
//! metrics current, logs each new leader by name, and learns the names of
//! members the Raft membership lists without one.
//!
//! A cluster formed from `initial_members` records only the initializing
//! node's name; the others are learnt from gossip (when on) or asked once
//! over the cluster port (`NodeStatus`), so status and log lines can name
//! every node.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ferry_gossip::GossipHandle;
use ferry_raft_store::{NodeId, is_leader, known_leader};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::replica::Replica;
use crate::cluster::contacts::node_label;
use crate::cluster::message::Message;
use crate::cluster::stats::TransportStats;
use crate::cluster::transport::Transport;
use crate::telemetry::metrics::{Metrics, REFUSED_REASONS};

/// How often the gauges are refreshed besides on every Raft change (the
/// quorum gauge depends on the clock, not only on Raft's metrics).
const TICK: Duration = Duration::from_millis(250);

/// How long a name probe may take, and how often one node is asked again.
const NAME_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const NAME_PROBE_EVERY: Duration = Duration::from_secs(10);

/// What [`run`] watches and updates.
#[derive(Debug)]
pub struct RaftWatch {
    pub replica: Arc<Replica>,
    pub stats: Arc<TransportStats>,
    pub metrics: Metrics,
    pub gossip: Option<GossipHandle>,
    pub transport: Arc<Transport>,
}

/// Runs until `stop`.
pub async fn run(w: RaftWatch, stop: CancellationToken) {
    let m = &w.metrics;
    let mut rx = w.replica.raft().metrics();
    let mut view = w.gossip.as_ref().map(GossipHandle::subscribe);
    let (mut leader, mut logged, mut snapshot) = (None, None, None);
    let mut refused = [0u64; 4];
    for reason in REFUSED_REASONS {
        m.cluster_refused_total.with_label_values(&[reason]);
    }
    let (mut proposals, mut proposed, mut rounds, mut reads, mut late) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut no_quorum = 0u64;
    let mut probed: HashMap<NodeId, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Some(view) = &mut view {
            for member in view.borrow_and_update().members.values() {
                w.replica.contacts().learn_name(member.identity.id, &member.identity.name);
            }
        }
        let r = rx.borrow_and_update().clone();
        let leading = is_leader(&r);
        let membership = r.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        m.raft_term.set(r.current_term as i64);
        m.raft_applied_index.set(r.last_applied.map_or(0, |l| l.index) as i64);
        m.raft_is_leader.set(i64::from(leading));
        m.raft_has_quorum.set(i64::from(leading && w.replica.contacts().quorum(r.id, &voters)));
        let now_leader = known_leader(&r);
        if now_leader.is_some() && now_leader != leader {
            if leader.is_some() {
                m.raft_leader_changes_total.inc();
            }
            leader = now_leader;
        }
        // Logged once heard from: after a restart the stored vote names the
        // old leader, which may be down.
        if let Some(l) = now_leader
            && logged != Some(l)
            && (leading || w.replica.contacts().since_contact(l).is_some())
        {
            logged = Some(l);
            if leading {
                info!(term = r.current_term, "this node is the raft leader");
            } else {
                let name = w.replica.name_of(&r, l).unwrap_or_default();
                info!(leader = %node_label(l, &name), term = r.current_term, "raft leader changed");
            }
        }
        if r.snapshot != snapshot {
            if r.snapshot.is_some() {
                m.raft_snapshots_total.inc();
            }
            snapshot = r.snapshot;
        }
        for (&id, node) in membership.nodes() {
            let due = probed.get(&id).is_none_or(|t| t.elapsed() >= NAME_PROBE_EVERY);
            if id != r.id && due && !node.cluster_addr.is_empty() && w.replica.name_of(&r, id).is_none() {
                probed.insert(id, Instant::now());
                let (replica, transport) = (Arc::clone(&w.replica), Arc::clone(&w.transport));
                tokio::spawn(learn_name(replica, transport, id, node.cluster_addr.clone()));
            }
        }

        let s = w.stats.snapshot();
        m.raft_write_proposals_total.inc_by(s.write_proposals.saturating_sub(proposals));
        m.raft_proposed_writes_total.inc_by(s.proposed_writes.saturating_sub(proposed));
        m.raft_read_rounds_total.inc_by(s.read_rounds.saturating_sub(rounds));
        m.raft_round_reads_total.inc_by(s.round_reads.saturating_sub(reads));
        m.raft_writes_past_deadline_total.inc_by(s.writes_past_deadline.saturating_sub(late));
        m.raft_writes_without_quorum_total.inc_by(s.writes_without_quorum.saturating_sub(no_quorum));
        no_quorum = s.writes_without_quorum;
        (proposals, proposed, rounds, reads, late) =
            (s.write_proposals, s.proposed_writes, s.read_rounds, s.round_reads, s.writes_past_deadline);
        let now = [s.refused_cluster_id, s.refused_version, s.malformed, s.oversized];
        for ((reason, new), old) in REFUSED_REASONS.iter().zip(now).zip(&mut refused) {
            if new > *old {
                m.cluster_refused_total.with_label_values(&[reason]).inc_by(new - *old);
                *old = new;
            }
        }
        let view_changed = async {
            match &mut view {
                Some(v) => v.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let view_gone = tokio::select! {
            r = rx.changed() => if r.is_err() { return } else { false },
            alive = view_changed => !alive,
            _ = tick.tick() => false,
            () = stop.cancelled() => return,
        };
        if view_gone {
            view = None;
        }
    }
}

/// Asks node `id` at `addr` its name (a member of a static cluster).
async fn learn_name(replica: Arc<Replica>, transport: Arc<Transport>, id: NodeId, addr: String) {
    if let Ok(Message::NodeStatusResult(s)) =
        transport.call_timeout(&addr, &Message::NodeStatus, NAME_PROBE_TIMEOUT).await
        && s.node_id == id
    {
        replica.contacts().learn_name(id, &s.name);
    }
}
