#!/usr/bin/env python3
"""Tests of chaos_report.py: the figures and the pass/fail of each target of
issue 24 on fixed inputs.

Run: python3 -B -m unittest discover -s ops/bench -p 'test_*.py'
"""

import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import chaos_report as C  # noqa: E402


def off_round(none, policy):
    """One phase-1 round: {load: value} for each state (Gbit/s or req/s)."""
    def state(v):
        return {"iperf1": {"gbps": v["iperf1"]}, "iperf4": {"gbps": v["iperf4"]},
                "wrk_ka": {"rps": v["ka"], "p99_ms": 1.0}, "wrk_close": {"rps": v["close"], "p99_ms": 3.0}}
    return {"none": state(none), "policy": state(policy)}


def same(x):
    return {"iperf1": x, "iperf4": x, "ka": x, "close": x}


def lat_run(added_p50, added_p99, plain_p50=0.3, plain_p99=1.0):
    return {"shaped": {"p50_ms": plain_p50 + added_p50, "p99_ms": plain_p99 + added_p99, "answered": 5000, "lost": 0},
            "plain": {"p50_ms": plain_p50, "p99_ms": plain_p99, "answered": 5000, "lost": 0},
            "added_p50_ms": added_p50, "added_p99_ms": added_p99,
            "shaped_p99_minus_plain_p50_ms": plain_p99 + added_p99 - plain_p50}


def bw_run(kbps, seconds=5.0):
    return {"bytes": kbps * 1e3 * seconds, "seconds": seconds, "gbps": kbps * 8e3 / 1e9,
            "interval_bytes": [kbps * 1e3] * int(seconds), "interval_seconds": [1.0] * int(seconds)}


def iperf(gbps, cpu_s, seconds=5.0):
    return {"gbps": gbps, "bytes": gbps * 1e9 / 8 * seconds, "seconds": seconds, "ferry_cpu_s": cpu_s}


def mem_run(state, before_kib, held_kib, n=1000, **extra):
    j = {"state": state, "requested": n, "opened": n, "rss_before_kib": before_kib,
         "rss_kib": before_kib + held_kib, "closed_by_peer": 0, "hello_answered": n}
    j.update(extra)
    return j


def data_all_pass():
    return {
        "off": [off_round(same(100.0), same(100.0)), off_round(same(100.0), same(99.5)),
                off_round(same(100.0), same(101.0))],
        "lat": [lat_run(20.1, 20.9), lat_run(19.9, 21.5), lat_run(20.2, 21.0)],
        "bw": {100: [bw_run(99.0)], 10000: [bw_run(10100.0)], 500000: [bw_run(495000.0)]},
        "shaped": [{"fast": iperf(20.0, 1.0), "lat1": iperf(2.0, 0.2)},
                   {"fast": iperf(22.0, 1.1), "lat1": iperf(2.1, 0.2)}],
        "mem": [mem_run("none", 10240, 3072), mem_run("policy", 10240, 5120),
                mem_run("policy", 10240, 5120), mem_run("none", 10240, 3072)],
    }


def rows_of(data):
    return {r["id"]: r for r in C.targets(C.figures(data))}


