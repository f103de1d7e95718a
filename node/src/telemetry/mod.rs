//! Telemetry for the ferry node.
//!
//! This module owns two things:
//!
//! * [`metrics`]: the Prometheus [`prometheus::Registry`] and every metric
//!   family the node exports (see [`metrics::Metrics`]), plus the text
//!   exposition used by the admin `/metrics` endpoint.
//! * [`tracing`](self::tracing): logging and tracing setup — the global
//!   `tracing` subscriber (env filter, text/JSON formatting to stderr) and the
//!   optional OTLP/gRPC span exporter (see [`self::tracing::init`]).
//! * [`raft_noise`]: the openraft log lines hidden by default.

#[cfg(test)]
pub(crate) mod log_capture;
pub mod metrics;
pub mod raft_noise;
pub mod tracing;
