#!/usr/bin/env bash
# Draws PNG charts from the JSON results of scripts/bench.sh with gnuplot:
#   bench/plots/speedup_vs_workers.png   measured speedup against workers,
#                                        with the ideal (= workers) line
#   bench/plots/pipeline_crossover.png   numbers pipeline: speedup vs work
#                                        per item, per-item and batched
#   bench/plots/latency_vs_rate.png      real-time: latency p50/p99/p99.9
#                                        vs offered rate
#   bench/plots/latency_percentiles.png  p50/p99 of the pool and log runs
# Only measured values are drawn; a chart whose data is absent (a skipped
# scenario) is left out with a line saying so.
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

# JSON -> whitespace-separated data files + a gnuplot script per chart.
python3 - "$res" "$tmp" "$out" <<'PY' || exit 1
import json, os, sys

res, tmp, out = sys.argv[1:4]


def load(name):
    p = os.path.join(res, name + ".json")
    if not os.path.exists(p):
        return None
    d = json.load(open(p))
    return None if "skipped" in d else d


def q(s):
    return '"' + s.replace('"', "'") + '"'


charts = []
term = "set terminal pngcairo size 960,600 noenhanced font 'sans,10'"

# 1. speedup vs workers
series = []
d = load("images")
if d:
    ncpu = d["machine"]["nproc"]
    for part, label in (("jpeg", "images JPEG (CPU-bound)"), ("simulated", "images simulated I/O")):
        pts = [(1, 1.0)] + [(r["workers"], r["speedup"]) for r in d["data"].get(part, []) if r["workers"]]
        if len(pts) > 1:
            series.append((label, pts))
d = load("pools")
if d:
    fixed = [r for r in d["data"]["pools"] if r["name"].startswith("fixed")]
    dyn = [r for r in d["data"]["pools"] if not r["name"].startswith("fixed")]
    series.append(("pools fixed (10 ms sleeps)", [(1, 1.0)] + [(r["workers"], r["speedup"]) for r in fixed]))
    if dyn:
        series.append(("pools dynamic, at its max", [(1, 1.0)] + [(r["workers"], r["speedup"]) for r in dyn]))
d = load("crawl")
if d:
    series.append(("crawl (fan-out)", [(1, 1.0)] + [(r["workers"], r["speedup"]) for r in d["data"]["runs"] if r["workers"] > 1]))
if series:
    plots = []
    for i, (label, pts) in enumerate(series):
        f = os.path.join(tmp, f"sw{i}.dat")
        with open(f, "w") as fh:
            for w, s in sorted(pts):
                fh.write(f"{w} {s}\n")
        plots.append(f"{q(f)} using 1:2 with linespoints lw 2 pt 7 title {q(label)}")
    plots.append("x with lines dt 2 lc rgb 'gray' title 'ideal = workers'")
    charts.append(("speedup_vs_workers", [
        "set title 'Measured speedup vs workers (sequential = 1)'",
        "set xlabel 'workers'", "set ylabel 'speedup'", "set logscale xy 2",
        "set xrange [1:32]", "set yrange [0.25:32]", "set key top left", "set grid"],
        "plot " + ", ".join(plots)))
else:
    print("plot: no pool/image/crawl results: speedup_vs_workers skipped")

# 2. pipeline crossover
d = load("numbers")
if d:
    f = os.path.join(tmp, "cross.dat")
    with open(f, "w") as fh:
        for L in d["data"]["levels"]:
            x = max(L["work_ns"], 10)  # W=0 drawn at 10 ns on the log axis
            fh.write(f"{x} {L['speedup_item']} {L['speedup_batch']} {L['ideal']}\n")
    charts.append(("pipeline_crossover", [
        "set title 'Numbers pipeline (gen -> square -> keep evens): speedup vs work per stage per item'",
        "set xlabel 'CPU work per stage per item, ns (leftmost point: 0)'",
        "set ylabel 'speedup over the sequential loop'", "set logscale xy", "set grid",
        "set key top left", "set yrange [0.005:4]"],
        f"plot {q(f)} using 1:2 with linespoints lw 2 pt 7 title 'per-item hand-off', "
        f"{q(f)} using 1:3 with linespoints lw 2 pt 5 title 'batched hand-off', "
        f"{q(f)} using 1:4 with lines dt 2 lc rgb 'gray' title 'bound (stage costs, cores)', "
        "1 with lines lc rgb 'black' title 'break-even', "
        "2.7 with lines dt 3 lc rgb 'red' title 'guide claim 2.7x'"))
else:
    print("plot: no numbers results: pipeline_crossover skipped")

# 3. latency vs offered rate (real-time)
d = load("realtime")
if d and d["data"].get("trials"):
    f = os.path.join(tmp, "rt.dat")
    with open(f, "w") as fh:
        for t in sorted(d["data"]["trials"], key=lambda t: t["offered"]):
            fh.write(f"{t['offered']} {t['latency_p50_ns'] / 1e6} {t['latency_p99_ns'] / 1e6} {t['latency_p999_ns'] / 1e6}\n")
    charts.append(("latency_vs_rate", [
        "set title 'Real-time pipeline: end-to-end latency vs offered load (open loop)'",
        "set xlabel 'offered rate, msg/s'", "set ylabel 'latency, ms'", "set logscale xy",
        "set grid", "set key top left"],
        f"plot {q(f)} using 1:2 with linespoints lw 2 pt 7 title 'p50', "
        f"{q(f)} using 1:3 with linespoints lw 2 pt 5 title 'p99', "
        f"{q(f)} using 1:4 with linespoints lw 2 pt 9 title 'p99.9', "
        "100 with lines dt 2 lc rgb 'red' title '100 ms target'"))
else:
    print("plot: no realtime results: latency_vs_rate skipped")

# 4. latency percentiles of the pool and log runs
rows = []
d = load("pools")
if d:
    rows += [(r["name"], r["latency_p50_ns"], r["latency_p99_ns"]) for r in d["data"]["pools"]]
d = load("logs")
if d:
    rows += [("logs " + r["name"], r["latency_p50_ns"], r["latency_p99_ns"]) for r in d["data"]["versions"]]
if rows:
    f = os.path.join(tmp, "pct.dat")
    with open(f, "w") as fh:
        for name, p50, p99 in rows:
            fh.write(f"{q(name)} {p50 / 1e6} {p99 / 1e6}\n")
    charts.append(("latency_percentiles", [
        "set title 'Latency percentiles (pools: submit -> done; logs: read -> saved)'",
        "set ylabel 'latency, ms'", "set logscale y", "set style data histograms",
        "set style histogram clustered gap 1", "set style fill solid 0.8 border -1",
        "set xtics rotate by -30", "set grid ytics", "set key top left"],
        f"plot {q(f)} using 2:xtic(1) title 'p50', '' using 3 title 'p99'"))
else:
    print("plot: no pool/log results: latency_percentiles skipped")

for name, sets, plot in charts:
    with open(os.path.join(tmp, name + ".gp"), "w") as fh:
        fh.write(term + "\n")
        fh.write(f"set output {q(os.path.join(out, name + '.png'))}\n")
        fh.write("\n".join(sets) + "\n" + plot + "\n")
PY

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
