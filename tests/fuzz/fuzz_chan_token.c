/*
 * Model-based fuzzing of channels and cancellation tokens.
 *
 * The input is read as a program: each step takes an opcode byte and a few
 * argument bytes and performs one channel or token operation in this single
 * thread. Every result is checked against a reference model kept beside the
 * real objects:
 *
 *   - a channel is a FIFO queue of at most `cap` elements plus a closed
 *     flag; capacity 0 holds nothing, and since no other thread is ever
 *     there to pair with, every rendezvous send or receive that needs a
 *     partner must fail (-EAGAIN for try_, -ETIMEDOUT for a past deadline);
 *   - a token is a node of a tree with a cause (0 while live); cancel fires
 *     the node and every live descendant with -ECANCELED, a child of a fired
 *     parent is born with the parent's cause, a deadline token with a past
 *     deadline is born fired with -ETIMEDOUT, and the first cause stays.
 *
 * Checked: every return code (including -EINVAL for bad arguments and
 * -ENOMEM under injected allocation failures), every received value, the
 * counts of send_many / recv_many, that a failed receive leaves the buffer
 * untouched, that select completes exactly one ready case (any of them: the
 * choice is random) and writes nothing else, cpat_chan_len / cap /
 * elem_size / is_closed after every step, and that destroy hands exactly
 * the undelivered elements to the drop callback, in FIFO order.
 *
 * Operations that would block are always given a deadline in the past, so
 * a run is deterministic and never waits.
 *
 * Built two ways (tests/fuzz/meson.build): as a libFuzzer target (clang,
 * -fsanitize=fuzzer), and with -DCPAT_FUZZ_STANDALONE as a plain program
 * that replays files and directories given as arguments, or runs random
 * inputs for -seconds=N (any compiler). See tests/fuzz/README.md.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpattern.h"

#define MAX_CHANS 4
#define MAX_CAP 8
#define MAX_ESZ 16
#define MAX_NODES 64
#define MAX_MANY 10
#define MAX_CASES 4

/* ---- failure reporting ------------------------------------------------ */

static const uint8_t *cur_data;
static size_t cur_size;
static size_t cur_step;

static void save_input(void);

static void fail(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr,
		"fuzz_chan_token: model mismatch at step %zu: ", cur_step);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	save_input();
	abort();
}

#define EXPECT_RC(what, got, want)                                            \
	do {                                                                  \
		int g_ = (got), w_ = (want);                                  \
		if (g_ != w_)                                                 \
			fail("%s returned %d (%s), model says %d (%s)", what, \
			     g_, cpat_strerror(g_), w_, cpat_strerror(w_));   \
	} while (0)

/* ---- allocator with injected failures --------------------------------- */

/* Allocation number `fail_at` (counted from 1 after arming) fails; 0 = off.
 * Installed once, before the first object exists. */
static _Atomic long alloc_calls, fail_at;

static void *fz_malloc(size_t n)
{
	if (fail_at > 0 && ++alloc_calls == fail_at)
		return NULL;
	return malloc(n);
}

static void fz_free(void *p)
{
	free(p);
}

static void arm_alloc_failure(long k)
{
	alloc_calls = 0;
	fail_at = k;
}

/* ---- input reader ----------------------------------------------------- */

struct input {
	const uint8_t *p;
	size_t n, i;
};

static bool more(const struct input *in)
{
	return in->i < in->n;
}

static unsigned byte(struct input *in)
{
	return in->i < in->n ? in->p[in->i++] : 0;
}

/* ---- model ------------------------------------------------------------ */

struct mchan {
	struct cpat_chan *ch; /* NULL: slot empty */
	size_t esz, cap;
	bool closed, has_drop;
	uint8_t q[MAX_CAP][MAX_ESZ]; /* FIFO ring */
	size_t head, len;
	/* Drops seen during destroy. */
	uint8_t drops[MAX_CAP][MAX_ESZ];
	size_t ndrops;
	bool drop_overflow;
};

struct mnode {
	struct cpat_token *t; /* valid while handles > 0 */
	int parent;           /* node index, or -1 */
	int cause;            /* 0 live, or -ECANCELED / -ETIMEDOUT */
	int handles;          /* references this program holds */
};

static struct mchan chans[MAX_CHANS];
/* What the runs exercised (printed by the standalone driver). */
static struct {
	long steps, sent, received, selected, fired, dropped, enomem;
} stats;
static struct mnode nodes[MAX_NODES];
static int nnodes;
static uint32_t elem_counter;

