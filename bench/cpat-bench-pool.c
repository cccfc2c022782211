/*
 * Worker-pool micro-benchmark in the format of the peer ones (GLib
 * GThreadPool, Go pools): same cases, flags, defaults and output lines, so
 * that both outputs of one run can be read side by side.
 *
 *   <impl> <case> workers=<n> tasks=<m> secs=<s> ns_per_task=<x> speedup=<y>
 *
 * Cases (defaults as the peers):
 *   empty : 1,000,000 empty tasks, one submitting thread, 4 workers.
 *   cpu   : 200,000 tasks of ~10 us CPU spin, 2 workers (stderr also shows a
 *           raw 2-thread split without a pool: the machine's ceiling).
 *   sleep : 2,000 tasks sleeping 2 ms each, 20 workers (ideal 20x).
 * speedup = time of the same task bodies run inline on one thread / pool
 * wall time. The timed region is: submit every task, then
 * cpat_pool_wait_idle(). Of --reps runs the fastest is reported, as the
 * peers do (every run's time and their median go to stderr).
 *
 * Two latency cases, not run by default:
 *   idle   : W tasks spin ~50 us then record cpat_now_ns() as their last act;
 *            latency = cpat_pool_wait_idle() return - the last task's stamp.
 *   cancel : W tasks each block in cpat_token_wait(tok, CPAT_FOREVER) on a
 *            token the bench then cancels; latency, per worker, = its
 *            cpat_now_ns() on wake - the time just before cpat_token_cancel.
 *   cancel-pool : the same, but the tasks wait on the pool token
 *            (cpat_pool_token()), fired through a parent token given at
 *            creation, so one pool per repetition.
 *   <impl> <case> workers=<n> reps=<r> p50_us=<x> p99_us=<y>
 *
 * Implementations: cpattern (fixed pool of `workers` threads) and
 * cpattern-dyn (dynamic pool, min 1, max `workers`, created right before the
 * timed region, i.e. cold). With --batch B tasks go in with
 * cpat_pool_submit_many() B at a time (names get -batchB).
 *
 * Every task increments a counter; the program exits non-zero if any run
 * did not execute each task exactly once. Public API only.
 */
#define _GNU_SOURCE
#include <cpattern.h>
#include <cpattern/pool.h>
#include <cpattern/dynpool.h>

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"

/* ------------------------------------------------------------------ */
/* configuration                                                       */

enum {
	C_EMPTY = 1,
	C_CPU = 2,
	C_SLEEP = 4,
	C_IDLE = 8,
	C_CANCEL = 16,
	C_CANCEL_POOL = 32
};
enum { I_FIXED = 1, I_DYN = 2 };

struct cfg {
	unsigned empty_workers, cpu_workers, sleep_workers, lat_workers;
	long empty_tasks, cpu_tasks, sleep_tasks;
	double cpu_us, sleep_ms;
	int reps, seq_div;
	unsigned cases, impls;
	size_t batch; /* 0: single submits */
	size_t queue; /* queue capacity; 0: the library's default */
	int lat_reps; /* 0: 1000 for idle, 200 for cancel */
	const char *json;
};

static void usage(FILE *f, const char *argv0)
{
	fprintf(f,
		"usage: %s [options]\n"
		"  --workers N          set all worker counts (also "
		"--lat-workers)\n"
		"  --empty-workers N    (default 4)\n"
		"  --cpu-workers N      (default 2)\n"
		"  --sleep-workers N    (default 20)\n"
		"  --empty-tasks N      (default 1000000)\n"
		"  --cpu-tasks N        (default 200000)\n"
		"  --sleep-tasks N      (default 2000)\n"
		"  --cpu-us US          CPU work per cpu task (default 10)\n"
		"  --sleep-ms MS        sleep per sleep task (default 2)\n"
		"  --reps N             repetitions per case; the FASTEST is "
		"reported,\n"
		"                       as the peers' driver does (all runs "
		"and their\n"
		"                       median on stderr) (default 1)\n"
		"  --seq-div N          inline baseline runs tasks/N and "
		"scales (default 10)\n"
		"  --cases LIST         comma list of "
		"empty,cpu,sleep,idle,cancel,cancel-pool\n"
		"                       (default empty,cpu,sleep)\n"
		"  --impls LIST         comma list of cpattern,cpattern-dyn "
		"(default cpattern)\n"
		"  --batch B            submit with cpat_pool_submit_many, B "
		"per call\n"
		"                       (impl names get -batchB)\n"
		"  --queue N            queue capacity (default 1024, the Go "
		"peer's;\n"
		"                       0 = the library default, 2 x workers)\n"
		"  --lat-workers N      workers for idle/cancel (default 4)\n"
		"  --lat-reps N         repetitions for idle/cancel (default "
		"1000 idle,\n"
		"                       200 cancel)\n"
		"  --json FILE          also write the results as a JSON "
		"array\n",
		argv0);
}

