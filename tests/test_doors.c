/*
 * Tests of doors: the descriptors of cpat_chan_fd() and cpat_token_fd()
 * that an event loop waits on.
 *
 * Waits for readiness are poll() calls bounded by GENEROUS: a poll that
 * times out is a lost wake-up and fails the test (a passing run never
 * comes near the bound). "Not readable" is checked with a poll of timeout
 * 0 only where no other thread can make the door ready.
 */
#include "harness.h"

#include <poll.h>

#ifndef GENEROUS_MS
#define GENEROUS_MS 30000
#endif

/* 1 if fd becomes readable within timeout_ms, 0 if not. */
static int readable_within(int fd, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int r;
	while ((r = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR)
		;
	if (r < 0)
		abort();
	return r > 0 && (p.revents & POLLIN) ? 1 : 0;
}

static int readable_now(int fd)
{
	return readable_within(fd, 0);
}

static struct cpat_chan *mk_chan(size_t elem_size, size_t cap)
{
	struct cpat_chan *ch = NULL;
	assert_int_equal(cpat_chan_create(&ch, elem_size, cap), 0);
	return ch;
}

static int chan_door(struct cpat_chan *ch, int op)
{
	int fd = -2;
	assert_int_equal(cpat_chan_fd(ch, op, &fd), 0);
	assert_true(fd >= 0);
	return fd;
}

/* ---- one element, one wake-up ------------------------------------------ */

struct sender {
	struct th_barrier *go;
	struct cpat_chan *ch;
	int value;
	int rc;
};

static void *send_one_main(void *arg)
{
	struct sender *s = arg;
	th_barrier_wait(s->go);
	s->rc = cpat_chan_send(s->ch, &s->value, NULL);
	return NULL;
}

TH_TEST_FN(recv_door_wakes_when_another_thread_sends)
{
	(void)state;
	for (size_t cap = 0; cap <= 16; cap += 16) {
		struct cpat_chan *ch = mk_chan(sizeof(int), cap);
		int fd = chan_door(ch, CPAT_SELECT_RECV);
		assert_int_equal(readable_now(fd), 0);

		struct th_barrier go;
		th_barrier_init(&go, 2);
		struct sender s = {&go, ch, 42, -1};
		pthread_t t;
		th_spawn(&t, send_one_main, &s);
		th_barrier_wait(&go);
		assert_int_equal(readable_within(fd, GENEROUS_MS), 1);
		int v = 0, rc;
		/* Readable: a buffered element, or (capacity 0) a sender
		 * waiting, whose record a try_recv claims. */
		while ((rc = cpat_chan_try_recv(ch, &v)) == -EAGAIN)
			assert_int_equal(readable_within(fd, GENEROUS_MS), 1);
		assert_int_equal(rc, 0);
		assert_int_equal(v, 42);
		th_join(t);
		th_barrier_destroy(&go);
		assert_int_equal(s.rc, 0);

		/* Found empty: the try_recv re-armed the door. */
		assert_int_equal(cpat_chan_try_recv(ch, &v), -EAGAIN);
		assert_int_equal(readable_now(fd), 0);
		cpat_chan_destroy(ch);
	}
}

/* ---- the documented loop against many producers ------------------------ */

#define NPROD 4

struct producer {
	struct th_barrier *go;
	struct cpat_chan *ch;
	uint64_t id;
	long n;
	int rc;
};

static void *producer_main(void *arg)
{
	struct producer *p = arg;
	th_barrier_wait(p->go);
	for (long i = 0; i < p->n; i++) {
		uint64_t v = p->id << 32 | (uint64_t)i;
		int rc = cpat_chan_send(p->ch, &v, NULL);
		if (rc != 0) {
			p->rc = rc;
			return NULL;
		}
	}
	p->rc = 0;
	return NULL;
}

/* Joins the producers, then closes the channel: the consumer's loop ends
 * on -EPIPE. */
struct closer {
	pthread_t *prod;
	int n;
	struct cpat_chan *ch;
};

static void *closer_main(void *arg)
{
	struct closer *c = arg;
	for (int i = 0; i < c->n; i++)
		th_join(c->prod[i]);
	cpat_chan_close(c->ch);
	return NULL;
}

/*
 * What a consumer saw. next[p] is the next sequence number expected of
 * producer p (the elements of one sender arrive in order, so exactly once
 * and in order is next[p] == i at each arrival).
 */
struct seen {
	long next[NPROD];
	long got;
	long bad;      /* out of order, duplicated or unknown */
	long polls;    /* wake-ups */
	long spurious; /* wake-ups after which nothing was received */
	long timeouts; /* polls that hit GENEROUS: a lost wake-up */
	int end;       /* the last try_recv's result: -EPIPE */
};

static void record(struct seen *s, uint64_t v)
{
	uint64_t p = v >> 32;
	long i = (long)(v & 0xffffffffu);
	if (p >= NPROD || s->next[p] != i) {
		s->bad++;
		return;
	}
	s->next[p]++;
	s->got++;
}

/* The loop of cpat_chan_fd()'s documentation. */
static void door_loop(struct cpat_chan *ch, int fd, struct seen *s)
{
	for (;;) {
		if (!readable_within(fd, GENEROUS_MS)) {
			s->timeouts++;
			s->end = -ETIMEDOUT;
			return;
		}
		s->polls++;
		long before = s->got;
		uint64_t v;
		int rc;
		while ((rc = cpat_chan_try_recv(ch, &v)) == 0)
			record(s, v);
		if (s->got == before && rc == -EAGAIN)
			s->spurious++;
		if (rc != -EAGAIN) {
			s->end = rc;
			return;
		}
	}
}

static void check_stream(const struct seen *s, long per_producer)
{
	assert_int_equal(s->timeouts, 0);
	assert_int_equal(s->end, -EPIPE);
	assert_int_equal(s->bad, 0);
	for (int p = 0; p < NPROD; p++)
		assert_int_equal(s->next[p], per_producer);
	/* Never spinning on a stale readiness: at most one spurious wake-up
	 * per element (a post that the loop overtook), and in fact far
	 * fewer. */
	assert_true(s->spurious <= s->got + 1);
}

TH_TEST_FN(recv_loop_gets_a_multi_producer_stream_exactly_once)
{
	(void)state;
	const size_t caps[] = {0, 1, 8, 1024};
	const long n = SIZE(20000, 2000);
	for (size_t k = 0; k < sizeof caps / sizeof caps[0]; k++) {
		long per = caps[k] == 0 ? n / 10 : n;
		struct cpat_chan *ch = mk_chan(sizeof(uint64_t), caps[k]);
		int fd = chan_door(ch, CPAT_SELECT_RECV);
		struct th_barrier go;
		th_barrier_init(&go, NPROD + 1);
		struct producer prod[NPROD];
		pthread_t pt[NPROD], ct;
		for (int i = 0; i < NPROD; i++) {
			prod[i] =
				(struct producer){&go, ch, (uint64_t)i, per, 1};
			th_spawn(&pt[i], producer_main, &prod[i]);
		}
		struct closer c = {pt, NPROD, ch};
		th_spawn(&ct, closer_main, &c);
		th_barrier_wait(&go);

		struct seen s = {0};
		door_loop(ch, fd, &s);
		if (s.timeouts)
			cpat_chan_close(ch); /* a lost wake-up: unblock them */
		th_join(ct);
		th_barrier_destroy(&go);
		fprintf(stderr,
			"# cap %zu: %ld elements, %ld wake-ups, %ld spurious\n",
			caps[k], s.got, s.polls, s.spurious);
		check_stream(&s, per);
		for (int i = 0; i < NPROD; i++)
			assert_int_equal(prod[i].rc, 0);
		/* Closed and drained: readable for good. */
		assert_int_equal(readable_now(fd), 1);
		cpat_chan_destroy(ch);
	}
}

/*
 * Two consumers on one channel: this thread in the door loop, another
 * blocked in cpat_chan_recv(). Each marks what it receives in its own
 * array; between them, every element exactly once, and each sees each
 * producer's elements in increasing order.
 */
struct split {
	struct cpat_chan *ch;
	unsigned char *hit; /* NPROD * per */
	long per;
	long last[NPROD];
	long got, bad;
	int end;
};

static void split_init(struct split *s, struct cpat_chan *ch, long per)
{
	memset(s, 0, sizeof *s);
	s->ch = ch;
	s->per = per;
	s->hit = calloc((size_t)(NPROD * per), 1);
	if (!s->hit)
		abort();
	for (int p = 0; p < NPROD; p++)
		s->last[p] = -1;
}

static void split_record(struct split *s, uint64_t v)
{
	uint64_t p = v >> 32;
	long i = (long)(v & 0xffffffffu);
	if (p >= NPROD || i >= s->per || i <= s->last[p]) {
		s->bad++;
		return;
	}
	s->last[p] = i;
	s->hit[p * (uint64_t)s->per + (uint64_t)i]++;
	s->got++;
}

static void *blocking_consumer_main(void *arg)
{
	struct split *b = arg;
	uint64_t v;
	int rc;
	while ((rc = cpat_chan_recv(b->ch, &v, NULL)) == 0)
		split_record(b, v);
	b->end = rc;
	return NULL;
}

TH_TEST_FN(door_loop_beside_a_blocking_receiver_loses_nothing)
{
	(void)state;
	const long per = SIZE(20000, 2000);
	struct cpat_chan *ch = mk_chan(sizeof(uint64_t), 4);
	int fd = chan_door(ch, CPAT_SELECT_RECV);
	struct split mine, theirs;
	split_init(&mine, ch, per);
	split_init(&theirs, ch, per);
	struct th_barrier go;
	th_barrier_init(&go, NPROD + 1);
	struct producer prod[NPROD];
	pthread_t pt[NPROD], ct, bt;
	th_spawn(&bt, blocking_consumer_main, &theirs);
	for (int i = 0; i < NPROD; i++) {
		prod[i] = (struct producer){&go, ch, (uint64_t)i, per, 1};
		th_spawn(&pt[i], producer_main, &prod[i]);
	}
	struct closer c = {pt, NPROD, ch};
	th_spawn(&ct, closer_main, &c);
	th_barrier_wait(&go);

	long timeouts = 0, spurious = 0;
	int rc = -EAGAIN;
	while (rc == -EAGAIN) {
		if (!readable_within(fd, GENEROUS_MS)) {
			timeouts++;
			break;
		}
		long before = mine.got;
		uint64_t v;
		while ((rc = cpat_chan_try_recv(ch, &v)) == 0)
			split_record(&mine, v);
		spurious += mine.got == before && rc == -EAGAIN;
	}
	mine.end = rc;
	if (timeouts)
		cpat_chan_close(ch); /* a lost wake-up: unblock them */
	th_join(ct);
	th_join(bt);
	th_barrier_destroy(&go);
	fprintf(stderr,
		"# door loop %ld, blocking receiver %ld, spurious wake-ups "
		"%ld\n",
		mine.got, theirs.got, spurious);
	assert_int_equal(timeouts, 0);
	assert_int_equal(mine.end, -EPIPE);
	assert_int_equal(theirs.end, -EPIPE);
	assert_int_equal(mine.bad, 0);
	assert_int_equal(theirs.bad, 0);
	for (int i = 0; i < NPROD; i++)
		assert_int_equal(prod[i].rc, 0);
	long missing = 0, twice = 0;
	for (long k = 0; k < NPROD * per; k++) {
		int n = mine.hit[k] + theirs.hit[k];
		missing += n == 0;
		twice += n > 1;
	}
	assert_int_equal(missing, 0);
	assert_int_equal(twice, 0);
	/* Spurious wake-ups are expected here (the blocking receiver often
	 * wins), but at most one per element. */
	assert_true(spurious <= NPROD * per + 1);
	free(mine.hit);
	free(theirs.hit);
	cpat_chan_destroy(ch);
}
/* ---- the send door ----------------------------------------------------- */

struct receiver {
	struct th_barrier *go;
	struct cpat_chan *ch;
	int value;
	int rc;
};

static void *recv_one_main(void *arg)
{
	struct receiver *r = arg;
	th_barrier_wait(r->go);
	r->rc = cpat_chan_recv(r->ch, &r->value, NULL);
	return NULL;
}

TH_TEST_FN(send_door_wakes_when_room_appears)
{
	(void)state;
	for (size_t cap = 0; cap <= 2; cap += 2) {
		struct cpat_chan *ch = mk_chan(sizeof(int), cap);
		int fd = chan_door(ch, CPAT_SELECT_SEND);
		int v = 7;
		for (size_t i = 0; i < cap; i++) {
			/* Room: readable. */
			assert_int_equal(readable_now(fd), 1);
			assert_int_equal(cpat_chan_try_send(ch, &v), 0);
		}
		/* Full (capacity 0: nobody receiving); the failed try_send
		 * re-arms the door. */
		assert_int_equal(cpat_chan_try_send(ch, &v), -EAGAIN);
		assert_int_equal(readable_now(fd), 0);

		struct th_barrier go;
		th_barrier_init(&go, 2);
		struct receiver r = {&go, ch, 0, -1};
		pthread_t t;
		th_spawn(&t, recv_one_main, &r);
		th_barrier_wait(&go);
		assert_int_equal(readable_within(fd, GENEROUS_MS), 1);
		int w = 99, rc;
		while ((rc = cpat_chan_try_send(ch, &w)) == -EAGAIN)
			assert_int_equal(readable_within(fd, GENEROUS_MS), 1);
		assert_int_equal(rc, 0);
		th_join(t);
		th_barrier_destroy(&go);
		assert_int_equal(r.rc, 0);
		assert_int_equal(r.value, cap ? 7 : 99);
		assert_int_equal(cpat_chan_try_send(ch, &w), -EAGAIN);
		assert_int_equal(readable_now(fd), 0);
		cpat_chan_destroy(ch);
	}
}

/* ---- close ------------------------------------------------------------- */

TH_TEST_FN(closed_channel_doors_are_readable_for_good)
{
	(void)state;
	for (size_t cap = 0; cap <= 4; cap += 4) {
		struct cpat_chan *ch = mk_chan(sizeof(int), cap);
		int rfd = chan_door(ch, CPAT_SELECT_RECV);
		int v = 1;
		for (size_t i = 0; i < cap / 2; i++)
			assert_int_equal(cpat_chan_try_send(ch, &v), 0);
		if (cap == 0)
			assert_int_equal(readable_now(rfd), 0);
		assert_int_equal(cpat_chan_close(ch), 0);
		/* Asked for after the close: readable at once. */
		int sfd = chan_door(ch, CPAT_SELECT_SEND);
		for (size_t i = 0; i < cap / 2; i++) {
			assert_int_equal(readable_now(rfd), 1);
			assert_int_equal(cpat_chan_try_recv(ch, &v), 0);
		}
		for (int round = 0; round < 3; round++) {
			assert_int_equal(readable_now(rfd), 1);
			assert_int_equal(cpat_chan_try_recv(ch, &v), -EPIPE);
			assert_int_equal(readable_now(sfd), 1);
			assert_int_equal(cpat_chan_try_send(ch, &v), -EPIPE);
		}
		cpat_chan_destroy(ch);
	}
}

/* A door asked for while the channel is open, then a close from another
 * thread wakes a loop that was waiting. */
static void *close_main(void *arg)
{
	struct sender *s = arg;
	th_barrier_wait(s->go);
	s->rc = cpat_chan_close(s->ch);
	return NULL;
}

TH_TEST_FN(close_from_another_thread_wakes_the_loop)
{
	(void)state;
	struct cpat_chan *ch = mk_chan(sizeof(int), 8);
	int fd = chan_door(ch, CPAT_SELECT_RECV);
	struct th_barrier go;
	th_barrier_init(&go, 2);
	struct sender s = {&go, ch, 0, -1};
	pthread_t t;
	th_spawn(&t, close_main, &s);
	th_barrier_wait(&go);
	struct seen seen = {0};
	door_loop(ch, fd, &seen);
	th_join(t);
	th_barrier_destroy(&go);
	assert_int_equal(s.rc, 0);
	assert_int_equal(seen.timeouts, 0);
	assert_int_equal(seen.end, -EPIPE);
	assert_int_equal(seen.got, 0);
	cpat_chan_destroy(ch);
}

/* ---- tokens ------------------------------------------------------------ */

static int token_door(struct cpat_token *tok)
{
	int fd = -2;
	assert_int_equal(cpat_token_fd(tok, &fd), 0);
	assert_true(fd >= 0);
	return fd;
}

struct canceller {
	struct th_barrier *go;
	struct cpat_token *tok;
	int rc;
};

static void *cancel_main(void *arg)
{
	struct canceller *c = arg;
	th_barrier_wait(c->go);
	c->rc = cpat_token_cancel(c->tok);
	return NULL;
}

TH_TEST_FN(token_door_opens_on_cancel_and_stays_open)
{
	(void)state;
	struct cpat_token *root, *child;
	assert_int_equal(cpat_token_create(&root, NULL), 0);
	assert_int_equal(cpat_token_create(&child, root), 0);
	int rfd = token_door(root), cfd = token_door(child);
	assert_int_not_equal(rfd, cfd);
	assert_int_equal(readable_now(rfd), 0);
	assert_int_equal(readable_now(cfd), 0);

	struct th_barrier go;
	th_barrier_init(&go, 2);
	struct canceller c = {&go, root, -1};
	pthread_t t;
	th_spawn(&t, cancel_main, &c);
	th_barrier_wait(&go);
	/* The child fires with its parent: its door opens too. */
	assert_int_equal(readable_within(cfd, GENEROUS_MS), 1);
	assert_int_equal(readable_within(rfd, GENEROUS_MS), 1);
	th_join(t);
	th_barrier_destroy(&go);
	assert_int_equal(c.rc, 1);
	assert_int_equal(cpat_token_status(child), -ECANCELED);
	/* Level-triggered and never drained. */
	for (int i = 0; i < 3; i++) {
		assert_int_equal(readable_now(rfd), 1);
		assert_int_equal(readable_now(cfd), 1);
	}
	/* Asked for after the fire (the same descriptor): readable. */
	assert_int_equal(token_door(root), rfd);

	struct cpat_token *late;
	assert_int_equal(cpat_token_create(&late, root), 0); /* born fired */
	assert_int_equal(readable_now(token_door(late)), 1);
	cpat_token_unref(late);
	cpat_token_unref(child);
	cpat_token_unref(root);
}

TH_TEST_FN(token_door_opens_at_the_deadline_not_before)
{
	(void)state;
	int64_t deadline = cpat_now_ns() + 50 * CPAT_MSEC;
	struct cpat_token *tok, *child;
	assert_int_equal(cpat_token_create_deadline(&tok, NULL, deadline), 0);
	assert_int_equal(cpat_token_create(&child, tok), 0);
	int fd = token_door(tok), cfd = token_door(child);
	/* Readable means fired, and a deadline token never fires early. */
	if (readable_now(fd))
		assert_true(cpat_now_ns() >= deadline);
	assert_int_equal(readable_within(fd, GENEROUS_MS), 1);
	assert_true(cpat_now_ns() >= deadline);
	assert_int_equal(readable_within(cfd, GENEROUS_MS), 1);
	assert_int_equal(cpat_token_status(tok), -ETIMEDOUT);
	assert_int_equal(cpat_token_status(child), -ETIMEDOUT);
	assert_int_equal(readable_now(fd), 1);
	assert_int_equal(readable_now(cfd), 1);
	cpat_token_unref(child);
	cpat_token_unref(tok);

	/* A deadline already past: the door is readable when made. */
	assert_int_equal(
		cpat_token_create_deadline(&tok, NULL, cpat_now_ns() - 1), 0);
	assert_int_equal(readable_now(token_door(tok)), 1);
	cpat_token_unref(tok);
}

/* ---- identity, arguments, lifetime ------------------------------------- */

TH_TEST_FN(asking_twice_gives_the_same_descriptor)
{
	(void)state;
	struct cpat_chan *ch = mk_chan(sizeof(int), 4);
	int r1 = chan_door(ch, CPAT_SELECT_RECV);
	int s1 = chan_door(ch, CPAT_SELECT_SEND);
	assert_int_not_equal(r1, s1);
	assert_int_equal(chan_door(ch, CPAT_SELECT_RECV), r1);
	assert_int_equal(chan_door(ch, CPAT_SELECT_SEND), s1);
	cpat_chan_destroy(ch);

	struct cpat_token *tok;
	assert_int_equal(cpat_token_create(&tok, NULL), 0);
	int t1 = token_door(tok);
	assert_int_equal(token_door(tok), t1);
	cpat_token_unref(tok);
}

/* Threads racing for the first door of a channel all get the same one. */
struct racer {
	struct th_barrier *go;
	struct cpat_chan *ch;
	struct cpat_token *tok;
	int op;
	int fd, rc, tfd, trc;
};

static void *race_main(void *arg)
{
	struct racer *r = arg;
	th_barrier_wait(r->go);
	r->rc = cpat_chan_fd(r->ch, r->op, &r->fd);
	r->trc = cpat_token_fd(r->tok, &r->tfd);
	return NULL;
}

TH_TEST_FN(concurrent_first_requests_make_one_door)
{
	(void)state;
	enum { N = 4 };
	long trials = SIZE(200, 20);
	for (long k = 0; k < trials; k++) {
		struct cpat_chan *ch = mk_chan(sizeof(int), k % 2 ? 0 : 4);
		struct cpat_token *tok;
		assert_int_equal(cpat_token_create(&tok, NULL), 0);
		struct th_barrier go;
		th_barrier_init(&go, N);
		struct racer r[N];
		pthread_t t[N];
		for (int i = 0; i < N; i++) {
			r[i] = (struct racer){
				&go,
				ch,
				tok,
				i % 2 ? CPAT_SELECT_SEND : CPAT_SELECT_RECV,
				-1,
				-1,
				-1,
				-1};
			th_spawn(&t[i], race_main, &r[i]);
		}
		for (int i = 0; i < N; i++)
			th_join(t[i]);
		th_barrier_destroy(&go);
		for (int i = 0; i < N; i++) {
			assert_int_equal(r[i].rc, 0);
			assert_int_equal(r[i].trc, 0);
			assert_int_equal(r[i].fd, r[i % 2].fd);
			assert_int_equal(r[i].tfd, r[0].tfd);
		}
		assert_int_not_equal(r[0].fd, r[1].fd);
		cpat_token_unref(tok);
		cpat_chan_destroy(ch);
	}
}

TH_TEST_FN(bad_arguments_are_einval)
{
	(void)state;
	struct cpat_chan *ch = mk_chan(sizeof(int), 1);
	int fd = 5;
	assert_int_equal(cpat_chan_fd(NULL, CPAT_SELECT_RECV, &fd), -EINVAL);
	assert_int_equal(fd, -1);
	assert_int_equal(cpat_chan_fd(ch, CPAT_SELECT_RECV, NULL), -EINVAL);
	fd = 5;
	assert_int_equal(cpat_chan_fd(ch, 0, &fd), -EINVAL);
	assert_int_equal(fd, -1);
	fd = 5;
	assert_int_equal(cpat_chan_fd(ch, 3, &fd), -EINVAL);
	assert_int_equal(fd, -1);
	cpat_chan_destroy(ch);

	struct cpat_token *tok;
	assert_int_equal(cpat_token_create(&tok, NULL), 0);
	fd = 5;
	assert_int_equal(cpat_token_fd(NULL, &fd), -EINVAL);
	assert_int_equal(fd, -1);
	assert_int_equal(cpat_token_fd(tok, NULL), -EINVAL);
	cpat_token_unref(tok);
}

/* Non-blocking and close-on-exec, as documented. */
static void check_flags(int fd)
{
	int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
	assert_true(fl >= 0 && fdfl >= 0);
	assert_true(fl & O_NONBLOCK);
	assert_true(fdfl & FD_CLOEXEC);
}

/* Whether fd is open in this process. */
static int is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0 || errno != EBADF;
}

