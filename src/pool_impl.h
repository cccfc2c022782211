/*
 * The worker pool's private header: the pool and worker structs, their
 * constants, and what the pool's three source files share. Never installed.
 *
 * - pool.c: the API every pool has (create, submit, wait_idle, shutdown,
 *   stats, errors, destroy), the accounting and the shutdown protocol.
 * - pool_worker.c: the worker machinery (waking, spinning, parking, taking
 *   and stealing tasks, worker_main, starting and joining threads).
 * - dynpool.c: the dynamic pool's API and its policy (grow at once, retire
 *   when idle, resize), reached from the other two through the
 *   cpat__pool_* hooks declared at the end, and only for a pool of kind
 *   POOL_DYNAMIC.
 *
 * Everything a submit or a worker's task take does per task is a static
 * inline here, or lives in the file that calls it: splitting the pool into
 * files must not add a call to the per-task path. The out-of-line
 * cpat__pool_* functions are reached on slow paths only (a wake-up, a
 * thread start, a shutdown, a retirement), where a system call or a lock
 * follows anyway.
 */
#ifndef CPAT_POOL_IMPL_H
#define CPAT_POOL_IMPL_H

#include "internal.h"
#include "spin.h"

#include <pthread.h>

#include "chan_internal.h"
#include "cpattern/chan.h"
#include "cpattern/dynpool.h"
#include "cpattern/pool.h"

/* p->pending: one submit inside its entering section (high 32 bits), see
 * pool.c. p->wstate: one parked worker (high 32 bits), see pool_worker.c. */
#define POOL_ENTER_ONE ((uint64_t)1 << 32)
#define POOL_PARKED_ONE ((uint64_t)1 << 32)
#define POOL_LOW_MASK ((uint64_t)0xffffffffu)

/* Most tasks a worker takes into its batch buffer at once (pool_worker.c). */
#define POOL_TAKE_MAX 16

/* The wake-up protocol of pool_worker.c depends on it. */
_Static_assert(CPAT__CHAN_SEND_IS_SEQ_CST,
	       "the pool needs the channel's seq_cst send (chan_internal.h)");

enum pool_kind { POOL_FIXED = 0, POOL_DYNAMIC = 1 };

/* A worker's park state, also its futex word (pool_worker.c). */
enum { WS_RUN = 0, WS_PARKED = 1, WS_WOKEN = 2 };

struct worker {
	_Alignas(CPAT_CACHELINE) struct cpat_pool *pool;
	pthread_t th;
	struct worker *next, *prev; /* live list; zombie and free lists: next */
	struct worker *idle_next;
	_Atomic uint32_t word; /* WS_*: park state and futex word */
	bool counted_out;      /* alive already decremented for it */
	int64_t start_ns;
	_Atomic uint64_t ran, failed; /* written by the worker only */
	_Atomic int busy;
	/* Tasks taken in a batch and not yet run: generation (32 bits),
	 * next index (16), count (16). Anyone may take the next one by CAS;
	 * only the owner refills, when it is empty. See take(). */
	_Alignas(CPAT_CACHELINE) _Atomic uint64_t bword;
	struct atask {
		_Atomic(cpat_task_fn) fn;
		_Atomic(cpat_task_done_fn) done;
		_Atomic(void *) arg;
	} bslots[POOL_TAKE_MAX];
};

/* One pool whose task (or worker loop) the thread is in: see
 * "Self-deadlock" in pool.c. */
struct pool_frame {
	struct cpat_pool *pool;
	struct pool_frame *prev;
};

/* The calling thread's frames, innermost first (pool.c). */
CPAT_HIDDEN extern _Thread_local struct pool_frame *cpat__pool_tl_frames;

struct cpat_pool {
	/* Constant after creation. */
	enum pool_kind kind;
	enum cpat_pool_policy policy;
	struct cpat_chan *q;
	struct cpat_token *tok;
	size_t max_errors;
	int64_t idle_timeout; /* dynamic pools; CPAT_FOREVER for fixed ones */
	unsigned spin_cap;

