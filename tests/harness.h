/*
 * The test harness shared by every test binary: thread helpers, a start
 * barrier, a per-test watchdog, a seeded PRNG, a size scale and a counting,
 * failure-injecting allocator. Header-only; include it after <cmocka.h>'s
 * prerequisites (it includes them itself).
 *
 * Rules it serves: cmocka asserts only on the main thread (worker
 * threads record results in their own structs), no sleeps to synchronise,
 * every test has a timeout (the watchdog aborts the binary, naming the test),
 * stress sizes small by default and scaled by CPAT_TEST_SCALE, the random
 * seed printed and taken back from CPAT_TEST_SEED.
 */
#ifndef CPAT_TEST_HARNESS_H
#define CPAT_TEST_HARNESS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fnmatch.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cpattern.h"
#include "spin.h" /* cpat__spin_pays(), cpat__park() */
#include "testhooks.h"

/* ---- threads ---------------------------------------------------------- */

/* Starts a thread; any failure aborts the test (on the main thread). */
static inline void th_spawn(pthread_t *t, void *(*fn)(void *), void *arg)
{
	int rc = pthread_create(t, NULL, fn, arg);
	if (rc != 0) {
		fprintf(stderr, "pthread_create: %s\n", strerror(rc));
		abort();
	}
}

static inline void th_join(pthread_t t)
{
	int rc = pthread_join(t, NULL);
	if (rc != 0) {
		fprintf(stderr, "pthread_join: %s\n", strerror(rc));
		abort();
	}
}

/* A reusable start barrier for n threads. */
struct th_barrier {
	pthread_barrier_t b;
};

static inline void th_barrier_init(struct th_barrier *b, unsigned n)
{
	if (pthread_barrier_init(&b->b, NULL, n) != 0)
		abort();
}

static inline void th_barrier_wait(struct th_barrier *b)
{
	pthread_barrier_wait(&b->b);
}

static inline void th_barrier_destroy(struct th_barrier *b)
{
	pthread_barrier_destroy(&b->b);
}

/*
 * A crew: the threads of a test, started together on a barrier and joined
 * together. th_crew_init(c, n) makes room for n threads and the barriers
 * (n + 1 parties: the threads and the main thread); th_crew_add() spawns
 * one, th_crew_add_n() n alike (fn(args + i * stride) for i < n). Each
 * thread's first step is th_barrier_wait(&c->start) (its own struct holds
 * &c->start), so none runs its part before the main thread passes
 * th_crew_go(). th_crew_join() joins every thread (those not yet joined)
 * and destroys the barriers (c->done serves th_race below); a test that
 * joins in stages (the producers, then close, then the consumers) adds
 * each stage's threads in turn and calls th_crew_join_to(c, k) to join
 * the threads added before the k-th, first.
 */
#define TH_CREW_MAX 64

struct th_crew {
	struct th_barrier start, done;
	unsigned want, n, joined;
	pthread_t t[TH_CREW_MAX];
};

static inline void th_crew_init(struct th_crew *c, unsigned n)
{
	if (n == 0 || n > TH_CREW_MAX)
		abort();
	c->want = n;
	c->n = 0;
	c->joined = 0;
	th_barrier_init(&c->start, n + 1);
	th_barrier_init(&c->done, n + 1);
}

static inline void th_crew_add(struct th_crew *c, void *(*fn)(void *),
			       void *arg)
{
	if (c->n >= c->want)
		abort();
	th_spawn(&c->t[c->n++], fn, arg);
}

static inline void th_crew_add_n(struct th_crew *c, unsigned n,
				 void *(*fn)(void *), void *args, size_t stride)
{
	for (unsigned i = 0; i < n; i++)
		th_crew_add(c, fn, (char *)args + i * stride);
}

/* Releases the crew (every thread must have been added). */
static inline void th_crew_go(struct th_crew *c)
{
	if (c->n != c->want)
		abort();
	th_barrier_wait(&c->start);
}

