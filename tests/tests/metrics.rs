//! Every metric the README documents is on `/metrics` from the start: a
//! series whose labels are known up front is exported at 0 before its first
//! event, so an alert on it sees a 0 rather than no data.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ferry_node::Config;
use ferry_tests::cluster::{free_ports, next_net, node_ip};
use ferry_tests::node::TestNode;

/// Labels whose values exist only with routes, backends, workers, requests
/// or a version: a family keyed by one of them has no series before those do.
const OPEN_LABELS: [&str; 6] = ["route", "backend", "worker", "path", "status", "version"];

/// `(metric, labels)` of every metric of the README's metrics table (a row
/// may name several, each in backquotes).
fn documented() -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))?;
    let table = readme.split("\n## Metrics\n").nth(1).ok_or_else(|| anyhow::anyhow!("no ## Metrics"))?;
    let rows: Vec<(String, Vec<String>)> = table
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| {
            let mut cells = l.split('|').map(str::trim).skip(1);
            let names = cells.next()?;
            let labels: Vec<String> =
                cells.next()?.split(',').map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
            // Between backquotes: the odd pieces of a split on them.
            let names: Vec<(String, Vec<String>)> =
                names.split('`').skip(1).step_by(2).map(|n| (n.to_string(), labels.clone())).collect();
            Some(names)
        })
        .flatten()
        .collect();
    anyhow::ensure!(rows.len() > 20, "the metrics table has only {} rows", rows.len());
    Ok(rows)
}

/// A one-node cluster with gossip (so autopilot and the cluster port run),
/// on its own loopback address.
async fn gossip_node() -> anyhow::Result<(TestNode, tempfile::TempDir)> {
    let ip: IpAddr = node_ip(next_net(), 1);
    let ports = free_ports(&[ip], 3)?;
    let dir = tempfile::tempdir()?;
    let text = format!(
        r#"
[node]
name = "m1"
bind_addr = "{ip}"
workers = 0
data_dir = "{data}"
[admin]
addr = "{admin}"
[cluster]
addr = "{cluster}"
[gossip]
addr = "{gossip}"
bootstrap_expect = 1
profile = "fast"
"#,
        data = dir.path().display(),
        admin = SocketAddr::new(ip, ports[0]),
        cluster = SocketAddr::new(ip, ports[1]),
        gossip = SocketAddr::new(ip, ports[2]),
    );
    let file = Config::parse(&text).map_err(|e| anyhow::anyhow!("test config: {e}"))?;
    let node = TestNode::with_config(|c| *c = file).await?;
    Ok((node, dir))
}

/// The families present in an exposition.
fn families(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| {
            n.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count").to_string()
        })
        .collect()
}

#[tokio::test]
async fn every_documented_metric_with_fixed_labels_is_exported_before_its_first_event() -> anyhow::Result<()>
{
    let expected: Vec<String> = documented()?
        .into_iter()
        .filter(|(_, labels)| !labels.iter().any(|l| OPEN_LABELS.contains(&l.as_str())))
        .map(|(name, _)| name)
        .collect();
    let (node, _dir) = gossip_node().await?;
    // The cluster's exporters start with the node; give them a moment to
    // publish, polling rather than sleeping.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let missing = loop {
        let (status, body) = node.get("/metrics").await?;
        anyhow::ensure!(status == 200, "GET /metrics: {status}");
        let present = families(&body);
        let missing: Vec<&String> = expected.iter().filter(|n| !present.contains(*n)).collect();
        if missing.is_empty() || tokio::time::Instant::now() > deadline {
            break missing.into_iter().cloned().collect::<Vec<_>>();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    node.shutdown().await?;
    anyhow::ensure!(missing.is_empty(), "documented metrics not exported at start: {missing:?}");
    Ok(())
}

#[tokio::test]
async fn the_standard_process_metrics_are_exported() -> anyhow::Result<()> {
    let node = TestNode::start(Vec::new()).await?;
    let (_, body) = node.get("/metrics").await?;
    node.shutdown().await?;
    let present = families(&body);
    for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"] {
        anyhow::ensure!(present.contains(name), "{name} is not exported");
    }
    Ok(())
}
