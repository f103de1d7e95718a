//! The configuration's parsing and validation, without a node.

use super::*;

const GOOD: &str = r#"
[node]
name = "n1"
[admin]
addr = "127.0.0.1:7948"

[[routes]]
name = "web"
listen = "127.0.0.1:7000"
balance = "weighted"
hash_key = "client_ip"
connect_timeout_ms = 1000
idle_timeout_ms = 300000
max_connections = 10000
max_connect_attempts = 3
  [[routes.backends]]
  id = "a"
  addr = "127.0.0.1:9001"
  weight = 3
  [routes.health_check]
  interval_ms = 1000
  timeout_ms = 500
  rise = 2
  fall = 2
"#;

/// Every problem of `text`, as `ferryd --check-config` reports them.
fn errors(text: &str) -> Vec<String> {
    match Config::parse_all(text).validate(|_| Vec::new()) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_contract_example_parses() -> Result<(), ConfigErrors> {
    let c = Config::parse(GOOD)?.validate()?;
    assert_eq!(c.node.name, "n1");
    assert_eq!(c.routes[0].backends[0].weight, 3);
    assert_eq!(c.routes[0].health_check.map(|h| h.fall), Some(2));
    Ok(())
}

#[test]
fn unknown_field_names_its_path_and_line() {
    let text = GOOD.replace("  weight = 3", "  weight = 3\n  wieght = 4");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("routes[0].backends[0]"), "{e:?}");
    assert!(e[0].contains("unknown field `wieght`"), "{e:?}");
    assert!(e[0].contains("line 20"), "{e:?}");
}

/// Parsing stopped at the first problem before: a file with several
/// got one line.
#[test]
fn every_unknown_field_and_bad_type_is_reported_once() {
    let text = GOOD
        .replace("name = \"n1\"", "name = \"n1\"\nnmae = \"x\"")
        .replace("  weight = 3", "  weight = \"heavy\"\n  wieght = 4")
        .replace("connect_timeout_ms = 1000", "connect_timeout_ms = \"1s\"")
        + "\n[[routes]]\nname = \"b\"\nlisten = 7\nbalanse = \"random\"\n";
    let e = errors(&text);
    let has = |prefix: &str, text: &str| e.iter().any(|l| l.starts_with(prefix) && l.contains(text));
    assert!(has("node.nmae: unknown field `nmae`", "(line 4,"), "{e:#?}");
    assert!(has("routes[0].connect_timeout_ms: invalid type: string \"1s\"", "line"), "{e:#?}");
    assert!(has("routes[0].backends[0].weight: invalid type: string \"heavy\"", "line"), "{e:#?}");
    assert!(has("routes[0].backends[0].wieght: unknown field `wieght`", "line"), "{e:#?}");
    assert!(has("routes[1].listen: invalid type: integer `7`", "line"), "{e:#?}");
    assert!(has("routes[1].balanse: unknown field `balanse`", "line"), "{e:#?}");
    // A validation problem, reported with the parse problems since
    // they no longer hide it.
    assert!(has("routes[1].backends: a route needs at least one backend", ""), "{e:#?}");
    assert_eq!(e.len(), 7, "one line per problem: {e:#?}");
    let lines: Vec<usize> =
        e.iter().filter_map(|l| l.rsplit_once("(line ")?.1.split_once(',')?.0.parse().ok()).collect();
    assert!(lines.is_sorted() && lines.len() == 6, "in the order of the file: {e:#?}");
}

#[test]
fn a_bad_required_field_is_not_reported_again_as_missing_and_hides_nothing() {
    let e = errors(&GOOD.replace("  addr = \"127.0.0.1:9001\"", "  addr = 9001\n  port = 1"));
    assert!(e[0].starts_with("routes[0].backends[0].addr: invalid type: integer `9001`"), "{e:#?}");
    assert!(e[1].starts_with("routes[0].backends[0].port: unknown field `port`"), "{e:#?}");
    assert_eq!(e.len(), 2, "{e:#?}");
    let e = errors("[[routes]]\nname = 1\nlisten = []\nbackends = 2\nx = 1");
    assert_eq!(e.len(), 4, "{e:#?}");
    let e = errors("routes = 3");
    assert_eq!(e, ["routes: expected an array of tables ([[routes]]) (line 1, column 10)"]);
    let e = errors("routes = [1]");
    assert_eq!(e, ["routes[0]: expected a table, got integer (line 1, column 11)"]);
}

