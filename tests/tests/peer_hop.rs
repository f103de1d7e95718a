//! Peers as backends: a backend pinned to node `n2` is reached from node 1
//! through node 2's cluster port (a peer hop); a hop node 2 refuses is a
//! failed connect that node 1 fails over from; a down owner is not tried.
//! These nodes have static membership (no gossip), so the tests hand each
//! node its directory; node/tests/gossip_process.rs covers it with gossip.

use std::net::SocketAddr;
use std::sync::Arc;

use ferry_node::Node;
use ferry_node::dataplane::peers::{Peer, PeerDirectory, PeerState, SelfNode};
use ferry_tests::backend::Greeter;
use ferry_tests::client::{Session, greet};
use ferry_tests::cluster::{Options, SETTLE, TestCluster};
use ferry_tests::eventually;
use ferry_tests::http::Request;
use serde_json::{Value, json};

fn hops(node: &Node, direction: &str, result: &str) -> u64 {
    node.metrics().peer_hops_total.with_label_values(&[direction, result]).get()
}

/// Gives `id` the directory `peers` and waits until its table uses it.
async fn set_peers(c: &TestCluster, id: u64, peers: PeerDirectory) -> anyhow::Result<()> {
    let node = c.node(id)?;
    let peers = Arc::new(peers);
    node.set_peers(Arc::clone(&peers)).await?;
    eventually(SETTLE, &format!("node {id} using its new directory"), || async {
        (**node.table().peers() == *peers).then_some(())
    })
    .await
}

/// `(check, healthy)` of route `web`'s first backend as node `id` sees it.
async fn view(c: &TestCluster, id: u64) -> anyhow::Result<(Value, Value)> {
    let r = c.send(id, Request::get("/v1/routes/web?consistency=stale")).await?.expect(200)?;
    Ok((r["backends"][0]["check"].clone(), r["backends"][0]["healthy"].clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_backends_are_reached_through_their_owner() -> anyhow::Result<()> {
    let (g, x, y) = (Greeter::start("g").await?, Greeter::start("x").await?, Greeter::start("y").await?);
    let c = TestCluster::start(Options { nodes: 2, ..Options::default() }).await?;
    let peer = |id: u64, name: &str, state| Peer {
        id,
        name: name.into(),
        state,
        cluster_addr: SocketAddr::new(c.ip(id), c.cluster_port),
    };
    let me = |id: u64| SelfNode { id, name: format!("n{id}") };
    let (web_port, skew_port) = (c.free_port()?, c.free_port()?);
    c.put_route(
        1,
        &json!({"name": "web", "listen": format!(":{web_port}"), "health_check": {"interval_ms": 200},
                "backends": [{"id": "g", "addr": g.addr.to_string(), "node": "n2"}]}),
    )
    .await?
    .expect(200)?;
    // Backend x names node n3, which node 1 wrongly believes is at node 2's
    // address: node 2 does not own x and says so.
    let index = c
        .put_route(
            1,
            &json!({"name": "skew", "listen": format!(":{skew_port}"), "balance": "round_robin",
                    "eject_after_failures": 0,
                    "backends": [{"id": "x", "addr": x.addr.to_string(), "node": "n3"},
                                 {"id": "y", "addr": y.addr.to_string(), "node": "2"}]}),
        )
        .await?
        .expect(200)?["index"]
        .as_u64()
        .unwrap_or(0);
    c.converged(index).await?;
    let (a, b) = (c.node(1)?, c.node(2)?);
    let web = SocketAddr::new(c.ip(1), web_port);

    // Before node 1 knows n2, the pinned backend is not tried at all.
    assert!(greet(web).await.is_err(), "forwarded to a backend of an unknown node");
    assert_eq!(hops(a, "out", "ok"), 0);

    set_peers(&c, 2, PeerDirectory::new(me(2), [peer(1, "n1", PeerState::Alive)])).await?;
    let mut n3 = peer(2, "n3", PeerState::Alive);
    n3.id = 3;
    let a_peers = [peer(2, "n2", PeerState::Alive), n3.clone()];
    set_peers(&c, 1, PeerDirectory::new(me(1), a_peers)).await?;

    // Node 1 -> node 2's cluster port -> g. Bytes round-trip untouched: had
    // the PROXY header reached g, g would echo it back ahead of the data.
    let mut s = Session::open(web).await?;
    assert_eq!(s.backend, "g");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(s.echo(&data).await?, data);
    drop(s);
    assert_eq!(hops(a, "out", "ok"), 1);
    assert_eq!(hops(b, "in", "ok"), 1);
    // Only the owner checks g; node 1 says so.
    assert_eq!(view(&c, 1).await?, (json!("remote"), json!(true)));
    assert_eq!(view(&c, 2).await?, (json!("up"), json!(true)));

    // A chaos policy acts once, on the node that accepted the client, never
    // again on the owner the hop reaches: one delay per round trip, not two.
    let slow = json!({"name": "slow", "toxics": [{"kind": {"latency": {"latency_ms": 300}}}]});
    let index =
        c.send(1, Request::put("/v1/chaos/slow", &slow)).await?.expect(200)?["index"].as_u64().unwrap_or(0);
    c.converged(index).await?;
    for id in [1, 2] {
        eventually(SETTLE, &format!("node {id} applying the policy"), || async {
            let r =
                c.send(id, Request::get("/v1/routes/web?consistency=stale")).await.ok()?.expect(200).ok()?;
            (r["chaos"] == json!(["slow"])).then_some(())
        })
        .await?;
    }
    let mut s = Session::open(web).await?;
    let t0 = std::time::Instant::now();
    assert_eq!(s.echo(b"once").await?, b"once");
    let took = t0.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(300) && took < std::time::Duration::from_millis(550),
        "a round trip through a hop took {took:?}: the delay must apply once"
    );
    drop(s);
    c.send(1, Request::delete("/v1/chaos/slow")).await?.expect(200)?;

    // A refused hop is a failed connect: node 1 fails over to y at once.
    let skew = SocketAddr::new(c.ip(1), skew_port);
    for _ in 0..4 {
        assert_eq!(greet(skew).await?, "y");
    }
    assert!(hops(a, "out", "not_owner") >= 1, "node 1 never tried x");
    assert_eq!(hops(a, "out", "not_owner"), hops(b, "in", "not_owner"));
    assert!(hops(b, "in", "ok") >= 5);

    // The owner down: its backends are not tried (no hop is even sent).
    let sent = hops(a, "out", "ok") + hops(a, "out", "not_owner");
    set_peers(&c, 1, PeerDirectory::new(me(1), [peer(2, "n2", PeerState::Down), n3])).await?;
    assert!(greet(web).await.is_err(), "forwarded to a backend of a down node");
    assert_eq!(hops(a, "out", "ok") + hops(a, "out", "not_owner"), sent);
    assert_eq!(view(&c, 1).await?, (json!("remote"), json!(false)));

    c.shutdown().await
}
