//! Applying new routes: new connections follow the new table, established
//! ones keep flowing, removed listeners drain, invalid routes change nothing.

use std::time::Duration;

use ferry_tests::backend::Greeter;
use ferry_tests::client::{Session, greet};
use ferry_tests::node::{TestNode, route};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_route_keeps_established_connections() -> anyhow::Result<()> {
    let (a, b) = (Greeter::start("a").await?, Greeter::start("b").await?);
    let node = TestNode::start(vec![route("web", "weighted", &[("a", a.addr, 1)], json!({}))?]).await?;
    let addr = node.route_addr("web")?;
    let mut old = Session::open(addr).await?;
    assert_eq!(old.backend, "a");

    let same = json!({"listen": addr.to_string()});
    node.node().apply_routes(vec![route("web", "weighted", &[("b", b.addr, 1)], same)?]).await?;
    assert_eq!(node.route_addr("web")?, addr, "same listen address: the listener stays");
    assert_eq!(greet(addr).await?, "b", "new connections use the new backends");
    assert_eq!(old.echo(b"still here").await?, b"still here", "the old connection keeps flowing");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_and_removed_routes() -> anyhow::Result<()> {
    let a = Greeter::start("a").await?;
    let node = TestNode::with_config(|c| {
        c.node.drain_timeout_ms = 300;
        c.routes = vec![route("one", "weighted", &[("a", a.addr, 1)], json!({})).expect("route")];
    })
    .await?;
    let one = node.route_addr("one")?;
    let mut held = Session::open(one).await?;

    node.node().apply_routes(vec![route("two", "weighted", &[("a", a.addr, 1)], json!({}))?]).await?;
    assert_eq!(greet(node.route_addr("two")?).await?, "a", "the added route serves");
    assert!(node.route_addr("one").is_err());
    assert!(tokio::net::TcpStream::connect(one).await.is_err(), "a removed route stops accepting");
    // Its connection drains for the grace period, then is closed.
    assert_eq!(held.echo(b"draining").await?, b"draining");
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut held.stream, &mut buf),
    )
    .await??;
    assert_eq!(n, 0, "closed at the end of the drain");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_routes_change_nothing() -> anyhow::Result<()> {
    let a = Greeter::start("a").await?;
    let node = TestNode::start(vec![route("web", "weighted", &[("a", a.addr, 1)], json!({}))?]).await?;
    let before = node.node().table().generation;
    let mut bad = route("web", "weighted", &[("a", a.addr, 1)], json!({}))?;
    bad.backends[0].addr = "nowhere".into();
    let err = node.node().apply_routes(vec![bad]).await.expect_err("invalid routes are refused");
    assert_eq!(
        err.to_string(),
        "routes[0].backends[0].addr: invalid address \"nowhere\": the port is missing (expected IP:PORT or HOST:PORT)"
    );
    assert_eq!(node.node().table().generation, before);
    assert_eq!(greet(node.route_addr("web")?).await?, "a");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_route_frees_its_old_port_for_another() -> anyhow::Result<()> {
    let a = Greeter::start("a").await?;
    let b = Greeter::start("b").await?;
    let node = TestNode::start(vec![route("x", "weighted", &[("a", a.addr, 1)], json!({}))?]).await?;
    let port = node.route_addr("x")?;
    // Route y takes x's exact address while x moves elsewhere, in one apply.
    let y = route("y", "weighted", &[("b", b.addr, 1)], json!({"listen": port.to_string()}))?;
    let elsewhere = ferry_tests::backend::closed_port()?;
    let x = route("x", "weighted", &[("a", a.addr, 1)], json!({"listen": elsewhere.to_string()}))?;
    node.node().apply_routes(vec![x, y]).await?;
    assert_eq!(greet(port).await?, "b");
    assert_eq!(node.route_addr("x")?, elsewhere);
    assert_eq!(greet(elsewhere).await?, "a");
    Ok(())
}

/// A route moved to an address it cannot bind rejects the whole change:
/// before, its old listener was stopped first and the route was left
/// listening nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_cannot_bind_rejects_the_change_and_the_old_listener_keeps_serving() -> anyhow::Result<()>
{
    let (a, b) = (Greeter::start("a").await?, Greeter::start("b").await?);
    let node = TestNode::start(vec![route("web", "weighted", &[("a", a.addr, 1)], json!({}))?]).await?;
    let addr = node.route_addr("web")?;
    let mut old = Session::open(addr).await?;
    let before = node.node().table().generation;

    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let busy = taken.local_addr()?;
    let moved = route("web", "weighted", &[("a", a.addr, 1)], json!({"listen": busy.to_string()}))?;
    let added = route("new", "weighted", &[("b", b.addr, 1)], json!({}))?;
    let err = node.node().apply_routes(vec![moved, added]).await.expect_err("the busy address is refused");
    assert!(err.to_string().contains(&format!("route \"web\": cannot listen on {busy}")), "{err}");

    assert_eq!(node.node().table().generation, before, "the table was not rebuilt");
    assert_eq!(node.route_addr("web")?, addr, "the route still listens where it did");
    assert!(node.route_addr("new").is_err(), "nothing of the rejected change was applied");
    assert_eq!(greet(addr).await?, "a", "the old listener serves new connections");
    assert_eq!(old.echo(b"still here").await?, b"still here");

    // Once the address is free the same change applies.
    drop(taken);
    let moved = route("web", "weighted", &[("a", a.addr, 1)], json!({"listen": busy.to_string()}))?;
    node.node().apply_routes(vec![moved]).await?;
    assert_eq!(node.route_addr("web")?, busy);
    assert_eq!(greet(busy).await?, "a");
    Ok(())
}

/// Before, moving a route closed its established connections at the end of
/// the drain, as if the route had been removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_route_keeps_its_connections_past_the_drain() -> anyhow::Result<()> {
    let a = Greeter::start("a").await?;
    let node = TestNode::with_config(|c| {
        c.node.drain_timeout_ms = 200;
        c.routes = vec![route("x", "weighted", &[("a", a.addr, 1)], json!({})).expect("route")];
    })
    .await?;
    let old = node.route_addr("x")?;
    let mut held = Session::open(old).await?;
    let elsewhere = ferry_tests::backend::closed_port()?;
    let x = route("x", "weighted", &[("a", a.addr, 1)], json!({"listen": elsewhere.to_string()}))?;
    node.node().apply_routes(vec![x]).await?;
    assert!(tokio::net::TcpStream::connect(old).await.is_err(), "the old address stops accepting");
    assert_eq!(greet(elsewhere).await?, "a");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(held.echo(b"after the drain").await?, b"after the drain", "still open three drains later");
    Ok(())
}

