//! Format versions 1 to 3, frozen: the positional bincode layouts of every
//! persisted type as those versions wrote them, and their conversion to
//! today's types. [`codec::decode`] reads bytes of those versions through
//! them (the [`Persisted`] impl of each type names its three layouts).
//!
//! These copies never change again. Since version 4 ferry's types are
//! self-describing and gain fields without a new format, which would move
//! a positional layout read through today's types: so old bytes are read
//! through these copies instead, field for field.
//!
//! - Version 1: backends have no `node`; the memory of request ids is
//!   `(id, response)` pairs.
//! - Version 2: backends carry `node`.
//! - Version 3: each remembered id keeps its command's digest.
//!
//! What is read from them keeps no command digest: those digests were
//! computed from these positional bytes, which version 4 no longer writes.
//! A request read from an old log entry remembers none when applied, and
//! an id remembered in an old snapshot answers its original response to any
//! command, as format 1 and 2 entries always did. Every node drops them
//! alike, whichever format it read them from, so the states stay equal.
//!
//! These types only deserialize: nothing writes versions 1 to 3 any more.
//!
//! [`codec::decode`]: crate::codec::decode

use std::collections::BTreeMap;

use ferry_client::chaos::{ChaosPolicy, ChaosScope, Direction, Toxic, ToxicKind};
use ferry_client::{BackendSpec, Balance, FieldError, HashKey, HealthCheckSpec, RouteSpec};
use openraft::{EntryPayload, Membership, SnapshotMeta};
use serde::Deserialize;

use crate::codec::{Persisted, unchanged_since_v1};
use crate::command::{Command, Request, Response, StateError};
use crate::recent::{RecentRequests, Remembered};
use crate::snapshot::{SnapshotEnvelope, StoredSnapshot};
use crate::state::{ClusterState, StoredPolicy, StoredRoute};
use crate::state_machine::SmMeta;
use crate::types::{Entry, LogId, NodeId, NodeInfo, StoredMembership, Vote};

unchanged_since_v1!(LogId, Option<LogId>, Vote);

impl Persisted for Entry {
    type V1 = EntryP<BackendV1>;
    type V2 = EntryP<BackendP>;
    type V3 = EntryP<BackendP>;
}
impl Persisted for StoredRoute {
    type V1 = StoredRouteP<BackendV1>;
    type V2 = StoredRouteP<BackendP>;
    type V3 = StoredRouteP<BackendP>;
}
impl Persisted for ClusterState {
    type V1 = ClusterStateP<BackendV1, RecentPairs>;
    type V2 = ClusterStateP<BackendP, RecentPairs>;
    type V3 = ClusterStateP<BackendP, RecentP>;
}
impl Persisted for SnapshotEnvelope {
    type V1 = SnapshotEnvelopeP<BackendV1, RecentPairs>;
    type V2 = SnapshotEnvelopeP<BackendP, RecentPairs>;
    type V3 = SnapshotEnvelopeP<BackendP, RecentP>;
}
impl Persisted for StoredSnapshot {
    type V1 = StoredSnapshotP;
    type V2 = StoredSnapshotP;
    type V3 = StoredSnapshotP;
}
impl Persisted for StoredPolicy {
    type V1 = StoredPolicyP;
    type V2 = StoredPolicyP;
    type V3 = StoredPolicyP;
}
impl Persisted for SmMeta {
    type V1 = SmMetaP;
    type V2 = SmMetaP;
    type V3 = SmMetaP;
}
// A `recent/<seq>` key of the per-apply layout, only ever written by
// versions 1 and 2 (see `state_machine`).
impl Persisted for (u128, Response) {
    type V1 = PairP;
    type V2 = PairP;
    type V3 = PairP;
}

/// A remembered `(id, response)` pair of the per-apply layout.
#[derive(Debug, Deserialize)]
pub struct PairP(u128, ResponseP);

impl From<PairP> for (u128, Response) {
    fn from(PairP(id, r): PairP) -> Self {
        (id, r.into())
    }
}

/// [`NodeInfo`] (openraft asks a node type for the rest of the derives).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct NodeInfoP {
    name: String,
    cluster_addr: String,
    admin_addr: String,
}

