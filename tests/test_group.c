/*
 * Tests of error groups (cpattern/group.h): the first error wins, the
 * group token is cancelled on it (or not) and always when wait returns,
 * the concurrency limit holds and is reached, go after wait is refused,
 * and all of it on a pool as on the group's own threads.
 *
 * Tasks record into their own structs (struct job of pool_testlib.h, or
 * the small structs below); the main thread asserts after cpat_group_wait()
 * or after joining. Nothing sleeps: a task that must stay running blocks on
 * a gate token the main thread opens.
 */
#include "pool_testlib.h"

/* Runs each test body on the group's own threads (pool NULL) and on a
 * pool of @p workers: where_init() makes the pool (or not) and a ctx for
 * the body's jobs (w->c), where_group() that and the group of the body
 * (w->g), and where_fini() destroys w->g (if any), the pool and the ctx. */
struct where {
	struct cpat_pool *pool;
	const char *name;
	struct ctx c;
	struct cpat_group *g;
};

static void where_init(struct where *w, int on_pool, unsigned workers)
{
	w->pool = on_pool ? mkpool(workers, 16, CPAT_POOL_BLOCK) : NULL;
	w->name = on_pool ? "pool" : "own threads";
	ctx_init(&w->c);
	w->g = NULL;
}

static struct cpat_group *mkgroup(struct cpat_pool *pool, size_t limit,
				  int cancel_on_error,
				  struct cpat_token *parent)
{
	struct cpat_group_opts o;
	cpat_group_opts_init(&o);
	o.pool = pool;
	o.limit = limit;
	o.cancel_on_error = cancel_on_error;
	o.parent = parent;
	struct cpat_group *g = NULL;
	int rc = cpat_group_create(&g, &o);
	if (rc != 0 || g == NULL) {
		fprintf(stderr, "cpat_group_create = %d\n", rc);
		abort();
	}
	return g;
}

static struct cpat_group *where_group(struct where *w, int on_pool,
				      unsigned workers, size_t limit,
				      int cancel_on_error,
				      struct cpat_token *parent)
{
	where_init(w, on_pool, workers);
	w->g = mkgroup(w->pool, limit, cancel_on_error, parent);
	return w->g;
}

static void where_fini(struct where *w)
{
	cpat_group_destroy(w->g);
	cpat_pool_destroy(w->pool);
	ctx_fini(&w->c);
}

static int go_job(struct cpat_group *g, struct job *j)
{
	return cpat_group_go(g, job_fn, j);
}

/* ---- arguments ---------------------------------------------------------- */

TH_TEST_FN(group_bad_arguments_einval)
{
	(void)state;
	struct cpat_group_opts o;
	cpat_group_opts_init(NULL); /* no-op */
	cpat_group_opts_init(&o);
	assert_null(o.pool);
	assert_int_equal(o.limit, 0);
	assert_int_equal(o.cancel_on_error, 1);
	assert_null(o.parent);
	assert_int_equal(cpat_group_create(NULL, &o), -EINVAL);
	assert_int_equal(cpat_group_create(NULL, NULL), -EINVAL);

	struct cpat_group *g = NULL;
	assert_int_equal(cpat_group_create(&g, NULL), 0);
	assert_non_null(g);
	struct job j;
	job_init(&j, NULL, J_PLAIN, 0);
	assert_int_equal(cpat_group_go(NULL, job_fn, &j), -EINVAL);
	assert_int_equal(cpat_group_go(g, NULL, &j), -EINVAL);
	assert_int_equal(cpat_group_try_go(NULL, job_fn, &j), -EINVAL);
	assert_int_equal(cpat_group_try_go(g, NULL, &j), -EINVAL);
	assert_int_equal(cpat_group_wait(NULL), -EINVAL);
	assert_null(cpat_group_token(NULL));
	assert_non_null(cpat_group_token(g));
	/* The refused calls changed nothing. */
	assert_int_equal(cpat_token_status(cpat_group_token(g)), 0);
	assert_int_equal(cpat_group_wait(g), 0);
	assert_int_equal(atomic_load(&j.runs), 0);
	cpat_group_destroy(g);
	cpat_group_destroy(NULL); /* no-op */
}