#[test]
fn parse_problems_hide_no_validation_problem() {
    // Before, the two parse problems were reported alone, and the three
    // validation problems only once they were fixed.
    let text = GOOD
        .replace("name = \"n1\"", "name = \"n 1\"\ndrain_timeout_ms = \"x\"")
        .replace("connect_timeout_ms = 1000", "connect_timeout_ms = 0")
        .replace("weight = 3", "weight = 999\n  colour = 1");
    let e = errors(&text);
    assert_eq!(e.len(), 5, "{e:#?}");
    assert!(e[0].starts_with("node.drain_timeout_ms: invalid type: string \"x\""), "{e:#?}");
    assert!(e[1].starts_with("routes[0].backends[0].colour: unknown field `colour`"), "{e:#?}");
    assert!(e[2].starts_with("node.name: invalid name \"n 1\""), "{e:#?}");
    assert_eq!(e[3], "routes[0].connect_timeout_ms: must be greater than 0");
    assert_eq!(e[4], "routes[0].backends[0].weight: must be between 0 and 256, got 999");
}

#[test]
fn a_problem_about_a_stand_in_is_not_reported() {
    // `listen` and `backends` are missing or wrongly typed: the stand-ins
    // put in their place must not add "no backends" or a bad address.
    let e = errors("[[routes]]\nname = \"web\"\nbackends = 2\nconnect_timeout_ms = 0");
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(e[0].starts_with("routes[0].listen: is required (line 1, column 1)"), "{e:#?}");
    assert!(e[1].starts_with("routes[0].backends: invalid type: integer `2`"), "{e:#?}");
    assert_eq!(e[2], "routes[0].connect_timeout_ms: must be greater than 0");
}

#[test]
fn messages_quote_the_value_or_key_they_are_about() {
    let e = errors("[admin]\naddr = \"x\"");
    assert_eq!(e, ["admin.addr: invalid socket address syntax: \"x\" (line 2, column 8)"]);
    let e = errors("[node]\nbind_addr = \"1.2.3\"");
    assert_eq!(e, ["node.bind_addr: invalid IP address syntax: \"1.2.3\" (line 2, column 13)"]);
    let e = errors("[node]\nname = \"a\"\nname = \"b\"");
    assert_eq!(e, ["duplicate key `name` (line 3, column 1)"]);
}

#[test]
fn bad_enum_value_names_the_field() {
    let e = errors(&GOOD.replace("\"weighted\"", "\"fastest\""));
    assert!(e[0].starts_with("routes[0].balance: unknown variant `fastest`"), "{e:?}");
}

#[test]
fn worker_balance_takes_its_two_names_and_nothing_else() -> Result<(), ConfigErrors> {
    assert_eq!(Config::parse(GOOD)?.validate()?.node.worker_balance, WorkerBalance::LeastConnections);
    let kernel = GOOD.replace("[node]\n", "[node]\nworker_balance = \"kernel\"\n");
    assert_eq!(Config::parse(&kernel)?.validate()?.node.worker_balance, WorkerBalance::Kernel);
    let e = errors(&GOOD.replace("[node]\n", "[node]\nworker_balance = \"round_robin\"\n"));
    assert!(e[0].starts_with("node.worker_balance: unknown variant `round_robin`"), "{e:?}");
    Ok(())
}

#[test]
fn backends_take_host_names_and_resolution_settings_are_per_node() -> Result<(), ConfigErrors> {
    let c = Config::parse(&GOOD.replace("127.0.0.1:9001", "db-1.internal:5432"))?.validate()?;
    assert_eq!(c.routes[0].backends[0].addr, "db-1.internal:5432");
    assert_eq!((c.node.resolve_interval_ms, c.node.resolve_timeout_ms), (10_000, 2_000));
    let set = GOOD.replace("[node]\n", "[node]\nresolve_interval_ms = 500\nresolve_timeout_ms = 100\n");
    let c = Config::parse(&set)?.validate()?;
    assert_eq!(
        c.node.resolve_settings(),
        crate::control::resolver::ResolveSettings {
            interval: std::time::Duration::from_millis(500),
            timeout: std::time::Duration::from_millis(100),
        }
    );
    let zero = GOOD.replace("[node]\n", "[node]\nresolve_interval_ms = 0\nresolve_timeout_ms = 0\n");
    assert_eq!(
        errors(&zero),
        vec![
            "node.resolve_interval_ms: must be greater than 0",
            "node.resolve_timeout_ms: must be greater than 0"
        ]
    );
    let e = errors(&GOOD.replace("127.0.0.1:9001", "db-1.internal"));
    assert_eq!(
        e,
        vec![
            "routes[0].backends[0].addr: invalid address \"db-1.internal\": the port is missing (expected IP:PORT or HOST:PORT)"
        ]
    );
    let e = errors(&GOOD.replace("127.0.0.1:9001", "db-1.internal:0"));
    assert_eq!(e, vec!["routes[0].backends[0].addr: port 0 is not a backend port"]);
    Ok(())
}

