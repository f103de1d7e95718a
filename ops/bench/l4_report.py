#!/usr/bin/env python3
"""Turn the raw output of ops/bench/l4.sh into a table, a JSON and a .txt.

Usage: l4_report.py RAW_DIR JSON_OUT TXT_OUT

RAW_DIR holds meta.txt (key=value lines) and one folder per setup (direct,
ferry, haproxy, haproxy-splice), with a "status" file if the setup was
skipped, one folder per repetition (r1, r2, ...) and one per round (c1, c2,
...: the loads measured in rounds; runs before 2026-12-06 05:00 UTC hold only
the two wrk loads there, runs before 2026-11-22 02:50 UTC only
Connection: close) holding the raw files written by l4.sh:
  status                     "ok", "failed: why" or "skipped: why"
  iperf1.out / iperf4.out    iperf3 -J output (1 and 4 streams)
  wrk_ka.out / wrk_close.out wrk --latency output (keep-alive / Connection: close)
  <load>.ticks               proxy utime+stime delta (clock ticks) around <load>
  <load>.rc                  exit code of the load generator
  idle.out                   idle_conns.py JSON
  rss_start_kib, hwm_kib     proxy VmRSS after start, VmHWM at the end
  proxy.log                  proxy stdout/stderr
"""

import json
import math
import os
import re
import sys

SETUPS = ["direct", "ferry", "ferry-splice", "haproxy", "haproxy-splice"]
HAPROXIES = ["haproxy", "haproxy-splice"]
# Rows that say how to read the others (background load, whether the proxy
# was the bottleneck): shown for every setup, never given a ratio.
INDICATORS = {"foreign_pct", "iperf4_busy_pct"}


def read(path, default=None):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return default


def read_int(path):
    s = read(path)
    try:
        return int(s.strip()) if s is not None else None
    except ValueError:
        return None


LAT_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def lat_ms(tok):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", tok)
    if not m:
        return None
    return float(m.group(1)) * LAT_UNITS[m.group(2)]


