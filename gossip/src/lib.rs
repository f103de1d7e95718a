//! ferry-gossip: SWIM membership for ferry nodes, on foca over tokio UDP.
//!
//! A node starts gossip with [`Gossip::start`] on a pre-bound UDP socket
//! (default port 7946) and gets a [`GossipHandle`]: the [`MemberView`]
//! snapshot (alive / suspect / down / left, since when), a stream of
//! [`MemberEvent`]s, counters in [`GossipStats`], and `join` / `leave` /
//! `broadcast`. A node declared down by mistake renews its identity and
//! rejoins on its own.
//!
//! # Layout
//! - [`identity`]: `NodeIdentity`, foca's `Identity` (id, addresses, incarnation)
//! - [`codec`]: bincode 2 `Codec` for foca headers and members
//! - [`envelope`]: the versioned wire envelope with the cluster tag
//! - [`config`]: `GossipConfig`, the `lan` / `fast` profiles, `validate()`
//! - [`timer`]: deadline-ordered timer heap
//! - `runtime`: the enqueue-only foca `Runtime`
//! - [`reannounce`]: announcing again after a rejoin or going idle
//! - `broadcast`: leave notices and payload broadcasts
//! - [`view`]: `MemberView`, `MemberEvent`, and the diff that derives them
//! - [`stats`]: counters for the node's metrics
//! - `driver`: the task that owns `Foca`; `handle`: starting it, the handle
//! - [`sim`]: an in-memory cluster of foca instances, for dissemination rounds

#![forbid(unsafe_code)]

mod broadcast;
pub mod codec;
pub mod config;
#[cfg(test)]
mod decode_fuzz;
mod driver;
pub mod envelope;
mod error;
mod handle;
pub mod identity;
pub mod reannounce;
mod runtime;
pub mod sim;
pub mod stats;
pub mod timer;
pub mod view;

pub use broadcast::Received;
pub use config::{ConfigError, GossipConfig, Profile, Timings};
pub use envelope::{ClusterTag, Envelope, EnvelopeError};
pub use error::GossipError;
pub use handle::{Gossip, GossipHandle};
pub use identity::{NodeIdentity, NodeMeta};
pub use stats::{GossipStats, StatsSnapshot};
pub use view::{MemberEvent, MemberState, MemberStatus, MemberView, StateCounts};

/// The default gossip port.
pub const DEFAULT_PORT: u16 = 7946;
