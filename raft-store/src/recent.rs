//! The bounded memory of recent request ids, each with the digest of its
//! command and its response, used to answer a client's retry with the
//! original result instead of applying the command twice, and to refuse an id
//! reused for another command ([`crate::digest`]).
//!
//! Deterministic by construction: ids are kept in apply order and the oldest
//! is evicted first once [`RECENT_CAPACITY`] is exceeded, so every node (and
//! every snapshot) holds the same set. Each entry has a sequence number (its
//! position in the order of all entries ever inserted), which the state
//! machine uses as its sled key so one apply batch writes only the new
//! entries and deletes only the evicted ones.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::command::Response;

/// How many request ids the state machine remembers.
pub const RECENT_CAPACITY: usize = 10_000;

/// One remembered request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remembered {
    /// The client's request id.
    pub id: u128,
    /// The digest of its command ([`crate::digest::command_digest`]);
    /// `None` for entries written before format version 3, which did not
    /// keep one: such an id answers its original response to any command,
    /// as it always did.
    pub digest: Option<u128>,
    /// What applying it answered.
    pub response: Response,
}

impl Remembered {
    /// An entry of `id`, with `digest`, answered `response`.
    pub fn new(id: u128, digest: Option<u128>, response: Response) -> Self {
        Self { id, digest, response }
    }
}

/// Recent request ids with their digests and responses, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "RecentWire", into = "RecentWire")]
pub struct RecentRequests {
    /// Sequence number of the first (oldest) entry: how many were evicted.
    first_seq: u64,
    entries: VecDeque<Remembered>,
    /// id -> sequence number, for lookups.
    by_id: HashMap<u128, u64>,
}

/// The serialized form: the index is rebuilt on load. Versions 1 and 2
/// wrote `(id, response)` pairs: see [`crate::legacy::RecentPairs`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecentWire {
    first_seq: u64,
    entries: Vec<Remembered>,
}

impl From<RecentWire> for RecentRequests {
    fn from(w: RecentWire) -> Self {
        RecentRequests::from_parts(w.first_seq, w.entries)
    }
}

impl From<RecentRequests> for RecentWire {
    fn from(r: RecentRequests) -> Self {
        RecentWire { first_seq: r.first_seq, entries: r.entries.into() }
    }
}

impl PartialEq for RecentRequests {
    fn eq(&self, other: &Self) -> bool {
        self.first_seq == other.first_seq && self.entries == other.entries
    }
}

impl RecentRequests {
    /// Rebuilds the memory from its entries in order, the first having
    /// sequence number `first_seq`.
    pub fn from_parts(first_seq: u64, entries: impl IntoIterator<Item = Remembered>) -> Self {
        let mut r = RecentRequests { first_seq, ..Default::default() };
        for entry in entries {
            r.push(entry);
        }
        r
    }

    /// What is remembered of `id`, if it still is.
    pub fn get(&self, id: u128) -> Option<&Remembered> {
        let seq = *self.by_id.get(&id)?;
        self.entry(seq)
    }

    /// Remembers `entry`, evicting the oldest entries beyond
    /// [`RECENT_CAPACITY`].
    pub fn insert(&mut self, entry: Remembered) {
        self.push(entry);
        while self.entries.len() > RECENT_CAPACITY {
            self.pop_front();
        }
    }

    fn push(&mut self, entry: Remembered) {
        let seq = self.end_seq();
        self.by_id.insert(entry.id, seq);
        self.entries.push_back(entry);
    }

    fn pop_front(&mut self) {
        if let Some(Remembered { id, .. }) = self.entries.pop_front() {
            // A later entry with the same id (only possible in hand-made
            // input) keeps its own mapping.
            if self.by_id.get(&id) == Some(&self.first_seq) {
                self.by_id.remove(&id);
            }
            self.first_seq = self.first_seq.saturating_add(1);
        }
    }

    /// Number of remembered ids.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sequence number of the oldest entry.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Sequence number the next entry will get.
    pub fn end_seq(&self) -> u64 {
        self.first_seq.saturating_add(self.entries.len() as u64)
    }

    /// The entry with sequence number `seq`, if remembered.
    pub fn entry(&self, seq: u64) -> Option<&Remembered> {
        let pos = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.entries.get(pos)
    }

    /// All entries, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Remembered> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> Remembered {
        Remembered::new(
            u128::from(i) + 1000,
            Some(u128::from(i) << 64),
            Response::Applied { index: i, revision: i },
        )
    }

    #[test]
    fn evicts_oldest_first_and_keeps_the_bound() {
        let mut r = RecentRequests::default();
        for i in 0..(RECENT_CAPACITY as u64 + 5) {
            r.insert(entry(i));
        }
        assert_eq!(r.len(), RECENT_CAPACITY);
        assert_eq!(r.first_seq(), 5);
        assert_eq!(r.get(1000), None);
        assert_eq!(r.get(1004), None);
        assert_eq!(r.get(1005), Some(&entry(5)));
        assert_eq!(r.entry(5), Some(&entry(5)));
        let rebuilt = RecentRequests::from_parts(r.first_seq(), r.iter().cloned());
        assert_eq!(rebuilt, r);
        assert_eq!(rebuilt.get(1005), Some(&entry(5)));
    }
}
