//! The real `ferryctl` against a real three-node cluster of `ferryd`
//! processes (gossip, `--bootstrap-expect 3`, a token for writes): every
//! command in table and JSON output, each exit status with its error
//! class, `--addr` failover past a closed port, the token and its
//! environment variables, and `watch` printing a change made through
//! another node.
//!
//! Node i runs on 127.0.N.i with ferryd's default ports (gossip 7946,
//! cluster 7947, admin 7948); N differs per cluster (`next_net`). ferryd is
//! a binary of ferry-node, found next to ferryctl in the target dir. Every
//! process is spawned here and killed by its own handle when its guard
//! drops.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

/// Longest wait for a cluster to form, a change to show, a process to end.
const SETTLE: Duration = Duration::from_secs(30);
/// Longest run of one ferryctl command.
const RUN: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
const TOKEN: &str = "s3cret-token";

fn ferryctl() -> &'static str {
    env!("CARGO_BIN_EXE_ferryctl")
}

/// `ferryd`, built into the same target dir as ferryctl.
fn ferryd() -> Result<PathBuf> {
    let dir = Path::new(ferryctl()).parent().context("ferryctl has no directory")?;
    let path = dir.join("ferryd");
    ensure!(
        path.exists(),
        "{} is missing: build it: cargo build -p ferry-node --bin ferryd (cargo test --workspace does)",
        path.display()
    );
    Ok(path)
}

/// A distinct 127.0.N.0/24 per cluster (N ≥ 1), varied by process id with
/// other multipliers than the other process tests'.
fn next_net() -> u8 {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = std::process::id().wrapping_mul(17).wrapping_add(SEQ.fetch_add(1, Relaxed) * 67 + 101);
    (1 + n % 250) as u8
}

fn ip(net: u8, i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, net, i))
}

/// A child process killed (by its own handle) and reaped on drop; output in
/// files.
struct Proc {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, dir: &Path, log: &str) -> Result<Self> {
        let stdout = dir.join(format!("{log}.stdout"));
        let stderr = dir.join(format!("{log}.stderr"));
        let child = cmd
            .stdout(File::create(&stdout)?)
            .stderr(File::create(&stderr)?)
            .spawn()
            .with_context(|| format!("spawning {log}"))?;
        Ok(Self { child, stdout, stderr })
    }

    fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait(&mut self, within: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                bail!("still running after {within:?}; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGINT, as Ctrl-C sends it (refused once reaped: the PID may be
    /// another process's by then).
    fn interrupt(&mut self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGINT)
    }

    /// Sends `signal` (refused once reaped).
    fn signal(&mut self, signal: nix::sys::signal::Signal) -> Result<()> {
        ensure!(self.child.try_wait()?.is_none(), "already exited");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, signal)?;
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What one ferryctl run gave.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(self) -> Result<Self> {
        ensure!(self.code == 0, "exit {}: {}{}", self.code, self.stdout, self.stderr);
        Ok(self)
    }

    fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.stdout).with_context(|| format!("not JSON: {}", self.stdout))
    }

    fn exits(self, code: i32, stderr_has: &str) -> Result<Self> {
        ensure!(
            self.code == code && self.stderr.contains(stderr_has),
            "expected exit {code} with {stderr_has:?} on stderr, got {}: stdout {:?} stderr {:?}",
            self.code,
            self.stdout,
            self.stderr
        );
        Ok(self)
    }
}

/// Three gossip nodes that formed a cluster with a token for writes.
/// Fields drop in order: processes before their dir.
struct Cluster {
    procs: Vec<Option<Proc>>,
    net: u8,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Result<Self> {
        let net = (0..20)
            .map(|_| next_net())
            .find(|net| {
                (1..=4u8).all(|i| {
                    [7946, 7947, 7948]
                        .iter()
                        .all(|p| TcpListener::bind(SocketAddr::new(ip(*net, i), *p)).is_ok())
                })
            })
            .context("no free 127.0.N.0/24")?;
        let dir = tempfile::Builder::new().prefix("ferryctl-process-").tempdir()?;
        let token = dir.path().join("token");
        fs::write(&token, format!("{TOKEN}\n"))?;
        let config = dir.path().join("ferryd.toml");
        fs::write(&config, format!("[admin]\ntoken_file = {:?}\n", token.display().to_string()))?;
        let mut c = Self { procs: Vec::new(), net, dir };
        let seeds: Vec<String> = (1..=3).map(|i| ip(net, i).to_string()).collect();
        for i in 1..=3u8 {
            c.spawn(i, &["--bootstrap-expect", "3", "--join", &seeds.join(",")])?;
        }
        // Formed: every node lists three alive voters.
        for i in 1..=3 {
            c.poll(&format!("three alive voters seen by n{i}"), || {
                let ms = c.ctl(&["members", "-o", "json", "--addr", &c.admin(i)])?.ok()?.json()?;
                let voters = ms
                    .as_array()
                    .context("an array")?
                    .iter()
                    .filter(|m| m["raft"] == "voter" && m["state"] == "alive")
                    .count();
                ensure!(voters == 3, "{ms}");
                Ok(())
            })?;
        }
        Ok(c)
    }

