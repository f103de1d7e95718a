//! `explain` and `dry-run` (admin API): the data plane's choice, shown.
//!
//! Neither re-implements the choice. `explain` asks the route's table entry
//! for its candidates with [`RouteEntry::candidates_at`], the function a
//! connection calls (through [`RouteEntry::candidates`]), at the turn the
//! next connection would take ([`Balancer::peek_turn`]), which it reads
//! without taking: no counter moves. `dry_run` builds the balancer the
//! table builder would build for the new spec, with the same
//! [`table::eligibility`] and [`Balancer::build`], and measures both
//! balancers exactly: the key space by arc length on the ring
//! ([`super::balance::HashRing::arcs`], the rule of the ring walk), new connections by the
//! balancer's own precomputed state ([`Balancer::pick_shares`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ferry_client::api::GossipState;
use ferry_client::explain::{
    DryRun, DryRunBackend, DryRunSide, Explain, ExplainBackend, ExplainChaos, ExplainHash, ExplainOwner,
    ShareOf,
};
use ferry_client::route::{Balance, HashKey};
use ferry_client::{BackendAddr, RouteSpec};

use super::balance::Balancer;
use super::chaos;
use super::peers::{Owner, PeerDirectory, PeerState};
use super::table::{self, BackendKey, Resolved, RouteEntry, RoutingTable, Target};

/// The size of the hash space, 2^64.
const SPACE: f64 = 18_446_744_073_709_551_616.0;

/// Why `entry` of `table` would send a new connection from `client` where
/// it would, on node `node` at `now_ms` (the data plane's clock); `index`
/// is the config index to report.
pub fn explain(
    table: &RoutingTable,
    entry: &RouteEntry,
    client: SocketAddr,
    now_ms: u64,
    node: &str,
    index: u64,
) -> Explain {
    let spec = &entry.spec;
    let turn = entry.balancer.peek_turn();
    let candidates = entry.candidates_at(client, turn.unwrap_or(0));
    let candidates = candidates.as_slice();
    let shares: HashMap<u32, f64> = entry.balancer.pick_shares().into_iter().collect();
    let mask = entry.balancer.mask();
    let next_connection = entry.state.peek_ordinal();
    let first = candidates.first().map(|&i| i as usize);
    let hits: Vec<String> = first
        .map(|f| chaos::decide(&entry.chaos, entry.chaos.conn(next_connection), f))
        .unwrap_or_default()
        .iter()
        .map(|h| h.policy.name.clone())
        .collect();
    let max = spec.max_connect_attempts;
    let describe = |i: usize, attempt: Option<u32>| {
        let b = &spec.backends[i];
        let state = &entry.backends[i];
        let owner = owner_of(b.node.as_deref(), table.peers(), node);
        let reason = match attempt {
            Some(_) => candidate_reason(entry, i, &owner),
            None => Some(skip_reason(entry, i, mask, &owner, now_ms, table.generation, max)),
        };
        ExplainBackend {
            id: b.id.clone(),
            addr: b.addr.clone(),
            weight: b.weight,
            attempt,
            reason,
            check: match (spec.health_check.is_some(), owner.local, state.check_up()) {
                (false, _, _) => "disabled",
                (true, false, _) => "remote",
                (true, true, true) => "up",
                (true, true, false) => "down",
            }
            .to_string(),
            owner,
            ejected_for_ms: state.ejected_for(now_ms),
            healthy: entry.healthy.get(i).copied().unwrap_or(false),
            active_connections: state.active(),
            share: shares.get(&(i as u32)).copied(),
            chaos: entry.chaos.policies.iter().filter(|p| p.covers(i)).map(|p| p.name.clone()).collect(),
        }
    };
    let mut backends: Vec<ExplainBackend> =
        candidates.iter().enumerate().map(|(k, &i)| describe(i as usize, Some(k as u32 + 1))).collect();
    for i in 0..spec.backends.len() {
        if !candidates.contains(&(i as u32)) {
            backends.push(describe(i, None));
        }
    }
    let hash = entry.balancer.ring_point(client).map(|(point, key)| ExplainHash {
        key,
        input: hash_input(client, key),
        point,
        ring_owner: entry
            .balancer
            .ring()
            .and_then(|r| r.walk(point).next())
            .and_then(|i| spec.backends.get(i as usize))
            .map(|b| b.id.clone()),
    });
    let chaos = entry
        .chaos
        .policies
        .iter()
        .map(|p| ExplainChaos {
            policy: p.name.clone(),
            revision: p.revision,
            toxicity: p.toxicity,
            seed: p.seed,
            backends: p.backends.as_ref().map(|m| {
                spec.backends.iter().zip(m).filter(|(_, on)| **on).map(|(b, _)| b.id.clone()).collect()
            }),
            toxics: p.toxics.clone(),
            hits_next: first.filter(|&f| p.covers(f)).map(|_| hits.contains(&p.name)),
        })
        .collect();
    Explain {
        route: spec.name.clone(),
        node: node.to_string(),
        client: client.to_string(),
        balance: spec.balance,
        deterministic: spec.balance == Balance::ConsistentHash,
        order: order_text(spec.balance, turn),
        hash,
        max_connect_attempts: max,
        panic_mode: entry.panic_mode,
        backends,
        chaos,
        next_connection,
        index,
        table_generation: table.generation,
    }
}

