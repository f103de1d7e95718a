//! The mapping of failed attempts to what a request does next and to the
//! error it ends with: every input a real cluster produces, built by hand.

use std::io;

use super::*;

fn leader() -> NodeInfo {
    NodeInfo { name: "n2".into(), cluster_addr: "127.0.0.2:7947".into(), admin_addr: "127.0.0.2:7948".into() }
}

fn who() -> String {
    describe(2, &leader())
}

const BUDGET: Duration = Duration::from_millis(5_000);

#[test]
fn leaders_are_described_with_id_name_and_address() {
    assert_eq!(who(), "node 2 (n2) at 127.0.0.2:7947");
    let unnamed = NodeInfo { name: String::new(), ..leader() };
    assert_eq!(describe(2, &unnamed), "node 2 at 127.0.0.2:7947");
}

/// A broken connection to the leader was answered `timeout` a few
/// milliseconds into the request; it is a write in flight to a leader that
/// went away: sent again, and `leader_changed` if nothing answers by the
/// deadline.
#[test]
fn a_connection_broken_mid_request_is_a_lost_attempt_not_a_timeout() {
    let w = who();
    for source in [
        FrameError::Closed,
        FrameError::Io(io::ErrorKind::ConnectionReset.into()),
        FrameError::Io(io::ErrorKind::UnexpectedEof.into()),
    ] {
        let e = TransportError::Frame { addr: leader().cluster_addr, source };
        let next = after_transport_error(&e, &w);
        assert!(matches!(&next, Next::Lost(why) if why.contains("node 2 (n2)")), "{e}: {next:?}");
    }
}

#[test]
fn an_unreachable_leader_is_waited_out_and_a_real_timeout_is_a_timeout() {
    let w = who();
    let addr = leader().cluster_addr;
    let refused =
        TransportError::Connect { addr: addr.clone(), source: io::ErrorKind::ConnectionRefused.into() };
    assert!(matches!(after_transport_error(&refused, &w), Next::Wait(why) if why.contains("unreachable")));
    let slow = TransportError::ConnectTimeout { addr: addr.clone(), timeout: Duration::from_millis(500) };
    assert!(matches!(after_transport_error(&slow, &w), Next::Wait(_)));
    let timeout = TransportError::Timeout { addr: addr.clone(), timeout: BUDGET };
    assert!(matches!(after_transport_error(&timeout, &w), Next::Answer(ReplicaError::Timeout(_))));
    let garbled = TransportError::Frame { addr, source: FrameError::Malformed("unknown variant".into()) };
    assert!(matches!(after_transport_error(&garbled, &w), Next::Answer(ReplicaError::Unavailable(_))));
}

#[test]
fn write_errors_map_to_what_happened() {
    let w = who();
    let leader_src = Source::Leader(&w);
    let follow = WriteError::ForwardToLeader { leader_id: 2, leader: leader() };
    assert!(matches!(after_write_error(follow, Source::Local, true), Next::Follow { leader_id: 2, .. }));
    assert!(matches!(after_write_error(WriteError::NoLeader, Source::Local, true), Next::Wait(_)));
    assert!(matches!(after_write_error(WriteError::LeaderChanged, leader_src, true), Next::Lost(_)));
    assert!(matches!(after_write_error(WriteError::LeaderChanged, Source::Local, true), Next::Lost(_)));
    // The leader's Raft stopped with the write: lost, not a 500 of ours.
    let stopped = WriteError::Fatal { message: "raft stopped".into() };
    assert!(matches!(after_write_error(stopped.clone(), leader_src, true), Next::Lost(_)));
    assert!(matches!(after_write_error(stopped, Source::Local, true), Next::Answer(ReplicaError::Fatal(_))));
    let refused = WriteError::Membership { message: "last voter".into() };
    assert!(matches!(
        after_write_error(refused, Source::Local, true),
        Next::Answer(ReplicaError::Refused(_))
    ));

    let Next::Answer(ReplicaError::NoQuorum(m)) =
        after_write_error(WriteError::NoQuorum { since_ms: 1234, proposed: false }, leader_src, true)
    else {
        panic!("no quorum is answered at once")
    };
    assert!(m.contains("node 2 (n2)") && m.contains("1234 ms") && m.contains("not proposed"), "{m}");
    let Next::Answer(ReplicaError::NoQuorum(m)) =
        after_write_error(WriteError::NoQuorum { since_ms: 9, proposed: true }, Source::Local, true)
    else {
        panic!("no quorum is answered at once")
    };
    assert!(m.contains("may still commit") && m.contains("same request id"), "{m}");
    let Next::Answer(ReplicaError::Timeout(m)) =
        after_write_error(WriteError::Timeout { timeout_ms: 5000 }, leader_src, true)
    else {
        panic!("the leader's own write timeout is a timeout")
    };
    assert!(m.contains("5000 ms"), "{m}");
    // Past its deadline the write is answered at once: not applied.
    let Next::Answer(ReplicaError::DeadlineExceeded(m)) =
        after_write_error(WriteError::DeadlineExceeded { late_ms: 12 }, leader_src, true)
    else {
        panic!("a write past its deadline is answered at once")
    };
    assert!(m.contains("node 2 (n2)") && m.contains("12 ms") && m.contains("not applied"), "{m}");
    // A read says nothing of a write.
    let Next::Answer(ReplicaError::NoQuorum(m)) =
        after_write_error(WriteError::NoQuorum { since_ms: 7, proposed: false }, Source::Local, false)
    else {
        panic!("no quorum is answered at once")
    };
    assert!(m.contains("7 ms") && !m.contains("write"), "{m}");
}

