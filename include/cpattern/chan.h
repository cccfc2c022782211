/**
 * @file cpattern/chan.h
 * @brief Bounded MPMC channels: Go's channels for C, with cancellation,
 * deadlines, batching and select.
 *
 * A channel carries elements of one fixed size, chosen at creation, copied in
 * and out with memcpy(). Any number of threads may send and receive at once.
 *
 * **Capacity.** A channel of capacity N > 0 buffers up to N elements: a send
 * blocks only while N are buffered. Capacity 0 is a rendezvous: a send
 * completes only when a receiver takes the element, handed over directly.
 *
 * **Order and delivery.** Elements leave in the order their sends completed;
 * the elements of one sending thread keep their order. Every element whose
 * send returned 0 is received exactly once, or passed to the drop callback
 * (cpat_chan_opts.drop) when the channel is destroyed still holding it. On
 * a rendezvous, threads blocked on the same side are paired in the order
 * they blocked.
 *
 * **Close.** cpat_chan_close() makes every later send fail with -EPIPE and
 * wakes every blocked sender (their elements stay with them) and receiver.
 * Receivers still get what was buffered; once it is drained they get -EPIPE.
 * Closing a closed channel returns -EPIPE and changes nothing.
 *
 * **Cancellation and deadlines.** Every blocking call takes a token (NULL:
 * never cancelled) and its `_until` form a deadline. A call whose token has
 * already fired when it is made fails with the token's cause at once, even
 * when the channel is ready: after cpat_token_cancel() returns, no operation
 * under that token succeeds. A failed, timed-out or cancelled operation has
 * no side effect: the element stays with the caller and nothing is consumed.
 * A deadline in the past makes an `_until` call non-blocking: it completes
 * if it can at once, and otherwise returns -ETIMEDOUT (the `try_` forms
 * return -EAGAIN instead).
 *
 * **Cost.** No call allocates after creation. The buffered path is
 * lock-free; a blocked thread spins briefly (at most about 40 us, and not
 * at all when it may run on one CPU only, where spinning would only take
 * the CPU from the thread it waits for), then parks (futex on Linux), and a
 * thread that completes an operation makes a system call only when some
 * thread is parked. A thread blocked for a long time uses no CPU. A plain
 * rendezvous send or receive of an element of up to 8 bytes waits in the
 * channel's own cache line, so a hand-off between two running threads
 * moves that one line each way.
 *
 * **Event loops.** cpat_chan_fd() hands out a descriptor that becomes
 * readable when a receive (or a send) would likely succeed, for a program
 * that waits in poll(), epoll, libuv or GLib rather than in this library.
 *
 * **Lifetime.** cpat_chan_destroy() requires that no thread is still using
 * the channel or blocked in it.
 *
 * **Elements that own memory.** To pass a line of text, or any object of
 * varying size, send a pointer to it (elem_size `sizeof(char *)`, or a
 * struct of pointer and length) and let the element carry the ownership:
 * a send that returns 0 gives it to the channel, a receive that returns 0
 * gives it to the receiver, and any failed call (closed, cancelled, timed
 * out, `try_` that would block) leaves it where it was, so the caller
 * still frees it. What is still buffered when the channel is destroyed is
 * passed to the drop callback (cpat_chan_opts.drop), once per element:
 * make it the free. Every pointer sent is then freed exactly once, by its
 * receiver or by drop.
 *
 * @code
 * static void free_line(void *elem, void *arg) { free(*(char **)elem); }
 *
 * struct cpat_chan_opts o;
 * cpat_chan_opts_init(&o);
 * o.elem_size = sizeof(char *);
 * o.capacity = 64;
 * o.drop = free_line;                       // frees what nobody received
 * cpat_chan_create_opts(&ch, &o);
 * char *line = strdup("hello");
 * if (cpat_chan_send(ch, &line, tok) != 0)
 *         free(line);                       // not sent: still ours
 * @endcode
 *
 * @code
 * struct cpat_chan *ch;
 * int v = 42, got;
 * if (cpat_chan_create(&ch, sizeof(int), 16) != 0)
 *         return -1;
 * cpat_chan_send(ch, &v, NULL);          // 0
 * cpat_chan_close(ch);
 * cpat_chan_recv(ch, &got, NULL);        // 0, got == 42
 * cpat_chan_recv(ch, &got, NULL);        // -EPIPE: closed and drained
 * cpat_chan_destroy(ch);
 * @endcode
 */
