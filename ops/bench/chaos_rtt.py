#!/usr/bin/env python3
"""Echo backend and round-trip-time client of ops/bench/chaos.sh.

  chaos_rtt.py echo --port P
      A TCP echo server on 127.0.0.1:P (every byte sent back at once, with
      TCP_NODELAY) until SIGTERM.

  chaos_rtt.py rtt --shaped PORT --plain PORT [--rate 1000] [--conns 4]
                   [--duration 10] [--warmup 1]
      Sends small requests (one 32-byte line each) at --rate requests/s in
      total, open loop, alternately to the two ports (so each gets half),
      spread over --conns connections per port, for --warmup + --duration
      seconds; the warm-up's requests are not counted. Each request's round
      trip is the time from its send to the end of its echoed line. A
      request without an answer 5 s after the last send counts as lost.
      Prints one JSON object: per port the percentiles, and the added round
      trip of the shaped port (shaped minus plain) at the median and p99.

Bounded: at most rate x (warmup + duration) requests, and the whole run
ends within warmup + duration + 6 s.
"""

import argparse
import asyncio
import json
import signal
import socket
import sys
import time


# ---------------------------------------------------------------- echo
class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        self.t.write(data)


async def echo_main(port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", port, backlog=4096, reuse_address=True)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    async with server:
        await stop


# ---------------------------------------------------------------- rtt
def pct(sorted_vals, p):
    """Nearest-rank percentile of an ascending list (None if empty)."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def summary(rtts_ms, sent, lost):
    v = sorted(rtts_ms)
    out = {"sent": sent, "answered": len(v), "lost": lost}
    for name, p in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99), ("p999_ms", 99.9)):
        out[name] = pct(v, p)
    out["min_ms"] = v[0] if v else None
    out["max_ms"] = v[-1] if v else None
    out["mean_ms"] = sum(v) / len(v) if v else None
    return out


class Conn:
    def __init__(self, reader, writer):
        self.r, self.w = reader, writer
        self.sent = {}  # seq -> send time (ns)
        self.rtts = []  # (seq, rtt ns)

    async def read_loop(self):
        try:
            while True:
                line = await self.r.readline()
                if not line:
                    return
                now = time.perf_counter_ns()
                seq = int(line.split(b" ", 1)[0])
                t = self.sent.pop(seq, None)
                if t is not None:
                    self.rtts.append((seq, now - t))
        except (ConnectionError, ValueError, asyncio.CancelledError):
            return


async def open_conns(port, n):
    conns = []
    for _ in range(n):
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 3)
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append(Conn(r, w))
    return conns


async def rtt_main(a):
    ports = {"shaped": a.shaped, "plain": a.plain}
    conns = {k: await open_conns(p, a.conns) for k, p in ports.items()}
    readers = [asyncio.ensure_future(c.read_loop()) for cs in conns.values() for c in cs]
    total = int(a.rate * (a.warmup + a.duration))
    warm = int(a.rate * a.warmup)
    interval_ns = int(1e9 / a.rate)
    sent = {"shaped": 0, "plain": 0}
    lags = []
    t0 = time.perf_counter_ns()
    i = 0
    keys = ("shaped", "plain")
    while i < total:
        now = time.perf_counter_ns()
        due = t0 + i * interval_ns
        if now < due:
            await asyncio.sleep((due - now) / 1e9)
            continue
        # open loop: every request whose time has come goes now
        while i < total and t0 + i * interval_ns <= now:
            k = keys[i % 2]
            c = conns[k][(i // 2) % a.conns]
            t = time.perf_counter_ns()
            c.sent[i] = t
            c.w.write(b"%d %s\n" % (i, b"x" * (30 - len(str(i)))))
            if i >= warm:
                sent[k] += 1
                lags.append((t - (t0 + i * interval_ns)) / 1e6)
            i += 1
        await asyncio.sleep(0)
    end_send = time.perf_counter_ns()
    # wait for the answers (at most 5 s)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(c.sent for cs in conns.values() for c in cs):
        await asyncio.sleep(0.01)
    for r in readers:
        r.cancel()
    out = {"rate": a.rate, "conns_per_port": a.conns, "duration_s": a.duration, "warmup_s": a.warmup,
           "send_span_s": (end_send - t0) / 1e9}
    for k in keys:
        rtts = [ns / 1e6 for cs in [conns[k]] for c in cs for seq, ns in c.rtts if seq >= warm]
        lost = sum(1 for c in conns[k] for seq in c.sent if seq >= warm)
        out[k] = summary(rtts, sent[k], lost)
        out[k]["port"] = ports[k]
    for cs in conns.values():
        for c in cs:
            c.w.close()
    lags.sort()
    out["send_lag_ms"] = {"p50": pct(lags, 50), "p99": pct(lags, 99), "max": lags[-1] if lags else None}
    s, p = out["shaped"], out["plain"]
    if s["p50_ms"] is not None and p["p50_ms"] is not None:
        out["added_p50_ms"] = s["p50_ms"] - p["p50_ms"]
        out["added_p99_ms"] = s["p99_ms"] - p["p99_ms"]
        out["shaped_p99_minus_plain_p50_ms"] = s["p99_ms"] - p["p50_ms"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("echo")
    e.add_argument("--port", type=int, required=True)
    r = sub.add_parser("rtt")
    r.add_argument("--shaped", type=int, required=True)
    r.add_argument("--plain", type=int, required=True)
    r.add_argument("--rate", type=float, default=1000.0)
    r.add_argument("--conns", type=int, default=4)
    r.add_argument("--duration", type=float, default=10.0)
    r.add_argument("--warmup", type=float, default=1.0)
    a = ap.parse_args()
    if a.cmd == "echo":
        asyncio.run(echo_main(a.port))
        return 0
    if a.rate <= 0 or a.rate > 20000 or a.duration <= 0 or a.duration > 600 or a.conns < 1 or a.conns > 64:
        print("chaos_rtt.py: rate in (0, 20000], duration in (0, 600], conns in [1, 64]", file=sys.stderr)
        return 2
    out = asyncio.run(rtt_main(a))
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    ok = all(out[k]["answered"] > 0 and out[k]["lost"] == 0 for k in ("shaped", "plain"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
