//! Query and path parameters of the admin API, and the one rule for them:
//! every endpoint names the query parameters it takes, and anything else
//! (an unknown name, a name given twice, a bad value) is a 400 whose
//! `fields` name the parameter. Path parameters that do not decode (`%FF`)
//! are a 400 naming the path parameter.
//!
//! Values are parsed strictly: `?cas=+5` or `?index=5x` are refused, not
//! read as 5.

use std::time::Duration;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::ApiError;

/// Longest parameter name quoted back in an error.
const MAX_QUOTED: usize = 64;

/// The query parameters of one endpoint.
pub trait QueryParams: Default + Send {
    /// Every parameter the endpoint takes.
    const NAMES: &'static [&'static str];

    /// Sets parameter `name` (one of [`Self::NAMES`], given once) to `value`,
    /// or refuses the value, naming the parameter.
    fn set(&mut self, name: &str, value: &str) -> Result<(), ApiError>;
}

/// Parses the query string `query` into `T`.
pub fn parse<T: QueryParams>(query: &str) -> Result<T, ApiError> {
    let mut out = T::default();
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name.is_empty() {
            return Err(ApiError::field("query", format!("a parameter without a name (value {value:?})")));
        }
        let quoted: String = name.chars().take(MAX_QUOTED).collect();
        if !T::NAMES.contains(&name.as_ref()) {
            let message = match T::NAMES {
                [] => "unknown query parameter: this endpoint takes none".to_string(),
                names => format!("unknown query parameter: this endpoint takes {}", names.join(", ")),
            };
            return Err(ApiError::field(&quoted, message));
        }
        if seen.iter().any(|s| *s == name) {
            return Err(ApiError::field(&quoted, "given more than once"));
        }
        out.set(&name, &value)?;
        seen.push(name.into_owned());
    }
    Ok(out)
}

/// Query parameters of type `T`, checked by [`parse`].
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: QueryParams, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse(parts.uri.query().unwrap_or("")).map(Params)
    }
}

/// An endpoint that takes no query parameters.
#[derive(Debug, Default)]
pub struct NoParams;

impl QueryParams for NoParams {
    const NAMES: &'static [&'static str] = &[];

    fn set(&mut self, name: &str, _: &str) -> Result<(), ApiError> {
        Err(ApiError::field(name, "unknown query parameter: this endpoint takes none"))
    }
}

/// Middleware for an endpoint without query parameters: refuses any.
pub async fn no_params(req: Request, next: Next) -> Response {
    match parse::<NoParams>(req.uri().query().unwrap_or("")) {
        Ok(NoParams) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// `?consistency=…&index=…&wait=…` of a read.
#[derive(Debug, Default)]
pub struct ReadParams {
    /// `linearizable` (default) or `stale`.
    pub consistency: Option<String>,
    /// Blocking query: answer once the config index passes this.
    pub index: Option<u64>,
    /// Blocking query: longest wait, e.g. `30s`, `500ms`, `5m`.
    pub wait: Option<String>,
}

impl QueryParams for ReadParams {
    const NAMES: &'static [&'static str] = &["consistency", "index", "wait"];

    fn set(&mut self, name: &str, value: &str) -> Result<(), ApiError> {
        match name {
            "consistency" => self.consistency = Some(value.to_string()),
            "index" => self.index = Some(number(name, value)?),
            _ => self.wait = Some(value.to_string()),
        }
        Ok(())
    }
}

impl ReadParams {
    /// Checks the values: whether the read may be stale, and the wait given.
    /// A standalone node (whose reads are all local) checks them too, so a
    /// bad value is refused whatever the mode.
    pub fn check(&self) -> Result<(bool, Option<Duration>), ApiError> {
        let stale = match self.consistency.as_deref() {
            None | Some("linearizable") => false,
            Some("stale") => true,
            Some(other) => {
                return Err(ApiError::field(
                    "consistency",
                    format!("expected linearizable or stale, got {other:?}"),
                ));
            }
        };
        let wait = match &self.wait {
            None => None,
            Some(_) if self.index.is_none() => return Err(ApiError::field("wait", "goes with index")),
            Some(w) => Some(parse_duration(w).ok_or_else(|| {
                ApiError::field("wait", format!("expected a duration like 30s, 500ms or 5m, got {w:?}"))
            })?),
        };
        Ok((stale, wait))
    }
}

/// `?min_index=N&wait=D` of `GET /v1/status`: answer once this node's data
/// plane runs config index N (or after `wait`, default 5 m, with the index
/// it runs then).
#[derive(Debug, Default)]
pub struct StatusParams {
    pub min_index: Option<u64>,
    pub wait: Option<Duration>,
}

impl QueryParams for StatusParams {
    const NAMES: &'static [&'static str] = &["min_index", "wait"];

    fn set(&mut self, name: &str, value: &str) -> Result<(), ApiError> {
        match name {
            "min_index" => self.min_index = Some(number(name, value)?),
            _ => {
                self.wait = Some(parse_duration(value).ok_or_else(|| {
                    ApiError::field(
                        "wait",
                        format!("expected a duration like 30s, 500ms or 5m, got {value:?}"),
                    )
                })?)
            }
        }
        Ok(())
    }
}

