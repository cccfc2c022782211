/*
 * End-to-end acknowledgement in pipelines: a context source gives each item
 * a handle (its number), and the tests count, per handle, the acks and the
 * drops. Every item that completes (sink accepted, filtered, every output of
 * a flat input completed, member of an accepted batch) is acked exactly
 * once; one that was not processed (cancel, error, deadline) never is, and
 * then at least one of its items went to the drop callback. Callbacks only
 * record (atomics); the main thread asserts after the run.
 */
#include "harness.h"

#include "cpattern/pipeline.h"

/* The item: the handle of the source item it comes from, and its number
 * among that item's flat outputs. */
struct it {
	uint64_t origin;
	uint64_t j;
};

enum { NONE = -1 };

struct ackt {
	uint64_t n;    /* items the source makes: handles 0..n-1 */
	uint64_t next; /* source thread only */
	_Atomic uint32_t *acked, *dropped;
	_Atomic uint32_t *cut; /* a flat input whose emit failed (a stop) */
	_Atomic long outstanding, max_outstanding;
	_Atomic uint64_t sink_items;
	_Atomic int bad; /* a callback saw something wrong */
	struct cpat_pipeline *p;
	/* Stops (NONE: none). */
	int64_t cancel_at, map_fail_at, sink_fail_at;
	unsigned sink_spin;   /* busy work per sink item, in pauses */
	unsigned flat_many;   /* flat: outputs = origin % flat_many */
	unsigned batch_stage; /* index of a batch stage, or UINT_MAX */
	int token_seen;       /* the source saw its token fire */
	int block_at_end;     /* the source waits for its token at the end */
	int flush_at_end;     /* ... after cpat_source_flush() */
	int flush_rc;         /* what that returned */
	_Atomic int at_end;   /* ... and is about to */
};

static void ackt_init(struct ackt *t, uint64_t n)
{
	memset(t, 0, sizeof(*t));
	t->n = n;
	t->acked = calloc(n, sizeof(*t->acked));
	t->dropped = calloc(n, sizeof(*t->dropped));
	t->cut = calloc(n, sizeof(*t->cut));
	assert_non_null(t->cut);
	assert_non_null(t->acked);
	assert_non_null(t->dropped);
	t->cancel_at = t->map_fail_at = t->sink_fail_at = NONE;
	t->flat_many = 4;
	t->batch_stage = UINT32_MAX;
}

static void ackt_free(struct ackt *t)
{
	free((void *)t->acked);
	free((void *)t->dropped);
	free((void *)t->cut);
}

static int src_fn(void *out, struct cpat_source_ctx *ctx)
{
	struct ackt *t = cpat_source_arg(ctx);
	if (t->next >= t->n) {
		if (t->block_at_end) {
			/* Waits as a source blocked on I/O would. */
			if (t->flush_at_end)
				t->flush_rc = cpat_source_flush(ctx);
			atomic_store(&t->at_end, 1);
			struct cpat_token *tok = cpat_source_token(ctx);
			int rc = cpat_token_wait(tok, CPAT_FOREVER);
			int cause = cpat_token_status(tok);
			t->token_seen = rc == 0 && cause == -ECANCELED;
			return cause < 0 ? cause : 0;
		}
		return 0;
	}
	uint64_t h = t->next++;
	if ((int64_t)h == t->cancel_at)
		cpat_pipeline_cancel(t->p);
	memcpy(cpat_source_ack(ctx), &h, sizeof(h));
	long o = atomic_fetch_add(&t->outstanding, 1) + 1;
	long m = atomic_load(&t->max_outstanding);
	while (o > m &&
	       !atomic_compare_exchange_weak(&t->max_outstanding, &m, o))
		;
	struct it v = {h, 0};
	memcpy(out, &v, sizeof(v));
	return 1;
}

static void ack_fn(const void *handles, size_t n, void *arg)
{
	struct ackt *t = arg;
	if (n == 0)
		atomic_store(&t->bad, 1);
	for (size_t i = 0; i < n; i++) {
		uint64_t h;
		memcpy(&h, (const char *)handles + i * sizeof(h), sizeof(h));
		if (h >= t->n)
			atomic_store(&t->bad, 2);
		else
			atomic_fetch_add(&t->acked[h], 1);
	}
	atomic_fetch_sub(&t->outstanding, (long)n);
}

