#!/usr/bin/env bash
# ops/bench/uring-proto/ab.sh: ferryd against a minimal io_uring proxy, the
# same proxy on epoll, and HAProxy, in interleaved rounds of wrk against one
# nginx. Prints each round, then per setup the medians of requests/s, p99,
# proxy CPU ticks per 1,000 requests and proxy CPU / nginx CPU (the ratio
# that moves least with the machine's noise). Loopback only.
#
#   ops/bench/uring-proto/ab.sh                 # 4 rounds, 8 s, both loads
#   ROUNDS=6 DURATION=10 LOADS=close ops/bench/uring-proto/ab.sh
#   SETUPS="ferryd epoll" LOADS=ka ops/bench/uring-proto/ab.sh
#
# Needs nginx, haproxy and wrk (installs them with apt if missing).
set -euo pipefail

ROUNDS=${ROUNDS:-4}
DURATION=${DURATION:-8}
LOADS=${LOADS:-"ka close"}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
TMP=$(mktemp -d /tmp/ferry-uring-ab.XXXXXX)
# Below the ephemeral range (32768-60999 by default): under churn, client
# sockets cycle through that range and can hold a port a proxy is about to bind.
UP=19180 FERRY=19181 HAP=19182 PROTO=19183 ADMIN=19948
FERRY_IPERF=19184 HAP_IPERF=19185 UP_IPERF=19186
PIDS=()

die() { echo "ab.sh: $*" >&2; exit 1; }
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

[[ "$ROUNDS" =~ ^[1-9][0-9]?$ ]] || die "ROUNDS must be 1-99, got '$ROUNDS'"
[[ "$DURATION" =~ ^[1-9][0-9]?$ ]] || die "DURATION must be 1-99 seconds, got '$DURATION'"
for load in $LOADS; do [[ "$load" == ka || "$load" == close ]] || die "LOADS: unknown load '$load' (ka, close)"; done
for tool in nginx haproxy wrk; do
    command -v "$tool" >/dev/null || { apt-get install -y -q "$tool" >/dev/null || die "cannot install $tool"; }
done
for port in $UP $FERRY $HAP $PROTO $ADMIN $FERRY_IPERF $HAP_IPERF; do
    ! ss -Hltn "sport = :$port" | grep -q . || die "port $port is already in use"
done

echo "building ferryd and uring-proto (release)..."
(cd "$ROOT" && cargo build -q -j2 --release -p ferry-node)
CARGO_TARGET_DIR="$ROOT/target" cargo build -q -j2 --release --manifest-path "$ROOT/ops/bench/uring-proto/Cargo.toml"
FERRYD=$ROOT/target/release/ferryd
PROTO_BIN=$ROOT/target/release/uring-proto

wait_port() {   # wait_port PORT: up to 5 s
    local i
    for ((i = 0; i < 50; i++)); do
        ss -Hltn "sport = :$1" | grep -q . && return 0
        sleep 0.1
    done
    echo "ab.sh: nothing listens on :$1 after 5 s" >&2
    return 1
}
wait_free() {   # wait_free PORT: up to 5 s, after a proxy stopped
    local i
    for ((i = 0; i < 50; i++)); do
        ss -Hltn "sport = :$1" | grep -q . || return 0
        sleep 0.1
    done
    die "port :$1 still in use 5 s after its proxy stopped"
}

mkdir -p "$TMP/nginx"
user=""; (( EUID == 0 )) && user="user root;"
sed -e "s|@DIR@|$TMP/nginx|g" -e "s|@PORT@|$UP|g" -e "s|@WORKERS@|1|g" -e "s|@USER@|$user|g" \
    "$ROOT/ops/bench/nginx.conf.in" >"$TMP/nginx/nginx.conf"
nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' >/dev/null 2>&1 &
PIDS+=($!)
wait_port $UP || die "nginx did not start"
NGINX_WORKER=""
for ((i = 0; i < 50; i++)); do
    NGINX_WORKER=$(pgrep -P "${PIDS[0]}" | head -1 || true)
    [[ -n "$NGINX_WORKER" ]] && break
    sleep 0.1
done
[[ -n "$NGINX_WORKER" ]] || die "no nginx worker process"

# l4.sh's ferryd config and HAProxy template, on this script's ports (the iperf
# routes are bound but unused).
sed -e "s|\"127.0.0.1:17948\"|\"127.0.0.1:$ADMIN\"|" -e "s|\"127.0.0.1:18080\"|\"127.0.0.1:$FERRY\"|" \
    -e "s|\"127.0.0.1:8080\"|\"127.0.0.1:$UP\"|" -e "s|\"127.0.0.1:15201\"|\"127.0.0.1:$FERRY_IPERF\"|" \
    -e "s|\"127.0.0.1:5201\"|\"127.0.0.1:$UP_IPERF\"|" "$ROOT/ops/bench/ferryd.toml" >"$TMP/ferryd.toml"
