//! Route listeners: one accept loop per route, reconciled against each new
//! routing table.
//!
//! A listener looks its route up in the current table for every accepted
//! connection, so a changed route takes effect for new connections while
//! running ones keep the entry they started with. A listener whose route is
//! removed stops accepting at once (freeing its port for a new listener) and
//! its connections may drain for the grace period before they are closed. A
//! listener whose route moves to another address stops accepting too, but
//! its connections belong to a route that still exists: they run on until
//! they end (or the node shuts down), as they would on an unchanged route.
//! A listener whose route is disabled (`enabled: false`; it stays in the
//! table) stops accepting and closes its connections at once, no drain.
//!
//! With dedicated workers each route has one `SO_REUSEPORT` socket per
//! worker, and the kernel picks the socket by a hash of the connection's
//! addresses. Over a few long-lived connections that hash can leave one
//! worker with far more than the others, and under churn one worker can sit
//! idle while the other has a queue. So by default (`[node] worker_balance
//! = "least_connections"`) each accept loop balances: a connection accepted
//! by a worker that serves two or more connections more than the least
//! loaded one is handed to that one (see [`WorkerLoads`]), as Envoy's
//! `exact_balance`. Accepted sockets are registered only by the runtime
//! that serves them, so a hand-off costs a wake-up of that runtime and no
//! `epoll_ctl`. `"kernel"` leaves the choice to the kernel's hash.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::IntGauge;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::clock::Clock;
use super::copy::CopyMode;
use super::listen_failures::{self, ListenFailures};
use super::proxy;
use super::stop::Stop;
use super::table::RoutingTable;
use crate::config::WorkerBalance;

/// Listen backlog of route listeners.
const BACKLOG: i32 = 1024;

/// Shared handles every accept loop needs.
#[derive(Debug, Clone)]
pub struct ListenerContext {
    pub table: Arc<ArcSwap<RoutingTable>>,
    /// Tracks every accept loop, for the shutdown drain. A loop ends only
    /// when its connections have (each loop tracks its own: one tracker
    /// shared by the workers would be two contended atomics per connection).
    pub tracker: TaskTracker,
    pub clock: Clock,
    /// Closes every connection at once (end of the shutdown drain).
    pub hard_stop: CancellationToken,
    /// Grace period of a removed listener's connections.
    pub drain: Duration,
    /// How connections move bytes.
    pub copy_mode: CopyMode,
    /// Runtimes the accept loops run on: one listener socket each.
    pub runtimes: Vec<tokio::runtime::Handle>,
    /// True when each runtime is a dedicated worker (bind with `SO_REUSEPORT`).
    pub reuse_port: bool,
    /// Opens peer hops to backends other nodes own.
    pub hops: Arc<crate::dataplane::hop::HopClient>,
    /// Connections per runtime of `runtimes`, for balancing.
    pub loads: Arc<WorkerLoads>,
}

/// Client connections each worker serves; its gauges are the
/// `ferry_worker_connections{worker}` series.
#[derive(Debug)]
pub struct WorkerLoads {
    served: Vec<IntGauge>,
    balance: WorkerBalance,
}

impl WorkerLoads {
    /// One gauge per worker, labelled by index.
    pub fn new(workers: usize, balance: WorkerBalance, metrics: &crate::telemetry::metrics::Metrics) -> Self {
        let served = (0..workers.max(1))
            .map(|i| metrics.worker_connections.with_label_values(&[&i.to_string()]))
            .collect();
        Self { served, balance }
    }

    /// Where a connection accepted by worker `mine` is served: `mine`,
    /// unless balancing by least connections and it serves two or more
    /// connections more than the least loaded worker. Each worker reads the
    /// others' counts once per accept; only a hand-off writes to another
    /// worker's count.
    pub fn pick(&self, mine: usize) -> usize {
        if self.balance == WorkerBalance::Kernel {
            return mine;
        }
        let own = self.served[mine].get();
        let mut least = (mine, own);
        for (i, g) in self.served.iter().enumerate() {
            let n = g.get();
            if n < least.1 {
                least = (i, n);
            }
        }
        if own > least.1 + 1 { least.0 } else { mine }
    }

