//! Catch-up after each heal: what the majority committed during a fault
//! reaches every node soon after the fault ends.
//!
//! **Property.** For each fault window `W` that was healed at `H` (the
//! completion of its `stop`), let `I` be the highest `applied_index` any
//! node reported in a status sample completed within `W`: a config change
//! the majority committed and applied while some nodes were cut off, down
//! or lagging. Every node ([`Config::nodes`], or every node sampled) must
//! report an applied index of at least `I` in a sample completed in
//! `[H, H + bound_ms]`.
//!
//! Not judged, per window and node: a window with no sample (the bootstrap
//! partition, before the samplers start), a `membership` window (it cuts
//! no node off), a fault of a kind [`crate::fault_shape`] does not know,
//! and a node that had not caught up when another fault began before the
//! bound (that fault may hold it back). The verdict is unknown when the run
//! ended before the bound without a node catching up (and none lagged);
//! with nothing to judge it is valid, and the summary says so.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{Report, Validity};
use crate::fault_shape::FaultShape;
use crate::faults::fault_windows;
use crate::history::Op;
use crate::operation::{History, Outcome, secs};

/// The checker's name in `results.json`.
pub const NAME: &str = "catch_up";

/// Most lagging nodes the summary lists.
const MAX_LISTED: usize = 10;

/// The bound (how long after a heal every node must have applied what the
/// majority applied during the fault) and the nodes that must catch up.
pub type Config = super::HealBound;

/// A node that did not catch up in time after a window.
#[derive(Debug, Clone, Serialize)]
pub struct Lag {
    pub window: String,
    pub healed_at_ns: u64,
    pub node: String,
    /// The index applied during the window.
    pub index: u64,
    /// The node's highest applied index within the bound (null: no sample).
    pub reached: Option<u64>,
    /// When it did reach the index, if ever (after the bound).
    pub caught_up_after_ms: Option<u64>,
}

/// The checker's verdict and figures.
#[derive(Debug, Clone, Serialize)]
pub struct CatchUpReport {
    pub valid: Validity,
    pub bound_ms: u64,
    /// (window, node) pairs judged, and the slowest catch-up among them.
    pub judged: usize,
    pub slowest_ms: Option<u64>,
    /// Pairs not judged because another fault began first.
    pub interrupted: usize,
    /// Pairs left undecided because the run ended first.
    pub undecided: usize,
    pub lagging: Vec<Lag>,
}

impl Report for CatchUpReport {
    fn validity(&self) -> Validity {
        self.valid
    }

    fn summary(&self) -> String {
        let slowest = self.slowest_ms.map_or_else(|| "-".to_string(), |ms| format!("{ms} ms"));
        let mut s = format!(
            "{} (window, node) pairs caught up within {} ms of the heal (slowest {slowest}); {} cut short by the next fault, {} undecided",
            self.judged - self.lagging.len(),
            self.bound_ms,
            self.interrupted,
            self.undecided
        );
        for l in self.lagging.iter().take(MAX_LISTED) {
            let after =
                l.caught_up_after_ms.map_or_else(|| "never".to_string(), |ms| format!("after {ms} ms"));
            s.push_str(&format!(
                "\n  {} healed at {}: {} reached {} of index {} within the bound ({after})",
                l.window,
                secs(l.healed_at_ns),
                l.node,
                l.reached.map_or_else(|| "nothing".to_string(), |i| i.to_string()),
                l.index
            ));
        }
        s
    }
}

