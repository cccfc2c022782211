/*
 * Tests of timers and tickers (cpattern/timer.h): firing never before the
 * deadline, stop, reset, the ticker's dropped ticks, select, many timers
 * in order without allocation, destroy while armed, fork, bad arguments.
 *
 * Timing asserts are one-sided: a fire is never early; "late" is only
 * bounded by GENEROUS, which a passing run never comes near.
 *
 * The counting allocator of the harness is installed before the first
 * timer and never removed.
 */
#include "harness.h"

#include <poll.h>
#include <sys/wait.h>

#define GENEROUS (30 * CPAT_SEC)

static struct cpat_timer *mk_timer(int64_t deadline)
{
	struct cpat_timer *t = NULL;
	assert_int_equal(cpat_timer_create(&t, deadline), 0);
	assert_non_null(t);
	assert_non_null(cpat_timer_chan(t));
	return t;
}

static struct cpat_timer *mk_ticker(int64_t period)
{
	struct cpat_timer *t = NULL;
	assert_int_equal(cpat_ticker_create(&t, period), 0);
	assert_non_null(t);
	return t;
}

/* Receives the next fire, waiting at most GENEROUS. */
static int64_t recv_fire(struct cpat_timer *t)
{
	int64_t v = -1;
	assert_int_equal(cpat_chan_recv_until(cpat_timer_chan(t), &v, NULL,
					      cpat_now_ns() + GENEROUS),
			 0);
	return v;
}

static int try_fire(struct cpat_timer *t, int64_t *v)
{
	return cpat_chan_try_recv(cpat_timer_chan(t), v);
}

/* Waits on the clock until t (the point of a test of a slow reader, not a
 * synchronisation). */
static void wait_until(int64_t t)
{
	struct cpat_chan *never;
	int64_t v;
	assert_int_equal(cpat_chan_create(&never, sizeof v, 1), 0);
	assert_int_equal(cpat_chan_recv_until(never, &v, NULL, t), -ETIMEDOUT);
	cpat_chan_destroy(never);
}

/* Runs first: the timer thread is not running yet. */
TH_TEST_FN(timer_thread_failure_is_eagain_then_recovers)
{
	(void)state;
	struct cpat_timer *t = (struct cpat_timer *)&t;
	long live = th_alloc_live();
	cpat__test_fail_thread_at(1, true);
	assert_int_equal(cpat_timer_create(&t, cpat_now_ns() + CPAT_MSEC),
			 -EAGAIN);
	assert_null(t);
	t = (struct cpat_timer *)&t;
	assert_int_equal(cpat_ticker_create(&t, CPAT_MSEC), -EAGAIN);
	assert_null(t);
	cpat__test_fail_thread_at(0, false);
	assert_int_equal(th_alloc_live(), live);
	t = mk_timer(cpat_now_ns() + CPAT_MSEC);
	assert_true(recv_fire(t) > 0);
	cpat_timer_destroy(t);
}

TH_TEST_FN(timer_fires_not_before_its_deadline)
{
	(void)state;
	for (int i = 0; i < 5; i++) {
		int64_t d = cpat_now_ns() + (1 + i * 5) * CPAT_MSEC;
		struct cpat_timer *t = mk_timer(d);
		int64_t v = recv_fire(t);
		int64_t now = cpat_now_ns();
		assert_true(v >= d);
		assert_true(now >= d);
		assert_true(v <= now);
		/* One-shot: nothing more. */
		assert_int_equal(try_fire(t, &v), -EAGAIN);
		assert_int_equal(cpat_timer_stop(t), 0);
		cpat_timer_destroy(t);
	}
}

TH_TEST_FN(past_deadline_fires_at_once_and_forever_makes_a_stopped_timer)
{
	(void)state;
	int64_t before = cpat_now_ns();
	struct cpat_timer *t = mk_timer(before - CPAT_MSEC);
	int64_t v = 0;
	assert_int_equal(try_fire(t, &v), 0);
	assert_true(v >= before);
	assert_int_equal(cpat_timer_stop(t), 0);
	cpat_timer_destroy(t);

	t = mk_timer(CPAT_FOREVER);
	assert_int_equal(cpat_timer_stop(t), 0);
	assert_int_equal(try_fire(t, &v), -EAGAIN);
	int64_t d = cpat_now_ns() + 2 * CPAT_MSEC;
	assert_int_equal(cpat_timer_reset(t, d), 0);
	assert_true(recv_fire(t) >= d);
	cpat_timer_destroy(t);
}

