//! `jepsen-lite test`: one run against real `ferryd` processes.
//!
//! 1. Check the machine (root, `ip`, `iptables`), clear a crashed run's
//!    namespaces and powerfs mounts, build the run's network
//!    ([`crate::net`]) and move the suite into the bridge namespace. With
//!    `power-loss`, mount the nodes' data dirs on powerfs ([`crate::powerfs`]).
//! 2. Start an echo backend and a `ferryd` in every node namespace; the
//!    nodes form the cluster by gossip (`--bootstrap-expect N`), under a
//!    partition at first with `bootstrap-partition` ([`nemeses`]).
//! 3. Create the workloads' routes, start the samplers, the clients and the
//!    nemesis, which follows the seeded schedule of fault and heal windows.
//! 4. At the end: heal everything, let the cluster settle while traffic and
//!    samplers go on, read the set one last time, stop everything and
//!    remove the namespaces (also on Ctrl-C, and on a panic through `Drop`).
//! 5. Write `checker.json` and check the history into `results.json`,
//!    `summary.txt` and `report.html`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferry_client::api::{GossipState, RaftMembership, Role};
use ferry_client::http::WriteOpts;

use crate::checker::CheckConfig;
use crate::history::{Event, Op, RunClock};
use crate::nemesis::{self, Nemesis, Timing, Window};
use crate::net::{self, Net};
use crate::powerfs::{self, disks::Disks};
use crate::procs::{NodeSpec, Procs};
use crate::run_dir::{Checked, RunDir};
use crate::workload::{self, BACKEND_PORT, Ctx, Joined, Recorder, Stop, register, sampler, set, traffic};

mod nemeses;

/// Process ids: clients of each workload from their base, the samplers and
/// the nemesis above them.
const SET_BASE: u32 = 1_000_000;
const TRAFFIC_BASE: u32 = 2_000_000;
const SAMPLER_BASE: u32 = 3_000_000;
const NEMESIS: u32 = 4_000_000;
const MEMBERSHIP_NEMESIS: u32 = 4_000_001;
const FINAL_READ: u32 = 4_000_002;

/// A workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    Register,
    Set,
    Traffic,
}

impl std::str::FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "register" => Ok(Workload::Register),
            "set" => Ok(Workload::Set),
            "traffic" => Ok(Workload::Traffic),
            other => Err(format!("unknown workload {other:?}: expected register, set or traffic")),
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct TestOptions {
    pub nodes: usize,
    pub workloads: Vec<Workload>,
    pub nemeses: Vec<Nemesis>,
    /// Length of the faulty part of the run.
    pub time: Duration,
    pub fault: Duration,
    /// How long a `partition-long` fault lasts.
    pub long_fault: Duration,
    pub heal: Duration,
    /// Healed time at the end, before the final reads.
    pub settle: Duration,
    pub seed: u64,
    pub ferryd: PathBuf,
    pub run_dir: PathBuf,
    /// Client processes per workload.
    pub concurrency: usize,
    /// Resends of a register write whose outcome was unknown (0: none, so
    /// an indeterminate write stays indeterminate for the checkers).
    pub register_retries: usize,
    /// `FERRYD_UNSAFE_FAULT` for every node (the proof the suite can fail).
    pub unsafe_fault: Option<String>,
    /// ferryd's `RUST_LOG` on every node.
    pub ferryd_log: String,
}

/// Why a run gave no verdict: bad machine or arguments (exit 2), or the run
/// itself broke down.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Prereq(#[from] net::PrereqError),
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

