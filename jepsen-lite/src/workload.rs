//! The clients: each workload runs a few client processes that pick a random
//! node per operation and record every operation as invoke then ok / fail /
//! info, through ferry's admin API only ([`AdminClient`]) or, for traffic,
//! through the nodes' route port.
//!
//! - `register`: one route's backend weight is the register. `read` is a
//!   linearizable GET; `write` a weight PUT; `cas(a, b)` a linearizable read
//!   that must see `a`, then a PUT with `?cas=<revision it saw>`, which
//!   commits only if nothing changed in between.
//! - `set`: `add(e)` reads a route and writes it back with one more backend
//!   `e<e>`, under `?cas=`; the final `read_set` lists the backends.
//! - `traffic`: a TCP connection through a node's route port to the echo
//!   backends: the greeting line, then random bytes that must come back.
//! - the sampler: `/v1/status` of every node every 250 ms (term, leader,
//!   applied index, table digest), for the leader and convergence checkers.
//!
//! A write whose outcome is unknown (timeout, 503) completes as `info`, and
//! its process is retired: the next operation uses a new process id, as in
//! Jepsen, since the old one may still take effect.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_client::RouteSpec;
use ferry_client::http::{AdminClient, ClientError, Outcome, WriteOpts};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::history::{Event, HistoryWriter, Op, RunClock, StatusSample};
use crate::net;

/// Route names and ports the workloads use.
pub const REGISTER_ROUTE: &str = "jreg";
pub const SET_ROUTE: &str = "jset";
pub const TRAFFIC_ROUTE: &str = "jtraffic";
pub const TRAFFIC_PORT: u16 = 7000;
/// The register's backend, and its value when the run starts.
pub const REGISTER_BACKEND: &str = "r";
pub const REGISTER_INITIAL: i64 = 0;
/// The echo backend's port in every node namespace.
pub const BACKEND_PORT: u16 = 9000;
/// Most elements the set workload adds (a route body stays well under the
/// API's 64 KiB limit).
pub const MAX_SET_ELEMENTS: u64 = 400;
/// Admin port of every node.
pub const ADMIN_PORT: u16 = 7948;

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
fn read_failed(e: ClientError) -> ClientError {
    match e {
        ClientError::Timeout { addr, timeout } => {
            ClientError::Connect { addr, message: format!("read timed out after {timeout:?}") }
        }
        other => other,
    }
}

impl Ctx {
    fn admin(&self, node: usize) -> AdminClient {
        admin(node).with_timeout(self.timeout)
    }

    fn pick(&self, rng: &mut fastrand::Rng) -> usize {
        let joined = self.joined.list();
        let k = rng.usize(..self.nodes.len() + joined.len());
        self.nodes.get(k).copied().unwrap_or_else(|| joined[k - self.nodes.len()])
    }
}

/// The node name of index `i`.
pub fn name(i: usize) -> String {
    format!("n{i}")
}

/// A process id that moves on after an `info`.
struct Process {
    id: u32,
    stride: u32,
}

impl Process {
    fn retire(&mut self) {
        self.id = self.id.saturating_add(self.stride);
    }
}

/// Completes `op` as fail or info from `e`; retires the process on info.
fn complete_err(ctx: &Ctx, p: &mut Process, node: &str, op: Op, e: &ClientError, write: bool) {
    if write && e.outcome() == Outcome::Unknown {
        ctx.rec.info(p.id, node, op, &e.to_string());
        p.retire();
    } else {
        ctx.rec.fail(p.id, node, op, &e.to_string());
    }
}

/// The register's route: backend `r` is the register, `anchor` keeps the
/// route valid when the register is 0.
pub fn register_route() -> RouteSpec {
    route(REGISTER_ROUTE, 7001, &[(REGISTER_BACKEND, REGISTER_INITIAL as u32), ("anchor", 1)])
}

/// The set's route, empty but for its anchor.
pub fn set_route() -> RouteSpec {
    route(SET_ROUTE, 7002, &[("anchor", 1)])
}

/// The traffic route: the echo backend of every node.
pub fn traffic_route(nodes: &[usize]) -> RouteSpec {
    let backends: Vec<serde_json::Value> = nodes
        .iter()
        .map(|&i| {
            serde_json::json!({"id": format!("b{i}"), "addr": SocketAddr::new(net::ip(i).into(), BACKEND_PORT).to_string()})
        })
        .collect();
    let spec = serde_json::json!({
        "name": TRAFFIC_ROUTE, "listen": format!(":{TRAFFIC_PORT}"), "balance": "round_robin",
        "connect_timeout_ms": 500, "max_connect_attempts": 5, "eject_after_failures": 2,
        "eject_backoff_ms": 500, "backends": backends,
    });
    serde_json::from_value(spec).unwrap_or_else(|_| route(TRAFFIC_ROUTE, TRAFFIC_PORT, &[]))
}

