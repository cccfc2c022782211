/*
 * benchutil: what every scenario bench shares (the guide's comparisons,
 * bench/cpat-bench-*.c). Not part of the library.
 *
 * - Arguments: --quick, --tiny, --full (default), --json FILE,
 *   --no-progress, --help, plus the scenario's own options (bu_opt table).
 * - Time: cpat_now_ns(), sleeping, and a calibrated deterministic CPU spin
 *   (bu_work_iters()) for "work per item" that does not depend on the clock.
 * - Latencies: a preallocated recorder, safe to add to from many threads,
 *   and percentiles.
 * - Output: a report per scenario that prints the human tables and, with
 *   --json, one JSON document: {"scenario", "machine", "mode", "data": {...},
 *   "summary": [...], "checks": {...}} or {"scenario", "skipped": reason}.
 *   The suite driver (scripts/bench.sh) builds its one table from the
 *   "summary" rows. Every number in it is measured by the run that wrote it.
 * - Progress: a live line on a terminal (count, rate, time left), plain
 *   periodic lines otherwise.
 * - Small pieces the channel and pool micro-benchmarks (cpat-bench-chan,
 *   cpat-bench-pool) share with the scenarios: bu_mix(), bu_cmp_double().
 *
 * Nothing here is thread-safe unless it says so.
 */
#ifndef CPAT_BENCHUTIL_H
#define CPAT_BENCHUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <pthread.h>
#include <stdatomic.h>

/* ---- arguments ---- */

enum bu_mode { BU_FULL = 0, BU_QUICK = 1, BU_TINY = 2 };

enum bu_opt_type { BU_LONG, BU_DOUBLE, BU_STR };

/* A scenario option "--name VALUE" stored into *ptr if given. */
struct bu_opt {
	const char *name; /* without the dashes */
	enum bu_opt_type type;
	void *ptr; /* long *, double * or const char ** */
	const char *help;
};

struct bu_args {
	enum bu_mode mode;
	const char *json; /* --json FILE, or NULL */
	int progress;     /* 0 with --no-progress */
	const char *argv0;
};

/*
 * Parses the common flags and @p opts. Prints usage and exits 0 on --help;
 * prints an error and exits 2 on a bad argument.
 */
void bu_parse(int argc, char **argv, struct bu_args *a, const char *about,
	      const struct bu_opt *opts, size_t nopts);

/* "full", "quick" or "tiny". */
const char *bu_mode_name(enum bu_mode m);

/* ---- time and work ---- */

int64_t bu_now(void);           /* cpat_now_ns() */
void bu_sleep_ns(int64_t ns);   /* nanosleep, resumed after signals */
void bu_sleep_until(int64_t t); /* sleep until cpat_now_ns() >= t */

/*
 * Deterministic CPU work: bu_work_iters(n) runs n dependent iterations and
 * returns a value derived from them and @p seed. bu_work_ns(ns) gives the
 * iteration count that took @p ns on this machine at calibration
 * (bu_work_calibrate(), called once on the main thread; idempotent).
 */
void bu_work_calibrate(void);
uint64_t bu_work_ns(int64_t ns);
uint64_t bu_work_iters(uint64_t seed, uint64_t n);

/* Machine facts. */
int bu_ncpu(void);
const char *bu_cpu_model(void);
double bu_loadavg1(void);

/* This process's CPU use so far (getrusage: every thread, user + system)
 * and its context switches: subtract two readings for a run's. */
struct bu_usage {
	double cpu_ns;
	long vcsw;  /* voluntary: the thread blocked (a park, a read) */
	long ivcsw; /* involuntary: the thread was preempted */
};
void bu_usage_now(struct bu_usage *u);
void bu_usage_sub(struct bu_usage *u, const struct bu_usage *start);

/* The machine's CPU ticks so far, all and stolen (time the hypervisor gave
 * these cpus to other guests: /proc/stat); both 0 where unknown. */
void bu_cpu_ticks(uint64_t *total, uint64_t *steal);

