//! Helpers shared by the tests that run the real `ferryd` binary
//! (`ferryd_process.rs`, `cluster_process.rs`): temp dirs, spawning and
//! signalling `ferryd` (killed when its guard drops), polling with
//! deadlines, a small HTTP/1.1 client and an echo backend.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::fs::{self, File};
use std::net::{IpAddr, SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use ferry_client::http::{AdminClient, RawRequest};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Interval between two checks of a polled condition.
pub const POLL: Duration = Duration::from_millis(20);
/// Longest wait for anything that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(10);
/// Longest wait for one reply on a proxied connection or the admin API.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<Self> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "ferryd-process-{tag}-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Relaxed)
        ));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes `text` to `path` atomically (write a sibling, then rename), so a
/// reload never reads a half-written file.
pub fn write_config(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("toml.tmp");
    fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// A free port on 127.0.0.1 (bound by the OS, then released).
pub fn free_addr() -> Result<SocketAddr> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A running (or exited) `ferryd`, killed on drop if still running. Its
/// stdout and stderr go to files so they can be read at any time.
pub struct Ferryd {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Ferryd {
    /// Spawns `ferryd ARGS`, output into `dir/{name}.stdout|stderr`.
    pub fn spawn(dir: &TempDir, name: &str, args: &[&str]) -> Result<Self> {
        Self::spawn_with_env(dir, name, args, &[])
    }

    /// [`Ferryd::spawn`] with `env` added to its environment.
    pub fn spawn_with_env(dir: &TempDir, name: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        Self::spawn_bin(Path::new(env!("CARGO_BIN_EXE_ferryd")), dir, name, args, env)
    }

    /// [`Ferryd::spawn_with_env`] of the binary `bin` (another build).
    pub fn spawn_bin(
        bin: &Path,
        dir: &TempDir,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let stdout = dir.file(&format!("{name}.stdout"));
        let stderr = dir.file(&format!("{name}.stderr"));
        let child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout)?)
            .stderr(File::create(&stderr)?)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        Ok(Self { child, stdout, stderr })
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The exit status, if it has exited (reaps it).
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Sends `sig`, refusing if the process was already reaped (its PID
    /// could belong to someone else by now). An unreaped child keeps its PID.
    pub fn signal(&mut self, sig: Signal) -> Result<()> {
        if let Some(status) = self.exited()? {
            bail!("ferryd exited ({status}) before {sig}; stderr:\n{}", self.stderr());
        }
        kill(Pid::from_raw(i32::try_from(self.child.id())?), sig).with_context(|| format!("sending {sig}"))
    }

    /// Polls until the process exits; fails after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("ferryd still running after {within:?}; stderr:\n{}", self.stderr());
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Ferryd {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`, then reaps the process.
    pub fn kill9(&mut self) -> Result<()> {
        self.signal(Signal::SIGKILL)?;
        self.child.wait().context("reaping ferryd")?;
        Ok(())
    }
}

impl Drop for Ferryd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `check` every [`POLL`] until it succeeds; after `within`, fails
/// with the last error.
pub async fn poll<T>(what: &str, within: Duration, check: impl AsyncFn() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("{what}: still not true after {within:?}")));
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// An HTTP response: status, headers (names in lower case) and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("{} body is not JSON: {}", self.status, self.body))
    }
}

/// The names of the routes the node with admin API `admin` serves, by a
/// linearizable read.
pub async fn route_names(admin: SocketAddr) -> Result<std::collections::BTreeSet<String>> {
    let r = http(admin, "GET", "/v1/routes", &[], None, IO_TIMEOUT).await?;
    ensure!(r.status == 200, "GET /v1/routes on {admin}: {} {}", r.status, r.body);
    Ok(r.json()?
        .as_array()
        .context("routes are not a list")?
        .iter()
        .filter_map(|r| r["config"]["name"].as_str().map(str::to_string))
        .collect())
}

/// One admin-API exchange through [`AdminClient::send`] (one connection,
/// bounded by `within`): `METHOD path` with `headers` and, if given, a JSON
/// `body`; any status is an answer.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    within: Duration,
) -> Result<Reply> {
    let mut req = RawRequest::new(method, path);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    if let Some(body) = body {
        req = req.body(body.as_bytes().to_vec());
    }
    let r = AdminClient::new(addr)
        .with_timeout(within)
        .send(&req)
        .await
        .with_context(|| format!("{method} {path} on {addr}"))?;
    Ok(Reply { status: r.status, headers: r.headers, body: String::from_utf8_lossy(&r.body).into_owned() })
}

/// A minimal HTTP/1.1 GET: returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let r = http(addr, "GET", path, &[], None, IO_TIMEOUT).await?;
    Ok((r.status, r.body))
}

/// Decodes a chunked body.
pub fn dechunk(mut rest: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, tail) = rest.split_once("\r\n").context("truncated chunk size")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(tail.get(..size).context("truncated chunk")?);
        rest = tail.get(size + 2..).context("truncated chunk end")?;
    }
}

/// A line-based echo server on 127.0.0.1:0 that answers each line `L` with
/// `{name}: L`, so replies say which backend served them. Closes its side on
/// EOF. Runs until the test's runtime ends.
pub async fn echo_server(name: &'static str) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if w.write_all(format!("{name}: {line}\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = w.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// A client connection through the proxy, speaking the echo protocol.
pub struct Conn(BufReader<TcpStream>);

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Self> {
        let s = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connecting to {addr}: timed out"))??;
        Ok(Self(BufReader::new(s)))
    }

    /// Sends `msg` as a line and returns the reply line.
    pub async fn ask(&mut self, msg: &str) -> Result<String> {
        let exchange = async {
            self.0.get_mut().write_all(format!("{msg}\n").as_bytes()).await?;
            let mut line = String::new();
            let n = self.0.read_line(&mut line).await?;
            ensure!(n > 0, "connection closed instead of answering {msg:?}");
            anyhow::Ok(line.trim_end().to_string())
        };
        tokio::time::timeout(IO_TIMEOUT, exchange).await.with_context(|| format!("no reply to {msg:?}"))?
    }

    /// Sends `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        Ok(self.0.get_mut().write_all(bytes).await?)
    }

    /// Reads one line (without its newline), within [`IO_TIMEOUT`].
    pub async fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(IO_TIMEOUT, self.0.read_line(&mut line)).await.context("no line")??;
        ensure!(n > 0, "connection closed instead of a line");
        Ok(line.trim_end().to_string())
    }

    /// Waits (at most `within`) for the proxy to close the connection: EOF
    /// or a reset, with no data first.
    pub async fn expect_closed(&mut self, within: Duration) -> Result<()> {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(within, self.0.read(&mut buf)).await {
            Err(_) => bail!("connection still open after {within:?}"),
            Ok(Ok(0) | Err(_)) => Ok(()),
            Ok(Ok(n)) => {
                bail!("unexpected data instead of a close: {:?}", String::from_utf8_lossy(&buf[..n]))
            }
        }
    }
}

/// Connects once to `addr` and asks `msg`: one fresh connection, one reply.
pub async fn ask_once(addr: SocketAddr, msg: &str) -> Result<String> {
    Conn::open(addr).await?.ask(msg).await
}

/// Every port [`free_ports`] handed out in this process.
static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// `count` distinct ports free on every address of `ips` right now, never
/// handed out before in this process.
pub fn free_ports(ips: &[IpAddr], count: usize) -> Result<Vec<u16>> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..1000 {
        if ports.len() == count {
            return Ok(ports);
        }
        let first = std::net::TcpListener::bind(SocketAddr::new(ips[0], 0))?;
        let port = first.local_addr()?.port();
        let rest: Result<Vec<_>, _> =
            ips[1..].iter().map(|ip| std::net::TcpListener::bind(SocketAddr::new(*ip, port))).collect();
        held.push(first);
        // Never the same port twice: writers take ports for routes at once.
        let fresh = HANDED_OUT.lock().map_err(|_| anyhow::anyhow!("port set poisoned"))?.insert(port);
        if let (true, Ok(rest)) = (fresh, rest) {
            held.extend(rest);
            ports.push(port);
        }
    }
    bail!("no {count} ports free on all of {ips:?}")
}
