/*
 * Conformance and stress tests of fixed worker pools (cpattern/pool.h).
 *
 * Every test asserts a documented behaviour of the header: return codes,
 * which tasks ran (exactly once), which were discarded (done with
 * -ECANCELED, never run), the report's accounting (submitted = ran +
 * discarded + rejected) and the statistics. Tasks record into their own
 * struct job (pool_testlib.h); the main thread asserts after the pool is
 * idle or shut down. A task that must stay "stuck" blocks on a gate token
 * the main thread opens; states are awaited through the statistics or the
 * pool's test hook in a th_relax() loop, never by sleeping.
 *
 * The allocator tests run first, while nothing else runs in the process.
 */
#include "pool_testlib.h"

/* ---- arguments and options ------------------------------------------- */

TH_TEST_FN(pool_create_bad_arguments_einval)
{
	(void)state;
	struct cpat_pool_opts o;
	struct cpat_pool *p = (struct cpat_pool *)&p;

	cpat_pool_opts_init(NULL); /* no-op */
	cpat_pool_opts_init(&o);
	assert_int_equal(cpat_pool_create(NULL, &o), -EINVAL);

	cpat_pool_opts_init(&o);
	o.workers = 0;
	assert_int_equal(cpat_pool_create(&p, &o), -EINVAL);
	assert_null(p);

	p = (struct cpat_pool *)&p;
	cpat_pool_opts_init(&o);
	o.queue_capacity = 0;
	assert_int_equal(cpat_pool_create(&p, &o), -EINVAL);
	assert_null(p);

	int bad_policies[] = {-1, 3, 1000};
	for (size_t i = 0; i < 3; i++) {
		p = (struct cpat_pool *)&p;
		cpat_pool_opts_init(&o);
		o.policy = bad_policies[i];
		assert_int_equal(cpat_pool_create(&p, &o), -EINVAL);
		assert_null(p);
	}
	/* The defaults and NULL options make a working pool. */
	cpat_pool_opts_init(&o);
	assert_int_equal(o.workers, 4);
	assert_int_equal(o.policy, CPAT_POOL_BLOCK);
	assert_int_equal(o.max_errors, 64);
	assert_true(o.queue_capacity >= 1);
	assert_null(o.parent);
	assert_int_equal(cpat_pool_create(&p, NULL), 0);
	assert_non_null(p);
	assert_int_equal(stats_of(p).workers, 4);
	cpat_pool_destroy(p);
	cpat_pool_destroy(NULL); /* no-op */
}

/* Workers are named "cpat-pool", for top -H, gdb and perf
 * (worker_thread_name()). */
TH_TEST_FN(pool_workers_named_cpat_pool)
{
	(void)state;
#ifdef __linux__
	struct cpat_pool *p = mkpool(2, 4, CPAT_POOL_BLOCK);
	char name[16] = "";
	worker_thread_name(p, name);
	assert_string_equal(name, "cpat-pool");
	cpat_pool_destroy(p);
#else
	skip();
#endif
}

TH_TEST_FN(pool_calls_bad_arguments_einval_nothing_runs)
{
	(void)state;
	struct ctx c;
	ctx_init(&c);
	ctx_open(&c);
	struct cpat_pool *p = mkpool(2, 8, CPAT_POOL_BLOCK);
	struct job j;
	job_init(&j, &c, J_PLAIN, 0);
	struct cpat_task t = job_task(&j);
	struct cpat_task nofn = {.fn = NULL, .done = job_done, .arg = &j};
	struct cpat_pool_stats st;
	struct cpat_pool_report r;
	int errs[4];

	assert_int_equal(cpat_pool_submit(NULL, &t, NULL), -EINVAL);
	assert_int_equal(cpat_pool_submit(p, NULL, NULL), -EINVAL);
	assert_int_equal(cpat_pool_submit(p, &nofn, NULL), -EINVAL);
	assert_int_equal(cpat_pool_submit_until(NULL, &t, NULL, CPAT_FOREVER),
			 -EINVAL);
	assert_int_equal(cpat_pool_submit_until(p, &nofn, NULL, CPAT_FOREVER),
			 -EINVAL);
	assert_int_equal(cpat_pool_submit_until(p, &t, NULL, -2), -EINVAL);
	assert_int_equal(cpat_pool_submit_until(p, &t, NULL, INT64_MIN),
			 -EINVAL);
	assert_int_equal(cpat_pool_try_submit(NULL, &t), -EINVAL);
	assert_int_equal(cpat_pool_try_submit(p, NULL), -EINVAL);
	assert_int_equal(cpat_pool_try_submit(p, &nofn), -EINVAL);

	struct cpat_task many[4] = {t, t, nofn, t};
	size_t n = 99;
	assert_int_equal(
		cpat_pool_submit_many(NULL, many, 2, &n, NULL, CPAT_FOREVER),
		-EINVAL);
	n = 99;
	assert_int_equal(
		cpat_pool_submit_many(p, NULL, 2, &n, NULL, CPAT_FOREVER),
		-EINVAL);
	n = 99;
	assert_int_equal(
		cpat_pool_submit_many(p, many, 0, &n, NULL, CPAT_FOREVER),
		-EINVAL);
	/* A NULL fn anywhere: nothing at all is submitted. */
	n = 99;
	assert_int_equal(
		cpat_pool_submit_many(p, many, 4, &n, NULL, CPAT_FOREVER),
		-EINVAL);
	assert_int_equal(n, 0);
	n = 99;
	assert_int_equal(cpat_pool_submit_many(p, many, 2, &n, NULL, -2),
			 -EINVAL);

	assert_int_equal(cpat_pool_wait_idle(NULL, NULL, CPAT_FOREVER),
			 -EINVAL);
	assert_int_equal(cpat_pool_wait_idle(p, NULL, -2), -EINVAL);
	assert_int_equal(
		cpat_pool_shutdown(NULL, CPAT_POOL_DRAIN, CPAT_FOREVER, &r),
		-EINVAL);
	assert_int_equal(cpat_pool_shutdown(p, 2, CPAT_FOREVER, &r), -EINVAL);
	assert_int_equal(cpat_pool_shutdown(p, -1, CPAT_FOREVER, &r), -EINVAL);
	assert_int_equal(cpat_pool_shutdown(p, CPAT_POOL_DRAIN, -2, &r),
			 -EINVAL);
	assert_int_equal(cpat_pool_stats(NULL, &st), -EINVAL);
	assert_int_equal(cpat_pool_stats(p, NULL), -EINVAL);
	assert_int_equal(cpat_pool_errors(NULL, errs, 4), -EINVAL);
	assert_int_equal(cpat_pool_errors(p, NULL, 4), -EINVAL);
	assert_int_equal(cpat_pool_errors(p, NULL, 0), 0);
	assert_null(cpat_pool_token(NULL));
	assert_non_null(cpat_pool_token(p));

	/* The bad shutdowns changed nothing: the pool still takes tasks. */
	assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
	assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
	assert_int_equal(
		cpat_pool_shutdown(p, CPAT_POOL_DRAIN, CPAT_FOREVER, &r), 0);
	assert_int_equal(r.ran, 1);
	assert_int_equal(atomic_load(&j.runs), 1);
	assert_int_equal(atomic_load(&j.dones), 1);
	cpat_pool_destroy(p);
	ctx_fini(&c);
}

/* ---- allocation ------------------------------------------------------- */

struct create_ctx {
	struct cpat_pool *p;
	long threads0;
};

static int create_3_workers(void *arg)
{
	struct create_ctx *c = arg;
	struct cpat_pool_opts o;
	cpat_pool_opts_init(&o);
	o.workers = 3;
	o.queue_capacity = 17;
	c->p = (struct cpat_pool *)&c->p;
	return cpat_pool_create(&c->p, &o);
}

/* A created pool runs a task; a failed create left no pool and, like a
 * destroyed one, no thread. */
static void check_3_workers(void *arg, int rc)
{
	struct create_ctx *c = arg;
	if (rc == 0) {
		assert_non_null(c->p);
		struct job j;
		job_init(&j, NULL, J_PLAIN, 0);
		struct cpat_task t = {.fn = job_fn, .arg = &j};
		assert_int_equal(cpat_pool_submit(c->p, &t, NULL), 0);
		cpat_pool_destroy(c->p);
		assert_int_equal(atomic_load(&j.runs), 1);
	} else {
		assert_null(c->p);
	}
	th_assert_threads_back(c->threads0);
}

TH_TEST_FN(pool_create_enomem_at_every_allocation_leaks_nothing)
{
	(void)state;
	th_alloc_install();
	long base = th_alloc_live();
	/* Fail the k-th allocation of create for k = 1, 2, ... until create
	 * needs fewer than k allocations and succeeds. */
	struct create_ctx c = {.threads0 = th_count_threads()};
	struct th_alloc_sweep sw = {.create = create_3_workers,
				    .check = check_3_workers,
				    .ctx = &c,
				    .max_k = 256,
				    .what = "pool_create"};
	th_alloc_sweep(&sw);
	/* Persistent failure. */
	struct cpat_pool *p = (struct cpat_pool *)&p;
	th_alloc_fail_at(1, 1);
	assert_int_equal(cpat_pool_create(&p, NULL), -ENOMEM);
	th_alloc_fail_at(0, 0);
	assert_null(p);
	assert_int_equal(th_alloc_live(), base);
	th_alloc_uninstall();
}

static _Atomic long g_noalloc_runs;

static int count_fn(void *arg, struct cpat_token *tok)
{
	(void)arg;
	(void)tok;
	atomic_fetch_add_explicit(&g_noalloc_runs, 1, memory_order_relaxed);
	return 0;
}

static void count_done(void *arg, int rc)
{
	(void)arg;
	(void)rc;
}

TH_TEST_FN(pool_no_allocation_per_task_in_steady_state)
{
	(void)state;
	th_alloc_install();
	long base = th_alloc_live();
	struct cpat_pool *p = mkpool(2, 64, CPAT_POOL_BLOCK);
	struct cpat_task t = {.fn = count_fn, .done = count_done, .arg = NULL};
	struct cpat_task batch[8];
	for (int i = 0; i < 8; i++)
		batch[i] = t;
	atomic_store(&g_noalloc_runs, 0);
	/* Warm-up: every path once (worker wake-ups, full queue, batches). */
	for (int i = 0; i < 1000; i++)
		assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
	assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
	long calls0 = th_alloc_count();
	long n = 0;
	for (int i = 0; i < 10000; i++) {
		int rc;
		switch (i % 4) {
		case 0:
			rc = cpat_pool_submit(p, &t, NULL);
			n++;
			break;
		case 1:
			rc = cpat_pool_submit_until(p, &t, NULL, CPAT_FOREVER);
			n++;
			break;
		case 2:
			while ((rc = cpat_pool_try_submit(p, &t)) == -EAGAIN)
				th_relax();
			n++;
			break;
		default: {
			size_t k = 0;
			rc = cpat_pool_submit_many(p, batch, 8, &k, NULL,
						   CPAT_FOREVER);
			n += (long)k;
			break;
		}
		}
		if (rc != 0)
			fail_msg("submit %d: %d", i, rc);
	}
	assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
	long calls = th_alloc_count() - calls0;
	assert_int_equal(atomic_load(&g_noalloc_runs), 1000 + n);
	assert_int_equal(calls, 0);
	cpat_pool_destroy(p);
	assert_int_equal(th_alloc_live(), base);
	th_alloc_uninstall();
}

