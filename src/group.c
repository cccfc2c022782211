/*
 * DESIGN: error groups (Go's errgroup) on worker pools.
 *
 * Every task runs on a pool: the one given at creation, or the group's own
 * dynamic pool, created at the first go (min 1 worker, max = limit, or
 * OWN_MAX without a limit; a short idle timeout), so idle threads are
 * reused and a burst grows the pool at once. A task is submitted as a pool
 * task whose arg is a record (group, fn, arg) taken from the group's free
 * list (allocated only when the list is empty, so nothing is allocated per
 * task in steady state); the pool's done callback records the error,
 * returns the record, releases the slot and the task's count.
 *
 * Counting. g->outstanding counts the go calls in progress and the started
 * tasks not yet done; its bit 31 says that wait sleeps on it (it is the
 * futex word). The thread that brings the count to 0 learns from its own
 * fetch_sub whether to wake, so it never reads the group after its
 * decrement (wait may free the group at once; the wake system call on a
 * freed address is harmless). wait: waits for 0, sets g->closed, waits for
 * 0 again (a go that incremented before seeing closed is waited for; one
 * that sees closed backs out with -EPIPE), then cancels the token. Bit 30
 * is flipped by the token watch of a wait that answers a token, so that
 * the word changes under a waiter about to park (the count is bits 0-29).
 * A wait that gives up (token, deadline) leaves everything as it was but
 * closed, which a later wait finds set and goes on from.
 *
 * Limit. A counting semaphore g->used < limit, taken by go before the
 * submit and released by done. Waiters sleep on the g->slot_freed event
 * (cpat__event_wait(): a release makes no system call while nobody waits);
 * the group token's watch bumps it so that a waiting go returns the
 * token's cause.
 *
 * Locks. g->lock guards the record free list and the own pool's creation;
 * it is a leaf (pool calls are made without it, except creating the pool).
 */
#include "internal.h"
#include "spin.h"

#include <pthread.h>

#include "cpattern/dynpool.h"
#include "cpattern/group.h"
#include "cpattern/pool.h"

#define OWN_MAX 1024
#define OWN_QMAX 65536
#define OWN_IDLE_NS (50 * CPAT_MSEC)
#define WAITER_BIT 0x80000000u
/* Flipped by a waiter's token watch: changes the futex word, so that a
 * waiter about to park on it wakes (see wait_zero()). */
#define FLIP_BIT 0x40000000u
#define COUNT_MASK 0x3fffffffu

struct grec {
	struct cpat_group *g;
	cpat_task_fn fn;
	void *arg;
	struct grec *next;
};

struct gframe {
	struct cpat_group *g;
	struct gframe *prev;
};

static _Thread_local struct gframe *tl_gframes;

struct cpat_group {
	struct cpat_pool *pool; /* the user's, or NULL */
	struct cpat_pool *own;  /* our own, created at the first go */
	struct cpat_token *tok;
	size_t limit;
	bool cancel_on_error;

	pthread_mutex_t lock;
	struct grec *free;
	bool waited; /* a wait completed: wait_rc is the result */
	int wait_rc;

	_Atomic size_t used;
	struct cpat__event slot_freed; /* signalled when a slot is released */
	_Atomic uint32_t outstanding;
	_Atomic int first_err;
	_Atomic int closed;
};

static bool in_task_of(const struct cpat_group *g)
{
	for (const struct gframe *f = tl_gframes; f; f = f->prev)
		if (f->g == g)
			return true;
	return false;
}

static void release_outstanding(struct cpat_group *g)
{
	uint32_t old = atomic_fetch_sub(&g->outstanding, 1);
	if ((old & COUNT_MASK) == 1 && (old & WAITER_BIT))
		cpat__unpark_all(&g->outstanding);
}

/* A wait's token watch: records the cause and flips FLIP_BIT, so that the
 * word a waiter parks on changes (a wake-up alone could come between its
 * check and its park and be lost). */
struct zero_wait {
	struct cpat__watch w;
	struct cpat_group *g;
	_Atomic int cause;
};

static void zero_watch_fired(struct cpat__watch *w, int cause)
{
	struct zero_wait *zw = w->arg;
	atomic_store(&zw->cause, cause);
	atomic_fetch_xor(&zw->g->outstanding, FLIP_BIT);
	cpat__unpark_all(&zw->g->outstanding);
}

/* Waits until no go call is in progress and no task is outstanding: 0;
 * or the cause of zw's token, or -ETIMEDOUT at deadline. */
static int wait_zero(struct cpat_group *g, struct zero_wait *zw,
		     int64_t deadline)
{
	for (;;) {
		uint32_t v = atomic_load(&g->outstanding);
		if ((v & COUNT_MASK) == 0)
			return 0;
		int c = atomic_load(&zw->cause);
		if (c != 0)
			return c;
		if (deadline != CPAT_FOREVER && cpat_now_ns() >= deadline)
			return -ETIMEDOUT;
		if (!(v & WAITER_BIT)) {
			if (!atomic_compare_exchange_weak(&g->outstanding, &v,
							  v | WAITER_BIT))
				continue;
			v |= WAITER_BIT;
		}
		cpat__park(&g->outstanding, v, deadline);
	}
}