#ifndef CPATTERN_CHAN_H
#define CPATTERN_CHAN_H

#include "cpattern/common.h"
#include "cpattern/token.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A channel (opaque). */
struct cpat_chan;

/**
 * Called once for each element still buffered when the channel is
 * destroyed.
 * @param elem the element (valid only during the call).
 * @param arg  cpat_chan_opts.drop_arg.
 */
typedef void (*cpat_chan_drop_fn)(void *elem, void *arg);

/** Creation options; fill with cpat_chan_opts_init() first. */
struct cpat_chan_opts {
	size_t elem_size; /**< bytes per element, > 0 */
	size_t capacity;  /**< buffered elements; 0 = rendezvous */
	cpat_chan_drop_fn
		drop;   /**< run on undelivered elements at destroy, or NULL */
	void *drop_arg; /**< passed to drop */
};

/**
 * Fills @p opts with defaults: elem_size 0 (must be set), capacity 0, no
 * drop callback. Never blocks; thread-safe. NULL is a no-op.
 */
CPAT_API void cpat_chan_opts_init(struct cpat_chan_opts *opts);

/**
 * Creates a channel.
 *
 * Never blocks; thread-safe.
 * @param out       receives the channel, owned by the caller (release with
 *                  cpat_chan_destroy()); NULL on failure.
 * @param elem_size bytes per element, > 0.
 * @param capacity  buffered elements; 0 for a rendezvous channel.
 * @return 0; -EINVAL if @p out is NULL, @p elem_size is 0, or the buffer
 *         size would overflow; -ENOMEM if allocation failed.
 */
CPAT_API int cpat_chan_create(struct cpat_chan **out, size_t elem_size,
			      size_t capacity);

/**
 * Creates a channel from options (adds the drop callback).
 * @param out  as for cpat_chan_create().
 * @param opts the options, read during the call only.
 * @return as for cpat_chan_create(); -EINVAL also for NULL @p opts.
 */
CPAT_API int cpat_chan_create_opts(struct cpat_chan **out,
				   const struct cpat_chan_opts *opts);

/**
 * Sends one element, blocking while the channel is full (for capacity 0:
 * until a receiver takes it).
 *
 * Blocks. Thread-safe.
 * @param ch   the channel.
 * @param elem elem_size bytes, copied; the caller keeps ownership.
 * @param tok  cancellation token, or NULL.
 * @return 0 once the element is in the channel (or, capacity 0, taken);
 *         -EPIPE if the channel is or becomes closed before that;
 *         -ECANCELED or -ETIMEDOUT (the token's cause) if the token fires
 *         first; -EINVAL if @p ch or @p elem is NULL. On any error the
 *         element was not sent.
 */
CPAT_API int cpat_chan_send(struct cpat_chan *ch, const void *elem,
			    struct cpat_token *tok);

/**
 * cpat_chan_send() with a deadline.
 * @param ch          the channel.
 * @param elem        elem_size bytes, copied; the caller keeps ownership.
 * @param tok         cancellation token, or NULL.
 * @param deadline_ns absolute deadline, or #CPAT_FOREVER; a past deadline
 *                    makes the call non-blocking.
 * @return as cpat_chan_send(); also -ETIMEDOUT when @p deadline_ns passes
 *         first, and -EINVAL for a negative deadline other than
 *         #CPAT_FOREVER.
 */
CPAT_API int cpat_chan_send_until(struct cpat_chan *ch, const void *elem,
				  struct cpat_token *tok, int64_t deadline_ns);