/* Joins the threads added before the @p k-th (those not yet joined). */
static inline void th_crew_join_to(struct th_crew *c, unsigned k)
{
	if (k > c->n)
		abort();
	for (; c->joined < k; c->joined++)
		th_join(c->t[c->joined]);
}

static inline void th_crew_join(struct th_crew *c)
{
	th_crew_join_to(c, c->n);
	th_barrier_destroy(&c->start);
	th_barrier_destroy(&c->done);
}

/*
 * A race repeated per trial by persistent threads (a crew): thread i runs
 * step(args + i * stride, trial) once a trial. The main thread sets up
 * each trial, then th_race_go() releases the threads and th_race_end()
 * returns once every one has finished its step (the main thread's own
 * part of the race, if any, goes between the two; th_race_trial() is
 * both). The threads run exactly @p trials steps: the main thread runs as
 * many trials, then th_race_join().
 */
struct th_race;

struct th_race_slot {
	struct th_race *r;
	void *arg;
};

struct th_race {
	struct th_crew crew;
	long trials;
	void (*step)(void *arg, long trial);
	struct th_race_slot slot[TH_CREW_MAX];
};

static inline void *th_race_main(void *arg)
{
	struct th_race_slot *s = arg;
	struct th_race *r = s->r;
	for (long i = 0; i < r->trials; i++) {
		th_barrier_wait(&r->crew.start);
		r->step(s->arg, i);
		th_barrier_wait(&r->crew.done);
	}
	return NULL;
}

static inline void th_race_start(struct th_race *r, unsigned n, long trials,
				 void (*step)(void *arg, long trial),
				 void *args, size_t stride)
{
	r->trials = trials;
	r->step = step;
	th_crew_init(&r->crew, n);
	for (unsigned i = 0; i < n; i++) {
		r->slot[i] =
			(struct th_race_slot){r, (char *)args + i * stride};
		th_crew_add(&r->crew, th_race_main, &r->slot[i]);
	}
}

static inline void th_race_go(struct th_race *r)
{
	th_crew_go(&r->crew);
}

static inline void th_race_end(struct th_race *r)
{
	th_barrier_wait(&r->crew.done);
}

static inline void th_race_trial(struct th_race *r)
{
	th_race_go(r);
	th_race_end(r);
}

static inline void th_race_join(struct th_race *r)
{
	th_crew_join(&r->crew);
}

/*
 * Gives the processor away while polling a condition another thread makes
 * true; every caller re-checks its condition, so how long this lasts never
 * decides an outcome (it is not a sleep standing in for synchronisation).
 * Normally a sched_yield(). On one CPU beside a busy thread a yield puts the
 * caller behind that thread for a whole time slice (milliseconds: a test
 * polling in a loop then ran 40x slower and hit its watchdog), so there it
 * blocks for the shortest timer interval instead (a zero nanosleep lasts
 * the timer slack, ~50 us), which lets the threads it waits for run.
 */
static inline void th_relax(void)
{
	if (!cpat__spin_pays()) { /* on one CPU only */
		struct timespec ts = {0, 0};
		nanosleep(&ts, NULL);
	} else {
		sched_yield();
	}
}

/* A short busy pause (timing jitter in races; no yield, which can cost a
 * time slice beside a busy thread on one CPU). */
static inline void th_pause(unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#else
		atomic_signal_fence(memory_order_seq_cst);
#endif
	}
}

/*
 * A hand-off word for per-trial handshakes between the main thread and a
 * helper (thousands of them in one test): th_wait_u32() spins briefly,
 * then sleeps on the word (cpat__park()); th_set_u32() stores and wakes. A
 * th_relax() loop there costs a whole time slice per hand-off when the test
 * is pinned to one CPU beside a busy thread (scripts/flaky.sh does that).
 */
