/*
 * Tests of the token-bucket rate limiter (cpattern/rate.h): the burst,
 * allow, reserve and cancel, waits never early, deadlines and cancels that
 * give the token back, set_rate, no allocation, and the long-run rate.
 *
 * The long-run test asserts the limiter's promise tightly (never more than
 * burst + rate * elapsed admitted, whatever the load) and the lower side
 * loosely (a loaded machine only admits fewer); it prints the measured
 * error.
 */
#include "harness.h"

#include "testhooks.h"

#define GENEROUS (30 * CPAT_SEC)

static struct cpat_rate *mk(double rate, size_t burst)
{
	struct cpat_rate *l = NULL;
	assert_int_equal(cpat_rate_create(&l, rate, burst), 0);
	assert_non_null(l);
	return l;
}

TH_TEST_FN(bad_arguments_are_einval)
{
	(void)state;
	struct cpat_rate *l = (struct cpat_rate *)&l;
	assert_int_equal(cpat_rate_create(NULL, 1, 1), -EINVAL);
	assert_int_equal(cpat_rate_create(&l, 0, 1), -EINVAL);
	assert_null(l);
	assert_int_equal(cpat_rate_create(&l, -1, 1), -EINVAL);
	assert_int_equal(cpat_rate_create(&l, 1.0 / 0.0, 1), -EINVAL);
	assert_int_equal(cpat_rate_create(&l, 0.0 / 0.0, 1), -EINVAL);
	assert_int_equal(cpat_rate_create(&l, 1e-320, 1), -EINVAL);
	assert_int_equal(cpat_rate_create(&l, 1, 0), -EINVAL);
	l = mk(10, 2);
	struct cpat_rate_reservation res;
	assert_int_equal(cpat_rate_allow(NULL), -EINVAL);
	assert_int_equal(cpat_rate_wait(NULL, NULL), -EINVAL);
	assert_int_equal(cpat_rate_wait_until(l, NULL, -2), -EINVAL);
	assert_int_equal(cpat_rate_reserve(NULL, 1, &res), -EINVAL);
	assert_int_equal(cpat_rate_reserve(l, 1, NULL), -EINVAL);
	assert_int_equal(cpat_rate_reserve(l, 0, &res), -EINVAL);
	assert_int_equal(cpat_rate_reserve(l, 3, &res), -EINVAL);
	assert_int_equal(cpat_rate_cancel(NULL, &res), -EINVAL);
	assert_int_equal(cpat_rate_cancel(l, NULL), -EINVAL);
	assert_int_equal(cpat_rate_set_rate(NULL, 1), -EINVAL);
	assert_int_equal(cpat_rate_set_rate(l, 0), -EINVAL);
	assert_int_equal(cpat_rate_set_rate(l, -3), -EINVAL);
	/* Nothing was taken by the failed calls. */
	assert_int_equal(cpat_rate_allow(l), 1);
	assert_int_equal(cpat_rate_allow(l), 1);
	cpat_rate_destroy(l);
	cpat_rate_destroy(NULL);
}

TH_TEST_FN(the_burst_is_honoured_then_allow_refuses)
{
	(void)state;
	/* One token per 1000 s: no refill within the test. */
	struct cpat_rate *l = mk(0.001, 5);
	for (int i = 0; i < 5; i++)
		assert_int_equal(cpat_rate_allow(l), 1);
	assert_int_equal(cpat_rate_allow(l), 0);
	assert_int_equal(cpat_rate_allow(l), 0);
	struct cpat_rate_reservation res;
	assert_int_equal(cpat_rate_reserve(l, 1, &res), 0);
	assert_true(res.delay_ns >= 999 * CPAT_SEC);
	assert_true(res.delay_ns <= 1000 * CPAT_SEC);
	assert_int_equal(res.n, 1);
	cpat_rate_destroy(l);

	/* A burst of n at once by reserve. */
	l = mk(0.001, 4);
	assert_int_equal(cpat_rate_reserve(l, 4, &res), 0);
	assert_int_equal(res.delay_ns, 0);
	assert_int_equal(cpat_rate_allow(l), 0);
	cpat_rate_destroy(l);
}

