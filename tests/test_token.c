/*
 * Tests of cancellation tokens (cpattern/token.h): firing and causes, the
 * tree, deadlines, waiting, callbacks, signals, lifetime and the allocator.
 *
 * The counting allocator of the harness is installed before the first
 * token and never removed, so that any test can compare th_alloc_live()
 * with a baseline it took while quiescent.
 */
#include "harness.h"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include "testhooks.h"

/* A generous bound for "it will fire soon": only ever reached on failure. */
#define GENEROUS (30 * CPAT_SEC)

/* ---- helpers ---------------------------------------------------------- */

/* A callback that counts its runs and records its cause and thread. */
struct counter {
	_Atomic int n;
	_Atomic int cause;
	pthread_t thread;
};

static void count_cb(void *arg, int cause)
{
	struct counter *c = arg;
	c->thread = pthread_self();
	atomic_store(&c->cause, cause);
	atomic_fetch_add(&c->n, 1);
}

static struct cpat_token *mk(struct cpat_token *parent)
{
	struct cpat_token *t = NULL;
	int rc = cpat_token_create(&t, parent);
	assert_int_equal(rc, 0);
	assert_non_null(t);
	return t;
}

static struct cpat_token *mk_deadline(struct cpat_token *parent, int64_t d)
{
	struct cpat_token *t = NULL;
	int rc = cpat_token_create_deadline(&t, parent, d);
	assert_int_equal(rc, 0);
	assert_non_null(t);
	return t;
}

/* A random tree: node 0 is the root, node i > 0 a child of a random
 * earlier node. */
struct tree {
	int n;
	int *parent;
	struct cpat_token **tok;
};

static void tree_make(struct tree *t, int n, struct th_rng *rng)
{
	t->n = n;
	t->parent = calloc((size_t)n, sizeof *t->parent);
	t->tok = calloc((size_t)n, sizeof *t->tok);
	assert_non_null(t->parent);
	assert_non_null(t->tok);
	t->parent[0] = -1;
	t->tok[0] = mk(NULL);
	for (int i = 1; i < n; i++) {
		t->parent[i] = (int)th_rng_below(rng, (uint64_t)i);
		t->tok[i] = mk(t->tok[t->parent[i]]);
	}
}

/* Releases children before parents (the reverse of creation), though any
 * order must do. */
static void tree_free(struct tree *t)
{
	for (int i = t->n - 1; i >= 0; i--)
		cpat_token_unref(t->tok[i]);
	free(t->parent);
	free(t->tok);
}

/* A random tree (tree_make()) with a counter (zeroed) registered on
 * every node: c[i] counts the callback runs of node i. */
static void tree_make_counted(struct tree *t, int n, struct th_rng *rng,
			      struct counter *c)
{
	tree_make(t, n, rng);
	memset(c, 0, (size_t)n * sizeof *c);
	for (int i = 0; i < n; i++)
		assert_int_equal(
			cpat_token_on_cancel(t->tok[i], count_cb, &c[i], NULL),
			0);
}

/* Releases the tokens given, in order (children before parents). */
#define unref_all(...)                                         \
	unref_n((struct cpat_token *[]){__VA_ARGS__},          \
		sizeof((struct cpat_token *[]){__VA_ARGS__}) / \
			sizeof(struct cpat_token *))

static void unref_n(struct cpat_token *const *t, size_t n)
{
	for (size_t i = 0; i < n; i++)
		cpat_token_unref(t[i]);
}

static int tree_is_under(const struct tree *t, int node, int ancestor)
{
	for (int i = node; i >= 0; i = t->parent[i])
		if (i == ancestor)
			return 1;
	return 0;
}

/* Spins (yielding) until pred(arg) holds or GENEROUS passes; returns
 * whether it held. For the main thread waiting on a test hook. */
static int spin_until(int (*pred)(void *), void *arg)
{
	int64_t end = cpat_now_ns() + GENEROUS;
	while (!pred(arg)) {
		if (cpat_now_ns() > end)
			return 0;
		th_relax();
	}
	return 1;
}

/* ---- cancel ----------------------------------------------------------- */

TH_TEST_FN(token_starts_live_and_cancel_fires_it_with_ecanceled)
{
	(void)state;
	struct cpat_token *t = mk(NULL);
	assert_int_equal(cpat_token_status(t), 0);
	assert_int_equal(cpat_token_cancel(t), 1);
	assert_int_equal(cpat_token_status(t), -ECANCELED);
	cpat_token_unref(t);
}

TH_TEST_FN(cancel_is_idempotent_one_then_zero_and_callbacks_run_once)
{
	(void)state;
	struct cpat_token *t = mk(NULL);
	struct counter c[3] = {0};
	struct cpat_token_cb *h[3];
	for (int i = 0; i < 3; i++)
		assert_int_equal(
			cpat_token_on_cancel(t, count_cb, &c[i], &h[i]), 0);
	assert_int_equal(cpat_token_cancel(t), 1);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(atomic_load(&c[i].n), 1);
		assert_int_equal(atomic_load(&c[i].cause), -ECANCELED);
	}
	for (int k = 0; k < 5; k++)
		assert_int_equal(cpat_token_cancel(t), 0);
	assert_int_equal(cpat_token_status(t), -ECANCELED);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(atomic_load(&c[i].n), 1);
		assert_int_equal(cpat_token_on_cancel_remove(h[i]), 0);
	}
	cpat_token_unref(t);
}

struct racer {
	struct th_barrier *start;
	struct cpat_token *tok;
	const struct tree *tree;
	int rc;
	int unfired_after; /* nodes of the tree seen live after cancel returned
			    */
};

static void *cancel_racer_main(void *arg)
{
	struct racer *r = arg;
	th_barrier_wait(r->start);
	r->rc = cpat_token_cancel(r->tok);
	r->unfired_after = 0;
	if (r->tree)
		for (int i = 0; i < r->tree->n; i++)
			if (cpat_token_status(r->tree->tok[i]) != -ECANCELED)
				r->unfired_after++;
	return NULL;
}

TH_TEST_FN(concurrent_cancels_fire_once_and_each_returns_after_the_tree)
{
	(void)state;
	enum { NT = 3, NODES = 20 };
	struct th_rng rng;
	th_rng_init(&rng, 1);
	const long trials = TH_SCALED(200);
	long bad_sum = 0, bad_runs = 0, unfired_after_1 = 0,
	     unfired_after_0 = 0;
	for (long trial = 0; trial < trials; trial++) {
		struct tree tr;
		struct counter c[NODES];
		tree_make_counted(&tr, NODES, &rng, c);
		struct th_crew crew;
		th_crew_init(&crew, NT);
		struct racer r[NT];
		for (int i = 0; i < NT; i++)
			r[i] = (struct racer){&crew.start, tr.tok[0], &tr, -1,
					      0};
		th_crew_add_n(&crew, NT, cancel_racer_main, r, sizeof r[0]);
		th_crew_go(&crew);
		th_crew_join(&crew);
		int sum = 0;
		for (int i = 0; i < NT; i++) {
			sum += r[i].rc;
			if (r[i].rc == 1)
				unfired_after_1 += r[i].unfired_after;
			else
				unfired_after_0 += r[i].unfired_after;
		}
		if (sum != 1)
			bad_sum++;
		for (int i = 0; i < NODES; i++)
			if (atomic_load(&c[i].n) != 1)
				bad_runs++;
		tree_free(&tr);
	}
	if (unfired_after_1 || unfired_after_0)
		fprintf(stderr,
			"# nodes seen live after cancel returned: %ld after "
			"a 1, %ld after a 0\n",
			unfired_after_1, unfired_after_0);
	assert_int_equal(bad_sum, 0);  /* exactly one cancel returned 1 */
	assert_int_equal(bad_runs, 0); /* every callback ran exactly once */
	/* "Before it returns, every descendant has fired": the call that
	 * fired the tree, and (token.h makes no exception) a call that
	 * found it already fired by a concurrent cancel. */
	assert_int_equal(unfired_after_1, 0);
	assert_int_equal(unfired_after_0, 0);
}

/* ---- the tree --------------------------------------------------------- */

TH_TEST_FN(cancel_root_of_random_tree_fires_every_descendant_before_return)
{
	(void)state;
	enum { NODES = 100 };
	struct th_rng rng;
	th_rng_init(&rng, 2);
	for (int round = 0; round < 10; round++) {
		struct tree tr;
		struct counter c[NODES];
		tree_make_counted(&tr, NODES, &rng, c);
		for (int i = 0; i < NODES; i++)
			assert_int_equal(cpat_token_status(tr.tok[i]), 0);
		assert_int_equal(cpat_token_cancel(tr.tok[0]), 1);
		for (int i = 0; i < NODES; i++) {
			assert_int_equal(cpat_token_status(tr.tok[i]),
					 -ECANCELED);
			assert_int_equal(atomic_load(&c[i].n), 1);
			assert_int_equal(atomic_load(&c[i].cause), -ECANCELED);
			/* Fired with the root's cause, so a later cancel of a
			 * descendant is a no-op. */
			assert_int_equal(cpat_token_cancel(tr.tok[i]), 0);
		}
		tree_free(&tr);
	}
}

TH_TEST_FN(cancel_inner_node_leaves_parent_and_siblings_live)
{
	(void)state;
	enum { NODES = 100 };
	struct th_rng rng;
	th_rng_init(&rng, 3);
	for (int round = 0; round < 20; round++) {
		struct tree tr;
		tree_make(&tr, NODES, &rng);
		int victim = 1 + (int)th_rng_below(&rng, NODES - 1);
		assert_int_equal(cpat_token_cancel(tr.tok[victim]), 1);
		for (int i = 0; i < NODES; i++) {
			int want =
				tree_is_under(&tr, i, victim) ? -ECANCELED : 0;
			if (cpat_token_status(tr.tok[i]) != want)
				fprintf(stderr,
					"# round %d victim %d node %d\n", round,
					victim, i);
			assert_int_equal(cpat_token_status(tr.tok[i]), want);
		}
		tree_free(&tr);
	}
}

TH_TEST_FN(child_of_a_fired_parent_is_born_fired_with_its_cause)
{
	(void)state;
	struct cpat_token *p = mk(NULL);
	assert_int_equal(cpat_token_cancel(p), 1);
	struct cpat_token *c = mk(p);
	assert_int_equal(cpat_token_status(c), -ECANCELED);
	struct cpat_token *g = mk(c);
	assert_int_equal(cpat_token_status(g), -ECANCELED);
	/* A deadline child of a cancelled parent keeps the parent's cause. */
	struct cpat_token *d = mk_deadline(p, cpat_now_ns() + GENEROUS);
	assert_int_equal(cpat_token_status(d), -ECANCELED);
	assert_int_equal(cpat_token_cancel(c), 0);
	/* A callback on a born-fired child runs at once with the cause. */
	struct counter cnt = {0};
	assert_int_equal(cpat_token_on_cancel(g, count_cb, &cnt, NULL), 0);
	assert_int_equal(atomic_load(&cnt.n), 1);
	assert_int_equal(atomic_load(&cnt.cause), -ECANCELED);
	unref_all(d, g, c);

	struct cpat_token *tp = mk_deadline(NULL, 0);
	struct cpat_token *tc = mk(tp);
	assert_int_equal(cpat_token_status(tc), -ETIMEDOUT);
	unref_all(tc, tp, p);
}

