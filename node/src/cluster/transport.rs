//! The client side of the cluster port: request/response calls to peers over
//! pooled TCP connections.
//!
//! A call takes an idle connection to the peer (or opens one), writes one
//! frame, reads one frame, all under one deadline, and puts the connection
//! back only when the exchange completed. Any error or timeout drops it, so a
//! connection with a half-read reply is never reused. Idle connections are
//! probed before reuse: one the peer has closed (for example because it
//! restarted) is discarded instead of failing the request.
//!
//! A request that must not act after its caller gave up (a forwarded write
//! or membership change: [`Transport::call_or_abort`]) aborts its
//! connection when dropped with the exchange unfinished (a timeout, an
//! error, or the caller dropping the call): `SO_LINGER` 0 makes the kernel
//! discard what it has not yet sent and reset the connection. A plain close
//! keeps retransmitting the request behind a FIN, so a write the caller gave
//! up on during a partition reached the leader after the heal and was
//! applied then (issue 22's zombie write: 27 s after it was sent). Bytes
//! the peer's kernel already received are beyond reach: a forwarded write's
//! deadline covers those ([`crate::cluster::deadline`]). Raft's RPCs and
//! the probes close as before: a late AppendEntries or vote is judged by
//! its term, a late probe changes nothing, and a late heartbeat still tells
//! a slow follower that the leader lives.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout_at};

use crate::cluster::frame::{
    FrameError, MAX_FRAME_BYTES, decode_payload, encode_frame, read_frame, write_frame,
};
use crate::cluster::message::{ErrorCode, Message};
use crate::cluster::stats::{TransportStats, bump};

/// Timeouts and pool size of a [`Transport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportConfig {
    /// Longest wait for a TCP connection to a peer.
    pub connect_timeout: Duration,
    /// Longest wait for a reply, connecting included, for [`Transport::call`].
    /// Raft RPCs use the deadline openraft gives instead.
    pub request_timeout: Duration,
    /// Idle connections kept per peer address. openraft talks to a peer from
    /// a few tasks at once (replication, snapshot, vote), each needing its own
    /// connection while a call is in flight.
    pub max_idle_per_peer: usize,
    /// Whether [`Transport::call_or_abort`] aborts (resets) a connection
    /// dropped with its exchange unfinished, so its unsent bytes are
    /// discarded (see the module doc). `false` only under the fault switch
    /// `no-write-deadline`, which restores the plain close to prove the
    /// suite notices.
    pub abort_unfinished: bool,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(2),
            max_idle_per_peer: 4,
            abort_unfinished: true,
        }
    }
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer refused or reset the connection attempt.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The peer's cluster address.
        addr: String,
        /// The error.
        source: io::Error,
    },
    /// The connection attempt did not complete in time.
    #[error("cannot connect to {addr}: no answer within {timeout:?}")]
    ConnectTimeout {
        /// The peer's cluster address.
        addr: String,
        /// The connect timeout that expired.
        timeout: Duration,
    },
    /// The peer did not reply in time; the request may have been processed.
    #[error("request to {addr} timed out after {timeout:?}")]
    Timeout {
        /// The peer's cluster address.
        addr: String,
        /// The request timeout that expired.
        timeout: Duration,
    },
    /// The request could not be sent (too large), or the exchange failed: the
    /// connection broke, or the reply was malformed or from another cluster
    /// (a node of another cluster answers a request with an error in an
    /// envelope naming its own cluster, reported here as
    /// [`FrameError::WrongCluster`]).
    #[error("request to {addr} failed: {source}")]
    Frame {
        /// The peer's cluster address.
        addr: String,
        /// The error.
        source: FrameError,
    },
    /// The peer refused the request with [`Message::Error`].
    #[error("{addr} refused the request ({code:?}): {message}")]
    Remote {
        /// The peer's cluster address.
        addr: String,
        /// The peer's reason.
        code: ErrorCode,
        /// The peer's explanation.
        message: String,
    },
}

