/*
 * Every blocking call of every public header answers a token: called
 * with a token that another thread fires while the call blocks, it returns
 * within a bounded time, with the token's cause.
 *
 * How the list was made: `grep -n Blocks include/cpattern/NAME.h` for
 * every header (and
 * "blocks" in the overviews), then every function documented as blocking
 * is a case of the table below, or is named in the list of exceptions
 * after it with the reason. Each case sets up an object in which its call
 * must block (a full channel, a pool whose one worker is held, a group at
 * its limit, a pipeline whose stage waits for the run to stop, ...), makes
 * the call on the main thread, and a token fires from another thread:
 *
 * - by its deadline, from the library's timer thread: the call returns
 *   -ETIMEDOUT;
 * - by cpat_token_cancel_cause() from a thread of the test: -ECANCELED.
 *
 * The checks are one-sided: the call returned after the token fired (it
 * did not give up early, for any other reason) and at most BOUND after.
 * When the token fires, after about FIRE_NS, only gives the call time to
 * block first; the outcome never depends on it (a call made under a token
 * that has already fired must return its cause at once, too).
 */
#include "harness.h"

#define BOUND (2 * CPAT_SEC)
#define FIRE_NS (20 * CPAT_MSEC)
#define GENEROUS (30 * CPAT_SEC)

/* What a case needs; one per run, zeroed. */
struct wctx {
	struct cpat_token *tok;  /* fires while the call blocks */
	struct cpat_token *gate; /* holds tasks until teardown */
	struct cpat_chan *ch, *ch2;
	struct cpat_pool *pool;
	struct cpat_group *group;
	struct cpat_fan *fan;
	struct cpat_pipeline *p;
	struct cpat_sem *sem;
	struct cpat_rate *rate;
	struct cpat_timer *timer;
	struct cpat_pipeline_result res;
	_Atomic int inside; /* a held task or stage is running */
	long v[8];
};

/* ---- helpers --------------------------------------------------------- */

static void wait_flag(_Atomic int *f)
{
	int64_t end = cpat_now_ns() + GENEROUS;
	while (!atomic_load(f) && cpat_now_ns() < end)
		th_relax();
	assert_true(atomic_load(f));
}

static struct cpat_chan *mkchan(size_t cap)
{
	struct cpat_chan *ch = NULL;
	assert_int_equal(cpat_chan_create(&ch, sizeof(long), cap), 0);
	return ch;
}

static struct cpat_chan *mkfull(size_t cap)
{
	struct cpat_chan *ch = mkchan(cap);
	long v = 1;
	for (size_t i = 0; i < cap; i++)
		assert_int_equal(cpat_chan_try_send(ch, &v), 0);
	return ch;
}

static void mkgate(struct wctx *c)
{
	assert_int_equal(cpat_token_create(&c->gate, NULL), 0);
}

/* A task that holds its worker until the gate opens. */
static int held_task(void *arg, struct cpat_token *tok)
{
	(void)tok;
	struct wctx *c = arg;
	atomic_store(&c->inside, 1);
	cpat_token_wait(c->gate, CPAT_FOREVER);
	return 0;
}

static int quick_task(void *arg, struct cpat_token *tok)
{
	(void)arg;
	(void)tok;
	return 0;
}

/* A pool of one worker, held, with a full queue of 2. */
static void mkpool_held(struct wctx *c, bool dynamic)
{
	mkgate(c);
	if (dynamic) {
		struct cpat_dynpool_opts o;
		cpat_dynpool_opts_init(&o);
		o.min_workers = o.max_workers = 1;
		o.queue_capacity = 2;
		assert_int_equal(cpat_dynpool_create(&c->pool, &o), 0);
	} else {
		struct cpat_pool_opts o;
		cpat_pool_opts_init(&o);
		o.workers = 1;
		o.queue_capacity = 2;
		assert_int_equal(cpat_pool_create(&c->pool, &o), 0);
	}
	struct cpat_task t = {held_task, NULL, c};
	assert_int_equal(cpat_pool_submit(c->pool, &t, NULL), 0);
	wait_flag(&c->inside);
	struct cpat_task q = {quick_task, NULL, NULL};
	while (cpat_pool_try_submit(c->pool, &q) == 0)
		;
}