/*
 * Two persistent workers race on each trial: one cancels the root, the
 * other creates a child of the root or of a middle node and registers a
 * callback on it. After both, the child has always fired and its callback
 * has run exactly once.
 */
struct birth_race {
	struct cpat_token *volatile root, *volatile mid;
	int role; /* 0: canceller, 1: creator */
	struct cpat_token *child;
	struct counter cnt;
	int rc;
};

static void birth_race_step(void *arg, long i)
{
	struct birth_race *b = arg;
	if (b->role == 0) {
		b->rc = cpat_token_cancel(b->root);
	} else {
		struct cpat_token *parent = (i & 1) ? b->mid : b->root;
		b->child = NULL;
		memset(&b->cnt, 0, sizeof b->cnt);
		b->rc = cpat_token_create(&b->child, parent);
		if (b->rc == 0)
			b->rc = cpat_token_on_cancel(b->child, count_cb,
						     &b->cnt, NULL);
	}
}

TH_TEST_FN(child_created_while_parent_is_cancelled_is_always_born_fired)
{
	(void)state;
	const long trials = TH_SCALED(1000);
	struct birth_race w[2] = {{.role = 0}, {.role = 1}};
	struct th_race race;
	long bad_rc = 0, live_child = 0, bad_runs = 0, bad_cancel = 0;
	th_race_start(&race, 2, trials, birth_race_step, w, sizeof w[0]);
	for (long i = 0; i < trials; i++) {
		struct cpat_token *root = mk(NULL), *mid = mk(root);
		w[0].root = w[1].root = root;
		w[0].mid = w[1].mid = mid;
		th_race_trial(&race);
		if (w[0].rc != 1)
			bad_cancel++;
		if (w[1].rc != 0) {
			bad_rc++;
		} else {
			if (cpat_token_status(w[1].child) != -ECANCELED)
				live_child++;
			if (atomic_load(&w[1].cnt.n) != 1)
				bad_runs++;
		}
		cpat_token_unref(w[1].child);
		cpat_token_unref(mid);
		cpat_token_unref(root);
	}
	th_race_join(&race);
	assert_int_equal(bad_cancel, 0);
	assert_int_equal(bad_rc, 0);
	assert_int_equal(live_child, 0);
	assert_int_equal(bad_runs, 0);
}

struct node_canceller {
	struct th_barrier *start;
	struct cpat_token *tok;
	int yields;
	int rc;
};

static void *node_canceller_main(void *arg)
{
	struct node_canceller *w = arg;
	th_barrier_wait(w->start);
	for (int i = 0; i < w->yields; i++)
		th_relax();
	w->rc = cpat_token_cancel(w->tok);
	return NULL;
}

TH_TEST_FN(every_node_cancelled_from_its_own_thread_no_deadlock_all_fired)
{
	(void)state;
	enum { NODES = 48 };
	struct th_rng rng;
	th_rng_init(&rng, 4);
	const long rounds = TH_SCALED(10);
	for (long round = 0; round < rounds; round++) {
		struct tree tr;
		struct counter c[NODES];
		tree_make_counted(&tr, NODES, &rng, c);
		/* Threads are started in a random order and each yields a
		 * random number of times after the barrier. */
		int order[NODES];
		for (int i = 0; i < NODES; i++)
			order[i] = i;
		for (int i = NODES - 1; i > 0; i--) {
			int j = (int)th_rng_below(&rng, (uint64_t)i + 1);
			int x = order[i];
			order[i] = order[j];
			order[j] = x;
		}
		struct th_crew crew;
		th_crew_init(&crew, NODES);
		struct node_canceller w[NODES];
		for (int k = 0; k < NODES; k++) {
			int i = order[k];
			w[i] = (struct node_canceller){
				&crew.start, tr.tok[i],
				(int)th_rng_below(&rng, 4), -1};
			th_crew_add(&crew, node_canceller_main, &w[i]);
		}
		th_crew_go(&crew);
		th_crew_join(&crew);
		int ones = 0;
		for (int i = 0; i < NODES; i++) {
			assert_true(w[i].rc == 0 || w[i].rc == 1);
			ones += w[i].rc;
		}
		/* The root's own cancel always fires it: nothing else can. */
		assert_int_equal(w[0].rc, 1);
		assert_true(ones >= 1);
		for (int i = 0; i < NODES; i++) {
			assert_int_equal(cpat_token_status(tr.tok[i]),
					 -ECANCELED);
			assert_int_equal(atomic_load(&c[i].n), 1);
		}
		tree_free(&tr);
	}
}

/* ---- deadlines -------------------------------------------------------- */

TH_TEST_FN(deadline_token_fires_etimedout_never_before_its_deadline)
{
	(void)state;
	int64_t d = cpat_now_ns() + 30 * CPAT_MSEC;
	struct cpat_token *t = mk_deadline(NULL, d);
	struct counter c = {0};
	assert_int_equal(cpat_token_on_cancel(t, count_cb, &c, NULL), 0);
	/* Never seen fired before the deadline. */
	int st = cpat_token_status(t);
	if (st != 0)
		assert_true(cpat_now_ns() >= d);
	assert_int_equal(cpat_token_wait(t, cpat_now_ns() + GENEROUS), 0);
	assert_true(cpat_now_ns() >= d);
	assert_int_equal(cpat_token_status(t), -ETIMEDOUT);
	/* The timer thread fired it and ran the callback; wait returns
	 * once it fired, the callback may be finishing: wait for it. */
	int64_t end = cpat_now_ns() + GENEROUS;
	while (atomic_load(&c.n) == 0 && cpat_now_ns() < end)
		th_relax();
	assert_int_equal(atomic_load(&c.n), 1);
	assert_int_equal(atomic_load(&c.cause), -ETIMEDOUT);
	cpat_token_unref(t);
}

TH_TEST_FN(deadline_status_read_after_deadline_reports_etimedout)
{
	(void)state;
	for (int i = 0; i < 20; i++) {
		int64_t d = cpat_now_ns() + 2 * CPAT_MSEC;
		struct cpat_token *t = mk_deadline(NULL, d);
		while (cpat_now_ns() < d)
			if (cpat_token_status(t) != 0)
				assert_true(cpat_now_ns() >= d);
		/* Past the deadline: never seen live, whether or not the
		 * timer thread has got there yet. */
		assert_int_equal(cpat_token_status(t), -ETIMEDOUT);
		cpat_token_unref(t);
	}
}

TH_TEST_FN(child_status_read_after_inherited_deadline_reports_etimedout)
{
	(void)state;
	for (int i = 0; i < 20; i++) {
		int64_t d = cpat_now_ns() + 2 * CPAT_MSEC;
		struct cpat_token *p = mk_deadline(NULL, d);
		struct cpat_token *c = mk(p);
		struct cpat_token *g = mk_deadline(c, d + 10 * CPAT_SEC);
		while (cpat_now_ns() < d)
			th_relax();
		/* The effective deadline is the parent's: the descendants
		 * are never seen live after it. */
		assert_int_equal(cpat_token_status(g), -ETIMEDOUT);
		assert_int_equal(cpat_token_status(c), -ETIMEDOUT);
		assert_int_equal(cpat_token_status(p), -ETIMEDOUT);
		unref_all(g, c, p);
	}
}

TH_TEST_FN(child_with_later_deadline_fires_with_parent_etimedout)
{
	(void)state;
	int64_t dp = cpat_now_ns() + 40 * CPAT_MSEC;
	struct cpat_token *p = mk_deadline(NULL, dp);
	struct cpat_token *c = mk_deadline(p, dp + 20 * CPAT_SEC);
	struct cpat_token *g = mk(c); /* plain grandchild */
	assert_int_equal(cpat_token_wait(g, cpat_now_ns() + GENEROUS), 0);
	assert_true(cpat_now_ns() >= dp);
	assert_int_equal(cpat_token_status(g), -ETIMEDOUT);
	assert_int_equal(cpat_token_wait(c, cpat_now_ns() + GENEROUS), 0);
	assert_true(cpat_now_ns() >= dp);
	assert_int_equal(cpat_token_status(c), -ETIMEDOUT);
	assert_int_equal(cpat_token_status(p), -ETIMEDOUT);
	unref_all(g, c, p);
}

TH_TEST_FN(child_with_earlier_deadline_fires_alone_and_not_before_it)
{
	(void)state;
	int64_t dp = cpat_now_ns() + 20 * CPAT_SEC;
	struct cpat_token *p = mk_deadline(NULL, dp);
	int64_t dc = cpat_now_ns() + 30 * CPAT_MSEC;
	struct cpat_token *c = mk_deadline(p, dc);
	struct cpat_token *sib = mk(p);
	assert_int_equal(cpat_token_wait(c, cpat_now_ns() + GENEROUS), 0);
	assert_true(cpat_now_ns() >= dc);
	assert_int_equal(cpat_token_status(c), -ETIMEDOUT);
	if (cpat_now_ns() < dp) {
		assert_int_equal(cpat_token_status(p), 0);
		assert_int_equal(cpat_token_status(sib), 0);
	}
	unref_all(sib, c, p);
}

TH_TEST_FN(deadline_of_grandparent_bounds_every_descendant)
{
	(void)state;
	/* Three levels with random deadlines: each node fires at the
	 * earliest deadline on its path, and never before it. */
	struct th_rng rng;
	th_rng_init(&rng, 5);
	enum { NODES = 12 };
	int64_t base = cpat_now_ns();
	int parent[NODES];
	int64_t own[NODES], eff[NODES];
	struct cpat_token *tok[NODES];
	for (int i = 0; i < NODES; i++) {
		parent[i] = i == 0 ? -1 : (int)th_rng_below(&rng, (uint64_t)i);
		uint64_t r = th_rng_below(&rng, 4);
		own[i] =
			r == 0 ? CPAT_FOREVER
			       : base + (int64_t)(20 + th_rng_below(&rng, 60)) *
						 CPAT_MSEC;
		eff[i] = parent[i] < 0
				 ? own[i]
				 : cpat__deadline_min(own[i], eff[parent[i]]);
		tok[i] = mk_deadline(parent[i] < 0 ? NULL : tok[parent[i]],
				     own[i]);
	}
	for (int i = 0; i < NODES; i++) {
		if (eff[i] == CPAT_FOREVER) {
			assert_int_equal(cpat_token_wait(tok[i], cpat_now_ns()),
					 -ETIMEDOUT);
			assert_int_equal(cpat_token_status(tok[i]), 0);
			continue;
		}
		assert_int_equal(
			cpat_token_wait(tok[i], cpat_now_ns() + GENEROUS), 0);
		assert_true(cpat_now_ns() >= eff[i]);
		assert_int_equal(cpat_token_status(tok[i]), -ETIMEDOUT);
	}
	for (int i = NODES - 1; i >= 0; i--)
		cpat_token_unref(tok[i]);
}

