//! Real `ferryd` processes in a gossip cluster, stopped and restarted the
//! ways operators do it: SIGTERM keeps a node's seat (every node stopped,
//! any two restarted; a rolling restart under writes), `POST /v1/leave` gives
//! it up cleanly (no WARN line, autopilot does not add it back), a removed
//! leader restarted alone does not name itself leader, an isolated
//! leader says it has no quorum and logs each lost peer once, and a voter
//! that autopilot removed while it was unreachable (SIGSTOP) is a voter
//! again within seconds of answering.
//!
//! Node i runs on 127.0.N.i with the default ports (gossip 7946, cluster
//! 7947, admin 7948) and a config file; N differs per test. Every process is
//! spawned by the test and stopped by its own PID.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::{Ferryd, IO_TIMEOUT, TempDir, http, poll};
use ferry_client::api::{GossipState, Member, RaftMembership, Role, Status};
use nix::sys::signal::Signal;

/// Longest wait for a cluster to form or a change to settle.
const SETTLE: Duration = Duration::from_secs(30);

/// A distinct 127.0.N.0/24 per test, away from the other process tests'.
fn next_net() -> u8 {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = std::process::id().wrapping_mul(13).wrapping_add(SEQ.fetch_add(1, Relaxed) * 59 + 17);
    (1 + n % 250) as u8
}

fn ip(net: u8, i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, net, i))
}

/// Three nodes n1..n3; `procs[&i]` is node i's current process. Processes
/// are killed before the dir is removed (field order).
struct Nodes {
    procs: BTreeMap<u8, Ferryd>,
    runs: BTreeMap<u8, u32>,
    net: u8,
    dir: TempDir,
}

/// Settings that differ between tests.
#[derive(Debug, Clone, Copy)]
struct Opts {
    leave_on_terminate: bool,
    dead_node_timeout_ms: u64,
}

impl Default for Opts {
    fn default() -> Self {
        Self { leave_on_terminate: false, dead_node_timeout_ms: 60_000 }
    }
}

impl Nodes {
    /// Writes the configs and starts n1..n3 (bootstrap_expect = 3), and
    /// waits until all three are voters, alive and named everywhere.
    async fn start(tag: &str, opts: Opts) -> Result<Self> {
        let net = (0..20)
            .map(|_| next_net())
            .find(|&net| {
                (1..=3u8).all(|i| {
                    [7946, 7947, 7948]
                        .iter()
                        .all(|&p| std::net::TcpListener::bind(SocketAddr::new(ip(net, i), p)).is_ok())
                })
            })
            .context("no free 127.0.N.0/24 for the test cluster")?;
        let mut n = Self { procs: BTreeMap::new(), runs: BTreeMap::new(), net, dir: TempDir::new(tag)? };
        let seeds: Vec<String> = (1..=3).map(|i| format!("\"{}\"", n.ip(i))).collect();
        for i in 1..=3u8 {
            let ip = n.ip(i);
            let text = format!(
                r#"[node]
name = "n{i}"
bind_addr = "{ip}"
data_dir = "{data}"
drain_timeout_ms = 500
workers = 1

[admin]
addr = "{ip}:7948"
request_timeout_ms = 2000

[cluster]
addr = "{ip}:7947"
heartbeat_ms = 50
election_timeout_min_ms = 200
election_timeout_max_ms = 400
leave_on_terminate = {leave}
dead_node_timeout_ms = {dead}

[gossip]
profile = "fast"
bootstrap_expect = 3
join = [{seeds}]
"#,
                data = n.dir.file(&format!("n{i}-data")).display(),
                leave = opts.leave_on_terminate,
                dead = opts.dead_node_timeout_ms,
                seeds = seeds.join(", "),
            );
            common::write_config(&n.dir.file(&format!("n{i}.toml")), &text)?;
        }
        for i in 1..=3 {
            n.spawn(i)?;
        }
        n.wait_voters(&[1, 2, 3], &[1, 2, 3]).await?;
        Ok(n)
    }

    fn ip(&self, i: u8) -> IpAddr {
        ip(self.net, i)
    }

    fn admin(&self, i: u8) -> SocketAddr {
        SocketAddr::new(self.ip(i), 7948)
    }

