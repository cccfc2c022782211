/*
 * Soak test: long runs that the unit tests are too short to be, for the
 * sanitizer builds (scripts/soak.sh builds and runs it; tests/RELIABILITY.md).
 *
 * Phase 1, exactly once: N messages (default 10^8) through the matrix
 * producers {1, P} x consumers {1, C} x capacity {0, 1, 64, 1024}. Items
 * carry (producer id, sequence, check word). Producers send with send,
 * send_many or send_until with short deadlines (retrying what timed out);
 * consumers receive with recv, recv_many or recv_until. Checked: every
 * item received exactly once (a bitmap per producer), per-producer FIFO as
 * seen by each consumer, no corrupted item.
 *
 * Phase 2, mixed: for M minutes (default 10), random scenarios:
 *   - pool: random workers, queue size and policy; several submitters
 *     using submit / try_submit / submit_until; shutdown DRAIN or DISCARD,
 *     sometimes racing the submitters. Checked: every accepted task's done
 *     callback runs exactly once, never a rejected one's, and the report's
 *     submitted == ran + discarded + rejected.
 *   - pipeline: a generator, two map stages (random workers, ordered or
 *     not, one filtering), a sink; cancelled at a random moment or not.
 *     Checked: produced == delivered + filtered + not_processed, the drop
 *     callback saw every unprocessed item, the sink saw `delivered` items,
 *     in source order when every stage is ordered, and all of them when
 *     not cancelled.
 *   - cancellation: senders and receivers on one channel under a token
 *     fired at a random moment; afterwards the channel is drained. Checked:
 *     items whose send returned 0 == items received, none twice.
 *
 * Prints sent / received / lost / duplicated, the scenario counts and the
 * sanitizer it was built with; exits 1 on any violation.
 *
 * usage: soak [--messages N] [--minutes M] [--seconds S] [--quick]
 *             [--producers P] [--consumers C] [--seed S]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpattern.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(__SANITIZE_ADDRESS__)
#define __SANITIZE_ADDRESS__ 1
#endif
#if __has_feature(thread_sanitizer) && !defined(__SANITIZE_THREAD__)
#define __SANITIZE_THREAD__ 1
#endif
#endif

static const char *sanitizer_name(void)
{
#if defined(__SANITIZE_ADDRESS__)
	return "AddressSanitizer (+UBSan if enabled)";
#elif defined(__SANITIZE_THREAD__)
	return "ThreadSanitizer";
#else
	return "none (plain build)";
#endif
}

/* ---- totals ----------------------------------------------------------- */

static _Atomic uint64_t t_sent, t_received, t_lost, t_dup, t_reorder, t_corrupt,
	t_violations;

static void violation(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

#include <stdarg.h>
static void violation(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "soak: VIOLATION: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	atomic_fetch_add(&t_violations, 1);
}

/* xorshift64* */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1Dull;
}

static uint64_t g_seed;

static void die(const char *what, int rc)
{
	fprintf(stderr, "soak: %s: %s\n", what, cpat_strerror(rc));
	exit(2);
}

static void spawn(pthread_t *t, void *(*fn)(void *), void *arg)
{
	if (pthread_create(t, NULL, fn, arg) != 0) {
		fprintf(stderr, "soak: pthread_create failed\n");
		exit(2);
	}
}

/* ---- phase 1: exactly once -------------------------------------------- */

struct item {
	uint32_t producer;
	uint32_t check;
	uint64_t seq;
};

static uint32_t check_of(uint32_t p, uint64_t seq)
{
	uint64_t h = (seq + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t)(p + 7)
								 << 40;
	return (uint32_t)(h >> 29);
}

struct cell {
	struct cpat_chan *ch;
	unsigned nprod, ncons;
	uint64_t per_prod;
	_Atomic uint64_t **seen; /* bitmap per producer */
};

struct prod_arg {
	struct cell *c;
	uint32_t id;
	uint64_t sent;
};

struct cons_arg {
	struct cell *c;
	unsigned id;
	uint64_t received, dup, reorder, corrupt;
	int64_t last[64];
};

#define BATCH 32