static long parse_long(const char *s, const char *what, long min)
{
	char *end = NULL;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || !end || end == s || *end || v < min) {
		fprintf(stderr, "bad value for %s: '%s'\n", what, s);
		exit(2);
	}
	return v;
}

static double parse_double(const char *s, const char *what)
{
	char *end = NULL;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || !end || end == s || *end || v <= 0) {
		fprintf(stderr, "bad value for %s: '%s'\n", what, s);
		exit(2);
	}
	return v;
}

/* Exact comma-list parsing against a table of names. */
static unsigned parse_list(const char *arg, const char *what,
			   const char *const *names, const unsigned *bits,
			   size_t n)
{
	unsigned out = 0;
	const char *p = arg;
	while (*p) {
		size_t len = strcspn(p, ",");
		size_t i;
		for (i = 0; i < n; i++)
			if (strlen(names[i]) == len &&
			    strncmp(p, names[i], len) == 0)
				break;
		if (len && i == n) {
			fprintf(stderr, "unknown %s '%.*s'\n", what, (int)len,
				p);
			exit(2);
		}
		if (len)
			out |= bits[i];
		p += len;
		if (*p == ',')
			p++;
	}
	if (!out) {
		fprintf(stderr, "empty %s list\n", what);
		exit(2);
	}
	return out;
}

static void parse_args(int argc, char **argv, struct cfg *c)
{
	enum {
		O_W = 1000,
		O_EW,
		O_CW,
		O_SW,
		O_ET,
		O_CT,
		O_ST,
		O_CPUUS,
		O_SLEEPMS,
		O_REPS,
		O_SEQDIV,
		O_CASES,
		O_IMPLS,
		O_BATCH,
		O_QUEUE,
		O_LATW,
		O_LATREPS,
		O_JSON,
		O_HELP
	};
	static const struct option opts[] = {
		{"workers", required_argument, 0, O_W},
		{"empty-workers", required_argument, 0, O_EW},
		{"cpu-workers", required_argument, 0, O_CW},
		{"sleep-workers", required_argument, 0, O_SW},
		{"empty-tasks", required_argument, 0, O_ET},
		{"cpu-tasks", required_argument, 0, O_CT},
		{"sleep-tasks", required_argument, 0, O_ST},
		{"cpu-us", required_argument, 0, O_CPUUS},
		{"sleep-ms", required_argument, 0, O_SLEEPMS},
		{"reps", required_argument, 0, O_REPS},
		{"seq-div", required_argument, 0, O_SEQDIV},
		{"cases", required_argument, 0, O_CASES},
		{"impls", required_argument, 0, O_IMPLS},
		{"batch", required_argument, 0, O_BATCH},
		{"queue", required_argument, 0, O_QUEUE},
		{"lat-workers", required_argument, 0, O_LATW},
		{"lat-reps", required_argument, 0, O_LATREPS},
		{"json", required_argument, 0, O_JSON},
		{"help", no_argument, 0, O_HELP},
		{0, 0, 0, 0},
	};
	static const char *const case_names[] = {
		"empty", "cpu", "sleep", "idle", "cancel", "cancel-pool"};
	static const unsigned case_bits[] = {C_EMPTY, C_CPU,    C_SLEEP,
					     C_IDLE,  C_CANCEL, C_CANCEL_POOL};
	static const char *const impl_names[] = {"cpattern", "cpattern-dyn"};
	static const unsigned impl_bits[] = {I_FIXED, I_DYN};

	*c = (struct cfg){
		.empty_workers = 4,
		.cpu_workers = 2,
		.sleep_workers = 20,
		.lat_workers = 4,
		.empty_tasks = 1000000,
		.cpu_tasks = 200000,
		.sleep_tasks = 2000,
		.cpu_us = 10.0,
		.sleep_ms = 2.0,
		.reps = 1,
		.seq_div = 10,
		.cases = C_EMPTY | C_CPU | C_SLEEP,
		.impls = I_FIXED,
		.batch = 0,
		.queue = 1024,
		.lat_reps = 0,
		.json = NULL,
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case O_W:
			c->empty_workers = c->cpu_workers = c->sleep_workers =
				c->lat_workers = (unsigned)parse_long(
					optarg, "--workers", 1);
			break;
		case O_EW:
			c->empty_workers = (unsigned)parse_long(
				optarg, "--empty-workers", 1);
			break;
		case O_CW:
			c->cpu_workers = (unsigned)parse_long(
				optarg, "--cpu-workers", 1);
			break;
		case O_SW:
			c->sleep_workers = (unsigned)parse_long(
				optarg, "--sleep-workers", 1);
			break;
		case O_ET:
			c->empty_tasks = parse_long(optarg, "--empty-tasks", 1);
			break;
		case O_CT:
			c->cpu_tasks = parse_long(optarg, "--cpu-tasks", 1);
			break;
		case O_ST:
			c->sleep_tasks = parse_long(optarg, "--sleep-tasks", 1);
			break;
		case O_CPUUS:
			c->cpu_us = parse_double(optarg, "--cpu-us");
			break;
		case O_SLEEPMS:
			c->sleep_ms = parse_double(optarg, "--sleep-ms");
			break;
		case O_REPS:
			c->reps = (int)parse_long(optarg, "--reps", 1);
			break;
		case O_SEQDIV:
			c->seq_div = (int)parse_long(optarg, "--seq-div", 1);
			break;
		case O_CASES:
			c->cases = parse_list(optarg, "case", case_names,
					      case_bits, 6);
			break;
		case O_IMPLS:
			c->impls = parse_list(optarg, "impl", impl_names,
					      impl_bits, 2);
			break;
		case O_BATCH:
			c->batch = (size_t)parse_long(optarg, "--batch", 1);
			break;
		case O_QUEUE:
			c->queue = (size_t)parse_long(optarg, "--queue", 0);
			break;
		case O_LATW:
			c->lat_workers = (unsigned)parse_long(
				optarg, "--lat-workers", 1);
			break;
		case O_LATREPS:
			c->lat_reps = (int)parse_long(optarg, "--lat-reps", 1);
			break;
		case O_JSON:
			c->json = optarg;
			break;
		case 'h':
		case O_HELP:
			usage(stdout, argv[0]);
			exit(0);
		default:
			usage(stderr, argv[0]);
			exit(2);
		}
	}
	if (optind != argc) {
		usage(stderr, argv[0]);
		exit(2);
	}
}