def parse_wrk(text):
    """Parse wrk --latency output into a dict (None if unusable)."""
    if not text:
        return None
    r = {}
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    r["rps"] = float(m.group(1)) if m else None
    for pct in ("50", "75", "90", "99"):
        m = re.search(r"^\s+%s%%\s+(\S+)" % pct, text, re.M)
        r["p%s_ms" % pct] = lat_ms(m.group(1)) if m else None
    m = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    if m:
        r["lat_avg_ms"] = lat_ms(m.group(1))
        r["lat_max_ms"] = lat_ms(m.group(3))
    m = re.search(r"^\s+(\d+) requests in ([0-9.]+)(\w+)", text, re.M)
    if m:
        r["requests"] = int(m.group(1))
        r["elapsed_s"] = float(m.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}.get(m.group(3), 1.0)
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["socket_errors"] = (
        {"connect": int(m.group(1)), "read": int(m.group(2)), "write": int(m.group(3)), "timeout": int(m.group(4))}
        if m else {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    )
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    r["non_2xx"] = int(m.group(1)) if m else 0
    return r if r["rps"] is not None else None


def parse_iperf(text):
    """Parse iperf3 -J output into a compact dict (None if unusable)."""
    if not text:
        return None
    try:
        j = json.loads(text)
    except ValueError:
        return None
    if j.get("error"):
        return {"error": j["error"]}
    end = j.get("end") or {}
    recv = end.get("sum_received") or {}
    sent = end.get("sum_sent") or {}
    if not recv:
        return None
    intervals = [
        round(iv["sum"]["bits_per_second"] / 1e9, 2)
        for iv in j.get("intervals", [])
        if "sum" in iv
    ]
    return {
        "gbps": recv.get("bits_per_second", 0) / 1e9,
        "bytes": recv.get("bytes", 0),
        "seconds": recv.get("seconds"),
        "retransmits": sent.get("retransmits"),
        "interval_gbps": intervals,
        "min_interval_gbps": min(intervals) if intervals else None,
        "streams": len(j.get("start", {}).get("connected", [])),
    }


def collect_rep(d, clk):
    """Parse one repetition's folder."""
    res = {"status": (read(os.path.join(d, "status")) or "not run").strip()}
    for load, parser in (("iperf1", parse_iperf), ("iperf4", parse_iperf),
                         ("wrk_ka", parse_wrk), ("wrk_close", parse_wrk)):
        text = read(os.path.join(d, load + ".out"))
        if text is None:
            continue
        p = parser(text)
        entry = {"rc": read_int(os.path.join(d, load + ".rc"))}
        if p is None:
            entry["error"] = "unparseable output"
            entry["stderr"] = (read(os.path.join(d, load + ".err")) or "")[-2000:]
            entry["stdout"] = text[-2000:]
        else:
            entry.update(p)
            if load.startswith("wrk"):
                entry["raw"] = text
        ticks = read_int(os.path.join(d, load + ".ticks"))
        if ticks is not None:
            entry["proxy_cpu_s"] = ticks / clk
        fl = (read(os.path.join(d, load + ".foreign")) or "").split()
        if len(fl) == 4:
            foreign, busy, w0, w1 = (int(x) for x in fl)
            wall = (w1 - w0) / 1e6
            entry["wall_s"] = wall
            entry["system_busy_cores"] = busy / clk / wall if wall > 0 else None
            entry["foreign_cpu_cores"] = max(foreign, 0) / clk / wall if wall > 0 else None
        att = read_int(os.path.join(d, load + ".attempts"))
        if att is not None:
            entry["attempts"] = att
        kept = read_int(os.path.join(d, load + ".kept"))
        if kept is not None:
            entry["kept_attempt"] = kept
        rssmax = read_int(os.path.join(d, load + ".rssmax"))
        if rssmax is not None:
            entry["proxy_rss_max_kib"] = rssmax
        res[load] = entry
    idle = read(os.path.join(d, "idle.out"))
    if idle:
        try:
            res["idle"] = json.loads(idle)
        except ValueError:
            res["idle"] = {"error": "unparseable", "raw": idle[-2000:]}
    for k in ("rss_start_kib", "hwm_kib", "rss_end_kib", "pid"):
        v = read_int(os.path.join(d, k))
        if v is not None:
            res[k] = v
    log = read(os.path.join(d, "proxy.log"))
    if log is not None:
        lines = log.splitlines()
        res["log_lines"] = len(lines)
        res["log_warn_error_lines"] = sum(
            1 for ln in lines if re.search(r"\b(WARN|WARNING|ERROR|ALERT|panick)", ln, re.I))
        res["log_tail"] = lines[-30:]
    return res


def collect(raw, meta):
    """{setup: {"status": ..., "reps": [rep, ...]}}; status is "ok" if any rep is ok."""
    clk = float(meta.get("clk_tck", "100"))
    out = {}
    for s in SETUPS:
        d = os.path.join(raw, s)
        reps, churn = [], []
        if os.path.isdir(d):
            def runs(prefix):
                names = sorted((n for n in os.listdir(d) if re.fullmatch(prefix + r"\d+", n)),
                               key=lambda n: int(n[1:]))
                return [collect_rep(os.path.join(d, n), clk) for n in names]
            reps, churn = runs("r"), runs("c")
        top = (read(os.path.join(d, "status")) or "").strip()
        if top:
            status = top
        elif not reps:
            status = "not run"
        elif any(r["status"] == "ok" for r in reps):
            bad = [f"rep {i + 1}: {r['status']}" for i, r in enumerate(reps) if r["status"] != "ok"]
            status = "ok" + (f" ({'; '.join(bad)})" if bad else "")
        else:
            status = reps[0]["status"]
        out[s] = {"status": status, "reps": reps, "churn": churn}
    return out


def median(vals):
    vals = sorted(v for v in vals if v is not None)
    if not vals:
        return None
    n = len(vals)
    return vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2.0


# Rows measured in the rounds when l4.sh ran them (ROUNDS > 0), and the load
# each comes from.
ROUND_ROWS = {
    "iperf1_gbps": "iperf1", "iperf4_gbps": "iperf4", "cpu_per_gb": "iperf4", "iperf4_busy_pct": "iperf4",
    "foreign_pct": "iperf4",
    "ka_rps": "wrk_ka", "ka_p99_ms": "wrk_ka", "cpu_per_100k_req": "wrk_ka",
    "close_cps": "wrk_close", "close_p99_ms": "wrk_close", "cpu_per_1k_conn": "wrk_close",
}


# Peaks: the highest value over every run, repetitions and rounds alike
# (the loads may have run in either), rather than a median.
PEAK_ROWS = {"hwm_mib"}


def ok_runs(res, s, key):
    """The runs of setup s that ran and give row `key` its values: the
    repetitions, or the rounds for ROUND_ROWS whose load the rounds
    measured, or both for PEAK_ROWS."""
    e = res.get(s, {})
    rounds = e.get("churn", [])
    if key in PEAK_ROWS:
        runs = e.get("reps", []) + rounds
    elif key in ROUND_ROWS and any(ROUND_ROWS[key] in r for r in rounds):
        runs = rounds
    else:
        runs = e.get("reps", [])
    return [r for r in runs if r.get("status") == "ok"]


def peak(vals):
    return max((v for v in vals if v is not None), default=None)


def cpu_per_gb(run):
    """Proxy CPU seconds per GB over a run's two iperf3 loads."""
    loads = [run.get(k) or {} for k in ("iperf1", "iperf4")]
    cpu = [e.get("proxy_cpu_s") for e in loads]
    b = [e.get("bytes") for e in loads]
    if None in cpu or None in b or not sum(b):
        return None
    return sum(cpu) / (sum(b) / 1e9)


def figures(res):
    """Rows: (key, label, unit, better, {setup: value}). better: 'hi' or 'lo'."""

    def g(rep, *path):
        v = rep
        for p in path:
            if not isinstance(v, dict):
                return None
            v = v.get(p)
        return v

    def per(s, load, num_key, scale):
        cpu = g(s, load, "proxy_cpu_s")
        n = g(s, load, num_key)
        if cpu is None or not n:
            return None
        return cpu / (n / scale)

    def mib(v):
        return None if v is None else v / 1024.0

    def idle_per_conn_kib(s):
        a, b, n = g(s, "idle", "rss_before_kib"), g(s, "idle", "rss_kib"), g(s, "idle", "opened")
        if a is None or b is None or not n:
            return None
        return (b - a) / n

    def peak_rss(s):
        # VmHWM is updated lazily by the kernel (memory given back with
        # madvise does not raise it), so take the max with the 5 Hz samples.
        c = [g(s, "hwm_kib"), g(s, "idle", "rss_kib")] + \
            [g(s, k, "proxy_rss_max_kib") for k in ("iperf1", "iperf4", "wrk_ka", "wrk_close")]
        c = [v for v in c if v is not None]
        return max(c) if c else None

    def busy_pct(s, load):
        cpu, wall = g(s, load, "proxy_cpu_s"), g(s, load, "seconds")
        return 100.0 * cpu / wall if cpu is not None and wall else None

    def foreign_pct(s):
        c = [g(s, k, "foreign_cpu_cores") for k in ("iperf1", "iperf4", "wrk_ka", "wrk_close")]
        c = [v for v in c if v is not None]
        return 100.0 * sum(c) / len(c) if c else None

    def errs(s, load):
        e = g(s, load, "socket_errors")
        if e is None:
            return None
        return sum(e.values()) + (g(s, load, "non_2xx") or 0)

    rows = [
        ("iperf1_gbps", "iperf3 1 stream", "Gbit/s", "hi", lambda s: g(s, "iperf1", "gbps")),
        ("iperf4_gbps", "iperf3 4 streams", "Gbit/s", "hi", lambda s: g(s, "iperf4", "gbps")),
        ("ka_rps", "HTTP keep-alive", "req/s", "hi", lambda s: g(s, "wrk_ka", "rps")),
        ("ka_p99_ms", "HTTP keep-alive p99", "ms", "lo", lambda s: g(s, "wrk_ka", "p99_ms")),
        ("close_cps", "HTTP Connection: close", "conn/s", "hi", lambda s: g(s, "wrk_close", "rps")),
        ("close_p99_ms", "HTTP Connection: close p99", "ms", "lo", lambda s: g(s, "wrk_close", "p99_ms")),
        ("cpu_per_gb", "proxy CPU per GB (iperf3)", "cpu-s/GB", "lo", cpu_per_gb),
        ("iperf4_busy_pct", "proxy CPU use, iperf3 4 streams", "% core", "lo", lambda s: busy_pct(s, "iperf4")),
        ("cpu_per_1k_conn", "proxy CPU per 1000 conns", "cpu-s", "lo",
         lambda s: per(s, "wrk_close", "requests", 1000.0)),
        ("cpu_per_100k_req", "proxy CPU per 100k ka reqs", "cpu-s", "lo",
         lambda s: per(s, "wrk_ka", "requests", 100000.0)),
        ("rss_start_mib", "proxy RSS after start", "MiB", "lo", lambda s: mib(g(s, "rss_start_kib"))),
        ("rss_idle_mib", "proxy RSS, N idle conns", "MiB", "lo", lambda s: mib(g(s, "idle", "rss_kib"))),
        ("idle_kib_per_conn", "proxy RSS per idle conn", "KiB", "lo", idle_per_conn_kib),
        ("hwm_mib", "proxy peak RSS", "MiB", "lo", lambda s: mib(peak_rss(s))),
        ("foreign_pct", "background CPU (not ours)", "% core", "lo", foreign_pct),
    ]
    out = []
    for key, label, unit, better, fn in rows:
        vals, per_rep = {}, {}
        for s in SETUPS:
            per_rep[s] = [fn(r) for r in ok_runs(res, s, key)]
            vals[s] = (peak if key in PEAK_ROWS else median)(per_rep[s])
        out.append((key, label, unit, better, vals, per_rep))
        if key == "close_p99_ms":
            # A total, not a median: any error is worth seeing.
            vals, per_rep = {}, {}
            for s in SETUPS:
                e = [errs(r, "wrk_ka") for r in ok_runs(res, s, "ka_rps")] + \
                    [errs(r, "wrk_close") for r in ok_runs(res, s, "close_cps")]
                per_rep[s] = e
                e = [v for v in e if v is not None]
                vals[s] = sum(e) if e else None
            out.append(("wrk_errors", "wrk errors (ka + close), total", "count", "lo", vals, per_rep))
    return out


def cpu_per_request(e):
    """Proxy CPU seconds per request of one wrk load (per connection for
    Connection: close)."""
    cpu, n = e.get("proxy_cpu_s"), e.get("requests")
    return cpu / n if cpu is not None and n else None


# Figures compared round by round: (key, label, loads, better, value of a
# round, given that each of its loads ran and parsed).
ROUND_FIGURES = [
    ("iperf1_gbps", "iperf3 1 stream", ("iperf1",), "hi", lambda r: r["iperf1"].get("gbps")),
    ("iperf4_gbps", "iperf3 4 streams", ("iperf4",), "hi", lambda r: r["iperf4"].get("gbps")),
    ("cpu_per_gb", "CPU per GB", ("iperf1", "iperf4"), "lo", cpu_per_gb),
    ("ka_rps", "keep-alive req/s", ("wrk_ka",), "hi", lambda r: r["wrk_ka"].get("rps")),
    ("ka_p99_ms", "keep-alive p99", ("wrk_ka",), "lo", lambda r: r["wrk_ka"].get("p99_ms")),
    ("cpu_per_100k_req", "CPU per keep-alive request", ("wrk_ka",), "lo", lambda r: cpu_per_request(r["wrk_ka"])),
    ("close_cps", "Connection: close conn/s", ("wrk_close",), "hi", lambda r: r["wrk_close"].get("rps")),
    ("close_p99_ms", "Connection: close p99", ("wrk_close",), "lo", lambda r: r["wrk_close"].get("p99_ms")),
    ("cpu_per_1k_conn", "CPU per connection", ("wrk_close",), "lo", lambda r: cpu_per_request(r["wrk_close"])),
]


def round_value(r, loads, fn):
    """fn(r) for a round that is ok and whose loads all parsed, else None."""
    if r.get("status") != "ok":
        return None
    if not all(isinstance(r.get(k), dict) and "error" not in r[k] for k in loads):
        return None
    return fn(r)


def median_ci(vals, level=0.95):
    """A distribution-free confidence interval for the median of `vals`:
    the order statistics x(j) and x(n+1-j) for the largest j whose coverage,
    1 - 2 P(B < j) with B ~ Binomial(n, 1/2), is at least `level`. Returns
    (low, high, coverage), or None when there are too few values (n < 6
    at 95%)."""
    xs = sorted(v for v in vals if v is not None)
    n = len(xs)
    best = None
    below = 0  # P(B < j) * 2**n
    for j in range(1, n // 2 + 1):
        below += math.comb(n, j - 1)
        coverage = 1.0 - 2.0 * below / 2 ** n
        if coverage < level:
            break
        best = (xs[j - 1], xs[n - j], coverage)
    return best


def round_ratios(res):
    """For each figure of ROUND_FIGURES: ferry against the HAProxy variant
    with the better median over the rounds, round by round. The variant is
    chosen once per figure: taking the better of two noisy variants in each
    round would favour HAProxy by the noise alone."""
    out = []
    for key, label, loads, better, fn in ROUND_FIGURES:
        per = {}
        for s in ["ferry"] + HAPROXIES:
            per[s] = [round_value(r, loads, fn) for r in res.get(s, {}).get("churn", [])]
        meds = [(median(per[h]), h) for h in HAPROXIES if median(per[h]) is not None]
        if not meds or median(per["ferry"]) is None:
            continue
        _, variant = max(meds) if better == "hi" else min(meds)
        ratios = [f / h for f, h in zip(per["ferry"], per[variant]) if f is not None and h]
        if not ratios:
            continue
        ahead = sum(1 for x in ratios if (x >= 1.0 if better == "hi" else x <= 1.0))
        ci = median_ci(ratios)
        verdict = "too few rounds"
        if ci is not None:
            lo, hi, _ = ci
            if (lo > 1.0 and better == "hi") or (hi < 1.0 and better == "lo"):
                verdict = "ferry ahead"
            elif (hi < 1.0 and better == "hi") or (lo > 1.0 and better == "lo"):
                verdict = "ferry behind"
            else:
                verdict = "level (no difference these rounds can show)"
        out.append({
            "key": key, "label": label, "better": "higher" if better == "hi" else "lower",
            "variant": variant, "ratios": ratios, "median": median(ratios),
            "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
            "ci_coverage": ci[2] if ci else None, "ferry_ahead_or_level": ahead, "n": len(ratios),
            "verdict": verdict,
        })
    return out


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 1000):
        return f"{int(v):,}"
    av = abs(v)
    if av >= 1000:
        return f"{v:,.0f}"
    if av >= 100:
        return f"{v:.1f}"
    if av >= 10:
        return f"{v:.2f}"
    return f"{v:.3f}"


def best_haproxy(better, vals):
    cands = [(vals[h], h) for h in HAPROXIES if vals.get(h) is not None]
    if not cands:
        return None, None
    pick = max(cands) if better == "hi" else min(cands)
    return pick


def build_table(res, meta):
    rows = figures(res)
    idle_n = meta.get("idle_conns", "1000")
    # ferry-splice (FERRY_SPLICE=1) is an optional fifth setup: shown only if it ran.
    shown = [s for s in SETUPS if s != "ferry-splice" or res.get(s, {}).get("status", "not run") != "not run"]
    with_fs = "ferry-splice" in shown
    head = ["figure", "unit", "better"] + [("DIRECT" if s == "direct" else s) for s in shown] + \
        ["ferry/best-hap", "ferry/direct"] + (["ferry-spl/hap-spl"] if with_fs else [])
    table = [head]
    summary = []
    for key, label, unit, better, vals, per_rep in rows:
        label = label.replace("N idle", f"{idle_n} idle")
        bh, bh_name = best_haproxy(better, vals)
        if key in INDICATORS:  # read beside the figures, not compared
            bh, bh_name = None, None
        f = vals.get("ferry")
        r_h = f / bh if f is not None and bh else None
        d = vals.get("direct")
        r_d = f / d if f is not None and d and key not in INDICATORS else None
        cells = [label, unit, "higher" if better == "hi" else "lower"]
        for s in shown:
            st = res.get(s, {}).get("status", "")
            if vals[s] is None and st.startswith("skipped"):
                cells.append("skip")
            elif vals[s] is None and st.startswith("failed"):
                cells.append("FAIL")
            elif unit == "count" and vals[s] is not None:
                cells.append(f"{round(vals[s]):,}")
            else:
                cells.append(fmt(vals[s]))
        rh_cell = "-" if r_h is None else f"{r_h:.2f}x" + ("*" if bh_name == "haproxy-splice" else "")
        cells.append(rh_cell)
        cells.append("-" if r_d is None else f"{r_d:.2f}x")
        fs, hs = vals.get("ferry-splice"), vals.get("haproxy-splice")
        r_s = fs / hs if fs is not None and hs and key not in INDICATORS else None
        if with_fs:
            cells.append("-" if r_s is None else f"{r_s:.2f}x")
        table.append(cells)
        summary.append({
            "key": key, "label": label, "unit": unit,
            "better": "higher" if better == "hi" else "lower",
            "values": vals, "per_repetition": per_rep, "best_haproxy": bh_name,
            "ferry_over_best_haproxy": r_h, "ferry_over_direct": r_d,
            "ferry_splice_over_haproxy_splice": r_s,
        })
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = []
    for i, r in enumerate(table):
        cells = [r[0].ljust(widths[0])] + [c.rjust(widths[j]) if j >= 3 else c.ljust(widths[j])
                                          for j, c in enumerate(r) if j > 0]
        lines.append(" | ".join(cells).rstrip())
        if i == 0:
            lines.append("-+-".join("-" * w for w in widths))
    lines.append("")
    lines.append("Ratios: ferry divided by the better of the two HAProxy variants (or by DIRECT) for that row.")
    lines.append("  'better' column: for 'higher' rows a ratio > 1.00x favours ferry; for 'lower' rows a ratio < 1.00x")
    lines.append("  favours ferry. '*' = the better HAProxy variant for that row was haproxy-splice.")
    if with_fs:
        lines.append("  ferry-splice = ferryd with [node] copy = \"splice\"; ferry-spl/hap-spl = ferry-splice / haproxy-splice.")
    lines.append("  GB = 1e9 bytes received by iperf3 (both runs). CPU = proxy utime+stime from /proc/PID/stat.")
    lines.append("  Proxy CPU use = its CPU seconds over the 4-stream load's seconds: well under the CPUs the proxy")
    lines.append("  may use means the proxy was not what limited that throughput (the load generator was).")
    lines.append("  Peak RSS = max(VmHWM, 5 Hz VmRSS samples).")
    lines.append("  Background CPU = CPU used by processes the script did not start (ksoftirqd, which carries")
    lines.append("  the load's loopback traffic, counts as started), mean over the four loads")
    lines.append("  (should be ~0; if not, another job was running and the figures are noisy; loads that saw")
    lines.append("  >= 10% are measured again up to NOISY_RETRIES times, the quietest attempt is kept).")
    lines.append("  Connection: close conn/s = completed requests/s, one new TCP connection each (client->proxy->upstream).")
    lines.append("  '-' = not applicable/not measured, 'skip' = setup skipped, 'FAIL' = setup failed.")
    n_rounds = meta.get("rounds", meta.get("churn_rounds", "0"))
    if n_rounds not in ("", "0"):
        in_rounds = {k for e in res.values() for r in e.get("churn", []) for k in r}
        if "iperf4" in in_rounds:
            what = "Throughput, HTTP and CPU rows"
        elif "wrk_ka" in in_rounds:
            what = "HTTP rows (keep-alive and Connection: close)"
        else:
            what = "Connection: close rows"
        lines.append(f"  {what}: median of {n_rounds} rounds, run after the repetitions with")
        lines.append("  every proxy up at once and loaded one at a time, every setup following every other equally often.")
        rr = round_ratios(res)
        if rr:
            lines.append("  Same round, ferry / the HAProxy variant with the better median over the rounds; the")
            lines.append("  median ratio with a distribution-free interval (order statistics, coverage shown).")
            lines.append("  'ahead' or 'behind' only when the whole interval is on one side of 1.00x.")
            w = max(len(r["label"]) for r in rr)
            for r in rr:
                ci = "" if r["ci_low"] is None else \
                    f" [{r['ci_low']:.2f}, {r['ci_high']:.2f}] ({100 * r['ci_coverage']:.1f}%)"
                lines.append(f"    {r['label'].ljust(w)} vs {r['variant']}: median {r['median']:.2f}x{ci}, "
                             f"ferry ahead or level in {r['ferry_ahead_or_level']} of {r['n']}: {r['verdict']}")
                lines.append(f"    {''.ljust(w)}    rounds: " + " ".join(f"{x:.2f}" for x in r["ratios"]))
    notes = []
    for s in shown:
        st = res.get(s, {}).get("status", "not run")
        if st != "ok":
            notes.append(f"  {s}: {st}")
        runs = [(f"{s} rep {i + 1}", r) for i, r in enumerate(res.get(s, {}).get("reps", []))] + \
            [(f"{s} round {i + 1}", r) for i, r in enumerate(res.get(s, {}).get("churn", []))]
        for tag, r in runs:
            for load in ("iperf1", "iperf4", "wrk_ka", "wrk_close"):
                e = r.get(load, {})
                if e.get("error"):
                    notes.append(f"  {tag} {load}: {e['error']}")
                elif e.get("rc") not in (None, 0):
                    notes.append(f"  {tag} {load}: load generator exit code {e['rc']}")
                se = e.get("socket_errors")
                if se and sum(se.values()):
                    notes.append(f"  {tag} {load}: wrk socket errors {se}")
                if e.get("non_2xx"):
                    notes.append(f"  {tag} {load}: {e['non_2xx']} non-2xx responses")
                fc = e.get("foreign_cpu_cores")
                if fc is not None and fc > 0.1:
                    notes.append(f"  {tag} {load}: other processes used {100 * fc:.0f}% of a core during "
                                 f"this load (kept attempt {e.get('kept_attempt', 1)} of {e.get('attempts', 1)}, "
                                 f"the quietest); its figures are suspect")
                mi = e.get("min_interval_gbps")
                if mi is not None and e.get("gbps") and mi < 0.5 * e["gbps"]:
                    notes.append(f"  {tag} {load}: throughput dipped to {mi} Gbit/s in some second "
                                 f"(avg {e['gbps']:.2f}); intervals {e.get('interval_gbps')}")
            idle = r.get("idle") or {}
            if idle and (idle.get("opened") != idle.get("requested") or idle.get("closed_by_peer")
                         or idle.get("error")):
                notes.append(f"  {tag} idle conns: opened {idle.get('opened')}/{idle.get('requested')}, "
                             f"closed by proxy {idle.get('closed_by_peer')}, errors {idle.get('connect_errors')}"
                             f"{' ' + idle['error'] if idle.get('error') else ''}")
            if r.get("log_warn_error_lines"):
                notes.append(f"  {tag}: {r['log_warn_error_lines']} warning/error lines in its log "
                             f"(last: {[ln for ln in r.get('log_tail', [])][-1:]})")
    if notes:
        lines.append("")
        lines.append("Notes:")
        lines.extend(notes)
    return "\n".join(lines) + "\n", summary


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
    res = collect(raw, meta)
    header = (
        f"ferry L4 benchmark {meta.get('timestamp', '')}  host={meta.get('hostname', '')} "
        f"kernel={meta.get('kernel', '')} cpus={meta.get('nproc', '')}\n"
        f"iperf3 -t {meta.get('iperf_duration', '')}s; wrk -t{meta.get('wrk_threads', '')} "
        f"-c{meta.get('wrk_conns', '')} -d{meta.get('wrk_duration', '')}s; idle conns {meta.get('idle_conns', '')}; "
        f"CPU busy before start {meta.get('cpu_busy_pct_start', '?')}%; "
        f"loadavg start {meta.get('loadavg_start', '')} end {meta.get('loadavg_end', '')}; "
        f"repetitions {meta.get('repeat', '1')}, rounds {meta.get('rounds', meta.get('churn_rounds', '0'))} (median shown)\n"
        f"CPU pinning: {meta.get('pin', 'none')}; HAProxy nbthread {meta.get('haproxy_threads', '2')}\n"
        f"{meta.get('versions', '')}\n"
    )
    table, summary = build_table(res, meta)
    text = header + "\n" + table
    with open(txt_out, "w", encoding="utf-8") as f:
        f.write(text)
    with open(json_out, "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "figures": summary, "round_ratios": round_ratios(res), "setups": res},
                  f, indent=2)
        f.write("\n")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
