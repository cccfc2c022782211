/*
 * Tests of dynamic worker pools (cpattern/dynpool.h): the bounds, growth
 * at once when every worker is busy, retirement of idle workers above the
 * minimum (never below it), resize at run time, and thread-creation
 * failures while growing. What dynamic pools share with fixed ones
 * (submit, shutdown, accounting) is tested in test_pool.c.
 *
 * Tasks record into their own struct job (pool_testlib.h); the main thread
 * asserts after the pool is idle or shut down. Worker counts are awaited
 * through cpat_pool_stats() in a th_relax() loop under the watchdog.
 */
#include "pool_testlib.h"

static struct cpat_pool *mkdyn(unsigned min, unsigned max, int64_t idle,
			       size_t cap, int policy)
{
	struct cpat_dynpool_opts o;
	cpat_dynpool_opts_init(&o);
	o.min_workers = min;
	o.max_workers = max;
	o.idle_timeout_ns = idle;
	o.queue_capacity = cap;
	o.policy = policy;
	struct cpat_pool *p = NULL;
	int rc = cpat_dynpool_create(&p, &o);
	if (rc != 0 || p == NULL) {
		fprintf(stderr, "cpat_dynpool_create(%u, %u) = %d\n", min, max,
			rc);
		abort();
	}
	th_watchdog_show("struct cpat_pool", p);
	return p;
}

/* ---- arguments ---------------------------------------------------------- */

TH_TEST_FN(dynpool_create_and_resize_bad_arguments_einval)
{
	(void)state;
	struct cpat_dynpool_opts o;
	struct cpat_pool *p = (struct cpat_pool *)&p;

	cpat_dynpool_opts_init(NULL); /* no-op */
	cpat_dynpool_opts_init(&o);
	assert_int_equal(o.min_workers, 1);
	assert_int_equal(o.max_workers, 16);
	assert_true(o.idle_timeout_ns == CPAT_SEC);
	assert_true(o.queue_capacity >= 1);
	assert_int_equal(o.policy, CPAT_POOL_BLOCK);
	assert_int_equal(o.max_errors, 64);
	assert_int_equal(cpat_dynpool_create(NULL, &o), -EINVAL);

	struct {
		unsigned min, max;
		int64_t idle;
		size_t cap;
		int policy;
	} bad[] = {
		{0, 4, CPAT_MSEC, 8, CPAT_POOL_BLOCK}, /* min 0 */
		{4, 3, CPAT_MSEC, 8, CPAT_POOL_BLOCK}, /* max < min */
		{0, 0, CPAT_MSEC, 8, CPAT_POOL_BLOCK}, /* both 0 */
		{1, 4, 0, 8, CPAT_POOL_BLOCK},         /* idle 0 */
		{1, 4, -1, 8, CPAT_POOL_BLOCK},        /* idle < 0 */
		{1, 4, CPAT_MSEC, 0, CPAT_POOL_BLOCK}, /* capacity 0 */
		{1, 4, CPAT_MSEC, 8, 3},               /* bad policy */
		{1, 4, CPAT_MSEC, 8, -1},              /* bad policy */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		cpat_dynpool_opts_init(&o);
		o.min_workers = bad[i].min;
		o.max_workers = bad[i].max;
		o.idle_timeout_ns = bad[i].idle;
		o.queue_capacity = bad[i].cap;
		o.policy = bad[i].policy;
		p = (struct cpat_pool *)&p;
		int rc = cpat_dynpool_create(&p, &o);
		if (rc != -EINVAL)
			fail_msg("case %zu: %d", i, rc);
		assert_null(p);
	}
	/* min == max is fine; NULL options are the defaults. */
	p = mkdyn(2, 2, CPAT_MSEC, 4, CPAT_POOL_BLOCK);
	cpat_pool_destroy(p);
	p = NULL;
	assert_int_equal(cpat_dynpool_create(&p, NULL), 0);
	assert_int_equal(stats_of(p).workers, 1);

	/* resize */
	assert_int_equal(cpat_dynpool_resize(NULL, 1, 2), -EINVAL);
	assert_int_equal(cpat_dynpool_resize(p, 0, 2), -EINVAL);
	assert_int_equal(cpat_dynpool_resize(p, 3, 2), -EINVAL);
	assert_int_equal(cpat_dynpool_resize(p, 0, 0), -EINVAL);
	assert_int_equal(cpat_dynpool_resize(p, 2, 2), 0);
	assert_int_equal(stats_of(p).workers, 2);
	struct cpat_pool_report r;
	assert_int_equal(
		cpat_pool_shutdown(p, CPAT_POOL_DRAIN, CPAT_FOREVER, &r), 0);
	assert_int_equal(cpat_dynpool_resize(p, 1, 2), -EPIPE);
	cpat_pool_destroy(p);

	/* A fixed pool cannot be resized. */
	struct cpat_pool *fixed = mkpool(2, 4, CPAT_POOL_BLOCK);
	assert_int_equal(cpat_dynpool_resize(fixed, 1, 4), -EINVAL);
	assert_int_equal(stats_of(fixed).workers, 2);
	cpat_pool_destroy(fixed);
}

