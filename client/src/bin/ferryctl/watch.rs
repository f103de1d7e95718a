//! `ferryctl watch routes | chaos | members [-- CMD…]`.
//!
//! Routes and chaos policies are watched with blocking queries on their
//! lists (`?index=N&wait=…`: the node answers when the config index passes
//! N). Members are asked every `--interval`: their gossip state is not
//! part of the replicated config, so no config index moves with it. Each
//! answer is compared with the one before, and each difference is one
//! change. Nodes that cannot be reached are skipped (`--addr` failover);
//! when none answers, the watch tries again every second. Ctrl-C ends it
//! (exit 0).

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_client::http::{AdminClient, RawRequest};
use serde::Serialize;
use serde_json::Value;

use crate::ctx::Ctx;
use crate::out::{Exit, Failure, api_failure, parse_duration};

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// What to watch.
    #[arg(value_enum)]
    kind: Kind,
    /// Longest wait of one blocking query on the server (routes, chaos).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    wait: Duration,
    /// How often members are asked.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    interval: Duration,
    /// A command to run for each change, with FERRY_WATCH_KIND,
    /// FERRY_WATCH_INDEX and FERRY_WATCH_CHANGE (the change as JSON) in its
    /// environment, instead of printing it.
    #[arg(last = true, value_name = "CMD")]
    cmd: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Routes,
    Chaos,
    Members,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Routes => "routes",
            Kind::Chaos => "chaos",
            Kind::Members => "members",
        }
    }

    /// What one object is called in a change line.
    fn noun(self) -> &'static str {
        match self {
            Kind::Routes => "route",
            Kind::Chaos => "chaos policy",
            Kind::Members => "member",
        }
    }
}

/// One object as last seen: its revision (routes, chaos) or what of it a
/// change is about (members), and the object as the API sent it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    revision: Option<u64>,
    key: Value,
    value: Value,
}

type Snapshot = BTreeMap<String, Seen>;

/// One change, as printed with `-o json` and given to CMD.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub kind: Kind,
    /// `added`, `changed` or `removed`.
    pub change: &'static str,
    pub name: String,
    /// The object's revision (routes, chaos; for a removal, the index the
    /// answer had).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// The config index of the answer that showed the change.
    pub index: u64,
    /// The object now (null once removed).
    pub value: Value,
}

/// The objects of a list answer, by name (members: `name` and id).
fn snapshot(kind: Kind, list: &[Value]) -> Snapshot {
    let mut out = Snapshot::new();
    for v in list {
        let (name, seen) = match kind {
            Kind::Routes | Kind::Chaos => {
                let obj = if kind == Kind::Routes { &v["config"] } else { &v["policy"] };
                let name = obj["name"].as_str().unwrap_or_default().to_string();
                let revision = v["revision"].as_u64();
                (name, Seen { revision, key: obj.clone(), value: v.clone() })
            }
            Kind::Members => {
                let name = format!("{} (id {})", v["name"].as_str().unwrap_or_default(), v["id"]);
                // What a change is: not applied_index, which moves with every write.
                let key =
                    serde_json::json!([v["name"], v["state"], v["raft"], v["admin_addr"], v["version"]]);
                (name, Seen { revision: None, key, value: v.clone() })
            }
        };
        out.insert(name, seen);
    }
    out
}

/// Every difference from `before` to `after`, by name.
fn diff(kind: Kind, before: &Snapshot, after: &Snapshot, index: u64) -> Vec<Change> {
    let mut out = Vec::new();
    let change = |change, name: &str, revision, value: &Value| Change {
        kind,
        change,
        name: name.to_string(),
        revision,
        index,
        value: value.clone(),
    };
    for (name, now) in after {
        match before.get(name) {
            None => out.push(change("added", name, now.revision, &now.value)),
            Some(was) if was.revision != now.revision || was.key != now.key => {
                out.push(change("changed", name, now.revision, &now.value))
            }
            Some(_) => {}
        }
    }
    for name in before.keys().filter(|n| !after.contains_key(*n)) {
        let revision = (kind != Kind::Members).then_some(index);
        out.push(change("removed", name, revision, &Value::Null));
    }
    out
}

/// A change as one line: `added route web rev 12`, `changed member n2 (id
/// 2): down voter`.
fn line(c: &Change) -> String {
    let mut s = format!("{} {} {}", c.change, c.kind.noun(), c.name);
    if let Some(r) = c.revision {
        s.push_str(&format!(" rev {r}"));
    }
    if c.kind == Kind::Members && c.change != "removed" {
        let state = c.value["state"].as_str().unwrap_or("none");
        s.push_str(&format!(": {state} {}", c.value["raft"].as_str().unwrap_or("?")));
    }
    s
}

