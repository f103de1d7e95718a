#!/usr/bin/env bash
# ops/bench/gossip.sh — membership benchmark (issue 4): ferry's SWIM gossip
# (ferry-gossip, foca 2) side by side with Serf 0.9 (Debian `serf`) on
# loopback, plus an in-process simulation of up to 1,000 foca members.
#
# Run ./ops/bench/gossip.sh --help for usage. Everything runs on loopback, as
# the current user, from a mktemp -d directory; only processes started here are
# ever stopped (by PID). Every loop is bounded in count and time.
#
# Method (the same for every system, so the comparison is fair):
# - A cluster of N members, member i on its own loopback IP: Serf on
#   SERF_NET.i (gossip :SERF_PORT, RPC :SERF_RPC_PORT), ferry on FERRY_NET.i
#   (gossip :7946, cluster :7947, admin :7948, fixed by `ferryd --bind`). The
#   two never share an address or a port. Member 1 starts first (ferry:
#   --bootstrap-expect 1); the others join it.
# - gossip_poll.py asks every member for its member list every POLL_MS, over
#   one persistent connection each: Serf through its RPC protocol (msgpack,
#   "members"), ferry through GET /v1/members. A member's time is when the
#   first answer showing the change arrived; the figure is the slowest member.
# - Join convergence: members 1..N-1 are started and converge first; then
#   member N is started, and the clock runs from just before its start until
#   every member (N included) lists all N alive. This includes process start;
#   the poller is started and connected before, and told t0 through a file.
# - Failure detection: SETTLE_S later the poller itself sends SIGKILL to
#   member N and times until every survivor reports it down (Serf: failed).
# - Graceful leave: SETTLE_S later the poller sends member N-1 SIGINT (Serf:
#   its graceful leave, per Serf's docs) or SIGTERM (ferry: leave, then exit 0),
#   and times until every remaining member reports it left.
# - Each (system, N) is a fresh cluster, torn down with SIGKILL afterwards.
#   Repetitions are interleaved: for each rep, for each N, serf, ferry-lan,
#   ferry-fast. Reported figures are medians over REPEAT.
# - Idle: IDLE_MEMBERS ferry members with the fast profile stay idle for
#   IDLE_SECS; every member's /v1/members is read every second, and any member
#   ever reported other than alive (suspect, down, left, missing) is counted.
# - Simulation: gossip/examples/sim_bench.rs, ferry-gossip's SimCluster (no
#   sockets, virtual time, 1 ms latency), lan and fast at SIM_SIZES members:
#   crash (first member to declare it down, then the spread to everyone) and
#   join, in probe periods and gossip intervals, and packets per member per s;
#   and, at the cluster sizes over SIM_TAIL_SEEDS seeds, how often a change
#   misses a member, with expected_members = N and = SIM_FERRYD_EXPECTED.
# - CPU: each phase records the cores used by the members, the poller, and
#   everything else ("other": someone else's work, e.g. a build). A phase with
#   other >= 0.5 core is marked suspect in the table.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: ops/bench/gossip.sh [--quick] [--skip-serf] [--skip-ferry] [--skip-sim]
                           [--skip-idle] [--build] [--keep-tmp] [--help]

Serf 0.9 (default LAN profile) and ferryd (gossip profiles lan and fast) on
loopback, with 5 and 20 members: join convergence, failure detection after
kill -9, graceful-leave propagation; a 10-minute idle run of 5 ferry members
on the fast profile counting false suspicions; and an in-process simulation
of 10..1,000 foca members (rounds until a change reaches everyone, packets
per member per second). Prints a table with ferry/Serf ratios and writes
everything to ${OUT}/gossip-<timestamp>/ (raw JSON per phase, sim.jsonl,
gossip.json, gossip.txt).

