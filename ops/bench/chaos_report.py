#!/usr/bin/env python3
"""Turn the raw output of ops/bench/chaos.sh into a table, a JSON and a .txt.

Usage: chaos_report.py RAW_DIR JSON_OUT TXT_OUT

RAW_DIR holds meta.txt (key=value lines) and, as written by chaos.sh:
  off/cR/{none,policy}/<load>.out   phase 1: iperf3 -J (iperf1, iperf4) and wrk
                                    --latency (wrk_ka, wrk_close) through route
                                    fast, round R, without / with a policy on
                                    another route
  lat/rR.out                        phase 2: chaos_rtt.py rtt JSON
  bw/rR/bw<rate>.out                phase 3: iperf3 -R -J through a bandwidth toxic
  shaped/cR/{fast,lat1}.out         phase 4: iperf3 -R -J, unshaped / 1 ms latency
  mem/runN-{none,policy}/idle.out   phase 5: idle_conns.py JSON
and beside each load <name>.ticks (ferryd utime+stime, clock ticks) and
<name>.foreign (CPU other processes used: "foreign busy t0_us t1_us").

Each target is checked on the median over the rounds; the spread shown is
min-max over the rounds.
"""

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from l4_report import parse_iperf, parse_wrk, median, read, read_int  # noqa: E402

OFF_LOADS = ("iperf1", "iperf4", "wrk_ka", "wrk_close")
BW_RATES = (100, 10000, 500000)

# Targets of issue 24.
OFF_MIN_RATIO = 0.99
LAT_TARGET_MS = 20.0
LAT_MEDIAN_TOL_MS = 0.5
LAT_P99_ABOVE_MS = 2.0
BW_TOL = 0.02
MEM_MAX_RATIO = 2.0


# ---------------------------------------------------------------- collect
def load_entry(d, name, parser, clk):
    """One load's parsed output, with ferryd's CPU and the background CPU."""
    text = read(os.path.join(d, name + ".out"))
    if text is None:
        return None
    p = parser(text)
    e = {"rc": read_int(os.path.join(d, name + ".rc"))}
    if p is None:
        e["error"] = "unparseable output"
        e["stderr"] = (read(os.path.join(d, name + ".err")) or "")[-1000:]
    else:
        e.update(p)
    ticks = read_int(os.path.join(d, name + ".ticks"))
    if ticks is not None:
        e["ferry_cpu_s"] = ticks / clk
    fl = (read(os.path.join(d, name + ".foreign")) or "").split()
    if len(fl) == 4:
        foreign, _busy, w0, w1 = (int(x) for x in fl)
        wall = (w1 - w0) / 1e6
        if wall > 0:
            e["wall_s"] = wall
            e["foreign_pct"] = 100.0 * max(foreign, 0) / clk / wall
    for k in ("attempts", "kept"):
        v = read_int(os.path.join(d, f"{name}.{k}"))
        if v is not None:
            e[k] = v
    return e


def parse_json(text):
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def parse_iperf_full(text):
    """parse_iperf plus the bytes and seconds of each interval."""
    p = parse_iperf(text)
    j = parse_json(text)
    if p is not None and j is not None and "error" not in p:
        p["interval_bytes"] = [iv["sum"]["bytes"] for iv in j.get("intervals", []) if "sum" in iv]
        p["interval_seconds"] = [iv["sum"]["seconds"] for iv in j.get("intervals", []) if "sum" in iv]
    return p


def numbered(d, prefix):
    if not os.path.isdir(d):
        return []
    names = [n for n in os.listdir(d) if re.fullmatch(prefix + r"\d+", n)]
    return sorted(names, key=lambda n: int(n[len(prefix):]))