TH_TEST_FN(stop_before_fire_prevents_it)
{
	(void)state;
	int64_t d = cpat_now_ns() + 20 * CPAT_MSEC;
	struct cpat_timer *t = mk_timer(d);
	assert_int_equal(cpat_timer_stop(t), 1);
	assert_int_equal(cpat_timer_stop(t), 0);
	int64_t v;
	/* Well past the deadline: still nothing. */
	assert_int_equal(cpat_chan_recv_until(cpat_timer_chan(t), &v, NULL,
					      d + 30 * CPAT_MSEC),
			 -ETIMEDOUT);
	cpat_timer_destroy(t);
}

TH_TEST_FN(reset_rearms_a_fired_timer_and_moves_an_armed_one)
{
	(void)state;
	struct cpat_timer *t = mk_timer(cpat_now_ns() + CPAT_MSEC);
	(void)recv_fire(t);
	/* Fired: reset says nothing was pending, and arms it again. */
	int64_t d = cpat_now_ns() + 5 * CPAT_MSEC;
	assert_int_equal(cpat_timer_reset(t, d), 0);
	assert_true(recv_fire(t) >= d);

	/* Armed: reset cancels the pending fire, and the timer fires only
	 * for the new deadline. */
	assert_int_equal(cpat_timer_reset(t, cpat_now_ns() + GENEROUS), 0);
	int64_t d2 = cpat_now_ns() + 40 * CPAT_MSEC;
	assert_int_equal(cpat_timer_reset(t, d2), 1);
	int64_t v = recv_fire(t);
	assert_true(v >= d2);
	assert_int_equal(try_fire(t, &v), -EAGAIN);

	/* Reset with CPAT_FOREVER stops it. */
	assert_int_equal(cpat_timer_reset(t, cpat_now_ns() + GENEROUS), 0);
	assert_int_equal(cpat_timer_reset(t, CPAT_FOREVER), 1);
	assert_int_equal(cpat_timer_stop(t), 0);
	cpat_timer_destroy(t);
}

TH_TEST_FN(a_value_in_the_channel_stays_after_stop_and_reset)
{
	(void)state;
	int64_t d = cpat_now_ns() + CPAT_MSEC;
	struct cpat_timer *t = mk_timer(d);
	/* Wait until it has fired without taking the value. */
	int64_t end = cpat_now_ns() + GENEROUS;
	while (cpat_chan_len(cpat_timer_chan(t)) == 0 && cpat_now_ns() < end)
		th_relax();
	assert_int_equal(cpat_chan_len(cpat_timer_chan(t)), 1);
	assert_int_equal(cpat_timer_stop(t), 0);
	assert_int_equal(cpat_timer_reset(t, cpat_now_ns() + GENEROUS), 0);
	int64_t v;
	assert_int_equal(try_fire(t, &v), 0);
	assert_true(v >= d);
	assert_int_equal(cpat_timer_stop(t), 1);
	/* Destroying a timer with a value in its channel frees it (ASan). */
	assert_int_equal(cpat_timer_reset(t, cpat_now_ns() - 1), 0);
	assert_int_equal(cpat_chan_len(cpat_timer_chan(t)), 1);
	cpat_timer_destroy(t);
}

TH_TEST_FN(ticker_ticks_on_its_period_and_never_early)
{
	(void)state;
	const int64_t P = 5 * CPAT_MSEC;
	int64_t t0 = cpat_now_ns();
	struct cpat_timer *t = mk_ticker(P);
	int64_t prev = 0;
	for (int k = 1; k <= 4; k++) {
		int64_t v = recv_fire(t);
		/* The k-th received tick is at least the k-th point of the
		 * grid (ticks may be skipped, never early). */
		assert_true(v >= t0 + k * P);
		assert_true(v > prev);
		prev = v;
	}
	assert_int_equal(cpat_timer_stop(t), 1);
	assert_int_equal(cpat_timer_stop(t), 0);
	cpat_timer_destroy(t);
}