    /// Client connections open on every worker.
    pub fn open_connections(&self) -> usize {
        self.served.iter().map(|g| g.get().max(0) as usize).sum()
    }

    /// Counts a connection on `worker` until the guard drops.
    fn open(&self, worker: usize) -> Served {
        let g = self.served[worker].clone();
        g.inc();
        Served(g)
    }
}

/// One connection counted on a worker.
struct Served(IntGauge);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Debug)]
struct Running {
    requested: SocketAddr,
    bound: SocketAddr,
    stop: CancellationToken,
    conns: CancellationToken,
    /// Duplicates of the listening sockets, to close them at once (see
    /// [`Running::stop_accepting`]).
    sockets: Vec<socket2::Socket>,
}

impl Running {
    /// Stops accepting now. Cancelling the accept loops is not enough: a
    /// loop on another runtime closes its socket only when it next runs,
    /// and until then a new listener on the same port (`SO_REUSEPORT`)
    /// would share incoming connections with the old one. shutdown(2) on a
    /// listening socket takes it out of the kernel's listening table at
    /// once; the loop then sees its stop token first and exits.
    fn stop_accepting(&self) {
        self.stop.cancel();
        for s in &self.sockets {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A route whose listener could not be bound.
#[derive(Debug)]
pub struct BindError {
    pub route: String,
    pub addr: SocketAddr,
    pub error: io::Error,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "route {:?}: cannot listen on {}: {}", self.route, self.addr, self.error)
    }
}

/// A reconcile prepared by [`Listeners::plan`] and not yet committed.
/// Dropping it closes the sockets it bound.
#[derive(Debug)]
pub struct Plan {
    /// Running listeners to stop, and whether their route moved (its
    /// connections keep running) rather than went (they drain).
    stale: Vec<(String, bool)>,
    /// Routes to start, with their sockets bound.
    ready: Vec<(String, SocketAddr, Bound)>,
    /// Routes to bind once `stale` has stopped (their address overlaps one of those).
    deferred: Vec<(String, SocketAddr)>,
    /// Routes that could not be bound.
    pub errors: Vec<BindError>,
}

/// True when a listener bound to `held` keeps `wanted` from being bound:
/// the same port on the same or a wildcard address.
fn overlaps(held: SocketAddr, wanted: SocketAddr) -> bool {
    held.port() == wanted.port()
        && wanted.port() != 0
        && (held.ip() == wanted.ip() || held.ip().is_unspecified() || wanted.ip().is_unspecified())
}

/// The set of running listeners.
#[derive(Debug)]
pub struct Listeners {
    ctx: ListenerContext,
    running: HashMap<String, Running>,
    /// Route name -> bound address, for the admin API.
    bound: Arc<ArcSwap<HashMap<String, SocketAddr>>>,
    /// Route name -> why it is not listening, after the last reconcile.
    failures: Arc<ArcSwap<ListenFailures>>,
    /// Set by [`Listeners::stop_accepting`] (shutdown): from then on nothing
    /// is bound again, whatever routes a late reconcile brings.
    closed: bool,
}

impl Listeners {
    /// An empty set.
    pub fn new(ctx: ListenerContext) -> Self {
        Self { ctx, running: HashMap::new(), bound: Arc::default(), failures: Arc::default(), closed: false }
    }

    /// Route name -> bound address, updated by every reconcile.
    pub fn bound(&self) -> Arc<ArcSwap<HashMap<String, SocketAddr>>> {
        Arc::clone(&self.bound)
    }

    /// Route name -> why it could not be bound, updated by every commit: the
    /// routes of that reconcile that are not listening.
    pub fn failures(&self) -> Arc<ArcSwap<ListenFailures>> {
        Arc::clone(&self.failures)
    }