def collect(raw, clk=100.0):
    data = {"off": [], "lat": [], "bw": {r: [] for r in BW_RATES}, "shaped": [], "mem": []}
    d = os.path.join(raw, "off")
    for c in numbered(d, "c"):
        rnd = {}
        for state in ("none", "policy"):
            sd = os.path.join(d, c, state)
            rnd[state] = {}
            for load in OFF_LOADS:
                parser = parse_iperf if load.startswith("iperf") else parse_wrk
                e = load_entry(sd, load, parser, clk)
                if e is not None:
                    rnd[state][load] = e
        data["off"].append(rnd)
    d = os.path.join(raw, "lat")
    if os.path.isdir(d):
        for n in sorted((n[:-4] for n in os.listdir(d) if re.fullmatch(r"r\d+\.out", n)), key=lambda n: int(n[1:])):
            e = load_entry(d, n, parse_json, clk)
            if e is not None:
                data["lat"].append(e)
    d = os.path.join(raw, "bw")
    for r in numbered(d, "r"):
        for rate in BW_RATES:
            e = load_entry(os.path.join(d, r), f"bw{rate}", parse_iperf_full, clk)
            if e is not None:
                data["bw"][rate].append(e)
    d = os.path.join(raw, "shaped")
    for c in numbered(d, "c"):
        data["shaped"].append({route: load_entry(os.path.join(d, c), route, parse_iperf, clk)
                               for route in ("fast", "lat1")})
    d = os.path.join(raw, "mem")
    if os.path.isdir(d):
        runs = [n for n in os.listdir(d) if re.fullmatch(r"run\d+-(none|policy)(-silent)?", n)]
        for n in sorted(runs, key=lambda n: (int(n[3:].split("-")[0]), n)):
            j = parse_json(read(os.path.join(d, n, "idle.out"))) or {"error": "no output"}
            j["state"] = n.split("-")[1]
            j["silent"] = n.endswith("-silent")
            j["run"] = int(n[3:].split("-")[0])
            j["rc"] = read_int(os.path.join(d, n, "idle.rc"))
            data["mem"].append(j)
    return data


# ---------------------------------------------------------------- figures
def spread(vals):
    """{median, min, max, n, values} of the values that are not None."""
    v = [x for x in vals if x is not None]
    return {"median": median(v), "min": min(v) if v else None, "max": max(v) if v else None,
            "n": len(v), "values": v}


def ok(e):
    return isinstance(e, dict) and "error" not in e


def off_value(e, key):
    if not ok(e):
        return None
    if key in ("iperf1_gbps", "iperf4_gbps"):
        return e.get("gbps")
    if key in ("ka_rps", "close_cps"):
        return e.get("rps")
    if key in ("ka_p99_ms", "close_p99_ms"):
        return e.get("p99_ms")
    return None


OFF_FIGURES = [
    # key, label, load, better
    ("iperf1_gbps", "iperf3 1 stream", "iperf1", "hi"),
    ("iperf4_gbps", "iperf3 4 streams", "iperf4", "hi"),
    ("ka_rps", "keep-alive req/s", "wrk_ka", "hi"),
    ("close_cps", "Connection: close conn/s", "wrk_close", "hi"),
    ("ka_p99_ms", "keep-alive p99", "wrk_ka", "lo"),
    ("close_p99_ms", "Connection: close p99", "wrk_close", "lo"),
]


def cpu_per_gb(e):
    if not ok(e) or e.get("ferry_cpu_s") is None or not e.get("bytes"):
        return None
    return e["ferry_cpu_s"] / (e["bytes"] / 1e9)


