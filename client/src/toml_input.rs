//! Reading TOML input leniently (feature `toml`): every unknown field,
//! wrongly typed value and missing required field is reported with its path
//! and line, and one problem hides no other. ferryd's config file and
//! ferryctl's route files both read `[[routes]]` with
//! [`parse_routes`], so both report the same messages and lines.

use serde_path_to_error::Segment;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::FieldError;
use crate::route::{RouteSpec, validate_routes};

/// Reads a file of `[[routes]]` tables only (ferryctl's `route put -f`):
/// every parse problem in the order of the file, then every validation
/// problem not about a field that already had one (as `ferryd
/// --check-config` reports them); paths are `routes[i]…`. Listen-address
/// conflicts depend on the nodes, so the server checks them.
pub fn parse_route_file(text: &str) -> Result<Vec<RouteSpec>, Vec<FieldError>> {
    let mut root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => return Err(vec![toml_error("", &e, text)]),
    };
    let mut errors = Vec::new();
    let routes = match root.get_mut().remove("routes") {
        None => {
            let msg = "no [[routes]] table: a route file holds one or several [[routes]]";
            errors.push((0, FieldError::new("routes", msg)));
            None
        }
        Some(value) => parse_routes(value, text, &mut errors),
    };
    for (key, value) in root.get_ref() {
        let msg = format!(
            "unknown field `{}`: a route file holds [[routes]] tables only{}",
            key.get_ref(),
            at(key.span(), text)
        );
        errors.push((
            value.span().start.min(key.span().start),
            FieldError::new(key.get_ref().to_string(), msg),
        ));
    }
    errors.sort_by_key(|(at, _)| *at);
    let mut problems: Vec<FieldError> = errors.into_iter().map(|(_, e)| e).collect();
    let Some(routes) = routes else { return Err(problems) };
    let mut more = validate_routes(&routes, "routes");
    more.retain(|m| !problems.iter().any(|p| is_at_or_under(&m.path, &p.path)));
    problems.extend(more);
    if problems.is_empty() { Ok(routes) } else { Err(problems) }
}

/// Whether field path `path` is `parent` or inside it (`a.b` and `a[0]`
/// are inside `a`; `ab` is not).
pub fn is_at_or_under(path: &str, parent: &str) -> bool {
    !parent.is_empty()
        && path.strip_prefix(parent).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// A problem and where it is in the file (byte offset), to report them in order.
pub type Located = (usize, FieldError);

/// Most problems reported for one part of the file (a route, or the rest).
pub const MAX_PART_ERRORS: usize = 64;

/// `[[routes]]`, each route parsed on its own (problems pushed to
/// `errors`); `None` if a route could not be read at all.
pub fn parse_routes(
    value: Spanned<DeValue<'_>>,
    text: &str,
    errors: &mut Vec<Located>,
) -> Option<Vec<RouteSpec>> {
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        let msg = format!("expected an array of tables ([[routes]]){}", at(span.clone(), text));
        errors.push((span.start, FieldError::new("routes", msg)));
        return None;
    };
    let mut routes = Some(Vec::with_capacity(items.len()));
    for (i, item) in items.into_iter().enumerate() {
        let path = format!("routes[{i}]");
        let span = item.span();
        let (route, e) = match item.into_inner() {
            DeValue::Table(t) => parse_part::<RouteSpec>(Spanned::new(span, t), &path, text),
            other => (
                None,
                vec![(
                    span.start,
                    FieldError::new(
                        path,
                        format!("expected a table, got {}{}", other.type_str(), at(span.clone(), text)),
                    ),
                )],
            ),
        };
        errors.extend(e);
        match (route, &mut routes) {
            (Some(route), Some(routes)) => routes.push(route),
            _ => routes = None,
        }
    }
    routes
}

