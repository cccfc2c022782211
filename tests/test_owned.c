/*
 * Items that own memory: pointers to heap objects sent through channels
 * and pipelines, freed exactly once on every path, as chan.h and
 * pipeline.h ("Items that own memory") say: by the receiver, the stage or
 * sink that took them, or the drop callback.
 *
 * Every object is counted when made and when freed, by its id, so a leak
 * (made > freed at the end) and a double free (an id freed twice) are
 * caught in every build; ASan also sees both, and a use after free.
 * Pipelines of random shape (source kind, map stages that pass the
 * pointer on, replace the object or filter it out, a flat stage, a batch
 * stage, a callback sink or an output channel) are stopped at random
 * points: cancel, a stage's error, the sink's error, a run deadline, and
 * destroy of a running pipeline. The seed is printed (CPAT_TEST_SEED).
 */
#include "harness.h"

#define MAX_OBJS 8192

struct obj {
	uint32_t id;
	uint32_t val;
};

static _Atomic uint32_t g_next;
static _Atomic long g_live;
static _Atomic unsigned char g_freed[MAX_OBJS];
static _Atomic long g_bad; /* a double free, or an id out of range */

static struct obj *obj_new(uint32_t val)
{
	uint32_t id = atomic_fetch_add(&g_next, 1);
	if (id >= MAX_OBJS) {
		atomic_fetch_add(&g_bad, 1);
		return NULL;
	}
	struct obj *o = malloc(sizeof *o);
	if (!o)
		abort();
	o->id = id;
	o->val = val;
	atomic_fetch_add(&g_live, 1);
	return o;
}

static void obj_free(struct obj *o)
{
	if (!o) {
		atomic_fetch_add(&g_bad, 1);
		return;
	}
	if (o->id >= MAX_OBJS || atomic_fetch_add(&g_freed[o->id], 1) != 0) {
		atomic_fetch_add(&g_bad, 1);
		return; /* never free twice, even when the test fails */
	}
	free(o);
	atomic_fetch_sub(&g_live, 1);
}

static struct obj *obj_of(const void *item)
{
	struct obj *o;
	memcpy(&o, item, sizeof o);
	return o;
}

static void counts_reset(void)
{
	atomic_store(&g_next, 0);
	atomic_store(&g_live, 0);
	atomic_store(&g_bad, 0);
	for (size_t i = 0; i < MAX_OBJS; i++)
		atomic_store(&g_freed[i], 0);
}

/* Everything made was freed, once. */
static void counts_check(const char *what)
{
	if (atomic_load(&g_bad) != 0 || atomic_load(&g_live) != 0)
		fail_msg("%s: %ld objects leaked, %ld freed twice or bad", what,
			 atomic_load(&g_live), atomic_load(&g_bad));
	uint32_t n = atomic_load(&g_next);
	for (uint32_t i = 0; i < n; i++)
		if (atomic_load(&g_freed[i]) != 1)
			fail_msg("%s: object %u freed %u times", what, i,
				 atomic_load(&g_freed[i]));
}

/* ---- channels --------------------------------------------------------- */

static void chan_drop(void *elem, void *arg)
{
	(void)arg;
	obj_free(obj_of(elem));
}

struct sender {
	struct th_barrier *go;
	struct cpat_chan *ch;
	struct cpat_token *tok;
	long sent;
};

/* Sends until the channel closes or the token fires: a pointer whose send
 * failed is still the sender's. */
static void *sender_main(void *arg)
{
	struct sender *s = arg;
	th_barrier_wait(s->go);
	for (;;) {
		struct obj *o = obj_new(1);
		if (!o)
			break;
		int rc = cpat_chan_send(s->ch, &o, s->tok);
		if (rc != 0) {
			obj_free(o);
			break;
		}
		s->sent++;
	}
	return NULL;
}

