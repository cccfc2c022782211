/*
 * Pipelines: a source, stages of worker threads, and a sink, joined by
 * bounded channels (cpattern/pipeline.h).
 *
 * DESIGN
 *
 * Channels. chan[0] follows the source, chan[i + 1] follows stage i. Every
 * element is an envelope: the item's source index (uint64_t) in a header of
 * ENV_HDR bytes (rounded up to max_align_t so the payload is aligned for
 * any type), then the payload; the stride is rounded to ENV_HDR too so an
 * array of envelopes (for send_many / recv_many) keeps every payload
 * aligned. The one exception is the last channel of a pipeline made with
 * cpat_pipeline_set_output(): the caller reads it, so it carries bare items
 * (out_hdr = 0) and the last stage writes them so.
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
 * Stop. The run token is a child of the caller's token (with the deadline,
 * if any). A callback that fails records the error (fail(): a CAS of
 * stop_rc from 0, the winner alone writes err_stage/err_index, then it
 * cancels the run token). A watch on the run token (on_stop(), runs once
 * when it fires for whatever reason) CASes its cause into stop_rc (so the
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
 * Statistics are per-worker single-writer atomics (relaxed load + store,
 * no read-modify-write), summed when read.
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
#include "internal.h"
#include "spin.h"
#include "testhooks.h"

#include <sched.h>
#include <stdalign.h>

#include "cpattern/chan.h"
#include "cpattern/pipeline.h"

#define ENV_HDR                                                                \
	((sizeof(uint64_t) + alignof(max_align_t) - 1) /                       \
	 alignof(max_align_t) * alignof(max_align_t))
#define BATCH_HDR                                                              \
	((sizeof(struct cpat_batch) + alignof(max_align_t) - 1) /              \
	 alignof(max_align_t) * alignof(max_align_t))
/* Items per chunk (recv_many / send_many). */
#define CHUNK 32
#define DEFAULT_CAP 64
/* The source holds produced items back at most this long (ns) to hand them
 * on in chunks, and hands each on at once after a generator call slower
 * than SRC_SLOW_NS. */
#define SRC_HOLD_NS 50000
#define SRC_SLOW_NS 5000
/* A stage takes chunks of about this long (ns) of work, at most CHUNK
 * items, at least one. */
#define CHUNK_NS 50000
/* An ordered stage takes chunks of up to this long: each chunk costs a
 * ticket, a publication and a drain, and waits in the reorder window for
 * the ones before it, so fewer, fuller chunks keep the window covering a
 * worker that is preempted (and the channels' hand-offs aligned with the
 * source's and the sink's chunks of CHUNK). */
#define CHUNK_NS_ORDERED (4 * CHUNK_NS)
/* The reorder window of an ordered stage holds at most this many chunks
 * per worker (reorder_slots()). */
#define ORD_SLOTS_PER_WORKER 8

enum { K_MAP, K_FLAT, K_BATCH };
enum { ST_BUILD, ST_RUNNING, ST_DONE };

static _Atomic long g_live_threads;

long cpat__pipeline_live_threads(void)
{
	return atomic_load(&g_live_threads);
}

/* Per-worker counters: one writer (the worker), any reader. */
struct wstats {
	_Atomic uint64_t in, out, filtered, expanded, batched;
	_Atomic uint64_t busy, starved, blocked;
} __attribute__((aligned(CPAT_CACHELINE)));

static inline void st_add(_Atomic uint64_t *c, uint64_t v)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
	                      memory_order_relaxed);
}

struct stage;

/* A reorder slot: the outputs of ticket t wait in slot t % nslots. */
struct rslot {
	char *buf;
	size_t n;   /* outputs in buf */
	size_t off; /* of which sent (a drain that found no room) */
	_Atomic uint64_t ready; /* t + 1 once the outputs of ticket t are in */
};

struct cpat_stage_ctx {
	struct cpat_pipeline *p;
	struct stage *s;
	unsigned id;
	uint64_t index;
	/* Output buffer (map: one slot per input; flat: a ring flushed when
	 * full; batch: one batch envelope). */
	char *out;
	char *own_out; /* the buffer allocated for it (ordered: in slots) */
	size_t nout, outcap;
	char *in;
	size_t kin; /* capacity of in, in envelopes */
	/* Ordered: the ticket of the chunk in hand, and whether the send turn
	 * is held (flat). */
	uint64_t ticket;
	bool have_turn;
	bool stopped;       /* a send failed: the stage must stop */
	uint64_t emitted;   /* outputs of the current flat input */
	int64_t emit_block; /* ns blocked in emit during the chunk */
	struct wstats *st;
	pthread_t th;
	bool started;
};

