//! A rolling upgrade under load, and downgrades, between an older ferryd
//! and this build: run by `ops/upgrade-test.sh`, which builds the commit it
//! pins and passes the binary in `FERRY_UPGRADE_OLD`.
//!
//! Three nodes in the quick start's layout (gossip, `bootstrap_expect = 3`,
//! a seeded route) on 127.0.91.1-3 start on the old build. A writer makes
//! compare-and-set writes with request ids and creates chaos policies
//! through whichever nodes are up; a client opens a new TCP connection
//! through every node that is up, round after round. The nodes are then
//! replaced one at a time (SIGTERM, the other build on the same data dir).
//! Checked: no acknowledged write is lost, no connection through a node
//! that was up failed, writes were refused (503) only around a restart, a
//! write using this build's new feature (a snapshot restore, protocol 6)
//! is refused with `feature_not_enabled` until the last node is upgraded
//! and accepted after, losing no acknowledged write (it is a
//! compare-and-set on the config index, retried while the writer pauses);
//! a node taken back to the old build works while the feature is unused,
//! and once it is used refuses cleanly, saying why.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{Ferryd, IO_TIMEOUT, TempDir, ask_once, echo_server, http, poll, write_config};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::sync::Mutex;

const IDS: [u64; 3] = [1, 2, 3];
/// The nodes' subnet: the script runs this test alone, so fixed ports on
/// addresses no other test uses.
const NET: &str = "127.0.91";
const ROUTE_PORT: u16 = 7000;
const CAS_PORT: u16 = 7001;
/// How long a node may take to stop, start, or catch up.
const WAIT: Duration = Duration::from_secs(30);
/// A 503 this long after a restart's node became ready again still counts
/// as the restart's (an election, followers learning the new leader).
const SETTLE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Build {
    Old,
    New,
}

fn ip(id: u64) -> String {
    format!("{NET}.{id}")
}

fn admin(id: u64) -> SocketAddr {
    format!("{}:7948", ip(id)).parse().expect("an address")
}

/// Which nodes the loads may use; `epoch` moves when one goes down, so a
/// failure is counted only if its node was up for the whole attempt.
struct Up {
    up: [AtomicBool; 3],
    epoch: [AtomicU64; 3],
}

impl Up {
    fn is_up(&self, id: u64) -> Option<u64> {
        let i = (id - 1) as usize;
        self.up[i].load(Relaxed).then(|| self.epoch[i].load(Relaxed))
    }

    fn still(&self, id: u64, epoch: u64) -> bool {
        let i = (id - 1) as usize;
        self.up[i].load(Relaxed) && self.epoch[i].load(Relaxed) == epoch
    }

    fn set(&self, id: u64, up: bool) {
        let i = (id - 1) as usize;
        if !up {
            self.epoch[i].fetch_add(1, Relaxed);
        }
        self.up[i].store(up, Relaxed);
    }
}

/// What the loads saw.
#[derive(Default)]
struct Seen {
    connections_ok: u64,
    /// Connections through a node that was up throughout, which failed.
    connection_failures: Vec<String>,
    cas_acked: u64,
    policies_acked: BTreeSet<String>,
    /// When each write was refused with a 503, and why.
    refusals: Vec<(Instant, String)>,
}

struct Cluster {
    dir: TempDir,
    old: PathBuf,
    procs: Vec<Option<(Ferryd, Build)>>,
    runs: u32,
    /// From a node's stop to `SETTLE` after it is ready again.
    restarts: Vec<(Instant, Instant)>,
}

impl Cluster {
    fn config(&self, id: u64, backends: &[SocketAddr]) -> String {
        let ip = ip(id);
        let data = self.dir.file(&format!("n{id}"));
        format!(
            r#"[node]
name = "n{id}"
bind_addr = "{ip}"
data_dir = "{data}"
drain_timeout_ms = 500

[admin]
addr = "{ip}:7948"

[cluster]
addr = "{ip}:7947"

[gossip]
addr = "{ip}:7946"
join = ["{NET}.1", "{NET}.2", "{NET}.3"]
bootstrap_expect = 3
profile = "fast"

[[routes]]
name = "demo"
listen = ":{ROUTE_PORT}"
  [[routes.backends]]
  id = "a"
  addr = "{a}"
  [[routes.backends]]
  id = "b"
  addr = "{b}"

# The writer's counter is backend a's weight; b keeps the route valid.
[[routes]]
name = "cas"
listen = ":{CAS_PORT}"
  [[routes.backends]]
  id = "a"
  addr = "{a}"
  weight = 0
  [[routes.backends]]
  id = "b"
  addr = "{b}"
"#,
            data = data.display(),
            a = backends[0],
            b = backends[1],
        )
    }

