//! Issue 22's zombie write, scripted on three real nodes in the suite's
//! network namespaces (needs root, `ip` and `iptables`; skipped, saying so,
//! otherwise): isolate a follower F, write 7 through F (it times out: 503),
//! write 2 through the leader (acknowledged), heal, and watch the register
//! for 30 s. The newer value must stay. Run again with the fault switch
//! `no-write-deadline` (the behaviour before the fix), the write of 7 takes
//! effect after the heal: the test shows it still catches the zombie. The
//! script records its own history (writes with their deadlines, every read)
//! and the suite's `bounded_indeterminacy` checker judges it: valid on the
//! fixed build, invalid under the switch — the proof that the checker can
//! fail on a real late write.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferry_client::http::{AdminClient, WriteOpts};
use jepsen_lite::checker::{Validity, bounded_indeterminacy};
use jepsen_lite::history::{Event, Op, RunClock};
use jepsen_lite::net::{Grudge, Net};
use jepsen_lite::operation::History;
use jepsen_lite::procs::{NODE_REQUEST_TIMEOUT, NodeSpec, Procs};
use jepsen_lite::workload::{self, register};
use tokio::time::{Instant, sleep};

/// How long the register is watched after the heal: the kernel retransmits
/// a stuck frame with exponential backoff (0.2 s doubling), so one sent at
/// the partition's start is retried about 6 s and 12.6 s after it.
const WATCH: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

fn ferryd() -> PathBuf {
    let me = PathBuf::from(env!("CARGO_BIN_EXE_jepsen-lite"));
    me.with_file_name("ferryd")
}

/// What one scripted run saw.
#[derive(Debug)]
struct Seen {
    /// The answer to the write of 7 through the isolated follower.
    zombie_answer: String,
    /// Every value the register took after the newer write was
    /// acknowledged, in order, without repeats, each with when it was
    /// first read (ms after the heal).
    changes: Vec<(i64, u128)>,
    /// The `bounded_indeterminacy` checker's verdict on the script's own
    /// history (the writes, with the deadline of the one that timed out,
    /// and every read).
    verdict: Validity,
}

impl Seen {
    fn values(&self) -> Vec<i64> {
        self.changes.iter().map(|c| c.0).collect()
    }
}

#[test]
fn a_write_that_timed_out_in_a_partition_does_not_take_effect_after_the_heal() -> Result<()> {
    if let Err(e) = jepsen_lite::net::check_prereqs() {
        eprintln!("skipped: {e}");
        return Ok(());
    }
    if !ferryd().exists() {
        eprintln!("skipped: {} is not built", ferryd().display());
        return Ok(());
    }
    let fixed = scripted(None)?;
    eprintln!("fixed build: {fixed:?}");
    assert!(fixed.zombie_answer.contains("503"), "the write through the isolated node: {fixed:?}");
    assert_eq!(fixed.values(), [2], "the timed-out write took effect after the heal: {fixed:?}");
    assert_eq!(fixed.verdict, Validity::Valid, "{fixed:?}");

    let faulty = scripted(Some("no-write-deadline"))?;
    eprintln!("no-write-deadline: {faulty:?}");
    assert!(faulty.zombie_answer.contains("503"), "{faulty:?}");
    assert_eq!(
        faulty.values(),
        [2, 7],
        "under the fault switch the zombie write should come back: {faulty:?}"
    );
    // The checker the suite runs finds it in the recorded history.
    assert_eq!(faulty.verdict, Validity::Invalid, "bounded_indeterminacy missed the late write: {faulty:?}");
    Ok(())
}

/// One run of the script, with the fault switch set to `fault`.
fn scripted(fault: Option<&str>) -> Result<Seen> {
    let dir = tempfile::tempdir()?;
    let mut net = Net::create(3)?;
    net.enter_bridge()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut env = vec![("RUST_LOG".to_string(), "warn".to_string())];
    if let Some(f) = fault {
        env.push(("FERRYD_UNSAFE_FAULT".to_string(), f.to_string()));
    }
    let spec = NodeSpec {
        ferryd: ferryd(),
        dir: dir.path().to_owned(),
        bootstrap_expect: 3,
        seeds: vec![1, 2, 3],
        env,
        config: None,
    };
    let mut procs = Procs::default();
    for i in 1..=3 {
        procs.start(&net, &spec, i, true)?;
    }
    let seen = runtime.block_on(script(&net));
    procs.stop_all(Duration::from_secs(5));
    net.destroy();
    seen.with_context(|| {
        let logs: Vec<String> = (1..=3)
            .filter_map(|i| procs.log(&spec, i))
            .map(|p| std::fs::read_to_string(&p).unwrap_or_default())
            .collect();
        format!("node logs:\n{}", logs.join("\n---\n"))
    })
}

/// The script's history, for the checker: one process per operation kind.
struct Recorded {
    clock: RunClock,
    events: Vec<Event>,
}

