//! The shaped copy of one direction: the toxics of the policies that hit a
//! connection, at Toxiproxy's semantics.
//!
//! A shaped direction reads a chunk (at most [`CHUNK`] bytes, one read)
//! into a ring of held bytes and schedules it: [`Chain::schedule`] turns
//! the chunk into slices, each with the instant it may be written. The
//! stages apply in the policies' order (by name), toxics in their order:
//! - latency: each chunk is released at its *receive time* + latency ±
//!   jitter, so delays pipeline rather than add up (Toxiproxy PR #47);
//!   order is kept (a chunk never overtakes the one before it); stacked
//!   latency toxics add.
//! - bandwidth: a token bucket one slice deep: slices of at most a
//!   hundredth of a second's worth, each released when its bytes have
//!   drained at `rate_kbps` × 1,000 bytes/s after the previous one's, so
//!   the rate holds exactly over any span longer than a slice (10 ms).
//! - slicer: the chunk cut into pieces of `average_size` ± `size_variation`
//!   bytes, `delay_us` apart.
//!
//! and, for the connection:
//! - timeout: the direction's data is dropped, and the connection closed
//!   `timeout_ms` after the toxic began to apply (0: never).
//! - reset_peer: `timeout_ms` after the direction's first chunk, both
//!   sockets are closed with `SO_LINGER` 0: a real RST.
//! - limit_data: exactly `bytes` pass (counted from when the policy began
//!   to apply), then the connection is closed.
//! - slow_close: the direction's end (FIN) is held `delay_ms`.
//!
//! The held bytes are bounded ([`Chain::hold_bytes`]): reading pauses when
//! the ring is full, as a real link's window does. The ring is allocated
//! when the source first has data (an idle connection holds none), at
//! 1 KiB, and doubles when it fills, up to the hold: small exchanges keep
//! a small one. Slices are
//! released up to a millisecond early (tokio's timer fires on whole
//! milliseconds, rounding up): the median release is on time.
//!
//! When the route's policies change, the direction stops reading, writes
//! what it holds at once (never dropped) and returns: the connection then
//! decides again.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ferry_client::chaos::ToxicKind;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::time::{Instant, Sleep};

use super::{ChangeWatch, ChaosMetrics, Hit, Prng};
use crate::dataplane::copy::{Abort, Activity, PumpEnd, end_of_stream};

/// Most bytes one read of a shaped direction takes (Toxiproxy's chunk).
pub const CHUNK: usize = 32 * 1024;
/// Bytes a shaped direction holds at most, unless a toxic needs more (see
/// [`Chain::hold_bytes`]).
pub const HOLD: usize = 256 * 1024;
/// The ring a shaped direction starts with; it doubles as needed, up to
/// its hold.
pub const RING_START: usize = 1024;
/// The most any shaped direction holds.
pub const MAX_HOLD: usize = 8 * 1024 * 1024;
/// Bytes per second a latency toxic's hold is sized for (10 Gbit/s).
pub const WINDOW_RATE: u64 = 1_250_000_000;
/// How early a slice may be released (see the module doc): tokio's timer
/// rounds a deadline up to its next millisecond tick and fires after it,
/// about a millisecond late on average, so aiming a millisecond early
/// centres releases on their target.
const EARLY: Duration = Duration::from_millis(1);

/// One stage of the schedule.
#[derive(Debug, Clone)]
enum Stage {
    Latency { latency: Duration, jitter: u64, rng: Prng, last: Option<Instant> },
    Bandwidth { bytes_per_s: u64, slice: usize, next_free: Option<Instant> },
    Slicer { average: u64, variation: u64, delay: Duration, rng: Prng, last: Option<Instant> },
}

/// The toxics of one direction of one connection.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    stages: Vec<Stage>,
    /// Drop data; close after this long (`None`: never).
    timeout: Option<Option<Duration>>,
    /// Reset this long after the first chunk.
    reset: Option<Duration>,
    /// Bytes that may still pass.
    limit: Option<u64>,
    /// Hold the end this long.
    slow_close: Duration,
    /// Scratch for [`Chain::schedule`], reused.
    a: Vec<(usize, Instant)>,
    b: Vec<(usize, Instant)>,
}