/* ---- slots ------------------------------------------------------------ */

static void slot_release(struct cpat_group *g)
{
	atomic_fetch_sub(&g->used, 1);
	cpat__event_signal(&g->slot_freed);
}

static bool slot_try(struct cpat_group *g)
{
	size_t u = atomic_load(&g->used);
	while (u < g->limit)
		if (atomic_compare_exchange_weak(&g->used, &u, u + 1))
			return true;
	return false;
}

static bool slot_try_ready(void *arg)
{
	return slot_try(arg);
}

static int slot_acquire(struct cpat_group *g)
{
	if (slot_try(g))
		return 0;
	int rc = cpat__event_wait(&g->slot_freed, slot_try_ready, g, g->tok,
				  CPAT_FOREVER);
	/* A release may have woken only us; pass it on if we leave a slot. */
	if (rc != 0 && atomic_load(&g->used) < g->limit)
		cpat__event_signal(&g->slot_freed);
	return rc;
}

/* ---- tasks ------------------------------------------------------------ */

static int group_task(void *arg, struct cpat_token *pool_tok)
{
	(void)pool_tok;
	struct grec *r = arg;
	struct cpat_group *g = r->g;
	struct gframe fr = {g, tl_gframes};
	tl_gframes = &fr;
	int rc = r->fn(r->arg, g->tok);
	tl_gframes = fr.prev;
	return rc;
}

static void rec_put(struct cpat_group *g, struct grec *r)
{
	CPAT_CHECK(pthread_mutex_lock(&g->lock) == 0);
	r->next = g->free;
	g->free = r;
	CPAT_CHECK(pthread_mutex_unlock(&g->lock) == 0);
}

static struct grec *rec_get(struct cpat_group *g)
{
	CPAT_CHECK(pthread_mutex_lock(&g->lock) == 0);
	struct grec *r = g->free;
	if (r)
		g->free = r->next;
	CPAT_CHECK(pthread_mutex_unlock(&g->lock) == 0);
	if (!r)
		r = cpat__malloc(sizeof *r);
	return r;
}

static void group_done(void *arg, int rc)
{
	struct grec *r = arg;
	struct cpat_group *g = r->g;
	if (rc != 0) {
		int zero = 0;
		if (atomic_compare_exchange_strong(&g->first_err, &zero, rc) &&
		    g->cancel_on_error)
			cpat_token_cancel(g->tok);
	}
	rec_put(g, r);
	if (g->limit)
		slot_release(g);
	release_outstanding(g); /* the last touch of g */
}

/* The pool to run on; creates the group's own at the first use. */
static int get_pool(struct cpat_group *g, struct cpat_pool **out)
{
	if (g->pool) {
		*out = g->pool;
		return 0;
	}
	int rc = 0;
	CPAT_CHECK(pthread_mutex_lock(&g->lock) == 0);
	if (!g->own) {
		struct cpat_dynpool_opts o;
		cpat_dynpool_opts_init(&o);
		o.min_workers = 1;
		o.max_workers =
			g->limit ? (unsigned)(g->limit < OWN_MAX ? g->limit
								 : OWN_MAX)
				 : OWN_MAX;
		/* With a limit, at most limit tasks are ever queued or
		 * running, so submit never waits for room. */
		o.queue_capacity =
			g->limit ? (g->limit < OWN_QMAX ? g->limit : OWN_QMAX)
				 : OWN_MAX;
		o.idle_timeout_ns = OWN_IDLE_NS;
		o.max_errors = 0;
		rc = cpat_dynpool_create(&g->own, &o);
	}
	*out = g->own;
	CPAT_CHECK(pthread_mutex_unlock(&g->lock) == 0);
	return rc;
}

static int go_common(struct cpat_group *g, cpat_task_fn fn, void *arg,
		     bool try_only)
{
	if (!g || !fn)
		return -EINVAL;
	if (atomic_load(&g->closed))
		return -EPIPE;
	int rc = cpat_token_status(g->tok);
	if (rc != 0)
		return rc;
	atomic_fetch_add(&g->outstanding, 1);
	if (atomic_load(&g->closed)) {
		release_outstanding(g);
		return -EPIPE;
	}
	if (g->limit) {
		if (try_only) {
			if (!slot_try(g)) {
				release_outstanding(g);
				return -EAGAIN;
			}
		} else if ((rc = slot_acquire(g)) != 0) {
			release_outstanding(g);
			return rc;
		}
	}
	struct cpat_pool *pool = NULL;
	struct grec *r = NULL;
	rc = get_pool(g, &pool);
	if (rc == 0) {
		r = rec_get(g);
		if (!r)
			rc = -ENOMEM;
	}
	if (rc == 0) {
		r->g = g;
		r->fn = fn;
		r->arg = arg;
		struct cpat_task t = {group_task, group_done, r};
		rc = try_only ? cpat_pool_try_submit(pool, &t)
			      : cpat_pool_submit(pool, &t, g->tok);
		if (rc == 0)
			return 0; /* done releases everything */
		rec_put(g, r);
	}
	if (g->limit)
		slot_release(g);
	release_outstanding(g);
	return rc;
}

