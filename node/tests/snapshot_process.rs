//! Backup and disaster recovery with real `ferryd` processes: a snapshot
//! saved from a live cluster verifies and a damaged one is refused; the
//! recovery from the permanent loss of a quorum (save with
//! `consistency=stale` from the survivor, `ferryd --restore-snapshot` into
//! a new cluster, traffic resumes through the same routes); and
//! `POST /v1/snapshot/restore` on a live cluster (compare-and-set on the
//! config index, force, bad bodies changing nothing).
//!
//! Each cluster: three nodes on 127.0.N.1-3 (N picked per cluster and
//! process, never 0) with static membership and ports free on all three
//! addresses. Every process is killed by its own PID when its guard drops.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use anyhow::{Context, Result, anyhow, ensure};
use common::{Ferryd, IO_TIMEOUT, Reply, TempDir, WAIT, ask_once, echo_server, free_ports, http, poll};
use ferry_client::chaos::ChaosPolicy;
use ferry_client::snapshot::{Snapshot, SnapshotError, SnapshotPolicy, write_file_atomic};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IDS: [u64; 3] = [1, 2, 3];

/// A 127.0.N.0/24 per cluster, varied by process id and call (N in
/// 1..=250; ports are checked free on every address, so a net shared with
/// another test still works).
fn next_net() -> u8 {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = std::process::id().wrapping_mul(7).wrapping_add(61).wrapping_add(SEQ.fetch_add(1, Relaxed) * 3);
    (1 + n % 250) as u8
}

/// Where a cluster runs: its net and its ports (admin, cluster, then three
/// for routes), free on all three addresses.
struct Layout {
    net: u8,
    ports: Vec<u16>,
}

fn layout() -> Result<Layout> {
    let net = next_net();
    let ips: Vec<IpAddr> = IDS.iter().map(|id| ip(net, *id)).collect();
    Ok(Layout { net, ports: free_ports(&ips, 5)? })
}

/// Three nodes. Fields drop in order: processes before their dir.
struct Cluster {
    procs: Vec<Option<Ferryd>>,
    net: u8,
    /// Admin, cluster, then three route ports.
    ports: Vec<u16>,
    dir: TempDir,
}

impl Cluster {
    /// Writes the configs (`routes[i]`: TOML appended to node i+1's file)
    /// and starts the nodes, node `restore.0` with `--restore-snapshot
    /// restore.1`; waits until every node is ready.
    async fn start(
        layout: Layout,
        tag: &str,
        cluster_id: &str,
        routes: [&str; 3],
        restore: Option<(u64, &Path)>,
    ) -> Result<Self> {
        let dir = TempDir::new(tag)?;
        let Layout { net, ports } = layout;
        let mut c = Self { procs: vec![None, None, None], net, ports, dir };
        let members: Vec<String> = IDS.iter().map(|id| format!("{id}@{}", c.cluster_addr(*id))).collect();
        for id in IDS {
            let text = format!(
                r#"[node]
name = "n{id}"
bind_addr = "{ip}"
drain_timeout_ms = 500
workers = 1
data_dir = "{data}"

[admin]
addr = "{admin}"

[cluster]
node_id = {id}
addr = "{cluster}"
cluster_id = "{cluster_id}"
initial_members = {members:?}
heartbeat_ms = 50
election_timeout_min_ms = 200
election_timeout_max_ms = 400
{routes}"#,
                ip = c.ip(id),
                data = c.data_dir(id).display(),
                admin = c.admin(id),
                cluster = c.cluster_addr(id),
                routes = routes[id as usize - 1],
            );
            common::write_config(&c.config(id), &text)?;
        }
        for id in IDS {
            c.spawn(id, restore.filter(|(who, _)| *who == id).map(|(_, file)| file), "")?;
        }
        for id in IDS {
            c.wait_ready(id).await?;
        }
        Ok(c)
    }

    /// Starts node `id` from its config, with `--restore-snapshot FILE` if
    /// `restore` is given; its output goes to `n{id}{run}.std*`.
    fn spawn(&mut self, id: u64, restore: Option<&Path>, run: &str) -> Result<()> {
        let config = self.config(id);
        let mut args = vec!["--config", config.to_str().context("temp path is not UTF-8")?];
        if let Some(file) = restore {
            args.extend(["--restore-snapshot", file.to_str().context("temp path is not UTF-8")?]);
        }
        self.procs[id as usize - 1] = Some(Ferryd::spawn(&self.dir, &format!("n{id}{run}"), &args)?);
        Ok(())
    }