    /// Starts node `i` (n`i` on 127.0.N.`i`, the token for writes) with
    /// `extra` flags.
    fn spawn(&mut self, i: u8, extra: &[&str]) -> Result<()> {
        let config = self.dir.path().join("ferryd.toml");
        let data = self.dir.path().join(format!("n{i}"));
        let mut cmd = Command::new(ferryd()?);
        cmd.args(["--config", config.to_str().context("path")?])
            .args(["--name", &format!("n{i}"), "--bind", &ip(self.net, i).to_string()])
            .args(["--data-dir", data.to_str().context("path")?, "--gossip-profile", "fast"])
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null());
        let p = Proc::spawn(&mut cmd, self.dir.path(), &format!("n{i}"))?;
        self.procs.push(Some(p));
        ensure!(self.procs.len() == usize::from(i), "nodes start in order");
        Ok(())
    }

    fn admin(&self, i: u8) -> String {
        SocketAddr::new(ip(self.net, i), 7948).to_string()
    }

    fn proc(&mut self, i: u8) -> Result<&mut Proc> {
        self.procs[usize::from(i) - 1].as_mut().with_context(|| format!("n{i} is not running"))
    }

    /// Runs ferryctl with `args` (after `--addr` of node 1 unless `args`
    /// name one) and `env`, bounded.
    fn ctl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Out> {
        self.ctl_full(args, env, Stdio::null())
    }

    /// `ctl_env` with `stdin`.
    fn ctl_full(&self, args: &[&str], env: &[(&str, &str)], stdin: Stdio) -> Result<Out> {
        let mut cmd = Command::new(ferryctl());
        cmd.stdin(stdin);
        if !args.iter().any(|a| a.starts_with("--addr")) && !env.iter().any(|(k, _)| *k == "FERRY_HTTP_ADDR")
        {
            cmd.args(["--addr", &self.admin(1)]);
        }
        cmd.args(args)
            .env_remove("FERRY_HTTP_ADDR")
            .env_remove("FERRY_HTTP_TOKEN")
            .env_remove("FERRY_HTTP_TOKEN_FILE")
            .envs(env.iter().copied());
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let log = format!("ctl-{}", SEQ.fetch_add(1, Relaxed));
        let mut p = Proc::spawn(&mut cmd, self.dir.path(), &log)?;
        let status = p.wait(RUN).with_context(|| format!("ferryctl {args:?}"))?;
        Ok(Out { code: status.code().unwrap_or(-1), stdout: p.stdout(), stderr: p.stderr() })
    }

    fn ctl(&self, args: &[&str]) -> Result<Out> {
        self.ctl_env(args, &[])
    }

    /// `ctl` with the token.
    fn write(&self, args: &[&str]) -> Result<Out> {
        self.ctl_env(args, &[("FERRY_HTTP_TOKEN", TOKEN)])
    }

    fn file(&self, name: &str, text: &str) -> Result<String> {
        let path = self.dir.path().join(name);
        fs::write(&path, text)?;
        Ok(path.to_str().context("path")?.to_string())
    }

    fn poll<T>(&self, what: &str, mut check: impl FnMut() -> Result<T>) -> Result<T> {
        let deadline = Instant::now() + SETTLE;
        loop {
            match check() {
                Ok(v) => return Ok(v),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("{what} after {SETTLE:?}")));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// A port free on every node's address, for a route's `:PORT`.
    fn route_port(&self) -> Result<u16> {
        for _ in 0..100 {
            let first = TcpListener::bind(SocketAddr::new(ip(self.net, 1), 0))?;
            let port = first.local_addr()?.port();
            if (2..=3).all(|i| TcpListener::bind(SocketAddr::new(ip(self.net, i), port)).is_ok()) {
                return Ok(port);
            }
        }
        bail!("no port free on every node")
    }
}

