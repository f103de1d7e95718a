#!/usr/bin/env python3
"""ops/bench/config_load.py — the client side of ops/bench/config.sh.

One HTTP/1.1 JSON client over keep-alive connections (asyncio, raw sockets,
no third-party module) that speaks to ferry's admin API and to etcd's v3 JSON
gateway the same way, so both systems are measured with the same client and
method. Subcommands:

  setup    create the benchmark route (ferry) or key (etcd)
  load     closed-loop load: C connections, each sending its next request as
           soon as the previous answer arrived, until COUNT operations or
           MAX_SECONDS; prints JSON (ops/s, p50/p90/p99/max, statuses)
  wrk      the same load from wrk (config_wrk.lua) for DURATION seconds;
           prints the same JSON fields
  steady   writes every INTERVAL to one node for DURATION seconds (used while
           a killed node restarts and rejoins): longest span without a
           successful write, slowest request
  idle     wait (bounded) until other processes use < THRESHOLD cores
  leader   print the index (1-based, in --nodes order) of the leader, or 0
  wait     wait until every node in --nodes reports the same non-null leader
           (and, with --caught-up, the same applied index)
  probe    the unavailability window: writes every INTERVAL through a
           follower, each with a TIMEOUT, SIGKILLs the leader's PID, and
           records from the kill to the first success of a write sent after
           the kill; prints JSON

Operations (--op):
  ferry write   PUT /v1/routes/ROUTE/backends/a/weight  {"weight": K}
  ferry write-route  PUT /v1/routes/ROUTE  (the whole route, ~110 bytes)
  ferry read    GET /v1/routes/ROUTE  (linearizable: the default consistency)
  etcd  write   POST /v3/kv/put   {"key": b64, "value": b64(K)}
  etcd  read    POST /v3/kv/range {"key": b64}  (linearizable: serializable
                is not set)
K cycles through 1..100 so that every write changes the stored value.

--nodes is a comma-separated list of host:port[=pid] admin (ferry) or client
(etcd) endpoints, in node order.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time

# The route listens on each node's own address (ferry refuses port 0: clients
# must know the port); 17946 is next to the script's admin and cluster ports.
ROUTE_BODY = '{{"name":"{name}","listen":":17946","backends":[{{"id":"a","addr":"127.0.0.1:9001","weight":{w}}}]}}'
ETCD_PREFIX = "/ferry-bench/routes/"


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


class HttpError(Exception):
    """A connection-level failure: refused, reset, closed, malformed."""


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        try:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        except OSError as e:
            raise HttpError(f"connect: {e.__class__.__name__}: {e}") from None
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001 - closing a broken socket
                pass
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes | None) -> tuple[int, dict, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        try:
            await self.writer.drain()
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            self.close()
            raise HttpError(f"{e.__class__.__name__}: {e}") from None
        lines = raw.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            self.close()
            raise HttpError(f"bad status line {lines[0]!r}") from None
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        try:
            if "content-length" in headers:
                data = await self.reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        await self.reader.readuntil(b"\r\n")
                        break
                    data += await self.reader.readexactly(size)
                    await self.reader.readexactly(2)
            else:
                data = await self.reader.read()
                self.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            self.close()
            raise HttpError(f"body: {e.__class__.__name__}: {e}") from None
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, data


class Ops:
    """Builds the requests of one system and operation."""

    def __init__(self, system: str, op: str, route: str):
        self.system, self.op, self.route = system, op, route
        self.n = 0
        key = ETCD_PREFIX + route + "/backends/a/weight"
        if system == "ferry":
            if op == "write":
                self.path = f"/v1/routes/{route}/backends/a/weight"
                self.bodies = [json.dumps({"weight": k}).encode() for k in range(1, 101)]
                self.method = "PUT"
            elif op == "write-route":
                self.path = f"/v1/routes/{route}"
                self.bodies = [ROUTE_BODY.format(name=route, w=k).encode() for k in range(1, 101)]
                self.method = "PUT"
            elif op == "read":
                self.path, self.method, self.bodies = f"/v1/routes/{route}", "GET", [None]
            else:
                raise SystemExit(f"unknown op {op}")
        elif system == "etcd":
            if op in ("write", "write-route"):
                self.path, self.method = "/v3/kv/put", "POST"
                self.bodies = [json.dumps({"key": b64(key), "value": b64(str(k))}).encode() for k in range(1, 101)]
            elif op == "read":
                self.path, self.method = "/v3/kv/range", "POST"
                self.bodies = [json.dumps({"key": b64(key)}).encode()]
            else:
                raise SystemExit(f"unknown op {op}")
        else:
            raise SystemExit(f"unknown system {system}")

    def next(self) -> tuple[str, str, bytes | None]:
        body = self.bodies[self.n % len(self.bodies)]
        self.n += 1
        return self.method, self.path, body

    def ok(self, status: int, data: bytes) -> bool:
        if status != 200:
            return False
        if self.system == "etcd" and self.op == "read":
            # A range on a missing key is also 200; require the key.
            return b'"kvs"' in data
        return True


def parse_nodes(spec: str) -> list[tuple[str, int, int | None]]:
    out = []
    for item in spec.split(","):
        addr, _, pid = item.partition("=")
        host, _, port = addr.rpartition(":")
        out.append((host, int(port), int(pid) if pid else None))
    return out


def pct(sorted_vals: list[float], p: float) -> float | None:
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[i]


# ------------------------------------------------------------------ CPU
TCK = os.sysconf("SC_CLK_TCK")


def sys_busy_ticks() -> int:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                v = [int(x) for x in line.split()[1:]]
                # user nice system idle iowait irq softirq (steal left out)
                return v[0] + v[1] + v[2] + v[5] + v[6]
    return 0


def pid_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])
    except (OSError, IndexError, ValueError):
        return 0


class CpuMeter:
    """CPU used during a load, in cores: the whole machine, the servers under
    test, the client (this process and its reaped children), and the rest
    (other people's work; >= 0.10 of a core makes a figure suspect)."""

    def __init__(self, server_pids: list[int]):
        self.pids = server_pids
        self.final: dict[int, int] = {}

    def freeze(self, pid: int) -> None:
        """Take PID's final CPU figure now (it is about to be killed)."""
        self.final[pid] = pid_ticks(pid)

    def start(self) -> None:
        self.t = time.perf_counter()
        self.busy = sys_busy_ticks()
        self.srv = {p: pid_ticks(p) for p in self.pids}
        ru_s, ru_c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cli = ru_s.ru_utime + ru_s.ru_stime + ru_c.ru_utime + ru_c.ru_stime

    def stop(self) -> dict:
        wall = time.perf_counter() - self.t
        busy = (sys_busy_ticks() - self.busy) / TCK
        srv = sum(max(0, self.final.get(p, pid_ticks(p)) - t0) for p, t0 in self.srv.items()) / TCK
        ru_s, ru_c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        cli = ru_s.ru_utime + ru_s.ru_stime + ru_c.ru_utime + ru_c.ru_stime - self.cli
        other = max(0.0, busy - srv - cli)
        return {
            "wall_s": round(wall, 3),
            "machine_cores": round(busy / wall, 3), "servers_cores": round(srv / wall, 3),
            "client_cores": round(cli / wall, 3), "other_cores": round(other / wall, 3),
            "loadavg": open("/proc/loadavg").read().split()[:3],
        }


def server_pids(nodes) -> list[int]:
    return [pid for _, _, pid in nodes if pid]


def cmd_idle(a) -> int:
    """Wait until other people's work uses < THRESHOLD cores (1 s samples),
    at most MAX_WAIT seconds; prints {"waited_s", "other_cores", "idle"}."""
    pids = server_pids(parse_nodes(a.nodes)) if a.nodes else []
    start = time.monotonic()
    while True:
        m = CpuMeter(pids)
        m.start()
        time.sleep(1.0)
        other = m.stop()["other_cores"]
        waited = time.monotonic() - start
        if other < a.threshold or waited >= a.max_wait:
            print(json.dumps({"waited_s": round(waited, 1), "other_cores": other, "idle": other < a.threshold}))
            return 0


# ------------------------------------------------------------------ wrk
def cmd_wrk(a) -> int:
    nodes = parse_nodes(a.nodes)
    host, port, _ = nodes[a.node - 1]
    threads = max(1, min(a.threads, a.concurrency))
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config_wrk.lua")
    cmd = ["wrk", f"-t{threads}", f"-c{a.concurrency}", f"-d{a.duration}s", f"--timeout", f"{a.timeout}s",
           "-s", script, f"http://{host}:{port}/"]
    env = dict(os.environ, BENCH_SYSTEM=a.system, BENCH_OP=a.op, BENCH_ROUTE=a.route)
    meter = CpuMeter(server_pids(nodes))
    meter.start()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.duration + a.timeout + 30)
    cpu = meter.stop()
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if p.returncode != 0 or line is None:
        print(f"config_load.py wrk: wrk failed (exit {p.returncode}): {p.stdout[-2000:]} {p.stderr[-2000:]}",
              file=sys.stderr)
        return 1
    res = json.loads(line[len("BENCH_JSON "):])
    res["errors"] = (res["non_2xx"] + res["connect_errors"] + res["read_errors"] + res["write_errors"]
                     + res["timeouts"])
    res.update({"system": a.system, "op": a.op, "node": a.node, "concurrency": a.concurrency,
                "threads": threads, "ops": res["requests"] - res["non_2xx"], "cpu": cpu,
                "command": " ".join(cmd)})
    print(json.dumps(res))
    return 0