/// Runs the test and checks its history.
pub fn run(opts: &TestOptions) -> Result<Checked, RunError> {
    net::check_prereqs()?;
    if !crate::procs::executable(&opts.ferryd) {
        return Err(anyhow::anyhow!(
            "ferryd not found at {} (build it with `cargo build -p ferry-node`, or pass --ferryd)",
            opts.ferryd.display()
        )
        .into());
    }
    for ns in net::clear_leftovers()? {
        println!("removed namespace {ns} left by an earlier run");
    }
    for mount in crate::powerfs::disks::clear_leftovers().map_err(anyhow::Error::from)? {
        println!("unmounted powerfs disk {} left by an earlier run", mount.display());
    }
    std::fs::create_dir_all(&opts.run_dir).with_context(|| format!("creating {}", opts.run_dir.display()))?;
    println!("jepsen-lite: seed {} ({} nodes), run dir {}", opts.seed, opts.nodes, opts.run_dir.display());
    let net = Net::create(opts.nodes)?;
    net.enter_bridge()?;
    let net = Arc::new(Mutex::new(net));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Ctrl-C at any point drops the run: its guards kill every process it
    // started; the namespaces go right after.
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = drive(opts, Arc::clone(&net)) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted (Ctrl-C): the run was stopped and cleaned up")),
        }
    });
    drop(runtime);
    if let Ok(mut n) = net.lock() {
        n.destroy();
    }
    outcome?;
    let config = check_config(opts);
    let dir = RunDir::new(&opts.run_dir);
    std::fs::write(dir.config_path(), serde_json::to_string_pretty(&config).context("checker.json")?)
        .context("writing checker.json")?;
    Ok(dir.check(&config).map_err(anyhow::Error::from)?)
}

/// The checkers' settings for this run.
fn check_config(opts: &TestOptions) -> CheckConfig {
    let mut c = CheckConfig::default();
    c.linearizable.initial = Some(register::INITIAL);
    c.stale_reads.initial = Some(register::INITIAL);
    c.convergence.nodes = (1..=opts.nodes).map(workload::name).collect();
    // A restarted node needs a moment before its route listens again.
    c.availability.settle_ms = 5_000;
    c.catch_up.nodes = c.convergence.nodes.clone();
    c
}

