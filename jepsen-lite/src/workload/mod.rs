//! The clients: each workload runs a few client processes that pick a random
//! node per operation and record every operation as invoke then ok / fail /
//! info, through ferry's admin API only ([`AdminClient`]) or, for traffic,
//! through the nodes' route port. One workload per file:
//!
//! - [`register`]: [`register::KEYS`] registers, each a route's backend
//!   address port, with unique written values, request ids and retries,
//!   CAS, stale reads and blocking queries.
//! - [`set`]: adds of unique elements spread over [`set::ROUTES`] routes for
//!   the whole run, and the final `read_set` of all of them.
//! - [`traffic`]: TCP connections through a node's route port to the echo
//!   backends.
//! - [`sampler`]: `/v1/status` of every node every 250 ms (term, leader,
//!   applied index, table digest), for the leader and convergence checkers.
//!
//! A write whose outcome is unknown (timeout, 503) completes as `info`, and
//! its process is retired: the next operation uses a new process id, as in
//! Jepsen, since the old one may still take effect.

pub mod register;
pub mod sampler;
pub mod set;
pub mod traffic;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_client::RouteSpec;
use ferry_client::http::{AdminClient, ClientError, Outcome};

use crate::history::{Event, HistoryWriter, Op, RunClock};
use crate::net;

/// The echo backend's port in every node namespace.
pub const BACKEND_PORT: u16 = 9000;
/// Admin port of every node.
pub const ADMIN_PORT: u16 = 7948;
/// The address of the backends that take no traffic (nothing listens there).
const NOWHERE: &str = "10.213.7.250";

/// Tells every task to finish its current operation and return.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Appends events to `history.jsonl` with run-relative timestamps.
#[derive(Clone)]
pub struct Recorder {
    clock: Arc<RunClock>,
    out: Arc<Mutex<HistoryWriter<std::fs::File>>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    pub fn new(clock: Arc<RunClock>, file: std::fs::File) -> Self {
        Self { clock, out: Arc::new(Mutex::new(HistoryWriter::new(file))) }
    }

    pub fn now(&self) -> u64 {
        self.clock.now_ns()
    }

    pub fn record(&self, event: &Event) {
        if let Ok(mut w) = self.out.lock()
            && let Err(e) = w.append(event)
        {
            eprintln!("jepsen-lite: cannot write the history: {e}");
        }
    }

    pub fn invoke(&self, process: u32, node: &str, op: Op) {
        self.record(&Event::invoke(process, node, op, self.now()));
    }

    pub fn ok(&self, process: u32, node: &str, op: Op) {
        self.record(&Event::ok(process, node, op, self.now()));
    }

    pub fn fail(&self, process: u32, node: &str, op: Op, error: &str) {
        self.record(&Event::fail(process, node, op, self.now(), error));
    }

    pub fn info(&self, process: u32, node: &str, op: Op, error: &str) {
        self.record(&Event::info(process, node, op, self.now(), error));
    }
}

/// Nodes that joined during the run and serve clients while they are
/// members (the membership nemesis adds and removes them).
#[derive(Debug, Clone, Default)]
pub struct Joined(Arc<std::sync::RwLock<Vec<usize>>>);

impl Joined {
    /// Clients may use node `i` from now on.
    pub fn add(&self, i: usize) {
        if let Ok(mut v) = self.0.write()
            && !v.contains(&i)
        {
            v.push(i);
        }
    }

    /// Clients stop picking node `i` (operations already sent go on).
    pub fn remove(&self, i: usize) {
        if let Ok(mut v) = self.0.write() {
            v.retain(|&n| n != i);
        }
    }

    /// The joined nodes clients use now.
    pub fn list(&self) -> Vec<usize> {
        self.0.read().map(|v| v.clone()).unwrap_or_default()
    }
}

/// What every client process shares.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub rec: Recorder,
    pub stop: Stop,
    /// The nodes clients talk to (1-based indexes).
    pub nodes: Vec<usize>,
    /// Nodes that joined later, used as well while they are members.
    pub joined: Joined,
    pub timeout: Duration,
}