impl Chain {
    /// The chain of the toxics of `hits` acting on one direction
    /// (`upstream`: client to backend).
    pub fn new(hits: &mut [Hit], upstream: bool) -> Self {
        let mut chain = Chain::default();
        for hit in hits.iter_mut() {
            for t in &hit.policy.toxics {
                let on = if upstream { t.direction.upstream() } else { t.direction.downstream() };
                if !on {
                    continue;
                }
                // Each toxic draws from its own stream of the hit's PRNG.
                let rng = Prng::new(hit.rng.next_u64());
                match t.kind {
                    ToxicKind::Latency { latency_ms, jitter_ms } => chain.stages.push(Stage::Latency {
                        latency: Duration::from_millis(latency_ms),
                        jitter: jitter_ms.saturating_mul(1_000_000),
                        rng,
                        last: None,
                    }),
                    ToxicKind::Bandwidth { rate_kbps } => {
                        let bytes_per_s = rate_kbps.saturating_mul(1000).max(1);
                        let slice = (bytes_per_s / 100).clamp(1, CHUNK as u64) as usize;
                        chain.stages.push(Stage::Bandwidth { bytes_per_s, slice, next_free: None })
                    }
                    ToxicKind::Slicer { average_size, size_variation, delay_us } => {
                        chain.stages.push(Stage::Slicer {
                            average: average_size.max(1),
                            variation: size_variation,
                            delay: Duration::from_micros(delay_us),
                            rng,
                            last: None,
                        })
                    }
                    ToxicKind::Timeout { timeout_ms } => {
                        let after = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
                        chain.timeout = Some(match chain.timeout {
                            Some(Some(d)) => after.map(|a| a.min(d)).or(Some(d)),
                            _ => after,
                        });
                    }
                    ToxicKind::ResetPeer { timeout_ms } => {
                        let after = Duration::from_millis(timeout_ms);
                        chain.reset = Some(chain.reset.map_or(after, |d| d.min(after)));
                    }
                    ToxicKind::LimitData { bytes } => {
                        chain.limit = Some(chain.limit.map_or(bytes, |b| b.min(bytes)));
                    }
                    ToxicKind::SlowClose { delay_ms } => {
                        chain.slow_close += Duration::from_millis(delay_ms);
                    }
                    ToxicKind::Refuse {} | ToxicKind::ConnectDelay { .. } => {}
                }
            }
        }
        chain
    }