    /// First half of a reconcile (making the running listeners match the
    /// routes `(name, listen address)`), which changes nothing that runs: binds
    /// the listening sockets of new and moved routes (their accept queues
    /// fill until [`Listeners::commit`] starts their loops) and notes which
    /// running listeners would stop. A caller that wants all or nothing (a
    /// reload) drops a plan with [`Plan::errors`], which closes its sockets
    /// and leaves every running listener as it was.
    ///
    /// A route that moves onto an address one of the stopping listeners
    /// holds (two routes swapping ports, a route taking a removed route's
    /// port) cannot be bound before that listener stops: it is bound by
    /// `commit`, right after.
    pub fn plan(&self, routes: &[(String, SocketAddr)]) -> Plan {
        let stale: Vec<(String, bool)> = self
            .running
            .iter()
            .filter(|(name, r)| routes.iter().all(|(n, listen)| n != *name || *listen != r.requested))
            .map(|(name, _)| (name.clone(), routes.iter().any(|(n, _)| n == name)))
            .collect();
        let mut plan = Plan { stale, ready: Vec::new(), deferred: Vec::new(), errors: Vec::new() };
        if self.closed {
            return plan;
        }
        for (name, listen) in routes {
            if self.running.get(name).is_some_and(|r| r.requested == *listen) {
                continue;
            }
            let held = plan
                .stale
                .iter()
                .filter_map(|(n, _)| self.running.get(n))
                .any(|r| overlaps(r.bound, *listen));
            if held {
                plan.deferred.push((name.clone(), *listen));
                continue;
            }
            match bind(*listen, self.ctx.runtimes.len(), self.ctx.reuse_port) {
                Ok(sockets) => plan.ready.push((name.clone(), *listen, sockets)),
                Err(error) => plan.errors.push(BindError { route: name.clone(), addr: *listen, error }),
            }
        }
        plan
    }

    /// Second half of a reconcile: stops the plan's stale listeners, starts
    /// accepting on its bound sockets, binds its deferred addresses, and
    /// returns every route that is not listening (the plan's errors and any
    /// deferred bind that failed).
    pub fn commit(&mut self, plan: Plan) -> Vec<BindError> {
        let Plan { stale, ready, deferred, mut errors } = plan;
        let table = self.ctx.table.load();
        for (name, moved) in stale {
            let Some(r) = self.running.remove(&name) else { continue };
            // Disabled (the route is still in the table, which the caller
            // published first): no drain, as Toxiproxy's `enabled: false`.
            if table.get(&name).is_some_and(|e| !e.spec.enabled) {
                info!(route = %name, addr = %r.bound, "route disabled: listener stopped, its connections closed");
                r.stop_accepting();
                r.conns.cancel();
                continue;
            }
            if moved {
                info!(route = %name, addr = %r.bound, "listener moved: stopped accepting here, its connections run on");
                r.stop_accepting();
            } else {
                info!(route = %name, addr = %r.bound, drain_ms = self.ctx.drain.as_millis() as u64, "listener stopped");
                self.retire(r);
            }
        }
        for (name, listen, sockets) in ready {
            self.start(name, listen, sockets);
        }
        for (name, listen) in deferred {
            if self.closed {
                break;
            }
            match bind(listen, self.ctx.runtimes.len(), self.ctx.reuse_port) {
                Ok(sockets) => self.start(name, listen, sockets),
                Err(error) => errors.push(BindError { route: name, addr: listen, error }),
            }
        }
        let bound = self.running.iter().map(|(n, r)| (n.clone(), r.bound)).collect();
        self.bound.store(Arc::new(bound));
        self.failures.store(Arc::new(listen_failures::update(&self.failures.load(), &errors)));
        errors
    }

    /// Starts one accept loop per worker on `sockets`, route `name`.
    fn start(&mut self, name: String, requested: SocketAddr, (sockets, dups): Bound) {
        let bound = sockets.first().and_then(|l| l.local_addr().ok()).unwrap_or(requested);
        let stop = CancellationToken::new();
        let conns = self.ctx.hard_stop.child_token();
        for (worker, (socket, runtime)) in sockets.into_iter().zip(&self.ctx.runtimes).enumerate() {
            self.ctx.tracker.spawn_on(
                accept_loop(socket, worker, name.clone(), self.ctx.clone(), stop.clone(), conns.clone()),
                runtime,
            );
        }
        info!(route = %name, addr = %bound, "listening");
        self.running.insert(name, Running { requested, bound, stop, conns, sockets: dups });
    }

