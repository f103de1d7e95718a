//! ferry-client: the admin-API contract shared by `ferryd` and its clients.
//!
//! # Layout
//! - [`addr`]: a backend's address: an IP literal or a host name, with a port.
//! - [`route`]: the route schema (TOML `[[routes]]` and API bodies), defaults
//!   and validation with field paths.
//! - [`name`]: names (routes, backends, policies, nodes) and the rules of
//!   new input against stored objects.
//! - [`listen`]: listen addresses and the collisions found before binding.
//! - [`chaos`]: the chaos-policy schema (Toxiproxy-style toxics) and its
//!   validation.
//! - [`explain`]: `explain` and `dry-run`: why a connection goes where it
//!   goes, and where connections would go after a route change.
//! - [`api`]: response bodies of the admin API and its JSON error body.
//! - [`selfdesc`]: how ferry's own types are written inside binary formats
//!   (the Raft log, snapshots, the cluster port) so that they can gain fields
//!   across versions.
//! - [`snapshot`]: backup files of the replicated config: the format, its
//!   checksum, and writing one atomically.
//! - `http` (feature `http`): `AdminClient`, an async client of the API.
//! - `wait` (feature `http`): waiting until every member's data plane runs
//!   a config index (`--wait-applied`).
//! - `toml_input` (feature `toml`): `[[routes]]` read from TOML, every
//!   problem with its path and line (ferryd's config, ferryctl's files).
//!
//! The binary `ferryctl` (feature `cli`, on by default) is the operator's
//! command line, built on `AdminClient`.
//!
//! This crate depends on no other ferry crate, so every client (the CLI, the
//! test harness, jepsen-lite) speaks exactly what the server speaks.

pub mod addr;
pub mod api;
pub mod chaos;
pub mod explain;
#[cfg(feature = "http")]
pub mod http;
pub mod listen;
pub mod name;
pub mod route;
pub mod selfdesc;
pub mod snapshot;
#[cfg(feature = "toml")]
pub mod toml_input;
#[cfg(feature = "http")]
pub mod wait;

pub use addr::{BackendAddr, HostPort};
pub use route::{BackendSpec, Balance, HashKey, HealthCheckSpec, ListenAddr, NodeRef, RouteSpec};

use std::fmt;

/// One problem with an input, naming the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldError {
    /// Path of the field, as `routes[1].backends[0].addr`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for FieldError {}