static void *producer_main(void *arg)
{
	struct prod_arg *a = arg;
	struct cell *c = a->c;
	struct item batch[BATCH];
	uint64_t seq = 0;
	int mode = (int)(a->id % 3);
	while (seq < c->per_prod) {
		if (mode == 1) {
			size_t n = 0;
			while (n < BATCH && seq + n < c->per_prod) {
				batch[n] = (struct item){
					a->id, check_of(a->id, seq + n),
					seq + n};
				n++;
			}
			size_t sent = 0;
			int rc = cpat_chan_send_many(c->ch, batch, n, &sent,
						     NULL, CPAT_FOREVER);
			if (rc != 0)
				die("send_many", rc);
			seq += sent;
			continue;
		}
		struct item it = {a->id, check_of(a->id, seq), seq};
		int rc;
		if (mode == 0) {
			rc = cpat_chan_send(c->ch, &it, NULL);
		} else {
			/* Short deadlines: a timed-out send left nothing in the
			 * channel, so the same item is sent again. */
			rc = cpat_chan_send_until(c->ch, &it, NULL,
						  cpat_now_ns() +
							  200 * CPAT_USEC);
			if (rc == -ETIMEDOUT)
				continue;
		}
		if (rc != 0)
			die("send", rc);
		seq++;
	}
	a->sent = seq;
	return NULL;
}

static void take(struct cons_arg *a, const struct item *it)
{
	struct cell *c = a->c;
	a->received++;
	if (it->producer >= c->nprod || it->seq >= c->per_prod ||
	    it->check != check_of(it->producer, it->seq)) {
		a->corrupt++;
		return;
	}
	if ((int64_t)it->seq <= a->last[it->producer])
		a->reorder++;
	a->last[it->producer] = (int64_t)it->seq;
	uint64_t bit = 1ull << (it->seq % 64);
	if (atomic_fetch_or(&c->seen[it->producer][it->seq / 64], bit) & bit)
		a->dup++;
}

static void *consumer_main(void *arg)
{
	struct cons_arg *a = arg;
	struct cell *c = a->c;
	struct item buf[BATCH];
	int mode = (int)(a->id % 3);
	for (int i = 0; i < 64; i++)
		a->last[i] = -1;
	for (;;) {
		int rc;
		if (mode == 1) {
			size_t got = 0;
			rc = cpat_chan_recv_many(c->ch, buf, BATCH, &got, NULL,
						 CPAT_FOREVER);
			if (rc == -EPIPE)
				break;
			if (rc != 0)
				die("recv_many", rc);
			for (size_t i = 0; i < got; i++)
				take(a, &buf[i]);
			continue;
		}
		if (mode == 0)
			rc = cpat_chan_recv(c->ch, &buf[0], NULL);
		else
			rc = cpat_chan_recv_until(c->ch, &buf[0], NULL,
						  cpat_now_ns() +
							  200 * CPAT_USEC);
		if (rc == -ETIMEDOUT)
			continue;
		if (rc == -EPIPE)
			break;
		if (rc != 0)
			die("recv", rc);
		take(a, &buf[0]);
	}
	return NULL;
}

