/*
 * Scenario 1, the Go guide's numbers pipeline: generator -> square ->
 * keep evens, sequentially and as a 3-stage pipeline, swept over the CPU
 * work each stage does per item (0, 100 ns, 1 us, 10 us, 100 us).
 *
 * Three versions of the same work, whose outputs must be equal:
 *   sequential : one loop, gen + square + keep-even per item.
 *   per-item   : cpat_pipeline, one item per channel hand-off (the guide's).
 *   batched    : the same stages, B items per hand-off (--batch, 64).
 *
 * The guide claims 2.7x (1200 -> 450 ns/op) at trivial work. The bound for
 * a pipeline is sum(stage costs) / max(stage cost), capped by the cores;
 * the stage costs are measured here by running each stage alone over the
 * items. The work is a calibrated deterministic CPU spin, so it does not
 * depend on the clock.
 */
#define _GNU_SOURCE
#include "benchutil.h"

#include <cpattern.h>
#include <cpattern/pipeline.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BATCH 1024
/* Runs of each version (--reps). */
#define MAX_REPS 64
/* Items per level (--items): 800 MB of outputs at most. */
#define MAX_ITEMS 100000000L

static const int64_t levels[] = {0, 100, 1000, 10000, 100000};
#define NLEVELS (sizeof levels / sizeof levels[0])

struct run {
	long n;         /* items 1..n */
	uint64_t iters; /* work per stage per item */
	long batch;
	size_t capacity; /* per-item pipeline: its channels' capacity */
	/* output */
	int64_t *out;
	size_t nout;
	long next; /* generator state */
};

/* The three stage functions, shared by every version. */
static inline int64_t st_gen(int64_t i, uint64_t iters)
{
	bu_work_iters((uint64_t)i, iters);
	return i;
}

static inline int64_t st_square(int64_t v, uint64_t iters)
{
	bu_work_iters((uint64_t)v, iters);
	return v * v;
}

static inline int st_even(int64_t v, uint64_t iters)
{
	bu_work_iters((uint64_t)v, iters);
	return v % 2 == 0;
}

/* ---- sequential ---- */

/*
 * The per-item pipeline's channel capacity: about 100 ms of a stage's work.
 * Three CPU-bound stages on fewer cores are time-shared by the scheduler,
 * which leaves a runnable thread off its core for milliseconds; a channel
 * that holds less than that empties behind a descheduled producer and its
 * consumer starves while a core idles. Measured at W = 100 us on 2 cores
 * (efficiency, same invocation): capacity 4: 0.72, 64 (the default): 0.82,
 * 200: 0.92, 1000: 0.97; alternating 200 (20 ms) and 1000 (100 ms), quick:
 * 0.93, 0.96, 0.88 against 0.98, 0.98, 0.97; full size (6666 items): 0.87
 * against 0.93. The batched pipeline's default 64 batches hold far more
 * than that already.
 */
static size_t item_capacity(int64_t w)
{
	if (w <= 0)
		return 64;
	int64_t c = 100 * 1000 * 1000 / w;
	return c < 64 ? 64 : c > 4096 ? 4096 : (size_t)c;
}

static int64_t run_seq(struct run *r)
{
	int64_t t0 = bu_now();
	r->nout = 0;
	for (long i = 1; i <= r->n; i++) {
		int64_t v = st_square(st_gen(i, r->iters), r->iters);
		if (st_even(v, r->iters))
			r->out[r->nout++] = v;
	}
	return bu_now() - t0;
}

/*
 * Each stage alone over the same items: the measured per-stage costs the
 * pipeline bound is computed from.
 */
static void stage_costs(struct run *r, double cost[3])
{
	long n = r->n;
	int64_t *tmp = malloc((size_t)n * sizeof *tmp);
	if (!tmp) {
		cost[0] = cost[1] = cost[2] = NAN;
		return;
	}
	int64_t t0 = bu_now();
	for (long i = 1; i <= n; i++)
		tmp[i - 1] = st_gen(i, r->iters);
	int64_t t1 = bu_now();
	for (long i = 0; i < n; i++)
		tmp[i] = st_square(tmp[i], r->iters);
	int64_t t2 = bu_now();
	size_t k = 0;
	for (long i = 0; i < n; i++)
		if (st_even(tmp[i], r->iters))
			tmp[k++] = tmp[i];
	int64_t t3 = bu_now();
	__asm__ volatile("" : : "r"(k));
	cost[0] = (double)(t1 - t0);
	cost[1] = (double)(t2 - t1);
	cost[2] = (double)(t3 - t2);
	free(tmp);
}

/* ---- per-item pipeline ---- */

