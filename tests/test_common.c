/*
 * Tests of the conventions every module shares (cpattern/common.h and
 * cpattern/version.h): the error vocabulary and cpat_strerror(), the clock,
 * the time units, the allocator hook and the version.
 */
#include "harness.h"

#include <limits.h>

#include "testhooks.h"

/* ---- errors ----------------------------------------------------------- */

TH_TEST_FN(strerror_names_every_code_of_the_vocabulary_distinctly)
{
	(void)state;
	static const int codes[] = {0,          -EINVAL,    -ENOMEM, -EAGAIN,
				    -ETIMEDOUT, -ECANCELED, -EPIPE,  -EBUSY};
	const size_t n = sizeof codes / sizeof codes[0];
	const char *names[sizeof codes / sizeof codes[0]];
	for (size_t i = 0; i < n; i++) {
		names[i] = cpat_strerror(codes[i]);
		assert_non_null(names[i]);
		assert_true(strlen(names[i]) > 0);
		/* A static string: the same pointer's text on a second call. */
		assert_string_equal(names[i], cpat_strerror(codes[i]));
	}
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++) {
			if (strcmp(names[i], names[j]) == 0)
				fprintf(stderr,
					"# codes %d and %d share \"%s\"\n",
					codes[i], codes[j], names[i]);
			assert_string_not_equal(names[i], names[j]);
		}
}

TH_TEST_FN(strerror_of_unknown_and_positive_codes_is_not_null)
{
	(void)state;
	static const int codes[] = {-EIO, -ENOENT, -9999, -1000000, INT_MIN,
				    1,    2,       42,    INT_MAX,  -EPERM};
	const char *unknown = cpat_strerror(-9999);
	assert_non_null(unknown);
	for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
		const char *s = cpat_strerror(codes[i]);
		assert_non_null(s);
		assert_true(strlen(s) > 0);
	}
	/* An unknown code is not described as one of the vocabulary. */
	static const int vocab[] = {-EINVAL,    -ENOMEM, -EAGAIN, -ETIMEDOUT,
				    -ECANCELED, -EPIPE,  -EBUSY};
	for (size_t i = 0; i < sizeof vocab / sizeof vocab[0]; i++)
		assert_string_not_equal(unknown, cpat_strerror(vocab[i]));
	/* A negative code in the errno range that names no errno value is
	 * unknown too, like one outside the range. */
	assert_string_equal(cpat_strerror(-4000), unknown);
	assert_string_equal(cpat_strerror(-4095), unknown);
	/* A real errno value outside the vocabulary is described. */
	assert_string_not_equal(cpat_strerror(-EIO), unknown);
}

/* ---- time ------------------------------------------------------------- */

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

TH_TEST_FN(now_ns_is_nonnegative_and_never_goes_backwards)
{
	(void)state;
	const long n = TH_SCALED(200000);
	int64_t prev = cpat_now_ns();
	assert_true(prev >= 0);
	long backwards = 0;
	for (long i = 0; i < n; i++) {
		int64_t t = cpat_now_ns();
		if (t < prev)
			backwards++;
		prev = t;
	}
	assert_int_equal(backwards, 0);
}

struct now_worker {
	struct th_barrier *start;
	long n;
	long backwards;
	long negative;
};

static void *now_worker_main(void *arg)
{
	struct now_worker *w = arg;
	th_barrier_wait(w->start);
	int64_t prev = cpat_now_ns();
	for (long i = 0; i < w->n; i++) {
		int64_t t = cpat_now_ns();
		if (t < 0)
			w->negative++;
		if (t < prev)
			w->backwards++;
		prev = t;
	}
	return NULL;
}

TH_TEST_FN(now_ns_is_monotonic_in_every_thread)
{
	(void)state;
	enum { NT = 4 };
	struct th_crew crew;
	th_crew_init(&crew, NT);
	struct now_worker w[NT];
	for (int i = 0; i < NT; i++)
		w[i] = (struct now_worker){&crew.start, TH_SCALED(50000), 0, 0};
	th_crew_add_n(&crew, NT, now_worker_main, w, sizeof w[0]);
	th_crew_go(&crew);
	th_crew_join(&crew);
	for (int i = 0; i < NT; i++) {
		assert_int_equal(w[i].backwards, 0);
		assert_int_equal(w[i].negative, 0);
	}
}