/// A port nothing listens on.
fn closed_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn routes_toml(port: u16) -> String {
    format!(
        r#"
[[routes]]
name = "web"
listen = ":{port}"
  [[routes.backends]]
  id = "a"
  addr = "127.0.0.1:9"
  [[routes.backends]]
  id = "b"
  addr = "127.0.0.1:10"
  weight = 2

[[routes]]
name = "api"
listen = ":{}"
  [[routes.backends]]
  id = "a"
  addr = "127.0.0.1:11"
"#,
        port + 1
    )
}

#[test]
fn every_command_with_its_output_and_exit_status() -> Result<()> {
    let c = Cluster::start()?;
    let port = c.route_port()?;

    // status: table and JSON, names next to ids.
    let out = c.ctl(&["status"])?.ok()?;
    assert!(out.stdout.contains("node ") && out.stdout.contains("n1 (id "), "{}", out.stdout);
    for key in ["role", "leader", "term", "index", "table", "routes", "connections", "uptime", "cluster"] {
        assert!(out.stdout.lines().any(|l| l.starts_with(key)), "{key} in {}", out.stdout);
    }
    let s = c.ctl(&["status", "-o", "json"])?.ok()?.json()?;
    assert_eq!(s["node"], "n1");

    // members: the table, --status, a bad regex, no match.
    let out = c.ctl(&["members"])?.ok()?;
    assert!(out.stdout.starts_with("ID "), "{}", out.stdout);
    for i in 1..=3 {
        let row = out.stdout.lines().find(|l| l.contains(&format!(" n{i} "))).context("a row")?;
        assert!(row.contains("alive") && row.contains("voter") && row.contains(&c.admin(i)), "{row}");
    }
    assert_eq!(c.ctl(&["members", "--status", "^alive$"])?.ok()?.stdout.lines().count(), 4);
    c.ctl(&["members", "--status", "("])?.exits(2, "--status: bad regex")?;
    let none = c.ctl(&["members", "--status", "suspect"])?.exits(2, "no member's state matches")?;
    assert!(none.stdout.is_empty(), "{}", none.stdout);

    // route put: a write without the token is a 401 (exit 1, saying how).
    let toml = c.file("routes.toml", &routes_toml(port))?;
    c.ctl(&["route", "put", "-f", &toml])?.exits(1, "--token")?;
    let out = c.write(&["route", "put", "-f", &toml])?.ok()?;
    assert!(
        out.stdout.contains("route web: revision ") && out.stdout.contains("route api: revision "),
        "{}",
        out.stdout
    );

    // A file with problems: every one, with its line, exit 2, and nothing
    // sent (the only address is closed).
    let bad = routes_toml(port).replace("addr = \"127.0.0.1:10\"", "addr = \"nope\"\n  wieght = 3");
    let bad = c.file("bad.toml", &bad)?;
    let closed = closed_port()?.to_string();
    let out = c.write(&["route", "put", "-f", &bad, "--addr", &closed])?.exits(2, "error: ")?;
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("error: routes[0].backends[1].wieght: unknown field `wieght`"), "{lines:?}");
    assert!(lines[0].ends_with("(line 11, column 3)"), "{lines:?}");
    assert!(lines[1].starts_with("error: routes[0].backends[1].addr: invalid address \"nope\""), "{lines:?}");
    // Word for word what `ferryd --check-config` says of the same file.
    let check = Command::new(ferryd()?).args(["--check-config", &bad]).output()?;
    assert_eq!(check.status.code(), Some(2));
    let ferryd_says = String::from_utf8_lossy(&check.stderr);
    let ferryd_lines: Vec<String> = ferryd_says.lines().skip(1).map(|l| format!("error: {l}")).collect();
    assert_eq!(lines, ferryd_lines, "ferryd --check-config: {ferryd_says}");

    // Input only the server can refuse (the admin port as a route's
    // listener): a 400, one line per field, exit 2.
    let clash = c.file(
        "clash.json",
        r#"{"name":"clash","listen":":7948","backends":[{"id":"a","addr":"127.0.0.1:9"}]}"#,
    )?;
    let out = c.write(&["route", "put", "-f", &clash])?.exits(2, "error: listen: ")?;
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);

    // route list and get, table and JSON; not found is exit 4.
    let out = c.ctl(&["route", "list"])?.ok()?;
    assert!(out.stdout.starts_with("NAME "), "{}", out.stdout);
    assert!(out.stdout.lines().any(|l| l.starts_with("web ") && l.contains("/2 healthy")), "{}", out.stdout);
    let list = c.ctl(&["route", "list", "-o", "json", "--stale"])?.ok()?.json()?;
    let names: BTreeSet<&str> =
        list.as_array().context("array")?.iter().filter_map(|r| r["config"]["name"].as_str()).collect();
    assert_eq!(names, BTreeSet::from(["api", "web"]));
    let out = c.ctl(&["route", "get", "web"])?.ok()?;
    assert!(
        out.stdout.contains("BACKEND")
            && out.stdout.lines().any(|l| l.starts_with("b ") && l.contains(" 2 "))
    );
    let web = c.ctl(&["route", "get", "web", "-o", "json"])?.ok()?.json()?;
    let rev = web["revision"].as_u64().context("revision")?;
    c.ctl(&["route", "get", "nope"])?.exits(4, "404")?;

    // weight with CAS: a stale revision is exit 3 naming the current one.
    let stale = (rev - 1).to_string();
    let out = c.write(&["route", "weight", "web", "b", "5", "--cas", &stale])?;
    out.exits(3, &format!("current revision is {rev}"))?;
    let out =
        c.write(&["route", "weight", "web", "b", "5", "--cas", &rev.to_string(), "-o", "json"])?.ok()?;
    let new_rev = out.json()?["revision"].as_u64().context("revision")?;
    assert!(new_rev > rev);
    c.write(&["route", "weight", "web", "b", "300"])?.exits(2, "weight: must be between 0 and 256")?;
    c.write(&["route", "weight", "web", "zz", "1"])?.exits(4, "")?;

    // A route from stdin (`-f -`), JSON found by its content.
    let json = format!(
        r#"{{"name":"stdin","listen":":{}","backends":[{{"id":"a","addr":"127.0.0.1:12"}}]}}"#,
        port + 2
    );
    let input = c.file("route.in", &json)?;
    let tok = [("FERRY_HTTP_TOKEN", TOKEN)];
    let out = c.ctl_full(&["route", "put", "-f", "-"], &tok, Stdio::from(File::open(&input)?))?.ok()?;
    assert!(out.stdout.starts_with("route stdin: revision "), "{}", out.stdout);
    c.write(&["route", "delete", "stdin"])?.ok()?;

    // delete: CAS, then gone, then not found.
    c.write(&["route", "delete", "api", "--cas", "1"])?.exits(3, "current revision is")?;
    c.write(&["route", "delete", "api"])?.ok()?;
    c.write(&["route", "delete", "api"])?.exits(4, "")?;

    // chaos: the quick form, list, get, put from a file, delete.
    let out = c.write(&[
        "chaos",
        "add",
        "slow-web",
        "--route",
        "web",
        "--latency",
        "100ms",
        "--jitter",
        "10ms",
        "--ttl",
        "5m",
    ])?;
    assert!(out.ok()?.stdout.contains("chaos policy slow-web: revision "));
    let out = c.ctl(&["chaos", "list"])?.ok()?;
    let row = out.stdout.lines().find(|l| l.starts_with("slow-web ")).context("a row")?;
    assert!(
        row.contains("latency 100ms±10ms") && row.contains("routes web") && row.contains("in 4m"),
        "{row}"
    );
    let got = c.ctl(&["chaos", "get", "slow-web", "-o", "json"])?.ok()?.json()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let expires = got["policy"]["expires_at"].as_u64().context("expires_at")?;
    assert!(expires > now + 290_000 && expires <= now + 300_000, "{expires} vs {now}");
    let out = c.ctl(&["chaos", "get", "slow-web"])?.ok()?;
    assert!(out.stdout.lines().any(|l| l.starts_with("in effect on")), "{}", out.stdout);
    c.write(&["chaos", "add", "x", "--route", "web"])?.exits(2, "at least one toxic")?;
    c.write(&["chaos", "add", "x", "--bandwidth", "0"])?
        .exits(2, "policy.toxics[0].kind.bandwidth.rate_kbps")?;
    let policy = c.file(
        "cut.json",
        r#"[{"name":"cut","toxics":[{"kind":{"reset_peer":{"timeout_ms":5}}}],"scope":{"nodes":["n2"]}}]"#,
    )?;
    c.write(&["chaos", "put", "-f", &policy, "--cas", "0"])?.ok()?;
    c.write(&["chaos", "put", "-f", &policy, "--cas", "0"])?.exits(3, "current revision is")?;
    let list = c.ctl(&["chaos", "list", "-o", "json"])?.ok()?.json()?;
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    c.write(&["chaos", "delete", "cut"])?.ok()?;
    c.ctl(&["chaos", "get", "cut"])?.exits(4, "")?;

    // --addr failover: a closed port first, then node 2.
    let both = format!("{closed},{}", c.admin(2));
    let s = c.ctl(&["status", "-o", "json", "--addr", &both])?.ok()?.json()?;
    assert_eq!(s["node"], "n2");
    // Only closed ports: exit 1, the transport error.
    c.ctl(&["status", "--addr", &closed])?.exits(1, "cannot connect")?;

    // The environment, and flags beating it.
    let s = c.ctl_env(&["status", "-o", "json"], &[("FERRY_HTTP_ADDR", &c.admin(3))])?.ok()?.json()?;
    assert_eq!(s["node"], "n3");
    let flag = format!("--addr={}", c.admin(2));
    let s = c.ctl_env(&["status", "-o", "json", &flag], &[("FERRY_HTTP_ADDR", &c.admin(3))])?.ok()?.json()?;
    assert_eq!(s["node"], "n2", "--addr beats FERRY_HTTP_ADDR");
    let token_file = c.file("token", TOKEN)?;
    let wrong = [("FERRY_HTTP_TOKEN", "wrong")];
    c.ctl_env(&["route", "weight", "web", "a", "2"], &wrong)?.exits(1, "401 unauthorized")?;
    c.ctl_env(&["route", "weight", "web", "a", "2", "--token-file", &token_file], &wrong)?.ok()?;
    c.ctl_env(&["route", "weight", "web", "a", "3"], &[("FERRY_HTTP_TOKEN_FILE", &token_file)])?.ok()?;
    c.ctl(&["status", "--token", "x", "--token-file", &token_file])?.exits(2, "--token and --token-file")?;
    c.ctl(&["status", "--timeout", "5"])?.exits(2, "missing unit")?;

    // Other classes: a 409 that is not a CAS conflict is exit 1.
    let out = c.write(&["force-leave", "n2"])?.exits(1, "member_alive")?;
    assert!(out.stdout.is_empty());
    c.write(&["force-leave", "nobody"])?.exits(4, "no member is named \"nobody\"")?;

    // completion.
    let out = c.ctl(&["completion", "bash"])?.ok()?;
    assert!(out.stdout.contains("ferryctl") && out.stdout.contains("force-leave"), "{}", out.stdout);
    c.ctl(&["completion", "tcsh"])?.exits(2, "")?;
    Ok(())
}

