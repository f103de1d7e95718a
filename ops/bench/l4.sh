#!/usr/bin/env bash
# ops/bench/l4.sh — L4 benchmark: ferryd side by side with HAProxy (mode tcp).
#
# Run ./ops/bench/l4.sh --help for usage. Everything runs on 127.0.0.1, as the
# current user, from a mktemp -d directory; only processes started here are
# ever stopped.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: ops/bench/l4.sh [--quick] [--skip-ferry] [--ferry-splice] [--build] [--pin] [--keep-tmp] [--help]

Benchmarks four setups forwarding to the same loopback upstreams
(iperf3 server on 127.0.0.1:5201, nginx on 127.0.0.1:8080), one after another:

  DIRECT          client straight to the upstream
  ferry           target/release/ferryd (config: ops/bench/ferryd.toml)
  haproxy         HAProxy mode tcp, one thread per CPU it may use (nbthread)
  haproxy-splice  same + option splice-request + option splice-response

Figures per setup: iperf3 throughput (1 and 4 streams), wrk keep-alive req/s
and p99, wrk 'Connection: close' conn/s and p99, proxy CPU seconds per GB and
per 1000 connections, proxy RSS (after start, with N idle connections, peak).
Prints a table and writes ${OUT}/l4-<timestamp>.json and .txt.

Options (each has an environment-variable equivalent):
  --quick        QUICK=1       3 s per load instead of DURATION
  --skip-ferry   SKIP_FERRY=1  leave ferry out (DIRECT + HAProxy only)
  --ferry-splice FERRY_SPLICE=1  add a fifth setup, ferry-splice: ferryd with
                               [node] copy = "splice" (same ports, run after ferry)
  --build        BUILD=1       run 'cargo build --release -j2 -p ferry-node' first
  --pin          PIN=1         proxies on CPU 0, clients and upstreams on the
                               other CPUs (taskset), so that a proxy never waits
                               behind the load generator for a CPU; each proxy
                               then runs one thread (ferryd sizes its workers to
                               its CPUs, HAProxy gets nbthread 1)
  --keep-tmp     KEEP_TMP=1    keep the temp dir (configs, logs, raw outputs)
  -h, --help                   this text

Environment:
  DURATION=10         seconds per load (iperf3 -t, wrk -d)
  IPERF_DURATION, WRK_DURATION   override DURATION per tool
  QUICK=1             shorthand for DURATION=3 (smoke run)
  WRK_THREADS=2 WRK_CONNS=50     wrk -t / -c
  WARMUP=1            seconds of unmeasured wrk keep-alive load per setup (0 = none)
  SETTLE=1            seconds of pause between loads
  REPEAT=1            repetitions of the whole set (interleaved); the table shows
                      the median of each figure over the repetitions
  ROUNDS=4            rounds of the four loads (iperf3 1 and 4 streams, wrk
                      keep-alive, wrk Connection: close), run after the
                      repetitions with every proxy up at once and loaded one
                      at a time, in an order that changes each round so that
                      every setup follows every other equally often (with 4
                      setups: once per 4 rounds); their rows are medians over
                      the rounds, and the report compares ferry with HAProxy
                      round by round. The repetitions then measure only the
                      idle connections (0 = measure every load in each
                      repetition instead). CHURN_ROUNDS is its older name
  CLOSE_DURATION      seconds per Connection: close load (default WRK_DURATION)
  WAIT_IDLE=0         before each setup, wait up to this many seconds for the
                      machine to be idle (< 15% CPU busy), e.g. while someone
                      else's build is running; CPU used by other processes
                      during each load is reported either way (the kernel's
                      ksoftirqd threads count as ours: they carry the load's
                      loopback traffic)
  NOISY_RETRIES=2     measure a load again (up to this many times) when other
                      processes used >= 10% of a core during it; the attempt
                      with the least such CPU is kept
  IDLE_CONNS=1000     idle connections held through the proxy for the RSS figure
  IDLE_HOLD=2         seconds to hold them
  NGINX_WORKERS=1     nginx worker_processes for the HTTP upstream
  READY_TIMEOUT=20    seconds to wait for a server to become ready
  FERRYD=target/release/ferryd   ferryd binary (relative to the repo root)
  OUT=target/bench    where results go (relative to the repo root)
  NO_INSTALL=1        fail instead of apt-get installing missing tools

Ports used (all must be free): upstreams 5201 8080; ferry 15201 18080 17948
(admin); haproxy 25201 28080; haproxy-splice 26201 29080.
Missing tools (haproxy iperf3 wrk nginx curl) are installed with apt-get
(root only); no system service is started or touched.
EOF
}

die() { printf 'l4.sh: error: %s\n' "$*" >&2; exit 1; }
log() { printf '[l4 %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[l4 %s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

for arg in "$@"; do
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        --quick) QUICK=1 ;;
        --skip-ferry) SKIP_FERRY=1 ;;
        --ferry-splice) FERRY_SPLICE=1 ;;
        --build) BUILD=1 ;;
        --pin) PIN=1 ;;
        --keep-tmp) KEEP_TMP=1 ;;
        *) usage >&2; die "unknown argument: $arg" ;;
    esac
done

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/../.." && pwd)
cd "$REPO_ROOT"

QUICK=${QUICK:-0}
if [[ "$QUICK" == 1 ]]; then
    DURATION=${DURATION:-3}
