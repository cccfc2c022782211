/*
 * Conformance and stress tests of cpattern/pipeline.h (with fan.h for the
 * fan-out/fan-in end of the long pipeline).
 *
 * Every test asserts a documented behaviour of the header: return codes,
 * what reached the sink, in which order, and the accounting of every item
 * (produced = delivered + filtered + not processed, the drop callback seeing
 * exactly the items not processed). Items carry their source index, so
 * every test can track each item's fate in a per-index state array.
 *
 * Callbacks run on pipeline threads: they record into their own structs
 * and atomics; the main thread asserts after cpat_pipeline_wait() (which
 * joins every pipeline thread). Nothing sleeps to synchronise: the stage
 * functions that spin or nanosleep a few microseconds model per-item work
 * or a slow consumer (data, not synchronisation). The main thread waits on
 * conditions (a mutex/condvar the sink signals, a stats counter reaching a
 * value) under the harness watchdog.
 *
 * "No thread left" is measured by counting the entries of /proc/self/task
 * (every thread of the process) against a baseline taken at the start of
 * the test: the library's timer thread is started once in main() so that
 * a deadline does not change the count.
 *
 * The counting allocator is installed before anything else and never
 * removed; tests compare th_alloc_live() with a baseline taken while
 * quiescent. Sizes are small by default, smaller under sanitizers, and
 * multiplied by CPAT_TEST_SCALE; the seed is printed and read back from
 * CPAT_TEST_SEED.
 */
#include "pipeline_testlib.h"

#include <dirent.h>
#include <limits.h>
#include <strings.h>
#include <sched.h>

/* ---- guide example and order -------------------------------------------- */

static int sq_map(const void *in, void *out, struct cpat_stage_ctx *c)
{
	(void)c;
	*(int *)out = *(const int *)in * *(const int *)in;
	return CPAT_STAGE_EMIT;
}

static int even_map(const void *in, void *out, struct cpat_stage_ctx *c)
{
	(void)c;
	*(int *)out = *(const int *)in;
	return *(const int *)in % 2 ? CPAT_STAGE_SKIP : CPAT_STAGE_EMIT;
}

static int gen_1_to_5(void *out, void *arg)
{
	int *next = arg;
	if (*next > 5)
		return 0;
	*(int *)out = (*next)++;
	return 1;
}

struct int_sink {
	int v[16];
	int n;
};

static int int_sink_fn(const void *item, void *arg)
{
	struct int_sink *s = arg;
	if (s->n < 16)
		s->v[s->n] = *(const int *)item;
	s->n++;
	return 0;
}

TH_TEST_FN(pipeline_guide_example_square_then_even_delivers_4_16)
{
	(void)state;
	long live = th_alloc_live(), thr = th_count_threads();
	struct cpat_pipeline *p;
	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	po.item_size = sizeof(int);
	assert_int_equal(cpat_pipeline_create(&p, &po), 0);
	int next = 1;
	assert_int_equal(cpat_pipeline_set_generator(p, gen_1_to_5, &next), 0);
	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.name = "square";
	so.map = sq_map;
	so.out_size = sizeof(int);
	assert_int_equal(cpat_pipeline_add_stage(p, &so), 0);
	so.name = "even";
	so.map = even_map;
	assert_int_equal(cpat_pipeline_add_stage(p, &so), 0);
	struct int_sink s = {0};
	assert_int_equal(cpat_pipeline_set_sink(p, int_sink_fn, &s), 0);
	struct cpat_pipeline_result res;
	memset(&res, 0xab, sizeof res);
	assert_int_equal(cpat_pipeline_run(p, NULL, CPAT_FOREVER, &res), 0);
	assert_int_equal(res.rc, 0);
	assert_string_equal(res.stage, "");
	assert_int_equal(s.n, 2);
	assert_int_equal(s.v[0], 4);
	assert_int_equal(s.v[1], 16);
	assert_int_equal(res.produced, 5);
	assert_int_equal(res.delivered, 2);
	assert_int_equal(res.filtered, 3);
	assert_int_equal(res.not_processed, 0);
	assert_no_threads_left(thr);
	cpat_pipeline_destroy(p);
	assert_int_equal(th_alloc_live(), live);
}

TH_TEST_FN(pipeline_all_ordered_multiworker_stages_deliver_in_source_order)
{
	(void)state;
	uint64_t n = (uint64_t)SIZE(20000, 3000);
	struct trun r;
	struct cpat_pipeline *p = trun_init(&r, n, 3, 8);
	struct scfg a, b, c;
	scfg_init(&a);
	scfg_init(&b);
	scfg_init(&c);
	a.check_index = b.check_index = c.check_index = 1;
	b.skip_mod = 3;
	b.tr = &r.tr;
	add_map(p, "a", &a, 4, 1, 4);
	add_map(p, "filter", &b, 3, 1, 2);
	add_map(p, "c", &c, 2, 1, 16);
	struct sink *s = trun_sink(&r, n);
	assert_int_equal(trun_run(&r, NULL, CPAT_FOREVER), 0);
	assert_int_equal(atomic_load(&a.bad_ctx), 0);
	assert_int_equal(atomic_load(&b.bad_ctx), 0);
	assert_int_equal(atomic_load(&c.bad_ctx), 0);
	assert_int_equal(r.res.produced, n);
	assert_int_equal(r.res.not_processed, 0);
	uint64_t k = 0;
	for (uint64_t i = 0; i < n; i++) {
		if (i % 3 == 0)
			continue;
		if (k >= s->count || s->got[k] != i)
			fail_msg("delivery %llu: expected item %llu, got %llu",
				 (unsigned long long)k, (unsigned long long)i,
				 (unsigned long long)(k < s->count ? s->got[k]
								   : ~0ull));
		k++;
	}
	assert_int_equal(s->count, k);
	assert_accounting(&r.tr, &r.res);
	trun_free(&r);
}

TH_TEST_FN(pipeline_ordered_stage_4_workers_random_delays_keeps_order)
{
	(void)state;
	uint64_t n = (uint64_t)SIZE(2000, 400);
	struct gen g;
	struct cpat_pipeline *p = mkgenpipe(&g, n, 16, NULL, NULL);
	struct scfg a;
	scfg_init(&a);
	a.max_delay_us = 50;
	a.salt = 17;
	a.check_index = 1;
	a.mul = 2;
	a.add = 1;
	add_map(p, "jitter", &a, 4, 1, 8);
	struct sink s;
	set_sink(p, &s, n);
	struct cpat_pipeline_result res;
	assert_int_equal(cpat_pipeline_run(p, NULL, CPAT_FOREVER, &res), 0);
	assert_int_equal(atomic_load(&a.bad_ctx), 0);
	assert_int_equal(s.count, n);
	for (uint64_t i = 0; i < n; i++)
		if (s.got[i] != 2 * i + 1)
			fail_msg("position %llu holds %llu, expected %llu",
				 (unsigned long long)i,
				 (unsigned long long)s.got[i],
				 (unsigned long long)(2 * i + 1));
	assert_int_equal(res.delivered, n);
	cpat_pipeline_destroy(p);
	free(s.got);
}

/* An unordered stage with random delays still delivers every item once
 * (and, on a 4-worker stage, not necessarily in order: not asserted). */
TH_TEST_FN(pipeline_unordered_stage_random_delays_delivers_each_item_once)
{
	(void)state;
	uint64_t n = (uint64_t)SIZE(2000, 400);
	struct trun r;
	struct cpat_pipeline *p = trun_init(&r, n, 1, 4);
	struct scfg a;
	scfg_init(&a);
	a.max_delay_us = 30;
	a.salt = 5;
	a.check_index = 1;
	add_map(p, "jitter", &a, 4, 0, 4);
	trun_sink(&r, 0);
	assert_int_equal(trun_run(&r, NULL, CPAT_FOREVER), 0);
	assert_int_equal(atomic_load(&a.bad_ctx), 0);
	assert_int_equal(r.res.delivered, n);
	assert_accounting(&r.tr, &r.res);
	trun_free(&r);
}

/* ---- the long pipeline: generator -> map -> filter -> fan-out 4 -> fan-in -*/

static int fan_add7(const void *in, void *out, unsigned worker, void *arg)
{
	_Atomic uint64_t *per_worker = arg;
	atomic_fetch_add(&per_worker[worker < 4 ? worker : 0], 1);
	uint64_t v = *(const uint64_t *)in;
	if (v % 11 == 0)
		return 1; /* send nothing */
	*(uint64_t *)out = v + 7;
	return 0;
}

TH_TEST_FN(pipeline_map_filter_fan_out_4_fan_in_matches_sequential_multiset)
{
	(void)state;
	long n_plain = th_scale() >= 10 ? 1000000 / th_scale() : 100000;
	uint64_t n = (uint64_t)SIZE(n_plain, 20000);
	long live = th_alloc_live(), thr = th_count_threads();
	/* Sequential reference: v = 3i + 1, keep v % 5 != 0, then
	 * keep v % 11 != 0, w = v + 7. Each w comes from exactly one i. */
	uint64_t expect = 0;
	unsigned char *want = calloc(n, 1);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t v = 3 * i + 1;
		if (v % 5 == 0 || v % 11 == 0)
			continue;
		want[i] = 1;
		expect++;
	}
	struct gen g;
	struct cpat_pipeline *p = mkgenpipe(&g, n, 64, NULL, NULL);
	struct scfg m, f;
	scfg_init(&m);
	scfg_init(&f);
	m.mul = 3;
	m.add = 1;
	f.skip_mod = 5;
	add_map(p, "map", &m, 2, 0, 64);
	add_map(p, "filter", &f, 2, 0, 64);
	assert_int_equal(cpat_pipeline_set_output(p), 0);

	struct cpat_chan *wout[4], *merged;
	for (int i = 0; i < 4; i++)
		assert_int_equal(
			cpat_chan_create(&wout[i], sizeof(uint64_t), 32), 0);
	assert_int_equal(cpat_chan_create(&merged, sizeof(uint64_t), 64), 0);
	_Atomic uint64_t per_worker[4] = {0};
	struct cpat_fan *fo = NULL, *fi = NULL;
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), 0);
	/* (Before start: see pipeline_output_channel_set_before_and_after_
	 * start.) */
	struct cpat_chan *pout = cpat_pipeline_output(p);
	assert_non_null(pout);
	assert_int_equal(cpat_chan_elem_size(pout), sizeof(uint64_t));
	assert_int_equal(
		cpat_fan_out(&fo, pout, wout, 4, 4, fan_add7, per_worker, NULL),
		0);
	assert_int_equal(cpat_fan_in(&fi, wout, 4, merged, NULL), 0);

	unsigned char *seen = calloc(n, 1);
	uint64_t got = 0, dup = 0, bad = 0;
	uint64_t w;
	int rc;
	while ((rc = cpat_chan_recv(merged, &w, NULL)) == 0) {
		got++;
		if (w < 8 || (w - 8) % 3 != 0 || (w - 8) / 3 >= n) {
			bad++;
			continue;
		}
		uint64_t i = (w - 8) / 3;
		if (!want[i])
			bad++;
		else if (seen[i]++)
			dup++;
	}
	assert_int_equal(rc, -EPIPE);
	assert_int_equal(cpat_fan_wait(fo), 0);
	assert_int_equal(cpat_fan_wait(fi), 0);
	struct cpat_pipeline_result res;
	assert_int_equal(cpat_pipeline_wait(p, &res), 0);
	assert_int_equal(bad, 0);
	assert_int_equal(dup, 0);
	assert_int_equal(got, expect);
	assert_int_equal(res.produced, n);
	assert_int_equal(res.delivered + res.filtered, n);
	assert_int_equal(res.not_processed, 0);
	uint64_t fanned = 0;
	for (int i = 0; i < 4; i++)
		fanned += atomic_load(&per_worker[i]);
	assert_int_equal(fanned, res.delivered);
	/* Every output of the fan-out and the merged channel are closed. */
	for (int i = 0; i < 4; i++)
		assert_int_equal(cpat_chan_is_closed(wout[i]), 1);
	assert_int_equal(cpat_chan_is_closed(merged), 1);
	assert_no_threads_left(thr);
	cpat_fan_destroy(fi);
	cpat_fan_destroy(fo);
	cpat_pipeline_destroy(p);
	for (int i = 0; i < 4; i++)
		cpat_chan_destroy(wout[i]);
	cpat_chan_destroy(merged);
	assert_int_equal(th_alloc_live(), live);
	free(seen);
	free(want);
}

/* ---- flat stage ------------------------------------------------------------
 */

struct flat_cfg {
	_Atomic uint64_t emit_fail;
};

/* Emits item i (i % 4) times, as i * 4 + copy. */
static int flat_fn(const void *in, struct cpat_stage_ctx *ctx)
{
	struct flat_cfg *c = cpat_stage_arg(ctx);
	uint64_t v = *(const uint64_t *)in;
	for (uint64_t k = 0; k < v % 4; k++) {
		uint64_t o = v * 4 + k;
		if (cpat_stage_emit(ctx, &o) != 0)
			atomic_fetch_add(&c->emit_fail, 1);
	}
	return 0;
}