def figures(data):
    f = {}
    # 1. off: ratio policy/none per round
    off = {}
    for key, label, load, better in OFF_FIGURES:
        ratios, none_v, pol_v, noise = [], [], [], []
        for rnd in data.get("off", []):
            a = off_value(rnd.get("none", {}).get(load), key)
            b = off_value(rnd.get("policy", {}).get(load), key)
            none_v.append(a)
            pol_v.append(b)
            ratios.append(b / a if a and b is not None else None)
            for st in ("none", "policy"):
                e = rnd.get(st, {}).get(load)
                if isinstance(e, dict):
                    noise.append(e.get("foreign_pct"))
        off[key] = {"label": label, "better": better, "ratio": spread(ratios),
                    "none": spread(none_v), "policy": spread(pol_v), "noise_pct": spread(noise)}
    f["off"] = off
    # 2. latency
    lat = [e for e in data.get("lat", []) if ok(e)]
    f["lat"] = {
        "added_p50_ms": spread([e.get("added_p50_ms") for e in lat]),
        "added_p99_ms": spread([e.get("added_p99_ms") for e in lat]),
        "shaped_p99_minus_plain_p50_ms": spread([e.get("shaped_p99_minus_plain_p50_ms") for e in lat]),
        "shaped_p50_ms": spread([(e.get("shaped") or {}).get("p50_ms") for e in lat]),
        "shaped_p99_ms": spread([(e.get("shaped") or {}).get("p99_ms") for e in lat]),
        "plain_p50_ms": spread([(e.get("plain") or {}).get("p50_ms") for e in lat]),
        "plain_p99_ms": spread([(e.get("plain") or {}).get("p99_ms") for e in lat]),
        "answered": sum((e.get("shaped") or {}).get("answered", 0) + (e.get("plain") or {}).get("answered", 0)
                        for e in lat),
        "lost": sum((e.get("shaped") or {}).get("lost", 0) + (e.get("plain") or {}).get("lost", 0) for e in lat),
        "send_lag_p99_ms": spread([(e.get("send_lag_ms") or {}).get("p99") for e in lat]),
        "noise_pct": spread([e.get("foreign_pct") for e in data.get("lat", [])]),
    }
    # 3. bandwidth: kB/s over the whole measurement, and without its first interval
    bw = {}
    for rate in BW_RATES:
        runs = data.get("bw", {}).get(rate, [])
        full, steady = [], []
        for e in runs:
            if ok(e) and e.get("seconds"):
                full.append(e["bytes"] / e["seconds"] / 1e3)
                ib, isec = e.get("interval_bytes") or [], e.get("interval_seconds") or []
                if len(ib) > 1 and sum(isec[1:]) > 0:
                    steady.append(sum(ib[1:]) / sum(isec[1:]) / 1e3)
                else:
                    steady.append(None)
            else:
                full.append(None)
                steady.append(None)
        bw[rate] = {"kBps": spread(full), "steady_kBps": spread(steady),
                    "error": spread([x / rate - 1 if x is not None else None for x in full]),
                    "noise_pct": spread([e.get("foreign_pct") for e in runs if isinstance(e, dict)])}
    f["bw"] = bw
    # 4. shaped throughput and CPU per GB, per round lat1/fast
    sh = {"fast_gbps": [], "lat1_gbps": [], "fast_cpu_per_gb": [], "lat1_cpu_per_gb": [],
          "gbps_ratio": [], "cpu_per_gb_ratio": [], "noise": []}
    for rnd in data.get("shaped", []):
        a, b = rnd.get("fast"), rnd.get("lat1")
        ga = a.get("gbps") if ok(a) else None
        gb = b.get("gbps") if ok(b) else None
        ca, cb = cpu_per_gb(a), cpu_per_gb(b)
        sh["fast_gbps"].append(ga)
        sh["lat1_gbps"].append(gb)
        sh["fast_cpu_per_gb"].append(ca)
        sh["lat1_cpu_per_gb"].append(cb)
        sh["gbps_ratio"].append(gb / ga if ga and gb is not None else None)
        sh["cpu_per_gb_ratio"].append(cb / ca if ca and cb is not None else None)
        for e in (a, b):
            if isinstance(e, dict):
                sh["noise"].append(e.get("foreign_pct"))
    f["shaped"] = {k: spread(v) for k, v in sh.items()}
    # 5. memory: RSS held by the idle connections (while held minus before)
    held = {"none": [], "policy": []}
    absolute = {"none": [], "policy": []}
    silent = {"none": [], "policy": []}
    complete = True
    for j in data.get("mem", []):
        st = j.get("state")
        if st not in held:
            continue
        if j.get("silent"):  # connections that never carried a byte: a detail, not the target
            if j.get("rss_kib") is not None and j.get("rss_before_kib") is not None:
                silent[st].append((j["rss_kib"] - j["rss_before_kib"]) / 1024.0)
            continue
        if j.get("rss_kib") is None or j.get("rss_before_kib") is None or j.get("opened") != j.get("requested") \
                or j.get("closed_by_peer") or ("hello_answered" in j and j["hello_answered"] != j.get("opened")):
            complete = False
        if j.get("rss_kib") is not None and j.get("rss_before_kib") is not None:
            held[st].append((j["rss_kib"] - j["rss_before_kib"]) / 1024.0)
            absolute[st].append(j["rss_kib"] / 1024.0)
    hn, hp = median(held["none"]), median(held["policy"])
    f["mem"] = {"held_mib_none": spread(held["none"]), "held_mib_policy": spread(held["policy"]),
                "rss_mib_none": spread(absolute["none"]), "rss_mib_policy": spread(absolute["policy"]),
                "silent_held_mib_none": spread(silent["none"]), "silent_held_mib_policy": spread(silent["policy"]),
                "ratio": hp / hn if hn and hn > 0 and hp is not None else None,
                "all_runs_complete": complete}
    return f


