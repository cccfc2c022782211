/*
 * Pipelines: a source, stages of worker threads, and a sink, joined by
 * bounded channels (cpattern/pipeline.h). This file builds, starts, waits
 * for and reports on a pipeline; the threads are in pipeline_run.c, the
 * ordered stages' machinery in pipeline_order.c, the shared structures in
 * pipeline_impl.h.
 *
 * Threads. Every thread (source, stage workers, sink) is started with
 * cpat__thread_start() and joined by cpat_pipeline_wait() (or by start's
 * failure path). Buffers are made at start, never per item.
 *
 * Stop. The run token is a child of the caller's token (with the deadline,
 * if any). A callback that fails records the error
 * (cpat__pipeline_fail(): a CAS of stop_rc from 0, the winner alone writes
 * err_stage/err_index, then it cancels the run token). A watch on the run
 * token (on_stop(), runs once when it fires for whatever reason) CASes its
 * cause into stop_rc (so the
 * first of error and cancellation wins), sets `stopping`, wakes the turn
 * waiters of ordered stages and, for a feed, closes chan[0] so blocked and
 * later feeds fail with -EPIPE. Channel operations of the threads all use
 * the run token, so they return at once when it fires; between items a
 * thread reads `stopping` (relaxed) so a chunk in hand is abandoned
 * promptly too.
 *
 * Accounting: every item is counted exactly once.
 *   produced      items the generator returned (1) or feeds accepted.
 *   delivered     items the sink callback returned 0 for, or items put in
 *                 the output channel (set_output).
 *   filtered      map stage: SKIP; flat stage: an input that emitted
 *                 nothing.
 *   not_processed every item abandoned on a stop: a thread drops what it
 *                 holds (inputs not yet run, outputs not yet sent, the item
 *                 whose callback failed) and wait() drains every channel
 *                 after joining (chan[0] is closed first and wait() waits
 *                 for feeds in progress, so nothing can be added after the
 *                 drain). Each goes to the drop callback with the index of
 *                 the stage it was waiting for.
 *   expanded      flat stages: outputs - 1 for every input that emitted at
 *                 least one item.
 *   batched       batch stages: count - 1 for every batch made.
 * so that produced + expanded = delivered + filtered + not_processed +
 * batched. The output channel's buffered items count as delivered (the
 * caller receives them until -EPIPE).
 */
#include "pipeline_impl.h"
#include "testhooks.h"

#include <sched.h>

_Atomic long cpat__pipeline_threads;
_Thread_local struct cpat_pipeline *cpat__pipeline_tl;

long cpat__pipeline_live_threads(void)
{
	return atomic_load(&cpat__pipeline_threads);
}

/* ---- small helpers ---- */

static size_t round_up(size_t n, size_t a)
{
	return (n + a - 1) / a * a;
}

static void set_name(char dst[32], const char *src, const char *dflt)
{
	snprintf(dst, 32, "%s", src ? src : dflt);
}

void cpat_pipeline_opts_init(struct cpat_pipeline_opts *o)
{
	if (!o)
		return;
	memset(o, 0, sizeof(*o));
	o->source_capacity = DEFAULT_CAP;
}

void cpat_stage_opts_init(struct cpat_stage_opts *o)
{
	if (!o)
		return;
	memset(o, 0, sizeof(*o));
	o->workers = 1;
	o->out_capacity = DEFAULT_CAP;
}

void cpat_batch_opts_init(struct cpat_batch_opts *o)
{
	if (!o)
		return;
	memset(o, 0, sizeof(*o));
	o->max_items = 100;
	o->flush_ns = CPAT_SEC;
	o->out_capacity = 4;
}

size_t cpat_batch_size(size_t max_items, size_t item_size)
{
	if (max_items == 0 || item_size == 0 ||
	    max_items > (SIZE_MAX - BATCH_HDR - 4096) / item_size)
		return 0;
	return BATCH_HDR + max_items * item_size;
}

const void *cpat_batch_item(const struct cpat_batch *b, size_t i)
{
	return (const char *)b + BATCH_HDR + i * b->item_size;
}

/* The drop of one abandoned item. */
void cpat__pipeline_drop_item(struct cpat_pipeline *p, const void *payload,
			      unsigned stage)
{
	atomic_fetch_add_explicit(&p->not_processed, 1, memory_order_relaxed);
	if (p->drop)
		p->drop(payload, stage, p->drop_arg);
}

