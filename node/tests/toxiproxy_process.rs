//! The Toxiproxy-compatible API (`[chaos] toxiproxy_addr`) on three real
//! `ferryd` processes, on 127.0.94.1-3 (each node on its own address, the
//! same ports): Toxiproxy's status codes, error bodies, lenient keys,
//! `listen` port 0, default toxic names, partial updates, disable/enable
//! with traffic, reset, delete and populate, each seen through every
//! node; then Toxiproxy's own Python and Node clients running their whole
//! cycle (installed by `ops/toxiproxy-clients.sh`).
//!
//! Checks that need chaos enforced on traffic (a latency toxic slows round
//! trips) are in their own test, [`a_latency_toxic_slows_every_node_until_removed`].
//! Every process is spawned by the test and killed by its own PID.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{Conn, Ferryd, IO_TIMEOUT, Reply, TempDir, WAIT, ask_once, echo_server, http, poll};
use serde_json::{Value, json};

/// The addresses of this file's clusters.
const NET: [u8; 3] = [127, 0, 94];

fn ip(id: u8) -> IpAddr {
    IpAddr::from([NET[0], NET[1], NET[2], id])
}

/// A drain long enough that "closed at once" cannot be the drain.
const DRAIN_MS: u64 = 30_000;

/// Three nodes with the Toxiproxy API on; node `id` is `procs[id - 1]`.
struct Cluster {
    procs: Vec<Ferryd>,
    admin_port: u16,
    toxi_port: u16,
    _dir: TempDir,
}

/// Ports free on all three addresses, never the same twice in this process.
fn free_ports(count: usize) -> Result<Vec<u16>> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..1000 {
        if ports.len() == count {
            return Ok(ports);
        }
        let first = std::net::TcpListener::bind(SocketAddr::new(ip(1), 0))?;
        let port = first.local_addr()?.port();
        let rest: Result<Vec<_>, _> =
            [2, 3].iter().map(|i| std::net::TcpListener::bind(SocketAddr::new(ip(*i), port))).collect();
        held.push(first);
        if let Ok(rest) = rest {
            held.extend(rest);
            ports.push(port);
            NEXT.fetch_add(1, Relaxed);
        }
    }
    bail!("no {count} ports free on all of 127.0.94.1-3")
}

impl Cluster {
    async fn start(tag: &str) -> Result<Self> {
        let dir = TempDir::new(tag)?;
        let ports = free_ports(3)?;
        let (admin_port, cluster_port, toxi_port) = (ports[0], ports[1], ports[2]);
        let members: Vec<String> =
            (1..=3).map(|id| format!("{id}@{}", SocketAddr::new(ip(id), cluster_port))).collect();
        let mut procs = Vec::new();
        for id in 1..=3u8 {
            let config = dir.file(&format!("n{id}.toml"));
            let text = format!(
                r#"[node]
name = "n{id}"
bind_addr = "{ip}"
drain_timeout_ms = {DRAIN_MS}
workers = 1
data_dir = "{data}"

[admin]
addr = "{ip}:{admin_port}"
request_timeout_ms = 3000

[cluster]
node_id = {id}
addr = "{ip}:{cluster_port}"
cluster_id = "toxiproxy-test"
initial_members = {members:?}
heartbeat_ms = 50
election_timeout_min_ms = 200
election_timeout_max_ms = 400

[chaos]
toxiproxy_addr = "{ip}:{toxi_port}"
"#,
                ip = ip(id),
                data = dir.file(&format!("data{id}")).display(),
            );
            common::write_config(&config, &text)?;
            let path = config.to_string_lossy().into_owned();
            procs.push(Ferryd::spawn(&dir, &format!("n{id}"), &["--config", &path])?);
        }
        let c = Self { procs, admin_port, toxi_port, _dir: dir };
        for id in 1..=3 {
            poll("the Toxiproxy API answers a read", WAIT * 2, async || {
                let r = c.toxi(id, "GET", "/proxies", None).await?;
                ensure!(r.status == 200, "{} {}", r.status, r.body);
                Ok(())
            })
            .await
            .with_context(|| c.logs())?;
        }
        Ok(c)
    }

    fn toxi_addr(&self, id: u8) -> SocketAddr {
        SocketAddr::new(ip(id), self.toxi_port)
    }

