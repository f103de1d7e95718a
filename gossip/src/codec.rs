//! `BincodeCodec`: foca's `Codec` for [`NodeIdentity`] headers and members,
//! bincode 2 over serde with the standard config (varint, little-endian).
//!
//! Decoding never panics and never allocates more than [`DECODE_LIMIT`] bytes
//! whatever a length prefix claims; encoding checks the room left in foca's
//! buffer before writing (`BufMut::put_slice` panics on overflow), so a full
//! buffer is an error foca handles by sending fewer updates.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use bytes::{Buf, BufMut};
use foca::{Header, Member};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::identity::NodeIdentity;

/// Upper bound on what one decoded item may allocate; above any packet size.
pub const DECODE_LIMIT: usize = 64 * 1024;

type WireConfig = Configuration<LittleEndian, Varint, Limit<DECODE_LIMIT>>;

fn wire_config() -> WireConfig {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Why an item could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("item of {needed} bytes does not fit the {remaining} left in the packet")]
    NoRoom { needed: usize, remaining: usize },
}

/// Encodes any serde value with the wire config.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, wire_config())?)
}

/// Decodes one serde value from the start of `bytes`; returns it and the
/// number of bytes it used.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    Ok(bincode::serde::decode_from_slice(bytes, wire_config())?)
}

fn put<T: Serialize>(value: &T, mut buf: impl BufMut) -> Result<(), CodecError> {
    let bytes = encode(value)?;
    // Nothing is written unless it all fits: foca requires a clean buffer
    // after a failed `encode_member`.
    if buf.remaining_mut() < bytes.len() {
        return Err(CodecError::NoRoom { needed: bytes.len(), remaining: buf.remaining_mut() });
    }
    buf.put_slice(&bytes);
    Ok(())
}

fn take<T: DeserializeOwned>(mut buf: impl Buf) -> Result<T, CodecError> {
    // foca hands us contiguous data, so the first chunk is the whole rest.
    let (value, used) = decode(buf.chunk())?;
    buf.advance(used);
    Ok(value)
}

/// The codec every ferry node uses; stateless.
#[derive(Debug, Clone, Copy, Default)]
pub struct BincodeCodec;

impl foca::Codec<NodeIdentity> for BincodeCodec {
    type Error = CodecError;

    fn encode_header(&mut self, header: &Header<NodeIdentity>, buf: impl BufMut) -> Result<(), CodecError> {
        put(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<NodeIdentity>, CodecError> {
        take(buf)
    }

    fn encode_member(&mut self, member: &Member<NodeIdentity>, buf: impl BufMut) -> Result<(), CodecError> {
        put(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<NodeIdentity>, CodecError> {
        take(buf)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use foca::{Codec, Message, State};

    use super::*;

    fn identity(id: u64) -> NodeIdentity {
        let a = SocketAddr::from(([127, 0, 0, 1], 7946));
        NodeIdentity::new(id, format!("node-{id}"), a, a, a)
    }

    #[test]
    fn header_and_member_round_trip() -> Result<(), CodecError> {
        let header =
            Header { src: identity(1), src_incarnation: 3, dst: identity(2), message: Message::Ping(9) };
        let member = Member::new(identity(3), 4, State::Suspect);
        let mut buf = Vec::new();
        BincodeCodec.encode_header(&header, &mut buf)?;
        BincodeCodec.encode_member(&member, &mut buf)?;
        let mut rest = &buf[..];
        assert_eq!(BincodeCodec.decode_header(&mut rest)?, header);
        assert_eq!(BincodeCodec.decode_member(&mut rest)?, member);
        assert!(rest.is_empty());
        Ok(())
    }

    #[test]
    fn full_buffer_is_an_error_and_stays_clean() {
        let member = Member::alive(identity(1));
        let mut storage = Vec::new();
        let mut limited = (&mut storage).limit(10);
        let err = BincodeCodec.encode_member(&member, &mut limited);
        assert!(matches!(err, Err(CodecError::NoRoom { .. })), "{err:?}");
        assert!(storage.is_empty());
    }

    #[test]
    fn huge_length_prefix_is_refused_without_allocating() {
        // A name claiming u64::MAX bytes (varint 0xFF + 8 bytes).
        let mut bytes = vec![1u8];
        bytes.push(0xFF);
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut rest = &bytes[..];
        assert!(BincodeCodec.decode_member(&mut rest).is_err());
    }
}

/// Golden bytes of envelope version 2: a sealed `Announce` from node 1 to a
/// seed. A change that breaks this test breaks mixed-version clusters; a
/// fact added to the identity goes into its metadata document, which keeps
/// these bytes for a node that does not set it.
#[cfg(test)]
mod fixture {
    use std::net::SocketAddr;

    use foca::{Codec, Header, Message};

    use super::*;
    use crate::envelope::{ClusterTag, Envelope, EnvelopeError};
    use crate::identity::NodeMeta;

    /// Version 1 (before the identity's metadata): refused as a version.
    const V1_ANNOUNCE: &str = "4647015bf7dcf4df24328901000a000001fb0a1f000a000001fb0b1f000a000001fb0c1f026e31fd0068e5cf8b0100000000000a000001fbf222000000000000000000000000000006";
    const V2_ANNOUNCE: &str = "4647025bf7dcf4df24328901000a000001fb0a1f000a000001fb0b1f000a000001fb0c1f026e31fd0068e5cf8b0100002d7b2276657273696f6e223a22302e312e302b303132333435363738396162222c2270726f746f636f6c223a337d0000000a000001fbf2220000000000000000000000000000027b7d06";

    fn header() -> Header<NodeIdentity> {
        let a = |port| SocketAddr::from(([10, 0, 0, 1], port));
        let src = NodeIdentity {
            id: 1,
            gossip_addr: a(7946),
            cluster_addr: a(7947),
            admin_addr: a(7948),
            name: "n1".into(),
            incarnation: 1_700_000_000_000,
            meta: NodeMeta { version: "0.1.0+0123456789ab".into(), protocol: 3 },
        };
        Header { src, src_incarnation: 0, dst: NodeIdentity::seed(a(8946)), message: Message::Announce }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).filter_map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
    }

    #[test]
    fn v2_announce_decodes_from_golden_bytes() -> anyhow::Result<()> {
        let envelope = Envelope::new(ClusterTag::of("ferry"), 1400);
        let old = unhex(V2_ANNOUNCE);
        let mut rest = envelope.open(&old)?;
        assert_eq!(BincodeCodec.decode_header(&mut rest)?, header());
        assert!(rest.is_empty());
        Ok(())
    }

    #[test]
    fn v2_announce_encodes_to_golden_bytes() -> anyhow::Result<()> {
        let envelope = Envelope::new(ClusterTag::of("ferry"), 1400);
        let mut payload = Vec::new();
        BincodeCodec.encode_header(&header(), &mut payload)?;
        let mut sealed = Vec::new();
        envelope.seal(&payload, &mut sealed);
        assert_eq!(hex(&sealed), V2_ANNOUNCE);
        Ok(())
    }

    #[test]
    fn v1_is_refused_as_a_version() {
        let envelope = Envelope::new(ClusterTag::of("ferry"), 1400);
        assert_eq!(envelope.open(&unhex(V1_ANNOUNCE)).err(), Some(EnvelopeError::UnsupportedVersion(1)));
    }
}