static int p_gen(void *out, void *arg)
{
	struct run *r = arg;
	if (r->next > r->n)
		return 0;
	*(int64_t *)out = st_gen(r->next++, r->iters);
	return 1;
}

static int p_square(const void *in, void *out, struct cpat_stage_ctx *c)
{
	struct run *r = cpat_stage_arg(c);
	*(int64_t *)out = st_square(*(const int64_t *)in, r->iters);
	return CPAT_STAGE_EMIT;
}

static int p_even(const void *in, void *out, struct cpat_stage_ctx *c)
{
	struct run *r = cpat_stage_arg(c);
	int64_t v = *(const int64_t *)in;
	if (!st_even(v, r->iters))
		return CPAT_STAGE_SKIP;
	*(int64_t *)out = v;
	return CPAT_STAGE_EMIT;
}

static int p_sink(const void *item, void *arg)
{
	struct run *r = arg;
	r->out[r->nout++] = *(const int64_t *)item;
	return 0;
}

/* ---- batched pipeline ---- */

struct nbatch {
	uint32_t n;
	int64_t v[MAX_BATCH];
};

static size_t batch_bytes(long b)
{
	return offsetof(struct nbatch, v) + (size_t)b * sizeof(int64_t);
}

static int b_gen(void *out, void *arg)
{
	struct run *r = arg;
	struct nbatch *b = out;
	if (r->next > r->n)
		return 0;
	b->n = 0;
	while (b->n < (uint32_t)r->batch && r->next <= r->n)
		b->v[b->n++] = st_gen(r->next++, r->iters);
	return 1;
}

static int b_square(const void *in, void *out, struct cpat_stage_ctx *c)
{
	struct run *r = cpat_stage_arg(c);
	const struct nbatch *a = in;
	struct nbatch *b = out;
	b->n = a->n;
	for (uint32_t i = 0; i < a->n; i++)
		b->v[i] = st_square(a->v[i], r->iters);
	return CPAT_STAGE_EMIT;
}

static int b_even(const void *in, void *out, struct cpat_stage_ctx *c)
{
	struct run *r = cpat_stage_arg(c);
	const struct nbatch *a = in;
	struct nbatch *b = out;
	b->n = 0;
	for (uint32_t i = 0; i < a->n; i++)
		if (st_even(a->v[i], r->iters))
			b->v[b->n++] = a->v[i];
	return b->n ? CPAT_STAGE_EMIT : CPAT_STAGE_SKIP;
}

static int b_sink(const void *item, void *arg)
{
	struct run *r = arg;
	const struct nbatch *b = item;
	memcpy(r->out + r->nout, b->v, b->n * sizeof(int64_t));
	r->nout += b->n;
	return 0;
}

/* Runs the pipeline version; batched if r->batch > 0. */
static int64_t run_pipe(struct run *r, int batched)
{
	struct cpat_pipeline *p = NULL;
	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	size_t isz = batched ? batch_bytes(r->batch) : sizeof(int64_t);
	po.item_size = isz;
	if (!batched)
		po.source_capacity = r->capacity;
	int rc = cpat_pipeline_create(&p, &po);
	if (rc)
		goto fail;
	r->next = 1;
	r->nout = 0;
	rc = cpat_pipeline_set_generator(p, batched ? b_gen : p_gen, r);
	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.arg = r;
	so.out_size = isz;
	if (!batched)
		so.out_capacity = r->capacity;
	so.name = "square";
	so.map = batched ? b_square : p_square;
	if (!rc)
		rc = cpat_pipeline_add_stage(p, &so);
	so.name = "even";
	so.map = batched ? b_even : p_even;
	if (!rc)
		rc = cpat_pipeline_add_stage(p, &so);
	if (!rc)
		rc = cpat_pipeline_set_sink(p, batched ? b_sink : p_sink, r);
	if (rc)
		goto fail;
	int64_t t0 = bu_now();
	struct cpat_pipeline_result res;
	rc = cpat_pipeline_run(p, NULL, CPAT_FOREVER, &res);
	int64_t dt = bu_now() - t0;
	if (rc)
		goto fail;
	cpat_pipeline_destroy(p);
	return dt;
fail:
	fprintf(stderr, "numbers: pipeline failed: %s\n", cpat_strerror(rc));
	cpat_pipeline_destroy(p);
	return -1;
}

static uint64_t out_hash(const struct run *r)
{
	return bu_fnv(BU_FNV_INIT, r->out, r->nout * sizeof(int64_t));
}

static const char *wname(char buf[32], int64_t w)
{
	if (w == 0)
		return strcpy(buf, "0");
	return bu_fmt_ns(buf, (double)w);
}