static inline void th_wait_u32(_Atomic uint32_t *w, uint32_t v)
{
	for (int i = 0; i < 256; i++) {
		if (atomic_load_explicit(w, memory_order_acquire) == v)
			return;
		th_pause(1);
	}
	for (;;) {
		uint32_t cur = atomic_load_explicit(w, memory_order_acquire);
		if (cur == v)
			return;
		cpat__park(w, cur, CPAT_FOREVER);
	}
}

static inline void th_set_u32(_Atomic uint32_t *w, uint32_t v)
{
	atomic_store_explicit(w, v, memory_order_release);
	cpat__unpark_all(w);
}

/*
 * A cancel held in the middle of its firing. A token fires in two steps:
 * the status of its whole tree is set, then the firing thread runs the
 * callbacks one at a time, the cancelled token's first (src/token.c,
 * "Firing"). The callback th_held_init() registers (the token's only one)
 * holds the firing thread until th_held_release(). After th_held_fire()
 * has returned, every token of the tree has its status and no callback of
 * its descendants has run; th_held_fired() says whether that point is
 * reached (for the code under test, polling it). A thread of the code under
 * test parked under the tree then waits for its own callback, queued behind
 * the held one: fire only while none is.
 */
struct th_held_cancel {
	pthread_t t;
	struct cpat_token *tok;
	_Atomic int in_cb, release;
};

static inline void th_held_cb(void *arg, int cause)
{
	(void)cause;
	struct th_held_cancel *h = arg;
	atomic_store(&h->in_cb, 1);
	while (!atomic_load(&h->release))
		th_relax();
}

static inline void *th_held_main(void *arg)
{
	struct th_held_cancel *h = arg;
	cpat_token_cancel(h->tok);
	return NULL;
}

/* Registers the holding callback on @p tok; cpat_token_on_cancel()'s
 * result. */
static inline int th_held_init(struct th_held_cancel *h, struct cpat_token *tok)
{
	memset(h, 0, sizeof *h);
	h->tok = tok;
	return cpat_token_on_cancel(tok, th_held_cb, h, NULL);
}

static inline bool th_held_fired(struct th_held_cancel *h)
{
	return atomic_load(&h->in_cb) != 0;
}

/* Cancels the token from a helper thread; returns once it is held. */
static inline void th_held_fire(struct th_held_cancel *h)
{
	th_spawn(&h->t, th_held_main, h);
	while (!th_held_fired(h))
		th_relax();
}

/* Lets the firing thread run the other callbacks, and joins it. */
static inline void th_held_release(struct th_held_cancel *h)
{
	atomic_store(&h->release, 1);
	th_join(h->t);
}

/* ---- sanitizers, sizes, thread counts ---------------------------------- */

/* SANITIZED: built with ASan or TSan (gcc and clang spell it differently);
 * TSAN: with TSan. Stress sizes shrink there (5-50x slower). */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

#if defined(__SANITIZE_THREAD__)
#define TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TSAN 1
#endif
#endif
#ifndef TSAN
#define TSAN 0
#endif

/* A size that is @p plain in the plain build and @p san under sanitizers,
 * scaled by CPAT_TEST_SCALE. */
#define SIZE(plain, san) TH_SCALED(SANITIZED ? (san) : (plain))

/* The threads of this process now (from /proc/self/task). */
/* The threads of the process named @p name (/proc/self/task/N/comm), or
 * all of them for NULL. A thread that exits meanwhile is not counted. */
static inline long th_count_threads_named(const char *name)
{
	DIR *d = opendir("/proc/self/task");
	if (!d)
		abort();
	long n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		if (!name) {
			n++;
			continue;
		}
		char path[300], comm[32] = "";
		snprintf(path, sizeof path, "/proc/self/task/%s/comm",
			 e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(comm, sizeof comm, f)) {
			comm[strcspn(comm, "\n")] = '\0';
			n += strcmp(comm, name) == 0;
		}
		fclose(f);
	}
	closedir(d);
	return n;
}

