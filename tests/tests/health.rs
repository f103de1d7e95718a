//! Active health checks: a failing backend is taken out, comes back when it
//! passes again, and panic mode keeps a route trying when all are down.

use std::time::Duration;

use ferry_tests::backend::Greeter;
use ferry_tests::client::greet;
use ferry_tests::eventually;
use ferry_tests::node::{TestNode, route};
use serde_json::json;

fn fast_check() -> serde_json::Value {
    json!({"health_check": {"interval_ms": 50, "timeout_ms": 50, "rise": 2, "fall": 2}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_take_a_dead_backend_out_and_bring_it_back() -> anyhow::Result<()> {
    let a = Greeter::start("a").await?;
    let b = Greeter::start("b").await?;
    let b_addr = b.addr;
    let node = TestNode::start(vec![route(
        "web",
        "round_robin",
        &[("a", a.addr, 1), ("b", b.addr, 1)],
        fast_check(),
    )?])
    .await?;
    let addr = node.route_addr("web")?;
    b.kill();
    drop(b);
    eventually(Duration::from_secs(5), "b checked down", || async {
        let v = node.get_json("/v1/routes/web").await.ok()?;
        (v["backends"][1]["check"] == "down" && v["backends"][1]["healthy"] == false).then_some(())
    })
    .await?;
    let m = node.node().metrics();
    assert_eq!(m.backend_healthy.with_label_values(&["web", "b"]).get(), 0);
    let refused_before = m.proxy_connections_total.with_label_values(&["web", "b", "refused"]).get();
    for _ in 0..20 {
        assert_eq!(greet(addr).await?, "a");
    }
    let refused_after = m.proxy_connections_total.with_label_values(&["web", "b", "refused"]).get();
    assert_eq!(refused_before, refused_after, "a backend that is down is not even tried");

    let _b = Greeter::start_on("b", b_addr).await?;
    eventually(Duration::from_secs(5), "b checked up", || async {
        let v = node.get_json("/v1/routes/web").await.ok()?;
        (v["backends"][1]["check"] == "up").then_some(())
    })
    .await?;
    let mut seen_b = false;
    for _ in 0..4 {
        seen_b |= greet(addr).await? == "b";
    }
    assert!(seen_b, "b takes traffic again");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_mode_when_every_backend_fails_its_check() -> anyhow::Result<()> {
    let a = Greeter::start("a").await?;
    let a_addr = a.addr;
    let node = TestNode::start(vec![route("web", "weighted", &[("a", a_addr, 1)], fast_check())?]).await?;
    a.kill();
    drop(a);
    eventually(Duration::from_secs(5), "panic mode", || async {
        let v = node.get_json("/v1/routes/web").await.ok()?;
        (v["panic_mode"] == true).then_some(())
    })
    .await?;
    // In panic mode the backend is still tried: once it is back, clients
    // get through even before its check rises again.
    let _a = Greeter::start_on("a", a_addr).await?;
    assert_eq!(greet(node.route_addr("web")?).await?, "a");
    Ok(())
}