impl Recorded {
    fn invoke(&mut self, process: u32, op: Op) -> u64 {
        let now = self.clock.now_ns();
        let mut e = Event::invoke(process, "n", op, now);
        if matches!(e.op, Op::Write(_)) {
            e = e.with_deadline(now + u64::try_from(NODE_REQUEST_TIMEOUT.as_nanos()).unwrap_or(u64::MAX));
        }
        self.events.push(e);
        now
    }

    fn complete(&mut self, process: u32, op: Op, outcome: Result<(), String>, unknown: bool) {
        let now = self.clock.now_ns();
        self.events.push(match outcome {
            Ok(()) => Event::ok(process, "n", op, now),
            Err(e) if unknown => Event::info(process, "n", op, now, &e),
            Err(e) => Event::fail(process, "n", op, now, &e),
        });
    }
}

async fn script(net: &Net) -> Result<Seen> {
    let mut rec = Recorded { clock: RunClock::start(), events: vec![] };
    let leader = agreed_leader().await?;
    let follower = (1..=3).find(|&i| i != leader).context("no follower")?;
    let other = (1..=3).find(|&i| i != leader && i != follower).context("no third node")?;
    retry(|| async {
        workload::admin(leader).put_route(&register::spec(0, register::INITIAL), WriteOpts::default()).await
    })
    .await?;
    // A write through the follower first: its connection to the leader is
    // then open and pooled, as in a running cluster.
    rec.invoke(1, Op::Write(1));
    retry(|| put(follower, 1)).await?;
    rec.complete(1, Op::Write(1), Ok(()), false);

    let grudge: Grudge =
        [(follower, [leader, other].into()), (leader, [follower].into()), (other, [follower].into())].into();
    net.partition(&grudge)?;
    // The follower still names the leader: it forwards, and times out.
    let slow = workload::admin(follower).with_timeout(Duration::from_secs(15));
    rec.invoke(2, Op::Write(7));
    let zombie_answer = match slow.put_route(&register::spec(0, 7), WriteOpts::default()).await {
        Ok(r) => bail!("the write through the isolated node was acknowledged: {r:?}"),
        Err(e) => e.to_string(),
    };
    rec.complete(2, Op::Write(7), Err(zombie_answer.clone()), true);
    rec.invoke(3, Op::Write(2));
    retry(|| put(leader, 2)).await?;
    rec.complete(3, Op::Write(2), Ok(()), false);
    net.heal()?;

    let mut changes: Vec<(i64, u128)> = vec![];
    let healed = Instant::now();
    let end = healed + WATCH;
    while Instant::now() < end {
        rec.invoke(4, Op::Read(None));
        match workload::admin(leader).route(&register::route_name(0), false).await {
            Ok(r) => {
                let v = register::value_of(&r.value);
                rec.complete(4, Op::Read(Some(v)), Ok(()), false);
                if changes.last().map(|c| c.0) != Some(v) {
                    changes.push((v, healed.elapsed().as_millis()));
                }
            }
            Err(e) => rec.complete(4, Op::Read(None), Err(e.to_string()), false),
        }
        sleep(POLL).await;
    }
    let history = History::from_events(rec.events)?;
    let verdict = bounded_indeterminacy::check(&history).valid;
    Ok(Seen { zombie_answer, changes, verdict })
}

/// Writes `value` to register 0 (the port of its backend's address).
async fn put(node: usize, value: i64) -> Result<(), ferry_client::http::ClientError> {
    workload::admin(node).put_route(&register::spec(0, value), WriteOpts::default()).await.map(|_| ())
}

/// Runs `op` until it succeeds, for at most 30 s.
async fn retry<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    op: impl Fn() -> F,
) -> Result<T> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= end => bail!("gave up after 30 s: {e}"),
            Err(_) => sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The node (index) every node names as the leader, once they agree (at
/// most 90 s). Node ids are not indexes: each node reports its own.
async fn agreed_leader() -> Result<usize> {
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        let mut ids = vec![];
        let mut named = vec![];
        for i in 1..=3 {
            let raft = admin_status(&workload::admin(i)).await.and_then(|s| s.raft);
            ids.push(raft.as_ref().map(|r| r.node_id));
            named.push(raft.and_then(|r| r.leader_id));
        }
        if let [Some(a), Some(b), Some(c)] = named[..]
            && a == b
            && b == c
            && let Some(index) = ids.iter().position(|id| *id == Some(a))
        {
            return Ok(index + 1);
        }
        if Instant::now() >= end {
            bail!("the nodes did not agree on a leader within 90 s: {named:?}");
        }
        sleep(Duration::from_millis(250)).await;
    }
}

async fn admin_status(client: &AdminClient) -> Option<ferry_client::api::Status> {
    client.status().await.ok().map(|s| s.value)
}
