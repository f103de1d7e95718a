//! `GET /v1/routes/{name}/explain` and `POST /v1/routes/{name}/dry-run`
//! against real `ferryd` processes: on a three-node gossip cluster on
//! 127.0.97.1-3 (default ports), a consistent-hash route over backends
//! pinned to each node and one every node reaches itself; for clients
//! bound to source addresses 127.0.97.100 and up, on every node, explain's
//! first candidate is the backend the client's real connection through
//! that node reaches (the backends answer with their name). Then the
//! errors of both endpoints, and a dry run that changes nothing. A
//! standalone node (127.0.0.1) shows that explain's order for a round
//! robin route is the next connection's.
//!
//! Every process is spawned by the test and killed by its own PID.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::{Ferryd, IO_TIMEOUT, TempDir, WAIT, echo_server, free_addr, http, poll, write_config};
use ferry_client::RouteSpec;
use ferry_client::api::{Member, RouteStatus};
use ferry_client::explain::{DryRun, Explain};
use ferry_client::http::AdminClient;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// This file's cluster net: 127.0.97.0/24 (nodes .1-.3, clients .100 up).
const NET: u8 = 97;
/// Longest wait for the cluster to form or a route to reach every node.
const SETTLE: Duration = Duration::from_secs(30);
/// Client source addresses tried on every node.
const CLIENTS: u8 = 24;

fn ip(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, NET, i))
}

fn admin(i: u8) -> AdminClient {
    AdminClient::new(SocketAddr::new(ip(i), 7948)).with_timeout(IO_TIMEOUT)
}

/// Three nodes formed through gossip; processes die before the dir goes.
struct Cluster {
    procs: Vec<Ferryd>,
    _dir: TempDir,
}

impl Cluster {
    async fn start(route_port: u16) -> Result<Self> {
        for i in 1..=3 {
            for port in [7946, 7947, 7948, route_port] {
                std::net::TcpListener::bind(SocketAddr::new(ip(i), port))
                    .with_context(|| format!("{}:{port} is taken", ip(i)))?;
            }
        }
        let dir = TempDir::new("explain")?;
        let seeds = (1..=3).map(|i| ip(i).to_string()).collect::<Vec<_>>().join(",");
        let mut procs = Vec::new();
        for i in 1..=3u8 {
            let (name, bind) = (format!("n{i}"), ip(i).to_string());
            let data = dir.file(&name);
            let data = data.to_str().context("data dir path")?.to_string();
            let args = [
                "--name",
                &name,
                "--bind",
                &bind,
                "--data-dir",
                &data,
                "--gossip-profile",
                "fast",
                "--bootstrap-expect",
                "3",
                "--join",
                &seeds,
            ];
            procs.push(Ferryd::spawn(&dir, &name, &args)?);
        }
        let c = Self { procs, _dir: dir };
        for i in 1..=3 {
            poll(&format!("n{i} sees three alive members and a leader"), SETTLE, async || {
                let ms: Vec<Member> = admin(i).members().await?.value;
                // Display: today's strings, and the enums they become.
                let alive = ms.iter().filter(|m| {
                    m.state.as_ref().map(ToString::to_string).as_deref() == Some("alive")
                        && m.applied_index.is_some()
                });
                ensure!(alive.count() == 3, "n{i} sees {ms:#?}");
                let raft = admin(i).status().await?.value.raft.context("cluster mode")?;
                ensure!(raft.leader_id.is_some(), "n{i} knows no leader");
                Ok(())
            })
            .await
            .with_context(|| c.logs())?;
        }
        Ok(c)
    }

    fn logs(&self) -> String {
        self.procs.iter().enumerate().map(|(i, p)| format!("--- n{}:\n{}", i + 1, p.stderr())).collect()
    }
}

/// A route port free on the three node addresses.
fn free_route_port() -> Result<u16> {
    for _ in 0..100 {
        let first = std::net::TcpListener::bind(SocketAddr::new(ip(1), 0))?;
        let port = first.local_addr()?.port();
        if [2, 3].iter().all(|i| std::net::TcpListener::bind(SocketAddr::new(ip(*i), port)).is_ok()) {
            return Ok(port);
        }
    }
    bail!("no port free on all of 127.0.{NET}.1-3")
}