static void run_cell(unsigned np, unsigned nc, size_t cap, uint64_t n)
{
	struct cell c = {.nprod = np, .ncons = nc, .per_prod = n / np};
	if (c.per_prod == 0)
		c.per_prod = 1;
	int rc = cpat_chan_create(&c.ch, sizeof(struct item), cap);
	if (rc)
		die("chan_create", rc);
	size_t words = (size_t)(c.per_prod + 63) / 64;
	c.seen = calloc(np, sizeof *c.seen);
	for (unsigned p = 0; p < np; p++)
		c.seen[p] = calloc(words, sizeof(uint64_t));
	struct prod_arg pa[64];
	struct cons_arg *ca = calloc(nc, sizeof *ca);
	pthread_t pt[64], ct[64];
	for (unsigned i = 0; i < nc; i++) {
		ca[i].c = &c;
		ca[i].id = i;
		spawn(&ct[i], consumer_main, &ca[i]);
	}
	for (unsigned i = 0; i < np; i++) {
		pa[i] = (struct prod_arg){&c, i, 0};
		spawn(&pt[i], producer_main, &pa[i]);
	}
	uint64_t sent = 0, recvd = 0, dup = 0, reord = 0, corrupt = 0, lost = 0;
	for (unsigned i = 0; i < np; i++) {
		pthread_join(pt[i], NULL);
		sent += pa[i].sent;
	}
	if ((rc = cpat_chan_close(c.ch)) != 0)
		die("close", rc);
	for (unsigned i = 0; i < nc; i++) {
		pthread_join(ct[i], NULL);
		recvd += ca[i].received;
		dup += ca[i].dup;
		reord += ca[i].reorder;
		corrupt += ca[i].corrupt;
	}
	for (unsigned p = 0; p < np; p++) {
		for (uint64_t s = 0; s < c.per_prod; s++)
			if (!(atomic_load(&c.seen[p][s / 64]) &
			      (1ull << (s % 64))))
				lost++;
		free((void *)c.seen[p]);
	}
	free(c.seen);
	free(ca);
	cpat_chan_destroy(c.ch);
	atomic_fetch_add(&t_sent, sent);
	atomic_fetch_add(&t_received, recvd);
	atomic_fetch_add(&t_lost, lost);
	atomic_fetch_add(&t_dup, dup);
	atomic_fetch_add(&t_reorder, reord);
	atomic_fetch_add(&t_corrupt, corrupt);
	if (lost || dup || reord || corrupt)
		violation("cell P=%u C=%u cap=%zu: lost %" PRIu64
			  " duplicated %" PRIu64 " reordered %" PRIu64
			  " corrupt %" PRIu64,
			  np, nc, cap, lost, dup, reord, corrupt);
}

/* ---- phase 2: pools ----------------------------------------------------- */

struct pool_run {
	struct cpat_pool *pool;
	_Atomic uint8_t *done_count; /* per task */
	_Atomic uint8_t *accepted;   /* per task */
	_Atomic uint64_t ran;
	uint64_t ntasks;
	unsigned nsub;
};

struct task_arg {
	struct pool_run *r;
	uint64_t id;
};

static int task_fn(void *arg, struct cpat_token *tok)
{
	struct task_arg *t = arg;
	atomic_fetch_add(&t->r->ran, 1);
	if (t->id % 13 == 0)
		return cpat_token_status(tok) ? -ECANCELED : -EIO;
	if (t->id % 5 == 0)
		sched_yield();
	return 0;
}

static void task_done(void *arg, int rc)
{
	struct task_arg *t = arg;
	(void)rc;
	atomic_fetch_add(&t->r->done_count[t->id], 1);
}

struct sub_arg {
	struct pool_run *r;
	struct task_arg *tasks;
	unsigned idx;
	uint64_t seed;
};

static void *submitter_main(void *arg)
{
	struct sub_arg *s = arg;
	struct pool_run *r = s->r;
	for (uint64_t id = s->idx; id < r->ntasks; id += r->nsub) {
		struct cpat_task t = {task_fn, task_done, &s->tasks[id]};
		int rc;
		switch (rnd(&s->seed) % 3) {
		case 0:
			rc = cpat_pool_submit(r->pool, &t, NULL);
			break;
		case 1:
			rc = cpat_pool_try_submit(r->pool, &t);
			break;
		default:
			rc = cpat_pool_submit_until(
				r->pool, &t, NULL,
				cpat_now_ns() + (int64_t)(rnd(&s->seed) % 100) *
							CPAT_USEC);
			break;
		}
		if (rc == 0)
			atomic_store(&r->accepted[id], 1);
		else if (rc != -EAGAIN && rc != -EPIPE && rc != -ETIMEDOUT)
			violation("pool submit returned %d (%s)", rc,
				  cpat_strerror(rc));
	}
	return NULL;
}

