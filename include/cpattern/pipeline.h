/**
 * @file cpattern/pipeline.h
 * @brief Pipelines: stages of worker threads joined by bounded channels,
 * with ordered or unordered parallel stages, batching, first-error
 * propagation, full accounting of every item, and a report that names the
 * bottleneck stage.
 *
 * **Shape.** A pipeline has one source, any number of stages, and one sink:
 *
 *     source -> [chan] -> stage 1 (N workers) -> [chan] -> ... -> sink
 *
 * The source is a generator function the pipeline calls, or a *feed* the
 * caller pushes items into (cpat_pipeline_feed()) and closes. Each stage
 * maps one input item to one output item, to none (a filter), or, for a
 * flat stage, to any number (cpat_stage_emit()); it may fail. A batch stage
 * groups items (by count, by time, at end of input). The sink is a callback
 * run for every item that leaves the last stage, or a channel the caller
 * drains (cpat_pipeline_output()). Items are fixed-size values copied
 * through bounded channels: memory is bounded by the channel capacities.
 *
 * **Order.** An unordered stage passes items on as its workers finish
 * them. An ordered stage passes them on in the order it received them:
 * each worker takes what is there (a few items at a time when items are
 * cheap, one at a time when they are slow), numbered as it leaves the
 * input channel, with no turn to wait for, and leaves its results in a
 * reorder slot, from which they are handed on in order by whichever worker
 * is free. A worker waits for a slower one only when all reorder slots are
 * taken: room for four times the items the stage's input and output
 * channels hold together, in chunks of 32, at least 2 and at most 8 chunks
 * per worker (so a larger out_capacity also lets workers run further ahead
 * of a slow or preempted one). The reorder memory is made at start and
 * bounded by the items in flight. A pipeline whose source and every stage
 * are ordered, or single-worker, delivers in source order.
 *
 * **Cost.** Threads pass items on in chunks of up to 32 (one channel
 * operation per chunk) and never wait for a chunk to fill: a stage takes
 * what is there, but a worker never more than its share of what its input
 * channel holds (capacity / workers, at least 1), so that one worker does
 * not empty a small channel while the others starve, and a generator source
 * holds items back for at most 50 us (none after a generator call slower
 * than 5 us), so a trickle of items still goes through one by one. A stage
 * takes about 50 us of work per chunk (an ordered stage about 200 us: its
 * chunks also wait for the ones before them, so fewer and fuller ones cost
 * less), so a result waits at most that long for the others of its chunk.
 * Nothing is allocated per item. The pipeline's threads (source, workers,
 * sink; usually more than the cores) wait for their channels as other
 * threads do, but each learns how long spinning before it sleeps pays off
 * for it and shortens its spin when it mostly ends up sleeping anyway,
 * leaving the CPU to the stages with work (which matters most for ordered
 * stages, whose workers wait for each other's turns).
 *
 * **Sizing the channels.** When the pipeline's busy threads outnumber the
 * cores, the scheduler time-shares them and leaves a runnable thread off
 * its core for milliseconds at a time. A channel that holds less work
 * than that empties behind a descheduled producer, and its consumer
 * starves while a core idles. Give each channel (source_capacity,
 * out_capacity) room for tens of milliseconds of the next stage's work,
 * well beyond a scheduler time slice, or hand on bigger items (batches,
 * blocks); a deeper channel costs memory and holds items in flight
 * longer, not throughput. The default capacity (64) suits cheap items; a
 * stage of 100 us per item needs hundreds. bench/RESULTS.md has the
 * measurements behind this (cpat-bench-numbers, cpat-bench-logs).
 *
 * **Errors and cancellation.** The first stage (or source, or sink)
 * callback to return a negative value stops the pipeline: its token is
 * cancelled, every stage stops promptly, and cpat_pipeline_wait() returns
 * that value, with the stage's name and the item's index in the result.
 * Cancelling the caller's token, or the deadline, stops it the same way
 * with -ECANCELED or -ETIMEDOUT. Every item that left the source is
 * accounted for exactly once: delivered to the sink, filtered by a stage,
 * or not processed (counted, and handed to the drop callback if one is
 * set). Precisely, in cpat_pipeline_result:
 *
 *     produced + expanded == delivered + filtered + not_processed + batched
 *
 * where a flat stage's input that emits nothing counts as filtered, one
 * that emits n >= 1 items adds n - 1 to expanded (n if its function then
 * failed: the input itself is not processed), and a batch of c items
 * adds c - 1 to batched (a batch is then one item downstream: delivered
 * counts batches). An item whose callback failed is not processed. With
 * cpat_pipeline_set_output(), an item counts as delivered once it is in
 * the output channel.
 *
 * **Items and buffers.** Items are copied by value. The buffers callbacks
 * get are valid only during the call and aligned for any type (with the
 * default allocator, or any allocator whose blocks are aligned for
 * max_align_t), with one exception: in a pipeline made with
 * cpat_pipeline_set_output(), the buffers the last stage writes (with no
 * stage, the generator) are packed at the item size, so they are aligned
 * for the item's own type (an item of sizeof(T) bytes, for T) rather than
 * for any type. A batch's items (cpat_batch_item()) are aligned likewise
 * for their own type, the first for any type.
 *
 * **Items that own memory.** An item is a fixed-size value, so a line of
 * text travels as a pointer to heap memory (a `char *`, or a struct of
 * pointer and length), and whoever holds the item owns that memory. The
 * rule is the same at every step: a callback that is given an item and
 * returns success has taken it; one that returns an error has not, and
 * the pipeline hands the item to the drop callback (cpat_pipeline_opts.drop,
 * the one place the pipeline lets go of an item). So, with a drop that
 * frees:
 *
 * | step                          | who frees what it owned                 |
 * |-------------------------------|-----------------------------------------|
 * | generator / source returns 1  | the pipeline has it from then on        |
 * | generator returns 0 or < 0    | the generator (the item is ignored)     |
 * | feed returns 0 / an error     | the pipeline / the caller (not sent)    |
 * | map EMIT                      | moved to `out` (a map that replaces the |
 * |                               | item frees the input)                   |
 * | map SKIP (a filter)           | the stage                               |
 * | map or flat error (< 0)       | drop (the input, not processed)         |
 * | flat returns 0                | the stage (its input); each emitted item|
 * |                               | is the pipeline's once emit returned 0  |
 * | cpat_stage_emit() fails       | the stage (the item was not taken)      |
 * | batch stage                   | the batch owns its members: a dropped   |
 * |                               | batch comes to drop whole (stage = the  |
 * |                               | batch stage's index + 1; free each      |
 * |                               | cpat_batch_item()); members held when   |
 * |                               | the run stops come one by one           |
 * | sink returns 0 / an error     | the sink / drop                         |
 * | output channel                | the receiver; what is left in it at     |
 * |                               | destroy goes to drop                    |
 * | cancel, deadline, error, stop | drop, for every item in a channel, a    |
 * |                               | chunk, a reorder slot or a batch        |
 *
 * The drop callback's @p stage says which type an item has (the input of
 * that stage; the number of stages: the sink's input). Each item reaches
 * exactly one of: the sink (or the output channel's receiver), a stage
 * that took it, or drop, so each is freed exactly once on every path,
 * including cpat_pipeline_destroy() of a running pipeline.
 * examples/owned_lines.c passes variable-length lines this way.
 *
 * **Acknowledgement.** A context source (cpat_pipeline_set_source()) may
 * give each item a handle of ack_size bytes (a broker's message id, say)
 * and an ack callback. The pipeline then calls the callback exactly once
 * for every source item that completes: the sink callback returned 0 for
 * it (for a batch: for the batch it is in), a map stage skipped it, or a
 * flat stage's input emitted nothing; a flat input with outputs completes
 * when all of its outputs have. It never calls it for an item that was not
 * processed (cancel, error, deadline, shutdown), so a broker redelivers
 * that one. Acks come after the completion (after the sink returned 0),
 * in no particular order (source order would hold every ack behind the
 * slowest item in flight and widen redelivery after a crash), several per
 * call when several complete together (all the items of an accepted batch,
 * the items a thread completed in one chunk), from the thread that
 * completed them: the sink thread or a stage's worker. So the callback may
 * run in several threads at once: it must be thread-safe, must not block
 * for long (it holds up that thread), and must not call back into the
 * pipeline. At most max_unacked items hold a handle at once: the source
 * waits for acks (cancellably) while all are in flight, which also bounds
 * what a crash leaves pending. The default is large enough never to
 * throttle before the channels do (it counts every item the channels,
 * chunks, reorder slots and batches can hold). Nothing is allocated per
 * item. In cpat_pipeline_result, acked + unacked == produced (both 0
 * without acks). Acks need a callback sink: with cpat_pipeline_set_output()
 * the pipeline cannot know when the caller has processed an item, and
 * cpat_pipeline_start() returns -EINVAL; so it does when a batch stage is
 * not the last stage (a batch carries its members' handles to the sink),
 * or when a batch stage with flush_ns #CPAT_FOREVER has max_items above
 * max_unacked (it would wait for items the source may not make).
 *
 * **Statistics.** For every stage: items in and out, busy time, time
 * starved (waiting for input) and blocked (waiting for room downstream),
 * and utilisation. cpat_pipeline_report() writes them as a table and names
 * the bottleneck: the stage with the highest busy time per worker.
 *
 * **Lifetime.** create, add stages (in order), set a source and a sink,
 * then cpat_pipeline_run() (start and wait) or cpat_pipeline_start() and
 * cpat_pipeline_wait(). A pipeline runs once. Destroy after wait (destroy
 * of a running pipeline cancels it and waits).
 *
 * **Waiting under a token.** The run's token and deadline (start's) stop
 * the run; the threads notice at once, and so do callbacks that wait under
 * cpat_pipeline_token(). cpat_pipeline_wait_until() waits under a token
 * and a deadline of its own: if it gives up, the run goes on (cancel it
 * and wait again), so a caller's wait is never held by a callback stuck in
 * I/O.
 *
 * **Thread safety.** Building (create, add, set) is single-threaded: one
 * thread, before start. Once started, feed, feed_close, output, cancel,
 * token, stats and report may be called from any thread; wait and destroy
 * from one thread, not from the pipeline's own callbacks.
 *
 * **fork().** A pipeline made before fork() cannot be used in the child, not
 * even destroyed: its threads exist only in the parent (cpattern/common.h).
 *
 * **Thread names.** On Linux the pipeline's threads are named, as top -H,
 * ps -L, gdb and perf show them: "cpat-source", "cpat-sink", and each
 * stage's workers by the stage's name (its first 15 bytes, the system's
 * limit), so a profile reads stage by stage.
 *
 * @code
 * static int gen(void *out, void *arg) {            // 1..5
 *         int *next = arg;
 *         if (*next > 5) return 0;                  // end of input
 *         *(int *)out = (*next)++;
 *         return 1;
 * }
 * static int square(const void *in, void *out, struct cpat_stage_ctx *c) {
 *         *(int *)out = *(const int *)in * *(const int *)in;
 *         return CPAT_STAGE_EMIT;
 * }
 * static int even(const void *in, void *out, struct cpat_stage_ctx *c) {
 *         *(int *)out = *(const int *)in;
 *         return *(const int *)in % 2 ? CPAT_STAGE_SKIP : CPAT_STAGE_EMIT;
 * }
 * static int print(const void *item, void *arg) {
 *         printf("%d\n", *(const int *)item); return 0;   // 4, 16
 * }
 *
 * struct cpat_pipeline *p;
 * struct cpat_pipeline_opts po;
 * cpat_pipeline_opts_init(&po);
 * po.item_size = sizeof(int);
 * cpat_pipeline_create(&p, &po);
 * int next = 1;
 * cpat_pipeline_set_generator(p, gen, &next);
 * struct cpat_stage_opts so;
 * cpat_stage_opts_init(&so);
 * so.name = "square"; so.map = square; so.out_size = sizeof(int);
 * cpat_pipeline_add_stage(p, &so);
 * so.name = "even"; so.map = even;
 * cpat_pipeline_add_stage(p, &so);
 * cpat_pipeline_set_sink(p, print, NULL);
 * struct cpat_pipeline_result res;
 * int rc = cpat_pipeline_run(p, NULL, CPAT_FOREVER, &res);
 * cpat_pipeline_destroy(p);
 * @endcode
 */
