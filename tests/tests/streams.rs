//! Stream behaviour: byte-exact bulk transfer, half-close both ways, idle
//! timeout, and the connection limit.

use std::time::Duration;

use ferry_node::dataplane::copy::CopyMode;
use ferry_tests::backend::Greeter;
use ferry_tests::client::{IO_TIMEOUT, Session};
use ferry_tests::node::{TestNode, route};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn one_route(extra: serde_json::Value) -> anyhow::Result<(Greeter, TestNode)> {
    one_route_copying(CopyMode::Userspace, extra).await
}

async fn one_route_copying(mode: CopyMode, extra: serde_json::Value) -> anyhow::Result<(Greeter, TestNode)> {
    let g = Greeter::start("a").await?;
    let r = route("r", "weighted", &[("a", g.addr, 1)], extra)?;
    let node = TestNode::with_config(|c| {
        c.node.copy = mode;
        c.routes = vec![r];
    })
    .await?;
    Ok((g, node))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_round_trip_is_byte_exact() -> anyhow::Result<()> {
    round_trip(CopyMode::Userspace).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_round_trip_is_byte_exact_with_splice() -> anyhow::Result<()> {
    round_trip(CopyMode::Splice).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_round_trip_is_byte_exact_with_auto() -> anyhow::Result<()> {
    round_trip(CopyMode::Auto).await
}

async fn round_trip(mode: CopyMode) -> anyhow::Result<()> {
    let (_g, node) = one_route_copying(mode, json!({})).await?;
    let s = Session::open(node.route_addr("r")?).await?;
    let (mut rd, mut wr) = s.stream.into_inner().into_split();
    // Deterministic pseudo-random payload (xorshift), so corruption cannot hide.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..10 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&sent).await?;
        wr.shutdown().await?;
        anyhow::Ok(())
    });
    let mut back = Vec::with_capacity(data.len());
    tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut back)).await??;
    writer.await??;
    assert_eq!(back.len(), data.len());
    assert!(back == data, "payload corrupted in transit");
    let bytes = node.node().metrics().proxy_bytes_total.with_label_values(&["r", "upstream"]).get();
    assert_eq!(bytes, data.len() as u64);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_propagates_both_ways() -> anyhow::Result<()> {
    half_close(CopyMode::Userspace).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_propagates_both_ways_with_splice() -> anyhow::Result<()> {
    half_close(CopyMode::Splice).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_propagates_both_ways_with_auto() -> anyhow::Result<()> {
    half_close(CopyMode::Auto).await
}

async fn half_close(mode: CopyMode) -> anyhow::Result<()> {
    let (_g, node) = one_route_copying(mode, json!({})).await?;
    let mut s = Session::open(node.route_addr("r")?).await?;
    // Client sends, then closes its sending side only.
    s.stream.get_mut().write_all(b"last words").await?;
    s.stream.get_mut().shutdown().await?;
    // The backend still answers after our FIN reached it (it echoes, then
    // closes on EOF): data after a half-close, then the backend's own FIN.
    let mut rest = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, s.stream.read_to_end(&mut rest)).await??;
    assert_eq!(rest, b"last words");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() -> anyhow::Result<()> {
    let (_g, node) = one_route(json!({"idle_timeout_ms": 300})).await?;
    let mut s = Session::open(node.route_addr("r")?).await?;
    assert_eq!(s.echo(b"ping").await?, b"ping");
    let t0 = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(IO_TIMEOUT, s.stream.read(&mut buf)).await??;
    assert_eq!(n, 0, "the proxy must close an idle connection");
    assert!(t0.elapsed() >= Duration::from_millis(250), "closed too early: {:?}", t0.elapsed());
    assert_eq!(node.node().metrics().proxy_idle_timeouts_total.with_label_values(&["r"]).get(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_closes_the_excess_at_once() -> anyhow::Result<()> {
    let (_g, node) = one_route(json!({"max_connections": 2})).await?;
    let addr = node.route_addr("r")?;
    let s1 = Session::open(addr).await?;
    let _s2 = Session::open(addr).await?;
    let third = Session::open(addr).await;
    assert!(third.is_err(), "a third connection must be closed without a greeting");
    let rejected = node.node().metrics().proxy_rejected_total.with_label_values(&["r", "max_connections"]);
    assert_eq!(rejected.get(), 1);
    drop(s1);
    ferry_tests::eventually(Duration::from_secs(5), "a free slot", || async {
        Session::open(addr).await.ok().map(|_| ())
    })
    .await?;
    Ok(())
}