pub async fn run(ctx: &Ctx, a: &WatchArgs) -> Result<(), Failure> {
    tokio::select! {
        r = watch(ctx, a) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn watch(ctx: &Ctx, a: &WatchArgs) -> Result<(), Failure> {
    let client: AdminClient = ctx.client.clone().with_timeout(a.wait + ctx.timeout);
    let stale = if ctx.stale { "&consistency=stale" } else { "" };
    let mut before: Option<Snapshot> = None;
    let mut index = 0;
    loop {
        let path = match a.kind {
            Kind::Members => "/v1/members".to_string(),
            k => format!("/v1/{}?index={index}&wait={}ms{stale}", k.as_str(), a.wait.as_millis()),
        };
        if a.kind == Kind::Members && before.is_some() {
            tokio::time::sleep(a.interval).await;
        }
        let r = match client.send(&RawRequest::new("GET", path)).await {
            Ok(r) if (200..300).contains(&r.status) => r,
            // A node without a leader, or none reachable: the cluster may
            // come back.
            Ok(r) if r.status >= 500 => {
                eprintln!("ferryctl: watch: {}; trying again", api_failure(&r).lines.join("; "));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Ok(r) => return Err(api_failure(&r)),
            Err(e) => {
                eprintln!("ferryctl: watch: {e}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let list: Vec<Value> = serde_json::from_slice(&r.body)
            .map_err(|e| Failure::new(Exit::Error, format!("{}: bad answer: {e}", r.addr)))?;
        let now = snapshot(a.kind, &list);
        match &before {
            None => {
                eprintln!("ferryctl: watching {} at index {} (through {})", a.kind.as_str(), r.index, r.addr)
            }
            Some(was) => {
                for c in diff(a.kind, was, &now, r.index) {
                    emit(ctx, a, &c).await?;
                }
            }
        }
        before = Some(now);
        index = r.index;
    }
}

async fn emit(ctx: &Ctx, a: &WatchArgs, c: &Change) -> Result<(), Failure> {
    let json = serde_json::to_string(c).map_err(|e| Failure::new(Exit::Error, e.to_string()))?;
    let Some((program, args)) = a.cmd.split_first() else {
        if ctx.json() {
            println!("{json}");
        } else {
            println!("{}", line(c));
        }
        return Ok(());
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .env("FERRY_WATCH_KIND", a.kind.as_str())
        .env("FERRY_WATCH_INDEX", c.index.to_string())
        .env("FERRY_WATCH_CHANGE", json);
    let status = tokio::task::spawn_blocking(move || cmd.status())
        .await
        .map_err(|e| Failure::new(Exit::Error, e.to_string()))?
        .map_err(|e| Failure::new(Exit::Error, format!("cannot run {program:?}: {e}")))?;
    if !status.success() {
        eprintln!("ferryctl: watch: {program} {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn route(name: &str, rev: u64) -> Value {
        json!({"config": {"name": name, "listen": ":1"}, "revision": rev, "active_connections": 5})
    }

    #[test]
    fn each_difference_is_one_change_line() {
        let before = snapshot(Kind::Routes, &[route("web", 3), route("db", 4), route("old", 2)]);
        // Connections moved on db: not a change of the route.
        let mut db = route("db", 4);
        db["active_connections"] = json!(9);
        let after = snapshot(Kind::Routes, &[route("web", 7), db, route("new", 8)]);
        let lines: Vec<String> = diff(Kind::Routes, &before, &after, 8).iter().map(line).collect();
        assert_eq!(lines, ["added route new rev 8", "changed route web rev 7", "removed route old rev 8"]);
        let c = &diff(Kind::Routes, &before, &after, 8)[0];
        let v = serde_json::to_value(c).expect("json");
        assert_eq!(
            (v["kind"].as_str(), v["change"].as_str(), v["index"].as_u64()),
            (Some("routes"), Some("added"), Some(8))
        );
    }

    #[test]
    fn a_member_changes_with_its_state_not_its_applied_index() {
        let m = |state: &str, applied: u64| json!({"id": 2, "name": "n2", "state": state, "raft": "voter", "admin_addr": "a", "applied_index": applied});
        let before = snapshot(Kind::Members, &[m("alive", 5)]);
        assert!(diff(Kind::Members, &before, &snapshot(Kind::Members, &[m("alive", 9)]), 9).is_empty());
        let lines: Vec<String> = diff(Kind::Members, &before, &snapshot(Kind::Members, &[m("down", 9)]), 9)
            .iter()
            .map(line)
            .collect();
        assert_eq!(lines, ["changed member n2 (id 2): down voter"]);
        let gone: Vec<String> = diff(Kind::Members, &before, &Snapshot::new(), 9).iter().map(line).collect();
        assert_eq!(gone, ["removed member n2 (id 2)"]);
    }
}
