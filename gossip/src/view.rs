//! `MemberView`: the published snapshot of who is alive, suspect, down or
//! left, and the `MemberEvent`s between snapshots; `ViewTracker` derives both
//! from foca's membership table.
//!
//! foca reports `MemberUp`/`MemberDown` but no suspicion, and cannot tell a
//! leave from a crash. So after every foca call the tracker reads the whole
//! table (`Foca::iter_membership_state`, which has `Suspect`) and diffs it
//! against the last view; `Left` comes from the leave notices of
//! `broadcast.rs`. The view is keyed by node id: a node that restarts
//! at another gossip address is one member whose identity was renamed.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Instant;

use serde::Serialize;

use crate::identity::{NodeIdentity, unix_ms};

/// A member's liveness as seen by this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Alive,
    /// Missed a probe; still treated as alive by SWIM until it refutes the
    /// suspicion or is declared down.
    Suspect,
    /// Declared down by the cluster (crashed or unreachable).
    Down,
    /// Left on purpose (graceful leave).
    Left,
}

impl MemberState {
    /// All states, for exporting `ferry_gossip_members{state}`.
    pub const ALL: [MemberState; 4] = [Self::Alive, Self::Suspect, Self::Down, Self::Left];

    /// The metric label / JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Down => "down",
            Self::Left => "left",
        }
    }

    /// Alive or suspect: may still be talked to.
    pub fn is_up(self) -> bool {
        matches!(self, Self::Alive | Self::Suspect)
    }
}

/// One member in a [`MemberView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub identity: NodeIdentity,
    pub state: MemberState,
    /// When this node saw the member enter `state`.
    pub since: Instant,
    /// The same moment as unix milliseconds, for the admin API.
    pub since_unix_ms: u64,
}

/// Member counts by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub alive: usize,
    pub suspect: usize,
    pub down: usize,
    pub left: usize,
}

impl StateCounts {
    pub fn get(&self, state: MemberState) -> usize {
        match state {
            MemberState::Alive => self.alive,
            MemberState::Suspect => self.suspect,
            MemberState::Down => self.down,
            MemberState::Left => self.left,
        }
    }
}

/// An immutable snapshot of the membership, this node included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// This node's id.
    pub local_id: u64,
    /// Grows by one with every published change.
    pub version: u64,
    /// Members by node id.
    pub members: BTreeMap<u64, MemberStatus>,
}

impl MemberView {
    pub fn get(&self, id: u64) -> Option<&MemberStatus> {
        self.members.get(&id)
    }

    /// This node's own entry.
    pub fn local(&self) -> Option<&MemberStatus> {
        self.members.get(&self.local_id)
    }

    pub fn state_of(&self, id: u64) -> Option<MemberState> {
        self.get(id).map(|m| m.state)
    }

    /// Members that are alive or suspect, this node included.
    pub fn up(&self) -> impl Iterator<Item = &MemberStatus> {
        self.members.values().filter(|m| m.state.is_up())
    }

    pub fn counts(&self) -> StateCounts {
        let mut c = StateCounts::default();
        for m in self.members.values() {
            match m.state {
                MemberState::Alive => c.alive += 1,
                MemberState::Suspect => c.suspect += 1,
                MemberState::Down => c.down += 1,
                MemberState::Left => c.left += 1,
            }
        }
        c
    }
}

/// A change between two views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEvent {
    /// The member is alive: new, back from down, or cleared of suspicion.
    Up(NodeIdentity),
    Suspect(NodeIdentity),
    Down(NodeIdentity),
    Left(NodeIdentity),
    /// Same node id, new identity (a restart or an automatic rejoin).
    Renamed {
        old: NodeIdentity,
        new: NodeIdentity,
    },
}

/// How many leave notices are remembered; older ones fall out first.
const LEFT_CAPACITY: usize = 4096;

/// Turns foca's table into views and events.
#[derive(Debug)]
pub(crate) struct ViewTracker {
    view: MemberView,
    left: HashSet<(u64, u64)>,
    left_order: VecDeque<(u64, u64)>,
}

