//! Test harness: gossip nodes on 127.0.0.1 with real UDP sockets, and waits
//! that poll a condition until a deadline.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use ferry_gossip::{Gossip, GossipConfig, GossipHandle, MemberState, MemberView, NodeIdentity};
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One running gossip node.
#[derive(Debug)]
pub struct TestNode {
    pub id: u64,
    pub identity: NodeIdentity,
    pub handle: GossipHandle,
    pub token: CancellationToken,
}

impl TestNode {
    /// Starts node `id` on `port` (0 for any).
    pub async fn start(id: u64, config: &GossipConfig, port: u16) -> Result<Self> {
        let socket =
            UdpSocket::bind(("127.0.0.1", port)).await.with_context(|| format!("bind port {port}"))?;
        let addr = socket.local_addr()?;
        let cluster_addr = SocketAddr::from(([127, 0, 0, 1], 10_000 + u16::try_from(id)?));
        let admin_addr = SocketAddr::from(([127, 0, 0, 1], 20_000 + u16::try_from(id)?));
        let identity = NodeIdentity::new(id, format!("n{id}"), addr, cluster_addr, admin_addr);
        let token = CancellationToken::new();
        let handle = Gossip::start(config.clone(), identity.clone(), socket, token.clone())?;
        Ok(Self { id, identity, handle, token })
    }

    pub fn addr(&self) -> SocketAddr {
        self.identity.gossip_addr
    }

    /// Crash: stop the driver and close the socket without leaving.
    pub async fn kill(&self) {
        self.token.cancel();
        self.handle.stopped().await;
    }
}

/// `n` nodes with ids 1..=n, all joined through node 1, waited until every
/// node sees all `n` alive.
pub async fn cluster(n: u64, config: &GossipConfig) -> Result<Vec<TestNode>> {
    let mut nodes = Vec::new();
    for id in 1..=n {
        nodes.push(TestNode::start(id, config, 0).await?);
    }
    let seed = nodes[0].addr();
    for node in &nodes[1..] {
        node.handle.join(vec![seed]).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    wait_all(&nodes, deadline, "full membership", |v| all_alive(v, n)).await?;
    Ok(nodes)
}

pub fn all_alive(view: &MemberView, n: u64) -> bool {
    (1..=n).all(|id| view.state_of(id) == Some(MemberState::Alive))
}

/// `id -> state` of a view, for failure messages.
pub fn summary(view: &MemberView) -> BTreeMap<u64, MemberState> {
    view.members.iter().map(|(id, m)| (*id, m.state)).collect()
}

/// Waits until `cond` holds for `node`'s view (woken by every new snapshot).
pub async fn wait_view(
    node: &TestNode,
    deadline: Instant,
    what: &str,
    mut cond: impl FnMut(&MemberView) -> bool,
) -> Result<()> {
    let mut rx = node.handle.subscribe();
    match tokio::time::timeout_at(deadline, rx.wait_for(|v| cond(v))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(anyhow!("node {}: gossip stopped while waiting for {what}", node.id)),
        Err(_) => Err(anyhow!(
            "node {}: timed out waiting for {what}; view {:?}",
            node.id,
            summary(&node.handle.view())
        )),
    }
}

pub async fn wait_all<'a>(
    nodes: impl IntoIterator<Item = &'a TestNode>,
    deadline: Instant,
    what: &str,
    cond: impl Fn(&MemberView) -> bool,
) -> Result<()> {
    for node in nodes {
        wait_view(node, deadline, what, &cond).await?;
    }
    Ok(())
}

/// Polls a condition without a wake-up source (counters) until a deadline.
pub async fn poll_until(deadline: Instant, what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    while !cond() {
        if Instant::now() >= deadline {
            return Err(anyhow!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
