//! `ferryctl explain ROUTE --client IP[:PORT]`: the backends a node would
//! try for a client, in order, and why.

use ferry_client::explain::Explain;

use crate::ctx::{Ctx, decode};
use crate::out::{Failure, Table, human, print_pairs};

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The route.
    pub route: String,
    /// The client's address, IP or IP:PORT (the port matters with
    /// `hash_key = "client_addr"`).
    #[arg(long, value_name = "IP[:PORT]")]
    pub client: String,
}

pub async fn run(ctx: &Ctx, a: &ExplainArgs) -> Result<(), Failure> {
    let client: String = query_value(&a.client);
    let r = ctx.get(&format!("/v1/routes/{}/explain?client={client}", a.route), false).await?;
    if ctx.json() {
        ctx.print_body(&r);
        return Ok(());
    }
    let e: Explain = decode(&r)?;
    print_pairs(&pairs(&e));
    println!();
    table(&e).print();
    Ok(())
}

/// Percent-encodes what a query value may not hold as is (`[`, `]`, `%`,
/// `&`, ...).
fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'.' | b':' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn pairs(e: &Explain) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("route", format!("{} on node {}", e.route, e.node)),
        ("client", e.client.clone()),
        ("balance", format!("{:?}", e.balance).to_lowercase()),
        ("order", e.order.clone()),
    ];
    if let Some(h) = &e.hash {
        let owner = h.ring_owner.clone().unwrap_or_else(|| "-".into());
        out.push((
            "hash",
            format!("{:?} of {:?}: ring point {:#018x}, owner {owner}", h.key, h.input, h.point),
        ));
    }
    out.push(("attempts", format!("at most {}", e.max_connect_attempts)));
    if e.panic_mode {
        out.push(("panic mode", "yes: no backend is healthy, every one is tried".into()));
    }
    for c in &e.chaos {
        let hit = match c.hits_next {
            Some(true) => ", hits the next connection",
            Some(false) => ", spares the next connection",
            None => "",
        };
        out.push((
            "chaos",
            format!("{} (rev {}, toxicity {}, seed {}){hit}", c.policy, c.revision, c.toxicity, c.seed),
        ));
    }
    out.push(("index", format!("{} (table generation {})", e.index, e.table_generation)));
    out
}

pub fn table(e: &Explain) -> Table {
    let mut t = Table::new(&[
        "TRY", "BACKEND", "ADDR", "NODE", "STATE", "CHECK", "EJECTED", "WEIGHT", "CONNS", "CHAOS", "WHY",
    ]);
    for b in &e.backends {
        let node = match (&b.owner.node_name, b.owner.node_id, b.owner.local) {
            (Some(n), Some(id), true) => format!("{n} (id {id}, this node)"),
            (Some(n), Some(id), false) => format!("{n} (id {id})"),
            (Some(n), None, _) => n.clone(),
            (None, _, _) => b.owner.node.clone().map_or_else(|| "-".into(), |n| format!("{n} (unknown)")),
        };
        t.row(vec![
            b.attempt.map_or_else(|| "-".into(), |a| a.to_string()),
            b.id.clone(),
            b.addr.clone(),
            node,
            b.owner.state.map_or_else(|| "-".into(), |s| s.to_string()),
            b.check.clone(),
            b.ejected_for_ms.map_or_else(|| "-".into(), |ms| human(std::time::Duration::from_millis(ms))),
            b.weight.to_string(),
            b.active_connections.to_string(),
            if b.chaos.is_empty() { "-".into() } else { b.chaos.join(",") },
            b.reason.clone().unwrap_or_default(),
        ]);
    }
    t
}
