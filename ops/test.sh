#!/usr/bin/env bash
# The test suite: every unit and integration test in the workspace, the
# benchmark report's tests (when python3 is installed), a rolling upgrade
# from the pinned previous release under load (ops/upgrade-test.sh), a smoke
# run of the quick-start script (ops/local-cluster.sh --no-wait), then the
# partition suite (jepsen-lite test --quick) against real nodes in network
# namespaces.
# Needs the Rust toolchain, and python3 with pip and node with npm for the
# Toxiproxy clients (installed from Debian's packages when missing and run
# as root). The Toxiproxy API's test uses 127.0.94.1-3; the smoke run uses
# 127.0.0.1-3 ports 7000, 7946-7948 and 127.0.0.1 ports 9001, 9002. The partition suite needs root
# (CI runs as root): it installs iproute2 and iptables if they are missing,
# and is skipped, saying so, when not root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
    ops/jepsen-deps.sh
fi

echo "==> Toxiproxy clients (ops/toxiproxy-clients.sh)"
# The Python and Node Toxiproxy clients the Toxiproxy API's test drives,
# from PyPI and npm into target/toxiproxy-clients. A failed install fails
# the suite, and so does the test when they are missing (no skip here).
ops/toxiproxy-clients.sh
export FERRY_REQUIRE_TOXIPROXY_CLIENTS=1

cargo test -j2 --workspace --locked

echo "==> benchmark report tests (ops/bench/test_*.py)"
if command -v python3 >/dev/null; then
    python3 -B -m unittest discover -s ops/bench -p 'test_*.py'
else
    echo "bench-report: skipped: python3 is not installed (the benchmarks need it too)"
fi

echo "==> rolling upgrade (ops/upgrade-test.sh)"
ops/upgrade-test.sh

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

echo "==> quick start: a node that dies leaves the rest running"
# The script waits for Ctrl-C; kill -9 node 1 and check that the script
# says so, that node 2 still serves the demo route, and that SIGTERM then
# stops everything it started.
if ops/local-cluster.sh --help | grep -q 'set -euo'; then
    echo "quick-start: --help prints the script's code"; echo "quick-start: 0 passed, 1 failed"; exit 1
fi
qs_dir=$(mktemp -d -t ferry-qs.XXXXXX)
PROFILE=debug FERRY_RUN_DIR="$qs_dir/run" ops/local-cluster.sh >"$qs_dir/out" 2>&1 &
qs_pid=$!
qs_fail() {
    cat "$qs_dir/out"; echo "quick-start: $1"; echo "quick-start: 0 passed, 1 failed"
    kill -TERM "$qs_pid" 2>/dev/null; wait "$qs_pid" 2>/dev/null; exit 1
}
for _ in $(seq 1 120); do grep -q "running; Ctrl-C" "$qs_dir/out" && break; sleep 0.5; done
grep -q "running; Ctrl-C" "$qs_dir/out" || qs_fail "the demo did not reach its wait"
n1=$(cat "$qs_dir/run/n1.pid")
n2=$(cat "$qs_dir/run/n2.pid")
kill -9 "$n1"
for _ in $(seq 1 20); do grep -q "n1 (127.0.0.1) exited" "$qs_dir/out" && break; sleep 0.5; done
grep -q "n1 (127.0.0.1) exited" "$qs_dir/out" || qs_fail "the exit of n1 was not reported"
kill -0 "$qs_pid" 2>/dev/null && kill -0 "$n2" 2>/dev/null || qs_fail "the demo stopped when n1 died"
answer=$(exec 3<>/dev/tcp/127.0.0.2/7000 && head -1 <&3) || true
[[ "$answer" == backend-* ]] || qs_fail "node 2 no longer serves the demo route after n1 died (got '$answer')"
kill -TERM "$qs_pid"; wait "$qs_pid" || true
kill -0 "$n2" 2>/dev/null && qs_fail "n2 still runs after the script stopped"
rm -rf "$qs_dir"
echo "quick-start: a dead node: 1 passed, 0 failed"

echo "==> partition suite (jepsen-lite test --quick)"
if [ "$(id -u)" != 0 ]; then
    echo "jepsen-lite: skipped: needs root (network namespaces, iptables); run ops/test.sh as root"
else
    run_dir=$(mktemp -d -t ferry-jepsen.XXXXXX)
    if target/debug/jepsen-lite test --quick --ferryd target/debug/ferryd --out "$run_dir"; then
        echo "jepsen-lite: 1 passed, 0 failed (run dir $run_dir)"
    else
        echo "jepsen-lite: 0 passed, 1 failed (run dir $run_dir; replay with the seed printed above)"
        exit 1
    fi
fi
