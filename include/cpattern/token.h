/**
 * @file cpattern/token.h
 * @brief Cancellation tokens: Go's `context` for C.
 *
 * A token is a one-shot signal arranged in a tree. It starts *live* and at
 * most once *fires*, with a cause that never changes afterwards:
 * `-ECANCELED` (cpat_token_cancel(), or a signal of a signal token) or
 * `-ETIMEDOUT` (the token's deadline passed). The first cause wins, and
 * cpat_token_status() reads it.
 *
 * **Causes.** cpat_token_cancel_cause() fires a token with a reason of the
 * canceller's choosing, a negative errno (Go's `context.WithCancelCause`):
 * whoever was cancelled reads it back with cpat_token_cause(). The status
 * stays -ECANCELED, so cpat_token_status(), the callbacks and every
 * blocking call of the library keep reporting -ECANCELED or -ETIMEDOUT, as
 * for any cancel: only a caller that asks for the cause sees it.
 *
 * **Tree.** A token made with a parent fires when the parent fires, with the
 * parent's cause, and cpat_token_cancel() returns only after every
 * descendant has fired. Firing a child never affects its parent or its
 * siblings. A child of a token that has already fired is born fired. A
 * child's effective deadline is the earliest of its own and its ancestors'.
 *
 * **Every blocking call of the library** takes a token (NULL means "never
 * cancelled"), or has an `_until` form that does, and returns the token's
 * cause as soon as it fires.
 *
 * **Lifetime.** Tokens are reference counted. Each create gives the caller
 * one reference; cpat_token_ref() adds one and cpat_token_unref() drops one;
 * the token is freed when the last is dropped. Dropping a reference never
 * fires a token. A child holds a reference to its parent, and an operation
 * blocked on a token holds its own, so a token is never freed under a
 * waiter. A released child unregisters from its parent at once, so a
 * long-lived parent does not grow with the children it has had.
 *
 * **Deadlines** fire on time without a thread per token: one shared timer
 * thread ("cpat-timer" on Linux; the signal helper below is
 * "cpat-signal"), started at the first deadline token, fires them all.
 * Reading the status of a token past its effective deadline (its own or an
 * ancestor's) also fires it, so a token is never seen live after its deadline,
 * and never fires before it.
 *
 * **Signals.** cpat_token_create_signals() makes a token that fires on the
 * first of a set of signals. The signal handler it installs only records the
 * signal and writes one byte to a pipe; a shared helper thread does the
 * firing. The previous handler is put back when the last signal token
 * watching that signal is freed. (While the helper thread fires a token it
 * holds a reference of its own for a moment, so the owner's release right
 * after the token fired may not be the last one.)
 *
 * **fork().** In a child made by fork(), new deadline and signal tokens work
 * (the helper threads start again there); the parent's tokens must not be
 * used in the child, not even released (see cpattern/common.h).
 *
 * **Callbacks.** cpat_token_on_cancel() runs a function exactly once when
 * the token fires (at once, in the calling thread, if it already has), on
 * the thread that fires it, with no library lock held: the callback may call
 * any token function, including on the same token.
 *
 * **Event loops.** cpat_token_fd() hands out a descriptor that becomes
 * readable once the token has fired, for a program that waits in poll(),
 * epoll, libuv or GLib.
 *
 * **Thread safety.** Every function may be called from any thread on a token
 * the caller holds a reference to. No function may be called from a signal
 * handler.
 *
 * @code
 * struct cpat_token *root, *req;
 * if (cpat_token_create(&root, NULL) != 0)
 *         return -1;
 * if (cpat_token_create_deadline(&req, root, cpat_now_ns() + 2 * CPAT_SEC) !=
 * 0) { cpat_token_unref(root); return -1;
 * }
 * int rc = cpat_chan_recv(ch, &item, req);   // -ETIMEDOUT after 2 s,
 * cpat_token_cancel(root);                   // -ECANCELED after this
 * cpat_token_unref(req);
 * cpat_token_unref(root);
 * @endcode
 */
