#!/usr/bin/env python3
"""Hold N idle TCP connections open through a proxy and sample its memory.

Used by ops/bench/l4.sh. Opens --count connections to --host:--port, holds
them for --hold seconds, reads VmRSS of --pid while they are open, checks
that the connections are still alive (the proxy did not close them), counts
how many connections the proxy holds towards the upstream port, then closes
everything. Prints one JSON object on stdout.

With --hello (ops/bench/chaos.sh, to an echo upstream), each connection
first sends one short line and waits for it to come back, so that each has
carried bytes both ways (and a shaped connection has set up its shaping)
before it idles; all lines are sent before any answer is awaited.
"""

import argparse
import json
import socket
import sys
import time


def vm_field(pid, field):
    """Return a /proc/PID/status field (e.g. VmRSS) in KiB, or None."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def established_to(port):
    """Count ESTABLISHED IPv4/IPv6 TCP sockets whose remote port is `port`."""
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path, encoding="ascii") as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if len(cols) < 4 or cols[3] != "01":
                        continue
                    if int(cols[2].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except OSError:
            pass
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--hold", type=float, default=2.0)
    ap.add_argument("--pid", type=int, required=True, help="proxy PID to sample")
    ap.add_argument("--upstream-port", type=int, default=0,
                    help="count proxy->upstream connections to this port")
    ap.add_argument("--hello", action="store_true",
                    help="send a line on each connection and wait for its echo before holding")
    args = ap.parse_args()

    res = {
        "requested": args.count,
        "hold_s": args.hold,
        "rss_before_kib": vm_field(args.pid, "VmRSS"),
        "upstream_established_before": established_to(args.upstream_port) if args.upstream_port else None,
    }
    socks = []
    errors = {}
    t0 = time.monotonic()
    for _ in range(args.count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5.0)
        try:
            s.connect((args.host, args.port))
            socks.append(s)
        except OSError as e:
            errors[type(e).__name__ + ": " + str(e)] = errors.get(type(e).__name__ + ": " + str(e), 0) + 1
            s.close()
    res["opened"] = len(socks)
    res["open_s"] = round(time.monotonic() - t0, 3)
    res["connect_errors"] = errors

    if args.hello:
        t1 = time.monotonic()
        sent = answered = 0
        for s in socks:
            try:
                s.sendall(b"hello\n")
                sent += 1
            except OSError:
                pass
        for s in socks:
            buf = b""
            try:
                while not buf.endswith(b"\n"):
                    chunk = s.recv(64)
                    if not chunk:
                        break
                    buf += chunk
            except OSError:
                pass
            if buf == b"hello\n":
                answered += 1
        res["hello_sent"] = sent
        res["hello_answered"] = answered
        res["hello_s"] = round(time.monotonic() - t1, 3)

    time.sleep(args.hold)

    res["rss_kib"] = vm_field(args.pid, "VmRSS")
    if args.upstream_port:
        res["upstream_established"] = established_to(args.upstream_port)

    # A connection the proxy already closed reads EOF (or an error);
    # a live idle one would block.
    alive = closed = 0
    for s in socks:
        try:
            s.setblocking(False)
            data = s.recv(1, socket.MSG_PEEK)
            if data == b"":
                closed += 1
            else:
                alive += 1  # unexpected data, but the connection is up
        except BlockingIOError:
            alive += 1
        except OSError:
            closed += 1
    res["alive_after_hold"] = alive
    res["closed_by_peer"] = closed

    for s in socks:
        s.close()
    res["rss_after_close_kib"] = None
    time.sleep(0.5)
    res["rss_after_close_kib"] = vm_field(args.pid, "VmRSS")

    json.dump(res, sys.stdout)
    sys.stdout.write("\n")
    ok = res["opened"] == args.count and closed == 0
    if args.hello:
        ok = ok and res["hello_answered"] == res["opened"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
