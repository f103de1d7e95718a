#!/usr/bin/env python3
"""Membership poller for ops/bench/gossip.sh (stdlib only).

Asks every member of a Serf or ferry cluster for its member list, over one
persistent connection each, every --interval seconds, and times a
membership change as every member sees it:

  serf   Serf's RPC protocol (msgpack over TCP, handshake then "members");
         status alive | leaving | left | failed ("failed" is reported as down)
  ferry  GET /v1/members on the admin API (HTTP/1.1 keep-alive); state
         alive | suspect | down | left

Commands (each prints one JSON object on stdout):

  wait   until every member lists every name of --names alive. The clock
         starts at --t0 (unix seconds), else now; with --ready-file and
         --go-file the poller connects first, writes the ready file, and
         takes t0 from the go file, written once the timed member started
         (so the poller's own start-up is not timed).
  event  sends --signal to --pid itself (so that the signal and the
         observations share one clock), then polls until every observer
         reports --subject in --state (down or left). Other members seen
         suspect or down meanwhile are counted as false suspicions.
  quiet  waits (bounded) until the machine's busy CPU is below --below cores.
  idle   polls for --duration seconds and counts every member that any
         member reports anything but alive (suspect, down, left, leaving,
         or missing).

Every loop is bounded by --timeout (or --duration) and by a poll count.
Exit status: 0 when the condition was met, 3 on timeout (the JSON still
says how far it got), 2 on bad arguments.
"""

import argparse
import http.client
import json
import os
import signal
import socket
import struct
import sys
import time


# ---------------------------------------------------------------- msgpack (the subset Serf's RPC uses)

def mp_pack(obj, out):
    if obj is None:
        out.append(0xC0)
    elif obj is True:
        out.append(0xC3)
    elif obj is False:
        out.append(0xC2)
    elif isinstance(obj, int):
        if 0 <= obj < 128:
            out.append(obj)
        elif 0 <= obj < 2**32:
            out += b"\xce" + struct.pack(">I", obj)
        elif 0 <= obj < 2**64:
            out += b"\xcf" + struct.pack(">Q", obj)
        else:
            out += b"\xd3" + struct.pack(">q", obj)
    elif isinstance(obj, str):
        raw = obj.encode()
        n = len(raw)
        if n < 32:
            out.append(0xA0 | n)
        elif n < 256:
            out += bytes([0xD9, n])
        else:
            out += b"\xda" + struct.pack(">H", n)
        out += raw
    elif isinstance(obj, dict):
        n = len(obj)
        if n < 16:
            out.append(0x80 | n)
        else:
            out += b"\xde" + struct.pack(">H", n)
        for k, v in obj.items():
            mp_pack(k, out)
            mp_pack(v, out)
    elif isinstance(obj, (list, tuple)):
        n = len(obj)
        if n < 16:
            out.append(0x90 | n)
        else:
            out += b"\xdc" + struct.pack(">H", n)
        for v in obj:
            mp_pack(v, out)
    else:
        raise TypeError(f"cannot pack {type(obj)}")
    return out


class MpReader:
    """Decodes msgpack objects from a socket's buffered reader."""

    def __init__(self, f):
        self.f = f

    def _read(self, n):
        data = self.f.read(n)
        if data is None or len(data) != n:
            raise ConnectionError("connection closed mid-message")
        return data

    def _u(self, fmt, n):
        return struct.unpack(fmt, self._read(n))[0]

    def _str(self, n):
        return self._read(n).decode("utf-8", "replace")

    def read(self):
        b = self._read(1)[0]
        if b <= 0x7F:
            return b
        if b >= 0xE0:
            return b - 0x100
        if 0x80 <= b <= 0x8F:
            return self._map(b & 0x0F)
        if 0x90 <= b <= 0x9F:
            return [self.read() for _ in range(b & 0x0F)]
        if 0xA0 <= b <= 0xBF:
            return self._str(b & 0x1F)
        simple = {
            0xC0: lambda: None, 0xC2: lambda: False, 0xC3: lambda: True,
            0xC4: lambda: self._read(self._u(">B", 1)),
            0xC5: lambda: self._read(self._u(">H", 2)),
            0xC6: lambda: self._read(self._u(">I", 4)),
            0xCA: lambda: self._u(">f", 4), 0xCB: lambda: self._u(">d", 8),
            0xCC: lambda: self._u(">B", 1), 0xCD: lambda: self._u(">H", 2),
            0xCE: lambda: self._u(">I", 4), 0xCF: lambda: self._u(">Q", 8),
            0xD0: lambda: self._u(">b", 1), 0xD1: lambda: self._u(">h", 2),
            0xD2: lambda: self._u(">i", 4), 0xD3: lambda: self._u(">q", 8),
            0xD9: lambda: self._str(self._u(">B", 1)),
            0xDA: lambda: self._str(self._u(">H", 2)),
            0xDB: lambda: self._str(self._u(">I", 4)),
            0xDC: lambda: [self.read() for _ in range(self._u(">H", 2))],
            0xDD: lambda: [self.read() for _ in range(self._u(">I", 4))],
            0xDE: lambda: self._map(self._u(">H", 2)),
            0xDF: lambda: self._map(self._u(">I", 4)),
            # ext types: skip the type byte, keep the data
            0xD4: lambda: self._read(2)[1:], 0xD5: lambda: self._read(3)[1:],
            0xD6: lambda: self._read(5)[1:], 0xD7: lambda: self._read(9)[1:],
            0xD8: lambda: self._read(17)[1:],
            0xC7: lambda: self._read(self._u(">B", 1) + 1)[1:],
            0xC8: lambda: self._read(self._u(">H", 2) + 1)[1:],
            0xC9: lambda: self._read(self._u(">I", 4) + 1)[1:],
        }
        fn = simple.get(b)
        if fn is None:
            raise ValueError(f"msgpack type 0x{b:02x} not supported")
        return fn()

    def _map(self, n):
        out = {}
        for _ in range(n):
            k = self.read()
            out[k] = self.read()
        return out


