#!/usr/bin/env bash
# ops/bench/config.sh — config-plane benchmark: a three-node ferry cluster
# (Raft through openraft) side by side with a three-node etcd 3.4, on loopback.
#
# Run ./ops/bench/config.sh --help for usage. Everything runs on loopback, as
# the current user, from a mktemp -d directory; only processes started here are
# ever stopped (by PID). Every load is bounded in time.
#
# Method (the same for both systems, so the comparison is fair):
# - Transport: HTTP/1.1 JSON over keep-alive connections for both: ferry's
#   admin API, and etcd's v3 JSON gateway (grpc-gateway, served on the client
#   port). etcd's native gRPC client would be faster than its gateway; ferry's
#   API is HTTP/JSON only, so both go through HTTP/JSON.
# - Small write: ferry PUT /v1/routes/bench/backends/a/weight {"weight":K}
#   (one SetBackendWeight command on a route created at start); etcd
#   POST /v3/kv/put of one small key with value K. K cycles 1..100.
# - Linearizable read: ferry GET /v1/routes/bench (default consistency:
#   linearizable, ReadIndex); etcd POST /v3/kv/range without serializable
#   (etcd's default: linearizable).
# - Throughput/latency loads: wrk (CLIENT=wrk, the default) with
#   config_wrk.lua, closed loop, C connections, DURATION seconds each, after a
#   WARMUP; p50/p99 from wrk's histogram. wrk is compiled and costs little CPU,
#   which matters on this 2-core machine where the client shares the CPUs with
#   the three servers. CLIENT=python uses config_load.py (asyncio, fixed COUNT
#   of operations) instead: measured against etcd here it spends about twice
#   wrk's CPU per request (0.41 vs 0.18 cores at c=32 reads), CPU taken from
#   the servers on this 2-core machine, and its c=32 figures come out 10-35%
#   lower than wrk's; it is kept for cross-checks. Each load reports the
#   CPU used by the servers, the client and everything else ("other", i.e.
#   someone else's work; >= 0.10 core flags the figure as suspect).
# - Target node: TARGET=leader (default) sends the load to the current leader
#   of each system; TARGET=follower to a follower (writes are forwarded by
#   both systems, reads pay a ReadIndex round trip).
# - Unavailability window: config_load.py probe, a single asyncio client
#   that sends a write every PROBE_INTERVAL_MS through a follower, open loop (a
#   slow request does not delay the next one), each with a PROBE_TIMEOUT; it
#   SIGKILLs the leader's PID itself (so the kill time and the request times
#   come from the same clock) and measures from the kill to the first success
#   of a write sent after the kill. A request that gets no answer within
#   PROBE_TIMEOUT counts as a hang. The killed node is restarted on the same
#   data dir and must rejoin (same leader everywhere, same applied index)
#   before the next kill. KILLS rounds per system and configuration.
# - etcd runs twice, each time a fresh cluster: with its defaults (heartbeat
#   100 ms, election 1000 ms) and with timers equal to ferry's (heartbeat
#   FERRY_HEARTBEAT_MS, election FERRY_ELECTION_MIN_MS; etcd needs election
#   >= 5 x heartbeat).
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: ops/bench/config.sh [--quick] [--skip-ferry] [--skip-etcd] [--build] [--keep-tmp] [--help]

Three ferry nodes (target/release/ferryd, cluster mode) and a three-node etcd
3.4 (Debian etcd-server) on loopback, one system at a time:

  ferry         node i on 127.0.0.i, admin :FERRY_ADMIN_PORT, cluster
                :FERRY_CLUSTER_PORT, heartbeat 30 ms, election 150-270 ms
  etcd-default  127.0.0.1, client 23791-23793, peer 23801-23803, etcd's
                default timers (heartbeat 100 ms, election 1000 ms)
  etcd-equal    same ports, a fresh cluster, heartbeat 30 ms, election 150 ms

Figures per system: small writes/s with p50/p99 at concurrency 1 and 32,
linearizable reads/s with p50/p99 at concurrency 32, and the unavailability
window after kill -9 of the leader (median and max over KILLS kills) seen by a
client writing every 5 ms through a follower, with the count of requests that
got no answer within their timeout. Prints a table with ferry/etcd ratios and
writes ${OUT}/config-<timestamp>.json and .txt.

