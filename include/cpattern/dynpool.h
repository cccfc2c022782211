/**
 * @file cpattern/dynpool.h
 * @brief Dynamic worker pools: workers between a minimum and a maximum,
 * grown at once under load and retired when idle, never below the minimum
 * however bursts and retirements interleave.
 *
 * A dynamic pool is a `struct cpat_pool` (see `cpattern/pool.h`): submit,
 * wait_idle, shutdown, stats, errors and destroy are the same functions,
 * with the same guarantees (a task's done, in particular, runs exactly once
 * for every accepted task and never for a refused one). What differs is
 * who runs the tasks:
 *
 * - It starts with min_workers threads.
 * - When a task is queued and no worker is idle, a worker is started at
 *   once (up to max_workers); no monitor polls.
 * - A worker idle for idle_timeout_ns exits while more than min_workers are
 *   alive. The count is checked and changed in one step, so the pool never
 *   drops below min_workers, however bursts and retirements interleave.
 * - cpat_dynpool_resize() changes the bounds at run time.
 * - If a thread cannot be started while growing, the pool keeps working at
 *   its current size (the stats show it); create reports -EAGAIN only if
 *   the first min_workers cannot be started.
 *
 * @code
 * struct cpat_dynpool_opts o;
 * cpat_dynpool_opts_init(&o);
 * o.min_workers = 2;
 * o.max_workers = 16;
 * o.idle_timeout_ns = 100 * CPAT_MSEC;
 * struct cpat_pool *pool;
 * if (cpat_dynpool_create(&pool, &o) != 0)
 *         return -1;
 * // ... cpat_pool_submit(pool, &task, NULL) as with a fixed pool ...
 * cpat_pool_destroy(pool);
 * @endcode
 */
#ifndef CPATTERN_DYNPOOL_H
#define CPATTERN_DYNPOOL_H

#include "cpattern/pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Options of a dynamic pool; fill with cpat_dynpool_opts_init() first. */
struct cpat_dynpool_opts {
	unsigned min_workers;         /**< >= 1 (default 1) */
	unsigned max_workers;         /**< >= min_workers (default 16) */
	int64_t idle_timeout_ns;      /**< idle time before a worker above the
					   minimum retires, > 0 (default 1 s) */
	size_t queue_capacity;        /**< >= 1 (default 1024, see pool.h) */
	enum cpat_pool_policy policy; /**< when the queue is full (default
					   #CPAT_POOL_BLOCK) */
	struct cpat_token *parent;    /**< parent of the pool token, or NULL */
	size_t max_errors;            /**< task errors kept (default 64) */
};

/**
 * Fills @p opts with the defaults: min_workers 1, max_workers 16,
 * idle_timeout_ns 1 s, queue_capacity 1024, policy #CPAT_POOL_BLOCK, no
 * parent token, max_errors 64.
 *
 * Never blocks. Thread-safe.
 * @param opts the options to fill, or NULL (no-op).
 */
CPAT_API void cpat_dynpool_opts_init(struct cpat_dynpool_opts *opts);

/**
 * Creates a dynamic pool and starts its min_workers workers.
 *
 * Blocks only while starting threads. Thread-safe.
 * @param out  receives the pool, owned by the caller (release with
 *             cpat_pool_destroy()); NULL on failure.
 * @param opts options, read during the call only; NULL for the defaults.
 *             The pool token is made a child of opts->parent.
 * @return 0; -EINVAL for NULL @p out, min_workers 0, max_workers below
 *         min_workers or above 2^30, idle_timeout_ns <= 0, queue_capacity
 *         0 or so large its size overflows, or a policy that is not one of
 *         enum cpat_pool_policy; -ENOMEM if allocation failed; -EAGAIN if
 *         one of the first min_workers threads could not be started. On
 *         failure every thread already started is joined and nothing leaks.
 */
CPAT_API int cpat_dynpool_create(struct cpat_pool **out,
				 const struct cpat_dynpool_opts *opts);

/**
 * Changes the bounds of a dynamic pool at run time. Starts workers up to
 * the new minimum at once, and one for each queued task no idle worker is
 * there to take (up to the new maximum); workers above a lower maximum
 * exit after their current task, parked ones at once; blocked submitters
 * are woken to re-check (they find room only as workers take tasks).
 *
 * Never blocks but for starting threads (short internal lock).
 * Thread-safe; concurrent calls apply in some order, the last one's bounds
 * stay.
 * @param pool        a pool made by cpat_dynpool_create().
 * @param min_workers the new minimum, >= 1.
 * @param max_workers the new maximum, >= @p min_workers and <= 2^30.
 * @return 0; -EINVAL for NULL @p pool, a fixed pool, @p min_workers 0 or
 *         @p max_workers out of range; -EPIPE if the pool is shut down or
 *         shutting down (nothing changes); -EAGAIN if a thread for the new
 *         minimum could not be started (the bounds are set; the pool keeps
 *         the workers it has and starts more as it next grows).
 */
CPAT_API int cpat_dynpool_resize(struct cpat_pool *pool, unsigned min_workers,
				 unsigned max_workers);

#ifdef __cplusplus
}
#endif

#endif /* CPATTERN_DYNPOOL_H */