static void open_gate(struct wctx *c)
{
	if (c->gate)
		cpat_token_cancel(c->gate);
}

static void down_pool(struct wctx *c)
{
	open_gate(c);
	cpat_pool_destroy(c->pool);
}

/* ---- channels, token, timer ------------------------------------------ */

static void su_full(struct wctx *c)
{
	c->ch = mkfull(1);
}
static void su_empty(struct wctx *c)
{
	c->ch = mkchan(1);
}
static void su_rendezvous(struct wctx *c)
{
	c->ch = mkchan(0);
}
static void td_chan(struct wctx *c)
{
	cpat_chan_destroy(c->ch);
	cpat_chan_destroy(c->ch2);
}

static int ca_send(struct wctx *c)
{
	return cpat_chan_send(c->ch, &c->v[0], c->tok);
}

static int ca_send_until(struct wctx *c)
{
	return cpat_chan_send_until(c->ch, &c->v[0], c->tok,
				    cpat_now_ns() + GENEROUS);
}

static int ca_recv(struct wctx *c)
{
	return cpat_chan_recv(c->ch, &c->v[0], c->tok);
}

static int ca_recv_until(struct wctx *c)
{
	return cpat_chan_recv_until(c->ch, &c->v[0], c->tok,
				    cpat_now_ns() + GENEROUS);
}

static int ca_send_many(struct wctx *c)
{
	size_t n = 0;
	return cpat_chan_send_many(c->ch, c->v, 4, &n, c->tok, CPAT_FOREVER);
}

static int ca_recv_many(struct wctx *c)
{
	size_t n = 0;
	return cpat_chan_recv_many(c->ch, c->v, 4, &n, c->tok, CPAT_FOREVER);
}

static void su_select(struct wctx *c)
{
	c->ch = mkchan(1);
	c->ch2 = mkfull(1);
}

static int ca_select(struct wctx *c)
{
	struct cpat_select_case cs[2] = {
		{c->ch, CPAT_SELECT_RECV, &c->v[0], 0},
		{c->ch2, CPAT_SELECT_SEND, &c->v[1], 0},
	};
	return cpat_chan_select(cs, 2, c->tok, CPAT_FOREVER);
}

static void su_none(struct wctx *c)
{
	(void)c;
}
static void td_none(struct wctx *c)
{
	(void)c;
}

static int ca_token_wait(struct wctx *c)
{
	return cpat_token_wait(c->tok, CPAT_FOREVER);
}

static void su_timer(struct wctx *c)
{
	assert_int_equal(
		cpat_timer_create(&c->timer, cpat_now_ns() + 3600 * CPAT_SEC),
		0);
}

static int ca_timer_recv(struct wctx *c)
{
	int64_t at;
	return cpat_chan_recv(cpat_timer_chan(c->timer), &at, c->tok);
}

static void td_timer(struct wctx *c)
{
	cpat_timer_destroy(c->timer);
}

/* ---- pools ------------------------------------------------------------ */

static void su_pool(struct wctx *c)
{
	mkpool_held(c, false);
}
static void su_dynpool(struct wctx *c)
{
	mkpool_held(c, true);
}

static int ca_submit(struct wctx *c)
{
	struct cpat_task t = {quick_task, NULL, NULL};
	return cpat_pool_submit(c->pool, &t, c->tok);
}

static int ca_submit_until(struct wctx *c)
{
	struct cpat_task t = {quick_task, NULL, NULL};
	return cpat_pool_submit_until(c->pool, &t, c->tok,
				      cpat_now_ns() + GENEROUS);
}

static int ca_submit_many(struct wctx *c)
{
	struct cpat_task t[2] = {{quick_task, NULL, NULL},
				 {quick_task, NULL, NULL}};
	size_t n = 0;
	return cpat_pool_submit_many(c->pool, t, 2, &n, c->tok, CPAT_FOREVER);
}

static int ca_wait_idle(struct wctx *c)
{
	return cpat_pool_wait_idle(c->pool, c->tok, CPAT_FOREVER);
}