# ---------------------------------------------------------------- targets
def verdict(ok_):
    return None if ok_ is None else bool(ok_)


def targets(f):
    """Rows: {id, what, target, value, shown, spread, passed (True/False/None), noise}."""
    rows = []
    for key in ("iperf1_gbps", "iperf4_gbps", "ka_rps", "close_cps"):
        o = f["off"][key]
        m = o["ratio"]["median"]
        rows.append({"id": "off_" + key, "what": f"off costs nothing: {o['label']}, policy on another route / none",
                     "target": f">= {OFF_MIN_RATIO:.2f}x", "value": m,
                     "shown": "-" if m is None else f"{m:.3f}x",
                     "spread": rng(o["ratio"], "{:.3f}"), "n": o["ratio"]["n"],
                     "passed": verdict(None if m is None else m >= OFF_MIN_RATIO), "noise": o["noise_pct"]})
    lat = f["lat"]
    m = lat["added_p50_ms"]["median"]
    rows.append({"id": "lat_p50", "what": "latency 20 ms: added round trip, median (shaped p50 - plain p50)",
                 "target": f"{LAT_TARGET_MS - LAT_MEDIAN_TOL_MS:.1f}-{LAT_TARGET_MS + LAT_MEDIAN_TOL_MS:.1f} ms",
                 "value": m, "shown": "-" if m is None else f"{m:.3f} ms",
                 "spread": rng(lat["added_p50_ms"], "{:.3f}"), "n": lat["added_p50_ms"]["n"],
                 "passed": verdict(None if m is None else abs(m - LAT_TARGET_MS) <= LAT_MEDIAN_TOL_MS),
                 "noise": lat["noise_pct"]})
    m = lat["added_p99_ms"]["median"]
    rows.append({"id": "lat_p99", "what": "latency 20 ms: added round trip, p99 (shaped p99 - plain p99)",
                 "target": f"<= {LAT_TARGET_MS + LAT_P99_ABOVE_MS:.1f} ms",
                 "value": m, "shown": "-" if m is None else f"{m:.3f} ms",
                 "spread": rng(lat["added_p99_ms"], "{:.3f}"), "n": lat["added_p99_ms"]["n"],
                 "passed": verdict(None if m is None else
                                   LAT_TARGET_MS - LAT_MEDIAN_TOL_MS <= m <= LAT_TARGET_MS + LAT_P99_ABOVE_MS),
                 "noise": lat["noise_pct"]})
    for rate in BW_RATES:
        b = f["bw"][rate]
        m = b["kBps"]["median"]
        err = None if m is None else m / rate - 1
        rows.append({"id": f"bw_{rate}", "what": f"bandwidth {rate:,} kB/s: measured over the run",
                     "target": f"{rate * (1 - BW_TOL):,.0f}-{rate * (1 + BW_TOL):,.0f} kB/s (+-{BW_TOL:.0%})",
                     "value": m, "shown": "-" if m is None else f"{m:,.1f} kB/s ({err:+.2%})",
                     "spread": rng(b["kBps"], "{:,.1f}"), "n": b["kBps"]["n"],
                     "passed": verdict(None if err is None else abs(err) <= BW_TOL), "noise": b["noise_pct"]})
    s = f["shaped"]
    g, c = s["gbps_ratio"]["median"], s["cpu_per_gb_ratio"]["median"]
    rows.append({"id": "shaped_gbps", "what": "latency 1 ms, iperf3 -R 1 stream: Gbit/s shaped vs unshaped",
                 "target": "(reported)", "value": g,
                 "shown": "-" if g is None else
                 f"{s['lat1_gbps']['median']:.3f} vs {s['fast_gbps']['median']:.2f} Gbit/s ({g:.3f}x)",
                 "spread": rng(s["gbps_ratio"], "{:.3f}"), "n": s["gbps_ratio"]["n"], "passed": None,
                 "noise": s["noise"]})
    rows.append({"id": "shaped_cpu", "what": "latency 1 ms: ferryd CPU per GB shaped vs unshaped",
                 "target": "(reported)", "value": c,
                 "shown": "-" if c is None else
                 f"{s['lat1_cpu_per_gb']['median']:.3f} vs {s['fast_cpu_per_gb']['median']:.3f} cpu-s/GB ({c:.2f}x)",
                 "spread": rng(s["cpu_per_gb_ratio"], "{:.2f}"), "n": s["cpu_per_gb_ratio"]["n"], "passed": None,
                 "noise": s["noise"]})
    mem = f["mem"]
    r = mem["ratio"]
    hp, hn = mem["held_mib_policy"]["median"], mem["held_mib_none"]["median"]
    rows.append({"id": "mem", "what": "memory: RSS held by the idle connections, policy / none",
                 "target": f"<= {MEM_MAX_RATIO:.1f}x", "value": r,
                 "shown": "-" if r is None else f"{hp:.2f} / {hn:.2f} MiB = {r:.2f}x",
                 "spread": "policy " + rng(mem["held_mib_policy"], "{:.2f}") + ", none " + rng(mem["held_mib_none"], "{:.2f}"),
                 "n": min(mem["held_mib_policy"]["n"], mem["held_mib_none"]["n"]),
                 "passed": verdict(None if r is None else (r <= MEM_MAX_RATIO and mem["all_runs_complete"])),
                 "noise": None})
    return rows