/// How the order was chosen, for [`Explain::order`].
fn order_text(balance: Balance, turn: Option<u64>) -> String {
    let turn = turn.unwrap_or(0);
    match balance {
        Balance::ConsistentHash => "consistent_hash: the ring walked clockwise from the key's point, \
            skipping backends that are not eligible; the same for every connection of this key until the \
            table changes"
            .to_string(),
        Balance::Weighted => format!(
            "weighted: turn {turn} of the route's smooth weighted rotation, the next one on this node; \
             any client's connection takes it, so this is the order of the next connection only"
        ),
        Balance::RoundRobin => format!(
            "round_robin: turn {turn} of the route's rotation, the next one on this node; any client's \
             connection takes it, so this is the order of the next connection only"
        ),
        Balance::LeastConnections => format!(
            "least_connections: the fewest open connections per unit of weight now, ties broken by turn \
             {turn} of the route's rotation; changes as connections open and close"
        ),
        Balance::Random => "random: each connection draws its first backend by weight (see each backend's \
            share), the others follow in route order; shown: the order when the first eligible backend is \
            drawn"
            .to_string(),
    }
}

/// Who connects to a backend pinned to `node` (or not pinned).
fn owner_of(node: Option<&str>, peers: &PeerDirectory, me_name: &str) -> ExplainOwner {
    let me = || ExplainOwner {
        local: true,
        node: node.map(str::to_string),
        node_id: peers.me().map(|m| m.id),
        node_name: Some(peers.me().map_or_else(|| me_name.to_string(), |m| m.name.clone())),
        state: None,
    };
    let Some(pinned) = node else { return me() };
    match peers.owner(pinned) {
        Owner::Me => me(),
        Owner::Peer(p) => ExplainOwner {
            local: false,
            node: Some(pinned.to_string()),
            node_id: Some(p.id),
            node_name: Some(p.name.clone()),
            state: Some(gossip_state(p.state)),
        },
        Owner::Unknown => ExplainOwner {
            local: false,
            node: Some(pinned.to_string()),
            node_id: None,
            node_name: None,
            state: None,
        },
    }
}

fn gossip_state(s: PeerState) -> GossipState {
    match s {
        PeerState::Alive => GossipState::Alive,
        PeerState::Suspect => GossipState::Suspect,
        PeerState::Down => GossipState::Down,
        PeerState::Left => GossipState::Left,
    }
}

/// Why candidate `i` is where it is, when that needs saying.
fn candidate_reason(entry: &RouteEntry, i: usize, owner: &ExplainOwner) -> Option<String> {
    if entry.deferred(i) {
        let name = owner.node_name.as_deref().unwrap_or("?");
        return Some(format!("its node {name} is suspect: tried after every other candidate"));
    }
    if entry.panic_mode && !entry.healthy.get(i).copied().unwrap_or(false) {
        return Some("panic mode: no backend is healthy, so this unhealthy one is tried".to_string());
    }
    None
}

/// Why backend `i` is not a candidate.
fn skip_reason(
    entry: &RouteEntry,
    i: usize,
    mask: &[bool],
    owner: &ExplainOwner,
    now_ms: u64,
    generation: u64,
    max: u32,
) -> String {
    let b = &entry.spec.backends[i];
    if b.weight == 0 {
        return "weight 0: takes no new connections".to_string();
    }
    let pinned = b.node.as_deref().unwrap_or("?");
    match entry.targets.get(i) {
        Some(Target::Unreachable) => {
            return match (&owner.node_name, &owner.state) {
                (Some(name), Some(state)) => format!("its node {name} is {state}: never tried"),
                _ => format!("pinned to node {pinned:?}, which this node does not know: never tried"),
            };
        }
        Some(Target::Local) if entry.resolved.get(i).is_none_or(|r| r.addrs.is_empty()) => {
            let why = entry.resolved.get(i).and_then(|r| r.error.as_deref()).unwrap_or("no answer yet");
            return format!("its address does not resolve ({why}): never tried");
        }
        _ => {}
    }
    if !mask.get(i).copied().unwrap_or(false) {
        let state = &entry.backends[i];
        if let Some(ms) = state.ejected_for(now_ms) {
            return format!("ejected after connect failures, for {ms} ms more");
        }
        if owner.local && !state.check_up() {
            return "its active check is down".to_string();
        }
        return format!("unhealthy when table generation {generation} was built");
    }
    if entry.deferred(i) {
        let name = owner.node_name.as_deref().unwrap_or("?");
        return format!(
            "its node {name} is suspect, so it comes last, after max_connect_attempts ({max}) is reached"
        );
    }
    format!("beyond max_connect_attempts ({max})")
}

