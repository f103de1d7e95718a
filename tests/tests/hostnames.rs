//! Backends addressed by a host name, with real names: `localhost`
//! (resolves on loopback) and `nonexistent.invalid` (RFC 6761: never
//! resolves). The name that resolves takes traffic; the one that does not
//! makes its backend unhealthy, shows why in the route's status and the
//! metrics, is looked up again on the interval, and never makes the route
//! invalid: in a standalone node's file and through a cluster's API.

use std::time::Duration;

use ferry_client::RouteSpec;
use ferry_client::api::RouteStatus;
use ferry_tests::backend::Greeter;
use ferry_tests::client::greet;
use ferry_tests::cluster::{Options, SETTLE, TestCluster};
use ferry_tests::eventually;
use ferry_tests::http::Request;
use ferry_tests::node::{TestNode, free_listen};
use serde_json::{Value, json};

const NOWHERE: &str = "nonexistent.invalid:80";

fn backends(greeter_port: u16) -> Value {
    json!([{"id": "local", "addr": format!("localhost:{greeter_port}")}, {"id": "nx", "addr": NOWHERE}])
}

/// What the status says of a route's two backends `local` and `nx`.
fn check_status(status: &RouteStatus, greeter_port: u16) -> anyhow::Result<()> {
    let (local, nx) = (&status.backends[0], &status.backends[1]);
    anyhow::ensure!(local.healthy && local.resolve_error.is_none(), "{local:?}");
    let want = format!("127.0.0.1:{greeter_port}");
    let resolved = local.resolved.as_deref().unwrap_or_default();
    anyhow::ensure!(resolved.contains(&want), "localhost resolved to {resolved:?}, not {want}");
    anyhow::ensure!(!nx.healthy, "{nx:?}");
    anyhow::ensure!(nx.resolved.as_deref() == Some(&[][..]), "{nx:?}");
    anyhow::ensure!(nx.resolve_error.as_deref().is_some_and(|e| !e.is_empty()), "no reason in {nx:?}");
    anyhow::ensure!(status.listening.is_some() && !status.panic_mode, "{status:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_resolves_takes_traffic_and_one_that_does_not_is_unhealthy() -> anyhow::Result<()> {
    let a = Greeter::start("a").await?;
    let port = a.addr.port();
    let web: RouteSpec = serde_json::from_value(json!({
        "name": "web", "listen": free_listen()?, "balance": "round_robin", "backends": backends(port)
    }))?;
    // A route whose only backend never resolves is still a valid route.
    let dead: RouteSpec = serde_json::from_value(json!({
        "name": "dead", "listen": free_listen()?, "backends": [{"id": "nx", "addr": NOWHERE}]
    }))?;
    let node = TestNode::with_config(|c| {
        c.node.resolve_interval_ms = 100;
        c.routes = vec![web, dead];
    })
    .await?;

    // Resolved when the route was applied: the first connections get through.
    let addr = node.route_addr("web")?;
    for _ in 0..6 {
        assert_eq!(greet(addr).await?, "a");
    }
    let status: RouteStatus = serde_json::from_value(node.get_json("/v1/routes/web").await?)?;
    check_status(&status, port)?;

    let m = node.node().metrics();
    let nx = ["web", "nx"];
    assert_eq!(m.backend_healthy.with_label_values(&nx).get(), 0);
    assert_eq!(m.backend_resolved_addresses.with_label_values(&nx).get(), 0);
    assert!(m.backend_resolved_addresses.with_label_values(&["web", "local"]).get() >= 1);
    assert_eq!(m.proxy_connections_total.with_label_values(&["web", "nx", "error"]).get(), 0, "never tried");
    // Looked up again on the interval, failing each time.
    eventually(Duration::from_secs(5), "nx looked up again", || async {
        (m.backend_resolve_failures_total.with_label_values(&nx).get() >= 3).then_some(())
    })
    .await?;
    let text = node.get("/metrics").await?.1;
    assert!(text.contains(r#"ferry_backend_resolve_failures_total{backend="nx",route="web"}"#), "{text}");
    assert!(
        text.contains(r#"ferry_backend_resolve_failures_total{backend="local",route="web"} 0"#),
        "{text}"
    );

    // The route of the name alone listens; its clients are closed unserved.
    assert!(greet(node.route_addr("dead")?).await.is_err(), "a backend that does not resolve took a client");
    assert_eq!(m.proxy_rejected_total.with_label_values(&["dead", "no_backend"]).get(), 1);
    let (ready, body) = node.get("/health/ready").await?;
    assert_eq!(ready, 200, "an unresolved backend is not a node problem: {body}");
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_takes_host_names_through_the_api_and_each_node_resolves_them() -> anyhow::Result<()> {
    let a = Greeter::start("a").await?;
    let c = TestCluster::start(Options::default()).await?;
    c.leader().await?;
    let port = c.free_port()?;
    let route = json!({"name": "web", "listen": format!(":{port}"), "balance": "round_robin",
                       "backends": backends(a.addr.port())});
    c.put_route(2, &route).await?.expect(200)?;
    for id in c.ids() {
        let on = std::net::SocketAddr::new(c.ip(id), port);
        eventually(SETTLE, &format!("node {id} forwarding to localhost"), || async {
            greet(on).await.ok().filter(|g| g == "a").map(|_| ())
        })
        .await?;
        let r = c.send(id, Request::get("/v1/routes/web")).await?.expect(200)?;
        check_status(&serde_json::from_value(r)?, a.addr.port())?;
    }

    // A name without a port is a 400 naming the field, and changes nothing.
    let mut bad = route.clone();
    bad["backends"][1]["addr"] = json!("localhost");
    let r = c.put_route(1, &bad).await?;
    let body = r.json()?;
    assert_eq!(r.status, 400, "{body}");
    assert_eq!(body["error"]["fields"][0]["path"], "backends[1].addr", "{body}");
    let stored = c.send(1, Request::get("/v1/routes/web")).await?.expect(200)?;
    assert_eq!(stored["config"]["backends"][1]["addr"], NOWHERE);
    c.shutdown().await?;
    Ok(())
}
