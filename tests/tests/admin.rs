//! The admin API: status, routes, JSON errors, metrics and health endpoints,
//! and its HTTP layer: slow clients, the connection cap, and errors hyper
//! makes before a request reaches the router.

use std::time::{Duration, Instant};

use ferry_tests::backend::Greeter;
use ferry_tests::client::greet;
use ferry_tests::eventually;
use ferry_tests::http::{Raw, Request, Response};
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
        ("GET", "/v1/snapshot"),
        ("POST", "/v1/snapshot/restore"),
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

/// The value of `family{labels}` in a Prometheus exposition, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn rejected(text: &str, reason: &str) -> Option<f64> {
    sample(text, &format!("ferry_admin_connections_rejected_total{{reason=\"{reason}\"}}"))
}

/// Before, nothing timed a client out: partial headers or a body short of
/// its Content-Length held the connection (and a file descriptor) forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_closed_within_the_timeouts_and_counted() -> anyhow::Result<()> {
    let timeout = Duration::from_millis(300);
    let node = TestNode::with_config(|c| {
        c.admin.header_timeout_ms = 300;
        c.admin.body_timeout_ms = 300;
    })
    .await?;
    let addr = node.node().admin_addr();
    let (_, text) = node.get("/metrics").await?;
    for reason in ["limit", "header_timeout", "body_timeout"] {
        assert_eq!(rejected(&text, reason), Some(0.0), "{reason} is registered at 0");
    }
    let within = Duration::from_secs(2);

    // Partial headers, and nothing at all: closed at the header timeout
    // without an answer.
    for partial in [&b"GET /v1/status HTTP/1.1\r\nHost: x\r\n"[..], b""] {
        let started = Instant::now();
        let mut c = Raw::connect(addr).await?;
        c.send(partial).await?;
        let rest = c.closed(within).await?;
        assert!(rest.is_empty(), "an answer to a partial head: {:?}", String::from_utf8_lossy(&rest));
        assert!(
            started.elapsed() >= timeout - Duration::from_millis(50),
            "closed early: {:?}",
            started.elapsed()
        );
    }

    // Content-Length 100 and 1 byte: 408 JSON at the body timeout, closed.
    let started = Instant::now();
    let mut c = Raw::connect(addr).await?;
    c.send(b"PUT /v1/routes/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await?;
    let r = c.response(false, within).await?;
    json_error("short body", &r, 408, "request_timeout")?;
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        started.elapsed() >= timeout - Duration::from_millis(50),
        "answered early: {:?}",
        started.elapsed()
    );
    c.closed(within).await?;

    // A whole exchange on a keep-alive connection, then silence: an idle
    // connection is closed at the header timeout too, but not counted.
    let mut c = Raw::connect(addr).await?;
    c.send(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    assert_eq!(c.response(false, within).await?.status, 200);
    c.send(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    assert_eq!(c.response(false, within).await?.status, 200, "the connection is kept alive");
    let started = Instant::now();
    assert!(c.closed(within).await?.is_empty());
    assert!(
        started.elapsed() >= timeout - Duration::from_millis(50),
        "closed early: {:?}",
        started.elapsed()
    );

    // Normal requests are unaffected; every slow client was counted.
    let (code, text) = node.get("/metrics").await?;
    assert_eq!(code, 200);
    assert_eq!(rejected(&text, "header_timeout"), Some(2.0), "{text}");
    assert_eq!(rejected(&text, "body_timeout"), Some(1.0));
    assert_eq!(rejected(&text, "limit"), Some(0.0));
    Ok(())
}

/// Before, there was no cap: 3,000 idle connections held 3,000 file
/// descriptors (which the data plane shares).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused_at_once_and_a_freed_slot_serves_again() -> anyhow::Result<()> {
    let a = Greeter::start("a").await?;
    let node = TestNode::with_config(|c| {
        c.admin.max_connections = 3;
        c.routes = vec![route("web", "weighted", &[("a", a.addr, 1)], json!({})).expect("route")];
    })
    .await?;
    let addr = node.node().admin_addr();
    // Three idle connections take every slot (the default header timeout
    // of 10 s keeps them).
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Raw::connect(addr).await?);
    }
    let started = Instant::now();
    let mut refusals = Vec::new();
    for _ in 0..20 {
        let req = Request::get("/v1/status").timeout(Duration::from_secs(2));
        refusals.push(tokio::spawn(async move { req.send(addr).await }));
    }
    for r in refusals {
        let r = r.await??;
        json_error("over the cap", &r, 503, "too_many_connections")?;
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    assert!(started.elapsed() < Duration::from_secs(2), "refusals took {:?}", started.elapsed());
    // Traffic does not go through the admin port.
    assert_eq!(greet(node.route_addr("web")?).await?, "a");

    // A freed slot serves a normal request again.
    drop(held.pop());
    eventually(Duration::from_secs(3), "a request on the freed slot", || async {
        (Request::get("/v1/status").send(addr).await.ok()?.status == 200).then_some(())
    })
    .await?;
    // The request above freed its slot when the server saw it close, which
    // may be a moment after the client is done: ask until a slot is free.
    let text = eventually(Duration::from_secs(3), "a slot for /metrics", || async {
        let (code, text) = node.get("/metrics").await.ok()?;
        (code == 200).then_some(text)
    })
    .await?;
    assert!(rejected(&text, "limit").is_some_and(|n| n >= 20.0), "{text}");
    assert_eq!(sample(&text, "ferry_admin_connections"), Some(3.0), "two held and this one");
    Ok(())
}

