//! Bidirectional byte copy between a client and a backend socket.
//!
//! Both directions run inside the connection's one task (joined futures on
//! `&TcpStream`, no split, no extra task). Each direction owns one buffer,
//! allocated the first time its socket has data and reused for every chunk,
//! so an idle connection holds no buffer and a busy one allocates once.
//! End of stream on one side becomes a write shutdown on the other (TCP
//! half-close), and the copy ends when both directions have ended, on the
//! first error, or when no byte moved for the idle timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use prometheus::IntCounter;

use super::chaos::shape::{self, Chain, Shaped};
use super::chaos::{ChaosCell, ChaosMetrics, ConnId};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::time::{Instant, Sleep};

/// Size of each direction's buffer: what one read takes and one write
/// sends. Under one loopback segment (MSS 65,483 with the 64 KiB loopback
/// MTU): with `TCP_NODELAY`, a 64 KiB write split into a full segment and
/// a 53-byte one, which cost about a fifth of the throughput
/// (docs/architecture.md, "copy = userspace"). On a 1,500-byte MTU a write
/// is about 42 full segments either way.
pub const BUF_SIZE: usize = 60 * 1024;

/// How a copy ended.
#[derive(Debug)]
pub enum CopyEnd {
    /// Both sides closed their sending direction.
    Closed,
    /// No byte moved in either direction for the idle timeout.
    IdleTimeout,
    /// A read or write failed (reset, broken pipe, ...).
    Error(io::Error),
    /// A chaos toxic ended the connection.
    Chaos(Abort),
}

/// How a chaos toxic ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// Both sockets closed with `SO_LINGER` 0: the client sees a reset
    /// (reset_peer).
    Reset,
    /// Both sockets closed (timeout, limit_data).
    Close,
}

/// Why a direction's pump returned.
#[derive(Debug)]
pub enum PumpEnd {
    /// Its source ended, and the end was passed on.
    Eof,
    /// The route's chaos policies changed: these bytes, read and not yet
    /// written, go first under the new decision.
    Switch(Vec<u8>),
    /// A shaped direction stopped for a change, everything it held
    /// written.
    Interrupted,
    /// A toxic ends the connection.
    Abort(Abort),
}

/// Where a plain direction looks for changes of its route's chaos
/// policies: one atomic load per read.
#[derive(Debug, Clone, Copy)]
pub struct Generation<'a> {
    pub cell: &'a ChaosCell,
    pub seen: u64,
}

impl Generation<'_> {
    pub(crate) fn moved(&self) -> bool {
        self.cell.generation() != self.seen
    }
}

/// `wait`, unless the route's chaos policies changed: `None` then. Checked
/// at each poll (one atomic load): a change pokes every connection of the
/// route (`ChaosCell::set`), so a direction waiting for data sees it at
/// once. Only for waits that lose nothing when dropped (a read, a
/// readiness wait).
pub(crate) async fn unless_moved<T>(
    wait: impl Future<Output = T>,
    generation: Option<Generation<'_>>,
) -> Option<T> {
    let mut wait = std::pin::pin!(wait);
    std::future::poll_fn(|cx| {
        if generation.is_some_and(|g| g.moved()) {
            return Poll::Ready(None);
        }
        wait.as_mut().poll(cx).map(Some)
    })
    .await
}

/// Bytes moved and how the copy ended.
#[derive(Debug)]
pub struct CopyOutcome {
    /// Client to backend.
    pub upstream: u64,
    /// Backend to client.
    pub downstream: u64,
    /// Buffers (or pipes) taken: 0 for a connection that never carried a
    /// byte, at most one per direction (in auto mode a bulk direction also
    /// leases a pooled pipe, not counted here).
    pub buffers: u32,
    pub end: CopyEnd,
}

/// Byte counters of the two directions.
#[derive(Debug, Clone, Copy)]
pub struct CopyCounters<'a> {
    pub upstream: &'a IntCounter,
    pub downstream: &'a IntCounter,
}

/// How bytes move between the two sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyMode {
    /// Each direction starts with the userspace copy and moves to splice(2)
    /// once one read fills the whole buffer (a bulk transfer), as HAProxy's
    /// `splice-auto`: small exchanges never pay for a pipe, bulk ones stop
    /// copying bytes through user space.
    Auto,
    /// read(2)/write(2) through one reused buffer per direction (the
    /// default: the fastest here, see docs/architecture.md).
    #[default]
    Userspace,
    /// splice(2) through a pipe per direction: bytes stay in the kernel.
    Splice,
}

/// Bytes a direction may count locally before adding them to the route's
/// shared counter: one contended atomic per 256 KiB instead of per chunk.
const FLUSH_BYTES: u64 = 256 * 1024;
/// ...and about the longest they may wait, so trickling connections and a
/// burst followed by silence still show: a move this long after the last
/// flush flushes at once, and the copy's timer flushes what a connection
/// moved in its last second (see [`copy`]).
const FLUSH_MS: u64 = 1_000;