Options (each has an environment-variable equivalent):
  --quick        QUICK=1       smoke run: DURATION=2, WARMUP=1, KILLS=2
  --skip-ferry   SKIP_FERRY=1  etcd only (e.g. while ferry's cluster mode is missing)
  --skip-etcd    SKIP_ETCD=1   ferry only (the table then has no ratios)
  --build        BUILD=1       run 'cargo build --release -j2 -p ferry-node' first
                               (also done when FERRYD is missing)
  --keep-tmp     KEEP_TMP=1    keep the temp dir (configs, data dirs, logs, raw outputs)
  -h, --help                   this text

Environment:
  DURATION=10        seconds per wrk load
  WARMUP=2           seconds of unmeasured load before the measured ones, per system
  CLIENT=wrk         wrk (duration-bounded) or python (config_load.py, count-bounded)
  COUNT_C1=2000 COUNT_C32=20000 COUNT_READ=20000   operations per load with CLIENT=python
                     (each also stopped after 3 x DURATION seconds)
  TARGET=leader      node that receives the throughput loads: leader or follower
  KILLS=5            leader kills per system and configuration
  PROBE_INTERVAL_MS=5  PROBE_TIMEOUT=2   probe write period and per-request timeout (s)
  MAX_WINDOW=20      seconds after a kill before a round is given up
  RESTART_WATCH=3    seconds of writes (every PROBE_INTERVAL_MS, through the same
                     follower) while the killed node restarts: the longest span
                     without a successful write shows whether a rejoining node
                     disturbs the cluster
  READY_TIMEOUT=20   seconds for a cluster to elect a leader / a node to rejoin
  WAIT_OTHER=1200    seconds to wait, polling every 30 s, while ops/bench/l4.sh runs
                     (checked before every measurement phase; 0 = do not wait)
  WAIT_IDLE=60       then wait up to this many seconds for other work (builds,
                     tests) to use < 0.15 core (0 = do not wait)
  NOISY_RETRIES=1    measure a throughput load again (up to this many times) when
                     other work used >= 0.10 core during it; the quietest is kept
  FERRY_ADMIN_PORT=17948 FERRY_CLUSTER_PORT=17947
  FERRY_HEARTBEAT_MS=30 FERRY_ELECTION_MIN_MS=150
  FERRY_ELECTION_MAX_MS=2*MIN-HEARTBEAT   (270: the range etcd draws from at
                     heartbeat 30 ms, election 150 ms: [E, 2E - 1 tick])
  FERRY_REQUEST_TIMEOUT_MS=PROBE_TIMEOUT*1000-500   ferry's [admin] request_timeout_ms
                     (its default is 5000): below the probe's client timeout, so
                     that ferry can answer 503 before the client gives up; etcd's
                     own deadline (5 s + 2 x election) cannot be changed
  FERRYD=target/release/ferryd   ferryd binary (relative to the repo root); a
                     private copy is run so a rebuild does not change it mid-run
  OUT=target/bench   where results go (relative to the repo root)
  NO_INSTALL=1       fail instead of apt-get installing missing tools

Tools: etcd (etcd-server), wrk, python3; missing Debian packages are installed
with apt-get update once, then apt-get install -y (root only). No system
service is started or touched; etcd runs as the current user from the temp dir.
EOF
}

die() { printf 'config.sh: error: %s\n' "$*" >&2; exit 1; }
log() { printf '[config %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[config %s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

for arg in "$@"; do
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        --quick) QUICK=1 ;;
        --skip-ferry) SKIP_FERRY=1 ;;
        --skip-etcd) SKIP_ETCD=1 ;;
        --build) BUILD=1 ;;
        --keep-tmp) KEEP_TMP=1 ;;
        *) usage >&2; die "unknown argument: $arg" ;;
    esac
done

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/../.." && pwd)
cd "$REPO_ROOT"

QUICK=${QUICK:-0}
if [[ "$QUICK" == 1 ]]; then
    DURATION=${DURATION:-2}
    WARMUP=${WARMUP:-1}
    KILLS=${KILLS:-2}
    COUNT_C1=${COUNT_C1:-300}
    COUNT_C32=${COUNT_C32:-2000}
    COUNT_READ=${COUNT_READ:-2000}
