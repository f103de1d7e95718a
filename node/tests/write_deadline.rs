//! Bounded indeterminacy on the cluster port (issue 22, "zombie writes"): a
//! leader never proposes a forwarded write whose deadline has passed, and a
//! call that times out leaves no request behind for the kernel to deliver
//! later. Each test also runs the fault switch's setting
//! (`no-write-deadline`), under which the zombie comes back, so that it
//! shows what it guards against.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ferry_node::cluster::deadline::{self, PeerDeadline};
use ferry_node::cluster::frame::{FrameError, read_frame};
use ferry_node::cluster::{
    ClusterServer, Message, ServerConfig, Transport, TransportConfig, TransportError, TransportStats,
    WriteError,
};
use ferry_raft_store::types::Raft;
use ferry_raft_store::{Command, NodeInfo, RaftTimers, Request, Response, StateWatch};
use tempfile::TempDir;
use tokio::net::TcpSocket;
use tokio::time::{Instant, timeout};

const CLUSTER: &str = "ferry-test";
/// Bound of every wait for a condition.
const WAIT: Duration = Duration::from_secs(15);

/// A one-node cluster, leader of itself; its cluster server is asked
/// directly ([`ClusterServer::handle`]), as the connection task would.
struct Leader {
    raft: Raft,
    watch: StateWatch,
    _dir: TempDir,
}

impl Leader {
    async fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().to_owned();
        let db_path = path.clone();
        let db = tokio::task::spawn_blocking(move || ferry_raft_store::open_db(&db_path, WAIT)).await??;
        let sync = std::sync::Arc::new(ferry_raft_store::DiskSync::open(
            &path,
            ferry_raft_store::SyncMode::Fdatasync,
        )?);
        let (log, sm) = ferry_raft_store::open(&db, &sync)?;
        let watch = sm.watch();
        let config = ferry_raft_store::raft_config(CLUSTER, RaftTimers::default())?;
        let transport = Arc::new(Transport::new(
            CLUSTER,
            TransportConfig::default(),
            Arc::new(TransportStats::default()),
        ));
        let network = ferry_node::cluster::Network::new(1, transport);
        let raft = Raft::new(1, Arc::new(config), network, log, sm).await?;
        let me = NodeInfo { name: "n1".into(), cluster_addr: "127.0.0.1:1".into(), admin_addr: "x".into() };
        raft.initialize(std::collections::BTreeMap::from([(1, me)])).await?;
        raft.wait(Some(WAIT)).metrics(|m| m.current_leader == Some(1), "leader").await?;
        Ok(Self { raft, watch, _dir: dir })
    }

    /// A cluster server on this node; `check_deadlines: false` is the fault
    /// switch `no-write-deadline`.
    fn server(&self, check_deadlines: bool) -> (ClusterServer, Arc<TransportStats>) {
        let stats = Arc::new(TransportStats::default());
        let config = ServerConfig { check_deadlines, ..ServerConfig::default() };
        (ClusterServer::new(self.raft.clone(), CLUSTER, Arc::clone(&stats), config), stats)
    }

    fn has_route(&self, name: &str) -> bool {
        self.watch.state().routes.contains_key(name)
    }
}

fn put(name: &str, id: u128) -> Request {
    let route = serde_json::from_value(serde_json::json!({
        "name": name, "listen": "127.0.0.1:0",
        "backends": [{"id": "a", "addr": "127.0.0.1:9001"}]
    }))
    .expect("valid route json");
    Request::with_id(id, Command::PutRoute { route, cas: None })
}

/// What a follower does before forwarding: reads the leader's clock and
/// states a deadline `budget` from now on it.
async fn deadline_on(server: &ClusterServer, budget: Duration) -> Result<PeerDeadline> {
    let Message::ClockResult(reading) = server.handle(Message::Clock).await else {
        bail!("no clock reading");
    };
    let now = Instant::now();
    deadline::on_peer(reading, now, now + budget).context("deadline in the past")
}