    /// Whether the chain does nothing (the plain copy serves the direction).
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
            && self.timeout.is_none()
            && self.reset.is_none()
            && self.limit.is_none()
            && self.slow_close.is_zero()
    }

    /// The most bytes the direction holds: [`HOLD`], or more when a toxic
    /// needs it (at most [`MAX_HOLD`]): 10 ms of the fastest bandwidth
    /// stage's rate, so that the reader keeps ahead of its releases; and
    /// [`WINDOW_RATE`] × the added latency, so that a delay caps a stream
    /// no lower than a real link of that delay would with Linux's default
    /// TCP windows (held bytes are the bytes in flight).
    pub fn hold_bytes(&self) -> usize {
        let mut bw = 0u64;
        let mut latency = Duration::ZERO;
        for s in &self.stages {
            match s {
                Stage::Bandwidth { bytes_per_s, .. } => bw = bw.max(bytes_per_s / 100),
                Stage::Latency { latency: l, jitter, .. } => latency += *l + Duration::from_nanos(*jitter),
                Stage::Slicer { .. } => {}
            }
        }
        let window = (latency.as_secs_f64() * WINDOW_RATE as f64) as u64;
        usize::try_from(bw.max(window)).unwrap_or(MAX_HOLD).clamp(HOLD, MAX_HOLD)
    }

    /// Schedules a chunk of `len` bytes received at `at`: appends its
    /// slices `(bytes, release instant)` to `out`, in order, and returns
    /// the delay added to its last byte.
    pub fn schedule(&mut self, len: usize, at: Instant, out: &mut VecDeque<(usize, Instant)>) -> Duration {
        self.a.clear();
        self.a.push((len, at));
        for stage in &mut self.stages {
            self.b.clear();
            match stage {
                Stage::Latency { latency, jitter, rng, last } => {
                    for &(n, t) in &self.a {
                        let mut delay = *latency;
                        if *jitter > 0 {
                            let j = rng.between(0, 2 * *jitter);
                            delay = if j >= *jitter {
                                delay + Duration::from_nanos(j - *jitter)
                            } else {
                                delay.saturating_sub(Duration::from_nanos(*jitter - j))
                            };
                        }
                        let release = last.map_or(t + delay, |l| l.max(t + delay));
                        *last = Some(release);
                        self.b.push((n, release));
                    }
                }
                Stage::Bandwidth { bytes_per_s, slice, next_free } => {
                    for &(n, t) in &self.a {
                        let mut left = n;
                        while left > 0 {
                            let part = left.min(*slice);
                            let start = next_free.map_or(t, |f| f.max(t));
                            let cost = Duration::from_nanos(
                                (part as u128 * 1_000_000_000 / *bytes_per_s as u128) as u64,
                            );
                            let done = start + cost;
                            *next_free = Some(done);
                            self.b.push((part, done));
                            left -= part;
                        }
                    }
                }
                Stage::Slicer { average, variation, delay, rng, last } => {
                    for &(n, t) in &self.a {
                        let mut left = n as u64;
                        let mut when = t;
                        while left > 0 {
                            let size =
                                rng.between(average.saturating_sub(*variation).max(1), *average + *variation);
                            let part = size.min(left);
                            let release = last.map_or(when, |l| l.max(when));
                            *last = Some(release);
                            self.b.push((part as usize, release));
                            left -= part;
                            when = release + *delay;
                        }
                    }
                }
            }
            std::mem::swap(&mut self.a, &mut self.b);
        }
        out.extend(self.a.iter().copied());
        self.a.last().map_or(Duration::ZERO, |(_, t)| t.saturating_duration_since(at))
    }
}

/// Bytes held by a shaped direction: a ring, filled by reads and drained
/// by writes in order.
#[derive(Debug, Default)]
struct Ring {
    buf: Box<[u8]>,
    head: usize,
    len: usize,
}

impl Ring {
    fn free(&self) -> usize {
        self.buf.len() - self.len
    }

    /// The contiguous free space after the held bytes.
    fn spare(&mut self) -> &mut [u8] {
        let cap = self.buf.len();
        if self.len == 0 {
            self.head = 0;
            return &mut self.buf[..];
        }
        let tail = (self.head + self.len) % cap;
        // Not wrapped: free up to the end (then from 0 to head); wrapped
        // or full: free up to head.
        let end = if tail > self.head { cap } else { self.head };
        &mut self.buf[tail..end]
    }

    /// The first held bytes, contiguous, at most `max`.
    fn front(&self, max: usize) -> &[u8] {
        let n = self.len.min(self.buf.len() - self.head).min(max);
        &self.buf[self.head..self.head + n]
    }

    /// Moves the held bytes, in order, to a new ring of `cap` bytes.
    fn grow(&mut self, cap: usize) {
        let mut buf = vec![0u8; cap].into_boxed_slice();
        let first = self.len.min(self.buf.len() - self.head);
        buf[..first].copy_from_slice(&self.buf[self.head..self.head + first]);
        buf[first..self.len].copy_from_slice(&self.buf[..self.len - first]);
        self.buf = buf;
        self.head = 0;
    }

    fn consume(&mut self, n: usize) {
        self.head = (self.head + n) % self.buf.len().max(1);
        self.len -= n;
        if self.len == 0 {
            self.head = 0;
        }
    }
}

