//! The cluster transport on loopback: refusals of foreign frames, timeouts,
//! and real three-node openraft clusters whose every RPC goes through it
//! (replication, forwarded writes, leader failover, snapshot catch-up).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ferry_node::cluster::frame::{FrameError, encode_frame, read_frame, write_frame};
use ferry_node::cluster::{
    ClusterServer, ErrorCode, Message, Network, ServerConfig, Transport, TransportConfig, TransportError,
    TransportPreVoter, TransportStats, WriteError, serve,
};
use ferry_raft_store::election::Election;
use ferry_raft_store::types::Raft;
use ferry_raft_store::{Command, NodeId, NodeInfo, RaftTimers, Request, Response, StateWatch};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const CLUSTER: &str = "ferry-test";
/// Bound of every wait for a condition.
const WAIT: Duration = Duration::from_secs(15);
/// Bound of a whole test.
const TEST_LIMIT: Duration = Duration::from_secs(90);

/// One Raft node on a temp dir, serving the cluster port on 127.0.0.1:0.
struct TestNode {
    id: NodeId,
    raft: Raft,
    watch: StateWatch,
    info: NodeInfo,
    stats: Arc<TransportStats>,
    election: Arc<Election>,
    shutdown: CancellationToken,
    /// Stops only the server (a child of `shutdown`).
    server_stop: CancellationToken,
    server: Option<JoinHandle<()>>,
    _dir: TempDir,
}

impl TestNode {
    async fn start(id: NodeId, tweak: impl FnOnce(&mut openraft::Config)) -> Result<Self> {
        Self::start_timed(id, RaftTimers::default(), tweak).await
    }

    async fn start_timed(
        id: NodeId,
        timers: RaftTimers,
        tweak: impl FnOnce(&mut openraft::Config),
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().to_owned();
        let (db, sync) = tokio::task::spawn_blocking(move || {
            let db = ferry_raft_store::open_db(&path, WAIT)?;
            let sync = ferry_raft_store::DiskSync::open(&path, ferry_raft_store::SyncMode::Fdatasync)?;
            Ok::<_, ferry_raft_store::StoreError>((db, Arc::new(sync)))
        })
        .await??;
        let (log, sm) = ferry_raft_store::open(&db, &sync)?;
        let watch = sm.watch();
        let mut config = ferry_raft_store::raft_config(CLUSTER, timers)?;
        tweak(&mut config);
        let stats = Arc::new(TransportStats::default());
        let transport = Arc::new(Transport::new(CLUSTER, TransportConfig::default(), Arc::clone(&stats)));
        let raft = Raft::new(id, Arc::new(config), Network::new(id, Arc::clone(&transport)), log.clone(), sm)
            .await?;
        let election = Election::new(raft.clone(), log, timers);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let info = NodeInfo {
            name: format!("n{id}"),
            cluster_addr: listener.local_addr()?.to_string(),
            admin_addr: "127.0.0.1:0".into(),
        };
        let shutdown = CancellationToken::new();
        let server = ClusterServer::new(raft.clone(), CLUSTER, Arc::clone(&stats), ServerConfig::default())
            .with_election(Arc::clone(&election));
        tokio::spawn(
            Arc::clone(&election).run(TransportPreVoter::new(transport), shutdown.clone().cancelled_owned()),
        );
        let server_stop = shutdown.child_token();
        let server = Some(tokio::spawn(serve(listener, server, server_stop.clone())));
        Ok(Self { id, raft, watch, info, stats, election, shutdown, server_stop, server, _dir: dir })
    }

    /// Stops this node's server for `down` (peers cannot reach it; it can
    /// still reach them), then serves the same address again.
    async fn cut_inbound_for(&mut self, down: Duration) -> Result<()> {
        self.server_stop.cancel();
        if let Some(server) = self.server.take() {
            timeout(WAIT, server).await.context("server did not stop")??;
        }
        tokio::time::sleep(down).await;
        let listener = TcpListener::bind(&self.info.cluster_addr).await?;
        let server =
            ClusterServer::new(self.raft.clone(), CLUSTER, Arc::clone(&self.stats), ServerConfig::default())
                .with_election(Arc::clone(&self.election));
        self.server_stop = self.shutdown.child_token();
        self.server = Some(tokio::spawn(serve(listener, server, self.server_stop.clone())));
        Ok(())
    }

    /// Stops the server (awaiting its connections) and Raft.
    async fn stop(&mut self) -> Result<()> {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            timeout(WAIT, server).await.context("server did not stop")??;
        }
        timeout(WAIT, self.raft.shutdown()).await.context("raft did not stop")??;
        Ok(())
    }

    /// Waits until this node has applied a config containing route `name`.
    async fn wait_route(&self, name: &str) -> Result<()> {
        let mut changes = self.watch.subscribe();
        timeout(WAIT, changes.wait_for(|s| s.routes.contains_key(name)))
            .await
            .with_context(|| format!("node {} never applied route {name}", self.id))??;
        Ok(())
    }
}