static int create_limit_3(void *arg)
{
	struct cpat_group **g = arg;
	struct cpat_group_opts o;
	cpat_group_opts_init(&o);
	o.limit = 3;
	*g = (struct cpat_group *)g;
	return cpat_group_create(g, &o);
}

static void check_limit_3(void *arg, int rc)
{
	struct cpat_group **g = arg;
	if (rc == 0) {
		assert_non_null(*g);
		cpat_group_destroy(*g);
	} else {
		assert_null(*g);
	}
}

TH_TEST_FN(group_create_enomem_at_every_allocation_leaks_nothing)
{
	(void)state;
	th_alloc_install();
	long base = th_alloc_live();
	struct cpat_group *created;
	struct th_alloc_sweep sw = {.create = create_limit_3,
				    .check = check_limit_3,
				    .ctx = &created,
				    .max_k = 64,
				    .what = "group_create"};
	th_alloc_sweep(&sw);
	/* go under allocation failure: started (no allocation needed) or
	 * -ENOMEM, and then the task never runs. */
	for (int on_pool = 0; on_pool < 2; on_pool++) {
		struct where w;
		struct cpat_group *g = where_group(&w, on_pool, 2, 0, 1, NULL);
		struct job j;
		job_init(&j, NULL, J_PLAIN, 0);
		th_alloc_fail_at(1, 1);
		int rc = go_job(g, &j);
		th_alloc_fail_at(0, 0);
		assert_true(rc == 0 || rc == -ENOMEM);
		assert_int_equal(cpat_group_wait(g), 0);
		assert_int_equal(atomic_load(&j.runs), rc == 0 ? 1 : 0);
		where_fini(&w);
		assert_int_equal(th_alloc_live(), base);
	}
	th_alloc_uninstall();
}

/* ---- wait and the first error ---------------------------------------- */

TH_TEST_FN(group_wait_without_errors_returns_zero_and_cancels_token)
{
	(void)state;
	for (int on_pool = 0; on_pool < 2; on_pool++) {
		struct where w;
		struct cpat_group *g = where_group(&w, on_pool, 3, 0, 1, NULL);
		struct cpat_token *tok = cpat_group_token(g);
		enum { N = 20 };
		struct job j[N], gate;
		job_init(&gate, &w.c, J_GATE, 0);
		assert_int_equal(go_job(g, &gate), 0);
		for (int i = 0; i < N; i++) {
			job_init(&j[i], &w.c, J_PLAIN, 0);
			assert_int_equal(go_job(g, &j[i]), 0);
		}
		wait_long(&w.c.finished, N);
		/* All but the gated one finished without error: the token
		 * is still live. */
		assert_int_equal(cpat_token_status(tok), 0);
		ctx_open(&w.c);
		assert_int_equal(cpat_group_wait(g), 0);
		assert_int_equal(atomic_load(&w.c.finished), N + 1);
		for (int i = 0; i < N; i++)
			assert_int_equal(atomic_load(&j[i].runs), 1);
		assert_int_equal(cpat_token_status(tok), -ECANCELED);
		where_fini(&w);
	}
}

TH_TEST_FN(group_first_error_wins_and_cancels_token)
{
	(void)state;
	for (int on_pool = 0; on_pool < 2; on_pool++) {
		struct where w;
		struct cpat_group *g = where_group(&w, on_pool, 6, 0, 1, NULL);
		struct cpat_token *tok = cpat_group_token(g);
		/* Watchers return 99, but only after the token fired, which
		 * only the failing task (7) can cause before wait. */
		struct job watch[4], bad;
		for (int i = 0; i < 4; i++) {
			job_init(&watch[i], &w.c, J_WATCH, 99);
			assert_int_equal(go_job(g, &watch[i]), 0);
		}
		wait_long(&w.c.started, 4);
		assert_int_equal(cpat_token_status(tok), 0);
		job_init(&bad, NULL, J_PLAIN, 7);
		assert_int_equal(go_job(g, &bad), 0);
		/* The token fires on the error, before wait is called. */
		assert_int_equal(cpat_token_wait(tok, CPAT_FOREVER), 0);
		assert_int_equal(cpat_token_status(tok), -ECANCELED);
		int rc = cpat_group_wait(g);
		if (rc != 7)
			fail_msg("%s: wait returned %d", w.name, rc);
		for (int i = 0; i < 4; i++) {
			assert_int_equal(atomic_load(&watch[i].runs), 1);
			assert_int_equal(watch[i].tok_status, -ECANCELED);
		}
		/* After wait, go is refused with -EPIPE. */
		struct job late;
		job_init(&late, NULL, J_PLAIN, 0);
		assert_int_equal(go_job(g, &late), -EPIPE);
		assert_int_equal(atomic_load(&late.runs), 0);
		where_fini(&w);
	}
}

