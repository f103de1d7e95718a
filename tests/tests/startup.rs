//! Start-up: a node that cannot bind every route fails and holds nothing.

use std::time::Duration;

use ferry_tests::backend::{Greeter, closed_port};
use ferry_tests::eventually;
use ferry_tests::node::{TestNode, route};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_start_releases_the_ports_it_bound() -> anyhow::Result<()> {
    let g = Greeter::start("a").await?;
    let free = closed_port()?;
    let held = std::net::TcpListener::bind("127.0.0.1:0")?;
    let taken = held.local_addr()?;
    let routes = vec![
        route("ok", "weighted", &[("a", g.addr, 1)], json!({"listen": free.to_string()}))?,
        route("clash", "weighted", &[("a", g.addr, 1)], json!({"listen": taken.to_string()}))?,
    ];
    let err = TestNode::start(routes).await.expect_err("route clash cannot bind");
    assert!(err.to_string().contains("route \"clash\": cannot listen on"), "{err}");
    // The listener of route "ok" was bound before the failure: it must go.
    eventually(Duration::from_secs(5), "the port of route ok to be free", || async {
        std::net::TcpListener::bind(free).ok().map(|_| ())
    })
    .await?;
    Ok(())
}