/* The run token fired (error, cancel, deadline, caller's token). */
static void on_stop(struct cpat__watch *w, int cause)
{
	struct cpat_pipeline *p = w->arg;
	int zero = 0;
	atomic_compare_exchange_strong(&p->stop_rc, &zero, cause);
	atomic_store(&p->stopping, 1);
	for (unsigned i = 0; i < p->nstages; i++)
		if (p->stages[i]->ordered)
			wake_turns(p->stages[i]);
	if (p->feed)
		cpat_chan_close(p->ch[0]);
	if (p->ack) {
		/* The source may be waiting for an ack slot. */
		atomic_fetch_add(&p->ack_seq, 1);
		cpat__unpark_all(&p->ack_seq);
	}
}

/* A callback failed with rc < 0 on the item of index idx. */
void cpat__pipeline_fail(struct cpat_pipeline *p, const char *where,
			 uint64_t idx, int rc)
{
	/* A callback that returns an error because it saw the run token fire
	 * is part of the stop, not its cause: the token's cause is (recorded
	 * here too, as on_stop() may not have run yet). */
	int zero = 0;
	int cause = cpat_token_status(p->tok);
	if (cause == 0) {
		if (atomic_compare_exchange_strong(&p->stop_rc, &zero, rc)) {
			set_name(p->err_stage, where, "");
			p->err_index = idx;
		}
	} else {
		atomic_compare_exchange_strong(&p->stop_rc, &zero, cause);
	}
	cpat_token_cancel(p->tok);
}

/* ---- building ---- */

int cpat_pipeline_create(struct cpat_pipeline **out,
			 const struct cpat_pipeline_opts *opts)
{
	if (out)
		*out = NULL;
	if (!out || !opts || opts->item_size == 0 ||
	    opts->item_size > SIZE_MAX / 4 || opts->source_capacity == 0)
		return -EINVAL;
	struct cpat_pipeline *p = cpat__calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->item_size = opts->item_size;
	p->src_cap = opts->source_capacity;
	p->src_hdr = ENV_HDR;
	p->src_stride = round_up(ENV_HDR + p->item_size, ENV_HDR);
	p->drop = opts->drop;
	p->drop_arg = opts->drop_arg;
	*out = p;
	return 0;
}

int cpat_pipeline_set_generator(struct cpat_pipeline *p, cpat_source_fn fn,
				void *arg)
{
	if (!p || !fn)
		return -EINVAL;
	if (p->gen || p->feed || p->src_fn || p->state != ST_BUILD)
		return -EBUSY;
	p->gen = fn;
	p->gen_arg = arg;
	return 0;
}

int cpat_pipeline_set_feed(struct cpat_pipeline *p)
{
	if (!p)
		return -EINVAL;
	if (p->gen || p->feed || p->src_fn || p->state != ST_BUILD)
		return -EBUSY;
	p->feed = true;
	return 0;
}

static size_t last_size(struct cpat_pipeline *p)
{
	return p->nstages ? p->stages[p->nstages - 1]->out_size : p->item_size;
}

static int append(struct cpat_pipeline *p, struct stage *s)
{
	struct stage **ns = cpat__malloc((p->nstages + 1) * sizeof(*ns));
	if (!ns) {
		cpat__free(s);
		return -ENOMEM;
	}
	s->in_size = last_size(p);
	if (p->nstages)
		memcpy(ns, p->stages, p->nstages * sizeof(*ns));
	cpat__free(p->stages);
	s->idx = p->nstages;
	ns[p->nstages++] = s;
	p->stages = ns;
	return 0;
}

int cpat_pipeline_add_stage(struct cpat_pipeline *p,
			    const struct cpat_stage_opts *o)
{
	if (!p || !o || (!o->map == !o->flat) || o->out_size == 0 ||
	    o->out_size > SIZE_MAX / 4 || o->workers == 0 ||
	    o->out_capacity == 0)
		return -EINVAL;
	if (p->state != ST_BUILD || p->outch)
		return -EBUSY;
	struct stage *s = cpat__calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	set_name(s->name, o->name, "stage");
	s->kind = o->map ? K_MAP : K_FLAT;
	s->map = o->map;
	s->flat = o->flat;
	s->arg = o->arg;
	s->out_size = o->out_size;
	s->workers = o->workers;
	s->ordered = o->ordered && o->workers > 1;
	s->out_cap = o->out_capacity;
	return append(p, s);
}