static void make_elem(uint8_t *e, size_t esz)
{
	/* Distinct elements (up to 2^32, wrapping in one byte for esz 1). */
	uint32_t v = ++elem_counter;
	for (size_t i = 0; i < esz; i++)
		e[i] = (uint8_t)((v >> (8 * (i % 4))) + (uint8_t)(i * 31));
}

static void mq_push(struct mchan *m, const uint8_t *e)
{
	memcpy(m->q[(m->head + m->len) % MAX_CAP], e, m->esz);
	m->len++;
}

static const uint8_t *mq_front(const struct mchan *m)
{
	return m->q[m->head];
}

static void mq_pop(struct mchan *m)
{
	m->head = (m->head + 1) % MAX_CAP;
	m->len--;
}

static void drop_cb(void *elem, void *arg)
{
	struct mchan *m = arg;
	if (m->ndrops >= MAX_CAP) {
		m->drop_overflow = true;
		return;
	}
	memcpy(m->drops[m->ndrops++], elem, m->esz);
}

/* Picks a channel slot from a byte: the slot, or NULL if it is empty. */
static struct mchan *pick_chan(struct input *in)
{
	struct mchan *m = &chans[byte(in) % MAX_CHANS];
	return m->ch ? m : NULL;
}

/* Picks a token from a byte: NULL (about a third of the time, and when
 * the chosen node has no handle), else a node this program holds. */
static int pick_node(struct input *in)
{
	unsigned b = byte(in);
	if (b % 3 == 0 || nnodes == 0)
		return -1;
	int i = (int)((b / 3) % (unsigned)nnodes);
	return nodes[i].handles > 0 ? i : -1;
}

static struct cpat_token *node_tok(int i)
{
	return i < 0 ? NULL : nodes[i].t;
}

static int node_cause(int i)
{
	return i < 0 ? 0 : nodes[i].cause;
}

static bool is_descendant(int i, int anc)
{
	for (; i >= 0; i = nodes[i].parent)
		if (i == anc)
			return true;
	return false;
}

static void check_chan(const struct mchan *m)
{
	if (!m->ch)
		return;
	size_t len = cpat_chan_len(m->ch);
	size_t want = m->cap ? m->len : 0;
	if (len != want)
		fail("cpat_chan_len %zu, model %zu (cap %zu)", len, want,
		     m->cap);
	if (cpat_chan_cap(m->ch) != m->cap)
		fail("cpat_chan_cap %zu, model %zu", cpat_chan_cap(m->ch),
		     m->cap);
	if (cpat_chan_elem_size(m->ch) != m->esz)
		fail("cpat_chan_elem_size %zu, model %zu",
		     cpat_chan_elem_size(m->ch), m->esz);
	EXPECT_RC("cpat_chan_is_closed", cpat_chan_is_closed(m->ch),
		  m->closed ? 1 : 0);
}

static void check_tokens(void)
{
	for (int i = 0; i < nnodes; i++)
		if (nodes[i].handles > 0)
			EXPECT_RC("cpat_token_status",
				  cpat_token_status(nodes[i].t),
				  nodes[i].cause);
}

/* A buffer for received elements: a canary pattern, then checked. */
static void canary(uint8_t *b, size_t n)
{
	memset(b, 0xA5, n);
}

static void expect_canary(const uint8_t *b, size_t n, const char *what)
{
	for (size_t i = 0; i < n; i++)
		if (b[i] != 0xA5)
			fail("%s wrote its buffer though it failed or was not "
			     "chosen",
			     what);
}

static void expect_front(struct mchan *m, const uint8_t *got, const char *what)
{
	if (memcmp(got, mq_front(m), m->esz) != 0)
		fail("%s received an element other than the model's front",
		     what);
	mq_pop(m);
}

/* ---- operations ------------------------------------------------------- */

