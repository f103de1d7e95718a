//! One client connection: connect to a backend with failover, then copy.
//!
//! Candidates come from the route's balancer. A refused, failed or timed-out
//! connect is recorded on that backend (which may eject it) and the next
//! candidate is tried at once, so a dead backend costs a client at most one
//! connect attempt and never a failed connection while another candidate
//! answers. The client sees a close only when every candidate failed.
//!
//! A backend another node owns is connected through that node (a peer hop,
//! `cluster::hop`); a refused or failed hop counts as a failed connect.
//!
//! A backend addressed by a host name may have several addresses (the
//! routing table holds them; connections never resolve). They are tried in
//! turn, in the resolver's order, each within the route's connect timeout,
//! as one attempt at that backend: it fails, and counts one failure towards
//! ejection, only when every address failed. So an IPv6 address that
//! refuses before an IPv4 one that accepts (`localhost`) is a success, and
//! `max_connect_attempts` still counts distinct backends.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::backend::ConnectResult;
use super::chaos::{self, Hit};
use super::clock::Clock;
use super::copy::{CopyCounters, CopyEnd, CopyMode, LiveChaos, copy};
use super::stop::Stop;
use super::table::{RouteEntry, RouteGuard, Target};
use crate::cluster::hop::HopClient;

/// What a connection needs besides its route.
#[derive(Debug, Clone)]
pub struct ConnContext {
    pub clock: Clock,
    pub copy_mode: CopyMode,
    /// Ends the connection at once (drain deadline).
    pub hard_stop: Stop,
    /// Opens peer hops.
    pub hops: Arc<HopClient>,
}

/// Serves one admitted client connection until it ends or `hard_stop` fires.
pub async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    route: Arc<RouteEntry>,
    _admitted: RouteGuard,
    ctx: Arc<ConnContext>,
) {
    let ConnContext { clock, copy_mode, ref hard_stop, ref hops } = *ctx;
    let name = route.spec.name.as_str();
    // One wait for the whole connection, polled by both phases: each new
    // wait would register with the signal again.
    let stopped = hard_stop.stopped();
    tokio::pin!(stopped);
    let candidates = route.candidates(peer);
    let ordinal = route.state.next_ordinal();
    let mut connected = None;
    for (attempt, &idx) in candidates.as_slice().iter().enumerate() {
        let backend = &route.backends[idx as usize];
        if attempt > 0 {
            route.state.m.failovers.inc();
        }
        if !route.chaos.is_empty() && !connect_chaos(&route, ordinal, idx as usize, &mut stopped).await {
            return;
        }
        let t0 = Instant::now();
        let attempt = async {
            match route.targets[idx as usize] {
                Target::Local => {
                    connect_any(&route.resolved[idx as usize].addrs, route.connect_timeout).await
                }
                Target::Peer { addr, .. } => {
                    let dst = client.local_addr().unwrap_or(route.listen);
                    hops.connect(addr, peer, dst, name, &backend.id, route.connect_timeout).await
                }
                // Never a candidate; kept total for safety.
                Target::Unreachable => {
                    Err((ConnectResult::Error, io::Error::other("backend on an unreachable node")))
                }
            }
        };
        let result = tokio::select! {
            r = attempt => r,
            () = &mut stopped => return,
        };
        match result {
            Ok(stream) => {
                route.state.m.connect_seconds.observe(t0.elapsed().as_secs_f64());
                backend.record_connect(ConnectResult::Ok, clock.now_ms(), route.eject);
                connected = Some((stream, backend, idx as usize));
                break;
            }
            Err((kind, e)) => {
                debug!(route = name, backend = %backend.id, addr = %backend.addr, error = %e, "connect failed");
                if let Some(until) = backend.record_connect(kind, clock.now_ms(), route.eject) {
                    warn!(route = name, backend = %backend.id, addr = %backend.addr, error = %e,
                        ejected_for_ms = until.saturating_sub(clock.now_ms()), "backend ejected");
                }
            }
        }
    }
    let Some((mut server, backend, idx)) = connected else {
        route.state.m.rejected_no_backend.inc();
        debug!(route = name, client = %peer, tried = candidates.as_slice().len(), "no backend reachable");
        return;
    };
    let _backend_conn = backend.open_connection();
    let counters = CopyCounters { upstream: &route.state.m.bytes_up, downstream: &route.state.m.bytes_down };
    let chaos = LiveChaos {
        cell: &route.state.chaos,
        id: route.chaos.conn(ordinal),
        backend: idx,
        metrics: &route.state.chaos_metrics,
        counted: Default::default(),
    };
    let outcome = tokio::select! {
        o = copy(&mut client, &mut server, route.idle_timeout, counters, copy_mode, Some(&chaos)) => o,
        () = &mut stopped => return,
    };
    match outcome.end {
        CopyEnd::IdleTimeout => route.state.m.idle_timeouts.inc(),
        CopyEnd::Error(e) => {
            debug!(route = name, backend = %backend.id, error = %e, "connection ended with error")
        }
        CopyEnd::Closed | CopyEnd::Chaos(_) => {}
    }
}