    fn ip(&self, id: u64) -> IpAddr {
        ip(self.net, id)
    }

    fn admin(&self, id: u64) -> SocketAddr {
        SocketAddr::new(self.ip(id), self.ports[0])
    }

    fn cluster_addr(&self, id: u64) -> SocketAddr {
        SocketAddr::new(self.ip(id), self.ports[1])
    }

    /// Route port `i` (0, 1 or 2).
    fn route_port(&self, i: usize) -> u16 {
        self.ports[2 + i]
    }

    fn config(&self, id: u64) -> PathBuf {
        self.dir.file(&format!("n{id}.toml"))
    }

    fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.file(&format!("n{id}-data"))
    }

    fn stderr(&self, id: u64) -> String {
        self.procs[id as usize - 1].as_ref().map(Ferryd::stderr).unwrap_or_default()
    }

    async fn wait_ready(&mut self, id: u64) -> Result<()> {
        let admin = self.admin(id);
        poll(&format!("n{id} ready"), WAIT, async || {
            let r = http(admin, "GET", "/health/ready", &[], None, IO_TIMEOUT).await?;
            ensure!(r.status == 200, "{} {}", r.status, r.body);
            Ok(())
        })
        .await
        .with_context(|| format!("n{id} stderr:\n{}", self.stderr(id)))
    }

    fn kill9(&mut self, id: u64) -> Result<()> {
        self.procs[id as usize - 1].take().with_context(|| format!("n{id} is not running"))?.kill9()
    }

    async fn send(&self, id: u64, method: &str, path: &str, body: Option<&str>) -> Result<Reply> {
        http(self.admin(id), method, path, &[], body, IO_TIMEOUT).await
    }

    /// A write that must succeed; returns the config index it got.
    async fn write(&self, id: u64, method: &str, path: &str, body: Option<&Value>) -> Result<u64> {
        let body = body.map(Value::to_string);
        let r = self.send(id, method, path, body.as_deref()).await?;
        ensure!(r.status == 200, "{method} {path} on n{id}: {} {}", r.status, r.body);
        r.json()?["index"].as_u64().context("no index")
    }

    /// Route and policy names node `id` has applied (stale reads: what it
    /// has itself).
    async fn names(&self, id: u64) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
        let names = |v: Value, key: &str| -> Result<BTreeSet<String>> {
            Ok(v.as_array()
                .context("not a list")?
                .iter()
                .filter_map(|x| x[key]["name"].as_str().map(str::to_string))
                .collect())
        };
        let routes = self.send(id, "GET", "/v1/routes?consistency=stale", None).await?;
        let chaos = self.send(id, "GET", "/v1/chaos?consistency=stale", None).await?;
        ensure!(routes.status == 200 && chaos.status == 200, "{} {}", routes.body, chaos.body);
        Ok((names(routes.json()?, "config")?, names(chaos.json()?, "policy")?))
    }

    /// Waits until every node has applied exactly `routes` and `policies`.
    async fn converged(&self, routes: &[&str], policies: &[&str]) -> Result<()> {
        let want = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        for id in IDS {
            poll(&format!("n{id} has routes {routes:?} and policies {policies:?}"), WAIT, async || {
                let (r, p) = self.names(id).await?;
                ensure!(r == want(routes) && p == want(policies), "n{id} has {r:?} and {p:?}");
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// Waits until a connection through route port `i` on every node
    /// reaches the echo backend named `backend`.
    async fn forwards(&self, i: usize, backend: &str) -> Result<()> {
        for id in IDS {
            let addr = SocketAddr::new(self.ip(id), self.route_port(i));
            poll(&format!("traffic through n{id} port {}", self.route_port(i)), WAIT, async || {
                let reply = ask_once(addr, "t").await?;
                ensure!(reply == format!("{backend}: t"), "answered {reply:?}");
                Ok(())
            })
            .await?;
        }
        Ok(())
    }
}

fn ip(net: u8, id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, net, id as u8))
}

fn route(name: &str, port: u16, backend: SocketAddr) -> Value {
    json!({"name": name, "listen": format!(":{port}"), "backends": [{"id": "a", "addr": backend.to_string()}]})
}

fn policy(name: &str, route: &str) -> Value {
    json!({"name": name, "scope": {"routes": [route]}, "toxics": [{"kind": {"latency": {"latency_ms": 1}}}]})
}

/// The bytes of `file` with one byte of its content changed.
fn damaged(bytes: &[u8]) -> Result<Vec<u8>> {
    let text = std::str::from_utf8(bytes)?;
    let at = text.find("\"routes\"").context("no routes in the snapshot")? + 3;
    let mut bad = bytes.to_vec();
    bad[at] ^= 0x20;
    Ok(bad)
}

/// A snapshot saved from a live cluster verifies, a damaged one is refused
/// by the reader, the server and `ferryd --restore-snapshot`, each naming
/// the checksum; the cluster then loses two nodes for good, the survivor's
/// stale snapshot seeds a new cluster, and traffic resumes through the
/// same routes on every node of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_from_the_permanent_loss_of_quorum() -> Result<()> {
    let backend = echo_server("a").await?;
    let mut old = Cluster::start(layout()?, "snap-old", "old-cluster", ["", "", ""], None).await?;
    let (web_port, api_port) = (old.route_port(0), old.route_port(1));
    old.write(1, "PUT", "/v1/routes/web", Some(&route("web", web_port, backend))).await?;
    old.write(2, "PUT", "/v1/routes/api", Some(&route("api", api_port, backend))).await?;
    old.write(3, "PUT", "/v1/chaos/slow", Some(&policy("slow", "api"))).await?;
    old.converged(&["api", "web"], &["slow"]).await?;
    old.forwards(0, "a").await?;

    // Saved from a live cluster: it verifies and says what it holds.
    let live = old.send(2, "GET", "/v1/snapshot", None).await?;
    ensure!(live.status == 200, "GET /v1/snapshot: {} {}", live.status, live.body);
    let snap = Snapshot::from_bytes(live.body.as_bytes()).map_err(|e| anyhow!("{e}"))?;
    ensure!(snap.cluster_id == "old-cluster" && snap.node == "n2", "{snap:?}");
    ensure!(snap.routes.len() == 2 && snap.chaos.len() == 1, "{snap:?}");
    let index: u64 = live.header("x-ferry-index").context("no index")?.parse()?;
    ensure!(snap.index == index && index > 0, "snapshot index {} vs header {index}", snap.index);
    ensure!(snap.routes.iter().all(|r| r.revision > 0 && r.revision <= index), "{snap:?}");
    // One damaged byte: refused, naming the checksum, by the reader ...
    let bad = damaged(live.body.as_bytes())?;
    let err = Snapshot::from_bytes(&bad).expect_err("a damaged snapshot verified");
    ensure!(matches!(err, SnapshotError::BadChecksum { .. }), "{err}");
    // ... and by ferryd, before it starts anything.
    let bad_file = old.dir.file("damaged.snap");
    std::fs::write(&bad_file, &bad)?;
    let fresh_dir = old.dir.file("never-used");
    let mut refused = Ferryd::spawn(
        &old.dir,
        "restore-damaged",
        &[
            "--data-dir",
            fresh_dir.to_str().context("path")?,
            "--bind",
            "127.0.0.1",
            "--bootstrap-expect",
            "1",
            "--restore-snapshot",
            bad_file.to_str().context("path")?,
        ],
    )?;
    let status = refused.wait_exit(WAIT).await?;
    ensure!(status.code() == Some(2), "a damaged snapshot: {status}; {}", refused.stderr());
    ensure!(refused.stderr().contains("checksum"), "{}", refused.stderr());
    ensure!(!fresh_dir.join("raft").exists(), "the refused restore created Raft state");

    // Two nodes are lost for good: no quorum, but the survivor answers a
    // stale snapshot of what it applied.
    old.kill9(2)?;
    old.kill9(3)?;
    let saved = old.dir.file("backup.snap");
    let stale = poll("a stale snapshot from the survivor", WAIT, async || {
        let r = old.send(1, "GET", "/v1/snapshot?consistency=stale", None).await?;
        ensure!(r.status == 200, "{} {}", r.status, r.body);
        Ok(r)
    })
    .await?;
    write_file_atomic(&saved, stale.body.as_bytes())?;
    let from_survivor = Snapshot::read_file(&saved).map_err(|e| anyhow!("{e}"))?;
    ensure!(from_survivor.node == "n1" && from_survivor.index == index, "{from_survivor:?}");
    ensure!(from_survivor.route_specs() == snap.route_specs() && from_survivor.chaos == snap.chaos);
    // The survivor's data dir holds Raft state: it cannot be restored into.
    let mut held = Ferryd::spawn(
        &old.dir,
        "restore-held",
        &[
            "--config",
            old.config(1).to_str().context("path")?,
            "--restore-snapshot",
            saved.to_str().context("path")?,
        ],
    )?;
    let status = held.wait_exit(WAIT).await?;
    ensure!(status.code() == Some(2), "a data dir with Raft state: {status}; {}", held.stderr());
    ensure!(
        held.stderr().contains("node.data_dir") && held.stderr().contains("Raft state"),
        "{}",
        held.stderr()
    );
    old.kill9(1)?;

    // A new cluster, new data dirs and a new cluster id: n2 is given the
    // snapshot; n1, which initializes the cluster, seeds a route of its
    // config file first, which the restore replaces.
    // The snapshot's routes listen on `:PORT`; the harness picks ports free
    // on the new cluster's addresses, so the test moves the routes there
    // (through the library, which writes a new checksum). In a real
    // recovery the file is used as saved.
    let place = layout()?;
    let mut moved = from_survivor.clone();
    for (i, r) in moved.routes.iter_mut().enumerate() {
        r.route.listen = format!(":{}", place.ports[2 + i]);
    }
    let seeded = format!(
        "\n[[routes]]\nname = \"seeded\"\nlisten = \":{}\"\n  [[routes.backends]]\n  id = \"x\"\n  addr = \"{backend}\"\n",
        place.ports[4]
    );
    let moved_file = old.dir.file("moved.snap");
    write_file_atomic(&moved_file, &moved.to_bytes().map_err(|e| anyhow!("{e}"))?)?;
    let new =
        Cluster::start(place, "snap-new", "restored", [&seeded, "", ""], Some((2, &moved_file))).await?;
    new.converged(&["api", "web"], &["slow"]).await?;
    new.forwards(0, "a").await?;
    new.forwards(1, "a").await?;
    let again = new.send(3, "GET", "/v1/snapshot", None).await?;
    let again = Snapshot::from_bytes(again.body.as_bytes()).map_err(|e| anyhow!("{e}"))?;
    ensure!(again.cluster_id == "restored" && again.chaos.len() == 1 && again.routes.len() == 2, "{again:?}");
    let n2 = new.stderr(2);
    ensure!(n2.contains("restored the snapshot"), "n2 does not say it restored:\n{n2}");
    Ok(())
}

