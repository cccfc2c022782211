/*
 * Channel micro-benchmark in the line format of the Go and crossbeam ones:
 *
 *   cpattern <shape> cap=<N> threads=<p>x<c> msgs=<M> secs=<s> ns_per_msg=<x>
 *            mmsg_per_s=<y>
 *
 * one line per case on stdout, the median of -reps runs. Shapes: spsc, mpsc,
 * mpmc (as the peers: N int64 messages split evenly over the senders, each
 * receiver takes a fixed share, no close in the timed region), select_rx (P
 * senders each on its own channel, one receiver selecting over the P
 * channels) and select_both (P senders and C receivers, all selecting over P
 * channels). With -batch B the messages move with send_many/recv_many in
 * batches of B and the implementation is named cpattern-batchB.
 *
 * Every value 0..M-1 is sent exactly once; receivers accumulate count, sum
 * and sum of squares (wrapping uint64) and the program exits non-zero if any
 * differs. The clock starts when every thread is spawned and waiting.
 *
 * With -doors recv, send or both, every channel is given its door(s)
 * (cpat_chan_fd()) before the run, which nobody polls: what a door costs
 * the channel's operations. The implementation is then named
 * cpattern-doors-<which>.
 *
 * Uses only the public API.
 */
#define _POSIX_C_SOURCE 200809L
#include <cpattern.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"

enum shape { SPSC, MPSC, MPMC, SELECT_RX, SELECT_BOTH };

/* -doors: CPAT_SELECT_RECV | CPAT_SELECT_SEND bits, or 0. */
static int door_ops;

struct tally {
	uint64_t count, sum, sumsq;
	char pad[64 - 3 * sizeof(uint64_t)];
};

struct run {
	enum shape shape;
	struct cpat_chan **chans; /* nchans */
	size_t nchans;
	size_t msgs, producers, consumers, batch;
	pthread_barrier_t start;
	int64_t t_start; /* earliest worker start after the barrier */
	struct tally *tallies;
	int failed;
};

struct worker {
	struct run *run;
	size_t idx;
	pthread_t thread;
};

static void share(size_t total, size_t parts, size_t idx, size_t *n,
		  size_t *first)
{
	size_t base = total / parts, rem = total % parts;
	*n = base + (idx < rem);
	*first = idx * base + (idx < rem ? idx : rem);
}

static void fail(struct run *r, const char *what, int rc)
{
	fprintf(stderr, "cpattern: %s failed: %s\n", what, cpat_strerror(rc));
	__atomic_store_n(&r->failed, 1, __ATOMIC_RELAXED);
}

/*
 * The clock starts when the first worker leaves the start barrier (as the
 * Go peer reads its clock before releasing the workers). Reading it in the
 * main thread after the barrier would miss the transfer whenever the main
 * thread is descheduled there: on 2 cores a short case could then finish
 * before the clock starts.
 */