/* ---- thread-creation failure ---------------------------------------- */

TH_TEST_FN(pool_create_thread_failure_at_each_worker_eagain_nothing_left)
{
	(void)state;
	start_timer_thread();
	th_alloc_install();
	long base = th_alloc_live();
	int threads0 = th_count_threads();
	const unsigned W = 4;
	for (unsigned k = 1; k <= W; k++) {
		for (int persistent = 0; persistent < 2; persistent++) {
			struct cpat_pool *p = (struct cpat_pool *)&p;
			struct cpat_pool_opts o;
			cpat_pool_opts_init(&o);
			o.workers = W;
			long starts0 = cpat__test_thread_starts();
			cpat__test_fail_thread_at((long)k, persistent);
			int rc = cpat_pool_create(&p, &o);
			cpat__test_fail_thread_at(0, false);
			long starts = cpat__test_thread_starts() - starts0;
			assert_int_equal(rc, -EAGAIN);
			assert_null(p);
			/* It tried up to the failing start, no further than W.
			 */
			assert_true(starts >= (long)k);
			assert_true(starts <= (long)W);
			/* Every started worker was joined: no thread left. */
			th_assert_threads_back(threads0);
			assert_int_equal(th_alloc_live(), base);
		}
	}
	/* And with injection off, the same options work. */
	struct cpat_pool *p = NULL;
	struct cpat_pool_opts o;
	cpat_pool_opts_init(&o);
	o.workers = W;
	long starts0 = cpat__test_thread_starts();
	assert_int_equal(cpat_pool_create(&p, &o), 0);
	struct cpat_pool_stats s = stats_of(p);
	assert_int_equal(s.workers, W);
	assert_int_equal(s.spawned, W);
	assert_int_equal(cpat__test_thread_starts() - starts0, W);
	cpat_pool_destroy(p);
	assert_int_equal(th_alloc_live(), base);
	th_assert_threads_back(threads0);
	th_alloc_uninstall();
}

/* ---- every task exactly once ------------------------------------------ */

struct once_slot {
	_Atomic unsigned char runs, dones;
	_Atomic int bad_rc;
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
	if (rc != 0)
		atomic_store(&s->bad_rc, rc);
	atomic_fetch_add_explicit(&s->dones, 1, memory_order_relaxed);
}

struct submitter {
	struct th_barrier *start;
	struct cpat_pool *pool;
	int mode;
	struct once_slot *slots;
	long n;
	long calls, eagain, errors;
	int first_err;
};

static void *submitter_main(void *arg)
{
	struct submitter *s = arg;
	th_barrier_wait(s->start);
	long i = 0;
	while (i < s->n) {
		struct cpat_task t = {
			.fn = once_fn, .done = once_done, .arg = &s->slots[i]};
		int rc;
		switch (s->mode) {
		case 0:
			rc = cpat_pool_submit(s->pool, &t, NULL);
			s->calls++;
			i += rc == 0;
			break;
		case 1: {
			struct cpat_task b[16];
			size_t m = (size_t)(s->n - i < 16 ? s->n - i : 16);
			for (size_t k = 0; k < m; k++) {
				b[k] = t;
				b[k].arg = &s->slots[i + (long)k];
			}
			size_t got = 0;
			rc = cpat_pool_submit_many(s->pool, b, m, &got, NULL,
						   CPAT_FOREVER);
			s->calls += (long)m;
			i += (long)got;
			break;
		}
		case 2:
			rc = cpat_pool_try_submit(s->pool, &t);
			s->calls++;
			if (rc == -EAGAIN) {
				s->eagain++;
				th_relax();
				continue;
			}
			i += rc == 0;
			break;
		default:
			rc = cpat_pool_submit_until(s->pool, &t, NULL,
						    CPAT_FOREVER);
			s->calls++;
			i += rc == 0;
			break;
		}
		if (rc != 0) {
			if (!s->errors)
				s->first_err = rc;
			s->errors++;
			break;
		}
	}
	return NULL;
}

TH_TEST_FN(pool_every_task_runs_exactly_once_4_submitters_1_2_8_workers)
{
	(void)state;
	long n = th_scale() >= 12 ? 250000 : SIZE(20000, 5000);
	const int S = 4;
	unsigned ws[] = {1, 2, 8};
	struct once_slot *slots = calloc((size_t)(S * n), sizeof *slots);
	assert_non_null(slots);
	for (size_t wi = 0; wi < 3; wi++) {
		memset(slots, 0, (size_t)(S * n) * sizeof *slots);
		struct cpat_pool *p =
			mkpool(ws[wi], 2 * ws[wi], CPAT_POOL_BLOCK);
		struct th_crew crew;
		th_crew_init(&crew, (unsigned)S);
		struct submitter sub[4];
		memset(sub, 0, sizeof sub);
		for (int s = 0; s < S; s++) {
			sub[s].start = &crew.start;
			sub[s].pool = p;
			sub[s].mode = s;
			sub[s].slots = slots + s * n;
			sub[s].n = n;
		}
		th_crew_add_n(&crew, (unsigned)S, submitter_main, sub,
			      sizeof sub[0]);
		th_crew_go(&crew);
		th_crew_join(&crew);
		struct cpat_pool_report r;
		assert_int_equal(cpat_pool_shutdown(p, CPAT_POOL_DRAIN,
						    CPAT_FOREVER, &r),
				 0);
		unsigned long long calls = 0, eagain = 0;
		for (int s = 0; s < S; s++) {
			if (sub[s].errors)
				fail_msg("W=%u submitter %d: %ld errors, first "
					 "%d",
					 ws[wi], s, sub[s].errors,
					 sub[s].first_err);
			calls += (unsigned long long)sub[s].calls;
			eagain += (unsigned long long)sub[s].eagain;
		}
		long bad = 0, first = -1;
		for (long i = 0; i < S * n; i++) {
			if (atomic_load(&slots[i].runs) != 1 ||
			    atomic_load(&slots[i].dones) != 1 ||
			    atomic_load(&slots[i].bad_rc) != 0) {
				if (first < 0)
					first = i;
				bad++;
			}
		}
		if (bad)
			fail_msg("W=%u: %ld tasks not run exactly once (first: "
				 "task %ld, runs %d, dones %d)",
				 ws[wi], bad, first,
				 atomic_load(&slots[first].runs),
				 atomic_load(&slots[first].dones));
		assert_int_equal(r.ran, (unsigned long long)(S * n));
		assert_int_equal(r.submitted, calls);
		assert_int_equal(r.rejected, eagain);
		assert_int_equal(r.discarded, 0);
		assert_int_equal(r.failed, 0);
		assert_int_equal(r.still_running, 0);
		assert_int_equal(r.submitted, r.ran + r.discarded + r.rejected);
		cpat_pool_destroy(p);
	}
	free(slots);
}

/* ---- shutdown: drain, discard, deadline ------------------------------ */

struct shutdown_thread {
	pthread_t t;
	struct cpat_pool *pool;
	int mode;
	int64_t deadline;
	int rc;
	struct cpat_pool_report r;
	_Atomic int finished;
};

static void *shutdown_main(void *arg)
{
	struct shutdown_thread *s = arg;
	s->rc = cpat_pool_shutdown(s->pool, s->mode, s->deadline, &s->r);
	atomic_store(&s->finished, 1);
	return NULL;
}

static void shutdown_start(struct shutdown_thread *s, struct cpat_pool *p,
			   int mode, int64_t deadline)
{
	memset(s, 0, sizeof *s);
	s->pool = p;
	s->mode = mode;
	s->deadline = deadline;
	th_spawn(&s->t, shutdown_main, s);
}

/* Probes (with a task that must never run) until intake has stopped;
 * returns how many probes were made (each one a rejected submit). */
static long wait_intake_stopped(struct cpat_pool *p, struct job *probe)
{
	struct cpat_task t = job_task(probe);
	long n = 0;
	for (;;) {
		int rc = cpat_pool_try_submit(p, &t);
		n++;
		if (rc == -EPIPE)
			return n;
		/* -EAGAIN: the queue is full and still open. Anything else
		 * is recorded by the probe's counters (it must never run). */
		th_relax();
	}
}

TH_TEST_FN(pool_drain_shutdown_runs_every_queued_task)
{
	(void)state;
	struct ctx c;
	ctx_init(&c);
	struct cpat_pool *p = mkpool(1, 16, CPAT_POOL_BLOCK);
	struct job gate, q[16], probe;
	job_init(&probe, NULL, J_PLAIN, 0);
	hold_worker(p, &c, &gate);
	submit_jobs(p, &c, q, 16, J_PLAIN);
	assert_int_equal(stats_of(p).queued, 16);
	struct shutdown_thread sd;
	shutdown_start(&sd, p, CPAT_POOL_DRAIN, CPAT_FOREVER);
	long probes = wait_intake_stopped(p, &probe);
	/* Intake stopped, the queue is intact: nothing ran yet. */
	assert_int_equal(atomic_load(&c.started), 1);
	assert_int_equal(atomic_load(&sd.finished), 0);
	ctx_open(&c);
	th_join(sd.t);
	assert_int_equal(sd.rc, 0);
	for (int i = 0; i < 16; i++) {
		assert_int_equal(atomic_load(&q[i].runs), 1);
		assert_int_equal(atomic_load(&q[i].dones), 1);
		assert_int_equal(atomic_load(&q[i].done_rc), 0);
	}
	assert_int_equal(atomic_load(&probe.runs), 0);
	assert_int_equal(atomic_load(&probe.dones), 0);
	assert_int_equal(sd.r.ran, 17);
	assert_int_equal(sd.r.discarded, 0);
	assert_int_equal(sd.r.still_running, 0);
	assert_int_equal(sd.r.rejected, (unsigned long long)probes);
	assert_int_equal(sd.r.submitted, 17 + (unsigned long long)probes);
	/* Later submits of every kind: -EPIPE, never run. */
	struct cpat_task t = job_task(&probe);
	size_t got = 9;
	assert_int_equal(cpat_pool_submit(p, &t, NULL), -EPIPE);
	assert_int_equal(cpat_pool_submit_until(p, &t, NULL, CPAT_FOREVER),
			 -EPIPE);
	assert_int_equal(cpat_pool_try_submit(p, &t), -EPIPE);
	assert_int_equal(
		cpat_pool_submit_many(p, &t, 1, &got, NULL, CPAT_FOREVER),
		-EPIPE);
	assert_int_equal(got, 0);
	/* A second shutdown returns 0 with the same report (the later
	 * refusals aside, which it may count). */
	struct cpat_pool_report r2;
	assert_int_equal(
		cpat_pool_shutdown(p, CPAT_POOL_DISCARD, CPAT_FOREVER, &r2), 0);
	assert_int_equal(r2.ran, sd.r.ran);
	assert_int_equal(r2.discarded, sd.r.discarded);
	assert_int_equal(r2.still_running, 0);
	assert_int_equal(r2.submitted, r2.ran + r2.discarded + r2.rejected);
	cpat_pool_destroy(p);
	assert_int_equal(atomic_load(&probe.runs), 0);
	assert_int_equal(atomic_load(&probe.dones), 0);
	ctx_fini(&c);
}

