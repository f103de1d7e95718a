#!/usr/bin/env bash
# ops/bench/chaos.sh — the chaos benchmark of issue 24: ferry against ferry.
#
# Run ./ops/bench/chaos.sh --help for usage. Everything runs on 127.0.0.1, as
# the current user, from a mktemp -d directory; only processes started here
# are ever stopped. Conventions (tools, noise accounting, WAIT_IDLE, QUICK,
# PID tracking, report) follow ops/bench/l4.sh; its helpers are copied here.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: ops/bench/chaos.sh [--quick] [--keep-tmp] [--help]

Starts one ferryd as a single-member cluster (chaos policies need cluster
mode), writes its routes and policies through the admin API, and measures,
ferry against ferry in the same run:

  1. off costs nothing: the l4 figures (iperf3 1 and 4 streams, wrk
     keep-alive req/s, wrk 'Connection: close' conn/s) through route fast
     with no policy at all, and with a policy present that scopes another
     route (latency 20 ms on route other); the two states interleaved over
     OFF_ROUNDS rounds (order alternating); ratio policy/none per round.
     Target >= 0.99x.
  2. latency accuracy: 20 ms latency toxic, direction downstream (the
     default: the delay is added once per round trip; 'both' would add it
     twice), on route lat, none on route plain, same echo upstream; small
     requests at LAT_RATE req/s in total (half to each), open loop, over
     LAT_CONNS connections per route, LAT_DURATION s per round. Added round
     trip = shaped - plain: median within +-0.5 ms of 20 ms, p99 within +2 ms.
  3. bandwidth accuracy: bandwidth toxics of 100, 10,000 and 500,000 kB/s
     (rate_kbps, units of 1,000 bytes/s), direction downstream, measured with
     iperf3 -R (the upstream sends to the client: the direction shaped) for
     BW_DURATION s. Target +-2 %.
  4. shaped throughput and cost: iperf3 -R, 1 stream, through route lat1
     (latency 1 ms, downstream) against route fast (unshaped), interleaved
     over SHAPE_ROUNDS rounds: Gbit/s and ferryd CPU seconds per GB.
  5. memory: IDLE_CONNS idle connections (each first echoes one line, so
     both directions carried bytes) through route idle with a latency
     policy and without; ferryd restarted (same data dir) before each run,
     so each measures a fresh process; MEM_ROUNDS rounds, ABBA order.
     Target: RSS held with the policy <= 2x the RSS held without.

Prints a table (each target, the figure, pass/fail) and writes
${OUT}/chaos-<timestamp>.json and .txt.

Options:
  --quick        QUICK=1       shorter loads (see below); the report says so
  --keep-tmp     KEEP_TMP=1    keep the temp dir (configs, logs, raw outputs)
  -h, --help                   this text

Environment:
  PHASES="mem off lat bw shaped"   the phases to run, in the order given (the
                      report marks the others "info", no data)
  FERRYD=target/release/ferryd   ferryd binary (relative to the repo root);
                      needs chaos on traffic (protocol 5)
  BINARY_WAIT=0       wait up to this many seconds for FERRYD to appear
                      (e.g. while a build is still running)
  DURATION=5          seconds per l4 load and per shaped iperf3 load
  QUICK=1             DURATION=2, LAT_DURATION=3, BW_DURATION=2, fewer rounds
  OFF_ROUNDS=6        rounds of phase 1 (QUICK: 2)
  LAT_ROUNDS=3        rounds of phase 2 (QUICK: 1)
  LAT_DURATION=10     seconds per latency round (plus 1 s warm-up)
  LAT_RATE=1000       requests/s in total; LAT_CONNS=4 connections per route
  BW_ROUNDS=2         rounds of phase 3 (QUICK: 1)
  BW_DURATION=5       seconds per bandwidth measurement (QUICK: 2)
  SHAPE_ROUNDS=4      rounds of phase 4 (QUICK: 2)
  MEM_ROUNDS=2        ABBA rounds of phase 5, 2 runs each (QUICK: 1)
  IDLE_CONNS=1000     IDLE_HOLD=2
  WRK_THREADS=2 WRK_CONNS=50
  SETTLE=1            seconds of pause between loads
  WAIT_IDLE=0         before each state or round, wait up to this many
                      seconds for the machine to be idle (< 15% CPU busy);
                      CPU used by other processes is recorded for every load
  NOISY_RETRIES=1     measure an l4 load again when other processes used
                      >= 10% of a core during it; the quietest attempt is kept
  READY_TIMEOUT=20    seconds to wait for a server to become ready
  OUT=target/bench    where results go (relative to the repo root)
  NO_INSTALL=1        fail instead of apt-get installing missing tools

Ports (all must be free; none is used by l4.sh): upstreams 19201 (iperf3),
19080 (nginx), 19007 (echo); ferryd admin 19948, cluster 19947; routes
fast 19301, fast-http 19380, other 19302, lat 19303, plain 19304, bw 19305,
lat1 19306, idle 19307.
EOF
}

die() { printf 'chaos.sh: error: %s\n' "$*" >&2; exit 1; }
log() { printf '[chaos %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[chaos %s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

for arg in "$@"; do
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        --quick) QUICK=1 ;;
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
    OFF_ROUNDS=${OFF_ROUNDS:-2}
    LAT_ROUNDS=${LAT_ROUNDS:-1}
    LAT_DURATION=${LAT_DURATION:-3}
    BW_ROUNDS=${BW_ROUNDS:-1}
    BW_DURATION=${BW_DURATION:-2}
    SHAPE_ROUNDS=${SHAPE_ROUNDS:-2}
    MEM_ROUNDS=${MEM_ROUNDS:-1}
