//! The node's Prometheus registry and metric families.
//!
//! [`Metrics`] is cheap to clone (every family is a handle onto shared
//! state), so one instance is created at startup and cloned into the data
//! plane, the health checker and the admin API. Metric names are given in
//! full (the registry has no namespace prefix).

use std::collections::HashMap;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Values of the `result` label of `ferry_proxy_connections_total`.
pub const CONNECT_RESULTS: [&str; 4] = ["ok", "refused", "timeout", "error"];

/// Values of the `result` label of `ferry_health_checks_total`.
pub const CHECK_RESULTS: [&str; 2] = ["pass", "fail"];

/// Values of the `direction` label of `ferry_proxy_bytes_total`:
/// `upstream` is client→backend, `downstream` is backend→client.
pub const DIRECTIONS: [&str; 2] = ["upstream", "downstream"];

/// Values of the `result` label of `ferry_config_reloads_total`.
pub const RELOAD_RESULTS: [&str; 2] = ["ok", "error"];

/// Values of the `reason` label of `ferry_cluster_messages_refused_total`.
pub const REFUSED_REASONS: [&str; 4] = ["cluster_id", "version", "malformed", "oversized"];

/// Values of the `change` label of `ferry_autopilot_changes_total`.
pub const AUTOPILOT_CHANGES: [&str; 3] = ["add_learner", "promote", "remove"];

