/*
 * End-to-end acknowledgement of a pipeline's items (cpattern/pipeline.h,
 * "Acknowledgement"): a context source gives each item a handle; the
 * pipeline calls the ack callback once for every source item that
 * completes, never for one that was not processed.
 *
 * The ack table. Made at start: max_unacked slots, each the handle of one
 * source item in flight (ack_size bytes, at a max_align_t stride so the
 * source may store any type there), a pending count, and a free-list link.
 * The source takes a slot for each call of its function (the function
 * writes the handle straight into it, cpat_source_ack()), gives it back if
 * the call produced nothing, and otherwise sends the slot's index in the
 * item's envelope (ENV_SLOT, in the header's room beside the index). Every
 * output of a stage carries its input's slot; a batch carries its members'
 * slots after its payload (ack_tail; batches must then be the last stage).
 * Nothing is allocated per item.
 *
 * Completion. An item completes where it stops flowing with success: the
 * sink callback returned 0 for it (for a batch, for each of its members),
 * a map stage skipped it, or a flat stage's input emitted nothing. Without
 * flat stages every slot is in exactly one envelope, so a completion is
 * final and touches no shared word. With a flat stage (ack_counted) a slot
 * keeps a count of its outputs not yet completed: it starts at 1 (the
 * item), the flat worker adds outputs - 1 when the input is done (before
 * any of its outputs leave the worker: they leave at the chunk's end), and
 * each completion decrements it; the one that takes it to 0 completes the
 * source item. When an input's outputs fill the worker's buffer and must
 * leave before the input is done (a flush inside cpat_stage_emit()), the
 * worker first counts the outputs so far plus a hold for those to come,
 * and drops the hold when the input is done. An item abandoned by a stop
 * never reaches 0 (an abandoned output or input never decrements), so it
 * is never acked: its slot stays in use, which is exactly how wait() counts
 * it as unacked.
 *
 * The acks. A thread that completes items (a stage worker for skips and
 * empty flat inputs, the sink) copies their handles into its own queue and
 * hands the queue to the ack callback at the end of each chunk (or when it
 * is full), so one call acknowledges many items, and every item of a batch
 * in one call. Acks run in that thread, in whatever order items complete:
 * source order would hold every ack behind the slowest item in flight, and
 * a crash would then redeliver everything after it. After the callback the
 * thread pushes the queue's slots, linked, onto the shared free list with
 * one CAS (a Treiber push; only the source pops, by taking the whole list
 * with an exchange, so there is no ABA). A queue is always emptied before
 * its thread waits for input: a thread never holds slots that the source
 * may be waiting for.
 *
 * The bound. The source waits while no slot is free: it hands on the items
 * it holds (they hold slots), then sets ack_waiting, reads ack_seq,
 * re-checks the free list and `stopping`, and parks on ack_seq. A pusher
 * reads ack_waiting after its CAS (both sides seq_cst, so one of them sees
 * the other) and, if set, bumps ack_seq and wakes it; so does on_stop().
 * The default table (max_unacked 0) holds every item the pipeline can hold
 * at once: the source's chunk, every channel's capacity (a batch channel's
 * times max_items), every worker's input chunk, output buffer and ack
 * queue, an ordered stage's reorder slots, the batch in hand and the
 * sink's chunk and queue; so it never throttles before the channels do.
 */
#include "pipeline_impl.h"

static size_t round_up(size_t n, size_t a)
{
	return (n + a - 1) / a * a;
}

void cpat_source_opts_init(struct cpat_source_opts *o)
{
	if (o)
		memset(o, 0, sizeof(*o));
}

int cpat_pipeline_set_source(struct cpat_pipeline *p,
			     const struct cpat_source_opts *o)
{
	if (!p || !o || !o->fn || (o->ack_size > 0) != (o->ack != NULL) ||
	    o->max_unacked >= ACK_NIL || o->ack_size > SIZE_MAX / 4)
		return -EINVAL;
	if (p->gen || p->feed || p->src_fn || p->state != ST_BUILD)
		return -EBUSY;
	p->src_fn = o->fn;
	p->src_arg = o->arg;
	if (o->ack_size > 0) {
		p->ack = o->ack;
		p->ack_arg = o->ack_arg;
		p->ack_size = o->ack_size;
		p->ack_max = o->max_unacked;
	}
	return 0;
}

void *cpat_source_ack(struct cpat_source_ctx *ctx)
{
	return ctx ? ctx->ack : NULL;
}

struct cpat_token *cpat_source_token(struct cpat_source_ctx *ctx)
{
	return ctx ? ctx->p->tok : NULL;
}

void *cpat_source_arg(struct cpat_source_ctx *ctx)
{
	return ctx ? ctx->p->src_arg : NULL;
}

int cpat_source_flush(struct cpat_source_ctx *ctx)
{
	if (!ctx || !ctx->held)
		return -EINVAL;
	struct cpat_pipeline *p = ctx->p;
	size_t n = *ctx->held;
	if (n > 0) {
		*ctx->held = 0;
		ctx->flushed = true;
		if (!cpat__pipeline_src_flush(p, p->src_buf, n))
			return -ECANCELED;
	}
	return stopping(p) ? -ECANCELED : 0;
}

static int queue_alloc(struct cpat_pipeline *p, struct ackq *q, size_t cap)
{
	q->n = 0;
	q->cap = cap;
	q->h = cpat__calloc(cap, p->ack_size);
	q->slot = cpat__calloc(cap, sizeof(*q->slot));
	return q->h && q->slot ? 0 : -ENOMEM;
}