struct stage {
	char name[32];
	int kind;
	cpat_map_fn map;
	cpat_flat_fn flat;
	void *arg;
	size_t in_size, out_size;
	size_t in_stride, out_stride, out_hdr;
	unsigned workers;
	int ordered;
	size_t out_cap;
	size_t max_items;
	int64_t flush_ns;
	int flush_on_cancel;
	unsigned idx;
	struct cpat_chan *in, *out;
	struct cpat_stage_ctx *w; /* workers' contexts */
	struct wstats *st;        /* workers' counters */
	_Atomic unsigned live;
	/* Ordered stages: the reorder slots (see the DESIGN comment). */
	struct rslot *slots;
	uint32_t nslots;
	char *slot_mem;
	alignas(CPAT_CACHELINE) _Atomic uint64_t recv_ticket;
	_Atomic uint64_t send_serving;
	_Atomic uint32_t recv_lock;
	_Atomic uint32_t send_lock;
	_Atomic uint32_t seq;
	_Atomic uint32_t waiters;
};

struct cpat_pipeline {
	size_t item_size, src_cap, src_stride, src_hdr;
	cpat_item_drop_fn drop;
	void *drop_arg;
	struct stage **stages;
	unsigned nstages;
	cpat_source_fn gen;
	void *gen_arg;
	bool feed;
	cpat_sink_fn sink;
	void *sink_arg;
	bool output;
	_Atomic int state; /* read by feeders and cancel from any thread */

	/* Run state (made by start). */
	struct cpat_chan **ch; /* nstages + 1 */
	struct cpat_chan *outch; /* the output channel, once made */
	struct cpat_token *tok;
	struct cpat__watch watch;
	bool watching;
	bool drain_sink;
	pthread_t src_th, sink_th;
	bool src_started, sink_started;
	char *src_buf, *sink_buf, *drain_buf;

	_Atomic int stop_rc;
	_Atomic int stopping;
	char err_stage[32];
	uint64_t err_index;
	_Atomic uint64_t next_index;
	_Atomic uint64_t produced;
	_Atomic uint64_t src_sent; /* items put in chan[0] */
	_Atomic int gen_ended;     /* the generator returned 0, all sent */
	_Atomic uint64_t delivered;
	_Atomic uint64_t not_processed;
	_Atomic int feed_closed;
	_Atomic long feeders;
	struct cpat_pipeline_result res;
};

static _Thread_local struct cpat_pipeline *tl_pipe;

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
static void drop_item(struct cpat_pipeline *p, const void *payload,
                      unsigned stage)
{
	atomic_fetch_add_explicit(&p->not_processed, 1, memory_order_relaxed);
	if (p->drop)
		p->drop(payload, stage, p->drop_arg);
}

static inline uint64_t env_index(const void *env)
{
	uint64_t v;
	memcpy(&v, env, sizeof(v));
	return v;
}

static inline void env_set_index(void *env, uint64_t v)
{
	memcpy(env, &v, sizeof(v));
}

static inline bool stopping(struct cpat_pipeline *p)
{
	return atomic_load_explicit(&p->stopping, memory_order_relaxed) != 0;
}

static void wake_turns(struct stage *s)
{
	atomic_fetch_add(&s->seq, 1);
	if (atomic_load(&s->waiters) > 0)
		cpat__unpark_all(&s->seq);
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
}

/* A callback failed with rc < 0 on the item of index idx. */
static void fail(struct cpat_pipeline *p, const char *where, uint64_t idx,
                 int rc)
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
	if (p->gen || p->feed || p->state != ST_BUILD)
		return -EBUSY;
	p->gen = fn;
	p->gen_arg = arg;
	return 0;
}

int cpat_pipeline_set_feed(struct cpat_pipeline *p)
{
	if (!p)
		return -EINVAL;
	if (p->gen || p->feed || p->state != ST_BUILD)
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
	    o->out_size > SIZE_MAX / 4 || o->workers == 0 || o->out_capacity == 0)
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
		drop_item(p, buf + i * p->src_stride + p->src_hdr, 0);
	return rc == 0;
}

