#!/usr/bin/env bash
# The suite catches bugs: builds the library once per planted bug
# (meson -Dplant_bug=NAME, see src/internal.h) and runs the unit tests,
# which must FAIL for every one. Prints one line per bug and a summary,
# "planted bugs caught: K of N"; exits non-zero unless K == N.
#
# usage: scripts/planted.sh [bug ...]      (default: every planted bug)
# Environment: CPAT_BUILD_ROOT (build/), CPAT_TEST_TIMEOUT (per-test
# watchdog: a planted hang is caught by it; default here 20 s).
set -u
cd "$(dirname "$0")/.."
root=${CPAT_BUILD_ROOT:-build}
bugs=("$@")
if [ ${#bugs[@]} -eq 0 ]; then
	# The choices of the plant_bug option, but 'none'.
	mapfile -t bugs < <(python3 - <<'PY'
import re
s = open("meson_options.txt").read()
m = re.search(r"option\('plant_bug'.*?choices:\s*\[(.*?)\]", s, re.S)
print("\n".join(c for c in re.findall(r"'([^']+)'", m.group(1)) if c != "none"))
PY
)
fi
export CPAT_TEST_TIMEOUT=${CPAT_TEST_TIMEOUT:-20}
mkdir -p "$root"
# A meson-style test log, so scripts/test.sh counts each bug as a check.
log="$root/planted/meson-logs/testlog.json"
mkdir -p "$(dirname "$log")"
: >"$log"
record() { printf '{"name": "planted-%s", "result": "%s"}\n' "$1" "$2" >>"$log"; }
caught=0
for bug in "${bugs[@]}"; do
	dir="$root/plant-$bug"
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" -Dplant_bug="$bug" -Dexamples=disabled -Dbenches=disabled \
			-Dstanding_checks=disabled >"$dir.setup.log" 2>&1 \
			|| { cat "$dir.setup.log"; echo "planted $bug: SETUP FAILED"; record "$bug" ERROR; continue; }
	fi
	if ! meson compile -C "$dir" >"$dir.compile.log" 2>&1; then
		cat "$dir.compile.log"
		echo "planted $bug: COMPILE FAILED"
		record "$bug" ERROR
		continue
	fi
	# Per-test timeout: a planted hang must end in the watchdog, quickly.
	if meson test -C "$dir" --no-rebuild --suite unit --timeout-multiplier 0.25 \
		>"$dir.test.log" 2>&1; then
		echo "planted $bug: NOT CAUGHT (the unit suite passed)"
		record "$bug" FAIL
	else
		failed=$(python3 -c '
import json, sys
print(" ".join(t["name"] for t in map(json.loads, open(sys.argv[1])) if t["result"] not in ("OK", "SKIP")))
' "$dir/meson-logs/testlog.json" 2>/dev/null)
		echo "planted $bug: caught by ${failed:-?}"
		record "$bug" EXPECTEDFAIL
		caught=$((caught + 1))
	fi
done
echo "planted bugs caught: $caught of ${#bugs[@]}"
[ "$caught" -eq "${#bugs[@]}" ]
