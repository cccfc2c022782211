/*
 * Test hooks and planted bugs: what the library exposes to its own test
 * suite and nothing else. Never installed. The hooks are hidden symbols, so
 * only the tests, which link the static library, reach them.
 */
#ifndef CPAT_TESTHOOKS_H
#define CPAT_TESTHOOKS_H

#include "internal.h"

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
	CPAT_BUG_CHAN_RING_OFF_BY_ONE = 3,   /* ring wraps one slot early */
	CPAT_BUG_TOKEN_CHILD_UNREGISTER = 4, /* released child stays linked */
	CPAT_BUG_POOL_DISCARD_LOST = 5,      /* DISCARD loses a queued task */
	CPAT_BUG_POOL_PARK_NO_PASS = 6,      /* a worker whose park re-check
						finds a task wakes nobody for
						the rest (a lost wake-up) */
};
#define CPAT_PLANTED(bug) (CPAT_PLANT_BUG == (bug))

/* ---- common.c ---- */
/* Test hook: fail the k-th thread creation from now (k >= 1; persistent:
 * and every one after it); k = 0 turns injection off. */
CPAT_HIDDEN void cpat__test_fail_thread_at(long k, bool persistent);
/* Test hook: how many thread creations were attempted so far. */
CPAT_HIDDEN long cpat__test_thread_starts(void);

/* ---- token.c ---- */
CPAT_HIDDEN size_t cpat__token_nchildren(struct cpat_token *tok);
CPAT_HIDDEN size_t cpat__token_nwatches(struct cpat_token *tok);
CPAT_HIDDEN int cpat__token_refcount(struct cpat_token *tok);

/* ---- chan.c ---- */
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

/* ---- pipeline.c, fan.c ---- */
/* Threads started by pipelines (resp. fans) that have not yet exited: a
 * test checks that the count returns to its baseline after wait/destroy.
 * (A parallel map joins its own threads before it returns.) */
CPAT_HIDDEN long cpat__pipeline_live_threads(void);
CPAT_HIDDEN long cpat__fan_live_threads(void);

/* ---- pool.c ---- */
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

/* ---- sem.c, rate.c ---- */
struct cpat_sem;
struct cpat_rate;
/* Callers queued in s: a caller counts from the moment its record is in the
 * queue (a release can serve it) until it leaves it (served, or gone). */
CPAT_HIDDEN size_t cpat__sem_waiters(struct cpat_sem *s);
/* Callers of cpat_rate_wait*() that reserved a token with a delay and have
 * not yet returned (sleeping, or about to). */
CPAT_HIDDEN size_t cpat__rate_waiting(struct cpat_rate *l);

#endif /* CPAT_TESTHOOKS_H */
