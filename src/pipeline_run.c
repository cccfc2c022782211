/*
 * The threads of a pipeline: the source, the stages' workers (map, flat,
 * batch) and the sink (the structures are in pipeline_impl.h; the ordered
 * stages' hand-off is in pipeline_order.c).
 *
 * Threads. One source thread (generator only; a feed is pushed by the
 * caller), `workers` threads per stage, and one sink thread (callback sink
 * only). Every one is started with cpat__thread_start() and joined by
 * cpat_pipeline_wait() (or by start's failure path). Each thread works in
 * chunks: it takes up to K items with one recv_many (only what is there, so
 * a lone item is not held back), runs the function on each into a private
 * output buffer, and hands the results on with one send_many. Under load
 * the chunks fill and the cost per hand-off is shared by up to K items;
 * when the pipeline is starved they shrink to one item, so latency is that
 * of per-item hand-off. Nothing is allocated per item: the buffers are
 * made at start.
 *
 * End of input. The source closes chan[0] at its end (feed: feed_close).
 * A stage's workers see -EPIPE from recv once their input is closed and
 * drained; each decrements the stage's `live` counter on exit, and the one
 * that takes it to 0 closes the stage's output channel, exactly once. The
 * sink ends at -EPIPE on the last channel.
 *
 * Locks: none on the item path of unordered stages (ordered stages: see
 * pipeline_order.c).
 *
 * Batch stage (one worker): gathers input payloads into a struct cpat_batch
 * in its output envelope; flushes at max_items, when flush_ns has passed
 * since the batch's first item (it waits with recv_many until that
 * deadline), and at end of input. On a stop with flush_on_cancel, if it is
 * the last stage, the partial batch is handed on: to a callback sink, which
 * then keeps delivering until the batch stage's channel closes (the
 * "drain" sink, it receives without the token); to an output channel, with
 * try_send (dropped if full, so a caller who stopped reading cannot block
 * wait()).
 */
#include "pipeline_impl.h"

/* ---- the source ---- */

/* Sends buf[0..n) to chan[0]; drops what could not be sent. */
static bool src_flush(struct cpat_pipeline *p, char *buf, size_t n)
{
	size_t sent = 0;
	if (n == 0)
		return true;
	int rc = cpat_chan_send_many(p->ch[0], buf, n, &sent, p->tok,
				     CPAT_FOREVER);
	atomic_fetch_add_explicit(&p->src_sent, sent, memory_order_relaxed);
	for (size_t i = sent; i < n; i++)
		cpat__pipeline_drop_item(
			p, buf + i * p->src_stride + p->src_hdr, 0);
	return rc == 0;
}

bool cpat__pipeline_src_flush(struct cpat_pipeline *p, char *buf, size_t n)
{
	return src_flush(p, buf, n);
}

/* The source loop, made three times (generator; context source without and
 * with acks) so that each tests its kind once, not per item. */
