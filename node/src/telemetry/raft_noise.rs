//! openraft's log lines that ferry hides by default, and why.
//!
//! openraft 0.9 logs several WARN and ERROR lines for every failed RPC: a
//! leader with two peers down wrote about 50 lines a second (an
//! `error replication to target`, an `RPCError`, an `update progress error`
//! and a `heartbeat error` per heartbeat and peer), burying everything else.
//! Its INFO level is internal chatter too: every vote request, and a state
//! dump of one to three thousand characters when Raft starts.
//!
//! So, unless `RUST_LOG` names `openraft` (then it is obeyed as written):
//! - openraft logs WARN and above only ([`DIRECTIVE`]);
//! - the per-RPC failure lines and the stale-answer notices of elections and
//!   membership changes ([`NOISE`]) are dropped. ferry logs one
//!   line when a peer becomes unreachable, one when it answers again, and a
//!   reminder every 30 s ([`crate::cluster::contacts`]); a new leader is
//!   logged by `control::raft_watch`.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata};
use tracing_subscriber::layer::{Context, Filter};

/// The directive added to the log filter by default.
pub const DIRECTIVE: &str = "openraft=warn";

/// How a line's message is matched.
#[derive(Debug, Clone, Copy)]
enum Match {
    Exact,
    Prefix,
    Contains,
}

/// openraft's lines per failed RPC: (target, level, how, text).
const NOISE: [(&str, Level, Match, &str); 10] = [
    ("openraft::replication", Level::WARN, Match::Prefix, "error replication to target"),
    ("openraft::replication", Level::ERROR, Match::Exact, "RPCError"),
    ("openraft::replication", Level::WARN, Match::Contains, "backoff mode: drain events"),
    ("openraft::engine::handler::replication_handler", Level::WARN, Match::Prefix, "update progress error"),
    ("openraft::engine::handler::replication_handler", Level::WARN, Match::Prefix, "heartbeat error"),
    // A vote or a leadership check to an unreachable peer.
    ("openraft::core::raft_core", Level::ERROR, Match::Exact, "timeout"),
    ("openraft::core::raft_core", Level::ERROR, Match::Prefix, "while requesting vote"),
    ("openraft::core::raft_core", Level::ERROR, Match::Prefix, "timeout while confirming leadership"),
    // An answer that arrives after the election, or the membership, it was
    // sent under changed: openraft ignores it, as it should.
    (
        "openraft::core::raft_core",
        Level::WARN,
        Match::Prefix,
        "A message will be ignored because vote changed",
    ),
    ("openraft::core::raft_core", Level::WARN, Match::Prefix, "membership_log_id changed"),
];

/// Whether ferry's defaults apply: `RUST_LOG` (its value, if set) does not
/// name openraft.
pub fn applies(rust_log: Option<&str>) -> bool {
    !rust_log.is_some_and(|v| v.contains("openraft"))
}

/// Drops the lines of [`NOISE`]; a per-layer filter for the log output.
#[derive(Debug, Clone, Copy, Default)]
pub struct RaftNoise;

impl<S> Filter<S> for RaftNoise {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    /// Only openraft's WARN and ERROR callsites can be noise: every other
    /// callsite is always enabled here, so its interest stays cached and
    /// its events never reach [`Filter::event_enabled`] (the default,
    /// "sometimes", would ask at every event of every callsite).
    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if could_be_noise(meta) { Interest::sometimes() } else { Interest::always() }
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        !is_noise(event)
    }
}

fn is_noise(event: &Event<'_>) -> bool {
    let meta = event.metadata();
    if !could_be_noise(meta) {
        return false;
    }
    let (target, level) = (meta.target(), *meta.level());
    let candidates: Vec<_> = NOISE.iter().filter(|(t, l, ..)| *t == target && *l == level).collect();
    if candidates.is_empty() {
        return false;
    }
    let mut message = Message(String::new());
    event.record(&mut message);
    candidates.iter().any(|(_, _, how, text)| matches(&message.0, *how, text))
}

/// Whether events of this callsite may be in [`NOISE`].
fn could_be_noise(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with("openraft") && *meta.level() <= Level::WARN
}

fn matches(message: &str, how: Match, text: &str) -> bool {
    match how {
        Match::Exact => message == text,
        Match::Prefix => message.starts_with(text),
        Match::Contains => message.contains(text),
    }
}

/// The `message` field of an event.
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.0);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::telemetry::log_capture::LogCapture;

    #[test]
    fn per_rpc_failures_are_dropped_and_the_rest_kept() {
        let buf = LogCapture::default();
        let writer = buf.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_filter(RaftNoise);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            // What openraft's replication logs per failed heartbeat.
            tracing::warn!(target: "openraft::replication", error = "refused", "error replication to target={}", 7);
            tracing::error!(target: "openraft::replication", err = "refused", "RPCError");
            tracing::warn!(target: "openraft::replication", "{} backoff mode: drain events without processing them", "f");
            tracing::warn!(target: "openraft::engine::handler::replication_handler", result = "x", "update progress error");
            tracing::warn!(target: "openraft::engine::handler::replication_handler", "heartbeat error: {}, no update", "x");
            tracing::error!(target: "openraft::core::raft_core", target_id = 3, "timeout");
            tracing::error!(target: "openraft::core::raft_core", "while requesting vote");
            // Kept: a storage error in replication (same message, ERROR),
            // other openraft lines, and every line of ferry's own.
            tracing::error!(target: "openraft::replication", "error replication to target={}", 7);
            tracing::error!(target: "openraft::core::raft_core", "quit RaftCore::main on error");
            tracing::warn!(target: "ferry_node::cluster::contacts", "RPCError");
        });
        let lines = buf.lines();
        let text = lines.join("\n");
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("ERROR") && lines[0].contains("error replication to target=7"), "{text}");
        assert!(lines[1].contains("quit RaftCore::main on error"), "{text}");
        assert!(lines[2].contains("ferry_node::cluster::contacts"), "{text}");
    }

    #[test]
    fn rust_log_naming_openraft_turns_the_defaults_off() {
        assert!(applies(None));
        assert!(applies(Some("info")));
        assert!(applies(Some("debug,ferry_node=trace")));
        assert!(!applies(Some("info,openraft=info")));
        assert!(!applies(Some("openraft::replication=debug")));
    }
}