static void op_create(struct input *in)
{
	struct mchan *m = &chans[byte(in) % MAX_CHANS];
	unsigned a = byte(in), b = byte(in);
	if (m->ch)
		return; /* slot taken: the destroy op frees it */
	size_t cap = a % (MAX_CAP + 1), esz = 1 + b % MAX_ESZ;
	bool with_drop = (a / (MAX_CAP + 1)) % 2;
	long inject = (b / MAX_ESZ) % 4; /* 1..3: fail that allocation */
	struct cpat_chan *ch = (struct cpat_chan *)&ch; /* must become NULL */
	int rc;

	arm_alloc_failure(inject);
	if (with_drop) {
		struct cpat_chan_opts o;
		cpat_chan_opts_init(&o);
		o.elem_size = esz;
		o.capacity = cap;
		o.drop = drop_cb;
		o.drop_arg = m;
		rc = cpat_chan_create_opts(&ch, &o);
	} else {
		rc = cpat_chan_create(&ch, esz, cap);
	}
	long calls = alloc_calls;
	arm_alloc_failure(0);

	if (rc == -ENOMEM && inject > 0 && calls >= inject) {
		if (ch != NULL)
			fail("create failed with -ENOMEM but *out is not NULL");
		stats.enomem++;
		return;
	}
	EXPECT_RC("cpat_chan_create", rc, 0);
	if (!ch)
		fail("create returned 0 with *out NULL");
	memset(m, 0, sizeof *m);
	m->ch = ch;
	m->cap = cap;
	m->esz = esz;
	m->has_drop = with_drop;
}

static void op_destroy(struct input *in)
{
	struct mchan *m = pick_chan(in);
	if (!m)
		return;
	m->ndrops = 0;
	m->drop_overflow = false;
	cpat_chan_destroy(m->ch);
	m->ch = NULL;
	size_t want = (m->has_drop && m->cap) ? m->len : 0;
	if (m->drop_overflow || m->ndrops != want)
		fail("destroy dropped %zu%s elements, model holds %zu",
		     m->ndrops, m->drop_overflow ? "+" : "", want);
	for (size_t i = 0; i < want; i++) {
		if (memcmp(m->drops[i], mq_front(m), m->esz) != 0)
			fail("destroy dropped element %zu out of FIFO order",
			     i);
		mq_pop(m);
		stats.dropped++;
	}
	memset(m, 0, sizeof *m);
}

/* The model's answer to a single send: 0 (element queued) or an error. */
static int model_send(struct mchan *m, int cause, int would_block)
{
	if (cause)
		return cause;
	if (m->closed)
		return -EPIPE;
	if (m->cap == 0 || m->len == m->cap)
		return would_block;
	return 0;
}

static int model_recv(struct mchan *m, int cause, int would_block)
{
	if (cause)
		return cause;
	if (m->cap > 0 && m->len > 0)
		return 0;
	if (m->closed)
		return -EPIPE;
	return would_block;
}

static void op_send(struct input *in, int kind)
{
	struct mchan *m = pick_chan(in);
	int node = kind ? pick_node(in) : -1;
	if (!m)
		return;
	uint8_t e[MAX_ESZ];
	make_elem(e, m->esz);
	int rc, want;
	if (kind == 0) {
		rc = cpat_chan_try_send(m->ch, e);
		want = model_send(m, 0, -EAGAIN);
	} else {
		rc = cpat_chan_send_until(m->ch, e, node_tok(node), 0);
		want = model_send(m, node_cause(node), -ETIMEDOUT);
	}
	EXPECT_RC(kind ? "cpat_chan_send_until" : "cpat_chan_try_send", rc,
		  want);
	if (rc == 0) {
		mq_push(m, e);
		stats.sent++;
	}
}

static void op_recv(struct input *in, int kind)
{
	struct mchan *m = pick_chan(in);
	int node = kind ? pick_node(in) : -1;
	if (!m)
		return;
	uint8_t b[MAX_ESZ + 8];
	canary(b, sizeof b);
	int rc, want;
	const char *what = kind ? "cpat_chan_recv_until" : "cpat_chan_try_recv";
	if (kind == 0) {
		rc = cpat_chan_try_recv(m->ch, b);
		want = model_recv(m, 0, -EAGAIN);
	} else {
		rc = cpat_chan_recv_until(m->ch, b, node_tok(node), 0);
		want = model_recv(m, node_cause(node), -ETIMEDOUT);
	}
	EXPECT_RC(what, rc, want);
	if (rc == 0) {
		stats.received++;
		expect_front(m, b, what);
		expect_canary(b + m->esz, 8, what);
	} else {
		expect_canary(b, sizeof b, what);
	}
}

