//! What `/health/ready` means for a cluster node: ready once it has
//! applied the cluster's config at least once (from a leader, or from its
//! own data dir at start), not before; and a restarted member is ready
//! before it reaches a quorum (static stability: it forwards with the config
//! it last applied).

use std::net::SocketAddr;
use std::time::Duration;

use ferry_node::config::{ClusterSection, GossipSection};
use ferry_tests::cluster::{Options, TestCluster};
use ferry_tests::eventually;
use ferry_tests::http::Request;
use ferry_tests::node::TestNode;

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Before, a node whose only seed does not exist answered 200: no routes,
/// no leader, and `/v1/routes` answering 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_joined_is_not_ready_and_says_why() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("ferry-ready-").tempdir()?;
    // Nothing answers on the seed: a UDP port this test binds and never reads.
    let seed = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let (admin, cluster, gossip) = (free_addr()?, free_addr()?, free_addr()?);
    let seed_addr = seed.local_addr()?.to_string();
    let node = TestNode::with_config(|c| {
        c.admin.addr = admin;
        c.node.data_dir = Some(dir.path().to_path_buf());
        c.cluster = Some(ClusterSection { addr: cluster, ..ClusterSection::with_defaults() });
        c.gossip =
            Some(GossipSection { addr: Some(gossip), join: vec![seed_addr], ..GossipSection::default() });
    })
    .await?;
    // It stays unready (checked over a second of join attempts), naming why.
    for _ in 0..5 {
        let (status, body) = node.get("/health/ready").await?;
        assert_eq!(status, 503, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(body["error"]["code"], "not_joined", "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_ready_and_a_restarted_one_is_ready_without_a_quorum() -> anyhow::Result<()> {
    let mut c = TestCluster::start(Options::default()).await?;
    for id in c.ids() {
        let r = eventually(Duration::from_secs(5), "a formed cluster's member ready", || async {
            c.send(id, Request::get("/health/ready")).await.ok().filter(|r| r.status == 200)
        })
        .await?;
        assert_eq!(r.json()?["status"], "ready", "node {id}");
    }
    c.stop_all().await?;
    // Alone: no leader and no quorum, but the config it applied is on disk.
    c.start_node(1).await?;
    let r = c.send(1, Request::get("/health/ready")).await?;
    assert_eq!(r.status, 200, "a restarted member without quorum: {}", r.body);
    c.shutdown().await
}