fi
DURATION=${DURATION:-5}
OFF_ROUNDS=${OFF_ROUNDS:-6}
LAT_ROUNDS=${LAT_ROUNDS:-3}
LAT_DURATION=${LAT_DURATION:-10}
LAT_RATE=${LAT_RATE:-1000}
LAT_CONNS=${LAT_CONNS:-4}
BW_ROUNDS=${BW_ROUNDS:-2}
BW_DURATION=${BW_DURATION:-5}
SHAPE_ROUNDS=${SHAPE_ROUNDS:-4}
MEM_ROUNDS=${MEM_ROUNDS:-2}
IDLE_CONNS=${IDLE_CONNS:-1000}
IDLE_HOLD=${IDLE_HOLD:-2}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNS=${WRK_CONNS:-50}
SETTLE=${SETTLE:-1}
WAIT_IDLE=${WAIT_IDLE:-0}
NOISY_RETRIES=${NOISY_RETRIES:-1}
READY_TIMEOUT=${READY_TIMEOUT:-20}
BINARY_WAIT=${BINARY_WAIT:-0}
FERRYD=${FERRYD:-target/release/ferryd}
OUT=${OUT:-target/bench}
KEEP_TMP=${KEEP_TMP:-0}
NO_INSTALL=${NO_INSTALL:-0}
PHASES=${PHASES:-mem off lat bw shaped}
for ph in $PHASES; do
    case "$ph" in mem|off|lat|bw|shaped) ;; *) die "PHASES: unknown phase '$ph' (mem off lat bw shaped)" ;; esac
done

for v in DURATION OFF_ROUNDS LAT_ROUNDS LAT_DURATION LAT_RATE LAT_CONNS BW_ROUNDS BW_DURATION SHAPE_ROUNDS \
         MEM_ROUNDS IDLE_CONNS IDLE_HOLD WRK_THREADS WRK_CONNS SETTLE WAIT_IDLE NOISY_RETRIES READY_TIMEOUT BINARY_WAIT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done
for v in DURATION LAT_DURATION LAT_RATE LAT_CONNS BW_DURATION IDLE_CONNS WRK_THREADS WRK_CONNS; do
    (( ${!v} > 0 )) || die "$v must be > 0"
done
(( LAT_RATE <= 20000 && LAT_DURATION <= 600 && LAT_CONNS <= 64 )) || die "LAT_RATE <= 20000, LAT_DURATION <= 600, LAT_CONNS <= 64"
(( DURATION <= 600 && BW_DURATION <= 600 )) || die "DURATION and BW_DURATION at most 600"

UP_IPERF_PORT=19201
UP_HTTP_PORT=19080
UP_ECHO_PORT=19007
ADMIN_PORT=19948
CLUSTER_PORT=19947
ADMIN=127.0.0.1:$ADMIN_PORT
# route name -> listen port and upstream port
declare -A ROUTE_PORT=([fast]=19301 [fast-http]=19380 [other]=19302 [lat]=19303 [plain]=19304 [bw]=19305 [lat1]=19306 [idle]=19307)
declare -A ROUTE_UP=([fast]=$UP_IPERF_PORT [fast-http]=$UP_HTTP_PORT [other]=$UP_ECHO_PORT [lat]=$UP_ECHO_PORT
                     [plain]=$UP_ECHO_PORT [bw]=$UP_IPERF_PORT [lat1]=$UP_IPERF_PORT [idle]=$UP_ECHO_PORT)
ROUTES=(fast fast-http other lat plain bw lat1 idle)
BW_RATES=(100 10000 500000)

# ---------------------------------------------------------------- processes (as l4.sh)
PIDS=()          # every PID this script started (and only those)
TMP=""
FERRY_PID=""
ECHO_PID="" NGINX_PID="" IPERF_PID=""