TH_TEST_FN(pipeline_flat_stage_emits_any_number_per_item_ordered)
{
	(void)state;
	uint64_t n = (uint64_t)SIZE(4000, 600);
	struct gen g;
	struct cpat_pipeline *p = mkgenpipe(&g, n, 8, NULL, NULL);
	struct flat_cfg fc = {0};
	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.name = "flat";
	so.flat = flat_fn;
	so.arg = &fc;
	so.out_size = sizeof(uint64_t);
	so.workers = 3;
	so.ordered = 1;
	so.out_capacity = 4;
	assert_int_equal(cpat_pipeline_add_stage(p, &so), 0);
	struct sink s;
	uint64_t expect = 0;
	for (uint64_t i = 0; i < n; i++)
		expect += i % 4;
	sink_init(&s, expect);
	assert_int_equal(cpat_pipeline_set_sink(p, sink_fn, &s), 0);
	struct cpat_pipeline_result res;
	assert_int_equal(cpat_pipeline_run(p, NULL, CPAT_FOREVER, &res), 0);
	assert_int_equal(atomic_load(&fc.emit_fail), 0);
	assert_int_equal(s.count, expect);
	assert_int_equal(res.delivered, expect);
	uint64_t k = 0;
	for (uint64_t i = 0; i < n; i++)
		for (uint64_t c = 0; c < i % 4; c++, k++)
			if (s.got[k] != i * 4 + c)
				fail_msg("flat delivery %llu: got %llu, want "
					 "%llu",
					 (unsigned long long)k,
					 (unsigned long long)s.got[k],
					 (unsigned long long)(i * 4 + c));
	cpat_pipeline_destroy(p);
	free(s.got);
}

/* ---- ordered flat stages whose chunk outgrows its reorder slot --------- */

/* Input v emits oflat_count(v) outputs v * OFLAT_MUL + k, k = 0, 1, ...:
 * none for every fifth input, up to 80 for others, so that a chunk of a few
 * inputs outgrows its reorder slot (32 outputs) and is streamed. */
#define OFLAT_MUL 1000u
#define OFLAT_MAX 100u

static uint64_t oflat_count(uint64_t v)
{
	return (v % 5) * 20;
}

struct oflat {
	struct cpat_pipeline *p; /* cancelled at input cancel_at, mid-emit */
	uint64_t cancel_at;
	uint64_t n;                        /* inputs */
	_Atomic unsigned char *in_dropped; /* per input: dropped (stage 0) */
	_Atomic unsigned char *out_seen;   /* per output slot v*MAX+k: times */
	_Atomic uint64_t bad;              /* an output or input out of range */
	_Atomic uint64_t dropped;
	/* The sink (one thread). */
	uint64_t delivered, last;
	int out_of_order;
};

static int oflat_fn(const void *in, struct cpat_stage_ctx *ctx)
{
	struct oflat *c = cpat_stage_arg(ctx);
	uint64_t v = *(const uint64_t *)in;
	uint64_t m = oflat_count(v);
	for (uint64_t k = 0; k < m; k++) {
		if (v == c->cancel_at && k == m / 2)
			cpat_pipeline_cancel(c->p);
		uint64_t o = v * OFLAT_MUL + k;
		int rc = cpat_stage_emit(ctx, &o);
		if (rc != 0)
			return rc;
	}
	return 0;
}

static void oflat_mark(struct oflat *c, uint64_t o)
{
	uint64_t v = o / OFLAT_MUL, k = o % OFLAT_MUL;
	if (v >= c->n || k >= oflat_count(v)) {
		atomic_fetch_add(&c->bad, 1);
		return;
	}
	atomic_fetch_add(&c->out_seen[v * OFLAT_MAX + k], 1);
}

static void oflat_drop(const void *item, unsigned stage, void *arg)
{
	struct oflat *c = arg;
	uint64_t x = *(const uint64_t *)item;
	atomic_fetch_add(&c->dropped, 1);
	if (stage == 0) {
		if (x >= c->n)
			atomic_fetch_add(&c->bad, 1);
		else
			atomic_fetch_add(&c->in_dropped[x], 1);
	} else {
		oflat_mark(c, x);
	}
}

static int oflat_sink(const void *item, void *arg)
{
	struct oflat *c = arg;
	uint64_t o = *(const uint64_t *)item;
	if (c->delivered && o <= c->last)
		c->out_of_order = 1;
	c->last = o;
	c->delivered++;
	oflat_mark(c, o);
	return 0;
}

/* One run: returns the result; the caller checks it with oflat_check(). */
static int oflat_run(struct oflat *c, uint64_t n, unsigned workers,
		     size_t src_cap, size_t out_cap, uint64_t cancel_at,
		     struct cpat_pipeline_result *res)
{
	memset(c, 0, sizeof *c);
	c->n = n;
	c->cancel_at = cancel_at;
	c->in_dropped = calloc(n, 1);
	c->out_seen = calloc(n * OFLAT_MAX, 1);
	if (!c->in_dropped || !c->out_seen)
		abort();
	struct gen g;
	gen_init(&g, n);
	struct cpat_pipeline *p = mkpipe(src_cap, oflat_drop, c);
	c->p = p;
	assert_int_equal(cpat_pipeline_set_generator(p, gen_fn, &g), 0);
	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.name = "burst";
	so.flat = oflat_fn;
	so.arg = c;
	so.out_size = sizeof(uint64_t);
	so.workers = workers;
	so.ordered = 1;
	so.out_capacity = out_cap;
	assert_int_equal(cpat_pipeline_add_stage(p, &so), 0);
	assert_int_equal(cpat_pipeline_set_sink(p, oflat_sink, c), 0);
	int rc = cpat_pipeline_run(p, NULL, CPAT_FOREVER, res);
	cpat_pipeline_destroy(p);
	return rc;
}

/* Every input that left the source emitted a prefix k = 0..j-1 of its
 * outputs, each seen exactly once (delivered or dropped); one that emitted
 * nothing was filtered (it has no outputs) or dropped; the sink saw
 * outputs in order; and the totals add up. */
static void oflat_check(struct oflat *c, const struct cpat_pipeline_result *res)
{
	assert_int_equal(atomic_load(&c->bad), 0);
	assert_int_equal(c->out_of_order, 0);
	assert_int_equal(res->delivered, c->delivered);
	assert_int_equal(res->not_processed, atomic_load(&c->dropped));
	assert_int_equal(res->produced + res->expanded,
			 res->delivered + res->filtered + res->not_processed);
	uint64_t expanded = 0, filtered = 0;
	for (uint64_t v = 0; v < c->n; v++) {
		uint64_t m = oflat_count(v), j = 0;
		while (j < m && atomic_load(&c->out_seen[v * OFLAT_MAX + j]))
			j++;
		for (uint64_t k = 0; k < m; k++) {
			unsigned char t =
				atomic_load(&c->out_seen[v * OFLAT_MAX + k]);
			if (t != (k < j ? 1 : 0))
				fail_msg("input %llu output %llu seen %u times "
					 "(prefix %llu of %llu)",
					 (unsigned long long)v,
					 (unsigned long long)k, t,
					 (unsigned long long)j,
					 (unsigned long long)m);
		}
		unsigned char d = atomic_load(&c->in_dropped[v]);
		if (v >= res->produced) {
			if (j || d)
				fail_msg("input %llu not produced but seen",
					 (unsigned long long)v);
			continue;
		}
		/* An input whose function failed after emitting j outputs
		 * is dropped too, and its j outputs count in expanded. */
		if (d > 1)
			fail_msg("input %llu dropped %u times, %llu outputs",
				 (unsigned long long)v, d,
				 (unsigned long long)j);
		if (j)
			expanded += d ? j : j - 1;
		else if (!d)
			filtered++;
		if (!j && !d && m)
			fail_msg("input %llu (of %llu outputs) vanished",
				 (unsigned long long)v, (unsigned long long)m);
	}
	assert_int_equal(res->expanded, expanded);
	assert_int_equal(res->filtered, filtered);
	free((void *)c->in_dropped);
	free((void *)c->out_seen);
}

TH_TEST_FN(pipeline_ordered_flat_outgrowing_its_slot_keeps_order_exactly_once)
{
	(void)state;
	uint64_t n = (uint64_t)SIZE(3000, 500);
	unsigned workers[] = {2, 3, 5};
	for (int i = 0; i < 3; i++) {
		struct oflat c;
		struct cpat_pipeline_result res;
		int rc = oflat_run(&c, n, workers[i], 64, 1 + 8 * (size_t)i,
				   UINT64_MAX, &res);
		assert_int_equal(rc, 0);
		assert_int_equal(res.produced, n);
		assert_int_equal(res.not_processed, 0);
		uint64_t total = 0;
		for (uint64_t v = 0; v < n; v++)
			total += oflat_count(v);
		assert_int_equal(res.delivered, total);
		oflat_check(&c, &res);
	}
}

/* Cancelled in the middle of an input's outputs (the input's chunk is
 * being streamed, or waits for its turn to be): every output is delivered
 * in order or dropped, each exactly once, and the totals add up. */
TH_TEST_FN(
	pipeline_ordered_flat_outgrowing_its_slot_cancel_mid_chunk_accounts_each_once)
{
	(void)state;
	long trials = SIZE(60, 12);
	uint64_t n = 400;
	struct th_rng rng;
	th_rng_init(&rng, 303);
	for (long t = 0; t < trials; t++) {
		uint64_t at = th_rng_below(&rng, n);
		if (oflat_count(at) == 0)
			at++;
		unsigned w = 2 + (unsigned)th_rng_below(&rng, 4);
		size_t src_cap = 1 + th_rng_below(&rng, 64);
		size_t out_cap = 1 + th_rng_below(&rng, 16);
		struct oflat c;
		struct cpat_pipeline_result res;
		int rc = oflat_run(&c, n, w, src_cap, out_cap, at, &res);
		if (rc != -ECANCELED)
			fail_msg("trial %ld (cancel at %llu, %u workers): rc "
				 "%d",
				 t, (unsigned long long)at, w, rc);
		assert_true(res.produced > at);
		oflat_check(&c, &res);
	}
}

/* ---- ordered stages: many workers, random delays, stops ---------------- */

/* Per-item delays for an ordered stage: mostly none, some yields, now and
 * then a long spin (the worker holding the oldest chunk is then the slow
 * one, and the others fill the reorder window behind it). */
struct jcfg {
	uint64_t salt;
	int64_t long_ns;
	uint64_t stop_at; /* source index at which to stop; MAX: never */
	int stop_how;     /* 0: cancel the pipeline, 1: fail with -EIO */
	struct cpat_pipeline *p;
	struct track *tr;
	_Atomic uint64_t bad_ctx;
};

static int jitter_map(const void *in, void *out, struct cpat_stage_ctx *ctx)
{
	struct jcfg *c = cpat_stage_arg(ctx);
	uint64_t v = *(const uint64_t *)in;
	if (cpat_stage_index(ctx) != v)
		atomic_fetch_add(&c->bad_ctx, 1);
	uint64_t h = hash_idx(v, c->salt) % 64;
	if (h == 0)
		spin_ns(c->long_ns);
	else if (h < 8)
		th_relax(); /* a yield; a nap on one CPU */
	if (v == c->stop_at) {
		if (c->stop_how == 1)
			return -EIO;
		cpat_pipeline_cancel(c->p);
	}
	if (v % 7 == 3) {
		track_mark(c->tr, v, ST_FILTERED);
		return CPAT_STAGE_SKIP;
	}
	*(uint64_t *)out = v;
	return CPAT_STAGE_EMIT;
}

/* A sink that checks order (increasing indices) and tracks delivery. */
struct osink {
	struct track *tr;
	uint64_t count, last;
	int out_of_order;
};

static int osink_fn(const void *item, void *arg)
{
	struct osink *s = arg;
	uint64_t v = *(const uint64_t *)item;
	if (s->count && v <= s->last)
		s->out_of_order = 1;
	s->last = v;
	s->count++;
	track_mark(s->tr, v, ST_DELIVERED);
	return 0;
}

TH_TEST_FN(
	pipeline_ordered_many_workers_random_delays_stop_at_random_item_accounts_each_once)
{
	(void)state;
	long trials = SIZE(80, 16);
	const uint64_t n = (uint64_t)SIZE(3000, 600);
	struct th_rng rng;
	th_rng_init(&rng, 404);
	struct track tr;
	track_init(&tr, n, 2);
	long thr = th_count_threads(), live = th_alloc_live();
	for (long t = 0; t < trials; t++) {
		track_reset(&tr);
		struct gen g;
		struct cpat_pipeline *p = mkgenpipe(
			&g, n, 1 + th_rng_below(&rng, 64), track_drop, &tr);
		struct jcfg a = {0}, b = {0};
		a.salt = th_rng_next(&rng);
		b.salt = th_rng_next(&rng);
		a.long_ns = b.long_ns = SANITIZED ? 20000 : 100000;
		a.tr = b.tr = &tr;
		a.p = b.p = p;
		/* The last trial of each four runs to the end. */
		uint64_t at = t % 4 == 3 ? UINT64_MAX : th_rng_below(&rng, n);
		int how = (int)th_rng_below(&rng, 2);
		struct jcfg *stopper = th_rng_below(&rng, 2) ? &a : &b;
		a.stop_at = b.stop_at = UINT64_MAX;
		stopper->stop_at = at;
		stopper->stop_how = how;
		unsigned wa = 2 + (unsigned)th_rng_below(&rng, 7);
		unsigned wb = 2 + (unsigned)th_rng_below(&rng, 3);
		struct cpat_stage_opts so;
		cpat_stage_opts_init(&so);
		so.map = jitter_map;
		so.out_size = sizeof(uint64_t);
		so.ordered = 1;
		so.name = "a";
		so.arg = &a;
		so.workers = wa;
		so.out_capacity = 1 + th_rng_below(&rng, 64);
		assert_int_equal(cpat_pipeline_add_stage(p, &so), 0);
		so.name = "b";
		so.arg = &b;
		so.workers = wb;
		so.out_capacity = 1 + th_rng_below(&rng, 8);
		assert_int_equal(cpat_pipeline_add_stage(p, &so), 0);
		struct osink s = {&tr, 0, 0, 0};
		assert_int_equal(cpat_pipeline_set_sink(p, osink_fn, &s), 0);
		struct cpat_pipeline_result res;
		int rc = cpat_pipeline_run(p, NULL, CPAT_FOREVER, &res);
		/* An item the first stage filters never reaches the second. */
		bool stops =
			at != UINT64_MAX && !(stopper == &b && at % 7 == 3);
		int want = !stops ? 0 : how == 1 ? -EIO : -ECANCELED;
		if (rc != want)
			fail_msg("trial %ld (%u + %u workers, stop at %llu by "
				 "%s, how %d): rc %d, want %d",
				 t, wa, wb, (unsigned long long)at,
				 stopper == &a ? "a" : "b", how, rc, want);
		if (want == -EIO) {
			assert_string_equal(res.stage,
					    stopper == &a ? "a" : "b");
			assert_int_equal(res.item_index, at);
		}
		if (!stops)
			assert_int_equal(res.produced, n);
		assert_int_equal(s.out_of_order, 0);
		assert_int_equal(atomic_load(&a.bad_ctx), 0);
		assert_int_equal(atomic_load(&b.bad_ctx), 0);
		assert_accounting(&tr, &res);
		assert_int_equal(cpat__pipeline_live_threads(), 0);
		cpat_pipeline_destroy(p);
	}
	th_assert_threads_back(thr);
	assert_int_equal(th_alloc_live(), live);
	track_free(&tr);
}