#ifndef CPATTERN_TOKEN_H
#define CPATTERN_TOKEN_H

#include "cpattern/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A cancellation token (opaque). */
struct cpat_token;
/** A registered cancellation callback (opaque), see cpat_token_on_cancel(). */
struct cpat_token_cb;

/**
 * A cancellation callback.
 * @param arg   the pointer given at registration.
 * @param cause the token's cause: -ECANCELED or -ETIMEDOUT.
 */
typedef void (*cpat_token_fn)(void *arg, int cause);

/**
 * Creates a live token, optionally the child of @p parent.
 *
 * Never blocks (it takes the parent's lock briefly). Thread-safe.
 *
 * @param out    receives the new token, holding one reference owned by the
 *               caller; set to NULL on failure.
 * @param parent the parent, or NULL for a root. The child takes its own
 *               reference to it. If @p parent has fired, the child is born
 *               fired with the same cause.
 * @return 0 on success; -EINVAL if @p out is NULL; -ENOMEM if allocation
 *         failed.
 */
CPAT_API int cpat_token_create(struct cpat_token **out,
			       struct cpat_token *parent);

/**
 * Creates a token that fires with -ETIMEDOUT at @p deadline_ns (or earlier,
 * with its parent).
 *
 * Never blocks. Thread-safe. The first deadline token of the process starts
 * the library's timer thread.
 *
 * @param out         as for cpat_token_create().
 * @param parent      as for cpat_token_create().
 * @param deadline_ns absolute CLOCK_MONOTONIC deadline (cpat_now_ns()); a
 *                    deadline already past gives a token born fired with
 *                    -ETIMEDOUT; #CPAT_FOREVER gives a plain child.
 * @return 0 on success; -EINVAL if @p out is NULL or @p deadline_ns is
 *         negative and not #CPAT_FOREVER; -ENOMEM if allocation failed;
 *         -EAGAIN if the timer thread could not be started.
 */
CPAT_API int cpat_token_create_deadline(struct cpat_token **out,
					struct cpat_token *parent,
					int64_t deadline_ns);

/**
 * Creates a token that fires with -ECANCELED when the process receives the
 * first of the given signals (or earlier, with its parent).
 *
 * Installs a minimal handler (sigaction with SA_RESTART) for each signal not
 * already watched by another signal token; the handler records the signal
 * and wakes a helper thread, which fires every live signal token watching
 * it. While any signal token watches a signal, that signal no longer runs
 * its default action (for SIGINT and SIGTERM: the process no longer dies).
 * When the last token watching a signal is released, the handler that was
 * there before is restored.
 *
 * Never blocks. Thread-safe. Starts the helper thread on first use.
 *
 * @param out     as for cpat_token_create().
 * @param parent  as for cpat_token_create().
 * @param signals the signals (each 1..64, not SIGKILL or SIGSTOP); copied.
 * @param n       how many, at least 1 and at most 64.
 * @return 0 on success; -EINVAL for NULL @p out or @p signals, @p n out of
 *         range, or a signal that cannot be caught; -ENOMEM if allocation
 *         failed; -EAGAIN if the helper thread or its pipe could not be
 *         made.
 */
CPAT_API int cpat_token_create_signals(struct cpat_token **out,
				       struct cpat_token *parent,
				       const int *signals, size_t n);

/**
 * Fires @p tok with -ECANCELED, unless it has already fired.
 *
 * Idempotent. Before it returns, the token and every descendant have fired
 * (also when another thread fired them first), and every cancellation
 * callback of the token and its descendants has run (callbacks run in the
 * thread that fired their token, with no library lock held) or, if another
 * thread fired first, is running or about to run there. Wakes every thread
 * blocked on the token. Never blocks on anything but short internal locks
 * and the callbacks themselves. Thread-safe.
 *
 * @param tok the token; the caller holds a reference.
 * @return 1 if this call fired the token; 0 if it had already fired (with
 *         whatever cause it has); -EINVAL if @p tok is NULL.
 */
