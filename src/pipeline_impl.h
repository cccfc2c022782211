/*
 * Private to the pipeline's sources (pipeline.c: build, start, wait,
 * report; pipeline_run.c: the source, stage, batch and sink threads;
 * pipeline_order.c: the ordered stages' tickets and reorder slots): the
 * shared structures, constants and the helpers of the item path, kept
 * static inline here so that splitting the files added no call per item.
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
 * Statistics are per-worker single-writer atomics (relaxed load + store,
 * no read-modify-write), summed when read.
 */
#ifndef CPAT_PIPELINE_IMPL_H
#define CPAT_PIPELINE_IMPL_H

#include "internal.h"
#include "spin.h"

#include <stdalign.h>

#include "cpattern/chan.h"
#include "cpattern/pipeline.h"

/* The envelope header: the item's source index (uint64_t at 0) and its ack
 * slot (uint32_t at ENV_SLOT, acks only; pipeline_ack.c), rounded up to
 * max_align_t (16 bytes where that is 16, as on x86-64 and aarch64: the
 * slot costs no room there). */
#define ENV_SLOT sizeof(uint64_t)
#define ENV_HDR                                                     \
	((ENV_SLOT + sizeof(uint32_t) + alignof(max_align_t) - 1) / \
	 alignof(max_align_t) * alignof(max_align_t))
