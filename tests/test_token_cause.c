/*
 * Tests of cancel causes (cpattern/token.h): cpat_token_cancel_cause() and
 * cpat_token_cause(). The status, the callbacks' argument and what blocking
 * calls return stay -ECANCELED / -ETIMEDOUT; the cause is the canceller's.
 */
#include "harness.h"

/* A generous bound for "it will happen soon": only reached on failure. */
#define GENEROUS (30 * CPAT_SEC)

static struct cpat_token *mk(struct cpat_token *parent)
{
	struct cpat_token *t = NULL;
	assert_int_equal(cpat_token_create(&t, parent), 0);
	assert_non_null(t);
	return t;
}

TH_TEST_FN(cause_is_zero_while_live_and_for_null)
{
	(void)state;
	struct cpat_token *t = mk(NULL);
	assert_int_equal(cpat_token_cause(t), 0);
	assert_int_equal(cpat_token_cause(NULL), 0);
	cpat_token_unref(t);
}

TH_TEST_FN(cancel_cause_reports_the_cause_and_status_stays_ecanceled)
{
	(void)state;
	struct cpat_token *t = mk(NULL);
	assert_int_equal(cpat_token_cancel_cause(t, -EPIPE), 1);
	assert_int_equal(cpat_token_status(t), -ECANCELED);
	assert_int_equal(cpat_token_cause(t), -EPIPE);
	/* A cause equal to a status value is just a cause. */
	struct cpat_token *u = mk(NULL);
	assert_int_equal(cpat_token_cancel_cause(u, -ETIMEDOUT), 1);
	assert_int_equal(cpat_token_status(u), -ECANCELED);
	assert_int_equal(cpat_token_cause(u), -ETIMEDOUT);
	cpat_token_unref(u);
	cpat_token_unref(t);
}

TH_TEST_FN(plain_cancel_cause_is_ecanceled_and_deadline_cause_is_etimedout)
{
	(void)state;
	struct cpat_token *t = mk(NULL);
	assert_int_equal(cpat_token_cancel(t), 1);
	assert_int_equal(cpat_token_cause(t), -ECANCELED);
	cpat_token_unref(t);

	struct cpat_token *d = NULL;
	int64_t dl = cpat_now_ns() + 5 * CPAT_MSEC;
	assert_int_equal(cpat_token_create_deadline(&d, NULL, dl), 0);
	assert_int_equal(cpat_token_wait(d, cpat_now_ns() + GENEROUS), 0);
	assert_int_equal(cpat_token_cause(d), -ETIMEDOUT);
	assert_int_equal(cpat_token_status(d), -ETIMEDOUT);
	cpat_token_unref(d);

	/* Read past the deadline, before the timer thread fired it. */
	struct cpat_token *p = NULL;
	assert_int_equal(
		cpat_token_create_deadline(&p, NULL, cpat_now_ns() - 1), 0);
	assert_int_equal(cpat_token_cause(p), -ETIMEDOUT);
	cpat_token_unref(p);
}

TH_TEST_FN(the_first_cause_wins)
{
	(void)state;
	struct cpat_token *t = mk(NULL);
	assert_int_equal(cpat_token_cancel_cause(t, -EPIPE), 1);
	assert_int_equal(cpat_token_cancel_cause(t, -EIO), 0);
	assert_int_equal(cpat_token_cancel(t), 0);
	assert_int_equal(cpat_token_cause(t), -EPIPE);
	cpat_token_unref(t);

	t = mk(NULL);
	assert_int_equal(cpat_token_cancel(t), 1);
	assert_int_equal(cpat_token_cancel_cause(t, -EIO), 0);
	assert_int_equal(cpat_token_cause(t), -ECANCELED);
	cpat_token_unref(t);

	struct cpat_token *d = NULL;
	assert_int_equal(
		cpat_token_create_deadline(&d, NULL, cpat_now_ns() - 1), 0);
	assert_int_equal(cpat_token_cancel_cause(d, -EIO), 0);
	assert_int_equal(cpat_token_cause(d), -ETIMEDOUT);
	cpat_token_unref(d);
}

