//! A run directory: `history.jsonl` and an optional `checker.json` in;
//! `results.json`, `summary.txt` and `report.html` out.

use std::path::{Path, PathBuf};

use crate::checker::{CheckConfig, check_all};
use crate::operation::{History, HistoryError};
use crate::report::report_html;
use crate::results::{Results, summary};

/// What `check` could not read or write.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("{path}: {message}")]
    Config { path: String, message: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// A checked run.
#[derive(Debug, Clone)]
pub struct Checked {
    pub results: Results,
    pub summary: String,
}

/// The files of one run.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RunDir { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `history.jsonl`: the events, one JSON object per line.
    pub fn history_path(&self) -> PathBuf {
        self.path.join("history.jsonl")
    }

    /// `checker.json`: the [`CheckConfig`] the run was made with (optional).
    pub fn config_path(&self) -> PathBuf {
        self.path.join("checker.json")
    }

    pub fn results_path(&self) -> PathBuf {
        self.path.join("results.json")
    }

    pub fn summary_path(&self) -> PathBuf {
        self.path.join("summary.txt")
    }

    pub fn report_path(&self) -> PathBuf {
        self.path.join("report.html")
    }

    /// `checker.json`, or the defaults when there is none.
    pub fn load_config(&self) -> Result<CheckConfig, RunDirError> {
        let path = self.config_path();
        if !path.exists() {
            return Ok(CheckConfig::default());
        }
        let io = |source| RunDirError::Io { path: path.display().to_string(), source };
        let text = std::fs::read_to_string(&path).map_err(io)?;
        serde_json::from_str(&text)
            .map_err(|e| RunDirError::Config { path: path.display().to_string(), message: e.to_string() })
    }

    /// Checks `history.jsonl` and writes `results.json`, `summary.txt` and `report.html`.
    pub fn check(&self, config: &CheckConfig) -> Result<Checked, RunDirError> {
        let history = History::read_file(&self.history_path())?;
        let checks = check_all(&history, config);
        let results = Results::new(&checks);
        let summary = summary(&history, &checks);
        self.write(&self.results_path(), &results.to_json())?;
        self.write(&self.summary_path(), &summary)?;
        self.write(&self.report_path(), &report_html(&history, &checks, &summary))?;
        Ok(Checked { results, summary })
    }

    fn write(&self, path: &Path, text: &str) -> Result<(), RunDirError> {
        std::fs::write(path, text)
            .map_err(|source| RunDirError::Io { path: path.display().to_string(), source })
    }
}