#define BATCH_HDR                                                 \
	((sizeof(struct cpat_batch) + alignof(max_align_t) - 1) / \
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

/* Threads started by pipelines that have not yet exited (testhooks.h). */
CPAT_HIDDEN extern _Atomic long cpat__pipeline_threads;

/* Per-worker counters: one writer (the worker), any reader. */
struct wstats {
	_Atomic uint64_t in, out, filtered, expanded, batched;
	_Atomic uint64_t busy, starved, blocked;
} __attribute__((aligned(CPAT_CACHELINE)));

static inline void st_add(_Atomic uint64_t *c, uint64_t v)
{
	atomic_store_explicit(c,
			      atomic_load_explicit(c, memory_order_relaxed) + v,
			      memory_order_relaxed);
}

struct stage;

/* A reorder slot: the outputs of ticket t wait in slot t % nslots. */
struct rslot {
	char *buf;
	size_t n;               /* outputs in buf */
	size_t off;             /* of which sent (a drain that found no room) */
	_Atomic uint64_t ready; /* t + 1 once the outputs of ticket t are in */
};

/* Completed items whose ack is not yet made: their handles, one after
 * another, and their slots (pipeline_ack.c). One per thread that completes
 * items; handed to the ack callback at the end of each chunk. */
struct ackq {
	char *h;
	uint32_t *slot;
	size_t n, cap;
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
	bool stopped;     /* a send failed: the stage must stop */
	uint64_t emitted; /* outputs of the current flat input */
	/* Acks: the ack slot of the input in hand, and how many of its flat
	 * outputs its pending count already counts (a flush in emit). */
	uint32_t ack_slot;
	uint64_t ack_held;
	struct ackq ackq;
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
	cpat_source_ctx_fn src_fn; /* a context source (set_source) */
	void *src_arg;
	bool feed;
	cpat_sink_fn sink;
	void *sink_arg;
	bool output;
	_Atomic int state; /* read by feeders and cancel from any thread */

	/* Run state (made by start). */
	struct cpat_chan **ch;   /* nstages + 1 */
	struct cpat_chan *outch; /* the output channel, once made */
	struct cpat_token *tok;
	struct cpat__watch watch;
	bool watching;
	bool drain_sink;
	pthread_t src_th, sink_th;
	bool src_started, sink_started;
	/* Threads started and not yet finished, and a word bumped as each
	 * finishes (and by a wait's token watch): cpat_pipeline_wait_until()
	 * parks on it. */
	_Atomic unsigned running;
	struct cpat__event exited; /* signalled as each thread exits */
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

	/* Acknowledgement (pipeline_ack.c); ack is NULL without. */
	cpat_ack_fn ack;
	void *ack_arg;
	size_t ack_size, ack_stride; /* a handle; its stride in the table */
	size_t ack_max;              /* max_unacked as given (0: default) */
	uint32_t ack_nslots;         /* the table's slots */
	bool ack_counted; /* a flat stage: slots keep a pending count */
	size_t ack_tail;  /* last stage a batch: its member slots' offset in
			     the envelope, else 0 */
	char *ack_tab;    /* handles */
	_Atomic uint32_t *ack_pend; /* outputs not yet completed (counted) */
	uint32_t *ack_next;         /* free-list links */
	uint32_t ack_src_free;      /* the source's private list at its exit */
	struct ackq sink_q;
	_Atomic uint64_t acked;
	alignas(CPAT_CACHELINE) _Atomic uint32_t ack_free; /* shared list */
	_Atomic uint32_t ack_seq;     /* the source parks on it */
	_Atomic uint32_t ack_waiting; /* the source is (about to be) parked */
};

/* What a context source is given (cpat_source_ack() and friends). */
struct cpat_source_ctx {
	struct cpat_pipeline *p;
	void *ack; /* the current item's handle in the ack table, or NULL */
	/* The items the source thread holds back (src_buf[0..*held)), for
	 * cpat_source_flush(); flushed: it ran during the current call, so
	 * the item being made must move to the buffer's first slot. */
	size_t *held;
	bool flushed;
};

/* The end of a free list of ack slots. */
#define ACK_NIL UINT32_MAX

/* The pipeline whose thread this is (refuses wait/destroy from inside). */
CPAT_HIDDEN extern _Thread_local struct cpat_pipeline *cpat__pipeline_tl;

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

static inline uint32_t env_slot(const void *env)
{
	uint32_t v;
	memcpy(&v, (const char *)env + ENV_SLOT, sizeof(v));
	return v;
}

static inline void env_set_slot(void *env, uint32_t v)
{
	memcpy((char *)env + ENV_SLOT, &v, sizeof(v));
}

static inline bool stopping(struct cpat_pipeline *p)
{
	return atomic_load_explicit(&p->stopping, memory_order_relaxed) != 0;
}

/* Wakes the waiters of an ordered stage (the wake-up protocol of
 * pipeline_order.c). */
static inline void wake_turns(struct stage *s)
{
	atomic_fetch_add(&s->seq, 1);
	if (atomic_load(&s->waiters) > 0)
		cpat__unpark_all(&s->seq);
}

/* ---- pipeline.c ---- */

/* Counts one abandoned item as not processed and hands it to the drop
 * callback with the index of the stage it was waiting for. */
/* Sends the source thread's held items buf[0..n) to the first channel
 * (pipeline_run.c); false if the pipeline stopped (what was not sent is
 * dropped). Source thread only. */
CPAT_HIDDEN bool cpat__pipeline_src_flush(struct cpat_pipeline *p, char *buf,
					  size_t n);
CPAT_HIDDEN void cpat__pipeline_drop_item(struct cpat_pipeline *p,
					  const void *payload, unsigned stage);
/* A callback failed with rc < 0 on the item of index idx: records the
 * first error and cancels the run token. */
CPAT_HIDDEN void cpat__pipeline_fail(struct cpat_pipeline *p, const char *where,
				     uint64_t idx, int rc);

/* A pipeline thread's last touch of the pipeline (wait may join it right
 * after). */
static inline void cpat__pipeline_thread_done(struct cpat_pipeline *p)
{
	atomic_fetch_sub(&p->running, 1);
	cpat__event_signal(&p->exited);
}

/* ---- pipeline_run.c: thread bodies (arg: the pipeline, or a stage's
 * worker context) and the stage's hand-off ---- */
CPAT_HIDDEN void *cpat__pipeline_src_main(void *arg);
CPAT_HIDDEN void *cpat__pipeline_stage_main(void *arg);
CPAT_HIDDEN void *cpat__pipeline_sink_main(void *arg);
/* Sends the worker's outputs downstream; on failure drops the rest and
 * marks the worker stopped. Returns whether all were sent. */
CPAT_HIDDEN bool cpat__pipeline_out_flush(struct cpat_stage_ctx *c);

/* ---- pipeline_order.c ---- */

/* The number of reorder slots of an ordered stage (its input channel is
 * made). */
CPAT_HIDDEN uint32_t cpat__pipeline_reorder_slots(const struct stage *s);
/* Takes the next chunk (up to k items) and its ticket; 0, or -EPIPE at the
 * end of input (every chunk published has been sent), or another error
 * when the worker must stop. */
CPAT_HIDDEN int cpat__pipeline_ordered_recv(struct cpat_stage_ctx *c, size_t k,
					    size_t *n);
/* Hands on the chunk in hand; false if the worker must stop. */
CPAT_HIDDEN bool cpat__pipeline_ordered_deliver(struct cpat_stage_ctx *c);
/* A flat worker's chunk outgrows its slot: waits until every earlier chunk
 * has been sent and takes the send lock (c->have_turn), helping send
 * meanwhile. False if the pipeline stops first. */
CPAT_HIDDEN bool cpat__pipeline_ordered_stream(struct cpat_stage_ctx *c);

/* ---- pipeline_ack.c ---- */

/* Checks the acknowledgement's constraints and makes the ack table and
 * the threads' ack queues (start; the channels are made). 0, -EINVAL or
 * -ENOMEM. */
CPAT_HIDDEN int cpat__pipeline_ack_setup(struct cpat_pipeline *p);
/* Frees what setup made (teardown). */
CPAT_HIDDEN void cpat__pipeline_ack_free(struct cpat_pipeline *p);
/* Slots in use at wait, after the join: items produced and never acked. */
CPAT_HIDDEN uint64_t cpat__pipeline_ack_unacked(struct cpat_pipeline *p);
/* Makes the acks of the queue's items (the ack callback), then frees their
 * slots and wakes the source if it waits for one. */
CPAT_HIDDEN void cpat__pipeline_ack_flush(struct cpat_pipeline *p,
					  struct ackq *q);
/* The source's wait for free slots: the shared free list, taken whole, or
 * ACK_NIL if the pipeline stops first. */
CPAT_HIDDEN uint32_t cpat__pipeline_ack_take(struct cpat_pipeline *p);

/* One item of slot `slot` completed (or, counted, one of its outputs):
 * when it was the last, the item's handle joins the thread's queue. */
static inline void ack_complete(struct cpat_pipeline *p, struct ackq *q,
				uint32_t slot)
{
	if (p->ack_counted &&
	    atomic_fetch_sub_explicit(&p->ack_pend[slot], 1,
				      memory_order_acq_rel) != 1)
		return;
	memcpy(q->h + q->n * p->ack_size, p->ack_tab + slot * p->ack_stride,
	       p->ack_size);
	q->slot[q->n++] = slot;
	if (q->n == q->cap)
		cpat__pipeline_ack_flush(p, q);
}

static inline void ack_chunk_end(struct cpat_pipeline *p, struct ackq *q)
{
	if (q->n)
		cpat__pipeline_ack_flush(p, q);
}

#endif
