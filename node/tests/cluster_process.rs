//! Three real `ferryd` processes as a Raft cluster, for what only real
//! processes can show: `kill -9` of the leader (a new leader, writes resume),
//! of every node during a write load (nothing acknowledged is lost), a wiped
//! node catching up, a node without quorum (503 quickly, traffic keeps
//! flowing), and every node named in status and members although the static
//! membership records ids only.
//!
//! Layout as in the scripts and docs: node i runs on its own loopback
//! address 127.0.N.i with the same admin, cluster and route ports as the
//! others (N differs per cluster, so tests run in parallel). Every process
//! is spawned by the test and killed (by its own PID) when its guard drops.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{
    Conn, Ferryd, IO_TIMEOUT, POLL, Reply, TempDir, WAIT, ask_once, echo_server, free_ports, http, poll,
};
use ferry_client::api::{Role, Status};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What differs between the test clusters.
#[derive(Debug, Clone, Copy)]
struct Opts {
    /// `[admin] request_timeout_ms`.
    request_timeout_ms: u64,
    /// `[cluster] snapshot_logs`.
    snapshot_logs: u64,
}

impl Default for Opts {
    fn default() -> Self {
        Self { request_timeout_ms: 2_000, snapshot_logs: 5_000 }
    }
}

/// A distinct 127.0.N.0/24 per cluster (N ≥ 1: never 127.0.0.x, where
/// other tests bind), varied by process id.
fn next_net() -> u8 {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = std::process::id().wrapping_mul(11).wrapping_add(128).wrapping_add(SEQ.fetch_add(1, Relaxed));
    (1 + n % 250) as u8
}

/// Three `ferryd` processes; node `id` is `procs[id - 1]`. Fields drop in
/// order: the processes are killed before their dir is removed.
struct Cluster {
    procs: Vec<Option<Ferryd>>,
    runs: Vec<u32>,
    net: u8,
    admin_port: u16,
    cluster_port: u16,
    dir: TempDir,
}

impl Cluster {
    const IDS: [u64; 3] = [1, 2, 3];

    /// Writes the three config files, starts every node and waits for a
    /// leader.
    async fn start(tag: &str, opts: Opts) -> Result<Self> {
        let dir = TempDir::new(tag)?;
        let net = next_net();
        let ips: Vec<IpAddr> = Self::IDS.iter().map(|id| ip(net, *id)).collect();
        let ports = free_ports(&ips, 2)?;
        let mut c = Self {
            procs: vec![None, None, None],
            runs: vec![0; 3],
            net,
            admin_port: ports[0],
            cluster_port: ports[1],
            dir,
        };
        let members: Vec<String> =
            Self::IDS.iter().map(|id| format!("{id}@{}", c.cluster_addr(*id))).collect();
        for id in Self::IDS {
            let text = format!(
                r#"[node]
name = "n{id}"
bind_addr = "{ip}"
drain_timeout_ms = 500
workers = 1
data_dir = "{data}"

[admin]
addr = "{admin}"
request_timeout_ms = {timeout}

[cluster]
node_id = {id}
addr = "{cluster}"
cluster_id = "process-test"
initial_members = {members:?}
heartbeat_ms = 50
election_timeout_min_ms = 200
election_timeout_max_ms = 400
snapshot_logs = {snapshot_logs}
"#,
                ip = c.ip(id),
                data = c.data_dir(id).display(),
                admin = c.admin(id),
                timeout = opts.request_timeout_ms,
                cluster = c.cluster_addr(id),
                snapshot_logs = opts.snapshot_logs,
            );
            common::write_config(&c.config(id), &text)?;
        }
        for id in Self::IDS {
            c.spawn(id)?;
        }
        for id in Self::IDS {
            c.wait_ready(id).await?;
        }
        c.leader(&Self::IDS).await?;
        Ok(c)
    }

    fn ip(&self, id: u64) -> IpAddr {
        ip(self.net, id)
    }

    /// Every node's address.
    fn ips(&self) -> Vec<IpAddr> {
        Self::IDS.iter().map(|id| self.ip(*id)).collect()
    }

    fn admin(&self, id: u64) -> SocketAddr {
        SocketAddr::new(self.ip(id), self.admin_port)
    }

    fn cluster_addr(&self, id: u64) -> SocketAddr {
        SocketAddr::new(self.ip(id), self.cluster_port)
    }

    fn config(&self, id: u64) -> std::path::PathBuf {
        self.dir.file(&format!("n{id}.toml"))
    }

    fn data_dir(&self, id: u64) -> std::path::PathBuf {
        self.dir.file(&format!("n{id}-data"))
    }

    fn proc(&mut self, id: u64) -> Result<&mut Ferryd> {
        self.procs[id as usize - 1].as_mut().with_context(|| format!("node {id} is not running"))
    }

    /// Starts node `id` from its config file and data dir.
    fn spawn(&mut self, id: u64) -> Result<()> {
        ensure!(self.procs[id as usize - 1].is_none(), "node {id} is already running");
        self.runs[id as usize - 1] += 1;
        let log = format!("n{id}-run{}", self.runs[id as usize - 1]);
        let config = self.config(id);
        let config = config.to_str().context("temp path is not UTF-8")?;
        self.procs[id as usize - 1] = Some(Ferryd::spawn(&self.dir, &log, &["--config", config])?);
        Ok(())
    }

