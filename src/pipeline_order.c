/*
 * The ordered stages of a pipeline: tickets and reorder slots, and the
 * waits between a stage's workers (the structures are in pipeline_impl.h).
 *
 * Ordered stages: tickets and reorder slots. A worker takes its chunk and
 * the chunk's ticket t together, under the stage's receive lock (a flag
 * taken with a CAS): it reads t = recv_ticket, does one recv_many, and on
 * success sets recv_ticket = t + 1 before releasing the lock. So tickets
 * number the chunks in the order they left the input channel, and no
 * ticket is ever taken without a chunk (a worker that gets -EPIPE or is
 * stopped leaves with none). The lock is not a turn: whichever worker is
 * running takes it next, so a worker that is descheduled, parked or busy
 * delays no other's receive. recv_many is first tried without waiting; it
 * blocks under the lock only when the input is empty and no chunk waits to
 * be sent (the stage is starved: the others have nothing to take anyway).
 * Slot t % R is free once ticket t - R has been sent (t - send_serving <
 * R), checked under the lock. R is at least 2 x workers and grows with the
 * stage's channel capacities (four times the items its input and output
 * channels hold, in full chunks; reorder_slots()), at most
 * ORD_SLOTS_PER_WORKER x workers: the reorder memory is R chunk buffers,
 * made at start, bounded by the items in flight. Ordered stages size their
 * chunks to CHUNK_NS_ORDERED of work rather than CHUNK_NS (fewer, fuller
 * chunks: see its comment). The worker runs the chunk straight into its
 * slot's buffer, publishes it (ready = t + 1) and, if it can take the send
 * lock, sends every slot that is next in line (ready == send_serving + 1),
 * advancing send_serving, but only what fits in the output channel now
 * (try_drain(); a slot remembers how much of it was sent, `off`);
 * otherwise the lock holder will. Releasing the lock, a drainer that found
 * the next slot not ready re-checks it and takes the lock again if it is
 * ready, so a chunk published meanwhile is not left behind by a drain that
 * could have sent it (both sides use seq_cst: the publisher's store of
 * ready then CAS, the holder's store of the lock then load of ready). A
 * chunk that did not fit waits for a worker with nothing else to do: one
 * with no free slot, no input, the receive lock busy, or waiting for its
 * send turn, finding the next chunk ready and the send lock free, sends in
 * order while there is one, blocking for room (help_send()). So a worker
 * computes while it can and sends (or waits) only when it cannot, instead
 * of one worker becoming the sender of all the others' chunks while the
 * sink lags. At the end of input each worker sends every chunk published
 * before it leaves (ordered_finish()); a chunk published later is sent by
 * its own worker, which gets there too. A worker waits for a slower one
 * only when all R slots are taken; a worker holding a ticket never waits
 * for one that holds none, so the holder of the next ticket to send always
 * progresses (no deadlock). A flat worker whose chunk outgrows its slot
 * waits (helping send) until send_serving == t (every earlier ticket is
 * held by a worker that runs to its end or has been published), takes the
 * send lock and streams the rest of its chunk directly, then sets
 * send_serving = t + 1 and drains as above. Tickets and ready are 64-bit,
 * so they never wrap. On a stop, waits end at once; a worker stopped with
 * a chunk in hand drops its outputs and never publishes it, so nothing
 * after it is sent; the last worker of the stage drops what is left unsent
 * in published slots.
 *
 * Wake-up protocol of the ordered waits (no lost wake-up, no system call
 * while nobody sleeps): waiters park on the stage's `seq` word. A waiter
 * does waiters++ (seq_cst), reads seq, re-checks its condition and
 * `stopping`, parks on (seq, value read), then waiters--. Whoever changes
 * send_serving, publishes a slot, or releases the receive or the send lock
 * then increments seq (seq_cst) and unparks only if waiters > 0. The
 * stopper sets `stopping`, increments every ordered stage's seq and
 * unparks. (recv_ticket changes only with the receive lock held, and its
 * release wakes.)
 *
 * Locks: none on the item path of unordered stages. Ordered stages have
 * two flags taken with a CAS: the receive lock (held for one recv_many)
 * and the send lock (held to send; waited for only by a worker with
 * nothing else to do, or by a flat worker about to stream an oversized
 * chunk); the receive lock is never held while waiting for the send lock
 * or for a slot, nor while blocking for input with a chunk to send.
 */
