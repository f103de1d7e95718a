//! `ferryctl members`, `join`, `leave`, `force-leave`.

use ferry_client::api::{JoinRequest, JoinResult, Member, RemoveResult};
use ferry_client::http::RawRequest;
use regex_lite::Regex;

use crate::ctx::{Ctx, decode, pretty, send};
use crate::out::{Exit, Failure, Table};

#[derive(Debug, clap::Args)]
pub struct MembersArgs {
    /// Only members whose gossip state (alive, suspect, down, left, or
    /// none when gossip has not seen it) matches this regular expression;
    /// exit 2 when none does.
    #[arg(long, value_name = "REGEX")]
    status: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// Gossip addresses of members, HOST[:PORT].
    #[arg(required = true, value_name = "ADDR")]
    addrs: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ForceLeaveArgs {
    /// The member's id (digits) or name.
    #[arg(value_name = "ID|NAME")]
    member: String,
}

/// A member's gossip state as shown and matched.
fn state(m: &Member) -> String {
    m.state.map_or_else(|| "none".to_string(), |s| s.to_string())
}

/// The members whose state matches `re` (all without one).
pub fn filter<'m>(members: &'m [Member], re: Option<&Regex>) -> Vec<&'m Member> {
    members.iter().filter(|m| re.is_none_or(|re| re.is_match(&state(m)))).collect()
}

pub fn table(members: &[&Member]) -> Table {
    let mut t = Table::new(&["ID", "NAME", "STATE", "RAFT", "ADMIN", "APPLIED", "VERSION"]);
    for m in members {
        t.row(vec![
            m.id.to_string(),
            m.name.clone(),
            state(m),
            m.raft.to_string(),
            m.admin_addr.clone(),
            m.applied_index.map_or_else(|| "-".to_string(), |i| i.to_string()),
            m.version.clone().unwrap_or_else(|| "-".to_string()),
        ]);
    }
    t
}

pub async fn list(ctx: &Ctx, a: &MembersArgs) -> Result<(), Failure> {
    let re = match &a.status {
        None => None,
        Some(s) => Some(
            Regex::new(s)
                .map_err(|e| Failure::new(Exit::Usage, format!("--status: bad regex {s:?}: {e}")))?,
        ),
    };
    let r = ctx.get("/v1/members", false).await?;
    let members: Vec<Member> = decode(&r)?;
    let shown = filter(&members, re.as_ref());
    if ctx.json() {
        if re.is_none() {
            ctx.print_body(&r);
        } else {
            // The server's own objects, only those that match.
            let all: Vec<serde_json::Value> = decode(&r)?;
            let kept: Vec<&serde_json::Value> =
                all.iter().zip(&members).filter(|(_, m)| shown.contains(m)).map(|(v, _)| v).collect();
            println!("{}", serde_json::to_string_pretty(&kept).unwrap_or_default());
        }
    } else if !shown.is_empty() {
        table(&shown).print();
    }
    match (&a.status, shown.is_empty()) {
        (Some(s), true) => Err(Failure::new(Exit::Usage, format!("no member's state matches {s:?}"))),
        _ => Ok(()),
    }
}

pub async fn join(ctx: &Ctx, a: &JoinArgs) -> Result<(), Failure> {
    let client = ctx.first();
    let body = serde_json::to_vec(&JoinRequest { addrs: a.addrs.clone() })
        .map_err(|e| Failure::new(Exit::Error, e.to_string()))?;
    let r = send(&client, &RawRequest::new("POST", "/v1/join").body(body)).await?;
    if ctx.json() {
        ctx.print_body(&r);
        return Ok(());
    }
    let j: JoinResult = decode(&r)?;
    println!("node {} at {} joined through {}", j.node_id, client.addr(), j.joined.join(", "));
    Ok(())
}

pub async fn leave(ctx: &Ctx) -> Result<(), Failure> {
    let client = ctx.first();
    let r = send(&client, &RawRequest::new("POST", "/v1/leave")).await?;
    if ctx.json() {
        ctx.print_body(&r);
    } else {
        println!("node at {} is leaving the cluster: it drains and stops", client.addr());
    }
    Ok(())
}

