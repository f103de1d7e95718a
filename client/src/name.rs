//! Names of routes, backends, chaos policies and nodes, and which rules a
//! validation applies ([`Rules`]): new input, or an object already in the
//! replicated log.
//!
//! A name is a URL path segment (`/v1/routes/{name}`,
//! `/v1/routes/{name}/backends/{id}/weight`, `/v1/chaos/{name}`), a metric
//! label and a PROXY v2 TLV, so it is limited to `[A-Za-z0-9_.-]`, 1 to 64,
//! and is not `.` or `..`.

/// Which rules a validation applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rules {
    /// New input (an API body, a config file): every rule.
    Input,
    /// An object already in the replicated log, checked again when a node
    /// applies it: only the rules every ferry version applied. A rule added
    /// later (the names `.` and `..`, listen port 0) refuses new input only.
    /// Applying it to the log would make an upgraded node reject an entry
    /// that an older node applied (or that it applied itself before the
    /// upgrade, when it replays its log), and their states would diverge.
    Stored,
}

/// The characters and length of every name: `[A-Za-z0-9_.-]`, 1 to 64.
const NAME_RULE: &str = "use 1 to 64 of A-Z a-z 0-9 _ - .";

/// True when `name` is a valid new route, backend, policy or node name:
/// 1 to 64 of `[A-Za-z0-9_.-]`, and not `.` or `..`, which a URL path
/// segment cannot carry (`/v1/routes/..` is the parent of `/v1/routes/`).
pub fn valid_name(name: &str) -> bool {
    valid_stored_name(name) && !dot_name(name)
}

/// True when `name` passes the rules stored names were written under
/// ([`Rules::Stored`]): 1 to 64 of `[A-Za-z0-9_.-]`, `.` and `..` included.
pub fn valid_stored_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn dot_name(name: &str) -> bool {
    name == "." || name == ".."
}

/// What is wrong with `name` under `rules`, as a message calling it a
/// `kind` (`name`, `id`); `None` when it is valid.
pub fn name_problem(kind: &str, name: &str, rules: Rules) -> Option<String> {
    if !valid_stored_name(name) {
        return Some(format!("invalid {kind} {name:?}: {NAME_RULE}"));
    }
    (rules == Rules::Input && dot_name(name)).then(|| {
        format!("invalid {kind} {name:?}: \".\" and \"..\" are reserved (no URL path can name them)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_by_rule() {
        for good in ["web", "a.b", ".a", "..a", "a..", "x_y-z", &"n".repeat(64)] {
            assert!(valid_name(good), "{good:?}");
            assert_eq!(name_problem("name", good, Rules::Input), None);
        }
        for bad in ["", "a b", "a/b", "é", &"n".repeat(65)] {
            assert!(!valid_name(bad) && !valid_stored_name(bad), "{bad:?}");
            assert!(name_problem("id", bad, Rules::Stored).is_some_and(|m| m.starts_with("invalid id")));
        }
        for dots in [".", ".."] {
            assert!(!valid_name(dots) && valid_stored_name(dots), "{dots:?}");
            assert!(name_problem("name", dots, Rules::Input).is_some());
            assert_eq!(name_problem("name", dots, Rules::Stored), None, "kept when stored");
        }
    }
}