/// What consistent hashing hashes for `client`, as text: its IP (an
/// IPv4-mapped IPv6 address as IPv4, as the data plane hashes it), with
/// the port for `client_addr`.
fn hash_input(client: SocketAddr, key: HashKey) -> String {
    let ip = match client.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match key {
        HashKey::ClientIp => ip.to_string(),
        HashKey::ClientAddr => SocketAddr::new(ip, client.port()).to_string(),
    }
}

/// The balancer the table builder would build for `spec` if it were
/// published now, with this table's peers and each backend's health as it
/// stands (a backend the node would start afresh is healthy, as it
/// starts it; a new host name is taken to resolve). Also which backends are healthy,
/// and whether that is panic mode.
fn planned(
    table: &RoutingTable,
    before: Option<&RouteEntry>,
    spec: &RouteSpec,
    now_ms: u64,
) -> (Balancer, Vec<bool>, bool) {
    let weights: Vec<(String, u32)> = spec.backends.iter().map(|b| (b.id.clone(), b.weight)).collect();
    let mut reachable = Vec::with_capacity(spec.backends.len());
    let mut healthy = Vec::with_capacity(spec.backends.len());
    for b in &spec.backends {
        let t = table::target(b.node.as_deref(), table.peers());
        // The node keeps a backend's state (health, ejection) while its
        // registry key stays.
        let key = BackendKey::of(spec, b, t == Target::Local);
        let same = before.and_then(|e| {
            let was_local = |j: usize| e.targets.get(j) == Some(&Target::Local);
            e.spec
                .backends
                .iter()
                .enumerate()
                .position(|(j, o)| BackendKey::of(&e.spec, o, was_local(j)) == key)
                .map(|j| (e, j))
        });
        let r = match (t, same) {
            (Target::Local, Some((e, j))) => {
                table::reachable(t, e.resolved.get(j).unwrap_or(&Resolved::default()))
            }
            // A new address: an IP literal is its own answer; a name is
            // looked up before the table is published, and taken to answer.
            (Target::Local, None) => BackendAddr::parse(&b.addr).is_ok(),
            (t, _) => table::reachable(t, &Resolved::default()),
        };
        let up = same.is_none_or(|(e, j)| e.backends.get(j).is_some_and(|s| s.healthy(now_ms)));
        reachable.push(r);
        healthy.push(r && up);
    }
    let (mask, panic) = table::eligibility(&weights, &healthy, &reachable);
    let prev_ring = before.and_then(|e| e.balancer.ring());
    let balancer =
        Balancer::build(spec.balance, spec.hash_key, spec.vnodes, &weights, mask, prev_ring, Arc::default());
    (balancer, healthy, panic)
}

/// One side of a dry run: each backend's share (by id), what is
/// unassigned, and for consistent hashing the arcs with their backends' ids.
struct Side<'a> {
    shares: HashMap<&'a str, f64>,
    unassigned: f64,
    arcs: Option<Vec<(u64, Option<&'a str>)>>,
}

/// Measures `balancer` over `spec`'s backends.
fn measure<'a>(balancer: &Balancer, spec: &'a RouteSpec) -> Side<'a> {
    let id = |i: u32| spec.backends.get(i as usize).map(|b| b.id.as_str());
    let mut shares: HashMap<&str, f64> = spec.backends.iter().map(|b| (b.id.as_str(), 0.0)).collect();
    if let Some(ring) = balancer.ring() {
        let arcs: Vec<(u64, Option<&str>)> =
            ring.arcs(balancer.mask()).into_iter().map(|(end, b)| (end, b.and_then(id))).collect();
        let mut unassigned = 0u128;
        let mut held: HashMap<&str, u128> = HashMap::new();
        let mut start = 0u128;
        for &(end, owner) in &arcs {
            let len = u128::from(end) + 1 - start;
            match owner {
                Some(o) => *held.entry(o).or_default() += len,
                None => unassigned += len,
            }
            start = u128::from(end) + 1;
        }
        for (o, len) in held {
            shares.insert(o, len as f64 / SPACE);
        }
        return Side { shares, unassigned: unassigned as f64 / SPACE, arcs: Some(arcs) };
    }
    let picks = balancer.pick_shares();
    let unassigned = if picks.is_empty() { 1.0 } else { 0.0 };
    for (i, share) in picks {
        if let Some(o) = id(i) {
            shares.insert(o, share);
        }
    }
    Side { shares, unassigned, arcs: None }
}

