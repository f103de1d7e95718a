//! Routes no node, or one node, can bind, in a three-node cluster
//! (in-process, node i on 127.0.N.i): the API refuses what it can know is
//! wrong on every node (a member's own admin, cluster or gossip address, a
//! route every node would collide with), and a route only some nodes cannot
//! bind is reported per node (`GET /v1/routes/{name}`,
//! `ferry_route_bind_failures`) without making any node unready.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use ferry_tests::backend::Greeter;
use ferry_tests::client::greet;
use ferry_tests::cluster::{Options, SETTLE, TestCluster, route_json};
use ferry_tests::eventually;
use ferry_tests::http::Request;
use serde_json::{Value, json};

/// A backend nothing needs to answer on.
fn nowhere() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9))
}

/// The value of `ferry_route_bind_failures{route}` on node `id`, `None`
/// when the series is absent.
async fn bind_failures_metric(c: &TestCluster, id: u64, route: &str) -> anyhow::Result<Option<i64>> {
    let r = c.send(id, Request::get("/metrics")).await?;
    anyhow::ensure!(r.status == 200, "GET /metrics: {}", r.status);
    let series = format!("ferry_route_bind_failures{{route=\"{route}\"}} ");
    Ok(r.body.lines().find_map(|l| l.strip_prefix(series.as_str())).and_then(|v| v.trim().parse().ok()))
}

/// `bind_failures` of `GET /v1/routes/{route}` on node `id`.
async fn failures_seen_by(c: &TestCluster, id: u64, route: &str) -> anyhow::Result<Vec<Value>> {
    let got = c.send(id, Request::get(format!("/v1/routes/{route}"))).await?.expect(200)?;
    anyhow::ensure!(got["bind_unknown"] == json!([]), "every member answers: {got}");
    Ok(got["bind_failures"].as_array().cloned().unwrap_or_default())
}

/// Before, each of these answered 200, and every node then logged
/// `Address already in use` and turned unready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_address_a_member_holds_is_400_naming_listen() -> anyhow::Result<()> {
    let c = TestCluster::start(Options::default()).await?;
    let taken = c.free_port()?;
    let r = c.put_route(1, &route_json("taken", &format!(":{taken}"), &[("a", nowhere())])).await?;
    r.expect(200)?;
    let before = c.index_everywhere().await?;
    let (admin, cluster) = (c.admin_port, c.cluster_port);
    let cases = [
        // Node 1's admin address, sent to node 2 (node 1 formed the
        // cluster: its admin address is in the Raft membership).
        (2, c.admin(1).to_string(), "node n1's admin address"),
        // `:PORT` binds on every node's own address: its admin port too.
        (3, format!(":{admin}"), "admin address"),
        (1, format!(":{cluster}"), "cluster address"),
        // A static member's name is not in the membership: its id is.
        (1, SocketAddr::new(c.ip(3), cluster).to_string(), "node 3's cluster address"),
        (2, format!("0.0.0.0:{cluster}"), "cluster address"),
        (3, format!("0.0.0.0:{taken}"), "collides with route \"taken\""),
    ];
    for (via, listen, names) in cases {
        let case = format!("listen {listen} via node {via}");
        let r = c.put_route(via, &route_json("w1", &listen, &[("a", nowhere())])).await?;
        anyhow::ensure!(r.status == 400, "{case}: expected 400, got {} {}", r.status, r.body);
        let body = r.json()?;
        let fields = body["error"]["fields"].as_array().cloned().unwrap_or_default();
        anyhow::ensure!(fields.len() == 1 && fields[0]["path"] == "listen", "{case}: {body}");
        let message = fields[0]["message"].as_str().unwrap_or_default();
        anyhow::ensure!(message.contains(names), "{case}: {message:?} does not name {names:?}");
        assert_eq!(r.index(), Some(before), "{case}: a rejected write carries the unchanged index");
    }
    assert_eq!(c.index_everywhere().await?, before, "a rejected write moved the config index");
    assert_eq!(c.send(1, Request::get("/v1/routes/w1")).await?.status, 404);
    for id in c.ids() {
        assert_eq!(c.send(id, Request::get("/health/ready")).await?.status, 200, "node {id}");
    }
    c.shutdown().await
}

