/*
 * realtime_processor: the real-time system of the Go guide this library
 * follows, for real. A consumer-group member on a Redis stream feeds a
 * pipeline
 *
 *   stream -> parse JSON (cJSON) -> compute -> batch (100 or 1 s) -> SQLite
 *
 * that acknowledges each message to the broker only once the transaction
 * holding it has committed (or, for a malformed message, once it is in the
 * dead-letter stream). Run one process or N, on one machine or many, with
 * the same --stream and --group: each message goes to one of them, and
 * what a crashed one had not committed goes to another after --claim-ms.
 *
 *   realtime_processor --produce --rate 10000 --count 100000 --malformed-every
 * 1000 realtime_processor --db results.db              # Ctrl-C to stop
 *
 * Delivery: at-least-once from the broker, made effectively-once by the
 * store (the entry ID is the primary key, INSERT OR IGNORE). A commit that
 * fails (disk error, full disk, read-only file, a lock held too long) is
 * retried with backoff, the error reported each time, for --db-retry-ms;
 * its messages are not acknowledged meanwhile. Past that the processor
 * stops with the error and exits 1: nothing of the failing batch was
 * acknowledged, so the group delivers it again (to another consumer, or to
 * this one restarted by its supervisor). A stuck disk is then a stopped
 * consumer, not lost messages.
 *
 * Shutdown (SIGINT/SIGTERM): stop reading, let what was read go through
 * (the batch stage flushes its remainder at the end of input), commit,
 * acknowledge, exit 0 and print "drained"; if that takes longer than
 * --grace-ms, cancel: what was not committed stays pending for the group
 * (never acknowledged), exit 3 and print "deadline hit".
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "cpattern.h"
#include "cpattern/redis.h"
#include "rt.h"

/* ---- options ------------------------------------------------------------- */

struct opts {
	const char *url, *stream, *group, *consumer, *db, *dead, *hist_file;
	int produce, json, quiet, sync_normal;
	long parse_workers, compute_workers, batch, batch_ms, work_us;
	long grace_ms, claim_ms, max_deliveries, max_unacked, read_batch;
	long db_retry_ms, idle_exit_ms;
	double rate;
	long count, malformed_every, maxlen;
	int64_t start_at;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: realtime_processor [consumer options]      process "
		"messages\n"
		"       realtime_processor --produce [producer options]\n"
		"\n"
		"common:\n"
		"  --url URL             "
		"redis://[[user]:pass@]host[:port][/db] or\n"
		"                        unix:///path (default "
		"redis://127.0.0.1:6379)\n"
		"  --stream NAME         the stream (default orders)\n"
		"  --json                final summary as one JSON object on "
		"stdout\n"
		"  --quiet               no progress line\n"
		"  --help                this text\n"
		"consumer:\n"
		"  --group NAME          consumer group (default processors)\n"
		"  --consumer NAME       this member's name, unique in the "
		"group\n"
		"                        (default hostname-pid)\n"
		"  --db PATH             SQLite database (default "
		"realtime.db)\n"
		"  --synchronous full|normal  fsync every commit (full, "
		"default) or\n"
		"                        only at checkpoints (normal)\n"
		"  --dead NAME           dead-letter stream (default "
		"STREAM:dead)\n"
		"  --parse-workers N     (default 2)   --compute-workers N "
		"(default 1)\n"
		"  --batch N             rows per transaction (default 100)\n"
		"  --batch-ms MS         commit what is held after MS (default "
		"1000)\n"
		"  --work-us US          CPU time of the computation per "
		"message (0)\n"
		"  --grace-ms MS         shutdown deadline after "
		"SIGINT/SIGTERM (5000)\n"
		"  --claim-ms MS         take over entries another member "
		"left\n"
		"                        pending this long (default 5000)\n"
		"  --max-deliveries N    then dead-letter them (default 5)\n"
		"  --max-unacked N       messages in flight at most (default "
		"1024)\n"
		"  --read-batch N        entries per XREADGROUP (default 64)\n"
		"  --db-retry-ms MS      retry a failing commit this long, "
		"then\n"
		"                        stop with the error (default 30000)\n"
		"  --idle-exit-ms MS     drain and exit after MS with nothing "
		"to read\n"
		"                        (default 0: run until a signal)\n"
		"  --hist-file PATH      write the latency histogram there at "
		"exit\n"
		"producer:\n"
		"  --rate R              messages per second offered (default "
		"1000)\n"
		"  --count N             messages in all (default 10000)\n"
		"  --malformed-every K   every K-th message malformed (default "
		"0: none)\n"
		"  --start-at NS         first send time, CLOCK_REALTIME ns "
		"(default now)\n"
		"  --maxlen N            trim the stream to about N entries "
		"(default 0: no)\n"
		"\n"
		"Exit status: 0 done (drained); 1 error; 2 usage; 3 shutdown "
		"deadline\n"
		"hit (what was not committed stays pending for the group).\n");
}

