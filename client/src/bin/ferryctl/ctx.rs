//! The global flags and what every command uses: the client, the output
//! form, requests whose failures become exit statuses, and the one place a
//! write's result is printed.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::ArgMatches;
use clap::parser::ValueSource;
use ferry_client::api::WriteResult;
use ferry_client::http::{AdminClient, RawRequest, RawResponse};
use serde::de::DeserializeOwned;

use crate::out::{Exit, Failure, api_failure, parse_duration};

/// The admin port ferryd listens on by default.
const ADMIN_PORT: u16 = 7948;

/// Flags every command takes (before or after the command).
#[derive(Debug, clap::Args)]
pub struct Global {
    /// Admin API addresses, HOST[:PORT] (port 7948 by default), comma
    /// separated: tried in order, moving on when one cannot be reached.
    #[arg(
        long,
        global = true,
        env = "FERRY_HTTP_ADDR",
        value_delimiter = ',',
        default_value = "127.0.0.1:7948"
    )]
    pub addr: Vec<String>,
    /// Token for writes (`Authorization: Bearer`). Not with --token-file.
    #[arg(long, global = true, env = "FERRY_HTTP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the token (trimmed). Not with --token.
    #[arg(long, global = true, env = "FERRY_HTTP_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Output: aligned tables for people, or the API's own JSON body.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    pub output: Output,
    /// Reads with `?consistency=stale`: the answering node's applied
    /// state, without asking the leader (works without a quorum).
    #[arg(long, global = true)]
    pub stale: bool,
    /// Longest wait for one node's answer: 500ms, 5s, 2m.
    #[arg(long, global = true, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,
    /// After a write commits, wait until the data plane of every live
    /// member runs it (table published, listeners bound), at most TIMEOUT
    /// (default 30s), printing each node's lag; exit 1 naming the nodes
    /// behind.
    #[arg(
        long,
        global = true,
        value_name = "TIMEOUT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "30s",
        value_parser = parse_duration
    )]
    pub wait_applied: Option<Duration>,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Where the token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenFrom {
    Value(String),
    File(PathBuf),
}

/// The token to use, from `--token` and `--token-file` (or their
/// environment variables) and where each value came from: a flag beats
/// the environment; both at the same level is an error.
pub fn pick_token(
    token: Option<(String, ValueSource)>,
    file: Option<(PathBuf, ValueSource)>,
) -> Result<Option<TokenFrom>, String> {
    match (token, file) {
        (None, None) => Ok(None),
        (Some((t, _)), None) => Ok(Some(TokenFrom::Value(t))),
        (None, Some((f, _))) => Ok(Some(TokenFrom::File(f))),
        (Some((t, ts)), Some((f, fs))) => {
            match (ts == ValueSource::CommandLine, fs == ValueSource::CommandLine) {
                (true, false) => Ok(Some(TokenFrom::Value(t))),
                (false, true) => Ok(Some(TokenFrom::File(f))),
                (true, true) => Err("--token and --token-file both given: use one".into()),
                (false, false) => {
                    Err("FERRY_HTTP_TOKEN and FERRY_HTTP_TOKEN_FILE both set: use one (or a flag)".into())
                }
            }
        }
    }
}

