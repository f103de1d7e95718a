//! Batching on the leader: client writes that arrive while earlier ones are
//! still on their way into the log share one log entry ([`Batcher`]), and
//! linearizable reads that arrive while a read-index round runs share the
//! next round ([`ReadRounds`]).
//!
//! openraft 0.9 appends one entry per `client_write` and waits, inside
//! RaftCore, until the log store reports the entry flushed before it takes
//! the next one. One fsync per write caps a leader at about one write per
//! fsync however many clients wait. The batcher keeps at most
//! [`MAX_IN_FLIGHT`] proposals open; writes that arrive meanwhile queue, and
//! the next proposal takes all of them (up to [`MAX_BATCH`] requests and
//! [`MAX_BATCH_BYTES`]) as one [`Command::Batch`]. A lone write is proposed
//! as it is, so a single client sees no added step.
//!
//! Every request of a batch keeps its own request id, compare-and-set check,
//! config index and response ([`ClusterState::apply`]), so a batch changes
//! nothing a client can observe but throughput. A request whose caller gave
//! up before it was proposed is dropped, not proposed; one whose deadline
//! has passed when its batch is about to be proposed is answered
//! [`WriteError::DeadlineExceeded`] and left out ([`crate::cluster::deadline`]):
//! the caller that gave up may be on another node, and its answer (503) must
//! not be followed by the write taking effect later.
//!
//! A proposal is answered by its commit, as soon as this node steps down
//! ([`WriteError::LeaderChanged`], [`leadership`]), or at the write timeout
//! (the request timeout): [`WriteError::NoQuorum`] if the leader has heard
//! from no majority by then, [`WriteError::Timeout`] otherwise.
//!
//! [`ClusterState::apply`]: ferry_raft_store::ClusterState::apply

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferry_raft_store::types::{Raft, Vote};
use ferry_raft_store::{Command, Request, Response};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::{Instant, timeout};

use crate::cluster::leadership::{self, Term};
use crate::cluster::message::WriteError;
use crate::cluster::stats::{TransportStats, bump};

/// Proposals awaiting their commit at once. While this many are open, new
/// writes queue and go out together in the next one.
pub const MAX_IN_FLIGHT: usize = 2;
/// Most requests in one log entry.
pub const MAX_BATCH: usize = 256;
/// Most encoded request bytes in one log entry, far below the cluster
/// transport's frame limit, so that a batch always replicates in one frame.
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// What a write's caller waits for.
pub type WriteResult = Result<Response, WriteError>;

struct Pending {
    req: Request,
    len: usize,
    /// Not proposed after this.
    deadline: Instant,
    reply: oneshot::Sender<WriteResult>,
}

/// Hands writes to the batching task, which starts with the first write
/// (inside the runtime) and ends when the last clone of the handle is
/// dropped.
#[derive(Clone)]
pub struct Batcher {
    raft: Raft,
    limits: Limits,
    stats: Arc<TransportStats>,
    /// Refuse writes past their deadline (off only under the fault switch
    /// `no-write-deadline`).
    check_deadlines: bool,
    queue: Arc<OnceLock<mpsc::UnboundedSender<Pending>>>,
}

/// How long a proposal may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A proposal not committed within it is answered [`WriteError::Timeout`].
    pub write_timeout: Duration,
    /// A leader without a majority's acknowledgement for this long answers
    /// [`WriteError::NoQuorum`].
    pub quorum_timeout: Duration,
}

impl Batcher {
    /// A batcher proposing to `raft` within `limits`, counting its
    /// proposals in `stats`.
    pub fn new(raft: Raft, limits: Limits, stats: Arc<TransportStats>) -> Self {
        Self { raft, limits, stats, check_deadlines: true, queue: Arc::default() }
    }

    /// Whether writes past their deadline are refused (the default) or
    /// proposed anyway (the fault switch `no-write-deadline`).
    pub fn check_deadlines(mut self, check: bool) -> Self {
        self.check_deadlines = check;
        self
    }