exited() {       # exited PID TENTHS: true once PID is gone, false after TENTHS x 0.1 s
    local i
    for ((i = 0; i < $2; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    ! kill -0 "$1" 2>/dev/null
}

stop_pid() {     # stop_pid PID: SIGTERM, 5 s later a second SIGTERM, 2 s later SIGKILL; reap.
    local pid=$1
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    if ! exited "$pid" 50; then
        warn "PID $pid still running 5 s after SIGTERM; sending a second SIGTERM"
        kill -TERM "$pid" 2>/dev/null || true
        if ! exited "$pid" 20; then
            warn "PID $pid still running; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

forget_pid() {   # drop a stopped PID from PIDS
    local pid=$1 p keep=()
    for p in "${PIDS[@]}"; do [[ "$p" == "$pid" ]] || keep+=("$p"); done
    PIDS=(${keep[@]+"${keep[@]}"})
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

# ---------------------------------------------------------------- helpers (as l4.sh)
is_listening() {
    ss -Hltn "sport = :$1" 2>/dev/null | awk -v p=":$1" '
        $4 == "127.0.0.1" p || $4 == "0.0.0.0" p || $4 == "*" p || $4 == "[::]" p || $4 == "[::ffff:127.0.0.1]" p { found = 1 }
        END { exit !found }'
}

wait_listen() {  # wait_listen PID PORT NAME LOGFILE
    local pid=$1 port=$2 name=$3 logf=$4 deadline=$((SECONDS + READY_TIMEOUT))
    while ! is_listening "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            warn "$name (PID $pid) exited before listening on :$port; last log lines:"
            tail -n 20 "$logf" >&2 || true
            return 1
        fi
        if (( SECONDS >= deadline )); then
            warn "$name did not listen on 127.0.0.1:$port within ${READY_TIMEOUT}s; last log lines:"
            tail -n 20 "$logf" >&2 || true
            return 1
        fi
        sleep 0.1
    done
}

proc_ticks() {   # utime+stime of PID (all threads), in clock ticks
    local s f
    s=$(<"/proc/$1/stat") || return 1
    s=${s##*) }
    read -r -a f <<<"$s"
    echo $(( f[11] + f[12] ))
}

proc_ticks_all() {  # utime+stime+cutime+cstime of PID, in clock ticks
    local s f
    s=$(<"/proc/$1/stat") || return 1
    s=${s##*) }
    read -r -a f <<<"$s"
    echo $(( f[11] + f[12] + f[13] + f[14] ))
}

sys_busy_ticks() {  # user+nice+system+irq+softirq over all CPUs (steal left out)
    local k u n sy irq sirq _
    while read -r k u n sy _ _ irq sirq _; do
        [[ "$k" == cpu ]] && { echo $(( u + n + sy + irq + sirq )); return 0; }
    done </proc/stat
    return 1
}

softirq_pids() {  # ksoftirqd/N: they carry our loopback traffic (see l4.sh)
    local d c
    for d in /proc/[0-9]*; do
        c=$(<"$d/comm") 2>/dev/null || continue
        [[ "$c" == ksoftirqd/* ]] && echo "${d#/proc/}"
    done
    return 0
}
SOFTIRQ_PIDS=()

our_ticks() {  # CPU ticks of everything this script runs (itself and its reaped
    # children such as the load generators, the upstreams, ferryd) and of the
    # softirq threads that carry its loopback traffic
    local total=0 p t
    for p in $$ ${NGINX_PID:+"$NGINX_PID"} $( [[ -n "$NGINX_PID" ]] && cat "/proc/$NGINX_PID/task/$NGINX_PID/children" 2>/dev/null) \
             ${IPERF_PID:+"$IPERF_PID"} ${ECHO_PID:+"$ECHO_PID"} ${FERRY_PID:+"$FERRY_PID"} ${SOFTIRQ_PIDS[@]+"${SOFTIRQ_PIDS[@]}"}; do
        t=$(proc_ticks_all "$p" 2>/dev/null) && total=$(( total + t ))
    done
    echo "$total"
}

proc_status_kib() {  # proc_status_kib PID FIELD -> value in kB
    awk -v k="$2:" '$1 == k { print $2; found = 1 } END { exit !found }' "/proc/$1/status"
}

cpu_busy_pct() {  # % of all CPUs busy over the next second, from /proc/stat
    local a b
    a=$(awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $5+$6 }' /proc/stat)
    sleep 1
    b=$(awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $5+$6 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
        busy = y[1] - x[1]; idle = y[2] - x[2]; printf "%d", (busy + idle) ? 100 * busy / (busy + idle) : 0 }'
}

wait_idle() {    # up to WAIT_IDLE s for the machine to be < 15% busy
    (( WAIT_IDLE > 0 )) || return 0
    local deadline=$((SECONDS + WAIT_IDLE)) busy said=0
    while busy=$(cpu_busy_pct) && (( busy >= 15 )); do
        if (( SECONDS >= deadline )); then
            warn "machine still ${busy}% busy after waiting ${WAIT_IDLE}s; going on"
            return 0
        fi
        (( said )) || { log "machine ${busy}% busy (other jobs); waiting up to ${WAIT_IDLE}s for it to calm down"; said=1; }
    done
    (( said )) && log "machine idle (${busy}% busy); going on"
    return 0
}

foreign_pct() {  # foreign_pct FILE: % of one core used by others during a load
    awk -v clk="$CLK_TCK" '{ w = ($4 - $3) / 1e6; if (w > 0) printf "%d", 100 * ($1 > 0 ? $1 : 0) / clk / w; else print 0 }' "$1" 2>/dev/null || echo 0
}

# ---------------------------------------------------------------- tools
ensure_tools() {
    local missing=() pkgs=() t
    declare -A pkg_of=([iperf3]=iperf3 [wrk]=wrk [nginx]=nginx [curl]=curl [python3]=python3 [ss]=iproute2)
    for t in iperf3 wrk nginx curl python3 ss; do
        command -v "$t" >/dev/null 2>&1 || [[ -x "/usr/sbin/$t" ]] || missing+=("$t")
    done
    (( ${#missing[@]} == 0 )) && return 0
    for t in "${missing[@]}"; do pkgs+=("${pkg_of[$t]}"); done
    [[ "$NO_INSTALL" == 1 ]] && die "missing tools: ${missing[*]} (NO_INSTALL=1; install: apt-get install ${pkgs[*]})"
    (( EUID == 0 )) || die "missing tools: ${missing[*]}; run as root or: sudo apt-get install ${pkgs[*]}"
    command -v apt-get >/dev/null || die "missing tools: ${missing[*]} and no apt-get to install them"
    log "installing with apt-get: ${pkgs[*]}"
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2 \
        || die "apt-get install ${pkgs[*]} failed"
}
ensure_tools
export PATH="$PATH:/usr/sbin:/sbin"
for t in iperf3 wrk nginx curl python3 ss; do
    command -v "$t" >/dev/null || die "$t still not found after install"
done

want_nofile=65536
hard_nofile=$(ulimit -Hn)
[[ "$hard_nofile" == unlimited ]] && hard_nofile=$want_nofile
if (( hard_nofile < want_nofile )); then ulimit -Hn "$want_nofile" 2>/dev/null && hard_nofile=$want_nofile; fi
ulimit -n "$hard_nofile" 2>/dev/null || true
NOFILE=$(ulimit -n)
[[ "$NOFILE" == unlimited ]] && NOFILE=$want_nofile
(( NOFILE >= 2 * IDLE_CONNS + 200 )) || die "ulimit -n is $NOFILE; need >= $((2 * IDLE_CONNS + 200)) for IDLE_CONNS=$IDLE_CONNS"

# ---------------------------------------------------------------- binary
if [[ ! -x "$FERRYD" ]] && (( BINARY_WAIT > 0 )); then
    log "waiting up to ${BINARY_WAIT}s for $FERRYD to appear"
    deadline=$((SECONDS + BINARY_WAIT))
    while [[ ! -x "$FERRYD" ]] && (( SECONDS < deadline )); do sleep 5; done
    # a file being copied in: wait until its size holds still
    if [[ -x "$FERRYD" ]]; then
        prev=-1
        while size=$(stat -c %s "$FERRYD") && (( size != prev )); do prev=$size; sleep 2; done
    fi
fi
[[ -x "$FERRYD" ]] || die "FERRYD=$FERRYD is not an executable file (build it, or BINARY_WAIT=N to wait for it)"
FERRYD=$(cd -- "$(dirname -- "$FERRYD")" && pwd)/$(basename -- "$FERRYD")

# ---------------------------------------------------------------- ports, temp dir
ports=("$UP_IPERF_PORT" "$UP_HTTP_PORT" "$UP_ECHO_PORT" "$ADMIN_PORT" "$CLUSTER_PORT")
for r in "${ROUTES[@]}"; do ports+=("${ROUTE_PORT[$r]}"); done
for p in "${ports[@]}"; do
    if is_listening "$p"; then
        die "port $p is already in use on this machine: $(ss -Hltnp "sport = :$p" | head -n 1)"
    fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ferry-chaos.XXXXXX")
RAW=$TMP/raw
mkdir -p "$RAW" "$TMP/nginx" "$TMP/data"
mkdir -p "$OUT" || die "cannot create OUT=$OUT"
TS=$(date -u +%Y%m%dT%H%M%SZ)
CLK_TCK=$(getconf CLK_TCK)
mapfile -t SOFTIRQ_PIDS < <(softirq_pids)

FERRYD_RUN=$TMP/ferryd
cp -- "$FERRYD" "$FERRYD_RUN" || die "cannot copy $FERRYD to $FERRYD_RUN"
FERRYD_INFO="$(timeout 5 "$FERRYD_RUN" --version 2>/dev/null | head -n 1 || true) sha256:$(sha256sum "$FERRYD_RUN" | cut -c1-12) built $(date -u -r "$FERRYD" +%Y-%m-%dT%H:%M:%SZ)"
log "ferryd: $FERRYD_INFO (running a copy of $FERRYD)"

loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
busy_start=$(cpu_busy_pct)
(( busy_start > 15 )) && warn "the CPUs are already ${busy_start}% busy before the benchmark: other work on this machine will skew the figures"
log "temp dir $TMP; quick=$QUICK; l4 loads ${DURATION}s, latency ${LAT_DURATION}s x $LAT_ROUNDS, bandwidth ${BW_DURATION}s x $BW_ROUNDS"

# ---------------------------------------------------------------- upstreams
nginx_user=""
(( EUID == 0 )) && nginx_user="user root;"
sed -e "s|@DIR@|$TMP/nginx|g" -e "s|@PORT@|$UP_HTTP_PORT|g" -e "s|@WORKERS@|1|g" -e "s|@USER@|$nginx_user|g" \
    "$SCRIPT_DIR/nginx.conf.in" >"$TMP/nginx/nginx.conf"
nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' >"$TMP/nginx/stdout.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_listen "$NGINX_PID" "$UP_HTTP_PORT" nginx "$TMP/nginx/error.log" || die "nginx upstream did not start"

iperf3 -s -B 127.0.0.1 -p "$UP_IPERF_PORT" --rcv-timeout 10000 >"$TMP/iperf3-server.log" 2>&1 &
IPERF_PID=$!
PIDS+=("$IPERF_PID")
wait_listen "$IPERF_PID" "$UP_IPERF_PORT" "iperf3 server" "$TMP/iperf3-server.log" || die "iperf3 server did not start"

python3 -B "$SCRIPT_DIR/chaos_rtt.py" echo --port "$UP_ECHO_PORT" >"$TMP/echo.log" 2>&1 &
ECHO_PID=$!
PIDS+=("$ECHO_PID")
wait_listen "$ECHO_PID" "$UP_ECHO_PORT" "echo server" "$TMP/echo.log" || die "echo server did not start"
log "upstreams up: nginx (PID $NGINX_PID) :$UP_HTTP_PORT, iperf3 -s (PID $IPERF_PID) :$UP_IPERF_PORT, echo (PID $ECHO_PID) :$UP_ECHO_PORT"

# ---------------------------------------------------------------- ferryd
cat >"$TMP/ferryd.toml" <<TOML
# ferryd for ops/bench/chaos.sh: a single-member cluster (chaos needs cluster mode).
[node]
name = "chaos-bench"
data_dir = "$TMP/data"
drain_timeout_ms = 500

[admin]
addr = "$ADMIN"

[cluster]
node_id = 1
addr = "127.0.0.1:$CLUSTER_PORT"
cluster_id = "chaos-bench"
initial_members = ["1@127.0.0.1:$CLUSTER_PORT"]
TOML

api() {  # api METHOD PATH [BODY] -> prints the body; fails on a non-2xx answer
    local method=$1 path=$2 body=${3:-} out code
    out=$(curl -sS --max-time 10 -X "$method" -H 'Content-Type: application/json' \
        ${body:+--data "$body"} -w '\n%{http_code}' "http://$ADMIN$path" 2>&1) || { warn "$method $path: $out"; return 1; }
    code=${out##*$'\n'}
    out=${out%$'\n'*}
    if [[ "$code" != 2* ]]; then
        warn "$method $path answered $code: $out"
        return 1
    fi
    printf '%s\n' "$out"
}

start_ferry() {  # start_ferry LOGFILE: start ferryd, wait until ready
    RUST_LOG=${RUST_LOG:-warn} "$FERRYD_RUN" --config "$TMP/ferryd.toml" --log-format text >>"$1" 2>&1 &
    FERRY_PID=$!
    PIDS+=("$FERRY_PID")
    local deadline=$((SECONDS + READY_TIMEOUT))
    until curl -sf --max-time 1 -o /dev/null "http://$ADMIN/health/ready"; do
        if ! kill -0 "$FERRY_PID" 2>/dev/null; then
            warn "ferryd exited during startup; last log lines:"; tail -n 20 "$1" >&2
            return 1
        fi
        if (( SECONDS >= deadline )); then
            warn "ferryd not ready (GET /health/ready on $ADMIN) within ${READY_TIMEOUT}s; last log lines:"; tail -n 20 "$1" >&2
            return 1
        fi
        sleep 0.2
    done
}

stop_ferry() {
    [[ -n "$FERRY_PID" ]] || return 0
    stop_pid "$FERRY_PID"
    forget_pid "$FERRY_PID"
    FERRY_PID=""
}

route_chaos() {  # route_chaos NAME -> the route's policies in effect, comma-separated
    api GET "/v1/routes/$1?consistency=stale" | python3 -c 'import json,sys; print(",".join(json.load(sys.stdin).get("chaos") or []))'
}

wait_chaos() {   # wait_chaos ROUTE EXPECTED: until GET /v1/routes/ROUTE lists exactly EXPECTED (comma-separated)
    local route=$1 want=$2 got="" deadline=$((SECONDS + 10))
    while :; do
        got=$(route_chaos "$route" 2>/dev/null || echo "?")
        [[ "$got" == "$want" ]] && return 0
        (( SECONDS >= deadline )) && die "route $route lists policies [$got], expected [$want], 10 s after the write"
        sleep 0.1
    done
}

policy_put() {   # policy_put NAME ROUTE TOXIC_KIND_JSON [DIRECTION]
    local name=$1 route=$2 kind=$3 dir=${4:-downstream}
    api PUT "/v1/chaos/$name" "{\"name\":\"$name\",\"toxics\":[{\"direction\":\"$dir\",\"kind\":$kind}],\"scope\":{\"routes\":[\"$route\"]},\"toxicity\":1.0}" >/dev/null \
        || die "PUT /v1/chaos/$name failed"
    wait_chaos "$route" "$name"
    api GET "/v1/chaos/$name" >"$RAW/policy-$name.json" 2>/dev/null || true
}

policy_delete() {  # policy_delete NAME ROUTE
    api DELETE "/v1/chaos/$1" >/dev/null || die "DELETE /v1/chaos/$1 failed"
    wait_chaos "$2" ""
}

policies_none() {  # no policy at all in the cluster
    local n
    n=$(api GET "/v1/chaos?consistency=stale" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
    [[ "$n" == 0 ]] || die "expected no chaos policy, GET /v1/chaos lists $n"
}

FERRY_LOG=$RAW/ferryd.log
start_ferry "$FERRY_LOG" || die "ferryd ($FERRYD) did not start as a single-member cluster (log: $FERRY_LOG)"
log "ferryd (PID $FERRY_PID) ready on $ADMIN"
for r in "${ROUTES[@]}"; do
    api PUT "/v1/routes/$r" "{\"name\":\"$r\",\"listen\":\"127.0.0.1:${ROUTE_PORT[$r]}\",\"balance\":\"round_robin\",\"backends\":[{\"id\":\"u1\",\"addr\":\"127.0.0.1:${ROUTE_UP[$r]}\"}]}" >/dev/null \
        || die "PUT /v1/routes/$r failed"
done
for r in "${ROUTES[@]}"; do
    wait_listen "$FERRY_PID" "${ROUTE_PORT[$r]}" "ferryd route $r" "$FERRY_LOG" || die "ferryd does not listen for route $r"
done
route_chaos fast >/dev/null || die "GET /v1/routes/fast failed"
api GET /v1/routes/fast | grep -q '"chaos"' || die "GET /v1/routes/fast has no chaos field: this ferryd ($FERRYD_INFO) has no chaos on traffic"
body=$(curl -sS --max-time 3 "http://127.0.0.1:${ROUTE_PORT[fast-http]}/") || die "no answer through route fast-http"
[[ "$body" == ok ]] || die "route fast-http answered '$body', expected 'ok'"
log "routes up: $(for r in "${ROUTES[@]}"; do printf '%s :%s  ' "$r" "${ROUTE_PORT[$r]}"; done)"

# ---------------------------------------------------------------- loads
# run_load DIR NAME LIMIT CMD...: runs CMD bounded by LIMIT s; records ferryd's
# CPU ticks and the CPU other processes used around it (as l4.sh).
run_load() {
    local dir=$1 name=$2 limit=$3 t0="" t1="" rc=0 sys0 sys1 our0 our1 w0 w1
    shift 3
    mkdir -p "$dir"
    w0=$EPOCHREALTIME
    sys0=$(sys_busy_ticks)
    our0=$(our_ticks)
    t0=$(proc_ticks "$FERRY_PID")
    timeout --foreground -k 5 "$limit" "$@" >"$dir/$name.out" 2>"$dir/$name.err" || rc=$?
    t1=$(proc_ticks "$FERRY_PID" 2>/dev/null || true)
    our1=$(our_ticks)
    sys1=$(sys_busy_ticks)
    w1=$EPOCHREALTIME
    echo "$rc" >"$dir/$name.rc"
    [[ -n "$t0" && -n "$t1" ]] && echo $(( t1 - t0 )) >"$dir/$name.ticks"
    echo "$(( (sys1 - sys0) - (our1 - our0) )) $(( sys1 - sys0 )) ${w0/[.,]/} ${w1/[.,]/}" >"$dir/$name.foreign"
    if (( rc == 124 || rc == 137 )); then
        warn "$dir/$name: timed out after ${limit}s"
    elif (( rc != 0 )); then
        warn "$dir/$name: exit code $rc: $(tail -c 300 "$dir/$name.err" | tr '\n' ' ')"
    fi
    kill -0 "$FERRY_PID" 2>/dev/null || die "ferryd (PID $FERRY_PID) died during $dir/$name (log: $FERRY_LOG)"
    sleep "$SETTLE"
}

summarize() {  # summarize FILE KIND: one-line progress output
    case "$2" in
        iperf*|bw*|shaped*) python3 -c 'import json,sys
try:
    j=json.load(open(sys.argv[1])); r=j["end"]["sum_received"]; print("%.4f Gbit/s (%.1f kB/s)" % (r["bits_per_second"]/1e9, r["bytes"]/r["seconds"]/1e3))
except Exception as e: print("unparseable:", e)' "$1" ;;
        wrk*) awk '/Requests\/sec/ { r=$2 } /^ +99%/ { p=$2 } /Socket errors/ { e=$0 }
                   END { printf "%s req/s, p99 %s%s\n", r, p, (e ? ";" e : "") }' "$1" ;;
        rtt) python3 -c 'import json,sys
try:
    j=json.load(open(sys.argv[1])); print("shaped p50 %.3f p99 %.3f ms, plain p50 %.3f p99 %.3f ms; added p50 %.3f p99 %.3f ms; lost %d+%d" % (j["shaped"]["p50_ms"], j["shaped"]["p99_ms"], j["plain"]["p50_ms"], j["plain"]["p99_ms"], j["added_p50_ms"], j["added_p99_ms"], j["shaped"]["lost"], j["plain"]["lost"]))
except Exception as e: print("unparseable:", e)' "$1" ;;
    esac
}

# measure DIR LOAD: one l4 load through route fast / fast-http, again (up to
# NOISY_RETRIES times) while other processes used >= 10% of a core; keeps the
# quietest attempt.
measure() {
    local dir=$1 load=$2 attempt pct best=0 best_pct="" f ip=${ROUTE_PORT[fast]} hp=${ROUTE_PORT[fast-http]}
    local lim=$(( DURATION + 30 ))
    for ((attempt = 1; ; attempt++)); do
        case "$load" in
            iperf1) run_load "$dir" "$load" "$lim" iperf3 -c 127.0.0.1 -p "$ip" -t "$DURATION" -P 1 -J --connect-timeout 3000 ;;
            iperf4) run_load "$dir" "$load" "$lim" iperf3 -c 127.0.0.1 -p "$ip" -t "$DURATION" -P 4 -J --connect-timeout 3000 ;;
            wrk_ka) run_load "$dir" "$load" "$lim" wrk --latency -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${DURATION}s" "http://127.0.0.1:$hp/" ;;
            wrk_close) run_load "$dir" "$load" "$lim" wrk --latency -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${DURATION}s" -H 'Connection: close' "http://127.0.0.1:$hp/" ;;
        esac
        pct=$(foreign_pct "$dir/$load.foreign")
        mkdir -p "$dir/$load.try$attempt"
        for f in out err rc ticks foreign; do
            if [[ -f "$dir/$load.$f" ]]; then cp "$dir/$load.$f" "$dir/$load.try$attempt/"; fi
        done
        if [[ -z "$best_pct" ]] || (( pct < best_pct )); then best=$attempt best_pct=$pct; fi
        log "  $load: $(summarize "$dir/$load.out" "$load")$( (( pct >= 10 )) && echo " [other processes used ${pct}% of a core]")"
        (( pct >= 10 && attempt <= NOISY_RETRIES )) || break
        log "  $load: measuring again (retry $attempt/$NOISY_RETRIES): another job was using the CPU"
        wait_idle
    done
    echo "$attempt" >"$dir/$load.attempts"
    if (( best != attempt )); then
        for f in out err rc ticks foreign; do
            rm -f "$dir/$load.$f"
            if [[ -f "$dir/$load.try$best/$load.$f" ]]; then cp "$dir/$load.try$best/$load.$f" "$dir/$load.$f"; fi
        done
    fi
    echo "$best" >"$dir/$load.kept"
}

# ---------------------------------------------------------------- 5. memory (first: fresh processes)
# ferryd is restarted (same data dir: routes and policies kept) before each
# run, so each run's RSS is a fresh process's and not memory the allocator
# kept from the previous run.
phase_memory() {
    local r i state order dir rc variant
    mkdir -p "$RAW/mem"
    log "=== memory: $IDLE_CONNS idle connections through route idle, latency 20 ms policy vs none; $MEM_ROUNDS ABBA rounds"
    i=0
    for ((r = 1; r <= MEM_ROUNDS; r++)); do
        if (( r % 2 )); then order=(none policy); else order=(policy none); fi
        for state in "${order[@]}"; do
            i=$((i + 1))
            if [[ "$state" == policy ]]; then
                policy_put idle-lat idle '{"latency":{"latency_ms":20}}'
            else
                [[ -n "$(route_chaos idle)" ]] && policy_delete idle-lat idle
            fi
            wait_idle
            for variant in "" -silent; do
                stop_ferry
                start_ferry "$FERRY_LOG" || die "ferryd did not restart for memory run $i"
                wait_listen "$FERRY_PID" "${ROUTE_PORT[idle]}" "ferryd route idle" "$FERRY_LOG" || die "route idle not listening after restart"
                wait_chaos idle "$([[ "$state" == policy ]] && echo idle-lat)"
                sleep "$SETTLE"
                dir=$RAW/mem/run$i-$state$variant
                mkdir -p "$dir"
                proc_status_kib "$FERRY_PID" VmRSS >"$dir/rss_start_kib" || true
                rc=0
                timeout --foreground -k 5 $(( IDLE_HOLD + 60 )) python3 -B "$SCRIPT_DIR/idle_conns.py" --port "${ROUTE_PORT[idle]}" \
                    --count "$IDLE_CONNS" --hold "$IDLE_HOLD" --pid "$FERRY_PID" --upstream-port "$UP_ECHO_PORT" \
                    $([[ -z "$variant" ]] && echo --hello) >"$dir/idle.out" 2>"$dir/idle.err" || rc=$?
                echo "$rc" >"$dir/idle.rc"
                (( rc == 0 )) || warn "memory run $i ($state$variant): idle_conns exit $rc: $(tail -c 400 "$dir/idle.out" "$dir/idle.err")"
                log "  run $i ($state${variant:-, one line echoed}): $(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%d/%d open, %s echoed, %d alive; RSS %s -> %s KiB (+%s)" % (j["opened"], j["requested"], j.get("hello_answered"), j["alive_after_hold"], j["rss_before_kib"], j["rss_kib"], j["rss_kib"] - j["rss_before_kib"]))' "$dir/idle.out" 2>/dev/null || echo unparseable)"
                kill -0 "$FERRY_PID" 2>/dev/null || die "ferryd died during memory run $i"
            done
        done
    done
    [[ -n "$(route_chaos idle)" ]] && policy_delete idle-lat idle
    return 0
}

# ---------------------------------------------------------------- 1. off costs nothing
phase_off() {
    local r state order dir load
    log "=== off costs nothing: l4 loads through route fast, no policy vs a latency policy on route other; $OFF_ROUNDS rounds, ${DURATION}s per load"
    policies_none
    timeout --foreground -k 5 30 wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d1s "http://127.0.0.1:${ROUTE_PORT[fast-http]}/" >/dev/null 2>&1 \
        || warn "warm-up wrk failed"
    for ((r = 1; r <= OFF_ROUNDS; r++)); do
        if (( r % 2 )); then order=(none policy); else order=(policy none); fi
        for state in "${order[@]}"; do
            if [[ "$state" == policy ]]; then
                policy_put bystander other '{"latency":{"latency_ms":20}}'
            else
                [[ -n "$(route_chaos other)" ]] && policy_delete bystander other
                policies_none
            fi
            [[ -z "$(route_chaos fast)" && -z "$(route_chaos fast-http)" ]] || die "route fast has a policy in effect"
            wait_idle
            dir=$RAW/off/c$r/$state
            log "round $r/$OFF_ROUNDS, $state"
            for load in iperf1 iperf4 wrk_ka wrk_close; do
                measure "$dir" "$load"
            done
            echo ok >"$dir/status"
        done
    done
    [[ -n "$(route_chaos other)" ]] && policy_delete bystander other
    return 0
}

# ---------------------------------------------------------------- 2. latency accuracy
phase_latency() {
    local r dir
    log "=== latency accuracy: 20 ms downstream on route lat, none on route plain; $LAT_RATE req/s in total, $LAT_ROUNDS x ${LAT_DURATION}s"
    policy_put lat20 lat '{"latency":{"latency_ms":20}}' downstream
    [[ -z "$(route_chaos plain)" ]] || die "route plain has a policy in effect"
    for ((r = 1; r <= LAT_ROUNDS; r++)); do
        wait_idle
        dir=$RAW/lat
        run_load "$dir" "r$r" $(( LAT_DURATION + 30 )) python3 -B "$SCRIPT_DIR/chaos_rtt.py" rtt \
            --shaped "${ROUTE_PORT[lat]}" --plain "${ROUTE_PORT[plain]}" --rate "$LAT_RATE" --conns "$LAT_CONNS" \
            --duration "$LAT_DURATION" --warmup 1
        log "  round $r: $(summarize "$dir/r$r.out" rtt)$(p=$(foreign_pct "$dir/r$r.foreign"); (( p >= 10 )) && echo " [other processes used ${p}% of a core]")"
    done
    policy_delete lat20 lat
}

# ---------------------------------------------------------------- 3. bandwidth accuracy
phase_bandwidth() {
    local r rate prev="" dir
    log "=== bandwidth accuracy: ${BW_RATES[*]} kB/s downstream on route bw, iperf3 -R for ${BW_DURATION}s; $BW_ROUNDS rounds"
    for ((r = 1; r <= BW_ROUNDS; r++)); do
        for rate in "${BW_RATES[@]}"; do
            [[ -n "$prev" ]] && policy_delete "$prev" bw
            policy_put "bw$rate" bw "{\"bandwidth\":{\"rate_kbps\":$rate}}" downstream
            prev=bw$rate
            wait_idle
            dir=$RAW/bw/r$r
            run_load "$dir" "bw$rate" $(( BW_DURATION + 30 )) iperf3 -c 127.0.0.1 -p "${ROUTE_PORT[bw]}" -R -t "$BW_DURATION" -P 1 -J --connect-timeout 3000
            log "  round $r, $rate kB/s: $(summarize "$dir/bw$rate.out" bw)$(p=$(foreign_pct "$dir/bw$rate.foreign"); (( p >= 10 )) && echo " [other processes used ${p}% of a core]")"
        done
    done
    [[ -n "$prev" ]] && policy_delete "$prev" bw
    return 0
}

# ---------------------------------------------------------------- 4. shaped throughput and cost
phase_shaped() {
    local r route order dir
    log "=== shaped throughput: iperf3 -R 1 stream, route lat1 (latency 1 ms downstream) vs route fast; $SHAPE_ROUNDS rounds, ${DURATION}s"
    policy_put lat1ms lat1 '{"latency":{"latency_ms":1}}' downstream
    [[ -z "$(route_chaos fast)" ]] || die "route fast has a policy in effect"
    for ((r = 1; r <= SHAPE_ROUNDS; r++)); do
        if (( r % 2 )); then order=(fast lat1); else order=(lat1 fast); fi
        wait_idle
        for route in "${order[@]}"; do
            dir=$RAW/shaped/c$r
            run_load "$dir" "$route" $(( DURATION + 30 )) iperf3 -c 127.0.0.1 -p "${ROUTE_PORT[$route]}" -R -t "$DURATION" -P 1 -J --connect-timeout 3000
            log "  round $r, $route: $(summarize "$dir/$route.out" shaped)$(p=$(foreign_pct "$dir/$route.foreign"); (( p >= 10 )) && echo " [other processes used ${p}% of a core]")"
        done
    done
    policy_delete lat1ms lat1
}

for ph in $PHASES; do
    case "$ph" in
        mem) phase_memory ;;
        off) phase_off ;;
        lat) phase_latency ;;
        bw) phase_bandwidth ;;
        shaped) phase_shaped ;;
    esac
done

proc_status_kib "$FERRY_PID" VmHWM >"$RAW/ferry_hwm_kib" 2>/dev/null || true
api GET /metrics >"$RAW/metrics.txt" 2>/dev/null || true
stop_ferry

# ---------------------------------------------------------------- report
{
    echo "timestamp=$TS"
    echo "hostname=$(hostname)"
    echo "kernel=$(uname -r)"
    echo "nproc=$(nproc)"
    echo "clk_tck=$CLK_TCK"
    echo "quick=$QUICK"
    echo "duration=$DURATION"
    echo "off_rounds=$OFF_ROUNDS"
    echo "lat_rounds=$LAT_ROUNDS"
    echo "lat_duration=$LAT_DURATION"
    echo "lat_rate=$LAT_RATE"
    echo "lat_conns=$LAT_CONNS"
    echo "bw_rounds=$BW_ROUNDS"
    echo "bw_duration=$BW_DURATION"
    echo "shape_rounds=$SHAPE_ROUNDS"
    echo "mem_rounds=$MEM_ROUNDS"
    echo "idle_conns=$IDLE_CONNS"
    echo "idle_hold=$IDLE_HOLD"
    echo "wrk_threads=$WRK_THREADS"
    echo "wrk_conns=$WRK_CONNS"
    echo "wait_idle=$WAIT_IDLE"
    echo "phases=$PHASES"
    echo "loadavg_start=$loadavg"
    echo "cpu_busy_pct_start=$busy_start"
    echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "ferryd=$FERRYD"
    echo "ferryd_info=$FERRYD_INFO"
    echo "versions=$(iperf3 --version | head -n 1 | cut -d' ' -f1-2); $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2); $(nginx -v 2>&1 | cut -d' ' -f3); $(python3 --version)"
} >"$RAW/meta.txt"

JSON_OUT=$OUT/chaos-$TS.json
TXT_OUT=$OUT/chaos-$TS.txt
python3 -B "$SCRIPT_DIR/chaos_report.py" "$RAW" "$JSON_OUT" "$TXT_OUT" || die "report generation failed (raw files in $TMP)"
log "results: $JSON_OUT and $TXT_OUT"
