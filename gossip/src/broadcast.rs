//! Custom broadcasts riding on foca's messages: leave notices and
//! per-origin payloads.
//!
//! foca cannot tell a graceful leave from a crash (both end as `Down`), so a
//! leaving node first broadcasts `Leaving` and receivers report `Left`. A
//! payload broadcast is "the origin's latest value": a newer one from the same
//! origin replaces an older one still being disseminated (`Invalidates`).
//! The handler lives inside `Foca`, so it hands what it learns to the driver
//! through a bounded queue; a full queue drops and counts.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::codec::{self, CodecError};
use crate::identity::NodeIdentity;
use crate::stats::GossipStats;

/// One custom broadcast item on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Item {
    /// Node `node` in incarnation `incarnation` is leaving on purpose.
    Leaving { node: u64, incarnation: u64 },
    /// The latest payload of `origin`, ordered by `(incarnation, seq)`.
    Payload { origin: u64, incarnation: u64, seq: u64, data: Vec<u8> },
}

impl Item {
    fn key(&self) -> Key {
        match *self {
            Item::Leaving { node, incarnation } => {
                Key { origin: node, kind: Kind::Leaving, version: (incarnation, 0) }
            }
            Item::Payload { origin, incarnation, seq, .. } => {
                Key { origin, kind: Kind::Payload, version: (incarnation, seq) }
            }
        }
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Leaving,
    Payload,
}

/// Identifies a broadcast for dissemination: newer versions of the same
/// origin and kind replace older ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    origin: u64,
    kind: Kind,
    version: (u64, u64),
}

impl foca::Invalidates for Key {
    fn invalidates(&self, other: &Self) -> bool {
        self.origin == other.origin && self.kind == other.kind && self.version >= other.version
    }
}

/// A payload broadcast received from another member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Node id of the member that broadcast it.
    pub origin: u64,
    pub data: Bytes,
}

/// What the handler passes to the driver.
#[derive(Debug)]
pub(crate) enum Delivery {
    Leaving { node: u64, incarnation: u64 },
    Payload(Received),
}

/// Errors of a broadcast item.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    #[error("broadcast item: {0}")]
    Codec(#[from] CodecError),
    #[error("broadcast item has {0} trailing bytes")]
    Trailing(usize),
}

/// foca's `BroadcastHandler` for ferry.
#[derive(Debug)]
pub struct Handler {
    latest: HashMap<(u64, Kind), (u64, u64)>,
    tx: mpsc::Sender<Delivery>,
    stats: Arc<GossipStats>,
}

impl Handler {
    pub(crate) fn new(tx: mpsc::Sender<Delivery>, stats: Arc<GossipStats>) -> Self {
        Self { latest: HashMap::new(), tx, stats }
    }

    fn deliver(&self, delivery: Delivery) {
        if self.tx.try_send(delivery).is_err() {
            GossipStats::bump(&self.stats.dropped_events);
        }
    }
}

impl foca::BroadcastHandler<NodeIdentity> for Handler {
    type Key = Key;
    type Error = BroadcastError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&NodeIdentity>,
    ) -> Result<Option<Key>, BroadcastError> {
        let (item, used) = codec::decode::<Item>(data)?;
        if used != data.len() {
            return Err(BroadcastError::Trailing(data.len() - used));
        }
        let key = item.key();
        if let Some(seen) = self.latest.get(&(key.origin, key.kind))
            && *seen >= key.version
        {
            return Ok(None);
        }
        self.latest.insert((key.origin, key.kind), key.version);
        // Our own items (sender None) are disseminated, not delivered to us.
        if sender.is_some() {
            match item {
                Item::Leaving { node, incarnation } => self.deliver(Delivery::Leaving { node, incarnation }),
                Item::Payload { origin, data, .. } => {
                    self.deliver(Delivery::Payload(Received { origin, data: Bytes::from(data) }));
                }
            }
        }
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use foca::{BroadcastHandler, Invalidates};

    use super::*;

    fn sender() -> NodeIdentity {
        let a = SocketAddr::from(([127, 0, 0, 1], 1));
        NodeIdentity::new(1, "a", a, a, a)
    }

    #[test]
    fn newer_payload_is_kept_and_stale_one_dropped() -> anyhow::Result<()> {
        let (tx, mut rx) = mpsc::channel(8);
        let mut handler = Handler::new(tx, Arc::default());
        let item = |seq| Item::Payload { origin: 9, incarnation: 1, seq, data: vec![seq as u8] }.encode();
        let from = Some(&sender());
        let k2 = handler.receive_item(&item(2)?, from)?.ok_or_else(|| anyhow::anyhow!("new"))?;
        assert_eq!(handler.receive_item(&item(1)?, from)?, None);
        assert_eq!(handler.receive_item(&item(2)?, from)?, None);
        let k3 = handler.receive_item(&item(3)?, from)?.ok_or_else(|| anyhow::anyhow!("newer"))?;
        assert!(k3.invalidates(&k2) && !k2.invalidates(&k3));
        assert!(matches!(rx.try_recv(), Ok(Delivery::Payload(Received { origin: 9, .. }))));
        assert!(matches!(rx.try_recv(), Ok(Delivery::Payload(_))));
        assert!(rx.try_recv().is_err());
        Ok(())
    }

    #[test]
    fn garbage_is_an_error() {
        let (tx, _rx) = mpsc::channel(1);
        let mut handler = Handler::new(tx, Arc::default());
        assert!(handler.receive_item(&[0xFF; 7], None).is_err());
        let mut ok = Item::Leaving { node: 1, incarnation: 1 }.encode().unwrap_or_default();
        ok.push(0);
        assert!(matches!(handler.receive_item(&ok, None), Err(BroadcastError::Trailing(1))));
    }
}