TH_TEST_FN(now_ns_reads_clock_monotonic)
{
	(void)state;
	/* The same clock, read between two readings of CLOCK_MONOTONIC,
	 * falls between them (and so is within their span of each other). */
	for (int i = 0; i < 1000; i++) {
		int64_t before = mono_ns();
		int64_t now = cpat_now_ns();
		int64_t after = mono_ns();
		assert_true(before <= now);
		assert_true(now <= after);
	}
}

TH_TEST_FN(time_units_are_nanosecond_multipliers)
{
	(void)state;
	assert_int_equal(sizeof(CPAT_USEC), sizeof(int64_t));
	assert_int_equal(sizeof(CPAT_MSEC), sizeof(int64_t));
	assert_int_equal(sizeof(CPAT_SEC), sizeof(int64_t));
	assert_true(CPAT_USEC == 1000);
	assert_true(CPAT_MSEC == 1000000);
	assert_true(CPAT_SEC == 1000000000);
	assert_true(CPAT_SEC == 1000 * CPAT_MSEC);
	assert_true(CPAT_MSEC == 1000 * CPAT_USEC);
	assert_true(CPAT_FOREVER == -1);
	/* The multipliers are int64_t, so a long deadline does not overflow. */
	int64_t d = 3000 * CPAT_SEC;
	assert_true(d == 3000000000000LL);
}

/* ---- allocator -------------------------------------------------------- */

static void count_cb(void *arg, int cause)
{
	(void)cause;
	(*(int *)arg)++;
}

TH_TEST_FN(set_allocator_with_one_null_is_einval_and_changes_nothing)
{
	(void)state;
	th_alloc_install();
	assert_int_equal(cpat_set_allocator(th_counting_malloc, NULL), -EINVAL);
	assert_int_equal(cpat_set_allocator(NULL, th_counting_free), -EINVAL);

	/* The counting allocator is still the one in use. */
	long calls = th_alloc_count(), live = th_alloc_live();
	struct cpat_token *tok = NULL;
	assert_int_equal(cpat_token_create(&tok, NULL), 0);
	assert_true(th_alloc_count() > calls);
	assert_true(th_alloc_live() > live);
	cpat_token_unref(tok);
	assert_int_equal(th_alloc_live(), live);
	th_alloc_uninstall();
}

TH_TEST_FN(custom_allocator_sees_every_library_allocation)
{
	(void)state;
	assert_int_equal(
		cpat_set_allocator(th_counting_malloc, th_counting_free), 0);
	long calls = th_alloc_count(), live = th_alloc_live();
	struct cpat_token *root = NULL, *kid = NULL;
	struct cpat_token_cb *h = NULL;
	assert_int_equal(cpat_token_create(&root, NULL), 0);
	assert_true(th_alloc_count() > calls);
	assert_true(th_alloc_live() > live);
	assert_int_equal(cpat_token_create(&kid, root), 0);
	int runs = 0;
	assert_int_equal(cpat_token_on_cancel(kid, count_cb, &runs, &h), 0);
	assert_int_equal(cpat_token_on_cancel_remove(h), 1);
	assert_int_equal(runs, 0);
	cpat_token_unref(kid);
	cpat_token_unref(root);
	/* Everything allocated through the hook was freed through it. */
	assert_int_equal(th_alloc_live(), live);
	assert_int_equal(cpat_set_allocator(NULL, NULL), 0);
}

TH_TEST_FN(set_allocator_both_null_restores_malloc_and_free)
{
	(void)state;
	assert_int_equal(
		cpat_set_allocator(th_counting_malloc, th_counting_free), 0);
	assert_int_equal(cpat_set_allocator(NULL, NULL), 0);
	long calls = th_alloc_count();
	struct cpat_token *tok = NULL;
	assert_int_equal(cpat_token_create(&tok, NULL), 0);
	cpat_token_unref(tok);
	assert_int_equal(th_alloc_count(), calls);
}