/// Byte accounting and idle tracking of one direction. Its own atomics are
/// touched by one task only (uncontended); the route's counter is updated in
/// batches.
#[derive(Debug)]
pub struct Activity<'a> {
    counter: &'a IntCounter,
    total: AtomicU64,
    flushed: AtomicU64,
    flushed_at_ms: AtomicU64,
    /// Milliseconds from `start` to the last byte moved (both directions).
    last: &'a AtomicU64,
    start: Instant,
    buffers: &'a AtomicU32,
    /// Directions that reached their end of stream (shared by the two).
    ended: &'a AtomicU32,
}

impl<'a> Activity<'a> {
    fn new(
        counter: &'a IntCounter,
        last: &'a AtomicU64,
        start: Instant,
        buffers: &'a AtomicU32,
        ended: &'a AtomicU32,
    ) -> Self {
        let zero = || AtomicU64::new(0);
        Self { counter, total: zero(), flushed: zero(), flushed_at_ms: zero(), last, start, buffers, ended }
    }

    /// Records `n` bytes moved now.
    pub fn moved(&self, n: usize) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last.store(now, Relaxed);
        let total = self.total.fetch_add(n as u64, Relaxed) + n as u64;
        if total - self.flushed.load(Relaxed) >= FLUSH_BYTES
            || now.saturating_sub(self.flushed_at_ms.load(Relaxed)) >= FLUSH_MS
        {
            self.flushed_at_ms.store(now, Relaxed);
            self.flush();
        }
    }

    /// Adds the bytes not yet counted to the route's counter; true if
    /// there were any.
    pub fn flush(&self) -> bool {
        let total = self.total.load(Relaxed);
        let before = self.flushed.swap(total, Relaxed);
        if total > before {
            self.counter.inc_by(total - before);
        }
        total > before
    }

    /// [`Activity::flush`] from the copy's timer at `now_ms`; a flush that
    /// counted anything counts as one at `now_ms`.
    fn flush_pending(&self, now_ms: u64) -> bool {
        let flushed = self.flush();
        if flushed {
            self.flushed_at_ms.store(now_ms, Relaxed);
        }
        flushed
    }

    /// Records a buffer or pipe allocation.
    pub fn allocated(&self) {
        self.buffers.fetch_add(1, Relaxed);
    }

    fn total(&self) -> u64 {
        self.total.load(Relaxed)
    }
}

impl Drop for Activity<'_> {
    /// A copy cut short (the end of a shutdown drain drops it) still counts
    /// every byte it moved.
    fn drop(&mut self) {
        self.flush();
    }
}

/// Copies between `client` and `server` until both directions end, an error,
/// or `idle` without traffic; shaped by the chaos policies of `chaos` when
/// given: each direction runs the plain copy while no policy hits it, and
/// the shaped copy (`chaos::shape`) while some do, moving between the two
/// when the route's policies change (see [`chaos_direction`]).
pub async fn copy(
    client: &mut TcpStream,
    server: &mut TcpStream,
    idle: Duration,
    counters: CopyCounters<'_>,
    mode: CopyMode,
    chaos: Option<&LiveChaos<'_>>,
) -> CopyOutcome {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (buffers, ended) = (AtomicU32::new(0), AtomicU32::new(0));
    let up_activity = Activity::new(counters.upstream, &last, start, &buffers, &ended);
    let down_activity = Activity::new(counters.downstream, &last, start, &buffers, &ended);
    let both = async {
        let (mut client_rd, mut client_wr) = client.split();
        let (mut server_rd, mut server_wr) = server.split();
        if let Some(live) = chaos {
            // Built inside the join: a future moved into another still
            // holds its space in the async state, and every connection's
            // task is as big as that state.
            let r = match tokio::try_join!(
                chaos_direction(&mut client_rd, &mut server_wr, &up_activity, mode, live, true),
                chaos_direction(&mut server_rd, &mut client_wr, &down_activity, mode, live, false)
            ) {
                Ok(_) => Ok(None),
                Err(DirEnd::Abort(abort)) => Ok(Some(abort)),
                Err(DirEnd::Io(e)) => Err(e),
            };
            if let Ok(Some(Abort::Reset)) = r {
                // close(2) with a zero linger sends a RST instead of a FIN.
                for s in [client_rd.as_ref(), server_rd.as_ref()] {
                    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
                }
            }
            return r;
        }
        match mode {
            CopyMode::Userspace | CopyMode::Auto => {
                let auto = mode == CopyMode::Auto;
                tokio::try_join!(
                    pump(&mut client_rd, &mut server_wr, &up_activity, auto, None),
                    pump(&mut server_rd, &mut client_wr, &down_activity, auto, None)
                )
                .map(|_| None)
            }
            CopyMode::Splice => tokio::try_join!(
                super::splice::pump(client_rd.as_ref(), server_wr.as_ref(), &up_activity, None),
                super::splice::pump(server_rd.as_ref(), client_wr.as_ref(), &down_activity, None)
            )
            .map(|_| None),
        }
    };
    tokio::pin!(both);
    // One timer per connection serves the idle timeout and the byte
    // counters. While the connection is active (it moved or flushed bytes
    // in the last FLUSH_MS) it fires every FLUSH_MS and flushes; once a
    // second passes with neither, it waits for the idle deadline. A move
    // after that is more than FLUSH_MS from the last flush and flushes at
    // once, so no byte waits much longer than FLUSH_MS to be counted. A
    // connection shorter than FLUSH_MS never sees it fire.
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    let mut wake_ms = FLUSH_MS.min(idle_ms);
    let end = loop {
        let sleep = tokio::time::sleep_until(start + Duration::from_millis(wake_ms));
        tokio::pin!(sleep);
        tokio::select! {
            r = &mut both => break match r {
                Ok(None) => CopyEnd::Closed,
                Ok(Some(abort)) => CopyEnd::Chaos(abort),
                Err(e) => CopyEnd::Error(e),
            },
            () = idle_timer(sleep.as_mut()) => {
                let now = start.elapsed().as_millis() as u64;
                let flushed = up_activity.flush_pending(now) | down_activity.flush_pending(now);
                let last_ms = last.load(Relaxed);
                let idle_at = last_ms.saturating_add(idle_ms);
                if now >= idle_at {
                    break CopyEnd::IdleTimeout;
                }
                let active = flushed || now < last_ms + FLUSH_MS;
                wake_ms = if active { (now + FLUSH_MS).min(idle_at) } else { idle_at };
            }
        }
    };
    up_activity.flush();
    down_activity.flush();
    CopyOutcome {
        upstream: up_activity.total(),
        downstream: down_activity.total(),
        buffers: buffers.load(Relaxed),
        end,
    }
}