impl From<NodeInfoP> for NodeInfo {
    fn from(n: NodeInfoP) -> Self {
        NodeInfo { name: n.name, cluster_addr: n.cluster_addr, admin_addr: n.admin_addr }
    }
}

/// openraft's membership with [`NodeInfoP`] nodes.
pub type MembershipP = Membership<NodeId, NodeInfoP>;

fn membership(m: &MembershipP) -> Membership<NodeId, NodeInfo> {
    let nodes: BTreeMap<NodeId, NodeInfo> = m
        .nodes()
        .map(|(id, n)| {
            let info = NodeInfo {
                name: n.name.clone(),
                cluster_addr: n.cluster_addr.clone(),
                admin_addr: n.admin_addr.clone(),
            };
            (*id, info)
        })
        .collect();
    Membership::new(m.get_joint_config().clone(), nodes)
}

/// openraft's stored membership with [`NodeInfoP`] nodes.
pub type StoredMembershipP = openraft::StoredMembership<NodeId, NodeInfoP>;

fn stored_membership(m: &StoredMembershipP) -> StoredMembership {
    StoredMembership::new(*m.log_id(), membership(m.membership()))
}

/// A backend, version 1: no `node`.
#[derive(Debug, Deserialize)]
pub struct BackendV1 {
    id: String,
    addr: String,
    weight: u32,
}

impl From<BackendV1> for BackendSpec {
    fn from(b: BackendV1) -> Self {
        BackendSpec { id: b.id, addr: b.addr, weight: b.weight, node: None }
    }
}

/// A backend, versions 2 and 3.
#[derive(Debug, Deserialize)]
pub struct BackendP {
    id: String,
    addr: String,
    weight: u32,
    node: Option<String>,
}

impl From<BackendP> for BackendSpec {
    fn from(b: BackendP) -> Self {
        BackendSpec { id: b.id, addr: b.addr, weight: b.weight, node: b.node }
    }
}

/// [`Balance`] (variant indexes).
#[derive(Debug, Deserialize)]
pub enum BalanceP {
    Weighted,
    ConsistentHash,
    LeastConnections,
    RoundRobin,
    Random,
}

impl From<BalanceP> for Balance {
    fn from(b: BalanceP) -> Self {
        match b {
            BalanceP::Weighted => Balance::Weighted,
            BalanceP::ConsistentHash => Balance::ConsistentHash,
            BalanceP::LeastConnections => Balance::LeastConnections,
            BalanceP::RoundRobin => Balance::RoundRobin,
            BalanceP::Random => Balance::Random,
        }
    }
}

/// [`HashKey`].
#[derive(Debug, Deserialize)]
pub enum HashKeyP {
    ClientIp,
    ClientAddr,
}

impl From<HashKeyP> for HashKey {
    fn from(h: HashKeyP) -> Self {
        match h {
            HashKeyP::ClientIp => HashKey::ClientIp,
            HashKeyP::ClientAddr => HashKey::ClientAddr,
        }
    }
}

/// [`HealthCheckSpec`].
#[derive(Debug, Deserialize)]
pub struct HealthCheckP {
    interval_ms: u64,
    timeout_ms: u64,
    rise: u32,
    fall: u32,
}

impl From<HealthCheckP> for HealthCheckSpec {
    fn from(h: HealthCheckP) -> Self {
        HealthCheckSpec { interval_ms: h.interval_ms, timeout_ms: h.timeout_ms, rise: h.rise, fall: h.fall }
    }
}

/// [`RouteSpec`] with backends of layout `B`.
#[derive(Debug, Deserialize)]
pub struct RouteP<B> {
    name: String,
    listen: String,
    balance: BalanceP,
    hash_key: HashKeyP,
    vnodes: u32,
    connect_timeout_ms: u64,
    idle_timeout_ms: u64,
    max_connections: u64,
    max_connect_attempts: u32,
    eject_after_failures: u32,
    eject_backoff_ms: u64,
    backends: Vec<B>,
    health_check: Option<HealthCheckP>,
}

