//! Reading the file: TOML parsed leniently, so that one problem hides no
//! other. Every unknown field, wrongly typed value and missing required
//! field is reported with its path and line, and what parsed is kept for
//! validation to look at.

use std::path::Path;

use ferry_client::FieldError;
use ferry_client::toml_input::{is_at_or_under, parse_part, parse_routes, toml_error};
use toml::de::DeTable;

use super::{Config, ConfigErrors};

/// What [`Config::parse_all`] made of a file: the configuration as far as it
/// could be read (a value with a problem left out, so its default, or a
/// stand-in for a required one, takes its place), and every problem.
#[derive(Debug)]
pub struct Parsed {
    /// `None` when the file could not be read or parsed as TOML at all.
    pub config: Option<Config>,
    /// Parse problems, in the order of the file.
    pub problems: Vec<FieldError>,
}

impl Parsed {
    /// The configuration, if the file had no problem.
    pub fn into_result(self) -> Result<Config, ConfigErrors> {
        match self.config {
            Some(c) if self.problems.is_empty() => Ok(c),
            _ => Err(ConfigErrors(self.problems)),
        }
    }

    /// `config`, changed by `edit` (flag overrides), then validated: every
    /// parse problem and every validation problem at once. A validation
    /// problem at or under a field that had a parse problem is left out: it
    /// is about the stand-in, and the parse problem already names the field.
    pub fn validate(self, edit: impl FnOnce(&mut Config) -> Vec<FieldError>) -> Result<Config, ConfigErrors> {
        let Some(mut config) = self.config else { return Err(ConfigErrors(self.problems)) };
        let mut problems = self.problems;
        let parsed_clean = problems.is_empty();
        let mut more = edit(&mut config);
        match config.validate() {
            Ok(config) if parsed_clean && more.is_empty() => return Ok(config),
            Ok(_) => {}
            Err(ConfigErrors(e)) => more.extend(e),
        }
        more.retain(|m| !problems.iter().any(|p| is_at_or_under(&m.path, &p.path)));
        problems.extend(more);
        Err(ConfigErrors(problems))
    }
}

impl Config {
    /// Reads `path` and parses as much of it as it can: [`Config::parse_all`].
    pub fn read_all(path: &Path) -> Parsed {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse_all(&text),
            Err(e) => Parsed {
                config: None,
                problems: vec![FieldError::new("", format!("cannot read {}: {e}", path.display()))],
            },
        }
    }

    /// Parses TOML text, without validating it, reporting every problem
    /// rather than the first. A syntax error is one line and nothing else
    /// can be read. Otherwise every unknown field, wrongly typed value and
    /// missing required field is reported, one line each naming the field
    /// path and the line (see [`parse_part`]), and what parsed is still
    /// returned, so that validation can report the file's other problems
    /// in the same run ([`Parsed::validate`]).
    pub fn parse_all(text: &str) -> Parsed {
        let mut root = match DeTable::parse(text) {
            Ok(root) => root,
            Err(e) => return Parsed { config: None, problems: vec![toml_error("", &e, text)] },
        };
        let mut errors = Vec::new();
        // Each route on its own: a problem in one hides none in another.
        let routes = match root.get_mut().remove("routes") {
            None => Some(Vec::new()),
            Some(value) => parse_routes(value, text, &mut errors),
        };
        let (config, e) = parse_part::<Config>(root, "", text);
        errors.extend(e);
        // In the order of the file.
        errors.sort_by_key(|(at, _)| *at);
        Parsed {
            // A route that could not be read at all leaves the others
            // unchecked: their paths would name the wrong index.
            config: config.map(|c| Config { routes: routes.unwrap_or_default(), ..c }),
            problems: errors.into_iter().map(|(_, e)| e).collect(),
        }
    }
}
