/*
 * The Go guide's fixed worker pool: 4 workers, 10 tasks, some of which
 * fail. Concurrency is bounded (4 threads, a bounded queue: submit
 * blocks while it is full), every task's result is seen by its done
 * callback, and the pool keeps the errors, which shutdown reports: the
 * guide's `Close() []error`.
 *
 * A task's error is an int. To know *which* task failed, record it in the
 * task's own struct from the done callback, as here.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep() */
#include <cpattern.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define NTASKS 10

struct job {
	int id;
	int rc; /* written by done(), read after shutdown */
};

static int work(void *arg, struct cpat_token *tok)
{
	struct job *j = arg;
	/* A few ms of "work"; a long task would also watch tok. */
	struct timespec ts = {0, (2 + j->id % 3) * 1000000L};
	nanosleep(&ts, NULL);
	if (cpat_token_status(tok) != 0)
		return cpat_token_status(tok);
	return j->id % 4 == 3 ? -EIO : 0; /* tasks 3 and 7 fail */
}

static void done(void *arg, int rc)
{
	((struct job *)arg)->rc = rc;
}

static int fail(const char *what, int rc)
{
	fprintf(stderr, "%s: %s\n", what, cpat_strerror(rc));
	return 1;
}

int main(void)
{
	struct job jobs[NTASKS];
	struct cpat_pool *pool;
	struct cpat_pool_opts o;
	int rc;

	cpat_pool_opts_init(&o);
	o.workers = 4;
	if ((rc = cpat_pool_create(&pool, &o)) != 0)
		return fail("pool_create", rc);

	for (int i = 0; i < NTASKS; i++) {
		jobs[i] = (struct job){.id = i, .rc = 1};
		struct cpat_task t = {
			.fn = work, .done = done, .arg = &jobs[i]};
		if ((rc = cpat_pool_submit(pool, &t, NULL)) != 0) {
			cpat_pool_destroy(pool);
			return fail("pool_submit", rc);
		}
	}

	/* Close: no more tasks, run what is queued, join the workers. */
	struct cpat_pool_report r;
	rc = cpat_pool_shutdown(pool, CPAT_POOL_DRAIN, CPAT_FOREVER, &r);
	if (rc != 0) {
		cpat_pool_destroy(pool);
		return fail("pool_shutdown", rc);
	}
	int errs[NTASKS];
	int nerr = cpat_pool_errors(pool, errs, NTASKS);
	cpat_pool_destroy(pool);
	if (nerr < 0)
		return fail("pool_errors", nerr);

	printf("submitted %llu, ran %llu, failed %llu, discarded %llu\n",
	       r.submitted, r.ran, r.failed, r.discarded);
	printf("%d errors:", nerr);
	for (int i = 0; i < nerr && i < NTASKS; i++)
		printf(" %s;", strerror(-errs[i]));
	printf("\nfailed tasks:");
	int nfailed = 0;
	for (int i = 0; i < NTASKS; i++) {
		if (jobs[i].rc != 0) {
			printf(" %d (%s)", jobs[i].id, strerror(-jobs[i].rc));
			nfailed++;
		}
	}
	printf("\n");
	if (r.ran != NTASKS || r.failed != 2 || nerr != 2 || nfailed != 2) {
		fprintf(stderr, "unexpected accounting\n");
		return 1;
	}
	return 0;
}