static void scenario_pool(uint64_t *seed)
{
	struct pool_run r = {0};
	struct cpat_pool_opts o;
	cpat_pool_opts_init(&o);
	o.workers = 1 + (unsigned)(rnd(seed) % 4);
	o.queue_capacity = 1 + rnd(seed) % 64;
	o.policy = (int)(rnd(seed) % 3);
	int rc = cpat_pool_create(&r.pool, &o);
	if (rc)
		die("pool_create", rc);
	r.ntasks = 1 + rnd(seed) % 3000;
	r.nsub = 1 + (unsigned)(rnd(seed) % 3);
	r.done_count = calloc(r.ntasks, 1);
	r.accepted = calloc(r.ntasks, 1);
	struct task_arg *tasks = calloc(r.ntasks, sizeof *tasks);
	for (uint64_t i = 0; i < r.ntasks; i++)
		tasks[i] = (struct task_arg){&r, i};
	struct sub_arg sa[3];
	pthread_t st[3];
	for (unsigned i = 0; i < r.nsub; i++) {
		sa[i] = (struct sub_arg){&r, tasks, i, rnd(seed) | 1};
		spawn(&st[i], submitter_main, &sa[i]);
	}
	bool racing = rnd(seed) % 2;
	int mode = (int)(rnd(seed) % 2) ? CPAT_POOL_DISCARD : CPAT_POOL_DRAIN;
	struct cpat_pool_report rep;
	if (!racing)
		for (unsigned i = 0; i < r.nsub; i++)
			pthread_join(st[i], NULL);
	rc = cpat_pool_shutdown(r.pool, mode, CPAT_FOREVER, &rep);
	if (rc != 0)
		violation("pool_shutdown returned %d (%s)", rc,
			  cpat_strerror(rc));
	if (racing)
		for (unsigned i = 0; i < r.nsub; i++)
			pthread_join(st[i], NULL);
	cpat_pool_destroy(r.pool);
	uint64_t accepted = 0;
	for (uint64_t i = 0; i < r.ntasks; i++) {
		unsigned want = atomic_load(&r.accepted[i]);
		unsigned got = atomic_load(&r.done_count[i]);
		accepted += want;
		if (got != want)
			violation("pool task %" PRIu64 ": done ran %u times, "
				  "submit %s",
				  i, got, want ? "succeeded" : "failed");
	}
	/* Submits after shutdown were refused before the report was made
	 * (racing submitters): the report covers what it saw. */
	if (!racing && rep.submitted != rep.ran + rep.discarded + rep.rejected)
		violation("pool report: submitted %llu != ran %llu + "
			  "discarded %llu + rejected %llu",
			  rep.submitted, rep.ran, rep.discarded, rep.rejected);
	if (!racing && rep.ran + rep.discarded != accepted)
		violation("pool report: ran %llu + discarded %llu != accepted "
			  "%" PRIu64,
			  rep.ran, rep.discarded, accepted);
	free((void *)r.done_count);
	free((void *)r.accepted);
	free(tasks);
}

/* ---- phase 2: pipelines ----------------------------------------------- */

struct pipe_run {
	uint64_t n, next;
	_Atomic uint64_t sunk, dropped;
	int64_t last;
	bool ordered, misordered;
};

static int gen(void *out, void *arg)
{
	struct pipe_run *p = arg;
	if (p->next >= p->n)
		return 0;
	*(uint64_t *)out = p->next++;
	return 1;
}

static int stage_inc(const void *in, void *out, struct cpat_stage_ctx *ctx)
{
	(void)ctx;
	uint64_t v = *(const uint64_t *)in;
	if (v % 17 == 3)
		sched_yield();
	*(uint64_t *)out = v;
	return CPAT_STAGE_EMIT;
}

static int stage_filter(const void *in, void *out, struct cpat_stage_ctx *ctx)
{
	(void)ctx;
	uint64_t v = *(const uint64_t *)in;
	*(uint64_t *)out = v;
	return v % 7 == 0 ? CPAT_STAGE_SKIP : CPAT_STAGE_EMIT;
}

static int sink(const void *item, void *arg)
{
	struct pipe_run *p = arg;
	int64_t v = (int64_t) * (const uint64_t *)item;
	if (p->ordered && v <= p->last)
		p->misordered = true;
	p->last = v;
	atomic_fetch_add(&p->sunk, 1);
	return 0;
}

static void pipe_drop(const void *item, unsigned stage, void *arg)
{
	(void)item;
	(void)stage;
	struct pipe_run *p = arg;
	atomic_fetch_add(&p->dropped, 1);
}

struct canceller {
	struct cpat_token *tok;
	int64_t delay_ns;
};

