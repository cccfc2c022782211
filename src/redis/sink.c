/*
 * A stream sink: items encoded into fields and appended with XADD,
 * pipelined, with optional approximate trimming.
 *
 * DESIGN
 *
 * Threads. A sink has one connection and is used by one thread at a time
 * (a pipeline calls its sink from one thread); only the counters and the
 * last error are read from other threads, under mu (and the connection's
 * emu).
 *
 * Confirmation before success. A write returns 0 only once the broker has
 * answered every XADD of it. A pipeline acknowledges an item's source
 * entry when its sink returns 0, so an entry is acknowledged only after
 * what it produced is in the output stream: nothing acknowledged can be
 * lost. Pipelining therefore pays off per call: cpat_redis_sink_write()
 * and the batch sink send all their XADDs, then read all the replies, one
 * round trip for the lot.
 *
 * Lost connections. Replies come back in order, so the confirmed prefix of
 * a write is known; after a lost connection the sink reconnects (backoff,
 * under its token, for at most retry_ns) and sends the unconfirmed rest
 * again. An XADD whose reply was lost may have been applied, so the
 * resend can duplicate it: counted in resent, at-least-once.
 *
 * Memory. Fields are copied into an arena of max_entry_bytes made at
 * create, then into hiredis's output buffer by redisAppendCommandArgv();
 * nothing of ours is allocated per item.
 */
#include "redis_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cpat_redis_sink {
	struct rconn conn;
	char *stream;
	size_t item_size;
	cpat_redis_encode_fn encode;
	void *encode_arg;
	char maxlen[24]; /* "" for none */
	int64_t retry_ns;
	struct cpat_token *tok;
	struct cpat_redis_fields fields;
	const char **argv;
	size_t *argl;

	pthread_mutex_t mu;
	struct cpat_redis_sink_stats st;
};

void cpat_redis_sink_opts_init(struct cpat_redis_sink_opts *o)
{
	if (!o)
		return;
	memset(o, 0, sizeof *o);
	o->max_fields = 64;
	o->max_entry_bytes = 4096;
	o->connect_timeout_ns = CPAT_SEC;
	o->io_timeout_ns = 2 * CPAT_SEC;
	o->retry_ns = 5 * CPAT_SEC;
}

static void sink_error(struct cpat_redis_sink *k, int rc)
{
	pthread_mutex_lock(&k->mu);
	k->st.last_error = rc;
	pthread_mutex_unlock(&k->mu);
}

/* Appends the XADD of one item to the output buffer. */
static int append_one(struct cpat_redis_sink *k, const void *item)
{
	k->fields.n = 0;
	k->fields.used = 0;
	int rc = k->encode(item, &k->fields, k->encode_arg);
	if (rc < 0)
		return rc;
	size_t argc = 0;
	k->argv[argc] = "XADD", k->argl[argc++] = 4;
	k->argv[argc] = k->stream, k->argl[argc++] = strlen(k->stream);
	if (k->maxlen[0]) {
		k->argv[argc] = "MAXLEN", k->argl[argc++] = 6;
		k->argv[argc] = "~", k->argl[argc++] = 1;
		k->argv[argc] = k->maxlen, k->argl[argc++] = strlen(k->maxlen);
	}
	k->argv[argc] = "*", k->argl[argc++] = 1;
	if (k->fields.n == 0)
		return rconn_set_error(&k->conn, -EINVAL,
				       "encode gave an entry without fields");
	for (size_t i = 0; i < 2 * k->fields.n; i++) {
		k->argv[argc] = k->fields.ptr[i];
		k->argl[argc++] = k->fields.len[i];
	}
	if (redisAppendCommandArgv(k->conn.c, (int)argc, k->argv, k->argl) !=
	    REDIS_OK)
		return rconn_io_error(&k->conn);
	return 0;
}

