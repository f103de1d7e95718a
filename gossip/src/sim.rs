//! An in-memory cluster of foca instances: no sockets, virtual time.
//!
//! For the benchmark's dissemination numbers (rounds until a membership
//! change reaches everyone, packets per member per second) at sizes a single
//! machine cannot run as processes. Each member runs the same foca config,
//! codec and envelope as a real node; packets travel through one event heap
//! with a fixed latency, timers through the same heap, so a run is
//! deterministic for a given seed.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use bytes::Bytes;
use foca::{Foca, Member, NoCustomBroadcast, OwnedNotification, Timer};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::codec::BincodeCodec;
use crate::config::GossipConfig;
use crate::envelope::{ClusterTag, Envelope};
use crate::identity::NodeIdentity;
use crate::reannounce::Reannounce;
use crate::runtime::Outbox;
use crate::timer::TimerQueue;

type SimFoca = Foca<NodeIdentity, BincodeCodec, StdRng, NoCustomBroadcast>;

enum Event {
    Timer {
        node: usize,
        timer: Timer<NodeIdentity>,
    },
    /// Member `node`'s re-announce round may be due ([`Reannounce`]).
    Reannounce {
        node: usize,
    },
    Packet {
        node: usize,
        data: Bytes,
    },
}

struct SimMember {
    foca: SimFoca,
    reannounce: Reannounce<Duration>,
    alive: bool,
    /// Packets to and from an isolated member are lost; its timers still run.
    isolated: bool,
    /// Packets between members of different sides are lost (a partition).
    side: u8,
}

/// What one measured membership change cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimReport {
    /// Members at the start of the measurement.
    pub members: usize,
    /// Members that had to learn the change, and how many did.
    pub expected: usize,
    pub reached: usize,
    /// Virtual time from the change until the last member learned it.
    pub elapsed: Duration,
    /// `elapsed` in probe periods.
    pub rounds: f64,
    /// Datagrams sent by all members during the measurement.
    pub packets: u64,
    /// `packets / members / elapsed`.
    pub packets_per_member_per_sec: f64,
}

/// N foca members on an in-memory network.
pub struct SimCluster {
    members: Vec<SimMember>,
    queue: TimerQueue<Event, Duration>,
    now: Duration,
    latency: Duration,
    foca_config: foca::Config,
    reannounce_every: Duration,
    envelope: Envelope,
    outbox: Outbox,
    send_buf: Vec<u8>,
    packets: u64,
    /// `(observer, subject node id)` of every MemberUp / MemberDown seen.
    ups: HashSet<(usize, u64)>,
    downs: HashSet<(usize, u64)>,
}

impl std::fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCluster").field("members", &self.members.len()).field("now", &self.now).finish()
    }
}

fn sim_identity(index: usize) -> NodeIdentity {
    let ip = Ipv4Addr::from(0x0A00_0000_u32.wrapping_add(u32::try_from(index).unwrap_or(u32::MAX)));
    let addr = SocketAddr::V4(SocketAddrV4::new(ip, crate::DEFAULT_PORT));
    let id = u64::try_from(index).unwrap_or(u64::MAX) + 1;
    NodeIdentity {
        id,
        gossip_addr: addr,
        cluster_addr: addr,
        admin_addr: addr,
        name: format!("sim-{id}"),
        incarnation: 1,
        meta: Default::default(),
    }
}