    /// Proposes `req` (alone or with others) unless `deadline` passes
    /// before it is proposed, and waits for its response.
    pub async fn write(&self, req: Request, deadline: Instant) -> WriteResult {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let proposer = Proposer {
                raft: self.raft.clone(),
                limits: self.limits,
                stats: Arc::clone(&self.stats),
                check_deadlines: self.check_deadlines,
            };
            tokio::spawn(run(proposer, rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let len = req.encoded_len();
        queue
            .send(Pending { req, len, deadline, reply })
            .map_err(|_| WriteError::Fatal { message: "the write batcher stopped".into() })?;
        answer
            .await
            .unwrap_or_else(|_| Err(WriteError::Fatal { message: "the write batcher stopped".into() }))
    }
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// What proposing needs.
#[derive(Clone)]
struct Proposer {
    raft: Raft,
    limits: Limits,
    stats: Arc<TransportStats>,
    check_deadlines: bool,
}

/// Takes queued writes into proposals, at most [`MAX_IN_FLIGHT`] open.
async fn run(proposer: Proposer, mut queue: mpsc::UnboundedReceiver<Pending>) {
    let open = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut held: Option<Pending> = None;
    loop {
        let first = match held.take() {
            Some(p) => p,
            None => match queue.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        if first.reply.is_closed() {
            continue;
        }
        let Ok(permit) = Arc::clone(&open).acquire_owned().await else { return };
        let (batch, rest) = take_batch(first, &mut queue);
        held = rest;
        let proposer = proposer.clone();
        tokio::spawn(async move {
            proposer.propose(batch).await;
            drop(permit);
        });
    }
}

/// `first` and what is queued behind it that may share its entry. A
/// request that does not fit is returned to lead the next batch.
fn take_batch(
    first: Pending,
    queue: &mut mpsc::UnboundedReceiver<Pending>,
) -> (Vec<Pending>, Option<Pending>) {
    let mut bytes = first.len;
    let alone = !first.req.batchable();
    let mut batch = vec![first];
    if alone {
        return (batch, None);
    }
    while batch.len() < MAX_BATCH {
        let Ok(next) = queue.try_recv() else { break };
        if next.reply.is_closed() {
            continue;
        }
        if !next.req.batchable() || bytes.saturating_add(next.len) > MAX_BATCH_BYTES {
            return (batch, Some(next));
        }
        bytes += next.len;
        batch.push(next);
    }
    (batch, None)
}

/// Answers [`WriteError::DeadlineExceeded`] to every request of `batch`
/// whose deadline is before `now`, and returns the others.
fn drop_expired(batch: Vec<Pending>, now: Instant, stats: &TransportStats) -> Vec<Pending> {
    let (live, late): (Vec<_>, Vec<_>) = batch.into_iter().partition(|p| p.deadline >= now);
    for p in late {
        bump(&stats.writes_past_deadline);
        let _ = p.reply.send(Err(WriteError::deadline_exceeded(now - p.deadline)));
    }
    live
}

/// Answers [`WriteError::NoQuorum`] (not proposed) to every request of
/// `batch` when this leader has had no majority's acknowledgement for
/// `lost` ms, and returns the batch otherwise. Proposed, such a write would
/// wait in the leader's log for the majority and commit whenever it came
/// back, long after its deadline: the partition suite saw two writes take
/// effect 27 s after theirs, appended by a leader that had had no majority
/// for two minutes. Refused, it is definitely not applied.
fn refuse_without_quorum(batch: Vec<Pending>, lost: Option<u64>, stats: &TransportStats) -> Vec<Pending> {
    let Some(since_ms) = lost else { return batch };
    for p in batch {
        bump(&stats.writes_without_quorum);
        let _ = p.reply.send(Err(WriteError::NoQuorum { since_ms, proposed: false }));
    }
    Vec::new()
}

impl Proposer {
    /// Proposes `batch` as one entry and answers every caller.
    async fn propose(&self, batch: Vec<Pending>) {
        let (raft, limits, stats) = (&self.raft, self.limits, &*self.stats);
        // Right before proposing: nothing after this waits but Raft's own
        // queue (a proposal is handed to RaftCore at once).
        let mut batch = if self.check_deadlines { drop_expired(batch, Instant::now(), stats) } else { batch };
        if self.check_deadlines {
            let lost =
                leadership::quorum_lost(&raft.metrics().borrow(), Duration::ZERO, limits.quorum_timeout);
            batch = refuse_without_quorum(batch, lost, stats);
        }
        if batch.is_empty() {
            return;
        }
        propose(raft, &mut batch, limits, stats).await;
    }
}

/// Proposes `batch` as one entry and answers every caller.
async fn propose(raft: &Raft, batch: &mut Vec<Pending>, limits: Limits, stats: &TransportStats) {
    let req = if batch.len() == 1 {
        batch[0].req.clone()
    } else {
        let requests = batch.iter().map(|p| p.req.clone()).collect();
        Request::new(Command::Batch { requests })
    };
    // Not the leader: openraft answers ForwardToLeader at once, nothing to watch.
    let term = Term::current(&raft.metrics().borrow());
    let requests = batch.len() as u64;
    let started = tokio::time::Instant::now();
    let commit = async {
        match timeout(limits.write_timeout, raft.client_write(req)).await {
            Ok(Ok(resp)) => {
                bump(&stats.write_proposals);
                stats.proposed_writes.fetch_add(requests, std::sync::atomic::Ordering::Relaxed);
                Ok(resp.data)
            }
            Ok(Err(e)) => Err(WriteError::from(e)),
            Err(_) => Err(leadership::timed_out(
                raft,
                limits.write_timeout,
                started.elapsed(),
                limits.quorum_timeout,
            )),
        }
    };
    let result = match term {
        None => commit.await,
        Some(term) => tokio::select! {
            biased;
            r = commit => r,
            e = leadership::stepped_down(raft, term) => Err(e),
        },
    };
    match result {
        Ok(data) if batch.len() == 1 => {
            let _ = batch.remove(0).reply.send(Ok(data));
        }
        Ok(Response::Batch { responses }) if responses.len() == batch.len() => {
            for (p, r) in batch.drain(..).zip(responses) {
                let _ = p.reply.send(Ok(r));
            }
        }
        Ok(other) => {
            // The state machine answers a batch with one response per
            // request; anything else is a bug, and the outcome unknown.
            tracing::error!(response = ?other, requests = batch.len(), "unexpected response to a write batch");
            let e = WriteError::Fatal { message: "unexpected response to a write batch".into() };
            for p in batch.drain(..) {
                let _ = p.reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for p in batch.drain(..) {
                let _ = p.reply.send(Err(e.clone()));
            }
        }
    }
}

/// What a read's caller waits for: the index it may read at.
type ReadResult = Result<u64, WriteError>;

/// Read-index rounds shared by concurrent reads, as etcd's
/// `linearizableReadLoop` does: one task runs one round at a time (confirm
/// leadership with a quorum, then wait for the local apply) and answers
/// every read that was queued before the round began. A read that arrives
/// during a round waits for the next, so its round always starts after it
/// arrived, which is what makes the read linearizable. Without it every
/// read paid its own heartbeat round to the followers.
#[derive(Clone)]
pub struct ReadRounds {
    raft: Raft,
    limits: Limits,
    stats: Arc<TransportStats>,
    /// The leadership (vote) this node last served a read under, and its
    /// log's last index then: see [`read_round`].
    floor: Arc<std::sync::Mutex<Option<(Vote, u64)>>>,
    queue: Arc<OnceLock<mpsc::UnboundedSender<oneshot::Sender<ReadResult>>>>,
}

impl ReadRounds {
    /// Rounds on `raft`, each bounded by the write timeout of `limits` and
    /// ended early if this node steps down ([`leadership`]), counted in
    /// `stats`.
    pub fn new(raft: Raft, limits: Limits, stats: Arc<TransportStats>) -> Self {
        Self { raft, limits, stats, floor: Arc::default(), queue: Arc::default() }
    }

    /// Waits for the next round and returns its read index.
    pub async fn read_index(&self) -> ReadResult {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let (raft, floor, stats) = (self.raft.clone(), Arc::clone(&self.floor), Arc::clone(&self.stats));
            tokio::spawn(run_reads(raft, floor, stats, rx, self.limits));
            tx
        });
        let (reply, answer) = oneshot::channel();
        queue.send(reply).map_err(|_| WriteError::Fatal { message: "the read loop stopped".into() })?;
        answer.await.unwrap_or_else(|_| Err(WriteError::Fatal { message: "the read loop stopped".into() }))
    }
}

impl std::fmt::Debug for ReadRounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadRounds").field("limits", &self.limits).finish_non_exhaustive()
    }
}

async fn run_reads(
    raft: Raft,
    floor: Arc<std::sync::Mutex<Option<(Vote, u64)>>>,
    stats: Arc<TransportStats>,
    mut queue: mpsc::UnboundedReceiver<oneshot::Sender<ReadResult>>,
    limits: Limits,
) {
    let mut waiting = Vec::new();
    while queue.recv_many(&mut waiting, usize::MAX).await > 0 {
        waiting.retain(|w: &oneshot::Sender<ReadResult>| !w.is_closed());
        if waiting.is_empty() {
            continue;
        }
        bump(&stats.read_rounds);
        stats.round_reads.fetch_add(waiting.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let round = async {
            match timeout(limits.write_timeout, read_round(&raft, &floor)).await {
                Ok(r) => r,
                Err(_) => {
                    let waited = started.elapsed();
                    Err(leadership::timed_out(&raft, limits.write_timeout, waited, limits.quorum_timeout))
                }
            }
        };
        // (A `let`: the metrics guard must not live across the await.)
        let term = Term::current(&raft.metrics().borrow());
        let result = match term {
            // Not the leader: openraft answers ForwardToLeader at once.
            None => round.await,
            Some(term) => tokio::select! {
                biased;
                r = round => r,
                e = leadership::stepped_down(&raft, term) => Err(e),
            },
        };
        for w in waiting.drain(..) {
            let _ = w.send(result.clone());
        }
    }
}

/// One round: the index a linearizable read must wait for, once this node
/// has applied it.
///
/// openraft's read index is its commit index (or the leader's first
/// entry). A leader that restarts with a committed vote of its own is
/// restored as leader without a new entry, and with the commit index of its
/// on-disk hint, which may lag entries it had committed and answered before
/// the crash. So the index is also at least the last log index the first
/// read of this leadership saw: those entries are the leader's own and
/// commit as soon as followers acknowledge them. (Found by
/// `acknowledged_writes_survive_kill_9_of_every_node`: a read after a full
/// restart missed the last two acknowledged writes.)
async fn read_round(raft: &Raft, floor: &std::sync::Mutex<Option<(Vote, u64)>>) -> ReadResult {
    let log_id = raft
        .ensure_linearizable()
        .await
        .map_err(|e| leadership::with_quorum_age(WriteError::from(e), raft))?;
    let index = log_id.map_or(0, |l| l.index).max(read_floor(raft, floor));
    raft.wait(None)
        .applied_index_at_least(Some(index), "read index")
        .await
        .map_err(|e| WriteError::Fatal { message: e.to_string() })?;
    Ok(index)
}

/// The last log index when this node first served a read under its current
/// vote.
fn read_floor(raft: &Raft, floor: &std::sync::Mutex<Option<(Vote, u64)>>) -> u64 {
    let m = raft.metrics().borrow().clone();
    let mut floor = floor.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match *floor {
        Some((vote, index)) if vote == m.vote => index,
        _ => {
            let index = m.last_log_index.unwrap_or(0);
            *floor = Some((m.vote, index));
            index
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pending(id: u128, deadline: Instant) -> (Pending, oneshot::Receiver<WriteResult>) {
        let req = Request::with_id(id, Command::DeleteRoute { name: "r".into(), cas: None });
        let (reply, answer) = oneshot::channel();
        (Pending { len: req.encoded_len(), req, deadline, reply }, answer)
    }

    /// Requests whose deadline passed while they queued are answered
    /// `DeadlineExceeded` (and counted); the others go on, in order.
    #[tokio::test(start_paused = true)]
    async fn requests_past_their_deadline_leave_the_batch_with_an_answer() {
        let now = Instant::now();
        let (a, _a) = pending(1, now + Duration::from_millis(5));
        let (b, mut b_answer) = pending(2, now - Duration::from_millis(30));
        let (c, _c) = pending(3, now);
        let stats = TransportStats::default();
        let live = drop_expired(vec![a, b, c], now, &stats);
        let ids: Vec<_> = live.iter().map(|p| p.req.id).collect();
        assert_eq!(ids, [Some(1), Some(3)]);
        assert_eq!(b_answer.try_recv().ok(), Some(Err(WriteError::DeadlineExceeded { late_ms: 30 })));
        assert_eq!(stats.writes_past_deadline.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    /// A leader without a majority's acknowledgement answers every request
    /// `NoQuorum`, not proposed (and counts them); with one, the batch goes on.
    #[tokio::test(start_paused = true)]
    async fn a_leader_without_a_majority_proposes_nothing() {
        let now = Instant::now();
        let stats = TransportStats::default();
        let (a, _a) = pending(1, now);
        assert_eq!(refuse_without_quorum(vec![a], None, &stats).len(), 1);
        let (a, mut a_answer) = pending(1, now);
        let (b, mut b_answer) = pending(2, now);
        assert!(refuse_without_quorum(vec![a, b], Some(900), &stats).is_empty());
        for answer in [&mut a_answer, &mut b_answer] {
            assert_eq!(
                answer.try_recv().ok(),
                Some(Err(WriteError::NoQuorum { since_ms: 900, proposed: false }))
            );
        }
        assert_eq!(stats.writes_without_quorum.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