/// Before, errors that hyper answers itself (a garbage request line, a
/// 100 KB URI, too many headers) had an empty body and no X-Ferry-Index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_hyper_answers_itself_are_the_json_error_body_with_the_index() -> anyhow::Result<()> {
    let node = TestNode::start(vec![]).await?;
    let addr = node.node().admin_addr();
    let within = Duration::from_secs(5);

    let long_uri = format!("GET /v1/routes/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100 * 1024));
    let many_headers = format!(
        "GET /v1/status HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..120).map(|i| format!("X-H{i}: 1\r\n")).collect::<String>()
    );
    for (case, raw, status, code, field) in [
        ("garbage request line", "GARBAGE\r\n\r\n".to_string(), 400, "bad_request", "request"),
        ("bad version", "GET / HTTP/9.9\r\n\r\n".to_string(), 400, "bad_request", "request"),
        ("100 KB URI", long_uri, 414, "uri_too_long", "uri"),
        ("120 headers", many_headers, 431, "headers_too_large", "headers"),
    ] {
        let mut c = Raw::connect(addr).await?;
        c.send(raw.as_bytes()).await?;
        let r = c.response(false, within).await?;
        let body = json_error(case, &r, status, code)?;
        assert_eq!(body["error"]["fields"][0]["path"], field, "{case}: {body}");
        assert!(c.closed(within).await?.is_empty(), "{case}: more after the answer");
    }

    // On a keep-alive connection, after a GET and a HEAD (whose answer has
    // a Content-Length and no body), hyper's 400 is still made JSON.
    let mut c = Raw::connect(addr).await?;
    c.send(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\nHEAD /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    assert_eq!(c.response(false, within).await?.status, 200);
    let head = c.response(true, within).await?;
    assert_eq!(head.status, 200);
    assert!(head.header("content-length").is_some_and(|n| n != "0"), "{:?}", head.headers);
    c.send(b"NOT HTTP AT ALL\r\n\r\n").await?;
    json_error("garbage after HEAD", &c.response(false, within).await?, 400, "bad_request")?;

    // 100 Continue passes untouched, then the answer.
    let mut c = Raw::connect(addr).await?;
    c.send(b"PUT /v1/routes/x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        .await?;
    let cont = c.response(false, within).await?;
    assert_eq!((cont.status, cont.body.as_str()), (100, ""));
    c.send(b"{}").await?;
    json_error("after 100 Continue", &c.response(false, within).await?, 409, "standalone")?;

    Ok(())
}

/// At shutdown the admin port stops accepting, closes idle connections at
/// once, lets a request in flight finish, and closes what is still running
/// after the grace period (the request timeout). Before, a request that
/// never finished held the shutdown forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight_and_cuts_the_rest_at_the_grace_period() -> anyhow::Result<()> {
    let node = TestNode::with_config(|c| {
        c.admin.request_timeout_ms = 500;
        c.admin.body_timeout_ms = 30_000;
    })
    .await?;
    let addr = node.node().admin_addr();
    let within = Duration::from_secs(5);
    let mut idle = Raw::connect(addr).await?;
    idle.send(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    assert_eq!(idle.response(false, within).await?.status, 200);
    // Two requests in flight, each with half its body sent: the server is
    // reading their bodies once it has said 100 Continue.
    let head = b"PUT /v1/routes/x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
    let (mut finishing, mut stuck) = (Raw::connect(addr).await?, Raw::connect(addr).await?);
    for c in [&mut finishing, &mut stuck] {
        c.send(head).await?;
        assert_eq!(c.response(false, within).await?.status, 100);
        c.send(b"{}").await?;
    }

    let started = Instant::now();
    let shutdown = tokio::spawn(node.shutdown());
    // The idle connection is closed as soon as the admin API stops.
    assert!(idle.closed(within).await?.is_empty());
    // New connections are refused from then on.
    eventually(within, "the admin port closed", || async { Raw::connect(addr).await.is_err().then_some(()) })
        .await?;
    // A request in flight still gets its answer.
    finishing.send(b"  ").await?;
    let r = finishing.response(false, within).await?;
    json_error("in flight at shutdown", &r, 409, "standalone")?;
    // One that does not finish is closed at the end of the grace period.
    assert!(stuck.closed(within).await?.is_empty());
    tokio::time::timeout(within, shutdown).await???;
    assert!(started.elapsed() < Duration::from_secs(3), "shutdown took {:?}", started.elapsed());
    Ok(())
}
