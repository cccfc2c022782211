/*
 * Helpers shared by the tests of pipelines and fans (test_pipeline.c,
 * test_fan.c): the check that no pipeline or fan thread is left, per-item
 * work, and the pieces of a pipeline under test: a generator of indices,
 * a configurable map stage, a recording sink, the per-index fate of every
 * item (delivered, filtered, dropped) and its accounting, and builders.
 *
 * Callbacks run on pipeline threads: they record into their own structs
 * and atomics, and the main thread asserts after cpat_pipeline_wait()
 * (which joins every pipeline thread).
 */
#ifndef CPAT_PIPELINE_TESTLIB_H
#define CPAT_PIPELINE_TESTLIB_H

#include "harness.h"
#include "testhooks.h"

#include <limits.h>

/* The test hooks of pipeline.c and fan.c: their threads not yet exited. */
long cpat__pipeline_live_threads(void);
long cpat__fan_live_threads(void);

/* No pipeline or fan thread is left (the library's own count), and the
 * process is back to @p base threads. */
#define assert_no_threads_left(base)                                \
	do {                                                        \
		assert_int_equal(cpat__pipeline_live_threads(), 0); \
		assert_int_equal(cpat__fan_live_threads(), 0);      \
		th_assert_threads_back(base);                       \
	} while (0)

/* Spins (without sleeping) for about @p ns: per-item work. */
static inline void spin_ns(int64_t ns)
{
	int64_t end = cpat_now_ns() + ns;
	while (cpat_now_ns() < end)
		;
}

/* Sleeps @p us microseconds: per-item work of a stage (data). */
static inline void work_us(long us)
{
	struct timespec ts = {0, us * 1000L};
	nanosleep(&ts, NULL);
}

/* A deterministic per-index random number from the run's seed. */
static inline uint64_t hash_idx(uint64_t i, uint64_t salt)
{
	struct th_rng r;
	th_rng_init(&r, i * 7919u + salt);
	return th_rng_next(&r);
}

static inline struct cpat_token *mktok(void)
{
	struct cpat_token *t = NULL;
	if (cpat_token_create(&t, NULL) != 0 || t == NULL)
		abort();
	return t;
}

/*
 * Per-index fate of every item: exactly one of delivered, filtered, dropped
 * (passed to the drop callback). A second fate for an index is a conflict.
 */
enum { ST_DELIVERED = 1, ST_FILTERED = 2, ST_DROPPED = 4 };

struct track {
	_Atomic unsigned char *st;
	uint64_t n;
	_Atomic uint64_t delivered, filtered, dropped;
	_Atomic uint64_t conflicts;    /* an index given two fates */
	_Atomic uint64_t out_of_range; /* an index >= n */
	_Atomic uint64_t bad_drop_stage;
	unsigned nstages;
};

static inline void track_init(struct track *t, uint64_t n, unsigned nstages)
{
	memset(t, 0, sizeof *t);
	t->st = calloc(n ? n : 1, 1);
	if (!t->st)
		abort();
	t->n = n;
	t->nstages = nstages;
}

static inline void track_reset(struct track *t)
{
	for (uint64_t i = 0; i < t->n; i++)
		atomic_store_explicit(&t->st[i], 0, memory_order_relaxed);
	atomic_store(&t->delivered, 0);
	atomic_store(&t->filtered, 0);
	atomic_store(&t->dropped, 0);
	atomic_store(&t->conflicts, 0);
	atomic_store(&t->out_of_range, 0);
	atomic_store(&t->bad_drop_stage, 0);
}

static inline void track_free(struct track *t)
{
	free((void *)t->st);
	t->st = NULL;
}

static inline void track_mark(struct track *t, uint64_t idx, unsigned char what)
{
	if (idx >= t->n) {
		atomic_fetch_add(&t->out_of_range, 1);
		return;
	}
	unsigned char old = atomic_fetch_or(&t->st[idx], what);
	if (old != 0)
		atomic_fetch_add(&t->conflicts, 1);
	if (what == ST_DELIVERED)
		atomic_fetch_add(&t->delivered, 1);
	else if (what == ST_FILTERED)
		atomic_fetch_add(&t->filtered, 1);
	else
		atomic_fetch_add(&t->dropped, 1);
}

/* The drop callback of tracked pipelines: items are uint64_t indices at
 * every stage. */
static inline void track_drop(const void *item, unsigned stage, void *arg)
{
	struct track *t = arg;
	if (stage > t->nstages)
		atomic_fetch_add(&t->bad_drop_stage, 1);
	track_mark(t, *(const uint64_t *)item, ST_DROPPED);
}

/* Asserts the accounting of a finished run against the tracked fates:
 * indices 0..produced-1 have exactly one fate each, none beyond. */
