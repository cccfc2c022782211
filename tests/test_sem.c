/*
 * Tests of the weighted semaphore (cpattern/sem.h): try and blocking
 * acquires, strict FIFO order (a head that does not fit holds back smaller
 * requests behind it), a large request served while small ones keep
 * coming, waiters leaving on cancel or deadline without losing a permit or
 * their successors' turn, and 8 threads racing acquires against random
 * cancels with every permit accounted for at the end.
 */
#include "harness.h"

#include "testhooks.h"

#define GENEROUS (30 * CPAT_SEC)

static struct cpat_sem *mk(size_t cap)
{
	struct cpat_sem *s = NULL;
	assert_int_equal(cpat_sem_create(&s, cap), 0);
	assert_non_null(s);
	return s;
}

/* Polls until s has n queued waiters (a thread counts once its record is
 * in the queue). */
static void wait_waiters(struct cpat_sem *s, size_t n)
{
	int64_t end = cpat_now_ns() + GENEROUS;
	while (cpat__sem_waiters(s) != n && cpat_now_ns() < end)
		th_relax();
	assert_int_equal(cpat__sem_waiters(s), n);
}

/* One blocking acquire on its own thread. */
struct acq {
	pthread_t th;
	struct cpat_sem *s;
	size_t k;
	struct cpat_token *tok;
	int64_t deadline;
	_Atomic int done;
	_Atomic long seq; /* order of return among a test's acquirers */
	int rc;
};

static _Atomic long g_seq;

static void *acq_main(void *arg)
{
	struct acq *a = arg;
	a->rc = cpat_sem_acquire_until(a->s, a->k, a->tok, a->deadline);
	atomic_store(&a->seq, atomic_fetch_add(&g_seq, 1));
	atomic_store(&a->done, 1);
	return NULL;
}

/* Starts an acquire and returns once it is queued (the queue then holds
 * queued + 1 waiters). */
static void start_queued(struct acq *a, struct cpat_sem *s, size_t k,
			 struct cpat_token *tok, size_t queued)
{
	memset(a, 0, sizeof *a);
	a->s = s;
	a->k = k;
	a->tok = tok;
	a->deadline = CPAT_FOREVER;
	th_spawn(&a->th, acq_main, a);
	wait_waiters(s, queued + 1);
}

static void wait_done(struct acq *a)
{
	int64_t end = cpat_now_ns() + GENEROUS;
	while (!atomic_load(&a->done) && cpat_now_ns() < end)
		th_relax();
	assert_true(atomic_load(&a->done));
	th_join(a->th);
}

TH_TEST_FN(try_acquire_and_release_count_permits)
{
	(void)state;
	struct cpat_sem *s = mk(5);
	assert_int_equal(cpat_sem_available(s), 5);
	assert_int_equal(cpat_sem_try_acquire(s, 3), 0);
	assert_int_equal(cpat_sem_try_acquire(s, 3), -EAGAIN);
	assert_int_equal(cpat_sem_try_acquire(s, 2), 0);
	assert_int_equal(cpat_sem_available(s), 0);
	assert_int_equal(cpat_sem_release(s, 5), 0);
	assert_int_equal(cpat_sem_acquire(s, 5, NULL), 0);
	assert_int_equal(cpat_sem_release(s, 4), 0);
	assert_int_equal(cpat_sem_release(s, 1), 0);
	assert_int_equal(cpat_sem_available(s), 5);
	cpat_sem_destroy(s);
}

TH_TEST_FN(bad_arguments_are_einval_and_change_nothing)
{
	(void)state;
	struct cpat_sem *s = (struct cpat_sem *)&s;
	assert_int_equal(cpat_sem_create(NULL, 1), -EINVAL);
	assert_int_equal(cpat_sem_create(&s, 0), -EINVAL);
	assert_null(s);
	s = mk(4);
	assert_int_equal(cpat_sem_acquire(NULL, 1, NULL), -EINVAL);
	assert_int_equal(cpat_sem_acquire(s, 0, NULL), -EINVAL);
	assert_int_equal(cpat_sem_acquire(s, 5, NULL), -EINVAL);
	assert_int_equal(cpat_sem_acquire_until(s, 1, NULL, -2), -EINVAL);
	assert_int_equal(cpat_sem_try_acquire(NULL, 1), -EINVAL);
	assert_int_equal(cpat_sem_try_acquire(s, 0), -EINVAL);
	assert_int_equal(cpat_sem_try_acquire(s, 5), -EINVAL);
	assert_int_equal(cpat_sem_release(NULL, 1), -EINVAL);
	assert_int_equal(cpat_sem_release(s, 0), -EINVAL);
	/* More than acquired. */
	assert_int_equal(cpat_sem_release(s, 1), -EINVAL);
	assert_int_equal(cpat_sem_try_acquire(s, 2), 0);
	assert_int_equal(cpat_sem_release(s, 3), -EINVAL);
	assert_int_equal(cpat_sem_available(s), 2);
	assert_int_equal(cpat_sem_release(s, 2), 0);
	assert_int_equal(cpat_sem_available(s), 4);
	assert_int_equal(cpat_sem_available(NULL), 0);
	cpat_sem_destroy(s);
	cpat_sem_destroy(NULL);
}

