//! `ferryctl snapshot save | inspect | restore`: backups of the replicated
//! config (README, "Backup and disaster recovery").

use std::path::PathBuf;
use std::time::Duration;

use ferry_client::http::RawRequest;
use ferry_client::snapshot::{Snapshot, SnapshotError, write_file_atomic};

use crate::ctx::Ctx;
use crate::out::{Exit, Failure, human, now_ms, print_pairs};

#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCmd {
    /// Saves a snapshot of the cluster's config (routes, chaos policies,
    /// index, cluster id) to FILE, verified, written atomically. With
    /// --stale, from the answering node's own state (a cluster without a
    /// quorum).
    Save { file: PathBuf },
    /// Verifies FILE's checksum and shows what it holds.
    Inspect { file: PathBuf },
    /// Replaces the live cluster's whole config with FILE's, as one
    /// change: only if the config index is still N (--cas), or whatever
    /// it is (--force).
    Restore {
        file: PathBuf,
        /// Only if the cluster's config index is N (see `status`).
        #[arg(long, value_name = "N", conflicts_with = "force", required_unless_present = "force")]
        cas: Option<u64>,
        /// Whatever the cluster's config is now.
        #[arg(long)]
        force: bool,
    },
}

pub async fn run(ctx: &Ctx, cmd: SnapshotCmd) -> Result<(), Failure> {
    match cmd {
        SnapshotCmd::Save { file } => {
            let path = if ctx.stale { "/v1/snapshot?consistency=stale" } else { "/v1/snapshot" };
            let r = ctx.send(&RawRequest::new("GET", path)).await?;
            // Never write what does not verify.
            let snap = Snapshot::from_bytes(&r.body).map_err(|e| bad_snapshot(&format!("{}", r.addr), &e))?;
            write_file_atomic(&file, &r.body)
                .map_err(|e| Failure::new(Exit::Error, format!("cannot write {}: {e}", file.display())))?;
            if ctx.json() {
                ctx.print_body(&r);
            } else {
                println!(
                    "saved {}: index {}, {} routes, {} chaos policies, from {} ({})",
                    file.display(),
                    snap.index,
                    snap.routes.len(),
                    snap.chaos.len(),
                    snap.node,
                    r.addr
                );
            }
            Ok(())
        }
        SnapshotCmd::Inspect { file } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| Failure::new(Exit::Usage, format!("cannot read {}: {e}", file.display())))?;
            let snap =
                Snapshot::from_bytes(&bytes).map_err(|e| bad_snapshot(&file.display().to_string(), &e))?;
            if ctx.json() {
                println!("{}", crate::ctx::pretty(&bytes));
                return Ok(());
            }
            print_pairs(&inspect_pairs(&snap, now_ms()));
            Ok(())
        }
        SnapshotCmd::Restore { file, cas, force } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| Failure::new(Exit::Usage, format!("cannot read {}: {e}", file.display())))?;
            // Checked here first: a damaged file is not sent at all.
            Snapshot::from_bytes(&bytes).map_err(|e| bad_snapshot(&file.display().to_string(), &e))?;
            let mut query = Vec::new();
            if let Some(c) = cas {
                query.push(format!("cas={c}"));
            }
            if force {
                query.push("force=true".to_string());
            }
            let req =
                RawRequest::new("POST", format!("/v1/snapshot/restore?{}", query.join("&"))).body(bytes);
            let r = ctx.send(&req).await?;
            ctx.wrote(&format!("restored {}", file.display()), &r).await.map(|_| ())
        }
    }
}

fn bad_snapshot(source: &str, e: &SnapshotError) -> Failure {
    let mut lines = vec![format!("{source}: not a usable snapshot: {e}")];
    lines.extend(e.fields().iter().map(ToString::to_string));
    Failure { exit: Exit::Usage, lines }
}

/// The lines `snapshot inspect` prints.
pub fn inspect_pairs(s: &Snapshot, now_ms: u64) -> Vec<(&'static str, String)> {
    let age = Duration::from_millis(now_ms.saturating_sub(s.taken_at_ms));
    let names = |v: Vec<String>| if v.is_empty() { "-".to_string() } else { v.join(", ") };
    vec![
        ("cluster", s.cluster_id.clone()),
        ("taken on", s.node.clone()),
        ("taken", format!("{} ago (unix ms {})", human(age), s.taken_at_ms)),
        ("index", s.index.to_string()),
        ("checksum", s.checksum().unwrap_or_else(|e| format!("({e})"))),
        (
            "routes",
            format!("{}: {}", s.routes.len(), names(s.routes.iter().map(|r| r.route.name.clone()).collect())),
        ),
        (
            "chaos",
            format!("{}: {}", s.chaos.len(), names(s.chaos.iter().map(|p| p.policy.name.clone()).collect())),
        ),
    ]
}