# ------------------------------------------------------------------ setup
async def cmd_setup(a) -> int:
    host, port, _ = parse_nodes(a.nodes)[0]
    c = Conn(host, port)
    deadline = time.monotonic() + a.timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            if a.system == "ferry":
                body = ROUTE_BODY.format(name=a.route, w=1).encode()
                st, hd, data = await asyncio.wait_for(c.request("PUT", f"/v1/routes/{a.route}", body), 5)
            else:
                key = ETCD_PREFIX + a.route + "/backends/a/weight"
                body = json.dumps({"key": b64(key), "value": b64("1")}).encode()
                st, hd, data = await asyncio.wait_for(c.request("POST", "/v3/kv/put", body), 5)
            if st == 200:
                print(json.dumps({"status": st, "body": data.decode(errors="replace"),
                                  "x_ferry_index": hd.get("x-ferry-index")}))
                return 0
            last = f"HTTP {st}: {data[:300]!r}"
        except (HttpError, asyncio.TimeoutError) as e:
            c.close()
            last = f"{e.__class__.__name__}: {e}"
        await asyncio.sleep(0.2)
    print(f"config_load.py setup: failed: {last}", file=sys.stderr)
    return 1


# ------------------------------------------------------------------ load
async def cmd_load(a) -> int:
    host, port, _ = parse_nodes(a.nodes)[a.node - 1]
    ops = Ops(a.system, a.op, a.route)
    lat: list[float] = []
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    remaining = a.count
    meter = CpuMeter(server_pids(parse_nodes(a.nodes)))
    meter.start()
    start = time.perf_counter()
    deadline = start + a.max_seconds

    async def worker() -> None:
        nonlocal remaining
        c = Conn(host, port)
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            method, path, body = ops.next()
            t0 = time.perf_counter()
            try:
                st, _, data = await asyncio.wait_for(c.request(method, path, body), a.timeout)
            except asyncio.TimeoutError:
                c.close()
                errors["timeout"] = errors.get("timeout", 0) + 1
                continue
            except HttpError as e:
                errors[str(e)[:80]] = errors.get(str(e)[:80], 0) + 1
                await asyncio.sleep(0.01)
                continue
            t1 = time.perf_counter()
            statuses[str(st)] = statuses.get(str(st), 0) + 1
            if ops.ok(st, data):
                lat.append(t1 - t0)
            else:
                k = f"bad {st}: {data[:60]!r}"
                errors[k] = errors.get(k, 0) + 1
        c.close()

    await asyncio.gather(*(worker() for _ in range(a.concurrency)))
    elapsed = time.perf_counter() - start
    cpu = meter.stop()
    lat.sort()
    res = {
        "client": "python-asyncio",
        "system": a.system, "op": a.op, "node": a.node, "concurrency": a.concurrency,
        "ops": len(lat), "errors": sum(errors.values()), "error_kinds": errors, "statuses": statuses,
        "elapsed_s": round(elapsed, 4), "ops_per_s": round(len(lat) / elapsed, 1) if elapsed > 0 else None,
        "p50_ms": ms(pct(lat, 50)), "p90_ms": ms(pct(lat, 90)), "p99_ms": ms(pct(lat, 99)),
        "max_ms": ms(lat[-1] if lat else None),
        "stopped_by": "count" if remaining <= 0 else "time",
        "cpu": cpu,
    }
    print(json.dumps(res))
    return 0


def ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000.0, 3)


# ------------------------------------------------------------------ leader
async def status_of(system: str, host: str, port: int, timeout: float = 1.0) -> tuple[str | None, str | None, dict]:
    """(own id, leader id or None, raw) of one node; raises on failure."""
    c = Conn(host, port)
    try:
        if system == "ferry":
            st, _, data = await asyncio.wait_for(c.request("GET", "/v1/status", None), timeout)
            if st != 200:
                raise HttpError(f"status HTTP {st}")
            j = json.loads(data)
            r = j.get("raft") or {}
            me, lead = r.get("node_id"), r.get("leader_id")
            return (None if me is None else str(me)), (None if lead is None else str(lead)), j
        st, _, data = await asyncio.wait_for(c.request("POST", "/v3/maintenance/status", b"{}"), timeout)
        if st != 200:
            raise HttpError(f"status HTTP {st}")
        j = json.loads(data)
        me = (j.get("header") or {}).get("member_id")
        lead = j.get("leader")
        return (None if me is None else str(me)), (None if lead in (None, "0", 0) else str(lead)), j
    finally:
        c.close()


async def find_leader(system: str, nodes) -> tuple[int, dict]:
    """1-based index of the node all live nodes agree is the leader, else 0."""
    ids, leaders, raw = {}, set(), {}
    for i, (h, p, _) in enumerate(nodes, 1):
        try:
            me, lead, j = await status_of(system, h, p)
            ids[me] = i
            leaders.add(lead)
            raw[i] = j
        except (HttpError, asyncio.TimeoutError, OSError, ValueError) as e:
            raw[i] = {"error": str(e)}
    if len(leaders) == 1:
        lead = next(iter(leaders))
        if lead is not None and lead in ids:
            return ids[lead], raw
    return 0, raw