/// Deserializes `table` as a `T`, reporting every problem rather than the
/// first: after each error the offending key is taken out of the table
/// and the rest deserialized again. A required field that is missing, or
/// was taken out, is reported once, and a placeholder of each TOML type in
/// turn stands in for it until one deserializes. Returns the value (with
/// defaults and placeholders where problems were, for validation to look
/// at the rest) unless it stopped early on a problem it cannot take out
/// (a wrongly typed array element), and the problems. Paths are prefixed
/// with `prefix`.
pub fn parse_part<T: serde::de::DeserializeOwned>(
    mut table: Spanned<DeTable<'_>>,
    prefix: &str,
    text: &str,
) -> (Option<T>, Vec<Located>) {
    let mut errors = Vec::new();
    // Path (as printed) of every key taken out, with its table's segments.
    let mut removed: Vec<(String, Vec<Segment>, String)> = Vec::new();
    // Path of every placeholder put in, and the next kind to try.
    let mut placeholders: Vec<(String, usize)> = Vec::new();
    for _ in 0..MAX_PART_ERRORS * 4 {
        let e = match serde_path_to_error::deserialize::<_, T>(toml::de::Deserializer::from(table.clone())) {
            Ok(value) => return (Some(value), errors),
            Err(e) => e,
        };
        let rel = e.path().to_string();
        let rel = if rel == "." { String::new() } else { rel };
        let message = e.inner().message();
        // A placeholder of the wrong type, or a required field taken out:
        // (re)place it.
        let missing = message.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`'));
        let retry = placeholders.iter().position(|(p, _)| *p == rel).or_else(|| {
            let field = missing?;
            let path = join_path(&rel, field);
            if !removed.iter().any(|(p, _, k)| k == field && *p == path) {
                // Missing from the file: report it, then stand a
                // placeholder in as for a field taken out.
                let span = e.inner().span();
                let pos = span.as_ref().map_or(0, |s| s.start);
                let line = span.map_or_else(String::new, |s| at(s, text));
                errors.push((pos, FieldError::new(join_path(prefix, &path), format!("is required{line}"))));
                removed.push((path.clone(), e.path().iter().cloned().collect(), field.to_string()));
            }
            placeholders.push((path, 0));
            Some(placeholders.len() - 1)
        });
        if let Some(i) = retry {
            let (path, kind) = &mut placeholders[i];
            let Some((_, parents, key)) = removed.iter().find(|(p, _, _)| *p == *path) else { break };
            let Some(value) = placeholder(*kind) else { break };
            *kind += 1;
            let parents: Vec<&Segment> = parents.iter().collect();
            match table_at(table.get_mut(), &parents) {
                Some(t) => t.insert(Spanned::new(0..0, key.clone().into()), Spanned::new(0..0, value)),
                None => break,
            };
            continue;
        }
        if errors.len() == MAX_PART_ERRORS {
            break;
        }
        let pos = e.inner().span().map_or(0, |s| s.start);
        errors.push((pos, toml_error(&join_path(prefix, &rel), e.inner(), text)));
        let segments: Vec<&Segment> = e.path().iter().collect();
        let Some((Segment::Map { key }, parents)) = segments.split_last() else { break };
        if table_at(table.get_mut(), parents).and_then(|t| t.remove(key.as_str())).is_none() {
            break;
        }
        removed.push((rel.clone(), parents.iter().map(|s| (*s).clone()).collect(), key.clone()));
    }
    (None, errors)
}

/// `a.b` from `a` and `b`; `a[0]` from `a` and `[0]`.
fn join_path(prefix: &str, rel: &str) -> String {
    match (prefix.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if rel.starts_with('[') => format!("{prefix}{rel}"),
        (false, false) => format!("{prefix}.{rel}"),
    }
}

/// Stand-ins for a required field, one of each TOML type its value may be.
fn placeholder(kind: usize) -> Option<DeValue<'static>> {
    Some(match kind {
        0 => DeValue::String("".into()),
        1 => DeValue::Boolean(false),
        2 => DeValue::Array(Default::default()),
        3 => DeValue::Table(DeTable::new()),
        _ => return None,
    })
}

/// The table at `path` under `table`, if there is one.
fn table_at<'t, 'i>(table: &'t mut DeTable<'i>, path: &[&Segment]) -> Option<&'t mut DeTable<'i>> {
    match path.split_first() {
        None => Some(table),
        Some((Segment::Map { key }, rest)) => value_table_at(table.get_mut(key.as_str())?.get_mut(), rest),
        Some(_) => None,
    }
}

fn value_table_at<'t, 'i>(value: &'t mut DeValue<'i>, path: &[&Segment]) -> Option<&'t mut DeTable<'i>> {
    match (value, path.split_first()) {
        (DeValue::Table(t), _) => table_at(t, path),
        (DeValue::Array(a), Some((Segment::Seq { index }, rest))) => {
            value_table_at(a.get_mut(*index)?.get_mut(), rest)
        }
        _ => None,
    }
}

/// ` (line L, column C)` of the byte range `span` in `text`.
pub fn at(span: std::ops::Range<usize>, text: &str) -> String {
    let before = text.get(..span.start.min(text.len())).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |p| p + 1) + 1;
    format!(" (line {line}, column {col})")
}

/// A parse error as one line: `path: message (line L, column C)`. A
/// message that does not show the value it is about (`invalid socket
/// address syntax`, `duplicate key`) gets it quoted from the file.
pub fn toml_error(path: &str, e: &toml::de::Error, text: &str) -> FieldError {
    let mut msg = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else { return FieldError::new(path, msg) };
    let value = text.get(span.clone()).map(str::trim).unwrap_or("");
    let bare = value.trim_matches(['"', '\'']);
    let shown = msg.contains(&format!("\"{bare}\"")) || msg.contains(&format!("`{bare}`"));
    if !value.is_empty() && value.len() <= 80 && !value.contains('\n') && !shown {
        if msg == "duplicate key" {
            msg = format!("duplicate key `{bare}`");
        } else {
            msg = format!("{msg}: {value}");
        }
    }
    FieldError::new(path, format!("{msg}{}", at(span, text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        match parse_route_file(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_route_file_holds_routes_only_and_every_problem_has_its_line() {
        let good = "[[routes]]\nname = \"web\"\nlisten = \":80\"\n[[routes.backends]]\nid = \"a\"\naddr = \"127.0.0.1:1\"\n";
        assert_eq!(parse_route_file(good).map(|r| r.len()), Ok(1));
        let e = lines(&format!("[node]\nname = \"x\"\n{good}"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("node: unknown field `node`") && e[0].ends_with("(line 1, column 2)"),
            "{e:?}"
        );
        let e = lines(&good.replace("id = \"a\"", "id = \"a\"\nport = 1").replace("127.0.0.1:1", "x"));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("routes[0].backends[0].port: unknown field `port`") && e[0].contains("line 6")
        );
        assert!(e[1].starts_with("routes[0].backends[0].addr: invalid address \"x\""), "{e:?}");
        assert!(lines("").iter().any(|l| l.starts_with("routes: no [[routes]]")));
        let e = lines("routes = 3\n");
        assert!(e[0].starts_with("routes: expected an array of tables") && e[0].contains("line 1"), "{e:?}");
    }
}