fi
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
KILLS=${KILLS:-5}
COUNT_C1=${COUNT_C1:-2000}
COUNT_C32=${COUNT_C32:-20000}
COUNT_READ=${COUNT_READ:-20000}
CLIENT=${CLIENT:-wrk}
TARGET=${TARGET:-leader}
PROBE_INTERVAL_MS=${PROBE_INTERVAL_MS:-5}
PROBE_TIMEOUT=${PROBE_TIMEOUT:-2}
MAX_WINDOW=${MAX_WINDOW:-20}
RESTART_WATCH=${RESTART_WATCH:-3}
READY_TIMEOUT=${READY_TIMEOUT:-20}
WAIT_OTHER=${WAIT_OTHER:-1200}
WAIT_IDLE=${WAIT_IDLE:-60}
NOISY_RETRIES=${NOISY_RETRIES:-1}
FERRY_ADMIN_PORT=${FERRY_ADMIN_PORT:-17948}
FERRY_CLUSTER_PORT=${FERRY_CLUSTER_PORT:-17947}
FERRY_HEARTBEAT_MS=${FERRY_HEARTBEAT_MS:-30}
FERRY_ELECTION_MIN_MS=${FERRY_ELECTION_MIN_MS:-150}
# etcd draws its election timeout from [E, 2E) in heartbeat ticks, so the
# longest is 2E - 1 tick: 270 ms at 30/150. ferry's range is that one.
FERRY_ELECTION_MAX_MS=${FERRY_ELECTION_MAX_MS:-$(( 2 * FERRY_ELECTION_MIN_MS - FERRY_HEARTBEAT_MS ))}
FERRY_REQUEST_TIMEOUT_MS=${FERRY_REQUEST_TIMEOUT_MS:-$(( PROBE_TIMEOUT * 1000 - 500 ))}
FERRYD=${FERRYD:-target/release/ferryd}
OUT=${OUT:-target/bench}
SKIP_FERRY=${SKIP_FERRY:-0}
SKIP_ETCD=${SKIP_ETCD:-0}
BUILD=${BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
NO_INSTALL=${NO_INSTALL:-0}

for v in DURATION WARMUP KILLS RESTART_WATCH COUNT_C1 COUNT_C32 COUNT_READ PROBE_INTERVAL_MS PROBE_TIMEOUT MAX_WINDOW \
         READY_TIMEOUT WAIT_OTHER WAIT_IDLE NOISY_RETRIES FERRY_ADMIN_PORT FERRY_CLUSTER_PORT FERRY_HEARTBEAT_MS \
         FERRY_ELECTION_MIN_MS FERRY_ELECTION_MAX_MS FERRY_REQUEST_TIMEOUT_MS; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
(( DURATION > 0 && PROBE_INTERVAL_MS > 0 && PROBE_TIMEOUT > 0 )) || die "DURATION, PROBE_INTERVAL_MS, PROBE_TIMEOUT must be > 0"
[[ "$CLIENT" == wrk || "$CLIENT" == python ]] || die "CLIENT must be wrk or python (got '$CLIENT')"
[[ "$TARGET" == leader || "$TARGET" == follower ]] || die "TARGET must be leader or follower (got '$TARGET')"
(( FERRY_ELECTION_MIN_MS >= 5 * FERRY_HEARTBEAT_MS )) \
    || die "etcd needs election >= 5 x heartbeat: FERRY_ELECTION_MIN_MS=$FERRY_ELECTION_MIN_MS FERRY_HEARTBEAT_MS=$FERRY_HEARTBEAT_MS"
[[ "$SKIP_FERRY" == 1 && "$SKIP_ETCD" == 1 ]] && die "SKIP_FERRY=1 and SKIP_ETCD=1: nothing to measure"

ETCD_CLIENT_PORTS=(23791 23792 23793)
ETCD_PEER_PORTS=(23801 23802 23803)
LOAD=(python3 "$SCRIPT_DIR/config_load.py")

# ---------------------------------------------------------------- processes
PIDS=()          # every long-running PID this script started (and only those)
TMP=""

exited() {       # exited PID TENTHS: true once PID is gone, false after TENTHS x 0.1 s
    local i
    for ((i = 0; i < $2; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    ! kill -0 "$1" 2>/dev/null
}

stop_pid() {     # stop_pid PID: SIGTERM, SIGKILL 5 s later; reap.
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    if ! exited "$pid" 50; then
        warn "PID $pid still running 5 s after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        exited "$pid" 20 || warn "PID $pid survived SIGKILL"
    fi
}

forget_pid() {   # drop a PID from PIDS
    local pid=$1 p keep=()
    for p in "${PIDS[@]}"; do [[ "$p" == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}"
    done
    if [[ -n "$TMP" && -d "$TMP" ]]; then
        if [[ "$KEEP_TMP" == 1 || $rc -ne 0 ]]; then
            log "temp dir kept: $TMP"
        else
            rm -rf -- "$TMP"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers
port_busy() {    # port_busy IP PORT: something listens on IP:PORT (or on *:PORT)
    [[ -n "$(ss -Hltn "( sport = :$2 )" 2>/dev/null | awk -v a="$1:$2" '$4 == a || $4 ~ /^(\*|0\.0\.0\.0|\[::\]):/')" ]]
}

wait_other_bench() {  # wait_other_bench [NODES]: never measure while someone
    # else's benchmark runs; then wait (WAIT_IDLE) for other work to calm down
    local waited=0
    (( WAIT_OTHER > 0 )) || return 0
    while pgrep -f ops/bench/l4.sh >/dev/null; do
        if (( waited >= WAIT_OTHER )); then
            die "ops/bench/l4.sh still running after ${WAIT_OTHER}s of waiting; not measuring alongside it"
        fi
        (( waited == 0 )) && log "ops/bench/l4.sh is running; waiting for it to finish (poll every 30 s, up to ${WAIT_OTHER}s)"
        sleep 30
        waited=$(( waited + 30 ))
    done
    (( waited == 0 )) || log "ops/bench/l4.sh finished after ~${waited}s of waiting"
    echo "$waited" >>"$TMP/waited_other"
    if (( WAIT_IDLE > 0 )); then
        local r
        r=$("${LOAD[@]}" idle --nodes "${1:-}" --max-wait "$WAIT_IDLE")
        echo "$r" >>"$TMP/waited_idle"
        [[ "$(jq -r .idle <<<"$r")" == true ]] \
            || warn "the machine is still busy after ${WAIT_IDLE}s (other work: $(jq -r .other_cores <<<"$r") cores); measuring anyway, figures flagged"
    fi
}

need_pkgs=()
need() {         # need CMD PKG: note PKG if CMD is missing
    command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2")
}

# ---------------------------------------------------------------- tools
need python3 python3
need wrk wrk
need ss iproute2
need curl curl
need jq jq
[[ "$SKIP_ETCD" == 1 ]] || need etcd etcd-server
if (( ${#need_pkgs[@]} > 0 )); then
    [[ "$NO_INSTALL" == 1 ]] && die "missing packages: ${need_pkgs[*]} (NO_INSTALL=1)"
    (( EUID == 0 )) || die "missing packages: ${need_pkgs[*]}; install them (apt-get install -y ${need_pkgs[*]}) or run as root"
    log "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    # policy-rc.d usually stops the package from starting a system etcd; if one
    # starts anyway it listens on 2379/2380, not on our ports.
    apt-get install -y -qq "${need_pkgs[@]}" >&2 || die "apt-get install ${need_pkgs[*]} failed"
fi
command -v etcdctl >/dev/null 2>&1 || log "etcdctl not installed (etcd-client); not needed: the JSON gateway is used"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ferry-config-bench.XXXXXX")
mkdir -p "$TMP/results"
RESULTS=$TMP/results
log "temp dir $TMP (data dirs on $(df -PT "$TMP" | awk 'NR == 2 { print $2 }'))"

if [[ "$SKIP_FERRY" != 1 ]]; then
    if [[ "$BUILD" == 1 || ! -x "$FERRYD" ]]; then
        command -v cargo >/dev/null || die "cargo not found; cannot build $FERRYD"
        log "building ferryd (cargo build --release -j2 -p ferry-node)"
        cargo build --release -j2 -p ferry-node >&2 || die "cargo build failed"
    fi
    [[ -x "$FERRYD" ]] || die "$FERRYD not found after the build"
fi

# ---------------------------------------------------------------- etcd
ETCD_PIDS=()     # index 0..2 -> PID of member i+1
ETCD_DIR=""
ETCD_HB=100
ETCD_EL=1000

etcd_start_member() {  # etcd_start_member I (0-based)
    local i=$1 name="e$(( $1 + 1 ))" cluster="" j
    for j in 0 1 2; do
        cluster+="${cluster:+,}e$(( j + 1 ))=http://127.0.0.1:${ETCD_PEER_PORTS[j]}"
    done
    etcd --name "$name" --data-dir "$ETCD_DIR/$name" \
        --listen-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORTS[i]}" \
        --advertise-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORTS[i]}" \
        --listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORTS[i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORTS[i]}" \
        --initial-cluster "$cluster" --initial-cluster-token "ferry-bench-$$-$ETCD_HB" \
        --initial-cluster-state new \
        --heartbeat-interval "$ETCD_HB" --election-timeout "$ETCD_EL" \
        --logger zap --log-outputs stderr --log-level warn \
        >>"$ETCD_DIR/$name.log" 2>&1 &
    ETCD_PIDS[i]=$!
    PIDS+=("$!")
    disown "$!"     # no job report when the probe SIGKILLs it; bash still reaps it
}

etcd_nodes() {   # host:port=pid,... for config_load.py
    local out="" i
    for i in 0 1 2; do
        out+="${out:+,}127.0.0.1:${ETCD_CLIENT_PORTS[i]}=${ETCD_PIDS[i]}"
    done
    echo "$out"
}

etcd_up() {      # etcd_up LABEL HEARTBEAT ELECTION
    local i
    ETCD_HB=$2
    ETCD_EL=$3
    ETCD_DIR=$TMP/$1
    mkdir -p "$ETCD_DIR"
    for i in 0 1 2; do
        port_busy 127.0.0.1 "${ETCD_CLIENT_PORTS[i]}" && die "127.0.0.1:${ETCD_CLIENT_PORTS[i]} is in use"
        port_busy 127.0.0.1 "${ETCD_PEER_PORTS[i]}" && die "127.0.0.1:${ETCD_PEER_PORTS[i]} is in use"
    done
    for i in 0 1 2; do etcd_start_member "$i"; done
}

etcd_down() {
    local i
    for i in 0 1 2; do
        [[ -n "${ETCD_PIDS[i]:-}" ]] || continue
        stop_pid "${ETCD_PIDS[i]}"
        forget_pid "${ETCD_PIDS[i]}"
    done
    ETCD_PIDS=()
}

# ---------------------------------------------------------------- ferry
FERRY_PIDS=()
FERRY_DIR=""
FERRYD_RUN=""
FERRYD_INFO="skipped"

ferry_write_config() {  # ferry_write_config I (1-based) FILE
    local i=$1 members="" j
    for j in 1 2 3; do
        members+="${members:+, }\"$j@127.0.0.$j:$FERRY_CLUSTER_PORT\""
    done
    cat >"$2" <<EOF
[node]
name = "n$i"
data_dir = "$FERRY_DIR/n$i"
bind_addr = "127.0.0.$i"
drain_timeout_ms = 1000

[admin]
addr = "127.0.0.$i:$FERRY_ADMIN_PORT"
request_timeout_ms = $FERRY_REQUEST_TIMEOUT_MS

[cluster]
node_id = $i
addr = "127.0.0.$i:$FERRY_CLUSTER_PORT"
cluster_id = "bench"
initial_members = [$members]
heartbeat_ms = $FERRY_HEARTBEAT_MS
election_timeout_min_ms = $FERRY_ELECTION_MIN_MS
election_timeout_max_ms = $FERRY_ELECTION_MAX_MS
EOF
}

ferry_start_node() {   # ferry_start_node I (0-based)
    local i=$1 n=$(( $1 + 1 ))
    "$FERRYD_RUN" --config "$FERRY_DIR/n$n.toml" >>"$FERRY_DIR/n$n.log" 2>&1 &
    FERRY_PIDS[i]=$!
    PIDS+=("$!")
    disown "$!"     # no job report when the probe SIGKILLs it; bash still reaps it
}

ferry_nodes() {
    local out="" i
    for i in 0 1 2; do
        out+="${out:+,}127.0.0.$(( i + 1 )):$FERRY_ADMIN_PORT=${FERRY_PIDS[i]}"
    done
    echo "$out"
}

ferry_up() {
    local i n
    FERRY_DIR=$TMP/ferry
    mkdir -p "$FERRY_DIR"
    FERRYD_RUN=$TMP/ferryd
    cp -- "$FERRYD" "$FERRYD_RUN"
    FERRYD_INFO="$(timeout 5 "$FERRYD_RUN" --version 2>/dev/null | head -n 1 || true) sha256:$(sha256sum "$FERRYD_RUN" | cut -c1-12) built $(date -u -r "$FERRYD" +%Y-%m-%dT%H:%M:%SZ)"
    log "ferryd: $FERRYD_INFO (running a copy of $FERRYD)"
    for n in 1 2 3; do
        mkdir -p "$FERRY_DIR/n$n"
        ferry_write_config "$n" "$FERRY_DIR/n$n.toml"
        if ! "$FERRYD_RUN" --check-config "$FERRY_DIR/n$n.toml" >"$FERRY_DIR/check-n$n.txt" 2>&1; then
            cat "$FERRY_DIR/check-n$n.txt" >&2
            die "ferryd --check-config rejects the cluster config $FERRY_DIR/n$n.toml (is cluster mode built in? SKIP_FERRY=1 leaves ferry out)"
        fi
        port_busy "127.0.0.$n" "$FERRY_ADMIN_PORT" && die "127.0.0.$n:$FERRY_ADMIN_PORT is in use (FERRY_ADMIN_PORT)"
        port_busy "127.0.0.$n" "$FERRY_CLUSTER_PORT" && die "127.0.0.$n:$FERRY_CLUSTER_PORT is in use (FERRY_CLUSTER_PORT)"
    done
    for i in 0 1 2; do ferry_start_node "$i"; done
}

ferry_down() {
    local i
    for i in 0 1 2; do
        [[ -n "${FERRY_PIDS[i]:-}" ]] || continue
        stop_pid "${FERRY_PIDS[i]}"
        forget_pid "${FERRY_PIDS[i]}"
    done
    FERRY_PIDS=()
}

# ---------------------------------------------------------------- phases
# Generic over the system: SYS (ferry|etcd), LABEL (result dir), NODES_FN
# (prints --nodes), START_FN (restarts member I, 0-based), PIDS_VAR.

cluster_wait() {  # cluster_wait SYS NODES [--caught-up]: prints the leader index
    "${LOAD[@]}" wait --system "$1" --nodes "$2" --timeout "$READY_TIMEOUT" ${3:+"$3"}
}

show_logs() {    # show_logs DIR: last lines of every node log
    local f
    for f in "$1"/*.log; do
        [[ -f "$f" ]] || continue
        warn "last lines of $f:"
        tail -n 15 "$f" >&2 || true
    done
}

measure_throughput() {  # measure_throughput SYS LABEL NODES
    local sys=$1 label=$2 nodes=$3 lead node out
    lead=$(cluster_wait "$sys" "$nodes") || { show_logs "$TMP/$label"; die "$label: no leader"; }
    if [[ "$TARGET" == leader ]]; then node=$lead; else node=$(( lead % 3 + 1 )); fi
    log "$label: throughput loads on node $node ($TARGET; leader is node $lead), client $CLIENT"
    out=$RESULTS/$label
    mkdir -p "$out"
    echo "{\"leader\": $lead, \"node\": $node, \"target\": \"$TARGET\"}" >"$out/target.json"
    wait_other_bench "$nodes"
    if (( WARMUP > 0 )); then
        "${LOAD[@]}" wrk --system "$sys" --nodes "$nodes" --node "$node" --op write --concurrency 32 \
            --duration "$WARMUP" >"$out/warmup.json" || die "$label: warmup failed"
    fi
    measure_load "$sys" "$label" "$nodes" "$node" write 1 "$COUNT_C1" "$out/write_c1.json"
    measure_load "$sys" "$label" "$nodes" "$node" write 32 "$COUNT_C32" "$out/write_c32.json"
    measure_load "$sys" "$label" "$nodes" "$node" read 32 "$COUNT_READ" "$out/read_c32.json"
}

measure_load() {  # measure_load SYS LABEL NODES NODE OP C COUNT FILE: again (up to
    # NOISY_RETRIES times) while other work used >= 0.10 core; keeps the quietest
    local try other best=""
    for ((try = 0; try <= NOISY_RETRIES; try++)); do
        (( try == 0 )) || { log "$2: $5 c=$6 again: other work used $other cores during it"; wait_other_bench "$3"; }
        run_load "$1" "$3" "$4" "$5" "$6" "$7" >"$8.try$try" || die "$2: $5 c=$6 failed"
        other=$(jq -r .cpu.other_cores "$8.try$try")
        if [[ -z "$best" ]] || awk -v a="$other" -v b="$(jq -r .cpu.other_cores "$best")" 'BEGIN { exit !(a < b) }'; then
            best=$8.try$try
        fi
        awk -v a="$other" 'BEGIN { exit !(a >= 0.10) }' || break
    done
    cp -- "$best" "$8"
    log "$2: $5 c=$6: $(summary_line "$8")"
}

run_load() {     # run_load SYS NODES NODE OP C COUNT
    if [[ "$CLIENT" == wrk ]]; then
        "${LOAD[@]}" wrk --system "$1" --nodes "$2" --node "$3" --op "$4" --concurrency "$5" \
            --duration "$DURATION" --timeout 5
    else
        "${LOAD[@]}" load --system "$1" --nodes "$2" --node "$3" --op "$4" --concurrency "$5" \
            --count "$6" --max-seconds $(( 3 * DURATION )) --timeout 5
    fi
}

summary_line() { # one-line summary of a load result
    jq -r '"\(.ops_per_s) ops/s, p50 \(.p50_ms) ms, p99 \(.p99_ms) ms, \(.errors) errors (cores: servers \(.cpu.servers_cores), client \(.cpu.client_cores), other \(.cpu.other_cores))"' "$1"
}

measure_outage() {  # measure_outage SYS LABEL NODES_FN START_FN PIDS_ARRAY_NAME
    local sys=$1 label=$2 nodes_fn=$3 start_fn=$4 pids_name=$5 k out killed pid nodes follower steady
    local -n pids_ref=$pids_name
    out=$RESULTS/$label/outage
    mkdir -p "$out"
    wait_other_bench "$($nodes_fn)"
    for ((k = 1; k <= KILLS; k++)); do
        nodes=$($nodes_fn)
        cluster_wait "$sys" "$nodes" --caught-up >/dev/null \
            || { show_logs "$TMP/$label"; warn "$label: cluster not ready before kill $k"; break; }
        sleep 0.5
        if ! "${LOAD[@]}" probe --system "$sys" --nodes "$nodes" \
                --interval "$(awk -v m="$PROBE_INTERVAL_MS" 'BEGIN { print m / 1000 }')" \
                --timeout "$PROBE_TIMEOUT" --max-window "$MAX_WINDOW" >"$out/kill-$k.json"; then
            warn "$label: probe $k failed"
            rm -f -- "$out/kill-$k.json"
            break
        fi
        killed=$(jq -r .leader_killed "$out/kill-$k.json")
        pid=${pids_ref[killed - 1]}
        exited "$pid" 50 || warn "$label: PID $pid still there after SIGKILL"
        forget_pid "$pid"
        log "$label: kill $k/$KILLS: node $killed (PID $pid): $(jq -c '{window_s, election_s, hangs, outcomes_after_kill, max_latency_ms}' "$out/kill-$k.json")"
        # The restart itself: a writer on the probe's follower records how
        # long the restarting node disturbs the cluster (e.g. by deposing the
        # leader with a campaign of its own).
        follower=$(jq -r .follower "$out/kill-$k.json")
        "${LOAD[@]}" steady --system "$sys" --nodes "$nodes" --node "$follower" \
            --interval "$(awk -v m="$PROBE_INTERVAL_MS" 'BEGIN { print m / 1000 }')" \
            --timeout "$PROBE_TIMEOUT" --duration "$RESTART_WATCH" >"$out/restart-$k.json" &
        steady=$!
        PIDS+=("$steady")
        # a random 0.1-0.6 s before the restart: whether a rejoining node
        # campaigns depends on where the leader's retry backoff towards it is
        sleep "$(awk -v s="$RANDOM" 'BEGIN { srand(s); printf "%.3f", 0.1 + rand() * 0.5 }')"
        $start_fn $(( killed - 1 ))
        wait "$steady" || warn "$label: restart watch $k failed"
        forget_pid "$steady"
        log "$label: restart $k/$KILLS: node $killed: $(jq -c '{longest_gap_s, max_latency_ms, outcomes}' "$out/restart-$k.json" 2>/dev/null)"
        if ! cluster_wait "$sys" "$($nodes_fn)" --caught-up >/dev/null; then
            show_logs "$TMP/$label"
            warn "$label: node $killed did not rejoin within ${READY_TIMEOUT}s after its restart"
            echo "{\"rejoin_failed\": true, \"node\": $killed}" >"$out/rejoin-failed-$k.json"
            break
        fi
    done
}

run_etcd() {     # run_etcd LABEL HEARTBEAT ELECTION
    local label=$1 nodes
    wait_other_bench
    log "$label: starting etcd x3 (heartbeat $2 ms, election $3 ms)"
    etcd_up "$label" "$2" "$3"
    nodes=$(etcd_nodes)
    cluster_wait etcd "$nodes" >/dev/null || { show_logs "$ETCD_DIR"; die "$label: etcd did not elect a leader within ${READY_TIMEOUT}s"; }
    "${LOAD[@]}" setup --system etcd --nodes "$nodes" >/dev/null || die "$label: cannot write the benchmark key"
    mkdir -p "$RESULTS/$label"
    echo "{\"heartbeat_ms\": $2, \"election_ms\": $3}" >"$RESULTS/$label/timers.json"
    measure_throughput etcd "$label" "$nodes"
    measure_outage etcd "$label" etcd_nodes etcd_start_member ETCD_PIDS
    etcd_down
}

run_ferry() {
    local nodes
    wait_other_bench
    log "ferry: starting ferryd x3 on 127.0.0.1-3 (admin :$FERRY_ADMIN_PORT, cluster :$FERRY_CLUSTER_PORT)"
    ferry_up
    nodes=$(ferry_nodes)
    cluster_wait ferry "$nodes" >/dev/null || { show_logs "$FERRY_DIR"; die "ferry: no leader on all three nodes within ${READY_TIMEOUT}s"; }
    "${LOAD[@]}" setup --system ferry --nodes "$nodes" >"$FERRY_DIR/setup.json" \
        || { show_logs "$FERRY_DIR"; die "ferry: PUT /v1/routes/bench failed"; }
    mkdir -p "$RESULTS/ferry"
    echo "{\"heartbeat_ms\": $FERRY_HEARTBEAT_MS, \"election_ms\": \"$FERRY_ELECTION_MIN_MS-$FERRY_ELECTION_MAX_MS\"}" \
        >"$RESULTS/ferry/timers.json"
    measure_throughput ferry ferry "$nodes"
    measure_outage ferry ferry ferry_nodes ferry_start_node FERRY_PIDS
    ferry_down
}

# ---------------------------------------------------------------- run
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
START_S=$SECONDS
log "client $CLIENT, target $TARGET, ${DURATION}s per load, $KILLS kills per system"

if [[ "$SKIP_ETCD" != 1 ]]; then
    run_etcd etcd-default 100 1000
    run_etcd etcd-equal "$FERRY_HEARTBEAT_MS" "$FERRY_ELECTION_MIN_MS"
fi
if [[ "$SKIP_FERRY" != 1 ]]; then
    run_ferry
fi

mkdir -p "$OUT"
python3 "$SCRIPT_DIR/config_report.py" \
    --results "$RESULTS" \
    --json "$OUT/config-$STAMP.json" --txt "$OUT/config-$STAMP.txt" \
    --meta "stamp=$STAMP" \
    --meta "client=$CLIENT" --meta "target=$TARGET" --meta "duration_s=$DURATION" \
    --meta "warmup_s=$WARMUP" --meta "kills=$KILLS" \
    --meta "probe_interval_ms=$PROBE_INTERVAL_MS" --meta "probe_timeout_s=$PROBE_TIMEOUT" \
    --meta "quick=$QUICK" --meta "ferryd=$FERRYD_INFO" \
    --meta "etcd=$(etcd --version 2>/dev/null | sed -n 1p)" \
    --meta "wrk=$(wrk --version 2>&1 | sed -n 1p | cut -d' ' -f1-2)" \
    --meta "machine=$(nproc) CPUs, $(uname -r)" \
    --meta "data_fs=$(df -PT "$TMP" | awk 'NR == 2 { print $2 }')" \
    --meta "waited_for_other_bench_s=$(awk '{ s += $1 } END { print s + 0 }' "$TMP/waited_other" 2>/dev/null || echo 0)" \
    --meta "waited_idle_s=$(jq -s 'map(.waited_s) | add // 0' "$TMP/waited_idle" 2>/dev/null || echo 0)" \
    --meta "elapsed_s=$(( SECONDS - START_S ))"
log "wrote $OUT/config-$STAMP.json and $OUT/config-$STAMP.txt"