static int num(const char *name, const char *v, long lo, long *out)
{
	char *end;
	errno = 0;
	long x = strtol(v, &end, 10);
	if (errno || end == v || *end || x < lo) {
		fprintf(stderr, "realtime_processor: --%s: bad value '%s'\n",
			name, v);
		return -1;
	}
	*out = x;
	return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	memset(o, 0, sizeof *o);
	o->url = "redis://127.0.0.1:6379";
	o->stream = "orders";
	o->group = "processors";
	o->db = "realtime.db";
	o->parse_workers = 2;
	o->compute_workers = 1;
	o->batch = 100;
	o->batch_ms = 1000;
	o->grace_ms = 5000;
	o->claim_ms = 5000;
	o->max_deliveries = 5;
	o->max_unacked = 1024;
	o->read_batch = 64;
	o->db_retry_ms = 30000;
	o->rate = 1000;
	o->count = 10000;
	enum {
		O_URL = 256,
		O_STREAM,
		O_GROUP,
		O_CONSUMER,
		O_DB,
		O_DEAD,
		O_HIST,
		O_SYNC,
		O_PW,
		O_CW,
		O_BATCH,
		O_BMS,
		O_WORK,
		O_GRACE,
		O_CLAIM,
		O_MAXDEL,
		O_UNACKED,
		O_RBATCH,
		O_RETRY,
		O_IDLE,
		O_RATE,
		O_COUNT,
		O_MALF,
		O_START,
		O_MAXLEN
	};
	static const struct option lo[] = {
		{"url", 1, 0, O_URL},
		{"stream", 1, 0, O_STREAM},
		{"group", 1, 0, O_GROUP},
		{"consumer", 1, 0, O_CONSUMER},
		{"db", 1, 0, O_DB},
		{"dead", 1, 0, O_DEAD},
		{"hist-file", 1, 0, O_HIST},
		{"synchronous", 1, 0, O_SYNC},
		{"parse-workers", 1, 0, O_PW},
		{"compute-workers", 1, 0, O_CW},
		{"batch", 1, 0, O_BATCH},
		{"batch-ms", 1, 0, O_BMS},
		{"work-us", 1, 0, O_WORK},
		{"grace-ms", 1, 0, O_GRACE},
		{"claim-ms", 1, 0, O_CLAIM},
		{"max-deliveries", 1, 0, O_MAXDEL},
		{"max-unacked", 1, 0, O_UNACKED},
		{"read-batch", 1, 0, O_RBATCH},
		{"db-retry-ms", 1, 0, O_RETRY},
		{"idle-exit-ms", 1, 0, O_IDLE},
		{"rate", 1, 0, O_RATE},
		{"count", 1, 0, O_COUNT},
		{"malformed-every", 1, 0, O_MALF},
		{"start-at", 1, 0, O_START},
		{"maxlen", 1, 0, O_MAXLEN},
		{"produce", 0, 0, 'p'},
		{"json", 0, 0, 'j'},
		{"quiet", 0, 0, 'q'},
		{"help", 0, 0, 'h'},
		{0, 0, 0, 0},
	};
	int c, bad = 0;
	long v = 0; /* read after a failed num() too */
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1 && !bad) {
		const char *n = c >= 256 ? lo[c - 256].name : "";
		switch (c) {
		case 'h':
			usage(stdout);
			exit(0);
		case 'p':
			o->produce = 1;
			break;
		case 'j':
			o->json = 1;
			break;
		case 'q':
			o->quiet = 1;
			break;
		case O_URL:
			o->url = optarg;
			break;
		case O_STREAM:
			o->stream = optarg;
			break;
		case O_GROUP:
			o->group = optarg;
			break;
		case O_CONSUMER:
			o->consumer = optarg;
			break;
		case O_DB:
			o->db = optarg;
			break;
		case O_DEAD:
			o->dead = optarg;
			break;
		case O_HIST:
			o->hist_file = optarg;
			break;
		case O_SYNC:
			if (strcmp(optarg, "full") == 0)
				o->sync_normal = 0;
			else if (strcmp(optarg, "normal") == 0)
				o->sync_normal = 1;
			else
				bad = 1;
			break;
		case O_PW:
			bad = num(n, optarg, 1, &o->parse_workers);
			break;
		case O_CW:
			bad = num(n, optarg, 1, &o->compute_workers);
			break;
		case O_BATCH:
			bad = num(n, optarg, 1, &o->batch);
			break;
		case O_BMS:
			bad = num(n, optarg, 1, &o->batch_ms);
			break;
		case O_WORK:
			bad = num(n, optarg, 0, &o->work_us);
			break;
		case O_GRACE:
			bad = num(n, optarg, 1, &o->grace_ms);
			break;
		case O_CLAIM:
			bad = num(n, optarg, 0, &o->claim_ms);
			break;
		case O_MAXDEL:
			bad = num(n, optarg, 0, &o->max_deliveries);
			break;
		case O_UNACKED:
			bad = num(n, optarg, 1, &o->max_unacked);
			break;
		case O_RBATCH:
			bad = num(n, optarg, 1, &o->read_batch);
			break;
		case O_RETRY:
			bad = num(n, optarg, 0, &o->db_retry_ms);
			break;
		case O_IDLE:
			bad = num(n, optarg, 0, &o->idle_exit_ms);
			break;
		case O_COUNT:
			bad = num(n, optarg, 0, &o->count);
			break;
		case O_MALF:
			bad = num(n, optarg, 0, &o->malformed_every);
			break;
		case O_MAXLEN:
			bad = num(n, optarg, 0, &o->maxlen);
			break;
		case O_START:
			bad = num(n, optarg, 0, &v);
			o->start_at = v;
			break;
		case O_RATE: {
			char *end;
			o->rate = strtod(optarg, &end);
			bad = end == optarg || *end || !(o->rate > 0);
			break;
		}
		default:
			bad = 1;
		}
	}
	if (!bad && optind < argc) {
		fprintf(stderr, "realtime_processor: unexpected '%s'\n",
			argv[optind]);
		bad = 1;
	}
	if (bad) {
		usage(stderr);
		return -1;
	}
	return 0;
}