/// Resolves `HOST[:PORT]` entries (port 7948 when absent) to addresses, in
/// order, each once.
pub fn resolve_addrs(entries: &[String]) -> Result<Vec<SocketAddr>, String> {
    let mut addrs = Vec::new();
    for entry in entries.iter().map(|e| e.trim()) {
        if entry.is_empty() {
            return Err("--addr: an empty address".into());
        }
        let resolved: Vec<SocketAddr> = if let Ok(a) = entry.parse::<SocketAddr>() {
            vec![a]
        } else if let Ok(ip) = entry.parse::<std::net::IpAddr>() {
            vec![SocketAddr::new(ip, ADMIN_PORT)]
        } else {
            let with_port = match entry.rsplit_once(':') {
                Some((_, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !port.is_empty() => {
                    entry.to_string()
                }
                _ => format!("{entry}:{ADMIN_PORT}"),
            };
            with_port
                .to_socket_addrs()
                .map_err(|e| format!("--addr: cannot resolve {entry:?}: {e}"))?
                .collect()
        };
        for a in resolved {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
    }
    if addrs.is_empty() {
        return Err("--addr: no address".into());
    }
    Ok(addrs)
}

/// What a command runs with.
#[derive(Debug)]
pub struct Ctx {
    /// Every address, with failover.
    pub client: AdminClient,
    pub output: Output,
    pub stale: bool,
    pub timeout: Duration,
    /// `--wait-applied`: how long to wait after a write.
    pub wait_applied: Option<Duration>,
    token: Option<String>,
}

impl Ctx {
    pub fn new(g: &Global, m: &ArgMatches) -> Result<Self, Failure> {
        let usage = |msg: String| Failure::new(Exit::Usage, msg);
        let source = |id: &str| m.value_source(id).unwrap_or(ValueSource::DefaultValue);
        let token = pick_token(
            g.token.clone().map(|t| (t, source("token"))),
            g.token_file.clone().map(|f| (f, source("token_file"))),
        )
        .map_err(usage)?;
        let token = match token {
            None => None,
            Some(TokenFrom::Value(t)) if t.trim().is_empty() => return Err(usage("--token: empty".into())),
            Some(TokenFrom::Value(t)) => Some(t.trim().to_string()),
            Some(TokenFrom::File(f)) => {
                let text = std::fs::read_to_string(&f)
                    .map_err(|e| usage(format!("--token-file: cannot read {}: {e}", f.display())))?;
                let t = text.trim();
                if t.is_empty() {
                    return Err(usage(format!("--token-file: {} is empty", f.display())));
                }
                Some(t.to_string())
            }
        };
        let addrs = resolve_addrs(&g.addr).map_err(usage)?;
        let mut client = AdminClient::with_addrs(addrs).with_timeout(g.timeout);
        if let Some(t) = &token {
            client = client.with_token(t.clone());
        }
        Ok(Self {
            client,
            output: g.output,
            stale: g.stale,
            timeout: g.timeout,
            wait_applied: g.wait_applied,
            token,
        })
    }

    pub fn json(&self) -> bool {
        self.output == Output::Json
    }

    /// A client of the first address only (for what acts on one node:
    /// join, leave).
    pub fn first(&self) -> AdminClient {
        let one = AdminClient::with_addrs(self.client.addrs()[..1].to_vec()).with_timeout(self.timeout);
        match &self.token {
            Some(t) => one.with_token(t.clone()),
            None => one,
        }
    }

    /// `GET path`, with `?consistency=stale` under `--stale` when `stale_ok`
    /// (status and members always answer with the node's own view).
    pub async fn get(&self, path: &str, stale_ok: bool) -> Result<RawResponse, Failure> {
        let path = if stale_ok && self.stale {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{path}{sep}consistency=stale")
        } else {
            path.to_string()
        };
        send(&self.client, &RawRequest::new("GET", path)).await
    }

    /// Sends `req` through every address.
    pub async fn send(&self, req: &RawRequest) -> Result<RawResponse, Failure> {
        send(&self.client, req).await
    }

    /// Prints the body as the API sent it, pretty-printed (as is if it is
    /// not JSON).
    pub fn print_body(&self, r: &RawResponse) {
        println!("{}", pretty(&r.body));
    }

    /// The one way a write's answer is printed: `-o json` prints the
    /// body; a table prints `what` with the new revision and index. Then,
    /// with `--wait-applied`, waits for every live member's data plane.
    pub async fn wrote(&self, what: &str, r: &RawResponse) -> Result<WriteResult, Failure> {
        let w: WriteResult = decode(r)?;
        if self.json() {
            self.print_body(r);
        } else {
            println!("{what}: revision {}, index {}", w.revision, w.index);
        }
        if let Some(limit) = self.wait_applied {
            self.wait_applied(w.index, limit).await?;
        }
        Ok(w)
    }

    /// `--wait-applied`: one line per live member with its lag (to stderr
    /// under `-o json`, so stdout stays the API's body); exit 1 naming
    /// the members behind at `limit`.
    async fn wait_applied(&self, index: u64, limit: Duration) -> Result<(), Failure> {
        let rows = ferry_client::wait::wait_applied(&self.client, index, limit).await.map_err(|e| {
            Failure::new(Exit::Error, format!("--wait-applied: cannot list the members: {e}"))
        })?;
        let mut t = crate::out::Table::new(&["NODE", "ID", "APPLIED", "LAG"]);
        for r in &rows {
            let at = r.data_index.map_or_else(|| "-".to_string(), |i| i.to_string());
            let lag = match (&r.lag, &r.error) {
                (Some(l), _) => format!("{}ms", l.as_millis()),
                (None, Some(e)) => format!("behind ({e})"),
                (None, None) => "behind".to_string(),
            };
            t.row(vec![r.name.clone(), r.id.to_string(), at, lag]);
        }
        if self.json() {
            eprint!("{}", t.render());
        } else {
            t.print();
        }
        let behind: Vec<&str> = rows.iter().filter(|r| !r.applied()).map(|r| r.name.as_str()).collect();
        if behind.is_empty() {
            return Ok(());
        }
        Err(Failure::new(
            Exit::Error,
            format!(
                "--wait-applied: index {index} not applied within {} on {}",
                crate::out::human(limit),
                behind.join(", ")
            ),
        ))
    }
}

/// Sends `req` with `client`; an answer that is not a 2xx becomes the
/// failure its status means.
pub async fn send(client: &AdminClient, req: &RawRequest) -> Result<RawResponse, Failure> {
    let r = client.send(req).await.map_err(|e| Failure::new(Exit::Error, e.to_string()))?;
    if (200..300).contains(&r.status) { Ok(r) } else { Err(api_failure(&r)) }
}

/// The body of a 2xx as a `T`.
pub fn decode<T: DeserializeOwned>(r: &RawResponse) -> Result<T, Failure> {
    serde_json::from_slice(&r.body)
        .map_err(|e| Failure::new(Exit::Error, format!("{}: bad answer: {e}", r.addr)))
}

/// `body` pretty-printed, or as text if it is not JSON.
pub fn pretty(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| String::from_utf8_lossy(body).into()),
        Err(_) => String::from_utf8_lossy(body).trim_end().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_flag_beats_the_environment_and_one_level_takes_one_form() {
        let (cl, env) = (ValueSource::CommandLine, ValueSource::EnvVariable);
        let t = |s| Some(("tok".to_string(), s));
        let f = |s| Some((PathBuf::from("/f"), s));
        assert_eq!(pick_token(t(cl), f(env)), Ok(Some(TokenFrom::Value("tok".into()))));
        assert_eq!(pick_token(t(env), f(cl)), Ok(Some(TokenFrom::File("/f".into()))));
        assert_eq!(pick_token(t(env), None), Ok(Some(TokenFrom::Value("tok".into()))));
        assert_eq!(pick_token(None, None), Ok(None));
        assert!(pick_token(t(cl), f(cl)).is_err_and(|e| e.contains("--token and --token-file")));
        assert!(pick_token(t(env), f(env)).is_err_and(|e| e.contains("FERRY_HTTP_TOKEN_FILE")));
    }

    #[test]
    fn addresses_take_a_default_port_and_resolve_names() {
        let a = resolve_addrs(&["127.0.0.1:1".into(), "127.0.0.2".into(), "127.0.0.1:1".into()]);
        assert_eq!(
            a,
            Ok(vec!["127.0.0.1:1".parse().expect("addr"), "127.0.0.2:7948".parse().expect("addr")])
        );
        let local = resolve_addrs(&["localhost:9".into()]).expect("localhost resolves");
        assert!(local.iter().all(|a| a.ip().is_loopback() && a.port() == 9), "{local:?}");
        assert!(resolve_addrs(&["".into()]).is_err());
        assert!(resolve_addrs(&["no-such-host.invalid".into()]).is_err_and(|e| e.contains("cannot resolve")));
    }

    #[test]
    fn pretty_keeps_what_is_not_json() {
        assert_eq!(pretty(br#"{"a":1}"#), "{\n  \"a\": 1\n}");
        assert_eq!(pretty(b"plain\n"), "plain");
    }
}