static void op_send_many(struct input *in)
{
	struct mchan *m = pick_chan(in);
	int node = pick_node(in);
	size_t n = 1 + byte(in) % MAX_MANY;
	if (!m)
		return;
	uint8_t e[MAX_MANY][MAX_ESZ], flat[MAX_MANY * MAX_ESZ];
	for (size_t i = 0; i < n; i++) {
		make_elem(e[i], m->esz);
		memcpy(flat + i * m->esz, e[i], m->esz);
	}
	size_t sent = 12345;
	int rc = cpat_chan_send_many(m->ch, flat, n, &sent, node_tok(node), 0);
	int cause = node_cause(node);
	size_t room = m->cap - m->len, wsent = 0;
	int want;
	if (cause)
		want = cause;
	else if (m->closed)
		want = -EPIPE;
	else {
		wsent = n < room ? n : room;
		want = wsent == n ? 0 : -ETIMEDOUT;
	}
	EXPECT_RC("cpat_chan_send_many", rc, want);
	if (sent != wsent)
		fail("cpat_chan_send_many sent %zu, model %zu (n %zu)", sent,
		     wsent, n);
	for (size_t i = 0; i < wsent; i++)
		mq_push(m, e[i]);
	stats.sent += (long)wsent;
}

static void op_recv_many(struct input *in)
{
	struct mchan *m = pick_chan(in);
	int node = pick_node(in);
	size_t n = 1 + byte(in) % MAX_MANY;
	if (!m)
		return;
	uint8_t b[MAX_MANY * MAX_ESZ + 8];
	canary(b, sizeof b);
	size_t got = 12345;
	int rc = cpat_chan_recv_many(m->ch, b, n, &got, node_tok(node), 0);
	int want = model_recv(m, node_cause(node), -ETIMEDOUT);
	size_t wgot = 0;
	if (want == 0)
		wgot = n < m->len ? n : m->len;
	EXPECT_RC("cpat_chan_recv_many", rc, want);
	if (got != wgot)
		fail("cpat_chan_recv_many received %zu, model %zu", got, wgot);
	for (size_t i = 0; i < wgot; i++)
		expect_front(m, b + i * m->esz, "cpat_chan_recv_many");
	stats.received += (long)wgot;
	expect_canary(b + wgot * m->esz, sizeof b - wgot * m->esz,
		      "cpat_chan_recv_many");
}

static void op_close(struct input *in)
{
	struct mchan *m = pick_chan(in);
	if (!m)
		return;
	EXPECT_RC("cpat_chan_close", cpat_chan_close(m->ch),
		  m->closed ? -EPIPE : 0);
	m->closed = true;
}

static bool case_ready(const struct mchan *m, int op)
{
	if (op == CPAT_SELECT_RECV)
		return (m->cap > 0 && m->len > 0) || m->closed;
	return m->closed || (m->cap > 0 && m->len < m->cap);
}

static void op_select(struct input *in)
{
	size_t n = 1 + byte(in) % MAX_CASES;
	int node = pick_node(in);
	struct cpat_select_case cs[MAX_CASES];
	struct mchan *cm[MAX_CASES];
	uint8_t buf[MAX_CASES][MAX_ESZ];
	bool any_ch = false, any_ready = false;

	for (size_t i = 0; i < n; i++) {
		unsigned b = byte(in);
		cm[i] = b & 4 ? NULL : &chans[b % MAX_CHANS];
		if (cm[i] && !cm[i]->ch)
			cm[i] = NULL;
		cs[i].ch = cm[i] ? cm[i]->ch : NULL;
		cs[i].op = b & 8 ? CPAT_SELECT_SEND : CPAT_SELECT_RECV;
		cs[i].elem = buf[i];
		cs[i].rc = 777;
		canary(buf[i], MAX_ESZ);
		if (cs[i].op == CPAT_SELECT_SEND && cm[i])
			make_elem(buf[i], cm[i]->esz);
		any_ch |= cm[i] != NULL;
		if (cm[i])
			any_ready |= case_ready(cm[i], cs[i].op);
	}
	uint8_t saved[MAX_CASES][MAX_ESZ];
	memcpy(saved, buf, sizeof buf);

	int rc = cpat_chan_select(cs, n, node_tok(node), 0);
	int cause = node_cause(node);
	(void)any_ch; /* a deadline is given, so no-channel selects are valid */
	if (cause || !any_ready) {
		EXPECT_RC("cpat_chan_select", rc, cause ? cause : -ETIMEDOUT);
	} else if (rc < 0 || (size_t)rc >= n) {
		fail("cpat_chan_select returned %d (%s) with a ready case", rc,
		     cpat_strerror(rc));
	} else if (!cm[rc] || !case_ready(cm[rc], cs[rc].op)) {
		fail("cpat_chan_select completed case %d, which is not ready",
		     rc);
	}
	for (size_t i = 0; i < n; i++) {
		if ((int)i == rc)
			continue;
		if (cs[i].rc != 777)
			fail("cpat_chan_select wrote rc of case %zu, not "
			     "chosen",
			     i);
		if (memcmp(buf[i], saved[i], MAX_ESZ) != 0)
			fail("cpat_chan_select wrote the element of case %zu, "
			     "not chosen",
			     i);
	}
	if (rc < 0)
		return;
	stats.selected++;
	struct mchan *m = cm[rc];
	if (cs[rc].op == CPAT_SELECT_RECV) {
		if (m->cap > 0 && m->len > 0) {
			EXPECT_RC("select RECV case rc", cs[rc].rc, 0);
			expect_front(m, buf[rc], "cpat_chan_select");
		} else {
			EXPECT_RC("select RECV case rc", cs[rc].rc, -EPIPE);
			expect_canary(buf[rc], MAX_ESZ, "cpat_chan_select");
		}
	} else {
		if (m->closed) {
			EXPECT_RC("select SEND case rc", cs[rc].rc, -EPIPE);
		} else {
			EXPECT_RC("select SEND case rc", cs[rc].rc, 0);
			mq_push(m, buf[rc]);
		}
	}
}

