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

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::backend::ConnectResult;
use super::clock::Clock;
use super::copy::{CopyCounters, CopyEnd, CopyMode, copy_bidirectional};
use super::table::{RouteEntry, RouteGuard, Target};
use crate::cluster::hop::HopClient;

/// What a connection needs besides its route.
#[derive(Debug, Clone)]
pub struct ConnContext {
    pub clock: Clock,
    pub copy_mode: CopyMode,
    /// Ends the connection at once (drain deadline).
    pub hard_stop: CancellationToken,
    /// Opens peer hops.
    pub hops: Arc<HopClient>,
}

/// Serves one admitted client connection until it ends or `hard_stop` fires.
pub async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    route: Arc<RouteEntry>,
    _admitted: RouteGuard,
    ctx: ConnContext,
) {
    let ConnContext { clock, copy_mode, hard_stop, hops } = ctx;
    let name = route.spec.name.as_str();
    let candidates = route.candidates(peer);
    let mut connected = None;
    for (attempt, &idx) in candidates.as_slice().iter().enumerate() {
        let backend = &route.backends[idx as usize];
        if attempt > 0 {
            route.state.m.failovers.inc();
        }
        let t0 = Instant::now();
        let attempt = async {
            match route.targets[idx as usize] {
                Target::Local => connect(backend.addr, route.connect_timeout).await,
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
            () = hard_stop.cancelled() => return,
        };
        match result {
            Ok(stream) => {
                route.state.m.connect_seconds.observe(t0.elapsed().as_secs_f64());
                backend.record_connect(ConnectResult::Ok, clock.now_ms(), route.eject);
                connected = Some((stream, backend));
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
    let Some((mut server, backend)) = connected else {
        route.state.m.rejected_no_backend.inc();
        debug!(route = name, client = %peer, tried = candidates.as_slice().len(), "no backend reachable");
        return;
    };
    let _backend_conn = backend.open_connection();
    let _ = server.set_nodelay(true);
    let counters = CopyCounters { upstream: &route.state.m.bytes_up, downstream: &route.state.m.bytes_down };
    let outcome = tokio::select! {
        o = copy_bidirectional(&mut client, &mut server, route.idle_timeout, counters, copy_mode) => o,
        () = hard_stop.cancelled() => return,
    };
    match outcome.end {
        CopyEnd::IdleTimeout => route.state.m.idle_timeouts.inc(),
        CopyEnd::Error(e) => {
            debug!(route = name, backend = %backend.id, error = %e, "connection ended with error")
        }
        CopyEnd::Closed => {}
    }
}

/// Connects to `addr` within `timeout`, classifying failures.
async fn connect(
    addr: SocketAddr,
    timeout: std::time::Duration,
) -> Result<TcpStream, (ConnectResult, io::Error)> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Err((ConnectResult::Refused, e)),
        Ok(Err(e)) => Err((ConnectResult::Error, e)),
        Err(_) => Err((ConnectResult::Timeout, io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))),
    }
}
