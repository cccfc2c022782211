/*
 * Conformance and stress tests of cpattern/chan.h.
 *
 * Every test asserts a documented behaviour of the header: the return code of
 * each call, what moved through the channel and what did not. Worker threads
 * record what they saw in their own structs; the main thread asserts after
 * joining them. Threads wait for each other on barriers, on atomics, or on
 * the internal hook cpat__chan_nblocked() (how many threads are blocked in a
 * direction); nothing sleeps to synchronise. Stress sizes are small by
 * default and multiplied by CPAT_TEST_SCALE; the random seed is printed and
 * read back from CPAT_TEST_SEED.
 *
 * The allocator tests run first, before any deadline token has started the
 * library's timer thread, so that nothing else allocates through the
 * counting hook while they count.
 */
#include "harness.h"
#include "testhooks.h"

#include <limits.h>
#include <sched.h>

/* The test hook of chan.c (declared in internal.h too; repeated here so the
 * file states what it relies on). */
size_t cpat__chan_nblocked(const struct cpat_chan *ch, int op);

/* ---- helpers ------------------------------------------------------------ */

/* Waits (without sleeping) until at least @p k threads are blocked on @p ch
 * in direction @p op. The watchdog turns a never-reached count into a
 * named failure. */
static void wait_blocked(const struct cpat_chan *ch, int op, size_t k)
{
	while (cpat__chan_nblocked(ch, op) < k)
		th_relax();
}

/* Like wait_blocked(), but gives up after @p spins yields: used where the
 * test is correct whether or not the thread has blocked yet (a select, which
 * the hook may or may not count), to make the interesting interleaving
 * likely without depending on it. */
static void wait_blocked_hint(const struct cpat_chan *ch, int op, size_t k,
			      long spins)
{
	for (long i = 0; i < spins && cpat__chan_nblocked(ch, op) < k; i++)
		th_relax();
}

static struct cpat_chan *mk(size_t elem_size, size_t cap)
{
	struct cpat_chan *ch = NULL;
	int rc = cpat_chan_create(&ch, elem_size, cap);
	if (rc != 0 || ch == NULL) {
		fprintf(stderr, "cpat_chan_create(%zu, %zu) = %d\n", elem_size,
			cap, rc);
		abort();
	}
	return ch;
}

static struct cpat_token *mktok(struct cpat_token *parent)
{
	struct cpat_token *t = NULL;
	if (cpat_token_create(&t, parent) != 0 || t == NULL)
		abort();
	return t;
}

static uint8_t pattern_byte(uint64_t tag, size_t j)
{
	return (uint8_t)(tag * 131u + j * 7u + (j >> 8) + 1u);
}

static void fill(void *p, size_t n, uint64_t tag)
{
	uint8_t *b = p;
	for (size_t j = 0; j < n; j++)
		b[j] = pattern_byte(tag, j);
}

static int intact(const void *p, size_t n, uint64_t tag)
{
	const uint8_t *b = p;
	for (size_t j = 0; j < n; j++)
		if (b[j] != pattern_byte(tag, j))
			return 0;
	return 1;
}

/*
 * One thread running one channel operation on uint64_t elements (or a
 * select), recording its return code and result.
 */
enum op_kind {
	OP_SEND,
	OP_RECV,
	OP_SEND_UNTIL,
	OP_RECV_UNTIL,
	OP_SEND_MANY,
	OP_RECV_MANY,
	OP_SELECT,
};

struct op_thread {
	pthread_t t;
	struct th_barrier *start; /* NULL: start at once */
	struct cpat_chan *ch;
	int kind;
	struct cpat_token *tok;
	int64_t deadline;
	uint64_t val; /* sent */
	uint64_t got; /* received */
	uint64_t *many;
	size_t n, count;
	struct cpat_select_case *cases;
	size_t ncases;
	int rc;
	_Atomic int done;
	int64_t t_end;
};

static void *op_main(void *arg)
{
	struct op_thread *o = arg;
	if (o->start)
		th_barrier_wait(o->start);
	switch (o->kind) {
	case OP_SEND:
		o->rc = cpat_chan_send(o->ch, &o->val, o->tok);
		break;
	case OP_RECV:
		o->rc = cpat_chan_recv(o->ch, &o->got, o->tok);
		break;
	case OP_SEND_UNTIL:
		o->rc = cpat_chan_send_until(o->ch, &o->val, o->tok,
					     o->deadline);
		break;
	case OP_RECV_UNTIL:
		o->rc = cpat_chan_recv_until(o->ch, &o->got, o->tok,
					     o->deadline);
		break;
	case OP_SEND_MANY:
		o->rc = cpat_chan_send_many(o->ch, o->many, o->n, &o->count,
					    o->tok, o->deadline);
		break;
	case OP_RECV_MANY:
		o->rc = cpat_chan_recv_many(o->ch, o->many, o->n, &o->count,
					    o->tok, o->deadline);
		break;
	case OP_SELECT:
		o->rc = cpat_chan_select(o->cases, o->ncases, o->tok,
					 o->deadline);
		break;
	}
	o->t_end = cpat_now_ns();
	atomic_store(&o->done, 1);
	return NULL;
}

static void op_init(struct op_thread *o, struct cpat_chan *ch, int kind,
		    struct cpat_token *tok, uint64_t val)
{
	memset(o, 0, sizeof *o);
	o->ch = ch;
	o->kind = kind;
	o->tok = tok;
	o->val = val;
	o->got = UINT64_MAX;
	o->deadline = CPAT_FOREVER;
	o->rc = INT_MIN;
}

static void op_start(struct op_thread *o)
{
	atomic_store(&o->done, 0);
	th_spawn(&o->t, op_main, o);
}

/* Receives everything left without blocking; returns how many, storing up
 * to @p max values. The final code is stored in *last_rc. */
static size_t drain(struct cpat_chan *ch, uint64_t *vals, size_t max,
		    int *last_rc)
{
	size_t n = 0;
	uint64_t v;
	int rc;
	while ((rc = cpat_chan_try_recv(ch, &v)) == 0) {
		if (n < max)
			vals[n] = v;
		n++;
	}
	if (last_rc)
		*last_rc = rc;
	return n;
}

/* ---- allocation (first: nothing else is allocating yet) ---------------- */

struct create_ctx {
	int use_opts;
	struct cpat_chan *ch;
};

static int create_24x100(void *arg)
{
	struct create_ctx *c = arg;
	struct cpat_chan_opts o;
	cpat_chan_opts_init(&o);
	o.elem_size = 24;
	o.capacity = 100;
	c->ch = (struct cpat_chan *)&c->ch;
	return c->use_opts ? cpat_chan_create_opts(&c->ch, &o)
			   : cpat_chan_create(&c->ch, 24, 100);
}

static void check_24x100(void *arg, int rc)
{
	struct create_ctx *c = arg;
	if (rc != 0) {
		assert_null(c->ch);
		return;
	}
	assert_non_null(c->ch);
	assert_int_equal(cpat_chan_cap(c->ch), 100);
	cpat_chan_destroy(c->ch);
}

TH_TEST_FN(chan_create_enomem_leaks_nothing)
{
	(void)state;
	th_alloc_install();
	long base = th_alloc_live();
	/* Fail the k-th allocation of create for k = 1, 2, ... until create
	 * needs fewer than k allocations and succeeds. */
	for (int use_opts = 0; use_opts < 2; use_opts++) {
		struct create_ctx c = {.use_opts = use_opts};
		struct th_alloc_sweep sw = {
			.create = create_24x100,
			.check = check_24x100,
			.ctx = &c,
			.max_k = 64,
			.what = use_opts ? "chan_create_opts" : "chan_create",
		};
		th_alloc_sweep(&sw);
	}
	/* Persistent failure, for every capacity shape. */
	size_t caps[] = {0, 1, 1024};
	for (size_t i = 0; i < 3; i++) {
		struct cpat_chan *ch = (struct cpat_chan *)&ch;
		th_alloc_fail_at(1, 1);
		int rc = cpat_chan_create(&ch, 8, caps[i]);
		th_alloc_fail_at(0, 0);
		assert_int_equal(rc, -ENOMEM);
		assert_null(ch);
		assert_int_equal(th_alloc_live(), base);
	}
	th_alloc_uninstall();
}

struct pingpong {
	pthread_t t;
	struct cpat_chan *to, *from;
	struct cpat_token *tok;
	long rounds;
	long bad;
};

/* Echoes every value from @p to back on @p from, alternating recv/select
 * and send/select, all blocking with a token. */
static void *pingpong_main(void *arg)
{
	struct pingpong *p = arg;
	for (long i = 0; i < p->rounds; i++) {
		uint64_t v = 0;
		int rc;
		if (i & 1) {
			struct cpat_select_case c = {p->to, CPAT_SELECT_RECV,
						     &v, 1};
			rc = cpat_chan_select(&c, 1, p->tok, CPAT_FOREVER);
			if (rc != 0 || c.rc != 0)
				p->bad++;
		} else {
			rc = cpat_chan_recv(p->to, &v, p->tok);
			if (rc != 0)
				p->bad++;
		}
		if (v != (uint64_t)i)
			p->bad++;
		if (i & 2) {
			struct cpat_select_case c = {p->from, CPAT_SELECT_SEND,
						     &v, 1};
			rc = cpat_chan_select(&c, 1, p->tok, CPAT_FOREVER);
			if (rc != 0 || c.rc != 0)
				p->bad++;
		} else if (cpat_chan_send(p->from, &v, p->tok) != 0) {
			p->bad++;
		}
	}
	return NULL;
}

TH_TEST_FN(chan_no_allocation_per_operation)
{
	(void)state;
	th_alloc_install();
	struct cpat_chan *buf = mk(sizeof(uint64_t), 16);
	struct cpat_chan *rv_to = mk(sizeof(uint64_t), 0);
	struct cpat_chan *rv_from = mk(sizeof(uint64_t), 0);
	struct cpat_chan *sel[64];
	for (int i = 0; i < 64; i++)
		sel[i] = mk(sizeof(uint64_t), (size_t)(i % 3));
	struct cpat_token *tok = mktok(NULL);
	struct pingpong pp = {
		.to = rv_to, .from = rv_from, .tok = tok, .rounds = 2000};
	long bad = 0;

	long before = th_alloc_count();
	th_spawn(&pp.t, pingpong_main, &pp);
	/* 6,000+ single-thread operations on the buffered channel. */
	for (long i = 0; i < 1000; i++) {
		uint64_t v = (uint64_t)i, w = 0, many[4] = {1, 2, 3, 4}, got[4];
		size_t cnt = 0;
		bad += cpat_chan_send(buf, &v, tok) != 0;
		bad += cpat_chan_try_send(buf, &v) != 0;
		bad += cpat_chan_send_until(buf, &v, tok,
					    cpat_now_ns() + CPAT_SEC) != 0;
		bad += cpat_chan_recv(buf, &w, tok) != 0;
		bad += cpat_chan_try_recv(buf, &w) != 0;
		bad += cpat_chan_recv_until(buf, &w, tok, 0) != 0;
		bad += cpat_chan_try_recv(buf, &w) != -EAGAIN;
		bad += cpat_chan_recv_until(buf, &w, tok, 0) != -ETIMEDOUT;
		bad += cpat_chan_send_many(buf, many, 4, &cnt, tok,
					   CPAT_FOREVER) != 0;
		bad += cpat_chan_recv_many(buf, got, 4, &cnt, tok,
					   CPAT_FOREVER) != 0;
		bad += cnt != 4;
		struct cpat_select_case c[2] = {
			{buf, CPAT_SELECT_SEND, &v, 1},
			{sel[i % 64], CPAT_SELECT_RECV, &w, 1},
		};
		bad += cpat_chan_select(c, 2, tok, CPAT_FOREVER) != 0;
		bad += cpat_chan_try_recv(buf, &w) != 0;
		/* A 64-case select that cannot complete (all empty). */
		struct cpat_select_case big[64];
		for (int j = 0; j < 64; j++)
			big[j] = (struct cpat_select_case){
				sel[j], CPAT_SELECT_RECV, &w, 1};
		bad += cpat_chan_select(big, 64, NULL, 0) != -ETIMEDOUT;
		bad += cpat_chan_len(buf) != 0;
	}
	/* 4,000 blocking rendezvous operations with a token, on both sides. */
	for (long i = 0; i < pp.rounds; i++) {
		uint64_t v = (uint64_t)i, w = UINT64_MAX;
		bad += cpat_chan_send(rv_to, &v, tok) != 0;
		bad += cpat_chan_recv(rv_from, &w, tok) != 0;
		bad += w != (uint64_t)i;
	}
	th_join(pp.t);
	long after = th_alloc_count();

	assert_int_equal(bad, 0);
	assert_int_equal(pp.bad, 0);
	assert_int_equal(after - before, 0);
	cpat_token_unref(tok);
	cpat_chan_destroy(buf);
	cpat_chan_destroy(rv_to);
	cpat_chan_destroy(rv_from);
	for (int i = 0; i < 64; i++)
		cpat_chan_destroy(sel[i]);
	th_alloc_uninstall();
}

/* ---- arguments and queries ---------------------------------------------- */

TH_TEST_FN(chan_create_bad_arguments_einval)
{
	(void)state;
	struct cpat_chan *ch = (struct cpat_chan *)&ch;
	assert_int_equal(cpat_chan_create(NULL, 8, 4), -EINVAL);
	assert_int_equal(cpat_chan_create(&ch, 0, 4), -EINVAL);
	assert_null(ch);
	ch = (struct cpat_chan *)&ch;
	assert_int_equal(cpat_chan_create(&ch, 0, 0), -EINVAL);
	assert_null(ch);
	ch = (struct cpat_chan *)&ch;
	assert_int_equal(cpat_chan_create(&ch, SIZE_MAX / 2, 4), -EINVAL);
	assert_null(ch);
	ch = (struct cpat_chan *)&ch;
	assert_int_equal(cpat_chan_create(&ch, 4, SIZE_MAX / 2), -EINVAL);
	assert_null(ch);
	ch = (struct cpat_chan *)&ch;
	assert_int_equal(cpat_chan_create(&ch, SIZE_MAX, SIZE_MAX), -EINVAL);
	assert_null(ch);
	/* Each size allowed alone, but their product overflows. */
	ch = (struct cpat_chan *)&ch;
	assert_int_equal(
		cpat_chan_create(&ch, (size_t)1 << 40, (size_t)1 << 30),
		-EINVAL);
	assert_null(ch);
	ch = (struct cpat_chan *)&ch;
	assert_int_equal(cpat_chan_create(&ch, 8, SIZE_MAX / 8), -EINVAL);
	assert_null(ch);

	struct cpat_chan_opts o;
	memset(&o, 0xff, sizeof o);
	cpat_chan_opts_init(&o);
	assert_int_equal(o.elem_size, 0);
	assert_int_equal(o.capacity, 0);
	assert_null(o.drop);
	cpat_chan_opts_init(NULL);
	ch = (struct cpat_chan *)&ch;
	assert_int_equal(cpat_chan_create_opts(&ch, NULL), -EINVAL);
	assert_null(ch);
	assert_int_equal(cpat_chan_create_opts(NULL, &o), -EINVAL);
	ch = (struct cpat_chan *)&ch;
	assert_int_equal(cpat_chan_create_opts(&ch, &o), -EINVAL); /* size 0 */
	assert_null(ch);
	o.elem_size = SIZE_MAX / 2;
	o.capacity = 4;
	ch = (struct cpat_chan *)&ch;
	assert_int_equal(cpat_chan_create_opts(&ch, &o), -EINVAL);
	assert_null(ch);
	o.elem_size = 3;
	o.capacity = 5;
	assert_int_equal(cpat_chan_create_opts(&ch, &o), 0);
	assert_int_equal(cpat_chan_elem_size(ch), 3);
	assert_int_equal(cpat_chan_cap(ch), 5);
	cpat_chan_destroy(ch);
	cpat_chan_destroy(NULL);
}