#ifndef CPATTERN_PIPELINE_H
#define CPATTERN_PIPELINE_H

#include <stdbool.h>

#include "cpattern/chan.h"
#include "cpattern/common.h"
#include "cpattern/token.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A pipeline (opaque). */
struct cpat_pipeline;
/** What a stage function is given besides its item (opaque). */
struct cpat_stage_ctx;

/** Return values of a map stage besides a negative error. */
enum cpat_stage_result {
	CPAT_STAGE_EMIT = 0, /**< pass *out on */
	CPAT_STAGE_SKIP = 1  /**< filter the item out (counted as filtered) */
};

/**
 * A generator source: produces the next item. Called from the pipeline's
 * source thread, one call at a time. A stop is noticed between calls: a
 * generator that may block (on I/O, on a channel) must wait under the
 * run's token, cpat_pipeline_token() (reach the pipeline through @p arg),
 * and return soon after it fires, or cpat_pipeline_wait() waits for it
 * (return the token's status then: 0 would end the input normally).
 * A source that reads from a descriptor (stdin, a socket) is better made a
 * context source (cpat_pipeline_set_source()), whose cpat_source_flush()
 * also hands on the items held back before it blocks.
 * @param out room for one item (item_size bytes); valid during the call.
 * @param arg the arg given to cpat_pipeline_set_generator().
 * @return 1 if an item was produced (it is the pipeline's from then on,
 *         see "Items that own memory"); 0 at the end of input; a negative
 *         value to fail the pipeline with it (what was written to @p out
 *         is ignored: it stays the generator's).
 */
