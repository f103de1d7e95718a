#!/usr/bin/env bash
# The test suite: every unit and integration test in the workspace, then a
# smoke run of the quick-start script (ops/local-cluster.sh --no-wait).
# Needs only the Rust toolchain; uses 127.0.0.1 ports 7000, 7948, 9001, 9002
# for the smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test -j2 --workspace --locked

echo "==> quick-start smoke run"
out=$(PROFILE=debug ops/local-cluster.sh --no-wait 2>&1) || { echo "$out"; echo "quick-start: 0 passed, 1 failed"; exit 1; }
if grep -q "backend-a: 9" <<<"$out" && grep -q "backend-b: 3" <<<"$out"; then
    echo "quick-start: 1 passed, 0 failed"
else
    echo "$out"
    echo "quick-start: the demo route did not balance 9:3 over 12 connections"
    echo "quick-start: 0 passed, 1 failed"
    exit 1
fi