TH_TEST_FN(deadline_and_fired_token_fail_without_taking)
{
	(void)state;
	struct cpat_sem *s = mk(2);
	struct cpat_token *tok;
	assert_int_equal(cpat_token_create(&tok, NULL), 0);
	assert_int_equal(cpat_token_cancel(tok), 1);
	/* Permits free, token fired: the token wins. */
	assert_int_equal(cpat_sem_acquire(s, 1, tok), -ECANCELED);
	assert_int_equal(cpat_sem_available(s), 2);
	/* A past deadline is a try that says -ETIMEDOUT. */
	assert_int_equal(cpat_sem_acquire_until(s, 2, NULL, 0), 0);
	assert_int_equal(cpat_sem_acquire_until(s, 1, NULL, 0), -ETIMEDOUT);
	int64_t d = cpat_now_ns() + 10 * CPAT_MSEC;
	assert_int_equal(cpat_sem_acquire_until(s, 1, NULL, d), -ETIMEDOUT);
	assert_true(cpat_now_ns() >= d);
	assert_int_equal(cpat__sem_waiters(s), 0);
	assert_int_equal(cpat_sem_release(s, 2), 0);
	assert_int_equal(cpat_sem_available(s), 2);
	cpat_token_unref(tok);
	cpat_sem_destroy(s);
}

TH_TEST_FN(a_waiting_head_holds_back_smaller_requests_behind_it)
{
	(void)state;
	struct cpat_sem *s = mk(10);
	assert_int_equal(cpat_sem_acquire(s, 9, NULL), 0); /* 1 free */
	struct acq large, small;
	start_queued(&large, s, 5, NULL, 0);
	/* One permit is free, but the large request waits first. */
	assert_int_equal(cpat_sem_try_acquire(s, 1), -EAGAIN);
	start_queued(&small, s, 1, NULL, 1);
	assert_int_equal(cpat_sem_release(s, 4), 0); /* 5 free: the head's */
	wait_done(&large);
	assert_int_equal(large.rc, 0);
	assert_int_equal(cpat__sem_waiters(s), 1);
	assert_int_equal(cpat_sem_available(s), 0);
	assert_int_equal(cpat_sem_release(s, 1), 0);
	wait_done(&small);
	assert_int_equal(small.rc, 0);
	assert_int_equal(cpat_sem_release(s, 4), 0);
	assert_int_equal(cpat_sem_release(s, 5), 0);
	assert_int_equal(cpat_sem_release(s, 1), 0);
	assert_int_equal(cpat_sem_available(s), 10);
	cpat_sem_destroy(s);
}

TH_TEST_FN(waiters_are_served_in_the_order_they_queued)
{
	(void)state;
	enum { N = 8 };
	struct cpat_sem *s = mk(3);
	assert_int_equal(cpat_sem_acquire(s, 3, NULL), 0);
	struct acq a[N];
	for (int i = 0; i < N; i++)
		start_queued(&a[i], s, 1 + (size_t)i % 3, NULL, (size_t)i);
	long first = atomic_load(&g_seq);
	for (int i = 0; i < N; i++) {
		/* Exactly what the head needs; nothing for the rest. */
		assert_int_equal(cpat_sem_release(s, a[i].k), 0);
		wait_done(&a[i]);
		assert_int_equal(a[i].rc, 0);
		assert_int_equal(atomic_load(&a[i].seq), first + i);
		assert_int_equal(cpat__sem_waiters(s), (size_t)(N - 1 - i));
	}
	/* Permits are not owned: whoever holds them, 3 are out. */
	assert_int_equal(cpat_sem_available(s), 0);
	assert_int_equal(cpat_sem_release(s, 3), 0);
	assert_int_equal(cpat_sem_available(s), 3);
	cpat_sem_destroy(s);
}

