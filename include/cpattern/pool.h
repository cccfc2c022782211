/**
 * @file cpattern/pool.h
 * @brief Worker pools: a bounded task queue served by worker threads, that
 * never loses a task and accounts for every one.
 *
 * A task is a function `int fn(void *arg, struct cpat_token *tok)` and an
 * optional `done(arg, rc)` callback. The pool runs `fn` on one of its
 * workers with the pool's token (see cpat_pool_token()), then calls `done`
 * with what `fn` returned. A task reports failure by returning non-zero;
 * the pool counts those and keeps the first of them (see
 * cpat_pool_errors()), so that a caller can report every failure at
 * shutdown.
 *
 * **Acknowledgement.** A task's `done` can serve as its acknowledgement (to
 * a message broker, say): `done` runs exactly once for every task a submit
 * accepted, and never for a task a submit refused.
 * - Accepted (the submit returned 0, or the task is among the first
 *   `*submitted` of cpat_pool_submit_many()): `done` runs once, with what
 *   `fn` returned if it ran, or with -ECANCELED if it never ran (a
 *   #CPAT_POOL_DISCARD shutdown, or a shutdown whose deadline passed). A
 *   task that ran inline (#CPAT_POOL_CALLER_RUNS, or a task submitting to
 *   its own full pool) is accepted too, and its `done` has run when the
 *   submit returns.
 * - Refused (the submit returned an error: -EAGAIN, -EPIPE, -ECANCELED,
 *   -ETIMEDOUT or -EINVAL; for cpat_pool_submit_many(), the tasks after the
 *   first `*submitted`): `done` never runs and the task stays the caller's,
 *   to retry or to leave unacknowledged.
 * - `done` runs after `fn` returned, in the thread that ran the task or
 *   discarded it (a worker; the submitting thread for an inline run; the
 *   thread in cpat_pool_shutdown() or cpat_pool_destroy() for a task it
 *   discarded), and before the pool counts the task finished: when
 *   cpat_pool_wait_idle() or a complete cpat_pool_shutdown() returns 0,
 *   the `done` of every task they waited for has returned.
 * - A task body may itself return -ECANCELED (when it sees the token
 *   fire, say): where "never ran" must be told apart from that, record
 *   the run in `fn`.
 *
 * **Queue.** Tasks are stored by value in a bounded queue of
 * cpat_pool_opts.queue_capacity entries; nothing is allocated per task.
 * What submit does when the queue is full is the pool's policy:
 * #CPAT_POOL_BLOCK (wait, under the caller's token and deadline),
 * #CPAT_POOL_REJECT (fail with -EAGAIN at once) or
 * #CPAT_POOL_CALLER_RUNS (run the task in the submitting thread).
 *
 * **Fixed and dynamic.** This header makes pools with a fixed number of
 * workers; `cpattern/dynpool.h` makes pools whose workers come and go
 * between a minimum and a maximum. Both are a `struct cpat_pool`, and every
 * function here applies to both.
 *
 * **Shutdown.** cpat_pool_shutdown() stops intake (later submits get
 * -EPIPE), then either runs what is queued (#CPAT_POOL_DRAIN) or hands it
 * all to `done` with -ECANCELED (#CPAT_POOL_DISCARD), and joins every
 * worker. If its deadline passes (or, with cpat_pool_shutdown_until(), its
 * token fires) first, it cancels the pool token (running tasks can
 * notice), discards what is still queued, and reports the tasks still
 * running: the grace is over. A later shutdown call or cpat_pool_destroy()
 * joins the workers of the tasks still running. Accounting always holds:
 * submitted = ran + discarded + rejected + still_running, where submitted
 * counts every task offered to a submit call (a call that fails with
 * -EINVAL offers none).
 *
 * **From inside a task.** A task may submit to its own pool: when that
 * would block (queue full, policy BLOCK), the task is run inline in the
 * submitting worker instead, so a pool can never deadlock on itself.
 * cpat_pool_wait_idle() and cpat_pool_shutdown() called from a task of the
 * same pool return -EBUSY at once (waiting for itself could never end).
 *
 * **Thread safety.** Every function may be called from any thread, while
 * the pool exists. cpat_pool_destroy() must be the last call.
 *
 * **fork().** A pool made before fork() cannot be used in the child, not even
 * destroyed: its workers exist only in the parent. A child makes its own
 * pools (cpattern/common.h).
 *
 * **Thread names.** On Linux the workers are named "cpat-pool" (a dynamic
 * pool's "cpat-dynpool"), as top -H, ps -L, gdb and perf show them; a task
 * may rename its thread, and the name stays until the worker exits.
 *
 * @code
 * static int work(void *arg, struct cpat_token *tok) { ... return 0; }
 *
 * struct cpat_pool *pool;
 * struct cpat_pool_opts o;
 * cpat_pool_opts_init(&o);
 * o.workers = 4;
 * if (cpat_pool_create(&pool, &o) != 0)
 *         return -1;
 * for (int i = 0; i < 10; i++) {
 *         struct cpat_task t = { .fn = work, .arg = &jobs[i] };
 *         cpat_pool_submit(pool, &t, NULL);   // blocks while the queue is full
 * }
 * struct cpat_pool_report r;
 * cpat_pool_shutdown(pool, CPAT_POOL_DRAIN, CPAT_FOREVER, &r);
 * printf("ran %llu, failed %llu\n", r.ran, r.failed);
 * cpat_pool_destroy(pool);
 * @endcode
 */