/* Two senders, the main thread receiving a random number, then a cancel
 * or a close, and destroy with elements still buffered: every pointer is
 * freed once, by the receiver, a failed sender or the drop. */
TH_TEST_FN(chan_pointer_elements_freed_once_on_every_path)
{
	(void)state;
	struct th_rng rng;
	th_rng_init(&rng, th_seed() ^ 1);
	long trials = SIZE(200, 40);
	for (long t = 0; t < trials; t++) {
		counts_reset();
		struct cpat_chan_opts o;
		cpat_chan_opts_init(&o);
		o.elem_size = sizeof(struct obj *);
		o.capacity = th_rng_below(&rng, 8);
		o.drop = chan_drop;
		struct cpat_chan *ch;
		assert_int_equal(cpat_chan_create_opts(&ch, &o), 0);
		struct cpat_token *tok;
		assert_int_equal(cpat_token_create(&tok, NULL), 0);
		struct th_barrier go;
		th_barrier_init(&go, 3);
		struct sender s[2] = {{&go, ch, tok, 0}, {&go, ch, tok, 0}};
		pthread_t th[2];
		for (int i = 0; i < 2; i++)
			th_spawn(&th[i], sender_main, &s[i]);
		th_barrier_wait(&go);
		long want = (long)th_rng_below(&rng, 200);
		for (long i = 0; i < want; i++) {
			struct obj *r;
			assert_int_equal(cpat_chan_recv(ch, &r, NULL), 0);
			obj_free(r);
		}
		if (th_rng_below(&rng, 2))
			cpat_token_cancel(tok);
		else
			cpat_chan_close(ch);
		for (int i = 0; i < 2; i++)
			th_join(th[i]);
		th_barrier_destroy(&go);
		cpat_chan_destroy(ch); /* the drop frees what is buffered */
		cpat_token_unref(tok);
		counts_check("channel");
	}
}

/* ---- pipelines -------------------------------------------------------- */

enum { S_PASS, S_REPLACE, S_FILTER, S_FLAT, S_BATCH, S_KINDS };
enum { SRC_GEN, SRC_CTX, SRC_FEED };
enum {
	STOP_NONE,
	STOP_CANCEL,
	STOP_STAGE_ERR,
	STOP_SINK_ERR,
	STOP_DEADLINE,
	STOP_DESTROY,
	STOP_KINDS
};

static const char *stop_name[] = {"none",       "cancel",   "stage error",
				  "sink error", "deadline", "destroy"};

struct trial;

struct sarg {
	struct trial *t;
	unsigned i;
	int kind;
};

struct trial {
	struct cpat_pipeline *p;
	unsigned nstages;
	struct sarg s[4];
	bool batch_last, output;
	int src, stop;
	uint64_t n, next, at; /* source items; the next; where to stop */
	unsigned err_stage;   /* STOP_STAGE_ERR: which stage */
	uint64_t sink_seen;   /* items the sink was given */
	_Atomic long dropped;
};

static void maybe_stop(struct trial *t, uint64_t idx)
{
	if (t->stop == STOP_CANCEL && idx == t->at)
		cpat_pipeline_cancel(t->p);
}

/* A little work per item, so that a short run deadline falls mid-run. */
static void work(void)
{
	int64_t end = cpat_now_ns() + 2 * CPAT_USEC;
	while (cpat_now_ns() < end)
		;
}

static int map_fn(const void *in, void *out, struct cpat_stage_ctx *x)
{
	struct sarg *a = cpat_stage_arg(x);
	struct trial *t = a->t;
	struct obj *o = obj_of(in);
	uint64_t idx = cpat_stage_index(x);
	work();
	maybe_stop(t, idx);
	if (t->stop == STOP_STAGE_ERR && t->err_stage == a->i && idx == t->at)
		return -EIO; /* the input goes to the drop */
	switch (a->kind) {
	case S_REPLACE: {
		struct obj *r = obj_new(o->val + 1);
		if (!r)
			return -ENOMEM;
		obj_free(o); /* replaced: the stage frees the input */
		o = r;
		break;
	}
	case S_FILTER:
		if (o->val % 3 == 0) {
			obj_free(o); /* skipped: the stage frees it */
			return CPAT_STAGE_SKIP;
		}
		break;
	default:
		o->val++;
		break;
	}
	memcpy(out, &o, sizeof o);
	return CPAT_STAGE_EMIT;
}