/// `watch` through node 2 prints a change written through node 3, runs a
/// command per change, goes on through node 1 once node 2 is gone, and
/// Ctrl-C ends it with 0.
#[test]
fn watch_prints_changes_made_on_another_node() -> Result<()> {
    let mut c = Cluster::start()?;
    let port = c.route_port()?;
    let toml = c.file("routes.toml", &routes_toml(port))?;
    c.write(&["route", "put", "-f", &toml])?.ok()?;

    let spawn_watch = |log: &str, args: &[&str]| -> Result<Proc> {
        let mut cmd = Command::new(ferryctl());
        cmd.arg("watch").args(args).env_remove("FERRY_HTTP_ADDR").stdin(Stdio::null());
        Proc::spawn(&mut cmd, c.dir.path(), log)
    };
    let started = |p: &Proc, kind: &str| {
        c.poll("the watch's first answer", || {
            ensure!(p.stderr().contains(&format!("watching {kind} at index")), "{}", p.stderr());
            Ok(())
        })
    };
    // Through node 2, then node 1 once node 2 is gone.
    let n2_n1 = format!("--addr={},{}", c.admin(2), c.admin(1));
    let mut routes = spawn_watch("watch-routes", &["routes", &n2_n1])?;
    let mut chaos = spawn_watch("watch-chaos", &["chaos", "-o", "json", &n2_n1])?;
    let changes = c.dir.path().join("changes");
    let script =
        format!("echo \"$FERRY_WATCH_KIND $FERRY_WATCH_INDEX $FERRY_WATCH_CHANGE\" >> {}", changes.display());
    let mut run = spawn_watch("watch-cmd", &["routes", &n2_n1, "--", "sh", "-c", &script])?;
    started(&routes, "routes")?;
    started(&chaos, "chaos")?;
    started(&run, "routes")?;

    let n3 = format!("--addr={}", c.admin(3));
    let out = c.write(&["route", "weight", "web", "b", "7", "-o", "json", &n3])?.ok()?;
    let rev = out.json()?["revision"].as_u64().context("revision")?;
    c.write(&["route", "delete", "api", &n3])?.ok()?;
    c.write(&["chaos", "add", "slow", "--latency", "5ms", &n3])?.ok()?;
    c.poll("the changes printed", || {
        let out = routes.stdout();
        ensure!(out.contains(&format!("changed route web rev {rev}\n")), "{out:?}");
        ensure!(out.lines().any(|l| l.starts_with("removed route api rev ")), "{out:?}");
        let line = chaos.stdout();
        let first = line.lines().next().context("a line")?;
        let v: Value = serde_json::from_str(first)?;
        ensure!(v["kind"] == "chaos" && v["change"] == "added" && v["name"] == "slow", "{v}");
        ensure!(v["value"]["policy"]["toxics"][0]["kind"]["latency"]["latency_ms"] == 5, "{v}");
        let ran = fs::read_to_string(&changes).unwrap_or_default();
        let web = ran
            .lines()
            .find(|l| l.starts_with("routes ") && l.contains("\"name\":\"web\""))
            .context("web")?;
        let change: Value = serde_json::from_str(web.splitn(3, ' ').nth(2).context("json")?)?;
        ensure!(change["change"] == "changed" && change["revision"] == rev, "{change}");
        Ok(())
    })?;
    assert_eq!(routes.stdout().lines().count(), 2, "nothing else changed: {}", routes.stdout());

    // Node 2 goes away: the watch goes on through node 1.
    let p = c.procs[1].as_mut().context("n2")?;
    p.child.kill()?;
    p.wait(SETTLE)?;
    let out = c.poll("a write with n2 down", || {
        c.write(&["route", "weight", "web", "a", "4", "-o", "json", &n3])?.ok()
    })?;
    let rev = out.json()?["revision"].as_u64().context("revision")?;
    c.poll("the change printed through n1", || {
        let out = routes.stdout();
        ensure!(
            out.contains(&format!("changed route web rev {rev}\n")),
            "{out:?}; stderr {}",
            routes.stderr()
        );
        Ok(())
    })?;

    for p in [&mut routes, &mut chaos, &mut run] {
        p.interrupt()?;
        let status = p.wait(SETTLE)?;
        assert_eq!(status.code(), Some(0), "Ctrl-C exits 0; stderr {}", p.stderr());
    }
    Ok(())
}

