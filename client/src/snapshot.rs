//! Backup files of a cluster's replicated config (`GET /v1/snapshot`,
//! `POST /v1/snapshot/restore`, `ferryd --restore-snapshot`).
//!
//! # Format, version 1
//!
//! One JSON document, written on one line and ended by a newline:
//!
//! ```text
//! {"format":"ferry-snapshot","version":1,"checksum":"crc32:89abcdef","content":{...}}
//! ```
//!
//! - `format`: always `ferry-snapshot`.
//! - `version`: the format version, [`FORMAT_VERSION`]. A reader refuses a
//!   version it does not know ([`SnapshotError::UnknownVersion`]) before
//!   reading anything else.
//! - `checksum`: `crc32:` and eight lowercase hex digits, the CRC-32
//!   (IEEE) of the bytes of `content` exactly as they stand in the file, from
//!   its `{` to its `}`. Reformatting the file (`jq .`) changes those bytes:
//!   keep the file as it was written.
//! - `content` ([`Snapshot`]'s fields): `cluster_id`, `node` (the node it
//!   was taken on), `taken_at_ms` (Unix time in milliseconds), `index` (the
//!   config index it reflects), `routes` (`[{"route": RouteSpec,
//!   "revision": N}]`, by name) and `chaos` (`[{"policy": ChaosPolicy,
//!   "revision": N}]`, by name), routes and policies as the API shows them.
//!
//! [`Snapshot::from_bytes`] checks, in order: the document and its
//! `format`, the version, the checksum, the content's fields, and that the
//! routes and policies are valid as stored objects (unique names, no two
//! routes on the same explicit listen address): every problem names its
//! field.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::FieldError;
use crate::chaos::ChaosPolicy;
use crate::name::Rules;
use crate::route::{ListenAddr, RouteSpec};

/// The `format` of every snapshot file.
pub const FORMAT: &str = "ferry-snapshot";

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;

/// Largest snapshot a node accepts for a restore, in bytes: it travels to
/// every node as one Raft log entry, which must fit in a cluster-port frame.
pub const MAX_SNAPSHOT_BYTES: usize = 4 << 20;

/// A route as the snapshot holds it: the spec and its revision when taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRoute {
    /// The route.
    pub route: RouteSpec,
    /// The config index of its last change, in the cluster it came from.
    pub revision: u64,
}

/// A chaos policy as the snapshot holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotPolicy {
    /// The policy.
    pub policy: ChaosPolicy,
    /// The config index of its last change, in the cluster it came from.
    pub revision: u64,
}

/// A verified snapshot: the content of the file (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// `[cluster] cluster_id` of the cluster it was taken from.
    pub cluster_id: String,
    /// The name of the node that answered.
    pub node: String,
    /// When it was taken: Unix time in milliseconds, the node's clock.
    pub taken_at_ms: u64,
    /// The config index it reflects.
    pub index: u64,
    /// Every route, by name.
    pub routes: Vec<SnapshotRoute>,
    /// Every chaos policy, by name.
    pub chaos: Vec<SnapshotPolicy>,
}

/// Why bytes are not a usable snapshot. Each names what is wrong
/// ([`SnapshotError::fields`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// Not a snapshot document: not JSON, or `format` is missing or not
    /// [`FORMAT`]. `path` is the field (`body` for the document as a whole).
    NotASnapshot { path: String, message: String },
    /// A format version this build does not read.
    UnknownVersion { version: u64 },
    /// The checksum does not match the content: the file is damaged.
    BadChecksum { expected: String, actual: String },
    /// Fields of the content are missing, malformed or invalid.
    Invalid { errors: Vec<FieldError> },
    /// The file could not be read or written.
    Io { path: String, message: String },
}

impl SnapshotError {
    fn field(path: &str, message: impl Into<String>) -> Self {
        SnapshotError::Invalid { errors: vec![FieldError::new(path, message)] }
    }