/* ---- allocation and threads ------------------------------------------- */

struct create_ctx {
	struct cpat_pool *p;
	long threads0;
};

static int create_2_to_5(void *arg)
{
	struct create_ctx *c = arg;
	struct cpat_dynpool_opts o;
	cpat_dynpool_opts_init(&o);
	o.min_workers = 2;
	o.max_workers = 5;
	c->p = (struct cpat_pool *)&c->p;
	return cpat_dynpool_create(&c->p, &o);
}

static void check_2_to_5(void *arg, int rc)
{
	struct create_ctx *c = arg;
	if (rc == 0) {
		assert_non_null(c->p);
		cpat_pool_destroy(c->p);
	} else {
		assert_null(c->p);
	}
	th_assert_threads_back(c->threads0);
}

TH_TEST_FN(dynpool_create_enomem_at_every_allocation_leaks_nothing)
{
	(void)state;
	th_alloc_install();
	struct create_ctx c = {.threads0 = th_count_threads()};
	struct th_alloc_sweep sw = {.create = create_2_to_5,
				    .check = check_2_to_5,
				    .ctx = &c,
				    .max_k = 256,
				    .what = "dynpool_create"};
	th_alloc_sweep(&sw);
	th_alloc_uninstall();
}

TH_TEST_FN(dynpool_create_thread_failure_at_each_of_min_eagain_nothing_left)
{
	(void)state;
	start_timer_thread();
	th_alloc_install();
	long base = th_alloc_live();
	int threads0 = th_count_threads();
	const unsigned MIN = 3;
	for (unsigned k = 1; k <= MIN; k++) {
		struct cpat_pool *p = (struct cpat_pool *)&p;
		struct cpat_dynpool_opts o;
		cpat_dynpool_opts_init(&o);
		o.min_workers = MIN;
		o.max_workers = 8;
		long starts0 = cpat__test_thread_starts();
		cpat__test_fail_thread_at((long)k, false);
		int rc = cpat_dynpool_create(&p, &o);
		cpat__test_fail_thread_at(0, false);
		long starts = cpat__test_thread_starts() - starts0;
		assert_int_equal(rc, -EAGAIN);
		assert_null(p);
		assert_true(starts >= (long)k);
		th_assert_threads_back(threads0);
		assert_int_equal(th_alloc_live(), base);
	}
	th_alloc_uninstall();
}

/* ---- growth and retirement -------------------------------------------- */

