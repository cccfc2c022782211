#!/usr/bin/env bash
# Flakiness hunt: runs every timing-sensitive test binary K times natively
# and K times pinned to one core (taskset -c C) beside a CPU hog (a busy
# loop pinned to the same core), and reports failures per binary. The logs
# of failing runs (each names its CPAT_TEST_SEED) are kept, one folder per
# hunt under <builddir>/flaky-logs/.
#
# usage: scripts/flaky.sh [--quick] [-k K] [--modes M] [--cpu C] [--builddir DIR]
#                         [binary ...]
#   --quick        K = 5
#   -k K           runs per binary and mode (default 200)
#   --modes M      native, pinned or native,pinned (default)
#   --cpu C        the core the pinned runs and their hog share (default 0);
#                  two hunts pinned to different cores can run at once
#   --builddir DIR build folder to use (default: $CPAT_BUILD_ROOT/flaky, that
#                  is build/flaky); configured (plain, debugoptimized) and
#                  compiled if needed
#   binary ...     a subset of: token chan pool dynpool group pipeline fan
# Environment: CPAT_TEST_SCALE, CPAT_TEST_TIMEOUT as for the tests; each run
# also has an outer timeout of FLAKY_RUN_TIMEOUT seconds (default 600).
# Exits 1 if any run failed. Needs taskset (util-linux).
set -u
cd "$(dirname "$0")/.."

k=200
modes=native,pinned
cpu=0
dir=""
bins=()
while [ $# -gt 0 ]; do
	case $1 in
	--quick) k=5 ;;
	-k) k=$2; shift ;;
	--modes) modes=$2; shift ;;
	--cpu) cpu=$2; shift ;;
	--builddir) dir=$2; shift ;;
	-h|--help) sed -n '2,21p' "$0"; exit 0 ;;
	-*) echo "flaky: unknown option $1" >&2; exit 2 ;;
	*) bins+=("$1") ;;
	esac
	shift
done
[ ${#bins[@]} -gt 0 ] || bins=(token chan pool dynpool group pipeline fan)
dir=${dir:-${CPAT_BUILD_ROOT:-build}/flaky}
command -v taskset >/dev/null || { echo "flaky: taskset not found (util-linux)" >&2; exit 2; }

mkdir -p "$(dirname "$dir")"
if [ ! -f "$dir/build.ninja" ]; then
	meson setup "$dir" -Dbuildtype=debugoptimized -Dexamples=disabled -Dbenches=disabled \
		>"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; exit 1; }
fi
meson compile -C "$dir" >"$dir/flaky-compile.log" 2>&1 || { tail -30 "$dir/flaky-compile.log"; exit 1; }

# One folder per hunt: earlier hunts' logs stay.
logs="$dir/flaky-logs/$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$logs"
run_timeout=${FLAKY_RUN_TIMEOUT:-600}

hog=""
stop_hog() {
	if [ -n "$hog" ]; then
		kill "$hog" 2>/dev/null
		wait "$hog" 2>/dev/null
		hog=""
	fi
}
trap stop_hog EXIT
trap 'stop_hog; exit 130' INT TERM

# run MODE BIN I: one run; prints nothing, returns the test's status.
run() {
	local mode=$1 bin=$2 i=$3 out="$logs/$2.$1.$3.log" rc
	# The subshell keeps the shell's "Aborted" notice of a crashed run out
	# of the report (the run's own output is in its log); its "exit $?"
	# stops bash from exec'ing timeout in it, which dies of the run's
	# signal and so brought the notice back.
	local pin=()
	[ "$mode" = pinned ] && pin=(taskset -c "$cpu")
	(timeout "$run_timeout" "${pin[@]}" "$dir/tests/test_$bin" >"$out" 2>&1; exit $?) 2>/dev/null
	rc=$?
	[ $rc -eq 0 ] && rm -f "$out"
	return $rc
}

declare -A fails
start=$(date +%s)
IFS=, read -r -a mode_list <<<"$modes"
for mode in "${mode_list[@]}"; do
	case $mode in native|pinned) ;; *) echo "flaky: unknown mode $mode" >&2; exit 2 ;; esac
	if [ "$mode" = pinned ]; then
		taskset -c "$cpu" bash -c 'while :; do :; done' &
		hog=$!
	fi
	for b in "${bins[@]}"; do
		[ -x "$dir/tests/test_$b" ] || { echo "flaky: no test_$b in $dir" >&2; exit 2; }
		t0=$(date +%s)
		n=0
		for i in $(seq 1 "$k"); do
			run "$mode" "$b" "$i" || n=$((n + 1))
		done
		fails[$b.$mode]=$n
		printf 'flaky: %-9s %-6s %d/%d failed (%d s)\n' "$b" "$mode" "$n" "$k" $(( $(date +%s) - t0 )) >&2
	done
	stop_hog
done

total=0
printf '\n%-10s %14s %22s\n' binary "native fails" "pinned+hog fails"
for b in "${bins[@]}"; do
	printf '%-10s %10s/%-3s %18s/%-3s\n' "$b" "${fails[$b.native]--}" "$k" "${fails[$b.pinned]--}" "$k"
	total=$((total + ${fails[$b.native]:-0} + ${fails[$b.pinned]:-0}))
done
echo "# $total failed runs of $(( ${#bins[@]} * k * ${#mode_list[@]} )) in $(( $(date +%s) - start )) s"
if [ $total -gt 0 ]; then
	echo "# logs of failing runs (with their CPAT_TEST_SEED and the failing test):"
	for f in "$logs"/*.log; do
		printf '#   %s: %s\n' "$f" "$(grep -m1 -E 'seed:' "$f") $(grep -m1 -E '^not ok|FAILED|WATCHDOG|ERROR' "$f")"
	done
	exit 1
fi
