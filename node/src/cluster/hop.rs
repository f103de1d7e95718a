//! Peer hops: how a node forwards a client connection to a backend that
//! another node owns (`BackendSpec::node`), through the owner's cluster port.
//!
//! # Protocol
//! 1. The forwarding node connects to the owner's cluster port and sends a
//!    PROXY protocol v2 header ([`proxy_v2`](crate::dataplane::proxy_v2)):
//!    the original client as source, the address it reached as destination,
//!    and TLVs naming the route, the backend and the cluster id.
//! 2. The owner checks the cluster id, that the route is in its routing
//!    table and that it owns the backend, connects to the backend with the
//!    route's `connect_timeout_ms`, and answers one [`HopStatus`] byte.
//! 3. On `Connected` both sides copy bytes until either end closes. No
//!    client byte is sent before the status: any other answer, a close or a
//!    timeout is a failed connect for the forwarding node, which records it
//!    on the backend and fails over to its next candidate.
//!
//! The cluster server tells a hop from a frame by the first byte (see
//! [`FRAME_FIRST_BYTE`](crate::cluster::frame::FRAME_FIRST_BYTE)). The
//! backend sees the owner as its peer: the header never reaches it. The
//! owner logs the original client (`client=`) at debug level.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::dataplane::backend::{BackendState, ConnectResult};
use crate::dataplane::clock::Clock;
use crate::dataplane::copy::{CopyCounters, CopyEnd, CopyMode, copy_bidirectional};
use crate::dataplane::proxy::connect_any;
use crate::dataplane::proxy_v2::{HopHeader, ReadError, read_header};
use crate::dataplane::table::{RouteEntry, RoutingTable};
use crate::telemetry::metrics::Metrics;

/// Longest wait for a hop's header once its first byte arrived.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Hops an owner serves at once by default. Hops do not hold the cluster
/// server's connection permits, so they never starve Raft traffic.
pub const DEFAULT_MAX_HOPS: usize = 10_000;

/// The owner's one-byte answer to a hop header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HopStatus {
    /// Connected to the backend: bytes flow from now on.
    Connected = 0,
    /// No route of that name in the owner's routing table.
    UnknownRoute = 1,
    /// The route has no backend of that id.
    UnknownBackend = 2,
    /// The backend is not pinned to the owner (config or directory skew).
    NotOwner = 3,
    /// The header names another cluster.
    WrongCluster = 4,
    /// The backend refused the connection.
    BackendRefused = 5,
    /// The backend did not answer within the route's connect timeout.
    BackendTimeout = 6,
    /// Connecting to the backend failed otherwise.
    BackendError = 7,
    /// The owner serves its maximum number of hops, or is draining.
    Overloaded = 8,
}

impl HopStatus {
    /// Every status, by code.
    pub const ALL: [HopStatus; 9] = [
        HopStatus::Connected,
        HopStatus::UnknownRoute,
        HopStatus::UnknownBackend,
        HopStatus::NotOwner,
        HopStatus::WrongCluster,
        HopStatus::BackendRefused,
        HopStatus::BackendTimeout,
        HopStatus::BackendError,
        HopStatus::Overloaded,
    ];

    /// The status of byte `b`, if it is one.
    pub fn from_byte(b: u8) -> Option<Self> {
        Self::ALL.get(usize::from(b)).copied()
    }

    /// The `result` label of `ferry_peer_hops_total`.
    pub fn label(self) -> &'static str {
        match self {
            HopStatus::Connected => "ok",
            HopStatus::UnknownRoute => "unknown_route",
            HopStatus::UnknownBackend => "unknown_backend",
            HopStatus::NotOwner => "not_owner",
            HopStatus::WrongCluster => "wrong_cluster",
            HopStatus::BackendRefused => "backend_refused",
            HopStatus::BackendTimeout => "backend_timeout",
            HopStatus::BackendError => "backend_error",
            HopStatus::Overloaded => "overloaded",
        }
    }

    /// How the forwarding node records this answer on the backend.
    pub fn connect_result(self) -> ConnectResult {
        match self {
            HopStatus::Connected => ConnectResult::Ok,
            HopStatus::BackendRefused => ConnectResult::Refused,
            HopStatus::BackendTimeout => ConnectResult::Timeout,
            _ => ConnectResult::Error,
        }
    }
}