/* A starved ordered stage holds nothing back: fed one item at a time, each
 * comes out of the output channel before the next is fed (the worker
 * waiting for input takes it at once, whichever of the workers that is). */
TH_TEST_FN(pipeline_ordered_stage_fed_one_at_a_time_passes_each_on_at_once)
{
	(void)state;
	uint64_t n = (uint64_t)SIZE(2000, 300);
	struct cpat_pipeline *p = mkfeedpipe(4, NULL, NULL);
	struct scfg a;
	scfg_init(&a);
	a.check_index = 1;
	a.mul = 3;
	add_map(p, "a", &a, 4, 1, 4);
	assert_int_equal(cpat_pipeline_set_output(p), 0);
	struct cpat_chan *out = cpat_pipeline_output(p);
	assert_non_null(out);
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), 0);
	uint64_t bad = 0;
	for (uint64_t i = 0; i < n; i++) {
		if (cpat_pipeline_feed(p, &i, NULL) != 0)
			bad++;
		uint64_t v = 0;
		if (cpat_chan_recv(out, &v, NULL) != 0 || v != 3 * i)
			bad++;
	}
	assert_int_equal(bad, 0);
	assert_int_equal(cpat_pipeline_feed_close(p), 0);
	uint64_t v;
	assert_int_equal(cpat_chan_recv(out, &v, NULL), -EPIPE);
	struct cpat_pipeline_result res;
	assert_int_equal(cpat_pipeline_wait(p, &res), 0);
	assert_int_equal(res.produced, n);
	assert_int_equal(res.delivered, n);
	assert_int_equal(atomic_load(&a.bad_ctx), 0);
	cpat_pipeline_destroy(p);
}

/* ---- cancellation at a random item ------------------------------------- */

TH_TEST_FN(pipeline_cancel_at_random_item_threads_exit_every_item_accounted)
{
	(void)state;
	long trials = SIZE(1000, 100);
	const uint64_t n = 200;
	struct th_rng rng;
	th_rng_init(&rng, 101);
	struct track tr;
	track_init(&tr, n, 3);
	long thr = th_count_threads(), live = th_alloc_live();
	for (long t = 0; t < trials; t++) {
		track_reset(&tr);
		uint64_t at = th_rng_below(&rng, n);
		int who = (int)th_rng_below(&rng, 4); /* source, token, stage,
							 sink */
		struct gen g;
		struct cpat_pipeline *p = mkgenpipe(
			&g, n, 1 + th_rng_below(&rng, 8), track_drop, &tr);
		struct cpat_token *tok = mktok();
		struct scfg a, b, c;
		scfg_init(&a);
		scfg_init(&b);
		scfg_init(&c);
		b.skip_mod = 4;
		b.tr = &tr;
		a.check_index = b.check_index = c.check_index = 1;
		add_map(p, "a", &a, 2, (int)th_rng_below(&rng, 2),
			1 + th_rng_below(&rng, 4));
		add_map(p, "filter", &b, 2, (int)th_rng_below(&rng, 2),
			1 + th_rng_below(&rng, 4));
		add_map(p, "c", &c, 1, 0, 1 + th_rng_below(&rng, 4));
		struct sink s;
		sink_init(&s, 0);
		s.tr = &tr;
		if (who == 0) {
			g.cancel_at = at;
			g.cancel_p = p;
		} else if (who == 1) {
			g.cancel_at = at;
			g.cancel_tok = tok;
		} else if (who == 2) {
			a.cancel_at = at;
			a.cancel_p = p;
		} else {
			s.cancel_at = at;
			s.cancel_p = p;
			if (at % 4 == 0) /* filtered: never reaches the sink */
				s.cancel_at = at + 1 < n ? at + 1 : 1;
		}
		assert_int_equal(cpat_pipeline_set_sink(p, sink_fn, &s), 0);
		struct cpat_pipeline_result res;
		int rc = cpat_pipeline_run(p, tok, CPAT_FOREVER, &res);
		/* The cancel came before the input ended, unless the sink
		 * cancelled at the last item (then it is a race between the
		 * end and the cancel). */
		if (!(who == 3 && s.cancel_at == n - 1
			      ? (rc == 0 || rc == -ECANCELED)
			      : rc == -ECANCELED))
			fail_msg("trial %ld (who %d, at %llu): rc %d", t, who,
				 (unsigned long long)at, rc);
		assert_int_equal(res.rc, rc);
		assert_int_equal(atomic_load(&a.bad_ctx), 0);
		assert_int_equal(atomic_load(&b.bad_ctx), 0);
		assert_int_equal(atomic_load(&c.bad_ctx), 0);
		/* The source stops: at most the item in hand did not leave. */
		uint64_t made = atomic_load(&g.made);
		assert_true(res.produced <= made);
		assert_true(res.produced + 1 >= made);
		if (who <= 1)
			assert_true(made >= at + 1);
		assert_int_equal(atomic_load(&g.calls_after_end), 0);
		assert_accounting(&tr, &res);
		/* Every stage thread has exited when wait returns. */
		assert_int_equal(cpat__pipeline_live_threads(), 0);
		long now_thr = th_threads_settle(thr);
		if (now_thr > thr)
			fail_msg("trial %ld: %ld threads, baseline %ld", t,
				 now_thr, thr);
		cpat_pipeline_destroy(p);
		cpat_token_unref(tok);
		assert_int_equal(th_alloc_live(), live);
	}
	track_free(&tr);
}

/* A thread of the caller's that cancels the caller's token after a
 * number of pauses. */
struct ext_cancel {
	pthread_t t;
	struct cpat_token *tok;
	unsigned pauses;
};

static void *ext_cancel_main(void *arg)
{
	struct ext_cancel *e = arg;
	th_pause(e->pauses);
	cpat_token_cancel(e->tok);
	return NULL;
}

/*
 * A cancel from a thread outside the pipeline: the token's status is set
 * for the whole tree before its callbacks run, so the pipeline's threads
 * can see it, stop and be joined by wait() before the pipeline's own
 * callback has recorded the cause. The cause must still be reported:
 * a run that abandoned any item returns -ECANCELED, and one that returned
 * 0 delivered everything (the soak once saw 0 with 7560 of 7852 items
 * never produced).
 */
TH_TEST_FN(
	pipeline_cancel_from_outside_is_reported_whenever_items_were_abandoned)
{
	(void)state;
	struct th_rng rng;
	th_rng_init(&rng, th_seed() ^ 0x5eed);
	long trials = SIZE(600, 100);
	long cancelled = 0, completed = 0;
	for (long t = 0; t < trials; t++) {
		const uint64_t n = 2000;
		struct trun r;
		struct cpat_pipeline *p = trun_init(&r, n, 2, 16);
		struct scfg a, b;
		scfg_init(&a);
		scfg_init(&b);
		a.skip_mod = 4;
		a.tr = &r.tr;
		unsigned wa = 1 + (unsigned)th_rng_below(&rng, 3);
		a.workers = wa;
		add_map(p, "a", &a, wa, (int)th_rng_below(&rng, 2), 8);
		add_map(p, "b", &b, 1, 0, 8);
		trun_sink(&r, 0);
		struct cpat_token *tok = mktok();
		struct ext_cancel e = {0, tok,
				       (unsigned)th_rng_below(&rng, 20000)};
		assert_int_equal(cpat_pipeline_start(p, tok, CPAT_FOREVER), 0);
		th_spawn(&e.t, ext_cancel_main, &e);
		int rc = cpat_pipeline_wait(p, &r.res);
		th_join(e.t);
		if (rc == 0) {
			completed++;
			if (r.res.not_processed != 0 || r.res.produced != n)
				fail_msg("trial %ld: rc 0 but produced %llu of "
					 "%llu, not processed %llu",
					 t, (unsigned long long)r.res.produced,
					 (unsigned long long)n,
					 (unsigned long long)
						 r.res.not_processed);
		} else {
			cancelled++;
			assert_int_equal(rc, -ECANCELED);
		}
		assert_int_equal(r.res.rc, rc);
		assert_accounting(&r.tr, &r.res);
		trun_free(&r);
		cpat_token_unref(tok);
	}
	fprintf(stderr, "# %ld cancelled, %ld completed\n", cancelled,
		completed);
	assert_true(cancelled > 0);
}

/* The window made wide: a callback on the caller's token holds its firing
 * thread (which runs the pipeline's own callback after it) until the test
 * has seen cpat_pipeline_wait() return (th_held_cancel). */
struct held_sink_arg {
	struct th_held_cancel held;
	_Atomic int sink_in;
};

/* The sink takes the first item and keeps it until the token has fired,
 * so that no thread of the pipeline is parked when it fires (a parked one
 * would wait for its own callback, queued behind the held one). */
static int held_sink(const void *item, void *arg)
{
	(void)item;
	struct held_sink_arg *h = arg;
	atomic_store(&h->sink_in, 1);
	/* Until the callbacks run: by then the pipeline's own token has its
	 * status too (the caller's token gets it a moment before its
	 * children). */
	while (!th_held_fired(&h->held))
		th_relax();
	return 0;
}

TH_TEST_FN(pipeline_cancel_seen_before_its_callback_ran_is_still_reported)
{
	(void)state;
	struct held_sink_arg h;
	atomic_init(&h.sink_in, 0);
	struct cpat_token *tok = mktok();
	assert_int_equal(th_held_init(&h.held, tok), 0);
	struct cpat_pipeline *p = mkfeedpipe(4, NULL, NULL);
	assert_int_equal(cpat_pipeline_set_sink(p, held_sink, &h), 0);
	assert_int_equal(cpat_pipeline_start(p, tok, CPAT_FOREVER), 0);
	uint64_t v = 7;
	assert_int_equal(cpat_pipeline_feed(p, &v, NULL), 0);
	while (!atomic_load(&h.sink_in))
		th_relax();
	/* Fired, and its firing thread held before the pipeline's callback. */
	th_held_fire(&h.held);
	struct cpat_pipeline_result res;
	int rc = cpat_pipeline_wait(p, &res);
	th_held_release(&h.held);
	/* The input never ended: the run was cut by the cancel. */
	assert_int_equal(rc, -ECANCELED);
	assert_int_equal(res.rc, -ECANCELED);
	assert_int_equal(res.produced, 1);
	assert_int_equal(res.delivered, 1);
	cpat_pipeline_destroy(p);
	cpat_token_unref(tok);
}

/* A cancel made by the source or the sink while cpat_pipeline_start() may
 * not have returned yet (the first items) still stops the pipeline: the
 * pipeline is running from the moment its first thread runs. Repeated to
 * catch the window between the threads starting and start returning. */
TH_TEST_FN(pipeline_cancel_from_source_or_sink_right_at_start_is_not_lost)
{
	(void)state;
	long trials = SIZE(2000, 200);
	long lost = 0, first_lost = -1;
	for (long t = 0; t < trials; t++) {
		struct gen g;
		struct cpat_pipeline *p = mkgenpipe(&g, 1000, 64, NULL, NULL);
		struct sink s;
		set_sink(p, &s, 0);
		if (t % 2) {
			g.cancel_at = 0;
			g.cancel_p = p;
		} else {
			s.cancel_at = 0;
			s.cancel_p = p;
		}
		struct cpat_pipeline_result res;
		int rc = cpat_pipeline_run(p, NULL, CPAT_FOREVER, &res);
		if (rc != -ECANCELED) {
			if (first_lost < 0)
				first_lost = t;
			lost++;
		}
		cpat_pipeline_destroy(p);
	}
	if (lost)
		fail_msg("%ld of %ld cancels lost (rc 0, all delivered), first "
			 "at trial %ld",
			 lost, trials, first_lost);
}

/* ---- errors ------------------------------------------------------------- */

TH_TEST_FN(pipeline_stage2_error_with_upstream_blocked_reports_name_and_index)
{
	(void)state;
	long thr = th_count_threads();
	const uint64_t n = 1000000;
	struct trun r;
	struct cpat_pipeline *p = trun_init(&r, n, 2, 1);
	struct scfg a, b;
	scfg_init(&a);
	scfg_init(&b);
	b.fail_at = 3;
	b.fail_rc = -EIO;
	b.gen = &r.g;
	/* Items 0..2 are delivered; while stage 2 holds item 3, the
	 * source, the channel after it (capacity 1), stage 1 and the channel
	 * after it (capacity 1) fill: the source makes items up to 3 + 4 and
	 * then blocks in its send. */
	b.fail_wait_made = 3 + 5;
	add_map(p, "stage-one", &a, 1, 0, 1);
	add_map(p, "stage-two", &b, 1, 0, 1);
	struct sink *s = trun_sink(&r, 16);
	/* ... and the sink has taken items 0..2. */
	b.wait_seen = &s->seen;
	b.wait_sink_n = 3;
	int rc = trun_run(&r, NULL, CPAT_FOREVER);
	assert_int_equal(rc, -EIO);
	assert_int_equal(r.res.rc, -EIO);
	assert_string_equal(r.res.stage, "stage-two");
	assert_int_equal(r.res.item_index, 3);
	assert_int_equal(s->count, 3);
	assert_int_equal(r.res.delivered, 3);
	/* The source stopped soon after it blocked. */
	assert_true(atomic_load(&r.g.made) < 3 + 5 + 64);
	assert_accounting(&r.tr, &r.res);
	assert_no_threads_left(thr);
	trun_free(&r);
}