TH_TEST_FN(ticker_drops_missed_ticks_and_keeps_the_latest)
{
	(void)state;
	const int64_t P = (SANITIZED ? 60 : 40) * CPAT_MSEC;
	int64_t t0 = cpat_now_ns();
	struct cpat_timer *t = mk_ticker(P);
	/* A slow reader: 5 periods without receiving. */
	wait_until(t0 + 5 * P + P / 2);
	int64_t v[8];
	int n = 0;
	while (n < 8 && try_fire(t, &v[n]) == 0)
		n++;
	fprintf(stderr, "# after 5 periods: %d tick(s), the first at %.1f P\n",
		n, n ? (double)(v[0] - t0) / (double)P : 0.0);
	/* One, not five (two if the next came while draining). */
	assert_in_range(n, 1, 2);
	/* The latest, not the first: the first tick was at t0 + P, and the
	 * thread had three more periods to replace it. */
	assert_true(v[0] >= t0 + 2 * P);
	/* Then the next, one period on the grid later. */
	int64_t w = recv_fire(t);
	assert_true(w > v[n - 1]);
	assert_true(w >= t0 + 6 * P);
	cpat_timer_destroy(t);
}

TH_TEST_FN(ticker_reset_changes_the_period_and_stop_halts_it)
{
	(void)state;
	struct cpat_timer *t = mk_ticker(3600 * CPAT_SEC);
	int64_t r = cpat_now_ns();
	assert_int_equal(cpat_timer_reset(t, 2 * CPAT_MSEC), 1);
	int64_t a = recv_fire(t), b = recv_fire(t);
	assert_true(a >= r + 2 * CPAT_MSEC);
	assert_true(b > a);
	assert_int_equal(cpat_timer_stop(t), 1);
	int64_t v;
	(void)try_fire(t, &v); /* a tick between b and the stop */
	assert_int_equal(cpat_chan_recv_until(cpat_timer_chan(t), &v, NULL,
					      cpat_now_ns() + 10 * CPAT_MSEC),
			 -ETIMEDOUT);
	/* Reset restarts a stopped ticker. */
	assert_int_equal(cpat_timer_reset(t, CPAT_MSEC), 0);
	(void)recv_fire(t);
	cpat_timer_destroy(t);
}

TH_TEST_FN(select_over_a_timer_and_a_channel)
{
	(void)state;
	struct cpat_chan *data;
	assert_int_equal(cpat_chan_create(&data, sizeof(int), 4), 0);
	int64_t d = cpat_now_ns() + 10 * CPAT_MSEC;
	struct cpat_timer *t = mk_timer(d);
	int x = 0;
	int64_t at = 0;
	struct cpat_select_case c[2] = {
		{.ch = data, .op = CPAT_SELECT_RECV, .elem = &x},
		{.ch = cpat_timer_chan(t), .op = CPAT_SELECT_RECV, .elem = &at},
	};
	/* Nothing on the data channel: the timer's case, not before d. */
	assert_int_equal(cpat_chan_select(c, 2, NULL, cpat_now_ns() + GENEROUS),
			 1);
	assert_int_equal(c[1].rc, 0);
	assert_true(at >= d);
	assert_true(cpat_now_ns() >= d);
	/* Data ready, timer far: the data case. */
	assert_int_equal(cpat_timer_reset(t, cpat_now_ns() + GENEROUS), 0);
	int y = 7;
	assert_int_equal(cpat_chan_send(data, &y, NULL), 0);
	assert_int_equal(cpat_chan_select(c, 2, NULL, cpat_now_ns() + GENEROUS),
			 0);
	assert_int_equal(x, 7);
	/* A ticker in a select loop: a receiver blocked in select is woken
	 * by each tick. */
	struct cpat_timer *tk = mk_ticker(2 * CPAT_MSEC);
	c[1].ch = cpat_timer_chan(tk);
	for (int i = 0; i < 3; i++)
		assert_int_equal(
			cpat_chan_select(c, 2, NULL, cpat_now_ns() + GENEROUS),
			1);
	cpat_timer_destroy(tk);
	cpat_timer_destroy(t);
	cpat_chan_destroy(data);
}

struct order {
	int64_t deadline;
	int64_t fired;
	struct cpat_timer *t;
};