/// Runs a test body with an overall time limit.
async fn bounded(body: impl Future<Output = Result<()>>) -> Result<()> {
    timeout(TEST_LIMIT, body).await.context("test exceeded its time limit")?
}

fn client() -> Transport {
    Transport::new(CLUSTER, TransportConfig::default(), Arc::new(TransportStats::default()))
}

fn put(name: &str, id: u128) -> Request {
    let route = serde_json::from_value(serde_json::json!({
        "name": name, "listen": "127.0.0.1:0",
        "backends": [{"id": "a", "addr": "127.0.0.1:9001"}]
    }))
    .expect("valid route json");
    Request::with_id(id, Command::PutRoute { route, cas: None })
}

/// Starts `n` nodes, initializes them from node 1 and waits until all agree
/// on a leader; returns the nodes and the leader's index in the vector.
async fn cluster(n: u64, tweak: fn(&mut openraft::Config)) -> Result<(Vec<TestNode>, usize)> {
    cluster_timed(n, RaftTimers::default(), tweak).await
}

/// [`cluster`] with election timers `timers`.
async fn cluster_timed(
    n: u64,
    timers: RaftTimers,
    tweak: fn(&mut openraft::Config),
) -> Result<(Vec<TestNode>, usize)> {
    let mut nodes = Vec::new();
    for id in 1..=n {
        nodes.push(TestNode::start_timed(id, timers, tweak).await?);
    }
    let members: BTreeMap<NodeId, NodeInfo> = nodes.iter().map(|n| (n.id, n.info.clone())).collect();
    nodes[0].raft.initialize(members).await?;
    let leader = agreed_leader(&nodes, None).await?;
    let index = nodes.iter().position(|n| n.id == leader).context("leader is not a node")?;
    Ok((nodes, index))
}

/// Waits until every running node in `nodes` names the same leader, other
/// than `not`.
async fn agreed_leader(nodes: &[TestNode], not: Option<NodeId>) -> Result<NodeId> {
    let running: Vec<&TestNode> = nodes.iter().filter(|n| n.server.is_some()).collect();
    let first = running.first().context("no running node")?;
    let m = first
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.current_leader.is_some_and(|l| Some(l) != not), "a leader")
        .await?;
    let leader = m.current_leader.context("leader vanished")?;
    for node in &running {
        node.raft.wait(Some(WAIT)).metrics(|m| m.current_leader == Some(leader), "same leader").await?;
    }
    Ok(leader)
}

async fn stop_all(nodes: &mut [TestNode]) -> Result<()> {
    for node in nodes.iter_mut().filter(|n| n.server.is_some()) {
        node.stop().await?;
    }
    Ok(())
}

fn count(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// A frame with a foreign cluster id, another version or garbage is refused
/// with an error reply, counted, and the connection closed; a good peer's
/// connection is reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_refuses_foreign_frames_and_reuses_connections() -> Result<()> {
    bounded(async {
        let mut node = TestNode::start(1, |_| {}).await?;
        let addr = node.info.cluster_addr.clone();

        // The same cluster: pings share one connection.
        let ours = client();
        for _ in 0..3 {
            let reply = ours.call(&addr, &Message::Ping).await?;
            ensure!(matches!(reply, Message::Pong), "got {reply:?}");
        }
        ensure!(count(&ours.stats().connections_opened) == 1, "pings did not reuse the connection");
        ensure!(ours.idle_connections(&addr).await == 1);

        // Another cluster through the transport: refused, counted on both sides.
        let foreign =
            Transport::new("other-cluster", TransportConfig::default(), Arc::new(TransportStats::default()));
        match foreign.call(&addr, &Message::Ping).await {
            // The refusal comes in an envelope of the other cluster.
            Err(e @ TransportError::Frame { source: FrameError::WrongCluster { .. }, .. }) => {
                ensure!(e.is_unreachable(), "a foreign cluster must count as unreachable");
                ensure!(e.to_string().contains(CLUSTER), "error does not name the other cluster: {e}");
            }
            other => bail!("foreign cluster accepted: {other:?}"),
        }
        ensure!(count(&node.stats.refused_cluster_id) == 1);
        ensure!(count(&foreign.stats().refused_cluster_id) == 1);
        ensure!(foreign.idle_connections(&addr).await == 0, "refused connection was pooled");

        // Raw sockets: the error reply arrives, then the server closes.
        let refusals: [(Vec<u8>, ErrorCode); 3] = [
            (encode_frame("other-cluster", &Message::Ping)?, ErrorCode::WrongCluster),
            (
                {
                    let mut f = encode_frame(CLUSTER, &Message::Ping)?;
                    f[4] = 1; // wire version 1
                    f
                },
                ErrorCode::WrongVersion,
            ),
            (vec![0, 0, 0, 3, ferry_node::cluster::WIRE_VERSION as u8, 0xFF, 0xFF], ErrorCode::Malformed),
        ];
        for (frame, want) in refusals {
            let mut stream = TcpStream::connect(&addr).await?;
            write_frame(&mut stream, &frame).await?;
            let payload = timeout(WAIT, read_frame(&mut stream)).await??;
            let reply = ferry_node::cluster::frame::decode_payload(&payload, CLUSTER)?;
            ensure!(
                matches!(reply, Message::Error { code, .. } if code == want),
                "want {want:?}, got {reply:?}"
            );
            let next = timeout(WAIT, read_frame(&mut stream)).await?;
            ensure!(matches!(next, Err(FrameError::Closed)), "connection left open after {want:?}: {next:?}");
        }
        let s = node.stats.snapshot();
        ensure!(s.refused_cluster_id == 2 && s.refused_version == 1 && s.malformed == 1, "{s:?}");

        // An oversized declared length: refused and closed without sending the payload.
        let mut stream = TcpStream::connect(&addr).await?;
        stream.write_all(&u32::MAX.to_be_bytes()).await?;
        let payload = timeout(WAIT, read_frame(&mut stream)).await??;
        let reply = ferry_node::cluster::frame::decode_payload(&payload, CLUSTER)?;
        ensure!(matches!(reply, Message::Error { code: ErrorCode::Malformed, .. }), "{reply:?}");
        ensure!(matches!(timeout(WAIT, read_frame(&mut stream)).await?, Err(FrameError::Closed)));
        ensure!(node.stats.snapshot().oversized == 1);

        // A reply sent as a request is refused.
        let reply = ours.call(&addr, &Message::Pong).await;
        ensure!(
            matches!(reply, Err(TransportError::Remote { code: ErrorCode::Unexpected, .. })),
            "{reply:?}"
        );

        // The server still serves good peers.
        ensure!(matches!(ours.call(&addr, &Message::Ping).await?, Message::Pong));
        node.stop().await
    })
    .await
}

