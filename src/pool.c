/*
 * DESIGN: worker pools, fixed and dynamic: the API (create, submit,
 * wait_idle, shutdown, stats, errors, destroy), the accounting and the
 * shutdown protocol. One struct cpat_pool serves both kinds (pool_impl.h);
 * the workers are in pool_worker.c, the dynamic pool's policy in dynpool.c.
 *
 * Queue. The task queue is a cpat_chan of struct cpat_task with capacity
 * queue_capacity: tasks are stored by value in its slots, and its enqueue
 * and dequeue (try_send, send_many, try_recv) are lock-free. Nobody blocks
 * inside the channel: the channel's own blocking would wake a parked
 * receiver on every send and a blocked sender on every receive, one system
 * call per task. Workers park on the protocol of pool_worker.c; a
 * submitter waiting for room sleeps on p->roomseq and is woken when the
 * queue is down to its low-water mark (half the capacity), so it refills
 * half the queue per wake-up (see room_wait()). Closing the channel is the
 * pool's "intake closed" point: a send either completed before the close
 * (the task is in the queue and will be drained or discarded) or fails
 * with -EPIPE. (Decision: building on cpat_chan costs nothing measurable
 * over a private ring, since its buffered path is the same Vyukov ring one
 * would write.)
 *
 * Acknowledgement. A task's done runs exactly once for every accepted task
 * and never for a refused one: a submit that returns an error has offered
 * nothing (send_many accepted a prefix: that prefix is accepted, the rest
 * refused, and *submitted says where the line is). An accepted task leaves
 * the queue exactly once (the channel's guarantee), or a worker's batch
 * buffer exactly once (a CAS on its index, buf_take() in pool_worker.c),
 * into exactly one of: a run (done with its result), a discard (done with
 * -ECANCELED: stop was set, by DISCARD or a shutdown deadline) or, for
 * caller-runs and a task submitting to its own full pool, an inline run.
 *
 * Accounting. p->pending packs (high 32 bits) the submit calls inside
 * their "entering" section, from just before their open check until their
 * accepted/rejected counters are updated, and (low 32 bits) the tasks
 * offered and not yet finished: counted when offered, dropped when refused,
 * when done() returned after a run, or after a discard. The pool is idle
 * exactly when pending == 0 (a worker batches its decrements while it
 * finds more work, and flushes them as soon as it sees the queue empty, so
 * the decrement that reaches 0 comes right after the last task), and
 * whoever brings it to 0 wakes the wait_idle() waiters (event word
 * p->ev: cpat__event_wait(), waiters counted, so no system call while
 * nobody waits). Shutdown sets p->closed and closes the channel, then
 * waits until no submit is entering (Dekker: a submitter adds to pending,
 * then reads closed; shutdown stores closed, then reads pending), so every
 * accepted task is counted in p->accepted before the report is taken. The
 * identity kept is
 *
 *     accepted = ran + discarded + queued + running
 *     submitted = accepted + rejected       (submitted is derived)
 *
 * (queued: in the channel or in a worker's batch buffer; running includes
 * done() callbacks), so the report has submitted = ran + discarded +
 * rejected + still_running, with still_running = accepted - ran -
 * discarded once the queue is empty (0 after a complete shutdown).
 * Counters of tasks run by workers are kept per worker (no shared line
 * written per task) and summed under p->lock; a worker that exits folds
 * them into p->ran_gone. Tasks run inline (caller runs, or a task
 * submitting to its own full pool) are counted in p->inline_*; such a run
 * leaves the entering section while it runs.
 *
 * Shutdown. Sets stop for DISCARD (workers take no more tasks; a task a
 * worker dequeues after stop is discarded), closes intake, wakes every
 * parked worker, discards the queue if stop, then waits (deadline) until
 * no submit is entering, no inline run is in progress and every worker has
 * exited and been joined. Workers exit on stop (discarding their batch
 * buffers; shutdown also steals and discards the buffer of a worker stuck
 * in a task), or when the closed channel is drained and their buffer is
 * empty. At the deadline, or when the caller's token fires: cancel the
 * pool token, set stop, discard the queue, report still_running, return
 * -ETIMEDOUT (or the token's cause); a later call continues.
 *
 * Self-deadlock. A thread-local list of frames records the pools whose task
 * (or worker loop) the thread is in: submit that would block runs inline
 * there; wait_idle and shutdown return -EBUSY; destroy does nothing.
 *
 * Locks. p->lock guards the worker lists (live, idle stack, zombies, free
 * list), alive changes, bounds decisions, spawned/retired/peak, the folded
 * counters and the shutdown state; it is held while a thief scans the
 * workers' batch buffers (so none is freed under it), never while a task
 * runs. p->elock guards the kept errors. The lock order is p->lock, then
 * the channel's internal lock (via try_recv or close); p->elock is a leaf.
 * Threads are created and joined under p->lock.
 */
