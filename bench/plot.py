#!/usr/bin/env python3
"""Gnuplot scripts for the charts of scripts/plot.sh, from bench.sh's JSON.

usage: plot.py RESULTS_DIR TMP_DIR OUT_DIR

Reads <scenario>.json in RESULTS_DIR (as scripts/bench.sh writes them) and
writes into TMP_DIR one whitespace-separated data file per series and one
gnuplot script <chart>.gp per chart, each drawing OUT_DIR/<chart>.png:

  speedup_vs_workers   measured speedup against workers, with both ideals:
                       workers (sleeping or I/O tasks), min(workers, cores)
                       (CPU-bound tasks)
  pipeline_crossover   numbers pipeline: speedup vs work per item, per-item
                       and batched
  latency_vs_rate      real-time: latency p50/p99/p99.9 vs offered rate
  distributed          the real-time system through Redis and SQLite:
                       latency p50/p99 of every trial vs offered rate,
                       with the broker's ceiling and the highest rate
                       with p99 < 100 ms (its scale-out runs are a series
                       of speedup_vs_workers)
  latency_percentiles  p50/p99 of the pool and log runs

Each chart's title says which run it shows (quick/full, cpus, date, load):
the same script serves the quick and the full runs. A chart whose data is
absent (a skipped scenario) or whose JSON lacks a field it needs is left
out with a line saying so; the others are still written. Running gnuplot
on the scripts is left to scripts/plot.sh.
"""
import json
import os
import sys
import time


def load(res, name):
    """res/<name>.json, or None when it is absent, does not parse (said so)
    or is a skipped scenario's. A document without a date gets its file's."""
    p = os.path.join(res, name + ".json")
    if not os.path.exists(p):
        return None
    try:
        with open(p) as f:
            d = json.load(f)
    except ValueError as e:
        print(f"plot: {p} does not parse ({e}): left out")
        return None
    if "skipped" in d:
        return None
    m = d.setdefault("machine", {})
    if not m.get("date"):  # JSON from before the date field: the file's time
        m["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.path.getmtime(p)))
    return d


def q(s):
    """s as a gnuplot double-quoted string."""
    return '"' + s.replace('"', "'") + '"'


def run_line(docs):
    """'quick run, 2 cpus AMD EPYC, 2026-11-27, load 3.1-4.6' for the docs."""
    docs = [d for d in docs if d]
    if not docs:
        return ""
    modes = sorted({d.get("mode", "?") for d in docs})
    m = docs[0]["machine"]
    days = sorted({d["machine"]["date"][:10] for d in docs})
    loads = [d["machine"].get("loadavg1") for d in docs if d["machine"].get("loadavg1") is not None]
    s = f"{'/'.join(modes)} run{'s (mixed!)' if len(modes) > 1 else ''}, {m.get('nproc', '?')} cpus {m.get('cpu', '?')}, "
    s += days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}"
    if loads:
        lo, hi = min(loads), max(loads)
        s += f", load {lo:.1f}" if hi - lo < 0.05 else f", load {lo:.1f}-{hi:.1f}"
    return s


NL = "\\n"  # a line break inside a gnuplot double-quoted string


def title(what, docs):
    r = run_line(docs)
    return f"set title {q(what + (NL + r if r else ''))}"


TERM = "set terminal pngcairo size 960,600 noenhanced font 'sans,10'"


def chart(charts, name, fn, *args):
    """Appends (name, settings, plot command) of fn(*args) to charts."""
    try:
        c = fn(*args)
    except (KeyError, TypeError, IndexError, ValueError) as e:
        print(f"plot: {name} skipped: the JSON lacks what it needs ({type(e).__name__}: {e})")
        return
    if c:
        charts.append((name,) + c)