TH_TEST_FN(a_cancelled_waiter_gives_its_place_back_and_no_permit)
{
	(void)state;
	struct cpat_sem *s = mk(4);
	assert_int_equal(cpat_sem_acquire(s, 4, NULL), 0);
	struct cpat_token *ta;
	assert_int_equal(cpat_token_create(&ta, NULL), 0);
	struct acq head, behind;
	start_queued(&head, s, 3, ta, 0);
	start_queued(&behind, s, 1, NULL, 1);
	/* 1 free: not for the head, and the one behind must wait. */
	assert_int_equal(cpat_sem_release(s, 1), 0);
	assert_int_equal(cpat__sem_waiters(s), 2);
	/* The head leaves: the one behind now fits and is served. */
	assert_int_equal(cpat_token_cancel(ta), 1);
	wait_done(&head);
	assert_int_equal(head.rc, -ECANCELED);
	wait_done(&behind);
	assert_int_equal(behind.rc, 0);
	assert_int_equal(cpat_sem_available(s), 0);

	/* A waiter in the middle leaves: the next one keeps its turn. */
	struct cpat_token *tm;
	assert_int_equal(cpat_token_create(&tm, NULL), 0);
	struct acq a, m, c;
	start_queued(&a, s, 3, NULL, 0);
	start_queued(&m, s, 2, tm, 1);
	start_queued(&c, s, 1, NULL, 2);
	assert_int_equal(cpat_token_cancel(tm), 1);
	wait_done(&m);
	assert_int_equal(m.rc, -ECANCELED);
	assert_int_equal(cpat__sem_waiters(s), 2);
	assert_int_equal(cpat_sem_release(s, 3), 0); /* main's 3: a's */
	wait_done(&a);
	assert_int_equal(a.rc, 0);
	assert_int_equal(cpat_sem_release(s, 1), 0); /* behind's 1: c's */
	wait_done(&c);
	assert_int_equal(c.rc, 0);
	assert_int_equal(cpat_sem_release(s, 3), 0);
	assert_int_equal(cpat_sem_release(s, 1), 0);
	assert_int_equal(cpat_sem_available(s), 4);

	/* A deadline leaves the same way. */
	assert_int_equal(cpat_sem_acquire(s, 4, NULL), 0);
	struct acq d;
	memset(&d, 0, sizeof d);
	d.s = s;
	d.k = 1;
	d.deadline = cpat_now_ns() + 20 * CPAT_MSEC;
	th_spawn(&d.th, acq_main, &d);
	wait_done(&d);
	assert_int_equal(d.rc, -ETIMEDOUT);
	assert_int_equal(cpat__sem_waiters(s), 0);
	assert_int_equal(cpat_sem_release(s, 4), 0);
	assert_int_equal(cpat_sem_available(s), 4);
	cpat_token_unref(tm);
	cpat_token_unref(ta);
	cpat_sem_destroy(s);
}

/* Small requests in a loop, until told to stop. */
struct small {
	struct th_barrier *start;
	struct cpat_sem *s;
	_Atomic int *stop;
	unsigned seed;
	_Atomic long acquired;
	int bad;
};

static void *small_main(void *arg)
{
	struct small *sm = arg;
	struct th_rng rng;
	th_rng_init(&rng, sm->seed);
	th_barrier_wait(sm->start);
	while (!atomic_load(sm->stop)) {
		size_t k = 1 + (size_t)th_rng_below(&rng, 3);
		if (cpat_sem_acquire(sm->s, k, NULL) != 0) {
			sm->bad++;
			break;
		}
		atomic_fetch_add_explicit(&sm->acquired, 1,
					  memory_order_relaxed);
		th_pause((unsigned)th_rng_below(&rng, 400));
		if (cpat_sem_release(sm->s, k) != 0)
			sm->bad++;
	}
	return NULL;
}