static inline __attribute__((always_inline)) void
src_loop(struct cpat_pipeline *p, bool ctxsrc, bool acks)
{
	size_t k = p->src_cap < CHUNK ? p->src_cap : CHUNK;
	size_t n = 0;
	uint64_t idx = 0;
	struct cpat_source_ctx sc = {p, NULL, &n, false};
	uint32_t fl = ACK_NIL; /* acks: the source's own free slots */
	int64_t first_t = 0, t0 = cpat_now_ns();
	for (;;) {
		if (stopping(p))
			break;
		char *slot = p->src_buf + n * p->src_stride;
		uint32_t as = 0;
		if (acks) {
			if (fl == ACK_NIL)
				fl = atomic_exchange(&p->ack_free, ACK_NIL);
			if (fl == ACK_NIL) {
				/* Every slot is in flight: hand on the items
				 * held here (they hold slots), then wait for
				 * acks to free some. */
				bool ok = src_flush(p, p->src_buf, n);
				n = 0;
				slot = p->src_buf;
				if (!ok)
					break;
				fl = cpat__pipeline_ack_take(p);
				if (fl == ACK_NIL)
					break;
				t0 = cpat_now_ns();
			}
			as = fl;
			fl = p->ack_next[as];
			sc.ack = p->ack_tab + (size_t)as * p->ack_stride;
		}
		int rc = ctxsrc ? p->src_fn(slot + p->src_hdr, &sc)
				: p->gen(slot + p->src_hdr, p->gen_arg);
		if (ctxsrc && sc.flushed) {
			/* cpat_source_flush() handed on the items before
			 * this one: it moves to the front of the buffer. */
			sc.flushed = false;
			if (rc > 0 && slot != p->src_buf)
				memcpy(p->src_buf, slot, p->src_stride);
			slot = p->src_buf;
			t0 = cpat_now_ns();
		}
		if (acks && rc <= 0) {
			p->ack_next[as] = fl;
			fl = as;
		}
		if (rc == 0) {
			if (src_flush(p, p->src_buf, n)) {
				atomic_store(&p->gen_ended, 1);
				cpat_chan_close(p->ch[0]);
			}
			n = 0;
			break;
		}
		if (rc < 0) {
			cpat__pipeline_fail(p, "source", idx, rc);
			break;
		}
		if (p->src_hdr)
			env_set_index(slot, idx);
		if (acks) {
			env_set_slot(slot, as);
			if (p->ack_counted)
				atomic_store_explicit(&p->ack_pend[as], 1,
						      memory_order_relaxed);
		}
		idx++;
		atomic_store_explicit(&p->produced, idx, memory_order_relaxed);
		int64_t t1 = cpat_now_ns();
		if (n++ == 0)
			first_t = t1;
		/* Hand items on in chunks while the generator is fast (a
		 * hand-off costs more than many items), but never hold one
		 * back for long: a slow generator (or one that just waited
		 * for input) hands on each item at once. */
		if (n == k || t1 - t0 > SRC_SLOW_NS ||
		    t1 - first_t > SRC_HOLD_NS) {
			bool ok = src_flush(p, p->src_buf, n);
			n = 0;
			if (!ok)
				break;
			t1 = cpat_now_ns();
		}
		t0 = t1;
	}
	for (size_t i = 0; i < n; i++)
		cpat__pipeline_drop_item(
			p, p->src_buf + i * p->src_stride + p->src_hdr, 0);
	if (acks)
		p->ack_src_free = fl; /* read by wait() after the join */
}

void *cpat__pipeline_src_main(void *arg)
{
	struct cpat_pipeline *p = arg;
	cpat__thread_name("cpat-source");
	cpat__pipeline_tl = p;
	cpat__spin_adapt();
	if (!p->src_fn)
		src_loop(p, false, false);
	else if (!p->ack)
		src_loop(p, true, false);
	else
		src_loop(p, true, true);
	cpat_chan_close(p->ch[0]);
	cpat__pipeline_tl = NULL;
	cpat__pipeline_thread_done(p);
	atomic_fetch_sub(&cpat__pipeline_threads, 1);
	return NULL;
}

/* ---- stages ---- */

/* Sends ctx->out[from..nout) downstream; on failure drops the rest and
 * marks the worker stopped. Returns whether all were sent. */
bool cpat__pipeline_out_flush(struct cpat_stage_ctx *c)
{
	struct stage *s = c->s;
	struct cpat_pipeline *p = c->p;
	bool ok = true;
	if (c->nout > 0 && !c->stopped) {
		size_t sent = 0;
		int rc = cpat_chan_send_many(s->out, c->out, c->nout, &sent,
					     p->tok, CPAT_FOREVER);
		st_add(&c->st->out, sent);
		if (rc == -EPIPE)
			/* Closed under us while running (the caller closed
			 * the output channel): a failure, or other workers
			 * could wait for this one forever. */
			cpat__pipeline_fail(p, s->name, c->index, rc);
		if (rc != 0) {
			for (size_t i = sent; i < c->nout; i++)
				cpat__pipeline_drop_item(
					p,
					c->out + i * s->out_stride + s->out_hdr,
					s->idx + 1);
			ok = false;
		}
	} else if (c->nout > 0) {
		for (size_t i = 0; i < c->nout; i++)
			cpat__pipeline_drop_item(
				p, c->out + i * s->out_stride + s->out_hdr,
				s->idx + 1);
		ok = false;
	}
	c->nout = 0;
	if (!ok)
		c->stopped = true;
	return ok;
}

static void drop_outputs(struct cpat_stage_ctx *c)
{
	for (size_t i = 0; i < c->nout; i++)
		cpat__pipeline_drop_item(
			c->p, c->out + i * c->s->out_stride + c->s->out_hdr,
			c->s->idx + 1);
	c->nout = 0;
}