/// `POST /v1/snapshot/restore` on a live cluster: a stale `cas` is a 409
/// that changes nothing, bad bodies are 400s naming the field that change
/// nothing, the right `cas` replaces the whole config on every node (a
/// route only in the live config is gone, traffic flows through the
/// snapshot's again), and `force` replaces whatever the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_replaces_a_live_clusters_config_under_cas_or_force() -> Result<()> {
    let backend = echo_server("a").await?;
    let c = Cluster::start(layout()?, "snap-live", "live", ["", "", ""], None).await?;
    let (p0, p1) = (c.route_port(0), c.route_port(1));
    c.write(1, "PUT", "/v1/routes/web", Some(&route("web", p0, backend))).await?;
    c.write(1, "PUT", "/v1/chaos/slow", Some(&policy("slow", "web"))).await?;
    let saved = c.send(2, "GET", "/v1/snapshot", None).await?;
    ensure!(saved.status == 200, "{} {}", saved.status, saved.body);
    let taken: u64 = saved.header("x-ferry-index").context("no index")?.parse()?;

    // The config moves on: a new route, the policy gone, web deleted.
    c.write(2, "PUT", "/v1/routes/extra", Some(&route("extra", p1, backend))).await?;
    c.write(2, "DELETE", "/v1/chaos/slow", None).await?;
    let now = c.write(3, "DELETE", "/v1/routes/web", None).await?;
    c.converged(&["extra"], &[]).await?;
    c.forwards(1, "a").await?;

    // A stale cas: 409 with the current index, nothing changed.
    let r = c.send(1, "POST", &format!("/v1/snapshot/restore?cas={taken}"), Some(&saved.body)).await?;
    ensure!(r.status == 409, "stale cas: {} {}", r.status, r.body);
    let body = r.json()?;
    ensure!(body["error"]["code"] == "cas_mismatch" && body["error"]["current"] == now, "{body}");
    // Bad bodies and parameters: 400 naming the field, nothing changed.
    let damaged_body = String::from_utf8(damaged(saved.body.as_bytes())?)?;
    let mut invalid = Snapshot::from_bytes(saved.body.as_bytes()).map_err(|e| anyhow!("{e}"))?;
    invalid.routes[0].route.backends[0].addr = "nowhere".into();
    let invalid = String::from_utf8(invalid.to_bytes().map_err(|e| anyhow!("{e}"))?)?;
    let mut newer: Value = serde_json::from_str(&saved.body)?;
    newer["version"] = json!(2);
    for (query, body, field) in [
        (format!("cas={now}"), damaged_body.as_str(), "checksum"),
        (format!("cas={now}"), invalid.as_str(), "content.routes[0].route.backends[0].addr"),
        (format!("cas={now}"), &newer.to_string(), "version"),
        (format!("cas={now}"), "{}", "format"),
        (String::new(), saved.body.as_str(), "cas"),
        (format!("cas={now}&force=true"), saved.body.as_str(), "force"),
    ] {
        let r = c.send(2, "POST", &format!("/v1/snapshot/restore?{query}"), Some(body)).await?;
        ensure!(r.status == 400, "{query} {field}: {} {}", r.status, r.body);
        let e = r.json()?;
        ensure!(e["error"]["fields"][0]["path"] == field, "{query}: expected {field}: {e}");
    }
    let status = c.send(1, "GET", "/v1/status", None).await?.json()?;
    ensure!(status["index"] == now, "a refused restore moved the index: {status}");
    c.converged(&["extra"], &[]).await?;

    // The right cas: one change replacing everything, on every node.
    let r = c.send(3, "POST", &format!("/v1/snapshot/restore?cas={now}"), Some(&saved.body)).await?;
    ensure!(r.status == 200, "restore: {} {}", r.status, r.body);
    let restored = r.json()?["index"].as_u64().context("index")?;
    ensure!(restored > now, "{restored} after {now}");
    c.converged(&["web"], &["slow"]).await?;
    c.forwards(0, "a").await?;
    for id in IDS {
        let addr = SocketAddr::new(c.ip(id), p1);
        poll(&format!("route extra gone from n{id}"), WAIT, async || {
            ensure!(ask_once(addr, "t").await.is_err(), "{addr} still forwards");
            Ok(())
        })
        .await?;
        let web = c.send(id, "GET", "/v1/routes/web?consistency=stale", None).await?.json()?;
        ensure!(web["revision"] == restored, "n{id}: web's revision is not the restore's: {web}");
    }

    // Force: whatever the index.
    c.write(1, "PUT", "/v1/routes/extra", Some(&route("extra", p1, backend))).await?;
    let r = c.send(2, "POST", "/v1/snapshot/restore?force=true", Some(&saved.body)).await?;
    ensure!(r.status == 200, "forced restore: {} {}", r.status, r.body);
    c.converged(&["web"], &["slow"]).await?;

    // A snapshot larger than the 64 KiB every other body is held to is
    // taken (up to 4 MiB) and reaches every node as one entry.
    let mut big = Snapshot::from_bytes(saved.body.as_bytes()).map_err(|e| anyhow!("{e}"))?;
    for i in 0..800 {
        let p: ChaosPolicy = serde_json::from_value(policy(&format!("p{i:03}"), "nowhere"))?;
        big.chaos.push(SnapshotPolicy { policy: p, revision: 1 });
    }
    let big = String::from_utf8(big.to_bytes().map_err(|e| anyhow!("{e}"))?)?;
    ensure!(big.len() > 64 * 1024, "only {} bytes", big.len());
    let r = c.send(3, "POST", "/v1/snapshot/restore?force=true", Some(&big)).await?;
    ensure!(r.status == 200, "a {} byte restore: {} {}", big.len(), r.status, r.body);
    for id in IDS {
        poll(&format!("n{id} has 801 policies"), WAIT, async || {
            let (routes, policies) = c.names(id).await?;
            ensure!(
                policies.len() == 801 && routes.len() == 1,
                "{} policies, routes {routes:?}",
                policies.len()
            );
            Ok(())
        })
        .await?;
    }
    // Over 4 MiB: refused from the head alone, before the body is read.
    let mut s = tokio::net::TcpStream::connect(c.admin(1)).await?;
    let head = format!(
        "POST /v1/snapshot/restore?force=true HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        ferry_client::snapshot::MAX_SNAPSHOT_BYTES + 1
    );
    s.write_all(head.as_bytes()).await?;
    let (mut answer, mut buf) = (Vec::new(), vec![0; 4096]);
    // The answer's JSON body ends the exchange (the connection may stay).
    while !String::from_utf8_lossy(&answer).ends_with("}}") {
        let n = tokio::time::timeout(IO_TIMEOUT, s.read(&mut buf)).await??;
        ensure!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    ensure!(answer.starts_with("HTTP/1.1 413"), "a body over 4 MiB: {answer}");
    ensure!(answer.contains("too_large"), "{answer}");
    Ok(())
}

