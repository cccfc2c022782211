/*
 * Every buffer the library hands to a user callback is aligned for any
 * object type (max_align_t), as the headers promise, so a callback may
 * store a wide type through it without memcpy: pipeline sources, stages,
 * batches, sinks and drops; fan-out workers; a parallel map's items (the
 * caller's own arrays). Items deliberately have odd sizes (an int beside a
 * max_align_t) so that packing at the item size would show. Callbacks only
 * count what they see; the main thread asserts after the run.
 */
#include "harness.h"

#define AL _Alignof(max_align_t)

static bool aligned(const void *p)
{
	return (uintptr_t)p % AL == 0;
}

/* What a run's callbacks saw: calls, and buffers that were misaligned. */
struct seen {
	_Atomic long calls, bad;
};

static void see(struct seen *s, const void *p)
{
	atomic_fetch_add(&s->calls, 1);
	if (!aligned(p))
		atomic_fetch_add(&s->bad, 1);
}

struct wide {
	max_align_t m;
};

/* ---- pipeline --------------------------------------------------------- */

struct pctx {
	long next, n;
	struct seen src, map_in, map_out, flat_in, sink, batch_item, drop;
};

static int gen(void *out, void *arg)
{
	struct pctx *c = arg;
	see(&c->src, out);
	if (c->next >= c->n)
		return 0;
	*(int *)out = (int)c->next++;
	return 1;
}

/* int -> max_align_t: the store below is what UBSan flags if misaligned. */
static int widen(const void *in, void *out, struct cpat_stage_ctx *ctx)
{
	struct pctx *c = cpat_stage_arg(ctx);
	see(&c->map_in, in);
	see(&c->map_out, out);
	((struct wide *)out)->m = (max_align_t){0};
	memcpy(out, in, sizeof(int));
	return CPAT_STAGE_EMIT;
}

static int flat(const void *in, struct cpat_stage_ctx *ctx)
{
	struct pctx *c = cpat_stage_arg(ctx);
	see(&c->flat_in, in);
	return cpat_stage_emit(ctx, in);
}

static int sink(const void *item, void *arg)
{
	see(&((struct pctx *)arg)->sink, item);
	return 0;
}

static int sink_batch(const void *item, void *arg)
{
	struct pctx *c = arg;
	see(&c->sink, item);
	const struct cpat_batch *b = item;
	for (size_t i = 0; i < b->count; i++)
		see(&c->batch_item, cpat_batch_item(b, i));
	return 0;
}

static int sink_fail(const void *item, void *arg)
{
	see(&((struct pctx *)arg)->sink, item);
	return -EIO;
}

static void drop(const void *item, unsigned stage, void *arg)
{
	(void)stage;
	see(&((struct pctx *)arg)->drop, item);
}

static struct cpat_pipeline *mk(struct pctx *c, long n)
{
	memset(c, 0, sizeof(*c));
	c->n = n;
	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	po.item_size = sizeof(int);
	po.drop = drop;
	po.drop_arg = c;
	struct cpat_pipeline *p;
	assert_int_equal(cpat_pipeline_create(&p, &po), 0);
	assert_int_equal(cpat_pipeline_set_generator(p, gen, c), 0);
	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.name = "widen";
	so.map = widen;
	so.arg = c;
	so.out_size = sizeof(struct wide);
	so.workers = 2;
	assert_int_equal(cpat_pipeline_add_stage(p, &so), 0);
	cpat_stage_opts_init(&so);
	so.name = "flat";
	so.flat = flat;
	so.arg = c;
	so.out_size = sizeof(struct wide);
	assert_int_equal(cpat_pipeline_add_stage(p, &so), 0);
	return p;
}

TH_TEST_FN(pipeline_callbacks_get_buffers_aligned_for_any_type)
{
	(void)state;
	struct pctx c;
	struct cpat_pipeline *p = mk(&c, 300);
	assert_int_equal(cpat_pipeline_set_sink(p, sink, &c), 0);
	assert_int_equal(cpat_pipeline_run(p, NULL, CPAT_FOREVER, NULL), 0);
	cpat_pipeline_destroy(p);
	assert_true(c.map_in.calls == 300 && c.flat_in.calls == 300);
	assert_int_equal(c.sink.calls, 300);
	assert_int_equal(c.src.bad + c.map_in.bad + c.map_out.bad +
				 c.flat_in.bad + c.sink.bad,
			 0);
}

