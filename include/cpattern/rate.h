/**
 * @file cpattern/rate.h
 * @brief A token-bucket rate limiter: Go's `golang.org/x/time/rate` for C.
 *
 * A limiter admits events at a steady rate (events per second) with bursts:
 * a bucket holds up to *burst* tokens, refills at *rate* tokens per second,
 * and each event takes one. It starts full. Over any interval of length d
 * the limiter admits at most burst + rate * d events, whatever the number
 * of threads and however they are scheduled.
 *
 * **Three ways to use it**, as in Go:
 * - cpat_rate_wait(): block until an event is admitted (under a token and a
 *   deadline). The usual choice: a crawler's fetch, a client's request.
 * - cpat_rate_allow(): admit an event now or say no (drop or refuse it).
 * - cpat_rate_reserve(): take tokens now, in advance if need be, and learn
 *   when the caller may act; cpat_rate_cancel() gives back a reservation
 *   the caller will not use.
 *
 * **Waiting is in turn, and reserves its time at once.** A waiter takes
 * its token when it calls (the bucket may go into debt), and sleeps until
 * the time at which the token would have been there: the waiters of a busy
 * limiter are admitted one per 1/rate seconds, in the order they called,
 * and a late wake-up (a loaded machine) does not cost the next one its
 * turn as long as the lateness stays within the burst. A wait that cannot
 * be admitted by its deadline returns -ETIMEDOUT at once and takes
 * nothing; a wait whose token fires gives its token back (as
 * cpat_rate_cancel() does) and returns the token's cause.
 *
 * **Cost.** Nothing allocates after creation. Each call takes one short
 * lock; a waiting thread sleeps (futex on Linux) and uses no CPU.
 *
 * **Thread safety.** Every function may be called from any thread.
 *
 * **Lifetime.** cpat_rate_destroy() requires that no thread is waiting in
 * the limiter or still using it.
 *
 * @code
 * struct cpat_rate *lim;
 * if (cpat_rate_create(&lim, 5.0, 10) != 0)   // 5 per second, bursts of 10
 *         return -1;
 * while (next_request(&req)) {
 *         int rc = cpat_rate_wait(lim, tok);   // -ECANCELED once tok fires
 *         if (rc != 0)
 *                 break;
 *         send_request(&req);
 * }
 * cpat_rate_destroy(lim);
 * @endcode
 */
#ifndef CPATTERN_RATE_H
#define CPATTERN_RATE_H

#include "cpattern/common.h"
#include "cpattern/token.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A token-bucket rate limiter (opaque). */
struct cpat_rate;

/** What cpat_rate_reserve() took: pass it to cpat_rate_cancel() to give it
 * back. */
struct cpat_rate_reservation {
	int64_t act_ns;   /**< when the caller may act (cpat_now_ns() clock) */
	int64_t delay_ns; /**< act_ns minus the time of the reservation, >= 0 */
	size_t n;         /**< tokens taken */
};

/**
 * Creates a limiter with a full bucket.
 *
 * Never blocks; thread-safe.
 * @param out   receives the limiter, owned by the caller (release with
 *              cpat_rate_destroy()); NULL on failure.
 * @param rate  tokens added per second: > 0 and finite (0.5 is one event
 *              every 2 s).
 * @param burst the bucket's size: the most events admitted at once, >= 1.
 * @return 0; -EINVAL if @p out is NULL, @p rate is not a positive finite
 *         number, or @p burst is 0; -ENOMEM if allocation failed.
 */
CPAT_API int cpat_rate_create(struct cpat_rate **out, double rate,
			      size_t burst);

/**
 * Waits until one event is admitted.
 *
 * Blocks until the event's time comes (at once if the bucket has a token).
 * Thread-safe.
 * @param l   the limiter.
 * @param tok cancellation token, or NULL.
 * @return 0 when the caller may act; -ECANCELED or -ETIMEDOUT (the token's
 *         cause) if the token fires first, and the token taken is given
 *         back; -EINVAL if @p l is NULL.
 */
CPAT_API int cpat_rate_wait(struct cpat_rate *l, struct cpat_token *tok);

/**
 * cpat_rate_wait() with a deadline.
 * @param l           the limiter.
 * @param tok         cancellation token, or NULL.
 * @param deadline_ns absolute deadline, or #CPAT_FOREVER.
 * @return as cpat_rate_wait(); also -ETIMEDOUT, at once and with nothing
 *         taken, if the event could not be admitted before
 *         @p deadline_ns; -EINVAL for a negative deadline other than
 *         #CPAT_FOREVER.
 */
CPAT_API int cpat_rate_wait_until(struct cpat_rate *l, struct cpat_token *tok,
				  int64_t deadline_ns);

/**
 * Admits one event if the bucket has a token now.
 *
 * Never blocks (a short lock). Thread-safe.
 * @param l the limiter.
 * @return 1 if admitted (a token was taken); 0 if not (nothing taken);
 *         -EINVAL if @p l is NULL.
 */
CPAT_API int cpat_rate_allow(struct cpat_rate *l);

/**
 * Takes @p n tokens now, going into debt if the bucket has fewer, and says
 * when the caller may act: at once if the tokens were there, otherwise
 * when the bucket would have refilled them.
 *
 * The caller should wait until @p res->act_ns before acting (or cancel).
 * Never blocks (a short lock). Thread-safe.
 * @param l   the limiter.
 * @param n   tokens, 1..burst.
 * @param res receives the reservation (act_ns, delay_ns, n); untouched on
 *            error.
 * @return 0; -EINVAL if @p l or @p res is NULL, or @p n is 0 or more than
 *         the burst (never admissible).
 */
CPAT_API int cpat_rate_reserve(struct cpat_rate *l, size_t n,
			       struct cpat_rate_reservation *res);

/**
 * Gives back the tokens of a reservation the caller will not use, as far
 * as the reservations made after it allow (Go's `Reservation.Cancel`):
 * those keep their times, so the tokens they already count on are not
 * given back. A reservation whose time has come gives nothing back.
 *
 * Never blocks (a short lock). Thread-safe. Cancel each reservation at
 * most once.
 * @param l   the limiter that made it.
 * @param res the reservation.
 * @return 0; -EINVAL if @p l or @p res is NULL.
 */
CPAT_API int cpat_rate_cancel(struct cpat_rate *l,
			      const struct cpat_rate_reservation *res);

/**
 * Changes the rate. Tokens in the bucket (or the debt) are counted at the
 * old rate up to now, and refill at the new one from now on. Reservations
 * already made keep their times, and so do callers already waiting.
 *
 * Never blocks (a short lock). Thread-safe.
 * @param l    the limiter.
 * @param rate the new rate, > 0 and finite.
 * @return 0; -EINVAL if @p l is NULL or @p rate is not a positive finite
 *         number (nothing changes).
 */
CPAT_API int cpat_rate_set_rate(struct cpat_rate *l, double rate);

/**
 * Frees the limiter.
 *
 * No thread may be waiting in it or use it during or after this call.
 * Never blocks.
 * @param l the limiter, or NULL (no-op).
 */
CPAT_API void cpat_rate_destroy(struct cpat_rate *l);

#ifdef __cplusplus
}
#endif

#endif /* CPATTERN_RATE_H */