static inline long th_count_threads(void)
{
	return th_count_threads_named(NULL);
}

/* ---- scale and seed --------------------------------------------------- */

/* CPAT_TEST_SCALE (default 1): multiply stress sizes by it. */
static inline long th_scale(void)
{
	const char *s = getenv("CPAT_TEST_SCALE");
	long v = s ? strtol(s, NULL, 10) : 1;
	return v > 0 ? v : 1;
}

#define TH_SCALED(n) ((long)(n)*th_scale())

static uint64_t th_seed_value;
static int th_seed_set;

/* The run's seed: CPAT_TEST_SEED if set, else from the clock; printed once. */
static inline uint64_t th_seed(void)
{
	if (!th_seed_set) {
		const char *s = getenv("CPAT_TEST_SEED");
		if (s && *s) {
			th_seed_value = strtoull(s, NULL, 0);
		} else {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			th_seed_value = (uint64_t)ts.tv_sec * 1000000007u ^
					(uint64_t)ts.tv_nsec;
		}
		if (th_seed_value == 0)
			th_seed_value = 1;
		th_seed_set = 1;
		fprintf(stderr, "# seed: CPAT_TEST_SEED=%llu\n",
			(unsigned long long)th_seed_value);
	}
	return th_seed_value;
}

/* xorshift64*: a PRNG per user (one struct per thread). */
struct th_rng {
	uint64_t s;
};

static inline void th_rng_init(struct th_rng *r, uint64_t stream)
{
	r->s = th_seed() ^ (stream * 0x9E3779B97F4A7C15ull);
	if (r->s == 0)
		r->s = 0x2545F4914F6CDD1Dull;
}

static inline uint64_t th_rng_next(struct th_rng *r)
{
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return r->s * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [0, n). */
static inline uint64_t th_rng_below(struct th_rng *r, uint64_t n)
{
	return n ? th_rng_next(r) % n : 0;
}

/* ---- watchdog --------------------------------------------------------- */

/*
 * Each test runs under a watchdog: if it has not finished after
 * CPAT_TEST_TIMEOUT seconds (default 120), the binary prints the test's name
 * and aborts, so a hang is a failure with a name, never a stuck CI.
 *
 * Before it aborts it prints every thread's stack, and the objects the test
 * registered with th_watchdog_show(), through gdb attached to the process
 * (when gdb is installed and CPAT_TEST_WATCHDOG_GDB is not 0): a hang that
 * comes once in hundreds of runs then leaves the wait that never ended in
 * its log.
 */
#define TH_WD_SHOW_MAX 4
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t thread;
	int started;
	int64_t deadline; /* 0 = disarmed */
	const char *name;
	char show[TH_WD_SHOW_MAX][160]; /* gdb print commands */
} th_wd = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/*
 * Registers an object for the watchdog to print if the running test hangs:
 * th_watchdog_show("struct cpat_pool", p) prints *(struct cpat_pool *)p,
 * read by gdb without taking the object's locks. Cleared when the next test
 * starts; at most TH_WD_SHOW_MAX per test (later ones are ignored).
 */
static inline void th_watchdog_show(const char *type, const void *obj)
{
	pthread_mutex_lock(&th_wd.mu);
	for (int i = 0; i < TH_WD_SHOW_MAX; i++) {
		if (th_wd.show[i][0] == '\0') {
			snprintf(th_wd.show[i], sizeof th_wd.show[i],
				 "print *(%s *)%p", type, obj);
			break;
		}
	}
	pthread_mutex_unlock(&th_wd.mu);
}

/* Runs gdb on this process: every thread's stack, then the registered
 * objects. Called with th_wd.mu held, from the watchdog thread. */
