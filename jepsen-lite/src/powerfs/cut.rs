//! The `power-loss` fault: every node dies at once, as in a power cut of
//! the whole cluster, and its disk loses what was not synced.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};

use super::disks::Disks;
use crate::procs::Procs;

/// How long a cut disk stays off before it is powered on again, so that
/// requests the killed nodes had in flight meet a dead disk (`EIO`), not
/// the one the restarted nodes will find.
const DARK: Duration = Duration::from_millis(300);

/// The cut comes this long (seeded, uniform) after its fault window opens,
/// so that it lands in the middle of the write load, at a different phase
/// of the nodes' sync timers each time.
pub const LEAD_MS: std::ops::RangeInclusive<u64> = 1_000..=2_000;

/// After `lead`, `kill -9` every running node of `nodes`, then cut their
/// disks' power and, after [`DARK`], power the disks on again. The nodes
/// stay down: restarting them is the heal.
pub async fn cut_power(procs: &Mutex<Procs>, disks: &Disks, nodes: &[usize], lead: Duration) -> Result<()> {
    tokio::time::sleep(lead).await;
    {
        let mut p = procs.lock().map_err(|_| anyhow::anyhow!("lock poisoned"))?;
        for &i in nodes {
            if p.is_running(i) {
                p.kill9(i)?;
            }
        }
    }
    disks.cut(nodes).context("cutting the power")?;
    tokio::time::sleep(DARK).await;
    disks.power_on(nodes).context("powering the disks on")?;
    Ok(())
}