#[test]
fn bad_address_is_one_line_naming_the_backend() {
    let e = errors(&GOOD.replace("127.0.0.1:9001", "x"));
    assert_eq!(
        e,
        vec![
            "routes[0].backends[0].addr: invalid address \"x\": the port is missing (expected IP:PORT or HOST:PORT)"
        ]
    );
}

#[test]
fn all_problems_are_reported_together() {
    let text = GOOD
        .replace("connect_timeout_ms = 1000", "connect_timeout_ms = 0")
        .replace("weight = 3", "weight = 0");
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e.contains(&"routes[0].connect_timeout_ms: must be greater than 0".to_string()));
}

#[test]
fn route_on_the_admin_address_is_refused() {
    let e = errors(&GOOD.replace("127.0.0.1:7000", "127.0.0.1:7948"));
    assert_eq!(
        e,
        vec!["routes[0].listen: \"127.0.0.1:7948\" collides with the admin address 127.0.0.1:7948"]
    );
}

/// Only the admin address was refused: a route on the cluster or
/// gossip port passed `--check-config` and failed at start (or, in a
/// cluster, on every node).
#[test]
fn routes_on_the_nodes_own_cluster_or_gossip_address_are_refused() {
    let routes = "[[routes]]\nname = \"a\"\nlisten = \"127.0.0.4:7947\"\n[[routes.backends]]\nid = \"a\"\naddr = \"127.0.0.1:9001\"\n\
                  [[routes]]\nname = \"b\"\nlisten = \":7946\"\n[[routes.backends]]\nid = \"a\"\naddr = \"127.0.0.1:9001\"\n\
                  [[routes]]\nname = \"c\"\nlisten = \"0.0.0.0:7948\"\n[[routes.backends]]\nid = \"a\"\naddr = \"127.0.0.1:9001\"\n";
    let e = errors(&format!("{GOSSIP}{routes}"));
    assert_eq!(
        e,
        vec![
            "routes[0].listen: \"127.0.0.4:7947\" collides with the cluster address 127.0.0.4:7947",
            "routes[1].listen: \":7946\" collides with the gossip address 127.0.0.4:7946",
            "routes[2].listen: \"0.0.0.0:7948\" collides with the admin address 127.0.0.1:7948",
        ]
    );
    // Standalone, the same ports are free.
    assert_eq!(errors(&routes.replace("0.0.0.0:7948", "0.0.0.0:7949")), Vec::<String>::new());
}

#[test]
fn a_cluster_node_needs_a_fixed_admin_port_apart_from_its_cluster_address() {
    let e = errors(&CLUSTER.replace("[cluster]", "[admin]\naddr = \"127.0.0.2:0\"\n[cluster]"));
    assert_eq!(
        e,
        vec!["admin.addr: must have a fixed port in cluster mode (peers advertise it), got 127.0.0.2:0"]
    );
    let e = errors(&CLUSTER.replace("[cluster]", "[admin]\naddr = \"0.0.0.0:7947\"\n[cluster]"));
    assert_eq!(e, vec!["cluster.addr: 127.0.0.2:7947 collides with the admin address 0.0.0.0:7947"]);
}

#[test]
fn dot_names_and_listen_port_zero_are_refused() {
    let e = errors(&GOOD.replace("name = \"n1\"", "name = \"..\"").replace("127.0.0.1:7000", "127.0.0.1:0"));
    assert_eq!(
        e,
        vec![
            "node.name: invalid name \"..\": \".\" and \"..\" are reserved (no URL path can name them)",
            "routes[0].listen: invalid listen address \"127.0.0.1:0\": port 0 is not a listen port (clients must know it)",
        ]
    );
    let e = errors(&GOOD.replace("name = \"web\"", "name = \".\""));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("routes[0].name: invalid name \".\""), "{e:?}");
}

