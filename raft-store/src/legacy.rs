//! Format versions 1 and 2 of the persisted types whose encoding changed,
//! and the [`Persisted`] impl of every persisted type: what
//! [`codec::decode`] reads from bytes of an older version.
//!
//! Version 2 added `node` to a route's backends. bincode is positional, so a
//! version-1 route has one field fewer per backend, and every type that
//! contains a route (a log entry, a stored route, the cluster state, a
//! snapshot) is read through a copy of its version-1 layout here and
//! converted, with `node: None`.
//!
//! Version 3 added the command digest to each remembered request id. The
//! types that hold the memory (the cluster state, a snapshot) are read from
//! versions 1 and 2 through copies of their layout here, whose memory is the
//! `(id, response)` pairs of [`RecentRequestsV2`], converted with no digest.
//!
//! These types only deserialize: nothing writes versions 1 or 2 any more.
//!
//! [`codec::decode`]: crate::codec::decode

use std::collections::BTreeMap;

use ferry_client::chaos::ChaosPolicy;
use ferry_client::{BackendSpec, Balance, HashKey, HealthCheckSpec, RouteSpec};
use openraft::{EntryPayload, Membership};
use serde::Deserialize;

use crate::codec::{Persisted, unchanged_since_v1};
use crate::command::{Command, Request, Response};
use crate::recent::{RecentRequests, Remembered};
use crate::snapshot::{SnapshotEnvelope, StoredSnapshot};
use crate::state::{ClusterState, StoredPolicy, StoredRoute};
use crate::state_machine::SmMeta;
use crate::types::{Entry, LogId, NodeId, NodeInfo, StoredMembership, Vote};

// `(u128, Response)`: a `recent/<seq>` key of the per-apply layout, only
// ever written by versions 1 and 2 (see `state_machine`).
unchanged_since_v1!(LogId, Option<LogId>, Vote, StoredSnapshot, SmMeta, StoredPolicy, (u128, Response));

impl Persisted for Entry {
    type V1 = EntryV1;
    type V2 = Entry;
}
impl Persisted for StoredRoute {
    type V1 = StoredRouteV1;
    type V2 = StoredRoute;
}
impl Persisted for ClusterState {
    type V1 = ClusterStateV1;
    type V2 = ClusterStateV2;
}
impl Persisted for SnapshotEnvelope {
    type V1 = SnapshotEnvelopeV1;
    type V2 = SnapshotEnvelopeV2;
}

/// The memory of request ids, versions 1 and 2: `(id, response)` pairs,
/// without the command's digest.
#[derive(Debug, Deserialize)]
pub struct RecentRequestsV2 {
    first_seq: u64,
    entries: Vec<(u128, Response)>,
}

impl From<RecentRequestsV2> for RecentRequests {
    fn from(r: RecentRequestsV2) -> Self {
        let entries = r.entries.into_iter().map(|(id, response)| Remembered::new(id, None, response));
        RecentRequests::from_parts(r.first_seq, entries)
    }
}

/// A backend, version 1: no `node`.
#[derive(Debug, Deserialize)]
pub struct BackendSpecV1 {
    id: String,
    addr: String,
    weight: u32,
}

impl From<BackendSpecV1> for BackendSpec {
    fn from(b: BackendSpecV1) -> Self {
        BackendSpec { id: b.id, addr: b.addr, weight: b.weight, node: None }
    }
}

/// A route, version 1: [`RouteSpec`] field for field, with version-1 backends.
#[derive(Debug, Deserialize)]
pub struct RouteSpecV1 {
    name: String,
    listen: String,
    balance: Balance,
    hash_key: HashKey,
    vnodes: u32,
    connect_timeout_ms: u64,
    idle_timeout_ms: u64,
    max_connections: u64,
    max_connect_attempts: u32,
    eject_after_failures: u32,
    eject_backoff_ms: u64,
    backends: Vec<BackendSpecV1>,
    health_check: Option<HealthCheckSpec>,
}

impl From<RouteSpecV1> for RouteSpec {
    fn from(r: RouteSpecV1) -> Self {
        RouteSpec {
            name: r.name,
            listen: r.listen,
            balance: r.balance,
            hash_key: r.hash_key,
            vnodes: r.vnodes,
            connect_timeout_ms: r.connect_timeout_ms,
            idle_timeout_ms: r.idle_timeout_ms,
            max_connections: r.max_connections,
            max_connect_attempts: r.max_connect_attempts,
            eject_after_failures: r.eject_after_failures,
            eject_backoff_ms: r.eject_backoff_ms,
            backends: r.backends.into_iter().map(Into::into).collect(),
            health_check: r.health_check,
        }
    }
}

/// [`StoredRoute`], version 1.
#[derive(Debug, Deserialize)]
pub struct StoredRouteV1 {
    spec: RouteSpecV1,
    revision: u64,
}

