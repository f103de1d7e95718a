//! jepsen-lite: ferry's partition test suite.
//!
//! `test` runs real `ferryd` processes, each in its own network namespace,
//! under a seeded schedule of partitions, kills, pauses and membership
//! changes, while workloads record every operation; `check` turns a run
//! directory's `history.jsonl` into `results.json`, `summary.txt` and
//! `report.html`.
//!
//! # Layout
//! - [`history`] — the event model, one [`history::Event`] per JSON line, and its writer.
//! - [`operation`] — events paired into [`operation::Operation`]s; reading a history file.
//! - [`retries`] — the attempts of one request id seen as one write.
//! - [`faults`] — the nemesis's fault windows.
//! - [`fault_shape`] — which nodes a fault window cut off or took down, from its description.
//! - [`checker`] — one property per file, and [`checker::check_all`].
//! - [`results`] — `results.json` and `summary.txt`.
//! - [`report`] — `report.html`.
//! - [`run_dir`] — a run directory's files, and checking one.
//! - [`run`] — `jepsen-lite test`: one run, start to teardown.
//! - [`net`] — the network namespaces, the bridge, partitions (iptables).
//! - [`procs`] — the `ferryd` processes: start, kill, pause, restart.
//! - [`nemesis`] — the nemeses, partition shapes and the seeded schedule.
//! - [`workload`] — the clients (register, set, traffic) and the sampler.
//! - [`backend`] — the echo backend run in every node namespace.
//! - [`powerfs`] — the in-memory FUSE disks of the `power-loss` nemesis.

pub mod backend;
pub mod checker;
pub mod fault_shape;
pub mod faults;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod operation;
pub mod powerfs;
pub mod procs;
pub mod report;
pub mod results;
pub mod retries;
pub mod run;
pub mod run_dir;
pub mod workload;