TH_TEST_FN(pool_discard_shutdown_cancels_queued_none_runs_later)
{
	(void)state;
	struct ctx c;
	ctx_init(&c);
	struct cpat_pool *p = mkpool(1, 10, CPAT_POOL_BLOCK);
	struct job gate, q[10], probe;
	job_init(&probe, NULL, J_PLAIN, 0);
	hold_worker(p, &c, &gate);
	submit_jobs(p, &c, q, 10, J_PLAIN);
	struct shutdown_thread sd;
	shutdown_start(&sd, p, CPAT_POOL_DISCARD, CPAT_FOREVER);
	long probes = wait_intake_stopped(p, &probe);
	/* The header's order is: stop intake, discard, join. Give the
	 * discard a chance to happen while the worker is still stuck. */
	for (long i = 0; i < 100000 && atomic_load(&c.dones) < 10; i++)
		th_relax();
	ctx_open(&c);
	th_join(sd.t);
	assert_int_equal(sd.rc, 0);
	assert_int_equal(atomic_load(&gate.runs), 1);
	assert_int_equal(atomic_load(&gate.done_rc), 0);
	for (int i = 0; i < 10; i++) {
		assert_int_equal(atomic_load(&q[i].runs), 0);
		assert_int_equal(atomic_load(&q[i].dones), 1);
		assert_int_equal(atomic_load(&q[i].done_rc), -ECANCELED);
	}
	assert_int_equal(sd.r.ran, 1);
	assert_int_equal(sd.r.discarded, 10);
	assert_int_equal(sd.r.rejected, (unsigned long long)probes);
	assert_int_equal(sd.r.submitted,
			 sd.r.ran + sd.r.discarded + sd.r.rejected);
	struct cpat_pool_stats s = stats_of(p);
	assert_int_equal(s.discarded, 10);
	assert_int_equal(s.completed, 1);
	assert_int_equal(s.queued, 0);
	cpat_pool_destroy(p);
	/* None ran later, none was done twice. */
	for (int i = 0; i < 10; i++) {
		assert_int_equal(atomic_load(&q[i].runs), 0);
		assert_int_equal(atomic_load(&q[i].dones), 1);
	}
	ctx_fini(&c);
}

TH_TEST_FN(pool_discard_under_load_ran_plus_discarded_equals_submitted)
{
	(void)state;
	long rounds = SIZE(200, 20);
	struct th_rng rng;
	th_rng_init(&rng, 11);
	enum { N = 64 };
	struct job *j = calloc(N, sizeof *j);
	assert_non_null(j);
	for (long round = 0; round < rounds; round++) {
		struct cpat_pool *p = mkpool(2, N, CPAT_POOL_BLOCK);
		for (int i = 0; i < N; i++) {
			job_init(&j[i], NULL, J_PLAIN, i % 5 == 0 ? 7 : 0);
			struct cpat_task t = job_task(&j[i]);
			assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
			if (th_rng_below(&rng, 8) == 0)
				th_relax();
		}
		struct cpat_pool_report r;
		assert_int_equal(cpat_pool_shutdown(p, CPAT_POOL_DISCARD,
						    CPAT_FOREVER, &r),
				 0);
		unsigned long long ran = 0, disc = 0, failed = 0;
		for (int i = 0; i < N; i++) {
			int runs = atomic_load(&j[i].runs);
			assert_int_equal(atomic_load(&j[i].dones), 1);
			if (runs == 1) {
				ran++;
				failed += j[i].ret != 0;
				assert_int_equal(atomic_load(&j[i].done_rc),
						 j[i].ret);
			} else {
				assert_int_equal(runs, 0);
				disc++;
				assert_int_equal(atomic_load(&j[i].done_rc),
						 -ECANCELED);
			}
		}
		assert_int_equal(r.submitted, N);
		assert_int_equal(r.ran, ran);
		assert_int_equal(r.failed, failed);
		assert_int_equal(r.discarded, disc);
		assert_int_equal(r.rejected, 0);
		assert_int_equal(r.ran + r.discarded, N);
		cpat_pool_destroy(p);
		for (int i = 0; i < N; i++)
			assert_int_equal(atomic_load(&j[i].runs) +
						 (atomic_load(&j[i].done_rc) ==
						  -ECANCELED),
					 1);
	}
	free(j);
}

/* Shutdown racing 8 submitters: each submitter thread lives across the
 * trials and meets the main thread on two barriers per trial. */
enum { RACE_SUBMITTERS = 8, RACE_MAX = 64 };

struct race_slot {
	int rc;
	_Atomic int runs, dones, done_rc;
};

struct race_shared {
	struct th_barrier start, end;
	struct cpat_pool *pool; /* set by main before start */
	_Atomic int quit;
};

struct racer {
	pthread_t t;
	struct race_shared *sh;
	struct race_slot slots[RACE_MAX];
	int n;
};

static int race_fn(void *arg, struct cpat_token *tok)
{
	(void)tok;
	struct race_slot *s = arg;
	atomic_fetch_add(&s->runs, 1);
	return 0;
}

static void race_done(void *arg, int rc)
{
	struct race_slot *s = arg;
	atomic_store(&s->done_rc, rc);
	atomic_fetch_add(&s->dones, 1);
}

static void *racer_main(void *arg)
{
	struct racer *r = arg;
	for (;;) {
		/* The main thread reads the slots between the end barrier
		 * and the next start barrier: reset them after the start. */
		th_barrier_wait(&r->sh->start);
		if (atomic_load(&r->sh->quit))
			return NULL;
		memset(r->slots, 0, sizeof r->slots);
		r->n = 0;
		for (int i = 0; i < RACE_MAX; i++) {
			struct cpat_task t = {.fn = race_fn,
					      .done = race_done,
					      .arg = &r->slots[i]};
			int rc = cpat_pool_submit(r->sh->pool, &t, NULL);
			r->slots[i].rc = rc;
			r->n = i + 1;
			if (rc == -EPIPE)
				break;
			if (rc == -EAGAIN)
				th_relax();
		}
		th_barrier_wait(&r->sh->end);
	}
}

TH_TEST_FN(pool_shutdown_racing_8_submitters_every_submit_accounted)
{
	(void)state;
	long trials = SIZE(1000, TSAN ? 300 : 500);
	struct th_rng rng;
	th_rng_init(&rng, 23);
	struct race_shared sh;
	memset(&sh, 0, sizeof sh);
	th_barrier_init(&sh.start, RACE_SUBMITTERS + 1);
	th_barrier_init(&sh.end, RACE_SUBMITTERS + 1);
	struct racer *rs = calloc(RACE_SUBMITTERS, sizeof *rs);
	assert_non_null(rs);
	for (int i = 0; i < RACE_SUBMITTERS; i++) {
		rs[i].sh = &sh;
		th_spawn(&rs[i].t, racer_main, &rs[i]);
	}
	long bad_trial = -1;
	char why[400] = "";
	unsigned long long total_epipe = 0, total_disc = 0;
	for (long trial = 0; trial < trials && bad_trial < 0; trial++) {
		int policy = (int)th_rng_below(&rng, 3);
		int mode = (int)th_rng_below(&rng, 2);
		sh.pool = mkpool(1 + (unsigned)th_rng_below(&rng, 2),
				 1 + th_rng_below(&rng, 4), policy);
		th_barrier_wait(&sh.start);
		give_time((long)th_rng_below(&rng, 64));
		struct cpat_pool_report r;
		int rc = cpat_pool_shutdown(sh.pool, mode, CPAT_FOREVER, &r);
		th_barrier_wait(&sh.end);
		unsigned long long calls = 0, ran = 0, disc = 0, rej = 0;
		for (int i = 0; i < RACE_SUBMITTERS && bad_trial < 0; i++) {
			for (int k = 0; k < rs[i].n; k++) {
				struct race_slot *s = &rs[i].slots[k];
				int runs = atomic_load(&s->runs);
				int dones = atomic_load(&s->dones);
				int drc = atomic_load(&s->done_rc);
				calls++;
				if (s->rc == 0) {
					if (dones != 1 ||
					    !((runs == 1 && drc == 0) ||
					      (runs == 0 &&
					       drc == -ECANCELED))) {
						snprintf(why, sizeof why,
							 "accepted task: runs "
							 "%d "
							 "dones %d done_rc %d",
							 runs, dones, drc);
						bad_trial = trial;
					}
					ran += runs == 1;
					disc += runs == 0;
				} else if (s->rc == -EPIPE ||
					   (s->rc == -EAGAIN &&
					    policy == CPAT_POOL_REJECT)) {
					if (runs || dones) {
						snprintf(why, sizeof why,
							 "refused (%d) task: "
							 "runs "
							 "%d dones %d",
							 s->rc, runs, dones);
						bad_trial = trial;
					}
					rej++;
					total_epipe += s->rc == -EPIPE;
				} else {
					snprintf(why, sizeof why,
						 "submit returned %d (policy "
						 "%d)",
						 s->rc, policy);
					bad_trial = trial;
				}
			}
		}
		total_disc += disc;
		/* The report is a snapshot taken when shutdown returned:
		 * submits refused after that are not in it, but every
		 * accepted task is (submitters were blocked or refused by
		 * then). The statistics, read once every submitter is done,
		 * count everything. */
		struct cpat_pool_stats st = stats_of(sh.pool);
		if (bad_trial < 0 &&
		    (rc != 0 || r.submitted > calls || r.ran != ran ||
		     r.discarded != disc || r.rejected > rej ||
		     r.still_running != 0 ||
		     r.submitted != r.ran + r.discarded + r.rejected ||
		     st.submitted != calls || st.completed != ran ||
		     st.discarded != disc || st.rejected != rej ||
		     st.submitted !=
			     st.completed + st.discarded + st.rejected)) {
			snprintf(
				why, sizeof why,
				"shutdown %d; report submitted %llu ran %llu "
				"discarded %llu rejected %llu; stats submitted "
				"%llu completed %llu discarded %llu rejected "
				"%llu; seen calls %llu ran %llu discarded %llu "
				"rejected %llu",
				rc, r.submitted, r.ran, r.discarded, r.rejected,
				st.submitted, st.completed, st.discarded,
				st.rejected, calls, ran, disc, rej);
			bad_trial = trial;
		}
		cpat_pool_destroy(sh.pool);
		sh.pool = NULL;
	}
	atomic_store(&sh.quit, 1);
	th_barrier_wait(&sh.start);
	for (int i = 0; i < RACE_SUBMITTERS; i++)
		th_join(rs[i].t);
	th_barrier_destroy(&sh.start);
	th_barrier_destroy(&sh.end);
	free(rs);
	if (bad_trial >= 0)
		fail_msg("trial %ld: %s", bad_trial, why);
	/* The race happened: some submits met the shutdown. */
	assert_true(total_epipe > 0);
	(void)total_disc;
}