#[test]
fn at_the_deadline_the_answer_follows_what_the_attempts_went_through() {
    // Nothing ever answered: no leader, with the last reason.
    let mut p = Progress::default();
    assert!(matches!(p.at_deadline(true, BUDGET, None), ReplicaError::NoLeader(m) if m.contains("5000 ms")));
    p.waiting("the last known leader, node 2, is unreachable".into());
    let e = p.at_deadline(true, BUDGET, None);
    assert!(matches!(&e, ReplicaError::NoLeader(m) if m.contains("unreachable")), "{e}");

    // A leader went away with the write: leader_changed, even if later
    // attempts found no leader at all.
    p.lost("the connection to the leader broke".into());
    p.waiting("this node knows no leader".into());
    let e = p.at_deadline(true, BUDGET, None);
    assert!(
        matches!(&e, ReplicaError::LeaderChanged(m) if m.contains("broke") && m.contains("same request id")),
        "{e}"
    );

    // An attempt in flight when the time ran out: timeout.
    p.asking("the leader, node 3 at 127.0.0.3:7947");
    let e = p.at_deadline(true, BUDGET, None);
    assert!(
        matches!(&e, ReplicaError::Timeout(m) if m.contains("node 3") && m.contains("may still commit")),
        "{e}"
    );
    p.answered();
    assert!(matches!(p.at_deadline(true, BUDGET, None), ReplicaError::LeaderChanged(_)));

    // This node proposed and leads without a majority: no quorum, not a
    // timeout; a forwarded attempt cannot know and stays a timeout.
    let mut here = Progress::default();
    here.asking_here();
    let e = here.at_deadline(true, BUDGET, Some(5_400));
    assert!(matches!(&e, ReplicaError::NoQuorum(m) if m.contains("5400 ms") && m.contains("5000 ms")), "{e}");
    assert!(matches!(here.at_deadline(true, BUDGET, None), ReplicaError::Timeout(_)));
    assert!(matches!(p.at_deadline(true, BUDGET, Some(5_400)), ReplicaError::LeaderChanged(_)));
    p.asking("the leader, node 3 at 127.0.0.3:7947");
    assert!(matches!(p.at_deadline(true, BUDGET, Some(5_400)), ReplicaError::Timeout(_)));

    // A read never says a write may commit.
    let mut read = Progress::default();
    read.asking("this node (the leader)");
    assert!(
        matches!(read.at_deadline(false, BUDGET, None), ReplicaError::Timeout(m) if !m.contains("commit"))
    );
}

/// The request timeout is named in whole milliseconds, as configured,
/// though the deadline is measured from a moment later than the request's.
#[test]
fn the_budget_is_reported_as_configured() {
    let e = Progress::default().at_deadline(true, BUDGET - Duration::from_micros(40), None);
    assert!(e.to_string().contains("(5000 ms)"), "{e}");
}