TH_TEST_FN(dynpool_grows_at_once_when_tasks_block_then_retires_to_min)
{
	(void)state;
	const unsigned MIN = 1, MAX = 6;
	struct cpat_pool *p =
		mkdyn(MIN, MAX, 2 * CPAT_MSEC, 16, CPAT_POOL_BLOCK);
	struct cpat_pool_stats s = stats_of(p);
	assert_int_equal(s.workers, MIN);
	assert_int_equal(s.spawned, MIN);
	for (int round = 0; round < 3; round++) {
		struct ctx c;
		ctx_init(&c);
		/* MAX blocking tasks run all at once; one more waits. */
		struct job j[7];
		for (unsigned i = 0; i <= MAX; i++) {
			job_init(&j[i], &c, J_GATE, 0);
			struct cpat_task t = job_task(&j[i]);
			assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
		}
		wait_long(&c.started, MAX);
		give_time(1000);
		s = stats_of(p);
		assert_int_equal(atomic_load(&c.started), MAX);
		assert_int_equal(s.workers, MAX);
		assert_int_equal(s.running, MAX);
		assert_int_equal(s.queued, 1);
		assert_int_equal(s.peak_workers, MAX);
		ctx_open(&c);
		assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
		for (unsigned i = 0; i <= MAX; i++)
			assert_int_equal(atomic_load(&j[i].runs), 1);
		/* Idle workers above the minimum retire, down to it. */
		assert_int_equal(wait_workers_le(p, MIN), MIN);
		s = stats_settled(p);
		assert_true(s.retired >=
			    (unsigned long long)(round + 1) * (MAX - MIN));
		assert_int_equal(s.spawned - s.retired, s.workers);
		ctx_fini(&c);
	}
	struct cpat_pool_report r;
	assert_int_equal(
		cpat_pool_shutdown(p, CPAT_POOL_DRAIN, CPAT_FOREVER, &r), 0);
	s = stats_of(p);
	assert_int_equal(s.workers, 0);
	assert_int_equal(s.spawned, s.retired);
	assert_true(s.worker_seconds > 0.0);
	assert_int_equal(r.ran, 21);
	cpat_pool_destroy(p);
}

struct burster {
	pthread_t t;
	struct cpat_pool *pool;
	unsigned min;
	long bursts;
	long tasks;
	long full_retirements;
	int bad_rc;
	_Atomic int finished;
};

static int spin_fn(void *arg, struct cpat_token *tok)
{
	(void)tok;
	long n = (long)(intptr_t)arg;
	for (long i = 0; i < n; i++)
		th_relax();
	return 0;
}

static void *burster_main(void *arg)
{
	struct burster *b = arg;
	struct th_rng rng;
	th_rng_init(&rng, 31);
	for (long i = 0; i < b->bursts; i++) {
		long k = 1 + (long)th_rng_below(&rng, 24);
		for (long m = 0; m < k; m++) {
			struct cpat_task t = {
				.fn = spin_fn,
				.arg = (void *)(intptr_t)th_rng_below(&rng,
								      20)};
			int rc = cpat_pool_submit(b->pool, &t, NULL);
			if (rc != 0 && !b->bad_rc)
				b->bad_rc = rc;
			b->tasks++;
		}
		if (cpat_pool_wait_idle(b->pool, NULL, CPAT_FOREVER) != 0 &&
		    !b->bad_rc)
			b->bad_rc = -1000;
		/* Either let every extra worker retire (the reaper runs
		 * to the minimum), or burst again while they retire. */
		if (th_rng_below(&rng, 2)) {
			wait_workers_le(b->pool, b->min);
			b->full_retirements++;
		} else {
			give_time((long)th_rng_below(&rng, 200));
		}
	}
	atomic_store(&b->finished, 1);
	return NULL;
}