async def cmd_leader(a) -> int:
    idx, _ = await find_leader(a.system, parse_nodes(a.nodes))
    print(idx)
    return 0 if idx else 1


def applied_index(system: str, status: dict):
    if system == "ferry":
        return (status.get("raft") or {}).get("applied_index")
    return status.get("raftAppliedIndex")


async def cmd_wait(a) -> int:
    nodes = parse_nodes(a.nodes)
    deadline = time.monotonic() + a.timeout
    raw: dict = {}
    while time.monotonic() < deadline:
        idx, raw = await find_leader(a.system, nodes)
        if idx and all("error" not in raw.get(i, {"error": 1}) for i in range(1, len(nodes) + 1)):
            if not a.caught_up or len({applied_index(a.system, raw[i]) for i in raw}) == 1:
                print(idx)
                return 0
        await asyncio.sleep(0.1)
    print(f"config_load.py wait: no agreed leader on all nodes within {a.timeout}s: {json.dumps(raw)[:2000]}",
          file=sys.stderr)
    return 1


# ------------------------------------------------------------------ probe
async def cmd_probe(a) -> int:
    nodes = parse_nodes(a.nodes)
    lead, raw = await find_leader(a.system, nodes)
    if not lead:
        print(f"config_load.py probe: no leader: {json.dumps(raw)[:1000]}", file=sys.stderr)
        return 1
    leader_pid = nodes[lead - 1][2]
    if leader_pid is None:
        print("config_load.py probe: --nodes needs =PID for every node", file=sys.stderr)
        return 1
    follower = next(i for i in range(1, len(nodes) + 1) if i != lead)
    fh, fp, _ = nodes[follower - 1]
    ops = Ops(a.system, "write", a.route)
    idle: list[Conn] = []
    records: list[dict] = []
    pending: set[asyncio.Task] = set()
    t_kill: float | None = None
    wall_kill = 0.0
    first_ok_after: float | None = None
    elected_at: float | None = None
    new_leader: str | None = None

    async def one(t_sched: float) -> None:
        nonlocal first_ok_after
        c = idle.pop() if idle else Conn(fh, fp)
        method, path, body = ops.next()
        t0 = time.perf_counter()
        rec = {"t0": t0}
        try:
            st, hd, data = await asyncio.wait_for(c.request(method, path, body), a.timeout)
            rec["status"] = st
            if st == 200:
                rec["outcome"] = "ok"
            elif st == 503:
                rec["outcome"] = "503"
                rec["retry_after"] = hd.get("retry-after")
            else:
                rec["outcome"] = f"http_{st}"
                rec["body"] = data[:200].decode(errors="replace")
            if c.writer is not None:
                idle.append(c)
        except asyncio.TimeoutError:
            c.close()
            rec["outcome"] = "timeout"
        except HttpError as e:
            c.close()
            rec["outcome"] = "conn_error"
            rec["error"] = str(e)[:200]
        t1 = time.perf_counter()
        rec["t1"] = t1
        records.append(rec)
        if rec["outcome"] == "ok" and t_kill is not None and t0 >= t_kill:
            if first_ok_after is None or t1 < first_ok_after:
                first_ok_after = t1

    async def watch_election() -> None:
        # On its own connection: when does the follower name a new leader?
        nonlocal elected_at, new_leader
        leader_id_before = None
        try:
            _, leader_id_before, _ = await status_of(a.system, fh, fp)
        except Exception:  # noqa: BLE001
            pass
        while t_kill is None:
            await asyncio.sleep(0.001)
        while elected_at is None and time.perf_counter() - t_kill < a.max_window:
            try:
                _, ld, _ = await status_of(a.system, fh, fp, timeout=0.5)
                if ld is not None and ld != leader_id_before:
                    elected_at, new_leader = time.perf_counter(), ld
                    return
            except Exception:  # noqa: BLE001
                pass
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch_election())
    meter = CpuMeter(server_pids(nodes))
    meter.start()
    start = time.perf_counter()
    n = 0
    tail_until = None
    while True:
        t_sched = start + n * a.interval
        now = time.perf_counter()
        if t_sched > now:
            await asyncio.sleep(t_sched - now)
        now = time.perf_counter()
        if t_kill is None and now - start >= a.warmup:
            meter.freeze(leader_pid)
            wall_kill = time.time()
            t_kill = time.perf_counter()
            os.kill(leader_pid, signal.SIGKILL)
        if t_kill is not None:
            if first_ok_after is not None and tail_until is None:
                tail_until = first_ok_after + a.tail
            if tail_until is not None and now >= tail_until:
                break
            if now - t_kill >= a.max_window:
                break
        task = asyncio.create_task(one(t_sched))
        pending.add(task)
        task.add_done_callback(pending.discard)
        n += 1
    if pending:
        await asyncio.wait(pending, timeout=a.timeout + 1.0)
    watcher.cancel()
    cpu = meter.stop()
    for c in idle:
        c.close()
    assert t_kill is not None
    before = [r for r in records if r["t0"] < t_kill]
    after = [r for r in records if r["t0"] >= t_kill]
    outcomes: dict[str, int] = {}
    for r in after:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    lat_after = sorted(r["t1"] - r["t0"] for r in after)
    unanswered = [r for r in records if r["outcome"] in ("timeout",)]
    # requests in flight at the kill (sent before it, answered after it)
    straddling = [r for r in before if r["t1"] >= t_kill]
    res = {
        "system": a.system,
        "kill_utc": utc(wall_kill),
        "first_success_utc": None if first_ok_after is None else utc(wall_kill + first_ok_after - t_kill),
        "leader_killed": lead, "leader_pid": leader_pid, "follower": follower,
        "interval_ms": a.interval * 1000, "timeout_s": a.timeout,
        "window_s": None if first_ok_after is None else round(first_ok_after - t_kill, 4),
        "election_s": None if elected_at is None else round(elected_at - t_kill, 4),
        "new_leader_id": new_leader,
        "requests_before_kill": len(before),
        "requests_after_kill": len(after),
        "outcomes_after_kill": outcomes,
        "outcomes_before_kill": {k: sum(1 for r in before if r["outcome"] == k)
                                 for k in sorted({r["outcome"] for r in before})},
        "straddling_kill": [{"outcome": r["outcome"], "latency_ms": ms(r["t1"] - r["t0"])} for r in straddling],
        "hangs": len(unanswered),
        "max_latency_ms": ms(max((r["t1"] - r["t0"] for r in records), default=None)),
        "p99_latency_after_kill_ms": ms(pct(lat_after, 99)),
        "max_window_s": a.max_window,
        "cpu": cpu,
        "first_errors": [
            {k: r.get(k) for k in ("outcome", "status", "error", "body", "retry_after")}
            | {"sent_after_kill_ms": ms(r["t0"] - t_kill), "latency_ms": ms(r["t1"] - r["t0"])}
            for r in sorted(after, key=lambda r: r["t0"]) if r["outcome"] != "ok"
        ][:5],
    }
    print(json.dumps(res))
    return 0