TH_TEST_FN(pool_shutdown_deadline_stuck_task_etimedout_then_completes)
{
	(void)state;
	for (int variant = 0; variant < 2; variant++) {
		struct ctx c;
		ctx_init(&c);
		struct cpat_pool *p = mkpool(1, 8, CPAT_POOL_BLOCK);
		struct job stuck, q[5];
		job_init(&stuck, &c, J_GATE, 0);
		struct cpat_task t = job_task(&stuck);
		assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
		wait_long(&c.started, 1);
		for (int i = 0; i < 5; i++) {
			job_init(&q[i], &c, J_PLAIN, 0);
			t = job_task(&q[i]);
			assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
		}
		struct cpat_pool_report r;
		int64_t t0 = cpat_now_ns();
		int64_t deadline = t0 + 20 * CPAT_MSEC;
		int rc = cpat_pool_shutdown(p, CPAT_POOL_DRAIN, deadline, &r);
		int64_t t1 = cpat_now_ns();
		assert_int_equal(rc, -ETIMEDOUT);
		assert_true(t1 >= deadline);
		assert_int_equal(r.still_running, 1);
		assert_int_equal(r.ran, 0);
		assert_int_equal(r.discarded, 5);
		assert_int_equal(r.submitted, 6);
		/* The queued tasks were cancelled before they started. */
		for (int i = 0; i < 5; i++) {
			assert_int_equal(atomic_load(&q[i].runs), 0);
			assert_int_equal(atomic_load(&q[i].dones), 1);
			assert_int_equal(atomic_load(&q[i].done_rc),
					 -ECANCELED);
		}
		/* The pool token fired at the deadline. */
		assert_int_not_equal(cpat_token_status(cpat_pool_token(p)), 0);
		assert_int_equal(atomic_load(&stuck.dones), 0);
		ctx_open(&c);
		if (variant == 0) {
			assert_int_equal(cpat_pool_shutdown(p, CPAT_POOL_DRAIN,
							    CPAT_FOREVER, &r),
					 0);
			assert_int_equal(r.still_running, 0);
			assert_int_equal(r.ran, 1);
			assert_int_equal(r.discarded, 5);
			assert_int_equal(r.submitted,
					 r.ran + r.discarded + r.rejected);
			assert_int_equal(stats_of(p).workers, 0);
		}
		cpat_pool_destroy(p);
		assert_int_equal(atomic_load(&stuck.runs), 1);
		assert_int_equal(atomic_load(&stuck.dones), 1);
		assert_int_equal(atomic_load(&stuck.done_rc), 0);
		for (int i = 0; i < 5; i++)
			assert_int_equal(atomic_load(&q[i].runs), 0);
		ctx_fini(&c);
	}
}

TH_TEST_FN(pool_task_watching_token_sees_it_cancelled_at_shutdown_deadline)
{
	(void)state;
	struct ctx c;
	ctx_init(&c);
	struct cpat_pool *p = mkpool(2, 4, CPAT_POOL_BLOCK);
	struct job w[2];
	submit_jobs(p, &c, w, 2, J_WATCH);
	wait_long(&c.started, 2);
	assert_int_equal(cpat_token_status(cpat_pool_token(p)), 0);
	int64_t deadline = cpat_now_ns() + 30 * CPAT_MSEC;
	struct cpat_pool_report r;
	int rc = cpat_pool_shutdown(p, CPAT_POOL_DRAIN, deadline, &r);
	/* The tasks give up as soon as the token fires: whether they were
	 * gone by the time shutdown decided is a race; both are allowed. */
	assert_true(rc == 0 || rc == -ETIMEDOUT);
	if (rc == -ETIMEDOUT)
		assert_int_equal(cpat_pool_shutdown(p, CPAT_POOL_DRAIN,
						    CPAT_FOREVER, &r),
				 0);
	assert_int_equal(r.ran, 2);
	assert_int_equal(r.still_running, 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(atomic_load(&w[i].runs), 1);
		assert_int_equal(atomic_load(&w[i].dones), 1);
		assert_true(w[i].t_woke >= deadline);
		assert_int_not_equal(w[i].tok_status, 0);
	}
	cpat_pool_destroy(p);
	ctx_fini(&c);
}

/* The guide's pitfall: tasks send results on an unbuffered channel that
 * nobody reads until after the pool is closed. With the pool token passed
 * to the send, a shutdown deadline frees them. */
TH_TEST_FN(pool_unread_results_channel_cannot_deadlock_shutdown)
{
	(void)state;
	struct ctx c;
	ctx_init(&c);
	assert_int_equal(cpat_chan_create(&c.ch, sizeof(int), 0), 0);
	struct cpat_pool *p = mkpool(2, 4, CPAT_POOL_BLOCK);
	struct job j[6];
	submit_jobs(p, &c, j, 6, J_SENDER);
	wait_long(&c.started, 2);
	int64_t deadline = cpat_now_ns() + 30 * CPAT_MSEC;
	struct cpat_pool_report r;
	int rc = cpat_pool_shutdown(p, CPAT_POOL_DRAIN, deadline, &r);
	assert_true(rc == 0 || rc == -ETIMEDOUT);
	assert_true(cpat_now_ns() >= deadline);
	if (rc == -ETIMEDOUT)
		assert_int_equal(cpat_pool_shutdown(p, CPAT_POOL_DRAIN,
						    CPAT_FOREVER, &r),
				 0);
	assert_int_equal(r.ran + r.discarded, 6);
	assert_int_equal(r.failed, r.ran);
	for (int i = 0; i < 6; i++) {
		assert_int_equal(atomic_load(&j[i].dones), 1);
		if (atomic_load(&j[i].runs)) {
			assert_true(j[i].rc1 == -ECANCELED ||
				    j[i].rc1 == -ETIMEDOUT);
			assert_int_equal(atomic_load(&j[i].done_rc), j[i].rc1);
		} else {
			assert_int_equal(atomic_load(&j[i].done_rc),
					 -ECANCELED);
		}
	}
	int v;
	assert_int_equal(cpat_chan_try_recv(c.ch, &v), -EAGAIN);
	cpat_pool_destroy(p);
	cpat_chan_destroy(c.ch);
	ctx_fini(&c);
}

/* ---- policies ---------------------------------------------------------- */

struct submit_thread {
	pthread_t t;
	struct cpat_pool *pool;
	struct cpat_task task;
	struct cpat_token *tok;
	int64_t deadline;
	int rc;
	_Atomic int finished;
};

static void *submit_main(void *arg)
{
	struct submit_thread *s = arg;
	s->rc = cpat_pool_submit_until(s->pool, &s->task, s->tok, s->deadline);
	atomic_store(&s->finished, 1);
	return NULL;
}

static void submit_start(struct submit_thread *s, struct cpat_pool *p,
			 struct job *j, struct cpat_token *tok)
{
	memset(s, 0, sizeof *s);
	s->pool = p;
	s->task = job_task(j);
	s->tok = tok;
	s->deadline = CPAT_FOREVER;
	th_spawn(&s->t, submit_main, s);
}

/* A pool of one worker stuck on c's gate and a full queue of @p cap plain
 * tasks q[0..cap). */
static struct cpat_pool *full_pool(struct ctx *c, int policy, size_t cap,
				   struct job *gate, struct job *q)
{
	struct cpat_pool *p = mkpool(1, cap, policy);
	job_init(gate, c, J_GATE, 0);
	struct cpat_task t = job_task(gate);
	assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
	wait_long(&c->started, 1);
	for (size_t i = 0; i < cap; i++) {
		job_init(&q[i], c, J_PLAIN, 0);
		t = job_task(&q[i]);
		assert_int_equal(cpat_pool_try_submit(p, &t), 0);
	}
	assert_int_equal(stats_of(p).queued, cap);
	return p;
}

TH_TEST_FN(pool_block_policy_submit_blocks_until_room)
{
	(void)state;
	struct ctx c;
	ctx_init(&c);
	struct job gate, q[2], x;
	struct cpat_pool *p = full_pool(&c, CPAT_POOL_BLOCK, 2, &gate, q);
	job_init(&x, &c, J_PLAIN, 0);
	struct submit_thread s;
	submit_start(&s, p, &x, NULL);
	wait_blocked_submitters(p, 1);
	give_time(1000);
	assert_int_equal(atomic_load(&s.finished), 0);
	assert_int_equal(atomic_load(&x.runs), 0);
	ctx_open(&c);
	th_join(s.t);
	assert_int_equal(s.rc, 0);
	assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
	assert_int_equal(atomic_load(&x.runs), 1);
	assert_int_equal(atomic_load(&x.dones), 1);
	assert_int_equal(blocked_submitters(p), 0);
	cpat_pool_destroy(p);
	ctx_fini(&c);
}

TH_TEST_FN(pool_shutdown_wakes_blocked_submitters_with_epipe)
{
	(void)state;
	struct ctx c;
	ctx_init(&c);
	struct job gate, q[1], x[3];
	struct cpat_pool *p = full_pool(&c, CPAT_POOL_BLOCK, 1, &gate, q);
	struct submit_thread s[3];
	for (int i = 0; i < 3; i++) {
		job_init(&x[i], NULL, J_PLAIN, 0);
		submit_start(&s[i], p, &x[i], NULL);
	}
	wait_blocked_submitters(p, 3);
	/* The worker is still stuck: shutdown cannot finish, but it refuses
	 * the blocked submitters at once. */
	struct shutdown_thread sd;
	shutdown_start(&sd, p, CPAT_POOL_DRAIN, CPAT_FOREVER);
	for (int i = 0; i < 3; i++) {
		th_join(s[i].t);
		assert_int_equal(s[i].rc, -EPIPE);
	}
	assert_int_equal(atomic_load(&sd.finished), 0);
	ctx_open(&c);
	th_join(sd.t);
	assert_int_equal(sd.rc, 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(atomic_load(&x[i].runs), 0);
		assert_int_equal(atomic_load(&x[i].dones), 0);
	}
	assert_int_equal(atomic_load(&q[0].runs), 1);
	assert_int_equal(sd.r.ran, 2);
	assert_int_equal(sd.r.rejected, 3);
	assert_int_equal(sd.r.submitted, 5);
	cpat_pool_destroy(p);
	ctx_fini(&c);
}

TH_TEST_FN(pool_reject_policy_full_queue_eagain_task_never_runs)
{
	(void)state;
	struct ctx c;
	ctx_init(&c);
	struct job gate, q[2], x;
	struct cpat_pool *p = full_pool(&c, CPAT_POOL_REJECT, 2, &gate, q);
	job_init(&x, &c, J_PLAIN, 0);
	struct cpat_task t = job_task(&x);
	struct cpat_pool_stats s0 = stats_of(p);
	assert_int_equal(cpat_pool_submit(p, &t, NULL), -EAGAIN);
	assert_int_equal(cpat_pool_submit_until(p, &t, NULL, CPAT_FOREVER),
			 -EAGAIN);
	assert_int_equal(cpat_pool_try_submit(p, &t), -EAGAIN);
	struct cpat_pool_stats s1 = stats_of(p);
	assert_int_equal(s1.submitted - s0.submitted, 3);
	assert_int_equal(s1.rejected - s0.rejected, 3);
	assert_int_equal(s1.queued, 2);
	ctx_open(&c);
	struct cpat_pool_report r;
	assert_int_equal(
		cpat_pool_shutdown(p, CPAT_POOL_DRAIN, CPAT_FOREVER, &r), 0);
	assert_int_equal(atomic_load(&x.runs), 0);
	assert_int_equal(atomic_load(&x.dones), 0);
	assert_int_equal(r.ran, 3);
	assert_int_equal(r.rejected, 3);
	assert_int_equal(r.submitted, 6);
	cpat_pool_destroy(p);
	ctx_fini(&c);
}

