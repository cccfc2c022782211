/*
 * The Go guide's dynamic pool: it starts with 2 workers, grows at once
 * (up to 16) when a burst of tasks finds no idle worker, and shrinks back
 * to 2 when the workers have been idle for the idle timeout. There is no
 * monitor polling every 2 s: the pool grows on submit, and a worker checks
 * and changes the count in one step when it retires, so the pool never
 * drops below its minimum.
 *
 * The example waits for the shrink by polling the stats under a deadline:
 * fine for a demo, not how a program should wait for work to finish (that
 * is cpat_pool_wait_idle()).
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep() */
#include <cpattern.h>
#include <stdio.h>
#include <time.h>

#define MIN_WORKERS 2
#define MAX_WORKERS 16
#define BURST 64

static int sleepy(void *arg, struct cpat_token *tok)
{
	struct timespec ts = {0, 10 * 1000000L}; /* a 10 ms task */
	nanosleep(&ts, NULL);
	return 0;
}

static void show(const char *when, struct cpat_pool *pool)
{
	struct cpat_pool_stats s;
	int rc = cpat_pool_stats(pool, &s);
	if (rc != 0) {
		fprintf(stderr, "pool_stats: %s\n", cpat_strerror(rc));
		return;
	}
	printf("%-13s workers %2u (idle %2u, peak %2u), spawned %llu, retired "
	       "%llu, completed %llu, queued %llu\n",
	       when, s.workers, s.idle, s.peak_workers, s.spawned, s.retired,
	       s.completed, s.queued);
}

static int fail(const char *what, int rc)
{
	fprintf(stderr, "%s: %s\n", what, cpat_strerror(rc));
	return 1;
}

int main(void)
{
	struct cpat_dynpool_opts o;
	struct cpat_pool *pool;
	struct cpat_pool_stats s;
	int rc;

	cpat_dynpool_opts_init(&o);
	o.min_workers = MIN_WORKERS;
	o.max_workers = MAX_WORKERS;
	o.idle_timeout_ns = 50 * CPAT_MSEC; /* short, so the demo is quick */
	if ((rc = cpat_dynpool_create(&pool, &o)) != 0)
		return fail("dynpool_create", rc);
	show("start:", pool);

	/* A burst: 64 tasks of 10 ms; submit blocks while the queue is full. */
	for (int i = 0; i < BURST; i++) {
		struct cpat_task t = {.fn = sleepy};
		if ((rc = cpat_pool_submit(pool, &t, NULL)) != 0) {
			cpat_pool_destroy(pool);
			return fail("pool_submit", rc);
		}
	}
	show("burst queued:", pool);
	rc = cpat_pool_wait_idle(pool, NULL, cpat_now_ns() + 10 * CPAT_SEC);
	if (rc != 0) {
		cpat_pool_destroy(pool);
		return fail("pool_wait_idle", rc);
	}
	show("burst done:", pool);

	/* Idle now: extra workers retire after 50 ms. Poll, but bounded. */
	int64_t deadline = cpat_now_ns() + 5 * CPAT_SEC;
	do {
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
		if ((rc = cpat_pool_stats(pool, &s)) != 0) {
			cpat_pool_destroy(pool);
			return fail("pool_stats", rc);
		}
	} while (s.workers > MIN_WORKERS && cpat_now_ns() < deadline);
	show("idle:", pool);

	struct cpat_pool_report r;
	rc = cpat_pool_shutdown(pool, CPAT_POOL_DRAIN, CPAT_FOREVER, &r);
	cpat_pool_destroy(pool);
	if (rc != 0)
		return fail("pool_shutdown", rc);
	printf("ran %llu tasks, peak %u workers, back to %u when idle\n", r.ran,
	       s.peak_workers, s.workers);
	if (r.ran != BURST || s.peak_workers <= MIN_WORKERS ||
	    s.workers != MIN_WORKERS) {
		fprintf(stderr, "the pool did not scale up and back down\n");
		return 1;
	}
	return 0;
}
