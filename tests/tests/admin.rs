//! The admin API: status, routes, JSON errors, metrics and health endpoints.

use ferry_tests::backend::Greeter;
use ferry_tests::client::greet;
use ferry_tests::node::{TestNode, route};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_answer_with_json() -> anyhow::Result<()> {
    let a = Greeter::start("a").await?;
    let node = TestNode::start(vec![route("web", "weighted", &[("a", a.addr, 2)], json!({}))?]).await?;
    greet(node.route_addr("web")?).await?;

    let status = node.get_json("/v1/status").await?;
    assert_eq!(status["node"], "test");
    assert_eq!(status["routes"], 1);
    assert_eq!(status["draining"], false);

    let routes = node.get_json("/v1/routes").await?;
    assert_eq!(routes.as_array().map(Vec::len), Some(1));
    let web = node.get_json("/v1/routes/web").await?;
    assert_eq!(web["config"]["backends"][0]["weight"], 2);
    assert_eq!(web["listening"], node.route_addr("web")?.to_string());
    assert_eq!(web["backends"][0]["check"], "disabled");

    let (code, body) = node.get("/v1/routes/nope").await?;
    assert_eq!(code, 404);
    let body: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("nope")));

    let (code, body) = node.get("/v2/whatever").await?;
    assert_eq!(code, 404);
    assert!(body.contains("\"code\":\"not_found\""), "{body}");

    assert_eq!(node.get("/health/live").await?.0, 200);
    assert_eq!(node.get("/health/ready").await?.0, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_the_documented_families() -> anyhow::Result<()> {
    let a = Greeter::start("a").await?;
    let node = TestNode::start(vec![route("web", "weighted", &[("a", a.addr, 1)], json!({}))?]).await?;
    greet(node.route_addr("web")?).await?;
    let (code, text) = node.get("/metrics").await?;
    assert_eq!(code, 200);
    for family in [
        "ferry_proxy_connections_total{backend=\"a\",result=\"ok\",route=\"web\"} 1",
        "ferry_proxy_active_connections{route=\"web\"}",
        "ferry_proxy_bytes_total{direction=\"downstream\",route=\"web\"}",
        "ferry_proxy_connect_seconds_bucket{route=\"web\"",
        "ferry_proxy_failovers_total{route=\"web\"} 0",
        "ferry_proxy_rejected_total{reason=\"max_connections\",route=\"web\"} 0",
        "ferry_backend_healthy{backend=\"a\",route=\"web\"} 1",
    ] {
        assert!(text.contains(family), "missing {family:?} in /metrics");
    }
    Ok(())
}

/// Before, a standalone node answered these reads with 200 and the values
/// were never looked at; a cluster node refused them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_reads_refuse_bad_query_values_naming_the_field() -> anyhow::Result<()> {
    let a = Greeter::start("a").await?;
    let node = TestNode::start(vec![route("web", "weighted", &[("a", a.addr, 1)], json!({}))?]).await?;
    for path in ["/v1/routes", "/v1/routes/web"] {
        for (query, field) in [
            ("consistency=bogus", "consistency"),
            ("index=1&wait=bogus", "wait"),
            ("wait=5s", "wait"),
            ("index=x", "query"),
            ("colour=blue", "query"),
        ] {
            let (code, body) = node.get(&format!("{path}?{query}")).await?;
            assert_eq!(code, 400, "{path}?{query}: {body}");
            let body: serde_json::Value = serde_json::from_str(&body)?;
            assert_eq!(body["error"]["code"], "bad_request", "{path}?{query}");
            assert_eq!(body["error"]["fields"][0]["path"], field, "{path}?{query}: {body}");
        }
        for ok in ["consistency=stale", "consistency=linearizable", "index=1&wait=1s"] {
            assert_eq!(node.get(&format!("{path}?{ok}")).await?.0, 200, "{path}?{ok}");
        }
    }
    Ok(())
}
