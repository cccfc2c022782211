/*
 * DESIGN: timers and tickers on channels.
 *
 * A timer is a channel of capacity 1 (int64_t elements) and an entry in one
 * process-wide heap of armed timers: an intrusive pairing heap (pheap.h,
 * the deadline tokens' too) ordered by the next fire time (no allocation
 * to arm, re-arm or fire), served by one
 * thread, "cpat-timer", started by the first timer. It is this file's own
 * thread, not the one of deadline tokens (token.c): that heap holds tokens
 * and fires them by walking their tree, and sharing it would tie the two
 * modules' locks together for the saving of one sleeping thread.
 *
 * One lock, g_tm.mu, guards the heap, every timer's state and the thread's
 * state, and the thread fires a timer *under* it: the fire is a
 * cpat_chan_try_send() (lock-free, or the channel's own short lock to wake
 * a receiver; nothing in chan.c takes a lock of this file), so stop, reset
 * and destroy, which take g_tm.mu, never race a fire in progress: once they
 * hold the lock, the timer is either fired or not, and after they release
 * it the thread cannot touch the timer again unless it is in the heap.
 * Lock order: g_tm.mu, then a channel's lock; nothing else.
 *
 * Delivery keeps the latest value: the thread is the only sender on the
 * channel, so when a try_send finds it full it takes the old value out
 * (try_recv) and sends again, which cannot fail then (only a receiver can
 * have taken the value in between, which leaves room too).
 *
 * A ticker's next fire is the next point of its grid (start + k * period)
 * after now: ticks the thread could not deliver in time are skipped, not
 * fired in a burst.
 *
 * The thread waits on a condition variable on CLOCK_MONOTONIC
 * (cpat__cond_init) until the earliest fire time; arming a timer that
 * becomes the earliest signals it. It runs with every signal blocked,
 * detached, for the life of the process.
 *
 * fork(): the prepare handler takes g_tm.mu (so no fire is in progress at
 * the fork), the child handler forgets the thread and the heap (the
 * parent's timers, which the child must not use) and makes a fresh
 * condition variable at the next use; the child's first timer starts a new
 * thread.
 */
#include "internal.h"
#include "pheap.h"

#include <signal.h>

#include "cpattern/chan.h"
#include "cpattern/timer.h"

struct cpat_timer {
	struct cpat_chan *ch;
	bool ticker; /* immutable */
	/* g_tm.mu */
	int64_t period;        /* a ticker's; 0 for a one-shot timer */
	struct cpat__pheap hp; /* hp.key: the next fire, while armed */
	bool armed;
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool cv_ready;
	bool started;
	struct cpat__pheap *root;
	pthread_t thread;
} g_tm = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void tm_lock(void)
{
	CPAT_CHECK(pthread_mutex_lock(&g_tm.mu) == 0);
}

static void tm_unlock(void)
{
	CPAT_CHECK(pthread_mutex_unlock(&g_tm.mu) == 0);
}

/* ---- pairing heap (g_tm.mu) -------------------------------------------- */

static void hp_insert(struct cpat_timer *t)
{
	t->armed = true;
	cpat__pheap_insert(&g_tm.root, &t->hp);
	if (g_tm.root == &t->hp)
		CPAT_CHECK(pthread_cond_signal(&g_tm.cv) == 0);
}

static void hp_remove(struct cpat_timer *x)
{
	cpat__pheap_remove(&g_tm.root, &x->hp);
	x->armed = false;
}

/* ---- firing ------------------------------------------------------------ */

/* a + b, saturated at INT64_MAX (both >= 0). */
static int64_t add_sat(int64_t a, int64_t b)
{
	int64_t r;
	return __builtin_add_overflow(a, b, &r) ? INT64_MAX : r;
}

/* Puts the fire time in the channel, replacing an unreceived one. g_tm.mu
 * held. */
static void deliver(struct cpat_timer *t, int64_t now)
{
	int64_t old;
	if (cpat_chan_try_send(t->ch, &now) != -EAGAIN)
		return;
	(void)cpat_chan_try_recv(t->ch, &old);
	(void)cpat_chan_try_send(t->ch, &now);
}

/* The first point of t's grid after now. */
static int64_t next_tick(const struct cpat_timer *t, int64_t now)
{
	int64_t next = add_sat(t->hp.key, t->period);
	if (next > now || next == INT64_MAX)
		return next;
	int64_t k = (now - t->hp.key) / t->period + 1, step;
	if (__builtin_mul_overflow(k, t->period, &step))
		return INT64_MAX;
	return add_sat(t->hp.key, step);
}