int cpat_stage_emit(struct cpat_stage_ctx *c, const void *item)
{
	if (!c || !item || c->s->kind != K_FLAT)
		return -EINVAL;
	struct stage *s = c->s;
	if (c->stopped || stopping(c->p))
		return -ECANCELED;
	if (c->nout == c->outcap) {
		int64_t t0 = cpat_now_ns();
		if (c->p->ack_counted && c->emitted > c->ack_held) {
			/* The outputs leave before their input is done: count
			 * them now, plus a hold for those to come, released
			 * when the input is done (pipeline_ack.c). */
			atomic_fetch_add_explicit(
				&c->p->ack_pend[c->ack_slot],
				(uint32_t)(c->emitted - c->ack_held),
				memory_order_relaxed);
			c->ack_held = c->emitted;
		}
		/* An ordered chunk that outgrows its slot: wait until every
		 * earlier chunk has been sent, take the send lock and stream
		 * the rest of the chunk directly. */
		if (s->ordered && !c->have_turn &&
		    !cpat__pipeline_ordered_stream(c)) {
			c->stopped = true;
			c->emit_block += cpat_now_ns() - t0;
			return -ECANCELED;
		}
		bool ok = cpat__pipeline_out_flush(c);
		c->emit_block += cpat_now_ns() - t0;
		if (!ok)
			return -ECANCELED;
	}
	char *slot = c->out + c->nout * s->out_stride;
	if (s->out_hdr) {
		env_set_index(slot, c->index);
		env_set_slot(slot, c->ack_slot);
	}
	memcpy(slot + s->out_hdr, item, s->out_size);
	c->nout++;
	c->emitted++;
	return 0;
}

struct cpat_token *cpat_stage_token(struct cpat_stage_ctx *c)
{
	return c ? c->p->tok : NULL;
}

void *cpat_stage_arg(struct cpat_stage_ctx *c)
{
	return c ? c->s->arg : NULL;
}

uint64_t cpat_stage_index(struct cpat_stage_ctx *c)
{
	return c ? c->index : 0;
}

unsigned cpat_stage_worker(struct cpat_stage_ctx *c)
{
	return c ? c->id : 0;
}

/* Acks: a flat input is done and emitted c->emitted outputs. Its slot's
 * pending count becomes that number (pipeline_ack.c): an input that
 * emitted nothing completes now; otherwise the count takes the outputs
 * beyond the first not yet counted, or drops the hold taken by a flush in
 * cpat_stage_emit() when all were. */
static void flat_ack(struct cpat_stage_ctx *c)
{
	struct cpat_pipeline *p = c->p;
	if (c->emitted == 0) {
		ack_complete(p, &c->ackq, c->ack_slot);
		return;
	}
	if (c->emitted - 1 > c->ack_held)
		atomic_fetch_add_explicit(
			&p->ack_pend[c->ack_slot],
			(uint32_t)(c->emitted - 1 - c->ack_held),
			memory_order_relaxed);
	else if (c->emitted == c->ack_held)
		ack_complete(p, &c->ackq, c->ack_slot);
}