TH_TEST_FN(past_deadline_gives_token_born_fired_etimedout)
{
	(void)state;
	const int64_t past[] = {0, 1, cpat_now_ns() - 1, cpat_now_ns()};
	for (size_t i = 0; i < sizeof past / sizeof past[0]; i++) {
		struct cpat_token *t = mk_deadline(NULL, past[i]);
		assert_int_equal(cpat_token_status(t), -ETIMEDOUT);
		assert_int_equal(cpat_token_wait(t, 0), 0);
		assert_int_equal(cpat_token_cancel(t), 0);
		assert_int_equal(cpat_token_status(t), -ETIMEDOUT);
		struct counter c = {0};
		assert_int_equal(cpat_token_on_cancel(t, count_cb, &c, NULL),
				 0);
		assert_int_equal(atomic_load(&c.n), 1);
		assert_int_equal(atomic_load(&c.cause), -ETIMEDOUT);
		cpat_token_unref(t);
	}
	/* A past deadline under a live parent fires only the child. */
	struct cpat_token *p = mk(NULL);
	struct cpat_token *c = mk_deadline(p, 0);
	assert_int_equal(cpat_token_status(c), -ETIMEDOUT);
	assert_int_equal(cpat_token_status(p), 0);
	cpat_token_unref(c);
	cpat_token_unref(p);
}

TH_TEST_FN(forever_deadline_gives_a_plain_live_child)
{
	(void)state;
	struct cpat_token *p = mk(NULL);
	struct cpat_token *c = mk_deadline(p, CPAT_FOREVER);
	assert_int_equal(cpat_token_status(c), 0);
	assert_int_equal(cpat_token_wait(c, cpat_now_ns() + CPAT_MSEC),
			 -ETIMEDOUT);
	assert_int_equal(cpat_token_status(c), 0);
	assert_int_equal(cpat_token_cancel(p), 1);
	assert_int_equal(cpat_token_status(c), -ECANCELED);
	cpat_token_unref(c);
	cpat_token_unref(p);
}

TH_TEST_FN(first_cause_wins_deadline_then_cancel_stays_etimedout)
{
	(void)state;
	int64_t d = cpat_now_ns() + 20 * CPAT_MSEC;
	struct cpat_token *p = mk(NULL);
	struct cpat_token *t = mk_deadline(p, d);
	struct cpat_token *kid = mk(t);
	assert_int_equal(cpat_token_wait(t, cpat_now_ns() + GENEROUS), 0);
	assert_int_equal(cpat_token_status(t), -ETIMEDOUT);
	assert_int_equal(cpat_token_cancel(t), 0);
	assert_int_equal(cpat_token_status(t), -ETIMEDOUT);
	/* Cancelling the parent afterwards changes nothing below it. */
	assert_int_equal(cpat_token_cancel(p), 1);
	assert_int_equal(cpat_token_status(t), -ETIMEDOUT);
	assert_int_equal(cpat_token_status(kid), -ETIMEDOUT);
	unref_all(kid, t, p);
}

TH_TEST_FN(first_cause_wins_cancel_then_deadline_stays_ecanceled)
{
	(void)state;
	int64_t d = cpat_now_ns() + 200 * CPAT_MSEC;
	struct cpat_token *t = mk_deadline(NULL, d);
	struct cpat_token *kid = mk(t);
	struct counter c = {0};
	assert_int_equal(cpat_token_on_cancel(t, count_cb, &c, NULL), 0);
	int rc = cpat_token_cancel(t);
	int64_t after = cpat_now_ns();
	if (after < d)
		assert_int_equal(rc, 1);
	int cause = cpat_token_status(t);
	assert_int_equal(cause, rc == 1 ? -ECANCELED : -ETIMEDOUT);
	/* A marker with the same deadline, created later, fires once the
	 * timer thread has gone past d. */
	struct cpat_token *marker = mk_deadline(NULL, d);
	assert_int_equal(cpat_token_wait(marker, cpat_now_ns() + GENEROUS), 0);
	assert_true(cpat_now_ns() >= d);
	assert_int_equal(cpat_token_status(t), cause);
	assert_int_equal(cpat_token_status(kid), cause);
	assert_int_equal(atomic_load(&c.n), 1);
	assert_int_equal(atomic_load(&c.cause), cause);
	unref_all(marker, kid, t);
}

/* ---- wait ------------------------------------------------------------- */

TH_TEST_FN(wait_with_deadline_returns_etimedout_not_before_it)
{
	(void)state;
	struct cpat_token *t = mk(NULL);
	for (int i = 0; i < 5; i++) {
		int64_t d = cpat_now_ns() + (5 + 5 * i) * CPAT_MSEC;
		assert_int_equal(cpat_token_wait(t, d), -ETIMEDOUT);
		assert_true(cpat_now_ns() >= d);
	}
	/* A past deadline on a live token: at once, -ETIMEDOUT. */
	assert_int_equal(cpat_token_wait(t, 0), -ETIMEDOUT);
	assert_int_equal(cpat_token_status(t), 0);
	/* On a fired token: 0 at once, whatever the deadline. */
	assert_int_equal(cpat_token_cancel(t), 1);
	assert_int_equal(cpat_token_wait(t, 0), 0);
	assert_int_equal(cpat_token_wait(t, CPAT_FOREVER), 0);
	cpat_token_unref(t);
}

struct waiter {
	struct th_barrier *start;
	struct cpat_token *tok;
	int64_t deadline;
	int rc;
	int status_after;
};

static void *waiter_main(void *arg)
{
	struct waiter *w = arg;
	if (w->start)
		th_barrier_wait(w->start);
	w->rc = cpat_token_wait(w->tok, w->deadline);
	return NULL;
}

static void *waiter_with_ref_main(void *arg)
{
	struct waiter *w = arg;
	if (w->start)
		th_barrier_wait(w->start);
	w->rc = cpat_token_wait(w->tok, w->deadline);
	w->status_after = cpat_token_status(w->tok);
	return NULL;
}

struct refs_at_least {
	struct cpat_token *tok;
	int n;
};

static int refcount_reached(void *arg)
{
	struct refs_at_least *r = arg;
	return cpat__token_refcount(r->tok) >= r->n;
}

TH_TEST_FN(cancel_wakes_every_waiter_with_zero)
{
	(void)state;
	enum { NW = 4 };
	struct cpat_token *t = mk(NULL);
	struct waiter w[NW];
	pthread_t th[NW];
	for (int i = 0; i < NW; i++) {
		w[i] = (struct waiter){NULL, t, CPAT_FOREVER, -1, 1};
		th_spawn(&th[i], waiter_with_ref_main, &w[i]);
	}
	/* Each waiter holds its own reference while blocked. */
	struct refs_at_least r = {t, 1 + NW};
	int seen = spin_until(refcount_reached, &r);
	assert_int_equal(cpat_token_cancel(t), 1);
	for (int i = 0; i < NW; i++)
		th_join(th[i]);
	assert_true(seen);
	for (int i = 0; i < NW; i++) {
		assert_int_equal(w[i].rc, 0);
		assert_int_equal(w[i].status_after, -ECANCELED);
	}
	assert_int_equal(cpat__token_refcount(t), 1);
	cpat_token_unref(t);
}

TH_TEST_FN(token_released_under_waiter_then_fired_by_parent_is_safe)
{
	(void)state;
	enum { NW = 2 };
	const long trials = TH_SCALED(200);
	long bad_rc = 0, not_seen = 0;
	for (long trial = 0; trial < trials; trial++) {
		struct cpat_token *p = mk(NULL);
		struct cpat_token *c = mk(p);
		struct waiter w[NW];
		pthread_t th[NW];
		for (int i = 0; i < NW; i++) {
			w[i] = (struct waiter){NULL, c, CPAT_FOREVER, -1, 0};
			th_spawn(&th[i], waiter_main, &w[i]);
		}
		/* Wait until both waiters hold their references, then drop
		 * the owner's: only the waiters keep the token alive. */
		struct refs_at_least r = {c, 1 + NW};
		if (!spin_until(refcount_reached, &r))
			not_seen++;
		cpat_token_unref(c);
		assert_int_equal(cpat_token_cancel(p), 1);
		for (int i = 0; i < NW; i++) {
			th_join(th[i]);
			if (w[i].rc != 0)
				bad_rc++;
		}
		/* The child is gone once the waiters have returned. */
		assert_int_equal(cpat__token_nchildren(p), 0);
		assert_int_equal(cpat__token_refcount(p), 1);
		cpat_token_unref(p);
	}
	assert_int_equal(not_seen, 0);
	assert_int_equal(bad_rc, 0);
}

TH_TEST_FN(wait_on_deadline_child_returns_when_its_deadline_fires)
{
	(void)state;
	struct cpat_token *p = mk(NULL);
	int64_t d = cpat_now_ns() + 30 * CPAT_MSEC;
	struct cpat_token *c = mk_deadline(p, d);
	struct waiter w = {NULL, c, cpat_now_ns() + GENEROUS, -1, 0};
	pthread_t th;
	th_spawn(&th, waiter_with_ref_main, &w);
	th_join(th);
	assert_true(cpat_now_ns() >= d);
	assert_int_equal(w.rc, 0);
	assert_int_equal(w.status_after, -ETIMEDOUT);
	assert_int_equal(cpat_token_status(p), 0);
	cpat_token_unref(c);
	cpat_token_unref(p);
}

/* ---- callbacks -------------------------------------------------------- */

TH_TEST_FN(on_cancel_runs_exactly_once_in_the_firing_thread)
{
	(void)state;
	struct cpat_token *t = mk(NULL);
	struct counter c = {0};
	struct cpat_token_cb *h = NULL;
	assert_int_equal(cpat_token_on_cancel(t, count_cb, &c, &h), 0);
	assert_non_null(h);
	assert_int_equal(atomic_load(&c.n), 0);
	assert_int_equal(cpat_token_cancel(t), 1);
	assert_int_equal(atomic_load(&c.n), 1);
	assert_int_equal(atomic_load(&c.cause), -ECANCELED);
	assert_true(pthread_equal(c.thread, pthread_self()));
	assert_int_equal(cpat_token_cancel(t), 0);
	assert_int_equal(atomic_load(&c.n), 1);
	/* Remove after it ran returns 0. */
	assert_int_equal(cpat_token_on_cancel_remove(h), 0);
	assert_int_equal(atomic_load(&c.n), 1);
	cpat_token_unref(t);
}

TH_TEST_FN(on_cancel_on_fired_token_runs_at_once_in_calling_thread)
{
	(void)state;
	struct cpat_token *t = mk(NULL);
	assert_int_equal(cpat_token_cancel(t), 1);
	struct counter c = {0};
	struct cpat_token_cb *h = NULL;
	assert_int_equal(cpat_token_on_cancel(t, count_cb, &c, &h), 0);
	assert_int_equal(atomic_load(&c.n), 1); /* before the call returned */
	assert_int_equal(atomic_load(&c.cause), -ECANCELED);
	assert_true(pthread_equal(c.thread, pthread_self()));
	assert_non_null(h);
	assert_int_equal(cpat_token_on_cancel_remove(h), 0);
	assert_int_equal(atomic_load(&c.n), 1);
	cpat_token_unref(t);
}