TH_TEST_FN(dynpool_idle_reaper_never_takes_pool_below_min_under_bursts)
{
	(void)state;
	const unsigned MIN = 3, MAX = 12;
	struct cpat_pool *p =
		mkdyn(MIN, MAX, 1 * CPAT_MSEC, 32, CPAT_POOL_BLOCK);
	struct burster b;
	memset(&b, 0, sizeof b);
	b.pool = p;
	b.min = MIN;
	b.bursts = SIZE(300, 40);
	th_spawn(&b.t, burster_main, &b);
	unsigned lowest = ~0u, highest = 0;
	long samples = 0;
	while (!atomic_load(&b.finished)) {
		unsigned w = stats_of(p).workers;
		if (w < lowest)
			lowest = w;
		if (w > highest)
			highest = w;
		samples++;
		th_relax();
	}
	th_join(b.t);
	struct cpat_pool_stats s = stats_settled(p);
	assert_int_equal(b.bad_rc, 0);
	if (lowest < MIN)
		fail_msg("workers fell to %u < min %u (%ld samples)", lowest,
			 MIN, samples);
	assert_true(highest <= MAX);
	assert_true(s.peak_workers <= MAX);
	/* The test exercised both growth and retirement. */
	assert_true(s.peak_workers > MIN);
	assert_true(s.retired > 0);
	assert_int_equal(s.completed, (unsigned long long)b.tasks);
	cpat_pool_destroy(p);
}

/* ---- resize -------------------------------------------------------------- */

struct once_slot {
	_Atomic unsigned char runs, dones;
};

static int once_fn(void *arg, struct cpat_token *tok)
{
	(void)tok;
	struct once_slot *s = arg;
	atomic_fetch_add_explicit(&s->runs, 1, memory_order_relaxed);
	return 0;
}

static void once_done(void *arg, int rc)
{
	struct once_slot *s = arg;
	if (rc == 0)
		atomic_fetch_add_explicit(&s->dones, 1, memory_order_relaxed);
}

struct dsub {
	struct th_barrier *start;
	struct cpat_pool *pool;
	struct once_slot *slots;
	long n;
	int bad_rc;
	_Atomic int *running;
};

static void *dsub_main(void *arg)
{
	struct dsub *s = arg;
	th_barrier_wait(s->start);
	for (long i = 0; i < s->n; i++) {
		struct cpat_task t = {
			.fn = once_fn, .done = once_done, .arg = &s->slots[i]};
		int rc = cpat_pool_submit(s->pool, &t, NULL);
		if (rc != 0) {
			s->bad_rc = rc;
			break;
		}
	}
	atomic_fetch_sub(s->running, 1);
	return NULL;
}

TH_TEST_FN(dynpool_resize_between_1_and_16_under_load_keeps_every_task)
{
	(void)state;
	long n = SIZE(20000, 2000);
	struct once_slot *slots = calloc((size_t)(2 * n), sizeof *slots);
	assert_non_null(slots);
	struct cpat_pool *p = mkdyn(1, 4, 1 * CPAT_MSEC, 8, CPAT_POOL_BLOCK);
	struct th_crew crew;
	th_crew_init(&crew, 2);
	_Atomic int running = 2;
	struct dsub s[2];
	for (int i = 0; i < 2; i++) {
		memset(&s[i], 0, sizeof s[i]);
		s[i].start = &crew.start;
		s[i].pool = p;
		s[i].slots = slots + i * n;
		s[i].n = n;
		s[i].running = &running;
	}
	th_crew_add_n(&crew, 2, dsub_main, s, sizeof s[0]);
	struct th_rng rng;
	th_rng_init(&rng, 41);
	th_crew_go(&crew);
	long resizes = 0, bad = 0;
	int first_bad = 0;
	unsigned above = 0;
	while (atomic_load(&running) > 0 || resizes < 50) {
		unsigned mn = 1 + (unsigned)th_rng_below(&rng, 16);
		unsigned mx = mn + (unsigned)th_rng_below(&rng, 17 - mn);
		int rc = cpat_dynpool_resize(p, mn, mx);
		if (rc != 0 && !bad++)
			first_bad = rc;
		resizes++;
		unsigned w = stats_of(p).workers;
		if (w > 16)
			above = w;
		give_time((long)th_rng_below(&rng, 50));
	}
	th_crew_join(&crew);
	if (bad)
		fail_msg("%ld resizes failed, first %d", bad, first_bad);
	assert_int_equal(above, 0);
	assert_int_equal(s[0].bad_rc, 0);
	assert_int_equal(s[1].bad_rc, 0);
	/* Settle at fixed bounds: the worker count follows. */
	assert_int_equal(cpat_dynpool_resize(p, 2, 2), 0);
	assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
	wait_workers_eq(p, 2);
	struct cpat_pool_report r;
	assert_int_equal(
		cpat_pool_shutdown(p, CPAT_POOL_DRAIN, CPAT_FOREVER, &r), 0);
	long lost = 0, first = -1;
	for (long i = 0; i < 2 * n; i++) {
		if (atomic_load(&slots[i].runs) != 1 ||
		    atomic_load(&slots[i].dones) != 1) {
			if (first < 0)
				first = i;
			lost++;
		}
	}
	if (lost)
		fail_msg("%ld tasks not run exactly once (first %ld: runs %d)",
			 lost, first, atomic_load(&slots[first].runs));
	assert_int_equal(r.ran, (unsigned long long)(2 * n));
	assert_int_equal(r.submitted, r.ran + r.discarded + r.rejected);
	struct cpat_pool_stats st = stats_of(p);
	assert_true(st.peak_workers <= 16);
	cpat_pool_destroy(p);
	free(slots);
}