TH_TEST_FN(cancel_of_a_reservation_gives_its_tokens_back)
{
	(void)state;
	const int64_t T = 1000 * CPAT_SEC;
	struct cpat_rate *l = mk(0.001, 3);
	struct cpat_rate_reservation now3, later2, last1;
	assert_int_equal(cpat_rate_reserve(l, 3, &now3), 0);
	assert_int_equal(now3.delay_ns, 0);
	assert_int_equal(cpat_rate_reserve(l, 2, &later2), 0);
	assert_true(later2.delay_ns > 2 * T - CPAT_SEC);
	/* The last reservation goes back whole. */
	assert_int_equal(cpat_rate_cancel(l, &later2), 0);
	assert_int_equal(cpat_rate_reserve(l, 1, &last1), 0);
	assert_true(last1.delay_ns <= T);
	assert_true(last1.delay_ns > T - CPAT_SEC);
	/* A reservation whose time has come gives nothing back. */
	assert_int_equal(cpat_rate_cancel(l, &now3), 0);
	assert_int_equal(cpat_rate_allow(l), 0);
	/* One followed by another: only what the later one does not hold. */
	struct cpat_rate_reservation a, b, c;
	assert_int_equal(cpat_rate_reserve(l, 2, &a), 0); /* T..3T */
	assert_int_equal(cpat_rate_reserve(l, 1, &b), 0); /* ..4T */
	assert_int_equal(cpat_rate_cancel(l, &a), 0);     /* 1 back */
	assert_int_equal(cpat_rate_reserve(l, 1, &c), 0);
	assert_true(c.act_ns - b.act_ns <= CPAT_SEC);
	assert_true(c.act_ns - b.act_ns >= -CPAT_SEC);
	cpat_rate_destroy(l);
}

TH_TEST_FN(wait_is_never_early_and_waiters_are_spaced_by_the_rate)
{
	(void)state;
	const double R = 200; /* 5 ms per token */
	const int64_t T = (int64_t)(1e9 / R);
	struct cpat_rate *l = mk(R, 1);
	int64_t t0 = cpat_now_ns();
	assert_int_equal(cpat_rate_wait(l, NULL), 0); /* the burst */
	for (int i = 1; i <= 5; i++) {
		assert_int_equal(cpat_rate_wait(l, NULL), 0);
		assert_true(cpat_now_ns() >= t0 + i * T);
	}
	cpat_rate_destroy(l);
}

TH_TEST_FN(a_wait_that_cannot_make_its_deadline_fails_at_once_taking_nothing)
{
	(void)state;
	struct cpat_rate *l = mk(1, 1); /* 1 s per token */
	assert_int_equal(cpat_rate_allow(l), 1);
	int64_t t = cpat_now_ns();
	assert_int_equal(cpat_rate_wait_until(l, NULL, t + 10 * CPAT_MSEC),
			 -ETIMEDOUT);
	/* At once: long before the token's second. */
	assert_true(cpat_now_ns() - t < 900 * CPAT_MSEC);
	struct cpat_rate_reservation res;
	assert_int_equal(cpat_rate_reserve(l, 1, &res), 0);
	assert_true(res.delay_ns <= CPAT_SEC);
	cpat_rate_destroy(l);
}

struct waiter {
	pthread_t th;
	struct cpat_rate *l;
	struct cpat_token *tok;
	int rc;
};

static void *wait_main(void *arg)
{
	struct waiter *w = arg;
	w->rc = cpat_rate_wait(w->l, w->tok);
	return NULL;
}