TH_TEST_FN(internal_allocation_wrappers_go_through_the_hook)
{
	(void)state;
	th_alloc_install();
	long live = th_alloc_live();
	void *p = cpat__malloc(24);
	assert_non_null(p);
	assert_int_equal(th_alloc_live(), live + 1);
	cpat__free(p);
	unsigned char *z = cpat__calloc(8, 16);
	assert_non_null(z);
	for (int i = 0; i < 128; i++)
		assert_int_equal(z[i], 0);
	cpat__free(z);
	assert_null(cpat__calloc(SIZE_MAX / 2, 4)); /* overflow */
	void *a = cpat__malloc_aligned(100, CPAT_CACHELINE);
	assert_non_null(a);
	assert_int_equal((uintptr_t)a % CPAT_CACHELINE, 0);
	memset(a, 0xA5, 100);
	cpat__free_aligned(a);
	assert_int_equal(th_alloc_live(), live);
	/* A failing hook is reported as NULL, not papered over. */
	th_alloc_fail_at(1, 0);
	assert_null(cpat__malloc(8));
	th_alloc_fail_at(0, 0);
	th_alloc_uninstall();
}

TH_TEST_FN(internal_allocation_wrappers_reject_bad_sizes_and_alignments)
{
	(void)state;
	th_alloc_install();
	long live = th_alloc_live();
	long calls = th_alloc_count();
	/* Bad alignments and sizes that would overflow: NULL, and the hook
	 * is never asked. */
	static const size_t bad_align[] = {
		0, 1, 2, 4, sizeof(size_t) - 1, 48, 100, 8192, (size_t)1 << 40};
	for (size_t i = 0; i < sizeof bad_align / sizeof bad_align[0]; i++)
		assert_null(cpat__malloc_aligned(16, bad_align[i]));
	assert_null(cpat__malloc_aligned(SIZE_MAX, CPAT_CACHELINE));
	assert_null(cpat__malloc_aligned(SIZE_MAX - 64, CPAT_CACHELINE));
	assert_null(cpat__calloc(SIZE_MAX, 2));
	assert_int_equal(th_alloc_count(), calls);
	/* The extreme good alignments work. */
	void *a = cpat__malloc_aligned(1, sizeof(size_t));
	void *b = cpat__malloc_aligned(1, 4096);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal((uintptr_t)a % sizeof(size_t), 0);
	assert_int_equal((uintptr_t)b % 4096, 0);
	cpat__free_aligned(a);
	cpat__free_aligned(b);
	cpat__free_aligned(NULL); /* a no-op */
	/* Size 0: a real block (never NULL for success), freed like any. */
	void *z = cpat__malloc(0);
	void *zc = cpat__calloc(0, 16);
	void *zc2 = cpat__calloc(16, 0);
	assert_non_null(z);
	assert_non_null(zc);
	assert_non_null(zc2);
	assert_int_equal(th_alloc_live(), live + 3);
	cpat__free(z);
	cpat__free(zc);
	cpat__free(zc2);
	cpat__free(NULL); /* a no-op */
	/* An aligned block whose hook allocation fails is NULL. */
	th_alloc_fail_at(1, 0);
	assert_null(cpat__malloc_aligned(16, CPAT_CACHELINE));
	th_alloc_fail_at(0, 0);
	assert_int_equal(th_alloc_live(), live);
	th_alloc_uninstall();
}

/* ---- parking ----------------------------------------------------------- */

TH_TEST_FN(park_returns_at_once_on_changed_word_and_past_or_negative_deadline)
{
	(void)state;
	_Atomic uint32_t w = 7;
	int64_t t0 = cpat_now_ns();
	/* The word is not the expected value: no sleep at all. */
	cpat__park(&w, 8, CPAT_FOREVER);
	/* Deadlines already passed, a negative one included (taken as 0,
	 * the clock's epoch): each returns without waiting for a wake. */
	cpat__park(&w, 7, 0);
	cpat__park(&w, 7, -5);
	cpat__park(&w, 7, INT64_MIN + 1);
	cpat__park(&w, 7, t0 - CPAT_SEC);
	/* A short future deadline: returns, and not before it (spurious
	 * wake-ups may return early, so only the loop's total is bounded). */
	int64_t dl = cpat_now_ns() + 2 * CPAT_MSEC;
	while (cpat_now_ns() < dl)
		cpat__park(&w, 7, dl);
	assert_true(cpat_now_ns() >= dl);
	/* Waking a word nobody sleeps on is harmless. */
	cpat__unpark_one(&w);
	cpat__unpark_all(&w);
	assert_int_equal(atomic_load(&w), 7);
}

