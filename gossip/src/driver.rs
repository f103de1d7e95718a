//! The driver task: the one owner of `Foca`, the socket and the timers.
//!
//! Everything that can happen arrives as an [`Input`] from one `select!` loop;
//! each input is one call into foca, after which the [`Outbox`] is drained:
//! packets are sealed and sent, timers go into the heap, notifications bump
//! counters, and the member view is diffed and published when it changed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use foca::{Foca, OwnedNotification, Timer};
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::broadcast::{Delivery, Handler, Item, Received};
use crate::codec::BincodeCodec;
use crate::envelope::{Envelope, EnvelopeError};
use crate::error::GossipError;
use crate::identity::NodeIdentity;
use crate::reannounce::Reannounce;
use crate::runtime::Outbox;
use crate::stats::GossipStats;
use crate::timer::TimerQueue;
use crate::view::{MemberEvent, MemberView, ViewTracker};

pub(crate) type FocaInstance = Foca<NodeIdentity, BincodeCodec, StdRng, Handler>;

type Reply = oneshot::Sender<Result<(), GossipError>>;

/// Requests from a [`crate::GossipHandle`].
#[derive(Debug)]
pub(crate) enum Command {
    Join { seeds: Vec<SocketAddr>, reply: Reply },
    Leave { reply: Reply },
    Broadcast { data: Vec<u8>, reply: Reply },
}

/// One thing for the driver to react to.
#[derive(Debug)]
enum Input {
    Datagram {
        len: usize,
    },
    RecvError(std::io::Error),
    TimersDue,
    /// A re-announce round may be due ([`Reannounce`]).
    Reannounce,
    Command(Command),
}

/// Where the driver publishes.
#[derive(Debug)]
pub(crate) struct Outlets {
    pub view: watch::Sender<Arc<MemberView>>,
    pub events: broadcast::Sender<MemberEvent>,
    pub received: broadcast::Sender<Received>,
    pub stats: Arc<GossipStats>,
}

#[derive(Debug)]
pub(crate) struct Driver {
    pub foca: FocaInstance,
    pub socket: UdpSocket,
    pub envelope: Envelope,
    pub deliveries: mpsc::Receiver<Delivery>,
    pub tracker: ViewTracker,
    pub outlets: Outlets,
    pub outbox: Outbox,
    pub timers: TimerQueue<Timer<NodeIdentity>>,
    pub left: bool,
    pub broadcast_seq: u64,
    pub send_buf: Vec<u8>,
    pub recv_buf: Vec<u8>,
    /// Added once, to the first probe timer: members started together
    /// would otherwise probe in the same phase forever, and after a crash
    /// all of them wait the same time for their next probe (memberlist
    /// staggers its probe ticker the same way).
    pub probe_stagger: Option<Duration>,
    /// Announcing again while foca is out of the cluster after a rejoin.
    pub reannounce: Reannounce<Instant>,
}

