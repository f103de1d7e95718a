//! jepsen-lite: ferry's partition test suite.
//!
//! This crate holds the parts that need no cluster: the history format, the
//! checkers and the report.
//!
//! # Layout
//! - [`history`] — the event model, one [`history::Event`] per JSON line, and its writer.
//! - [`operation`] — events paired into [`operation::Operation`]s; reading a history file.
//! - [`faults`] — the nemesis's fault windows.
//! - [`checker`] — one property per file, and [`checker::check_all`].

pub mod checker;
pub mod faults;
pub mod history;
pub mod operation;