/* 0 to 3 new objects per input; on an error (its own, or emit's) the
 * input is left to the drop, and an object emit did not take is freed
 * here. */
static int flat_fn(const void *in, struct cpat_stage_ctx *x)
{
	struct sarg *a = cpat_stage_arg(x);
	struct trial *t = a->t;
	struct obj *o = obj_of(in);
	uint64_t idx = cpat_stage_index(x);
	work();
	maybe_stop(t, idx);
	unsigned k = o->val % 4;
	bool fail = t->stop == STOP_STAGE_ERR && t->err_stage == a->i &&
		    idx == t->at;
	for (unsigned j = 0; j < k; j++) {
		if (fail && j == k / 2)
			return -EIO; /* after emitting some, or none */
		struct obj *r = obj_new(o->val + j);
		if (!r)
			return -ENOMEM;
		int rc = cpat_stage_emit(x, &r);
		if (rc != 0) {
			obj_free(r);
			return rc;
		}
	}
	if (fail)
		return -EIO;
	obj_free(o); /* done with the input */
	return 0;
}

static void free_batch(const void *item)
{
	const struct cpat_batch *b = item;
	for (size_t i = 0; i < b->count; i++)
		obj_free(obj_of(cpat_batch_item(b, i)));
}

static int sink_fn(const void *item, void *arg)
{
	struct trial *t = arg;
	uint64_t k = t->sink_seen++;
	if (t->stop == STOP_CANCEL && k == t->at)
		cpat_pipeline_cancel(t->p);
	if (t->stop == STOP_SINK_ERR && k == t->at)
		return -EIO; /* the item goes to the drop */
	if (t->batch_last)
		free_batch(item);
	else
		obj_free(obj_of(item));
	return 0;
}

static void drop_fn(const void *item, unsigned stage, void *arg)
{
	struct trial *t = arg;
	atomic_fetch_add(&t->dropped, 1);
	if (t->batch_last && stage == t->nstages)
		free_batch(item); /* a batch: the batch stage's output */
	else
		obj_free(obj_of(item));
}

static int gen_fn(void *out, void *arg)
{
	struct trial *t = arg;
	if (t->next == t->n)
		return 0;
	struct obj *o = obj_new((uint32_t)t->next++);
	if (!o)
		return -ENOMEM;
	memcpy(out, &o, sizeof o);
	return 1;
}

static int ctx_fn(void *out, struct cpat_source_ctx *x)
{
	return gen_fn(out, cpat_source_arg(x));
}