static int ca_shutdown(struct wctx *c)
{
	struct cpat_pool_report r;
	int rc = cpat_pool_shutdown_until(c->pool, CPAT_POOL_DRAIN, c->tok,
					  CPAT_FOREVER, &r);
	/* The grace is over: the held task still runs, the rest was
	 * discarded. */
	c->v[0] = (long)r.still_running;
	return rc;
}

/* ---- groups ----------------------------------------------------------- */

static void su_group(struct wctx *c)
{
	mkgate(c);
	struct cpat_group_opts o;
	cpat_group_opts_init(&o);
	o.limit = 1;
	assert_int_equal(cpat_group_create(&c->group, &o), 0);
	assert_int_equal(cpat_group_go(c->group, held_task, c), 0);
	wait_flag(&c->inside);
}

/* go at the limit answers the group token: here a child of c->tok. (The
 * token exists before this setup: if its deadline passes during it, the
 * held task is refused and the go under test returns the cause at once.) */
static void su_group_go(struct wctx *c)
{
	mkgate(c);
	struct cpat_group_opts o;
	cpat_group_opts_init(&o);
	o.limit = 1;
	o.parent = c->tok;
	assert_int_equal(cpat_group_create(&c->group, &o), 0);
	int rc = cpat_group_go(c->group, held_task, c);
	if (rc == 0)
		wait_flag(&c->inside);
	else
		assert_int_equal(rc, cpat_token_status(c->tok));
}

static int ca_group_go(struct wctx *c)
{
	return cpat_group_go(c->group, quick_task, NULL);
}

static int ca_group_wait(struct wctx *c)
{
	return cpat_group_wait_until(c->group, c->tok, CPAT_FOREVER);
}

static void td_group(struct wctx *c)
{
	open_gate(c);
	cpat_group_destroy(c->group);
}

/* ---- fans ------------------------------------------------------------- */

static int fan_copy(const void *in, void *out, unsigned w, void *arg)
{
	(void)w;
	(void)arg;
	memcpy(out, in, sizeof(long));
	return 0;
}

static uint64_t fan_seq(const void *item, void *arg)
{
	(void)arg;
	return (uint64_t) * (const long *)item;
}

/* Fans whose input never ends. */
static void su_fan_out(struct wctx *c)
{
	c->ch = mkchan(4);
	c->ch2 = mkchan(4);
	assert_int_equal(cpat_fan_out(&c->fan, c->ch, &c->ch2, 1, 2, fan_copy,
				      NULL, NULL),
			 0);
}

static void su_fan_in(struct wctx *c)
{
	c->ch = mkchan(4);
	c->ch2 = mkchan(4);
	assert_int_equal(cpat_fan_in(&c->fan, &c->ch, 1, c->ch2, NULL), 0);
}

static void su_fan_merge(struct wctx *c)
{
	c->ch = mkchan(4);
	c->ch2 = mkchan(4);
	assert_int_equal(cpat_fan_merge_ordered(&c->fan, &c->ch, 1, c->ch2,
						fan_seq, NULL, 0, 4, NULL),
			 0);
}

static void su_fan_bcast(struct wctx *c)
{
	c->ch = mkchan(4);
	c->ch2 = mkchan(4);
	assert_int_equal(cpat_fan_broadcast(&c->fan, c->ch, &c->ch2, 1,
					    CPAT_FAN_BLOCK_ALL, NULL),
			 0);
}

static int ca_fan_wait(struct wctx *c)
{
	return cpat_fan_wait_until(c->fan, c->tok, CPAT_FOREVER);
}

static void td_fan(struct wctx *c)
{
	cpat_fan_destroy(c->fan);
	td_chan(c);
}

/* ---- parallel map ----------------------------------------------------- */

/* Each item waits for the token, as an item that watches it would. */
static int pmap_fn(const void *in, void *out, size_t i, void *arg)
{
	(void)in;
	(void)out;
	(void)i;
	struct wctx *c = arg;
	cpat_token_wait(c->tok, CPAT_FOREVER);
	return 0;
}

static int ca_parallel_map(struct wctx *c)
{
	static char in[1024], out[1024];
	return cpat_parallel_map(in, 1, out, 1, sizeof in, pmap_fn, c, NULL, 2,
				 c->tok);
}