#ifndef CPATTERN_POOL_H
#define CPATTERN_POOL_H

#include "cpattern/common.h"
#include "cpattern/token.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A worker pool, fixed or dynamic (opaque). */
struct cpat_pool;

/**
 * A task body.
 * @param arg the task's argument.
 * @param tok the pool's token: fires when the pool is shut down past its
 *            deadline (or its parent fires). Long tasks should watch it.
 * @return 0 for success, any other value is counted as an error.
 */
typedef int (*cpat_task_fn)(void *arg, struct cpat_token *tok);

/**
 * A task's completion callback: called exactly once for every accepted task
 * (never for a refused one), after its body returned or instead of it, in
 * the thread that ran or discarded the task (see "Acknowledgement" above).
 * It must not block for long: a worker, or a shutdown, waits for it.
 * @param arg the task's argument.
 * @param rc  what the task returned, or -ECANCELED if it never ran.
 */
typedef void (*cpat_task_done_fn)(void *arg, int rc);

/** A task, copied into the queue by value. */
struct cpat_task {
	cpat_task_fn fn;        /**< the body; required */
	cpat_task_done_fn done; /**< optional completion callback */
	void *arg;              /**< passed to both */
};

/** What submit does when the queue is full. */
enum cpat_pool_policy {
	CPAT_POOL_BLOCK = 0,      /**< wait for room (token, deadline) */
	CPAT_POOL_REJECT = 1,     /**< fail at once with -EAGAIN */
	CPAT_POOL_CALLER_RUNS = 2 /**< run the task in the submitting thread */
};

/** How cpat_pool_shutdown() treats queued tasks. */
enum cpat_pool_shutdown_mode {
	CPAT_POOL_DRAIN = 0,  /**< run every queued task */
	CPAT_POOL_DISCARD = 1 /**< run none; done(arg, -ECANCELED) each */
};

/** Options of a fixed pool; fill with cpat_pool_opts_init() first. */
struct cpat_pool_opts {
	unsigned workers;      /**< worker threads, >= 1 (default: 4) */
	size_t queue_capacity; /**< queued tasks, >= 1 (default 1024: 32 KiB.
				    A queue of a few tasks per worker makes
				    a fast submitter sleep and wake for every
				    few tasks; a large one lets it refill in
				    bulk: see bench/RESULTS.md) */
	enum cpat_pool_policy policy; /**< when the queue is full (default
					   #CPAT_POOL_BLOCK) */
	struct cpat_token *parent;    /**< parent of the pool token, or NULL */
	size_t max_errors;            /**< task errors kept (default 64) */
};

/** Counters of a pool: snapshots (see cpat_pool_stats()). */
struct cpat_pool_stats {
	unsigned long long submitted; /**< tasks offered to submit calls */
	unsigned long long rejected;  /**< of those, refused (-EAGAIN, -EPIPE,
					   token, deadline) */
	unsigned long long completed; /**< tasks that ran and returned */
	unsigned long long failed;    /**< of those, returned non-zero */
	unsigned long long discarded; /**< accepted, never ran */
	unsigned long long queued;    /**< waiting in the queue now */
	unsigned long long running;   /**< running now */
	unsigned workers;             /**< worker threads alive now */
	unsigned idle;                /**< of those, waiting for work */
	unsigned peak_workers;        /**< most workers alive at once */
	unsigned long long spawned;   /**< worker threads ever started */
	unsigned long long retired;   /**< worker threads that exited */
	double worker_seconds;        /**< summed lifetime of all workers */
};

