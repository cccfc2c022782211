/**
 * @file cpattern/group.h
 * @brief Error groups: Go's errgroup for C. Run a set of tasks, wait for
 * all of them, get the first error; optionally cancel the rest on it.
 *
 * cpat_group_go() starts a task, on a pool given at creation or on the
 * group's own threads, with at most `limit` running at once (0: no limit).
 * Each task gets the group's token. cpat_group_wait() waits for every task
 * and returns the first non-zero value a task returned (0 if none).
 *
 * **Cancellation.** The group token is cancelled when the first task fails
 * (if cancel_on_error is set, the default) and always when
 * cpat_group_wait() returns, so tasks that watch it stop early and nothing
 * keeps running after the group is done. A task "fails" when it returns
 * anything but 0 (a positive value too).
 *
 * **Lifetime.** create, any number of go / try_go, wait, destroy. After
 * wait has returned, go and try_go return -EPIPE (and wait its result
 * again). cpat_group_destroy() of a group that was not waited for waits
 * first. cpat_group_wait_until() waits under a token and a deadline; if it
 * gives up, the tasks run on (see there).
 *
 * **fork().** A group made before fork() cannot be used in the child, not even
 * destroyed: its tasks run only in the parent (cpattern/common.h).
 *
 * **Thread safety.** go, try_go and the token may be used from any thread,
 * including from the group's own tasks; wait from any thread but a task of
 * the group (it returns -EBUSY there); destroy from one thread, last.
 *
 * @code
 * static int fetch(void *url, struct cpat_token *tok) { ... }
 *
 * struct cpat_group *g;
 * struct cpat_group_opts o;
 * cpat_group_opts_init(&o);
 * o.limit = 8;
 * if (cpat_group_create(&g, &o) != 0)
 *         return -1;
 * for (size_t i = 0; i < n; i++)
 *         if (cpat_group_go(g, fetch, urls[i]) != 0)
 *                 break;                    // the group was cancelled
 * int first_err = cpat_group_wait(g);
 * cpat_group_destroy(g);
 * @endcode
 */
#ifndef CPATTERN_GROUP_H
#define CPATTERN_GROUP_H

#include <stdbool.h>

#include "cpattern/common.h"
#include "cpattern/pool.h"
#include "cpattern/token.h"