TH_TEST_FN(group_go_after_cancel_on_error_ecanceled_task_never_runs)
{
	(void)state;
	for (int on_pool = 0; on_pool < 2; on_pool++) {
		struct where w;
		struct cpat_group *g = where_group(&w, on_pool, 2, 0, 1, NULL);
		struct job bad, x;
		job_init(&bad, NULL, J_PLAIN, -5);
		assert_int_equal(go_job(g, &bad), 0);
		assert_int_equal(
			cpat_token_wait(cpat_group_token(g), CPAT_FOREVER), 0);
		job_init(&x, NULL, J_PLAIN, 0);
		assert_int_equal(go_job(g, &x), -ECANCELED);
		assert_int_equal(cpat_group_try_go(g, job_fn, &x), -ECANCELED);
		assert_int_equal(cpat_group_wait(g), -5);
		assert_int_equal(atomic_load(&x.runs), 0);
		where_fini(&w);
	}
}

TH_TEST_FN(group_cancel_on_error_off_keeps_token_live_until_wait)
{
	(void)state;
	for (int on_pool = 0; on_pool < 2; on_pool++) {
		struct where w;
		struct cpat_group *g = where_group(&w, on_pool, 3, 0, 0, NULL);
		struct cpat_token *tok = cpat_group_token(g);
		struct job gate, bad, bad2;
		job_init(&gate, &w.c, J_GATE, 0);
		assert_int_equal(go_job(g, &gate), 0);
		job_init(&bad, &w.c, J_PLAIN, 5);
		assert_int_equal(go_job(g, &bad), 0);
		wait_long(&w.c.finished, 1);
		/* Give a wrong cancellation time to happen. */
		give_time(2000);
		assert_int_equal(cpat_token_status(tok), 0);
		/* More tasks can start after the error; a later error does
		 * not replace the first. */
		job_init(&bad2, &w.c, J_PLAIN, 6);
		assert_int_equal(go_job(g, &bad2), 0);
		wait_long(&w.c.finished, 2);
		give_time(1000);
		assert_int_equal(cpat_token_status(tok), 0);
		ctx_open(&w.c);
		assert_int_equal(cpat_group_wait(g), 5);
		assert_int_equal(cpat_token_status(tok), -ECANCELED);
		assert_int_equal(atomic_load(&bad2.runs), 1);
		where_fini(&w);
	}
}

TH_TEST_FN(group_without_limit_runs_all_tasks_at_once)
{
	(void)state;
	enum { N = 16 };
	for (int on_pool = 0; on_pool < 2; on_pool++) {
		struct where w;
		struct cpat_group *g = where_group(&w, on_pool, N, 0, 1, NULL);
		struct job j[N];
		for (int i = 0; i < N; i++) {
			job_init(&j[i], &w.c, J_GATE, 0);
			assert_int_equal(go_job(g, &j[i]), 0);
		}
		/* All N are running at once (none can finish before the
		 * gate opens): a hang here is a named watchdog failure. */
		wait_long(&w.c.started, N);
		ctx_open(&w.c);
		assert_int_equal(cpat_group_wait(g), 0);
		assert_int_equal(atomic_load(&w.c.finished), N);
		where_fini(&w);
	}
}

/* ---- the concurrency limit ------------------------------------------ */

