/*
 * Tests of the cpattern-redis module against a real redis-server (the
 * fixture of fixture.h starts one per test on a unix socket in a
 * temporary directory, and removes it after).
 *
 * Entries carry a field n (0..N-1). Consumers in threads record each
 * completion in a shared tally (an atomic count per n); consumer processes
 * (the consumer helper) record theirs in the hash "<stream>:done" in the
 * server. The main thread alone asserts, after the consumers stopped.
 * Waits for the consumers' progress are bounded by the harness watchdog;
 * the only timed pauses poll the server (its start-up, its counts) or open
 * an observation window in which nothing may happen.
 */
#include "harness.h"

#include "cpattern/redis.h"
#include "fixture.h"

#include <signal.h>

/* ---- helpers ------------------------------------------------------------- */

#define SKIP_WITHOUT_SERVER(f)           \
	do {                             \
		if (rfx_start(f) != 0) { \
			skip();          \
			return;          \
		}                        \
	} while (0)

static redisReply *cmd(redisContext *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(c, fmt, ap);
	va_end(ap);
	if (!r) {
		fprintf(stderr, "redis command failed: %s\n", c->errstr);
		abort();
	}
	return r;
}

/* Entries pending in the group (XPENDING summary), -1 if no group. */
static long long pending(redisContext *c, const char *stream, const char *group)
{
	redisReply *r = cmd(c, "XPENDING %s %s", stream, group);
	long long v = r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
				      r->element[0]->type == REDIS_REPLY_INTEGER
			      ? r->element[0]->integer
			      : -1;
	freeReplyObject(r);
	return v;
}

/* XADD n=first..first+count-1, pipelined. */
static void produce(redisContext *c, const char *stream, long first, long count)
{
	for (long i = first; i < first + count; i++)
		redisAppendCommand(c, "XADD %s * n %ld", stream, i);
	for (long i = 0; i < count; i++) {
		void *r;
		if (redisGetReply(c, &r) != REDIS_OK || !r) {
			fprintf(stderr, "XADD failed\n");
			abort();
		}
		freeReplyObject(r);
	}
}

static int decode_n(const struct cpat_redis_id *id,
		    const struct cpat_redis_fields *f, void *item, void *arg)
{
	(void)id;
	(void)arg;
	const char *v;
	size_t n;
	if (cpat_redis_fields_find(f, "n", &v, &n) != 0 || n == 0 || n > 10)
		return -EINVAL;
	char buf[16];
	memcpy(buf, v, n);
	buf[n] = '\0';
	*(long *)item = strtol(buf, NULL, 10);
	return 0;
}

static int encode_n(const void *item, struct cpat_redis_fields *f, void *arg)
{
	(void)arg;
	char buf[24];
	int len = snprintf(buf, sizeof buf, "%ld", *(const long *)item);
	return cpat_redis_fields_add(f, "n", buf, (size_t)len);
}

static void src_opts(struct cpat_redis_source_opts *o, const struct rfx *f,
		     const char *stream, const char *consumer)
{
	cpat_redis_source_opts_init(o);
	o->url = f->url;
	o->stream = stream;
	o->group = "g";
	o->consumer = consumer;
	o->item_size = sizeof(long);
	o->decode = decode_n;
	o->batch = 8;
	o->max_unacked = 32;
}

static struct cpat_redis_source *mksrc(const struct cpat_redis_source_opts *o)
{
	struct cpat_redis_source *s = NULL;
	char err[256] = "";
	struct cpat_redis_source_opts c = *o;
	c.errbuf = err;
	c.errlen = sizeof err;
	int rc = cpat_redis_source_create(&s, &c);
	if (rc != 0) {
		fprintf(stderr, "source create: %s: %s\n", cpat_strerror(rc),
			err);
		abort();
	}
	return s;
}

/* What consumers in threads share: a count per entry, the number of
 * distinct entries completed, and a way for the main thread to wait. */
struct tally {
	long n;
	_Atomic long *count;
	_Atomic long distinct, total, started, running, max_running;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct cpat_token *gate; /* tasks wait for it to fire, if set */
	long fail_n;             /* this entry always fails (-1: none) */
	_Atomic long fail_runs;
};

static void tally_init(struct tally *t, long n)
{
	memset(t, 0, sizeof *t);
	t->n = n;
	t->count = calloc((size_t)n, sizeof *t->count);
	t->fail_n = -1;
	pthread_mutex_init(&t->mu, NULL);
	pthread_cond_init(&t->cv, NULL);
}

static void tally_fini(struct tally *t)
{
	free(t->count);
	pthread_mutex_destroy(&t->mu);
	pthread_cond_destroy(&t->cv);
}

static void tally_wake(struct tally *t)
{
	pthread_mutex_lock(&t->mu);
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mu);
}