impl ViewTracker {
    pub(crate) fn new(local: &NodeIdentity, now: Instant) -> Self {
        let status = MemberStatus {
            identity: local.clone(),
            state: MemberState::Alive,
            since: now,
            since_unix_ms: unix_ms(),
        };
        let view =
            MemberView { local_id: local.id, version: 0, members: BTreeMap::from([(local.id, status)]) };
        Self { view, left: HashSet::new(), left_order: VecDeque::new() }
    }

    pub(crate) fn view(&self) -> &MemberView {
        &self.view
    }

    /// Records a leave notice for `node` in `incarnation`.
    pub(crate) fn mark_left(&mut self, node: u64, incarnation: u64) {
        if self.left.insert((node, incarnation)) {
            self.left_order.push_back((node, incarnation));
            if self.left_order.len() > LEFT_CAPACITY
                && let Some(old) = self.left_order.pop_front()
            {
                self.left.remove(&old);
            }
        }
    }

    fn state_of(&self, id: &NodeIdentity, state: foca::State) -> MemberState {
        match state {
            foca::State::Alive => MemberState::Alive,
            foca::State::Suspect => MemberState::Suspect,
            foca::State::Down if self.left.contains(&(id.id, id.incarnation)) => MemberState::Left,
            foca::State::Down => MemberState::Down,
        }
    }

    /// Diffs foca's table (plus this node, `local`) against the current view.
    /// Returns the events, or nothing when the view did not change.
    pub(crate) fn refresh<'a>(
        &mut self,
        local: &'a NodeIdentity,
        local_left: bool,
        table: impl Iterator<Item = (&'a NodeIdentity, foca::State)>,
        now: Instant,
    ) -> Option<Vec<MemberEvent>> {
        let local_state = if local_left { MemberState::Left } else { MemberState::Alive };
        let mut next: BTreeMap<u64, (&NodeIdentity, MemberState)> = BTreeMap::new();
        next.insert(local.id, (local, local_state));
        for (id, state) in table {
            if id.id == local.id {
                continue; // an old identity of ours; we know better
            }
            let state = self.state_of(id, state);
            let entry = next.entry(id.id).or_insert((id, state));
            if beats((id, state), *entry) {
                *entry = (id, state);
            }
        }

        let unchanged = next.len() == self.view.members.len()
            && next.iter().all(|(k, (id, state))| {
                self.view.members.get(k).is_some_and(|m| m.state == *state && &m.identity == *id)
            });
        if unchanged {
            return None;
        }

        let wall = unix_ms();
        let mut events = Vec::new();
        let mut members = BTreeMap::new();
        for (k, (id, state)) in next {
            let prev = self.view.members.get(&k);
            if let Some(p) = prev
                && &p.identity != id
            {
                events.push(MemberEvent::Renamed { old: p.identity.clone(), new: id.clone() });
            }
            let prev_state = prev.map(|p| p.state);
            transition_events(prev_state, state, id, &mut events);
            let (since, since_unix_ms) = match prev {
                Some(p) if p.state == state => (p.since, p.since_unix_ms),
                _ => (now, wall),
            };
            members.insert(k, MemberStatus { identity: id.clone(), state, since, since_unix_ms });
        }
        self.view = MemberView { local_id: local.id, version: self.view.version + 1, members };
        Some(events)
    }
}

/// Of two identities with one node id, the newer incarnation wins, then the
/// livelier state.
fn beats(a: (&NodeIdentity, MemberState), b: (&NodeIdentity, MemberState)) -> bool {
    let rank = |s: MemberState| match s {
        MemberState::Alive => 3,
        MemberState::Suspect => 2,
        MemberState::Left => 1,
        MemberState::Down => 0,
    };
    (a.0.incarnation, rank(a.1)) > (b.0.incarnation, rank(b.1))
}

