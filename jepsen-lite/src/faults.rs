//! Fault windows: when the nemesis had a fault in effect.
//!
//! A window opens at the invocation of a nemesis `start` (unless that start
//! failed: it definitely changed nothing) and closes at the completion of the
//! same process's next `stop`. A `stop` that never completed, or only with
//! `info`, leaves the window open to the end of the history: nothing says the
//! fault was healed. Windows of several nemesis processes may overlap.

use crate::history::Op;
use crate::operation::{History, Outcome};

/// One fault, from its start to its heal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultWindow {
    /// The `start` description.
    pub description: String,
    pub start_ns: u64,
    /// `None`: never (known to be) healed.
    pub end_ns: Option<u64>,
}

impl FaultWindow {
    /// True when `t` falls in the window.
    pub fn contains(&self, t: u64) -> bool {
        t >= self.start_ns && self.end_ns.is_none_or(|end| t <= end)
    }
}

/// The fault windows of a history, by start time.
pub fn fault_windows(history: &History) -> Vec<FaultWindow> {
    let mut windows = Vec::new();
    // process -> index of its open window
    let mut open = std::collections::HashMap::new();
    for op in &history.ops {
        match &op.op {
            Op::Start(description) if op.outcome != Outcome::Fail => {
                open.insert(op.process, windows.len());
                windows.push(FaultWindow {
                    description: description.clone(),
                    start_ns: op.invoke_ns,
                    end_ns: None,
                });
            }
            Op::Stop(_) => {
                if let Some(w) = open.remove(&op.process)
                    && op.outcome == Outcome::Ok
                {
                    windows[w].end_ns = op.complete_ns;
                }
            }
            _ => {}
        }
    }
    windows.sort_by_key(|w| w.start_ns);
    windows
}

/// When the last fault was healed: `Some(0)` without faults, `None` when a
/// fault is still open at the end.
pub fn healed_at(windows: &[FaultWindow]) -> Option<u64> {
    windows.iter().try_fold(0, |acc, w| w.end_ns.map(|end| acc.max(end)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Event;
    use crate::operation::PairingError;

    #[test]
    fn windows_run_from_start_invocation_to_stop_completion() -> Result<(), PairingError> {
        let h = History::from_events(vec![
            Event::invoke(9, "nemesis", Op::Start("kill n1".into()), 10),
            Event::ok(9, "nemesis", Op::Start("kill n1".into()), 12),
            Event::invoke(9, "nemesis", Op::Stop("restart n1".into()), 50),
            Event::ok(9, "nemesis", Op::Stop("restart n1".into()), 60),
            Event::invoke(9, "nemesis", Op::Start("partition".into()), 70),
            Event::fail(9, "nemesis", Op::Start("partition".into()), 71, "iptables failed"),
            Event::invoke(9, "nemesis", Op::Start("pause n2".into()), 80),
            Event::ok(9, "nemesis", Op::Start("pause n2".into()), 81),
            Event::invoke(9, "nemesis", Op::Stop("resume n2".into()), 90),
            Event::info(9, "nemesis", Op::Stop("resume n2".into()), 95, "timeout"),
        ])?;
        let w = fault_windows(&h);
        assert_eq!(w.len(), 2, "the failed start opens nothing: {w:?}");
        assert_eq!((w[0].start_ns, w[0].end_ns), (10, Some(60)));
        assert_eq!((w[1].start_ns, w[1].end_ns), (80, None), "an info stop heals nothing for sure");
        assert!(w[0].contains(10) && w[0].contains(60) && !w[0].contains(61));
        assert!(w[1].contains(u64::MAX));
        assert_eq!(healed_at(&w), None);
        assert_eq!(healed_at(&w[..1]), Some(60));
        assert_eq!(healed_at(&[]), Some(0));
        Ok(())
    }
}
