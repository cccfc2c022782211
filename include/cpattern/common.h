/**
 * @file cpattern/common.h
 * @brief Conventions every libcpattern module shares: errors, time, the
 * allocator hook and the export macro.
 *
 * **Errors.** Every fallible function returns `int`: 0 on success or a
 * negative errno value from this vocabulary, and never reports through
 * `errno`:
 *
 * | code          | meaning                                                  |
 * |---------------|----------------------------------------------------------|
 * | `-EINVAL`     | bad argument (NULL object, zero size, overflow)          |
 * | `-ENOMEM`     | allocation failed (nothing else changed)                 |
 * | `-EAGAIN`     | a `try_` call would block; or a thread could not be made |
 * | `-ETIMEDOUT`  | the deadline passed (the call's or the token's)          |
 * | `-ECANCELED`  | the token was cancelled                                  |
 * | `-EPIPE`      | closed channel / shut-down pool; close of a closed one   |
 * | `-EBUSY`      | refused while in use, or from inside its own worker      |
 *
 * Some functions also return a positive value with a meaning of its own (a
 * count, or "this call did it"); their documentation says so.
 * cpat_strerror() names any of them. The library never prints and never
 * calls `exit()`.
 *
 * **Time.** Deadlines are absolute `int64_t` nanoseconds on CLOCK_MONOTONIC,
 * as cpat_now_ns() reads it: `cpat_now_ns() + 50 * CPAT_MSEC`.
 * #CPAT_FOREVER means no deadline. A deadline already in the past still lets
 * an operation that is ready complete (the call then behaves like its `try_`
 * form, but reports `-ETIMEDOUT` rather than `-EAGAIN` when it cannot).
 *
 * **Memory.** All of the library's allocation goes through the hook set with
 * cpat_set_allocator(). No per-message or per-task path allocates in steady
 * state.
 *
 * **fork().** A child made by fork() may use the library afresh: it can
 * create tokens (deadline and signal tokens included: the library's timer
 * and signal threads start again in the child when first needed),
 * channels, pools, pipelines and the rest, as a pre-fork server does
 * (create nothing before fork, pools in each child after it). Objects
 * inherited from the parent must not be used in the child, not even
 * destroyed: the threads behind them exist only in the parent, and a lock
 * one of those threads held at the fork stays held in the child. A child
 * leaves them alone (they are the parent's memory, freed when the child
 * exits or execs). Signals a parent's signal token watched get back, in the
 * child, the disposition they had before the parent watched them.
 *
 * @code
 * int rc = cpat_chan_recv_until(ch, &v, NULL, cpat_now_ns() + 10 * CPAT_MSEC);
 * if (rc == -ETIMEDOUT)
 *         puts("nothing within 10 ms");
 * else if (rc < 0)
 *         fprintf(stderr, "recv: %s\n", cpat_strerror(rc));
 * @endcode
 */
#ifndef CPATTERN_COMMON_H
#define CPATTERN_COMMON_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32) && !defined(__GNUC__)
#define CPAT_API
#elif defined(__GNUC__) || defined(__clang__)
/** Marks every public declaration: exported from the shared library, which
 * is otherwise built with hidden visibility. */
#define CPAT_API __attribute__((visibility("default")))
#else
#define CPAT_API
#endif

/** No deadline: wait until the operation completes or its token fires. */
#define CPAT_FOREVER ((int64_t)-1)
/** One microsecond in the library's nanosecond time unit. */
#define CPAT_USEC ((int64_t)1000)
/** One millisecond in nanoseconds. */
#define CPAT_MSEC ((int64_t)1000000)
/** One second in nanoseconds. */
#define CPAT_SEC ((int64_t)1000000000)

#ifdef __cplusplus
extern "C" {
#endif

/** An allocation function with malloc()'s contract. */
typedef void *(*cpat_malloc_fn)(size_t size);
/** A release function with free()'s contract (NULL is a no-op). */
typedef void (*cpat_free_fn)(void *ptr);

/**
 * Replaces the allocator every libcpattern object is allocated with.
 *
 * Process-wide. Call it before the first libcpattern object is created, or
 * while none is alive: an object must be freed by the allocator that made
 * it. Passing NULL for both restores malloc() and free().
 *
 * Never blocks. Thread-safe in the sense that each pointer is published
 * atomically, and a block allocated through the new @p malloc_fn is always
 * released through the new @p free_fn; but a call racing this one may use
 * either allocator, and changing allocators while objects are alive is the
 * caller's error (see above).
 *
 * @param malloc_fn allocation function, or NULL together with @p free_fn.
 * @param free_fn   release function, or NULL together with @p malloc_fn.
 * @return 0 on success; -EINVAL if exactly one of the two is NULL.
 */
CPAT_API int cpat_set_allocator(cpat_malloc_fn malloc_fn, cpat_free_fn free_fn);

/**
 * A short English description of a libcpattern return code.
 *
 * Accepts 0, any negative errno of the vocabulary above (and any other
 * negative errno), and positive values. Never blocks; thread-safe.
 *
 * @param rc a return code.
 * @return a static string; never NULL, never to be freed.
 */
CPAT_API const char *cpat_strerror(int rc);

/**
 * The current time on CLOCK_MONOTONIC, in nanoseconds: the clock every
 * deadline of the library is measured on.
 *
 * Never blocks; thread-safe; no side effects.
 * @return nanoseconds since an unspecified start, always >= 0.
 */
CPAT_API int64_t cpat_now_ns(void);

#ifdef __cplusplus
}
#endif

#endif /* CPATTERN_COMMON_H */