    /// Waits until node `id` answers `/health/ready` with 200.
    async fn wait_ready(&mut self, id: u64) -> Result<()> {
        let admin = self.admin(id);
        let deadline = Instant::now() + WAIT;
        loop {
            let p = self.proc(id)?;
            if let Some(status) = p.exited()? {
                bail!("node {id} exited during startup ({status}); stderr:\n{}", p.stderr());
            }
            if let Ok(r) = http(admin, "GET", "/health/ready", &[], None, IO_TIMEOUT).await
                && r.status == 200
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("node {id} not ready after {WAIT:?}; stderr:\n{}", p.stderr());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `kill -9` of node `id` (its own PID), reaped.
    fn kill9(&mut self, id: u64) -> Result<()> {
        let mut p =
            self.procs[id as usize - 1].take().with_context(|| format!("node {id} is not running"))?;
        p.kill9()
    }

    fn stderr(&self, id: u64) -> String {
        self.procs[id as usize - 1].as_ref().map(Ferryd::stderr).unwrap_or_default()
    }

    async fn send(
        &self,
        id: u64,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Reply> {
        let body = body.map(Value::to_string);
        http(self.admin(id), method, path, headers, body.as_deref(), IO_TIMEOUT).await
    }

    async fn status(&self, id: u64) -> Result<Status> {
        let r = self.send(id, "GET", "/v1/status", &[], None).await?;
        ensure!(r.status == 200, "GET /v1/status on node {id}: {} {}", r.status, r.body);
        Ok(serde_json::from_str(&r.body)?)
    }

    /// Waits until every node of `among` names the same leader, which is
    /// one of them and says it leads.
    async fn leader(&self, among: &[u64]) -> Result<u64> {
        poll("one leader named by every running node", WAIT, async || {
            let mut named = Vec::new();
            let mut leading = Vec::new();
            for &id in among {
                let raft = self.status(id).await?.raft.context("no raft status")?;
                if raft.role == Role::Leader {
                    leading.push(id);
                }
                named.push(raft.leader_id);
            }
            let leader = named[0].context("no leader yet")?;
            ensure!(named.iter().all(|l| *l == Some(leader)), "nodes {among:?} name leaders {named:?}");
            ensure!(leading == [leader], "nodes {leading:?} say they lead; {leader} is named");
            Ok(leader)
        })
        .await
    }

    /// Waits until every node of `among` has applied the config index
    /// `index` and the same Raft log index.
    async fn converged(&self, among: &[u64], index: u64) -> Result<()> {
        poll(&format!("nodes {among:?} at config index {index}"), WAIT, async || {
            let mut seen = Vec::new();
            for &id in among {
                let s = self.status(id).await?;
                seen.push((s.index, s.raft));
            }
            let same = seen.iter().all(|(i, r)| {
                *i >= index
                    && *i == seen[0].0
                    && r.as_ref().map(|r| r.applied_index) == seen[0].1.as_ref().map(|r| r.applied_index)
            });
            ensure!(same, "(config index, raft status) per node: {seen:#?}");
            Ok(())
        })
        .await
    }

    /// The value of an unlabelled metric on node `id`.
    async fn metric(&self, id: u64, name: &str) -> Result<f64> {
        let r = self.send(id, "GET", "/metrics", &[], None).await?;
        let line = r
            .body
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .with_context(|| format!("no {name} in node {id}'s /metrics"))?;
        Ok(line.split_whitespace().nth(1).context("metric without a value")?.parse()?)
    }

    /// The route names node `id` serves through a linearizable read.
    async fn route_names(&self, id: u64) -> Result<BTreeSet<String>> {
        common::route_names(self.admin(id)).await
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn ip(net: u8, id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, net, id as u8))
}

/// `":PORT"` with a port free on every address of `ips`: a route's
/// `listen` (port 0 is not one).
fn any_listen(ips: &[IpAddr]) -> Result<String> {
    Ok(format!(":{}", free_ports(ips, 1)?[0]))
}

/// A route body listening on `listen` on every node.
fn route(name: &str, listen: &str, backend: SocketAddr) -> Value {
    json!({"name": name, "listen": listen, "backends": [{"id": "b1", "addr": backend.to_string()}]})
}

/// A backend nothing needs to reach (routes only carry config here).
fn nowhere() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9))
}

/// The `index` of a 200 write answer.
fn written(r: &Reply) -> Result<u64> {
    ensure!(r.status == 200, "write answered {} {}", r.status, r.body);
    r.json()?["index"].as_u64().context("no index in the write answer")
}

// ---------------------------------------------------------------- failover

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_a_new_one_and_writes_resume() -> Result<()> {
    let mut c = Cluster::start("failover", Opts { request_timeout_ms: 1_000, ..Opts::default() }).await?;
    let old = c.leader(&Cluster::IDS).await?;
    let survivors: Vec<u64> = Cluster::IDS.into_iter().filter(|id| *id != old).collect();
    let via = survivors[0];
    let before = written(
        &c.send(
            via,
            "PUT",
            "/v1/routes/before",
            &[],
            Some(&route("before", &any_listen(&c.ips())?, nowhere())),
        )
        .await?,
    )?;

    c.kill9(old)?;
    let killed = Instant::now();
    // Retried with one request id, as a client should: at most one apply.
    let after = route("after", &any_listen(&c.ips())?, nowhere());
    let id = [("X-Ferry-Request-Id", "af7e4")];
    let mut answers = Vec::new();
    let index = loop {
        match c.send(via, "PUT", "/v1/routes/after", &id, Some(&after)).await {
            Ok(r) if r.status == 200 => break written(&r)?,
            Ok(r) => {
                ensure!(r.status == 503, "during the election: {} {}", r.status, r.body);
                ensure!(r.header("retry-after").is_some(), "503 without Retry-After: {}", r.body);
                answers.push(r.status);
            }
            Err(e) => bail!("no answer during the election: {e:#}"),
        }
        ensure!(killed.elapsed() < Duration::from_secs(15), "no successful write 15 s after the kill");
        tokio::time::sleep(POLL).await;
    };
    let window = killed.elapsed();
    eprintln!(
        "leader {old} killed: writes through node {via} resumed after {window:?} ({} x 503 before)",
        answers.len()
    );
    ensure!(window < Duration::from_secs(5), "writes resumed only {window:?} after the leader was killed");

    let new = c.leader(&survivors).await?;
    ensure!(new != old, "the killed node {old} is still the leader");
    for &id in &survivors {
        let names = c.route_names(id).await?;
        ensure!(names.contains("before") && names.contains("after"), "node {id} serves {names:?}");
    }
    ensure!(index > before);
    ensure!(c.metric(via, "ferry_raft_leader_changes_total").await? >= 1.0, "leader change not counted");

    // The old leader restarts from its data dir and catches up.
    c.spawn(old)?;
    c.wait_ready(old).await?;
    c.leader(&Cluster::IDS).await?;
    c.converged(&Cluster::IDS, index).await?;
    let names = c.route_names(old).await?;
    ensure!(names.contains("after"), "the restarted node {old} serves {names:?}; stderr:\n{}", c.stderr(old));
    Ok(())
}