/// The id of `member`: digits are an id, anything else a name looked up
/// in `/v1/members` (exit 4 when no member has it).
async fn resolve(ctx: &Ctx, member: &str) -> Result<(u64, Option<String>), Failure> {
    if !member.is_empty() && member.bytes().all(|b| b.is_ascii_digit()) {
        let id =
            member.parse().map_err(|_| Failure::new(Exit::Usage, format!("bad member id {member:?}")))?;
        return Ok((id, None));
    }
    let members: Vec<Member> = decode(&ctx.get("/v1/members", false).await?)?;
    let mut named = members.iter().filter(|m| m.name == member);
    match (named.next(), named.next()) {
        (Some(m), None) => Ok((m.id, Some(m.name.clone()))),
        (None, _) => Err(Failure::new(Exit::NotFound, format!("no member is named {member:?}"))),
        (Some(a), Some(b)) => Err(Failure::new(
            Exit::Usage,
            format!("several members are named {member:?} (ids {} and {}): give the id", a.id, b.id),
        )),
    }
}

pub async fn force_leave(ctx: &Ctx, a: &ForceLeaveArgs) -> Result<(), Failure> {
    let (id, name) = resolve(ctx, &a.member).await?;
    let r = ctx.send(&RawRequest::new("POST", format!("/v1/members/{id}/remove"))).await?;
    if ctx.json() {
        println!("{}", pretty(&r.body));
        return Ok(());
    }
    let done: RemoveResult = decode(&r)?;
    let who = name.map_or_else(|| format!("id {id}"), |n| format!("{n} (id {id})"));
    println!("removed {who} from the cluster: index {}", done.index);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str, state: Option<&str>) -> Member {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": name, "state": state, "gossip_addr": null, "incarnation": null,
            "cluster_addr": "127.0.0.1:7947", "admin_addr": "127.0.0.1:7948", "raft": "voter",
            "applied_index": null, "version": null
        }))
        .expect("member")
    }

    /// `join` sends `POST /v1/join {"addrs": [...]}` to the first address
    /// only (the node that joins), with the token.
    #[tokio::test]
    async fn join_posts_the_addresses_to_the_first_node() {
        use clap::{CommandFactory, FromArgMatches};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut buf = vec![0; 4096];
            let n = s.read(&mut buf).await.expect("read");
            let body = r#"{"node_id":7,"joined":["127.0.0.2:7946"]}"#;
            let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            s.write_all(answer.as_bytes()).await.expect("write");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let addrs = format!("{addr},127.0.0.1:1");
        let args = ["ferryctl", "--addr", &addrs, "--token", "t0k", "join", "127.0.0.2:7946", "n3.example"];
        let m = crate::Cli::command().try_get_matches_from(args).expect("parses");
        let cli = crate::Cli::from_arg_matches(&m).expect("parses");
        let ctx = Ctx::new(&cli.global, &m).expect("ctx");
        let crate::Cmd::Join(a) = cli.cmd else { panic!("not join") };
        assert_eq!(ctx.first().addrs(), [addr]);
        join(&ctx, &a).await.expect("joined");
        let req = server.await.expect("served");
        assert!(req.starts_with("POST /v1/join HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Authorization: Bearer t0k\r\n"), "{req}");
        assert!(req.ends_with(r#"{"addrs":["127.0.0.2:7946","n3.example"]}"#), "{req}");
    }

    #[test]
    fn status_regex_matches_the_state_shown() {
        let ms = [member(1, "n1", Some("alive")), member(2, "n2", Some("down")), member(3, "n3", None)];
        let names = |re: &str| -> Vec<String> {
            let re = Regex::new(re).expect("regex");
            filter(&ms, Some(&re)).iter().map(|m| m.name.clone()).collect()
        };
        assert_eq!(names("^alive$"), ["n1"]);
        assert_eq!(names("down|none"), ["n2", "n3"]);
        assert!(names("suspect").is_empty());
        assert_eq!(filter(&ms, None).len(), 3);
        let t = table(&filter(&ms, None)).render();
        assert!(t.starts_with("ID  NAME  STATE  RAFT   ADMIN           APPLIED  VERSION\n"), "{t}");
        assert!(t.contains("3   n3    none   voter  127.0.0.1:7948  -        -\n"), "{t}");
    }
}