struct submit_thread {
	pthread_t t;
	struct cpat_pool *pool;
	struct cpat_task task;
	int rc;
	_Atomic int finished;
};

static void *submit_main(void *arg)
{
	struct submit_thread *s = arg;
	s->rc = cpat_pool_submit(s->pool, &s->task, NULL);
	atomic_store(&s->finished, 1);
	return NULL;
}

TH_TEST_FN(dynpool_resize_raising_min_starts_workers_and_wakes_submitter)
{
	(void)state;
	struct ctx c;
	ctx_init(&c);
	struct cpat_pool *p = mkdyn(1, 1, 60 * CPAT_SEC, 1, CPAT_POOL_BLOCK);
	struct job gate, q, x;
	job_init(&q, NULL, J_PLAIN, 0);
	job_init(&x, NULL, J_PLAIN, 0);
	hold_worker(p, &c, &gate);
	struct cpat_task t = job_task(&q);
	assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
	struct submit_thread s;
	memset(&s, 0, sizeof s);
	s.pool = p;
	s.task = job_task(&x);
	th_spawn(&s.t, submit_main, &s);
	wait_blocked_submitters(p, 1);
	/* At max 1 the pool cannot grow: the submitter stays blocked. */
	give_time(1000);
	assert_int_equal(atomic_load(&s.finished), 0);
	assert_int_equal(stats_of(p).workers, 1);
	assert_int_equal(cpat_dynpool_resize(p, 2, 4), 0);
	assert_true(stats_of(p).spawned >= 2);
	/* The new worker takes the queued task, the submitter gets room, and
	 * both tasks run while the first is still stuck. */
	th_join(s.t);
	assert_int_equal(s.rc, 0);
	wait_int(&q.dones, 1);
	wait_int(&x.dones, 1);
	assert_int_equal(atomic_load(&gate.dones), 0);
	assert_true(stats_of(p).workers >= 2);
	ctx_open(&c);
	struct cpat_pool_report r;
	assert_int_equal(
		cpat_pool_shutdown(p, CPAT_POOL_DRAIN, CPAT_FOREVER, &r), 0);
	assert_int_equal(r.ran, 3);
	assert_int_equal(atomic_load(&q.runs), 1);
	assert_int_equal(atomic_load(&x.runs), 1);
	cpat_pool_destroy(p);
	ctx_fini(&c);
}

