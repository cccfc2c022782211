/*
 * Pipeline costs, measured on the pipeline and channel APIs themselves:
 *
 *  1. overhead: generator -> identity x3 -> sink callback, one worker per
 *     stage, uint64 items: wall time / N / 3 = ns per item per stage, and a
 *     plain sequential loop calling the same functions, for reference.
 *  2. order: generator -> one stage of 2 workers doing ~2 us of calibrated
 *     CPU spin per item -> sink, ordered=1 vs ordered=0: items/s and the
 *     ratio ordered/unordered (the two alternate which runs first). Checks:
 *     the ordered run delivers in source order, both deliver every item
 *     exactly once.
 *  3. hand-off: a producer and a consumer thread over a cpat_chan of
 *     capacity 1024, one element per call (send/recv) vs batches of 32
 *     (send_many/recv_many); and a 1-stage pipeline of uint64 items vs one
 *     whose items are arrays of 32 uint64. items/s and the ratios.
 *  4. reorder memory: a counting allocator (cpat_set_allocator(), installed
 *     before any libcpattern object exists) shows the ordered stage does
 *     not allocate per item: allocations made and the peak of live ones
 *     while items flow, against the level right after start.
 *
 * With --ack 1, the pipelines of parts 1 and 3 (uint64 items) have a
 * context source that gives each item an 8-byte ack handle, and a trivial
 * ack callback (it counts): the cost of end-to-end acknowledgement.
 *
 * Every measurement is repeated --reps times; the median is reported.
 * Goals are printed beside the results, not asserted; the checks are.
 * Every pipeline's source waits at a gate until the main thread has read
 * the allocator counters after cpat_pipeline_start(), so the timings
 * exclude thread start-up and the allocation counts see only the run.
 */
#define _GNU_SOURCE
#include "benchutil.h"

#include <cpattern.h>
#include <cpattern/chan.h>
#include <cpattern/pipeline.h>

#include <math.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 32
#define SPIN_NS 2000

/* Goals (printed, not asserted). */
#define GOAL_NS_PER_STAGE 300.0
#define GOAL_ORDERED_RATIO 0.90
#define GOAL_BATCH_RATIO 3.0

/* ---- counting allocator ---- */

union hdr {
	size_t size;
	max_align_t align;
};

static atomic_long live_allocs;  /* allocations not yet freed */
static atomic_long total_allocs; /* allocation calls ever */
static atomic_long peak_live;    /* highest live_allocs seen by track() */

static void *count_malloc(size_t size)
{
	union hdr *h = malloc(sizeof *h + size);
	if (!h)
		return NULL;
	h->size = size;
	atomic_fetch_add_explicit(&total_allocs, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&live_allocs, 1, memory_order_relaxed);
	return h + 1;
}

static void count_free(void *p)
{
	if (!p)
		return;
	atomic_fetch_sub_explicit(&live_allocs, 1, memory_order_relaxed);
	free((union hdr *)p - 1);
}

/* Samples the live count into peak_live (called from stage and sink). */
static inline void track(void)
{
	long v = atomic_load_explicit(&live_allocs, memory_order_relaxed);
	long p = atomic_load_explicit(&peak_live, memory_order_relaxed);
	while (v > p && !atomic_compare_exchange_weak_explicit(
				&peak_live, &p, v, memory_order_relaxed,
				memory_order_relaxed))
		;
}

/* ---- shared run state ---- */

struct run {
	uint64_t n;     /* items 1..n */
	uint64_t next;  /* generator */
	uint64_t iters; /* spin per item (order part) */
	atomic_int go;  /* the gate */
	int gated;      /* the generator has passed the gate */
	/* sink */
	uint64_t count, sum, expect;
	int in_order;
	unsigned char *seen; /* per item, for exactly-once; or NULL */
	int dup;
	long allocs_end; /* total_allocs when the last item arrived */
};

static void run_reset(struct run *r)
{
	r->next = 1;
	atomic_store(&r->go, 0);
	r->gated = 0;
	r->count = r->sum = 0;
	r->expect = 1;
	r->in_order = 1;
	r->dup = 0;
	r->allocs_end = -1;
	if (r->seen)
		memset(r->seen, 0, r->n + 1);
}

static void gate(struct run *r)
{
	if (r->gated)
		return;
	while (!atomic_load_explicit(&r->go, memory_order_acquire))
		sched_yield();
	r->gated = 1;
}