static void *timer_main(void *arg)
{
	(void)arg;
	cpat__thread_name("cpat-timer");
	tm_lock();
	for (;;) {
		if (!g_tm.root) {
			pthread_cond_wait(&g_tm.cv, &g_tm.mu);
			continue;
		}
		struct cpat_timer *t =
			CPAT__PHEAP_OF(g_tm.root, struct cpat_timer, hp);
		int64_t now = cpat_now_ns();
		if (now < t->hp.key) {
			cpat__cond_wait_until(&g_tm.cv, &g_tm.mu, t->hp.key);
			continue;
		}
		hp_remove(t);
		deliver(t, now);
		if (t->period) {
			t->hp.key = next_tick(t, now);
			hp_insert(t);
		}
	}
	return NULL;
}

/* ---- the thread, and fork ---------------------------------------------- */

static void fork_prepare(void)
{
	tm_lock();
}

static void fork_parent(void)
{
	tm_unlock();
}

static void fork_child(void)
{
	g_tm.started = false;
	g_tm.root = NULL;
	/* The parent's thread may have been waiting on it. */
	g_tm.cv_ready = false;
	tm_unlock();
}

static pthread_once_t g_fork_once = PTHREAD_ONCE_INIT;
static int g_fork_rc;

static void fork_register(void)
{
	g_fork_rc = pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* Makes sure the thread runs; 0, -ENOMEM or -EAGAIN. g_tm.mu held. */
static int ensure_thread_locked(void)
{
	if (!g_tm.cv_ready) {
		if (cpat__cond_init(&g_tm.cv) != 0)
			return -ENOMEM;
		g_tm.cv_ready = true;
	}
	if (g_tm.started)
		return 0;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = cpat__thread_start(&g_tm.thread, timer_main, NULL, true);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		return -EAGAIN;
	g_tm.started = true;
	return 0;
}

/* ---- API ---------------------------------------------------------------- */

static int timer_new(struct cpat_timer **out, int64_t period)
{
	pthread_once(&g_fork_once, fork_register);
	if (g_fork_rc)
		return -ENOMEM;
	struct cpat_timer *t = cpat__calloc(1, sizeof *t);
	if (!t)
		return -ENOMEM;
	int rc = cpat_chan_create(&t->ch, sizeof(int64_t), 1);
	if (rc) {
		cpat__free(t);
		return rc;
	}
	t->ticker = period != 0;
	t->period = period;
	tm_lock();
	rc = ensure_thread_locked();
	tm_unlock();
	if (rc) {
		cpat_chan_destroy(t->ch);
		cpat__free(t);
		return rc;
	}
	*out = t;
	return 0;
}

/* Arms a one-shot timer for deadline (not CPAT_FOREVER), or fires it now
 * if that has passed. g_tm.mu held; t not armed. */
static void arm_oneshot_locked(struct cpat_timer *t, int64_t deadline)
{
	int64_t now = cpat_now_ns();
	if (deadline <= now) {
		deliver(t, now);
		return;
	}
	t->hp.key = deadline;
	hp_insert(t);
}

int cpat_timer_create(struct cpat_timer **out, int64_t deadline_ns)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!cpat__deadline_ok(deadline_ns))
		return -EINVAL;
	struct cpat_timer *t;
	int rc = timer_new(&t, 0);
	if (rc)
		return rc;
	if (deadline_ns != CPAT_FOREVER) {
		tm_lock();
		arm_oneshot_locked(t, deadline_ns);
		tm_unlock();
	}
	*out = t;
	return 0;
}

int cpat_ticker_create(struct cpat_timer **out, int64_t period_ns)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (period_ns <= 0)
		return -EINVAL;
	struct cpat_timer *t;
	int rc = timer_new(&t, period_ns);
	if (rc)
		return rc;
	tm_lock();
	t->hp.key = add_sat(cpat_now_ns(), period_ns);
	hp_insert(t);
	tm_unlock();
	*out = t;
	return 0;
}

struct cpat_chan *cpat_timer_chan(const struct cpat_timer *t)
{
	return t ? t->ch : NULL;
}

int cpat_timer_stop(struct cpat_timer *t)
{
	if (!t)
		return -EINVAL;
	tm_lock();
	bool was = t->armed;
	if (was)
		hp_remove(t);
	tm_unlock();
	return was ? 1 : 0;
}

int cpat_timer_reset(struct cpat_timer *t, int64_t when)
{
	if (!t)
		return -EINVAL;
	if (t->ticker ? when <= 0 : !cpat__deadline_ok(when))
		return -EINVAL;
	tm_lock();
	bool was = t->armed;
	if (was)
		hp_remove(t);
	if (t->ticker) {
		t->period = when;
		t->hp.key = add_sat(cpat_now_ns(), when);
		hp_insert(t);
	} else if (when != CPAT_FOREVER) {
		arm_oneshot_locked(t, when);
	}
	tm_unlock();
	return was ? 1 : 0;
}

void cpat_timer_destroy(struct cpat_timer *t)
{
	if (!t)
		return;
	tm_lock();
	if (t->armed)
		hp_remove(t);
	tm_unlock();
	cpat_chan_destroy(t->ch);
	cpat__free(t);
}