/// Checks every healed window of `history`.
pub fn check(history: &History, config: &Config) -> CatchUpReport {
    // (complete time, node, applied index)
    let samples: Vec<(u64, &str, u64)> = history
        .ops
        .iter()
        .filter_map(|op| match (&op.op, op.outcome, op.complete_ns) {
            (Op::Status(Some(s)), Outcome::Ok, Some(t)) => s.applied_index.map(|i| (t, s.node.as_str(), i)),
            _ => None,
        })
        .collect();
    let nodes: BTreeSet<&str> = if config.nodes.is_empty() {
        samples.iter().map(|(_, n, _)| *n).collect()
    } else {
        config.nodes.iter().map(String::as_str).collect()
    };
    let bound = config.bound_ms.saturating_mul(1_000_000);
    let windows: Vec<_> = fault_windows(history)
        .into_iter()
        .filter(|w| {
            let s = FaultShape::parse(&w.description);
            s.known && s.nemesis != "membership"
        })
        .collect();
    let mut r = CatchUpReport {
        valid: Validity::Unknown,
        bound_ms: config.bound_ms,
        judged: 0,
        slowest_ms: None,
        interrupted: 0,
        undecided: 0,
        lagging: Vec::new(),
    };
    for w in &windows {
        let Some(healed) = w.end_ns else { continue };
        let in_window = samples.iter().filter(|(t, _, _)| (w.start_ns..=healed).contains(t));
        let Some(index) = in_window.map(|(_, _, i)| *i).max() else { continue };
        let deadline = healed.saturating_add(bound);
        let next_fault = windows.iter().map(|o| o.start_ns).filter(|&s| s > healed).min().unwrap_or(u64::MAX);
        for &node in &nodes {
            let mine = samples.iter().filter(|(t, n, _)| *n == node && *t >= healed);
            let caught = mine.clone().find(|(_, _, i)| *i >= index).map(|(t, _, _)| *t);
            match caught {
                Some(t) if t <= deadline => {
                    r.judged += 1;
                    let ms = (t - healed) / 1_000_000;
                    r.slowest_ms = Some(r.slowest_ms.map_or(ms, |s| s.max(ms)));
                }
                _ if next_fault <= deadline => r.interrupted += 1,
                _ if history.end_ns() < deadline => r.undecided += 1,
                caught => {
                    r.judged += 1;
                    let reached = mine.filter(|(t, _, _)| *t <= deadline).map(|(_, _, i)| *i).max();
                    r.lagging.push(Lag {
                        window: w.description.clone(),
                        healed_at_ns: healed,
                        node: node.to_string(),
                        index,
                        reached,
                        caught_up_after_ms: caught.map(|t| (t - healed) / 1_000_000),
                    });
                }
            }
        }
    }
    r.valid = if !r.lagging.is_empty() {
        Validity::Invalid
    } else if r.undecided > 0 {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Event, StatusSample};
    use crate::operation::PairingError;

    const MS: u64 = 1_000_000;

    /// n1 isolated from 100 to 200 ms; samples `(node, time ms, applied)`.
    fn history(samples: &[(&str, u64, u64)], next_fault_ms: Option<u64>) -> Result<History, PairingError> {
        let start = "partition-random-node n1 n1x[n2,n3] n2x[n1] n3x[n1]";
        let mut events = vec![
            Event::invoke(99, "nemesis", Op::Start(start.into()), 100 * MS),
            Event::ok(99, "nemesis", Op::Start(start.into()), 101 * MS),
            Event::invoke(99, "nemesis", Op::Stop(start.into()), 199 * MS),
            Event::ok(99, "nemesis", Op::Stop(start.into()), 200 * MS),
        ];
        if let Some(ms) = next_fault_ms {
            events.push(Event::invoke(99, "nemesis", Op::Start("kill n1".into()), ms * MS));
            events.push(Event::ok(99, "nemesis", Op::Start("kill n1".into()), ms * MS + MS));
        }
        for &(node, ms, applied) in samples {
            let s = StatusSample {
                node: node.to_string(),
                node_id: None,
                role: None,
                term: 1,
                leader_id: None,
                applied_index: Some(applied),
                table_digest: None,
            };
            let p = 100 + node.bytes().map(u32::from).sum::<u32>();
            events.push(Event::invoke(p, node, Op::Status(None), ms * MS - MS / 2));
            events.push(Event::ok(p, node, Op::Status(Some(s)), ms * MS));
        }
        events.sort_by_key(|e| e.time_ns);
        History::from_events(events)
    }

    fn config() -> Config {
        Config { bound_ms: 100, nodes: Vec::new() }
    }

    #[test]
    fn the_minority_applies_the_majoritys_change_soon_after_the_heal() -> Result<(), PairingError> {
        let h =
            history(&[("n1", 150, 5), ("n2", 150, 9), ("n1", 230, 9), ("n2", 230, 9), ("n1", 500, 9)], None)?;
        let r = check(&h, &config());
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
        assert_eq!((r.judged, r.slowest_ms), (2, Some(30)));
        Ok(())
    }

    /// The violation: n1 stays at index 5 past the bound.
    #[test]
    fn a_minority_still_behind_after_the_bound_is_invalid() -> Result<(), PairingError> {
        let h =
            history(&[("n1", 150, 5), ("n2", 150, 9), ("n1", 250, 5), ("n2", 250, 9), ("n1", 400, 9)], None)?;
        let r = check(&h, &config());
        assert_eq!(r.valid, Validity::Invalid, "{}", r.summary());
        assert!(
            r.summary().contains("n1 reached 5 of index 9 within the bound (after 200 ms)"),
            "{}",
            r.summary()
        );
        Ok(())
    }

    #[test]
    fn another_fault_before_the_bound_or_the_end_of_the_run_leaves_it_undecided() -> Result<(), PairingError>
    {
        let samples = [("n1", 150, 5), ("n2", 150, 9), ("n1", 250, 5), ("n2", 250, 9), ("n1", 400, 5)];
        let r = check(&history(&samples, Some(260))?, &config());
        assert_eq!(
            (r.valid, r.interrupted),
            (Validity::Valid, 1),
            "n2 is judged, n1 interrupted: {}",
            r.summary()
        );
        let r = check(&history(&samples[..4], None)?, &config());
        assert_eq!((r.valid, r.undecided), (Validity::Unknown, 1), "{}", r.summary());
        Ok(())
    }

    #[test]
    fn membership_windows_and_windows_without_samples_are_not_judged() -> Result<(), PairingError> {
        let h = history(&[("n1", 250, 5), ("n1", 600, 5)], None)?;
        let r = check(&h, &config());
        assert_eq!((r.valid, r.judged), (Validity::Valid, 0), "no sample in the window: {}", r.summary());
        // The same lagging samples under a membership window.
        let h = history(&[("n1", 150, 5), ("n2", 150, 9), ("n1", 600, 5)], None)?;
        let events: Vec<_> = h
            .events
            .iter()
            .cloned()
            .map(|mut e| {
                if let Op::Start(d) | Op::Stop(d) = &mut e.op {
                    *d = "membership join n6, then leave".into();
                }
                e
            })
            .collect();
        let r = check(&History::from_events(events)?, &config());
        assert_eq!((r.valid, r.judged), (Validity::Valid, 0), "{}", r.summary());
        Ok(())
    }
}