static void mark_dropped(struct ackt *t, const struct it *v)
{
	if (v->origin < t->n)
		atomic_fetch_add(&t->dropped[v->origin], 1);
	else
		atomic_store(&t->bad, 3);
}

static void drop_fn(const void *item, unsigned stage, void *arg)
{
	struct ackt *t = arg;
	if (stage > t->batch_stage) {
		const struct cpat_batch *b = item;
		for (size_t i = 0; i < b->count; i++)
			mark_dropped(t, cpat_batch_item(b, i));
	} else {
		mark_dropped(t, item);
	}
}

static int map_ident(const void *in, void *out, struct cpat_stage_ctx *c)
{
	struct ackt *t = cpat_stage_arg(c);
	const struct it *v = in;
	if ((int64_t)v->origin == t->map_fail_at)
		return -EIO;
	memcpy(out, in, sizeof(*v));
	return CPAT_STAGE_EMIT;
}

static int map_filter(const void *in, void *out, struct cpat_stage_ctx *c)
{
	const struct it *v = in;
	memcpy(out, in, sizeof(*v));
	return v->origin % 3 == 0 ? CPAT_STAGE_SKIP : CPAT_STAGE_EMIT;
}

/* Emits origin % flat_many outputs: 0 (filtered), 1, or many (more than a
 * worker's buffer when flat_many > 32, so outputs leave mid-input). */
static int flat_fn(const void *in, struct cpat_stage_ctx *c)
{
	struct ackt *t = cpat_stage_arg(c);
	struct it v;
	memcpy(&v, in, sizeof(v));
	uint64_t k = v.origin % t->flat_many;
	for (v.j = 0; v.j < k; v.j++) {
		int rc = cpat_stage_emit(c, &v);
		if (rc) {
			/* Stopped mid-input: the rest is never made, so the
			 * input was not processed (and is never acked), even
			 * if every output it made so far went on. */
			atomic_fetch_add(&t->cut[v.origin], 1);
			return rc;
		}
	}
	return 0;
}

static int sink_fn(const void *item, void *arg)
{
	struct ackt *t = arg;
	const struct it *v = item;
	if ((int64_t)v->origin == t->sink_fail_at)
		return -EIO;
	for (unsigned i = 0; i < t->sink_spin; i++)
		th_relax();
	atomic_fetch_add(&t->sink_items, 1);
	return 0;
}

static int sink_batch_fn(const void *item, void *arg)
{
	struct ackt *t = arg;
	const struct cpat_batch *b = item;
	for (size_t i = 0; i < b->count; i++) {
		const struct it *v = cpat_batch_item(b, i);
		if ((int64_t)v->origin == t->sink_fail_at)
			return -EIO;
	}
	atomic_fetch_add(&t->sink_items, b->count);
	return 0;
}

/* Stage kinds of a test pipeline. */
enum { S_MAP, S_FILTER, S_FLAT, S_BATCH };

struct shape {
	int kinds[4];
	unsigned nk;
	unsigned workers;
	int ordered;
	size_t batch_max;
	int64_t flush_ns;
	size_t max_unacked;
	size_t cap; /* channel capacities */
};