fn route(name: &str, port: u16, backends: &[(&str, u32)]) -> RouteSpec {
    // Backends that take no traffic: nothing listens there.
    let backends: Vec<serde_json::Value> = backends
        .iter()
        .map(|(id, w)| serde_json::json!({"id": id, "addr": "10.213.7.250:9", "weight": w}))
        .collect();
    let spec = serde_json::json!({"name": name, "listen": format!(":{port}"), "balance": "round_robin", "backends": backends});
    serde_json::from_value(spec).unwrap_or_else(|e| panic!("built-in route {name} is invalid: {e}"))
}

/// One register client process until `stop`.
pub async fn register(ctx: Ctx, first_id: u32, stride: u32, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut p = Process { id: first_id, stride };
    while !ctx.stop.stopped() {
        let node = ctx.pick(&mut rng);
        let client = ctx.admin(node);
        let n = name(node);
        match rng.u8(..4) {
            0 | 1 => {
                ctx.rec.invoke(p.id, &n, Op::Read(None));
                match read_register(&client).await {
                    Ok((v, _)) => ctx.rec.ok(p.id, &n, Op::Read(Some(v))),
                    Err(e) => complete_err(&ctx, &mut p, &n, Op::Read(None), &e, false),
                }
            }
            2 => {
                let v = i64::from(rng.u8(..5));
                ctx.rec.invoke(p.id, &n, Op::Write(v));
                let w = u32::try_from(v).unwrap_or(0);
                match client.put_weight(REGISTER_ROUTE, REGISTER_BACKEND, w, WriteOpts::default()).await {
                    Ok(_) => ctx.rec.ok(p.id, &n, Op::Write(v)),
                    Err(e) => complete_err(&ctx, &mut p, &n, Op::Write(v), &e, true),
                }
            }
            _ => {
                let (from, to) = (i64::from(rng.u8(..5)), i64::from(rng.u8(..5)));
                ctx.rec.invoke(p.id, &n, Op::Cas(from, to));
                match cas(&client, from, to).await {
                    Ok(true) => ctx.rec.ok(p.id, &n, Op::Cas(from, to)),
                    Ok(false) => ctx.rec.fail(
                        p.id,
                        &n,
                        Op::Cas(from, to),
                        "the register did not hold the expected value",
                    ),
                    Err(e) => complete_err(&ctx, &mut p, &n, Op::Cas(from, to), &e, true),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(5..30))).await;
    }
}

async fn read_register(client: &AdminClient) -> Result<(i64, u64), ClientError> {
    let r = client.route(REGISTER_ROUTE, false).await?.value;
    let weight =
        r.config.backends.iter().find(|b| b.id == REGISTER_BACKEND).map_or(-1, |b| i64::from(b.weight));
    Ok((weight, r.revision.unwrap_or(0)))
}

/// `cas(from, to)`: Ok(false) when the register did not hold `from` or it
/// changed before the write (a CAS conflict): neither wrote anything.
async fn cas(client: &AdminClient, from: i64, to: i64) -> Result<bool, ClientError> {
    let (v, revision) = read_register(client).await.map_err(read_failed)?;
    if v != from {
        return Ok(false);
    }
    let w = u32::try_from(to).unwrap_or(0);
    match client
        .put_weight(REGISTER_ROUTE, REGISTER_BACKEND, w, WriteOpts { cas: Some(revision), request_id: None })
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("cas_mismatch") => Ok(false),
        Err(e) => Err(e),
    }
}

/// One set client process: adds elements `first_element`, `+ step`, … until
/// `stop` or [`MAX_SET_ELEMENTS`].
pub async fn set(ctx: Ctx, first_id: u32, stride: u32, seed: u64, first_element: u64, step: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut p = Process { id: first_id, stride };
    let mut e = first_element;
    while !ctx.stop.stopped() && e < MAX_SET_ELEMENTS {
        let node = ctx.pick(&mut rng);
        let client = ctx.admin(node);
        let n = name(node);
        ctx.rec.invoke(p.id, &n, Op::Add(e));
        match add(&client, e).await {
            Ok(()) => ctx.rec.ok(p.id, &n, Op::Add(e)),
            Err(err) => complete_err(&ctx, &mut p, &n, Op::Add(e), &err, true),
        }
        e += step;
        tokio::time::sleep(Duration::from_millis(rng.u64(50..150))).await;
    }
}