typedef int (*cpat_source_fn)(void *out, void *arg);

/**
 * A map stage: reads @p in, writes @p out. Called from the stage's
 * workers, several at once when it has more than one. With items that own
 * memory: on #CPAT_STAGE_EMIT what @p in owned is passed on in @p out (or
 * freed by the stage, which puts something else there); on
 * #CPAT_STAGE_SKIP the stage frees it; on an error the stage leaves it, and
 * the drop callback gets @p in.
 * @param in  the input item (the previous stage's out_size, or
 *            item_size); valid during the call.
 * @param out room for the output item (out_size bytes); valid during the
 *            call.
 * @param ctx the call's context (cpat_stage_arg(), cpat_stage_index(),
 *            ...); valid during the call.
 * @return #CPAT_STAGE_EMIT, #CPAT_STAGE_SKIP (any other positive value
 *         counts as SKIP), or a negative value to fail the pipeline with it.
 */
typedef int (*cpat_map_fn)(const void *in, void *out,
			   struct cpat_stage_ctx *ctx);

/**
 * A flat stage: reads @p in and emits any number of items with
 * cpat_stage_emit(). Called from the stage's workers, several at once
 * when it has more than one. With items that own memory: each item
 * cpat_stage_emit() took (returned 0) is the pipeline's; on a return of 0
 * what @p in owned is the stage's (to free, or moved into what it
 * emitted); on an error the drop callback gets @p in (the items already
 * emitted go on, or are dropped, on their own).
 * @param in  the input item; valid during the call.
 * @param ctx the call's context, for cpat_stage_emit(); valid during the
 *            call.
 * @return 0, or a negative value to fail the pipeline with it.
 */
typedef int (*cpat_flat_fn)(const void *in, struct cpat_stage_ctx *ctx);

/**
 * The sink: called for every item leaving the last stage, from the
 * pipeline's one sink thread, in delivery order. A sink that may block
 * should wait under cpat_pipeline_token().
 * @param item the item (the last stage's out_size, or item_size); valid
 *             during the call. On 0 the sink has taken it (what it owns
 *             is the sink's to free); on an error it goes to the drop
 *             callback.
 * @param arg  the arg given to cpat_pipeline_set_sink().
 * @return 0, or a negative value to fail the pipeline with it.
 */
typedef int (*cpat_sink_fn)(const void *item, void *arg);

/**
 * Called once for every item that is not processed (cancellation, error,
 * deadline), with the item as it was when it stopped (source or stage
 * output type, see cpat_pipeline_opts.drop), and, in a pipeline made with
 * cpat_pipeline_set_output(), once for every item left in the output
 * channel when the pipeline is destroyed (stage = the number of stages).
 * Called from whichever pipeline thread held the item, from
 * cpat_pipeline_wait() for items left in channels, or from
 * cpat_pipeline_destroy(), possibly from several threads at once; it
 * should be short and must not block. It is where an item that owns
 * memory is freed (see "Items that own memory").
 * @param item  the item; valid during the call.
 * @param stage index of the stage it was waiting for (0 = first stage;
 *              the number of stages = the sink).
 * @param arg   cpat_pipeline_opts.drop_arg.
 */