"$FERRYD" --check-config "$TMP/ferryd.toml" >/dev/null || die "ferryd config $TMP/ferryd.toml is invalid"
! grep -qE '"127\.0\.0\.1:(17948|18080|8080|15201|5201)"' "$TMP/ferryd.toml" \
    || die "ops/bench/ferryd.toml has addresses this script does not rewrite"
sed -e "s|@MAXCONN@|4000|g" -e "s|@MAXPIPES@|400|g" -e "s|@NBTHREAD@|$(nproc)|g" -e "/^@SPLICE@$/d" -e "s|@IPERF_PORT@|$HAP_IPERF|g" \
    -e "s|@HTTP_PORT@|$HAP|g" -e "s|@UP_IPERF_PORT@|$UP_IPERF|g" -e "s|@UP_HTTP_PORT@|$UP|g" \
    "$ROOT/ops/bench/haproxy.cfg.in" >"$TMP/haproxy.cfg"
haproxy -q -c -f "$TMP/haproxy.cfg" >/dev/null || die "haproxy config $TMP/haproxy.cfg is invalid"

start() {   # start SETUP: sets PID and PORT
    case $1 in
        ferryd) "$FERRYD" --config "$TMP/ferryd.toml" >"$TMP/ferryd.log" 2>&1 & PORT=$FERRY ;;
        haproxy) haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 & PORT=$HAP ;;
        uring | epoll) "$PROTO_BIN" "$1" "127.0.0.1:$PROTO" "127.0.0.1:$UP" >"$TMP/proto.log" 2>&1 & PORT=$PROTO ;;
    esac
    PID=$!
    PIDS+=("$PID")
    wait_port "$PORT" || { tail -5 "$TMP"/*.log >&2; die "$1 did not start"; }
}
ticks() { local f; read -r -a f <"/proc/$1/stat"; echo $((f[13] + f[14])); }

read -r -a SETUPS <<<"${SETUPS:-ferryd uring epoll haproxy}"
for s in "${SETUPS[@]}"; do
    case $s in ferryd | uring | epoll | haproxy) ;; *) die "SETUPS: unknown setup '$s' (ferryd, uring, epoll, haproxy)" ;; esac
done
for load in $LOADS; do
    hdr=(); [[ "$load" == close ]] && hdr=(-H "Connection: close")
    echo "== $load: $ROUNDS rounds of ${DURATION}s, wrk -t2 -c50"
    : >"$TMP/$load.rows"
    for ((r = 0; r < ROUNDS; r++)); do
        for ((k = 0; k < ${#SETUPS[@]}; k++)); do
            s=${SETUPS[$(((k + r) % ${#SETUPS[@]}))]}
            start "$s"
            wrk -t2 -c50 -d1s "${hdr[@]}" "http://127.0.0.1:$PORT/" >/dev/null 2>&1
            c0=$(ticks "$PID"); n0=$(ticks "$NGINX_WORKER")
            out=$(wrk -t2 -c50 -d"${DURATION}s" --latency "${hdr[@]}" "http://127.0.0.1:$PORT/" 2>&1)
            c1=$(ticks "$PID"); n1=$(ticks "$NGINX_WORKER")
            kill "$PID"; wait "$PID" 2>/dev/null || true
            wait_free "$PORT"
            echo "$out" | awk -v s="$s" -v c=$((c1 - c0)) -v n=$((n1 - n0)) '
                /requests in/ { q = $1 } /Requests\/sec/ { r = $2 } $1 == "99%" { p = $2 }
                END { if (p ~ /us$/) p = p / 1000; else if (p ~ /ms$/) p = p + 0; else p = p * 1000
                      printf "%-8s %8.0f req/s  p99 %6.2f ms  proxy ticks/1k %5.2f  proxy/nginx %.3f\n",
                             s, r, p, c * 1000 / q, (n > 0 ? c / n : 0) }' | tee -a "$TMP/$load.rows"
        done
    done
    echo "-- $load, medians over $ROUNDS rounds"
    sort -k1,1 "$TMP/$load.rows" | awk '
        function median(a, n,   i, j, t) {
            for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
        function flush() { if (n) printf "%-8s %8.0f req/s  p99 %6.2f ms  proxy ticks/1k %5.2f  proxy/nginx %.3f\n",
                                       s, median(R, n), median(P, n), median(T, n), median(X, n); n = 0 }
        $1 != s { flush(); s = $1 }
        { n++; R[n] = $2; P[n] = $5; T[n] = $9; X[n] = $11 }
        END { flush() }'
done
