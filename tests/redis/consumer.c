/*
 * A consumer process for the multi-process tests of the cpattern-redis
 * module: one source feeding a pool of two workers. Each task records its
 * entry in the hash "<stream>:done" (HINCRBY <n> 1: the field is the
 * entry's number, the value how many times it was processed), which is
 * both the test's evidence and an idempotent sink (the set of its fields).
 * Runs until SIGTERM (a clean stop: queued tasks drain, acks are sent);
 * the tests also SIGKILL it at random points.
 *
 * usage: consumer URL STREAM GROUP CONSUMER CLAIM_IDLE_MS WORK_US
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "cpattern.h"
#include "cpattern/redis.h"

static const char *stream;
static long work_us;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static redisContext *rec; /* shared by the workers, under mu */

static int decode(const struct cpat_redis_id *id,
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

static int work(const void *item, const struct cpat_redis_id *id,
		struct cpat_token *tok, void *arg)
{
	(void)id;
	(void)tok;
	(void)arg;
	if (work_us > 0) {
		/* Simulated work, so that a kill lands in the middle. */
		struct timespec ts = {0, work_us * 1000};
		nanosleep(&ts, NULL);
	}
	pthread_mutex_lock(&mu);
	redisReply *r = redisCommand(rec, "HINCRBY %s:done %ld 1", stream,
				     *(const long *)item);
	int ok = r && r->type == REDIS_REPLY_INTEGER;
	if (r)
		freeReplyObject(r);
	pthread_mutex_unlock(&mu);
	return ok ? 0 : -EPIPE;
}

int main(int argc, char **argv)
{
	if (argc != 7) {
		fprintf(stderr, "usage: consumer URL STREAM GROUP CONSUMER "
				"CLAIM_IDLE_MS WORK_US\n");
		return 2;
	}
	stream = argv[2];
	work_us = atol(argv[6]);
	const char *sock =
		strncmp(argv[1], "unix://", 7) == 0 ? argv[1] + 7 : NULL;
	if (!sock) {
		fprintf(stderr, "consumer: unix:// URLs only\n");
		return 2;
	}
	rec = redisConnectUnix(sock);
	if (!rec || rec->err)
		return 3;
	char err[256] = "";
	struct cpat_redis_source_opts o;
	cpat_redis_source_opts_init(&o);
	o.url = argv[1];
	o.stream = argv[2];
	o.group = argv[3];
	o.consumer = argv[4];
	o.item_size = sizeof(long);
	o.decode = decode;
	o.batch = 8;
	o.max_unacked = 16;
	o.claim_idle_ns = atol(argv[5]) * CPAT_MSEC;
	o.errbuf = err;
	o.errlen = sizeof err;
	struct cpat_redis_source *src;
	int rc = cpat_redis_source_create(&src, &o);
	if (rc != 0) {
		fprintf(stderr, "consumer: create: %s: %s\n", cpat_strerror(rc),
			err);
		return 4;
	}
	struct cpat_token *tok;
	int sigs[] = {SIGTERM, SIGINT};
	if (cpat_token_create_signals(&tok, NULL, sigs, 2) != 0)
		return 5;
	struct cpat_pool *pool;
	struct cpat_pool_opts po;
	cpat_pool_opts_init(&po);
	po.workers = 2;
	po.queue_capacity = 8;
	if (cpat_pool_create(&pool, &po) != 0)
		return 6;
	rc = cpat_redis_source_feed_pool(src, pool, work, NULL, tok);
	cpat_pool_shutdown(pool, CPAT_POOL_DRAIN, CPAT_FOREVER, NULL);
	cpat_pool_destroy(pool);
	struct cpat_redis_source_stats st;
	cpat_redis_source_stats(src, &st);
	cpat_redis_source_destroy(src);
	fprintf(stderr, "consumer %s: %s; read %llu claimed %llu acked %llu\n",
		argv[4], cpat_strerror(rc), (unsigned long long)st.read,
		(unsigned long long)st.claimed, (unsigned long long)st.acked);
	cpat_token_unref(tok);
	redisFree(rec);
	return rc == -ECANCELED || rc == 0 ? 0 : 1;
}
