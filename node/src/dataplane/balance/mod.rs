//! Backend selection: for each new client connection, an ordered list of
//! distinct candidate backends. The proxy connects to the first and fails
//! over to the next ones.
//!
//! A `Balancer` is built with the routing table over the route's *eligible*
//! backends (healthy and weight > 0; all backends of weight > 0 in panic
//! mode) and is immutable afterwards but for one atomic cursor, so picks take
//! no lock. The cursor belongs to the route, not the balancer: the rotation
//! of round robin and weighted carries on across the rebuilds every health
//! change causes, rather than starting again at the first backend (which,
//! on a route with little traffic and frequent rebuilds, would send most
//! connections there).
//!
//! - [`ring`]: consistent hashing; failover walks the ring.
//! - [`swrr`]: smooth weighted round robin; failover rotates through the rest.
//! - least connections, round robin and weighted random live here.

pub mod ring;
pub mod swrr;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use ferry_client::route::{Balance, HashKey, MAX_CONNECT_ATTEMPTS};

pub use ring::HashRing;

/// Up to `MAX_CONNECT_ATTEMPTS` distinct backend indices, best first. Lives on
/// the stack: picking allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidates {
    ids: [u32; MAX_CONNECT_ATTEMPTS as usize],
    len: usize,
    max: usize,
}

impl Candidates {
    fn new(max: usize) -> Self {
        Self { ids: [0; MAX_CONNECT_ATTEMPTS as usize], len: 0, max: max.min(MAX_CONNECT_ATTEMPTS as usize) }
    }

    fn is_full(&self) -> bool {
        self.len >= self.max
    }

    /// Adds `id` unless present or full; true when added.
    fn push(&mut self, id: u32) -> bool {
        if self.is_full() || self.as_slice().contains(&id) {
            return false;
        }
        self.ids[self.len] = id;
        self.len += 1;
        true
    }

    /// The candidates, best first.
    pub fn as_slice(&self) -> &[u32] {
        &self.ids[..self.len]
    }

    /// The same candidates with those for which `last` holds moved behind
    /// the others (each group keeps its order), cut to `max`.
    pub fn deferring(&self, last: impl Fn(u32) -> bool, max: usize) -> Candidates {
        let mut out = Candidates::new(max);
        let first = self.as_slice().iter().filter(|&&i| !last(i));
        for &i in first.chain(self.as_slice().iter().filter(|&&i| last(i))) {
            out.push(i);
        }
        out
    }
}

/// Per-algorithm precomputed state.
#[derive(Debug)]
enum Kind {
    /// One period of the smooth sequence: positions into `eligible`.
    Weighted {
        seq: Vec<u32>,
    },
    ConsistentHash {
        ring: Arc<HashRing>,
        key: HashKey,
    },
    /// Weights of the eligible backends, by position.
    LeastConnections {
        weights: Vec<u32>,
    },
    RoundRobin,
    /// Running sums of the eligible backends' weights.
    Random {
        cumulative: Vec<u64>,
    },
}

/// Picks candidates for one route.
#[derive(Debug)]
pub struct Balancer {
    kind: Kind,
    /// Backend indices that may take new connections, in route order.
    eligible: Vec<u32>,
    /// `mask[i]`: backend `i` is eligible.
    mask: Vec<bool>,
    /// The route's rotation, shared with the balancers built before and after.
    cursor: Arc<AtomicUsize>,
}

impl Balancer {
    /// Builds the balancer for backends `(id, weight)` of which `mask` marks
    /// the eligible ones. `prev_ring` is reused when its inputs are unchanged;
    /// `cursor` is the route's rotation (see the module doc).
    pub fn build(
        balance: Balance,
        hash_key: HashKey,
        vnodes: u32,
        backends: &[(String, u32)],
        mask: Vec<bool>,
        prev_ring: Option<&Arc<HashRing>>,
        cursor: Arc<AtomicUsize>,
    ) -> Self {
        let eligible: Vec<u32> = (0..backends.len() as u32).filter(|&i| mask[i as usize]).collect();
        let weights = || eligible.iter().map(|&i| backends[i as usize].1).collect::<Vec<u32>>();
        let kind = match balance {
            Balance::Weighted => Kind::Weighted { seq: swrr::sequence(&weights()) },
            Balance::ConsistentHash => {
                let ring = match prev_ring {
                    Some(r) if r.built_from(backends, vnodes) => Arc::clone(r),
                    _ => Arc::new(HashRing::build(backends, vnodes)),
                };
                Kind::ConsistentHash { ring, key: hash_key }
            }
            Balance::LeastConnections => Kind::LeastConnections { weights: weights() },
            Balance::RoundRobin => Kind::RoundRobin,
            Balance::Random => Kind::Random {
                cumulative: weights()
                    .iter()
                    .scan(0u64, |sum, &w| {
                        *sum += u64::from(w);
                        Some(*sum)
                    })
                    .collect(),
            },
        };
        Self { kind, eligible, mask, cursor }
    }

