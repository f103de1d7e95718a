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

/// Raft timers in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTimers {
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max_ms: u64,
}

impl Default for RaftTimers {
    fn default() -> Self {
        Self { heartbeat_ms: 50, election_timeout_min_ms: 150, election_timeout_max_ms: 300 }
    }
}

/// The snapshot policy: every [`SNAPSHOT_LOGS_SINCE_LAST`] entries.
pub fn snapshot_policy() -> SnapshotPolicy {
    SnapshotPolicy::LogsSinceLast(SNAPSHOT_LOGS_SINCE_LAST)
}

/// A validated openraft config for the cluster `cluster_name` with `timers`
/// and ferry's snapshot and purge policy. Fails when the timers are
/// inconsistent (for example `election_timeout_min_ms <= heartbeat_ms`).
pub fn raft_config(cluster_name: &str, timers: RaftTimers) -> Result<Config, Box<ConfigError>> {
    Config {
        cluster_name: cluster_name.to_owned(),
        heartbeat_interval: timers.heartbeat_ms,
        election_timeout_min: timers.election_timeout_min_ms,
        election_timeout_max: timers.election_timeout_max_ms,
        snapshot_policy: snapshot_policy(),
        max_in_snapshot_log_to_keep: MAX_IN_SNAPSHOT_LOG_TO_KEEP,
        // openraft asks for a lag threshold above the snapshot interval, so a
        // follower behind by less than that is sent logs, not a snapshot.
        replication_lag_threshold: SNAPSHOT_LOGS_SINCE_LAST * 2,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
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
        let bad =
            RaftTimers { heartbeat_ms: 200, election_timeout_min_ms: 150, election_timeout_max_ms: 300 };
        assert!(raft_config("ferry", bad).is_err());
    }
}