/* ---- public API ------------------------------------------------------- */

void cpat_group_opts_init(struct cpat_group_opts *opts)
{
	if (!opts)
		return;
	memset(opts, 0, sizeof *opts);
	opts->cancel_on_error = true;
}

int cpat_group_create(struct cpat_group **out,
		      const struct cpat_group_opts *opts)
{
	if (out)
		*out = NULL;
	if (!out)
		return -EINVAL;
	struct cpat_group_opts def;
	if (!opts) {
		cpat_group_opts_init(&def);
		opts = &def;
	}
	struct cpat_group *g = cpat__calloc(1, sizeof *g);
	if (!g)
		return -ENOMEM;
	int rc = cpat_token_create(&g->tok, opts->parent);
	if (rc != 0) {
		cpat__free(g);
		return rc;
	}
	g->pool = opts->pool;
	g->limit = opts->limit;
	g->cancel_on_error = opts->cancel_on_error;
	CPAT_CHECK(pthread_mutex_init(&g->lock, NULL) == 0);
	atomic_init(&g->used, 0);
	atomic_init(&g->slot_freed.seq, 0);
	atomic_init(&g->slot_freed.waiters, 0);
	atomic_init(&g->outstanding, 0);
	atomic_init(&g->first_err, 0);
	atomic_init(&g->closed, 0);
	*out = g;
	return 0;
}

int cpat_group_go(struct cpat_group *group, cpat_task_fn fn, void *arg)
{
	return go_common(group, fn, arg, false);
}

int cpat_group_try_go(struct cpat_group *group, cpat_task_fn fn, void *arg)
{
	return go_common(group, fn, arg, true);
}

int cpat_group_wait_until(struct cpat_group *group, struct cpat_token *tok,
			  int64_t deadline_ns)
{
	if (!group || !cpat__deadline_ok(deadline_ns))
		return -EINVAL;
	struct cpat_group *g = group;
	if (in_task_of(g))
		return -EBUSY;
	CPAT_CHECK(pthread_mutex_lock(&g->lock) == 0);
	bool done = g->waited;
	int rc = g->wait_rc;
	CPAT_CHECK(pthread_mutex_unlock(&g->lock) == 0);
	if (done)
		return rc;
	struct zero_wait zw = {.g = g};
	atomic_init(&zw.cause, 0);
	zw.w.fn = zero_watch_fired;
	zw.w.arg = &zw;
	if (tok) {
		cpat_token_ref(tok);
		int c = cpat__token_watch(tok, &zw.w);
		if (c != 0) {
			cpat_token_unref(tok);
			return c;
		}
	}
	/* Tasks may still call go while the count is above 0 (a task
	 * starting sub-tasks); once it has been 0, close, then wait for the go
	 * calls that were under way. Giving up changes nothing but, in the
	 * second step, closed: a later wait goes on from there. */
	rc = wait_zero(g, &zw, deadline_ns);
	if (rc == 0) {
		atomic_store(&g->closed, 1);
		rc = wait_zero(g, &zw, deadline_ns);
	}
	if (rc == 0) {
		cpat_token_cancel(g->tok);
		CPAT_CHECK(pthread_mutex_lock(&g->lock) == 0);
		if (!g->waited) {
			g->waited = true;
			g->wait_rc = atomic_load(&g->first_err);
		}
		rc = g->wait_rc;
		CPAT_CHECK(pthread_mutex_unlock(&g->lock) == 0);
	}
	if (tok) {
		cpat__token_unwatch(tok, &zw.w);
		cpat_token_unref(tok);
	}
	return rc;
}

int cpat_group_wait(struct cpat_group *group)
{
	return cpat_group_wait_until(group, NULL, CPAT_FOREVER);
}

struct cpat_token *cpat_group_token(struct cpat_group *group)
{
	return group ? group->tok : NULL;
}

void cpat_group_destroy(struct cpat_group *group)
{
	if (!group)
		return;
	struct cpat_group *g = group;
	if (in_task_of(g))
		return; /* a caller bug: the group cannot end under itself */
	(void)cpat_group_wait(g);
	/* The own pool's workers are joined here, after their last touch. */
	cpat_pool_destroy(g->own);
	struct grec *r;
	while ((r = g->free) != NULL) {
		g->free = r->next;
		cpat__free(r);
	}
	cpat_token_unref(g->tok);
	pthread_mutex_destroy(&g->lock);
	cpat__free(g);
}