TH_TEST_FN(pool_caller_runs_policy_runs_task_in_submitting_thread)
{
	(void)state;
	struct ctx c;
	ctx_init(&c);
	struct job gate, q[1], x;
	struct cpat_pool *p = full_pool(&c, CPAT_POOL_CALLER_RUNS, 1, &gate, q);
	job_init(&x, NULL, J_PLAIN, 9);
	struct cpat_task t = job_task(&x);
	assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
	/* It already ran, here, with its done. */
	assert_int_equal(atomic_load(&x.runs), 1);
	assert_true(pthread_equal(x.runner, pthread_self()));
	assert_int_equal(atomic_load(&x.dones), 1);
	assert_int_equal(atomic_load(&x.done_rc), 9);
	/* try_submit never runs inline: -EAGAIN whatever the policy. */
	struct job y;
	job_init(&y, NULL, J_PLAIN, 0);
	t = job_task(&y);
	assert_int_equal(cpat_pool_try_submit(p, &t), -EAGAIN);
	assert_int_equal(atomic_load(&y.runs), 0);
	ctx_open(&c);
	struct cpat_pool_report r;
	assert_int_equal(
		cpat_pool_shutdown(p, CPAT_POOL_DRAIN, CPAT_FOREVER, &r), 0);
	assert_false(pthread_equal(gate.runner, pthread_self()));
	assert_false(pthread_equal(q[0].runner, pthread_self()));
	assert_int_equal(r.ran, 3);
	assert_int_equal(r.failed, 1);
	assert_int_equal(r.rejected, 1);
	assert_int_equal(r.submitted, 4);
	int e[2];
	assert_int_equal(cpat_pool_errors(p, e, 2), 1);
	assert_int_equal(e[0], 9);
	assert_int_equal(atomic_load(&y.dones), 0);
	cpat_pool_destroy(p);
	ctx_fini(&c);
}

TH_TEST_FN(pool_try_submit_full_queue_eagain_under_every_policy)
{
	(void)state;
	int policies[] = {CPAT_POOL_BLOCK, CPAT_POOL_REJECT,
			  CPAT_POOL_CALLER_RUNS};
	for (int i = 0; i < 3; i++) {
		struct ctx c;
		ctx_init(&c);
		struct job gate, q[3], x;
		struct cpat_pool *p = full_pool(&c, policies[i], 3, &gate, q);
		job_init(&x, NULL, J_PLAIN, 0);
		struct cpat_task t = job_task(&x);
		for (int k = 0; k < 3; k++)
			assert_int_equal(cpat_pool_try_submit(p, &t), -EAGAIN);
		ctx_open(&c);
		assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
		/* Room again: accepted. */
		assert_int_equal(cpat_pool_try_submit(p, &t), 0);
		assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
		assert_int_equal(atomic_load(&x.runs), 1);
		assert_int_equal(atomic_load(&x.dones), 1);
		cpat_pool_destroy(p);
		ctx_fini(&c);
	}
}

TH_TEST_FN(pool_submit_cancelled_while_blocked_ecanceled_never_runs)
{
	(void)state;
	struct ctx c;
	ctx_init(&c);
	struct job gate, q[1], x, y;
	struct cpat_pool *p = full_pool(&c, CPAT_POOL_BLOCK, 1, &gate, q);
	job_init(&x, NULL, J_PLAIN, 0);
	struct cpat_token *tok = mktok(NULL);
	struct submit_thread s;
	submit_start(&s, p, &x, tok);
	wait_blocked_submitters(p, 1);
	cpat_token_cancel(tok);
	th_join(s.t);
	assert_int_equal(s.rc, -ECANCELED);
	/* A token that has already fired: refused while the queue is full. */
	job_init(&y, NULL, J_PLAIN, 0);
	struct cpat_task t = job_task(&y);
	assert_int_equal(cpat_pool_submit(p, &t, tok), -ECANCELED);
	ctx_open(&c);
	struct cpat_pool_report r;
	assert_int_equal(
		cpat_pool_shutdown(p, CPAT_POOL_DRAIN, CPAT_FOREVER, &r), 0);
	assert_int_equal(atomic_load(&x.runs), 0);
	assert_int_equal(atomic_load(&x.dones), 0);
	assert_int_equal(atomic_load(&y.runs), 0);
	assert_int_equal(atomic_load(&y.dones), 0);
	assert_int_equal(r.ran, 2);
	assert_int_equal(r.rejected, 2);
	assert_int_equal(r.submitted, 4);
	cpat_token_unref(tok);
	cpat_pool_destroy(p);
	ctx_fini(&c);
}

TH_TEST_FN(pool_submit_until_deadline_etimedout_not_before_it)
{
	(void)state;
	struct ctx c;
	ctx_init(&c);
	struct job gate, q[1], x;
	struct cpat_pool *p = full_pool(&c, CPAT_POOL_BLOCK, 1, &gate, q);
	job_init(&x, NULL, J_PLAIN, 0);
	struct cpat_task t = job_task(&x);
	int64_t d = cpat_now_ns() + 20 * CPAT_MSEC;
	assert_int_equal(cpat_pool_submit_until(p, &t, NULL, d), -ETIMEDOUT);
	assert_true(cpat_now_ns() >= d);
	/* A past deadline behaves like try when full... */
	assert_int_equal(cpat_pool_submit_until(p, &t, NULL, 0), -ETIMEDOUT);
	/* ... a deadline token gives its cause, not before it... */
	struct cpat_token *dt = NULL;
	int64_t d2 = cpat_now_ns() + 20 * CPAT_MSEC;
	assert_int_equal(cpat_token_create_deadline(&dt, NULL, d2), 0);
	assert_int_equal(cpat_pool_submit(p, &t, dt), -ETIMEDOUT);
	assert_true(cpat_now_ns() >= d2);
	cpat_token_unref(dt);
	/* ... and with room, a past deadline still accepts. */
	ctx_open(&c);
	assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
	assert_int_equal(atomic_load(&x.runs), 0);
	assert_int_equal(atomic_load(&x.dones), 0);
	assert_int_equal(cpat_pool_submit_until(p, &t, NULL, 0), 0);
	assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
	assert_int_equal(atomic_load(&x.runs), 1);
	struct cpat_pool_stats s = stats_of(p);
	assert_int_equal(s.rejected, 3);
	cpat_pool_destroy(p);
	ctx_fini(&c);
}

/* A pool of one worker stuck on c's gate, with an empty queue of @p cap. */
static struct cpat_pool *stuck_pool(struct ctx *c, int policy, size_t cap,
				    struct job *gate)
{
	struct cpat_pool *p = mkpool(1, cap, policy);
	job_init(gate, c, J_GATE, 0);
	struct cpat_task t = job_task(gate);
	assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
	wait_long(&c->started, 1);
	return p;
}

TH_TEST_FN(pool_submit_many_reports_how_many_were_accepted)
{
	(void)state;
	enum { N = 10, CAP = 4 };
	struct job x[N];
	struct cpat_task t[N];
	for (int mode = 0; mode < 4; mode++) {
		struct ctx c;
		ctx_init(&c);
		struct job gate;
		int policy = mode == 0   ? CPAT_POOL_REJECT
			     : mode == 3 ? CPAT_POOL_CALLER_RUNS
					 : CPAT_POOL_BLOCK;
		struct cpat_pool *p = stuck_pool(&c, policy, CAP, &gate);
		for (int i = 0; i < N; i++) {
			job_init(&x[i], NULL, J_PLAIN, 0);
			t[i] = job_task(&x[i]);
		}
		size_t got = 99;
		int rc;
		int64_t d = cpat_now_ns() + 20 * CPAT_MSEC;
		switch (mode) {
		case 0: /* REJECT: what fits, then -EAGAIN. */
			rc = cpat_pool_submit_many(p, t, N, &got, NULL,
						   CPAT_FOREVER);
			assert_int_equal(rc, -EAGAIN);
			assert_int_equal(got, CAP);
			break;
		case 1: /* BLOCK with a deadline: what fits, then -ETIMEDOUT. */
			rc = cpat_pool_submit_many(p, t, N, &got, NULL, d);
			assert_int_equal(rc, -ETIMEDOUT);
			assert_true(cpat_now_ns() >= d);
			assert_int_equal(got, CAP);
			break;
		case 2: /* BLOCK: waits for room for all of them. */
			ctx_open(&c);
			rc = cpat_pool_submit_many(p, t, N, &got, NULL,
						   CPAT_FOREVER);
			assert_int_equal(rc, 0);
			assert_int_equal(got, N);
			break;
		default: /* CALLER_RUNS: the rest run here. */
			rc = cpat_pool_submit_many(p, t, N, &got, NULL,
						   CPAT_FOREVER);
			assert_int_equal(rc, 0);
			assert_int_equal(got, N);
			for (int i = CAP; i < N; i++) {
				assert_int_equal(atomic_load(&x[i].runs), 1);
				assert_true(pthread_equal(x[i].runner,
							  pthread_self()));
			}
			break;
		}
		ctx_open(&c);
		assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
		for (int i = 0; i < N; i++) {
			int want = (size_t)i < got ? 1 : 0;
			assert_int_equal(atomic_load(&x[i].runs), want);
			assert_int_equal(atomic_load(&x[i].dones), want);
		}
		struct cpat_pool_report r;
		assert_int_equal(cpat_pool_shutdown(p, CPAT_POOL_DRAIN,
						    CPAT_FOREVER, &r),
				 0);
		assert_int_equal(r.ran, 1 + got);
		assert_int_equal(r.submitted, r.ran + r.discarded + r.rejected);
		cpat_pool_destroy(p);
		ctx_fini(&c);
	}
}

/* ---- wait_idle ----------------------------------------------------------- */

TH_TEST_FN(pool_wait_idle_returns_after_every_submitted_task_finished)
{
	(void)state;
	long rounds = SIZE(50, 10);
	enum { N = 200 };
	struct ctx c;
	ctx_init(&c);
	struct job *j = calloc(N, sizeof *j);
	assert_non_null(j);
	struct cpat_pool *p = mkpool(2, 16, CPAT_POOL_BLOCK);
	for (long round = 0; round < rounds; round++) {
		submit_jobs(p, &c, j, N, J_PLAIN);
		assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
		/* Every task finished, done included, before it returned. */
		for (int i = 0; i < N; i++) {
			assert_int_equal(atomic_load(&j[i].runs), 1);
			assert_int_equal(atomic_load(&j[i].dones), 1);
		}
		assert_int_equal(atomic_load(&c.finished), (round + 1) * N);
		struct cpat_pool_stats s = stats_of(p);
		assert_int_equal(s.queued, 0);
		assert_int_equal(s.running, 0);
		assert_int_equal(s.completed,
				 (unsigned long long)(round + 1) * N);
	}
	/* Idle already: returns 0 at once, even with a past deadline. */
	assert_int_equal(cpat_pool_wait_idle(p, NULL, 0), 0);
	cpat_pool_destroy(p);
	free(j);
	ctx_fini(&c);
}