/// A peer that accepts but never answers times out within the deadline and
/// its connection is not reused; a closed port is unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_transport_timeouts_and_unreachable_peers() -> Result<()> {
    bounded(async {
        let silent = TcpListener::bind("127.0.0.1:0").await?;
        let addr = silent.local_addr()?.to_string();
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let t = client();
        let started = std::time::Instant::now();
        let res = t.call_timeout(&addr, &Message::Ping, Duration::from_millis(200)).await;
        let took = started.elapsed();
        ensure!(matches!(res, Err(TransportError::Timeout { .. })), "{res:?}");
        ensure!(took >= Duration::from_millis(200) && took < Duration::from_secs(2), "took {took:?}");
        ensure!(t.idle_connections(&addr).await == 0, "timed-out connection was pooled");
        accept.abort();

        // Nothing listens on a port just released.
        let closed = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.to_string();
        let res = t.call(&closed, &Message::Ping).await;
        ensure!(matches!(&res, Err(e @ TransportError::Connect { .. }) if e.is_unreachable()), "{res:?}");
        ensure!(t.stats().snapshot().request_errors == 2);

        // A peer whose server restarted: the pooled connection is dead, the call reconnects.
        let mut node = TestNode::start(1, |_| {}).await?;
        let addr = node.info.cluster_addr.clone();
        ensure!(matches!(t.call(&addr, &Message::Ping).await?, Message::Pong));
        ensure!(t.idle_connections(&addr).await == 1);
        node.shutdown.cancel();
        if let Some(server) = node.server.take() {
            timeout(WAIT, server).await??;
        }
        let listener = TcpListener::bind(&addr).await?;
        let server =
            ClusterServer::new(node.raft.clone(), CLUSTER, Arc::clone(&node.stats), ServerConfig::default());
        node.shutdown = CancellationToken::new();
        node.server = Some(tokio::spawn(serve(listener, server, node.shutdown.clone())));
        ensure!(matches!(t.call(&addr, &Message::Ping).await?, Message::Pong), "no reconnect after restart");
        // One to the silent peer, one before and one after the restart.
        ensure!(t.stats().snapshot().connections_opened == 3);
        ensure!(t.stats().snapshot().request_errors == 2, "the restart cost a failed request");
        node.stop().await
    })
    .await
}

