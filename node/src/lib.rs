//! ferry-node: the `ferryd` node.
//!
//! # Layout
//! - [`cluster`]: the cluster transport (Raft RPCs, forwarded writes) and openraft's network.
//! - [`config`]: the `ferryd.toml` schema, defaults and validation.
//! - [`node`]: the composition root: start, apply routes, graceful shutdown.
//! - [`control`]: builds and publishes routing tables from config and health.
//! - [`dataplane`]: listeners, balancing, failover, health, the byte copy.
//! - [`admin`]: the admin HTTP API.
//! - [`telemetry`]: Prometheus metrics, logs and OTLP traces.
//! - [`version`]: the release, commit and cluster protocol of this build.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod node;
pub mod telemetry;
pub mod version;

pub use config::Config;
pub use node::Node;