/* Waits until *v >= target (the watchdog bounds it). */
static void tally_wait(struct tally *t, _Atomic long *v, long target)
{
	pthread_mutex_lock(&t->mu);
	while (atomic_load(v) < target) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 20 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&t->cv, &t->mu, &ts);
	}
	pthread_mutex_unlock(&t->mu);
}

static int tally_task(const void *item, const struct cpat_redis_id *id,
		      struct cpat_token *tok, void *arg)
{
	(void)id;
	(void)tok;
	struct tally *t = arg;
	long n = *(const long *)item;
	long run = atomic_fetch_add(&t->running, 1) + 1;
	long m = atomic_load(&t->max_running);
	while (run > m &&
	       !atomic_compare_exchange_weak(&t->max_running, &m, run))
		;
	atomic_fetch_add(&t->started, 1);
	tally_wake(t);
	if (t->gate)
		cpat_token_wait(t->gate, CPAT_FOREVER);
	atomic_fetch_sub(&t->running, 1);
	if (n == t->fail_n) {
		atomic_fetch_add(&t->fail_runs, 1);
		tally_wake(t);
		return -EIO;
	}
	if (n < 0 || n >= t->n)
		return -EINVAL;
	atomic_fetch_add(&t->total, 1);
	if (atomic_fetch_add(&t->count[n], 1) == 0) {
		atomic_fetch_add(&t->distinct, 1);
		tally_wake(t);
	}
	return 0;
}

/* A consumer thread: a source feeding a pool until its token fires. */
struct cons {
	pthread_t th;
	struct cpat_redis_source_opts o;
	char name[32];
	struct tally *t;
	struct cpat_token *tok;
	unsigned workers;
	int rc;
	struct cpat_redis_source_stats st;
};

static void *cons_main(void *arg)
{
	struct cons *c = arg;
	struct cpat_redis_source *s = mksrc(&c->o);
	struct cpat_pool *pool;
	struct cpat_pool_opts po;
	cpat_pool_opts_init(&po);
	po.workers = c->workers ? c->workers : 2;
	po.queue_capacity = 16;
	if (cpat_pool_create(&pool, &po) != 0)
		abort();
	c->rc = cpat_redis_source_feed_pool(s, pool, tally_task, c->t, c->tok);
	cpat_pool_shutdown(pool, CPAT_POOL_DRAIN, CPAT_FOREVER, NULL);
	cpat_pool_destroy(pool);
	cpat_redis_source_destroy(s); /* after the flush inside: final stats */
	return NULL;
}

static void cons_start(struct cons *c, const struct rfx *f, const char *stream,
		       int i, struct tally *t, struct cpat_token *tok)
{
	snprintf(c->name, sizeof c->name, "c%d", i);
	src_opts(&c->o, f, stream, c->name);
	c->t = t;
	c->tok = tok;
	th_spawn(&c->th, cons_main, c);
}

/* ---- URLs and errors ------------------------------------------------------
 */

TH_TEST_FN(redis_bad_urls_einval_at_once)
{
	(void)state;
	static const char *bad[] = {
		"",
		"http://localhost",
		"redis://",
		"redis://:6379",
		"redis://h:0",
		"redis://h:65536",
		"redis://h:12x",
		"redis://h/abc",
		"redis://user@h",
		"redis://:@h",
		"redis://[::1",
		"redis://h?db=1",
		"redis://h%zz",
		"redis://a b",
		"unix://relative/path",
		"unix:///",
		"unix:///tmp/s?x=1",
		"unix:///tmp/s?db=q",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct cpat_redis_source_opts o;
		cpat_redis_source_opts_init(&o);
		char err[256] = "";
		o.url = bad[i];
		o.stream = "s";
		o.group = "g";
		o.consumer = "c";
		o.item_size = sizeof(long);
		o.decode = decode_n;
		o.errbuf = err;
		o.errlen = sizeof err;
		struct cpat_redis_source *s = (void *)1;
		int64_t t0 = cpat_now_ns();
		int rc = cpat_redis_source_create(&s, &o);
		int64_t took = cpat_now_ns() - t0;
		if (rc != -EINVAL)
			fprintf(stderr, "# '%s' gave %d\n", bad[i], rc);
		assert_int_equal(rc, -EINVAL);
		assert_null(s);
		assert_true(strlen(err) > 0);
		assert_true(took < 100 * CPAT_MSEC); /* no I/O */
		struct cpat_redis_sink_opts ko;
		cpat_redis_sink_opts_init(&ko);
		ko.url = bad[i];
		ko.stream = "s";
		ko.item_size = 1;
		ko.encode = encode_n; /* never called */
		struct cpat_redis_sink *k = (void *)1;
		assert_int_equal(cpat_redis_sink_create(&k, &ko), -EINVAL);
		assert_null(k);
	}
	/* Missing options are -EINVAL too. */
	struct cpat_redis_source_opts o;
	cpat_redis_source_opts_init(&o);
	struct cpat_redis_source *s;
	assert_int_equal(cpat_redis_source_create(&s, &o), -EINVAL);
	assert_int_equal(cpat_redis_source_create(NULL, &o), -EINVAL);
	assert_int_equal(cpat_redis_source_create(&s, NULL), -EINVAL);
	/* IDs. */
	struct cpat_redis_id id;
	char buf[CPAT_REDIS_ID_MAX];
	assert_int_equal(cpat_redis_id_parse("1526919030474-55", 16, &id), 0);
	assert_true(id.ms == 1526919030474ull && id.seq == 55);
	assert_int_equal(cpat_redis_id_format(&id, buf, sizeof buf), 16);
	assert_string_equal(buf, "1526919030474-55");
	assert_int_equal(
		cpat_redis_id_parse("18446744073709551615-18446744073709551615",
				    41, &id),
		0);
	assert_int_equal(cpat_redis_id_format(&id, buf, sizeof buf),
			 CPAT_REDIS_ID_MAX - 1);
	assert_int_equal(cpat_redis_id_parse("18446744073709551616", 20, &id),
			 -EINVAL);
	assert_int_equal(cpat_redis_id_parse("1-", 2, &id), -EINVAL);
	assert_int_equal(cpat_redis_id_parse("x", 1, &id), -EINVAL);
}