/* ------------------------------------------------------------------ */
/* results (for --json)                                                */

struct result {
	char impl[48];
	const char *cas;
	unsigned workers;
	int latency; /* 0: throughput fields; 1: latency fields */
	long tasks;
	double secs, ns_per_task, speedup;
	int reps;
	double p50_us, p99_us;
};

static struct result *g_results;
static size_t g_nresults, g_capresults;

static void add_result(const struct result *r)
{
	if (g_nresults == g_capresults) {
		size_t cap = g_capresults ? 2 * g_capresults : 16;
		struct result *n = realloc(g_results, cap * sizeof *n);
		if (!n) {
			fprintf(stderr, "out of memory\n");
			exit(1);
		}
		g_results = n;
		g_capresults = cap;
	}
	g_results[g_nresults++] = *r;
}

static int write_json(const char *path)
{
	FILE *f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
		return 1;
	}
	fputs("[\n", f);
	for (size_t i = 0; i < g_nresults; i++) {
		const struct result *r = &g_results[i];
		if (r->latency)
			fprintf(f,
				"  {\"impl\": \"%s\", \"case\": \"%s\", "
				"\"workers\": %u,"
				" \"reps\": %d, \"p50_us\": %.3f, \"p99_us\": "
				"%.3f}",
				r->impl, r->cas, r->workers, r->reps, r->p50_us,
				r->p99_us);
		else
			fprintf(f,
				"  {\"impl\": \"%s\", \"case\": \"%s\", "
				"\"workers\": %u,"
				" \"tasks\": %ld, \"secs\": %.6f, "
				"\"ns_per_task\": %.1f,"
				" \"speedup\": %.4f}",
				r->impl, r->cas, r->workers, r->tasks, r->secs,
				r->ns_per_task, r->speedup);
		fputs(i + 1 < g_nresults ? ",\n" : "\n", f);
	}
	fputs("]\n", f);
	if (fclose(f) != 0) {
		fprintf(stderr, "writing %s failed\n", path);
		return 1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* time and task bodies                                                */

static double secs_now(void)
{
	return (double)cpat_now_ns() * 1e-9;
}

static atomic_long g_ran;       /* task bodies run: the exactly-once check */
static atomic_ulong g_sink;     /* keeps spin results observable */
static uint64_t g_spin_iters;   /* per cpu task */
static uint64_t g_iters_per_us; /* calibrated, for the latency cases */
static struct timespec g_nap;   /* per sleep task */

/* xorshift64: a serial chain of dependent operations, fixed work per call. */
static uint64_t xorshift_spin(uint64_t iters, uint64_t seed)
{
	uint64_t x = seed | 1;
	for (uint64_t i = 0; i < iters; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
	}
	return x;
}

static int body_empty(void *arg, struct cpat_token *tok)
{
	(void)arg;
	(void)tok;
	atomic_fetch_add_explicit(&g_ran, 1, memory_order_relaxed);
	return 0;
}

static int body_cpu(void *arg, struct cpat_token *tok)
{
	(void)tok;
	uint64_t x = xorshift_spin(g_spin_iters, (uint64_t)(uintptr_t)arg);
	atomic_fetch_add_explicit(&g_sink, x, memory_order_relaxed);
	atomic_fetch_add_explicit(&g_ran, 1, memory_order_relaxed);
	return 0;
}

static int body_sleep(void *arg, struct cpat_token *tok)
{
	(void)arg;
	(void)tok;
	struct timespec req = g_nap, rem;
	while (nanosleep(&req, &rem) == -1 && errno == EINTR)
		req = rem;
	atomic_fetch_add_explicit(&g_ran, 1, memory_order_relaxed);
	return 0;
}

/* Iterations of xorshift_spin per microsecond: fastest of 7 probes. */
static double spin_rate(void)
{
	const uint64_t probe = 2000000;
	double best = 1e9;
	for (int i = 0; i < 7; i++) {
		double t0 = secs_now();
		uint64_t x = xorshift_spin(probe, (uint64_t)i + 1);
		double t = secs_now() - t0;
		atomic_fetch_add_explicit(&g_sink, x, memory_order_relaxed);
		if (t < best)
			best = t;
	}
	return (double)probe / (best * 1e6);
}

/* Run bodies 1..n inline, through a volatile pointer; seconds. */
static double run_inline(cpat_task_fn fn, long n)
{
	cpat_task_fn volatile f = fn;
	double t0 = secs_now();
	for (long i = 0; i < n; i++)
		f((void *)(uintptr_t)(i + 1), NULL);
	return secs_now() - t0;
}

static double inline_estimate(cpat_task_fn fn, long tasks, int div)
{
	long n = tasks / div;
	if (n < 1)
		n = 1;
	return run_inline(fn, n) * (double)tasks / (double)n;
}

/* The cpu bodies split statically over plain threads, no pool. */
struct slice {
	long from, to;
};

static void *slice_main(void *p)
{
	const struct slice *s = p;
	for (long i = s->from; i < s->to; i++)
		body_cpu((void *)(uintptr_t)(i + 1), NULL);
	return NULL;
}

static double raw_split_once(unsigned workers, long tasks)
{
	pthread_t th[256];
	struct slice sl[256];
	if (workers > 256)
		workers = 256;
	unsigned started = 0;
	double t0 = secs_now();
	for (unsigned w = 0; w < workers; w++) {
		sl[w].from = (long)((long long)tasks * w / workers);
		sl[w].to = (long)((long long)tasks * (w + 1) / workers);
		if (pthread_create(&th[w], NULL, slice_main, &sl[w]) != 0)
			break;
		started++;
	}
	for (unsigned w = 0; w < started; w++)
		pthread_join(th[w], NULL);
	return secs_now() - t0;
}

/* ------------------------------------------------------------------ */
/* pools                                                               */

static int make_pool(struct cpat_pool **out, int dyn, unsigned workers,
		     size_t queue, struct cpat_token *parent)
{
	if (dyn) {
		struct cpat_dynpool_opts o;
		cpat_dynpool_opts_init(&o);
		o.min_workers = 1;
		o.max_workers = workers;
		if (queue)
			o.queue_capacity = queue;
		o.parent = parent;
		return cpat_dynpool_create(out, &o);
	}
	struct cpat_pool_opts o;
	cpat_pool_opts_init(&o);
	o.workers = workers;
	if (queue)
		o.queue_capacity = queue;
	o.parent = parent;
	return cpat_pool_create(out, &o);
}

static void impl_name(char *buf, size_t n, int dyn, size_t batch)
{
	if (batch)
		snprintf(buf, n, "%s-batch%zu",
			 dyn ? "cpattern-dyn" : "cpattern", batch);
	else
		snprintf(buf, n, "%s", dyn ? "cpattern-dyn" : "cpattern");
}

/* Nearest-rank percentile of sorted v[0..n). */
static double pct(const double *v, size_t n, double p)
{
	size_t k = (size_t)(p * (double)n + 0.999999);
	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return v[k - 1];
}

/* One timed run: create (untimed), submit all + wait_idle (timed), check,
 * destroy (untimed). Returns 0 and *secs, or non-zero. */
static int timed_run(const char *name, const char *cas, int dyn,
		     const struct cfg *c, cpat_task_fn fn, unsigned workers,
		     long tasks, struct cpat_task *batchbuf, double *secs)
{
	struct cpat_pool *pool;
	int rc = make_pool(&pool, dyn, workers, c->queue, NULL);
	if (rc != 0) {
		fprintf(stderr, "%s %s: pool creation failed: %s\n", name, cas,
			cpat_strerror(rc));
		return 1;
	}
	atomic_store(&g_ran, 0);
	double t0 = secs_now();
	if (c->batch) {
		for (long i = 0; i < tasks;) {
			size_t n = (size_t)(tasks - i) < c->batch
					   ? (size_t)(tasks - i)
					   : c->batch;
			for (size_t k = 0; k < n; k++)
				batchbuf[k] = (struct cpat_task){
					.fn = fn,
					.done = NULL,
					.arg = (void *)(uintptr_t)(i + (long)k +
								   1)};
			size_t got = 0;
			rc = cpat_pool_submit_many(pool, batchbuf, n, &got,
						   NULL, CPAT_FOREVER);
			if (rc != 0 || got != n) {
				fprintf(stderr,
					"%s %s: submit_many failed at %ld: %s "
					"(%zu of %zu)\n",
					name, cas, i, cpat_strerror(rc), got,
					n);
				cpat_pool_destroy(pool);
				return 1;
			}
			i += (long)n;
		}
	} else {
		for (long i = 0; i < tasks; i++) {
			struct cpat_task t = {
				.fn = fn,
				.done = NULL,
				.arg = (void *)(uintptr_t)(i + 1)};
			rc = cpat_pool_submit(pool, &t, NULL);
			if (rc != 0) {
				fprintf(stderr,
					"%s %s: submit failed at %ld: %s\n",
					name, cas, i, cpat_strerror(rc));
				cpat_pool_destroy(pool);
				return 1;
			}
		}
	}
	rc = cpat_pool_wait_idle(pool, NULL, CPAT_FOREVER);
	*secs = secs_now() - t0;
	long ran = atomic_load(&g_ran);
	struct cpat_pool_stats st;
	int src = cpat_pool_stats(pool, &st);
	cpat_pool_destroy(pool);
	if (rc != 0) {
		fprintf(stderr, "%s %s: wait_idle failed: %s\n", name, cas,
			cpat_strerror(rc));
		return 1;
	}
	if (ran != tasks) {
		fprintf(stderr,
			"%s %s: %ld of %ld tasks ran (each must run exactly "
			"once)\n",
			name, cas, ran, tasks);
		return 1;
	}
	if (src == 0 && (st.completed != (unsigned long long)tasks ||
			 st.failed || st.discarded || st.rejected)) {
		fprintf(stderr,
			"%s %s: pool stats disagree: completed %llu failed %llu"
			" discarded %llu rejected %llu, expected %ld "
			"completed\n",
			name, cas, st.completed, st.failed, st.discarded,
			st.rejected, tasks);
		return 1;
	}
	if (atomic_load(&g_ran) != tasks) {
		fprintf(stderr,
			"%s %s: a task ran after wait_idle/destroy (%ld of "
			"%ld)\n",
			name, cas, atomic_load(&g_ran), tasks);
		return 1;
	}
	return 0;
}

static int run_case(const char *cas, int dyn, const struct cfg *c,
		    cpat_task_fn fn, unsigned workers, long tasks, double seq)
{
	char name[48];
	impl_name(name, sizeof name, dyn, c->batch);
	struct cpat_task *batchbuf = NULL;
	if (c->batch) {
		batchbuf = calloc(c->batch, sizeof *batchbuf);
		if (!batchbuf) {
			fprintf(stderr, "out of memory\n");
			return 1;
		}
	}
	double *all = calloc((size_t)c->reps, sizeof *all);
	if (!all) {
		free(batchbuf);
		fprintf(stderr, "out of memory\n");
		return 1;
	}
	double best = -1;
	for (int r = 0; r < c->reps; r++) {
		if (timed_run(name, cas, dyn, c, fn, workers, tasks, batchbuf,
			      &all[r]) != 0) {
			free(all);
			free(batchbuf);
			return 1;
		}
		if (best < 0 || all[r] < best)
			best = all[r];
	}
	printf("%s %s workers=%u tasks=%ld secs=%.6f ns_per_task=%.1f "
	       "speedup=%.4f\n",
	       name, cas, workers, tasks, best, best * 1e9 / (double)tasks,
	       seq / best);
	fflush(stdout);
	if (c->reps > 1) {
		fprintf(stderr, "# %s %s: secs of %d runs:", name, cas,
			c->reps);
		for (int r = 0; r < c->reps; r++)
			fprintf(stderr, " %.6f", all[r]);
		qsort(all, (size_t)c->reps, sizeof *all, bu_cmp_double);
		double med =
			c->reps % 2
				? all[c->reps / 2]
				: (all[c->reps / 2 - 1] + all[c->reps / 2]) / 2;
		fprintf(stderr,
			"; fastest reported; median %.6f (%.1f ns/task)\n", med,
			med * 1e9 / (double)tasks);
	}
	struct result res = {.cas = cas,
			     .workers = workers,
			     .tasks = tasks,
			     .secs = best,
			     .ns_per_task = best * 1e9 / (double)tasks,
			     .speedup = seq / best};
	snprintf(res.impl, sizeof res.impl, "%s", name);
	add_result(&res);
	free(all);
	free(batchbuf);
	return 0;
}

/* ------------------------------------------------------------------ */
/* latency cases                                                       */

struct stamp {
	_Atomic int64_t ns;
	char pad[64 - sizeof(int64_t)];
};

struct lat_ctx {
	struct stamp *stamps;   /* one per task */
	struct cpat_token *tok; /* cancel: the token to wait on (or NULL:
				   the task's own, i.e. the pool token) */
	atomic_uint started;
	uint64_t spin_iters;
};

struct lat_arg {
	struct lat_ctx *ctx;
	unsigned idx;
};

static int body_idle(void *arg, struct cpat_token *tok)
{
	(void)tok;
	struct lat_arg *a = arg;
	uint64_t x = xorshift_spin(a->ctx->spin_iters, a->idx + 1u);
	atomic_fetch_add_explicit(&g_sink, x, memory_order_relaxed);
	atomic_fetch_add_explicit(&g_ran, 1, memory_order_relaxed);
	atomic_store_explicit(&a->ctx->stamps[a->idx].ns, cpat_now_ns(),
			      memory_order_release);
	return 0;
}

static int body_block(void *arg, struct cpat_token *tok)
{
	struct lat_arg *a = arg;
	struct cpat_token *t = a->ctx->tok ? a->ctx->tok : tok;
	atomic_fetch_add_explicit(&a->ctx->started, 1, memory_order_acq_rel);
	int rc = cpat_token_wait(t, CPAT_FOREVER);
	atomic_store_explicit(&a->ctx->stamps[a->idx].ns, cpat_now_ns(),
			      memory_order_release);
	atomic_fetch_add_explicit(&g_ran, 1, memory_order_relaxed);
	return rc;
}

static void nap_us(long us)
{
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000}, rem;
	while (nanosleep(&ts, &rem) == -1 && errno == EINTR)
		ts = rem;
}