static void note_start(struct run *r)
{
	int64_t now = cpat_now_ns();
	int64_t cur = __atomic_load_n(&r->t_start, __ATOMIC_RELAXED);
	while (now < cur &&
	       !__atomic_compare_exchange_n(&r->t_start, &cur, now, 1,
					    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

static void *producer(void *arg)
{
	struct worker *w = arg;
	struct run *r = w->run;
	size_t n, first;
	share(r->msgs, r->producers, w->idx, &n, &first);
	pthread_barrier_wait(&r->start);
	note_start(r);
	int64_t v = (int64_t)first, end = (int64_t)(first + n);
	if (r->shape == SELECT_BOTH) {
		struct cpat_select_case cs[64];
		for (size_t i = 0; i < r->nchans; i++) {
			cs[i].ch = r->chans[i];
			cs[i].op = CPAT_SELECT_SEND;
			cs[i].elem = &v;
		}
		for (; v < end; v++) {
			int rc = cpat_chan_select(cs, r->nchans, NULL,
						  CPAT_FOREVER);
			if (rc < 0 || cs[rc].rc != 0) {
				fail(r, "select send", rc < 0 ? rc : cs[rc].rc);
				break;
			}
		}
		return NULL;
	}
	struct cpat_chan *ch =
		r->shape == SELECT_RX ? r->chans[w->idx] : r->chans[0];
	if (r->batch > 1) {
		int64_t buf[4096];
		while (v < end) {
			size_t k = (size_t)(end - v);
			if (k > r->batch)
				k = r->batch;
			for (size_t i = 0; i < k; i++)
				buf[i] = v + (int64_t)i;
			size_t sent;
			int rc = cpat_chan_send_many(ch, buf, k, &sent, NULL,
						     CPAT_FOREVER);
			if (rc != 0) {
				fail(r, "send_many", rc);
				break;
			}
			v += (int64_t)k;
		}
		return NULL;
	}
	for (; v < end; v++) {
		int rc = cpat_chan_send(ch, &v, NULL);
		if (rc != 0) {
			fail(r, "send", rc);
			break;
		}
	}
	return NULL;
}

static void *consumer(void *arg)
{
	struct worker *w = arg;
	struct run *r = w->run;
	size_t n, first;
	share(r->msgs, r->consumers, w->idx, &n, &first);
	uint64_t cnt = 0, sum = 0, sq = 0;
	pthread_barrier_wait(&r->start);
	note_start(r);
	if (r->shape == SELECT_RX || r->shape == SELECT_BOTH) {
		struct cpat_select_case cs[64];
		int64_t got;
		for (size_t i = 0; i < r->nchans; i++) {
			cs[i].ch = r->chans[i];
			cs[i].op = CPAT_SELECT_RECV;
			cs[i].elem = &got;
		}
		for (size_t i = 0; i < n; i++) {
			int rc = cpat_chan_select(cs, r->nchans, NULL,
						  CPAT_FOREVER);
			if (rc < 0 || cs[rc].rc != 0) {
				fail(r, "select recv", rc < 0 ? rc : cs[rc].rc);
				break;
			}
			uint64_t u = (uint64_t)got;
			cnt++;
			sum += u;
			sq += u * u;
		}
	} else if (r->batch > 1) {
		int64_t buf[4096];
		while (cnt < n) {
			size_t want = n - cnt, got;
			if (want > r->batch)
				want = r->batch;
			int rc = cpat_chan_recv_many(r->chans[0], buf, want,
						     &got, NULL, CPAT_FOREVER);
			if (rc != 0) {
				fail(r, "recv_many", rc);
				break;
			}
			for (size_t i = 0; i < got; i++) {
				uint64_t u = (uint64_t)buf[i];
				sum += u;
				sq += u * u;
			}
			cnt += got;
		}
	} else {
		for (size_t i = 0; i < n; i++) {
			int64_t got;
			int rc = cpat_chan_recv(r->chans[0], &got, NULL);
			if (rc != 0) {
				fail(r, "recv", rc);
				break;
			}
			uint64_t u = (uint64_t)got;
			cnt++;
			sum += u;
			sq += u * u;
		}
	}
	w->run->tallies[w->idx].count = cnt;
	w->run->tallies[w->idx].sum = sum;
	w->run->tallies[w->idx].sumsq = sq;
	return NULL;
}

/* Runs one case; returns elapsed seconds, or a negative value on failure. */
static double run_once(enum shape shape, size_t cap, size_t p, size_t c,
		       size_t msgs, size_t batch)
{
	struct run r;
	memset(&r, 0, sizeof r);
	r.shape = shape;
	r.msgs = msgs;
	r.producers = p;
	r.consumers = c;
	r.batch = batch;
	r.nchans = (shape == SELECT_RX || shape == SELECT_BOTH) ? p : 1;
	r.chans = calloc(r.nchans, sizeof *r.chans);
	r.tallies = calloc(c, sizeof *r.tallies);
	struct worker *ws = calloc(p + c, sizeof *ws);
	if (!r.chans || !r.tallies || !ws) {
		fprintf(stderr, "out of memory\n");
		exit(2);
	}
	for (size_t i = 0; i < r.nchans; i++) {
		int rc = cpat_chan_create(&r.chans[i], sizeof(int64_t), cap);
		if (rc != 0) {
			fprintf(stderr, "cpat_chan_create: %s\n",
				cpat_strerror(rc));
			exit(2);
		}
		for (int op = CPAT_SELECT_RECV; op <= CPAT_SELECT_SEND; op++) {
			int fd;
			if ((door_ops & op) &&
			    (rc = cpat_chan_fd(r.chans[i], op, &fd)) != 0) {
				fprintf(stderr, "cpat_chan_fd: %s\n",
					cpat_strerror(rc));
				exit(2);
			}
		}
	}
	pthread_barrier_init(&r.start, NULL, (unsigned)(p + c + 1));
	r.t_start = INT64_MAX;
	for (size_t i = 0; i < p + c; i++) {
		ws[i].run = &r;
		ws[i].idx = i < p ? i : i - p;
		if (pthread_create(&ws[i].thread, NULL,
				   i < p ? producer : consumer, &ws[i]) != 0) {
			fprintf(stderr, "pthread_create failed\n");
			exit(2);
		}
	}
	pthread_barrier_wait(&r.start);
	for (size_t i = 0; i < p + c; i++)
		pthread_join(ws[i].thread, NULL);
	double secs = (double)(cpat_now_ns() - r.t_start) / 1e9;

	uint64_t cnt = 0, sum = 0, sq = 0, wsum = 0, wsq = 0;
	for (size_t i = 0; i < c; i++) {
		cnt += r.tallies[i].count;
		sum += r.tallies[i].sum;
		sq += r.tallies[i].sumsq;
	}
	for (uint64_t v = 0; v < msgs; v++) {
		wsum += v;
		wsq += v * v;
	}
	int bad = r.failed;
	if (cnt != msgs || sum != wsum || sq != wsq) {
		fprintf(stderr,
			"exactly-once check FAILED: count=%llu/%zu "
			"sum=%llu/%llu sumsq=%llu/%llu\n",
			(unsigned long long)cnt, msgs, (unsigned long long)sum,
			(unsigned long long)wsum, (unsigned long long)sq,
			(unsigned long long)wsq);
		bad = 1;
	}
	for (size_t i = 0; i < r.nchans; i++) {
		if (cpat_chan_len(r.chans[i]) != 0) {
			fprintf(stderr,
				"channel not empty after run: len=%zu\n",
				cpat_chan_len(r.chans[i]));
			bad = 1;
		}
		cpat_chan_destroy(r.chans[i]);
	}
	pthread_barrier_destroy(&r.start);
	free(ws);
	free(r.tallies);
	free(r.chans);
	return bad ? -1.0 : secs;
}

static int parse_list(const char *s, size_t *out, size_t max)
{
	size_t n = 0;
	char *copy = strdup(s), *save = NULL;
	for (char *t = strtok_r(copy, ",", &save); t;
	     t = strtok_r(NULL, ",", &save)) {
		char *end;
		unsigned long long v = strtoull(t, &end, 10);
		if (*end || end == t || n == max) {
			free(copy);
			return -1;
		}
		out[n++] = (size_t)v;
	}
	free(copy);
	return (int)n;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: cpat-bench-chan [-shapes spsc,mpsc,mpmc,select_rx,"
		"select_both] [-caps 0,1,1024]\n"
		"       [-msgs N] [-p P] [-c C] [-reps R] [-batch B]\n"
		"       [-doors recv|send|both]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *shapes = "spsc,mpsc,mpmc", *caps_s = "0,1,1024";
	size_t msgs = 5000000, p = 4, c = 4, reps = 1, batch = 1;
	const char *doors = NULL;
	for (int i = 1; i < argc; i++) {
		const char *o = argv[i];
		while (*o == '-')
			o++;
		if (i + 1 >= argc)
			usage();
		const char *v = argv[++i];
		if (!strcmp(o, "shapes"))
			shapes = v;
		else if (!strcmp(o, "caps"))
			caps_s = v;
		else if (!strcmp(o, "msgs"))
			msgs = strtoull(v, NULL, 10);
		else if (!strcmp(o, "p"))
			p = strtoull(v, NULL, 10);
		else if (!strcmp(o, "c"))
			c = strtoull(v, NULL, 10);
		else if (!strcmp(o, "reps"))
			reps = strtoull(v, NULL, 10);
		else if (!strcmp(o, "batch"))
			batch = strtoull(v, NULL, 10);
		else if (!strcmp(o, "doors"))
			doors = v;
		else
			usage();
	}
	size_t caps[64];
	int ncaps = parse_list(caps_s, caps, 64);
	if (ncaps <= 0 || msgs == 0 || p == 0 || c == 0 || reps == 0 ||
	    batch == 0 || batch > 4096 || p > 64) {
		fprintf(stderr, "bad arguments\n");
		usage();
	}
	if (doors && !strcmp(doors, "recv"))
		door_ops = CPAT_SELECT_RECV;
	else if (doors && !strcmp(doors, "send"))
		door_ops = CPAT_SELECT_SEND;
	else if (doors && !strcmp(doors, "both"))
		door_ops = CPAT_SELECT_RECV | CPAT_SELECT_SEND;
	else if (doors)
		usage();
	char impl[48] = "cpattern";
	if (batch > 1)
		snprintf(impl, sizeof impl, "cpattern-batch%zu", batch);
	if (doors) {
		size_t l = strlen(impl);
		snprintf(impl + l, sizeof impl - l, "-doors-%s", doors);
	}
	fprintf(stderr, "# %s libcpattern %s reps=%zu\n", impl, cpat_version(),
		reps);

	int failed = 0;
	char *list = strdup(shapes), *save = NULL;
	for (char *s = strtok_r(list, ",", &save); s;
	     s = strtok_r(NULL, ",", &save)) {
		enum shape sh;
		size_t np, nc;
		if (!strcmp(s, "spsc")) {
			sh = SPSC, np = 1, nc = 1;
		} else if (!strcmp(s, "mpsc")) {
			sh = MPSC, np = p, nc = 1;
		} else if (!strcmp(s, "mpmc")) {
			sh = MPMC, np = p, nc = c;
		} else if (!strcmp(s, "select_rx")) {
			sh = SELECT_RX, np = p, nc = 1;
		} else if (!strcmp(s, "select_both")) {
			sh = SELECT_BOTH, np = p, nc = c;
		} else {
			fprintf(stderr, "unknown shape \"%s\"\n", s);
			exit(2);
		}
		for (int k = 0; k < ncaps; k++) {
			double times[reps];
			size_t nt = 0;
			for (size_t r = 0; r < reps; r++) {
				double d = run_once(sh, caps[k], np, nc, msgs,
						    batch);
				if (d < 0) {
					fprintf(stderr,
						"%s %s cap=%zu "
						"threads=%zux%zu: "
						"FAILED\n",
						impl, s, caps[k], np, nc);
					failed = 1;
					continue;
				}
				times[nt++] = d;
			}
			if (nt == 0)
				continue;
			qsort(times, nt, sizeof times[0], bu_cmp_double);
			double secs = times[nt / 2];
			printf("%s %s cap=%zu threads=%zux%zu msgs=%zu "
			       "secs=%.6f "
			       "ns_per_msg=%.2f mmsg_per_s=%.3f\n",
			       impl, s, caps[k], np, nc, msgs, secs,
			       secs * 1e9 / (double)msgs,
			       (double)msgs / secs / 1e6);
			fflush(stdout);
		}
	}
	free(list);
	if (failed) {
		fprintf(stderr, "FAILED: at least one case lost or duplicated "
				"messages\n");
		return 1;
	}
	return 0;
}