#include "pool_impl.h"
#include "testhooks.h"

#include <unistd.h>

#define ROOM_SPIN_NS (2 * CPAT_USEC)
#define ROOM_NAP_FIRST (100 * CPAT_USEC)
#define ROOM_NAP_MAX CPAT_MSEC

_Thread_local struct pool_frame *cpat__pool_tl_frames;

/* ---- running tasks inline --------------------------------------------- */

/* Runs a task in the submitting thread; accepted and inline_running were
 * already counted by the caller. */
static void run_inline(struct cpat_pool *p, const struct cpat_task *t)
{
	struct pool_frame fr = {p, cpat__pool_tl_frames};
	cpat__pool_tl_frames = &fr;
	int rc = t->fn(t->arg, p->tok);
	if (rc != 0) {
		atomic_fetch_add(&p->inline_failed, 1);
		record_error(p, rc);
	}
	if (t->done)
		t->done(t->arg, rc);
	cpat__pool_tl_frames = fr.prev;
	atomic_fetch_add(&p->inline_ran, 1);
	atomic_fetch_sub(&p->inline_running, 1);
	pending_sub(p, 1);
	ev_bump(p);
}

/* ---- creation --------------------------------------------------------- */

struct ev_wait;
static int wait_complete(struct cpat_pool *p, struct ev_wait *ew,
			 int64_t deadline);
static void free_pool(struct cpat_pool *p);

