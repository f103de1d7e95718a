//! Output: exit statuses and error lines, aligned tables, human durations.

use std::process::ExitCode;
use std::time::Duration;

use ferry_client::api::ErrorBody;
use ferry_client::http::RawResponse;

/// Exit statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 1: the server failed (5xx, a 409 other than a CAS conflict, 401,
    /// ...) or no node could be reached.
    Error = 1,
    /// 2: bad usage, or input refused (by ferryctl, or a 400/413 from the
    /// server); also `members --status` matching no member.
    Usage = 2,
    /// 3: a CAS conflict (409 `cas_mismatch`).
    Conflict = 3,
    /// 4: not found (404).
    NotFound = 4,
}

/// A command's failure: its exit status and the lines for stderr (each
/// printed after `error: `).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub exit: Exit,
    pub lines: Vec<String>,
}

impl Failure {
    pub fn new(exit: Exit, line: impl Into<String>) -> Self {
        Self { exit, lines: vec![line.into()] }
    }

    /// One line per problem (`routes[0].backends[0].addr: …`).
    pub fn fields(exit: Exit, problems: &[ferry_client::FieldError]) -> Self {
        Self { exit, lines: problems.iter().map(ToString::to_string).collect() }
    }

    /// Prints the lines to stderr and gives the exit status.
    pub fn report(&self) -> ExitCode {
        for line in &self.lines {
            eprintln!("error: {line}");
        }
        ExitCode::from(self.exit as u8)
    }
}

/// The exit status of an API error status and code.
pub fn exit_of(status: u16, code: &str) -> Exit {
    match (status, code) {
        (409, "cas_mismatch") => Exit::Conflict,
        (404, _) => Exit::NotFound,
        (400 | 413 | 414 | 431, _) => Exit::Usage,
        _ => Exit::Error,
    }
}

/// The failure an answer that is not a 2xx means: a 400 gives one line per
/// bad field, a CAS conflict names the current revision, a 401 says how
/// to give a token.
pub fn api_failure(r: &RawResponse) -> Failure {
    let Ok(body) = serde_json::from_slice::<ErrorBody>(&r.body) else {
        let text = String::from_utf8_lossy(&r.body);
        return Failure::new(exit_of(r.status, ""), format!("{}: {} {}", r.addr, r.status, text.trim()));
    };
    let e = body.error;
    let exit = exit_of(r.status, &e.code);
    if !e.fields.is_empty() {
        return Failure::fields(exit, &e.fields);
    }
    let line = match (r.status, e.code.as_str()) {
        (409, "cas_mismatch") => {
            let current = e.current.unwrap_or(0);
            let what = if current == 0 { " (it does not exist)".to_string() } else { String::new() };
            format!("cas mismatch: {}; current revision is {current}{what}", e.message)
        }
        (401, _) => format!(
            "{} (401 {}): give the cluster's token with --token, --token-file, FERRY_HTTP_TOKEN or \
             FERRY_HTTP_TOKEN_FILE",
            e.message, e.code
        ),
        _ => format!("{} ({} {})", e.message, r.status, e.code),
    };
    Failure::new(exit, line)
}

