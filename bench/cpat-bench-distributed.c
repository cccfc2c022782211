/*
 * Scenario 6 for real: the Go guide's real-time system through a broker
 * and a database. Messages go into a Redis stream, consumer processes of
 * one consumer group (examples/realtime/: parse JSON -> compute -> batch
 * of 100 or 1 s -> one SQLite transaction per batch, acknowledged after
 * COMMIT) take them out. The bench starts its own redis-server on a unix
 * socket in a temporary directory (append-only, fsync every second:
 * Redis's default policy) and removes it at the end; the consumer and
 * producer processes are this program again (--processor ..., the
 * example's own code linked in), started with fork+exec.
 *
 * Measured in one run:
 *  (a) the broker's ceiling: XADD (pipelined, 128 per round trip) beside
 *      XREADGROUP COUNT 64 + XACK of each batch (the XACK pipelined with
 *      the next read), no processing, the same messages, best of three
 *      runs: the most this server moves through a consumer group;
 *  (b) end to end at the guide's 10,000 msg/s offered (open loop: the
 *      producer stamps each message with its scheduled send time, so a
 *      late send is charged; no coordinated omission): achieved rate and
 *      latency from the scheduled XADD to the COMMIT that holds it,
 *      p50/p99/p99.9 (histograms of every consumer, merged: 6% buckets);
 *  (c) the highest offered rate with p99 < 100 ms (doubling, then
 *      bisecting; bounded trials, a failed trial retried once);
 *  (d) scale-out: 1, 2 and 4 consumer processes draining the same backlog
 *      with --work-us of CPU time per message (CPU-bound), throughput and
 *      efficiency against one process, the bound being min(N, cores).
 *
 * Needs redis-server, hiredis, SQLite and cJSON; reports a skip naming the
 * packages otherwise.
 */
#define _GNU_SOURCE
#include "benchutil.h"

#include <cpattern.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_REALTIME
#include <sqlite3.h>

#include "fixture.h"
#include "rt.h"

static char self_exe[4096];
static struct rfx srv;
static struct bu_args *gargs;

/* ---- processes ---- */

/* Starts this program in processor mode with @p args (after --processor),
 * stdout and stderr to @p log (appended), tied to the bench (it is killed
 * if the bench dies). */
static pid_t spawn_proc(const char *const *args, const char *log)
{
	char *argv[64];
	int n = 0;
	argv[n++] = self_exe;
	argv[n++] = "--processor";
	for (; *args && n < 62; args++)
		argv[n++] = (char *)*args;
	argv[n] = NULL;
	int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
	int out = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	pid_t pid = in >= 0 && out >= 0
			    ? rfx_spawn_tied(self_exe, argv, in, out, out)
			    : -1;
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	return pid;
}

static int wait_exit(pid_t pid)
{
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The group's entries read and pending (XINFO GROUPS). */
static int group_state(redisContext *c, const char *stream, long long *read,
		       long long *pending)
{
	*read = *pending = -1;
	redisReply *r = redisCommand(c, "XINFO GROUPS %s", stream);
	if (!r)
		return -1;
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements;
	     i++) {
		redisReply *g = r->element[i];
		for (size_t k = 0; k + 1 < g->elements; k += 2) {
			const redisReply *v = g->element[k + 1];
			if (v->type != REDIS_REPLY_INTEGER)
				continue;
			if (!strcmp(g->element[k]->str, "entries-read"))
				*read = v->integer;
			else if (!strcmp(g->element[k]->str, "pending"))
				*pending = v->integer;
		}
	}
	freeReplyObject(r);
	return 0;
}

/* Rows and the latest saved_ns of a database. */
static void db_stats(const char *path, long *rows, int64_t *last)
{
	*rows = 0;
	*last = 0;
	sqlite3 *db;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) !=
	    SQLITE_OK) {
		sqlite3_close(db);
		return;
	}
	sqlite3_busy_timeout(db, 5000);
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db,
			       "SELECT count(*), max(saved_ns) FROM results",
			       -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW) {
			*rows = (long)sqlite3_column_int64(st, 0);
			*last = sqlite3_column_int64(st, 1);
		}
		sqlite3_finalize(st);
	}
	sqlite3_close(db);
}

