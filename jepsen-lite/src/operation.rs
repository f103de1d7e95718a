//! A history read back: events paired into [`Operation`]s, one per
//! invocation, with its outcome and interval.
//!
//! Pairing rules (a violation is an error naming the line):
//! - a process has at most one operation outstanding: an `invoke` while one is
//!   open, or a completion with none open, is an error;
//! - a completion has the invocation's `f` (and, for `write`, `cas` and `add`,
//!   its value); an `ok` read, `read_set` or `status` carries its result;
//! - a process's times never go backwards;
//! - an invocation still open at the end of the history is indeterminate
//!   ([`Outcome::Info`] with no completion time).

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use crate::history::{Event, EventType, Op, Workload};

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It happened.
    Ok,
    /// It definitely did not happen.
    Fail,
    /// It may or may not have happened (a timeout, or no completion at all).
    Info,
}

/// One operation: an invocation and its completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// Index in [`History::ops`] (ordered by invocation).
    pub id: usize,
    pub process: u32,
    pub node: String,
    /// The completion's op when there is one (it carries results), else the invocation's.
    pub op: Op,
    pub outcome: Outcome,
    pub invoke_ns: u64,
    /// `None` when the history ended before the operation completed.
    pub complete_ns: Option<u64>,
    /// The completion's `error`.
    pub error: Option<String>,
    /// Index of the invocation in [`History::events`].
    pub invoke_event: usize,
    /// Index of the completion in [`History::events`].
    pub complete_event: Option<usize>,
    /// The register key (0 when the events name none).
    pub key: u32,
    /// The invocation's request id.
    pub request_id: Option<String>,
    /// The invocation's deadline: after it the operation cannot take effect.
    pub deadline_ns: Option<u64>,
}

impl Operation {
    /// `#id p<process> <node> <op> [t0 s..t1 s] <outcome>`, for reports.
    pub fn describe(&self) -> String {
        let end = self.complete_ns.map_or_else(|| "∞".to_string(), secs);
        let outcome = match self.outcome {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
        };
        let key = if self.key == 0 { String::new() } else { format!("k{} ", self.key) };
        format!(
            "#{} p{} {} {}{} [{}..{}] {}",
            self.id,
            self.process,
            self.node,
            key,
            self.op.describe(),
            secs(self.invoke_ns),
            end,
            outcome
        )
    }
}

/// Seconds with millisecond precision: `1.250s`.
pub fn secs(ns: u64) -> String {
    format!("{}.{:03}s", ns / 1_000_000_000, ns % 1_000_000_000 / 1_000_000)
}

/// A run's history: its events as written, and the operations they pair into.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub events: Vec<Event>,
    pub ops: Vec<Operation>,
}

/// A history that does not pair up; `event` indexes the events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {event}: {message}")]
pub struct PairingError {
    pub event: usize,
    pub message: String,
}

/// A history file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Line { path: String, line: usize, message: String },
}

impl History {
    /// Pairs events into operations.
    pub fn from_events(events: Vec<Event>) -> Result<Self, PairingError> {
        let ops = pair(&events)?;
        Ok(History { events, ops })
    }

    /// Reads and pairs `history.jsonl`. Blank lines are skipped; errors name the line.
    pub fn read_file(path: &Path) -> Result<Self, HistoryError> {
        let name = path.display().to_string();
        let file =
            std::fs::File::open(path).map_err(|source| HistoryError::Io { path: name.clone(), source })?;
        History::parse(std::io::BufReader::new(file), &name)
    }

    /// Reads and pairs JSON lines; `name` is used in errors.
    pub fn parse(reader: impl BufRead, name: &str) -> Result<Self, HistoryError> {
        let mut events = Vec::new();
        let mut lines = Vec::new();
        for (i, line) in reader.lines().enumerate() {
            let line = line.map_err(|source| HistoryError::Io { path: name.to_string(), source })?;
            if line.trim().is_empty() {
                continue;
            }
            let event = serde_json::from_str::<Event>(&line).map_err(|e| {
                // serde_json counts lines within the one line it was given: keep the column only.
                let message = e.to_string();
                let suffix = format!(" at line {} column {}", e.line(), e.column());
                let message = match message.strip_suffix(&suffix) {
                    Some(m) => format!("{m} (column {})", e.column()),
                    None => message,
                };
                HistoryError::Line { path: name.to_string(), line: i + 1, message }
            })?;
            events.push(event);
            lines.push(i + 1);
        }
        History::from_events(events).map_err(|e| HistoryError::Line {
            path: name.to_string(),
            line: lines.get(e.event).copied().unwrap_or(0),
            message: e.message,
        })
    }