TH_TEST_FN(pipeline_source_and_sink_errors_report_source_and_sink)
{
	(void)state;
	for (int where = 0; where < 2; where++) {
		struct trun r;
		struct cpat_pipeline *p = trun_init(&r, 1000, 1, 4);
		if (where == 0) {
			r.g.fail_at = 7;
			r.g.fail_rc = -ENOSPC;
		}
		struct scfg a;
		scfg_init(&a);
		add_map(p, "only", &a, 2, 1, 4);
		struct sink *s = trun_sink(&r, 1000);
		if (where == 1) {
			s->fail_at = 5;
			s->fail_rc = -ENOSPC;
		}
		assert_int_equal(trun_run(&r, NULL, CPAT_FOREVER), -ENOSPC);
		assert_int_equal(r.res.rc, -ENOSPC);
		if (where == 0) {
			assert_string_equal(r.res.stage, "source");
			assert_int_equal(r.res.item_index, 7);
			assert_true(r.res.produced <= 7);
		} else {
			assert_string_equal(r.res.stage, "sink");
			assert_int_equal(r.res.item_index, 5);
			assert_int_equal(s->count, 5);
			assert_int_equal(r.res.delivered, 5);
		}
		assert_int_equal(atomic_load(&r.g.calls_after_end), 0);
		/* The sink's failing item is not delivered: it counts as not
		 * processed (the drop callback may see it at the sink). */
		assert_int_equal(r.res.produced, r.res.delivered +
							 r.res.filtered +
							 r.res.not_processed);
		trun_free(&r);
	}
}

/* A slow consumer: the sink takes 20 us per item. Memory does not grow
 * (no allocation at all while items flow), the source is held back by the
 * bounded channels, and nothing is dropped. */
TH_TEST_FN(
	pipeline_slow_consumer_bounded_memory_producers_block_nothing_dropped)
{
	(void)state;
	uint64_t n = (uint64_t)SIZE(3000, 600);
	struct trun r;
	struct cpat_pipeline *p = trun_init(&r, n, 2, 4);
	struct scfg a, b;
	scfg_init(&a);
	scfg_init(&b);
	add_map(p, "a", &a, 2, 0, 4);
	add_map(p, "b", &b, 2, 1, 4);
	struct sink *s = trun_sink(&r, n);
	s->spin = 20 * CPAT_USEC;
	s->gen = &r.g;
	s->watch = 1;
	s->watch_from = 50;
	assert_int_equal(trun_run(&r, NULL, CPAT_FOREVER), 0);
	assert_int_equal(s->count, n);
	assert_int_equal(r.res.delivered, n);
	assert_int_equal(r.res.not_processed, 0);
	assert_accounting(&r.tr, &r.res);
	/* Flat: not one allocation between item 50 and the last. */
	assert_int_equal(s->live_max, s->live_min);
	assert_int_equal(s->calls_max, s->calls_min);
	/* Held back: the source is never further ahead of the sink than
	 * what the channels (4 + 4 + 4) and the threads (source, 2 + 2
	 * workers, sink, ordered reorder slots) can hold, with slack for
	 * workers that take a few items at a time: 64, against 3000. */
	if (s->max_ahead > 64)
		fail_msg("the source ran %llu items ahead of the sink",
			 (unsigned long long)s->max_ahead);
	trun_free(&r);
}

/* ---- feed source and output sink ---------------------------------------- */

struct feeder {
	struct th_barrier *start;
	struct cpat_pipeline *p;
	struct cpat_token *tok;
	uint64_t base; /* items are base + 0, 1, 2, ... */
	uint64_t ok;
	int rc;
};

static void *feeder_main(void *arg)
{
	struct feeder *f = arg;
	th_barrier_wait(f->start);
	for (uint64_t i = 0;; i++) {
		uint64_t v = f->base + i;
		int rc = cpat_pipeline_feed(f->p, &v, f->tok);
		if (rc != 0) {
			f->rc = rc;
			break;
		}
		f->ok++;
	}
	return NULL;
}

/* The consumer reads 10 items from the output, then cancels: the feeder,
 * blocked on a full pipeline, returns -EPIPE (the pipeline has stopped);
 * a feeder with its own token, cancelled, returns -ECANCELED. */
TH_TEST_FN(pipeline_consumer_stops_and_cancels_feed_unblocks_with_error)
{
	(void)state;
	for (int variant = 0; variant < 2; variant++) {
		long thr = th_count_threads();
		struct track tr;
		track_init(&tr, 1u << 20, 1);
		struct cpat_pipeline *p = mkfeedpipe(2, track_drop, &tr);
		struct scfg a;
		scfg_init(&a);
		a.check_index = 1;
		add_map(p, "a", &a, 2, 1, 2);
		assert_int_equal(cpat_pipeline_set_output(p), 0);
		assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), 0);
		struct cpat_chan *out = cpat_pipeline_output(p);
		assert_non_null(out);
		struct th_crew crew;
		th_crew_init(&crew, 1);
		struct feeder f = {.start = &crew.start, .p = p};
		if (variant == 1)
			f.tok = mktok();
		th_crew_add(&crew, feeder_main, &f);
		th_crew_go(&crew);
		uint64_t v, received = 0;
		for (int i = 0; i < 10; i++) {
			assert_int_equal(cpat_chan_recv(out, &v, NULL), 0);
			assert_int_equal(v, (uint64_t)i);
			track_mark(&tr, v, ST_DELIVERED);
			received++;
		}
		if (variant == 0)
			assert_int_equal(cpat_pipeline_cancel(p), 0);
		else
			cpat_token_cancel(f.tok);
		th_crew_join(&crew);
		assert_int_equal(f.rc, variant == 0 ? -EPIPE : -ECANCELED);
		if (variant == 1) {
			/* The pipeline itself still runs: end it. */
			assert_int_equal(cpat_pipeline_feed_close(p), 0);
		}
		/* Drain the output until it closes. */
		int rc;
		while ((rc = cpat_chan_recv(out, &v, NULL)) == 0) {
			track_mark(&tr, v, ST_DELIVERED);
			received++;
		}
		assert_int_equal(rc, -EPIPE);
		struct cpat_pipeline_result res;
		rc = cpat_pipeline_wait(p, &res);
		assert_int_equal(rc, variant == 0 ? -ECANCELED : 0);
		assert_int_equal(res.produced, f.ok);
		assert_int_equal(res.produced, res.delivered + res.filtered +
						       res.not_processed);
		assert_int_equal(res.delivered, received);
		assert_int_equal(atomic_load(&tr.conflicts), 0);
		assert_int_equal(atomic_load(&tr.dropped), res.not_processed);
		if (variant == 1)
			assert_int_equal(received, f.ok);
		/* Every pipeline thread has exited when wait returns. */
		assert_no_threads_left(thr);
		cpat_pipeline_destroy(p);
		cpat_token_unref(f.tok);
		track_free(&tr);
		assert_no_threads_left(thr);
	}
}

/* Three feeders blocked on a full pipeline: the consumer cancels, every
 * feeder returns -EPIPE; per-feeder order is kept through an ordered
 * stage; every fed item is delivered or not processed. */
TH_TEST_FN(pipeline_consumer_cancel_unblocks_three_feeders_with_epipe)
{
	(void)state;
	enum { F = 3 };
	long thr = th_count_threads();
	struct cpat_pipeline *p = mkfeedpipe(2, NULL, NULL);
	struct scfg a;
	scfg_init(&a);
	add_map(p, "a", &a, 2, 1, 2);
	assert_int_equal(cpat_pipeline_set_output(p), 0);
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), 0);
	struct cpat_chan *out = cpat_pipeline_output(p);
	assert_non_null(out);
	struct th_crew crew;
	th_crew_init(&crew, F);
	struct feeder f[F];
	for (int i = 0; i < F; i++)
		f[i] = (struct feeder){.start = &crew.start,
				       .p = p,
				       .base = (uint64_t)i << 32};
	th_crew_add_n(&crew, F, feeder_main, f, sizeof f[0]);
	th_crew_go(&crew);
	uint64_t next[F] = {0}, received = 0, bad = 0, v;
	for (int i = 0; i < 30; i++) {
		assert_int_equal(cpat_chan_recv(out, &v, NULL), 0);
		uint64_t id = v >> 32;
		if (id >= F || (v & 0xffffffffu) < next[id])
			bad++;
		else
			next[id] = (v & 0xffffffffu) + 1;
		received++;
	}
	assert_int_equal(cpat_pipeline_cancel(p), 0);
	th_crew_join(&crew);
	int rc;
	while ((rc = cpat_chan_recv(out, &v, NULL)) == 0) {
		uint64_t id = v >> 32;
		if (id >= F || (v & 0xffffffffu) < next[id])
			bad++;
		else
			next[id] = (v & 0xffffffffu) + 1;
		received++;
	}
	assert_int_equal(rc, -EPIPE);
	struct cpat_pipeline_result res;
	assert_int_equal(cpat_pipeline_wait(p, &res), -ECANCELED);
	uint64_t fed = 0;
	for (int i = 0; i < F; i++) {
		assert_int_equal(f[i].rc, -EPIPE);
		fed += f[i].ok;
	}
	assert_int_equal(bad, 0);
	assert_int_equal(res.produced, fed);
	assert_int_equal(res.delivered, received);
	assert_int_equal(res.produced,
			 res.delivered + res.filtered + res.not_processed);
	assert_no_threads_left(thr);
	cpat_pipeline_destroy(p);
}

TH_TEST_FN(pipeline_deadline_gives_etimedout_and_accounts_every_item)
{
	(void)state;
	long thr = th_count_threads();
	const uint64_t n = 1u << 22;
	struct trun r;
	struct cpat_pipeline *p = trun_init(&r, n, 2, 8);
	struct scfg a, b;
	scfg_init(&a);
	scfg_init(&b);
	a.spin = 50 * CPAT_USEC;
	b.skip_mod = 3;
	b.tr = &r.tr;
	add_map(p, "work", &a, 2, 0, 8);
	add_map(p, "filter", &b, 1, 1, 8);
	trun_sink(&r, 0);
	int64_t deadline = cpat_now_ns() + 60 * CPAT_MSEC;
	int rc = trun_run(&r, NULL, deadline);
	int64_t done = cpat_now_ns();
	assert_int_equal(rc, -ETIMEDOUT);
	assert_int_equal(r.res.rc, -ETIMEDOUT);
	assert_true(done >= deadline);
	/* (Not asserted: that anything was produced. On a loaded machine
	 * the source may not run within 60 ms.) */
	assert_true(r.res.produced < n);
	assert_accounting(&r.tr, &r.res);
	assert_no_threads_left(thr);
	trun_free(&r);
}

/* Destroy of a running pipeline cancels it and waits. */
TH_TEST_FN(pipeline_destroy_while_running_cancels_and_joins)
{
	(void)state;
	long thr = th_count_threads(), live = th_alloc_live();
	struct gen g;
	struct cpat_pipeline *p = mkgenpipe(&g, UINT64_MAX, 2, NULL, NULL);
	struct scfg a;
	scfg_init(&a);
	add_map(p, "a", &a, 2, 0, 2);
	struct sink s;
	set_sink(p, &s, 0);
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), 0);
	while (atomic_load(&g.made) < 100)
		th_relax();
	cpat_pipeline_destroy(p);
	assert_no_threads_left(thr);
	assert_int_equal(th_alloc_live(), live);
}

/* ---- batching ----------------------------------------------------------- */

#define MAXB 64
struct bsink {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int nb;
	size_t count[MAXB];
	uint64_t first[MAXB];
	int64_t at[MAXB];
	int contents_ok;
	uint64_t next_item; /* items arrive in order across batches */
};

static void bsink_init(struct bsink *s)
{
	memset(s, 0, sizeof *s);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	s->contents_ok = 1;
}

static void bsink_destroy(struct bsink *s)
{
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
}

static int bsink_fn(const void *item, void *arg)
{
	struct bsink *s = arg;
	const struct cpat_batch *b = item;
	int64_t now = cpat_now_ns();
	pthread_mutex_lock(&s->mu);
	if (s->nb < MAXB) {
		s->count[s->nb] = b->count;
		s->first[s->nb] = b->first_index;
		s->at[s->nb] = now;
	}
	if (b->item_size != sizeof(uint64_t) || b->first_index != s->next_item)
		s->contents_ok = 0;
	for (size_t i = 0; i < b->count; i++)
		if (*(const uint64_t *)cpat_batch_item(b, i) !=
		    s->next_item + i)
			s->contents_ok = 0;
	s->next_item += b->count;
	s->nb++;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return 0;
}

static void bsink_wait(struct bsink *s, int nb)
{
	pthread_mutex_lock(&s->mu);
	while (s->nb < nb)
		pthread_cond_wait(&s->cv, &s->mu);
	pthread_mutex_unlock(&s->mu);
}