static void *canceller_main(void *arg)
{
	struct canceller *c = arg;
	int64_t end = cpat_now_ns() + c->delay_ns;
	while (cpat_now_ns() < end)
		sched_yield();
	cpat_token_cancel(c->tok);
	return NULL;
}

static void scenario_pipeline(uint64_t *seed)
{
	struct pipe_run pr = {.n = 1 + rnd(seed) % 20000, .last = -1};
	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	po.item_size = sizeof(uint64_t);
	po.source_capacity = 1 + rnd(seed) % 64;
	po.drop = pipe_drop;
	po.drop_arg = &pr;
	struct cpat_pipeline *p;
	int rc = cpat_pipeline_create(&p, &po);
	if (rc)
		die("pipeline_create", rc);
	if ((rc = cpat_pipeline_set_generator(p, gen, &pr)) != 0)
		die("set_generator", rc);
	pr.ordered = true;
	for (int s = 0; s < 2; s++) {
		struct cpat_stage_opts so;
		cpat_stage_opts_init(&so);
		so.name = s ? "filter" : "pass";
		so.map = s ? stage_filter : stage_inc;
		so.out_size = sizeof(uint64_t);
		so.workers = 1 + (unsigned)(rnd(seed) % 3);
		so.ordered = (int)(rnd(seed) % 2);
		so.out_capacity = 1 + rnd(seed) % 64;
		if (!so.ordered && so.workers > 1)
			pr.ordered = false;
		if ((rc = cpat_pipeline_add_stage(p, &so)) != 0)
			die("add_stage", rc);
	}
	if ((rc = cpat_pipeline_set_sink(p, sink, &pr)) != 0)
		die("set_sink", rc);
	struct cpat_token *tok;
	if ((rc = cpat_token_create(&tok, NULL)) != 0)
		die("token_create", rc);
	bool cancel = rnd(seed) % 2;
	struct canceller cc = {tok, (int64_t)(rnd(seed) % 3000) * CPAT_USEC};
	pthread_t ct;
	if ((rc = cpat_pipeline_start(p, tok, CPAT_FOREVER)) != 0)
		die("pipeline_start", rc);
	if (cancel)
		spawn(&ct, canceller_main, &cc);
	struct cpat_pipeline_result res;
	rc = cpat_pipeline_wait(p, &res);
	if (cancel)
		pthread_join(ct, NULL);
	cpat_pipeline_destroy(p);
	cpat_token_unref(tok);
	if (rc != 0 && !(cancel && rc == -ECANCELED))
		violation("pipeline wait returned %d (%s)", rc,
			  cpat_strerror(rc));
	if (res.produced + res.expanded !=
	    res.delivered + res.filtered + res.not_processed + res.batched)
		violation("pipeline accounting: produced %" PRIu64
			  " != delivered %" PRIu64 " + filtered %" PRIu64
			  " + not_processed %" PRIu64,
			  res.produced, res.delivered, res.filtered,
			  res.not_processed);
	if (atomic_load(&pr.sunk) != res.delivered)
		violation("pipeline: sink saw %" PRIu64 ", delivered %" PRIu64,
			  atomic_load(&pr.sunk), res.delivered);
	if (atomic_load(&pr.dropped) != res.not_processed)
		violation("pipeline: drop saw %" PRIu64
			  ", not_processed %" PRIu64,
			  atomic_load(&pr.dropped), res.not_processed);
	if (pr.misordered)
		violation("pipeline: ordered pipeline delivered out of order");
	if (rc == 0) {
		uint64_t skipped = (pr.n + 6) / 7; /* 0, 7, 14, ... < n */
		if (res.produced != pr.n || res.filtered != skipped ||
		    res.delivered != pr.n - skipped)
			violation("pipeline not cancelled: produced %" PRIu64
				  " of %" PRIu64 ", filtered %" PRIu64
				  ", delivered %" PRIu64,
				  res.produced, pr.n, res.filtered,
				  res.delivered);
	}
}

/* ---- phase 2: cancellation on a channel ------------------------------- */

struct cx {
	struct cpat_chan *ch;
	struct cpat_token *tok;
	uint64_t per, nprod;
	_Atomic uint64_t *seen;
	_Atomic uint64_t sent, received, dup;
};

