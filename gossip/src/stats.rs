//! `GossipStats`: counters the driver bumps and the node exports, without a
//! metrics dependency here.
//!
//! Mapping to the node's Prometheus names:
//! `ferry_gossip_packets_total{direction="in",result="ok"|"foreign_cluster"|
//! "bad_version"|"malformed"|"oversize"|"rejected"}`,
//! `ferry_gossip_packets_total{direction="out",result="ok"|"error"}`,
//! `ferry_gossip_probe_failures_total`; `ferry_gossip_members{state}` comes
//! from [`crate::MemberView::counts`].

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters; shared as `Arc<GossipStats>`.
#[derive(Debug, Default)]
pub struct GossipStats {
    /// Datagrams accepted by the envelope and handled by foca.
    pub packets_in: AtomicU64,
    /// Datagrams sent.
    pub packets_out: AtomicU64,
    /// Sends that failed (socket error).
    pub send_errors: AtomicU64,
    /// Datagrams of another cluster id.
    pub dropped_foreign_cluster: AtomicU64,
    /// Datagrams with an unknown magic or envelope version.
    pub dropped_bad_version: AtomicU64,
    /// Datagrams shorter than the envelope or that foca could not decode.
    pub dropped_malformed: AtomicU64,
    /// Datagrams above `max_packet_size`.
    pub dropped_oversize: AtomicU64,
    /// Well-formed datagrams foca refused (from ourselves, from a down member
    /// that wrote to a stale identity, ...).
    pub rejected: AtomicU64,
    /// Probes that got no direct or indirect ack (the member became suspect).
    pub probe_failures: AtomicU64,
    /// Member events or broadcasts a full internal queue had to drop.
    pub dropped_events: AtomicU64,
}

/// A plain copy of [`GossipStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub packets_in: u64,
    pub packets_out: u64,
    pub send_errors: u64,
    pub dropped_foreign_cluster: u64,
    pub dropped_bad_version: u64,
    pub dropped_malformed: u64,
    pub dropped_oversize: u64,
    pub rejected: u64,
    pub probe_failures: u64,
    pub dropped_events: u64,
}

impl GossipStats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads every counter (each atomically, not all together).
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            packets_in: get(&self.packets_in),
            packets_out: get(&self.packets_out),
            send_errors: get(&self.send_errors),
            dropped_foreign_cluster: get(&self.dropped_foreign_cluster),
            dropped_bad_version: get(&self.dropped_bad_version),
            dropped_malformed: get(&self.dropped_malformed),
            dropped_oversize: get(&self.dropped_oversize),
            rejected: get(&self.rejected),
            probe_failures: get(&self.probe_failures),
            dropped_events: get(&self.dropped_events),
        }
    }
}

impl StatsSnapshot {
    /// `(direction, result, count)` rows for `ferry_gossip_packets_total`.
    pub fn packet_rows(&self) -> [(&'static str, &'static str, u64); 8] {
        [
            ("in", "ok", self.packets_in),
            ("in", "foreign_cluster", self.dropped_foreign_cluster),
            ("in", "bad_version", self.dropped_bad_version),
            ("in", "malformed", self.dropped_malformed),
            ("in", "oversize", self.dropped_oversize),
            ("in", "rejected", self.rejected),
            ("out", "ok", self.packets_out),
            ("out", "error", self.send_errors),
        ]
    }
}