/**
 * Sends one element if that can be done without blocking.
 *
 * Never blocks. Thread-safe. For capacity 0 this succeeds only when a
 * receiver is already waiting.
 * @return 0 if sent; -EAGAIN if it would block; -EPIPE if closed (also when
 *         the closed channel is full); -EINVAL for NULL arguments.
 */
CPAT_API int cpat_chan_try_send(struct cpat_chan *ch, const void *elem);

/**
 * Receives one element, blocking while the channel is empty and open.
 *
 * Blocks. Thread-safe.
 * @param ch   the channel.
 * @param elem receives elem_size bytes; untouched on error.
 * @param tok  cancellation token, or NULL.
 * @return 0 with the element; -EPIPE once the channel is closed and
 *         drained; -ECANCELED or -ETIMEDOUT (the token's cause) if the
 *         token fires first (nothing consumed); -EINVAL for NULL @p ch or
 *         @p elem.
 */
CPAT_API int cpat_chan_recv(struct cpat_chan *ch, void *elem,
			    struct cpat_token *tok);

/**
 * cpat_chan_recv() with a deadline.
 * @return as cpat_chan_recv(); also -ETIMEDOUT when @p deadline_ns passes
 *         first (nothing consumed), and -EINVAL for a negative deadline
 *         other than #CPAT_FOREVER.
 */
CPAT_API int cpat_chan_recv_until(struct cpat_chan *ch, void *elem,
				  struct cpat_token *tok, int64_t deadline_ns);

/**
 * Receives one element if one is there (for capacity 0: if a sender is
 * waiting).
 *
 * Never blocks. Thread-safe.
 * @return 0 with the element; -EAGAIN if the channel is empty and open;
 *         -EPIPE if it is closed and drained; -EINVAL for NULL arguments.
 */
CPAT_API int cpat_chan_try_recv(struct cpat_chan *ch, void *elem);

/**
 * Sends @p n elements in order, as many per step as fit, blocking while the
 * channel is full. Cheaper per element than single sends.
 *
 * Elements of one call keep their order but may interleave with other
 * senders'. Blocks. Thread-safe.
 * @param ch          the channel.
 * @param elems       @p n elements of elem_size bytes, contiguous.
 * @param n           how many, > 0.
 * @param sent        if not NULL, receives how many were sent (0..n) on
 *                    success and on error; those were delivered, the rest
 *                    stay with the caller.
 * @param tok         cancellation token, or NULL.
 * @param deadline_ns absolute deadline, or #CPAT_FOREVER.
 * @return 0 when all @p n were sent; otherwise the reason it stopped:
 *         -EPIPE (closed), -ECANCELED / -ETIMEDOUT (token, or deadline);
 *         -EINVAL for NULL @p ch or @p elems, @p n == 0, or a bad deadline.
 */
CPAT_API int cpat_chan_send_many(struct cpat_chan *ch, const void *elems,
				 size_t n, size_t *sent, struct cpat_token *tok,
				 int64_t deadline_ns);

/**
 * Receives between 1 and @p n elements: blocks until at least one is
 * there, then takes as many as are there without blocking again, up to
 * @p n.
 *
 * Blocks. Thread-safe.
 * @param ch          the channel.
 * @param elems       room for @p n elements.
 * @param n           the most to take, > 0.
 * @param received    if not NULL, receives how many were taken (0 on
 *                    error).
 * @param tok         cancellation token, or NULL.
 * @param deadline_ns absolute deadline, or #CPAT_FOREVER.
 * @return 0 with at least one element; -EPIPE if closed and drained;
 *         -ECANCELED / -ETIMEDOUT (token, or deadline) with nothing taken;
 *         -EINVAL for NULL @p ch or @p elems, @p n == 0, or a bad deadline.
 */
CPAT_API int cpat_chan_recv_many(struct cpat_chan *ch, void *elems, size_t n,
				 size_t *received, struct cpat_token *tok,
				 int64_t deadline_ns);

/**
 * The most cases one cpat_chan_select() takes. A select keeps its working
 * set (one waiter record per case, the channels to lock) on the caller's
 * stack, so the bound keeps a blocked select from allocating.
 */