/// A follower that cannot hear the leader (its inbound connections are
/// refused) for several election timeouts asks for pre-votes, is refused by
/// the peers that still hear the leader, and so never raises its term: when
/// it is reachable again the leader keeps its leadership and term. Without
/// pre-vote it would campaign, and its higher term would depose the leader
/// at the next AppendEntries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_from_the_leader_does_not_depose_it_when_it_returns() -> Result<()> {
    bounded(async {
        let (mut nodes, l) = cluster(3, |_| {}).await?;
        let leader_id = nodes[l].id;
        let term = nodes[l].raft.metrics().borrow().current_term;
        let f = (l + 1) % nodes.len();
        // Election timeouts are 150-300 ms: a second holds several.
        nodes[f].cut_inbound_for(Duration::from_secs(1)).await?;
        ensure!(
            nodes[f].raft.metrics().borrow().current_term == term,
            "the cut-off follower raised its term"
        );
        // Back in reach: it follows the same leader in the same term.
        nodes[f]
            .raft
            .wait(Some(WAIT))
            .metrics(|m| m.current_leader == Some(leader_id), "the leader again")
            .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        for node in &nodes {
            let m = node.raft.metrics().borrow().clone();
            ensure!(m.current_term == term, "node {} is at term {}, was {term}", node.id, m.current_term);
            ensure!(m.current_leader == Some(leader_id), "node {} follows {:?}", node.id, m.current_leader);
        }
        for node in &mut nodes {
            node.stop().await?;
        }
        Ok(())
    })
    .await
}

/// Three Raft nodes over the transport: replication, a write forwarded to a
/// follower answered with the leader, a write to the leader applied, and
/// after the leader stops, a new leader that accepts writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_three_nodes_replicate_forward_and_fail_over() -> Result<()> {
    bounded(async {
        let (mut nodes, l) = cluster(3, |_| {}).await?;
        let leader_id = nodes[l].id;

        let written = nodes[l].raft.client_write(put("web", 1)).await?.data;
        ensure!(matches!(written, Response::Applied { .. }), "{written:?}");
        for node in &nodes {
            node.wait_route("web").await?;
        }

        // A follower answers a forwarded write with the leader's addresses.
        let t = client();
        let f = (l + 1) % nodes.len();
        let reply = t.call(&nodes[f].info.cluster_addr, &Message::ClientWrite(put("api", 2))).await?;
        match reply {
            Message::ClientWriteResult(Err(WriteError::ForwardToLeader { leader_id: id, leader })) => {
                ensure!(id == leader_id, "follower named {id}, leader is {leader_id}");
                ensure!(leader == nodes[l].info, "follower named {leader:?}");
            }
            other => bail!("follower did not forward: {other:?}"),
        }
        // The leader applies it.
        let reply = t.call(&nodes[l].info.cluster_addr, &Message::ClientWrite(put("api", 2))).await?;
        ensure!(matches!(reply, Message::ClientWriteResult(Ok(Response::Applied { .. }))), "{reply:?}");
        for node in &nodes {
            node.wait_route("api").await?;
        }

        // The leader stops; the other two elect a new one, which takes writes.
        nodes[l].stop().await?;
        let new_leader = agreed_leader(&nodes, Some(leader_id)).await?;
        let nl = nodes.iter().position(|n| n.id == new_leader).context("new leader is not a node")?;
        let reply =
            t.call(&nodes[nl].info.cluster_addr, &Message::ClientWrite(put("after-failover", 3))).await?;
        ensure!(matches!(reply, Message::ClientWriteResult(Ok(Response::Applied { .. }))), "{reply:?}");
        for node in nodes.iter().filter(|n| n.server.is_some()) {
            node.wait_route("after-failover").await?;
        }
        // The remaining follower points at the new leader.
        let rf = nodes
            .iter()
            .position(|n| n.server.is_some() && n.id != new_leader)
            .context("no remaining follower")?;
        let reply = t.call(&nodes[rf].info.cluster_addr, &Message::ClientWrite(put("x", 4))).await?;
        ensure!(
            matches!(reply, Message::ClientWriteResult(Err(WriteError::ForwardToLeader { leader_id, .. })) if leader_id == new_leader),
            "{reply:?}"
        );
        for node in &nodes {
            let s = node.stats.snapshot();
            ensure!(s.refused_cluster_id == 0 && s.malformed == 0 && s.oversized == 0, "node {}: {s:?}", node.id);
        }
        stop_all(&mut nodes).await
    })
    .await
}

