//! The control plane: turns configuration and health into routing tables.
//!
//! - [`registry`]: long-lived per-route and per-backend state.
//! - [`publisher`]: the task that rebuilds, swaps and reconciles.
//! - [`member`]: this node as a Raft member (storage, bootstrap, seeding).
//! - [`replica`]: writes with leader forwarding, linearizable reads, status.
//! - [`raft_watch`]: Raft metrics, leader-change log lines, member names.
//! - [`autopilot`]: the leader keeps Raft membership in step with gossip.
//! - [`resolver`]: looking up backend host names (bounded, in parallel);
//!   [`names`]: what each name resolves to, and the hold rule.
//! - [`route_binds`]: the addresses members hold, and the routes each
//!   member could not bind.
//! - [`attempt`]: how a request to the leader ends, and which error says so.

pub mod attempt;
pub mod autopilot;
pub mod bootstrap;
pub mod gossip;
pub mod member;
pub mod names;
pub mod node_id;
pub mod publisher;
pub mod raft_watch;
pub mod registry;
pub mod replica;
pub mod resolver;
pub mod route_binds;