TH_TEST_FN(redis_dead_server_errors_within_bounded_time)
{
	(void)state;
	char dir[] = "/tmp/cpat-redis-dead-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char url[128];
	snprintf(url, sizeof url, "unix://%s/nobody.sock", dir);
	const char *urls[] = {url, "redis://127.0.0.1:1"};
	for (int i = 0; i < 2; i++) {
		struct cpat_redis_source_opts o;
		cpat_redis_source_opts_init(&o);
		char err[256] = "";
		o.url = urls[i];
		o.stream = "s";
		o.group = "g";
		o.consumer = "c";
		o.item_size = sizeof(long);
		o.decode = decode_n;
		o.errbuf = err;
		o.errlen = sizeof err;
		o.connect_timeout_ns = 500 * CPAT_MSEC;
		struct cpat_redis_source *s;
		int64_t t0 = cpat_now_ns();
		int rc = cpat_redis_source_create(&s, &o);
		int64_t took = cpat_now_ns() - t0;
		fprintf(stderr, "# %s: %s (%s) in %lld ms\n", urls[i],
			cpat_strerror(rc), err, (long long)(took / CPAT_MSEC));
		assert_int_equal(rc, -EPIPE);
		assert_true(took < 2 * CPAT_SEC);
		assert_non_null(strstr(err, "connect"));
	}
	rmdir(dir);
}

TH_TEST_FN(redis_broker_errors_map_with_message)
{
	(void)state;
	struct rfx f;
	SKIP_WITHOUT_SERVER(&f);
	redisContext *c = rfx_connect(&f);
	freeReplyObject(cmd(c, "SET notastream x"));
	struct cpat_redis_source_opts o;
	src_opts(&o, &f, "notastream", "c");
	char err[256] = "";
	o.errbuf = err;
	o.errlen = sizeof err;
	struct cpat_redis_source *s;
	assert_int_equal(cpat_redis_source_create(&s, &o), -EINVAL);
	assert_non_null(strstr(err, "WRONGTYPE"));
	/* A sink writing to it: refused, with the broker's message. */
	struct cpat_redis_sink_opts ko;
	cpat_redis_sink_opts_init(&ko);
	ko.url = f.url;
	ko.stream = "notastream";
	ko.item_size = sizeof(long);
	ko.encode = encode_n;
	struct cpat_redis_sink *k;
	assert_int_equal(cpat_redis_sink_create(&k, &ko), 0);
	long v = 1;
	assert_int_equal(cpat_redis_sink_write(k, &v, 1), -EINVAL);
	char msg[256];
	assert_true(cpat_redis_sink_last_error(k, msg, sizeof msg) > 0);
	assert_non_null(strstr(msg, "WRONGTYPE"));
	struct cpat_redis_sink_stats kst;
	cpat_redis_sink_stats(k, &kst);
	assert_int_equal(kst.last_error, -EINVAL);
	cpat_redis_sink_destroy(k);
	redisFree(c);
	rfx_stop(&f);
}

/* ---- every entry exactly once: threads ---------------------------------- */