static void build(struct trial *t, struct th_rng *rng)
{
	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	po.item_size = sizeof(struct obj *);
	po.source_capacity = 1 + th_rng_below(rng, 16);
	po.drop = drop_fn;
	po.drop_arg = t;
	assert_int_equal(cpat_pipeline_create(&t->p, &po), 0);
	t->src = (int)th_rng_below(rng, 3);
	t->output = t->src != SRC_FEED && th_rng_below(rng, 3) == 0;
	if (t->src == SRC_GEN) {
		assert_int_equal(cpat_pipeline_set_generator(t->p, gen_fn, t),
				 0);
	} else if (t->src == SRC_CTX) {
		struct cpat_source_opts so;
		cpat_source_opts_init(&so);
		so.fn = ctx_fn;
		so.arg = t;
		assert_int_equal(cpat_pipeline_set_source(t->p, &so), 0);
	} else {
		assert_int_equal(cpat_pipeline_set_feed(t->p), 0);
	}
	t->nstages = 1 + (unsigned)th_rng_below(rng, 3);
	bool flat_used = false;
	for (unsigned i = 0; i < t->nstages; i++) {
		int kind = (int)th_rng_below(rng, S_KINDS);
		bool last = i + 1 == t->nstages;
		if (kind == S_BATCH && (!last || t->output))
			kind = S_PASS;
		if (kind == S_FLAT && flat_used)
			kind = S_REPLACE;
		flat_used |= kind == S_FLAT;
		t->s[i] = (struct sarg){t, i, kind};
		if (kind == S_BATCH) {
			struct cpat_batch_opts bo;
			cpat_batch_opts_init(&bo);
			bo.max_items = 1 + th_rng_below(rng, 8);
			bo.flush_ns = th_rng_below(rng, 2) ? CPAT_FOREVER
							   : 100 * CPAT_USEC;
			bo.flush_on_cancel = th_rng_below(rng, 2);
			bo.out_capacity = 1 + th_rng_below(rng, 4);
			assert_int_equal(cpat_pipeline_add_batch(t->p, &bo), 0);
			t->batch_last = true;
			continue;
		}
		struct cpat_stage_opts so;
		cpat_stage_opts_init(&so);
		so.name = "owned";
		if (kind == S_FLAT)
			so.flat = flat_fn;
		else
			so.map = map_fn;
		so.arg = &t->s[i];
		so.out_size = sizeof(struct obj *);
		so.workers = 1 + (unsigned)th_rng_below(rng, 3);
		so.ordered = th_rng_below(rng, 2);
		so.out_capacity = 1 + th_rng_below(rng, 16);
		assert_int_equal(cpat_pipeline_add_stage(t->p, &so), 0);
	}
	if (t->output)
		assert_int_equal(cpat_pipeline_set_output(t->p), 0);
	else
		assert_int_equal(cpat_pipeline_set_sink(t->p, sink_fn, t), 0);
}

/* Feeds from the main thread; a feed that fails leaves the object ours. */
static void feed_all(struct trial *t)
{
	while (t->next < t->n) {
		struct obj *o = obj_new((uint32_t)t->next++);
		if (!o)
			break;
		if (cpat_pipeline_feed(t->p, &o, NULL) != 0) {
			obj_free(o);
			break;
		}
	}
	int rc = cpat_pipeline_feed_close(t->p);
	if (rc != 0 && rc != -EPIPE)
		fail_msg("feed_close: %d", rc);
}

/* Receives some of the output channel, then leaves the rest in it (the
 * drop frees it at destroy). */
static void take_some(struct trial *t, struct th_rng *rng)
{
	struct cpat_chan *out = cpat_pipeline_output(t->p);
	long want = (long)th_rng_below(rng, (uint64_t)t->n + 1);
	for (long i = 0; i < want; i++) {
		struct obj *o;
		if (cpat_chan_recv(out, &o, NULL) != 0)
			return;
		obj_free(o);
	}
}

/* Per stop kind: trials, and items the drop freed (the paths taken). */
static long g_trials[STOP_KINDS], g_drops[STOP_KINDS];

