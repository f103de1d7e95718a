//! `ferryctl route list | get | put | delete | weight`.

use std::path::PathBuf;

use ferry_client::api::{RouteStatus, WriteResult};
use ferry_client::explain::{DryRun, DryRunSide};
use ferry_client::http::RawRequest;

use crate::ctx::{Ctx, decode};
use crate::file;
use crate::out::{Exit, Failure, Table, human, print_pairs};

#[derive(Debug, clap::Subcommand)]
pub enum RouteCmd {
    /// Every route, with its backends' health and connections.
    List,
    /// One route and each of its backends.
    Get { name: String },
    /// Writes every route of FILE (TOML [[routes]], or JSON: one route or
    /// an array; `-` reads stdin), one PUT each, after checking them all.
    Put {
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Only if the route's revision is N (0: must not exist). One route only.
        #[arg(long, value_name = "N", conflicts_with = "dry_run")]
        cas: Option<u64>,
        /// Writes nothing: shows, per route, where new connections would
        /// go before and after against the current ring and health (share
        /// of the key space or of new connections) and the keys that move.
        #[arg(long)]
        dry_run: bool,
    },
    /// Deletes a route.
    Delete {
        name: String,
        /// Only if the route's revision is N.
        #[arg(long, value_name = "N")]
        cas: Option<u64>,
    },
    /// Sets a backend's weight (0..=256; 0 takes no new connections).
    Weight {
        route: String,
        backend: String,
        weight: u32,
        /// Only if the route's revision is N.
        #[arg(long, value_name = "N")]
        cas: Option<u64>,
    },
}

fn cas(c: Option<u64>) -> String {
    c.map(|c| format!("?cas={c}")).unwrap_or_default()
}

pub async fn run(ctx: &Ctx, cmd: RouteCmd) -> Result<(), Failure> {
    match cmd {
        RouteCmd::List => {
            let r = ctx.get("/v1/routes", true).await?;
            if ctx.json() {
                ctx.print_body(&r);
            } else {
                list_table(&decode::<Vec<RouteStatus>>(&r)?).print();
            }
        }
        RouteCmd::Get { name } => {
            file::check_name("name", &name)?;
            let r = ctx.get(&format!("/v1/routes/{name}"), true).await?;
            if ctx.json() {
                ctx.print_body(&r);
            } else {
                let s: RouteStatus = decode(&r)?;
                print_pairs(&pairs(&s));
                println!();
                backends_table(&s).print();
            }
        }
        RouteCmd::Put { file: path, cas: _, dry_run: true } => {
            let (text, format) = file::read(&path)?;
            for route in &file::routes(&text, format)? {
                let body = serde_json::to_vec(route).map_err(|e| Failure::new(Exit::Error, e.to_string()))?;
                let req = RawRequest::new("POST", format!("/v1/routes/{}/dry-run", route.name)).body(body);
                let r = ctx.send(&req).await?;
                if ctx.json() {
                    ctx.print_body(&r);
                } else {
                    dry_run_report(&decode::<DryRun>(&r)?);
                }
            }
        }
        RouteCmd::Put { file: path, cas: c, dry_run: false } => {
            let (text, format) = file::read(&path)?;
            let routes = file::routes(&text, format)?;
            if c.is_some() && routes.len() > 1 {
                return Err(Failure::new(
                    Exit::Usage,
                    format!("--cas applies to one route; {} holds {}", path.display(), routes.len()),
                ));
            }
            for route in &routes {
                let body = serde_json::to_vec(route).map_err(|e| Failure::new(Exit::Error, e.to_string()))?;
                let req = RawRequest::new("PUT", format!("/v1/routes/{}{}", route.name, cas(c))).body(body);
                write(ctx, &format!("route {}", route.name), &req).await?;
            }
        }
        RouteCmd::Delete { name, cas: c } => {
            file::check_name("name", &name)?;
            let req = RawRequest::new("DELETE", format!("/v1/routes/{name}{}", cas(c)));
            write(ctx, &format!("route {name} deleted"), &req).await?;
        }
        RouteCmd::Weight { route, backend, weight, cas: c } => {
            file::check_name("route", &route)?;
            file::check_name("backend", &backend)?;
            if weight > ferry_client::route::MAX_WEIGHT {
                let max = ferry_client::route::MAX_WEIGHT;
                return Err(Failure::new(
                    Exit::Usage,
                    format!("weight: must be between 0 and {max}, got {weight}"),
                ));
            }
            let body = serde_json::json!({ "weight": weight }).to_string();
            let path = format!("/v1/routes/{route}/backends/{backend}/weight{}", cas(c));
            write(
                ctx,
                &format!("route {route} backend {backend} weight {weight}"),
                &RawRequest::new("PUT", path).body(body),
            )
            .await?;
        }
    }
    Ok(())
}