/// Writes that queue while earlier ones are being appended share log
/// entries (the leader's write batcher), yet each keeps its own config index,
/// revision, compare-and-set check and request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_log_entries_and_keep_their_own_revisions() -> Result<()> {
    bounded(async {
        let (mut nodes, l) = cluster(3, |_| {}).await?;
        let t = client();
        let addr = nodes[l].info.cluster_addr.clone();
        let reply = t.call(&addr, &Message::ClientWrite(put("web", 1))).await?;
        let Message::ClientWriteResult(Ok(Response::Applied { revision: created, .. })) = reply else {
            bail!("create: {reply:?}");
        };
        let log_before = nodes[l].raft.metrics().borrow().last_log_index.unwrap_or(0);

        // 64 weight changes to the same route at once, through the cluster
        // port as forwarded writes arrive; ids 100.. and one request sent
        // twice (the same id and command: a retry).
        const N: u64 = 64;
        let weight = |i: u64| {
            let i = i.min(N - 2);
            let command = Command::SetBackendWeight {
                route: "web".into(),
                backend: "a".into(),
                weight: u32::try_from(i % 50 + 1).unwrap_or(1),
                cas: None,
            };
            Request::with_id(u128::from(100 + i), command)
        };
        let calls = (0..N).map(|i| {
            let t = client();
            let (addr, req) = (addr.clone(), weight(i));
            tokio::spawn(async move { t.call(&addr, &Message::ClientWrite(req)).await })
        });
        let mut indexes = Vec::new();
        for call in calls.collect::<Vec<_>>() {
            match call.await?? {
                Message::ClientWriteResult(Ok(Response::Applied { index, revision })) => {
                    ensure!(index == revision, "index {index} != revision {revision}");
                    indexes.push(index);
                }
                other => bail!("write: {other:?}"),
            }
        }
        // The retried id (the last two calls) was answered from memory.
        indexes.sort_unstable();
        let retried = indexes.windows(2).filter(|w| w[0] == w[1]).count();
        ensure!(retried == 1, "expected one repeated answer (the retried id), got {retried}: {indexes:?}");
        indexes.dedup();
        ensure!(indexes.len() as u64 == N - 1, "{} distinct revisions for {} changes", indexes.len(), N - 1);
        ensure!(
            indexes[0] > created,
            "a change took revision {} <= the route's creation {created}",
            indexes[0]
        );

        let m = nodes[l].raft.metrics().borrow().clone();
        let entries = m.last_log_index.unwrap_or(0) - log_before;
        ensure!(entries < N - 1, "{} changes took {entries} log entries: nothing was batched", N - 1);
        let s = nodes[l].stats.snapshot();
        ensure!(s.proposed_writes > s.write_proposals, "batcher counters: {s:?}");

        // Every node holds the last change under the same revision.
        let last = *indexes.last().context("no index")?;
        for node in &nodes {
            let mut changes = node.watch.subscribe();
            let state = timeout(WAIT, changes.wait_for(|s| s.index >= last)).await??.clone();
            let route = state.routes.get("web").context("route web")?;
            ensure!(route.revision == last, "node {}: revision {} != {last}", node.id, route.revision);
        }

        // Compare-and-set from 16 writers at once against the same revision:
        // exactly one wins, batched or not.
        let calls = (0..16u32).map(|i| {
            let t = client();
            let addr = addr.clone();
            let command = Command::SetBackendWeight {
                route: "web".into(),
                backend: "a".into(),
                weight: i + 1,
                cas: Some(last),
            };
            tokio::spawn(async move { t.call(&addr, &Message::ClientWrite(Request::new(command))).await })
        });
        let mut won = 0;
        for call in calls.collect::<Vec<_>>() {
            match call.await?? {
                Message::ClientWriteResult(Ok(Response::Applied { .. })) => won += 1,
                Message::ClientWriteResult(Ok(Response::Rejected { .. })) => {}
                other => bail!("cas write: {other:?}"),
            }
        }
        ensure!(won == 1, "{won} compare-and-set writes on revision {last} succeeded");
        stop_all(&mut nodes).await
    })
    .await
}

/// Linearizable reads that queue while a read-index round runs share the
/// next round, and each still sees everything applied before it was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_share_read_index_rounds_and_stay_linearizable() -> Result<()> {
    bounded(async {
        let (mut nodes, l) = cluster(3, |_| {}).await?;
        let addr = nodes[l].info.cluster_addr.clone();
        let reply = client().call(&addr, &Message::ClientWrite(put("web", 1))).await?;
        ensure!(matches!(reply, Message::ClientWriteResult(Ok(Response::Applied { .. }))), "{reply:?}");
        let before = nodes[l].stats.snapshot();

        // A writer keeps the commit index moving while 32 readers each read
        // 10 times; every read index must cover what was applied before the
        // read was sent.
        let stop = CancellationToken::new();
        let writer = {
            let (addr, stop) = (addr.clone(), stop.clone());
            tokio::spawn(async move {
                let t = client();
                let mut w = 0u32;
                while !stop.is_cancelled() && w < 2_000 {
                    w += 1;
                    let command = Command::SetBackendWeight {
                        route: "web".into(),
                        backend: "a".into(),
                        weight: w % 50 + 1,
                        cas: None,
                    };
                    t.call(&addr, &Message::ClientWrite(Request::new(command))).await?;
                }
                anyhow::Ok(())
            })
        };
        let readers = (0..32).map(|_| {
            let (addr, raft) = (addr.clone(), nodes[l].raft.clone());
            tokio::spawn(async move {
                let t = client();
                for _ in 0..10 {
                    let applied = raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
                    match t.call(&addr, &Message::ReadIndex).await? {
                        Message::ReadIndexResult(Ok(index)) => {
                            ensure!(
                                index >= applied,
                                "read index {index} below {applied} applied before the read"
                            )
                        }
                        other => bail!("read: {other:?}"),
                    }
                }
                Ok(())
            })
        });
        for reader in readers.collect::<Vec<_>>() {
            reader.await??;
        }
        stop.cancel();
        writer.await??;

        let after = nodes[l].stats.snapshot();
        let (rounds, reads) =
            (after.read_rounds - before.read_rounds, after.round_reads - before.round_reads);
        ensure!(reads == 320, "{reads} reads counted for 320 sent");
        ensure!(rounds < reads, "{reads} reads took {rounds} rounds: none shared one");
        stop_all(&mut nodes).await
    })
    .await
}

