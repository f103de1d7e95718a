//! The versioned wire envelope around every foca packet.
//!
//! ```text
//! offset 0  2 bytes  magic  b"FG"
//!        2  1 byte   version (2)
//!        3  8 bytes  cluster tag, u64 little-endian: FNV-1a 64 of the cluster id
//!       11  ...      foca payload (bincode header + updates + broadcasts)
//! ```
//! A packet of another cluster, another version or that is too short or too
//! long is refused here, before foca sees it; the driver counts each reason.

use std::fmt;

/// First bytes of every ferry gossip packet.
pub const MAGIC: [u8; 2] = *b"FG";
/// The only envelope version this build reads and writes.
///
/// - 1: the first.
/// - 2: the identity carries [`crate::NodeMeta`], a self-describing
///   document: facts added to it later need no new version.
pub const VERSION: u8 = 2;
/// Bytes the envelope adds in front of the foca payload.
pub const ENVELOPE_LEN: usize = MAGIC.len() + 1 + 8;

/// The cluster a packet belongs to: a stable hash of the cluster id, the same
/// in every process and on every platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterTag(pub u64);

impl ClusterTag {
    /// FNV-1a 64 of the cluster id's UTF-8 bytes.
    pub fn of(cluster_id: &str) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in cluster_id.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Self(hash)
    }
}

impl fmt::Display for ClusterTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Why a received packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("packet of {len} bytes is shorter than the {ENVELOPE_LEN}-byte envelope")]
    TooShort { len: usize },
    #[error("packet of {len} bytes exceeds max_packet_size {max}")]
    Oversize { len: usize, max: usize },
    #[error("bad magic bytes")]
    BadMagic,
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    #[error("packet of foreign cluster {0}")]
    ForeignCluster(ClusterTag),
}

/// Seals and opens packets for one cluster.
#[derive(Debug, Clone, Copy)]
pub struct Envelope {
    tag: ClusterTag,
    max_packet_size: usize,
}

impl Envelope {
    /// `max_packet_size` bounds the whole datagram, envelope included.
    pub fn new(tag: ClusterTag, max_packet_size: usize) -> Self {
        Self { tag, max_packet_size }
    }

    /// The largest foca payload that fits one datagram.
    pub fn max_payload(&self) -> usize {
        self.max_packet_size.saturating_sub(ENVELOPE_LEN)
    }

    /// Writes the envelope and `payload` into `out` (cleared first).
    pub fn seal(&self, payload: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.reserve(ENVELOPE_LEN + payload.len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.tag.0.to_le_bytes());
        out.extend_from_slice(payload);
    }

    /// Checks the envelope and returns the foca payload inside it.
    pub fn open<'a>(&self, packet: &'a [u8]) -> Result<&'a [u8], EnvelopeError> {
        if packet.len() > self.max_packet_size {
            return Err(EnvelopeError::Oversize { len: packet.len(), max: self.max_packet_size });
        }
        let (head, payload) = packet
            .split_first_chunk::<ENVELOPE_LEN>()
            .ok_or(EnvelopeError::TooShort { len: packet.len() })?;
        let (magic, rest) = head.split_at(MAGIC.len());
        if magic != MAGIC {
            return Err(EnvelopeError::BadMagic);
        }
        let (version, tag) = rest.split_at(1);
        if version[0] != VERSION {
            return Err(EnvelopeError::UnsupportedVersion(version[0]));
        }
        let mut tag_bytes = [0u8; 8];
        tag_bytes.copy_from_slice(tag);
        let tag = ClusterTag(u64::from_le_bytes(tag_bytes));
        if tag != self.tag {
            return Err(EnvelopeError::ForeignCluster(tag));
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(cluster: &str) -> Envelope {
        Envelope::new(ClusterTag::of(cluster), 64)
    }

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        envelope("prod").seal(b"hello", &mut out);
        assert_eq!(out.len(), ENVELOPE_LEN + 5);
        assert_eq!(envelope("prod").open(&out), Ok(&b"hello"[..]));
    }

    #[test]
    fn cluster_tag_is_stable() {
        // Golden values: changing the hash splits every rolling upgrade.
        assert_eq!(ClusterTag::of("").0, 0xcbf2_9ce4_8422_2325);
        assert_eq!(ClusterTag::of("ferry").to_string(), format!("{:016x}", ClusterTag::of("ferry").0));
        assert_eq!(ClusterTag::of("a").0, 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn refusals_name_the_reason() {
        let mut out = Vec::new();
        envelope("prod").seal(b"x", &mut out);
        assert_eq!(envelope("dev").open(&out), Err(EnvelopeError::ForeignCluster(ClusterTag::of("prod"))));
        assert_eq!(envelope("prod").open(&out[..5]), Err(EnvelopeError::TooShort { len: 5 }));
        let mut bad = out.clone();
        bad[2] = 3;
        assert_eq!(envelope("prod").open(&bad), Err(EnvelopeError::UnsupportedVersion(3)));
        bad[0] = b'X';
        assert_eq!(envelope("prod").open(&bad), Err(EnvelopeError::BadMagic));
        assert!(matches!(
            envelope("prod").open(&[0u8; 65]),
            Err(EnvelopeError::Oversize { len: 65, max: 64 })
        ));
    }
}