/* Throughput of the steady part of a run: the rows committed between the
 * commits of the 10th and the 90th percentile row, over that time (from
 * saved_ns, the time of each batch's commit). Leaves out process start-up
 * and the end, where the last partial batches of each process wait for
 * their 1 s flush: an artifact of a backlog that ends, not of a stream. */
static double db_window_rate(const char *path)
{
	sqlite3 *db;
	double rate = 0;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) !=
	    SQLITE_OK) {
		sqlite3_close(db);
		return 0;
	}
	sqlite3_stmt *st;
	long n = 0, cap = 0;
	int64_t *v = NULL;
	if (sqlite3_prepare_v2(db,
			       "SELECT saved_ns FROM results ORDER BY saved_ns",
			       -1, &st, NULL) == SQLITE_OK) {
		while (sqlite3_step(st) == SQLITE_ROW) {
			if (n == cap) {
				cap = cap ? 2 * cap : 4096;
				int64_t *nv =
					realloc(v, (size_t)cap * sizeof *v);
				if (!nv)
					break;
				v = nv;
			}
			v[n++] = sqlite3_column_int64(st, 0);
		}
		sqlite3_finalize(st);
	}
	sqlite3_close(db);
	long i = n / 10, j = n - 1 - n / 10;
	if (n >= 10 && v[j] > v[i])
		rate = (double)(j - i) / ((double)(v[j] - v[i]) / 1e9);
	free(v);
	return rate;
}

/*
 * Runs @p k consumers on @p stream until the group has read @p n entries
 * and none is pending (or @p limit_ns passes), then stops them (SIGTERM:
 * they drain and exit 0) and merges their histograms into @p h.
 * Returns 0 when all were processed and every consumer exited 0.
 */
struct consumers {
	pid_t pid[8];
	char hist[8][256];
	int k;
};

static void start_consumers(struct consumers *cs, int k, const char *stream,
			    const char *db, long work_us, long workers,
			    long batch_ms, const char *tag)
{
	cs->k = k;
	char work[24], pw[24], bms[24];
	snprintf(work, sizeof work, "%ld", work_us);
	snprintf(pw, sizeof pw, "%ld", workers);
	snprintf(bms, sizeof bms, "%ld", batch_ms);
	for (int i = 0; i < k; i++) {
		char name[48], log[256];
		snprintf(name, sizeof name, "%s-c%d", tag, i);
		snprintf(cs->hist[i], sizeof cs->hist[i], "%s/%s.hist", srv.dir,
			 name);
		snprintf(log, sizeof log, "%s/%s.log", srv.dir, name);
		const char *args[] = {"--url",      srv.url,
				      "--stream",   stream,
				      "--group",    "g",
				      "--consumer", name,
				      "--db",       db,
				      "--quiet",    "--hist-file",
				      cs->hist[i],  "--work-us",
				      work,         "--parse-workers",
				      pw,           "--claim-ms",
				      "60000",      "--batch-ms",
				      bms,          NULL};
		cs->pid[i] = spawn_proc(args, log);
	}
}

static int finish_consumers(struct consumers *cs, redisContext *c,
			    const char *stream, long n, int64_t limit_ns,
			    struct rt_hist *h)
{
	int ok = 1;
	for (;;) {
		long long read, pend;
		if (group_state(c, stream, &read, &pend) != 0) {
			ok = 0;
			break;
		}
		if (read >= n && pend == 0)
			break;
		if (cpat_now_ns() > limit_ns) {
			fprintf(stderr,
				"distributed: %s: %lld of %ld read, %lld "
				"pending at the time limit\n",
				stream, read, n, pend);
			ok = 0;
			break;
		}
		bu_sleep_ns(5 * CPAT_MSEC);
	}
	for (int i = 0; i < cs->k; i++)
		if (cs->pid[i] > 0)
			kill(cs->pid[i], SIGTERM);
	memset(h, 0, sizeof *h);
	for (int i = 0; i < cs->k; i++) {
		int rc = cs->pid[i] > 0 ? wait_exit(cs->pid[i]) : -1;
		if (rc != 0) {
			fprintf(stderr,
				"distributed: consumer %d exited %d (log "
				"in %s)\n",
				i, rc, srv.dir);
			ok = 0;
		}
		FILE *f = fopen(cs->hist[i], "r");
		if (!f || rt_hist_read_add(h, f) != 0)
			ok = 0;
		if (f)
			fclose(f);
	}
	return ok ? 0 : -1;
}