/// Sends a write and prints its result (the one place for what comes after
/// a commit).
pub async fn write(ctx: &Ctx, what: &str, req: &RawRequest) -> Result<WriteResult, Failure> {
    let r = ctx.send(req).await?;
    ctx.wrote(what, &r).await
}

/// A dry run, for people: the summary, then one row per backend.
fn dry_run_report(d: &DryRun) {
    let pct = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |v| format!("{:.2}%", v * 100.0));
    let side = |s: Option<&DryRunSide>| {
        s.map_or_else(
            || "new route".to_string(),
            |s| {
                format!(
                    "{:?}, share of {:?}{}",
                    s.balance,
                    s.share_of,
                    if s.panic_mode { ", panic" } else { "" }
                )
                .to_lowercase()
            },
        )
    };
    let mut pairs = vec![
        ("route", format!("{} (dry run on node {}: nothing written)", d.route, d.node)),
        ("before", side(d.before.as_ref())),
        ("after", side(Some(&d.after))),
    ];
    pairs.push(("moved", d.moved.map_or_else(|| "- (not a hash)".to_string(), |m| pct(Some(m)))));
    pairs.push(("index", format!("{} (table generation {})", d.index, d.table_generation)));
    print_pairs(&pairs);
    println!();
    let mut t = Table::new(&["BACKEND", "BEFORE", "AFTER", "MOVED AWAY", "MOVED IN", "HEALTHY"]);
    for b in &d.backends {
        t.row(vec![
            b.id.clone(),
            pct(b.before),
            pct(b.after),
            pct(b.moved_away),
            pct(b.moved_in),
            if b.healthy { "yes" } else { "no" }.to_string(),
        ]);
    }
    t.print();
}

pub fn list_table(routes: &[RouteStatus]) -> Table {
    let mut t =
        Table::new(&["NAME", "REVISION", "LISTEN", "BALANCE", "BACKENDS", "CONNECTIONS", "STATE", "CHAOS"]);
    for r in routes {
        let healthy = r.backends.iter().filter(|b| b.healthy).count();
        let state = if !r.enabled {
            "disabled".to_string()
        } else if r.panic_mode {
            "panic".to_string()
        } else if !r.bind_failures.is_empty() {
            format!("bind failed on {}", names(r.bind_failures.iter().map(|f| f.node.as_str())))
        } else if r.listening.is_some() {
            "listening".to_string()
        } else {
            "not listening".to_string()
        };
        t.row(vec![
            r.config.name.clone(),
            r.revision.map_or_else(|| "-".to_string(), |v| v.to_string()),
            r.config.listen.clone(),
            serde_plain(&r.config.balance),
            format!("{healthy}/{} healthy", r.backends.len()),
            r.active_connections.to_string(),
            state,
            if r.chaos.is_empty() { "-".to_string() } else { r.chaos.join(",") },
        ]);
    }
    t
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.collect::<Vec<_>>().join(",")
}

/// A unit enum's serde name (`consistent_hash`).
pub fn serde_plain(v: &impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_string(),
    }
}