#include "pipeline_impl.h"

enum { W_TURN, W_LOCK, W_IDLE, W_SENDFREE };

/* Whether the chunk next in line to be sent has been published. */
static bool head_ready(struct stage *s)
{
	uint64_t t = atomic_load(&s->send_serving);
	return atomic_load(&s->slots[t % s->nslots].ready) == t + 1;
}

static bool slot_free(struct stage *s)
{
	return atomic_load(&s->recv_ticket) - atomic_load(&s->send_serving) <
	       s->nslots;
}

/* A chunk waits to be sent and nobody is sending. */
static bool can_help(struct stage *s)
{
	return head_ready(s) && atomic_load(&s->send_lock) == 0;
}

/* The condition of stage_wait(): W_TURN: send_serving == v (every chunk
 * before ticket v has been sent), or a chunk to help send (can_help());
 * W_LOCK: took the lock *lock
 * (the send or the receive lock); W_IDLE: the receive lock is free and so
 * is the slot of the next ticket, or a chunk to help send; W_SENDFREE: the
 * send lock is free, or no chunk waits. */
static bool wait_cond(struct stage *s, int what, _Atomic uint32_t *lock,
		      uint64_t v)
{
	switch (what) {
	case W_TURN:
		return atomic_load(&s->send_serving) == v || can_help(s);
	case W_IDLE:
		return (atomic_load(&s->recv_lock) == 0 && slot_free(s)) ||
		       can_help(s);
	case W_SENDFREE:
		return atomic_load(&s->send_lock) == 0 || !head_ready(s);
	default: {
		uint32_t z = 0;
		return atomic_load_explicit(lock, memory_order_relaxed) == 0 &&
		       atomic_compare_exchange_strong(lock, &z, 1);
	}
	}
}

/* Waits for a condition of an ordered stage, or until the pipeline stops
 * (returns false): spins briefly, then parks on s->seq (see the wake-up
 * protocol in the DESIGN comment). */
static bool stage_wait(struct cpat_pipeline *p, struct stage *s, int what,
		       _Atomic uint32_t *lock, uint64_t v)
{
	for (int i = 0; i < 100; i++) {
		if (wait_cond(s, what, lock, v))
			return true;
		if (stopping(p))
			return false;
		cpat__cpu_relax();
	}
	for (;;) {
		atomic_fetch_add(&s->waiters, 1);
		uint32_t e = atomic_load(&s->seq);
		bool ok = wait_cond(s, what, lock, v);
		bool stop = !ok && atomic_load(&p->stopping) != 0;
		if (!ok && !stop)
			cpat__park(&s->seq, e, CPAT_FOREVER);
		atomic_fetch_sub(&s->waiters, 1);
		if (ok)
			return true;
		if (stop)
			return false;
	}
}

/* Releases the send or the receive lock. */
static void lock_release(struct stage *s, _Atomic uint32_t *lock)
{
	atomic_store(lock, 0);
	wake_turns(s);
}

static void send_serving_set(struct stage *s, uint64_t t)
{
	atomic_store(&s->send_serving, t);
	wake_turns(s);
}

enum { DR_IDLE, DR_FULL, DR_FAIL };

/* With the send lock held: sends every chunk that is next in line. Without
 * block, stops at the first that does not fit in the output channel (what
 * was sent of it is remembered in its slot). Returns DR_IDLE (the next in
 * line is not ready), DR_FULL (no room, without block), or DR_FAIL (a send
 * failed: the worker stops; the rest of that chunk is dropped, the slots
 * after it are dropped by the stage's last worker). */
