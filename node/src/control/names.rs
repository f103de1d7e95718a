//! What this node knows of each backend host name it resolves: the answer
//! in use, the error of the last lookup, the failures in a row, and when to
//! look the name up next. Pure: it is fed lookup results and the time, and
//! says whether the routing table must change. The publisher owns it and
//! runs the lookups (`control::resolver`).
//!
//! # Which names
//! Those of backends this node connects to itself: unpinned, or pinned to
//! this node. A backend pinned to another node is resolved by that node
//! (its owner connects to it), never here.
//!
//! # The hold rule
//! A name that has resolved keeps its last good answer through failed
//! lookups (a timeout, a server failure, an unknown name) until
//! [`HOLD_FAILURES`] fail in a row: 30 s at the default interval, HAProxy's
//! default `hold nx`, `hold timeout` and `hold other`. A resolver blip does
//! not take a backend out; a name that is gone for good stops being used
//! before its old address is handed to something else. A name that has
//! never resolved has no address. A name without addresses makes its
//! backend unhealthy, never the route invalid.
//!
//! # When the table changes
//! Only when a name's addresses (their order included) or its error change.
//! The same answer, or the same error again, changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use ferry_client::{BackendAddr, HostPort, RouteSpec};

use super::resolver::ResolveError;
use crate::dataplane::peers::PeerDirectory;
use crate::dataplane::table::Resolved;

/// Failed lookups in a row after which a name that had resolved loses its
/// last good answer.
pub const HOLD_FAILURES: u32 = 3;

#[derive(Debug, Clone)]
struct Entry {
    resolved: Resolved,
    /// Failed lookups in a row.
    failures: u32,
    /// When the next lookup is due (clock ms).
    due_ms: u64,
    /// A lookup is running.
    in_flight: bool,
}

/// Every name this node resolves; see the module doc.
#[derive(Debug, Default)]
pub struct Names {
    entries: BTreeMap<HostPort, Entry>,
}

/// The host names (with ports) of the backends of `specs` that this node
/// connects to itself (see the module doc).
pub fn wanted<'a>(
    specs: impl IntoIterator<Item = &'a RouteSpec>,
    peers: &PeerDirectory,
) -> BTreeSet<HostPort> {
    specs
        .into_iter()
        .flat_map(|s| s.backends.iter())
        .filter(|b| peers.is_local(b.node.as_deref()))
        .filter_map(|b| match BackendAddr::parse(&b.addr) {
            Ok(BackendAddr::Name(name)) => Some(name),
            _ => None,
        })
        .collect()
}

impl Names {
    /// Starts tracking the names of `wanted` not yet known, marked as being
    /// looked up (the caller looks them up now); returns them.
    pub fn start_new(&mut self, wanted: &BTreeSet<HostPort>) -> Vec<HostPort> {
        let new: Vec<HostPort> = wanted.iter().filter(|n| !self.entries.contains_key(*n)).cloned().collect();
        for name in &new {
            let entry = Entry { resolved: Resolved::default(), failures: 0, due_ms: 0, in_flight: true };
            self.entries.insert(name.clone(), entry);
        }
        new
    }

    /// Forgets every name not in `wanted`; a lookup of one still running
    /// will be ignored.
    pub fn retain(&mut self, wanted: &BTreeSet<HostPort>) {
        self.entries.retain(|name, _| wanted.contains(name));
    }

    /// Records a lookup of `name` that ended at `now_ms`, applying the hold
    /// rule; the next is due `interval_ms` later. True when the addresses
    /// or the error changed (the table must be rebuilt). A name no longer
    /// tracked is ignored.
    pub fn record(
        &mut self,
        name: &HostPort,
        result: Result<Vec<SocketAddr>, ResolveError>,
        now_ms: u64,
        interval_ms: u64,
    ) -> bool {
        let Some(entry) = self.entries.get_mut(name) else { return false };
        let before = entry.resolved.clone();
        match result {
            Ok(addrs) => {
                entry.failures = 0;
                entry.resolved = Resolved { addrs: Arc::from(addrs), error: None };
            }
            Err(e) => {
                entry.failures = entry.failures.saturating_add(1);
                let message = e.to_string();
                if entry.resolved.error.as_deref() != Some(message.as_str()) {
                    entry.resolved.error = Some(Arc::from(message));
                }
                if entry.failures >= HOLD_FAILURES {
                    entry.resolved.addrs = Arc::default();
                }
            }
        }
        entry.in_flight = false;
        entry.due_ms = now_ms.saturating_add(interval_ms);
        entry.resolved != before
    }

    /// The names due at `now_ms` and not being looked up, now marked as
    /// being looked up.
    pub fn start_due(&mut self, now_ms: u64) -> Vec<HostPort> {
        let mut due = Vec::new();
        for (name, entry) in &mut self.entries {
            if !entry.in_flight && entry.due_ms <= now_ms {
                entry.in_flight = true;
                due.push(name.clone());
            }
        }
        due
    }

    /// When the next lookup is due (clock ms), if any name waits for one.
    pub fn next_due(&self) -> Option<u64> {
        self.entries.values().filter(|e| !e.in_flight).map(|e| e.due_ms).min()
    }

    /// What `name` resolves to now; nothing (and no error) for a name not
    /// tracked.
    pub fn resolved(&self, name: &HostPort) -> Resolved {
        self.entries.get(name).map(|e| e.resolved.clone()).unwrap_or_default()
    }

