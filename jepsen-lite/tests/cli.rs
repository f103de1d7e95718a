//! `jepsen-lite check RUN_DIR` on the fixture runs: exit status, and the
//! files it writes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Copies a fixture run into a temporary directory, so that `check` writes there.
fn copy_run(name: &str) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    for entry in std::fs::read_dir(fixture(name))? {
        let entry = entry?;
        std::fs::copy(entry.path(), dir.path().join(entry.file_name()))?;
    }
    Ok(dir)
}

fn check(dir: &Path) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_jepsen-lite")).arg("check").arg(dir).output()?)
}

fn results(dir: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("results.json")).context("results.json")?;
    Ok(serde_json::from_str(&text)?)
}

#[test]
fn a_valid_run_exits_0_and_writes_its_results() -> Result<()> {
    let dir = copy_run("valid-run")?;
    let out = check(dir.path())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("\nVALID\n"), "{stdout}");
    let r = results(dir.path())?;
    assert_eq!(r["valid"], true);
    for name in [
        "linearizable",
        "lost_writes",
        "leaders",
        "convergence",
        "availability",
        "static_stability",
        "catch_up",
    ] {
        assert_eq!(r["checkers"][name]["valid"], true, "{name}: {}", r["checkers"][name]);
    }
    // checker.json was read: 10 of 11 connections during the partition pass 0.9.
    assert_eq!(r["checkers"]["static_stability"]["min_success"], 0.9);
    // checker.json was read: the bound is 1 s, not the default 10 s.
    assert_eq!(r["checkers"]["convergence"]["bound_ms"], 1000);
    let summary = std::fs::read_to_string(dir.path().join("summary.txt"))?;
    assert!(stdout.starts_with(&summary), "the summary is printed:\n{stdout}\n{summary}");
    let html = std::fs::read_to_string(dir.path().join("report.html"))?;
    assert!(html.contains("<svg") && !html.contains("<script"));
    Ok(())
}

#[test]
fn an_invalid_run_exits_1_and_names_the_violated_checkers() -> Result<()> {
    let dir = copy_run("invalid-run")?;
    let out = check(dir.path())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let r = results(dir.path())?;
    assert_eq!(r["valid"], false);
    for name in ["linearizable", "lost_writes", "leaders", "convergence", "availability", "static_stability"]
    {
        assert_eq!(r["checkers"][name]["valid"], false, "{name}: {}", r["checkers"][name]);
    }
    assert_eq!(r["checkers"]["linearizable"]["violation"]["op"], 43, "the stale read");
    assert_eq!(r["checkers"]["lost_writes"]["lost"], serde_json::json!([4]));
    assert!(
        stdout.contains(
            "INVALID: linearizable, lost_writes, leaders, convergence, availability, static_stability"
        ),
        "{stdout}"
    );
    Ok(())
}

#[test]
fn a_max_steps_flag_turns_an_undecided_search_into_unknown() -> Result<()> {
    let dir = copy_run("invalid-run")?;
    let out = Command::new(env!("CARGO_BIN_EXE_jepsen-lite"))
        .args(["check", "--max-steps", "3"])
        .arg(dir.path())
        .output()?;
    assert_eq!(out.status.code(), Some(1), "the other checkers still fail");
    let r = results(dir.path())?;
    assert_eq!(r["checkers"]["linearizable"]["valid"], "unknown");
    assert_eq!(r["unknown"], serde_json::json!(["linearizable"]));
    Ok(())
}

#[test]
fn an_undecided_run_exits_3_and_says_so() -> Result<()> {
    let dir = copy_run("valid-run")?;
    let out = Command::new(env!("CARGO_BIN_EXE_jepsen-lite"))
        .args(["check", "--max-steps", "3"])
        .arg(dir.path())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("\nUNDECIDED: linearizable (no violation found"), "{stdout}");
    let r = results(dir.path())?;
    assert_eq!(
        (r["valid"].clone(), r["unknown"].clone()),
        (serde_json::json!(true), serde_json::json!(["linearizable"]))
    );
    assert!(dir.path().join("summary.txt").exists() && dir.path().join("report.html").exists());
    Ok(())
}

#[test]
fn a_run_without_keys_or_deadlines_is_checked_as_before() -> Result<()> {
    // The fixtures predate keys and deadlines: one register, key 0, and no
    // bounded-indeterminacy check.
    let dir = copy_run("invalid-run")?;
    check(dir.path())?;
    let r = results(dir.path())?;
    assert_eq!(r["checkers"]["linearizable"]["keys"], 1);
    assert_eq!(r["checkers"]["linearizable"]["invalid_keys"], serde_json::json!([0]));
    assert!(r["checkers"].get("bounded_indeterminacy").is_none(), "{}", r["checkers"]);
    Ok(())
}

#[test]
fn a_malformed_line_exits_2_naming_file_and_line() -> Result<()> {
    let dir = copy_run("valid-run")?;
    let path = dir.path().join("history.jsonl");
    let mut text = std::fs::read_to_string(&path)?;
    text.push_str("{\"type\":\"ok\",\"process\":0,\"node\":\"n1\",\"f\":\"frobnicate\",\"time_ns\":1}\n");
    std::fs::write(&path, &text)?;
    let out = check(dir.path())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = text.lines().count();
    assert!(stderr.contains(&format!("history.jsonl:{line}: ")), "{stderr}");
    assert!(stderr.contains("frobnicate"), "{stderr}");
    assert!(!dir.path().join("results.json").exists(), "nothing is written on bad input");
    Ok(())
}

#[test]
fn an_unpaired_completion_exits_2_naming_the_line() -> Result<()> {
    let dir = copy_run("valid-run")?;
    let path = dir.path().join("history.jsonl");
    let text = std::fs::read_to_string(&path)?;
    // Drop the first line: its completion is left with nothing open.
    std::fs::write(&path, text.lines().skip(1).map(|l| format!("{l}\n")).collect::<String>())?;
    let out = check(dir.path())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("history.jsonl:") && stderr.contains("nothing open"), "{stderr}");
    Ok(())
}

#[test]
fn a_missing_history_or_bad_config_exits_2() -> Result<()> {
    let empty = tempfile::tempdir()?;
    let out = check(empty.path())?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("history.jsonl"));

    let dir = copy_run("valid-run")?;
    std::fs::write(dir.path().join("checker.json"), r#"{"linearizable": {"initail": 1}}"#)?;
    let out = check(dir.path())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("checker.json") && stderr.contains("initail"), "{stderr}");
    Ok(())
}

#[test]
fn unsafe_faults_are_a_list_of_known_names_and_power_loss_is_a_nemesis() -> Result<()> {
    let test = |fault: &str| {
        Command::new(env!("CARGO_BIN_EXE_jepsen-lite"))
            .args(["test", "--nemesis", "power-loss", "--unsafe-fault", fault])
            // Options are checked first; with them accepted, the run stops here.
            .args(["--ferryd", "/nonexistent/ferryd"])
            .output()
    };
    let out = test("stale-reads,bogus")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--unsafe-fault") && stderr.contains("\"bogus\"") && stderr.contains("skip-sync"),
        "{stderr}"
    );

    let out = test("stale-reads,skip-sync")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        !stderr.contains("--unsafe-fault") && !stderr.contains("nemesis"),
        "the options were refused: {stderr}"
    );
    Ok(())
}