TH_TEST_FN(a_large_request_is_served_while_small_ones_keep_coming)
{
	(void)state;
	enum { NS = 4, CAP = 8 };
	struct cpat_sem *s = mk(CAP);
	_Atomic int stop = 0;
	struct th_barrier start;
	th_barrier_init(&start, NS + 1);
	struct small sm[NS];
	pthread_t th[NS];
	for (int i = 0; i < NS; i++) {
		sm[i] = (struct small){&start, s, &stop, 40u + (unsigned)i,
				       0,      0};
		th_spawn(&th[i], small_main, &sm[i]);
	}
	th_barrier_wait(&start);
	long rounds = SIZE(200, 30), before = 0;
	for (long r = 0; r < rounds; r++) {
		/* Every round: all the permits at once, while the small ones
		 * hold 1 to 3 each, most of the time. */
		int rc = cpat_sem_acquire_until(s, CAP, NULL,
						cpat_now_ns() + GENEROUS);
		assert_int_equal(rc, 0);
		assert_int_equal(cpat_sem_available(s), 0);
		assert_int_equal(cpat_sem_release(s, CAP), 0);
		/* Let the small ones run between rounds. */
		long now_acq = 0;
		int64_t end = cpat_now_ns() + GENEROUS;
		do {
			now_acq = 0;
			for (int i = 0; i < NS; i++)
				now_acq += atomic_load_explicit(
					&sm[i].acquired, memory_order_relaxed);
			if (now_acq > before)
				break;
			th_relax();
		} while (cpat_now_ns() < end);
		before = now_acq;
	}
	atomic_store(&stop, 1);
	long total = 0;
	for (int i = 0; i < NS; i++) {
		th_join(th[i]);
		assert_int_equal(sm[i].bad, 0);
		total += atomic_load(&sm[i].acquired);
	}
	fprintf(stderr, "# %ld large rounds, %ld small acquires\n", rounds,
		total);
	assert_true(total >= rounds);
	assert_int_equal(cpat_sem_available(s), CAP);
	th_barrier_destroy(&start);
	cpat_sem_destroy(s);
}

/* The racing test: each worker's current token, for the canceller. */
struct slot {
	pthread_mutex_t mu;
	struct cpat_token *tok;
};

struct racer {
	struct th_barrier *start;
	struct cpat_sem *s;
	struct slot *slot;
	_Atomic long *held;
	unsigned seed;
	long iters;
	long ok, cancelled, timedout;
	int bad;
};

enum { RCAP = 6 };

static void *racer_main(void *arg)
{
	struct racer *r = arg;
	struct th_rng rng;
	th_rng_init(&rng, r->seed);
	th_barrier_wait(r->start);
	for (long i = 0; i < r->iters; i++) {
		struct cpat_token *tok = NULL;
		int rc;
		if (th_rng_below(&rng, 3) == 0)
			rc = cpat_token_create_deadline(
				&tok, NULL,
				cpat_now_ns() +
					(int64_t)th_rng_below(&rng, 300) *
						CPAT_USEC);
		else
			rc = cpat_token_create(&tok, NULL);
		if (rc != 0) {
			r->bad++;
			break;
		}
		pthread_mutex_lock(&r->slot->mu);
		r->slot->tok = cpat_token_ref(tok);
		pthread_mutex_unlock(&r->slot->mu);
		size_t k = 1 + (size_t)th_rng_below(&rng, RCAP);
		int64_t dl = th_rng_below(&rng, 4) == 0
				     ? cpat_now_ns() + (int64_t)th_rng_below(
							       &rng, 200) *
							       CPAT_USEC
				     : CPAT_FOREVER;
		rc = cpat_sem_acquire_until(r->s, k, tok, dl);
		if (rc == 0) {
			long h = atomic_fetch_add(r->held, (long)k) + (long)k;
			if (h > RCAP)
				r->bad++; /* more permits out than exist */
			th_pause((unsigned)th_rng_below(&rng, 300));
			atomic_fetch_sub(r->held, (long)k);
			if (cpat_sem_release(r->s, k) != 0)
				r->bad++;
			r->ok++;
		} else if (rc == -ECANCELED) {
			r->cancelled++;
		} else if (rc == -ETIMEDOUT) {
			r->timedout++;
		} else {
			r->bad++;
		}
		pthread_mutex_lock(&r->slot->mu);
		cpat_token_unref(r->slot->tok);
		r->slot->tok = NULL;
		pthread_mutex_unlock(&r->slot->mu);
		cpat_token_unref(tok);
	}
	return NULL;
}

struct canceller {
	struct slot *slots;
	int n;
	_Atomic int *stop;
	long cancels;
};