static inline void assert_accounting(struct track *t,
				     const struct cpat_pipeline_result *res)
{
	assert_int_equal(atomic_load(&t->conflicts), 0);
	assert_int_equal(atomic_load(&t->out_of_range), 0);
	assert_int_equal(atomic_load(&t->bad_drop_stage), 0);
	assert_int_equal(res->produced,
			 res->delivered + res->filtered + res->not_processed);
	assert_int_equal(res->delivered, atomic_load(&t->delivered));
	assert_int_equal(res->filtered, atomic_load(&t->filtered));
	assert_int_equal(res->not_processed, atomic_load(&t->dropped));
	for (uint64_t i = 0; i < t->n; i++) {
		unsigned char s =
			atomic_load_explicit(&t->st[i], memory_order_relaxed);
		if (i < res->produced) {
			if (s != ST_DELIVERED && s != ST_FILTERED &&
			    s != ST_DROPPED)
				fail_msg("item %llu of %llu produced has fate "
					 "%u",
					 (unsigned long long)i,
					 (unsigned long long)res->produced, s);
		} else if (s != 0) {
			fail_msg(
				"item %llu (not produced, produced = %llu) has "
				"fate %u",
				(unsigned long long)i,
				(unsigned long long)res->produced, s);
		}
	}
}

/* ---- a generator ----------------------------------------------------------
 */

/* Produces indices 0..n-1 (uint64_t); optionally fails at one index, or
 * cancels the pipeline or a token when it produces one. */
struct gen {
	uint64_t next, n;
	_Atomic uint64_t made; /* items returned with 1 */
	uint64_t fail_at;
	int fail_rc;        /* 0: never fail */
	uint64_t cancel_at; /* UINT64_MAX: never */
	struct cpat_pipeline *cancel_p;
	struct cpat_token *cancel_tok;
	_Atomic int calls_after_end; /* called again after returning 0/<0 */
	int ended;
};

static inline void gen_init(struct gen *g, uint64_t n)
{
	memset(g, 0, sizeof *g);
	g->n = n;
	g->cancel_at = UINT64_MAX;
}

static inline int gen_fn(void *out, void *arg)
{
	struct gen *g = arg;
	if (g->ended) {
		atomic_fetch_add(&g->calls_after_end, 1);
		return 0;
	}
	if (g->next >= g->n) {
		g->ended = 1;
		return 0;
	}
	uint64_t i = g->next;
	if (g->fail_rc && i == g->fail_at) {
		g->ended = 1;
		return g->fail_rc;
	}
	g->next++;
	*(uint64_t *)out = i;
	atomic_store(&g->made, g->next);
	if (i == g->cancel_at) {
		if (g->cancel_tok)
			cpat_token_cancel(g->cancel_tok);
		if (g->cancel_p)
			cpat_pipeline_cancel(g->cancel_p);
	}
	return 1;
}

/* ---- a configurable map stage ------------------------------------------- */

struct scfg {
	uint64_t mul, add; /* out = in * mul + add; mul 0: out = in */
	uint64_t skip_mod; /* skip when in % skip_mod == 0; 0: never */
	int64_t spin;      /* ns of busy work per item */
	long max_delay_us; /* random nanosleep 0..max per item */
	uint64_t salt;
	uint64_t fail_at;        /* source index to fail at */
	int fail_rc;             /* 0: never */
	uint64_t fail_wait_made; /* before failing, wait until gen made this */
	struct gen *gen;
	_Atomic uint64_t *wait_seen; /* before failing, wait until a sink */
	uint64_t wait_sink_n;        /* has seen this many items */
	uint64_t cancel_at; /* source index at which to cancel; MAX: never */
	struct cpat_pipeline *cancel_p;
	struct track *tr; /* records SKIPs */
	int check_index;  /* items are indices: check cpat_stage_index */
	unsigned workers;
	void *expect_arg; /* cpat_stage_arg() must return this */
	_Atomic uint64_t calls;
	_Atomic uint64_t bad_ctx;
	_Atomic int emit_rc; /* cpat_stage_emit() from a map stage */
};

static inline void scfg_init(struct scfg *c)
{
	memset(c, 0, sizeof *c);
	c->cancel_at = UINT64_MAX;
	c->workers = 1;
	c->expect_arg = c;
	atomic_store(&c->emit_rc, 1);
}