/// A field added to [`RouteSpec`] since takes its default here (the
/// compiler asks for it).
impl<B: Into<BackendSpec>> From<RouteP<B>> for RouteSpec {
    fn from(r: RouteP<B>) -> Self {
        RouteSpec {
            name: r.name,
            listen: r.listen,
            balance: r.balance.into(),
            hash_key: r.hash_key.into(),
            vnodes: r.vnodes,
            connect_timeout_ms: r.connect_timeout_ms,
            idle_timeout_ms: r.idle_timeout_ms,
            max_connections: r.max_connections,
            max_connect_attempts: r.max_connect_attempts,
            eject_after_failures: r.eject_after_failures,
            eject_backoff_ms: r.eject_backoff_ms,
            backends: r.backends.into_iter().map(Into::into).collect(),
            health_check: r.health_check.map(Into::into),
            labels: BTreeMap::new(),
            enabled: true,
        }
    }
}

/// [`StoredRoute`].
#[derive(Debug, Deserialize)]
pub struct StoredRouteP<B> {
    spec: RouteP<B>,
    revision: u64,
}

impl<B: Into<BackendSpec>> From<StoredRouteP<B>> for StoredRoute {
    fn from(r: StoredRouteP<B>) -> Self {
        StoredRoute { spec: r.spec.into(), revision: r.revision }
    }
}

/// [`Direction`].
#[derive(Debug, Deserialize)]
pub enum DirectionP {
    Upstream,
    Downstream,
}

/// [`ToxicKind`].
#[derive(Debug, Deserialize)]
pub enum ToxicKindP {
    Latency { latency_ms: u64, jitter_ms: u64 },
    Bandwidth { rate_kbps: u64 },
    SlowClose { delay_ms: u64 },
    Timeout { timeout_ms: u64 },
    ResetPeer { timeout_ms: u64 },
    Slicer { average_size: u64, size_variation: u64, delay_us: u64 },
    LimitData { bytes: u64 },
    Refuse {},
}

impl From<ToxicKindP> for ToxicKind {
    fn from(k: ToxicKindP) -> Self {
        match k {
            ToxicKindP::Latency { latency_ms, jitter_ms } => ToxicKind::Latency { latency_ms, jitter_ms },
            ToxicKindP::Bandwidth { rate_kbps } => ToxicKind::Bandwidth { rate_kbps },
            ToxicKindP::SlowClose { delay_ms } => ToxicKind::SlowClose { delay_ms },
            ToxicKindP::Timeout { timeout_ms } => ToxicKind::Timeout { timeout_ms },
            ToxicKindP::ResetPeer { timeout_ms } => ToxicKind::ResetPeer { timeout_ms },
            ToxicKindP::Slicer { average_size, size_variation, delay_us } => {
                ToxicKind::Slicer { average_size, size_variation, delay_us }
            }
            ToxicKindP::LimitData { bytes } => ToxicKind::LimitData { bytes },
            ToxicKindP::Refuse {} => ToxicKind::Refuse {},
        }
    }
}

/// [`Toxic`].
#[derive(Debug, Deserialize)]
pub struct ToxicP {
    direction: DirectionP,
    kind: ToxicKindP,
}

/// [`ChaosScope`].
#[derive(Debug, Deserialize)]
pub struct ChaosScopeP {
    routes: Vec<String>,
    nodes: Vec<String>,
}

/// [`ChaosPolicy`].
#[derive(Debug, Deserialize)]
pub struct ChaosPolicyP {
    name: String,
    toxics: Vec<ToxicP>,
    scope: ChaosScopeP,
    toxicity: f64,
    expires_at: Option<u64>,
}

/// Fields added to [`ChaosPolicy`] since take their defaults here.
impl From<ChaosPolicyP> for ChaosPolicy {
    fn from(p: ChaosPolicyP) -> Self {
        let toxics = p
            .toxics
            .into_iter()
            .map(|t| Toxic {
                direction: match t.direction {
                    DirectionP::Upstream => Direction::Upstream,
                    DirectionP::Downstream => Direction::Downstream,
                },
                kind: t.kind.into(),
            })
            .collect();
        ChaosPolicy {
            name: p.name,
            toxics,
            scope: ChaosScope { routes: p.scope.routes, nodes: p.scope.nodes, backends: Vec::new() },
            toxicity: p.toxicity,
            expires_at: p.expires_at,
            seed: None,
        }
    }
}

/// [`StoredPolicy`].
#[derive(Debug, Deserialize)]
pub struct StoredPolicyP {
    policy: ChaosPolicyP,
    revision: u64,
}

