#!/usr/bin/env bash
# Line and branch coverage of src/ by the unit tests: configures a debug
# build with -Db_coverage=true, runs the 'unit' suite, and runs gcovr over
# src/ only. Prints the per-file table (lines, then branches) and the
# totals, and writes an HTML report (one page per file) to
# <builddir>/coverage.html. Installs gcovr if missing (scripts/deps.sh).
#
# usage: scripts/coverage.sh [--builddir DIR]   (default: build/coverage)
# Environment: CPAT_TEST_SCALE, CPAT_TEST_SEED as for the tests.
# The goal for src/ is >= 90% of lines and >= 80% of branches.
set -u
cd "$(dirname "$0")/.."
dir=${CPAT_BUILD_ROOT:-build}/coverage
while [ $# -gt 0 ]; do
	case $1 in
	--builddir) dir=$2; shift ;;
	-h|--help) sed -n '2,11p' "$0"; exit 0 ;;
	*) echo "coverage: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
./scripts/deps.sh gcovr || exit 1

mkdir -p "$(dirname "$dir")"
if [ ! -f "$dir/build.ninja" ]; then
	meson setup "$dir" -Dbuildtype=debug -Db_coverage=true \
		-Dexamples=disabled -Dbenches=disabled -Dstanding_checks=disabled -Dfuzz=disabled \
		>"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; exit 1; }
fi
meson compile -C "$dir" >"$dir/coverage-compile.log" 2>&1 || { tail -30 "$dir/coverage-compile.log"; exit 1; }

# Counters accumulate across runs: start from zero.
find "$dir" -name '*.gcda' -delete
status=0
meson test -C "$dir" --no-rebuild --suite unit --print-errorlogs >"$dir/coverage-test.log" 2>&1 || {
	status=1
	echo "coverage: some unit tests failed (the numbers below still count what ran):" >&2
	grep -E '^ *[0-9]+/[0-9]+ ' "$dir/coverage-test.log" | grep -v ' OK ' >&2
}

root=$(pwd)
common=(--root "$root" --filter "$root/src/" --object-directory "$dir" --exclude-unreachable-branches)
echo "=== lines (src/)"
gcovr "${common[@]}" --txt - "$dir" | sed -n '/^File/,$p'
echo "=== branches (src/)"
gcovr "${common[@]}" --branches --txt - "$dir" | sed -n '/^File/,$p'
gcovr "${common[@]}" --html-details "$dir/coverage.html" --html-title "libcpattern src/ coverage" \
	--print-summary "$dir" | tail -3
echo "HTML report: $dir/coverage.html"
exit $status