/// A leader that stops closes its connections; the followers elect a new
/// one well before their election timeout (1 s here) would have fired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_that_see_the_leaders_connections_close_elect_before_their_timeout() -> Result<()> {
    bounded(async {
        let timers =
            RaftTimers { heartbeat_ms: 50, election_timeout_min_ms: 1_000, election_timeout_max_ms: 1_100 };
        let (mut nodes, l) = cluster_timed(3, timers, |_| {}).await?;
        let leader = nodes[l].id;
        // Replicate something so every follower has spoken with the leader
        // over its connection.
        nodes[l].raft.client_write(put("web", 1)).await?;
        for node in &nodes {
            node.wait_route("web").await?;
        }

        let stopped = tokio::time::Instant::now();
        nodes[l].stop().await?;
        let follower = nodes.iter().find(|n| n.server.is_some()).context("no follower")?;
        let m = follower
            .raft
            .wait(Some(WAIT))
            .metrics(|m| m.current_leader.is_some_and(|id| id != leader), "a new leader")
            .await?;
        let took = stopped.elapsed();
        // The early path: two heartbeats of vote lease plus at most one of
        // jitter after the last contact. The timer alone needs >= 1 s of
        // silence.
        ensure!(
            took < Duration::from_millis(700),
            "a new leader ({:?}) took {took:?} after the leader stopped",
            m.current_leader
        );
        stop_all(&mut nodes).await
    })
    .await
}

/// A connection the leader spoke on that closes while the leader lives (a
/// pooled connection dropped) does not mark the leader gone: the follower
/// finds the leader's cluster port still accepting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_of_a_live_leader_does_not_mark_it_gone() -> Result<()> {
    bounded(async {
        // Slow heartbeats, so that only the probe can clear the mark in time.
        let timers =
            RaftTimers { heartbeat_ms: 500, election_timeout_min_ms: 2_000, election_timeout_max_ms: 2_200 };
        let (mut nodes, l) = cluster_timed(3, timers, |_| {}).await?;
        let f = (l + 1) % nodes.len();
        let m = nodes[l].raft.metrics().borrow().clone();

        // An AppendEntries with the leader's vote on a connection of its own,
        // which then closes.
        let rpc = openraft::raft::AppendEntriesRequest {
            vote: m.vote,
            prev_log_id: m.last_log_index.and(m.last_applied),
            entries: Vec::new(),
            leader_commit: m.last_applied,
        };
        let t = client();
        let reply = t.call(&nodes[f].info.cluster_addr, &Message::AppendEntries(rpc)).await?;
        ensure!(matches!(reply, Message::AppendEntriesResult(Ok(_))), "{reply:?}");
        t.close_idle().await;
        drop(t);
        tokio::time::sleep(Duration::from_millis(150)).await;
        ensure!(!nodes[f].election.leader_gone(), "a live leader was marked gone after a connection closed");
        stop_all(&mut nodes).await
    })
    .await
}

/// A TCP relay to `target` that passes bytes towards it at `bytes_per_sec`
/// (a slow link or a slow follower) and replies at full speed. Returns the
/// relay's address.
async fn slow_relay(target: String, bytes_per_sec: u64) -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(&target).await else { continue };
            tokio::spawn(async move {
                let (mut in_read, mut in_write) = inbound.into_split();
                let (mut out_read, mut out_write) = outbound.into_split();
                let towards = async {
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        let n = in_read.read(&mut buf).await?;
                        if n == 0 {
                            return out_write.shutdown().await;
                        }
                        tokio::time::sleep(Duration::from_micros(n as u64 * 1_000_000 / bytes_per_sec)).await;
                        out_write.write_all(&buf[..n]).await?;
                    }
                };
                let back = tokio::io::copy(&mut out_read, &mut in_write);
                let _ = tokio::try_join!(towards, back);
            });
        }
    });
    Ok(addr)
}