/// A route moving onto an address its own listener holds can only be bound
/// after that listener stops; when that bind fails, the previous routes
/// come back. Here 0.0.0.0:P cannot be bound while another socket listens
/// on 127.0.0.2:P.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_that_fails_after_the_old_listener_stopped_puts_the_old_routes_back() -> anyhow::Result<()> {
    let a = Greeter::start("a").await?;
    // A fixed port, as in a real file: the old address is bound again.
    let fixed = ferry_tests::backend::closed_port()?;
    let x = route("x", "weighted", &[("a", a.addr, 1)], json!({"listen": fixed.to_string()}))?;
    let node = TestNode::start(vec![x]).await?;
    let addr = node.route_addr("x")?;
    assert_eq!(addr, fixed);
    let _other = std::net::TcpListener::bind(("127.0.0.2", addr.port()))?;
    let wildcard = format!("0.0.0.0:{}", addr.port());
    let moved = route("x", "weighted", &[("a", a.addr, 1)], json!({"listen": wildcard}))?;
    let err = node.node().apply_routes(vec![moved]).await.expect_err("the wildcard address is refused");
    assert!(err.to_string().contains(&format!("route \"x\": cannot listen on {wildcard}")), "{err}");
    assert_eq!(node.route_addr("x")?, addr, "the route listens where it did");
    assert_eq!(node.node().table().get("x").map(|r| r.listen), Some(addr), "the table has the old route");
    assert_eq!(greet(addr).await?, "a");
    Ok(())
}