# 1. speedup vs workers, with both ideals: workers (sleeping / I/O-bound
#    tasks) and min(workers, cores) (CPU-bound tasks).
def speedup_vs_workers(res, tmp):
    series, docs, ncpu = [], [], None
    d = load(res, "images")
    if d:
        docs.append(d)
        ncpu = d["machine"].get("nproc")
        for part, label in (("jpeg", "images: JPEG re-encode (CPU-bound)"),
                            ("simulated", "images: simulated I/O (5 ms sleeps)")):
            pts = [(1, 1.0)] + [(r["workers"], r["speedup"]) for r in d["data"].get(part, []) if r["workers"]]
            if len(pts) > 1:
                series.append((label, pts))
    d = load(res, "pools")
    if d:
        docs.append(d)
        ncpu = ncpu or d["machine"].get("nproc")
        fixed = [r for r in d["data"]["pools"] if r["name"].startswith("fixed")]
        dyn = [r for r in d["data"]["pools"] if not r["name"].startswith("fixed")]
        series.append(("pools: fixed(N), bursts of 10 ms sleeps", [(1, 1.0)] + [(r["workers"], r["speedup"]) for r in fixed]))
        if dyn:
            series.append(("pools: dynamic, at its max workers", [(1, 1.0)] + [(r["workers"], r["speedup"]) for r in dyn]))
    d = load(res, "crawl")
    if d:
        docs.append(d)
        ncpu = ncpu or d["machine"].get("nproc")
        pts = [(r["workers"], r["speedup"]) for r in d["data"]["runs"] if r["workers"] > 1]
        if pts:
            series.append(("crawl: fan-out, HTTP on 127.0.0.1", [(1, 1.0)] + pts))
    d = load(res, "distributed")
    if d and d["data"].get("scale"):
        docs.append(d)
        ncpu = ncpu or d["machine"].get("nproc")
        series.append((f"distributed: consumer processes, {d['data'].get('work_us', '?')} us CPU per message",
                       [(r["processes"], r["speedup"]) for r in d["data"]["scale"]]))
    if not series:
        print("plot: no pool/image/crawl/distributed results: speedup_vs_workers skipped")
        return None
    wmax = max(w for _, pts in series for w, _ in pts)
    xmax = 2 ** max(3, (wmax - 1).bit_length())
    plots = []
    styles = ["pt 7 ps 1.4", "pt 5 ps 1.6 dt 2", "pt 9 ps 1.4", "pt 11 ps 1.6 dt 3", "pt 13 ps 1.4"]
    for i, (label, pts) in enumerate(series):
        f = os.path.join(tmp, f"sw{i}.dat")
        with open(f, "w") as fh:
            for w, s in sorted(pts):
                fh.write(f"{w} {s}\n")
        plots.append(f"{q(f)} using 1:2 with linespoints lw 2 {styles[i % len(styles)]} title {q(label)}")
    plots.append("x with lines dt 2 lw 1.5 lc rgb 'gray40' title 'ideal, sleeping / I/O tasks = workers'")
    if ncpu:
        plots.append(f"(x < {ncpu} ? x : {ncpu}) with lines dt 4 lw 1.5 lc rgb 'black' "
                     f"title 'ideal, CPU-bound = min(workers, {ncpu} cores)'")
    return ([title("Measured speedup over the sequential version vs workers (log-log)", docs),
             "set xlabel 'workers (threads of the pool or fan-out)'",
             "set ylabel 'speedup = sequential time / concurrent time'",
             "set logscale xy 2", f"set xrange [1:{xmax}]", f"set yrange [0.5:{xmax}]",
             "set key top left box opaque", "set grid"],
            "plot " + ", ".join(plots))


# 2. the numbers pipeline's crossover.
def pipeline_crossover(res, tmp):
    d = load(res, "numbers")
    if not d:
        print("plot: no numbers results: pipeline_crossover skipped")
        return None
    f = os.path.join(tmp, "cross.dat")
    # The batch each level used (a level with few items uses smaller ones).
    used = sorted({L.get("batch") for L in d["data"]["levels"] if L.get("batch")})
    batch = (str(used[0]) if len(used) == 1 else f"{used[0]}-{used[-1]}") if used else ""
    with open(f, "w") as fh:
        for L in sorted(d["data"]["levels"], key=lambda L: L["work_ns"]):
            x = max(L["work_ns"], 10)  # W=0 drawn at 10 ns on the log axis
            fh.write(f"{x} {L['speedup_item']} {L['speedup_batch']} {L['ideal']}\n")
    return ([title("Numbers pipeline (gen -> square -> keep evens): speedup vs CPU work per stage", [d]),
             "set xlabel 'CPU work per stage per item, ns (log; the leftmost point is W = 0)'",
             "set ylabel 'speedup over the sequential loop (log)'", "set logscale xy", "set grid",
             "set key bottom right box opaque", "set yrange [0.005:4]"],
            f"plot {q(f)} using 1:2 with linespoints lw 2 pt 7 title 'per-item hand-off', "
            f"{q(f)} using 1:3 with linespoints lw 2 pt 5 title {q(f'batched hand-off ({batch} items)' if batch else 'batched hand-off')}, "
            f"{q(f)} using 1:4 with linespoints dt 2 lw 1.5 pt 1 lc rgb 'gray40' title 'ideal (measured stage costs, capped by the cores)', "
            "1 with lines lc rgb 'black' title 'break-even (1x)', "
            "2.7 with lines dt 3 lw 1.5 lc rgb 'red' title 'guide claim 2.7x'")