# ------------------------------------------------------------------ steady
async def cmd_steady(a) -> int:
    """Writes every INTERVAL to one node for DURATION seconds (open loop, each
    with TIMEOUT) while something else happens (a node restarting); reports
    the longest span without a successful write and the slowest request."""
    host, port, _ = parse_nodes(a.nodes)[a.node - 1]
    ops = Ops(a.system, "write", a.route)
    idle: list[Conn] = []
    recs: list[tuple[float, float, str]] = []
    pending: set[asyncio.Task] = set()

    async def one() -> None:
        c = idle.pop() if idle else Conn(host, port)
        method, path, body = ops.next()
        t0 = time.perf_counter()
        try:
            st, _, _ = await asyncio.wait_for(c.request(method, path, body), a.timeout)
            out = "ok" if st == 200 else ("503" if st == 503 else f"http_{st}")
            if c.writer is not None:
                idle.append(c)
        except asyncio.TimeoutError:
            c.close()
            out = "timeout"
        except HttpError:
            c.close()
            out = "conn_error"
        recs.append((t0, time.perf_counter(), out))

    start = time.perf_counter()
    n = 0
    while True:
        t = start + n * a.interval
        now = time.perf_counter()
        if t - start >= a.duration:
            break
        if t > now:
            await asyncio.sleep(t - now)
        task = asyncio.create_task(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
        n += 1
    if pending:
        await asyncio.wait(pending, timeout=a.timeout + 1.0)
    for c in idle:
        c.close()
    oks = sorted(t1 for _, t1, o in recs if o == "ok")
    edges = [start] + oks + [start + a.duration]
    gap = max((b - a_ for a_, b in zip(edges, edges[1:])), default=None)
    outcomes: dict[str, int] = {}
    for _, _, o in recs:
        outcomes[o] = outcomes.get(o, 0) + 1
    print(json.dumps({
        "system": a.system, "node": a.node, "duration_s": a.duration, "requests": len(recs),
        "outcomes": outcomes, "longest_gap_s": None if gap is None else round(gap, 4),
        "max_latency_ms": ms(max((t1 - t0 for t0, t1, _ in recs), default=None)),
        "hangs": outcomes.get("timeout", 0),
        "start_utc": utc(time.time() - (time.perf_counter() - start)),
    }))
    return 0


def utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e6):06d}Z"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp):
        sp.add_argument("--system", choices=["ferry", "etcd"], required=True)
        sp.add_argument("--nodes", required=True, help="host:port[=pid],... in node order")
        sp.add_argument("--route", default="bench")

    sp = sub.add_parser("setup")
    common(sp)
    sp.add_argument("--timeout", type=float, default=20.0)
    sp = sub.add_parser("load")
    common(sp)
    sp.add_argument("--op", choices=["write", "write-route", "read"], required=True)
    sp.add_argument("--node", type=int, default=1, help="1-based index into --nodes")
    sp.add_argument("--concurrency", type=int, default=1)
    sp.add_argument("--count", type=int, default=1000)
    sp.add_argument("--max-seconds", type=float, default=30.0)
    sp.add_argument("--timeout", type=float, default=5.0)
    sp = sub.add_parser("wrk")
    common(sp)
    sp.add_argument("--op", choices=["write", "write-route", "read"], required=True)
    sp.add_argument("--node", type=int, default=1, help="1-based index into --nodes")
    sp.add_argument("--concurrency", type=int, default=1)
    sp.add_argument("--threads", type=int, default=2)
    sp.add_argument("--duration", type=int, default=10)
    sp.add_argument("--timeout", type=int, default=5)
    sp = sub.add_parser("steady")
    common(sp)
    sp.add_argument("--node", type=int, required=True, help="1-based index into --nodes")
    sp.add_argument("--interval", type=float, default=0.005)
    sp.add_argument("--timeout", type=float, default=2.0)
    sp.add_argument("--duration", type=float, default=3.0)
    sp = sub.add_parser("idle")
    sp.add_argument("--nodes", default="", help="host:port=pid,...: the servers' CPU is not 'other'")
    sp.add_argument("--max-wait", type=float, default=60.0)
    sp.add_argument("--threshold", type=float, default=0.15)
    sp = sub.add_parser("leader")
    common(sp)
    sp = sub.add_parser("wait")
    common(sp)
    sp.add_argument("--timeout", type=float, default=20.0)
    sp.add_argument("--caught-up", action="store_true", help="also wait for equal applied indexes")
    sp = sub.add_parser("probe")
    common(sp)
    sp.add_argument("--interval", type=float, default=0.005)
    sp.add_argument("--timeout", type=float, default=2.0)
    sp.add_argument("--warmup", type=float, default=1.0, help="seconds of writes before the kill")
    sp.add_argument("--tail", type=float, default=0.5, help="seconds of writes after the first success")
    sp.add_argument("--max-window", type=float, default=20.0, help="give up this long after the kill")
    a = p.parse_args()
    if a.cmd == "wrk":
        return cmd_wrk(a)
    if a.cmd == "idle":
        return cmd_idle(a)
    return asyncio.run({"setup": cmd_setup, "load": cmd_load, "leader": cmd_leader,
                        "wait": cmd_wait, "probe": cmd_probe, "steady": cmd_steady}[a.cmd](a))


if __name__ == "__main__":
    sys.exit(main())
