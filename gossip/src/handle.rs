//! `Gossip::start` and `GossipHandle`: starting the driver and talking to it.
//!
//! The handle is cheap to clone. Reads (`view`, `subscribe`, `events`,
//! `stats`) never wait on the driver; `join`, `leave` and `broadcast` go
//! through a bounded command queue and return once foca has acted on them.

use std::net::SocketAddr;
use std::sync::Arc;

use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::broadcast::{Handler, Received};
use crate::codec::BincodeCodec;
use crate::config::GossipConfig;
use crate::driver::{Command, Driver, Outlets};
use crate::envelope::{ClusterTag, Envelope};
use crate::error::GossipError;
use crate::identity::NodeIdentity;
use crate::reannounce::Reannounce;
use crate::runtime::Outbox;
use crate::stats::GossipStats;
use crate::timer::TimerQueue;
use crate::view::{MemberEvent, MemberView, ViewTracker};

/// Capacity of the command queue; callers wait when it is full.
const COMMAND_CAPACITY: usize = 64;

/// Entry point of the crate.
#[derive(Debug)]
pub struct Gossip;

impl Gossip {
    /// Validates `config`, then spawns the driver on `socket` (pre-bound, so
    /// tests can use port 0). The driver stops when `shutdown` is cancelled,
    /// without leaving: call [`GossipHandle::leave`] first for a graceful exit.
    pub fn start(
        config: GossipConfig,
        identity: NodeIdentity,
        socket: UdpSocket,
        shutdown: CancellationToken,
    ) -> Result<GossipHandle, GossipError> {
        let config = config.validate()?;
        let bound = socket.local_addr()?;
        if bound.port() != identity.gossip_addr.port() {
            return Err(GossipError::AddrMismatch { advertised: identity.gossip_addr, bound });
        }

        let stats = Arc::new(GossipStats::default());
        let (delivery_tx, deliveries) = mpsc::channel(config.event_capacity);
        let handler = Handler::new(delivery_tx, Arc::clone(&stats));
        let rng: StdRng = rand::make_rng();
        let foca = foca::Foca::with_custom_broadcast(
            identity.clone(),
            config.foca_config(),
            rng,
            BincodeCodec,
            handler,
        );

        let tracker = ViewTracker::new(&identity, std::time::Instant::now());
        let (view_tx, view_rx) = watch::channel(Arc::new(tracker.view().clone()));
        let (events, _) = broadcast::channel(config.event_capacity);
        let (received, _) = broadcast::channel(config.event_capacity);
        let outlets = Outlets {
            view: view_tx,
            events: events.clone(),
            received: received.clone(),
            stats: Arc::clone(&stats),
        };

        let envelope = Envelope::new(ClusterTag::of(&config.cluster_id), config.max_packet_size);
        let driver = Driver {
            foca,
            socket,
            envelope,
            deliveries,
            tracker,
            outlets,
            outbox: Outbox::new(),
            timers: TimerQueue::new(),
            left: false,
            broadcast_seq: 0,
            send_buf: Vec::with_capacity(config.max_packet_size),
            // One byte more than allowed, so an oversize datagram is seen as such.
            recv_buf: vec![0; config.max_packet_size + 1],
            probe_stagger: Some(probe_stagger(config.timings().probe_period)),
            reannounce: Reannounce::new(config.reannounce_every()),
        };

        let (commands, command_rx) = mpsc::channel(COMMAND_CAPACITY);
        let stopped = CancellationToken::new();
        let guard = stopped.clone().drop_guard();
        tracing::info!(node = identity.id, name = %identity.name, gossip_addr = %identity.gossip_addr, cluster = %config.cluster_id, "gossip started");
        tokio::spawn(async move {
            let _guard = guard;
            driver.run(shutdown, command_rx).await;
        });

        Ok(GossipHandle {
            inner: Arc::new(Inner { commands, view: view_rx, events, received, stats, stopped, identity }),
        })
    }
}

/// A handle on a running gossip driver.
#[derive(Debug, Clone)]
pub struct GossipHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<Arc<MemberView>>,
    events: broadcast::Sender<MemberEvent>,
    received: broadcast::Sender<Received>,
    stats: Arc<GossipStats>,
    stopped: CancellationToken,
    identity: NodeIdentity,
}

impl GossipHandle {
    /// The identity this node started with (its incarnation may have grown
    /// since; see the local entry of [`Self::view`]).
    pub fn identity(&self) -> &NodeIdentity {
        &self.inner.identity
    }

    /// The latest membership snapshot.
    pub fn view(&self) -> Arc<MemberView> {
        Arc::clone(&self.inner.view.borrow())
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MemberView>> {
        self.inner.view.clone()
    }

    /// Member events from now on. A receiver more than `event_capacity`
    /// events behind gets `RecvError::Lagged` and should re-read the view.
    pub fn events(&self) -> broadcast::Receiver<MemberEvent> {
        self.inner.events.subscribe()
    }

    /// Payload broadcasts of other members from now on.
    pub fn broadcasts(&self) -> broadcast::Receiver<Received> {
        self.inner.received.subscribe()
    }

    pub fn stats(&self) -> Arc<GossipStats> {
        Arc::clone(&self.inner.stats)
    }

    /// Announces this node to each seed. Returns once the announces are sent,
    /// not once joined: watch the view, and retry with backoff while it shows
    /// no other member.
    pub async fn join(&self, seeds: Vec<SocketAddr>) -> Result<(), GossipError> {
        self.request(|reply| Command::Join { seeds, reply }).await
    }

    /// Leaves gracefully: peers see this node `Left`. The driver keeps running
    /// (answering nothing) until shutdown; a left node cannot rejoin.
    pub async fn leave(&self) -> Result<(), GossipError> {
        self.request(|reply| Command::Leave { reply }).await
    }

    /// Disseminates `data` as this node's latest payload; peers receive it on
    /// [`Self::broadcasts`], a newer one replacing an older one in flight.
    pub async fn broadcast(&self, data: Vec<u8>) -> Result<(), GossipError> {
        self.request(|reply| Command::Broadcast { data, reply }).await
    }

    /// Resolves once the driver has stopped (shutdown or panic).
    pub async fn stopped(&self) {
        self.inner.stopped.cancelled().await;
    }

    async fn request(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), GossipError>>) -> Command,
    ) -> Result<(), GossipError> {
        let (reply, rx) = oneshot::channel();
        self.inner.commands.send(make(reply)).await.map_err(|_| GossipError::Stopped)?;
        rx.await.map_err(|_| GossipError::Stopped)?
    }
}

/// A random offset in `[0, period)` for the first probe.
fn probe_stagger(period: std::time::Duration) -> std::time::Duration {
    use std::hash::{BuildHasher, RandomState};
    let period_us = u64::try_from(period.as_micros()).unwrap_or(u64::MAX).max(1);
    std::time::Duration::from_micros(RandomState::new().hash_one(std::process::id()) % period_us)
}

#[cfg(test)]
mod stagger_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn first_probe_offsets_spread_over_the_period() {
        let period = Duration::from_secs(1);
        let offsets: Vec<Duration> = (0..64).map(|_| probe_stagger(period)).collect();
        assert!(offsets.iter().all(|d| *d < period));
        let early = offsets.iter().filter(|d| **d < period / 2).count();
        assert!(
            (8..=56).contains(&early),
            "offsets must spread over the period: {early}/64 in the first half"
        );
    }
}
