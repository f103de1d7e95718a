//! `--wait-applied`: after a write commits at index N, wait until the data
//! plane of every live member runs N (its routing table published and its
//! listeners bound), and say how long each took.
//!
//! Each member is asked directly (`GET /v1/status?min_index=N&wait=…` on
//! its admin address, from `GET /v1/members`), all at once. A member that
//! does not answer in time, or answers with an older index, is behind.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::api::Member;
use crate::http::{AdminClient, ClientError};

/// Where one member's data plane stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeApplied {
    pub id: u64,
    pub name: String,
    /// The member's admin address, as it advertises it.
    pub admin_addr: String,
    /// Its data plane's config index at its answer (none without one).
    pub data_index: Option<u64>,
    /// How long after the wait started the member answered that it runs
    /// the index; none when it is behind.
    pub lag: Option<Duration>,
    /// Why it is behind, when it did not answer.
    pub error: Option<String>,
}

impl NodeApplied {
    /// Whether the member runs the index.
    pub fn applied(&self) -> bool {
        self.lag.is_some()
    }
}

/// Waits up to `timeout` for every live member (gossip alive or suspect,
/// or any member of a cluster without gossip, not one that left) to run
/// config index `index`. `client` is asked for the members, with its
/// token; each member is then asked on its own admin address. Fails only
/// when the member list cannot be read; the members behind are in the
/// answer (sorted by name).
pub async fn wait_applied(
    client: &AdminClient,
    index: u64,
    timeout: Duration,
) -> Result<Vec<NodeApplied>, ClientError> {
    let start = Instant::now();
    let members = client.members().await?.value;
    let live: Vec<Member> = members
        .into_iter()
        .filter(|m| m.state.is_none_or(crate::api::GossipState::is_up))
        .filter(|m| m.state.is_some() || m.raft != crate::api::RaftMembership::None)
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for m in live {
        let remaining = timeout.saturating_sub(start.elapsed());
        let addr = m.admin_addr.parse::<SocketAddr>();
        // The node's own wait ends a little before the client gives up.
        let node = addr
            .as_ref()
            .ok()
            .map(|a| client.with_addr(*a).with_timeout(remaining + Duration::from_millis(500)));
        tasks.spawn(async move {
            let mut row = NodeApplied {
                id: m.id,
                name: m.name.clone(),
                admin_addr: m.admin_addr.clone(),
                data_index: None,
                lag: None,
                error: None,
            };
            let Some(node) = node else {
                row.error = Some(format!("admin address {:?} is not an IP:PORT", m.admin_addr));
                return row;
            };
            match node.status_at(index, remaining).await {
                Ok(s) => {
                    row.data_index = Some(s.value.data_index);
                    if s.value.data_index >= index {
                        row.lag = Some(start.elapsed());
                    }
                }
                Err(e) => row.error = Some(e.to_string()),
            }
            row
        });
    }
    let mut rows = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(row) = joined {
            rows.push(row);
        }
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    Ok(rows)
}