static struct cpat_pipeline *build(struct ackt *t, const struct shape *sh)
{
	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	po.item_size = sizeof(struct it);
	po.source_capacity = sh->cap ? sh->cap : 64;
	po.drop = drop_fn;
	po.drop_arg = t;
	struct cpat_pipeline *p = NULL;
	assert_int_equal(cpat_pipeline_create(&p, &po), 0);
	struct cpat_source_opts so;
	cpat_source_opts_init(&so);
	so.fn = src_fn;
	so.arg = t;
	so.ack_size = sizeof(uint64_t);
	so.ack = ack_fn;
	so.ack_arg = t;
	so.max_unacked = sh->max_unacked;
	assert_int_equal(cpat_pipeline_set_source(p, &so), 0);
	bool batch_last = false;
	for (unsigned i = 0; i < sh->nk; i++) {
		if (sh->kinds[i] == S_BATCH) {
			struct cpat_batch_opts bo;
			cpat_batch_opts_init(&bo);
			bo.max_items = sh->batch_max;
			bo.flush_ns = sh->flush_ns;
			assert_int_equal(cpat_pipeline_add_batch(p, &bo), 0);
			t->batch_stage = i;
			batch_last = true;
			continue;
		}
		struct cpat_stage_opts st;
		cpat_stage_opts_init(&st);
		st.arg = t;
		st.out_size = sizeof(struct it);
		st.workers = sh->workers;
		st.ordered = sh->ordered;
		if (sh->cap)
			st.out_capacity = sh->cap;
		if (sh->kinds[i] == S_MAP)
			st.map = map_ident;
		else if (sh->kinds[i] == S_FILTER)
			st.map = map_filter;
		else
			st.flat = flat_fn;
		assert_int_equal(cpat_pipeline_add_stage(p, &st), 0);
	}
	assert_int_equal(cpat_pipeline_set_sink(
				 p, batch_last ? sink_batch_fn : sink_fn, t),
			 0);
	t->p = p;
	return p;
}

/* The checks after any run: the identities, no item acked twice, no
 * callback error, and per handle: acked, or not processed (dropped). */
static void check_run(struct ackt *t, const struct cpat_pipeline_result *r,
		      const char *what)
{
	if (atomic_load(&t->bad))
		fail_msg("%s: a callback saw a bad value (%d)", what,
			 atomic_load(&t->bad));
	if (r->acked + r->unacked != r->produced)
		fail_msg("%s: acked %llu + unacked %llu != produced %llu", what,
			 (unsigned long long)r->acked,
			 (unsigned long long)r->unacked,
			 (unsigned long long)r->produced);
	assert_int_equal(r->produced + r->expanded, r->delivered + r->filtered +
							    r->not_processed +
							    r->batched);
	uint64_t acked = 0;
	for (uint64_t h = 0; h < t->n; h++) {
		uint32_t a = atomic_load(&t->acked[h]);
		uint32_t d =
			atomic_load(&t->dropped[h]) + atomic_load(&t->cut[h]);
		if (a > 1 || (h >= r->produced && a) || (a && d) ||
		    (h < r->produced && !a && !d))
			fail_msg(
				"%s: handle %llu (of %llu produced): acked %u, "
				"dropped %u",
				what, (unsigned long long)h,
				(unsigned long long)r->produced, a, d);
		acked += a;
	}
	assert_int_equal(acked, r->acked);
	assert_int_equal(atomic_load(&t->outstanding), (long)r->unacked);
}

/* Runs to completion: every item acked exactly once. */
static void run_all(const struct shape *sh, uint64_t n, const char *what)
{
	struct ackt t;
	ackt_init(&t, n);
	struct cpat_pipeline *p = build(&t, sh);
	struct cpat_pipeline_result r;
	assert_int_equal(cpat_pipeline_run(p, NULL, CPAT_FOREVER, &r), 0);
	check_run(&t, &r, what);
	assert_int_equal(r.produced, n);
	assert_int_equal(r.acked, n);
	assert_int_equal(r.unacked, 0);
	cpat_pipeline_destroy(p);
	ackt_free(&t);
}

TH_TEST_FN(ack_map_stages_one_and_n_workers_ordered_and_not_ack_each_once)
{
	uint64_t n = (uint64_t)SIZE(20000, 3000);
	for (unsigned w = 1; w <= 3; w += 2)
		for (int ord = 0; ord < 2; ord++) {
			struct shape sh = {{S_MAP, S_FILTER, S_MAP},
					   3,
					   w,
					   ord,
					   0,
					   0,
					   0,
					   0};
			char what[64];
			snprintf(what, sizeof what, "map x3, %u workers, %s", w,
				 ord ? "ordered" : "unordered");
			run_all(&sh, n, what);
		}
	/* No stage at all: the sink acks what the source made. */
	struct shape none = {{0}, 0, 1, 0, 0, 0, 0, 0};
	run_all(&none, n, "no stage");
}