/* Whether the sink saw 1..n exactly once (count, sum and, if kept, seen). */
static int exactly_once(const struct run *r)
{
	uint64_t n = r->n;
	return r->count == n && r->sum == n * (n + 1) / 2 && !r->dup;
}

static void sink_take(struct run *r, uint64_t v)
{
	if (v != r->expect)
		r->in_order = 0;
	r->expect = v + 1;
	if (r->seen) {
		if (v == 0 || v > r->n || r->seen[v])
			r->dup = 1;
		else
			r->seen[v] = 1;
	}
	r->count++;
	r->sum += v;
}

/* ---- stage functions ---- */

static int gen_u64(void *out, void *arg)
{
	struct run *r = arg;
	gate(r);
	if (r->next > r->n)
		return 0;
	*(uint64_t *)out = r->next++;
	return 1;
}

/* --ack: the same generator as a context source with an ack handle. */
static int src_u64_ack(void *out, struct cpat_source_ctx *ctx)
{
	int rc = gen_u64(out, cpat_source_arg(ctx));
	if (rc == 1)
		memcpy(cpat_source_ack(ctx), out, sizeof(uint64_t));
	return rc;
}

static atomic_ulong acks_made;

static void ack_count(const void *handles, size_t n, void *arg)
{
	(void)handles;
	(void)arg;
	atomic_fetch_add_explicit(&acks_made, n, memory_order_relaxed);
}

static int map_ident(const void *in, void *out, struct cpat_stage_ctx *c)
{
	(void)c;
	*(uint64_t *)out = *(const uint64_t *)in;
	return CPAT_STAGE_EMIT;
}

static int map_spin(const void *in, void *out, struct cpat_stage_ctx *c)
{
	struct run *r = cpat_stage_arg(c);
	uint64_t v = *(const uint64_t *)in;
	uint64_t x = bu_work_iters(v, r->iters);
	__asm__ volatile("" : : "r"(x));
	track();
	*(uint64_t *)out = v;
	return CPAT_STAGE_EMIT;
}

static int sink_u64(const void *item, void *arg)
{
	struct run *r = arg;
	sink_take(r, *(const uint64_t *)item);
	return 0;
}

static int sink_u64_track(const void *item, void *arg)
{
	struct run *r = arg;
	track();
	sink_take(r, *(const uint64_t *)item);
	if (r->count == r->n)
		r->allocs_end = atomic_load(&total_allocs);
	return 0;
}

/* Items that are arrays of up to 32 uint64 (a batch of the source's). */
struct arr32 {
	uint64_t count;
	uint64_t v[BATCH];
};

static int gen_arr(void *out, void *arg)
{
	struct run *r = arg;
	struct arr32 *a = out;
	gate(r);
	if (r->next > r->n)
		return 0;
	a->count = 0;
	while (a->count < BATCH && r->next <= r->n)
		a->v[a->count++] = r->next++;
	return 1;
}

static int map_ident_arr(const void *in, void *out, struct cpat_stage_ctx *c)
{
	(void)c;
	const struct arr32 *a = in;
	struct arr32 *b = out;
	b->count = a->count;
	memcpy(b->v, a->v, a->count * sizeof a->v[0]);
	return CPAT_STAGE_EMIT;
}

static int sink_arr(const void *item, void *arg)
{
	struct run *r = arg;
	const struct arr32 *a = item;
	for (uint64_t i = 0; i < a->count; i++)
		sink_take(r, a->v[i]);
	return 0;
}

/* ---- running a pipeline ---- */

struct pipe_spec {
	size_t item_size;
	cpat_source_fn gen;
	cpat_sink_fn sink;
	unsigned nstages;
	cpat_map_fn map;
	unsigned workers;
	int ordered;
	int ack; /* a context source with acks (gen must be gen_u64) */
};

struct pipe_out {
	int rc;
	int64_t ns;         /* from opening the gate to wait's return */
	long live_start;    /* live allocations right after start */
	long allocs_during; /* allocation calls from the gate to the last item
			     */
	long peak_extra;    /* peak live during the run - live_start */
};