/* ---- pipelines -------------------------------------------------------- */

/* A stage that holds its first item until the run stops. */
static int held_stage(const void *in, void *out, struct cpat_stage_ctx *x)
{
	struct wctx *c = cpat_stage_arg(x);
	atomic_store(&c->inside, 1);
	cpat_token_wait(cpat_stage_token(x), CPAT_FOREVER);
	memcpy(out, in, sizeof(long));
	return CPAT_STAGE_EMIT;
}

static int null_sink(const void *item, void *arg)
{
	(void)item;
	(void)arg;
	return 0;
}

static void mkpipe(struct wctx *c, size_t cap)
{
	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	po.item_size = sizeof(long);
	po.source_capacity = cap;
	assert_int_equal(cpat_pipeline_create(&c->p, &po), 0);
}

static void add_held_stage(struct wctx *c)
{
	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.name = "held";
	so.map = held_stage;
	so.arg = c;
	so.out_size = sizeof(long);
	so.out_capacity = 2;
	assert_int_equal(cpat_pipeline_add_stage(c->p, &so), 0);
}

/* A feed whose stage holds an item and whose first channel is full. */
static void su_feed(struct wctx *c)
{
	mkpipe(c, 4);
	assert_int_equal(cpat_pipeline_set_feed(c->p), 0);
	add_held_stage(c);
	assert_int_equal(cpat_pipeline_set_sink(c->p, null_sink, NULL), 0);
	assert_int_equal(cpat_pipeline_start(c->p, NULL, CPAT_FOREVER), 0);
	long v = 0;
	assert_int_equal(cpat_pipeline_feed(c->p, &v, NULL), 0);
	wait_flag(&c->inside);
	while (cpat_pipeline_feed_until(c->p, &v, NULL, 0) == 0)
		;
}

static int ca_feed(struct wctx *c)
{
	return cpat_pipeline_feed(c->p, &c->v[0], c->tok);
}

static int ca_feed_until(struct wctx *c)
{
	return cpat_pipeline_feed_until(c->p, &c->v[0], c->tok,
					cpat_now_ns() + GENEROUS);
}

static int ca_pipeline_wait(struct wctx *c)
{
	return cpat_pipeline_wait_until(c->p, c->tok, CPAT_FOREVER, &c->res);
}

static void td_pipe(struct wctx *c)
{
	cpat_pipeline_destroy(c->p);
}

/* A generator that waits for its input under the run's token. */
static int blocked_gen(void *out, void *arg)
{
	struct wctx *c = arg;
	(void)out;
	struct cpat_token *tok = cpat_pipeline_token(c->p);
	cpat_token_wait(tok, CPAT_FOREVER);
	return cpat_token_status(tok); /* stopped: not an end of input */
}

static void su_run_gen(struct wctx *c)
{
	mkpipe(c, 4);
	assert_int_equal(cpat_pipeline_set_generator(c->p, blocked_gen, c), 0);
	assert_int_equal(cpat_pipeline_set_sink(c->p, null_sink, NULL), 0);
}

/* The run's result is the cause of its token. */
static int ca_run(struct wctx *c)
{
	return cpat_pipeline_run(c->p, c->tok, CPAT_FOREVER, &c->res);
}

/* A sink that waits (for a slow peer, say) under the run's token. */
static int one_gen(void *out, void *arg)
{
	long *left = arg;
	if (*left == 0)
		return 0;
	(*left)--;
	memset(out, 0, sizeof(long));
	return 1;
}

static int blocked_sink(const void *item, void *arg)
{
	(void)item;
	struct wctx *c = arg;
	struct cpat_token *t = cpat_pipeline_token(c->p);
	cpat_token_wait(t, CPAT_FOREVER);
	/*
	 * Report the interruption, as a real sink would. Returning 0 would
	 * deliver the run's only item, and if the threads then finish before
	 * the firing thread's callbacks record the cause, the run has
	 * completed and rightly reports success (seen once, in a run of the
	 * whole suite on 2 CPUs).
	 */
	return cpat_token_status(t);
}

