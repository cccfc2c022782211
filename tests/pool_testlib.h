/*
 * Helpers shared by the tests of worker pools and error groups
 * (test_pool.c, test_dynpool.c, test_group.c): a recording task, a gate
 * the main thread opens, waits on conditions observed through the public
 * statistics or the pool's test hooks, and a count of the process's live
 * threads.
 *
 * Tasks never call cmocka: they record what they saw in their own struct
 * (struct job) with atomics, and the main thread asserts after the pool
 * has been drained, shut down or waited for.
 */
#ifndef CPAT_POOL_TESTLIB_H
#define CPAT_POOL_TESTLIB_H

#include "harness.h"
#include "testhooks.h"

#include <dirent.h>
#include <sched.h>

#include "cpattern/chan.h"
#include "cpattern/dynpool.h"
#include "cpattern/group.h"
#include "cpattern/pool.h"

/* ---- a recording task --------------------------------------------------- */

enum job_kind {
	J_PLAIN,  /* returns ret at once */
	J_GATE,   /* blocks on ctx->gate, ignoring the pool's token */
	J_WATCH,  /* blocks on the token it is given, records when it fired */
	J_INSIDE, /* calls wait_idle and shutdown on its own pool */
	J_SENDER, /* sends on ctx->ch with the token it is given */
};

/* What a set of jobs shares: the gate the main thread opens, counters the
 * main thread waits on. */
struct ctx {
	struct cpat_token *gate; /* cancelled = open */
	struct cpat_pool *pool;
	struct cpat_chan *ch;
	_Atomic long started;  /* fn entered */
	_Atomic long finished; /* fn about to return */
	_Atomic long dones;    /* done callbacks */
};

struct job {
	struct ctx *c;
	int kind;
	int ret;           /* what fn returns (J_PLAIN, J_GATE) */
	_Atomic int runs;  /* fn calls */
	_Atomic int dones; /* done calls */
	_Atomic int done_rc;
	pthread_t runner; /* thread that ran fn */
	pthread_t doner;  /* thread that ran done */
	int64_t t_woke;   /* J_WATCH: when the token fired */
	int tok_status;   /* J_WATCH / J_SENDER: token status seen */
	int rc1, rc2;     /* J_INSIDE / J_SENDER: calls' results */
};

static inline int job_fn(void *arg, struct cpat_token *tok)
{
	struct job *j = arg;
	j->runner = pthread_self();
	atomic_fetch_add(&j->runs, 1);
	if (j->c)
		atomic_fetch_add(&j->c->started, 1);
	int ret = j->ret;
	switch (j->kind) {
	case J_GATE:
		cpat_token_wait(j->c->gate, CPAT_FOREVER);
		break;
	case J_WATCH:
		cpat_token_wait(tok, CPAT_FOREVER);
		j->t_woke = cpat_now_ns();
		j->tok_status = cpat_token_status(tok);
		break;
	case J_INSIDE: {
		struct cpat_pool_report r;
		j->rc1 = cpat_pool_wait_idle(j->c->pool, NULL, CPAT_FOREVER);
		j->rc2 = cpat_pool_shutdown(j->c->pool, CPAT_POOL_DRAIN,
					    CPAT_FOREVER, &r);
		break;
	}
	case J_SENDER: {
		int v = 1;
		j->rc1 = cpat_chan_send(j->c->ch, &v, tok);
		j->tok_status = cpat_token_status(tok);
		ret = j->rc1;
		break;
	}
	default:
		break;
	}
	if (j->c)
		atomic_fetch_add(&j->c->finished, 1);
	return ret;
}

static inline void job_done(void *arg, int rc)
{
	struct job *j = arg;
	j->doner = pthread_self();
	atomic_store(&j->done_rc, rc);
	atomic_fetch_add(&j->dones, 1);
	if (j->c)
		atomic_fetch_add(&j->c->dones, 1);
}

static inline struct cpat_task job_task(struct job *j)
{
	struct cpat_task t = {.fn = job_fn, .done = job_done, .arg = j};
	return t;
}

static inline void ctx_init(struct ctx *c)
{
	memset(c, 0, sizeof *c);
	if (cpat_token_create(&c->gate, NULL) != 0)
		abort();
}

static inline void ctx_open(struct ctx *c)
{
	cpat_token_cancel(c->gate);
}

static inline void ctx_fini(struct ctx *c)
{
	cpat_token_unref(c->gate);
	c->gate = NULL;
}

static inline void job_init(struct job *j, struct ctx *c, int kind, int ret)
{
	memset(j, 0, sizeof *j);
	j->c = c;
	j->kind = kind;
	j->ret = ret;
	atomic_store(&j->done_rc, 12345);
}

/* Inits @p n jobs of @p kind (returning 0) on @p c and submits each to
 * @p p, asserting every submit returns 0. Main test thread only. */