/* ---- (a) the broker's ceiling ---- */

/* The shapes of the system's own commands: its producer pipelines up to 128
 * XADDs per round trip, its consumers read COUNT 64 and acknowledge each
 * read's entries with one XACK. */
enum { CEIL_XADD_GROUP = 128, CEIL_RUNS = 3 };

struct ceil_ctx {
	long n;
	int64_t t_end;
	int err;
};

static void *ceil_producer(void *arg)
{
	struct ceil_ctx *cx = arg;
	redisContext *c = rfx_connect(&srv);
	if (!c) {
		cx->err = 1;
		return NULL;
	}
	char json[256];
	for (long i = 0; i < cx->n; i += CEIL_XADD_GROUP) {
		long m = cx->n - i < CEIL_XADD_GROUP ? cx->n - i
						     : CEIL_XADD_GROUP;
		for (long j = 0; j < m; j++) {
			int len = rt_msg_format(json, sizeof json, i + j, 0);
			redisAppendCommand(c, "XADD ceil * json %b t 0", json,
					   (size_t)len);
		}
		for (long j = 0; j < m; j++) {
			redisReply *r;
			if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
				cx->err = 1;
				redisFree(c);
				return NULL;
			}
			freeReplyObject(r);
		}
	}
	redisFree(c);
	return NULL;
}

/* The consumer's best raw shape: each round trip carries the XACK of the
 * entries read last time and the next XREADGROUP, pipelined. */
static void *ceil_consumer(void *arg)
{
	struct ceil_ctx *cx = arg;
	redisContext *c = rfx_connect(&srv);
	if (!c) {
		cx->err = 1;
		return NULL;
	}
	long acked = 0, read = 0;
	size_t m = 0; /* entries read and not yet acknowledged */
	char ids[64][CPAT_REDIS_ID_MAX];
	const char *av[3 + 64];
	size_t al[3 + 64];
	while (acked < cx->n && !cx->err) {
		if (m > 0) {
			av[0] = "XACK", av[1] = "ceil", av[2] = "g";
			for (int i = 0; i < 3; i++)
				al[i] = strlen(av[i]);
			for (size_t i = 0; i < m; i++)
				av[3 + i] = ids[i], al[3 + i] = strlen(ids[i]);
			redisAppendCommandArgv(c, (int)(3 + m), av, al);
		}
		int reading = read < cx->n;
		if (reading)
			redisAppendCommand(c, "XREADGROUP GROUP g c COUNT 64 "
					      "BLOCK 1000 STREAMS ceil >");
		redisReply *r;
		if (m > 0) {
			if (redisGetReply(c, (void **)&r) != REDIS_OK || !r ||
			    r->type != REDIS_REPLY_INTEGER) {
				cx->err = 1;
				if (r)
					freeReplyObject(r);
				break;
			}
			acked += r->integer;
			freeReplyObject(r);
			m = 0;
		}
		if (!reading)
			continue;
		if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
			cx->err = 1;
			break;
		}
		if (r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
			redisReply *es = r->element[0]->element[1];
			for (size_t i = 0; i < es->elements && m < 64; i++)
				snprintf(ids[m++], CPAT_REDIS_ID_MAX, "%s",
					 es->element[i]->element[0]->str);
		}
		read += (long)m;
		freeReplyObject(r);
	}
	cx->t_end = cpat_now_ns();
	redisFree(c);
	return NULL;
}

static double ceiling_run(long n)
{
	redisContext *c = rfx_connect(&srv);
	redisReply *r =
		c ? redisCommand(c, "XGROUP CREATE ceil g 0 MKSTREAM") : NULL;
	if (r)
		freeReplyObject(r);
	struct ceil_ctx cx = {n, 0, 0};
	pthread_t tp, tc;
	int64_t t0 = cpat_now_ns();
	pthread_create(&tc, NULL, ceil_consumer, &cx);
	pthread_create(&tp, NULL, ceil_producer, &cx);
	pthread_join(tp, NULL);
	pthread_join(tc, NULL);
	if ((r = c ? redisCommand(c, "DEL ceil") : NULL))
		freeReplyObject(r);
	if (c)
		redisFree(c);
	return cx.err ? 0 : (double)n / ((double)(cx.t_end - t0) / 1e9);
}

