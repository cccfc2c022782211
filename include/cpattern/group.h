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
 * keeps running after the group is done.
 *
 * **Lifetime.** create, any number of go / try_go, one wait, destroy. After
 * wait has returned, go and try_go return -EPIPE. cpat_group_destroy() of a
 * group that was not waited for waits first.
 *
 * **Thread safety.** go, try_go and the token may be used from any thread,
 * including from the group's own tasks; wait and destroy from one thread,
 * not a task of the group (wait returns -EBUSY there).
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
	struct cpat_pool *pool;    /**< run tasks here; NULL: own threads */
	size_t limit;              /**< most tasks running at once; 0 = none */
	int cancel_on_error;       /**< cancel the token on the first error
	                                (default 1) */
	struct cpat_token *parent; /**< parent of the group token, or NULL */
};

/** Fills @p opts with the defaults. NULL is a no-op. Never blocks. */
CPAT_API void cpat_group_opts_init(struct cpat_group_opts *opts);

/**
 * Creates a group.
 *
 * Never blocks. Thread-safe.
 * @param out  receives the group (cpat_group_destroy()); NULL on failure.
 * @param opts options, read during the call; NULL for the defaults. The
 *             pool, if any, must outlive the group.
 * @return 0; -EINVAL for NULL @p out; -ENOMEM.
 */
CPAT_API int cpat_group_create(struct cpat_group **out,
                               const struct cpat_group_opts *opts);

/**
 * Starts @p fn(@p arg, group token) as a task of the group.
 *
 * Blocks while `limit` tasks are running (and, on a pool, while the pool's
 * queue is full), until a slot frees or the group token fires. Thread-safe.
 * @return 0 if started (wait will count it); -ECANCELED / -ETIMEDOUT (the
 *         group token's cause) if it fired before the task could start, the
 *         task never runs; -EPIPE after wait returned, or if the pool is
 *         shut down; -EAGAIN if a thread could not be started; -ENOMEM;
 *         -EINVAL for NULL @p group or @p fn.
 */
CPAT_API int cpat_group_go(struct cpat_group *group, cpat_task_fn fn,
                           void *arg);

/**
 * Starts a task only if that needs no waiting (a slot is free and, on a
 * pool, its queue has room).
 *
 * Never blocks. Thread-safe.
 * @return 0 if started; -EAGAIN if it would wait; otherwise as
 *         cpat_group_go().
 */
CPAT_API int cpat_group_try_go(struct cpat_group *group, cpat_task_fn fn,
                               void *arg);

/**
 * Waits for every task of the group, then cancels the group token.
 *
 * Blocks until all tasks return (tasks should watch the token). Call once.
 * @return the first non-zero value a task returned, 0 if none; -EBUSY from
 *         a task of the group; -EINVAL for NULL; -EPIPE if already waited.
 */
CPAT_API int cpat_group_wait(struct cpat_group *group);

/**
 * The group's token, given to every task. Borrowed: valid until
 * cpat_group_destroy(). Never blocks; thread-safe. NULL for NULL.
 */
CPAT_API struct cpat_token *cpat_group_token(struct cpat_group *group);

/**
 * Destroys the group; waits for its tasks first if wait was not called.
 * @param group the group, or NULL (no-op).
 */
CPAT_API void cpat_group_destroy(struct cpat_group *group);

#ifdef __cplusplus
}
#endif

#endif /* CPATTERN_GROUP_H */
