/**
 * @file cpattern/timer.h
 * @brief Timers and tickers whose fires arrive on a channel: Go's
 * `time.After`, `time.NewTimer` and `time.NewTicker` for C, usable alone or
 * as cases of cpat_chan_select().
 *
 * A timer owns a channel of capacity 1 whose elements are `int64_t`: the
 * time (cpat_now_ns()) at which the timer fired, never earlier than the
 * deadline it fired for. Receive from cpat_timer_chan() as from any
 * channel: cpat_chan_recv(), cpat_chan_try_recv(), or a RECV case of
 * cpat_chan_select() beside other channels. A *one-shot timer*
 * (cpat_timer_create(), Go's `time.NewTimer`, crossbeam's `after`) fires
 * once at its deadline; a *ticker* (cpat_ticker_create(), crossbeam's
 * `tick`) fires every period. crossbeam's `never` is a select case whose
 * channel is NULL, or a timer created with #CPAT_FOREVER.
 *
 * **Missed fires are dropped, and the channel holds the latest.** The
 * channel never holds more than one value. A fire that finds the previous
 * one still unreceived replaces it: a slow reader of a ticker receives the
 * time of the most recent tick, never an older one, and the ticks it
 * missed are gone, not queued. Ticks stay on the grid of the period: a
 * ticker that started at t fires at t + k * period, and when its thread is
 * late it skips to the next point of the grid after now.
 *
 * **Stop and reset** (Go's `Stop` and `Reset`) take effect at once: after
 * cpat_timer_stop() returns the timer never fires again until a reset, and
 * after cpat_timer_reset() it fires only for the new deadline or period. A
 * value already in the channel stays there: neither call drains it. To
 * start afresh, drain it with cpat_chan_try_recv() after stopping.
 *
 * **Cost.** Creation allocates; nothing else does (not a fire, a stop or a
 * reset). One service thread ("cpat-timer" on Linux, beside the one of
 * deadline tokens) fires every timer of the process, started by the first
 * timer; a timer costs nothing while stopped. In a child made by fork(),
 * new timers work (the thread starts again there); the parent's must not
 * be used (see cpattern/common.h).
 *
 * **Thread safety.** Every function may be called from any thread, and
 * stop and reset concurrently with receivers. The channel is the timer's:
 * receive from it, never send on it, close it or destroy it.
 *
 * **fork().** Timers made before fork() cannot be used in the child, not even
 * destroyed; new ones work there (the timer thread starts again).
 *
 * **Lifetime.** cpat_timer_destroy() stops the timer and frees it with its
 * channel; no thread may be receiving from the channel (or selecting on
 * it) then or later.
 *
 * @code
 * struct cpat_timer *tick, *quit;
 * int64_t at, v;
 * if (cpat_ticker_create(&tick, 100 * CPAT_MSEC) != 0)
 *         return -1;
 * if (cpat_timer_create(&quit, cpat_now_ns() + CPAT_SEC) != 0) {
 *         cpat_timer_destroy(tick);
 *         return -1;
 * }
 * struct cpat_select_case c[3] = {
 *         { .ch = cpat_timer_chan(tick), .op = CPAT_SELECT_RECV, .elem = &at },
 *         { .ch = cpat_timer_chan(quit), .op = CPAT_SELECT_RECV, .elem = &at },
 *         { .ch = jobs, .op = CPAT_SELECT_RECV, .elem = &v },
 * };
 * for (;;) {
 *         int i = cpat_chan_select(c, 3, tok, CPAT_FOREVER);
 *         if (i == 0) report_progress(at);
 *         else if (i == 2 && c[2].rc == 0) handle(v);
 *         else break;                     // 1 s is over, jobs closed, or tok
 * }
 * cpat_timer_destroy(quit);
 * cpat_timer_destroy(tick);
 * @endcode
 */
#ifndef CPATTERN_TIMER_H
#define CPATTERN_TIMER_H

#include "cpattern/common.h"
#include "cpattern/chan.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A one-shot timer or a ticker (opaque). */
struct cpat_timer;