/// What one shaped direction needs besides its sockets.
#[derive(Debug)]
pub struct Shaped<'a, 'b, 'w> {
    pub chain: Chain,
    pub activity: &'a Activity<'b>,
    pub watch: &'a ChangeWatch<'w>,
    pub metrics: &'a ChaosMetrics,
}

/// Copies `src` to `dst` through `shaped.chain` until `src` ends (then
/// shuts `dst`'s sending side, after any slow_close), the chain ends the
/// connection, or the route's policies change (everything held written).
/// `carried`: bytes read before, under the previous decision, and not yet
/// written: they go first, as if received now.
pub async fn pump(
    src: &mut ReadHalf<'_>,
    dst: &mut WriteHalf<'_>,
    shaped: Shaped<'_, '_, '_>,
    carried: Vec<u8>,
) -> io::Result<PumpEnd> {
    let start = Instant::now();
    let mut d = Direction {
        ring: Ring::default(),
        hold: shaped.chain.hold_bytes(),
        filled_spare: false,
        slices: VecDeque::new(),
        timeout_at: shaped.chain.timeout.flatten().map(|t| start + t),
        drop_data: shaped.chain.timeout.is_some(),
        reset_at: None,
        limit_left: shaped.chain.limit,
        eof: false,
        close_at: None,
        chain: shaped.chain,
        activity: shaped.activity,
        watch: shaped.watch,
        metrics: shaped.metrics,
    };
    if !carried.is_empty() {
        d.allocate(carried.len());
        let n = carried.len().min(d.ring.buf.len());
        d.ring.spare()[..n].copy_from_slice(&carried[..n]);
        d.received(n, start);
    }
    let mut sleep = std::pin::pin!(tokio::time::sleep_until(start + Duration::from_secs(86_400 * 365)));
    std::future::poll_fn(|cx| d.poll(cx, sleep.as_mut(), src, dst)).await
}

struct Direction<'a, 'b, 'w> {
    ring: Ring,
    hold: usize,
    /// The last read filled all the room the ring had.
    filled_spare: bool,
    slices: VecDeque<(usize, Instant)>,
    timeout_at: Option<Instant>,
    drop_data: bool,
    reset_at: Option<Instant>,
    limit_left: Option<u64>,
    eof: bool,
    close_at: Option<Instant>,
    chain: Chain,
    activity: &'a Activity<'b>,
    watch: &'a ChangeWatch<'w>,
    metrics: &'a ChaosMetrics,
}