def rng(s, fmt):
    if not s or s.get("min") is None:
        return "-"
    if s["n"] == 1:
        return "(1 value)"
    return "[" + fmt.format(s["min"]) + ", " + fmt.format(s["max"]) + "]"


def noise_text(n):
    if not n or n.get("median") is None:
        return "-"
    return f"{n['median']:.0f}% (max {n['max']:.0f}%)"


def pass_text(p):
    return "info" if p is None else ("PASS" if p else "FAIL")


def render(rows):
    head = ["target", "goal", "measured (median)", "min-max", "n", "result", "background CPU"]
    table = [head] + [[r["what"], r["target"], r["shown"], r["spread"], str(r["n"]), pass_text(r["passed"]),
                       noise_text(r["noise"])] for r in rows]
    w = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = []
    for i, row in enumerate(table):
        lines.append(" | ".join(c.ljust(w[j]) for j, c in enumerate(row)).rstrip())
        if i == 0:
            lines.append("-+-".join("-" * x for x in w))
    return "\n".join(lines) + "\n"


def details(f):
    out = ["", "Details:"]
    for key, label, _load, better in OFF_FIGURES:
        o = f["off"][key]
        out.append(f"  off {label:26s}: none {fmt(o['none']['median'])}, policy {fmt(o['policy']['median'])}; "
                   f"ratio per round {' '.join(f'{x:.3f}' for x in o['ratio']['values'])}"
                   f"{' (lower is better)' if better == 'lo' else ''}")
    lat = f["lat"]
    out.append(f"  latency: shaped p50 {fmt(lat['shaped_p50_ms']['median'])} ms p99 {fmt(lat['shaped_p99_ms']['median'])} ms; "
               f"plain p50 {fmt(lat['plain_p50_ms']['median'])} ms p99 {fmt(lat['plain_p99_ms']['median'])} ms; "
               f"shaped p99 - plain p50 {fmt(lat['shaped_p99_minus_plain_p50_ms']['median'])} ms; "
               f"{lat['answered']} answered, {lat['lost']} lost; client send lag p99 {fmt(lat['send_lag_p99_ms']['median'])} ms")
    for rate, b in f["bw"].items():
        out.append(f"  bandwidth {rate:>7,} kB/s: per round {' '.join(f'{x:,.1f}' for x in b['kBps']['values'])} kB/s; "
                   f"without the first second {' '.join('-' if x is None else f'{x:,.1f}' for x in b['steady_kBps']['values'])}")
    s = f["shaped"]
    out.append(f"  shaped: lat1 Gbit/s per round {' '.join(f'{x:.3f}' for x in s['lat1_gbps']['values'])}; "
               f"fast {' '.join(f'{x:.2f}' for x in s['fast_gbps']['values'])}")
    m = f["mem"]
    out.append(f"  memory: held MiB, policy {' '.join(f'{x:.2f}' for x in m['held_mib_policy']['values'])}, "
               f"none {' '.join(f'{x:.2f}' for x in m['held_mib_none']['values'])}; RSS while held "
               f"policy {fmt(m['rss_mib_policy']['median'])} MiB, none {fmt(m['rss_mib_none']['median'])} MiB; "
               f"silent connections (no byte sent) held policy {fmt(m['silent_held_mib_policy']['median'])} MiB, "
               f"none {fmt(m['silent_held_mib_none']['median'])} MiB"
               f"{'' if m['all_runs_complete'] else '; SOME RUNS INCOMPLETE (connections not opened, echoed or kept)'}")
    return "\n".join(out) + "\n"


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.2f}"
    return f"{v:.3f}"


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    raw, json_out, txt_out = sys.argv[1:]
    meta = {}
    for line in (read(os.path.join(raw, "meta.txt")) or "").splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            meta[k] = v
    data = collect(raw, float(meta.get("clk_tck", "100")))
    f = figures(data)
    rows = targets(f)
    quick = meta.get("quick") == "1"
    header = (
        f"ferry chaos benchmark {meta.get('timestamp', '')}  host={meta.get('hostname', '')} "
        f"kernel={meta.get('kernel', '')} cpus={meta.get('nproc', '')}\n"
        f"{'QUICK run (shortened loads: not the documented durations)' if quick else 'full run'}: "
        f"l4 loads {meta.get('duration', '')}s x {meta.get('off_rounds', '')} rounds x 2 states; "
        f"latency {meta.get('lat_rate', '')} req/s, {meta.get('lat_duration', '')}s x {meta.get('lat_rounds', '')}; "
        f"bandwidth {meta.get('bw_duration', '')}s x {meta.get('bw_rounds', '')}; "
        f"shaped {meta.get('duration', '')}s x {meta.get('shape_rounds', '')}; "
        f"memory {meta.get('idle_conns', '')} conns x {meta.get('mem_rounds', '')} ABBA rounds\n"
        f"phases {meta.get('phases', 'mem off lat bw shaped')}; WAIT_IDLE={meta.get('wait_idle', '0')}; CPU busy before start {meta.get('cpu_busy_pct_start', '?')}%; "
        f"loadavg start {meta.get('loadavg_start', '')} end {meta.get('loadavg_end', '')}\n"
        f"ferryd {meta.get('ferryd', '')}: {meta.get('ferryd_info', '')}\n"
        f"{meta.get('versions', '')}\n"
        "latency toxics are direction downstream (added once per round trip); bandwidth measured with iperf3 -R\n"
        "(backend to client, the direction shaped). background CPU: % of one core used by other processes.\n"
    )
    text = header + "\n" + render(rows) + details(f)
    failed = [r["id"] for r in rows if r["passed"] is False]
    text += f"\n{sum(1 for r in rows if r['passed'])} targets met, {len(failed)} missed{': ' + ', '.join(failed) if failed else ''}\n"
    with open(txt_out, "w", encoding="utf-8") as fh:
        fh.write(text)
    with open(json_out, "w", encoding="utf-8") as fh:
        json.dump({"meta": meta, "targets": rows, "figures": f, "raw": data}, fh, indent=2, default=str)
        fh.write("\n")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