/// One connection from source address `from` to `to`: the name of the
/// backend that answers.
async fn reached(from: IpAddr, to: SocketAddr) -> Result<String> {
    let exchange = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        let stream = socket.connect(to).await?;
        let mut s = BufReader::new(stream);
        s.get_mut().write_all(b"who\n").await?;
        let mut line = String::new();
        let n = s.read_line(&mut line).await?;
        ensure!(n > 0, "{to} closed the connection from {from} without an answer");
        let name = line.split(':').next().unwrap_or_default().to_string();
        anyhow::Ok(name)
    };
    tokio::time::timeout(IO_TIMEOUT, exchange).await.with_context(|| format!("{from} -> {to}: no answer"))?
}

/// `PUT /v1/routes/{name}` through node `i`, again while the cluster
/// answers 503 (a write without CAS may be repeated).
async fn put(i: u8, spec: &RouteSpec) -> Result<ferry_client::api::WriteResult> {
    poll(&format!("n{i} writes {}", spec.name), SETTLE, async || {
        Ok(admin(i).put_route(spec, Default::default()).await?)
    })
    .await
}

/// The ids of the candidates, in the order tried.
fn order(e: &Explain) -> Vec<String> {
    e.backends.iter().filter(|b| b.attempt.is_some()).map(|b| b.id.clone()).collect()
}