static int report_latency(const char *name, const char *cas, unsigned workers,
			  int reps, double *samples, size_t n)
{
	qsort(samples, n, sizeof *samples, bu_cmp_double);
	double p50 = pct(samples, n, 0.50), p99 = pct(samples, n, 0.99);
	printf("%s %s workers=%u reps=%d p50_us=%.1f p99_us=%.1f\n", name, cas,
	       workers, reps, p50, p99);
	fflush(stdout);
	fprintf(stderr,
		"# %s %s: %zu samples, min %.1f us, p90 %.1f us, max %.1f us\n",
		name, cas, n, samples[0], pct(samples, n, 0.90),
		samples[n - 1]);
	struct result res = {.cas = cas,
			     .workers = workers,
			     .latency = 1,
			     .reps = reps,
			     .p50_us = p50,
			     .p99_us = p99};
	snprintf(res.impl, sizeof res.impl, "%s", name);
	add_result(&res);
	return 0;
}

static int lat_setup(unsigned w, struct stamp **stamps, struct lat_arg **args,
		     struct lat_ctx *ctx)
{
	*stamps = aligned_alloc(64, w * sizeof **stamps);
	*args = calloc(w, sizeof **args);
	if (!*stamps || !*args) {
		free(*stamps);
		free(*args);
		fprintf(stderr, "out of memory\n");
		return 1;
	}
	memset(ctx, 0, sizeof *ctx);
	ctx->stamps = *stamps;
	for (unsigned i = 0; i < w; i++) {
		(*args)[i].ctx = ctx;
		(*args)[i].idx = i;
	}
	return 0;
}