static struct cpat_pipeline *mkbatch(size_t max_items, int64_t flush_ns,
				     int flush_on_cancel, int feed,
				     struct gen *g, struct bsink *s,
				     struct track *tr)
{
	struct cpat_pipeline *p;
	if (feed) {
		p = mkfeedpipe(16, tr ? track_drop : NULL, tr);
	} else {
		p = mkpipe(16, tr ? track_drop : NULL, tr);
		assert_int_equal(cpat_pipeline_set_generator(p, gen_fn, g), 0);
	}
	add_batch(p, max_items, flush_ns, flush_on_cancel, 0);
	assert_int_equal(cpat_pipeline_set_sink(p, bsink_fn, s), 0);
	return p;
}

TH_TEST_FN(pipeline_batch_defaults_and_size)
{
	(void)state;
	struct cpat_batch_opts bo;
	memset(&bo, 0x5a, sizeof bo);
	cpat_batch_opts_init(&bo);
	assert_int_equal(bo.max_items, 100);
	assert_true(bo.flush_ns == CPAT_SEC);
	assert_int_equal(bo.flush_on_cancel, 0);
	assert_int_equal(bo.out_capacity, 4);
	assert_true(cpat_batch_size(100, 8) >=
		    sizeof(struct cpat_batch) + 100 * 8);
	assert_int_equal(cpat_batch_size(SIZE_MAX / 2, 8), 0);
	assert_int_equal(cpat_batch_size(2, SIZE_MAX), 0);
	struct cpat_stage_opts so;
	memset(&so, 0x5a, sizeof so);
	cpat_stage_opts_init(&so);
	assert_int_equal(so.workers, 1);
	assert_int_equal(so.ordered, 0);
	assert_int_equal(so.out_capacity, 64);
	assert_null(so.map);
	assert_null(so.flat);
	struct cpat_pipeline_opts po;
	memset(&po, 0x5a, sizeof po);
	cpat_pipeline_opts_init(&po);
	assert_int_equal(po.source_capacity, 64);
	assert_null(po.drop);
	cpat_batch_opts_init(NULL);
	cpat_stage_opts_init(NULL);
	cpat_pipeline_opts_init(NULL);
}

TH_TEST_FN(pipeline_batch_flushes_by_count_100_100_then_50_at_end)
{
	(void)state;
	struct gen g;
	gen_init(&g, 250);
	struct bsink s;
	bsink_init(&s);
	struct cpat_pipeline *p =
		mkbatch(100, CPAT_FOREVER, 0, 0, &g, &s, NULL);
	struct cpat_pipeline_result res;
	assert_int_equal(cpat_pipeline_run(p, NULL, CPAT_FOREVER, &res), 0);
	assert_int_equal(s.nb, 3);
	assert_int_equal(s.count[0], 100);
	assert_int_equal(s.count[1], 100);
	assert_int_equal(s.count[2], 50);
	assert_int_equal(s.first[0], 0);
	assert_int_equal(s.first[1], 100);
	assert_int_equal(s.first[2], 200);
	assert_true(s.contents_ok);
	assert_int_equal(res.produced, 250);
	assert_int_equal(res.delivered, 3);
	assert_int_equal(res.not_processed, 0);
	cpat_pipeline_destroy(p);
	bsink_destroy(&s);
}

/* Items trickle in one at a time: each is flushed alone by the timer, not
 * before the interval has passed since it was fed; a burst of 3 fed back
 * to back goes out after the interval too; the remainder at close. */
TH_TEST_FN(pipeline_batch_flushes_by_time_trickling_feed_not_before_interval)
{
	(void)state;
	const int64_t interval = 20 * CPAT_MSEC;
	struct bsink s;
	bsink_init(&s);
	struct cpat_pipeline *p = mkbatch(100, interval, 0, 1, NULL, &s, NULL);
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), 0);
	int64_t fed[8];
	uint64_t item = 0;
	for (int i = 0; i < 5; i++) {
		fed[i] = cpat_now_ns();
		assert_int_equal(cpat_pipeline_feed(p, &item, NULL), 0);
		item++;
		bsink_wait(&s, i + 1);
	}
	/* A burst. */
	int64_t burst = cpat_now_ns();
	for (int i = 0; i < 3; i++, item++)
		assert_int_equal(cpat_pipeline_feed(p, &item, NULL), 0);
	pthread_mutex_lock(&s.mu);
	while (s.next_item < item)
		pthread_cond_wait(&s.cv, &s.mu);
	int nb_burst = s.nb;
	pthread_mutex_unlock(&s.mu);
	/* The remainder at close: two items, well before the interval. */
	for (int i = 0; i < 2; i++, item++)
		assert_int_equal(cpat_pipeline_feed(p, &item, NULL), 0);
	assert_int_equal(cpat_pipeline_feed_close(p), 0);
	struct cpat_pipeline_result res;
	assert_int_equal(cpat_pipeline_wait(p, &res), 0);
	assert_true(s.contents_ok);
	assert_int_equal(s.next_item, 10);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(s.count[i], 1);
		assert_int_equal(s.first[i], (uint64_t)i);
		if (s.at[i] - fed[i] < interval)
			fail_msg("batch %d flushed %lld ns after its item, "
				 "interval %lld",
				 i, (long long)(s.at[i] - fed[i]),
				 (long long)interval);
	}
	assert_true(nb_burst >= 6 && nb_burst <= 8);
	for (int i = 5; i < nb_burst; i++)
		assert_true(s.at[i] - burst >= interval);
	assert_int_equal(s.nb, nb_burst + 1);
	assert_int_equal(s.count[nb_burst], 2);
	assert_int_equal(res.produced, 10);
	assert_int_equal(res.delivered, (uint64_t)s.nb);
	cpat_pipeline_destroy(p);
	bsink_destroy(&s);
}

/* Waits until the stage @p i has taken @p k items (stats snapshot). */
static void wait_stage_in(struct cpat_pipeline *p, int i, uint64_t k)
{
	struct cpat_stage_stats st[4];
	for (;;) {
		int n = cpat_pipeline_stats(p, st, 4);
		if (n > i && st[i].items_in >= k)
			return;
		th_relax();
	}
}

struct count_drop {
	_Atomic uint64_t n;
	_Atomic uint64_t bad_stage;
};

static void count_drop_fn(const void *item, unsigned stage, void *arg)
{
	(void)item;
	struct count_drop *c = arg;
	if (stage > 2)
		atomic_fetch_add(&c->bad_stage, 1);
	atomic_fetch_add(&c->n, 1);
}

TH_TEST_FN(pipeline_batch_flush_on_cancel_passes_partial_batch_else_drops_it)
{
	(void)state;
	/* shape 0: feed -> batch; shape 1: feed -> map -> batch. (A
	 * generator that pauses cannot be used: the source may hold the
	 * items it made while the generator is in its call.) */
	for (int src = 1; src >= 0; src--) {
		for (int foc = 0; foc < 2; foc++) {
			struct bsink s;
			bsink_init(&s);
			struct count_drop cd = {0};
			struct cpat_pipeline *p =
				mkfeedpipe(0, count_drop_fn, &cd);
			struct scfg a;
			scfg_init(&a);
			if (src == 1)
				add_map(p, "map", &a, 1, 0, 64);
			add_batch(p, 100, CPAT_FOREVER, foc, 0);
			assert_int_equal(
				cpat_pipeline_set_sink(p, bsink_fn, &s), 0);
			assert_int_equal(
				cpat_pipeline_start(p, NULL, CPAT_FOREVER), 0);
			for (uint64_t i = 0; i < 30; i++)
				assert_int_equal(
					cpat_pipeline_feed(p, &i, NULL), 0);
			wait_stage_in(p, src, 30);
			pthread_mutex_lock(&s.mu);
			int nb_before = s.nb;
			pthread_mutex_unlock(&s.mu);
			assert_int_equal(nb_before, 0); /* not full, no timer */
			assert_int_equal(cpat_pipeline_cancel(p), 0);
			struct cpat_pipeline_result res;
			assert_int_equal(cpat_pipeline_wait(p, &res),
					 -ECANCELED);
			assert_int_equal(res.produced, 30);
			assert_int_equal(atomic_load(&cd.bad_stage), 0);
			/* Whatever unit the drop callback is given (the items
			 * or the batch), it saw what is counted. */
			assert_int_equal(atomic_load(&cd.n), res.not_processed);
			if (foc) {
				if (s.nb != 1)
					fail_msg("%s, flush_on_cancel: "
						 "sink saw %d batches, "
						 "not_processed %llu",
						 src ? "feed-map-batch"
						     : "feed-batch",
						 s.nb,
						 (unsigned long long)
							 res.not_processed);
				assert_int_equal(s.count[0], 30);
				assert_int_equal(s.first[0], 0);
				assert_true(s.contents_ok);
				assert_int_equal(res.delivered, 1);
			} else {
				assert_int_equal(s.nb, 0);
				assert_int_equal(res.delivered, 0);
				assert_true(res.not_processed > 0);
			}
			cpat_pipeline_destroy(p);
			bsink_destroy(&s);
		}
	}
}

/* A partial batch pending behind full ones when the pipeline is cancelled,
 * with an ordered two-worker stage in front: with a callback sink the
 * partial batch follows the full ones; with an output channel it goes in
 * if there is room, else it is dropped as one item. Either way every item
 * is accounted exactly once: produced = delivered + not_processed +
 * batched. */
TH_TEST_FN(
	pipeline_batch_flush_on_cancel_partial_batch_after_full_ones_accounted_exactly)
{
	(void)state;
	const uint64_t nfed = 25, maxb = 10;
	/* shape 0: callback sink; 1: output channel with room (4); 2:
	 * output channel full with the two full batches (2). */
	for (int shape = 0; shape < 3; shape++) {
		struct bsink s;
		bsink_init(&s);
		struct count_drop cd = {0};
		struct cpat_pipeline *p = mkfeedpipe(0, count_drop_fn, &cd);
		struct scfg a;
		scfg_init(&a);
		a.check_index = 1;
		add_map(p, "map", &a, 2, 1, 64);
		add_batch(p, maxb, CPAT_FOREVER, 1, shape == 2 ? 2 : 4);
		if (shape == 0)
			assert_int_equal(
				cpat_pipeline_set_sink(p, bsink_fn, &s), 0);
		else
			assert_int_equal(cpat_pipeline_set_output(p), 0);
		assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), 0);
		for (uint64_t i = 0; i < nfed; i++)
			assert_int_equal(cpat_pipeline_feed(p, &i, NULL), 0);
		/* The batch stage holds the last 5, the 20 before are in two
		 * full batches (at the sink, or in the output channel). */
		wait_stage_in(p, 1, nfed);
		if (shape == 0)
			bsink_wait(&s, 2);
		assert_int_equal(cpat_pipeline_cancel(p), 0);
		struct cpat_pipeline_result res;
		assert_int_equal(cpat_pipeline_wait(p, &res), -ECANCELED);
		if (shape > 0) {
			/* Read what the output channel holds. */
			struct cpat_chan *out = cpat_pipeline_output(p);
			size_t bsz = cpat_batch_size(maxb, sizeof(uint64_t));
			struct cpat_batch *b = malloc(bsz);
			assert_non_null(b);
			while (cpat_chan_try_recv(out, b) == 0)
				bsink_fn(b, &s);
			free(b);
		}
		assert_int_equal(res.produced, nfed);
		assert_int_equal(atomic_load(&cd.bad_stage), 0);
		assert_int_equal(atomic_load(&cd.n), res.not_processed);
		assert_int_equal(res.filtered, 0);
		assert_int_equal(res.expanded, 0);
		assert_int_equal(res.produced + res.expanded,
				 res.delivered + res.filtered +
					 res.not_processed + res.batched);
		assert_true(s.contents_ok);
		assert_int_equal(s.count[0], maxb);
		assert_int_equal(s.count[1], maxb);
		/* batched counts count - 1 for every batch made, the partial
		 * one too (flushed or dropped as a unit). */
		assert_int_equal(res.batched, nfed - 3);
		if (shape < 2) {
			assert_int_equal(s.nb, 3);
			assert_int_equal(s.count[2], nfed - 2 * maxb);
			assert_int_equal(s.first[2], 2 * maxb);
			assert_int_equal(res.delivered, 3);
			assert_int_equal(res.not_processed, 0);
		} else {
			assert_int_equal(s.nb, 2);
			assert_int_equal(res.delivered, 2);
			assert_int_equal(res.not_processed, 1);
		}
		cpat_pipeline_destroy(p);
		bsink_destroy(&s);
	}
}

/* ---- statistics and report ---------------------------------------------- */

/* Finds the line of @p buf that mentions "bottleneck" (any case). */
static const char *bottleneck_line(const char *buf, size_t *len)
{
	const char *line = buf;
	while (*line) {
		const char *end = strchr(line, '\n');
		size_t l = end ? (size_t)(end - line) : strlen(line);
		for (size_t i = 0; i + 10 <= l; i++)
			if (strncasecmp(line + i, "bottleneck", 10) == 0) {
				*len = l;
				return line;
			}
		if (!end)
			break;
		line = end + 1;
	}
	return NULL;
}

static int line_has(const char *line, size_t len, const char *word)
{
	size_t w = strlen(word);
	for (size_t i = 0; i + w <= len; i++)
		if (memcmp(line + i, word, w) == 0)
			return 1;
	return 0;
}

