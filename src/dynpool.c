/*
 * DESIGN: dynamic pools (cpattern/dynpool.h). A dynamic pool is a struct
 * cpat_pool of kind POOL_DYNAMIC: it shares the fixed pool's queue,
 * accounting and shutdown (pool.c) and its workers (pool_worker.c), and
 * adds the policy of this file, reached through the cpat__pool_* hooks of
 * pool_impl.h:
 *
 * - Grow at once. When a task is queued and no worker is spinning or
 *   parked (notify_work() in pool_impl.h), a worker is started for it, up
 *   to max; no monitor thread polls the queue.
 * - Retire when idle. A parked worker sleeps at most idle_timeout; when
 *   its park times out it retires only if, under p->lock and still parked,
 *   alive > min.
 * - Resize. cpat_dynpool_resize() sets the bounds; a worker above a
 *   lowered max retires after its task under the same rule.
 *
 * p->alive is the committed number of workers; it is only changed under
 * p->lock, together with the decision: a spawn checks alive < max and
 * increments; a retirement checks alive > min (or > max) and decrements.
 * So the pool never drops below min however retirements and bursts
 * interleave. A failed thread creation undoes its increment; the pool
 * keeps going at its current size.
 */
#include "pool_impl.h"

/* ---- the policy, called by pool_impl.h and pool_worker.c --------------- */

void cpat__pool_grow(struct cpat_pool *p)
{
	lock(&p->lock);
	uint64_t s = atomic_load(&p->wstate);
	if (!p->closing && (uint32_t)s == 0 && (s >> 32) == 0 &&
	    atomic_load(&p->alive) < atomic_load(&p->max_w)) {
		cpat__pool_reap_locked(p);
		/* On failure: keep the current size. */
		(void)cpat__pool_spawn_locked(p);
	}
	unlock(&p->lock);
}

int64_t cpat__pool_idle_deadline(const struct cpat_pool *p)
{
	return cpat_now_ns() + p->idle_timeout;
}

bool cpat__pool_idle_expired(struct cpat_pool *p, struct worker *w,
			     int64_t *deadline)
{
	bool retired = false;
	lock(&p->lock);
	/* Not parked any more: a waker took it off the stack, and it will
	 * find itself woken. */
	if (atomic_load(&w->word) == WS_PARKED) {
		if (atomic_load(&p->alive) > atomic_load(&p->min_w)) {
			cpat__pool_unpark_locked(p, w);
			atomic_fetch_sub(&p->alive, 1);
			w->counted_out = true;
			atomic_store(&w->word, WS_RUN);
			retired = true;
		} else {
			*deadline = cpat_now_ns() + p->idle_timeout;
		}
	}
	unlock(&p->lock);
	return retired;
}

bool cpat__pool_retire_over_max(struct cpat_pool *p, struct worker *w)
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

/* ---- the API ---------------------------------------------------------- */

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
	return cpat__pool_create(out, POOL_DYNAMIC, opts->min_workers,
				 opts->max_workers, opts->queue_capacity,
				 opts->policy, opts->parent, opts->max_errors,
				 opts->idle_timeout_ns);
}

int cpat_dynpool_resize(struct cpat_pool *pool, unsigned min_workers,
			unsigned max_workers)
{
	if (!pool || pool->kind != POOL_DYNAMIC || min_workers == 0 ||
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
	cpat__pool_reap_locked(p);
	while (atomic_load(&p->alive) < min_workers) {
		if (cpat__pool_spawn_locked(p) != 0) {
			rc = -EAGAIN;
			break;
		}
	}
	/* Room to grow: start a worker for each queued task no idle worker
	 * is there to take, so blocked submitters find room. */
	if (rc == 0) {
		size_t queued = cpat_chan_len(p->q);
		uint64_t ws = atomic_load(&p->wstate);
		size_t idle = (size_t)(ws & POOL_LOW_MASK) + (size_t)(ws >> 32);
		while (queued > idle && atomic_load(&p->alive) < max_workers &&
		       cpat__pool_spawn_locked(p) == 0)
			idle++;
	}
	bool over = atomic_load(&p->alive) > max_workers;
	unlock(&p->lock);
	if (over)
		cpat__pool_wake_all(p); /* parked workers above max retire */
	room_bump(p);                   /* blocked submitters re-check */
	return rc;
}
