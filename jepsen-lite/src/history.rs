//! The event model of a run: one [`Event`] per line of `history.jsonl`.
//!
//! Every operation a client (or the nemesis, or the status sampler) performs
//! is written twice: an `invoke` event when it starts, then one completion
//! when it ends:
//! - `ok`: it happened, and the value is its result;
//! - `fail`: it definitely did not happen (a 409, a refused connection);
//! - `info`: indeterminate, it may or may not have happened (a timeout, a 503
//!   after which the write may still commit).
//!
//! ```json
//! {"type":"invoke","process":3,"node":"n2","f":"cas","value":[4,7],"time_ns":1250000}
//! {"type":"ok","process":3,"node":"n2","f":"cas","value":[4,7],"time_ns":1910000}
//! ```
//!
//! `time_ns` is monotonic time since the start of the run, `node` the ferryd
//! the client talked to (or `"nemesis"`), `error` an optional reason on a
//! `fail` or `info`. A process has at most one operation outstanding; the
//! pairing of invocations with completions lives in [`crate::operation`].
//!
//! New operations are new variants of [`Op`]: the JSON tag `f` is the variant
//! name in snake_case, and `value` its payload.

use std::io::{self, Write};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What an event says about its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// The operation starts.
    Invoke,
    /// It happened.
    Ok,
    /// It definitely did not happen.
    Fail,
    /// Indeterminate: it may have happened, at any time after its invocation, or never.
    Info,
}

/// An operation: its function (`f`) and its `value`.
///
/// Values that are results (a read's value, a sample) are `null` in the
/// invocation and filled in by an `ok` completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "f", content = "value", rename_all = "snake_case")]
pub enum Op {
    /// Register workload: a linearizable read of the backend weight.
    Read(Option<i64>),
    /// Register workload: an unconditional write of the weight.
    Write(i64),
    /// Register workload: compare-and-set `[expected, new]`: the conditional
    /// write (`?cas=<revision>`) after a read saw `expected`.
    Cas(i64, i64),
    /// Register workload: a stale read (`?consistency=stale`) of the node's
    /// applied state; on `ok`, `[value, index, revision]`: the value, the
    /// node's config index (`X-Ferry-Index`) and the route's revision.
    ReadStale(Option<(i64, u64, u64)>),
    /// Register workload: a blocking query `?index=N&wait=W` (stale):
    /// `[N, W in ms, result]`, the result `[value, index, revision]` on `ok`.
    ReadBlocking(u64, u64, Option<(i64, u64, u64)>),
    /// Set workload: add an element (a unique backend id).
    Add(u64),
    /// Set workload: read every element (`f` is `read_set`).
    ReadSet(Option<Vec<u64>>),
    /// Traffic workload: one TCP connection through a node's route port; the
    /// value of an `ok` is the number of bytes echoed and verified.
    Connect(Option<u64>),
    /// Nemesis: a fault starts, e.g. `"partition-random-halves {n1,n2} {n3}"`.
    Start(String),
    /// Nemesis: the fault is healed.
    Stop(String),
    /// Status sampler: `GET /v1/status` on `node`.
    Status(Option<StatusSample>),
}

/// The workload an [`Op`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    Register,
    Set,
    Traffic,
    Nemesis,
    Status,
}

/// One node's answer to `GET /v1/status`, reduced to what the checkers use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusSample {
    /// The node's name.
    pub node: String,
    /// Its Raft node id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u64>,
    /// `leader`, `follower`, `candidate`, `learner`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The Raft term it is in.
    pub term: u64,
    /// The leader it knows for that term.
    pub leader_id: Option<u64>,
    /// The last log index it applied.
    pub applied_index: Option<u64>,
    /// A digest of its routing table (the routes it serves), computed by the sampler.
    #[serde(default)]
    pub table_digest: Option<String>,
}

/// One line of `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The client process: one logical thread, at most one operation outstanding.
    pub process: u32,
    /// The ferryd the process talked to, or `"nemesis"`.
    pub node: String,
    #[serde(flatten)]
    pub op: Op,
    /// Monotonic nanoseconds since the start of the run.
    pub time_ns: u64,
    /// Why a `fail` or `info` ended that way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Register workload: which register (absent: key 0). Every key is an
    /// independent register; a completion carries its invocation's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<u32>,
    /// The request id the client sent (`X-Ferry-Request-Id`, 32 hex digits); retries of one
    /// logical write carry the same id and must apply at most once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// On an invocation: the run time after which the server promises the
    /// operation can no longer take effect (invocation + the request
    /// timeout). An `info` write must take effect before it or never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ns: Option<u64>,
}

// === impl Op ===

