//! `ferryctl status`: this node.

use std::time::Duration;

use ferry_client::api::Status;

use crate::ctx::{Ctx, decode};
use crate::out::{Failure, human, print_pairs};

pub async fn run(ctx: &Ctx) -> Result<(), Failure> {
    let r = ctx.get("/v1/status", false).await?;
    if ctx.json() {
        ctx.print_body(&r);
        return Ok(());
    }
    let s: Status = decode(&r)?;
    print_pairs(&pairs(&s));
    Ok(())
}

/// The lines of the table, in order.
pub fn pairs(s: &Status) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let node = match &s.raft {
        Some(raft) => format!("{} (id {})", s.node, raft.node_id),
        None => s.node.clone(),
    };
    out.push(("node", node));
    out.push(("version", s.version.clone()));
    match &s.raft {
        Some(raft) => {
            out.push(("role", raft.role.to_string()));
            let leader = match (raft.leader_id, &raft.leader_name) {
                (Some(id), Some(name)) => format!("{name} (id {id})"),
                (Some(id), None) => format!("id {id}"),
                (None, _) => "none known".to_string(),
            };
            out.push(("leader", leader));
            if let Some(q) = raft.quorum {
                out.push(("quorum", if q { "yes" } else { "NO" }.to_string()));
            }
            out.push(("term", raft.term.to_string()));
        }
        None => out.push(("role", "standalone".to_string())),
    }
    out.push(("index", s.index.to_string()));
    out.push(("table", format!("generation {}, digest {}", s.table_generation, s.table_digest)));
    out.push(("routes", s.routes.to_string()));
    out.push(("connections", s.active_connections.to_string()));
    out.push(("uptime", human(Duration::from_secs(s.uptime_secs))));
    if s.draining {
        out.push(("draining", "yes".to_string()));
    }
    if let Some(cv) = &s.cluster_version {
        let protocol = cv.protocol.map_or_else(|| "unknown".to_string(), |p| p.to_string());
        let mut line = format!("protocol {protocol}");
        if let Some(v) = &cv.version {
            line.push_str(&format!(", version {v}"));
        }
        if !cv.unknown.is_empty() {
            line.push_str(&format!(", not answering: {}", cv.unknown.join(", ")));
        }
        out.push(("cluster", line));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_the_node_and_leader_with_ids_and_uptime_in_human_units() {
        let s: Status = serde_json::from_value(serde_json::json!({
            "node": "n2", "version": "0.1.0+abc", "uptime_secs": 192, "draining": false, "routes": 2,
            "table_generation": 7, "active_connections": 3, "index": 41, "table_digest": "00ff",
            "raft": {"node_id": 2, "role": "follower", "leader_id": 1, "leader_name": "n1", "term": 4,
                     "last_log_index": 41, "applied_index": 41, "quorum": null, "peers": []},
            "cluster_version": {"protocol": 5, "version": "0.1.0+abc", "features": [], "unknown": []}
        }))
        .expect("status");
        let p = pairs(&s);
        let get = |k: &str| p.iter().find(|(key, _)| *key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("node"), Some("n2 (id 2)"));
        assert_eq!(get("role"), Some("follower"));
        assert_eq!(get("leader"), Some("n1 (id 1)"));
        assert_eq!(get("uptime"), Some("3m12s"));
        assert_eq!(get("table"), Some("generation 7, digest 00ff"));
        assert_eq!(get("cluster"), Some("protocol 5, version 0.1.0+abc"));
        assert_eq!(get("quorum"), None, "only a leader has a quorum to show");
    }
}