/// Failures of the forwarding side that are not a status from the owner.
const OUT_LOCAL: [&str; 3] = ["peer_refused", "peer_timeout", "peer_error"];

/// `ferry_peer_hops_total` handles, resolved once.
#[derive(Debug, Clone)]
pub struct HopMetrics {
    out_status: Vec<IntCounter>,
    out_local: Vec<IntCounter>,
    in_status: Vec<IntCounter>,
    in_malformed: IntCounter,
}

impl HopMetrics {
    /// Resolves every series of `metrics.peer_hops_total`.
    pub fn new(metrics: &Metrics) -> Self {
        let c = |dir: &str, result: &str| metrics.peer_hops_total.with_label_values(&[dir, result]);
        Self {
            out_status: HopStatus::ALL.iter().map(|s| c("out", s.label())).collect(),
            out_local: OUT_LOCAL.iter().map(|r| c("out", r)).collect(),
            in_status: HopStatus::ALL.iter().map(|s| c("in", s.label())).collect(),
            in_malformed: c("in", "malformed"),
        }
    }

    fn out(&self, status: HopStatus) {
        self.out_status[status as usize].inc();
    }

    fn inbound(&self, status: HopStatus) {
        self.in_status[status as usize].inc();
    }
}

/// What the forwarding side of every hop shares: the cluster id it sends
/// and the counters.
#[derive(Debug, Clone)]
pub struct HopClient {
    cluster_id: String,
    metrics: HopMetrics,
}

impl HopClient {
    /// Hops sent for cluster `cluster_id`.
    pub fn new(cluster_id: impl Into<String>, metrics: &Metrics) -> Self {
        Self { cluster_id: cluster_id.into(), metrics: HopMetrics::new(metrics) }
    }

    /// Opens a hop to the owner at `peer` for `route`/`backend` on behalf of
    /// `client`, who connected to `dst`. Returns the stream once the owner
    /// answered `Connected`; any failure is classified like a failed connect.
    /// The owner gets `timeout` for its own connect: the whole hop may take
    /// twice that.
    pub async fn connect(
        &self,
        peer: SocketAddr,
        client: SocketAddr,
        dst: SocketAddr,
        route: &str,
        backend: &str,
        timeout: Duration,
    ) -> Result<TcpStream, (ConnectResult, io::Error)> {
        let header = HopHeader {
            src: client,
            dst,
            route: route.to_string(),
            backend: backend.to_string(),
            cluster_id: self.cluster_id.clone(),
        };
        let bytes = header.encode().map_err(|e| {
            self.metrics.out_local[2].inc();
            (ConnectResult::Error, io::Error::new(io::ErrorKind::InvalidInput, e))
        })?;
        let hop = async {
            let mut stream = tokio::time::timeout(timeout, TcpStream::connect(peer))
                .await
                .map_err(|_| (1, io::Error::new(io::ErrorKind::TimedOut, "peer connect timed out")))?
                .map_err(|e| (if e.kind() == io::ErrorKind::ConnectionRefused { 0 } else { 2 }, e))?;
            stream.write_all(&bytes).await.map_err(|e| (2, e))?;
            let mut status = [0u8; 1];
            stream.read_exact(&mut status).await.map_err(|e| (2, e))?;
            Ok::<_, (usize, io::Error)>((stream, status[0]))
        };
        let (stream, byte) = match tokio::time::timeout(timeout * 2, hop).await {
            Ok(Ok(answered)) => answered,
            Ok(Err((local, e))) => {
                self.metrics.out_local[local].inc();
                let kind = [ConnectResult::Refused, ConnectResult::Timeout, ConnectResult::Error][local];
                return Err((kind, e));
            }
            Err(_) => {
                self.metrics.out_local[1].inc();
                return Err((
                    ConnectResult::Timeout,
                    io::Error::new(io::ErrorKind::TimedOut, "no hop answer"),
                ));
            }
        };
        let Some(status) = HopStatus::from_byte(byte) else {
            self.metrics.out_local[2].inc();
            let e = io::Error::new(io::ErrorKind::InvalidData, format!("unknown hop status {byte}"));
            return Err((ConnectResult::Error, e));
        };
        self.metrics.out(status);
        if status == HopStatus::Connected {
            return Ok(stream);
        }
        let e = io::Error::other(format!("peer {peer} refused the hop: {}", status.label()));
        Err((status.connect_result(), e))
    }
}