TH_TEST_FN(on_cancel_never_runs_after_remove_returned_one)
{
	(void)state;
	struct cpat_token *p = mk(NULL);
	struct cpat_token *t = mk(p);
	struct counter c = {0}, keep = {0};
	struct cpat_token_cb *h = NULL, *hk = NULL;
	assert_int_equal(cpat_token_on_cancel(t, count_cb, &c, &h), 0);
	assert_int_equal(cpat_token_on_cancel(t, count_cb, &keep, &hk), 0);
	assert_int_equal(cpat__token_nwatches(t), 2);
	assert_int_equal(cpat_token_on_cancel_remove(h), 1);
	assert_int_equal(cpat__token_nwatches(t), 1);
	assert_int_equal(cpat_token_cancel(p), 1);
	assert_int_equal(atomic_load(&c.n), 0);
	assert_int_equal(atomic_load(&keep.n), 1);
	assert_int_equal(cpat_token_cancel(t), 0);
	assert_int_equal(atomic_load(&c.n), 0);
	assert_int_equal(cpat_token_on_cancel_remove(hk), 0);
	cpat_token_unref(t);
	cpat_token_unref(p);
}

/*
 * Remove racing cancel: the callback runs XOR remove returns 1; and when
 * remove returns 0 the callback has finished (remove waited for it).
 */
struct slow_cb_state {
	_Atomic int started, finished;
};

static void slow_cb(void *arg, int cause)
{
	struct slow_cb_state *s = arg;
	(void)cause;
	atomic_fetch_add(&s->started, 1);
	for (int i = 0; i < 20; i++)
		th_relax();
	atomic_fetch_add(&s->finished, 1);
}

struct remove_race {
	int role; /* 0: cancel, 1: remove */
	struct cpat_token *volatile tok;
	struct cpat_token_cb *volatile h;
	struct slow_cb_state *volatile st;
	int rc;
	int finished_at_return;
};

static void remove_race_step(void *arg, long trial)
{
	struct remove_race *r = arg;
	(void)trial;
	if (r->role == 0) {
		r->rc = cpat_token_cancel(r->tok);
	} else {
		r->rc = cpat_token_on_cancel_remove(r->h);
		r->finished_at_return = atomic_load(&r->st->finished);
	}
}

TH_TEST_FN(on_cancel_remove_racing_cancel_ran_xor_removed)
{
	(void)state;
	const long trials = TH_SCALED(2000);
	struct remove_race w[2] = {{.role = 0}, {.role = 1}};
	struct th_race race;
	th_race_start(&race, 2, trials, remove_race_step, w, sizeof w[0]);
	long both = 0, neither = 0, twice = 0, not_waited = 0, removed = 0,
	     bad_cancel = 0, bad_reg = 0, bad_watches = 0;
	for (long i = 0; i < trials; i++) {
		struct slow_cb_state st = {0};
		struct cpat_token *tok = mk(NULL);
		struct cpat_token_cb *h = NULL;
		if (cpat_token_on_cancel(tok, slow_cb, &st, &h) != 0)
			bad_reg++;
		w[0].tok = w[1].tok = tok;
		w[0].h = w[1].h = h;
		w[0].st = w[1].st = &st;
		th_race_trial(&race);
		int ran = atomic_load(&st.started);
		if (w[0].rc != 1)
			bad_cancel++;
		if (ran > 1)
			twice++;
		if (ran == 1 && w[1].rc == 1)
			both++;
		if (ran == 0 && w[1].rc != 1)
			neither++;
		if (w[1].rc == 0 && w[1].finished_at_return != 1)
			not_waited++;
		removed += w[1].rc == 1;
		if (cpat__token_nwatches(tok) != 0)
			bad_watches++;
		cpat_token_unref(tok);
	}
	th_race_join(&race);
	fprintf(stderr, "# remove won %ld of %ld races\n", removed, trials);
	assert_int_equal(bad_reg, 0);
	assert_int_equal(bad_cancel, 0);
	assert_int_equal(twice, 0);
	assert_int_equal(both, 0);
	assert_int_equal(neither, 0);
	assert_int_equal(not_waited, 0);
	assert_int_equal(bad_watches, 0);
}

/* A callback that uses the token API on the firing token and others. */
struct reentrant {
	struct cpat_token *self, *other;
	struct cpat_token_cb *own_handle;
	struct counter inner;
	int ran, cause, status, cancel_self, cancel_other, on_cancel_rc,
		inner_at_return, child_rc, child_status, remove_rc;
	_Atomic int done; /* set last: the other fields may be read */
};

static void reentrant_cb(void *arg, int cause)
{
	struct reentrant *r = arg;
	r->ran++;
	r->cause = cause;
	r->status = cpat_token_status(r->self);
	r->cancel_self = cpat_token_cancel(r->self);
	r->cancel_other = cpat_token_cancel(r->other);
	r->on_cancel_rc =
		cpat_token_on_cancel(r->self, count_cb, &r->inner, NULL);
	r->inner_at_return = atomic_load(&r->inner.n);
	struct cpat_token *child = NULL;
	r->child_rc = cpat_token_create(&child, r->self);
	r->child_status = cpat_token_status(child);
	cpat_token_unref(child);
	if (r->own_handle)
		r->remove_rc = cpat_token_on_cancel_remove(r->own_handle);
	atomic_store(&r->done, 1);
}

static void check_reentrant(const struct reentrant *r, int cause)
{
	assert_int_equal(atomic_load(&r->done), 1);
	assert_int_equal(r->ran, 1);
	assert_int_equal(r->cause, cause);
	assert_int_equal(r->status, cause);
	assert_int_equal(r->cancel_self, 0);
	assert_int_equal(r->cancel_other, 1);
	assert_int_equal(cpat_token_status(r->other), -ECANCELED);
	assert_int_equal(r->on_cancel_rc, 0);
	assert_int_equal(r->inner_at_return, 1);
	assert_int_equal(atomic_load(&r->inner.n), 1);
	assert_int_equal(atomic_load(&r->inner.cause), cause);
	assert_int_equal(r->child_rc, 0);
	assert_int_equal(r->child_status, cause);
}

TH_TEST_FN(callback_calling_token_api_on_firing_token_does_not_deadlock)
{
	(void)state;
	/* Fired by cancel, in this thread; the callback removes its own
	 * handle from inside (which must not wait for itself). */
	struct reentrant r;
	memset(&r, 0, sizeof r);
	r.self = mk(NULL);
	r.other = mk(NULL);
	r.remove_rc = -1;
	struct cpat_token_cb *h = NULL;
	assert_int_equal(cpat_token_on_cancel(r.self, reentrant_cb, &r, &h), 0);
	r.own_handle = h;
	assert_int_equal(cpat_token_cancel(r.self), 1);
	check_reentrant(&r, -ECANCELED);
	assert_int_equal(r.remove_rc, 0);
	cpat_token_unref(r.other);
	cpat_token_unref(r.self);

	/* Fired through the parent. */
	memset(&r, 0, sizeof r);
	struct cpat_token *p = mk(NULL);
	r.self = mk(p);
	r.other = mk(NULL);
	assert_int_equal(cpat_token_on_cancel(r.self, reentrant_cb, &r, NULL),
			 0);
	assert_int_equal(cpat_token_cancel(p), 1);
	check_reentrant(&r, -ECANCELED);
	cpat_token_unref(r.other);
	cpat_token_unref(r.self);
	cpat_token_unref(p);

	/* Registered on a fired token: runs at once, in this thread. */
	memset(&r, 0, sizeof r);
	r.self = mk(NULL);
	r.other = mk(NULL);
	assert_int_equal(cpat_token_cancel(r.self), 1);
	assert_int_equal(cpat_token_on_cancel(r.self, reentrant_cb, &r, NULL),
			 0);
	check_reentrant(&r, -ECANCELED);
	cpat_token_unref(r.other);
	cpat_token_unref(r.self);
}

TH_TEST_FN(callback_fired_by_deadline_may_call_token_api)
{
	(void)state;
	struct reentrant r;
	memset(&r, 0, sizeof r);
	int64_t d = cpat_now_ns() + 20 * CPAT_MSEC;
	r.self = mk_deadline(NULL, d);
	r.other = mk(NULL);
	assert_int_equal(cpat_token_on_cancel(r.self, reentrant_cb, &r, NULL),
			 0);
	/* The callback, in the timer thread, cancels `other`: wait for
	 * that, then for the callback to finish. */
	assert_int_equal(cpat_token_wait(r.other, cpat_now_ns() + GENEROUS), 0);
	assert_true(cpat_now_ns() >= d);
	int64_t end = cpat_now_ns() + GENEROUS;
	while (atomic_load(&r.done) == 0 && cpat_now_ns() < end)
		th_relax();
	check_reentrant(&r, -ETIMEDOUT);
	assert_int_equal(cpat__token_nchildren(r.self), 0);
	cpat_token_unref(r.other);
	cpat_token_unref(r.self);
}