impl Driver {
    pub(crate) async fn run(mut self, shutdown: CancellationToken, mut commands: mpsc::Receiver<Command>) {
        let mut commands_open = true;
        loop {
            let deadline = self.timers.next_deadline();
            let reannounce = self.reannounce.deadline();
            let input = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => Input::TimersDue,
                () = sleep_until(reannounce.unwrap_or_else(Instant::now)), if reannounce.is_some() => Input::Reannounce,
                cmd = commands.recv(), if commands_open => match cmd {
                    Some(cmd) => Input::Command(cmd),
                    None => {
                        commands_open = false;
                        continue;
                    }
                },
                res = self.socket.recv_from(&mut self.recv_buf) => match res {
                    Ok((len, _from)) => Input::Datagram { len },
                    Err(e) => Input::RecvError(e),
                },
            };
            self.handle(input).await;
        }
        tracing::debug!(node = self.foca.identity().id, "gossip driver stopped");
    }

    async fn handle(&mut self, input: Input) {
        match input {
            Input::Datagram { len } => self.on_datagram(len),
            Input::RecvError(e) => {
                tracing::debug!(node = self.foca.identity().id, error = %e, "gossip recv error");
                // A persistent socket error must not turn into a busy loop.
                sleep(Duration::from_millis(10)).await;
            }
            Input::TimersDue => {
                // Taken in one go: a timer scheduled while these run waits for
                // the next turn of the loop, so the batch always ends.
                let now = Instant::now();
                let due: Vec<_> = std::iter::from_fn(|| self.timers.pop_due(now)).collect();
                for timer in due {
                    if let Err(e) = self.foca.handle_timer(timer, &mut self.outbox) {
                        tracing::warn!(node = self.foca.identity().id, error = %e, "foca timer");
                    }
                    self.flush().await;
                }
            }
            Input::Reannounce => self.reannounce(),
            Input::Command(cmd) => self.on_command(cmd).await,
        }
        self.flush().await;
    }

    fn on_datagram(&mut self, len: usize) {
        let packet = self.recv_buf.get(..len).unwrap_or_default();
        receive(&self.envelope, &mut self.foca, &mut self.outbox, &self.outlets.stats, packet);
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Join { seeds, reply } => {
                let result = self.join(&seeds);
                self.flush().await;
                let _ = reply.send(result);
            }
            Command::Leave { reply } => {
                let result = self.leave();
                self.flush().await;
                let _ = reply.send(result);
            }
            Command::Broadcast { data, reply } => {
                let result = self.broadcast(data);
                self.flush().await;
                let _ = reply.send(result);
            }
        }
    }

    fn join(&mut self, seeds: &[SocketAddr]) -> Result<(), GossipError> {
        if self.left {
            return Err(GossipError::Left);
        }
        let own = self.foca.identity().gossip_addr;
        for seed in seeds.iter().filter(|s| **s != own) {
            self.foca.announce(NodeIdentity::seed(*seed), &mut self.outbox)?;
        }
        Ok(())
    }

    /// One re-announce round, if due: an Announce to a few known addresses.
    fn reannounce(&mut self) {
        if self.left {
            return self.reannounce.stop();
        }
        let own = self.foca.identity().gossip_addr;
        let known = self.foca.iter_membership_state().map(|m| m.id());
        let targets = self.reannounce.take_due(Instant::now(), own, known);
        if !targets.is_empty() {
            tracing::debug!(node = self.foca.identity().id, to = ?targets, "out of the cluster: announcing again");
        }
        for addr in targets {
            if let Err(e) = self.foca.announce(NodeIdentity::seed(addr), &mut self.outbox) {
                tracing::debug!(node = self.foca.identity().id, error = %e, "re-announce");
            }
        }
    }

    fn leave(&mut self) -> Result<(), GossipError> {
        if self.left {
            return Ok(());
        }
        let me = self.foca.identity();
        let notice =
            Item::Leaving { node: me.id, incarnation: me.incarnation }.encode().map_err(foca_codec)?;
        // Queued first, so it rides on the gossip that announces our exit.
        self.foca.add_broadcast(&notice)?;
        self.foca.leave_cluster(&mut self.outbox)?;
        self.left = true;
        Ok(())
    }

    fn broadcast(&mut self, data: Vec<u8>) -> Result<(), GossipError> {
        if self.left {
            return Err(GossipError::Left);
        }
        let max = self.envelope.max_payload() / 2;
        if data.len() > max {
            return Err(GossipError::BroadcastTooLarge { len: data.len(), max });
        }
        self.broadcast_seq += 1;
        let me = self.foca.identity();
        let item =
            Item::Payload { origin: me.id, incarnation: me.incarnation, seq: self.broadcast_seq, data };
        self.foca.add_broadcast(&item.encode().map_err(foca_codec)?)?;
        self.foca.broadcast(&mut self.outbox)?;
        Ok(())
    }

    /// Drains the outbox and the handler's deliveries, then publishes the
    /// view if it changed.
    async fn flush(&mut self) {
        let stats = Arc::clone(&self.outlets.stats);
        while let Some((dst, payload)) = self.outbox.next_send() {
            self.envelope.seal(&payload, &mut self.send_buf);
            match self.socket.send_to(&self.send_buf, dst.gossip_addr).await {
                Ok(_) => GossipStats::bump(&stats.packets_out),
                Err(e) => {
                    GossipStats::bump(&stats.send_errors);
                    tracing::debug!(to = %dst.gossip_addr, error = %e, "gossip send failed");
                }
            }
        }
        let now = Instant::now();
        while let Some((after, timer)) = self.outbox.next_timer() {
            let stagger = match timer {
                Timer::ProbeRandomMember(_) => self.probe_stagger.take().unwrap_or_default(),
                _ => Duration::ZERO,
            };
            self.timers.push(now + after + stagger, timer);
        }
        while let Some(notification) = self.outbox.next_notification() {
            let id = self.foca.identity().id;
            self.reannounce.on_notification(&notification, now);
            match notification {
                OwnedNotification::ProbeFailed(_, member) => {
                    GossipStats::bump(&stats.probe_failures);
                    tracing::debug!(node = id, member = member.id, "probe failed");
                }
                OwnedNotification::Rejoin(new) => {
                    tracing::info!(node = id, name = %new.name, incarnation = new.incarnation, "declared down; rejoined")
                }
                // After a leave foca reports itself defunct: that is the leave.
                OwnedNotification::Defunct if self.left => tracing::debug!(node = id, "left the cluster"),
                OwnedNotification::Defunct => {
                    let name = &self.foca.identity().name;
                    tracing::warn!(node = id, %name, "declared down and cannot rejoin")
                }
                other => tracing::trace!(node = id, notification = ?other, "foca"),
            }
        }
        while let Ok(delivery) = self.deliveries.try_recv() {
            match delivery {
                Delivery::Leaving { node, incarnation } => self.tracker.mark_left(node, incarnation),
                Delivery::Payload(received) => {
                    let _no_subscribers = self.outlets.received.send(received);
                }
            }
        }
        let table = self.foca.iter_membership_state().map(|m| (m.id(), m.state()));
        if let Some(events) = self.tracker.refresh(self.foca.identity(), self.left, table, now.into_std()) {
            self.outlets.view.send_replace(Arc::new(self.tracker.view().clone()));
            for event in events {
                tracing::debug!(node = self.foca.identity().id, event = ?event, "member event");
                let _no_subscribers = self.outlets.events.send(event);
            }
        }
    }
}