TH_TEST_FN(pipeline_stats_consistent_report_names_slowest_stage_bottleneck)
{
	(void)state;
	uint64_t n = (uint64_t)SIZE(2000, 500);
	struct gen g;
	struct cpat_pipeline *p = mkgenpipe(&g, n, 8, NULL, NULL);
	struct scfg a, b, c;
	scfg_init(&a);
	scfg_init(&b);
	scfg_init(&c);
	a.skip_mod = 10;
	b.spin = 20 * CPAT_USEC;
	add_map(p, "alpha", &a, 1, 0, 8);
	add_map(p, "SLOWSTAGE", &b, 1, 0, 8);
	add_map(p, "omega", &c, 2, 0, 8);
	struct sink s;
	set_sink(p, &s, 0);
	struct cpat_pipeline_result res;
	assert_int_equal(cpat_pipeline_run(p, NULL, CPAT_FOREVER, &res), 0);
	struct cpat_stage_stats st[4];
	memset(st, 0, sizeof st);
	assert_int_equal(cpat_pipeline_stats(p, st, 4), 3);
	assert_int_equal(cpat_pipeline_stats(p, st, 1), 3); /* n < count */
	assert_int_equal(cpat_pipeline_stats(p, st, 4), 3);
	assert_string_equal(st[0].name, "alpha");
	assert_string_equal(st[1].name, "SLOWSTAGE");
	assert_string_equal(st[2].name, "omega");
	assert_int_equal(st[0].workers, 1);
	assert_int_equal(st[2].workers, 2);
	uint64_t kept = n - (n + 9) / 10;
	assert_int_equal(st[0].items_in, n);
	assert_int_equal(st[0].filtered, n - kept);
	assert_int_equal(st[0].items_out, kept);
	assert_int_equal(st[1].items_in, kept);
	assert_int_equal(st[1].items_out, kept);
	assert_int_equal(st[2].items_in, kept);
	assert_int_equal(st[2].items_out, kept);
	assert_int_equal(res.delivered, kept);
	assert_int_equal(res.filtered, n - kept);
	for (int i = 0; i < 3; i++) {
		assert_true(st[i].utilisation >= 0.0);
		assert_true(st[i].utilisation <= 1.0 + 1e-9);
	}
	/* The slow stage was busy at least 20 us per item. */
	assert_true(st[1].busy_ns >= kept * 20 * (uint64_t)CPAT_USEC);
	assert_true(st[1].busy_ns > st[0].busy_ns);
	assert_true(st[1].busy_ns > st[2].busy_ns / 2);
	/* Report: named bottleneck, snprintf semantics. */
	int len = cpat_pipeline_report(p, NULL, 0);
	assert_true(len > 0);
	char *buf = malloc((size_t)len + 1);
	assert_int_equal(cpat_pipeline_report(p, buf, (size_t)len + 1), len);
	assert_int_equal(strlen(buf), (size_t)len);
	size_t ll = 0;
	const char *line = bottleneck_line(buf, &ll);
	if (!line)
		fail_msg("no bottleneck line in report:\n%s", buf);
	if (!line_has(line, ll, "SLOWSTAGE") || line_has(line, ll, "alpha") ||
	    line_has(line, ll, "omega"))
		fail_msg("bottleneck line does not name SLOWSTAGE alone:\n%s",
			 buf);
	assert_non_null(strstr(buf, "alpha"));
	assert_non_null(strstr(buf, "omega"));
	char small[8];
	memset(small, 'x', sizeof small);
	assert_int_equal(cpat_pipeline_report(p, small, sizeof small), len);
	assert_int_equal(small[7], '\0');
	assert_memory_equal(small, buf, 7);
	free(buf);
	cpat_pipeline_destroy(p);
}

/* A slow source starves the stage after it; a slow sink blocks the stage
 * before it: both times are measured (one-sided: at least half of the
 * time the slow end spent). The slow ends sleep 50 us per item, leaving
 * the CPU to the others (a spinning one on 2 cores makes the stage wait
 * for the CPU, not for its neighbour). */
static int slow_gen(void *out, void *arg)
{
	struct gen *g = arg;
	if (g->next >= g->n)
		return 0;
	work_us(50); /* sleeps: the CPU is left to the other threads */
	*(uint64_t *)out = g->next++;
	return 1;
}

TH_TEST_FN(
	pipeline_stats_measure_starved_behind_slow_source_blocked_by_slow_sink)
{
	(void)state;
	const uint64_t n = (uint64_t)SIZE(400, 200);
	const int64_t per = 50 * CPAT_USEC;
	for (int slow_sink = 0; slow_sink < 2; slow_sink++) {
		struct gen g;
		gen_init(&g, n);
		struct cpat_pipeline *p = mkpipe(2, NULL, NULL);
		assert_int_equal(cpat_pipeline_set_generator(
					 p, slow_sink ? gen_fn : slow_gen, &g),
				 0);
		struct scfg a;
		scfg_init(&a);
		add_map(p, "middle", &a, 1, 0, 2);
		struct sink s;
		set_sink(p, &s, 0);
		if (slow_sink)
			s.sleep_us = per / CPAT_USEC;
		struct cpat_pipeline_result res;
		assert_int_equal(cpat_pipeline_run(p, NULL, CPAT_FOREVER, &res),
				 0);
		struct cpat_stage_stats st;
		assert_int_equal(cpat_pipeline_stats(p, &st, 1), 1);
		assert_int_equal(st.items_in, n);
		uint64_t half = n * (uint64_t)per / 2;
		if (slow_sink) {
			if (st.blocked_ns < half)
				fail_msg("blocked %llu ns behind a sink that "
					 "took %llu ns (busy %llu, starved "
					 "%llu, items out %llu)",
					 (unsigned long long)st.blocked_ns,
					 (unsigned long long)(n * per),
					 (unsigned long long)st.busy_ns,
					 (unsigned long long)st.starved_ns,
					 (unsigned long long)st.items_out);
		} else {
			if (st.starved_ns < half)
				fail_msg("starved %llu ns behind a source that "
					 "took %llu ns (busy %llu, blocked "
					 "%llu)",
					 (unsigned long long)st.starved_ns,
					 (unsigned long long)(n * per),
					 (unsigned long long)st.busy_ns,
					 (unsigned long long)st.blocked_ns);
		}
		assert_true(st.utilisation < 0.5);
		cpat_pipeline_destroy(p);
	}
}

/* A long stage name is truncated, not overflowed, in stats and errors. */
TH_TEST_FN(pipeline_long_stage_name_truncated_in_stats_and_result)
{
	(void)state;
	char name[100];
	memset(name, 'n', sizeof name - 1);
	name[sizeof name - 1] = '\0';
	struct gen g;
	struct cpat_pipeline *p = mkgenpipe(&g, 10, 4, NULL, NULL);
	struct scfg a;
	scfg_init(&a);
	a.fail_at = 2;
	a.fail_rc = -EIO;
	add_map(p, name, &a, 1, 0, 4);
	memset(name, 'z', 10); /* copied at add_stage */
	struct sink s;
	set_sink(p, &s, 0);
	struct cpat_pipeline_result res;
	assert_int_equal(cpat_pipeline_run(p, NULL, CPAT_FOREVER, &res), -EIO);
	assert_int_equal(strlen(res.stage), 31);
	for (int i = 0; i < 31; i++)
		assert_int_equal(res.stage[i], 'n');
	struct cpat_stage_stats st;
	assert_int_equal(cpat_pipeline_stats(p, &st, 1), 1);
	assert_int_equal(strlen(st.name), 31);
	assert_int_equal(st.name[0], 'n');
	cpat_pipeline_destroy(p);
}

/* The pipeline's threads carry names (top -H, gdb, perf): "cpat-source",
 * the stage's own name cut to 15 bytes, "cpat-sink". Each callback records
 * the name of the thread it runs on; the main thread reads them after
 * cpat_pipeline_run() has joined those threads. */
struct names {
	char src[16], stage[16], sink[16];
	int n;
};

static int names_gen(void *out, void *arg)
{
	struct names *nm = arg;
	if (nm->n == 3)
		return 0;
	if (nm->n++ == 0)
		pthread_getname_np(pthread_self(), nm->src, sizeof nm->src);
	*(uint64_t *)out = (uint64_t)nm->n;
	return 1;
}

static int names_map(const void *in, void *out, struct cpat_stage_ctx *ctx)
{
	struct names *nm = cpat_stage_arg(ctx);
	if (*(const uint64_t *)in == 1)
		pthread_getname_np(pthread_self(), nm->stage, sizeof nm->stage);
	*(uint64_t *)out = *(const uint64_t *)in;
	return CPAT_STAGE_EMIT;
}

static int names_sink(const void *item, void *arg)
{
	struct names *nm = arg;
	if (*(const uint64_t *)item == 1)
		pthread_getname_np(pthread_self(), nm->sink, sizeof nm->sink);
	return 0;
}

TH_TEST_FN(pipeline_threads_named_source_stage_sink)
{
	(void)state;
#ifdef __linux__
	struct names nm;
	memset(&nm, 0, sizeof nm);
	struct cpat_pipeline *p = mkpipe(0, NULL, NULL);
	assert_int_equal(cpat_pipeline_set_generator(p, names_gen, &nm), 0);
	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.name = "parse-stage-with-a-long-name";
	so.map = names_map;
	so.arg = &nm;
	so.out_size = sizeof(uint64_t);
	so.workers = 1;
	so.ordered = 1;
	assert_int_equal(cpat_pipeline_add_stage(p, &so), 0);
	assert_int_equal(cpat_pipeline_set_sink(p, names_sink, &nm), 0);
	struct cpat_pipeline_result res;
	assert_int_equal(cpat_pipeline_run(p, NULL, CPAT_FOREVER, &res), 0);
	assert_string_equal(nm.src, "cpat-source");
	assert_string_equal(nm.stage, "parse-stage-wit");
	assert_string_equal(nm.sink, "cpat-sink");
	cpat_pipeline_destroy(p);
#else
	skip();
#endif
}

/* ---- API errors --------------------------------------------------------- */

/* cpat_pipeline_wait() from one of the pipeline's own stages: -EBUSY. */
struct self_wait {
	struct cpat_pipeline *p;
	_Atomic int rc;
};

static int map_waits_own(const void *in, void *out, struct cpat_stage_ctx *ctx)
{
	struct self_wait *w = cpat_stage_arg(ctx);
	int expected = 1;
	atomic_compare_exchange_strong(&w->rc, &expected,
				       cpat_pipeline_wait(w->p, NULL));
	memcpy(out, in, sizeof(uint64_t));
	return CPAT_STAGE_EMIT;
}

TH_TEST_FN(pipeline_wait_from_own_stage_ebusy)
{
	(void)state;
	struct gen g;
	struct cpat_pipeline *p = mkgenpipe(&g, 5, 4, NULL, NULL);
	struct self_wait w = {.p = p, .rc = 1};
	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.name = "selfwait";
	so.map = map_waits_own;
	so.arg = &w;
	so.out_size = sizeof(uint64_t);
	assert_int_equal(cpat_pipeline_add_stage(p, &so), 0);
	struct sink s;
	set_sink(p, &s, 8);
	struct cpat_pipeline_result res;
	assert_int_equal(cpat_pipeline_run(p, NULL, CPAT_FOREVER, &res), 0);
	assert_int_equal(atomic_load(&w.rc), -EBUSY);
	assert_int_equal(s.count, 5);
	cpat_pipeline_destroy(p);
	free(s.got);
}

/* A flat stage emitting without end: once the pipeline is cancelled,
 * cpat_stage_emit() returns -ECANCELED (and the stage returns at once). */
struct endless {
	_Atomic int emit_rc;
	_Atomic uint64_t emitted;
};

static int flat_endless(const void *in, struct cpat_stage_ctx *ctx)
{
	struct endless *e = cpat_stage_arg(ctx);
	uint64_t v = *(const uint64_t *)in;
	int rc;
	while ((rc = cpat_stage_emit(ctx, &v)) == 0)
		atomic_fetch_add(&e->emitted, 1);
	atomic_store(&e->emit_rc, rc);
	return rc;
}

TH_TEST_FN(pipeline_flat_emit_returns_ecanceled_once_pipeline_stops)
{
	(void)state;
	long thr = th_count_threads();
	struct gen g;
	struct cpat_pipeline *p = mkgenpipe(&g, 3, 4, NULL, NULL);
	struct endless e = {.emit_rc = 1};
	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.name = "endless";
	so.flat = flat_endless;
	so.arg = &e;
	so.out_size = sizeof(uint64_t);
	so.out_capacity = 2;
	assert_int_equal(cpat_pipeline_add_stage(p, &so), 0);
	assert_int_equal(cpat_pipeline_set_output(p), 0);
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), 0);
	struct cpat_chan *out = cpat_pipeline_output(p);
	assert_non_null(out);
	uint64_t v;
	for (int i = 0; i < 100; i++)
		assert_int_equal(cpat_chan_recv(out, &v, NULL), 0);
	assert_int_equal(cpat_pipeline_cancel(p), 0);
	struct cpat_pipeline_result res;
	assert_int_equal(cpat_pipeline_wait(p, &res), -ECANCELED);
	assert_int_equal(atomic_load(&e.emit_rc), -ECANCELED);
	/* Cancelled by the caller: not the stage's error. */
	assert_string_equal(res.stage, "");
	assert_no_threads_left(thr);
	cpat_pipeline_destroy(p);
}

/* A pipeline with no stage: the source straight to the sink, or to the
 * output channel (the header requires a source and a sink, no stage). */
TH_TEST_FN(pipeline_zero_stages_source_straight_to_sink_or_output)
{
	(void)state;
	for (int out = 0; out < 2; out++) {
		struct gen g;
		struct cpat_pipeline *p = mkgenpipe(&g, 50, 4, NULL, NULL);
		struct sink s;
		sink_init(&s, 50);
		if (out)
			assert_int_equal(cpat_pipeline_set_output(p), 0);
		else
			assert_int_equal(cpat_pipeline_set_sink(p, sink_fn, &s),
					 0);
		int rc = cpat_pipeline_start(p, NULL, CPAT_FOREVER);
		if (rc != 0)
			fail_msg("zero stages, %s: start = %d",
				 out ? "output" : "sink", rc);
		if (out) {
			uint64_t v;
			while (cpat_chan_recv(cpat_pipeline_output(p), &v,
					      NULL) == 0)
				s.got[s.count++] = v;
		}
		struct cpat_pipeline_result res;
		assert_int_equal(cpat_pipeline_wait(p, &res), 0);
		assert_int_equal(s.count, 50);
		for (uint64_t i = 0; i < 50; i++)
			assert_int_equal(s.got[i], i);
		assert_int_equal(res.delivered, 50);
		struct cpat_stage_stats st;
		assert_int_equal(cpat_pipeline_stats(p, &st, 1), 0);
		cpat_pipeline_destroy(p);
		free(s.got);
	}
}

