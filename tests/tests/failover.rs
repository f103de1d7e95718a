//! Failover: a dead, refusing or silent backend never fails a client
//! connection while another backend answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ferry_tests::backend::{Blackhole, Greeter, closed_port};
use ferry_tests::client::greet;
use ferry_tests::node::{TestNode, route};
use serde_json::json;

/// One failed client connection and when it started.
#[derive(Debug)]
struct Failure {
    started: Instant,
    error: String,
}

/// Runs `total` connections, `parallel` at a time; returns the failures.
async fn load(addr: std::net::SocketAddr, total: u32, parallel: u32) -> anyhow::Result<Vec<Failure>> {
    let next = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while next.fetch_add(1, Relaxed) < total {
                let started = Instant::now();
                if let Err(e) = greet(addr).await {
                    failures.push(Failure { started, error: e.to_string() });
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await?);
    }
    Ok(failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_backend_fails_no_client() -> anyhow::Result<()> {
    let (b, c) = (Greeter::start("b").await?, Greeter::start("c").await?);
    let dead = closed_port()?;
    // Ejection off: every connection must survive the refused connect itself.
    let r = route(
        "web",
        "round_robin",
        &[("dead", dead, 1), ("b", b.addr, 1), ("c", c.addr, 1)],
        json!({
            "eject_after_failures": 0
        }),
    )?;
    let node = TestNode::start(vec![r]).await?;
    let failures = load(node.route_addr("web")?, 200, 4).await?;
    assert!(failures.is_empty(), "{} of 200 failed: {:?}", failures.len(), failures.first());
    let m = node.node().metrics();
    assert!(
        m.proxy_failovers_total.with_label_values(&["web"]).get() >= 60,
        "a third of connections fail over"
    );
    assert_eq!(m.proxy_connections_total.with_label_values(&["web", "dead", "ok"]).get(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_backend_times_out_and_is_ejected() -> anyhow::Result<()> {
    let b = Greeter::start("b").await?;
    let hole = Blackhole::start().await?;
    let r = route(
        "web",
        "round_robin",
        &[("hole", hole.addr, 1), ("b", b.addr, 1)],
        json!({
            "connect_timeout_ms": 200, "eject_after_failures": 2, "eject_backoff_ms": 60000
        }),
    )?;
    let node = TestNode::start(vec![r]).await?;
    let started = std::time::Instant::now();
    let failures = load(node.route_addr("web")?, 200, 8).await?;
    assert!(failures.is_empty(), "{} of 200 failed: {:?}", failures.len(), failures.first());
    let m = node.node().metrics();
    let timeouts = m.proxy_connections_total.with_label_values(&["web", "hole", "timeout"]).get();
    assert!((2..=12).contains(&timeouts), "ejection stops the timeouts early: {timeouts}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let status = node.get_json("/v1/routes/web").await?;
    assert_eq!(status["backends"][0]["healthy"], false, "{status}");
    assert!(status["backends"][0]["ejected_for_ms"].as_u64().is_some(), "{status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_backend_under_load_fails_no_new_connection() -> anyhow::Result<()> {
    let g = [Greeter::start("a").await?, Greeter::start("b").await?, Greeter::start("c").await?];
    let r = route(
        "web",
        "weighted",
        &[("a", g[0].addr, 1), ("b", g[1].addr, 1), ("c", g[2].addr, 1)],
        json!({}),
    )?;
    let node = TestNode::start(vec![r]).await?;
    let addr = node.route_addr("web")?;
    let loader = tokio::spawn(load(addr, 1_500, 6));
    // Kill b once the load is well under way.
    let m = node.node().metrics().proxy_connections_total.with_label_values(&["web", "b", "ok"]);
    ferry_tests::eventually(Duration::from_secs(10), "traffic to b", || {
        let m = m.clone();
        async move { (m.get() >= 100).then_some(()) }
    })
    .await?;
    // Connections b had already accepted die with it (L4 cannot replay
    // them); every connection that starts after the kill took effect must
    // succeed.
    g[1].kill_and_wait().await?;
    let killed = Instant::now();
    let failures = loader.await??;
    let late: Vec<&Failure> = failures.iter().filter(|f| f.started > killed).collect();
    assert!(
        late.is_empty(),
        "{} connections started after the kill failed ({} failures in all): {:?}",
        late.len(),
        failures.len(),
        late.first().map(|f| &f.error)
    );
    let after_kill =
        node.node().metrics().proxy_connections_total.with_label_values(&["web", "b", "refused"]).get();
    assert!(after_kill >= 1, "the load must have hit the dead backend at least once");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_closes_the_client() -> anyhow::Result<()> {
    let r = route("web", "weighted", &[("x", closed_port()?, 1), ("y", closed_port()?, 1)], json!({}))?;
    let node = TestNode::start(vec![r]).await?;
    let err = greet(node.route_addr("web")?).await.expect_err("no backend can answer");
    assert!(err.to_string().contains("no greeting"), "{err}");
    let m = node.node().metrics().proxy_rejected_total.with_label_values(&["web", "no_backend"]);
    assert_eq!(m.get(), 1);
    Ok(())
}
