/*
 * DESIGN: parking a thread on a 32-bit word.
 *
 * Linux: FUTEX_WAIT_BITSET with FUTEX_CLOCK_REALTIME unset takes an absolute
 * CLOCK_MONOTONIC timeout, which is exactly the library's deadline clock, so
 * no conversion and no drift. Private futexes: words are never shared
 * between processes.
 *
 * Elsewhere, or when built with CPAT_PARK_PORTABLE (meson -Dparking=portable,
 * which runs this path on Linux): a table of 64 mutex+condvar stripes chosen
 * by the word's address. park() locks the stripe, re-checks the word, and
 * waits; unpark locks the stripe before broadcasting, so a wake between the
 * check and the wait cannot be lost. unpark_one broadcasts too (stripes are
 * shared between words, so signalling one waiter could wake the wrong
 * word's sleeper). The stripes are process-wide: a fork handler gives the
 * child fresh ones, so that the child's own objects can park (common.h's
 * fork rule).
 */
#include "internal.h"

#include <sched.h>
#include <time.h>

#include "spin.h"

/*
 * Condition variables on the library's clock. Where the system can bind a
 * condition variable to CLOCK_MONOTONIC (pthread_condattr_setclock: Linux,
 * the BSDs) an absolute monotonic deadline is passed through as it is.
 * Elsewhere (macOS) the wait is on the realtime clock, and the deadline is
 * converted at each wait: a jump of the wall clock then stretches or cuts
 * that one wait, and the caller, which re-checks its deadline on the
 * monotonic clock after every wake-up, waits again or gives up.
 */
#if defined(__APPLE__)
#define CPAT_COND_REALTIME 1
#else
#define CPAT_COND_REALTIME 0
#endif

int cpat__cond_init(pthread_cond_t *cv)
{
#if CPAT_COND_REALTIME
	return pthread_cond_init(cv, NULL);
#else
	pthread_condattr_t ca;
	int rc = pthread_condattr_init(&ca);
	if (rc)
		return rc;
	rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (!rc)
		rc = pthread_cond_init(cv, &ca);
	pthread_condattr_destroy(&ca);
	return rc;
#endif
}

void cpat__cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu,
			   int64_t deadline_ns)
{
	if (deadline_ns == CPAT_FOREVER) {
		pthread_cond_wait(cv, mu);
		return;
	}
	if (deadline_ns < 0)
		deadline_ns = 0;
#if CPAT_COND_REALTIME
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	int64_t left = deadline_ns - cpat_now_ns();
	if (left < 0)
		left = 0;
	deadline_ns = (int64_t)now.tv_sec * CPAT_SEC + now.tv_nsec + left;
#endif
	struct timespec ts = {.tv_sec = (time_t)(deadline_ns / CPAT_SEC),
			      .tv_nsec = (long)(deadline_ns % CPAT_SEC)};
	pthread_cond_timedwait(cv, mu, &ts);
}

void cpat__event_signal(struct cpat__event *e)
{
	/* The signaller changed the condition (a seq_cst RMW) before this
	 * load: a waiter not counted yet will see the change when it checks,
	 * so only counted waiters need the sequence to move. */
	if (atomic_load(&e->waiters) != 0) {
		atomic_fetch_add(&e->seq, 1);
		cpat__unpark_all(&e->seq);
	}
}

struct event_watch {
	struct cpat__watch w;
	struct cpat__event *e;
	_Atomic int cause;
};

static void event_watch_fired(struct cpat__watch *w, int cause)
{
	struct event_watch *ew = w->arg;
	atomic_store(&ew->cause, cause);
	atomic_fetch_add(&ew->e->seq, 1);
	cpat__unpark_all(&ew->e->seq);
}

int cpat__event_wait(struct cpat__event *e, bool (*ready)(void *arg), void *arg,
		     struct cpat_token *tok, int64_t deadline_ns)
{
	struct event_watch ew = {.e = e};
	atomic_init(&ew.cause, 0);
	ew.w.fn = event_watch_fired;
	ew.w.arg = &ew;
	if (tok) {
		cpat_token_ref(tok);
		int c = cpat__token_watch(tok, &ew.w);
		if (c != 0) {
			cpat_token_unref(tok);
			return c;
		}
	}
	int rc;
	atomic_fetch_add(&e->waiters, 1);
	for (;;) {
		uint32_t seq = atomic_load(&e->seq);
		if (ready(arg)) {
			rc = 0;
			break;
		}
		if ((rc = atomic_load(&ew.cause)) != 0)
			break;
		if (deadline_ns != CPAT_FOREVER &&
		    cpat_now_ns() >= deadline_ns) {
			rc = -ETIMEDOUT;
			break;
		}
		cpat__park(&e->seq, seq, deadline_ns);
	}
	atomic_fetch_sub(&e->waiters, 1);
	if (tok) {
		cpat__token_unwatch(tok, &ew.w);
		cpat_token_unref(tok);
	}
	return rc;
}

_Thread_local int cpat__tl_spin_polls;
_Thread_local bool cpat__tl_spin_adapts;

