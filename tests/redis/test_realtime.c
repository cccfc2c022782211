/*
 * Crash and fault tests of the real-time processor (examples/realtime/):
 * the program itself, run as separate processes against a real
 * redis-server (fixture.h: a private one per test on a unix socket in a
 * temporary directory) and a SQLite file in that directory.
 *
 * Messages carry their index as the JSON "id"; every K-th is malformed.
 * The test keeps each entry's ID, so that at the end it can say of every
 * row of the database and every entry of the dead-letter stream which
 * message it is: the database must hold each well-formed message exactly
 * once (and under its own entry ID), the dead-letter stream each malformed
 * one, and nothing else either.
 *
 * The processes are the only actors: the test waits for them by polling
 * the server and the database (there is nothing else to wait on), and the
 * harness watchdog bounds every wait.
 */
#include "harness.h"

#include "cpattern/redis.h"
#include "fixture.h"
#include "rt.h"

#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>

#define SKIP_WITHOUT_SERVER(f)           \
	do {                             \
		if (rfx_start(f) != 0) { \
			skip();          \
			return;          \
		}                        \
	} while (0)

static void pause_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

/* The group's pending count and entries read (XINFO GROUPS), -1 if none. */
static void group_info(redisContext *c, const char *stream, long long *pending,
		       long long *read)
{
	*pending = *read = -1;
	redisReply *r = redisCommand(c, "XINFO GROUPS %s", stream);
	if (!r)
		abort();
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements;
	     i++) {
		redisReply *g = r->element[i];
		for (size_t k = 0; k + 1 < g->elements; k += 2) {
			const char *key = g->element[k]->str;
			const redisReply *v = g->element[k + 1];
			if (v->type != REDIS_REPLY_INTEGER)
				continue;
			if (strcmp(key, "pending") == 0)
				*pending = v->integer;
			else if (strcmp(key, "entries-read") == 0)
				*read = v->integer;
		}
	}
	freeReplyObject(r);
}

/* ---- messages ------------------------------------------------------------ */

struct msgs {
	long n, every;                 /* every K-th malformed */
	char (*id)[CPAT_REDIS_ID_MAX]; /* entry ID of message i */
};

static int is_bad(const struct msgs *m, long i)
{
	return m->every > 0 && (i + 1) % m->every == 0;
}

static long n_bad(const struct msgs *m)
{
	return m->every > 0 ? m->n / m->every : 0;
}

/* XADDs messages first..first+count-1 (json, t), pipelined; keeps IDs. */
static void produce(redisContext *c, const char *stream, struct msgs *m,
		    long first, long count)
{
	for (long i = first; i < first + count; i++) {
		char json[256];
		int len = rt_msg_format(json, sizeof json, i, is_bad(m, i));
		assert_true(len > 0);
		char t[24];
		snprintf(t, sizeof t, "%lld", (long long)rt_wall_ns());
		redisAppendCommand(c, "XADD %s * json %b t %s", stream, json,
				   (size_t)len, t);
	}
	for (long i = first; i < first + count; i++) {
		redisReply *r;
		if (redisGetReply(c, (void **)&r) != REDIS_OK || !r ||
		    r->type != REDIS_REPLY_STRING)
			abort();
		snprintf(m->id[i], CPAT_REDIS_ID_MAX, "%s", r->str);
		freeReplyObject(r);
	}
}

static void msgs_init(struct msgs *m, long n, long every)
{
	m->n = n;
	m->every = every;
	m->id = calloc((size_t)n, sizeof *m->id);
	assert_non_null(m->id);
}

static long index_of(const struct msgs *m, const char *id)
{
	for (long i = 0; i < m->n; i++)
		if (strcmp(m->id[i], id) == 0)
			return i;
	return -1;
}

/* ---- the database, read beside the processes ------------------------------
 */

static sqlite3 *db_open(const char *path)
{
	sqlite3 *db;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
		abort();
	sqlite3_busy_timeout(db, 5000);
	return db;
}

