//! Balancing through real sockets: weighted shares, consistent-hash
//! agreement across nodes and stability when a backend dies, least
//! connections and round robin.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use ferry_tests::backend::Greeter;
use ferry_tests::client::{Session, greet, greet_from};
use ferry_tests::node::{TestNode, route};
use serde_json::json;

async fn greeters(names: &[&str]) -> anyhow::Result<Vec<Greeter>> {
    let mut v = Vec::new();
    for n in names {
        v.push(Greeter::start(n).await?);
    }
    Ok(v)
}

fn client_ip(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, i))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_shares_follow_weights() -> anyhow::Result<()> {
    let g = greeters(&["a", "b", "c"]).await?;
    let r = route(
        "web",
        "weighted",
        &[("a", g[0].addr, 5), ("b", g[1].addr, 3), ("c", g[2].addr, 2)],
        json!({}),
    )?;
    let node = TestNode::start(vec![r]).await?;
    let addr = node.route_addr("web")?;
    let mut count: HashMap<String, u32> = HashMap::new();
    for _ in 0..1_000 {
        *count.entry(greet(addr).await?).or_default() += 1;
    }
    for (name, want) in [("a", 500), ("b", 300), ("c", 200)] {
        let got = count.get(name).copied().unwrap_or(0);
        assert!(got.abs_diff(want) <= want / 20, "{name}: {got} of 1000, want {want} ±5%: {count:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_agrees_across_nodes_and_moves_only_dead_keys() -> anyhow::Result<()> {
    let g = greeters(&["a", "b", "c"]).await?;
    let backends = [("a", g[0].addr, 1), ("b", g[1].addr, 1), ("c", g[2].addr, 1)];
    let spec = route("hash", "consistent_hash", &backends, json!({"hash_key": "client_ip"}))?;
    let (n1, n2) = (TestNode::start(vec![spec.clone()]).await?, TestNode::start(vec![spec]).await?);
    let (a1, a2) = (n1.route_addr("hash")?, n2.route_addr("hash")?);

    let mut owner = HashMap::new();
    for i in 1..=60 {
        let ip = client_ip(i);
        let first = greet_from(a1, ip).await?;
        assert_eq!(first, greet_from(a1, ip).await?, "client {ip} moved between two connections");
        assert_eq!(first, greet_from(a2, ip).await?, "nodes disagree on client {ip}");
        owner.insert(ip, first);
    }
    let used: std::collections::HashSet<_> = owner.values().collect();
    assert_eq!(used.len(), 3, "60 clients should reach all 3 backends: {owner:?}");

    g[2].kill_and_wait().await?;
    for (ip, before) in &owner {
        let after = greet_from(a1, *ip).await?;
        if before == "c" {
            assert_ne!(after, "c");
        } else {
            assert_eq!(&after, before, "client {ip} moved though its backend is alive");
        }
        assert_eq!(after, greet_from(a2, *ip).await?, "nodes disagree on client {ip} after the failure");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_evens_out_held_sessions() -> anyhow::Result<()> {
    let g = greeters(&["a", "b"]).await?;
    let r = route("lc", "least_connections", &[("a", g[0].addr, 1), ("b", g[1].addr, 1)], json!({}))?;
    let node = TestNode::start(vec![r]).await?;
    let addr = node.route_addr("lc")?;
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(Session::open(addr).await?);
    }
    let on_a = held.iter().filter(|s| s.backend == "a").count();
    assert_eq!(on_a, 5, "10 held sessions over 2 equal backends: {on_a} on a");
    // Close the 5 on b: the next 5 must all go to b.
    held.retain(|s| s.backend == "a");
    ferry_tests::eventually(std::time::Duration::from_secs(5), "b's sessions to close", || async {
        let v = node.get_json("/v1/routes/lc").await.ok()?;
        (v["backends"][1]["active_connections"] == 0).then_some(())
    })
    .await?;
    for _ in 0..5 {
        let s = Session::open(addr).await?;
        assert_eq!(s.backend, "b");
        held.push(s);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_alternates() -> anyhow::Result<()> {
    let g = greeters(&["a", "b"]).await?;
    let r = route("rr", "round_robin", &[("a", g[0].addr, 7), ("b", g[1].addr, 1)], json!({}))?;
    let node = TestNode::start(vec![r]).await?;
    let addr = node.route_addr("rr")?;
    let mut seq = Vec::new();
    for _ in 0..6 {
        seq.push(greet(addr).await?);
    }
    assert!(seq.windows(2).all(|w| w[0] != w[1]), "round robin ignores weights and alternates: {seq:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_spreads_by_weight() -> anyhow::Result<()> {
    let g = greeters(&["a", "b"]).await?;
    let r = route("rnd", "random", &[("a", g[0].addr, 3), ("b", g[1].addr, 1)], json!({}))?;
    let node = TestNode::start(vec![r]).await?;
    let addr = node.route_addr("rnd")?;
    let mut a = 0;
    for _ in 0..400 {
        if greet(addr).await? == "a" {
            a += 1;
        }
    }
    // Expect 300; 5 sigma of a binomial(400, 0.75) is about 43.
    assert!((257..=343).contains(&a), "a got {a} of 400");
    Ok(())
}