void cpat__lock_slow(_Atomic uint32_t *m)
{
	/* Held for a few hundred nanoseconds at most, unless the holder was
	 * preempted: spin, then yield (to that holder, maybe), then sleep.
	 * On one CPU the holder cannot be running: sleep at once. */
	for (int i = cpat__spin_pays() ? 0 : 128; i < 128; i++) {
		uint32_t c = 0;
		if (atomic_load_explicit(m, memory_order_relaxed) == 0 &&
		    atomic_compare_exchange_weak_explicit(m, &c, 1,
							  memory_order_acquire,
							  memory_order_relaxed))
			return;
		if (i < 112)
			cpat__cpu_relax();
		else
			sched_yield();
	}
	while (atomic_exchange_explicit(m, 2, memory_order_acquire) != 0)
		cpat__park(m, 2, CPAT_FOREVER);
}

bool cpat__spin_pays(void)
{
	/* 0: not read yet; 1: one CPU; 2: more. */
	static _Thread_local int cpus;
	if (cpus == 0) {
#if defined(__linux__)
		cpu_set_t set;
		int n = sched_getaffinity(0, sizeof(set), &set) == 0
				? CPU_COUNT(&set)
				: 2;
		cpus = n > 1 ? 2 : 1;
#else
		cpus = 2;
#endif
	}
	return cpus > 1;
}

#if defined(__linux__) && !defined(CPAT_PARK_PORTABLE)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

void cpat__park(_Atomic uint32_t *word, uint32_t expect, int64_t deadline_ns)
{
	struct timespec ts, *tsp = NULL;
	if (deadline_ns != CPAT_FOREVER) {
		if (deadline_ns < 0)
			deadline_ns = 0;
		ts.tv_sec = (time_t)(deadline_ns / CPAT_SEC);
		ts.tv_nsec = (long)(deadline_ns % CPAT_SEC);
		tsp = &ts;
	}
	/* EAGAIN (word changed), EINTR and ETIMEDOUT all mean: re-check. */
	(void)syscall(SYS_futex, (uint32_t *)word,
		      FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, expect, tsp, NULL,
		      FUTEX_BITSET_MATCH_ANY);
}

void cpat__unpark_one(_Atomic uint32_t *word)
{
	(void)syscall(SYS_futex, (uint32_t *)word,
		      FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1, NULL, NULL, 0);
}

void cpat__unpark_all(_Atomic uint32_t *word)
{
	(void)syscall(SYS_futex, (uint32_t *)word,
		      FUTEX_WAKE | FUTEX_PRIVATE_FLAG, INT32_MAX, NULL, NULL,
		      0);
}

#else /* portable condition-variable path */

#define NSTRIPES 64

static struct stripe {
	pthread_mutex_t mu;
	pthread_cond_t cv;
} g_stripes[NSTRIPES];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/*
 * fork(): a stripe that another thread held at the fork would stay locked
 * in the child, and a condition variable the parent's threads were waiting
 * on keeps their (absent) waiters' state. A stripe is held only inside
 * park and unpark, which call nothing, so the forking thread holds none:
 * the child makes every stripe afresh. (No prepare handler: taking the
 * stripes before the fork would order them against every lock held across
 * a park, the token service's among them.)
 */
static void stripes_make(void)
{
	for (int i = 0; i < NSTRIPES; i++) {
		CPAT_CHECK(pthread_mutex_init(&g_stripes[i].mu, NULL) == 0);
		CPAT_CHECK(cpat__cond_init(&g_stripes[i].cv) == 0);
	}
}

static void stripes_init(void)
{
	stripes_make();
	/* Fails only without memory; the stripes then work as before, and
	 * only a fork during a park is left unprotected. */
	(void)pthread_atfork(NULL, NULL, stripes_make);
}

static struct stripe *stripe_of(_Atomic uint32_t *word)
{
	pthread_once(&g_once, stripes_init);
	uintptr_t a = (uintptr_t)word;
	return &g_stripes[(a >> 4 ^ a >> 10) % NSTRIPES];
}

void cpat__park(_Atomic uint32_t *word, uint32_t expect, int64_t deadline_ns)
{
	struct stripe *s = stripe_of(word);
	CPAT_CHECK(pthread_mutex_lock(&s->mu) == 0);
	if (atomic_load(word) == expect)
		cpat__cond_wait_until(&s->cv, &s->mu, deadline_ns);
	CPAT_CHECK(pthread_mutex_unlock(&s->mu) == 0);
}

void cpat__unpark_one(_Atomic uint32_t *word)
{
	cpat__unpark_all(word);
}

void cpat__unpark_all(_Atomic uint32_t *word)
{
	struct stripe *s = stripe_of(word);
	CPAT_CHECK(pthread_mutex_lock(&s->mu) == 0);
	CPAT_CHECK(pthread_cond_broadcast(&s->cv) == 0);
	CPAT_CHECK(pthread_mutex_unlock(&s->mu) == 0);
}
#endif