static int drain_slots(struct cpat_stage_ctx *c, bool block)
{
	struct stage *s = c->s;
	struct cpat_pipeline *p = c->p;
	for (;;) {
		uint64_t t = atomic_load(&s->send_serving);
		struct rslot *r = &s->slots[t % s->nslots];
		if (atomic_load_explicit(&r->ready, memory_order_acquire) !=
		    t + 1)
			return DR_IDLE;
		while (r->off < r->n) {
			size_t sent = 0;
			int rc = cpat_chan_send_many(
				s->out, r->buf + r->off * s->out_stride,
				r->n - r->off, &sent, p->tok,
				block ? CPAT_FOREVER : 0);
			r->off += sent;
			st_add(&c->st->out, sent);
			if (rc == 0)
				break;
			if (rc == -ETIMEDOUT && !block &&
			    cpat_token_status(p->tok) == 0)
				return DR_FULL;
			if (rc == -EPIPE)
				/* Closed under us (see
				 * cpat__pipeline_out_flush()). */
				cpat__pipeline_fail(p, s->name, c->index, rc);
			for (size_t i = r->off; i < r->n; i++)
				cpat__pipeline_drop_item(
					p,
					r->buf + i * s->out_stride + s->out_hdr,
					s->idx + 1);
			r->off = r->n;
			c->stopped = true;
			return DR_FAIL;
		}
		r->n = 0;
		r->off = 0;
		atomic_store(&r->ready, 0);
		send_serving_set(s, t + 1);
	}
}

/* Sends what is next in line if no other worker is doing so, without
 * waiting for room downstream: a chunk that does not fit stays in its slot
 * for a worker with nothing else to do (help_send()). Whoever holds the
 * send lock re-checks after releasing it, so a chunk published meanwhile
 * is never left behind by a drain that could have sent it. */
static bool try_drain(struct cpat_stage_ctx *c)
{
	struct stage *s = c->s;
	for (;;) {
		uint32_t z = 0;
		if (!atomic_compare_exchange_strong(&s->send_lock, &z, 1))
			return true;
		int d = drain_slots(c, false);
		lock_release(s, &s->send_lock);
		if (d == DR_FAIL)
			return false;
		if (d == DR_FULL || !head_ready(s))
			return true;
	}
}

/* A worker with nothing else to do (no free slot, no input, or waiting for
 * its turn) sends what is next in line, blocking while the output channel
 * is full, if nobody else is sending. False if the worker must stop. */
static bool help_send(struct cpat_stage_ctx *c)
{
	struct stage *s = c->s;
	uint32_t z = 0;
	if (!atomic_compare_exchange_strong(&s->send_lock, &z, 1))
		return true;
	int d = drain_slots(c, true);
	lock_release(s, &s->send_lock);
	return d != DR_FAIL;
}

bool cpat__pipeline_ordered_stream(struct cpat_stage_ctx *c)
{
	struct stage *s = c->s;
	bool ok = true;
	while (ok && atomic_load(&s->send_serving) != c->ticket) {
		if (can_help(s))
			ok = help_send(c);
		else
			ok = stage_wait(c->p, s, W_TURN, NULL, c->ticket);
	}
	if (!ok || !stage_wait(c->p, s, W_LOCK, &s->send_lock, 0))
		return false;
	c->have_turn = true;
	return true;
}

/* Hands on an ordered chunk: publishes it in its slot, then sends what is
 * next in line if it fits (try_drain()). */
bool cpat__pipeline_ordered_deliver(struct cpat_stage_ctx *c)
{
	struct stage *s = c->s;
	if (c->have_turn) {
		/* Streamed: the rest goes directly, then our turn ends, and
		 * with the send lock still held we send what follows. */
		bool ok = cpat__pipeline_out_flush(c);
		send_serving_set(s, c->ticket + 1);
		int d = ok ? drain_slots(c, false) : DR_FAIL;
		lock_release(s, &s->send_lock);
		if (d == DR_FAIL)
			return false;
		return d == DR_FULL || try_drain(c);
	}
	struct rslot *r = &s->slots[c->ticket % s->nslots];
	r->n = c->nout;
	r->off = 0;
	c->nout = 0;
	atomic_store(&r->ready, c->ticket + 1);
	/* A worker may be waiting for a chunk to help send. */
	wake_turns(s);
	return try_drain(c);
}