static void run_thread_consumers(const struct rfx *f, redisContext *c, int k,
				 long n)
{
	char stream[32];
	snprintf(stream, sizeof stream, "threads%d", k);
	produce(c, stream, 0, n);
	struct tally t;
	tally_init(&t, n);
	struct cpat_token *tok;
	assert_int_equal(cpat_token_create(&tok, NULL), 0);
	struct cons cs[4];
	memset(cs, 0, sizeof cs);
	for (int i = 0; i < k; i++)
		cons_start(&cs[i], f, stream, i, &t, tok);
	tally_wait(&t, &t.distinct, n);
	cpat_token_cancel(tok);
	for (int i = 0; i < k; i++)
		th_join(cs[i].th);
	for (int i = 0; i < k; i++)
		assert_int_equal(cs[i].rc, -ECANCELED);
	for (long i = 0; i < n; i++)
		assert_int_equal(atomic_load(&t.count[i]), 1);
	assert_int_equal(atomic_load(&t.total), n);
	/* Every acknowledgement reached the broker. */
	assert_int_equal(pending(c, stream, "g"), 0);
	fprintf(stderr, "# %d consumer thread(s): %ld entries, each once\n", k,
		n);
	cpat_token_unref(tok);
	tally_fini(&t);
}

TH_TEST_FN(redis_pool_every_entry_once_1_2_4_consumer_threads)
{
	(void)state;
	struct rfx f;
	SKIP_WITHOUT_SERVER(&f);
	redisContext *c = rfx_connect(&f);
	long n = SIZE(2000, 400);
	run_thread_consumers(&f, c, 1, n);
	run_thread_consumers(&f, c, 2, n);
	run_thread_consumers(&f, c, 4, n);
	redisFree(c);
	rfx_stop(&f);
}

/* ---- the pipeline source (needs the ack core) ---------------------------- */

static int pipe_sink(const void *item, void *arg)
{
	struct cpat_redis_id id = {0, 0};
	return tally_task(item, &id, NULL, arg);
}

struct pcons {
	pthread_t th;
	struct cpat_redis_source_opts o;
	char name[32];
	struct tally *t;
	struct cpat_token *tok;
	int rc;
};

static void *pcons_main(void *arg)
{
	struct pcons *c = arg;
	struct cpat_redis_source *s = mksrc(&c->o);
	struct cpat_pipeline *p;
	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	po.item_size = sizeof(long);
	if (cpat_pipeline_create(&p, &po) != 0)
		abort();
	if (cpat_redis_source_attach(s, p) != 0 ||
	    cpat_pipeline_set_sink(p, pipe_sink, c->t) != 0)
		abort();
	c->rc = cpat_pipeline_run(p, c->tok, CPAT_FOREVER, NULL);
	cpat_pipeline_destroy(p);
	cpat_redis_source_destroy(s); /* sends the last acknowledgements */
	return NULL;
}

TH_TEST_FN(redis_pipeline_every_entry_once_1_2_4_consumer_threads)
{
	(void)state;
	struct rfx f;
	SKIP_WITHOUT_SERVER(&f);
	redisContext *c = rfx_connect(&f);
	long n = SIZE(2000, 400);
	for (int k = 1; k <= 4; k *= 2) {
		char stream[32];
		snprintf(stream, sizeof stream, "pipe%d", k);
		produce(c, stream, 0, n);
		struct tally t;
		tally_init(&t, n);
		struct cpat_token *tok;
		assert_int_equal(cpat_token_create(&tok, NULL), 0);
		struct pcons cs[4];
		for (int i = 0; i < k; i++) {
			snprintf(cs[i].name, sizeof cs[i].name, "p%d", i);
			src_opts(&cs[i].o, &f, stream, cs[i].name);
			cs[i].t = &t;
			cs[i].tok = tok;
			th_spawn(&cs[i].th, pcons_main, &cs[i]);
		}
		tally_wait(&t, &t.distinct, n);
		cpat_token_cancel(tok);
		for (int i = 0; i < k; i++)
			th_join(cs[i].th);
		for (long i = 0; i < n; i++)
			assert_int_equal(atomic_load(&t.count[i]), 1);
		assert_int_equal(pending(c, stream, "g"), 0);
		cpat_token_unref(tok);
		tally_fini(&t);
	}
	redisFree(c);
	rfx_stop(&f);
}

/* ---- processes ------------------------------------------------------------
 */

static pid_t spawn_consumer(const struct rfx *f, const char *stream,
			    const char *name, long claim_ms, long work_us)
{
	char claim[24], work[24];
	snprintf(claim, sizeof claim, "%ld", claim_ms);
	snprintf(work, sizeof work, "%ld", work_us);
	char *argv[] = {(char *)rfx_helper_path("CPAT_REDIS_CONSUMER",
						"consumer helper"),
			(char *)f->url,
			(char *)stream,
			"g",
			(char *)name,
			claim,
			work,
			NULL};
	pid_t pid = rfx_spawn_tied(argv[0], argv, -1, -1, -1);
	if (pid < 0)
		abort();
	return pid;
}

/* Entries completed (distinct) and completions in all (duplicates too),
 * from the hash the consumers write. */
static void done_counts(redisContext *c, const char *stream, long *distinct,
			long *total)
{
	redisReply *r = cmd(c, "HVALS %s:done", stream);
	*distinct = (long)r->elements;
	*total = 0;
	for (size_t i = 0; i < r->elements; i++)
		*total += strtol(r->element[i]->str, NULL, 10);
	freeReplyObject(r);
}

