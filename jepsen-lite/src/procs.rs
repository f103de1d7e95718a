//! The `ferryd` processes of a run, one per node namespace, started through
//! `ip netns exec` (which execs, so the child's PID is ferryd's own) and
//! signalled by PID only: `kill -9` and restart from the same data dir,
//! `SIGSTOP`/`SIGCONT`, and a graceful stop at the end.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::net::{self, Net};

/// ferryd's `[admin] request_timeout_ms` on every node: the suite starts
/// nodes without a config file, so it is the default (5000). A write sent to
/// a node cannot take effect later than this after it was sent (the
/// `deadline_ns` of a write's invocation).
pub const NODE_REQUEST_TIMEOUT: Duration = Duration::from_millis(5_000);

/// How a node is started.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// ferryd's binary.
    pub ferryd: PathBuf,
    /// The run directory: data dirs and logs go under it.
    pub dir: PathBuf,
    /// `--bootstrap-expect` for the initial nodes (0 for later joiners).
    pub bootstrap_expect: usize,
    /// The initial nodes, whose gossip addresses are the join seeds.
    pub seeds: Vec<usize>,
    /// Extra environment: `RUST_LOG` (`info` when absent) and the fault
    /// switch `FERRYD_UNSAFE_FAULT`.
    pub env: Vec<(String, String)>,
    /// A configuration file every node reads first (`--config`; the flags
    /// override it), e.g. a small `[cluster] snapshot_logs`.
    pub config: Option<PathBuf>,
}

/// One node's process and how it was started.
#[derive(Debug)]
struct Proc {
    child: Child,
    paused: bool,
}

/// The running nodes.
#[derive(Debug, Default)]
pub struct Procs {
    procs: BTreeMap<usize, Proc>,
    /// How many times each node was started (names its log files).
    starts: BTreeMap<usize, u32>,
}

impl NodeSpec {
    /// Node `i`'s data dir under the run directory `dir`.
    pub fn data_dir(dir: &Path, i: usize) -> PathBuf {
        dir.join(format!("n{i}"))
    }
}

impl Procs {
    /// Starts node `i` in its namespace, with its data dir
    /// `dir/n{i}` (kept across restarts).
    pub fn start(&mut self, net: &Net, spec: &NodeSpec, i: usize, initial: bool) -> Result<()> {
        if self.procs.contains_key(&i) {
            bail!("node {i} is already running");
        }
        let starts = self.starts.entry(i).or_insert(0);
        *starts += 1;
        let log = spec.dir.join(format!("n{i}.{starts}.log"));
        let data = NodeSpec::data_dir(&spec.dir, i);
        let seeds: Vec<String> = spec.seeds.iter().map(|&s| net::ip(s).to_string()).collect();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &net.ns(i)]).arg(&spec.ferryd);
        if let Some(config) = &spec.config {
            cmd.arg("--config").arg(config);
        }
        cmd.args(["--name", &format!("n{i}"), "--bind", &net::ip(i).to_string()])
            .arg("--data-dir")
            .arg(&data)
            .args(["--gossip-profile", "fast", "--join", &seeds.join(",")]);
        if initial && spec.bootstrap_expect > 0 {
            cmd.args(["--bootstrap-expect", &spec.bootstrap_expect.to_string()]);
        }
        cmd.env("RUST_LOG", "info")
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).with_context(|| format!("creating {}", log.display()))?);
        let child = cmd.spawn().with_context(|| format!("starting node {i}"))?;
        self.procs.insert(i, Proc { child, paused: false });
        Ok(())
    }

    /// The nodes whose process runs (paused ones included).
    pub fn running(&mut self) -> Vec<usize> {
        self.reap();
        self.procs.keys().copied().collect()
    }

    /// Whether node `i` runs (paused included).
    pub fn is_running(&mut self, i: usize) -> bool {
        self.reap();
        self.procs.contains_key(&i)
    }

    /// Forgets processes that exited on their own.
    fn reap(&mut self) {
        self.procs.retain(|_, p| matches!(p.child.try_wait(), Ok(None)));
    }

    fn signal(&mut self, i: usize, sig: Signal) -> Result<()> {
        self.reap();
        let p = self.procs.get(&i).with_context(|| format!("node {i} is not running"))?;
        let pid = Pid::from_raw(i32::try_from(p.child.id())?);
        kill(pid, sig).with_context(|| format!("sending {sig} to node {i}"))
    }

    /// `kill -9` node `i` and reap it.
    pub fn kill9(&mut self, i: usize) -> Result<()> {
        self.signal(i, Signal::SIGKILL)?;
        if let Some(mut p) = self.procs.remove(&i) {
            p.child.wait().with_context(|| format!("reaping node {i}"))?;
        }
        Ok(())
    }

    /// `SIGSTOP` node `i`.
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.signal(i, Signal::SIGSTOP)?;
        if let Some(p) = self.procs.get_mut(&i) {
            p.paused = true;
        }
        Ok(())
    }

    /// `SIGCONT` every paused node.
    pub fn resume_all(&mut self) -> Result<()> {
        let paused: Vec<usize> = self.procs.iter().filter(|(_, p)| p.paused).map(|(i, _)| *i).collect();
        for i in paused {
            self.signal(i, Signal::SIGCONT)?;
            if let Some(p) = self.procs.get_mut(&i) {
                p.paused = false;
            }
        }
        Ok(())
    }

    /// SIGCONT, then SIGTERM every node; SIGKILL what is left after `grace`.
    pub fn stop_all(&mut self, grace: Duration) {
        let _ = self.resume_all();
        for p in self.procs.values() {
            if let Ok(pid) = i32::try_from(p.child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !self.running().is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
        for (_, mut p) in std::mem::take(&mut self.procs) {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// The last log of node `i`, if any.
    pub fn log(&self, spec: &NodeSpec, i: usize) -> Option<PathBuf> {
        let n = self.starts.get(&i)?;
        Some(spec.dir.join(format!("n{i}.{n}.log")))
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, mut p) in std::mem::take(&mut self.procs) {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// Whether `path` is an executable file.
pub fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
