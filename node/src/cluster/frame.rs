//! The wire format of the cluster port: frames and the versioned envelope.
//!
//! A frame is a `u32` big-endian payload length followed by the payload. The
//! payload is the bincode 2 (serde, `config::standard()`) encoding of an
//! [`Envelope`]: `version: u16`, `cluster_id: String`, then the [`Message`].
//! The version is decoded first and alone, so a later version may change
//! everything after it and still be refused cleanly. A declared length above
//! [`MAX_FRAME_BYTES`] is refused before any payload byte is read, and the
//! payload buffer only grows as bytes actually arrive.

use std::io;

use bincode::config::{Configuration, Limit};
use ferry_raft_store::config::SNAPSHOT_CHUNK_BYTES;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::cluster::message::Message;

/// The envelope version this node writes: its cluster protocol
/// ([`crate::version::PROTOCOL`]). It accepts frames of every protocol in
/// [`crate::version::window`] (one either way), which a rolling upgrade
/// moves through one release at a time; a frame of another version is
/// refused, counted (`ferry_cluster_messages_refused_total{reason="version"}`)
/// and logged with both versions.
///
/// - 1: the first version.
/// - 2: routes carry each backend's `node`. bincode was positional, so a
///   version-1 peer would misread them: the two refused each other, and a
///   cluster was upgraded across this change all at once.
/// - 3: ferry's own types in a message (requests, responses, errors,
///   statuses) are self-describing ([`ferry_client::selfdesc`]), so they can
///   gain fields without a new version. Version-2 peers are refused: the
///   move to 3 is the last upgrade made all at once.
///
/// Within the window, a peer may not know everything a newer one sends:
/// - a [`Message`] variant appended at the end: the older node refuses that
///   one frame as malformed and answers [`Message::Error`], and the sender
///   takes that as no answer. So a message appended this way must be one a
///   peer may leave unanswered, or be sent only to a peer whose protocol
///   has it;
/// - a field or variant of a self-describing type: the older node refuses
///   the frame naming what it does not know. A newer node leaves a new
///   field out while it holds its default, and a write that would need it is
///   refused until every member speaks it ([`crate::version::Feature`]).
pub const WIRE_VERSION: u16 = crate::version::PROTOCOL;

/// The largest payload accepted or sent: 8 MiB. Snapshot chunks are at most
/// [`SNAPSHOT_CHUNK_BYTES`] (1 MiB) of data plus their metadata; larger
/// AppendEntries batches are split by openraft when the network reports
/// `PayloadTooLarge`.
pub const MAX_FRAME_BYTES: usize = 8 << 20;

const _: () = assert!(MAX_FRAME_BYTES as u64 >= SNAPSHOT_CHUNK_BYTES * 2);

/// The first byte of every frame: its big-endian length is at most
/// [`MAX_FRAME_BYTES`], below 2^24. The cluster server tells a frame from a
/// peer hop (a PROXY v2 signature, first byte `\r`) by this byte alone.
pub const FRAME_FIRST_BYTE: u8 = 0;

const _: () = assert!(MAX_FRAME_BYTES < 1 << 24);

/// Payload bytes pre-allocated before they arrive; beyond this the buffer grows
/// with the data, so a peer that declares a large frame and sends nothing
/// costs nothing.
const INITIAL_READ_CAPACITY: usize = 64 * 1024;

/// Longest foreign cluster id kept in errors and logs.
const MAX_LOGGED_ID: usize = 64;

type WireConfig =
    Configuration<bincode::config::LittleEndian, bincode::config::Varint, Limit<MAX_FRAME_BYTES>>;

fn wire_config() -> WireConfig {
    bincode::config::standard().with_limit::<MAX_FRAME_BYTES>()
}

/// The payload of every frame.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// [`WIRE_VERSION`] of the sender.
    pub version: u16,
    /// The sender's cluster id; a node refuses frames of another cluster.
    pub cluster_id: String,
    /// The message.
    pub body: Message,
}

/// The same encoding as [`Envelope`], without cloning the message.
#[derive(Serialize)]
struct EnvelopeRef<'a> {
    version: u16,
    cluster_id: &'a str,
    body: &'a Message,
}