impl Op {
    /// The workload this operation belongs to.
    pub fn workload(&self) -> Workload {
        match self {
            Op::Read(_) | Op::Write(_) | Op::Cas(..) | Op::ReadStale(_) | Op::ReadBlocking(..) => {
                Workload::Register
            }
            Op::Add(_) | Op::ReadSet(_) => Workload::Set,
            Op::Connect(_) => Workload::Traffic,
            Op::Start(_) | Op::Stop(_) => Workload::Nemesis,
            Op::Status(_) => Workload::Status,
        }
    }

    /// The JSON name of the function, as in `"f"`.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Read(_) => "read",
            Op::Write(_) => "write",
            Op::Cas(..) => "cas",
            Op::ReadStale(_) => "read_stale",
            Op::ReadBlocking(..) => "read_blocking",
            Op::Add(_) => "add",
            Op::ReadSet(_) => "read_set",
            Op::Connect(_) => "connect",
            Op::Start(_) => "start",
            Op::Stop(_) => "stop",
            Op::Status(_) => "status",
        }
    }

    /// A short human-readable form: `cas 4→7`, `read → 5`, `add 12`.
    pub fn describe(&self) -> String {
        fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
            v.as_ref().map_or_else(|| "?".to_string(), ToString::to_string)
        }
        match self {
            Op::Read(v) => format!("read → {}", opt(v)),
            Op::Write(v) => format!("write {v}"),
            Op::Cas(from, to) => format!("cas {from}→{to}"),
            Op::ReadStale(None) => "read_stale → ?".to_string(),
            Op::ReadStale(Some((v, index, revision))) => {
                format!("read_stale → {v} (index {index}, revision {revision})")
            }
            Op::ReadBlocking(after, wait, None) => format!("read_blocking index>{after} wait {wait}ms → ?"),
            Op::ReadBlocking(after, wait, Some((v, index, revision))) => {
                format!(
                    "read_blocking index>{after} wait {wait}ms → {v} (index {index}, revision {revision})"
                )
            }
            Op::Add(e) => format!("add {e}"),
            Op::ReadSet(None) => "read_set → ?".to_string(),
            Op::ReadSet(Some(s)) => format!("read_set → {} elements", s.len()),
            Op::Connect(bytes) => format!("connect ({} bytes)", opt(bytes)),
            Op::Start(d) => format!("start {d}"),
            Op::Stop(d) => format!("stop {d}"),
            Op::Status(None) => "status → ?".to_string(),
            Op::Status(Some(s)) => format!(
                "status {}: term {} leader {} applied {}",
                s.node,
                s.term,
                opt(&s.leader_id),
                opt(&s.applied_index)
            ),
        }
    }
}

// === impl Event ===

impl Event {
    fn new(kind: EventType, process: u32, node: &str, op: Op, time_ns: u64) -> Self {
        Event {
            kind,
            process,
            node: node.to_string(),
            op,
            time_ns,
            error: None,
            key: None,
            request_id: None,
            deadline_ns: None,
        }
    }

    /// This event for register `key` (key 0 is written as no key).
    pub fn with_key(mut self, key: u32) -> Self {
        self.key = (key != 0).then_some(key);
        self
    }

    /// This event with the request id the client sent.
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// This invocation with the deadline after which it cannot take effect.
    pub fn with_deadline(mut self, deadline_ns: u64) -> Self {
        self.deadline_ns = Some(deadline_ns);
        self
    }

    /// An `invoke` event.
    pub fn invoke(process: u32, node: &str, op: Op, time_ns: u64) -> Self {
        Event::new(EventType::Invoke, process, node, op, time_ns)
    }

    /// An `ok` completion.
    pub fn ok(process: u32, node: &str, op: Op, time_ns: u64) -> Self {
        Event::new(EventType::Ok, process, node, op, time_ns)
    }

    /// A `fail` completion: the operation definitely did not happen.
    pub fn fail(process: u32, node: &str, op: Op, time_ns: u64, error: &str) -> Self {
        Event { error: Some(error.to_string()), ..Event::new(EventType::Fail, process, node, op, time_ns) }
    }

    /// An `info` completion: indeterminate.
    pub fn info(process: u32, node: &str, op: Op, time_ns: u64, error: &str) -> Self {
        Event { error: Some(error.to_string()), ..Event::new(EventType::Info, process, node, op, time_ns) }
    }

    /// The JSON line, without its newline.
    pub fn to_json_line(&self) -> String {
        // An Event holds only strings, integers and options: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"unserializable event: {e}\"}}"))
    }
}

/// Monotonic time since the start of a run, for `time_ns`.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    start: Instant,
}