static int submit_lat(struct cpat_pool *pool, cpat_task_fn fn,
		      struct lat_arg *args, unsigned w, const char *name,
		      const char *cas)
{
	for (unsigned i = 0; i < w; i++) {
		struct cpat_task t = {.fn = fn, .done = NULL, .arg = &args[i]};
		int rc = cpat_pool_submit(pool, &t, NULL);
		if (rc != 0) {
			fprintf(stderr, "%s %s: submit failed: %s\n", name, cas,
				cpat_strerror(rc));
			return 1;
		}
	}
	return 0;
}

static int run_idle(int dyn, const struct cfg *c)
{
	char name[48];
	impl_name(name, sizeof name, dyn, 0);
	const unsigned w = c->lat_workers;
	const int reps = c->lat_reps ? c->lat_reps : 1000;
	struct stamp *stamps;
	struct lat_arg *args;
	struct lat_ctx ctx;
	if (lat_setup(w, &stamps, &args, &ctx))
		return 1;
	ctx.spin_iters = g_iters_per_us * 50; /* ~50 us of work per task */
	double *samples = calloc((size_t)reps, sizeof *samples);
	struct cpat_pool *pool = NULL;
	int rc = samples ? make_pool(&pool, dyn, w, c->queue, NULL) : -ENOMEM;
	int fail = 0;
	if (rc != 0) {
		fprintf(stderr, "%s idle: setup failed: %s\n", name,
			cpat_strerror(rc));
		fail = 1;
	}
	for (int r = 0; r < reps && !fail; r++) {
		for (unsigned i = 0; i < w; i++)
			atomic_store(&stamps[i].ns, -1);
		atomic_store(&g_ran, 0);
		if (submit_lat(pool, body_idle, args, w, name, "idle")) {
			fail = 1;
			break;
		}
		rc = cpat_pool_wait_idle(pool, NULL, CPAT_FOREVER);
		int64_t back = cpat_now_ns();
		if (rc != 0) {
			fprintf(stderr, "%s idle: wait_idle failed: %s\n", name,
				cpat_strerror(rc));
			fail = 1;
			break;
		}
		int64_t last = -1;
		for (unsigned i = 0; i < w; i++) {
			int64_t s = atomic_load_explicit(&stamps[i].ns,
							 memory_order_acquire);
			if (s < 0) {
				fprintf(stderr,
					"%s idle: wait_idle returned before "
					"task %u"
					" finished\n",
					name, i);
				fail = 1;
			}
			if (s > last)
				last = s;
		}
		if (atomic_load(&g_ran) != (long)w) {
			fprintf(stderr, "%s idle: %ld of %u tasks ran\n", name,
				atomic_load(&g_ran), w);
			fail = 1;
		}
		samples[r] = (double)(back - last) / 1e3;
	}
	cpat_pool_destroy(pool);
	if (!fail)
		report_latency(name, "idle", w, reps, samples, (size_t)reps);
	free(samples);
	free(args);
	free(stamps);
	return fail;
}