static void wait_waiting(struct cpat_rate *l, size_t n)
{
	int64_t end = cpat_now_ns() + GENEROUS;
	while (cpat__rate_waiting(l) != n && cpat_now_ns() < end)
		th_relax();
	assert_int_equal(cpat__rate_waiting(l), n);
}

TH_TEST_FN(cancel_while_waiting_is_ecanceled_and_gives_the_token_back)
{
	(void)state;
	const int64_t T = 10 * CPAT_SEC;
	struct cpat_rate *l = mk(0.1, 1);
	assert_int_equal(cpat_rate_allow(l), 1);
	struct waiter w = {.l = l};
	assert_int_equal(cpat_token_create(&w.tok, NULL), 0);
	th_spawn(&w.th, wait_main, &w);
	wait_waiting(l, 1);
	assert_int_equal(cpat_token_cancel(w.tok), 1);
	th_join(w.th);
	assert_int_equal(w.rc, -ECANCELED);
	assert_int_equal(cpat__rate_waiting(l), 0);
	/* Its token is back: the next one is due within T of the allow,
	 * not 2 T. */
	struct cpat_rate_reservation res;
	assert_int_equal(cpat_rate_reserve(l, 1, &res), 0);
	assert_true(res.delay_ns <= T);
	assert_true(res.delay_ns > 0);
	assert_int_equal(cpat_rate_cancel(l, &res), 0);
	cpat_token_unref(w.tok);

	/* A deadline token: -ETIMEDOUT, and the token back too. */
	assert_int_equal(cpat_token_create_deadline(
				 &w.tok, NULL, cpat_now_ns() + 20 * CPAT_MSEC),
			 0);
	th_spawn(&w.th, wait_main, &w);
	th_join(w.th);
	assert_int_equal(w.rc, -ETIMEDOUT);
	assert_int_equal(cpat_rate_reserve(l, 1, &res), 0);
	assert_true(res.delay_ns <= T);
	cpat_token_unref(w.tok);

	/* A token fired before the call: nothing taken. */
	struct cpat_token *fired;
	assert_int_equal(cpat_token_create(&fired, NULL), 0);
	assert_int_equal(cpat_token_cancel(fired), 1);
	struct cpat_rate *m = mk(0.1, 1);
	assert_int_equal(cpat_rate_wait(m, fired), -ECANCELED);
	assert_int_equal(cpat_rate_allow(m), 1);
	cpat_token_unref(fired);
	cpat_rate_destroy(m);
	cpat_rate_destroy(l);
}

TH_TEST_FN(set_rate_applies_from_now_on)
{
	(void)state;
	struct cpat_rate *l = mk(0.001, 1);
	assert_int_equal(cpat_rate_allow(l), 1);
	struct cpat_rate_reservation res;
	assert_int_equal(cpat_rate_reserve(l, 1, &res), 0);
	assert_true(res.delay_ns > 900 * CPAT_SEC);
	assert_int_equal(cpat_rate_cancel(l, &res), 0);
	assert_int_equal(cpat_rate_set_rate(l, 1000), 0);
	assert_int_equal(cpat_rate_reserve(l, 1, &res), 0);
	assert_true(res.delay_ns <= CPAT_MSEC);
	/* And down again: a debt is kept in the new unit. */
	assert_int_equal(cpat_rate_set_rate(l, 0.001), 0);
	assert_int_equal(cpat_rate_allow(l), 0);
	cpat_rate_destroy(l);
}

TH_TEST_FN(allow_wait_and_reserve_allocate_nothing)
{
	(void)state;
	th_alloc_install();
	struct cpat_rate *l = mk(1e6, 1000);
	struct cpat_token *tok;
	assert_int_equal(cpat_token_create(&tok, NULL), 0);
	long before = th_alloc_count();
	struct cpat_rate_reservation res;
	for (int i = 0; i < 1000; i++) {
		assert_true(cpat_rate_allow(l) >= 0);
		assert_int_equal(cpat_rate_wait(l, tok), 0);
		assert_int_equal(cpat_rate_reserve(l, 1, &res), 0);
		assert_int_equal(cpat_rate_cancel(l, &res), 0);
	}
	assert_int_equal(th_alloc_count(), before);
	cpat_token_unref(tok);
	cpat_rate_destroy(l);
	th_alloc_uninstall();
}