    /// The problems, each naming its field (`checksum`, `version`,
    /// `content.routes[0].route.backends[0].addr`, …).
    pub fn fields(&self) -> Vec<FieldError> {
        match self {
            SnapshotError::NotASnapshot { path, message } => vec![FieldError::new(path, message)],
            SnapshotError::UnknownVersion { .. } => vec![FieldError::new("version", self.to_string())],
            SnapshotError::BadChecksum { .. } => vec![FieldError::new("checksum", self.to_string())],
            SnapshotError::Invalid { errors } => errors.clone(),
            SnapshotError::Io { path, message } => vec![FieldError::new(path, message)],
        }
    }
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::NotASnapshot { path, message } => {
                write!(f, "not a ferry snapshot: {path}: {message}")
            }
            SnapshotError::UnknownVersion { version } => write!(
                f,
                "snapshot format version {version} is not known to this build (it reads version \
                 {FORMAT_VERSION}): a newer ferry wrote it"
            ),
            SnapshotError::BadChecksum { expected, actual } => write!(
                f,
                "checksum mismatch: the file says {expected}, its content is {actual}: the file is \
                 damaged or was edited"
            ),
            SnapshotError::Invalid { errors } => {
                let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
                write!(f, "invalid snapshot: {}", all.join("; "))
            }
            SnapshotError::Io { path, message } => write!(f, "{path}: {message}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

/// The outer document, borrowing the content's bytes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    format: String,
    version: u64,
    checksum: String,
    #[serde(borrow)]
    content: &'a RawValue,
}

/// What is read first, whatever the version: the format and its version.
#[derive(Deserialize)]
struct Header {
    format: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

/// The checksum error of `bytes` laid out as [`Snapshot::to_bytes`] writes
/// them, when the content between the header and the end does not match.
fn damaged(bytes: &[u8]) -> Option<SnapshotError> {
    let prefix = format!("{{\"format\":\"{FORMAT}\",\"version\":{FORMAT_VERSION},\"checksum\":\"crc32:");
    let rest = bytes.strip_prefix(prefix.as_bytes())?;
    let (digits, rest) = (rest.get(..8)?, rest.get(8..)?);
    let content = rest.strip_prefix(b"\",\"content\":")?;
    let content = content.strip_suffix(b"\n").unwrap_or(content).strip_suffix(b"}")?;
    let expected = format!("crc32:{}", String::from_utf8_lossy(digits));
    let actual = checksum_of(content);
    (expected != actual).then_some(SnapshotError::BadChecksum { expected, actual })
}

/// `crc32:` and eight hex digits of `bytes`.
fn checksum_of(bytes: &[u8]) -> String {
    format!("crc32:{:08x}", crc32fast::hash(bytes))
}

impl Snapshot {
    /// The file's bytes (see the module docs).
    pub fn to_bytes(&self) -> Result<Vec<u8>, SnapshotError> {
        let content = serde_json::to_vec(self).map_err(|e| SnapshotError::field("content", e.to_string()))?;
        let mut out = format!(
            "{{\"format\":\"{FORMAT}\",\"version\":{FORMAT_VERSION},\"checksum\":\"{}\",\"content\":",
            checksum_of(&content)
        )
        .into_bytes();
        out.extend_from_slice(&content);
        out.extend_from_slice(b"}\n");
        Ok(out)
    }

