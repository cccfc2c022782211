#!/usr/bin/env python3
"""Tests of count_tests.py on test logs written here.

usage: count_tests_test.py   (exit status 0 when every test passes)
"""
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import count_tests  # noqa: E402


class Count(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def log(self, build, *tests):
        d = os.path.join(self.root, build, "meson-logs")
        os.makedirs(d)
        with open(os.path.join(d, "testlog.json"), "w") as f:
            for t in tests:
                f.write(json.dumps(t) + "\n")

    def test_builds_failures_skips_and_subtests(self):
        self.log("plain",
                 {"name": "chan", "result": "OK", "stdout": "ok 1 a\nok 2 b\nnot ok 3 c\n"},
                 {"name": "docs-build", "result": "SKIP", "stdout": "skip: doxygen not installed"},
                 {"name": "pool", "result": "FAIL", "stdout": None},
                 {"name": "token", "result": "TIMEOUT"})
        self.log("planted", {"name": "planted-x", "result": "EXPECTEDFAIL"})
        lines, bad = count_tests.count(self.root, ["plain", "asan", "planted"])
        self.assertTrue(bad)
        self.assertEqual(lines, [
            "# plain: FAILED pool (FAIL)",
            "# plain: FAILED token (TIMEOUT)",
            "# plain: 1 passed, 2 failed, 1 skipped (2 TAP subtests ok)",
            "# asan: no test log (build failed)",
            "# planted: 1 passed, 0 failed, 0 skipped (0 TAP subtests ok)",
            "2 passed, 3 failed, 1 skipped",
        ])

    def test_all_passed(self):
        self.log("plain", {"name": "chan", "result": "OK"}, {"name": "pool", "result": "OK"})
        lines, bad = count_tests.count(self.root, ["plain"])
        self.assertFalse(bad)
        self.assertEqual(lines[-1], "2 passed, 0 failed")
        self.assertEqual(count_tests.main([self.root, "plain"]), 0)
        self.assertEqual(count_tests.main([self.root, "tsan"]), 1)

    def test_usage(self):
        self.assertEqual(count_tests.main([]), 2)


if __name__ == "__main__":
    unittest.main()
