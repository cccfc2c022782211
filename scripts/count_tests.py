#!/usr/bin/env python3
"""The last lines of scripts/test.sh: tests passed and failed over builds.

usage: count_tests.py BUILD_ROOT BUILD...

Reads BUILD_ROOT/<build>/meson-logs/testlog.json (one JSON object per
test, as Meson writes it; scripts/planted.sh writes one too) for each
build, prints "# <build>: ..." for each (and each failed test), then one
last line "N passed, N failed" (", N skipped" when some were), which CI
reads. A build with no log counts as one failure (its compile failed).
TAP subtests ("ok ..." lines of a test's output) are counted for the
record only. Exit status 1 if anything failed.
"""
import json
import os
import sys


def count(root, builds):
    """The lines to print and whether anything failed."""
    out = []
    passed = failed = skipped = 0
    for b in builds:
        log = os.path.join(root, b, "meson-logs", "testlog.json")
        if not os.path.exists(log):
            out.append(f"# {b}: no test log (build failed)")
            failed += 1
            continue
        bp = bf = bs = sub = 0
        with open(log) as f:
            for line in f:
                t = json.loads(line)
                r = t.get("result")
                if r in ("OK", "EXPECTEDFAIL"):
                    bp += 1
                elif r == "SKIP":
                    bs += 1
                else:
                    bf += 1
                    out.append(f"# {b}: FAILED {t.get('name')} ({r})")
                sub += sum(1 for l in (t.get("stdout") or "").splitlines() if l.startswith("ok "))
        out.append(f"# {b}: {bp} passed, {bf} failed, {bs} skipped ({sub} TAP subtests ok)")
        passed += bp
        failed += bf
        skipped += bs
    out.append(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return out, failed > 0


def main(argv):
    if not argv:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    lines, bad = count(argv[0], argv[1:])
    for line in lines:
        print(line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