fi
DURATION=${DURATION:-10}
IPERF_DURATION=${IPERF_DURATION:-$DURATION}
WRK_DURATION=${WRK_DURATION:-$DURATION}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNS=${WRK_CONNS:-50}
WARMUP=${WARMUP:-1}
SETTLE=${SETTLE:-1}
REPEAT=${REPEAT:-1}
ROUNDS=${ROUNDS:-${CHURN_ROUNDS:-4}}
CLOSE_DURATION=${CLOSE_DURATION:-$WRK_DURATION}
WAIT_IDLE=${WAIT_IDLE:-0}
NOISY_RETRIES=${NOISY_RETRIES:-2}
IDLE_CONNS=${IDLE_CONNS:-1000}
IDLE_HOLD=${IDLE_HOLD:-2}
NGINX_WORKERS=${NGINX_WORKERS:-1}
READY_TIMEOUT=${READY_TIMEOUT:-20}
FERRYD=${FERRYD:-target/release/ferryd}
OUT=${OUT:-target/bench}
SKIP_FERRY=${SKIP_FERRY:-0}
FERRY_SPLICE=${FERRY_SPLICE:-0}
[[ "$SKIP_FERRY" == 1 ]] && FERRY_SPLICE=0
BUILD=${BUILD:-0}
PIN=${PIN:-0}
KEEP_TMP=${KEEP_TMP:-0}
NO_INSTALL=${NO_INSTALL:-0}

for v in DURATION IPERF_DURATION WRK_DURATION WRK_THREADS WRK_CONNS WARMUP SETTLE REPEAT WAIT_IDLE NOISY_RETRIES \
         ROUNDS CLOSE_DURATION IDLE_CONNS IDLE_HOLD NGINX_WORKERS READY_TIMEOUT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
(( IPERF_DURATION > 0 && WRK_DURATION > 0 && CLOSE_DURATION > 0 )) || die "durations must be > 0"
(( REPEAT >= 1 )) || die "REPEAT must be >= 1"
[[ "$PIN" == 0 || "$PIN" == 1 ]] || die "PIN must be 0 or 1 (got '$PIN')"

UP_IPERF_PORT=5201
UP_HTTP_PORT=8080
FERRY_IPERF_PORT=15201
FERRY_HTTP_PORT=18080
FERRY_ADMIN_PORT=17948
HAP_IPERF_PORT=25201
HAP_HTTP_PORT=28080
HAPS_IPERF_PORT=26201
HAPS_HTTP_PORT=29080

# ---------------------------------------------------------------- processes
PIDS=()          # every PID this script started (and only those)
IDLE_PROXIES=()  # proxies up but not under load (churn rounds): ours, not background
TMP=""

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
# Listening on 127.0.0.1:PORT or a wildcard (what our binds would collide
# with); other loopback addresses (127.0.0.2, ...) do not conflict.
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

sys_busy_ticks() {  # user+nice+system+irq+softirq over all CPUs (steal left out):
    # a task's utime+stime include the softirq work it ran inline
    local k u n sy irq sirq _
    while read -r k u n sy _ _ irq sirq _; do
        [[ "$k" == cpu ]] && { echo $(( u + n + sy + irq + sirq )); return 0; }
    done </proc/stat
    return 1
}