TH_TEST_FN(pool_wait_idle_with_stuck_task_etimedout_or_token_cause)
{
	(void)state;
	struct ctx c;
	ctx_init(&c);
	struct job gate;
	struct cpat_pool *p = stuck_pool(&c, CPAT_POOL_BLOCK, 4, &gate);
	int64_t d = cpat_now_ns() + 20 * CPAT_MSEC;
	assert_int_equal(cpat_pool_wait_idle(p, NULL, d), -ETIMEDOUT);
	assert_true(cpat_now_ns() >= d);
	assert_int_equal(cpat_pool_wait_idle(p, NULL, 0), -ETIMEDOUT);
	struct cpat_token *tok = mktok(NULL);
	cpat_token_cancel(tok);
	assert_int_equal(cpat_pool_wait_idle(p, tok, CPAT_FOREVER), -ECANCELED);
	cpat_token_unref(tok);
	struct cpat_token *dt = NULL;
	int64_t d2 = cpat_now_ns() + 20 * CPAT_MSEC;
	assert_int_equal(cpat_token_create_deadline(&dt, NULL, d2), 0);
	assert_int_equal(cpat_pool_wait_idle(p, dt, CPAT_FOREVER), -ETIMEDOUT);
	assert_true(cpat_now_ns() >= d2);
	cpat_token_unref(dt);
	assert_int_equal(atomic_load(&gate.runs), 1);
	assert_int_equal(atomic_load(&gate.dones), 0);
	ctx_open(&c);
	assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
	assert_int_equal(atomic_load(&gate.dones), 1);
	/* Still usable. */
	struct job x;
	job_init(&x, NULL, J_PLAIN, 0);
	struct cpat_task t = job_task(&x);
	assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
	assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
	assert_int_equal(atomic_load(&x.runs), 1);
	cpat_pool_destroy(p);
	ctx_fini(&c);
}

/* ---- from inside a task ------------------------------------------------ */

TH_TEST_FN(pool_shutdown_and_wait_idle_from_inside_task_ebusy)
{
	(void)state;
	struct ctx c;
	ctx_init(&c);
	struct cpat_pool *p = mkpool(2, 4, CPAT_POOL_BLOCK);
	c.pool = p;
	struct job in;
	job_init(&in, &c, J_INSIDE, 0);
	struct cpat_task t = job_task(&in);
	assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
	assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
	assert_int_equal(atomic_load(&in.runs), 1);
	assert_int_equal(in.rc1, -EBUSY);
	assert_int_equal(in.rc2, -EBUSY);
	/* The refused shutdown did nothing: the pool still takes tasks. */
	struct job x;
	job_init(&x, NULL, J_PLAIN, 0);
	t = job_task(&x);
	assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
	assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
	assert_int_equal(atomic_load(&x.runs), 1);
	cpat_pool_destroy(p);
	ctx_fini(&c);
}

struct self_submit {
	struct cpat_pool *pool;
	struct job b, c;
	int rc_b, rc_c;
	int c_runs_after;
	pthread_t self;
};

static int self_submit_fn(void *arg, struct cpat_token *tok)
{
	(void)tok;
	struct self_submit *s = arg;
	s->self = pthread_self();
	struct cpat_task tb = job_task(&s->b), tc = job_task(&s->c);
	s->rc_b = cpat_pool_submit(s->pool, &tb, NULL); /* fills the queue */
	s->rc_c = cpat_pool_submit(s->pool, &tc, NULL); /* would block */
	s->c_runs_after = atomic_load(&s->c.runs);
	return 0;
}

TH_TEST_FN(pool_task_submitting_to_own_full_pool_runs_inline)
{
	(void)state;
	struct cpat_pool *p = mkpool(1, 1, CPAT_POOL_BLOCK);
	struct self_submit s;
	memset(&s, 0, sizeof s);
	s.pool = p;
	job_init(&s.b, NULL, J_PLAIN, 0);
	job_init(&s.c, NULL, J_PLAIN, 0);
	struct cpat_task t = {.fn = self_submit_fn, .arg = &s};
	assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
	assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
	assert_int_equal(s.rc_b, 0);
	assert_int_equal(s.rc_c, 0);
	assert_int_equal(s.c_runs_after, 1);
	assert_true(pthread_equal(s.c.runner, s.self));
	assert_int_equal(atomic_load(&s.b.runs), 1);
	assert_int_equal(atomic_load(&s.c.runs), 1);
	assert_int_equal(atomic_load(&s.b.dones), 1);
	assert_int_equal(atomic_load(&s.c.dones), 1);
	cpat_pool_destroy(p);
}

/* ---- lifecycle ---------------------------------------------------------- */

TH_TEST_FN(pool_create_submit_destroy_cycles_no_hang)
{
	(void)state;
	long cycles = SIZE(10000, TSAN ? 1000 : 2000);
	long lost = 0;
	for (long i = 0; i < cycles; i++) {
		struct cpat_pool *p =
			mkpool(1 + (unsigned)(i % 2), 2, CPAT_POOL_BLOCK);
		struct job j[3];
		int n = (int)(i % 3) + 1;
		for (int k = 0; k < n; k++) {
			job_init(&j[k], NULL, J_PLAIN, 0);
			struct cpat_task t = job_task(&j[k]);
			if (cpat_pool_submit(p, &t, NULL) != 0)
				lost++;
		}
		/* Destroy without shutdown drains. */
		cpat_pool_destroy(p);
		for (int k = 0; k < n; k++)
			lost += atomic_load(&j[k].runs) != 1 ||
				atomic_load(&j[k].dones) != 1;
	}
	assert_int_equal(lost, 0);
}

TH_TEST_FN(pool_concurrent_shutdowns_each_wait_and_report)
{
	(void)state;
	struct ctx c;
	ctx_init(&c);
	struct job gate, q[3];
	struct cpat_pool *p = full_pool(&c, CPAT_POOL_BLOCK, 3, &gate, q);
	struct shutdown_thread sd[3];
	for (int i = 0; i < 3; i++)
		shutdown_start(&sd[i], p, CPAT_POOL_DRAIN, CPAT_FOREVER);
	struct job probe;
	job_init(&probe, NULL, J_PLAIN, 0);
	long probes = wait_intake_stopped(p, &probe);
	/* All three are waiting for the stuck worker. */
	wait_idle_waiters(p, 3);
	for (int i = 0; i < 3; i++)
		assert_int_equal(atomic_load(&sd[i].finished), 0);
	ctx_open(&c);
	for (int i = 0; i < 3; i++) {
		th_join(sd[i].t);
		assert_int_equal(sd[i].rc, 0);
		assert_int_equal(sd[i].r.ran, 4);
		assert_int_equal(sd[i].r.discarded, 0);
		assert_int_equal(sd[i].r.still_running, 0);
	}
	(void)probes;
	cpat_pool_destroy(p);
	ctx_fini(&c);
}

/* ---- statistics and errors ------------------------------------------ */

TH_TEST_FN(pool_stats_fields_consistent)
{
	(void)state;
	struct ctx c;
	ctx_init(&c);
	struct job gate, q[3];
	struct cpat_pool *p = full_pool(&c, CPAT_POOL_REJECT, 3, &gate, q);
	struct job x;
	job_init(&x, NULL, J_PLAIN, 0);
	struct cpat_task t = job_task(&x);
	assert_int_equal(cpat_pool_submit(p, &t, NULL), -EAGAIN);
	struct cpat_pool_stats s = stats_of(p);
	assert_int_equal(s.submitted, 5);
	assert_int_equal(s.rejected, 1);
	assert_int_equal(s.running, 1);
	assert_int_equal(s.queued, 3);
	assert_int_equal(s.completed, 0);
	assert_int_equal(s.workers, 1);
	assert_int_equal(s.idle, 0);
	assert_int_equal(s.spawned, 1);
	assert_int_equal(s.retired, 0);
	assert_int_equal(s.peak_workers, 1);
	ctx_open(&c);
	assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
	/* Failures: every third task returns non-zero. */
	enum { N = 60 };
	struct job *j = calloc(N, sizeof *j);
	assert_non_null(j);
	for (int i = 0; i < N; i++) {
		job_init(&j[i], NULL, J_PLAIN, i % 3 == 0 ? -(i + 1) : 0);
		t = job_task(&j[i]);
		while (cpat_pool_submit(p, &t, NULL) == -EAGAIN)
			th_relax();
	}
	assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
	/* The worker comes back to idle after the last task. */
	while (stats_of(p).idle != 1)
		th_relax();
	s = stats_of(p);
	assert_int_equal(s.queued, 0);
	assert_int_equal(s.running, 0);
	assert_int_equal(s.completed, 4 + N);
	assert_int_equal(s.failed, N / 3);
	assert_int_equal(s.discarded, 0);
	assert_int_equal(s.completed + s.discarded + s.running + s.queued,
			 s.submitted - s.rejected);
	assert_int_equal(s.spawned - s.retired, s.workers);
	assert_int_equal(s.workers, 1);
	struct cpat_pool_report r;
	assert_int_equal(
		cpat_pool_shutdown(p, CPAT_POOL_DRAIN, CPAT_FOREVER, &r), 0);
	s = stats_of(p);
	assert_int_equal(s.workers, 0);
	assert_int_equal(s.idle, 0);
	assert_int_equal(s.retired, s.spawned);
	assert_true(s.worker_seconds > 0.0);
	assert_int_equal(r.submitted, s.submitted);
	assert_int_equal(r.ran, s.completed);
	assert_int_equal(r.failed, s.failed);
	assert_int_equal(r.rejected, s.rejected);
	assert_int_equal(r.submitted, r.ran + r.discarded + r.rejected);
	cpat_pool_destroy(p);
	free(j);
	ctx_fini(&c);
}

TH_TEST_FN(pool_errors_keeps_first_error_first_up_to_max_errors)
{
	(void)state;
	struct cpat_pool_opts o;
	cpat_pool_opts_init(&o);
	o.workers = 1;
	o.queue_capacity = 4;
	o.max_errors = 5;
	struct cpat_pool *p = NULL;
	assert_int_equal(cpat_pool_create(&p, &o), 0);
	assert_int_equal(cpat_pool_errors(p, NULL, 0), 0);
	/* One at a time, so that the finishing order is known: 10 failures
	 * (negative and positive) among successes. */
	int want[10];
	for (int i = 0; i < 10; i++) {
		struct job ok, bad;
		job_init(&ok, NULL, J_PLAIN, 0);
		want[i] = i % 2 ? 100 + i : -(i + 1);
		job_init(&bad, NULL, J_PLAIN, want[i]);
		struct cpat_task t = job_task(&ok);
		assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
		t = job_task(&bad);
		assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
		assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
		assert_int_equal(atomic_load(&bad.done_rc), want[i]);
	}
	int errs[16];
	memset(errs, 0, sizeof errs);
	assert_int_equal(cpat_pool_errors(p, errs, 16), 5);
	for (int i = 0; i < 5; i++)
		assert_int_equal(errs[i], want[i]);
	assert_int_equal(errs[5], 0);
	int two[2] = {0, 0};
	assert_int_equal(cpat_pool_errors(p, two, 2), 5);
	assert_int_equal(two[0], want[0]);
	assert_int_equal(two[1], want[1]);
	assert_int_equal(cpat_pool_errors(p, NULL, 0), 5);
	struct cpat_pool_stats s = stats_of(p);
	assert_int_equal(s.failed, 10);
	assert_int_equal(s.completed, 20);
	struct cpat_pool_report r;
	assert_int_equal(
		cpat_pool_shutdown(p, CPAT_POOL_DRAIN, CPAT_FOREVER, &r), 0);
	assert_int_equal(r.failed, 10);
	/* Still readable after shutdown. */
	assert_int_equal(cpat_pool_errors(p, errs, 1), 5);
	assert_int_equal(errs[0], want[0]);
	cpat_pool_destroy(p);
}