int cpat_pipeline_add_batch(struct cpat_pipeline *p,
			    const struct cpat_batch_opts *o)
{
	if (!p || !o || o->max_items == 0 || o->out_capacity == 0 ||
	    (o->flush_ns <= 0 && o->flush_ns != CPAT_FOREVER))
		return -EINVAL;
	if (p->state != ST_BUILD || p->outch)
		return -EBUSY;
	size_t bsz = cpat_batch_size(o->max_items, last_size(p));
	if (bsz == 0 || bsz > SIZE_MAX / 4)
		return -EINVAL;
	struct stage *s = cpat__calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	set_name(s->name, o->name, "batch");
	s->kind = K_BATCH;
	s->out_size = bsz;
	s->workers = 1;
	s->out_cap = o->out_capacity;
	s->max_items = o->max_items;
	s->flush_ns = o->flush_ns;
	s->flush_on_cancel = o->flush_on_cancel;
	return append(p, s);
}

int cpat_pipeline_set_sink(struct cpat_pipeline *p, cpat_sink_fn fn, void *arg)
{
	if (!p || !fn)
		return -EINVAL;
	if (p->sink || p->output || p->state != ST_BUILD)
		return -EBUSY;
	p->sink = fn;
	p->sink_arg = arg;
	return 0;
}

int cpat_pipeline_set_output(struct cpat_pipeline *p)
{
	if (!p)
		return -EINVAL;
	if (p->sink || p->output || p->state != ST_BUILD)
		return -EBUSY;
	p->output = true;
	return 0;
}

/* ---- run ---- */

static int start_thread(struct cpat_pipeline *p, pthread_t *th,
			void *(*fn)(void *), void *arg)
{
	atomic_fetch_add(&cpat__pipeline_threads, 1);
	atomic_fetch_add(&p->running, 1);
	int rc = cpat__thread_start(th, fn, arg, false);
	if (rc != 0) {
		atomic_fetch_sub(&p->running, 1);
		atomic_fetch_sub(&cpat__pipeline_threads, 1);
	}
	return rc;
}

/* Joins every started thread and frees the run state. */
static void teardown(struct cpat_pipeline *p, bool free_stats)
{
	if (p->src_started)
		CPAT_CHECK(pthread_join(p->src_th, NULL) == 0);
	p->src_started = false;
	for (unsigned i = 0; i < p->nstages; i++) {
		struct stage *s = p->stages[i];
		for (unsigned w = 0; s->w && w < s->workers; w++) {
			if (s->w[w].started)
				CPAT_CHECK(pthread_join(s->w[w].th, NULL) == 0);
			s->w[w].started = false;
		}
	}
	if (p->sink_started)
		CPAT_CHECK(pthread_join(p->sink_th, NULL) == 0);
	p->sink_started = false;
	if (p->watching)
		cpat__token_unwatch(p->tok, &p->watch);
	p->watching = false;
	/* Kept until destroy: wait() counts the ack slots still in use. */
	if (free_stats)
		cpat__pipeline_ack_free(p);
	for (unsigned i = 0; i < p->nstages; i++) {
		struct stage *s = p->stages[i];
		for (unsigned w = 0; s->w && w < s->workers; w++) {
			cpat__free(s->w[w].in);
			cpat__free(s->w[w].own_out);
			s->w[w].in = s->w[w].out = s->w[w].own_out = NULL;
		}
		cpat__free(s->slots);
		cpat__free(s->slot_mem);
		s->slots = NULL;
		s->slot_mem = NULL;
		s->nslots = 0;
		if (free_stats) {
			cpat__free(s->w);
			cpat__free_aligned(s->st);
			s->w = NULL;
			s->st = NULL;
		}
	}
	cpat__free(p->src_buf);
	cpat__free(p->sink_buf);
	p->src_buf = p->sink_buf = NULL;
	if (free_stats) {
		cpat__free(p->drain_buf);
		p->drain_buf = NULL;
	}
}

/* Items the caller left in the output channel go to the pipeline's drop
 * when the channel is destroyed (with the pipeline): they were counted
 * delivered, but nobody took them, and an item that owns memory must not
 * be lost there. */
