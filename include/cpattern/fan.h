/**
 * @file cpattern/fan.h
 * @brief Fan-out, fan-in, ordered merge and broadcast over channels.
 *
 * Every function here works on channels the caller creates (`chan.h`) and
 * starts threads that the returned handle owns; cpat_fan_wait() joins them
 * and reports (cpat_fan_wait_until() under a token and a deadline),
 * cpat_fan_destroy() frees the handle. The caller keeps
 * ownership of the channels, which must outlive the fan's threads: until
 * cpat_fan_wait() or cpat_fan_destroy() has returned.
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
 *   order, holding a bounded number of items out of order (at most
 *   `window` + N - 1).
 * - **Broadcast / tee** (cpat_fan_broadcast()): every item of one input
 *   goes to every one of N outputs; a slow output either holds up all
 *   (#CPAT_FAN_BLOCK_ALL) or misses items, counted per output
 *   (#CPAT_FAN_DROP_SLOW).
 *
 * For `out[i] = f(in[i])` over arrays, with no channel, see
 * cpat_parallel_map() in `parallel.h`.
 *
 * **Errors and cancellation.** A worker function that returns a negative
 * value stops the whole fan (its token is cancelled) and cpat_fan_wait()
 * returns that value. The token given at start stops it with its cause.
 * On a stop, the outputs are still closed exactly once, so downstream
 * readers end; items left in channels stay there for their owner. An item
 * a worker has taken from its input but not yet passed on when the fan
 * stops is lost (at most one per worker thread): with elements that own
 * memory (see chan.h), that memory leaks, so items that own memory are
 * better passed through a pipeline (pipeline.h), whose drop callback gets
 * every item it lets go.
 *
 * **Thread safety.** The start functions may be called from any thread
 * (each makes a fan of its own). On one fan, cpat_fan_cancel() and
 * cpat_fan_dropped() may be called from any thread while the handle
 * exists; cpat_fan_wait() and cpat_fan_destroy() from one thread at a
 * time, never from the fan's own worker function. The channels are used
 * concurrently as usual.
 *
 * **fork().** A fan started before fork() cannot be used in the child, not even
 * destroyed: its threads exist only in the parent (cpattern/common.h).
 *
 * **Thread names.** On Linux the threads are named by their role:
 * "cpat-fan-out", "cpat-fan-in", "cpat-merge" and "cpat-broadcast".
 *
 * @code
 * // 1..10 through 4 workers that square, merged into one channel
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
 * A fan-out worker function, called by the fan's worker threads, several
 * at once (each with its own buffers).
 * @param in     the item taken from the input channel (the input's
 *               elem_size bytes, aligned as the allocator's blocks are:
 *               for any type with malloc()); valid during the call.
 * @param out    room for the result (the largest output elem_size),
 *               aligned as @p in is (for any type with malloc()); valid
 *               during the call.
 * @param worker which worker, 0..workers-1.
 * @param arg    the @p arg given to cpat_fan_out().
 * @return 0 to send *out; a positive value (1) to send nothing for this
 *         item; a negative value to stop the fan with it.
 */
typedef int (*cpat_fan_fn)(const void *in, void *out, unsigned worker,
			   void *arg);

/**
 * Reads the sequence number of an item for an ordered merge. Called from
 * the merge's one thread.
 * @param item the item (the channels' elem_size bytes); valid during the
 *             call.
 * @param arg  the @p seq_arg given to cpat_fan_merge_ordered().
 * @return the item's sequence number.
 */
typedef uint64_t (*cpat_seq_fn)(const void *item, void *arg);

/** Broadcast policies: what a full output does to the others. */
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
 * Never blocks but for starting threads. Thread-safe.
 * @param out     receives the handle, owned by the caller (release with
 *                cpat_fan_destroy()); NULL on failure.
 * @param in      the input channel; borrowed.
 * @param outs    the output channels, @p nouts of them: the array is
 *                copied, the channels borrowed.
 * @param nouts   1 (shared by every worker) or @p workers (one each).
 * @param workers how many worker threads, > 0.
 * @param fn      the worker function.
 * @param arg     passed to every call of @p fn.
 * @param tok     stops the fan when it fires, or NULL. The fan holds a
 *                reference to it while it exists; the caller may drop its
 *                own.
 * @return 0; -EINVAL for NULL @p out, @p in, @p fn or @p outs, a NULL
 *         channel in @p outs, 0 workers, @p nouts not 1 or @p workers, or
 *         buffer sizes that overflow; -ENOMEM if allocation failed;
 *         -EAGAIN if a thread could not be started (those started are
 *         stopped and joined, no channel is touched or closed, nothing
 *         leaks).
 */
