/*
 * DESIGN: the pool's workers (for the pool's API and accounting see pool.c,
 * for the dynamic pool's policy dynpool.c, for the structs pool_impl.h).
 *
 * Wake-up protocol (Go's scheduler, "spinning" workers). p->wstate packs
 * the number of spinning workers (low 32 bits: awake, looking for work,
 * will find a task queued now) and of parked workers (high 32 bits: on the
 * idle stack p->idle, sleeping on their own futex word w->word). After a
 * successful send a submitter reads wstate (seq_cst, notify_work() in
 * pool_impl.h): if some worker spins, it does nothing; otherwise it pops
 * one parked worker, moves it from parked to spinning in wstate and
 * unparks it (dynamic pool, none parked: starts a worker, counted as
 * spinning from the start). A spinner that finds a task stops spinning; if
 * it was the last spinner and tasks remain queued, it does the same wake
 * step, so a backlog wakes workers one by one and a steady stream costs no
 * system call while one worker spins. A worker that finds the queue empty
 * spins (at most spin_cap = one per CPU at once; a worker between tasks is
 * not a spinner, and with fewer spinners than CPUs a stream of short tasks
 * made the submitter wake a worker for every task that arrived while the
 * spinner ran one) for a short while (pauses, then yields), then parks: it
 * registers as parked (under p->lock, seq_cst add), re-checks the queue,
 * and only then sleeps. The send is a seq_cst RMW ordered before the
 * submitter's wstate load, and an empty re-check is a seq_cst load after
 * the registration (the guarantee CPAT__CHAN_SEND_IS_SEQ_CST of
 * chan_internal.h), so either the submitter sees the parked or spinning
 * worker, or the worker sees the task: no lost wake-up. A woken worker
 * finds w->word == WS_WOKEN and resumes spinning. A parker whose re-check
 * finds a task does the wake step too when tasks remain: it may have been
 * the spinner that those tasks' submitters relied on (they woke nobody),
 * and it was about to park without passing the wake on (a lost wake-up,
 * found as a rare hang pinned to one CPU).
 *
 * Taking tasks. Workers take tasks one at a time, or in batches while
 * tasks are short; a batch stays stealable by idle workers (see take()).
 * A worker counts its finished tasks off p->pending in batches too (see
 * worker_main()).
 *
 * Threads. Every worker is started by cpat__pool_spawn_locked() and joined
 * by cpat__pool_reap_locked(), both under p->lock (a joined thread is a
 * zombie that no longer takes it). A worker exits on stop (discarding its
 * batch buffer), when the closed queue is drained and its buffer is empty,
 * or when the dynamic pool's policy retires it (dynpool.c); it then folds
 * its counters into the pool's and moves itself to the zombie list. The
 * worker structs are kept on a free list until the pool is destroyed, so a
 * late wake-up or a thief never touches freed memory.
 */
#include "pool_impl.h"
#include "testhooks.h"

#include <sched.h>

/* Spinning before parking: SPIN_PAUSES rounds of pause, then yields. A
 * worker that may run on one CPU only does not spin (cpat__spin_pays():
 * there a yield beside a busy thread costs a time slice). */
#define SPIN_PAUSES 64
#define SPIN_ROUNDS 96
#define OWED_MAX 64
#define TAKE_MAX POOL_TAKE_MAX
#define TAKE_WINDOW 64
#define TAKE_SHORT_NS (1 * CPAT_USEC)

/* ---- waking workers ------------------------------------------------- */

bool cpat__pool_wake_one(struct cpat_pool *p)
{
	lock(&p->lock);
	struct worker *w = p->idle;
	if (w) {
		p->idle = w->idle_next;
		atomic_fetch_add(&p->wstate, 1 - POOL_PARKED_ONE);
		atomic_store(&w->word, WS_WOKEN);
	}
	unlock(&p->lock);
	/* The worker struct outlives every wake (freed only at destroy, after
	 * every thread is joined); a late wake is at worst spurious. */
	if (w)
		cpat__unpark_one(&w->word);
	return w != NULL;
}

