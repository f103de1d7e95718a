#!/usr/bin/env bash
# Starts a local three-node ferry cluster with a demo route, shows traffic
# balanced through every node, changes a weight through the admin API of a
# follower, and stays in the foreground until Ctrl-C (or SIGTERM), then stops
# everything it started.
#
#   ops/local-cluster.sh            build (release), start, demo, wait
#   ops/local-cluster.sh --no-wait  start, demo, stop (used by the tests)
#
# While it waits, a node that exits (a leave, a kill -9, a crash) is
# reported with the command that restarts it; the rest keeps running until
# Ctrl-C, so the failures the README suggests can be tried one by one.
#
# Layout: node i runs on 127.0.0.i (i = 1, 2, 3) with the same ports:
# admin API 7948, cluster (Raft) 7947, gossip (UDP) 7946, route "demo"
# :7000. The nodes form the cluster through gossip (bootstrap_expect = 3).
# Demo backends: backend-a on 127.0.0.1:9001 (weight 3), backend-b on
# 127.0.0.1:9002 (weight 1). The route is seeded from the config files when
# the cluster is first formed. Environment: PROFILE=debug|release (default
# release), FERRY_RUN_DIR (default: a new temporary directory).
set -euo pipefail

cd "$(dirname "$0")/.."
wait_for_ctrl_c=1
for arg in "$@"; do
    case "$arg" in
        --no-wait) wait_for_ctrl_c=0 ;;
        -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; exit 0 ;;
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

echo "==> building ferryd, ferry-backend and ferryctl ($profile)"
# ferry-client selected, so it has its default features (ferryctl's), as in
# a workspace build: both reuse each other's artifacts.
cargo build -j2 "${cargo_flags[@]}" -p ferry-node -p ferry-tests -p ferry-client --bins
bin=target/$profile

# http METHOD IP:PORT PATH [BODY]: prints "STATUS BODY" (bash only, no curl).
http() {
    local method=$1 hostport=$2 path=$3 body=${4:-} response
    exec 5<>"/dev/tcp/${hostport%:*}/${hostport#*:}" || return 1
    printf '%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n%s' \
        "$method" "$path" "$hostport" "${#body}" "$body" >&5
    response=$(cat <&5)
    exec 5<&-
    printf '%s %s\n' "$(head -1 <<<"$response" | cut -d' ' -f2)" "${response##*$'\r\n\r\n'}"
}

for ip in 127.0.0.1 127.0.0.2 127.0.0.3; do
    for port in 7000 7947 7948; do
        if (exec 3<>"/dev/tcp/$ip/$port") 2>/dev/null; then
            echo "local-cluster.sh: $ip:$port is already in use; stop whatever listens there first" >&2
            exit 1
        fi
    done
done
for port in 9001 9002; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "local-cluster.sh: 127.0.0.1:$port is already in use; stop whatever listens there first" >&2
        exit 1
    fi
done

# Only now, with the ports free, is there anything to keep.
run_dir=${FERRY_RUN_DIR:-$(mktemp -d -t ferry-local.XXXXXX)}
mkdir -p "$run_dir"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    echo "==> stopped; logs and data are in $run_dir"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

for i in 1 2 3; do
    cat > "$run_dir/n$i.toml" <<TOML
[node]
name = "n$i"
bind_addr = "127.0.0.$i"
data_dir = "$run_dir/n$i"
drain_timeout_ms = 5000

[admin]
addr = "127.0.0.$i:7948"

# Node ids are random, kept in data_dir/node_id.
[cluster]
addr = "127.0.0.$i:7947"

# The three nodes find each other by gossip and form the cluster once all
# three are up, in any start order.
[gossip]
addr = "127.0.0.$i:7946"
join = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
bootstrap_expect = 3
profile = "fast"

# Seeds the cluster once, when it is first formed (whichever node forms it).
[[routes]]
name = "demo"
listen = ":7000"
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
done

"$bin/ferry-backend" --name backend-a --listen 127.0.0.1:9001 2>"$run_dir/backend-a.log" & pids+=($!)
"$bin/ferry-backend" --name backend-b --listen 127.0.0.1:9002 2>"$run_dir/backend-b.log" & pids+=($!)
for i in 1 2 3; do
    "$bin/ferryd" --config "$run_dir/n$i.toml" 2>"$run_dir/n$i.log" & pids+=($!)
    echo "$!" > "$run_dir/n$i.pid"