impl TransportError {
    /// Whether the peer could not be reached at all: nothing was sent, or it
    /// belongs to another cluster or speaks another version. Retrying at once
    /// will not help.
    pub fn is_unreachable(&self) -> bool {
        match self {
            TransportError::Connect { .. } | TransportError::ConnectTimeout { .. } => true,
            TransportError::Remote { code, .. } => {
                matches!(code, ErrorCode::WrongCluster | ErrorCode::WrongVersion)
            }
            // The reply came from a node of another cluster or version.
            TransportError::Frame { source, .. } => {
                matches!(source, FrameError::WrongCluster { .. } | FrameError::WrongVersion { .. })
            }
            TransportError::Timeout { .. } => false,
        }
    }

    /// Whether the request was refused locally for being over the maximum
    /// frame, or over the budget given to [`Transport::call_within`].
    pub fn is_too_large(&self) -> bool {
        matches!(self, TransportError::Frame { source: FrameError::TooLarge { .. }, .. })
    }
}

/// The client side of the cluster transport, shared by everything on a node
/// that talks to peers (openraft's network, write forwarding).
#[derive(Debug)]
pub struct Transport {
    cluster_id: String,
    config: TransportConfig,
    stats: Arc<TransportStats>,
    /// Idle connections by peer address. A control-plane path: a short async
    /// lock, never held across I/O.
    idle: Mutex<HashMap<String, Vec<TcpStream>>>,
}

impl Transport {
    /// A transport for the cluster `cluster_id` counting into `stats`.
    pub fn new(cluster_id: impl Into<String>, config: TransportConfig, stats: Arc<TransportStats>) -> Self {
        Self { cluster_id: cluster_id.into(), config, stats, idle: Mutex::new(HashMap::new()) }
    }