/// Waits for `sleep`, polling tokio's timer only when it has fired
/// (`is_elapsed`, one atomic load) or the task's waker changed
/// ([`super::lazy::poll_when`]): polling it on every wake-up of a busy
/// connection cost about 1% of ferryd's CPU per keep-alive request
/// (docs/benchmarks.md).
fn idle_timer(sleep: Pin<&mut Sleep>) -> impl Future<Output = ()> + '_ {
    super::lazy::poll_when(sleep, Sleep::is_elapsed)
}

/// Bytes of the small reads of a direction, into a buffer on the task: a
/// fresh socket can report readable before anything arrived, an idle
/// connection must not pay for a full buffer, and request/response traffic
/// of small messages never needs one.
const PROBE: usize = 256;

/// Copies `src` to `dst` until `src` ends, then shuts down `dst`'s sending
/// direction. Reads go through `AsyncRead`, which clears the socket's
/// readiness after a short read: the next wait parks at once instead of
/// paying a read that returns `EAGAIN`. With `auto`, a read that fills the
/// whole buffer hands the rest of the direction to splice(2).
///
/// With `generation`, a read that finds the route's chaos policies changed
/// returns its bytes unwritten ([`PumpEnd::Switch`]): one atomic load per
/// read, and nothing else, while no policy acts on the direction.
async fn pump(
    src: &mut ReadHalf<'_>,
    dst: &mut WriteHalf<'_>,
    activity: &Activity<'_>,
    auto: bool,
    generation: Option<Generation<'_>>,
) -> io::Result<PumpEnd> {
    // Small messages go through the probe. Only a read that fills it (more
    // is waiting) moves the direction to a full buffer: under connection
    // churn of small requests, two 64 KiB allocations per connection were
    // most of ferryd's time in malloc.
    let mut probe = [0u8; PROBE];
    let mut reads = 0u32;
    loop {
        let Some(n) = unless_moved(src.read(&mut probe), generation).await else {
            return Ok(PumpEnd::Switch(Vec::new()));
        };
        let n = n?;
        reads = reads.saturating_add(1);
        if n == 0 {
            if generation.is_some_and(|g| g.moved()) {
                // The end, under the new decision (a slow_close).
                return Ok(PumpEnd::Switch(Vec::new()));
            }
            return end_of_stream(dst.as_ref(), activity).map(|()| PumpEnd::Eof);
        }
        if generation.is_some_and(|g| g.moved()) {
            return Ok(PumpEnd::Switch(probe[..n].to_vec()));
        }
        let merged =
            send_before_fin(src.as_ref(), dst.as_ref(), &probe[..n], n < PROBE && reads <= FIN_LOOKUP_READS)?;
        dst.write_all(&probe[merged..n]).await?;
        activity.moved(n);
        if n == PROBE {
            break;
        }
    }
    activity.allocated();
    // Capacity, not length: `read_buf` fills spare capacity, so the buffer
    // is never zeroed (a 64 KiB memset per direction per connection) and
    // its untouched pages never become resident.
    let mut buf: Vec<u8> = Vec::with_capacity(BUF_SIZE);
    loop {
        buf.clear();
        let Some(n) = unless_moved(src.read_buf(&mut buf), generation).await else {
            return Ok(PumpEnd::Switch(Vec::new()));
        };
        let n = n?;
        reads = reads.saturating_add(1);
        if n == 0 {
            if generation.is_some_and(|g| g.moved()) {
                return Ok(PumpEnd::Switch(Vec::new()));
            }
            return end_of_stream(dst.as_ref(), activity).map(|()| PumpEnd::Eof);
        }
        if generation.is_some_and(|g| g.moved()) {
            return Ok(PumpEnd::Switch(buf));
        }
        let merged =
            send_before_fin(src.as_ref(), dst.as_ref(), &buf, n < BUF_SIZE && reads <= FIN_LOOKUP_READS)?;
        dst.write_all(&buf[merged..]).await?;
        activity.moved(n);
        if auto && n == BUF_SIZE {
            // Everything read so far is written, so the order holds. Boxed:
            // inline, the splice future would grow every connection's task
            // (idle ones too) by its size; this allocates once per bulk
            // direction instead.
            drop(buf);
            let spliced = super::splice::pump_leased(src.as_ref(), dst.as_ref(), activity, generation);
            return Box::pin(spliced).await;
        }
    }
}