int cpat__pool_create(struct cpat_pool **out, enum pool_kind kind,
		      unsigned nmin, unsigned nmax, size_t qcap,
		      enum cpat_pool_policy policy, struct cpat_token *parent,
		      size_t max_errors, int64_t idle_timeout)
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
	 * Up to one spinner per CPU. Go allows half the busy CPUs; on 2 CPUs
	 * with one submitter, a single spinner makes every task that arrives
	 * while it runs one trigger a wake-up and a park (the woken worker
	 * takes the spinner's place), several times slower (measured).
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
	atomic_init(&p->ev.seq, 0);
	atomic_init(&p->ev.waiters, 0);
	atomic_init(&p->roomseq, 0);
	atomic_init(&p->roomwaiters, 0);
	atomic_init(&p->room_armed, 0);
	atomic_init(&p->room_nap, ROOM_NAP_FIRST);
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
		rc = cpat__pool_spawn_locked(p);
	unlock(&p->lock);
	if (rc != 0) {
		/* Stop and join what was started. */
		lock(&p->lock);
		p->closing = true;
		unlock(&p->lock);
		atomic_store(&p->stop, 1);
		atomic_store(&p->closed, 1);
		cpat_chan_close(p->q);
		cpat__pool_wake_all(p);
		(void)wait_complete(p, NULL, CPAT_FOREVER);
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
	return cpat__pool_create(out, POOL_FIXED, opts->workers, opts->workers,
				 opts->queue_capacity, opts->policy,
				 opts->parent, opts->max_errors, CPAT_FOREVER);
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
	int64_t backoff = atomic_load_explicit(&p->room_nap,
					       memory_order_relaxed),
		spin_end = 0;
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
		 * room: re-check after a bounded nap, cheap next to tasks
		 * that long: 100 us at first, doubling up to 1 ms each time
		 * a nap runs out before the wake-up, and the pool keeps the
		 * length for its next waits.
		 */
		int64_t nap = cpat_now_ns() + backoff;
		cpat__park(&p->roomseq, seq, cpat__deadline_min(deadline, nap));
		if (backoff < ROOM_NAP_MAX && atomic_load(&p->roomseq) == seq &&
		    cpat_now_ns() >= nap) {
			/* The nap ran out before the low-water wake-up: the
			 * tasks are long. Nap longer, in this wait and the
			 * next ones (a submitter that naps 100 us per call
			 * beside busy workers woke ~10,000 times a second,
			 * each time taking a CPU from a worker). */
			backoff *= 2;
			if (backoff > ROOM_NAP_MAX)
				backoff = ROOM_NAP_MAX;
			if (atomic_load_explicit(&p->room_nap,
						 memory_order_relaxed) <
			    backoff)
				atomic_store_explicit(&p->room_nap, backoff,
						      memory_order_relaxed);
		}
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
	atomic_fetch_add(&p->pending, POOL_ENTER_ONE + n);
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
			/* Not entering while it runs. */
			pending_sub(p, POOL_ENTER_ONE);
			run_inline(p, &tasks[done]);
			done++;
			atomic_fetch_add(&p->pending, POOL_ENTER_ONE);
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
	pending_sub(p, POOL_ENTER_ONE + refused);
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
	atomic_fetch_add(&ew->p->ev.seq, 1);
	cpat__unpark_all(&ew->p->ev.seq);
}

static bool idle_ready(void *arg)
{
	return atomic_load(&((struct cpat_pool *)arg)->pending) == 0;
}

int cpat_pool_wait_idle(struct cpat_pool *pool, struct cpat_token *tok,
			int64_t deadline_ns)
{
	if (!pool || !cpat__deadline_ok(deadline_ns))
		return -EINVAL;
	if (inside(pool))
		return -EBUSY;
	return cpat__event_wait(&pool->ev, idle_ready, pool, tok, deadline_ns);
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
	while (atomic_load(&p->nbuffered) != 0 && cpat__pool_steal(p, NULL, &t))
		discard_task(p, &t);
}

/* Waits until no submit is entering, no inline run is in progress and
 * every worker has exited and been joined. 0, -ETIMEDOUT, or the cause of
 * the token ew watches (ew->cause). */
static int wait_complete(struct cpat_pool *p, struct ev_wait *ew,
			 int64_t deadline)
{
	int rc;
	atomic_fetch_add(&p->ev.waiters, 1);
	for (;;) {
		uint32_t seq = atomic_load(&p->ev.seq);
		lock(&p->lock);
		bool had = p->zombies != NULL;
		cpat__pool_reap_locked(p);
		bool joined = p->unjoined == 0;
		unlock(&p->lock);
		if (had)
			ev_bump(p); /* other shutdown callers re-check */
		if (joined && (atomic_load(&p->pending) >> 32) == 0 &&
		    atomic_load(&p->inline_running) == 0) {
			rc = 0;
			break;
		}
		if (ew && (rc = atomic_load(&ew->cause)) != 0)
			break;
		if (deadline != CPAT_FOREVER && cpat_now_ns() >= deadline) {
			rc = -ETIMEDOUT;
			break;
		}
		cpat__park(&p->ev.seq, seq, deadline);
	}
	atomic_fetch_sub(&p->ev.waiters, 1);
	return rc;
}

/* Waits (no deadline: submits leave their entering section promptly once
 * the channel is closed) until no submit is entering. */
static void wait_no_entering(struct cpat_pool *p)
{
	atomic_fetch_add(&p->ev.waiters, 1);
	for (;;) {
		uint32_t seq = atomic_load(&p->ev.seq);
		if ((atomic_load(&p->pending) >> 32) == 0)
			break;
		cpat__park(&p->ev.seq, seq, CPAT_FOREVER);
	}
	atomic_fetch_sub(&p->ev.waiters, 1);
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

int cpat_pool_shutdown_until(struct cpat_pool *pool,
			     enum cpat_pool_shutdown_mode mode,
			     struct cpat_token *tok, int64_t deadline_ns,
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
	/* The token, like the deadline, ends the grace: it is watched for
	 * the wait below; one that has already fired makes the call behave
	 * as with a past deadline (it still closes and forces). */
	struct ev_wait ew = {.p = p};
	atomic_init(&ew.cause, 0);
	ew.w.fn = ev_watch_fired;
	ew.w.arg = &ew;
	bool watching = false;
	if (tok) {
		cpat_token_ref(tok);
		int c = cpat__token_watch(tok, &ew.w);
		if (c != 0)
			atomic_store(&ew.cause, c);
		else
			watching = true;
	}
	if (mode == CPAT_POOL_DISCARD)
		atomic_store(&p->stop, 1);
	if (first) {
		atomic_store(&p->closed, 1);
		(void)cpat_chan_close(p->q);
		room_bump(p);
	}
	cpat__pool_wake_all(p);
	if (atomic_load(&p->stop))
		discard_queue(p);
	int rc = wait_complete(p, &ew, deadline_ns);
	if (watching)
		cpat__token_unwatch(tok, &ew.w);
	if (tok)
		cpat_token_unref(tok);
	if (rc != 0) {
		cpat_token_cancel(p->tok);
		atomic_store(&p->stop, 1);
		cpat__pool_wake_all(p);
		wait_no_entering(p);
		discard_queue(p);
		struct cpat_pool_report r;
		fill_report(p, &r);
		if (report)
			*report = r;
		return rc;
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

int cpat_pool_shutdown(struct cpat_pool *pool,
		       enum cpat_pool_shutdown_mode mode, int64_t deadline_ns,
		       struct cpat_pool_report *report)
{
	return cpat_pool_shutdown_until(pool, mode, NULL, deadline_ns, report);
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
	s->idle = (unsigned)(ws & POOL_LOW_MASK) + (unsigned)(ws >> 32);
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
	return p ? atomic_load(&p->ev.waiters) : 0;
}