# ---------------------------------------------------------------- clients

class SerfClient:
    """One RPC connection to a Serf agent."""

    def __init__(self, addr, timeout):
        self.addr = addr
        self.timeout = timeout
        self.sock = None
        self.reader = None
        self.seq = 0

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.reader = None

    def _call(self, command, body=None, want_body=True):
        header = {"Command": command, "Seq": self.seq}
        self.seq += 1
        buf = mp_pack(header, bytearray())
        if body is not None:
            mp_pack(body, buf)
        self.sock.sendall(bytes(buf))
        resp = self.reader.read()
        if not isinstance(resp, dict):
            raise ValueError(f"bad RPC header {resp!r}")
        if resp.get("Error"):
            raise RuntimeError(f"serf RPC {command}: {resp['Error']}")
        return self.reader.read() if want_body else None

    def _connect(self):
        host, port = self.addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = MpReader(self.sock.makefile("rb"))
        self._call("handshake", {"Version": 1}, want_body=False)

    def members(self):
        """{name: state} as this agent sees it; state normalised."""
        try:
            if self.sock is None:
                self._connect()
            body = self._call("members")
        except (OSError, ValueError, RuntimeError, ConnectionError):
            self.close()
            return None
        out = {}
        for m in body.get("Members", []) if isinstance(body, dict) else []:
            status = m.get("Status", "")
            out[m.get("Name", "")] = "down" if status == "failed" else status
        return out


class FerryClient:
    """One keep-alive HTTP connection to a ferryd admin API."""

    def __init__(self, addr, timeout):
        self.host, port = addr.rsplit(":", 1)
        self.port = int(port)
        self.timeout = timeout
        self.conn = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def members(self):
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.conn.request("GET", "/v1/members")
            resp = self.conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                return None
            body = json.loads(data)
        except (OSError, http.client.HTTPException, ValueError):
            self.close()
            return None
        if isinstance(body, dict):   # tolerate {"members": [...]}
            body = body.get("members", [])
        out = {}
        for m in body if isinstance(body, list) else []:
            if isinstance(m, dict):
                out[str(m.get("name", m.get("id", "")))] = str(m.get("state", ""))
        return out


def make_clients(system, nodes, timeout):
    """--nodes name=host:port,... -> [(name, client)]"""
    out = []
    for item in nodes.split(","):
        name, addr = item.split("=", 1)
        cls = SerfClient if system == "serf" else FerryClient
        out.append((name, cls(addr, timeout)))
    return out


# ---------------------------------------------------------------- CPU accounting

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _busy_jiffies():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - (v[4] if len(v) > 4 else 0)   # minus idle and iowait


def _pid_jiffies(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])   # utime + stime
    except (OSError, IndexError, ValueError):
        return None


class CpuMeter:
    """Cores used during a command: the members (--pids), this poller, and
    everything else on the machine ("other": someone else's work)."""

    def __init__(self, pids):
        self.pids = [int(p) for p in pids.split(",") if p] if pids else []
        self.t = time.time()
        self.busy = _busy_jiffies()
        self.start = {p: _pid_jiffies(p) for p in self.pids}
        self.self_cpu = time.process_time()

    def result(self):
        secs = max(time.time() - self.t, 1e-6)
        busy = (_busy_jiffies() - self.busy) / CLK_TCK
        members = 0.0
        for p, j0 in self.start.items():
            j1 = _pid_jiffies(p)
            if j0 is not None and j1 is not None:
                members += (j1 - j0) / CLK_TCK
        poller = time.process_time() - self.self_cpu
        return dict(members_cores=round(members / secs, 3), poller_cores=round(poller / secs, 3),
                    other_cores=round(max(0.0, busy - members - poller) / secs, 3),
                    machine_cores=round(busy / secs, 3))