static struct pipe_out run_pipe(const struct pipe_spec *sp, struct run *r)
{
	struct pipe_out o = {0};
	struct cpat_pipeline *p = NULL;
	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	po.item_size = sp->item_size;
	run_reset(r);
	int rc = cpat_pipeline_create(&p, &po);
	if (!rc && sp->ack) {
		struct cpat_source_opts so;
		cpat_source_opts_init(&so);
		so.fn = src_u64_ack;
		so.arg = r;
		so.ack_size = sizeof(uint64_t);
		so.ack = ack_count;
		rc = cpat_pipeline_set_source(p, &so);
	} else if (!rc) {
		rc = cpat_pipeline_set_generator(p, sp->gen, r);
	}
	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.arg = r;
	so.out_size = sp->item_size;
	so.map = sp->map;
	so.workers = sp->workers;
	so.ordered = sp->ordered;
	for (unsigned s = 0; s < sp->nstages && !rc; s++) {
		char nm[16];
		snprintf(nm, sizeof nm, "stage%u", s + 1);
		so.name = nm;
		rc = cpat_pipeline_add_stage(p, &so);
	}
	if (!rc)
		rc = cpat_pipeline_set_sink(p, sp->sink, r);
	if (!rc)
		rc = cpat_pipeline_start(p, NULL, CPAT_FOREVER);
	if (rc) {
		fprintf(stderr, "pipeline: setup failed: %s\n",
			cpat_strerror(rc));
		cpat_pipeline_destroy(p);
		o.rc = rc;
		return o;
	}
	/* Everything is started and the source waits at the gate. */
	o.live_start = atomic_load(&live_allocs);
	long allocs0 = atomic_load(&total_allocs);
	atomic_store(&peak_live, o.live_start);
	int64_t t0 = bu_now();
	atomic_store_explicit(&r->go, 1, memory_order_release);
	struct cpat_pipeline_result res;
	o.rc = cpat_pipeline_wait(p, &res);
	o.ns = bu_now() - t0;
	long end =
		r->allocs_end >= 0 ? r->allocs_end : atomic_load(&total_allocs);
	o.allocs_during = end - allocs0;
	o.peak_extra = atomic_load(&peak_live) - o.live_start;
	if (o.rc)
		fprintf(stderr, "pipeline: run failed: %s (stage '%s')\n",
			cpat_strerror(o.rc), res.stage);
	cpat_pipeline_destroy(p);
	return o;
}

/* ---- the channel hand-off ---- */

struct chan_run {
	struct cpat_chan *ch;
	uint64_t n;
	int batch;
	atomic_int go;
	int rc;
};

static void *chan_producer(void *arg)
{
	struct chan_run *c = arg;
	while (!atomic_load_explicit(&c->go, memory_order_acquire))
		sched_yield();
	uint64_t buf[BATCH];
	uint64_t i = 1;
	while (i <= c->n && !c->rc) {
		if (!c->batch) {
			c->rc = cpat_chan_send(c->ch, &i, NULL);
			i++;
			continue;
		}
		size_t k = 0;
		while (k < BATCH && i <= c->n)
			buf[k++] = i++;
		c->rc = cpat_chan_send_many(c->ch, buf, k, NULL, NULL,
					    CPAT_FOREVER);
	}
	cpat_chan_close(c->ch);
	return NULL;
}

/* ns for n items; r receives what the consumer saw. -1 on failure. */
static int64_t run_chan(struct run *r, int batch)
{
	struct chan_run c = {.n = r->n, .batch = batch};
	run_reset(r);
	int rc = cpat_chan_create(&c.ch, sizeof(uint64_t), 1024);
	if (rc) {
		fprintf(stderr, "chan: create failed: %s\n", cpat_strerror(rc));
		return -1;
	}
	pthread_t th;
	if (pthread_create(&th, NULL, chan_producer, &c)) {
		cpat_chan_destroy(c.ch);
		return -1;
	}
	uint64_t buf[BATCH];
	int64_t t0 = bu_now();
	atomic_store_explicit(&c.go, 1, memory_order_release);
	for (;;) {
		if (!batch) {
			rc = cpat_chan_recv(c.ch, buf, NULL);
			if (rc)
				break;
			sink_take(r, buf[0]);
			continue;
		}
		size_t got = 0;
		rc = cpat_chan_recv_many(c.ch, buf, BATCH, &got, NULL,
					 CPAT_FOREVER);
		if (rc)
			break;
		for (size_t k = 0; k < got; k++)
			sink_take(r, buf[k]);
	}
	int64_t dt = bu_now() - t0;
	pthread_join(th, NULL);
	cpat_chan_destroy(c.ch);
	if (rc != -EPIPE || c.rc) {
		fprintf(stderr, "chan: %s\n",
			cpat_strerror(rc != -EPIPE ? rc : c.rc));
		return -1;
	}
	return dt;
}