/// A follower that takes longer than openraft's default install timeout
/// (200 ms) to receive and install a snapshot still catches up: the leader
/// waits for it ([`ferry_raft_store::config::INSTALL_SNAPSHOT_TIMEOUT_MS`])
/// instead of giving up on every attempt and starting over, which kept a
/// loaded follower behind for tens of seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_slow_follower_installs_a_snapshot() -> Result<()> {
    const RATE: u64 = 256 << 10;
    bounded(async {
        let (mut nodes, l) = cluster(3, |_| {}).await?;
        // About half a megabyte of state: 1,000 routes of 8 backends, in
        // batches of 50 per entry.
        let mut last = None;
        for entry in 0..20u16 {
            let requests = (0..50u16)
                .map(|i| {
                    let n = entry * 50 + i;
                    let backends: Vec<_> = (0..8)
                        .map(|b| serde_json::json!({"id": format!("backend-{b}"), "addr": format!("127.0.0.{}:{}", b + 1, 9000 + n)}))
                        .collect();
                    let route = serde_json::from_value(serde_json::json!({
                        "name": format!("route-{n:04}"), "listen": "127.0.0.1:0", "backends": backends
                    }))
                    .expect("valid route json");
                    Request::with_id(u128::from(n) + 1, Command::PutRoute { route, cas: None })
                })
                .collect();
            let resp = nodes[l].raft.client_write(Request::new(Command::Batch { requests })).await?;
            last = Some(resp.log_id);
        }
        let last = last.context("no write")?;
        let leader = &nodes[l].raft;
        leader.trigger().snapshot().await?;
        leader.wait(Some(WAIT)).snapshot(last, "snapshot").await?;
        leader.trigger().purge_log(last.index).await?;
        leader.wait(Some(WAIT)).purged(Some(last), "purged").await?;
        let size = leader.get_snapshot().await?.context("no snapshot")?.snapshot.get_ref().len() as u64;
        ensure!(size > RATE / 2, "a snapshot of {size} bytes crosses the relay in under half a second");

        let learner = TestNode::start(4, |_| {}).await?;
        let relay = slow_relay(learner.info.cluster_addr.clone(), RATE).await?;
        let info = NodeInfo { cluster_addr: relay, ..learner.info.clone() };
        timeout(WAIT, leader.add_learner(learner.id, info, false))
            .await
            .context("add_learner did not return")??;
        let applied = leader.metrics().borrow().last_applied;
        let caught_up = learner
            .raft
            .wait(Some(WAIT))
            .metrics(|m| m.last_applied >= applied, "caught up through the slow relay")
            .await;
        let m = caught_up.with_context(|| format!("a {size}-byte snapshot at {RATE} bytes/s"))?;
        ensure!(m.snapshot.is_some_and(|s| s.index >= last.index), "learner snapshot {:?}", m.snapshot);
        ensure!(learner.watch.state() == nodes[l].watch.state(), "learner state differs from the leader's");
        nodes.push(learner);
        stop_all(&mut nodes).await
    })
    .await
}