/** What cpat_pool_shutdown() reports. */
struct cpat_pool_report {
	unsigned long long submitted;     /**< as in cpat_pool_stats */
	unsigned long long ran;           /**< tasks that ran to completion */
	unsigned long long failed;        /**< of those, returned non-zero */
	unsigned long long discarded;     /**< accepted, never ran */
	unsigned long long rejected;      /**< tasks submits refused */
	unsigned long long still_running; /**< running when it returned */
};

/**
 * Fills @p opts with the defaults: 4 workers, queue_capacity 1024, policy
 * #CPAT_POOL_BLOCK, no parent token, max_errors 64.
 *
 * Never blocks. Thread-safe.
 * @param opts the options to fill, or NULL (no-op).
 */
CPAT_API void cpat_pool_opts_init(struct cpat_pool_opts *opts);

/**
 * Creates a fixed pool and starts its workers.
 *
 * Blocks only while starting threads. Thread-safe.
 * @param out  receives the pool, owned by the caller (release with
 *             cpat_pool_destroy()); NULL on failure.
 * @param opts options, read during the call only; NULL for the defaults.
 *             The pool token is made a child of opts->parent (and, as
 *             every child token, holds a reference to it).
 * @return 0; -EINVAL for NULL @p out, 0 workers or more than 2^30,
 *         queue_capacity 0 or so large its size overflows, or a policy
 *         that is not one of enum cpat_pool_policy; -ENOMEM if allocation
 *         failed; -EAGAIN if a worker thread could not be started. On
 *         failure every thread already started is joined and nothing leaks.
 */
CPAT_API int cpat_pool_create(struct cpat_pool **out,
			      const struct cpat_pool_opts *opts);

/**
 * Submits a task, applying the pool's policy when the queue is full:
 * #CPAT_POOL_BLOCK waits for room, #CPAT_POOL_REJECT fails with -EAGAIN,
 * #CPAT_POOL_CALLER_RUNS runs the task in the calling thread.
 *
 * Blocks (policy BLOCK) while the queue is full, until there is room,
 * @p tok fires or the pool shuts down; runs the task inline (policy
 * CALLER_RUNS) when the queue is full. Called from a task of this pool
 * where it would block, runs the task inline instead. Thread-safe.
 * @param pool the pool.
 * @param task copied; the caller keeps @p task itself. task->fn must not be
 *             NULL. Accepted, the task belongs to the pool until its done
 *             runs; refused, it stays the caller's.
 * @param tok  cancellation token for the wait, or NULL. A token that has
 *             already fired refuses the task even when there is room.
 * @return 0 if accepted (it will run, or be discarded with done
 *         -ECANCELED; after an inline run it has already run, done
 *         included); -EAGAIN if the queue is full and the policy is
 *         REJECT; -EPIPE if the pool is shut down, or shuts down while the
 *         call waits; -ECANCELED or -ETIMEDOUT (the token's cause) if
 *         @p tok has fired or fires first; -EINVAL for NULL @p pool,
 *         @p task or task->fn. On any error the task was not accepted and
 *         its done is never called.
 */
CPAT_API int cpat_pool_submit(struct cpat_pool *pool,
			      const struct cpat_task *task,
			      struct cpat_token *tok);

/**
 * cpat_pool_submit() with a deadline for the wait.
 *
 * Blocks as cpat_pool_submit(), at most until @p deadline_ns; a past
 * deadline makes it non-blocking (it accepts the task if there is room at
 * once). Thread-safe.
 * @param pool        the pool.
 * @param task        as for cpat_pool_submit().
 * @param tok         cancellation token for the wait, or NULL.
 * @param deadline_ns absolute deadline (cpat_now_ns()), or #CPAT_FOREVER.
 * @return as cpat_pool_submit(); also -ETIMEDOUT when @p deadline_ns passes
 *         first, and -EINVAL for a negative deadline other than
 *         #CPAT_FOREVER. On any error the task was not accepted and its
 *         done is never called.
 */
CPAT_API int cpat_pool_submit_until(struct cpat_pool *pool,
				    const struct cpat_task *task,
				    struct cpat_token *tok,
				    int64_t deadline_ns);

