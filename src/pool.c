/*
 * DESIGN: worker pools, fixed and dynamic (one struct cpat_pool, a kind flag).
 *
 * Queue. The task queue is a cpat_chan of struct cpat_task with capacity
 * queue_capacity: tasks are stored by value in its slots, and its enqueue
 * and dequeue (try_send, send_many, try_recv) are lock-free. Nobody blocks
 * inside the channel: the channel's own blocking would wake a parked
 * receiver on every send and a blocked sender on every receive, one system
 * call per task. Workers park on the protocol below; a submitter waiting
 * for room sleeps on p->roomseq and is woken when the queue is down to its
 * low-water mark (half the capacity), so it refills half the queue per
 * wake-up (see room_wait()). Closing the channel is the pool's "intake
 * closed" point: a send either completed before the close (the task is in
 * the queue and will be drained or discarded) or fails with -EPIPE.
 * (Decision: building on cpat_chan costs nothing measurable over a private
 * ring, since its buffered path is the same Vyukov ring one would write.)
 * Workers take tasks one at a time, or in batches while tasks are short;
 * a batch stays stealable by idle workers (see take()).
 *
 * Wake-up protocol (Go's scheduler, "spinning" workers). p->wstate packs
 * the number of spinning workers (low 32 bits: awake, looking for work,
 * will find a task queued now) and of parked workers (high 32 bits: on the
 * idle stack p->idle, sleeping on their own futex word w->word). After a
 * successful send a submitter reads wstate (seq_cst): if some worker spins,
 * it does nothing; otherwise it pops one parked worker, moves it from
 * parked to spinning in wstate and unparks it (dynamic pool, none parked:
 * starts a worker, counted as spinning from the start). A spinner that
 * finds a task stops spinning; if it was the last spinner and tasks remain
 * queued, it does the same wake step, so a backlog wakes workers one by one
 * and a steady stream costs no system call while one worker spins. A
 * worker that finds the queue empty spins (at most spin_cap = one per CPU
 * at once; a worker between tasks is not a spinner, and with fewer
 * spinners than CPUs a stream of short tasks made the submitter wake a
 * worker for every task that arrived while the spinner ran one) for a
 * short while (pauses, then yields), then parks: it registers as parked (under
 * p->lock, seq_cst add), re-checks the queue, and only then sleeps. The send
 * is a seq_cst RMW ordered before the submitter's wstate load, and an empty
 * re-check is a seq_cst load after the registration (the guarantee
 * CPAT__CHAN_SEND_IS_SEQ_CST of chan_internal.h), so either the
 * submitter sees the parked or spinning worker, or the worker sees the task: no
 * lost wake-up. A woken worker finds w->word == WS_WOKEN and resumes spinning.
 * A parker whose re-check finds a task does the wake step too when tasks
 * remain: it may have been the spinner that those tasks' submitters relied
 * on (they woke nobody), and it was about to park without passing the
 * wake on (a lost wake-up, found as a rare hang pinned to one CPU).
 *
 * Accounting. p->pending packs (high 32 bits) the submit calls inside
 * their "entering" section, from just before their open check until their
 * accepted/rejected counters are updated, and (low 32 bits) the tasks
 * offered and not yet finished: counted when offered, dropped when refused,
 * when done() returned after a run, or after a discard. The pool is idle
 * exactly when pending == 0 (a worker batches its decrements while it
 * finds more work, and flushes them as soon as it sees the queue empty, so
 * the decrement that reaches 0 comes right after the last task), and whoever
 * brings it to 0 wakes the wait_idle() waiters (event word p->evseq,
 * waiters counted in p->evwaiters, so no system call while nobody waits).
 * Shutdown sets
 * p->closed and closes the channel, then waits until no submit is entering
 * (Dekker: a submitter adds to pending, then reads closed; shutdown stores
 * closed, then reads pending), so every accepted task is counted in
 * p->accepted before the report is taken. The identity kept is
 *
 *     accepted = ran + discarded + queued + running
 *     submitted = accepted + rejected       (submitted is derived)
 *
 * (queued: in the channel or in a worker's batch buffer; running includes
 * done() callbacks) *
 * so the report has submitted = ran + discarded + rejected + still_running,
 * with still_running = accepted - ran - discarded once the queue is empty
 * (0 after a complete shutdown). Counters of tasks run by workers are kept
 * per worker (no shared line written per task) and summed under p->lock;
 * a worker that exits folds them into p->ran_gone. Tasks run inline (caller
 * runs, or a task submitting to its own full pool) are counted in
 * p->inline_*; such a run leaves the entering section while it runs.
 *
 * Dynamic pools. p->alive is the committed number of workers; it is only
 * changed under p->lock, together with the decision: a spawn checks alive
 * < max and increments; an idle worker whose park timed out (idle_timeout)
 * retires only if, under the lock and still parked, alive > min; a worker
 * above a lowered max retires after its task under the same rule. So the
 * pool never drops below min however retirements and bursts interleave.
 * A failed thread creation undoes its increment; the pool keeps going.
 *
 * Shutdown. Sets stop for DISCARD (workers take no more tasks; a task a
 * worker dequeues after stop is discarded), closes intake, wakes every
 * parked worker, discards the queue if stop, then waits (deadline) until
 * no submit is entering, no inline run is in progress and every worker has
 * exited and been joined. Workers exit on stop (discarding their batch
 * buffers; shutdown also steals and discards the buffer of a worker stuck
 * in a task), or when the closed channel is drained and their buffer is
 * empty. At the deadline: cancel the pool token, set stop, discard the
 * queue, report still_running, return -ETIMEDOUT; a later call continues.
 *
 * Self-deadlock. A thread-local list of frames records the pools whose task
 * (or worker loop) the thread is in: submit that would block runs inline
 * there; wait_idle and shutdown return -EBUSY; destroy does nothing.
 *
 * Locks. p->lock guards the worker lists (live, idle stack, zombies, free
 * list), alive changes, bounds decisions, spawned/retired/peak, the folded
 * counters and the shutdown state; it is held while a thief scans the
 * workers' batch buffers (so none is freed under it), never while a task
 * runs. p->elock guards the kept errors. The
 * lock order is p->lock, then the channel's internal lock (via try_recv or
 * close); p->elock is a leaf. Threads are created and joined under p->lock
 * (a joined thread is a zombie that no longer takes it).
 */
#include "internal.h"
#include "spin.h"
#include "testhooks.h"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include "chan_internal.h"
#include "cpattern/chan.h"
#include "cpattern/dynpool.h"
#include "cpattern/pool.h"

#define ENTER_ONE ((uint64_t)1 << 32)
#define LOW_MASK ((uint64_t)0xffffffffu)
#define PARKED_ONE ((uint64_t)1 << 32)

/* Spinning before parking: SPIN_PAUSES rounds of pause, then yields. A
 * worker that may run on one CPU only does not spin (cpat__spin_pays():
 * there a yield beside a busy thread costs a time slice). */