static inline int map_fn(const void *in, void *out, struct cpat_stage_ctx *ctx)
{
	struct scfg *c = cpat_stage_arg(ctx);
	uint64_t v = *(const uint64_t *)in;
	uint64_t idx = cpat_stage_index(ctx);
	atomic_fetch_add(&c->calls, 1);
	if (c != c->expect_arg || cpat_stage_worker(ctx) >= c->workers ||
	    cpat_stage_token(ctx) == NULL || (c->check_index && idx != v))
		atomic_fetch_add(&c->bad_ctx, 1);
	if (c->spin)
		spin_ns(c->spin);
	if (c->max_delay_us)
		work_us((long)(hash_idx(idx, c->salt) %
			       (uint64_t)(c->max_delay_us + 1)));
	if (c->fail_rc && idx == c->fail_at) {
		if (c->gen)
			while (atomic_load(&c->gen->made) < c->fail_wait_made)
				th_relax();
		if (c->wait_seen)
			while (atomic_load(c->wait_seen) < c->wait_sink_n)
				th_relax();
		return c->fail_rc;
	}
	if (idx == c->cancel_at && c->cancel_p)
		cpat_pipeline_cancel(c->cancel_p);
	if (c->skip_mod && v % c->skip_mod == 0) {
		if (c->tr)
			track_mark(c->tr, v, ST_FILTERED);
		return CPAT_STAGE_SKIP;
	}
	*(uint64_t *)out = c->mul ? v * c->mul + c->add : v;
	return CPAT_STAGE_EMIT;
}

/* A map stage that tries cpat_stage_emit() (only for flat stages). */
static inline int map_tries_emit(const void *in, void *out,
				 struct cpat_stage_ctx *ctx)
{
	struct scfg *c = cpat_stage_arg(ctx);
	int expected = 1;
	atomic_compare_exchange_strong(&c->emit_rc, &expected,
				       cpat_stage_emit(ctx, in));
	memcpy(out, in, sizeof(uint64_t));
	return CPAT_STAGE_EMIT;
}

/* ---- a sink ------------------------------------------------------------- */

struct sink {
	uint64_t *got; /* values in delivery order (room for cap) */
	uint64_t cap, count;
	_Atomic uint64_t seen; /* count, readable from other threads */
	struct track *tr;      /* marks DELIVERED by value (indices) */
	int64_t spin;          /* slow consumer: busy ns per item */
	long sleep_us;         /* slow consumer: nanosleep per item */
	uint64_t fail_at;      /* index (count) at which to fail */
	int fail_rc;
	uint64_t cancel_at;
	struct cpat_pipeline *cancel_p;
	struct gen *gen;         /* to measure how far ahead the source gets */
	uint64_t max_ahead;      /* max of gen made - count */
	long live_min, live_max; /* th_alloc_live() seen from item watch_from */
	long calls_min, calls_max;
	uint64_t watch_from;
	int watch;
};

static inline void sink_init(struct sink *s, uint64_t cap)
{
	memset(s, 0, sizeof *s);
	s->cap = cap;
	s->got = cap ? malloc(cap * sizeof(uint64_t)) : NULL;
	s->fail_at = UINT64_MAX;
	s->cancel_at = UINT64_MAX;
	s->live_min = LONG_MAX;
	s->live_max = LONG_MIN;
	s->calls_min = LONG_MAX;
	s->calls_max = LONG_MIN;
}

static inline int sink_fn(const void *item, void *arg)
{
	struct sink *s = arg;
	uint64_t v = *(const uint64_t *)item;
	if (s->fail_rc && s->count == s->fail_at)
		return s->fail_rc;
	if (s->count < s->cap)
		s->got[s->count] = v;
	if (s->tr)
		track_mark(s->tr, v, ST_DELIVERED);
	if (s->gen) {
		uint64_t made = atomic_load(&s->gen->made);
		if (made > s->count && made - s->count > s->max_ahead)
			s->max_ahead = made - s->count;
	}
	if (s->watch && s->count >= s->watch_from) {
		long l = th_alloc_live(), c = th_alloc_count();
		if (l < s->live_min)
			s->live_min = l;
		if (l > s->live_max)
			s->live_max = l;
		if (c < s->calls_min)
			s->calls_min = c;
		if (c > s->calls_max)
			s->calls_max = c;
	}
	s->count++;
	atomic_store(&s->seen, s->count);
	if (s->spin)
		spin_ns(s->spin);
	if (s->sleep_us)
		work_us(s->sleep_us);
	if (v == s->cancel_at && s->cancel_p)
		cpat_pipeline_cancel(s->cancel_p);
	return 0;
}

/* ---- building ----------------------------------------------------------- */

static inline struct cpat_pipeline *
mkpipe(size_t src_cap, cpat_item_drop_fn drop, void *drop_arg)
{
	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	po.item_size = sizeof(uint64_t);
	if (src_cap)
		po.source_capacity = src_cap;
	po.drop = drop;
	po.drop_arg = drop_arg;
	struct cpat_pipeline *p = NULL;
	int rc = cpat_pipeline_create(&p, &po);
	assert_int_equal(rc, 0);
	assert_non_null(p);
	return p;
}

