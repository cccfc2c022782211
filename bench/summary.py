#!/usr/bin/env python3
"""The summary table of scripts/bench.sh, from the results it wrote.

usage: summary.py RESULTS_DIR MODE LOADAVG_START LOADAVG_END SECONDS
                  TICKS_START TICKS_END

RESULTS_DIR holds <scenario>.json and .txt (and micro-<m>.txt) as
scripts/bench.sh writes them; MODE is --quick or --full; the load averages
are printed as given; TICKS_* are "all stolen" CPU ticks read from
/proc/stat at the start and end, from which the share of CPU time the
hypervisor gave to other guests is printed ("unknown" when absent).

Prints one table (scenario, the guide's claim, sequential, concurrent,
speedup, ideal bound, efficiency, note), then the micro-benchmark lines, the
verdict lines, the goals met or not, the skips and the failures. It only
reports: the exit status of bench.sh is the scenarios' own.
"""
import json
import math
import os
import sys

ORDER = ["numbers", "logs", "pools", "images", "crawl", "realtime", "distributed", "micro-pipeline"]
HEADER = ["scenario", "guide claim", "sequential", "concurrent", "speedup", "ideal", "eff", "note"]


def steal_share(tk0, tk1):
    """The stolen share between two "all stolen" tick readings, as text."""
    try:
        (t0, s0), (t1, s1) = [map(int, t.split()) for t in (tk0, tk1)]
    except ValueError:
        return "unknown"
    return f"{100 * (s1 - s0) / (t1 - t0):.1f}%" if t1 > t0 else "?"


def _lines(path):
    with open(path) as f:
        return f.readlines()


def _json(path):
    with open(path) as f:
        return json.load(f)


def _missing(v):
    return v is None or (isinstance(v, float) and math.isnan(v))


def num(v, unit):
    """A measured value with its unit; '-' when not measured."""
    if _missing(v):
        return "-"
    if unit == "s":
        return f"{v:.3f} s" if v >= 0.1 else f"{v * 1e3:.1f} ms"
    if unit.endswith("/s"):
        return f"{v:,.0f} {unit}"
    return f"{v:.4g} {unit}"


def x(v):
    """A ratio as '1.23x'; '-' when not measured."""
    return "-" if _missing(v) else f"{v:.2f}x"


class Report:
    """What the results directory says: rows, lines, skips, failures."""

    def __init__(self):
        self.rows, self.skips, self.fails, self.verdicts = [], [], [], []
        self.micro_lines, self.goals = [], []
        self.machine = None


def read_scenarios(res, rep):
    """One row per summary entry of each scenario's JSON, in ORDER."""
    for s in ORDER:
        p = os.path.join(res, s + ".json")
        txt = os.path.join(res, s + ".txt")
        if not os.path.exists(p):
            why = "not run"
            if os.path.exists(txt):
                lines = [l for l in _lines(txt) if l.startswith(("SKIP", "FAILED"))]
                why = lines[-1].strip() if lines else "no JSON written (crashed?)"
                if not lines:
                    rep.fails.append(f"{s}: no JSON written (crashed?)")
            if why.startswith("SKIP"):
                rep.skips.append(why)
            elif why != "not run" and not why.startswith("no JSON"):
                rep.fails.append(why)
            continue
        try:
            d = _json(p)
        except Exception as e:
            rep.fails.append(f"{s}: JSON does not parse: {e}")
            continue
        rep.machine = rep.machine or d.get("machine")
        if os.path.exists(txt):
            rep.fails += [l.strip() for l in _lines(txt) if l.startswith("FAILED " + s + ": exit")]
        if "skipped" in d:
            rep.skips.append(f"SKIP {s}: {d['skipped']}")
            continue
        rep.verdicts += d.get("verdicts", [])
        for part in d.get("data", {}).get("skipped_parts", []):
            rep.skips.append(f"SKIP {part}")
        if not d.get("ok"):
            bad = [k for k, v in d.get("checks", {}).items() if not v]
            rep.fails.append(f"{s}: check(s) failed: {', '.join(bad) or '?'}")
        for r in d.get("summary", []):
            rep.rows.append([r["name"], r["claim"] or "", num(r["seq"], r["unit"]),
                             num(r["conc"], r["unit"]), x(r["speedup"]), x(r["ideal"]),
                             "-" if r["efficiency"] is None else f"{r['efficiency']:.2f}",
                             r.get("note", "")])


def read_micro(res, rep):
    """The micro-benchmarks' own lines; pool cases with a speedup get a row."""
    ncpu = (rep.machine or {}).get("nproc") or os.cpu_count()
    for m in ("chan", "pool"):
        p = os.path.join(res, f"micro-{m}.txt")
        if not os.path.exists(p):
            continue
        for l in _lines(p):
            l = l.rstrip()
            if l.startswith("SKIP"):
                rep.skips.append(l)
                continue
            if l.startswith("FAILED"):
                rep.fails.append(l)
                continue
            if not l.startswith("cpattern"):
                continue
            rep.micro_lines.append(l)
            f = l.split()
            kv = dict(t.split("=", 1) for t in f[2:] if "=" in t)
            if m == "pool" and "speedup" in kv and f[1] in ("cpu", "sleep"):
                w = int(kv["workers"])
                sp = float(kv["speedup"])
                conc = float(kv["secs"])
                ideal = float(min(w, ncpu)) if f[1] == "cpu" else float(w)
                rep.rows.append([f"micro {f[0]} {f[1]} ({w} workers)", "Nx", num(conc * sp, "s"),
                                 num(conc, "s"), x(sp), x(ideal), f"{sp / ideal:.2f}",
                                 f"{kv['tasks']} tasks, inline baseline"])