    fn admin(&self, id: u8) -> SocketAddr {
        SocketAddr::new(ip(id), self.admin_port)
    }

    /// One request to node `id`'s Toxiproxy API.
    async fn toxi(&self, id: u8, method: &str, path: &str, body: Option<Value>) -> Result<Reply> {
        let body = body.map(|b| b.to_string());
        http(self.toxi_addr(id), method, path, &[], body.as_deref(), IO_TIMEOUT).await
    }

    fn logs(&self) -> String {
        self.procs.iter().enumerate().map(|(i, p)| format!("--- n{}:\n{}", i + 1, p.stderr())).collect()
    }
}

/// `reply` has `status` and Toxiproxy's error body for it.
fn expect_error(reply: &Reply, status: u16, mentions: &str) -> Result<()> {
    ensure!(reply.status == status, "expected {status}, got {} {}", reply.status, reply.body);
    let v = reply.json()?;
    ensure!(v["status"] == status, "error body without status {status}: {v}");
    let msg = v["error"].as_str().context("error body without a message")?;
    ensure!(msg.contains(mentions), "error {msg:?} does not mention {mentions:?}");
    Ok(())
}

fn port_of(proxy: &Value) -> Result<u16> {
    let listen = proxy["listen"].as_str().context("listen")?;
    Ok(listen.rsplit_once(':').context("listen without a port")?.1.parse()?)
}