# ---------------------------------------------------------------- commands

def poll_until(clients, satisfied, t0, timeout, interval, on_view=None):
    """Polls every client each `interval` until satisfied(name, view) holds for
    all of them (each once, the first time); returns (first_ok, polls, failed)."""
    first_ok = {}
    polls = 0
    failed = 0
    deadline = t0 + timeout
    max_polls = int(timeout / interval) + 10
    while polls < max_polls:
        cycle = time.time()
        polls += 1
        for name, client in clients:
            view = client.members()
            now = time.time()
            if view is None:
                failed += 1
                continue
            if on_view is not None:
                on_view(name, view, now)
            if name not in first_ok and satisfied(name, view):
                first_ok[name] = now - t0
        if len(first_ok) == len(clients) or time.time() >= deadline:
            break
        time.sleep(max(0.0, cycle + interval - time.time()))
    return first_ok, polls, failed


def result(ok, first_ok, clients, polls, failed, **extra):
    per = {name: round(first_ok[name], 4) if name in first_ok else None for name, _ in clients}
    return dict(ok=ok, elapsed_s=round(max(first_ok.values()), 4) if ok else None,
                first_s=round(min(first_ok.values()), 4) if first_ok else None,
                per_observer_s=per, observers=len(clients), reached=len(first_ok),
                polls=polls, failed_polls=failed, **extra)


def cmd_wait(args):
    clients = make_clients(args.system, args.nodes, args.request_timeout)
    names = set(args.names.split(","))
    if args.go_file:
        # connect to the members already up, say so, then wait for the go file
        # (written right after the member being timed was started; it holds t0)
        for _, client in clients:
            client.members()
        with open(args.ready_file, "w") as f:
            f.write("ready\n")
        deadline = time.time() + args.timeout
        t0 = None
        while time.time() < deadline:
            try:
                with open(args.go_file) as f:
                    t0 = float(f.read().strip())
                break
            except (OSError, ValueError):
                time.sleep(0.002)
        if t0 is None:
            print(json.dumps(dict(ok=False, error="no go file")))
            return 3
    else:
        t0 = args.t0 if args.t0 else time.time()
    cpu = CpuMeter(args.pids)

    def satisfied(self_name, view):
        view = dict(view)
        view.setdefault(self_name, "alive")     # a node that does not list itself
        return all(view.get(n) == "alive" for n in names)

    first_ok, polls, failed = poll_until(clients, satisfied, t0, args.timeout, args.interval)
    ok = len(first_ok) == len(clients)
    print(json.dumps(result(ok, first_ok, clients, polls, failed, expect=len(names), cpu=cpu.result())))
    return 0 if ok else 3


SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "TERM": signal.SIGTERM}


def cmd_event(args):
    cpu = CpuMeter(args.pids)
    clients = make_clients(args.system, args.nodes, args.request_timeout)
    # open every connection before the clock starts
    for _, client in clients:
        client.members()
    suspicions = {}     # (observer, other member) -> first state other than alive
    ignore = set(args.ignore.split(",")) if args.ignore else set()

    exit_seen = []

    def subject_gone():
        # a zombie still answers kill -0, so read /proc: reaped or zombie is gone
        try:
            with open(f"/proc/{args.pid}/stat") as f:
                gone = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            gone = True
        if gone and not exit_seen:
            exit_seen.append(time.time())
        return gone

    last_state = {}     # observer -> the subject's state in its last answer

    def on_view(observer, view, now):
        last_state[observer] = view.get(args.subject, "missing")
        if not exit_seen:
            subject_gone()
        for member, state in view.items():
            if member not in ignore and member != args.subject and member != observer \
                    and state in ("suspect", "down"):
                suspicions.setdefault(f"{observer}->{member}", f"{state}@{now - t0:.3f}s")

    t0 = time.time()
    os.kill(args.pid, SIGNALS[args.signal])
    first_ok, polls, failed = poll_until(
        clients, lambda _n, view: view.get(args.subject) == args.state,
        t0, args.timeout, args.interval, on_view)
    ok = len(first_ok) == len(clients)
    cpu_result = cpu.result()
    # did the subject's process go away? (watched during the polls above;
    # else wait up to --exit-wait more)
    for _ in range(int(args.exit_wait / 0.05) + 1):
        if exit_seen or subject_gone():
            break
        time.sleep(0.05)
    gone_after = exit_seen[0] - t0 if exit_seen else None
    print(json.dumps(result(ok, first_ok, clients, polls, failed, subject=args.subject,
                            signal=args.signal, state=args.state, false_suspicions=suspicions,
                            last_state_of_stragglers={o: st for o, st in last_state.items() if o not in first_ok},
                            subject_exited_s=round(gone_after, 3) if gone_after is not None else None,
                            cpu=cpu_result)))
    return 0 if ok else 3