/* At the end of input: sends every chunk published, helping or waiting for
 * the worker that is sending. Chunks published later are sent by their
 * workers, which come here too. */
static bool ordered_finish(struct cpat_stage_ctx *c)
{
	struct cpat_pipeline *p = c->p;
	struct stage *s = c->s;
	while (head_ready(s)) {
		if (can_help(s)) {
			if (!help_send(c))
				return false;
		} else if (!stage_wait(p, s, W_SENDFREE, NULL, 0)) {
			return false;
		}
	}
	return true;
}

/* Takes the next chunk of an ordered stage and its ticket, together, under
 * the receive lock: chunks are numbered in the order they left the input
 * channel. The lock is held for one recv_many, which returns at once while
 * there is input; it blocks only when the stage is starved and no chunk
 * waits to be sent (then nothing is lost by the others waiting). A worker
 * never waits for the lock, nor for a slot: it helps send instead, or
 * waits for either to be free (W_IDLE), so a worker that holds a ticket
 * never waits for one that does not. */
int cpat__pipeline_ordered_recv(struct cpat_stage_ctx *c, size_t k, size_t *n)
{
	struct stage *s = c->s;
	struct cpat_pipeline *p = c->p;
	for (;;) {
		bool empty = false;
		uint32_t z = 0;
		if (slot_free(s) &&
		    atomic_load_explicit(&s->recv_lock, memory_order_relaxed) ==
			    0 &&
		    atomic_compare_exchange_strong(&s->recv_lock, &z, 1)) {
			/* recv_ticket changes only under the lock. */
			uint64_t t = atomic_load_explicit(&s->recv_ticket,
							  memory_order_relaxed);
			int rc = -EAGAIN;
			if (t - atomic_load(&s->send_serving) < s->nslots) {
				rc = cpat_chan_recv_many(s->in, c->in, k, n,
							 p->tok, 0);
				if (rc == -ETIMEDOUT &&
				    cpat_token_status(p->tok) == 0) {
					if (head_ready(s))
						empty = true;
					else
						rc = cpat_chan_recv_many(
							s->in, c->in, k, n,
							p->tok, CPAT_FOREVER);
				}
				if (rc == 0)
					atomic_store(&s->recv_ticket, t + 1);
			}
			lock_release(s, &s->recv_lock);
			if (rc == 0) {
				c->ticket = t;
				c->have_turn = false;
				c->out = s->slots[t % s->nslots].buf;
				return 0;
			}
			if (rc == -EPIPE)
				return ordered_finish(c) ? rc : -ECANCELED;
			if (rc != -EAGAIN && !empty)
				return rc;
		}
		if (can_help(s)) {
			if (!help_send(c))
				return -ECANCELED;
		} else if (!stage_wait(p, s, empty ? W_SENDFREE : W_IDLE, NULL,
				       0)) {
			return -ECANCELED;
		}
	}
}

/* The reorder slots of an ordered stage: enough for four times the items
 * its input and output channels hold together (the items in flight around
 * the stage), counted in full chunks, so that a worker can run that far
 * ahead of a slower or preempted one (a preempted worker is away for a
 * scheduler time slice, milliseconds; with 2 x workers chunks the others
 * soon have to wait for it); at least 2 and at most ORD_SLOTS_PER_WORKER
 * per worker. */
uint32_t cpat__pipeline_reorder_slots(const struct stage *s)
{
	size_t lo = 2 * (size_t)s->workers;
	size_t hi = ORD_SLOTS_PER_WORKER * (size_t)s->workers;
	size_t want = 4 * (cpat_chan_cap(s->in) + s->out_cap) / CHUNK;
	size_t n = want < lo ? lo : want > hi ? hi : want;
	return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}