static void outch_drop(void *elem, void *arg)
{
	struct cpat_pipeline *p = arg;
	p->drop(elem, p->nstages, p->drop_arg);
}

/* Makes the output channel (its stages are fixed from then on). */
static int make_outch(struct cpat_pipeline *p, size_t size, size_t cap)
{
	struct cpat_chan_opts o;
	cpat_chan_opts_init(&o);
	o.elem_size = size;
	o.capacity = cap;
	if (p->drop) {
		o.drop = outch_drop;
		o.drop_arg = p;
	}
	return cpat_chan_create_opts(&p->outch, &o);
}

static void free_chans(struct cpat_pipeline *p)
{
	if (!p->ch)
		return;
	for (unsigned i = 0; i <= p->nstages; i++)
		if (p->ch[i] != p->outch)
			cpat_chan_destroy(p->ch[i]);
	cpat__free(p->ch);
	p->ch = NULL;
}

static int alloc_run(struct cpat_pipeline *p)
{
	unsigned ns = p->nstages;
	p->ch = cpat__calloc(ns + 1, sizeof(*p->ch));
	if (!p->ch)
		return -ENOMEM;
	if (p->output && !p->outch) {
		/* Made once, kept until destroy (cpat_pipeline_output()). */
		size_t cap = ns ? p->stages[ns - 1]->out_cap : p->src_cap;
		int rc0 = make_outch(p, last_size(p), cap);
		if (rc0)
			return rc0;
	}
	p->src_hdr = p->output && ns == 0 ? 0 : ENV_HDR;
	p->src_stride = p->src_hdr ? round_up(ENV_HDR + p->item_size, ENV_HDR)
				   : p->item_size;
	int rc;
	if (ns == 0 && p->outch)
		p->ch[0] = p->outch;
	else if ((rc = cpat_chan_create(&p->ch[0], p->src_stride, p->src_cap)))
		return rc;
	size_t in_stride = p->src_stride;
	for (unsigned i = 0; i < ns; i++) {
		struct stage *s = p->stages[i];
		bool last = i + 1 == ns;
		s->in = p->ch[i];
		s->in_stride = in_stride;
		s->out_hdr = last && p->output ? 0 : ENV_HDR;
		s->out_stride =
			s->out_hdr ? round_up(ENV_HDR + s->out_size, ENV_HDR)
				   : s->out_size;
		if (p->ack && s->kind == K_BATCH) {
			/* The members' ack slots travel after the batch
			 * (pipeline_ack.c); a batch is then the last stage. */
			p->ack_tail = round_up(ENV_HDR + s->out_size,
					       sizeof(uint32_t));
			s->out_stride = round_up(
				p->ack_tail + s->max_items * sizeof(uint32_t),
				ENV_HDR);
		}
		if (last && p->outch)
			p->ch[i + 1] = p->outch;
		else if ((rc = cpat_chan_create(&p->ch[i + 1], s->out_stride,
						s->out_cap)))
			return rc;
		s->out = p->ch[i + 1];
		in_stride = s->out_stride;
		atomic_store(&s->live, s->workers);
		atomic_store(&s->recv_ticket, 0);
		atomic_store(&s->recv_lock, 0);
		atomic_store(&s->send_serving, 0);
		atomic_store(&s->send_lock, 0);
		/* A worker takes at most its share of what the input
		 * channel holds: one taking all of a small channel leaves
		 * the stage's other workers starved until it refills. */
		size_t kin = cpat_chan_cap(s->in) / s->workers;
		kin = kin < CHUNK ? kin : CHUNK;
		if (kin == 0)
			kin = 1;
		if (s->ordered) {
			s->nslots = cpat__pipeline_reorder_slots(s);
			s->slots = cpat__calloc(s->nslots, sizeof(*s->slots));
			s->slot_mem =
				cpat__calloc(s->nslots, CHUNK * s->out_stride);
			if (!s->slots || !s->slot_mem)
				return -ENOMEM;
			for (uint32_t j = 0; j < s->nslots; j++)
				s->slots[j].buf =
					s->slot_mem +
					(size_t)j * CHUNK * s->out_stride;
		}
		s->w = cpat__calloc(s->workers, sizeof(*s->w));
		s->st = cpat__malloc_aligned(s->workers * sizeof(*s->st),
					     CPAT_CACHELINE);
		if (!s->w || !s->st)
			return -ENOMEM;
		memset(s->st, 0, s->workers * sizeof(*s->st));
		for (unsigned w = 0; w < s->workers; w++) {
			struct cpat_stage_ctx *c = &s->w[w];
			c->p = p;
			c->s = s;
			c->id = w;
			c->st = &s->st[w];
			c->outcap = s->kind == K_BATCH ? 1 : CHUNK;
			c->kin = kin;
			c->in = cpat__malloc(kin * s->in_stride);
			c->out = c->own_out =
				cpat__malloc(c->outcap * s->out_stride);
			if (!c->in || !c->out)
				return -ENOMEM;
		}
	}
	if (p->gen || p->src_fn) {
		p->src_buf = cpat__malloc(CHUNK * p->src_stride);
		if (!p->src_buf)
			return -ENOMEM;
	}
	if (p->sink) {
		p->sink_buf = cpat__malloc(CHUNK * in_stride);
		if (!p->sink_buf)
			return -ENOMEM;
	}
	/* wait() drains the channels through this: it cannot fail then. */
	size_t maxstride = p->src_stride;
	for (unsigned i = 0; i < ns; i++)
		if (p->stages[i]->out_stride > maxstride)
			maxstride = p->stages[i]->out_stride;
	p->drain_buf = cpat__malloc(maxstride);
	if (!p->drain_buf)
		return -ENOMEM;
	return cpat__pipeline_ack_setup(p);
}