#ifdef __cplusplus
extern "C" {
#endif

/** An error group (opaque). */
struct cpat_group;

/** Options; fill with cpat_group_opts_init() first. */
struct cpat_group_opts {
	struct cpat_pool *pool;    /**< run tasks here (borrowed: it must
					outlive the group); NULL: the group's
					own threads */
	size_t limit;              /**< most tasks running at once; 0 = none */
	bool cancel_on_error;      /**< cancel the token on the first error
					(default true) */
	struct cpat_token *parent; /**< parent of the group token, or NULL */
};

/**
 * Fills @p opts with the defaults: no pool (own threads), no limit,
 * cancel_on_error true, no parent.
 *
 * Never blocks. Thread-safe. NULL is a no-op.
 */
CPAT_API void cpat_group_opts_init(struct cpat_group_opts *opts);

/**
 * Creates a group. Its own threads, if it uses them, are started by the
 * first cpat_group_go(), not here.
 *
 * Never blocks. Thread-safe.
 * @param out  receives the group, owned by the caller (release with
 *             cpat_group_destroy()); NULL on failure.
 * @param opts options, read during the call only; NULL for the defaults.
 *             The group token holds a reference to the parent, so the
 *             caller may drop its own.
 * @return 0; -EINVAL for NULL @p out; -ENOMEM if allocation failed.
 */
CPAT_API int cpat_group_create(struct cpat_group **out,
			       const struct cpat_group_opts *opts);

/**
 * Starts @p fn(@p arg, group token) as a task of the group. What the task
 * returns is its result: 0 for success, anything else is an error that
 * cpat_group_wait() may report.
 *
 * Blocks while `limit` tasks are running and, on a pool, while the pool's
 * queue is full (policy BLOCK), until a slot frees or the group token
 * fires (give the group a parent token, cpat_group_opts.parent, to cancel
 * such a wait from outside); on a pool with policy CALLER_RUNS the task
 * may run in the calling thread before this returns. The group's own
 * threads are started at the first call. Thread-safe, including from the
 * group's own tasks.
 * @param group the group.
 * @param fn    the task function.
 * @param arg   passed to @p fn; the caller keeps ownership (it must stay
 *              valid until the task has run).
 * @return 0 if started (wait will count it); -ECANCELED / -ETIMEDOUT (the
 *         group token's cause) if it had fired, or fired before the task
 *         could start: the task never runs; -EPIPE after cpat_group_wait()
 *         has returned (a go racing with wait may get it too, or be
 *         waited for), or if the pool is shut down; -EAGAIN if the
 *         pool's policy is REJECT and its queue is full, or the group's
 *         first thread could not be started; -ENOMEM if allocation failed;
 *         -EINVAL for NULL @p group or @p fn. On any error @p fn never
 *         runs.
 */
CPAT_API int cpat_group_go(struct cpat_group *group, cpat_task_fn fn,
			   void *arg);

/**
 * Starts a task only if that needs no waiting: a slot is free and, on a
 * pool, its queue has room.
 *
 * Never blocks (but the first call of a group on its own threads starts
 * one). Thread-safe, including from the group's own tasks.
 * @param group the group.
 * @param fn    the task function.
 * @param arg   passed to @p fn, as for cpat_group_go().
 * @return 0 if started; -EAGAIN if it would wait (no free slot, or the
 *         pool's queue is full), or the group's first thread could not be
 *         started; otherwise as cpat_group_go(). On any error @p fn never
 *         runs.
 */
CPAT_API int cpat_group_try_go(struct cpat_group *group, cpat_task_fn fn,
			       void *arg);

/**
 * Waits for every task of the group (and for go calls in progress), then
 * cancels the group token. Tasks started by go calls that were already
 * under way are waited for; later go calls return -EPIPE. While tasks are
 * outstanding they may still start others with go (the wait covers them).
 *
 * Blocks until all tasks return (tasks should watch the token): there is
 * no way out but the tasks' return; cpat_group_wait_until() gives up on
 * a token or a deadline. From any thread but a task of the group; once it
 * has returned, later calls return the same result at once.
 * @param group the group; it still needs cpat_group_destroy().
 * @return the first non-zero value a task returned, 0 if none (a task a
 *         pool discarded at its shutdown counts as returning -ECANCELED);
 *         -EBUSY from a task of the group (nothing waited for); -EINVAL
 *         for NULL.
 */
CPAT_API int cpat_group_wait(struct cpat_group *group);

/**
 * cpat_group_wait() that gives up when @p tok fires or @p deadline_ns
 * passes.
 *
 * **Giving up does not stop the work.** The tasks keep running, the group
 * token is not cancelled, and the group stays as it was, except that it
 * may already refuse go (-EPIPE: a wait closes the group once its tasks
 * have all returned, then waits for the go calls that raced with it). To
 * stop the tasks, cancel the group token (cpat_group_token()), then wait
 * again: with a token of its own they return promptly if they watch it.
 * A wait that gave up can be called again, from any thread; once a wait
 * has completed, every later call returns its result at once.
 * cpat_group_destroy() waits for the tasks however long they take (it
 * does not cancel them).
 *
 * A result of -ECANCELED or -ETIMEDOUT may also be a task's error: to
 * tell them apart, cancel the group token and call cpat_group_wait()
 * again (at once if the group had finished, with its result).
 *
 * Blocks until all tasks return, @p tok fires or @p deadline_ns passes.
 * A token that has already fired fails the call at once (unless a wait
 * has completed: its result is returned). Thread-safe, but not from a
 * task of the group.
 * @param group       the group.
 * @param tok         cancellation token for this wait, or NULL.
 * @param deadline_ns absolute deadline of this wait, or #CPAT_FOREVER; a
 *                    past deadline makes it a poll.
 * @return as cpat_group_wait(); or -ECANCELED or -ETIMEDOUT (the cause of
 *         @p tok) if @p tok fired first, -ETIMEDOUT if @p deadline_ns
 *         passed first (the tasks run on); -EINVAL also for a negative
 *         deadline other than #CPAT_FOREVER.
 */
CPAT_API int cpat_group_wait_until(struct cpat_group *group,
				   struct cpat_token *tok, int64_t deadline_ns);

/**
 * The group's token, given to every task.
 *
 * Never blocks. Thread-safe.
 * @param group the group.
 * @return the token, borrowed: valid until cpat_group_destroy() (take a
 *         reference with cpat_token_ref() to keep it longer); NULL for
 *         NULL.
 */
CPAT_API struct cpat_token *cpat_group_token(struct cpat_group *group);

/**
 * Destroys the group; waits for its tasks first if wait was not called,
 * and joins the group's own threads.
 *
 * Blocks until its tasks have returned and its own threads have exited.
 * Not concurrently with any other call on the group; never from a task of
 * the group (it then does nothing: the group cannot end under itself).
 * @param group the group, or NULL (no-op); invalid after the call.
 */
CPAT_API void cpat_group_destroy(struct cpat_group *group);

#ifdef __cplusplus
}
#endif

#endif /* CPATTERN_GROUP_H */