/// `--restore-snapshot` seeds only a new cluster: a node of a live cluster
/// wiped and started with it by mistake rejoins, says that the snapshot
/// was not restored, and the cluster's config stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_at_start_never_overwrites_a_live_cluster() -> Result<()> {
    let backend = echo_server("a").await?;
    let mut c = Cluster::start(layout()?, "snap-mistake", "live", ["", "", ""], None).await?;
    c.write(1, "PUT", "/v1/routes/web", Some(&route("web", c.route_port(0), backend))).await?;
    c.write(2, "PUT", "/v1/chaos/slow", Some(&policy("slow", "web"))).await?;
    // A snapshot of an empty config: restored, it would remove everything.
    let r = c.send(3, "GET", "/v1/snapshot", None).await?;
    let mut empty = Snapshot::from_bytes(r.body.as_bytes()).map_err(|e| anyhow!("{e}"))?;
    empty.routes.clear();
    empty.chaos.clear();
    let file = c.dir.file("empty.snap");
    write_file_atomic(&file, &empty.to_bytes().map_err(|e| anyhow!("{e}"))?)?;
    c.converged(&["web"], &["slow"]).await?;

    c.kill9(3)?;
    std::fs::remove_dir_all(c.data_dir(3))?;
    c.spawn(3, Some(&file), "-restore")?;
    c.wait_ready(3).await?;
    poll("n3 says the snapshot was not restored", WAIT, async || {
        let log = c.stderr(3);
        ensure!(log.contains("was NOT restored"), "n3 stderr:\n{log}");
        Ok(())
    })
    .await?;
    c.converged(&["web"], &["slow"]).await?;
    c.forwards(0, "a").await?;
    Ok(())
}

/// A standalone node has no cluster to seed: `--restore-snapshot` is
/// refused before anything starts, naming why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_node_refuses_a_snapshot() -> Result<()> {
    let dir = TempDir::new("snap-solo")?;
    let config = dir.file("solo.toml");
    common::write_config(&config, "[node]\nname = \"solo\"\n\n[admin]\naddr = \"127.0.0.1:0\"\n")?;
    let snapshot = Snapshot {
        cluster_id: "c".into(),
        node: "n1".into(),
        taken_at_ms: 0,
        index: 0,
        routes: Vec::new(),
        chaos: Vec::new(),
    };
    let file = dir.file("empty.snap");
    write_file_atomic(&file, &snapshot.to_bytes().map_err(|e| anyhow!("{e}"))?)?;
    let args =
        ["--config", config.to_str().context("path")?, "--restore-snapshot", file.to_str().context("path")?];
    let mut p = Ferryd::spawn(&dir, "solo", &args)?;
    let status = p.wait_exit(WAIT).await?;
    ensure!(status.code() == Some(2), "{status}; {}", p.stderr());
    ensure!(p.stderr().contains("standalone"), "{}", p.stderr());
    Ok(())
}