/* The loop of run_chunk(), made with and without acks. */
static inline __attribute__((always_inline)) bool
run_chunk_t(struct cpat_stage_ctx *c, size_t n, bool acks)
{
	struct stage *s = c->s;
	struct cpat_pipeline *p = c->p;
	uint64_t filtered = 0, expanded = 0;
	size_t i;
	bool ok = true;
	for (i = 0; i < n; i++) {
		if (stopping(p) || c->stopped) {
			ok = false;
			break;
		}
		char *env = c->in + i * s->in_stride;
		c->index = env_index(env);
		if (s->kind == K_MAP) {
			char *slot = c->out + c->nout * s->out_stride;
			int rc = s->map(env + ENV_HDR, slot + s->out_hdr, c);
			if (rc == CPAT_STAGE_EMIT) {
				if (s->out_hdr)
					env_set_index(slot, c->index);
				if (acks)
					env_set_slot(slot, env_slot(env));
				c->nout++;
			} else if (rc > 0) {
				filtered++;
				if (acks)
					ack_complete(p, &c->ackq,
						     env_slot(env));
			} else {
				cpat__pipeline_drop_item(p, env + ENV_HDR,
							 s->idx);
				cpat__pipeline_fail(p, s->name, c->index, rc);
				i++;
				ok = false;
				break;
			}
		} else {
			c->emitted = 0;
			if (acks) {
				c->ack_slot = env_slot(env);
				c->ack_held = 0;
			}
			int rc = s->flat(env + ENV_HDR, c);
			if (rc < 0) {
				/* A failed input is not processed, whatever it
				 * emitted first: its outputs stand on their
				 * own (each counts in expanded). */
				cpat__pipeline_drop_item(p, env + ENV_HDR,
							 s->idx);
				expanded += c->emitted;
			} else if (c->emitted == 0) {
				filtered++;
			} else {
				expanded += c->emitted - 1;
			}
			if (acks && rc >= 0 && !c->stopped)
				flat_ack(c);
			if (rc < 0) {
				cpat__pipeline_fail(p, s->name, c->index, rc);
				i++;
				ok = false;
				break;
			}
			if (c->stopped) {
				i++;
				ok = false;
				break;
			}
		}
	}
	for (; i < n; i++)
		cpat__pipeline_drop_item(p, c->in + i * s->in_stride + ENV_HDR,
					 s->idx);
	st_add(&c->st->filtered, filtered);
	if (expanded)
		st_add(&c->st->expanded, expanded);
	return ok;
}

/* Runs the chunk in[0..n); returns false if the worker must stop. Inputs
 * not run are dropped here. The pipeline's acks are tested once per chunk:
 * the loop is made with and without them. */
static bool run_chunk(struct cpat_stage_ctx *c, size_t n)
{
	return c->p->ack ? run_chunk_t(c, n, true) : run_chunk_t(c, n, false);
}

static void stage_loop(struct cpat_stage_ctx *c)
{
	struct stage *s = c->s;
	struct cpat_pipeline *p = c->p;
	/* Map: one output slot per input of the chunk. */
	size_t kmax = c->kin < c->outcap ? c->kin : c->outcap;
	size_t k = kmax;
	int64_t t0 = cpat_now_ns();
	for (;;) {
		size_t n = 0;
		int rc = s->ordered ? cpat__pipeline_ordered_recv(c, k, &n)
				    : cpat_chan_recv_many(s->in, c->in, k, &n,
							  p->tok, CPAT_FOREVER);
		int64_t t1 = cpat_now_ns();
		st_add(&c->st->starved, (uint64_t)(t1 - t0));
		if (rc != 0)
			break;
		st_add(&c->st->in, n);
		c->emit_block = 0;
		bool ok = run_chunk(c, n);
		/* Never wait for input holding slots the source may need. */
		if (p->ack)
			ack_chunk_end(p, &c->ackq);
		int64_t t2 = cpat_now_ns();
		int64_t busy = t2 - t1 - c->emit_block;
		st_add(&c->st->busy, (uint64_t)busy);
		/* Chunks pay for hand-offs (and, in an ordered stage, for
		 * the turns) when items are cheap; slow items are taken a few
		 * at a time, a chunk lasting about CHUNK_NS, so that the
		 * stage's workers share them evenly and an item does not
		 * wait long behind others in one worker's chunk. */
		int64_t per = n ? busy / (int64_t)n : 0;
		int64_t chunk_ns = s->ordered ? CHUNK_NS_ORDERED : CHUNK_NS;
		k = per > 0 && (uint64_t)per * kmax > (uint64_t)chunk_ns
			    ? (size_t)(chunk_ns / per)
			    : kmax;
		if (k == 0)
			k = 1;
		st_add(&c->st->blocked, (uint64_t)c->emit_block);
		if (!ok) {
			drop_outputs(c);
			break;
		}
		if (s->ordered)
			ok = cpat__pipeline_ordered_deliver(c);
		else
			ok = cpat__pipeline_out_flush(c);
		t0 = cpat_now_ns();
		st_add(&c->st->blocked, (uint64_t)(t0 - t2));
		if (!ok)
			break;
	}
}