CPAT_API int cpat_token_cancel(struct cpat_token *tok);

/**
 * Fires @p tok, as cpat_token_cancel() does, and records @p cause as the
 * reason, for cpat_token_cause() to report.
 *
 * The token's status (cpat_token_status(), the callbacks' argument, what
 * blocking calls under it return) is -ECANCELED, as for a plain cancel,
 * whatever @p cause is. Every descendant fired by this call reports the
 * same cause. Only the call that fires the token sets the cause: if it had
 * already fired, nothing changes (the first cause wins).
 *
 * Blocks, is thread-safe and waits for the subtree and its callbacks
 * exactly as cpat_token_cancel().
 *
 * @param tok   the token; the caller holds a reference.
 * @param cause the reason: a negative errno value the canceller chooses
 *              (-EPIPE, -EIO, a code of its own, ...).
 * @return 1 if this call fired the token; 0 if it had already fired (its
 *         cause unchanged); -EINVAL if @p tok is NULL or @p cause is not
 *         negative (nothing fired).
 */
CPAT_API int cpat_token_cancel_cause(struct cpat_token *tok, int cause);

/**
 * Reads why @p tok fired: the cause given to cpat_token_cancel_cause().
 *
 * For a token fired by cpat_token_cancel() or a signal the cause is
 * -ECANCELED, for a deadline -ETIMEDOUT: the same as its status. A token
 * fired with its parent (or born fired under a fired parent) reports the
 * parent's cause. The first cause wins and never changes.
 *
 * Never blocks (a token past its effective deadline is fired here first,
 * as cpat_token_status() does). Thread-safe.
 *
 * @param tok the token, or NULL (the token that never fires).
 * @return 0 while live (always for NULL); the cause (< 0) once fired.
 */
CPAT_API int cpat_token_cause(struct cpat_token *tok);

/**
 * Reads whether @p tok has fired and why.
 *
 * Never blocks (a deadline token past its deadline is fired here first).
 * Thread-safe.
 *
 * @param tok the token, or NULL (the token that never fires).
 * @return 0 while live (always for NULL); -ECANCELED or -ETIMEDOUT once
 *         fired: the first cause, forever. A token past its effective
 *         deadline is fired by this call and reports -ETIMEDOUT.
 */
CPAT_API int cpat_token_status(struct cpat_token *tok);

/**
 * Blocks until @p tok fires or @p deadline_ns passes.
 *
 * Blocks. Thread-safe; any number of threads may wait on one token. The
 * waiter holds its own reference, so the token may be released by its owner
 * meanwhile.
 *
 * @param tok         the token; the caller holds a reference.
 * @param deadline_ns absolute deadline of this call, or #CPAT_FOREVER.
 * @return 0 once the token has fired (read the cause with
 *         cpat_token_status()); -ETIMEDOUT if @p deadline_ns passed first;
 *         -EINVAL if @p tok is NULL, or if @p deadline_ns is negative and
 *         not #CPAT_FOREVER.
 */
CPAT_API int cpat_token_wait(struct cpat_token *tok, int64_t deadline_ns);

/**
 * Registers @p fn to run exactly once when @p tok fires.
 *
 * If the token has already fired, @p fn runs at once in this thread, before
 * this call returns, and the call returns 0. Otherwise it runs in the thread
 * that fires the token, with no library lock held. It never runs after a
 * cpat_token_on_cancel_remove() that returned 1, and if the token is freed
 * without ever firing, it never runs.
 *
 * Never blocks (but for @p fn itself). Thread-safe.
 *
 * @param tok    the token; the caller holds a reference.
 * @param fn     the callback.
 * @param arg    passed to @p fn; owned by the caller.
 * @param handle if not NULL, receives a handle that keeps a reference to the
 *               token and must be released with exactly one
 *               cpat_token_on_cancel_remove(), whether or not @p fn has run
 *               (NULL on failure). If NULL, the registration cannot be
 *               removed and is freed after @p fn runs or with the token.
 * @return 0 on success (registered, or already run); -EINVAL if @p tok or
 *         @p fn is NULL; -ENOMEM if allocation failed (@p fn never runs).
 */