struct lim {
	_Atomic int active, hwm, runs;
	struct cpat_token *gate; /* the first tasks wait on it */
};

struct lim_task {
	struct lim *l;
	int gated;
	int spins;
};

static int lim_fn(void *arg, struct cpat_token *tok)
{
	(void)tok;
	struct lim_task *t = arg;
	struct lim *l = t->l;
	int cur = atomic_fetch_add(&l->active, 1) + 1;
	int h = atomic_load(&l->hwm);
	while (cur > h && !atomic_compare_exchange_weak(&l->hwm, &h, cur))
		;
	atomic_fetch_add(&l->runs, 1);
	if (t->gated)
		cpat_token_wait(l->gate, CPAT_FOREVER);
	for (int i = 0; i < t->spins; i++)
		th_relax();
	atomic_fetch_sub(&l->active, 1);
	return 0;
}

struct goer {
	struct th_barrier *start;
	struct cpat_group *g;
	struct lim_task *tasks;
	int n;
	int bad_rc;
};

static void *goer_main(void *arg)
{
	struct goer *g = arg;
	th_barrier_wait(g->start);
	for (int i = 0; i < g->n; i++) {
		int rc = cpat_group_go(g->g, lim_fn, &g->tasks[i]);
		if (rc != 0 && !g->bad_rc)
			g->bad_rc = rc;
	}
	return NULL;
}

/* @p n tasks of @p l (zeroed otherwise), to be freed by the caller. */
static struct lim_task *lim_tasks(struct lim *l, int n)
{
	struct lim_task *tasks = calloc((size_t)n, sizeof *tasks);
	assert_non_null(tasks);
	for (int i = 0; i < n; i++)
		tasks[i].l = l;
	return tasks;
}

/* @p goers threads, started together, each go()es @p per tasks of
 * @p tasks (goer i: tasks + i * per); then the group is waited for, and
 * every go() must have returned 0. */
static void run_goers(struct cpat_group *g, struct lim_task *tasks, int goers,
		      int per)
{
	struct th_crew crew;
	struct goer gs[TH_CREW_MAX];
	th_crew_init(&crew, (unsigned)goers);
	for (int i = 0; i < goers; i++)
		gs[i] = (struct goer){.start = &crew.start,
				      .g = g,
				      .tasks = tasks + i * per,
				      .n = per};
	th_crew_add_n(&crew, (unsigned)goers, goer_main, gs, sizeof gs[0]);
	th_crew_go(&crew);
	th_crew_join(&crew);
	assert_int_equal(cpat_group_wait(g), 0);
	for (int i = 0; i < goers; i++)
		assert_int_equal(gs[i].bad_rc, 0);
}

TH_TEST_FN(group_concurrency_limit_holds_and_is_reached)
{
	(void)state;
	enum { LIMIT = 3, GOERS = 3 };
	int per = (int)SIZE(100, 30);
	struct th_rng rng;
	th_rng_init(&rng, 51);
	for (int on_pool = 0; on_pool < 2; on_pool++) {
		struct where w;
		struct cpat_group *g =
			where_group(&w, on_pool, 8, LIMIT, 1, NULL);
		struct lim l;
		memset(&l, 0, sizeof l);
		l.gate = mktok(NULL);
		struct lim_task first[LIMIT], extra = {.l = &l};
		for (int i = 0; i < LIMIT; i++) {
			first[i] = (struct lim_task){.l = &l, .gated = 1};
			assert_int_equal(cpat_group_go(g, lim_fn, &first[i]),
					 0);
		}
		/* The limit is reached... */
		while (atomic_load(&l.active) < LIMIT)
			th_relax();
		/* ... and try_go would have to wait. */
		assert_int_equal(cpat_group_try_go(g, lim_fn, &extra), -EAGAIN);
		give_time(500);
		assert_int_equal(atomic_load(&l.runs), LIMIT);
		cpat_token_cancel(l.gate);
		/* Then GOERS threads start many short tasks at once. */
		struct lim_task *tasks = lim_tasks(&l, GOERS * per);
		for (int i = 0; i < GOERS * per; i++)
			tasks[i].spins = (int)th_rng_below(&rng, 30);
		run_goers(g, tasks, GOERS, per);
		assert_int_equal(atomic_load(&l.runs), LIMIT + GOERS * per);
		int hwm = atomic_load(&l.hwm);
		if (hwm != LIMIT)
			fail_msg("%s: high-water mark %d, limit %d", w.name,
				 hwm, LIMIT);
		cpat_token_unref(l.gate);
		free(tasks);
		where_fini(&w);
	}
}