    /// The ring, for reuse by the next table.
    pub fn ring(&self) -> Option<&Arc<HashRing>> {
        match &self.kind {
            Kind::ConsistentHash { ring, .. } => Some(ring),
            _ => None,
        }
    }

    /// True when no backend is eligible.
    pub fn is_empty(&self) -> bool {
        self.eligible.is_empty()
    }

    /// Up to `max` distinct candidates for a connection from `client`;
    /// `active(i)` is backend `i`'s open connections (least_connections).
    /// Takes the next turn ([`Balancer::next_turn`]): the data plane's pick.
    pub fn candidates(&self, client: SocketAddr, max: usize, active: impl Fn(u32) -> u64) -> Candidates {
        self.candidates_at(client, max, active, self.next_turn())
    }

    /// The turn of a new connection, advancing the rotation: the route's
    /// cursor (weighted, round robin, least connections) or a random draw
    /// below the total weight (random); 0 for consistent hash, whose order
    /// depends on the client only. Touches nothing when no backend is
    /// eligible.
    pub fn next_turn(&self) -> u64 {
        let n = self.eligible.len();
        match &self.kind {
            _ if n == 0 => 0,
            Kind::ConsistentHash { .. } => 0,
            Kind::Random { cumulative } => fastrand::u64(0..cumulative[n - 1].max(1)),
            Kind::Weighted { .. } | Kind::RoundRobin | Kind::LeastConnections { .. } => {
                self.cursor.fetch_add(1, Relaxed) as u64
            }
        }
    }

    /// The turn the next connection will take, without taking it: the
    /// cursor as it stands; `None` for random (a fresh draw) and
    /// consistent hash (no turn).
    pub fn peek_turn(&self) -> Option<u64> {
        match &self.kind {
            Kind::Weighted { .. } | Kind::RoundRobin | Kind::LeastConnections { .. } => {
                Some(self.cursor.load(Relaxed) as u64)
            }
            Kind::ConsistentHash { .. } | Kind::Random { .. } => None,
        }
    }

    /// The choice itself, a pure function of the client, the turn (see
    /// [`Balancer::next_turn`]) and the load `active`: the data plane and
    /// `explain` both call it, so they cannot disagree.
    pub fn candidates_at(
        &self,
        client: SocketAddr,
        max: usize,
        active: impl Fn(u32) -> u64,
        turn: u64,
    ) -> Candidates {
        let mut out = Candidates::new(max);
        let n = self.eligible.len();
        if n == 0 {
            return out;
        }
        let start = match &self.kind {
            Kind::ConsistentHash { ring, key } => {
                let hash = HashRing::hash_key(hash_key_bytes(client, *key).as_slice());
                for b in ring.walk(hash) {
                    if self.mask[b as usize] {
                        out.push(b);
                        if out.is_full() {
                            break;
                        }
                    }
                }
                return out;
            }
            Kind::Weighted { seq } => seq[(turn % seq.len() as u64) as usize] as usize,
            Kind::RoundRobin => (turn % n as u64) as usize,
            Kind::Random { cumulative } => cumulative.partition_point(|&c| c <= turn).min(n - 1),
            Kind::LeastConnections { weights } => {
                // Lowest (active + 1) / weight; ties go round robin.
                let offset = turn as usize;
                let mut best = offset % n;
                let mut best_load = (active(self.eligible[best]) + 1, u64::from(weights[best]));
                for k in 1..n {
                    let p = (offset.wrapping_add(k)) % n;
                    let load = (active(self.eligible[p]) + 1, u64::from(weights[p]));
                    if load.0 * best_load.1 < best_load.0 * load.1 {
                        best = p;
                        best_load = load;
                    }
                }
                best
            }
        };
        for k in 0..n {
            if !out.push(self.eligible[(start + k) % n]) || out.is_full() {
                break;
            }
        }
        out
    }

    /// `client`'s point on the ring and the bytes hashed for it
    /// (consistent hash only).
    pub fn ring_point(&self, client: SocketAddr) -> Option<(u64, HashKey)> {
        match &self.kind {
            Kind::ConsistentHash { key, .. } => {
                Some((HashRing::hash_key(hash_key_bytes(client, *key).as_slice()), *key))
            }
            _ => None,
        }
    }