/// Why a frame could not be read, written or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between two frames.
    #[error("connection closed")]
    Closed,
    /// Reading or writing failed (including a close in the middle of a frame).
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The declared or encoded payload length exceeds [`MAX_FRAME_BYTES`].
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The length.
        len: u64,
        /// [`MAX_FRAME_BYTES`].
        max: usize,
    },
    /// The message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The payload is not a valid envelope.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The envelope has a version outside this node's window.
    #[error(
        "the peer speaks cluster protocol {version}; this node speaks {WIRE_VERSION} and talks to protocols {}..={}",
        crate::version::window().start(),
        crate::version::window().end()
    )]
    WrongVersion {
        /// The sender's version.
        version: u16,
    },
    /// The envelope names another cluster.
    #[error("frame from cluster {cluster_id:?}")]
    WrongCluster {
        /// The sender's cluster id (truncated to 64 characters).
        cluster_id: String,
    },
}

/// Encodes `body` for `cluster_id` as one complete frame, length prefix
/// included, ready for a single write.
pub fn encode_frame(cluster_id: &str, body: &Message) -> Result<Vec<u8>, FrameError> {
    let envelope = EnvelopeRef { version: WIRE_VERSION, cluster_id, body };
    let mut frame = vec![0u8; 4];
    bincode::serde::encode_into_std_write(&envelope, &mut frame, bincode::config::standard())
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    let len = frame.len() - 4;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge { len: len as u64, max: MAX_FRAME_BYTES });
    }
    let prefix =
        u32::try_from(len).map_err(|_| FrameError::TooLarge { len: len as u64, max: MAX_FRAME_BYTES })?;
    frame[..4].copy_from_slice(&prefix.to_be_bytes());
    Ok(frame)
}

/// Decodes a frame's payload, refusing another version or cluster id.
/// Never panics, whatever the bytes.
pub fn decode_payload(payload: &[u8], cluster_id: &str) -> Result<Message, FrameError> {
    let malformed = |e: bincode::error::DecodeError| FrameError::Malformed(e.to_string());
    let (version, n): (u16, usize) =
        bincode::serde::decode_from_slice(payload, wire_config()).map_err(malformed)?;
    if !crate::version::compatible(version) {
        return Err(FrameError::WrongVersion { version });
    }
    let rest = payload.get(n..).unwrap_or_default();
    let (theirs, m): (String, usize) =
        bincode::serde::decode_from_slice(rest, wire_config()).map_err(malformed)?;
    if theirs != cluster_id {
        let cluster_id = theirs.chars().take(MAX_LOGGED_ID).collect();
        return Err(FrameError::WrongCluster { cluster_id });
    }
    let rest = rest.get(m..).unwrap_or_default();
    let (body, k): (Message, usize) =
        bincode::serde::decode_from_slice(rest, wire_config()).map_err(malformed)?;
    if k != rest.len() {
        return Err(FrameError::Malformed(format!("{} trailing bytes", rest.len() - k)));
    }
    Ok(body)
}

/// Reads one frame's payload. A declared length above [`MAX_FRAME_BYTES`] is
/// refused before the payload is read or allocated.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; 4];
    let mut filled = 0;
    while filled < header.len() {
        let n = r.read(&mut header[filled..]).await?;
        if n == 0 {
            return Err(if filled == 0 {
                FrameError::Closed
            } else {
                FrameError::Io(io::ErrorKind::UnexpectedEof.into())
            });
        }
        filled += n;
    }
    let len = u32::from_be_bytes(header);
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge { len: len as u64, max: MAX_FRAME_BYTES });
    }
    let mut payload = Vec::with_capacity(len.min(INITIAL_READ_CAPACITY));
    // `len` fits in u64: it is at most MAX_FRAME_BYTES.
    r.take(len as u64).read_to_end(&mut payload).await?;
    if payload.len() != len {
        return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(payload)
}

