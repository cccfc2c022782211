#!/usr/bin/env python3
"""Tests of plot.py on small results written here; where gnuplot is
installed, the scripts it writes are also drawn.

usage: plot_test.py   (exit status 0 when every test passes)
"""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plot  # noqa: E402


def machine(load):
    return {"nproc": 2, "cpu": "Test CPU", "date": "2026-11-27 10:00 UTC", "loadavg1": load}


RESULTS = {
    "images": {"mode": "quick", "machine": machine(1.0), "data": {
        "jpeg": [{"workers": 2, "speedup": 1.8}, {"workers": 8, "speedup": 1.9}],
        "simulated": [{"workers": 8, "speedup": 7.9}]}},
    "pools": {"mode": "quick", "machine": machine(1.5), "data": {"pools": [
        {"name": "fixed(8)", "workers": 8, "speedup": 7.0, "latency_p50_ns": 2e7, "latency_p99_ns": 9e7},
        {"name": "dynamic(2..16)", "workers": 16, "speedup": 12.0,
         "latency_p50_ns": 1.5e7, "latency_p99_ns": 4e7}]}},
    "crawl": {"mode": "quick", "machine": machine(1.2), "data": {"runs": [
        {"workers": 1, "speedup": 1.0}, {"workers": 20, "speedup": 19.5}]}},
    "numbers": {"mode": "quick", "machine": machine(0.7), "data": {"levels": [
        {"work_ns": 0, "speedup_item": 0.03, "speedup_batch": 0.4, "ideal": 1.7, "batch": 256},
        {"work_ns": 100000, "speedup_item": 1.7, "speedup_batch": 1.7, "ideal": 2.0, "batch": 26}]}},
    "realtime": {"mode": "quick", "machine": machine(0.9), "data": {
        "trials": [{"offered": r, "latency_p50_ns": 1e6, "latency_p99_ns": 5e6, "latency_p999_ns": 9e6}
                   for r in (1000, 10000, 100000, 50000)],
        "max_rate_p99_100ms": 100000}},
    "distributed": {"mode": "quick", "machine": machine(1.3), "data": {
        "ceiling": {"runs": [90000, 100000, 95000], "rate": 100000},
        "trials": [{"offered": r, "latency_p50_ns": 2e6, "latency_p99_ns": p99, "latency_p999_ns": 3e7, "pass": ok}
                   for r, p99, ok in ((10000, 1e7, True), (80000, 6e7, True), (40000, 2e7, True),
                                      (160000, 7e8, False))],
        "max_rate_p99_100ms": 80000, "work_us": 1000,
        "scale": [{"processes": 1, "speedup": 1.0}, {"processes": 2, "speedup": 1.9},
                  {"processes": 4, "speedup": 2.0}]}},
    "logs": {"mode": "quick", "machine": machine(1.1), "data": {"versions": [
        {"name": "blocks", "latency_p50_ns": 1e6, "latency_p99_ns": 3e6}]}},
}


class Helpers(unittest.TestCase):
    def test_q(self):
        self.assertEqual(plot.q('a "b"'), "\"a 'b'\"")

    def test_run_line(self):
        self.assertEqual(plot.run_line([]), "")
        a, b = RESULTS["images"], RESULTS["pools"]
        self.assertEqual(plot.run_line([a]), "quick run, 2 cpus Test CPU, 2026-11-27, load 1.0")
        self.assertEqual(plot.run_line([a, b, None]), "quick run, 2 cpus Test CPU, 2026-11-27, load 1.0-1.5")
        full = dict(b, mode="full", machine=dict(b["machine"], date="2026-11-28 09:00 UTC"))
        self.assertEqual(plot.run_line([a, full]),
                         "full/quick runs (mixed!), 2 cpus Test CPU, 2026-11-27..2026-11-28, load 1.0-1.5")