static void one_trial(struct th_rng *rng, long trial)
{
	struct trial *t = calloc(1, sizeof *t);
	assert_non_null(t);
	t->n = 1 + th_rng_below(rng, 200);
	t->stop = (int)th_rng_below(rng, STOP_KINDS);
	t->at = th_rng_below(rng, t->n);
	build(t, rng);
	t->err_stage = (unsigned)th_rng_below(rng, t->nstages);
	if (t->stop == STOP_SINK_ERR && t->output)
		t->stop = STOP_CANCEL;
	int64_t dl = t->stop == STOP_DEADLINE
			     ? cpat_now_ns() + (int64_t)th_rng_below(rng, 400) *
						       CPAT_USEC
			     : CPAT_FOREVER;
	assert_int_equal(cpat_pipeline_start(t->p, NULL, dl), 0);
	if (t->src == SRC_FEED && t->stop != STOP_DESTROY)
		feed_all(t);
	struct cpat_pipeline_result res;
	memset(&res, 0, sizeof res);
	int rc = 0;
	if (t->stop == STOP_DESTROY) {
		/* Destroy while running: it cancels and waits. */
		if (t->output)
			take_some(t, rng);
	} else {
		if (t->output) {
			take_some(t, rng);
			/* Stop reading: a pipeline blocked on its full output
			 * must then be cancelled to end. */
			cpat_pipeline_cancel(t->p);
		}
		rc = cpat_pipeline_wait(t->p, &res);
		if (res.produced + res.expanded !=
		    res.delivered + res.filtered + res.not_processed +
			    res.batched)
			fail_msg("trial %ld (%s): the accounting does not add "
				 "up",
				 trial, stop_name[t->stop]);
		if (res.not_processed != (uint64_t)atomic_load(&t->dropped))
			fail_msg("trial %ld: %llu not processed, %ld dropped",
				 trial, (unsigned long long)res.not_processed,
				 atomic_load(&t->dropped));
		if (t->stop == STOP_NONE && !t->output && rc != 0)
			fail_msg("trial %ld: rc %d without a stop", trial, rc);
	}
	cpat_pipeline_destroy(t->p);
	g_trials[t->stop]++;
	g_drops[t->stop] += atomic_load(&t->dropped);
	char what[96];
	snprintf(what, sizeof what, "trial %ld (stop: %s, %u stages, rc %d)",
		 trial, stop_name[t->stop], t->nstages, rc);
	counts_check(what);
	free(t);
}

TH_TEST_FN(pipeline_owned_items_freed_once_on_every_path)
{
	(void)state;
	struct th_rng rng;
	th_rng_init(&rng, th_seed());
	long trials = SIZE(400, 80);
	for (long i = 0; i < trials; i++) {
		counts_reset();
		one_trial(&rng, i);
	}
	for (int k = 0; k < STOP_KINDS; k++)
		fprintf(stderr,
			"# stop %-10s: %3ld trials, %5ld items dropped\n",
			stop_name[k], g_trials[k], g_drops[k]);
}

/* The output channel's leftovers: counted delivered by wait, handed to the
 * drop at destroy (not before: the caller may still receive them). */
TH_TEST_FN(pipeline_output_channel_leftovers_go_to_drop_at_destroy)
{
	(void)state;
	counts_reset();
	struct trial *t = calloc(1, sizeof *t);
	assert_non_null(t);
	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	po.item_size = sizeof(struct obj *);
	po.drop = drop_fn;
	po.drop_arg = t;
	assert_int_equal(cpat_pipeline_create(&t->p, &po), 0);
	t->n = 10;
	assert_int_equal(cpat_pipeline_set_generator(t->p, gen_fn, t), 0);
	assert_int_equal(cpat_pipeline_set_output(t->p), 0);
	struct cpat_pipeline_result res;
	assert_int_equal(cpat_pipeline_run(t->p, NULL, CPAT_FOREVER, &res), 0);
	assert_int_equal(res.delivered, 10);
	assert_int_equal(atomic_load(&t->dropped), 0);
	assert_int_equal(atomic_load(&g_live), 10);
	struct obj *o;
	assert_int_equal(cpat_chan_recv(cpat_pipeline_output(t->p), &o, NULL),
			 0);
	obj_free(o);
	cpat_pipeline_destroy(t->p);
	assert_int_equal(atomic_load(&t->dropped), 9);
	counts_check("output channel");
	free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		TH_TEST(chan_pointer_elements_freed_once_on_every_path),
		TH_TEST(pipeline_owned_items_freed_once_on_every_path),
		TH_TEST(pipeline_output_channel_leftovers_go_to_drop_at_destroy),
	};
	return TH_RUN("owned", tests);
}