/// Writes one frame made by [`encode_frame`].
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> Result<(), FrameError> {
    w.write_all(frame).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ferry_raft_store::{Command, NodeInfo, Request, Response};
    use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, Vote};

    use super::*;
    use crate::cluster::message::WriteError;

    const CLUSTER: &str = "ferry-test";

    fn log_id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn put_route() -> Request {
        let route = serde_json::from_value(serde_json::json!({
            "name": "web", "listen": "127.0.0.1:0",
            "backends": [{"id": "a", "addr": "127.0.0.1:9001"}]
        }))
        .expect("valid route");
        Request::with_id(7, Command::PutRoute { route, cas: Some(0) })
    }

    fn samples() -> Vec<Message> {
        let node =
            NodeInfo { name: "n1".into(), cluster_addr: "127.0.0.1:7947".into(), admin_addr: "x".into() };
        let membership = Membership::new(vec![[1u64].into()], BTreeMap::from([(1u64, node.clone())]));
        let entries = vec![
            Entry { log_id: log_id(1, 1), payload: EntryPayload::Blank },
            Entry { log_id: log_id(1, 2), payload: EntryPayload::Normal(put_route()) },
            Entry { log_id: log_id(1, 3), payload: EntryPayload::Membership(membership.clone()) },
        ];
        vec![
            Message::Ping,
            Message::AppendEntries(AppendEntriesRequest {
                vote: Vote::new_committed(1, 1),
                prev_log_id: None,
                entries,
                leader_commit: Some(log_id(1, 1)),
            }),
            Message::Vote(VoteRequest::new(Vote::new(2, 3), Some(log_id(1, 3)))),
            Message::InstallSnapshot(InstallSnapshotRequest {
                vote: Vote::new_committed(1, 1),
                meta: SnapshotMeta {
                    last_log_id: Some(log_id(1, 3)),
                    last_membership: openraft::StoredMembership::new(Some(log_id(1, 3)), membership),
                    snapshot_id: "s-1".into(),
                },
                offset: 17,
                data: vec![0xAB; 70_000],
                done: false,
            }),
            Message::ClientWrite(put_route()),
            Message::ClientWriteResult(Ok(Response::Applied { index: 4, revision: 4 })),
            Message::ClientWriteResult(Err(WriteError::ForwardToLeader { leader_id: 1, leader: node })),
            Message::ClientWriteResult(Ok(Response::Rejected {
                error: ferry_raft_store::StateError::RequestIdReused { id: u128::MAX },
            })),
            Message::ClientWriteResult(Err(WriteError::NoQuorum { since_ms: 1_234, proposed: true })),
            Message::ReadIndexResult(Err(WriteError::LeaderChanged)),
            Message::Error { code: crate::cluster::message::ErrorCode::WrongCluster, message: "x".into() },
            Message::BindFailures,
            Message::Clock,
            Message::ClockResult(crate::cluster::deadline::ClockReading { epoch: 9, now_ns: 1 << 40 }),
            Message::ClientWriteBy {
                request: put_route(),
                deadline: crate::cluster::deadline::PeerDeadline { epoch: 9, at_ns: (1 << 40) + 5 },
            },
            Message::ClientWriteResult(Err(WriteError::DeadlineExceeded { late_ms: 12 })),
            Message::ClientWriteResult(Err(WriteError::FeatureNotEnabled {
                feature: "route_labels".into(),
                since: 4,
                behind: vec!["n3 (0.1.0+0123456789ab, protocol 3)".into()],
            })),
            Message::NodeStatusResult(crate::cluster::message::NodeStatus {
                node_id: 3,
                name: "n3".into(),
                initialized: true,
                applied_index: Some(9),
                bootstrap_expect: 3,
                version: "0.1.0+0123456789ab".into(),
                protocol: 3,
                features: vec![],
                admin_addr: String::new(),
            }),
            Message::PreVote(ferry_raft_store::election::PreVoteRequest {
                candidate: 2,
                term: 7,
                last_log_id: Some(log_id(6, 40)),
            }),
            Message::BindFailuresResult(crate::cluster::message::BindReport {
                node_id: 2,
                name: "n2".into(),
                failures: vec![crate::cluster::message::BindFailure {
                    route: "w1".into(),
                    addr: "10.9.9.9:7000".into(),
                    error: "Cannot assign requested address (os error 99)".into(),
                }],
            }),
        ]
    }

    #[tokio::test]
    async fn frame_round_trip() {
        for msg in samples() {
            let frame = encode_frame(CLUSTER, &msg).expect("encode");
            let (mut a, mut b) = tokio::io::duplex(4096);
            let writer = tokio::spawn(async move { write_frame(&mut a, &frame).await.map(|_| a) });
            let payload = read_frame(&mut b).await.expect("read");
            let _a = writer.await.expect("join").expect("write");
            let back = decode_payload(&payload, CLUSTER).expect("decode");
            assert_eq!(format!("{back:?}"), format!("{msg:?}"));
            // Re-encoding gives the same bytes.
            let again = encode_frame(CLUSTER, &back).expect("re-encode");
            assert_eq!(&again[4..], &payload[..]);
        }
    }

    /// A self-describing value's bytes: its JSON document, length first
    /// (one varint byte below 251).
    fn doc(json: &str) -> Vec<u8> {
        assert!(json.len() < 251);
        let mut out = vec![json.len() as u8];
        out.extend_from_slice(json.as_bytes());
        out
    }

    /// A payload from a peer of `version` to cluster "ferry": `body` after
    /// the envelope.
    fn payload(version: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![version, 5];
        out.extend_from_slice(b"ferry");
        out.extend_from_slice(body);
        out
    }

    /// The envelope layout, the variant indexes of `Message` and the JSON
    /// documents inside are the wire format: these bytes must keep decoding
    /// while protocol 3 is in the window.
    #[test]
    fn frame_fixture_v3() {
        // This build writes its own protocol in the same layout.
        let ping = encode_frame("ferry", &Message::Ping).expect("encode");
        assert_eq!(ping, [0, 0, 0, 8, WIRE_VERSION as u8, 5, b'f', b'e', b'r', b'r', b'y', 0]);
        // The documented Envelope reads a protocol-3 ping.
        let (envelope, n): (Envelope, usize) =
            bincode::serde::decode_from_slice(&payload(3, &[0]), wire_config()).expect("envelope");
        assert_eq!((envelope.version, envelope.cluster_id.as_str(), n), (3, "ferry", 8));
        assert!(matches!(envelope.body, Message::Ping));
        // Protocol 3's layout, under the oldest protocol of the window
        // (the layout has not changed since).
        let oldest = *crate::version::window().start() as u8;
        let decode =
            |body: Vec<u8>| decode_payload(&payload(oldest, &body), "ferry").expect("decode fixture");
        // ClientWriteResult (9), Err (1), NoLeader.
        let msg = decode([vec![9, 1], doc(r#""NoLeader""#)].concat());
        assert!(matches!(msg, Message::ClientWriteResult(Err(WriteError::NoLeader))), "{msg:?}");
        let msg = decode([vec![9, 1], doc(r#"{"NoQuorum":{"since_ms":300,"proposed":true}}"#)].concat());
        assert!(
            matches!(
                msg,
                Message::ClientWriteResult(Err(WriteError::NoQuorum { since_ms: 300, proposed: true }))
            ),
            "{msg:?}"
        );
        // ReadIndexResult (12), Err (1), LeaderChanged.
        let msg = decode([vec![12, 1], doc(r#""LeaderChanged""#)].concat());
        assert!(matches!(msg, Message::ReadIndexResult(Err(WriteError::LeaderChanged))), "{msg:?}");
        // ClientWriteResult (9), Ok (0), a rejection.
        let msg =
            decode([vec![9, 0], doc(r#"{"Rejected":{"error":{"RequestIdReused":{"id":42}}}}"#)].concat());
        assert!(
            matches!(
                msg,
                Message::ClientWriteResult(Ok(Response::Rejected {
                    error: ferry_raft_store::StateError::RequestIdReused { id: 42 }
                }))
            ),
            "{msg:?}"
        );
        // Error (10) { WrongCluster, "no" }.
        let msg = decode([vec![10], doc(r#""WrongCluster""#), vec![2, b'n', b'o']].concat());
        assert!(
            matches!(&msg, Message::Error { code: crate::cluster::message::ErrorCode::WrongCluster, message } if message == "no"),
            "{msg:?}"
        );
        // BindFailures (19); BindFailuresResult (20) { node_id 2, "n", [] }.
        assert!(matches!(decode(vec![19]), Message::BindFailures));
        let msg = decode([vec![20], doc(r#"{"node_id":2,"name":"n","failures":[]}"#)].concat());
        assert!(
            matches!(&msg, Message::BindFailuresResult(r) if r.node_id == 2 && r.name == "n" && r.failures.is_empty()),
            "{msg:?}"
        );
        // FeatureNotEnabled names the feature and the members behind.
        let msg = decode(
            [vec![9, 1], doc(r#"{"FeatureNotEnabled":{"feature":"f","since":4,"behind":["n2 (0.1.0+abc, protocol 3)"]}}"#)]
                .concat(),
        );
        assert!(
            matches!(&msg, Message::ClientWriteResult(Err(WriteError::FeatureNotEnabled { feature, since: 4, behind }))
                if feature == "f" && behind.len() == 1),
            "{msg:?}"
        );
    }

    /// Golden frames of protocol 3: every sample message but the snapshot
    /// chunk (its 70,000 data bytes), one hex frame per line. The layout
    /// has not changed since: with the envelope's version set to the
    /// oldest of the window they decode to the same message, and this
    /// build writes them byte for byte but for that version, its own. Never regenerate
    /// the file to make the test pass (`FERRY_WRITE_FIXTURES=1` writes it
    /// only when it is missing).
    #[test]
    fn frame_golden_bytes_of_protocol_3() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cluster/frames_protocol_3.hex");
        let msgs: Vec<Message> =
            samples().into_iter().filter(|m| !matches!(m, Message::InstallSnapshot(_))).collect();
        let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        if std::env::var_os("FERRY_WRITE_FIXTURES").is_some() && !path.exists() {
            let lines: Vec<String> =
                msgs.iter().map(|m| hex(&encode_frame(CLUSTER, m).expect("encode"))).collect();
            std::fs::write(&path, lines.join("\n") + "\n").expect("write fixture");
        }
        let text = std::fs::read_to_string(&path).expect("read the fixture");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), msgs.len(), "one frame per sample");
        for (line, msg) in lines.iter().zip(&msgs) {
            let mut bytes: Vec<u8> = (0..line.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&line[i..i + 2], 16).expect("hex"))
                .collect();
            assert_eq!(bytes[4], 3, "the golden frames are protocol 3's");
            bytes[4] = *crate::version::window().start() as u8;
            let decoded = decode_payload(&bytes[4..], CLUSTER).expect("decode a golden frame");
            assert_eq!(format!("{decoded:?}"), format!("{msg:?}"));
            let mut ours = encode_frame(CLUSTER, msg).expect("encode");
            assert_eq!(ours[4], WIRE_VERSION as u8);
            ours[4] = 3;
            assert_eq!(hex(&ours), *line, "{}", msg.kind());
        }
    }

    /// Within the window, a newer peer's frames are read: a status with a
    /// field this build does not know (informational) reads without it; a
    /// write with a field it does not know is refused, naming the field.
    #[test]
    fn frame_from_the_next_protocol() {
        let next = (crate::version::PROTOCOL + 1) as u8;
        // NodeStatusResult (14) with a field from the future.
        let status = r#"{"node_id":2,"name":"n2","initialized":true,"applied_index":7,"bootstrap_expect":0,"version":"0.2.0+abc","protocol":4,"features":[],"zone":"b"}"#;
        let msg =
            decode_payload(&payload(next, &[vec![14], doc(status)].concat()), "ferry").expect("newer status");
        assert!(
            matches!(&msg, Message::NodeStatusResult(s) if s.protocol == 4 && s.applied_index == Some(7)),
            "{msg:?}"
        );
        // ClientWrite (8) of a route with a setting this build does not know.
        let write = r#"{"id":null,"command":{"DeleteRoute":{"name":"web","cas":null,"force":true}}}"#;
        let err =
            decode_payload(&payload(next, &[vec![8], doc(write)].concat()), "ferry").expect_err("refused");
        assert!(matches!(&err, FrameError::Malformed(m) if m.contains("unknown field `force`")), "{err:?}");
        // Two protocols apart, or before the self-describing one: refused
        // as a version, whatever follows.
        for version in [next + 1, 2, 1] {
            let err = decode_payload(&payload(version, &[0]), "ferry").expect_err("outside the window");
            assert!(
                matches!(err, FrameError::WrongVersion { version: v } if v == u16::from(version)),
                "{err:?}"
            );
        }
    }

    #[tokio::test]
    async fn frame_oversized_is_refused_before_reading_the_payload() {
        for len in [MAX_FRAME_BYTES as u32 + 1, u32::MAX] {
            // Only the header: reading the payload would fail with UnexpectedEof instead.
            let mut input: &[u8] = &len.to_be_bytes();
            let err = read_frame(&mut input).await.expect_err("oversized");
            assert!(matches!(err, FrameError::TooLarge { len: l, .. } if l == u64::from(len)), "{err:?}");
        }
        // Exactly the maximum is allowed (and then fails only for want of bytes).
        let mut input: &[u8] = &(MAX_FRAME_BYTES as u32).to_be_bytes();
        let err = read_frame(&mut input).await.expect_err("short");
        assert!(matches!(err, FrameError::Io(ref e) if e.kind() == io::ErrorKind::UnexpectedEof), "{err:?}");
        // The sender refuses to build one too.
        let big = Message::ClientWriteResult(Err(WriteError::Fatal { message: "x".repeat(MAX_FRAME_BYTES) }));
        assert!(matches!(encode_frame(CLUSTER, &big), Err(FrameError::TooLarge { .. })));
    }

    #[tokio::test]
    async fn frame_close_between_and_inside_frames() {
        let mut empty: &[u8] = &[];
        assert!(matches!(read_frame(&mut empty).await, Err(FrameError::Closed)));
        let mut partial: &[u8] = &[0, 0];
        assert!(matches!(read_frame(&mut partial).await, Err(FrameError::Io(_))));
        let mut short: &[u8] = &[0, 0, 0, 9, 1, 2, 3];
        assert!(matches!(read_frame(&mut short).await, Err(FrameError::Io(_))));
    }

    #[test]
    fn frame_wrong_version_or_cluster_is_refused() {
        let frame = encode_frame("other", &Message::Ping).expect("encode");
        let err = decode_payload(&frame[4..], CLUSTER).expect_err("foreign");
        assert!(
            matches!(err, FrameError::WrongCluster { ref cluster_id } if cluster_id == "other"),
            "{err:?}"
        );

        let far = WIRE_VERSION as u8 + 2;
        let mut payload = frame[4..].to_vec();
        payload[0] = far;
        let err = decode_payload(&payload, "other").expect_err("two protocols ahead");
        assert!(matches!(err, FrameError::WrongVersion { version } if version == u16::from(far)), "{err:?}");
        // A body we cannot parse is still refused as a version.
        let err = decode_payload(&[far, 0xFF, 0xFF], "other").expect_err("two protocols ahead");
        assert!(matches!(err, FrameError::WrongVersion { version } if version == u16::from(far)), "{err:?}");
        // Trailing bytes are malformed.
        let mut payload = frame[4..].to_vec();
        payload.push(0);
        assert!(matches!(decode_payload(&payload, "other"), Err(FrameError::Malformed(_))));
    }

    /// Random bytes, truncations and bit flips of valid frames never panic.
    #[tokio::test]
    async fn frame_random_and_truncated_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x5eed_f3e7);
        let valid: Vec<Vec<u8>> =
            samples().iter().map(|m| encode_frame(CLUSTER, m).expect("encode")).collect();
        for _ in 0..4_000 {
            let len = rng.usize(0..512);
            let mut buf: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
            if rng.bool() && len > 8 {
                // Make it look like ours so the decoder goes past the header.
                buf[0] = WIRE_VERSION as u8;
                buf[1] = CLUSTER.len() as u8;
                buf[2..2 + CLUSTER.len().min(len - 2)]
                    .copy_from_slice(&CLUSTER.as_bytes()[..CLUSTER.len().min(len - 2)]);
            }
            let _ = decode_payload(&buf, CLUSTER);
            let mut stream: &[u8] = &buf;
            let _ = read_frame(&mut stream).await;
        }
        for frame in &valid {
            let payload = &frame[4..];
            for cut in 0..payload.len().min(600) {
                assert!(decode_payload(&payload[..cut], CLUSTER).is_err(), "prefix {cut} decoded");
                let mut stream: &[u8] = &frame[..cut.min(frame.len() - 1)];
                assert!(read_frame(&mut stream).await.is_err());
            }
            for _ in 0..200 {
                let mut flipped = payload.to_vec();
                let i = rng.usize(..flipped.len());
                flipped[i] ^= 1 << rng.u8(0..8);
                let _ = decode_payload(&flipped, CLUSTER);
            }
        }
    }
}
