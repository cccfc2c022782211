/**
 * @file cpattern/fan.h
 * @brief Fan-out, fan-in, ordered merge and broadcast over channels (the
 * guide's §4).
 *
 * Every function here works on channels the caller creates (`chan.h`) and
 * starts worker threads that the returned handle owns; cpat_fan_wait()
 * joins them and reports, cpat_fan_destroy() frees the handle. The caller
 * keeps ownership of the channels, which must outlive the handle.
 *
 * - **Fan-out** (cpat_fan_out()): N workers take items from one input
 *   channel and run a function on each, writing to one shared output
 *   channel or each to its own. The outputs are closed when the input is
 *   closed and drained (or the work stops).
 * - **Fan-in / merge** (cpat_fan_in()): N input channels into one output;
 *   the output is closed exactly once, after the last input is closed and
 *   drained.
 * - **Ordered merge** (cpat_fan_merge_ordered()): N input channels whose
 *   items carry a sequence number; the output receives them in sequence
 *   order, holding a bounded number of items out of order (`window`,
 *   plus at most one per input).
 * - **Broadcast / tee** (cpat_fan_broadcast()): every item of one input
 *   goes to every one of N outputs; a slow output either holds up all
 *   (#CPAT_FAN_BLOCK_ALL) or misses items, counted per output
 *   (#CPAT_FAN_DROP_SLOW).
 *
 * **Errors and cancellation.** A worker function that returns a negative
 * value stops the whole fan (its token is cancelled) and cpat_fan_wait()
 * returns that value. The token given at start stops it with its cause.
 * On a stop, the outputs are still closed exactly once, so downstream
 * readers end; items left in channels stay there for their owner. An item
 * a worker has taken from its input but not yet passed on when the fan
 * stops is lost (at most one per worker thread).
 *
 * **Thread safety.** Start functions and wait/destroy from the owner's
 * thread; the channels are used concurrently as usual.
 *
 * **Thread names.** On Linux the threads are named by their role:
 * "cpat-fan-out", "cpat-fan-in", "cpat-merge" and "cpat-broadcast".
 *
 * @code
 * // 1..10 through 4 workers that square, merged into one channel (§4.2)
 * struct cpat_fan *f;
 * cpat_fan_out(&f, in, &out, 1, 4, square, NULL, NULL);
 * int v;
 * while (cpat_chan_recv(out, &v, NULL) == 0)
 *         printf("%d\n", v);
 * int rc = cpat_fan_wait(f);
 * cpat_fan_destroy(f);
 * @endcode
 */
#ifndef CPATTERN_FAN_H
#define CPATTERN_FAN_H

#include "cpattern/chan.h"
#include "cpattern/common.h"
#include "cpattern/token.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A running fan-out, fan-in, merge or broadcast (opaque). */
struct cpat_fan;

/**
 * A fan-out worker function: reads @p in (the input's elem_size), writes
 * @p out (the output's elem_size).
 * @param in     the item taken from the input channel.
 * @param out    room for the result, sent to the output unless 1 is
 *               returned.
 * @param worker which worker, 0..n-1.
 * @param arg    the @p arg given to cpat_fan_out().
 * @return 0 to send *out, 1 to send nothing for this item, a negative
 *         value to stop everything with it.
 */
typedef int (*cpat_fan_fn)(const void *in, void *out, unsigned worker,
                           void *arg);

/**
 * Reads the sequence number of an item for an ordered merge.
 */
typedef uint64_t (*cpat_seq_fn)(const void *item, void *arg);

/** Broadcast policies. */
enum cpat_fan_policy {
	CPAT_FAN_BLOCK_ALL = 0, /**< wait for the slowest output */
	CPAT_FAN_DROP_SLOW = 1  /**< skip a full output; count the drop */
};

/**
 * Starts @p workers threads that take items from @p in, run @p fn, and
 * send the results to @p outs: with @p nouts == 1 all share outs[0]; with
 * @p nouts == @p workers, worker i sends to outs[i]. When @p in is closed
 * and drained, or the fan stops, every output is closed once.
 *
 * @param out     receives the handle; NULL on failure.
 * @param in      the input channel.
 * @param outs    the output channels, @p nouts of them.
 * @param nouts   1 (shared by every worker) or @p workers (one each).
 * @param workers how many worker threads, > 0.
 * @param fn      the worker function.
 * @param arg     passed to every call of @p fn.
 * @param tok     stops the fan when it fires, or NULL.
 * @return 0; -EINVAL for NULL arguments, 0 workers, @p nouts not 1 or
 *         @p workers; -ENOMEM; -EAGAIN if a thread could not be started
 *         (those started are stopped and joined, nothing is closed).
 */
