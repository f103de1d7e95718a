//! Counters of the cluster transport. The Prometheus registry is owned by
//! telemetry, which reads these and exports them (as
//! `ferry_cluster_<field>_total`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by the client ([`Transport`](crate::cluster::Transport))
/// and server ([`serve`](crate::cluster::serve)) sides of one node.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Frames refused because they named another cluster.
    pub refused_cluster_id: AtomicU64,
    /// Frames refused because of their wire version.
    pub refused_version: AtomicU64,
    /// Frames that could not be decoded, or a message that was not a request
    /// (or not the expected reply).
    pub malformed: AtomicU64,
    /// Frames over the maximum size, received or about to be sent.
    pub oversized: AtomicU64,
    /// Outbound connections opened.
    pub connections_opened: AtomicU64,
    /// Inbound connections accepted.
    pub connections_accepted: AtomicU64,
    /// Outbound requests that failed (connect, timeout, i/o, refused).
    pub request_errors: AtomicU64,
    /// Log entries of client writes this node committed as leader (a batch
    /// is one).
    pub write_proposals: AtomicU64,
    /// The client writes in those entries.
    pub proposed_writes: AtomicU64,
    /// Read-index rounds this node ran (each confirms leadership once).
    pub read_rounds: AtomicU64,
    /// Linearizable reads those rounds answered.
    pub round_reads: AtomicU64,
    /// Client writes this node, as leader, refused to propose because
    /// their deadline had passed.
    pub writes_past_deadline: AtomicU64,
    /// Client writes this node, as leader, refused to propose because it
    /// had had no majority's acknowledgement for the quorum timeout.
    pub writes_without_quorum: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`TransportStats::refused_cluster_id`].
    pub refused_cluster_id: u64,
    /// See [`TransportStats::refused_version`].
    pub refused_version: u64,
    /// See [`TransportStats::malformed`].
    pub malformed: u64,
    /// See [`TransportStats::oversized`].
    pub oversized: u64,
    /// See [`TransportStats::connections_opened`].
    pub connections_opened: u64,
    /// See [`TransportStats::connections_accepted`].
    pub connections_accepted: u64,
    /// See [`TransportStats::request_errors`].
    pub request_errors: u64,
    /// See [`TransportStats::write_proposals`].
    pub write_proposals: u64,
    /// See [`TransportStats::proposed_writes`].
    pub proposed_writes: u64,
    /// See [`TransportStats::read_rounds`].
    pub read_rounds: u64,
    /// See [`TransportStats::round_reads`].
    pub round_reads: u64,
    /// See [`TransportStats::writes_past_deadline`].
    pub writes_past_deadline: u64,
    /// See [`TransportStats::writes_without_quorum`].
    pub writes_without_quorum: u64,
}

impl TransportStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            refused_cluster_id: get(&self.refused_cluster_id),
            refused_version: get(&self.refused_version),
            malformed: get(&self.malformed),
            oversized: get(&self.oversized),
            connections_opened: get(&self.connections_opened),
            connections_accepted: get(&self.connections_accepted),
            request_errors: get(&self.request_errors),
            write_proposals: get(&self.write_proposals),
            proposed_writes: get(&self.proposed_writes),
            read_rounds: get(&self.read_rounds),
            round_reads: get(&self.round_reads),
            writes_past_deadline: get(&self.writes_past_deadline),
            writes_without_quorum: get(&self.writes_without_quorum),
        }
    }

    /// Counts a refused or undecodable frame under its counter.
    pub(crate) fn count_frame_error(&self, e: &crate::cluster::frame::FrameError) {
        use crate::cluster::frame::FrameError;
        let counter = match e {
            FrameError::WrongCluster { .. } => &self.refused_cluster_id,
            FrameError::WrongVersion { .. } => &self.refused_version,
            FrameError::TooLarge { .. } => &self.oversized,
            FrameError::Malformed(_) | FrameError::Encode(_) => &self.malformed,
            FrameError::Closed | FrameError::Io(_) => return,
        };
        bump(counter);
    }
}

/// Adds one to `counter`.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