    /// Stops accepting on every listener for good (shutdown); connections
    /// keep running.
    pub fn stop_accepting(&mut self) {
        self.closed = true;
        for r in self.running.values() {
            r.stop_accepting();
        }
        self.running.clear();
        self.bound.store(Arc::default());
        self.failures.store(Arc::default());
    }

    fn retire(&self, r: Running) {
        r.stop_accepting();
        let (drain, hard_stop) = (self.ctx.drain, self.ctx.hard_stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(drain) => r.conns.cancel(),
                () = hard_stop.cancelled() => {}
            }
        });
    }
}

impl Drop for Listeners {
    /// Accept loops end with their owner (a node that failed to start, or
    /// the publisher at exit): a port is never left bound by an orphan.
    fn drop(&mut self) {
        for r in self.running.values() {
            r.stop_accepting();
        }
    }
}

/// Binds `count` listening sockets on `addr` (`SO_REUSEPORT` when there
/// is more than one per route); port 0 is resolved by the first. Returns
/// them and a duplicate of each, to stop them from outside their loops.
type Bound = (Vec<std::net::TcpListener>, Vec<socket2::Socket>);

fn bind(addr: SocketAddr, count: usize, reuse_port: bool) -> io::Result<Bound> {
    let mut sockets = Vec::with_capacity(count);
    let mut dups = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        // Accepted sockets inherit it: no setsockopt per connection.
        socket.set_tcp_nodelay(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        dups.push(socket.try_clone()?);
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok((sockets, dups))
}

/// Accepts one connection from `listener`, non-blocking and close-on-exec,
/// without registering it with any runtime: the worker that serves it does.
async fn accept(listener: &AsyncFd<std::net::TcpListener>) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    let (socket, addr) =
        listener.async_io(Interest::READABLE, |l| socket2::SockRef::from(l).accept4(flags)).await?;
    let peer = addr.as_socket().ok_or_else(|| io::Error::other("accepted a socket that is not TCP/IP"))?;
    Ok((socket.into(), peer))
}

/// Registers `listener` with the current runtime, for readability only.
fn register(listener: std::net::TcpListener) -> io::Result<AsyncFd<std::net::TcpListener>> {
    // tokio deprecated the safe constructors of `AsyncFd` (tokio#8587):
    // they are unsound for a type whose `as_raw_fd` may change or close
    // its descriptor while registered. A `std::net::TcpListener` owns its
    // descriptor for its whole life, so these calls are sound; the
    // replacement, `register_with_interest`, is `unsafe`, which this crate
    // forbids.
    #[allow(deprecated)]
    AsyncFd::with_interest(listener, Interest::READABLE)
}

