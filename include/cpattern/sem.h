/**
 * @file cpattern/sem.h
 * @brief A weighted semaphore: Go's `golang.org/x/sync/semaphore` for C.
 *
 * A semaphore holds a fixed number of permits, its capacity. A caller
 * acquires k of them at once (k may differ from call to call: a large job
 * takes more), blocking under a token and a deadline until they are there,
 * and releases them when done. It bounds a shared resource by weight: the
 * memory of the jobs in flight, the connections to a server, CPU slots.
 *
 * **Order: first come, first served.** Waiters are served strictly in the
 * order they started waiting. A waiter at the head of the queue that needs
 * more permits than are free holds back every waiter behind it, even one
 * whose smaller request would fit, and a new caller queues behind it too
 * (cpat_sem_try_acquire() fails while anyone waits). This is Go's choice,
 * and for the same reason: otherwise a stream of small requests can keep
 * the free count below a large request's k forever, and the large request
 * starves. The cost is that free permits may stay unused while the head
 * waits for more.
 *
 * **Cancellation and deadlines.** A waiter whose token fires or whose
 * deadline passes leaves the queue and returns the cause; it takes no
 * permit and loses none, and the waiters behind it move up (served at once
 * if its leaving lets them fit). If it was granted its permits at the
 * moment it gave up, it gives them back (and they go to the next waiters)
 * and still returns the cause: after cpat_token_cancel() has returned, no
 * acquire under that token succeeds. A call whose token has already fired
 * fails at once, even when permits are free.
 *
 * **Cost.** Nothing allocates after creation: a waiter's record lives on
 * its own stack. A call takes one short lock; a blocked caller sleeps
 * (futex on Linux) and uses no CPU.
 *
 * **Thread safety.** Every function may be called from any thread. Permits
 * are not owned by threads: any thread may release what another acquired.
 *
 * **Lifetime.** cpat_sem_destroy() requires that no thread is blocked in
 * the semaphore or still using it. Permits still acquired are forgotten.
 *
 * @code
 * struct cpat_sem *mem;                        // 64 MiB of job buffers
 * if (cpat_sem_create(&mem, 64) != 0)
 *         return -1;
 * // in each worker:
 * size_t mib = job_mib(job);                   // 1..64
 * int rc = cpat_sem_acquire(mem, mib, tok);    // waits for room, in turn
 * if (rc == 0) {
 *         run(job);
 *         cpat_sem_release(mem, mib);
 * }                                            // else -ECANCELED / -ETIMEDOUT
 * // once every worker has returned:
 * cpat_sem_destroy(mem);
 * @endcode
 */
#ifndef CPATTERN_SEM_H
#define CPATTERN_SEM_H

#include "cpattern/common.h"
#include "cpattern/token.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A weighted semaphore (opaque). */
struct cpat_sem;

/**
 * Creates a semaphore with @p capacity permits, all free.
 *
 * Never blocks; thread-safe.
 * @param out      receives the semaphore, owned by the caller (release with
 *                 cpat_sem_destroy()); NULL on failure.
 * @param capacity the number of permits, > 0.
 * @return 0; -EINVAL if @p out is NULL or @p capacity is 0; -ENOMEM if
 *         allocation failed.
 */
CPAT_API int cpat_sem_create(struct cpat_sem **out, size_t capacity);

/**
 * Acquires @p k permits, blocking until they are free and every earlier
 * waiter has been served.
 *
 * Blocks. Thread-safe.
 * @param s   the semaphore.
 * @param k   how many, 1..capacity.
 * @param tok cancellation token, or NULL.
 * @return 0 with the @p k permits, which the caller now holds (give them
 *         back with cpat_sem_release()); -ECANCELED or -ETIMEDOUT (the
 *         token's cause) if the token fires first, with no permit taken;
 *         -EINVAL if @p s is NULL, @p k is 0 or more than the capacity.
 */
CPAT_API int cpat_sem_acquire(struct cpat_sem *s, size_t k,
			      struct cpat_token *tok);

/**
 * cpat_sem_acquire() with a deadline.
 * @param s           the semaphore.
 * @param k           how many, 1..capacity.
 * @param tok         cancellation token, or NULL.
 * @param deadline_ns absolute deadline, or #CPAT_FOREVER; a past deadline
 *                    makes the call non-blocking (it takes the permits if
 *                    it can at once).
 * @return as cpat_sem_acquire(); also -ETIMEDOUT when @p deadline_ns passes
 *         first (no permit taken), and -EINVAL for a negative deadline
 *         other than #CPAT_FOREVER.
 */
CPAT_API int cpat_sem_acquire_until(struct cpat_sem *s, size_t k,
				    struct cpat_token *tok,
				    int64_t deadline_ns);

/**
 * Acquires @p k permits if they are free and nobody is waiting.
 *
 * Never blocks. Thread-safe.
 * @return 0 with the permits; -EAGAIN if fewer than @p k are free or
 *         another caller is waiting (it would go first); -EINVAL if @p s
 *         is NULL, @p k is 0 or more than the capacity.
 */
CPAT_API int cpat_sem_try_acquire(struct cpat_sem *s, size_t k);

/**
 * Gives back @p k permits and serves the waiters they let through, in
 * order.
 *
 * Never blocks (a short lock; wakes the waiters it served). Thread-safe.
 * @param s the semaphore.
 * @param k how many, >= 1; at most the number currently acquired.
 * @return 0; -EINVAL if @p s is NULL, @p k is 0, or @p k is more than
 *         the permits currently acquired (a release without an acquire:
 *         nothing changes).
 */
CPAT_API int cpat_sem_release(struct cpat_sem *s, size_t k);

/**
 * How many permits are free: a snapshot, stale as soon as it is read while
 * other threads use the semaphore. Permits granted to a waiter that has not
 * yet returned count as taken.
 *
 * Never blocks (a short lock); thread-safe.
 * @param s the semaphore, or NULL (0).
 * @return the free permits.
 */
CPAT_API size_t cpat_sem_available(struct cpat_sem *s);

/**
 * Frees the semaphore.
 *
 * No thread may be blocked in it or use it during or after this call.
 * Never blocks.
 * @param s the semaphore, or NULL (no-op).
 */
CPAT_API void cpat_sem_destroy(struct cpat_sem *s);

#ifdef __cplusplus
}
#endif

#endif /* CPATTERN_SEM_H */