int main(int argc, char **argv)
{
	struct bu_args a;
	long batch = 64, reps = 0, nmax = 0, capacity = 0;
	double budget_ms = 0;
	const struct bu_opt opts[] = {
		{"batch", BU_LONG, &batch,
		 "items per hand-off in the batched pipeline (64)"},
		{"reps", BU_LONG, &reps,
		 "runs of each version, 1..64, median kept (3; tiny 1)"},
		{"items", BU_LONG, &nmax,
		 "at most this many items per level, up to 100000000"},
		{"budget-ms", BU_DOUBLE, &budget_ms,
		 "sequential time aimed at per level"},
		{"capacity", BU_LONG, &capacity,
		 "per-item pipeline: capacity of its channels (default: "
		 "100 ms of a stage's work, 64..4096)"},
	};
	bu_parse(argc, argv, &a, "Go guide: generator -> square -> keep evens",
		 opts, sizeof opts / sizeof opts[0]);
	if (capacity < 0 || capacity > (1L << 24)) {
		fprintf(stderr, "--capacity must be 1..%ld\n", 1L << 24);
		return 2;
	}
	if (batch < 1 || batch > MAX_BATCH) {
		fprintf(stderr, "--batch must be 1..%d\n", MAX_BATCH);
		return 2;
	}
	if (!(budget_ms >= 0 && budget_ms <= 1e7)) { /* also NaN */
		fprintf(stderr, "--budget-ms must be 0..10000000\n");
		return 2;
	}
	if (nmax < 0 || nmax > MAX_ITEMS) {
		fprintf(stderr, "--items must be 1..%ld\n", (long)MAX_ITEMS);
		return 2;
	}
	if (reps < 0 || reps > MAX_REPS) {
		fprintf(stderr, "--reps must be 1..%d\n", MAX_REPS);
		return 2;
	}
	if (budget_ms <= 0)
		budget_ms = a.mode == BU_TINY    ? 15
			    : a.mode == BU_QUICK ? 250
						 : 2000;
	if (nmax <= 0)
		nmax = a.mode == BU_TINY    ? 20000
		       : a.mode == BU_QUICK ? 500000
					    : 5000000;
	if (reps == 0)
		reps = a.mode == BU_TINY ? 1 : 3;

	struct bu_report rep;
	bu_report_begin(&rep, &a, "numbers",
			"Go guide pipeline, claim 2.7x (1200 -> 450 ns/op)");
	bu_work_calibrate();
	int ncpu = bu_ncpu();
	printf("work W is CPU spin done by EACH of the 3 stages per item; "
	       "batched = %ld items per hand-off (fewer at a level of under "
	       "32 x %ld items: see the batch column)\n",
	       batch, batch);
	if (capacity)
		printf("per-item pipeline: channels of capacity %ld "
		       "(--capacity)\n",
		       capacity);
	else
		printf("per-item pipeline: each channel holds about 100 ms of "
		       "a "
		       "stage's work (capacity 100 ms / W, at least 64, the "
		       "library's default, at most 4096): %zu, %zu, %zu, %zu, "
		       "%zu at the levels below\n",
		       item_capacity(levels[0]), item_capacity(levels[1]),
		       item_capacity(levels[2]), item_capacity(levels[3]),
		       item_capacity(levels[4]));

	static const char *hdr[] = {"W/stage",     "items",      "batch",
				    "seq ns/op",   "item ns/op", "item x",
				    "batch ns/op", "batch x",    "ideal",
				    "eff item",    "eff batch"};
	char(*cells)[48] = calloc(NLEVELS * 11, 48);
	if (!cells) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}
	double sp_item[NLEVELS], sp_batch[NLEVELS], seqns[NLEVELS],
		itemns[NLEVELS], batchns[NLEVELS], ideal[NLEVELS];
	long lbatch[NLEVELS]; /* the batch each level used (see r.batch) */
	int all_equal = 1;
	bu_json_int(rep.json, "batch", batch);
	bu_json_int(rep.json, "reps", reps);
	bu_json_int(rep.json, "ncpu", ncpu);
	bu_json_arr(rep.json, "levels");
	struct bu_progress pg;
	bu_progress_start(&pg, &a, "numbers", "levels", NLEVELS, 1);
	for (size_t L = 0; L < NLEVELS; L++) {
		int64_t w = levels[L];
		struct run r = {0};
		/* ~budget of sequential time: 3 stages of w, plus ~5 ns of
		 * bookkeeping per item. */
		double per = 3.0 * (double)w + 5.0;
		long n = (long)(budget_ms * 1e6 / per);
		if (n > nmax)
			n = nmax;
		if (n < 200)
			n = 200;
		r.n = n;
		r.iters = bu_work_ns(w);
		r.capacity = capacity ? (size_t)capacity : item_capacity(w);
		/* At least ~32 hand-offs, or the batched pipeline never fills.
		 */
		r.batch = batch < n / 32 ? batch : (n / 32 > 0 ? n / 32 : 1);
		lbatch[L] = r.batch;
		r.out = malloc((size_t)n * sizeof(int64_t));
		if (!r.out) {
			fprintf(stderr, "out of memory\n");
			free(cells);
			return 1;
		}
		/* The versions alternate, --reps times; the median run of
		 * each is kept (the fastest would favour the one-thread loop:
		 * one thread meets a quiet moment of a shared host more often
		 * than three at once do). Every run's output must equal the
		 * first sequential run's. */
		int64_t t_seq[MAX_REPS], t_item[MAX_REPS], t_batch[MAX_REPS];
		uint64_t h_seq = 0;
		size_t n_seq = 0;
		int failed = 0, eq_item = 1, eq_batch = 1;
		for (long k = 0; k < reps; k++) {
			t_seq[k] = run_seq(&r);
			if (k == 0) {
				h_seq = out_hash(&r);
				n_seq = r.nout;
			} else if (out_hash(&r) != h_seq || r.nout != n_seq) {
				eq_item = eq_batch = 0;
			}
			t_item[k] = run_pipe(&r, 0);
			if (t_item[k] < 0)
				failed = 1;
			eq_item &= out_hash(&r) == h_seq && r.nout == n_seq;
			t_batch[k] = run_pipe(&r, 1);
			if (t_batch[k] < 0)
				failed = 1;
			eq_batch &= out_hash(&r) == h_seq && r.nout == n_seq;
		}
		size_t ur = (size_t)reps;
		int64_t med_seq = t_seq[bu_median_index(t_seq, ur)],
			med_item = t_item[bu_median_index(t_item, ur)],
			med_batch = t_batch[bu_median_index(t_batch, ur)];
		double cost[3];
		stage_costs(&r, cost);
		double sum = cost[0] + cost[1] + cost[2];
		double mx = fmax(cost[0], fmax(cost[1], cost[2]));
		ideal[L] = fmin((double)ncpu, sum / mx);
		eq_item &= !failed;
		eq_batch &= !failed;
		all_equal &= eq_item && eq_batch;
		seqns[L] = (double)med_seq / (double)n;
		itemns[L] = failed ? NAN : (double)med_item / (double)n;
		batchns[L] = failed ? NAN : (double)med_batch / (double)n;
		sp_item[L] = seqns[L] / itemns[L];
		sp_batch[L] = seqns[L] / batchns[L];

		char wb[32];
		char(*c)[48] = cells + L * 11;
		snprintf(c[0], 48, "%s", wname(wb, w));
		snprintf(c[1], 48, "%ld", n);
		snprintf(c[2], 48, "%ld", r.batch);
		c++;
		snprintf(c[2], 48, "%.1f", seqns[L]);
		snprintf(c[3], 48, "%.1f", itemns[L]);
		snprintf(c[4], 48, "%.2f", sp_item[L]);
		snprintf(c[5], 48, "%.1f", batchns[L]);
		snprintf(c[6], 48, "%.2f", sp_batch[L]);
		snprintf(c[7], 48, "%.2f", ideal[L]);
		snprintf(c[8], 48, "%.2f", sp_item[L] / ideal[L]);
		snprintf(c[9], 48, "%.2f", sp_batch[L] / ideal[L]);

		bu_json_obj(rep.json, NULL);
		bu_json_int(rep.json, "work_ns", w);
		bu_json_int(rep.json, "items", n);
		bu_json_int(rep.json, "batch", r.batch);
		bu_json_int(rep.json, "item_capacity", (int64_t)r.capacity);
		bu_json_num(rep.json, "seq_ns_per_item", seqns[L]);
		bu_json_num(rep.json, "item_ns_per_item", itemns[L]);
		bu_json_num(rep.json, "batch_ns_per_item", batchns[L]);
		bu_json_num(rep.json, "speedup_item", sp_item[L]);
		bu_json_num(rep.json, "speedup_batch", sp_batch[L]);
		bu_json_num(rep.json, "ideal", ideal[L]);
		/* Every run, ns per item, in the order run (the median is
		 * reported above). */
		bu_json_obj(rep.json, "runs_ns_per_item");
		const int64_t *tr[3] = {t_seq, t_item, t_batch};
		static const char *const trn[3] = {"seq", "item", "batch"};
		for (int v = 0; v < 3; v++) {
			bu_json_arr(rep.json, trn[v]);
			for (long k = 0; k < reps; k++)
				bu_json_num(rep.json, NULL,
					    (double)tr[v][k] / (double)n);
			bu_json_end(rep.json);
		}
		bu_json_end(rep.json);
		bu_json_arr(rep.json, "stage_ns");
		for (int s = 0; s < 3; s++)
			bu_json_num(rep.json, NULL, cost[s]);
		bu_json_end(rep.json);
		bu_json_bool(rep.json, "equal_item", eq_item);
		bu_json_bool(rep.json, "equal_batch", eq_batch);
		bu_json_end(rep.json);
		free(r.out);
		bu_progress_update(&pg, L + 1);
	}
	bu_progress_end(&pg, NLEVELS);
	bu_json_end(rep.json);
	bu_table("numbers pipeline: time per item (median of runs)", 11, hdr,
		 cells, NLEVELS);

	/* Where each pipeline starts to win (first level faster than the loop).
	 */
	int64_t cross_item = -1, cross_batch = -1;
	long cross_b = batch;
	for (size_t L = 0; L < NLEVELS; L++) {
		if (cross_item < 0 && sp_item[L] > 1.0)
			cross_item = levels[L];
		if (cross_batch < 0 && sp_batch[L] > 1.0) {
			cross_batch = levels[L];
			cross_b = lbatch[L];
		}
	}
	char wb[32];
	if (cross_item >= 0)
		printf("per-item pipeline first beats the loop at W = %s per "
		       "stage\n",
		       wname(wb, cross_item));
	else
		printf("per-item pipeline never beat the loop in this sweep\n");
	if (cross_batch >= 0)
		printf("batched pipeline (%ld items per hand-off there) first "
		       "beats the loop at W = %s per stage\n",
		       cross_b, wname(wb, cross_batch));
	else
		printf("batched pipeline never beat the loop in this sweep\n");
	printf("guide: 2.7x at trivial work (sequential 1200 ns/op, pipeline "
	       "450 ns/op).\n");
	if (sp_item[0] < 2.7)
		bu_verdict(&rep,
			   "numbers: the guide's 2.7x at trivial work does NOT "
			   "hold: at W=0 the loop "
			   "takes %.1f ns/op and the per-item pipeline %.1f "
			   "ns/op (%.2fx%s), batched "
			   "%.2fx; a hand-off costs far more than squaring a "
			   "number (bound here %.2fx "
			   "on %d cores)",
			   seqns[0], itemns[0], sp_item[0],
			   sp_item[0] < 1 ? ", slower" : "", sp_batch[0],
			   ideal[0], ncpu);
	else
		bu_verdict(&rep,
			   "numbers: measured %.2fx at W=0: the guide's 2.7x "
			   "holds here",
			   sp_item[0]);
	char wb2[32];
	bu_verdict(&rep,
		   "numbers: the per-item pipeline first wins at W = %s per "
		   "stage, the batched one "
		   "at W = %s (per-item speedup %.2fx at W = 100 us, "
		   "bound %.2fx)",
		   cross_item >= 0 ? wname(wb, cross_item) : "never",
		   cross_batch >= 0 ? wname(wb2, cross_batch) : "never",
		   sp_item[NLEVELS - 1], ideal[NLEVELS - 1]);
	bu_json_int(rep.json, "crossover_item_ns", cross_item);
	bu_json_int(rep.json, "crossover_batch_ns", cross_batch);

	char note[128];
	for (size_t L = 0; L < NLEVELS; L++) {
		if (L != 0 && L != 2 && L != 4)
			continue;
		char nm[64];
		snprintf(nm, sizeof nm, "numbers W=%s per-item",
			 wname(wb, levels[L]));
		snprintf(note, sizeof note, "%.0f -> %.0f ns/op", seqns[L],
			 itemns[L]);
		bu_summary(&rep, nm, L == 0 ? "2.7x (1200->450ns)" : "",
			   seqns[L], itemns[L], "ns/op", sp_item[L], ideal[L],
			   note);
		snprintf(nm, sizeof nm, "numbers W=%s batch%ld",
			 wname(wb, levels[L]), lbatch[L]);
		snprintf(note, sizeof note, "%.0f -> %.0f ns/op", seqns[L],
			 batchns[L]);
		bu_summary(&rep, nm, "", seqns[L], batchns[L], "ns/op",
			   sp_batch[L], ideal[L], note);
	}
	bu_check(&rep, "outputs_equal", all_equal);
	free(cells);
	return bu_report_end(&rep);
}