static inline void add_map(struct cpat_pipeline *p, const char *name,
			   struct scfg *c, unsigned workers, int ordered,
			   size_t cap)
{
	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.name = name;
	so.map = map_fn;
	so.arg = c;
	so.out_size = sizeof(uint64_t);
	so.workers = workers;
	so.ordered = ordered;
	if (cap)
		so.out_capacity = cap;
	c->workers = workers;
	assert_int_equal(cpat_pipeline_add_stage(p, &so), 0);
}

/* A batch stage of @p p (out_capacity 0: the default). */
static inline void add_batch(struct cpat_pipeline *p, size_t max_items,
			     int64_t flush_ns, int flush_on_cancel,
			     size_t out_capacity)
{
	struct cpat_batch_opts bo;
	cpat_batch_opts_init(&bo);
	bo.name = "batch";
	bo.max_items = max_items;
	bo.flush_ns = flush_ns;
	bo.flush_on_cancel = flush_on_cancel;
	if (out_capacity)
		bo.out_capacity = out_capacity;
	assert_int_equal(cpat_pipeline_add_batch(p, &bo), 0);
}

/* A pipeline of uint64_t items (mkpipe()) whose source is @p g, made to
 * produce the indices 0..n-1 (gen_init()); the caller adds the stages and
 * may still set @p g's other fields before the run. */
static inline struct cpat_pipeline *mkgenpipe(struct gen *g, uint64_t n,
					      size_t src_cap,
					      cpat_item_drop_fn drop,
					      void *drop_arg)
{
	gen_init(g, n);
	struct cpat_pipeline *p = mkpipe(src_cap, drop, drop_arg);
	assert_int_equal(cpat_pipeline_set_generator(p, gen_fn, g), 0);
	return p;
}

/* @p s, with room for @p cap values (sink_init()), as the sink of @p p;
 * the caller may still set @p s's other fields before the run. */
static inline void set_sink(struct cpat_pipeline *p, struct sink *s,
			    uint64_t cap)
{
	sink_init(s, cap);
	assert_int_equal(cpat_pipeline_set_sink(p, sink_fn, s), 0);
}

/* A pipeline of uint64_t items (mkpipe()) fed by cpat_pipeline_feed(). */
static inline struct cpat_pipeline *
mkfeedpipe(size_t src_cap, cpat_item_drop_fn drop, void *drop_arg)
{
	struct cpat_pipeline *p = mkpipe(src_cap, drop, drop_arg);
	assert_int_equal(cpat_pipeline_set_feed(p), 0);
	return p;
}

/* ---- a tracked run ------------------------------------------------------ */

/*
 * The run most pipeline tests make: a generator of the indices 0..n-1
 * (r->g), the fate of every item tracked (r->tr: the pipeline's drop
 * callback marks the items not processed, the sink r->s the delivered
 * ones, a filtering stage whose scfg has tr = &r->tr the filtered ones),
 * the result in r->res. trun_init() makes the pipeline (the caller adds
 * its @p nstages stages and may set r->g's other fields), trun_sink()
 * sets the sink (the caller may still set its other fields), trun_run()
 * runs it, trun_free() destroys the pipeline and frees the rest.
 */
struct trun {
	struct track tr;
	struct gen g;
	struct sink s;
	struct cpat_pipeline *p;
	struct cpat_pipeline_result res;
};

static inline struct cpat_pipeline *trun_init(struct trun *r, uint64_t n,
					      unsigned nstages, size_t src_cap)
{
	memset(r, 0, sizeof *r);
	track_init(&r->tr, n, nstages);
	r->p = mkgenpipe(&r->g, n, src_cap, track_drop, &r->tr);
	return r->p;
}

/* The sink, with room for @p cap values, marking what it is given. */
static inline struct sink *trun_sink(struct trun *r, uint64_t cap)
{
	set_sink(r->p, &r->s, cap);
	r->s.tr = &r->tr;
	return &r->s;
}

static inline int trun_run(struct trun *r, struct cpat_token *tok,
			   int64_t deadline)
{
	return cpat_pipeline_run(r->p, tok, deadline, &r->res);
}

static inline void trun_free(struct trun *r)
{
	cpat_pipeline_destroy(r->p);
	free(r->s.got);
	track_free(&r->tr);
}

/* The first steps of main(): the counting allocator, for every object of
 * the run; then the library's shared timer thread, started now (by a token
 * with a far deadline) so that a deadline in a test does not change the
 * thread count. */
static inline void suite_init(void)
{
	th_alloc_install();
	struct cpat_token *t = NULL;
	if (cpat_token_create_deadline(&t, NULL,
				       cpat_now_ns() + 3600 * CPAT_SEC) != 0)
		abort();
	cpat_token_unref(t);
}

#endif /* CPAT_PIPELINE_TESTLIB_H */