    /// Number of names tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no name is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(host: &str) -> HostPort {
        HostPort { host: host.into(), port: 80 }
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|s| s.parse().expect("addr")).collect()
    }

    fn set(names: &[&str]) -> BTreeSet<HostPort> {
        names.iter().map(|n| name(n)).collect()
    }

    const FAIL: ResolveError = ResolveError::Timeout(2_000);

    #[test]
    fn a_good_answer_is_held_through_fewer_than_hold_failures() {
        let mut names = Names::default();
        let db = name("db");
        assert_eq!(names.start_new(&set(&["db"])), vec![db.clone()]);
        assert!(names.record(&db, Ok(addrs(&["10.0.0.1:80"])), 0, 10), "first answer");
        assert!(!names.record(&db, Ok(addrs(&["10.0.0.1:80"])), 10, 10), "the same answer");
        // A failure shows its error and keeps the addresses ...
        assert!(names.record(&db, Err(FAIL), 20, 10), "the error appears");
        assert_eq!(names.resolved(&db).addrs.as_ref(), addrs(&["10.0.0.1:80"]));
        assert_eq!(names.resolved(&db).error.as_deref(), Some("no answer within 2000 ms"));
        assert!(!names.record(&db, Err(FAIL), 30, 10), "the same error again");
        // ... until HOLD_FAILURES in a row.
        assert!(names.record(&db, Err(FAIL), 40, 10), "held no longer");
        assert!(names.resolved(&db).addrs.is_empty());
        // A success brings it back and clears the error.
        assert!(names.record(&db, Ok(addrs(&["10.0.0.2:80"])), 50, 10));
        assert_eq!(names.resolved(&db), Resolved { addrs: Arc::from(addrs(&["10.0.0.2:80"])), error: None });
        // A success resets the count.
        for t in [60, 70] {
            names.record(&db, Err(FAIL), t, 10);
        }
        names.record(&db, Ok(addrs(&["10.0.0.2:80"])), 80, 10);
        names.record(&db, Err(FAIL), 90, 10);
        assert!(!names.resolved(&db).addrs.is_empty());
    }

    #[test]
    fn a_name_that_never_resolved_has_no_address_and_says_why() {
        let mut names = Names::default();
        let nx = name("nx");
        names.start_new(&set(&["nx"]));
        let err = ResolveError::Lookup("Name or service not known".into());
        assert!(names.record(&nx, Err(err), 0, 10));
        let r = names.resolved(&nx);
        assert!(r.addrs.is_empty());
        assert_eq!(r.error.as_deref(), Some("Name or service not known"));
    }

    #[test]
    fn an_order_change_is_a_change() {
        let mut names = Names::default();
        let db = name("db");
        names.start_new(&set(&["db"]));
        names.record(&db, Ok(addrs(&["[::1]:80", "127.0.0.1:80"])), 0, 10);
        assert!(names.record(&db, Ok(addrs(&["127.0.0.1:80", "[::1]:80"])), 10, 10));
    }

    #[test]
    fn due_names_are_started_once_and_rescheduled_when_recorded() {
        let mut names = Names::default();
        let (a, b) = (name("a"), name("b"));
        names.start_new(&set(&["a"]));
        assert_eq!(names.next_due(), None, "being looked up");
        names.record(&a, Ok(addrs(&["10.0.0.1:80"])), 0, 100);
        names.start_new(&set(&["a", "b"]));
        names.record(&b, Ok(addrs(&["10.0.0.2:80"])), 30, 100);
        assert_eq!(names.next_due(), Some(100));
        assert!(names.start_due(99).is_empty());
        assert_eq!(names.start_due(100), vec![a.clone()]);
        assert_eq!(names.start_due(200), vec![b.clone()], "a is in flight");
        assert_eq!(names.next_due(), None);
        names.record(&a, Ok(addrs(&["10.0.0.1:80"])), 105, 100);
        assert_eq!(names.next_due(), Some(205));
    }

    #[test]
    fn forgotten_names_ignore_late_answers() {
        let mut names = Names::default();
        let a = name("a");
        names.start_new(&set(&["a"]));
        names.retain(&BTreeSet::new());
        assert!(!names.record(&a, Ok(addrs(&["10.0.0.1:80"])), 0, 10));
        assert!(names.is_empty());
        assert_eq!(names.resolved(&a), Resolved::default());
    }

    #[test]
    fn only_names_this_node_connects_to_are_wanted() {
        use crate::dataplane::peers::{Peer, PeerState, SelfNode};
        let spec: RouteSpec = serde_json::from_value(serde_json::json!({
            "name": "r", "listen": "127.0.0.1:0",
            "backends": [{"id": "ip", "addr": "127.0.0.1:1"},
                         {"id": "plain", "addr": "Plain.Example:1"},
                         {"id": "mine", "addr": "mine.example:2", "node": "n1"},
                         {"id": "theirs", "addr": "theirs.example:3", "node": "n2"}]
        }))
        .expect("route");
        let peers = PeerDirectory::new(
            SelfNode { id: 1, name: "n1".into() },
            [Peer {
                id: 2,
                name: "n2".into(),
                state: PeerState::Alive,
                cluster_addr: "127.0.0.2:1".parse().expect("addr"),
            }],
        );
        let got = wanted([&spec], &peers);
        let want: BTreeSet<HostPort> = [
            HostPort { host: "plain.example".into(), port: 1 },
            HostPort { host: "mine.example".into(), port: 2 },
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want);
    }
}