TH_TEST_FN(dynpool_resize_lower_max_workers_exit_after_their_task)
{
	(void)state;
	struct ctx c;
	ctx_init(&c);
	/* An idle timeout far away: only the resize can retire workers. */
	struct cpat_pool *p = mkdyn(1, 8, 60 * CPAT_SEC, 16, CPAT_POOL_BLOCK);
	struct job j[6];
	submit_jobs(p, &c, j, 6, J_GATE);
	wait_long(&c.started, 6);
	/* Six tasks hold six workers. On a starved CPU there may be one or
	 * two more: a submit and a worker that has just found work can both
	 * see no spinning worker, and each spawns one (pinned beside a CPU
	 * hog: 7 in 1 run of 100). */
	unsigned w0 = stats_of(p).workers;
	assert_true(w0 >= 6 && w0 <= 8);
	assert_int_equal(cpat_dynpool_resize(p, 1, 2), 0);
	/* Running tasks are not interrupted. */
	give_time(1000);
	assert_int_equal(atomic_load(&c.finished), 0);
	assert_int_equal(atomic_load(&c.dones), 0);
	ctx_open(&c);
	wait_workers_eq(p, 2);
	assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
	for (int i = 0; i < 6; i++)
		assert_int_equal(atomic_load(&j[i].dones), 1);
	struct cpat_pool_stats s = stats_settled(p);
	assert_int_equal(s.workers, 2);
	assert_true(s.spawned >= 6);
	assert_int_equal(s.retired, s.spawned - 2);
	/* The lower maximum holds when growing again. */
	struct ctx c2;
	ctx_init(&c2);
	struct job k[4];
	submit_jobs(p, &c2, k, 4, J_GATE);
	wait_long(&c2.started, 2);
	give_time(1000);
	assert_int_equal(atomic_load(&c2.started), 2);
	assert_true(stats_of(p).workers <= 2);
	ctx_open(&c2);
	assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
	cpat_pool_destroy(p);
	for (int i = 0; i < 4; i++)
		assert_int_equal(atomic_load(&k[i].runs), 1);
	ctx_fini(&c);
	ctx_fini(&c2);
}

/* ---- thread failure while growing ---------------------------------------- */

TH_TEST_FN(dynpool_thread_failure_while_growing_keeps_working_every_task_runs)
{
	(void)state;
	start_timer_thread();
	for (int persistent = 1; persistent >= 0; persistent--) {
		struct ctx c;
		ctx_init(&c);
		struct cpat_pool *p =
			mkdyn(1, 4, 60 * CPAT_SEC, 32, CPAT_POOL_BLOCK);
		struct job gate, q[5];
		job_init(&gate, &c, J_GATE, 0);
		struct cpat_task t = job_task(&gate);
		long starts0 = cpat__test_thread_starts();
		cpat__test_fail_thread_at(1, persistent);
		assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
		wait_long(&c.started, 1);
		for (int i = 0; i < 5; i++) {
			job_init(&q[i], &c, J_PLAIN, 0);
			t = job_task(&q[i]);
			assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
		}
		long attempts;
		struct cpat_pool_stats s = stats_of(p);
		if (persistent) {
			attempts = cpat__test_thread_starts() - starts0;
			/* Every growth failed: one worker, stuck; the
			 * queue keeps the tasks. */
			assert_int_equal(s.workers, 1);
			assert_int_equal(s.spawned, 1);
			assert_int_equal(s.queued, 5);
			assert_true(attempts >= 1);
		} else {
			/* One start failed; later ones succeed. */
			while (atomic_load(&c.dones) < 5)
				th_relax();
			s = stats_of(p);
			attempts = cpat__test_thread_starts() - starts0;
			assert_true(s.workers >= 2);
			assert_true(attempts >= 2);
			/* The first worker, plus every attempt but the one
			 * that failed. */
			assert_int_equal(
				s.spawned,
				1 + (unsigned long long)(attempts - 1));
		}
		cpat__test_fail_thread_at(0, false);
		assert_int_equal(atomic_load(&gate.dones), 0);
		ctx_open(&c);
		assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
		for (int i = 0; i < 5; i++) {
			assert_int_equal(atomic_load(&q[i].runs), 1);
			assert_int_equal(atomic_load(&q[i].dones), 1);
		}
		/* Injection off: the pool grows again. */
		struct ctx c2;
		ctx_init(&c2);
		struct job g2[3];
		for (int i = 0; i < 3; i++) {
			job_init(&g2[i], &c2, J_GATE, 0);
			t = job_task(&g2[i]);
			assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
		}
		wait_long(&c2.started, 3);
		assert_true(stats_of(p).workers >= 3);
		ctx_open(&c2);
		/* Raising the minimum under failure: -EAGAIN, the pool
		 * keeps working. */
		assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
		unsigned w = stats_of(p).workers;
		cpat__test_fail_thread_at(1, true);
		assert_int_equal(cpat_dynpool_resize(p, 4, 4),
				 w < 4 ? -EAGAIN : 0);
		cpat__test_fail_thread_at(0, false);
		struct job last;
		job_init(&last, NULL, J_PLAIN, 0);
		t = job_task(&last);
		assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
		struct cpat_pool_report r;
		assert_int_equal(cpat_pool_shutdown(p, CPAT_POOL_DRAIN,
						    CPAT_FOREVER, &r),
				 0);
		assert_int_equal(atomic_load(&last.runs), 1);
		assert_int_equal(r.ran, 10);
		s = stats_of(p);
		assert_int_equal(s.spawned, s.retired);
		assert_int_equal(s.workers, 0);
		cpat_pool_destroy(p);
		ctx_fini(&c);
		ctx_fini(&c2);
	}
}