static void *src_main(void *arg)
{
	struct cpat_pipeline *p = arg;
	cpat__thread_name("cpat-source");
	tl_pipe = p;
	cpat__spin_adapt();
	size_t k = p->src_cap < CHUNK ? p->src_cap : CHUNK;
	size_t n = 0;
	uint64_t idx = 0;
	int64_t first_t = 0, t0 = cpat_now_ns();
	for (;;) {
		if (stopping(p))
			break;
		char *slot = p->src_buf + n * p->src_stride;
		int rc = p->gen(slot + p->src_hdr, p->gen_arg);
		if (rc == 0) {
			if (src_flush(p, p->src_buf, n)) {
				atomic_store(&p->gen_ended, 1);
				cpat_chan_close(p->ch[0]);
			}
			n = 0;
			break;
		}
		if (rc < 0) {
			fail(p, "source", idx, rc);
			break;
		}
		if (p->src_hdr)
			env_set_index(slot, idx);
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
		drop_item(p, p->src_buf + i * p->src_stride + p->src_hdr, 0);
	cpat_chan_close(p->ch[0]);
	tl_pipe = NULL;
	atomic_fetch_sub(&g_live_threads, 1);
	return NULL;
}

/* ---- stages ---- */

/* Sends ctx->out[from..nout) downstream; on failure drops the rest and
 * marks the worker stopped. Returns whether all were sent. */
static bool out_flush(struct cpat_stage_ctx *c)
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
			fail(p, s->name, c->index, rc);
		if (rc != 0) {
			for (size_t i = sent; i < c->nout; i++)
				drop_item(p, c->out + i * s->out_stride + s->out_hdr,
				          s->idx + 1);
			ok = false;
		}
	} else if (c->nout > 0) {
		for (size_t i = 0; i < c->nout; i++)
			drop_item(p, c->out + i * s->out_stride + s->out_hdr,
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
		drop_item(c->p, c->out + i * c->s->out_stride + c->s->out_hdr,
		          c->s->idx + 1);
	c->nout = 0;
}

static bool help_send(struct cpat_stage_ctx *c);

int cpat_stage_emit(struct cpat_stage_ctx *c, const void *item)
{
	if (!c || !item || c->s->kind != K_FLAT)
		return -EINVAL;
	struct stage *s = c->s;
	if (c->stopped || stopping(c->p))
		return -ECANCELED;
	if (c->nout == c->outcap) {
		int64_t t0 = cpat_now_ns();
		if (s->ordered && !c->have_turn) {
			/* The chunk outgrows its slot: wait until every
			 * earlier chunk has been sent, take the send lock and
			 * stream the rest of the chunk directly. */
			bool ok = true;
			while (ok && atomic_load(&s->send_serving) != c->ticket) {
				if (can_help(s))
					ok = help_send(c);
				else
					ok = stage_wait(c->p, s, W_TURN, NULL,
					                c->ticket);
			}
			if (!ok || !stage_wait(c->p, s, W_LOCK, &s->send_lock, 0)) {
				c->stopped = true;
				c->emit_block += cpat_now_ns() - t0;
				return -ECANCELED;
			}
			c->have_turn = true;
		}
		bool ok = out_flush(c);
		c->emit_block += cpat_now_ns() - t0;
		if (!ok)
			return -ECANCELED;
	}
	char *slot = c->out + c->nout * s->out_stride;
	if (s->out_hdr)
		env_set_index(slot, c->index);
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

/* Runs the chunk in[0..n); returns false if the worker must stop. Inputs
 * not run are dropped here. */
static bool run_chunk(struct cpat_stage_ctx *c, size_t n)
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
				c->nout++;
			} else if (rc > 0) {
				filtered++;
			} else {
				drop_item(p, env + ENV_HDR, s->idx);
				fail(p, s->name, c->index, rc);
				i++;
				ok = false;
				break;
			}
		} else {
			c->emitted = 0;
			int rc = s->flat(env + ENV_HDR, c);
			if (c->emitted == 0 && rc >= 0)
				filtered++;
			else if (c->emitted == 0)
				drop_item(p, env + ENV_HDR, s->idx);
			else
				expanded += c->emitted - 1;
			if (rc < 0) {
				fail(p, s->name, c->index, rc);
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
		drop_item(p, c->in + i * s->in_stride + ENV_HDR, s->idx);
	st_add(&c->st->filtered, filtered);
	if (expanded)
		st_add(&c->st->expanded, expanded);
	return ok;
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
				/* Closed under us (see out_flush()). */
				fail(p, s->name, c->index, rc);
			for (size_t i = r->off; i < r->n; i++)
				drop_item(p, r->buf + i * s->out_stride + s->out_hdr,
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

/* Hands on an ordered chunk: publishes it in its slot, then sends what is
 * next in line if it fits (try_drain()). */
static bool ordered_deliver(struct cpat_stage_ctx *c)
{
	struct stage *s = c->s;
	if (c->have_turn) {
		/* Streamed: the rest goes directly, then our turn ends, and
		 * with the send lock still held we send what follows. */
		bool ok = out_flush(c);
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
static int ordered_recv(struct cpat_stage_ctx *c, size_t k, size_t *n)
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
		} else if (!stage_wait(p, s, empty ? W_SENDFREE : W_IDLE,
		                       NULL, 0)) {
			return -ECANCELED;
		}
	}
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
		int rc = s->ordered ? ordered_recv(c, k, &n)
		                    : cpat_chan_recv_many(s->in, c->in, k, &n,
		                                          p->tok, CPAT_FOREVER);
		int64_t t1 = cpat_now_ns();
		st_add(&c->st->starved, (uint64_t)(t1 - t0));
		if (rc != 0)
			break;
		st_add(&c->st->in, n);
		c->emit_block = 0;
		bool ok = run_chunk(c, n);
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
			ok = ordered_deliver(c);
		else
			ok = out_flush(c);
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
		drop_item(p, c->out + s->out_hdr, s->idx + 1);
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
	struct cpat_batch b = { 0, s->in_size, 0 };
	memcpy(bb, &b, sizeof(b));
	int64_t first_t = 0;
	bool can_flush_on_stop =
	        s->flush_on_cancel && s->idx + 1 == p->nstages;
	int64_t t0 = cpat_now_ns();
	for (;;) {
		int64_t dl = CPAT_FOREVER;
		if (b.count && s->flush_ns != CPAT_FOREVER)
			dl = first_t + s->flush_ns;
		size_t want = s->max_items - b.count;
		if (want > c->kin)
			want = c->kin;
		size_t n = 0;
		int rc = cpat_chan_recv_many(s->in, c->in, want, &n, p->tok, dl);
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
			b.count++;
			if (b.count == s->max_items) {
				memcpy(bb, &b, sizeof(b));
				if (!batch_flush(c, false)) {
					b.count = 0;
					for (i++; i < n; i++)
						drop_item(p,
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
				drop_item(p, items + i * s->in_size, s->idx);
		}
	}
}

static void *stage_main(void *arg)
{
	struct cpat_stage_ctx *c = arg;
	struct stage *s = c->s;
	cpat__thread_name(s->name);
	tl_pipe = c->p;
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
				drop_item(c->p, r->buf + j * s->out_stride +
				                        s->out_hdr,
				          s->idx + 1);
			atomic_store(&r->ready, 0);
		}
		cpat_chan_close(s->out);
	}
	tl_pipe = NULL;
	atomic_fetch_sub(&g_live_threads, 1);
	return NULL;
}

/* ---- the sink ---- */

static void *sink_main(void *arg)
{
	struct cpat_pipeline *p = arg;
	cpat__thread_name("cpat-sink");
	tl_pipe = p;
	cpat__spin_adapt();
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
				drop_item(p, env + ENV_HDR, p->nstages);
				continue;
			}
			int r = p->sink(env + ENV_HDR, p->sink_arg);
			if (r < 0) {
				drop_item(p, env + ENV_HDR, p->nstages);
				fail(p, "sink", env_index(env), r);
				failed = true;
			} else {
				atomic_store_explicit(&p->delivered, ++delivered,
				                      memory_order_relaxed);
			}
		}
		if (failed && !p->drain_sink)
			break;
	}
	tl_pipe = NULL;
	atomic_fetch_sub(&g_live_threads, 1);
	return NULL;
}