TH_TEST_FN(descendants_fired_by_a_parent_report_the_parents_cause)
{
	(void)state;
	struct cpat_token *root = mk(NULL);
	struct cpat_token *a = mk(root), *b = mk(a), *c = mk(root);
	struct cpat_token *own = mk(root);
	struct cpat_token *dl = NULL;
	assert_int_equal(cpat_token_create_deadline(
				 &dl, a, cpat_now_ns() + 3600 * CPAT_SEC),
			 0);
	/* A child cancelled first keeps its own cause. */
	assert_int_equal(cpat_token_cancel_cause(own, -ENOENT), 1);
	assert_int_equal(cpat_token_cancel_cause(root, -EPIPE), 1);
	struct cpat_token *all[] = {root, a, b, c, dl};
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
		assert_int_equal(cpat_token_status(all[i]), -ECANCELED);
		assert_int_equal(cpat_token_cause(all[i]), -EPIPE);
	}
	assert_int_equal(cpat_token_cause(own), -ENOENT);
	/* Born fired: the parent's cause too. */
	struct cpat_token *late = mk(b);
	assert_int_equal(cpat_token_status(late), -ECANCELED);
	assert_int_equal(cpat_token_cause(late), -EPIPE);
	/* An inner node's cause stays in its subtree. */
	struct cpat_token *r2 = mk(NULL), *x = mk(r2), *y = mk(x);
	assert_int_equal(cpat_token_cancel_cause(x, -EIO), 1);
	assert_int_equal(cpat_token_cause(y), -EIO);
	assert_int_equal(cpat_token_cause(r2), 0);
	assert_int_equal(cpat_token_cancel(r2), 1);
	assert_int_equal(cpat_token_cause(r2), -ECANCELED);
	assert_int_equal(cpat_token_cause(x), -EIO);
	struct cpat_token *rel[] = {y, x, r2, late, dl, own, c, b, a, root};
	for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++)
		cpat_token_unref(rel[i]);
}

TH_TEST_FN(a_deadline_parent_gives_its_children_etimedout)
{
	(void)state;
	struct cpat_token *p = NULL;
	assert_int_equal(cpat_token_create_deadline(
				 &p, NULL, cpat_now_ns() + 5 * CPAT_MSEC),
			 0);
	struct cpat_token *c = mk(p);
	assert_int_equal(cpat_token_wait(c, cpat_now_ns() + GENEROUS), 0);
	assert_int_equal(cpat_token_cause(c), -ETIMEDOUT);
	assert_int_equal(cpat_token_cause(p), -ETIMEDOUT);
	cpat_token_unref(c);
	cpat_token_unref(p);
}

TH_TEST_FN(bad_arguments_are_einval_and_fire_nothing)
{
	(void)state;
	assert_int_equal(cpat_token_cancel_cause(NULL, -EIO), -EINVAL);
	struct cpat_token *t = mk(NULL);
	assert_int_equal(cpat_token_cancel_cause(t, 0), -EINVAL);
	assert_int_equal(cpat_token_cancel_cause(t, 5), -EINVAL);
	assert_int_equal(cpat_token_cancel_cause(t, EIO), -EINVAL);
	assert_int_equal(cpat_token_status(t), 0);
	assert_int_equal(cpat_token_cause(t), 0);
	cpat_token_unref(t);
}

/* A receiver blocked under the token: what it returns and what the token's
 * callback saw. */
struct blocked {
	struct cpat_chan *ch;
	struct cpat_token *tok;
	int rc, cause_after;
};

static void *recv_main(void *arg)
{
	struct blocked *b = arg;
	int v;
	b->rc = cpat_chan_recv(b->ch, &v, b->tok);
	b->cause_after = cpat_token_cause(b->tok);
	return NULL;
}

struct seen {
	_Atomic int arg_cause, read_cause, runs;
	struct cpat_token *tok;
};

static void seen_cb(void *arg, int cause)
{
	struct seen *s = arg;
	atomic_store(&s->arg_cause, cause);
	atomic_store(&s->read_cause, cpat_token_cause(s->tok));
	atomic_fetch_add(&s->runs, 1);
}

