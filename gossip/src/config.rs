//! `GossipConfig`: the protocol timings and limits, with a `lan` and a `fast`
//! profile, per-field overrides, and `validate()` naming the bad field.
//!
//! Addresses, seeds and `bootstrap_expect` are the node's `[gossip]` section;
//! this is what the gossip crate itself needs. Defaults live in the `default_*`
//! functions and the two profile presets, nowhere else.

use std::fmt;
use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::envelope::ENVELOPE_LEN;

/// Fewest times an update is gossiped (see `foca_config`).
const MIN_TRANSMISSIONS: NonZeroU8 = match NonZeroU8::new(8) {
    Some(n) => n,
    None => NonZeroU8::MIN,
};

/// A preset of SWIM timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// foca's `Config::new_lan` (memberlist's LAN defaults): probe every 1 s,
    /// 500 ms probe RTT; down after 3 s of suspicion (foca: 4 s; both more
    /// above 10 expected members).
    #[default]
    Lan,
    /// For loopback and quiet LANs: probe every 100 ms, 40 ms probe RTT, down
    /// after 300 ms of suspicion; a dead member is down everywhere in well
    /// under a second.
    Fast,
}

/// Protocol configuration; deserialize, then [`GossipConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipConfig {
    /// Shared by every node; packets of another cluster are dropped.
    #[serde(default = "default_cluster_id")]
    pub cluster_id: String,
    #[serde(default)]
    pub profile: Profile,
    /// Expected cluster size; scales retransmissions and (lan) suspicion.
    #[serde(default = "default_expected_members")]
    pub expected_members: u32,
    /// Largest datagram sent or accepted, envelope included.
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: usize,
    /// Capacity of the member-event and broadcast channels; a receiver that
    /// falls further behind sees `Lagged`.
    #[serde(default = "default_event_capacity")]
    pub event_capacity: usize,
    /// Overrides of the profile's timings; `None` keeps the profile's value.
    #[serde(default)]
    pub probe_period_ms: Option<u64>,
    #[serde(default)]
    pub probe_rtt_ms: Option<u64>,
    #[serde(default)]
    pub suspect_to_down_ms: Option<u64>,
    #[serde(default)]
    pub gossip_interval_ms: Option<u64>,
    #[serde(default)]
    pub indirect_probes: Option<usize>,
    #[serde(default)]
    pub remove_down_after_ms: Option<u64>,
}

fn default_cluster_id() -> String {
    "ferry".to_owned()
}

fn default_expected_members() -> u32 {
    5
}

fn default_max_packet_size() -> usize {
    1400
}

fn default_event_capacity() -> usize {
    1024
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            cluster_id: default_cluster_id(),
            profile: Profile::default(),
            expected_members: default_expected_members(),
            max_packet_size: default_max_packet_size(),
            event_capacity: default_event_capacity(),
            probe_period_ms: None,
            probe_rtt_ms: None,
            suspect_to_down_ms: None,
            gossip_interval_ms: None,
            indirect_probes: None,
            remove_down_after_ms: None,
        }
    }
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldIssue {
    pub field: &'static str,
    pub message: String,
}

/// Every invalid field of a [`GossipConfig`], one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError(pub Vec<FieldIssue>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {}", issue.field, issue.message)?;
        }
        Ok(())
    }
}

/// The effective timings after profile and overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    pub probe_period: Duration,
    pub probe_rtt: Duration,
    pub suspect_to_down: Duration,
    pub gossip_interval: Duration,
    pub indirect_probes: usize,
    pub remove_down_after: Option<Duration>,
}

impl GossipConfig {
    /// The `fast` profile with everything else at its default.
    pub fn fast(cluster_id: impl Into<String>) -> Self {
        Self { cluster_id: cluster_id.into(), profile: Profile::Fast, ..Self::default() }
    }