#define CPAT_SELECT_MAX 64

/** The operation of a select case. */
enum cpat_select_op {
	CPAT_SELECT_RECV = 1, /**< receive into elem */
	CPAT_SELECT_SEND = 2  /**< send from elem */
};

/** One case of cpat_chan_select(). */
struct cpat_select_case {
	struct cpat_chan *ch; /**< the channel; NULL disables the case */
	int op;               /**< enum cpat_select_op */
	void *elem;           /**< SEND: element to send; RECV: buffer */
	int rc; /**< out, for the completed case: 0, or -EPIPE if closed */
};

/**
 * Waits until one of @p cases can complete, completes exactly that one, and
 * returns its index.
 *
 * Among cases that are ready together, the one completed is chosen
 * uniformly at random. A case on a closed channel is ready: a RECV case on a
 * closed and drained channel, or a SEND case on a closed channel, completes
 * with rc = -EPIPE (nothing sent or received). A case with ch == NULL is
 * never ready. The same channel may appear in several cases; a SEND and a
 * RECV case of one select on the same rendezvous channel never pair with
 * each other. Cases other than the returned one have no effect.
 *
 * Blocks until a case completes, the token fires or the deadline passes; a
 * past deadline makes it non-blocking. Thread-safe.
 *
 * @param cases       the cases; only their rc fields are written.
 * @param n           how many, 1..#CPAT_SELECT_MAX.
 * @param tok         cancellation token, or NULL.
 * @param deadline_ns absolute deadline, or #CPAT_FOREVER.
 * @return the index of the completed case (>= 0; read its rc); -ECANCELED
 *         or -ETIMEDOUT (token) or -ETIMEDOUT (deadline) with no case
 *         completed; -EINVAL for NULL @p cases, @p n out of range, a case
 *         with a bad op or a NULL elem, a bad deadline, or when no case has
 *         a channel and there is neither token nor deadline (it could never
 *         return).
 */
CPAT_API int cpat_chan_select(struct cpat_select_case *cases, size_t n,
			      struct cpat_token *tok, int64_t deadline_ns);

/**
 * Closes the channel: later sends fail with -EPIPE; receivers drain what is
 * buffered, then get -EPIPE; every blocked thread wakes.
 *
 * Never blocks (short internal locks). Thread-safe; of concurrent closers
 * exactly one gets 0.
 * @return 0; -EPIPE if already closed (nothing changes); -EINVAL for NULL.
 */
CPAT_API int cpat_chan_close(struct cpat_chan *ch);

/**
 * How many elements are buffered: a snapshot, stale as soon as it is read
 * while other threads use the channel. Always 0 for capacity 0.
 * Never blocks; thread-safe. NULL gives 0.
 */
CPAT_API size_t cpat_chan_len(const struct cpat_chan *ch);

/** The capacity given at creation. Never blocks; thread-safe. NULL gives 0. */
CPAT_API size_t cpat_chan_cap(const struct cpat_chan *ch);

/** The element size given at creation. Never blocks; thread-safe. NULL gives 0.
 */
CPAT_API size_t cpat_chan_elem_size(const struct cpat_chan *ch);

/**
 * Whether cpat_chan_close() has been called: a snapshot.
 * Never blocks; thread-safe.
 * @return 1 if closed, 0 if open, -EINVAL for NULL.
 */
CPAT_API int cpat_chan_is_closed(const struct cpat_chan *ch);