/* Sends the batch in hand; false if the stage must stop. */
static bool batch_flush(struct cpat_stage_ctx *c, bool on_stop)
{
	struct stage *s = c->s;
	struct cpat_pipeline *p = c->p;
	struct cpat_batch b;
	memcpy(&b, c->out + s->out_hdr, sizeof(b));
	if (b.count == 0)
		return true;
	st_add(&c->st->batched, b.count - 1);
	int rc;
	int64_t t0 = cpat_now_ns();
	if (!on_stop)
		rc = cpat_chan_send(s->out, c->out, p->tok);
	else if (p->output)
		rc = cpat_chan_try_send(s->out, c->out);
	else
		rc = cpat_chan_send(s->out, c->out, NULL);
	st_add(&c->st->blocked, (uint64_t)(cpat_now_ns() - t0));
	if (rc == 0)
		st_add(&c->st->out, 1);
	else
		cpat__pipeline_drop_item(p, c->out + s->out_hdr, s->idx + 1);
	b.count = 0;
	memcpy(c->out + s->out_hdr, &b, sizeof(b));
	return rc == 0;
}

static void batch_loop(struct cpat_stage_ctx *c)
{
	struct stage *s = c->s;
	struct cpat_pipeline *p = c->p;
	char *bb = c->out + s->out_hdr; /* the struct cpat_batch */
	char *items = bb + BATCH_HDR;
	struct cpat_batch b = {0, s->in_size, 0};
	memcpy(bb, &b, sizeof(b));
	int64_t first_t = 0;
	bool can_flush_on_stop = s->flush_on_cancel && s->idx + 1 == p->nstages;
	int64_t t0 = cpat_now_ns();
	for (;;) {
		int64_t dl = CPAT_FOREVER;
		if (b.count && s->flush_ns != CPAT_FOREVER)
			dl = first_t + s->flush_ns;
		size_t want = s->max_items - b.count;
		if (want > c->kin)
			want = c->kin;
		size_t n = 0;
		int rc =
			cpat_chan_recv_many(s->in, c->in, want, &n, p->tok, dl);
		int64_t t1 = cpat_now_ns();
		st_add(&c->st->starved, (uint64_t)(t1 - t0));
		t0 = t1;
		if (rc == -ETIMEDOUT && dl != CPAT_FOREVER && !stopping(p) &&
		    cpat_token_status(p->tok) == 0) {
			if (!batch_flush(c, false))
				break;
			b.count = 0;
			t0 = cpat_now_ns();
			continue;
		}
		/* A stop closes channels too (a feed's input, an upstream
		 * stage's output as its workers leave): -EPIPE is the end of
		 * input only while the pipeline is not stopping. */
		if (rc == -EPIPE && !stopping(p) &&
		    cpat_token_status(p->tok) == 0) {
			memcpy(bb, &b, sizeof(b));
			batch_flush(c, false);
			b.count = 0;
			break;
		}
		if (rc != 0)
			break;
		st_add(&c->st->in, n);
		for (size_t i = 0; i < n; i++) {
			const char *env = c->in + i * s->in_stride;
			if (b.count == 0) {
				first_t = t1;
				b.first_index = env_index(env);
				if (s->out_hdr)
					env_set_index(c->out, b.first_index);
			}
			memcpy(items + b.count * s->in_size, env + ENV_HDR,
			       s->in_size);
			if (p->ack_tail)
				/* The member's ack slot (pipeline_ack.c). */
				memcpy(c->out + p->ack_tail +
					       b.count * sizeof(uint32_t),
				       env + ENV_SLOT, sizeof(uint32_t));
			b.count++;
			if (b.count == s->max_items) {
				memcpy(bb, &b, sizeof(b));
				if (!batch_flush(c, false)) {
					b.count = 0;
					for (i++; i < n; i++)
						cpat__pipeline_drop_item(
							p,
							c->in + i * s->in_stride +
								ENV_HDR,
							s->idx);
					goto stop;
				}
				b.count = 0;
			}
		}
		memcpy(bb, &b, sizeof(b));
		if (b.count && s->flush_ns != CPAT_FOREVER &&
		    cpat_now_ns() >= first_t + s->flush_ns) {
			if (!batch_flush(c, false)) {
				b.count = 0;
				break;
			}
			b.count = 0;
		}
		t0 = cpat_now_ns();
	}
stop:
	if (b.count) {
		memcpy(bb, &b, sizeof(b));
		if (can_flush_on_stop) {
			batch_flush(c, true);
		} else {
			for (size_t i = 0; i < b.count; i++)
				cpat__pipeline_drop_item(
					p, items + i * s->in_size, s->idx);
		}
	}
}

