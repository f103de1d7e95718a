#!/usr/bin/env python3
"""ops/bench/config_report.py — turns ops/bench/config.sh's raw results into
the table (stdout and --txt) and one JSON document (--json).

--results DIR holds one directory per system (ferry, etcd-default,
etcd-equal) with target.json, timers.json, write_c1.json, write_c32.json,
read_c32.json and outage/kill-N.json (from config_load.py).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys

SYSTEMS = ["ferry", "etcd-default", "etcd-equal"]
ETCDS = ["etcd-default", "etcd-equal"]
SUSPECT_OTHER_CORES = 0.10   # someone else's CPU during a load
CLIENT_BOUND_CORES = 0.90    # the client used (almost) a whole core


def load_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def collect(results: str) -> dict:
    out = {}
    for s in SYSTEMS:
        d = os.path.join(results, s)
        if not os.path.isdir(d):
            continue
        r = {k: load_json(os.path.join(d, f"{k}.json"))
             for k in ("target", "timers", "warmup", "write_c1", "write_c32", "read_c32")}
        kills = []
        for f in sorted(glob.glob(os.path.join(d, "outage", "kill-*.json")),
                        key=lambda p: int(p.rsplit("-", 1)[1].split(".")[0])):
            j = load_json(f)
            if j is not None:
                kills.append(j)
        r["kills"] = kills
        r["rejoin_failures"] = [load_json(f) for f in glob.glob(os.path.join(d, "outage", "rejoin-failed-*.json"))]
        restarts = []
        for f in sorted(glob.glob(os.path.join(d, "outage", "restart-*.json")),
                        key=lambda p: int(p.rsplit("-", 1)[1].split(".")[0])):
            j = load_json(f)
            if j is not None:
                restarts.append(j)
        r["restarts"] = restarts
        r["outage"] = outage_summary(kills)
        r["outage"].update(restart_summary(restarts))
        out[s] = r
    return out


def outage_summary(kills: list[dict]) -> dict:
    windows = [k["window_s"] for k in kills if k.get("window_s") is not None]
    elections = [k["election_s"] for k in kills if k.get("election_s") is not None]
    outcomes: dict[str, int] = {}
    for k in kills:
        for o, n in (k.get("outcomes_after_kill") or {}).items():
            outcomes[o] = outcomes.get(o, 0) + n
        for s in k.get("straddling_kill") or []:
            key = "in_flight_at_kill_" + s["outcome"]
            outcomes[key] = outcomes.get(key, 0) + 1
    non_503 = sum(n for o, n in outcomes.items()
                  if o not in ("ok", "503", "timeout") and not o.startswith("in_flight_at_kill_"))
    return {
        "kills": len(kills),
        "windows_s": windows,
        "no_recovery": len(kills) - len(windows),
        "window_median_s": statistics.median(windows) if windows else None,
        "window_max_s": max(windows) if windows else None,
        "election_median_s": statistics.median(elections) if elections else None,
        "hangs": sum(k.get("hangs", 0) for k in kills),
        "max_request_ms": max((k.get("max_latency_ms") or 0 for k in kills), default=None),
        "non_503_failures": non_503,
        "outcomes_after_kill": outcomes,
    }


def restart_summary(restarts: list[dict]) -> dict:
    gaps = [r["longest_gap_s"] for r in restarts if r.get("longest_gap_s") is not None]
    bad = sum(n for r in restarts for o, n in (r.get("outcomes") or {}).items() if o != "ok")
    return {
        "restart_gaps_s": gaps,
        "restart_gap_median_s": statistics.median(gaps) if gaps else None,
        "restart_gap_max_s": max(gaps) if gaps else None,
        "restart_failed_writes": bad if restarts else None,
    }


def fmt(v, digits=1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}" if abs(v) >= 1 else f"{v:.{digits + 2}f}".rstrip("0").rstrip(".") or "0"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def ratio(a, b) -> str:
    if a is None or b is None:
        return "-"
    if b == 0:
        return "-" if a == 0 else "inf"
    return f"{a / b:.2f}"


def mark(load: dict | None) -> str:
    if not load:
        return ""
    cpu = load.get("cpu") or {}
    m = ""
    if (cpu.get("other_cores") or 0) >= SUSPECT_OTHER_CORES:
        m += "*"
    if (cpu.get("client_cores") or 0) >= CLIENT_BOUND_CORES:
        m += "c"
    if load.get("errors"):
        m += "!"
    return m


def build(data: dict, meta: dict) -> tuple[list[str], dict]:
    present = [s for s in SYSTEMS if s in data]
    etcds = [s for s in ETCDS if s in data]
    rows = []   # (metric, {sys: (value, marker)}, better)

    def lv(s, load, field):
        r = data[s].get(load)
        return (r.get(field) if r else None), mark(r)

    for load, title in (("write_c1", "write c=1"), ("write_c32", "write c=32"), ("read_c32", "lin. read c=32")):
        rows.append((f"{title} ops/s", {s: lv(s, load, "ops_per_s") for s in present}, "higher"))
        rows.append((f"{title} p50 ms", {s: lv(s, load, "p50_ms") for s in present}, "lower"))
        rows.append((f"{title} p99 ms", {s: lv(s, load, "p99_ms") for s in present}, "lower"))
    for key, title, better in (("window_median_s", "kill -9 window median s", "lower"),
                               ("window_max_s", "kill -9 window max s", "lower"),
                               ("election_median_s", "new leader seen, median s", "lower"),
                               ("hangs", "requests unanswered in timeout", "lower"),
                               ("non_503_failures", "outage non-503 failures", "lower"),
                               ("no_recovery", "kills without recovery", "lower"),
                               ("restart_gap_median_s", "restart: longest write gap, median s", "lower"),
                               ("restart_gap_max_s", "restart: longest write gap, max s", "lower"),
                               ("restart_failed_writes", "restart: failed writes", "lower"),
                               ("kills", "kills measured", "")):
        rows.append((title, {s: (data[s]["outage"].get(key), "") for s in present}, better))

    head = ["metric"] + present + [f"ferry/{e}" for e in etcds if "ferry" in data] + ["better"]
    table = [head]
    for metric, vals, better in rows:
        line = [metric]
        for s in present:
            v, m = vals[s]
            line.append(fmt(v) + m)
        if "ferry" in data:
            for e in etcds:
                line.append(ratio(vals["ferry"][0], vals[e][0]) if better else "")
        line.append(f"{better} is better" if better else "")
        table.append(line)
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = []
    lines.append("ferry vs etcd: config writes and reads through HTTP/1.1 JSON (ops/bench/config.sh)")
    for k in ("stamp", "client", "target", "duration_s", "kills", "probe_interval_ms", "probe_timeout_s",
              "ferryd", "etcd", "wrk", "machine", "data_fs", "quick", "waited_for_other_bench_s",
              "waited_idle_s", "elapsed_s"):
        if k in meta:
            lines.append(f"  {k}: {meta[k]}")
    for s in present:
        t = data[s].get("timers") or {}
        tg = data[s].get("target") or {}
        lines.append(f"  {s}: heartbeat {t.get('heartbeat_ms')} ms, election {t.get('election_ms')} ms; "
                     f"loads on node {tg.get('node')} ({tg.get('target')}, leader was node {tg.get('leader')})")
    lines.append("")
    for i, r in enumerate(table):
        lines.append("  ".join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("ratio = ferry / etcd; for 'higher is better' rows > 1 favours ferry, for 'lower is better' rows < 1 does.")
    lines.append("marks: * someone else's work used >= 0.10 core during the load (suspect); "
                 "c the client used >= 0.9 core (may be client-bound); ! the load had errors")
    # CPU detail
    lines.append("")
    lines.append("CPU during each load, in cores (servers / client / other):")
    for s in present:
        parts = []
        for load in ("write_c1", "write_c32", "read_c32"):
            c = (data[s].get(load) or {}).get("cpu") or {}
            if c:
                parts.append(f"{load} {c.get('servers_cores')}/{c.get('client_cores')}/{c.get('other_cores')}")
        lines.append(f"  {s}: " + "; ".join(parts))
    # per-kill windows
    lines.append("")
    lines.append("kill -9 windows, s (per kill; from the kill to the first success of a write sent after it):")
    for s in present:
        ks = data[s]["kills"]
        lines.append(f"  {s}: " + ", ".join(fmt(k.get("window_s"), 2) for k in ks)
                     + f"   outcomes after kill: {data[s]['outage']['outcomes_after_kill']}")
        if data[s].get("restarts"):
            lines.append(f"  {s}: while the killed node restarts, longest span without a successful write: "
                         + ", ".join(fmt(r.get("longest_gap_s"), 2) for r in data[s]["restarts"]))
        if data[s].get("rejoin_failures"):
            lines.append(f"  {s}: REJOIN FAILED: {data[s]['rejoin_failures']}")
    # targets (issue 3)
    targets = {}
    if "ferry" in data and etcds:
        lines.append("")
        lines.append("targets (issue 3):")

        def check(name, ok, detail):
            targets[name] = {"met": ok, "detail": detail}
            lines.append(f"  [{'met' if ok else 'NOT MET' if ok is not None else 'n/a'}] {name}: {detail}")

        f = data["ferry"]
        for load, title in (("write_c1", "write c=1"), ("write_c32", "write c=32")):
            for e in etcds:
                fv, ev = (f.get(load) or {}).get("ops_per_s"), (data[e].get(load) or {}).get("ops_per_s")
                check(f"{title} throughput >= {e}", None if fv is None or ev is None else fv >= ev,
                      f"{fmt(fv)} vs {fmt(ev)} ops/s")
                fp, ep = (f.get(load) or {}).get("p99_ms"), (data[e].get(load) or {}).get("p99_ms")
                check(f"{title} p99 <= {e}", None if fp is None or ep is None else fp <= ep,
                      f"{fmt(fp)} vs {fmt(ep)} ms")
        if "etcd-equal" in data:
            fw, ew = f["outage"]["window_median_s"], data["etcd-equal"]["outage"]["window_median_s"]
            check("kill -9 window (median) <= etcd-equal", None if fw is None or ew is None else fw <= ew,
                  f"{fmt(fw, 3)} vs {fmt(ew, 3)} s")
        check("every outage request answered (success or 503) within its timeout",
              f["outage"]["hangs"] == 0 and f["outage"]["non_503_failures"] == 0 and f["outage"]["kills"] > 0,
              f"{f['outage']['hangs']} unanswered, {f['outage']['non_503_failures']} non-503 failures "
              f"over {f['outage']['kills']} kills")
    doc = {"meta": meta, "systems": data, "table": table, "targets": targets}
    return lines, doc


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--results", required=True)
    p.add_argument("--json")
    p.add_argument("--txt")
    p.add_argument("--meta", action="append", default=[], help="key=value")
    a = p.parse_args()
    meta = dict(m.split("=", 1) for m in a.meta)
    data = collect(a.results)
    if not data:
        print("config_report.py: no results", file=sys.stderr)
        return 1
    lines, doc = build(data, meta)
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if a.txt:
        with open(a.txt, "w") as f:
            f.write(text)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