fn transition_events(
    prev: Option<MemberState>,
    next: MemberState,
    id: &NodeIdentity,
    out: &mut Vec<MemberEvent>,
) {
    use MemberState::*;
    let was_up = prev.is_some_and(MemberState::is_up);
    match next {
        Alive if prev != Some(Alive) => out.push(MemberEvent::Up(id.clone())),
        Suspect if prev != Some(Suspect) => {
            if !was_up {
                out.push(MemberEvent::Up(id.clone()));
            }
            out.push(MemberEvent::Suspect(id.clone()));
        }
        // A member first heard of as already gone is recorded, not announced.
        Down if prev.is_some() && prev != Some(Down) => out.push(MemberEvent::Down(id.clone())),
        Left if prev.is_some() && prev != Some(Left) => out.push(MemberEvent::Left(id.clone())),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use foca::State;

    use super::*;

    fn node(id: u64, port: u16, incarnation: u64) -> NodeIdentity {
        let a = SocketAddr::from(([127, 0, 0, 1], port));
        NodeIdentity {
            id,
            gossip_addr: a,
            cluster_addr: a,
            admin_addr: a,
            name: format!("n{id}"),
            incarnation,
            meta: Default::default(),
        }
    }

    fn refresh(
        t: &mut ViewTracker,
        local: &NodeIdentity,
        table: &[(NodeIdentity, State)],
    ) -> Option<Vec<MemberEvent>> {
        t.refresh(local, false, table.iter().map(|(i, s)| (i, *s)), Instant::now())
    }

    #[test]
    fn suspect_down_and_back_produce_events_in_order() {
        let me = node(1, 1, 1);
        let b = node(2, 2, 1);
        let mut t = ViewTracker::new(&me, Instant::now());
        assert_eq!(
            refresh(&mut t, &me, &[(b.clone(), State::Alive)]),
            Some(vec![MemberEvent::Up(b.clone())])
        );
        assert_eq!(refresh(&mut t, &me, &[(b.clone(), State::Alive)]), None, "no change, no new view");
        assert_eq!(
            refresh(&mut t, &me, &[(b.clone(), State::Suspect)]),
            Some(vec![MemberEvent::Suspect(b.clone())])
        );
        assert_eq!(t.view().state_of(2), Some(MemberState::Suspect));
        assert_eq!(
            refresh(&mut t, &me, &[(b.clone(), State::Down)]),
            Some(vec![MemberEvent::Down(b.clone())])
        );
        let b2 = node(2, 3, 2);
        assert_eq!(
            refresh(&mut t, &me, &[(b.clone(), State::Down), (b2.clone(), State::Alive)]),
            Some(vec![MemberEvent::Renamed { old: b, new: b2.clone() }, MemberEvent::Up(b2)])
        );
        assert_eq!(t.view().counts(), StateCounts { alive: 2, ..StateCounts::default() });
        assert_eq!(t.view().version, 4);
    }

    #[test]
    fn leave_notice_turns_down_into_left() {
        let me = node(1, 1, 1);
        let b = node(2, 2, 7);
        let mut t = ViewTracker::new(&me, Instant::now());
        refresh(&mut t, &me, &[(b.clone(), State::Alive)]);
        t.mark_left(2, 7);
        assert_eq!(refresh(&mut t, &me, &[(b.clone(), State::Down)]), Some(vec![MemberEvent::Left(b)]));
        assert_eq!(t.view().state_of(2), Some(MemberState::Left));
    }

    #[test]
    fn leave_notice_for_an_older_incarnation_is_a_crash() {
        let me = node(1, 1, 1);
        let b = node(2, 2, 8);
        let mut t = ViewTracker::new(&me, Instant::now());
        refresh(&mut t, &me, &[(b.clone(), State::Alive)]);
        t.mark_left(2, 7);
        assert_eq!(refresh(&mut t, &me, &[(b.clone(), State::Down)]), Some(vec![MemberEvent::Down(b)]));
    }

    #[test]
    fn since_is_kept_while_the_state_holds() {
        let me = node(1, 1, 1);
        let b = node(2, 2, 1);
        let c = node(3, 3, 1);
        let mut t = ViewTracker::new(&me, Instant::now());
        refresh(&mut t, &me, &[(b.clone(), State::Alive)]);
        let since = t.view().get(2).map(|m| m.since);
        refresh(&mut t, &me, &[(b, State::Alive), (c, State::Alive)]);
        assert_eq!(t.view().get(2).map(|m| m.since), since);
    }
}