TH_TEST_FN(chan_operations_bad_arguments_einval)
{
	(void)state;
	struct cpat_chan *ch = mk(sizeof(uint64_t), 4);
	uint64_t v = 7, many[4] = {0};
	size_t cnt = 99;

	assert_int_equal(cpat_chan_send(NULL, &v, NULL), -EINVAL);
	assert_int_equal(cpat_chan_send(ch, NULL, NULL), -EINVAL);
	assert_int_equal(cpat_chan_send_until(NULL, &v, NULL, 0), -EINVAL);
	assert_int_equal(cpat_chan_send_until(ch, NULL, NULL, 0), -EINVAL);
	assert_int_equal(cpat_chan_send_until(ch, &v, NULL, -2), -EINVAL);
	assert_int_equal(cpat_chan_send_until(ch, &v, NULL, INT64_MIN),
			 -EINVAL);
	assert_int_equal(cpat_chan_try_send(NULL, &v), -EINVAL);
	assert_int_equal(cpat_chan_try_send(ch, NULL), -EINVAL);
	assert_int_equal(cpat_chan_recv(NULL, &v, NULL), -EINVAL);
	assert_int_equal(cpat_chan_recv(ch, NULL, NULL), -EINVAL);
	assert_int_equal(cpat_chan_recv_until(NULL, &v, NULL, 0), -EINVAL);
	assert_int_equal(cpat_chan_recv_until(ch, NULL, NULL, 0), -EINVAL);
	assert_int_equal(cpat_chan_recv_until(ch, &v, NULL, -2), -EINVAL);
	assert_int_equal(cpat_chan_try_recv(NULL, &v), -EINVAL);
	assert_int_equal(cpat_chan_try_recv(ch, NULL), -EINVAL);
	assert_int_equal(cpat_chan_send_many(NULL, many, 1, &cnt, NULL, 0),
			 -EINVAL);
	assert_int_equal(cpat_chan_send_many(ch, NULL, 1, &cnt, NULL, 0),
			 -EINVAL);
	assert_int_equal(cpat_chan_send_many(ch, many, 0, &cnt, NULL, 0),
			 -EINVAL);
	assert_int_equal(cpat_chan_send_many(ch, many, 1, &cnt, NULL, -2),
			 -EINVAL);
	assert_int_equal(cpat_chan_recv_many(NULL, many, 1, &cnt, NULL, 0),
			 -EINVAL);
	assert_int_equal(cpat_chan_recv_many(ch, NULL, 1, &cnt, NULL, 0),
			 -EINVAL);
	assert_int_equal(cpat_chan_recv_many(ch, many, 0, &cnt, NULL, 0),
			 -EINVAL);
	assert_int_equal(cpat_chan_recv_many(ch, many, 1, &cnt, NULL, -2),
			 -EINVAL);
	assert_int_equal(cpat_chan_close(NULL), -EINVAL);
	assert_int_equal(cpat_chan_is_closed(NULL), -EINVAL);
	assert_int_equal(cpat_chan_len(NULL), 0);
	assert_int_equal(cpat_chan_cap(NULL), 0);
	assert_int_equal(cpat_chan_elem_size(NULL), 0);

	/* Nothing of the above changed the channel. */
	assert_int_equal(cpat_chan_len(ch), 0);
	assert_int_equal(cpat_chan_is_closed(ch), 0);
	assert_int_equal(cpat_chan_try_recv(ch, &v), -EAGAIN);
	cpat_chan_destroy(ch);
}

TH_TEST_FN(chan_select_bad_arguments_einval)
{
	(void)state;
	struct cpat_chan *ch = mk(sizeof(uint64_t), 4);
	uint64_t v = 1;
	struct cpat_token *tok = mktok(NULL);
	struct cpat_select_case c[65];
	for (int i = 0; i < 65; i++)
		c[i] = (struct cpat_select_case){ch, CPAT_SELECT_SEND, &v, 1};

	assert_int_equal(cpat_chan_select(NULL, 1, NULL, 0), -EINVAL);
	assert_int_equal(cpat_chan_select(c, 0, NULL, 0), -EINVAL);
	assert_int_equal(cpat_chan_select(c, 65, NULL, 0), -EINVAL);
	assert_int_equal(cpat_chan_select(c, 1, NULL, -2), -EINVAL);
	c[0].op = 0;
	assert_int_equal(cpat_chan_select(c, 1, NULL, 0), -EINVAL);
	c[0].op = 3;
	assert_int_equal(cpat_chan_select(c, 1, NULL, 0), -EINVAL);
	c[0].op = CPAT_SELECT_SEND;
	c[1].elem = NULL;
	assert_int_equal(cpat_chan_select(c, 2, NULL, 0), -EINVAL);
	c[1].elem = &v;
	/* No channel, no token, no deadline: it could never return. */
	struct cpat_select_case none[2] = {
		{NULL, CPAT_SELECT_RECV, &v, 1},
		{NULL, CPAT_SELECT_SEND, &v, 1},
	};
	assert_int_equal(cpat_chan_select(none, 2, NULL, CPAT_FOREVER),
			 -EINVAL);
	/* Nothing was sent by any rejected call. */
	assert_int_equal(cpat_chan_len(ch), 0);
	/* The same with a way out is valid: times out / is cancelled. */
	assert_int_equal(cpat_chan_select(none, 2, NULL, 0), -ETIMEDOUT);
	cpat_token_cancel(tok);
	assert_int_equal(cpat_chan_select(none, 2, tok, CPAT_FOREVER),
			 -ECANCELED);
	/* 64 cases is the maximum and valid: exactly one sends. */
	int r = cpat_chan_select(c, 64, NULL, CPAT_FOREVER);
	assert_true(r >= 0 && r < 64);
	assert_int_equal(c[r].rc, 0);
	assert_int_equal(cpat_chan_len(ch), 1);
	cpat_token_unref(tok);
	cpat_chan_destroy(ch);
}

/* ---- single-thread behaviour -------------------------------------------- */

struct rt_recv {
	pthread_t t;
	struct cpat_chan *ch;
	size_t es, n;
	long bad;
};

/* Receives n elements of es bytes, tags 0..n-1, checking bytes and that
 * nothing past es bytes is written. */
static void *rt_recv_main(void *arg)
{
	struct rt_recv *r = arg;
	uint8_t *buf = malloc(r->es + 16);
	for (size_t i = 0; i < r->n; i++) {
		memset(buf, 0xA5, r->es + 16);
		if (cpat_chan_recv(r->ch, buf, NULL) != 0 ||
		    !intact(buf, r->es, i))
			r->bad++;
		for (size_t j = 0; j < 16; j++)
			if (buf[r->es + j] != 0xA5)
				r->bad++;
	}
	free(buf);
	return NULL;
}

TH_TEST_FN(chan_round_trip_capacities_by_element_sizes)
{
	(void)state;
	const size_t caps[] = {0, 1, 2, 7, 1024};
	const size_t sizes[] = {1, 4, 8, 13, 16, 4096};
	for (size_t ci = 0; ci < 5; ci++) {
		for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
			size_t cap = caps[ci], es = sizes[si];
			struct cpat_chan *ch = mk(es, cap);
			assert_int_equal(cpat_chan_cap(ch), cap);
			assert_int_equal(cpat_chan_elem_size(ch), es);
			uint8_t *in = malloc(es), *out = malloc(es + 16);
			if (cap == 0) {
				struct rt_recv r = {
					.ch = ch, .es = es, .n = 50};
				th_spawn(&r.t, rt_recv_main, &r);
				long bad = 0;
				for (size_t i = 0; i < r.n; i++) {
					fill(in, es, i);
					bad += cpat_chan_send(ch, in, NULL) !=
					       0;
					bad += cpat_chan_len(ch) != 0;
				}
				th_join(r.t);
				assert_int_equal(bad, 0);
				assert_int_equal(r.bad, 0);
			} else {
				/* Fill, then keep it full across 2 cap + 3
				 * wrap-arounds, then drain. */
				uint64_t next_in = 0, next_out = 0;
				for (size_t i = 0; i < cap; i++) {
					fill(in, es, next_in++);
					assert_int_equal(
						cpat_chan_try_send(ch, in), 0);
				}
				assert_int_equal(cpat_chan_len(ch), cap);
				fill(in, es, 999);
				assert_int_equal(cpat_chan_try_send(ch, in),
						 -EAGAIN);
				size_t rounds = 2 * cap + 3;
				for (size_t i = 0; i < rounds + cap; i++) {
					memset(out, 0x5A, es + 16);
					assert_int_equal(
						cpat_chan_recv(ch, out, NULL),
						0);
					assert_true(
						intact(out, es, next_out++));
					for (size_t j = 0; j < 16; j++)
						assert_int_equal(out[es + j],
								 0x5A);
					if (i < rounds) {
						fill(in, es, next_in++);
						assert_int_equal(
							cpat_chan_send(ch, in,
								       NULL),
							0);
						assert_int_equal(
							cpat_chan_len(ch), cap);
					}
				}
				assert_int_equal(next_out, next_in);
				assert_int_equal(cpat_chan_len(ch), 0);
				assert_int_equal(cpat_chan_try_recv(ch, out),
						 -EAGAIN);
			}
			free(in);
			free(out);
			cpat_chan_destroy(ch);
		}
	}
}

TH_TEST_FN(chan_fifo_across_ring_wraparound)
{
	(void)state;
	struct th_rng rng;
	th_rng_init(&rng, 1);
	const size_t caps[] = {1, 2, 3, 7, 8, 64};
	for (size_t ci = 0; ci < 6; ci++) {
		size_t cap = caps[ci];
		struct cpat_chan *ch = mk(sizeof(uint64_t), cap);
		uint64_t in = 0, out = 0;
		long rounds = SIZE(5000, 1000);
		for (long r = 0; r < rounds; r++) {
			size_t room = cap - (size_t)(in - out);
			size_t k = (size_t)th_rng_below(&rng, room + 1);
			for (size_t i = 0; i < k; i++) {
				assert_int_equal(cpat_chan_try_send(ch, &in),
						 0);
				in++;
			}
			size_t have = (size_t)(in - out);
			size_t m = (size_t)th_rng_below(&rng, have + 1);
			for (size_t i = 0; i < m; i++) {
				uint64_t v;
				assert_int_equal(cpat_chan_try_recv(ch, &v), 0);
				assert_int_equal(v, out);
				out++;
			}
		}
		cpat_chan_destroy(ch);
	}
}

TH_TEST_FN(chan_len_matches_reference_queue_random_ops)
{
	(void)state;
	struct th_rng rng;
	th_rng_init(&rng, 2);
	const size_t cap = 13;
	struct cpat_chan *ch = mk(sizeof(uint64_t), cap);
	uint64_t ref[13];
	size_t head = 0, cnt = 0;
	uint64_t next = 1;
	long ops = TH_SCALED(100000);
	for (long i = 0; i < ops; i++) {
		int op = (int)th_rng_below(&rng, 8);
		uint64_t v = 0, many[5], got[5];
		size_t k = 1 + (size_t)th_rng_below(&rng, 5), c = 99;
		int rc;
		switch (op) {
		case 0: /* try_send */
		case 2: /* send_until, past deadline */
		case 4: /* blocking send when there is room */
			if (op == 4 && cnt == cap)
				break;
			v = next;
			rc = op == 0   ? cpat_chan_try_send(ch, &v)
			     : op == 2 ? cpat_chan_send_until(ch, &v, NULL, 0)
				       : cpat_chan_send(ch, &v, NULL);
			if (cnt < cap) {
				assert_int_equal(rc, 0);
				ref[(head + cnt++) % cap] = next++;
			} else {
				assert_int_equal(rc, op == 0 ? -EAGAIN
							     : -ETIMEDOUT);
			}
			break;
		case 1: /* try_recv */
		case 3: /* recv_until, past deadline */
		case 5: /* blocking recv when there is something */
			if (op == 5 && cnt == 0)
				break;
			rc = op == 1   ? cpat_chan_try_recv(ch, &v)
			     : op == 3 ? cpat_chan_recv_until(ch, &v, NULL, 0)
				       : cpat_chan_recv(ch, &v, NULL);
			if (cnt > 0) {
				assert_int_equal(rc, 0);
				assert_int_equal(v, ref[head]);
				head = (head + 1) % cap;
				cnt--;
			} else {
				assert_int_equal(rc, op == 1 ? -EAGAIN
							     : -ETIMEDOUT);
				assert_int_equal(v, 0); /* untouched */
			}
			break;
		case 6: { /* send_many, past deadline: what fits */
			for (size_t j = 0; j < k; j++)
				many[j] = next + j;
			rc = cpat_chan_send_many(ch, many, k, &c, NULL, 0);
			size_t fit = k < cap - cnt ? k : cap - cnt;
			assert_int_equal(c, fit);
			assert_int_equal(rc, fit == k ? 0 : -ETIMEDOUT);
			for (size_t j = 0; j < fit; j++)
				ref[(head + cnt++) % cap] = next++;
			break;
		}
		case 7: { /* recv_many, past deadline: what is there */
			rc = cpat_chan_recv_many(ch, got, k, &c, NULL, 0);
			size_t there = k < cnt ? k : cnt;
			assert_int_equal(c, there);
			assert_int_equal(rc, there ? 0 : -ETIMEDOUT);
			for (size_t j = 0; j < there; j++) {
				assert_int_equal(got[j], ref[head]);
				head = (head + 1) % cap;
				cnt--;
			}
			break;
		}
		}
		assert_int_equal(cpat_chan_len(ch), cnt);
	}
	cpat_chan_destroy(ch);
}

TH_TEST_FN(chan_try_ops_on_full_empty_and_closed)
{
	(void)state;
	uint64_t v = 5, w = 77;
	/* Buffered. */
	struct cpat_chan *ch = mk(sizeof(uint64_t), 2);
	assert_int_equal(cpat_chan_try_recv(ch, &w), -EAGAIN);
	assert_int_equal(w, 77);
	assert_int_equal(cpat_chan_try_send(ch, &v), 0);
	v = 6;
	assert_int_equal(cpat_chan_try_send(ch, &v), 0);
	v = 7;
	assert_int_equal(cpat_chan_try_send(ch, &v), -EAGAIN);
	assert_int_equal(cpat_chan_len(ch), 2);
	assert_int_equal(cpat_chan_close(ch), 0);
	assert_int_equal(cpat_chan_is_closed(ch), 1);
	/* Closed and full: -EPIPE, not -EAGAIN. */
	assert_int_equal(cpat_chan_try_send(ch, &v), -EPIPE);
	assert_int_equal(cpat_chan_len(ch), 2);
	assert_int_equal(cpat_chan_try_recv(ch, &w), 0);
	assert_int_equal(w, 5);
	/* Closed with room: still -EPIPE. */
	assert_int_equal(cpat_chan_try_send(ch, &v), -EPIPE);
	assert_int_equal(cpat_chan_try_recv(ch, &w), 0);
	assert_int_equal(w, 6);
	w = 77;
	assert_int_equal(cpat_chan_try_recv(ch, &w), -EPIPE);
	assert_int_equal(w, 77);
	assert_int_equal(cpat_chan_len(ch), 0);
	cpat_chan_destroy(ch);

	/* Rendezvous: nobody waiting on either side. */
	ch = mk(sizeof(uint64_t), 0);
	assert_int_equal(cpat_chan_try_send(ch, &v), -EAGAIN);
	assert_int_equal(cpat_chan_try_recv(ch, &w), -EAGAIN);
	assert_int_equal(w, 77);
	assert_int_equal(cpat_chan_close(ch), 0);
	assert_int_equal(cpat_chan_try_send(ch, &v), -EPIPE);
	assert_int_equal(cpat_chan_try_recv(ch, &w), -EPIPE);
	assert_int_equal(w, 77);
	assert_int_equal(cpat_chan_len(ch), 0);
	cpat_chan_destroy(ch);
}

