/**
 * @file cpattern/parallel.h
 * @brief Parallel map: `out[i] = f(in[i])` over arrays, on a pool or on
 * threads of its own, with results in input order.
 *
 * cpat_parallel_map() is the data-parallel loop: the work is known up front
 * as an array, there is no stream and no channel. The items are handed out
 * in chunks (at most 1024 items, about eight chunks per thread), claimed
 * with one atomic operation each, so the overhead per item stays small even
 * for cheap functions. The calling thread works too. Result i is always
 * written to `out[i]`, so the output is in input order whatever order the
 * items are computed in.
 *
 * **Errors and cancellation.** The first negative value the function
 * returns stops the map: chunks not yet started are not computed, and the
 * call returns that value once every chunk already started has finished.
 * A token that fires stops it the same way with its cause, checked before
 * each chunk.
 *
 * **On a pool.** The helpers are offered to the pool with
 * cpat_pool_try_submit(), which never blocks: a full queue only means fewer
 * helpers. The call returns as soon as every item is done, without waiting
 * for helper tasks that have not started yet (they find nothing to do and
 * end at once), so a map called from a task of the same pool, or on a pool
 * whose workers are all busy, cannot deadlock: at worst the caller computes
 * every item itself.
 *
 * **Thread names.** On Linux a map's own threads are named "cpat-pmap"; on
 * a pool the work runs on the pool's workers, under their names.
 *
 * @code
 * static int square(const void *in, void *out, size_t i, void *arg) {
 *         *(long long *)out = (long long)*(const int *)in * *(const int *)in;
 *         return 0;
 * }
 *
 * int in[1000];
 * long long out[1000];
 * ...
 * int rc = cpat_parallel_map(in, sizeof in[0], out, sizeof out[0], 1000,
 *                            square, NULL, NULL, 4, NULL);   // 4 threads
 * @endcode
 */
#ifndef CPATTERN_PARALLEL_H
#define CPATTERN_PARALLEL_H

#include "cpattern/common.h"
#include "cpattern/pool.h"
#include "cpattern/token.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * A parallel-map function: computes @p out from @p in, item @p index of
 * the arrays. Called from several threads at once, for different items.
 * @param in    the input item (in_size bytes), read-only.
 * @param out   where the result goes (out_size bytes): `out[index]`.
 * @param index the item's position in the arrays, 0..n-1.
 * @param arg   the @p arg given to cpat_parallel_map().
 * @return 0, or a negative value to stop the map with it.
 */
typedef int (*cpat_map_item_fn)(const void *in, void *out, size_t index,
				void *arg);

/**
 * Computes `out[i] = fn(in[i])` for i in 0..n-1, with results in input
 * order, on @p pool (if not NULL) or on @p workers threads of its own.
 *
 * Blocks until every item is computed, or, after the first error or a
 * fired token, until the chunks already started are finished; the calling
 * thread computes items too. With a pool, it never waits for a pool
 * worker to become free (see the file comment: no deadlock from a task
 * of the same pool). With own threads, @p workers - 1 threads are started,
 * the caller being the last, and all are joined before the call returns;
 * if only some could be started, the map runs on those.
 *
 * Thread-safe: any number of maps may run at once, on one pool or not.
 * @p fn runs concurrently on several threads, each call on a different
 * item.
 *
 * @param in       @p n items of @p in_size bytes; borrowed for the call.
 * @param in_size  bytes per input item, > 0.
 * @param out      room for @p n items of @p out_size bytes; borrowed for
 *                 the call. Only @p fn writes to it: after an error or a
 *                 stop, the items never computed are as they were.
 * @param out_size bytes per output item, > 0.
 * @param n        how many items (0: nothing to do).
 * @param fn       computes one item.
 * @param arg      passed to every call of @p fn.
 * @param pool     the pool to run on (borrowed; it must not be destroyed
 *                 during the call), or NULL for threads of its own.
 * @param workers  own threads when @p pool is NULL (>= 1; 1 runs every
 *                 item in the calling thread); ignored with a pool, which
 *                 uses its workers plus the caller.
 * @param tok      cancellation token, or NULL.
 * @return 0 when every item was computed; otherwise what stopped it
 *         first: a negative value @p fn returned, or -ECANCELED or
 *         -ETIMEDOUT (the token's cause) if @p tok had fired before the
 *         call (nothing computed) or fired during it; -EINVAL
 *         for NULL @p fn, NULL @p in or @p out with @p n > 0, @p in_size
 *         or @p out_size 0, @p n items of either size overflowing, or
 *         @p workers 0 without a pool; -ENOMEM if allocation failed
 *         (nothing computed); -EAGAIN if no thread of its own could be
 *         started (nothing computed); -EPIPE if @p pool is shut down
 *         (nothing computed).
 */
CPAT_API int cpat_parallel_map(const void *in, size_t in_size, void *out,
			       size_t out_size, size_t n, cpat_map_item_fn fn,
			       void *arg, struct cpat_pool *pool,
			       unsigned workers, struct cpat_token *tok);

#ifdef __cplusplus
}
#endif

#endif /* CPATTERN_PARALLEL_H */
