//! The on-disk and snapshot encoding: every persisted value is a 2-byte
//! big-endian format version followed by bincode 2 (serde, `standard()`
//! config) of the value.
//!
//! Decoding never panics: truncated bytes, trailing bytes, and a version this
//! build does not know are all [`CodecError`]s, which the stores turn into
//! openraft `StorageError`s. The fixture tests in `tests/fixture.rs` fail
//! loudly if the bytes of an old version stop decoding.
//!
//! Since version 4, ferry's own types in a value (a request and its command,
//! a response, the cluster state, a node's info) are self-describing
//! ([`ferry_client::selfdesc`]): a field added to them with a default needs
//! no new version. bincode frames them and encodes openraft's own types
//! (log ids, votes, memberships), which change only with openraft's wire
//! format. A new version is needed only for a change that cannot be made
//! additively (see `docs/architecture.md`, "Formats across versions").
//!
//! # Versions
//! - 1: the first format.
//! - 2: a route's backends carry `node` (`Option<String>`, after `weight`).
//!   bincode is positional, so version-1 bytes of every type that contains a
//!   route are read through the version-1 types of [`crate::legacy`].
//! - 3: each remembered request id keeps the digest of its command
//!   ([`crate::recent::Remembered`]: id, `Option<u128>` digest, response;
//!   was an `(id, response)` pair), so an id reused for another request is
//!   refused. Version-1 and -2 bytes of the types that hold the memory (the
//!   cluster state, a snapshot) are read through [`crate::legacy`], their
//!   entries without a digest. Log entries, stored routes and the rest are
//!   the same as in version 2. A new `StateError` variant
//!   (`RequestIdReused`) is never stored.
//! - 4: ferry's own types are self-describing. Versions 1 to 3 are read
//!   through frozen copies of their positional layouts ([`crate::legacy`]),
//!   so that today's types can gain fields. Their command digests were
//!   computed from the positional bytes, which version 4 no longer has, so
//!   what is read from them keeps no digest: a request id remembered from
//!   them answers its original response to any command, as one from
//!   versions 1 and 2 always did.
//!
//! Every decoded type says, through [`Persisted`], how versions 1 to 3
//! wrote it.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The format version written by this build.
pub const FORMAT_VERSION: u16 = 4;

/// A type stored with [`encode`] and read with [`decode`].
pub trait Persisted: DeserializeOwned {
    /// The type as format version 1 wrote it: `Self` when its encoding did
    /// not change since, a type of [`crate::legacy`] when it did.
    type V1: DeserializeOwned + Into<Self>;
    /// The type as format version 2 wrote it, likewise.
    type V2: DeserializeOwned + Into<Self>;
    /// The type as format version 3 wrote it, likewise.
    type V3: DeserializeOwned + Into<Self>;
}

/// Marks types whose encoding is the same in every format version.
macro_rules! unchanged_since_v1 {
    ($($t:ty),* $(,)?) => {
        $(impl $crate::codec::Persisted for $t {
            type V1 = $t;
            type V2 = $t;
            type V3 = $t;
        })*
    };
}
pub(crate) use unchanged_since_v1;

/// A value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Fewer than the two bytes of the version prefix.
    #[error("value too short for a version prefix ({len} bytes)")]
    Truncated { len: usize },
    /// A version this build cannot read (written by a newer ferry?).
    #[error("unknown format version {found} (this build reads versions 1 to {FORMAT_VERSION})")]
    UnknownVersion { found: u16 },
    /// bincode could not encode the value.
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// bincode could not decode the value (corrupt or truncated).
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The value decoded but bytes were left over: the type does not match.
    #[error("{extra} trailing bytes after the value")]
    TrailingBytes { extra: usize },
}

/// Encodes `value` with the version prefix.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = FORMAT_VERSION.to_be_bytes().to_vec();
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())?;
    Ok(out)
}

/// Decodes a value written by [`encode`] of this or an older build,
/// checking the version prefix and that every byte was consumed.
pub fn decode<T: Persisted>(bytes: &[u8]) -> Result<T, CodecError> {
    let Some((version, body)) = bytes.split_first_chunk::<2>() else {
        return Err(CodecError::Truncated { len: bytes.len() });
    };
    match u16::from_be_bytes(*version) {
        FORMAT_VERSION => decode_body(body),
        3 => decode_body::<T::V3>(body).map(Into::into),
        2 => decode_body::<T::V2>(body).map(Into::into),
        1 => decode_body::<T::V1>(body).map(Into::into),
        found => Err(CodecError::UnknownVersion { found }),
    }
}

fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let (value, read) = bincode::serde::decode_from_slice(body, bincode::config::standard())?;
    match body.len() - read {
        0 => Ok(value),
        extra => Err(CodecError::TrailingBytes { extra }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    unchanged_since_v1!((u64, String, u128), u64, u8, String);

    #[test]
    fn round_trip_and_errors() {
        let v = (7u64, String::from("x"), u128::MAX);
        let bytes = encode(&v).expect("encode");
        assert_eq!(&bytes[..2], &[0, 4]);
        assert_eq!(decode::<(u64, String, u128)>(&bytes).expect("decode"), v);
        assert!(matches!(decode::<u64>(&[0]), Err(CodecError::Truncated { len: 1 })));
        assert!(matches!(decode::<u64>(&[0, 5, 0]), Err(CodecError::UnknownVersion { found: 5 })));
        assert!(matches!(decode::<u64>(&[0, 0, 0]), Err(CodecError::UnknownVersion { found: 0 })));
        assert!(matches!(decode::<u8>(&[0, 4, 5, 6]), Err(CodecError::TrailingBytes { extra: 1 })));
        assert!(matches!(decode::<String>(&bytes[..bytes.len() - 1]), Err(CodecError::Decode(_))));
        // An unchanged type reads versions 1 to 3 as they are.
        assert_eq!(decode::<u8>(&[0, 1, 5]).expect("v1"), 5);
        assert_eq!(decode::<u8>(&[0, 2, 5]).expect("v2"), 5);
        assert_eq!(decode::<u8>(&[0, 3, 5]).expect("v3"), 5);
    }
}