	/* Written by submitters. */
	_Alignas(CPAT_CACHELINE) _Atomic uint64_t pending;
	_Atomic uint64_t accepted;
	_Atomic uint64_t rejected;

	/* Written by workers when they start or stop spinning or park. */
	_Alignas(CPAT_CACHELINE) _Atomic uint64_t wstate;

	/* Read-mostly. */
	_Alignas(CPAT_CACHELINE) _Atomic int closed;
	_Atomic int stop;
	_Atomic unsigned alive;
	_Atomic unsigned min_w, max_w;
	struct cpat__event ev; /* wait_idle and shutdown wait on it */
	_Atomic uint32_t roomseq;
	_Atomic uint32_t roomwaiters;
	_Atomic uint32_t room_armed; /* a submitter sleeps for room */
	/* A blocked submitter's next nap before it re-checks for room (see
	 * room_wait() in pool.c): grows, never shrinks, so written a few
	 * times in the pool's life. */
	_Atomic int64_t room_nap;
	size_t low_water;

	/* Rare paths. */
	_Alignas(CPAT_CACHELINE) pthread_mutex_t lock;
	struct worker *live;
	struct worker *idle;
	struct worker *zombies;
	struct worker *freelist;
	unsigned unjoined;
	unsigned peak;
	uint64_t spawned, retired;
	uint64_t ran_gone, failed_gone;
	double secs_gone;
	bool closing, sd_done;
	struct cpat_pool_report report;

	_Atomic uint64_t inline_ran, inline_failed, discarded;
	_Atomic uint64_t nbuffered; /* tasks in workers' batch buffers */
	_Atomic unsigned inline_running;

	pthread_mutex_t elock;
	size_t nerr_kept;
	int *errs;
};

/* ---- small helpers ---------------------------------------------------- */

static inline void lock(pthread_mutex_t *m)
{
	CPAT_CHECK(pthread_mutex_lock(m) == 0);
}

static inline void unlock(pthread_mutex_t *m)
{
	CPAT_CHECK(pthread_mutex_unlock(m) == 0);
}

/* Whether the calling thread is in a task (or the worker loop) of p. */
static inline bool inside(const struct cpat_pool *p)
{
	for (const struct pool_frame *f = cpat__pool_tl_frames; f; f = f->prev)
		if (f->pool == p)
			return true;
	return false;
}

static inline bool policy_ok(int policy)
{
	return policy == CPAT_POOL_BLOCK || policy == CPAT_POOL_REJECT ||
	       policy == CPAT_POOL_CALLER_RUNS;
}

/* Wakes the waiters of p->ev (wait_idle, shutdown), if any. */
static inline void ev_bump(struct cpat_pool *p)
{
	cpat__event_signal(&p->ev);
}

/* Wakes the submitters blocked for room (all: they compete for it). */
static inline void room_bump(struct cpat_pool *p)
{
	atomic_fetch_add(&p->roomseq, 1);
	cpat__unpark_all(&p->roomseq);
}

/*
 * A worker took a task: wake blocked submitters once the queue is down to
 * its low-water mark, so that a submitter refills half the queue per
 * wake-up instead of one slot per task (the other half of the handshake is
 * room_wait() in pool.c).
 */
static inline void room_check(struct cpat_pool *p)
{
	if (CPAT_UNLIKELY(atomic_load(&p->room_armed) != 0) &&
	    cpat_chan_len(p->q) <= p->low_water &&
	    atomic_exchange(&p->room_armed, 0) != 0)
		room_bump(p);
}

/* Drops d (POOL_ENTER_ONE units and/or tasks) from pending; wakes waiters
 * when a condition they wait for may have become true. */
static inline void pending_sub(struct cpat_pool *p, uint64_t d)
{
	uint64_t now = atomic_fetch_sub(&p->pending, d) - d;
	if ((now >> 32) == 0)
		ev_bump(p);
}

static inline void record_error(struct cpat_pool *p, int rc)
{
	lock(&p->elock);
	if (p->nerr_kept < p->max_errors)
		p->errs[p->nerr_kept++] = rc;
	unlock(&p->elock);
}