/// Writes through both followers while the leader is killed. A write in
/// flight to the killed leader used to get 503 `timeout` after 3–6 ms.
/// Every answer must be 200, or a 503 (with Retry-After and the request id)
/// whose code says what happened, `no_leader` or `leader_changed`, and
/// `timeout` only once the request timeout has passed; every acknowledged
/// write is there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_a_leader_kill_get_answers_that_say_what_happened() -> Result<()> {
    const TIMEOUT_MS: u64 = 2_000;
    const WRITERS: usize = 6;
    const MAX_WRITES: u32 = 600;
    let mut c =
        Cluster::start("kill-writes", Opts { request_timeout_ms: TIMEOUT_MS, ..Opts::default() }).await?;
    let old = c.leader(&Cluster::IDS).await?;
    let survivors: Vec<u64> = Cluster::IDS.into_iter().filter(|id| *id != old).collect();
    let admins: Vec<SocketAddr> = survivors.iter().map(|id| c.admin(*id)).collect();
    let next = Arc::new(AtomicU32::new(0));
    let killed_at = Arc::new(Mutex::new(None::<Instant>));
    let started = Instant::now();
    let mut writers = Vec::new();
    let ips = c.ips();
    for w in 0..WRITERS {
        let (next, killed_at, admin) = (next.clone(), killed_at.clone(), admins[w % admins.len()]);
        let ips = ips.clone();
        writers.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            loop {
                let kill = *killed_at.lock().expect("lock");
                let done = kill.is_some_and(|k| k.elapsed() > Duration::from_millis(1_500));
                if done || started.elapsed() > Duration::from_secs(20) {
                    return answers;
                }
                let n = next.fetch_add(1, Relaxed);
                if n >= MAX_WRITES {
                    return answers;
                }
                let name = format!("k{n}");
                let Ok(listen) = any_listen(&ips) else { return answers };
                let body = route(&name, &listen, nowhere()).to_string();
                let id = format!("{:x}", 0xc0de_0000_u64 + u64::from(n));
                let t = Instant::now();
                let r = http(
                    admin,
                    "PUT",
                    &format!("/v1/routes/{name}"),
                    &[("X-Ferry-Request-Id", &id)],
                    Some(&body),
                    IO_TIMEOUT,
                )
                .await;
                answers.push((name, admin, t, t.elapsed(), r));
            }
        }));
    }
    poll("writes under way", WAIT, async || {
        ensure!(next.load(Relaxed) >= 40, "only {} writes sent", next.load(Relaxed));
        Ok(())
    })
    .await?;
    c.kill9(old)?;
    *killed_at.lock().expect("lock") = Some(Instant::now());
    let mut all = Vec::new();
    for w in writers {
        all.extend(w.await?);
    }

    let limit = Duration::from_millis(TIMEOUT_MS);
    let (mut acked, mut codes, mut bad) = (BTreeSet::new(), Vec::new(), Vec::new());
    for (name, admin, _sent, took, r) in &all {
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                bad.push(format!("{name} via {admin}: no answer after {took:?}: {e:#}"));
                continue;
            }
        };
        if r.status == 200 {
            acked.insert(name.clone());
            continue;
        }
        let code =
            r.json().ok().and_then(|b| b["error"]["code"].as_str().map(str::to_string)).unwrap_or_default();
        codes.push(format!("{code} after {took:?}"));
        let honest = match code.as_str() {
            "no_leader" | "leader_changed" => *took >= limit,
            "timeout" => *took >= limit,
            _ => false,
        };
        if r.status != 503 || !honest {
            bad.push(format!("{name} via {admin}: {} {code} after {took:?}: {}", r.status, r.body));
        }
        if r.status == 503 && (r.header("retry-after").is_none() || r.header("x-ferry-request-id").is_none())
        {
            bad.push(format!("{name}: a 503 without Retry-After or X-Ferry-Request-Id: {}", r.body));
        }
    }
    eprintln!(
        "leader {old} killed during {} writes: {} acknowledged, 503s: {codes:?}",
        all.len(),
        acked.len()
    );
    ensure!(bad.is_empty(), "answers that do not say what happened:\n{}", bad.join("\n"));
    let kill = killed_at.lock().expect("lock").context("no kill time")?;
    ensure!(all.iter().any(|(_, _, sent, _, _)| *sent > kill), "no write was sent after the kill");
    let new = c.leader(&survivors).await?;
    ensure!(new != old);
    let names = c.route_names(new).await?;
    let missing: Vec<&String> = acked.iter().filter(|n| !names.contains(*n)).collect();
    ensure!(missing.is_empty(), "acknowledged writes missing after the failover: {missing:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_sent_during_the_election_succeeds_on_either_survivor() -> Result<()> {
    // A request timeout far above an election (200-400 ms): a write sent
    // right after the leader dies must wait for the new leader and commit,
    // whichever survivor it was sent to (one of them becomes the leader, the
    // other must forward to it).
    const TIMEOUT_MS: u64 = 3_000;
    let mut c =
        Cluster::start("election-write", Opts { request_timeout_ms: TIMEOUT_MS, ..Opts::default() }).await?;
    let old = c.leader(&Cluster::IDS).await?;
    let survivors: Vec<u64> = Cluster::IDS.into_iter().filter(|id| *id != old).collect();
    c.kill9(old)?;
    let killed = Instant::now();
    let mut writes = Vec::new();
    for &id in &survivors {
        let (admin, name) = (c.admin(id), format!("via{id}"));
        let body = route(&name, &any_listen(&c.ips())?, nowhere()).to_string();
        writes.push(tokio::spawn(async move {
            let r = http(admin, "PUT", &format!("/v1/routes/{name}"), &[], Some(&body), IO_TIMEOUT).await;
            (id, r, killed.elapsed())
        }));
    }
    let new = c.leader(&survivors).await?;
    let elected = killed.elapsed();
    let mut failures = Vec::new();
    for w in writes {
        let (id, r, took) = w.await?;
        let r = r?;
        eprintln!(
            "write via node {id} (leader now {new}, elected within {elected:?}): {} after {took:?}",
            r.status
        );
        if r.status != 200 {
            failures.push(format!("via node {id}: {} {} after {took:?}", r.status, r.body));
        }
    }
    ensure!(
        failures.is_empty(),
        "new leader {new} elected within {elected:?}, yet writes sent during the election failed:\n{}",
        failures.join("\n")
    );
    Ok(())
}