impl From<StoredRouteV1> for StoredRoute {
    fn from(r: StoredRouteV1) -> Self {
        StoredRoute { spec: r.spec.into(), revision: r.revision }
    }
}

/// [`ClusterState`], version 1.
#[derive(Debug, Deserialize)]
pub struct ClusterStateV1 {
    routes: BTreeMap<String, StoredRouteV1>,
    chaos: BTreeMap<String, StoredPolicy>,
    index: u64,
    recent: RecentRequestsV2,
}

impl From<ClusterStateV1> for ClusterState {
    fn from(s: ClusterStateV1) -> Self {
        ClusterState {
            routes: s.routes.into_iter().map(|(k, v)| (k, v.into())).collect(),
            chaos: s.chaos,
            index: s.index,
            recent: s.recent.into(),
        }
    }
}

/// [`ClusterState`], version 2: today's routes, the memory without digests.
#[derive(Debug, Deserialize)]
pub struct ClusterStateV2 {
    routes: BTreeMap<String, StoredRoute>,
    chaos: BTreeMap<String, StoredPolicy>,
    index: u64,
    recent: RecentRequestsV2,
}

impl From<ClusterStateV2> for ClusterState {
    fn from(s: ClusterStateV2) -> Self {
        ClusterState { routes: s.routes, chaos: s.chaos, index: s.index, recent: s.recent.into() }
    }
}

/// [`SnapshotEnvelope`], version 1.
#[derive(Debug, Deserialize)]
pub struct SnapshotEnvelopeV1 {
    state: ClusterStateV1,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl From<SnapshotEnvelopeV1> for SnapshotEnvelope {
    fn from(s: SnapshotEnvelopeV1) -> Self {
        SnapshotEnvelope { state: s.state.into(), last_applied: s.last_applied, membership: s.membership }
    }
}

/// [`SnapshotEnvelope`], version 2.
#[derive(Debug, Deserialize)]
pub struct SnapshotEnvelopeV2 {
    state: ClusterStateV2,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl From<SnapshotEnvelopeV2> for SnapshotEnvelope {
    fn from(s: SnapshotEnvelopeV2) -> Self {
        SnapshotEnvelope { state: s.state.into(), last_applied: s.last_applied, membership: s.membership }
    }
}

/// [`Command`], version 1: the same variants in the same order.
#[derive(Debug, Deserialize)]
pub enum CommandV1 {
    PutRoute { route: RouteSpecV1, cas: Option<u64> },
    DeleteRoute { name: String, cas: Option<u64> },
    SetBackendWeight { route: String, backend: String, weight: u32, cas: Option<u64> },
    PutChaosPolicy { policy: ChaosPolicy, cas: Option<u64> },
    DeleteChaosPolicy { name: String, cas: Option<u64> },
    SeedRoutes { routes: Vec<RouteSpecV1> },
}

impl From<CommandV1> for Command {
    fn from(c: CommandV1) -> Self {
        match c {
            CommandV1::PutRoute { route, cas } => Command::PutRoute { route: route.into(), cas },
            CommandV1::DeleteRoute { name, cas } => Command::DeleteRoute { name, cas },
            CommandV1::SetBackendWeight { route, backend, weight, cas } => {
                Command::SetBackendWeight { route, backend, weight, cas }
            }
            CommandV1::PutChaosPolicy { policy, cas } => Command::PutChaosPolicy { policy, cas },
            CommandV1::DeleteChaosPolicy { name, cas } => Command::DeleteChaosPolicy { name, cas },
            CommandV1::SeedRoutes { routes } => {
                Command::SeedRoutes { routes: routes.into_iter().map(Into::into).collect() }
            }
        }
    }
}

/// [`Request`], version 1.
#[derive(Debug, Deserialize)]
pub struct RequestV1 {
    id: Option<u128>,
    command: CommandV1,
}

/// openraft's `EntryPayload`, version 1: the same variants in the same order.
#[derive(Debug, Deserialize)]
pub enum EntryPayloadV1 {
    Blank,
    Normal(RequestV1),
    Membership(Membership<NodeId, NodeInfo>),
}

/// A log [`Entry`], version 1: openraft's `Entry` layout (log id, payload).
#[derive(Debug, Deserialize)]
pub struct EntryV1 {
    log_id: LogId,
    payload: EntryPayloadV1,
}

impl From<EntryV1> for Entry {
    fn from(e: EntryV1) -> Self {
        let payload = match e.payload {
            EntryPayloadV1::Blank => EntryPayload::Blank,
            EntryPayloadV1::Normal(r) => {
                EntryPayload::Normal(Request { id: r.id, command: r.command.into() })
            }
            EntryPayloadV1::Membership(m) => EntryPayload::Membership(m),
        };
        Entry { log_id: e.log_id, payload }
    }
}
