//! One client connection: connect to a backend with failover, then copy.
//!
//! Candidates come from the route's balancer. A refused, failed or timed-out
//! connect is recorded on that backend (which may eject it) and the next
//! candidate is tried at once, so a dead backend costs a client at most one
//! connect attempt and never a failed connection while another candidate
//! answers. The client sees a close only when every candidate failed.
//!
//! A backend another node owns is connected through that node (a peer hop,
//! `dataplane::hop`); a refused or failed hop counts as a failed connect.
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
use tracing::debug;

use super::backend::ConnectResult;
use super::chaos::{self, Hit};
use super::clock::Clock;
use super::copy::{CopyMode, LiveChaos};
use super::pipeline;
use super::stop::Stop;
use super::table::{RouteEntry, RouteGuard, Target};
use crate::dataplane::hop::HopClient;

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
        // Boxed: only a route with policies pays for the wait's state.
        if !route.chaos.is_empty()
            && !Box::pin(connect_chaos(&route, ordinal, idx as usize, &mut stopped)).await
        {
            return;
        }
        let t0 = Instant::now();
        let attempt = async {
            match route.targets[idx as usize] {
                Target::Local => pipeline::connect_local(&route, idx as usize).await,
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
        pipeline::record_connect(
            &route,
            idx as usize,
            result.as_ref().map(|_| ()).map_err(|(k, e)| (*k, e)),
            &clock,
        );
        if let Ok(stream) = result {
            route.state.m.connect_seconds.observe(t0.elapsed().as_secs_f64());
            connected = Some((stream, idx as usize));
            break;
        }
    }
    let Some((mut server, idx)) = connected else {
        route.state.m.rejected_no_backend.inc();
        debug!(route = name, client = %peer, tried = candidates.as_slice().len(), "no backend reachable");
        return;
    };
    // The policies act here, on the node that accepted the client.
    let chaos = LiveChaos {
        cell: &route.state.chaos,
        id: route.chaos.conn(ordinal),
        backend: idx,
        metrics: &route.state.chaos_metrics,
        counted: Default::default(),
    };
    pipeline::relay(&mut client, &mut server, &route, idx, copy_mode, Some(&chaos), stopped).await;
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