impl From<StoredPolicyP> for StoredPolicy {
    fn from(p: StoredPolicyP) -> Self {
        StoredPolicy { policy: p.policy.into(), revision: p.revision }
    }
}

/// [`FieldError`].
#[derive(Debug, Deserialize)]
pub struct FieldErrorP {
    path: String,
    message: String,
}

/// [`StateError`].
#[derive(Debug, Deserialize)]
pub enum StateErrorP {
    CasMismatch { current: u64 },
    NotFound { what: String },
    Invalid { errors: Vec<FieldErrorP> },
    RequestIdReused { id: u128 },
}

impl From<StateErrorP> for StateError {
    fn from(e: StateErrorP) -> Self {
        match e {
            StateErrorP::CasMismatch { current } => StateError::CasMismatch { current },
            StateErrorP::NotFound { what } => StateError::NotFound { what },
            StateErrorP::Invalid { errors } => StateError::Invalid {
                errors: errors.into_iter().map(|f| FieldError::new(f.path, f.message)).collect(),
            },
            StateErrorP::RequestIdReused { id } => StateError::RequestIdReused { id },
        }
    }
}

/// [`Response`].
#[derive(Debug, Deserialize)]
pub enum ResponseP {
    Applied { index: u64, revision: u64 },
    Rejected { error: StateErrorP },
    Internal { index: u64 },
    Batch { responses: Vec<ResponseP> },
}

impl From<ResponseP> for Response {
    fn from(r: ResponseP) -> Self {
        match r {
            ResponseP::Applied { index, revision } => Response::Applied { index, revision },
            ResponseP::Rejected { error } => Response::Rejected { error: error.into() },
            ResponseP::Internal { index } => Response::Internal { index },
            ResponseP::Batch { responses } => {
                Response::Batch { responses: responses.into_iter().map(Into::into).collect() }
            }
        }
    }
}

/// [`Command`] with routes whose backends have layout `B`.
#[derive(Debug, Deserialize)]
pub enum CommandP<B> {
    PutRoute { route: RouteP<B>, cas: Option<u64> },
    DeleteRoute { name: String, cas: Option<u64> },
    SetBackendWeight { route: String, backend: String, weight: u32, cas: Option<u64> },
    PutChaosPolicy { policy: ChaosPolicyP, cas: Option<u64> },
    DeleteChaosPolicy { name: String, cas: Option<u64> },
    SeedRoutes { routes: Vec<RouteP<B>> },
    Batch { requests: Vec<RequestP<B>> },
}

impl<B: Into<BackendSpec>> From<CommandP<B>> for Command {
    fn from(c: CommandP<B>) -> Self {
        match c {
            CommandP::PutRoute { route, cas } => Command::PutRoute { route: route.into(), cas },
            CommandP::DeleteRoute { name, cas } => Command::DeleteRoute { name, cas },
            CommandP::SetBackendWeight { route, backend, weight, cas } => {
                Command::SetBackendWeight { route, backend, weight, cas }
            }
            CommandP::PutChaosPolicy { policy, cas } => {
                Command::PutChaosPolicy { policy: policy.into(), cas }
            }
            CommandP::DeleteChaosPolicy { name, cas } => Command::DeleteChaosPolicy { name, cas },
            CommandP::SeedRoutes { routes } => {
                Command::SeedRoutes { routes: routes.into_iter().map(Into::into).collect() }
            }
            CommandP::Batch { requests } => {
                Command::Batch { requests: requests.into_iter().map(Into::into).collect() }
            }
        }
    }
}

/// [`Request`].
#[derive(Debug, Deserialize)]
pub struct RequestP<B> {
    id: Option<u128>,
    command: CommandP<B>,
}

impl<B: Into<BackendSpec>> From<RequestP<B>> for Request {
    fn from(r: RequestP<B>) -> Self {
        // Its digest would not match format 3's: see the module doc.
        Request { id: r.id, command: r.command.into(), digestless: true }
    }
}

/// openraft's `EntryPayload`: the same variants in the same order.
#[derive(Debug, Deserialize)]
pub enum EntryPayloadP<B> {
    Blank,
    Normal(RequestP<B>),
    Membership(MembershipP),
}

/// A log [`Entry`]: openraft's `Entry` layout (log id, payload).
#[derive(Debug, Deserialize)]
pub struct EntryP<B> {
    log_id: LogId,
    payload: EntryPayloadP<B>,
}

