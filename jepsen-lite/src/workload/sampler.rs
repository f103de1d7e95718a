//! The status sampler: `/v1/status` of one node every 250 ms (term, leader,
//! applied index, table digest), for the leader and convergence checkers.

use std::time::Duration;

use super::{Ctx, name};
use crate::history::{Op, StatusSample};

/// Samples node `node`'s status every 250 ms until `stop`.
pub async fn sampler(ctx: Ctx, process: u32, node: usize) {
    let n = name(node);
    let client = ctx.admin(node).with_timeout(Duration::from_secs(1));
    while !ctx.stop.stopped() {
        ctx.rec.invoke(process, &n, Op::Status(None));
        match client.status().await {
            Ok(s) => {
                let s = s.value;
                let sample = StatusSample {
                    node: n.clone(),
                    node_id: s.raft.as_ref().map(|r| r.node_id),
                    role: s.raft.as_ref().map(|r| r.role.to_string()),
                    term: s.raft.as_ref().map_or(0, |r| r.term),
                    leader_id: s.raft.as_ref().and_then(|r| r.leader_id),
                    applied_index: s.raft.as_ref().and_then(|r| r.applied_index),
                    table_digest: Some(s.table_digest),
                };
                ctx.rec.ok(process, &n, Op::Status(Some(sample)));
            }
            Err(e) => ctx.rec.fail(process, &n, Op::Status(None), &e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
