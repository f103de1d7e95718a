//! The one connection pipeline, shared by a node's own client connections
//! (`proxy`) and the peer hops it serves as a backend's owner (`hop`):
//! the backend connect, classified and recorded on the backend (which may
//! eject it), and the connection's tail: the backend's connection count,
//! the byte counters, the copy and how it ended.
//!
//! The copy takes the connection's chaos context, its seam for shaping:
//! `None` is the plain copy; a client connection passes its route's
//! policies (`copy::LiveChaos`); a hop never does, so that a policy acts
//! once, on the node that accepted the client.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::backend::ConnectResult;
use super::clock::Clock;
use super::copy::{CopyCounters, CopyEnd, CopyMode, LiveChaos, copy};
use super::table::RouteEntry;

/// A connect's outcome: the stream, or how it failed and why.
pub type Connected = Result<TcpStream, (ConnectResult, io::Error)>;

/// Connects to backend `idx` of `route` as this node reaches it directly:
/// its resolved addresses in turn, within the route's connect timeout.
pub async fn connect_local(route: &RouteEntry, idx: usize) -> Connected {
    match route.resolved.get(idx) {
        Some(r) => connect_any(&r.addrs, route.connect_timeout).await,
        None => Err((ConnectResult::Error, io::Error::other("no such backend"))),
    }
}

/// Records a connect to backend `idx` of `route` on that backend, with
/// `clock`'s time: a failure may eject it (logged at warn, the failure
/// itself at debug).
pub fn record_connect(
    route: &RouteEntry,
    idx: usize,
    outcome: Result<(), (ConnectResult, &io::Error)>,
    clock: &Clock,
) {
    let Some(backend) = route.backends.get(idx) else { return };
    let name = route.spec.name.as_str();
    match outcome {
        Ok(()) => {
            backend.record_connect(ConnectResult::Ok, clock.now_ms(), route.eject);
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

/// The tail of a connection to backend `idx` of `route`: counted as one of
/// the backend's, copied (shaped by `chaos` when given) until it ends or
/// `stopped` completes, and its end counted or logged.
pub async fn relay(
    client: &mut TcpStream,
    server: &mut TcpStream,
    route: &RouteEntry,
    idx: usize,
    mode: CopyMode,
    chaos: Option<&LiveChaos<'_>>,
    stopped: Pin<&mut impl Future<Output = ()>>,
) {
    let Some(backend) = route.backends.get(idx) else { return };
    let _backend_conn = backend.open_connection();
    let counters = CopyCounters { upstream: &route.state.m.bytes_up, downstream: &route.state.m.bytes_down };
    let outcome = tokio::select! {
        o = copy(client, server, route.idle_timeout, counters, mode, chaos) => o,
        () = stopped => return,
    };
    match outcome.end {
        CopyEnd::IdleTimeout => route.state.m.idle_timeouts.inc(),
        CopyEnd::Error(e) => {
            debug!(route = %route.spec.name, backend = %backend.id, error = %e, "connection ended with error")
        }
        CopyEnd::Chaos(abort) => {
            debug!(route = %route.spec.name, backend = %backend.id, ?abort, "connection ended by chaos")
        }
        CopyEnd::Closed => {}
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