int cpat_pipeline_start(struct cpat_pipeline *p, struct cpat_token *tok,
			int64_t deadline_ns)
{
	if (!p || !cpat__deadline_ok(deadline_ns))
		return -EINVAL;
	if (p->state != ST_BUILD)
		return -EBUSY;
	if ((!p->gen && !p->feed && !p->src_fn) || (!p->sink && !p->output))
		return -EINVAL;
	if (p->ack) {
		/* Acks need a callback sink (the library cannot tell when the
		 * caller is done with an output item); a batch must be the
		 * last stage (it carries its members' slots to the sink); and
		 * a batch that only flushes when full must fit in the table,
		 * or the source would wait for acks that never come. */
		if (p->output)
			return -EINVAL;
		for (unsigned i = 0; i < p->nstages; i++) {
			struct stage *s = p->stages[i];
			if (s->kind != K_BATCH)
				continue;
			if (i + 1 != p->nstages ||
			    (p->ack_max && s->flush_ns == CPAT_FOREVER &&
			     s->max_items > p->ack_max))
				return -EINVAL;
		}
	}
	atomic_store(&p->stop_rc, 0);
	atomic_store(&p->stopping, 0);
	atomic_store(&p->produced, 0);
	atomic_store(&p->src_sent, 0);
	atomic_store(&p->delivered, 0);
	atomic_store(&p->not_processed, 0);
	atomic_store(&p->next_index, 0);
	atomic_store(&p->feed_closed, 0);
	atomic_store(&p->gen_ended, 0);
	atomic_store(&p->feeders, 0);
	p->err_stage[0] = 0;
	p->err_index = 0;
	struct stage *last = p->nstages ? p->stages[p->nstages - 1] : NULL;
	p->drain_sink = p->sink && last && last->kind == K_BATCH &&
			last->flush_on_cancel;

	int rc = alloc_run(p);
	if (rc == 0)
		rc = deadline_ns == CPAT_FOREVER
			     ? cpat_token_create(&p->tok, tok)
			     : cpat_token_create_deadline(&p->tok, tok,
							  deadline_ns);
	if (rc != 0) {
		teardown(p, true);
		free_chans(p);
		return rc;
	}
	p->watch.fn = on_stop;
	p->watch.arg = p;
	int cause = cpat__token_watch(p->tok, &p->watch);
	if (cause < 0)
		on_stop(&p->watch, cause);
	else
		p->watching = true;
	/* Running from the moment the first thread may run: a cancel from
	 * a callback before start returns must not be lost. */
	atomic_store(&p->state, ST_RUNNING);

	/* Downstream first, so that every thread finds its reader. */
	if (p->sink) {
		rc = start_thread(p, &p->sink_th, cpat__pipeline_sink_main, p);
		p->sink_started = rc == 0;
	}
	for (unsigned i = p->nstages; rc == 0 && i-- > 0;) {
		struct stage *s = p->stages[i];
		for (unsigned w = 0; rc == 0 && w < s->workers; w++) {
			rc = start_thread(p, &s->w[w].th,
					  cpat__pipeline_stage_main, &s->w[w]);
			s->w[w].started = rc == 0;
		}
	}
	if (rc == 0 && (p->gen || p->src_fn)) {
		rc = start_thread(p, &p->src_th, cpat__pipeline_src_main, p);
		p->src_started = rc == 0;
	}
	if (rc != 0) {
		/* Nothing entered the pipeline yet (the source starts last). */
		atomic_store(&p->stopping, 1);
		cpat_token_cancel(p->tok);
		for (unsigned i = 0; i <= p->nstages; i++)
			cpat_chan_close(p->ch[i]);
		teardown(p, true);
		cpat_token_unref(p->tok);
		p->tok = NULL;
		free_chans(p);
		atomic_store(&p->state, ST_BUILD);
		return rc;
	}
	return 0;
}

