//! `ferryctl chaos list | get | put | delete | add`.

use std::path::PathBuf;
use std::time::Duration;

use ferry_client::api::ChaosPolicyStatus;
use ferry_client::chaos::{ChaosPolicy, ChaosScope, Direction, Toxic, ToxicKind};
use ferry_client::http::RawRequest;

use crate::ctx::{Ctx, decode};
use crate::file;
use crate::out::{Exit, Failure, Table, human, now_ms, parse_duration, print_pairs};
use crate::route::{serde_plain, write};

#[derive(Debug, clap::Subcommand)]
pub enum ChaosCmd {
    /// Every chaos policy.
    List,
    /// One policy, and the nodes that apply it.
    Get { name: String },
    /// Writes every policy of a JSON FILE (one policy or an array; `-`
    /// reads stdin), one PUT each, after checking them all.
    Put {
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Only if the policy's revision is N (0: must not exist). One policy only.
        #[arg(long, value_name = "N")]
        cas: Option<u64>,
    },
    /// Deletes a policy.
    Delete {
        name: String,
        /// Only if the policy's revision is N.
        #[arg(long, value_name = "N")]
        cas: Option<u64>,
    },
    /// Writes a policy from flags: `chaos add slow-web --route web
    /// --latency 100ms --jitter 10ms --ttl 5m`.
    Add(Box<AddArgs>),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The policy's name.
    name: String,
    /// Routes it applies to (repeat; none: every route).
    #[arg(long = "route", value_name = "ROUTE")]
    routes: Vec<String>,
    /// Nodes it applies on (repeat; none: every node).
    #[arg(long = "node", value_name = "NODE")]
    nodes: Vec<String>,
    /// Backends whose connections it hits (repeat; none: all).
    #[arg(long = "backend", value_name = "BACKEND")]
    backends: Vec<String>,
    /// Latency toxic: delay each chunk this long.
    #[arg(long, value_parser = parse_duration)]
    latency: Option<Duration>,
    /// With --latency: plus or minus this much.
    #[arg(long, value_parser = parse_duration, requires = "latency")]
    jitter: Option<Duration>,
    /// Bandwidth toxic: at most this many KB/s (1,000 bytes per second).
    #[arg(long, value_name = "KBPS")]
    bandwidth: Option<u64>,
    /// Timeout toxic: stop all data and close after this long (0s: hold
    /// the connection without data).
    #[arg(long = "toxic-timeout", value_parser = parse_duration)]
    toxic_timeout: Option<Duration>,
    /// Reset-peer toxic: reset the connection (TCP RST) after this long.
    #[arg(long, value_parser = parse_duration)]
    reset: Option<Duration>,
    /// Refuse toxic: close new connections right after accept.
    #[arg(long)]
    refuse: bool,
    /// Slow-close toxic: delay the close by this long.
    #[arg(long = "slow-close", value_parser = parse_duration)]
    slow_close: Option<Duration>,
    /// Limit-data toxic: close after this many bytes.
    #[arg(long = "limit-data", value_name = "BYTES")]
    limit_data: Option<u64>,
    /// Connect-delay toxic: hold each new connection this long before
    /// connecting to its backend.
    #[arg(long = "connect-delay", value_parser = parse_duration)]
    connect_delay: Option<Duration>,
    /// Slicer toxic: cut data into slices of about this many bytes.
    #[arg(long, value_name = "BYTES")]
    slicer: Option<u64>,
    /// With --slicer: slices vary by up to this many bytes.
    #[arg(long = "slicer-variation", value_name = "BYTES", requires = "slicer")]
    slicer_variation: Option<u64>,
    /// With --slicer: this long between slices.
    #[arg(long = "slicer-delay", value_parser = parse_duration, requires = "slicer")]
    slicer_delay: Option<Duration>,
    /// The way of the connection every toxic acts on.
    #[arg(long, value_enum, default_value = "downstream")]
    direction: DirectionArg,
    /// Share of connections hit, 0.0 to 1.0.
    #[arg(long, default_value_t = 1.0)]
    toxicity: f64,
    /// Seed of the policy's random decisions.
    #[arg(long)]
    seed: Option<u64>,
    /// The policy stops applying after this long (from now, by this
    /// machine's clock).
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// Only if the policy's revision is N (0: must not exist).
    #[arg(long, value_name = "N")]
    cas: Option<u64>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DirectionArg {
    Upstream,
    Downstream,
    Both,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl AddArgs {
    /// The policy the flags describe (not yet validated); `now_ms` is the
    /// Unix time `--ttl` counts from.
    fn policy(&self, now_ms: u64) -> Result<ChaosPolicy, Failure> {
        let mut kinds = Vec::new();
        if let Some(l) = self.latency {
            kinds.push(ToxicKind::Latency { latency_ms: ms(l), jitter_ms: self.jitter.map_or(0, ms) });
        }
        if let Some(rate_kbps) = self.bandwidth {
            kinds.push(ToxicKind::Bandwidth { rate_kbps });
        }
        if let Some(t) = self.toxic_timeout {
            kinds.push(ToxicKind::Timeout { timeout_ms: ms(t) });
        }
        if let Some(t) = self.reset {
            kinds.push(ToxicKind::ResetPeer { timeout_ms: ms(t) });
        }
        if self.refuse {
            kinds.push(ToxicKind::Refuse {});
        }
        if let Some(d) = self.slow_close {
            kinds.push(ToxicKind::SlowClose { delay_ms: ms(d) });
        }
        if let Some(bytes) = self.limit_data {
            kinds.push(ToxicKind::LimitData { bytes });
        }
        if let Some(d) = self.connect_delay {
            kinds.push(ToxicKind::ConnectDelay { delay_ms: ms(d) });
        }
        if let Some(average_size) = self.slicer {
            let delay_us = self.slicer_delay.map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
            kinds.push(ToxicKind::Slicer {
                average_size,
                size_variation: self.slicer_variation.unwrap_or(0),
                delay_us,
            });
        }
        if kinds.is_empty() {
            return Err(Failure::new(
                Exit::Usage,
                "give at least one toxic: --latency, --bandwidth, --toxic-timeout, --reset, --refuse, \
                 --slow-close, --limit-data, --connect-delay or --slicer",
            ));
        }
        let direction = match self.direction {
            DirectionArg::Upstream => Direction::Upstream,
            DirectionArg::Downstream => Direction::Downstream,
            DirectionArg::Both => Direction::Both,
        };
        Ok(ChaosPolicy {
            name: self.name.clone(),
            toxics: kinds.into_iter().map(|kind| Toxic { direction, kind }).collect(),
            scope: ChaosScope {
                routes: self.routes.clone(),
                nodes: self.nodes.clone(),
                backends: self.backends.clone(),
            },
            toxicity: self.toxicity,
            expires_at: self.ttl.map(|t| now_ms.saturating_add(ms(t))),
            seed: self.seed,
        })
    }
}

fn cas(c: Option<u64>) -> String {
    c.map(|c| format!("?cas={c}")).unwrap_or_default()
}

async fn put(ctx: &Ctx, p: &ChaosPolicy, c: Option<u64>) -> Result<(), Failure> {
    let body = serde_json::to_vec(p).map_err(|e| Failure::new(Exit::Error, e.to_string()))?;
    let req = RawRequest::new("PUT", format!("/v1/chaos/{}{}", p.name, cas(c))).body(body);
    write(ctx, &format!("chaos policy {}", p.name), &req).await.map(|_| ())
}

pub async fn run(ctx: &Ctx, cmd: ChaosCmd) -> Result<(), Failure> {
    match cmd {
        ChaosCmd::List => {
            let r = ctx.get("/v1/chaos", true).await?;
            if ctx.json() {
                ctx.print_body(&r);
            } else {
                list_table(&decode::<Vec<ChaosPolicyStatus>>(&r)?, now_ms()).print();
            }
        }
        ChaosCmd::Get { name } => {
            file::check_name("name", &name)?;
            let r = ctx.get(&format!("/v1/chaos/{name}"), true).await?;
            if ctx.json() {
                ctx.print_body(&r);
            } else {
                print_pairs(&pairs(&decode(&r)?, now_ms()));
            }
        }
        ChaosCmd::Put { file: path, cas: c } => {
            let (text, _) = file::read(&path)?;
            let policies = file::policies(&text)?;
            if c.is_some() && policies.len() > 1 {
                return Err(Failure::new(
                    Exit::Usage,
                    format!("--cas applies to one policy; {} holds {}", path.display(), policies.len()),
                ));
            }
            for p in &policies {
                put(ctx, p, c).await?;
            }
        }
        ChaosCmd::Delete { name, cas: c } => {
            file::check_name("name", &name)?;
            let req = RawRequest::new("DELETE", format!("/v1/chaos/{name}{}", cas(c)));
            write(ctx, &format!("chaos policy {name} deleted"), &req).await?;
        }
        ChaosCmd::Add(a) => {
            let p = a.policy(now_ms())?;
            let problems = p.validate("policy");
            if !problems.is_empty() {
                return Err(Failure::fields(Exit::Usage, &problems));
            }
            put(ctx, &p, a.cas).await?;
        }
    }
    Ok(())
}

/// One toxic, short: `latency 100ms±10ms`, `bandwidth 100KB/s`.
pub fn toxic(t: &Toxic) -> String {
    let d = |ms: u64| human(Duration::from_millis(ms));
    let what = match &t.kind {
        ToxicKind::Latency { latency_ms, jitter_ms: 0 } => format!("latency {}", d(*latency_ms)),
        ToxicKind::Latency { latency_ms, jitter_ms } => {
            format!("latency {}±{}", d(*latency_ms), d(*jitter_ms))
        }
        ToxicKind::Bandwidth { rate_kbps } => format!("bandwidth {rate_kbps}KB/s"),
        ToxicKind::SlowClose { delay_ms } => format!("slow_close {}", d(*delay_ms)),
        ToxicKind::Timeout { timeout_ms } => format!("timeout {}", d(*timeout_ms)),
        ToxicKind::ResetPeer { timeout_ms } => format!("reset_peer {}", d(*timeout_ms)),
        ToxicKind::Slicer { average_size, size_variation, delay_us } => {
            format!("slicer {average_size}±{size_variation}B/{}", human(Duration::from_micros(*delay_us)))
        }
        ToxicKind::LimitData { bytes } => format!("limit_data {bytes}B"),
        ToxicKind::Refuse {} => "refuse".to_string(),
        ToxicKind::ConnectDelay { delay_ms } => format!("connect_delay {}", d(*delay_ms)),
    };
    match t.direction {
        Direction::Downstream => what,
        other => format!("{what} ({})", serde_plain(&other)),
    }
}

fn scope(s: &ChaosScope) -> String {
    let all = |v: &[String], what: &str| if v.is_empty() { format!("all {what}") } else { v.join(",") };
    let mut out = format!("routes {}; nodes {}", all(&s.routes, "routes"), all(&s.nodes, "nodes"));
    if !s.backends.is_empty() {
        out.push_str(&format!("; backends {}", s.backends.join(",")));
    }
    out
}

/// `in 4m12s`, `expired 3s ago` or `never`.
fn expiry(expires_at: Option<u64>, now_ms: u64) -> String {
    match expires_at {
        None => "never".to_string(),
        Some(at) if at > now_ms => format!("in {}", human(Duration::from_millis(at - now_ms))),
        Some(at) => format!("expired {} ago", human(Duration::from_millis(now_ms - at))),
    }
}

pub fn list_table(policies: &[ChaosPolicyStatus], now_ms: u64) -> Table {
    let mut t = Table::new(&["NAME", "REVISION", "TOXICS", "TOXICITY", "SCOPE", "EXPIRES"]);
    for p in policies {
        let toxics: Vec<String> = p.policy.toxics.iter().map(toxic).collect();
        t.row(vec![
            p.policy.name.clone(),
            p.revision.to_string(),
            toxics.join(", "),
            p.policy.toxicity.to_string(),
            scope(&p.policy.scope),
            expiry(p.policy.expires_at, now_ms),
        ]);
    }
    t
}

pub fn pairs(p: &ChaosPolicyStatus, now_ms: u64) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("name", p.policy.name.clone()),
        ("revision", p.revision.to_string()),
        ("toxicity", p.policy.toxicity.to_string()),
        ("scope", scope(&p.policy.scope)),
        ("expires", expiry(p.policy.expires_at, now_ms)),
        ("seed", p.seed.to_string()),
    ];
    for t in &p.policy.toxics {
        out.push(("toxic", toxic(t)));
    }
    if let Some(on) = &p.in_effect_on {
        let on = if on.is_empty() { "no node".to_string() } else { on.join(", ") };
        out.push(("in effect on", on));
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::Cli;

    fn add(args: &[&str]) -> AddArgs {
        let cli = Cli::try_parse_from(["ferryctl", "chaos", "add"].iter().chain(args)).expect("parses");
        match cli.cmd {
            crate::Cmd::Chaos(ChaosCmd::Add(a)) => *a,
            other => panic!("not chaos add: {other:?}"),
        }
    }

    #[test]
    fn the_quick_form_builds_the_policy_and_ttl_becomes_unix_ms() {
        let a = add(&["slow-web", "--route", "web", "--latency", "100ms", "--jitter", "10ms", "--ttl", "5m"]);
        let p = a.policy(1_000_000).expect("policy");
        assert_eq!(p.name, "slow-web");
        assert_eq!(p.scope.routes, ["web"]);
        assert_eq!(
            p.toxics,
            [Toxic {
                direction: Direction::Downstream,
                kind: ToxicKind::Latency { latency_ms: 100, jitter_ms: 10 }
            }]
        );
        assert_eq!(p.expires_at, Some(1_000_000 + 300_000));
        assert!(p.validate("policy").is_empty());

        let a = add(&[
            "x",
            "--refuse",
            "--bandwidth",
            "50",
            "--slicer",
            "64",
            "--slicer-delay",
            "1ms",
            "--direction",
            "both",
            "--toxicity",
            "0.5",
            "--seed",
            "7",
            "--node",
            "n1",
            "--backend",
            "b",
        ]);
        let p = a.policy(0).expect("policy");
        let kinds: Vec<&str> = p.toxics.iter().map(|t| t.kind.name()).collect();
        assert_eq!(kinds, ["bandwidth", "refuse", "slicer"]);
        assert!(p.toxics.iter().all(|t| t.direction == Direction::Both));
        assert_eq!((p.toxicity, p.seed, p.expires_at), (0.5, Some(7), None));
        assert_eq!(
            p.toxics[2].kind,
            ToxicKind::Slicer { average_size: 64, size_variation: 0, delay_us: 1000 }
        );

        let none = add(&["x", "--route", "web"]).policy(0).expect_err("no toxic");
        assert_eq!(none.exit, Exit::Usage);
        let bad = add(&["x", "--bandwidth", "0", "--toxicity", "2"]).policy(0).expect("built");
        let paths: Vec<String> = bad.validate("policy").into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["policy.toxics[0].kind.bandwidth.rate_kbps", "policy.toxicity"]);
        assert!(Cli::try_parse_from(["ferryctl", "chaos", "add", "x", "--jitter", "1ms"]).is_err());
    }

    #[test]
    fn policies_print_toxics_scope_and_expiry_in_human_units() {
        let p: ChaosPolicyStatus = serde_json::from_value(serde_json::json!({
            "policy": {"name": "slow", "scope": {"routes": ["web"]}, "expires_at": 10_000,
                       "toxics": [{"kind": {"latency": {"latency_ms": 100, "jitter_ms": 10}}},
                                  {"direction": "upstream", "kind": {"bandwidth": {"rate_kbps": 5}}}]},
            "revision": 9, "seed": 42
        }))
        .expect("policy");
        let t = list_table(std::slice::from_ref(&p), 7_500).render();
        assert!(t.contains("slow  9         latency 100ms±10ms, bandwidth 5KB/s (upstream)  1         routes web; nodes all nodes  in 2s"), "{t}");
        assert_eq!(expiry(Some(1000), 4000), "expired 3s ago");
    }
}
