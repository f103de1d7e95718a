//! The peer directory: who this node is and what it knows of every other
//! node, as the routing table needs it to place backends pinned to a node
//! (`BackendSpec::node`).
//!
//! The control plane builds a new directory when membership changes (the
//! gossip view, later; tests build one by hand) and hands it to the
//! publisher (`Command::SetPeers`), which rebuilds the table. A directory is
//! immutable and shared as `Arc<PeerDirectory>`. [`PeerDirectory::default`]
//! knows neither itself nor any peer: a standalone node, where every pinned
//! backend is unreachable.

use std::collections::HashMap;
use std::net::SocketAddr;

use ferry_client::NodeRef;

/// What membership says of a peer (the gossip `MemberState`, minus the time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// Answering probes: its backends are normal candidates.
    Alive,
    /// Missed probes: its backends are tried after every other candidate.
    Suspect,
    /// Declared dead: its backends are not tried.
    Down,
    /// Left the cluster: its backends are not tried.
    Left,
}

/// One other node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Node id (> 0).
    pub id: u64,
    /// Node name (`[node] name`).
    pub name: String,
    /// Membership state.
    pub state: PeerState,
    /// Its cluster port: where peer hops to its backends go.
    pub cluster_addr: SocketAddr,
}

/// This node's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfNode {
    /// Node id.
    pub id: u64,
    /// Node name.
    pub name: String,
}

/// Who owns a backend pinned to `node`, from this node's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// This node: the backend is local.
    Me,
    /// Another known node.
    Peer(&'a Peer),
    /// No node of that id or name is known.
    Unknown,
}

/// This node and its peers; see the module doc.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerDirectory {
    me: Option<SelfNode>,
    peers: Vec<Peer>,
    by_id: HashMap<u64, usize>,
    by_name: HashMap<String, usize>,
}

impl PeerDirectory {
    /// A directory for node `me` knowing `peers`. An entry with `me`'s id or
    /// name is dropped (this node is never its own peer); of two entries
    /// with the same id or name, the first is kept.
    pub fn new(me: SelfNode, peers: impl IntoIterator<Item = Peer>) -> Self {
        let mut dir = Self { me: Some(me), ..Self::default() };
        for peer in peers {
            let is_me = dir.me.as_ref().is_some_and(|m| m.id == peer.id || m.name == peer.name);
            if is_me || dir.by_id.contains_key(&peer.id) || dir.by_name.contains_key(&peer.name) {
                continue;
            }
            dir.by_id.insert(peer.id, dir.peers.len());
            dir.by_name.insert(peer.name.clone(), dir.peers.len());
            dir.peers.push(peer);
        }
        dir
    }

    /// A directory for node `me` alone.
    pub fn alone(me: SelfNode) -> Self {
        Self::new(me, [])
    }

    /// This node, unless standalone.
    pub fn me(&self) -> Option<&SelfNode> {
        self.me.as_ref()
    }

    /// Every peer, in the order given.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// The peer with id `id`.
    pub fn by_id(&self, id: u64) -> Option<&Peer> {
        self.by_id.get(&id).map(|&i| &self.peers[i])
    }

    /// The peer named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Peer> {
        self.by_name.get(name).map(|&i| &self.peers[i])
    }

    /// Who owns a backend whose `node` is `node` (as validated: a node id of
    /// digits only, or a name). An invalid value is owned by nobody.
    pub fn owner(&self, node: &str) -> Owner<'_> {
        let found = match NodeRef::parse(node) {
            Some(NodeRef::Id(id)) if self.me.as_ref().is_some_and(|m| m.id == id) => return Owner::Me,
            Some(NodeRef::Name(n)) if self.me.as_ref().is_some_and(|m| m.name == n) => return Owner::Me,
            Some(NodeRef::Id(id)) => self.by_id(id),
            Some(NodeRef::Name(n)) => self.by_name(n),
            None => None,
        };
        found.map_or(Owner::Unknown, Owner::Peer)
    }

    /// True when a backend pinned to `node` (or not pinned) is served by
    /// this node itself.
    pub fn is_local(&self, node: Option<&str>) -> bool {
        node.is_none_or(|n| self.owner(n) == Owner::Me)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64, name: &str, state: PeerState) -> Peer {
        Peer { id, name: name.into(), state, cluster_addr: SocketAddr::from(([127, 0, 0, id as u8], 7947)) }
    }

    #[test]
    fn lookup_by_id_or_name() {
        let me = SelfNode { id: 1, name: "n1".into() };
        let dir = PeerDirectory::new(
            me,
            [
                peer(2, "n2", PeerState::Alive),
                peer(3, "n3", PeerState::Down),
                peer(1, "other", PeerState::Alive),
                peer(4, "n2", PeerState::Alive),
            ],
        );
        assert_eq!(dir.peers().len(), 2, "self and a duplicate name are dropped");
        assert_eq!(dir.owner("n1"), Owner::Me);
        assert_eq!(dir.owner("1"), Owner::Me);
        assert_eq!(dir.owner("2"), Owner::Peer(&peer(2, "n2", PeerState::Alive)));
        assert_eq!(dir.owner("n3").clone(), Owner::Peer(&peer(3, "n3", PeerState::Down)));
        assert_eq!(dir.owner("4"), Owner::Unknown);
        assert_eq!(dir.owner("0"), Owner::Unknown);
        assert_eq!(dir.by_name("n2").map(|p| p.id), Some(2));
        assert!(dir.is_local(None) && dir.is_local(Some("n1")) && !dir.is_local(Some("n2")));
    }

    #[test]
    fn standalone_owns_nothing_pinned() {
        let dir = PeerDirectory::default();
        assert!(dir.me().is_none());
        assert_eq!(dir.owner("n1"), Owner::Unknown);
        assert!(dir.is_local(None));
        assert!(!dir.is_local(Some("1")));
    }
}