void cpat__pool_wake_all(struct cpat_pool *p)
{
	lock(&p->lock);
	struct worker *w;
	while ((w = p->idle) != NULL) {
		p->idle = w->idle_next;
		atomic_fetch_add(&p->wstate, 1 - POOL_PARKED_ONE);
		atomic_store(&w->word, WS_WOKEN);
		cpat__unpark_one(&w->word);
	}
	unlock(&p->lock);
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

/* ---- taking tasks ----------------------------------------------------- */

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

/* Takes a task another worker holds in its batch buffer: the scan, under
 * p->lock (which keeps the workers' structs in place). Also shutdown's,
 * to discard what workers hold (pool.c). */
bool cpat__pool_steal(struct cpat_pool *p, struct worker *self,
		      struct cpat_task *t)
{
	bool got = false;
	lock(&p->lock);
	for (struct worker *w = p->live; w && !got; w = w->next)
		if (w != self)
			got = buf_take(p, w, t);
	unlock(&p->lock);
	return got;
}

/* The workers' steal: the check that usually says "nothing to steal" is
 * inline, on every take that finds the queue empty. */
static inline bool steal(struct cpat_pool *p, struct worker *self,
			 struct cpat_task *t)
{
	return atomic_load(&p->nbuffered) != 0 && cpat__pool_steal(p, self, t);
}

static inline int recv_or_steal(struct cpat_pool *p, struct worker *self,
				struct cpat_task *t)
{
	int rc = cpat_chan_try_recv(p->q, t);
	/* Closed and drained: what other workers hold may still be run. */
	if ((rc == -EAGAIN || rc == -EPIPE) && steal(p, self, t))
		rc = 0;
	return rc;
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

/* ---- spinning and parking --------------------------------------------- */

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

void cpat__pool_unpark_locked(struct cpat_pool *p, struct worker *w)
{
	for (struct worker **pp = &p->idle; *pp; pp = &(*pp)->idle_next) {
		if (*pp == w) {
			*pp = w->idle_next;
			break;
		}
	}
	atomic_fetch_sub(&p->wstate, POOL_PARKED_ONE);
}

/*
 * Parks the worker until it is woken, the queue has a task, stop or close.
 * Returns as cpat_chan_try_recv() (0 with *t), or -ECANCELED for stop, or
 * -EAGAIN when woken (*spinning is then true). *retire: it retired (a
 * dynamic pool's idle timeout, above its minimum); alive was decremented.
 */
static int park(struct cpat_pool *p, struct worker *w, struct cpat_task *t,
		bool *spinning, bool *retire)
{
	int64_t deadline = p->kind == POOL_DYNAMIC ? cpat__pool_idle_deadline(p)
						   : CPAT_FOREVER;
	lock(&p->lock);
	atomic_store(&w->word, WS_PARKED);
	w->idle_next = p->idle;
	p->idle = w;
	atomic_fetch_add(&p->wstate, POOL_PARKED_ONE);
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
			    cpat_now_ns() >= deadline &&
			    cpat__pool_idle_expired(p, w, &deadline)) {
				*retire = true;
				return -EAGAIN;
			}
			continue;
		}
		lock(&p->lock);
		bool was_parked = atomic_load(&w->word) == WS_PARKED;
		if (was_parked)
			cpat__pool_unpark_locked(p, w);
		else
			*spinning = true; /* a waker counted us spinning */
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

/* ---- the worker ------------------------------------------------------- */

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct cpat_pool *p = w->pool;
	struct pool_frame fr = {p, cpat__pool_tl_frames};
	cpat__pool_tl_frames = &fr;
	bool spinning = true; /* the spawner counted us spinning */
	bool dyn = p->kind == POOL_DYNAMIC;
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
		/* A dynamic pool whose maximum was lowered: the bound is read
		 * here, so that the worker of a pool within it pays no call
		 * per task. */
		if (dyn && buf_empty(w) &&
		    atomic_load_explicit(&p->alive, memory_order_relaxed) >
			    atomic_load_explicit(&p->max_w,
						 memory_order_relaxed) &&
		    cpat__pool_retire_over_max(p, w)) {
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
	cpat__pool_tl_frames = fr.prev;
	return NULL;
}

/* ---- starting and joining threads ------------------------------------- */

int cpat__pool_spawn_locked(struct cpat_pool *p)
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

void cpat__pool_reap_locked(struct cpat_pool *p)
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