    /// Checks every field; the error lists all problems at once.
    pub fn validate(self) -> Result<Self, ConfigError> {
        let mut issues = Vec::new();
        let mut bad = |field, message: &str| issues.push(FieldIssue { field, message: message.to_owned() });
        if self.cluster_id.is_empty() {
            bad("cluster_id", "must not be empty");
        }
        if self.expected_members == 0 {
            bad("expected_members", "must be at least 1");
        }
        if self.max_packet_size < ENVELOPE_LEN + 512 || self.max_packet_size > 65_507 {
            bad("max_packet_size", "must be between 523 and 65507 bytes");
        }
        if self.event_capacity == 0 {
            bad("event_capacity", "must be at least 1");
        }
        for (field, value) in [
            ("probe_period_ms", self.probe_period_ms),
            ("probe_rtt_ms", self.probe_rtt_ms),
            ("suspect_to_down_ms", self.suspect_to_down_ms),
            ("gossip_interval_ms", self.gossip_interval_ms),
            ("remove_down_after_ms", self.remove_down_after_ms),
        ] {
            if value == Some(0) {
                bad(field, "must be greater than 0");
            }
        }
        if self.indirect_probes == Some(0) {
            bad("indirect_probes", "must be at least 1");
        }
        let t = self.timings();
        if !t.probe_rtt.is_zero() && t.probe_rtt >= t.probe_period {
            bad("probe_rtt_ms", "must be less than probe_period_ms");
        }
        if issues.is_empty() { Ok(self) } else { Err(ConfigError(issues)) }
    }

    /// The profile's timings with the overrides applied.
    pub fn timings(&self) -> Timings {
        let preset = match self.profile {
            Profile::Lan => {
                let lan = foca::Config::new_lan(self.expected());
                Timings {
                    probe_period: lan.probe_period,
                    probe_rtt: lan.probe_rtt,
                    // Three quarters of foca's LAN preset: 3 s where foca
                    // (and memberlist's Lifeguard floor) wait 4 s. At 4 s
                    // ferry only tied Serf on detection with 5 members
                    // (5.6-5.8 s against 5.4-6.1 s in ops/bench/gossip.sh);
                    // 3 s is still far above a LAN's refutation time.
                    suspect_to_down: lan.suspect_to_down_after * 3 / 4,
                    gossip_interval: Duration::from_millis(200),
                    indirect_probes: lan.num_indirect_probes.get(),
                    remove_down_after: lan.remove_down_after,
                }
            }
            Profile::Fast => Timings {
                probe_period: Duration::from_millis(100),
                probe_rtt: Duration::from_millis(40),
                suspect_to_down: Duration::from_millis(300),
                gossip_interval: Duration::from_millis(50),
                indirect_probes: 3,
                remove_down_after: Some(Duration::from_secs(24 * 3600)),
            },
        };
        let ms = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_millis);
        Timings {
            probe_period: ms(self.probe_period_ms, preset.probe_period),
            probe_rtt: ms(self.probe_rtt_ms, preset.probe_rtt),
            suspect_to_down: ms(self.suspect_to_down_ms, preset.suspect_to_down),
            gossip_interval: ms(self.gossip_interval_ms, preset.gossip_interval),
            indirect_probes: self.indirect_probes.unwrap_or(preset.indirect_probes),
            remove_down_after: self
                .remove_down_after_ms
                .map(Duration::from_millis)
                .or(preset.remove_down_after),
        }
    }

    /// Upper bound on the time from a crash to every member holding the node
    /// down, in a quiet cluster: a few probe periods until someone probes it,
    /// the suspicion timeout, and some gossip rounds to spread the verdict.
    pub fn detection_bound(&self) -> Duration {
        let t = self.timings();
        t.probe_period * 4 + t.suspect_to_down + t.gossip_interval * 4
    }

    fn expected(&self) -> NonZeroU32 {
        NonZeroU32::new(self.expected_members).unwrap_or(NonZeroU32::MIN)
    }

    /// How often a node out of the cluster (after a rejoin, or with every
    /// other member down) announces itself again ([`crate::reannounce`]):
    /// one probe period.
    pub fn reannounce_every(&self) -> Duration {
        self.timings().probe_period
    }

    /// The foca config for these settings; call on a validated config.
    pub fn foca_config(&self) -> foca::Config {
        let t = self.timings();
        let lan = foca::Config::new_lan(self.expected());
        let (announce_every, announce_down_every) = match self.profile {
            // Down members are re-announced every 30 s, as Serf's
            // reconnect_interval: how soon two halves of a healed
            // partition find each other again.
            Profile::Lan => (Duration::from_secs(30), Duration::from_secs(30)),
            Profile::Fast => (Duration::from_secs(5), Duration::from_secs(2)),
        };
        let payload = self.max_packet_size.saturating_sub(ENVELOPE_LEN);
        foca::Config {
            probe_period: t.probe_period,
            probe_rtt: t.probe_rtt,
            num_indirect_probes: NonZeroUsize::new(t.indirect_probes).unwrap_or(NonZeroUsize::MIN),
            // foca sizes retransmissions by expected_members (default 5: 3
            // sends). Measured at 20 members that let about half of all
            // crashes and leaves miss one member, which then learned only by
            // probing (ops/bench/gossip.sh); Serf sends 8 at that size. A
            // floor of 8 keeps small clusters as fast and large ones whole.
            max_transmissions: lan.max_transmissions.max(MIN_TRANSMISSIONS),
            suspect_to_down_after: t.suspect_to_down,
            remove_down_after: t.remove_down_after,
            max_packet_size: NonZeroUsize::new(payload).unwrap_or(NonZeroUsize::MIN),
            notify_down_members: true,
            periodic_announce: Some(periodic(announce_every, 1)),
            periodic_announce_to_down_members: Some(periodic(announce_down_every, 2)),
            periodic_gossip: Some(periodic(t.gossip_interval, 3)),
        }
    }
}