/// Everything after the network exists: processes, clients, nemesis.
async fn drive(opts: &TestOptions, net: Arc<Mutex<Net>>) -> Result<()> {
    let clock = Arc::new(RunClock::start());
    let history =
        std::fs::File::create(opts.run_dir.join("history.jsonl")).context("creating history.jsonl")?;
    let rec = Recorder::new(clock, history);
    // Declared before the processes, so dropped after them (a Ctrl-C or a
    // panic kills the nodes before their disks go).
    let disks = power_loss_disks(opts, &initial_nodes(opts))?;
    let procs = Arc::new(Mutex::new(Procs::default()));
    let mut backends = Backends::default();
    let initial = initial_nodes(opts);
    let spec = NodeSpec {
        ferryd: opts.ferryd.clone(),
        dir: opts.run_dir.clone(),
        bootstrap_expect: opts.nodes,
        seeds: initial.clone(),
        env: opts
            .unsafe_fault
            .iter()
            .map(|f| ("FERRYD_UNSAFE_FAULT".to_string(), f.clone()))
            .chain([("RUST_LOG".to_string(), opts.ferryd_log.clone())])
            .collect(),
        config: nemeses::node_config(opts)?,
    };
    let joined = Joined::default();

    let result = async {
        let bootstrap = nemeses::BootstrapPartition::start(opts, &rec, NEMESIS, &net)?;
        {
            let net = net.lock().map_err(|_| anyhow::anyhow!("network lock poisoned"))?;
            for &i in &initial {
                backends.start(&net, i)?;
                lock(&procs)?.start(&net, &spec, i, true)?;
            }
        }
        if let Some(b) = bootstrap {
            b.heal(&rec, &net).await?;
        }
        println!("jepsen-lite: waiting for the cluster to form");
        wait_formed(&initial).await.map_err(|e| with_logs(e, &procs, &spec, &initial))?;
        create_routes(opts, &initial).await?;
        println!("jepsen-lite: cluster formed, routes created; running for {:?}", opts.time);

        let stop = Stop::default();
        let ctx = Ctx {
            rec: rec.clone(),
            stop: stop.clone(),
            nodes: initial.clone(),
            joined: joined.clone(),
            timeout: Duration::from_secs(3),
        };
        let sampler_stop = Stop::default();
        let sampler_ctx = Ctx { stop: sampler_stop.clone(), ..ctx.clone() };
        let mut samplers = Vec::new();
        for &i in &initial {
            samplers.push(tokio::spawn(sampler::sampler(sampler_ctx.clone(), SAMPLER_BASE + i as u32, i)));
        }
        // Writers stop when the faults end, so the cluster can converge;
        // traffic and the samplers go on through the settle time.
        let writers_stop = Stop::default();
        let writers_ctx = Ctx { stop: writers_stop.clone(), ..ctx.clone() };
        let (mut writers, mut traffic) = (Vec::new(), Vec::new());
        let c = opts.concurrency.max(1);
        let set_pace = set::pace(c, opts.time);
        for k in 0..c {
            let seed = opts.seed.wrapping_mul(1_000_003).wrapping_add(k as u64);
            let (k32, c32) = (k as u32, c as u32);
            for w in &opts.workloads {
                match w {
                    Workload::Register => writers.push(tokio::spawn(register::register(
                        writers_ctx.clone(),
                        k32,
                        c32,
                        seed,
                        register::Values::new(k32, c32),
                        opts.register_retries,
                    ))),
                    Workload::Set => writers.push(tokio::spawn(set::set(
                        writers_ctx.clone(),
                        SET_BASE + k32,
                        c32,
                        seed ^ 1,
                        (k as u64, c as u64),
                        set_pace,
                    ))),
                    Workload::Traffic => traffic.push(tokio::spawn(traffic::traffic(
                        ctx.clone(),
                        TRAFFIC_BASE + k32,
                        seed ^ 2,
                    ))),
                }
            }
        }

        let mut rng = fastrand::Rng::with_seed(opts.seed);
        // Membership changes run in their own nemesis process, beside the
        // other faults (nodes join and leave while partitions, kills and
        // pauses go on).
        // The bootstrap partition ran before the cluster formed.
        let faults: Vec<Nemesis> = opts
            .nemeses
            .iter()
            .copied()
            .filter(|n| !matches!(n, Nemesis::Membership | Nemesis::BootstrapPartition))
            .collect();
        let membership = opts.nemeses.contains(&Nemesis::Membership);
        let timing = Timing { fault: opts.fault, long_fault: opts.long_fault, heal: opts.heal };
        let windows = nemesis::schedule(&faults, timing, opts.time, &mut rng);
        let member_windows = if membership {
            nemesis::schedule(&[Nemesis::Membership], timing, opts.time, &mut rng)
        } else {
            Vec::new()
        };
        let member_rng = fastrand::Rng::with_seed(opts.seed ^ 0x6d65_6d62);
        let nemesis_result = {
            let runner = |process, rng, next_extra| NemesisRunner {
                process,
                rec: &rec,
                net: &net,
                procs: &procs,
                spec: &spec,
                initial: &initial,
                disks: disks.as_ref(),
                rng,
                next_extra,
                stop: &stop,
                ctx: &ctx,
            };
            let mut n = runner(NEMESIS, rng, 0);
            let mut m = runner(MEMBERSHIP_NEMESIS, member_rng, opts.nodes + 1);
            let interrupted = tokio::select! {
                (a, b) = async { tokio::join!(n.run(&windows), m.run(&member_windows)) } => a.and(b).map(|()| false),
                _ = tokio::signal::ctrl_c() => Ok(true),
            };
            let healed = n.heal_everything().await;
            interrupted.and_then(|i| healed.map(|()| i))
        };
        let interrupted = nemesis_result;
        writers_stop.stop();
        if !matches!(interrupted, Ok(false)) {
            stop.stop();
            sampler_stop.stop();
            interrupted?;
            bail!("interrupted (Ctrl-C): the run was stopped and cleaned up");
        }
        for w in writers {
            let _ = w.await;
        }
        println!("jepsen-lite: faults over, writes stopped; settling for {:?}", opts.settle);
        if opts.workloads.contains(&Workload::Set) && !set::read_set(&ctx, FINAL_READ).await {
            println!("jepsen-lite: the final set read got no answer from any node");
        }
        tokio::time::sleep(opts.settle).await;
        stop.stop();
        for t in traffic {
            let _ = t.await;
        }
        sampler_stop.stop();
        for s in samplers {
            let _ = s.await;
        }
        Ok(())
    }
    .await;

    // Teardown, whatever happened.
    let procs_to_stop = Arc::clone(&procs);
    let _ = tokio::task::spawn_blocking(move || {
        if let Ok(mut p) = procs_to_stop.lock() {
            p.stop_all(Duration::from_secs(5));
        }
    })
    .await;
    backends.stop();
    result
}

