#!/usr/bin/env python3
"""Report of ops/bench/gossip.sh (stdlib only).

Reads the raw results of a run:
  RESULTS/<system>/n<N>/rep<k>/{join,detect,leave}.json   gossip_poll.py output
  RESULTS/idle/idle.json                                  gossip_poll.py idle
  RESULTS/sim.jsonl                                       sim_bench output
and prints the side-by-side table (medians over repetitions, ratios ferry /
Serf), the simulation table and the targets of issue 4; writes the same as
JSON and text.
"""

import argparse
import glob
import json
import math
import os
import statistics
import sys

SYSTEMS = ["serf", "ferry-lan", "ferry-fast"]
PHASES = [("join", "join convergence"), ("detect", "failure detection"), ("leave", "graceful leave")]
OTHER_SUSPECT = 0.5   # cores of someone else's work that make a figure suspect
SERF_ISSUE = {5: 5.8, 20: 8.5}   # Serf detection measured before, quoted in issue 4


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt(v, digits=3):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.{digits}g}" if v else "0"


def table(rows, header):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(str(h).ljust(w) if i == 0 else str(h).rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return lines


def collect_clusters(results):
    """{system: {n: {phase: [json per rep]}}}"""
    out = {}
    for path in sorted(glob.glob(os.path.join(results, "*", "n*", "rep*"))):
        rep_dir = path
        n_dir = os.path.dirname(rep_dir)
        system = os.path.basename(os.path.dirname(n_dir))
        try:
            n = int(os.path.basename(n_dir)[1:])
        except ValueError:
            continue
        for phase, _ in PHASES:
            data = load(os.path.join(rep_dir, f"{phase}.json"))
            out.setdefault(system, {}).setdefault(n, {}).setdefault(phase, []).append(data)
    return out


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def cluster_section(clusters, lines, report):
    systems = [s for s in SYSTEMS if s in clusters]
    sizes = sorted({n for s in systems for n in clusters[s]})
    header = ["metric (s, median)", *systems]
    ratio_cols = [s for s in systems if s != "serf"] if "serf" in systems else []
    header += [f"{s.replace('ferry-', '')}/serf" for s in ratio_cols] + ["better"]
    rows = []
    figures = {}
    notes = []
    suspect_phases = []
    for n in sizes:
        for phase, title in PHASES:
            vals = {}
            cells = {}
            for s in systems:
                reps = clusters[s].get(n, {}).get(phase, [])
                elapsed = [r.get("elapsed_s") if r and r.get("ok") else None for r in reps]
                failed = sum(1 for e in elapsed if e is None)
                # a repetition that timed out counts as infinitely slow
                vals[s] = statistics.median([math.inf if e is None else e for e in elapsed]) if reps else None
                cell = fmt(vals[s]) if vals[s] is None or math.isfinite(vals[s]) else "timeout"
                if failed:
                    cell += f" ({failed}/{len(reps)} t/o)"
                cells[s] = cell
                suspect = any(r and r.get("cpu", {}).get("other_cores", 0) >= OTHER_SUSPECT for r in reps)
                figures.setdefault(s, {}).setdefault(str(n), {})[phase] = {
                    "median_s": vals[s] if vals[s] is None or math.isfinite(vals[s]) else None,
                    "timed_out_reps": failed, "reps": len(reps), "per_rep_s": elapsed,
                    "per_rep_first_s": [r.get("first_s") if r else None for r in reps],
                    "other_cores": [r.get("cpu", {}).get("other_cores") if r else None for r in reps],
                    "false_suspicions": [r.get("false_suspicions") if r else None for r in reps],
                    "stragglers": [{k: v for k, v in (r.get("per_observer_s") or {}).items() if v is None} if r else None
                                   for r in reps],
                }
                if failed:
                    notes.append(f"{s} n={n} {phase}: {failed} of {len(reps)} repetitions timed out "
                                 f"(a member never reported the change)")
                if suspect:
                    suspect_phases.append(f"{s} n={n} {phase}")
            row = [f"{title}, n={n}"] + [cells[s] for s in systems]
            for s in ratio_cols:
                a, b = vals.get(s), vals.get("serf")
                row.append(f"{a / b:.2f}" if a is not None and b and math.isfinite(a) and math.isfinite(b) else "-")
            row.append("lower")
            rows.append(row)
    if suspect_phases:
        notes.append(f"someone else's work used >= {OTHER_SUSPECT} core during at least one repetition of: "
                     + ", ".join(suspect_phases))
    lines += table(rows, header)
    lines.append("")
    lines.append("ratio = ferry / Serf; < 1 favours ferry. join: from starting member N until all N list all N alive;")
    lines.append("detection: kill -9 of member N until every survivor reports it down (Serf: failed);")
    lines.append("leave: SIGTERM (ferry) / SIGINT (Serf) of member N-1 until every remaining member reports it left.")
    lines.append("t/o: repetitions where a member never reported the change within EVENT_TIMEOUT / JOIN_TIMEOUT;")
    lines.append("they count as infinitely slow in the median.")
    for note in notes:
        lines.append(f"  note: {note}")
    # per-repetition detail
    lines.append("")
    lines.append("per repetition, s (slowest member; first member in brackets):")
    for s in systems:
        for n in sizes:
            parts = []
            for phase, _ in PHASES:
                reps = clusters[s].get(n, {}).get(phase, [])
                vals = ", ".join(
                    f"{fmt(r.get('elapsed_s'))} ({fmt(r.get('first_s'))})" if r and r.get("ok")
                    else f"TIMEOUT ({r.get('reached')}/{r.get('observers')} members"
                         + (f"; last seen by the others: {r['last_state_of_stragglers']}" if r.get("last_state_of_stragglers") else "")
                         + ")" if r else "MISSING"
                    for r in reps)
                parts.append(f"{phase} {vals}")
            fs = [r.get("false_suspicions") for r in clusters[s].get(n, {}).get("detect", []) + clusters[s].get(n, {}).get("leave", []) if r]
            nfs = sum(len(f) for f in fs if f)
            lines.append(f"  {s} n={n}: " + "; ".join(parts) + f"; other members seen suspect/down meanwhile: {nfs}")
    report["clusters"] = figures
    return figures


def sim_section(results, lines, report):
    path = os.path.join(results, "sim.jsonl")
    rows_raw = []
    try:
        with open(path) as f:
            rows_raw = [json.loads(l) for l in f if l.strip()]
    except (OSError, ValueError):
        return None
    if not rows_raw:
        return None
    groups = {}
    for r in rows_raw:
        groups.setdefault((r["profile"], r["n"], r["event"]), []).append(r)
    seeds = max(len(v) for v in groups.values())
    lines.append("")
    lines.append(f"simulation: ferry-gossip SimCluster, no sockets, virtual time, 1 ms latency; medians over {seeds} seeds")
    header = ["profile", "N", "max tx", "log2 N", "crash: first down ms", "all down ms", "worst", "spread ms",
              "spread gossip rounds", "/log2 N", "join: all up ms", "join gossip rounds", "/log2 N", "pkts/member/s", "slow seeds", "incomplete"]
    rows = []
    summary = {}
    for profile in ("lan", "fast"):
        sizes = sorted({n for (p, n, _e) in groups if p == profile})
        for n in sizes:
            crash = groups.get((profile, n, "crash"), [])
            join = groups.get((profile, n, "join"), [])
            lg = math.log2(n)
            c = {k: med([r[k] for r in crash]) for k in ("first_down_ms", "all_down_ms", "spread_ms", "spread_gossip_rounds", "packets_per_member_per_s")}
            j = {k: med([r[k] for r in join]) for k in ("all_up_ms", "all_up_gossip_rounds", "packets_per_member_per_s")}
            incomplete = sum(1 for r in crash + join if not r.get("complete"))
            summary.setdefault(profile, {})[str(n)] = dict(
                log2_n=round(lg, 3), crash=c, join=j, incomplete=incomplete,
                gossip_interval_ms=(crash or join)[0]["gossip_interval_ms"],
                probe_period_ms=(crash or join)[0]["probe_period_ms"],
                suspect_to_down_ms=(crash or join)[0]["suspect_to_down_ms"],
                spread_rounds_per_seed=[r["spread_gossip_rounds"] for r in crash],
                join_rounds_per_seed=[r["all_up_gossip_rounds"] for r in join])
            worst = max((r["all_down_ms"] for r in crash), default=None)
            slow = sum(1 for r in crash if r["spread_gossip_rounds"] > 10 or not r.get("complete"))
            summary[profile][str(n)]["crash"]["slow_seeds"] = slow
            summary[profile][str(n)]["crash"]["worst_all_down_ms"] = worst
            summary[profile][str(n)]["max_transmissions"] = (crash or join)[0].get("max_transmissions")
            rows.append([profile, n, (crash or join)[0].get("max_transmissions", "-"), f"{lg:.2f}",
                         fmt(c["first_down_ms"]), fmt(c["all_down_ms"]), fmt(worst), fmt(c["spread_ms"]),
                         fmt(c["spread_gossip_rounds"]),
                         f"{c['spread_gossip_rounds'] / lg:.2f}" if c["spread_gossip_rounds"] is not None else "-",
                         fmt(j["all_up_ms"]), fmt(j["all_up_gossip_rounds"]),
                         f"{j['all_up_gossip_rounds'] / lg:.2f}" if j["all_up_gossip_rounds"] is not None else "-",
                         f"{fmt(c['packets_per_member_per_s'])} / {fmt(j['packets_per_member_per_s'])}",
                         f"{slow}/{len(crash)}", incomplete])
    lines += table(rows, header)
    lines.append("crash: member N/2 stops; 'first down' = probe + suspicion until the first member declares it down,")
    lines.append("'spread' = from there until the last member does (the dissemination). join: a new member announces to")
    lines.append("member 0, until every member reports it up. Rounds are gossip intervals (lan 200 ms, fast 50 ms).")
    lines.append("worst: the slowest seed's crash-to-everyone time. max tx: foca's max_transmissions per update.")
    lines.append("slow seeds: crashes whose spread took over 10 gossip rounds (a member missed every retransmission")
    lines.append("of the down notice). incomplete: crash or join measurements a member never learned within the limit.")
    lines.append("pkts/member/s: every datagram sent during the crash / the join measurement.")
    report["sim"] = summary
    return summary


def sim_tail_section(results, lines, report):
    """The simulation at the cluster sizes, many seeds: how often a crash or
    a join misses a member, with retransmissions scaled to N and fixed."""
    rows = []
    out = {}
    for label in ("scaled", "fixed"):
        path = os.path.join(results, f"sim-tail-{label}.jsonl")
        try:
            with open(path) as f:
                data = [json.loads(l) for l in f if l.strip()]
        except (OSError, ValueError):
            continue
        groups = {}
        for r in data:
            groups.setdefault((r["profile"], r["n"]), []).append(r)
        for (profile, n), rs in sorted(groups.items()):
            crash = [r for r in rs if r["event"] == "crash"]
            join = [r for r in rs if r["event"] == "join"]
            if not crash or not join:
                continue
            slow = sum(1 for r in crash if r["spread_gossip_rounds"] > 10 or not r["complete"])
            fig = dict(expected_members=crash[0].get("expected_members"), max_transmissions=crash[0]["max_transmissions"],
                       seeds=len(crash), crash_median_ms=med([r["all_down_ms"] for r in crash]),
                       crash_worst_ms=max(r["all_down_ms"] for r in crash), slow_crashes=slow,
                       join_median_ms=med([r["all_up_ms"] for r in join]),
                       join_worst_ms=max(r["all_up_ms"] for r in join),
                       join_incomplete=sum(1 for r in join if not r["complete"]))
            out.setdefault(label, {}).setdefault(profile, {})[str(n)] = fig
            rows.append([profile, n, fig["expected_members"], fig["max_transmissions"], fmt(fig["crash_median_ms"]),
                         fmt(fig["crash_worst_ms"]), f"{slow}/{len(crash)}", fmt(fig["join_median_ms"]),
                         fmt(fig["join_worst_ms"]), fig["join_incomplete"]])
    if not rows:
        return None
    lines.append("")
    lines.append("simulation tail at the cluster sizes: foca's retransmissions (max tx) scaled to N, and fixed as ferryd")
    lines.append("sets them today (expected_members 5)")
    lines += table(rows, ["profile", "N", "expected", "max tx", "crash: all down ms", "worst", "slow",
                          "join: all up ms", "worst", "incomplete"])
    report["sim_tail"] = out
    return out


def log_growth(summary):
    """Per profile and event: rounds / log2 N at every size. O(log N) holds
    when that ratio does not grow: its value at the largest N is at most
    1.25 x its median over all sizes (a medians-of-seeds figure, so one slow
    seed does not decide it)."""
    out = {}
    for profile, by_n in (summary or {}).items():
        sizes = sorted(by_n, key=int)
        if len(sizes) < 2:
            continue
        for event, (part, key) in (("crash spread", ("crash", "spread_gossip_rounds")),
                                   ("join", ("join", "all_up_gossip_rounds"))):
            per = {n: by_n[n][part][key] / math.log2(int(n)) for n in sizes if by_n[n][part][key] is not None}
            if len(per) < 2:
                continue
            hi = sizes[-1]
            if hi not in per:
                continue
            mid = statistics.median(per.values())
            out[f"{profile} {event}"] = dict(
                per_log2n={n: round(v, 2) for n, v in per.items()},
                rounds={n: by_n[n][part][key] for n in sizes},
                n_lo=int(sizes[0]), n_hi=int(hi), median_per_log2n=round(mid, 2),
                at_hi=round(per[hi], 2), ok=per[hi] <= 1.25 * mid)
    return out


def targets(figures, idle, sim_growth, meta, lines, report):
    res = []

    def add(ok, text):
        res.append({"ok": ok, "text": text})
        lines.append(f"  [{'met' if ok else 'NOT MET' if ok is not None else 'n/a'}] {text}")

    lines.append("")
    lines.append("targets (issue 4):")
    for n, prev in sorted(SERF_ISSUE.items()):
        serf = figures.get("serf", {}).get(str(n), {}).get("detect", {}).get("median_s")
        for s in ("ferry-lan", "ferry-fast"):
            f = figures.get(s, {}).get(str(n), {}).get("detect", {}).get("median_s")
            if f is None or serf is None:
                continue
            add(f <= serf, f"{s} detection <= Serf's (default LAN) at n={n}: {f:.2f} vs {serf:.2f} s "
                           f"(Serf measured {prev} s before)")
    for n in sorted({int(k) for k in figures.get("ferry-fast", {})}):
        d = figures["ferry-fast"][str(n)].get("detect", {})
        f = d.get("median_s")
        if f is None and not d.get("reps"):
            continue
        per = [math.inf if e is None else e for e in d.get("per_rep_s", [])]
        over = sum(1 for e in per if e >= 1.0)
        worst = max(per) if per else None
        add(f is not None and f < 1.0,
            f"ferry-fast detection < 1 s at n={n}: median {fmt(f)} s; {over} of {len(per)} repetitions at 1 s or more"
            + (f" (worst {fmt(worst) if worst is not None and math.isfinite(worst) else 'timeout'} s)" if over else ""))
    for n in sorted({int(k) for s in ("ferry-lan", "ferry-fast") for k in figures.get(s, {})}):
        for s in ("ferry-lan", "ferry-fast"):
            for phase in ("join", "detect", "leave"):
                d = figures.get(s, {}).get(str(n), {}).get(phase, {})
                if d.get("timed_out_reps"):
                    add(False, f"{s} n={n} {phase}: every member reports the change within the timeout: "
                               f"{d['timed_out_reps']} of {d['reps']} repetitions timed out")
    if idle is not None:
        secs = idle.get("duration_s", 0)
        short = "" if secs >= 600 else f" (only {secs:.0f} s: shorter than the 10-minute target)"
        add(idle.get("non_alive_reports", 1) == 0 and idle.get("failed_polls", 1) == 0,
            f"ferry-fast idle: zero members reported suspect/down over {secs:.0f} s with {idle.get('members')} members: "
            f"{idle.get('non_alive_reports')} reports {idle.get('by_state')}, {idle.get('failed_polls')} failed polls{short}")
    for name, g in (sim_growth or {}).items():
        rounds = ", ".join(f"{n}: {fmt(v)}" for n, v in g["rounds"].items())
        add(g["ok"], f"sim {name}: gossip rounds O(log N) (median over seeds; N: rounds) {rounds}; rounds/log2 N "
                     f"{g['at_hi']} at N={g['n_hi']} against a median of {g['median_per_log2n']} over all N "
                     f"(met when <= 1.25x)")
    sim = report.get("sim") or {}
    if sim:
        slow = {p: (sum(v["crash"].get("slow_seeds", 0) for v in by_n.values()),
                    sum(len(v["spread_rounds_per_seed"]) for v in by_n.values()),
                    sum(v["incomplete"] for v in by_n.values())) for p, by_n in sim.items()}
        add(all(s == 0 and i == 0 for s, _, i in slow.values()),
            "sim tail (not an issue target; what the medians hide): every crash spreads within 10 gossip rounds "
            "and every change reaches everyone: " + "; ".join(
                f"{p}: {s}/{t} slow crashes, {i} incomplete" for p, (s, t, i) in slow.items()))
    report["targets"] = res


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--results", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--txt", required=True)
    p.add_argument("--meta", action="append", default=[])
    args = p.parse_args()
    meta = dict(m.split("=", 1) for m in args.meta)
    report = {"meta": meta}
    lines = ["ferry vs Serf: gossip membership on loopback (ops/bench/gossip.sh)"]
    lines += [f"  {k}: {v}" for k, v in meta.items()]
    lines.append("")
    clusters = collect_clusters(args.results)
    figures = cluster_section(clusters, lines, report) if clusters else {}
    idle = load(os.path.join(args.results, "idle", "idle.json"))
    if idle is not None:
        report["idle"] = idle
        lines.append("")
        lines.append(f"idle (ferry fast, {idle.get('members')} members, {idle.get('duration_s')} s, every member polled "
                     f"every second): {idle.get('non_alive_reports')} non-alive reports {idle.get('by_state')}, "
                     f"members ever reported {idle.get('members_ever_reported')}, {idle.get('failed_polls')} failed polls; "
                     f"cores: members {idle.get('cpu', {}).get('members_cores')}, other {idle.get('cpu', {}).get('other_cores')}")
        for e in idle.get("first_events", [])[:10]:
            lines.append(f"  at {e[0]} s: {e[1]} saw {e[2]} {e[3]}")
    summary = sim_section(args.results, lines, report)
    tail = sim_tail_section(args.results, lines, report)
    growth = log_growth(summary)
    report["sim_growth"] = growth
    targets(figures, idle, growth, meta, lines, report)
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(args.txt, "w") as f:
        f.write(text)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
