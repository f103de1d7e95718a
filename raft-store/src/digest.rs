//! The digest of a command: what the state machine remembers beside a
//! request id, to tell a retry (the same command again) from a different
//! request that reuses the id ([`StateError::RequestIdReused`]).
//!
//! The digest covers the [`Command`], not the HTTP request: the admin API
//! maps method, path, query and body to exactly one command, so two requests
//! are the same request exactly when their commands are equal (a body that
//! differs only in spacing or key order is the same request).
//!
//! It is FNV-1a 128 of the command's JSON document: the self-describing
//! form in which a [`crate::Request`] carries it since format version 4
//! ([`ferry_client::selfdesc`]). A function of those bytes alone, so every
//! node, and every later build, computes the same digest for the same
//! command. std's `DefaultHasher` would not do: its keys are random per
//! process. A field added to a command, route or policy later leaves its
//! default out of the document (`skip_serializing_if`), so commands that do
//! not use it keep their digests across the upgrade; the golden digests in
//! the tests fail if the bytes move. Format 3 digested the positional
//! bincode bytes, which format 4 no longer has: what is read from formats 1
//! to 3 keeps no digest ([`crate::legacy`]).
//!
//! Cost: about 8 ns a byte (release build), on every node, for requests
//! with an id: well under a microsecond for a weight change, 0.25 ms for a
//! route of 1,500 backends (29 KB).
//!
//! FNV is not a cryptographic hash. A collision only makes a different
//! request with a reused id answer like the original (the behaviour before
//! digests existed), and finding one means crafting two commands on purpose:
//! an accident is 1 in 2^128.
//!
//! [`StateError::RequestIdReused`]: crate::StateError::RequestIdReused

use crate::command::Command;

/// FNV-1a 128 offset basis.
const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
/// FNV 128 prime: 2^88 + 2^8 + 0x3b.
const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

/// FNV-1a 128 as an `io::Write` sink, so a command is hashed as bincode
/// writes it, without an intermediate buffer.
#[derive(Debug, Clone, Copy)]
struct Fnv1a128(u128);

impl Default for Fnv1a128 {
    fn default() -> Self {
        Fnv1a128(OFFSET)
    }
}

impl std::io::Write for Fnv1a128 {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for b in buf {
            self.0 = (self.0 ^ u128::from(*b)).wrapping_mul(PRIME);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// FNV-1a 128 of `bytes`.
pub fn fnv1a_128(bytes: &[u8]) -> u128 {
    let mut h = Fnv1a128::default();
    // Writing to the hasher cannot fail.
    let _ = std::io::Write::write(&mut h, bytes);
    h.0
}

/// The digest of `cmd`, or `None` if it cannot be encoded (no command of
/// the schema fails to encode; were one to, every node would fail alike, and
/// its id would be checked as an old entry without a digest is).
pub fn command_digest(cmd: &Command) -> Option<u128> {
    let mut h = Fnv1a128::default();
    serde_json::to_writer(&mut h, cmd).ok()?;
    Some(h.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test vectors of the FNV reference (draft-eastlake-fnv, isthe.com).
    #[test]
    fn fnv1a_128_matches_the_reference() {
        assert_eq!(fnv1a_128(b""), 0x6c62272e07bb014262b821756295c58d);
        assert_eq!(fnv1a_128(b"a"), 0xd228cb696f1a8caf78912b704e4a8964);
        assert_eq!(fnv1a_128(b"foobar"), 0x343e1662793c64bf6f0d3597ba446f18);
    }

    /// Golden digests: if these change, digests remembered by an older
    /// build no longer match the same command, and honest retries across an
    /// upgrade are refused as reused ids. See the module docs.
    #[test]
    fn digests_are_stable() {
        let delete = Command::DeleteRoute { name: "w1b".into(), cas: None };
        let weight =
            Command::SetBackendWeight { route: "w1b".into(), backend: "a".into(), weight: 5, cas: Some(42) };
        assert_eq!(command_digest(&delete), Some(0xc595e4a724a500be097da3ca530e6028));
        assert_eq!(command_digest(&weight), Some(0xd7d4eb99e1ebbad5a9ca1a880061d657));
        // The same digests from the documents written out by hand.
        assert_eq!(command_digest(&delete), Some(fnv1a_128(br#"{"DeleteRoute":{"name":"w1b","cas":null}}"#)));
        assert_eq!(
            command_digest(&weight),
            Some(fnv1a_128(br#"{"SetBackendWeight":{"route":"w1b","backend":"a","weight":5,"cas":42}}"#))
        );
        // Any field counts, the compare-and-set condition included.
        let other_cas =
            Command::SetBackendWeight { route: "w1b".into(), backend: "a".into(), weight: 5, cas: None };
        assert_ne!(command_digest(&weight), command_digest(&other_cas));
        assert_eq!(command_digest(&weight), command_digest(&weight.clone()));
    }
}