/// `leave` acts on the first address only; `force-leave` removes a node
/// that is down, by name; `watch members` prints both.
#[test]
fn leave_and_force_leave_with_watch_members() -> Result<()> {
    let mut c = Cluster::start()?;
    let mut cmd = Command::new(ferryctl());
    cmd.args(["--addr", &c.admin(1), "watch", "members", "--interval", "200ms"])
        .env_remove("FERRY_HTTP_ADDR");
    let mut watch = Proc::spawn(&mut cmd, c.dir.path(), "watch-members")?;
    c.poll("the watch's first answer", || {
        ensure!(watch.stderr().contains("watching members at index"), "{}", watch.stderr());
        Ok(())
    })?;

    // n3 dies; force-leave by name removes it from Raft.
    let p = c.proc(3)?;
    p.child.kill()?;
    p.wait(SETTLE)?;
    c.poll("n3 down", || {
        let out = c.ctl(&["members", "--status", "down|suspect"])?;
        ensure!(out.code == 0 && out.stdout.contains(" n3 "), "{out:?}");
        Ok(())
    })?;
    let out = c.poll("n3 removed", || c.write(&["force-leave", "n3"])?.ok())?;
    assert!(out.stdout.starts_with("removed n3 (id "), "{}", out.stdout);

    // leave goes to the first address only, even with others after it.
    let both = format!("{},{}", c.admin(2), c.admin(1));
    let out = c.write(&["leave", "--addr", &both])?.ok()?;
    assert!(out.stdout.contains(&c.admin(2)), "{}", out.stdout);
    let status = c.proc(2)?.wait(SETTLE)?;
    assert!(status.success(), "n2 exits 0 after leaving: {status}");
    c.poll("n1 alone", || {
        let out = c.ctl(&["members", "-o", "json"])?.ok()?.json()?;
        let voters: Vec<&str> = out
            .as_array()
            .context("array")?
            .iter()
            .filter(|m| m["raft"] == "voter")
            .filter_map(|m| m["name"].as_str())
            .collect();
        ensure!(voters == ["n1"], "{out}");
        Ok(())
    })?;
    c.poll("the watch saw both", || {
        let out = watch.stdout();
        ensure!(out.lines().any(|l| l.contains("member n3 (id ")), "{out}");
        ensure!(out.lines().any(|l| l.contains("member n2 (id ")), "{out}");
        Ok(())
    })?;
    watch.interrupt()?;
    assert_eq!(watch.wait(SETTLE)?.code(), Some(0));
    Ok(())
}

