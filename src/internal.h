/*
 * What every source file of the library needs: the core macros, the
 * allocator, thread start and naming, deadline helpers and token watches.
 * First include of every .c file; never installed.
 *
 * Elsewhere: spinning, backoff, the futex lock and parking in spin.h; test
 * hooks and planted bugs in testhooks.h; what the other modules may rely
 * on about channels in chan_internal.h.
 */
#ifndef CPAT_INTERNAL_H
#define CPAT_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpattern/common.h"
#include "cpattern/token.h"

/* ---- core macros ---- */

/* Internal non-static symbols: hidden from the shared library's exports. */
#define CPAT_HIDDEN __attribute__((visibility("hidden")))

#define CPAT_CACHELINE 64
#define CPAT_LIKELY(x) __builtin_expect(!!(x), 1)
#define CPAT_UNLIKELY(x) __builtin_expect(!!(x), 0)

/*
 * Aborts on a failure that cannot happen in a correct program (a failed
 * pthread_mutex_lock, say). It reports to stderr because there is nobody to
 * return an error to: this is a bug, not an error path.
 */
#define CPAT_CHECK(expr)                                        \
	do {                                                    \
		if (CPAT_UNLIKELY(!(expr)))                     \
			cpat__panic(__FILE__, __LINE__, #expr); \
	} while (0)

CPAT_HIDDEN _Noreturn void cpat__panic(const char *file, int line,
				       const char *what);

/* ---- the allocator ---- */

/*
 * Allocation through the hook of cpat_set_allocator() (malloc() and free()
 * without one). cpat__malloc(0) allocates 1 byte; cpat__calloc() zeroes
 * and returns NULL when n * size overflows; cpat__free(NULL) is a no-op.
 */
CPAT_HIDDEN void *cpat__malloc(size_t size);
CPAT_HIDDEN void *cpat__calloc(size_t n, size_t size);
CPAT_HIDDEN void cpat__free(void *ptr);
/*
 * A block aligned to align: a power of two from sizeof(size_t) to 4096
 * (CPAT_CACHELINE, typically); NULL for another align, on overflow, or
 * when allocation fails. Free it with cpat__free_aligned() only.
 */
CPAT_HIDDEN void *cpat__malloc_aligned(size_t size, size_t align);
CPAT_HIDDEN void cpat__free_aligned(void *ptr);

/* ---- threads ---- */

/*
 * Every thread the library starts goes through here, so that tests can make
 * the k-th creation fail. Returns 0, or -EAGAIN if the thread could not be
 * created. detached: start it detached (never joined).
 */
CPAT_HIDDEN int cpat__thread_start(pthread_t *th, void *(*fn)(void *),
				   void *arg, bool detached);
/*
 * Names the calling thread (Linux: what top -H, ps -L, gdb and perf show;
 * cut to 15 bytes). Every thread the library starts calls it first, with
 * "cpat-" and its role, or a pipeline stage's own name. A no-op where the
 * system has no thread names.
 */
CPAT_HIDDEN void cpat__thread_name(const char *name);
/*
 * Condition variables on the library's clock (park.c): cpat__cond_init()
 * makes one whose timed waits take absolute CLOCK_MONOTONIC deadlines
 * (returns 0 or a pthread error number); cpat__cond_wait_until() waits on
 * it until a wake-up, a spurious return, or deadline_ns (CPAT_FOREVER: no
 * deadline). The caller re-checks its condition and its deadline.
 */
CPAT_HIDDEN int cpat__cond_init(pthread_cond_t *cv);
CPAT_HIDDEN void cpat__cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu,
				       int64_t deadline_ns);

/* ---- deadlines ---- */

/* Checks a deadline argument: CPAT_FOREVER or >= 0. */
static inline bool cpat__deadline_ok(int64_t d)
{
	return d == CPAT_FOREVER || d >= 0;
}

/* The earlier of two deadlines, CPAT_FOREVER being the latest. */
static inline int64_t cpat__deadline_min(int64_t a, int64_t b)
{
	if (a == CPAT_FOREVER)
		return b;
	if (b == CPAT_FOREVER)
		return a;
	return a < b ? a : b;
}

/* ---- token watches ---- */

/*
 * Token watches: how the library's blocking calls learn that a token fired,
 * without allocating. A watch lives in the blocked caller's stack frame.
 *
 * cpat__token_watch() registers w on tok and returns 0, or returns the
 * token's cause (< 0) if it has already fired, in which case w is not
 * registered and fn never runs. When the token fires, w->fn(w, cause) runs
 * once in the firing thread with no library lock held; it must be short and
 * must not block (set a flag and unpark, typically).
 *
 * cpat__token_unwatch() undoes the registration; after it returns fn is not
 * running and never will run (it waits for a running fn to finish). It
 * returns 1 if w was removed before fn ran, 0 if fn ran. Both require a
 * reference to tok held by the caller (the blocking call's own, taken with
 * cpat_token_ref() for the duration of the wait).
 */
struct cpat__watch {
	void (*fn)(struct cpat__watch *w, int cause);
	void *arg;
	/* Owned by token.c. */
	struct cpat__watch *next, *prev;
	_Atomic int state;
};

CPAT_HIDDEN int cpat__token_watch(struct cpat_token *tok,
				  struct cpat__watch *w);
CPAT_HIDDEN int cpat__token_unwatch(struct cpat_token *tok,
				    struct cpat__watch *w);

/* ---- events ---- */

/*
 * An event: a 32-bit sequence that a signaller bumps (and wakes) whenever
 * the condition its waiters check may have become true, with a count of
 * waiters so that a signal costs one load and no system call while nobody
 * waits. The condition itself lives with the caller (a counter reaching 0,
 * say); the signaller changes it with a seq_cst read-modify-write before
 * cpat__event_signal(), and a waiter counts itself, then checks it after
 * loading the sequence, so a signal between the check and the sleep is
 * never lost (all seq_cst: either the signaller sees the waiter and moves
 * the sequence, or the waiter sees the condition).
 */
struct cpat__event {
	_Atomic uint32_t seq;
	_Atomic uint32_t waiters;
};

CPAT_HIDDEN void cpat__event_signal(struct cpat__event *e);

/*
 * Waits until ready(arg) returns true (0), tok fires (its cause, < 0: the
 * token is watched for the wait, with no allocation) or deadline_ns passes
 * (-ETIMEDOUT; CPAT_FOREVER for none). tok may be NULL. ready runs in the
 * caller's thread, any number of times.
 */
CPAT_HIDDEN int cpat__event_wait(struct cpat__event *e,
				 bool (*ready)(void *arg), void *arg,
				 struct cpat_token *tok, int64_t deadline_ns);

#endif /* CPAT_INTERNAL_H */
