/*
 * Round-trip latency of two threads exchanging one message at a time over
 * two channels, beside the same exchange over a mutex and a condition
 * variable in the same run. Run it pinned to one CPU beside a busy loop to
 * see a starved core (scripts/flaky.sh's "pinned" mode):
 *
 *   taskset -c 0 sh -c 'while :; do :; done' &
 *   taskset -c 0 cpat-bench-pingpong 2000
 *   kill %1
 *
 * usage: cpat-bench-pingpong [round trips (default 20000)] [capacities
 *        (comma-separated, default 0,1,64)]
 * Output, one line each: cpattern pingpong cap=<c> roundtrips=<n>
 *        us_per_roundtrip=<x>, then condvar pingpong roundtrips=<n>
 *        us_per_roundtrip=<x>. Exit status 1 if a value came back wrong.
 */
#include <cpattern.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long n_trips;
static struct cpat_chan *ping, *pong;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long turn; /* the condvar exchange: odd = the peer's turn */

static void *chan_peer(void *arg)
{
	(void)arg;
	for (long i = 0; i < n_trips; i++) {
		long v;
		if (cpat_chan_recv(ping, &v, NULL) != 0)
			return NULL;
		v++;
		if (cpat_chan_send(pong, &v, NULL) != 0)
			return NULL;
	}
	return NULL;
}

static void *cv_peer(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&mu);
	for (long i = 0; i < n_trips; i++) {
		while (turn != 2 * i + 1)
			pthread_cond_wait(&cv, &mu);
		turn++;
		pthread_cond_signal(&cv);
	}
	pthread_mutex_unlock(&mu);
	return NULL;
}

static int run_chan(size_t cap)
{
	if (cpat_chan_create(&ping, sizeof(long), cap) != 0 ||
	    cpat_chan_create(&pong, sizeof(long), cap) != 0)
		return 1;
	pthread_t t;
	if (pthread_create(&t, NULL, chan_peer, NULL) != 0)
		return 1;
	int bad = 0;
	int64_t t0 = cpat_now_ns();
	for (long i = 0; i < n_trips; i++) {
		long v = i, w = -1;
		if (cpat_chan_send(ping, &v, NULL) != 0 ||
		    cpat_chan_recv(pong, &w, NULL) != 0 || w != i + 1) {
			bad = 1;
			break;
		}
	}
	int64_t dt = cpat_now_ns() - t0;
	if (bad) {
		cpat_chan_close(ping);
		cpat_chan_close(pong);
	}
	pthread_join(t, NULL);
	cpat_chan_destroy(ping);
	cpat_chan_destroy(pong);
	printf("cpattern pingpong cap=%zu roundtrips=%ld "
	       "us_per_roundtrip=%.2f\n",
	       cap, n_trips, (double)dt / 1e3 / (double)n_trips);
	return bad;
}

static void run_condvar(void)
{
	turn = 0;
	pthread_t t;
	if (pthread_create(&t, NULL, cv_peer, NULL) != 0)
		exit(1);
	int64_t t0 = cpat_now_ns();
	pthread_mutex_lock(&mu);
	for (long i = 0; i < n_trips; i++) {
		turn++;
		pthread_cond_signal(&cv);
		while (turn != 2 * i + 2)
			pthread_cond_wait(&cv, &mu);
	}
	pthread_mutex_unlock(&mu);
	int64_t dt = cpat_now_ns() - t0;
	pthread_join(t, NULL);
	printf("condvar pingpong roundtrips=%ld us_per_roundtrip=%.2f\n",
	       n_trips, (double)dt / 1e3 / (double)n_trips);
}

int main(int argc, char **argv)
{
	n_trips = argc > 1 ? strtol(argv[1], NULL, 10) : 20000;
	const char *caps = argc > 2 ? argv[2] : "0,1,64";
	if (n_trips <= 0) {
		fprintf(stderr, "usage: %s [round trips > 0] [caps]\n",
			argv[0]);
		return 2;
	}
	int bad = 0;
	char buf[256];
	snprintf(buf, sizeof buf, "%s", caps);
	for (char *save = NULL, *c = strtok_r(buf, ",", &save); c;
	     c = strtok_r(NULL, ",", &save))
		bad |= run_chan((size_t)strtoul(c, NULL, 10));
	run_condvar();
	return bad;
}