typedef void (*cpat_item_drop_fn)(const void *item, unsigned stage, void *arg);

/** Pipeline options; fill with cpat_pipeline_opts_init() first. */
struct cpat_pipeline_opts {
	size_t item_size;       /**< source item size, > 0 */
	size_t source_capacity; /**< channel after the source (default 64) */
	cpat_item_drop_fn drop; /**< for items not processed, or NULL */
	void *drop_arg;         /**< passed to drop */
};

/** Stage options; fill with cpat_stage_opts_init() first. */
struct cpat_stage_opts {
	const char *name;    /**< for errors and the report (copied) */
	cpat_map_fn map;     /**< the function, or NULL if flat is set */
	cpat_flat_fn flat;   /**< a flat stage's function, or NULL */
	void *arg;           /**< cpat_stage_arg() returns it */
	size_t out_size;     /**< output item size, > 0 */
	unsigned workers;    /**< threads running the stage (default 1) */
	bool ordered;        /**< keep input order (default false; no effect
				  with one worker, which keeps it anyway) */
	size_t out_capacity; /**< channel after this stage (default 64) */
};

/**
 * A batch of items, the output of a batch stage: a header followed by
 * `count` items of `item_size` bytes (read them with cpat_batch_item()).
 * The output item size of a batch stage is cpat_batch_size().
 */
struct cpat_batch {
	size_t count;         /**< items in this batch, 1..max_items */
	size_t item_size;     /**< bytes per item */
	uint64_t first_index; /**< index of the batch's first item */
};

/** Batch stage options; fill with cpat_batch_opts_init() first. */
struct cpat_batch_opts {
	const char *name; /**< for errors and the report (copied) */
	size_t max_items; /**< flush when this many are held (default 100) */
	int64_t flush_ns; /**< flush what is held after this long since the
			       batch's first item, > 0; #CPAT_FOREVER: only
			       by count and at end (default 1 s) */
	bool flush_on_cancel; /**< on cancellation, pass the partial batch on
				   to the sink instead of dropping it (default
				   false).
				   Only for the last stage: a sink callback then
				   also gets the batches already made (it drains
				   its channel); an output channel gets the
				   partial batch only if it has room. Elsewhere
				   the partial batch is dropped. */
	size_t out_capacity;  /**< channel after this stage (default 4) */
};

/** Per-stage statistics (cpat_pipeline_stats()). */
struct cpat_stage_stats {
	char name[32];       /**< the stage's name (truncated) */
	unsigned workers;    /**< its threads */
	uint64_t items_in;   /**< items taken from its input */
	uint64_t items_out;  /**< items passed on */
	uint64_t filtered;   /**< items it dropped by design (SKIP) */
	uint64_t busy_ns;    /**< summed over workers: in the function */
	uint64_t starved_ns; /**< summed: waiting for input */
	uint64_t blocked_ns; /**< summed: waiting for room downstream */
	double utilisation;  /**< busy / (busy + starved + blocked) */
};

/** What a finished pipeline reports (cpat_pipeline_wait()). */
struct cpat_pipeline_result {
	int rc;                 /**< as wait returned */
	char stage[32];         /**< where the first error happened: a stage's
				     name, "source" or "sink"; "" if none */
	uint64_t item_index;    /**< index of the failing item (source order) */
	uint64_t produced;      /**< items that left the source */
	uint64_t delivered;     /**< items the sink took (batch: batches) */
	uint64_t filtered;      /**< items stages skipped */
	uint64_t not_processed; /**< items stopped by error/cancel/deadline */
	uint64_t expanded;      /**< flat stages: outputs - 1 for every input
				     that emitted at least one item (outputs
				     if its function failed) */
	uint64_t batched;       /**< batch stages: count - 1 for every batch */
	uint64_t acked;         /**< source items acknowledged (acks only) */
	uint64_t unacked;       /**< source items never acknowledged: not
				     processed (acks only); acked + unacked ==
				     produced */
};

/**
 * Fills @p o with the defaults: item_size 0 (must be set), source_capacity
 * 64, no drop callback.
 *
 * Never blocks. Thread-safe. NULL is a no-op.
 */
CPAT_API void cpat_pipeline_opts_init(struct cpat_pipeline_opts *o);
/**
 * Fills @p o with the defaults: no name ("stage"), no function, out_size 0
 * (must be set), 1 worker, not ordered, out_capacity 64.
 *
 * Never blocks. Thread-safe. NULL is a no-op.
 */
CPAT_API void cpat_stage_opts_init(struct cpat_stage_opts *o);
/**
 * Fills @p o with the defaults: no name ("batch"), max_items 100, flush_ns
 * 1 s, no flush on cancel, out_capacity 4.
 *
 * Never blocks. Thread-safe. NULL is a no-op.
 */
CPAT_API void cpat_batch_opts_init(struct cpat_batch_opts *o);

/**
 * The output item size of a batch stage of @p max_items items of
 * @p item_size bytes, header included.
 *
 * Never blocks. Thread-safe.
 * @return the size; 0 if either argument is 0 or the size overflows.
 */
CPAT_API size_t cpat_batch_size(size_t max_items, size_t item_size);

/**
 * Item @p i of batch @p b. Item 0 is aligned for any type; item i is
 * i * item_size bytes further, so it is aligned only as far as item_size
 * allows.
 *
 * Never blocks. Thread-safe.
 * @param b a batch a stage or the sink received; borrowed.
 * @param i the item, 0..count-1 (not checked).
 * @return a pointer into @p b, valid as long as @p b is.
 */