static void su_run_sink(struct wctx *c)
{
	mkpipe(c, 4);
	c->v[0] = 1;
	assert_int_equal(cpat_pipeline_set_generator(c->p, one_gen, &c->v[0]),
			 0);
	assert_int_equal(cpat_pipeline_set_sink(c->p, blocked_sink, c), 0);
}

/* A context source that flushes after every item: cpat_source_flush()
 * blocks once the held stage has filled the channels. */
static int flushing_src(void *out, struct cpat_source_ctx *x)
{
	memset(out, 0, sizeof(long));
	int rc = cpat_source_flush(x);
	return rc < 0 ? rc : 1;
}

static void su_run_flush(struct wctx *c)
{
	mkpipe(c, 2);
	struct cpat_source_opts so;
	cpat_source_opts_init(&so);
	so.fn = flushing_src;
	assert_int_equal(cpat_pipeline_set_source(c->p, &so), 0);
	add_held_stage(c);
	assert_int_equal(cpat_pipeline_set_sink(c->p, null_sink, NULL), 0);
}

/* A flat stage that emits until emit fails: it blocks once the held stage
 * after it has filled the channel between them. */
static int flood(const void *in, struct cpat_stage_ctx *x)
{
	long v = *(const long *)in;
	for (;;) {
		int rc = cpat_stage_emit(x, &v);
		if (rc != 0)
			return rc;
	}
}

static void su_run_emit(struct wctx *c)
{
	mkpipe(c, 4);
	c->v[0] = 1;
	assert_int_equal(cpat_pipeline_set_generator(c->p, one_gen, &c->v[0]),
			 0);
	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.name = "flood";
	so.flat = flood;
	so.out_size = sizeof(long);
	so.out_capacity = 2;
	assert_int_equal(cpat_pipeline_add_stage(c->p, &so), 0);
	add_held_stage(c);
	assert_int_equal(cpat_pipeline_set_sink(c->p, null_sink, NULL), 0);
}

/* ---- semaphore, rate limiter ----------------------------------------- */

static void su_sem(struct wctx *c)
{
	assert_int_equal(cpat_sem_create(&c->sem, 1), 0);
	assert_int_equal(cpat_sem_try_acquire(c->sem, 1), 0);
}

static int ca_sem_acquire(struct wctx *c)
{
	return cpat_sem_acquire(c->sem, 1, c->tok);
}

static int ca_sem_acquire_until(struct wctx *c)
{
	return cpat_sem_acquire_until(c->sem, 1, c->tok,
				      cpat_now_ns() + GENEROUS);
}

static void td_sem(struct wctx *c)
{
	assert_int_equal(cpat_sem_release(c->sem, 1), 0);
	cpat_sem_destroy(c->sem);
}

/* One event per 1000 s, the bucket empty. */
static void su_rate(struct wctx *c)
{
	assert_int_equal(cpat_rate_create(&c->rate, 0.001, 1), 0);
	assert_int_equal(cpat_rate_allow(c->rate), 1);
}

static int ca_rate_wait(struct wctx *c)
{
	return cpat_rate_wait(c->rate, c->tok);
}

/* A deadline later than the event's time, or the call would give up at
 * once. */
static int ca_rate_wait_until(struct wctx *c)
{
	return cpat_rate_wait_until(c->rate, c->tok,
				    cpat_now_ns() + 2000 * CPAT_SEC);
}

static void td_rate(struct wctx *c)
{
	cpat_rate_destroy(c->rate);
}

/* ---- the table -------------------------------------------------------- */

struct wcase {
	const char *name; /* the call under test */
	void (*setup)(struct wctx *c);
	int (*call)(struct wctx *c);
	void (*teardown)(struct wctx *c);
	bool returns_zero; /* the token is what it waits for */
	bool tok_in_setup; /* setup uses the token (else made after it) */
};