/* cpat_pipeline_output() gives the channel of a pipeline made with
 * cpat_pipeline_set_output(), "valid until destroy": the header gives no
 * exception before start. Items come out of it in order; it closes when
 * the pipeline stops. */
TH_TEST_FN(pipeline_output_channel_set_before_and_after_start)
{
	(void)state;
	struct gen g;
	struct cpat_pipeline *p = mkgenpipe(&g, 100, 4, NULL, NULL);
	struct scfg a;
	scfg_init(&a);
	add_map(p, "a", &a, 2, 1, 4);
	assert_int_equal(cpat_pipeline_set_output(p), 0);
	struct cpat_chan *before = cpat_pipeline_output(p);
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), 0);
	struct cpat_chan *after = cpat_pipeline_output(p);
	assert_non_null(after);
	uint64_t v, k = 0;
	int rc;
	while ((rc = cpat_chan_recv(after, &v, NULL)) == 0)
		assert_int_equal(v, k++);
	assert_int_equal(rc, -EPIPE);
	assert_int_equal(k, 100);
	struct cpat_pipeline_result res;
	assert_int_equal(cpat_pipeline_wait(p, &res), 0);
	assert_int_equal(res.delivered, 100);
	assert_ptr_equal(cpat_pipeline_output(p), after);
	cpat_pipeline_destroy(p);
	/* Checked last so the rest of the behaviour is checked first. */
	assert_non_null(before);
}

TH_TEST_FN(pipeline_feed_after_close_epipe_on_generator_einval)
{
	(void)state;
	uint64_t v = 1;
	/* A feed pipeline. */
	struct cpat_pipeline *p = mkfeedpipe(4, NULL, NULL);
	struct scfg a;
	scfg_init(&a);
	add_map(p, "a", &a, 1, 0, 4);
	struct sink s;
	set_sink(p, &s, 4);
	/* Not started. */
	assert_int_equal(cpat_pipeline_feed(p, &v, NULL), -EINVAL);
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), 0);
	assert_int_equal(cpat_pipeline_feed(p, NULL, NULL), -EINVAL);
	assert_int_equal(cpat_pipeline_feed(NULL, &v, NULL), -EINVAL);
	assert_int_equal(cpat_pipeline_feed(p, &v, NULL), 0);
	assert_int_equal(cpat_pipeline_feed_close(NULL), -EINVAL);
	assert_int_equal(cpat_pipeline_feed_close(p), 0);
	assert_int_equal(cpat_pipeline_feed_close(p), -EPIPE);
	assert_int_equal(cpat_pipeline_feed(p, &v, NULL), -EPIPE);
	struct cpat_pipeline_result res;
	assert_int_equal(cpat_pipeline_wait(p, &res), 0);
	assert_int_equal(res.produced, 1);
	assert_int_equal(s.count, 1);
	assert_int_equal(s.got[0], 1);
	assert_int_equal(cpat_pipeline_feed(p, &v, NULL), -EPIPE);
	cpat_pipeline_destroy(p);
	free(s.got);

	/* A generator pipeline. */
	struct gen g;
	p = mkgenpipe(&g, 5, 4, NULL, NULL);
	sink_init(&s, 8);
	assert_int_equal(cpat_pipeline_set_sink(p, sink_fn, &s), 0);
	assert_int_equal(cpat_pipeline_feed(p, &v, NULL), -EINVAL);
	assert_int_equal(cpat_pipeline_feed_close(p), -EINVAL);
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), 0);
	assert_int_equal(cpat_pipeline_feed(p, &v, NULL), -EINVAL);
	assert_int_equal(cpat_pipeline_feed_close(p), -EINVAL);
	/* No output channel with a sink callback. */
	assert_null(cpat_pipeline_output(p));
	assert_int_equal(cpat_pipeline_wait(p, &res), 0);
	assert_int_equal(s.count, 5);
	cpat_pipeline_destroy(p);
	free(s.got);

	/* A feed with a token that fired: its cause. */
	p = mkpipe(4, NULL, NULL);
	assert_int_equal(cpat_pipeline_set_feed(p), 0);
	sink_init(&s, 8);
	assert_int_equal(cpat_pipeline_set_sink(p, sink_fn, &s), 0);
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), 0);
	struct cpat_token *t = mktok();
	cpat_token_cancel(t);
	assert_int_equal(cpat_pipeline_feed(p, &v, t), -ECANCELED);
	cpat_token_unref(t);
	assert_int_equal(cpat_pipeline_feed_close(p), 0);
	assert_int_equal(cpat_pipeline_wait(p, &res), 0);
	assert_int_equal(res.produced, 0);
	assert_int_equal(s.count, 0);
	cpat_pipeline_destroy(p);
	free(s.got);
}

TH_TEST_FN(pipeline_building_after_start_ebusy_and_second_source_sink_ebusy)
{
	(void)state;
	struct gen g;
	struct cpat_pipeline *p = mkgenpipe(&g, 3, 4, NULL, NULL);
	assert_int_equal(cpat_pipeline_set_generator(p, gen_fn, &g), -EBUSY);
	assert_int_equal(cpat_pipeline_set_feed(p), -EBUSY);
	struct sink s;
	set_sink(p, &s, 8);
	assert_int_equal(cpat_pipeline_set_sink(p, sink_fn, &s), -EBUSY);
	assert_int_equal(cpat_pipeline_set_output(p), -EBUSY);
	assert_null(cpat_pipeline_output(p));
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), 0);
	struct scfg a;
	scfg_init(&a);
	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.name = "late";
	so.map = map_fn;
	so.arg = &a;
	so.out_size = sizeof(uint64_t);
	assert_int_equal(cpat_pipeline_add_stage(p, &so), -EBUSY);
	struct cpat_batch_opts bo;
	cpat_batch_opts_init(&bo);
	assert_int_equal(cpat_pipeline_add_batch(p, &bo), -EBUSY);
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), -EBUSY);
	assert_int_equal(cpat_pipeline_run(p, NULL, CPAT_FOREVER, NULL),
			 -EBUSY);
	struct cpat_pipeline_result res;
	assert_int_equal(cpat_pipeline_wait(p, &res), 0);
	assert_int_equal(s.count, 3);
	assert_int_equal(atomic_load(&a.calls), 0);
	/* Runs once. */
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), -EBUSY);
	assert_int_equal(cpat_pipeline_set_sink(p, sink_fn, &s), -EBUSY);
	cpat_pipeline_destroy(p);
	free(s.got);

	/* Output then sink: -EBUSY too. */
	p = mkpipe(4, NULL, NULL);
	assert_int_equal(cpat_pipeline_set_feed(p), 0);
	assert_int_equal(cpat_pipeline_set_generator(p, gen_fn, &g), -EBUSY);
	assert_int_equal(cpat_pipeline_set_output(p), 0);
	assert_int_equal(cpat_pipeline_set_output(p), -EBUSY);
	assert_int_equal(cpat_pipeline_set_sink(p, sink_fn, &s), -EBUSY);
	cpat_pipeline_destroy(p); /* never started */
}

static void noop_drop(const void *item, unsigned stage, void *arg)
{
	(void)item;
	(void)stage;
	(void)arg;
}

TH_TEST_FN(pipeline_bad_arguments_einval_everywhere)
{
	(void)state;
	long live = th_alloc_live();
	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	po.item_size = sizeof(uint64_t);
	struct cpat_pipeline *p = (struct cpat_pipeline *)&p;
	assert_int_equal(cpat_pipeline_create(NULL, &po), -EINVAL);
	assert_int_equal(cpat_pipeline_create(&p, NULL), -EINVAL);
	assert_null(p);
	p = (struct cpat_pipeline *)&p;
	po.item_size = 0;
	assert_int_equal(cpat_pipeline_create(&p, &po), -EINVAL);
	assert_null(p);
	assert_int_equal(th_alloc_live(), live);

	p = mkpipe(4, noop_drop, NULL);
	struct gen g;
	gen_init(&g, 3);
	assert_int_equal(cpat_pipeline_set_generator(NULL, gen_fn, &g),
			 -EINVAL);
	assert_int_equal(cpat_pipeline_set_generator(p, NULL, &g), -EINVAL);
	assert_int_equal(cpat_pipeline_set_feed(NULL), -EINVAL);
	struct scfg a;
	scfg_init(&a);
	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.name = "s";
	so.map = map_fn;
	so.arg = &a;
	so.out_size = sizeof(uint64_t);
	assert_int_equal(cpat_pipeline_add_stage(NULL, &so), -EINVAL);
	assert_int_equal(cpat_pipeline_add_stage(p, NULL), -EINVAL);
	struct cpat_stage_opts bad = so;
	bad.map = NULL; /* neither */
	assert_int_equal(cpat_pipeline_add_stage(p, &bad), -EINVAL);
	bad = so;
	bad.flat = flat_fn; /* both */
	assert_int_equal(cpat_pipeline_add_stage(p, &bad), -EINVAL);
	bad = so;
	bad.out_size = 0;
	assert_int_equal(cpat_pipeline_add_stage(p, &bad), -EINVAL);
	bad = so;
	bad.workers = 0;
	assert_int_equal(cpat_pipeline_add_stage(p, &bad), -EINVAL);
	bad = so;
	bad.out_capacity = 0;
	assert_int_equal(cpat_pipeline_add_stage(p, &bad), -EINVAL);
	struct cpat_batch_opts bo;
	cpat_batch_opts_init(&bo);
	assert_int_equal(cpat_pipeline_add_batch(NULL, &bo), -EINVAL);
	assert_int_equal(cpat_pipeline_add_batch(p, NULL), -EINVAL);
	struct cpat_batch_opts bb = bo;
	bb.max_items = 0;
	assert_int_equal(cpat_pipeline_add_batch(p, &bb), -EINVAL);
	bb = bo;
	bb.flush_ns = 0;
	assert_int_equal(cpat_pipeline_add_batch(p, &bb), -EINVAL);
	bb.flush_ns = -5;
	assert_int_equal(cpat_pipeline_add_batch(p, &bb), -EINVAL);
	bb = bo;
	bb.out_capacity = 0;
	assert_int_equal(cpat_pipeline_add_batch(p, &bb), -EINVAL);
	bb = bo;
	bb.max_items = SIZE_MAX / 2; /* the batch item size overflows */
	assert_int_equal(cpat_pipeline_add_batch(p, &bb), -EINVAL);
	struct sink s;
	sink_init(&s, 4);
	assert_int_equal(cpat_pipeline_set_sink(NULL, sink_fn, &s), -EINVAL);
	assert_int_equal(cpat_pipeline_set_sink(p, NULL, &s), -EINVAL);
	assert_int_equal(cpat_pipeline_set_output(NULL), -EINVAL);
	assert_null(cpat_pipeline_output(NULL));
	assert_null(cpat_pipeline_output(p)); /* no output set */
	/* Start: no source, no sink, bad deadline, NULL. */
	assert_int_equal(cpat_pipeline_start(NULL, NULL, CPAT_FOREVER),
			 -EINVAL);
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), -EINVAL);
	assert_int_equal(cpat_pipeline_set_generator(p, gen_fn, &g), 0);
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), -EINVAL);
	assert_int_equal(cpat_pipeline_set_sink(p, sink_fn, &s), 0);
	assert_int_equal(cpat_pipeline_start(p, NULL, -2), -EINVAL);
	assert_int_equal(cpat_pipeline_run(NULL, NULL, CPAT_FOREVER, NULL),
			 -EINVAL);
	/* Wait on a pipeline never started. */
	struct cpat_pipeline_result res;
	assert_int_equal(cpat_pipeline_wait(p, &res), -EINVAL);
	assert_int_equal(cpat_pipeline_wait(NULL, &res), -EINVAL);
	assert_int_equal(cpat_pipeline_cancel(NULL), -EINVAL);
	struct cpat_stage_stats st;
	assert_int_equal(cpat_pipeline_stats(NULL, &st, 1), -EINVAL);
	assert_int_equal(cpat_pipeline_stats(p, NULL, 1), -EINVAL);
	assert_int_equal(cpat_pipeline_report(NULL, NULL, 0), -EINVAL);
	assert_int_equal(cpat_pipeline_report(p, NULL, 10), -EINVAL);
	assert_int_equal(cpat_stage_emit(NULL, &g), -EINVAL);
	/* After all those refusals it still runs as built. */
	assert_int_equal(cpat_pipeline_run(p, NULL, CPAT_FOREVER, &res), 0);
	assert_int_equal(s.count, 3);
	cpat_pipeline_destroy(p);
	cpat_pipeline_destroy(NULL);
	free(s.got);

	/* cpat_stage_emit() from a map stage: -EINVAL. */
	gen_init(&g, 3);
	p = mkpipe(4, NULL, NULL);
	assert_int_equal(cpat_pipeline_set_generator(p, gen_fn, &g), 0);
	so.map = map_tries_emit;
	assert_int_equal(cpat_pipeline_add_stage(p, &so), 0);
	sink_init(&s, 4);
	assert_int_equal(cpat_pipeline_set_sink(p, sink_fn, &s), 0);
	assert_int_equal(cpat_pipeline_run(p, NULL, CPAT_FOREVER, &res), 0);
	assert_int_equal(atomic_load(&a.emit_rc), -EINVAL);
	assert_int_equal(s.count, 3);
	cpat_pipeline_destroy(p);
	free(s.got);
	assert_int_equal(th_alloc_live(), live);
}