#[test]
fn port_only_listen_conflicts_with_the_same_resolved_address() {
    let text = GOOD.replace("[admin]", "bind_addr = \"127.0.0.1\"\n[admin]")
        + "[[routes]]\nname = \"b\"\nlisten = \":7000\"\n[[routes.backends]]\nid = \"a\"\naddr = \"127.0.0.1:9001\"\n";
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("routes[1].listen: \":7000\" collides with routes[0].listen"), "{e:?}");
}

const CLUSTER: &str = r#"
[node]
name = "n2"
data_dir = "/tmp/ferry-n2"
[cluster]
node_id = 2
addr = "127.0.0.2:7947"
initial_members = ["1@127.0.0.1:7947", "2@127.0.0.2:7947", "3@127.0.0.3:7947"]
"#;

#[test]
fn cluster_section_parses_with_defaults() -> Result<(), ConfigErrors> {
    let c = Config::parse(CLUSTER)?.validate()?;
    let cluster = c.cluster.expect("cluster section");
    assert_eq!(cluster.cluster_id, "ferry");
    assert_eq!(cluster.members().len(), 3);
    assert_eq!(cluster.members()[1], (2, "127.0.0.2:7947".parse().expect("addr")));
    Ok(())
}

#[test]
fn cluster_problems_name_their_fields() {
    let text = CLUSTER
        .replace("data_dir = \"/tmp/ferry-n2\"\n", "")
        .replace("\"3@127.0.0.3:7947\"", "\"3@nowhere\", \"1@127.0.0.9:1\"")
        .replace("2@127.0.0.2:7947\"", "2@127.0.0.5:7947\"");
    let e = errors(&format!("{text}election_timeout_min_ms = 299\n"));
    for want in [
        "cluster.election_timeout_min_ms: must be at least 3 x heartbeat_ms (300)",
        "cluster.initial_members[1]: node 2 is this node, whose addr is 127.0.0.2:7947",
        "cluster.initial_members[2]: invalid socket address \"nowhere\" in \"3@nowhere\"",
        "cluster.initial_members[3]: duplicate node id 1",
        "node.data_dir: is required with [cluster]",
    ] {
        assert!(e.iter().any(|l| l == want), "missing {want:?} in {e:#?}");
    }
}

const GOSSIP: &str = r#"
[node]
data_dir = "/tmp/ferry-g"
[cluster]
addr = "127.0.0.4:7947"
[gossip]
join = ["127.0.0.1", "127.0.0.2:8946", "ferry-1.example:7946"]
"#;

#[test]
fn gossip_section_defaults_its_address_from_the_cluster_ip() -> Result<(), ConfigErrors> {
    let c = Config::parse(GOSSIP)?.validate()?;
    let (cluster, gossip) = (c.cluster.expect("cluster"), c.gossip.expect("gossip"));
    assert_eq!(cluster.node_id, 0, "random id");
    assert_eq!(gossip.addr(&cluster), "127.0.0.4:7946".parse().expect("addr"));
    assert_eq!(gossip.profile, ferry_gossip::Profile::Lan);
    assert_eq!((cluster.max_voters, cluster.dead_node_timeout_ms), (5, 60_000));
    assert!(!cluster.leave_on_terminate, "a stopped node keeps its place by default");
    Ok(())
}

#[test]
fn leave_on_terminate_needs_gossip() -> Result<(), ConfigErrors> {
    let c = Config::parse(&GOSSIP.replace("[gossip]", "leave_on_terminate = true\n[gossip]"))?.validate()?;
    assert!(c.cluster.expect("cluster").leave_on_terminate);
    let e = errors(&format!("{CLUSTER}leave_on_terminate = true\n"));
    let want = "cluster.leave_on_terminate: needs [gossip]";
    assert!(e.iter().any(|l| l.starts_with(want)), "missing {want:?} in {e:#?}");
    Ok(())
}