static void th_watchdog_dump(void)
{
	const char *g = getenv("CPAT_TEST_WATCHDOG_GDB");
	if (g && strcmp(g, "0") == 0)
		return;
	char pid[32];
	snprintf(pid, sizeof pid, "%ld", (long)getpid());
	/* timeout(1) bounds a gdb that itself gets stuck. */
	char *argv[8 + 2 * TH_WD_SHOW_MAX + 4];
	int n = 0;
	argv[n++] = "timeout";
	argv[n++] = "60";
	argv[n++] = "gdb";
	argv[n++] = "-p";
	argv[n++] = pid;
	argv[n++] = "-batch";
	argv[n++] = "-ex";
	argv[n++] = "thread apply all bt";
	for (int i = 0; i < TH_WD_SHOW_MAX; i++) {
		if (th_wd.show[i][0] != '\0') {
			argv[n++] = "-ex";
			argv[n++] = th_wd.show[i];
		}
	}
	argv[n] = NULL;
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, 2, 1); /* into the log */
	fprintf(stderr, "# WATCHDOG: the threads' stacks (gdb):\n");
	fflush(stderr);
	extern char **environ;
	pid_t child;
	if (posix_spawnp(&child, "timeout", &fa, NULL, argv, environ) == 0) {
		int st;
		while (waitpid(child, &st, 0) < 0 && errno == EINTR)
			;
	} else {
		fprintf(stderr, "# WATCHDOG: could not run gdb\n");
	}
	posix_spawn_file_actions_destroy(&fa);
}

static void *th_watchdog_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&th_wd.mu);
	for (;;) {
		if (th_wd.deadline == 0) {
			pthread_cond_wait(&th_wd.cv, &th_wd.mu);
			continue;
		}
		int64_t now = cpat_now_ns();
		if (now >= th_wd.deadline) {
			fprintf(stderr,
				"# WATCHDOG: test '%s' exceeded its timeout\n",
				th_wd.name ? th_wd.name : "?");
			fflush(stderr);
			th_watchdog_dump();
			abort();
		}
		/* The condvar uses CLOCK_REALTIME by default: wait in short
		 * relative steps measured on the monotonic clock instead. */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		int64_t step = th_wd.deadline - now;
		if (step > 100 * CPAT_MSEC)
			step = 100 * CPAT_MSEC;
		ts.tv_nsec += (long)step;
		while (ts.tv_nsec >= 1000000000L) {
			ts.tv_nsec -= 1000000000L;
			ts.tv_sec++;
		}
		pthread_cond_timedwait(&th_wd.cv, &th_wd.mu, &ts);
	}
	return NULL;
}

static inline int64_t th_timeout_ns(void)
{
	const char *s = getenv("CPAT_TEST_TIMEOUT");
	long v = s ? strtol(s, NULL, 10) : 0;
	return (v > 0 ? v : 120) * CPAT_SEC;
}

static inline void th_watchdog_arm(const char *name)
{
	pthread_mutex_lock(&th_wd.mu);
	if (!th_wd.started) {
		th_spawn(&th_wd.thread, th_watchdog_main, NULL);
		pthread_detach(th_wd.thread);
		th_wd.started = 1;
	}
	th_wd.name = name;
	memset(th_wd.show, 0, sizeof th_wd.show);
	th_wd.deadline = cpat_now_ns() + th_timeout_ns();
	pthread_cond_signal(&th_wd.cv);
	pthread_mutex_unlock(&th_wd.mu);
}

static inline void th_watchdog_disarm(void)
{
	pthread_mutex_lock(&th_wd.mu);
	th_wd.deadline = 0;
	pthread_mutex_unlock(&th_wd.mu);
}

/* The thread count once it has come down to @p base (a joined thread may
 * still be listed for a moment after pthread_join() returns), or what it
 * is after 5 s if it never does: the caller asserts it is at most @p base
 * (th_assert_threads_back()). At most, not equal: a thread that an earlier
 * test joined may still have been listed when @p base was counted (the
 * pipeline's guide example saw 3 for a base of 4 in 2 native runs of 200).
 * A thread left over is evidence: its stack is printed (through gdb, as
 * the watchdog does) before the caller's assertion fails. */
