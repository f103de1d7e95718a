//! The nemeses that need more than a rule or a signal: the lagging node
//! (isolated while writes go on until the leader purged its log past it,
//! so that it must install a snapshot at heal), the bootstrap partition
//! (in place while the cluster forms), and the joined nodes that serve
//! clients while they are members.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use ferry_client::RouteSpec;
use ferry_client::http::WriteOpts;
use tokio::time::Instant;

use super::{Applied, NemesisRunner, TestOptions, find_leader, grudge_text};
use crate::history::Op;
use crate::nemesis::{self, Nemesis};
use crate::net::{self, Net};
use crate::workload::traffic::{PORT as TRAFFIC_PORT, echo};
use crate::workload::{self, Recorder};

/// `[cluster] snapshot_logs` of every node when `lagging-node` runs: small,
/// so a node cut off for seconds falls behind the leader's purged log.
pub const SNAPSHOT_LOGS: u64 = 50;

/// What ferryd logs when it installs a snapshot sent by the leader.
const INSTALLED: &str = "installed snapshot";

/// Route the lagging-node nemesis writes to, to move the log on.
const LAG_ROUTE: &str = "jlag";
/// Its writers, and how many writes each makes between progress checks.
const LAG_WRITERS: u32 = 8;
const LAG_WRITES_EACH: u32 = 5;

/// Most a lagging node's fault is drawn out past its fault time, waiting
/// for the log to move on past it.
const LAG_OVERTIME: Duration = Duration::from_secs(30);

/// How long a joined node is out of the clients' pool before it leaves,
/// so that no operation is still on its way to it.
const DRAIN: Duration = Duration::from_secs(1);

/// The configuration file the nodes read, if the run needs one.
pub(super) fn node_config(opts: &TestOptions) -> Result<Option<PathBuf>> {
    if !opts.nemeses.contains(&Nemesis::LaggingNode) {
        return Ok(None);
    }
    let path = opts.run_dir.join("ferryd.toml");
    let text = format!(
        "# Written by jepsen-lite: lagging-node needs the leader to purge its log soon.\n\
         [cluster]\nsnapshot_logs = {SNAPSHOT_LOGS}\n"
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(path))
}

/// A node cut off until the leader's log moved on past it.
#[derive(Debug, Clone)]
pub(super) struct Lag {
    node: usize,
    /// The applied index the others must pass: two snapshot intervals
    /// past the node's (and a margin): the second snapshot built after it
    /// was cut off is past it by more than the `snapshot_logs / 5` entries
    /// the leader keeps, so the log is purged past it.
    target: u64,
    /// "installed snapshot" lines in its log when it was cut off.
    installed_before: usize,
}

/// The partition in place while the cluster forms.
pub(super) struct BootstrapPartition {
    process: u32,
    description: String,
    fault: Duration,
}

impl BootstrapPartition {
    /// Installs a seeded partition (a majorities ring or two halves) before
    /// any node starts, when the run has `bootstrap-partition`.
    pub(super) fn start(
        opts: &TestOptions,
        rec: &Recorder,
        process: u32,
        net: &Mutex<Net>,
    ) -> Result<Option<Self>> {
        if !opts.nemeses.contains(&Nemesis::BootstrapPartition) {
            return Ok(None);
        }
        let mut rng = fastrand::Rng::with_seed(opts.seed ^ 0x626f_6f74);
        let nodes: Vec<usize> = (1..=opts.nodes).collect();
        let g = if rng.bool() {
            nemesis::majorities_ring(&nodes, &mut rng)
        } else {
            nemesis::random_halves(&nodes, &mut rng)
        };
        let description = format!("{} {}", Nemesis::BootstrapPartition, grudge_text(&g));
        rec.invoke(process, "nemesis", Op::Start(description.clone()));
        let applied = net.lock().map_err(|_| anyhow::anyhow!("network lock poisoned"))?.partition(&g);
        if let Err(e) = applied {
            rec.fail(process, "nemesis", Op::Start(description.clone()), &format!("{e:#}"));
            return Err(e.context("installing the bootstrap partition"));
        }
        rec.ok(process, "nemesis", Op::Start(description.clone()));
        println!("jepsen-lite: fault (the cluster forms under it): {description}");
        Ok(Some(BootstrapPartition { process, description, fault: opts.fault }))
    }