TH_TEST_FN(ack_flat_stages_emitting_none_one_many_ack_input_after_all_outputs)
{
	uint64_t n = (uint64_t)SIZE(10000, 1500);
	for (unsigned w = 1; w <= 3; w += 2)
		for (int ord = 0; ord < 2; ord++)
			for (int many = 0; many < 2; many++) {
				struct shape sh = {
					{S_FLAT, S_MAP}, 2, w, ord, 0, 0, 0,
					many ? 8 : 0};
				struct ackt t;
				ackt_init(&t, many ? n / 8 : n);
				/* Up to 69 outputs: more than a worker's
				 * buffer, so outputs leave mid-input. */
				t.flat_many = many ? 70 : 4;
				struct cpat_pipeline *p = build(&t, &sh);
				struct cpat_pipeline_result r;
				assert_int_equal(cpat_pipeline_run(p, NULL,
								   CPAT_FOREVER,
								   &r),
						 0);
				check_run(&t, &r, "flat");
				assert_int_equal(r.acked, t.n);
				assert_true(r.filtered > 0);
				assert_true(r.expanded > 0);
				cpat_pipeline_destroy(p);
				ackt_free(&t);
			}
}

TH_TEST_FN(ack_batch_by_count_by_time_and_remainder_acks_every_member)
{
	/* By count with a remainder at the end: 1005 = 100 x 10 + 5. */
	struct shape cnt = {{S_MAP, S_BATCH}, 2, 2, 0, 10, CPAT_FOREVER, 0, 0};
	run_all(&cnt, 1005, "batch by count");
	/* By time: batches far larger than what arrives within 50 us. */
	struct shape tm = {{S_MAP, S_BATCH}, 2, 1, 0, 1000, 50000, 0, 0};
	run_all(&tm, (uint64_t)SIZE(5000, 1000), "batch by time");
	/* Explicit small table, batches that fit. */
	struct shape small = {{S_BATCH}, 1, 1, 0, 16, CPAT_FOREVER, 16, 4};
	run_all(&small, 1000, "batch of max_unacked");
}

TH_TEST_FN(ack_flat_then_batch_acks_source_item_when_all_its_outputs_batched)
{
	for (int ord = 0; ord < 2; ord++) {
		struct shape sh = {{S_FLAT, S_MAP, S_BATCH},
				   3,
				   3,
				   ord,
				   7,
				   CPAT_FOREVER,
				   0,
				   0};
		run_all(&sh, (uint64_t)SIZE(8000, 1500), "flat + batch");
		struct ackt t;
		ackt_init(&t, 300);
		t.flat_many = 70;
		struct cpat_pipeline *p = build(&t, &sh);
		struct cpat_pipeline_result r;
		assert_int_equal(cpat_pipeline_run(p, NULL, CPAT_FOREVER, &r),
				 0);
		check_run(&t, &r, "flat many + batch");
		assert_int_equal(r.acked, t.n);
		cpat_pipeline_destroy(p);
		ackt_free(&t);
	}
}