fn initial_nodes(opts: &TestOptions) -> Vec<usize> {
    (1..=opts.nodes).collect()
}

/// With the `power-loss` nemesis, the initial nodes' data dirs are powerfs
/// disks (see [`crate::powerfs`]).
fn power_loss_disks(opts: &TestOptions, nodes: &[usize]) -> Result<Option<Disks>> {
    if !opts.nemeses.contains(&Nemesis::PowerLoss) {
        return Ok(None);
    }
    let disks = Disks::mount(nodes.iter().map(|&i| (i, NodeSpec::data_dir(&opts.run_dir, i))))?;
    println!("jepsen-lite: data dirs on powerfs disks (power-loss nemesis)");
    Ok(Some(disks))
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| anyhow::anyhow!("lock poisoned"))
}

/// Adds the last lines of every node's log to `e`.
fn with_logs(e: anyhow::Error, procs: &Mutex<Procs>, spec: &NodeSpec, nodes: &[usize]) -> anyhow::Error {
    let mut text = String::new();
    if let Ok(p) = procs.lock() {
        for &i in nodes {
            if let Some(path) = p.log(spec, i) {
                let log = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(8).collect();
                text.push_str(&format!("\n--- {} (last lines)\n", path.display()));
                for l in tail.iter().rev() {
                    text.push_str(l);
                    text.push('\n');
                }
            }
        }
    }
    e.context(text)
}

