//! Real `ferryd` processes forming and changing a cluster through gossip:
//! `--bootstrap-expect` in any start order, joins that autopilot turns into
//! learners and voters (up to `max_voters`), `kill -9` seen as down by every
//! survivor within the gossip profile's bound, a restart rejoining with a new
//! incarnation, graceful leave (SIGTERM with `leave_on_terminate`, and
//! `POST /v1/leave`), and autopilot
//! removing a dead voter only while a live majority remains, and peer
//! backends failing over at once when their node is killed under load.
//!
//! Nodes are started from flags only (no config file) unless a test needs a
//! setting that has no flag. Node i runs on 127.0.N.i with the default ports
//! (gossip 7946, cluster 7947, admin 7948); N differs per test.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{Ferryd, IO_TIMEOUT, TempDir, http, poll};
use ferry_client::api::{GossipState, Member, RaftMembership};

/// Longest wait for a cluster to form or a membership change to settle.
const SETTLE: Duration = Duration::from_secs(30);

/// A distinct 127.0.N.0/24 per test, away from the ranges the other process
/// tests use.
fn next_net() -> u8 {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = std::process::id().wrapping_mul(7).wrapping_add(SEQ.fetch_add(1, Relaxed) * 41);
    (1 + n % 250) as u8
}

/// Up to 9 nodes; node `i` (1-based) is `procs[i]`. Processes are killed
/// before the dir is removed (field order).
struct Nodes {
    procs: BTreeMap<u8, Ferryd>,
    net: u8,
    dir: TempDir,
}

impl Nodes {
    fn new(tag: &str) -> Result<Self> {
        let net = next_net();
        for i in 1..=6u8 {
            for port in [7946, 7947, 7948] {
                if std::net::TcpListener::bind(SocketAddr::new(ip(net, i), port)).is_err() {
                    bail!("127.0.{net}.{i}:{port} is taken");
                }
            }
        }
        Ok(Self { procs: BTreeMap::new(), net, dir: TempDir::new(tag)? })
    }

    fn ip(&self, i: u8) -> IpAddr {
        ip(self.net, i)
    }

    fn admin(&self, i: u8) -> SocketAddr {
        SocketAddr::new(self.ip(i), 7948)
    }

    /// Starts node `i` with `extra` flags after the common ones.
    fn start(&mut self, i: u8, extra: &[&str]) -> Result<()> {
        let ip = self.ip(i).to_string();
        let data = self.dir.file(&format!("n{i}"));
        let data = data.to_str().context("data dir path")?.to_string();
        let name = format!("n{i}");
        let mut args = vec!["--name", &name, "--bind", &ip, "--data-dir", &data, "--gossip-profile", "fast"];
        args.extend_from_slice(extra);
        let run = format!("n{i}-{}", self.procs.len());
        let p = Ferryd::spawn(&self.dir, &run, &args)?;
        self.procs.insert(i, p);
        Ok(())
    }

    fn proc(&mut self, i: u8) -> Result<&mut Ferryd> {
        self.procs.get_mut(&i).with_context(|| format!("node {i} was never started"))
    }

    async fn members(&self, i: u8) -> Result<Vec<Member>> {
        let r = http(self.admin(i), "GET", "/v1/members", &[], None, IO_TIMEOUT).await?;
        ensure!(r.status == 200, "GET /v1/members on n{i}: {} {}", r.status, r.body);
        Ok(serde_json::from_str(&r.body)?)
    }

    /// Node `of`'s entry as node `at` sees it.
    async fn member(&self, at: u8, of: u8) -> Result<Member> {
        let name = format!("n{of}");
        self.members(at)
            .await?
            .into_iter()
            .find(|m| m.name == name)
            .with_context(|| format!("n{at} lacks {name}"))
    }

    /// Waits until every node in `at` lists exactly `voters` as voters and
    /// `learners` as learners, all alive.
    async fn wait_roles(&self, at: &[u8], voters: &[u8], learners: &[u8]) -> Result<()> {
        let want = |names: &[u8]| -> Vec<String> { names.iter().map(|i| format!("n{i}")).collect() };
        let (want_v, want_l) = (want(voters), want(learners));
        for &i in at {
            poll(&format!("roles seen by n{i}"), SETTLE, async || {
                let ms = self.members(i).await?;
                let mut v: Vec<String> =
                    ms.iter().filter(|m| m.raft == RaftMembership::Voter).map(|m| m.name.clone()).collect();
                let mut l: Vec<String> =
                    ms.iter().filter(|m| m.raft == RaftMembership::Learner).map(|m| m.name.clone()).collect();
                v.sort();
                l.sort();
                let all_alive = ms
                    .iter()
                    .filter(|m| m.raft != RaftMembership::None)
                    .all(|m| m.state == Some(GossipState::Alive) && m.applied_index.is_some());
                ensure!(v == want_v && l == want_l && all_alive, "n{i} sees {ms:#?}");
                Ok(())
            })
            .await?;
        }
        Ok(())
    }
}