CPAT_API const void *cpat_batch_item(const struct cpat_batch *b, size_t i);

/**
 * Creates an empty pipeline: no source, no stage, no sink.
 *
 * Never blocks. Thread-safe.
 * @param out  receives the pipeline, owned by the caller (release with
 *             cpat_pipeline_destroy()); NULL on failure.
 * @param opts options, read during the call only.
 * @return 0; -EINVAL for NULL @p out or @p opts, item_size 0 or over
 *         SIZE_MAX / 4, or source_capacity 0; -ENOMEM if allocation
 *         failed.
 */
CPAT_API int cpat_pipeline_create(struct cpat_pipeline **out,
				  const struct cpat_pipeline_opts *opts);

/**
 * Makes @p fn the source: the pipeline calls it from its source thread
 * until it returns 0 (end) or a negative value (error), or the pipeline
 * stops.
 *
 * Never blocks. Building: one thread, before start.
 * @param p   the pipeline.
 * @param fn  the generator.
 * @param arg passed to @p fn; the caller keeps ownership (it must stay
 *            valid until the run has ended: cpat_pipeline_wait()).
 * @return 0; -EINVAL for NULL @p p or @p fn; -EBUSY if a source is set
 *         or the pipeline was started.
 */
CPAT_API int cpat_pipeline_set_generator(struct cpat_pipeline *p,
					 cpat_source_fn fn, void *arg);

/** What a source function is given besides its output buffer (opaque). */
struct cpat_source_ctx;

/**
 * A source with a context: produces the next item into @p out (item_size
 * bytes) and, when the pipeline acknowledges items, the item's
 * acknowledgement handle into cpat_source_ack() (ack_size bytes).
 *
 * Called from the pipeline's source thread only, one call at a time, until
 * it returns 0 or a negative value, or the pipeline stops. It may block
 * (on I/O, say): it should then also watch cpat_source_token(), which
 * fires when the pipeline stops, and return soon after. Items produced
 * by fast calls just before a call that blocks wait in the source's chunk
 * (up to 32) until that call returns.
 * @p ctx is valid only during the call.
 * @return 1 if an item was produced; 0 at the end of input; a negative
 *         value to fail the pipeline with it (the handle written, if any,
 *         is not used).
 */
typedef int (*cpat_source_ctx_fn)(void *out, struct cpat_source_ctx *ctx);

/**
 * Acknowledges @p n completed items: @p handles holds their n handles, one
 * after another, ack_size bytes each, as their source wrote them.
 *
 * Called once per completed source item (see "Acknowledgement" above),
 * with n >= 1, from the thread that completed the items (sink or stage
 * worker), possibly from several threads at once: it must be thread-safe,
 * must not block for long and must not call into the pipeline. @p handles
 * is valid only during the call (copy what you keep), and a handle in it
 * is only byte-aligned when ack_size is not a multiple of its type's
 * alignment (read it with memcpy).
 */
typedef void (*cpat_ack_fn)(const void *handles, size_t n, void *arg);

/** Source options (cpat_pipeline_set_source()); fill with
 * cpat_source_opts_init() first. */
struct cpat_source_opts {
	cpat_source_ctx_fn fn; /**< the source function, required */
	void *arg;             /**< cpat_source_arg() returns it */
	size_t ack_size;       /**< bytes of an item's ack handle; 0: no acks */
	cpat_ack_fn ack;       /**< required when ack_size > 0, else NULL */
	void *ack_arg;         /**< passed to ack */
	size_t max_unacked;    /**< items holding a handle at once; the source
				    waits while this many are in flight
				    (0: the default, every item the pipeline
				    can hold; ignored without acks) */
};

/** Fills @p o with the defaults. NULL is a no-op. Never blocks. */
CPAT_API void cpat_source_opts_init(struct cpat_source_opts *o);

/**
 * Makes a context source the pipeline's source, with optional end-to-end
 * acknowledgement (ack_size > 0 and ack; see "Acknowledgement" above).
 * The options are copied. The ack table (max_unacked handles, made by
 * cpat_pipeline_start(), which may then also fail with -EINVAL or
 * -ENOMEM) is the only memory acks take; nothing per item.
 *
 * Never blocks. Building is single-threaded: call before start, from the
 * thread that builds.
 * @return 0; -EINVAL for NULL, no fn, ack_size > 0 without ack (or ack
 *         without ack_size), max_unacked >= UINT32_MAX; -EBUSY if a source
 *         (generator, feed or context source) is set or the pipeline was
 *         started.
 */
CPAT_API int cpat_pipeline_set_source(struct cpat_pipeline *p,
				      const struct cpat_source_opts *opts);

/** Where the source writes the current item's ack handle: ack_size bytes,
 * aligned for any type, owned by the pipeline, valid until the source
 * function returns. NULL when the pipeline has no acks, or for a NULL
 * @p ctx. Never blocks; call from the source function only. */
CPAT_API void *cpat_source_ack(struct cpat_source_ctx *ctx);
/** The run's token: fires when the pipeline stops (error, cancel,
 * deadline, the caller's token); a source blocked on I/O should watch it.
 * Borrowed (take a reference to keep it past the call). NULL for a NULL
 * @p ctx. Never blocks; call from the source function only. */
CPAT_API struct cpat_token *cpat_source_token(struct cpat_source_ctx *ctx);
/** The source's arg (cpat_source_opts.arg); NULL for a NULL @p ctx. Never
 * blocks; call from the source function only. */
CPAT_API void *cpat_source_arg(struct cpat_source_ctx *ctx);

