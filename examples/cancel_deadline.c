/*
 * Cancellation and deadlines: Go's context, with tokens.
 *
 * 1. A looping worker that stops when its token is cancelled: it never loops
 *    forever, and it never misses the cancel while blocked on a channel.
 * 2. An operation under a deadline reports -ETIMEDOUT, distinct from a
 *    cancellation (-ECANCELED) and from a closed channel (-EPIPE).
 */
#include <cpattern.h>
#include <pthread.h>
#include <stdio.h>

struct worker {
	struct cpat_chan *jobs;
	struct cpat_token *tok;
	long done;
	int rc;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	int job;
	/* Every blocking call watches the token: this loop cannot leak. */
	while ((w->rc = cpat_chan_recv(w->jobs, &job, w->tok)) == 0)
		w->done += job;
	return NULL;
}

static int fail(const char *what, int rc)
{
	fprintf(stderr, "%s: %s\n", what, cpat_strerror(rc));
	return 1;
}

int main(void)
{
	struct worker w = {0};
	int rc;

	if ((rc = cpat_chan_create(&w.jobs, sizeof(int), 8)) != 0)
		return fail("chan_create", rc);
	if ((rc = cpat_token_create(&w.tok, NULL)) != 0)
		return fail("token_create", rc);

	pthread_t th;
	if (pthread_create(&th, NULL, worker_main, &w) != 0)
		return fail("pthread_create", -EAGAIN);
	for (int i = 1; i <= 10; i++)
		if ((rc = cpat_chan_send(w.jobs, &i, NULL)) != 0)
			return fail("send", rc);

	/* The worker may be busy or blocked in recv: either way it stops. */
	cpat_token_cancel(w.tok);
	pthread_join(th, NULL);
	printf("worker stopped: %s (processed sum %ld of 55)\n",
	       cpat_strerror(w.rc), w.done);
	if (w.rc != -ECANCELED)
		return fail("worker", w.rc);

	/* A receive with a 20 ms deadline on an empty channel times out. */
	struct cpat_chan *empty;
	if ((rc = cpat_chan_create(&empty, sizeof(int), 1)) != 0)
		return fail("chan_create", rc);
	int v;
	int64_t t0 = cpat_now_ns();
	rc = cpat_chan_recv_until(empty, &v, NULL, t0 + 20 * CPAT_MSEC);
	printf("recv with 20 ms deadline: %s after %.1f ms\n",
	       cpat_strerror(rc), (double)(cpat_now_ns() - t0) / 1e6);
	if (rc != -ETIMEDOUT)
		return fail("recv_until", rc);

	/* The same through a deadline token, as a context.WithTimeout. */
	struct cpat_token *req;
	if ((rc = cpat_token_create_deadline(
		     &req, NULL, cpat_now_ns() + 20 * CPAT_MSEC)) != 0)
		return fail("token_create_deadline", rc);
	rc = cpat_chan_recv(empty, &v, req);
	printf("recv under a 20 ms token: %s\n", cpat_strerror(rc));
	if (rc != -ETIMEDOUT || cpat_token_status(req) != -ETIMEDOUT)
		return fail("recv under deadline token", rc);

	cpat_token_unref(req);
	cpat_chan_destroy(empty);
	cpat_token_unref(w.tok);
	cpat_chan_destroy(w.jobs);
	return 0;
}