impl Direction<'_, '_, '_> {
    /// Allocates the ring, [`RING_START`] bytes (or `at_least`), at most
    /// the hold.
    fn allocate(&mut self, at_least: usize) {
        if self.ring.buf.is_empty() {
            self.ring.buf =
                vec![0u8; RING_START.max(at_least).min(self.hold.max(at_least))].into_boxed_slice();
            self.activity.allocated();
        }
    }

    /// Doubles the ring, up to the hold, when it is full or the last read
    /// filled all the room it had (more is waiting): small exchanges keep
    /// a small ring, a bulk or delayed stream grows it in a few steps.
    fn grow_if_needed(&mut self) {
        let cap = self.ring.buf.len();
        if cap < self.hold && (self.ring.free() == 0 || self.filled_spare) {
            self.ring.grow((cap * 2).min(self.hold));
        }
        self.filled_spare = false;
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        mut sleep: Pin<&mut Sleep>,
        src: &mut ReadHalf<'_>,
        dst: &mut WriteHalf<'_>,
    ) -> Poll<io::Result<PumpEnd>> {
        loop {
            let now = Instant::now();
            if self.reset_at.is_some_and(|t| now >= t) {
                self.metrics.resets.inc();
                return Poll::Ready(Ok(PumpEnd::Abort(Abort::Reset)));
            }
            if self.timeout_at.is_some_and(|t| now >= t) {
                return Poll::Ready(Ok(PumpEnd::Abort(Abort::Close)));
            }
            let changed = self.watch.fired();
            // Write what is due (everything, once the policies changed).
            let mut write_blocked = false;
            while let Some(&(n, at)) = self.slices.front() {
                if !changed && at > now + EARLY {
                    break;
                }
                let bytes = self.ring.front(n);
                match Pin::new(&mut *dst).poll_write(cx, bytes) {
                    Poll::Pending => {
                        write_blocked = true;
                        break;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(w)) => {
                        self.ring.consume(w);
                        self.activity.moved(w);
                        if w == n {
                            self.slices.pop_front();
                        } else if let Some(front) = self.slices.front_mut() {
                            front.0 -= w;
                        }
                    }
                }
            }
            let idle = self.slices.is_empty();
            if idle && self.limit_left == Some(0) {
                return Poll::Ready(Ok(PumpEnd::Abort(Abort::Close)));
            }
            if idle && self.eof {
                match self.close_at {
                    None if !self.chain.slow_close.is_zero() => {
                        self.close_at = Some(now + self.chain.slow_close);
                        continue;
                    }
                    Some(t) if now < t => {}
                    _ => {
                        return Poll::Ready(
                            end_of_stream(dst.as_ref(), self.activity).map(|()| PumpEnd::Eof),
                        );
                    }
                }
            } else if idle && changed {
                return Poll::Ready(Ok(PumpEnd::Interrupted));
            }
            // Read while there is room.
            let mut progressed = false;
            if !self.eof && !changed && self.limit_left != Some(0) {
                if self.ring.buf.is_empty() {
                    // The ring waits for the first data (or end): an idle
                    // connection holds none.
                    match src.as_ref().poll_read_ready(cx) {
                        Poll::Pending => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(())) => self.allocate(0),
                    }
                }
                if !self.ring.buf.is_empty() {
                    self.grow_if_needed();
                }
                if !self.ring.buf.is_empty() && self.ring.free() > 0 {
                    let spare = self.ring.spare();
                    let take = spare.len().min(CHUNK);
                    let mut rb = ReadBuf::new(&mut spare[..take]);
                    match Pin::new(&mut *src).poll_read(cx, &mut rb) {
                        Poll::Pending => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(())) => {
                            progressed = true;
                            let n = rb.filled().len();
                            self.filled_spare = n == take && take < CHUNK;
                            if n == 0 {
                                self.eof = true;
                            } else {
                                self.received(n, now);
                            }
                        }
                    }
                }
            }
            if progressed {
                continue;
            }
            // Sleep until the next thing to do.
            let next_slice = (!write_blocked && !changed)
                .then(|| self.slices.front().map(|&(_, at)| at.checked_sub(EARLY).unwrap_or(at)))
                .flatten();
            let wake = [next_slice, self.reset_at, self.timeout_at, self.close_at.filter(|_| self.eof)]
                .into_iter()
                .flatten()
                .min();
            if let Some(at) = wake {
                if sleep.deadline() != at {
                    sleep.as_mut().reset(at);
                }
                if sleep.as_mut().poll(cx).is_ready() {
                    continue;
                }
            }
            return Poll::Pending;
        }
    }

    /// `n` bytes arrived at `now` at the ring's tail.
    fn received(&mut self, mut n: usize, now: Instant) {
        if self.reset_at.is_none()
            && let Some(after) = self.chain.reset
        {
            self.reset_at = Some(now + after);
        }
        if self.drop_data {
            return;
        }
        if let Some(left) = self.limit_left.as_mut() {
            // Exactly `limit` bytes pass; the rest is dropped.
            n = n.min(usize::try_from(*left).unwrap_or(usize::MAX));
            *left -= n as u64;
        }
        if n == 0 {
            return;
        }
        self.ring.len += n;
        let delay = self.chain.schedule(n, now, &mut self.slices);
        if !delay.is_zero() {
            self.metrics.delay.observe(delay.as_secs_f64());
        }
    }
}

#[cfg(test)]
#[path = "shape_tests.rs"]
mod tests;