/* ---- a plain hiredis connection, for XINFO (the progress line's lag) ---- */

static redisContext *connect_url(const char *url)
{
	struct timeval tv = {1, 0};
	redisContext *c = NULL;
	long db = 0;
	char user[512] = "", pass[512] = "";
	if (strncmp(url, "unix://", 7) == 0) {
		char path[512];
		snprintf(path, sizeof path, "%s", url + 7);
		char *q = strstr(path, "?db=");
		if (q) {
			db = atol(q + 4);
			*q = '\0';
		}
		c = redisConnectUnixWithTimeout(path, tv);
	} else if (strncmp(url, "redis://", 8) == 0) {
		char buf[512], host[512];
		snprintf(buf, sizeof buf, "%s", url + 8);
		char *hp = buf, *at = strrchr(buf, '@');
		if (at) {
			*at = '\0';
			hp = at + 1;
			char *colon = strchr(buf, ':');
			if (colon) {
				*colon = '\0';
				snprintf(pass, sizeof pass, "%s", colon + 1);
			}
			snprintf(user, sizeof user, "%s", buf);
		}
		char *slash = strchr(hp, '/');
		if (slash) {
			db = atol(slash + 1);
			*slash = '\0';
		}
		int port = 6379;
		char *pc = hp[0] == '[' ? strchr(hp, ']') : hp;
		pc = pc ? strrchr(pc, ':') : NULL;
		if (pc) {
			port = atoi(pc + 1);
			*pc = '\0';
		}
		snprintf(host, sizeof host, "%s", hp);
		if (host[0] == '[') { /* [::1] */
			memmove(host, host + 1, strlen(host));
			char *e = strchr(host, ']');
			if (e)
				*e = '\0';
		}
		c = redisConnectWithTimeout(host, port, tv);
	}
	if (!c || c->err) {
		if (c)
			redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	redisReply *r = NULL;
	if (pass[0])
		r = user[0] ? redisCommand(c, "AUTH %s %s", user, pass)
			    : redisCommand(c, "AUTH %s", pass);
	if (r)
		freeReplyObject(r);
	if (db > 0 && (r = redisCommand(c, "SELECT %ld", db)))
		freeReplyObject(r);
	return c;
}

/* The group's lag (entries not yet delivered to any member; -1 where the
 * server does not know it) and pending count (delivered, not acked). */
static int group_lag(redisContext *c, const char *stream, const char *group,
		     long long *lag, long long *pending)
{
	*lag = *pending = -1;
	if (!c)
		return -1;
	redisReply *r = redisCommand(c, "XINFO GROUPS %s", stream);
	if (!r)
		return -1;
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements;
	     i++) {
		redisReply *g = r->element[i];
		if (g->type != REDIS_REPLY_ARRAY)
			continue;
		int mine = 0;
		long long lg = -1, pe = -1;
		for (size_t k = 0; k + 1 < g->elements; k += 2) {
			const redisReply *key = g->element[k],
					 *val = g->element[k + 1];
			if (key->type != REDIS_REPLY_STRING)
				continue;
			if (strcmp(key->str, "name") == 0)
				mine = val->type == REDIS_REPLY_STRING &&
				       strcmp(val->str, group) == 0;
			else if (strcmp(key->str, "lag") == 0 &&
				 val->type == REDIS_REPLY_INTEGER)
				lg = val->integer;
			else if (strcmp(key->str, "pending") == 0 &&
				 val->type == REDIS_REPLY_INTEGER)
				pe = val->integer;
		}
		if (mine) {
			*lag = lg;
			*pending = pe;
		}
	}
	freeReplyObject(r);
	return 0;
}

/* ---- the consumer -------------------------------------------------------- */

/* A malformed message on its way to the dead-letter stream. */
struct dead {
	const struct rt_msg *m;
	const char *error;
	const char *consumer;
};

struct app {
	struct opts *o;
	char consumer[128];
	struct cpat_redis_source *src;
	struct cpat_redis_sink **dl; /* one per parse worker */
	struct rt_store *store;
	struct cpat_pipeline *p;
	struct cpat_token *sig;  /* SIGINT/SIGTERM */
	struct cpat_token *halt; /* the pipeline stopped (error, deadline) */
	struct cpat_token *read; /* stop reading: sig, halt, or the end */
	struct cpat_token *done; /* the pipeline has been waited for */
	int hooked;              /* the source hooked the pipeline's token */
	atomic_int deadline_hit;
	atomic_llong sig_at; /* cpat_now_ns() of the signal, 0 if none */
	atomic_llong committed, duplicates, batches, dead, commit_failures;
	pthread_mutex_t mu; /* the histograms */
	struct rt_hist all, tick;
	const struct rt_rec **recs; /* the sink's batch, --batch pointers */
	int64_t t0;
};