    /// Lets the nodes try to form under the partition for the fault time,
    /// then heals it.
    pub(super) async fn heal(self, rec: &Recorder, net: &Mutex<Net>) -> Result<()> {
        tokio::time::sleep(self.fault).await;
        let op = Op::Stop(self.description.clone());
        rec.invoke(self.process, "nemesis", op.clone());
        net.lock().map_err(|_| anyhow::anyhow!("network lock poisoned"))?.heal()?;
        rec.ok(self.process, "nemesis", op);
        println!("jepsen-lite: bootstrap partition healed");
        Ok(())
    }
}

/// The applied index node `i` reports, if it answers.
async fn applied_index(i: usize) -> Option<u64> {
    let s = workload::admin(i).with_timeout(Duration::from_secs(1)).status().await.ok()?;
    s.value.raft.and_then(|r| r.applied_index)
}

/// The lag route with a weight that changes at every write.
fn lag_route(k: u32) -> Result<RouteSpec> {
    let spec = serde_json::json!({
        "name": LAG_ROUTE, "listen": ":7003", "balance": "round_robin",
        "backends": [{"id": "x", "addr": "10.213.7.250:9", "weight": 1 + k % 256}],
    });
    serde_json::from_value(spec).context("building the lag route")
}

impl NemesisRunner<'_> {
    /// Cuts off a follower, remembering where it stood.
    pub(super) async fn lag(&mut self, initial: &[usize], nodes: &[usize]) -> (String, Result<Applied>) {
        let leader = find_leader(initial).await;
        let followers: Vec<usize> = initial.iter().copied().filter(|&n| Some(n) != leader).collect();
        let pool = if followers.is_empty() { initial } else { &followers };
        let victim = nemesis::pick(pool, 1, &mut self.rng)[0];
        let from = applied_index(victim).await.unwrap_or(0);
        let installed_before = self.installed(victim);
        let g = nemesis::isolate(victim, nodes);
        let description =
            format!("{} n{victim} (from index {from}) {}", Nemesis::LaggingNode, grudge_text(&g));
        let lag = Lag { node: victim, target: from + 2 * SNAPSHOT_LOGS + 20, installed_before };
        (description, self.partition(&g).map(|_| Applied::Lagging(lag)))
    }

    /// The fault time: a lagging node's peers are written to until they
    /// passed its target (for up to [`LAG_OVERTIME`] past the fault time:
    /// the fault lasts until they did); a joined node serves clients once
    /// it forwards.
    pub(super) async fn during(&self, applied: &Applied, fault: Duration) {
        let deadline = Instant::now() + fault;
        match applied {
            Applied::Lagging(lag) => self.write_past(lag, deadline + LAG_OVERTIME).await,
            Applied::Joined(i, _) => {
                let serve_until = deadline.checked_sub(DRAIN).unwrap_or(deadline);
                if self.wait_serving(*i, serve_until).await {
                    self.ctx.joined.add(*i);
                    println!("jepsen-lite: n{i} forwards: clients use it");
                    tokio::time::sleep_until(serve_until).await;
                    self.ctx.joined.remove(*i);
                } else {
                    println!("jepsen-lite: n{i} did not forward within the window: clients never used it");
                }
            }
            _ => {}
        }
        tokio::time::sleep_until(deadline).await;
    }

    /// Writes the lag route through the other nodes until they applied
    /// the lagging node's target, or the deadline.
    async fn write_past(&self, lag: &Lag, deadline: Instant) {
        let start = Instant::now();
        let others: Vec<usize> = self.initial.iter().copied().filter(|&n| n != lag.node).collect();
        let mut k = 0u32;
        while Instant::now() < deadline {
            let mut reached = 0;
            for &n in &others {
                reached = reached.max(applied_index(n).await.unwrap_or(0));
            }
            if reached >= lag.target {
                let secs = start.elapsed().as_secs_f64();
                println!(
                    "jepsen-lite: the majority applied index {reached}, past n{}'s target, in {secs:.1} s",
                    lag.node
                );
                return;
            }
            // Writers in parallel, each writing in turn; failures are fine:
            // the next write or the workloads move the log on.
            let mut writers = tokio::task::JoinSet::new();
            for w in 0..LAG_WRITERS {
                // Every write a different weight, so each one is a new entry.
                let routes: Vec<RouteSpec> = (0..LAG_WRITES_EACH)
                    .filter_map(|j| lag_route(k + w * LAG_WRITES_EACH + j).ok())
                    .collect();
                let node = others[w as usize % others.len().max(1)];
                writers.spawn(async move {
                    let client = workload::admin(node).with_timeout(Duration::from_secs(2));
                    for route in routes {
                        let _ = client.put_route(&route, WriteOpts::default()).await;
                    }
                });
            }
            k = k.wrapping_add(LAG_WRITERS * LAG_WRITES_EACH);
            while writers.join_next().await.is_some() {}
        }
        println!(
            "jepsen-lite: warning: n{}'s peers did not reach index {} within the fault and {LAG_OVERTIME:?} more",
            lag.node, lag.target
        );
    }

    /// After the heal: waits (the heal time, or up to 10 s more) until the
    /// lagging node applied its target, and says whether it installed a
    /// snapshot to get there (its log says so).
    pub(super) async fn lag_healed(&self, lag: &Lag, heal: Duration) {
        let start = Instant::now();
        let give_up = start + heal + Duration::from_secs(10);
        let n = lag.node;
        loop {
            let applied = applied_index(n).await.unwrap_or(0);
            let installed = self.installed(n) > lag.installed_before;
            if applied >= lag.target && installed {
                println!(
                    "jepsen-lite: n{n} caught up (applied index {applied}) by installing a snapshot, {:.1} s after the heal",
                    start.elapsed().as_secs_f64()
                );
                break;
            }
            if Instant::now() >= give_up {
                println!(
                    "jepsen-lite: warning: n{n} at applied index {applied} (target {}), snapshot installed: {installed}",
                    lag.target
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep_until(start + heal).await;
    }

    /// How many snapshots node `i`'s current log says it installed.
    fn installed(&self, i: usize) -> usize {
        let path = self.procs.lock().ok().and_then(|p| p.log(self.spec, i));
        let log = path.and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
        log.lines().filter(|l| l.contains(INSTALLED)).count()
    }

    /// Polls a connection through node `i`'s traffic port until one echoes.
    async fn wait_serving(&self, i: usize, until: Instant) -> bool {
        let addr = std::net::SocketAddr::new(net::ip(i).into(), TRAFFIC_PORT);
        while Instant::now() < until {
            let probe = tokio::time::timeout(Duration::from_secs(1), echo(addr, "probe")).await;
            if matches!(probe, Ok(Ok(_))) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &std::path::Path, nemeses: Vec<Nemesis>) -> TestOptions {
        TestOptions {
            nodes: 3,
            workloads: Vec::new(),
            nemeses,
            time: Duration::from_secs(1),
            fault: Duration::from_secs(1),
            long_fault: Duration::from_secs(1),
            heal: Duration::from_secs(1),
            settle: Duration::from_secs(1),
            seed: 1,
            ferryd: PathBuf::from("ferryd"),
            run_dir: dir.to_path_buf(),
            concurrency: 1,
            register_retries: 2,
            unsafe_fault: None,
            ferryd_log: "info".into(),
        }
    }

    #[test]
    fn lagging_node_runs_give_every_node_a_small_snapshot_interval() -> Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(node_config(&opts(dir.path(), vec![Nemesis::Kill]))?, None);
        let path = node_config(&opts(dir.path(), vec![Nemesis::LaggingNode]))?.context("a config file")?;
        let text = std::fs::read_to_string(path)?;
        assert!(text.contains("[cluster]\nsnapshot_logs = 50\n"), "{text}");
        Ok(())
    }

    #[test]
    fn the_lag_route_changes_its_weight_at_every_write_within_the_limit() -> Result<()> {
        let weights: Vec<u32> =
            (0..300).map(|k| lag_route(k).map(|r| r.backends[0].weight)).collect::<Result<_>>()?;
        assert!(weights.iter().all(|&w| (1..=256).contains(&w)));
        assert!(weights.windows(2).all(|w| w[0] != w[1]));
        Ok(())
    }
}