/// Waits until every node lists the initial nodes as alive Raft members.
async fn wait_formed(nodes: &[usize]) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let voters = nodes.len().min(5);
    loop {
        let mut ok = true;
        for &i in nodes {
            let client = workload::admin(i);
            let formed = match client.members().await {
                Ok(m) => {
                    m.value
                        .iter()
                        .filter(|m| m.raft == RaftMembership::Voter && m.state == Some(GossipState::Alive))
                        .count()
                        >= voters
                        && m.value.iter().filter(|m| m.raft != RaftMembership::None).count() >= nodes.len()
                }
                Err(_) => false,
            };
            ok &= formed;
        }
        if ok {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the cluster did not form within 90 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Creates the workloads' routes and waits until every node serves them.
async fn create_routes(opts: &TestOptions, nodes: &[usize]) -> Result<()> {
    let mut routes = Vec::new();
    for w in &opts.workloads {
        routes.extend(match w {
            Workload::Register => register::routes(),
            Workload::Set => set::routes(),
            Workload::Traffic => vec![traffic::traffic_route(nodes)],
        });
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for route in &routes {
        loop {
            let node = nodes[0];
            let client = workload::admin(node);
            match client.put_route(route, WriteOpts::default()).await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    bail!("creating route {}: {e}", route.name)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    for &i in nodes {
        let client = workload::admin(i);
        loop {
            let have = client.routes(true).await.map(|r| r.value.len()).unwrap_or(0);
            if have >= routes.len() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("node n{i} did not apply the routes within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// The echo backends, one per node namespace.
#[derive(Debug, Default)]
struct Backends(BTreeMap<usize, Child>);

impl Backends {
    fn start(&mut self, net: &Net, i: usize) -> Result<()> {
        let me = std::env::current_exe().context("locating jepsen-lite itself")?;
        let listen = SocketAddr::new(net::ip(i).into(), BACKEND_PORT).to_string();
        let child = Command::new("ip")
            .args(["netns", "exec", &net.ns(i)])
            .arg(me)
            .args(["backend", "--name", &format!("b{i}"), "--listen", &listen])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting the backend of n{i}"))?;
        self.0.insert(i, child);
        Ok(())
    }

    fn stop(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.0) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Applies the schedule's faults and records them.
struct NemesisRunner<'a> {
    /// This nemesis's process id in the history.
    process: u32,
    rec: &'a Recorder,
    net: &'a Mutex<Net>,
    procs: &'a Mutex<Procs>,
    spec: &'a NodeSpec,
    initial: &'a [usize],
    /// The nodes' powerfs disks, with the `power-loss` nemesis.
    disks: Option<&'a Disks>,
    rng: fastrand::Rng,
    next_extra: usize,
    stop: &'a Stop,
    /// The clients' context: joined nodes are added to its pool.
    ctx: &'a Ctx,
}

/// What a fault window did, to undo at its end.
enum Applied {
    Partition,
    Killed(Vec<usize>),
    Paused,
    /// A node that joined; `true`: it leaves at heal, `false`: it is
    /// killed and removed by force.
    Joined(usize, bool),
    /// A node isolated until the leader purged its log past it.
    Lagging(nemeses::Lag),
    Nothing,
}

impl NemesisRunner<'_> {
    /// Runs every window; the last one's heal time is left to the run's
    /// settle phase, which starts right at the last heal (writers stop
    /// there, so convergence is measured from it).
    async fn run(&mut self, windows: &[Window]) -> Result<()> {
        for (k, w) in windows.iter().enumerate() {
            if self.stop.stopped() {
                return Ok(());
            }
            let (description, applied) = self.start(w.nemesis).await;
            self.during(&applied, w.fault).await;
            let lagging = match &applied {
                Applied::Lagging(lag) => Some(lag.clone()),
                _ => None,
            };
            self.end(&description, applied).await;
            let heal = if k + 1 < windows.len() { w.heal } else { Duration::ZERO };
            match lagging {
                Some(lag) => self.lag_healed(&lag, heal).await,
                None => tokio::time::sleep(heal).await,
            }
        }
        Ok(())
    }

    /// Records and applies the start of a fault; returns what to undo.
    async fn start(&mut self, nemesis: Nemesis) -> (String, Applied) {
        // The window opens before the fault is applied (a kill of five
        // nodes takes a while): what fails from here on is in it.
        let invoked = self.rec.now();
        let initial = self.initial.to_vec();
        let minority = (initial.len() - 1) / 2;
        // Partitions also cut the joined nodes clients use.
        let mut nodes = initial.clone();
        nodes.extend(self.ctx.joined.list());
        let (description, plan): (String, Result<Applied>) = match nemesis {
            Nemesis::PartitionRandomHalves => {
                let g = nemesis::random_halves(&nodes, &mut self.rng);
                (format!("{nemesis} {}", grudge_text(&g)), self.partition(&g))
            }
            Nemesis::PartitionMajoritiesRing => {
                let g = nemesis::majorities_ring(&nodes, &mut self.rng);
                (format!("{nemesis} {}", grudge_text(&g)), self.partition(&g))
            }
            Nemesis::Bridge => {
                let g = nemesis::bridge(&nodes, &mut self.rng);
                (format!("{nemesis} {}", grudge_text(&g)), self.partition(&g))
            }
            Nemesis::PartitionRandomNode => {
                let victim = nemesis::pick(&initial, 1, &mut self.rng)[0];
                let g = nemesis::isolate(victim, &nodes);
                (format!("{nemesis} n{victim} {}", grudge_text(&g)), self.partition(&g))
            }
            Nemesis::IsolateLeader => {
                let fallback = nemesis::pick(&initial, 1, &mut self.rng)[0];
                let (leader, how) = match find_leader(&initial).await {
                    Some(l) => (l, "leader"),
                    None => (fallback, "no leader found; random node"),
                };
                let g = nemesis::isolate(leader, &nodes);
                (format!("{nemesis} n{leader} ({how}) {}", grudge_text(&g)), self.partition(&g))
            }
            Nemesis::Kill => {
                let victims = nemesis::pick(&initial, minority.max(1), &mut self.rng);
                let r = self.each(&victims, |p, i| p.kill9(i)).map(|()| Applied::Killed(victims.clone()));
                (format!("{nemesis} {}", names(&victims)), r)
            }
            Nemesis::Pause => {
                let victims = nemesis::pick(&initial, minority.max(1), &mut self.rng);
                let r = self.each(&victims, |p, i| p.pause(i)).map(|()| Applied::Paused);
                (format!("{nemesis} {}", names(&victims)), r)
            }
            Nemesis::Membership => {
                let i = self.next_extra;
                self.next_extra += 1;
                // Every other joiner is removed by force (kill -9, then
                // POST /v1/members/{id}/remove), the others leave.
                let graceful = self.rng.bool();
                let how = if graceful { "then leave" } else { "then kill and force-remove" };
                (format!("{nemesis} join n{i}, {how}"), self.join(i, graceful))
            }
            Nemesis::PartitionOneWay => {
                let g = nemesis::one_way(&nodes, &mut self.rng);
                (format!("{nemesis} {}", grudge_text(&g)), self.partition(&g))
            }
            Nemesis::PartitionLong => {
                let g = nemesis::random_halves(&nodes, &mut self.rng);
                (format!("{nemesis} {}", grudge_text(&g)), self.partition(&g))
            }
            Nemesis::PacketLoss => {
                let p = nemesis::loss_probability(&mut self.rng);
                let r = lock(self.net).and_then(|n| n.lossy(&nemesis::all_links(&nodes), p));
                (format!("{nemesis} loss={p:.2} {}", names(&nodes)), r.map(|()| Applied::Partition))
            }
            Nemesis::KillAll => {
                let running = lock(self.procs).map(|mut p| p.running()).unwrap_or_default();
                let victims: Vec<usize> = initial.iter().copied().filter(|i| running.contains(i)).collect();
                let r = self.each(&victims, |p, i| p.kill9(i)).map(|()| Applied::Killed(victims.clone()));
                (format!("{nemesis} {}", names(&victims)), r)
            }
            Nemesis::LaggingNode => self.lag(&initial, &nodes).await,
            // Applied at the start only (see `nemeses::BootstrapPartition`).
            Nemesis::BootstrapPartition => (format!("{nemesis} (only at bootstrap)"), Ok(Applied::Nothing)),
            Nemesis::PowerLoss => {
                let lead = Duration::from_millis(self.rng.u64(powerfs::cut::LEAD_MS));
                let r = match self.disks {
                    Some(d) => powerfs::cut::cut_power(self.procs, d, &initial, lead)
                        .await
                        .map(|()| Applied::Killed(initial.clone())),
                    None => Err(anyhow::anyhow!("no powerfs disks were mounted")),
                };
                (format!("{nemesis} {} (cut {} ms into the window)", names(&initial), lead.as_millis()), r)
            }
        };
        self.rec.record(&Event::invoke(self.process, "nemesis", Op::Start(description.clone()), invoked));
        match plan {
            Ok(applied) => {
                self.rec.ok(self.process, "nemesis", Op::Start(description.clone()));
                println!("jepsen-lite: fault: {description}");
                (description, applied)
            }
            Err(e) => {
                self.rec.info(self.process, "nemesis", Op::Start(description.clone()), &format!("{e:#}"));
                println!("jepsen-lite: fault {description} failed: {e:#}");
                (description, Applied::Nothing)
            }
        }
    }

    /// Records and undoes one fault.
    async fn end(&mut self, description: &str, applied: Applied) {
        let op = Op::Stop(description.to_string());
        self.rec.invoke(self.process, "nemesis", op.clone());
        let result = match applied {
            Applied::Partition | Applied::Lagging(_) => self.heal_partition(),
            Applied::Killed(victims) => self.restart(&victims),
            Applied::Paused => lock(self.procs).and_then(|mut p| p.resume_all()),
            Applied::Joined(i, true) => match self.leave_joined(i).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    // A partition may keep it from leaving: remove it as a dead node.
                    println!("jepsen-lite: {e:#}; removing n{i} by force");
                    self.force_remove(i).await
                }
            },
            Applied::Joined(i, false) => {
                self.ctx.joined.remove(i);
                self.force_remove(i).await
            }
            Applied::Nothing => Ok(()),
        };
        match result {
            Ok(()) => self.rec.ok(self.process, "nemesis", op),
            Err(e) => {
                println!("jepsen-lite: healing {description} failed: {e:#}");
                self.rec.info(self.process, "nemesis", op, &format!("{e:#}"));
            }
        }
    }

    /// Heals partitions, resumes paused nodes and restarts dead initial
    /// nodes: the cluster's state for the final, healed part of the run.
    async fn heal_everything(&mut self) -> Result<()> {
        self.heal_partition()?;
        lock(self.procs)?.resume_all()?;
        let dead: Vec<usize> = {
            let mut p = lock(self.procs)?;
            self.initial.iter().copied().filter(|&i| !p.is_running(i)).collect()
        };
        self.restart(&dead)
    }

    fn partition(&self, g: &net::Grudge) -> Result<Applied> {
        lock(self.net)?.partition(g)?;
        Ok(Applied::Partition)
    }

    fn heal_partition(&self) -> Result<()> {
        lock(self.net)?.heal()
    }

    fn each(&self, nodes: &[usize], f: impl Fn(&mut Procs, usize) -> Result<()>) -> Result<()> {
        let mut p = lock(self.procs)?;
        for &i in nodes {
            f(&mut p, i)?;
        }
        Ok(())
    }

    fn restart(&self, nodes: &[usize]) -> Result<()> {
        let net = lock(self.net)?;
        let mut p = lock(self.procs)?;
        for &i in nodes {
            if !p.is_running(i) {
                p.start(&net, self.spec, i, true)?;
            }
        }
        Ok(())
    }

    fn join(&self, i: usize, graceful: bool) -> Result<Applied> {
        let mut net = lock(self.net)?;
        net.add_node(i)?;
        lock(self.procs)?.start(&net, self.spec, i, false)?;
        Ok(Applied::Joined(i, graceful))
    }

    /// Kills node `i`, then removes it from Raft through an initial node's
    /// API, retrying while gossip still holds it alive (409) or no initial
    /// node answers, for up to 15 s.
    async fn force_remove(&self, i: usize) -> Result<()> {
        {
            let mut p = lock(self.procs)?;
            if p.is_running(i) {
                p.kill9(i)?;
            }
        }
        let name = workload::name(i);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let mut last = String::from("no initial node answered");
        while tokio::time::Instant::now() < deadline {
            for &n in self.initial {
                let client = workload::admin(n).with_timeout(Duration::from_secs(2));
                let Ok(members) = client.members().await else { continue };
                let Some(m) = members.value.iter().find(|m| m.name == name) else {
                    return Ok(()); // never became a member, or already gone
                };
                if m.raft == RaftMembership::None {
                    return Ok(());
                }
                match client.remove_member(m.id).await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.code() == Some("not_found") => return Ok(()),
                    Err(e) => last = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bail!("could not remove {name}: {last}")
    }

    /// Takes joined node `i` out of the clients' pool, then asks it to leave.
    async fn leave_joined(&self, i: usize) -> Result<()> {
        self.ctx.joined.remove(i);
        self.leave(i).await
    }

    /// Asks node `i` to leave; kills it if it has not exited in 10 s.
    async fn leave(&self, i: usize) -> Result<()> {
        let client = workload::admin(i);
        let asked = client.leave().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if !lock(self.procs)?.is_running(i) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        lock(self.procs)?.kill9(i)?;
        match asked {
            Ok(_) => bail!("n{i} did not exit within 10 s of POST /v1/leave; killed"),
            Err(e) => bail!("POST /v1/leave on n{i}: {e}; killed"),
        }
    }
}

/// The index of the node that says it leads, if one answers.
async fn find_leader(nodes: &[usize]) -> Option<usize> {
    for &i in nodes {
        let client = workload::admin(i).with_timeout(Duration::from_secs(1));
        if let Ok(s) = client.status().await
            && s.value.raft.is_some_and(|r| r.role == Role::Leader)
        {
            return Some(i);
        }
    }
    None
}

fn names(nodes: &[usize]) -> String {
    nodes.iter().map(|&i| workload::name(i)).collect::<Vec<_>>().join(",")
}

fn grudge_text(g: &net::Grudge) -> String {
    g.iter()
        .map(|(n, es)| format!("n{n}x[{}]", names(&es.iter().copied().collect::<Vec<_>>())))
        .collect::<Vec<_>>()
        .join(" ")
}