/**
 * Submits a task only if there is room in the queue now, whatever the
 * policy (it never runs the task inline).
 *
 * Never blocks. Thread-safe.
 * @param pool the pool.
 * @param task as for cpat_pool_submit().
 * @return 0 if accepted; -EAGAIN if the queue is full; -EPIPE if the pool
 *         is shut down; -EINVAL for NULL @p pool, @p task or task->fn. On
 *         any error the task was not accepted and its done is never
 *         called.
 */
CPAT_API int cpat_pool_try_submit(struct cpat_pool *pool,
				  const struct cpat_task *task);

/**
 * Submits @p n tasks in order, as many per step as there is room for:
 * cheaper per task than single submits. When the queue is full it applies
 * the policy as cpat_pool_submit() does: BLOCK waits, REJECT takes what
 * fits and returns -EAGAIN, CALLER_RUNS runs the next task inline.
 *
 * Blocks as cpat_pool_submit_until(). Thread-safe. The tasks are accepted
 * in order: on an error, the first *@p submitted were accepted (their done
 * will run, or has run) and the rest were not (their done never runs).
 * @param pool        the pool.
 * @param tasks       @p n tasks, copied; each fn must not be NULL.
 * @param n           how many, 1..INT32_MAX.
 * @param submitted   if not NULL, receives how many were accepted, on success
 *                    and on error (0 for -EINVAL).
 * @param tok         cancellation token for the wait, or NULL.
 * @param deadline_ns absolute deadline, or #CPAT_FOREVER.
 * @return 0 when all @p n were accepted; otherwise why it stopped: -EAGAIN
 *         (queue full, policy REJECT), -EPIPE (shut down), -ECANCELED or
 *         -ETIMEDOUT (the token's cause, or the deadline); -EINVAL for NULL
 *         @p pool or @p tasks, a task with NULL fn, @p n out of range or a
 *         bad deadline (nothing is submitted).
 */
CPAT_API int cpat_pool_submit_many(struct cpat_pool *pool,
				   const struct cpat_task *tasks, size_t n,
				   size_t *submitted, struct cpat_token *tok,
				   int64_t deadline_ns);

/**
 * Waits until the pool is idle: nothing queued and nothing running, done
 * callbacks included. When it returns 0, every task accepted before the
 * call has finished and its done has returned. If other threads keep
 * submitting, the pool may never be idle: use a deadline or a token. The
 * pool stays usable.
 *
 * Blocks until idle, @p tok fires or @p deadline_ns passes. Thread-safe.
 * @param pool        the pool.
 * @param tok         cancellation token, or NULL. A token that has already
 *                    fired fails the call at once, even when the pool is
 *                    idle.
 * @param deadline_ns absolute deadline, or #CPAT_FOREVER.
 * @return 0 once idle; -ETIMEDOUT if @p deadline_ns passed first;
 *         -ECANCELED or -ETIMEDOUT (the token's cause) if @p tok fired
 *         first; -EBUSY if called from a task of this pool (it would wait
 *         for itself); -EINVAL for NULL @p pool or a negative deadline
 *         other than #CPAT_FOREVER.
 */
CPAT_API int cpat_pool_wait_idle(struct cpat_pool *pool, struct cpat_token *tok,
				 int64_t deadline_ns);

/**
 * Shuts the pool down: refuses new tasks (-EPIPE, also to submitters
 * blocked now), then drains or discards the queue, waits for the workers
 * and joins them.
 *
 * If @p deadline_ns passes first, cancels the pool token, discards what is
 * still queued (done with -ECANCELED), and returns -ETIMEDOUT with the
 * tasks still running when it returns counted in the report (0 if they all
 * stopped on the token at once: the return code still says the deadline
 * forced the shutdown); their workers are joined, and their done called,
 * by a later call of cpat_pool_shutdown() or by cpat_pool_destroy(). A
 * second call after a complete shutdown returns 0 with the same report.
 *
 * Blocks until every worker has exited or @p deadline_ns passes.
 * Thread-safe (concurrent calls: each waits, each reports).
 * @param pool        the pool.
 * @param mode        #CPAT_POOL_DRAIN or #CPAT_POOL_DISCARD. After a
 *                    DISCARD call (or a deadline), a later DRAIN call does
 *                    not undo it: what is queued is discarded.
 * @param deadline_ns absolute deadline, or #CPAT_FOREVER.
 * @param report      if not NULL, receives the accounting.
 * @return 0 when every worker has exited; -ETIMEDOUT as above; -EBUSY from
 *         a task of this pool (nothing done); -EINVAL for NULL @p pool, a
 *         mode that is not one of enum cpat_pool_shutdown_mode, or a
 *         negative deadline other than #CPAT_FOREVER.
 */