    /// The cluster id written into every envelope.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The transport's counters.
    pub fn stats(&self) -> &Arc<TransportStats> {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// Sends `msg` to the peer at `addr` (`IP:PORT` of its cluster port) and
    /// returns its reply, within the configured request timeout.
    pub async fn call(&self, addr: &str, msg: &Message) -> Result<Message, TransportError> {
        self.call_timeout(addr, msg, self.config.request_timeout).await
    }

    /// [`Transport::call`] with an explicit deadline for the whole exchange,
    /// connecting included.
    pub async fn call_timeout(
        &self,
        addr: &str,
        msg: &Message,
        timeout: Duration,
    ) -> Result<Message, TransportError> {
        self.call_within(addr, msg, timeout, MAX_FRAME_BYTES).await
    }

    /// [`Transport::call_timeout`] for a request that must not take more than
    /// `max_bytes` of payload: a larger one is not sent, and fails at once
    /// with [`FrameError::TooLarge`] naming `max_bytes` (not counted as an
    /// error: the caller sends less). Above [`MAX_FRAME_BYTES`] the frame
    /// limit applies, and counts as an error.
    pub async fn call_within(
        &self,
        addr: &str,
        msg: &Message,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Message, TransportError> {
        self.send(addr, msg, timeout, max_bytes, false).await
    }

    /// [`Transport::call_timeout`] for a request that must never be
    /// delivered after the call ended without a reply (a forwarded write):
    /// if the call times out, fails or is dropped before the reply is read,
    /// its connection is reset and the kernel discards what it had not yet
    /// sent (see the module doc).
    pub async fn call_or_abort(
        &self,
        addr: &str,
        msg: &Message,
        timeout: Duration,
    ) -> Result<Message, TransportError> {
        self.send(addr, msg, timeout, MAX_FRAME_BYTES, self.config.abort_unfinished).await
    }

    async fn send(
        &self,
        addr: &str,
        msg: &Message,
        timeout: Duration,
        max_bytes: usize,
        abort: bool,
    ) -> Result<Message, TransportError> {
        let result = match encode_frame(&self.cluster_id, msg) {
            Ok(frame) => {
                // The 4-byte length prefix is not payload.
                let len = frame.len().saturating_sub(4);
                if len > max_bytes {
                    let source = FrameError::TooLarge { len: len as u64, max: max_bytes };
                    return Err(TransportError::Frame { addr: addr.to_owned(), source });
                }
                self.exchange(addr, &frame, timeout, abort).await
            }
            Err(source) => Err(self.frame_error(addr, source)),
        };
        if result.is_err() {
            bump(&self.stats.request_errors);
        }
        result
    }

    /// Counts `source` and names `addr` in it.
    fn frame_error(&self, addr: &str, source: FrameError) -> TransportError {
        self.stats.count_frame_error(&source);
        TransportError::Frame { addr: addr.to_owned(), source }
    }

    /// Sends `frame` to `addr` and reads the reply; `abort`: reset the
    /// connection if it is dropped before the reply is read.
    async fn exchange(
        &self,
        addr: &str,
        frame: &[u8],
        timeout: Duration,
        abort: bool,
    ) -> Result<Message, TransportError> {
        let frame_error = |source: FrameError| self.frame_error(addr, source);
        let deadline = Instant::now() + timeout;
        let mut stream = match self.checkout(addr).await {
            Some(stream) => stream,
            None => self.connect(addr, deadline).await?,
        };
        // From here until the reply is read, dropping the stream (an error,
        // the timeout, or this future dropped by its caller) resets it.
        if abort {
            set_abort(&stream, true).map_err(|e| frame_error(FrameError::Io(e)))?;
        }
        let payload = match timeout_at(deadline, async {
            write_frame(&mut stream, frame).await?;
            read_frame(&mut stream).await
        })
        .await
        {
            Ok(Ok(payload)) => payload,
            Ok(Err(e)) => return Err(frame_error(e)),
            Err(_) => return Err(TransportError::Timeout { addr: addr.to_owned(), timeout }),
        };
        match decode_payload(&payload, &self.cluster_id).map_err(frame_error)? {
            // The peer closes the connection after an error: do not pool it.
            Message::Error { code, message } => {
                Err(TransportError::Remote { addr: addr.to_owned(), code, message })
            }
            reply => {
                // A connection that cannot be made to close normally again
                // is not reused.
                if !abort || set_abort(&stream, false).is_ok() {
                    self.checkin(addr, stream).await;
                }
                Ok(reply)
            }
        }
    }

    async fn connect(&self, addr: &str, deadline: Instant) -> Result<TcpStream, TransportError> {
        let timeout = self.config.connect_timeout;
        let connect_deadline = deadline.min(Instant::now() + timeout);
        let stream = match timeout_at(connect_deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(TransportError::Connect { addr: addr.to_owned(), source }),
            Err(_) => return Err(TransportError::ConnectTimeout { addr: addr.to_owned(), timeout }),
        };
        // Requests are single small frames waiting for a reply: never delay them.
        stream
            .set_nodelay(true)
            .map_err(|source| TransportError::Connect { addr: addr.to_owned(), source })?;
        bump(&self.stats.connections_opened);
        Ok(stream)
    }

    /// An idle connection to `addr` the peer has not closed, if any.
    async fn checkout(&self, addr: &str) -> Option<TcpStream> {
        let mut idle = self.idle.lock().await;
        let conns = idle.get_mut(addr)?;
        let mut found = None;
        while let Some(stream) = conns.pop() {
            // Between requests a healthy connection has nothing to read. EOF
            // means the peer closed it; stray bytes mean it is out of step.
            let mut probe = [0u8; 1];
            match stream.try_read(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    found = Some(stream);
                    break;
                }
                _ => continue,
            }
        }
        if conns.is_empty() {
            idle.remove(addr);
        }
        found
    }

    async fn checkin(&self, addr: &str, stream: TcpStream) {
        let mut idle = self.idle.lock().await;
        let conns = idle.entry(addr.to_owned()).or_default();
        if conns.len() < self.config.max_idle_per_peer {
            conns.push(stream);
        }
    }

    /// Closes every idle connection (for example when the node shuts down, or
    /// in tests to force a reconnect).
    pub async fn close_idle(&self) {
        self.idle.lock().await.clear();
    }

    /// The number of idle connections to `addr`.
    pub async fn idle_connections(&self, addr: &str) -> usize {
        self.idle.lock().await.get(addr).map_or(0, Vec::len)
    }
}

/// Makes closing `stream` an abort (`SO_LINGER` 0: RST, unsent bytes
/// discarded; a close that cannot block), or a normal close again.
fn set_abort(stream: &TcpStream, abort: bool) -> io::Result<()> {
    socket2::SockRef::from(stream).set_linger(abort.then_some(Duration::ZERO))
}