static void op_token_create(struct input *in)
{
	unsigned kind = byte(in) % 4;
	int parent = pick_node(in);
	long inject = byte(in) % 8; /* 1..3: fail that allocation */
	if (inject > 3)
		inject = 0;
	if (nnodes == MAX_NODES)
		return;
	struct cpat_token *t = (struct cpat_token *)&t;
	int rc, born = node_cause(parent);

	arm_alloc_failure(inject);
	if (kind == 0)
		rc = cpat_token_create(&t, node_tok(parent));
	else if (kind == 1)
		rc = cpat_token_create_deadline(&t, node_tok(parent), 0);
	else if (kind == 2)
		rc = cpat_token_create_deadline(&t, node_tok(parent),
						CPAT_FOREVER);
	else
		rc = cpat_token_create(&t, node_tok(parent));
	long calls = alloc_calls;
	arm_alloc_failure(0);
	if (rc == -ENOMEM && inject > 0 && calls >= inject) {
		if (t != NULL)
			fail("token create failed with -ENOMEM but *out is "
			     "not NULL");
		stats.enomem++;
		return;
	}
	EXPECT_RC("cpat_token_create", rc, 0);
	if (kind == 1 && !born)
		born = -ETIMEDOUT;
	nodes[nnodes].t = t;
	nodes[nnodes].parent = parent;
	nodes[nnodes].cause = born;
	nodes[nnodes].handles = 1;
	nnodes++;
}

static void op_token_cancel(struct input *in)
{
	int i = pick_node(in);
	if (i < 0) {
		return;
	}
	int want = nodes[i].cause ? 0 : 1;
	EXPECT_RC("cpat_token_cancel", cpat_token_cancel(nodes[i].t), want);
	stats.fired += want;
	for (int j = 0; j < nnodes; j++)
		if (nodes[j].cause == 0 && is_descendant(j, i))
			nodes[j].cause = -ECANCELED;
}

static void op_token_ref(struct input *in)
{
	int i = pick_node(in);
	unsigned what = byte(in) % 2;
	if (i < 0)
		return;
	if (what == 0) {
		if (cpat_token_ref(nodes[i].t) != nodes[i].t)
			fail("cpat_token_ref did not return its argument");
		nodes[i].handles++;
	} else {
		cpat_token_unref(nodes[i].t);
		if (--nodes[i].handles == 0)
			nodes[i].t = NULL;
	}
}

static int cb_runs;

static void count_cb(void *arg, int cause)
{
	(void)arg;
	(void)cause;
	cb_runs++;
}

static void op_token_on_cancel(struct input *in)
{
	int i = pick_node(in);
	if (i < 0)
		return;
	struct cpat_token_cb *h = NULL;
	cb_runs = 0;
	EXPECT_RC("cpat_token_on_cancel",
		  cpat_token_on_cancel(nodes[i].t, count_cb, NULL, &h), 0);
	if (cb_runs != (nodes[i].cause ? 1 : 0))
		fail("on_cancel ran its callback %d times at registration",
		     cb_runs);
	EXPECT_RC("cpat_token_on_cancel_remove", cpat_token_on_cancel_remove(h),
		  nodes[i].cause ? 0 : 1);
}

