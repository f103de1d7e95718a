//! `NodeIdentity`: who a gossip member is, as foca sees it.
//!
//! foca keys members by [`foca::Identity::addr`] (the gossip address) and keeps one
//! identity per address; the `incarnation` decides which of two identities at
//! the same address is current. A node starts with a fresh incarnation (the
//! wall clock in ms) so a restart always wins over the identity it had before,
//! and [`foca::Identity::renew`] bumps it when the cluster declares the node down,
//! which makes foca rejoin on its own.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A gossip member: node id, the three addresses peers need, the
/// incarnation and what the node speaks. Sent in every foca header and
/// membership update, so it is kept small (about 40 bytes with bincode's
/// varints plus the name, and the metadata's short JSON document).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// The node id (random u64 persisted in the data dir); 0 only for seeds.
    pub id: u64,
    /// UDP gossip address, and foca's member key.
    pub gossip_addr: SocketAddr,
    /// TCP cluster port: Raft RPCs, forwarded writes, peer hops.
    pub cluster_addr: SocketAddr,
    /// HTTP admin API.
    pub admin_addr: SocketAddr,
    /// Human-readable node name, unique in the cluster.
    pub name: String,
    /// Grows with every restart and every automatic rejoin.
    pub incarnation: u64,
    /// What the node speaks (its version and cluster protocol). New facts
    /// about a node go here, never into the positional fields above.
    pub meta: NodeMeta,
}

/// What a node speaks, as it advertises it in gossip. Self-describing
/// ([`ferry_client::selfdesc`]) and, unlike the types of the Raft log,
/// lenient: a field this build does not know is ignored, since gossip must
/// keep working across every version in the window, and nothing here
/// changes what a node applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct NodeMeta {
    /// The node's version (release and commit), empty when not advertised.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// The node's cluster protocol; 0 when not advertised (a seed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub protocol: u16,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

ferry_client::self_describing!(NodeMeta);

impl NodeIdentity {
    /// An identity with a fresh incarnation: the current unix time in ms, so
    /// a restarted node wins over the identity it had before the restart.
    pub fn new(
        id: u64,
        name: impl Into<String>,
        gossip_addr: SocketAddr,
        cluster_addr: SocketAddr,
        admin_addr: SocketAddr,
    ) -> Self {
        Self {
            id,
            gossip_addr,
            cluster_addr,
            admin_addr,
            name: name.into(),
            incarnation: unix_ms(),
            meta: NodeMeta::default(),
        }
    }

    /// The identity advertising `meta`.
    pub fn with_meta(mut self, meta: NodeMeta) -> Self {
        self.meta = meta;
        self
    }

    /// A placeholder for a seed whose id is not known yet: foca accepts an
    /// announce addressed to any identity that has its gossip address.
    pub fn seed(gossip_addr: SocketAddr) -> Self {
        let unspecified = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        Self {
            id: 0,
            gossip_addr,
            cluster_addr: unspecified,
            admin_addr: unspecified,
            name: String::new(),
            incarnation: 0,
            meta: NodeMeta::default(),
        }
    }
}

impl foca::Identity for NodeIdentity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self { incarnation: self.incarnation.wrapping_add(1).max(unix_ms()), ..self.clone() })
    }

    fn addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // Higher incarnation is newer; the id only breaks ties between two
        // nodes misconfigured onto one address, so every member picks alike.
        (self.incarnation, self.id) > (adversary.incarnation, adversary.id)
    }
}

/// Milliseconds since the unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use foca::Identity;

    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn renew_wins_the_address_conflict() {
        let old = NodeIdentity::new(7, "a", addr(1), addr(2), addr(3));
        let new = old.renew().expect("renewable");
        assert!(new.incarnation > old.incarnation);
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
        assert_eq!(new.addr(), old.addr());
    }

    /// The metadata is a JSON document inside the positional identity: a
    /// field from a newer build is ignored, and one this build adds later
    /// reads from older bytes with its default.
    #[test]
    fn metadata_is_additive_both_ways() {
        #[derive(serde::Serialize)]
        struct Newer<'a> {
            version: &'a str,
            protocol: u16,
            features: &'a [&'a str],
        }
        let config = bincode::config::standard();
        let meta = NodeMeta { version: "0.1.0+abc".into(), protocol: 3 };
        let id = NodeIdentity::new(7, "a", addr(1), addr(2), addr(3)).with_meta(meta.clone());
        let bytes = bincode::serde::encode_to_vec(&id, config).expect("encode");
        let (back, _): (NodeIdentity, usize) =
            bincode::serde::decode_from_slice(&bytes, config).expect("decode");
        assert_eq!(back, id);

        let newer =
            serde_json::to_vec(&Newer { version: "0.2.0", protocol: 4, features: &["x"] }).expect("json");
        let bytes = bincode::serde::encode_to_vec(serde_bytes_of(&newer), config).expect("encode");
        let (read, _): (NodeMeta, usize) = bincode::serde::decode_from_slice(&bytes, config).expect("decode");
        assert_eq!(read, NodeMeta { version: "0.2.0".into(), protocol: 4 });

        let older = bincode::serde::encode_to_vec(serde_bytes_of(b"{}"), config).expect("encode");
        let (read, _): (NodeMeta, usize) = bincode::serde::decode_from_slice(&older, config).expect("decode");
        assert_eq!(read, NodeMeta::default());
    }

    /// Bytes that serialize as serde bytes (bincode: a length and the bytes).
    fn serde_bytes_of(b: &[u8]) -> impl serde::Serialize + '_ {
        struct B<'a>(&'a [u8]);
        impl serde::Serialize for B<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        B(b)
    }

    #[test]
    fn seed_shares_only_the_address() {
        let seed = NodeIdentity::seed(addr(9));
        assert_eq!(seed.addr(), addr(9));
        assert_eq!(seed.id, 0);
    }
}
