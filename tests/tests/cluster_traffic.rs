//! The data plane of a three-node cluster follows the Raft log: a route
//! written through any node's API forwards on every node, changes and
//! deletions reach every listener, and the file's `[[routes]]` seed a new
//! cluster once, never again after a restart.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferry_client::RouteSpec;
use ferry_tests::backend::Greeter;
use ferry_tests::client::greet;
use ferry_tests::cluster::{Options, SETTLE, TestCluster, route_json};
use ferry_tests::eventually;
use ferry_tests::http::{Request, Response};

/// The `index` of a 200 write answer.
fn written(r: &Response) -> anyhow::Result<u64> {
    r.expect(200)?["index"].as_u64().ok_or_else(|| anyhow::anyhow!("no index in {}", r.body))
}

/// Waits until a new connection to `addr` reaches backend `want`, at most
/// until `deadline`.
async fn reaches(addr: SocketAddr, want: &str, deadline: Instant) -> anyhow::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    eventually(left, &format!("{addr} forwarding to {want}"), || async {
        greet(addr).await.ok().filter(|got| got == want).map(|_| ())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_written_on_one_node_forwards_on_all_within_a_second() -> anyhow::Result<()> {
    let (a, b) = (Greeter::start("a").await?, Greeter::start("b").await?);
    let c = TestCluster::start(Options::default()).await?;
    c.leader().await?;
    let port = c.free_port()?;
    let listen = format!(":{port}");
    let on = |id: u64| SocketAddr::new(c.ip(id), port);

    // Written on node 2, whatever its role.
    let t = Instant::now();
    written(&c.put_route(2, &route_json("web", &listen, &[("a", a.addr)])).await?)?;
    let deadline = t + Duration::from_secs(1);
    for id in c.ids() {
        reaches(on(id), "a", deadline).await?;
    }
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "forwarding on every node took {took:?}");
    for id in c.ids() {
        let r = c.send(id, Request::get("/v1/routes/web")).await?.expect(200)?;
        assert_eq!(r["listening"], on(id).to_string(), "node {id} binds {listen} on its own address");
    }

    // Changed on node 3: new connections everywhere reach the new backend.
    let t = Instant::now();
    written(&c.put_route(3, &route_json("web", &listen, &[("b", b.addr)])).await?)?;
    for id in c.ids() {
        reaches(on(id), "b", t + Duration::from_secs(1)).await?;
    }

    // Deleted on node 1: every node stops listening.
    let t = Instant::now();
    written(&c.send(1, Request::delete("/v1/routes/web")).await?)?;
    for id in c.ids() {
        eventually(Duration::from_secs(1).saturating_sub(t.elapsed()), "the listener closed", || async {
            tokio::net::TcpStream::connect(on(id)).await.is_err().then_some(())
        })
        .await
        .map_err(|e| e.context(format!("node {id} still listens on {}", on(id))))?;
        assert!(c.node(id)?.route_addr("web").is_none());
    }
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_routes_seed_a_new_cluster_once() -> anyhow::Result<()> {
    let a = Greeter::start("a").await?;
    // The cluster's addresses are not known yet: a port free on loopback.
    let port = ferry_tests::cluster::free_ports(&[std::net::IpAddr::from([127, 0, 0, 1])], 1)?[0];
    let seed: RouteSpec =
        serde_json::from_value(route_json("seeded", &format!(":{port}"), &[("a", a.addr)]))?;
    let mut c = TestCluster::start(Options { seed_routes: vec![seed], ..Options::default() }).await?;

    // Seeded once: the same revision everywhere, and it forwards everywhere.
    let revision = eventually(SETTLE, "the seeded route on node 1", || async {
        let r = c.send(1, Request::get("/v1/routes/seeded")).await.ok()?;
        r.expect(200).ok()?["revision"].as_u64()
    })
    .await?;
    for id in c.ids() {
        let r = c.send(id, Request::get("/v1/routes/seeded")).await?.expect(200)?;
        assert_eq!(r["revision"], revision, "node {id}: {r}");
        let addr = eventually(SETTLE, "the seeded route listening", || async {
            c.node(id).ok()?.route_addr("seeded")
        })
        .await?;
        assert_eq!(greet(addr).await?, "a", "node {id}");
    }
    assert_eq!(c.status(1).await?.index, revision, "seeding wrote more than once");

    // The API takes over: delete the seeded route, add another, restart all.
    let api = c.free_port()?;
    written(&c.put_route(2, &route_json("api", &format!(":{api}"), &[("a", a.addr)])).await?)?;
    let deleted = written(&c.send(3, Request::delete("/v1/routes/seeded")).await?)?;
    c.converged(deleted).await?;
    c.stop_all().await?;
    c.start_all().await?;

    for id in c.ids() {
        let r = c.send(id, Request::get("/v1/routes/seeded")).await?;
        assert_eq!(r.status, 404, "node {id}: the seeded route came back: {}", r.body);
        let r = c.send(id, Request::get("/v1/routes/api")).await?;
        r.expect(200).map_err(|e| e.context(format!("node {id}: the API route after the restart")))?;
        assert!(c.node(id)?.route_addr("seeded").is_none(), "node {id} listens for the deleted route");
        reaches(SocketAddr::new(c.ip(id), api), "a", Instant::now() + SETTLE).await?;
    }
    // Nothing is written for a while after the restart (a late re-seed
    // would move the index): a blocking query times out with the same index.
    let t = Instant::now();
    let r = c.send(1, Request::get(format!("/v1/routes?index={deleted}&wait=1s"))).await?;
    assert_eq!(r.index(), Some(deleted), "the config changed after the restart: {}", r.body);
    assert!(t.elapsed() >= Duration::from_millis(900), "the blocking query returned early: {}", r.body);
    c.shutdown().await
}