struct go_thread {
	pthread_t t;
	struct cpat_group *g;
	struct job *j;
	int rc;
	_Atomic int finished;
};

static void *go_main(void *arg)
{
	struct go_thread *s = arg;
	s->rc = go_job(s->g, s->j);
	atomic_store(&s->finished, 1);
	return NULL;
}

TH_TEST_FN(group_go_blocked_at_limit_returns_token_cause_task_never_runs)
{
	(void)state;
	for (int variant = 0; variant < 2; variant++) {
		for (int on_pool = 0; on_pool < 2; on_pool++) {
			struct where w;
			where_init(&w, on_pool, 2);
			struct cpat_token *parent = NULL;
			int64_t d = cpat_now_ns() + 20 * CPAT_MSEC;
			if (variant == 0)
				parent = mktok(NULL);
			else
				assert_int_equal(cpat_token_create_deadline(
							 &parent, NULL, d),
						 0);
			/* (where_fini() destroys it) */
			struct cpat_group *g = w.g =
				mkgroup(w.pool, 1, 1, parent);
			struct job gate, x;
			job_init(&gate, &w.c, J_GATE, 0);
			job_init(&x, NULL, J_PLAIN, 0);
			assert_int_equal(go_job(g, &gate), 0);
			wait_long(&w.c.started, 1);
			int rc;
			if (variant == 0) {
				/* There is no hook counting threads blocked
				 * in go: give the goer time to block (the
				 * outcome must be the same if it has not). */
				assert_int_equal(
					cpat_group_try_go(g, job_fn, &x),
					-EAGAIN);
				struct go_thread s = {.g = g, .j = &x};
				th_spawn(&s.t, go_main, &s);
				give_time(2000);
				assert_int_equal(atomic_load(&s.finished), 0);
				cpat_token_cancel(parent);
				th_join(s.t);
				rc = s.rc;
				assert_int_equal(rc, -ECANCELED);
			} else {
				rc = go_job(g, &x);
				assert_int_equal(rc, -ETIMEDOUT);
				assert_true(cpat_now_ns() >= d);
			}
			assert_int_not_equal(
				cpat_token_status(cpat_group_token(g)), 0);
			ctx_open(&w.c);
			assert_int_equal(cpat_group_wait(g), 0);
			assert_int_equal(atomic_load(&x.runs), 0);
			assert_int_equal(atomic_load(&gate.runs), 1);
			cpat_token_unref(parent);
			where_fini(&w);
		}
	}
}

TH_TEST_FN(group_go_blocked_at_limit_proceeds_when_slot_frees)
{
	(void)state;
	for (int on_pool = 0; on_pool < 2; on_pool++) {
		struct where w;
		struct cpat_group *g = where_group(&w, on_pool, 2, 1, 1, NULL);
		struct job gate, x;
		job_init(&gate, &w.c, J_GATE, 0);
		job_init(&x, &w.c, J_PLAIN, 0);
		assert_int_equal(go_job(g, &gate), 0);
		wait_long(&w.c.started, 1);
		struct go_thread s = {.g = g, .j = &x};
		th_spawn(&s.t, go_main, &s);
		give_time(1000);
		assert_int_equal(atomic_load(&s.finished), 0);
		assert_int_equal(atomic_load(&x.runs), 0);
		ctx_open(&w.c);
		th_join(s.t);
		assert_int_equal(s.rc, 0);
		assert_int_equal(cpat_group_wait(g), 0);
		assert_int_equal(atomic_load(&x.runs), 1);
		where_fini(&w);
	}
}