TH_TEST_FN(blocking_calls_and_callbacks_still_get_ecanceled)
{
	(void)state;
	struct blocked b = {0};
	assert_int_equal(cpat_chan_create(&b.ch, sizeof(int), 1), 0);
	b.tok = mk(NULL);
	struct seen s = {.tok = b.tok};
	assert_int_equal(cpat_token_on_cancel(b.tok, seen_cb, &s, NULL), 0);
	pthread_t th;
	th_spawn(&th, recv_main, &b);
	/* Fire once the receiver is blocked (or earlier: the result is the
	 * same, this only makes the blocked case the usual one). */
	int64_t end = cpat_now_ns() + GENEROUS;
	while (cpat__chan_nblocked(b.ch, CPAT_SELECT_RECV) == 0 &&
	       cpat_now_ns() < end)
		th_relax();
	assert_int_equal(cpat_token_cancel_cause(b.tok, -ESHUTDOWN), 1);
	th_join(th);
	assert_int_equal(b.rc, -ECANCELED);
	assert_int_equal(b.cause_after, -ESHUTDOWN);
	assert_int_equal(atomic_load(&s.runs), 1);
	assert_int_equal(atomic_load(&s.arg_cause), -ECANCELED);
	assert_int_equal(atomic_load(&s.read_cause), -ESHUTDOWN);
	/* A call made after the fire: -ECANCELED at once. */
	int v = 1;
	assert_int_equal(cpat_chan_send(b.ch, &v, b.tok), -ECANCELED);
	assert_int_equal(cpat_token_wait(b.tok, CPAT_FOREVER), 0);
	cpat_token_unref(b.tok);
	cpat_chan_destroy(b.ch);
}

/* Cancellers racing with distinct causes: one wins, and the whole tree
 * reports its cause. */
struct racer {
	struct th_barrier *start;
	struct cpat_token *tok;
	int cause, rc;
};

static void *racer_main(void *arg)
{
	struct racer *r = arg;
	th_barrier_wait(r->start);
	r->rc = cpat_token_cancel_cause(r->tok, r->cause);
	return NULL;
}

TH_TEST_FN(racing_cancellers_one_cause_wins_everywhere)
{
	(void)state;
	enum { NT = 4, KIDS = 8 };
	const long trials = SIZE(300, 50);
	for (long trial = 0; trial < trials; trial++) {
		struct cpat_token *root = mk(NULL), *kid[KIDS];
		for (int i = 0; i < KIDS; i++)
			kid[i] = mk(i == 0 ? root : kid[(i - 1) / 2]);
		struct th_barrier start;
		th_barrier_init(&start, NT);
		struct racer r[NT];
		pthread_t th[NT];
		for (int i = 0; i < NT; i++) {
			/* Two race on the root, two on inner nodes. */
			r[i] = (struct racer){&start, i < 2 ? root : kid[i - 1],
					      -100 - i, -1};
			th_spawn(&th[i], racer_main, &r[i]);
		}
		for (int i = 0; i < NT; i++)
			th_join(th[i]);
		int root_winner = -1, wins = 0;
		for (int i = 0; i < NT; i++) {
			assert_true(r[i].rc == 0 || r[i].rc == 1);
			wins += r[i].rc;
			if (i < 2 && r[i].rc == 1)
				root_winner = i;
		}
		assert_true(root_winner >= 0);
		assert_in_range(wins, 1, NT - 1);
		assert_int_equal(cpat_token_cause(root), r[root_winner].cause);
		for (int i = 0; i < KIDS; i++) {
			int c = cpat_token_cause(kid[i]);
			/* Either the root's cause or that of the inner
			 * canceller whose call fired it. */
			bool ok = c == r[root_winner].cause;
			for (int j = 2; j < NT; j++)
				ok = ok || (r[j].rc == 1 && c == r[j].cause);
			assert_true(ok);
			assert_int_equal(cpat_token_status(kid[i]), -ECANCELED);
		}
		for (int i = KIDS - 1; i >= 0; i--)
			cpat_token_unref(kid[i]);
		cpat_token_unref(root);
		th_barrier_destroy(&start);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		TH_TEST(cause_is_zero_while_live_and_for_null),
		TH_TEST(cancel_cause_reports_the_cause_and_status_stays_ecanceled),
		TH_TEST(plain_cancel_cause_is_ecanceled_and_deadline_cause_is_etimedout),
		TH_TEST(the_first_cause_wins),
		TH_TEST(descendants_fired_by_a_parent_report_the_parents_cause),
		TH_TEST(a_deadline_parent_gives_its_children_etimedout),
		TH_TEST(bad_arguments_are_einval_and_fire_nothing),
		TH_TEST(blocking_calls_and_callbacks_still_get_ecanceled),
		TH_TEST(racing_cancellers_one_cause_wins_everywhere),
	};
	return TH_RUN("token_cause", tests);
}