    /// Reads and verifies a snapshot file's bytes (see the module docs for
    /// the order of the checks).
    pub fn from_bytes(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        let not = |path: &str, message: String| SnapshotError::NotASnapshot { path: path.into(), message };
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(not("body", "expected a JSON object".into()));
        }
        let header: Header = match serde_json::from_slice(bytes) {
            Ok(h) => h,
            // A damaged file may no longer be JSON at all: if it has the
            // layout this build writes, say that its checksum fails.
            Err(e) => return Err(damaged(bytes).unwrap_or_else(|| not("body", e.to_string()))),
        };
        match header.format {
            Some(serde_json::Value::String(f)) if f == FORMAT => {}
            Some(other) => return Err(not("format", format!("expected {FORMAT:?}, got {other}"))),
            None => return Err(not("format", "missing".into())),
        }
        let version = match header.version {
            Some(v) => v.as_u64().ok_or_else(|| SnapshotError::field("version", format!("got {v}")))?,
            None => return Err(SnapshotError::field("version", "missing")),
        };
        if version != FORMAT_VERSION {
            return Err(SnapshotError::UnknownVersion { version });
        }
        let envelope: Envelope<'_> = serde_json::from_slice(bytes).map_err(|e| field_error("", &e))?;
        debug_assert_eq!((envelope.format.as_str(), envelope.version), (FORMAT, FORMAT_VERSION));
        let actual = checksum_of(envelope.content.get().as_bytes());
        if envelope.checksum != actual {
            return Err(SnapshotError::BadChecksum { expected: envelope.checksum, actual });
        }
        let mut de = serde_json::Deserializer::from_str(envelope.content.get());
        let snapshot: Snapshot =
            serde_path_to_error::deserialize(&mut de).map_err(|e| path_error("content", &e))?;
        let errors = snapshot.problems();
        if !errors.is_empty() {
            return Err(SnapshotError::Invalid { errors });
        }
        Ok(snapshot)
    }

    /// Reads and verifies the snapshot file at `path`.
    pub fn read_file(path: &Path) -> Result<Snapshot, SnapshotError> {
        let bytes = std::fs::read(path)
            .map_err(|e| SnapshotError::Io { path: path.display().to_string(), message: e.to_string() })?;
        Snapshot::from_bytes(&bytes)
    }

    /// Every problem with the routes and policies, as stored objects: paths
    /// under `content.`.
    pub fn problems(&self) -> Vec<FieldError> {
        let routes: Vec<RouteSpec> = self.routes.iter().map(|r| r.route.clone()).collect();
        let policies: Vec<ChaosPolicy> = self.chaos.iter().map(|p| p.policy.clone()).collect();
        let mut errors = validate_config(&routes, &policies, "content.routes", "content.chaos");
        // validate_config names `…routes[i]`; the file nests the spec.
        for e in &mut errors {
            for (list, inner) in [("content.routes[", "route"), ("content.chaos[", "policy")] {
                if let Some(rest) = e.path.strip_prefix(list)
                    && let Some((i, tail)) = rest.split_once(']')
                {
                    e.path = format!("{list}{i}].{inner}{tail}");
                }
            }
        }
        errors
    }

    /// The route specs, by name.
    pub fn route_specs(&self) -> Vec<RouteSpec> {
        self.routes.iter().map(|r| r.route.clone()).collect()
    }

    /// The chaos policies, by name.
    pub fn policies(&self) -> Vec<ChaosPolicy> {
        self.chaos.iter().map(|p| p.policy.clone()).collect()
    }