TH_TEST_FN(ack_never_for_items_not_processed_cancel_error_sink_deadline_random)
{
	struct th_rng rng;
	th_rng_init(&rng, 1616);
	long trials = SIZE(60, 16);
	uint64_t n = (uint64_t)SIZE(4000, 800);
	for (long k = 0; k < trials; k++) {
		struct shape sh = {{0},
				   0,
				   1 + (unsigned)th_rng_below(&rng, 3),
				   (int)th_rng_below(&rng, 2),
				   1 + th_rng_below(&rng, 20),
				   CPAT_FOREVER,
				   0,
				   1 + th_rng_below(&rng, 64)};
		switch (th_rng_below(&rng, 4)) {
		case 0:
			sh.kinds[0] = S_MAP;
			sh.kinds[1] = S_FILTER;
			sh.nk = 2;
			break;
		case 1:
			sh.kinds[0] = S_FLAT;
			sh.kinds[1] = S_MAP;
			sh.nk = 2;
			break;
		case 2:
			sh.kinds[0] = S_MAP;
			sh.kinds[1] = S_BATCH;
			sh.nk = 2;
			break;
		default:
			sh.kinds[0] = S_FLAT;
			sh.kinds[1] = S_MAP;
			sh.kinds[2] = S_BATCH;
			sh.nk = 3;
			break;
		}
		if (th_rng_below(&rng, 3) == 0)
			sh.max_unacked = 8 + th_rng_below(&rng, 64);
		if (sh.max_unacked && sh.batch_max > sh.max_unacked)
			sh.batch_max = sh.max_unacked;
		struct ackt t;
		ackt_init(&t, n);
		int how = (int)th_rng_below(&rng, 4);
		int64_t at = (int64_t)th_rng_below(&rng, n);
		int64_t deadline = CPAT_FOREVER;
		if (how == 0)
			t.cancel_at = at;
		else if (how == 1)
			t.map_fail_at = at;
		else if (how == 2)
			t.sink_fail_at = at;
		else
			deadline = cpat_now_ns() + 200000 +
				   (int64_t)th_rng_below(&rng, 2000000);
		t.sink_spin = (unsigned)th_rng_below(&rng, 50);
		struct cpat_pipeline *p = build(&t, &sh);
		/* The failing map must be a map stage: the first one. */
		if (how == 1 && sh.kinds[0] != S_MAP && sh.kinds[1] != S_MAP)
			t.map_fail_at = NONE;
		struct cpat_pipeline_result r;
		int rc = cpat_pipeline_run(p, NULL, deadline, &r);
		char what[96];
		snprintf(what, sizeof what,
			 "trial %ld: shape %d %d %d, %u workers, stop %d at "
			 "%lld",
			 k, sh.kinds[0], sh.kinds[1], sh.kinds[2], sh.workers,
			 how, (long long)at);
		if (rc != 0 && rc != -ECANCELED && rc != -EIO &&
		    rc != -ETIMEDOUT)
			fail_msg("%s: rc %d", what, rc);
		check_run(&t, &r, what);
		if (rc == 0)
			assert_int_equal(r.acked, n);
		cpat_pipeline_destroy(p);
		ackt_free(&t);
	}
}

TH_TEST_FN(ack_source_waits_at_max_unacked_with_slow_sink)
{
	static const int kinds[][3] = {
		{S_MAP, S_MAP, 0}, {S_FLAT, S_MAP, 0}, {S_MAP, S_BATCH, 0}};
	for (unsigned v = 0; v < 3; v++)
		for (size_t m = 1; m <= 16; m += 15) {
			struct shape sh = {{kinds[v][0], kinds[v][1]},
					   2,
					   3,
					   (int)(m & 1),
					   m,
					   20000,
					   m,
					   0};
			struct ackt t;
			ackt_init(&t, (uint64_t)SIZE(600, 200));
			t.sink_spin = 200;
			struct cpat_pipeline *p = build(&t, &sh);
			struct cpat_pipeline_result r;
			assert_int_equal(
				cpat_pipeline_run(p, NULL, CPAT_FOREVER, &r),
				0);
			check_run(&t, &r, "max_unacked");
			assert_int_equal(r.acked, t.n);
			if (atomic_load(&t.max_outstanding) > (long)m)
				fail_msg("shape %u: %ld outstanding, "
					 "max_unacked "
					 "%zu",
					 v, atomic_load(&t.max_outstanding), m);
			assert_true(atomic_load(&t.max_outstanding) >= 1);
			cpat_pipeline_destroy(p);
			ackt_free(&t);
		}
}

static int gen_one(void *out, void *arg)
{
	(void)out;
	(void)arg;
	return 0;
}

static void noack(const void *h, size_t n, void *arg)
{
	(void)h;
	(void)n;
	(void)arg;
}