    fn start(&mut self, id: u64, build: Build) -> Result<()> {
        self.runs += 1;
        let bin = match build {
            Build::Old => self.old.clone(),
            Build::New => PathBuf::from(env!("CARGO_BIN_EXE_ferryd")),
        };
        let config = self.dir.file(&format!("n{id}.toml"));
        let config = config.to_str().context("config path")?;
        let name = format!("n{id}.{}", self.runs);
        let p = Ferryd::spawn_bin(&bin, &self.dir, &name, &["--config", config], &[])?;
        self.procs[(id - 1) as usize] = Some((p, build));
        Ok(())
    }

    async fn stop(&mut self, id: u64) -> Result<()> {
        let (mut p, _) = self.procs[(id - 1) as usize].take().context("not running")?;
        p.signal(Signal::SIGTERM)?;
        let status = p.wait_exit(WAIT).await?;
        ensure!(status.success(), "n{id} exited {status} on SIGTERM; stderr:\n{}", p.stderr());
        ensure!(!p.stderr().contains("panicked"), "n{id} panicked:\n{}", p.stderr());
        Ok(())
    }

    fn stderr(&self, id: u64) -> String {
        self.procs[(id - 1) as usize].as_ref().map(|(p, _)| p.stderr()).unwrap_or_default()
    }
}

async fn get_json(id: u64, path: &str) -> Result<Value> {
    let r = http(admin(id), "GET", path, &[], None, IO_TIMEOUT).await?;
    ensure!(r.status == 200, "GET {path} on n{id}: {} {}", r.status, r.body);
    r.json()
}

async fn ready(id: u64) -> Result<()> {
    let r = http(admin(id), "GET", "/health/ready", &[], None, IO_TIMEOUT).await?;
    ensure!(r.status == 200, "n{id} not ready: {} {}", r.status, r.body);
    Ok(())
}

/// This build's version as `/v1/status` says it.
async fn version_of(id: u64) -> Result<(String, u64)> {
    let s = get_json(id, "/v1/status").await?;
    let version = s["version"].as_str().context("no version")?.to_string();
    Ok((version, s["protocol"].as_u64().unwrap_or(0)))
}

/// Asks the writer to hold still between two rounds.
#[derive(Default)]
struct Pause {
    /// Set by the test: hold still.
    requested: AtomicBool,
    /// Set by the writer: holding still (no write of it in flight).
    idle: AtomicBool,
}