static void *canceller_main(void *arg)
{
	struct canceller *c = arg;
	struct th_rng rng;
	th_rng_init(&rng, 999);
	while (!atomic_load(c->stop)) {
		struct slot *sl = &c->slots[th_rng_below(&rng, (uint64_t)c->n)];
		pthread_mutex_lock(&sl->mu);
		if (sl->tok && cpat_token_cancel(sl->tok) == 1)
			c->cancels++;
		pthread_mutex_unlock(&sl->mu);
		th_pause((unsigned)th_rng_below(&rng, 2000));
	}
	return NULL;
}

TH_TEST_FN(eight_threads_racing_cancels_conserve_every_permit)
{
	(void)state;
	enum { NT = 8 };
	struct cpat_sem *s = mk(RCAP);
	_Atomic long held = 0;
	_Atomic int stop = 0;
	struct slot slots[NT];
	struct racer r[NT];
	pthread_t th[NT], ct;
	struct th_barrier start;
	th_barrier_init(&start, NT);
	for (int i = 0; i < NT; i++) {
		pthread_mutex_init(&slots[i].mu, NULL);
		slots[i].tok = NULL;
		r[i] = (struct racer){.start = &start,
				      .s = s,
				      .slot = &slots[i],
				      .held = &held,
				      .seed = 7u + (unsigned)i,
				      .iters = SIZE(2000, 200)};
	}
	struct canceller c = {slots, NT, &stop, 0};
	th_spawn(&ct, canceller_main, &c);
	for (int i = 0; i < NT; i++)
		th_spawn(&th[i], racer_main, &r[i]);
	long ok = 0, cancelled = 0, timedout = 0;
	for (int i = 0; i < NT; i++) {
		th_join(th[i]);
		assert_int_equal(r[i].bad, 0);
		ok += r[i].ok;
		cancelled += r[i].cancelled;
		timedout += r[i].timedout;
	}
	atomic_store(&stop, 1);
	th_join(ct);
	fprintf(stderr,
		"# %ld acquired, %ld cancelled, %ld timed out, %ld cancels\n",
		ok, cancelled, timedout, c.cancels);
	assert_int_equal(ok + cancelled + timedout, NT * r[0].iters);
	assert_true(ok > 0);
	/* Every permit back, nobody left in the queue. */
	assert_int_equal(cpat_sem_available(s), RCAP);
	assert_int_equal(cpat__sem_waiters(s), 0);
	assert_int_equal(cpat_sem_try_acquire(s, RCAP), 0);
	assert_int_equal(cpat_sem_release(s, RCAP), 0);
	for (int i = 0; i < NT; i++)
		pthread_mutex_destroy(&slots[i].mu);
	th_barrier_destroy(&start);
	cpat_sem_destroy(s);
}

TH_TEST_FN(acquire_and_release_allocate_nothing)
{
	(void)state;
	th_alloc_install();
	struct cpat_sem *s = mk(2);
	struct cpat_token *tok;
	assert_int_equal(cpat_token_create(&tok, NULL), 0);
	long before = th_alloc_count();
	for (int i = 0; i < 1000; i++) {
		assert_int_equal(cpat_sem_acquire(s, 2, tok), 0);
		assert_int_equal(cpat_sem_try_acquire(s, 1), -EAGAIN);
		assert_int_equal(cpat_sem_acquire_until(s, 1, tok, 0),
				 -ETIMEDOUT);
		assert_int_equal(cpat_sem_release(s, 2), 0);
	}
	assert_int_equal(th_alloc_count(), before);
	cpat_token_unref(tok);
	cpat_sem_destroy(s);
	th_alloc_uninstall();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		TH_TEST(try_acquire_and_release_count_permits),
		TH_TEST(bad_arguments_are_einval_and_change_nothing),
		TH_TEST(deadline_and_fired_token_fail_without_taking),
		TH_TEST(a_waiting_head_holds_back_smaller_requests_behind_it),
		TH_TEST(waiters_are_served_in_the_order_they_queued),
		TH_TEST(a_cancelled_waiter_gives_its_place_back_and_no_permit),
		TH_TEST(a_large_request_is_served_while_small_ones_keep_coming),
		TH_TEST(eight_threads_racing_cancels_conserve_every_permit),
		TH_TEST(acquire_and_release_allocate_nothing),
	};
	return TH_RUN("sem", tests);
}