CPAT_API int cpat_token_on_cancel(struct cpat_token *tok, cpat_token_fn fn,
				  void *arg, struct cpat_token_cb **handle);

/**
 * Removes a callback registered by cpat_token_on_cancel() and releases its
 * handle (and the handle's token reference).
 *
 * If the callback is running in another thread, waits until it returns, so
 * that after this call the callback's @c arg may be freed. If called from
 * inside that same callback, does not wait.
 *
 * Blocks only as just said. Thread-safe.
 *
 * @param handle the handle; invalid after this call. NULL is accepted.
 * @return 1 if the callback was removed before it ran (it never will run);
 *         0 if it had already run (or, called from inside it, is running);
 *         -EINVAL if @p handle is NULL.
 */
CPAT_API int cpat_token_on_cancel_remove(struct cpat_token_cb *handle);

/**
 * Gives a descriptor, the token's *door*, that an event loop (poll(), epoll,
 * libuv's uv_poll, GLib's g_unix_fd_add(), ...) waits on: readable once
 * the token has fired, and from then on for good (level-triggered: it is
 * never drained; a loop that keeps polling it after the token fired gets
 * it readable at every call, so stop waiting on it then). Not readable
 * while the token is live. An eventfd on Linux, a pipe elsewhere; made at
 * the first request, non-blocking and close-on-exec.
 *
 * The door becomes readable as the token fires, before cpat_token_cancel()
 * returns, before the token's callbacks run, and with the same timeliness
 * as the token (a deadline token's door on time, from the timer thread; a
 * child's with its parent). Asked for after the token fired, it is
 * readable at once.
 *
 * Never read, write or close the descriptor, or change its flags: only
 * wait on it; cpat_token_status() says why it fired.
 *
 * **Lifetime.** The door belongs to the token: the same descriptor is
 * returned at every call, until the last reference to the token is dropped,
 * which closes it (stop waiting on it first: epoll_ctl(EPOLL_CTL_DEL),
 * uv_poll_stop(), ...). Its number may be reused by the process after that.
 *
 * **fork().** A child made by fork() inherits the descriptor (it is closed
 * on exec only), but it still belongs to the parent's token, which the
 * child must not use: the child must not wait on it, read it or write it;
 * closing its copy is harmless.
 *
 * Never blocks (takes the token's tree lock briefly). Thread-safe:
 * concurrent first calls make one door; any number of threads may wait on
 * it.
 * @param tok the token; the caller holds a reference.
 * @param fd  receives the descriptor; -1 on error.
 * @return 0; -EINVAL for NULL @p tok or @p fd; -EMFILE or -ENFILE if the
 *         process or the system has no descriptor left; -ENOMEM.
 */
CPAT_API int cpat_token_fd(struct cpat_token *tok, int *fd);

/**
 * Adds a reference to @p tok.
 *
 * Never blocks; thread-safe.
 * @param tok a token the caller holds a reference to, or NULL.
 * @return @p tok (NULL for NULL).
 */
CPAT_API struct cpat_token *cpat_token_ref(struct cpat_token *tok);

/**
 * Drops a reference to @p tok; the last one frees it, unregisters it from
 * its parent, drops its reference to the parent, and for a signal token
 * stops watching its signals. Never fires the token.
 *
 * Never blocks (short internal locks). Thread-safe.
 * @param tok the token, or NULL (no-op). The caller's reference is gone.
 */
CPAT_API void cpat_token_unref(struct cpat_token *tok);

#ifdef __cplusplus
}
#endif

#endif /* CPATTERN_TOKEN_H */