/// `join` makes a node whose seed was wrong join the cluster (`POST
/// /v1/join` on the first address); a bad address is a 400 naming it.
#[test]
fn join_brings_in_a_node_whose_seed_was_wrong() -> Result<()> {
    let mut c = Cluster::start()?;
    // n4's only seed is an address where nothing runs.
    let nowhere = ip(c.net, 9).to_string();
    c.spawn(4, &["--join", &nowhere])?;
    let n4 = format!("--addr={}", c.admin(4));
    c.poll("n4's admin API", || c.ctl(&["status", &n4])?.ok())?;
    c.write(&["join", "nope:x", &n4])?.exits(2, "addrs[0]")?;
    c.ctl(&["join", &ip(c.net, 1).to_string(), &n4])?.exits(1, "--token")?;
    let seed = ip(c.net, 1).to_string();
    let out = c.poll("n4 joins", || c.write(&["join", &seed, &n4])?.ok())?;
    assert!(out.stdout.contains(&format!("joined through {seed}:7946")), "{}", out.stdout);
    let json = c.poll("n4 joins (json)", || c.write(&["join", &seed, &n4, "-o", "json"])?.ok())?.json()?;
    assert_eq!(json["joined"][0], format!("{seed}:7946"));
    c.poll("n1 lists n4", || {
        let out = c.ctl(&["members", "--status", "alive"])?.ok()?;
        ensure!(out.stdout.lines().any(|l| l.contains(" n4 ")), "{}", out.stdout);
        Ok(())
    })?;
    Ok(())
}