/**
 * Hands on, now, the items the source thread holds back. The source
 * thread passes items on in chunks while the source is fast (see
 * **Cost**), so items already produced may wait for the next call of the
 * source function. A source about to block (waiting for input: a socket, a
 * broker's blocking read) calls this first, so that those items do not
 * wait for its input, and, with acks, do not keep slots or a broker's
 * unacknowledged entries in flight while it waits.
 *
 * Blocks while the first channel is full (as the source thread does
 * anyway); returns at once when the pipeline stops.
 * Thread safety: only from inside the source function, on its own @p ctx.
 * @param ctx the source function's context.
 * @return 0; -ECANCELED if the pipeline is stopping (the held items are
 *         then not processed; return from the source function soon);
 *         -EINVAL for NULL.
 */
CPAT_API int cpat_source_flush(struct cpat_source_ctx *ctx);

/**
 * Makes the pipeline's source a feed: the caller pushes items with
 * cpat_pipeline_feed() and ends the input with cpat_pipeline_feed_close().
 *
 * Never blocks. Building: one thread, before start.
 * @param p the pipeline.
 * @return 0; -EINVAL for NULL; -EBUSY if a source is set or the pipeline
 *         was started.
 */
CPAT_API int cpat_pipeline_set_feed(struct cpat_pipeline *p);

/**
 * Appends a map or flat stage. Its input items are the previous stage's
 * output (the source's items for the first stage).
 *
 * Never blocks. Building: one thread, before start.
 * @param p    the pipeline.
 * @param opts the stage, read during the call only (the name is copied;
 *             arg is passed on and must stay valid until the run has
 *             ended).
 * @return 0; -EINVAL for NULL @p p or @p opts, neither or both of map
 *         and flat, out_size 0 or over SIZE_MAX / 4, workers 0 or
 *         out_capacity 0; -ENOMEM if allocation failed; -EBUSY if
 *         started, or after cpat_pipeline_output() fixed the output
 *         channel.
 */
CPAT_API int cpat_pipeline_add_stage(struct cpat_pipeline *p,
				     const struct cpat_stage_opts *opts);

/**
 * Appends a batch stage: its input items are grouped into struct
 * cpat_batch items (see cpat_batch_size()). A batch is passed on when it
 * holds max_items, when flush_ns has passed since its first item, and at
 * end of input (the remainder). One thread runs it.
 *
 * Never blocks. Building: one thread, before start.
 * @param p    the pipeline.
 * @param opts the stage, read during the call only (the name is copied).
 * @return 0; -EINVAL for NULL @p p or @p opts, max_items 0, flush_ns
 *         neither > 0 nor #CPAT_FOREVER, out_capacity 0, or a batch size
 *         that overflows; -ENOMEM if allocation failed; -EBUSY if
 *         started, or after cpat_pipeline_output() fixed the output
 *         channel.
 */
CPAT_API int cpat_pipeline_add_batch(struct cpat_pipeline *p,
				     const struct cpat_batch_opts *opts);

/**
 * Makes @p fn the sink, run on the pipeline's sink thread for every item
 * that leaves the last stage.
 *
 * Never blocks. Building: one thread, before start.
 * @param p   the pipeline.
 * @param fn  the sink.
 * @param arg passed to @p fn; the caller keeps ownership (valid until the
 *            run has ended).
 * @return 0; -EINVAL for NULL @p p or @p fn; -EBUSY if a sink or an
 *         output channel is set, or the pipeline was started.
 */
CPAT_API int cpat_pipeline_set_sink(struct cpat_pipeline *p, cpat_sink_fn fn,
				    void *arg);

/**
 * Makes a channel the sink: the caller receives the output items from
 * cpat_pipeline_output() until it returns -EPIPE. With no stage, the
 * channel carries the source's items.
 *
 * Never blocks. Building: one thread, before start.
 * @param p the pipeline.
 * @return 0; -EINVAL for NULL; -EBUSY if a sink or an output channel is
 *         set, or the pipeline was started.
 */
CPAT_API int cpat_pipeline_set_output(struct cpat_pipeline *p);

/**
 * Starts every stage. Stops by itself when the input ends and everything
 * has been delivered, at the first error, when @p tok fires or at
 * @p deadline_ns.
 *
 * Blocks only while starting threads. Once per pipeline, from the thread
 * that built it.
 * @param p           the pipeline.
 * @param tok         cancellation token for the whole run, or NULL; the
 *                    pipeline holds a reference for the run, so the caller
 *                    may drop its own.
 * @param deadline_ns absolute deadline for the whole run, or #CPAT_FOREVER.
 * @return 0; -EINVAL for NULL @p p, no source, no sink (neither a sink
 *         callback nor an output channel), or a bad deadline; -EBUSY if
 *         already started (a pipeline runs once); -ENOMEM if allocation
 *         failed; -EAGAIN if a thread could not be started (those started
 *         are stopped and joined). On any failure nothing was run and
 *         nothing leaked: the pipeline is as before the call (start may be
 *         tried again, or it destroyed).
 */
CPAT_API int cpat_pipeline_start(struct cpat_pipeline *p,
				 struct cpat_token *tok, int64_t deadline_ns);

/**
 * Pushes one item into a feed source. Items over 4 KiB (with an 8-16 byte
 * header) are staged in a temporary allocation (-ENOMEM possible);
 * smaller ones never allocate.
 *
 * Blocks while the first channel is full, until there is room, @p tok
 * fires, or the pipeline stops. Thread-safe: feeds from several threads
 * are allowed; item indices are given in the order feeds begin (a failed
 * feed leaves a gap).
 * @param p    the pipeline.
 * @param item item_size bytes, copied; the caller keeps ownership.
 * @param tok  cancellation token for the wait, or NULL.
 * @return 0 once the item is in the pipeline; -EPIPE after feed_close,
 *         or once the pipeline has stopped (also for a feed blocked when
 *         it stops); -ECANCELED / -ETIMEDOUT (@p tok's cause); -EINVAL for
 *         NULL @p p or @p item, a pipeline without a feed, or one not
 *         started; -ENOMEM (large items only, see above). On any error the
 *         item did not enter the pipeline.
 */