/**
 * Gives a descriptor, the channel's *door* for one direction, that an event
 * loop (poll(), epoll, libuv's uv_poll, GLib's g_unix_fd_add(), ...) waits
 * on for the channel: readable when a cpat_chan_try_recv() (for
 * #CPAT_SELECT_RECV) or a cpat_chan_try_send() (for #CPAT_SELECT_SEND)
 * would likely succeed. An eventfd on Linux, a pipe elsewhere; made at the
 * first request, non-blocking and close-on-exec.
 *
 * **Readiness.** The door is level-triggered and reflects the channel:
 *  - RECV: readable while an element is buffered (capacity 0: while a
 *    sender is blocked waiting for a receiver, or a select waits with a
 *    send case on the channel), and for good once the channel is closed
 *    (try_recv then gives what is left, then -EPIPE for ever).
 *  - SEND: readable while there is room (capacity 0: while a receiver is
 *    blocked waiting, or a select with a receive case), and for good once
 *    closed (try_send gives -EPIPE).
 *
 * Readiness may be spurious: the door may be readable while try_recv
 * returns -EAGAIN (another consumer took the element first). The `try_`
 * call is the truth. A spurious readiness lasts only until the next
 * `try_` call in that direction that fails with -EAGAIN.
 *
 * **Who drains it.** The library: never read, write or close the
 * descriptor, or change its flags (only wait on it). Any operation that
 * finds the channel empty (for RECV; full for SEND) re-arms the door
 * before it returns: it leaves it readable only if the channel became
 * ready again meanwhile. So the loop to write, which never misses an
 * element and never spins on a readiness that is gone, is:
 * @code
 * int fd;
 * cpat_chan_fd(ch, CPAT_SELECT_RECV, &fd);   // once
 * struct pollfd p = {.fd = fd, .events = POLLIN};
 * for (;;) {
 *         poll(&p, 1, -1);                 // or epoll, uv_poll, ...
 *         int rc;
 *         while ((rc = cpat_chan_try_recv(ch, &item)) == 0)
 *                 handle(&item);
 *         if (rc == -EPIPE)
 *                 break;                   // closed and drained
 *         // -EAGAIN: empty, and the door is re-armed: wait again
 * }
 * @endcode
 * An element sent after the try_recv that returned -EAGAIN makes the door
 * readable again. A loop that takes fewer than all (one element per
 * wake-up, say) is also fine: the door stays readable while elements are
 * left. With edge-triggered notification (EPOLLET) the loop must go on
 * until -EAGAIN (or -EPIPE), as it does above.
 *
 * **Cost.** Nothing while no door was asked for. With a door, an operation
 * that makes the channel ready after it was found not ready writes to the
 * door once (one system call), and the operation that finds it empty
 * again reads it once; operations in between make no system call.
 *
 * **Thread safety.** Thread-safe; concurrent first calls make one door.
 * Any number of threads and loops may wait on the door; when several
 * consume, all of them wake, and the `try_` call decides.
 *
 * **Lifetime.** The door belongs to the channel: the same descriptor is
 * returned at every call, until cpat_chan_destroy() closes it (stop waiting
 * on it first: epoll_ctl(EPOLL_CTL_DEL), uv_poll_stop(), ...). Its number
 * may be reused by the process after that.
 *
 * **fork().** A child made by fork() inherits the descriptor (it is closed
 * on exec only), but it still belongs to the parent's channel, which the
 * child must not use (cpattern/common.h): the child must not wait on it,
 * read it or write it; closing its copy is harmless.
 *
 * Never blocks (takes the channel's short internal lock when the door is
 * made).
 * @param ch the channel.
 * @param op #CPAT_SELECT_RECV or #CPAT_SELECT_SEND.
 * @param fd receives the descriptor; -1 on error.
 * @return 0; -EINVAL for NULL @p ch or @p fd, or another @p op;
 *         -ENOMEM if allocation failed; -EMFILE or -ENFILE if the process
 *         or the system has no descriptor left.
 */
CPAT_API int cpat_chan_fd(struct cpat_chan *ch, int op, int *fd);

/**
 * Destroys the channel, calling the drop callback once for each element
 * still buffered (in FIFO order), and closes its doors (cpat_chan_fd()).
 *
 * No thread may use the channel during or after this call. Never blocks.
 * @param ch the channel, or NULL (no-op).
 */
CPAT_API void cpat_chan_destroy(struct cpat_chan *ch);

#ifdef __cplusplus
}
#endif

#endif /* CPATTERN_CHAN_H */