class Targets(unittest.TestCase):
    def test_everything_within_its_target_passes(self):
        rows = rows_of(data_all_pass())
        for k, r in rows.items():
            if k.startswith("shaped"):
                self.assertIsNone(r["passed"], k)  # reported, no target
            else:
                self.assertIs(r["passed"], True, (k, r["shown"]))

    def test_off_ratio_is_the_median_of_the_round_ratios(self):
        rows = rows_of(data_all_pass())
        self.assertAlmostEqual(rows["off_iperf1_gbps"]["value"], 1.0)
        self.assertEqual(rows["off_iperf1_gbps"]["n"], 3)
        self.assertEqual(rows["off_iperf1_gbps"]["spread"], "[0.995, 1.010]")

    def test_off_below_099_fails(self):
        d = data_all_pass()
        d["off"] = [off_round(same(100.0), {"iperf1": 100.0, "iperf4": 100.0, "ka": 98.0, "close": 100.0})
                    for _ in range(3)]
        rows = rows_of(d)
        self.assertIs(rows["off_ka_rps"]["passed"], False)
        self.assertIs(rows["off_close_cps"]["passed"], True)
        # exactly 0.99 passes
        d["off"] = [off_round(same(100.0), same(99.0))]
        self.assertIs(rows_of(d)["off_iperf4_gbps"]["passed"], True)

    def test_latency_median_must_be_within_half_a_millisecond(self):
        d = data_all_pass()
        d["lat"] = [lat_run(20.6, 21.0)]
        self.assertIs(rows_of(d)["lat_p50"]["passed"], False)
        d["lat"] = [lat_run(19.4, 21.0)]
        self.assertIs(rows_of(d)["lat_p50"]["passed"], False)
        d["lat"] = [lat_run(19.6, 21.0)]
        self.assertIs(rows_of(d)["lat_p50"]["passed"], True)

    def test_latency_p99_must_be_within_two_milliseconds_above(self):
        d = data_all_pass()
        d["lat"] = [lat_run(20.0, 22.5)]
        self.assertIs(rows_of(d)["lat_p99"]["passed"], False)
        d["lat"] = [lat_run(20.0, 21.9)]
        self.assertIs(rows_of(d)["lat_p99"]["passed"], True)

    def test_latency_twice_the_delay_fails_both(self):
        # what direction "both" would give on an echo round trip
        d = data_all_pass()
        d["lat"] = [lat_run(40.0, 41.0)]
        rows = rows_of(d)
        self.assertIs(rows["lat_p50"]["passed"], False)
        self.assertIs(rows["lat_p99"]["passed"], False)

    def test_bandwidth_within_two_percent(self):
        d = data_all_pass()
        d["bw"][100] = [bw_run(102.5)]
        d["bw"][10000] = [bw_run(9790.0)]
        d["bw"][500000] = [bw_run(490500.0)]
        rows = rows_of(d)
        self.assertIs(rows["bw_100"]["passed"], False)
        self.assertIs(rows["bw_10000"]["passed"], False)
        self.assertIs(rows["bw_500000"]["passed"], True)
        self.assertIn("-1.90%", rows["bw_500000"]["shown"])

    def test_bandwidth_is_the_median_over_rounds(self):
        d = data_all_pass()
        d["bw"][100] = [bw_run(90.0), bw_run(100.5), bw_run(101.0)]
        r = rows_of(d)["bw_100"]
        self.assertAlmostEqual(r["value"], 100.5)
        self.assertIs(r["passed"], True)

    def test_memory_ratio_of_median_held_rss(self):
        rows = rows_of(data_all_pass())
        self.assertAlmostEqual(rows["mem"]["value"], 5120 / 3072)
        d = data_all_pass()
        d["mem"] = [mem_run("none", 10240, 3072), mem_run("policy", 10240, 7000)]
        self.assertIs(rows_of(d)["mem"]["passed"], False)

    def test_silent_memory_runs_are_a_detail_not_the_target(self):
        d = data_all_pass()
        d["mem"].append(mem_run("policy", 10240, 50000, silent=True))
        f = C.figures(d)
        self.assertAlmostEqual(f["mem"]["ratio"], 5120 / 3072)
        self.assertEqual(f["mem"]["silent_held_mib_policy"]["n"], 1)

    def test_memory_fails_when_a_run_lost_connections(self):
        d = data_all_pass()
        d["mem"][1] = mem_run("policy", 10240, 3072, opened=900)
        self.assertIs(rows_of(d)["mem"]["passed"], False)

    def test_missing_data_is_neither_pass_nor_fail(self):
        rows = rows_of({"off": [], "lat": [], "bw": {r: [] for r in C.BW_RATES}, "shaped": [], "mem": []})
        for k, r in rows.items():
            self.assertIsNone(r["passed"], k)
            self.assertEqual(C.pass_text(r["passed"]), "info")

    def test_shaped_ratios_per_round(self):
        f = C.figures(data_all_pass())
        self.assertAlmostEqual(f["shaped"]["gbps_ratio"]["median"], (0.1 + 2.1 / 22.0) / 2)
        # cpu per GB: lat1 0.2 s / 1.25 GB, fast 1.0 s / 12.5 GB
        self.assertAlmostEqual(f["shaped"]["cpu_per_gb_ratio"]["values"][0], (0.2 / 1.25) / (1.0 / 12.5))

    def test_render_has_one_line_per_target_and_a_verdict(self):
        rows = C.targets(C.figures(data_all_pass()))
        text = C.render(rows)
        self.assertEqual(len(text.strip().splitlines()), len(rows) + 2)
        self.assertIn("PASS", text)


class Collect(unittest.TestCase):
    def test_reads_the_layout_chaos_sh_writes(self):
        with tempfile.TemporaryDirectory() as raw:
            def write(path, text):
                p = os.path.join(raw, path)
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(p, "w", encoding="utf-8") as fh:
                    fh.write(text)
            iperf_json = ('{"start": {"connected": [{}]}, "intervals": [{"sum": {"bytes": 100000, "seconds": 1.0, '
                          '"bits_per_second": 800000}}, {"sum": {"bytes": 100000, "seconds": 1.0, "bits_per_second": '
                          '800000}}], "end": {"sum_received": {"bytes": 200000, "seconds": 2.0, "bits_per_second": '
                          '800000}, "sum_sent": {"retransmits": 0}}}')
            write("bw/r1/bw100.out", iperf_json)
            write("bw/r1/bw100.foreign", "10 200 1000000 3000000\n")
            write("mem/run1-none/idle.out", '{"requested": 2, "opened": 2, "rss_before_kib": 100, "rss_kib": 110}')
            write("mem/run2-policy/idle.out", '{"requested": 2, "opened": 2, "rss_before_kib": 100, "rss_kib": 120}')
            write("mem/run2-policy-silent/idle.out", '{"requested": 2, "opened": 2, "rss_before_kib": 100, "rss_kib": 100}')
            d = C.collect(raw, 100.0)
            self.assertEqual(len(d["bw"][100]), 1)
            self.assertAlmostEqual(d["bw"][100][0]["foreign_pct"], 5.0)  # 10 ticks over 2 s at 100 Hz
            f = C.figures(d)
            self.assertAlmostEqual(f["bw"][100]["kBps"]["median"], 100.0)
            self.assertAlmostEqual(f["mem"]["ratio"], 2.0)
            self.assertEqual([(j["state"], j["silent"]) for j in d["mem"]],
                             [("none", False), ("policy", False), ("policy", True)])


if __name__ == "__main__":
    unittest.main()