static inline long th_threads_settle(long base)
{
	int64_t end = cpat_now_ns() + 5 * CPAT_SEC;
	long n;
	while ((n = th_count_threads()) > base && cpat_now_ns() < end)
		sched_yield();
	if (n > base) {
		fprintf(stderr, "# %ld threads where %ld were expected\n", n,
			base);
		pthread_mutex_lock(&th_wd.mu);
		th_watchdog_dump();
		pthread_mutex_unlock(&th_wd.mu);
	}
	return n;
}

/* No thread left over since @p base was counted (th_threads_settle()). */
#define th_assert_threads_back(base) \
	assert_in_range(th_threads_settle(base), 0, (base))

/* ---- counting allocator ----------------------------------------------- */

/*
 * Installed with th_alloc_install(): counts allocations and live blocks, and
 * fails the k-th allocation from th_alloc_fail_at(k, persistent) on (and,
 * persistent, every one after it) until th_alloc_fail_at(0, 0).
 */
static _Atomic long th_alloc_calls, th_alloc_live_blocks, th_alloc_fail_k;
static _Atomic int th_alloc_fail_persist;

static void *th_counting_malloc(size_t n)
{
	long k = atomic_load(&th_alloc_fail_k);
	long call = atomic_fetch_add(&th_alloc_calls, 1) + 1;
	if (k > 0 &&
	    (call == k || (atomic_load(&th_alloc_fail_persist) && call > k)))
		return NULL;
	void *p = malloc(n);
	if (p)
		atomic_fetch_add(&th_alloc_live_blocks, 1);
	return p;
}

static void th_counting_free(void *p)
{
	if (p) {
		atomic_fetch_sub(&th_alloc_live_blocks, 1);
		free(p);
	}
}

static inline void th_alloc_install(void)
{
	cpat_set_allocator(th_counting_malloc, th_counting_free);
}

static inline void th_alloc_uninstall(void)
{
	cpat_set_allocator(NULL, NULL);
}

/* Fail the k-th allocation counted from now (k >= 1); k = 0 disables. */
static inline void th_alloc_fail_at(long k, int persistent)
{
	atomic_store(&th_alloc_fail_persist, persistent);
	atomic_store(&th_alloc_fail_k,
		     k > 0 ? atomic_load(&th_alloc_calls) + k : 0);
}

static inline long th_alloc_count(void)
{
	return atomic_load(&th_alloc_calls);
}

static inline long th_alloc_live(void)
{
	return atomic_load(&th_alloc_live_blocks);
}

/*
 * The allocation-failure sweep of a create function: runs create(ctx) with
 * the k-th allocation failing, for k = 1, 2, ... until create needs fewer
 * than k allocations and succeeds (at most max_k tries; the test fails if
 * it never does). With persistent, each k that fails is tried again with
 * every allocation from the k-th on failing. After each try, with
 * injection off, check(ctx, rc) runs: on success (rc 0) it uses and frees
 * what create made; on failure it checks that nothing was handed out.
 * Every failure must be -ENOMEM, and after check the live block count must
 * be what it was before the sweep. Returns the number of allocation sites
 * create went through (k - 1 at the first success). Main thread only.
 */
struct th_alloc_sweep {
	int (*create)(void *ctx);
	void (*check)(void *ctx, int rc);
	void *ctx;
	long max_k;
	int persistent;
	const char *what; /* named in the messages */
};