/// Polls until `port` answers the echo protocol on every node.
async fn serves_everywhere(port: u16) -> Result<()> {
    for id in 1..=3 {
        let addr = SocketAddr::new(ip(id), port);
        poll(&format!("{addr} serves"), WAIT, async || {
            let reply = ask_once(addr, "hi").await?;
            ensure!(reply == "b: hi", "reply {reply:?}");
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// Polls until no node accepts on `port`.
async fn refused_everywhere(port: u16) -> Result<()> {
    for id in 1..=3 {
        let addr = SocketAddr::new(ip(id), port);
        poll(&format!("{addr} refuses"), WAIT, async || match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => bail!("{addr} still accepts"),
            Err(_) => Ok(()),
        })
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_matches_toxiproxy_and_acts_on_every_node() -> Result<()> {
    let backend = echo_server("b").await?;
    let c = Cluster::start("toxiproxy-api").await?;
    let up = backend.to_string();

    // Version, browsers.
    let v = c.toxi(1, "GET", "/version", None).await?;
    ensure!(v.status == 200 && v.json()?["version"].is_string(), "{} {}", v.status, v.body);
    ensure!(v.header("x-toxiproxy-request-id").is_some(), "no request id: {:?}", v.headers);
    let browser =
        http(c.toxi_addr(1), "GET", "/proxies", &[("User-Agent", "Mozilla/5.0")], None, IO_TIMEOUT).await?;
    expect_error(&browser, 403, "User agent")?;

    // Create, with keys in any case and unknown fields; listen port 0.
    let body = json!({"Name": "echo", "LISTEN": "127.0.0.1:0", "upstream": up, "bogus": [1]});
    let created = c.toxi(1, "POST", "/proxies", Some(body.clone())).await?;
    ensure!(created.status == 201, "{} {}", created.status, created.body);
    let proxy = created.json()?;
    let port = port_of(&proxy)?;
    ensure!(port != 0, "port 0 was not replaced: {proxy}");
    ensure!(proxy["listen"] == format!("{}:{port}", ip(1)), "listen on node 1's address: {proxy}");
    ensure!(proxy["enabled"] == true && proxy["toxics"] == json!([]) && proxy["upstream"] == up, "{proxy}");
    expect_error(&c.toxi(2, "POST", "/proxies", Some(body)).await?, 409, "already exists")?;
    expect_error(&c.toxi(1, "POST", "/proxies", Some(json!({"name": "x"}))).await?, 400, "upstream")?;
    let bad_upstream = json!({"name": "x", "upstream": "nowhere"});
    expect_error(&c.toxi(1, "POST", "/proxies", Some(bad_upstream)).await?, 400, "upstream")?;
    let bad_listen = json!({"name": "x", "upstream": up, "listen": "127.0.0.1"});
    expect_error(&c.toxi(1, "POST", "/proxies", Some(bad_listen)).await?, 400, "listen")?;
    expect_error(&c.toxi(1, "POST", "/proxies", Some(json!([1]))).await?, 400, "body")?;
    expect_error(&c.toxi(1, "GET", "/proxies/missing", None).await?, 404, "proxy not found")?;

    // A proxy made on node 1 forwards on nodes 2 and 3, each on its own address.
    serves_everywhere(port).await?;
    let all = c.toxi(3, "GET", "/proxies", None).await?.json()?;
    ensure!(all["echo"]["listen"] == format!("{}:{port}", ip(3)), "node 3 shows its own address: {all}");

    // Toxics: defaults, 409, 400 naming the field, merge, 404.
    let t = c
        .toxi(
            2,
            "POST",
            "/proxies/echo/toxics",
            Some(json!({"Type": "latency", "attributes": {"latency": 1}})),
        )
        .await?;
    ensure!(t.status == 200, "a new toxic is 200: {} {}", t.status, t.body);
    let toxic = t.json()?;
    ensure!(
        toxic
            == json!({"name": "latency_downstream", "type": "latency", "stream": "downstream",
                        "toxicity": 1.0, "attributes": {"latency": 1, "jitter": 0}}),
        "{toxic}"
    );
    let again = json!({"type": "latency"});
    expect_error(
        &c.toxi(3, "POST", "/proxies/echo/toxics", Some(again)).await?,
        409,
        "toxic already exists",
    )?;
    let teleport = json!({"type": "teleport"});
    expect_error(&c.toxi(1, "POST", "/proxies/echo/toxics", Some(teleport)).await?, 400, "type")?;
    let rate0 = json!({"type": "bandwidth"});
    expect_error(&c.toxi(1, "POST", "/proxies/echo/toxics", Some(rate0)).await?, 400, "attributes.rate")?;
    let stream = json!({"type": "timeout", "stream": "sideways"});
    expect_error(&c.toxi(1, "POST", "/proxies/echo/toxics", Some(stream)).await?, 400, "stream")?;
    let policy = c.toxi(3, "GET", "/proxies/echo/toxics", None).await?.json()?;
    ensure!(policy.as_array().map(Vec::len) == Some(1), "bad toxics changed nothing: {policy}");
    let chaos = http(c.admin(3), "GET", "/v1/chaos/echo.latency_downstream", &[], None, IO_TIMEOUT).await?;
    ensure!(chaos.status == 200, "the toxic is a replicated policy: {} {}", chaos.status, chaos.body);
    ensure!(chaos.json()?["policy"]["scope"]["routes"] == json!(["echo"]), "{}", chaos.body);
    let patched = c
        .toxi(
            1,
            "PATCH",
            "/proxies/echo/toxics/latency_downstream",
            Some(json!({"attributes": {"JITTER": 2}})),
        )
        .await?;
    ensure!(patched.status == 200, "{} {}", patched.status, patched.body);
    ensure!(patched.json()?["attributes"] == json!({"latency": 1, "jitter": 2}), "merged: {}", patched.body);
    expect_error(&c.toxi(1, "GET", "/proxies/echo/toxics/nope", None).await?, 404, "toxic not found")?;
    // A policy off the pattern is no toxic, and reset leaves it.
    let wide = json!({"name": "echo.wide", "toxics": [{"kind": {"latency": {"latency_ms": 1}}}]});
    let put =
        http(c.admin(2), "PUT", "/v1/chaos/echo.wide", &[], Some(&wide.to_string()), IO_TIMEOUT).await?;
    ensure!(put.status == 200, "{} {}", put.status, put.body);
    let toxics = c.toxi(2, "GET", "/proxies/echo/toxics", None).await?.json()?;
    ensure!(toxics.as_array().map(Vec::len) == Some(1), "echo.wide is not a toxic: {toxics}");

    // Disable with a partial update: listeners and connections closed on every node.
    let mut held = Vec::new();
    for id in 1..=3 {
        let mut conn = Conn::open(SocketAddr::new(ip(id), port)).await?;
        ensure!(conn.ask("held").await? == "b: held");
        held.push(conn);
    }
    let off = c.toxi(2, "POST", "/proxies/echo", Some(json!({"enabled": false}))).await?;
    ensure!(off.status == 200, "{} {}", off.status, off.body);
    let off = off.json()?;
    ensure!(off["enabled"] == false && port_of(&off)? == port && off["upstream"] == up, "partial: {off}");
    let started = Instant::now();
    for conn in &mut held {
        conn.expect_closed(Duration::from_secs(3)).await?;
    }
    ensure!(started.elapsed() < Duration::from_millis(DRAIN_MS / 2), "closed by the drain, not at once");
    refused_everywhere(port).await?;
    let route = http(c.admin(3), "GET", "/v1/routes/echo", &[], None, IO_TIMEOUT).await?.json()?;
    ensure!(route["enabled"] == false && route["listening"].is_null(), "GET /v1/routes shows it: {route}");
    let on = c.toxi(3, "PATCH", "/proxies/echo", Some(json!({"Enabled": true}))).await?;
    ensure!(on.status == 200 && on.json()?["enabled"] == true, "{} {}", on.status, on.body);
    serves_everywhere(port).await?;
    let route = http(c.admin(1), "GET", "/v1/routes/echo", &[], None, IO_TIMEOUT).await?.json()?;
    ensure!(route["enabled"] == true && route["config"].get("enabled").is_none(), "{route}");

    // Reset: enabled again, the mapped toxics gone, other policies kept.
    c.toxi(1, "POST", "/proxies/echo", Some(json!({"enabled": false}))).await?;
    refused_everywhere(port).await?;
    let reset = c.toxi(3, "POST", "/reset", None).await?;
    ensure!(reset.status == 204, "{} {}", reset.status, reset.body);
    serves_everywhere(port).await?;
    let toxics = c.toxi(1, "GET", "/proxies/echo/toxics", None).await?.json()?;
    ensure!(toxics == json!([]), "reset removed the toxics: {toxics}");
    let wide = http(c.admin(1), "GET", "/v1/chaos/echo.wide", &[], None, IO_TIMEOUT).await?;
    ensure!(wide.status == 200, "reset left the other policy: {}", wide.status);

    // Delete a toxic, then the proxy: 204, then 404; the port closes everywhere.
    c.toxi(1, "POST", "/proxies/echo/toxics", Some(json!({"type": "slow_close", "name": "sc"}))).await?;
    let del = c.toxi(2, "DELETE", "/proxies/echo/toxics/sc", None).await?;
    ensure!(del.status == 204, "{} {}", del.status, del.body);
    expect_error(&c.toxi(2, "DELETE", "/proxies/echo/toxics/sc", None).await?, 404, "toxic not found")?;
    let del = c.toxi(3, "DELETE", "/proxies/echo", None).await?;
    ensure!(del.status == 204, "{} {}", del.status, del.body);
    expect_error(&c.toxi(1, "DELETE", "/proxies/echo", None).await?, 404, "proxy not found")?;
    refused_everywhere(port).await?;

    // Populate: 201 {"proxies": [...]}, and a non-proxy route is not a proxy.
    let pop =
        c.toxi(2, "POST", "/populate", Some(json!([{"name": "p1", "upstream": up, "listen": ":0"}]))).await?;
    ensure!(pop.status == 201, "{} {}", pop.status, pop.body);
    let pop = pop.json()?;
    let p1 = port_of(&pop["proxies"][0])?;
    serves_everywhere(p1).await?;
    let again =
        c.toxi(1, "POST", "/populate", Some(json!([{"name": "p1", "upstream": up}]))).await?.json()?;
    ensure!(port_of(&again["proxies"][0])? == p1, "an unchanged proxy is kept: {again}");
    expect_error(&c.toxi(1, "POST", "/populate", Some(json!({"name": "p1"}))).await?, 400, "array")?;
    Ok(())
}

/// Needs chaos enforced on traffic (`dataplane::chaos`): a latency toxic
/// added on node 1 slows round trips through nodes 2 and 3; removed, they
/// are fast again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_toxic_slows_every_node_until_removed() -> Result<()> {
    let backend = echo_server("b").await?;
    let c = Cluster::start("toxiproxy-latency").await?;
    let created =
        c.toxi(1, "POST", "/proxies", Some(json!({"name": "slow", "upstream": backend.to_string()}))).await?;
    ensure!(created.status == 201, "{} {}", created.status, created.body);
    let port = port_of(&created.json()?)?;
    serves_everywhere(port).await?;
    let toxic = json!({"type": "latency", "attributes": {"latency": 300}});
    let t = c.toxi(1, "POST", "/proxies/slow/toxics", Some(toxic)).await?;
    ensure!(t.status == 200, "{} {}", t.status, t.body);
    let round_trip = |id: u8| async move {
        let started = Instant::now();
        ensure!(ask_once(SocketAddr::new(ip(id), port), "x").await? == "b: x");
        Ok(started.elapsed())
    };
    for id in [2, 3] {
        poll(&format!("node {id} adds the toxic's 300 ms"), Duration::from_secs(2), async || {
            let took = round_trip(id).await?;
            ensure!(took >= Duration::from_millis(300), "round trip {took:?} through node {id}");
            Ok(())
        })
        .await?;
    }
    let del = c.toxi(2, "DELETE", "/proxies/slow/toxics/latency_downstream", None).await?;
    ensure!(del.status == 204, "{} {}", del.status, del.body);
    for id in [2, 3] {
        poll(&format!("node {id} is fast again"), Duration::from_secs(2), async || {
            let took = round_trip(id).await?;
            ensure!(took < Duration::from_millis(150), "round trip {took:?} through node {id}");
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// Where `ops/toxiproxy-clients.sh` installed the clients.
fn clients_dir() -> PathBuf {
    std::env::var_os("FERRY_TOXIPROXY_CLIENTS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/toxiproxy-clients"),
        PathBuf::from,
    )
}

/// The clients are required in the suite (`ops/test.sh` sets
/// `FERRY_REQUIRE_TOXIPROXY_CLIENTS=1`, and CI sets `CI`): a missing
/// client fails there and is skipped, saying so, elsewhere.
fn clients_required() -> bool {
    std::env::var_os("FERRY_REQUIRE_TOXIPROXY_CLIENTS").is_some() || std::env::var_os("CI").is_some()
}

/// Runs one client's cycle script against `c` (killed by its own PID
/// after 180 s), printing its output.
async fn run_client(
    c: &Cluster,
    backend: SocketAddr,
    program: &str,
    script: &str,
    env: &[(&str, PathBuf)],
) -> Result<()> {
    let apis: Vec<String> = (1..=3).map(|id| c.toxi_addr(id).to_string()).collect();
    let ips: Vec<String> = (1..=3).map(|id| ip(id).to_string()).collect();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ops/toxiproxy").join(script);
    let out = c._dir.file(&format!("{program}.out"));
    // One file, one offset: stdout and stderr interleave, never overwrite.
    let log = std::fs::File::create(&out)?;
    let mut cmd = std::process::Command::new(program);
    cmd.arg(&script)
        .env("FERRY_TOXIPROXY_APIS", apis.join(","))
        .env("FERRY_NODE_IPS", ips.join(","))
        .env("FERRY_UPSTREAM", backend.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().with_context(|| format!("running {program}"))?;
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            child.kill()?;
            child.wait()?;
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = std::fs::read_to_string(&out).unwrap_or_default();
    println!("{output}");
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => bail!("{program} {}: {s}\n{output}", script.display()),
        None => bail!("{program} {} ran over 180 s\n{output}", script.display()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toxiproxy_clients_run_their_whole_cycle_against_the_cluster() -> Result<()> {
    let dir = clients_dir();
    let python = dir.join("python");
    let node = dir.join("node/node_modules");
    if !python.join("toxiproxy").is_dir() || !node.join("toxiproxy-node-client").is_dir() {
        let msg = format!(
            "the Toxiproxy clients are not installed in {} (run ops/toxiproxy-clients.sh)",
            dir.display()
        );
        if clients_required() {
            bail!(msg);
        }
        println!("skipped: {msg}");
        return Ok(());
    }
    let backend = echo_server("b").await?;
    let c = Cluster::start("toxiproxy-clients").await?;
    let py = run_client(&c, backend, "python3", "python_cycle.py", &[("PYTHONPATH", python)]).await;
    let js =
        run_client(&c, backend, "node", "node_cycle.js", &[("FERRY_TOXIPROXY_NODE_MODULES", node)]).await;
    match (py, js) {
        (Ok(()), Ok(())) => Ok(()),
        (py, js) => bail!("python client: {py:?}\nnode client: {js:?}"),
    }
}