static int decode(const struct cpat_redis_id *id,
		  const struct cpat_redis_fields *f, void *item, void *arg)
{
	(void)arg;
	struct rt_msg *m = item;
	const char *v;
	size_t n;
	if (cpat_redis_fields_find(f, "json", &v, &n) != 0)
		return -EINVAL; /* no payload: dead-lettered by the source */
	if (n > RT_JSON_MAX)
		return -EMSGSIZE;
	m->id = *id;
	m->len = (uint32_t)n;
	memcpy(m->json, v, n);
	m->sent_ns = 0;
	const char *t;
	size_t tn;
	if (cpat_redis_fields_find(f, "t", &t, &tn) == 0 && tn < 24) {
		char buf[24];
		memcpy(buf, t, tn);
		buf[tn] = '\0';
		m->sent_ns = strtoll(buf, NULL, 10);
	}
	return 0;
}

static void fire(void *arg, int cause)
{
	(void)cause;
	cpat_token_cancel(arg);
}

/* The pipeline's source: the stream, until told to stop reading. A stop
 * (signal, idle) is the end of input, so what was read drains through and
 * is committed; a stopped pipeline gets its own cause back. */
static int source(void *out, struct cpat_source_ctx *ctx)
{
	struct app *a = cpat_source_arg(ctx);
	struct cpat_token *ptok = cpat_source_token(ctx);
	if (!a->hooked) {
		a->hooked = 1;
		int rc = cpat_token_on_cancel(ptok, fire, a->halt, NULL);
		if (rc != 0)
			return rc;
	}
	/* Going to the broker (nothing read is left) may block: first hand
	 * on what the pipeline holds back, or a lull would strand it. */
	if (cpat_redis_source_buffered(a->src) == 0 &&
	    cpat_source_flush(ctx) != 0)
		return cpat_token_status(ptok);
	struct cpat_redis_id id;
	int rc = cpat_redis_source_next(a->src, out, &id, a->read);
	if (rc == 1) {
		memcpy(cpat_source_ack(ctx), &id, sizeof id);
		return 1;
	}
	if (rc == -ECANCELED || rc == -ETIMEDOUT) {
		int pc = cpat_token_status(ptok);
		return pc ? pc : 0;
	}
	return rc; /* 0: idle for --idle-exit-ms; or the source's error */
}

static int encode_dead(const void *item, struct cpat_redis_fields *f, void *arg)
{
	(void)arg;
	const struct dead *d = item;
	char id[CPAT_REDIS_ID_MAX], t[24];
	int idn = cpat_redis_id_format(&d->m->id, id, sizeof id);
	int tn = snprintf(t, sizeof t, "%" PRId64, d->m->sent_ns);
	int rc = cpat_redis_fields_add(f, "json", d->m->json, d->m->len);
	if (!rc)
		rc = cpat_redis_fields_add(f, "error", d->error,
					   strlen(d->error));
	if (!rc)
		rc = cpat_redis_fields_add(f, "source-id", id, (size_t)idn);
	if (!rc)
		rc = cpat_redis_fields_add(f, "t", t, (size_t)tn);
	if (!rc)
		rc = cpat_redis_fields_add(f, "consumer", d->consumer,
					   strlen(d->consumer));
	return rc;
}

static int st_parse(const void *in, void *out, struct cpat_stage_ctx *ctx)
{
	struct app *a = cpat_stage_arg(ctx);
	const struct rt_msg *m = in;
	char err[128];
	if (rt_parse(m, out, err, sizeof err) == 0)
		return CPAT_STAGE_EMIT;
	/* Malformed: into the dead-letter stream first; filtered (and so
	 * acknowledged) only once the broker has it. A failed write stops
	 * the pipeline and the message stays pending. */
	struct dead d = {m, err, a->consumer};
	int rc = cpat_redis_sink_write(a->dl[cpat_stage_worker(ctx)], &d, 1);
	if (rc != 0) {
		fprintf(stderr, "realtime_processor: dead-letter write: %s\n",
			cpat_strerror(rc));
		return rc;
	}
	atomic_fetch_add(&a->dead, 1);
	return CPAT_STAGE_SKIP;
}

static int st_compute(const void *in, void *out, struct cpat_stage_ctx *ctx)
{
	struct app *a = cpat_stage_arg(ctx);
	memcpy(out, in, sizeof(struct rt_rec));
	rt_compute(out, a->o->work_us);
	return CPAT_STAGE_EMIT;
}

/* The sink: one batch, one transaction. Returns 0 only after COMMIT, and
 * only then does the pipeline acknowledge the batch's messages. */
static int sink_save(const void *item, void *arg)
{
	struct app *a = arg;
	const struct cpat_batch *b = item;
	const struct rt_rec **recs = a->recs; /* sink: one thread */
	for (size_t i = 0; i < b->count; i++)
		recs[i] = cpat_batch_item(b, i);
	int64_t backoff = 10 * CPAT_MSEC, first_fail = 0;
	for (;;) {
		char err[256];
		long added = 0;
		int rc = rt_store_save(a->store, recs, b->count, &added, err,
				       sizeof err);
		int64_t now = cpat_now_ns();
		if (rc == 0) {
			if (first_fail)
				fprintf(stderr,
					"realtime_processor: commit succeeded "
					"after %.1f s of failures\n",
					(double)(now - first_fail) / 1e9);
			int64_t wall = rt_wall_ns();
			pthread_mutex_lock(&a->mu);
			for (size_t i = 0; i < b->count; i++)
				if (recs[i]->sent_ns > 0) {
					rt_hist_add(&a->all,
						    wall - recs[i]->sent_ns);
					rt_hist_add(&a->tick,
						    wall - recs[i]->sent_ns);
				}
			pthread_mutex_unlock(&a->mu);
			atomic_fetch_add(&a->committed, added);
			atomic_fetch_add(&a->duplicates,
					 (long long)b->count - added);
			atomic_fetch_add(&a->batches, 1);
			return 0;
		}
		atomic_fetch_add(&a->commit_failures, 1);
		if (!first_fail)
			first_fail = now;
		int give_up = !rt_store_transient(rc) ||
			      now - first_fail >= a->o->db_retry_ms * CPAT_MSEC;
		fprintf(stderr,
			"realtime_processor: commit of %zu messages failed "
			"(%s: "
			"%s); not acknowledged; %s\n",
			b->count, cpat_strerror(rc), err,
			give_up ? "giving up" : "retrying");
		if (give_up)
			return rc;
		/* Back off under the token: a stopping pipeline (deadline)
		 * ends the retries, and the batch stays unacknowledged. */
		if (cpat_token_wait(a->halt, now + backoff) == 0)
			return rc;
		backoff = backoff * 2 > CPAT_SEC ? CPAT_SEC : backoff * 2;
	}
}