    /// The operations of one workload.
    pub fn ops_of(&self, workload: Workload) -> impl Iterator<Item = &Operation> {
        self.ops.iter().filter(move |o| o.op.workload() == workload)
    }

    /// True when the history has an operation of this workload.
    pub fn has(&self, workload: Workload) -> bool {
        self.ops_of(workload).next().is_some()
    }

    /// The time of the last event.
    pub fn end_ns(&self) -> u64 {
        self.events.iter().map(|e| e.time_ns).max().unwrap_or(0)
    }
}

fn pair(events: &[Event]) -> Result<Vec<Operation>, PairingError> {
    let mut ops: Vec<Operation> = Vec::new();
    // process -> (index of its open operation, time of its last event)
    let mut open: HashMap<u32, usize> = HashMap::new();
    let mut last_time: HashMap<u32, u64> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let err = |message: String| PairingError { event: i, message };
        if let Some(&t) = last_time.get(&e.process)
            && e.time_ns < t
        {
            return Err(err(format!(
                "process {} goes back in time: time_ns {} after {}",
                e.process, e.time_ns, t
            )));
        }
        last_time.insert(e.process, e.time_ns);
        if e.kind == EventType::Invoke {
            if let Some(&o) = open.get(&e.process) {
                return Err(err(format!(
                    "process {} invokes {} while {} (event {}) is still open",
                    e.process,
                    e.op.name(),
                    ops[o].op.name(),
                    ops[o].invoke_event
                )));
            }
            open.insert(e.process, ops.len());
            ops.push(Operation {
                id: ops.len(),
                process: e.process,
                node: e.node.clone(),
                op: e.op.clone(),
                outcome: Outcome::Info,
                invoke_ns: e.time_ns,
                complete_ns: None,
                error: None,
                invoke_event: i,
                complete_event: None,
                key: e.key.unwrap_or(0),
                request_id: e.request_id.clone(),
                deadline_ns: e.deadline_ns,
            });
            continue;
        }
        let Some(o) = open.remove(&e.process) else {
            return Err(err(format!("process {} completes {} with nothing open", e.process, e.op.name())));
        };
        let op = &mut ops[o];
        check_completion(&op.op, e).map_err(err)?;
        if e.key.unwrap_or(0) != op.key {
            return Err(err(format!(
                "process {} completes {} of key {} but invoked it on key {}",
                e.process,
                e.op.name(),
                e.key.unwrap_or(0),
                op.key
            )));
        }
        op.outcome = match e.kind {
            EventType::Ok => Outcome::Ok,
            EventType::Fail => Outcome::Fail,
            _ => Outcome::Info,
        };
        if e.kind == EventType::Ok {
            op.op = e.op.clone();
        }
        op.complete_ns = Some(e.time_ns);
        op.error = e.error.clone();
        op.complete_event = Some(i);
    }
    Ok(ops)
}

