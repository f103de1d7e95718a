//! Route and chaos-policy files: `-` is stdin; TOML (`[[routes]]`, read
//! by the same function as `ferryd --check-config`, so the same messages
//! and lines) or JSON (one object or an array), by extension, else by
//! content. Every problem is found here, before anything is sent.

use std::io::Read;
use std::path::Path;

use ferry_client::chaos::ChaosPolicy;
use ferry_client::route::{RouteSpec, validate_routes};
use ferry_client::toml_input::parse_route_file;
use ferry_client::{FieldError, route};
use serde::de::DeserializeOwned;

use crate::out::{Exit, Failure};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

/// The text of `path` (`-`: stdin) and its format from its extension.
pub fn read(path: &Path) -> Result<(String, Option<Format>), Failure> {
    let cannot =
        |e: std::io::Error| Failure::new(Exit::Usage, format!("cannot read {}: {e}", path.display()));
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(cannot)?;
        return Ok((text, None));
    }
    let text = std::fs::read_to_string(path).map_err(cannot)?;
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => Some(Format::Toml),
        Some("json") => Some(Format::Json),
        _ => None,
    };
    Ok((text, format))
}

/// JSON when the text starts with `{`, or with `[` followed by `{`, `]` or
/// nothing; TOML otherwise (`[[routes]]`, `[routes.x]`, `key = …`).
pub fn detect(text: &str) -> Format {
    let t = text.trim_start();
    if t.starts_with('{') {
        return Format::Json;
    }
    match t.strip_prefix('[').map(str::trim_start) {
        Some(rest) if rest.is_empty() || rest.starts_with(['{', ']']) => Format::Json,
        _ => Format::Toml,
    }
}

/// Reads JSON as a `T`, an error naming the field path and the line.
fn json<T: DeserializeOwned>(text: &str, prefix: &str) -> Result<T, FieldError> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let rel = e.path().to_string();
        let path = match rel.as_str() {
            "." => prefix.to_string(),
            r if r.starts_with('[') => format!("{prefix}{r}"),
            r if prefix.is_empty() => r.to_string(),
            r => format!("{prefix}.{r}"),
        };
        FieldError::new(path, e.into_inner().to_string())
    })
}

/// Whether the JSON text is an array (else one object).
fn is_array(text: &str) -> bool {
    text.trim_start().starts_with('[')
}

/// The routes of a file, each valid as new input; problems name
/// `routes[i]…` (TOML, a JSON array) or `route…` (one JSON object, as the
/// API names them).
pub fn routes(text: &str, format: Option<Format>) -> Result<Vec<RouteSpec>, Failure> {
    let usage = |problems: Vec<FieldError>| Failure::fields(Exit::Usage, &problems);
    match format.unwrap_or_else(|| detect(text)) {
        Format::Toml => parse_route_file(text).map_err(usage),
        Format::Json if is_array(text) => {
            let routes: Vec<RouteSpec> = json(text, "routes").map_err(|e| usage(vec![e]))?;
            let problems = validate_routes(&routes, "routes");
            if routes.is_empty() {
                return Err(Failure::new(Exit::Usage, "routes: the file holds no route"));
            }
            if problems.is_empty() { Ok(routes) } else { Err(usage(problems)) }
        }
        Format::Json => {
            let r: RouteSpec = json(text, "route").map_err(|e| usage(vec![e]))?;
            let mut problems = Vec::new();
            r.validate("route", &mut problems);
            if problems.is_empty() { Ok(vec![r]) } else { Err(usage(problems)) }
        }
    }
}

/// The chaos policies of a JSON file (one object or an array), each valid
/// as new input; problems name `policy…` or `policies[i]…`.
pub fn policies(text: &str) -> Result<Vec<ChaosPolicy>, Failure> {
    let usage = |problems: Vec<FieldError>| Failure::fields(Exit::Usage, &problems);
    if detect(text) == Format::Toml {
        return Err(Failure::new(Exit::Usage, "a chaos policy file is JSON: one policy object or an array"));
    }
    let (policies, prefix): (Vec<ChaosPolicy>, _) = if is_array(text) {
        (json(text, "policies").map_err(|e| usage(vec![e]))?, "policies")
    } else {
        (vec![json(text, "policy").map_err(|e| usage(vec![e]))?], "")
    };
    if policies.is_empty() {
        return Err(Failure::new(Exit::Usage, "policies: the file holds no policy"));
    }
    let mut problems = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, p) in policies.iter().enumerate() {
        let path = if prefix.is_empty() { "policy".to_string() } else { format!("{prefix}[{i}]") };
        problems.extend(p.validate(&path));
        if !names.insert(p.name.as_str()) {
            problems.push(FieldError::new(format!("{path}.name"), format!("duplicate name {:?}", p.name)));
        }
    }
    if problems.is_empty() { Ok(policies) } else { Err(usage(problems)) }
}