pub fn pairs(s: &RouteStatus) -> Vec<(&'static str, String)> {
    let c = &s.config;
    let mut out = vec![
        ("name", c.name.clone()),
        ("revision", s.revision.map_or_else(|| "-".to_string(), |v| v.to_string())),
        ("listen", c.listen.clone()),
        ("listening", s.listening.clone().unwrap_or_else(|| "no".to_string())),
        ("enabled", if s.enabled { "yes" } else { "no" }.to_string()),
        ("balance", serde_plain(&c.balance)),
    ];
    if c.balance == ferry_client::Balance::ConsistentHash {
        out.push(("hash key", format!("{} ({} vnodes per weight)", serde_plain(&c.hash_key), c.vnodes)));
    }
    out.push(("connections", format!("{} (max {})", s.active_connections, c.max_connections)));
    out.push((
        "timeouts",
        format!(
            "connect {}, idle {}",
            human(std::time::Duration::from_millis(c.connect_timeout_ms)),
            human(std::time::Duration::from_millis(c.idle_timeout_ms))
        ),
    ));
    if let Some(h) = &c.health_check {
        out.push((
            "health check",
            format!(
                "every {}, timeout {}, rise {}, fall {}",
                human(std::time::Duration::from_millis(h.interval_ms)),
                human(std::time::Duration::from_millis(h.timeout_ms)),
                h.rise,
                h.fall
            ),
        ));
    }
    if s.panic_mode {
        out.push(("panic mode", "yes: no backend is healthy, all are tried".to_string()));
    }
    for f in &s.bind_failures {
        out.push(("bind failure", format!("{} {}: {}", f.node, f.addr, f.error)));
    }
    if !s.bind_unknown.is_empty() {
        out.push(("bind unknown", names(s.bind_unknown.iter().map(|n| n.node.as_str()))));
    }
    if !c.labels.is_empty() {
        let labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push(("labels", labels.join(", ")));
    }
    if !s.chaos.is_empty() {
        out.push(("chaos", s.chaos.join(", ")));
    }
    out
}

pub fn backends_table(s: &RouteStatus) -> Table {
    let mut t =
        Table::new(&["BACKEND", "ADDR", "NODE", "WEIGHT", "HEALTHY", "CHECK", "EJECTED", "CONNECTIONS"]);
    for b in &s.backends {
        let node = s.config.backends.iter().find(|c| c.id == b.id).and_then(|c| c.node.clone());
        t.row(vec![
            b.id.clone(),
            b.addr.clone(),
            node.unwrap_or_else(|| "-".to_string()),
            b.weight.to_string(),
            if b.healthy { "yes" } else { "no" }.to_string(),
            b.check.clone(),
            b.ejected_for_ms
                .map_or_else(|| "-".to_string(), |ms| human(std::time::Duration::from_millis(ms))),
            b.active_connections.to_string(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_shows_its_backends_in_columns_with_human_durations() {
        let s: RouteStatus = serde_json::from_value(serde_json::json!({
            "config": {"name": "web", "listen": ":7000", "balance": "consistent_hash",
                       "backends": [{"id": "a", "addr": "127.0.0.1:1", "node": "n2"},
                                    {"id": "bb", "addr": "127.0.0.1:2", "weight": 3}]},
            "revision": 12, "listening": "127.0.0.1:7000", "active_connections": 4, "panic_mode": false,
            "backends": [
                {"id": "a", "addr": "127.0.0.1:1", "weight": 1, "healthy": true, "check": "remote",
                 "ejected_for_ms": null, "active_connections": 1},
                {"id": "bb", "addr": "127.0.0.1:2", "weight": 3, "healthy": false, "check": "disabled",
                 "ejected_for_ms": 2500, "active_connections": 0}
            ],
            "chaos": ["slow"]
        }))
        .expect("route");
        let t = backends_table(&s).render();
        assert_eq!(
            t,
            "BACKEND  ADDR         NODE  WEIGHT  HEALTHY  CHECK     EJECTED  CONNECTIONS\n\
             a        127.0.0.1:1  n2    1       yes      remote    -        1\n\
             bb       127.0.0.1:2  -     3       no       disabled  2s       0\n"
        );
        let l = list_table(std::slice::from_ref(&s)).render();
        assert!(
            l.contains("web   12        :7000   consistent_hash  1/2 healthy  4            listening  slow"),
            "{l}"
        );
        let p = pairs(&s);
        assert!(p.contains(&("timeouts", "connect 1s, idle 5m".to_string())), "{p:?}");
        assert!(p.contains(&("hash key", "client_ip (100 vnodes per weight)".to_string())), "{p:?}");
    }
}