CPAT_API int cpat_pipeline_feed(struct cpat_pipeline *p, const void *item,
				struct cpat_token *tok);

/**
 * cpat_pipeline_feed() with a deadline for the wait.
 * @param p           the pipeline.
 * @param item        item_size bytes, copied; the caller keeps ownership.
 * @param tok         cancellation token for the wait, or NULL.
 * @param deadline_ns absolute deadline, or #CPAT_FOREVER; a past deadline
 *                    makes the call non-blocking.
 * @return as cpat_pipeline_feed(); also -ETIMEDOUT when @p deadline_ns
 *         passes first (the item did not enter), and -EINVAL for a
 *         negative deadline other than #CPAT_FOREVER.
 */
CPAT_API int cpat_pipeline_feed_until(struct cpat_pipeline *p, const void *item,
				      struct cpat_token *tok,
				      int64_t deadline_ns);

/**
 * Ends a feed's input: the pipeline finishes the items it has, then
 * stops by itself.
 *
 * Never blocks. Thread-safe.
 * @param p the pipeline.
 * @return 0; -EPIPE if already closed; -EINVAL for NULL, a pipeline
 *         without a feed, or one not started.
 */
CPAT_API int cpat_pipeline_feed_close(struct cpat_pipeline *p);

/**
 * The output channel of a pipeline made with cpat_pipeline_set_output():
 * receive from it until -EPIPE (it closes when the pipeline stops). Its
 * elements are the last stage's output items (the source's items if there
 * is no stage), without any header. Someone must receive from it, or the
 * pipeline cannot finish; closing it yourself fails the pipeline with
 * -EPIPE. It may be asked for before start: it is then made at once, and
 * the pipeline's stages are fixed from then on.
 *
 * Never blocks. Thread-safe once started (before start it is part of
 * building: one thread). The channel itself is used from any thread.
 * @param p the pipeline.
 * @return the channel, borrowed: valid until cpat_pipeline_destroy(),
 *         which destroys it; NULL for NULL, a pipeline without
 *         cpat_pipeline_set_output(), or when the channel could not be
 *         made (out of memory, before start).
 */
CPAT_API struct cpat_chan *cpat_pipeline_output(struct cpat_pipeline *p);

/**
 * Waits until the pipeline has stopped and every thread has exited, then
 * drains every channel (but the output channel), dropping what is left.
 * A second call returns the same result at once.
 *
 * Blocks until the run ends: with a feed, only after
 * cpat_pipeline_feed_close() or a stop; with an output channel, not while
 * that channel is full and nobody receives from it; and not before every
 * callback has returned (a stop is noticed between calls: a callback
 * blocked on I/O holds the wait up unless it waits under
 * cpat_pipeline_token()). cpat_pipeline_wait_until() bounds the wait.
 * One thread at a time; never from the pipeline's own callbacks.
 * @param p   the pipeline.
 * @param res if not NULL, receives the result.
 * @return 0 if the input ended and everything was delivered; the first
 *         error (a negative value from a callback; -EPIPE if the caller
 *         closed the output channel); -ECANCELED or -ETIMEDOUT if the
 *         token fired, the pipeline was cancelled or the deadline passed;
 *         -EINVAL for NULL or a pipeline never started; -EBUSY from the
 *         pipeline's own callbacks (nothing waited for).
 */
CPAT_API int cpat_pipeline_wait(struct cpat_pipeline *p,
				struct cpat_pipeline_result *res);

/**
 * cpat_pipeline_wait() that gives up when @p tok fires or @p deadline_ns
 * passes: the bound of the wait itself, for a caller that must return
 * even when a callback does not answer the run's token.
 *
 * **Giving up does not stop the run.** The pipeline keeps running, nothing
 * is joined or drained, @p res is not written, and the call can be made
 * again. To stop the run, call cpat_pipeline_cancel(), then wait again:
 * it returns once the callbacks have returned (those that wait under
 * cpat_pipeline_token() return promptly). cpat_pipeline_destroy() of a
 * pipeline still running cancels it and waits for it.
 *
 * A result of -ECANCELED or -ETIMEDOUT may also be the run's own (its
 * token or deadline fired): to tell them apart, cancel and call
 * cpat_pipeline_wait() (at once, with the run's result, if it had ended).
 *
 * Blocks until the run ends, @p tok fires or @p deadline_ns passes. A
 * token that has already fired fails the call at once (unless a wait has
 * completed: its result is returned). One thread at a time; never from
 * the pipeline's own callbacks.
 * @param p           the pipeline.
 * @param tok         cancellation token for this wait (not the run's), or
 *                    NULL.
 * @param deadline_ns absolute deadline of this wait, or #CPAT_FOREVER.
 * @param res         if not NULL, receives the result once the run has
 *                    ended; untouched when the call gives up.
 * @return as cpat_pipeline_wait(); or -ECANCELED or -ETIMEDOUT (the cause
 *         of @p tok) if @p tok fired first, -ETIMEDOUT if @p deadline_ns
 *         passed first (the run goes on); -EINVAL also for a negative
 *         deadline other than #CPAT_FOREVER.
 */
CPAT_API int cpat_pipeline_wait_until(struct cpat_pipeline *p,
				      struct cpat_token *tok,
				      int64_t deadline_ns,
				      struct cpat_pipeline_result *res);