TH_TEST_FN(on_cancel_with_null_handle_runs_once_and_leaks_nothing)
{
	(void)state;
	long base = th_alloc_live();
	struct cpat_token *t = mk(NULL);
	struct counter c[4] = {0};
	for (int i = 0; i < 4; i++)
		assert_int_equal(cpat_token_on_cancel(t, count_cb, &c[i], NULL),
				 0);
	assert_int_equal(cpat__token_nwatches(t), 4);
	assert_int_equal(cpat_token_cancel(t), 1);
	assert_int_equal(cpat_token_cancel(t), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(atomic_load(&c[i].n), 1);
	assert_int_equal(cpat__token_nwatches(t), 0);
	cpat_token_unref(t);
	assert_int_equal(th_alloc_live(), base);

	/* Registered on an already fired token. */
	t = mk(NULL);
	assert_int_equal(cpat_token_cancel(t), 1);
	assert_int_equal(cpat_token_on_cancel(t, count_cb, &c[0], NULL), 0);
	assert_int_equal(atomic_load(&c[0].n), 2);
	cpat_token_unref(t);
	assert_int_equal(th_alloc_live(), base);
}

TH_TEST_FN(on_cancel_with_null_handle_on_token_freed_unfired_never_runs)
{
	(void)state;
	long base = th_alloc_live();
	struct cpat_token *p = mk(NULL);
	struct cpat_token *t = mk(p);
	struct counter c[3] = {0};
	for (int i = 0; i < 3; i++)
		assert_int_equal(cpat_token_on_cancel(t, count_cb, &c[i], NULL),
				 0);
	cpat_token_unref(t); /* never fires, never runs, frees them */
	assert_int_equal(cpat__token_nchildren(p), 0);
	assert_int_equal(cpat_token_cancel(p), 1);
	for (int i = 0; i < 3; i++)
		assert_int_equal(atomic_load(&c[i].n), 0);
	cpat_token_unref(p);
	assert_int_equal(th_alloc_live(), base);
}

TH_TEST_FN(register_remove_cycles_leave_no_watches_and_flat_memory)
{
	(void)state;
	struct cpat_token *t = mk(NULL);
	long base = th_alloc_live();
	const long n = TH_SCALED(100000);
	long max_live = base, bad = 0;
	struct counter c = {0};
	for (long i = 0; i < n; i++) {
		struct cpat_token_cb *h = NULL;
		if (cpat_token_on_cancel(t, count_cb, &c, &h) != 0 ||
		    cpat_token_on_cancel_remove(h) != 1)
			bad++;
		if ((i & 1023) == 0 && th_alloc_live() > max_live)
			max_live = th_alloc_live();
	}
	assert_int_equal(bad, 0);
	assert_int_equal(cpat__token_nwatches(t), 0);
	assert_int_equal(cpat__token_refcount(t), 1);
	assert_true(max_live <= base + 4);
	assert_int_equal(th_alloc_live(), base);
	assert_int_equal(cpat_token_cancel(t), 1);
	assert_int_equal(atomic_load(&c.n), 0);
	cpat_token_unref(t);
}

/* ---- lifetime --------------------------------------------------------- */

TH_TEST_FN(child_create_release_cycles_leave_parent_empty_and_memory_flat)
{
	(void)state;
	struct th_rng rng;
	th_rng_init(&rng, 6);
	struct cpat_token *p = mk(NULL);
	long base = th_alloc_live();
	const long n = TH_SCALED(SANITIZED ? 100000 : 1000000);
	long max_live = base, bad = 0;
	enum { BATCH = 8 };
	for (long i = 0; i < n;) {
		/* Batches of children released in a random order, so that
		 * children leave from the middle of the parent's list too. */
		struct cpat_token *c[BATCH];
		int k = 1 + (int)th_rng_below(&rng, BATCH);
		for (int j = 0; j < k; j++)
			if (cpat_token_create(&c[j], p) != 0)
				bad++;
		if ((size_t)k != cpat__token_nchildren(p))
			bad++;
		for (int j = k - 1; j > 0; j--) {
			int x = (int)th_rng_below(&rng, (uint64_t)j + 1);
			struct cpat_token *tmp = c[j];
			c[j] = c[x];
			c[x] = tmp;
		}
		if (th_alloc_live() > max_live)
			max_live = th_alloc_live();
		for (int j = 0; j < k; j++)
			cpat_token_unref(c[j]);
		i += k;
	}
	assert_int_equal(bad, 0);
	assert_int_equal(cpat__token_nchildren(p), 0);
	assert_int_equal(cpat__token_refcount(p), 1);
	/* At most one batch of children alive at once. */
	assert_true(max_live - base <= 4 * BATCH);
	assert_int_equal(th_alloc_live(), base);
	assert_int_equal(cpat_token_status(p), 0);
	cpat_token_unref(p);
}

TH_TEST_FN(deadline_child_create_release_cycles_leave_memory_flat)
{
	(void)state;
	struct cpat_token *p = mk(NULL);
	/* Warm the timer thread up, so its one-time state is in the base. */
	struct cpat_token *warm = mk_deadline(p, cpat_now_ns() + GENEROUS);
	cpat_token_unref(warm);
	long base = th_alloc_live();
	const long n = TH_SCALED(SANITIZED ? 10000 : 100000);
	long max_live = base, bad = 0;
	int64_t far = cpat_now_ns() + 3600 * CPAT_SEC;
	for (long i = 0; i < n; i++) {
		struct cpat_token *c = NULL;
		if (cpat_token_create_deadline(&c, p, far + i) != 0)
			bad++;
		if (th_alloc_live() > max_live)
			max_live = th_alloc_live();
		cpat_token_unref(c);
	}
	assert_int_equal(bad, 0);
	assert_int_equal(cpat__token_nchildren(p), 0);
	assert_int_equal(cpat__token_refcount(p), 1);
	/* Released deadline tokens do not pile up in the timer. */
	fprintf(stderr, "# live blocks: base %ld, max %ld, end %ld\n", base,
		max_live, th_alloc_live());
	assert_true(max_live - base <= 16);
	cpat_token_unref(p);
}

TH_TEST_FN(refcount_hook_counts_owner_children_handles)
{
	(void)state;
	struct cpat_token *t = mk(NULL);
	assert_int_equal(cpat__token_refcount(t), 1);
	assert_ptr_equal(cpat_token_ref(t), t);
	assert_int_equal(cpat__token_refcount(t), 2);
	cpat_token_unref(t);
	assert_int_equal(cpat__token_refcount(t), 1);
	struct cpat_token *c = mk(t);
	assert_int_equal(cpat__token_refcount(t), 2); /* the child's */
	assert_int_equal(cpat__token_refcount(c), 1);
	assert_int_equal(cpat__token_nchildren(t), 1);
	struct counter cnt = {0};
	struct cpat_token_cb *h = NULL;
	assert_int_equal(cpat_token_on_cancel(c, count_cb, &cnt, &h), 0);
	assert_int_equal(cpat__token_refcount(c), 2); /* the handle's */
	assert_int_equal(cpat_token_on_cancel_remove(h), 1);
	assert_int_equal(cpat__token_refcount(c), 1);
	/* Firing changes no reference. */
	assert_int_equal(cpat_token_cancel(t), 1);
	assert_int_equal(cpat__token_refcount(t), 2);
	assert_int_equal(cpat__token_refcount(c), 1);
	cpat_token_unref(c);
	assert_int_equal(cpat__token_refcount(t), 1);
	assert_int_equal(cpat__token_nchildren(t), 0);
	cpat_token_unref(t);
}

TH_TEST_FN(releasing_a_reference_never_fires_the_token)
{
	(void)state;
	struct cpat_token *p = mk(NULL);
	struct cpat_token *c = mk(p);
	struct counter cc = {0}, pc = {0};
	assert_int_equal(cpat_token_on_cancel(p, count_cb, &pc, NULL), 0);
	assert_int_equal(cpat_token_on_cancel(c, count_cb, &cc, NULL), 0);
	/* The parent's owner lets go first: the child keeps it alive, live. */
	cpat_token_ref(c);
	cpat_token_unref(c);
	cpat_token_unref(p);
	assert_int_equal(cpat_token_status(c), 0);
	assert_int_equal(atomic_load(&pc.n), 0);
	assert_int_equal(atomic_load(&cc.n), 0);
	cpat_token_unref(c);
	assert_int_equal(atomic_load(&pc.n), 0);
	assert_int_equal(atomic_load(&cc.n), 0);
}

TH_TEST_FN(null_and_invalid_arguments_are_einval)
{
	(void)state;
	struct cpat_token *t = mk(NULL);
	struct counter c = {0};
	struct cpat_token_cb *h = (struct cpat_token_cb *)&c; /* garbage */
	struct cpat_token *out = t;

	assert_int_equal(cpat_token_cancel(NULL), -EINVAL);
	assert_int_equal(cpat_token_wait(NULL, CPAT_FOREVER), -EINVAL);
	assert_int_equal(cpat_token_wait(NULL, 0), -EINVAL);
	assert_int_equal(cpat_token_wait(t, -5), -EINVAL);
	assert_int_equal(cpat_token_wait(t, INT64_MIN), -EINVAL);
	assert_int_equal(cpat_token_on_cancel(NULL, count_cb, &c, &h), -EINVAL);
	assert_null(h);
	h = (struct cpat_token_cb *)&c;
	assert_int_equal(cpat_token_on_cancel(t, NULL, &c, &h), -EINVAL);
	assert_null(h);
	assert_int_equal(cpat_token_on_cancel(t, NULL, &c, NULL), -EINVAL);
	assert_int_equal(cpat_token_on_cancel_remove(NULL), -EINVAL);
	assert_int_equal(cpat_token_create(NULL, NULL), -EINVAL);
	assert_int_equal(cpat_token_create(NULL, t), -EINVAL);
	assert_int_equal(cpat_token_create_deadline(NULL, NULL, 0), -EINVAL);
	assert_int_equal(cpat_token_create_deadline(&out, NULL, -5), -EINVAL);
	assert_null(out);
	out = t;
	assert_int_equal(cpat_token_create_deadline(&out, t, INT64_MIN),
			 -EINVAL);
	assert_null(out);

	assert_int_equal(cpat_token_status(NULL), 0);
	assert_null(cpat_token_ref(NULL));
	cpat_token_unref(NULL);

	/* None of it touched the token. */
	assert_int_equal(cpat_token_status(t), 0);
	assert_int_equal(cpat__token_refcount(t), 1);
	assert_int_equal(cpat__token_nwatches(t), 0);
	assert_int_equal(cpat__token_nchildren(t), 0);
	assert_int_equal(atomic_load(&c.n), 0);
	cpat_token_unref(t);
}

/* ---- signals ---------------------------------------------------------- */

static _Atomic int my_usr1_runs, my_term_runs;

static void my_usr1_handler(int sig)
{
	(void)sig;
	atomic_fetch_add(&my_usr1_runs, 1);
}

static void my_term_handler(int sig)
{
	(void)sig;
	atomic_fetch_add(&my_term_runs, 1);
}

static void install(int sig, void (*fn)(int))
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = fn;
	sigemptyset(&sa.sa_mask);
	if (sigaction(sig, &sa, NULL) != 0)
		abort();
}

static void (*current_handler(int sig))(int)
{
	struct sigaction sa;
	if (sigaction(sig, NULL, &sa) != 0)
		abort();
	return sa.sa_handler;
}

/*
 * The helper thread that fires a signal token holds a reference while it
 * does: waits (on the test hook) until the caller's is the only one left,
 * so that the caller's release is the last and must restore the handler.
 */
static int only_one_ref(void *arg)
{
	return cpat__token_refcount(arg) == 1;
}

static void settle(struct cpat_token *t)
{
	assert_true(spin_until(only_one_ref, t));
}

static struct cpat_token *mk_signals(struct cpat_token *parent, const int *sigs,
				     size_t n)
{
	struct cpat_token *t = NULL;
	int rc = cpat_token_create_signals(&t, parent, sigs, n);
	assert_int_equal(rc, 0);
	assert_non_null(t);
	return t;
}

TH_TEST_FN(signal_token_fires_ecanceled_on_sigusr1)
{
	(void)state;
	/* Our own handler first: if the library failed to install its own,
	 * the signal would land here instead of killing the binary. */
	install(SIGUSR1, my_usr1_handler);
	int before = atomic_load(&my_usr1_runs);
	const int sigs[] = {SIGUSR1};
	struct cpat_token *p = mk(NULL);
	struct cpat_token *t = mk_signals(p, sigs, 1);
	struct cpat_token *kid = mk(t);
	assert_int_equal(cpat_token_status(t), 0);
	assert_true(current_handler(SIGUSR1) != my_usr1_handler);
	assert_int_equal(raise(SIGUSR1), 0);
	assert_int_equal(cpat_token_wait(t, cpat_now_ns() + GENEROUS), 0);
	assert_int_equal(cpat_token_status(t), -ECANCELED);
	assert_int_equal(cpat_token_wait(kid, cpat_now_ns() + GENEROUS), 0);
	assert_int_equal(cpat_token_status(kid), -ECANCELED);
	assert_int_equal(cpat_token_status(p), 0);
	assert_int_equal(atomic_load(&my_usr1_runs), before);
	cpat_token_unref(kid);
	settle(t);
	cpat_token_unref(t);
	cpat_token_unref(p);
	assert_true(current_handler(SIGUSR1) == my_usr1_handler);
	install(SIGUSR1, SIG_DFL);
}