#define SPIN_PAUSES 64
#define SPIN_ROUNDS 96
#define OWED_MAX 64
#define TAKE_MAX 16
#define TAKE_WINDOW 64
#define TAKE_SHORT_NS (1 * CPAT_USEC)
#define ROOM_SPIN_NS (2 * CPAT_USEC)

/* The wake-up protocol above depends on it. */
_Static_assert(CPAT__CHAN_SEND_IS_SEQ_CST,
               "pool.c needs the channel's seq_cst send (chan_internal.h)");

enum { KIND_FIXED = 0, KIND_DYNAMIC = 1 };
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
	} bslots[TAKE_MAX];
};

struct frame {
	struct cpat_pool *pool;
	struct frame *prev;
};

static _Thread_local struct frame *tl_frames;

struct cpat_pool {
	/* Constant after creation. */
	int kind;
	int policy;
	struct cpat_chan *q;
	struct cpat_token *tok;
	size_t max_errors;
	int64_t idle_timeout;
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
	_Atomic uint32_t evseq;
	_Atomic uint32_t evwaiters;
	_Atomic uint32_t roomseq;
	_Atomic uint32_t roomwaiters;
	_Atomic uint32_t room_armed; /* a submitter sleeps for room */
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

static bool inside(const struct cpat_pool *p)
{
	for (const struct frame *f = tl_frames; f; f = f->prev)
		if (f->pool == p)
			return true;
	return false;
}

/* Wakes the waiters of p->evseq (wait_idle, shutdown), if any. */
static void ev_bump(struct cpat_pool *p)
{
	if (atomic_load(&p->evwaiters) != 0) {
		atomic_fetch_add(&p->evseq, 1);
		cpat__unpark_all(&p->evseq);
	}
}

/* Wakes the submitters blocked for room (all: they compete for it). */
static void room_bump(struct cpat_pool *p)
{
	atomic_fetch_add(&p->roomseq, 1);
	cpat__unpark_all(&p->roomseq);
}

/*
 * A worker took a task: wake blocked submitters once the queue is down to
 * its low-water mark, so that a submitter refills half the queue per
 * wake-up instead of one slot per task.
 */
static inline void room_check(struct cpat_pool *p)
{
	if (CPAT_UNLIKELY(atomic_load(&p->room_armed) != 0) &&
	    cpat_chan_len(p->q) <= p->low_water &&
	    atomic_exchange(&p->room_armed, 0) != 0)
		room_bump(p);
}

/* Drops d (ENTER_ONE units and/or tasks) from pending; wakes waiters when a
 * condition they wait for may have become true. */
static inline void pending_sub(struct cpat_pool *p, uint64_t d)
{
	uint64_t now = atomic_fetch_sub(&p->pending, d) - d;
	if ((now >> 32) == 0)
		ev_bump(p);
}

static void record_error(struct cpat_pool *p, int rc)
{
	lock(&p->elock);
	if (p->nerr_kept < p->max_errors)
		p->errs[p->nerr_kept++] = rc;
	unlock(&p->elock);
}

/* ---- waking workers ------------------------------------------------- */

static int spawn_locked(struct cpat_pool *p);
static void reap_locked(struct cpat_pool *p);

/* Pops one parked worker and makes it a spinner. p->lock not held. */
static bool wake_one(struct cpat_pool *p)
{
	lock(&p->lock);
	struct worker *w = p->idle;
	if (w) {
		p->idle = w->idle_next;
		atomic_fetch_add(&p->wstate, 1 - PARKED_ONE);
		atomic_store(&w->word, WS_WOKEN);
	}
	unlock(&p->lock);
	/* The worker struct outlives every wake (freed only at destroy, after
	 * every thread is joined); a late wake is at worst spurious. */
	if (w)
		cpat__unpark_one(&w->word);
	return w != NULL;
}

/* Wakes every parked worker (shutdown, resize). */
static void wake_all(struct cpat_pool *p)
{
	lock(&p->lock);
	struct worker *w;
	while ((w = p->idle) != NULL) {
		p->idle = w->idle_next;
		atomic_fetch_add(&p->wstate, 1 - PARKED_ONE);
		atomic_store(&w->word, WS_WOKEN);
		cpat__unpark_one(&w->word);
	}
	unlock(&p->lock);
}

static void maybe_grow(struct cpat_pool *p)
{
	if (atomic_load_explicit(&p->alive, memory_order_relaxed) >=
	    atomic_load_explicit(&p->max_w, memory_order_relaxed))
		return;
	lock(&p->lock);
	uint64_t s = atomic_load(&p->wstate);
	if (!p->closing && (uint32_t)s == 0 && (s >> 32) == 0 &&
	    atomic_load(&p->alive) < atomic_load(&p->max_w)) {
		reap_locked(p);
		(void)spawn_locked(p); /* on failure: keep the current size */
	}
	unlock(&p->lock);
}

/* A task was queued: make sure some worker will look at the queue. */
static inline void notify_work(struct cpat_pool *p)
{
	uint64_t s = atomic_load(&p->wstate);
	if ((uint32_t)s != 0)
		return; /* a spinner will find it */
	if ((s >> 32) != 0 && wake_one(p))
		return;
	if (p->kind == KIND_DYNAMIC)
		maybe_grow(p);
}

/* The calling worker stops spinning; found: it took a task. */
static inline void stop_spinning(struct cpat_pool *p, bool found)
{
	uint64_t s = atomic_fetch_sub(&p->wstate, 1) - 1;
	if (found && (uint32_t)s == 0 &&
	    (cpat_chan_len(p->q) > 0 || atomic_load(&p->nbuffered) > 0))
		notify_work(p);
}

static bool become_spinner(struct cpat_pool *p)
{
	uint64_t s = atomic_load_explicit(&p->wstate, memory_order_relaxed);
	while ((uint32_t)s < p->spin_cap) {
		if (atomic_compare_exchange_weak(&p->wstate, &s, s + 1))
			return true;
	}
	return false;
}

/* ---- running tasks ---------------------------------------------------- */

static void discard_task(struct cpat_pool *p, const struct cpat_task *t)
{
	if (t->done)
		t->done(t->arg, -ECANCELED);
	atomic_fetch_add(&p->discarded, 1);
	pending_sub(p, 1);
}

/*
 * Runs a dequeued task on worker w. Returns 1 when the caller owes the
 * task's decrement of p->pending: workers batch those (see worker_main).
 */
static int run_on_worker(struct cpat_pool *p, struct worker *w,
			 const struct cpat_task *t)
{
	room_check(p);
	if (atomic_load_explicit(&p->stop, memory_order_relaxed)) {
		discard_task(p, t);
		return 0;
	}
	atomic_store_explicit(&w->busy, 1, memory_order_relaxed);
	int rc = t->fn(t->arg, p->tok);
	if (rc != 0) {
		atomic_store_explicit(
			&w->failed,
			atomic_load_explicit(&w->failed, memory_order_relaxed) +
				1,
			memory_order_relaxed);
		record_error(p, rc);
	}
	if (t->done)
		t->done(t->arg, rc);
	atomic_store_explicit(&w->busy, 0, memory_order_relaxed);
	atomic_store_explicit(
		&w->ran,
		atomic_load_explicit(&w->ran, memory_order_relaxed) + 1,
		memory_order_release);
	return 1;
}

/* Runs a task in the submitting thread; accepted and inline_running were
 * already counted by the caller. */
static void run_inline(struct cpat_pool *p, const struct cpat_task *t)
{
	struct frame fr = {p, tl_frames};
	tl_frames = &fr;
	int rc = t->fn(t->arg, p->tok);
	if (rc != 0) {
		atomic_fetch_add(&p->inline_failed, 1);
		record_error(p, rc);
	}
	if (t->done)
		t->done(t->arg, rc);
	tl_frames = fr.prev;
	atomic_fetch_add(&p->inline_ran, 1);
	atomic_fetch_sub(&p->inline_running, 1);
	pending_sub(p, 1);
	ev_bump(p);
}

/* ---- the worker ------------------------------------------------------- */

/* Takes the next task of w's batch buffer (any thread). */
static bool buf_take(struct cpat_pool *p, struct worker *w, struct cpat_task *t)
{
	/* Seq_cst, as the refill's store: see take(). */
	uint64_t v = atomic_load(&w->bword);
	for (;;) {
		unsigned i = (unsigned)(v >> 16) & 0xffffu;
		unsigned n = (unsigned)v & 0xffffu;
		if (i >= n)
			return false;
		/* Read before the CAS that owns it: a stale read (the owner
		 * refilled) fails the CAS, as the generation moved. */
		struct atask *a = &w->bslots[i];
		t->fn = atomic_load_explicit(&a->fn, memory_order_relaxed);
		t->done = atomic_load_explicit(&a->done, memory_order_relaxed);
		t->arg = atomic_load_explicit(&a->arg, memory_order_relaxed);
		if (atomic_compare_exchange_weak_explicit(
			    &w->bword, &v, v + ((uint64_t)1 << 16),
			    memory_order_acq_rel, memory_order_acquire)) {
			atomic_fetch_sub(&p->nbuffered, 1);
			return true;
		}
	}
}

static bool buf_empty(struct worker *w)
{
	uint64_t v = atomic_load_explicit(&w->bword, memory_order_relaxed);
	return ((v >> 16) & 0xffffu) >= (v & 0xffffu);
}

/* Takes a task another worker holds in its batch buffer. */
static bool steal(struct cpat_pool *p, struct worker *self, struct cpat_task *t)
{
	if (atomic_load(&p->nbuffered) == 0)
		return false;
	bool got = false;
	lock(&p->lock); /* keeps the workers' structs in place */
	for (struct worker *w = p->live; w && !got; w = w->next)
		if (w != self)
			got = buf_take(p, w, t);
	unlock(&p->lock);
	return got;
}

static int recv_or_steal(struct cpat_pool *p, struct worker *self,
			 struct cpat_task *t)
{
	int rc = cpat_chan_try_recv(p->q, t);
	/* Closed and drained: what other workers hold may still be run. */
	if ((rc == -EAGAIN || rc == -EPIPE) && steal(p, self, t))
		rc = 0;
	return rc;
}

/* Spins for a task: 0 (got one), -EPIPE (closed and drained), -ECANCELED
 * (stop), -EAGAIN (gave up). */
static int spin_recv(struct cpat_pool *p, struct worker *self,
		     struct cpat_task *t)
{
	if (!cpat__spin_pays())
		return -EAGAIN;
	for (int i = 0; i < SPIN_ROUNDS; i++) {
		if (i < SPIN_PAUSES) {
			for (int j = 0; j < 16; j++)
				cpat__cpu_relax();
		} else {
			sched_yield();
		}
		if (atomic_load_explicit(&p->stop, memory_order_relaxed))
			return -ECANCELED;
		int rc = recv_or_steal(p, self, t);
		if (rc != -EAGAIN)
			return rc;
	}
	return -EAGAIN;
}

static void idle_remove(struct cpat_pool *p, struct worker *w)
{
	for (struct worker **pp = &p->idle; *pp; pp = &(*pp)->idle_next) {
		if (*pp == w) {
			*pp = w->idle_next;
			return;
		}
	}
}

/*
 * Parks the worker until it is woken, the queue has a task, stop or close.
 * Returns as cpat_chan_try_recv() (0 with *t), or -ECANCELED for stop, or
 * -EAGAIN when woken (*spinning is then true). *retire: it retired (idle
 * timeout above min); alive was decremented.
 */
static int park(struct cpat_pool *p, struct worker *w, struct cpat_task *t,
		bool *spinning, bool *retire)
{
	bool dyn = p->kind == KIND_DYNAMIC;
	int64_t deadline = dyn ? cpat_now_ns() + p->idle_timeout : CPAT_FOREVER;
	lock(&p->lock);
	atomic_store(&w->word, WS_PARKED);
	w->idle_next = p->idle;
	p->idle = w;
	atomic_fetch_add(&p->wstate, PARKED_ONE);
	unlock(&p->lock);
	for (;;) {
		int rc = atomic_load(&p->stop) ? -ECANCELED
					       : recv_or_steal(p, w, t);
		if (rc == -EAGAIN) {
			if (atomic_load(&w->word) == WS_PARKED)
				cpat__park(&w->word, WS_PARKED, deadline);
			if (atomic_load(&w->word) == WS_WOKEN) {
				atomic_store(&w->word, WS_RUN);
				*spinning = true;
				return -EAGAIN;
			}
			if (deadline != CPAT_FOREVER &&
			    cpat_now_ns() >= deadline) {
				lock(&p->lock);
				if (atomic_load(&w->word) == WS_PARKED) {
					if (atomic_load(&p->alive) >
					    atomic_load(&p->min_w)) {
						idle_remove(p, w);
						atomic_fetch_sub(&p->wstate,
								 PARKED_ONE);
						atomic_fetch_sub(&p->alive, 1);
						w->counted_out = true;
						atomic_store(&w->word, WS_RUN);
						unlock(&p->lock);
						*retire = true;
						return -EAGAIN;
					}
					deadline =
						cpat_now_ns() + p->idle_timeout;
				}
				unlock(&p->lock);
			}
			continue;
		}
		lock(&p->lock);
		bool was_parked = atomic_load(&w->word) == WS_PARKED;
		if (was_parked) {
			idle_remove(p, w);
			atomic_fetch_sub(&p->wstate, PARKED_ONE);
		} else {
			*spinning = true; /* a waker counted us spinning */
		}
		atomic_store(&w->word, WS_RUN);
		unlock(&p->lock);
		/* A task found by the re-check may be the first of several
		 * queued while this worker still counted as spinning, whose
		 * submitters therefore woke nobody: like a last spinner that
		 * found work, pass the wake on (a woken worker does so in
		 * stop_spinning()). */
		if (rc == 0 && was_parked &&
		    !CPAT_PLANTED(CPAT_BUG_POOL_PARK_NO_PASS) &&
		    (cpat_chan_len(p->q) > 0 || atomic_load(&p->nbuffered) > 0))
			notify_work(p);
		return rc;
	}
}

/* Retires the worker if the pool is above its (lowered) maximum. */
static bool retire_over_max(struct cpat_pool *p, struct worker *w)
{
	bool r = false;
	lock(&p->lock);
	if (atomic_load(&p->alive) > atomic_load(&p->max_w)) {
		atomic_fetch_sub(&p->alive, 1);
		w->counted_out = true;
		r = true;
	}
	unlock(&p->lock);
	return r;
}

/*
 * Batched dequeue. While tasks are short (measured over TAKE_WINDOW
 * consecutive tasks, one clock read per window), a worker takes up to
 * TAKE_MAX tasks (at most its share of the queue) with one
 * cpat_chan_recv_many(), runs the first and keeps the rest in its buffer,
 * which cuts the contended CAS on the queue head per task. A worker must
 * never sit on tasks others could run while it runs a long one (a task
 * waiting for one of them would deadlock a pool with idle workers), so the
 * buffer is public: idle workers steal from it (p->nbuffered says when to
 * look), and a refill makes sure a worker is awake to do so, with the same
 * seq_cst handshake as the queue (refill: add to nbuffered, then read
 * wstate; parker: register, then re-check the queue and nbuffered).
 */
struct take_state {
	size_t want;
	unsigned count;
	int64_t t0;
};

static int take(struct cpat_pool *p, struct worker *w, struct take_state *ts,
		struct cpat_task *t)
{
	if (buf_take(p, w, t))
		return 0;
	if (++ts->count >= TAKE_WINDOW) {
		int64_t now = cpat_now_ns();
		ts->want = ts->t0 && now - ts->t0 < TAKE_WINDOW * TAKE_SHORT_NS
				   ? TAKE_MAX
				   : 1;
		ts->t0 = now;
		ts->count = 0;
	}
	size_t k = 1;
	if (ts->want > 1) {
		unsigned alive =
			atomic_load_explicit(&p->alive, memory_order_relaxed);
		k = cpat_chan_len(p->q) / (alive ? alive : 1);
		if (k > ts->want)
			k = ts->want;
	}
	int rc;
	if (k <= 1) {
		rc = recv_or_steal(p, w, t);
	} else {
		struct cpat_task tmp[TAKE_MAX];
		size_t got = 0;
		rc = cpat_chan_recv_many(p->q, tmp, k, &got, NULL, 0);
		if (rc == -ETIMEDOUT)
			rc = -EAGAIN; /* empty: a past deadline */
		if (rc == -EAGAIN || rc == -EPIPE) {
			if (steal(p, w, t))
				rc = 0;
		} else if (rc == 0) {
			*t = tmp[0];
			if (got > 1) {
				uint64_t v = atomic_load_explicit(
					&w->bword, memory_order_relaxed);
				for (size_t j = 1; j < got; j++) {
					struct atask *a = &w->bslots[j - 1];
					atomic_store_explicit(
						&a->fn, tmp[j].fn,
						memory_order_relaxed);
					atomic_store_explicit(
						&a->done, tmp[j].done,
						memory_order_relaxed);
					atomic_store_explicit(
						&a->arg, tmp[j].arg,
						memory_order_relaxed);
				}
				atomic_fetch_add(&p->nbuffered, got - 1);
				atomic_store(&w->bword,
					     ((v >> 32) + 1) << 32 |
						     (uint64_t)(got - 1));
				/* Someone awake must be able to steal them
				 * (a dynamic pool grows for them). */
				notify_work(p);
			}
		}
	}
	if (rc != 0) {
		/* Idle time must not count as task time. */
		ts->count = 0;
		ts->t0 = 0;
	} else if (ts->t0 == 0) {
		ts->t0 = cpat_now_ns();
	}
	return rc;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct cpat_pool *p = w->pool;
	struct frame fr = {p, tl_frames};
	tl_frames = &fr;
	bool spinning = true; /* the spawner counted us spinning */
	bool dyn = p->kind == KIND_DYNAMIC;
	cpat__thread_name(dyn ? "cpat-dynpool" : "cpat-pool");
	struct cpat_task t;
	/*
	 * Finished tasks not yet taken off p->pending: flushed as soon as
	 * the queue is seen empty (so wait_idle wakes right after the last
	 * task), every OWED_MAX tasks, and at exit. It saves a write to the
	 * submitters' cache line per task while the queue has work.
	 */
	unsigned owed = 0;
	struct take_state ts = {.want = 1, .count = 0, .t0 = 0};
	for (;;) {
		if (atomic_load_explicit(&p->stop, memory_order_relaxed)) {
			/* Discard what this worker took but did not run. */
			while (buf_take(p, w, &t))
				discard_task(p, &t);
			break;
		}
		if (dyn && buf_empty(w) &&
		    atomic_load_explicit(&p->alive, memory_order_relaxed) >
			    atomic_load_explicit(&p->max_w,
						 memory_order_relaxed) &&
		    retire_over_max(p, w)) {
			/* A woken worker counts as a spinner, so submitters
			 * may have left tasks to it: pass them on. */
			if (spinning) {
				spinning = false;
				stop_spinning(p, true);
			}
			break;
		}
		int rc = take(p, w, &ts, &t);
		if ((rc != 0 || owed >= OWED_MAX) && owed > 0) {
			pending_sub(p, owed);
			owed = 0;
		}
		if (rc == -EAGAIN && !spinning && become_spinner(p))
			spinning = true;
		if (rc == -EAGAIN && spinning)
			rc = spin_recv(p, w, &t);
		if (rc == -EAGAIN) {
			bool retire = false;
			cpat__pool_hook_fn hook = atomic_load_explicit(
				&cpat__test_pool_before_park,
				memory_order_relaxed);
			if (hook)
				hook(p, spinning);
			if (spinning) {
				spinning = false;
				stop_spinning(p, false);
			}
			rc = park(p, w, &t, &spinning, &retire);
			if (retire)
				break;
		}
		if (rc == 0) {
			if (spinning) {
				spinning = false;
				stop_spinning(p, true);
			}
			owed += run_on_worker(p, w, &t);
			continue;
		}
		if (rc == -EPIPE)
			break;
		/* -EAGAIN (woken) or -ECANCELED (stop): loop. */
	}
	if (owed > 0)
		pending_sub(p, owed);
	if (spinning)
		atomic_fetch_sub(&p->wstate, 1);
	int64_t now = cpat_now_ns();
	lock(&p->lock);
	if (!w->counted_out)
		atomic_fetch_sub(&p->alive, 1);
	if (w->prev)
		w->prev->next = w->next;
	else
		p->live = w->next;
	if (w->next)
		w->next->prev = w->prev;
	p->ran_gone += atomic_load(&w->ran);
	p->failed_gone += atomic_load(&w->failed);
	p->secs_gone += (double)(now - w->start_ns) / 1e9;
	p->retired++;
	w->next = p->zombies;
	p->zombies = w;
	unlock(&p->lock);
	ev_bump(p);
	tl_frames = fr.prev;
	return NULL;
}

/* Starts one worker; p->lock held. 0, -ENOMEM or -EAGAIN. */
static int spawn_locked(struct cpat_pool *p)
{
	struct worker *w = p->freelist;
	if (w) {
		p->freelist = w->next;
	} else {
		/* Own cache lines: workers write their counters per task. */
		w = cpat__malloc_aligned(sizeof *w, CPAT_CACHELINE);
		if (!w)
			return -ENOMEM;
		memset(w, 0, sizeof *w);
	}
	w->pool = p;
	w->next = w->prev = w->idle_next = NULL;
	atomic_init(&w->word, WS_RUN);
	w->counted_out = false;
	w->start_ns = cpat_now_ns();
	atomic_init(&w->ran, 0);
	atomic_init(&w->failed, 0);
	atomic_init(&w->busy, 0);
	atomic_fetch_add(&p->alive, 1);
	atomic_fetch_add(&p->wstate, 1);
	int rc = cpat__thread_start(&w->th, worker_main, w, false);
	if (rc != 0) {
		atomic_fetch_sub(&p->alive, 1);
		atomic_fetch_sub(&p->wstate, 1);
		w->next = p->freelist;
		p->freelist = w;
		return -EAGAIN;
	}
	p->unjoined++;
	w->next = p->live;
	if (p->live)
		p->live->prev = w;
	p->live = w;
	p->spawned++;
	unsigned a = atomic_load(&p->alive);
	if (a > p->peak)
		p->peak = a;
	return 0;
}

/* Joins exited workers; p->lock held (they no longer take it). */
static void reap_locked(struct cpat_pool *p)
{
	struct worker *w;
	while ((w = p->zombies) != NULL) {
		p->zombies = w->next;
		CPAT_CHECK(pthread_join(w->th, NULL) == 0);
		p->unjoined--;
		w->next = p->freelist;
		p->freelist = w;
	}
}

/* ---- creation --------------------------------------------------------- */

static bool policy_ok(int policy)
{
	return policy == CPAT_POOL_BLOCK || policy == CPAT_POOL_REJECT ||
	       policy == CPAT_POOL_CALLER_RUNS;
}

static int wait_complete(struct cpat_pool *p, int64_t deadline);
static void free_pool(struct cpat_pool *p);

static int pool_create(struct cpat_pool **out, int kind, unsigned nmin,
		       unsigned nmax, size_t qcap, int policy,
		       struct cpat_token *parent, size_t max_errors,
		       int64_t idle_timeout)
{
	struct cpat_pool *p = cpat__malloc_aligned(sizeof *p, CPAT_CACHELINE);
	if (!p)
		return -ENOMEM;
	memset(p, 0, sizeof *p);
	p->kind = kind;
	p->policy = policy;
	p->max_errors = max_errors;
	p->idle_timeout = idle_timeout;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	if (ncpu < 1)
		ncpu = 1;
	/*
	 * Up to one spinner per CPU. Go allows half the busy CPUs; measured
	 * on 2 CPUs with one submitter, a single spinner makes every task
	 * that arrives while it runs one trigger a wake-up and a park (the
	 * woken worker takes the spinner's place), about 3x slower.
	 */
	p->spin_cap = (unsigned)ncpu;
	atomic_init(&p->pending, 0);
	atomic_init(&p->accepted, 0);
	atomic_init(&p->rejected, 0);
	atomic_init(&p->wstate, 0);
	atomic_init(&p->closed, 0);
	atomic_init(&p->stop, 0);
	atomic_init(&p->alive, 0);
	atomic_init(&p->min_w, nmin);
	atomic_init(&p->max_w, nmax);
	atomic_init(&p->evseq, 0);
	atomic_init(&p->evwaiters, 0);
	atomic_init(&p->roomseq, 0);
	atomic_init(&p->roomwaiters, 0);
	atomic_init(&p->room_armed, 0);
	p->low_water = qcap / 2;
	atomic_init(&p->inline_ran, 0);
	atomic_init(&p->inline_failed, 0);
	atomic_init(&p->discarded, 0);
	atomic_init(&p->nbuffered, 0);
	atomic_init(&p->inline_running, 0);
	CPAT_CHECK(pthread_mutex_init(&p->lock, NULL) == 0);
	CPAT_CHECK(pthread_mutex_init(&p->elock, NULL) == 0);
	int rc = -ENOMEM;
	if (max_errors > 0) {
		p->errs = cpat__calloc(max_errors, sizeof(int));
		if (!p->errs)
			goto fail;
	}
	rc = cpat_chan_create(&p->q, sizeof(struct cpat_task), qcap);
	if (rc != 0)
		goto fail;
	rc = cpat_token_create(&p->tok, parent);
	if (rc != 0)
		goto fail;
	lock(&p->lock);
	for (unsigned i = 0; i < nmin && rc == 0; i++)
		rc = spawn_locked(p);
	unlock(&p->lock);
	if (rc != 0) {
		/* Stop and join what was started. */
		lock(&p->lock);
		p->closing = true;
		unlock(&p->lock);
		atomic_store(&p->stop, 1);
		atomic_store(&p->closed, 1);
		cpat_chan_close(p->q);
		wake_all(p);
		(void)wait_complete(p, CPAT_FOREVER);
		goto fail;
	}
	*out = p;
	return 0;
fail:
	free_pool(p);
	return rc;
}

void cpat_pool_opts_init(struct cpat_pool_opts *opts)
{
	if (!opts)
		return;
	memset(opts, 0, sizeof *opts);
	opts->workers = 4;
	opts->queue_capacity = 1024;
	opts->policy = CPAT_POOL_BLOCK;
	opts->parent = NULL;
	opts->max_errors = 64;
}

int cpat_pool_create(struct cpat_pool **out, const struct cpat_pool_opts *opts)
{
	if (out)
		*out = NULL;
	struct cpat_pool_opts def;
	if (!opts) {
		cpat_pool_opts_init(&def);
		opts = &def;
	}
	if (!out || opts->workers == 0 || opts->queue_capacity == 0 ||
	    !policy_ok(opts->policy) || opts->workers > (1u << 30))
		return -EINVAL;
	return pool_create(out, KIND_FIXED, opts->workers, opts->workers,
			   opts->queue_capacity, opts->policy, opts->parent,
			   opts->max_errors, CPAT_FOREVER);
}

void cpat_dynpool_opts_init(struct cpat_dynpool_opts *opts)
{
	if (!opts)
		return;
	memset(opts, 0, sizeof *opts);
	opts->min_workers = 1;
	opts->max_workers = 16;
	opts->idle_timeout_ns = CPAT_SEC;
	opts->queue_capacity = 1024;
	opts->policy = CPAT_POOL_BLOCK;
	opts->parent = NULL;
	opts->max_errors = 64;
}

int cpat_dynpool_create(struct cpat_pool **out,
			const struct cpat_dynpool_opts *opts)
{
	if (out)
		*out = NULL;
	struct cpat_dynpool_opts def;
	if (!opts) {
		cpat_dynpool_opts_init(&def);
		opts = &def;
	}
	if (!out || opts->min_workers == 0 ||
	    opts->max_workers < opts->min_workers ||
	    opts->max_workers > (1u << 30) || opts->idle_timeout_ns <= 0 ||
	    opts->queue_capacity == 0 || !policy_ok(opts->policy))
		return -EINVAL;
	return pool_create(out, KIND_DYNAMIC, opts->min_workers,
			   opts->max_workers, opts->queue_capacity,
			   opts->policy, opts->parent, opts->max_errors,
			   opts->idle_timeout_ns);
}

/* ---- submitting ------------------------------------------------------- */

struct room_wait_rec {
	struct cpat__watch w;
	struct cpat_pool *p;
	_Atomic int cause;
};

static void room_watch_fired(struct cpat__watch *w, int cause)
{
	struct room_wait_rec *rw = w->arg;
	atomic_store(&rw->cause, cause);
	room_bump(rw->p);
}

/*
 * Waits for room and sends one task: 0, -EPIPE, the token's cause or
 * -ETIMEDOUT. A blocked submitter sets p->room_armed (seq_cst) before each
 * send attempt and a worker reads it (seq_cst) after its dequeue, so
 * either the worker sees it armed or the submitter sees the room. The
 * first worker to find the queue at its low-water mark disarms it and
 * wakes every blocked submitter (one system call per refill, not per
 * task); close and resize wake them always.
 */
static int room_wait(struct cpat_pool *p, const struct cpat_task *t,
		     struct cpat_token *tok, int64_t deadline)
{
	struct room_wait_rec rw = {.p = p};
	atomic_init(&rw.cause, 0);
	rw.w.fn = room_watch_fired;
	rw.w.arg = &rw;
	int rc;
	if (tok) {
		cpat_token_ref(tok);
		rc = cpat__token_watch(tok, &rw.w);
		if (rc != 0) {
			cpat_token_unref(tok);
			return rc;
		}
	}
	int64_t backoff = 100 * CPAT_USEC, spin_end = 0;
	atomic_fetch_add(&p->roomwaiters, 1);
	for (int i = 0;; i++) {
		uint32_t seq = atomic_load(&p->roomseq);
		/* Seq_cst either way; no store (no line stolen from the
		 * workers that read it per task) when already armed. */
		if (atomic_load(&p->room_armed) == 0)
			atomic_store(&p->room_armed, 1);
		rc = cpat_chan_try_send(p->q, t);
		if (rc != -EAGAIN)
			break;
		if ((rc = atomic_load(&rw.cause)) != 0)
			break;
		if (deadline != CPAT_FOREVER && cpat_now_ns() >= deadline) {
			rc = -ETIMEDOUT;
			break;
		}
		if (i == 0)
			notify_work(p);
		/*
		 * Short tasks free a slot within a microsecond or so: spin
		 * that long before a sleep (a system call each way, and a
		 * wake-up latency the workers may spend idle). Not longer:
		 * with long tasks the CPU is better left to them.
		 */
		if (i == 0)
			spin_end = cpat_now_ns() + ROOM_SPIN_NS;
		if (cpat_now_ns() < spin_end) {
			for (int j = 0; j < 16; j++)
				cpat__cpu_relax();
			continue;
		}
		/*
		 * Workers wake us at the low-water mark. When they are stuck
		 * in long tasks the queue may never get there although it has
		 * room: re-check after a bounded nap (100 us, doubling to
		 * 1 ms), cheap next to tasks that long.
		 */
		int64_t nap = cpat_now_ns() + backoff;
		if (backoff < CPAT_MSEC)
			backoff *= 2;
		cpat__park(&p->roomseq, seq, cpat__deadline_min(deadline, nap));
	}
	atomic_fetch_sub(&p->roomwaiters, 1);
	if (tok) {
		cpat__token_unwatch(tok, &rw.w);
		cpat_token_unref(tok);
	}
	return rc;
}

/*
 * Offers tasks[0..n); *nacc receives how many were accepted. try_only:
 * never block and ignore the policy (try_submit).
 */
static int submit_common(struct cpat_pool *p, const struct cpat_task *tasks,
			 size_t n, size_t *nacc, struct cpat_token *tok,
			 int64_t deadline, bool try_only)
{
	size_t done = 0;
	int rc = 0;
	if (atomic_load_explicit(&p->closed, memory_order_relaxed)) {
		/* Late: not part of any shutdown's report. */
		atomic_fetch_add(&p->rejected, n);
		return -EPIPE;
	}
	if (!try_only && tok && (rc = cpat_token_status(tok)) != 0) {
		atomic_fetch_add(&p->rejected, n);
		return rc;
	}
	bool own = inside(p);
	atomic_fetch_add(&p->pending, ENTER_ONE + n);
	if (atomic_load(&p->closed)) {
		rc = -EPIPE;
		goto out;
	}
	while (done < n) {
		size_t k = 0;
		int r;
		if (n - done == 1) {
			r = cpat_chan_try_send(p->q, &tasks[done]);
			if (r == 0)
				k = 1;
		} else {
			r = cpat_chan_send_many(p->q, &tasks[done], n - done,
						&k, NULL, 0);
			if (r == -ETIMEDOUT)
				r = -EAGAIN;
		}
		if (k > 0) {
			done += k;
			atomic_fetch_add_explicit(&p->accepted, k,
						  memory_order_relaxed);
			notify_work(p);
		}
		if (done == n)
			break;
		if (r == -EPIPE) {
			rc = -EPIPE;
			break;
		}
		if (r != -EAGAIN) {
			rc = r;
			break;
		}
		/* The queue is full. */
		if (try_only || p->policy == CPAT_POOL_REJECT) {
			rc = -EAGAIN;
			break;
		}
		if (own || p->policy == CPAT_POOL_CALLER_RUNS) {
			atomic_fetch_add(&p->accepted, 1);
			atomic_fetch_add(&p->inline_running, 1);
			pending_sub(p,
				    ENTER_ONE); /* not entering while it runs */
			run_inline(p, &tasks[done]);
			done++;
			atomic_fetch_add(&p->pending, ENTER_ONE);
			if (done < n && atomic_load(&p->closed)) {
				rc = -EPIPE;
				break;
			}
			continue;
		}
		r = room_wait(p, &tasks[done], tok, deadline);
		if (r != 0) {
			rc = r;
			break;
		}
		done++;
		atomic_fetch_add_explicit(&p->accepted, 1,
					  memory_order_relaxed);
		notify_work(p);
	}
out:;
	size_t refused = n - done;
	if (refused)
		atomic_fetch_add(&p->rejected, refused);
	pending_sub(p, ENTER_ONE + refused);
	if (nacc)
		*nacc = done;
	return rc;
}

int cpat_pool_submit_until(struct cpat_pool *pool, const struct cpat_task *task,
			   struct cpat_token *tok, int64_t deadline_ns)
{
	if (!pool || !task || !task->fn || !cpat__deadline_ok(deadline_ns))
		return -EINVAL;
	return submit_common(pool, task, 1, NULL, tok, deadline_ns, false);
}

int cpat_pool_submit(struct cpat_pool *pool, const struct cpat_task *task,
		     struct cpat_token *tok)
{
	return cpat_pool_submit_until(pool, task, tok, CPAT_FOREVER);
}

int cpat_pool_try_submit(struct cpat_pool *pool, const struct cpat_task *task)
{
	if (!pool || !task || !task->fn)
		return -EINVAL;
	return submit_common(pool, task, 1, NULL, NULL, CPAT_FOREVER, true);
}

int cpat_pool_submit_many(struct cpat_pool *pool, const struct cpat_task *tasks,
			  size_t n, size_t *submitted, struct cpat_token *tok,
			  int64_t deadline_ns)
{
	if (submitted)
		*submitted = 0;
	if (!pool || !tasks || n == 0 || !cpat__deadline_ok(deadline_ns) ||
	    n > (size_t)INT32_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!tasks[i].fn)
			return -EINVAL;
	return submit_common(pool, tasks, n, submitted, tok, deadline_ns,
			     false);
}

/* ---- waiting ---------------------------------------------------------- */

struct ev_wait {
	struct cpat__watch w;
	struct cpat_pool *p;
	_Atomic int cause;
};

static void ev_watch_fired(struct cpat__watch *w, int cause)
{
	struct ev_wait *ew = w->arg;
	atomic_store(&ew->cause, cause);
	atomic_fetch_add(&ew->p->evseq, 1);
	cpat__unpark_all(&ew->p->evseq);
}

int cpat_pool_wait_idle(struct cpat_pool *pool, struct cpat_token *tok,
			int64_t deadline_ns)
{
	if (!pool || !cpat__deadline_ok(deadline_ns))
		return -EINVAL;
	if (inside(pool))
		return -EBUSY;
	struct cpat_pool *p = pool;
	struct ev_wait ew = {.p = p};
	atomic_init(&ew.cause, 0);
	ew.w.fn = ev_watch_fired;
	ew.w.arg = &ew;
	bool watching = false;
	if (tok) {
		cpat_token_ref(tok);
		int c = cpat__token_watch(tok, &ew.w);
		if (c != 0) {
			cpat_token_unref(tok);
			return c;
		}
		watching = true;
	}
	int rc;
	atomic_fetch_add(&p->evwaiters, 1);
	for (;;) {
		uint32_t seq = atomic_load(&p->evseq);
		if (atomic_load(&p->pending) == 0) {
			rc = 0;
			break;
		}
		if ((rc = atomic_load(&ew.cause)) != 0)
			break;
		if (deadline_ns != CPAT_FOREVER &&
		    cpat_now_ns() >= deadline_ns) {
			rc = -ETIMEDOUT;
			break;
		}
		cpat__park(&p->evseq, seq, deadline_ns);
	}
	atomic_fetch_sub(&p->evwaiters, 1);
	if (watching) {
		cpat__token_unwatch(tok, &ew.w);
		cpat_token_unref(tok);
	}
	return rc;
}

/* Discards every queued task (the channel is closed: ends at -EPIPE). */
static void discard_queue(struct cpat_pool *p)
{
	struct cpat_task t;
	bool lose = CPAT_PLANTED(CPAT_BUG_POOL_DISCARD_LOST);
	while (cpat_chan_try_recv(p->q, &t) == 0) {
		if (lose) { /* planted: the task vanishes, uncounted */
			lose = false;
			pending_sub(p, 1);
			continue;
		}
		discard_task(p, &t);
	}
	/* And what workers took in batches (one may be stuck in a task). */
	while (steal(p, NULL, &t))
		discard_task(p, &t);
}

/* Waits until no submit is entering, no inline run is in progress and
 * every worker has exited and been joined. 0 or -ETIMEDOUT. */
static int wait_complete(struct cpat_pool *p, int64_t deadline)
{
	int rc;
	atomic_fetch_add(&p->evwaiters, 1);
	for (;;) {
		uint32_t seq = atomic_load(&p->evseq);
		lock(&p->lock);
		bool had = p->zombies != NULL;
		reap_locked(p);
		bool joined = p->unjoined == 0;
		unlock(&p->lock);
		if (had)
			ev_bump(p); /* other shutdown callers re-check */
		if (joined && (atomic_load(&p->pending) >> 32) == 0 &&
		    atomic_load(&p->inline_running) == 0) {
			rc = 0;
			break;
		}
		if (deadline != CPAT_FOREVER && cpat_now_ns() >= deadline) {
			rc = -ETIMEDOUT;
			break;
		}
		cpat__park(&p->evseq, seq, deadline);
	}
	atomic_fetch_sub(&p->evwaiters, 1);
	return rc;
}

/* Waits (no deadline: submits leave their entering section promptly once
 * the channel is closed) until no submit is entering. */
static void wait_no_entering(struct cpat_pool *p)
{
	atomic_fetch_add(&p->evwaiters, 1);
	for (;;) {
		uint32_t seq = atomic_load(&p->evseq);
		if ((atomic_load(&p->pending) >> 32) == 0)
			break;
		cpat__park(&p->evseq, seq, CPAT_FOREVER);
	}
	atomic_fetch_sub(&p->evwaiters, 1);
}

static void fill_report(struct cpat_pool *p, struct cpat_pool_report *r)
{
	lock(&p->lock);
	uint64_t ran = p->ran_gone, failed = p->failed_gone;
	for (struct worker *w = p->live; w; w = w->next) {
		ran += atomic_load(&w->ran);
		failed += atomic_load(&w->failed);
	}
	unlock(&p->lock);
	ran += atomic_load(&p->inline_ran);
	failed += atomic_load(&p->inline_failed);
	uint64_t discarded = atomic_load(&p->discarded);
	uint64_t accepted = atomic_load(&p->accepted);
	uint64_t rejected = atomic_load(&p->rejected);
	r->ran = ran;
	r->failed = failed;
	r->discarded = discarded;
	r->rejected = rejected;
	r->still_running =
		accepted > ran + discarded ? accepted - ran - discarded : 0;
	r->submitted = ran + discarded + rejected + r->still_running;
}

int cpat_pool_shutdown(struct cpat_pool *pool, int mode, int64_t deadline_ns,
		       struct cpat_pool_report *report)
{
	if (!pool || (mode != CPAT_POOL_DRAIN && mode != CPAT_POOL_DISCARD) ||
	    !cpat__deadline_ok(deadline_ns))
		return -EINVAL;
	if (inside(pool))
		return -EBUSY;
	struct cpat_pool *p = pool;
	lock(&p->lock);
	if (p->sd_done) {
		if (report)
			*report = p->report;
		unlock(&p->lock);
		return 0;
	}
	bool first = !p->closing;
	p->closing = true;
	unlock(&p->lock);
	if (mode == CPAT_POOL_DISCARD)
		atomic_store(&p->stop, 1);
	if (first) {
		atomic_store(&p->closed, 1);
		(void)cpat_chan_close(p->q);
		room_bump(p);
	}
	wake_all(p);
	if (atomic_load(&p->stop))
		discard_queue(p);
	int rc = wait_complete(p, deadline_ns);
	if (rc != 0) {
		cpat_token_cancel(p->tok);
		atomic_store(&p->stop, 1);
		wake_all(p);
		wait_no_entering(p);
		discard_queue(p);
		struct cpat_pool_report r;
		fill_report(p, &r);
		if (report)
			*report = r;
		return -ETIMEDOUT;
	}
	lock(&p->lock);
	bool fill = !p->sd_done;
	unlock(&p->lock);
	struct cpat_pool_report r;
	if (fill)
		fill_report(p, &r);
	lock(&p->lock);
	if (!p->sd_done) {
		p->report = r;
		p->sd_done = true;
	}
	if (report)
		*report = p->report;
	unlock(&p->lock);
	return 0;
}

/* ---- queries ---------------------------------------------------------- */

struct cpat_token *cpat_pool_token(struct cpat_pool *pool)
{
	return pool ? pool->tok : NULL;
}

int cpat_pool_stats(struct cpat_pool *pool, struct cpat_pool_stats *s)
{
	if (!pool || !s)
		return -EINVAL;
	struct cpat_pool *p = pool;
	memset(s, 0, sizeof *s);
	int64_t now = cpat_now_ns();
	uint64_t ran, failed, running = 0;
	double secs;
	lock(&p->lock);
	ran = p->ran_gone;
	failed = p->failed_gone;
	secs = p->secs_gone;
	for (struct worker *w = p->live; w; w = w->next) {
		ran += atomic_load(&w->ran);
		failed += atomic_load(&w->failed);
		running += atomic_load_explicit(&w->busy,
						memory_order_relaxed) != 0;
		secs += (double)(now - w->start_ns) / 1e9;
	}
	s->peak_workers = p->peak;
	s->spawned = p->spawned;
	s->retired = p->retired;
	unlock(&p->lock);
	ran += atomic_load(&p->inline_ran);
	failed += atomic_load(&p->inline_failed);
	running += atomic_load(&p->inline_running);
	uint64_t ws = atomic_load(&p->wstate);
	s->completed = ran;
	s->failed = failed;
	s->discarded = atomic_load(&p->discarded);
	s->rejected = atomic_load(&p->rejected);
	s->submitted = atomic_load(&p->accepted) + s->rejected;
	s->queued = cpat_chan_len(p->q) + atomic_load(&p->nbuffered);
	s->running = running;
	s->workers = atomic_load(&p->alive);
	s->idle = (unsigned)(ws & LOW_MASK) + (unsigned)(ws >> 32);
	if (s->idle > s->workers)
		s->idle = s->workers;
	s->worker_seconds = secs;
	return 0;
}

int cpat_pool_errors(struct cpat_pool *pool, int *errs, size_t n)
{
	if (!pool || (!errs && n > 0))
		return -EINVAL;
	lock(&pool->elock);
	size_t k = pool->nerr_kept;
	for (size_t i = 0; i < n && i < k; i++)
		errs[i] = pool->errs[i];
	unlock(&pool->elock);
	return k > INT32_MAX ? INT32_MAX : (int)k;
}

int cpat_dynpool_resize(struct cpat_pool *pool, unsigned min_workers,
			unsigned max_workers)
{
	if (!pool || pool->kind != KIND_DYNAMIC || min_workers == 0 ||
	    max_workers < min_workers || max_workers > (1u << 30))
		return -EINVAL;
	struct cpat_pool *p = pool;
	int rc = 0;
	lock(&p->lock);
	if (p->closing) {
		unlock(&p->lock);
		return -EPIPE;
	}
	atomic_store(&p->min_w, min_workers);
	atomic_store(&p->max_w, max_workers);
	reap_locked(p);
	while (atomic_load(&p->alive) < min_workers) {
		if (spawn_locked(p) != 0) {
			rc = -EAGAIN;
			break;
		}
	}
	/* Room to grow: start a worker for each queued task no idle worker
	 * is there to take, so blocked submitters find room. */
	if (rc == 0) {
		size_t queued = cpat_chan_len(p->q);
		uint64_t ws = atomic_load(&p->wstate);
		size_t idle = (size_t)(ws & LOW_MASK) + (size_t)(ws >> 32);
		while (queued > idle && atomic_load(&p->alive) < max_workers &&
		       spawn_locked(p) == 0)
			idle++;
	}
	bool over = atomic_load(&p->alive) > max_workers;
	unlock(&p->lock);
	if (over)
		wake_all(p); /* parked workers above max retire */
	room_bump(p);        /* blocked submitters re-check */
	return rc;
}

/* ---- destruction ------------------------------------------------------ */

static void free_pool(struct cpat_pool *p)
{
	struct worker *w;
	while ((w = p->freelist) != NULL) {
		p->freelist = w->next;
		cpat__free_aligned(w);
	}
	cpat_chan_destroy(p->q);
	cpat_token_unref(p->tok);
	cpat__free(p->errs);
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->elock);
	cpat__free_aligned(p);
}

void cpat_pool_destroy(struct cpat_pool *pool)
{
	if (!pool || inside(pool))
		return;
	(void)cpat_pool_shutdown(pool, CPAT_POOL_DRAIN, CPAT_FOREVER, NULL);
	free_pool(pool);
}

/* ---- test hooks ------------------------------------------------------- */

_Atomic(cpat__pool_hook_fn) cpat__test_pool_before_park;

unsigned cpat__pool_blocked_submitters(struct cpat_pool *p)
{
	return p ? atomic_load(&p->roomwaiters) : 0;
}

unsigned cpat__pool_parked_workers(struct cpat_pool *p)
{
	return p ? (unsigned)(atomic_load(&p->wstate) >> 32) : 0;
}

unsigned cpat__pool_idle_waiters(struct cpat_pool *p)
{
	return p ? atomic_load(&p->evwaiters) : 0;
}
