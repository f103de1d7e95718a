#!/usr/bin/env bash
# The test suite: every unit and integration test in the workspace, then a
# smoke run of the quick-start script (ops/local-cluster.sh --no-wait).
# Needs only the Rust toolchain; the smoke run uses 127.0.0.1-3 ports 7000,
# 7947, 7948 and 127.0.0.1 ports 9001, 9002.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test -j2 --workspace --locked

echo "==> quick-start smoke run"
out=$(PROFILE=debug ops/local-cluster.sh --no-wait 2>&1) || { echo "$out"; echo "quick-start: 0 passed, 1 failed"; exit 1; }
if grep -q "cluster is up" <<<"$out" && grep -q "backend-a: 9" <<<"$out" && grep -q "backend-b: 3" <<<"$out" \
    && grep -q '200 {"index"' <<<"$out" && grep -q "backend-a: 6" <<<"$out" && grep -q "backend-b: 6" <<<"$out"; then
    echo "quick-start: 1 passed, 0 failed"
else
    echo "$out"
    echo "quick-start: expected a three-node cluster balancing 9:3, a weight change through the API, then 6:6"
    echo "quick-start: 0 passed, 1 failed"
    exit 1
fi
