//! Self-describing values inside binary formats: how ferry's own types
//! cross versions.
//!
//! bincode (the Raft log, snapshots, the cluster port, gossip) is
//! positional: a field added to a struct moves every byte after it, so an
//! older build misreads newer bytes and a newer build cannot read older
//! ones. A type made self-describing with [`self_describing!`] is written,
//! in a binary format, as one length-prefixed JSON document of its fields
//! (by name; enum variants by name), and in a human-readable format (the
//! admin API's JSON, the config file's TOML) exactly as before. So:
//!
//! - a field added later with `#[serde(default)]` reads from older bytes;
//! - a field added with `skip_serializing_if` (its default left out) keeps
//!   the bytes of a value that does not use it identical, so an older build
//!   still reads it, and digests of it do not move;
//! - an older build reading a value that does use a new field refuses it,
//!   naming the field (every such type denies unknown fields, as the API
//!   does): ignoring a setting it does not know would apply a different
//!   config than the one written, silently;
//! - an enum variant added later is refused by name, likewise.
//!
//! The rules for changing such a type are in `docs/architecture.md`
//! ("Formats across versions").
//!
//! Bytes written before self-describing types existed (raft-store formats
//! 1 to 3) are read through frozen copies of their layouts (raft-store's
//! `legacy` module), never through these types.

use std::fmt;

use serde::de::{DeserializeOwned, Error as _, Visitor};
use serde::ser::Error as _;
use serde::{Deserializer, Serialize, Serializer};

/// Writes `value` as bytes holding its JSON document. `value`'s own
/// `Serialize` must write its fields when the serializer is human-readable
/// (JSON is), as [`self_describing!`] does.
pub fn serialize_embedded<T: Serialize + ?Sized, S: Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let json = serde_json::to_vec(value).map_err(S::Error::custom)?;
    serializer.serialize_bytes(&json)
}

/// Reads a value written by [`serialize_embedded`]. An error names the type
/// and, for a field this build does not know, the field.
pub fn deserialize_embedded<'de, T: DeserializeOwned, D: Deserializer<'de>>(
    deserializer: D,
    type_name: &'static str,
) -> Result<T, D::Error> {
    let bytes = deserializer.deserialize_bytes(BytesVisitor)?;
    serde_json::from_slice(bytes.as_ref()).map_err(|e| D::Error::custom(format_args!("{type_name}: {e}")))
}

/// Bytes, borrowed from the input when it allows.
enum Bytes<'de> {
    Borrowed(&'de [u8]),
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for Bytes<'_> {
    fn as_ref(&self) -> &[u8] {
        match self {
            Bytes::Borrowed(b) => b,
            Bytes::Owned(b) => b,
        }
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the bytes of a JSON document")
    }

    fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        Ok(Bytes::Borrowed(v))
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(Bytes::Owned(v.to_vec()))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        Ok(Bytes::Owned(v))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(Bytes::Owned(out))
    }
}

/// Makes each type self-describing in binary formats (see the [module
/// docs](self)). The type must derive `Serialize` and `Deserialize` with
/// `#[serde(remote = "Self")]`, which turns the derived code into the
/// type's inherent `serialize` and `deserialize` functions; this macro
/// implements the traits around them.
#[macro_export]
macro_rules! self_describing {
    ($($t:ty),* $(,)?) => {$(
        impl ::serde::Serialize for $t {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> ::core::result::Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    <$t>::serialize(self, serializer)
                } else {
                    $crate::selfdesc::serialize_embedded(self, serializer)
                }
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $t {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> ::core::result::Result<Self, D::Error> {
                if deserializer.is_human_readable() {
                    <$t>::deserialize(deserializer)
                } else {
                    $crate::selfdesc::deserialize_embedded(deserializer, stringify!($t))
                }
            }
        }
    )*};
}