/* ---- lifecycle ---------------------------------------------------------- */

TH_TEST_FN(dynpool_create_burst_destroy_cycles_no_hang)
{
	(void)state;
	long cycles = SIZE(2000, TSAN ? 100 : 300);
	long lost = 0;
	for (long i = 0; i < cycles; i++) {
		struct cpat_pool *p =
			mkdyn(1, 4, CPAT_MSEC, 4, CPAT_POOL_BLOCK);
		struct job j[6];
		for (int k = 0; k < 6; k++) {
			job_init(&j[k], NULL, J_PLAIN, 0);
			struct cpat_task t = job_task(&j[k]);
			if (cpat_pool_submit(p, &t, NULL) != 0)
				lost++;
		}
		if (i % 2)
			cpat_pool_shutdown(p, CPAT_POOL_DRAIN, CPAT_FOREVER,
					   NULL);
		cpat_pool_destroy(p);
		for (int k = 0; k < 6; k++)
			lost += atomic_load(&j[k].runs) != 1 ||
				atomic_load(&j[k].dones) != 1;
	}
	assert_int_equal(lost, 0);
}

/* Workers of a dynamic pool are named "cpat-dynpool" (top -H, gdb, perf). */
TH_TEST_FN(dynpool_workers_named_cpat_dynpool)
{
	(void)state;
#ifdef __linux__
	struct cpat_pool *p = mkdyn(1, 2, CPAT_SEC, 4, CPAT_POOL_BLOCK);
	char name[16] = "";
	worker_thread_name(p, name);
	assert_string_equal(name, "cpat-dynpool");
	cpat_pool_destroy(p);
#else
	skip();
#endif
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		/* Allocator tests first: nothing else allocates yet. */
		TH_TEST(dynpool_create_enomem_at_every_allocation_leaks_nothing),
		TH_TEST(dynpool_create_thread_failure_at_each_of_min_eagain_nothing_left),
		TH_TEST(dynpool_create_and_resize_bad_arguments_einval),
		TH_TEST(dynpool_grows_at_once_when_tasks_block_then_retires_to_min),
		TH_TEST(dynpool_idle_reaper_never_takes_pool_below_min_under_bursts),
		TH_TEST(dynpool_resize_between_1_and_16_under_load_keeps_every_task),
		TH_TEST(dynpool_resize_raising_min_starts_workers_and_wakes_submitter),
		TH_TEST(dynpool_resize_lower_max_workers_exit_after_their_task),
		TH_TEST(dynpool_thread_failure_while_growing_keeps_working_every_task_runs),
		TH_TEST(dynpool_create_burst_destroy_cycles_no_hang),
		TH_TEST(dynpool_workers_named_cpat_dynpool),
	};
	const char *filter = getenv("CPAT_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	return TH_RUN("dynpool", tests);
}