// -------------------------------------------------------------- durability

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_every_node() -> Result<()> {
    const MAX_WRITES: u32 = 300;
    const WRITERS: usize = 4;
    const KILL_AFTER_ACKS: usize = 100;
    let mut c = Cluster::start("durability", Opts::default()).await?;
    let admins: Vec<SocketAddr> = Cluster::IDS.iter().map(|id| c.admin(*id)).collect();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let attempted = Arc::new(Mutex::new(BTreeSet::new()));
    let (next, stop, failed) =
        (Arc::new(AtomicU32::new(0)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let killing = Arc::new(AtomicBool::new(false));
    let healthy_failures = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let (acked, attempted, next, stop, failed, admins) =
            (acked.clone(), attempted.clone(), next.clone(), stop.clone(), failed.clone(), admins.clone());
        let ips = c.ips();
        let (killing, healthy_failures) = (killing.clone(), healthy_failures.clone());
        writers.push(tokio::spawn(async move {
            while !stop.load(Relaxed) && started.elapsed() < Duration::from_secs(10) {
                let n = next.fetch_add(1, Relaxed);
                if n >= MAX_WRITES {
                    return;
                }
                let name = format!("d{n}");
                let listen = match any_listen(&ips) {
                    Ok(listen) => listen,
                    Err(e) => {
                        healthy_failures.lock().expect("lock").push(format!("{name}: {e:#}"));
                        continue;
                    }
                };
                let body = route(&name, &listen, nowhere()).to_string();
                attempted.lock().expect("lock").insert(name.clone());
                let admin = admins[fastrand::usize(..admins.len())];
                let path = format!("/v1/routes/{name}");
                let answer = http(admin, "PUT", &path, &[], Some(&body), IO_TIMEOUT).await;
                // A failure that came back before the kill began had no excuse.
                let healthy = !killing.load(Relaxed);
                match answer {
                    Ok(r) if r.status == 200 => {
                        acked.lock().expect("lock").insert(name);
                    }
                    Ok(r) if healthy => {
                        healthy_failures
                            .lock()
                            .expect("lock")
                            .push(format!("{name} via {admin}: {} {}", r.status, r.body));
                    }
                    Err(e) if healthy => {
                        healthy_failures.lock().expect("lock").push(format!("{name} via {admin}: {e:#}"));
                    }
                    _ => {
                        failed.fetch_add(1, Relaxed);
                    }
                }
            }
        }));
    }
    poll("writes being acknowledged", WAIT, async || {
        let n = acked.lock().expect("lock").len();
        ensure!(n >= KILL_AFTER_ACKS, "{n} acknowledged");
        Ok(())
    })
    .await?;
    killing.store(true, Relaxed);
    for id in Cluster::IDS {
        c.kill9(id)?;
    }
    let (acked_at_kill, failed_before_kill) = (acked.lock().expect("lock").len(), failed.load(Relaxed));
    stop.store(true, Relaxed);
    for w in writers {
        w.await?;
    }
    let acked = acked.lock().expect("lock").clone();
    let attempted = attempted.lock().expect("lock").clone();
    eprintln!(
        "killed all nodes after {:?}: {} acknowledged ({acked_at_kill} at the kill), {} attempted, \
         {failed_before_kill} failed during the kills, {} in all",
        started.elapsed(),
        acked.len(),
        attempted.len(),
        failed.load(Relaxed)
    );
    ensure!(attempted.len() < MAX_WRITES as usize, "the load ended before the kill");
    let healthy_failures = healthy_failures.lock().expect("lock").clone();
    ensure!(
        healthy_failures.is_empty(),
        "writes failed before any node was killed:\n{}",
        healthy_failures.join("\n")
    );

    for id in Cluster::IDS {
        c.spawn(id)?;
    }
    for id in Cluster::IDS {
        c.wait_ready(id).await?;
    }
    c.leader(&Cluster::IDS).await?;
    for id in Cluster::IDS {
        let names = c.route_names(id).await?;
        let lost: Vec<&String> = acked.difference(&names).collect();
        ensure!(lost.is_empty(), "node {id} lost {} acknowledged writes: {lost:?}", lost.len());
        let phantom: Vec<&String> = names.difference(&attempted).collect();
        ensure!(phantom.is_empty(), "node {id} serves routes never written: {phantom:?}");
    }
    Ok(())
}

// ---------------------------------------------------------------- snapshot

/// `count` writes through the leader, `parallel` at a time: chaos
/// policies `p0..p9` overwritten in turn (cheap to apply), so the log grows
/// while the state stays small.
async fn churn(c: &Cluster, leader: u64, count: u32, parallel: u32) -> Result<()> {
    let next = Arc::new(AtomicU32::new(0));
    let admin = c.admin(leader);
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Relaxed);
                if n >= count {
                    return anyhow::Ok(());
                }
                let name = format!("p{}", n % 10);
                let body =
                    json!({"name": name, "toxics": [{"kind": {"latency": {"latency_ms": n}}}]}).to_string();
                let r =
                    http(admin, "PUT", &format!("/v1/chaos/{name}"), &[], Some(&body), IO_TIMEOUT).await?;
                ensure!(r.status == 200, "write {n}: {} {}", r.status, r.body);
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Stops node 3, wipes its data dir, restarts it with the same id, and
/// checks that it converges to the leader's state.
async fn wipe_node_3_and_rejoin(c: &mut Cluster, writes: u32) -> Result<()> {
    let leader = c.leader(&Cluster::IDS).await?;
    for i in 0..5 {
        written(
            &c.send(
                leader,
                "PUT",
                &format!("/v1/routes/r{i}"),
                &[],
                Some(&route(&format!("r{i}"), &any_listen(&c.ips())?, nowhere())),
            )
            .await?,
        )?;
    }
    let t = Instant::now();
    churn(c, leader, writes, 16).await?;
    eprintln!("{writes} writes in {:?}", t.elapsed());
    let last = written(&c.send(leader, "DELETE", "/v1/routes/r0", &[], None).await?)?;

    c.kill9(3)?;
    std::fs::remove_dir_all(c.data_dir(3)).context("wiping node 3")?;
    c.spawn(3)?;
    c.wait_ready(3).await?;
    c.leader(&Cluster::IDS).await?;
    if let Err(e) = c.converged(&Cluster::IDS, last).await {
        let logs: Vec<String> =
            Cluster::IDS.iter().map(|id| format!("node {id}:\n{}", tail(&c.stderr(*id), 30))).collect();
        return Err(e.context(logs.join("\n")));
    }
    let leader = c.leader(&Cluster::IDS).await?;
    let want = c.route_names(leader).await?;
    let stale = c.send(3, "GET", "/v1/routes?consistency=stale", &[], None).await?;
    let local: BTreeSet<String> = stale
        .json()?
        .as_array()
        .context("routes are not a list")?
        .iter()
        .filter_map(|r| r["config"]["name"].as_str().map(str::to_string))
        .collect();
    ensure!(local == want, "node 3 holds {local:?}, the leader {want:?}");
    ensure!(want.len() == 4 && !want.contains("r0"), "unexpected routes {want:?}");
    let policies = c.send(3, "GET", "/v1/chaos?consistency=stale", &[], None).await?.json()?;
    ensure!(policies.as_array().map(Vec::len) == Some(10), "node 3 holds policies {policies}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_rejoins_and_converges() -> Result<()> {
    let mut c = Cluster::start("wipe", Opts::default()).await?;
    wipe_node_3_and_rejoin(&mut c, 100).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_catches_up_by_snapshot() -> Result<()> {
    // snapshot_logs = 20 and well over 1,000 writes: the leader snapshots
    // and purges its log, so a wiped node can only catch up by snapshot.
    let mut c = Cluster::start("snapshot", Opts { snapshot_logs: 20, ..Opts::default() }).await?;
    wipe_node_3_and_rejoin(&mut c, 1_200).await?;
    let leader = c.leader(&Cluster::IDS).await?;
    let built = c.metric(leader, "ferry_raft_snapshots_total").await?;
    ensure!(built > 0.0, "the leader built no snapshot with snapshot_logs = 20");
    let installed = c.metric(3, "ferry_raft_snapshots_total").await?;
    ensure!(installed > 0.0, "node 3 caught up without a snapshot; stderr:\n{}", c.stderr(3));
    Ok(())
}

// ------------------------------------------------------------- no quorum

/// Kills two nodes (the leader among them if `kill_leader`) and checks the
/// survivor: writes and linearizable reads get a 503 with Retry-After
/// within the request timeout (plus a margin), never a hang, whose code says
/// what happened: `no_quorum` from a leader that hears from no majority
/// (saying how long it has been without one: for a write it proposed before
/// it could tell, once the request timeout has passed; for the writes after,
/// at once, not proposed), `no_leader` once the request timeout has passed on a
/// node that finds no leader, and never `timeout` (a leader's write used to
/// answer `timeout` after its own 1.5 s, before the request timeout). Stale
/// reads and traffic keep working with the last applied config.
async fn without_quorum(tag: &str, kill_leader: bool) -> Result<()> {
    const TIMEOUT_MS: u64 = 2_500;
    const MARGIN: Duration = Duration::from_millis(500);
    let backend = echo_server("one").await?;
    let mut c = Cluster::start(tag, Opts { request_timeout_ms: TIMEOUT_MS, ..Opts::default() }).await?;
    let leader = c.leader(&Cluster::IDS).await?;
    let port = free_ports(&Cluster::IDS.map(|id| c.ip(id)), 1)?[0];
    let index = written(
        &c.send(leader, "PUT", "/v1/routes/web", &[], Some(&route("web", &format!(":{port}"), backend)))
            .await?,
    )?;
    c.converged(&Cluster::IDS, index).await?;
    for id in Cluster::IDS {
        let addr = SocketAddr::new(c.ip(id), port);
        poll(&format!("node {id} forwarding"), WAIT, async || {
            let r = ask_once(addr, "hi").await?;
            ensure!(r == "one: hi", "got {r:?}");
            Ok(())
        })
        .await?;
    }

    let followers: Vec<u64> = Cluster::IDS.into_iter().filter(|id| *id != leader).collect();
    let (victims, survivor) = if kill_leader {
        ([leader, followers[0]], followers[1])
    } else {
        ([followers[0], followers[1]], leader)
    };
    let route_addr = SocketAddr::new(c.ip(survivor), port);
    let mut held = Conn::open(route_addr).await?;
    ensure!(held.ask("before").await? == "one: before");
    for id in victims {
        c.kill9(id)?;
    }

    let limit = Duration::from_millis(TIMEOUT_MS) + MARGIN;
    let body = route("new", &any_listen(&c.ips())?, nowhere());
    for attempt in 0..2 {
        for (method, path, body) in [
            ("PUT", "/v1/routes/new", Some(&body)),
            ("DELETE", "/v1/routes/web", None),
            ("GET", "/v1/routes/web", None),
        ] {
            let t = Instant::now();
            let r = c.send(survivor, method, path, &[], body).await?;
            let took = t.elapsed();
            ensure!(
                r.status == 503,
                "attempt {attempt}: {method} {path} without quorum: {} {}",
                r.status,
                r.body
            );
            ensure!(r.header("retry-after").is_some(), "503 without Retry-After: {}", r.body);
            ensure!(
                method == "GET" || r.header("x-ferry-request-id").is_some(),
                "a write's 503 without the request id to retry with: {}",
                r.body
            );
            let body = r.json()?;
            let code = body["error"]["code"].as_str().unwrap_or_default().to_string();
            let message = body["error"]["message"].as_str().unwrap_or_default().to_string();
            eprintln!("{tag}: attempt {attempt}: {method} {path} -> 503 {code} after {took:?}: {message}");
            match code.as_str() {
                "no_leader" => ensure!(
                    took >= Duration::from_millis(TIMEOUT_MS)
                        && message.contains(&format!("({TIMEOUT_MS} ms)")),
                    "{method} {path}: no_leader after {took:?}, before the request timeout it names: {message}"
                ),
                "no_quorum" => {
                    let since: u64 = message
                        .split(" for ")
                        .nth(1)
                        .and_then(|rest| rest.split(" ms").next())
                        .and_then(|n| n.parse().ok())
                        .with_context(|| format!("no_quorum without a duration: {message}"))?;
                    // A read's confirmation round fails as soon as no
                    // majority answers. A write the leader proposed (the
                    // first, before it could tell) waits for one until the
                    // request timeout; once it has been without a majority
                    // for the quorum timeout it proposes nothing and says so
                    // at once.
                    if method != "GET" {
                        let proposed = message.contains("is in its log");
                        ensure!(
                            proposed || message.contains("was not proposed"),
                            "{method} {path}: no_quorum that says neither: {message}"
                        );
                        ensure!(
                            since >= 400 && (!proposed || took >= Duration::from_millis(TIMEOUT_MS)),
                            "{method} {path}: no_quorum after {took:?}, {since} ms without a majority: {message}"
                        );
                        if attempt > 0 {
                            ensure!(
                                !proposed,
                                "{method} {path}: proposed by a leader long without a majority: {message}"
                            );
                        }
                    }
                }
                _ => bail!("{method} {path}: error code {code:?} does not say what happened: {}", r.body),
            }
            if kill_leader {
                ensure!(code == "no_leader", "a follower without a leader answered {code}: {message}");
            }
            ensure!(
                took <= limit,
                "attempt {attempt}: {method} {path} answered after {took:?}, over request_timeout_ms {TIMEOUT_MS} + {MARGIN:?}"
            );
        }
    }

    // Stale reads still answer, and traffic flows with the last config.
    let r = c.send(survivor, "GET", "/v1/routes/web?consistency=stale", &[], None).await?;
    ensure!(r.status == 200, "stale read without quorum: {} {}", r.status, r.body);
    for i in 0..5 {
        let reply = ask_once(route_addr, &format!("new{i}")).await?;
        ensure!(reply == format!("one: new{i}"), "a new connection without quorum got {reply:?}");
    }
    ensure!(held.ask("after").await? == "one: after", "an established connection broke");
    ensure!(c.status(survivor).await?.routes == 1, "the survivor dropped its route");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_without_quorum_answers_503_and_keeps_forwarding() -> Result<()> {
    without_quorum("no-quorum-follower", true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_quorum_answers_503_and_keeps_forwarding() -> Result<()> {
    without_quorum("no-quorum-leader", false).await
}

// ------------------------------------------------------------------ names

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_members_name_every_node_of_a_static_cluster() -> Result<()> {
    // initial_members records ids and addresses only: the names are learnt.
    let c = Cluster::start("names", Opts::default()).await?;
    let leader = c.leader(&Cluster::IDS).await?;
    let want: Vec<String> = Cluster::IDS.iter().map(|id| format!("n{id}")).collect();
    for id in Cluster::IDS {
        poll(&format!("names in node {id}'s status and members"), WAIT, async || {
            let raft = c.status(id).await?.raft.context("no raft status")?;
            ensure!(raft.leader_name == Some(format!("n{leader}")), "leader_name in {raft:?}");
            let mut names: Vec<String> = raft.peers.iter().map(|p| p.name.clone()).collect();
            names.push(format!("n{id}"));
            names.sort();
            ensure!(names == want, "peers {:?}", raft.peers);
            let r = c.send(id, "GET", "/v1/members", &[], None).await?;
            let mut members: Vec<String> = r
                .json()?
                .as_array()
                .context("members are not a list")?
                .iter()
                .filter_map(|m| m["name"].as_str().map(str::to_string))
                .collect();
            members.sort();
            ensure!(members == want, "members named {members:?}");
            Ok(())
        })
        .await?;
    }
    let log = c.stderr(leader);
    ensure!(log.contains("this node is the raft leader"), "no leader line:\n{log}");
    Ok(())
}

// ---------------------------------------------------------------- chaos

/// Round-trip time of one echo exchange on `conn`, checking the reply.
async fn rtt(conn: &mut Conn, msg: &str, backend: &str) -> Result<Duration> {
    let t0 = Instant::now();
    let r = conn.ask(msg).await?;
    ensure!(r == format!("{backend}: {msg}"), "asked {msg:?}, got {r:?}");
    Ok(t0.elapsed())
}

/// A route `web` on every node to one echo backend; returns its port.
async fn chaos_cluster(tag: &str) -> Result<(Cluster, u16)> {
    let backend = echo_server("one").await?;
    let c = Cluster::start(tag, Opts::default()).await?;
    let leader = c.leader(&Cluster::IDS).await?;
    let port = free_ports(&c.ips(), 1)?[0];
    let index = written(
        &c.send(leader, "PUT", "/v1/routes/web", &[], Some(&route("web", &format!(":{port}"), backend)))
            .await?,
    )?;
    c.converged(&Cluster::IDS, index).await?;
    for id in Cluster::IDS {
        let addr = SocketAddr::new(c.ip(id), port);
        poll(&format!("node {id} forwarding"), WAIT, async || {
            ensure!(ask_once(addr, "hi").await? == "one: hi");
            Ok(())
        })
        .await?;
    }
    Ok((c, port))
}

/// A latency policy written on node 2 slows fresh connections through
/// nodes 1 and 3 within a second, and connections already open within
/// 100 ms of the node applying it; DELETE ends it everywhere, with every
/// byte of the open connections delivered in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chaos_policy_put_on_one_node_delays_traffic_through_every_node_until_deleted() -> Result<()> {
    const DELAY: Duration = Duration::from_millis(300);
    let (c, port) = chaos_cluster("chaos-latency").await?;
    let mut open = Vec::new();
    for id in Cluster::IDS {
        let mut conn = Conn::open(SocketAddr::new(c.ip(id), port)).await?;
        ensure!(rtt(&mut conn, "before", "one").await? < DELAY / 3, "node {id} is slow before any policy");
        open.push(conn);
    }
    let policy = json!({"name": "slow", "toxics": [{"kind": {"latency": {"latency_ms": 300}}}]});
    let put_at = Instant::now();
    written(&c.send(2, "PUT", "/v1/chaos/slow", &[], Some(&policy)).await?)?;
    for id in Cluster::IDS {
        let addr = SocketAddr::new(c.ip(id), port);
        poll(&format!("node {id} delays new connections"), Duration::from_secs(1), async || {
            let mut conn = Conn::open(addr).await?;
            let took = rtt(&mut conn, "fresh", "one").await?;
            ensure!(took >= DELAY && took < DELAY * 2, "a round trip took {took:?}");
            Ok(())
        })
        .await
        .with_context(|| format!("{:?} after the PUT", put_at.elapsed()))?;
    }
    for (i, conn) in open.iter_mut().enumerate() {
        let took = rtt(conn, "during", "one").await?;
        ensure!(took >= DELAY, "open connection {i}: a round trip under the policy took {took:?}");
    }
    // The policy is in effect on every node, and says so.
    let status = c.send(1, "GET", "/v1/chaos/slow", &[], None).await?.json()?;
    let on: Vec<&str> =
        status["in_effect_on"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    ensure!(on == ["n1", "n2", "n3"], "{status}");
    let route = c.send(3, "GET", "/v1/routes/web", &[], None).await?.json()?;
    ensure!(route["chaos"] == json!(["slow"]), "{route}");

    // Bytes in flight when the policy goes are delivered, in order.
    for conn in &mut open {
        conn.send(b"in-flight-1\nin-flight-2\n").await?;
    }
    let deleted = c.send(3, "DELETE", "/v1/chaos/slow", &[], None).await?;
    ensure!(deleted.status == 200, "{} {}", deleted.status, deleted.body);
    for conn in &mut open {
        for want in ["one: in-flight-1", "one: in-flight-2"] {
            let line = conn.line().await?;
            ensure!(line == want, "got {line:?}, wanted {want:?}");
        }
    }
    for id in Cluster::IDS {
        let addr = SocketAddr::new(c.ip(id), port);
        poll(&format!("node {id} fast again"), Duration::from_secs(1), async || {
            let mut conn = Conn::open(addr).await?;
            let took = rtt(&mut conn, "after", "one").await?;
            ensure!(took < DELAY / 3, "a round trip took {took:?}");
            Ok(())
        })
        .await?;
    }
    for (i, conn) in open.iter_mut().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let took = rtt(conn, "after", "one").await?;
            if took < DELAY / 3 {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "open connection {i}: still {took:?} a second after the DELETE"
            );
        }
    }
    Ok(())
}

/// A policy scoped to node n1 slows only n1; one scoped to backend `two`
/// slows only connections to it; `expires_at` ends a policy on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_scope_by_node_and_backend_and_expiry() -> Result<()> {
    const DELAY: Duration = Duration::from_millis(300);
    let (one, two) = (echo_server("one").await?, echo_server("two").await?);
    let c = Cluster::start("chaos-scope", Opts::default()).await?;
    let leader = c.leader(&Cluster::IDS).await?;
    let port = free_ports(&c.ips(), 1)?[0];
    let web = json!({"name": "web", "listen": format!(":{port}"), "balance": "round_robin", "backends": [
        {"id": "one", "addr": one.to_string()}, {"id": "two", "addr": two.to_string()}]});
    let index = written(&c.send(leader, "PUT", "/v1/routes/web", &[], Some(&web)).await?)?;
    c.converged(&Cluster::IDS, index).await?;
    let timed = async |id: u64| -> Result<(String, Duration)> {
        let mut conn = Conn::open(SocketAddr::new(c.ip(id), port)).await?;
        let t0 = Instant::now();
        let r = conn.ask("x").await?;
        Ok((r, t0.elapsed()))
    };
    let slow = |p: Value| -> Value {
        let mut p = p;
        p["toxics"] = json!([{"kind": {"latency": {"latency_ms": 300}}}]);
        p
    };
    // Node scope.
    written(
        &c.send(
            2,
            "PUT",
            "/v1/chaos/n1",
            &[],
            Some(&slow(json!({"name": "n1", "scope": {"nodes": ["n1"]}}))),
        )
        .await?,
    )?;
    poll("n1 slowed", WAIT, async || {
        ensure!(timed(1).await?.1 >= DELAY);
        Ok(())
    })
    .await?;
    for id in [2, 3] {
        for _ in 0..4 {
            let (r, took) = timed(id).await?;
            ensure!(took < DELAY / 3, "node {id} slowed by a policy scoped to n1: {r} in {took:?}");
        }
    }
    let status = c.send(3, "GET", "/v1/chaos/n1", &[], None).await?.json()?;
    ensure!(status["in_effect_on"] == json!(["n1"]), "{status}");
    written(&c.send(1, "DELETE", "/v1/chaos/n1", &[], None).await?)?;
    // Backend scope: connections to `two` only, on every node.
    written(
        &c.send(
            3,
            "PUT",
            "/v1/chaos/b2",
            &[],
            Some(&slow(json!({"name": "b2", "scope": {"backends": ["two"]}}))),
        )
        .await?,
    )?;
    for id in Cluster::IDS {
        poll(&format!("node {id}: `two` slowed, `one` not"), WAIT, async || {
            let (mut saw_one, mut saw_two) = (false, false);
            for _ in 0..4 {
                let (r, took) = timed(id).await?;
                if r.starts_with("one") {
                    ensure!(took < DELAY / 3, "backend one slowed: {took:?}");
                    saw_one = true;
                } else {
                    ensure!(took >= DELAY, "backend two not slowed yet: {took:?}");
                    saw_two = true;
                }
            }
            ensure!(saw_one && saw_two, "round robin reached both");
            Ok(())
        })
        .await?;
    }
    written(&c.send(3, "DELETE", "/v1/chaos/b2", &[], None).await?)?;
    // Expiry: in effect now, gone 1.5 s later without a write.
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let expiring = json!({"name": "brief", "expires_at": now_ms + 1500,
        "toxics": [{"kind": {"latency": {"latency_ms": 300}}}]});
    written(&c.send(1, "PUT", "/v1/chaos/brief", &[], Some(&expiring)).await?)?;
    poll("brief in effect", WAIT, async || {
        ensure!(timed(2).await?.1 >= DELAY);
        Ok(())
    })
    .await?;
    let expiry = std::time::UNIX_EPOCH + Duration::from_millis(now_ms + 1500);
    tokio::time::sleep(
        expiry.duration_since(std::time::SystemTime::now()).unwrap_or_default() + Duration::from_millis(100),
    )
    .await;
    for id in Cluster::IDS {
        let (r, took) = timed(id).await?;
        ensure!(took < DELAY / 3, "node {id} still slow 100 ms after the expiry: {r} in {took:?}");
    }
    Ok(())
}

/// `refuse` closes new connections before any backend connect;
/// `connect_delay` holds them before it; `reset_peer` resets the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_refuse_connect_delay_and_reset_act_on_new_connections() -> Result<()> {
    let (c, port) = chaos_cluster("chaos-connect").await?;
    let addr = |id: u64| SocketAddr::new(c.ip(id), port);
    let refuse = json!({"name": "refuse", "toxics": [{"kind": {"refuse": {}}}]});
    written(&c.send(1, "PUT", "/v1/chaos/refuse", &[], Some(&refuse)).await?)?;
    for id in Cluster::IDS {
        poll(&format!("node {id} refuses"), WAIT, async || {
            let mut conn = Conn::open(addr(id)).await?;
            conn.send(b"x\n").await?;
            conn.expect_closed(IO_TIMEOUT).await
        })
        .await?;
    }
    written(&c.send(1, "DELETE", "/v1/chaos/refuse", &[], None).await?)?;
    let delay = json!({"name": "handshake", "toxics": [{"kind": {"connect_delay": {"delay_ms": 400}}}]});
    written(&c.send(2, "PUT", "/v1/chaos/handshake", &[], Some(&delay)).await?)?;
    for id in Cluster::IDS {
        poll(&format!("node {id} holds the connect"), WAIT, async || {
            let t0 = Instant::now();
            let r = ask_once(addr(id), "hi").await?;
            ensure!(r == "one: hi", "{r}");
            ensure!(t0.elapsed() >= Duration::from_millis(400), "answered after {:?}", t0.elapsed());
            Ok(())
        })
        .await?;
    }
    written(&c.send(2, "DELETE", "/v1/chaos/handshake", &[], None).await?)?;
    let reset = json!({"name": "rst", "toxics": [{"direction": "upstream", "kind": {"reset_peer": {"timeout_ms": 0}}}]});
    written(&c.send(3, "PUT", "/v1/chaos/rst", &[], Some(&reset)).await?)?;
    poll("node 1 resets", WAIT, async || {
        let mut s = tokio::net::TcpStream::connect(addr(1)).await?;
        s.write_all(b"x\n").await?;
        let mut buf = [0u8; 16];
        match tokio::time::timeout(IO_TIMEOUT, s.read(&mut buf)).await? {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
            other => bail!("wanted a reset, got {other:?}"),
        }
    })
    .await?;
    let metrics = c.send(1, "GET", "/metrics", &[], None).await?.body;
    ensure!(metrics.contains("ferry_chaos_resets_total"), "no reset metric");
    ensure!(
        metrics
            .lines()
            .any(|l| l.starts_with("ferry_chaos_connections_total{policy=\"refuse\",route=\"web\"}")),
        "no per-policy connection count"
    );
    Ok(())
}

/// A `timeout` policy reaches an idle established connection (it waits
/// for data, so only the route's poke wakes it) and closes it after its
/// timeout, on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_policy_closes_idle_established_connections() -> Result<()> {
    let (c, port) = chaos_cluster("chaos-idle").await?;
    let mut open = Vec::new();
    for id in Cluster::IDS {
        let mut conn = Conn::open(SocketAddr::new(c.ip(id), port)).await?;
        ensure!(conn.ask("hi").await? == "one: hi");
        open.push(conn);
    }
    // Idle long enough that nothing of the connection's own wakes it (its
    // byte counters' timer stops two seconds after the last byte).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let policy = json!({"name": "hold", "toxics": [{"direction": "upstream", "kind": {"timeout": {"timeout_ms": 200}}}]});
    written(&c.send(2, "PUT", "/v1/chaos/hold", &[], Some(&policy)).await?)?;
    for (i, conn) in open.iter_mut().enumerate() {
        conn.expect_closed(Duration::from_secs(1)).await.with_context(|| format!("idle connection {i}"))?;
    }
    Ok(())
}

// ---------------------------------------------------------- applied everywhere

/// `wait_applied` (the CLI's `--wait-applied`) answers once every node's
/// data plane runs the write: right after it, the route forwards on every
/// node, with no polling. `GET /v1/status?min_index=` waits for the data
/// plane, and answers at its `wait` with the index it runs when that is
/// not reached; its parameters are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_confirmed_applied_on_every_node_and_forwards_at_once() -> Result<()> {
    use ferry_client::http::AdminClient;
    let backend = echo_server("one").await?;
    let c = Cluster::start("applied", Opts::default()).await?;
    let port = free_ports(&c.ips(), 1)?[0];
    let client = AdminClient::with_addrs(Cluster::IDS.iter().map(|id| c.admin(*id)).collect());
    let route: ferry_client::RouteSpec = serde_json::from_value(route("web", &format!(":{port}"), backend))?;
    let w = client.put_route(&route, Default::default()).await?;
    let rows = ferry_client::wait::wait_applied(&client, w.index, WAIT).await?;
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    ensure!(names == ["n1", "n2", "n3"], "{rows:?}");
    for row in &rows {
        ensure!(row.applied() && row.data_index >= Some(w.index), "{row:?}");
    }
    for id in Cluster::IDS {
        // Once: the listener is bound when the node says it runs the index.
        let answer = ask_once(SocketAddr::new(c.ip(id), port), "hi").await;
        ensure!(answer.as_deref().ok() == Some("one: hi"), "node {id}: {answer:?}");
    }

    // An index not written yet: the node answers at the wait, behind.
    let t0 = Instant::now();
    let s = client.with_addr(c.admin(2)).status_at(w.index + 100, Duration::from_millis(300)).await?;
    ensure!(t0.elapsed() >= Duration::from_millis(300), "answered after {:?}", t0.elapsed());
    ensure!(s.value.data_index >= w.index && s.value.data_index < w.index + 100, "{:?}", s.value);
    let rows = ferry_client::wait::wait_applied(&client, w.index + 100, Duration::from_millis(400)).await?;
    ensure!(rows.len() == 3 && rows.iter().all(|r| !r.applied()), "{rows:?}");

    // A node that is down is behind, by name.
    let mut c = c;
    c.kill9(3)?;
    let w = client.delete_route("web", Default::default()).await?;
    let rows = ferry_client::wait::wait_applied(&client, w.index, Duration::from_secs(2)).await?;
    let behind: Vec<&str> = rows.iter().filter(|r| !r.applied()).map(|r| r.name.as_str()).collect();
    ensure!(behind == ["n3"], "{rows:?}");

    for (query, field) in
        [("?min_index=x", "min_index"), ("?wait=1s", "wait"), ("?min_index=1&wait=9q", "wait")]
    {
        let r = c.send(1, "GET", &format!("/v1/status{query}"), &[], None).await?;
        ensure!(r.status == 400 && r.body.contains(&format!("\"path\":\"{field}\"")), "{query}: {r:?}");
    }
    Ok(())
}