/* A ceiling is a maximum, so the best of CEIL_RUNS runs is kept (one run
 * of 50,000 messages lasts half a second, and a moment's disturbance
 * lowers it); every run is printed. */
static double broker_ceiling(long n, struct bu_json *j)
{
	double best = 0;
	bu_json_arr(j, "runs");
	for (int i = 0; i < CEIL_RUNS; i++) {
		double r = ceiling_run(n);
		printf("broker ceiling run %d: %.0f msg/s\n", i + 1, r);
		bu_json_num(j, NULL, r);
		if (r > best)
			best = r;
	}
	bu_json_end(j);
	return best;
}

/* ---- (b), (c) end to end under an offered load ---- */

static int trial_no;

/* A trial's message count: at least @p n, with the well-formed ones (all
 * but 1 in 1000) whole batches of 100, so that the end of the trial leaves
 * no partial batch waiting for its 1 s flush (a finite trial's artifact:
 * a stream that goes on fills that batch by count). */
static long whole_batches(long n)
{
	while ((n - n / 1000) % 100 != 0)
		n++;
	return n;
}

static void e2e_trial(double rate, long n, struct bu_load *t)
{
	n = whole_batches(n);
	memset(t, 0, sizeof *t);
	t->rate = rate;
	t->messages = n;
	char tag[32], stream[48], db[256], log[256], rs[32], cnt[24], at[32];
	snprintf(tag, sizeof tag, "t%d", trial_no++);
	snprintf(stream, sizeof stream, "e2e-%s", tag);
	snprintf(db, sizeof db, "%s/%s.db", srv.dir, tag);
	snprintf(log, sizeof log, "%s/%s-producer.log", srv.dir, tag);
	snprintf(rs, sizeof rs, "%.0f", rate);
	snprintf(cnt, sizeof cnt, "%ld", n);
	redisContext *c = rfx_connect(&srv);
	if (!c)
		return;
	struct consumers cs;
	start_consumers(&cs, 1, stream, db, 0, 2, 1000, tag);
	/* Sends begin 300 ms from now: the consumer has connected by then. */
	int64_t start = rt_wall_ns() + 300 * CPAT_MSEC;
	snprintf(at, sizeof at, "%lld", (long long)start);
	const char *args[] = {"--produce", "--url",
			      srv.url,     "--stream",
			      stream,      "--rate",
			      rs,          "--count",
			      cnt,         "--malformed-every",
			      "1000",      "--start-at",
			      at,          "--quiet",
			      NULL};
	pid_t prod = spawn_proc(args, log);
	int prc = prod > 0 ? wait_exit(prod) : -1;
	/* An overloaded trial takes longer to drain: bounded at 4x. */
	int64_t limit = cpat_now_ns() + (int64_t)(3e9 * (double)n / rate) +
			10 * CPAT_SEC;
	struct rt_hist h;
	int crc = finish_consumers(&cs, c, stream, n, limit, &h);
	int64_t last;
	long rows;
	db_stats(db, &rows, &last);
	double secs = (double)(last - start) / 1e9;
	t->achieved = secs > 0 ? (double)n / secs : 0;
	t->p50 = rt_hist_pct(&h, 50);
	t->p99 = rt_hist_pct(&h, 99);
	t->p999 = rt_hist_pct(&h, 99.9);
	t->ok = prc == 0 && crc == 0 && rows == n - n / 1000;
	redisReply *r = redisCommand(c, "DEL %s %s:dead", stream, stream);
	if (r)
		freeReplyObject(r);
	redisFree(c);
}

static void print_trial(const char *what, const struct bu_load *t, int pass)
{
	char a[32], b[32], c[32];
	printf("%-8s offered %8.0f msg/s  achieved %8.0f msg/s  XADD->commit "
	       "p50 %9s  p99 %9s  p99.9 %9s  %s\n",
	       what, t->rate, t->achieved, bu_fmt_ns(a, t->p50),
	       bu_fmt_ns(b, t->p99), bu_fmt_ns(c, t->p999),
	       pass     ? "pass"
	       : !t->ok ? "FAIL (not all processed)"
			: "FAIL (p99 >= 100 ms or behind)");
	fflush(stdout);
}

/* ---- (d) scale-out on a backlog ---- */

