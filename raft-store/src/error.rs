//! The crate's storage error, and its conversion to openraft's
//! `StorageError` (which names what was being read or written).

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};

use crate::codec::CodecError;
use crate::types::NodeId;

/// A failure of the sled-backed stores.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, corruption, or the database lock is held).
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// A persisted value could not be encoded or decoded.
    #[error("{what}: {source}")]
    Codec {
        /// Which value, as `log entry 17` or `state machine meta`.
        what: String,
        #[source]
        source: CodecError,
    },
    /// The persisted data contradicts itself.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// `fdatasync` (or `fsync`) of one of sled's files or directories failed:
    /// what sled flushed may not be on disk.
    #[error("sync {path}: {source}")]
    Sync {
        /// The file or directory.
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A blocking task doing store work panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// A codec error about `what`.
    pub fn codec(what: impl Into<String>, source: CodecError) -> Self {
        StoreError::Codec { what: what.into(), source }
    }

    /// This error as openraft's `StorageError`, about `subject` while doing `verb`.
    pub fn into_storage(self, subject: ErrorSubject<NodeId>, verb: ErrorVerb) -> StorageError<NodeId> {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}

/// Shorthand for mapping any error convertible to [`StoreError`] into a
/// `StorageError` about `subject`/`verb`.
pub(crate) fn storage_err<E: Into<StoreError>>(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
) -> impl Fn(E) -> StorageError<NodeId> {
    move |e| e.into().into_storage(subject.clone(), verb)
}