static void queue_free(struct ackq *q)
{
	cpat__free(q->h);
	cpat__free(q->slot);
	q->h = NULL;
	q->slot = NULL;
	q->n = q->cap = 0;
}

int cpat__pipeline_ack_setup(struct cpat_pipeline *p)
{
	if (!p->ack)
		return 0;
	unsigned ns = p->nstages;
	struct stage *last = ns ? p->stages[ns - 1] : NULL;
	/* Source items an envelope of the last channel refers to. */
	size_t per = last && last->kind == K_BATCH ? last->max_items : 1;
	size_t sinkq = per > CHUNK ? per : CHUNK;
	/* The default: every item the pipeline can hold at once (see the
	 * design comment). Slots are referred to by the envelopes, the
	 * threads' buffers and the ack queues. */
	uint64_t want = CHUNK + cpat_chan_cap(p->ch[0]);
	p->ack_counted = false;
	for (unsigned i = 0; i < ns; i++) {
		struct stage *s = p->stages[i];
		if (s->kind == K_FLAT)
			p->ack_counted = true;
		if (s->kind == K_BATCH) {
			want += s->max_items + s->w[0].kin;
			want += (uint64_t)cpat_chan_cap(s->out) * s->max_items;
			continue;
		}
		want += (uint64_t)s->workers * (s->w[0].kin + 2 * CHUNK);
		want += (uint64_t)s->nslots * CHUNK;
		want += cpat_chan_cap(s->out);
	}
	want += (uint64_t)CHUNK * per + sinkq;
	uint64_t n = p->ack_max ? p->ack_max : want;
	if (n >= ACK_NIL)
		n = ACK_NIL - 1;
	p->ack_nslots = (uint32_t)n;
	p->ack_stride = round_up(p->ack_size, alignof(max_align_t));
	p->ack_tab = cpat__calloc(n, p->ack_stride);
	p->ack_pend = cpat__calloc(n, sizeof(*p->ack_pend));
	p->ack_next = cpat__calloc(n, sizeof(*p->ack_next));
	if (!p->ack_tab || !p->ack_pend || !p->ack_next)
		return -ENOMEM;
	for (uint32_t i = 0; i < p->ack_nslots; i++)
		p->ack_next[i] = i + 1 < p->ack_nslots ? i + 1 : ACK_NIL;
	atomic_store(&p->ack_free, 0);
	p->ack_src_free = ACK_NIL;
	atomic_store(&p->acked, 0);
	atomic_store(&p->ack_waiting, 0);
	for (unsigned i = 0; i < ns; i++) {
		struct stage *s = p->stages[i];
		for (unsigned w = 0; s->kind != K_BATCH && w < s->workers; w++)
			if (queue_alloc(p, &s->w[w].ackq, CHUNK))
				return -ENOMEM;
	}
	return queue_alloc(p, &p->sink_q, sinkq);
}

void cpat__pipeline_ack_free(struct cpat_pipeline *p)
{
	for (unsigned i = 0; i < p->nstages; i++) {
		struct stage *s = p->stages[i];
		for (unsigned w = 0; s->w && w < s->workers; w++)
			queue_free(&s->w[w].ackq);
	}
	queue_free(&p->sink_q);
	cpat__free(p->ack_tab);
	cpat__free((void *)p->ack_pend);
	cpat__free(p->ack_next);
	p->ack_tab = NULL;
	p->ack_pend = NULL;
	p->ack_next = NULL;
	p->ack_nslots = 0;
}

uint64_t cpat__pipeline_ack_unacked(struct cpat_pipeline *p)
{
	uint64_t nfree = 0;
	for (uint32_t i = atomic_load(&p->ack_free); i != ACK_NIL;
	     i = p->ack_next[i])
		nfree++;
	for (uint32_t i = p->ack_src_free; i != ACK_NIL; i = p->ack_next[i])
		nfree++;
	return p->ack_nslots - nfree;
}

void cpat__pipeline_ack_flush(struct cpat_pipeline *p, struct ackq *q)
{
	size_t n = q->n;
	p->ack(q->h, n, p->ack_arg);
	atomic_fetch_add_explicit(&p->acked, n, memory_order_relaxed);
	for (size_t i = 0; i + 1 < n; i++)
		p->ack_next[q->slot[i]] = q->slot[i + 1];
	uint32_t head =
		atomic_load_explicit(&p->ack_free, memory_order_relaxed);
	do
		p->ack_next[q->slot[n - 1]] = head;
	while (!atomic_compare_exchange_weak(&p->ack_free, &head, q->slot[0]));
	q->n = 0;
	if (atomic_load(&p->ack_waiting)) {
		atomic_fetch_add(&p->ack_seq, 1);
		cpat__unpark_one(&p->ack_seq);
	}
}

uint32_t cpat__pipeline_ack_take(struct cpat_pipeline *p)
{
	for (int i = 0;; i++) {
		uint32_t h = atomic_exchange(&p->ack_free, ACK_NIL);
		if (h != ACK_NIL)
			return h;
		if (stopping(p))
			return ACK_NIL;
		/* A few polls: an ack is usually on its way (the sink acks at
		 * the end of each chunk); then sleep until one is. */
		if (i < 16) {
			cpat__cpu_relax();
			continue;
		}
		atomic_store(&p->ack_waiting, 1);
		uint32_t e = atomic_load(&p->ack_seq);
		if (atomic_load(&p->ack_free) == ACK_NIL &&
		    atomic_load(&p->stopping) == 0)
			cpat__park(&p->ack_seq, e, CPAT_FOREVER);
		atomic_store(&p->ack_waiting, 0);
	}
}