TH_TEST_FN(signal_token_fires_ecanceled_on_sigterm_from_kill)
{
	(void)state;
	install(SIGTERM, my_term_handler);
	void (*int_before)(int) = current_handler(SIGINT);
	int before = atomic_load(&my_term_runs);
	const int sigs[] = {SIGINT, SIGTERM};
	struct cpat_token *t = mk_signals(NULL, sigs, 2);
	struct counter c = {0};
	assert_int_equal(cpat_token_on_cancel(t, count_cb, &c, NULL), 0);
	assert_int_equal(kill(getpid(), SIGTERM), 0);
	assert_int_equal(cpat_token_wait(t, cpat_now_ns() + GENEROUS), 0);
	assert_int_equal(cpat_token_status(t), -ECANCELED);
	/* The callback ran in the helper thread; let it finish. */
	int64_t end = cpat_now_ns() + GENEROUS;
	while (atomic_load(&c.n) == 0 && cpat_now_ns() < end)
		th_relax();
	assert_int_equal(atomic_load(&c.n), 1);
	assert_int_equal(atomic_load(&c.cause), -ECANCELED);
	assert_int_equal(atomic_load(&my_term_runs), before);
	settle(t);
	cpat_token_unref(t);
	assert_true(current_handler(SIGTERM) == my_term_handler);
	assert_true(current_handler(SIGINT) == int_before);
	install(SIGTERM, SIG_DFL);
}

TH_TEST_FN(one_signal_fires_every_signal_token_watching_it)
{
	(void)state;
	install(SIGUSR1, my_usr1_handler);
	void (*usr2_before)(int) = current_handler(SIGUSR2);
	const int sigs[] = {SIGUSR1};
	const int other[] = {SIGUSR2};
	struct cpat_token *a = mk_signals(NULL, sigs, 1);
	struct cpat_token *b = mk_signals(NULL, sigs, 1);
	struct cpat_token *u2 = mk_signals(NULL, other, 1);
	assert_int_equal(raise(SIGUSR1), 0);
	assert_int_equal(cpat_token_wait(a, cpat_now_ns() + GENEROUS), 0);
	assert_int_equal(cpat_token_wait(b, cpat_now_ns() + GENEROUS), 0);
	assert_int_equal(cpat_token_status(a), -ECANCELED);
	assert_int_equal(cpat_token_status(b), -ECANCELED);
	/* A token watching another signal is untouched. */
	assert_int_equal(cpat_token_status(u2), 0);
	cpat_token_unref(u2);
	settle(b);
	cpat_token_unref(b);
	settle(a);
	cpat_token_unref(a);
	assert_true(current_handler(SIGUSR1) == my_usr1_handler);
	assert_true(current_handler(SIGUSR2) == usr2_before);
	install(SIGUSR1, SIG_DFL);
}

TH_TEST_FN(released_signal_token_restores_the_previous_handler)
{
	(void)state;
	install(SIGUSR1, my_usr1_handler);
	const int sigs[] = {SIGUSR1};

	/* Two tokens watching: releasing one keeps the library's handler. */
	struct cpat_token *a = mk_signals(NULL, sigs, 1);
	struct cpat_token *b = mk_signals(NULL, sigs, 1);
	cpat_token_unref(a);
	assert_true(current_handler(SIGUSR1) != my_usr1_handler);
	int before = atomic_load(&my_usr1_runs);
	assert_int_equal(raise(SIGUSR1), 0);
	assert_int_equal(cpat_token_wait(b, cpat_now_ns() + GENEROUS), 0);
	assert_int_equal(cpat_token_status(b), -ECANCELED);
	assert_int_equal(atomic_load(&my_usr1_runs), before);
	settle(b);
	cpat_token_unref(b);

	/* The last one released: ours is back and runs. */
	assert_true(current_handler(SIGUSR1) == my_usr1_handler);
	before = atomic_load(&my_usr1_runs);
	assert_int_equal(raise(SIGUSR1), 0);
	assert_int_equal(atomic_load(&my_usr1_runs), before + 1);

	/* Create and release without firing: the same. */
	struct cpat_token *c = mk_signals(NULL, sigs, 1);
	cpat_token_unref(c);
	assert_true(current_handler(SIGUSR1) == my_usr1_handler);
	before = atomic_load(&my_usr1_runs);
	assert_int_equal(raise(SIGUSR1), 0);
	assert_int_equal(atomic_load(&my_usr1_runs), before + 1);
	install(SIGUSR1, SIG_DFL);
}

TH_TEST_FN(create_signals_rejects_bad_arguments_with_einval)
{
	(void)state;
	install(SIGUSR1, my_usr1_handler);
	const int good[] = {SIGUSR1};
	const int kill9[] = {SIGUSR1, SIGKILL};
	const int stop[] = {SIGSTOP};
	const int zero[] = {0};
	const int neg[] = {-1};
	const int big[] = {65};
	const int huge[] = {1000};
	int many[65];
	for (int i = 0; i < 65; i++)
		many[i] = SIGUSR1;
	struct {
		const int *sigs;
		size_t n;
	} bad[] = {
		{kill9, 2}, {stop, 1}, {zero, 1}, {neg, 1},   {big, 1},
		{huge, 1},  {good, 0}, {NULL, 1}, {many, 65},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct cpat_token *out =
			(struct cpat_token *)good; /* garbage */
		int rc = cpat_token_create_signals(&out, NULL, bad[i].sigs,
						   bad[i].n);
		if (rc != -EINVAL)
			fprintf(stderr, "# case %zu gave %d\n", i, rc);
		assert_int_equal(rc, -EINVAL);
		assert_null(out);
	}
	assert_int_equal(cpat_token_create_signals(NULL, NULL, good, 1),
			 -EINVAL);
	/* None of it installed anything. */
	assert_true(current_handler(SIGUSR1) == my_usr1_handler);
	install(SIGUSR1, SIG_DFL);
}

/*
 * Exact restoration of the actions signal tokens replace: handler (plain
 * or SA_SIGINFO), flags and mask, for several signals at once, with tokens
 * nested (a signal token below another) and overlapping, released in an
 * order that leaves each signal watched for a while by another token.
 */
static _Atomic int my_info_runs;

static void my_info_handler(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)si;
	(void)uc;
	atomic_fetch_add(&my_info_runs, 1);
}

/* Whether two actions, as sigaction() reports them, are the same. */
static int same_action(const struct sigaction *a, const struct sigaction *b)
{
	if (a->sa_flags != b->sa_flags)
		return 0;
	if ((a->sa_flags & SA_SIGINFO) ? a->sa_sigaction != b->sa_sigaction
				       : a->sa_handler != b->sa_handler)
		return 0;
	for (int s = 1; s < NSIG; s++)
		if (sigismember(&a->sa_mask, s) != sigismember(&b->sa_mask, s))
			return 0;
	return 1;
}

static struct sigaction action_of(int sig)
{
	struct sigaction sa;
	if (sigaction(sig, NULL, &sa) != 0)
		abort();
	return sa;
}

/* Whether sig's action now is @p want. */
static int action_is(int sig, const struct sigaction *want)
{
	struct sigaction now = action_of(sig);
	return same_action(&now, want);
}

TH_TEST_FN(released_signal_tokens_restore_handler_flags_and_mask_exactly)
{
	(void)state;
	enum { NS = 4 };
	const int sig[NS] = {SIGUSR1, SIGUSR2, SIGHUP, SIGRTMIN + 3};
	struct sigaction orig[NS], mine[NS], before[NS];
	for (int i = 0; i < NS; i++) {
		orig[i] = action_of(sig[i]);
		memset(&mine[i], 0, sizeof mine[i]);
		sigemptyset(&mine[i].sa_mask);
		/* Each signal its own shape of action. */
		sigaddset(&mine[i].sa_mask, i & 1 ? SIGWINCH : SIGALRM);
		if (i >= 2)
			sigaddset(&mine[i].sa_mask, SIGRTMIN + 1);
		if (i & 1) {
			mine[i].sa_sigaction = my_info_handler;
			mine[i].sa_flags = SA_SIGINFO | SA_RESTART;
		} else {
			mine[i].sa_handler = my_usr1_handler;
			mine[i].sa_flags = i == 0 ? SA_NODEFER : SA_ONSTACK;
		}
		assert_int_equal(sigaction(sig[i], &mine[i], NULL), 0);
		before[i] = action_of(sig[i]);
	}
	int plain0 = atomic_load(&my_usr1_runs);
	int info0 = atomic_load(&my_info_runs);

	/* a: USR1, USR2; b (a's child): USR2, HUP, RT; c: USR1. */
	const int sa_[] = {SIGUSR1, SIGUSR2};
	const int sb_[] = {SIGUSR2, SIGHUP, SIGRTMIN + 3};
	const int sc_[] = {SIGUSR1};
	struct cpat_token *a = mk_signals(NULL, sa_, 2);
	struct cpat_token *b = mk_signals(a, sb_, 3);
	struct cpat_token *c = mk_signals(NULL, sc_, 1);
	for (int i = 0; i < NS; i++)
		assert_false(action_is(sig[i], &before[i]));

	/* In between, each signal fires the tokens watching it, and only
	 * those; our handlers never run. */
	assert_int_equal(raise(SIGHUP), 0);
	assert_int_equal(cpat_token_wait(b, cpat_now_ns() + GENEROUS), 0);
	assert_int_equal(cpat_token_status(b), -ECANCELED);
	assert_int_equal(cpat_token_status(a), 0);
	assert_int_equal(cpat_token_status(c), 0);
	assert_int_equal(raise(SIGRTMIN + 3), 0); /* b only: already fired */
	assert_int_equal(raise(SIGUSR1), 0);
	assert_int_equal(cpat_token_wait(a, cpat_now_ns() + GENEROUS), 0);
	assert_int_equal(cpat_token_wait(c, cpat_now_ns() + GENEROUS), 0);
	assert_int_equal(cpat_token_status(a), -ECANCELED);
	assert_int_equal(cpat_token_status(c), -ECANCELED);
	assert_int_equal(atomic_load(&my_usr1_runs), plain0);
	assert_int_equal(atomic_load(&my_info_runs), info0);

	/* c released: USR1 is still a's. */
	settle(c);
	cpat_token_unref(c);
	assert_false(action_is(SIGUSR1, &before[0]));
	/* b released (a keeps it alive as a parent only through b's
	 * reference, which goes): HUP and RT come back; USR2 is a's. */
	settle(b);
	cpat_token_unref(b);
	assert_true(action_is(SIGHUP, &before[2]));
	assert_true(action_is(SIGRTMIN + 3, &before[3]));
	assert_false(action_is(SIGUSR2, &before[1]));
	assert_int_equal(raise(SIGHUP), 0);
	assert_int_equal(atomic_load(&my_usr1_runs), plain0 + 1);
	assert_int_equal(raise(SIGRTMIN + 3), 0);
	assert_int_equal(atomic_load(&my_info_runs), info0 + 1);
	/* The last one: every action is back, and ours run again. */
	settle(a);
	cpat_token_unref(a);
	for (int i = 0; i < NS; i++)
		assert_true(action_is(sig[i], &before[i]));
	assert_int_equal(raise(SIGUSR1), 0);
	assert_int_equal(raise(SIGUSR2), 0);
	assert_int_equal(atomic_load(&my_usr1_runs), plain0 + 2);
	assert_int_equal(atomic_load(&my_info_runs), info0 + 2);

	/* Nested creation without firing: the same, whatever the order. */
	struct cpat_token *x = mk_signals(NULL, sb_, 3);
	struct cpat_token *y = mk_signals(x, sb_, 3);
	struct cpat_token *z = mk_signals(y, sa_, 2);
	cpat_token_unref(x); /* y and z keep it (as a parent) */
	for (int i = 0; i < NS; i++)
		assert_false(action_is(sig[i], &before[i]));
	cpat_token_unref(y);
	assert_false(action_is(SIGUSR2, &before[1]));
	cpat_token_unref(z);
	for (int i = 0; i < NS; i++) {
		assert_true(action_is(sig[i], &before[i]));
		assert_int_equal(sigaction(sig[i], &orig[i], NULL), 0);
	}
}