/// `?cas=N` of a write.
#[derive(Debug, Default)]
pub struct WriteParams {
    /// Expected revision; 0 = must not exist.
    pub cas: Option<u64>,
}

impl QueryParams for WriteParams {
    const NAMES: &'static [&'static str] = &["cas"];

    fn set(&mut self, name: &str, value: &str) -> Result<(), ApiError> {
        self.cas = Some(number(name, value)?);
        Ok(())
    }
}

/// A decimal number: digits only (no sign, no spaces), within u64.
fn number(name: &str, value: &str) -> Result<u64, ApiError> {
    let quoted: String = value.chars().take(MAX_QUOTED).collect();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::field(name, format!("expected a non-negative integer, got {quoted:?}")));
    }
    value.parse().map_err(|_| ApiError::field(name, format!("{quoted} is too large")))
}

/// `30s`, `500ms`, `5m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

/// Path parameters, as axum's `Path`, whose rejections name the parameter
/// (`name`, `id`) instead of answering without `fields`.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        let rejection = match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(p) => return Ok(Path(p.0)),
            Err(r) => r,
        };
        let PathRejection::FailedToDeserializePathParams(e) = &rejection else {
            return Err(ApiError::field("path", rejection.body_text()));
        };
        Err(match e.kind() {
            ErrorKind::InvalidUtf8InPathParam { key } => {
                ApiError::field(key, "is not valid UTF-8 once percent-decoded")
            }
            ErrorKind::ParseErrorAtKey { key, value, expected_type } => {
                ApiError::field(key, format!("cannot parse {value:?} as {expected_type}"))
            }
            ErrorKind::DeserializeError { key, message, .. } => ApiError::field(key, message.clone()),
            _ => ApiError::field("path", e.body_text()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The path and message of the first field of `e`.
    fn named(e: ApiError) -> String {
        e.body.error.fields.first().map(|f| f.path.clone()).unwrap_or_default()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("+5s"), None);
    }

    #[test]
    fn values_are_parsed_strictly_and_errors_name_the_parameter() {
        let read = |q: &str| parse::<ReadParams>(q).err().map(named);
        let write = |q: &str| parse::<WriteParams>(q).err().map(named);
        assert_eq!(read("consistency=stale&index=3&wait=1s"), None);
        assert_eq!(write("cas=0"), None);
        assert_eq!(write(""), None);
        for (query, field) in [
            ("cas=abc", "cas"),
            ("cas=+5", "cas"),
            ("cas=5x", "cas"),
            ("cas=", "cas"),
            ("cas=99999999999999999999", "cas"),
            ("cas=1&cas=1", "cas"),
            ("cas=1&foo=2", "foo"),
            ("consistency=stale", "consistency"),
            ("=1", "query"),
        ] {
            assert_eq!(write(query).as_deref(), Some(field), "{query}");
        }
        assert_eq!(read("index=%2B1").as_deref(), Some("index"));
        assert_eq!(read("cas=1").as_deref(), Some("cas"));
        assert_eq!(read("foo%FF=1").as_deref(), Some("foo\u{fffd}"));
        assert_eq!(parse::<NoParams>("consistency=stale").err().map(named).as_deref(), Some("consistency"));
        assert!(parse::<NoParams>("").is_ok());
        let long = format!("{}=1", "k".repeat(1000));
        assert_eq!(parse::<NoParams>(&long).err().map(named).map(|p| p.len()), Some(MAX_QUOTED));
    }

    #[test]
    fn parsed_values_land_in_their_fields() -> Result<(), ApiError> {
        let r = parse::<ReadParams>("consistency=stale&index=42&wait=500ms")?;
        assert_eq!(
            (r.consistency.as_deref(), r.index, r.wait.as_deref()),
            (Some("stale"), Some(42), Some("500ms"))
        );
        assert_eq!(r.check()?, (true, Some(Duration::from_millis(500))));
        assert_eq!(parse::<WriteParams>("cas=7")?.cas, Some(7));
        Ok(())
    }
}