/// `--wait-applied`, `explain`, `route put --dry-run` and `snapshot save |
/// inspect | restore` through the CLI, with their exit statuses.
#[test]
fn wait_applied_explain_dry_run_and_snapshots() -> Result<()> {
    let mut c = Cluster::start()?;
    let port = c.route_port()?;
    let routes = c.file("routes.toml", &routes_toml(port))?;

    // A write confirmed on every node's data plane: a line per node.
    let out = c.write(&["route", "put", "-f", &routes, "--wait-applied=10s"])?.ok()?;
    for n in ["n1", "n2", "n3"] {
        let line =
            out.stdout.lines().find(|l| l.starts_with(n)).with_context(|| format!("{n}: {}", out.stdout))?;
        assert!(line.ends_with("ms") && !line.contains("behind"), "{line}");
    }
    // Right after, the route is bound on every node.
    for i in 1..=3 {
        std::net::TcpStream::connect(SocketAddr::new(ip(c.net, i), port))
            .with_context(|| format!("n{i} listens on :{port} once --wait-applied returned"))?;
    }

    // explain: a table of candidates, JSON typed, 404 → 4, bad client → 2.
    let out = c.ctl(&["explain", "web", "--client", "127.0.0.1:5000"])?.ok()?;
    assert!(out.stdout.contains("TRY") && out.stdout.contains("BACKEND"), "{}", out.stdout);
    let e: ferry_client::explain::Explain = serde_json::from_value(
        c.ctl(&["explain", "web", "--client", "127.0.0.1", "-o", "json"])?.ok()?.json()?,
    )?;
    assert_eq!(e.route, "web");
    assert!(e.backends.iter().any(|b| b.attempt == Some(1)), "{e:?}");
    c.ctl(&["explain", "nope", "--client", "127.0.0.1"])?.exits(4, "error")?;
    c.ctl(&["explain", "web", "--client", "not-an-ip"])?.exits(2, "client")?;

    // dry-run: shares before and after, nothing written.
    let before = c.ctl(&["route", "get", "web", "-o", "json"])?.ok()?.json()?["revision"].clone();
    let changed = c.file(
        "web.json",
        &format!(
            r#"{{"name":"web","listen":":{port}","balance":"consistent_hash","backends":[
                {{"id":"a","addr":"127.0.0.1:9"}},{{"id":"b","addr":"127.0.0.1:10"}},{{"id":"c","addr":"127.0.0.1:12"}}]}}"#
        ),
    )?;
    let out = c.ctl(&["route", "put", "--dry-run", "-f", &changed])?.ok()?;
    assert!(out.stdout.contains("nothing written") && out.stdout.contains("MOVED IN"), "{}", out.stdout);
    let d: ferry_client::explain::DryRun = serde_json::from_value(
        c.ctl(&["route", "put", "--dry-run", "-f", &changed, "-o", "json"])?.ok()?.json()?,
    )?;
    assert_eq!(d.backends.len(), 3, "{d:?}");
    let after = c.ctl(&["route", "get", "web", "-o", "json"])?.ok()?.json()?["revision"].clone();
    assert_eq!(before, after, "a dry run wrote");
    c.ctl(&["route", "put", "--dry-run", "--cas", "1", "-f", &changed])?.exits(2, "--cas")?;

    // snapshot: save (verified, atomic), inspect, restore with cas / force.
    let file = c.dir.path().join("backup.snap");
    let file = file.to_str().context("path")?.to_string();
    let out = c.ctl(&["snapshot", "save", &file])?.ok()?;
    assert!(out.stdout.contains("2 routes"), "{}", out.stdout);
    let out = c.ctl(&["snapshot", "inspect", &file])?.ok()?;
    for key in ["cluster", "index", "checksum", "routes"] {
        assert!(out.stdout.lines().any(|l| l.starts_with(key)), "{key} in {}", out.stdout);
    }
    assert!(out.stdout.contains("web") && out.stdout.contains("api"), "{}", out.stdout);
    let mut bytes = fs::read(&file)?;
    let at = bytes.iter().position(|b| *b == b'w').context("a w")?;
    bytes[at] = b'W';
    let damaged = c.file("damaged.snap", &String::from_utf8_lossy(&bytes))?;
    c.ctl(&["snapshot", "inspect", &damaged])?.exits(2, "checksum")?;
    c.write(&["snapshot", "restore", &damaged, "--force"])?.exits(2, "checksum")?;
    c.write(&["snapshot", "restore", &file])?.exits(2, "--cas")?;

    c.write(&["route", "delete", "api"])?.ok()?;
    c.write(&["snapshot", "restore", &file, "--cas", "1"])?.exits(3, "error")?;
    let out = c.write(&["snapshot", "restore", &file, "--force", "--wait-applied"])?.ok()?;
    assert!(out.stdout.contains("restored"), "{}", out.stdout);
    let names = c.ctl(&["route", "list", "-o", "json"])?.ok()?.json()?;
    let names: Vec<&str> =
        names.as_array().context("list")?.iter().filter_map(|r| r["config"]["name"].as_str()).collect();
    assert!(names.contains(&"api") && names.contains(&"web"), "{names:?}");

    // A live member that does not apply (stopped, not yet suspected by
    // gossip): --wait-applied names it and exits 1.
    // A follower, so that the write still commits at once.
    let mut follower = None;
    for i in 2..=3u8 {
        let s = c.ctl(&["status", "-o", "json", "--addr", &c.admin(i)])?.ok()?.json()?;
        if s["raft"]["role"] == "follower" {
            follower = Some(i);
        }
    }
    let stopped = follower.context("n2 or n3 follows")?;
    c.proc(stopped)?.signal(nix::sys::signal::Signal::SIGSTOP)?;
    let out = c.write(&["route", "weight", "web", "a", "3", "--wait-applied=2s"])?;
    let out = out.exits(1, "not applied")?;
    assert!(out.stderr.contains(&format!("n{stopped}")), "{}", out.stderr);
    Ok(())
}