/*
 * A signal whose action cannot be changed (glibc reserves 32 and 33 for
 * its own threads) in the middle of the list: create_signals gives
 * -EINVAL and undoes the signals below it, restoring the previous actions
 * exactly, and leaves another token watching one of them watching.
 */
static int unchangeable_signal(void)
{
	for (int s = 1; s <= 64 && s < NSIG; s++) {
		struct sigaction sa;
		if (s != SIGKILL && s != SIGSTOP &&
		    sigaction(s, NULL, &sa) != 0)
			return s;
	}
	return 0;
}

TH_TEST_FN(create_signals_with_unchangeable_signal_einval_undoes_the_rest)
{
	(void)state;
	int bad = unchangeable_signal();
	if (bad == 0 || bad < SIGUSR2) {
		fprintf(stderr, "# no unchangeable signal above SIGUSR2\n");
		skip();
	}
	struct sigaction orig1 = action_of(SIGUSR1), orig2 = action_of(SIGUSR2);
	install(SIGUSR1, my_usr1_handler);
	install(SIGUSR2, my_term_handler);
	struct sigaction before1 = action_of(SIGUSR1);
	struct sigaction before2 = action_of(SIGUSR2);
	long live = th_alloc_live();
	const int sigs[] = {SIGUSR1, bad, SIGUSR2};

	/* Nobody else watching: both come back. */
	struct cpat_token *t = (struct cpat_token *)&t;
	assert_int_equal(cpat_token_create_signals(&t, NULL, sigs, 3), -EINVAL);
	assert_null(t);
	assert_int_equal(th_alloc_live(), live);
	assert_true(action_is(SIGUSR1, &before1));
	assert_true(action_is(SIGUSR2, &before2));

	/* A token already watching USR1: it keeps the library's handler and
	 * still fires; USR2 comes back. A parent is left as it was. */
	const int one[] = {SIGUSR1};
	struct cpat_token *p = mk(NULL);
	struct cpat_token *w = mk_signals(NULL, one, 1);
	t = (struct cpat_token *)&t;
	assert_int_equal(cpat_token_create_signals(&t, p, sigs, 3), -EINVAL);
	assert_null(t);
	assert_int_equal(cpat__token_nchildren(p), 0);
	assert_int_equal(cpat__token_refcount(p), 1);
	assert_false(action_is(SIGUSR1, &before1));
	assert_true(action_is(SIGUSR2, &before2));
	int runs = atomic_load(&my_usr1_runs);
	assert_int_equal(raise(SIGUSR1), 0);
	assert_int_equal(cpat_token_wait(w, cpat_now_ns() + GENEROUS), 0);
	assert_int_equal(cpat_token_status(w), -ECANCELED);
	assert_int_equal(atomic_load(&my_usr1_runs), runs);
	settle(w);
	cpat_token_unref(w);
	cpat_token_unref(p);
	assert_true(action_is(SIGUSR1, &before1));
	assert_int_equal(th_alloc_live(), live);
	assert_int_equal(sigaction(SIGUSR1, &orig1, NULL), 0);
	assert_int_equal(sigaction(SIGUSR2, &orig2, NULL), 0);
}

/* ---- allocation failure ----------------------------------------------- */

enum { MAX_SITES = 32 };

/* make(&out, arg) under th_alloc_sweep(), in both modes: every failure
 * must be -ENOMEM with *out NULL and nothing leaked; the token made on
 * success is released. */
struct make_ctx {
	int (*make)(struct cpat_token **, void *);
	void *arg;
	struct cpat_token *out;
};

static int make_try(void *ctx)
{
	struct make_ctx *m = ctx;
	m->out = (struct cpat_token *)&m->out;
	return m->make(&m->out, m->arg);
}

static void make_check(void *ctx, int rc)
{
	struct make_ctx *m = ctx;
	if (rc != 0) {
		assert_null(m->out);
		return;
	}
	assert_non_null(m->out);
	cpat_token_unref(m->out);
}

/* Returns the number of allocation sites found. */
static int fail_each_site(int (*make)(struct cpat_token **, void *), void *arg,
			  const char *what)
{
	struct make_ctx m = {.make = make, .arg = arg};
	struct th_alloc_sweep sw = {.create = make_try,
				    .check = make_check,
				    .ctx = &m,
				    .max_k = MAX_SITES,
				    .persistent = 1,
				    .what = what};
	return (int)th_alloc_sweep(&sw);
}

static int make_plain(struct cpat_token **out, void *parent)
{
	return cpat_token_create(out, parent);
}

static int make_deadline(struct cpat_token **out, void *parent)
{
	return cpat_token_create_deadline(out, parent,
					  cpat_now_ns() + GENEROUS);
}

static int make_signals(struct cpat_token **out, void *parent)
{
	static const int sigs[] = {SIGUSR1, SIGUSR2};
	int rc = cpat_token_create_signals(out, parent, sigs, 2);
	/* A failed create leaves the previous handlers in place. */
	if (rc != 0 && (current_handler(SIGUSR1) != my_usr1_handler ||
			current_handler(SIGUSR2) != my_term_handler))
		return -12345;
	return rc;
}

TH_TEST_FN(allocation_failure_in_create_is_enomem_and_leaks_nothing)
{
	(void)state;
	struct cpat_token *p = mk(NULL);
	int sites = fail_each_site(make_plain, NULL, "create root");
	fprintf(stderr, "# create: %d allocation site(s)\n", sites);
	assert_true(sites >= 1);
	sites = fail_each_site(make_plain, p, "create child");
	assert_true(sites >= 1);
	assert_int_equal(cpat__token_nchildren(p), 0);
	assert_int_equal(cpat__token_refcount(p), 1);
	/* A fired parent: the born-fired path. */
	assert_int_equal(cpat_token_cancel(p), 1);
	sites = fail_each_site(make_plain, p, "create child of fired");
	assert_true(sites >= 1);
	assert_int_equal(cpat__token_refcount(p), 1);
	cpat_token_unref(p);
}

TH_TEST_FN(allocation_failure_in_create_deadline_is_enomem_and_leaks_nothing)
{
	(void)state;
	/* The timer thread's one-time state is made before the baseline. */
	struct cpat_token *warm = mk_deadline(NULL, cpat_now_ns() + GENEROUS);
	cpat_token_unref(warm);
	struct cpat_token *p = mk(NULL);
	int sites = fail_each_site(make_deadline, NULL, "create_deadline");
	fprintf(stderr, "# create_deadline: %d allocation site(s)\n", sites);
	assert_true(sites >= 1);
	sites = fail_each_site(make_deadline, p, "create_deadline child");
	assert_true(sites >= 1);
	assert_int_equal(cpat__token_nchildren(p), 0);
	assert_int_equal(cpat__token_refcount(p), 1);
	cpat_token_unref(p);
}

TH_TEST_FN(allocation_failure_in_create_signals_is_enomem_and_leaks_nothing)
{
	(void)state;
	install(SIGUSR1, my_usr1_handler);
	install(SIGUSR2, my_term_handler);
	/* The helper thread's one-time state is made before the baseline. */
	const int sigs[] = {SIGUSR1};
	struct cpat_token *warm = mk_signals(NULL, sigs, 1);
	cpat_token_unref(warm);
	struct cpat_token *p = mk(NULL);
	int sites = fail_each_site(make_signals, NULL, "create_signals");
	fprintf(stderr, "# create_signals: %d allocation site(s)\n", sites);
	assert_true(sites >= 1);
	sites = fail_each_site(make_signals, p, "create_signals child");
	assert_true(sites >= 1);
	assert_int_equal(cpat__token_nchildren(p), 0);
	cpat_token_unref(p);
	assert_true(current_handler(SIGUSR1) == my_usr1_handler);
	assert_true(current_handler(SIGUSR2) == my_term_handler);
	install(SIGUSR1, SIG_DFL);
	install(SIGUSR2, SIG_DFL);
}

static void on_cancel_failure_sites(int fired, int with_handle)
{
	long base = th_alloc_live();
	for (int k = 1; k <= MAX_SITES; k++) {
		struct cpat_token *t = mk(NULL);
		if (fired)
			assert_int_equal(cpat_token_cancel(t), 1);
		struct counter c = {0};
		struct cpat_token_cb *h = (struct cpat_token_cb *)&c;
		th_alloc_fail_at(k, 0);
		int rc = cpat_token_on_cancel(t, count_cb, &c,
					      with_handle ? &h : NULL);
		th_alloc_fail_at(0, 0);
		if (rc == 0) {
			if (fired)
				assert_int_equal(atomic_load(&c.n), 1);
			assert_int_equal(cpat_token_cancel(t), !fired);
			assert_int_equal(atomic_load(&c.n), 1);
			if (with_handle)
				assert_int_equal(cpat_token_on_cancel_remove(h),
						 0);
			cpat_token_unref(t);
			assert_int_equal(th_alloc_live(), base);
			return;
		}
		assert_int_equal(rc, -ENOMEM);
		if (with_handle)
			assert_null(h);
		assert_int_equal(cpat__token_nwatches(t), 0);
		assert_int_equal(cpat__token_refcount(t), 1);
		cpat_token_cancel(t);
		assert_int_equal(atomic_load(&c.n), 0); /* never runs */
		cpat_token_unref(t);
		assert_int_equal(th_alloc_live(), base);
	}
	fail_msg("more allocation sites than MAX_SITES");
}

TH_TEST_FN(allocation_failure_in_on_cancel_is_enomem_and_fn_never_runs)
{
	(void)state;
	for (int fired = 0; fired <= 1; fired++)
		for (int with_handle = 0; with_handle <= 1; with_handle++)
			on_cancel_failure_sites(fired, with_handle);
}