/* The index of the median of v[0..n) (for an even n, the lower of the two
 * middle values): the run to report of n repetitions. n >= 1, at most 64
 * (larger n: the first 64 are used). */
size_t bu_median_index(const int64_t *v, size_t n);

/* Writes the file's dirty pages to disk now (fsync), so that the kernel's
 * writeback of them does not land on a later timed run: a run that follows
 * the writing of 1 GB would otherwise share the cores with the flusher 30 s
 * later (vm.dirty_expire_centisecs). 0, or -1 (errno set). Call it outside
 * the timed part. */
int bu_sync_file(const char *path);

/* FNV-1a 64 over bytes, continuing from @p h (start with BU_FNV_INIT). */
#define BU_FNV_INIT 0xcbf29ce484222325ull
uint64_t bu_fnv(uint64_t h, const void *p, size_t n);

/* A 64-bit mixer (MurmurHash3's finalizer): a well-spread, deterministic
 * value from a counter or a seed, for synthetic data that every run and
 * every version of a scenario make alike. Inline: scenarios call it on
 * their timed paths. */
static inline uint64_t bu_mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

/* qsort() comparator of doubles, ascending. */
int bu_cmp_double(const void *a, const void *b);

/* Whether CPAT_BENCH_FORCE_SKIP (comma list, or "all") names @p what. */
int bu_force_skip(const char *what);

/* ---- latencies ---- */

struct bu_lat {
	int64_t *v;
	size_t cap;
	atomic_size_t
		n; /* may exceed cap: extra samples are counted, not kept */
	int sorted;
};

int bu_lat_init(struct bu_lat *l, size_t cap); /* 0 or -1 (no memory) */
void bu_lat_free(struct bu_lat *l);
void bu_lat_reset(struct bu_lat *l);
void bu_lat_add(struct bu_lat *l, int64_t ns); /* thread-safe */
size_t bu_lat_count(const struct bu_lat *l);   /* samples kept */
/* Percentile @p p in [0, 100] (nearest rank) in ns; -1 if no samples. */
int64_t bu_lat_pct(struct bu_lat *l, double p);
double bu_lat_mean(const struct bu_lat *l);

/* ---- JSON (a streaming writer; every call is a no-op on NULL) ---- */

struct bu_json;
struct bu_json *bu_json_open(const char *path); /* NULL on error (printed) */
void bu_json_obj(struct bu_json *j, const char *key); /* key NULL in arrays */
void bu_json_arr(struct bu_json *j, const char *key);
void bu_json_end(struct bu_json *j); /* ends the innermost obj or arr */
void bu_json_num(struct bu_json *j, const char *key, double v); /* NaN: null */
void bu_json_int(struct bu_json *j, const char *key, int64_t v);
void bu_json_str(struct bu_json *j, const char *key, const char *s);
void bu_json_bool(struct bu_json *j, const char *key, int v);
int bu_json_close(struct bu_json *j); /* 0, or -1 on a write error */

/* ---- offered-load trials (the real-time scenarios) ---- */

/* One trial at an offered rate: what it achieved and the latency of what it
 * delivered. */
struct bu_load {
	double rate, achieved; /* msg/s offered and achieved */
	double p50, p99, p999; /* ns */
	long messages;
	int ok; /* every message processed as it should be */
};

/* A trial passes: ok, p99 under 100 ms and at least 95% of the offered
 * rate achieved (a trial that falls behind fails even if its p99 is low). */
int bu_load_passes(const struct bu_load *t);

/* Appends @p t to the JSON array open in @p j: offered, achieved,
 * messages, latency_p50_ns, latency_p99_ns, latency_p999_ns, pass. */
void bu_load_json(struct bu_json *j, const struct bu_load *t, int pass);

/* The search for the highest rate that passes. @p lo is the highest rate
 * that passed so far (0: none), @p hi the lowest that failed (0: none).
 * Returns the next rate to try: twice lo while every rate passed (none
 * above @p max_rate), a quarter of hi while none did (none below
 * @p min_rate), then the middle until the gap is within 10% of lo; 0 when
 * the search is over. */