def cmd_idle(args):
    cpu = CpuMeter(args.pids)
    clients = make_clients(args.system, args.nodes, args.request_timeout)
    names = [name for name, _ in clients]
    t0 = time.time()
    events = []          # (t, observer, member, state)
    bad_now = set()      # (observer, member) currently not alive
    polls = 0
    failed = 0
    max_polls = int(args.duration / args.interval) + 10
    while polls < max_polls and time.time() - t0 < args.duration:
        cycle = time.time()
        polls += 1
        for observer, client in clients:
            view = client.members()
            now = time.time() - t0
            if view is None:
                failed += 1
                continue
            for member in names:
                if member == observer:
                    continue
                state = view.get(member, "missing")
                key = (observer, member)
                if state != "alive":
                    if key not in bad_now:
                        bad_now.add(key)
                        events.append((round(now, 3), observer, member, state))
                else:
                    bad_now.discard(key)
        time.sleep(max(0.0, cycle + args.interval - time.time()))
    out = dict(ok=not events, duration_s=round(time.time() - t0, 1), polls=polls, failed_polls=failed,
               members=len(names), non_alive_reports=len(events),
               members_ever_reported=sorted({m for _, _, m, _ in events}),
               by_state={s: sum(1 for e in events if e[3] == s) for s in sorted({e[3] for e in events})},
               first_events=[list(e) for e in events[:20]], cpu=cpu.result())
    print(json.dumps(out))
    return 0


def cmd_quiet(args):
    """Waits (up to --max-wait s) for the machine to be quiet: busy CPU over
    1 s below --below cores. Run while none of our members runs, so that all
    the busy CPU is someone else's."""
    t0 = time.time()
    samples = []
    while True:
        b0, s0 = _busy_jiffies(), time.time()
        time.sleep(1.0)
        cores = (_busy_jiffies() - b0) / CLK_TCK / max(time.time() - s0, 1e-6)
        samples.append(round(cores, 3))
        if cores < args.below or time.time() - t0 >= args.max_wait or len(samples) > args.max_wait + 5:
            break
    print(json.dumps(dict(quiet=samples[-1] < args.below, waited_s=round(time.time() - t0, 1),
                          other_cores=samples[-1], samples=samples[-10:])))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quiet")
    q.add_argument("--below", type=float, default=0.3)
    q.add_argument("--max-wait", type=float, default=60)
    for name in ("wait", "event", "idle"):
        s = sub.add_parser(name)
        s.add_argument("--system", choices=("serf", "ferry"), required=True)
        s.add_argument("--nodes", required=True, help="name=host:port,... (RPC or admin address)")
        s.add_argument("--interval", type=float, default=0.05)
        s.add_argument("--request-timeout", type=float, default=1.0)
        s.add_argument("--pids", default="", help="member PIDs, comma-separated, for the CPU figures")
        if name == "wait":
            s.add_argument("--names", required=True, help="names that must be alive everywhere")
            s.add_argument("--t0", type=float, default=0.0)
            s.add_argument("--ready-file", help="with --go-file: written once connected")
            s.add_argument("--go-file", help="wait for this file; it holds t0 (unix seconds)")
            s.add_argument("--timeout", type=float, default=60.0)
        elif name == "event":
            s.add_argument("--subject", required=True)
            s.add_argument("--pid", type=int, required=True)
            s.add_argument("--signal", choices=sorted(SIGNALS), required=True)
            s.add_argument("--state", choices=("down", "left"), required=True)
            s.add_argument("--timeout", type=float, default=60.0)
            s.add_argument("--exit-wait", type=float, default=15.0)
            s.add_argument("--ignore", default="", help="members known to be gone: not false suspicions")
        else:
            s.add_argument("--duration", type=float, required=True)
    args = p.parse_args()
    if args.cmd == "quiet":
        return cmd_quiet(args)
    if args.interval <= 0:
        p.error("--interval must be > 0")
    return {"wait": cmd_wait, "event": cmd_event, "idle": cmd_idle}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