/* The signal helper's pipe cannot be made (no file descriptor left):
 * create_signals gives -EAGAIN, *out NULL, nothing installed or leaked.
 * Runs before the helper is first started (the next test starts it). */
TH_TEST_FN(create_signals_pipe_failure_is_eagain_and_installs_nothing)
{
	(void)state;
	enum { LIMIT = 128 };
	int sigs[] = {SIGUSR2};
	struct sigaction before = action_of(SIGUSR2);
	long live = th_alloc_live();
	struct rlimit old, low;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	if (low.rlim_cur > LIMIT)
		low.rlim_cur = LIMIT;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	/* Take every descriptor below the limit. */
	int fds[LIMIT], n = 0, fd;
	while (n < LIMIT && (fd = dup(2)) >= 0)
		fds[n++] = fd;
	int dup_errno = errno;
	struct cpat_token *t = (struct cpat_token *)&t;
	int rc = cpat_token_create_signals(&t, NULL, sigs, 1);
	for (int i = 0; i < n; i++)
		close(fds[i]);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	assert_int_equal(dup_errno, EMFILE);
	assert_int_equal(rc, -EAGAIN);
	assert_null(t);
	assert_int_equal(th_alloc_live(), live);
	assert_true(action_is(SIGUSR2, &before));
}

/* The timer thread cannot be started: create_deadline gives -EAGAIN,
 * *out NULL, the parent untouched, nothing leaked; the next call starts
 * it. Runs before any other deadline token (the thread starts once). */
TH_TEST_FN(create_deadline_timer_thread_failure_is_eagain_then_recovers)
{
	(void)state;
	long live = th_alloc_live();
	struct cpat_token *p = mk(NULL);
	for (int with_parent = 1; with_parent >= 0; with_parent--) {
		struct cpat_token *t = (struct cpat_token *)&t;
		cpat__test_fail_thread_at(1, false);
		int rc = cpat_token_create_deadline(&t, with_parent ? p : NULL,
						    cpat_now_ns() + GENEROUS);
		cpat__test_fail_thread_at(0, false);
		assert_int_equal(rc, -EAGAIN);
		assert_null(t);
		assert_int_equal(cpat__token_nchildren(p), 0);
		assert_int_equal(cpat__token_refcount(p), 1);
	}
	assert_int_equal(cpat_token_status(p), 0);
	cpat_token_unref(p);
	assert_int_equal(th_alloc_live(), live);
	/* Recovered: a short deadline fires, not before it. */
	int64_t dl = cpat_now_ns() + 20 * CPAT_MSEC;
	struct cpat_token *t = mk_deadline(NULL, dl);
	assert_int_equal(cpat_token_wait(t, dl + GENEROUS), 0);
	assert_true(cpat_now_ns() >= dl);
	assert_int_equal(cpat_token_status(t), -ETIMEDOUT);
	cpat_token_unref(t);
}

/* The signal helper thread cannot be started: create_signals gives -EAGAIN,
 * *out NULL, nothing installed; the next call starts it. Runs before any
 * other signal test (the helper is started once per process). */
TH_TEST_FN(create_signals_helper_thread_failure_is_eagain_then_recovers)
{
	(void)state;
	int sigs[] = {SIGUSR2};
	struct sigaction before, after;
	assert_int_equal(sigaction(SIGUSR2, NULL, &before), 0);
	long live = th_alloc_live();
	struct cpat_token *t = (struct cpat_token *)&t;
	cpat__test_fail_thread_at(1, false);
	int rc = cpat_token_create_signals(&t, NULL, sigs, 1);
	cpat__test_fail_thread_at(0, false);
	assert_int_equal(rc, -EAGAIN);
	assert_null(t);
	assert_int_equal(th_alloc_live(), live);
	assert_int_equal(sigaction(SIGUSR2, NULL, &after), 0);
	assert_true(after.sa_handler == before.sa_handler);
	assert_int_equal(cpat_token_create_signals(&t, NULL, sigs, 1), 0);
	assert_int_equal(cpat_token_status(t), 0);
	cpat_token_unref(t);
}

/* Deadline tokens released in an order that takes each out of the middle of
 * the timer heap: the others still fire, none before its deadline, and a
 * released one never fires anything. */
TH_TEST_FN(deadline_tokens_released_out_of_order_leave_the_rest_on_time)
{
	(void)state;
	enum { N = 16 };
	struct th_rng rng;
	th_rng_init(&rng, 77);
	struct cpat_token *far[N], *near;
	int64_t now = cpat_now_ns();
	/* Far deadlines in a random order, so that the heap has depth. */
	for (int i = 0; i < N; i++)
		assert_int_equal(
			cpat_token_create_deadline(
				&far[i], NULL,
				now + (int64_t)(10 + th_rng_below(&rng, 50)) *
						CPAT_SEC),
			0);
	int64_t dl = now + 30 * CPAT_MSEC;
	assert_int_equal(cpat_token_create_deadline(&near, NULL, dl), 0);
	/* Release the far ones in a random order (most are not the root). */
	int order[N];
	for (int i = 0; i < N; i++)
		order[i] = i;
	for (int i = N - 1; i > 0; i--) {
		int j = (int)th_rng_below(&rng, (uint64_t)i + 1);
		int x = order[i];
		order[i] = order[j];
		order[j] = x;
	}
	for (int i = 0; i < N / 2; i++)
		cpat_token_unref(far[order[i]]);
	assert_int_equal(cpat_token_wait(near, now + 30 * CPAT_SEC), 0);
	assert_true(cpat_now_ns() >= dl);
	assert_int_equal(cpat_token_status(near), -ETIMEDOUT);
	for (int i = N / 2; i < N; i++) {
		assert_int_equal(cpat_token_status(far[order[i]]), 0);
		cpat_token_unref(far[order[i]]);
	}
	cpat_token_unref(near);
}

/* The timer thread is named "cpat-timer" (top -H, gdb, perf): once a
 * deadline token has fired, some thread of the process has that name. */
TH_TEST_FN(timer_thread_named_cpat_timer)
{
	(void)state;
#ifdef __linux__
	struct cpat_token *t = NULL;
	assert_int_equal(
		cpat_token_create_deadline(&t, NULL, cpat_now_ns() + CPAT_MSEC),
		0);
	assert_int_equal(cpat_token_wait(t, CPAT_FOREVER), 0);
	assert_int_equal(cpat_token_status(t), -ETIMEDOUT);
	cpat_token_unref(t);
	assert_true(th_count_threads_named("cpat-timer") >= 1);
#else
	skip();
#endif
}

int main(void)
{
	/* Before the first token, and for the whole run. */
	th_alloc_install();
	const struct CMUnitTest tests[] = {
		TH_TEST(create_signals_pipe_failure_is_eagain_and_installs_nothing),
		TH_TEST(create_signals_helper_thread_failure_is_eagain_then_recovers),
		TH_TEST(create_deadline_timer_thread_failure_is_eagain_then_recovers),
		TH_TEST(token_starts_live_and_cancel_fires_it_with_ecanceled),
		TH_TEST(cancel_is_idempotent_one_then_zero_and_callbacks_run_once),
		TH_TEST(concurrent_cancels_fire_once_and_each_returns_after_the_tree),
		TH_TEST(cancel_root_of_random_tree_fires_every_descendant_before_return),
		TH_TEST(cancel_inner_node_leaves_parent_and_siblings_live),
		TH_TEST(deadline_tokens_released_out_of_order_leave_the_rest_on_time),
		TH_TEST(child_of_a_fired_parent_is_born_fired_with_its_cause),
		TH_TEST(child_created_while_parent_is_cancelled_is_always_born_fired),
		TH_TEST(every_node_cancelled_from_its_own_thread_no_deadlock_all_fired),
		TH_TEST(deadline_token_fires_etimedout_never_before_its_deadline),
		TH_TEST(deadline_status_read_after_deadline_reports_etimedout),
		TH_TEST(child_status_read_after_inherited_deadline_reports_etimedout),
		TH_TEST(child_with_later_deadline_fires_with_parent_etimedout),
		TH_TEST(child_with_earlier_deadline_fires_alone_and_not_before_it),
		TH_TEST(deadline_of_grandparent_bounds_every_descendant),
		TH_TEST(past_deadline_gives_token_born_fired_etimedout),
		TH_TEST(forever_deadline_gives_a_plain_live_child),
		TH_TEST(first_cause_wins_deadline_then_cancel_stays_etimedout),
		TH_TEST(first_cause_wins_cancel_then_deadline_stays_ecanceled),
		TH_TEST(wait_with_deadline_returns_etimedout_not_before_it),
		TH_TEST(cancel_wakes_every_waiter_with_zero),
		TH_TEST(token_released_under_waiter_then_fired_by_parent_is_safe),
		TH_TEST(wait_on_deadline_child_returns_when_its_deadline_fires),
		TH_TEST(on_cancel_runs_exactly_once_in_the_firing_thread),
		TH_TEST(on_cancel_on_fired_token_runs_at_once_in_calling_thread),
		TH_TEST(on_cancel_never_runs_after_remove_returned_one),
		TH_TEST(on_cancel_remove_racing_cancel_ran_xor_removed),
		TH_TEST(callback_calling_token_api_on_firing_token_does_not_deadlock),
		TH_TEST(callback_fired_by_deadline_may_call_token_api),
		TH_TEST(on_cancel_with_null_handle_runs_once_and_leaks_nothing),
		TH_TEST(on_cancel_with_null_handle_on_token_freed_unfired_never_runs),
		TH_TEST(register_remove_cycles_leave_no_watches_and_flat_memory),
		TH_TEST(child_create_release_cycles_leave_parent_empty_and_memory_flat),
		TH_TEST(deadline_child_create_release_cycles_leave_memory_flat),
		TH_TEST(refcount_hook_counts_owner_children_handles),
		TH_TEST(releasing_a_reference_never_fires_the_token),
		TH_TEST(null_and_invalid_arguments_are_einval),
		TH_TEST(signal_token_fires_ecanceled_on_sigusr1),
		TH_TEST(signal_token_fires_ecanceled_on_sigterm_from_kill),
		TH_TEST(one_signal_fires_every_signal_token_watching_it),
		TH_TEST(released_signal_token_restores_the_previous_handler),
		TH_TEST(create_signals_rejects_bad_arguments_with_einval),
		TH_TEST(released_signal_tokens_restore_handler_flags_and_mask_exactly),
		TH_TEST(create_signals_with_unchangeable_signal_einval_undoes_the_rest),
		TH_TEST(allocation_failure_in_create_is_enomem_and_leaks_nothing),
		TH_TEST(allocation_failure_in_create_deadline_is_enomem_and_leaks_nothing),
		TH_TEST(allocation_failure_in_create_signals_is_enomem_and_leaks_nothing),
		TH_TEST(allocation_failure_in_on_cancel_is_enomem_and_fn_never_runs),
		TH_TEST(timer_thread_named_cpat_timer),
	};
	return TH_RUN("token", tests);
}