static inline long th_alloc_sweep(const struct th_alloc_sweep *s)
{
	long base = th_alloc_live();
	for (long k = 1; k <= s->max_k; k++) {
		for (int persistent = 0; persistent <= (s->persistent != 0);
		     persistent++) {
			th_alloc_fail_at(k, persistent);
			int rc = s->create(s->ctx);
			th_alloc_fail_at(0, 0);
			s->check(s->ctx, rc);
			long leaked = th_alloc_live() - base;
			if ((rc != 0 && rc != -ENOMEM) || leaked != 0)
				fprintf(stderr,
					"# %s: allocation %ld failing (%s): "
					"rc %d, %ld block(s) leaked\n",
					s->what, k, persistent ? "on" : "once",
					rc, leaked);
			if (rc != 0)
				assert_int_equal(rc, -ENOMEM);
			assert_int_equal(th_alloc_live(), base);
			if (rc == 0 && !persistent)
				return k - 1;
		}
	}
	fail_msg("%s: still failing with allocation %ld failing", s->what,
		 s->max_k);
	return -1;
}

/* ---- running ---------------------------------------------------------- */

/* A cmocka test with the watchdog armed around it, named by its function. */
#define TH_TEST(fn) cmocka_unit_test_setup_teardown(fn, th_arm_##fn, th_disarm)

#define TH_DECLARE(fn)                       \
	static void fn(void **state);        \
	static int th_arm_##fn(void **state) \
	{                                    \
		(void)state;                 \
		th_watchdog_arm(#fn);        \
		return 0;                    \
	}

/* Defines a test function with its watchdog arming: write tests as
 *   TH_TEST_FN(chan_close_wakes_receivers) { ... }
 * and list them as TH_TEST(chan_close_wakes_receivers). */
#define TH_TEST_FN(fn) \
	TH_DECLARE(fn) \
	static void fn(void **state)

static inline int th_disarm(void **state)
{
	(void)state;
	th_watchdog_disarm();
	return 0;
}

/*
 * Test selection, for slow runs (valgrind, helgrind: see tests/RELIABILITY.md).
 * CPAT_TEST_ONLY and CPAT_TEST_SKIP are comma-separated lists of fnmatch()
 * patterns over test names: a test runs if it matches some ONLY pattern (or
 * ONLY is unset) and no SKIP pattern. Unset, every test runs, as before.
 * Tests left out are not run and not reported (the count in the TAP plan
 * shrinks); the number left out is printed as a comment.
 */
static inline int th_name_matches(const char *list, const char *name)
{
	char buf[2048];
	snprintf(buf, sizeof buf, "%s", list);
	for (char *save = NULL, *pat = strtok_r(buf, ",", &save); pat;
	     pat = strtok_r(NULL, ",", &save))
		if (*pat && fnmatch(pat, name, 0) == 0)
			return 1;
	return 0;
}

static inline int th_run_selected(const char *group, const struct CMUnitTest *t,
				  size_t n)
{
	static struct CMUnitTest kept[512];
	const char *only = getenv("CPAT_TEST_ONLY");
	const char *skip = getenv("CPAT_TEST_SKIP");
	size_t k = 0;
	if ((!only || !*only) && (!skip || !*skip))
		return _cmocka_run_group_tests(group, t, n, NULL, NULL);
	if (n > sizeof kept / sizeof kept[0]) {
		fprintf(stderr, "# CPAT_TEST_ONLY/SKIP: too many tests\n");
		abort();
	}
	for (size_t i = 0; i < n; i++) {
		if (only && *only && !th_name_matches(only, t[i].name))
			continue;
		if (skip && *skip && th_name_matches(skip, t[i].name))
			continue;
		kept[k++] = t[i];
	}
	fprintf(stderr, "# CPAT_TEST_ONLY/SKIP: running %zu of %zu tests\n", k,
		n);
	return _cmocka_run_group_tests(group, kept, k, NULL, NULL);
}

/* Prints the seed before the tests run, then runs the group (the tests
 * that CPAT_TEST_ONLY / CPAT_TEST_SKIP select, by default all). */
#define TH_RUN(name, tests) \
	(th_seed(),         \
	 th_run_selected(name, tests, sizeof(tests) / sizeof((tests)[0])))

#endif /* CPAT_TEST_HARNESS_H */