def _met(ok):
    return "met    " if ok else "NOT met"


def read_goals(res, rep):
    """The suite's goals: measured and reported here, never asserted by
    the tests."""
    effs = {r[0]: r[6] for r in rep.rows}

    def goal(what, names, bound):
        for n in names:
            for k, v in effs.items():
                if k.startswith(n) and v != "-":
                    rep.goals.append(f"  {_met(float(v) >= bound)}  {what}: {k} efficiency {v} (goal >= {bound})")

    goal("I/O-bound", ["images sim-I/O", "crawl"], 0.95)
    goal("CPU-bound", ["numbers W=100 us", "logs blocks", "images jpeg"], 0.9)
    p = os.path.join(res, "realtime.json")
    if os.path.exists(p):
        d = _json(p)
        if "skipped" not in d:
            g = d["data"]["at_guide_rate"]
            p99 = g["latency_p99_ns"] / 1e6
            ok = p99 < 20 and g["achieved"] >= 0.95 * g["offered"]
            rep.goals.append(f"  {_met(ok)}  real-time: {g['offered']:.0f} msg/s offered, "
                             f"{g['achieved']:.0f} achieved, p99 {p99:.1f} ms (goal p99 < 20 ms)")
            mr = d["data"]["max_rate_p99_100ms"]
            rep.goals.append(f"  {_met(mr >= 200000)}  real-time: highest rate with p99 < 100 ms "
                             f"{mr:,.0f} msg/s (goal >= 200,000)")
    distributed_goals(res, rep)


def distributed_goals(res, rep):
    """The goals of the real-time system through Redis and SQLite."""
    p = os.path.join(res, "distributed.json")
    if not os.path.exists(p):
        return
    d = _json(p)
    if "skipped" in d:
        return
    g = d["data"]["at_guide_rate"]
    p99 = g["latency_p99_ns"] / 1e6
    ok = p99 < 100 and g["achieved"] >= 0.95 * g["offered"]
    rep.goals.append(f"  {_met(ok)}  distributed: {g['offered']:.0f} msg/s through Redis and SQLite, "
                     f"{g['achieved']:.0f} achieved, p99 {p99:.1f} ms (goal p99 < 100 ms)")
    ceil = d["data"]["ceiling"]["rate"]
    mr = d["data"]["max_rate_p99_100ms"]
    share = mr / ceil if ceil else 0
    rep.goals.append(f"  {_met(share >= 0.5)}  distributed: highest rate with p99 < 100 ms {mr:,.0f} msg/s "
                     f"= {100 * share:.0f}% of the broker ceiling {ceil:,.0f} msg/s (goal >= 50%)")
    two = [s for s in d["data"].get("scale", []) if s["processes"] == 2]
    if two:
        sp = two[0]["speedup"] or 0
        rep.goals.append(f"  {_met(sp >= 1.8)}  distributed: 2 processes {sp:.2f}x one on CPU-bound work "
                         f"(goal >= 1.8x; bound {two[0]['ideal']:.0f}x)")


def render(rep, mode, la0, la1, secs, steal):
    """The printed summary, as a list of lines."""
    out = []
    w = [max(len(str(r[i])) for r in rep.rows + [HEADER]) for i in range(len(HEADER) - 1)]

    def row(cells):
        return "  ".join(str(c).ljust(w[i]) if i in (0, 1) else str(c).rjust(w[i])
                         for i, c in enumerate(cells[:-1])) + "  " + cells[-1]

    out.append("")
    out.append("=" * 100)
    m = rep.machine or {}
    out.append(f"SUMMARY ({mode.lstrip('-')} run, {secs} s): {m.get('nproc', '?')} cpus, "
               f"{m.get('cpu', '?')}, loadavg {la0} at start, {la1} at end "
               f"(other processes may share the machine); cpu time stolen by the hypervisor: {steal}")
    out.append(row(HEADER))
    out += [row(r) for r in rep.rows]
    if rep.micro_lines:
        out.append("\nmicro-benchmark lines (peers' format):")
        out += ["  " + l for l in rep.micro_lines]
    if rep.verdicts:
        out.append("\nwhat the runs showed about the guide's claims:")
        out += ["  " + v for v in rep.verdicts]
    if rep.goals:
        out.append("\ngoals (measured, not asserted):")
        if mode != "--full":
            out.append("  (quick sizes: a CPU-bound version runs for tens of milliseconds, and its efficiency\n"
                       "   moves by about 0.1 between runs on a shared machine; the goals are read from\n"
                       "   ./scripts/bench.sh --full, whose last run is in bench/RESULTS.md)")
        out += rep.goals
    out += rep.skips
    out += ["FAILED " + f if not f.startswith("FAILED") else f for f in rep.fails]
    out.append("=" * 100)
    return out


def summarize(res, mode, la0, la1, secs, tk0, tk1):
    rep = Report()
    read_scenarios(res, rep)
    read_micro(res, rep)
    read_goals(res, rep)
    return render(rep, mode, la0, la1, secs, steal_share(tk0, tk1))


def main(argv):
    if len(argv) != 7:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    for line in summarize(*argv):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