/// A hop the owner accepted: connected to the backend, status sent.
#[derive(Debug)]
pub struct AcceptedHop {
    /// The header: the original client is `header.src`.
    pub header: HopHeader,
    /// The route, as of the owner's table when the hop arrived.
    pub route: Arc<RouteEntry>,
    /// The backend's state on the owner.
    pub backend: Arc<BackendState>,
    /// The connection to the backend.
    pub stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

/// Why the owner did not accept a hop.
#[derive(Debug, thiserror::Error)]
pub enum HopRefusal {
    /// The header could not be read or parsed; nothing was answered.
    #[error("{0}")]
    Malformed(#[from] ReadError),
    /// The header did not arrive within [`HEADER_TIMEOUT`].
    #[error("no complete hop header within {HEADER_TIMEOUT:?}")]
    HeaderTimeout,
    /// Refused with this status (sent to the forwarding node).
    #[error("refused: {}", .status.label())]
    Refused { status: HopStatus, header: Box<HopHeader> },
}

/// The owner's side of hops, served by the cluster server.
#[derive(Debug, Clone)]
pub struct HopServer {
    table: Arc<ArcSwap<RoutingTable>>,
    cluster_id: String,
    metrics: HopMetrics,
    clock: Clock,
    copy_mode: CopyMode,
    limit: Arc<Semaphore>,
}

/// What a [`HopServer`] is built from.
#[derive(Debug, Clone)]
pub struct HopServerConfig {
    /// The routing table the node publishes (routes and peer directory).
    pub table: Arc<ArcSwap<RoutingTable>>,
    /// This node's cluster id; hops of another are refused.
    pub cluster_id: String,
    /// The clock ejection deadlines use.
    pub clock: Clock,
    /// How accepted hops move bytes.
    pub copy_mode: CopyMode,
    /// Hops served at once; more are answered `Overloaded`.
    pub max_hops: usize,
}

impl HopServer {
    /// A hop server reading routes and ownership from `config.table`.
    pub fn new(config: HopServerConfig, metrics: &Metrics) -> Self {
        Self {
            table: config.table,
            cluster_id: config.cluster_id,
            metrics: HopMetrics::new(metrics),
            clock: config.clock,
            copy_mode: config.copy_mode,
            limit: Arc::new(Semaphore::new(config.max_hops.max(1))),
        }
    }

    /// Refuses every new hop from now on (answered `Overloaded`, so the
    /// forwarding node fails over at once): the node is draining. Hops
    /// already flowing are untouched.
    pub fn stop_accepting(&self) {
        self.limit.close();
    }