int cpat_pipeline_feed(struct cpat_pipeline *p, const void *item,
		       struct cpat_token *tok)
{
	return cpat_pipeline_feed_until(p, item, tok, CPAT_FOREVER);
}

int cpat_pipeline_feed_until(struct cpat_pipeline *p, const void *item,
			     struct cpat_token *tok, int64_t deadline_ns)
{
	if (!p || !item || !p->feed || p->state == ST_BUILD ||
	    !cpat__deadline_ok(deadline_ns))
		return -EINVAL;
	atomic_fetch_add(&p->feeders, 1);
	int rc;
	if (atomic_load(&p->feed_closed) || atomic_load(&p->stopping) ||
	    p->state != ST_RUNNING) {
		rc = -EPIPE;
	} else {
		alignas(max_align_t) char local[4096];
		char *env = p->src_stride <= sizeof(local) ? local : NULL;
		if (!env) {
			/* Items over 4 KiB: the envelope is built in a
			 * temporary (the only allocation on an item path,
			 * documented in the header). */
			env = cpat__malloc(p->src_stride);
			if (!env) {
				atomic_fetch_sub(&p->feeders, 1);
				return -ENOMEM;
			}
		}
		uint64_t idx = atomic_fetch_add(&p->next_index, 1);
		if (p->src_hdr)
			env_set_index(env, idx);
		memcpy(env + p->src_hdr, item, p->item_size);
		rc = cpat_chan_send_until(p->ch[0], env, tok, deadline_ns);
		if (rc == 0) {
			atomic_fetch_add(&p->produced, 1);
			atomic_fetch_add(&p->src_sent, 1);
		}
		if (env != local)
			cpat__free(env);
	}
	atomic_fetch_sub(&p->feeders, 1);
	return rc;
}

int cpat_pipeline_feed_close(struct cpat_pipeline *p)
{
	if (!p || !p->feed || p->state == ST_BUILD)
		return -EINVAL;
	int was = atomic_exchange(&p->feed_closed, 1);
	if (was)
		return -EPIPE;
	if (p->state == ST_RUNNING)
		cpat_chan_close(p->ch[0]);
	return 0;
}

struct cpat_chan *cpat_pipeline_output(struct cpat_pipeline *p)
{
	if (!p || !p->output)
		return NULL;
	if (!p->outch && atomic_load(&p->state) == ST_BUILD) {
		/* Asked before start: made now, and the shape is fixed from
		 * here on (add_stage/add_batch give -EBUSY). */
		size_t sz = last_size(p);
		size_t cap = p->nstages ? p->stages[p->nstages - 1]->out_cap
					: p->src_cap;
		if (make_outch(p, sz, cap) != 0)
			return NULL;
	}
	return p->outch;
}

int cpat_pipeline_cancel(struct cpat_pipeline *p)
{
	if (!p)
		return -EINVAL;
	if (p->state == ST_RUNNING && p->tok)
		cpat_token_cancel(p->tok);
	return 0;
}

struct cpat_token *cpat_pipeline_token(struct cpat_pipeline *p)
{
	return p ? p->tok : NULL;
}

static bool all_exited(void *arg)
{
	return atomic_load(&((struct cpat_pipeline *)arg)->running) == 0;
}

