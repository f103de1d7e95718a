//! The cluster transport: Raft RPCs, snapshot chunks and forwarded writes
//! between ferry nodes over TCP on the cluster port, and openraft's network
//! on top of it.
//!
//! # Layout
//! - [`frame`]: length-prefixed frames and the versioned [`Envelope`](frame::Envelope).
//! - [`message`]: the [`Message`] enum and [`WriteError`].
//! - [`transport`]: the client side, [`Transport`], with a connection pool per peer.
//! - [`server`]: the server side, [`serve`] and [`ClusterServer`].
//! - [`batcher`]: the leader's write batches and shared read-index rounds.
//! - [`deadline`]: a forwarded write's deadline on the leader's clock, and
//!   forwarding a write with it.
//! - [`leadership`]: whether a leader waiting on a write still leads with a
//!   quorum.
//! - [`network`]: openraft's [`Network`] factory and [`PeerClient`].
//! - [`contacts`]: [`Contacts`], the last contact with each peer and the
//!   log lines about peers becoming unreachable.
//! - [`stats`]: [`TransportStats`], the counters telemetry exports.
//! - [`versions`]: what every member speaks, the cluster version and the
//!   gate on features.
//!
//! # Wiring
//! The network only needs the transport, so the order is: stats, transport,
//! `Network::new(id, transport)`, `Raft::new(.., network, ..)`, then
//! `ClusterServer::new(raft.clone(), ..)` served on the bound cluster port.
//! Shutdown: cancel the server's token and await [`serve`], then
//! `raft.shutdown()`.

pub mod batcher;
pub mod contacts;
pub mod deadline;
pub mod frame;
pub mod leadership;
pub mod message;
pub mod network;
pub mod server;
pub mod stats;
pub mod transport;
pub mod versions;

pub use contacts::Contacts;
pub use frame::{Envelope, FrameError, MAX_FRAME_BYTES, WIRE_VERSION};
pub use message::{ErrorCode, Message, WriteError};
pub use network::{Network, PeerClient, TransportPreVoter};
pub use server::{ClusterServer, ServerConfig, serve};
pub use stats::{StatsSnapshot, TransportStats};
pub use transport::{Transport, TransportConfig, TransportError};