struct cx_arg {
	struct cx *x;
	uint32_t id;
};

static void *cx_producer(void *arg)
{
	struct cx_arg *a = arg;
	struct cx *x = a->x;
	for (uint64_t s = 0; s < x->per; s++) {
		struct item it = {a->id, check_of(a->id, s), s};
		int rc = cpat_chan_send(x->ch, &it, x->tok);
		if (rc == -ECANCELED)
			break;
		if (rc != 0) {
			violation("cancel scenario: send returned %d", rc);
			break;
		}
		atomic_fetch_add(&x->sent, 1);
	}
	return NULL;
}

static void cx_take(struct cx *x, const struct item *it)
{
	atomic_fetch_add(&x->received, 1);
	uint64_t k = it->producer * x->per + it->seq;
	uint64_t bit = 1ull << (k % 64);
	if (it->check != check_of(it->producer, it->seq) ||
	    (atomic_fetch_or(&x->seen[k / 64], bit) & bit))
		atomic_fetch_add(&x->dup, 1);
}

static void *cx_consumer(void *arg)
{
	struct cx *x = arg;
	struct item it;
	for (;;) {
		int rc = cpat_chan_recv(x->ch, &it, x->tok);
		if (rc == -ECANCELED || rc == -EPIPE)
			break;
		if (rc != 0) {
			violation("cancel scenario: recv returned %d", rc);
			break;
		}
		cx_take(x, &it);
	}
	return NULL;
}

static void scenario_cancel(uint64_t *seed)
{
	static const size_t caps[] = {0, 1, 8, 64};
	struct cx x = {.per = 1 + rnd(seed) % 20000, .nprod = 2};
	int rc = cpat_chan_create(&x.ch, sizeof(struct item),
				  caps[rnd(seed) % 4]);
	if (rc)
		die("chan_create", rc);
	if ((rc = cpat_token_create(&x.tok, NULL)) != 0)
		die("token_create", rc);
	x.seen = calloc((x.per * x.nprod + 63) / 64, sizeof(uint64_t));
	struct cx_arg pa[2] = {{&x, 0}, {&x, 1}};
	pthread_t pt[2], ctt[2], kt;
	struct canceller cc = {x.tok, (int64_t)(rnd(seed) % 2000) * CPAT_USEC};
	for (int i = 0; i < 2; i++) {
		spawn(&pt[i], cx_producer, &pa[i]);
		spawn(&ctt[i], cx_consumer, &x);
	}
	spawn(&kt, canceller_main, &cc);
	for (int i = 0; i < 2; i++)
		pthread_join(pt[i], NULL);
	pthread_join(kt, NULL);
	for (int i = 0; i < 2; i++)
		pthread_join(ctt[i], NULL);
	/* Whatever is still buffered was sent: drain it. */
	cpat_chan_close(x.ch);
	struct item it;
	while ((rc = cpat_chan_try_recv(x.ch, &it)) == 0)
		cx_take(&x, &it);
	if (rc != -EPIPE)
		violation("cancel scenario: drain ended with %d", rc);
	cpat_chan_destroy(x.ch);
	cpat_token_unref(x.tok);
	uint64_t s = atomic_load(&x.sent), r = atomic_load(&x.received),
		 d = atomic_load(&x.dup);
	atomic_fetch_add(&t_sent, s);
	atomic_fetch_add(&t_received, r);
	atomic_fetch_add(&t_dup, d);
	if (r - d < s)
		atomic_fetch_add(&t_lost, s - (r - d));
	if (s != r || d)
		violation("cancel scenario: sent %" PRIu64 " received %" PRIu64
			  " duplicated %" PRIu64,
			  s, r, d);
	free((void *)x.seen);
}

/* ---- main --------------------------------------------------------------- */

