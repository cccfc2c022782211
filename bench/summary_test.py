#!/usr/bin/env python3
"""Tests of summary.py on a small results directory written here.

usage: summary_test.py   (exit status 0 when every test passes)
"""
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import summary  # noqa: E402

MACHINE = {"nproc": 2, "cpu": "Test CPU"}


def row(name, claim, seq, conc, unit, speedup, ideal, eff, note=""):
    return {"name": name, "claim": claim, "seq": seq, "conc": conc, "unit": unit,
            "speedup": speedup, "ideal": ideal, "efficiency": eff, "note": note}


class Formats(unittest.TestCase):
    def test_num(self):
        self.assertEqual(summary.num(None, "s"), "-")
        self.assertEqual(summary.num(float("nan"), "s"), "-")
        self.assertEqual(summary.num(1.5, "s"), "1.500 s")
        self.assertEqual(summary.num(0.0123, "s"), "12.3 ms")
        self.assertEqual(summary.num(1234567.8, "lines/s"), "1,234,568 lines/s")
        self.assertEqual(summary.num(155.63, "ns/op"), "155.6 ns/op")

    def test_x(self):
        self.assertEqual(summary.x(None), "-")
        self.assertEqual(summary.x(float("nan")), "-")
        self.assertEqual(summary.x(1.756), "1.76x")

    def test_steal_share(self):
        self.assertEqual(summary.steal_share("1000 10", "2000 30"), "2.0%")
        self.assertEqual(summary.steal_share("1000 10", "1000 10"), "?")
        self.assertEqual(summary.steal_share("", ""), "unknown")


class Summary(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.res = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name, content):
        with open(os.path.join(self.res, name), "w") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))

    def run_summary(self, mode="--quick"):
        return summary.summarize(self.res, mode, "0.5 0.4 0.3", "1.0 0.9 0.8", "42",
                                 "1000 10", "2000 30")

    def test_empty_results(self):
        out = self.run_summary()
        self.assertEqual(out[0], "")
        self.assertEqual(out[1], "=" * 100)
        self.assertEqual(out[2], "SUMMARY (quick run, 42 s): ? cpus, ?, loadavg 0.5 0.4 0.3 at start, "
                         "1.0 0.9 0.8 at end (other processes may share the machine); "
                         "cpu time stolen by the hypervisor: 2.0%")
        self.assertEqual(out[3], "scenario  guide claim  sequential  concurrent  speedup  ideal  eff  note")
        self.assertEqual(out[4:], ["=" * 100])

    def test_table_goals_skips_and_failures(self):
        self.write("numbers.json", {
            "machine": MACHINE, "ok": True,
            "verdicts": ["numbers: a verdict"],
            "summary": [row("numbers W=100 us per-item", "2.7x", 0.5, 0.25, "s", 2.0, 2.0, 1.0, "n1"),
                        row("numbers W=0 per-item", None, 4.0, 150.0, "ns/op", 0.0267, 1.75, 0.0152)]})
        self.write("logs.txt", "started\n")  # no JSON, no SKIP line: crashed
        self.write("pools.txt", "SKIP pools: not built\n")
        self.write("images.json", {"machine": MACHINE, "ok": False, "checks": {"equal": False, "ran": True},
                                   "data": {"skipped_parts": ["images jpeg: install libturbojpeg0-dev"]},
                                   "summary": []})
        self.write("crawl.json", {"skipped": "install libcurl4-openssl-dev"})
        self.write("realtime.json", {"machine": MACHINE, "ok": True, "summary": [], "data": {
            "at_guide_rate": {"offered": 10000.0, "achieved": 9990.0, "latency_p99_ns": 9.8e6},
            "max_rate_p99_100ms": 150000.0}})
        self.write("micro-chan.txt", "cpattern spsc cap=0 threads=1x1 msgs=10 secs=0.1\nnoise\n")
        self.write("micro-pool.txt", "cpattern cpu workers=4 tasks=200 secs=0.100000 speedup=1.5000\n"
                                     "FAILED micro-pool: exit status 1\n")
        out = self.run_summary()
        self.assertIn("2 cpus, Test CPU,", out[2])
        self.assertEqual(out[3:7], [
            "scenario                        guide claim  sequential  concurrent  speedup  ideal   eff  note",
            "numbers W=100 us per-item       2.7x            0.500 s     0.250 s    2.00x  2.00x  1.00  n1",
            "numbers W=0 per-item                            4 ns/op   150 ns/op    0.03x  1.75x  0.02  ",
            "micro cpattern cpu (4 workers)  Nx              0.150 s     0.100 s    1.50x  2.00x  0.75  "
            "200 tasks, inline baseline",
        ])
        rest = out[7:]
        self.assertEqual(rest[:3], ["\nmicro-benchmark lines (peers' format):",
                                    "  cpattern spsc cap=0 threads=1x1 msgs=10 secs=0.1",
                                    "  cpattern cpu workers=4 tasks=200 secs=0.100000 speedup=1.5000"])
        self.assertEqual(rest[3:5], ["\nwhat the runs showed about the guide's claims:", "  numbers: a verdict"])
        self.assertEqual(rest[5], "\ngoals (measured, not asserted):")
        self.assertTrue(rest[6].startswith("  (quick sizes:"))
        self.assertEqual(rest[7:], [
            "  met      CPU-bound: numbers W=100 us per-item efficiency 1.00 (goal >= 0.9)",
            "  met      real-time: 10000 msg/s offered, 9990 achieved, p99 9.8 ms (goal p99 < 20 ms)",
            "  NOT met  real-time: highest rate with p99 < 100 ms 150,000 msg/s (goal >= 200,000)",
            "SKIP pools: not built",
            "SKIP images jpeg: install libturbojpeg0-dev",
            "SKIP crawl: install libcurl4-openssl-dev",
            "FAILED logs: no JSON written (crashed?)",
            "FAILED images: check(s) failed: equal",
            "FAILED micro-pool: exit status 1",
            "=" * 100,
        ])

    def test_full_mode_has_no_quick_caveat(self):
        self.write("numbers.json", {"machine": MACHINE, "ok": True, "summary": [
            row("numbers W=100 us batch26", "", 1.0, 0.6, "s", 1.67, 2.0, 0.83)]})
        out = self.run_summary("--full")
        self.assertTrue(out[2].startswith("SUMMARY (full run, 42 s)"))
        self.assertIn("  NOT met  CPU-bound: numbers W=100 us batch26 efficiency 0.83 (goal >= 0.9)", out)
        self.assertFalse(any(l.startswith("  (quick sizes:") for l in out))

    def test_unparsable_json_and_exit_failure(self):
        self.write("numbers.json", "{not json")
        self.write("pools.json", {"machine": MACHINE, "ok": True, "summary": []})
        self.write("pools.txt", "FAILED pools: exit status 2\n")
        out = self.run_summary()
        self.assertTrue(any(l.startswith("FAILED numbers: JSON does not parse: ") for l in out))
        self.assertIn("FAILED pools: exit status 2", out)

    def test_usage(self):
        self.assertEqual(summary.main([]), 2)


if __name__ == "__main__":
    unittest.main()