# 3. real-time: latency vs offered rate. The sweep (rates rising) is drawn
#    as lines; the search for the highest passing rate probes rates out of
#    order, so its trials are points only.
def latency_vs_rate(res, tmp):
    d = load(res, "realtime")
    if not d or not d["data"].get("trials"):
        print("plot: no realtime results: latency_vs_rate skipped")
        return None
    trials = d["data"]["trials"]
    k = 1
    while k < len(trials) and trials[k]["offered"] > trials[k - 1]["offered"]:
        k += 1
    sweep, probes = trials[:k], trials[k:]
    fs, fp = os.path.join(tmp, "rt_sweep.dat"), os.path.join(tmp, "rt_probe.dat")
    for fn, ts in ((fs, sweep), (fp, probes)):
        with open(fn, "w") as fh:
            for t in ts:
                fh.write(f"{t['offered']} {t['latency_p50_ns'] / 1e6} {t['latency_p99_ns'] / 1e6} {t['latency_p999_ns'] / 1e6}\n")
    rates = [t["offered"] for t in trials]
    lo, hi = min(rates) / 1.5, max(rates) * 1.5
    plots = [f"{q(fs)} using 1:2 with linespoints lw 2 pt 7 lc 1 title 'p50 (sweep)'",
             f"{q(fs)} using 1:3 with linespoints lw 2 pt 5 lc 2 title 'p99 (sweep)'",
             f"{q(fs)} using 1:4 with linespoints lw 2 pt 9 lc 3 title 'p99.9 (sweep)'"]
    if probes:
        plots += [f"{q(fp)} using 1:2 with points pt 6 ps 1.5 lc 1 title 'p50 (search for the highest rate, unconnected)'",
                  f"{q(fp)} using 1:3 with points pt 4 ps 1.5 lc 2 title 'p99 (search)'",
                  f"{q(fp)} using 1:4 with points pt 8 ps 1.5 lc 3 title 'p99.9 (search)'"]
    plots += ["100 with lines dt 2 lw 1.5 lc rgb 'red' title 'guide: under 100 ms'",
              "20 with lines dt 3 lw 1.5 lc rgb 'dark-red' title 'goal: p99 under 20 ms at 10,000 msg/s'"]
    mr = d["data"].get("max_rate_p99_100ms")
    extra = []
    if mr:
        extra.append(f"set arrow from {mr},graph 0 to {mr},graph 1 nohead dt 4 lc rgb 'gray40'")
        extra.append(f"set label {q(f'highest rate with p99 < 100 ms: {mr:,.0f} msg/s ')} at {mr},graph 0.04 right")
    return ([title("Real-time pipeline: end-to-end latency vs offered load (open loop)", [d]),
             "set xlabel 'offered rate, msg/s (log)'", "set ylabel 'latency, ms (log)'",
             "set logscale xy", f"set xrange [{lo}:{hi}]", "set format x '%.0s%c'",
             "set grid", "set key top left box opaque"] + extra,
            "plot " + ", ".join(plots))