/// Before, a route whose port one node could not bind made that node
/// unready (`routes without a listener`), taking it out of rotation for
/// every route it does serve, and nothing said which node failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_one_node_cannot_bind_is_reported_for_that_node_only() -> anyhow::Result<()> {
    let c = TestCluster::start(Options::default()).await?;
    let greeter = Greeter::start("a").await?;
    let (port, other) = (c.free_port()?, c.free_port()?);
    // Another process holds the port on node 2 only.
    let held = std::net::TcpListener::bind(SocketAddr::new(c.ip(2), port))?;
    let held_addr = SocketAddr::new(c.ip(2), port).to_string();
    c.put_route(1, &route_json("ok", &format!(":{other}"), &[("a", greeter.addr)])).await?.expect(200)?;
    c.put_route(3, &route_json("w1", &format!(":{port}"), &[("a", greeter.addr)])).await?.expect(200)?;

    // Every node reports node 2's failure, and only it.
    for id in c.ids() {
        let failures = eventually(SETTLE, "node 2's failure reported", || async {
            failures_seen_by(&c, id, "w1").await.ok().filter(|f| !f.is_empty())
        })
        .await?;
        assert_eq!(failures.len(), 1, "node {id}: {failures:?}");
        assert_eq!((failures[0]["node_id"].as_u64(), failures[0]["node"].as_str()), (Some(2), Some("n2")));
        assert_eq!(failures[0]["addr"], held_addr, "node {id}: {failures:?}");
        let error = failures[0]["error"].as_str().unwrap_or_default();
        assert!(error.to_lowercase().contains("in use"), "node {id}: {error:?}");
    }
    // Every node stays ready; node 2 lists what it could not bind.
    for id in c.ids() {
        let r = c.send(id, Request::get("/health/ready")).await?;
        let body = r.expect(200).map_err(|e| e.context(format!("node {id} not ready")))?;
        let listed: Vec<&str> = body["bind_failures"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["route"].as_str())
            .collect();
        assert_eq!(listed, if id == 2 { vec!["w1"] } else { vec![] }, "node {id}: {body}");
        assert_eq!(bind_failures_metric(&c, id, "w1").await?, Some(i64::from(id == 2)), "node {id}");
        assert_eq!(bind_failures_metric(&c, id, "ok").await?, Some(0), "node {id}");
    }
    // Node 2 serves the route it could bind; the others serve both.
    assert_eq!(greet(c.node(2)?.route_addr("ok").context("node 2 does not listen on ok")?).await?, "a");
    for id in [1, 3] {
        assert_eq!(greet(SocketAddr::new(c.ip(id), port)).await?, "a", "node {id}");
    }

    // The port is freed: node 2 binds it on its next attempt.
    drop(held);
    eventually(SETTLE, "node 2 listening on w1", || async { c.node(2).ok()?.route_addr("w1") }).await?;
    assert_eq!(greet(SocketAddr::new(c.ip(2), port)).await?, "a");
    assert_eq!(bind_failures_metric(&c, 2, "w1").await?, Some(0));
    assert_eq!(failures_seen_by(&c, 1, "w1").await?, Vec::<Value>::new());

    // A removed route takes its series with it.
    c.send(1, Request::delete("/v1/routes/w1")).await?.expect(200)?;
    eventually(SETTLE, "w1's series gone on node 2", || async {
        bind_failures_metric(&c, 2, "w1").await.ok()?.is_none().then_some(())
    })
    .await?;
    c.shutdown().await
}

/// An address that is local to no node (TEST-NET-1): every node reports it,
/// every node stays ready, and the answer says which nodes tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_on_an_address_no_node_has_is_reported_by_every_node() -> anyhow::Result<()> {
    let c = TestCluster::start(Options::default()).await?;
    let port = c.free_port()?;
    c.put_route(2, &route_json("far", &format!("192.0.2.1:{port}"), &[("a", nowhere())]))
        .await?
        .expect(200)?;
    let failures = eventually(Duration::from_secs(5), "three failures", || async {
        failures_seen_by(&c, 1, "far").await.ok().filter(|f| f.len() == 3)
    })
    .await?;
    let nodes: Vec<Option<u64>> = failures.iter().map(|f| f["node_id"].as_u64()).collect();
    assert_eq!(nodes, [Some(1), Some(2), Some(3)], "{failures:?}");
    for id in c.ids() {
        assert_eq!(c.send(id, Request::get("/health/ready")).await?.status, 200, "node {id}");
        assert_eq!(bind_failures_metric(&c, id, "far").await?, Some(1), "node {id}");
    }
    c.shutdown().await
}
