//! The on-disk and snapshot encoding: every persisted value is a 2-byte
//! big-endian format version followed by bincode 2 (serde, `standard()`
//! config) of the value.
//!
//! Decoding never panics: truncated bytes, trailing bytes, and a version this
//! build does not know are all [`CodecError`]s, which the stores turn into
//! openraft `StorageError`s. A change to a persisted type must bump
//! [`FORMAT_VERSION`] and keep decoding the old one; the fixture test in
//! `tests/fixture.rs` fails loudly if the bytes of version 1 stop decoding.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The format version written by this build.
pub const FORMAT_VERSION: u16 = 1;

/// A value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Fewer than the two bytes of the version prefix.
    #[error("value too short for a version prefix ({len} bytes)")]
    Truncated { len: usize },
    /// A version this build cannot read (written by a newer ferry?).
    #[error("unknown format version {found} (this build reads version {FORMAT_VERSION})")]
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

/// Decodes a value written by [`encode`], checking the version prefix and
/// that every byte was consumed.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let Some((version, body)) = bytes.split_first_chunk::<2>() else {
        return Err(CodecError::Truncated { len: bytes.len() });
    };
    match u16::from_be_bytes(*version) {
        FORMAT_VERSION => {
            let (value, read) = bincode::serde::decode_from_slice(body, bincode::config::standard())?;
            match body.len() - read {
                0 => Ok(value),
                extra => Err(CodecError::TrailingBytes { extra }),
            }
        }
        found => Err(CodecError::UnknownVersion { found }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let v = (7u64, String::from("x"), u128::MAX);
        let bytes = encode(&v).expect("encode");
        assert_eq!(&bytes[..2], &[0, 1]);
        assert_eq!(decode::<(u64, String, u128)>(&bytes).expect("decode"), v);
        assert!(matches!(decode::<u64>(&[0]), Err(CodecError::Truncated { len: 1 })));
        assert!(matches!(decode::<u64>(&[0, 2, 0]), Err(CodecError::UnknownVersion { found: 2 })));
        assert!(matches!(decode::<u8>(&[0, 1, 5, 6]), Err(CodecError::TrailingBytes { extra: 1 })));
        assert!(matches!(decode::<String>(&bytes[..bytes.len() - 1]), Err(CodecError::Decode(_))));
    }
}