TH_TEST_FN(batch_items_and_dropped_items_are_aligned_for_any_type)
{
	(void)state;
	struct pctx c;
	struct cpat_pipeline *p = mk(&c, 250);
	struct cpat_batch_opts bo;
	cpat_batch_opts_init(&bo);
	bo.max_items = 7;
	assert_int_equal(cpat_pipeline_add_batch(p, &bo), 0);
	assert_int_equal(cpat_pipeline_set_sink(p, sink_batch, &c), 0);
	assert_int_equal(cpat_pipeline_run(p, NULL, CPAT_FOREVER, NULL), 0);
	cpat_pipeline_destroy(p);
	assert_int_equal(c.batch_item.calls, 250);
	assert_int_equal(c.batch_item.bad + c.sink.bad, 0);

	/* A failing sink: what is left goes to the drop callback. */
	p = mk(&c, 250);
	assert_int_equal(cpat_pipeline_set_sink(p, sink_fail, &c), 0);
	assert_int_equal(cpat_pipeline_run(p, NULL, CPAT_FOREVER, NULL), -EIO);
	cpat_pipeline_destroy(p);
	assert_true(c.drop.calls > 0);
	assert_int_equal(c.drop.bad, 0);
}

/* ---- fan-out ------------------------------------------------------------ */

static struct seen fan_in_seen, fan_out_seen;

/* An int in, a max_align_t out: the result buffer follows the input. */
static int fan_widen(const void *in, void *out, unsigned worker, void *arg)
{
	(void)worker;
	(void)arg;
	see(&fan_in_seen, in);
	see(&fan_out_seen, out);
	((struct wide *)out)->m = (max_align_t){0};
	memcpy(out, in, sizeof(int));
	return 0;
}

TH_TEST_FN(fan_out_result_buffer_is_aligned_for_any_type)
{
	(void)state;
	memset(&fan_in_seen, 0, sizeof(fan_in_seen));
	memset(&fan_out_seen, 0, sizeof(fan_out_seen));
	enum { N = 200 };
	struct cpat_chan *in, *out;
	assert_int_equal(cpat_chan_create(&in, sizeof(int), N), 0);
	assert_int_equal(cpat_chan_create(&out, sizeof(struct wide), N), 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(cpat_chan_send(in, &i, NULL), 0);
	assert_int_equal(cpat_chan_close(in), 0);
	struct cpat_fan *f;
	assert_int_equal(
		cpat_fan_out(&f, in, &out, 1, 3, fan_widen, NULL, NULL), 0);
	assert_int_equal(cpat_fan_wait(f), 0);
	cpat_fan_destroy(f);
	long got = 0;
	struct wide w;
	while (cpat_chan_try_recv(out, &w) == 0)
		got++;
	cpat_chan_destroy(in);
	cpat_chan_destroy(out);
	assert_int_equal(got, N);
	assert_int_equal(fan_out_seen.calls, N);
	assert_int_equal(fan_in_seen.bad, 0);
	assert_int_equal(fan_out_seen.bad, 0);
}

/* ---- parallel map ------------------------------------------------------- */

struct pm {
	const struct wide *in;
	struct wide *out;
	_Atomic long wrong; /* a pointer that is not the caller's own item */
};

static int pm_fn(const void *in, void *out, size_t i, void *arg)
{
	struct pm *m = arg;
	if (in != &m->in[i] || out != &m->out[i])
		atomic_fetch_add(&m->wrong, 1);
	*(struct wide *)out = *(const struct wide *)in;
	return 0;
}

TH_TEST_FN(parallel_map_hands_the_callers_own_items)
{
	(void)state;
	enum { N = 100 };
	struct wide *in = calloc(N, sizeof(*in)),
		    *out = calloc(N, sizeof(*out));
	assert_non_null(in);
	assert_non_null(out);
	struct pm m = {in, out, 0};
	assert_int_equal(cpat_parallel_map(in, sizeof(*in), out, sizeof(*out),
					   N, pm_fn, &m, NULL, 3, NULL),
			 0);
	assert_int_equal(m.wrong, 0);
	free(in);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		TH_TEST(pipeline_callbacks_get_buffers_aligned_for_any_type),
		TH_TEST(batch_items_and_dropped_items_are_aligned_for_any_type),
		TH_TEST(fan_out_result_buffer_is_aligned_for_any_type),
		TH_TEST(parallel_map_hands_the_callers_own_items),
	};
	return TH_RUN("align", tests);
}