CPAT_API int cpat_fan_out(struct cpat_fan **out, struct cpat_chan *in,
			  struct cpat_chan **outs, size_t nouts,
			  unsigned workers, cpat_fan_fn fn, void *arg,
			  struct cpat_token *tok);

/**
 * Merges @p nins channels into @p outch: one forwarder thread per input;
 * closes @p outch exactly once, after the last input is closed and drained
 * (or the fan stops). Per-input order is kept.
 *
 * Never blocks but for starting threads. Thread-safe.
 * @param out   receives the handle, as for cpat_fan_out().
 * @param ins   the input channels, @p nins of them: the array is copied,
 *              the channels borrowed.
 * @param nins  how many, > 0.
 * @param outch the output channel; borrowed.
 * @param tok   as for cpat_fan_out().
 * @return 0; -EINVAL for NULL @p out, @p ins or @p outch, a NULL channel
 *         in @p ins, @p nins 0 or over UINT_MAX, an input whose elem_size
 *         differs from @p outch's, or buffer sizes that overflow; -ENOMEM;
 *         -EAGAIN, as for cpat_fan_out().
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
 * so at most window + nins - 1 items are ever held). One thread, which
 * closes @p outch once when it ends.
 *
 * Never blocks but for starting the thread. Thread-safe.
 * @param out       receives the handle, as for cpat_fan_out().
 * @param ins       the input channels: the array is copied, the channels
 *                  borrowed.
 * @param nins      how many, 1..#CPAT_SELECT_MAX (the merge selects over
 *                  them).
 * @param outch     the output channel; borrowed.
 * @param seq       reads an item's sequence number.
 * @param seq_arg   passed to every call of @p seq.
 * @param first_seq the first sequence number.
 * @param window    the most items held out of order, > 0; memory for
 *                  window + nins items is allocated here.
 * @param tok       as for cpat_fan_out().
 * @return 0; -EINVAL for NULL @p out, @p ins, @p outch or @p seq, a NULL
 *         channel in @p ins, @p nins 0 or over #CPAT_SELECT_MAX, @p window
 *         0, an input whose elem_size differs from @p outch's, or a window
 *         whose memory size overflows; -ENOMEM; -EAGAIN, as for
 *         cpat_fan_out(). cpat_fan_wait() returns -EPIPE if the sequence
 *         has a gap: the inputs closed with items still held, or every
 *         open input is already ahead of the missing number. The items
 *         held then stay undelivered, counted as dropped
 *         (cpat_fan_dropped(fan, 0)), as are items whose number was
 *         already passed (duplicates).
 */
CPAT_API int cpat_fan_merge_ordered(struct cpat_fan **out,
				    struct cpat_chan **ins, size_t nins,
				    struct cpat_chan *outch, cpat_seq_fn seq,
				    void *seq_arg, uint64_t first_seq,
				    size_t window, struct cpat_token *tok);

/**
 * Sends every item of @p in to each of @p nouts outputs, in order, by
 * @p policy. One thread, which closes every output once when @p in is
 * closed and drained or the fan stops. An output closed by someone else
 * misses the items from then on (counted as dropped).
 *
 * Never blocks but for starting the thread. Thread-safe.
 * @param out    receives the handle, as for cpat_fan_out().
 * @param in     the input channel; borrowed.
 * @param outs   the output channels, @p nouts of them: the array is
 *               copied, the channels borrowed.
 * @param nouts  how many, > 0.
 * @param policy #CPAT_FAN_BLOCK_ALL or #CPAT_FAN_DROP_SLOW.
 * @param tok    as for cpat_fan_out().
 * @return 0; -EINVAL for NULL @p out, @p in or @p outs, a NULL channel in
 *         @p outs, @p nouts 0, an output whose elem_size differs from
 *         @p in's, or a policy not in enum cpat_fan_policy; -ENOMEM;
 *         -EAGAIN, as for cpat_fan_out().
 */
