//! openraft configuration with ferry's defaults: the snapshot and log-purge
//! policy, and the timers the node passes in.

use openraft::{Config, ConfigError, SnapshotPolicy};

/// Build a snapshot after this many log entries since the last one.
pub const SNAPSHOT_LOGS_SINCE_LAST: u64 = 5_000;
/// Log entries already in a snapshot kept for lagging followers.
pub const MAX_IN_SNAPSHOT_LOG_TO_KEEP: u64 = 1_000;
/// Largest snapshot chunk sent in one install-snapshot RPC, in bytes. The
/// cluster transport's maximum frame must be larger.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;

/// How long the leader waits for a follower to take one snapshot chunk and,
/// for the last one, to install the snapshot (decode it, write it to sled,
/// `fdatasync`) before it gives up and starts over with a fresh snapshot.
/// openraft's default, 200 ms, is less than a loaded two-core machine
/// takes to install half a megabyte: a follower that needed a snapshot
/// then installed it again and again while the leader timed out each
/// attempt and sent it no entries, and stayed behind for tens of seconds
/// (the 30-minute jepsen-lite run of 2026-12-07). A long wait costs
/// little: it holds up only the stream to that one follower, and only when
/// the follower stops answering in the middle of an exchange; one that
/// cannot be reached fails at connect, within the transport's 500 ms.
/// hashicorp/raft allows 10 s per 256 KiB for the same request.
pub const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 5_000;

/// Raft timers in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTimers {
    /// Leader heartbeat interval (openraft sends one on its tick, every
    /// 1.5 heartbeat intervals, when nothing else was sent).
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout: how long a follower
    /// hears nothing from a leader before it campaigns
    /// ([`election`](crate::election)).
    pub election_timeout_min_ms: u64,
    /// Upper bound (exclusive) of the randomized election timeout.
    pub election_timeout_max_ms: u64,
}

impl RaftTimers {
    /// The pre-vote lease: a voter that heard from a leader within it
    /// refuses pre-votes (unless it saw the leader's connection close). One
    /// heartbeat below the election timeout's lower bound (at least a
    /// heartbeat plus two milliseconds), so a follower that campaigns after
    /// losing the leader together with the others finds their leases
    /// expired.
    pub fn leader_lease_ms(&self) -> u64 {
        self.election_timeout_min_ms.saturating_sub(self.heartbeat_ms).max(self.heartbeat_ms + 2)
    }

    /// openraft's own lease (its `election_timeout_max`): a voter that
    /// heard from a leader within it refuses real votes. Two heartbeats, at
    /// most [`Self::leader_lease_ms`]: a live leader has refreshed it at
    /// least once by then, and pre-vote already guards the longer wait, so
    /// it only bounds how soon a follower that saw its leader's connection
    /// close can be elected.
    pub fn vote_lease_ms(&self) -> u64 {
        self.heartbeat_ms.saturating_mul(2).min(self.leader_lease_ms()).max(self.heartbeat_ms + 2)
    }

    /// The bound on each vote (and pre-vote) request: just under
    /// [`Self::vote_lease_ms`] (openraft wants its `election_timeout_min`
    /// below its `election_timeout_max`), above a heartbeat.
    pub fn vote_timeout_ms(&self) -> u64 {
        (self.vote_lease_ms() - 1).max(self.heartbeat_ms + 1)
    }
}

impl Default for RaftTimers {
    fn default() -> Self {
        Self { heartbeat_ms: 50, election_timeout_min_ms: 150, election_timeout_max_ms: 300 }
    }
}

/// Most entries in one AppendEntries (openraft's default is 300). A new
/// leader's first requests to each follower carry this many from the middle
/// of its log, and the node's network cuts a batch to a byte budget only
/// after it has been read and encoded: with route entries of tens of KiB,
/// 300 of them made megabytes of work per attempt. Config changes are few,
/// so 64 per round trip still catches a follower up quickly.
pub const MAX_PAYLOAD_ENTRIES: u64 = 64;