static double scale_run(int k, long n, long work_us, int *ok)
{
	char tag[32], stream[48], db[256];
	snprintf(tag, sizeof tag, "s%d-%d", k, trial_no++);
	snprintf(stream, sizeof stream, "scale-%s", tag);
	snprintf(db, sizeof db, "%s/%s.db", srv.dir, tag);
	redisContext *c = rfx_connect(&srv);
	if (!c) {
		*ok = 0;
		return 0;
	}
	char json[256];
	for (long i = 0; i < n; i++) {
		int len = rt_msg_format(json, sizeof json, i, 0);
		redisAppendCommand(c, "XADD %s * json %b t 0", stream, json,
				   (size_t)len);
	}
	for (long i = 0; i < n; i++) {
		redisReply *r;
		if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
			*ok = 0;
			redisFree(c);
			return 0;
		}
		freeReplyObject(r);
	}
	int64_t t0 = rt_wall_ns();
	struct consumers cs;
	/* One parse and one compute worker per process: a process is about
	 * one core of computation, so N processes can use N cores. A partial
	 * batch is committed after 20 ms, not the guide's 1 s: a finite
	 * backlog split between N processes leaves each a partial last batch
	 * (375 of 1,500 each is 3 batches and 75), and with 1 s those rows
	 * would wait idle for the timer, an artifact of the backlog's end that
	 * the rate window below would count as slowness (it made the 4-process
	 * row swing between 0.8x and 2.1x from one run to the next). */
	start_consumers(&cs, k, stream, db, work_us, 1, 20, tag);
	struct rt_hist h;
	int rc = finish_consumers(&cs, c, stream, n,
				  cpat_now_ns() + 120 * CPAT_SEC, &h);
	long rows;
	int64_t last;
	db_stats(db, &rows, &last);
	*ok = rc == 0 && rows == n;
	redisReply *r = redisCommand(c, "DEL %s", stream);
	if (r)
		freeReplyObject(r);
	redisFree(c);
	(void)t0;
	return db_window_rate(db);
}
#endif /* HAVE_REALTIME */