/* ---- lifecycle ---------------------------------------------------------- */

TH_TEST_FN(group_go_and_wait_after_wait_epipe)
{
	(void)state;
	for (int on_pool = 0; on_pool < 2; on_pool++) {
		struct where w;
		struct cpat_group *g = where_group(&w, on_pool, 2, 2, 1, NULL);
		struct job a, x;
		job_init(&a, NULL, J_PLAIN, 0);
		job_init(&x, NULL, J_PLAIN, 0);
		assert_int_equal(go_job(g, &a), 0);
		assert_int_equal(cpat_group_wait(g), 0);
		assert_int_equal(go_job(g, &x), -EPIPE);
		assert_int_equal(cpat_group_try_go(g, job_fn, &x), -EPIPE);
		assert_int_equal(cpat_group_wait(g), 0); /* the same again */
		assert_int_equal(atomic_load(&x.runs), 0);
		assert_int_equal(atomic_load(&a.runs), 1);
		where_fini(&w);
	}
}

struct inner {
	struct cpat_group *g;
	int wait_rc;
	int go_rc[3];
	struct job child[3];
	_Atomic int children_started_before_return;
};

static int inner_fn(void *arg, struct cpat_token *tok)
{
	(void)tok;
	struct inner *in = arg;
	in->wait_rc = cpat_group_wait(in->g);
	for (int i = 0; i < 3; i++)
		in->go_rc[i] = go_job(in->g, &in->child[i]);
	return 0;
}

TH_TEST_FN(group_task_wait_ebusy_and_go_from_task_is_waited_for)
{
	(void)state;
	for (int on_pool = 0; on_pool < 2; on_pool++) {
		struct where w;
		struct cpat_group *g = where_group(&w, on_pool, 4, 0, 1, NULL);
		struct inner in;
		memset(&in, 0, sizeof in);
		in.g = g;
		for (int i = 0; i < 3; i++)
			job_init(&in.child[i], NULL, J_PLAIN, 0);
		assert_int_equal(cpat_group_go(g, inner_fn, &in), 0);
		assert_int_equal(cpat_group_wait(g), 0);
		assert_int_equal(in.wait_rc, -EBUSY);
		for (int i = 0; i < 3; i++) {
			assert_int_equal(in.go_rc[i], 0);
			/* Started by a task of the group: wait counted it. */
			assert_int_equal(atomic_load(&in.child[i].runs), 1);
		}
		where_fini(&w);
	}
}

struct destroy_thread {
	pthread_t t;
	struct cpat_group *g;
	_Atomic int finished;
};

static void *destroy_main(void *arg)
{
	struct destroy_thread *d = arg;
	cpat_group_destroy(d->g);
	atomic_store(&d->finished, 1);
	return NULL;
}

TH_TEST_FN(group_destroy_without_wait_waits_for_tasks)
{
	(void)state;
	for (int on_pool = 0; on_pool < 2; on_pool++) {
		struct where w;
		where_init(&w, on_pool, 3);
		/* Not where_group(): the destroying thread destroys it. */
		struct cpat_group *g = mkgroup(w.pool, 0, 1, NULL);
		struct job j[3];
		for (int i = 0; i < 3; i++) {
			job_init(&j[i], &w.c, J_GATE, 0);
			assert_int_equal(go_job(g, &j[i]), 0);
		}
		wait_long(&w.c.started, 3);
		struct destroy_thread d = {.g = g};
		th_spawn(&d.t, destroy_main, &d);
		give_time(1000);
		assert_int_equal(atomic_load(&d.finished), 0);
		ctx_open(&w.c);
		th_join(d.t);
		assert_int_equal(atomic_load(&w.c.finished), 3);
		where_fini(&w);
	}
}

