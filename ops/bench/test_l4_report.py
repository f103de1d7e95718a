#!/usr/bin/env python3
"""Tests of l4_report.py: the round-by-round statistics and where each row's
values come from.

Run: python3 -m unittest discover -s ops/bench -p 'test_*.py'
(ops/test.sh does, when python3 is installed).
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import l4_report as R  # noqa: E402


def rounds(rps, p99=None, cpu_s=None, requests=100_000):
    """One setup's rounds: keep-alive and Connection: close entries with
    the same figures (enough for the functions under test)."""
    out = []
    for i, v in enumerate(rps):
        e = {"rps": v, "p99_ms": (p99 or rps)[i], "requests": requests,
             "proxy_cpu_s": None if cpu_s is None else cpu_s[i]}
        out.append({"status": "ok", "wrk_ka": dict(e), "wrk_close": dict(e)})
    return {"status": "ok", "reps": [], "churn": out}


def iperf_rounds(gbps1, gbps4, cpu_s, seconds=10.0):
    """One setup's rounds with the two iperf3 loads (equal CPU in each)."""
    out = []
    for g1, g4, c in zip(gbps1, gbps4, cpu_s):
        r = {"status": "ok"}
        for load, g in (("iperf1", g1), ("iperf4", g4)):
            r[load] = {"gbps": g, "bytes": g * 1e9 / 8 * seconds, "seconds": seconds, "proxy_cpu_s": c}
        out.append(r)
    return {"status": "ok", "reps": [], "churn": out}


def by_key(res):
    return {r["key"]: r for r in R.round_ratios(res)}


class MedianInterval(unittest.TestCase):
    def test_too_few_values_have_no_interval(self):
        self.assertIsNone(R.median_ci([1.0, 2.0, 3.0, 4.0, 5.0]))

    def test_six_to_eight_values_give_the_extremes(self):
        lo, hi, cov = R.median_ci([5, 1, 4, 2, 8, 7, 3, 6])
        self.assertEqual((lo, hi), (1, 8))
        self.assertAlmostEqual(cov, 1 - 2 / 256)

    def test_sixteen_values_give_the_fourth_from_each_end(self):
        lo, hi, cov = R.median_ci(list(range(16, 0, -1)))
        # P(B <= 3) for B ~ Bin(16, 1/2) is 697/65536: coverage 97.9%;
        # one step further in (P(B <= 4) = 2517/65536) would be 92.3%.
        self.assertEqual((lo, hi), (4, 13))
        self.assertAlmostEqual(cov, 1 - 2 * 697 / 65536)


class RoundRatios(unittest.TestCase):
    def test_the_variant_is_chosen_once_by_its_median_not_round_by_round(self):
        # haproxy has the better median; haproxy-splice wins two rounds by
        # noise. Ferry is compared with haproxy in every round.
        res = {
            "ferry": rounds([100] * 8),
            "haproxy": rounds([100, 100, 100, 100, 100, 100, 90, 90]),
            "haproxy-splice": rounds([80, 80, 80, 80, 80, 80, 120, 120]),
        }
        r = by_key(res)["ka_rps"]
        self.assertEqual(r["variant"], "haproxy")
        self.assertEqual([round(x, 3) for x in r["ratios"]], [1.0] * 6 + [1.111, 1.111])

    def test_a_higher_figure_ahead_in_every_round_is_ahead(self):
        res = {"ferry": rounds([110, 105, 108, 112, 104, 109, 107, 111]),
               "haproxy": rounds([100] * 8)}
        r = by_key(res)["close_cps"]
        self.assertEqual(r["verdict"], "ferry ahead")
        self.assertEqual(r["ferry_ahead_or_level"], 8)

    def test_one_round_on_the_other_side_makes_eight_rounds_level(self):
        res = {"ferry": rounds([110, 105, 108, 112, 104, 109, 107, 95]),
               "haproxy": rounds([100] * 8)}
        r = by_key(res)["ka_rps"]
        self.assertTrue(r["verdict"].startswith("level"), r["verdict"])
        self.assertEqual(r["ferry_ahead_or_level"], 7)

    def test_lower_is_better_for_latency_and_cpu(self):
        res = {"ferry": rounds([100] * 8, p99=[1.0] * 8, cpu_s=[1.0] * 8),
               "haproxy": rounds([100] * 8, p99=[1.2] * 8, cpu_s=[0.9] * 8)}
        r = by_key(res)
        self.assertEqual(r["ka_p99_ms"]["verdict"], "ferry ahead")
        self.assertEqual(r["cpu_per_100k_req"]["verdict"], "ferry behind")
        self.assertEqual(r["cpu_per_1k_conn"]["verdict"], "ferry behind")

    def test_failed_rounds_are_left_out_of_the_pairs(self):
        res = {"ferry": rounds([110] * 8), "haproxy": rounds([100] * 8)}
        res["ferry"]["churn"][3]["status"] = "failed: died"
        r = by_key(res)["ka_rps"]
        self.assertEqual(r["n"], 7)

    def test_throughput_and_cpu_per_gb_are_compared_round_by_round(self):
        # ferry moves 10% more in every round for the same CPU: ahead on
        # both throughputs and on CPU per GB (lower is better).
        res = {"ferry": iperf_rounds([11.0] * 8, [22.0] * 8, [5.0] * 8),
               "haproxy": iperf_rounds([10.0] * 8, [20.0] * 8, [5.0] * 8)}
        r = by_key(res)
        self.assertEqual(r["iperf1_gbps"]["verdict"], "ferry ahead")
        self.assertEqual(r["iperf4_gbps"]["verdict"], "ferry ahead")
        self.assertEqual(r["cpu_per_gb"]["verdict"], "ferry ahead")
        self.assertAlmostEqual(r["cpu_per_gb"]["median"], 30 / 33)
        self.assertNotIn("ka_rps", r, "no wrk loads in these rounds, no HTTP rows")

    def test_cpu_per_gb_needs_both_iperf_loads_of_the_round(self):
        res = {"ferry": iperf_rounds([11.0] * 8, [22.0] * 8, [5.0] * 8),
               "haproxy": iperf_rounds([10.0] * 8, [20.0] * 8, [5.0] * 8)}
        res["ferry"]["churn"][2]["iperf1"] = {"error": "unparseable output"}
        r = by_key(res)
        self.assertEqual(r["iperf4_gbps"]["n"], 8)
        self.assertEqual(r["iperf1_gbps"]["n"], 7)
        self.assertEqual(r["cpu_per_gb"]["n"], 7)

    def test_no_rounds_no_rows(self):
        self.assertEqual(R.round_ratios({"ferry": rounds([]), "haproxy": rounds([])}), [])