fn ip(net: u8, i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, net, i))
}

/// `--join` naming nodes 1..=3 of the test's net.
fn seeds(nodes: &Nodes) -> String {
    (1..=3).map(|i| nodes.ip(i).to_string()).collect::<Vec<_>>().join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_form_a_cluster_in_any_order_and_joiners_become_voters_up_to_max_voters() -> Result<()> {
    let mut n = Nodes::new("form")?;
    let seeds = seeds(&n);
    // Reverse order, spread out: nothing forms until all three see each other.
    for i in [3, 2, 1] {
        n.start(i, &["--bootstrap-expect", "3", "--join", &seeds])?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    n.wait_roles(&[1, 2, 3], &[1, 2, 3], &[]).await?;

    let first = n.ip(1).to_string();
    let leaves = n.dir.file("n4.toml");
    common::write_config(
        &leaves,
        &format!("[cluster]\naddr = \"{}:7947\"\nleave_on_terminate = true\n", n.ip(4)),
    )?;
    let leaves = leaves.to_str().context("path")?.to_string();
    n.start(4, &["--config", &leaves, "--join", &first])?;
    n.wait_roles(&[1, 4], &[1, 2, 3, 4], &[]).await?;
    n.start(5, &["--join", &first])?;
    n.start(6, &["--join", &first])?;
    // Five voters at most: n5 or n6 (whichever autopilot promotes first,
    // lowest id first once caught up) stays a learner.
    let learner = poll("a fifth voter and a learner", SETTLE, async || {
        let ms = n.members(2).await?;
        let role = |name: &str| ms.iter().find(|m| m.name == name).map(|m| m.raft);
        match (role("n5"), role("n6")) {
            (Some(RaftMembership::Voter), Some(RaftMembership::Learner)) => Ok(6),
            (Some(RaftMembership::Learner), Some(RaftMembership::Voter)) => Ok(5),
            other => bail!("n5, n6: {other:?}"),
        }
    })
    .await?;
    let voter = 11 - learner;
    n.wait_roles(&[2, 6], &[1, 2, 3, 4, voter], &[learner]).await?;

    // A voter with `leave_on_terminate` leaves on SIGTERM: out of Raft,
    // `left` in gossip, exit 0; the learner takes its place.
    n.proc(4)?.signal(nix::sys::signal::Signal::SIGTERM)?;
    let status = n.proc(4)?.wait_exit(SETTLE).await?;
    ensure!(status.success(), "n4 exited {status}");
    n.wait_roles(&[1, 5], &[1, 2, 3, 5, 6], &[]).await?;
    // Raft roles and gossip states travel separately: poll the latter too.
    poll("n4 left, as n1 sees it", SETTLE, async || {
        let m4 = n.member(1, 4).await?;
        ensure!(m4.state == Some(GossipState::Left) && m4.raft == RaftMembership::None, "{m4:?}");
        Ok(())
    })
    .await?;

    // POST /v1/leave does the same and stops the node.
    let r = http(n.admin(6), "POST", "/v1/leave", &[], None, IO_TIMEOUT).await?;
    ensure!(r.status == 202, "{} {}", r.status, r.body);
    let status = n.proc(6)?.wait_exit(SETTLE).await?;
    ensure!(status.success(), "n6 exited {status}");
    n.wait_roles(&[1, 2], &[1, 2, 3, 5], &[]).await?;
    poll("n6 left, as n5 sees it", SETTLE, async || {
        let m6 = n.member(5, 6).await?;
        ensure!(m6.state == Some(GossipState::Left) && m6.raft == RaftMembership::None, "{m6:?}");
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_is_seen_down_by_every_survivor_within_the_bound_and_a_restart_rejoins() -> Result<()> {
    let mut n = Nodes::new("down")?;
    let seeds = seeds(&n);
    for i in [1, 2, 3] {
        n.start(i, &["--bootstrap-expect", "3", "--join", &seeds])?;
    }
    n.wait_roles(&[1, 2, 3], &[1, 2, 3], &[]).await?;
    let before = n.member(1, 2).await?.incarnation.context("incarnation")?;

    n.proc(2)?.kill9()?;
    let t0 = Instant::now();
    let mut seen = BTreeMap::new();
    while seen.len() < 2 && t0.elapsed() < SETTLE {
        for i in [1u8, 3] {
            if !seen.contains_key(&i) && n.member(i, 2).await?.state == Some(GossipState::Down) {
                seen.insert(i, t0.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bound = ferry_gossip::GossipConfig::fast("ferry").detection_bound();
    let slowest = seen.values().max().copied().context("nobody saw n2 down")?;
    ensure!(seen.len() == 2, "only {seen:?} saw n2 down");
    // The bound is the protocol's; allow polling and a loaded 2-core box.
    ensure!(slowest <= bound + Duration::from_millis(1_500), "n2 down after {slowest:?} (bound {bound:?})");
    eprintln!("kill -9 seen down by every survivor after {slowest:?} (profile bound {bound:?})");

    // Same data dir: same node id, a new incarnation, alive again, voter.
    n.start(2, &["--join", &seeds])?;
    n.wait_roles(&[1, 3], &[1, 2, 3], &[]).await?;
    let after = n.member(3, 2).await?.incarnation.context("incarnation")?;
    ensure!(after > before, "incarnation {before} -> {after}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autopilot_removes_a_dead_voter_only_while_a_live_majority_remains() -> Result<()> {
    let mut n = Nodes::new("dead")?;
    let seeds = seeds(&n);
    for i in 1..=5u8 {
        let path = n.dir.file(&format!("n{i}.toml"));
        common::write_config(
            &path,
            &format!(
                "[cluster]\naddr = \"{ip}:7947\"\ndead_node_timeout_ms = 1000\n\
                 [gossip]\nbootstrap_expect = 5\njoin = [{list}]\n",
                ip = n.ip(i),
                list = seeds.split(',').map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", "),
            ),
        )?;
        let path = path.to_str().context("path")?.to_string();
        n.start(i, &["--config", &path])?;
    }
    n.wait_roles(&[1, 5], &[1, 2, 3, 4, 5], &[]).await?;

    // One voter dies: removed after dead_node_timeout (4 remain, 4 live).
    n.proc(5)?.kill9()?;
    n.wait_roles(&[1, 2], &[1, 2, 3, 4], &[]).await?;
    let ids: Vec<u64> = n.members(1).await?.iter().map(|m| m.id).collect();

    // Three of the four die at once: no live majority is left, so nobody
    // removes anything; the survivor still lists four voters.
    for i in [2, 3, 4] {
        n.proc(i)?.kill9()?;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let left = n.members(1).await?;
    let voters = left.iter().filter(|m| m.raft == RaftMembership::Voter).count();
    ensure!(voters == 4, "voters after losing the majority: {left:#?}");
    ensure!(left.iter().all(|m| ids.contains(&m.id)), "{left:#?}");

    // Force-leave refuses a live member and the node itself.
    let me = left.iter().find(|m| m.name == "n1").context("n1")?.id;
    let r = http(n.admin(1), "POST", &format!("/v1/members/{me}/remove"), &[], None, IO_TIMEOUT).await?;
    ensure!(r.status == 409 && r.body.contains("is_self"), "{} {}", r.status, r.body);
    Ok(())
}

/// Opens connections to `addr` one after another until `stop`, each
/// exchanging one line; returns (answers per backend name, failures with
/// the time their connection started).
async fn load(
    addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (BTreeMap<String, u32>, Vec<(Instant, String)>) {
    let mut seen = BTreeMap::new();
    let mut failures = Vec::new();
    // Bounded in count and (through the caller's stop) in time.
    for k in 0..20_000u32 {
        if stop.load(Relaxed) {
            break;
        }
        let started = Instant::now();
        match common::ask_once(addr, &format!("ping {k}")).await {
            Ok(reply) => {
                let name = reply.split(':').next().unwrap_or_default().to_string();
                *seen.entry(name).or_insert(0) += 1;
            }
            Err(e) => failures.push((started, format!("connection {k}: {e:#}"))),
        }
    }
    (seen, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_peer_under_load_fails_no_new_connection_and_it_takes_its_share_back() -> Result<()> {
    let mut n = Nodes::new("peers")?;
    let seeds = seeds(&n);
    for i in [1, 2, 3] {
        n.start(i, &["--bootstrap-expect", "3", "--join", &seeds])?;
    }
    n.wait_roles(&[1, 2, 3], &[1, 2, 3], &[]).await?;
    // Each node's local service: a backend pinned to it, reached by the
    // other nodes through a peer hop.
    let (a, b, c) =
        (common::echo_server("a").await?, common::echo_server("b").await?, common::echo_server("c").await?);
    let route = serde_json::json!({
        "name": "side", "listen": ":7000", "balance": "round_robin", "max_connect_attempts": 3,
        "backends": [
            {"id": "a", "addr": a.to_string(), "node": "n1"},
            {"id": "b", "addr": b.to_string(), "node": "n2"},
            {"id": "c", "addr": c.to_string(), "node": "n3"},
        ],
    });
    let r = http(n.admin(2), "PUT", "/v1/routes/side", &[], Some(&route.to_string()), IO_TIMEOUT).await?;
    ensure!(r.status == 200, "{} {}", r.status, r.body);
    let entry = SocketAddr::new(n.ip(1), 7000);
    poll("n1 serving side through all three nodes", SETTLE, async || {
        let mut names = std::collections::BTreeSet::new();
        for k in 0..6 {
            let reply = common::ask_once(entry, &format!("warm {k}")).await?;
            names.insert(reply.split(':').next().unwrap_or_default().to_string());
        }
        ensure!(names.len() == 3, "answered by {names:?}");
        Ok(())
    })
    .await?;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = tokio::spawn(load(entry, std::sync::Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    n.proc(3)?.kill9()?;
    let killed = Instant::now();
    poll("n1 and n2 see n3 down", SETTLE, async || {
        for i in [1, 2] {
            let state = n.member(i, 3).await?.state;
            ensure!(state == Some(GossipState::Down), "n{i} sees n3 {state:?}");
        }
        Ok(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Relaxed);
    let (seen, failures) = running.await?;
    // A connection already flowing through n3 dies with it (L4 cannot
    // replay bytes); every connection opened after the kill must succeed.
    let after: Vec<&String> = failures.iter().filter(|(t, _)| *t >= killed).map(|(_, e)| e).collect();
    ensure!(after.is_empty(), "{} new connections failed after the kill: {after:?}", after.len());
    ensure!(failures.len() <= 1, "more than the one in-flight connection failed: {failures:?}");
    ensure!(seen.get("a").is_some_and(|&k| k > 10) && seen.get("b").is_some_and(|&k| k > 10), "{seen:?}");

    // n3 comes back: it rejoins and its backend gets its share again.
    n.start(3, &["--join", &seeds])?;
    n.wait_roles(&[1], &[1, 2, 3], &[]).await?;
    poll("c answering through n1 again", SETTLE, async || {
        for k in 0..6 {
            if common::ask_once(entry, &format!("back {k}")).await?.starts_with("c:") {
                return Ok(());
            }
        }
        bail!("c never answered")
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_member_declared_down_rejoins_promptly_after_it_resumes() -> Result<()> {
    use nix::sys::signal::Signal;
    let mut n = Nodes::new("pause")?;
    let seeds = seeds(&n);
    for i in [1, 2, 3] {
        n.start(i, &["--bootstrap-expect", "3", "--join", &seeds])?;
    }
    n.wait_roles(&[1, 2, 3], &[1, 2, 3], &[]).await?;
    let before = n.member(1, 2).await?.incarnation.context("incarnation")?;
    n.proc(2)?.signal(Signal::SIGSTOP)?;
    let paused = async {
        poll("n1 and n3 see the paused n2 down", SETTLE, async || {
            for i in [1, 3] {
                let state = n.member(i, 2).await?.state;
                ensure!(state == Some(GossipState::Down), "n{i} sees n2 {state:?}");
            }
            Ok(())
        })
        .await
    }
    .await;
    n.proc(2)?.signal(Signal::SIGCONT)?;
    paused?;
    let resumed = Instant::now();
    poll("n1 and n3 see n2 alive again, renewed", SETTLE, async || {
        for i in [1, 3] {
            let m = n.member(i, 2).await?;
            ensure!(
                m.state == Some(GossipState::Alive) && m.incarnation > Some(before),
                "n{i} sees n2 {:?} incarnation {:?}",
                m.state,
                m.incarnation
            );
        }
        Ok(())
    })
    .await?;
    let took = resumed.elapsed();
    eprintln!("a falsely downed member was alive everywhere {took:?} after it resumed");
    // On resuming, n2 probes the others, is told it is down, renews its
    // incarnation and is taken back at once: well under the others'
    // periodic announce to down members (2 s on `fast`).
    ensure!(took < Duration::from_millis(1_500), "rejoin took {took:?}");
    Ok(())
}

impl Nodes {
    /// Writes `n{i}.toml` with `[cluster] node_id` (and the address `--bind`
    /// gives anyway) and returns its path, for `--config`.
    fn config_with_id(&self, i: u8, node_id: u64) -> Result<String> {
        let path = self.dir.file(&format!("n{i}.toml"));
        common::write_config(
            &path,
            &format!("[cluster]\nnode_id = {node_id}\naddr = \"{}:7947\"\n", self.ip(i)),
        )?;
        Ok(path.to_str().context("path")?.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_with_the_lowest_id_neither_forms_nor_blocks_formation() -> Result<()> {
    let mut n = Nodes::new("lowjoin")?;
    let seeds = seeds(&n);
    // n4 only joins, and has the lowest id of all: the bootstrapping nodes
    // must form among themselves (the probe says n4 does not bootstrap),
    // and autopilot then adds n4.
    let low = n.config_with_id(4, 1)?;
    n.start(4, &["--config", &low, "--join", &seeds])?;
    for i in [1, 2, 3] {
        let cfg = n.config_with_id(i, 100 * u64::from(i))?;
        n.start(i, &["--config", &cfg, "--bootstrap-expect", "3", "--join", &seeds])?;
    }
    n.wait_roles(&[1, 4], &[1, 2, 3, 4], &[]).await?;
    let ids: Vec<u64> = n.members(4).await?.iter().map(|m| m.id).collect();
    ensure!(ids.contains(&1) && ids.contains(&100), "{ids:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_formation_forms_one_cluster() -> Result<()> {
    let mut n = Nodes::new("restart")?;
    let seeds = seeds(&n);
    let args = ["--bootstrap-expect", "3", "--join", seeds.as_str()];
    n.start(1, &args)?;
    n.start(2, &args)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Two of three are up and waiting; one dies and comes back (same data
    // dir, same id), then the third starts.
    n.proc(2)?.kill9()?;
    n.start(2, &args)?;
    n.start(3, &args)?;
    n.wait_roles(&[1, 2, 3], &[1, 2, 3], &[]).await?;
    // One cluster: every node names the same leader.
    let mut leaders = std::collections::BTreeSet::new();
    for i in [1, 2, 3] {
        let r = http(n.admin(i), "GET", "/v1/status", &[], None, IO_TIMEOUT).await?;
        leaders.insert(r.json()?["raft"]["leader_id"].as_u64());
    }
    ensure!(leaders.len() == 1 && !leaders.contains(&None), "leaders seen: {leaders:?}");
    Ok(())
}

/// `POST /v1/join` (`ferryctl join`): a node whose `join` seed is gone
/// joins through another member named at run time, and becomes a voter.
/// Bad bodies are refused naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_seed_is_gone_joins_through_post_v1_join() -> Result<()> {
    let mut n = Nodes::new("join-api")?;
    let seeds = seeds(&n);
    for i in 1..=3 {
        n.start(i, &["--bootstrap-expect", "3", "--join", &seeds])?;
    }
    n.wait_roles(&[1], &[1, 2, 3], &[]).await?;
    // Its only seed is an address nobody listens on.
    let gone = n.ip(6).to_string();
    n.start(4, &["--join", &gone])?;
    poll("n4's admin API", SETTLE, async || {
        http(n.admin(4), "GET", "/health/live", &[], None, IO_TIMEOUT).await.map(|_| ())
    })
    .await?;
    ensure!(!n.members(1).await?.iter().any(|m| m.name == "n4"), "n4 is a member without a seed");

    for (body, field) in [
        (r#"{"addrs": []}"#, "addrs"),
        (r#"{"addrs": ["bad seed"]}"#, "addrs[0]"),
        (r#"{"addrs": ["127.0.0.1:7946"], "x": 1}"#, "x"),
    ] {
        let r = http(n.admin(4), "POST", "/v1/join", &[], Some(body), IO_TIMEOUT).await?;
        ensure!(r.status == 400 && r.body.contains(&format!("\"path\":\"{field}\"")), "{body}: {r:?}");
    }
    let body = format!(r#"{{"addrs": ["{}"]}}"#, n.ip(1));
    let r = http(n.admin(4), "POST", "/v1/join", &[], Some(&body), IO_TIMEOUT).await?;
    ensure!(r.status == 200, "{} {}", r.status, r.body);
    let joined: ferry_client::api::JoinResult = serde_json::from_str(&r.body)?;
    ensure!(joined.joined == [format!("{}:7946", n.ip(1))], "{joined:?}");
    n.wait_roles(&[1, 4], &[1, 2, 3, 4], &[]).await?;
    Ok(())
}