/// A connection's chaos context: its route's policies as they change, who
/// it is, and the backend it reached.
#[derive(Debug)]
pub struct LiveChaos<'a> {
    pub cell: &'a ChaosCell,
    pub id: ConnId,
    pub backend: usize,
    pub metrics: &'a ChaosMetrics,
    /// Policies already counted as hitting the connection (by name and
    /// revision): each is counted once, by whichever direction meets it.
    pub counted: std::sync::Mutex<Vec<(String, u64)>>,
}

impl LiveChaos<'_> {
    /// The chains of the policies in effect now for one direction, and the
    /// generation they are of. Counts the policies that hit the connection
    /// for the first time.
    fn decide(&self, upstream: bool) -> (u64, Chain) {
        let generation = self.cell.generation();
        let mut hits = self.cell.with_current(|chaos| super::chaos::decide(chaos, self.id, self.backend));
        if !hits.is_empty() {
            let mut counted = self.counted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for h in &hits {
                let key = (h.policy.name.clone(), h.policy.revision);
                if !counted.contains(&key) {
                    h.policy.connections.inc();
                    counted.push(key);
                }
            }
        }
        (generation, Chain::new(&mut hits, upstream))
    }
}

/// One direction under chaos: the plain copy while no policy acts on it,
/// the shaped copy while some do, deciding again at each change of the
/// route's policies. The plain copy of a direction no policy acts on runs
/// inline; everything else ([`chaos_loop`]) is boxed once the direction
/// needs it, so that a connection without chaos carries none of it in its
/// task (every connection's task is as big as its largest future).
async fn chaos_direction(
    src: &mut ReadHalf<'_>,
    dst: &mut WriteHalf<'_>,
    activity: &Activity<'_>,
    mode: CopyMode,
    live: &LiveChaos<'_>,
    upstream: bool,
) -> Result<(), DirEnd> {
    // Only the generation and whether the chain is empty are kept across
    // the await: the chain itself is rebuilt by `chaos_loop` if needed.
    let (seen, plain) = {
        let (seen, chain) = live.decide(upstream);
        (seen, chain.is_empty())
    };
    let carry = if plain {
        let generation = Some(Generation { cell: live.cell, seen });
        match plain_pump(src, dst, activity, mode, generation).await? {
            PumpEnd::Eof => return Ok(()),
            PumpEnd::Abort(abort) => return Err(DirEnd::Abort(abort)),
            PumpEnd::Switch(bytes) => bytes,
            PumpEnd::Interrupted => Vec::new(),
        }
    } else {
        Vec::new()
    };
    Box::pin(chaos_loop(src, dst, activity, mode, live, upstream, carry)).await
}

/// [`chaos_direction`] from its first change on (or from its start when a
/// policy acts on it at once), with `carry`, the bytes read and not yet
/// written. A plain direction notices a change at each poll of a read and
/// after each read (the bytes of that read go first under the new
/// decision); a change pokes the route's connections awake, so one
/// waiting for data notices too. A shaped one is woken by the change,
/// writes what it holds and decides again.
async fn chaos_loop(
    src: &mut ReadHalf<'_>,
    dst: &mut WriteHalf<'_>,
    activity: &Activity<'_>,
    mode: CopyMode,
    live: &LiveChaos<'_>,
    upstream: bool,
    mut carry: Vec<u8>,
) -> Result<(), DirEnd> {
    loop {
        let watch = live.cell.watch();
        let (seen, chain) = live.decide(upstream);
        let end = if chain.is_empty() {
            if !carry.is_empty() {
                dst.write_all(&carry).await?;
                activity.moved(carry.len());
                carry.clear();
            }
            plain_pump(src, dst, activity, mode, Some(Generation { cell: live.cell, seen })).await?
        } else {
            let shaped = Shaped { chain, activity, watch: &watch, metrics: live.metrics };
            let carried = std::mem::take(&mut carry);
            let mut run = std::pin::pin!(watch.run());
            let mut shaped = std::pin::pin!(shape::pump(src, dst, shaped, carried));
            std::future::poll_fn(|cx| {
                let _ = run.as_mut().poll(cx);
                shaped.as_mut().poll(cx)
            })
            .await?
        };
        match end {
            PumpEnd::Eof => return Ok(()),
            PumpEnd::Abort(abort) => return Err(DirEnd::Abort(abort)),
            PumpEnd::Switch(bytes) => carry = bytes,
            PumpEnd::Interrupted => {}
        }
    }
}