TH_TEST_FN(ack_set_source_argument_errors_and_acks_with_output_rejected)
{
	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	po.item_size = sizeof(struct it);
	struct cpat_pipeline *p = NULL;
	assert_int_equal(cpat_pipeline_create(&p, &po), 0);
	struct cpat_source_opts so;
	cpat_source_opts_init(&so);
	assert_int_equal(cpat_pipeline_set_source(NULL, &so), -EINVAL);
	assert_int_equal(cpat_pipeline_set_source(p, NULL), -EINVAL);
	assert_int_equal(cpat_pipeline_set_source(p, &so), -EINVAL); /* fn */
	so.fn = src_fn;
	so.ack_size = 8;
	assert_int_equal(cpat_pipeline_set_source(p, &so), -EINVAL);
	so.ack_size = 0;
	so.ack = noack;
	assert_int_equal(cpat_pipeline_set_source(p, &so), -EINVAL);
	so.ack = NULL;
	assert_int_equal(cpat_pipeline_set_generator(p, gen_one, NULL), 0);
	assert_int_equal(cpat_pipeline_set_source(p, &so), -EBUSY);
	cpat_pipeline_destroy(p);

	assert_int_equal(cpat_pipeline_create(&p, &po), 0);
	assert_int_equal(cpat_pipeline_set_source(p, &so), 0);
	assert_int_equal(cpat_pipeline_set_source(p, &so), -EBUSY);
	assert_int_equal(cpat_pipeline_set_feed(p), -EBUSY);
	assert_int_equal(cpat_pipeline_set_generator(p, gen_one, NULL), -EBUSY);
	cpat_pipeline_destroy(p);

	/* Acks with an output channel: the library cannot know when the
	 * caller is done with an item. */
	struct ackt t;
	ackt_init(&t, 10);
	assert_int_equal(cpat_pipeline_create(&p, &po), 0);
	so.arg = &t;
	so.ack_size = 8;
	so.ack = ack_fn;
	so.ack_arg = &t;
	assert_int_equal(cpat_pipeline_set_source(p, &so), 0);
	assert_int_equal(cpat_pipeline_set_output(p), 0);
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), -EINVAL);
	cpat_pipeline_destroy(p);

	/* A batch that only flushes when full must fit in the table; and a
	 * batch must be the last stage. */
	struct shape big = {{S_BATCH}, 1, 1, 0, 32, CPAT_FOREVER, 16, 0};
	p = build(&t, &big);
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), -EINVAL);
	cpat_pipeline_destroy(p);
	assert_int_equal(cpat_pipeline_create(&p, &po), 0);
	assert_int_equal(cpat_pipeline_set_source(p, &so), 0);
	struct cpat_batch_opts bo;
	cpat_batch_opts_init(&bo);
	bo.max_items = 4;
	assert_int_equal(cpat_pipeline_add_batch(p, &bo), 0);
	struct cpat_stage_opts st;
	cpat_stage_opts_init(&st);
	st.map = map_filter;
	st.out_size = sizeof(struct it);
	assert_int_equal(cpat_pipeline_add_stage(p, &st), 0);
	assert_int_equal(cpat_pipeline_set_sink(p, sink_fn, &t), 0);
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), -EINVAL);
	cpat_pipeline_destroy(p);
	ackt_free(&t);
	assert_null(cpat_source_ack(NULL));
	assert_null(cpat_source_token(NULL));
	assert_null(cpat_source_arg(NULL));
}

static int src_noack(void *out, struct cpat_source_ctx *ctx)
{
	struct ackt *t = cpat_source_arg(ctx);
	if (cpat_source_ack(ctx) != NULL)
		t->bad = 4;
	if (t->next >= t->n)
		return 0;
	struct it v = {t->next++, 0};
	memcpy(out, &v, sizeof(v));
	return 1;
}