impl<B: Into<BackendSpec>> From<EntryP<B>> for Entry {
    fn from(e: EntryP<B>) -> Self {
        let payload = match e.payload {
            EntryPayloadP::Blank => EntryPayload::Blank,
            EntryPayloadP::Normal(r) => EntryPayload::Normal(r.into()),
            EntryPayloadP::Membership(m) => EntryPayload::Membership(membership(&m)),
        };
        Entry { log_id: e.log_id, payload }
    }
}

/// The memory of request ids, versions 1 and 2: `(id, response)` pairs.
#[derive(Debug, Deserialize)]
pub struct RecentPairs {
    first_seq: u64,
    entries: Vec<(u128, ResponseP)>,
}

impl From<RecentPairs> for RecentRequests {
    fn from(r: RecentPairs) -> Self {
        let entries = r.entries.into_iter().map(|(id, response)| Remembered::new(id, None, response.into()));
        RecentRequests::from_parts(r.first_seq, entries)
    }
}

/// The memory of request ids, version 3: with each command's digest,
/// dropped here (see the module doc).
#[derive(Debug, Deserialize)]
pub struct RecentP {
    first_seq: u64,
    entries: Vec<RememberedP>,
}

/// [`Remembered`], version 3.
#[derive(Debug, Deserialize)]
pub struct RememberedP {
    id: u128,
    _digest: Option<u128>,
    response: ResponseP,
}

impl From<RecentP> for RecentRequests {
    fn from(r: RecentP) -> Self {
        let entries = r.entries.into_iter().map(|e| Remembered::new(e.id, None, e.response.into()));
        RecentRequests::from_parts(r.first_seq, entries)
    }
}

/// [`ClusterState`].
#[derive(Debug, Deserialize)]
pub struct ClusterStateP<B, R> {
    routes: BTreeMap<String, StoredRouteP<B>>,
    chaos: BTreeMap<String, StoredPolicyP>,
    index: u64,
    recent: R,
}

impl<B: Into<BackendSpec>, R: Into<RecentRequests>> From<ClusterStateP<B, R>> for ClusterState {
    fn from(s: ClusterStateP<B, R>) -> Self {
        ClusterState {
            routes: s.routes.into_iter().map(|(k, v)| (k, v.into())).collect(),
            chaos: s.chaos.into_iter().map(|(k, v)| (k, v.into())).collect(),
            index: s.index,
            recent: s.recent.into(),
        }
    }
}

/// [`SnapshotEnvelope`].
#[derive(Debug, Deserialize)]
pub struct SnapshotEnvelopeP<B, R> {
    state: ClusterStateP<B, R>,
    last_applied: Option<LogId>,
    membership: StoredMembershipP,
}

impl<B: Into<BackendSpec>, R: Into<RecentRequests>> From<SnapshotEnvelopeP<B, R>> for SnapshotEnvelope {
    fn from(s: SnapshotEnvelopeP<B, R>) -> Self {
        SnapshotEnvelope {
            state: s.state.into(),
            last_applied: s.last_applied,
            membership: stored_membership(&s.membership),
        }
    }
}

/// [`StoredSnapshot`]: openraft's metadata, with [`NodeInfoP`] nodes.
#[derive(Debug, Deserialize)]
pub struct StoredSnapshotP {
    meta: SnapshotMeta<NodeId, NodeInfoP>,
    data: Vec<u8>,
}

impl From<StoredSnapshotP> for StoredSnapshot {
    fn from(s: StoredSnapshotP) -> Self {
        let meta = SnapshotMeta {
            last_log_id: s.meta.last_log_id,
            last_membership: stored_membership(&s.meta.last_membership),
            snapshot_id: s.meta.snapshot_id,
        };
        StoredSnapshot { meta, data: s.data }
    }
}

/// [`SmMeta`].
#[derive(Debug, Deserialize)]
pub struct SmMetaP {
    last_applied: Option<LogId>,
    membership: StoredMembershipP,
    index: u64,
    recent_first_seq: u64,
}

impl From<SmMetaP> for SmMeta {
    fn from(m: SmMetaP) -> Self {
        SmMeta::from_parts(m.last_applied, stored_membership(&m.membership), m.index, m.recent_first_seq)
    }
}