/* Polls the server until every entry is done and nothing is pending (the
 * consumers are other processes: there is nothing to wait on but it). */
static void wait_all_done(redisContext *c, const char *stream, long n)
{
	for (;;) {
		long d, t;
		done_counts(c, stream, &d, &t);
		if (d == n && pending(c, stream, "g") == 0)
			return;
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

static void stop_consumer(pid_t pid, int expect_clean)
{
	kill(pid, SIGTERM);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	if (expect_clean) {
		assert_true(WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), 0);
	}
}

TH_TEST_FN(redis_every_entry_once_1_2_4_consumer_processes)
{
	(void)state;
	struct rfx f;
	SKIP_WITHOUT_SERVER(&f);
	redisContext *c = rfx_connect(&f);
	long n = SIZE(1000, 300);
	for (int k = 1; k <= 4; k *= 2) {
		char stream[32];
		snprintf(stream, sizeof stream, "procs%d", k);
		produce(c, stream, 0, n);
		pid_t pids[4];
		for (int i = 0; i < k; i++) {
			char name[16];
			snprintf(name, sizeof name, "proc%d", i);
			pids[i] = spawn_consumer(&f, stream, name, 30000, 0);
		}
		wait_all_done(c, stream, n);
		for (int i = 0; i < k; i++)
			stop_consumer(pids[i], 1);
		long d, t;
		done_counts(c, stream, &d, &t);
		assert_int_equal(d, n);
		assert_int_equal(t, n); /* no duplicate without a crash */
		fprintf(stderr,
			"# %d consumer process(es): %ld entries, each once\n",
			k, n);
	}
	redisFree(c);
	rfx_stop(&f);
}

TH_TEST_FN(redis_sigkilled_consumer_entries_claimed_by_others)
{
	(void)state;
	struct rfx f;
	SKIP_WITHOUT_SERVER(&f);
	redisContext *c = rfx_connect(&f);
	struct th_rng rng;
	th_rng_init(&rng, 16);
	long rounds = SIZE(20, 6), n = 200, dups = 0;
	for (long round = 0; round < rounds; round++) {
		char stream[32];
		snprintf(stream, sizeof stream, "kill%ld", round);
		produce(c, stream, 0, n);
		pid_t pids[3];
		for (int i = 0; i < 3; i++) {
			char name[16];
			snprintf(name, sizeof name, "k%d", i);
			/* 1 ms of work per entry: the kill lands mid-stream. */
			pids[i] = spawn_consumer(&f, stream, name, 200, 1000);
		}
		/* Kill one when a random share of the entries is done. */
		long at = (long)th_rng_below(&rng, (uint64_t)n);
		int victim = (int)th_rng_below(&rng, 3);
		for (;;) {
			long d, t;
			done_counts(c, stream, &d, &t);
			if (d >= at)
				break;
			struct timespec ts = {0, 1000 * 1000};
			nanosleep(&ts, NULL);
		}
		kill(pids[victim], SIGKILL);
		int st;
		assert_int_equal(waitpid(pids[victim], &st, 0), pids[victim]);
		wait_all_done(c, stream, n);
		for (int i = 0; i < 3; i++)
			if (i != victim)
				stop_consumer(pids[i], 1);
		long d, t;
		done_counts(c, stream, &d, &t);
		/* At-least-once: every entry completed; the set of completed
		 * IDs (the hash's fields) absorbed the duplicates. */
		assert_int_equal(d, n);
		assert_true(t >= n);
		dups += t - n;
	}
	fprintf(stderr,
		"# %ld SIGKILL rounds of %ld entries: every entry "
		"completed, %ld duplicate(s) absorbed by the idempotent sink\n",
		rounds, n, dups);
	redisFree(c);
	rfx_stop(&f);
}

/* ---- server restart --------------------------------------------------------
 */

TH_TEST_FN(redis_server_restart_consumers_reconnect_nothing_acked_lost)
{
	(void)state;
	struct rfx f;
	SKIP_WITHOUT_SERVER(&f);
	redisContext *c = rfx_connect(&f);
	long n = SIZE(3000, 600);
	const char *stream = "restart";
	produce(c, stream, 0, n);
	redisFree(c);
	struct tally t;
	tally_init(&t, n);
	struct cpat_token *tok;
	assert_int_equal(cpat_token_create(&tok, NULL), 0);
	struct cons cs[2];
	memset(cs, 0, sizeof cs);
	for (int i = 0; i < 2; i++) {
		snprintf(cs[i].name, sizeof cs[i].name, "r%d", i);
		src_opts(&cs[i].o, &f, stream, cs[i].name);
		cs[i].o.claim_idle_ns = 500 * CPAT_MSEC;
		cs[i].t = &t;
		cs[i].tok = tok;
		th_spawn(&cs[i].th, cons_main, &cs[i]);
	}
	tally_wait(&t, &t.distinct, n / 3);
	assert_int_equal(rfx_restart(&f), 0);
	tally_wait(&t, &t.distinct, n);
	c = rfx_connect(&f);
	assert_non_null(c);
	/* The stream survived whole, and the acknowledgements reach it. */
	assert_int_equal(rfx_int(c, "XLEN %s", stream), n);
	while (pending(c, stream, "g") != 0) {
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	cpat_token_cancel(tok);
	for (int i = 0; i < 2; i++)
		th_join(cs[i].th);
	assert_int_equal(pending(c, stream, "g"), 0);
	long dups = atomic_load(&t.total) - n;
	for (long i = 0; i < n; i++)
		assert_true(atomic_load(&t.count[i]) >= 1);
	/* Acknowledged entries were not delivered again: only those in
	 * flight at the restart can be (at most max_unacked per consumer). */
	assert_true(dups <= 2 * 32);
	fprintf(stderr, "# restart: %ld entries, %ld duplicate(s)\n", n, dups);
	cpat_token_unref(tok);
	tally_fini(&t);
	redisFree(c);
	rfx_stop(&f);
}

/* The same, watched through the stats: a source on its own reports the
 * reconnect. */
TH_TEST_FN(redis_source_reports_reconnect_after_restart)
{
	(void)state;
	struct rfx f;
	SKIP_WITHOUT_SERVER(&f);
	redisContext *c = rfx_connect(&f);
	produce(c, "rs", 0, 10);
	redisFree(c);
	struct cpat_redis_source_opts o;
	src_opts(&o, &f, "rs", "solo");
	o.reconnect_max_ns = 50 * CPAT_MSEC;
	struct cpat_redis_source *s = mksrc(&o);
	long item;
	struct cpat_redis_id id;
	assert_int_equal(cpat_redis_source_next(s, &item, &id, NULL), 1);
	assert_int_equal(cpat_redis_source_ack(s, &id, 1), 1);
	assert_int_equal(cpat_redis_source_flush(s, NULL), 0);
	assert_int_equal(rfx_restart(&f), 0);
	for (long k = 1; k < 10; k++) {
		assert_int_equal(cpat_redis_source_next(s, &item, &id, NULL),
				 1);
		assert_int_equal(item, k);
		assert_int_equal(cpat_redis_source_ack(s, &id, 1), 1);
	}
	assert_int_equal(cpat_redis_source_flush(s, NULL), 0);
	struct cpat_redis_source_stats st;
	assert_int_equal(cpat_redis_source_stats(s, &st), 0);
	fprintf(stderr, "# reconnects %llu, failures %llu, io errors %llu\n",
		(unsigned long long)st.reconnects,
		(unsigned long long)st.connect_failures,
		(unsigned long long)st.io_errors);
	assert_true(st.reconnects >= 1);
	assert_int_equal(st.acked, 10);
	assert_int_equal(st.in_flight, 0);
	/* The token answers a dead server: stop it and cancel a read. */
	rfx_stop_server(&f);
	struct cpat_token *tok;
	assert_int_equal(cpat_token_create_deadline(
				 &tok, NULL, cpat_now_ns() + 300 * CPAT_MSEC),
			 0);
	int64_t t0 = cpat_now_ns();
	assert_int_equal(cpat_redis_source_next(s, &item, &id, tok),
			 -ETIMEDOUT);
	assert_true(cpat_now_ns() - t0 < 2 * CPAT_SEC);
	cpat_token_unref(tok);
	cpat_redis_source_destroy(s);
	rfx_stop(&f);
}

/* ---- poison ----------------------------------------------------------------
 */

TH_TEST_FN(redis_poison_entry_dead_lettered_after_n_deliveries)
{
	(void)state;
	struct rfx f;
	SKIP_WITHOUT_SERVER(&f);
	redisContext *c = rfx_connect(&f);
	const char *stream = "poison";
	produce(c, stream, 0, 5);
	/* An entry decode refuses: dead-lettered at its first delivery. */
	freeReplyObject(cmd(c, "XADD %s * junk yes", stream));
	struct tally t;
	tally_init(&t, 5);
	t.fail_n = 2; /* its task always fails */
	struct cpat_token *tok;
	assert_int_equal(cpat_token_create(&tok, NULL), 0);
	struct cons cons;
	memset(&cons, 0, sizeof cons);
	snprintf(cons.name, sizeof cons.name, "solo");
	src_opts(&cons.o, &f, stream, cons.name);
	cons.o.claim_idle_ns = 30 * CPAT_MSEC;
	cons.o.claim_interval_ns = 10 * CPAT_MSEC;
	cons.o.max_deliveries = 3;
	cons.t = &t;
	cons.tok = tok;
	th_spawn(&cons.th, cons_main, &cons);
	tally_wait(&t, &t.distinct, 4);
	while (rfx_int(c, "XLEN %s:dead", stream) < 2 ||
	       pending(c, stream, "g") != 0) {
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	cpat_token_cancel(tok);
	th_join(cons.th);
	assert_int_equal(atomic_load(&t.fail_runs), 3);
	assert_int_equal(rfx_int(c, "XLEN %s:dead", stream), 2);
	redisReply *r = cmd(c, "XRANGE %s:dead - +", stream);
	assert_int_equal(r->elements, 2);
	int saw_decode = 0, saw_deliveries = 0;
	for (size_t i = 0; i < r->elements; i++) {
		redisReply *fv = r->element[i]->element[1];
		const char *reason = NULL, *nval = NULL;
		for (size_t j = 0; j + 1 < fv->elements; j += 2) {
			if (!strcmp(fv->element[j]->str, "reason"))
				reason = fv->element[j + 1]->str;
			if (!strcmp(fv->element[j]->str, "n"))
				nval = fv->element[j + 1]->str;
		}
		assert_non_null(reason);
		if (strstr(reason, "decode"))
			saw_decode = 1;
		if (strstr(reason, "delivered 3 times")) {
			saw_deliveries = 1;
			assert_non_null(nval);
			assert_string_equal(nval,
					    "2"); /* the original fields */
		}
	}
	freeReplyObject(r);
	assert_true(saw_decode && saw_deliveries);
	tally_fini(&t);
	cpat_token_unref(tok);
	redisFree(c);
	rfx_stop(&f);
}

/* ---- the bound under a slow sink -------------------------------------------
 */

TH_TEST_FN(redis_unacked_never_exceed_bound_under_slow_sink)
{
	(void)state;
	struct rfx f;
	SKIP_WITHOUT_SERVER(&f);
	redisContext *c = rfx_connect(&f);
	const char *stream = "slow";
	long n = 64;
	produce(c, stream, 0, n);
	struct tally t;
	tally_init(&t, n);
	assert_int_equal(cpat_token_create(&t.gate, NULL), 0);
	struct cpat_token *tok;
	assert_int_equal(cpat_token_create(&tok, NULL), 0);
	struct cons cons;
	memset(&cons, 0, sizeof cons);
	snprintf(cons.name, sizeof cons.name, "slow");
	src_opts(&cons.o, &f, stream, cons.name);
	cons.o.max_unacked = 8;
	cons.o.batch = 4;
	cons.workers = 16; /* more workers than the bound: the bound limits */
	cons.t = &t;
	cons.tok = tok;
	th_spawn(&cons.th, cons_main, &cons);
	tally_wait(&t, &t.started, 8);
	/* An observation window: nothing more may start while the gate is
	 * closed, and the broker holds no more than 8 for the consumer. */
	cpat_token_wait(tok, cpat_now_ns() + 300 * CPAT_MSEC);
	assert_int_equal(atomic_load(&t.started), 8);
	assert_int_equal(pending(c, stream, "g"), 8);
	cpat_token_cancel(t.gate);
	tally_wait(&t, &t.distinct, n);
	cpat_token_cancel(tok);
	th_join(cons.th);
	assert_true(atomic_load(&t.max_running) <= 8);
	assert_int_equal(pending(c, stream, "g"), 0);
	cpat_token_unref(t.gate);
	cpat_token_unref(tok);
	tally_fini(&t);
	redisFree(c);
	rfx_stop(&f);
}

/* ---- cancel -------------------------------------------------------------- */

TH_TEST_FN(redis_cancel_leaves_rest_pending_new_consumer_finishes)
{
	(void)state;
	struct rfx f;
	SKIP_WITHOUT_SERVER(&f);
	redisContext *c = rfx_connect(&f);
	const char *stream = "cancel";
	long n = SIZE(1000, 300);
	produce(c, stream, 0, n);
	struct tally t;
	tally_init(&t, n);
	struct cpat_token *tok1, *tok2;
	assert_int_equal(cpat_token_create(&tok1, NULL), 0);
	assert_int_equal(cpat_token_create(&tok2, NULL), 0);
	struct cons a, b;
	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	cons_start(&a, &f, stream, 0, &t, tok1);
	tally_wait(&t, &t.distinct, n / 4);
	cpat_token_cancel(tok1);
	th_join(a.th);
	assert_int_equal(a.rc, -ECANCELED);
	long done_a = atomic_load(&t.distinct);
	assert_true(done_a < n);
	/* What A did not finish is still the group's: pending, or never
	 * delivered. */
	long long pend = pending(c, stream, "g");
	fprintf(stderr, "# cancelled after %ld of %ld; %lld pending\n", done_a,
		n, pend);
	/* A new consumer claims A's pending entries and reads the rest. */
	snprintf(b.name, sizeof b.name, "c1");
	src_opts(&b.o, &f, stream, b.name);
	b.o.claim_idle_ns = 100 * CPAT_MSEC;
	b.t = &t;
	b.tok = tok2;
	th_spawn(&b.th, cons_main, &b);
	tally_wait(&t, &t.distinct, n);
	while (pending(c, stream, "g") != 0) {
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	cpat_token_cancel(tok2);
	th_join(b.th);
	for (long i = 0; i < n; i++)
		assert_int_equal(atomic_load(&t.count[i]), 1);
	cpat_token_unref(tok1);
	cpat_token_unref(tok2);
	tally_fini(&t);
	redisFree(c);
	rfx_stop(&f);
}

/* ---- sink -----------------------------------------------------------------
 */

TH_TEST_FN(redis_sink_writes_every_item_and_trims_approximately)
{
	(void)state;
	struct rfx f;
	SKIP_WITHOUT_SERVER(&f);
	redisContext *c = rfx_connect(&f);
	struct cpat_redis_sink_opts ko;
	cpat_redis_sink_opts_init(&ko);
	ko.url = f.url;
	ko.stream = "out";
	ko.item_size = sizeof(long);
	ko.encode = encode_n;
	struct cpat_redis_sink *k;
	assert_int_equal(cpat_redis_sink_create(&k, &ko), 0);
	long n = SIZE(1000, 300);
	long items[50];
	for (long i = 0; i < n; i += 50) {
		for (long j = 0; j < 50; j++)
			items[j] = i + j;
		assert_int_equal(cpat_redis_sink_write(k, items, 50), 0);
	}
	long one = n;
	assert_int_equal(cpat_redis_sink_fn(&one, k), 0);
	struct cpat_redis_sink_stats st;
	cpat_redis_sink_stats(k, &st);
	assert_int_equal(st.written, n + 1);
	assert_int_equal(st.round_trips, n / 50 + 1);
	cpat_redis_sink_destroy(k);
	assert_int_equal(rfx_int(c, "XLEN out"), n + 1);
	/* Read back through a source: each once, in order. */
	struct cpat_redis_source_opts o;
	src_opts(&o, &f, "out", "reader");
	struct cpat_redis_source *s = mksrc(&o);
	for (long i = 0; i <= n; i++) {
		long v;
		struct cpat_redis_id id;
		assert_int_equal(cpat_redis_source_next(s, &v, &id, NULL), 1);
		assert_int_equal(v, i);
		assert_int_equal(cpat_redis_source_ack(s, &id, 1), 1);
		assert_int_equal(cpat_redis_source_ack(s, &id, 1),
				 0); /* twice */
	}
	assert_int_equal(cpat_redis_source_flush(s, NULL), 0);
	struct cpat_redis_source_stats sst;
	cpat_redis_source_stats(s, &sst);
	assert_int_equal(sst.acked, n + 1);
	assert_true(sst.xack_calls <= sst.acked);
	assert_true(sst.in_flight_peak <= 32);
	cpat_redis_source_destroy(s);
	/* MAXLEN ~ 100: trimmed by whole nodes, so about 100, never below. */
	ko.stream = "trimmed";
	ko.maxlen = 100;
	assert_int_equal(cpat_redis_sink_create(&k, &ko), 0);
	for (long i = 0; i < n; i += 50)
		assert_int_equal(cpat_redis_sink_write(k, items, 50), 0);
	cpat_redis_sink_destroy(k);
	long long len = rfx_int(c, "XLEN trimmed");
	fprintf(stderr, "# %ld entries written with MAXLEN ~ 100: %lld kept\n",
		n, len);
	assert_true(len >= 100 && len < n);
	redisFree(c);
	rfx_stop(&f);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	if (rfx_skip_binary(RFX_INSTALL))
		return 0;
	static const struct CMUnitTest all[] = {
		TH_TEST(redis_bad_urls_einval_at_once),
		TH_TEST(redis_dead_server_errors_within_bounded_time),
		TH_TEST(redis_broker_errors_map_with_message),
		TH_TEST(redis_pool_every_entry_once_1_2_4_consumer_threads),
		TH_TEST(redis_pipeline_every_entry_once_1_2_4_consumer_threads),
		TH_TEST(redis_every_entry_once_1_2_4_consumer_processes),
		TH_TEST(redis_sigkilled_consumer_entries_claimed_by_others),
		TH_TEST(redis_server_restart_consumers_reconnect_nothing_acked_lost),
		TH_TEST(redis_source_reports_reconnect_after_restart),
		TH_TEST(redis_poison_entry_dead_lettered_after_n_deliveries),
		TH_TEST(redis_unacked_never_exceed_bound_under_slow_sink),
		TH_TEST(redis_cancel_leaves_rest_pending_new_consumer_finishes),
		TH_TEST(redis_sink_writes_every_item_and_trims_approximately),
	};
	th_seed();
	return th_run_selected("redis", all, sizeof all / sizeof all[0]);
}
