#!/usr/bin/env bash
# The rolling-upgrade test (README, "Upgrading"): builds the pinned earlier
# commit of ferry in a git worktree, then runs node/tests/upgrade.rs, which
# starts three nodes on that build, replaces them one at a time with this
# tree's build under a write and a traffic load, and takes nodes back to the
# old build with and without this build's new feature in use.
#
# PINNED is the release the test upgrades from: the last commit whose
# protocol is one below this tree's. Move it forward when a release is cut
# (the test checks that the two builds are one protocol apart).
#
# The old build is cached in target/upgrade-test/ and rebuilt only when
# PINNED changes; it takes a few minutes the first time. Uses 127.0.91.1-3
# (ports 7000-7002, 7946-7948).
set -euo pipefail
cd "$(dirname "$0")/.."

PINNED=95586d0025c6521403abb3b31708dfe616cf2713

root=$(pwd)
out="$root/target/upgrade-test"
old_bin="$out/target/debug/ferryd"
mkdir -p "$out"
if [ ! -x "$old_bin" ] || [ "$(cat "$out/pinned" 2>/dev/null)" != "$PINNED" ]; then
    if ! git cat-file -e "$PINNED^{commit}" 2>/dev/null; then
        echo "upgrade-test: commit $PINNED is not in this clone (a shallow clone? git fetch --unshallow)" >&2
        exit 1
    fi
    src="$out/src"
    git worktree remove --force "$src" 2>/dev/null || rm -rf "$src"
    git worktree prune
    git worktree add --quiet --detach "$src" "$PINNED"
    echo "==> upgrade-test: building ferryd at $PINNED (the release upgraded from)"
    (cd "$src" && CARGO_TARGET_DIR="$out/target" cargo build -j2 --locked -p ferry-node --bin ferryd)
    git worktree remove --force "$src"
    echo "$PINNED" >"$out/pinned"
fi
echo "==> upgrade-test: $("$old_bin" --version) -> this tree"
FERRY_UPGRADE_OLD="$old_bin" cargo test -j2 --locked -p ferry-node --test upgrade -- --ignored --nocapture