static void op_bad_args(struct input *in)
{
	struct mchan *m = pick_chan(in);
	unsigned which = byte(in) % 8;
	struct cpat_chan *ch = (struct cpat_chan *)&ch;
	uint8_t b[MAX_ESZ * 2];
	size_t cnt = 99;
	struct cpat_select_case c = {
		.ch = NULL, .op = CPAT_SELECT_RECV, .elem = b};
	switch (which) {
	case 0:
		EXPECT_RC("create elem_size 0", cpat_chan_create(&ch, 0, 1),
			  -EINVAL);
		if (ch)
			fail("create with bad arguments left *out set");
		return;
	case 1:
		EXPECT_RC("select n 0", cpat_chan_select(&c, 0, NULL, 0),
			  -EINVAL);
		return;
	case 2:
		EXPECT_RC("select without channel, token or deadline",
			  cpat_chan_select(&c, 1, NULL, CPAT_FOREVER), -EINVAL);
		return;
	case 3:
		EXPECT_RC("token_cancel NULL", cpat_token_cancel(NULL),
			  -EINVAL);
		EXPECT_RC("token_status NULL", cpat_token_status(NULL), 0);
		return;
	}
	if (!m)
		return;
	switch (which) {
	case 4:
		EXPECT_RC("send_many n 0",
			  cpat_chan_send_many(m->ch, b, 0, &cnt, NULL, 0),
			  -EINVAL);
		break;
	case 5:
		EXPECT_RC("recv_many n 0",
			  cpat_chan_recv_many(m->ch, b, 0, &cnt, NULL, 0),
			  -EINVAL);
		if (cnt != 0 && cnt != 99)
			fail("recv_many -EINVAL reported %zu received", cnt);
		break;
	case 6:
		EXPECT_RC("recv_until deadline -2",
			  cpat_chan_recv_until(m->ch, b, NULL, -2), -EINVAL);
		break;
	default:
		EXPECT_RC("send_until deadline -7",
			  cpat_chan_send_until(m->ch, b, NULL, -7), -EINVAL);
		break;
	}
}

static void reset(void)
{
	for (int i = 0; i < MAX_CHANS; i++) {
		cur_step++;
		if (chans[i].ch) {
			/* Destroy through the checking path. */
			uint8_t sel = (uint8_t)i;
			struct input one = {&sel, 1, 0};
			op_destroy(&one);
		}
	}
	for (int i = 0; i < nnodes; i++)
		while (nodes[i].handles > 0) {
			cpat_token_unref(nodes[i].t);
			nodes[i].handles--;
		}
	memset(chans, 0, sizeof chans);
	memset(nodes, 0, sizeof nodes);
	nnodes = 0;
}

static int allocator_installed;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!allocator_installed) {
		cpat_set_allocator(fz_malloc, fz_free);
		allocator_installed = 1;
	}
	struct input in = {data, size, 0};
	cur_data = data;
	cur_size = size;
	cur_step = 0;
	elem_counter = 0;
	while (more(&in)) {
		cur_step++;
		stats.steps++;
		switch (byte(&in) % 16) {
		case 0:
		case 1:
			op_create(&in);
			break;
		case 2:
			op_destroy(&in);
			break;
		case 3:
			op_send(&in, 0);
			break;
		case 4:
			op_send(&in, 1);
			break;
		case 5:
			op_recv(&in, 0);
			break;
		case 6:
			op_recv(&in, 1);
			break;
		case 7:
			op_send_many(&in);
			break;
		case 8:
			op_recv_many(&in);
			break;
		case 9:
			op_close(&in);
			break;
		case 10:
			op_select(&in);
			break;
		case 11:
		case 12:
			op_token_create(&in);
			break;
		case 13:
			op_token_cancel(&in);
			break;
		case 14:
			op_token_ref(&in);
			break;
		default:
			if (byte(&in) % 2)
				op_token_on_cancel(&in);
			else
				op_bad_args(&in);
			break;
		}
		for (int i = 0; i < MAX_CHANS; i++)
			check_chan(&chans[i]);
		check_tokens();
	}
	reset();
	return 0;
}