/* via_pool: the tasks wait on the pool token, fired through a parent token
 * (one pool per repetition); otherwise on a bench token, one pool for all. */
static int run_cancel(int dyn, const struct cfg *c, int via_pool)
{
	const char *cas = via_pool ? "cancel-pool" : "cancel";
	char name[48];
	impl_name(name, sizeof name, dyn, 0);
	const unsigned w = c->lat_workers;
	const int reps = c->lat_reps ? c->lat_reps : 200;
	struct stamp *stamps;
	struct lat_arg *args;
	struct lat_ctx ctx;
	if (lat_setup(w, &stamps, &args, &ctx))
		return 1;
	size_t n = (size_t)reps * w;
	double *samples = calloc(n, sizeof *samples);
	struct cpat_pool *pool = NULL;
	int fail = 0, rc;
	if (!samples) {
		fprintf(stderr, "out of memory\n");
		fail = 1;
	}
	if (!fail && !via_pool) {
		rc = make_pool(&pool, dyn, w, c->queue, NULL);
		if (rc != 0) {
			fprintf(stderr, "%s %s: pool creation failed: %s\n",
				name, cas, cpat_strerror(rc));
			fail = 1;
		}
	}
	for (int r = 0; r < reps && !fail; r++) {
		struct cpat_token *tok = NULL;
		rc = cpat_token_create(&tok, NULL);
		if (rc == 0 && via_pool)
			rc = make_pool(&pool, dyn, w, c->queue, tok);
		if (rc != 0) {
			fprintf(stderr, "%s %s: setup failed: %s\n", name, cas,
				cpat_strerror(rc));
			cpat_token_unref(tok);
			fail = 1;
			break;
		}
		ctx.tok = via_pool ? NULL : tok;
		atomic_store(&ctx.started, 0);
		atomic_store(&g_ran, 0);
		for (unsigned i = 0; i < w; i++)
			atomic_store(&stamps[i].ns, -1);
		if (submit_lat(pool, body_block, args, w, name, cas)) {
			cpat_token_cancel(tok);
			fail = 1;
		}
		/* every task running, then give them time to park in the wait
		 */
		int64_t limit = cpat_now_ns() + 10 * CPAT_SEC;
		while (!fail && atomic_load(&ctx.started) < w) {
			if (cpat_now_ns() > limit) {
				fprintf(stderr,
					"%s %s: only %u of %u tasks started in "
					"10 s\n",
					name, cas, atomic_load(&ctx.started),
					w);
				cpat_token_cancel(tok);
				fail = 1;
			}
			nap_us(50);
		}
		if (!fail)
			nap_us(1000);
		int64_t t0 = cpat_now_ns();
		cpat_token_cancel(tok);
		rc = cpat_pool_wait_idle(pool, NULL, CPAT_FOREVER);
		if (rc != 0) {
			fprintf(stderr, "%s %s: wait_idle failed: %s\n", name,
				cas, cpat_strerror(rc));
			fail = 1;
		}
		for (unsigned i = 0; i < w && !fail; i++) {
			int64_t s = atomic_load_explicit(&stamps[i].ns,
							 memory_order_acquire);
			if (s < 0) {
				fprintf(stderr, "%s %s: task %u never woke\n",
					name, cas, i);
				fail = 1;
			}
			samples[(size_t)r * w + i] = (double)(s - t0) / 1e3;
		}
		if (!fail && atomic_load(&g_ran) != (long)w) {
			fprintf(stderr, "%s %s: %ld of %u tasks ran\n", name,
				cas, atomic_load(&g_ran), w);
			fail = 1;
		}
		if (via_pool) {
			cpat_pool_destroy(pool);
			pool = NULL;
		}
		cpat_token_unref(tok);
	}
	cpat_pool_destroy(pool);
	if (!fail)
		report_latency(name, cas, w, reps, samples, n);
	free(samples);
	free(args);
	free(stamps);
	return fail;
}

/* ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	struct cfg c;
	parse_args(argc, argv, &c);
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	int rc = 0;
	const int impls[2] = {I_FIXED, I_DYN};

	if (c.queue)
		fprintf(stderr,
			"# cpattern: queue_capacity %zu, policy BLOCK%s\n",
			c.queue, c.batch ? ", submit_many batches" : "");
	else
		fprintf(stderr,
			"# cpattern: queue_capacity = library default\n");

	if (c.cases & C_EMPTY) {
		double seq = run_inline(body_empty, c.empty_tasks);
		fprintf(stderr,
			"# cpattern empty: inline %.1f ns/task, cores=%ld\n",
			seq * 1e9 / (double)c.empty_tasks, cores);
		for (int k = 0; k < 2; k++)
			if (c.impls & (unsigned)impls[k])
				rc |= run_case("empty", impls[k] == I_DYN, &c,
					       body_empty, c.empty_workers,
					       c.empty_tasks, seq);
	}
	if (c.cases & C_CPU) {
		double rate = spin_rate();
		uint64_t it = (uint64_t)(rate * c.cpu_us);
		g_spin_iters = it ? it : 1;
		double seq = inline_estimate(body_cpu, c.cpu_tasks, c.seq_div);
		long par = (long)c.cpu_workers < cores ? (long)c.cpu_workers
						       : cores;
		fprintf(stderr,
			"# cpattern cpu: %llu iters/task, inline %.2f us/task, "
			"total work"
			" %.3f s, ideal wall %.3f s on %u workers "
			"(cores=%ld)\n",
			(unsigned long long)g_spin_iters,
			seq * 1e6 / (double)c.cpu_tasks, seq, seq / (double)par,
			c.cpu_workers, cores);
		double raw = -1;
		fprintf(stderr, "# cpattern cpu: raw %u-thread split runs:",
			c.cpu_workers);
		for (int r = 0; r < c.reps; r++) {
			double t = raw_split_once(c.cpu_workers, c.cpu_tasks);
			fprintf(stderr, " %.3f", t);
			if (raw < 0 || t < raw)
				raw = t;
		}
		fprintf(stderr,
			"\n# cpattern cpu: raw %u-thread split without a pool"
			" %.3f s (speedup %.2f)%s\n",
			c.cpu_workers, raw, seq / raw,
			c.reps > 1 ? " [fastest of the runs above]" : "");
		for (int k = 0; k < 2; k++)
			if (c.impls & (unsigned)impls[k])
				rc |= run_case("cpu", impls[k] == I_DYN, &c,
					       body_cpu, c.cpu_workers,
					       c.cpu_tasks, seq);
	}
	if (c.cases & C_SLEEP) {
		g_nap.tv_sec = (time_t)(c.sleep_ms / 1000.0);
		g_nap.tv_nsec =
			(long)((c.sleep_ms - (double)g_nap.tv_sec * 1000.0) *
			       1e6);
		double seq =
			inline_estimate(body_sleep, c.sleep_tasks, c.seq_div);
		fprintf(stderr,
			"# cpattern sleep: inline %.3f ms/task (nominal %.3f), "
			"sequential %.3f s\n",
			seq * 1e3 / (double)c.sleep_tasks, c.sleep_ms, seq);
		for (int k = 0; k < 2; k++)
			if (c.impls & (unsigned)impls[k])
				rc |= run_case("sleep", impls[k] == I_DYN, &c,
					       body_sleep, c.sleep_workers,
					       c.sleep_tasks, seq);
	}
	if (c.cases & (C_IDLE | C_CANCEL | C_CANCEL_POOL)) {
		double rate = spin_rate();
		g_iters_per_us = rate >= 1 ? (uint64_t)rate : 1;
		for (int k = 0; k < 2; k++) {
			if (!(c.impls & (unsigned)impls[k]))
				continue;
			int dyn = impls[k] == I_DYN;
			if (c.cases & C_IDLE)
				rc |= run_idle(dyn, &c);
			if (c.cases & C_CANCEL)
				rc |= run_cancel(dyn, &c, 0);
			if (c.cases & C_CANCEL_POOL)
				rc |= run_cancel(dyn, &c, 1);
		}
	}
	if (c.json && write_json(c.json) != 0)
		rc = 1;
	free(g_results);
	return rc ? 1 : 0;
}