/*
 * Destroy (and the last unref) closes the doors. A closed number may be
 * reused by the next descriptor this process opens, so the check runs
 * right after the close with no thread of this test alive, and the
 * library's own threads (the timer thread, here) open none.
 */
TH_TEST_FN(destroy_and_last_unref_close_the_doors)
{
	(void)state;
	struct cpat_chan *ch = mk_chan(sizeof(int), 4);
	int rfd = chan_door(ch, CPAT_SELECT_RECV);
	int sfd = chan_door(ch, CPAT_SELECT_SEND);
	check_flags(rfd);
	check_flags(sfd);
	struct cpat_token *tok, *ref;
	assert_int_equal(cpat_token_create_deadline(&tok, NULL,
						    cpat_now_ns() + CPAT_SEC),
			 0);
	int tfd = token_door(tok);
	check_flags(tfd);

	cpat_chan_destroy(ch);
	assert_false(is_open(rfd));
	assert_false(is_open(sfd));

	/* Not at the owner's unref while someone else holds a reference. */
	ref = cpat_token_ref(tok);
	cpat_token_unref(tok);
	assert_true(is_open(tfd));
	cpat_token_unref(ref);
	assert_false(is_open(tfd));

	/* A channel whose door was never asked for opens nothing. */
	struct cpat_chan *plain = mk_chan(sizeof(int), 4);
	cpat_chan_destroy(plain);
}