static int by_deadline(const void *a, const void *b)
{
	const struct order *x = a, *y = b;
	return (x->deadline > y->deadline) - (x->deadline < y->deadline);
}

TH_TEST_FN(many_timers_fire_in_deadline_order_without_allocation)
{
	(void)state;
	enum { N = 1000 };
	struct th_rng rng;
	th_rng_init(&rng, 11);
	struct order *o = calloc(N, sizeof *o);
	assert_non_null(o);
	/* Deadlines far enough that every create is done before the first:
	 * a create past its deadline would fire at once, out of order. */
	int64_t base = cpat_now_ns() + (SANITIZED ? 1000 : 300) * CPAT_MSEC;
	for (int i = 0; i < N; i++) {
		o[i].deadline =
			base +
			(int64_t)th_rng_below(&rng, 100) * CPAT_MSEC / 2 +
			(int64_t)th_rng_below(&rng, 1000);
		o[i].t = mk_timer(o[i].deadline);
	}
	assert_true(cpat_now_ns() < base);
	long allocs = th_alloc_count();
	/* Receive in creation order: each recv waits for its own fire. */
	for (int i = 0; i < N; i++)
		o[i].fired = recv_fire(o[i].t);
	/* And stops and resets allocate nothing either. */
	for (int i = 0; i < N; i++) {
		assert_int_equal(cpat_timer_reset(o[i].t, CPAT_FOREVER), 0);
		assert_int_equal(cpat_timer_stop(o[i].t), 0);
	}
	assert_int_equal(th_alloc_count(), allocs);
	qsort(o, N, sizeof *o, by_deadline);
	/* Each fired no earlier than every timer of an earlier deadline
	 * (timers of equal deadlines may fire in any order). */
	int64_t before = 0, group = 0;
	for (int i = 0; i < N; i++) {
		assert_true(o[i].fired >= o[i].deadline);
		if (i > 0 && o[i].deadline != o[i - 1].deadline) {
			before = group > before ? group : before;
		}
		assert_true(o[i].fired >= before);
		group = o[i].fired > group ? o[i].fired : group;
	}
	for (int i = 0; i < N; i++)
		cpat_timer_destroy(o[i].t);
	free(o);
}

/* Destroys armed timers and tickers while the thread fires others. */
struct churn {
	struct th_barrier *start;
	unsigned seed;
	long rounds;
	int errors;
};

static void *churn_main(void *arg)
{
	struct churn *c = arg;
	struct th_rng rng;
	th_rng_init(&rng, c->seed);
	th_barrier_wait(c->start);
	for (long r = 0; r < c->rounds; r++) {
		struct cpat_timer *t = NULL;
		int64_t us = (int64_t)th_rng_below(&rng, 300);
		/* Periods of 20 us and more: shorter ones would keep the
		 * timer thread firing back to back. */
		int64_t period = 20 * CPAT_USEC + us * CPAT_USEC / 8;
		int rc = th_rng_below(&rng, 3) == 0
				 ? cpat_ticker_create(&t, period)
				 : cpat_timer_create(
					   &t, cpat_now_ns() + us * CPAT_USEC);
		if (rc != 0) {
			c->errors++;
			continue;
		}
		th_pause((unsigned)th_rng_below(&rng, 2000));
		int64_t v;
		(void)cpat_chan_try_recv(cpat_timer_chan(t), &v);
		switch (th_rng_below(&rng, 3)) {
		case 0:
			if (cpat_timer_stop(t) < 0)
				c->errors++;
			break;
		case 1:
			/* A deadline (in the past: fires at once) or a
			 * period. */
			if (cpat_timer_reset(t, period) < 0)
				c->errors++;
			break;
		default:
			break;
		}
		cpat_timer_destroy(t);
	}
	return NULL;
}

TH_TEST_FN(destroy_of_armed_timers_and_tickers_is_safe)
{
	(void)state;
	enum { NT = 4 };
	long live = th_alloc_live();
	struct th_barrier start;
	th_barrier_init(&start, NT);
	struct churn c[NT];
	pthread_t th[NT];
	for (int i = 0; i < NT; i++) {
		c[i] = (struct churn){&start, 100u + (unsigned)i,
				      SIZE(3000, 300), 0};
		th_spawn(&th[i], churn_main, &c[i]);
	}
	for (int i = 0; i < NT; i++) {
		th_join(th[i]);
		assert_int_equal(c[i].errors, 0);
	}
	th_barrier_destroy(&start);
	assert_int_equal(th_alloc_live(), live);
}