class Table(unittest.TestCase):
    def test_rows_come_from_the_rounds_when_they_measured_the_load(self):
        res = {"ferry": iperf_rounds([11.0] * 8, [22.0] * 8, [5.0] * 8),
               "haproxy": iperf_rounds([10.0] * 8, [20.0] * 8, [5.0] * 8)}
        # A repetition that measured iperf3 itself (an older layout) is not
        # mixed in once the rounds have the load.
        res["ferry"]["reps"] = [{"status": "ok", "iperf4": {"gbps": 1.0, "bytes": 1, "seconds": 10.0}}]
        rows = {k: (vals, per) for k, _, _, _, vals, per in R.figures(res)}
        self.assertEqual(rows["iperf4_gbps"][0]["ferry"], 22.0)
        self.assertEqual(len(rows["iperf4_gbps"][1]["ferry"]), 8)
        # proxy CPU use: 5 s of CPU over a 10 s load
        self.assertEqual(rows["iperf4_busy_pct"][0]["haproxy"], 50.0)

    def test_rows_fall_back_to_the_repetitions_without_rounds(self):
        res = {"ferry": {"status": "ok", "churn": [],
                         "reps": [{"status": "ok", "iperf4": {"gbps": g, "bytes": 1, "seconds": 10.0}}
                                  for g in (1.0, 3.0, 2.0)]}}
        rows = {k: vals for k, _, _, _, vals, _ in R.figures(res)}
        self.assertEqual(rows["iperf4_gbps"]["ferry"], 2.0)

    def test_peak_rss_is_the_highest_over_repetitions_and_rounds(self):
        res = {"ferry": {"status": "ok",
                         "reps": [{"status": "ok", "hwm_kib": 10240}],
                         "churn": [{"status": "ok", "iperf4": {"proxy_rss_max_kib": 20480}},
                                   {"status": "ok", "wrk_ka": {"proxy_rss_max_kib": 15360}}]}}
        rows = {k: vals for k, _, _, _, vals, _ in R.figures(res)}
        self.assertEqual(rows["hwm_mib"]["ferry"], 20.0)

    def test_indicator_rows_get_no_ratio(self):
        res = {"ferry": iperf_rounds([11.0] * 8, [22.0] * 8, [5.0] * 8),
               "haproxy": iperf_rounds([10.0] * 8, [20.0] * 8, [4.0] * 8)}
        _, summary = R.build_table(res, {"rounds": "8"})
        rows = {r["key"]: r for r in summary}
        self.assertIsNone(rows["iperf4_busy_pct"]["ferry_over_best_haproxy"])
        self.assertIsNotNone(rows["iperf4_gbps"]["ferry_over_best_haproxy"])


if __name__ == "__main__":
    unittest.main()