static void progress(struct app *a, redisContext *rc, long long *last,
		     int64_t *last_t)
{
	int64_t now = cpat_now_ns();
	long long done = atomic_load(&a->committed) + atomic_load(&a->dead);
	double rate = now > *last_t ? (double)(done - *last) * 1e9 /
					      (double)(now - *last_t)
				    : 0;
	*last = done;
	*last_t = now;
	pthread_mutex_lock(&a->mu);
	double p99 = rt_hist_pct(&a->tick, 99);
	memset(&a->tick, 0, sizeof a->tick);
	pthread_mutex_unlock(&a->mu);
	long long lag, pend;
	group_lag(rc, a->o->stream, a->o->group, &lag, &pend);
	struct cpat_redis_source_stats st;
	cpat_redis_source_stats(a->src, &st);
	char lagb[32] = "?", pb[32] = "-";
	if (lag >= 0)
		snprintf(lagb, sizeof lagb, "%lld", lag);
	if (p99 >= 0)
		snprintf(pb, sizeof pb, "%.1f ms", p99 / 1e6);
	fprintf(stderr,
		"[%s %6.1f s] %8.0f msg/s  done %lld (dead %lld)  lag %s  "
		"pending %lld  in flight %llu  p99 %s\n",
		a->consumer, (double)(now - a->t0) / 1e9, rate, done,
		(long long)atomic_load(&a->dead), lagb, pend,
		(unsigned long long)st.in_flight, pb);
}

/* The monitor: the progress line every second, and the shutdown deadline:
 * --grace-ms after the signal, a pipeline still draining is cancelled. */
static void *monitor(void *arg)
{
	struct app *a = arg;
	redisContext *rc = a->o->quiet ? NULL : connect_url(a->o->url);
	long long last = 0;
	int64_t last_t = cpat_now_ns(), next = last_t + CPAT_SEC;
	int64_t deadline = INT64_MAX; /* none until a signal */
	int reading = 1;
	for (;;) {
		int64_t until = next < deadline ? next : deadline;
		if (reading) {
			if (cpat_token_wait(a->read, until) == 0) {
				reading = 0;
				if (cpat_token_status(a->sig) != 0) {
					int64_t t = cpat_now_ns();
					atomic_store(&a->sig_at, t);
					deadline =
						t + a->o->grace_ms * CPAT_MSEC;
					fprintf(stderr,
						"realtime_processor: signal: "
						"stopped reading; draining "
						"(deadline %ld ms)\n",
						a->o->grace_ms);
				}
				continue;
			}
		} else if (cpat_token_wait(a->done, until) == 0) {
			break;
		}
		int64_t now = cpat_now_ns();
		if (now >= deadline) {
			atomic_store(&a->deadline_hit, 1);
			cpat_pipeline_cancel(a->p);
			cpat_token_cancel(a->halt);
			deadline = INT64_MAX;
		}
		if (now >= next) {
			if (!a->o->quiet)
				progress(a, rc, &last, &last_t);
			next += CPAT_SEC;
			if (next < now)
				next = now + CPAT_SEC;
		}
	}
	if (rc)
		redisFree(rc);
	return NULL;
}