/// The plain copy of one direction in `mode` (splice, or the userspace
/// pump, auto moving to splice on bulk).
async fn plain_pump(
    src: &mut ReadHalf<'_>,
    dst: &mut WriteHalf<'_>,
    activity: &Activity<'_>,
    mode: CopyMode,
    generation: Option<Generation<'_>>,
) -> io::Result<PumpEnd> {
    match mode {
        CopyMode::Splice => super::splice::pump(src.as_ref(), dst.as_ref(), activity, generation).await,
        _ => pump(src, dst, activity, mode == CopyMode::Auto, generation).await,
    }
}

/// Why a direction under chaos ended the connection: an I/O error, or a
/// toxic (ending the join at once, as an error does).
#[derive(Debug)]
enum DirEnd {
    Io(io::Error),
    Abort(Abort),
}

impl From<io::Error> for DirEnd {
    fn from(e: io::Error) -> Self {
        DirEnd::Io(e)
    }
}

/// Reads of a direction after which [`send_before_fin`] stops looking for
/// the peer's FIN. The lookup costs two lock operations in tokio's
/// readiness state when no FIN is there: a keep-alive connection would pay
/// them on every message (2-3% more CPU per request measured), for one
/// segment saved at its very end. Short connections, where that segment is
/// a fifth of the packets, end within their first reads.
const FIN_LOOKUP_READS: u32 = 4;