#[test]
fn seeds_take_a_host_and_an_optional_port() {
    assert_eq!(parse_seed("10.0.0.1"), Ok(("10.0.0.1".into(), 7946)));
    assert_eq!(parse_seed("10.0.0.1:9"), Ok(("10.0.0.1".into(), 9)));
    assert_eq!(parse_seed("[::1]:9"), Ok(("::1".into(), 9)));
    assert_eq!(parse_seed("node-2.lan"), Ok(("node-2.lan".into(), 7946)));
    assert!(parse_seed("a b").is_err());
    // Port 0 and an unspecified IP reach nobody: accepted before for an IP.
    for bad in ["10.0.0.1:0", "node-2.lan:0", "0.0.0.0:7946", "[::]:7946", "0.0.0.0", "-n.lan", "a..b:9"] {
        assert!(parse_seed(bad).is_err(), "{bad:?}");
    }
    assert!(parse_member("1@127.0.0.1:0").is_err());
    assert!(parse_member("1@0.0.0.0:7947").is_err());
    assert_eq!(parse_member("1@127.0.0.1:7947"), Ok((1, "127.0.0.1:7947".parse().expect("addr"))));
    assert!(parse_seed("host:x").is_err());
    assert!(parse_seed("").is_err());
}

#[test]
fn gossip_problems_name_their_fields() {
    let text =
        GOSSIP.replace("\"127.0.0.1\", ", "\"bad seed\", ") + "bootstrap_expect = 11\nprobe_period_ms = 0\n";
    let text = text.replace("addr = \"127.0.0.4:7947\"", "addr = \"127.0.0.4:7947\"\nmax_voters = 4");
    let e = errors(&text);
    for want in [
        "gossip.join[0]: expected HOST or HOST:PORT, got \"bad seed\"",
        "gossip.bootstrap_expect: must be at most 9 (voters), got 11",
        "cluster.max_voters: must be odd, 1 to 9, got 4",
    ] {
        assert!(e.iter().any(|l| l == want), "missing {want:?} in {e:#?}");
    }
    assert!(e.iter().any(|l| l.starts_with("gossip.probe_period_ms")), "{e:#?}");
}

#[test]
fn gossip_needs_a_way_to_form_or_join_and_a_cluster_section() {
    let e =
        errors(&GOSSIP.replace("join = [\"127.0.0.1\", \"127.0.0.2:8946\", \"ferry-1.example:7946\"]", ""));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("gossip.join: give the members to join"), "{e:?}");
    let e = errors("[gossip]\nbootstrap_expect = 1\n");
    assert_eq!(e, vec!["gossip: requires a [cluster] section"]);
    let e = errors(&format!("{CLUSTER}[gossip]\nbootstrap_expect = 3\n"));
    assert_eq!(
        e,
        vec!["gossip.bootstrap_expect: conflicts with [cluster] initial_members: choose one way to form"]
    );
    let e = errors(&CLUSTER.replace("node_id = 2\n", ""));
    assert!(e.contains(&"cluster.node_id: is required with initial_members".to_string()), "{e:?}");
}