/* Receivers of one ticker while another thread stops and resets it. */
struct rx {
	struct cpat_timer *t;
	struct cpat_token *stop;
	_Atomic long got;
	int rc;
};

static void *rx_main(void *arg)
{
	struct rx *r = arg;
	int64_t v;
	while ((r->rc = cpat_chan_recv(cpat_timer_chan(r->t), &v, r->stop)) ==
	       0)
		atomic_fetch_add(&r->got, 1);
	return NULL;
}

TH_TEST_FN(stop_and_reset_race_receivers_safely)
{
	(void)state;
	enum { NR = 2 };
	struct cpat_timer *t = mk_ticker(50 * CPAT_USEC);
	struct cpat_token *stop;
	assert_int_equal(cpat_token_create(&stop, NULL), 0);
	struct rx r[NR];
	pthread_t th[NR];
	for (int i = 0; i < NR; i++) {
		r[i] = (struct rx){t, stop, 0, 0};
		th_spawn(&th[i], rx_main, &r[i]);
	}
	struct th_rng rng;
	th_rng_init(&rng, 5);
	for (long i = 0; i < SIZE(5000, 500); i++) {
		if (th_rng_below(&rng, 2))
			assert_true(cpat_timer_stop(t) >= 0);
		int64_t period =
			(int64_t)(20 + th_rng_below(&rng, 100)) * CPAT_USEC;
		assert_true(cpat_timer_reset(t, period) >= 0);
		th_pause((unsigned)th_rng_below(&rng, 500));
	}
	/* Let a few more ticks through, then stop the receivers. */
	assert_int_equal(cpat_timer_reset(t, 100 * CPAT_USEC), 1);
	int64_t end = cpat_now_ns() + GENEROUS;
	while (atomic_load(&r[0].got) + atomic_load(&r[1].got) < 3 &&
	       cpat_now_ns() < end)
		th_relax();
	cpat_token_cancel(stop);
	long total = 0;
	for (int i = 0; i < NR; i++) {
		th_join(th[i]);
		assert_int_equal(r[i].rc, -ECANCELED);
		total += atomic_load(&r[i].got);
	}
	assert_true(total >= 3);
	cpat_token_unref(stop);
	cpat_timer_destroy(t);
}

TH_TEST_FN(bad_arguments_are_einval)
{
	(void)state;
	struct cpat_timer *t = (struct cpat_timer *)&t;
	assert_int_equal(cpat_timer_create(NULL, 0), -EINVAL);
	assert_int_equal(cpat_timer_create(&t, -2), -EINVAL);
	assert_null(t);
	t = (struct cpat_timer *)&t;
	assert_int_equal(cpat_ticker_create(&t, 0), -EINVAL);
	assert_null(t);
	assert_int_equal(cpat_ticker_create(&t, -5), -EINVAL);
	assert_int_equal(cpat_ticker_create(&t, CPAT_FOREVER), -EINVAL);
	assert_int_equal(cpat_ticker_create(NULL, CPAT_MSEC), -EINVAL);
	assert_null(cpat_timer_chan(NULL));
	assert_int_equal(cpat_timer_stop(NULL), -EINVAL);
	assert_int_equal(cpat_timer_reset(NULL, 0), -EINVAL);
	cpat_timer_destroy(NULL);

	t = mk_timer(CPAT_FOREVER);
	assert_int_equal(cpat_timer_reset(t, -2), -EINVAL);
	assert_int_equal(cpat_timer_stop(t), 0); /* unchanged */
	cpat_timer_destroy(t);
	t = mk_ticker(3600 * CPAT_SEC);
	assert_int_equal(cpat_timer_reset(t, 0), -EINVAL);
	assert_int_equal(cpat_timer_reset(t, CPAT_FOREVER), -EINVAL);
	assert_int_equal(cpat_timer_stop(t), 1); /* still running before */
	cpat_timer_destroy(t);
	/* Huge values saturate rather than overflow. */
	t = mk_ticker(INT64_MAX);
	assert_int_equal(cpat_timer_reset(t, INT64_MAX - 1), 1);
	cpat_timer_destroy(t);
	t = mk_timer(INT64_MAX);
	assert_int_equal(cpat_timer_stop(t), 1);
	cpat_timer_destroy(t);
}