CPAT_API int cpat_fan_out(struct cpat_fan **out, struct cpat_chan *in,
                          struct cpat_chan **outs, size_t nouts,
                          unsigned workers, cpat_fan_fn fn, void *arg,
                          struct cpat_token *tok);

/**
 * Merges @p nins channels into @p outch: one forwarder per input; closes
 * @p outch exactly once, after the last input is closed and drained (or
 * the fan stops). Per-input order is kept.
 * @return as cpat_fan_out(); -EINVAL also for element sizes that differ.
 */
CPAT_API int cpat_fan_in(struct cpat_fan **out, struct cpat_chan **ins,
                         size_t nins, struct cpat_chan *outch,
                         struct cpat_token *tok);

/**
 * Merges @p nins channels into @p outch in order of the sequence numbers
 * @p seq reads, starting at @p first_seq and with no gaps: item k is sent
 * only after items first_seq..k-1. Each input must itself deliver its items
 * in increasing sequence order. At most @p window items are held out of
 * order; while the window is full, the merge stops reading inputs ahead of
 * the next expected number (bounded memory: an input it still reads, one
 * whose last item is below the next number, may turn out to be ahead too,
 * so at most window + nins - 1 items are ever held). One thread.
 * @return as cpat_fan_in(); -EINVAL also for @p window 0 or @p nins over
 *         64. cpat_fan_wait() returns -EPIPE if the sequence has a gap:
 *         the inputs closed with items still held, or every open input is
 *         already ahead of the missing number. The items held then stay
 *         undelivered, counted as dropped (cpat_fan_dropped(fan, 0)), as
 *         are items whose number was already passed (duplicates).
 */
CPAT_API int cpat_fan_merge_ordered(struct cpat_fan **out,
                                    struct cpat_chan **ins, size_t nins,
                                    struct cpat_chan *outch, cpat_seq_fn seq,
                                    void *seq_arg, uint64_t first_seq,
                                    size_t window, struct cpat_token *tok);

/**
 * Sends every item of @p in to each of @p nouts outputs, by @p policy.
 * Closes every output once when @p in is closed and drained or the fan
 * stops.
 * @return as cpat_fan_in(); -EINVAL also for a bad policy.
 */
CPAT_API int cpat_fan_broadcast(struct cpat_fan **out, struct cpat_chan *in,
                                struct cpat_chan **outs, size_t nouts,
                                int policy, struct cpat_token *tok);

/**
 * Items output @p i missed under #CPAT_FAN_DROP_SLOW, or because the
 * output was closed by someone else (a snapshot). For an ordered merge,
 * @p i = 0 counts the items dropped at a gap or as duplicates.
 * @return the count; 0 for NULL or an @p i out of range.
 */
CPAT_API uint64_t cpat_fan_dropped(struct cpat_fan *fan, size_t i);

/**
 * Waits until every thread of the fan has exited.
 *
 * Blocks.
 * @return 0 if the input(s) ended normally (every item handed on), even
 *         if the token fired afterwards; the first negative value a worker
 *         function returned; the token's cause if it cut the fan short (a
 *         worker's error returned after the token fired is part of that
 *         stop: the cause is returned); -EPIPE for an ordered merge with a
 *         gap; -EINVAL for NULL.
 */
CPAT_API int cpat_fan_wait(struct cpat_fan *fan);

/**
 * Stops the fan as a cancelled token would. Never blocks.
 * @return 0; -EINVAL for NULL.
 */
CPAT_API int cpat_fan_cancel(struct cpat_fan *fan);

/**
 * Frees the handle, stopping and waiting first if it is still running.
 * @param fan the handle, or NULL (no-op).
 */
CPAT_API void cpat_fan_destroy(struct cpat_fan *fan);

#ifdef __cplusplus
}
#endif

#endif /* CPATTERN_FAN_H */