/* Receives one element with form @p form: 0 blocking, 1 try, 2 until
 * FOREVER, 3 until past, 4 until future, 5 recv_many n=1, 6 select. */
static int recv_form(struct cpat_chan *ch, uint64_t *v, int form)
{
	size_t c = 0;
	struct cpat_select_case sc = {ch, CPAT_SELECT_RECV, v, 1};
	int rc;
	switch (form) {
	case 0:
		return cpat_chan_recv(ch, v, NULL);
	case 1:
		return cpat_chan_try_recv(ch, v);
	case 2:
		return cpat_chan_recv_until(ch, v, NULL, CPAT_FOREVER);
	case 3:
		return cpat_chan_recv_until(ch, v, NULL, 0);
	case 4:
		return cpat_chan_recv_until(ch, v, NULL,
					    cpat_now_ns() + 10 * CPAT_SEC);
	case 5:
		rc = cpat_chan_recv_many(ch, v, 1, &c, NULL, CPAT_FOREVER);
		if ((rc == 0) != (c == 1))
			return -1000;
		return rc;
	default:
		rc = cpat_chan_select(&sc, 1, NULL, CPAT_FOREVER);
		return rc == 0 ? sc.rc : rc;
	}
}

TH_TEST_FN(chan_recv_after_close_drains_then_epipe)
{
	(void)state;
	for (int form = 0; form < 7; form++) {
		struct cpat_chan *ch = mk(sizeof(uint64_t), 4);
		for (uint64_t i = 10; i < 13; i++)
			assert_int_equal(cpat_chan_send(ch, &i, NULL), 0);
		assert_int_equal(cpat_chan_close(ch), 0);
		for (uint64_t i = 10; i < 13; i++) {
			uint64_t v = 0;
			assert_int_equal(recv_form(ch, &v, form), 0);
			assert_int_equal(v, i);
		}
		for (int again = 0; again < 3; again++) {
			uint64_t v = 42;
			assert_int_equal(recv_form(ch, &v, form), -EPIPE);
			assert_int_equal(v, 42);
		}
		cpat_chan_destroy(ch);
	}
}

static int drop_calls;
static uint64_t drop_seen[64];
static void *drop_arg_seen;

static void record_drop(void *elem, void *arg)
{
	if (drop_calls < 64)
		memcpy(&drop_seen[drop_calls], elem, sizeof(uint64_t));
	drop_calls++;
	drop_arg_seen = arg;
}

static struct cpat_chan *mk_drop(size_t cap)
{
	struct cpat_chan_opts o;
	struct cpat_chan *ch = NULL;
	cpat_chan_opts_init(&o);
	o.elem_size = sizeof(uint64_t);
	o.capacity = cap;
	o.drop = record_drop;
	o.drop_arg = &drop_calls;
	if (cpat_chan_create_opts(&ch, &o) != 0)
		abort();
	drop_calls = 0;
	drop_arg_seen = NULL;
	return ch;
}

TH_TEST_FN(chan_send_after_close_epipe_leaves_nothing)
{
	(void)state;
	struct cpat_chan *ch = mk_drop(8);
	uint64_t a = 1, b = 2, many[3] = {3, 4, 5};
	size_t c = 99;
	struct cpat_select_case sc = {ch, CPAT_SELECT_SEND, &b, 1};
	assert_int_equal(cpat_chan_send(ch, &a, NULL), 0);
	assert_int_equal(cpat_chan_close(ch), 0);
	assert_int_equal(cpat_chan_send(ch, &b, NULL), -EPIPE);
	assert_int_equal(cpat_chan_try_send(ch, &b), -EPIPE);
	assert_int_equal(cpat_chan_send_until(ch, &b, NULL, 0), -EPIPE);
	assert_int_equal(cpat_chan_send_until(ch, &b, NULL, CPAT_FOREVER),
			 -EPIPE);
	assert_int_equal(
		cpat_chan_send_many(ch, many, 3, &c, NULL, CPAT_FOREVER),
		-EPIPE);
	assert_int_equal(c, 0);
	assert_int_equal(cpat_chan_select(&sc, 1, NULL, CPAT_FOREVER), 0);
	assert_int_equal(sc.rc, -EPIPE);
	assert_int_equal(cpat_chan_len(ch), 1);
	/* Destroy still holding one element: only it is dropped. */
	cpat_chan_destroy(ch);
	assert_int_equal(drop_calls, 1);
	assert_int_equal(drop_seen[0], 1);

	/* And with the element drained: recv sees only it. */
	ch = mk(sizeof(uint64_t), 8);
	assert_int_equal(cpat_chan_send(ch, &a, NULL), 0);
	assert_int_equal(cpat_chan_close(ch), 0);
	assert_int_equal(cpat_chan_send(ch, &b, NULL), -EPIPE);
	uint64_t vals[8];
	int last;
	assert_int_equal(drain(ch, vals, 8, &last), 1);
	assert_int_equal(vals[0], 1);
	assert_int_equal(last, -EPIPE);
	cpat_chan_destroy(ch);
}

TH_TEST_FN(chan_double_close_epipe_changes_nothing)
{
	(void)state;
	struct cpat_chan *ch = mk(sizeof(uint64_t), 3);
	uint64_t v = 9;
	assert_int_equal(cpat_chan_is_closed(ch), 0);
	assert_int_equal(cpat_chan_send(ch, &v, NULL), 0);
	assert_int_equal(cpat_chan_close(ch), 0);
	assert_int_equal(cpat_chan_close(ch), -EPIPE);
	assert_int_equal(cpat_chan_close(ch), -EPIPE);
	assert_int_equal(cpat_chan_is_closed(ch), 1);
	assert_int_equal(cpat_chan_len(ch), 1);
	v = 0;
	assert_int_equal(cpat_chan_recv(ch, &v, NULL), 0);
	assert_int_equal(v, 9);
	assert_int_equal(cpat_chan_recv(ch, &v, NULL), -EPIPE);
	assert_int_equal(cpat_chan_close(ch), -EPIPE);
	cpat_chan_destroy(ch);
}

struct closer {
	struct th_barrier *b;
	struct cpat_chan *ch;
	int rc;
};

static void *closer_main(void *arg)
{
	struct closer *c = arg;
	th_barrier_wait(c->b);
	c->rc = cpat_chan_close(c->ch);
	return NULL;
}

TH_TEST_FN(chan_concurrent_closers_exactly_one_wins)
{
	(void)state;
	long rounds = SIZE(200, 30);
	for (long r = 0; r < rounds; r++) {
		struct cpat_chan *ch = mk(sizeof(uint64_t), (size_t)(r % 3));
		struct th_crew crew;
		struct closer c[8];
		th_crew_init(&crew, 8);
		for (int i = 0; i < 8; i++)
			c[i] = (struct closer){
				.b = &crew.start, .ch = ch, .rc = INT_MIN};
		th_crew_add_n(&crew, 8, closer_main, c, sizeof c[0]);
		th_crew_go(&crew);
		th_crew_join(&crew);
		int zeros = 0, epipes = 0;
		for (int i = 0; i < 8; i++) {
			zeros += c[i].rc == 0;
			epipes += c[i].rc == -EPIPE;
		}
		assert_int_equal(zeros, 1);
		assert_int_equal(epipes, 7);
		assert_int_equal(cpat_chan_is_closed(ch), 1);
		cpat_chan_destroy(ch);
	}
}