/* ---- allocation and thread-creation failure ------------------------------ */

/* The full shape used by the failure tests: generator -> map (2 workers)
 * -> batch of 7 -> flat (2 workers, ordered) that re-emits the batch's
 * items -> sink. */
static int unbatch_fn(const void *in, struct cpat_stage_ctx *ctx)
{
	const struct cpat_batch *b = in;
	for (size_t i = 0; i < b->count; i++)
		if (cpat_stage_emit(ctx, cpat_batch_item(b, i)) != 0)
			return -EIO;
	return 0;
}

struct full {
	struct gen g;
	struct scfg a;
	struct sink s;
};

/* Creates the pipeline of the full shape (no stage yet). */
static int build_full(struct cpat_pipeline **pp, struct full *f, uint64_t n)
{
	gen_init(&f->g, n);
	scfg_init(&f->a);
	f->a.workers = 2;
	sink_init(&f->s, n);
	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	po.item_size = sizeof(uint64_t);
	po.source_capacity = 4;
	return cpat_pipeline_create(pp, &po);
}

static int full_add_stage(struct cpat_pipeline *p, struct full *f)
{
	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.name = "map";
	so.map = map_fn;
	so.arg = &f->a;
	so.out_size = sizeof(uint64_t);
	so.workers = 2;
	so.out_capacity = 4;
	return cpat_pipeline_add_stage(p, &so);
}

static int full_add_batch(struct cpat_pipeline *p)
{
	struct cpat_batch_opts bo;
	cpat_batch_opts_init(&bo);
	bo.name = "batch";
	bo.max_items = 7;
	bo.flush_ns = CPAT_FOREVER;
	return cpat_pipeline_add_batch(p, &bo);
}

static int full_add_flat(struct cpat_pipeline *p)
{
	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.name = "unbatch";
	so.flat = unbatch_fn;
	so.out_size = sizeof(uint64_t);
	so.workers = 2;
	so.ordered = 1;
	so.out_capacity = 4;
	return cpat_pipeline_add_stage(p, &so);
}

static void full_finish(struct cpat_pipeline *p, struct full *f)
{
	assert_int_equal(full_add_stage(p, f), 0);
	assert_int_equal(full_add_batch(p), 0);
	assert_int_equal(full_add_flat(p), 0);
	assert_int_equal(cpat_pipeline_set_generator(p, gen_fn, &f->g), 0);
	assert_int_equal(cpat_pipeline_set_sink(p, sink_fn, &f->s), 0);
}

/* Checks a successful run of the full shape: every item in order
 * (map 2 workers unordered, so only the multiset). */
static void full_check(struct full *f, uint64_t n,
		       const struct cpat_pipeline_result *res)
{
	assert_int_equal(f->s.count, n);
	assert_int_equal(res->delivered, n);
	unsigned char *seen = calloc(n, 1);
	for (uint64_t i = 0; i < n; i++) {
		assert_true(f->s.got[i] < n);
		assert_int_equal(seen[f->s.got[i]]++, 0);
	}
	free(seen);
}

/* The full shape, built and made runnable (build_full(), full_finish()). */
static struct cpat_pipeline *full_ready(struct full *f, uint64_t n)
{
	struct cpat_pipeline *p;
	assert_int_equal(build_full(&p, f, n), 0);
	full_finish(p, f);
	return p;
}

/* After try @p k of a start under failure injection: no pipeline thread
 * is left, nor any thread of the process since the baseline @p thr; the
 * pipeline is destroyed and nothing has leaked since the baseline
 * @p live. */
static void full_end_try(struct cpat_pipeline *p, struct full *f, long k,
			 long thr, long live)
{
	assert_int_equal(cpat__pipeline_live_threads(), 0);
	long t = th_threads_settle(thr);
	if (t > thr)
		fail_msg("k = %ld: %ld threads left, baseline %ld", k, t, thr);
	cpat_pipeline_destroy(p);
	free(f->s.got);
	assert_int_equal(th_alloc_live(), live);
}

TH_TEST_FN(pipeline_allocation_failure_each_site_enomem_leaks_nothing)
{
	(void)state;
	const uint64_t n = 50;
	long live = th_alloc_live(), thr = th_count_threads();
	/* create */
	int ok = 0;
	for (long k = 1; k <= 200 && !ok; k++) {
		struct cpat_pipeline_opts po;
		cpat_pipeline_opts_init(&po);
		po.item_size = 8;
		struct cpat_pipeline *p = (struct cpat_pipeline *)&po;
		th_alloc_fail_at(k, 0);
		int rc = cpat_pipeline_create(&p, &po);
		th_alloc_fail_at(0, 0);
		if (rc == 0) {
			ok = 1;
			cpat_pipeline_destroy(p);
		} else {
			assert_int_equal(rc, -ENOMEM);
			assert_null(p);
		}
		assert_int_equal(th_alloc_live(), live);
	}
	assert_true(ok);
	/* add_stage (map and flat) and add_batch: a failed add changes
	 * nothing; the pipeline then builds and runs correctly. */
	for (int site = 0; site < 3; site++) {
		ok = 0;
		for (long k = 1; k <= 200 && !ok; k++) {
			struct full f;
			struct cpat_pipeline *p;
			assert_int_equal(build_full(&p, &f, n), 0);
			if (site >= 1)
				assert_int_equal(full_add_stage(p, &f), 0);
			if (site >= 2)
				assert_int_equal(full_add_batch(p), 0);
			th_alloc_fail_at(k, 0);
			int rc = site == 0   ? full_add_stage(p, &f)
				 : site == 1 ? full_add_batch(p)
					     : full_add_flat(p);
			th_alloc_fail_at(0, 0);
			if (rc == 0) {
				ok = 1;
			} else {
				assert_int_equal(rc, -ENOMEM);
				/* Retry: the pipeline is as before. */
				rc = site == 0   ? full_add_stage(p, &f)
				     : site == 1 ? full_add_batch(p)
						 : full_add_flat(p);
				assert_int_equal(rc, 0);
			}
			if (site < 1)
				assert_int_equal(full_add_batch(p), 0);
			if (site < 2)
				assert_int_equal(full_add_flat(p), 0);
			assert_int_equal(
				cpat_pipeline_set_generator(p, gen_fn, &f.g),
				0);
			assert_int_equal(
				cpat_pipeline_set_sink(p, sink_fn, &f.s), 0);
			struct cpat_pipeline_result res;
			assert_int_equal(
				cpat_pipeline_run(p, NULL, CPAT_FOREVER, &res),
				0);
			struct cpat_stage_stats st[4];
			assert_int_equal(cpat_pipeline_stats(p, st, 4), 3);
			full_check(&f, n, &res);
			cpat_pipeline_destroy(p);
			free(f.s.got);
			assert_int_equal(th_alloc_live(), live);
		}
		assert_true(ok);
	}
	/* start: -ENOMEM with no thread left and nothing leaked after
	 * destroy; or it starts and runs to the end. */
	ok = 0;
	for (long k = 1; k <= 500 && !ok; k++) {
		struct full f;
		struct cpat_pipeline *p = full_ready(&f, n);
		th_alloc_fail_at(k, 0);
		int rc = cpat_pipeline_start(p, NULL, CPAT_FOREVER);
		th_alloc_fail_at(0, 0);
		if (rc == 0) {
			struct cpat_pipeline_result res;
			rc = cpat_pipeline_wait(p, &res);
			if (rc == 0) {
				full_check(&f, n, &res);
				ok = 1;
			} else {
				/* An allocation after start failed. */
				assert_int_equal(rc, -ENOMEM);
			}
		} else {
			assert_int_equal(rc, -ENOMEM);
		}
		full_end_try(p, &f, k, thr, live);
	}
	assert_true(ok);
	/* Persistent failure from the first allocation of start. */
	{
		struct full f;
		struct cpat_pipeline *p = full_ready(&f, n);
		th_alloc_fail_at(1, 1);
		int rc = cpat_pipeline_start(p, NULL, CPAT_FOREVER);
		th_alloc_fail_at(0, 0);
		if (rc == 0) {
			/* start allocates nothing: it must then run. */
			struct cpat_pipeline_result res;
			assert_int_equal(cpat_pipeline_wait(p, &res), 0);
		} else {
			assert_int_equal(rc, -ENOMEM);
		}
		assert_no_threads_left(thr);
		cpat_pipeline_destroy(p);
		free(f.s.got);
		assert_int_equal(th_alloc_live(), live);
	}
}

TH_TEST_FN(pipeline_thread_creation_failure_each_thread_eagain_no_thread_left)
{
	(void)state;
	const uint64_t n = 50;
	long live = th_alloc_live(), thr = th_count_threads();
	int ok = 0;
	long failures = 0;
	for (long k = 1; k <= 64 && !ok; k++) {
		struct full f;
		struct cpat_pipeline *p = full_ready(&f, n);
		cpat__test_fail_thread_at(k, false);
		int rc = cpat_pipeline_start(p, NULL, CPAT_FOREVER);
		cpat__test_fail_thread_at(0, false);
		if (rc == 0) {
			struct cpat_pipeline_result res;
			assert_int_equal(cpat_pipeline_wait(p, &res), 0);
			full_check(&f, n, &res);
			ok = 1;
		} else {
			assert_int_equal(rc, -EAGAIN);
			failures++;
			/* The pipeline can only be destroyed. */
		}
		full_end_try(p, &f, k, thr, live);
	}
	assert_true(ok);
	/* source + 2 map + batch + 2 flat (+ sink): at least 5 threads
	 * however the sink is run. */
	assert_true(failures >= 5);
	/* Persistent. */
	struct full f;
	struct cpat_pipeline *p = full_ready(&f, n);
	cpat__test_fail_thread_at(3, true);
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), -EAGAIN);
	cpat__test_fail_thread_at(0, false);
	assert_no_threads_left(thr);
	cpat_pipeline_destroy(p);
	free(f.s.got);
	assert_int_equal(th_alloc_live(), live);
}

int main(void)
{
	suite_init();
	const struct CMUnitTest tests[] = {
		TH_TEST(pipeline_allocation_failure_each_site_enomem_leaks_nothing),
		TH_TEST(pipeline_thread_creation_failure_each_thread_eagain_no_thread_left),
		TH_TEST(pipeline_bad_arguments_einval_everywhere),
		TH_TEST(pipeline_building_after_start_ebusy_and_second_source_sink_ebusy),
		TH_TEST(pipeline_feed_after_close_epipe_on_generator_einval),
		TH_TEST(pipeline_output_channel_set_before_and_after_start),
		TH_TEST(pipeline_wait_from_own_stage_ebusy),
		TH_TEST(pipeline_flat_emit_returns_ecanceled_once_pipeline_stops),
		TH_TEST(pipeline_stats_measure_starved_behind_slow_source_blocked_by_slow_sink),
		TH_TEST(pipeline_zero_stages_source_straight_to_sink_or_output),
		TH_TEST(pipeline_batch_defaults_and_size),
		TH_TEST(pipeline_guide_example_square_then_even_delivers_4_16),
		TH_TEST(pipeline_all_ordered_multiworker_stages_deliver_in_source_order),
		TH_TEST(pipeline_ordered_stage_4_workers_random_delays_keeps_order),
		TH_TEST(pipeline_unordered_stage_random_delays_delivers_each_item_once),
		TH_TEST(pipeline_flat_stage_emits_any_number_per_item_ordered),
		TH_TEST(pipeline_ordered_flat_outgrowing_its_slot_keeps_order_exactly_once),
		TH_TEST(pipeline_ordered_flat_outgrowing_its_slot_cancel_mid_chunk_accounts_each_once),
		TH_TEST(pipeline_ordered_many_workers_random_delays_stop_at_random_item_accounts_each_once),
		TH_TEST(pipeline_ordered_stage_fed_one_at_a_time_passes_each_on_at_once),
		TH_TEST(pipeline_map_filter_fan_out_4_fan_in_matches_sequential_multiset),
		TH_TEST(pipeline_cancel_at_random_item_threads_exit_every_item_accounted),
		TH_TEST(pipeline_cancel_from_source_or_sink_right_at_start_is_not_lost),
		TH_TEST(pipeline_cancel_from_outside_is_reported_whenever_items_were_abandoned),
		TH_TEST(pipeline_cancel_seen_before_its_callback_ran_is_still_reported),
		TH_TEST(pipeline_stage2_error_with_upstream_blocked_reports_name_and_index),
		TH_TEST(pipeline_source_and_sink_errors_report_source_and_sink),
		TH_TEST(pipeline_slow_consumer_bounded_memory_producers_block_nothing_dropped),
		TH_TEST(pipeline_consumer_stops_and_cancels_feed_unblocks_with_error),
		TH_TEST(pipeline_consumer_cancel_unblocks_three_feeders_with_epipe),
		TH_TEST(pipeline_deadline_gives_etimedout_and_accounts_every_item),
		TH_TEST(pipeline_destroy_while_running_cancels_and_joins),
		TH_TEST(pipeline_batch_flushes_by_count_100_100_then_50_at_end),
		TH_TEST(pipeline_batch_flushes_by_time_trickling_feed_not_before_interval),
		TH_TEST(pipeline_batch_flush_on_cancel_passes_partial_batch_else_drops_it),
		TH_TEST(pipeline_batch_flush_on_cancel_partial_batch_after_full_ones_accounted_exactly),
		TH_TEST(pipeline_stats_consistent_report_names_slowest_stage_bottleneck),
		TH_TEST(pipeline_long_stage_name_truncated_in_stats_and_result),
		TH_TEST(pipeline_threads_named_source_stage_sink),
	};
	const char *filter = getenv("CPAT_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	return TH_RUN("pipeline", tests);
}