static int create_one(void *ctx)
{
	return cpat_timer_create(ctx, cpat_now_ns() + 3600 * CPAT_SEC);
}

static void check_one(void *ctx, int rc)
{
	struct cpat_timer **t = ctx;
	if (rc == 0) {
		assert_int_equal(cpat_timer_stop(*t), 1);
		cpat_timer_destroy(*t);
	} else {
		assert_null(*t);
	}
}

TH_TEST_FN(allocation_failure_in_create_is_enomem_and_leaks_nothing)
{
	(void)state;
	struct cpat_timer *t = NULL;
	struct th_alloc_sweep s = {create_one, check_one, &t,
				   10,         1,         "cpat_timer_create"};
	assert_true(th_alloc_sweep(&s) >= 1);
}

/* In a forked child: a new timer fires (only the child's timer thread can
 * put the value in the channel). */
static int child_timer(void)
{
	struct cpat_timer *t;
	if (cpat_timer_create(&t, cpat_now_ns() + 10 * CPAT_MSEC) != 0)
		return 11;
	int64_t v;
	int rc = cpat_chan_recv_until(cpat_timer_chan(t), &v, NULL,
				      cpat_now_ns() + 5 * CPAT_SEC);
	cpat_timer_destroy(t);
	return rc == 0 ? 0 : 10;
}

TH_TEST_FN(a_timer_fires_in_a_forked_child)
{
	(void)state;
	/* The parent's thread is running, with a timer armed. */
	struct cpat_timer *mine = mk_timer(cpat_now_ns() + 50 * CPAT_MSEC);
	int fds[2];
	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		_exit(child_timer());
	}
	close(fds[1]);
	/* The pipe hangs up when the child exits: wait for that, bounded. */
	struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
	int n;
	do
		n = poll(&pfd, 1, 20000);
	while (n < 0 && errno == EINTR);
	close(fds[0]);
	if (n == 0)
		kill(pid, SIGKILL);
	int st = 0;
	waitpid(pid, &st, 0);
	assert_int_not_equal(n, 0);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	/* And the parent's timer is unaffected. */
	assert_true(recv_fire(mine) > 0);
	cpat_timer_destroy(mine);
}

TH_TEST_FN(timer_thread_named_cpat_timer)
{
	(void)state;
#ifdef __linux__
	struct cpat_timer *t = mk_timer(cpat_now_ns() + CPAT_MSEC);
	(void)recv_fire(t);
	cpat_timer_destroy(t);
	assert_true(th_count_threads_named("cpat-timer") >= 1);
#else
	skip();
#endif
}

int main(void)
{
	/* Before the first timer, and for the whole run. */
	th_alloc_install();
	const struct CMUnitTest tests[] = {
		TH_TEST(timer_thread_failure_is_eagain_then_recovers),
		TH_TEST(timer_fires_not_before_its_deadline),
		TH_TEST(past_deadline_fires_at_once_and_forever_makes_a_stopped_timer),
		TH_TEST(stop_before_fire_prevents_it),
		TH_TEST(reset_rearms_a_fired_timer_and_moves_an_armed_one),
		TH_TEST(a_value_in_the_channel_stays_after_stop_and_reset),
		TH_TEST(ticker_ticks_on_its_period_and_never_early),
		TH_TEST(ticker_drops_missed_ticks_and_keeps_the_latest),
		TH_TEST(ticker_reset_changes_the_period_and_stop_halts_it),
		TH_TEST(select_over_a_timer_and_a_channel),
		TH_TEST(many_timers_fire_in_deadline_order_without_allocation),
		TH_TEST(destroy_of_armed_timers_and_tickers_is_safe),
		TH_TEST(stop_and_reset_race_receivers_safely),
		TH_TEST(bad_arguments_are_einval),
		TH_TEST(allocation_failure_in_create_is_enomem_and_leaks_nothing),
		TH_TEST(a_timer_fires_in_a_forked_child),
		TH_TEST(timer_thread_named_cpat_timer),
	};
	return TH_RUN("timer", tests);
}
