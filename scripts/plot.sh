#!/usr/bin/env bash
# Draws PNG charts from the JSON results of scripts/bench.sh with gnuplot:
#   bench/plots/speedup_vs_workers.png   measured speedup against workers,
#                                        with both ideals: workers (sleeping
#                                        or I/O tasks), min(workers, cores)
#                                        (CPU-bound tasks)
#   bench/plots/pipeline_crossover.png   numbers pipeline: speedup vs work
#                                        per item, per-item and batched
#   bench/plots/latency_vs_rate.png      real-time: latency p50/p99/p99.9
#                                        vs offered rate
#   bench/plots/distributed.png          through Redis and SQLite: p50/p99
#                                        of every trial vs offered rate,
#                                        with the broker's ceiling
#   bench/plots/latency_percentiles.png  p50/p99 of the pool and log runs
# Only measured values are drawn; a chart whose data is absent (a skipped
# scenario) is left out with a line saying so. Every title names the run it
# shows (quick or full, cpus, date, load average), so the same script serves
# quick and full runs; the PNGs are committed (bench/RESULTS.md shows them):
# regenerate them from the run RESULTS.md records.
#
# usage: scripts/plot.sh [RESULTS_DIR]   (default build/bench/results,
#        or $CPAT_BENCH_DIR/results)
set -u
cd "$(dirname "$0")/.."
res=${1:-${CPAT_BENCH_DIR:-build/bench}/results}
out=bench/plots
if ! command -v gnuplot >/dev/null 2>&1; then
	if [ "$(id -u)" -eq 0 ]; then
		./scripts/deps.sh gnuplot-nox || exit 1
	else
		echo "plot: gnuplot is missing: apt-get install gnuplot-nox (as root)" >&2
		exit 1
	fi
fi
[ -d "$res" ] || { echo "plot: no results in $res: run scripts/bench.sh first" >&2; exit 1; }
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# JSON -> data files + a gnuplot script per chart (bench/plot.py), then
# gnuplot draws each.
python3 bench/plot.py "$res" "$tmp" "$out" || exit 1

status=0
for gp in "$tmp"/*.gp; do
	[ -e "$gp" ] || continue
	name=$(basename "$gp" .gp)
	if gnuplot "$gp" 2>"$tmp/$name.err"; then
		echo "plot: $out/$name.png"
	else
		cat "$tmp/$name.err" >&2
		echo "plot: $name failed" >&2
		status=1
	fi
done
exit $status