static int run_consumer(struct opts *o)
{
	struct app a;
	memset(&a, 0, sizeof a);
	a.o = o;
	pthread_mutex_init(&a.mu, NULL);
	if (o->consumer) {
		snprintf(a.consumer, sizeof a.consumer, "%s", o->consumer);
	} else {
		char host[64] = "host";
		if (gethostname(host, sizeof host) != 0)
			snprintf(host, sizeof host, "host");
		host[sizeof host - 1] = '\0';
		snprintf(a.consumer, sizeof a.consumer, "%s-%ld", host,
			 (long)getpid());
	}
	char dead_name[256];
	snprintf(dead_name, sizeof dead_name, "%s:dead", o->stream);
	const char *dead = o->dead ? o->dead : dead_name;
	char err[256] = "";
	int rc = 0, exit_code = 1;
	unsigned pw = (unsigned)o->parse_workers;

	int sigs[] = {SIGINT, SIGTERM};
	rc = cpat_token_create_signals(&a.sig, NULL, sigs, 2);
	if (!rc)
		rc = cpat_token_create(&a.halt, NULL);
	if (!rc)
		rc = cpat_token_create(&a.read, a.halt);
	if (!rc)
		rc = cpat_token_create(&a.done, NULL);
	if (!rc)
		rc = cpat_token_on_cancel(a.sig, fire, a.read, NULL);
	if (rc) {
		fprintf(stderr, "realtime_processor: tokens: %s\n",
			cpat_strerror(rc));
		goto out;
	}

	rc = rt_store_open(&a.store, o->db, o->sync_normal, 5000, err,
			   sizeof err);
	if (rc) {
		fprintf(stderr, "realtime_processor: database %s: %s\n", o->db,
			err);
		goto out;
	}

	struct cpat_redis_source_opts so;
	cpat_redis_source_opts_init(&so);
	so.url = o->url;
	so.stream = o->stream;
	so.group = o->group;
	so.consumer = a.consumer;
	so.item_size = sizeof(struct rt_msg);
	so.decode = decode;
	so.batch = (size_t)o->read_batch;
	so.max_unacked = (size_t)o->max_unacked;
	so.claim_idle_ns = o->claim_ms * CPAT_MSEC;
	so.max_deliveries = (unsigned)o->max_deliveries;
	so.dead_letter = dead;
	so.idle_end_ns = o->idle_exit_ms * CPAT_MSEC;
	so.errbuf = err;
	so.errlen = sizeof err;
	rc = cpat_redis_source_create(&a.src, &so);
	if (rc) {
		fprintf(stderr, "realtime_processor: %s: %s: %s\n", o->url,
			cpat_strerror(rc), err);
		goto out;
	}
	a.dl = calloc(pw, sizeof *a.dl);
	a.recs = calloc((size_t)o->batch, sizeof *a.recs);
	if (!a.dl || !a.recs) {
		rc = -ENOMEM;
		goto out;
	}
	for (unsigned i = 0; i < pw; i++) {
		struct cpat_redis_sink_opts ko;
		cpat_redis_sink_opts_init(&ko);
		ko.url = o->url;
		ko.stream = dead;
		ko.item_size = sizeof(struct dead);
		ko.encode = encode_dead;
		ko.max_entry_bytes = RT_JSON_MAX + 512;
		ko.token = a.halt;
		ko.errbuf = err;
		ko.errlen = sizeof err;
		rc = cpat_redis_sink_create(&a.dl[i], &ko);
		if (rc) {
			fprintf(stderr,
				"realtime_processor: dead-letter sink: "
				"%s: %s\n",
				cpat_strerror(rc), err);
			goto out;
		}
	}

	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	po.item_size = sizeof(struct rt_msg);
	rc = cpat_pipeline_create(&a.p, &po);
	struct cpat_source_opts sro;
	cpat_source_opts_init(&sro);
	sro.fn = source;
	sro.arg = &a;
	sro.ack_size = sizeof(struct cpat_redis_id);
	sro.ack = cpat_redis_source_ack_fn;
	sro.ack_arg = a.src;
	sro.max_unacked = (size_t)o->max_unacked;
	if (!rc)
		rc = cpat_pipeline_set_source(a.p, &sro);
	struct cpat_stage_opts st;
	cpat_stage_opts_init(&st);
	st.name = "parse";
	st.map = st_parse;
	st.arg = &a;
	st.out_size = sizeof(struct rt_rec);
	st.workers = pw;
	st.out_capacity = 256;
	if (!rc)
		rc = cpat_pipeline_add_stage(a.p, &st);
	st.name = "compute";
	st.map = st_compute;
	st.workers = (unsigned)o->compute_workers;
	if (!rc)
		rc = cpat_pipeline_add_stage(a.p, &st);
	struct cpat_batch_opts bo;
	cpat_batch_opts_init(&bo);
	bo.name = "batch";
	bo.max_items = (size_t)o->batch;
	bo.flush_ns = o->batch_ms * CPAT_MSEC;
	if (!rc)
		rc = cpat_pipeline_add_batch(a.p, &bo);
	if (!rc)
		rc = cpat_pipeline_set_sink(a.p, sink_save, &a);
	if (rc) {
		fprintf(stderr, "realtime_processor: pipeline: %s\n",
			cpat_strerror(rc));
		goto out;
	}

	a.t0 = cpat_now_ns();
	if (!o->quiet)
		fprintf(stderr,
			"realtime_processor: consumer %s of group %s on %s "
			"(%s), database %s\n",
			a.consumer, o->group, o->stream, o->url, o->db);
	rc = cpat_pipeline_start(a.p, NULL, CPAT_FOREVER);
	if (rc) {
		fprintf(stderr, "realtime_processor: start: %s\n",
			cpat_strerror(rc));
		goto out;
	}
	pthread_t mon;
	int mon_rc = pthread_create(&mon, NULL, monitor, &a);
	if (mon_rc)
		fprintf(stderr,
			"realtime_processor: no monitor thread (%s): "
			"no progress line, no shutdown deadline\n",
			strerror(mon_rc));
	struct cpat_pipeline_result res;
	int wrc = cpat_pipeline_wait(a.p, &res);
	int64_t t_end = cpat_now_ns();
	cpat_token_cancel(a.read);
	cpat_token_cancel(a.done);
	if (!mon_rc)
		pthread_join(mon, NULL);

	/* The last acknowledgements, bounded: 2 s to reach the broker. */
	struct cpat_token *fl;
	int frc = cpat_token_create_deadline(&fl, NULL,
					     cpat_now_ns() + 2 * CPAT_SEC);
	if (!frc) {
		frc = cpat_redis_source_flush(a.src, fl);
		cpat_token_unref(fl);
	}
	if (frc)
		fprintf(stderr,
			"realtime_processor: last acknowledgements not "
			"sent (%s): those messages will be delivered "
			"again\n",
			cpat_strerror(frc));

	int64_t sig_at = atomic_load(&a.sig_at);
	double after = sig_at ? (double)(t_end - sig_at) / 1e6 : 0;
	struct cpat_redis_source_stats ss;
	cpat_redis_source_stats(a.src, &ss);
	const char *outcome;
	if (wrc == 0 && sig_at) {
		outcome = "drained";
		exit_code = 0;
		fprintf(stderr,
			"realtime_processor: shutdown: drained in %.0f ms: "
			"everything the pipeline took was committed and "
			"acknowledged; %" PRIu64 " fetched but not started "
			"stay pending for the group\n",
			after, ss.in_flight);
	} else if (wrc == 0) {
		outcome = "idle";
		exit_code = 0;
		fprintf(stderr,
			"realtime_processor: input idle for %ld ms: "
			"drained, everything read was committed and "
			"acknowledged\n",
			o->idle_exit_ms);
	} else if (atomic_load(&a.deadline_hit)) {
		outcome = "deadline";
		exit_code = 3;
		fprintf(stderr,
			"realtime_processor: shutdown: deadline hit after %.0f "
			"ms: %" PRIu64 " messages not committed, left pending "
			"for the group\n",
			after, res.unacked);
	} else {
		outcome = "error";
		exit_code = 1;
		fprintf(stderr,
			"realtime_processor: stopped by an error in %s: %s; "
			"%" PRIu64 " messages not acknowledged (delivered "
			"again)\n",
			res.stage, cpat_strerror(wrc), res.unacked);
	}

	double secs = (double)(t_end - a.t0) / 1e9;
	long long committed = atomic_load(&a.committed);
	double p50 = rt_hist_pct(&a.all, 50), p99 = rt_hist_pct(&a.all, 99),
	       p999 = rt_hist_pct(&a.all, 99.9);
	if (!o->quiet)
		fprintf(stderr,
			"summary: %s: %lld rows committed in %lld transactions "
			"(%lld redelivered, already stored), %lld "
			"dead-lettered here, %" PRIu64
			" by the source; %" PRIu64 " acked, %" PRIu64
			" claimed from others, %lld commit "
			"failures; %.1f s, %.0f msg/s; latency send->commit "
			"p50 "
			"%.1f ms p99 %.1f ms p99.9 %.1f ms\n",
			a.consumer, committed,
			(long long)atomic_load(&a.batches),
			(long long)atomic_load(&a.duplicates),
			(long long)atomic_load(&a.dead), ss.dead_lettered,
			ss.acked, ss.claimed,
			(long long)atomic_load(&a.commit_failures), secs,
			secs > 0 ? (double)committed / secs : 0, p50 / 1e6,
			p99 / 1e6, p999 / 1e6);
	if (o->json)
		printf("{\"mode\":\"consumer\",\"consumer\":\"%s\",\"outcome\":"
		       "\"%s\",\"committed\":%lld,\"duplicates\":%lld,"
		       "\"batches\":%lld,\"dead_lettered\":%lld,\"acked\":"
		       "%" PRIu64 ",\"claimed\":%" PRIu64
		       ",\"commit_failures\":%lld,"
		       "\"unacked\":%" PRIu64 ",\"seconds\":%.3f,"
		       "\"latency_p50_ns\":%.0f,\"latency_p99_ns\":%.0f,"
		       "\"latency_p999_ns\":%.0f,\"end_wall_ns\":%" PRId64
		       "}\n",
		       a.consumer, outcome, committed,
		       (long long)atomic_load(&a.duplicates),
		       (long long)atomic_load(&a.batches),
		       (long long)atomic_load(&a.dead), ss.acked, ss.claimed,
		       (long long)atomic_load(&a.commit_failures), res.unacked,
		       secs, p50, p99, p999, rt_wall_ns());
	if (o->hist_file) {
		FILE *f = fopen(o->hist_file, "w");
		if (!f || rt_hist_write(&a.all, f) != 0 || fclose(f) != 0) {
			perror(o->hist_file);
			exit_code = exit_code ? exit_code : 1;
		}
	}
out:
	cpat_pipeline_destroy(a.p);
	for (unsigned i = 0; a.dl && i < pw; i++)
		cpat_redis_sink_destroy(a.dl[i]);
	free(a.dl);
	free(a.recs);
	cpat_redis_source_destroy(a.src);
	rt_store_close(a.store);
	cpat_token_unref(a.read);
	cpat_token_unref(a.done);
	cpat_token_unref(a.halt);
	cpat_token_unref(a.sig);
	pthread_mutex_destroy(&a.mu);
	return exit_code;
}

