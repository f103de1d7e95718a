//! The admin API: status, routes, JSON errors, metrics and health endpoints.

use ferry_tests::backend::Greeter;
use ferry_tests::client::greet;
use ferry_tests::http::{Request, Response};
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
            ("index=x", "index"),
            ("index=+1", "index"),
            ("colour=blue", "colour"),
            ("consistency=stale&consistency=stale", "consistency"),
            ("cas=1", "cas"),
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

/// Checks a JSON error answer: `status`, `code`, `X-Ferry-Index`.
fn json_error(case: &str, r: &Response, status: u16, code: &str) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(r.status == status, "{case}: expected {status}, got {} {}", r.status, r.body);
    let body = r.json().map_err(|e| e.context(case.to_string()))?;
    anyhow::ensure!(body["error"]["code"] == code, "{case}: expected code {code}: {body}");
    anyhow::ensure!(r.index().is_some(), "{case}: no X-Ferry-Index on {} {}", r.status, r.body);
    Ok(body)
}

/// Before, a `%FF` in the path had no `fields`, and unknown query
/// parameters were ignored by every endpoint but the route and chaos ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_query_parameters_and_bad_path_parameters_are_400_naming_them() -> anyhow::Result<()> {
    let node = TestNode::start(vec![]).await?;
    let addr = node.node().admin_addr();
    // A path parameter that is not UTF-8 once decoded names the parameter.
    let r = Request::get("/v1/routes/%FF").send(addr).await?;
    let body = json_error("%FF", &r, 400, "bad_request")?;
    assert_eq!(body["error"]["fields"][0]["path"], "name", "{body}");
    let r =
        Request::new("PUT", "/v1/routes/web/backends/%C3%28/weight").body(b"{}".to_vec()).send(addr).await?;
    assert_eq!(json_error("bad id", &r, 400, "bad_request")?["error"]["fields"][0]["path"], "id");

    // One rule on every endpoint: an unknown parameter is a 400 naming it.
    let endpoints = [
        ("GET", "/v1/status"),
        ("GET", "/v1/routes"),
        ("GET", "/v1/routes/web"),
        ("PUT", "/v1/routes/web"),
        ("DELETE", "/v1/routes/web"),
        ("PUT", "/v1/routes/web/backends/a/weight"),
        ("GET", "/v1/members"),
        ("POST", "/v1/members/7/remove"),
        ("POST", "/v1/leave"),
        ("GET", "/v1/chaos"),
        ("GET", "/v1/chaos/p"),
        ("PUT", "/v1/chaos/p"),
        ("DELETE", "/v1/chaos/p"),
        ("GET", "/metrics"),
        ("GET", "/health/live"),
        ("GET", "/health/ready"),
    ];
    for (method, path) in endpoints {
        for (query, field) in [("foo=1", "foo"), ("foo=1&foo=2", "foo"), ("=1", "query")] {
            let r = Request::new(method, format!("{path}?{query}")).body(b"{}".to_vec()).send(addr).await?;
            let case = format!("{method} {path}?{query}");
            let body = json_error(&case, &r, 400, "bad_request")?;
            assert_eq!(body["error"]["fields"][0]["path"], field, "{case}: {body}");
        }
    }
    // /v1/status and /v1/members answer with this node's own view: they
    // take no consistency, and say so rather than ignore it.
    for path in [
        "/v1/status?consistency=bogus",
        "/v1/status?consistency=stale",
        "/v1/members?consistency=bogus",
        "/v1/members?consistency=linearizable",
        "/v1/routes?consistency=bogus",
    ] {
        let body = json_error(path, &Request::get(path).send(addr).await?, 400, "bad_request")?;
        assert_eq!(body["error"]["fields"][0]["path"], "consistency", "{path}: {body}");
    }
    Ok(())
}