/* Rows in the database; 0 while the processes have not made it yet. */
static long db_count(const char *path)
{
	if (access(path, F_OK) != 0)
		return 0;
	sqlite3 *db = db_open(path);
	sqlite3_stmt *st;
	long n = 0;
	if (sqlite3_prepare_v2(db, "SELECT count(*) FROM results", -1, &st,
			       NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			n = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	sqlite3_close(db);
	return n;
}

/* The database holds each well-formed message once, under its own entry
 * ID, and nothing else. */
static void check_db_exactly_once(const char *path, const struct msgs *m)
{
	sqlite3 *db = db_open(path);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db,
					    "SELECT id, order_id FROM results",
					    -1, &st, NULL),
			 SQLITE_OK);
	char *seen = calloc((size_t)m->n, 1);
	long rows = 0;
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(st, 0);
		long order = (long)sqlite3_column_int64(st, 1);
		long i = index_of(m, id);
		assert_true(i >= 0);          /* one of ours */
		assert_int_equal(order, i);   /* under its own ID */
		assert_false(is_bad(m, i));   /* not a malformed one */
		assert_int_equal(seen[i], 0); /* once (the key says so too) */
		seen[i] = 1;
		rows++;
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	assert_int_equal(rows, m->n - n_bad(m));
	free(seen);
}

/* The dead-letter stream holds each malformed message (with its parse
 * error) and nothing else; a consumer killed between its dead-letter write
 * and its acknowledgement can leave one twice (at-least-once): counted. */
static long check_dead_letters(redisContext *c, const char *stream,
			       const struct msgs *m)
{
	redisReply *r = redisCommand(c, "XRANGE %s:dead - +", stream);
	assert_non_null(r);
	char *seen = calloc((size_t)m->n, 1);
	long distinct = 0, dups = 0;
	for (size_t e = 0; e < r->elements; e++) {
		redisReply *f = r->element[e]->element[1];
		const char *src = NULL, *err = NULL;
		for (size_t k = 0; k + 1 < f->elements; k += 2) {
			if (strcmp(f->element[k]->str, "source-id") == 0)
				src = f->element[k + 1]->str;
			if (strcmp(f->element[k]->str, "error") == 0)
				err = f->element[k + 1]->str;
		}
		assert_non_null(src);
		assert_non_null(err);
		long i = index_of(m, src);
		assert_true(i >= 0);
		assert_true(is_bad(m, i));
		if (seen[i])
			dups++;
		else
			distinct++;
		seen[i] = 1;
	}
	freeReplyObject(r);
	free(seen);
	assert_int_equal(distinct, n_bad(m));
	return dups;
}

/* ---- processes ------------------------------------------------------------
 */

struct proc {
	pid_t pid;
	int err_fd; /* read end of its stderr, or -1 (then in log) */
	char log[200];
	char out[8192]; /* what was read of its stderr */
	size_t len;
};

/* Starts the processor with @p args (NULL-terminated, after the program),
 * its stderr into a file in the fixture's directory, or a pipe. */
static void proc_start(struct proc *p, const struct rfx *f, const char *name,
		       int use_pipe, const char *const *args)
{
	memset(p, 0, sizeof *p);
	p->err_fd = -1;
	snprintf(p->log, sizeof p->log, "%s/%s.log", f->dir, name);
	char *argv[48];
	int n = 0;
	argv[n++] = (char *)rfx_helper_path("CPAT_REALTIME_PROCESSOR",
					    "realtime_processor program");
	for (; *args && n < 46; args++)
		argv[n++] = (char *)*args;
	argv[n] = NULL;
	int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
	int out = open("/dev/null", O_WRONLY | O_CLOEXEC);
	int pfd[2] = {-1, -1};
	int err;
	if (use_pipe) {
		if (pipe2(pfd, O_CLOEXEC) != 0)
			abort();
		err = pfd[1];
	} else {
		err = open(p->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			   0600);
	}
	if (in < 0 || out < 0 || err < 0)
		abort();
	p->pid = rfx_spawn_tied(argv[0], argv, in, out, err);
	if (p->pid < 0)
		abort();
	close(in);
	close(out);
	if (!use_pipe)
		close(err);
	if (use_pipe) {
		close(pfd[1]);
		p->err_fd = pfd[0];
		fcntl(p->err_fd, F_SETFL, O_NONBLOCK);
	}
}

/* Reads what the process wrote to its stderr pipe so far. */
static void proc_drain(struct proc *p)
{
	while (p->err_fd >= 0 && p->len + 1 < sizeof p->out) {
		ssize_t k = read(p->err_fd, p->out + p->len,
				 sizeof p->out - 1 - p->len);
		if (k <= 0)
			break;
		p->len += (size_t)k;
		p->out[p->len] = '\0';
	}
}