/* ---- the producer -------------------------------------------------------- */

struct out_msg {
	int64_t t;
	uint32_t len;
	char json[256];
};

static int encode_msg(const void *item, struct cpat_redis_fields *f, void *arg)
{
	(void)arg;
	const struct out_msg *m = item;
	char t[24];
	int tn = snprintf(t, sizeof t, "%" PRId64, m->t);
	int rc = cpat_redis_fields_add(f, "json", m->json, m->len);
	return rc ? rc : cpat_redis_fields_add(f, "t", t, (size_t)tn);
}

/* Open loop: message i is due at start + i / rate, stamped with that time
 * (not the time it went out), and sent when due, in pipelined groups of
 * what is due; a producer that falls behind sends the late ones at once
 * and they carry their lateness into the consumers' latency. */
static int run_producer(struct opts *o)
{
	enum { GROUP = 128 };
	struct cpat_token *sig;
	int sigs[] = {SIGINT, SIGTERM};
	int rc = cpat_token_create_signals(&sig, NULL, sigs, 2);
	if (rc) {
		fprintf(stderr, "realtime_processor: %s\n", cpat_strerror(rc));
		return 1;
	}
	char err[256] = "";
	struct cpat_redis_sink_opts ko;
	cpat_redis_sink_opts_init(&ko);
	ko.url = o->url;
	ko.stream = o->stream;
	ko.item_size = sizeof(struct out_msg);
	ko.encode = encode_msg;
	ko.maxlen = (size_t)o->maxlen;
	ko.token = sig;
	ko.errbuf = err;
	ko.errlen = sizeof err;
	struct cpat_redis_sink *k;
	rc = cpat_redis_sink_create(&k, &ko);
	if (rc) {
		fprintf(stderr, "realtime_processor: %s: %s: %s\n", o->url,
			cpat_strerror(rc), err);
		cpat_token_unref(sig);
		return 1;
	}
	struct out_msg *buf = calloc(GROUP, sizeof *buf);
	if (!buf) {
		cpat_redis_sink_destroy(k);
		cpat_token_unref(sig);
		return 1;
	}
	int64_t wall0 = rt_wall_ns(), mono0 = cpat_now_ns();
	int64_t start = o->start_at > 0 ? o->start_at : wall0;
	int64_t mstart = mono0 + (start - wall0); /* the same instant */
	double period = 1e9 / o->rate;
	long i = 0, malformed = 0;
	int64_t worst_late = 0;
	while (i < o->count && !rc) {
		int64_t due = mstart + (int64_t)((double)i * period);
		int64_t now = cpat_now_ns();
		if (due > now) {
			if (cpat_token_wait(sig, due) == 0) {
				rc = cpat_token_status(sig);
				break;
			}
			now = cpat_now_ns();
		}
		if (now - due > worst_late)
			worst_late = now - due;
		size_t n = 0;
		while (n < GROUP && i < o->count &&
		       mstart + (int64_t)((double)i * period) <= now) {
			struct out_msg *m = &buf[n++];
			int bad = o->malformed_every > 0 &&
				  (i + 1) % o->malformed_every == 0;
			malformed += bad;
			m->t = start + (int64_t)((double)i * period);
			int len =
				rt_msg_format(m->json, sizeof m->json, i, bad);
			m->len = len > 0 ? (uint32_t)len : 0;
			i++;
		}
		rc = cpat_redis_sink_write(k, buf, n);
	}
	double secs = (double)(cpat_now_ns() - mstart) / 1e9;
	if (rc)
		fprintf(stderr, "realtime_processor: XADD: %s\n",
			cpat_strerror(rc));
	if (!o->quiet)
		fprintf(stderr,
			"produced %ld messages (%ld malformed) to %s in %.2f "
			"s: "
			"%.0f msg/s offered %.0f; sent at most %.1f ms late\n",
			i, malformed, o->stream, secs, secs > 0 ? i / secs : 0,
			o->rate, (double)worst_late / 1e6);
	if (o->json)
		printf("{\"mode\":\"producer\",\"sent\":%ld,\"malformed\":%ld,"
		       "\"seconds\":%.3f,\"offered\":%.1f,\"start_wall_ns\":"
		       "%" PRId64 ",\"worst_late_ns\":%" PRId64 "}\n",
		       i, malformed, secs, o->rate, start, worst_late);
	free(buf);
	cpat_redis_sink_destroy(k);
	cpat_token_unref(sig);
	return rc == 0 ? 0 : 1;
}