TH_TEST_FN(chan_destroy_drops_undelivered_in_fifo_order)
{
	(void)state;
	/* Wrapped ring: 8 in, 3 out, 3 in: 3..10 remain, in order. */
	struct cpat_chan *ch = mk_drop(8);
	uint64_t v;
	for (v = 0; v < 8; v++)
		assert_int_equal(cpat_chan_send(ch, &v, NULL), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(cpat_chan_recv(ch, &v, NULL), 0);
	for (v = 8; v < 11; v++)
		assert_int_equal(cpat_chan_send(ch, &v, NULL), 0);
	cpat_chan_destroy(ch);
	assert_int_equal(drop_calls, 8);
	for (int i = 0; i < 8; i++)
		assert_int_equal(drop_seen[i], (uint64_t)(3 + i));
	assert_ptr_equal(drop_arg_seen, &drop_calls);

	/* Closed, partly drained. */
	ch = mk_drop(4);
	for (v = 100; v < 104; v++)
		assert_int_equal(cpat_chan_send(ch, &v, NULL), 0);
	assert_int_equal(cpat_chan_close(ch), 0);
	assert_int_equal(cpat_chan_recv(ch, &v, NULL), 0);
	cpat_chan_destroy(ch);
	assert_int_equal(drop_calls, 3);
	for (int i = 0; i < 3; i++)
		assert_int_equal(drop_seen[i], (uint64_t)(101 + i));

	/* Empty, and rendezvous: never called. */
	ch = mk_drop(4);
	v = 1;
	assert_int_equal(cpat_chan_send(ch, &v, NULL), 0);
	assert_int_equal(cpat_chan_recv(ch, &v, NULL), 0);
	cpat_chan_destroy(ch);
	assert_int_equal(drop_calls, 0);
	ch = mk_drop(0);
	cpat_chan_destroy(ch);
	assert_int_equal(drop_calls, 0);
}

/* ---- close wakes blocked threads ---------------------------------------- */

#define MAXK (SANITIZED ? 64 : 256)

static void close_wakes_receivers(size_t k, size_t cap)
{
	struct cpat_chan *ch = mk(sizeof(uint64_t), cap);
	struct op_thread *o = calloc(k, sizeof *o);
	for (size_t i = 0; i < k; i++) {
		op_init(&o[i], ch, i % 3 == 2 ? OP_RECV_UNTIL : OP_RECV, NULL,
			0);
		op_start(&o[i]);
	}
	wait_blocked(ch, CPAT_SELECT_RECV, k);
	int early = 0;
	for (size_t i = 0; i < k; i++)
		early += atomic_load(&o[i].done);
	assert_int_equal(cpat_chan_close(ch), 0);
	long bad = 0;
	for (size_t i = 0; i < k; i++) {
		th_join(o[i].t);
		bad += o[i].rc != -EPIPE || o[i].got != UINT64_MAX;
	}
	assert_int_equal(early, 0);
	assert_int_equal(bad, 0);
	assert_int_equal(cpat__chan_nblocked(ch, CPAT_SELECT_RECV), 0);
	free(o);
	cpat_chan_destroy(ch);
}

TH_TEST_FN(chan_close_wakes_blocked_receivers)
{
	(void)state;
	const size_t ks[] = {1, 64, MAXK};
	for (int i = 0; i < 3; i++) {
		close_wakes_receivers(ks[i], 0);
		close_wakes_receivers(ks[i], 4);
	}
}

static void close_wakes_senders(size_t k, size_t cap)
{
	struct cpat_chan *ch = mk(sizeof(uint64_t), cap);
	for (uint64_t i = 0; i < cap; i++) {
		uint64_t v = 1000000 + i;
		assert_int_equal(cpat_chan_send(ch, &v, NULL), 0);
	}
	struct op_thread *o = calloc(k, sizeof *o);
	for (size_t i = 0; i < k; i++) {
		op_init(&o[i], ch, i % 3 == 2 ? OP_SEND_UNTIL : OP_SEND, NULL,
			i);
		op_start(&o[i]);
	}
	wait_blocked(ch, CPAT_SELECT_SEND, k);
	int early = 0;
	for (size_t i = 0; i < k; i++)
		early += atomic_load(&o[i].done);
	assert_int_equal(cpat_chan_close(ch), 0);
	long bad = 0;
	for (size_t i = 0; i < k; i++) {
		th_join(o[i].t);
		bad += o[i].rc != -EPIPE;
	}
	assert_int_equal(early, 0);
	assert_int_equal(bad, 0);
	/* The buffered elements drain, in order; the blocked senders'
	 * elements never appear. */
	uint64_t vals[8];
	int last;
	size_t n = drain(ch, vals, 8, &last);
	assert_int_equal(n, cap);
	for (size_t i = 0; i < cap; i++)
		assert_int_equal(vals[i], 1000000 + i);
	assert_int_equal(last, -EPIPE);
	uint64_t v;
	assert_int_equal(cpat_chan_recv(ch, &v, NULL), -EPIPE);
	free(o);
	cpat_chan_destroy(ch);
}

TH_TEST_FN(chan_close_wakes_blocked_senders_buffer_still_drains)
{
	(void)state;
	const size_t ks[] = {1, 64, MAXK};
	for (int i = 0; i < 3; i++) {
		close_wakes_senders(ks[i], 0);
		close_wakes_senders(ks[i], 3);
	}
}

/* ---- producers and consumers --------------------------------------------- */

struct prod {
	struct th_barrier *b;
	struct cpat_chan *ch;
	uint32_t pid;
	uint32_t n;                /* UINT32_MAX: until the channel closes */
	uint32_t sent_ok;          /* sends that returned 0 */
	_Atomic uint32_t returned; /* sent_ok, published after each send */
	int last_rc;
	long bad;
};

static void *prod_main(void *arg)
{
	struct prod *p = arg;
	th_barrier_wait(p->b);
	for (uint32_t s = 0; s < p->n; s++) {
		uint64_t v = (uint64_t)p->pid << 32 | s;
		int rc = cpat_chan_send(p->ch, &v, NULL);
		p->last_rc = rc;
		if (rc != 0) {
			if (rc != -EPIPE)
				p->bad++;
			break;
		}
		p->sent_ok++;
		atomic_store(&p->returned, p->sent_ok);
	}
	return NULL;
}

struct cons {
	struct th_barrier *b;
	struct cpat_chan *ch;
	uint64_t *got;
	size_t ngot, room;
	uint32_t *next_seq; /* per producer: lowest acceptable next seq */
	uint32_t nprod;
	_Atomic long progress;
	int last_rc;
	long order_bad;
};

static void *cons_main(void *arg)
{
	struct cons *c = arg;
	th_barrier_wait(c->b);
	for (;;) {
		uint64_t v;
		int rc = cpat_chan_recv(c->ch, &v, NULL);
		if (rc != 0) {
			c->last_rc = rc;
			break;
		}
		uint32_t pid = (uint32_t)(v >> 32), seq = (uint32_t)v;
		if (pid >= c->nprod || seq < c->next_seq[pid])
			c->order_bad++;
		else
			c->next_seq[pid] = seq + 1;
		if (c->ngot < c->room)
			c->got[c->ngot] = v;
		c->ngot++;
		atomic_store_explicit(&c->progress, (long)c->ngot,
				      memory_order_relaxed);
	}
	return NULL;
}

/* P producers of n items each, M consumers, closes when the producers are
 * done; asserts per-producer FIFO at each consumer and exactly-once. */
static void run_mpmc(size_t P, size_t M, size_t cap, uint32_t n)
{
	struct cpat_chan *ch = mk(sizeof(uint64_t), cap);
	struct th_crew crew;
	th_crew_init(&crew, (unsigned)(P + M));
	struct prod *p = calloc(P, sizeof *p);
	struct cons *c = calloc(M, sizeof *c);
	size_t total = P * n;
	for (size_t i = 0; i < P; i++)
		p[i] = (struct prod){
			.b = &crew.start, .ch = ch, .pid = (uint32_t)i, .n = n};
	for (size_t i = 0; i < M; i++) {
		c[i].b = &crew.start;
		c[i].ch = ch;
		c[i].room = total;
		c[i].got = malloc(total * sizeof(uint64_t));
		c[i].next_seq = calloc(P, sizeof(uint32_t));
		c[i].nprod = (uint32_t)P;
	}
	th_crew_add_n(&crew, (unsigned)P, prod_main, p, sizeof p[0]);
	th_crew_add_n(&crew, (unsigned)M, cons_main, c, sizeof c[0]);
	th_crew_go(&crew);
	th_crew_join_to(&crew, (unsigned)P); /* the producers */
	long pbad = 0;
	for (size_t i = 0; i < P; i++)
		pbad += p[i].bad + (p[i].sent_ok != n);
	assert_int_equal(cpat_chan_close(ch), 0);
	th_crew_join(&crew); /* the consumers */
	unsigned char *seen = calloc(total, 1);
	size_t received = 0;
	long obad = 0, rcbad = 0, dup = 0, foreign = 0;
	uint64_t sum = 0;
	for (size_t i = 0; i < M; i++) {
		obad += c[i].order_bad;
		rcbad += c[i].last_rc != -EPIPE;
		for (size_t j = 0; j < c[i].ngot && j < c[i].room; j++) {
			uint64_t v = c[i].got[j];
			uint64_t pid = v >> 32, seq = (uint32_t)v;
			if (pid >= P || seq >= n) {
				foreign++;
				continue;
			}
			dup += seen[pid * n + seq]++ != 0;
			sum += v;
		}
		received += c[i].ngot;
		free(c[i].got);
		free(c[i].next_seq);
	}
	uint64_t want = 0;
	for (size_t i = 0; i < P; i++)
		want += (uint64_t)i * ((uint64_t)n << 32) +
			(uint64_t)n * (n - 1) / 2;
	if (obad || dup || foreign || received != total)
		fprintf(stderr,
			"# mpmc P=%zu M=%zu cap=%zu n=%u: order_bad=%ld "
			"dup=%ld foreign=%ld received=%zu/%zu\n",
			P, M, cap, n, obad, dup, foreign, received, total);
	assert_int_equal(pbad, 0);
	assert_int_equal(rcbad, 0);
	assert_int_equal(obad, 0);
	assert_int_equal(foreign, 0);
	assert_int_equal(dup, 0);
	assert_int_equal(received, total);
	assert_int_equal(sum, want);
	assert_int_equal(cpat_chan_len(ch), 0);
	free(seen);
	free(p);
	free(c);
	cpat_chan_destroy(ch);
}

TH_TEST_FN(chan_per_producer_fifo_4_producers_4_consumers)
{
	(void)state;
	uint32_t n = (uint32_t)SIZE(10000, 1000);
	run_mpmc(4, 4, 0, n / 4);
	run_mpmc(4, 4, 1, n);
	run_mpmc(4, 4, 16, n);
}

TH_TEST_FN(chan_exactly_once_producers_by_consumers_by_capacity)
{
	(void)state;
	const size_t pm[] = {1, 2, 4, 8};
	const size_t caps[] = {0, 1, 3, 64};
	long total = SIZE(4000, 400);
	for (int ci = 0; ci < 4; ci++)
		for (int pi = 0; pi < 4; pi++)
			for (int mi = 0; mi < 4; mi++)
				run_mpmc(pm[pi], pm[mi], caps[ci],
					 (uint32_t)(total / (long)pm[pi]));
}

TH_TEST_FN(chan_senders_racing_close_sent_equals_received)
{
	(void)state;
	const size_t caps[] = {0, 1, 8};
	long rounds = SIZE(20, 4);
	for (long r = 0; r < rounds; r++) {
		size_t cap = caps[r % 3];
		const size_t P = 4;
		struct cpat_chan *ch = mk(sizeof(uint64_t), cap);
		struct th_crew crew;
		th_crew_init(&crew, (unsigned)P + 1);
		struct prod p[4];
		struct cons c = {
			.b = &crew.start, .ch = ch, .nprod = (uint32_t)P};
		size_t room = 1 << 20;
		c.room = room;
		c.got = malloc(room * sizeof(uint64_t));
		c.next_seq = calloc(P, sizeof(uint32_t));
		for (size_t i = 0; i < P; i++)
			p[i] = (struct prod){.b = &crew.start,
					     .ch = ch,
					     .pid = (uint32_t)i,
					     .n = UINT32_MAX};
		th_crew_add_n(&crew, (unsigned)P, prod_main, p, sizeof p[0]);
		th_crew_add(&crew, cons_main, &c);
		th_crew_go(&crew);
		/* Close in the middle of the traffic. */
		long when = 50 + (long)(r * 37 % 500);
		while (atomic_load_explicit(&c.progress, memory_order_relaxed) <
		       when)
			th_relax();
		assert_int_equal(cpat_chan_close(ch), 0);
		th_crew_join(&crew);
		uint64_t ok = 0;
		long bad = 0;
		for (size_t i = 0; i < P; i++) {
			ok += p[i].sent_ok;
			bad += p[i].bad + (p[i].last_rc != -EPIPE);
		}
		/* Exactly the successful sends arrived, each producer's
		 * 0..sent_ok-1 in order. */
		uint32_t per[4] = {0};
		long obad = c.order_bad;
		for (size_t j = 0; j < c.ngot && j < room; j++) {
			uint32_t pid = (uint32_t)(c.got[j] >> 32);
			uint32_t seq = (uint32_t)c.got[j];
			if (pid >= P || seq != per[pid]++)
				obad++;
		}
		assert_int_equal(bad, 0);
		assert_int_equal(c.last_rc, -EPIPE);
		assert_int_equal(obad, 0);
		assert_int_equal(c.ngot, ok);
		for (size_t i = 0; i < P; i++)
			assert_int_equal(per[i], p[i].sent_ok);
		free(c.got);
		free(c.next_seq);
		cpat_chan_destroy(ch);
	}
}

/* ---- rendezvous and memory visibility ------------------------------------ */

TH_TEST_FN(chan_rendezvous_blocks_each_side_alone_completes_when_paired)
{
	(void)state;
	struct cpat_chan *ch = mk(sizeof(uint64_t), 0);
	uint64_t v = 1, w = 77;
	assert_int_equal(cpat_chan_try_send(ch, &v), -EAGAIN);
	assert_int_equal(cpat_chan_send_until(ch, &v, NULL, 0), -ETIMEDOUT);
	assert_int_equal(cpat_chan_try_recv(ch, &w), -EAGAIN);
	assert_int_equal(cpat_chan_recv_until(ch, &w, NULL, 0), -ETIMEDOUT);
	assert_int_equal(w, 77);

	for (int round = 0; round < 20; round++) {
		/* A lone sender stays blocked until a receiver comes. */
		struct op_thread s;
		op_init(&s, ch, round & 1 ? OP_SEND_UNTIL : OP_SEND, NULL,
			42 + (uint64_t)round);
		op_start(&s);
		wait_blocked(ch, CPAT_SELECT_SEND, 1);
		int s_early = atomic_load(&s.done);
		size_t len = cpat_chan_len(ch);
		/* A second sender does not pair with the first. */
		v = 5;
		int rc2 = cpat_chan_try_send(ch, &v);
		int s_early2 = atomic_load(&s.done);
		w = 0;
		int rc = round & 2 ? cpat_chan_recv(ch, &w, NULL)
				   : cpat_chan_try_recv(ch, &w);
		if (rc != 0) /* release the sender before failing */
			(void)cpat_chan_recv(ch, &w, NULL);
		th_join(s.t);
		assert_int_equal(s_early, 0);
		assert_int_equal(s_early2, 0);
		assert_int_equal(len, 0);
		assert_int_equal(rc2, -EAGAIN);
		assert_int_equal(rc, 0);
		assert_int_equal(w, 42 + (uint64_t)round);
		assert_int_equal(s.rc, 0);

		/* A lone receiver stays blocked until a sender comes. */
		struct op_thread r;
		op_init(&r, ch, round & 1 ? OP_RECV_UNTIL : OP_RECV, NULL, 0);
		op_start(&r);
		wait_blocked(ch, CPAT_SELECT_RECV, 1);
		int r_early = atomic_load(&r.done);
		w = 77;
		rc2 = cpat_chan_try_recv(ch, &w); /* no sender waiting */
		int r_early2 = atomic_load(&r.done);
		v = 1000 + (uint64_t)round;
		rc = round & 2 ? cpat_chan_send(ch, &v, NULL)
			       : cpat_chan_try_send(ch, &v);
		if (rc != 0) /* release the receiver before failing */
			(void)cpat_chan_send(ch, &v, NULL);
		th_join(r.t);
		assert_int_equal(r_early, 0);
		assert_int_equal(r_early2, 0);
		assert_int_equal(rc2, -EAGAIN);
		assert_int_equal(w, 77);
		assert_int_equal(rc, 0);
		assert_int_equal(r.rc, 0);
		assert_int_equal(r.got, 1000 + (uint64_t)round);
	}
	cpat_chan_destroy(ch);
}

/*
 * Threads blocked on one side of a rendezvous are served in the order they
 * blocked, whether they wait in the channel's cell (the first plain
 * operation) or in its queue behind it, and one that times out or is
 * cancelled while it waits takes nothing and is skipped.
 */
TH_TEST_FN(chan_rendezvous_waiters_served_in_arrival_order)
{
	(void)state;
	/* Rounds 0 and 1 (receivers, then senders): the first waiter (in
	 * the cell) is served, the second times out in the queue; rounds 2
	 * and 3: the first times out in the cell. The third is cancelled. */
	for (int round = 0; round < 4; round++) {
		bool senders = round & 1;
		int dl = round >> 1 ? 0 : 1; /* who has a deadline */
		int op = senders ? CPAT_SELECT_SEND : CPAT_SELECT_RECV;
		struct cpat_chan *ch = mk(sizeof(uint64_t), 0);
		struct cpat_token *tok = mktok(NULL);
		struct op_thread t[5];
		int served[3], ns = 0;
		memset(t, 0, sizeof t); /* t[dl].done is read before its turn */
		for (int i = 0; i < 5; i++) {
			int kind = senders ? OP_SEND : OP_RECV;
			if (i == dl)
				kind = senders ? OP_SEND_UNTIL : OP_RECV_UNTIL;
			op_init(&t[i], ch, kind, i == 2 ? tok : NULL,
				10 + (uint64_t)i);
			if (i == dl)
				t[i].deadline = cpat_now_ns() + 100 * CPAT_MSEC;
			else if (i != 2)
				served[ns++] = i;
			op_start(&t[i]);
			/* Blocked (or, the one with the deadline, maybe timed
			 * out already). */
			while (cpat__chan_nblocked(ch, op) +
				       (size_t)atomic_load(&t[dl].done) <
			       (size_t)i + 1)
				th_relax();
		}
		cpat_token_cancel(tok);
		th_join(t[2].t);
		th_join(t[dl].t);
		/* Nothing more is blocked than the three left. */
		size_t blocked = cpat__chan_nblocked(ch, op);
		uint64_t got[3] = {0, 0, 0};
		int rc[3];
		for (int k = 0; k < 3; k++) {
			uint64_t v = 100 + (uint64_t)k;
			rc[k] = senders ? cpat_chan_recv(ch, &got[k], NULL)
					: cpat_chan_send(ch, &v, NULL);
		}
		for (int k = 0; k < 3; k++)
			th_join(t[served[k]].t);
		uint64_t v = 7;
		int rc_more = senders ? cpat_chan_try_recv(ch, &v)
				      : cpat_chan_try_send(ch, &v);

		assert_int_equal(t[dl].rc, -ETIMEDOUT);
		assert_int_equal(t[2].rc, -ECANCELED);
		assert_int_equal(blocked, 3);
		for (int k = 0; k < 3; k++) {
			struct op_thread *o = &t[served[k]];
			assert_int_equal(rc[k], 0);
			assert_int_equal(o->rc, 0);
			if (senders)
				assert_int_equal(got[k], o->val);
			else
				assert_int_equal(o->got, 100 + (uint64_t)k);
		}
		if (!senders) {
			assert_int_equal(t[dl].got, UINT64_MAX);
			assert_int_equal(t[2].got, UINT64_MAX);
		}
		assert_int_equal(rc_more, -EAGAIN);
		assert_int_equal(v, 7);
		cpat_token_unref(tok);
		cpat_chan_destroy(ch);
	}
}

/* A plain (non-atomic) payload handed over by pointer. */
struct payload {
	uint64_t words[32];
	uint64_t reply;
};

static void payload_fill(struct payload *p, uint64_t i)
{
	for (int j = 0; j < 32; j++)
		p->words[j] = i * 1000003u + (uint64_t)j;
}

static int payload_ok(const struct payload *p, uint64_t i)
{
	for (int j = 0; j < 32; j++)
		if (p->words[j] != i * 1000003u + (uint64_t)j)
			return 0;
	return 1;
}

struct pl_thread {
	pthread_t t;
	struct cpat_chan *ch;
	struct payload *arr;
	long n;
	long bad;
	_Atomic long returned; /* operations completed */
	int writer;            /* 1: fill and send; 0: receive and check */
};

static void *pl_main(void *arg)
{
	struct pl_thread *p = arg;
	for (long i = 0; i < p->n; i++) {
		if (p->writer) {
			struct payload *pp = &p->arr[i];
			payload_fill(pp, (uint64_t)i);
			if (cpat_chan_send(p->ch, &pp, NULL) != 0)
				p->bad++;
		} else {
			struct payload *pp = NULL;
			if (cpat_chan_recv(p->ch, &pp, NULL) != 0 ||
			    pp == NULL) {
				p->bad++;
				continue;
			}
			if (pp != &p->arr[i] || !payload_ok(pp, (uint64_t)i))
				p->bad++;
			pp->reply = (uint64_t)i + 1; /* read back after join */
		}
		atomic_store(&p->returned, i + 1);
	}
	return NULL;
}

TH_TEST_FN(chan_payload_written_before_send_visible_after_recv)
{
	(void)state;
	long n = SIZE(20000, 2000);
	const size_t caps[] = {0, 1, 16};
	for (int ci = 0; ci < 3; ci++) {
		/* Free-running: main writes and sends, a thread receives. */
		struct cpat_chan *ch = mk(sizeof(struct payload *), caps[ci]);
		struct payload *arr = calloc((size_t)n, sizeof *arr);
		struct pl_thread rx = {.ch = ch, .arr = arr, .n = n};
		th_spawn(&rx.t, pl_main, &rx);
		long bad = 0;
		for (long i = 0; i < n; i++) {
			struct payload *pp = &arr[i];
			payload_fill(pp, (uint64_t)i);
			bad += cpat_chan_send(ch, &pp, NULL) != 0;
		}
		th_join(rx.t);
		for (long i = 0; i < n; i++)
			bad += arr[i].reply != (uint64_t)i + 1;
		assert_int_equal(bad, 0);
		assert_int_equal(rx.bad, 0);
		free(arr);
		cpat_chan_destroy(ch);
	}
	long nb = SIZE(2000, 300);
	for (size_t cap = 0; cap < 2; cap++) {
		/* The sender had blocked: the receiver waits until it is. */
		struct cpat_chan *ch = mk(sizeof(struct payload *), cap);
		struct payload *arr = calloc((size_t)nb, sizeof *arr);
		struct pl_thread tx = {
			.ch = ch, .arr = arr, .n = nb, .writer = 1};
		th_spawn(&tx.t, pl_main, &tx);
		long bad = 0;
		for (long i = 0; i < nb; i++) {
			/* cap 0: the sender of item i is blocked; cap 1: item i
			 * is buffered and the sender of i + 1 is blocked. */
			if (cap == 0 || i + 1 < nb) {
				/* Out of its previous send, blocked in the
				 * next. */
				while (atomic_load(&tx.returned) <
				       i + (long)cap)
					th_relax();
				wait_blocked(ch, CPAT_SELECT_SEND, 1);
			}
			struct payload *pp = NULL;
			bad += cpat_chan_recv(ch, &pp, NULL) != 0;
			bad += pp != &arr[i] || !payload_ok(pp, (uint64_t)i);
		}
		th_join(tx.t);
		assert_int_equal(bad, 0);
		assert_int_equal(tx.bad, 0);
		free(arr);

		/* The receiver had blocked: the payload is written after. */
		arr = calloc((size_t)nb, sizeof *arr);
		struct pl_thread rx = {.ch = ch, .arr = arr, .n = nb};
		th_spawn(&rx.t, pl_main, &rx);
		for (long i = 0; i < nb; i++) {
			while (atomic_load(&rx.returned) != i)
				th_relax();
			wait_blocked(ch, CPAT_SELECT_RECV, 1);
			struct payload *pp = &arr[i];
			payload_fill(pp, (uint64_t)i);
			bad += cpat_chan_send(ch, &pp, NULL) != 0;
		}
		th_join(rx.t);
		for (long i = 0; i < nb; i++)
			bad += arr[i].reply != (uint64_t)i + 1;
		assert_int_equal(bad, 0);
		assert_int_equal(rx.bad, 0);
		free(arr);
		cpat_chan_destroy(ch);
	}
}

/* ---- cancellation ------------------------------------------------------- */

TH_TEST_FN(chan_cancel_wakes_blocked_send_and_recv_without_side_effect)
{
	(void)state;
	const int send_kinds[] = {OP_SEND, OP_SEND_UNTIL, OP_SEND_MANY};
	const int recv_kinds[] = {OP_RECV, OP_RECV_UNTIL, OP_RECV_MANY};
	for (size_t cap = 0; cap < 2; cap++) {
		for (int k = 0; k < 3; k++) {
			/* Blocked sender: full (or rendezvous) channel. */
			struct cpat_chan *ch = mk(sizeof(uint64_t), cap);
			uint64_t v = 5, many[2] = {6, 7};
			if (cap)
				assert_int_equal(cpat_chan_send(ch, &v, NULL),
						 0);
			struct cpat_token *tok = mktok(NULL);
			struct op_thread o;
			op_init(&o, ch, send_kinds[k], tok, 6);
			o.many = many;
			o.n = 2;
			o.count = 99;
			op_start(&o);
			wait_blocked(ch, CPAT_SELECT_SEND, 1);
			int early = atomic_load(&o.done);
			assert_int_equal(cpat_token_cancel(tok), 1);
			th_join(o.t);
			assert_int_equal(early, 0);
			assert_int_equal(o.rc, -ECANCELED);
			if (send_kinds[k] == OP_SEND_MANY)
				assert_int_equal(o.count, 0);
			assert_int_equal(
				cpat__chan_nblocked(ch, CPAT_SELECT_SEND), 0);
			uint64_t vals[4];
			int last;
			size_t n = drain(ch, vals, 4, &last);
			assert_int_equal(n, cap);
			if (cap)
				assert_int_equal(vals[0], 5);
			assert_int_equal(last, -EAGAIN);
			cpat_token_unref(tok);

			/* Blocked receiver: empty channel; it consumes
			 * nothing sent after its cancellation. */
			tok = mktok(NULL);
			uint64_t got[2] = {77, 77};
			op_init(&o, ch, recv_kinds[k], tok, 0);
			o.many = got;
			o.n = 2;
			o.count = 99;
			op_start(&o);
			wait_blocked(ch, CPAT_SELECT_RECV, 1);
			early = atomic_load(&o.done);
			assert_int_equal(cpat_token_cancel(tok), 1);
			th_join(o.t);
			assert_int_equal(early, 0);
			assert_int_equal(o.rc, -ECANCELED);
			assert_int_equal(o.got, UINT64_MAX);
			assert_int_equal(got[0], 77);
			if (recv_kinds[k] == OP_RECV_MANY)
				assert_int_equal(o.count, 0);
			assert_int_equal(
				cpat__chan_nblocked(ch, CPAT_SELECT_RECV), 0);
			v = 8;
			if (cap) {
				assert_int_equal(cpat_chan_try_send(ch, &v), 0);
				assert_int_equal(cpat_chan_try_recv(ch, &v), 0);
				assert_int_equal(v, 8);
			} else {
				/* Nobody is waiting to receive any more. */
				assert_int_equal(cpat_chan_try_send(ch, &v),
						 -EAGAIN);
			}
			cpat_token_unref(tok);
			cpat_chan_destroy(ch);
		}
	}
}

struct race {
	pthread_t t;
	struct cpat_chan *ch;
	_Atomic uint32_t go, done;
	struct cpat_token *tok; /* published before go (release) */
	long trials;
	int worker_sends;
	int *rc;
	uint64_t *got;
};

static void *race_main(void *arg)
{
	struct race *r = arg;
	for (long i = 0; i < r->trials; i++) {
		th_wait_u32(&r->go, (uint32_t)i + 1);
		struct cpat_token *tok = r->tok;
		if (r->worker_sends) {
			uint64_t v = (uint64_t)i;
			r->rc[i] = cpat_chan_send(r->ch, &v, tok);
		} else {
			uint64_t v = UINT64_MAX;
			r->rc[i] = cpat_chan_recv(r->ch, &v, tok);
			r->got[i] = v;
		}
		th_set_u32(&r->done, (uint32_t)i + 1);
	}
	return NULL;
}

/* Runs @p trials of "operation under a token" racing "cancel of the token"
 * and "the operation's peer completing it"; returns the trials whose outcome
 * was neither (0 and delivered) nor (-ECANCELED and not delivered). */
static long cancel_race(long trials, int worker_sends, long *n_ok,
			long *n_cancelled, long *late_pair)
{
	struct th_rng rng;
	th_rng_init(&rng, 17 + (uint64_t)worker_sends);
	struct race r = {.trials = trials, .worker_sends = worker_sends};
	r.ch = mk(sizeof(uint64_t), worker_sends ? 0 : 1);
	r.rc = calloc((size_t)trials, sizeof(int));
	r.got = calloc((size_t)trials, sizeof(uint64_t));
	th_spawn(&r.t, race_main, &r);
	long bad = 0;
	for (long i = 0; i < trials; i++) {
		struct cpat_token *tok = mktok(NULL);
		r.tok = tok;
		th_set_u32(&r.go, (uint32_t)i + 1);
		th_pause((unsigned)th_rng_below(&rng, 4) * 16);
		uint64_t v = (uint64_t)i, w = UINT64_MAX;
		int delivered = 0;
		if (!worker_sends) {
			/* The worker receives: deliver into the buffer and
			 * cancel, in either order. */
			if (th_rng_below(&rng, 2)) {
				bad += cpat_chan_try_send(r.ch, &v) != 0;
				cpat_token_cancel(tok);
			} else {
				cpat_token_cancel(tok);
				bad += cpat_chan_try_send(r.ch, &v) != 0;
			}
		} else {
			/* The worker sends on a rendezvous channel: try to
			 * take it a few times, then cancel; after the cancel
			 * no receive may pair with the cancelled send. */
			unsigned tries = (unsigned)th_rng_below(&rng, 6);
			for (unsigned s = 0; s < tries && !delivered; s++)
				delivered = cpat_chan_try_recv(r.ch, &w) == 0;
			cpat_token_cancel(tok);
			if (!delivered && cpat_chan_try_recv(r.ch, &w) == 0) {
				(*late_pair)++;
				delivered = 1;
			}
		}
		th_wait_u32(&r.done, (uint32_t)i + 1);
		if (!worker_sends) {
			/* Delivered means the worker got it; otherwise it is
			 * still in the buffer. */
			uint64_t left = UINT64_MAX;
			int rest = cpat_chan_try_recv(r.ch, &left);
			if (r.rc[i] == 0 && r.got[i] == v && rest == -EAGAIN)
				(*n_ok)++;
			else if (r.rc[i] == -ECANCELED &&
				 r.got[i] == UINT64_MAX && rest == 0 &&
				 left == v)
				(*n_cancelled)++;
			else
				bad++;
		} else {
			if (r.rc[i] == 0 && delivered && w == v)
				(*n_ok)++;
			else if (r.rc[i] == -ECANCELED && !delivered)
				(*n_cancelled)++;
			else
				bad++;
		}
		cpat_token_unref(tok);
	}
	th_join(r.t);
	free(r.rc);
	free(r.got);
	cpat_chan_destroy(r.ch);
	return bad;
}

TH_TEST_FN(chan_cancel_racing_completion_is_all_or_nothing)
{
	(void)state;
	long trials = SIZE(50000, 1000);
	for (int ws = 0; ws < 2; ws++) {
		long ok = 0, cancelled = 0, late = 0;
		long bad = cancel_race(trials, ws, &ok, &cancelled, &late);
		fprintf(stderr,
			"# %s: %ld completed, %ld cancelled, %ld bad, "
			"%ld paired after cancel\n",
			ws ? "send (rendezvous)" : "recv (buffered)", ok,
			cancelled, bad, late);
		assert_int_equal(bad, 0);
		assert_int_equal(late, 0);
		assert_int_equal(ok + cancelled, trials);
	}
}

TH_TEST_FN(chan_token_cancel_wakes_64_ops_on_8_channels)
{
	(void)state;
	struct cpat_token *parent = mktok(NULL), *tok = mktok(parent);
	struct cpat_chan *ch[8];
	/* 0-3: receivers (caps 0, 2, 0, 2); 4-7: senders (caps 0, 1, 0, 1,
	 * the buffered ones full). */
	for (int i = 0; i < 8; i++) {
		ch[i] = mk(sizeof(uint64_t), (size_t)(i & 1) * (i < 4 ? 2 : 1));
		if (i >= 4 && (i & 1)) {
			uint64_t v = 500 + (uint64_t)i;
			assert_int_equal(cpat_chan_send(ch[i], &v, NULL), 0);
		}
	}
	struct op_thread o[64];
	for (int j = 0; j < 64; j++) {
		int c = j % 8;
		int kind = c < 4 ? (j & 8 ? OP_RECV_UNTIL : OP_RECV)
				 : (j & 8 ? OP_SEND_UNTIL : OP_SEND);
		op_init(&o[j], ch[c], kind, tok, (uint64_t)j);
		op_start(&o[j]);
	}
	for (int i = 0; i < 8; i++)
		wait_blocked(ch[i], i < 4 ? CPAT_SELECT_RECV : CPAT_SELECT_SEND,
			     8);
	int early = 0;
	for (int j = 0; j < 64; j++)
		early += atomic_load(&o[j].done);
	/* Through the parent: the child fires, every operation wakes. */
	assert_int_equal(cpat_token_cancel(parent), 1);
	int bad = 0;
	for (int j = 0; j < 64; j++) {
		th_join(o[j].t);
		bad += o[j].rc != -ECANCELED;
	}
	assert_int_equal(early, 0);
	assert_int_equal(bad, 0);
	for (int i = 0; i < 8; i++) {
		uint64_t v = 1, vals[4];
		int last;
		assert_int_equal(cpat__chan_nblocked(ch[i], CPAT_SELECT_RECV),
				 0);
		assert_int_equal(cpat__chan_nblocked(ch[i], CPAT_SELECT_SEND),
				 0);
		if (i < 4) {
			/* No cancelled receiver takes anything. */
			if (i & 1) {
				assert_int_equal(cpat_chan_try_send(ch[i], &v),
						 0);
				assert_int_equal(cpat_chan_len(ch[i]), 1);
			} else {
				assert_int_equal(cpat_chan_try_send(ch[i], &v),
						 -EAGAIN);
			}
		} else {
			size_t n = drain(ch[i], vals, 4, &last);
			assert_int_equal(n, (size_t)(i & 1));
			if (i & 1)
				assert_int_equal(vals[0], 500 + (uint64_t)i);
			assert_int_equal(last, -EAGAIN);
		}
		cpat_chan_destroy(ch[i]);
	}
	cpat_token_unref(tok);
	cpat_token_unref(parent);
}

TH_TEST_FN(chan_token_released_while_blocked_then_cancelled_no_use_after_free)
{
	(void)state;
	for (int round = 0; round < 8; round++) {
		struct cpat_chan *ch = mk(sizeof(uint64_t), round & 1);
		uint64_t v = 3;
		if (round & 1)
			assert_int_equal(cpat_chan_send(ch, &v, NULL), 0);
		int op = round & 2 ? CPAT_SELECT_SEND : CPAT_SELECT_RECV;
		int kind = op == CPAT_SELECT_SEND ? OP_SEND : OP_RECV;
		if (op == CPAT_SELECT_RECV && (round & 1)) {
			/* Make it empty again so the receiver blocks. */
			assert_int_equal(cpat_chan_recv(ch, &v, NULL), 0);
		}
		/* The operation's token is released by its owner, then
		 * cancelled via another reference (round & 4) or via its
		 * parent. */
		struct op_thread o;
		struct cpat_token *canceller = mktok(NULL);
		struct cpat_token *own = round & 4 ? cpat_token_ref(canceller)
						   : mktok(canceller);
		op_init(&o, ch, kind, own, 9);
		op_start(&o);
		wait_blocked(ch, op, 1);
		cpat_token_unref(own);
		int early = atomic_load(&o.done);
		assert_int_equal(cpat_token_cancel(canceller), 1);
		th_join(o.t);
		assert_int_equal(early, 0);
		assert_int_equal(o.rc, -ECANCELED);
		if (round & 4) /* The operation dropped its own reference. */
			assert_int_equal(cpat__token_refcount(canceller), 1);
		else /* The child is gone once the operation let go. */
			assert_int_equal(cpat__token_nchildren(canceller), 0);
		cpat_token_unref(canceller);
		assert_int_equal(cpat_chan_len(ch),
				 (size_t)(round & 1 && op == CPAT_SELECT_SEND));
		cpat_chan_destroy(ch);
	}
	/* Released by its owner, fired by its deadline (timer thread). */
	struct cpat_chan *ch = mk(sizeof(uint64_t), 0);
	struct cpat_token *dl = NULL;
	int64_t deadline = cpat_now_ns() + 200 * CPAT_MSEC;
	assert_int_equal(cpat_token_create_deadline(&dl, NULL, deadline), 0);
	struct op_thread o;
	op_init(&o, ch, OP_RECV, dl, 0);
	op_start(&o);
	/* Blocked, or (a thread started later than the deadline on a loaded
	 * machine) already timed out: waiting for the count alone could then
	 * never end. */
	while (cpat__chan_nblocked(ch, CPAT_SELECT_RECV) < 1 &&
	       !atomic_load(&o.done))
		th_relax();
	cpat_token_unref(dl);
	th_join(o.t);
	assert_int_equal(o.rc, -ETIMEDOUT);
	assert_true(o.t_end >= deadline);
	cpat_chan_destroy(ch);
}

TH_TEST_FN(chan_fired_token_fails_even_when_ready_and_nothing_moves)
{
	(void)state;
	struct cpat_token *tok = mktok(NULL);
	assert_int_equal(cpat_token_cancel(tok), 1);
	struct cpat_token *child = mktok(tok); /* born fired */
	struct cpat_token *past = NULL;
	assert_int_equal(cpat_token_create_deadline(&past, NULL, 0), 0);
	struct cpat_token *toks[3] = {tok, child, past};
	const int cause[3] = {-ECANCELED, -ECANCELED, -ETIMEDOUT};

	for (int t = 0; t < 3; t++) {
		struct cpat_token *tk = toks[t];
		int want = cause[t];
		struct cpat_chan *ch = mk(sizeof(uint64_t), 4);
		uint64_t a = 1, w = 77, many[2] = {2, 3}, got[2] = {77, 77};
		size_t c = 99;
		assert_int_equal(cpat_chan_send(ch, &a, NULL), 0);
		/* Ready both ways: one buffered, room for three. */
		assert_int_equal(cpat_chan_recv(ch, &w, tk), want);
		assert_int_equal(cpat_chan_recv_until(ch, &w, tk, CPAT_FOREVER),
				 want);
		assert_int_equal(cpat_chan_recv_until(ch, &w, tk, 0), want);
		assert_int_equal(
			cpat_chan_recv_many(ch, got, 2, &c, tk, CPAT_FOREVER),
			want);
		assert_int_equal(c, 0);
		assert_int_equal(w, 77);
		assert_int_equal(got[0], 77);
		assert_int_equal(cpat_chan_send(ch, &a, tk), want);
		assert_int_equal(cpat_chan_send_until(ch, &a, tk, CPAT_FOREVER),
				 want);
		assert_int_equal(cpat_chan_send_until(ch, &a, tk, 0), want);
		c = 99;
		assert_int_equal(
			cpat_chan_send_many(ch, many, 2, &c, tk, CPAT_FOREVER),
			want);
		assert_int_equal(c, 0);
		struct cpat_select_case sc[2] = {
			{ch, CPAT_SELECT_RECV, &w, 1},
			{ch, CPAT_SELECT_SEND, &a, 1},
		};
		assert_int_equal(cpat_chan_select(sc, 2, tk, CPAT_FOREVER),
				 want);
		assert_int_equal(cpat_chan_select(sc, 2, tk, 0), want);
		assert_int_equal(w, 77);
		assert_int_equal(cpat_chan_len(ch), 1);
		assert_int_equal(cpat_chan_recv(ch, &w, NULL), 0);
		assert_int_equal(w, 1);
		assert_int_equal(cpat_chan_try_recv(ch, &w), -EAGAIN);
		cpat_chan_destroy(ch);

		/* Rendezvous with a receiver waiting: the send under the
		 * fired token does not hand over. */
		ch = mk(sizeof(uint64_t), 0);
		struct op_thread o;
		op_init(&o, ch, OP_RECV, NULL, 0);
		op_start(&o);
		wait_blocked(ch, CPAT_SELECT_RECV, 1);
		a = 11;
		int rc = cpat_chan_send(ch, &a, tk);
		struct cpat_select_case s1 = {ch, CPAT_SELECT_SEND, &a, 1};
		int rc2 = cpat_chan_select(&s1, 1, tk, CPAT_FOREVER);
		int early = atomic_load(&o.done);
		size_t still = cpat__chan_nblocked(ch, CPAT_SELECT_RECV);
		a = 12;
		assert_int_equal(cpat_chan_send(ch, &a, NULL), 0);
		th_join(o.t);
		assert_int_equal(rc, want);
		assert_int_equal(rc2, want);
		assert_int_equal(early, 0);
		assert_int_equal(still, 1);
		assert_int_equal(o.rc, 0);
		assert_int_equal(o.got, 12);
		cpat_chan_destroy(ch);
	}
	cpat_token_unref(child);
	cpat_token_unref(past);
	cpat_token_unref(tok);
}

/* ---- deadlines ---------------------------------------------------------- */

TH_TEST_FN(chan_deadlines_never_fire_early)
{
	(void)state;
	struct cpat_chan *empty = mk(sizeof(uint64_t), 2);
	struct cpat_chan *full = mk(sizeof(uint64_t), 1);
	struct cpat_chan *rv = mk(sizeof(uint64_t), 0);
	uint64_t v = 1, w = 77, many[3] = {1, 2, 3};
	assert_int_equal(cpat_chan_send(full, &v, NULL), 0);
	const int64_t ds[] = {1 * CPAT_MSEC, 3 * CPAT_MSEC, 10 * CPAT_MSEC};
	for (int i = 0; i < 3; i++) {
		for (int form = 0; form < 9; form++) {
			int64_t dl = cpat_now_ns() + ds[i];
			size_t c = 99;
			int rc;
			struct cpat_select_case sc[3] = {
				{empty, CPAT_SELECT_RECV, &w, 1},
				{full, CPAT_SELECT_SEND, &v, 1},
				{rv, CPAT_SELECT_SEND, &v, 1},
			};
			struct cpat_token *tk = NULL;
			switch (form) {
			case 0:
				rc = cpat_chan_recv_until(empty, &w, NULL, dl);
				break;
			case 1:
				rc = cpat_chan_send_until(full, &v, NULL, dl);
				break;
			case 2:
				rc = cpat_chan_send_until(rv, &v, NULL, dl);
				break;
			case 3:
				rc = cpat_chan_recv_until(rv, &w, NULL, dl);
				break;
			case 4:
				rc = cpat_chan_recv_many(empty, many, 3, &c,
							 NULL, dl);
				break;
			case 5:
				rc = cpat_chan_send_many(full, many, 3, &c,
							 NULL, dl);
				break;
			case 6:
				rc = cpat_chan_select(sc, 3, NULL, dl);
				break;
			case 7: /* the token's deadline */
				assert_int_equal(cpat_token_create_deadline(
							 &tk, NULL, dl),
						 0);
				rc = cpat_chan_recv(rv, &w, tk);
				break;
			default:
				assert_int_equal(cpat_token_create_deadline(
							 &tk, NULL, dl),
						 0);
				rc = cpat_chan_send(full, &v, tk);
				break;
			}
			int64_t now = cpat_now_ns();
			cpat_token_unref(tk);
			if (rc != -ETIMEDOUT || now < dl)
				fprintf(stderr,
					"# form %d: rc %d, %lld ns early\n",
					form, rc, (long long)(dl - now));
			assert_int_equal(rc, -ETIMEDOUT);
			assert_true(now >= dl);
			if (form == 4 || form == 5)
				assert_int_equal(c, 0);
		}
	}
	assert_int_equal(w, 77);
	assert_int_equal(cpat_chan_len(empty), 0);
	assert_int_equal(cpat_chan_len(full), 1);
	cpat_chan_destroy(empty);
	cpat_chan_destroy(full);
	cpat_chan_destroy(rv);
}

TH_TEST_FN(chan_past_deadline_behaves_like_try)
{
	(void)state;
	int64_t pasts[] = {0, 1, cpat_now_ns() - CPAT_MSEC};
	for (int p = 0; p < 3; p++) {
		int64_t dl = pasts[p];
		uint64_t v = 1, w = 77;
		struct cpat_chan *ch = mk(sizeof(uint64_t), 2);
		assert_int_equal(cpat_chan_recv_until(ch, &w, NULL, dl),
				 -ETIMEDOUT);
		assert_int_equal(cpat_chan_send_until(ch, &v, NULL, dl), 0);
		v = 2;
		assert_int_equal(cpat_chan_send_until(ch, &v, NULL, dl), 0);
		v = 3;
		assert_int_equal(cpat_chan_send_until(ch, &v, NULL, dl),
				 -ETIMEDOUT);
		assert_int_equal(cpat_chan_len(ch), 2);
		assert_int_equal(cpat_chan_recv_until(ch, &w, NULL, dl), 0);
		assert_int_equal(w, 1);
		struct cpat_select_case sc = {ch, CPAT_SELECT_RECV, &w, 1};
		assert_int_equal(cpat_chan_select(&sc, 1, NULL, dl), 0);
		assert_int_equal(sc.rc, 0);
		assert_int_equal(w, 2);
		w = 77;
		assert_int_equal(cpat_chan_select(&sc, 1, NULL, dl),
				 -ETIMEDOUT);
		assert_int_equal(w, 77);
		assert_int_equal(cpat_chan_close(ch), 0);
		assert_int_equal(cpat_chan_send_until(ch, &v, NULL, dl),
				 -EPIPE);
		assert_int_equal(cpat_chan_recv_until(ch, &w, NULL, dl),
				 -EPIPE);
		cpat_chan_destroy(ch);

		/* Rendezvous: ready only with a peer blocked. */
		ch = mk(sizeof(uint64_t), 0);
		assert_int_equal(cpat_chan_send_until(ch, &v, NULL, dl),
				 -ETIMEDOUT);
		assert_int_equal(cpat_chan_recv_until(ch, &w, NULL, dl),
				 -ETIMEDOUT);
		struct op_thread o;
		op_init(&o, ch, OP_RECV, NULL, 0);
		op_start(&o);
		wait_blocked(ch, CPAT_SELECT_RECV, 1);
		v = 21;
		int rc = cpat_chan_send_until(ch, &v, NULL, dl);
		if (rc != 0)
			(void)cpat_chan_send(ch, &v, NULL);
		th_join(o.t);
		assert_int_equal(rc, 0);
		assert_int_equal(o.rc, 0);
		assert_int_equal(o.got, 21);
		op_init(&o, ch, OP_SEND, NULL, 22);
		op_start(&o);
		wait_blocked(ch, CPAT_SELECT_SEND, 1);
		rc = cpat_chan_recv_until(ch, &w, NULL, dl);
		if (rc != 0)
			(void)cpat_chan_recv(ch, &w, NULL);
		th_join(o.t);
		assert_int_equal(rc, 0);
		assert_int_equal(w, 22);
		assert_int_equal(o.rc, 0);
		cpat_chan_destroy(ch);
	}
}

/* Deadlines a few microseconds ahead, which may pass while the call still
 * spins on a full (empty) buffer: -ETIMEDOUT, not before the deadline, and
 * nothing sent or taken; then the same calls with room (an item) succeed.
 * The blocked-count hook counts nobody, and nothing for bad arguments. */
TH_TEST_FN(chan_deadline_passing_during_spin_etimedout_nothing_moves)
{
	(void)state;
	const int64_t aheads[] = {1, 1000, 10 * 1000, 100 * 1000};
	struct cpat_chan *ch = mk(sizeof(uint64_t), 1);
	uint64_t v = 5, w = 77;
	for (size_t i = 0; i < sizeof aheads / sizeof aheads[0]; i++) {
		int64_t dl = cpat_now_ns() + aheads[i];
		assert_int_equal(cpat_chan_recv_until(ch, &w, NULL, dl),
				 -ETIMEDOUT);
		assert_true(cpat_now_ns() >= dl);
		assert_int_equal(w, 77);
		assert_int_equal(cpat_chan_send(ch, &v, NULL), 0);
		dl = cpat_now_ns() + aheads[i];
		uint64_t x = 6;
		assert_int_equal(cpat_chan_send_until(ch, &x, NULL, dl),
				 -ETIMEDOUT);
		assert_true(cpat_now_ns() >= dl);
		assert_int_equal(cpat_chan_len(ch), 1);
		assert_int_equal(cpat__chan_nblocked(ch, CPAT_SELECT_SEND), 0);
		assert_int_equal(cpat__chan_nblocked(ch, CPAT_SELECT_RECV), 0);
		assert_int_equal(
			cpat_chan_recv_until(ch, &w, NULL, cpat_now_ns() + 10),
			0);
		assert_int_equal(w, 5);
		w = 77;
	}
	assert_int_equal(cpat__chan_nblocked(NULL, CPAT_SELECT_SEND), 0);
	assert_int_equal(cpat__chan_nblocked(ch, 12345), 0);
	cpat_chan_destroy(ch);
}

struct retry {
	struct th_barrier *b;
	struct cpat_chan *ch;
	struct retry *other;
	long n;
	int sender;
	_Atomic long retries;
	long bad;
};

/* Stalls until the other side has timed out at least once more: every
 * stall provokes a timeout there, however the threads are scheduled (a
 * stall of a fixed 30 ms did not when the machine was loaded enough to
 * keep the other side off the CPU for as long). */
static void stall(struct retry *r)
{
	long before = atomic_load(&r->other->retries);
	while (atomic_load(&r->other->retries) == before)
		th_relax();
}

static void *retry_main(void *arg)
{
	struct retry *r = arg;
	th_barrier_wait(r->b);
	for (long i = 0; i < r->n; i++) {
		/* The sender stalls at n/3 and 2n/3, the receiver at n/2
		 * and 5n/6: each side sees the other stall. */
		long a = r->sender ? r->n / 3 : r->n / 2;
		long b = r->sender ? 2 * r->n / 3 : 5 * r->n / 6;
		if (i == a || i == b)
			stall(r);
		uint64_t v = (uint64_t)i, w = UINT64_MAX;
		for (;;) {
			int64_t dl = cpat_now_ns() + 10 * CPAT_MSEC;
			int rc = r->sender ? cpat_chan_send_until(r->ch, &v,
								  NULL, dl)
					   : cpat_chan_recv_until(r->ch, &w,
								  NULL, dl);
			if (rc == 0)
				break;
			if (rc != -ETIMEDOUT) {
				r->bad++;
				break;
			}
			atomic_fetch_add(&r->retries, 1);
		}
		if (!r->sender && w != (uint64_t)i)
			r->bad++;
	}
	return NULL;
}

TH_TEST_FN(chan_deadline_retries_keep_order_nothing_lost)
{
	(void)state;
	for (size_t cap = 0; cap < 3; cap += 2) {
		struct cpat_chan *ch = mk(sizeof(uint64_t), cap);
		struct th_crew crew;
		th_crew_init(&crew, 2);
		long n = SIZE(3000, 300);
		struct retry s = {
			.b = &crew.start, .ch = ch, .n = n, .sender = 1};
		struct retry r = {
			.b = &crew.start, .ch = ch, .n = n, .sender = 0};
		s.other = &r;
		r.other = &s;
		th_crew_add(&crew, retry_main, &s);
		th_crew_add(&crew, retry_main, &r);
		th_crew_go(&crew);
		th_crew_join(&crew);
		fprintf(stderr,
			"# cap %zu: %ld send retries, %ld recv retries\n", cap,
			atomic_load(&s.retries), atomic_load(&r.retries));
		assert_int_equal(s.bad, 0);
		assert_int_equal(r.bad, 0);
		/* Each side stalled until the other had timed out. */
		assert_true(atomic_load(&r.retries) >= 2);
		assert_true(atomic_load(&s.retries) >= 2);
		uint64_t w;
		assert_int_equal(cpat_chan_try_recv(ch, &w), -EAGAIN);
		cpat_chan_destroy(ch);
	}
}

/* ---- lifetime ----------------------------------------------------------- */

struct cyc {
	struct cpat_chan *ch; /* set by main before each trial */
	long n, bad;
};

static void cyc_step(void *arg, long i)
{
	struct cyc *c = arg;
	/* Elements are 8 or 13 bytes: room for 16. */
	uint64_t v[2] = {(uint64_t)i, 0}, w[2] = {UINT64_MAX, 0};
	if (i & 1)
		c->bad += cpat_chan_send(c->ch, v, NULL) != 0;
	else
		c->bad += cpat_chan_recv(c->ch, w, NULL) != 0 ||
			  w[0] != (uint64_t)i;
}

TH_TEST_FN(chan_create_send_recv_destroy_cycles)
{
	(void)state;
	struct cyc c = {.n = SIZE(10000, 1000)};
	struct th_race race;
	th_race_start(&race, 1, c.n, cyc_step, &c, sizeof c);
	long bad = 0;
	for (long i = 0; i < c.n; i++) {
		c.ch = mk(i % 5 == 4 ? 13 : sizeof(uint64_t), (size_t)(i % 3));
		th_race_go(&race);
		uint64_t v[2] = {(uint64_t)i, 0}, w[2] = {UINT64_MAX, 0};
		if (i & 1)
			bad += cpat_chan_recv(c.ch, w, NULL) != 0 ||
			       w[0] != (uint64_t)i;
		else
			bad += cpat_chan_send(c.ch, v, NULL) != 0;
		th_race_end(&race); /* the worker is out of the channel */
		cpat_chan_destroy(c.ch);
	}
	th_race_join(&race);
	assert_int_equal(bad, 0);
	assert_int_equal(c.bad, 0);
}

/* ---- batches ------------------------------------------------------------ */

struct many_rx {
	pthread_t t;
	struct cpat_chan *ch;
	uint64_t *got;
	size_t want, have;
	long calls, bad;
};

static void *many_rx_main(void *arg)
{
	struct many_rx *m = arg;
	while (m->have < m->want) {
		size_t c = 99, ask = 1 + (size_t)(m->calls % 7);
		if (ask > m->want - m->have)
			ask = m->want - m->have;
		int rc = cpat_chan_recv_many(m->ch, m->got + m->have, ask, &c,
					     NULL, CPAT_FOREVER);
		m->calls++;
		if (rc != 0 || c < 1 || c > ask) {
			m->bad++;
			break;
		}
		m->have += c;
	}
	return NULL;
}

TH_TEST_FN(chan_send_many_recv_many_counts_order_and_close)
{
	(void)state;
	uint64_t src[32], dst[32];
	for (int i = 0; i < 32; i++)
		src[i] = 100 + (uint64_t)i;
	size_t c;

	/* Counts reported; recv_many takes what is there, up to n. */
	struct cpat_chan *ch = mk(sizeof(uint64_t), 8);
	c = 99;
	assert_int_equal(
		cpat_chan_send_many(ch, src, 5, &c, NULL, CPAT_FOREVER), 0);
	assert_int_equal(c, 5);
	assert_int_equal(cpat_chan_len(ch), 5);
	c = 99;
	assert_int_equal(
		cpat_chan_recv_many(ch, dst, 10, &c, NULL, CPAT_FOREVER), 0);
	assert_int_equal(c, 5);
	for (int i = 0; i < 5; i++)
		assert_int_equal(dst[i], src[i]);
	assert_int_equal(
		cpat_chan_send_many(ch, src + 5, 8, NULL, NULL, CPAT_FOREVER),
		0);
	assert_int_equal(cpat_chan_len(ch), 8);
	assert_int_equal(
		cpat_chan_recv_many(ch, dst, 3, &c, NULL, CPAT_FOREVER), 0);
	assert_int_equal(c, 3);
	assert_int_equal(
		cpat_chan_recv_many(ch, dst + 3, 10, NULL, NULL, CPAT_FOREVER),
		0);
	assert_int_equal(cpat_chan_len(ch), 0);
	for (int i = 0; i < 8; i++)
		assert_int_equal(dst[i], src[5 + i]);
	/* Past deadline on empty: nothing. */
	c = 99;
	assert_int_equal(cpat_chan_recv_many(ch, dst, 4, &c, NULL, 0),
			 -ETIMEDOUT);
	assert_int_equal(c, 0);
	/* Closed: drains in pieces, then -EPIPE with 0. */
	assert_int_equal(
		cpat_chan_send_many(ch, src, 3, &c, NULL, CPAT_FOREVER), 0);
	assert_int_equal(cpat_chan_close(ch), 0);
	assert_int_equal(
		cpat_chan_recv_many(ch, dst, 2, &c, NULL, CPAT_FOREVER), 0);
	assert_int_equal(c, 2);
	assert_int_equal(dst[0], 100);
	assert_int_equal(dst[1], 101);
	assert_int_equal(
		cpat_chan_recv_many(ch, dst, 5, &c, NULL, CPAT_FOREVER), 0);
	assert_int_equal(c, 1);
	assert_int_equal(dst[0], 102);
	c = 99;
	assert_int_equal(
		cpat_chan_recv_many(ch, dst, 5, &c, NULL, CPAT_FOREVER),
		-EPIPE);
	assert_int_equal(c, 0);
	c = 99;
	assert_int_equal(
		cpat_chan_send_many(ch, src, 2, &c, NULL, CPAT_FOREVER),
		-EPIPE);
	assert_int_equal(c, 0);
	cpat_chan_destroy(ch);

	/* More than the capacity, with a concurrent receiver: order kept. */
	for (size_t cap = 0; cap < 5; cap += 4) {
		ch = mk(sizeof(uint64_t), cap);
		struct many_rx m = {.ch = ch, .got = dst, .want = 32};
		memset(dst, 0, sizeof dst);
		th_spawn(&m.t, many_rx_main, &m);
		c = 99;
		int rc = cpat_chan_send_many(ch, src, 32, &c, NULL,
					     CPAT_FOREVER);
		th_join(m.t);
		assert_int_equal(rc, 0);
		assert_int_equal(c, 32);
		assert_int_equal(m.bad, 0);
		assert_int_equal(m.have, 32);
		for (int i = 0; i < 32; i++)
			assert_int_equal(dst[i], src[i]);
		cpat_chan_destroy(ch);
	}

	/* Blocked when full, then closed: reports how many went. */
	ch = mk(sizeof(uint64_t), 4);
	struct op_thread o;
	op_init(&o, ch, OP_SEND_MANY, NULL, 0);
	o.many = src;
	o.n = 10;
	o.count = 99;
	op_start(&o);
	wait_blocked(ch, CPAT_SELECT_SEND, 1);
	assert_int_equal(cpat_chan_close(ch), 0);
	th_join(o.t);
	assert_int_equal(o.rc, -EPIPE);
	assert_int_equal(o.count, 4);
	int last;
	assert_int_equal(drain(ch, dst, 32, &last), 4);
	for (int i = 0; i < 4; i++)
		assert_int_equal(dst[i], src[i]);
	assert_int_equal(last, -EPIPE);
	cpat_chan_destroy(ch);

	/* Blocked when full, then cancelled / timed out. */
	for (int how = 0; how < 2; how++) {
		ch = mk(sizeof(uint64_t), 4);
		struct cpat_token *tok = mktok(NULL);
		int64_t dl = cpat_now_ns() + 5 * CPAT_MSEC;
		op_init(&o, ch, OP_SEND_MANY, how ? NULL : tok, 0);
		o.many = src;
		o.n = 6;
		o.count = 99;
		o.deadline = how ? dl : CPAT_FOREVER;
		op_start(&o);
		if (!how) {
			wait_blocked(ch, CPAT_SELECT_SEND, 1);
			cpat_token_cancel(tok);
		}
		th_join(o.t);
		assert_int_equal(o.rc, how ? -ETIMEDOUT : -ECANCELED);
		if (how)
			assert_true(o.t_end >= dl);
		assert_int_equal(o.count, 4);
		assert_int_equal(drain(ch, dst, 32, &last), 4);
		assert_int_equal(last, -EAGAIN);
		cpat_token_unref(tok);
		cpat_chan_destroy(ch);
	}

	/* recv_many blocks for at least one, then takes only what is there. */
	ch = mk(sizeof(uint64_t), 4);
	uint64_t got[8] = {0};
	op_init(&o, ch, OP_RECV_MANY, NULL, 0);
	o.many = got;
	o.n = 8;
	o.count = 99;
	op_start(&o);
	wait_blocked(ch, CPAT_SELECT_RECV, 1);
	int early = atomic_load(&o.done);
	uint64_t v = 55;
	assert_int_equal(cpat_chan_try_send(ch, &v), 0);
	th_join(o.t);
	assert_int_equal(early, 0);
	assert_int_equal(o.rc, 0);
	assert_int_equal(o.count, 1);
	assert_int_equal(got[0], 55);
	cpat_chan_destroy(ch);

	/* Rendezvous: recv_many takes from the blocked senders, 1..K. */
	ch = mk(sizeof(uint64_t), 0);
	struct op_thread s[3];
	for (int i = 0; i < 3; i++) {
		op_init(&s[i], ch, OP_SEND, NULL, 200 + (uint64_t)i);
		op_start(&s[i]);
	}
	wait_blocked(ch, CPAT_SELECT_SEND, 3);
	memset(got, 0, sizeof got);
	c = 99;
	assert_int_equal(
		cpat_chan_recv_many(ch, got, 8, &c, NULL, CPAT_FOREVER), 0);
	assert_true(c >= 1 && c <= 3);
	size_t n = c;
	while (n < 3)
		assert_int_equal(cpat_chan_recv(ch, &got[n++], NULL), 0);
	unsigned mask = 0;
	for (int i = 0; i < 3; i++) {
		th_join(s[i].t);
		assert_int_equal(s[i].rc, 0);
		assert_true(got[i] >= 200 && got[i] < 203);
		mask |= 1u << (got[i] - 200);
	}
	assert_int_equal(mask, 7);
	assert_int_equal(cpat_chan_try_recv(ch, &v), -EAGAIN);
	cpat_chan_destroy(ch);
}

/* ---- select ------------------------------------------------------------- */

TH_TEST_FN(chan_select_fair_between_two_ready_cases)
{
	(void)state;
	const long n = 10000;
	for (int mode = 0; mode < 3; mode++) {
		/* 0: two recv; 1: two send; 2: recv and send. */
		struct cpat_chan *a = mk(sizeof(uint64_t), 4);
		struct cpat_chan *b = mk(sizeof(uint64_t), 4);
		uint64_t v = 1, w;
		if (mode == 0 || mode == 2)
			assert_int_equal(cpat_chan_send(a, &v, NULL), 0);
		if (mode == 0)
			assert_int_equal(cpat_chan_send(b, &v, NULL), 0);
		struct cpat_select_case sc[2] = {
			{a, mode == 1 ? CPAT_SELECT_SEND : CPAT_SELECT_RECV, &w,
			 1},
			{b, mode == 0 ? CPAT_SELECT_RECV : CPAT_SELECT_SEND, &v,
			 1},
		};
		if (mode == 1)
			sc[0].elem = &v;
		else
			sc[1].elem = mode == 0 ? (void *)&w : (void *)&v;
		long count[2] = {0, 0}, bad = 0;
		for (long i = 0; i < n; i++) {
			int r = cpat_chan_select(sc, 2, NULL, CPAT_FOREVER);
			if (r < 0 || r > 1 || sc[r].rc != 0) {
				bad++;
				continue;
			}
			count[r]++;
			/* Restore the state: refill what was taken, take
			 * what was sent. */
			struct cpat_chan *ch = r ? b : a;
			if (sc[r].op == CPAT_SELECT_RECV)
				bad += cpat_chan_try_send(ch, &v) != 0;
			else
				bad += cpat_chan_try_recv(ch, &w) != 0;
			bad += cpat_chan_len(a) != (mode == 1 ? 0u : 1u);
			bad += cpat_chan_len(b) != (mode == 0 ? 1u : 0u);
		}
		fprintf(stderr, "# mode %d: %ld / %ld\n", mode, count[0],
			count[1]);
		assert_int_equal(bad, 0);
		assert_in_range(count[0], n * 35 / 100, n * 65 / 100);
		assert_in_range(count[1], n * 35 / 100, n * 65 / 100);
		cpat_chan_destroy(a);
		cpat_chan_destroy(b);
	}
}

TH_TEST_FN(chan_select_send_over_4_rendezvous_no_double_commit)
{
	(void)state;
	long n = SIZE(100000, 2000);
	struct cpat_chan *ch[4];
	/* The receivers: consumers (cons_main) of one producer. */
	struct cons rx[4];
	struct th_crew crew;
	th_crew_init(&crew, 4);
	for (int i = 0; i < 4; i++) {
		ch[i] = mk(sizeof(uint64_t), 0);
		rx[i] = (struct cons){.b = &crew.start,
				      .ch = ch[i],
				      .room = (size_t)n,
				      .nprod = 1};
		rx[i].got = malloc((size_t)n * sizeof(uint64_t));
		rx[i].next_seq = calloc(1, sizeof(uint32_t));
	}
	th_crew_add_n(&crew, 4, cons_main, rx, sizeof rx[0]);
	th_crew_go(&crew);
	long per[4] = {0}, bad = 0;
	uint64_t vals[4];
	struct cpat_select_case sc[4];
	for (int i = 0; i < 4; i++)
		sc[i] = (struct cpat_select_case){ch[i], CPAT_SELECT_SEND,
						  &vals[i], 1};
	for (long i = 0; i < n; i++) {
		for (int j = 0; j < 4; j++)
			vals[j] = (uint64_t)i;
		int r = cpat_chan_select(sc, 4, NULL, CPAT_FOREVER);
		if (r < 0 || r > 3 || sc[r].rc != 0) {
			bad++;
			continue;
		}
		per[r]++;
	}
	for (int i = 0; i < 4; i++)
		assert_int_equal(cpat_chan_close(ch[i]), 0);
	th_crew_join(&crew);
	unsigned char *seen = calloc((size_t)n, 1);
	long dup = 0, foreign = 0, total = 0, mism = 0;
	for (int i = 0; i < 4; i++) {
		mism += (long)rx[i].ngot != per[i];
		mism += rx[i].last_rc != -EPIPE;
		for (size_t j = 0; j < rx[i].ngot && j < rx[i].room; j++) {
			uint64_t v = rx[i].got[j];
			if (v >= (uint64_t)n) {
				foreign++;
				continue;
			}
			dup += seen[v]++ != 0;
			/* Each receiver sees increasing values. */
			if (j > 0 && rx[i].got[j - 1] >= v)
				mism++;
		}
		total += (long)rx[i].ngot;
		free(rx[i].got);
		free(rx[i].next_seq);
		cpat_chan_destroy(ch[i]);
	}
	free(seen);
	fprintf(stderr, "# per channel: %ld %ld %ld %ld\n", per[0], per[1],
		per[2], per[3]);
	assert_int_equal(bad, 0);
	assert_int_equal(dup, 0);
	assert_int_equal(foreign, 0);
	assert_int_equal(mism, 0);
	assert_int_equal(total, n);
}

TH_TEST_FN(chan_select_same_channel_twice_completes_one_case)
{
	(void)state;
	struct cpat_chan *ch = mk(sizeof(uint64_t), 4);
	long chosen[2] = {0, 0};
	for (int i = 0; i < 200; i++) {
		uint64_t v = (uint64_t)i, w[2] = {77, 77};
		assert_int_equal(cpat_chan_send(ch, &v, NULL), 0);
		struct cpat_select_case sc[2] = {
			{ch, CPAT_SELECT_RECV, &w[0], 1},
			{ch, CPAT_SELECT_RECV, &w[1], 1},
		};
		int r = cpat_chan_select(sc, 2, NULL, CPAT_FOREVER);
		assert_true(r == 0 || r == 1);
		chosen[r]++;
		assert_int_equal(sc[r].rc, 0);
		assert_int_equal(w[r], v);
		assert_int_equal(w[1 - r], 77);
		assert_int_equal(cpat_chan_len(ch), 0);
		assert_int_equal(cpat_chan_select(sc, 2, NULL, 0), -ETIMEDOUT);
	}
	assert_true(chosen[0] > 0 && chosen[1] > 0);
	cpat_chan_destroy(ch);

	/* Two sends with room for one. */
	ch = mk(sizeof(uint64_t), 1);
	uint64_t a = 1, b = 2, w;
	struct cpat_select_case ss[2] = {
		{ch, CPAT_SELECT_SEND, &a, 1},
		{ch, CPAT_SELECT_SEND, &b, 1},
	};
	int r = cpat_chan_select(ss, 2, NULL, CPAT_FOREVER);
	assert_true(r == 0 || r == 1);
	assert_int_equal(cpat_chan_len(ch), 1);
	assert_int_equal(cpat_chan_select(ss, 2, NULL, 0), -ETIMEDOUT);
	assert_int_equal(cpat_chan_recv(ch, &w, NULL), 0);
	assert_int_equal(w, r == 0 ? 1 : 2);
	cpat_chan_destroy(ch);

	/* Rendezvous, one sender blocked: exactly one of two recv cases. */
	ch = mk(sizeof(uint64_t), 0);
	struct op_thread o;
	op_init(&o, ch, OP_SEND, NULL, 33);
	op_start(&o);
	wait_blocked(ch, CPAT_SELECT_SEND, 1);
	uint64_t g[2] = {77, 77};
	struct cpat_select_case sr[2] = {
		{ch, CPAT_SELECT_RECV, &g[0], 1},
		{ch, CPAT_SELECT_RECV, &g[1], 1},
	};
	r = cpat_chan_select(sr, 2, NULL, CPAT_FOREVER);
	th_join(o.t);
	assert_true(r == 0 || r == 1);
	assert_int_equal(g[r], 33);
	assert_int_equal(g[1 - r], 77);
	assert_int_equal(o.rc, 0);
	assert_int_equal(cpat_chan_select(sr, 2, NULL, 0), -ETIMEDOUT);
	cpat_chan_destroy(ch);
}

TH_TEST_FN(chan_select_send_and_recv_on_same_rendezvous_never_pair)
{
	(void)state;
	struct cpat_chan *ch = mk(sizeof(uint64_t), 0);
	uint64_t v = 5, w = 77;
	struct cpat_select_case sc[2] = {
		{ch, CPAT_SELECT_SEND, &v, 1},
		{ch, CPAT_SELECT_RECV, &w, 1},
	};
	for (int i = 0; i < 5; i++) {
		int64_t dl = cpat_now_ns() + 20 * CPAT_MSEC;
		int r = cpat_chan_select(sc, 2, NULL, dl);
		int64_t now = cpat_now_ns();
		assert_int_equal(r, -ETIMEDOUT);
		assert_true(now >= dl);
		assert_int_equal(cpat_chan_select(sc, 2, NULL, 0), -ETIMEDOUT);
		assert_int_equal(w, 77);
	}
	/* With a real peer, the matching case completes. */
	struct op_thread o;
	op_init(&o, ch, OP_RECV, NULL, 0);
	op_start(&o);
	wait_blocked(ch, CPAT_SELECT_RECV, 1);
	int r = cpat_chan_select(sc, 2, NULL, CPAT_FOREVER);
	th_join(o.t);
	assert_int_equal(r, 0);
	assert_int_equal(sc[0].rc, 0);
	assert_int_equal(o.got, 5);
	assert_int_equal(w, 77);
	op_init(&o, ch, OP_SEND, NULL, 6);
	op_start(&o);
	wait_blocked(ch, CPAT_SELECT_SEND, 1);
	r = cpat_chan_select(sc, 2, NULL, CPAT_FOREVER);
	th_join(o.t);
	assert_int_equal(r, 1);
	assert_int_equal(sc[1].rc, 0);
	assert_int_equal(w, 6);
	assert_int_equal(o.rc, 0);
	cpat_chan_destroy(ch);
}

TH_TEST_FN(chan_select_closed_case_is_ready_with_epipe)
{
	(void)state;
	struct cpat_chan *open = mk(sizeof(uint64_t), 2);
	struct cpat_chan *closed = mk(sizeof(uint64_t), 2);
	uint64_t v = 4, w = 77, w2 = 77;
	assert_int_equal(cpat_chan_send(closed, &v, NULL), 0);
	assert_int_equal(cpat_chan_close(closed), 0);
	/* Closed but not drained: the element first. */
	struct cpat_select_case sc[2] = {
		{open, CPAT_SELECT_RECV, &w, 1},
		{closed, CPAT_SELECT_RECV, &w2, 1},
	};
	assert_int_equal(cpat_chan_select(sc, 2, NULL, CPAT_FOREVER), 1);
	assert_int_equal(sc[1].rc, 0);
	assert_int_equal(w2, 4);
	/* Drained: ready with -EPIPE, nothing written. */
	w2 = 77;
	for (int i = 0; i < 10; i++) {
		sc[1].rc = 1;
		assert_int_equal(cpat_chan_select(sc, 2, NULL, CPAT_FOREVER),
				 1);
		assert_int_equal(sc[1].rc, -EPIPE);
		assert_int_equal(w2, 77);
		assert_int_equal(w, 77);
	}
	/* A send case on a closed channel: ready, -EPIPE, nothing sent. */
	struct cpat_chan *cl2 = mk(sizeof(uint64_t), 2);
	assert_int_equal(cpat_chan_close(cl2), 0);
	struct cpat_select_case ss[2] = {
		{open, CPAT_SELECT_RECV, &w, 1},
		{cl2, CPAT_SELECT_SEND, &v, 1},
	};
	assert_int_equal(cpat_chan_select(ss, 2, NULL, 0), 1);
	assert_int_equal(ss[1].rc, -EPIPE);
	assert_int_equal(cpat_chan_len(cl2), 0);
	assert_int_equal(cpat_chan_try_recv(cl2, &w), -EPIPE);
	assert_int_equal(w, 77);

	/* A blocked select is woken by close. */
	struct cpat_chan *later = mk(sizeof(uint64_t), 0);
	struct cpat_select_case sb[2] = {
		{open, CPAT_SELECT_RECV, &w, 1},
		{later, CPAT_SELECT_RECV, &w2, 1},
	};
	struct op_thread o;
	op_init(&o, NULL, OP_SELECT, NULL, 0);
	o.cases = sb;
	o.ncases = 2;
	op_start(&o);
	wait_blocked_hint(later, CPAT_SELECT_RECV, 1, 100000);
	assert_int_equal(cpat_chan_close(later), 0);
	th_join(o.t);
	assert_int_equal(o.rc, 1);
	assert_int_equal(sb[1].rc, -EPIPE);
	assert_int_equal(w, 77);
	assert_int_equal(w2, 77);
	cpat_chan_destroy(open);
	cpat_chan_destroy(closed);
	cpat_chan_destroy(cl2);
	cpat_chan_destroy(later);
}

TH_TEST_FN(chan_select_nonblocking_never_misses_ready_case)
{
	(void)state;
	struct cpat_chan *ready = mk(sizeof(uint64_t), 4);
	struct cpat_chan *empty = mk(sizeof(uint64_t), 4);
	struct cpat_chan *full = mk(sizeof(uint64_t), 1);
	uint64_t v = 1, w = 0, x = 0;
	assert_int_equal(cpat_chan_send(ready, &v, NULL), 0);
	assert_int_equal(cpat_chan_send(full, &v, NULL), 0);
	struct cpat_select_case sc[4] = {
		{NULL, CPAT_SELECT_RECV, &x, 1},
		{empty, CPAT_SELECT_RECV, &x, 1},
		{ready, CPAT_SELECT_RECV, &w, 1},
		{full, CPAT_SELECT_SEND, &v, 1},
	};
	long bad = 0;
	for (long i = 0; i < 10000; i++) {
		w = 0;
		int r = cpat_chan_select(sc, 4, NULL,
					 i & 1 ? 0 : cpat_now_ns() - 1);
		bad += r != 2 || sc[2].rc != 0 || w != v;
		v++;
		bad += cpat_chan_try_send(ready, &v) != 0;
	}
	assert_int_equal(bad, 0);
	assert_int_equal(cpat_chan_len(full), 1);

	/* Rendezvous: a blocked sender is a ready case. */
	struct cpat_chan *rv = mk(sizeof(uint64_t), 0);
	long n = SIZE(300, 100);
	struct th_crew crew;
	th_crew_init(&crew, 1);
	struct prod p = {
		.b = &crew.start, .ch = rv, .pid = 0, .n = (uint32_t)n};
	th_crew_add(&crew, prod_main, &p);
	th_crew_go(&crew);
	struct cpat_select_case sr[2] = {
		{empty, CPAT_SELECT_RECV, &x, 1},
		{rv, CPAT_SELECT_RECV, &w, 1},
	};
	for (long i = 0; i < n; i++) {
		/* The sender is out of its previous send (no longer counted
		 * as blocked), then blocked in the next one. */
		while (atomic_load(&p.returned) != (uint32_t)i)
			th_relax();
		wait_blocked(rv, CPAT_SELECT_SEND, 1);
		int r = cpat_chan_select(sr, 2, NULL, 0);
		if (r != 1 || sr[1].rc != 0 || w != (uint64_t)i) {
			fprintf(stderr, "# item %ld: select %d, value %llu\n",
				i, r, (unsigned long long)w);
			bad++;
			if (r != 1) /* take it anyway, to stay in step */
				(void)cpat_chan_recv(rv, &w, NULL);
		}
	}
	th_crew_join(&crew);
	assert_int_equal(bad, 0);
	assert_int_equal(p.sent_ok, (uint32_t)n);

	/* And a blocked receiver makes a send case ready. */
	struct op_thread o;
	op_init(&o, rv, OP_RECV, NULL, 0);
	op_start(&o);
	wait_blocked(rv, CPAT_SELECT_RECV, 1);
	v = 999;
	struct cpat_select_case s1[2] = {
		{full, CPAT_SELECT_SEND, &v, 1},
		{rv, CPAT_SELECT_SEND, &v, 1},
	};
	int r = cpat_chan_select(s1, 2, NULL, 0);
	if (r != 1)
		(void)cpat_chan_send(rv, &v, NULL);
	th_join(o.t);
	assert_int_equal(r, 1);
	assert_int_equal(o.got, 999);
	cpat_chan_destroy(ready);
	cpat_chan_destroy(empty);
	cpat_chan_destroy(full);
	cpat_chan_destroy(rv);
}

TH_TEST_FN(chan_select_cancelled_by_token_completes_no_case)
{
	(void)state;
	for (int how = 0; how < 3; how++) {
		/* 0: cancel the token; 1: cancel its parent; 2: its deadline.
		 */
		struct cpat_chan *empty = mk(sizeof(uint64_t), 2);
		struct cpat_chan *full = mk(sizeof(uint64_t), 1);
		struct cpat_chan *rv = mk(sizeof(uint64_t), 0);
		uint64_t v = 1, w = 77;
		assert_int_equal(cpat_chan_send(full, &v, NULL), 0);
		struct cpat_token *parent = mktok(NULL), *tok = NULL;
		int64_t dl = cpat_now_ns() + 10 * CPAT_MSEC;
		if (how == 2)
			assert_int_equal(
				cpat_token_create_deadline(&tok, parent, dl),
				0);
		else
			tok = mktok(parent);
		v = 2;
		struct cpat_select_case sc[5] = {
			{empty, CPAT_SELECT_RECV, &w, 1},
			{full, CPAT_SELECT_SEND, &v, 1},
			{NULL, CPAT_SELECT_RECV, &w, 1},
			{rv, CPAT_SELECT_RECV, &w, 1},
			{rv, CPAT_SELECT_SEND, &v, 1},
		};
		struct op_thread o;
		op_init(&o, NULL, OP_SELECT, tok, 0);
		o.cases = sc;
		o.ncases = 5;
		op_start(&o);
		wait_blocked_hint(empty, CPAT_SELECT_RECV, 1, 100000);
		if (how == 0)
			cpat_token_cancel(tok);
		else if (how == 1)
			cpat_token_cancel(parent);
		th_join(o.t);
		assert_int_equal(o.rc, how == 2 ? -ETIMEDOUT : -ECANCELED);
		if (how == 2)
			assert_true(o.t_end >= dl);
		assert_int_equal(w, 77);
		uint64_t vals[4];
		int last;
		assert_int_equal(drain(full, vals, 4, &last), 1);
		assert_int_equal(vals[0], 1);
		assert_int_equal(cpat_chan_len(empty), 0);
		/* No select waiter remains on the rendezvous channel. */
		assert_int_equal(cpat_chan_try_send(rv, &v), -EAGAIN);
		assert_int_equal(cpat_chan_try_recv(rv, &w), -EAGAIN);
		cpat_token_unref(tok);
		cpat_token_unref(parent);
		cpat_chan_destroy(empty);
		cpat_chan_destroy(full);
		cpat_chan_destroy(rv);
	}
}

TH_TEST_FN(chan_select_null_channel_case_never_chosen)
{
	(void)state;
	struct cpat_chan *ch = mk(sizeof(uint64_t), 2);
	uint64_t v = 1, w = 0, x = 77;
	assert_int_equal(cpat_chan_send(ch, &v, NULL), 0);
	struct cpat_select_case sc[3] = {
		{NULL, CPAT_SELECT_RECV, &x, 1},
		{ch, CPAT_SELECT_RECV, &w, 1},
		{NULL, CPAT_SELECT_SEND, &x, 1},
	};
	long bad = 0;
	for (int i = 0; i < 1000; i++) {
		int r = cpat_chan_select(sc, 3, NULL, i & 1 ? 0 : CPAT_FOREVER);
		bad += r != 1 || sc[1].rc != 0 || w != v;
		bad += cpat_chan_try_send(ch, &v) != 0;
	}
	assert_int_equal(bad, 0);
	assert_int_equal(x, 77);
	/* Only NULL channels: waits out its deadline, or its token. */
	int64_t dl = cpat_now_ns() + 2 * CPAT_MSEC;
	int r = cpat_chan_select(sc, 1, NULL, dl);
	assert_int_equal(r, -ETIMEDOUT);
	assert_true(cpat_now_ns() >= dl);
	struct cpat_token *tok = mktok(NULL);
	struct cpat_select_case nul[2] = {
		{NULL, CPAT_SELECT_RECV, &x, 1},
		{NULL, CPAT_SELECT_SEND, &x, 1},
	};
	struct op_thread o;
	op_init(&o, NULL, OP_SELECT, tok, 0);
	o.cases = nul;
	o.ncases = 2;
	op_start(&o);
	cpat_token_cancel(tok);
	th_join(o.t);
	assert_int_equal(o.rc, -ECANCELED);
	assert_int_equal(x, 77);
	cpat_token_unref(tok);
	cpat_chan_destroy(ch);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		/* Allocator tests first: nothing else allocates yet. */
		TH_TEST(chan_create_enomem_leaks_nothing),
		TH_TEST(chan_no_allocation_per_operation),
		TH_TEST(chan_create_bad_arguments_einval),
		TH_TEST(chan_operations_bad_arguments_einval),
		TH_TEST(chan_select_bad_arguments_einval),
		TH_TEST(chan_round_trip_capacities_by_element_sizes),
		TH_TEST(chan_fifo_across_ring_wraparound),
		TH_TEST(chan_len_matches_reference_queue_random_ops),
		TH_TEST(chan_try_ops_on_full_empty_and_closed),
		TH_TEST(chan_recv_after_close_drains_then_epipe),
		TH_TEST(chan_send_after_close_epipe_leaves_nothing),
		TH_TEST(chan_double_close_epipe_changes_nothing),
		TH_TEST(chan_concurrent_closers_exactly_one_wins),
		TH_TEST(chan_destroy_drops_undelivered_in_fifo_order),
		TH_TEST(chan_close_wakes_blocked_receivers),
		TH_TEST(chan_close_wakes_blocked_senders_buffer_still_drains),
		TH_TEST(chan_per_producer_fifo_4_producers_4_consumers),
		TH_TEST(chan_exactly_once_producers_by_consumers_by_capacity),
		TH_TEST(chan_senders_racing_close_sent_equals_received),
		TH_TEST(chan_rendezvous_blocks_each_side_alone_completes_when_paired),
		TH_TEST(chan_rendezvous_waiters_served_in_arrival_order),
		TH_TEST(chan_payload_written_before_send_visible_after_recv),
		TH_TEST(chan_cancel_wakes_blocked_send_and_recv_without_side_effect),
		TH_TEST(chan_cancel_racing_completion_is_all_or_nothing),
		TH_TEST(chan_token_cancel_wakes_64_ops_on_8_channels),
		TH_TEST(chan_token_released_while_blocked_then_cancelled_no_use_after_free),
		TH_TEST(chan_fired_token_fails_even_when_ready_and_nothing_moves),
		TH_TEST(chan_deadlines_never_fire_early),
		TH_TEST(chan_past_deadline_behaves_like_try),
		TH_TEST(chan_deadline_passing_during_spin_etimedout_nothing_moves),
		TH_TEST(chan_deadline_retries_keep_order_nothing_lost),
		TH_TEST(chan_create_send_recv_destroy_cycles),
		TH_TEST(chan_send_many_recv_many_counts_order_and_close),
		TH_TEST(chan_select_fair_between_two_ready_cases),
		TH_TEST(chan_select_send_over_4_rendezvous_no_double_commit),
		TH_TEST(chan_select_same_channel_twice_completes_one_case),
		TH_TEST(chan_select_send_and_recv_on_same_rendezvous_never_pair),
		TH_TEST(chan_select_closed_case_is_ready_with_epipe),
		TH_TEST(chan_select_nonblocking_never_misses_ready_case),
		TH_TEST(chan_select_cancelled_by_token_completes_no_case),
		TH_TEST(chan_select_null_channel_case_never_chosen),
	};
	/* CPAT_TEST_FILTER=chan_select_* runs a subset (cmocka's pattern). */
	const char *filter = getenv("CPAT_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	return TH_RUN("chan", tests);
}