/* A door on a channel that select and batches use: the batch paths post
 * and re-arm it like the single ones. */
TH_TEST_FN(batches_and_select_post_and_rearm_the_doors)
{
	(void)state;
	struct cpat_chan *ch = mk_chan(sizeof(int), 8);
	int rfd = chan_door(ch, CPAT_SELECT_RECV);
	int sfd = chan_door(ch, CPAT_SELECT_SEND);
	int in[8] = {1, 2, 3, 4, 5, 6, 7, 8}, out[8];
	size_t k = 0;
	assert_int_equal(readable_now(rfd), 0);
	assert_int_equal(readable_now(sfd), 1);
	assert_int_equal(cpat_chan_send_many(ch, in, 8, &k, NULL, 0), 0);
	assert_int_equal(k, 8);
	assert_int_equal(readable_now(rfd), 1);
	/* Full: a failed select send re-arms the send door. */
	struct cpat_select_case sc = {ch, CPAT_SELECT_SEND, &in[0], 0};
	assert_int_equal(cpat_chan_select(&sc, 1, NULL, 0), -ETIMEDOUT);
	assert_int_equal(readable_now(sfd), 0);
	assert_int_equal(cpat_chan_recv_many(ch, out, 8, &k, NULL, 0), 0);
	assert_int_equal(k, 8);
	assert_int_equal(readable_now(sfd), 1);
	/* Empty: a receive that times out re-arms the receive door. */
	assert_int_equal(cpat_chan_recv_many(ch, out, 8, &k, NULL, 0),
			 -ETIMEDOUT);
	assert_int_equal(readable_now(rfd), 0);
	struct cpat_select_case rc = {ch, CPAT_SELECT_RECV, &out[0], 0};
	assert_int_equal(cpat_chan_try_send(ch, &in[0]), 0);
	assert_int_equal(readable_now(rfd), 1);
	assert_int_equal(cpat_chan_select(&rc, 1, NULL, 0), 0);
	assert_int_equal(cpat_chan_select(&rc, 1, NULL, 0), -ETIMEDOUT);
	assert_int_equal(readable_now(rfd), 0);
	cpat_chan_destroy(ch);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		TH_TEST(recv_door_wakes_when_another_thread_sends),
		TH_TEST(recv_loop_gets_a_multi_producer_stream_exactly_once),
		TH_TEST(door_loop_beside_a_blocking_receiver_loses_nothing),
		TH_TEST(send_door_wakes_when_room_appears),
		TH_TEST(closed_channel_doors_are_readable_for_good),
		TH_TEST(close_from_another_thread_wakes_the_loop),
		TH_TEST(token_door_opens_on_cancel_and_stays_open),
		TH_TEST(token_door_opens_at_the_deadline_not_before),
		TH_TEST(asking_twice_gives_the_same_descriptor),
		TH_TEST(concurrent_first_requests_make_one_door),
		TH_TEST(bad_arguments_are_einval),
		TH_TEST(destroy_and_last_unref_close_the_doors),
		TH_TEST(batches_and_select_post_and_rearm_the_doors),
	};
	return TH_RUN("doors", tests);
}