/* Waits until every thread of the run has finished: 0, the cause of tok or
 * -ETIMEDOUT. */
static int wait_threads(struct cpat_pipeline *p, struct cpat_token *tok,
			int64_t deadline)
{
	return cpat__event_wait(&p->exited, all_exited, p, tok, deadline);
}

int cpat_pipeline_wait(struct cpat_pipeline *p,
		       struct cpat_pipeline_result *res)
{
	return cpat_pipeline_wait_until(p, NULL, CPAT_FOREVER, res);
}

int cpat_pipeline_wait_until(struct cpat_pipeline *p, struct cpat_token *tok,
			     int64_t deadline_ns,
			     struct cpat_pipeline_result *res)
{
	if (!p || p->state == ST_BUILD || !cpat__deadline_ok(deadline_ns))
		return -EINVAL;
	if (cpat__pipeline_tl == p)
		return -EBUSY;
	if (p->state == ST_DONE) {
		if (res)
			*res = p->res;
		return p->res.rc;
	}
	if (tok || deadline_ns != CPAT_FOREVER) {
		/* Giving up leaves the run as it is: nothing joined, res
		 * untouched. */
		int rc = wait_threads(p, tok, deadline_ns);
		if (rc != 0)
			return rc;
	}
	teardown(p, false);
	/* Nothing may enter after the drain: close the input, wait out the
	 * feeds in progress (they return at once on a closed channel). */
	cpat_chan_close(p->ch[0]);
	while (atomic_load(&p->feeders) > 0)
		sched_yield();
	unsigned nch = p->output ? p->nstages : p->nstages + 1;
	for (unsigned i = 0; i < nch; i++) {
		size_t hdr = ENV_HDR;
		while (cpat_chan_try_recv(p->ch[i], p->drain_buf) == 0)
			cpat__pipeline_drop_item(p, p->drain_buf + hdr, i);
	}
	struct cpat_pipeline_result r;
	memset(&r, 0, sizeof(r));
	r.rc = atomic_load(&p->stop_rc);
	memcpy(r.stage, p->err_stage, sizeof(r.stage));
	r.item_index = p->err_index;
	r.produced = atomic_load(&p->produced);
	r.delivered = atomic_load(&p->delivered);
	r.not_processed = atomic_load(&p->not_processed);
	if (p->ack) {
		r.acked = atomic_load(&p->acked);
		r.unacked = cpat__pipeline_ack_unacked(p);
	}
	for (unsigned i = 0; i < p->nstages; i++) {
		struct stage *s = p->stages[i];
		for (unsigned w = 0; w < s->workers; w++) {
			r.filtered += atomic_load(&s->st[w].filtered);
			r.expanded += atomic_load(&s->st[w].expanded);
			r.batched += atomic_load(&s->st[w].batched);
		}
	}
	if (p->output && p->nstages == 0) {
		r.delivered = atomic_load(&p->src_sent);
	} else if (p->output) {
		struct stage *s = p->stages[p->nstages - 1];
		for (unsigned w = 0; w < s->workers; w++)
			r.delivered += atomic_load(&s->st[w].out);
	}
	if (r.rc > 0)
		r.rc = 0;
	/*
	 * The run did not complete (items were abandoned, or the input never
	 * ended), yet nobody recorded a cause: the run token fired and the
	 * threads saw it (its status is set for the whole tree before any
	 * callback runs) and were joined before on_stop() ran, whose watch
	 * teardown() then removed. The cause still counts. (A run that
	 * completed stays a success, whatever the token did since.)
	 */
	bool ended = p->feed ? atomic_load(&p->feed_closed) != 0
			     : atomic_load(&p->gen_ended) != 0;
	if (r.rc == 0 && (r.not_processed > 0 || !ended)) {
		int cause = cpat_token_status(p->tok);
		if (cause < 0) {
			r.rc = cause;
			atomic_store(&p->stop_rc, cause);
		}
	}
	p->res = r;
	p->state = ST_DONE;
	if (p->watching)
		cpat__token_unwatch(p->tok, &p->watch);
	p->watching = false;
	if (res)
		*res = r;
	return r.rc;
}