/// Checks that completion `e` matches the invocation `invoked`.
fn check_completion(invoked: &Op, e: &Event) -> Result<(), String> {
    if std::mem::discriminant(invoked) != std::mem::discriminant(&e.op) {
        return Err(format!(
            "process {} completes {} but invoked {}",
            e.process,
            e.op.name(),
            invoked.name()
        ));
    }
    let same_value = match (invoked, &e.op) {
        (Op::Write(a), Op::Write(b)) => a == b,
        (Op::Cas(a, b), Op::Cas(c, d)) => (a, b) == (c, d),
        (Op::Add(a), Op::Add(b)) => a == b,
        (Op::ReadBlocking(a, b, _), Op::ReadBlocking(c, d, _)) => (a, b) == (c, d),
        _ => true,
    };
    if !same_value {
        return Err(format!(
            "process {} completes {:?} but invoked {:?}: the value must not change",
            e.process, e.op, invoked
        ));
    }
    let missing_result = e.kind == EventType::Ok
        && matches!(
            e.op,
            Op::Read(None)
                | Op::ReadSet(None)
                | Op::Status(None)
                | Op::ReadStale(None)
                | Op::ReadBlocking(_, _, None)
        );
    if missing_result {
        return Err(format!("an ok {} must carry the value it read", e.op.name()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<History, HistoryError> {
        History::parse(text.as_bytes(), "h.jsonl")
    }

    fn line_error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("expected an error for {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn pairs_invocations_with_completions_per_process() -> Result<(), PairingError> {
        let h = History::from_events(vec![
            Event::invoke(0, "n1", Op::Write(1), 10),
            Event::invoke(1, "n2", Op::Read(None), 11),
            Event::ok(1, "n2", Op::Read(Some(1)), 20),
            Event::fail(0, "n1", Op::Write(1), 30, "409"),
            Event::invoke(0, "n3", Op::Cas(1, 2), 40),
        ])?;
        assert_eq!(h.ops.len(), 3);
        assert_eq!((h.ops[0].outcome, h.ops[0].complete_ns), (Outcome::Fail, Some(30)));
        assert_eq!(h.ops[0].error.as_deref(), Some("409"));
        assert_eq!(h.ops[1].op, Op::Read(Some(1)), "the completion's value");
        assert_eq!((h.ops[2].outcome, h.ops[2].complete_ns), (Outcome::Info, None), "open at the end");
        Ok(())
    }

    #[test]
    fn errors_name_the_line() {
        let text = "\n{\"type\":\"invoke\",\"process\":0,\"node\":\"n1\",\"f\":\"write\",\"value\":1,\"time_ns\":0}\n\
                    {\"type\":\"ok\",\"process\":0,\"node\":\"n1\",\"f\":\"nope\",\"value\":1,\"time_ns\":1}\n";
        let e = line_error(text);
        assert!(e.starts_with("h.jsonl:3: "), "{e}");
        assert!(e.contains("nope") && e.ends_with("(column 70)"), "{e}");
        assert!(line_error("{not json\n").starts_with("h.jsonl:1: "));
    }

    #[test]
    fn malformed_pairings_are_rejected_with_their_line() {
        let inv = |p: u32, t: u64| Event::invoke(p, "n1", Op::Write(1), t).to_json_line();
        let ok = |p: u32, t: u64| Event::ok(p, "n1", Op::Write(1), t).to_json_line();
        let e = line_error(&format!("{}\n{}\n", inv(0, 0), inv(0, 1)));
        assert!(e.starts_with("h.jsonl:2: ") && e.contains("still open"), "{e}");
        let e = line_error(&format!("{}\n", ok(0, 0)));
        assert!(e.starts_with("h.jsonl:1: ") && e.contains("nothing open"), "{e}");
        let e = line_error(&format!("{}\n{}\n", inv(0, 5), ok(0, 4)));
        assert!(e.starts_with("h.jsonl:2: ") && e.contains("back in time"), "{e}");
        let read = Event::ok(0, "n1", Op::Read(None), 6).to_json_line();
        let e =
            line_error(&format!("{}\n{}\n", Event::invoke(0, "n1", Op::Read(None), 5).to_json_line(), read));
        assert!(e.contains("must carry the value"), "{e}");
        let cas = Event::ok(0, "n1", Op::Cas(1, 3), 6).to_json_line();
        let e =
            line_error(&format!("{}\n{}\n", Event::invoke(0, "n1", Op::Cas(1, 2), 5).to_json_line(), cas));
        assert!(e.contains("must not change"), "{e}");
        let blocking = |after, op| {
            Event::invoke(0, "n1", Op::ReadBlocking(after, 500, None), 5).to_json_line()
                + "\n"
                + &Event::ok(0, "n1", op, 6).to_json_line()
        };
        let e = line_error(&blocking(3, Op::ReadBlocking(4, 500, Some((1, 5, 5)))));
        assert!(e.contains("must not change"), "{e}");
        let e = line_error(&blocking(3, Op::ReadBlocking(3, 500, None)));
        assert!(e.contains("must carry the value"), "{e}");
        let other = Event::ok(0, "n1", Op::Add(1), 6).to_json_line();
        let e = line_error(&format!("{}\n{}\n", inv(0, 5), other));
        assert!(e.contains("completes add but invoked write"), "{e}");
    }

    #[test]
    fn a_completion_keeps_its_invocations_key() {
        let inv = Event::invoke(0, "n1", Op::Write(1), 1).with_key(3).with_deadline(50);
        let h = History::from_events(vec![inv.clone(), Event::ok(0, "n1", Op::Write(1), 2).with_key(3)])
            .expect("pairs");
        assert_eq!((h.ops[0].key, h.ops[0].deadline_ns), (3, Some(50)));
        let e =
            History::from_events(vec![inv, Event::ok(0, "n1", Op::Write(1), 2)]).expect_err("key differs");
        assert!(e.message.contains("key 0 but invoked it on key 3"), "{e}");
    }

    #[test]
    fn describes_operations_for_humans() -> Result<(), PairingError> {
        let h = History::from_events(vec![
            Event::invoke(2, "n3", Op::Cas(4, 7), 1_250_000_000),
            Event::ok(2, "n3", Op::Cas(4, 7), 1_300_000_000),
        ])?;
        assert_eq!(h.ops[0].describe(), "#0 p2 n3 cas 4→7 [1.250s..1.300s] ok");
        Ok(())
    }
}