static const struct wcase cases[] = {
	/* chan.h */
	{"cpat_chan_send", su_full, ca_send, td_chan, false, false},
	{"cpat_chan_send (rendezvous)", su_rendezvous, ca_send, td_chan, false,
	 false},
	{"cpat_chan_send_until", su_full, ca_send_until, td_chan, false, false},
	{"cpat_chan_recv", su_empty, ca_recv, td_chan, false, false},
	{"cpat_chan_recv (rendezvous)", su_rendezvous, ca_recv, td_chan, false,
	 false},
	{"cpat_chan_recv_until", su_empty, ca_recv_until, td_chan, false,
	 false},
	{"cpat_chan_send_many", su_full, ca_send_many, td_chan, false, false},
	{"cpat_chan_recv_many", su_empty, ca_recv_many, td_chan, false, false},
	{"cpat_chan_select", su_select, ca_select, td_chan, false, false},
	/* token.h */
	{"cpat_token_wait", su_none, ca_token_wait, td_none, true, false},
	/* timer.h: a timer's fire is received on its channel */
	{"cpat_chan_recv (timer channel)", su_timer, ca_timer_recv, td_timer,
	 false, false},
	/* pool.h */
	{"cpat_pool_submit", su_pool, ca_submit, down_pool, false, false},
	{"cpat_pool_submit_until", su_pool, ca_submit_until, down_pool, false,
	 false},
	{"cpat_pool_submit_many", su_pool, ca_submit_many, down_pool, false,
	 false},
	{"cpat_pool_wait_idle", su_pool, ca_wait_idle, down_pool, false, false},
	{"cpat_pool_shutdown_until", su_pool, ca_shutdown, down_pool, false,
	 false},
	/* dynpool.h: the same functions on a dynamic pool at its maximum */
	{"cpat_pool_submit (dynpool)", su_dynpool, ca_submit, down_pool, false,
	 false},
	{"cpat_pool_submit_many (dynpool)", su_dynpool, ca_submit_many,
	 down_pool, false, false},
	{"cpat_pool_wait_idle (dynpool)", su_dynpool, ca_wait_idle, down_pool,
	 false, false},
	{"cpat_pool_shutdown_until (dynpool)", su_dynpool, ca_shutdown,
	 down_pool, false, false},
	/* group.h */
	{"cpat_group_go (at its limit)", su_group_go, ca_group_go, td_group,
	 false, true},
	{"cpat_group_wait_until", su_group, ca_group_wait, td_group, false,
	 false},
	/* fan.h */
	{"cpat_fan_wait_until (out)", su_fan_out, ca_fan_wait, td_fan, false,
	 false},
	{"cpat_fan_wait_until (in)", su_fan_in, ca_fan_wait, td_fan, false,
	 false},
	{"cpat_fan_wait_until (merge)", su_fan_merge, ca_fan_wait, td_fan,
	 false, false},
	{"cpat_fan_wait_until (broadcast)", su_fan_bcast, ca_fan_wait, td_fan,
	 false, false},
	/* parallel.h */
	{"cpat_parallel_map", su_none, ca_parallel_map, td_none, false, false},
	/* pipeline.h */
	{"cpat_pipeline_feed", su_feed, ca_feed, td_pipe, false, false},
	{"cpat_pipeline_feed_until", su_feed, ca_feed_until, td_pipe, false,
	 false},
	{"cpat_pipeline_wait_until", su_feed, ca_pipeline_wait, td_pipe, false,
	 false},
	{"cpat_pipeline_run (generator under cpat_pipeline_token)", su_run_gen,
	 ca_run, td_pipe, false, false},
	{"cpat_pipeline_run (sink under cpat_pipeline_token)", su_run_sink,
	 ca_run, td_pipe, false, false},
	{"cpat_source_flush (in a run)", su_run_flush, ca_run, td_pipe, false,
	 false},
	{"cpat_stage_emit (in a run)", su_run_emit, ca_run, td_pipe, false,
	 false},
	/* sem.h */
	{"cpat_sem_acquire", su_sem, ca_sem_acquire, td_sem, false, false},
	{"cpat_sem_acquire_until", su_sem, ca_sem_acquire_until, td_sem, false,
	 false},
	/* rate.h */
	{"cpat_rate_wait", su_rate, ca_rate_wait, td_rate, false, false},
	{"cpat_rate_wait_until", su_rate, ca_rate_wait_until, td_rate, false,
	 false},
};