int cpat_pipeline_run(struct cpat_pipeline *p, struct cpat_token *tok,
		      int64_t deadline_ns, struct cpat_pipeline_result *res)
{
	int rc = cpat_pipeline_start(p, tok, deadline_ns);
	if (rc != 0) {
		if (res) {
			memset(res, 0, sizeof(*res));
			res->rc = rc;
		}
		return rc;
	}
	return cpat_pipeline_wait(p, res);
}

/* ---- statistics ---- */

static void stage_stats(struct stage *s, struct cpat_stage_stats *o)
{
	memset(o, 0, sizeof(*o));
	memcpy(o->name, s->name, sizeof(o->name));
	o->workers = s->workers;
	for (unsigned w = 0; s->st && w < s->workers; w++) {
		o->items_in += atomic_load_explicit(&s->st[w].in,
						    memory_order_relaxed);
		o->items_out += atomic_load_explicit(&s->st[w].out,
						     memory_order_relaxed);
		o->filtered += atomic_load_explicit(&s->st[w].filtered,
						    memory_order_relaxed);
		o->busy_ns += atomic_load_explicit(&s->st[w].busy,
						   memory_order_relaxed);
		o->starved_ns += atomic_load_explicit(&s->st[w].starved,
						      memory_order_relaxed);
		o->blocked_ns += atomic_load_explicit(&s->st[w].blocked,
						      memory_order_relaxed);
	}
	uint64_t tot = o->busy_ns + o->starved_ns + o->blocked_ns;
	o->utilisation = tot ? (double)o->busy_ns / (double)tot : 0.0;
}

int cpat_pipeline_stats(struct cpat_pipeline *p, struct cpat_stage_stats *st,
			size_t n)
{
	if (!p || (!st && n > 0))
		return -EINVAL;
	for (unsigned i = 0; i < p->nstages && i < n; i++)
		stage_stats(p->stages[i], &st[i]);
	return (int)p->nstages;
}

int cpat_pipeline_report(struct cpat_pipeline *p, char *buf, size_t len)
{
	if (!p || (!buf && len > 0))
		return -EINVAL;
	size_t off = 0;
	int total = 0;
#define EMIT(...)                                                          \
	do {                                                               \
		int w_ = snprintf(off < len ? buf + off : NULL,            \
				  off < len ? len - off : 0, __VA_ARGS__); \
		if (w_ > 0) {                                              \
			total += w_;                                       \
			off += (size_t)w_;                                 \
		}                                                          \
	} while (0)
	EMIT("%-20s %7s %12s %12s %10s %11s %11s %11s %6s\n", "stage",
	     "workers", "in", "out", "filtered", "busy ms", "starved ms",
	     "blocked ms", "util");
	int worst = -1;
	double worst_busy = -1;
	for (unsigned i = 0; i < p->nstages; i++) {
		struct cpat_stage_stats s;
		stage_stats(p->stages[i], &s);
		EMIT("%-20.20s %7u %12llu %12llu %10llu %11.3f %11.3f %11.3f "
		     "%5.1f%%\n",
		     s.name, s.workers, (unsigned long long)s.items_in,
		     (unsigned long long)s.items_out,
		     (unsigned long long)s.filtered, s.busy_ns / 1e6,
		     s.starved_ns / 1e6, s.blocked_ns / 1e6,
		     s.utilisation * 100.0);
		double per = (double)s.busy_ns / s.workers;
		if (per > worst_busy) {
			worst_busy = per;
			worst = (int)i;
		}
	}
	if (worst >= 0)
		EMIT("bottleneck: %s (%.3f ms busy per worker)\n",
		     p->stages[worst]->name, worst_busy / 1e6);
	else
		EMIT("bottleneck: none (no stages)\n");
#undef EMIT
	return total;
}

void cpat_pipeline_destroy(struct cpat_pipeline *p)
{
	if (!p)
		return;
	if (cpat__pipeline_tl == p)
		return; /* from its own stage: a caller bug, refused */
	if (p->state == ST_RUNNING) {
		cpat_token_cancel(p->tok);
		cpat_pipeline_wait(p, NULL);
	}
	teardown(p, true);
	if (p->tok)
		cpat_token_unref(p->tok);
	free_chans(p);
	cpat_chan_destroy(p->outch);
	for (unsigned i = 0; i < p->nstages; i++)
		cpat__free(p->stages[i]);
	cpat__free(p->stages);
	cpat__free(p);
}