TH_TEST_FN(pool_parent_token_fires_pool_token)
{
	(void)state;
	struct cpat_token *parent = mktok(NULL);
	struct cpat_pool_opts o;
	cpat_pool_opts_init(&o);
	o.workers = 2;
	o.parent = parent;
	struct cpat_pool *p = NULL;
	assert_int_equal(cpat_pool_create(&p, &o), 0);
	struct ctx c;
	ctx_init(&c);
	struct job w;
	job_init(&w, &c, J_WATCH, 0);
	struct cpat_task t = job_task(&w);
	assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
	wait_long(&c.started, 1);
	cpat_token_cancel(parent);
	assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
	assert_int_equal(w.tok_status, -ECANCELED);
	assert_int_equal(cpat_token_status(cpat_pool_token(p)), -ECANCELED);
	cpat_pool_destroy(p);
	cpat_token_unref(parent);
	ctx_fini(&c);
}

/* ---- wake-ups ---------------------------------------------------------- */

/* Holds the first worker that reaches the hook while still counted as a
 * spinner, until the test releases it. */
static struct {
	_Atomic int armed;
	_Atomic int holding;
	struct cpat_token *release;
} hold;

static void hold_spinner_before_park(struct cpat_pool *p, bool spinning)
{
	(void)p;
	int one = 1;
	if (spinning && atomic_compare_exchange_strong(&hold.armed, &one, 0)) {
		atomic_store(&hold.holding, 1);
		cpat_token_wait(hold.release, CPAT_FOREVER);
	}
}

/*
 * A worker that still counts as a spinner when tasks arrive makes their
 * submitters wake nobody; if it then parks and its re-check of the queue
 * finds the first task, it must wake another worker for the rest. Before
 * the fix it did not: the second task waited behind the first (a fixed
 * pool's parked worker slept forever; a dynamic pool's until its idle
 * timeout; found as a 120 s hang in 1 pinned run of 200). The hook holds
 * one worker at that point, counted as a spinner, while the other parks.
 */
TH_TEST_FN(pool_worker_finding_task_on_park_recheck_wakes_one_for_the_rest)
{
	(void)state;
	for (int dyn = 0; dyn <= 1; dyn++) {
		hold.release = mktok(NULL);
		atomic_store(&hold.holding, 0);
		atomic_store(&hold.armed, 1);
		atomic_store(&cpat__test_pool_before_park,
			     hold_spinner_before_park);
		struct cpat_pool *p;
		if (dyn) {
			struct cpat_dynpool_opts o;
			cpat_dynpool_opts_init(&o);
			o.min_workers = 2;
			o.max_workers = 2;
			o.queue_capacity = 8;
			p = NULL;
			assert_int_equal(cpat_dynpool_create(&p, &o), 0);
		} else {
			p = mkpool(2, 8, CPAT_POOL_BLOCK);
		}
		/* One worker held as a spinner, the other parked. */
		while (!atomic_load(&hold.holding) ||
		       cpat__pool_parked_workers(p) != 1)
			th_relax();
		struct ctx c;
		ctx_init(&c);
		struct job j[2];
		submit_jobs(p, &c, j, 2, J_GATE);
		cpat_token_cancel(hold.release);
		/* Both tasks block on the gate, so both must start, on the
		 * two workers. A bound, not a speed check: without the wake
		 * the second never starts. */
		int64_t until = cpat_now_ns() + 10 * CPAT_SEC;
		while (atomic_load(&c.started) < 2 && cpat_now_ns() < until)
			th_relax();
		long started = atomic_load(&c.started);
		atomic_store(&cpat__test_pool_before_park, NULL);
		ctx_open(&c);
		assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
		cpat_pool_destroy(p);
		ctx_fini(&c);
		cpat_token_unref(hold.release);
		assert_int_equal(started, 2);
		for (int i = 0; i < 2; i++)
			assert_int_equal(atomic_load(&j[i].runs), 1);
	}
}

/* The test hooks: an idle pool ends with every worker parked, a running
 * task keeps its worker out of the count; NULL counts nothing. */
TH_TEST_FN(pool_hooks_count_parked_workers_and_are_zero_for_null)
{
	(void)state;
	enum { W = 3 };
	struct cpat_pool *p = mkpool(W, 8, CPAT_POOL_BLOCK);
	while (cpat__pool_parked_workers(p) != W)
		th_relax();
	struct ctx c;
	ctx_init(&c);
	struct job j;
	job_init(&j, &c, J_GATE, 0);
	struct cpat_task t = job_task(&j);
	assert_int_equal(cpat_pool_submit(p, &t, NULL), 0);
	wait_long(&c.started, 1);
	assert_true(cpat__pool_parked_workers(p) <= W - 1);
	ctx_open(&c);
	assert_int_equal(cpat_pool_wait_idle(p, NULL, CPAT_FOREVER), 0);
	while (cpat__pool_parked_workers(p) != W)
		th_relax();
	assert_int_equal(cpat__pool_blocked_submitters(p), 0);
	assert_int_equal(cpat__pool_idle_waiters(p), 0);
	assert_int_equal(cpat__pool_parked_workers(NULL), 0);
	assert_int_equal(cpat__pool_blocked_submitters(NULL), 0);
	assert_int_equal(cpat__pool_idle_waiters(NULL), 0);
	cpat_pool_destroy(p);
	ctx_fini(&c);
}

/* ---- done as a task's acknowledgement ------------------------------- */

/*
 * A task's done can serve as its acknowledgement (pool.h): it runs exactly
 * once for every accepted task, with the task's result or -ECANCELED if it
 * never ran, and never for a task a submit refused. Each task records its
 * runs and done calls; the main thread records what its submit returned
 * and checks every task once the pool is destroyed.
 */
struct ack {
	int ret;                   /* what fn returns */
	struct cpat_token *gate;   /* fn waits until it fires, or NULL */
	struct cpat_token *opener; /* done(-ECANCELED) fires it, or NULL */
	int submit_rc;             /* what its submit returned */
	_Atomic int runs, dones, done_rc;
	pthread_t doner;
};

static int ack_fn(void *arg, struct cpat_token *tok)
{
	struct ack *a = arg;
	(void)tok;
	atomic_fetch_add(&a->runs, 1);
	if (a->gate)
		cpat_token_wait(a->gate, CPAT_FOREVER);
	return a->ret;
}

static void ack_done(void *arg, int rc)
{
	struct ack *a = arg;
	a->doner = pthread_self();
	atomic_store(&a->done_rc, rc);
	atomic_fetch_add(&a->dones, 1);
	if (rc == -ECANCELED && a->opener)
		cpat_token_cancel(a->opener);
}

struct acks {
	struct ack a[32];
	size_t n;
};

/* The next task of @p s, returning @p ret. */
static struct ack *ack_new(struct acks *s, int ret)
{
	assert_true(s->n < sizeof s->a / sizeof s->a[0]);
	struct ack *a = &s->a[s->n++];
	memset(a, 0, sizeof *a);
	a->ret = ret;
	a->submit_rc = 1; /* not offered yet */
	atomic_store(&a->done_rc, 12345);
	return a;
}

static struct cpat_task ack_task(struct ack *a)
{
	struct cpat_task t = {.fn = ack_fn, .done = ack_done, .arg = a};
	return t;
}

/* Submits a new task of @p s returning @p ret; returns it. */
static struct ack *ack_submit(struct acks *s, struct cpat_pool *p, int ret,
			      struct cpat_token *tok, int64_t deadline)
{
	struct ack *a = ack_new(s, ret);
	struct cpat_task t = ack_task(a);
	a->submit_rc = cpat_pool_submit_until(p, &t, tok, deadline);
	return a;
}

static struct ack *ack_try(struct acks *s, struct cpat_pool *p, int ret)
{
	struct ack *a = ack_new(s, ret);
	struct cpat_task t = ack_task(a);
	a->submit_rc = cpat_pool_try_submit(p, &t);
	return a;
}

/* Offers @p n new tasks (returning 0, 1, 2, ...) in one submit_many: the
 * first *accepted get 0, the rest the call's code. Returns that code. */
static int ack_many(struct acks *s, struct cpat_pool *p, size_t n,
		    struct cpat_token *tok, int64_t deadline, size_t *accepted)
{
	struct cpat_task t[8];
	struct ack *a[8];
	assert_true(n <= 8);
	for (size_t i = 0; i < n; i++) {
		a[i] = ack_new(s, (int)i);
		t[i] = ack_task(a[i]);
	}
	size_t k = 99;
	int rc = cpat_pool_submit_many(p, t, n, &k, tok, deadline);
	assert_true(k <= n);
	for (size_t i = 0; i < n; i++)
		a[i]->submit_rc = i < k ? 0 : rc;
	*accepted = k;
	return rc;
}

/* A gate task (blocked until @p gate fires) running on the pool's only
 * worker. */
static struct ack *ack_stuck(struct acks *s, struct cpat_pool *p,
			     struct cpat_token *gate)
{
	struct ack *g = ack_new(s, 0);
	g->gate = gate;
	struct cpat_task t = ack_task(g);
	g->submit_rc = cpat_pool_submit(p, &t, NULL);
	assert_int_equal(g->submit_rc, 0);
	wait_int(&g->runs, 1);
	return g;
}

/* One worker: fixed, or dynamic between 1 and 1. */
static struct cpat_pool *ack_pool(int dyn, size_t cap, int policy)
{
	if (!dyn)
		return mkpool(1, cap, policy);
	struct cpat_dynpool_opts o;
	cpat_dynpool_opts_init(&o);
	o.min_workers = 1;
	o.max_workers = 1;
	o.queue_capacity = cap;
	o.policy = policy;
	struct cpat_pool *p = NULL;
	assert_int_equal(cpat_dynpool_create(&p, &o), 0);
	return p;
}

/*
 * After the pool is destroyed: every task offered was accepted (done once,
 * with its result if it ran, else -ECANCELED) or refused (never run, no
 * done). The counts, for the report: tasks that ran, failed, were
 * discarded, and refused submits (-EINVAL ones are not counted).
 */
struct ack_counts {
	unsigned long long ran, failed, discarded, rejected;
};

static struct ack_counts ack_check(const struct acks *s)
{
	struct ack_counts c = {0, 0, 0, 0};
	for (size_t i = 0; i < s->n; i++) {
		const struct ack *a = &s->a[i];
		assert_int_not_equal(a->submit_rc, 1);
		int runs = atomic_load(&a->runs);
		int dones = atomic_load(&a->dones);
		int rc = atomic_load(&a->done_rc);
		if (a->submit_rc == 0) {
			assert_int_equal(dones, 1);
			assert_in_range(runs, 0, 1);
			assert_int_equal(rc, runs ? a->ret : -ECANCELED);
			c.ran += (unsigned long long)runs;
			c.failed += runs && a->ret != 0;
			c.discarded += !runs;
		} else {
			assert_int_equal(runs, 0);
			assert_int_equal(dones, 0);
			c.rejected += a->submit_rc != -EINVAL;
		}
	}
	return c;
}

static void ack_report_is(const struct cpat_pool_report *r, struct ack_counts c)
{
	assert_int_equal(r->ran, c.ran);
	assert_int_equal(r->failed, c.failed);
	assert_int_equal(r->discarded, c.discarded);
	assert_int_equal(r->rejected, c.rejected);
	assert_int_equal(r->still_running, 0);
	assert_int_equal(r->submitted, c.ran + c.discarded + c.rejected);
}

/* Queue full, policy REJECT: submit, try_submit and submit_many refuse
 * (submit_many accepting a prefix first), as do a fired token and bad
 * arguments; DRAIN runs every accepted task; submits after shutdown are
 * refused with -EPIPE. */