/// The writer: compare-and-set increments of route `cas`'s weight, each with
/// its own request id and retried with it after a 503, and a new chaos
/// policy after each, through the nodes that are up in turn.
async fn writer(up: Arc<Up>, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>, pause: Arc<Pause>) -> Result<()> {
    let mut k = 0u64;
    while !stop.load(Relaxed) {
        pause.idle.store(pause.requested.load(Relaxed), Relaxed);
        if pause.requested.load(Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        k += 1;
        let id = IDS[(k % 3) as usize];
        if up.is_up(id).is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        // Read the current revision and weight (linearizable).
        let Ok(route) = get_json(id, "/v1/routes/cas").await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let revision = route["revision"].as_u64().context("revision")?;
        let mut config = route["config"].clone();
        let weight = config["backends"][0]["weight"].as_u64().context("weight")?;
        config["backends"][0]["weight"] = json!((weight + 1) % 257);
        let body = config.to_string();
        let path = format!("/v1/routes/cas?cas={revision}");
        let request_id = format!("{:032x}", 0x7000_0000_0000u128 + u128::from(k));
        if write(&up, &seen, "PUT", &path, &body, &request_id, &stop).await? == 200 {
            seen.lock().await.cas_acked += 1;
        }
        let name = format!("p{k}");
        let policy = json!({"name": name, "toxics": [{"kind": {"latency": {"latency_ms": 1}}}]}).to_string();
        let request_id = format!("{:032x}", 0x8000_0000_0000u128 + u128::from(k));
        if write(&up, &seen, "PUT", &format!("/v1/chaos/{name}"), &policy, &request_id, &stop).await? == 200 {
            seen.lock().await.policies_acked.insert(name);
        }
    }
    Ok(())
}

/// One write, retried with its request id through the nodes that are up
/// until it gets an answer that is not a 503 (or 20 s pass). Returns the
/// final status; a 409 `cas_mismatch` means another attempt's answer.
async fn write(
    up: &Up,
    seen: &Mutex<Seen>,
    method: &str,
    path: &str,
    body: &str,
    request_id: &str,
    stop: &AtomicBool,
) -> Result<u16> {
    let start = Instant::now();
    let mut attempt = 0u64;
    while start.elapsed() < Duration::from_secs(20) {
        attempt += 1;
        let id = IDS[(attempt % 3) as usize];
        let Some(epoch) = up.is_up(id) else { continue };
        let headers = [("X-Ferry-Request-Id", request_id)];
        match http(admin(id), method, path, &headers, Some(body), Duration::from_secs(10)).await {
            Ok(r) if r.status == 503 => seen
                .lock()
                .await
                .refusals
                .push((Instant::now(), format!("n{id}: {method} {path}: {}", r.body))),
            Ok(r) if r.status == 200 || r.status == 409 => return Ok(r.status),
            Ok(r) => bail!("{method} {path} on n{id}: {} {}", r.status, r.body),
            // The node went down under the request.
            Err(_) if !up.still(id, epoch) => {}
            Err(e) => {
                seen.lock().await.refusals.push((Instant::now(), format!("n{id}: {method} {path}: {e:#}")))
            }
        }
        if stop.load(Relaxed) && attempt > 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{method} {path} (request id {request_id}) got no answer but 503s for 20 s")
}

/// The client: a new connection through every node that is up, round after
/// round.
async fn traffic(up: Arc<Up>, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    while !stop.load(Relaxed) {
        for id in IDS {
            let Some(epoch) = up.is_up(id) else { continue };
            let addr: SocketAddr = format!("{}:{ROUTE_PORT}", ip(id)).parse().expect("an address");
            let r = ask_once(addr, "t").await;
            let mut seen = seen.lock().await;
            match r {
                Ok(reply) if reply == "a: t" || reply == "b: t" => seen.connections_ok += 1,
                _ if !up.still(id, epoch) => {}
                Ok(reply) => seen.connection_failures.push(format!("n{id}: answered {reply:?}")),
                Err(e) => seen.connection_failures.push(format!("n{id}: {e:#}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// This build's new feature (`snapshot_restore`): node `id`'s snapshot of
/// the config restored through node `through` with a compare-and-set on
/// the snapshot's index, so that it changes nothing but the revisions and
/// loses no write. Returns the answer (409 `cas_mismatch` when a write
/// came between) and the snapshot's index.
async fn restore_current(id: u64, through: u64) -> Result<(common::Reply, u64)> {
    let snapshot = http(admin(id), "GET", "/v1/snapshot", &[], None, IO_TIMEOUT).await?;
    ensure!(snapshot.status == 200, "GET /v1/snapshot on n{id}: {} {}", snapshot.status, snapshot.body);
    let index: u64 = snapshot.header("x-ferry-index").context("no index")?.parse()?;
    let path = format!("/v1/snapshot/restore?cas={index}");
    let r = http(admin(through), "POST", &path, &[], Some(&snapshot.body), IO_TIMEOUT).await?;
    Ok((r, index))
}

/// Replaces node `id` with `build`: marked down for the loads, SIGTERM,
/// started on the same data dir, marked up once ready and speaking the
/// build's protocol (`expect`). (The two builds' versions differ in their
/// commit, but not in a tree with uncommitted changes: the protocol tells.)
async fn restart(c: &mut Cluster, up: &Up, id: u64, build: Build, expect: u64) -> Result<()> {
    let began = Instant::now();
    up.set(id, false);
    c.stop(id).await?;
    c.start(id, build)?;
    poll(&format!("n{id} ready on the {build:?} build"), WAIT, async || {
        ready(id).await?;
        let (version, protocol) = version_of(id).await?;
        ensure!(protocol == expect, "n{id} runs {version} (protocol {protocol}), not protocol {expect}");
        Ok(())
    })
    .await
    .with_context(|| format!("n{id} stderr:\n{}", c.stderr(id)))?;
    up.set(id, true);
    c.restarts.push((began, Instant::now() + SETTLE));
    eprintln!(
        "upgrade-test: n{id} now runs the {build:?} build (protocol {expect}), {:?} after its stop",
        began.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an older ferryd: run ops/upgrade-test.sh"]
async fn a_rolling_upgrade_and_downgrades_under_load() -> Result<()> {
    let old = PathBuf::from(std::env::var("FERRY_UPGRADE_OLD").context("FERRY_UPGRADE_OLD is not set")?);
    let backends = [echo_server("a").await?, echo_server("b").await?];
    let mut c = Cluster {
        dir: TempDir::new("upgrade")?,
        old,
        procs: (0..3).map(|_| None).collect(),
        runs: 0,
        restarts: Vec::new(),
    };
    for id in IDS {
        write_config(&c.dir.file(&format!("n{id}.toml")), &c.config(id, &backends))?;
        c.start(id, Build::Old)?;
    }
    for id in IDS {
        poll(&format!("n{id} ready"), WAIT, async || ready(id).await)
            .await
            .with_context(|| format!("n{id} stderr:\n{}", c.stderr(id)))?;
        // The seeded routes are applied once the cluster has formed.
        let addr: SocketAddr = format!("{}:{ROUTE_PORT}", ip(id)).parse()?;
        poll(&format!("n{id} forwarding"), WAIT, async || ask_once(addr, "t").await.map(|_| ())).await?;
        poll(&format!("n{id} has the cas route"), WAIT, async || {
            get_json(id, "/v1/routes/cas").await.map(|_| ())
        })
        .await?;
    }
    let (old_version, old_protocol) = version_of(1).await?;
    let new_version = ferry_node::version::version();
    let new_protocol = u64::from(ferry_node::version::PROTOCOL);
    ensure!(
        old_protocol + 1 == u64::from(ferry_node::version::PROTOCOL),
        "the old build speaks protocol {old_protocol}, this one {}: the test moves one protocol",
        ferry_node::version::PROTOCOL
    );
    eprintln!("upgrade-test: {old_version} (protocol {old_protocol}) -> {new_version}");

    let up = Arc::new(Up { up: Default::default(), epoch: Default::default() });
    for id in IDS {
        up.set(id, true);
    }
    let (seen, stop) = (Arc::new(Mutex::new(Seen::default())), Arc::new(AtomicBool::new(false)));
    let pause = Arc::new(Pause::default());
    let writer =
        tokio::spawn(writer(Arc::clone(&up), Arc::clone(&seen), Arc::clone(&stop), Arc::clone(&pause)));
    let client = tokio::spawn(traffic(Arc::clone(&up), Arc::clone(&seen), Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let result = async {
        // The rolling upgrade. Before the last node, the new feature is
        // refused, naming the node still behind.
        for id in IDS {
            if id == 3 {
                let (r, _) = restore_current(1, 1).await?;
                ensure!(
                    r.status == 409,
                    "a new-feature write with n3 on the old build: {} {}",
                    r.status,
                    r.body
                );
                let body = r.json()?;
                ensure!(body["error"]["code"] == "feature_not_enabled", "{body}");
                let message = body["error"]["message"].as_str().unwrap_or_default();
                ensure!(
                    message.contains("n3") && message.contains(&format!("protocol {old_protocol}")),
                    "{message}"
                );
            }
            restart(&mut c, &up, id, Build::New, new_protocol).await?;
        }
        // A downgrade while the feature is unused works, and back.
        restart(&mut c, &up, 3, Build::Old, old_protocol).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        restart(&mut c, &up, 3, Build::New, new_protocol).await?;
        // Every member speaks the feature now. The writer holds still so
        // that the restore's compare-and-set can win, and until n2 is
        // stopped, so that no log compaction folds the restore into a
        // snapshot the old build could read.
        pause.requested.store(true, Relaxed);
        poll("the writer holds still", WAIT, async || {
            ensure!(pause.idle.load(Relaxed), "a write is in flight");
            Ok(())
        })
        .await?;
        let index = poll("a restore once all run the new build", WAIT, async || {
            let (r, taken) = restore_current(2, 3).await?;
            ensure!(
                r.status == 200,
                "a new-feature write once all run protocol {new_protocol} (snapshot at {taken}): {} {}",
                r.status,
                r.body
            );
            r.json()?["index"].as_u64().context("no index")
        })
        .await?;
        for id in IDS {
            poll(&format!("n{id} applied the restore"), WAIT, async || {
                let s = get_json(id, "/v1/status").await?;
                ensure!(s["index"].as_u64().unwrap_or(0) >= index, "{s}");
                let route = get_json(id, "/v1/routes/cas?consistency=stale").await?;
                ensure!(route["revision"] == index, "the restore did not give cas a new revision: {route}");
                Ok(())
            })
            .await?;
        }
        // A downgrade with the feature in use: the old build refuses the
        // entry it cannot read, says why, and does not panic.
        up.set(2, false);
        let began = Instant::now();
        c.stop(2).await?;
        pause.requested.store(false, Relaxed);
        c.start(2, Build::Old)?;
        // It either stops at once, saying why (the entry is last in its
        // log), or stays up unready, saying why (it meets the entry later,
        // or its leader sends it).
        let deadline = Instant::now() + WAIT;
        let why = loop {
            if let Some((p, _)) = c.procs[1].as_mut()
                && let Some(status) = p.exited()?
            {
                ensure!(!status.success(), "n2 exited 0 on the old build with the new feature in use");
                break format!("exited {status}: {}", p.stderr());
            }
            let answer = http(admin(2), "GET", "/health/ready", &[], None, IO_TIMEOUT).await;
            if let Ok(r) = answer {
                ensure!(
                    r.status != 200,
                    "n2 is ready on the old build with the new feature in use: {}",
                    r.body
                );
                let body = r.json()?;
                let code = body["error"]["code"].as_str().unwrap_or_default();
                if code == "raft_stopped" || code == "incompatible" {
                    break body["error"]["message"].as_str().unwrap_or_default().to_string();
                }
            }
            ensure!(
                Instant::now() < deadline,
                "n2 on the old build never said why; stderr:\n{}",
                c.stderr(2)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        ensure!(
            why.contains("RestoreSnapshot") && why.contains("newer ferry"),
            "the refusal does not say why: {why}"
        );
        ensure!(!c.stderr(2).contains("panicked"), "n2 panicked:\n{}", c.stderr(2));
        eprintln!("upgrade-test: the old build with the new feature in use: {why}");
        if c.procs[1].as_mut().map(|(p, _)| p.exited()).transpose()?.flatten().is_some() {
            c.procs[1] = None;
            c.start(2, Build::New)?;
            poll("n2 ready on the new build again", WAIT, async || ready(2).await).await?;
            up.set(2, true);
        } else {
            restart(&mut c, &up, 2, Build::New, new_protocol).await?;
        }
        c.restarts.push((began, Instant::now() + SETTLE));
        poll("n2 caught up", WAIT, async || {
            let s = get_json(2, "/v1/status").await?;
            ensure!(s["index"].as_u64().unwrap_or(0) >= index, "{s}");
            Ok(())
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        anyhow::Ok(())
    }
    .await;
    stop.store(true, Relaxed);
    let written = writer.await?;
    client.await?;
    result?;
    written?;

    // No acknowledged write is lost, on any node.
    let seen = seen.lock().await;
    let route = get_json(1, "/v1/routes/cas").await?;
    let weight = route["config"]["backends"][0]["weight"].as_u64().context("weight")?;
    ensure!(
        weight == seen.cas_acked % 257,
        "{} CAS writes acknowledged, the weight is {weight}",
        seen.cas_acked
    );
    ensure!(seen.cas_acked > 10, "only {} CAS writes were acknowledged", seen.cas_acked);
    let index = get_json(1, "/v1/status").await?["index"].as_u64().unwrap_or(0);
    for id in IDS {
        poll(&format!("n{id} converged"), WAIT, async || {
            let s = get_json(id, "/v1/status").await?;
            ensure!(s["index"].as_u64().unwrap_or(0) >= index, "{s}");
            Ok(())
        })
        .await?;
        let policies: BTreeSet<String> = get_json(id, "/v1/chaos?consistency=stale")
            .await?
            .as_array()
            .context("policies")?
            .iter()
            .filter_map(|p| p["policy"]["name"].as_str().map(str::to_string))
            .collect();
        let lost: Vec<&String> = seen.policies_acked.difference(&policies).collect();
        ensure!(lost.is_empty(), "n{id} lost acknowledged policies {lost:?}");
    }
    // No connection through a node that was up failed.
    ensure!(
        seen.connection_failures.is_empty(),
        "{} connections failed through nodes that were up: {:?}",
        seen.connection_failures.len(),
        seen.connection_failures
    );
    ensure!(seen.connections_ok > 100, "only {} connections", seen.connections_ok);
    // Writes were refused only around a restart (an election).
    let outside: Vec<&String> = seen
        .refusals
        .iter()
        .filter(|(at, _)| !c.restarts.iter().any(|(from, to)| at >= from && at <= to))
        .map(|(_, why)| why)
        .collect();
    ensure!(outside.is_empty(), "writes refused outside any restart: {outside:?}");
    eprintln!(
        "upgrade-test: {} CAS writes and {} policies acknowledged and kept; {} connections, none failed; \
         {} refusals, all during restarts",
        seen.cas_acked,
        seen.policies_acked.len(),
        seen.connections_ok,
        seen.refusals.len()
    );
    for id in IDS {
        c.stop(id).await?;
    }
    Ok(())
}