/// A client of node `node`'s admin API.
pub fn admin(node: usize) -> AdminClient {
    AdminClient::new(SocketAddr::new(net::ip(node).into(), ADMIN_PORT))
}

/// A failed read changed nothing: a read that timed out is reported as not
/// applied (so the write it preceded is a `fail`, not an `info`).
pub(crate) fn read_failed(e: ClientError) -> ClientError {
    match e {
        ClientError::Timeout { addr, timeout } => {
            ClientError::Connect { addr, message: format!("read timed out after {timeout:?}") }
        }
        other => other,
    }
}

impl Ctx {
    pub(crate) fn admin(&self, node: usize) -> AdminClient {
        admin(node).with_timeout(self.timeout)
    }

    /// The nodes clients may use now: the initial ones and the joined members.
    fn pool(&self) -> Vec<usize> {
        let mut all = self.nodes.clone();
        all.extend(self.joined.list());
        all
    }

    pub(crate) fn pick(&self, rng: &mut fastrand::Rng) -> usize {
        let joined = self.joined.list();
        let k = rng.usize(..self.nodes.len() + joined.len());
        self.nodes.get(k).copied().unwrap_or_else(|| joined[k - self.nodes.len()])
    }

    /// Another node than `node` when there is one (where a retry goes).
    pub(crate) fn pick_other(&self, rng: &mut fastrand::Rng, node: usize) -> usize {
        let others: Vec<usize> = self.pool().into_iter().filter(|&n| n != node).collect();
        if others.is_empty() { node } else { others[rng.usize(..others.len())] }
    }
}

/// The node name of index `i`.
pub fn name(i: usize) -> String {
    format!("n{i}")
}

/// A process id that moves on after an `info`.
pub(crate) struct Process {
    pub id: u32,
    pub stride: u32,
}

impl Process {
    pub fn retire(&mut self) {
        self.id = self.id.saturating_add(self.stride);
    }
}

/// Completes `op` as fail or info from `e`; retires the process on info.
pub(crate) fn complete_err(ctx: &Ctx, p: &mut Process, node: &str, op: Op, e: &ClientError, write: bool) {
    if write && e.outcome() == Outcome::Unknown {
        ctx.rec.info(p.id, node, op, &e.to_string());
        p.retire();
    } else {
        ctx.rec.fail(p.id, node, op, &e.to_string());
    }
}

/// A route listening on `:port` whose backends (id, port of [`NOWHERE`],
/// weight) take no traffic.
pub(crate) fn route(name: &str, port: u16, backends: &[(&str, u16, u32)]) -> RouteSpec {
    let backends: Vec<serde_json::Value> = backends
        .iter()
        .map(|(id, p, w)| serde_json::json!({"id": id, "addr": format!("{NOWHERE}:{p}"), "weight": w}))
        .collect();
    let spec = serde_json::json!({"name": name, "listen": format!(":{port}"), "balance": "round_robin", "backends": backends});
    serde_json::from_value(spec).unwrap_or_else(|e| panic!("built-in route {name} is invalid: {e}"))
}

#[cfg(test)]
mod joined_tests {
    use super::*;

    /// Clients picked only the initial nodes: a node that joined never
    /// served them.
    #[test]
    fn clients_pick_joined_nodes_while_they_are_in_the_pool() -> std::io::Result<()> {
        let file = tempfile::tempfile()?;
        let ctx = Ctx {
            rec: Recorder::new(Arc::new(RunClock::start()), file),
            stop: Stop::default(),
            nodes: vec![1, 2, 3],
            joined: Joined::default(),
            timeout: Duration::from_secs(1),
        };
        let mut rng = fastrand::Rng::with_seed(5);
        let picks = |rng: &mut fastrand::Rng| {
            (0..200).map(|_| ctx.pick(rng)).collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(picks(&mut rng), [1, 2, 3].into());
        ctx.joined.add(6);
        ctx.joined.add(6);
        assert_eq!(ctx.joined.list(), vec![6]);
        assert_eq!(picks(&mut rng), [1, 2, 3, 6].into());
        ctx.joined.remove(6);
        assert_eq!(picks(&mut rng), [1, 2, 3].into());
        Ok(())
    }
}