static void ack_reject_drain(int dyn)
{
	struct acks s;
	s.n = 0;
	struct cpat_pool *p = ack_pool(dyn, 4, CPAT_POOL_REJECT);
	struct cpat_token *gate = mktok(NULL), *fired = mktok(NULL);
	cpat_token_cancel(fired);
	ack_stuck(&s, p, gate);
	assert_int_equal(ack_submit(&s, p, 0, NULL, CPAT_FOREVER)->submit_rc,
			 0);
	assert_int_equal(ack_submit(&s, p, 5, NULL, CPAT_FOREVER)->submit_rc,
			 0);
	size_t k = 0;
	assert_int_equal(ack_many(&s, p, 4, NULL, CPAT_FOREVER, &k), -EAGAIN);
	assert_int_equal(k, 2);
	assert_int_equal(ack_submit(&s, p, 0, NULL, CPAT_FOREVER)->submit_rc,
			 -EAGAIN);
	assert_int_equal(ack_try(&s, p, 0)->submit_rc, -EAGAIN);
	assert_int_equal(ack_submit(&s, p, 0, fired, CPAT_FOREVER)->submit_rc,
			 -ECANCELED);
	/* Bad arguments: a task without fn (its done must not run either). */
	struct ack *bad = ack_new(&s, 0);
	struct cpat_task t = {.fn = NULL, .done = ack_done, .arg = bad};
	bad->submit_rc = cpat_pool_submit(p, &t, NULL);
	assert_int_equal(bad->submit_rc, -EINVAL);
	assert_int_equal(cpat_pool_try_submit(p, &t), -EINVAL);
	struct ack *good = ack_new(&s, 0);
	struct cpat_task two[2] = {ack_task(good), t};
	k = 99;
	good->submit_rc =
		cpat_pool_submit_many(p, two, 2, &k, NULL, CPAT_FOREVER);
	assert_int_equal(good->submit_rc, -EINVAL);
	assert_int_equal(k, 0);

	cpat_token_cancel(gate);
	struct cpat_pool_report r;
	assert_int_equal(
		cpat_pool_shutdown(p, CPAT_POOL_DRAIN, CPAT_FOREVER, &r), 0);
	struct ack_counts before = ack_check(&s);
	ack_report_is(&r, before);
	assert_int_equal(before.ran, 5);
	assert_int_equal(before.discarded, 0);

	assert_int_equal(ack_submit(&s, p, 0, NULL, CPAT_FOREVER)->submit_rc,
			 -EPIPE);
	assert_int_equal(ack_try(&s, p, 0)->submit_rc, -EPIPE);
	assert_int_equal(ack_many(&s, p, 2, NULL, CPAT_FOREVER, &k), -EPIPE);
	assert_int_equal(k, 0);
	cpat_pool_destroy(p);
	ack_check(&s);
	cpat_token_unref(gate);
	cpat_token_unref(fired);
}

/* Queue full, policy BLOCK: a past deadline, a deadline passing while
 * blocked (the call's, or the token's), a cancelled token refuse; a
 * shutdown whose deadline passes discards the queue (done -ECANCELED) and
 * the task still running finishes later with its own result. */
static void ack_block_deadline(int dyn)
{
	struct acks s;
	s.n = 0;
	struct cpat_pool *p = ack_pool(dyn, 2, CPAT_POOL_BLOCK);
	struct cpat_token *gate = mktok(NULL), *fired = mktok(NULL);
	cpat_token_cancel(fired);
	struct ack *g = ack_stuck(&s, p, gate);
	g->ret = 9;
	assert_int_equal(ack_submit(&s, p, 0, NULL, CPAT_FOREVER)->submit_rc,
			 0);
	assert_int_equal(ack_submit(&s, p, 0, NULL, CPAT_FOREVER)->submit_rc,
			 0);
	assert_int_equal(ack_submit(&s, p, 0, NULL, cpat_now_ns())->submit_rc,
			 -ETIMEDOUT);
	assert_int_equal(
		ack_submit(&s, p, 0, NULL, cpat_now_ns() + 2 * CPAT_MSEC)
			->submit_rc,
		-ETIMEDOUT);
	struct cpat_token *soon = NULL;
	assert_int_equal(cpat_token_create_deadline(
				 &soon, NULL, cpat_now_ns() + 2 * CPAT_MSEC),
			 0);
	assert_int_equal(ack_submit(&s, p, 0, soon, CPAT_FOREVER)->submit_rc,
			 -ETIMEDOUT);
	assert_int_equal(ack_submit(&s, p, 0, fired, CPAT_FOREVER)->submit_rc,
			 -ECANCELED);
	size_t k = 99;
	assert_int_equal(
		ack_many(&s, p, 3, NULL, cpat_now_ns() + CPAT_MSEC, &k),
		-ETIMEDOUT);
	assert_int_equal(k, 0);

	struct cpat_pool_report r;
	assert_int_equal(cpat_pool_shutdown(p, CPAT_POOL_DRAIN,
					    cpat_now_ns() + 20 * CPAT_MSEC, &r),
			 -ETIMEDOUT);
	assert_int_equal(r.discarded, 2);
	assert_int_equal(r.still_running, 1);
	assert_int_equal(atomic_load(&g->dones), 0);
	cpat_token_cancel(gate);
	assert_int_equal(
		cpat_pool_shutdown(p, CPAT_POOL_DRAIN, CPAT_FOREVER, &r), 0);
	struct ack_counts c = ack_check(&s);
	ack_report_is(&r, c);
	assert_int_equal(c.ran, 1);
	assert_int_equal(c.failed, 1);
	assert_int_equal(c.discarded, 2);
	cpat_pool_destroy(p);
	ack_check(&s);
	cpat_token_unref(soon);
	cpat_token_unref(gate);
	cpat_token_unref(fired);
}

/* Queue full, policy CALLER_RUNS: submit and submit_many run the tasks
 * inline (accepted, done already called in this thread when they return);
 * try_submit refuses; DISCARD hands the queue to done with -ECANCELED (the
 * first discarded task's done lets the stuck one finish). */
static void ack_caller_runs_discard(int dyn)
{
	struct acks s;
	s.n = 0;
	struct cpat_pool *p = ack_pool(dyn, 2, CPAT_POOL_CALLER_RUNS);
	struct cpat_token *gate = mktok(NULL);
	ack_stuck(&s, p, gate);
	struct ack *q0 = ack_new(&s, 0);
	q0->opener = gate;
	struct cpat_task t = ack_task(q0);
	q0->submit_rc = cpat_pool_submit(p, &t, NULL);
	assert_int_equal(q0->submit_rc, 0);
	assert_int_equal(ack_submit(&s, p, 0, NULL, CPAT_FOREVER)->submit_rc,
			 0);
	struct ack *in = ack_submit(&s, p, 4, NULL, CPAT_FOREVER);
	assert_int_equal(in->submit_rc, 0);
	assert_int_equal(atomic_load(&in->dones), 1);
	assert_int_equal(atomic_load(&in->done_rc), 4);
	assert_true(pthread_equal(in->doner, pthread_self()));
	size_t first = s.n, k = 0;
	assert_int_equal(ack_many(&s, p, 3, NULL, CPAT_FOREVER, &k), 0);
	assert_int_equal(k, 3);
	for (size_t i = first; i < s.n; i++) {
		assert_int_equal(atomic_load(&s.a[i].dones), 1);
		assert_true(pthread_equal(s.a[i].doner, pthread_self()));
	}
	assert_int_equal(ack_try(&s, p, 0)->submit_rc, -EAGAIN);

	struct cpat_pool_report r;
	assert_int_equal(
		cpat_pool_shutdown(p, CPAT_POOL_DISCARD, CPAT_FOREVER, &r), 0);
	struct ack_counts c = ack_check(&s);
	ack_report_is(&r, c);
	assert_int_equal(c.ran, 5); /* the stuck one, 4 inline */
	assert_int_equal(c.discarded, 2);
	assert_int_equal(c.rejected, 1);
	cpat_pool_destroy(p);
	ack_check(&s);
	cpat_token_unref(gate);
}

TH_TEST_FN(pool_done_once_per_accepted_task_never_for_refused_every_path)
{
	(void)state;
	for (int dyn = 0; dyn <= 1; dyn++) {
		ack_reject_drain(dyn);
		ack_block_deadline(dyn);
		ack_caller_runs_discard(dyn);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		/* Allocator tests first: nothing else allocates yet. */
		TH_TEST(pool_create_enomem_at_every_allocation_leaks_nothing),
		TH_TEST(pool_no_allocation_per_task_in_steady_state),
		TH_TEST(pool_create_thread_failure_at_each_worker_eagain_nothing_left),
		TH_TEST(pool_create_bad_arguments_einval),
		TH_TEST(pool_calls_bad_arguments_einval_nothing_runs),
		TH_TEST(pool_every_task_runs_exactly_once_4_submitters_1_2_8_workers),
		TH_TEST(pool_drain_shutdown_runs_every_queued_task),
		TH_TEST(pool_discard_shutdown_cancels_queued_none_runs_later),
		TH_TEST(pool_discard_under_load_ran_plus_discarded_equals_submitted),
		TH_TEST(pool_shutdown_racing_8_submitters_every_submit_accounted),
		TH_TEST(pool_shutdown_deadline_stuck_task_etimedout_then_completes),
		TH_TEST(pool_task_watching_token_sees_it_cancelled_at_shutdown_deadline),
		TH_TEST(pool_unread_results_channel_cannot_deadlock_shutdown),
		TH_TEST(pool_block_policy_submit_blocks_until_room),
		TH_TEST(pool_shutdown_wakes_blocked_submitters_with_epipe),
		TH_TEST(pool_reject_policy_full_queue_eagain_task_never_runs),
		TH_TEST(pool_caller_runs_policy_runs_task_in_submitting_thread),
		TH_TEST(pool_try_submit_full_queue_eagain_under_every_policy),
		TH_TEST(pool_submit_cancelled_while_blocked_ecanceled_never_runs),
		TH_TEST(pool_submit_until_deadline_etimedout_not_before_it),
		TH_TEST(pool_submit_many_reports_how_many_were_accepted),
		TH_TEST(pool_wait_idle_returns_after_every_submitted_task_finished),
		TH_TEST(pool_wait_idle_with_stuck_task_etimedout_or_token_cause),
		TH_TEST(pool_shutdown_and_wait_idle_from_inside_task_ebusy),
		TH_TEST(pool_task_submitting_to_own_full_pool_runs_inline),
		TH_TEST(pool_create_submit_destroy_cycles_no_hang),
		TH_TEST(pool_concurrent_shutdowns_each_wait_and_report),
		TH_TEST(pool_stats_fields_consistent),
		TH_TEST(pool_errors_keeps_first_error_first_up_to_max_errors),
		TH_TEST(pool_parent_token_fires_pool_token),
		TH_TEST(pool_hooks_count_parked_workers_and_are_zero_for_null),
		TH_TEST(pool_worker_finding_task_on_park_recheck_wakes_one_for_the_rest),
		TH_TEST(pool_workers_named_cpat_pool),
		TH_TEST(pool_done_once_per_accepted_task_never_for_refused_every_path),
	};
	/* CPAT_TEST_FILTER=pool_shutdown_* runs a subset (cmocka's pattern). */
	const char *filter = getenv("CPAT_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	return TH_RUN("pool", tests);
}