/* ---- standalone driver ------------------------------------------------ */

#ifdef CPAT_FUZZ_STANDALONE
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>

static const char *crash_path = "fuzz-chan-token-crash.bin";

static void save_input(void)
{
	FILE *f = fopen(crash_path, "wb");
	if (!f)
		return;
	fwrite(cur_data, 1, cur_size, f);
	fclose(f);
	fprintf(stderr, "fuzz_chan_token: input (%zu bytes) saved to %s\n",
		cur_size, crash_path);
}

static long replayed;

static void run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "fuzz_chan_token: cannot open %s\n", path);
		exit(2);
	}
	static uint8_t buf[1 << 20];
	size_t n = fread(buf, 1, sizeof buf, f);
	fclose(f);
	uint8_t *copy = malloc(n ? n : 1);
	memcpy(copy, buf, n);
	LLVMFuzzerTestOneInput(copy, n);
	free(copy);
	replayed++;
}

static void run_path(const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		fprintf(stderr, "fuzz_chan_token: no such path %s\n", path);
		exit(2);
	}
	if (!S_ISDIR(st.st_mode)) {
		run_file(path);
		return;
	}
	DIR *d = opendir(path);
	struct dirent *e;
	while (d && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		char p[4096];
		snprintf(p, sizeof p, "%s/%s", path, e->d_name);
		run_path(p);
	}
	if (d)
		closedir(d);
}

static uint64_t rng_state;

static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1Dull;
}

int main(int argc, char **argv)
{
	double seconds = 0;
	uint64_t seed = 0;
	size_t max_len = 512;
	for (int i = 1; i < argc; i++) {
		if (strncmp(argv[i], "-seconds=", 9) == 0)
			seconds = atof(argv[i] + 9);
		else if (strncmp(argv[i], "-seed=", 6) == 0)
			seed = strtoull(argv[i] + 6, NULL, 0);
		else if (strncmp(argv[i], "-max_len=", 9) == 0)
			max_len = strtoul(argv[i] + 9, NULL, 0);
		else if (strncmp(argv[i], "-crash=", 7) == 0)
			crash_path = argv[i] + 7;
		else if (argv[i][0] == '-') {
			fprintf(stderr,
				"usage: %s [-seconds=N] [-seed=S] [-max_len=N] "
				"[-crash=FILE] [file|dir ...]\n",
				argv[0]);
			return 2;
		} else
			run_path(argv[i]);
	}
	if (replayed)
		printf("replayed %ld inputs: ok\n", replayed);
	if (seconds <= 0) {
		if (!replayed)
			fprintf(stderr, "nothing to do: give files, dirs or "
					"-seconds=N\n");
		return replayed ? 0 : 2;
	}
	if (max_len == 0 || max_len > (1 << 20))
		max_len = 512;
	if (!seed) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		seed = ((uint64_t)ts.tv_sec * 1000000007u) ^
		       (uint64_t)ts.tv_nsec;
		if (!seed)
			seed = 1;
	}
	printf("random inputs for %.0f s, -seed=%llu\n", seconds,
	       (unsigned long long)seed);
	fflush(stdout);
	rng_state = seed;
	uint8_t *buf = malloc(max_len);
	int64_t end = cpat_now_ns() + (int64_t)(seconds * 1e9);
	long execs = 0;
	do {
		for (int k = 0; k < 64; k++) {
			size_t n = 1 + rng() % max_len;
			for (size_t i = 0; i < n; i++)
				buf[i] = (uint8_t)rng();
			/* Bias half of the inputs toward fewer channels so
			 * that the same channel sees long runs of ops. */
			if (execs % 2)
				for (size_t i = 1; i < n; i += 2)
					buf[i] &= 1;
			LLVMFuzzerTestOneInput(buf, n);
			execs++;
		}
	} while (cpat_now_ns() < end);
	free(buf);
	printf("%ld random inputs: ok\n", execs);
	printf("steps %ld: elements sent %ld, received %ld, dropped at destroy "
	       "%ld; select completions %ld; tokens fired by cancel %ld; "
	       "injected -ENOMEM %ld\n",
	       stats.steps, stats.sent, stats.received, stats.dropped,
	       stats.selected, stats.fired, stats.enomem);
	return 0;
}
#else
static void save_input(void)
{
	/* libFuzzer saves the crashing input itself on abort(). */
}
#endif
