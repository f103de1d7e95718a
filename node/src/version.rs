//! What this build is and which cluster protocol it speaks: the one source
//! of the version in `ferryd --version`, the admin API, the
//! `ferry_build_info` metric, gossip and the cluster port.
//!
//! # Protocol and features
//!
//! [`PROTOCOL`] numbers what a build reads and writes: the cluster port's
//! frames, the Raft log's entries and snapshots, and the gossip identity. It
//! grows by one in each release that adds something an older build cannot
//! read: a field or variant of a self-describing type
//! ([`ferry_client::selfdesc`]) that is in use, or a new message. Nodes
//! whose protocols differ by at most one talk ([`compatible`]): that is
//! the window a rolling upgrade moves through, one release at a time.
//!
//! A [`Feature`] is something a write can use that a node speaking an older
//! protocol could not apply. Each names the protocol that introduced it;
//! a node speaks every feature up to its own protocol. The leader refuses
//! a write that uses a feature some member does not speak yet
//! (`409 feature_not_enabled`, naming the feature and the members behind),
//! so an older node never meets data it cannot read, except after an
//! operator downgrades it while the feature is in use. Then it refuses
//! the entry, saying which field or variant it does not know, and stops
//! applying.

use std::fmt;

/// The release: the crate version.
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");

/// The git commit this binary was built from (`unknown` when it was built
/// outside a git checkout; see `node/build.rs`).
pub const COMMIT: &str = env!("FERRY_GIT_COMMIT");

/// `ferryd --version`: the release, the commit and the protocol.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FERRY_GIT_COMMIT"),
    ", protocol ",
    // Keep in step with `PROTOCOL`; a test checks.
    "6",
    ")"
);

/// The cluster protocol this build speaks.
///
/// - 3: the first protocol whose types are self-describing (raft-store
///   format 4, cluster-port envelope 3, gossip envelope 2). Protocols 1 and
///   2 (the envelope versions before it) are not in any window: a cluster
///   moves to 3 all at once.
/// - 4: routes carry `labels` (feature `route_labels`).
/// - 5: chaos policies carry a `seed`, a backend scope, direction `both`
///   and the `connect_delay` toxic (feature `chaos_traffic`); a route may be
///   disabled, `enabled: false` (feature `route_enabled`).
/// - 6: the command that replaces the whole config with a snapshot's
///   (`POST /v1/snapshot/restore`, `ferryd --restore-snapshot`; feature
///   `snapshot_restore`).
pub const PROTOCOL: u16 = 6;

/// The oldest protocol any build of this line talks to.
pub const OLDEST_PROTOCOL: u16 = 3;

/// Whether this build talks to a peer speaking `protocol`: at most one
/// apart, and not older than [`OLDEST_PROTOCOL`].
pub fn compatible(protocol: u16) -> bool {
    protocol >= OLDEST_PROTOCOL && protocol.abs_diff(PROTOCOL) <= 1
}

/// The accepted window, for messages: `PROTOCOL - 1 ..= PROTOCOL + 1`.
pub fn window() -> std::ops::RangeInclusive<u16> {
    OLDEST_PROTOCOL.max(PROTOCOL.saturating_sub(1))..=PROTOCOL + 1
}

/// A capability a write may use, introduced by protocol `since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    /// The name in errors, `/v1/status` and `/v1/members`.
    pub name: &'static str,
    /// The protocol that introduced it.
    pub since: u16,
}

/// Every feature this build knows, oldest first.
pub const FEATURES: &[Feature] = &[
    Feature { name: ferry_raft_store::command::ROUTE_LABELS, since: 4 },
    Feature { name: ferry_raft_store::command::CHAOS_TRAFFIC, since: 5 },
    Feature { name: ferry_raft_store::command::ROUTE_ENABLED, since: 5 },
    Feature { name: ferry_raft_store::command::SNAPSHOT_RESTORE, since: 6 },
];

/// The names of the features a node speaking `protocol` speaks.
pub fn features_of(protocol: u16) -> Vec<String> {
    FEATURES.iter().filter(|f| f.since <= protocol).map(|f| f.name.to_string()).collect()
}

/// The version as one string: the release and the commit's first 12 hex
/// digits, in semver's build-metadata form (`0.1.0+0123456789ab`).
pub fn version() -> String {
    let commit: String = COMMIT.chars().take(12).collect();
    format!("{RELEASE}+{commit}")
}

/// Whether `error` says this build met a field or variant it does not know:
/// data a newer ferry wrote.
pub fn is_newer_data(error: &str) -> bool {
    error.contains("unknown field") || error.contains("unknown variant")
}

/// What to add to an error that says this build met a field or variant it
/// does not know: where it came from and what to do.
pub fn newer_data_hint(error: &str) -> &'static str {
    if is_newer_data(error) {
        "; a newer ferry wrote it, and this build cannot read it: run that version (README, Upgrading)"
    } else {
        ""
    }
}

/// A node's version as another node learnt it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeVersion {
    /// [`version`] of that node.
    pub version: String,
    /// Its [`PROTOCOL`].
    pub protocol: u16,
}

impl fmt::Display for NodeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, protocol {}", self.version, self.protocol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_long_version_names_this_protocol() {
        assert!(LONG.ends_with(&format!("protocol {PROTOCOL})")), "{LONG}");
        assert!(LONG.starts_with(RELEASE));
        assert!(version().starts_with(&format!("{RELEASE}+")));
    }

    #[test]
    fn the_window_is_one_protocol_each_way_from_the_oldest() {
        assert!(compatible(PROTOCOL));
        assert!(compatible(PROTOCOL + 1));
        assert!(!compatible(PROTOCOL + 2));
        assert!(!compatible(2), "protocols before the self-describing one are out");
        assert!(compatible(PROTOCOL - 1), "the previous protocol is in");
        assert!(!compatible(PROTOCOL - 2), "the one before it is out");
        assert_eq!(window(), PROTOCOL - 1..=PROTOCOL + 1);
        for p in 0..10 {
            assert_eq!(compatible(p), window().contains(&p), "protocol {p}");
        }
    }

    #[test]
    fn features_are_ordered_and_none_is_newer_than_this_build() {
        let mut last = 0;
        for f in FEATURES {
            assert!(f.since >= last && f.since <= PROTOCOL, "{f:?}");
            last = f.since;
        }
        assert_eq!(features_of(PROTOCOL).len(), FEATURES.len());
    }
}