/// A leader that has had no answer from a majority for the quorum timeout
/// proposes nothing: a write is refused at once as not proposed, and does
/// not take effect when the majority comes back. It used to be appended,
/// answered `NoQuorum { proposed: true }` after the write timeout, and
/// committed when the followers came back, long after its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_leader_without_a_majority_proposes_nothing() -> Result<()> {
    bounded(async {
        let (mut nodes, l) = cluster(3, |_| {}).await?;
        let config = ServerConfig {
            write_timeout: Duration::from_secs(3),
            quorum_timeout: Duration::from_millis(300),
            ..ServerConfig::default()
        };
        let server =
            ClusterServer::new(nodes[l].raft.clone(), CLUSTER, Arc::new(TransportStats::default()), config);
        let leader_raft = nodes[l].raft.clone();
        let mut followers: Vec<&mut TestNode> =
            nodes.iter_mut().enumerate().filter(|(i, _)| *i != l).map(|(_, n)| n).collect();
        let (a, b) = followers.split_at_mut(1);
        let cut = Duration::from_secs(4);
        let write = async {
            // Well past the quorum timeout: the leader has heard from no one.
            tokio::time::sleep(Duration::from_secs(1)).await;
            ensure!(leader_raft.metrics().borrow().current_leader == Some(leader_raft.metrics().borrow().id));
            let started = tokio::time::Instant::now();
            let r = server.write(put("zombie", 77), started + Duration::from_secs(3)).await;
            anyhow::Ok((r, started.elapsed()))
        };
        let (cut_a, cut_b, written) =
            tokio::join!(a[0].cut_inbound_for(cut), b[0].cut_inbound_for(cut), write);
        cut_a?;
        cut_b?;
        let (r, took) = written?;
        ensure!(
            matches!(r, Err(WriteError::NoQuorum { proposed: false, .. })),
            "a leader without a majority answered {r:?}"
        );
        ensure!(took < Duration::from_secs(1), "refused only after {took:?}");
        // The majority is back (an election may follow the cut): a new
        // write commits, the refused one never does.
        let mut committed = false;
        for _ in 0..20 {
            let leader = agreed_leader(&nodes, None).await?;
            let index = nodes.iter().position(|n| n.id == leader).context("leader is not a node")?;
            if nodes[index].raft.client_write(put("after", 78)).await.is_ok() {
                nodes[index].wait_route("after").await?;
                committed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ensure!(committed, "no write committed once the majority was back");
        tokio::time::sleep(Duration::from_millis(500)).await;
        for node in &nodes {
            ensure!(
                !node.watch.state().routes.contains_key("zombie"),
                "node {} applied the refused write",
                node.id
            );
        }
        stop_all(&mut nodes).await
    })
    .await
}

/// A frame from a newer peer (the next protocol) holding a field this build
/// does not know is refused naming the field, and the server remembers it
/// for a while: what `/health/ready` answers `incompatible` from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_newer_peers_unknown_field_is_refused_and_remembered() -> Result<()> {
    bounded(async {
        let mut node = TestNode::start(1, |_| {}).await?;
        let server =
            ClusterServer::new(node.raft.clone(), CLUSTER, Arc::new(TransportStats::default()), ServerConfig::default());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, server.clone(), stop.clone()));
        ensure!(server.unreadable_within(Duration::from_secs(5)).is_none());
        // ClientWrite (8) from the next protocol, its request with a field
        // this build does not know.
        let doc = br#"{"id":null,"command":{"DeleteRoute":{"name":"web","cas":null,"force":true}}}"#;
        let mut payload = vec![ferry_node::cluster::WIRE_VERSION as u8 + 1, CLUSTER.len() as u8];
        payload.extend_from_slice(CLUSTER.as_bytes());
        payload.extend_from_slice(&[8, doc.len() as u8]);
        payload.extend_from_slice(doc);
        let mut frame = u32::try_from(payload.len())?.to_be_bytes().to_vec();
        frame.extend_from_slice(&payload);
        let mut stream = TcpStream::connect(addr).await?;
        write_frame(&mut stream, &frame).await?;
        let reply = ferry_node::cluster::frame::decode_payload(&timeout(WAIT, read_frame(&mut stream)).await??, CLUSTER)?;
        ensure!(
            matches!(&reply, Message::Error { code: ErrorCode::Malformed, message } if message.contains("unknown field `force`")),
            "{reply:?}"
        );
        let why = server.unreadable_within(Duration::from_secs(5)).context("the refusal was not remembered")?;
        ensure!(why.contains("unknown field `force`"), "{why}");
        ensure!(server.unreadable_within(Duration::ZERO).is_none(), "remembered past its window");
        stop.cancel();
        timeout(WAIT, task).await??;
        node.stop().await
    })
    .await
}

/// Small snapshot chunks so the snapshot crosses the transport in many frames.
fn small_chunks(c: &mut openraft::Config) {
    c.snapshot_max_chunk_size = SMALL_CHUNK;
}

const SMALL_CHUNK: u64 = 256;

/// A node with an empty store added after the leader snapshotted and purged
/// its log catches up by a chunked snapshot and then follows the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wiped_learner_catches_up_by_snapshot() -> Result<()> {
    bounded(async {
        let (mut nodes, l) = cluster(3, small_chunks).await?;
        let mut last = None;
        for i in 0..30u16 {
            let resp = nodes[l].raft.client_write(put(&format!("r{i}"), 100 + u128::from(i))).await?;
            last = Some(resp.log_id);
        }
        let last = last.context("no write")?;
        let leader = &nodes[l].raft;
        leader.trigger().snapshot().await?;
        leader.wait(Some(WAIT)).snapshot(last, "snapshot").await?;
        leader.trigger().purge_log(last.index).await?;
        leader.wait(Some(WAIT)).purged(Some(last), "purged").await?;
        let snapshot = leader.get_snapshot().await?.context("no snapshot")?;
        let size = snapshot.snapshot.get_ref().len();
        ensure!(size > 4 * SMALL_CHUNK as usize, "snapshot of {size} bytes fits in a few chunks");

        let learner = TestNode::start(4, small_chunks).await?;
        timeout(WAIT, leader.add_learner(learner.id, learner.info.clone(), true))
            .await
            .context("add_learner did not return")??;
        let applied = leader.metrics().borrow().last_applied;
        let m = learner
            .raft
            .wait(Some(WAIT))
            .metrics(|m| m.last_applied >= applied && m.snapshot.is_some(), "caught up by snapshot")
            .await?;
        ensure!(m.snapshot.is_some_and(|s| s.index >= last.index), "learner snapshot {:?}", m.snapshot);
        ensure!(learner.watch.state() == nodes[l].watch.state(), "learner state differs from the leader's");
        ensure!(learner.watch.state().routes.len() == 30);

        // It keeps following the log after the snapshot.
        nodes[l].raft.client_write(put("late", 999)).await?;
        learner.wait_route("late").await?;
        ensure!(learner.watch.state() == nodes[l].watch.state());
        nodes.push(learner);
        stop_all(&mut nodes).await
    })
    .await
}