/*
 * Documented as blocking, and not in the table:
 * - cpat_pool_shutdown(), cpat_group_wait(), cpat_fan_wait(),
 *   cpat_pipeline_wait(): the forms without a token; their _until forms
 *   are above (cpat_pipeline_wait() under the run's token: the run cases).
 * - the destroy functions (pool, group, fan, pipeline) and
 *   cpat_token_on_cancel_remove(): they join threads or wait for a
 *   callback, by design, as the last call on their object.
 * - cpat_token_cancel() and cpat_token_cancel_cause(): they wait only for
 *   the callbacks of the tokens they fire.
 * - create and start functions: they block only while starting threads.
 * - redis.h: the optional module needs a server; its calls take a token
 *   and tests/redis checks that they answer it.
 */

/* ---- the runner ------------------------------------------------------- */

struct firer {
	struct cpat_token *tok;
	struct th_barrier *go;
	int64_t fired_at;
};

static void *firer_main(void *arg)
{
	struct firer *f = arg;
	th_barrier_wait(f->go);
	/* Time for the call to block (see the file comment). */
	cpat_token_wait(f->tok, cpat_now_ns() + FIRE_NS);
	f->fired_at = cpat_now_ns();
	cpat_token_cancel_cause(f->tok, -EPIPE);
	return NULL;
}

static void run_case(const struct wcase *k, bool by_deadline)
{
	struct wctx *c = calloc(1, sizeof *c);
	assert_non_null(c);
	int64_t fire_at = 0;
	for (int step = 0; step < 2; step++) {
		if (step == (k->tok_in_setup ? 1 : 0)) {
			k->setup(c);
			continue;
		}
		fire_at = cpat_now_ns() + FIRE_NS;
		if (by_deadline)
			assert_int_equal(cpat_token_create_deadline(
						 &c->tok, NULL, fire_at),
					 0);
		else
			assert_int_equal(cpat_token_create(&c->tok, NULL), 0);
	}
	struct th_barrier go;
	struct firer f = {c->tok, &go, 0};
	pthread_t th;
	if (!by_deadline) {
		th_barrier_init(&go, 2);
		th_spawn(&th, firer_main, &f);
		th_barrier_wait(&go);
	}
	int rc = k->call(c);
	int64_t back = cpat_now_ns();
	int status = cpat_token_status(c->tok);
	if (!by_deadline) {
		th_join(th);
		th_barrier_destroy(&go);
		fire_at = f.fired_at;
	}
	int want = k->returns_zero ? 0 : by_deadline ? -ETIMEDOUT : -ECANCELED;
	if (status == 0)
		fail_msg("%s returned %d before its token fired", k->name, rc);
	if (rc != want)
		fail_msg("%s, token fired by %s: rc %d (%s), want %d", k->name,
			 by_deadline ? "its deadline" : "another thread", rc,
			 cpat_strerror(rc), want);
	if (back - fire_at > BOUND)
		fail_msg("%s returned %.3f s after its token fired", k->name,
			 (double)(back - fire_at) / 1e9);
	if (!by_deadline)
		assert_int_equal(cpat_token_cause(c->tok), -EPIPE);
	k->teardown(c);
	cpat_token_unref(c->tok);
	cpat_token_unref(c->gate);
	free(c);
}

TH_TEST_FN(every_blocking_call_returns_when_its_token_fires)
{
	(void)state;
	size_t n = sizeof cases / sizeof cases[0];
	for (size_t i = 0; i < n; i++) {
		run_case(&cases[i], false);
		run_case(&cases[i], true);
	}
	fprintf(stderr,
		"# %zu blocking calls, each under a cancel and a "
		"deadline\n",
		n);
}

/* ---- what happens to the work when a wait gives up ------------------- */

/* The group's tasks run on after its wait gave up; a later wait gets
 * their result; the group was not cancelled. */
