#!/usr/bin/env python3
"""Runs one scenario bench and checks what it reports.

usage: scenario_test.py [--expect-skip] BINARY JSON_PATH [ARGS...]

Without --expect-skip: the bench must exit 0, print no FAILED check, and
write a JSON document that parses, has "ok": true and at least one summary
row. With --expect-skip: it must exit 0, print "SKIP <what>: ..." and write
{"skipped": reason} (or, for a scenario that skips only a part,
"data": {"skipped_parts": [...]}).
"""
import json
import os
import subprocess
import sys

args = sys.argv[1:]
expect_skip = False
if args and args[0] == "--expect-skip":
    expect_skip = True
    args = args[1:]
exe, jpath, rest = args[0], args[1], args[2:]
if os.path.exists(jpath):
    os.remove(jpath)
p = subprocess.run([exe, "--json", jpath] + rest, capture_output=True, text=True)
sys.stdout.write(p.stdout)
sys.stderr.write(p.stderr)


def fail(msg):
    print("scenario_test: FAIL: " + msg)
    sys.exit(1)


if p.returncode != 0:
    fail(f"exit code {p.returncode}")
doc = json.load(open(jpath))
skipped = "skipped" in doc
parts = doc.get("data", {}).get("skipped_parts") or []
if expect_skip:
    # The whole scenario, or a part of it, must say it was skipped and why.
    if (not skipped and not parts) or "SKIP " not in p.stdout:
        fail("expected a reported skip")
    print(f"scenario_test: skip reported: {doc.get('skipped') or parts}")
    sys.exit(0)
if skipped:
    # An optional library absent at build time: a skip is the right
    # answer, reported as such to Meson.
    print(f"scenario_test: skipped: {doc['skipped']}")
    sys.exit(77)
if "FAILED" in p.stdout:
    fail("a check failed")
if not doc.get("ok"):
    fail('JSON says "ok": false')
if not doc.get("summary"):
    fail("no summary rows")
for name, ok in doc.get("checks", {}).items():
    if not ok:
        fail(f"check {name} failed")
# Stolen CPU time: a fraction, or null where /proc/stat is missing.
st = doc.get("steal_fraction", "missing")
if st is not None and not (isinstance(st, (int, float)) and 0 <= st <= 1):
    fail(f"steal_fraction is {st!r}")
# The log bench's machine check: two copies' throughput over one's.
tc = doc.get("data", {}).get("two_copies_throughput", "absent")
if tc != "absent" and tc is not None and not (isinstance(tc, (int, float)) and 0 < tc < 64):
    fail(f"two_copies_throughput is {tc!r}")
# A version's CPU time and context switches, where it reports them, are
# what getrusage measured: a pipeline of threads that hand items on used
# some CPU and switched at least once.
for v in doc.get("data", {}).get("versions", []):
    if "cpu_seconds" not in v:
        continue
    if not v["cpu_seconds"] > 0:
        fail(f"version {v.get('name')}: cpu_seconds {v['cpu_seconds']!r}")
    sw = (v.get("voluntary_switches"), v.get("involuntary_switches"))
    if not all(isinstance(x, int) and x >= 0 for x in sw):
        fail(f"version {v.get('name')}: context switches {sw!r}")
    if v.get("name") == "per-line" and sum(sw) == 0:
        fail("the per-line pipeline reports no context switch")
# Where a bench lists each repetition's time, the one it reports is their
# median (for an even count, the lower of the two middle ones), and there
# is one per repetition (data.reps).
data = doc.get("data", {})
reps = data.get("reps")


def check_median(what, reported, runs):
    if not isinstance(runs, list) or not runs:
        fail(f"{what}: runs {runs!r}")
    if reps is not None and len(runs) != reps:
        fail(f"{what}: {len(runs)} runs listed, --reps was {reps}")
    if not all(isinstance(x, (int, float)) and x > 0 for x in runs):
        fail(f"{what}: runs {runs!r}")
    med = sorted(runs)[(len(runs) - 1) // 2]
    if reported is None or abs(reported - med) > 1e-6 * max(1.0, med):
        fail(f"{what}: reports {reported}, the median of {runs} is {med}")


medians = 0
for part in ("versions", "jpeg"):  # logs, images
    for v in data.get(part, []):
        if "runs_seconds" in v:
            check_median(f"{part} {v.get('name')}", v.get("seconds"),
                         v["runs_seconds"])
            medians += 1
for L in data.get("levels", []):  # numbers
    runs = L.get("runs_ns_per_item")
    if runs is None:
        continue
    for key in ("seq", "item", "batch"):
        check_median(f"level W={L.get('work_ns')} {key}",
                     L.get(f"{key}_ns_per_item"), runs.get(key))
        medians += 1
# These report the median of alternating runs and must list them (the
# images bench only where its JPEG part ran).
needs_runs = {"logs", "numbers"} | ({"images"} if data.get("jpeg") else set())
if doc.get("scenario") in needs_runs and medians == 0:
    fail(f"{doc.get('scenario')}: no version lists its runs")
print(f"scenario_test: ok ({len(doc['summary'])} summary rows, checks: "
      + ", ".join(doc.get("checks", {})) + ")")