/// The chaos of connection `ordinal` before it connects to backend `idx`:
/// false when a `refuse` toxic hits it (the client is closed), after any
/// `connect_delay` (cut short by the hard stop, which also answers false).
async fn connect_chaos(
    route: &RouteEntry,
    ordinal: u64,
    idx: usize,
    stopped: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> bool {
    let hits: Vec<Hit> = chaos::decide(&route.chaos, route.chaos.conn(ordinal), idx);
    let (refuse, delay) = chaos::connect_phase(&hits);
    if refuse {
        for h in &hits {
            h.policy.connections.inc();
        }
        debug!(route = %route.spec.name, conn = ordinal, "chaos: connection refused");
        return false;
    }
    if delay.is_zero() {
        return true;
    }
    route.state.chaos_metrics.delay.observe(delay.as_secs_f64());
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = stopped.as_mut() => false,
    }
}

/// Connects to the first of `addrs` that accepts, trying each in turn
/// within `timeout`; the error is the last address's. No address is an
/// error (such a backend is never a candidate). The stream has
/// `TCP_NODELAY` set.
pub(crate) async fn connect_any(
    addrs: &[SocketAddr],
    timeout: std::time::Duration,
) -> Result<TcpStream, (ConnectResult, io::Error)> {
    // Built without allocating: it is only the answer when there is no address.
    let mut last = Err((ConnectResult::Error, io::Error::from(io::ErrorKind::AddrNotAvailable)));
    for &addr in addrs {
        last = connect(addr, timeout).await;
        if last.is_ok() {
            break;
        }
    }
    last
}

/// Connects to `addr` within `timeout`, classifying failures. The stream
/// has `TCP_NODELAY` set.
async fn connect(
    addr: SocketAddr,
    timeout: std::time::Duration,
) -> Result<TcpStream, (ConnectResult, io::Error)> {
    match tokio::time::timeout(timeout, connect_nodelay(addr)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Err((ConnectResult::Refused, e)),
        Ok(Err(e)) => Err((ConnectResult::Error, e)),
        Err(_) => Err((ConnectResult::Timeout, io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))),
    }
}

/// A non-blocking connect with `TCP_NODELAY` set before it, in fewer system
/// calls per connection than `TcpStream::connect` plus `set_nodelay`: a
/// connect that completes at once (loopback often does) needs no wait, and
/// a pending one is judged by the readiness event itself. The socket's
/// error is read (`getsockopt(SO_ERROR)`) only when the event says it
/// failed.
async fn connect_nodelay(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM.nonblocking().cloexec(),
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_tcp_nodelay(true)?;
    let pending = match socket.connect(&addr.into()) {
        Ok(()) => false,
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINPROGRESS as i32) => true,
        Err(e) => return Err(e),
    };
    let stream = TcpStream::from_std(socket.into())?;
    if pending {
        let ready = stream.ready(tokio::io::Interest::WRITABLE).await?;
        if ready.is_error() || ready.is_write_closed() {
            return Err(stream.take_error()?.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::ConnectionReset, "closed while connecting")
            }));
        }
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_sets_nodelay_and_classifies_failures() -> io::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let timeout = std::time::Duration::from_secs(5);
        let stream = connect(addr, timeout).await.map_err(|(_, e)| e)?;
        assert!(stream.nodelay()?, "upstream connections have TCP_NODELAY");
        let (accepted, _) = listener.accept().await?;
        assert_eq!(accepted.peer_addr()?, stream.local_addr()?);
        drop(listener);
        match connect(addr, timeout).await {
            Err((ConnectResult::Refused, e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
            other => panic!("a closed port must be refused: {:?}", other.map(|_| ())),
        }
        Ok(())
    }

    /// The addresses of one backend are tried in turn: a refusing first
    /// address (IPv6 `localhost` with an IPv4-only service) does not fail
    /// the backend.
    #[tokio::test]
    async fn connect_any_tries_each_address_in_turn() -> io::Result<()> {
        let timeout = std::time::Duration::from_secs(5);
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let open = listener.local_addr()?;
        let stream = connect_any(&[closed, open], timeout).await.map_err(|(_, e)| e)?;
        assert_eq!(stream.peer_addr()?, open);
        match connect_any(&[open, closed], timeout).await {
            Ok(s) => assert_eq!(s.peer_addr()?, open, "the first that accepts wins"),
            Err((_, e)) => return Err(e),
        }
        drop(listener);
        match connect_any(&[open, closed], timeout).await {
            Err((ConnectResult::Refused, _)) => {}
            other => panic!("every address refused: {:?}", other.map(|_| ())),
        }
        match connect_any(&[], timeout).await {
            Err((ConnectResult::Error, e)) => assert_eq!(e.kind(), io::ErrorKind::AddrNotAvailable),
            other => panic!("no address: {:?}", other.map(|_| ())),
        }
        Ok(())
    }
}
