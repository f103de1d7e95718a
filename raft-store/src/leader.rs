//! Who leads, as a node can truthfully say it.
//!
//! openraft's `RaftMetrics::current_leader` is the node of the last
//! *committed* vote this node stored. That vote survives a restart and a
//! removal from the membership: a former leader that restarts names itself
//! until a new leader reaches it, and a leader that removed itself and
//! restarted names itself for good (it is a learner no leader talks to).
//! So a node that is not in state `Leader` and names itself knows no leader;
//! every reader of "the leader" goes through [`known_leader`].

use openraft::ServerState;

use crate::types::{NodeId, NodeInfo};

/// openraft's metrics with ferry's types.
pub type RaftMetrics = openraft::RaftMetrics<NodeId, NodeInfo>;

/// The leader this node knows: itself when it is the leader, the node of its
/// committed vote when that is another node, and none otherwise.
pub fn known_leader(m: &RaftMetrics) -> Option<NodeId> {
    leader_of(m.id, m.state, m.current_leader)
}

/// [`known_leader`] from its parts.
pub fn leader_of(me: NodeId, state: ServerState, current_leader: Option<NodeId>) -> Option<NodeId> {
    match state {
        ServerState::Leader => Some(me),
        _ => current_leader.filter(|&l| l != me),
    }
}

/// Whether this node is the leader now.
pub fn is_leader(m: &RaftMetrics) -> bool {
    m.state == ServerState::Leader
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_node_in_state_leader_names_itself() {
        use ServerState::*;
        assert_eq!(leader_of(1, Leader, Some(1)), Some(1));
        assert_eq!(leader_of(1, Follower, Some(2)), Some(2));
        // A restarted former leader, and one that removed itself: their
        // stored vote still names them.
        assert_eq!(leader_of(1, Follower, Some(1)), None);
        assert_eq!(leader_of(1, Learner, Some(1)), None);
        assert_eq!(leader_of(1, Candidate, None), None);
        assert_eq!(leader_of(1, Learner, Some(3)), Some(3));
        assert_eq!(leader_of(1, Shutdown, Some(1)), None);
    }
}