/**
 * cpat_pipeline_start() then cpat_pipeline_wait().
 *
 * Blocks until the run ends. From the thread that built the pipeline.
 * @param p           the pipeline.
 * @param tok         as for cpat_pipeline_start().
 * @param deadline_ns as for cpat_pipeline_start().
 * @param res         if not NULL, receives the result (zeroed but for rc
 *                    when start fails).
 * @return as cpat_pipeline_start() if it fails, else as
 *         cpat_pipeline_wait().
 */
CPAT_API int cpat_pipeline_run(struct cpat_pipeline *p, struct cpat_token *tok,
			       int64_t deadline_ns,
			       struct cpat_pipeline_result *res);

/**
 * Stops a running pipeline as a cancelled token would: wait then returns
 * -ECANCELED (unless an error or the end of input came first). No effect
 * on a pipeline not running.
 *
 * Never blocks. Thread-safe.
 * @param p the pipeline.
 * @return 0; -EINVAL for NULL.
 */
CPAT_API int cpat_pipeline_cancel(struct cpat_pipeline *p);

/**
 * The run's token: a child of the token given to start (with the run's
 * deadline), fired when the run is stopped: an error,
 * cpat_pipeline_cancel(), the caller's token, the deadline, or destroy of
 * a running pipeline (not when the input ends normally). Every callback
 * that may block (a generator reading its input, a sink writing to a slow
 * peer, a stage) should wait under it, so that a stop ends the run
 * promptly. It is the token cpat_stage_token() and cpat_source_token()
 * return.
 *
 * Never blocks. Thread-safe; usable from any callback of the pipeline and
 * from any thread.
 * @param p the pipeline.
 * @return the token, borrowed: valid from cpat_pipeline_start() until
 *         cpat_pipeline_destroy() (take a reference with cpat_token_ref()
 *         to keep it longer); NULL for NULL @p p or before start.
 */
CPAT_API struct cpat_token *cpat_pipeline_token(struct cpat_pipeline *p);

/**
 * Per-stage statistics, a snapshot (zeros before start).
 *
 * Never blocks. Thread-safe.
 * @param p     the pipeline.
 * @param stats room for @p n entries, filled in stage order.
 * @param n     how many entries @p stats has room for.
 * @return the number of stages (may exceed @p n: only @p n are written);
 *         -EINVAL for NULL @p p, or NULL @p stats with @p n > 0.
 */
CPAT_API int cpat_pipeline_stats(struct cpat_pipeline *p,
				 struct cpat_stage_stats *stats, size_t n);

/**
 * Writes a human-readable table of the statistics into @p buf, naming the
 * bottleneck stage (the highest busy time per worker), like snprintf():
 * at most @p len bytes, NUL included.
 *
 * Never blocks. Thread-safe.
 * @param p   the pipeline.
 * @param buf where to write, or NULL with @p len 0 (to learn the length).
 * @param len the size of @p buf.
 * @return the length of the full report, NUL excluded (>= @p len: it was
 *         truncated); -EINVAL for NULL @p p, or NULL @p buf with
 *         @p len > 0.
 */
CPAT_API int cpat_pipeline_report(struct cpat_pipeline *p, char *buf,
				  size_t len);

/* ---- for stage functions ---- */

/**
 * Emits one output item from a flat stage.
 *
 * Blocks while the next channel is full (an ordered stage's worker may
 * also wait for the items before its own to be passed on). Only from the
 * flat stage function's call, with its @p ctx.
 * @param ctx  the call's context.
 * @param item out_size bytes, copied; the caller keeps ownership.
 * @return 0; -ECANCELED if the pipeline is stopping (return from the
 *         stage function at once: what it emits is dropped); -EINVAL for
 *         NULL @p ctx or @p item, or the context of a stage that is not
 *         flat.
 */
CPAT_API int cpat_stage_emit(struct cpat_stage_ctx *ctx, const void *item);

/**
 * The pipeline's run token, which fires when the pipeline stops: a stage
 * function that waits for something should wait under it.
 *
 * Never blocks. From the stage function's call, with its @p ctx.
 * @return the token, borrowed: valid during the call (take a reference
 *         with cpat_token_ref() to keep it); NULL for NULL.
 */
CPAT_API struct cpat_token *cpat_stage_token(struct cpat_stage_ctx *ctx);

/**
 * The stage's arg (cpat_stage_opts.arg).
 *
 * Never blocks. From the stage function's call, with its @p ctx.
 * @return the arg; NULL for NULL.
 */
CPAT_API void *cpat_stage_arg(struct cpat_stage_ctx *ctx);

/**
 * The index of the current item in source order (for a flat stage's
 * emitted items, the index of the input they came from).
 *
 * Never blocks. From the stage function's call, with its @p ctx.
 * @return the index; 0 for NULL.
 */
CPAT_API uint64_t cpat_stage_index(struct cpat_stage_ctx *ctx);

/**
 * Which worker of the stage runs the call.
 *
 * Never blocks. From the stage function's call, with its @p ctx.
 * @return 0..workers-1; 0 for NULL.
 */
CPAT_API unsigned cpat_stage_worker(struct cpat_stage_ctx *ctx);

/**
 * Destroys the pipeline and its output channel; if it is running, cancels
 * it and waits first.
 *
 * Blocks until the pipeline's threads have exited (at once after
 * cpat_pipeline_wait()). Not concurrently with any other call on the
 * pipeline; never from its own callbacks (it then does nothing).
 * @param p the pipeline, or NULL (no-op); invalid after the call.
 */
CPAT_API void cpat_pipeline_destroy(struct cpat_pipeline *p);

#ifdef __cplusplus
}
#endif

#endif /* CPATTERN_PIPELINE_H */