Options (each has an environment-variable equivalent):
  --quick       QUICK=1       smoke run: SIZES="5", IDLE_SECS=60, SIM_SIZES=10,100,1000, SIM_SEEDS=2
  --skip-serf   SKIP_SERF=1   ferry only (no ratios)
  --skip-ferry  SKIP_FERRY=1  Serf and the simulation only (e.g. while ferryd lacks --join)
  --skip-sim    SKIP_SIM=1    no simulation
  --skip-idle   SKIP_IDLE=1   no idle false-down run
  --build       BUILD=1       run 'cargo build -j2 --release -p ferry-node' first
                              (also done when FERRYD is missing)
  --keep-tmp    KEEP_TMP=1    keep the temp dir (data dirs, member logs)
  -h, --help                  this text

Environment:
  SIZES="5 20"          cluster sizes (2..50)
  SYSTEMS="serf ferry-lan ferry-fast"   which clusters to run
  REPEAT=1              repetitions; figures are medians
  POLL_MS=50            poll period of every member's member list (50-100 suggested)
  SETTLE_S=2            pause after a join and after a detection before the next phase
  WAIT_IDLE=60          before each cluster, wait up to this many seconds for other work
                        (builds, tests) to use < QUIET_BELOW (0.3) core; 0 = do not wait
  JOIN_TIMEOUT=60       seconds for a cluster to converge / a member to join
  EVENT_TIMEOUT=60      seconds for a kill or a leave to reach every member
  IDLE_SECS=600         idle run length (0 = skip)
  IDLE_MEMBERS=5
  SIM_SIZES=10,30,100,300,1000  SIM_SEEDS=10  SIM_STEP_MS=5
  SIM_TAIL_SIZES=SIZES (comma-separated; empty = skip)  SIM_TAIL_SEEDS=40
  SIM_FERRYD_EXPECTED=5 the simulation's tail at the cluster sizes, with foca's
                        retransmissions scaled to N and fixed as ferryd sets them
                        today (GossipConfig's default expected_members, 5)
  SERF_NET=127.0.1      Serf member i on SERF_NET.i
  SERF_PORT=27946 SERF_RPC_PORT=27373
  FERRY_NET=127.0.2     ferry member i on FERRY_NET.i (ports 7946-7948)
  FERRYD=target/release/ferryd   ferryd binary (relative to the repo root); a
                        private copy is run so a rebuild does not change it mid-run
  OUT=target/bench      where the run dir goes (relative to the repo root)
  NO_INSTALL=1          fail instead of apt-get installing missing tools

Tools: serf (Debian serf), python3, ss (iproute2), jq; missing Debian packages
are installed with apt-get update once, then apt-get install -y (root only).
No system service is started or touched; serf runs as the current user.
EOF
}

die() { printf 'gossip.sh: error: %s\n' "$*" >&2; exit 1; }
log() { printf '[gossip %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[gossip %s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

for arg in "$@"; do
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        --quick) QUICK=1 ;;
        --skip-serf) SKIP_SERF=1 ;;
        --skip-ferry) SKIP_FERRY=1 ;;
        --skip-sim) SKIP_SIM=1 ;;
        --skip-idle) SKIP_IDLE=1 ;;
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
    SIZES=${SIZES:-5}
    IDLE_SECS=${IDLE_SECS:-60}
    SIM_SIZES=${SIM_SIZES:-10,100,1000}
    SIM_SEEDS=${SIM_SEEDS:-2}