    /// Starts node `i` from its config file and data dir.
    fn spawn(&mut self, i: u8) -> Result<()> {
        ensure!(!self.procs.get_mut(&i).is_some_and(|p| matches!(p.exited(), Ok(None))), "n{i} is running");
        let run = self.runs.entry(i).or_insert(0);
        *run += 1;
        let config = self.dir.file(&format!("n{i}.toml"));
        let config = config.to_str().context("temp path is not UTF-8")?.to_string();
        let p = Ferryd::spawn(&self.dir, &format!("n{i}-run{run}"), &["--config", &config])?;
        self.procs.insert(i, p);
        Ok(())
    }

    fn proc(&mut self, i: u8) -> Result<&mut Ferryd> {
        self.procs.get_mut(&i).with_context(|| format!("n{i} was never started"))
    }

    /// Node `i`'s stderr, every run.
    fn logs(&self, i: u8) -> String {
        let runs = self.runs.get(&i).copied().unwrap_or(0);
        (1..=runs)
            .map(|r| {
                std::fs::read_to_string(self.dir.file(&format!("n{i}-run{r}.stderr"))).unwrap_or_default()
            })
            .collect()
    }

    /// SIGTERM to node `i`; waits for its exit, which must be 0.
    async fn terminate(&mut self, i: u8) -> Result<()> {
        self.proc(i)?.signal(Signal::SIGTERM)?;
        let status = self.proc(i)?.wait_exit(SETTLE).await?;
        ensure!(status.success(), "n{i} exited {status} after SIGTERM; stderr:\n{}", self.logs(i));
        Ok(())
    }

    async fn status(&self, i: u8) -> Result<Status> {
        let r = http(self.admin(i), "GET", "/v1/status", &[], None, IO_TIMEOUT).await?;
        ensure!(r.status == 200, "GET /v1/status on n{i}: {} {}", r.status, r.body);
        Ok(serde_json::from_str(&r.body)?)
    }

    async fn members(&self, i: u8) -> Result<Vec<Member>> {
        let r = http(self.admin(i), "GET", "/v1/members", &[], None, IO_TIMEOUT).await?;
        ensure!(r.status == 200, "GET /v1/members on n{i}: {} {}", r.status, r.body);
        Ok(serde_json::from_str(&r.body)?)
    }

    /// The value of an unlabelled metric on node `i`.
    async fn metric(&self, i: u8, name: &str) -> Result<f64> {
        let r = http(self.admin(i), "GET", "/metrics", &[], None, IO_TIMEOUT).await?;
        let line = r
            .body
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .with_context(|| format!("no {name} in n{i}'s /metrics"))?;
        Ok(line.split_whitespace().nth(1).context("metric without a value")?.parse()?)
    }