class Scripts(unittest.TestCase):
    def setUp(self):
        self.tmpdir = tempfile.TemporaryDirectory()
        top = self.tmpdir.name
        self.res, self.tmp, self.out = (os.path.join(top, d) for d in ("res", "tmp", "out"))
        for d in (self.res, self.tmp, self.out):
            os.mkdir(d)

    def tearDown(self):
        self.tmpdir.cleanup()

    def write(self, name, doc):
        with open(os.path.join(self.res, name + ".json"), "w") as f:
            f.write(doc if isinstance(doc, str) else json.dumps(doc))

    def scripts(self):
        said = io.StringIO()
        with contextlib.redirect_stdout(said):
            names = plot.write_scripts(self.res, self.tmp, self.out)
        return names, said.getvalue().splitlines()

    def gp(self, name):
        with open(os.path.join(self.tmp, name + ".gp")) as f:
            return f.read()

    def test_every_chart(self):
        for name, doc in RESULTS.items():
            self.write(name, doc)
        names, said = self.scripts()
        self.assertEqual(names, ["speedup_vs_workers", "pipeline_crossover", "latency_vs_rate",
                                 "distributed", "latency_percentiles"])
        self.assertEqual(said, [])
        for n in names:
            g = self.gp(n).splitlines()
            self.assertEqual(g[0], plot.TERM)
            self.assertEqual(g[1], "set output " + plot.q(os.path.join(self.out, n + ".png")))
            self.assertTrue(g[2].startswith("set title "))
            self.assertTrue(g[-1].startswith("plot "))
        self.assertIn("quick run, 2 cpus Test CPU, 2026-11-27, load 1.0-1.5", self.gp("speedup_vs_workers"))
        self.assertIn("distributed: consumer processes, 1000 us CPU per message", self.gp("speedup_vs_workers"))
        with open(os.path.join(self.tmp, "dist.dat")) as f:  # every trial, by offered rate
            self.assertEqual([l.split()[0] + " " + l.split()[3] for l in f],
                             ["10000 1", "40000 1", "80000 1", "160000 0"])
        self.assertIn("set arrow from 100000,graph 0", self.gp("distributed"))
        self.assertIn("highest rate with p99 < 100 ms: 80,000 msg/s", self.gp("distributed"))
        self.assertIn("min(workers, 2 cores)", self.gp("speedup_vs_workers"))
        self.assertIn("batched hand-off (26-256 items)", self.gp("pipeline_crossover"))
        # The sweep stops where the offered rate stops rising; the rest are probes.
        with open(os.path.join(self.tmp, "rt_sweep.dat")) as f:
            self.assertEqual([l.split()[0] for l in f], ["1000", "10000", "100000"])
        with open(os.path.join(self.tmp, "rt_probe.dat")) as f:
            self.assertEqual(f.read(), "50000 1.0 5.0 9.0\n")
        with open(os.path.join(self.tmp, "cross.dat")) as f:
            self.assertEqual(f.readline(), "10 0.03 0.4 1.7\n")  # W = 0 drawn at 10 ns
        with open(os.path.join(self.tmp, "pct.dat")) as f:
            self.assertEqual(f.read().splitlines()[-1], '"logs blocks" 1.0 3.0')
        if shutil.which("gnuplot"):
            for n in names:
                p = subprocess.run(["gnuplot", os.path.join(self.tmp, n + ".gp")],
                                   capture_output=True, text=True)
                self.assertEqual(p.returncode, 0, p.stderr)
                with open(os.path.join(self.out, n + ".png"), "rb") as f:
                    self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        else:
            print("plot_test: gnuplot not installed: the scripts were not drawn")

    def test_no_results(self):
        names, said = self.scripts()
        self.assertEqual(names, [])
        self.assertEqual(said, ["plot: no pool/image/crawl/distributed results: speedup_vs_workers skipped",
                                "plot: no numbers results: pipeline_crossover skipped",
                                "plot: no realtime results: latency_vs_rate skipped",
                                "plot: no distributed results: distributed skipped",
                                "plot: no pool/log results: latency_percentiles skipped"])
        self.assertEqual(os.listdir(self.tmp), [])

    def test_skipped_unparsable_and_incomplete(self):
        self.write("realtime", {"skipped": "install libcjson-dev"})
        self.write("pools", "{not json")
        numbers = json.loads(json.dumps(RESULTS["numbers"]))
        del numbers["data"]["levels"][1]["speedup_item"]
        self.write("numbers", numbers)
        names, said = self.scripts()
        self.assertEqual(names, [])
        p = os.path.join(self.res, "pools.json")
        self.assertEqual(said[0], "plot: " + p + " does not parse (Expecting property name enclosed "
                         "in double quotes: line 1 column 2 (char 1)): left out")
        self.assertEqual(said[1:4], ["plot: no pool/image/crawl/distributed results: speedup_vs_workers skipped",
                                     "plot: pipeline_crossover skipped: the JSON lacks what it needs "
                                     "(KeyError: 'speedup_item')",
                                     "plot: no realtime results: latency_vs_rate skipped"])

    def test_date_from_file_time(self):
        doc = json.loads(json.dumps(RESULTS["logs"]))
        del doc["machine"]["date"]
        self.write("logs", doc)
        os.utime(os.path.join(self.res, "logs.json"), (0, 86400 * 365))
        names, _ = self.scripts()
        self.assertEqual(names, ["latency_percentiles"])
        self.assertIn("1971-01-01", self.gp("latency_percentiles"))

    def test_usage(self):
        self.assertEqual(plot.main([]), 2)


if __name__ == "__main__":
    unittest.main()