int main(int argc, char **argv)
{
#ifdef HAVE_REALTIME
	if (argc > 1 && strcmp(argv[1], "--processor") == 0)
		return rt_main(argc - 1, argv + 1);
#endif
	struct bu_args a;
	double rate = 10000, trial_ms = 0, max_rate = 400000;
	long max_trials = -1, work_us = 1000, scale_n = 0, ceil_n = 0;
	const struct bu_opt opts[] = {
		{"rate", BU_DOUBLE, &rate,
		 "the guide's offered load (10000 msg/s)"},
		{"trial-ms", BU_DOUBLE, &trial_ms,
		 "length of each end-to-end trial (full 5000, quick 1500)"},
		{"max-rate", BU_DOUBLE, &max_rate, "search no higher (400000)"},
		{"max-trials", BU_LONG, &max_trials,
		 "search trials at most (full 12, quick 6)"},
		{"work-us", BU_LONG, &work_us,
		 "CPU time per message in the scale-out runs (1000)"},
		{"scale-messages", BU_LONG, &scale_n,
		 "backlog of the scale-out runs (full 6000, quick 1500)"},
		{"ceiling-messages", BU_LONG, &ceil_n,
		 "messages of the broker ceiling run (full 300000, quick "
		 "50000)"},
	};
	bu_parse(argc, argv, &a,
		 "the Go guide's real-time system through Redis Streams and "
		 "SQLite: broker ceiling, "
		 "end to end at 10,000 msg/s, highest rate, scale-out",
		 opts, sizeof opts / sizeof opts[0]);
#ifndef HAVE_REALTIME
	return bu_report_skip(
		&a, "distributed",
		"needs hiredis, SQLite and cJSON: apt-get install "
		"redis-server libhiredis-dev libsqlite3-dev "
		"libcjson-dev, and rebuild");
#else
	gargs = &a;
	if (bu_force_skip("distributed") || bu_force_skip("redis"))
		return bu_report_skip(&a, "distributed",
				      "forced by CPAT_BENCH_FORCE_SKIP (needs "
				      "redis-server)");
	char server[512];
	if (rfx_find_server(server, sizeof server) != 0)
		return bu_report_skip(&a, "distributed",
				      "redis-server not found: apt-get install "
				      "redis-server");
	ssize_t sl = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
	if (sl <= 0) {
		perror("readlink /proc/self/exe");
		return 1;
	}
	self_exe[sl] = '\0';
	signal(SIGPIPE, SIG_IGN);
	int tiny = a.mode == BU_TINY, quick = a.mode == BU_QUICK;
	if (trial_ms <= 0)
		trial_ms = tiny ? 400 : quick ? 1500 : 5000;
	if (max_trials < 0)
		max_trials = tiny ? 0 : quick ? 6 : 12;
	if (scale_n <= 0)
		scale_n = tiny ? 200 : quick ? 1500 : 6000;
	if (ceil_n <= 0)
		ceil_n = tiny ? 5000 : quick ? 50000 : 300000;
	if (tiny)
		work_us = work_us > 200 ? 200 : work_us;
	int ncpu = bu_ncpu();
	if (rfx_start_fsync(&srv, "everysec") != 0)
		return bu_report_skip(&a, "distributed",
				      "redis-server not found: apt-get install "
				      "redis-server");

	struct bu_report rep;
	bu_report_begin(&rep, &a, "distributed",
			"the Go guide's real-time system through Redis Streams "
			"and SQLite, target "
			"10,000 msg/s with p99 < 100 ms");
	printf("broker: redis-server on a unix socket, appendfsync everysec; "
	       "consumers: this program as processes (parse 2 workers, "
	       "compute 1, batch 100 or 1 s, SQLite WAL synchronous=FULL)\n");

	/* (a) */
	bu_json_obj(rep.json, "ceiling");
	double ceiling = broker_ceiling(ceil_n, rep.json);
	printf("broker ceiling: %.0f msg/s (best of %d runs of %ld messages: "
	       "XADD pipelined %d at a time beside XREADGROUP COUNT 64 + "
	       "XACK pipelined with the next read, no processing)\n",
	       ceiling, CEIL_RUNS, ceil_n, CEIL_XADD_GROUP);
	bu_json_num(rep.json, "rate", ceiling);
	bu_json_int(rep.json, "messages", ceil_n);
	bu_json_end(rep.json);

	/* (b) */
	long n10k = (long)(rate * trial_ms / 1e3);
	struct bu_load t10;
	e2e_trial(rate, n10k, &t10);
	int pass10 = bu_load_passes(&t10);
	print_trial("guide", &t10, pass10);
	bu_json_arr(rep.json, "trials");
	bu_load_json(rep.json, &t10, pass10);
	if (!pass10) {
		struct bu_load again;
		e2e_trial(rate, n10k, &again);
		int pa = bu_load_passes(&again);
		print_trial("retry", &again, pa);
		bu_load_json(rep.json, &again, pa);
		if (pa || again.p99 < t10.p99) {
			t10 = again;
			pass10 = pa;
		}
	}
	bu_check(&rep, "every_message_once", t10.ok);

	/* (c) */
	double lo = pass10 ? rate : 0, hi = pass10 ? 0 : rate;
	struct bu_load best = t10;
	for (long trials = 0; trials < max_trials; trials++) {
		double r = bu_load_next(lo, hi, max_rate, 100);
		if (r == 0)
			break;
		struct bu_load t;
		e2e_trial(r, (long)(r * trial_ms / 1e3), &t);
		int ps = bu_load_passes(&t);
		print_trial("search", &t, ps);
		bu_load_json(rep.json, &t, ps);
		if (!ps) {
			e2e_trial(r, (long)(r * trial_ms / 1e3), &t);
			ps = bu_load_passes(&t);
			print_trial("retry", &t, ps);
			bu_load_json(rep.json, &t, ps);
		}
		if (ps) {
			lo = r;
			best = t;
		} else {
			hi = r;
		}
	}
	bu_json_end(rep.json);
	if (lo > 0)
		printf("highest rate with p99 < 100 ms: %.0f msg/s (p99 %.1f "
		       "ms) "
		       "= %.0f%% of the broker ceiling%s\n",
		       lo, best.p99 / 1e6, 100 * lo / ceiling,
		       hi == 0 ? " (search stopped before a failing rate)"
			       : "");
	else
		printf("no tried rate kept p99 < 100 ms\n");

	/* (d) */
	static const int ks[] = {1, 2, 4};
	double r1 = 0, rk[3] = {0};
	int scale_ok = 1;
	char cells[3][6][48];
	bu_json_arr(rep.json, "scale");
	for (int i = 0; i < 3; i++) {
		int ok;
		rk[i] = scale_run(ks[i], scale_n, work_us, &ok);
		scale_ok &= ok;
		if (i == 0)
			r1 = rk[0];
		double sp = r1 > 0 ? rk[i] / r1 : NAN;
		double ideal = ks[i] < ncpu ? ks[i] : ncpu;
		snprintf(cells[i][0], 48, "%d", ks[i]);
		snprintf(cells[i][1], 48, "%.0f msg/s", rk[i]);
		snprintf(cells[i][2], 48, "%.2fx", sp);
		snprintf(cells[i][3], 48, "%.0fx", ideal);
		snprintf(cells[i][4], 48, "%.2f", sp / ideal);
		snprintf(cells[i][5], 48, "%s", ok ? "all once" : "FAILED");
		bu_json_obj(rep.json, NULL);
		bu_json_int(rep.json, "processes", ks[i]);
		bu_json_num(rep.json, "rate", rk[i]);
		bu_json_num(rep.json, "speedup", sp);
		bu_json_num(rep.json, "ideal", ideal);
		bu_json_end(rep.json);
	}
	bu_json_end(rep.json);
	static const char *const hdr[] = {"processes",  "throughput",
					  "speedup",    "bound",
					  "efficiency", "messages"};
	char title[160];
	snprintf(title, sizeof title,
		 "scale-out: %ld messages backlog, %ld us CPU per message, "
		 "bound = min(processes, %d cores)",
		 scale_n, work_us, ncpu);
	bu_table(title, 6, hdr, (char(*)[48])cells, 3);
	bu_check(&rep, "scale_every_message_once", scale_ok);

	bu_verdict(&rep,
		   "distributed: %.0f msg/s offered through Redis and SQLite: "
		   "achieved %.0f, p99 %.1f ms; highest rate with p99 < 100 ms "
		   "%.0f msg/s = %.0f%% of the broker ceiling %.0f msg/s; 2 "
		   "processes %.2fx one on %ld us CPU-bound work (bound %dx)",
		   rate, t10.achieved, t10.p99 / 1e6, lo, 100 * lo / ceiling,
		   ceiling, r1 > 0 ? rk[1] / r1 : 0, work_us,
		   ncpu < 2 ? ncpu : 2);
	bu_json_num(rep.json, "max_rate_p99_100ms", lo);
	bu_json_num(rep.json, "work_us", (double)work_us);
	bu_json_obj(rep.json, "at_guide_rate");
	bu_json_num(rep.json, "offered", t10.rate);
	bu_json_num(rep.json, "achieved", t10.achieved);
	bu_json_num(rep.json, "latency_p50_ns", t10.p50);
	bu_json_num(rep.json, "latency_p99_ns", t10.p99);
	bu_json_num(rep.json, "latency_p999_ns", t10.p999);
	bu_json_end(rep.json);

	char note[128], b1[32], b2[32];
	snprintf(note, sizeof note, "achieved %.0f msg/s, p50 %s p99.9 %s",
		 t10.achieved, bu_fmt_ns(b1, t10.p50), bu_fmt_ns(b2, t10.p999));
	bu_summary(&rep, "distributed @10k msg/s: p99", "< 100 ms", NAN,
		   t10.p99 / 1e6, "ms", NAN, NAN, note);
	snprintf(note, sizeof note,
		 "seq = broker ceiling; conc = max rate, "
		 "p99 < 100 ms%s",
		 hi == 0 ? " (search capped)" : "");
	bu_summary(&rep, "distributed max rate vs broker", ">= 50%", ceiling,
		   lo, "msg/s", lo / ceiling, NAN, note);
	for (int i = 1; i < 3; i++) {
		char name[64];
		snprintf(name, sizeof name, "distributed %d procs (cpu-bound)",
			 ks[i]);
		snprintf(note, sizeof note, "%ld us/msg, backlog of %ld",
			 work_us, scale_n);
		bu_summary(&rep, name, i == 1 ? ">= 1.8x" : "", r1, rk[i],
			   "msg/s", r1 > 0 ? rk[i] / r1 : NAN,
			   (double)(ks[i] < ncpu ? ks[i] : ncpu), note);
	}
	rfx_stop(&srv);
	return bu_report_end(&rep);
#endif
}
