#!/usr/bin/env bash
# The benchmark suite: every comparison of the Go guide the library follows,
# sequential vs concurrent, reproduced on this machine, then ONE summary
# table: scenario, the guide's claim, sequential, concurrent, speedup, the
# ideal bound for this machine, efficiency = speedup / ideal.
#
# Installs what is missing (scripts/deps.sh: meson, ninja; as root also the
# optional libturbojpeg0-dev libmicrohttpd-dev libcurl4-openssl-dev
# libcjson-dev gnuplot-nox), builds a release build in build/bench, runs
# each scenario (bench/cpat-bench-*) at quick sizes (50-60 s on 2 cores,
# after a 5 s build) and the channel, pool and pipeline micro-benchmarks. A scenario whose
# optional library is absent says so and what to install; nothing is
# faked. Results: build/bench/results/<scenario>.json and .txt (the JSON
# feeds scripts/plot.sh); bench/summary.py prints the table from them.
#
# usage: scripts/bench.sh [--full] [--only a,b,...] [--no-build]
#   --full        the guide's sizes (long: tens of minutes)
#   --only LIST   scenarios among numbers,logs,pools,images,crawl,realtime,
#                 distributed,micro
# distributed (the real-time system through Redis and SQLite) starts its own
# redis-server; without redis-server it is skipped with a line saying so.
# Environment: CPAT_BENCH_DIR (build folder, default build/bench).
# Exit status: non-zero if a scenario failed a check or crashed (a skip is
# not a failure).
set -u
cd "$(dirname "$0")/.."

mode=--quick
only=""
build=1
while [ $# -gt 0 ]; do
	case $1 in
	--full) mode=--full ;;
	--quick) mode=--quick ;;
	--only) only=$2; shift ;;
	--no-build) build=0 ;;
	-h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
	*) echo "bench.sh: unknown argument '$1'" >&2; exit 2 ;;
	esac
	shift
done

optional=(libturbojpeg0-dev libmicrohttpd-dev libcurl4-openssl-dev libcjson-dev gnuplot-nox
	redis-server libhiredis-dev libsqlite3-dev)
dir=${CPAT_BENCH_DIR:-build/bench}
res=$dir/results
start=$(date +%s)

if [ $build -eq 1 ]; then
	./scripts/deps.sh || exit 1
	./scripts/deps.sh --optional "${optional[@]}"
	if [ -f "$dir/build.ninja" ]; then
		# Re-detect the optional libraries (they may have been installed since).
		meson setup --reconfigure "$dir" >"$dir-setup.log" 2>&1
	else
		mkdir -p build
		meson setup "$dir" -Dbuildtype=release -Dtests=disabled -Dexamples=disabled >"$dir-setup.log" 2>&1
	fi || { cat "$dir-setup.log"; echo "bench: meson setup failed" >&2; exit 1; }
	echo "=== building $dir (release)" >&2
	if ! meson compile -C "$dir" >"$dir/compile.log" 2>&1; then
		tail -40 "$dir/compile.log"
		echo "bench: build failed" >&2
		exit 1
	fi
fi

mkdir -p "$res"
rm -f "$res"/*.json "$res"/*.txt
loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)
# CPU ticks "all stolen" (/proc/stat: user .. steal): time the hypervisor
# gave these cpus to other guests stretches every timing unseen.
ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $9; exit }' /proc/stat 2>/dev/null; }
ticks_start=$(ticks)
status=0
want() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

for s in numbers logs pools images crawl realtime distributed; do
	want "$s" || continue
	exe=$dir/bench/cpat-bench-$s
	if [ "$s" = distributed ] && ! command -v redis-server >/dev/null && [ -z "${REDIS_SERVER:-}" ]; then
		echo "SKIP distributed: redis-server not installed (apt-get install redis-server libhiredis-dev libsqlite3-dev libcjson-dev)" | tee "$res/$s.txt"
		continue
	fi
	if [ ! -x "$exe" ]; then
		echo "SKIP $s: $exe was not built (see $dir/compile.log)" | tee "$res/$s.txt"
		continue
	fi
	echo "=== $s ($mode)" >&2
	t0=$(date +%s.%N)
	"$exe" "$mode" --json "$res/$s.json" | tee "$res/$s.txt"
	rc=${PIPESTATUS[0]}
	t1=$(date +%s.%N)
	awk -v s="$s" -v rc="$rc" -v a="$t0" -v b="$t1" \
		'BEGIN { printf "=== %s: exit %d, %.1f s\n", s, rc, b - a }' >&2
	if [ "$rc" -ne 0 ]; then
		echo "FAILED $s: exit status $rc" | tee -a "$res/$s.txt"
		status=1
	fi
done

if want micro; then
	# The peers' micro-benchmarks, at quick sizes, their own line formats.
	# The pool bench's inline baseline runs every task (--seq-div 1), so its
	# speedup is measured, not extrapolated.
	if [ "$mode" = --full ]; then
		chan_args=()
		pool_args=(--seq-div 1 --impls cpattern,cpattern-dyn)
	else
		chan_args=(-shapes spsc,mpsc,mpmc,select_rx -caps 0,1024 -msgs 200000 -reps 1)
		pool_args=(--empty-tasks 100000 --cpu-tasks 20000 --sleep-tasks 200 --seq-div 1
			--impls cpattern,cpattern-dyn)
	fi
	# The pipeline bench (hand-off cost, ordered stages, batching) writes
	# a scenario JSON: its rows join the summary table as micro-pipeline.
	pipe_args=("$mode" --no-progress --json "$res/micro-pipeline.json")
	for m in chan pool pipeline; do
		exe=$dir/bench/cpat-bench-$m
		if [ ! -x "$exe" ]; then
			echo "SKIP micro-$m: $exe was not built" | tee "$res/micro-$m.txt"
			continue
		fi
		echo "=== micro-$m" >&2
		case $m in
		chan) args=("${chan_args[@]}") ;;
		pool) args=("${pool_args[@]}") ;;
		*) args=("${pipe_args[@]}") ;;
		esac
		"$exe" "${args[@]}" >"$res/micro-$m.txt" 2>"$res/micro-$m.err"
		rc=$?
		cat "$res/micro-$m.txt"
		if [ $rc -ne 0 ]; then
			echo "FAILED micro-$m: exit status $rc" | tee -a "$res/micro-$m.txt"
			status=1
		fi
	done
fi

loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)
ticks_end=$(ticks)
# The summary table, goals, skips and failures (bench/summary.py).
python3 bench/summary.py "$res" "$mode" "$loadavg_start" "$loadavg_end" \
	"$(( $(date +%s) - start ))" "$ticks_start" "$ticks_end"
exit $status