/* ---- version ---------------------------------------------------------- */

/* cpat__spin_pays() in a fresh thread (it caches its answer per thread)
 * whose affinity is `cpus` CPUs (0: left as inherited). */
struct spin_probe {
	int cpus, set_rc, pays;
};

static void *spin_probe_main(void *arg)
{
	struct spin_probe *sp = arg;
	if (sp->cpus > 0) {
		cpu_set_t set, now;
		CPU_ZERO(&set);
		if (sched_getaffinity(0, sizeof(now), &now) != 0) {
			sp->set_rc = -1;
			return NULL;
		}
		for (int c = 0, n = 0; c < CPU_SETSIZE && n < sp->cpus; c++) {
			if (CPU_ISSET(c, &now)) {
				CPU_SET(c, &set);
				n++;
			}
		}
		sp->set_rc = sched_setaffinity(0, sizeof(set), &set);
	}
	sp->pays = cpat__spin_pays();
	return NULL;
}

static struct spin_probe spin_probe_run(int cpus)
{
	struct spin_probe sp = {cpus, 0, -1};
	pthread_t t;
	th_spawn(&t, spin_probe_main, &sp);
	th_join(t);
	return sp;
}

TH_TEST_FN(spin_pays_only_with_more_than_one_cpu_allowed)
{
	(void)state;
	/* Pinned to one CPU: a spinner would only take the CPU from the
	 * thread it waits for, so channel and pool waits park at once. */
	struct spin_probe one = spin_probe_run(1);
	assert_int_equal(one.set_rc, 0);
	assert_int_equal(one.pays, 0);
	cpu_set_t set;
	assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
	if (CPU_COUNT(&set) < 2) {
		fprintf(stderr,
			"# one CPU allowed: the 2-CPU half is skipped\n");
		return;
	}
	struct spin_probe two = spin_probe_run(2);
	assert_int_equal(two.set_rc, 0);
	assert_int_equal(two.pays, 1);
}

TH_TEST_FN(version_string_matches_the_macros)
{
	(void)state;
	char want[64];
	snprintf(want, sizeof want, "%d.%d.%d", CPAT_VERSION_MAJOR,
		 CPAT_VERSION_MINOR, CPAT_VERSION_PATCH);
	assert_non_null(cpat_version());
	assert_string_equal(cpat_version(), want);
}

TH_TEST_FN(version_number_matches_the_macros)
{
	(void)state;
	assert_int_equal(cpat_version_number(), CPAT_VERSION_NUMBER);
	assert_int_equal(cpat_version_number(),
			 ((unsigned)CPAT_VERSION_MAJOR << 16) |
				 ((unsigned)CPAT_VERSION_MINOR << 8) |
				 (unsigned)CPAT_VERSION_PATCH);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		TH_TEST(strerror_names_every_code_of_the_vocabulary_distinctly),
		TH_TEST(strerror_of_unknown_and_positive_codes_is_not_null),
		TH_TEST(now_ns_is_nonnegative_and_never_goes_backwards),
		TH_TEST(now_ns_is_monotonic_in_every_thread),
		TH_TEST(now_ns_reads_clock_monotonic),
		TH_TEST(time_units_are_nanosecond_multipliers),
		TH_TEST(set_allocator_with_one_null_is_einval_and_changes_nothing),
		TH_TEST(custom_allocator_sees_every_library_allocation),
		TH_TEST(set_allocator_both_null_restores_malloc_and_free),
		TH_TEST(internal_allocation_wrappers_go_through_the_hook),
		TH_TEST(internal_allocation_wrappers_reject_bad_sizes_and_alignments),
		TH_TEST(park_returns_at_once_on_changed_word_and_past_or_negative_deadline),
		TH_TEST(spin_pays_only_with_more_than_one_cpu_allowed),
		TH_TEST(version_string_matches_the_macros),
		TH_TEST(version_number_matches_the_macros),
	};
	return TH_RUN("common", tests);
}