/// Keys that change backend between arcs `a` and `b` (both covering the
/// whole hash space): the total and, by backend, how much each loses and
/// gains, as fractions of the space.
type Moves<'a> = (f64, HashMap<&'a str, f64>, HashMap<&'a str, f64>);

fn moves<'a>(a: &[(u64, Option<&'a str>)], b: &[(u64, Option<&'a str>)]) -> Moves<'a> {
    let (mut moved, mut away, mut gained) =
        (0u128, HashMap::<&str, u128>::new(), HashMap::<&str, u128>::new());
    let (mut i, mut j, mut start) = (0, 0, 0u128);
    while i < a.len() && j < b.len() {
        let end = a[i].0.min(b[j].0);
        let len = u128::from(end) + 1 - start;
        if a[i].1 != b[j].1 {
            moved += len;
            if let Some(o) = a[i].1 {
                *away.entry(o).or_default() += len;
            }
            if let Some(o) = b[j].1 {
                *gained.entry(o).or_default() += len;
            }
        }
        if a[i].0 == end {
            i += 1;
        }
        if b[j].0 == end {
            j += 1;
        }
        start = u128::from(end) + 1;
    }
    let frac = |m: HashMap<&'a str, u128>| m.into_iter().map(|(k, v)| (k, v as f64 / SPACE)).collect();
    (moved as f64 / SPACE, frac(away), frac(gained))
}

/// Where new connections would go if `spec` were written, against `table`
/// and the backends' health at `now_ms`; see [`DryRun`].
pub fn dry_run(table: &RoutingTable, spec: &RouteSpec, now_ms: u64, node: &str, index: u64) -> DryRun {
    let before = table.get(&spec.name).map(Arc::as_ref);
    let (after_balancer, healthy_after, panic_after) = planned(table, before, spec, now_ms);
    let after = measure(&after_balancer, spec);
    let side = |balance: Balance, panic_mode: bool, unassigned: f64| DryRunSide {
        balance,
        share_of: if balance == Balance::ConsistentHash {
            ShareOf::KeySpace
        } else {
            ShareOf::NewConnections
        },
        panic_mode,
        unassigned,
    };
    let before_side = before.map(|e| (e, measure(&e.balancer, &e.spec)));
    // Keys move only between two hashing sides, or onto a new route.
    let everywhere_none = [(u64::MAX, None)];
    let moves = match (&before_side, &after.arcs) {
        (Some((_, Side { arcs: Some(a), .. })), Some(b)) => Some(moves(a, b)),
        (None, Some(b)) => Some(moves(&everywhere_none, b)),
        _ => None,
    };
    let mut backends: Vec<DryRunBackend> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let before_ids =
        before.iter().flat_map(|e| e.spec.backends.iter().enumerate().map(move |(i, b)| (b, Some((e, i)))));
    let after_ids = spec.backends.iter().map(|b| (b, None));
    for (b, in_before) in before_ids.chain(after_ids) {
        if seen.contains(&b.id.as_str()) {
            continue;
        }
        seen.push(b.id.as_str());
        let id = b.id.as_str();
        let after_pos = spec.backends.iter().position(|o| o.id == id);
        let healthy = match (after_pos, in_before) {
            (Some(k), _) => healthy_after[k],
            (None, Some((e, i))) => e.healthy.get(i).copied().unwrap_or(false),
            (None, None) => false,
        };
        backends.push(DryRunBackend {
            id: id.to_string(),
            before: before_side.as_ref().and_then(|(_, s)| s.shares.get(id).copied()),
            after: after_pos.map(|_| after.shares.get(id).copied().unwrap_or(0.0)),
            moved_away: moves.as_ref().map(|(_, away, _)| away.get(id).copied().unwrap_or(0.0)),
            moved_in: moves.as_ref().map(|(_, _, gained)| gained.get(id).copied().unwrap_or(0.0)),
            healthy,
        });
    }
    DryRun {
        route: spec.name.clone(),
        node: node.to_string(),
        before: before_side.as_ref().map(|(e, s)| side(e.spec.balance, e.panic_mode, s.unassigned)),
        after: side(spec.balance, panic_after, after.unassigned),
        moved: moves.as_ref().map(|(m, _, _)| *m),
        backends,
        index,
        table_generation: table.generation,
    }
}

#[cfg(test)]
mod tests;