/// The snapshot policy: every [`SNAPSHOT_LOGS_SINCE_LAST`] entries.
pub fn snapshot_policy() -> SnapshotPolicy {
    SnapshotPolicy::LogsSinceLast(SNAPSHOT_LOGS_SINCE_LAST)
}

/// A validated openraft config for the cluster `cluster_name` with `timers`
/// and ferry's snapshot and purge policy. Fails when the timers are
/// inconsistent (for example `election_timeout_min_ms <= heartbeat_ms`).
///
/// openraft's own election timer is off: run [`election::run`](crate::election::run)
/// beside the `Raft`. openraft's `election_timeout_max` is its vote lease
/// ([`RaftTimers::vote_lease_ms`]) and its `election_timeout_min` (just
/// under it) bounds each vote request.
pub fn raft_config(cluster_name: &str, timers: RaftTimers) -> Result<Config, Box<ConfigError>> {
    if timers.election_timeout_min_ms <= timers.heartbeat_ms {
        return Err(Box::new(ConfigError::ElectionTimeoutLTHeartBeat {
            election_timeout_min: timers.election_timeout_min_ms,
            heartbeat_interval: timers.heartbeat_ms,
        }));
    }
    if timers.election_timeout_max_ms <= timers.election_timeout_min_ms {
        return Err(Box::new(ConfigError::ElectionTimeout {
            min: timers.election_timeout_min_ms,
            max: timers.election_timeout_max_ms,
        }));
    }
    let lease = timers.vote_lease_ms();
    Config {
        cluster_name: cluster_name.to_owned(),
        heartbeat_interval: timers.heartbeat_ms,
        election_timeout_min: timers.vote_timeout_ms(),
        election_timeout_max: lease,
        enable_elect: false,
        snapshot_policy: snapshot_policy(),
        max_in_snapshot_log_to_keep: MAX_IN_SNAPSHOT_LOG_TO_KEEP,
        // openraft asks for a lag threshold above the snapshot interval, so a
        // follower behind by less than that is sent logs, not a snapshot.
        replication_lag_threshold: SNAPSHOT_LOGS_SINCE_LAST * 2,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        ..Default::default()
    }
    .validate()
    .map_err(Box::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_timers() {
        let c = raft_config("ferry", RaftTimers::default()).expect("valid config");
        assert_eq!(c.snapshot_policy, SnapshotPolicy::LogsSinceLast(5_000));
        assert_eq!(c.max_in_snapshot_log_to_keep, 1_000);
        assert_eq!(c.heartbeat_interval, 50);
        assert_eq!(c.max_payload_entries, 64);
        assert_eq!(c.install_snapshot_timeout(), std::time::Duration::from_secs(5));
        let bad =
            RaftTimers { heartbeat_ms: 200, election_timeout_min_ms: 150, election_timeout_max_ms: 300 };
        assert!(raft_config("ferry", bad).is_err());
        let bad = RaftTimers { heartbeat_ms: 20, election_timeout_min_ms: 150, election_timeout_max_ms: 150 };
        assert!(raft_config("ferry", bad).is_err());
    }

    #[test]
    fn openraft_times_only_the_lease_and_the_vote_requests() {
        let timers =
            RaftTimers { heartbeat_ms: 30, election_timeout_min_ms: 150, election_timeout_max_ms: 300 };
        let c = raft_config("ferry", timers).expect("valid config");
        assert!(!c.enable_elect, "ferry's election timer replaces openraft's");
        assert_eq!(timers.leader_lease_ms(), 120, "pre-vote lease: one heartbeat below the lower bound");
        assert_eq!(c.election_timeout_max, 60, "openraft's vote lease: two heartbeats");
        assert_eq!(c.election_timeout_min, 59);
        // The smallest valid timers still give openraft a valid config.
        let tight =
            RaftTimers { heartbeat_ms: 100, election_timeout_min_ms: 101, election_timeout_max_ms: 102 };
        let c = raft_config("ferry", tight).expect("valid config");
        assert_eq!((c.election_timeout_min, c.election_timeout_max), (101, 102));
    }
}