fi
SIZES=${SIZES:-5 20}
SYSTEMS=${SYSTEMS:-serf ferry-lan ferry-fast}
REPEAT=${REPEAT:-1}
POLL_MS=${POLL_MS:-50}
SETTLE_S=${SETTLE_S:-2}
WAIT_IDLE=${WAIT_IDLE:-60}
QUIET_BELOW=${QUIET_BELOW:-0.3}
JOIN_TIMEOUT=${JOIN_TIMEOUT:-60}
EVENT_TIMEOUT=${EVENT_TIMEOUT:-60}
IDLE_SECS=${IDLE_SECS:-600}
IDLE_MEMBERS=${IDLE_MEMBERS:-5}
SIM_SIZES=${SIM_SIZES:-10,30,100,300,1000}
SIM_SEEDS=${SIM_SEEDS:-10}
SIM_STEP_MS=${SIM_STEP_MS:-5}
SIM_TAIL_SIZES=${SIM_TAIL_SIZES-$(tr ' ' ',' <<<"$SIZES")}
SIM_TAIL_SEEDS=${SIM_TAIL_SEEDS:-40}
SIM_FERRYD_EXPECTED=${SIM_FERRYD_EXPECTED:-5}
SERF_NET=${SERF_NET:-127.0.1}
SERF_PORT=${SERF_PORT:-27946}
SERF_RPC_PORT=${SERF_RPC_PORT:-27373}
FERRY_NET=${FERRY_NET:-127.0.2}
FERRY_GOSSIP_PORT=7946     # fixed by ferryd --bind IP
FERRY_CLUSTER_PORT=7947
FERRY_ADMIN_PORT=7948
FERRYD=${FERRYD:-target/release/ferryd}
OUT=${OUT:-target/bench}
SKIP_SERF=${SKIP_SERF:-0}
SKIP_FERRY=${SKIP_FERRY:-0}
SKIP_SIM=${SKIP_SIM:-0}
SKIP_IDLE=${SKIP_IDLE:-0}
BUILD=${BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
NO_INSTALL=${NO_INSTALL:-0}

for v in SIM_TAIL_SEEDS SIM_FERRYD_EXPECTED REPEAT POLL_MS SETTLE_S WAIT_IDLE JOIN_TIMEOUT EVENT_TIMEOUT IDLE_SECS IDLE_MEMBERS SIM_SEEDS SIM_STEP_MS \
         SERF_PORT SERF_RPC_PORT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
for n in $SIZES; do
    [[ "$n" =~ ^[0-9]+$ ]] && (( n >= 3 && n <= 50 )) || die "SIZES: each size must be 3..50 (got '$n')"
done
(( REPEAT >= 1 && POLL_MS >= 10 && JOIN_TIMEOUT > 0 && EVENT_TIMEOUT > 0 )) \
    || die "REPEAT >= 1, POLL_MS >= 10, JOIN_TIMEOUT and EVENT_TIMEOUT > 0 please"
(( IDLE_MEMBERS >= 2 && IDLE_MEMBERS <= 50 )) || die "IDLE_MEMBERS must be 2..50"
[[ "$SIM_SIZES" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "SIM_SIZES must be comma-separated sizes (got '$SIM_SIZES')"
[[ -z "$SIM_TAIL_SIZES" || "$SIM_TAIL_SIZES" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "SIM_TAIL_SIZES must be comma-separated sizes (got '$SIM_TAIL_SIZES')"
for s in $SYSTEMS; do
    case "$s" in serf|ferry-lan|ferry-fast) ;; *) die "SYSTEMS: unknown system '$s'" ;; esac
done
[[ "$SERF_NET" != "$FERRY_NET" ]] || die "SERF_NET and FERRY_NET must differ"
(( IDLE_SECS > 0 )) || SKIP_IDLE=1
if [[ "$SKIP_SERF" == 1 ]]; then SYSTEMS=$(tr ' ' '\n' <<<"$SYSTEMS" | grep -v '^serf$' | tr '\n' ' ' || true); fi
if [[ "$SKIP_FERRY" == 1 ]]; then
    SYSTEMS=$(tr ' ' '\n' <<<"$SYSTEMS" | grep -v '^ferry' | tr '\n' ' ' || true)
    SKIP_IDLE=1
fi
POLL_S=$(awk -v m="$POLL_MS" 'BEGIN { printf "%.3f", m / 1000 }')
POLL=(python3 "$SCRIPT_DIR/gossip_poll.py")

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

stop_pid() {     # stop_pid PID [SIG]: SIG (TERM), SIGKILL 5 s later; reap.
    local pid=$1 sig=${2:-TERM}
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    if ! exited "$pid" 50; then
        warn "PID $pid still running 5 s after SIG$sig; sending SIGKILL"
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
port_busy() {    # port_busy tcp|udp IP PORT: something is bound to IP:PORT (or *:PORT)
    local flag=-Hltn
    [[ "$1" == udp ]] && flag=-Hlun
    [[ -n "$(ss "$flag" "( sport = :$3 )" 2>/dev/null | awk -v a="$2:$3" '$4 == a || $4 ~ /^(\*|0\.0\.0\.0|\[::\]):/')" ]]
}

ports_free() {   # ports_free "proto:ip:port ...": wait up to 5 s for them to be free, else die
    local spec try busy
    for ((try = 0; try < 50; try++)); do
        busy=""
        for spec in $1; do
            IFS=: read -r proto ip port <<<"$spec"
            port_busy "$proto" "$ip" "$port" && busy+=" $proto $ip:$port"
        done
        [[ -z "$busy" ]] && return 0
        sleep 0.1
    done
    die "in use:$busy (another cluster on these addresses? SERF_NET / FERRY_NET move them)"
}

need_pkgs=()
need() {         # need CMD PKG: note PKG if CMD is missing
    command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2")
}

# ---------------------------------------------------------------- tools
need python3 python3
need ss iproute2
need jq jq
[[ " $SYSTEMS " == *" serf "* ]] && need serf serf
if (( ${#need_pkgs[@]} > 0 )); then
    [[ "$NO_INSTALL" == 1 ]] && die "missing packages: ${need_pkgs[*]} (NO_INSTALL=1)"
    (( EUID == 0 )) || die "missing packages: ${need_pkgs[*]}; install them (apt-get install -y ${need_pkgs[*]}) or run as root"
    log "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    # Debian's serf ships a service; in a container without an init nothing
    # starts it, and if one runs it listens on 7946/7373, not on our addresses
    # (ports_free below would notice a wildcard bind).
    apt-get install -y -qq "${need_pkgs[@]}" >&2 || die "apt-get install ${need_pkgs[*]} failed"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ferry-gossip-bench.XXXXXX")
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUN_DIR=$OUT/gossip-$STAMP
RESULTS=$RUN_DIR/raw
mkdir -p "$RESULTS"
log "temp dir $TMP; results in $RUN_DIR"

FERRYD_RUN=""
FERRYD_INFO="skipped"
if [[ " $SYSTEMS " == *" ferry"* || "$SKIP_IDLE" != 1 ]]; then
    if [[ "$BUILD" == 1 || ! -x "$FERRYD" ]]; then
        command -v cargo >/dev/null || die "cargo not found; cannot build $FERRYD"
        log "building ferryd (cargo build -j2 --release -p ferry-node)"
        cargo build -j2 --release -p ferry-node >&2 || die "cargo build failed"
    fi
    [[ -x "$FERRYD" ]] || die "$FERRYD not found after the build"
    FERRYD_RUN=$TMP/ferryd
    cp -- "$FERRYD" "$FERRYD_RUN"
    help=$(timeout 5 "$FERRYD_RUN" --help 2>&1 || true)
    for flag in --join --bind --name --data-dir --bootstrap-expect --gossip-profile; do
        grep -q -e "$flag" <<<"$help" \
            || die "$FERRYD has no $flag: gossip membership is not in this build (SKIP_FERRY=1 runs Serf and the simulation only)"
    done
    FERRYD_INFO="$(timeout 5 "$FERRYD_RUN" --version 2>/dev/null | head -n 1 || true) sha256:$(sha256sum "$FERRYD_RUN" | cut -c1-12) built $(date -u -r "$FERRYD" +%Y-%m-%dT%H:%M:%SZ) tree at run start: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$([[ -n "$(git status --porcelain -- node gossip client raft-store Cargo.lock 2>/dev/null)" ]] && echo ' + uncommitted changes' || true)"
    log "ferryd: $FERRYD_INFO (running a copy of $FERRYD)"
fi
SERF_INFO="skipped"
if [[ " $SYSTEMS " == *" serf "* ]]; then
    SERF_INFO="serf $(dpkg-query -W -f '${Version}' serf 2>/dev/null || echo '?') ($(serf version 2>/dev/null | sed -n 1p))"
    log "serf: $SERF_INFO"
fi

# ---------------------------------------------------------------- clusters
# One cluster at a time. MEMBER_PIDS[i] (1-based) is member i's PID.
MEMBER_PIDS=()
CLUSTER_DIR=""
SYS=""           # serf | ferry
PROFILE=""       # ferry: lan | fast

member_name() { if [[ "$SYS" == serf ]]; then echo "s$1"; else echo "f$1"; fi; }
member_ip() { if [[ "$SYS" == serf ]]; then echo "$SERF_NET.$1"; else echo "$FERRY_NET.$1"; fi; }
member_api() {   # RPC or admin address of member i
    if [[ "$SYS" == serf ]]; then echo "$SERF_NET.$1:$SERF_RPC_PORT"; else echo "$FERRY_NET.$1:$FERRY_ADMIN_PORT"; fi
}
member_ports() { # proto:ip:port of everything member i binds
    local ip
    ip=$(member_ip "$1")
    if [[ "$SYS" == serf ]]; then
        echo "udp:$ip:$SERF_PORT tcp:$ip:$SERF_PORT tcp:$ip:$SERF_RPC_PORT"
    else
        echo "udp:$ip:$FERRY_GOSSIP_PORT tcp:$ip:$FERRY_CLUSTER_PORT tcp:$ip:$FERRY_ADMIN_PORT"
    fi
}

nodes_arg() {    # nodes_arg I... -> name=api,... for gossip_poll.py
    local out="" i
    for i in "$@"; do out+="${out:+,}$(member_name "$i")=$(member_api "$i")"; done
    echo "$out"
}
names_arg() {
    local out="" i
    for i in "$@"; do out+="${out:+,}$(member_name "$i")"; done
    echo "$out"
}
pids_arg() {
    local out="" i
    for i in "${!MEMBER_PIDS[@]}"; do out+="${out:+,}${MEMBER_PIDS[i]}"; done
    echo "$out"
}

start_member() { # start_member I: member 1 founds the cluster, the others join it
    local i=$1 name ip log
    name=$(member_name "$i")
    ip=$(member_ip "$i")
    log=$CLUSTER_DIR/$name.log
    if [[ "$SYS" == serf ]]; then
        local join=()
        (( i == 1 )) || join=("-join=$SERF_NET.1:$SERF_PORT")
        serf agent -node="$name" -bind="$ip:$SERF_PORT" -rpc-addr="$ip:$SERF_RPC_PORT" \
            -log-level=warn "${join[@]}" >>"$log" 2>&1 &
    else
        local join=(--join "$FERRY_NET.1")
        (( i == 1 )) && join=(--bootstrap-expect 1)
        mkdir -p "$CLUSTER_DIR/$name"
        "$FERRYD_RUN" --name "$name" --bind "$ip" --data-dir "$CLUSTER_DIR/$name" \
            "${join[@]}" --gossip-profile "$PROFILE" >>"$log" 2>&1 &
    fi
    MEMBER_PIDS[i]=$!
    PIDS+=("$!")
    disown "$!"     # no job report when it is SIGKILLed; bash still reaps it
}

show_logs() {
    local f
    for f in "$CLUSTER_DIR"/*.log; do
        [[ -f "$f" ]] || continue
        warn "last lines of $f:"
        tail -n 8 "$f" >&2 || true
    done
}

cluster_down() { # SIGKILL every member still running (a fresh cluster follows)
    local i
    for i in "${!MEMBER_PIDS[@]}"; do
        stop_pid "${MEMBER_PIDS[i]}" KILL
        forget_pid "${MEMBER_PIDS[i]}"
    done
    MEMBER_PIDS=()
}

cluster_up() {   # cluster_up N OUTDIR: members 1..N-1 running and converged
    local n=$1 out=$2 i all=() r
    for ((i = 1; i <= n; i++)); do ports_free "$(member_ports "$i")"; done
    start_member 1
    "${POLL[@]}" wait --system "$SYS" --nodes "$(nodes_arg 1)" --names "$(names_arg 1)" \
        --interval "$POLL_S" --timeout "$JOIN_TIMEOUT" >"$out/seed-up.json" \
        || { show_logs; die "$LABEL n=$n: member 1 did not answer within ${JOIN_TIMEOUT}s"; }
    for ((i = 2; i < n; i++)); do
        start_member "$i"
        sleep 0.05
    done
    for ((i = 1; i < n; i++)); do all+=("$i"); done
    if ! "${POLL[@]}" wait --system "$SYS" --nodes "$(nodes_arg "${all[@]}")" --names "$(names_arg "${all[@]}")" \
            --interval "$POLL_S" --timeout "$JOIN_TIMEOUT" --pids "$(pids_arg)" >"$out/initial.json"; then
        show_logs
        die "$LABEL n=$n: members 1..$(( n - 1 )) did not converge within ${JOIN_TIMEOUT}s ($(jq -c '{reached, observers}' "$out/initial.json"))"
    fi
    r=$(jq -r .elapsed_s "$out/initial.json")
    log "$LABEL n=$n: members 1..$(( n - 1 )) converged (${r}s after member 1 answered)"
}

wait_quiet() {   # wait_quiet OUTDIR: up to WAIT_IDLE s for other work to use < QUIET_BELOW core
    (( WAIT_IDLE > 0 )) || return 0
    "${POLL[@]}" quiet --below "$QUIET_BELOW" --max-wait "$WAIT_IDLE" >"$1/quiet.json" || return 0
    if [[ "$(jq -r .quiet "$1/quiet.json")" != true ]]; then
        warn "the machine is still busy after ${WAIT_IDLE}s (other work: $(jq -r .other_cores "$1/quiet.json") cores); measuring anyway"
    elif awk -v w="$(jq -r .waited_s "$1/quiet.json")" 'BEGIN { exit !(w > 1.5) }'; then
        log "waited $(jq -r .waited_s "$1/quiet.json")s for other work to calm down"
    fi
}

phase_summary() { # one line from a phase's JSON
    jq -r '"\(.elapsed_s // "TIMEOUT")s (first \(.first_s)s, \(.reached)/\(.observers) members, \(.polls) polls; cores: members \(.cpu.members_cores), poller \(.cpu.poller_cores), other \(.cpu.other_cores))"' "$1"
}

run_cluster() {  # run_cluster LABEL N REP
    LABEL=$1
    local n=$2 rep=$3 out all=() survivors=() remaining=() i t0 victim leaver sig poller
    case "$LABEL" in
        serf) SYS=serf; PROFILE="" ;;
        ferry-lan) SYS=ferry; PROFILE=lan ;;
        ferry-fast) SYS=ferry; PROFILE=fast ;;
    esac
    out=$RESULTS/$LABEL/n$n/rep$rep
    mkdir -p "$out"
    wait_quiet "$out"
    CLUSTER_DIR=$TMP/$LABEL-n$n-rep$rep
    mkdir -p "$CLUSTER_DIR"
    log "$LABEL n=$n rep $rep: starting members 1..$(( n - 1 )) on $(member_ip 1)..$(( n - 1 ))"
    cluster_up "$n" "$out"
    sleep "$SETTLE_S"

    # join: member N
    for ((i = 1; i <= n; i++)); do all+=("$i"); done
    # the poller connects first and is told t0 through a file, so that its own
    # start-up is not timed
    rm -f -- "$CLUSTER_DIR/ready" "$CLUSTER_DIR/go"
    "${POLL[@]}" wait --system "$SYS" --nodes "$(nodes_arg "${all[@]}")" --names "$(names_arg "${all[@]}")" \
        --ready-file "$CLUSTER_DIR/ready" --go-file "$CLUSTER_DIR/go" \
        --interval "$POLL_S" --timeout "$JOIN_TIMEOUT" --pids "$(pids_arg)" >"$out/join.json" &
    poller=$!
    PIDS+=("$poller")
    for ((i = 0; i < 100; i++)); do
        [[ -e "$CLUSTER_DIR/ready" ]] && break
        sleep 0.05
    done
    [[ -e "$CLUSTER_DIR/ready" ]] || warn "$LABEL n=$n: the join poller is not ready after 5 s; going on"
    t0=$(date +%s.%N)
    start_member "$n"
    echo "$t0" >"$CLUSTER_DIR/go.tmp" && mv -- "$CLUSTER_DIR/go.tmp" "$CLUSTER_DIR/go"
    if ! wait "$poller"; then
        forget_pid "$poller"
        show_logs
        warn "$LABEL n=$n: member $n did not join everywhere within ${JOIN_TIMEOUT}s"
        cluster_down
        return 0
    fi
    forget_pid "$poller"
    log "$LABEL n=$n: join of member $n: $(phase_summary "$out/join.json")"
    sleep "$SETTLE_S"

    # failure detection: kill -9 member N
    victim=$n
    for ((i = 1; i < n; i++)); do survivors+=("$i"); done
    "${POLL[@]}" event --system "$SYS" --nodes "$(nodes_arg "${survivors[@]}")" --subject "$(member_name "$victim")" \
        --pid "${MEMBER_PIDS[victim]}" --signal KILL --state down --exit-wait 0 \
        --interval "$POLL_S" --timeout "$EVENT_TIMEOUT" --pids "$(pids_arg)" >"$out/detect.json" \
        || warn "$LABEL n=$n: not every survivor reported member $victim down within ${EVENT_TIMEOUT}s"
    exited "${MEMBER_PIDS[victim]}" 50 || warn "$LABEL: member $victim still there after SIGKILL"
    forget_pid "${MEMBER_PIDS[victim]}"
    unset 'MEMBER_PIDS[victim]'
    log "$LABEL n=$n: kill -9 of member $victim: $(phase_summary "$out/detect.json")"
    sleep "$SETTLE_S"

    # graceful leave: member N-1
    leaver=$(( n - 1 ))
    sig=TERM
    [[ "$SYS" == serf ]] && sig=INT
    for ((i = 1; i < leaver; i++)); do remaining+=("$i"); done
    "${POLL[@]}" event --system "$SYS" --nodes "$(nodes_arg "${remaining[@]}")" --subject "$(member_name "$leaver")" \
        --pid "${MEMBER_PIDS[leaver]}" --signal "$sig" --state left --exit-wait 15 --ignore "$(member_name "$victim")" \
        --interval "$POLL_S" --timeout "$EVENT_TIMEOUT" --pids "$(pids_arg)" >"$out/leave.json" \
        || warn "$LABEL n=$n: not every member reported member $leaver left within ${EVENT_TIMEOUT}s"
    log "$LABEL n=$n: SIG$sig of member $leaver: $(phase_summary "$out/leave.json"); exited after $(jq -r .subject_exited_s "$out/leave.json")s"
    exited "${MEMBER_PIDS[leaver]}" 50 || warn "$LABEL: member $leaver did not exit within 5 s of its leave"
    forget_pid "${MEMBER_PIDS[leaver]}"
    unset 'MEMBER_PIDS[leaver]'
    cluster_down
}

run_idle() {     # IDLE_MEMBERS ferry members, fast profile, idle for IDLE_SECS
    local out=$RESULTS/idle all=() i
    LABEL=ferry-fast-idle; SYS=ferry; PROFILE=fast
    mkdir -p "$out"
    wait_quiet "$out"
    CLUSTER_DIR=$TMP/idle
    mkdir -p "$CLUSTER_DIR"
    log "idle: $IDLE_MEMBERS ferry members (fast profile) for ${IDLE_SECS}s"
    cluster_up $(( IDLE_MEMBERS + 1 )) "$out"   # members 1..IDLE_MEMBERS
    for ((i = 1; i <= IDLE_MEMBERS; i++)); do all+=("$i"); done
    "${POLL[@]}" idle --system ferry --nodes "$(nodes_arg "${all[@]}")" --duration "$IDLE_SECS" \
        --interval 1 --pids "$(pids_arg)" >"$out/idle.json" || warn "idle: the poller failed"
    log "idle: $(jq -c '{ok, non_alive_reports, members_ever_reported, by_state, polls, failed_polls, cpu}' "$out/idle.json")"
    for ((i = 1; i <= IDLE_MEMBERS; i++)); do
        kill -0 "${MEMBER_PIDS[i]}" 2>/dev/null || warn "idle: member $i exited during the idle run"
    done
    cluster_down
}

run_sim() {
    local sizes=$SIM_SIZES
    log "simulation: cargo run -j2 --release -p ferry-gossip --example sim_bench (sizes $sizes, $SIM_SEEDS seeds)"
    cargo run -q -j2 --release -p ferry-gossip --example sim_bench -- \
        --sizes "$sizes" --profiles lan,fast --seeds "$SIM_SEEDS" --step-ms "$SIM_STEP_MS" \
        >"$RESULTS/sim.jsonl" || die "sim_bench failed"
    log "simulation: $(wc -l <"$RESULTS/sim.jsonl") measurements"
    if [[ -n "$SIM_TAIL_SIZES" ]]; then
        # the tail at the sizes of the cluster runs: retransmissions scaled to
        # N, and fixed as ferryd has them today (expected_members = 5)
        log "simulation tail: sizes $SIM_TAIL_SIZES, $SIM_TAIL_SEEDS seeds, expected_members = N and = $SIM_FERRYD_EXPECTED"
        cargo run -q -j2 --release -p ferry-gossip --example sim_bench -- \
            --sizes "$SIM_TAIL_SIZES" --profiles lan,fast --seeds "$SIM_TAIL_SEEDS" --step-ms "$SIM_STEP_MS" \
            >"$RESULTS/sim-tail-scaled.jsonl" || die "sim_bench failed"
        cargo run -q -j2 --release -p ferry-gossip --example sim_bench -- \
            --sizes "$SIM_TAIL_SIZES" --profiles lan,fast --seeds "$SIM_TAIL_SEEDS" --step-ms "$SIM_STEP_MS" \
            --expected-members "$SIM_FERRYD_EXPECTED" >"$RESULTS/sim-tail-fixed.jsonl" || die "sim_bench failed"
    fi
}

# ---------------------------------------------------------------- run
START_S=$SECONDS
log "systems: ${SYSTEMS:-none}; sizes: $SIZES; repeat $REPEAT; poll every ${POLL_MS} ms"
[[ "$SKIP_SIM" == 1 ]] || run_sim
for ((rep = 1; rep <= REPEAT; rep++)); do
    for n in $SIZES; do
        for s in $SYSTEMS; do
            run_cluster "$s" "$n" "$rep"
        done
    done
done
[[ "$SKIP_IDLE" == 1 ]] || run_idle

python3 "$SCRIPT_DIR/gossip_report.py" --results "$RESULTS" \
    --json "$RUN_DIR/gossip.json" --txt "$RUN_DIR/gossip.txt" \
    --meta "stamp=$STAMP" --meta "sizes=$SIZES" --meta "systems=$SYSTEMS" --meta "repeat=$REPEAT" \
    --meta "poll_ms=$POLL_MS" --meta "settle_s=$SETTLE_S" --meta "idle_secs=$([[ "$SKIP_IDLE" == 1 ]] && echo skipped || echo "$IDLE_SECS")" \
    --meta "idle_members=$IDLE_MEMBERS" --meta "sim_sizes=$SIM_SIZES" --meta "sim_seeds=$SIM_SEEDS" \
    --meta "sim_tail=sizes ${SIM_TAIL_SIZES:-none}, $SIM_TAIL_SEEDS seeds, expected_members N and $SIM_FERRYD_EXPECTED" \
    --meta "ferryd=$FERRYD_INFO" --meta "serf=$SERF_INFO" \
    --meta "addresses=serf $SERF_NET.i:$SERF_PORT (rpc :$SERF_RPC_PORT), ferry $FERRY_NET.i:7946-7948" \
    --meta "machine=$(nproc) CPUs, $(uname -r)" \
    --meta "elapsed_s=$(( SECONDS - START_S ))"
log "wrote $RUN_DIR/gossip.json and $RUN_DIR/gossip.txt"