void *cpat__pipeline_stage_main(void *arg)
{
	struct cpat_stage_ctx *c = arg;
	struct stage *s = c->s;
	cpat__thread_name(s->name);
	cpat__pipeline_tl = c->p;
	cpat__spin_adapt();
	if (s->kind == K_BATCH)
		batch_loop(c);
	else
		stage_loop(c);
	if (atomic_fetch_sub(&s->live, 1) == 1) {
		/* The last worker of an ordered stage: outputs left in slots
		 * (a stop) are not processed. */
		for (uint32_t i = 0; i < s->nslots; i++) {
			struct rslot *r = &s->slots[i];
			if (atomic_load(&r->ready) == 0)
				continue;
			for (size_t j = r->off; j < r->n; j++)
				cpat__pipeline_drop_item(
					c->p,
					r->buf + j * s->out_stride + s->out_hdr,
					s->idx + 1);
			atomic_store(&r->ready, 0);
		}
		cpat_chan_close(s->out);
	}
	cpat__pipeline_tl = NULL;
	cpat__pipeline_thread_done(c->p);
	atomic_fetch_sub(&cpat__pipeline_threads, 1);
	return NULL;
}

/* ---- the sink ---- */

/* Acks: the sink accepted the item in env: it completes, or, for a batch,
 * every member does, in one ack call when the queue has room for all. */
static void sink_ack(struct cpat_pipeline *p, const char *env)
{
	struct ackq *q = &p->sink_q;
	if (!p->ack_tail) {
		ack_complete(p, q, env_slot(env));
		return;
	}
	struct cpat_batch b;
	memcpy(&b, env + ENV_HDR, sizeof(b));
	if (q->n && q->n + b.count > q->cap)
		cpat__pipeline_ack_flush(p, q);
	for (size_t j = 0; j < b.count; j++) {
		uint32_t slot;
		memcpy(&slot, env + p->ack_tail + j * sizeof(slot),
		       sizeof(slot));
		ack_complete(p, q, slot);
	}
}

/* The sink loop, made with and without acks (tested once, not per item). */
static inline __attribute__((always_inline)) void
sink_loop(struct cpat_pipeline *p, bool acks)
{
	struct cpat_chan *in = p->ch[p->nstages];
	size_t stride = p->nstages ? p->stages[p->nstages - 1]->out_stride
				   : p->src_stride;
	size_t cap = cpat_chan_cap(in);
	size_t k = cap < CHUNK ? cap : CHUNK;
	bool failed = false;
	uint64_t delivered = 0;
	for (;;) {
		size_t n = 0;
		int rc = cpat_chan_recv_many(in, p->sink_buf, k, &n,
					     p->drain_sink ? NULL : p->tok,
					     CPAT_FOREVER);
		if (rc != 0)
			break;
		for (size_t i = 0; i < n; i++) {
			char *env = p->sink_buf + i * stride;
			if (failed || (!p->drain_sink && stopping(p))) {
				cpat__pipeline_drop_item(p, env + ENV_HDR,
							 p->nstages);
				continue;
			}
			int r = p->sink(env + ENV_HDR, p->sink_arg);
			if (r < 0) {
				cpat__pipeline_drop_item(p, env + ENV_HDR,
							 p->nstages);
				cpat__pipeline_fail(p, "sink", env_index(env),
						    r);
				failed = true;
			} else {
				atomic_store_explicit(&p->delivered,
						      ++delivered,
						      memory_order_relaxed);
				if (acks)
					sink_ack(p, env);
			}
		}
		/* Never wait for input holding slots the source may need. */
		if (acks)
			ack_chunk_end(p, &p->sink_q);
		if (failed && !p->drain_sink)
			break;
	}
}

void *cpat__pipeline_sink_main(void *arg)
{
	struct cpat_pipeline *p = arg;
	cpat__thread_name("cpat-sink");
	cpat__pipeline_tl = p;
	cpat__spin_adapt();
	if (p->ack)
		sink_loop(p, true);
	else
		sink_loop(p, false);
	cpat__pipeline_tl = NULL;
	cpat__pipeline_thread_done(p);
	atomic_fetch_sub(&cpat__pipeline_threads, 1);
	return NULL;
}