async fn accept_loop(
    listener: std::net::TcpListener,
    worker: usize,
    route: String,
    ctx: ListenerContext,
    stop: CancellationToken,
    conns: CancellationToken,
) {
    // Registered here for readiness; accepted sockets are registered only
    // by the runtime that serves them, so handing one to another worker
    // costs a wake-up and no extra epoll_ctl.
    let listener = match register(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!(route = %route, error = %e, "cannot register listener");
            return;
        }
    };
    // What this loop's connections share is this loop's own: a stop
    // signal, the context and the task tracker. Shared by the connections
    // of every worker, each would be written from both cores for every
    // connection.
    let hard_stop = Stop::new();
    // Given at the loop's end at the latest, which also unregisters it.
    let ended = hard_stop.clone();
    if let Some(entry) = ctx.table.load().get(&route) {
        entry.state.chaos.wake_on_change(hard_stop.clone());
    }
    let shared = Arc::new(proxy::ConnContext {
        clock: ctx.clock,
        copy_mode: ctx.copy_mode,
        hard_stop: hard_stop.clone(),
        hops: Arc::clone(&ctx.hops),
    });
    // The connections wait on `hard_stop`, which is cheap to poll (see
    // `stop`); this task turns the cancellation of `conns` (the drain
    // deadline) into it, and ends with the loop.
    let relay = tokio::spawn(async move {
        conns.cancelled().await;
        hard_stop.stop();
    });
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            // Stop first: a stopped listener's socket is shut down, and its
            // accept fails.
            biased;
            () = stop.cancelled() => break,
            a = accept(&listener) => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(route = %route, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let table = ctx.table.load();
        let Some(entry) = table.get(&route) else { continue };
        let Some(admitted) = entry.state.try_admit(entry.spec.max_connections) else { continue };
        let target = ctx.loads.pick(worker);
        let served = ctx.loads.open(target);
        let entry = Arc::clone(entry);
        let conn = Arc::clone(&shared);
        let serve = async move {
            let _served = served;
            // Registered on the runtime that runs this task.
            match TcpStream::from_std(stream) {
                Ok(stream) => proxy::serve(stream, peer, entry, admitted, conn).await,
                Err(e) => warn!(route = %entry.spec.name, error = %e, "cannot register a connection"),
            }
        };
        match ctx.runtimes.get(target) {
            Some(runtime) if target != worker => {
                tracker.spawn_on(serve, runtime);
            }
            _ => {
                tracker.spawn(serve);
            }
        }
    }
    // Stopped accepting: the loop's task (which the node's drain waits
    // for) ends with its last connection.
    drop(listener);
    tracker.close();
    tracker.wait().await;
    relay.abort();
    ended.stop();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_two_connections_ahead_hands_new_ones_to_the_least_loaded() -> Result<(), prometheus::Error> {
        let metrics = crate::telemetry::metrics::Metrics::new()?;
        let loads = WorkerLoads::new(3, WorkerBalance::LeastConnections, &metrics);
        let mut held = Vec::new();
        // Worker 0 accepts everything: it keeps two, then spreads.
        for _ in 0..2 {
            assert_eq!(loads.pick(0), 0);
            held.push(loads.open(0));
        }
        let mut picks = Vec::new();
        for _ in 0..4 {
            let w = loads.pick(0);
            picks.push(w);
            held.push(loads.open(w));
        }
        assert_eq!(picks, [1, 2, 0, 1], "counts 2,0,0 -> 2,1,0 -> 2,1,1 -> 3,1,1 -> 3,2,1");
        assert_eq!(loads.served.iter().map(IntGauge::get).collect::<Vec<_>>(), [3, 2, 1]);
        // A single worker (workers = 0) keeps everything, and so does a
        // worker left to the kernel's choice.
        let one = WorkerLoads::new(0, WorkerBalance::LeastConnections, &metrics);
        assert_eq!(one.pick(0), 0);
        let kernel = WorkerLoads::new(3, WorkerBalance::Kernel, &metrics);
        assert_eq!(kernel.pick(0), 0, "worker 0 serves 3, worker 2 one: no hand-off");
        drop(held);
        assert!(loads.served.iter().all(|g| g.get() == 0), "closed connections are uncounted");
        Ok(())
    }

    #[test]
    fn accepted_connections_inherit_nodelay_from_the_listener() -> io::Result<()> {
        let (listeners, dups) = bind("127.0.0.1:0".parse().expect("addr"), 2, true)?;
        assert_eq!((listeners.len(), dups.len()), (2, 2));
        let addr = listeners[0].local_addr()?;
        assert_eq!(listeners[1].local_addr()?, addr, "one port for every worker");
        let client = std::net::TcpStream::connect(addr)?;
        // SO_REUSEPORT: either socket may get it.
        let mut accepted = None;
        for _ in 0..1_000 {
            if let Some(Ok((s, _))) = listeners.iter().map(std::net::TcpListener::accept).find(Result::is_ok)
            {
                accepted = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let accepted = accepted.expect("the connection was accepted within 5 s");
        assert!(accepted.nodelay()?, "accepted connections have TCP_NODELAY");
        drop(client);
        Ok(())
    }
}
