//! The suite against real nodes (needs root, `ip` and `iptables`; CI runs
//! as root): with ferryd's fault switch on (`stale-reads`), a short register
//! run must be found invalid, and the violation named. Skipped, saying so,
//! when the machine cannot run it.

use std::path::PathBuf;
use std::process::Command;

fn ferryd() -> PathBuf {
    let me = PathBuf::from(env!("CARGO_BIN_EXE_jepsen-lite"));
    me.with_file_name("ferryd")
}

#[test]
fn the_fault_switch_makes_the_register_run_invalid() -> Result<(), Box<dyn std::error::Error>> {
    if let Err(e) = jepsen_lite::net::check_prereqs() {
        eprintln!("skipped: {e}");
        return Ok(());
    }
    if !ferryd().exists() {
        eprintln!("skipped: {} is not built", ferryd().display());
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_jepsen-lite"))
        .args(["test", "--nodes", "3", "--workload", "register", "--nemesis", "partition-random-halves"])
        .args(["--time", "8", "--fault-secs", "4", "--heal-secs", "2", "--seed", "11"])
        .args(["--unsafe-fault", "stale-reads", "--out"])
        .arg(dir.path())
        .arg("--ferryd")
        .arg(ferryd())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("INVALID: linearizable"), "{stdout}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json"))?)?;
    assert_eq!(results["valid"], false);
    assert_eq!(results["checkers"]["linearizable"]["valid"], false, "{results}");
    assert!(dir.path().join("report.html").exists());
    Ok(())
}
