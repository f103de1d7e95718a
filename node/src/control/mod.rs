//! The control plane: turns configuration and health into routing tables.
//!
//! - [`registry`]: long-lived per-route and per-backend state.
//! - [`publisher`]: the task that rebuilds, swaps and reconciles.

pub mod publisher;
pub mod registry;