/* ---- the sequential reference ---- */

/* Called through volatile pointers, as the pipeline calls them. */
static cpat_source_fn volatile seq_gen = gen_u64;
static cpat_map_fn volatile seq_map = map_ident;
static cpat_sink_fn volatile seq_sink = sink_u64;

static int64_t run_seq(struct run *r)
{
	run_reset(r);
	atomic_store(&r->go, 1);
	int64_t t0 = bu_now();
	uint64_t a, b;
	while (seq_gen(&a, r) == 1) {
		seq_map(&a, &b, NULL);
		seq_map(&b, &a, NULL);
		seq_map(&a, &b, NULL);
		seq_sink(&b, r);
	}
	return bu_now() - t0;
}

/* ---- medians ---- */

static double median(double *v, long n)
{
	if (n <= 0)
		return NAN;
	qsort(v, (size_t)n, sizeof *v, bu_cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static const char *met(int ok)
{
	return ok ? "met" : "NOT met";
}

int main(int argc, char **argv)
{
	/* Before any libcpattern object exists (cpat_set_allocator()). */
	if (cpat_set_allocator(count_malloc, count_free)) {
		fprintf(stderr, "pipeline: cpat_set_allocator failed\n");
		return 1;
	}
	struct bu_args a;
	long reps = 3, nitems = 0, norder = 0, ack = 0;
	const struct bu_opt opts[] = {
		{"reps", BU_LONG, &reps,
		 "runs of each measurement, median kept (3)"},
		{"items", BU_LONG, &nitems,
		 "items for the overhead and hand-off parts "
		 "(1000000; quick 200000; tiny 5000)"},
		{"order-items", BU_LONG, &norder,
		 "items for the ordered/unordered part (items / 4; quick: "
		 "items)"},
		{"ack", BU_LONG, &ack,
		 "1: parts 1 and 3 (uint64) acknowledge every item (0)"},
	};
	bu_parse(argc, argv, &a,
		 "pipeline overhead, ordered stages, batched hand-off, "
		 "reorder memory",
		 opts, sizeof opts / sizeof opts[0]);
	if (reps < 1) {
		fprintf(stderr, "--reps must be >= 1\n");
		return 2;
	}
	if (nitems <= 0)
		nitems = a.mode == BU_TINY    ? 5000
			 : a.mode == BU_QUICK ? 200000
					      : 1000000;
	/* A quick run's order part has as many items as its other parts:
	 * with a quarter (50,000 items, about 70 ms a run) one descheduling
	 * of a worker moved the ratio by 10-25%, and ten quiet invocations
	 * spread 0.77-1.14; with 200,000, eight spread 0.91-0.99. */
	if (norder <= 0)
		norder = a.mode == BU_QUICK ? nitems
			 : nitems / 4 > 100 ? nitems / 4
					    : 100;

	struct bu_report rep;
	bu_report_begin(&rep, &a, "pipeline",
			"hand-off cost per stage, ordered vs unordered, "
			"batch32 vs per item");
	bu_work_calibrate();
	uint64_t spin_iters = bu_work_ns(SPIN_NS);
	printf("items %ld (order part %ld, %d us spin per item), reps %ld "
	       "(median reported)\n",
	       nitems, norder, SPIN_NS / 1000, reps);
	bu_json_int(rep.json, "items", nitems);
	bu_json_int(rep.json, "order_items", norder);
	bu_json_int(rep.json, "reps", reps);
	bu_json_int(rep.json, "spin_ns", SPIN_NS);

	struct run r = {0}, ro = {0};
	r.n = (uint64_t)nitems;
	ro.n = (uint64_t)norder;
	ro.iters = spin_iters;
	r.seen = calloc(r.n + 1, 1);
	ro.seen = calloc(ro.n + 1, 1);
	double *t_seq = calloc((size_t)reps, sizeof(double)),
	       *t_pipe = calloc((size_t)reps, sizeof(double)),
	       *t_ord = calloc((size_t)reps, sizeof(double)),
	       *t_uno = calloc((size_t)reps, sizeof(double)),
	       *t_ci = calloc((size_t)reps, sizeof(double)),
	       *t_cb = calloc((size_t)reps, sizeof(double)),
	       *t_pi = calloc((size_t)reps, sizeof(double)),
	       *t_pb = calloc((size_t)reps, sizeof(double));
	if (!r.seen || !ro.seen || !t_seq || !t_pipe || !t_ord || !t_uno ||
	    !t_ci || !t_cb || !t_pi || !t_pb) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}

	int ok_overhead = 1, ok_seq = 1, ok_ord_order = 1, ok_ord_once = 1,
	    ok_uno_once = 1, ok_chan_item = 1, ok_chan_batch = 1,
	    ok_pipe_item = 1, ok_pipe_arr = 1, ok_runs = 1;
	long ord_allocs = 0, ord_peak = 0, uno_allocs = 0, uno_peak = 0,
	     ord_live_start = 0;

	struct pipe_spec ident3 = {sizeof(uint64_t), gen_u64, sink_u64, 3,
				   map_ident,        1,       0,        0};
	struct pipe_spec spin2 = {sizeof(uint64_t),
				  gen_u64,
				  sink_u64_track,
				  1,
				  map_spin,
				  2,
				  1,
				  0};
	struct pipe_spec ident1 = {sizeof(uint64_t), gen_u64, sink_u64, 1,
				   map_ident,        1,       0,        0};
	ident3.ack = ident1.ack = ack != 0;
	printf("acks: %s\n", ack ? "on (parts 1 and 3, uint64)" : "off");
	struct pipe_spec arr1 = {sizeof(struct arr32), gen_arr, sink_arr, 1,
				 map_ident_arr,        1,       0,        0};

	struct bu_progress pg;
	bu_progress_start(&pg, &a, "pipeline", "reps", (uint64_t)reps, 1);
	for (long k = 0; k < reps; k++) {
		/* 1. overhead */
		t_seq[k] = (double)run_seq(&r);
		ok_seq &= exactly_once(&r) && r.in_order;
		struct pipe_out o = run_pipe(&ident3, &r);
		ok_runs &= o.rc == 0;
		ok_overhead &= o.rc == 0 && exactly_once(&r) && r.in_order;
		t_pipe[k] = (double)o.ns;

		/* 2 + 4. ordered vs unordered, allocations; which runs first
		 * alternates, so neither always follows part 1. */
		for (int j = 0; j < 2; j++) {
			spin2.ordered = (j + k) % 2 == 0;
			o = run_pipe(&spin2, &ro);
			ok_runs &= o.rc == 0;
			int ord = spin2.ordered;
			long *allocs = ord ? &ord_allocs : &uno_allocs,
			     *peak = ord ? &ord_peak : &uno_peak;
			(ord ? t_ord : t_uno)[k] = (double)o.ns;
			if (o.allocs_during > *allocs)
				*allocs = o.allocs_during;
			if (o.peak_extra > *peak)
				*peak = o.peak_extra;
			if (ord) {
				ok_ord_order &= o.rc == 0 && ro.in_order;
				ok_ord_once &= o.rc == 0 && exactly_once(&ro);
				ord_live_start = o.live_start;
			} else {
				ok_uno_once &= o.rc == 0 && exactly_once(&ro);
			}
		}

		/* 3. hand-off: channel, then pipeline */
		int64_t t = run_chan(&r, 0);
		ok_chan_item &= t > 0 && exactly_once(&r) && r.in_order;
		t_ci[k] = (double)t;
		t = run_chan(&r, 1);
		ok_chan_batch &= t > 0 && exactly_once(&r) && r.in_order;
		t_cb[k] = (double)t;
		o = run_pipe(&ident1, &r);
		ok_runs &= o.rc == 0;
		ok_pipe_item &= o.rc == 0 && exactly_once(&r) && r.in_order;
		t_pi[k] = (double)o.ns;
		o = run_pipe(&arr1, &r);
		ok_runs &= o.rc == 0;
		ok_pipe_arr &= o.rc == 0 && exactly_once(&r) && r.in_order;
		t_pb[k] = (double)o.ns;
		bu_progress_update(&pg, (uint64_t)k + 1);
	}
	bu_progress_end(&pg, (uint64_t)reps);

	double n = (double)nitems, no = (double)norder;
	double seq_ns = median(t_seq, reps) / n / 3,
	       pipe_ns = median(t_pipe, reps) / n / 3;
	double ord_rate = no / (median(t_ord, reps) / 1e9),
	       uno_rate = no / (median(t_uno, reps) / 1e9);
	double ord_ratio = ord_rate / uno_rate;
	double ci_rate = n / (median(t_ci, reps) / 1e9),
	       cb_rate = n / (median(t_cb, reps) / 1e9);
	double chan_ratio = cb_rate / ci_rate;
	double pi_rate = n / (median(t_pi, reps) / 1e9),
	       pb_rate = n / (median(t_pb, reps) / 1e9);
	double pipe_ratio = pb_rate / pi_rate;

	int g_ns = pipe_ns <= GOAL_NS_PER_STAGE;
	int g_ord = ord_ratio >= GOAL_ORDERED_RATIO;
	int g_chan = chan_ratio >= GOAL_BATCH_RATIO;
	int g_pipe = pipe_ratio >= GOAL_BATCH_RATIO;

	static const char *hdr[] = {"measurement", "median", "unit", "goal",
				    "goal met"};
	enum { NROWS = 13, NCOLS = 5 };
	char(*cells)[48] = calloc(NROWS * NCOLS, 48);
	size_t row = 0;
#define ROW(name, fmt, val, unit, goal, m)            \
	do {                                          \
		char(*c)[48] = cells + row++ * NCOLS; \
		snprintf(c[0], 48, "%s", name);       \
		snprintf(c[1], 48, fmt, val);         \
		snprintf(c[2], 48, "%s", unit);       \
		snprintf(c[3], 48, "%s", goal);       \
		snprintf(c[4], 48, "%s", m);          \
	} while (0)
	ROW("1 identity x3 pipeline", "%.1f", pipe_ns, "ns/item/stage",
	    "<= 300", met(g_ns));
	ROW("1 sequential loop", "%.1f", seq_ns, "ns/item/stage", "", "");
	ROW("2 ordered, 2 workers", "%.0f", ord_rate, "items/s", "", "");
	ROW("2 unordered, 2 workers", "%.0f", uno_rate, "items/s", "", "");
	ROW("2 ordered / unordered", "%.3f", ord_ratio, "x", ">= 0.90",
	    met(g_ord));
	ROW("3 chan per item", "%.0f", ci_rate, "items/s", "", "");
	ROW("3 chan batch32", "%.0f", cb_rate, "items/s", "", "");
	ROW("3 chan batch32 / per item", "%.2f", chan_ratio, "x", ">= 3",
	    met(g_chan));
	ROW("3 pipeline per item", "%.0f", pi_rate, "items/s", "", "");
	ROW("3 pipeline arrays of 32", "%.0f", pb_rate, "items/s", "", "");
	ROW("3 pipeline arr32 / per item", "%.2f", pipe_ratio, "x", ">= 3",
	    met(g_pipe));
	ROW("4 ordered: allocs during run", "%ld", ord_allocs, "allocs", "0",
	    ord_allocs == 0 ? "yes" : "no");
	ROW("4 ordered: peak extra live", "%ld", ord_peak, "allocs", "0",
	    ord_peak == 0 ? "yes" : "no");
#undef ROW
	bu_table("pipeline costs (median of reps)", NCOLS, hdr, cells, row);
	free(cells);
	printf("reorder memory: %ld library allocations live after start; "
	       "while items flowed: ordered %ld new, peak +%ld; unordered %ld "
	       "new, peak +%ld (worst of reps)\n",
	       ord_live_start, ord_allocs, ord_peak, uno_allocs, uno_peak);
	printf("goals (reported, not asserted): %.1f ns/item/stage (<= 300) "
	       "%s; ordered/unordered %.3f (>= 0.90) %s; chan batch32 %.2fx "
	       "(>= 3x) %s; pipeline arr32 %.2fx %s\n",
	       pipe_ns, met(g_ns), ord_ratio, met(g_ord), chan_ratio,
	       met(g_chan), pipe_ratio, met(g_pipe));

	bu_json_obj(rep.json, "overhead");
	bu_json_num(rep.json, "pipeline_ns_per_item_stage", pipe_ns);
	bu_json_num(rep.json, "seq_ns_per_item_stage", seq_ns);
	bu_json_end(rep.json);
	bu_json_obj(rep.json, "order");
	bu_json_num(rep.json, "ordered_items_per_s", ord_rate);
	bu_json_num(rep.json, "unordered_items_per_s", uno_rate);
	bu_json_num(rep.json, "ratio", ord_ratio);
	bu_json_end(rep.json);
	bu_json_obj(rep.json, "handoff");
	bu_json_num(rep.json, "chan_item_items_per_s", ci_rate);
	bu_json_num(rep.json, "chan_batch32_items_per_s", cb_rate);
	bu_json_num(rep.json, "chan_ratio", chan_ratio);
	bu_json_num(rep.json, "pipeline_item_items_per_s", pi_rate);
	bu_json_num(rep.json, "pipeline_arr32_items_per_s", pb_rate);
	bu_json_num(rep.json, "pipeline_ratio", pipe_ratio);
	bu_json_end(rep.json);
	bu_json_obj(rep.json, "reorder_memory");
	bu_json_int(rep.json, "live_after_start", ord_live_start);
	bu_json_int(rep.json, "ordered_allocs_during", ord_allocs);
	bu_json_int(rep.json, "ordered_peak_extra_live", ord_peak);
	bu_json_int(rep.json, "unordered_allocs_during", uno_allocs);
	bu_json_int(rep.json, "unordered_peak_extra_live", uno_peak);
	bu_json_end(rep.json);
	bu_json_obj(rep.json, "goals");
	bu_json_bool(rep.json, "ns_per_item_stage_le_300", g_ns);
	bu_json_bool(rep.json, "ordered_within_10pct", g_ord);
	bu_json_bool(rep.json, "chan_batch32_ge_3x", g_chan);
	bu_json_bool(rep.json, "pipeline_arr32_ge_3x", g_pipe);
	bu_json_end(rep.json);

	char note[128];
	snprintf(note, sizeof note, "goal <= 300 ns/item/stage: %s", met(g_ns));
	bu_summary(&rep, "pipeline identity x3 ns/item/stage", "", seq_ns,
		   pipe_ns, "ns", NAN, NAN, note);
	snprintf(note, sizeof note, "ordered/unordered %.3f, goal >= 0.90: %s",
		 ord_ratio, met(g_ord));
	bu_summary(&rep, "pipeline ordered vs unordered 2w 2us", "", uno_rate,
		   ord_rate, "items/s", ord_ratio, 1.0, note);
	snprintf(note, sizeof note, "batch32/per-item, goal >= 3x: %s",
		 met(g_chan));
	bu_summary(&rep, "chan batch32 vs per-item", "", ci_rate, cb_rate,
		   "items/s", chan_ratio, NAN, note);
	snprintf(note, sizeof note, "arrays of 32 vs uint64 items");
	bu_summary(&rep, "pipeline arr32 vs per-item", "", pi_rate, pb_rate,
		   "items/s", pipe_ratio, NAN, note);
	bu_verdict(&rep,
		   "pipeline: %.1f ns per item per stage (loop %.1f); ordered "
		   "runs at %.2fx unordered; batch32 moves %.2fx the items of "
		   "per-item sends on a channel; the ordered stage made %ld "
		   "allocations while items flowed",
		   pipe_ns, seq_ns, ord_ratio, chan_ratio, ord_allocs);

	bu_check(&rep, "runs_ok", ok_runs);
	bu_check(&rep, "seq_exactly_once", ok_seq);
	bu_check(&rep, "overhead_exactly_once_in_order", ok_overhead);
	bu_check(&rep, "ordered_in_source_order", ok_ord_order);
	bu_check(&rep, "ordered_exactly_once", ok_ord_once);
	bu_check(&rep, "unordered_exactly_once", ok_uno_once);
	bu_check(&rep, "chan_item_exactly_once", ok_chan_item);
	bu_check(&rep, "chan_batch32_exactly_once", ok_chan_batch);
	bu_check(&rep, "pipeline_item_exactly_once", ok_pipe_item);
	bu_check(&rep, "pipeline_arr32_exactly_once", ok_pipe_arr);
	if (ack)
		bu_check(&rep, "every_item_acked",
			 atomic_load(&acks_made) ==
				 (unsigned long)(2 * reps) *
					 (unsigned long)nitems);
	bu_check(&rep, "ordered_no_per_item_alloc",
		 ord_allocs == 0 && ord_peak == 0);

	free(r.seen);
	free(ro.seen);
	free(t_seq);
	free(t_pipe);
	free(t_ord);
	free(t_uno);
	free(t_ci);
	free(t_cb);
	free(t_pi);
	free(t_pb);
	return bu_report_end(&rep);
}