    /// Reads a hop header from `conn`, decides, connects to the backend and
    /// answers the status byte. Every outcome is counted.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        conn: &mut S,
    ) -> Result<AcceptedHop, HopRefusal> {
        let header = match tokio::time::timeout(HEADER_TIMEOUT, read_header(conn)).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                self.metrics.in_malformed.inc();
                return Err(HopRefusal::Malformed(e));
            }
            Err(_) => {
                self.metrics.in_malformed.inc();
                return Err(HopRefusal::HeaderTimeout);
            }
        };
        match self.decide_and_connect(&header).await {
            Ok((route, backend, stream, permit)) => {
                // Connected even if the status cannot be written: the caller
                // will find the stream closed.
                self.metrics.inbound(HopStatus::Connected);
                let _ = conn.write_all(&[HopStatus::Connected as u8]).await;
                Ok(AcceptedHop { header, route, backend, stream, _permit: permit })
            }
            Err(status) => {
                self.metrics.inbound(status);
                let _ = conn.write_all(&[status as u8]).await;
                let _ = conn.flush().await;
                Err(HopRefusal::Refused { status, header: Box::new(header) })
            }
        }
    }

    async fn decide_and_connect(
        &self,
        h: &HopHeader,
    ) -> Result<(Arc<RouteEntry>, Arc<BackendState>, TcpStream, OwnedSemaphorePermit), HopStatus> {
        if h.cluster_id != self.cluster_id {
            return Err(HopStatus::WrongCluster);
        }
        let table = self.table.load_full();
        let route = table.get(&h.route).cloned().ok_or(HopStatus::UnknownRoute)?;
        let idx = route.backend_index(&h.backend).ok_or(HopStatus::UnknownBackend)?;
        let node = route.spec.backends[idx].node.as_deref();
        if node.is_none() || !table.peers().is_local(node) {
            return Err(HopStatus::NotOwner);
        }
        let permit = Arc::clone(&self.limit).try_acquire_owned().map_err(|_| HopStatus::Overloaded)?;
        let backend = Arc::clone(&route.backends[idx]);
        // The owner resolved the backend's name (if it has one): its
        // addresses are tried in turn, as for a local client. A name that
        // does not resolve here has none: a connect error.
        let connected = connect_any(&route.resolved[idx].addrs, route.connect_timeout).await;
        let result = connected.as_ref().map_or_else(|(kind, _)| *kind, |_| ConnectResult::Ok);
        // The owner's own record of its backend, as for a local client.
        backend.record_connect(result, self.clock.now_ms(), route.eject);
        match connected {
            Ok(stream) => Ok((route, backend, stream, permit)),
            Err((ConnectResult::Refused, _)) => Err(HopStatus::BackendRefused),
            Err((ConnectResult::Timeout, _)) => Err(HopStatus::BackendTimeout),
            Err(_) => Err(HopStatus::BackendError),
        }
    }

    /// Serves one hop on `conn` from `peer` (its first byte was a PROXY v2
    /// signature's) until it ends or `shutdown` fires.
    pub async fn serve(&self, mut conn: TcpStream, peer: SocketAddr, shutdown: CancellationToken) {
        let accepted = tokio::select! {
            a = self.accept(&mut conn) => a,
            () = shutdown.cancelled() => return,
        };
        let hop = match accepted {
            Ok(hop) => hop,
            Err(HopRefusal::Refused { status, header }) => {
                debug!(%peer, route = %header.route, backend = %header.backend, client = %header.src,
                    status = status.label(), "peer hop refused");
                return;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "malformed peer hop");
                return;
            }
        };
        let AcceptedHop { header, route, backend, stream: mut server, _permit } = hop;
        debug!(%peer, route = %header.route, backend = %header.backend, client = %header.src,
            dst = %header.dst, "peer hop in");
        let _backend_conn = backend.open_connection();
        let _ = server.set_nodelay(true);
        let counters =
            CopyCounters { upstream: &route.state.m.bytes_up, downstream: &route.state.m.bytes_down };
        let outcome = tokio::select! {
            o = copy_bidirectional(&mut conn, &mut server, route.idle_timeout, counters, self.copy_mode) => o,
            () = shutdown.cancelled() => return,
        };
        match outcome.end {
            CopyEnd::IdleTimeout => route.state.m.idle_timeouts.inc(),
            CopyEnd::Error(e) => debug!(route = %header.route, backend = %header.backend, error = %e,
                "peer hop ended with error"),
            CopyEnd::Closed | CopyEnd::Chaos(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ferry_client::RouteSpec;
    use tokio::net::TcpListener;
    use tokio::sync::Notify;

    use super::*;
    use crate::control::names::Names;
    use crate::control::registry::Registry;
    use crate::dataplane::peers::{Peer, PeerDirectory, PeerState, SelfNode};

    const CLUSTER: &str = "c1";

    struct Owner {
        server: HopServer,
        metrics: Metrics,
        backend: TcpListener,
        _registry: Registry,
    }

    /// An owner "n1" whose route `web` has a backend of its own (`mine`, a
    /// live listener), one of `n2`'s, one without node, one that refuses,
    /// and one whose host name the owner has not resolved.
    async fn owner() -> Owner {
        let metrics = Metrics::new().expect("metrics");
        let backend = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let closed_addr = closed.local_addr().expect("addr");
        drop(closed);
        let spec: RouteSpec = serde_json::from_value(serde_json::json!({
            "name": "web", "listen": "127.0.0.1:0", "connect_timeout_ms": 500,
            "backends": [
                {"id": "mine", "addr": backend.local_addr().expect("addr").to_string(), "node": "n1"},
                {"id": "theirs", "addr": "127.0.0.1:9", "node": "2"},
                {"id": "plain", "addr": "127.0.0.1:9"},
                {"id": "dead", "addr": closed_addr.to_string(), "node": "1"},
                {"id": "unresolved", "addr": "nonexistent.invalid:80", "node": "n1"}
            ]
        }))
        .expect("route");
        let peers = Arc::new(PeerDirectory::new(
            SelfNode { id: 1, name: "n1".into() },
            [Peer {
                id: 2,
                name: "n2".into(),
                state: PeerState::Alive,
                cluster_addr: "127.0.0.2:7947".parse().expect("addr"),
            }],
        ));
        let mut registry = Registry::new(metrics.clone(), Arc::new(Notify::new()), [127, 0, 0, 1].into());
        let inputs = registry.inputs(&[Arc::new(spec)], &peers, &Names::default());
        let table = RoutingTable::build(1, inputs, &RoutingTable::default(), &peers, 0);
        let server = HopServer::new(
            HopServerConfig {
                table: Arc::new(ArcSwap::from_pointee(table)),
                cluster_id: CLUSTER.into(),
                clock: Clock::new(),
                copy_mode: CopyMode::Userspace,
                max_hops: 16,
            },
            &metrics,
        );
        Owner { server, metrics, backend, _registry: registry }
    }

    fn header(route: &str, backend: &str, cluster: &str) -> Vec<u8> {
        HopHeader {
            src: "10.9.8.7:4321".parse().expect("addr"),
            dst: "127.0.0.1:7000".parse().expect("addr"),
            route: route.into(),
            backend: backend.into(),
            cluster_id: cluster.into(),
        }
        .encode()
        .expect("encode")
    }

    fn hops(m: &Metrics, dir: &str, result: &str) -> u64 {
        m.peer_hops_total.with_label_values(&[dir, result]).get()
    }

    #[tokio::test]
    async fn owner_connects_its_backend_and_reports_the_client() {
        let o = owner().await;
        let (mut fwd, mut conn) = tokio::io::duplex(1024);
        fwd.write_all(&header("web", "mine", CLUSTER)).await.expect("write");
        let hop = o.server.accept(&mut conn).await.expect("accepted");
        assert_eq!(hop.header.src, "10.9.8.7:4321".parse::<SocketAddr>().expect("addr"));
        assert_eq!((hop.header.route.as_str(), hop.backend.id.as_str()), ("web", "mine"));
        let mut status = [9u8];
        fwd.read_exact(&mut status).await.expect("status");
        assert_eq!(status, [HopStatus::Connected as u8]);
        // The backend sees a plain connection from the owner: no header.
        let (mut at_backend, from) = o.backend.accept().await.expect("backend accept");
        assert!(from.ip().is_loopback());
        let mut stream = hop.stream;
        stream.write_all(b"hello").await.expect("write");
        let mut got = [0u8; 5];
        at_backend.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"hello");
        assert_eq!(hops(&o.metrics, "in", "ok"), 1);
    }

    #[tokio::test]
    async fn owner_refuses_with_a_status() {
        let o = owner().await;
        let cases = [
            (header("web", "mine", "other"), HopStatus::WrongCluster),
            (header("nope", "mine", CLUSTER), HopStatus::UnknownRoute),
            (header("web", "nope", CLUSTER), HopStatus::UnknownBackend),
            (header("web", "theirs", CLUSTER), HopStatus::NotOwner),
            (header("web", "plain", CLUSTER), HopStatus::NotOwner),
            (header("web", "dead", CLUSTER), HopStatus::BackendRefused),
            // The owner resolves its backends' names; one without an address
            // is a connect error, and the forwarding node fails over.
            (header("web", "unresolved", CLUSTER), HopStatus::BackendError),
        ];
        for (bytes, want) in cases {
            let (mut fwd, mut conn) = tokio::io::duplex(1024);
            fwd.write_all(&bytes).await.expect("write");
            let err = o.server.accept(&mut conn).await.expect_err("refused");
            assert!(matches!(err, HopRefusal::Refused { status, .. } if status == want), "{err:?}");
            let mut status = [0u8];
            fwd.read_exact(&mut status).await.expect("status");
            assert_eq!(HopStatus::from_byte(status[0]), Some(want));
        }
        for s in [HopStatus::WrongCluster, HopStatus::UnknownRoute, HopStatus::UnknownBackend] {
            assert_eq!(hops(&o.metrics, "in", s.label()), 1, "{s:?}");
        }
        assert_eq!(hops(&o.metrics, "in", "not_owner"), 2);
        assert_eq!(hops(&o.metrics, "in", "backend_refused"), 1);
        assert_eq!(hops(&o.metrics, "in", "backend_error"), 1);
    }

    #[tokio::test]
    async fn malformed_headers_get_no_answer_and_are_counted() {
        let o = owner().await;
        let mut bad = header("web", "mine", CLUSTER);
        bad[12] = 0x20; // LOCAL
        for input in [bad, b"\r\n\r\n\0\r\nQUIT\n".to_vec(), vec![b'\r'; 40]] {
            let (mut fwd, mut conn) = tokio::io::duplex(1024);
            fwd.write_all(&input).await.expect("write");
            fwd.shutdown().await.expect("shutdown");
            let err = o.server.accept(&mut conn).await.expect_err("malformed");
            assert!(matches!(err, HopRefusal::Malformed(_)), "{err:?}");
            drop(conn);
            let mut rest = Vec::new();
            fwd.read_to_end(&mut rest).await.expect("read");
            assert!(rest.is_empty(), "answered {rest:?}");
        }
        assert_eq!(hops(&o.metrics, "in", "malformed"), 3);
    }

    /// The forwarding side sends the header and maps the owner's answer to
    /// a connect result.
    #[tokio::test]
    async fn client_maps_answers_to_connect_results() {
        let metrics = Metrics::new().expect("metrics");
        let client = HopClient::new(CLUSTER, &metrics);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let answers = [
            (HopStatus::BackendRefused as u8, Some(ConnectResult::Refused)),
            (HopStatus::BackendTimeout as u8, Some(ConnectResult::Timeout)),
            (HopStatus::NotOwner as u8, Some(ConnectResult::Error)),
            (200, Some(ConnectResult::Error)),
            (HopStatus::Connected as u8, None),
        ];
        let owner = tokio::spawn(async move {
            let mut seen = Vec::new();
            for (byte, _) in answers {
                let (mut s, _) = listener.accept().await.expect("accept");
                seen.push(read_header(&mut s).await.expect("header"));
                s.write_all(&[byte]).await.expect("answer");
            }
            seen
        });
        let client_addr: SocketAddr = "10.0.0.5:999".parse().expect("addr");
        let dst: SocketAddr = "127.0.0.1:7000".parse().expect("addr");
        for (_, want) in answers {
            let r = client.connect(addr, client_addr, dst, "web", "b", Duration::from_secs(2)).await;
            assert_eq!(r.as_ref().err().map(|(k, _)| *k), want, "{r:?}");
        }
        let seen = owner.await.expect("owner");
        assert!(seen.iter().all(|h| h.src == client_addr && h.dst == dst && h.cluster_id == CLUSTER));
        assert_eq!(hops(&metrics, "out", "ok"), 1);
        assert_eq!(hops(&metrics, "out", "backend_refused"), 1);
        assert_eq!(hops(&metrics, "out", "peer_error"), 1, "the unknown status");
        // Nobody listening: refused before any header.
        drop(seen);
        let gone = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let gone_addr = gone.local_addr().expect("addr");
        drop(gone);
        let r = client.connect(gone_addr, client_addr, dst, "web", "b", Duration::from_secs(2)).await;
        assert_eq!(r.err().map(|(k, _)| k), Some(ConnectResult::Refused));
        assert_eq!(hops(&metrics, "out", "peer_refused"), 1);
    }
}