/* ---- histogram files ----------------------------------------------------- */

int rt_hist_write(const struct rt_hist *h, FILE *f)
{
	if (fprintf(f, "count %" PRIu64 " max %" PRId64 "\n", h->count,
		    h->max) < 0)
		return -1;
	for (unsigned i = 0; i < RT_HIST_BUCKETS; i++)
		if (h->n[i] && fprintf(f, "%u %" PRIu64 "\n", i, h->n[i]) < 0)
			return -1;
	return 0;
}

int rt_hist_read_add(struct rt_hist *h, FILE *f)
{
	uint64_t count;
	int64_t max;
	if (fscanf(f, "count %" SCNu64 " max %" SCNd64, &count, &max) != 2)
		return -1;
	unsigned i;
	uint64_t n;
	while (fscanf(f, "%u %" SCNu64, &i, &n) == 2)
		if (i < RT_HIST_BUCKETS)
			h->n[i] += n;
	h->count += count;
	if (max > h->max)
		h->max = max;
	return 0;
}

int rt_main(int argc, char **argv)
{
	struct opts o;
	if (parse_args(argc, argv, &o) != 0)
		return 2;
	/* A file-size limit (RLIMIT_FSIZE) hit by a database write becomes
	 * that write's error (EFBIG), reported and retried, rather than a
	 * signal that kills the service with its batch half-written. */
	signal(SIGXFSZ, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	return o.produce ? run_producer(&o) : run_consumer(&o);
}