/**
 * Creates a one-shot timer that fires at @p deadline_ns.
 *
 * Never blocks (a short internal lock). Thread-safe. The first timer of
 * the process starts the timer thread.
 *
 * @param out         receives the timer, owned by the caller (release with
 *                    cpat_timer_destroy()); NULL on failure.
 * @param deadline_ns absolute CLOCK_MONOTONIC deadline (cpat_now_ns()). A
 *                    deadline already past fires the timer before this call
 *                    returns; #CPAT_FOREVER makes a stopped timer, to be
 *                    armed with cpat_timer_reset().
 * @return 0; -EINVAL if @p out is NULL or @p deadline_ns is negative and
 *         not #CPAT_FOREVER; -ENOMEM if allocation failed; -EAGAIN if the
 *         timer thread could not be started.
 */
CPAT_API int cpat_timer_create(struct cpat_timer **out, int64_t deadline_ns);

/**
 * Creates a ticker: it fires at now + @p period_ns and every @p period_ns
 * after that, until stopped.
 *
 * A reader that falls behind gets the latest tick and misses the others
 * (see above). Never blocks (a short internal lock). Thread-safe.
 *
 * @param out       as for cpat_timer_create().
 * @param period_ns the period in nanoseconds, > 0.
 * @return 0; -EINVAL if @p out is NULL or @p period_ns <= 0; -ENOMEM if
 *         allocation failed; -EAGAIN if the timer thread could not be
 *         started.
 */
CPAT_API int cpat_ticker_create(struct cpat_timer **out, int64_t period_ns);

/**
 * The channel the timer's fires arrive on: capacity 1, elements of
 * sizeof(int64_t), the fire time in nanoseconds.
 *
 * Never blocks; thread-safe.
 * @param t the timer, or NULL.
 * @return the channel, borrowed: valid until cpat_timer_destroy(); receive
 *         only. NULL for NULL @p t.
 */
CPAT_API struct cpat_chan *cpat_timer_chan(const struct cpat_timer *t);

/**
 * Stops the timer: it does not fire again until cpat_timer_reset().
 *
 * A value already in the channel stays there (drain it with
 * cpat_chan_try_recv() if it must not be seen). Never blocks (a short
 * internal lock; a fire in progress completes first, so after this call no
 * fire is on its way). Thread-safe; allocates nothing.
 *
 * @param t the timer.
 * @return 1 if this call stopped a pending fire (an armed one-shot timer,
 *         or a running ticker); 0 if there was none (it had fired or was
 *         already stopped); -EINVAL if @p t is NULL.
 */
CPAT_API int cpat_timer_stop(struct cpat_timer *t);

/**
 * Re-arms the timer: a one-shot timer for a new deadline, a ticker with a
 * new period, whether or not it was running.
 *
 * What was pending before is cancelled. A value already in the channel
 * stays there, as for cpat_timer_stop(). Never blocks (a short internal
 * lock). Thread-safe; allocates nothing and cannot fail on a valid timer.
 *
 * @param t    the timer.
 * @param when for a one-shot timer, the new absolute deadline: one already
 *             past fires the timer before this call returns, #CPAT_FOREVER
 *             leaves it stopped. For a ticker, the new period (> 0): the
 *             next tick comes a period from now.
 * @return 1 if a pending fire was cancelled (the timer was armed); 0 if it
 *         was not; -EINVAL if @p t is NULL, or @p when is invalid (for a
 *         timer, negative and not #CPAT_FOREVER; for a ticker, <= 0),
 *         and then nothing changed.
 */
CPAT_API int cpat_timer_reset(struct cpat_timer *t, int64_t when);

/**
 * Stops the timer and frees it and its channel (a value still in the
 * channel is discarded).
 *
 * No thread may be receiving from or selecting on the timer's channel
 * during or after this call. Never blocks (a short internal lock; a fire in
 * progress completes first).
 * @param t the timer, or NULL (no-op).
 */
CPAT_API void cpat_timer_destroy(struct cpat_timer *t);

#ifdef __cplusplus
}
#endif

#endif /* CPATTERN_TIMER_H */