double bu_load_next(double lo, double hi, double max_rate, double min_rate);

/* ---- the report of one scenario ---- */

#define BU_MAX_SUMMARY 16
#define BU_MAX_CHECKS 16

struct bu_summary_row {
	char name[64];  /* e.g. "numbers w=1us per-item" */
	char claim[64]; /* the guide's figure, e.g. "2.7x" */
	double seq;     /* sequential: seconds, or a rate (see unit) */
	double conc;    /* concurrent, same unit; NaN if not measured */
	char unit[16];  /* "s" (lower is better) or e.g. "msg/s" */
	double speedup; /* NaN if not meaningful */
	double ideal;   /* the bound for this machine; NaN if none */
	char note[128];
};

struct bu_report {
	const char *scenario;
	struct bu_args *args;
	struct bu_json *json; /* the "data" object is open between begin/end */
	struct bu_summary_row rows[BU_MAX_SUMMARY];
	size_t nrows;
	struct {
		char name[48];
		int ok;
	} checks[BU_MAX_CHECKS];
	size_t nchecks;
	char verdicts[4][320];
	size_t nverdicts;
	uint64_t ticks0, steal0; /* bu_cpu_ticks() at begin */
};

/*
 * Starts the report: prints the machine line and opens the JSON document
 * (scenario, machine, mode) with its "data" object open for the scenario's
 * own keys (write them to r->json).
 */
void bu_report_begin(struct bu_report *r, struct bu_args *a,
		     const char *scenario, const char *about);

/*
 * Adds a summary row (efficiency = speedup / ideal is derived) and prints
 * it as a line "summary: ...".
 */
void bu_summary(struct bu_report *r, const char *name, const char *claim,
		double seq, double conc, const char *unit, double speedup,
		double ideal, const char *note);

/*
 * States in one sentence what the run showed about the guide's claim
 * (printed "verdict: ..."; the driver repeats it under the summary).
 */
void bu_verdict(struct bu_report *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Records a check (printed "check NAME: ok/FAILED"). */
void bu_check(struct bu_report *r, const char *name, int ok);

/*
 * Ends the report: writes summary and checks to the JSON and closes it.
 * @return the exit code: 0 if every check passed and the JSON was written,
 *         1 otherwise.
 */
int bu_report_end(struct bu_report *r);

/*
 * Reports a skipped scenario: prints "SKIP <scenario>: <reason>" and writes
 * {"scenario", "skipped"} as the JSON. @return 0 (the exit code).
 */
int bu_report_skip(struct bu_args *a, const char *scenario, const char *reason);

/* ---- tables ---- */

/*
 * Prints a table: a title line, then a header and @p nrows rows of
 * @p ncols cells (cells[row * ncols + col]); columns sized to fit, the
 * first left-aligned, the others right-aligned.
 */
void bu_table(const char *title, size_t ncols, const char *const *hdr,
	      char (*cells)[48], size_t nrows);

/* Formats a duration (ns) as "812 ns", "3.25 us", "41.0 ms", "2.51 s". */
const char *bu_fmt_ns(char buf[32], double ns);

/* ---- progress ---- */

struct bu_progress {
	const char *label, *unit;
	uint64_t total, every, next_plain;
	int64_t t0, last_tty;
	int tty, enabled, printed_tty;
	pthread_mutex_t mu;
};

/*
 * Starts a progress display on stderr for @p total units: on a terminal a
 * live line (count, rate, time left) refreshed at most 10 times a second;
 * otherwise a plain line every @p every units (0: none). Disabled by
 * --no-progress.
 */
void bu_progress_start(struct bu_progress *p, const struct bu_args *a,
		       const char *label, const char *unit, uint64_t total,
		       uint64_t every);
/* Reports @p done units so far. Thread-safe (skips if another is printing). */
void bu_progress_update(struct bu_progress *p, uint64_t done);
/* Ends the display (clears the live line). */
void bu_progress_end(struct bu_progress *p, uint64_t done);

#endif /* CPAT_BENCHUTIL_H */