    /// `mask[i]`: backend `i` may be picked.
    pub fn mask(&self) -> &[bool] {
        &self.mask
    }

    /// Each eligible backend's exact share of new connections' first pick
    /// (not consistent hash, whose share is of the key space: see
    /// [`HashRing::arcs`]), from the state the picks read: weighted, its
    /// count in one period of the smooth sequence; round robin, 1/n;
    /// random, weight / total; least connections, weight / total (where
    /// it settles when connections last alike). Backend index and share.
    pub fn pick_shares(&self) -> Vec<(u32, f64)> {
        let n = self.eligible.len();
        if n == 0 {
            return Vec::new();
        }
        let by_weight = |weights: &[u32]| -> Vec<f64> {
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            weights.iter().map(|&w| if total == 0 { 0.0 } else { w as f64 / total as f64 }).collect()
        };
        let shares: Vec<f64> = match &self.kind {
            Kind::Weighted { seq } => {
                let mut count = vec![0u64; n];
                for &p in seq {
                    count[p as usize] += 1;
                }
                count.iter().map(|&c| c as f64 / seq.len().max(1) as f64).collect()
            }
            Kind::RoundRobin => vec![1.0 / n as f64; n],
            Kind::Random { cumulative } => {
                let weights: Vec<u32> = (0..n)
                    .map(|i| (cumulative[i] - if i == 0 { 0 } else { cumulative[i - 1] }) as u32)
                    .collect();
                by_weight(&weights)
            }
            Kind::LeastConnections { weights } => by_weight(weights),
            Kind::ConsistentHash { .. } => return Vec::new(),
        };
        self.eligible.iter().copied().zip(shares).collect()
    }
}

/// The bytes `consistent_hash` hashes for a client: its IP, or IP and port.
/// IPv4-mapped IPv6 clients hash as their IPv4 address, so a dual-stack
/// listener and an IPv4 one agree.
fn hash_key_bytes(client: SocketAddr, key: HashKey) -> KeyBytes {
    let mut k = KeyBytes { buf: [0; 18], len: 0 };
    let ip = match client.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(a) => k.extend(&a.octets()),
        IpAddr::V6(a) => k.extend(&a.octets()),
    }
    if key == HashKey::ClientAddr {
        k.extend(&client.port().to_be_bytes());
    }
    k
}

struct KeyBytes {
    buf: [u8; 18],
    len: usize,
}

impl KeyBytes {
    fn extend(&mut self, b: &[u8]) {
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }
    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(ws: &[u32]) -> Vec<(String, u32)> {
        ws.iter().enumerate().map(|(i, w)| (format!("b{i}"), *w)).collect()
    }

    fn build(balance: Balance, ws: &[u32], mask: Vec<bool>) -> Balancer {
        Balancer::build(balance, HashKey::ClientIp, 100, &backends(ws), mask, None, Arc::default())
    }

    fn client(i: u32) -> SocketAddr {
        SocketAddr::from((i.to_be_bytes(), 40_000))
    }

    fn shares(b: &Balancer, n: usize, picks: u32) -> Vec<f64> {
        let mut count = vec![0u32; n];
        for i in 0..picks {
            count[b.candidates(client(i), 3, |_| 0).as_slice()[0] as usize] += 1;
        }
        count.iter().map(|&c| f64::from(c) / f64::from(picks)).collect()
    }

    #[test]
    fn weighted_picks_within_five_percent_of_weights() {
        for balance in [Balance::Weighted, Balance::Random] {
            let b = build(balance, &[5, 3, 2], vec![true; 3]);
            let s = shares(&b, 3, 10_000);
            for (got, want) in s.iter().zip([0.5, 0.3, 0.2]) {
                assert!((got - want).abs() <= 0.05 * want, "{balance:?}: {s:?}");
            }
        }
    }

    #[test]
    fn weighted_candidates_are_distinct_and_skip_ineligible() {
        let b = build(Balance::Weighted, &[1, 1, 1, 1], vec![true, false, true, true]);
        for i in 0..20 {
            let c = b.candidates(client(i), 16, |_| 0);
            let mut ids = c.as_slice().to_vec();
            assert_eq!(ids.len(), 3);
            ids.sort_unstable();
            assert_eq!(ids, vec![0, 2, 3]);
        }
    }