static inline void submit_jobs(struct cpat_pool *p, struct ctx *c,
			       struct job *j, long n, int kind)
{
	for (long i = 0; i < n; i++) {
		job_init(&j[i], c, kind, 0);
		struct cpat_task t = job_task(&j[i]);
		assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
	}
}

/* Reads the name of a worker thread of @p p into @p name (16 bytes): one
 * task records it, and wait_idle orders its write before the read. Main
 * test thread only; Linux (pthread_getname_np). */
static inline int name_task(void *arg, struct cpat_token *tok)
{
	(void)tok;
	pthread_getname_np(pthread_self(), arg, 16);
	return 0;
}

static inline void worker_thread_name(struct cpat_pool *p, char name[16])
{
	struct cpat_task t = {.fn = name_task, .arg = name};
	assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
	assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
}

/* ---- waiting without sleeping ----------------------------------------- */

static inline void wait_long(_Atomic long *v, long at_least)
{
	while (atomic_load(v) < at_least)
		th_relax();
}

/* Holds one worker of @p p: @p gate becomes a J_GATE job of @p c, is
 * submitted and has started when this returns (the gate of @p c still
 * closed, no other job of @p c started before). Main test thread only. */
static inline void hold_worker(struct cpat_pool *p, struct ctx *c,
			       struct job *gate)
{
	job_init(gate, c, J_GATE, 0);
	struct cpat_task t = job_task(gate);
	assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
	wait_long(&c->started, 1);
}

static inline void wait_int(_Atomic int *v, int at_least)
{
	while (atomic_load(v) < at_least)
		th_relax();
}

static inline struct cpat_pool_stats stats_of(struct cpat_pool *p)
{
	struct cpat_pool_stats s;
	memset(&s, 0, sizeof s);
	if (cpat_pool_stats(p, &s) != 0)
		abort();
	return s;
}

/* Threads blocked in a submit of @p p waiting for room (pool.c's hook). */
static inline unsigned long long blocked_submitters(struct cpat_pool *p)
{
	return cpat__pool_blocked_submitters(p);
}

static inline void wait_blocked_submitters(struct cpat_pool *p,
					   unsigned long long k)
{
	while (blocked_submitters(p) < k)
		th_relax();
}

/* Waits until @p k threads are blocked in wait_idle or shutdown of @p p
 * (pool.c's hook). */
static inline void wait_idle_waiters(struct cpat_pool *p, unsigned k)
{
	while (cpat__pool_idle_waiters(p) < k)
		th_relax();
}

static inline void wait_workers_eq(struct cpat_pool *p, unsigned n)
{
	while (stats_of(p).workers != n)
		th_relax();
}

/*
 * The statistics once the thread counts are quiescent: a retiring worker
 * leaves the count of the alive (workers) a moment before it exits and
 * counts as retired, so spawned - retired == workers holds only once it is
 * gone. Waits for that.
 */
static inline struct cpat_pool_stats stats_settled(struct cpat_pool *p)
{
	struct cpat_pool_stats s = stats_of(p);
	while (s.spawned - s.retired != s.workers) {
		th_relax();
		s = stats_of(p);
	}
	return s;
}

/* Waits until at most @p n workers are alive; returns how many. A count
 * that falls below what the test expects then fails an assertion instead
 * of hanging. */
static inline unsigned wait_workers_le(struct cpat_pool *p, unsigned n)
{
	unsigned w;
	while ((w = stats_of(p).workers) > n)
		th_relax();
	return w;
}

/* Lets a thread that could be about to do something wrong have the time to
 * do it: yields @p n times. Never a substitute for waiting on a condition;
 * used only where the correct outcome is "nothing happens". */
static inline void give_time(long n)
{
	for (long i = 0; i < n; i++)
		th_relax();
}

/* ---- threads of the process ------------------------------------------ */

/* Starts the token timer thread now, so that it never consumes a thread
 * start that a test means to make fail, nor allocates while a test counts. */
static inline void start_timer_thread(void)
{
	struct cpat_token *t = NULL;
	if (cpat_token_create_deadline(&t, NULL, cpat_now_ns()) != 0)
		abort();
	cpat_token_wait(t, CPAT_FOREVER);
	cpat_token_unref(t);
}

static inline struct cpat_pool *mkpool(unsigned workers, size_t cap, int policy)
{
	struct cpat_pool_opts o;
	cpat_pool_opts_init(&o);
	o.workers = workers;
	o.queue_capacity = cap;
	o.policy = policy;
	struct cpat_pool *p = NULL;
	int rc = cpat_pool_create(&p, &o);
	if (rc != 0 || p == NULL) {
		fprintf(stderr, "cpat_pool_create(%u, %zu, %d) = %d\n", workers,
			cap, policy, rc);
		abort();
	}
	th_watchdog_show("struct cpat_pool", p);
	return p;
}

static inline struct cpat_token *mktok(struct cpat_token *parent)
{
	struct cpat_token *t = NULL;
	if (cpat_token_create(&t, parent) != 0 || t == NULL)
		abort();
	return t;
}

#endif /* CPAT_POOL_TESTLIB_H */
