/*
 * The Go guide's pitfalls, written correctly with the library.
 *
 * 1. Leaked goroutine: a worker blocked on a channel that nobody will ever
 *    serve. Every blocking call takes a token, so cancelling it releases
 *    the worker, which can then be joined: nothing leaks.
 * 2. Deadlock: a send on an unbuffered channel with no receiver blocks
 *    forever. A send with a deadline reports -ETIMEDOUT instead, and the
 *    element stays with the caller.
 * 3. Data race on a shared counter: 4 threads incrementing a plain int
 *    lose updates (and it is undefined behaviour). An atomic counter
 *    gives the exact total.
 */
#include <cpattern.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#define THREADS 4
#define INCREMENTS 100000

struct leaker {
	struct cpat_chan *ch; /* nobody ever sends on it */
	struct cpat_token *tok;
	int rc;
};

static void *wait_forever(void *arg)
{
	struct leaker *l = arg;
	int v;
	/* Without a token this would block for the life of the process. */
	l->rc = cpat_chan_recv(l->ch, &v, l->tok);
	return NULL;
}

static atomic_long counter;

static void *count(void *arg)
{
	for (int i = 0; i < INCREMENTS; i++)
		atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed);
	return NULL;
}

static int fail(const char *what, int rc)
{
	fprintf(stderr, "%s: %s\n", what, cpat_strerror(rc));
	return 1;
}

int main(void)
{
	int rc;

	/* 1. The leak, fixed by cancellation. */
	struct leaker l = {0};
	pthread_t th;
	if ((rc = cpat_chan_create(&l.ch, sizeof(int), 0)) != 0)
		return fail("chan_create", rc);
	if ((rc = cpat_token_create(&l.tok, NULL)) != 0)
		return fail("token_create", rc);
	if (pthread_create(&th, NULL, wait_forever, &l) != 0)
		return fail("pthread_create", -EAGAIN);
	if ((rc = cpat_token_cancel(l.tok)) < 0)
		return fail("token_cancel", rc);
	pthread_join(th, NULL); /* returns: the worker was released */
	printf("1. leak: worker blocked on a channel nobody serves was "
	       "released by its token: %s\n",
	       cpat_strerror(l.rc));
	if (l.rc != -ECANCELED)
		return fail("leak", l.rc);
	cpat_token_unref(l.tok);

	/* 2. The deadlock, turned into a timeout. l.ch is unbuffered and
	 * has no receiver. */
	int v = 1;
	int64_t t0 = cpat_now_ns();
	rc = cpat_chan_send_until(l.ch, &v, NULL, t0 + 20 * CPAT_MSEC);
	printf("2. deadlock: unbuffered send with no receiver, 20 ms "
	       "deadline: %s after %.0f ms (a buffer of 1 would take it: ",
	       cpat_strerror(rc), (double)(cpat_now_ns() - t0) / 1e6);
	if (rc != -ETIMEDOUT)
		return fail("send_until", rc);
	struct cpat_chan *buffered;
	if ((rc = cpat_chan_create(&buffered, sizeof(int), 1)) != 0)
		return fail("chan_create", rc);
	rc = cpat_chan_send_until(buffered, &v, NULL, cpat_now_ns());
	printf("%s)\n", cpat_strerror(rc));
	if (rc != 0)
		return fail("buffered send", rc);
	cpat_chan_destroy(buffered);
	cpat_chan_destroy(l.ch);

	/* 3. The race, fixed with an atomic counter. (The racy version is
	 * not shown running: it is undefined behaviour, and a sanitizer
	 * build would rightly reject it.) */
	pthread_t t[THREADS];
	for (int i = 0; i < THREADS; i++)
		if (pthread_create(&t[i], NULL, count, NULL) != 0)
			return fail("pthread_create", -EAGAIN);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	long total = atomic_load(&counter);
	printf("3. race: %d threads x %d atomic increments = %ld (expected "
	       "%d)\n",
	       THREADS, INCREMENTS, total, THREADS * INCREMENTS);
	return total == (long)THREADS * INCREMENTS ? 0 : 1;
}
