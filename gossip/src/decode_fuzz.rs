//! Property test of the receive path (envelope, codec, foca, broadcast
//! handler): random, mutated and truncated packets never panic, and every
//! packet is counted exactly once, as accepted or as dropped for a reason.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::mpsc;

use crate::broadcast::{Handler, Item};
use crate::codec::BincodeCodec;
use crate::driver::{FocaInstance, receive};
use crate::envelope::{ClusterTag, ENVELOPE_LEN, Envelope};
use crate::identity::NodeIdentity;
use crate::runtime::Outbox;
use crate::stats::GossipStats;

const SEED: u64 = 0x5eed_f022;

fn identity(id: u64) -> NodeIdentity {
    let a = SocketAddr::from(([127, 0, 0, 1], 7000 + u16::try_from(id).unwrap_or(0)));
    NodeIdentity {
        id,
        gossip_addr: a,
        cluster_addr: a,
        admin_addr: a,
        name: format!("n{id}"),
        incarnation: 42,
        meta: Default::default(),
    }
}

fn instance(id: NodeIdentity) -> FocaInstance {
    // The receiver of the deliveries is dropped: a full or closed queue is
    // just a counted drop, which is part of what is exercised.
    let (tx, _rx) = mpsc::channel(4);
    let config = crate::GossipConfig::fast("fuzz").foca_config();
    foca::Foca::with_custom_broadcast(
        id,
        config,
        StdRng::seed_from_u64(SEED),
        BincodeCodec,
        Handler::new(tx, Arc::default()),
    )
}

/// Real packets of a short exchange, sealed, with the identity each is for.
fn valid_packets(envelope: &Envelope) -> anyhow::Result<Vec<(NodeIdentity, Vec<u8>)>> {
    let (a_id, b_id) = (identity(1), identity(2));
    let mut a = instance(a_id.clone());
    let mut b = instance(b_id.clone());
    let mut out = Outbox::new();
    let mut packets = Vec::new();
    let drain = |out: &mut Outbox, packets: &mut Vec<(NodeIdentity, Vec<u8>)>| {
        while let Some((dst, payload)) = out.next_send() {
            let mut sealed = Vec::new();
            envelope.seal(&payload, &mut sealed);
            packets.push((dst, sealed));
        }
        while out.next_timer().is_some() || out.next_notification().is_some() {}
    };
    a.announce(b_id.clone(), &mut out)?;
    drain(&mut out, &mut packets);
    let stats = GossipStats::default();
    let announce = packets[0].1.clone();
    receive(envelope, &mut b, &mut out, &stats, &announce); // b answers with a Feed
    drain(&mut out, &mut packets);
    let feed = packets.last().map(|p| p.1.clone()).unwrap_or_default();
    receive(envelope, &mut a, &mut out, &stats, &feed);
    drain(&mut out, &mut packets);
    a.add_broadcast(&Item::Payload { origin: 1, incarnation: 42, seq: 1, data: vec![7; 40] }.encode()?)?;
    a.add_broadcast(&Item::Leaving { node: 1, incarnation: 42 }.encode()?)?;
    a.gossip(&mut out)?;
    drain(&mut out, &mut packets);
    anyhow::ensure!(
        stats.snapshot().packets_in == 2,
        "the exchange itself must be accepted: {:?}",
        stats.snapshot()
    );
    anyhow::ensure!(packets.len() >= 3, "expected announce, feed and gossip, got {}", packets.len());
    Ok(packets)
}

#[test]
fn random_mutated_and_truncated_packets_never_panic() -> anyhow::Result<()> {
    let envelope = Envelope::new(ClusterTag::of("fuzz"), 1400);
    let valid = valid_packets(&envelope)?;
    let mut receivers: HashMap<u64, FocaInstance> = HashMap::new();
    let stats = GossipStats::default();
    let mut out = Outbox::new();
    let mut inputs = 0u64;
    let mut feed = |dst: &NodeIdentity, bytes: &[u8]| {
        let foca = receivers.entry(dst.id).or_insert_with(|| instance(dst.clone()));
        receive(&envelope, foca, &mut out, &stats, bytes);
        while out.next_send().is_some() || out.next_timer().is_some() || out.next_notification().is_some() {}
        inputs += 1;
    };

    // Every truncation of every valid packet.
    for (dst, packet) in &valid {
        for len in 0..=packet.len() {
            feed(dst, &packet[..len]);
        }
    }

    let mut rng = fastrand::Rng::with_seed(SEED);
    let mut buf = Vec::new();
    for _ in 0..4000 {
        // Valid packet with a few bytes flipped, past the envelope.
        let (dst, packet) = &valid[rng.usize(..valid.len())];
        buf.clone_from(packet);
        for _ in 0..rng.usize(1..4) {
            let i = rng.usize(ENVELOPE_LEN.min(buf.len() - 1)..buf.len());
            buf[i] = rng.u8(..);
        }
        feed(dst, &buf);

        // Random bytes, half of them behind a valid envelope so they reach
        // the bincode decoder rather than stopping at the magic.
        let len = rng.usize(0..1500);
        let noise: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
        if rng.bool() {
            envelope.seal(&noise, &mut buf);
            feed(dst, &buf);
        } else {
            feed(dst, &noise);
        }
    }

    let s = stats.snapshot();
    eprintln!("{inputs} inputs: {s:?}");
    let counted = s.packets_in
        + s.dropped_malformed
        + s.dropped_bad_version
        + s.dropped_foreign_cluster
        + s.dropped_oversize
        + s.rejected;
    assert_eq!(counted, inputs, "every packet counted once: {s:?}");
    assert!(s.dropped_malformed > 1000, "the decoder was exercised: {s:?}");
    assert!(s.dropped_oversize > 0 && s.dropped_bad_version > 0, "{s:?}");
    Ok(())
}