TH_TEST_FN(group_on_pool_runs_tasks_on_pool_shut_pool_epipe)
{
	(void)state;
	struct cpat_pool *p = mkpool(2, 8, CPAT_POOL_BLOCK);
	struct cpat_group *g = mkgroup(p, 0, 1, NULL);
	enum { N = 30 };
	struct job j[N];
	unsigned long long c0 = stats_of(p).completed;
	for (int i = 0; i < N; i++) {
		job_init(&j[i], NULL, J_PLAIN, 0);
		assert_int_equal(go_job(g, &j[i]), 0);
	}
	assert_int_equal(cpat_group_wait(g), 0);
	for (int i = 0; i < N; i++) {
		assert_int_equal(atomic_load(&j[i].runs), 1);
		assert_false(pthread_equal(j[i].runner, pthread_self()));
	}
	assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
	assert_int_equal(stats_of(p).completed - c0, N);
	cpat_group_destroy(g);
	/* A group on a pool that has been shut down: -EPIPE. */
	g = mkgroup(p, 0, 1, NULL);
	assert_int_equal(
		cpat_pool_shutdown(p, CPAT_POOL_DRAIN, CPAT_FOREVER, NULL), 0);
	struct job x;
	job_init(&x, NULL, J_PLAIN, 0);
	assert_int_equal(go_job(g, &x), -EPIPE);
	assert_int_equal(cpat_group_try_go(g, job_fn, &x), -EPIPE);
	assert_int_equal(cpat_group_wait(g), 0);
	assert_int_equal(atomic_load(&x.runs), 0);
	cpat_group_destroy(g);
	cpat_pool_destroy(p);
}

TH_TEST_FN(group_thread_failure_go_eagain_task_never_runs)
{
	(void)state;
	start_timer_thread();
	struct cpat_group *g = mkgroup(NULL, 0, 1, NULL);
	struct job x, y;
	job_init(&x, NULL, J_PLAIN, 0);
	job_init(&y, NULL, J_PLAIN, 0);
	cpat__test_fail_thread_at(1, true);
	int rc = go_job(g, &x);
	cpat__test_fail_thread_at(0, false);
	assert_int_equal(rc, -EAGAIN);
	assert_int_equal(go_job(g, &y), 0);
	/* A failed go is not a task error. */
	assert_int_equal(cpat_group_wait(g), 0);
	assert_int_equal(atomic_load(&x.runs), 0);
	assert_int_equal(atomic_load(&y.runs), 1);
	cpat_group_destroy(g);
}

/* A task that destroys its own group: refused (the group cannot end under
 * itself), the call returns at once, and the group works on. */
struct self_destroy {
	struct cpat_group *g;
	_Atomic int returned;
	int status_after;
};

static int self_destroy_fn(void *arg, struct cpat_token *tok)
{
	struct self_destroy *sd = arg;
	cpat_group_destroy(sd->g);
	sd->status_after = cpat_token_status(tok);
	atomic_store(&sd->returned, 1);
	return 0;
}

TH_TEST_FN(group_destroy_from_its_own_task_is_refused_group_works_on)
{
	(void)state;
	for (int on_pool = 0; on_pool < 2; on_pool++) {
		struct where w;
		struct cpat_group *g = where_group(&w, on_pool, 2, 0, 1, NULL);
		struct self_destroy sd = {.g = g};
		assert_int_equal(cpat_group_go(g, self_destroy_fn, &sd), 0);
		/* The group still takes tasks after the refused destroy. */
		struct job j;
		job_init(&j, NULL, J_PLAIN, 0);
		assert_int_equal(go_job(g, &j), 0);
		assert_int_equal(cpat_group_wait(g), 0);
		assert_int_equal(atomic_load(&sd.returned), 1);
		assert_int_equal(sd.status_after, 0);
		assert_int_equal(atomic_load(&j.runs), 1);
		where_fini(&w);
	}
}

/* With a limit, a go that fails after taking its slot (no memory for the
 * record or the own pool, no thread for the own pool) gives the slot back:
 * with limit 1, a try_go right after it gets the slot. */