/// Buckets of `ferry_proxy_connect_seconds`, suited to connect latency on a LAN.
pub const CONNECT_BUCKETS: [f64; 15] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// The node's registry and every metric family it exports.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// The registry all families below are registered in.
    pub registry: Registry,
    /// `ferry_proxy_connections_total{route,backend,result}`; result is one of
    /// [`CONNECT_RESULTS`].
    pub proxy_connections_total: IntCounterVec,
    /// `ferry_proxy_active_connections{route}`
    pub proxy_active_connections: IntGaugeVec,
    /// `ferry_worker_connections{worker}`: client connections each
    /// data-plane worker thread serves.
    pub worker_connections: IntGaugeVec,
    /// `ferry_proxy_bytes_total{route,direction}`; direction is one of [`DIRECTIONS`].
    pub proxy_bytes_total: IntCounterVec,
    /// `ferry_proxy_connect_seconds{route}`
    pub proxy_connect_seconds: HistogramVec,
    /// `ferry_proxy_failovers_total{route}`
    pub proxy_failovers_total: IntCounterVec,
    /// `ferry_proxy_rejected_total{route,reason}`
    pub proxy_rejected_total: IntCounterVec,
    /// `ferry_proxy_idle_timeouts_total{route}`
    pub proxy_idle_timeouts_total: IntCounterVec,
    /// `ferry_chaos_connections_total{policy,route}`: connections a chaos
    /// policy hit on this node.
    pub chaos_connections_total: IntCounterVec,
    /// `ferry_chaos_injected_delay_seconds`: delay chaos added to each
    /// chunk it held (latency, bandwidth, slicer) and to each connect.
    pub chaos_injected_delay_seconds: Histogram,
    /// `ferry_chaos_resets_total`: connections a `reset_peer` toxic reset.
    pub chaos_resets_total: IntCounter,
    /// `ferry_chaos_policies_active`: policies in effect on this node.
    pub chaos_policies_active: IntGauge,
    /// `ferry_backend_healthy{route,backend}` (1 healthy, 0 not)
    pub backend_healthy: IntGaugeVec,
    /// `ferry_backend_ejections_total{route,backend}`
    pub backend_ejections_total: IntCounterVec,
    /// `ferry_backend_resolve_failures_total{route,backend}`: failed lookups
    /// of the host name of a backend this node connects to.
    pub backend_resolve_failures_total: IntCounterVec,
    /// `ferry_backend_resolved_addresses{route,backend}`: addresses in use
    /// for such a backend (0: its name does not resolve).
    pub backend_resolved_addresses: IntGaugeVec,
    /// `ferry_health_checks_total{route,backend,result}`; result is one of [`CHECK_RESULTS`].
    pub health_checks_total: IntCounterVec,
    /// `ferry_config_reloads_total{result}` ("ok" / "error")
    pub config_reloads_total: IntCounterVec,
    /// `ferry_table_generation`
    pub table_generation: IntGauge,
    /// `ferry_route_bind_failures{route}`: 1 while this node cannot bind
    /// the route's listener (a cluster node keeps the route and retries),
    /// 0 while it listens.
    pub route_bind_failures: IntGaugeVec,
    /// `ferry_admin_requests_total{path,status}`; path is the matched route
    /// template, not the raw URI.
    pub admin_requests_total: IntCounterVec,
    /// `ferry_admin_connections`: admin API connections open now.
    pub admin_connections: IntGauge,
    /// `ferry_admin_connections_rejected_total{reason}`: slow or refused
    /// admin clients, by reason (`crate::admin::server::REJECT_REASONS`).
    pub admin_connections_rejected_total: IntCounterVec,
    /// `ferry_build_info{version, commit, protocol}`, always 1.
    pub build_info: IntGaugeVec,
    /// `ferry_raft_term`: the current Raft term (cluster mode).
    pub raft_term: IntGauge,
    /// `ferry_raft_leader_changes_total`: leader changes this node observed.
    pub raft_leader_changes_total: IntCounter,
    /// `ferry_raft_applied_index`: the last log index applied here.
    pub raft_applied_index: IntGauge,
    /// `ferry_raft_is_leader`: 1 on the leader.
    pub raft_is_leader: IntGauge,
    /// `ferry_raft_has_quorum`: 1 on a leader that heard from a majority of
    /// the voters within the contact timeout; 0 otherwise (followers too).
    pub raft_has_quorum: IntGauge,
    /// `ferry_raft_write_seconds`: admin writes, proposal to answer.
    pub raft_write_seconds: Histogram,
    /// `ferry_raft_log_sync_seconds`: each `fdatasync` of the Raft store
    /// after sled's flush (a batch of appends, a vote, a snapshot).
    pub raft_log_sync_seconds: Histogram,
    /// `ferry_raft_snapshots_total`: snapshots this node built or installed.
    pub raft_snapshots_total: IntCounter,
    /// `ferry_raft_write_proposals_total`: log entries of client writes
    /// this node committed as leader; `ferry_raft_proposed_writes_total`
    /// over it is the mean batch size.
    pub raft_write_proposals_total: IntCounter,
    /// `ferry_raft_proposed_writes_total`: client writes in those entries.
    pub raft_proposed_writes_total: IntCounter,
    /// `ferry_raft_read_rounds_total`: read-index rounds (one leadership
    /// confirmation each) this node ran.
    pub raft_read_rounds_total: IntCounter,
    /// `ferry_raft_round_reads_total`: linearizable reads those rounds
    /// answered.
    pub raft_round_reads_total: IntCounter,
    /// `ferry_raft_writes_past_deadline_total`: client writes this node, as
    /// leader, refused to propose because their deadline had passed.
    pub raft_writes_past_deadline_total: IntCounter,
    /// `ferry_raft_writes_without_quorum_total`: client writes this node,
    /// as leader, refused to propose because it had had no majority's
    /// acknowledgement for the quorum timeout.
    pub raft_writes_without_quorum_total: IntCounter,
    /// `ferry_cluster_messages_refused_total{reason}`: cluster-port frames
    /// refused (foreign cluster id, other version, malformed, oversized).
    pub cluster_refused_total: IntCounterVec,
    /// `ferry_gossip_members{state}`: members this node sees in each state.
    pub gossip_members: IntGaugeVec,
    /// `ferry_gossip_packets_total{direction,result}`.
    pub gossip_packets_total: IntCounterVec,
    /// `ferry_gossip_probe_failures_total`: probes that got no ack.
    pub gossip_probe_failures_total: IntCounter,
    /// `ferry_autopilot_changes_total{change}`: membership changes made by
    /// this node's autopilot (add_learner, promote, remove_dead).
    pub autopilot_changes_total: IntCounterVec,
    /// `ferry_peer_hops_total{direction,result}`: peer hops sent (`out`) and
    /// received (`in`); result is `ok` or a hop status name (see
    /// `cluster::hop::HopStatus`), plus `peer_refused`, `peer_timeout`,
    /// `peer_error` (out) and `malformed` (in).
    pub peer_hops_total: IntCounterVec,
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let v = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(v.clone()))?;
    Ok(v)
}

fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    let v = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(v.clone()))?;
    Ok(v)
}

/// Removes one exact series; a series that does not exist is not an error.
fn remove_exact<T: MetricVecBuilder>(vec: &MetricVec<T>, values: &[&str]) {
    // The only possible errors are "not found" and a label-count mismatch
    // (a programming error caught by the unit tests); both are ignored.
    let _ = vec.remove_label_values(values);
}

/// Removes every series of `vec` whose labels include all of `matchers`
/// (name, value), whatever its other labels are. Used where the other label
/// values are open-ended (backend names, rejection reasons).
fn remove_matching<T: MetricVecBuilder>(vec: &MetricVec<T>, matchers: &[(&str, &str)]) {
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: HashMap<&str, &str> =
                metric.get_label().iter().map(|lp| (lp.name(), lp.value())).collect();
            if matchers.iter().all(|(name, value)| labels.get(name) == Some(value)) {
                // No const labels are used, so the collected label pairs are
                // exactly the variable labels `remove` expects.
                let _ = vec.remove(&labels);
            }
        }
    }
}

impl Metrics {
    /// Creates every family and registers it in a fresh registry.
    ///
    /// Registration of these fixed families cannot fail in practice (the
    /// names are valid and distinct); the `Result` is there so callers can
    /// use `?` instead of unwrapping.
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Registry::new();