/// Sends the bytes one read of `src` returned ahead of the FIN, when that
/// FIN is due: the read drained `src` (`fin_lookup`: a short read, early
/// in the direction) and `src`'s peer has already sent its FIN, so the
/// shutdown or close of `dst` follows at once. The bytes go out with
/// `MSG_MORE`, and the kernel holds them until that FIN and sends both in
/// one segment (as HAProxy merges the FIN with the last segment): a
/// request/response exchange closed by the server costs one packet less
/// towards the client. The next read of `src` returns its end (or, on a
/// multi-thread runtime that saw the FIN after the read, the rest of the
/// bytes, whose write pushes these): nothing waits on the network while
/// they are held.
///
/// Returns how many bytes were sent; the caller writes the rest as usual.
/// One attempt, no wait: a send that would block (rare for the last bytes
/// of an exchange) leaves them to the plain write, without the merge. Being
/// synchronous, this adds nothing to the connection's future, which every
/// connection, idle ones too, holds for its whole life.
fn send_before_fin(src: &TcpStream, dst: &TcpStream, bytes: &[u8], fin_lookup: bool) -> io::Result<usize> {
    if !fin_lookup || !peer_sent_fin(src) {
        return Ok(0);
    }
    let flags = libc::MSG_MORE | libc::MSG_NOSIGNAL;
    match dst.try_io(Interest::WRITABLE, || socket2::SockRef::from(dst).send_with_flags(bytes, flags)) {
        Ok(sent) => Ok(sent),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

/// True when `s`'s readiness already records the peer's FIN (`EPOLLRDHUP`).
/// Reads the readiness the runtime stored; never waits, no system call.
fn peer_sent_fin(s: &TcpStream) -> bool {
    let mut ready = std::pin::pin!(s.ready(Interest::READABLE));
    let mut cx = Context::from_waker(Waker::noop());
    matches!(ready.as_mut().poll(&mut cx), Poll::Ready(Ok(r)) if r.is_read_closed())
}

/// A direction's source ended: count the rest and half-close `dst`, unless
/// the other direction has ended already. Then both sockets are about to be
/// closed, and close(2) sends the FIN itself (nothing is left unread on
/// either: both were read to their end), so the shutdown(2) is a wasted
/// syscall per connection.
pub(crate) fn end_of_stream(dst: &TcpStream, activity: &Activity<'_>) -> io::Result<()> {
    activity.flush();
    if activity.ended.fetch_add(1, Relaxed) >= 1 {
        return Ok(());
    }
    match socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write) {
        // The peer may already be gone; the other direction reports it.
        Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
        _ => Ok(()),
    }
}

/// Waits until `src` has data (or its end): a fresh socket can report
/// readable before anything arrived, and an idle connection must not pay
/// for a buffer (or a pipe). Costs one `MSG_PEEK` per direction.
pub(crate) async fn wait_for_data(src: &TcpStream) -> io::Result<()> {
    let mut probe = [0u8; 1];
    src.peek(&mut probe).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain copy (no chaos), as a peer hop runs it.
    async fn copy_bidirectional(
        client: &mut TcpStream,
        server: &mut TcpStream,
        idle: Duration,
        counters: CopyCounters<'_>,
        mode: CopyMode,
    ) -> CopyOutcome {
        copy(client, server, idle, counters, mode, None).await
    }
    use crate::dataplane::lazy::CountingWaker;
    use tokio::net::TcpListener;

    async fn pair() -> io::Result<(TcpStream, TcpStream)> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let a = TcpStream::connect(l.local_addr()?).await?;
        let (b, _) = l.accept().await?;
        Ok((a, b))
    }

    fn counters() -> (IntCounter, IntCounter) {
        (IntCounter::new("u", "u").expect("counter"), IntCounter::new("d", "d").expect("counter"))
    }

    const MODES: [CopyMode; 3] = [CopyMode::Auto, CopyMode::Userspace, CopyMode::Splice];

    #[tokio::test(start_paused = true)]
    async fn byte_counts_reach_the_shared_counter_in_batches() {
        let counter = IntCounter::new("b", "b").expect("counter");
        let (last, buffers, ended) = (AtomicU64::new(0), AtomicU32::new(0), AtomicU32::new(0));
        let a = Activity::new(&counter, &last, Instant::now(), &buffers, &ended);
        a.moved(100);
        assert_eq!(counter.get(), 0, "small amounts stay local");
        a.moved(FLUSH_BYTES as usize);
        assert_eq!(counter.get(), 100 + FLUSH_BYTES, "a full batch is flushed");
        a.moved(10);
        tokio::time::advance(Duration::from_millis(FLUSH_MS)).await;
        a.moved(1);
        assert_eq!(counter.get(), 111 + FLUSH_BYTES, "at most a second late");
        a.moved(5);
        a.flush();
        a.flush();
        assert_eq!(counter.get(), 116 + FLUSH_BYTES, "flush is exact and idempotent");
        assert_eq!(a.total(), 116 + FLUSH_BYTES);
    }

    /// Before, bytes short of a batch waited for the next move: a burst
    /// followed by silence showed nothing until the connection closed, and
    /// a copy cut short (end of a drain) never counted them.
    #[tokio::test]
    async fn a_burst_then_silence_is_counted_within_about_a_second_and_a_cut_copy_counts_all()
    -> io::Result<()> {
        for mode in MODES {
            let (mut client, mut c_side) = pair().await?;
            let (mut s_side, mut server) = pair().await?;
            let (u, d) = counters();
            let (up, down) = (u.clone(), d.clone());
            let (cut, cut_rx) = tokio::sync::oneshot::channel::<()>();
            let copy = tokio::spawn(async move {
                let counters = CopyCounters { upstream: &u, downstream: &d };
                tokio::select! {
                    _ = copy_bidirectional(&mut c_side, &mut s_side, Duration::from_secs(60), counters, mode) => {}
                    _ = cut_rx => {}
                }
            });
            client.write_all(&[7; 100]).await?;
            let mut got = [0u8; 100];
            server.read_exact(&mut got).await?;
            server.write_all(&[8; 30]).await?;
            client.read_exact(&mut got[..30]).await?;
            // Silence, the connection open: the counters catch up on their own.
            let t0 = Instant::now();
            while (up.get(), down.get()) != (100, 30) {
                assert!(
                    t0.elapsed() < Duration::from_millis(2 * FLUSH_MS + 500),
                    "{mode:?}: after a burst and silence the counters show {:?}",
                    (up.get(), down.get())
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // A few bytes, then the copy is dropped before any timer.
            client.write_all(&[9; 5]).await?;
            server.read_exact(&mut got[..5]).await?;
            let _ = cut.send(());
            copy.await.map_err(io::Error::other)?;
            assert_eq!((up.get(), down.get()), (105, 30), "{mode:?}: every byte counted after the cut");
        }
        Ok(())
    }

    #[tokio::test]
    async fn half_close_propagates_and_bytes_are_counted() -> io::Result<()> {
        for mode in MODES {
            half_close(mode).await?;
        }
        Ok(())
    }

    /// client <-> [c_side ~copy~ s_side] <-> server
    async fn half_close(mode: CopyMode) -> io::Result<()> {
        let (mut client, mut c_side) = pair().await?;
        let (mut s_side, mut server) = pair().await?;
        let (u, d) = counters();
        let copy = tokio::spawn(async move {
            let out = copy_bidirectional(
                &mut c_side,
                &mut s_side,
                Duration::from_secs(5),
                CopyCounters { upstream: &u, downstream: &d },
                mode,
            )
            .await;
            (out, u.get(), d.get())
        });
        client.write_all(b"hello").await?;
        client.shutdown().await?;
        let mut got = Vec::new();
        server.read_to_end(&mut got).await?; // EOF arrives: half-close went through
        assert_eq!(got, b"hello");
        // The other direction still flows after the client's half-close.
        server.write_all(b"world!").await?;
        server.shutdown().await?;
        let mut back = Vec::new();
        client.read_to_end(&mut back).await?;
        assert_eq!(back, b"world!");
        let (out, up, down) = copy.await.map_err(io::Error::other)?;
        assert!(matches!(out.end, CopyEnd::Closed), "{:?}", out.end);
        // Small messages stay in the probes; splice takes a pipe per direction.
        let buffers = if mode == CopyMode::Splice { 2 } else { 0 };
        assert_eq!(out.buffers, buffers, "{mode:?}: buffers for a small exchange");
        assert_eq!((out.upstream, out.downstream, up, down), (5, 6, 5, 6));
        Ok(())
    }

    /// Segments a socket has sent, from the kernel's `tcp_info` as ss(8)
    /// prints it (`segs_out:N`); `local` and `peer` name the socket.
    fn segs_out(local: std::net::SocketAddr, peer: std::net::SocketAddr) -> io::Result<u64> {
        let out = std::process::Command::new("ss")
            .args(["-tniH", "src", &local.to_string(), "dst", &peer.to_string()])
            .output()
            .map_err(|e| io::Error::other(format!("this test needs ss(8) from iproute2: {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .find_map(|w| w.strip_prefix("segs_out:"))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                io::Error::other(format!("no segs_out for {local} -> {peer} in ss output: {text:?}"))
            })
    }

    /// A response the server sends with its FIN (the usual end of an
    /// HTTP/1.0 or `Connection: close` exchange) reaches the client in one
    /// segment: the client-facing socket sends the ACK of the request and
    /// the response with the FIN, not a third segment for a bare FIN (its
    /// SYN-ACK is not in an accepted socket's count).
    #[tokio::test]
    async fn a_response_and_the_servers_fin_leave_in_one_segment() -> io::Result<()> {
        for mode in [CopyMode::Auto, CopyMode::Userspace] {
            let (mut client, mut c_side) = pair().await?;
            let (mut s_side, mut server) = pair().await?;
            let proxy_side = (c_side.local_addr()?, c_side.peer_addr()?);
            let (u, d) = counters();
            let copy = tokio::spawn(async move {
                let counters = CopyCounters { upstream: &u, downstream: &d };
                copy_bidirectional(&mut c_side, &mut s_side, Duration::from_secs(5), counters, mode).await
            });
            client.write_all(b"request").await?;
            let mut req = [0u8; 7];
            server.read_exact(&mut req).await?;
            // Data and FIN in one segment, so the copy sees both at once.
            let sent = socket2::SockRef::from(&server).send_with_flags(b"response", libc::MSG_MORE)?;
            assert_eq!(sent, 8);
            server.shutdown().await?;
            let mut got = Vec::new();
            client.read_to_end(&mut got).await?;
            assert_eq!(got, b"response");
            assert_eq!(segs_out(proxy_side.0, proxy_side.1)?, 2, "{mode:?}: the ACK, then response + FIN");
            drop(client);
            let out = copy.await.map_err(io::Error::other)?;
            assert!(matches!(out.end, CopyEnd::Closed), "{:?}", out.end);
        }
        Ok(())
    }

    /// A direction allocates its buffer only once a read fills the probe:
    /// 1,000 bytes one way take one buffer, 10 bytes the other way none.
    #[tokio::test]
    async fn only_a_direction_with_more_than_a_probe_allocates() -> io::Result<()> {
        let (mut client, mut c_side) = pair().await?;
        let (mut s_side, mut server) = pair().await?;
        let (u, d) = counters();
        let copy = tokio::spawn(async move {
            let counters = CopyCounters { upstream: &u, downstream: &d };
            copy_bidirectional(
                &mut c_side,
                &mut s_side,
                Duration::from_secs(5),
                counters,
                CopyMode::Userspace,
            )
            .await
        });
        let request: Vec<u8> = (0..1_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&request).await?;
        client.shutdown().await?;
        let mut got = Vec::new();
        server.read_to_end(&mut got).await?;
        assert_eq!(got, request);
        server.write_all(b"0123456789").await?;
        server.shutdown().await?;
        let mut back = Vec::new();
        client.read_to_end(&mut back).await?;
        assert_eq!(back, b"0123456789");
        let out = copy.await.map_err(io::Error::other)?;
        assert!(matches!(out.end, CopyEnd::Closed), "{:?}", out.end);
        assert_eq!(out.buffers, 1, "only the 1,000-byte direction needs a buffer");
        assert_eq!((out.upstream, out.downstream), (1_000, 10));
        Ok(())
    }

    /// Auto mode: a small exchange stays in user space, a bulk one moves to
    /// splice (its pipe is back in this thread's pool afterwards), and the
    /// bytes arrive intact either way.
    #[tokio::test]
    async fn auto_mode_splices_bulk_transfers_only() -> io::Result<()> {
        let before = super::super::splice::pooled();
        let small = relay_through(CopyMode::Auto, 1000).await?;
        assert_eq!(small, 1000);
        assert_eq!(super::super::splice::pooled(), before, "a small transfer must not use a pipe");
        let bulk = relay_through(CopyMode::Auto, 4 << 20).await?;
        assert_eq!(bulk, 4 << 20);
        assert!(super::super::splice::pooled() > before, "a bulk transfer must move to splice");
        Ok(())
    }

    /// Sends `len` patterned bytes client -> server through a copy; returns
    /// how many arrived in order.
    async fn relay_through(mode: CopyMode, len: usize) -> io::Result<usize> {
        let (mut client, mut c_side) = pair().await?;
        let (mut s_side, mut server) = pair().await?;
        let (u, d) = counters();
        let copy = async move {
            copy_bidirectional(
                &mut c_side,
                &mut s_side,
                Duration::from_secs(5),
                CopyCounters { upstream: &u, downstream: &d },
                mode,
            )
            .await
        };
        let send = async move {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            client.write_all(&data).await?;
            client.shutdown().await?;
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await?;
            io::Result::Ok(())
        };
        let receive = async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await?;
            server.shutdown().await?;
            let intact = got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8);
            io::Result::Ok(if intact { got.len() } else { 0 })
        };
        let (out, sent, got) = tokio::join!(copy, send, receive);
        sent?;
        assert!(matches!(out.end, CopyEnd::Closed), "{:?}", out.end);
        got
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_timer_wakes_the_latest_waker_once_due() {
        let ((a, waker_a), (b, waker_b)) = (CountingWaker::new(), CountingWaker::new());
        let sleep = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(sleep);
        let mut timer = std::pin::pin!(idle_timer(sleep.as_mut()));
        for _ in 0..3 {
            assert!(timer.as_mut().poll(&mut Context::from_waker(&waker_a)).is_pending());
        }
        // A new waker must reach the timer, or the deadline would wake the old one.
        assert!(timer.as_mut().poll(&mut Context::from_waker(&waker_b)).is_pending());
        tokio::time::advance(Duration::from_secs(4)).await;
        tokio::task::yield_now().await;
        assert_eq!((a.count(), b.count()), (0, 0), "not due yet");
        assert!(timer.as_mut().poll(&mut Context::from_waker(&waker_b)).is_pending());
        tokio::time::advance(Duration::from_secs(2)).await;
        tokio::task::yield_now().await;
        assert_eq!((a.count(), b.count()), (0, 1), "due: the latest waker, once");
        assert!(timer.as_mut().poll(&mut Context::from_waker(&waker_b)).is_ready());
    }

    #[tokio::test]
    async fn idle_timeout_ends_a_silent_copy() -> io::Result<()> {
        for mode in MODES {
            idle_timeout(mode).await?;
        }
        Ok(())
    }

    async fn idle_timeout(mode: CopyMode) -> io::Result<()> {
        let (_client, mut c_side) = pair().await?;
        let (mut s_side, _server) = pair().await?;
        let (u, d) = counters();
        let t0 = std::time::Instant::now();
        let out = copy_bidirectional(
            &mut c_side,
            &mut s_side,
            Duration::from_millis(200),
            CopyCounters { upstream: &u, downstream: &d },
            mode,
        )
        .await;
        assert!(matches!(out.end, CopyEnd::IdleTimeout), "{:?}", out.end);
        assert!(t0.elapsed() >= Duration::from_millis(200));
        assert_eq!(out.buffers, 0, "{mode:?}: an idle connection must not allocate buffers");
        Ok(())
    }

    #[tokio::test]
    async fn traffic_postpones_the_idle_timeout() -> io::Result<()> {
        for mode in MODES {
            traffic_postpones(mode).await?;
        }
        Ok(())
    }

    async fn traffic_postpones(mode: CopyMode) -> io::Result<()> {
        let (mut client, mut c_side) = pair().await?;
        let (mut s_side, mut server) = pair().await?;
        let (u, d) = counters();
        let copy = tokio::spawn(async move {
            copy_bidirectional(
                &mut c_side,
                &mut s_side,
                Duration::from_millis(300),
                CopyCounters { upstream: &u, downstream: &d },
                mode,
            )
            .await
        });
        let mut byte = [0u8; 1];
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.write_all(b"x").await?;
            server.read_exact(&mut byte).await?;
        }
        assert!(!copy.is_finished(), "600 ms of traffic every 100 ms must not hit a 300 ms idle timeout");
        let out = copy.await.map_err(io::Error::other)?;
        assert!(matches!(out.end, CopyEnd::IdleTimeout));
        assert_eq!(out.upstream, 6);
        Ok(())
    }
}