    /// The checksum the file carries (`crc32:…`), computed again.
    pub fn checksum(&self) -> Result<String, SnapshotError> {
        let content = serde_json::to_vec(self).map_err(|e| SnapshotError::field("content", e.to_string()))?;
        Ok(checksum_of(&content))
    }
}

/// Every problem with a whole config as stored objects (what a restore
/// installs): each route and policy valid under [`Rules::Stored`], names
/// unique, and no two routes on the same explicit listen address (port 0
/// never conflicts). Paths are `{routes}[i]…` and `{chaos}[i]…`. The state
/// machine applies a restore only when this is empty.
pub fn validate_config(
    routes: &[RouteSpec],
    policies: &[ChaosPolicy],
    routes_path: &str,
    chaos_path: &str,
) -> Vec<FieldError> {
    let mut errors = crate::route::validate_routes_with(Rules::Stored, routes, routes_path);
    for (j, r) in routes.iter().enumerate() {
        if ListenAddr::parse(&r.listen).is_some_and(|l| l.port() == 0) {
            continue;
        }
        if let Some(other) = routes[..j].iter().find(|o| o.listen == r.listen && o.name != r.name) {
            errors.push(FieldError::new(
                format!("{routes_path}[{j}].listen"),
                format!("listen address {:?} is already used by route {:?}", r.listen, other.name),
            ));
        }
    }
    let mut names = std::collections::HashSet::new();
    for (i, p) in policies.iter().enumerate() {
        errors.extend(p.validate_with(Rules::Stored, &format!("{chaos_path}[{i}]")));
        if !names.insert(p.name.as_str()) {
            errors.push(FieldError::new(
                format!("{chaos_path}[{i}].name"),
                format!("duplicate chaos policy name {:?}", p.name),
            ));
        }
    }
    errors
}

fn field_error(prefix: &str, e: &serde_json::Error) -> SnapshotError {
    let message = e.to_string();
    // serde names a missing or unknown field in its message only.
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field.to_string());
    let path = match (prefix, named) {
        ("", Some(f)) => f,
        (p, Some(f)) => format!("{p}.{f}"),
        ("", None) => "body".to_string(),
        (p, None) => p.to_string(),
    };
    SnapshotError::field(&path, message)
}

fn path_error(prefix: &str, e: &serde_path_to_error::Error<serde_json::Error>) -> SnapshotError {
    let inner = e.path().to_string();
    let at =
        if inner == "." || inner.contains('?') { prefix.to_string() } else { format!("{prefix}.{inner}") };
    field_error(&at, e.inner())
}

/// Writes `bytes` to `path` so that the file is either the old one or the
/// whole new one, even across a crash: a temporary file in the same
/// directory, written and synced, renamed over `path`, then the directory
/// synced.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file"))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(&dir)?.sync_all()
}

#[cfg(feature = "http")]
impl crate::http::AdminClient {
    /// `GET /v1/snapshot` (`?consistency=stale` when `stale`): the
    /// snapshot file's bytes, to be written unchanged
    /// ([`write_file_atomic`]).
    pub async fn snapshot(&self, stale: bool) -> Result<Vec<u8>, crate::http::ClientError> {
        let path = if stale { "/v1/snapshot?consistency=stale" } else { "/v1/snapshot" };
        let answer = self.send(&crate::http::RawRequest::new("GET", path)).await?;
        if (200..300).contains(&answer.status) {
            return Ok(answer.body);
        }
        let (addr, status) = (answer.addr, answer.status);
        // A non-2xx answer is always an error: the API's, or a bad answer.
        Err(match answer.into_result::<serde_json::Value>() {
            Err(e) => e,
            Ok(_) => crate::http::ClientError::Decode { addr, message: format!("status {status}") },
        })
    }