/// A forwarded write that reaches the leader after its deadline (it sat
/// in a buffer while the follower gave up) is refused, counted, and never
/// applied; one in time is applied; one stated on the clock of an earlier
/// run of the leader is refused as sent to no leader. Under the fault
/// switch the late one is applied: the zombie write of issue 22.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_past_its_deadline_is_refused_and_never_applied() -> Result<()> {
    timeout(Duration::from_secs(60), async {
        let leader = Leader::start().await?;
        let (server, stats) = leader.server(true);

        let by = deadline_on(&server, Duration::from_millis(100)).await?;
        // The frame arrives late.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let late = server.handle(Message::ClientWriteBy { request: put("late", 1), deadline: by }).await;
        let Message::ClientWriteResult(Err(WriteError::DeadlineExceeded { late_ms })) = late else {
            bail!("a write past its deadline was not refused: {late:?}");
        };
        ensure!((50..5_000).contains(&late_ms), "late by {late_ms} ms");
        ensure!(stats.writes_past_deadline.load(Ordering::Relaxed) == 1);

        let by = deadline_on(&server, Duration::from_secs(5)).await?;
        let on_time =
            server.handle(Message::ClientWriteBy { request: put("on-time", 2), deadline: by }).await;
        ensure!(matches!(on_time, Message::ClientWriteResult(Ok(Response::Applied { .. }))), "{on_time:?}");

        // Another epoch: the leader restarted since the reading.
        let (restarted, _) = leader.server(true);
        let by = deadline_on(&restarted, Duration::from_secs(5)).await?;
        let other =
            server.handle(Message::ClientWriteBy { request: put("other-epoch", 3), deadline: by }).await;
        ensure!(matches!(other, Message::ClientWriteResult(Err(WriteError::NoLeader))), "{other:?}");

        // Nothing later applies the refused writes: a later write commits
        // after them, and they are still absent.
        let by = deadline_on(&server, Duration::from_secs(5)).await?;
        let after = server.handle(Message::ClientWriteBy { request: put("after", 4), deadline: by }).await;
        ensure!(matches!(after, Message::ClientWriteResult(Ok(_))), "{after:?}");
        ensure!(leader.has_route("on-time") && leader.has_route("after"));
        ensure!(!leader.has_route("late"), "the late write was applied");
        ensure!(!leader.has_route("other-epoch"), "the write of another epoch was applied");

        // The fault switch: the same late write is proposed and applied.
        let (unsafe_server, _) = leader.server(false);
        let by = deadline_on(&unsafe_server, Duration::from_millis(100)).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let zombie =
            unsafe_server.handle(Message::ClientWriteBy { request: put("late", 5), deadline: by }).await;
        ensure!(matches!(zombie, Message::ClientWriteResult(Ok(_))), "{zombie:?}");
        ensure!(leader.has_route("late"), "under the fault switch the late write applies");
        leader.raft.shutdown().await?;
        Ok(())
    })
    .await
    .context("test exceeded its time limit")?
}

/// A request of 1 MiB (a snapshot chunk): it fits in the caller's send
/// queue, not in the window of a peer that does not read.
fn big_request() -> Message {
    Message::InstallSnapshot(openraft::raft::InstallSnapshotRequest {
        vote: openraft::Vote::new_committed(1, 1),
        meta: openraft::SnapshotMeta::default(),
        offset: 0,
        data: vec![0x5A; 1 << 20],
        done: false,
    })
}

/// What the peer reads once it starts reading, after the caller's timeout:
/// the whole frame (`true`) or a reset before its end (`false`).
async fn sent_after_timeout(abort_unfinished: bool) -> Result<bool> {
    // A peer that accepts and does not read, with a small receive buffer:
    // the request is written, most of it still in the caller's send queue.
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    socket.bind("127.0.0.1:0".parse()?)?;
    let listener = socket.listen(1)?;
    let addr = listener.local_addr()?.to_string();
    let config = TransportConfig { abort_unfinished, ..TransportConfig::default() };
    let transport = Transport::new(CLUSTER, config, Arc::new(TransportStats::default()));
    let accept = tokio::spawn(async move { listener.accept().await });
    let call = transport.call_or_abort(&addr, &big_request(), Duration::from_millis(300)).await;
    ensure!(matches!(call, Err(TransportError::Timeout { .. })), "{call:?}");
    let (mut peer, _) = timeout(WAIT, accept).await???;
    // The peer wakes up (a partition heals, a paused process resumes).
    match timeout(WAIT, read_frame(&mut peer)).await? {
        Ok(_) => Ok(true),
        Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(false),
        Err(e) => bail!("unexpected read error: {e}"),
    }
}