impl RunClock {
    /// Starts the clock now.
    pub fn start() -> Self {
        RunClock { start: Instant::now() }
    }

    /// Nanoseconds since [`RunClock::start`].
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Writes events as JSON lines, one `write` per line so that a crash leaves
/// whole lines behind.
#[derive(Debug)]
pub struct HistoryWriter<W: Write> {
    out: W,
}

impl<W: Write> HistoryWriter<W> {
    pub fn new(out: W) -> Self {
        HistoryWriter { out }
    }

    /// Appends one event.
    pub fn append(&mut self, event: &Event) -> io::Result<()> {
        let mut line = event.to_json_line();
        line.push('\n');
        self.out.write_all(line.as_bytes())
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(event: &Event) -> Event {
        let line = event.to_json_line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn the_wire_format_is_flat() {
        let e = Event::invoke(3, "n2", Op::Cas(4, 7), 1_250_000);
        assert_eq!(
            e.to_json_line(),
            r#"{"type":"invoke","process":3,"node":"n2","f":"cas","value":[4,7],"time_ns":1250000}"#
        );
        let e = Event::info(1, "n1", Op::Read(None), 9, "timeout");
        assert_eq!(
            e.to_json_line(),
            r#"{"type":"info","process":1,"node":"n1","f":"read","value":null,"time_ns":9,"error":"timeout"}"#
        );
    }

    #[test]
    fn every_op_roundtrips() {
        let sample = StatusSample {
            node: "n1".into(),
            node_id: Some(7),
            role: Some("leader".into()),
            term: 3,
            leader_id: Some(7),
            applied_index: Some(42),
            table_digest: Some("ab12".into()),
        };
        let ops = [
            Op::Read(Some(5)),
            Op::Read(None),
            Op::Write(-1),
            Op::Cas(1, 2),
            Op::ReadStale(Some((4, 20, 18))),
            Op::ReadStale(None),
            Op::ReadBlocking(19, 500, Some((4, 20, 18))),
            Op::ReadBlocking(19, 500, None),
            Op::Add(17),
            Op::ReadSet(Some(vec![1, 2, 3])),
            Op::ReadSet(None),
            Op::Connect(Some(4096)),
            Op::Connect(None),
            Op::Start("partition-random-halves {n1} {n2,n3}".into()),
            Op::Stop("heal".into()),
            Op::Status(Some(sample)),
            Op::Status(None),
        ];
        for op in ops {
            let e = Event::ok(0, "n1", op, 5);
            assert_eq!(roundtrip(&e), e);
        }
    }

    #[test]
    fn key_request_id_and_deadline_are_optional_and_roundtrip() {
        let e = Event::invoke(3, "n2", Op::Write(9), 10).with_key(4).with_request_id("r-1").with_deadline(99);
        assert_eq!(
            e.to_json_line(),
            r#"{"type":"invoke","process":3,"node":"n2","f":"write","value":9,"time_ns":10,"key":4,"request_id":"r-1","deadline_ns":99}"#
        );
        assert_eq!(roundtrip(&e), e);
        assert_eq!(Event::invoke(3, "n2", Op::Write(9), 10).with_key(0).key, None, "key 0 is the default");
    }

    #[test]
    fn names_match_the_wire_tag() {
        for op in [
            Op::ReadSet(None),
            Op::Cas(0, 1),
            Op::Status(None),
            Op::Connect(None),
            Op::ReadStale(None),
            Op::ReadBlocking(1, 2, None),
        ] {
            let v = serde_json::to_value(Event::invoke(0, "n1", op.clone(), 0)).expect("serializes");
            assert_eq!(v["f"], op.name());
        }
    }

    #[test]
    fn unknown_functions_and_types_are_rejected() {
        let bad_f = r#"{"type":"invoke","process":0,"node":"n1","f":"increment","value":1,"time_ns":0}"#;
        assert!(serde_json::from_str::<Event>(bad_f).is_err());
        let bad_type = r#"{"type":"done","process":0,"node":"n1","f":"write","value":1,"time_ns":0}"#;
        assert!(serde_json::from_str::<Event>(bad_type).is_err());
        let bad_value = r#"{"type":"invoke","process":0,"node":"n1","f":"cas","value":3,"time_ns":0}"#;
        assert!(serde_json::from_str::<Event>(bad_value).is_err());
    }

    #[test]
    fn the_writer_writes_one_line_per_event() -> std::io::Result<()> {
        let mut w = HistoryWriter::new(Vec::new());
        w.append(&Event::invoke(0, "n1", Op::Write(1), 1))?;
        w.append(&Event::ok(0, "n1", Op::Write(1), 2))?;
        let bytes = w.finish()?;
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with('\n'));
        Ok(())
    }
}
