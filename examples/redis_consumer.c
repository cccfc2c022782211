/*
 * A consumer-group member on Redis Streams: run it on as many machines as
 * you like with the same stream and group and different consumer names;
 * each entry of the stream is processed by one of them, and entries a
 * crashed consumer held are taken over by the others after 5 s.
 *
 *   redis-cli XADD jobs '*' n 7        # work to do
 *   example-redis_consumer redis://localhost:6379 jobs workers host-1
 *
 * Each entry's field n is squared by a pool of 4 workers and the result
 * appended to the stream "results" (with the entry's ID, so a consumer of
 * "results" can drop duplicates: delivery is at-least-once). Stops on
 * Ctrl-C, or after 2 s without work when the fifth argument is "--drain".
 * Entries not finished then stay pending for the group.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpattern.h"
#include "cpattern/redis.h"

struct result {
	long square;
	struct cpat_redis_id id;
};

static int decode(const struct cpat_redis_id *id,
		  const struct cpat_redis_fields *f, void *item, void *arg)
{
	(void)id;
	(void)arg;
	const char *v;
	size_t n;
	char buf[24];
	if (cpat_redis_fields_find(f, "n", &v, &n) != 0 || n == 0 ||
	    n >= sizeof buf)
		return -EINVAL; /* poison: goes to the dead-letter stream */
	memcpy(buf, v, n);
	buf[n] = '\0';
	char *end;
	*(long *)item = strtol(buf, &end, 10);
	return *end == '\0' ? 0 : -EINVAL;
}

static int encode(const void *item, struct cpat_redis_fields *f, void *arg)
{
	(void)arg;
	const struct result *r = item;
	char sq[24], id[CPAT_REDIS_ID_MAX];
	int n = snprintf(sq, sizeof sq, "%ld", r->square);
	int m = cpat_redis_id_format(&r->id, id, sizeof id);
	if (cpat_redis_fields_add(f, "square", sq, (size_t)n) != 0)
		return -EINVAL;
	return cpat_redis_fields_add(f, "source-id", id, (size_t)m);
}

/* One sink (one connection) shared by the workers, one at a time. */
static pthread_mutex_t sink_mu = PTHREAD_MUTEX_INITIALIZER;
static struct cpat_redis_sink *sink;

static int work(const void *item, const struct cpat_redis_id *id,
		struct cpat_token *tok, void *arg)
{
	(void)tok;
	(void)arg;
	long n = *(const long *)item;
	struct result r = {.square = n * n, .id = *id};
	pthread_mutex_lock(&sink_mu);
	int rc = cpat_redis_sink_write(sink, &r, 1);
	pthread_mutex_unlock(&sink_mu);
	if (rc == 0)
		printf("%ld -> %ld\n", n, r.square);
	return rc; /* 0: acknowledge the entry; else it is delivered again */
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr,
			"usage: %s URL STREAM GROUP CONSUMER [--drain]\n",
			argv[0]);
		return 2;
	}
	char err[256] = "";
	struct cpat_redis_source_opts o;
	cpat_redis_source_opts_init(&o);
	o.url = argv[1];
	o.stream = argv[2];
	o.group = argv[3];
	o.consumer = argv[4];
	o.item_size = sizeof(long);
	o.decode = decode;
	o.claim_idle_ns = 5 * CPAT_SEC;
	o.max_deliveries = 3;
	if (argc > 5 && strcmp(argv[5], "--drain") == 0)
		o.idle_end_ns = 2 * CPAT_SEC;
	o.errbuf = err;
	o.errlen = sizeof err;
	struct cpat_redis_source *src;
	int rc = cpat_redis_source_create(&src, &o);
	if (rc != 0) {
		fprintf(stderr, "source: %s: %s\n", cpat_strerror(rc), err);
		return 1;
	}
	struct cpat_redis_sink_opts ko;
	cpat_redis_sink_opts_init(&ko);
	ko.url = argv[1];
	ko.stream = "results";
	ko.item_size = sizeof(struct result);
	ko.encode = encode;
	ko.maxlen = 100000;
	ko.errbuf = err;
	ko.errlen = sizeof err;
	rc = cpat_redis_sink_create(&sink, &ko);
	if (rc != 0) {
		fprintf(stderr, "sink: %s: %s\n", cpat_strerror(rc), err);
		cpat_redis_source_destroy(src);
		return 1;
	}
	struct cpat_token *tok;
	int sigs[] = {SIGINT, SIGTERM};
	struct cpat_pool *pool;
	if (cpat_token_create_signals(&tok, NULL, sigs, 2) != 0 ||
	    cpat_pool_create(&pool, NULL) != 0)
		return 1;
	rc = cpat_redis_source_feed_pool(src, pool, work, NULL, tok);
	/* Finish what was handed to the pool, then send the last acks. */
	cpat_pool_shutdown(pool, CPAT_POOL_DRAIN, CPAT_FOREVER, NULL);
	cpat_pool_destroy(pool);
	struct cpat_redis_source_stats st;
	cpat_redis_source_stats(src, &st);
	cpat_redis_source_destroy(src);
	cpat_redis_sink_destroy(sink);
	cpat_token_unref(tok);
	fprintf(stderr,
		"stopped (%s): read %llu, claimed %llu, acked %llu, "
		"dead-lettered %llu, reconnects %llu\n",
		cpat_strerror(rc), (unsigned long long)st.read,
		(unsigned long long)st.claimed, (unsigned long long)st.acked,
		(unsigned long long)st.dead_lettered,
		(unsigned long long)st.reconnects);
	return rc == 0 || rc == -ECANCELED ? 0 : 1;
}