int cpat_redis_sink_write(struct cpat_redis_sink *k, const void *items,
			  size_t n)
{
	if (!k || (!items && n > 0))
		return -EINVAL;
	const unsigned char *it = items;
	size_t done = 0;
	int64_t deadline = cpat_now_ns() + k->retry_ns;
	int first = 1;
	while (done < n) {
		int rc = rconn_ensure(&k->conn, k->tok, 10 * CPAT_MSEC,
				      CPAT_SEC, deadline);
		if (rc != 0) {
			sink_error(k, rc);
			return rc;
		}
		if (!first) {
			pthread_mutex_lock(&k->mu);
			k->st.resent += n - done;
			k->st.reconnects = k->conn.connects - 1;
			pthread_mutex_unlock(&k->mu);
		}
		first = 0;
		size_t appended = 0, before = done;
		for (size_t i = done; i < n && rc == 0; i++) {
			rc = append_one(k, it + i * k->item_size);
			if (rc == 0)
				appended++;
		}
		/* Read what went out, in order: the confirmed prefix grows. */
		int refused = 0;
		for (size_t i = 0; i < appended && k->conn.c; i++) {
			void *rv = NULL;
			if (redisGetReply(k->conn.c, &rv) != REDIS_OK) {
				rconn_io_error(&k->conn);
				break;
			}
			redisReply *r = rv;
			if (r->type == REDIS_REPLY_ERROR && !refused)
				refused = rconn_reply_error(&k->conn, r);
			else if (!refused)
				done++;
			freeReplyObject(r);
		}
		if (appended) {
			pthread_mutex_lock(&k->mu);
			k->st.round_trips++;
			k->st.written += done - before;
			pthread_mutex_unlock(&k->mu);
		}
		if (refused) {
			sink_error(k, refused);
			return refused;
		}
		if (rc != 0 && k->conn.c) {
			/* encode failed: what went before it is written. */
			sink_error(k, rc);
			return rc;
		}
		if (k->conn.c)
			break; /* all confirmed */
		/* Lost: the first done are confirmed (and counted); the
		 * rest go again on a new connection. */
	}
	return 0;
}

int cpat_redis_sink_fn(const void *item, void *arg)
{
	return cpat_redis_sink_write(arg, item, 1);
}

int cpat_redis_sink_batch_fn(const void *batch, void *arg)
{
	const struct cpat_batch *b = batch;
	struct cpat_redis_sink *k = arg;
	if (!b || !k || b->item_size != k->item_size)
		return -EINVAL;
	return cpat_redis_sink_write(k, cpat_batch_item(b, 0), b->count);
}

int cpat_redis_sink_stats(struct cpat_redis_sink *k,
			  struct cpat_redis_sink_stats *st)
{
	if (!k || !st)
		return -EINVAL;
	pthread_mutex_lock(&k->mu);
	*st = k->st;
	pthread_mutex_unlock(&k->mu);
	return 0;
}

int cpat_redis_sink_last_error(struct cpat_redis_sink *k, char *buf, size_t len)
{
	if (!k || (!buf && len > 0))
		return -EINVAL;
	return rconn_last_error(&k->conn, buf, len);
}

static void sink_free(struct cpat_redis_sink *k)
{
	rconn_fini(&k->conn);
	free(k->stream);
	rfields_free(&k->fields);
	free(k->argv);
	free(k->argl);
	pthread_mutex_destroy(&k->mu);
	free(k);
}

void cpat_redis_sink_destroy(struct cpat_redis_sink *k)
{
	if (k)
		sink_free(k);
}

int cpat_redis_sink_create(struct cpat_redis_sink **out,
			   const struct cpat_redis_sink_opts *o)
{
	if (out)
		*out = NULL;
	const char *bad = NULL;
	if (!out || !o)
		bad = "NULL";
	else if (!o->stream || !o->stream[0] || !o->item_size || !o->encode)
		bad = "stream, item_size and encode are required";
	else if (!o->max_fields || o->max_fields > 4096 ||
		 !o->max_entry_bytes || o->connect_timeout_ns <= 0 ||
		 o->io_timeout_ns <= 0 || o->retry_ns < 0)
		bad = "a size or time is out of range";
	if (bad) {
		if (o && o->errbuf && o->errlen)
			snprintf(o->errbuf, o->errlen, "bad option: %s", bad);
		return -EINVAL;
	}
	struct cpat_redis_sink *k = calloc(1, sizeof *k);
	if (!k)
		return -ENOMEM;
	pthread_mutex_init(&k->mu, NULL);
	int rc = rconn_init(&k->conn, o->url);
	if (rc != 0) {
		rconn_copy_error(&k->conn, o->errbuf, o->errlen);
		sink_free(k);
		return rc;
	}
	k->conn.connect_timeout_ns = o->connect_timeout_ns;
	k->conn.io_timeout_ns = o->io_timeout_ns;
	k->item_size = o->item_size;
	k->encode = o->encode;
	k->encode_arg = o->encode_arg;
	k->retry_ns = o->retry_ns;
	k->tok = o->token;
	if (o->maxlen)
		snprintf(k->maxlen, sizeof k->maxlen, "%zu", o->maxlen);
	k->stream = rdup(o->stream);
	k->argv = calloc(2 * o->max_fields + 8, sizeof *k->argv);
	k->argl = calloc(2 * o->max_fields + 8, sizeof *k->argl);
	if (!k->stream || !k->argv || !k->argl ||
	    rfields_alloc(&k->fields, o->max_fields, o->max_entry_bytes) != 0) {
		sink_free(k);
		return -ENOMEM;
	}
	rc = rconn_connect(&k->conn);
	if (rc != 0) {
		rconn_copy_error(&k->conn, o->errbuf, o->errlen);
		sink_free(k);
		return rc;
	}
	*out = k;
	return 0;
}