/* An accepted task that will never run: its done learns it, once. */
static inline void discard_task(struct cpat_pool *p, const struct cpat_task *t)
{
	if (t->done)
		t->done(t->arg, -ECANCELED);
	atomic_fetch_add(&p->discarded, 1);
	pending_sub(p, 1);
}

/* ---- between the files ------------------------------------------------ */

/* pool.c */
/* Creates a pool of either kind and starts its nmin workers (arguments
 * already checked). 0, -ENOMEM or -EAGAIN; *out is set on success only. */
CPAT_HIDDEN int cpat__pool_create(struct cpat_pool **out, enum pool_kind kind,
				  unsigned nmin, unsigned nmax, size_t qcap,
				  enum cpat_pool_policy policy,
				  struct cpat_token *parent, size_t max_errors,
				  int64_t idle_timeout);

/* pool_worker.c */
/* Pops one parked worker and makes it a spinner; false if none was parked.
 * p->lock not held. */
CPAT_HIDDEN bool cpat__pool_wake_one(struct cpat_pool *p);
/* Wakes every parked worker (shutdown, resize). p->lock not held. */
CPAT_HIDDEN void cpat__pool_wake_all(struct cpat_pool *p);
/* Starts one worker, counted alive and spinning from the start; p->lock
 * held. 0, -ENOMEM or -EAGAIN (nothing changed). */
CPAT_HIDDEN int cpat__pool_spawn_locked(struct cpat_pool *p);
/* Joins the workers that have exited; p->lock held. */
CPAT_HIDDEN void cpat__pool_reap_locked(struct cpat_pool *p);
/* Takes one task out of a worker's batch buffer, any worker but self
 * (NULL: any); false if none holds one. p->lock not held; callers read
 * p->nbuffered first, which is 0 unless some worker holds a batch. */
CPAT_HIDDEN bool cpat__pool_steal(struct cpat_pool *p, struct worker *self,
				  struct cpat_task *t);
/* Takes w off the stack of parked workers and out of the parked count;
 * p->lock held, w registered as parked. */
CPAT_HIDDEN void cpat__pool_unpark_locked(struct cpat_pool *p,
					  struct worker *w);

/* dynpool.c: the dynamic pool's policy; called for POOL_DYNAMIC only. */
/* A task is queued, nobody spins or is parked and alive < max: starts a
 * worker for it if that still holds under p->lock. */
CPAT_HIDDEN void cpat__pool_grow(struct cpat_pool *p);
/* When a worker about to park retires if it stays idle: now + the pool's
 * idle timeout. */
CPAT_HIDDEN int64_t cpat__pool_idle_deadline(const struct cpat_pool *p);
/* The parked worker w stayed idle until its deadline: under p->lock,
 * retires it (takes it off the parked workers and out of alive; true) if
 * it is still parked and the pool is above its minimum, else moves
 * *deadline on by the idle timeout (false). */
CPAT_HIDDEN bool cpat__pool_idle_expired(struct cpat_pool *p, struct worker *w,
					 int64_t *deadline);
/* The pool is above its (lowered) maximum: under p->lock, takes w out of
 * alive if that still holds (true: w exits). */
CPAT_HIDDEN bool cpat__pool_retire_over_max(struct cpat_pool *p,
					    struct worker *w);

/* ---- waking workers (the submit and take paths) ------------------------ */

/* A task was queued: make sure some worker will look at the queue (the
 * wake-up protocol of pool_worker.c). */
static inline void notify_work(struct cpat_pool *p)
{
	uint64_t s = atomic_load(&p->wstate);
	if ((uint32_t)s != 0)
		return; /* a spinner will find it */
	if ((s >> 32) != 0 && cpat__pool_wake_one(p))
		return;
	/* Dynamic pool, nobody awake to take it: start a worker at once. The
	 * bound is read here so that a pool at its maximum (every task of a
	 * saturated pool comes this way) pays no call. */
	if (p->kind == POOL_DYNAMIC &&
	    atomic_load_explicit(&p->alive, memory_order_relaxed) <
		    atomic_load_explicit(&p->max_w, memory_order_relaxed))
		cpat__pool_grow(p);
}

#endif /* CPAT_POOL_IMPL_H */
