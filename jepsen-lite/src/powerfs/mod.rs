//! powerfs: the suite's own FUSE filesystem for the `power-loss` nemesis.
//! It keeps what is written in memory, makes it durable only on `fsync`,
//! `fdatasync` or a directory `fsync`, and on a simulated power cut drops
//! everything that was not synced ([`model`] says exactly what survives).
//!
//! - [`content`] — a file's bytes as copy-on-write pages.
//! - [`model`] — the live and durable trees, sync and power cut; no FUSE.
//! - [`fuse`] — kernel requests to model calls.
//! - [`disks`] — one mount per node, the power switch, cleanup.
//! - [`cut`] — the `power-loss` fault: kill every node, cut their disks.

pub mod content;
pub mod cut;
pub mod disks;
pub mod fuse;
pub mod model;
