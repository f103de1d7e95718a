//! Records the git commit the binary is built from as `FERRY_GIT_COMMIT`
//! (see `src/version.rs`): `FERRY_GIT_COMMIT` from the environment if set
//! (a packager building outside git), else `git rev-parse HEAD`, else
//! `unknown`. Reruns when HEAD moves.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=FERRY_GIT_COMMIT");
    let commit = match std::env::var("FERRY_GIT_COMMIT") {
        Ok(c) if !c.is_empty() => c,
        _ => {
            // HEAD, the branch it names, and packed refs: whatever moves when
            // a commit is made or checked out.
            for name in ["HEAD", "packed-refs"] {
                if let Some(path) = git(&["rev-parse", "--git-path", name]) {
                    rerun_if_exists(&path);
                }
            }
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
                && let Some(path) = git(&["rev-parse", "--git-path", &branch])
            {
                rerun_if_exists(&path);
            }
            git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
        }
    };
    println!("cargo:rustc-env=FERRY_GIT_COMMIT={commit}");
}

fn rerun_if_exists(path: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