TH_TEST_FN(group_wait_that_gives_up_leaves_the_tasks_running)
{
	(void)state;
	struct wctx c;
	memset(&c, 0, sizeof c);
	su_group(&c);
	int rc =
		cpat_group_wait_until(c.group, NULL, cpat_now_ns() + CPAT_MSEC);
	assert_int_equal(rc, -ETIMEDOUT);
	assert_int_equal(cpat_token_status(cpat_group_token(c.group)), 0);
	/* Still open to go while a task is outstanding. */
	assert_int_equal(cpat_group_try_go(c.group, quick_task, NULL), -EAGAIN);
	open_gate(&c);
	assert_int_equal(cpat_group_wait_until(c.group, NULL, CPAT_FOREVER), 0);
	assert_int_equal(cpat_token_status(cpat_group_token(c.group)),
			 -ECANCELED);
	assert_int_equal(cpat_group_wait(c.group), 0); /* the same again */
	cpat_group_destroy(c.group);
	cpat_token_unref(c.gate);
}

/* A fan runs on after its wait gave up; cancel, then the wait joins it. */
TH_TEST_FN(fan_wait_that_gives_up_leaves_the_fan_running)
{
	(void)state;
	struct wctx c;
	memset(&c, 0, sizeof c);
	su_fan_out(&c);
	assert_int_equal(
		cpat_fan_wait_until(c.fan, NULL, cpat_now_ns() + CPAT_MSEC),
		-ETIMEDOUT);
	long v = 7, got = 0;
	assert_int_equal(cpat_chan_send(c.ch, &v, NULL), 0);
	assert_int_equal(cpat_chan_recv(c.ch2, &got, NULL), 0);
	assert_int_equal(got, 7); /* still at work */
	assert_int_equal(cpat_fan_cancel(c.fan), 0);
	assert_int_equal(cpat_fan_wait_until(c.fan, NULL, CPAT_FOREVER),
			 -ECANCELED);
	assert_int_equal(cpat_fan_wait(c.fan), -ECANCELED);
	td_fan(&c);
}

/* A pipeline runs on after its wait gave up (res untouched); cancel, then
 * the wait ends it with the run's result. */
TH_TEST_FN(pipeline_wait_that_gives_up_leaves_the_run_going)
{
	(void)state;
	struct wctx *c = calloc(1, sizeof *c);
	assert_non_null(c);
	su_feed(c);
	struct cpat_pipeline_result res;
	memset(&res, 0xab, sizeof res);
	assert_int_equal(cpat_pipeline_wait_until(
				 c->p, NULL, cpat_now_ns() + CPAT_MSEC, &res),
			 -ETIMEDOUT);
	assert_int_equal((unsigned char)res.stage[0], 0xab);
	assert_int_equal(cpat_token_status(cpat_pipeline_token(c->p)), 0);
	assert_int_equal(cpat_pipeline_cancel(c->p), 0);
	assert_int_equal(
		cpat_pipeline_wait_until(c->p, NULL, CPAT_FOREVER, &res),
		-ECANCELED);
	assert_true(res.not_processed > 0);
	assert_int_equal(res.produced, res.not_processed + res.delivered);
	td_pipe(c);
	free(c);
}

/* A pool shutdown whose token fires ends the grace as its deadline does:
 * the queue is discarded, the held task reported running; destroy joins
 * it. */
TH_TEST_FN(pool_shutdown_token_ends_the_grace)
{
	(void)state;
	struct wctx c;
	memset(&c, 0, sizeof c);
	su_pool(&c);
	struct cpat_token *tok;
	assert_int_equal(cpat_token_create(&tok, NULL), 0);
	assert_int_equal(cpat_token_cancel(tok), 1);
	struct cpat_pool_report r;
	assert_int_equal(cpat_pool_shutdown_until(c.pool, CPAT_POOL_DRAIN, tok,
						  CPAT_FOREVER, &r),
			 -ECANCELED);
	assert_int_equal(r.still_running, 1);
	assert_int_equal(r.discarded, 2);
	assert_int_equal(cpat_token_status(cpat_pool_token(c.pool)),
			 -ECANCELED);
	down_pool(&c);
	cpat_token_unref(tok);
	cpat_token_unref(c.gate);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		TH_TEST(every_blocking_call_returns_when_its_token_fires),
		TH_TEST(group_wait_that_gives_up_leaves_the_tasks_running),
		TH_TEST(fan_wait_that_gives_up_leaves_the_fan_running),
		TH_TEST(pipeline_wait_that_gives_up_leaves_the_run_going),
		TH_TEST(pool_shutdown_token_ends_the_grace),
	};
	return TH_RUN("waits", tests);
}
