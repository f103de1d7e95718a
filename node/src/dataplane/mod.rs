//! The data plane: listeners, backend selection, failover, health and the
//! byte copy. It reads only the immutable [`table::RoutingTable`] the control
//! plane publishes, and per-backend atomics; it never awaits the control plane.
//!
//! - [`table`]: the routing table and its pure build function.
//! - [`balance`]: candidate selection (hash ring, smooth WRR, …).
//! - [`backend`]: per-backend live state, passive ejection.
//! - [`checker`]: active TCP health checks.
//! - [`listener`]: accept loops and their reconciliation;
//!   [`listen_failures`]: the routes this node could not bind, and why.
//! - [`peers`]: the peer directory: this node and its peers' state.
//! - [`proxy`]: one connection: connect with failover, then copy.
//! - [`hop`]: peer hops to backends another node owns, both sides.
//! - [`pipeline`]: what both share: the backend connect and its record,
//!   and the connection's tail (counters, copy, how it ended).
//! - [`chaos`]: chaos policies on live traffic.
//! - [`explain`]: the choice shown (`explain`) and a route change measured
//!   (`dry-run`), by the functions that make it.
//! - [`proxy_v2`]: the PROXY protocol v2 header that opens a peer hop.
//! - [`copy`]: the bidirectional byte copy; [`splice`]: its zero-copy pump.
//! - [`clock`]: the millisecond clock ejection deadlines use.
//! - [`stop`]: the hard stop of a listener's connections, cheap to wait on;
//!   [`lazy`]: polling a future only when its answer can have changed.
//! - [`workers`]: thread-per-core data-plane runtimes.

pub mod backend;
pub mod balance;
pub mod chaos;
pub mod checker;
pub mod clock;
pub mod copy;
pub mod explain;
pub mod hop;
pub(crate) mod lazy;
pub mod listen_failures;
pub mod listener;
pub mod peers;
pub mod pipeline;
pub mod proxy;
pub mod proxy_v2;
pub mod splice;
pub mod stop;
pub mod table;
pub mod workers;