/* Its stderr, all of it (after it exited). */
static const char *proc_output(struct proc *p)
{
	if (p->err_fd >= 0) {
		proc_drain(p);
		return p->out;
	}
	FILE *fl = fopen(p->log, "r");
	if (fl) {
		p->len = fread(p->out, 1, sizeof p->out - 1, fl);
		p->out[p->len] = '\0';
		fclose(fl);
	}
	return p->out;
}

/* Waits for it; its exit status (128 + signal if killed). */
static int proc_wait(struct proc *p)
{
	int st;
	pid_t w;
	do
		w = waitpid(p->pid, &st, 0);
	while (w < 0 && errno == EINTR);
	assert_int_equal(w, p->pid);
	proc_output(p);
	if (p->err_fd >= 0)
		close(p->err_fd);
	p->err_fd = -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void proc_stop_expect(struct proc *p, int code)
{
	kill(p->pid, SIGTERM);
	int rc = proc_wait(p);
	if (rc != code)
		fprintf(stderr,
			"processor exited %d, expected %d; its stderr:\n%s\n",
			rc, code, p->out);
	assert_int_equal(rc, code);
}

/* The consumer arguments shared by the tests. */
#define CONSUMER_ARGS(url, stream, name, db)                                  \
	"--url", url, "--stream", stream, "--group", "g", "--consumer", name, \
		"--db", db, "--quiet"

/* ---- SIGKILL rounds --------------------------------------------------------
 */

TH_TEST_FN(realtime_sigkill_rounds_every_message_once)
{
	(void)state;
	struct rfx f;
	SKIP_WITHOUT_SERVER(&f);
	redisContext *c = rfx_connect(&f);
	struct th_rng rng;
	th_rng_init(&rng, 17);
	long rounds = SIZE(20, 4), n = SIZE(300, 150), every = 10;
	long dead_dups = 0, redelivered = 0;
	for (long round = 0; round < rounds; round++) {
		char stream[32], db[160];
		snprintf(stream, sizeof stream, "kill%ld", round);
		snprintf(db, sizeof db, "%s/kill%ld.db", f.dir, round);
		struct msgs m;
		msgs_init(&m, n, every);
		produce(c, stream, &m, 0, n);
		struct proc ps[3];
		for (int i = 0; i < 3; i++) {
			char name[16];
			snprintf(name, sizeof name, "c%d", i);
			/* 1 ms of CPU per message, small batches, few in
			 * flight: the kill lands mid-stream, and what the
			 * victim held is claimed after 300 ms idle. */
			const char *args[] = {
				CONSUMER_ARGS(f.url, stream, name, db),
				"--work-us",
				"1000",
				"--batch",
				"10",
				"--batch-ms",
				"20",
				"--max-unacked",
				"32",
				"--read-batch",
				"8",
				"--claim-ms",
				"300",
				"--max-deliveries",
				"50",
				NULL};
			proc_start(&ps[i], &f, name, 0, args);
		}
		/* Kill one when a random share of the rows is in. */
		long at = (long)th_rng_below(&rng, (uint64_t)(n - n / every));
		int victim = (int)th_rng_below(&rng, 3);
		while (db_count(db) < at)
			pause_ms(2);
		kill(ps[victim].pid, SIGKILL);
		assert_int_equal(proc_wait(&ps[victim]), 128 + SIGKILL);
		/* Drained: every good message in, nothing pending. */
		for (;;) {
			long long pend, read;
			group_info(c, stream, &pend, &read);
			if (db_count(db) >= n - n_bad(&m) && pend == 0 &&
			    read >= n)
				break;
			pause_ms(10);
		}
		for (int i = 0; i < 3; i++)
			if (i != victim)
				proc_stop_expect(&ps[i], 0);
		check_db_exactly_once(db, &m);
		dead_dups += check_dead_letters(c, stream, &m);
		redelivered += rfx_int(c, "XLEN %s", stream) - n; /* 0 */
		free(m.id);
	}
	fprintf(stderr,
		"# %ld SIGKILL rounds, 3 processes, %ld messages (1 in %ld "
		"malformed): database exactly once each round; %ld duplicate "
		"dead letters\n",
		rounds, n, every, dead_dups);
	assert_int_equal(redelivered, 0);
	redisFree(c);
	rfx_stop(&f);
}

/* ---- a failing disk
 * ---------------------------------------------------------- */

/*
 * The fault: the processor's file-size limit (RLIMIT_FSIZE) lowered to 0
 * from outside with prlimit(), so every write SQLite makes to its files
 * fails with EFBIG, as on a full disk. A real failure of write(2) that
 * root does not bypass (root ignores a read-only directory's mode bits,
 * and mounting a tiny tmpfs needs privileges a test should not need);
 * clearing it is raising the limit again. The processor ignores SIGXFSZ,
 * so the write fails instead of killing it.
 */
static void set_fsize(pid_t pid, rlim_t soft)
{
	struct rlimit rl = {soft, RLIM_INFINITY};
	if (prlimit(pid, RLIMIT_FSIZE, &rl, NULL) != 0) {
		perror("prlimit");
		abort();
	}
}

TH_TEST_FN(realtime_disk_write_fault_nothing_acked_then_written)
{
	(void)state;
	struct rfx f;
	SKIP_WITHOUT_SERVER(&f);
	redisContext *c = rfx_connect(&f);
	const char *stream = "fault";
	char db[160];
	snprintf(db, sizeof db, "%s/fault.db", f.dir);
	long n1 = 100, n2 = SIZE(200, 100);
	struct msgs m;
	msgs_init(&m, n1 + n2, 0);
	struct proc p;
	const char *args[] = {CONSUMER_ARGS(f.url, stream, "solo", db),
			      "--batch",
			      "20",
			      "--batch-ms",
			      "20",
			      "--db-retry-ms",
			      "600000",
			      NULL};
	proc_start(&p, &f, "solo", 1, args);
	produce(c, stream, &m, 0, n1);
	while (db_count(db) < n1) {
		proc_drain(&p);
		pause_ms(5);
	}
	set_fsize(p.pid, 0);
	produce(c, stream, &m, n1, n2);
	/* The failure is reported... */
	while (!strstr(p.out, "failed")) {
		proc_drain(&p);
		pause_ms(5);
	}
	/* ...and while it lasts, nothing is acknowledged that is not in the
	 * database: every message read since is pending. Wait until all
	 * are read, and look twice, a retry apart. */
	for (int look = 0; look < 2; look++) {
		long long pend, read;
		do {
			proc_drain(&p);
			pause_ms(20);
			group_info(c, stream, &pend, &read);
		} while (read < n1 + n2);
		assert_int_equal(db_count(db), n1);
		assert_int_equal(pend, n2);
		pause_ms(100);
	}
	fprintf(stderr, "# during the fault: %ld rows stored, %ld pending\n",
		n1, n2);
	set_fsize(p.pid, RLIM_INFINITY);
	for (;;) {
		long long pend, read;
		group_info(c, stream, &pend, &read);
		if (db_count(db) == n1 + n2 && pend == 0)
			break;
		proc_drain(&p);
		pause_ms(10);
	}
	proc_stop_expect(&p, 0);
	assert_non_null(strstr(p.out, "commit succeeded after"));
	const char *line = strstr(p.out, "commit of");
	assert_non_null(line);
	fprintf(stderr, "# reported: %.*s\n", (int)strcspn(line, "\n"), line);
	check_db_exactly_once(db, &m);
	free(m.id);
	redisFree(c);
	rfx_stop(&f);
}

/* ---- shutdown
 * ------------------------------------------------------------------ */

/* SIGTERM with batches in flight (one full batch committing, the next
 * filling): the processor stops reading, commits and acknowledges what
 * its pipeline had taken, then exits 0 within the deadline saying
 * "drained". Entries its source had fetched but not yet handed to the
 * pipeline stay pending for the group (another member takes them after
 * --claim-ms): never acknowledged without their commit. */
TH_TEST_FN(realtime_sigterm_commits_and_acks_batch_in_flight)
{
	(void)state;
	struct rfx f;
	SKIP_WITHOUT_SERVER(&f);
	redisContext *c = rfx_connect(&f);
	const char *stream = "term";
	char db[160];
	snprintf(db, sizeof db, "%s/term.db", f.dir);
	long n = 1000;
	long grace_ms = SANITIZED ? 20000 : 10000;
	char grace[24];
	snprintf(grace, sizeof grace, "%ld", grace_ms);
	struct msgs m;
	msgs_init(&m, n, 0);
	produce(c, stream, &m, 0, n);
	struct proc p;
	/* Batches of 50, committed by count only (or at the end); 1 ms of
	 * CPU per message: 1000 messages are about 1 s of work, and the
	 * signal comes after the first batch, with up to 200 in flight. */
	const char *args[] = {CONSUMER_ARGS(f.url, stream, "t", db),
			      "--batch",
			      "50",
			      "--batch-ms",
			      "600000",
			      "--work-us",
			      "1000",
			      "--max-unacked",
			      "200",
			      "--grace-ms",
			      grace,
			      NULL};
	proc_start(&p, &f, "term", 0, args);
	long before;
	while ((before = db_count(db)) < 50)
		pause_ms(2);
	int64_t t0 = cpat_now_ns();
	kill(p.pid, SIGTERM);
	int rc = proc_wait(&p);
	double ms = (double)(cpat_now_ns() - t0) / 1e6;
	if (rc != 0)
		fprintf(stderr, "stderr:\n%s\n", p.out);
	assert_int_equal(rc, 0);
	assert_non_null(strstr(p.out, "drained"));
	assert_true(ms < (double)grace_ms);
	long long pend, read;
	group_info(c, stream, &pend, &read);
	long rows = db_count(db);
	fprintf(stderr,
		"# SIGTERM at %ld rows: exit 0 in %.0f ms, %ld rows committed "
		"and acknowledged, %lld fetched but not started left "
		"pending, %lld read in all\n",
		before, ms, rows, pend, read);
	assert_true(rows > before); /* what was in flight was committed */
	assert_int_equal(rows + pend, read); /* acked == committed */
	free(m.id);
	redisFree(c);
	rfx_stop(&f);
}

/* The deadline: a drain slower than --grace-ms is cancelled; the process
 * says so and exits 3; what it did not commit it did not acknowledge. */
TH_TEST_FN(realtime_sigterm_deadline_hit_leaves_uncommitted_pending)
{
	(void)state;
	struct rfx f;
	SKIP_WITHOUT_SERVER(&f);
	redisContext *c = rfx_connect(&f);
	const char *stream = "late";
	char db[160];
	snprintf(db, sizeof db, "%s/late.db", f.dir);
	long n = 400;
	struct msgs m;
	msgs_init(&m, n, 0);
	produce(c, stream, &m, 0, n);
	struct proc p;
	/* 5 ms per message, 200 in flight: a drain needs about 1 s. */
	const char *args[] = {CONSUMER_ARGS(f.url, stream, "l", db),
			      "--batch",
			      "20",
			      "--batch-ms",
			      "600000",
			      "--work-us",
			      "5000",
			      "--max-unacked",
			      "200",
			      "--grace-ms",
			      "100",
			      NULL};
	proc_start(&p, &f, "late", 0, args);
	while (db_count(db) < 20)
		pause_ms(2);
	kill(p.pid, SIGTERM);
	int rc = proc_wait(&p);
	if (rc != 3)
		fprintf(stderr, "stderr:\n%s\n", p.out);
	assert_int_equal(rc, 3);
	assert_non_null(strstr(p.out, "deadline hit"));
	long long pend, read;
	group_info(c, stream, &pend, &read);
	long rows = db_count(db);
	fprintf(stderr,
		"# deadline hit: %ld rows committed, %lld read, %lld "
		"left pending\n",
		rows, read, pend);
	assert_true(pend > 0);
	assert_int_equal(rows + pend, read); /* acked == committed */
	free(m.id);
	redisFree(c);
	rfx_stop(&f);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	if (rfx_skip_binary(RFX_INSTALL " libsqlite3-dev libcjson-dev"))
		return 0;
	static const struct CMUnitTest tests[] = {
		TH_TEST(realtime_sigkill_rounds_every_message_once),
		TH_TEST(realtime_disk_write_fault_nothing_acked_then_written),
		TH_TEST(realtime_sigterm_commits_and_acks_batch_in_flight),
		TH_TEST(realtime_sigterm_deadline_hit_leaves_uncommitted_pending),
	};
	th_seed();
	return th_run_selected("realtime", tests,
			       sizeof tests / sizeof tests[0]);
}
