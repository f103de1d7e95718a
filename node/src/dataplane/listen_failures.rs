//! Routes this node could not bind, and why: a map published whole (like
//! the bound addresses) after every reconcile, for the admin API
//! (`GET /v1/routes/{name}`, `/health/ready`), the cluster port (a peer
//! asking which routes this node could not bind) and the
//! `ferry_route_bind_failures` gauge.
//!
//! Only a cluster node keeps failures: it must apply what the Raft log
//! commits, so a route it cannot bind (a port another process holds, an IP
//! not local to it) stays in its table, is reported, and is bound again
//! later. A standalone node refuses a change with a route it cannot bind.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tracing::warn;

use super::listener::BindError;

/// How often the control plane binds a failed route again: a port another
/// process held may have been freed, an address may have been added.
pub const BIND_RETRY: Duration = Duration::from_secs(5);

/// Why one route has no listener on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenFailure {
    /// The address it tried.
    pub addr: SocketAddr,
    /// The error of the last attempt.
    pub error: String,
}

/// Route name -> why it is not listening.
pub type ListenFailures = BTreeMap<String, ListenFailure>;

/// The failures after a reconcile that returned `errors`, given those
/// before it (`prev`). A route that starts failing, or fails differently,
/// is logged at WARN; a retry that fails as before logs nothing, so a route
/// that stays unbindable does not fill the log. (A route that binds again
/// logs `listening`, as any new listener.)
pub fn update(prev: &ListenFailures, errors: &[BindError]) -> ListenFailures {
    let next: ListenFailures = errors
        .iter()
        .map(|e| (e.route.clone(), ListenFailure { addr: e.addr, error: e.error.to_string() }))
        .collect();
    for (route, f) in &next {
        if prev.get(route) != Some(f) {
            warn!(route = %route, addr = %f.addr, error = %f.error, retry_s = BIND_RETRY.as_secs(), "cannot listen");
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(route: &str, kind: std::io::ErrorKind) -> BindError {
        BindError { route: route.into(), addr: "127.0.0.1:7000".parse().expect("addr"), error: kind.into() }
    }

    #[test]
    fn the_map_holds_the_last_reconciles_failures_only() {
        let first = update(&ListenFailures::new(), &[error("a", std::io::ErrorKind::AddrInUse)]);
        assert_eq!(first.keys().collect::<Vec<_>>(), ["a"]);
        let second = update(&first, &[error("b", std::io::ErrorKind::AddrNotAvailable)]);
        assert_eq!(second.keys().collect::<Vec<_>>(), ["b"], "a bound (or went) since");
        assert!(second["b"].error.contains("not available"), "{:?}", second["b"]);
        assert!(update(&second, &[]).is_empty());
    }
}