CPAT_API int cpat_fan_broadcast(struct cpat_fan **out, struct cpat_chan *in,
				struct cpat_chan **outs, size_t nouts,
				enum cpat_fan_policy policy,
				struct cpat_token *tok);

/**
 * Items output @p i missed under #CPAT_FAN_DROP_SLOW, or because the
 * output was closed by someone else (a snapshot). For an ordered merge,
 * @p i = 0 counts the items dropped at a gap or as duplicates.
 *
 * Never blocks. Thread-safe (any thread, while the handle exists).
 * @param fan the fan.
 * @param i   the output's index (broadcast), or 0 (ordered merge).
 * @return the count; 0 for NULL @p fan, an @p i out of range, or a fan
 *         that is neither a broadcast nor an ordered merge.
 */
CPAT_API uint64_t cpat_fan_dropped(struct cpat_fan *fan, size_t i);

/**
 * Waits until every thread of the fan has exited (the outputs are closed
 * by then). A second call returns the same result at once.
 *
 * Blocks until the inputs end or the fan stops (cpat_fan_wait_until()
 * gives up on a token or a deadline). One thread at a time on one fan;
 * never from the fan's worker function (it would wait for itself).
 * @param fan the fan; it still needs cpat_fan_destroy().
 * @return 0 if the input(s) ended normally (every item handed on), even
 *         if the token fired afterwards; the first negative value a worker
 *         function returned; the token's cause (-ECANCELED or -ETIMEDOUT)
 *         if it, or cpat_fan_cancel(), cut the fan short (a worker's error
 *         returned after the token fired is part of that stop: the cause
 *         is returned); -EPIPE for an ordered merge with a gap; -EINVAL
 *         for NULL.
 */
CPAT_API int cpat_fan_wait(struct cpat_fan *fan);

/**
 * cpat_fan_wait() that gives up when @p tok fires or @p deadline_ns
 * passes.
 *
 * **Giving up does not stop the fan.** Its threads keep running, nothing
 * is joined, and the call can be made again. To stop the fan, call
 * cpat_fan_cancel() (or fire the token given at start), then wait again:
 * the threads return promptly, as they block only in channel calls under
 * the fan's token. cpat_fan_destroy() of a fan not waited for cancels it
 * and joins its threads.
 *
 * A result of -ECANCELED or -ETIMEDOUT may also be the fan's own (its
 * token fired): to tell them apart, cancel and call cpat_fan_wait() (at
 * once, with the fan's result, if it had ended).
 *
 * Blocks until every thread of the fan has exited, @p tok fires or
 * @p deadline_ns passes. A token that has already fired fails the call
 * at once (unless a wait has completed: its result is returned). One
 * thread at a time on one fan; never from the fan's worker function.
 * @param fan         the fan.
 * @param tok         cancellation token for this wait, or NULL.
 * @param deadline_ns absolute deadline of this wait, or #CPAT_FOREVER.
 * @return as cpat_fan_wait(); or -ECANCELED or -ETIMEDOUT (the cause of
 *         @p tok) if @p tok fired first, -ETIMEDOUT if @p deadline_ns
 *         passed first (the fan runs on); -EINVAL also for a negative
 *         deadline other than #CPAT_FOREVER.
 */
CPAT_API int cpat_fan_wait_until(struct cpat_fan *fan, struct cpat_token *tok,
				 int64_t deadline_ns);

/**
 * Stops the fan as a cancelled token would: its threads stop promptly and
 * close their outputs; cpat_fan_wait() then returns -ECANCELED (unless the
 * fan had already ended or failed).
 *
 * Never blocks. Thread-safe (any thread, while the handle exists).
 * @param fan the fan.
 * @return 0; -EINVAL for NULL.
 */
CPAT_API int cpat_fan_cancel(struct cpat_fan *fan);

/**
 * Frees the handle; if the fan was not waited for, stops it as
 * cpat_fan_cancel() does and waits first.
 *
 * Blocks until the fan's threads have exited (at once after
 * cpat_fan_wait()). Not concurrently with any other call on the fan, and
 * never from its worker function.
 * @param fan the fan, or NULL (no-op); invalid after the call.
 */
CPAT_API void cpat_fan_destroy(struct cpat_fan *fan);

#ifdef __cplusplus
}
#endif

#endif /* CPATTERN_FAN_H */