    /// `POST /v1/snapshot/restore`: replaces the cluster's whole config with
    /// the snapshot `bytes` (a file as [`AdminClient::snapshot`] returned
    /// it), if the config index is still `cas`, or unconditionally with
    /// `force`. Giving neither is refused by the server (400).
    ///
    /// [`AdminClient::snapshot`]: crate::http::AdminClient::snapshot
    pub async fn restore_snapshot(
        &self,
        bytes: &[u8],
        cas: Option<u64>,
        force: bool,
    ) -> Result<crate::api::WriteResult, crate::http::ClientError> {
        let mut query = Vec::new();
        if let Some(c) = cas {
            query.push(format!("cas={c}"));
        }
        if force {
            query.push("force=true".to_string());
        }
        let path = if query.is_empty() {
            "/v1/snapshot/restore".to_string()
        } else {
            format!("/v1/snapshot/restore?{}", query.join("&"))
        };
        Ok(self.call("POST", &path, Some(bytes.to_vec()), None).await?.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, listen: &str) -> RouteSpec {
        serde_json::from_value(serde_json::json!({
            "name": name, "listen": listen,
            "backends": [{"id": "a", "addr": "127.0.0.1:9001"}]
        }))
        .expect("valid route json")
    }

    fn policy(name: &str) -> ChaosPolicy {
        serde_json::from_value(serde_json::json!({
            "name": name, "toxics": [{"kind": {"latency": {"latency_ms": 5}}}]
        }))
        .expect("valid policy json")
    }

    fn sample() -> Snapshot {
        Snapshot {
            cluster_id: "prod".into(),
            node: "n1".into(),
            taken_at_ms: 1_700_000_000_000,
            index: 42,
            routes: vec![
                SnapshotRoute { route: route("api", ":7001"), revision: 40 },
                SnapshotRoute { route: route("web", ":7000"), revision: 42 },
            ],
            chaos: vec![SnapshotPolicy { policy: policy("slow"), revision: 41 }],
        }
    }

    #[test]
    fn a_snapshot_round_trips_and_its_checksum_is_over_the_content_bytes() -> Result<(), SnapshotError> {
        let s = sample();
        let bytes = s.to_bytes()?;
        assert!(bytes.ends_with(b"}\n") && !bytes[..bytes.len() - 1].contains(&b'\n'));
        let back = Snapshot::from_bytes(&bytes)?;
        assert_eq!(back, s);
        let text = String::from_utf8_lossy(&bytes).to_string();
        let start = text.find("\"content\":").map(|i| i + "\"content\":".len()).unwrap_or(0);
        let content = &text[start..text.len() - 2];
        assert!(
            text.contains(&format!("\"checksum\":\"crc32:{:08x}\"", crc32fast::hash(content.as_bytes())))
        );
        assert_eq!(back.checksum()?, checksum_of(content.as_bytes()));
        Ok(())
    }

    #[test]
    fn any_changed_content_byte_is_a_checksum_mismatch() -> Result<(), SnapshotError> {
        let bytes = sample().to_bytes()?;
        let start = String::from_utf8_lossy(&bytes).find("\"content\":").map_or(0, |i| i + 11);
        // Every byte, whether the document stays JSON or not.
        let mut checked = 0;
        for i in start..bytes.len() - 2 {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let err = Snapshot::from_bytes(&bad).expect_err("a changed byte must be refused");
            assert!(matches!(err, SnapshotError::BadChecksum { .. }), "byte {i}: {err}");
            assert_eq!(err.fields()[0].path, "checksum");
            checked += 1;
        }
        assert!(checked > 200, "only {checked} bytes changed");
        Ok(())
    }

    #[test]
    fn an_unknown_version_is_refused_before_anything_else() {
        let doc = br#"{"format":"ferry-snapshot","version":2,"whatever":true}"#;
        let err = Snapshot::from_bytes(doc).expect_err("version 2");
        assert_eq!(err, SnapshotError::UnknownVersion { version: 2 });
        assert_eq!(err.fields()[0].path, "version");
        assert!(err.to_string().contains("newer ferry"), "{err}");
    }

    #[test]
    fn errors_name_what_is_wrong() -> Result<(), SnapshotError> {
        let path = |bytes: &[u8]| match Snapshot::from_bytes(bytes) {
            Ok(_) => "accepted".to_string(),
            Err(e) => e.fields().iter().map(|f| f.path.clone()).collect::<Vec<_>>().join(","),
        };
        assert_eq!(path(b"not json"), "body");
        assert_eq!(path(b"[1]"), "body");
        assert_eq!(path(br#"{"version":1}"#), "format");
        assert_eq!(path(br#"{"format":"tar","version":1}"#), "format");
        assert_eq!(path(br#"{"format":"ferry-snapshot"}"#), "version");
        assert_eq!(path(br#"{"format":"ferry-snapshot","version":"1"}"#), "version");
        assert_eq!(path(br#"{"format":"ferry-snapshot","version":1,"content":{}}"#), "checksum");
        // Content with a bad field, under a checksum that matches it.
        let wrap = |content: &str| {
            format!(
                r#"{{"format":"ferry-snapshot","version":1,"checksum":"{}","content":{content}}}"#,
                checksum_of(content.as_bytes())
            )
        };
        let good = String::from_utf8_lossy(&sample().to_bytes()?).to_string();
        let content = &good[good.find("\"content\":").map_or(0, |i| i + 10)..good.len() - 2];
        assert_eq!(path(wrap(content).as_bytes()), "accepted");
        assert_eq!(path(wrap(&content.replace("\"index\":42", "\"index\":-1")).as_bytes()), "content.index");
        assert_eq!(path(wrap(&content.replace("\"index\":42,", "")).as_bytes()), "content.index");
        let bad_addr = content.replacen("127.0.0.1:9001", "nowhere", 1);
        assert_eq!(path(wrap(&bad_addr).as_bytes()), "content.routes[0].route.backends[0].addr");
        let same_listen = content.replace(":7001", ":7000");
        assert_eq!(path(wrap(&same_listen).as_bytes()), "content.routes[1].route.listen");
        let bad_policy = content.replace("\"latency_ms\":5", "\"latency_ms\":99999999999");
        assert!(path(wrap(&bad_policy).as_bytes()).starts_with("content.chaos[0].policy.toxics[0]"));
        Ok(())
    }

    /// A server answering one connection with `answer` once it has the
    /// whole request (its head and `Content-Length` bytes), which it hands
    /// back.
    #[cfg(feature = "http")]
    async fn serve_once(answer: Vec<u8>) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut req = Vec::new();
            let mut buf = vec![0; 65536];
            loop {
                let n = s.read(&mut buf).await.expect("read");
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len || n == 0 {
                        break;
                    }
                }
            }
            s.write_all(&answer).await.expect("write");
            req
        });
        (addr, task)
    }

    #[cfg(feature = "http")]
    #[tokio::test]
    async fn the_client_saves_the_bytes_as_sent_and_restores_with_cas_or_force() {
        let file = sample().to_bytes().expect("encode");
        let mut answer =
            format!("HTTP/1.1 200 OK\r\nx-ferry-index: 42\r\ncontent-length: {}\r\n\r\n", file.len())
                .into_bytes();
        answer.extend_from_slice(&file);
        let (addr, req) = serve_once(answer).await;
        let got = crate::http::AdminClient::new(addr).snapshot(true).await.expect("a snapshot");
        assert_eq!(got, file, "the bytes must come back unchanged");
        let req = String::from_utf8_lossy(&req.await.expect("request")).to_string();
        assert!(req.starts_with("GET /v1/snapshot?consistency=stale HTTP/1.1\r\n"), "{req}");

        for (cas, force, query) in
            [(Some(42), false, "?cas=42"), (None, true, "?force=true"), (None, false, "")]
        {
            let body = r#"{"index":43,"revision":43}"#;
            let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            let (addr, req) = serve_once(answer.into_bytes()).await;
            let r = crate::http::AdminClient::new(addr).restore_snapshot(&file, cas, force).await;
            assert_eq!(r, Ok(crate::api::WriteResult { index: 43, revision: 43 }));
            let req = req.await.expect("request");
            let head = format!("POST /v1/snapshot/restore{query} HTTP/1.1\r\n");
            assert!(req.starts_with(head.as_bytes()), "{}", String::from_utf8_lossy(&req));
            assert!(req.ends_with(&file), "the file must be the body unchanged");
        }
    }

    #[test]
    fn the_file_is_written_whole() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("ferry-snapshot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("backup.snap");
        std::fs::write(&path, b"old")?;
        let bytes = sample().to_bytes()?;
        write_file_atomic(&path, &bytes)?;
        assert_eq!(std::fs::read(&path)?, bytes);
        assert_eq!(Snapshot::read_file(&path)?, sample());
        let left: Vec<_> = std::fs::read_dir(&dir)?.filter_map(Result::ok).map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 1, "a temporary file was left: {left:?}");
        let missing = Snapshot::read_file(&dir.join("nope")).expect_err("no file");
        assert!(matches!(missing, SnapshotError::Io { .. }), "{missing}");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