        let proxy_connections_total = counter_vec(
            &r,
            "ferry_proxy_connections_total",
            "Backend connection attempts by result (ok, refused, timeout, error)",
            &["route", "backend", "result"],
        )?;
        let proxy_active_connections = gauge_vec(
            &r,
            "ferry_proxy_active_connections",
            "Client connections currently being proxied",
            &["route"],
        )?;
        let worker_connections = gauge_vec(
            &r,
            "ferry_worker_connections",
            "Client connections each data-plane worker thread serves",
            &["worker"],
        )?;
        let proxy_bytes_total = counter_vec(
            &r,
            "ferry_proxy_bytes_total",
            "Bytes proxied (upstream: client to backend, downstream: backend to client)",
            &["route", "direction"],
        )?;
        let proxy_connect_seconds = HistogramVec::new(
            HistogramOpts::new(
                "ferry_proxy_connect_seconds",
                "Time to establish the backend connection, in seconds",
            )
            .buckets(CONNECT_BUCKETS.to_vec()),
            &["route"],
        )?;
        r.register(Box::new(proxy_connect_seconds.clone()))?;
        let proxy_failovers_total = counter_vec(
            &r,
            "ferry_proxy_failovers_total",
            "Connections that failed over to another backend after a failed attempt",
            &["route"],
        )?;
        let proxy_rejected_total = counter_vec(
            &r,
            "ferry_proxy_rejected_total",
            "Client connections rejected before reaching a backend, by reason",
            &["route", "reason"],
        )?;
        let proxy_idle_timeouts_total = counter_vec(
            &r,
            "ferry_proxy_idle_timeouts_total",
            "Proxied connections closed by the idle timeout",
            &["route"],
        )?;
        let chaos_connections_total = counter_vec(
            &r,
            "ferry_chaos_connections_total",
            "Client connections a chaos policy hit on this node",
            &["policy", "route"],
        )?;
        let chaos_injected_delay_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "ferry_chaos_injected_delay_seconds",
                "Delay chaos toxics added to a chunk of data or to a connect",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        r.register(Box::new(chaos_injected_delay_seconds.clone()))?;
        let chaos_resets_total = IntCounter::new(
            "ferry_chaos_resets_total",
            "Client connections a reset_peer toxic reset (TCP RST)",
        )?;
        r.register(Box::new(chaos_resets_total.clone()))?;
        let chaos_policies_active =
            IntGauge::new("ferry_chaos_policies_active", "Chaos policies in effect on this node")?;
        r.register(Box::new(chaos_policies_active.clone()))?;
        let backend_healthy = gauge_vec(
            &r,
            "ferry_backend_healthy",
            "Whether the backend is currently considered healthy (1) or not (0)",
            &["route", "backend"],
        )?;
        let backend_ejections_total = counter_vec(
            &r,
            "ferry_backend_ejections_total",
            "Times the backend was ejected from rotation",
            &["route", "backend"],
        )?;
        let backend_resolve_failures_total = counter_vec(
            &r,
            "ferry_backend_resolve_failures_total",
            "Failed lookups of the backend's host name (timeouts included)",
            &["route", "backend"],
        )?;
        let backend_resolved_addresses = gauge_vec(
            &r,
            "ferry_backend_resolved_addresses",
            "Addresses in use for the backend's host name (0: it does not resolve)",
            &["route", "backend"],
        )?;
        let health_checks_total = counter_vec(
            &r,
            "ferry_health_checks_total",
            "Active health checks by result (pass, fail)",
            &["route", "backend", "result"],
        )?;
        let config_reloads_total = counter_vec(
            &r,
            "ferry_config_reloads_total",
            "Configuration reloads by result (ok, error)",
            &["result"],
        )?;
        let route_bind_failures = gauge_vec(
            &r,
            "ferry_route_bind_failures",
            "1 while this node cannot bind the route's listener (retried), 0 while it listens",
            &["route"],
        )?;
        let table_generation =
            IntGauge::new("ferry_table_generation", "Generation of the routing table currently in use")?;
        r.register(Box::new(table_generation.clone()))?;
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            r.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let raft_term = gauge("ferry_raft_term", "Current Raft term")?;
        let raft_leader_changes_total =
            counter("ferry_raft_leader_changes_total", "Raft leader changes observed by this node")?;
        let raft_applied_index =
            gauge("ferry_raft_applied_index", "Last Raft log index applied by this node")?;
        let raft_is_leader = gauge("ferry_raft_is_leader", "1 when this node is the Raft leader")?;
        let raft_has_quorum = gauge(
            "ferry_raft_has_quorum",
            "1 when this node is the Raft leader and heard from a majority of the voters within the election timeout",
        )?;
        let raft_snapshots_total =
            counter("ferry_raft_snapshots_total", "Raft snapshots this node built or installed")?;
        let raft_write_proposals_total = counter(
            "ferry_raft_write_proposals_total",
            "Raft log entries of client writes this node committed as leader (a batch is one)",
        )?;
        let raft_read_rounds_total = counter(
            "ferry_raft_read_rounds_total",
            "Read-index rounds (one leadership confirmation each) this node ran",
        )?;
        let raft_round_reads_total =
            counter("ferry_raft_round_reads_total", "Linearizable reads answered by those rounds")?;
        let raft_writes_past_deadline_total = counter(
            "ferry_raft_writes_past_deadline_total",
            "Client writes the leader refused to propose because their deadline had passed",
        )?;
        let raft_writes_without_quorum_total = counter(
            "ferry_raft_writes_without_quorum_total",
            "Client writes the leader refused to propose because no majority had acknowledged it for the quorum timeout",
        )?;
        let raft_proposed_writes_total = counter(
            "ferry_raft_proposed_writes_total",
            "Client writes in the entries this node committed as leader",
        )?;
        let raft_write_seconds = Histogram::with_opts(
            HistogramOpts::new("ferry_raft_write_seconds", "Admin config writes, from proposal to answer")
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
        )?;
        r.register(Box::new(raft_write_seconds.clone()))?;
        let raft_log_sync_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "ferry_raft_log_sync_seconds",
                "fdatasync of the Raft store after sled's flush (appends, votes, snapshots)",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        )?;
        r.register(Box::new(raft_log_sync_seconds.clone()))?;
        let cluster_refused_total = counter_vec(
            &r,
            "ferry_cluster_messages_refused_total",
            "Cluster-port frames refused, by reason",
            &["reason"],
        )?;
        let gossip_members =
            gauge_vec(&r, "ferry_gossip_members", "Gossip members seen by this node, by state", &["state"])?;
        let gossip_packets_total = counter_vec(
            &r,
            "ferry_gossip_packets_total",
            "Gossip datagrams by direction and result",
            &["direction", "result"],
        )?;
        let gossip_probe_failures_total =
            counter("ferry_gossip_probe_failures_total", "Gossip probes that got no direct or indirect ack")?;
        let autopilot_changes_total = counter_vec(
            &r,
            "ferry_autopilot_changes_total",
            "Raft membership changes made by this node's autopilot",
            &["change"],
        )?;
        let peer_hops_total = counter_vec(
            &r,
            "ferry_peer_hops_total",
            "Peer hops to backends owned by another node, by direction (out, in) and result",
            &["direction", "result"],
        )?;
        let admin_requests_total = counter_vec(
            &r,
            "ferry_admin_requests_total",
            "Admin API requests by matched route template and status code",
            &["path", "status"],
        )?;
        let admin_connections = gauge("ferry_admin_connections", "Admin API connections open now")?;
        let admin_connections_rejected_total = counter_vec(
            &r,
            "ferry_admin_connections_rejected_total",
            "Admin API clients refused (limit) or closed for being slow (header_timeout, body_timeout)",
            &["reason"],
        )?;
        for reason in crate::admin::server::REJECT_REASONS {
            admin_connections_rejected_total.with_label_values(&[reason]);
        }
        let build_info = gauge_vec(
            &r,
            "ferry_build_info",
            "Build information; the value is always 1",
            &["version", "commit", "protocol"],
        )?;
        build_info
            .with_label_values(&[
                crate::version::version().as_str(),
                crate::version::COMMIT,
                crate::version::PROTOCOL.to_string().as_str(),
            ])
            .set(1);
        // Series whose labels are known up front exist from the start, at
        // 0: an alert on their rate sees a 0, not an absent series.
        for result in RELOAD_RESULTS {
            config_reloads_total.with_label_values(&[result]);
        }
        // The standard process_* metrics (CPU, memory, descriptors, start
        // time), as every Prometheus client exports them.
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;

        Ok(Self {
            registry: r,
            proxy_connections_total,
            proxy_active_connections,
            worker_connections,
            proxy_bytes_total,
            proxy_connect_seconds,
            proxy_failovers_total,
            proxy_rejected_total,
            proxy_idle_timeouts_total,
            chaos_connections_total,
            chaos_injected_delay_seconds,
            chaos_resets_total,
            chaos_policies_active,
            backend_healthy,
            backend_ejections_total,
            backend_resolve_failures_total,
            backend_resolved_addresses,
            health_checks_total,
            config_reloads_total,
            table_generation,
            route_bind_failures,
            raft_term,
            raft_leader_changes_total,
            raft_applied_index,
            raft_is_leader,
            raft_has_quorum,
            raft_write_seconds,
            raft_log_sync_seconds,
            raft_snapshots_total,
            raft_write_proposals_total,
            raft_proposed_writes_total,
            raft_read_rounds_total,
            raft_round_reads_total,
            raft_writes_past_deadline_total,
            raft_writes_without_quorum_total,
            cluster_refused_total,
            gossip_members,
            gossip_packets_total,
            gossip_probe_failures_total,
            autopilot_changes_total,
            peer_hops_total,
            admin_requests_total,
            admin_connections,
            admin_connections_rejected_total,
            build_info,
        })
    }

    /// Encodes every family in the Prometheus text exposition format.
    ///
    /// Returns the body and its content type (`text/plain; version=0.0.4`).
    pub fn encode(&self) -> (Vec<u8>, String) {
        let encoder = TextEncoder::new();
        let mut buf = Vec::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            // Encoding into a Vec only fails on malformed metric families,
            // which the fixed families above cannot produce.
            ::tracing::warn!(error = %e, "failed to encode metrics");
        }
        (buf, encoder.format_type().to_owned())
    }

    /// Removes every series labelled with `route` (from all per-route and
    /// per-backend families), e.g. when the route is deleted.
    pub fn remove_route(&self, route: &str) {
        // Families whose full label set is known.
        remove_exact(&self.proxy_active_connections, &[route]);
        remove_exact(&self.proxy_connect_seconds, &[route]);
        remove_exact(&self.proxy_failovers_total, &[route]);
        remove_exact(&self.proxy_idle_timeouts_total, &[route]);
        remove_exact(&self.route_bind_failures, &[route]);
        for dir in DIRECTIONS {
            remove_exact(&self.proxy_bytes_total, &[route, dir]);
        }
        // Families with open-ended labels (backend, reason): scan.
        let m = [("route", route)];
        remove_matching(&self.proxy_rejected_total, &m);
        remove_matching(&self.proxy_connections_total, &m);
        remove_matching(&self.backend_healthy, &m);
        remove_matching(&self.backend_ejections_total, &m);
        remove_matching(&self.health_checks_total, &m);
        remove_matching(&self.backend_resolve_failures_total, &m);
        remove_matching(&self.backend_resolved_addresses, &m);
    }

    /// Removes every series labelled with this (`route`, `backend`) pair,
    /// e.g. when the backend is removed from the route.
    pub fn remove_backend(&self, route: &str, backend: &str) {
        for result in CONNECT_RESULTS {
            remove_exact(&self.proxy_connections_total, &[route, backend, result]);
        }
        for result in CHECK_RESULTS {
            remove_exact(&self.health_checks_total, &[route, backend, result]);
        }
        remove_exact(&self.backend_healthy, &[route, backend]);
        remove_exact(&self.backend_ejections_total, &[route, backend]);
        self.remove_backend_resolution(route, backend);
    }

    /// Removes the host-name series of this (`route`, `backend`) pair, e.g.
    /// when its `addr` became an IP literal.
    pub fn remove_backend_resolution(&self, route: &str, backend: &str) {
        remove_exact(&self.backend_resolve_failures_total, &[route, backend]);
        remove_exact(&self.backend_resolved_addresses, &[route, backend]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Metrics) -> String {
        let (body, content_type) = m.encode();
        assert_eq!(content_type, "text/plain; version=0.0.4");
        String::from_utf8(body).expect("exposition is UTF-8")
    }

    #[test]
    fn counter_shows_up_in_exposition() {
        let m = Metrics::new().expect("fixed families register");
        m.proxy_connections_total.with_label_values(&["web", "10.0.0.1:80", "ok"]).inc();
        m.table_generation.set(7);
        let out = text(&m);
        assert!(
            out.contains(r#"ferry_proxy_connections_total{backend="10.0.0.1:80",result="ok",route="web"} 1"#),
            "{out}"
        );
        assert!(
            out.contains("# HELP ferry_proxy_connections_total Backend connection attempts by result (ok, refused, timeout, error)"),
            "{out}"
        );
        assert!(out.contains("ferry_table_generation 7"), "{out}");
        assert!(
            out.contains(&format!(
                r#"ferry_build_info{{commit="{}",protocol="{}",version="{}"}} 1"#,
                crate::version::COMMIT,
                crate::version::PROTOCOL,
                crate::version::version()
            )),
            "{out}"
        );
    }

    #[test]
    fn histogram_uses_lan_buckets() {
        let m = Metrics::new().expect("fixed families register");
        m.proxy_connect_seconds.with_label_values(&["web"]).observe(0.0003);
        let out = text(&m);
        assert!(out.contains(r#"ferry_proxy_connect_seconds_bucket{route="web",le="0.0001"} 0"#), "{out}");
        assert!(out.contains(r#"ferry_proxy_connect_seconds_bucket{route="web",le="0.0005"} 1"#), "{out}");
    }

    #[test]
    fn remove_backend_removes_its_series_only() {
        let m = Metrics::new().expect("fixed families register");
        for result in CONNECT_RESULTS {
            m.proxy_connections_total.with_label_values(&["web", "b1", result]).inc();
        }
        m.proxy_connections_total.with_label_values(&["web", "b2", "ok"]).inc();
        for result in CHECK_RESULTS {
            m.health_checks_total.with_label_values(&["web", "b1", result]).inc();
        }
        m.backend_healthy.with_label_values(&["web", "b1"]).set(1);
        m.backend_healthy.with_label_values(&["web", "b2"]).set(1);
        m.backend_ejections_total.with_label_values(&["web", "b1"]).inc();
        m.backend_resolve_failures_total.with_label_values(&["web", "b1"]).inc();
        m.backend_resolved_addresses.with_label_values(&["web", "b1"]).set(2);

        m.remove_backend("web", "b1");
        // Removing again (not found) is fine.
        m.remove_backend("web", "b1");

        let out = text(&m);
        assert!(!out.contains(r#"backend="b1""#), "{out}");
        assert!(
            out.contains(r#"ferry_proxy_connections_total{backend="b2",result="ok",route="web"} 1"#),
            "{out}"
        );
        assert!(out.contains(r#"ferry_backend_healthy{backend="b2",route="web"} 1"#), "{out}");
    }

    #[test]
    fn remove_route_removes_every_family() {
        let m = Metrics::new().expect("fixed families register");
        for route in ["web", "db"] {
            m.proxy_connections_total.with_label_values(&[route, "b1", "timeout"]).inc();
            m.proxy_active_connections.with_label_values(&[route]).inc();
            m.proxy_bytes_total.with_label_values(&[route, "upstream"]).inc_by(10);
            m.proxy_bytes_total.with_label_values(&[route, "downstream"]).inc_by(20);
            m.proxy_connect_seconds.with_label_values(&[route]).observe(0.001);
            m.proxy_failovers_total.with_label_values(&[route]).inc();
            m.proxy_rejected_total.with_label_values(&[route, "some-reason"]).inc();
            m.proxy_idle_timeouts_total.with_label_values(&[route]).inc();
            m.route_bind_failures.with_label_values(&[route]).set(1);
            m.backend_healthy.with_label_values(&[route, "b1"]).set(0);
            m.backend_ejections_total.with_label_values(&[route, "b1"]).inc();
            m.health_checks_total.with_label_values(&[route, "b1", "fail"]).inc();
            m.backend_resolve_failures_total.with_label_values(&[route, "b1"]).inc();
            m.backend_resolved_addresses.with_label_values(&[route, "b1"]).set(1);
        }

        m.remove_route("web");
        m.remove_route("web");

        let out = text(&m);
        assert!(!out.contains(r#"route="web""#), "{out}");
        // 13 families carry the route label; "db" must still be in each.
        let db_families = out
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(r#"route="db""#))
            .map(|l| l.split('{').next().unwrap_or_default())
            .filter(|name| !name.ends_with("_bucket") && !name.ends_with("_sum"))
            .collect::<std::collections::BTreeSet<_>>();
        assert_eq!(db_families.len(), 13, "{db_families:?}");
    }
}