/* ---- run ---- */

static int start_thread(pthread_t *th, void *(*fn)(void *), void *arg)
{
	atomic_fetch_add(&g_live_threads, 1);
	int rc = cpat__thread_start(th, fn, arg, false);
	if (rc != 0)
		atomic_fetch_sub(&g_live_threads, 1);
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

/* The reorder slots of an ordered stage: enough for four times the items
 * its input and output channels hold together (the items in flight around
 * the stage), counted in full chunks, so that a worker can run that far
 * ahead of a slower or preempted one (a preempted worker is away for a
 * scheduler time slice, milliseconds; with 2 x workers chunks the others
 * soon have to wait for it); at least 2 and at most ORD_SLOTS_PER_WORKER
 * per worker. */
static uint32_t reorder_slots(const struct stage *s)
{
	size_t lo = 2 * (size_t)s->workers;
	size_t hi = ORD_SLOTS_PER_WORKER * (size_t)s->workers;
	size_t want = 4 * (cpat_chan_cap(s->in) + s->out_cap) / CHUNK;
	size_t n = want < lo ? lo : want > hi ? hi : want;
	return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
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
		int rc0 = cpat_chan_create(&p->outch, last_size(p), cap);
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
		s->out_stride = s->out_hdr ? round_up(ENV_HDR + s->out_size,
		                                      ENV_HDR)
		                           : s->out_size;
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
			s->nslots = reorder_slots(s);
			s->slots = cpat__calloc(s->nslots, sizeof(*s->slots));
			s->slot_mem = cpat__calloc(s->nslots,
			                           CHUNK * s->out_stride);
			if (!s->slots || !s->slot_mem)
				return -ENOMEM;
			for (uint32_t j = 0; j < s->nslots; j++)
				s->slots[j].buf = s->slot_mem +
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
	if (p->gen) {
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
	return 0;
}

int cpat_pipeline_start(struct cpat_pipeline *p, struct cpat_token *tok,
                        int64_t deadline_ns)
{
	if (!p || !cpat__deadline_ok(deadline_ns))
		return -EINVAL;
	if (p->state != ST_BUILD)
		return -EBUSY;
	if ((!p->gen && !p->feed) || (!p->sink && !p->output))
		return -EINVAL;
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
		rc = start_thread(&p->sink_th, sink_main, p);
		p->sink_started = rc == 0;
	}
	for (unsigned i = p->nstages; rc == 0 && i-- > 0;) {
		struct stage *s = p->stages[i];
		for (unsigned w = 0; rc == 0 && w < s->workers; w++) {
			rc = start_thread(&s->w[w].th, stage_main, &s->w[w]);
			s->w[w].started = rc == 0;
		}
	}
	if (rc == 0 && p->gen) {
		rc = start_thread(&p->src_th, src_main, p);
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
	if (!p || !item || !p->feed || p->state == ST_BUILD)
		return -EINVAL;
	atomic_fetch_add(&p->feeders, 1);
	int rc;
	if (atomic_load(&p->feed_closed) || atomic_load(&p->stopping) ||
	    p->state != ST_RUNNING) {
		rc = -EPIPE;
	} else {
		alignas(max_align_t) char local[4096];
		char *env = p->src_stride <= sizeof(local)
		                    ? local
		                    : NULL;
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
		rc = cpat_chan_send(p->ch[0], env, tok);
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
		if (cpat_chan_create(&p->outch, sz, cap) != 0)
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

int cpat_pipeline_wait(struct cpat_pipeline *p,
                       struct cpat_pipeline_result *res)
{
	if (!p || p->state == ST_BUILD)
		return -EINVAL;
	if (tl_pipe == p)
		return -EBUSY;
	if (p->state == ST_DONE) {
		if (res)
			*res = p->res;
		return p->res.rc;
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
			drop_item(p, p->drain_buf + hdr, i);
	}
	struct cpat_pipeline_result r;
	memset(&r, 0, sizeof(r));
	r.rc = atomic_load(&p->stop_rc);
	memcpy(r.stage, p->err_stage, sizeof(r.stage));
	r.item_index = p->err_index;
	r.produced = atomic_load(&p->produced);
	r.delivered = atomic_load(&p->delivered);
	r.not_processed = atomic_load(&p->not_processed);
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
#define EMIT(...)                                                              \
	do {                                                                   \
		int w_ = snprintf(off < len ? buf + off : NULL,                \
		                  off < len ? len - off : 0, __VA_ARGS__);     \
		if (w_ > 0) {                                                  \
			total += w_;                                           \
			off += (size_t)w_;                                     \
		}                                                              \
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
	if (tl_pipe == p)
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

/*
 * TEMPORARY (development only, replaced before release): the context
 * source and end-to-end acknowledgement are declared in pipeline.h; until
 * the pipeline carries ack handles, cpat_pipeline_set_source() validates
 * its options and returns -ENOSYS.
 */
void cpat_source_opts_init(struct cpat_source_opts *o)
{
	if (o)
		memset(o, 0, sizeof(*o));
}

int cpat_pipeline_set_source(struct cpat_pipeline *p,
                             const struct cpat_source_opts *o)
{
	if (!p || !o || !o->fn || (o->ack_size > 0) != (o->ack != NULL))
		return -EINVAL;
	if (p->gen || p->feed || p->state != ST_BUILD)
		return -EBUSY;
	return -ENOSYS;
}

void *cpat_source_ack(struct cpat_source_ctx *ctx)
{
	(void)ctx;
	return NULL;
}

struct cpat_token *cpat_source_token(struct cpat_source_ctx *ctx)
{
	(void)ctx;
	return NULL;
}

void *cpat_source_arg(struct cpat_source_ctx *ctx)
{
	(void)ctx;
	return NULL;
}