/// The receive path: envelope check, then foca. Every packet ends up counted
/// exactly once, as accepted or under the reason it was dropped.
pub(crate) fn receive(
    envelope: &Envelope,
    foca: &mut FocaInstance,
    outbox: &mut Outbox,
    stats: &GossipStats,
    packet: &[u8],
) {
    let payload = match envelope.open(packet) {
        Ok(payload) => payload,
        Err(e) => {
            let counter = match e {
                EnvelopeError::ForeignCluster(_) => &stats.dropped_foreign_cluster,
                EnvelopeError::BadMagic | EnvelopeError::UnsupportedVersion(_) => &stats.dropped_bad_version,
                EnvelopeError::Oversize { .. } => &stats.dropped_oversize,
                EnvelopeError::TooShort { .. } => &stats.dropped_malformed,
            };
            GossipStats::bump(counter);
            tracing::trace!(error = %e, "gossip packet dropped");
            return;
        }
    };
    match foca.handle_data(payload, outbox) {
        Ok(()) => GossipStats::bump(&stats.packets_in),
        Err(e) => {
            let malformed = matches!(
                e,
                foca::Error::Decode(_)
                    | foca::Error::MalformedPacket
                    | foca::Error::DataTooBig
                    | foca::Error::CustomBroadcast(_)
            );
            GossipStats::bump(if malformed { &stats.dropped_malformed } else { &stats.rejected });
            tracing::trace!(error = %e, "gossip packet refused by foca");
        }
    }
}

fn foca_codec(e: crate::codec::CodecError) -> GossipError {
    GossipError::Foca(e.to_string())
}