/// The field paths a 400 names.
fn fields(r: &common::Reply) -> Result<Vec<String>> {
    ensure!(r.status == 400, "expected 400, got {} {}", r.status, r.body);
    let v = r.json()?;
    Ok(v["error"]["fields"]
        .as_array()
        .context("no fields")?
        .iter()
        .filter_map(|f| f["path"].as_str().map(str::to_string))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explains_first_candidate_is_where_a_real_connection_goes_on_every_node() -> Result<()> {
    let route_port = free_route_port()?;
    let c = Cluster::start(route_port).await?;
    let mut backends = Vec::new();
    for (name, node) in
        [("a", Some("n1")), ("b", Some("n2")), ("c", Some("n3")), ("d", None), ("e", Some("n2"))]
    {
        let addr = echo_server(name).await?;
        backends.push(json!({"id": name, "addr": addr.to_string(), "node": node, "weight": if name == "e" { 2 } else { 1 }}));
    }
    let route = json!({
        "name": "sticky", "listen": format!(":{route_port}"), "balance": "consistent_hash",
        "vnodes": 50, "backends": backends,
    });
    let spec: RouteSpec = serde_json::from_value(route.clone())?;
    let written = put(2, &spec).await?;
    // Every node has the route and sees every owner alive.
    for i in 1..=3 {
        poll(&format!("n{i} explains sticky with every owner alive"), SETTLE, async || {
            let e = admin(i).explain("sticky", "127.0.97.100").await?.value;
            let owners: BTreeSet<Option<String>> = e.backends.iter().map(|b| b.owner.state.clone()).collect();
            ensure!(e.index >= written.index, "n{i} at {} < {}", e.index, written.index);
            ensure!(order(&e).len() == 3 && !e.panic_mode, "n{i}: {e:#?}");
            ensure!(owners.iter().flatten().all(|s| s == "alive"), "n{i}: owners {owners:?}");
            Ok(())
        })
        .await
        .with_context(|| c.logs())?;
    }

    let mut reached_by: BTreeMap<String, usize> = BTreeMap::new();
    for k in 0..CLIENTS {
        let from = ip(100 + k);
        let mut firsts = BTreeSet::new();
        for i in 1..=3u8 {
            let e = admin(i).explain("sticky", &from.to_string()).await?.value;
            let hash = e.hash.as_ref().context("a consistent-hash route explains its hash")?;
            ensure!(hash.input == from.to_string(), "hashed {:?} for {from}", hash.input);
            let first = order(&e).first().cloned().context("no candidate")?;
            let entry = SocketAddr::new(ip(i), route_port);
            let got = reached(from, entry).await?;
            ensure!(
                got == first,
                "client {from} through n{i}: explain says {first}, the connection reached {got}: {e:#?}"
            );
            ensure!(e.node == format!("n{i}"), "answered by {}", e.node);
            let b = e.backends.iter().find(|b| b.id == first).context("first backend")?;
            let local = b.owner.node_name.as_deref() == Some(&format!("n{i}")) || b.owner.node.is_none();
            ensure!(b.owner.local == local, "n{i}: {first} owner {:?}", b.owner);
            firsts.insert(first.clone());
            *reached_by.entry(got).or_default() += 1;
        }
        ensure!(firsts.len() == 1, "the nodes disagree for {from}: {firsts:?}");
    }
    // The clients spread: the check covered local, peer-hop and unpinned backends.
    ensure!(reached_by.len() >= 4, "only {reached_by:?} answered {CLIENTS} clients");

    // client_addr hashes the port too: explain and the connection still agree.
    let by_addr = json!({"name": "sticky", "listen": format!(":{route_port}"), "balance": "consistent_hash",
        "hash_key": "client_addr", "vnodes": 50, "backends": route["backends"]});
    let spec2: RouteSpec = serde_json::from_value(by_addr)?;
    let w = put(1, &spec2).await?;
    poll("n3 applies hash_key client_addr", SETTLE, async || {
        let e = admin(3).explain("sticky", "127.0.97.100:1").await?.value;
        ensure!(e.index >= w.index && e.hash.is_some_and(|h| h.input == "127.0.97.100:1"), "not yet");
        Ok(())
    })
    .await?;
    for k in 0..8u8 {
        let from = ip(100 + k);
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        let port = socket.local_addr()?.port();
        let stream = socket.connect(SocketAddr::new(ip(3), route_port)).await?;
        let e = admin(3).explain("sticky", &format!("{from}:{port}")).await?.value;
        let mut s = BufReader::new(stream);
        s.get_mut().write_all(b"who\n").await?;
        let mut line = String::new();
        tokio::time::timeout(IO_TIMEOUT, s.read_line(&mut line)).await??;
        let got = line.split(':').next().unwrap_or_default();
        ensure!(
            order(&e).first().map(String::as_str) == Some(got),
            "{from}:{port}: {got} vs {:?}",
            order(&e)
        );
    }

    // Errors: the client parameter, an unknown route.
    let a = SocketAddr::new(ip(1), 7948);
    let r = http(a, "GET", "/v1/routes/sticky/explain", &[], None, IO_TIMEOUT).await?;
    ensure!(fields(&r)? == ["client"], "{}", r.body);
    let r = http(a, "GET", "/v1/routes/sticky/explain?client=nope", &[], None, IO_TIMEOUT).await?;
    ensure!(fields(&r)? == ["client"], "{}", r.body);
    let r = http(a, "GET", "/v1/routes/sticky/explain?client=1.2.3.4&x=1", &[], None, IO_TIMEOUT).await?;
    ensure!(fields(&r)? == ["x"], "{}", r.body);
    let r = http(a, "GET", "/v1/routes/nosuch/explain?client=1.2.3.4", &[], None, IO_TIMEOUT).await?;
    ensure!(r.status == 404 && r.json()?["error"]["code"] == "not_found", "{} {}", r.status, r.body);

    // Dry run: dropping b moves exactly b's keys, and nothing is written.
    let before: RouteStatus = admin(2).route("sticky", false).await?.value;
    let mut without_b = spec2.clone();
    without_b.backends.retain(|b| b.id != "b");
    let plan: DryRun = admin(2).dry_run(&without_b).await?.value;
    let b = plan.backends.iter().find(|x| x.id == "b").context("b in the plan")?;
    let b_share = b.before.context("b's share before")?;
    ensure!(b.after.is_none() && b_share > 0.0, "{plan:#?}");
    ensure!((plan.moved.context("moved")? - b_share).abs() < 1e-9, "{plan:#?}");
    ensure!(b.moved_away == b.before, "{plan:#?}");
    for other in plan.backends.iter().filter(|x| x.id != "b") {
        ensure!(other.moved_away == Some(0.0), "{} lost keys: {plan:#?}", other.id);
    }
    let sum: f64 = plan.backends.iter().filter_map(|x| x.after).sum();
    ensure!((sum - 1.0).abs() < 1e-9, "shares after sum to {sum}");
    // Bad bodies: the same field errors as PUT, and nothing written.
    let dry = |body: serde_json::Value| async move {
        http(
            SocketAddr::new(ip(2), 7948),
            "POST",
            "/v1/routes/sticky/dry-run",
            &[],
            Some(&body.to_string()),
            IO_TIMEOUT,
        )
        .await
    };
    let mut bad = serde_json::to_value(&without_b)?;
    bad["backends"][0]["addr"] = json!("not an address");
    let r = dry(bad.clone()).await?;
    ensure!(fields(&r)? == ["backends[0].addr"], "{}", r.body);
    let put = http(
        SocketAddr::new(ip(2), 7948),
        "PUT",
        "/v1/routes/sticky",
        &[],
        Some(&bad.to_string()),
        IO_TIMEOUT,
    )
    .await?;
    ensure!(fields(&put)? == ["backends[0].addr"], "PUT names the same field: {}", put.body);
    bad["backends"][0]["addr"] = json!(1);
    ensure!(fields(&dry(bad.clone()).await?)? == ["backends[0].addr"], "a number for an address");
    let mut renamed = serde_json::to_value(&without_b)?;
    renamed["name"] = json!("other");
    ensure!(fields(&dry(renamed).await?)? == ["name"], "a body naming another route");
    let r = dry(json!({"name": "sticky"})).await?;
    ensure!(fields(&r)? == ["listen"], "{}", r.body);
    let after: RouteStatus = admin(2).route("sticky", false).await?.value;
    ensure!(
        after.revision == before.revision && after.config == before.config,
        "a dry run wrote: {after:#?}"
    );
    let e = admin(1).explain("sticky", "127.0.97.100").await?.value;
    ensure!(e.backends.iter().any(|x| x.id == "b"), "b is still a backend");
    // A dry run of a route that does not exist: everything is new.
    let mut fresh = without_b.clone();
    fresh.name = "fresh".into();
    fresh.listen = format!(":{}", free_route_port()?);
    let plan = admin(3).dry_run(&fresh).await?.value;
    ensure!(plan.before.is_none() && plan.moved == Some(1.0), "{plan:#?}");
    let names = common::route_names(SocketAddr::new(ip(3), 7948)).await?;
    ensure!(!names.contains("fresh"), "the dry run created the route: {names:?}");
    Ok(())
}

/// Standalone: explain's order for a round-robin route is the next
/// connection's, however many connections came before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_node_explains_its_next_round_robin_pick() -> Result<()> {
    let dir = TempDir::new("explain-standalone")?;
    let (x, y, z) = (echo_server("x").await?, echo_server("y").await?, echo_server("z").await?);
    let (admin_addr, listen) = (free_addr()?, free_addr()?);
    let config = format!(
        "[node]\nname = \"solo\"\n\n[admin]\naddr = \"{admin_addr}\"\n\n[[routes]]\nname = \"rr\"\nlisten = \"{listen}\"\n\
         balance = \"round_robin\"\n{}",
        [("x", x), ("y", y), ("z", z)]
            .iter()
            .map(|(id, a)| format!("  [[routes.backends]]\n  id = \"{id}\"\n  addr = \"{a}\"\n"))
            .collect::<String>()
    );
    let path = dir.file("ferryd.toml");
    write_config(&path, &config)?;
    let p = Ferryd::spawn(&dir, "solo", &["--config", path.to_str().context("path")?])?;
    let client = AdminClient::new(admin_addr).with_timeout(IO_TIMEOUT);
    poll("the standalone node explains rr", WAIT, async || Ok(client.explain("rr", "127.0.0.1").await?))
        .await
        .with_context(|| p.stderr())?;
    let mut seen = BTreeSet::new();
    for k in 0..7 {
        let e = client.explain("rr", "127.0.0.1").await?;
        ensure!(!e.value.deterministic && e.value.order.contains("round_robin"), "{:#?}", e.value);
        ensure!(e.index == e.value.table_generation, "standalone: the index is the table generation");
        let next = order(&e.value).first().cloned().context("no candidate")?;
        let again = order(&client.explain("rr", "127.0.0.1").await?.value);
        ensure!(again.first() == Some(&next), "asking moved the rotation");
        let got = common::ask_once(listen, &format!("hi {k}")).await?;
        let got = got.split(':').next().unwrap_or_default().to_string();
        ensure!(got == next, "connection {k}: explain said {next}, it reached {got}");
        seen.insert(got);
    }
    ensure!(seen.len() == 3, "{seen:?}");
    // Dry run standalone: weights to shares of new connections.
    let mut spec: RouteSpec = client.route("rr", false).await?.value.config;
    spec.balance = ferry_client::Balance::Weighted;
    spec.backends[0].weight = 2;
    let plan = client.dry_run(&spec).await?.value;
    let after: Vec<Option<f64>> = plan.backends.iter().map(|b| b.after).collect();
    ensure!(after == [Some(0.5), Some(0.25), Some(0.25)], "{plan:#?}");
    ensure!(plan.moved.is_none(), "{plan:#?}");
    Ok(())
}