async fn add(client: &AdminClient, e: u64) -> Result<(), ClientError> {
    for _ in 0..5 {
        let r = client.route(SET_ROUTE, false).await.map_err(read_failed)?;
        let mut spec = r.value.config;
        let id = format!("e{e}");
        if spec.backends.iter().any(|b| b.id == id) {
            return Ok(());
        }
        let mut backend = spec.backends[0].clone();
        backend.id = id;
        spec.backends.push(backend);
        let opts = WriteOpts { cas: r.value.revision, request_id: None };
        match client.put_route(&spec, opts).await {
            Ok(_) => return Ok(()),
            Err(err) if err.code() == Some("cas_mismatch") => continue,
            Err(err) => return Err(err),
        }
    }
    Err(ClientError::Connect { addr: client.addr(), message: "gave up after 5 CAS conflicts".into() })
}

/// The final read of the set, retried on every node until one answers.
pub async fn read_set(ctx: &Ctx, process: u32) -> bool {
    for _attempt in 0..10 {
        for &node in &ctx.nodes {
            let n = name(node);
            ctx.rec.invoke(process, &n, Op::ReadSet(None));
            match ctx.admin(node).route(SET_ROUTE, false).await {
                Ok(r) => {
                    let mut ids: Vec<u64> = r
                        .value
                        .config
                        .backends
                        .iter()
                        .filter_map(|b| b.id.strip_prefix('e').and_then(|s| s.parse().ok()))
                        .collect();
                    ids.sort_unstable();
                    ctx.rec.ok(process, &n, Op::ReadSet(Some(ids)));
                    return true;
                }
                Err(e) => ctx.rec.fail(process, &n, Op::ReadSet(None), &e.to_string()),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    false
}

/// One traffic client process until `stop`.
pub async fn traffic(ctx: Ctx, process: u32, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !ctx.stop.stopped() {
        let node = ctx.pick(&mut rng);
        let n = name(node);
        ctx.rec.invoke(process, &n, Op::Connect(None));
        let payload: String = (0..32).map(|_| rng.alphanumeric()).collect();
        let addr = SocketAddr::new(net::ip(node).into(), TRAFFIC_PORT);
        match tokio::time::timeout(ctx.timeout, echo(addr, &payload)).await {
            Ok(Ok(bytes)) => ctx.rec.ok(process, &n, Op::Connect(Some(bytes))),
            Ok(Err(e)) => ctx.rec.fail(process, &n, Op::Connect(None), &e),
            Err(_) => ctx.rec.fail(process, &n, Op::Connect(None), "timed out"),
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(10..40))).await;
    }
}

/// Connects, reads the greeting, sends `payload` and checks the echo;
/// returns the bytes verified.
pub async fn echo(addr: SocketAddr, payload: &str) -> Result<u64, String> {
    let s = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let (r, mut w) = s.into_split();
    let mut lines = BufReader::new(r).lines();
    let greeting = lines.next_line().await.map_err(|e| format!("greeting: {e}"))?;
    if greeting.is_none() {
        return Err("closed before the greeting".into());
    }
    w.write_all(format!("{payload}\n").as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    match lines.next_line().await {
        Ok(Some(line)) if line == payload => Ok(payload.len() as u64 + 1),
        Ok(Some(line)) => Err(format!("echo mismatch: sent {payload:?}, got {line:?}")),
        Ok(None) => Err("closed before the echo".into()),
        Err(e) => Err(format!("echo: {e}")),
    }
}

/// Samples node `node`'s status every 250 ms until `stop`.
pub async fn sampler(ctx: Ctx, process: u32, node: usize) {
    let n = name(node);
    let client = ctx.admin(node).with_timeout(Duration::from_secs(1));
    while !ctx.stop.stopped() {
        ctx.rec.invoke(process, &n, Op::Status(None));
        match client.status().await {
            Ok(s) => {
                let s = s.value;
                let sample = StatusSample {
                    node: n.clone(),
                    node_id: s.raft.as_ref().map(|r| r.node_id),
                    role: s.raft.as_ref().map(|r| r.role.clone()),
                    term: s.raft.as_ref().map_or(0, |r| r.term),
                    leader_id: s.raft.as_ref().and_then(|r| r.leader_id),
                    applied_index: s.raft.as_ref().and_then(|r| r.applied_index),
                    table_digest: Some(s.table_digest),
                };
                ctx.rec.ok(process, &n, Op::Status(Some(sample)));
            }
            Err(e) => ctx.rec.fail(process, &n, Op::Status(None), &e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
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