# 4. the real-time system through the broker and the database.
def distributed(res, tmp):
    d = load(res, "distributed")
    if not d or not d["data"].get("trials"):
        print("plot: no distributed results: distributed skipped")
        return None
    trials = d["data"]["trials"]
    f = os.path.join(tmp, "dist.dat")
    with open(f, "w") as fh:
        for t in sorted(trials, key=lambda t: t["offered"]):
            fh.write(f"{t['offered']} {t['latency_p50_ns'] / 1e6} {t['latency_p99_ns'] / 1e6} "
                     f"{1 if t.get('pass') else 0}\n")
    rates = [t["offered"] for t in trials]
    ceiling = d["data"].get("ceiling", {}).get("rate")
    hi = max(rates + ([ceiling] if ceiling else [])) * 1.5
    extra = []
    for x, label, style in ((ceiling, "broker ceiling", "dt 2 lw 2 lc rgb 'black'"),
                            (d["data"].get("max_rate_p99_100ms"), "highest rate with p99 < 100 ms",
                             "dt 4 lw 1.5 lc rgb 'gray40'")):
        if x:
            extra.append(f"set arrow from {x},graph 0 to {x},graph 1 nohead {style}")
            extra.append(f"set label {q(f'{label}: {x:,.0f} msg/s ')} at {x},graph {0.95 if 'ceiling' in label else 0.88} right front")
    plots = [f"{q(f)} using 1:2 with points pt 7 ps 1.3 lc 1 title 'p50, each trial'",
             f"{q(f)} using 1:3 with points pt 5 ps 1.3 lc 2 title 'p99, each trial'",
             "100 with lines dt 2 lw 1.5 lc rgb 'red' title 'guide: under 100 ms'"]
    return ([title("Through Redis Streams and SQLite: latency from XADD to COMMIT vs offered rate", [d]),
             "set xlabel 'offered rate, msg/s (log)'", "set ylabel 'latency, ms (log)'",
             "set logscale xy", f"set xrange [{min(rates) / 1.5}:{hi}]", "set format x '%.0s%c'",
             "set grid", "set key top left box opaque"] + extra,
            "plot " + ", ".join(plots))


# 5. latency percentiles of the pool and log runs.
def latency_percentiles(res, tmp):
    rows, docs = [], []
    d = load(res, "pools")
    if d:
        docs.append(d)
        rows += [("pools " + r["name"], r["latency_p50_ns"], r["latency_p99_ns"]) for r in d["data"]["pools"]]
    d = load(res, "logs")
    if d:
        docs.append(d)
        rows += [("logs " + r["name"], r["latency_p50_ns"], r["latency_p99_ns"]) for r in d["data"]["versions"]]
    if not rows:
        print("plot: no pool/log results: latency_percentiles skipped")
        return None
    f = os.path.join(tmp, "pct.dat")
    with open(f, "w") as fh:
        for name, p50, p99 in rows:
            fh.write(f"{q(name)} {p50 / 1e6} {p99 / 1e6}\n")
    return ([title("Latency p50 / p99 (pools: submit -> done of 10 ms tasks; logs: line read -> its batch saved)", docs),
             "set ylabel 'latency, ms (log)'", "set logscale y", "set style data histograms",
             "set style histogram clustered gap 1", "set style fill solid 0.8 border -1",
             "set xtics rotate by -30", "set grid ytics", "set key top right box opaque width 1",
             "set bmargin 6"],
            f"plot {q(f)} using 2:xtic(1) title 'p50', '' using 3 title 'p99'")


CHARTS = [("speedup_vs_workers", speedup_vs_workers),
          ("pipeline_crossover", pipeline_crossover),
          ("latency_vs_rate", latency_vs_rate),
          ("distributed", distributed),
          ("latency_percentiles", latency_percentiles)]


def write_scripts(res, tmp, out):
    """Writes the data files and <chart>.gp of every chart it can draw into
    tmp; returns the names of those charts."""
    charts = []
    for name, fn in CHARTS:
        chart(charts, name, fn, res, tmp)
    for name, sets, plot in charts:
        with open(os.path.join(tmp, name + ".gp"), "w") as fh:
            fh.write(TERM + "\n")
            fh.write(f"set output {q(os.path.join(out, name + '.png'))}\n")
            fh.write("\n".join(sets) + "\n" + plot + "\n")
    return [c[0] for c in charts]


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    write_scripts(*argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
