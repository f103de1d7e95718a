//! jepsen-lite: ferry's partition test suite.
//!
//! This crate holds the parts that need no cluster: the history format, the
//! checkers and the report. A run directory holds `history.jsonl` (written by
//! the workloads and the nemesis), and `check` turns it into `results.json`,
//! `summary.txt` and `report.html`.
//!
//! # Layout
//! - [`history`] — the event model, one [`history::Event`] per JSON line, and its writer.
//! - [`operation`] — events paired into [`operation::Operation`]s; reading a history file.
//! - [`faults`] — the nemesis's fault windows.
//! - [`checker`] — one property per file, and [`checker::check_all`].
//! - [`results`] — `results.json` and `summary.txt`.
//! - [`report`] — `report.html`.
//! - [`run_dir`] — a run directory's files, and checking one.

pub mod checker;
pub mod faults;
pub mod history;
pub mod operation;
pub mod report;
pub mod results;
pub mod run_dir;