    #[test]
    fn round_robin_cycles() {
        let b = build(Balance::RoundRobin, &[9, 1, 1], vec![true; 3]);
        let firsts: Vec<u32> = (0..6).map(|i| b.candidates(client(i), 2, |_| 0).as_slice()[0]).collect();
        assert_eq!(firsts, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_connections_weighs_active_counts() {
        let b = build(Balance::LeastConnections, &[1, 1, 2], vec![true; 3]);
        let active = [3u64, 1, 3];
        // loads (a+1)/w: 4, 2, 2 -> ties between 1 and 2 alternate.
        let firsts: Vec<u32> =
            (0..4).map(|i| b.candidates(client(i), 3, |x| active[x as usize]).as_slice()[0]).collect();
        assert!(firsts.iter().all(|&f| f == 1 || f == 2), "{firsts:?}");
        assert!(firsts.contains(&1) && firsts.contains(&2), "{firsts:?}");
        let c = b.candidates(client(0), 3, |x| active[x as usize]);
        assert_eq!(c.as_slice().len(), 3);
    }

    #[test]
    fn consistent_hash_is_stable_and_fails_over_along_the_ring() {
        let all = build(Balance::ConsistentHash, &[1, 1, 1, 1], vec![true; 4]);
        let down = build(Balance::ConsistentHash, &[1, 1, 1, 1], vec![true, true, false, true]);
        for i in 0..2_000 {
            let a = all.candidates(client(i), 4, |_| 0);
            let d = down.candidates(client(i), 4, |_| 0);
            // The same key always gets the same list.
            assert_eq!(a, all.candidates(client(i), 4, |_| 0));
            // Marking backend 2 down removes it from the list and keeps the order.
            let expect: Vec<u32> = a.as_slice().iter().copied().filter(|&x| x != 2).collect();
            assert_eq!(d.as_slice(), expect.as_slice());
        }
    }

    #[test]
    fn client_addr_key_spreads_one_ip() {
        let b = Balancer::build(
            Balance::ConsistentHash,
            HashKey::ClientAddr,
            100,
            &backends(&[1, 1]),
            vec![true; 2],
            None,
            Arc::default(),
        );
        let ip = [10, 0, 0, 1];
        let firsts: std::collections::HashSet<u32> =
            (1000..1100).map(|p| b.candidates(SocketAddr::from((ip, p)), 1, |_| 0).as_slice()[0]).collect();
        assert_eq!(firsts.len(), 2);
        let by_ip = build(Balance::ConsistentHash, &[1, 1], vec![true; 2]);
        let firsts: std::collections::HashSet<u32> = (1000..1100)
            .map(|p| by_ip.candidates(SocketAddr::from((ip, p)), 1, |_| 0).as_slice()[0])
            .collect();
        assert_eq!(firsts.len(), 1);
    }

    #[test]
    fn mapped_ipv6_hashes_like_ipv4() {
        let v4: SocketAddr = "10.1.2.3:5".parse().expect("addr");
        let v6: SocketAddr = "[::ffff:10.1.2.3]:5".parse().expect("addr");
        assert_eq!(
            hash_key_bytes(v4, HashKey::ClientIp).as_slice(),
            hash_key_bytes(v6, HashKey::ClientIp).as_slice()
        );
    }

    #[test]
    fn ring_is_reused_when_inputs_match() {
        let a = build(Balance::ConsistentHash, &[1, 2], vec![true; 2]);
        let ring = a.ring().expect("ring");
        let b = Balancer::build(
            Balance::ConsistentHash,
            HashKey::ClientIp,
            100,
            &backends(&[1, 2]),
            vec![true, false],
            Some(ring),
            Arc::default(),
        );
        assert!(Arc::ptr_eq(ring, b.ring().expect("ring")));
    }

    #[test]
    fn deferring_moves_some_candidates_last_and_cuts() {
        let b = build(Balance::RoundRobin, &[1; 5], vec![true; 5]);
        let c = b.candidates(client(0), 16, |_| 0);
        assert_eq!(c.as_slice(), &[0, 1, 2, 3, 4]);
        assert_eq!(c.deferring(|i| i == 0 || i == 3, 16).as_slice(), &[1, 2, 4, 0, 3]);
        assert_eq!(c.deferring(|i| i == 1, 2).as_slice(), &[0, 2]);
    }

    #[test]
    fn empty_balancer_yields_nothing() {
        let b = build(Balance::Weighted, &[1, 1], vec![false, false]);
        assert!(b.is_empty());
        assert!(b.candidates(client(0), 3, |_| 0).as_slice().is_empty());
    }
}