impl SimCluster {
    /// `n` members that already know each other (as after a finished join),
    /// each seeded from `seed`; one-way latency 1 ms.
    pub fn new(n: usize, config: &GossipConfig, seed: u64) -> Self {
        let foca_config = config.foca_config();
        let mut sim = Self {
            members: Vec::with_capacity(n),
            queue: TimerQueue::new(),
            now: Duration::ZERO,
            latency: Duration::from_millis(1),
            foca_config: foca_config.clone(),
            reannounce_every: config.reannounce_every(),
            envelope: Envelope::new(ClusterTag::of(&config.cluster_id), config.max_packet_size),
            outbox: Outbox::new(),
            send_buf: Vec::new(),
            packets: 0,
            ups: HashSet::new(),
            downs: HashSet::new(),
        };
        for i in 0..n {
            let rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64));
            let foca = Foca::new(sim_identity(i), foca_config.clone(), rng, BincodeCodec);
            sim.members.push(SimMember {
                foca,
                reannounce: Reannounce::new(sim.reannounce_every),
                alive: true,
                isolated: false,
                side: 0,
            });
        }
        for i in 0..n {
            let others: Vec<_> = (0..n).filter(|j| *j != i).map(|j| Member::alive(sim_identity(j))).collect();
            let result = sim.members[i].foca.apply_many(others.into_iter(), false, &mut sim.outbox);
            sim.after_call(i, result);
        }
        sim
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Virtual time since the start.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end, |_| false);
    }

    /// Crashes member `index` (no leave) and runs until every other live
    /// member reports it down, or `limit` passes.
    pub fn measure_crash(&mut self, index: usize, limit: Duration) -> SimReport {
        let subject = sim_identity(index).id;
        if let Some(m) = self.members.get_mut(index) {
            m.alive = false;
        }
        let observers: Vec<usize> = (0..self.len()).filter(|i| self.members[*i].alive).collect();
        self.measure(observers, limit, move |sim, o| sim.downs.contains(&(o, subject)))
    }

    /// Adds a member that announces itself to member 0, and runs until every
    /// live member reports it up, or `limit` passes.
    pub fn measure_join(&mut self, limit: Duration) -> SimReport {
        let index = self.len();
        let identity = sim_identity(index);
        let subject = identity.id;
        let rng = StdRng::seed_from_u64(u64::MAX - index as u64);
        let foca = Foca::new(identity, self.foca_config.clone(), rng, BincodeCodec);
        self.members.push(SimMember {
            foca,
            reannounce: Reannounce::new(self.reannounce_every),
            alive: true,
            isolated: false,
            side: 0,
        });
        let result = self.members[index].foca.announce(sim_identity(0), &mut self.outbox);
        self.after_call(index, result);
        let observers: Vec<usize> = (0..index).filter(|i| self.members[*i].alive).collect();
        self.measure(observers, limit, move |sim, o| sim.ups.contains(&(o, subject)))
    }

    /// Cuts member `index` off the network (`true`) or heals it (`false`).
    pub fn set_isolated(&mut self, index: usize, isolated: bool) {
        if let Some(m) = self.members.get_mut(index) {
            m.isolated = isolated;
        }
    }

    /// Puts member `index` on side `side`: packets between members on
    /// different sides are lost (all start on side 0).
    pub fn set_side(&mut self, index: usize, side: u8) {
        if let Some(m) = self.members.get_mut(index) {
            m.side = side;
        }
    }

    /// How member `observer` sees node `subject_id`: the identity with the
    /// highest incarnation it holds for that node, and its state.
    pub fn seen_by(&self, observer: usize, subject_id: u64) -> Option<(NodeIdentity, foca::State)> {
        self.members
            .get(observer)?
            .foca
            .iter_membership_state()
            .filter(|m| m.id().id == subject_id)
            .max_by_key(|m| m.id().incarnation)
            .map(|m| (m.id().clone(), m.state()))
    }

    /// The identity member `index` currently uses (it changes on a rejoin).
    pub fn identity(&self, index: usize) -> Option<&NodeIdentity> {
        self.members.get(index).map(|m| m.foca.identity())
    }

    fn measure(
        &mut self,
        observers: Vec<usize>,
        limit: Duration,
        learned: impl Fn(&Self, usize) -> bool,
    ) -> SimReport {
        let start = self.now;
        let packets_before = self.packets;
        let done = |sim: &Self| observers.iter().all(|o| learned(sim, *o));
        self.run_until(start + limit, done);
        let elapsed = self.now - start;
        let reached = observers.iter().filter(|o| learned(self, **o)).count();
        let packets = self.packets - packets_before;
        let members = self.members.len();
        let secs = elapsed.as_secs_f64().max(f64::EPSILON);
        SimReport {
            members,
            expected: observers.len(),
            reached,
            elapsed,
            rounds: elapsed.as_secs_f64() / self.foca_config.probe_period.as_secs_f64(),
            packets,
            packets_per_member_per_sec: packets as f64 / members as f64 / secs,
        }
    }

    fn run_until(&mut self, end: Duration, done: impl Fn(&Self) -> bool) {
        while !done(self) {
            let Some(at) = self.queue.next_deadline() else { break };
            if at > end {
                self.now = end;
                break;
            }
            let Some(event) = self.queue.pop_due(at) else { break };
            self.now = at;
            let (node, result) = match event {
                Event::Timer { node, timer } if self.members[node].alive => {
                    (node, self.members[node].foca.handle_timer(timer, &mut self.outbox))
                }
                Event::Reannounce { node } if self.members[node].alive => {
                    let m = &mut self.members[node];
                    // A stale event (the rounds stopped or moved) does nothing.
                    if m.reannounce.deadline().is_none_or(|d| d > at) {
                        continue;
                    }
                    let own = m.foca.identity().gossip_addr;
                    let targets =
                        m.reannounce.take_due(at, own, m.foca.iter_membership_state().map(|m| m.id()));
                    if let Some(next) = m.reannounce.deadline() {
                        self.queue.push(next, Event::Reannounce { node });
                    }
                    let mut result = Ok(());
                    for addr in targets {
                        result = result.and(m.foca.announce(NodeIdentity::seed(addr), &mut self.outbox));
                    }
                    (node, result)
                }
                Event::Packet { node, data } if self.members[node].alive => {
                    let result = match self.envelope.open(&data) {
                        Ok(payload) => self.members[node].foca.handle_data(payload, &mut self.outbox),
                        Err(_) => Err(foca::Error::MalformedPacket),
                    };
                    (node, result)
                }
                _ => continue,
            };
            self.after_call(node, result);
        }
    }

    fn after_call(&mut self, node: usize, _result: Result<(), foca::Error>) {
        while let Some((dst, payload)) = self.outbox.next_send() {
            self.envelope.seal(&payload, &mut self.send_buf);
            self.packets += 1;
            let target = self.index_of(&dst.gossip_addr);
            let lost = self.members[node].isolated
                || target.is_some_and(|t| {
                    self.members[t].isolated || self.members[t].side != self.members[node].side
                });
            if let Some(target) = target.filter(|_| !lost) {
                let data = Bytes::copy_from_slice(&self.send_buf);
                self.queue.push(self.now + self.latency, Event::Packet { node: target, data });
            }
        }
        while let Some((after, timer)) = self.outbox.next_timer() {
            self.queue.push(self.now + after, Event::Timer { node, timer });
        }
        while let Some(n) = self.outbox.next_notification() {
            let before = self.members[node].reannounce.deadline();
            self.members[node].reannounce.on_notification(&n, self.now);
            if let Some(at) = self.members[node].reannounce.deadline().filter(|_| before.is_none()) {
                self.queue.push(at, Event::Reannounce { node });
            }
            match n {
                OwnedNotification::MemberUp(id) => {
                    self.ups.insert((node, id.id));
                }
                OwnedNotification::MemberDown(id) => {
                    self.downs.insert((node, id.id));
                }
                _ => {}
            }
        }
    }

    fn index_of(&self, addr: &SocketAddr) -> Option<usize> {
        match addr {
            SocketAddr::V4(v4) => usize::try_from(u32::from(*v4.ip()).checked_sub(0x0A00_0000)?).ok(),
            SocketAddr::V6(_) => None,
        }
        .filter(|i| *i < self.members.len())
    }
}