int main(int argc, char **argv)
{
	uint64_t messages = 100000000ull;
	double seconds = 600;
	unsigned P = 4, C = 4;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--quick")) {
			messages = 1000000;
			seconds = 20;
		} else if (!strcmp(a, "--messages") && v) {
			messages = strtoull(v, NULL, 0);
			i++;
		} else if (!strcmp(a, "--minutes") && v) {
			seconds = atof(v) * 60;
			i++;
		} else if (!strcmp(a, "--seconds") && v) {
			seconds = atof(v);
			i++;
		} else if (!strcmp(a, "--producers") && v) {
			P = (unsigned)atoi(v);
			i++;
		} else if (!strcmp(a, "--consumers") && v) {
			C = (unsigned)atoi(v);
			i++;
		} else if (!strcmp(a, "--seed") && v) {
			g_seed = strtoull(v, NULL, 0);
			i++;
		} else {
			fprintf(stderr,
				"usage: %s [--messages N] [--minutes M] "
				"[--seconds S] [--quick] [--producers P] "
				"[--consumers C] [--seed S]\n",
				argv[0]);
			return 2;
		}
	}
	if (P < 1 || P > 64 || C < 1 || C > 64) {
		fprintf(stderr, "soak: producers and consumers: 1..64\n");
		return 2;
	}
	if (!g_seed) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		g_seed = ((uint64_t)ts.tv_sec * 1000000007u) ^
			 (uint64_t)ts.tv_nsec;
		g_seed |= 1;
	}
	printf("soak: sanitizer: %s\n", sanitizer_name());
	printf("soak: --messages %" PRIu64 " --seconds %.0f --producers %u "
	       "--consumers %u --seed %" PRIu64 "\n",
	       messages, seconds, P, C, g_seed);
	fflush(stdout);

	static const size_t caps[] = {0, 1, 64, 1024};
	unsigned ps[2] = {1, P}, cs[2] = {1, C};
	unsigned np = P > 1 ? 2 : 1, nc = C > 1 ? 2 : 1;
	unsigned cells = np * nc * 4;
	int64_t t0 = cpat_now_ns();
	for (unsigned pi = 0; pi < np; pi++)
		for (unsigned ci = 0; ci < nc; ci++)
			for (unsigned k = 0; k < 4; k++) {
				int64_t c0 = cpat_now_ns();
				run_cell(ps[pi], cs[ci], caps[k],
					 messages / cells);
				printf("soak: phase 1 P=%u C=%u cap=%zu: %.2f "
				       "s\n",
				       ps[pi], cs[ci], caps[k],
				       (double)(cpat_now_ns() - c0) / 1e9);
				fflush(stdout);
			}
	printf("soak: phase 1 done in %.1f s: sent %" PRIu64
	       " received %" PRIu64 " lost %" PRIu64 " duplicated %" PRIu64
	       " reordered %" PRIu64 " corrupt %" PRIu64 "\n",
	       (double)(cpat_now_ns() - t0) / 1e9, atomic_load(&t_sent),
	       atomic_load(&t_received), atomic_load(&t_lost),
	       atomic_load(&t_dup), atomic_load(&t_reorder),
	       atomic_load(&t_corrupt));
	fflush(stdout);

	uint64_t seed = g_seed, npool = 0, npipe = 0, ncancel = 0;
	int64_t end = cpat_now_ns() + (int64_t)(seconds * 1e9);
	while (cpat_now_ns() < end && atomic_load(&t_violations) < 20) {
		switch (rnd(&seed) % 3) {
		case 0:
			scenario_pool(&seed);
			npool++;
			break;
		case 1:
			scenario_pipeline(&seed);
			npipe++;
			break;
		default:
			scenario_cancel(&seed);
			ncancel++;
			break;
		}
	}
	printf("soak: phase 2: %" PRIu64 " pool, %" PRIu64 " pipeline, %" PRIu64
	       " cancellation scenarios\n",
	       npool, npipe, ncancel);
	printf("soak: sent %" PRIu64 " received %" PRIu64 " lost %" PRIu64
	       " duplicated %" PRIu64 "\n",
	       atomic_load(&t_sent), atomic_load(&t_received),
	       atomic_load(&t_lost), atomic_load(&t_dup));
	printf("soak: violations %" PRIu64 "; sanitizer: %s%s\n",
	       atomic_load(&t_violations), sanitizer_name(),
	       " (a sanitizer report would have stopped the run)");
	printf("soak: %s\n", atomic_load(&t_violations) ? "FAILED" : "OK");
	return atomic_load(&t_violations) ? 1 : 0;
}