CPAT_API int cpat_pool_shutdown(struct cpat_pool *pool,
				enum cpat_pool_shutdown_mode mode,
				int64_t deadline_ns,
				struct cpat_pool_report *report);

/**
 * cpat_pool_shutdown() whose grace also ends when @p tok fires: a second
 * Ctrl-C (a signal token) turns a draining shutdown into a forced one.
 *
 * The token acts as the deadline does (the grace period is over): the
 * pool token is cancelled, what is still queued is discarded (done with
 * -ECANCELED), and the call returns the token's cause with the tasks still
 * running counted in the report; a later shutdown call or
 * cpat_pool_destroy() joins their workers and runs their done. Unlike the
 * waits of other objects, giving up here does stop the work that had not
 * started: that is what a shutdown's end of grace means. A token that has
 * already fired makes the call behave as with a past deadline: intake is
 * closed and the queue discarded at once, and the call returns 0 only if
 * every worker has already exited.
 *
 * Blocks until every worker has exited, @p tok fires or @p deadline_ns
 * passes. Thread-safe (concurrent calls: each waits, each reports).
 * @param pool        the pool.
 * @param mode        as for cpat_pool_shutdown().
 * @param tok         ends the grace when it fires, or NULL.
 * @param deadline_ns absolute deadline, or #CPAT_FOREVER.
 * @param report      if not NULL, receives the accounting.
 * @return as cpat_pool_shutdown(); also -ECANCELED or -ETIMEDOUT (the
 *         cause of @p tok) if @p tok fired before every worker had exited.
 */
CPAT_API int cpat_pool_shutdown_until(struct cpat_pool *pool,
				      enum cpat_pool_shutdown_mode mode,
				      struct cpat_token *tok,
				      int64_t deadline_ns,
				      struct cpat_pool_report *report);

/**
 * The pool's token, given to every task: fires when a shutdown deadline
 * passes or the parent token fires.
 *
 * Never blocks. Thread-safe.
 * @param pool the pool, or NULL.
 * @return the token, borrowed: valid until cpat_pool_destroy()
 *         (cpat_token_ref() it to keep it longer); NULL for NULL @p pool.
 */
CPAT_API struct cpat_token *cpat_pool_token(struct cpat_pool *pool);

/**
 * Reads the pool's counters (each a snapshot, not one atomic view).
 *
 * Never blocks (short internal locks). Thread-safe.
 * @param pool  the pool.
 * @param stats receives the counters.
 * @return 0; -EINVAL for NULL @p pool or @p stats.
 */
CPAT_API int cpat_pool_stats(struct cpat_pool *pool,
			     struct cpat_pool_stats *stats);

/**
 * Copies the kept task errors: the non-zero returns of failed tasks in the
 * order they finished, the first max_errors of them (the first error is
 * always errs[0]).
 *
 * Never blocks (short internal lock). Thread-safe.
 * @param pool the pool.
 * @param errs room for @p n values (may be NULL if @p n is 0).
 * @param n    how many values @p errs has room for.
 * @return how many errors are kept (may exceed @p n: only @p n were
 *         copied); -EINVAL for NULL @p pool, or NULL @p errs with n > 0.
 */
CPAT_API int cpat_pool_errors(struct cpat_pool *pool, int *errs, size_t n);

/**
 * Destroys the pool. If it was not shut down, first shuts it down with
 * #CPAT_POOL_DRAIN and no deadline; if a shutdown timed out, waits for the
 * tasks still running (their done is called). Then frees it and drops its
 * reference to the pool token.
 *
 * Blocks as just said. Must be the last call on the pool: no other thread
 * may use it during or after the call. From a task of the pool it does
 * nothing (that is a caller bug, detected: waiting for itself could never
 * end).
 * @param pool the pool, or NULL (no-op).
 */
CPAT_API void cpat_pool_destroy(struct cpat_pool *pool);

#ifdef __cplusplus
}
#endif

#endif /* CPATTERN_POOL_H */