TH_TEST_FN(group_failed_go_at_limit_returns_its_slot)
{
	(void)state;
	start_timer_thread();
	th_alloc_install();
	long base = th_alloc_live();
	for (int mode = 0; mode < 3; mode++) {
		/* 0: memory, own pool; 1: memory, on a pool; 2: thread. */
		int on_pool = mode == 1;
		struct where w;
		struct cpat_group *g = where_group(&w, on_pool, 1, 1, 1, NULL);
		struct job x, y;
		job_init(&x, NULL, J_PLAIN, 0);
		job_init(&y, NULL, J_PLAIN, 0);
		if (mode == 2)
			cpat__test_fail_thread_at(1, true);
		else
			th_alloc_fail_at(1, 1);
		int rc = go_job(g, &x);
		th_alloc_fail_at(0, 0);
		cpat__test_fail_thread_at(0, false);
		assert_int_equal(rc, mode == 2 ? -EAGAIN : -ENOMEM);
		assert_int_equal(cpat_group_try_go(g, job_fn, &y), 0);
		assert_int_equal(cpat_group_wait(g), 0);
		assert_int_equal(atomic_load(&x.runs), 0);
		assert_int_equal(atomic_load(&y.runs), 1);
		where_fini(&w);
		assert_int_equal(th_alloc_live(), base);
	}
	th_alloc_uninstall();
}

TH_TEST_FN(group_parent_cancel_fires_group_token)
{
	(void)state;
	struct cpat_token *parent = mktok(NULL);
	struct ctx c;
	ctx_init(&c);
	struct cpat_group *g = mkgroup(NULL, 0, 1, parent);
	struct job wt;
	job_init(&wt, &c, J_WATCH, 0);
	assert_int_equal(go_job(g, &wt), 0);
	wait_long(&c.started, 1);
	cpat_token_cancel(parent);
	assert_int_equal(cpat_group_wait(g), 0);
	assert_int_equal(wt.tok_status, -ECANCELED);
	cpat_group_destroy(g);
	cpat_token_unref(parent);
	ctx_fini(&c);
}

TH_TEST_FN(group_many_goers_every_task_runs_once)
{
	(void)state;
	enum { GOERS = 4 };
	int per = (int)SIZE(2000, TSAN ? 150 : 400);
	for (int on_pool = 0; on_pool < 2; on_pool++) {
		struct where w;
		struct cpat_group *g = where_group(&w, on_pool, 2, 4, 1, NULL);
		struct lim l;
		memset(&l, 0, sizeof l);
		struct lim_task *tasks = lim_tasks(&l, GOERS * per);
		run_goers(g, tasks, GOERS, per);
		assert_int_equal(atomic_load(&l.runs), GOERS * per);
		assert_true(atomic_load(&l.hwm) <= 4);
		free(tasks);
		where_fini(&w);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		/* Allocator tests first: nothing else allocates yet. */
		TH_TEST(group_create_enomem_at_every_allocation_leaks_nothing),
		TH_TEST(group_bad_arguments_einval),
		TH_TEST(group_wait_without_errors_returns_zero_and_cancels_token),
		TH_TEST(group_first_error_wins_and_cancels_token),
		TH_TEST(group_go_after_cancel_on_error_ecanceled_task_never_runs),
		TH_TEST(group_cancel_on_error_off_keeps_token_live_until_wait),
		TH_TEST(group_without_limit_runs_all_tasks_at_once),
		TH_TEST(group_concurrency_limit_holds_and_is_reached),
		TH_TEST(group_go_blocked_at_limit_returns_token_cause_task_never_runs),
		TH_TEST(group_go_blocked_at_limit_proceeds_when_slot_frees),
		TH_TEST(group_go_and_wait_after_wait_epipe),
		TH_TEST(group_task_wait_ebusy_and_go_from_task_is_waited_for),
		TH_TEST(group_destroy_without_wait_waits_for_tasks),
		TH_TEST(group_on_pool_runs_tasks_on_pool_shut_pool_epipe),
		TH_TEST(group_thread_failure_go_eagain_task_never_runs),
		TH_TEST(group_destroy_from_its_own_task_is_refused_group_works_on),
		TH_TEST(group_failed_go_at_limit_returns_its_slot),
		TH_TEST(group_parent_cancel_fires_group_token),
		TH_TEST(group_many_goers_every_task_runs_once),
	};
	const char *filter = getenv("CPAT_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	return TH_RUN("group", tests);
}