fn periodic(frequency: Duration, members: usize) -> foca::PeriodicParams {
    foca::PeriodicParams { frequency, num_members: NonZeroUsize::new(members).unwrap_or(NonZeroUsize::MIN) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_match_foca_lan() -> Result<(), ConfigError> {
        let config = GossipConfig::default().validate()?;
        let foca = config.foca_config();
        assert_eq!(foca.probe_period, Duration::from_secs(1));
        assert_eq!(foca.probe_rtt, Duration::from_millis(500));
        assert_eq!(foca.suspect_to_down_after, Duration::from_secs(3));
        assert_eq!(foca.max_packet_size.get(), 1400 - ENVELOPE_LEN);
        Ok(())
    }

    #[test]
    fn fast_profile_detects_within_a_second() -> Result<(), ConfigError> {
        let config = GossipConfig::fast("t").validate()?;
        assert!(config.detection_bound() < Duration::from_secs(1), "{:?}", config.detection_bound());
        Ok(())
    }

    #[test]
    fn overrides_win_over_the_profile() {
        let config = GossipConfig { probe_period_ms: Some(250), ..GossipConfig::fast("t") };
        assert_eq!(config.timings().probe_period, Duration::from_millis(250));
        assert_eq!(config.timings().probe_rtt, Duration::from_millis(40));
    }

    #[test]
    fn validate_names_every_bad_field() {
        let config = GossipConfig {
            cluster_id: String::new(),
            max_packet_size: 100,
            probe_period_ms: Some(50),
            probe_rtt_ms: Some(50),
            suspect_to_down_ms: Some(0),
            ..GossipConfig::default()
        };
        let err = config.validate().err().map(|e| e.0.into_iter().map(|i| i.field).collect::<Vec<_>>());
        assert_eq!(err, Some(vec!["cluster_id", "max_packet_size", "suspect_to_down_ms", "probe_rtt_ms"]),);
    }
}