done

# Ready when every node listens on the demo route (seeded, replicated, applied).
ready=0
for _ in $(seq 1 150); do
    ready=1
    for i in 1 2 3; do
        (exec 3<>"/dev/tcp/127.0.0.$i/7000") 2>/dev/null || { ready=0; break; }
    done
    [ "$ready" = 1 ] && break
    sleep 0.1
done
if [ "$ready" != 1 ]; then
    echo "local-cluster.sh: the cluster did not come up; node logs:" >&2
    tail -n 20 "$run_dir"/n*.log >&2
    exit 1
fi

status=$(http GET 127.0.0.1:7948 /v1/status)
leader=$(grep -o '"leader_id":[0-9]*' <<<"$status" | cut -d: -f2)
leader_name=$(grep -o '"leader_name":"[^"]*"' <<<"$status" | cut -d'"' -f4)
echo "==> cluster is up: nodes n1-n3 on 127.0.0.1-3 (admin :7948, raft :7947, gossip :7946); leader is ${leader_name:-?} (id ${leader:-?})"

# balance N: N connections round the three nodes' :7000; prints who answered.
balance() {
    local n=$1 name node
    declare -A count=()
    for k in $(seq 1 "$n"); do
        node=127.0.0.$(( (k - 1) % 3 + 1 ))
        exec 3<>"/dev/tcp/$node/7000"
        read -r -t 5 name <&3 || name="(no answer)"
        exec 3<&-
        count[$name]=$(( ${count[$name]:-0} + 1 ))
    done
    for name in $(printf '%s\n' "${!count[@]}" | sort); do echo "    $name: ${count[$name]}"; done
}

echo "==> 12 connections through nodes 1, 2, 3 in turn (weights a=3, b=1):"
balance 12
echo "==> PUT /v1/routes/demo/backends/b/weight {\"weight\": 3} on node 2:"
echo "    $(http PUT 127.0.0.2:7948 /v1/routes/demo/backends/b/weight '{"weight": 3}')"
# Every node applies the change; wait until node 3 has it.
for _ in $(seq 1 50); do
    http GET 127.0.0.3:7948 '/v1/routes/demo?consistency=stale' | grep -q '"id":"b","addr":"127.0.0.1:9002","weight":3' && break
    sleep 0.1
done
echo "==> 12 more connections (weights a=3, b=3):"
balance 12

cat <<TXT
==> try it:
    $bin/ferryctl status                                    # raft role, leader, index
    $bin/ferryctl members                                   # gossip state, voter/learner
    $bin/ferryd --name n4 --bind 127.0.0.4 --data-dir $run_dir/n4 --join 127.0.0.1 --gossip-profile fast
                                                            # a 4th node: joins, becomes a voter
    $bin/ferryctl --addr 127.0.0.2 route get demo           # config, revision, live health
    $bin/ferryctl --addr 127.0.0.3 route weight demo a 1 --wait-applied
    $bin/ferryctl explain demo --client 127.0.0.1           # which backend a client gets, and why
    exec 3<>/dev/tcp/127.0.0.2/7000; head -1 <&3            # one connection via node 2
    kill -9 \$(cat $run_dir/n1.pid)                          # a node dies: the others keep serving
    logs and data: $run_dir
TXT
if [ "$wait_for_ctrl_c" = 1 ]; then
    echo "==> running; Ctrl-C stops everything"
    # pids: backend-a, backend-b, n1, n2, n3. Report each node that exits
    # (and how to start it again); keep everything else up until Ctrl-C.
    running=(1 2 3)
    while true; do
        still=()
        for i in "${running[@]}"; do
            pid=${pids[$((i + 1))]}
            if kill -0 "$pid" 2>/dev/null; then
                still+=("$i")
            else
                status=0
                wait "$pid" || status=$?
                echo "==> n$i (127.0.0.$i) exited with status $status; the others keep running. Its log: $run_dir/n$i.log"
                echo "    start it again: $bin/ferryd --config $run_dir/n$i.toml 2>>$run_dir/n$i.log &"
            fi
        done
        running=("${still[@]}")
        sleep 1
    done
fi