#[test]
fn otlp_endpoint_must_be_plain_http() {
    let e = errors("[telemetry]\notlp_endpoint = \"https://collector:4317\"");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("telemetry.otlp_endpoint: expected an http:// URL"), "{e:?}");
    assert!(errors("[telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"").is_empty());
    assert!(errors("[telemetry]\notlp_endpoint = \"\"").is_empty(), "empty: export nothing");
    let e = errors("[telemetry]\notlp_endpoint = \"http://bad host:1\"");
    assert!(e[0].starts_with("telemetry.otlp_endpoint: invalid URL \"http://bad host:1\""), "{e:?}");
}

/// Before, these were found by `Node::start` after the route
/// listeners were bound: `--check-config` said ok and `--config` exited 1.
#[test]
fn an_unreadable_or_empty_token_file_is_a_config_error() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("ferry-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (empty, good, missing) = (dir.join("empty"), dir.join("good"), dir.join("missing"));
    std::fs::write(&empty, " \n")?;
    std::fs::write(&good, "s3cret\n")?;
    let with = |p: &std::path::Path| errors(&format!("[admin]\ntoken_file = {:?}", p.display().to_string()));
    assert_eq!(with(&empty), [format!("admin.token_file: {} is empty", empty.display())]);
    let e = with(&missing);
    assert!(
        e.len() == 1 && e[0].starts_with(&format!("admin.token_file: cannot read {}", missing.display())),
        "{e:?}"
    );
    assert!(with(&good).is_empty());
    let mut admin = Config::default().admin;
    admin.token_file = Some(good);
    assert_eq!(admin.read_token()?, Some("s3cret".to_string()), "trimmed");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn admin_timeouts_and_connection_cap_are_positive_and_bounded() -> Result<(), ConfigErrors> {
    let c = Config::parse("")?.validate()?;
    let a = &c.admin;
    assert_eq!((a.header_timeout_ms, a.body_timeout_ms, a.max_connections), (10_000, 10_000, 512));
    let text =
        "[admin]\nheader_timeout_ms = 0\nbody_timeout_ms = 0\nmax_connections = 0\nrequest_timeout_ms = 0";
    assert_eq!(
        errors(text),
        [
            "admin.request_timeout_ms: must be greater than 0",
            "admin.header_timeout_ms: must be greater than 0",
            "admin.body_timeout_ms: must be greater than 0",
            "admin.max_connections: must be greater than 0",
        ]
    );
    let text = "[admin]\nheader_timeout_ms = 9223372036854775807\nmax_connections = 100000";
    assert_eq!(
        errors(text),
        [
            "admin.header_timeout_ms: must be at most 3600000, got 9223372036854775807",
            "admin.max_connections: must be at most 65536, got 100000",
        ]
    );
    assert!(
        errors("[admin]\nheader_timeout_ms = 250\nbody_timeout_ms = 3600000\nmax_connections = 1").is_empty()
    );
    Ok(())
}

#[test]
fn syntax_error_has_a_line() {
    let e = errors("[node\nname = 1");
    assert_eq!(e.len(), 1);
    assert!(e[0].contains("line 1"), "{e:?}");
}

#[test]
fn empty_file_is_a_node_without_routes() -> Result<(), ConfigErrors> {
    let c = Config::parse("")?.validate()?;
    assert!(c.routes.is_empty());
    assert_eq!(c.node.copy, CopyMode::Userspace, "the benchmark's fastest mode is the default");
    assert_eq!(c.admin.addr, default_admin_addr());
    Ok(())
}

#[test]
fn toxiproxy_addr_is_off_by_default_and_needs_cluster_mode() -> Result<(), ConfigErrors> {
    assert_eq!(Config::parse(CLUSTER)?.validate()?.toxiproxy_addr(), None);
    let on = format!("{CLUSTER}\n[chaos]\ntoxiproxy_addr = \"127.0.0.2:8474\"\n");
    let c = Config::parse(&on)?.validate()?;
    assert_eq!(c.toxiproxy_addr(), Some("127.0.0.2:8474".parse().expect("addr")));
    assert!(
        c.reserved_addrs(c.admin.addr).iter().any(|r| r.what.contains("Toxiproxy")),
        "no route may listen on it"
    );
    let standalone = errors("[chaos]\ntoxiproxy_addr = \"127.0.0.1:8474\"\n");
    assert_eq!(standalone.len(), 1, "{standalone:?}");
    assert!(
        standalone[0].starts_with("chaos.toxiproxy_addr: requires a [cluster] section")
            && standalone[0].contains("only in cluster mode"),
        "{standalone:?}"
    );
    let bad = errors(&format!("{CLUSTER}\n[chaos]\ntoxiproxy_addr = \"localhost\"\n"));
    assert!(bad.len() == 1 && bad[0].starts_with("chaos.toxiproxy_addr: "), "{bad:?}");
    let zero = errors(&format!("{CLUSTER}\n[chaos]\ntoxiproxy_addr = \"127.0.0.2:0\"\n"));
    assert_eq!(
        zero,
        ["chaos.toxiproxy_addr: must have a fixed port (Toxiproxy clients are told it), got 127.0.0.2:0"]
    );
    let admin = errors(&format!("{CLUSTER}\n[chaos]\ntoxiproxy_addr = \"0.0.0.0:7948\"\n"));
    assert!(admin.iter().any(|e| e.contains("collides with the admin address")), "{admin:?}");
    let unknown = errors(&format!("{CLUSTER}\n[chaos]\ntoxiproxy = \"127.0.0.2:8474\"\n"));
    assert!(unknown.len() == 1 && unknown[0].starts_with("chaos.toxiproxy: "), "{unknown:?}");
    Ok(())
}