/// Checks a name given on the command line (a route, backend or policy)
/// as the API would, so that a bad one fails before anything is sent.
pub fn check_name(what: &str, name: &str) -> Result<(), Failure> {
    match route::name_problem(what, name, route::Rules::Input) {
        None => Ok(()),
        Some(msg) => Err(Failure::new(Exit::Usage, msg)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
[[routes]]
name = "web"
listen = "127.0.0.1:7000"
  [[routes.backends]]
  id = "a"
  addr = "127.0.0.1:9001"

[[routes]]
name = "db"
listen = ":7001"
  [[routes.backends]]
  id = "b"
  addr = "127.0.0.1:9002"
"#;

    #[test]
    fn toml_and_json_by_content_or_extension() {
        assert_eq!(detect(TOML), Format::Toml);
        assert_eq!(detect("  {\"name\": 1}"), Format::Json);
        assert_eq!(detect("[\n {\"name\": 1}]"), Format::Json);
        assert_eq!(detect("[]"), Format::Json);
        assert_eq!(detect("[routes]\n"), Format::Toml);
        let rs = routes(TOML, None).expect("valid");
        assert_eq!(rs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["web", "db"]);
        let one = r#"{"name":"web","listen":":80","backends":[{"id":"a","addr":"127.0.0.1:1"}]}"#;
        assert_eq!(routes(one, Some(Format::Json)).expect("valid")[0].name, "web");
        let two = format!("[{one}, {}]", one.replace("web", "api"));
        assert_eq!(routes(&two, None).expect("valid").len(), 2);
    }

    /// The same lines as `ferryd --check-config` (node/src/config/tests.rs
    /// holds its side): a parse problem with its line, a validation problem
    /// by path, in the order of the file.
    #[test]
    fn toml_problems_name_the_field_and_the_line() {
        let text = TOML
            .replace("  addr = \"127.0.0.1:9001\"", "  addr = \"127.0.0.1:9001\"\n  wieght = 4")
            .replace("listen = \":7001\"", "listen = 7001");
        let f = routes(&text, Some(Format::Toml)).expect_err("bad");
        assert_eq!(f.exit, Exit::Usage);
        assert_eq!(f.lines.len(), 2, "{:?}", f.lines);
        assert!(
            f.lines[0].starts_with("routes[0].backends[0].wieght: unknown field `wieght`"),
            "{:?}",
            f.lines
        );
        assert!(f.lines[0].ends_with("(line 8, column 3)"), "{:?}", f.lines);
        assert!(f.lines[1].starts_with("routes[1].listen: invalid type: integer `7001`"), "{:?}", f.lines);
        assert!(f.lines[1].contains("(line 12,"), "{:?}", f.lines);

        let f = routes(&TOML.replace("127.0.0.1:9002", "nope"), None).expect_err("bad addr");
        assert_eq!(f.lines.len(), 1, "{:?}", f.lines);
        assert!(f.lines[0].starts_with("routes[1].backends[0].addr: "), "{:?}", f.lines);

        let f = routes("[node]\nname = \"x\"\n", Some(Format::Toml)).expect_err("no routes");
        assert!(f.lines.iter().any(|l| l.starts_with("routes: no [[routes]]")), "{:?}", f.lines);
        assert!(f.lines.iter().any(|l| l.starts_with("node: unknown field `node`") && l.contains("line 1")));
        let f = routes("[[routes]\n", None).expect_err("syntax");
        assert!(f.lines[0].contains("line 1"), "{:?}", f.lines);
    }

    #[test]
    fn json_problems_name_the_field_as_the_api_does() {
        let bad = r#"{"name":"web","listen":":80","backends":[{"id":"a","addr":"x"}]}"#;
        let f = routes(bad, None).expect_err("bad addr");
        assert_eq!(f.lines.len(), 1);
        assert!(f.lines[0].starts_with("route.backends[0].addr: "), "{:?}", f.lines);
        let typo =
            "[\n{\"name\":\"web\",\n\"listen\":\":80\",\n\"backends\":[{\"id\":\"a\",\"adr\":\"x\"}]}]";
        let f = routes(typo, None).expect_err("unknown field");
        assert!(f.lines[0].starts_with("routes[0].backends[0].adr: unknown field `adr`"), "{:?}", f.lines);
        assert!(f.lines[0].contains("line 4"), "{:?}", f.lines);
        assert!(routes("[]", None).is_err());
    }

    #[test]
    fn policy_files_are_json_objects_or_arrays() {
        let p = r#"{"name":"slow","toxics":[{"kind":{"latency":{"latency_ms":100}}}]}"#;
        assert_eq!(policies(p).expect("valid")[0].name, "slow");
        let f = policies(&format!("[{p}, {p}]")).expect_err("duplicate");
        assert_eq!(f.lines, ["policies[1].name: duplicate name \"slow\""]);
        let f = policies(&p.replace("100", "3600001")).expect_err("too long");
        assert!(
            f.lines[0].starts_with("policy.toxics[0].kind.latency.latency_ms: must be at most"),
            "{:?}",
            f.lines
        );
        assert!(policies("[[routes]]\n").is_err());
    }
}