    /// Waits until every node of `at` lists exactly `voters` as voters (and
    /// no learner), each alive in gossip with an applied index.
    async fn wait_voters(&self, at: &[u8], voters: &[u8]) -> Result<()> {
        let want: Vec<String> = voters.iter().map(|i| format!("n{i}")).collect();
        for &i in at {
            poll(&format!("voters {want:?} seen by n{i}"), SETTLE, async || {
                let ms = self.members(i).await?;
                let mut v: Vec<String> =
                    ms.iter().filter(|m| m.raft == RaftMembership::Voter).map(|m| m.name.clone()).collect();
                v.sort();
                let in_raft: Vec<&Member> = ms.iter().filter(|m| m.raft != RaftMembership::None).collect();
                let healthy = in_raft.iter().all(|m| {
                    m.raft == RaftMembership::Voter
                        && m.state == Some(GossipState::Alive)
                        && m.applied_index.is_some()
                });
                ensure!(v == want && healthy, "n{i} sees {ms:#?}");
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// The node of `among` that says it leads, once every one names it.
    async fn leader(&self, among: &[u8]) -> Result<u8> {
        poll("one leader named by every node", SETTLE, async || {
            let mut ids = BTreeMap::new();
            let mut named = BTreeSet::new();
            for &i in among {
                let raft = self.status(i).await?.raft.context("no raft status")?;
                ids.insert(raft.node_id, i);
                named.insert(raft.leader_id);
            }
            ensure!(named.len() == 1, "nodes {among:?} name leaders {named:?}");
            let id = named.into_iter().next().flatten().context("no leader yet")?;
            ids.get(&id).copied().with_context(|| format!("leader {id} is not one of {among:?}"))
        })
        .await
    }

    /// PUT route `name` through node `i` (its own request id); the status.
    async fn put_route(&self, i: u8, name: &str, request_id: &str) -> Result<u16> {
        let listen = format!(":{}", common::free_addr()?.port());
        let body = serde_json::json!({
            "name": name, "listen": listen, "backends": [{"id": "b", "addr": "127.0.0.1:9"}],
        })
        .to_string();
        let headers = [("X-Ferry-Request-Id", request_id)];
        let path = format!("/v1/routes/{name}");
        Ok(http(self.admin(i), "PUT", &path, &headers, Some(&body), IO_TIMEOUT).await?.status)
    }

    /// The route names node `i` serves, by a linearizable read.
    async fn route_names(&self, i: u8) -> Result<BTreeSet<String>> {
        common::route_names(self.admin(i)).await
    }
}

/// The WARN and ERROR lines of `log`.
fn warnings(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect()
}

// ------------------------------------------------------------ SIGTERM

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_every_seat_and_any_two_restarted_nodes_take_writes() -> Result<()> {
    let mut n = Nodes::start("sigterm-all", Opts::default()).await?;
    // All three at once, as a Ctrl-C of the quick start does.
    for i in 1..=3 {
        n.proc(i)?.signal(Signal::SIGTERM)?;
    }
    for i in 1..=3 {
        let status = n.proc(i)?.wait_exit(SETTLE).await?;
        ensure!(status.success(), "n{i} exited {status}; stderr:\n{}", n.logs(i));
    }
    // Any two: each pair in turn takes writes, the third keeps its seat.
    for (a, b) in [(1, 2), (2, 3), (1, 3)] {
        n.spawn(a)?;
        n.spawn(b)?;
        poll(&format!("a write through n{a} and n{b}"), SETTLE, async || {
            for i in [a, b] {
                let status = n.put_route(i, &format!("via-{i}"), &format!("{a}{b}{i}")).await?;
                ensure!(status == 200, "PUT via n{i}: {status}");
            }
            Ok(())
        })
        .await?;
        let third = 6 - a - b;
        let ms = n.members(a).await?;
        let m = ms.iter().find(|m| m.name == format!("n{third}")).context("the third node is gone")?;
        ensure!(m.raft == RaftMembership::Voter, "n{third} lost its seat while stopped: {m:?}");
        n.terminate(a).await?;
        n.terminate(b).await?;
    }
    for i in 1..=3 {
        ensure!(!n.logs(i).contains("leave: "), "n{i} left the cluster on SIGTERM:\n{}", n.logs(i));
        n.spawn(i)?;
    }
    n.wait_voters(&[1, 2, 3], &[1, 2, 3]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_writes_loses_no_acknowledged_write_and_keeps_every_seat() -> Result<()> {
    const MAX_WRITES: u32 = 2_000;
    // Short, so that autopilot would have removed a restarted voter by the
    // end if a restart looked like a death to it.
    const DEAD_NODE_TIMEOUT: Duration = Duration::from_secs(3);
    let opts = Opts { dead_node_timeout_ms: DEAD_NODE_TIMEOUT.as_millis() as u64, ..Opts::default() };
    let mut n = Nodes::start("rolling", opts).await?;
    let admins: Vec<SocketAddr> = (1..=3).map(|i| n.admin(i)).collect();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let attempted = Arc::new(Mutex::new(BTreeSet::new()));
    let (next, stop) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicBool::new(false)));
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..2 {
        let (acked, attempted, next, stop, admins) =
            (acked.clone(), attempted.clone(), next.clone(), stop.clone(), admins.clone());
        writers.push(tokio::spawn(async move {
            let mut via = w;
            while !stop.load(Relaxed) && started.elapsed() < Duration::from_secs(90) {
                let k = next.fetch_add(1, Relaxed);
                if k >= MAX_WRITES {
                    return;
                }
                let name = format!("w{k}");
                // A port free now: port 0 is refused, and every route
                // needs its own.
                let Ok(port) = common::free_addr().map(|a| a.port()) else { return };
                let body = serde_json::json!({
                    "name": name, "listen": format!(":{port}"), "backends": [{"id": "b", "addr": "127.0.0.1:9"}],
                })
                .to_string();
                let id = format!("{:x}", 0xf00d_0000_u64 + u64::from(k));
                attempted.lock().expect("lock").insert(name.clone());
                // Retried with one request id, through another node after
                // a failure, as a client should.
                for _ in 0..20 {
                    let admin = admins[via % admins.len()];
                    let headers = [("X-Ferry-Request-Id", id.as_str())];
                    let path = format!("/v1/routes/{name}");
                    match http(admin, "PUT", &path, &headers, Some(&body), IO_TIMEOUT).await {
                        Ok(r) if r.status == 200 => {
                            acked.lock().expect("lock").insert(name.clone());
                            break;
                        }
                        _ => {
                            via += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        }));
    }
    let acks = || acked.lock().expect("lock").len();
    let more_acks = async |what: String| {
        let target = acks() + 20;
        poll(&what, SETTLE, async || {
            ensure!(acks() >= target, "{} acknowledged", acks());
            Ok(())
        })
        .await
    };
    more_acks("writes acknowledged before the restarts".into()).await?;
    let mut last_down = Instant::now();
    for i in 1..=3u8 {
        last_down = Instant::now();
        n.terminate(i).await?;
        // The others take writes while it is away (a new leader first, if
        // it led), and see it down, not gone.
        more_acks(format!("writes acknowledged while n{i} is down")).await?;
        n.spawn(i)?;
        n.wait_voters(&[1, 2, 3], &[1, 2, 3]).await?;
        more_acks(format!("writes acknowledged after n{i} is back")).await?;
    }
    stop.store(true, Relaxed);
    for w in writers {
        w.await?;
    }
    let took = started.elapsed();
    let (acked, attempted) = (acked.lock().expect("lock").clone(), attempted.lock().expect("lock").clone());
    // Past the dead-node timeout since the last node went down: a removal
    // would have happened by now (nothing to poll for when it does not).
    let since_last = Instant::now().saturating_duration_since(last_down);
    tokio::time::sleep(DEAD_NODE_TIMEOUT.saturating_sub(since_last) + Duration::from_millis(500)).await;
    eprintln!(
        "rolling restart in {took:?}: {} writes acknowledged of {} attempted",
        acked.len(),
        attempted.len()
    );
    ensure!((attempted.len() as u32) < MAX_WRITES, "the load ended before the restarts did");
    n.wait_voters(&[1, 2, 3], &[1, 2, 3]).await?;
    for i in 1..=3 {
        let names = n.route_names(i).await?;
        let lost: Vec<&String> = acked.difference(&names).collect();
        ensure!(lost.is_empty(), "n{i} lost {} acknowledged writes: {lost:?}", lost.len());
        let phantom: Vec<&String> = names.difference(&attempted).collect();
        ensure!(phantom.is_empty(), "n{i} serves routes never written: {phantom:?}");
        // Nobody left or was removed and added back: the seats held.
        let log = n.logs(i);
        ensure!(
            !log.contains("autopilot: changing membership"),
            "n{i}'s autopilot changed the membership:\n{log}"
        );
    }
    Ok(())
}

// --------------------------------------------------------- leave_on_terminate

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_on_terminate_makes_sigterm_leave_raft_and_gossip() -> Result<()> {
    let mut n = Nodes::start("leave-on-term", Opts { leave_on_terminate: true, ..Opts::default() }).await?;
    let leader = n.leader(&[1, 2, 3]).await?;
    let follower = (1..=3).find(|&i| i != leader).context("a follower")?;
    n.terminate(follower).await?;
    let rest: Vec<u8> = (1..=3).filter(|&i| i != follower).collect();
    n.wait_voters(&rest, &rest).await?;
    poll("the follower left, as the leader sees it", SETTLE, async || {
        let ms = n.members(leader).await?;
        let m = ms.iter().find(|m| m.name == format!("n{follower}")).context("no entry")?;
        ensure!(m.state == Some(GossipState::Left) && m.raft == RaftMembership::None, "{m:?}");
        Ok(())
    })
    .await?;
    ensure!(n.logs(follower).contains("leave: removed from the Raft membership"), "{}", n.logs(follower));
    Ok(())
}

// ------------------------------------------------------------ POST /v1/leave

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_of_the_leader_is_clean_and_autopilot_does_not_add_it_back() -> Result<()> {
    let mut n = Nodes::start("leave", Opts::default()).await?;
    let leader = n.leader(&[1, 2, 3]).await?;
    let rest: Vec<u8> = (1..=3).filter(|&i| i != leader).collect();
    let r = http(n.admin(leader), "POST", "/v1/leave", &[], None, IO_TIMEOUT).await?;
    ensure!(r.status == 202, "{} {}", r.status, r.body);
    let status = n.proc(leader)?.wait_exit(SETTLE).await?;
    ensure!(status.success(), "n{leader} exited {status}");
    n.wait_voters(&rest, &rest).await?;
    poll("the old leader left, as the others see it", SETTLE, async || {
        for &i in &rest {
            let ms = n.members(i).await?;
            let m = ms.iter().find(|m| m.name == format!("n{leader}")).context("no entry")?;
            ensure!(m.state == Some(GossipState::Left) && m.raft == RaftMembership::None, "n{i}: {m:?}");
        }
        Ok(())
    })
    .await?;
    // Long enough for autopilot to have added it back (it re-evaluates every
    // 500 ms); nothing to wait for when the defect is absent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 1..=3 {
        let log = n.logs(i);
        ensure!(!log.contains("add_learner"), "n{i}'s autopilot added a leaving node back:\n{log}");
        let w = warnings(&log);
        ensure!(
            w.is_empty(),
            "n{i} logged {} WARN/ERROR lines around a clean leave:\n{}",
            w.len(),
            w.join("\n")
        );
        // openraft's INFO state dump at start (1-3 thousand characters).
        let longest = log.lines().map(str::len).max().unwrap_or(0);
        ensure!(longest < 1_000, "n{i} logged a line of {longest} characters:\n{log}");
    }
    Ok(())
}

// ------------------------------------------------------------ status

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_leader_restarted_alone_does_not_name_itself_leader() -> Result<()> {
    let mut n = Nodes::start("removed-leader", Opts::default()).await?;
    let leader = n.leader(&[1, 2, 3]).await?;
    let r = http(n.admin(leader), "POST", "/v1/leave", &[], None, IO_TIMEOUT).await?;
    ensure!(r.status == 202, "{} {}", r.status, r.body);
    n.proc(leader)?.wait_exit(SETTLE).await?;
    for i in (1..=3).filter(|&i| i != leader) {
        n.proc(i)?.kill9()?;
    }
    // Its stored vote is committed and names itself; it is no member now.
    n.spawn(leader)?;
    let checked = Instant::now();
    let mut seen = Vec::new();
    while checked.elapsed() < Duration::from_secs(3) {
        if let Ok(s) = n.status(leader).await {
            let raft = s.raft.context("no raft status")?;
            let leads = raft.role == Role::Leader;
            ensure!(
                leads == (raft.leader_id == Some(raft.node_id)),
                "role {:?} with leader_id {:?} (its own id is {})",
                raft.role,
                raft.leader_id,
                raft.node_id
            );
            let metric = n.metric(leader, "ferry_raft_is_leader").await?;
            ensure!((metric == 1.0) == leads, "ferry_raft_is_leader {metric} with role {:?}", raft.role);
            seen.push(raft.role);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(seen.len() >= 5, "n{leader} answered its status only {} times", seen.len());
    eprintln!("the removed leader restarted alone reports roles {:?}", seen.iter().collect::<BTreeSet<_>>());
    Ok(())
}

// ------------------------------------------------------ isolated leader

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_reports_no_quorum_and_logs_each_lost_peer_once() -> Result<()> {
    let mut n = Nodes::start("isolated", Opts::default()).await?;
    let leader = n.leader(&[1, 2, 3]).await?;
    let followers: Vec<u8> = (1..=3).filter(|&i| i != leader).collect();
    let raft = n.status(leader).await?.raft.context("no raft status")?;
    ensure!(raft.quorum == Some(true), "a healthy leader: {raft:?}");
    ensure!(raft.leader_name.as_deref() == Some(format!("n{leader}").as_str()), "{raft:?}");
    let mut names: Vec<&str> = raft.peers.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    let want: Vec<String> = followers.iter().map(|i| format!("n{i}")).collect();
    ensure!(names == want, "peers {:?}", raft.peers);
    ensure!(raft.peers.iter().all(|p| p.last_contact_ms.is_some_and(|ms| ms < 1_000)), "{:?}", raft.peers);
    ensure!(n.metric(leader, "ferry_raft_has_quorum").await? == 1.0);
    let follower_raft = n.status(followers[0]).await?.raft.context("no raft status")?;
    ensure!(follower_raft.quorum.is_none(), "a follower has no quorum to report: {follower_raft:?}");
    ensure!(follower_raft.leader_name == raft.leader_name, "{follower_raft:?}");

    let lines_before = n.logs(leader).lines().count();
    for &i in &followers {
        n.proc(i)?.kill9()?;
    }
    let killed = Instant::now();
    poll("the leader reporting no quorum", Duration::from_secs(5), async || {
        let raft = n.status(leader).await?.raft.context("no raft status")?;
        ensure!(raft.role == Role::Leader && raft.quorum == Some(false), "{raft:?}");
        ensure!(n.metric(leader, "ferry_raft_has_quorum").await? == 0.0, "ferry_raft_has_quorum still 1");
        Ok(())
    })
    .await?;
    eprintln!("no quorum reported {:?} after both followers were killed", killed.elapsed());
    // A few seconds of two dead peers: one line each, not dozens a second.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = n.logs(leader);
    let after: Vec<&str> = log.lines().skip(lines_before).collect();
    let w = warnings(&after.join("\n")).into_iter().map(str::to_string).collect::<Vec<_>>();
    ensure!(w.len() < 10, "{} WARN/ERROR lines in {:?}:\n{}", w.len(), killed.elapsed(), w.join("\n"));
    for name in &want {
        ensure!(
            w.iter().any(|l| l.contains("raft peer unreachable") && l.contains(&format!("{name} (id "))),
            "no line saying {name} is unreachable:\n{}",
            w.join("\n")
        );
    }
    Ok(())
}

// ------------------------------------------------- removed while unreachable

/// A voter unreachable past `dead_node_timeout_ms` (here SIGSTOP: the
/// process neither answers nor runs its timers) is removed by autopilot;
/// once it answers again it is added back and promoted within seconds, as
/// Consul re-adds a reaped server that rejoins, and it applies what the
/// cluster wrote while it was away. (Only the paused side renews its gossip
/// identity here; the case where both sides do, a real partition, is
/// `gossip/tests/sim.rs` and jepsen-lite's `partition-long`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_removed_while_unreachable_is_added_back_within_seconds() -> Result<()> {
    /// Gossip heals in a few probe periods (announce to down members every
    /// 2 s, then the rejoin), autopilot adds a learner at once, promotes it
    /// after 2 s of stability: well under this.
    const READD_BOUND: Duration = Duration::from_secs(10);
    let opts = Opts { dead_node_timeout_ms: 2_000, ..Opts::default() };
    let mut n = Nodes::start("readd", opts).await?;
    let leader = n.leader(&[1, 2, 3]).await?;
    let away = (1..=3u8).find(|&i| i != leader).context("a follower")?;
    let rest: Vec<u8> = (1..=3u8).filter(|&i| i != away).collect();
    n.proc(away)?.signal(Signal::SIGSTOP)?;
    let removed = async {
        n.wait_voters(&rest, &rest).await?;
        // Written while it is away: it must apply this after the return.
        let status = n.put_route(leader, "while-away", "ad0001").await?;
        ensure!(status == 200, "write while n{away} is away: {status}");
        Ok(())
    }
    .await;
    n.proc(away)?.signal(Signal::SIGCONT)?;
    removed?;
    let back = Instant::now();
    let all = [1, 2, 3];
    let readded = tokio::time::timeout(READD_BOUND, n.wait_voters(&all, &all)).await;
    ensure!(
        matches!(readded, Ok(Ok(()))),
        "n{away} not a voter again within {READD_BOUND:?} of SIGCONT ({readded:?}); n{leader}'s log:\n{}\nn{away}'s log:\n{}",
        n.logs(leader),
        n.logs(away)
    );
    eprintln!("n{away} a voter again {:?} after SIGCONT", back.elapsed());
    ensure!(n.route_names(away).await?.contains("while-away"), "n{away} did not catch up");
    let log = n.logs(leader);
    ensure!(log.contains("change=\"remove\""), "n{leader} never removed n{away}:\n{log}");
    Ok(())
}