TH_TEST_FN(ack_context_source_without_acks_counts_none)
{
	struct ackt t;
	ackt_init(&t, 1000);
	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	po.item_size = sizeof(struct it);
	struct cpat_pipeline *p = NULL;
	assert_int_equal(cpat_pipeline_create(&p, &po), 0);
	struct cpat_source_opts so;
	cpat_source_opts_init(&so);
	so.fn = src_noack;
	so.arg = &t;
	assert_int_equal(cpat_pipeline_set_source(p, &so), 0);
	assert_int_equal(cpat_pipeline_set_sink(p, sink_fn, &t), 0);
	struct cpat_pipeline_result r;
	assert_int_equal(cpat_pipeline_run(p, NULL, CPAT_FOREVER, &r), 0);
	assert_int_equal(t.bad, 0);
	assert_int_equal(r.produced, 1000);
	assert_int_equal(r.delivered, 1000);
	assert_int_equal(r.acked, 0);
	assert_int_equal(r.unacked, 0);
	cpat_pipeline_destroy(p);
	ackt_free(&t);
}

TH_TEST_FN(ack_source_token_fires_when_pipeline_cancelled)
{
	struct ackt t;
	ackt_init(&t, 50);
	t.block_at_end = 1;
	struct shape sh = {{S_MAP}, 1, 1, 0, 0, 0, 0, 0};
	struct cpat_pipeline *p = build(&t, &sh);
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), 0);
	/* The source blocks on its token once it has made every item (the
	 * items it still holds are dropped by the cancel). */
	while (!atomic_load(&t.at_end))
		th_relax();
	assert_int_equal(cpat_pipeline_cancel(p), 0);
	struct cpat_pipeline_result r;
	assert_int_equal(cpat_pipeline_wait(p, &r), -ECANCELED);
	assert_true(t.token_seen);
	check_run(&t, &r, "token");
	assert_int_equal(r.produced, t.n);
	cpat_pipeline_destroy(p);
	ackt_free(&t);
}

/* A source about to block hands on what the pipeline holds back for it:
 * every item it made reaches the sink, and is acked, while it waits. */
TH_TEST_FN(ack_source_flush_before_blocking_delivers_and_acks_held_items)
{
	struct ackt t;
	ackt_init(&t, 5);
	t.block_at_end = 1;
	t.flush_at_end = 1;
	struct shape sh = {{S_MAP}, 1, 1, 0, 0, 0, 0, 0};
	struct cpat_pipeline *p = build(&t, &sh);
	assert_int_equal(cpat_pipeline_start(p, NULL, CPAT_FOREVER), 0);
	/* Without the flush the five items would wait in the source thread
	 * for as long as it blocks, and this would not end. */
	while (atomic_load(&t.sink_items) < t.n)
		th_relax();
	while (!atomic_load(&t.at_end))
		th_relax();
	assert_int_equal(t.flush_rc, 0);
	assert_int_equal(cpat_pipeline_cancel(p), 0);
	struct cpat_pipeline_result r;
	assert_int_equal(cpat_pipeline_wait(p, &r), -ECANCELED);
	check_run(&t, &r, "flush");
	assert_int_equal(r.produced, t.n);
	assert_int_equal(r.delivered, t.n);
	assert_int_equal(r.acked, t.n);
	assert_int_equal(r.unacked, 0);
	assert_int_equal(cpat_source_flush(NULL), -EINVAL);
	cpat_pipeline_destroy(p);
	ackt_free(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		TH_TEST(ack_map_stages_one_and_n_workers_ordered_and_not_ack_each_once),
		TH_TEST(ack_flat_stages_emitting_none_one_many_ack_input_after_all_outputs),
		TH_TEST(ack_batch_by_count_by_time_and_remainder_acks_every_member),
		TH_TEST(ack_flat_then_batch_acks_source_item_when_all_its_outputs_batched),
		TH_TEST(ack_never_for_items_not_processed_cancel_error_sink_deadline_random),
		TH_TEST(ack_source_waits_at_max_unacked_with_slow_sink),
		TH_TEST(ack_set_source_argument_errors_and_acks_with_output_rejected),
		TH_TEST(ack_context_source_without_acks_counts_none),
		TH_TEST(ack_source_token_fires_when_pipeline_cancelled),
		TH_TEST(ack_source_flush_before_blocking_delivers_and_acks_held_items),
	};
	const char *filter = getenv("CPAT_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	return TH_RUN("pipeline_ack", tests);
}