struct pacer {
	struct th_barrier *start;
	struct cpat_rate *l;
	int64_t end;
	long admitted;
	int64_t first, last;
	int bad;
};

static void *pacer_main(void *arg)
{
	struct pacer *p = arg;
	th_barrier_wait(p->start);
	while (cpat_now_ns() < p->end) {
		if (cpat_rate_wait(p->l, NULL) != 0) {
			p->bad++;
			break;
		}
		/* After the return: the event's time is before this. */
		p->last = cpat_now_ns();
		if (p->admitted++ == 0)
			p->first = p->last;
	}
	return NULL;
}

TH_TEST_FN(the_long_run_rate_is_the_set_rate)
{
	(void)state;
	enum { NT = 2 };
	const double R = 500;
	const size_t B = 10;
	const int64_t D = 2 * CPAT_SEC;
	struct th_barrier start;
	th_barrier_init(&start, NT + 1);
	struct pacer p[NT];
	pthread_t th[NT];
	for (int i = 0; i < NT; i++) {
		p[i] = (struct pacer){.start = &start};
		th_spawn(&th[i], pacer_main, &p[i]);
	}
	/* Created full just before the start: t0 is before its creation. */
	int64_t t0 = cpat_now_ns();
	struct cpat_rate *l = mk(R, B);
	for (int i = 0; i < NT; i++) {
		p[i].l = l;
		p[i].end = t0 + D;
	}
	th_barrier_wait(&start);
	long n = 0;
	int64_t last = t0, first = INT64_MAX;
	for (int i = 0; i < NT; i++) {
		th_join(th[i]);
		assert_int_equal(p[i].bad, 0);
		n += p[i].admitted;
		if (p[i].last > last)
			last = p[i].last;
		if (p[i].admitted && p[i].first < first)
			first = p[i].first;
	}
	assert_true(n > (long)B);
	double elapsed = (double)(last - t0) / 1e9;
	double bound = R * elapsed + (double)B;
	/* The steady rate: the events after the burst, over the time from
	 * the first admission (the burst's) to the last. */
	double steady =
		((double)n - (double)B) / ((double)(last - first) / 1e9);
	fprintf(stderr,
		"# rate: set %.1f/s, burst %zu: admitted %ld, bound %.1f "
		"(burst + rate x %.4f s since creation); steady rate %.2f/s, "
		"error %+.3f%%\n",
		R, B, n, bound, elapsed, steady, (steady / R - 1) * 100);
	/* Tight: the limiter never admits more, whatever the load. */
	assert_true((double)n <= bound + 1);
	/* Loose: a loaded machine only admits fewer. */
	assert_true((double)n >= 0.5 * R * (double)D / 1e9);
	th_barrier_destroy(&start);
	cpat_rate_destroy(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		TH_TEST(bad_arguments_are_einval),
		TH_TEST(the_burst_is_honoured_then_allow_refuses),
		TH_TEST(cancel_of_a_reservation_gives_its_tokens_back),
		TH_TEST(wait_is_never_early_and_waiters_are_spaced_by_the_rate),
		TH_TEST(a_wait_that_cannot_make_its_deadline_fails_at_once_taking_nothing),
		TH_TEST(cancel_while_waiting_is_ecanceled_and_gives_the_token_back),
		TH_TEST(set_rate_applies_from_now_on),
		TH_TEST(allow_wait_and_reserve_allocate_nothing),
		TH_TEST(the_long_run_rate_is_the_set_rate),
	};
	return TH_RUN("rate", tests);
}
