#!/usr/bin/env bash
# Starts ferry locally: two demo backends and ferryd with a demo route, all
# on 127.0.0.1, then shows traffic being balanced. Stays in the foreground
# until Ctrl-C (or SIGTERM), then stops everything it started.
#
#   ops/local-cluster.sh            build (release), start, demo, wait
#   ops/local-cluster.sh --no-wait  start, demo, stop (used by the tests)
#
# Ports: route "demo" on 127.0.0.1:7000 -> backends 127.0.0.1:9001 (weight 3)
# and 127.0.0.1:9002 (weight 1); admin API on 127.0.0.1:7948.
# Environment: PROFILE=debug|release (default release), FERRY_RUN_DIR.
set -euo pipefail

cd "$(dirname "$0")/.."
wait_for_ctrl_c=1
for arg in "$@"; do
    case "$arg" in
        --no-wait) wait_for_ctrl_c=0 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "local-cluster.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

profile=${PROFILE:-release}
case "$profile" in
    release) cargo_flags=(--release) ;;
    debug) cargo_flags=() ;;
    *) echo "local-cluster.sh: PROFILE must be debug or release" >&2; exit 2 ;;
esac
command -v cargo >/dev/null || { echo "local-cluster.sh: cargo not found: install the Rust toolchain" >&2; exit 1; }

echo "==> building ferryd and ferry-backend ($profile)"
cargo build -j2 "${cargo_flags[@]}" -p ferry-node -p ferry-tests --bins
bin=target/$profile

run_dir=${FERRY_RUN_DIR:-$(mktemp -d -t ferry-local.XXXXXX)}
mkdir -p "$run_dir"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    echo "==> stopped; logs were in $run_dir"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

for port in 7000 7948 9001 9002; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "local-cluster.sh: 127.0.0.1:$port is already in use; stop whatever listens there first" >&2
        exit 1
    fi
done

cat > "$run_dir/ferryd.toml" <<TOML
[node]
name = "n1"
drain_timeout_ms = 5000

[admin]
addr = "127.0.0.1:7948"

[[routes]]
name = "demo"
listen = "127.0.0.1:7000"
balance = "weighted"
  [[routes.backends]]
  id = "a"
  addr = "127.0.0.1:9001"
  weight = 3
  [[routes.backends]]
  id = "b"
  addr = "127.0.0.1:9002"
  weight = 1
  [routes.health_check]
  interval_ms = 1000
  timeout_ms = 500
  rise = 2
  fall = 2
TOML

"$bin/ferry-backend" --name backend-a --listen 127.0.0.1:9001 2>"$run_dir/backend-a.log" & pids+=($!)
"$bin/ferry-backend" --name backend-b --listen 127.0.0.1:9002 2>"$run_dir/backend-b.log" & pids+=($!)
"$bin/ferryd" --config "$run_dir/ferryd.toml" 2>"$run_dir/ferryd.log" & pids+=($!)

ready=0
for _ in $(seq 1 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/7948 && printf 'GET /health/ready HTTP/1.0\r\n\r\n' >&3 && head -1 <&3 | grep -q ' 200 ') 2>/dev/null; then
        ready=1; break
    fi
    sleep 0.1
done
if [ "$ready" != 1 ]; then
    echo "local-cluster.sh: ferryd did not become ready; its log:" >&2
    cat "$run_dir/ferryd.log" >&2
    exit 1
fi

echo "==> ferryd is up: route demo on 127.0.0.1:7000, admin on http://127.0.0.1:7948"
echo "==> 12 connections through 127.0.0.1:7000 (weights a=3, b=1):"
declare -A count=()
for _ in $(seq 1 12); do
    exec 3<>/dev/tcp/127.0.0.1/7000
    read -r -t 5 name <&3 || name="(no answer)"
    exec 3<&-
    printf '%s ' "$name"
    count[$name]=$(( ${count[$name]:-0} + 1 ))
done
echo
for name in "${!count[@]}"; do echo "    $name: ${count[$name]}"; done

cat <<TXT
==> try it:
    curl -s http://127.0.0.1:7948/v1/routes/demo      # route, live backend health
    curl -s http://127.0.0.1:7948/metrics | grep ferry_proxy
    exec 3<>/dev/tcp/127.0.0.1/7000; head -1 <&3       # one connection
    config: $run_dir/ferryd.toml (edit, then: kill -HUP ${pids[2]})
TXT
if [ "$wait_for_ctrl_c" = 1 ]; then
    echo "==> running; Ctrl-C stops everything"
    wait "${pids[2]}"
fi