# The kernel's per-CPU softirq threads (ksoftirqd/N). Loopback traffic's
# receive work runs inline in the sending task until a CPU has more than
# its softirq budget, then in these threads; under a splicing iperf3 load
# that is 5-12% of a core here. It is our load's work, not another job's,
# so the background-CPU check (and its retries) leaves it out.
softirq_pids() {
    local d c
    for d in /proc/[0-9]*; do
        c=$(<"$d/comm") 2>/dev/null || continue
        [[ "$c" == ksoftirqd/* ]] && echo "${d#/proc/}"
    done
    return 0
}
SOFTIRQ_PIDS=()

our_ticks() {  # CPU ticks of everything this script runs (itself, its reaped
    # children such as the load generators, the upstreams, the proxy) and
    # of the softirq threads that carry its loopback traffic
    local total=0 p t
    for p in $$ "$NGINX_PID" $(cat "/proc/$NGINX_PID/task/$NGINX_PID/children" 2>/dev/null) "$IPERF_PID" ${PROXY_PID:+"$PROXY_PID"} \
             ${IDLE_PROXIES[@]+"${IDLE_PROXIES[@]}"} ${SOFTIRQ_PIDS[@]+"${SOFTIRQ_PIDS[@]}"}; do
        t=$(proc_ticks_all "$p" 2>/dev/null) && total=$(( total + t ))
    done
    echo "$total"
}

rss_sampler() {  # rss_sampler PID FILE: keep the max VmRSS (kB) of PID in FILE, 5 Hz
    local pid=$1 out=$2 max=0 k v _
    while kill -0 "$pid" 2>/dev/null; do
        while read -r k v _; do
            if [[ "$k" == VmRSS: ]]; then
                (( v > max )) && { max=$v; echo "$max" >"$out"; }
                break
            fi
        done <"/proc/$pid/status" 2>/dev/null || break
        sleep 0.2
    done
}

proc_status_kib() {  # proc_status_kib PID FIELD -> value in kB
    awk -v k="$2:" '$1 == k { print $2; found = 1 } END { exit !found }' "/proc/$1/status"
}

http_check() {   # one request through PORT must answer "ok"
    local body
    body=$(curl -sS --max-time 3 "http://127.0.0.1:$1/" 2>&1) || { warn "GET :$1 failed: $body"; return 1; }
    [[ "$body" == ok ]] || { warn "GET :$1 answered '$body', expected 'ok'"; return 1; }
}

# ---------------------------------------------------------------- tools
ensure_tools() {
    local missing=() pkgs=() t
    declare -A pkg_of=([haproxy]=haproxy [iperf3]=iperf3 [wrk]=wrk [nginx]=nginx [curl]=curl \
                       [python3]=python3 [ss]=iproute2 [shellcheck]=shellcheck)
    for t in haproxy iperf3 wrk nginx curl python3 ss; do
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
for t in haproxy iperf3 wrk nginx curl python3 ss; do
    command -v "$t" >/dev/null || die "$t still not found after install"
done

# File descriptors: IDLE_CONNS sockets on each side of the proxy, plus wrk.
want_nofile=65536
hard_nofile=$(ulimit -Hn)
[[ "$hard_nofile" == unlimited ]] && hard_nofile=$want_nofile
if (( hard_nofile < want_nofile )); then ulimit -Hn "$want_nofile" 2>/dev/null && hard_nofile=$want_nofile; fi
ulimit -n "$hard_nofile" 2>/dev/null || true
NOFILE=$(ulimit -n)
[[ "$NOFILE" == unlimited ]] && NOFILE=$want_nofile
(( NOFILE >= 2 * IDLE_CONNS + 200 )) || die "ulimit -n is $NOFILE; need >= $((2 * IDLE_CONNS + 200)) for IDLE_CONNS=$IDLE_CONNS"
# HAProxy needs 2 fds per connection plus 2 per splice pipe (maxpipes =
# maxconn/4); the hard limit may not be raisable (no CAP_SYS_RESOURCE).
HAP_MAXCONN=$(( (NOFILE - 300) * 2 / 5 ))
(( HAP_MAXCONN > 20000 )) && HAP_MAXCONN=20000
HAP_MAXPIPES=$(( HAP_MAXCONN / 4 ))

# CPU pinning (PIN=1): the proxy under test on CPU 0, everything else
# (clients, upstreams) on the rest. PROXY_ON and LOAD_ON prefix commands;
# unpinned they are env(1), which execs the command as it is (so $! stays
# the command's PID either way).
PROXY_ON=(env) LOAD_ON=(env) PIN_DESC="none"
HAP_THREADS=$(nproc)
if [[ "$PIN" == 1 ]]; then
    last_cpu=$(( $(nproc) - 1 ))
    (( last_cpu >= 1 )) || die "PIN=1 needs at least 2 CPUs, this machine has $(nproc)"
    command -v taskset >/dev/null || die "PIN=1 needs taskset (util-linux)"
    PROXY_ON=(taskset -c 0) LOAD_ON=(taskset -c "1-$last_cpu")
    PIN_DESC="proxies on CPU 0, clients and upstreams on CPUs 1-$last_cpu"
    HAP_THREADS=1
fi

# ---------------------------------------------------------------- ferryd
if [[ "$SKIP_FERRY" != 1 ]]; then
    if [[ "$BUILD" == 1 || ! -x "$FERRYD" ]]; then
        if [[ "$FERRYD" != target/release/ferryd && ! -x "$FERRYD" ]]; then
            die "FERRYD=$FERRYD is not an executable file"
        fi
        command -v cargo >/dev/null || die "ferryd missing at $FERRYD and no cargo to build it (or set SKIP_FERRY=1)"
        log "building ferryd: cargo build --release -j2 -p ferry-node"
        cargo build --release -j2 -p ferry-node >&2 \
            || die "cargo build --release -j2 -p ferry-node failed; ferry is the point of this benchmark (SKIP_FERRY=1 to run DIRECT/HAProxy only)"
        [[ -x "$FERRYD" ]] || die "build succeeded but $FERRYD is missing"
    fi
    FERRYD=$(cd -- "$(dirname -- "$FERRYD")" && pwd)/$(basename -- "$FERRYD")
fi

# ---------------------------------------------------------------- ports, temp dir
ports=("$UP_IPERF_PORT" "$UP_HTTP_PORT" "$HAP_IPERF_PORT" "$HAP_HTTP_PORT" "$HAPS_IPERF_PORT" "$HAPS_HTTP_PORT")
[[ "$SKIP_FERRY" == 1 ]] || ports+=("$FERRY_IPERF_PORT" "$FERRY_HTTP_PORT" "$FERRY_ADMIN_PORT")
for p in "${ports[@]}"; do
    if is_listening "$p"; then
        die "port $p is already in use on this machine: $(ss -Hltnp "sport = :$p" | head -n 1)"
    fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ferry-l4.XXXXXX")
RAW=$TMP/raw
mkdir -p "$RAW" "$TMP/nginx"
mkdir -p "$OUT" || die "cannot create OUT=$OUT"
TS=$(date -u +%Y%m%dT%H%M%SZ)
CLK_TCK=$(getconf CLK_TCK)
mapfile -t SOFTIRQ_PIDS < <(softirq_pids)

# Run a private copy of ferryd: target/release/ferryd may be rebuilt by
# someone else while the benchmark runs, and the figures must belong to the
# binary that is named in the report.
FERRYD_RUN=""
FERRYD_INFO="skipped"
if [[ "$SKIP_FERRY" != 1 ]]; then
    FERRYD_RUN=$TMP/ferryd
    cp -- "$FERRYD" "$FERRYD_RUN" || die "cannot copy $FERRYD to $FERRYD_RUN"
    FERRYD_INFO="$(timeout 5 "$FERRYD_RUN" --version 2>/dev/null | head -n 1 || true) sha256:$(sha256sum "$FERRYD_RUN" | cut -c1-12) built $(date -u -r "$FERRYD" +%Y-%m-%dT%H:%M:%SZ)"
    log "ferryd: $FERRYD_INFO (running a copy of $FERRYD)"
fi

loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
cpu_busy_pct() {  # % of all CPUs busy over the next second, from /proc/stat
    local a b
    a=$(awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $5+$6 }' /proc/stat)
    sleep 1
    b=$(awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $5+$6 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
        busy = y[1] - x[1]; idle = y[2] - x[2]; printf "%d", (busy + idle) ? 100 * busy / (busy + idle) : 0 }'
}
busy_start=$(cpu_busy_pct)
if (( busy_start > 15 )); then
    warn "the CPUs are already ${busy_start}% busy before the benchmark: other work on this machine will skew the figures"
fi

# ---------------------------------------------------------------- upstreams
log "temp dir $TMP; durations: iperf3 ${IPERF_DURATION}s, wrk ${WRK_DURATION}s"

nginx_user=""
(( EUID == 0 )) && nginx_user="user root;"
sed -e "s|@DIR@|$TMP/nginx|g" -e "s|@PORT@|$UP_HTTP_PORT|g" \
    -e "s|@WORKERS@|$NGINX_WORKERS|g" -e "s|@USER@|$nginx_user|g" \
    "$SCRIPT_DIR/nginx.conf.in" >"$TMP/nginx/nginx.conf"
nginx -t -q -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' \
    || die "nginx config test failed (see $TMP/nginx/nginx.conf)"
"${LOAD_ON[@]}" nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' \
    >"$TMP/nginx/stdout.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_listen "$NGINX_PID" "$UP_HTTP_PORT" nginx "$TMP/nginx/error.log" || die "nginx upstream did not start"
http_check "$UP_HTTP_PORT" || die "nginx upstream does not answer"

"${LOAD_ON[@]}" iperf3 -s -B 127.0.0.1 -p "$UP_IPERF_PORT" --rcv-timeout 10000 >"$TMP/iperf3-server.log" 2>&1 &
IPERF_PID=$!
PIDS+=("$IPERF_PID")
wait_listen "$IPERF_PID" "$UP_IPERF_PORT" "iperf3 server" "$TMP/iperf3-server.log" || die "iperf3 server did not start"
log "upstreams up: nginx (PID $NGINX_PID) :$UP_HTTP_PORT, iperf3 -s (PID $IPERF_PID) :$UP_IPERF_PORT"

# ---------------------------------------------------------------- proxies
PROXY_PID=""

start_ferry() {     # start_ferry DIR [SPLICE(0|1)]
    local dir=$1 splice=${2:-0}
    if [[ "$splice" == 1 ]]; then
        # same config plus [node] copy = "splice"
        sed '/^\[node\]/a copy = "splice"' "$SCRIPT_DIR/ferryd.toml" >"$TMP/ferryd.toml"
    else
        cp "$SCRIPT_DIR/ferryd.toml" "$TMP/ferryd.toml"
    fi
    cp "$TMP/ferryd.toml" "$dir/ferryd.toml"
    RUST_LOG=${RUST_LOG:-warn} "${PROXY_ON[@]}" "$FERRYD_RUN" --config "$TMP/ferryd.toml" --log-format text >"$dir/proxy.log" 2>&1 &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    local deadline=$((SECONDS + READY_TIMEOUT))
    until curl -sf --max-time 1 -o /dev/null "http://127.0.0.1:$FERRY_ADMIN_PORT/health/ready"; do
        if ! kill -0 "$PROXY_PID" 2>/dev/null; then
            local rc=0
            wait "$PROXY_PID" || rc=$?
            warn "ferryd exited during startup with status $rc; last log lines:"; tail -n 20 "$dir/proxy.log" >&2
            return 1
        fi
        if (( SECONDS >= deadline )); then
            warn "ferryd not ready (GET /health/ready on :$FERRY_ADMIN_PORT) within ${READY_TIMEOUT}s; last log lines:"
            tail -n 20 "$dir/proxy.log" >&2
            return 1
        fi
        sleep 0.2
    done
    wait_listen "$PROXY_PID" "$FERRY_IPERF_PORT" ferryd "$dir/proxy.log" \
        && wait_listen "$PROXY_PID" "$FERRY_HTTP_PORT" ferryd "$dir/proxy.log"
}

start_haproxy() {   # start_haproxy DIR IPERF_PORT HTTP_PORT SPLICE(0|1)
    local dir=$1 iport=$2 hport=$3 splice=$4 cfg=$1/haproxy.cfg opts=""
    [[ "$splice" == 1 ]] && opts=$'    option splice-request\n    option splice-response'
    SPLICE_OPTS=$opts awk -v maxconn="$HAP_MAXCONN" -v maxpipes="$HAP_MAXPIPES" -v threads="$HAP_THREADS" -v ip="$iport" -v hp="$hport" \
        -v uip="$UP_IPERF_PORT" -v uhp="$UP_HTTP_PORT" '
        /^@SPLICE@$/ { if (ENVIRON["SPLICE_OPTS"] != "") print ENVIRON["SPLICE_OPTS"]; next }
        { gsub(/@MAXCONN@/, maxconn); gsub(/@MAXPIPES@/, maxpipes); gsub(/@NBTHREAD@/, threads); gsub(/@IPERF_PORT@/, ip); gsub(/@HTTP_PORT@/, hp);
          gsub(/@UP_IPERF_PORT@/, uip); gsub(/@UP_HTTP_PORT@/, uhp); print }' \
        "$SCRIPT_DIR/haproxy.cfg.in" >"$cfg"
    haproxy -q -c -f "$cfg" >"$dir/check.log" 2>&1 || { warn "haproxy config check failed:"; cat "$dir/check.log" >&2; return 1; }
    "${PROXY_ON[@]}" haproxy -db -f "$cfg" >"$dir/proxy.log" 2>&1 &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_listen "$PROXY_PID" "$iport" haproxy "$dir/proxy.log" && wait_listen "$PROXY_PID" "$hport" haproxy "$dir/proxy.log"
}

# ---------------------------------------------------------------- loads
# run_load DIR TAG LOAD CMD...: runs CMD bounded in time, records the proxy's
# CPU ticks around it. Returns 1 if the proxy died.
run_load() {
    local dir=$1 tag=$2 load=$3 t0="" t1="" rc=0 limit sys0 sys1 our0 our1 w0 w1 sampler=""
    shift 3
    limit=$(( (IPERF_DURATION > WRK_DURATION ? IPERF_DURATION : WRK_DURATION) + 30 ))
    if [[ -n "$PROXY_PID" ]]; then
        rss_sampler "$PROXY_PID" "$dir/$load.rssmax" &
        sampler=$!
        PIDS+=("$sampler")
    fi
    w0=$EPOCHREALTIME
    sys0=$(sys_busy_ticks)
    our0=$(our_ticks)
    [[ -n "$PROXY_PID" ]] && t0=$(proc_ticks "$PROXY_PID")
    timeout --foreground -k 5 "$limit" "$@" >"$dir/$load.out" 2>"$dir/$load.err" || rc=$?
    [[ -n "$PROXY_PID" ]] && t1=$(proc_ticks "$PROXY_PID" 2>/dev/null || true)
    if [[ -n "$sampler" ]]; then
        kill "$sampler" 2>/dev/null || true
        wait "$sampler" 2>/dev/null || true
        forget_pid "$sampler"
    fi
    our1=$(our_ticks)
    sys1=$(sys_busy_ticks)
    w1=$EPOCHREALTIME
    echo "$rc" >"$dir/$load.rc"
    [[ -n "$t0" && -n "$t1" ]] && echo $(( t1 - t0 )) >"$dir/$load.ticks"
    # CPU used by processes this script did not start, during the load
    echo "$(( (sys1 - sys0) - (our1 - our0) )) $(( sys1 - sys0 )) ${w0/[.,]/} ${w1/[.,]/}" >"$dir/$load.foreign"
    if (( rc == 124 || rc == 137 )); then
        warn "$tag $load: timed out after ${limit}s (stall?)"
    elif (( rc != 0 )); then
        warn "$tag $load: exit code $rc: $(tail -c 300 "$dir/$load.err" | tr '\n' ' ')"
    fi
    if [[ -n "$PROXY_PID" ]] && ! kill -0 "$PROXY_PID" 2>/dev/null; then
        warn "$tag: proxy (PID $PROXY_PID) died during $load"
        return 1
    fi
    sleep "$SETTLE"
}

summarize_load() {  # summarize_load FILE LOAD: one-line progress output
    local out=$1 load=$2
    case "$load" in
        iperf*) python3 -c 'import json,sys
try:
    j=json.load(open(sys.argv[1])); print("%.2f Gbit/s" % (j["end"]["sum_received"]["bits_per_second"]/1e9) if "end" in j and "sum_received" in j["end"] else "error: %s" % j.get("error"))
except Exception as e: print("unparseable:", e)' "$out" ;;
        wrk*) awk '/Requests\/sec/ { r=$2 } /^ +99%/ { p=$2 } /Socket errors/ { e=$0 }
                   END { printf "%s req/s, p99 %s%s\n", r, p, (e ? ";" e : "") }' "$out" ;;
    esac
}

stop_proxy() {
    if [[ -n "$PROXY_PID" ]]; then
        stop_pid "$PROXY_PID"
        forget_pid "$PROXY_PID"
        PROXY_PID=""
        sleep "$SETTLE"
    fi
}

setup_failed() {  # setup_failed DIR MESSAGE: record, stop the proxy, return 1
    echo "failed: $2" >"$1/status"
    stop_proxy
    return 1
}

foreign_pct() {  # foreign_pct FILE.foreign: CPU of other processes during a load, % of one core
    local f b w0 w1
    read -r f b w0 w1 <"$1" 2>/dev/null || { echo 0; return 0; }
    (( w1 > w0 && f > 0 )) || { echo 0; return 0; }
    echo $(( f * 100 * 1000000 / (CLK_TCK * (w1 - w0)) ))
}

wait_idle() {   # wait up to WAIT_IDLE s for the CPUs to be < 15% busy (besides our idle upstreams)
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

# measure DIR TAG LOAD IPERF_PORT HTTP_PORT: runs one load, again (up to
# NOISY_RETRIES times) while other processes used >= 10% of a core during it,
# and keeps the quietest attempt as DIR/LOAD.*. Returns 1 if the proxy died.
measure() {
    local dir=$1 tag=$2 load=$3 iport=$4 hport=$5 attempt pct best=0 best_pct="" f ok=1
    for ((attempt = 1; ; attempt++)); do
        case "$load" in
            iperf1) run_load "$dir" "$tag" "$load" "${LOAD_ON[@]}" iperf3 -c 127.0.0.1 -p "$iport" -t "$IPERF_DURATION" -P 1 -J --connect-timeout 3000 || ok=0 ;;
            iperf4) run_load "$dir" "$tag" "$load" "${LOAD_ON[@]}" iperf3 -c 127.0.0.1 -p "$iport" -t "$IPERF_DURATION" -P 4 -J --connect-timeout 3000 || ok=0 ;;
            wrk_ka) run_load "$dir" "$tag" "$load" "${LOAD_ON[@]}" wrk --latency -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${WRK_DURATION}s" "http://127.0.0.1:$hport/" || ok=0 ;;
            wrk_close) run_load "$dir" "$tag" "$load" "${LOAD_ON[@]}" wrk --latency -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${CLOSE_DURATION}s" -H 'Connection: close' "http://127.0.0.1:$hport/" || ok=0 ;;
        esac
        echo "$attempt" >"$dir/$load.attempts"
        pct=$(foreign_pct "$dir/$load.foreign")
        # keep every attempt; the quietest one is used (see below)
        mkdir -p "$dir/$load.try$attempt"
        for f in out err rc ticks foreign rssmax; do
            if [[ -f "$dir/$load.$f" ]]; then cp "$dir/$load.$f" "$dir/$load.try$attempt/"; fi
        done
        if [[ -z "$best_pct" ]] || (( pct < best_pct )); then best=$attempt best_pct=$pct; fi
        log "$tag $load: $(summarize_load "$dir/$load.out" "$load")$( (( pct >= 10 )) && echo " [other processes used ${pct}% of a core]")"
        (( ok )) || break
        (( pct >= 10 && attempt <= NOISY_RETRIES )) || break
        log "$tag $load: measuring again (retry $attempt/$NOISY_RETRIES) because another job was using the CPU"
        wait_idle
    done
    if (( best != attempt )); then
        log "$tag $load: keeping attempt $best of $attempt (least background CPU: ${best_pct}%)"
        for f in out err rc ticks foreign rssmax; do
            rm -f "$dir/$load.$f"
            if [[ -f "$dir/$load.try$best/$load.$f" ]]; then cp "$dir/$load.try$best/$load.$f" "$dir/$load.$f"; fi
        done
    fi
    echo "$best" >"$dir/$load.kept"
    (( ok ))
}

# run_setup NAME IPERF_PORT HTTP_PORT KIND — one repetition of one setup,
# raw files in $RAW/NAME/r$REP. The proxy is stopped again before returning.
run_setup() {
    local name=$1 iport=$2 hport=$3 kind=$4 dir=$RAW/$1/r$REP load tag
    tag="$name [rep $REP/$REPEAT]"
    mkdir -p "$dir"
    PROXY_PID=""
    wait_idle
    log "=== $tag (iperf :$iport, http :$hport)"
    case "$kind" in
        direct) : ;;
        ferry) start_ferry "$dir" 0 || { setup_failed "$dir" "ferryd did not start (see log)"; return 1; } ;;
        ferry-splice) start_ferry "$dir" 1 || { setup_failed "$dir" "ferryd (copy = splice) did not start (see log)"; return 1; } ;;
        haproxy) start_haproxy "$dir" "$iport" "$hport" 0 || { setup_failed "$dir" "haproxy did not start"; return 1; } ;;
        haproxy-splice) start_haproxy "$dir" "$iport" "$hport" 1 || { setup_failed "$dir" "haproxy did not start"; return 1; } ;;
    esac
    if [[ -n "$PROXY_PID" ]]; then
        echo "$PROXY_PID" >"$dir/pid"
        log "$tag: PID $PROXY_PID ready"
    fi
    http_check "$hport" || { setup_failed "$dir" "no 'ok' answer through 127.0.0.1:$hport"; return 1; }
    [[ -n "$PROXY_PID" ]] && proc_status_kib "$PROXY_PID" VmRSS >"$dir/rss_start_kib"

    local ok=1
    # Idle connections first, so the per-connection RSS is not blurred by
    # buffers the allocator kept from the loads.
    if [[ -n "$PROXY_PID" ]]; then
        local irc=0
        timeout --foreground -k 5 $(( IDLE_HOLD + 60 )) "${LOAD_ON[@]}" python3 "$SCRIPT_DIR/idle_conns.py" --port "$hport" \
            --count "$IDLE_CONNS" --hold "$IDLE_HOLD" --pid "$PROXY_PID" --upstream-port "$UP_HTTP_PORT" \
            >"$dir/idle.out" 2>"$dir/idle.err" || irc=$?
        if (( irc != 0 )); then
            warn "$tag: idle connections test: exit $irc $(cat "$dir/idle.out" "$dir/idle.err" | tail -c 600)"
        else
            log "$tag: $(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("idle: %d/%d open, %d alive after %ss, %s upstream conns, RSS %s -> %s KiB" % (j["opened"], j["requested"], j["alive_after_hold"], j["hold_s"], j["upstream_established"], j["rss_before_kib"], j["rss_kib"]))' "$dir/idle.out" 2>/dev/null || cat "$dir/idle.out")"
        fi
        kill -0 "$PROXY_PID" 2>/dev/null || { setup_failed "$dir" "proxy died during the idle connections test"; return 1; }
        sleep "$SETTLE"
    fi
    local loads=(iperf1 iperf4 wrk_ka wrk_close)
    # With rounds, every load is measured there and a repetition holds only
    # the idle connections (ferry-splice, which shares ferry's ports, keeps
    # measuring its loads here).
    (( ROUNDS > 0 )) && [[ "$kind" != ferry-splice ]] && loads=()
    if (( WARMUP > 0 && ${#loads[@]} > 0 )); then
        timeout --foreground -k 5 $(( WARMUP + 30 )) "${LOAD_ON[@]}" wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${WARMUP}s" \
            "http://127.0.0.1:$hport/" >/dev/null 2>&1 || warn "$tag: warm-up wrk failed"
    fi
    for load in ${loads[@]+"${loads[@]}"}; do
        measure "$dir" "$tag" "$load" "$iport" "$hport" || { ok=0; break; }
    done
    if [[ -n "$PROXY_PID" ]] && kill -0 "$PROXY_PID" 2>/dev/null; then
        proc_status_kib "$PROXY_PID" VmHWM >"$dir/hwm_kib" || true
        proc_status_kib "$PROXY_PID" VmRSS >"$dir/rss_end_kib" || true
    fi
    (( ok )) || { setup_failed "$dir" "proxy died during the loads (see log)"; return 1; }
    stop_proxy
    echo ok >"$dir/status"
}

abort_ferry() {  # abort_ferry DIR MESSAGE
    stop_proxy
    mkdir -p "$OUT/l4-$TS-failed"
    cp -r "$1" "$OUT/l4-$TS-failed/ferry" 2>/dev/null || true
    [[ -f "$TMP/ferryd.toml" ]] && cp "$TMP/ferryd.toml" "$OUT/l4-$TS-failed/" 2>/dev/null
    die "$2; aborting, the comparison is the point (log and raw files: $OUT/l4-$TS-failed/; SKIP_FERRY=1 runs DIRECT/HAProxy only)"
}

# Pre-flight: make sure ferryd starts with the bench config before spending
# time on the other setups.
if [[ "$SKIP_FERRY" != 1 ]]; then
    mkdir -p "$TMP/preflight"
    start_ferry "$TMP/preflight" || abort_ferry "$TMP/preflight" "ferryd ($FERRYD) did not start with ops/bench/ferryd.toml"
    http_check "$FERRY_HTTP_PORT" || abort_ferry "$TMP/preflight" "ferryd is ready but does not forward HTTP through :$FERRY_HTTP_PORT to nginx :$UP_HTTP_PORT"
    stop_proxy
    log "pre-flight: ferryd starts, is ready and forwards"
else
    mkdir -p "$RAW/ferry"
    echo "skipped: SKIP_FERRY=1" >"$RAW/ferry/status"
fi

# Setups run one after another (never overlapping); with REPEAT>1 the
# repetitions are interleaved so slow drifts in background load hit every
# setup alike, and the proxies' order rotates so none always follows the
# same one. Upstreams stay up throughout.
run_proxy_setup() {  # run_proxy_setup NAME
    case "$1" in
        ferry)
            if [[ "$SKIP_FERRY" == 1 ]]; then
                log "=== ferry skipped (SKIP_FERRY=1)"
                return 0
            fi
            run_setup ferry "$FERRY_IPERF_PORT" "$FERRY_HTTP_PORT" ferry \
                || abort_ferry "$RAW/ferry/r$REP" "ferry setup failed: $(cat "$RAW/ferry/r$REP/status" 2>/dev/null)"
            if [[ "$FERRY_SPLICE" == 1 ]]; then
                run_setup ferry-splice "$FERRY_IPERF_PORT" "$FERRY_HTTP_PORT" ferry-splice \
                    || abort_ferry "$RAW/ferry-splice/r$REP" "ferry-splice setup failed: $(cat "$RAW/ferry-splice/r$REP/status" 2>/dev/null)"
            fi ;;
        haproxy) run_setup haproxy "$HAP_IPERF_PORT" "$HAP_HTTP_PORT" haproxy \
            || warn "haproxy setup failed: $(cat "$RAW/haproxy/r$REP/status")" ;;
        haproxy-splice) run_setup haproxy-splice "$HAPS_IPERF_PORT" "$HAPS_HTTP_PORT" haproxy-splice \
            || warn "haproxy-splice setup failed: $(cat "$RAW/haproxy-splice/r$REP/status")" ;;
    esac
}

PROXY_ORDER=(ferry haproxy haproxy-splice)
for ((REP = 1; REP <= REPEAT; REP++)); do
    run_setup direct "$UP_IPERF_PORT" "$UP_HTTP_PORT" direct || warn "DIRECT failed: $(cat "$RAW/direct/r$REP/status")"
    for ((i = 0; i < ${#PROXY_ORDER[@]}; i++)); do
        run_proxy_setup "${PROXY_ORDER[(i + REP - 1) % ${#PROXY_ORDER[@]}]}"
    done
done

# ---------------------------------------------------------------- rounds
# The loads vary a lot on a small shared machine: its speed drifts 10-20%
# within minutes, so one run per repetition compares setups measured at
# different speeds; and Connection: close (a new connection per request)
# leaves tens of thousands of TIME_WAIT sockets that the next load works
# among. So every load is measured here, with every proxy up at once (an
# idle proxy costs nothing) and loaded one at a time: iperf3 with 1 then 4
# streams for IPERF_DURATION, wrk keep-alive for WRK_DURATION, then
# Connection: close for CLOSE_DURATION, in an order of setups that changes
# each round (below); raw files in $RAW/NAME/cROUND. The report shows the
# median of each setup over the rounds and, round by round, ferry against
# the better HAProxy variant.
rounds_phase() {
    local names=() hports=() iports=() pids=() i j r name dir pid others load ok
    names+=(direct); hports+=("$UP_HTTP_PORT"); iports+=("$UP_IPERF_PORT"); pids+=("")
    if [[ "$SKIP_FERRY" != 1 ]]; then
        mkdir -p "$RAW/ferry/churn"
        start_ferry "$RAW/ferry/churn" 0 || abort_ferry "$RAW/ferry/churn" "ferryd did not start for the rounds"
        names+=(ferry); hports+=("$FERRY_HTTP_PORT"); iports+=("$FERRY_IPERF_PORT"); pids+=("$PROXY_PID")
    fi
    mkdir -p "$RAW/haproxy/churn" "$RAW/haproxy-splice/churn"
    if start_haproxy "$RAW/haproxy/churn" "$HAP_IPERF_PORT" "$HAP_HTTP_PORT" 0; then
        names+=(haproxy); hports+=("$HAP_HTTP_PORT"); iports+=("$HAP_IPERF_PORT"); pids+=("$PROXY_PID")
    else
        warn "haproxy did not start for the rounds"
    fi
    if start_haproxy "$RAW/haproxy-splice/churn" "$HAPS_IPERF_PORT" "$HAPS_HTTP_PORT" 1; then
        names+=(haproxy-splice); hports+=("$HAPS_HTTP_PORT"); iports+=("$HAPS_IPERF_PORT"); pids+=("$PROXY_PID")
    else
        warn "haproxy-splice did not start for the rounds"
    fi
    PROXY_PID=""
    for ((i = 0; i < ${#names[@]}; i++)); do
        http_check "${hports[i]}" || { warn "${names[i]}: no 'ok' answer before the rounds"; pids[i]=dead; continue; }
        if (( WARMUP > 0 )); then
            timeout --foreground -k 5 $(( WARMUP + 30 )) "${LOAD_ON[@]}" wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${WARMUP}s" \
                "http://127.0.0.1:${hports[i]}/" >/dev/null 2>&1 || warn "${names[i]}: keep-alive warm-up failed"
            timeout --foreground -k 5 $(( WARMUP + 30 )) "${LOAD_ON[@]}" wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${WARMUP}s" \
                -H 'Connection: close' "http://127.0.0.1:${hports[i]}/" >/dev/null 2>&1 || warn "${names[i]}: churn warm-up failed"
        fi
    done
    # Orders from a Williams design: the first is 0 1 n-1 2 n-2 ..., each
    # next adds 1 (mod n). Over n rounds (n even) every setup follows every
    # other exactly once, so none always runs right after, say, DIRECT and
    # the ~28k TIME_WAIT sockets its load leaves to the upstream port. A
    # plain rotation would keep who-follows-whom fixed.
    local n=${#names[@]} first=(0) lo=1 hi
    hi=$(( n - 1 ))
    while (( ${#first[@]} < n )); do
        first+=("$lo"); lo=$(( lo + 1 ))
        (( ${#first[@]} < n )) && { first+=("$hi"); hi=$(( hi - 1 )); }
    done
    log "=== rounds: ${names[*]} up at once; $ROUNDS rounds of iperf3 1 and 4 streams (${IPERF_DURATION}s each), keep-alive (${WRK_DURATION}s), Connection: close (${CLOSE_DURATION}s)"
    for ((r = 1; r <= ROUNDS; r++)); do
        for ((j = 0; j < n; j++)); do
            i=$(( (first[j] + r - 1) % n ))
            name=${names[i]} pid=${pids[i]} dir=$RAW/${names[i]}/c$r
            [[ "$pid" == dead ]] && continue
            mkdir -p "$dir"
            others=()
            for p in "${pids[@]}"; do [[ -n "$p" && "$p" != dead && "$p" != "$pid" ]] && others+=("$p"); done
            IDLE_PROXIES=(${others[@]+"${others[@]}"})
            PROXY_PID=$pid
            wait_idle
            ok=1
            for load in iperf1 iperf4 wrk_ka wrk_close; do
                measure "$dir" "$name [round $r/$ROUNDS]" "$load" "${iports[i]}" "${hports[i]}" || { ok=0; break; }
            done
            if (( ok )); then
                echo ok >"$dir/status"
            else
                echo "failed: the proxy died during the load (see $RAW/$name/churn/proxy.log)" >"$dir/status"
                [[ "$name" == ferry ]] && abort_ferry "$RAW/ferry/churn" "ferryd died during round $r"
                pids[i]=dead
            fi
        done
    done
    IDLE_PROXIES=()
    PROXY_PID=""
    for pid in "${pids[@]}"; do
        [[ -n "$pid" && "$pid" != dead ]] || continue
        stop_pid "$pid"
        forget_pid "$pid"
    done
}
(( ROUNDS > 0 )) && rounds_phase

# ---------------------------------------------------------------- report
{
    echo "timestamp=$TS"
    echo "hostname=$(hostname)"
    echo "kernel=$(uname -r)"
    echo "nproc=$(nproc)"
    echo "clk_tck=$CLK_TCK"
    echo "iperf_duration=$IPERF_DURATION"
    echo "wrk_duration=$WRK_DURATION"
    echo "wrk_threads=$WRK_THREADS"
    echo "wrk_conns=$WRK_CONNS"
    echo "idle_conns=$IDLE_CONNS"
    echo "idle_hold=$IDLE_HOLD"
    echo "nginx_workers=$NGINX_WORKERS"
    echo "haproxy_maxconn=$HAP_MAXCONN"
    echo "quick=$QUICK"
    echo "repeat=$REPEAT"
    echo "rounds=$ROUNDS"
    echo "close_duration=$CLOSE_DURATION"
    echo "ferry_splice=$FERRY_SPLICE"
    echo "pin=$PIN_DESC"
    echo "haproxy_threads=$HAP_THREADS"
    echo "loadavg_start=$loadavg"
    echo "cpu_busy_pct_start=$busy_start"
    echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "ferryd=$FERRYD"
    echo "versions=ferryd: $FERRYD_INFO; $(haproxy -v | head -n 1 | cut -d' ' -f1-3); $(nginx -v 2>&1 | cut -d' ' -f3); $(iperf3 --version | head -n 1 | cut -d' ' -f1-2); $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)"
} >"$RAW/meta.txt"

JSON_OUT=$OUT/l4-$TS.json
TXT_OUT=$OUT/l4-$TS.txt
python3 "$SCRIPT_DIR/l4_report.py" "$RAW" "$JSON_OUT" "$TXT_OUT" || die "report generation failed (raw files in $TMP)"
log "results: $JSON_OUT and $TXT_OUT"
