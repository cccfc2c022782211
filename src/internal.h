/*
 * Internal declarations shared by the library's source files. First include
 * of every .c file; never installed.
 */
#ifndef CPAT_INTERNAL_H
#define CPAT_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpattern/common.h"
#include "cpattern/token.h"

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
#define CPAT_CHECK(expr)                                                       \
	do {                                                                   \
		if (CPAT_UNLIKELY(!(expr)))                                    \
			cpat__panic(__FILE__, __LINE__, #expr);                \
	} while (0)

CPAT_HIDDEN _Noreturn void cpat__panic(const char *file, int line,
                                       const char *what);

/* Allocation through the hook of cpat_set_allocator(). */
CPAT_HIDDEN void *cpat__malloc(size_t size);
CPAT_HIDDEN void *cpat__calloc(size_t n, size_t size); /* overflow -> NULL */
CPAT_HIDDEN void cpat__free(void *ptr);
/* Cache-line aligned (alignment a power of two <= 4096); free with
 * cpat__free_aligned. */
CPAT_HIDDEN void *cpat__malloc_aligned(size_t size, size_t align);
CPAT_HIDDEN void cpat__free_aligned(void *ptr);

/*
 * Every thread the library starts goes through here, so that tests can make
 * the k-th creation fail. Returns 0, or -EAGAIN if the thread could not be
 * created. detached: start it detached (never joined).
 */
#include <pthread.h>
CPAT_HIDDEN int cpat__thread_start(pthread_t *th, void *(*fn)(void *),
                                   void *arg, bool detached);
/*
 * Names the calling thread (Linux: what top -H, ps -L, gdb and perf show;
 * cut to 15 bytes). Every thread the library starts calls it first, with
 * "cpat-" and its role, or a pipeline stage's own name. A no-op where the
 * system has no thread names.
 */
CPAT_HIDDEN void cpat__thread_name(const char *name);
/* Test hook: fail the k-th thread creation from now (k >= 1; persistent:
 * and every one after it); k = 0 turns injection off. */
CPAT_HIDDEN void cpat__test_fail_thread_at(long k, bool persistent);
/* Test hook: how many thread creations were attempted so far. */
CPAT_HIDDEN long cpat__test_thread_starts(void);

/*
 * Planted bugs. A build configured with -Dplant_bug=NAME defines
 * CPAT_PLANT_BUG to one of these, and the code at that spot misbehaves on
 * purpose; scripts/planted.sh checks that the test suite fails on each. A
 * normal build has CPAT_PLANT_BUG 0 and every CPAT_PLANTED() is a constant
 * false the compiler removes.
 */
#ifndef CPAT_PLANT_BUG
#define CPAT_PLANT_BUG 0
#endif
enum {
	CPAT_BUG_CHAN_CLOSE_SIGNAL = 1,  /* close wakes one receiver, not all */
	CPAT_BUG_CHAN_CANCEL_WAKEUP = 2, /* a fired token does not wake a
	                                    blocked operation */
	CPAT_BUG_CHAN_RING_OFF_BY_ONE = 3, /* ring wraps one slot early */
	CPAT_BUG_TOKEN_CHILD_UNREGISTER = 4, /* released child stays linked */
	CPAT_BUG_POOL_DISCARD_LOST = 5, /* DISCARD loses a queued task */
	CPAT_BUG_POOL_PARK_NO_PASS = 6, /* a worker whose park re-check
	                                   finds a task wakes nobody for
	                                   the rest (a lost wake-up) */
};
#define CPAT_PLANTED(bug) (CPAT_PLANT_BUG == (bug))

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

/*
 * Parking: a 32-bit word a thread sleeps on. On Linux a futex; elsewhere a
 * striped table of mutex+condvar pairs. cpat__park() returns when *word !=
 * expect (checked atomically with going to sleep), on a wake-up, spuriously,
 * or when deadline_ns (CLOCK_MONOTONIC, CPAT_FOREVER for none) passes; the
 * caller re-checks its condition. cpat__unpark_*() wake sleepers of word.
 */
CPAT_HIDDEN void cpat__park(_Atomic uint32_t *word, uint32_t expect,
                            int64_t deadline_ns);
CPAT_HIDDEN void cpat__unpark_one(_Atomic uint32_t *word);
CPAT_HIDDEN void cpat__unpark_all(_Atomic uint32_t *word);

/*
 * Whether spinning before parking can pay off for the calling thread:
 * false when the thread may run on one CPU only (taskset -c N, a cpuset of
 * one CPU, a 1-CPU machine). There the partner a spinner waits for cannot
 * run while it spins, and a sched_yield() beside a busy thread on that CPU
 * can cost a whole time slice (milliseconds), so such a thread parks at
 * once. The answer is read once per thread (sched_getaffinity) and cached:
 * a thread that changes its own affinity later keeps its first answer.
 */
CPAT_HIDDEN bool cpat__spin_pays(void);

/*
 * Makes the calling thread's channel waits adapt how long they spin before
 * parking to how often spinning paid off (src/chan.c). For the library's
 * own pipeline threads, called at their start; never undone.
 */
CPAT_HIDDEN void cpat__chan_adaptive_spin(void);

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

/* Test hooks (linked only by the static library's tests). */
CPAT_HIDDEN size_t cpat__token_nchildren(struct cpat_token *tok);
CPAT_HIDDEN size_t cpat__token_nwatches(struct cpat_token *tok);
CPAT_HIDDEN int cpat__token_refcount(struct cpat_token *tok);

/* chan.c test hooks */
struct cpat_chan;
/*
 * How many threads are blocked in a send (op = CPAT_SELECT_SEND) or a
 * receive (CPAT_SELECT_RECV) on ch, select cases included: a thread counts
 * from the moment its waiter record is in the channel's queue (just before
 * it may park; a partner can then find it) until the record leaves it (a
 * partner took it, close or a notification woke it, or it gave up). Each
 * thread counts once per direction. 0 for NULL or a bad op.
 */
CPAT_HIDDEN size_t cpat__chan_nblocked(const struct cpat_chan *ch, int op);

/* pipeline.c / fan.c test hooks */
/* Threads started by pipelines (resp. fans) that have not yet exited: a
 * test checks that the count returns to its baseline after wait/destroy. */
CPAT_HIDDEN long cpat__pipeline_live_threads(void);
CPAT_HIDDEN long cpat__fan_live_threads(void);

/* pool.c test hooks */
struct cpat_pool;
/*
 * Submitters waiting for room in a full queue (policy BLOCK, or
 * submit_many): a thread counts from the moment it found the queue full and
 * registered as a waiter (a worker that frees room will wake it) until it
 * leaves the wait, whatever the reason.
 */
CPAT_HIDDEN unsigned cpat__pool_blocked_submitters(struct cpat_pool *p);
/* Workers parked (registered on the idle stack, sleeping or about to); the
 * rest of the live workers are running a task or spinning. A pool whose
 * parked count equals its worker count has every worker asleep. */
CPAT_HIDDEN unsigned cpat__pool_parked_workers(struct cpat_pool *p);
/* Threads blocked in cpat_pool_wait_idle() or cpat_pool_shutdown(),
 * counted from just before their first check of the condition. */
CPAT_HIDDEN unsigned cpat__pool_idle_waiters(struct cpat_pool *p);
/* Test hook: when set, a pool worker that found no task calls it just
 * before it parks, with spinning true if it still counts as a spinner
 * (submitters then wake nobody); it may block there, to hold the worker in
 * that state. NULL (the default) costs one load on the way to parking. */
typedef void (*cpat__pool_hook_fn)(struct cpat_pool *p, bool spinning);
CPAT_HIDDEN extern _Atomic(cpat__pool_hook_fn) cpat__test_pool_before_park;

#endif /* CPAT_INTERNAL_H */