/// A call that times out with its request half sent leaves nothing for the
/// kernel to deliver later: the connection is reset and the peer never
/// reads the request. With a plain close (the fault switch), the kernel
/// delivers the rest after the caller gave up, and the peer acts on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_times_out_leaves_no_request_to_deliver_later() -> Result<()> {
    ensure!(!sent_after_timeout(true).await?, "the request reached the peer after the call timed out");
    ensure!(sent_after_timeout(false).await?, "a plain close should deliver the rest of the request");
    Ok(())
}

/// Serves the cluster port of an older node: it refuses what it does not
/// know (`Clock`) as malformed and closes, as an older node's server does,
/// and answers a plain `ClientWrite` as applied. Returns the kinds of the
/// messages it got.
async fn old_leader(listener: tokio::net::TcpListener) -> Result<Vec<&'static str>> {
    let mut kinds = vec![];
    while kinds.len() < 2 {
        let (mut stream, _) = listener.accept().await?;
        let payload = read_frame(&mut stream).await?;
        let reply = match ferry_node::cluster::frame::decode_payload(&payload, CLUSTER)? {
            Message::Clock => {
                kinds.push("clock");
                Message::Error { code: ferry_node::cluster::ErrorCode::Malformed, message: "unknown".into() }
            }
            Message::ClientWrite(_) => {
                kinds.push("client-write");
                Message::ClientWriteResult(Ok(Response::Applied { index: 9, revision: 9 }))
            }
            other => bail!("unexpected {}", other.kind()),
        };
        let frame = ferry_node::cluster::frame::encode_frame(CLUSTER, &reply)?;
        ferry_node::cluster::frame::write_frame(&mut stream, &frame).await?;
    }
    Ok(kinds)
}

/// A follower forwards a write with its deadline to a leader that knows
/// `Clock`, and as a plain `ClientWrite` to an older one (rolling upgrade).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_forwarded_with_its_deadline_or_plainly_to_an_older_leader() -> Result<()> {
    timeout(Duration::from_secs(60), async {
        let transport =
            Transport::new(CLUSTER, TransportConfig::default(), Arc::new(TransportStats::default()));
        let leader = Leader::start().await?;
        let (server, stats) = leader.server(true);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let stop = tokio_util::sync::CancellationToken::new();
        let served = tokio::spawn(ferry_node::cluster::serve(listener, server, stop.clone()));
        let answer =
            deadline::forward_write(&transport, &addr, &put("fwd", 1), Instant::now() + WAIT).await?;
        ensure!(matches!(answer, Message::ClientWriteResult(Ok(Response::Applied { .. }))), "{answer:?}");
        ensure!(leader.has_route("fwd"));
        // A deadline too close to send: refused here, never sent.
        let answer = deadline::forward_write(&transport, &addr, &put("no-time", 2), Instant::now()).await?;
        ensure!(
            matches!(answer, Message::ClientWriteResult(Err(WriteError::DeadlineExceeded { .. }))),
            "{answer:?}"
        );
        ensure!(!leader.has_route("no-time") && stats.writes_past_deadline.load(Ordering::Relaxed) == 0);
        stop.cancel();
        served.await?;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let old = tokio::spawn(old_leader(listener));
        let answer =
            deadline::forward_write(&transport, &addr, &put("old", 3), Instant::now() + WAIT).await?;
        ensure!(matches!(answer, Message::ClientWriteResult(Ok(_))), "{answer:?}");
        ensure!(old.await?? == ["clock", "client-write"]);
        leader.raft.shutdown().await?;
        Ok(())
    })
    .await
    .context("test exceeded its time limit")?
}