/// A table with aligned columns: two spaces between columns, the last one
/// not padded.
#[derive(Debug)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self { rows: vec![header.iter().map(|h| h.to_string()).collect()] }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; cols];
        for row in &self.rows {
            for (i, c) in row.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, c) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(c);
                if i + 1 < row.len() {
                    line.extend(std::iter::repeat_n(' ', widths[i] - c.chars().count()));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// `key  value` lines, keys aligned.
pub fn print_pairs(pairs: &[(&str, String)]) {
    let mut t = Table { rows: Vec::new() };
    for (k, v) in pairs {
        t.row(vec![k.to_string(), v.clone()]);
    }
    t.print();
}

/// Milliseconds since the Unix epoch on this machine (0 before it): the
/// clock of `expires_at` and `taken_at_ms`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A duration as people write it: `450ms`, `12s`, `3m12s`, `2h5m`, `3d4h`
/// (the two largest units; below a minute with milliseconds only under 1 s).
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let parts = [(days, "d"), (hours, "h"), (mins, "m"), (secs, "s")];
    let first = parts.iter().position(|(n, _)| *n > 0).unwrap_or(3);
    let mut out = String::new();
    for (n, unit) in &parts[first..(first + 2).min(4)] {
        if *n > 0 || out.is_empty() {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

/// Parses `500ms`, `5s`, `2m`, `1h30m`, `1d`, `250us`: one or several
/// numbers, each with its unit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("invalid duration {s:?}: {why} (as 500ms, 5s, 2m, 1h30m)");
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("expected a number"));
        }
        let n: u128 = rest[..digits].parse().map_err(|_| bad("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let micros: u128 = match &rest[..unit_len] {
            "us" => 1,
            "ms" => 1_000,
            "s" => 1_000_000,
            "m" => 60_000_000,
            "h" => 3_600_000_000,
            "d" => 86_400_000_000,
            "" => return Err(bad("missing unit")),
            _ => return Err(bad("unknown unit")),
        };
        rest = &rest[unit_len..];
        total = n.checked_mul(micros).and_then(|v| total.checked_add(v)).ok_or_else(|| bad("too large"))?;
    }
    let micros = u64::try_from(total).map_err(|_| bad("too large"))?;
    Ok(Duration::from_micros(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_print_as_people_write_them() {
        let ok = |s: &str| parse_duration(s).expect(s);
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("5s"), Duration::from_secs(5));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("250us"), Duration::from_micros(250));
        for bad in ["", "5", "s", "5x", "1.5s", "-1s", "5s3", "99999999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration("5").is_err_and(|e| e.contains("missing unit")));
        assert_eq!(human(Duration::from_millis(450)), "450ms");
        assert_eq!(human(Duration::from_secs(12)), "12s");
        assert_eq!(human(Duration::from_secs(192)), "3m12s");
        assert_eq!(human(Duration::from_secs(3600)), "1h");
        assert_eq!(human(Duration::from_secs(3600 + 300 + 7)), "1h5m");
        assert_eq!(human(Duration::from_secs(3 * 86_400 + 4 * 3600 + 5)), "3d4h");
    }

    #[test]
    fn tables_align_columns_by_characters() {
        let mut t = Table::new(&["ID", "NAME", "STATE"]);
        t.row(vec!["1".into(), "n1-long".into(), "alive".into()]);
        t.row(vec!["12".into(), "né".into(), "".into()]);
        assert_eq!(t.render(), "ID  NAME     STATE\n1   n1-long  alive\n12  né\n");
    }

    #[test]
    fn each_error_class_has_its_exit_status() {
        assert_eq!(exit_of(409, "cas_mismatch"), Exit::Conflict);
        assert_eq!(exit_of(409, "member_alive"), Exit::Error);
        assert_eq!(exit_of(409, "feature_not_enabled"), Exit::Error);
        assert_eq!(exit_of(404, "not_found"), Exit::NotFound);
        assert_eq!(exit_of(400, "bad_request"), Exit::Usage);
        assert_eq!(exit_of(413, "payload_too_large"), Exit::Usage);
        assert_eq!(exit_of(401, "unauthorized"), Exit::Error);
        assert_eq!(exit_of(503, "no_leader"), Exit::Error);

        let answer = |status: u16, body: &str| RawResponse {
            addr: "127.0.0.1:1".parse().expect("addr"),
            status,
            headers: Vec::new(),
            index: 0,
            body: body.as_bytes().to_vec(),
        };
        let f = api_failure(&answer(
            400,
            r#"{"error":{"code":"bad_request","message":"bad","fields":[
                {"path":"route.backends[0].addr","message":"invalid address"},
                {"path":"route.listen","message":"taken"}]}}"#,
        ));
        assert_eq!(f.exit, Exit::Usage);
        assert_eq!(f.lines, ["route.backends[0].addr: invalid address", "route.listen: taken"]);
        let f = api_failure(&answer(
            409,
            r#"{"error":{"code":"cas_mismatch","message":"revision is 9","current":9}}"#,
        ));
        assert_eq!(f.exit, Exit::Conflict);
        assert!(f.lines[0].contains("current revision is 9"), "{:?}", f.lines);
        let f = api_failure(&answer(401, r#"{"error":{"code":"unauthorized","message":"no token"}}"#));
        assert_eq!(f.exit, Exit::Error);
        assert!(f.lines[0].contains("--token"), "{:?}", f.lines);
        let f = api_failure(&answer(502, "bad gateway"));
        assert_eq!(f.exit, Exit::Error);
        assert!(f.lines[0].contains("502 bad gateway"), "{:?}", f.lines);
    }
}
