/*
 * DESIGN: bounded MPMC channels.
 *
 * Layout. One block, cache-line aligned: line 0 holds what never changes
 * after creation (sizes, drop callback); line 1 the head stamp (receivers)
 * and the doors pointer (written once); line 2 the tail stamp (senders),
 * whose mark bit is the closed flag; line 3 the waiter lock, the waiter
 * counts and either the two rendezvous cells (capacity 0) or the two
 * waiter queues (buffered); line 4 a rendezvous's two waiter queues. The
 * slots follow (capacity > 0 only): each is a stamp followed by the
 * element bytes.
 *
 * Buffered fast path (capacity > 0), lock-free, after crossbeam's array
 * flavour (Vyukov's bounded queue). A stamp is lap | index, where index <
 * cap, mark_bit is the next power of two above cap, and one lap is
 * 2 * mark_bit. Slot i starts with stamp i. A sender at tail t whose slot
 * stamp equals t claims the position by CAS on tail, copies the element in
 * and publishes it by storing stamp t + 1 (release). A receiver at head h
 * whose slot stamp equals h + 1 claims it by CAS on head, copies out and
 * frees the slot for the next lap with stamp h + one_lap (release). The
 * stamp's acquire/release pairs order the payload copies. Batches claim k
 * consecutive ready slots with one CAS.
 *
 * Waiting. A thread that has to block puts a waiter record (struct waiter,
 * on its own stack) into the channel's send or receive queue, under the
 * channel's lock ch->lock; nwait[dir] mirrors the queue length and can be
 * read without the lock. Each blocked call has one parker (also on its
 * stack) shared by all its records: a 32-bit state word that is also the
 * futex word it sleeps on.
 *
 *   WAITING --claim (CAS)--> CLAIMED --exchange--> DONE      (hand-off)
 *                                              \-> NOTIFIED  (retry)
 *   WAITING --CAS--> ABORTED (deadline, or the owner itself for a retry)
 *   WAITING --fetch_or--> WAITING|CANCEL (the token fired: never claimable)
 *
 * Only the thread whose RMW moves the state out of claimable WAITING acts
 * on it, so a completing partner and a canceller can never both win: a
 * rendezvous is either done (element copied, call returns 0) or cancelled
 * (nothing copied). The token is watched before the first record is
 * enqueued, and each round starts with an exchange back to WAITING that
 * reads a CANCEL left by a fire in between, so once cpat_token_cancel()
 * has returned no partner can claim a record of that call.
 * The SLEEP bit is set by the waiter (CAS) just before it parks; the final
 * exchange returns it, so a wake-up system call is made only when the
 * waiter really sleeps, and nothing of the waiter's stack is touched after
 * that exchange (the futex wake itself is harmless on a dead address).
 *
 * Wake-up protocol, buffered channels. A completed send makes the tail CAS
 * (seq_cst) and then reads nwait[RECV] (seq_cst); a would-be sleeper
 * increments nwait[RECV] (seq_cst, under the lock) and then re-reads head
 * and tail (seq_cst) before it parks. In the single total order either the
 * sender sees the waiter or the waiter sees the element, so no wake-up is
 * lost and a sender makes no system call and takes no lock while nobody
 * waits. (The same seq_cst tail RMW and empty check are promised to the
 * library's other modules as CPAT__CHAN_SEND_IS_SEQ_CST, chan_internal.h.)
 * Symmetrically for senders waiting for room, on head. A notified
 * waiter is only told to retry; if it leaves without taking what woke it
 * (a select that completed another case, a timeout, a cancel), it passes
 * the notification on to another waiter when the channel is still ready.
 *
 * Capacity 0 (rendezvous): every operation takes ch->lock and looks for a
 * partner: the holder of the opposite cell first, then the opposite queue's
 * records; it completes the partner and copies the element directly from
 * or to it; otherwise it waits (spinning briefly first). A plain send or
 * receive of an element of at most CELL_MAX bytes waits in its side's
 * cell, in the lock's line, when the cell is free and no record of its
 * side is queued (block_cell()): then a hand-off between two running
 * threads moves that one line each way. Everything else (selects, larger
 * elements, a second waiter) enqueues a record and waits on its parker.
 * A plain operation's record (solo parker) is completed with one CAS
 * (q_complete_solo()), a select's with two (claim, then finish).
 *
 * Select locks the channels of its cases in address order (each once),
 * tries the cases in a random order, and otherwise enqueues one record per
 * case, all sharing its parker, so at most one case is ever completed. The
 * records are not in any queue while the selecting thread tries cases, so
 * its own SEND and RECV cases can never pair. Buffered cases are re-checked
 * after enqueueing (their fast paths take no lock); if one became ready the
 * selector aborts its own parker and retries. block_select() runs these
 * steps as rounds: sel_lock_sort() once, then per round an attempt under
 * the locks (sel_try_locked()), sel_enqueue() and sel_recheck(), the park,
 * and sel_dequeue().
 *
 * Doors (cpat_chan_fd()). A door is a descriptor (door.h) that an event
 * loop waits on, one per direction, made on first request and closed by
 * destroy. It is readable (sig[dir] = 1) from a post until a drain; both
 * happen under the doors' own lock (the innermost lock), so at every
 * release of it sig[dir] says exactly whether the door is readable, and
 * sig is set before the post and cleared after the drain, so a thread that
 * finds the door readable also finds sig set. Who does what:
 *
 *  - Posts come from the thread that made the channel ready in dir: the
 *    wake-up path above, through the same seq_cst load of nwait[dir] (a
 *    door sets the DOOR_WAITER bit there for good: it is counted as one
 *    more waiter on its side), then a seq_cst load of sig[dir]; only when
 *    that is 0 does it take the lock and post (one write system call).
 *    Rendezvous: q_push() of a record posts the other side's door. Close
 *    posts both.
 *  - Re-arms come from the thread that found the channel not ready in dir
 *    (buf_send, buf_recv and their batch forms returning -EAGAIN, a
 *    rendezvous try_case() finding no partner): if sig[dir] is 1, under
 *    the lock it drains, stores sig[dir] = 0 (seq_cst), looks again
 *    (door_ready(): seq_cst loads of tail and head, or of the other
 *    side's nwait) and posts again if the channel is ready by then. The
 *    user never reads the descriptor: the library re-arms it on its way
 *    out of the try_ call that found the channel empty (or full).
 *
 * No lost wake-up: a completion makes its seq_cst RMW (tail for a send,
 * head for a receive, nwait for a queued rendezvous record) and then reads
 * sig; a re-arm stores sig = 0 and then reads tail and head (or nwait). In
 * the single total order, either the completion reads 0 and posts (after
 * the re-arm, which holds the lock), or the re-arm's look sees the
 * completion and posts itself. A completion that reads 1 from a post not
 * yet undone leaves the door readable. Creation is the same pattern: the
 * creator sets DOOR_WAITER (seq_cst RMW) and then looks; a completion
 * that read nwait without the bit came before the look in that order, so
 * the look sees it. Close: its tail RMW, then nwait; a closed channel is
 * ready both ways for good, so nothing drains its doors again.
 *
 * No spinning on stale readiness: after a re-arm that found the channel
 * not ready, the door is readable only if something completed since (a
 * post): one wake-up per change at most, spurious when another consumer
 * took the element first. And since a re-arm runs inside the try_ call
 * that returns -EAGAIN, a loop "poll; try_ until -EAGAIN; poll" always
 * ends its round with the door re-armed.
 *
 * Cost: nothing on the fast paths while no door exists (the nwait[dir]
 * load they make anyway is 0; -EAGAIN paths add an acquire load of the
 * same word). With a door: a completion also reads sig[dir] (no system
 * call while the door is readable already); a transition from not ready
 * to ready after a re-arm costs one write, a re-arm one read.
 *
 * cpat__chan_nblocked() (the tests' hook) counts the queued records, once
 * per thread and direction, by walking the queue under the lock: a thread
 * is "blocked" from the moment a partner can find its record until the
 * record leaves the queue. The hot paths keep no counter for it.
 *
 * Lock order: the channel locks in address order, then (innermost) a
 * channel's doors lock; nothing else is held with them. Token watches run
 * without any channel lock.
 */
#include "internal.h"
#include "testhooks.h"

#include <sched.h>

#include "chan_internal.h"
#include "door.h"
#include "spin.h"

#include "cpattern/chan.h"

enum { DIR_SEND = 0, DIR_RECV = 1 };

enum {
	W_WAITING = 0,
	W_CLAIMED = 1,
	W_DONE = 2,
	W_NOTIFIED = 3,
	W_ABORTED = 4,
	W_FREE = 5, /* a rendezvous cell nobody holds */
	W_VALUE = 0xff,
	W_SLEEP = 0x100,  /* the owner sleeps (or is about to) */
	W_CANCEL = 0x200, /* the token fired while WAITING */
};

/* A cell's generation, in a state word's top half (cells only). */
#define W_GEN 0xffff0000u

/* The largest element a rendezvous cell carries. */
#define CELL_MAX 8

/*
 * A cell's holder polls its state every CELL_POLL_STRIDE pauses of its
 * spin, not after every one: the line it polls is the lock's, which a
 * partner takes, writes and releases per hand-off, and each poll takes the
 * line away from it. The spin lasts as many pauses as a parker's, with
 * fewer polls. Measured on the 2-vCPU VM (bench/RESULTS.md): polling every
 * 4th pause made a rendezvous 15-20% cheaper than every pause when a line
 * transfer costs 220 ns, and 35-45% cheaper when it costs 32 ns. A parker
 * (a line of the waiter's own) keeps polling after every pause: fewer
 * polls there made blocked senders of a channel of capacity 1 slower.
 */
#ifndef CELL_POLL_STRIDE
#define CELL_POLL_STRIDE 4
#endif

#define INLINE_MAX 32
#define SEND_INLINE_MAX 16

/*
 * A door (cpat_chan_fd()) counts in nwait[dir] as a waiter for good: this
 * bit, set once and never cleared, so that whoever reads nwait[dir] to wake
 * waiters also sees the door.
 */
#define DOOR_WAITER ((uint32_t)1 << 31)

struct parker {
	_Atomic uint32_t state;
	/* One record only (a plain send or receive, not a select): a
	 * partner may write the fields below before its one CAS to DONE. */
	bool solo;
	int fired;             /* case completed by a partner (DONE) */
	struct cpat_chan *nch; /* who notified us (NOTIFIED) */
	int ndir;
	struct waiter *taken; /* the record the partner dequeued */
	/* A rendezvous receiver's element, when it fits: written by the
	 * partner on the line it writes anyway (the state's). */
	unsigned char buf[INLINE_MAX];
};

struct waiter {
	struct waiter *next, *prev;
	struct parker *p;
	void *elem;
	int idx;
	bool queued;
	bool counted; /* first record of its (channel, op): counted by
		       * cpat__chan_nblocked() */
	/* A rendezvous sender's element, when it fits: copied in at enqueue
	 * so that the partner reads it from the line it reads anyway (the
	 * record's), not from a line of the sender's buffer. */
	unsigned char val[SEND_INLINE_MAX];
};

struct waitq {
	struct waiter *first, *last;
};

/*
 * A rendezvous cell: the waiting place of one plain send or receive (one
 * per direction), in the channel's lock line. state is a parker state
 * word (W_*, with the generation of the holder in W_GEN), W_FREE while
 * nobody holds it; val the element (a sender's, or the one handed to a
 * receiver).
 */
struct cell {
	_Atomic uint32_t state;
	uint32_t gen; /* ch->lock held: the last generation handed out */
	unsigned char val[CELL_MAX];
};

/*
 * A channel's doors, made at the first cpat_chan_fd(): one per direction,
 * each opened at its first request. lock (innermost: taken under ch->lock
 * sometimes, never the other way round) serialises every post and drain
 * of both, so that at each release of the lock sig[dir] is 1 exactly when
 * door dir is readable.
 */
struct chan_doors {
	_Atomic uint32_t lock;
	_Atomic uint32_t sig[2];
	struct cpat__door d[2];
};

struct cpat_chan {
	/* Line 0: constant after creation. */
	size_t elem_size;
	size_t cap;
	size_t slot_size;
	size_t mark_bit;
	size_t one_lap;
	cpat_chan_drop_fn drop;
	void *drop_arg;
	/* A copy of tail's mark bit that pollers can read without pulling
	 * the senders' line: written once, by close. */
	_Atomic int closed;

	_Alignas(CPAT_CACHELINE) _Atomic size_t head;
	/* Read by door posts and re-arms only, written once. */
	_Atomic(struct chan_doors *) doors; /* NULL until cpat_chan_fd() */
	_Alignas(CPAT_CACHELINE) _Atomic size_t tail;

	_Alignas(CPAT_CACHELINE) _Atomic uint32_t lock;
	/* Waiting records and cells, | DOOR_WAITER. */
	_Atomic uint32_t nwait[2];
	/* Capacity 0: the cells. Buffered: the waiter queues, in the lock's
	 * line (see waitqs()). */
	union {
		struct cell cell[2];
		struct waitq q[2];
	} u;

	/* Capacity 0: the waiter queues, behind the cells. */
	_Alignas(CPAT_CACHELINE) struct waitq q0[2];
};

_Static_assert(sizeof(struct cpat_chan) <= 5 * CPAT_CACHELINE,
	       "channel header must fit in five cache lines");
_Static_assert(
	offsetof(struct cpat_chan, u) + sizeof(((struct cpat_chan *)0)->u) <=
		offsetof(struct cpat_chan, lock) + CPAT_CACHELINE,
	"the rendezvous cells (or the queues) must share the lock's line");

/* A channel's two waiter queues: in the lock's line for a buffered
 * channel, whose blocked calls take the lock and the queue together; on
 * the next line for a rendezvous, whose lock line holds the cells. */
static inline struct waitq *waitqs(struct cpat_chan *ch)
{
	return ch->cap > 0 ? ch->u.q : ch->q0;
}

struct slot {
	_Atomic size_t stamp;
	unsigned char data[];
};

static inline struct slot *slot_at(const struct cpat_chan *ch, size_t stamp)
{
	size_t idx = stamp & (ch->mark_bit - 1);
	return (struct slot *)((unsigned char *)(ch + 1) + idx * ch->slot_size);
}

/* The stamp after s (s without the mark bit). */
static inline size_t stamp_next(const struct cpat_chan *ch, size_t s)
{
	size_t idx = s & (ch->mark_bit - 1);
	size_t wrap = ch->cap;
	if (CPAT_PLANTED(CPAT_BUG_CHAN_RING_OFF_BY_ONE) && wrap > 1)
		wrap--; /* planted: wrap one slot early */
	if (idx + 1 < wrap)
		return s + 1;
	return (s & ~(ch->one_lap - 1)) + ch->one_lap;
}

/* ---- small helpers ---------------------------------------------------- */

/* memcpy with the common element sizes inlined. */
static inline void copy_elem(void *dst, const void *src, size_t n)
{
	switch (n) {
	case 4:
		memcpy(dst, src, 4);
		break;
	case 8:
		memcpy(dst, src, 8);
		break;
	case 16:
		memcpy(dst, src, 16);
		break;
	default:
		memcpy(dst, src, n);
	}
}

/* copy_elem() for a cell's element (at most CELL_MAX bytes). */
static inline void cell_copy(void *dst, const void *src, size_t n)
{
	if (n == 8)
		memcpy(dst, src, 8);
	else if (n == 4)
		memcpy(dst, src, 4);
	else
		memcpy(dst, src, n);
}

/* A per-thread xorshift64* generator for select's random order. */
static _Thread_local uint64_t rng_state;

static uint32_t rng_next(void)
{
	uint64_t x = rng_state;
	if (CPAT_UNLIKELY(x == 0)) {
		x = (uint64_t)(uintptr_t)&rng_state ^
		    (uint64_t)cpat_now_ns() * 0x9E3779B97F4A7C15ull;
		if (x == 0)
			x = 1;
	}
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng_state = x;
	return (uint32_t)((x * 0x2545F4914F6CDD1Dull) >> 32);
}

static inline bool deadline_passed(int64_t deadline)
{
	return deadline != CPAT_FOREVER && cpat_now_ns() >= deadline;
}

/* ---- doors (defined with the readiness checks, below) --------------- */

static void door_post(struct cpat_chan *ch, int dir);
static void door_rearm(struct cpat_chan *ch, int dir);

/*
 * An operation in direction dir found the channel not ready (full, empty,
 * no partner): if that side has a door, re-arm it. The acquire pairs with
 * the door's creation (the doors block is published before the bit).
 */
static inline void door_check(struct cpat_chan *ch, int dir)
{
	if (CPAT_UNLIKELY(atomic_load_explicit(&ch->nwait[dir],
					       memory_order_acquire) &
			  DOOR_WAITER))
		door_rearm(ch, dir);
}

/* ---- waiter queues (ch->lock held) ----------------------------------- */

/*
 * ch->lock held: a waiter of direction dir (a queued record or a cell's
 * holder) can now be found. Counts it in nwait[dir] (the seq_cst RMW of
 * the wake-up and door protocols) and, on a rendezvous, where a waiting
 * partner is what makes the other side ready, posts that side's door.
 */
static void waiter_arrived(struct cpat_chan *ch, int dir)
{
	atomic_fetch_add_explicit(&ch->nwait[dir], 1, memory_order_seq_cst);
	if (ch->cap == 0 &&
	    (atomic_load_explicit(&ch->nwait[dir ^ 1], memory_order_seq_cst) &
	     DOOR_WAITER))
		door_post(ch, dir ^ 1);
}

static void q_push(struct cpat_chan *ch, int dir, struct waiter *w)
{
	struct waitq *q = &waitqs(ch)[dir];
	w->next = NULL;
	w->prev = q->last;
	if (q->last)
		q->last->next = w;
	else
		q->first = w;
	q->last = w;
	w->queued = true;
	waiter_arrived(ch, dir);
}

/* Takes w out of q[dir] without writing to w itself. */
static void q_unlink(struct cpat_chan *ch, int dir, struct waiter *w)
{
	struct waitq *q = &waitqs(ch)[dir];
	if (w->prev)
		w->prev->next = w->next;
	else
		q->first = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		q->last = w->prev;
	atomic_fetch_sub_explicit(&ch->nwait[dir], 1, memory_order_relaxed);
}

static void q_remove(struct cpat_chan *ch, int dir, struct waiter *w)
{
	q_unlink(ch, dir, w);
	w->next = w->prev = NULL;
	w->queued = false;
}

/* Moves p from WAITING to CLAIMED; false if it is no longer waiting. */
static bool claim(struct parker *p)
{
	uint32_t s = atomic_load_explicit(&p->state, memory_order_relaxed);
	while ((s & (W_VALUE | W_CANCEL)) == W_WAITING) {
		if (atomic_compare_exchange_weak_explicit(
			    &p->state, &s, W_CLAIMED | (s & W_SLEEP),
			    memory_order_acquire, memory_order_relaxed))
			return true;
	}
	return false;
}

/*
 * Publishes the final state of a claimed parker. Returns the futex word to
 * wake (after unlocking) if the owner sleeps, else NULL. p must not be
 * touched after this.
 */
static _Atomic uint32_t *finish(struct parker *p, uint32_t final)
{
	uint32_t old = atomic_exchange_explicit(&p->state, final,
						memory_order_acq_rel);
	return (old & W_SLEEP) ? &p->state : NULL;
}

/*
 * Moves a state word (a solo parker's or a cell's) from claimable WAITING
 * (no W_CANCEL) straight to final, keeping a cell's generation. Returns
 * the word to wake (after unlocking) if its owner sleeps, else NULL, in
 * *wake; false, writing nothing, if it was not waiting.
 */
static bool settle(_Atomic uint32_t *word, uint32_t final,
		   _Atomic uint32_t **wake)
{
	uint32_t st = atomic_load_explicit(word, memory_order_relaxed);
	while ((st & (W_VALUE | W_CANCEL)) == W_WAITING) {
		if (atomic_compare_exchange_weak_explicit(
			    word, &st, (st & W_GEN) | final,
			    memory_order_acq_rel, memory_order_relaxed)) {
			*wake = (st & W_SLEEP) ? word : NULL;
			return true;
		}
	}
	return false;
}

/*
 * Pops the first claimable waiter of q[dir]; stale records are dropped.
 * The claimed record itself is not written (its owner polls nearby, and
 * learns from p->taken that it is out of the queue).
 */
static struct waiter *q_claim(struct cpat_chan *ch, int dir,
			      const struct parker *self)
{
	struct waiter *w = waitqs(ch)[dir].first;
	while (w) {
		struct waiter *next = w->next;
		if (w->p != self) {
			if (claim(w->p)) {
				q_unlink(ch, dir, w);
				w->p->taken = w;
				return w;
			}
			q_remove(ch, dir, w);
		}
		w = next;
	}
	return NULL;
}

/* Wakes up to n waiters of q[dir] with NOTIFIED (they retry). */
static void notify(struct cpat_chan *ch, int dir, size_t n)
{
	_Atomic uint32_t *wake[8];
	size_t nw = 0;
	cpat__lock(&ch->lock);
	while (n-- > 0) {
		struct waiter *w = q_claim(ch, dir, NULL);
		if (!w)
			break;
		w->p->nch = ch;
		w->p->ndir = dir;
		_Atomic uint32_t *f = finish(w->p, W_NOTIFIED);
		if (f) {
			if (nw < 8)
				wake[nw++] = f;
			else
				cpat__unpark_one(f);
		}
	}
	cpat__unlock(&ch->lock);
	for (size_t i = 0; i < nw; i++)
		cpat__unpark_one(wake[i]);
}

/*
 * The waiters of direction dir, w their count as just read (non-zero):
 * posts the door, if there is one, and notifies up to n queued waiters.
 * Out of line: the fast paths only load nwait[dir] and test it.
 */
static __attribute__((noinline)) void wake_side(struct cpat_chan *ch, int dir,
						uint32_t w, size_t n)
{
	if (w & DOOR_WAITER)
		door_post(ch, dir);
	if (w & ~DOOR_WAITER)
		notify(ch, dir, n);
}

static inline void wake_receivers(struct cpat_chan *ch, size_t n)
{
	uint32_t w = atomic_load_explicit(&ch->nwait[DIR_RECV],
					  memory_order_seq_cst);
	if (w)
		wake_side(ch, DIR_RECV, w, n);
}

static inline void wake_senders(struct cpat_chan *ch, size_t n)
{
	uint32_t w = atomic_load_explicit(&ch->nwait[DIR_SEND],
					  memory_order_seq_cst);
	if (w)
		wake_side(ch, DIR_SEND, w, n);
}

/* ---- buffered fast path ---------------------------------------------- */

/* 0, -EAGAIN (full) or -EPIPE. Does not wake receivers. */
static int buf_send(struct cpat_chan *ch, const void *elem)
{
	struct cpat__backoff b = {0};
	size_t tail = atomic_load_explicit(&ch->tail, memory_order_relaxed);
	for (;;) {
		if (CPAT_UNLIKELY(tail & ch->mark_bit))
			return -EPIPE;
		struct slot *s = slot_at(ch, tail);
		size_t stamp =
			atomic_load_explicit(&s->stamp, memory_order_acquire);
		if (stamp == tail) {
			size_t nt = stamp_next(ch, tail);
			if (atomic_compare_exchange_weak_explicit(
				    &ch->tail, &tail, nt, memory_order_seq_cst,
				    memory_order_relaxed)) {
				copy_elem(s->data, elem, ch->elem_size);
				atomic_store_explicit(&s->stamp, tail + 1,
						      memory_order_release);
				return 0;
			}
			cpat__backoff_spin(&b);
			continue;
		}
		if (stamp + ch->one_lap == tail + 1) {
			size_t head = atomic_load_explicit(
				&ch->head, memory_order_seq_cst);
			if (head + ch->one_lap == tail) {
				door_check(ch, DIR_SEND);
				return -EAGAIN;
			}
			cpat__backoff_spin(&b);
		} else {
			cpat__backoff_snooze(&b);
		}
		tail = atomic_load_explicit(&ch->tail, memory_order_relaxed);
	}
}

/* 0, -EAGAIN (empty) or -EPIPE (closed and drained). Wakes nobody. */
static int buf_recv(struct cpat_chan *ch, void *elem)
{
	struct cpat__backoff b = {0};
	size_t head = atomic_load_explicit(&ch->head, memory_order_relaxed);
	for (;;) {
		struct slot *s = slot_at(ch, head);
		size_t stamp =
			atomic_load_explicit(&s->stamp, memory_order_acquire);
		if (stamp == head + 1) {
			size_t nh = stamp_next(ch, head);
			if (atomic_compare_exchange_weak_explicit(
				    &ch->head, &head, nh, memory_order_seq_cst,
				    memory_order_relaxed)) {
				copy_elem(elem, s->data, ch->elem_size);
				atomic_store_explicit(&s->stamp,
						      head + ch->one_lap,
						      memory_order_release);
				return 0;
			}
			cpat__backoff_spin(&b);
			continue;
		}
		if (stamp == head) {
			size_t tail = atomic_load_explicit(
				&ch->tail, memory_order_seq_cst);
			if ((tail & ~ch->mark_bit) == head) {
				if (tail & ch->mark_bit)
					return -EPIPE;
				door_check(ch, DIR_RECV);
				return -EAGAIN;
			}
			/* A sender claimed the slot and is still copying. */
			cpat__backoff_snooze(&b);
		} else {
			cpat__backoff_snooze(&b);
		}
		head = atomic_load_explicit(&ch->head, memory_order_relaxed);
	}
}

/* Sends up to n elements at once; returns how many, *err says why not more. */
static size_t buf_send_batch(struct cpat_chan *ch, const unsigned char *src,
			     size_t n, int *err)
{
	struct cpat__backoff b = {0};
	size_t es = ch->elem_size;
	size_t tail = atomic_load_explicit(&ch->tail, memory_order_relaxed);
	for (;;) {
		if (CPAT_UNLIKELY(tail & ch->mark_bit)) {
			*err = -EPIPE;
			return 0;
		}
		size_t pos = tail, k = 0;
		while (k < n &&
		       atomic_load_explicit(&slot_at(ch, pos)->stamp,
					    memory_order_acquire) == pos) {
			k++;
			pos = stamp_next(ch, pos);
		}
		if (k > 0) {
			if (atomic_compare_exchange_weak_explicit(
				    &ch->tail, &tail, pos, memory_order_seq_cst,
				    memory_order_relaxed)) {
				pos = tail;
				for (size_t i = 0; i < k; i++) {
					struct slot *s = slot_at(ch, pos);
					copy_elem(s->data, src + i * es, es);
					atomic_store_explicit(
						&s->stamp, pos + 1,
						memory_order_release);
					pos = stamp_next(ch, pos);
				}
				*err = 0;
				return k;
			}
			cpat__backoff_spin(&b);
			continue;
		}
		size_t stamp = atomic_load_explicit(&slot_at(ch, tail)->stamp,
						    memory_order_acquire);
		if (stamp + ch->one_lap == tail + 1) {
			size_t head = atomic_load_explicit(
				&ch->head, memory_order_seq_cst);
			if (head + ch->one_lap == tail) {
				door_check(ch, DIR_SEND);
				*err = -EAGAIN;
				return 0;
			}
			cpat__backoff_spin(&b);
		} else {
			cpat__backoff_snooze(&b);
		}
		tail = atomic_load_explicit(&ch->tail, memory_order_relaxed);
	}
}

/* Receives up to n elements at once; returns how many (0: see *err). */
static size_t buf_recv_batch(struct cpat_chan *ch, unsigned char *dst, size_t n,
			     int *err)
{
	struct cpat__backoff b = {0};
	size_t es = ch->elem_size;
	size_t head = atomic_load_explicit(&ch->head, memory_order_relaxed);
	for (;;) {
		size_t pos = head, k = 0;
		while (k < n &&
		       atomic_load_explicit(&slot_at(ch, pos)->stamp,
					    memory_order_acquire) == pos + 1) {
			k++;
			pos = stamp_next(ch, pos);
		}
		if (k > 0) {
			if (atomic_compare_exchange_weak_explicit(
				    &ch->head, &head, pos, memory_order_seq_cst,
				    memory_order_relaxed)) {
				pos = head;
				for (size_t i = 0; i < k; i++) {
					struct slot *s = slot_at(ch, pos);
					copy_elem(dst + i * es, s->data, es);
					atomic_store_explicit(
						&s->stamp, pos + ch->one_lap,
						memory_order_release);
					pos = stamp_next(ch, pos);
				}
				*err = 0;
				return k;
			}
			cpat__backoff_spin(&b);
			continue;
		}
		size_t stamp = atomic_load_explicit(&slot_at(ch, head)->stamp,
						    memory_order_acquire);
		if (stamp == head) {
			size_t tail = atomic_load_explicit(
				&ch->tail, memory_order_seq_cst);
			if ((tail & ~ch->mark_bit) == head) {
				*err = (tail & ch->mark_bit) ? -EPIPE : -EAGAIN;
				if (*err == -EAGAIN)
					door_check(ch, DIR_RECV);
				return 0;
			}
		}
		cpat__backoff_snooze(&b);
		head = atomic_load_explicit(&ch->head, memory_order_relaxed);
	}
}

/* Whether a buffered op in direction dir could make progress now. */
static bool buf_ready(struct cpat_chan *ch, int dir)
{
	size_t tail = atomic_load_explicit(&ch->tail, memory_order_seq_cst);
	size_t head = atomic_load_explicit(&ch->head, memory_order_seq_cst);
	if (tail & ch->mark_bit)
		return true;
	if (dir == DIR_RECV)
		return tail != head;
	return head + ch->one_lap != tail;
}

static inline bool is_closed(const struct cpat_chan *ch)
{
	return (atomic_load_explicit(&ch->tail, memory_order_seq_cst) &
		ch->mark_bit) != 0;
}

/* ---- doors ------------------------------------------------------------ */

/*
 * Whether door dir should be readable: buffered, what buf_ready() says;
 * rendezvous, a partner is queued on the other side; either, closed. Every
 * load is seq_cst (the protocol in the design note needs it).
 */
static bool door_ready(struct cpat_chan *ch, int dir)
{
	if (ch->cap > 0)
		return buf_ready(ch, dir);
	return (atomic_load_explicit(&ch->nwait[dir ^ 1],
				     memory_order_seq_cst) &
		~DOOR_WAITER) != 0 ||
	       is_closed(ch);
}

/* Makes door dir readable: the channel became ready in direction dir (or
 * closed). A system call only when the door was not readable. */
static void door_post(struct cpat_chan *ch, int dir)
{
	struct chan_doors *ds =
		atomic_load_explicit(&ch->doors, memory_order_acquire);
	if (atomic_load_explicit(&ds->sig[dir], memory_order_seq_cst))
		return;
	cpat__lock(&ds->lock);
	if (!atomic_load_explicit(&ds->sig[dir], memory_order_relaxed)) {
		/* sig before the post: whoever sees the door readable sees
		 * sig set, and re-arms it. */
		atomic_store_explicit(&ds->sig[dir], 1, memory_order_seq_cst);
		cpat__door_post(&ds->d[dir]);
	}
	cpat__unlock(&ds->lock);
}

/* Re-arms door dir: an operation found the channel not ready that way.
 * Drains the door unless the channel is ready again by then. */
static void door_rearm(struct cpat_chan *ch, int dir)
{
	struct chan_doors *ds =
		atomic_load_explicit(&ch->doors, memory_order_acquire);
	if (!atomic_load_explicit(&ds->sig[dir], memory_order_seq_cst))
		return;
	cpat__lock(&ds->lock);
	if (atomic_load_explicit(&ds->sig[dir], memory_order_relaxed)) {
		cpat__door_drain(&ds->d[dir]);
		atomic_store_explicit(&ds->sig[dir], 0, memory_order_seq_cst);
		if (door_ready(ch, dir)) {
			atomic_store_explicit(&ds->sig[dir], 1,
					      memory_order_seq_cst);
			cpat__door_post(&ds->d[dir]);
		}
	}
	cpat__unlock(&ds->lock);
}

/* ---- one attempt at a case ------------------------------------------- */

/*
 * Rendezvous, ch->lock held: completes the holder of cell[other] if it is
 * waiting, with one CAS from WAITING to DONE. The element moves first:
 * into the cell (a receiver reads it after acquiring DONE) or out of it
 * into a local copy handed to elem only if the CAS wins. A holder that
 * timed out or was cancelled makes the CAS fail, and it frees its cell
 * itself. True if completed, *wake set to the word to wake (after the
 * lock is released) if the holder sleeps.
 */
static bool cell_complete(struct cpat_chan *ch, int other, void *elem,
			  _Atomic uint32_t **wake)
{
	struct cell *c = &ch->u.cell[other];
	uint32_t st = atomic_load_explicit(&c->state, memory_order_relaxed);
	if ((st & (W_VALUE | W_CANCEL)) != W_WAITING)
		return false; /* nothing to copy for */
	unsigned char tmp[CELL_MAX];
	if (other == DIR_SEND)
		cell_copy(tmp, c->val, ch->elem_size);
	else
		cell_copy(c->val, elem, ch->elem_size);
	if (!settle(&c->state, W_DONE, wake))
		return false;
	atomic_fetch_sub_explicit(&ch->nwait[other], 1, memory_order_relaxed);
	if (other == DIR_SEND)
		cell_copy(elem, tmp, ch->elem_size);
	return true;
}

/*
 * Rendezvous, ch->lock held: if the first record of q[other] belongs to a
 * solo parker (a plain send or receive, not a select) and the element
 * fits inline, completes it with one CAS, WAITING to DONE, where the
 * general path makes two (claim, then finish). Only the element moves
 * before the CAS: into the waiting receiver's parker buffer, which it
 * reads only after acquiring DONE, or out of the waiting sender's record
 * into a local copy, handed to elem only if the CAS wins (a failed
 * attempt writes nothing the caller sees). The owner cannot leave while
 * its record is queued (taking it out needs the lock), and the record is
 * unlinked before the CAS, after which the owner may return at once. So
 * the line the owner polls is taken from it once per hand-off. A CAS that
 * fails (the owner timed out or was cancelled) drops the record, as
 * q_claim() does, and the next is tried. Returns the record, *wake set as
 * finish() sets it; NULL when there is none or the first claimable one is
 * not for this path (q_claim() then does it).
 */
static struct waiter *q_complete_solo(struct cpat_chan *ch, int other,
				      void *elem, _Atomic uint32_t **wake)
{
	struct waiter *w;
	unsigned char tmp[SEND_INLINE_MAX];
	if (ch->elem_size > (other == DIR_SEND ? SEND_INLINE_MAX : INLINE_MAX))
		return NULL;
	while ((w = ch->q0[other].first) != NULL && w->p->solo) {
		struct parker *p = w->p;
		if (other == DIR_SEND)
			copy_elem(tmp, w->val, ch->elem_size);
		else
			copy_elem(p->buf, elem, ch->elem_size);
		/* Out of the queue before the CAS: once DONE is visible the
		 * owner may return, and its record with it. */
		q_unlink(ch, other, w);
		if (settle(&p->state, W_DONE, wake)) {
			if (other == DIR_SEND)
				cell_copy(elem, tmp, ch->elem_size);
			return w;
		}
		/* Stale (the owner gave up): as q_remove(), which the owner
		 * reads under the lock. */
		w->next = w->prev = NULL;
		w->queued = false;
	}
	return NULL;
}

/*
 * Tries to complete op on ch without blocking. For capacity 0, ch->lock
 * must be held when locked is true (else it is taken here). Returns 0,
 * -EPIPE (closed: the case is ready) or -EAGAIN. *wake receives a futex
 * word to wake once every lock is released; *notify_dir the direction of
 * buffered waiters to notify (-1 for none).
 */
static int try_case(struct cpat_chan *ch, int dir, void *elem,
		    const struct parker *self, bool locked,
		    _Atomic uint32_t **wake, int *notify_dir)
{
	if (ch->cap > 0) {
		int rc = dir == DIR_SEND ? buf_send(ch, elem)
					 : buf_recv(ch, elem);
		if (rc == 0)
			*notify_dir = dir == DIR_SEND ? DIR_RECV : DIR_SEND;
		return rc;
	}
	int other = dir == DIR_SEND ? DIR_RECV : DIR_SEND;
	if (!locked) {
		if (dir == DIR_SEND && is_closed(ch))
			return -EPIPE;
		if ((atomic_load_explicit(&ch->nwait[other],
					  memory_order_seq_cst) &
		     ~DOOR_WAITER) == 0) {
			if (is_closed(ch))
				return -EPIPE;
			door_check(ch, dir);
			return -EAGAIN;
		}
		cpat__lock(&ch->lock);
	}
	int rc;
	struct waiter *w;
	if (dir == DIR_SEND && is_closed(ch)) {
		rc = -EPIPE;
	} else if (ch->elem_size <= CELL_MAX &&
		   cell_complete(ch, other, elem, wake)) {
		rc = 0;
	} else if ((w = q_complete_solo(ch, other, elem, wake)) != NULL) {
		rc = 0;
	} else {
		w = q_claim(ch, other, self);
		if (w) {
			if (dir == DIR_RECV)
				copy_elem(elem,
					  ch->elem_size <= SEND_INLINE_MAX
						  ? w->val
						  : w->elem,
					  ch->elem_size);
			else if (ch->elem_size <= INLINE_MAX)
				copy_elem(w->p->buf, elem, ch->elem_size);
			else
				copy_elem(w->elem, elem, ch->elem_size);
			w->p->fired = w->idx;
			*wake = finish(w->p, W_DONE);
			rc = 0;
		} else {
			rc = is_closed(ch) ? -EPIPE : -EAGAIN;
		}
	}
	if (rc == -EAGAIN)
		door_check(ch, dir);
	if (!locked)
		cpat__unlock(&ch->lock);
	return rc;
}

/* ---- blocking ---------------------------------------------------------- */

/*
 * The token fired: mark the parker (an RMW, so that the owner's exchange
 * back to WAITING at the start of a round reads it) and wake the owner. A
 * parker already claimed is left to complete.
 */
static void watch_fired(struct cpat__watch *w, int cause)
{
	struct parker *p = w->arg;
	(void)cause;
	uint32_t old = atomic_fetch_or_explicit(&p->state, W_CANCEL,
						memory_order_acq_rel);
	if ((old & W_VALUE) == W_WAITING && (old & W_SLEEP) &&
	    !CPAT_PLANTED(CPAT_BUG_CHAN_CANCEL_WAKEUP))
		cpat__unpark_one(&p->state);
}

/*
 * Waits until the state word (a parker's or a cell's) leaves
 * WAITING/CLAIMED, spinning first when spin is set (polling every stride
 * pauses). On the deadline the owner aborts itself (*timed_out); a claimed
 * parker is always waited for.
 */
static uint32_t park_wait(_Atomic uint32_t *word, int64_t deadline, bool spin,
			  unsigned stride, bool *timed_out)
{
	uint32_t s;
	if (spin) {
		struct cpat__spinwait w = {0, 0};
		bool more = true;
		unsigned k = 1; /* pauses left before the next poll */
		do {
			if (--k != 0)
				continue;
			k = stride;
			s = atomic_load_explicit(word, memory_order_acquire);
			if ((s & W_VALUE) >= W_DONE) {
				cpat__spin_end(&w, true);
				return s & W_VALUE;
			}
			if (s & W_CANCEL)
				break;
		} while ((more = cpat__spin_more(&w)));
		if (!more)
			cpat__spin_end(&w, false);
	}
	for (;;) {
		s = atomic_load_explicit(word, memory_order_acquire);
		uint32_t v = s & W_VALUE;
		if (v >= W_DONE)
			return v;
		if (v == W_WAITING && (s & W_CANCEL))
			return W_ABORTED;
		if (v == W_WAITING && deadline_passed(deadline)) {
			if (atomic_compare_exchange_strong_explicit(
				    word, &s, (s & W_GEN) | W_ABORTED,
				    memory_order_acq_rel,
				    memory_order_acquire)) {
				*timed_out = true;
				return W_ABORTED;
			}
			continue;
		}
		if (!(s & W_SLEEP)) {
			if (!atomic_compare_exchange_strong_explicit(
				    word, &s, s | W_SLEEP, memory_order_acq_rel,
				    memory_order_acquire))
				continue;
			s |= W_SLEEP;
		}
		cpat__park(word, s, v == W_WAITING ? deadline : CPAT_FOREVER);
	}
}

static inline int case_dir(int op)
{
	return op == CPAT_SELECT_SEND ? DIR_SEND : DIR_RECV;
}

/* If a buffered channel that notified us is still ready, pass it on. */
static void pass_on(struct cpat_chan *ch, int dir)
{
	if (ch && ch->cap > 0 && buf_ready(ch, dir))
		notify(ch, dir, 1);
}

static void lock_all(struct cpat_chan **locks, size_t n)
{
	for (size_t i = 0; i < n; i++)
		cpat__lock(&locks[i]->lock);
}

static void unlock_all(struct cpat_chan **locks, size_t n)
{
	for (size_t i = n; i-- > 0;)
		cpat__unlock(&locks[i]->lock);
}

/* Whether case i is the first of cases with its (channel, op). */
static bool first_of_kind(const struct cpat_select_case *cs, size_t i)
{
	for (size_t j = 0; j < i; j++)
		if (cs[j].ch == cs[i].ch && cs[j].op == cs[i].op)
			return false;
	return true;
}

/* Puts order[0..n) in a uniformly random order (Fisher-Yates). */
static inline void shuffle(uint8_t *order, size_t n)
{
	for (size_t i = n; i > 1; i--) {
		size_t j = rng_next() % i;
		uint8_t t = order[i - 1];
		order[i - 1] = order[j];
		order[j] = t;
	}
}

/*
 * After a case on ch completed, with no lock held: wakes the rendezvous
 * partner it completed (wake, or NULL) and the buffered waiters of
 * direction ndir (-1: none) that the completion made room or an element
 * for.
 */
static inline void wake_after(struct cpat_chan *ch, _Atomic uint32_t *wake,
			      int ndir)
{
	if (wake)
		cpat__unpark_one(wake);
	if (ndir == DIR_RECV)
		wake_receivers(ch, 1);
	else if (ndir == DIR_SEND)
		wake_senders(ch, 1);
}

/*
 * A blocking select, across its rounds. ws[i] is case i's record, and
 * every record shares the parker pk. order lists the cases that have a
 * channel (nen of them), shuffled at the start of each round; locks lists
 * their channels, each once, in address order (nlocks of them): the order
 * the locks are taken in.
 */
struct sel {
	struct cpat_select_case *cs;
	struct waiter *ws;
	struct parker *pk;
	size_t nen, nlocks;
	struct cpat_chan *locks[CPAT_SELECT_MAX];
	uint8_t order[CPAT_SELECT_MAX];
};

_Static_assert(CPAT_SELECT_MAX <= UINT8_MAX + 1,
	       "select's order holds case indices in uint8_t");

/*
 * Lock-sort: fills order and locks from the n cases (an insertion sort:
 * n is small) and readies each case's record.
 */
static void sel_lock_sort(struct sel *s, size_t n)
{
	s->nen = 0;
	s->nlocks = 0;
	for (size_t i = 0; i < n; i++) {
		struct cpat_chan *ch = s->cs[i].ch;
		if (!ch)
			continue;
		s->order[s->nen++] = (uint8_t)i;
		s->ws[i].counted = first_of_kind(s->cs, i);
		s->ws[i].queued = false;
		size_t j = 0;
		while (j < s->nlocks && s->locks[j] < ch)
			j++;
		if (j < s->nlocks && s->locks[j] == ch)
			continue;
		memmove(&s->locks[j + 1], &s->locks[j],
			(s->nlocks - j) * sizeof s->locks[0]);
		s->locks[j] = ch;
		s->nlocks++;
	}
}

/*
 * With every lock held: attempts the cases in order. Returns the index of
 * the first that completed, its rc set (0, or -EPIPE: closed), with *wake
 * and *ndir for wake_after() once the locks are released; or -EAGAIN.
 */
static int sel_try_locked(struct sel *s, _Atomic uint32_t **wake, int *ndir)
{
	for (size_t k = 0; k < s->nen; k++) {
		size_t i = s->order[k];
		struct cpat_select_case *c = &s->cs[i];
		int rc = try_case(c->ch, case_dir(c->op), c->elem, s->pk, true,
				  wake, ndir);
		if (rc != -EAGAIN) {
			c->rc = rc;
			return (int)i;
		}
	}
	return -EAGAIN;
}

/*
 * Enqueue, with every lock held: starts a round on the parker and puts one
 * record per case into its channel's queue, all sharing the parker, so
 * that a partner completes at most one of them.
 */
static void sel_enqueue(struct sel *s, bool watching)
{
	struct parker *pk = s->pk;
	/*
	 * Back to WAITING with an RMW when a token is watched: a token that
	 * fired since the last round left W_CANCEL here (its fetch_or is
	 * ordered before this exchange, or it will mark WAITING). Without a
	 * token nothing writes the parker while no record of it is queued,
	 * and the locks order this store before any partner's look at it.
	 */
	if (!watching) {
		atomic_store_explicit(&pk->state, W_WAITING,
				      memory_order_relaxed);
	} else if (atomic_exchange_explicit(&pk->state, W_WAITING,
					    memory_order_acq_rel) &
		   W_CANCEL) {
		atomic_fetch_or_explicit(&pk->state, W_CANCEL,
					 memory_order_relaxed);
	}
	pk->fired = -1;
	pk->nch = NULL;
	pk->taken = NULL;
	for (size_t k = 0; k < s->nen; k++) {
		size_t i = s->order[k];
		struct waiter *w = &s->ws[i];
		w->p = pk;
		w->elem = s->cs[i].elem;
		w->idx = (int)i;
		struct cpat_chan *ch = s->cs[i].ch;
		if (s->cs[i].op == CPAT_SELECT_SEND && ch->cap == 0 &&
		    ch->elem_size <= SEND_INLINE_MAX)
			copy_elem(w->val, w->elem, ch->elem_size);
		q_push(ch, case_dir(s->cs[i].op), w);
	}
}

/*
 * The rest of the enqueue step, once the locks are released: buffered
 * cases complete without the lock, so one may have become ready between
 * the attempt and the enqueue. If one has, aborts the parker (unless a
 * partner got to it first) and returns true: run another round.
 */
static bool sel_recheck(struct sel *s)
{
	for (size_t k = 0; k < s->nen; k++) {
		size_t i = s->order[k];
		struct cpat_chan *ch = s->cs[i].ch;
		if (ch->cap > 0 && buf_ready(ch, case_dir(s->cs[i].op))) {
			uint32_t st = W_WAITING;
			return atomic_compare_exchange_strong_explicit(
				&s->pk->state, &st, W_ABORTED,
				memory_order_acq_rel, memory_order_acquire);
		}
	}
	return false;
}

/*
 * Dequeue, once the parker has left WAITING with state st: takes every
 * record of the round still queued out of its queue, each under its
 * channel's lock.
 */
static void sel_dequeue(struct sel *s, uint32_t st)
{
	for (size_t k = 0; k < s->nen; k++) {
		size_t i = s->order[k];
		struct cpat_chan *ch = s->cs[i].ch;
		/*
		 * queued is guarded by the lock, but the record a partner
		 * claimed (DONE or NOTIFIED) left the queue before the
		 * exchange we acquired: no need to look.
		 */
		if ((st == W_DONE && s->pk->solo) ||
		    ((st == W_DONE || st == W_NOTIFIED) &&
		     s->pk->taken == &s->ws[i]))
			continue;
		cpat__lock(&ch->lock);
		if (s->ws[i].queued)
			q_remove(ch, case_dir(s->cs[i].op), &s->ws[i]);
		cpat__unlock(&ch->lock);
	}
}

/*
 * A partner completed one of the records (DONE): sets that case's rc,
 * copies an element it left in the parker's inline buffer out, and returns
 * the case's index.
 */
static int sel_done(struct sel *s)
{
	int i = s->pk->solo ? s->order[0] : s->pk->fired;
	struct cpat_select_case *c = &s->cs[i];
	c->rc = 0;
	if (c->op == CPAT_SELECT_RECV && c->ch->elem_size <= INLINE_MAX)
		copy_elem(c->elem, s->pk->buf, c->ch->elem_size);
	return i;
}

/*
 * The blocking engine behind every call that has to wait: select over the
 * cases (one case for a plain send or recv). ws has room for n records.
 * Each round shuffles the cases, attempts them all under the locks and,
 * if none completes, enqueues a record for each, parks, and dequeues what
 * is left. Returns the index of the completed case (its rc set) or a
 * negative error.
 */
static int block_select(struct cpat_select_case *cs, size_t n,
			struct waiter *ws, struct parker *pk,
			struct cpat_token *tok, int64_t deadline)
{
	struct sel s; /* not zeroed: sel_lock_sort() fills what is read */
	struct cpat__watch watch;
	bool watching = false;
	struct cpat_chan *pend_ch = NULL;
	int pend_dir = 0;
	int result;

	s.cs = cs;
	s.ws = ws;
	s.pk = pk;
	atomic_init(&pk->state, W_ABORTED);
	sel_lock_sort(&s, n);
	pk->solo = s.nen == 1;

	/* A lone buffered case has polled already (buf_*_spin). */
	bool spin = !(s.nen == 1 && cs[s.order[0]].ch->cap > 0);

	/*
	 * Watch the token before any record is enqueued, so that once
	 * cpat_token_cancel() has returned no partner can claim a record of
	 * this call. A fire marks the parker: see sel_enqueue().
	 */
	if (tok) {
		watch.fn = watch_fired;
		watch.arg = pk;
		cpat_token_ref(tok);
		int cause = cpat__token_watch(tok, &watch);
		if (cause != 0) {
			cpat_token_unref(tok);
			return cause;
		}
		watching = true;
	}

	for (;;) {
		/* Attempt every case, in a random order, under the locks. */
		shuffle(s.order, s.nen);
		_Atomic uint32_t *wake = NULL;
		int ndir = -1;
		lock_all(s.locks, s.nlocks);
		result = sel_try_locked(&s, &wake, &ndir);
		if (result >= 0) {
			unlock_all(s.locks, s.nlocks);
			struct cpat_select_case *c = &cs[result];
			wake_after(c->ch, wake, ndir);
			if (pend_ch == c->ch && pend_dir == case_dir(c->op))
				pend_ch = NULL;
			goto out;
		}
		if (deadline_passed(deadline)) {
			unlock_all(s.locks, s.nlocks);
			result = -ETIMEDOUT;
			goto out;
		}
		sel_enqueue(&s, watching);
		unlock_all(s.locks, s.nlocks);
		bool retry = sel_recheck(&s);

		bool timed_out = false;
		uint32_t st = retry ? W_ABORTED
				    : park_wait(&pk->state, deadline, spin, 1,
						&timed_out);
		sel_dequeue(&s, st);

		if (st == W_DONE) {
			result = sel_done(&s);
			goto out;
		}
		if (st == W_NOTIFIED) {
			pend_ch = pk->nch;
			pend_dir = pk->ndir;
			if (tok && cpat_token_status(tok) != 0) {
				result = cpat_token_status(tok);
				goto out;
			}
			continue;
		}
		/* ABORTED */
		if (retry)
			continue;
		if (timed_out) {
			result = -ETIMEDOUT;
			goto out;
		}
		result = tok ? cpat_token_status(tok) : -ECANCELED;
		if (result == 0)
			continue; /* cannot happen: aborts come from the token
				   */
		goto out;
	}
out:
	if (watching) {
		cpat__token_unwatch(tok, &watch);
		cpat_token_unref(tok);
	}
	if (pend_ch)
		pass_on(pend_ch, pend_dir);
	return result;
}

/* ---- public API ------------------------------------------------------ */

void cpat_chan_opts_init(struct cpat_chan_opts *opts)
{
	if (!opts)
		return;
	memset(opts, 0, sizeof *opts);
}

int cpat_chan_create_opts(struct cpat_chan **out,
			  const struct cpat_chan_opts *opts)
{
	if (out)
		*out = NULL;
	if (!out || !opts || opts->elem_size == 0)
		return -EINVAL;
	size_t es = opts->elem_size, cap = opts->capacity;
	if (es > SIZE_MAX / 4 || cap > SIZE_MAX / 8)
		return -EINVAL;
	size_t slot_size = (sizeof(size_t) + es + sizeof(size_t) - 1) &
			   ~(sizeof(size_t) - 1);
	if (cap != 0 &&
	    slot_size > (SIZE_MAX - sizeof(struct cpat_chan) - 4096) / cap)
		return -EINVAL;
	struct cpat_chan *ch = cpat__malloc_aligned(
		sizeof *ch + cap * slot_size, CPAT_CACHELINE);
	if (!ch)
		return -ENOMEM;
	memset(ch, 0, sizeof *ch);
	ch->elem_size = es;
	ch->cap = cap;
	ch->slot_size = slot_size;
	size_t mark = 1;
	while (mark < cap + 1)
		mark <<= 1;
	ch->mark_bit = mark;
	ch->one_lap = mark << 1;
	ch->drop = opts->drop;
	ch->drop_arg = opts->drop_arg;
	atomic_init(&ch->closed, 0);
	atomic_init(&ch->head, 0);
	atomic_init(&ch->tail, 0);
	atomic_init(&ch->lock, 0);
	for (int d = 0; d < 2; d++) {
		atomic_init(&ch->nwait[d], 0);
		if (cap == 0) {
			atomic_init(&ch->u.cell[d].state, W_FREE);
			ch->u.cell[d].gen = 0;
		} else {
			ch->u.q[d].first = ch->u.q[d].last = NULL;
		}
	}
	atomic_init(&ch->doors, NULL);
	for (size_t i = 0; i < cap; i++)
		atomic_init(&slot_at(ch, i)->stamp, i);
	*out = ch;
	return 0;
}

int cpat_chan_create(struct cpat_chan **out, size_t elem_size, size_t capacity)
{
	struct cpat_chan_opts o;
	cpat_chan_opts_init(&o);
	o.elem_size = elem_size;
	o.capacity = capacity;
	return cpat_chan_create_opts(out, &o);
}

/*
 * Waiting for room or for an element before parking: poll the one slot
 * that decides (read-only loads, so the line stays shared) with a pause
 * between polls, retry the operation when it looks ready, and give the
 * processor away a few times before the caller parks.
 */

static inline bool send_looks_ready(const struct cpat_chan *ch)
{
	size_t tail = atomic_load_explicit(&ch->tail, memory_order_relaxed);
	return (tail & ch->mark_bit) ||
	       atomic_load_explicit(&slot_at(ch, tail)->stamp,
				    memory_order_relaxed) == tail;
}

static inline bool recv_looks_ready(const struct cpat_chan *ch)
{
	size_t head = atomic_load_explicit(&ch->head, memory_order_relaxed);
	return atomic_load_explicit(&slot_at(ch, head)->stamp,
				    memory_order_relaxed) == head + 1 ||
	       atomic_load_explicit(&ch->closed, memory_order_relaxed);
}

/* Spins for a buffered operation in direction dir (send: elem is read;
 * recv: elem is written) before parking: its result, -EAGAIN if it never
 * got through. Inlined with a constant dir by each caller. */
static inline int buf_spin(struct cpat_chan *ch, int dir, void *elem)
{
	int rc = -EAGAIN;
	struct cpat__spinwait w = {0, 0};
	while (cpat__spin_more(&w)) {
		if (dir == DIR_SEND ? send_looks_ready(ch)
				    : recv_looks_ready(ch)) {
			rc = dir == DIR_SEND ? buf_send(ch, elem)
					     : buf_recv(ch, elem);
			if (rc != -EAGAIN)
				break;
		}
	}
	cpat__spin_end(&w, rc != -EAGAIN);
	return rc;
}

/*
 * The buffered path of send_until and recv_until: 0 (done, the other side
 * woken), -EPIPE, -ETIMEDOUT, or -EAGAIN (block). While the slot at the
 * near end is plainly taken (send) or empty (recv), it polls that slot
 * rather than confirm "full" or "empty" on the other side's index line
 * (which would bounce it); the attempts stay exact.
 */
static inline int buf_until(struct cpat_chan *ch, int dir, void *elem,
			    int64_t deadline_ns)
{
	int rc = -EAGAIN;
	if (dir == DIR_SEND ? send_looks_ready(ch) : recv_looks_ready(ch))
		rc = dir == DIR_SEND ? buf_send(ch, elem) : buf_recv(ch, elem);
	if (rc == -EAGAIN) {
		if (deadline_passed(deadline_ns)) {
			rc = dir == DIR_SEND ? buf_send(ch, elem)
					     : buf_recv(ch, elem);
			if (rc == -EAGAIN)
				return -ETIMEDOUT;
		} else {
			rc = buf_spin(ch, dir, elem);
		}
	}
	if (rc == 0) {
		if (dir == DIR_SEND)
			wake_receivers(ch, 1);
		else
			wake_senders(ch, 1);
		return 0;
	}
	if (rc != -EAGAIN)
		return rc;
	return deadline_passed(deadline_ns) ? -ETIMEDOUT : -EAGAIN;
}

/*
 * Rendezvous through a cell. A plain send or receive of an element of at
 * most CELL_MAX bytes on a channel of capacity 0 waits in its side's cell,
 * in the channel's lock line, rather than in a record on its own stack:
 * a partner then finds the holder, the element and the state word it
 * completes in the line it took with the lock, and the holder polls that
 * line, so that a hand-off between two running threads moves one line
 * each way instead of three or four (lock, record, parker, element).
 *
 * The cell is taken under the lock, only when it is free and no record of
 * the same side is queued (records wait behind the cell's holder, so the
 * order of arrival is kept: partners look at the cell first). Its state
 * word is a parker state with the holder's generation in W_GEN: WAITING
 * until a partner completes it (DONE, cell_complete()), close notifies it
 * (NOTIFIED), its deadline passes (ABORTED, by the holder) or its token
 * fires (W_CANCEL, by cell_watch_fired()). A partner acts only on WAITING
 * without W_CANCEL, by CAS, so a completion and a cancel never both win.
 * The holder alone frees the cell (W_FREE), after reading a received
 * element and after cpat__token_unwatch() (no watch callback runs any
 * more); so the generation only guards against a callback that raced
 * with the take. Not free, or records queued: CELL_BUSY, and the caller
 * waits in the queue instead.
 */
#define CELL_BUSY 1

struct cell_watch {
	struct cpat__watch w;
	_Atomic(_Atomic uint32_t *) word; /* the cell, once held */
	uint32_t gen;                     /* its generation, set before */
	_Atomic int fired;
};

/*
 * The token fired. Either the holder sees fired before it publishes its
 * cell (it then gives the cell back), or this sees the cell (seq_cst:
 * store fired, load word; holder: store word, load fired) and marks it
 * cancelled while it waits, so once cpat_token_cancel() has returned no
 * partner can complete it.
 */
static void cell_watch_fired(struct cpat__watch *w, int cause)
{
	struct cell_watch *cw = w->arg;
	(void)cause;
	atomic_store_explicit(&cw->fired, 1, memory_order_seq_cst);
	_Atomic uint32_t *word =
		atomic_load_explicit(&cw->word, memory_order_seq_cst);
	if (!word)
		return;
	uint32_t s = atomic_load_explicit(word, memory_order_relaxed);
	while ((s & W_GEN) == cw->gen &&
	       (s & (W_VALUE | W_CANCEL)) == W_WAITING) {
		if (atomic_compare_exchange_weak_explicit(
			    word, &s, s | W_CANCEL, memory_order_acq_rel,
			    memory_order_relaxed)) {
			if ((s & W_SLEEP) &&
			    !CPAT_PLANTED(CPAT_BUG_CHAN_CANCEL_WAKEUP))
				cpat__unpark_one(word);
			break;
		}
	}
}

static int block_cell(struct cpat_chan *ch, int dir, void *elem,
		      struct cpat_token *tok, int64_t deadline)
{
	struct cell *c = &ch->u.cell[dir];
	struct cell_watch cw;
	bool held = false;
	int rc;

	if (tok) {
		cw.w.fn = cell_watch_fired;
		cw.w.arg = &cw;
		atomic_init(&cw.word, NULL);
		atomic_init(&cw.fired, 0);
		cw.gen = 0;
		cpat_token_ref(tok);
		int cause = cpat__token_watch(tok, &cw.w);
		if (cause != 0) {
			cpat_token_unref(tok);
			return cause;
		}
	}
	for (;;) {
		_Atomic uint32_t *wake = NULL;
		int nd = -1;
		cpat__lock(&ch->lock);
		rc = try_case(ch, dir, elem, NULL, true, &wake, &nd);
		if (rc != -EAGAIN) {
			cpat__unlock(&ch->lock);
			if (wake)
				cpat__unpark_one(wake);
			break;
		}
		if (held || deadline_passed(deadline)) {
			/* held: close notified the cell, so the attempt above
			 * said -EPIPE; no partner can come after close, and
			 * -EPIPE is what this call owes then too. */
			cpat__unlock(&ch->lock);
			rc = held ? -EPIPE : -ETIMEDOUT;
			break;
		}
		if ((atomic_load_explicit(&c->state, memory_order_acquire) &
		     W_VALUE) != W_FREE ||
		    ch->q0[dir].first) {
			cpat__unlock(&ch->lock);
			rc = CELL_BUSY;
			break;
		}
		uint32_t gen = (++c->gen << 16) & W_GEN;
		if (dir == DIR_SEND)
			cell_copy(c->val, elem, ch->elem_size);
		atomic_store_explicit(&c->state, gen | W_WAITING,
				      memory_order_relaxed);
		held = true;
		if (tok) {
			cw.gen = gen;
			atomic_store_explicit(&cw.word, &c->state,
					      memory_order_seq_cst);
			if (atomic_load_explicit(&cw.fired,
						 memory_order_seq_cst)) {
				/* Fired before any partner could see it. */
				atomic_store_explicit(&c->state,
						      gen | W_ABORTED,
						      memory_order_relaxed);
				cpat__unlock(&ch->lock);
				rc = cpat_token_status(tok);
				break;
			}
		}
		waiter_arrived(ch, dir);
		cpat__unlock(&ch->lock);

		bool timed_out = false;
		uint32_t st = park_wait(&c->state, deadline, true,
					CELL_POLL_STRIDE, &timed_out);
		if (st == W_DONE) {
			if (dir == DIR_RECV)
				cell_copy(elem, c->val, ch->elem_size);
			rc = 0;
			break;
		}
		if (st == W_NOTIFIED)
			continue; /* closed: the next attempt says so */
		/* Aborted: timed out or cancelled, still counted. */
		atomic_fetch_sub_explicit(&ch->nwait[dir], 1,
					  memory_order_relaxed);
		if (timed_out)
			rc = -ETIMEDOUT;
		else
			rc = tok ? cpat_token_status(tok) : -ECANCELED;
		break;
	}
	if (tok) {
		cpat__token_unwatch(tok, &cw.w);
		cpat_token_unref(tok);
	}
	if (held)
		atomic_store_explicit(&c->state, W_FREE, memory_order_release);
	return rc;
}

static int block_one(struct cpat_chan *ch, int op, void *elem,
		     struct cpat_token *tok, int64_t deadline)
{
	struct cpat_select_case c = {ch, op, elem, 0};
	/*
	 * The parker (which this thread polls) on a line of its own, apart
	 * from the record (which a partner rewrites when it dequeues it).
	 */
	struct {
		_Alignas(CPAT_CACHELINE) struct parker p;
		_Alignas(CPAT_CACHELINE) struct waiter w;
	} rec;
	if (ch->cap == 0 && ch->elem_size <= CELL_MAX) {
		int rc = block_cell(ch, case_dir(op), elem, tok, deadline);
		if (rc != CELL_BUSY)
			return rc;
	}
	int r = block_select(&c, 1, &rec.w, &rec.p, tok, deadline);
	return r < 0 ? r : c.rc;
}

int cpat_chan_send_until(struct cpat_chan *ch, const void *elem,
			 struct cpat_token *tok, int64_t deadline_ns)
{
	if (!ch || !elem || !cpat__deadline_ok(deadline_ns))
		return -EINVAL;
	if (tok) {
		int c = cpat_token_status(tok);
		if (c)
			return c;
	}
	if (ch->cap > 0) {
		int rc = buf_until(ch, DIR_SEND, (void *)elem, deadline_ns);
		if (rc != -EAGAIN)
			return rc;
	}
	return block_one(ch, CPAT_SELECT_SEND, (void *)elem, tok, deadline_ns);
}

int cpat_chan_send(struct cpat_chan *ch, const void *elem,
		   struct cpat_token *tok)
{
	return cpat_chan_send_until(ch, elem, tok, CPAT_FOREVER);
}

int cpat_chan_try_send(struct cpat_chan *ch, const void *elem)
{
	if (!ch || !elem)
		return -EINVAL;
	if (ch->cap > 0) {
		int rc = buf_send(ch, elem);
		if (rc == 0)
			wake_receivers(ch, 1);
		return rc;
	}
	_Atomic uint32_t *wake = NULL;
	int nd = -1;
	int rc = try_case(ch, DIR_SEND, (void *)elem, NULL, false, &wake, &nd);
	if (wake)
		cpat__unpark_one(wake);
	return rc;
}

int cpat_chan_recv_until(struct cpat_chan *ch, void *elem,
			 struct cpat_token *tok, int64_t deadline_ns)
{
	if (!ch || !elem || !cpat__deadline_ok(deadline_ns))
		return -EINVAL;
	if (tok) {
		int c = cpat_token_status(tok);
		if (c)
			return c;
	}
	if (ch->cap > 0) {
		int rc = buf_until(ch, DIR_RECV, elem, deadline_ns);
		if (rc != -EAGAIN)
			return rc;
	}
	return block_one(ch, CPAT_SELECT_RECV, elem, tok, deadline_ns);
}

int cpat_chan_recv(struct cpat_chan *ch, void *elem, struct cpat_token *tok)
{
	return cpat_chan_recv_until(ch, elem, tok, CPAT_FOREVER);
}

int cpat_chan_try_recv(struct cpat_chan *ch, void *elem)
{
	if (!ch || !elem)
		return -EINVAL;
	if (ch->cap > 0) {
		int rc = buf_recv(ch, elem);
		if (rc == 0)
			wake_senders(ch, 1);
		return rc;
	}
	_Atomic uint32_t *wake = NULL;
	int nd = -1;
	int rc = try_case(ch, DIR_RECV, elem, NULL, false, &wake, &nd);
	if (wake)
		cpat__unpark_one(wake);
	return rc;
}

int cpat_chan_send_many(struct cpat_chan *ch, const void *elems, size_t n,
			size_t *sent, struct cpat_token *tok,
			int64_t deadline_ns)
{
	size_t done = 0;
	int rc = 0;
	if (sent)
		*sent = 0;
	if (!ch || !elems || n == 0 || !cpat__deadline_ok(deadline_ns))
		return -EINVAL;
	if (tok && (rc = cpat_token_status(tok)) != 0)
		return rc;
	const unsigned char *src = elems;
	while (done < n) {
		if (ch->cap > 0) {
			int err;
			size_t k = buf_send_batch(
				ch, src + done * ch->elem_size, n - done, &err);
			if (k > 0) {
				done += k;
				wake_receivers(ch, k);
				continue;
			}
			if (err == -EPIPE) {
				rc = err;
				break;
			}
		}
		/* No room: one blocking send, then batches again. */
		rc = cpat_chan_send_until(ch, src + done * ch->elem_size, tok,
					  deadline_ns);
		if (rc != 0)
			break;
		done++;
	}
	if (sent)
		*sent = done;
	return rc;
}

int cpat_chan_recv_many(struct cpat_chan *ch, void *elems, size_t n,
			size_t *received, struct cpat_token *tok,
			int64_t deadline_ns)
{
	size_t done = 0;
	int rc;
	if (received)
		*received = 0;
	if (!ch || !elems || n == 0 || !cpat__deadline_ok(deadline_ns))
		return -EINVAL;
	if (tok && (rc = cpat_token_status(tok)) != 0)
		return rc;
	unsigned char *dst = elems;
	if (ch->cap > 0) {
		int err;
		done = buf_recv_batch(ch, dst, n, &err);
		if (done > 0) {
			wake_senders(ch, done);
			if (received)
				*received = done;
			return 0;
		}
		if (err == -EPIPE)
			return err;
	}
	rc = cpat_chan_recv_until(ch, dst, tok, deadline_ns);
	if (rc != 0)
		return rc;
	done = 1;
	if (ch->cap > 0 && done < n) {
		int err;
		size_t k = buf_recv_batch(ch, dst + ch->elem_size, n - 1, &err);
		if (k > 0) {
			done += k;
			wake_senders(ch, k);
		}
	} else {
		while (done < n &&
		       cpat_chan_try_recv(ch, dst + done * ch->elem_size) == 0)
			done++;
	}
	if (received)
		*received = done;
	return 0;
}

int cpat_chan_select(struct cpat_select_case *cases, size_t n,
		     struct cpat_token *tok, int64_t deadline_ns)
{
	if (!cases || n == 0 || n > CPAT_SELECT_MAX ||
	    !cpat__deadline_ok(deadline_ns))
		return -EINVAL;
	size_t nen = 0;
	for (size_t i = 0; i < n; i++) {
		if (!cases[i].ch)
			continue;
		if ((cases[i].op != CPAT_SELECT_SEND &&
		     cases[i].op != CPAT_SELECT_RECV) ||
		    !cases[i].elem)
			return -EINVAL;
		nen++;
	}
	if (nen == 0 && !tok && deadline_ns == CPAT_FOREVER)
		return -EINVAL;
	if (tok) {
		int c = cpat_token_status(tok);
		if (c)
			return c;
	}

	/* Lock-free first pass in a random order. */
	uint8_t order[CPAT_SELECT_MAX];
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		if (cases[i].ch)
			order[m++] = (uint8_t)i;
	shuffle(order, m);
	for (size_t k = 0; k < m; k++) {
		size_t i = order[k];
		_Atomic uint32_t *wake = NULL;
		int nd = -1;
		int rc = try_case(cases[i].ch, case_dir(cases[i].op),
				  cases[i].elem, NULL, false, &wake, &nd);
		if (rc == -EAGAIN)
			continue;
		wake_after(cases[i].ch, wake, nd);
		cases[i].rc = rc;
		return (int)i;
	}
	if (deadline_passed(deadline_ns))
		return -ETIMEDOUT;
	struct {
		_Alignas(CPAT_CACHELINE) struct parker pk;
		_Alignas(CPAT_CACHELINE) struct waiter ws[CPAT_SELECT_MAX];
	} rec;
	return block_select(cases, n, rec.ws, &rec.pk, tok, deadline_ns);
}

int cpat_chan_close(struct cpat_chan *ch)
{
	if (!ch)
		return -EINVAL;
	cpat__lock(&ch->lock);
	size_t old = atomic_fetch_or_explicit(&ch->tail, ch->mark_bit,
					      memory_order_seq_cst);
	if (old & ch->mark_bit) {
		cpat__unlock(&ch->lock);
		return -EPIPE;
	}
	atomic_store_explicit(&ch->closed, 1, memory_order_seq_cst);
	for (int d = 0; d < 2; d++) {
		/* A cell's holder is the oldest waiter of its side. */
		_Atomic uint32_t *f = NULL;
		bool woke = ch->cap == 0 &&
			    settle(&ch->u.cell[d].state, W_NOTIFIED, &f);
		if (woke) {
			atomic_fetch_sub_explicit(&ch->nwait[d], 1,
						  memory_order_relaxed);
			if (f)
				cpat__unpark_one(f);
		}
		struct waiter *w;
		/* Planted: wake one waiter per side, not all. */
		while (!(CPAT_PLANTED(CPAT_BUG_CHAN_CLOSE_SIGNAL) && woke) &&
		       (w = q_claim(ch, d, NULL)) != NULL) {
			w->p->nch = NULL;
			f = finish(w->p, W_NOTIFIED);
			if (f)
				cpat__unpark_one(f);
			woke = true;
		}
	}
	cpat__unlock(&ch->lock);
	/* Closed is ready both ways, for good: no re-arm drains a door of a
	 * closed channel (door_ready() says so), so posting once is enough. */
	for (int d = 0; d < 2; d++)
		if (atomic_load_explicit(&ch->nwait[d], memory_order_seq_cst) &
		    DOOR_WAITER)
			door_post(ch, d);
	return 0;
}

size_t cpat_chan_len(const struct cpat_chan *ch)
{
	if (!ch || ch->cap == 0)
		return 0;
	for (;;) {
		size_t tail =
			atomic_load_explicit(&ch->tail, memory_order_seq_cst);
		size_t head =
			atomic_load_explicit(&ch->head, memory_order_seq_cst);
		if (atomic_load_explicit(&ch->tail, memory_order_seq_cst) !=
		    tail)
			continue;
		size_t hix = head & (ch->mark_bit - 1);
		size_t tix = tail & (ch->mark_bit - 1);
		if (hix < tix)
			return tix - hix;
		if (hix > tix)
			return ch->cap - hix + tix;
		if ((tail & ~ch->mark_bit) == head)
			return 0;
		return ch->cap;
	}
}

size_t cpat_chan_cap(const struct cpat_chan *ch)
{
	return ch ? ch->cap : 0;
}

size_t cpat_chan_elem_size(const struct cpat_chan *ch)
{
	return ch ? ch->elem_size : 0;
}

int cpat_chan_is_closed(const struct cpat_chan *ch)
{
	if (!ch)
		return -EINVAL;
	return is_closed(ch) ? 1 : 0;
}

void cpat_chan_destroy(struct cpat_chan *ch)
{
	if (!ch)
		return;
	if (ch->drop && ch->cap > 0) {
		size_t head =
			atomic_load_explicit(&ch->head, memory_order_acquire);
		size_t tail =
			atomic_load_explicit(&ch->tail, memory_order_acquire) &
			~ch->mark_bit;
		while (head != tail) {
			struct slot *s = slot_at(ch, head);
			if (atomic_load_explicit(&s->stamp,
						 memory_order_acquire) !=
			    head + 1)
				break;
			ch->drop(s->data, ch->drop_arg);
			head = stamp_next(ch, head);
		}
	}
	struct chan_doors *ds =
		atomic_load_explicit(&ch->doors, memory_order_acquire);
	if (ds) {
		cpat__door_close(&ds->d[0]);
		cpat__door_close(&ds->d[1]);
		cpat__free(ds);
	}
	cpat__free_aligned(ch);
}

int cpat_chan_fd(struct cpat_chan *ch, int op, int *fd)
{
	if (fd)
		*fd = -1;
	if (!ch || !fd || (op != CPAT_SELECT_SEND && op != CPAT_SELECT_RECV))
		return -EINVAL;
	int dir = case_dir(op);
	struct chan_doors *ds =
		atomic_load_explicit(&ch->doors, memory_order_acquire);
	if (!ds) {
		struct chan_doors *nd = cpat__malloc(sizeof *nd);
		if (!nd)
			return -ENOMEM;
		atomic_init(&nd->lock, 0);
		for (int d = 0; d < 2; d++) {
			atomic_init(&nd->sig[d], 0);
			cpat__door_init(&nd->d[d]);
		}
		if (atomic_compare_exchange_strong_explicit(
			    &ch->doors, &ds, nd, memory_order_acq_rel,
			    memory_order_acquire))
			ds = nd;
		else
			cpat__free(nd); /* another thread's won: ds is it */
	}
	int rc = 0;
	cpat__lock(&ds->lock);
	if (ds->d[dir].rfd < 0) {
		rc = cpat__door_open(&ds->d[dir]);
		if (rc == 0) {
			/*
			 * Count the door as a waiter, then look: a completion
			 * that the look misses reads the bit and posts (the
			 * design note). Posts wait for the lock meanwhile.
			 */
			atomic_fetch_or_explicit(&ch->nwait[dir], DOOR_WAITER,
						 memory_order_seq_cst);
			if (door_ready(ch, dir)) {
				atomic_store_explicit(&ds->sig[dir], 1,
						      memory_order_seq_cst);
				cpat__door_post(&ds->d[dir]);
			}
		}
	}
	if (rc == 0)
		*fd = ds->d[dir].rfd;
	cpat__unlock(&ds->lock);
	return rc;
}

/* ---- test hooks ------------------------------------------------------ */

size_t cpat__chan_nblocked(const struct cpat_chan *ch, int op)
{
	if (!ch || (op != CPAT_SELECT_SEND && op != CPAT_SELECT_RECV))
		return 0;
	/* Counted under the lock, so that the hot paths keep no counter
	 * for it; the lock is only read-shared state here. */
	struct cpat_chan *c = (struct cpat_chan *)ch;
	size_t n = 0;
	cpat__lock(&c->lock);
	for (const struct waiter *w = waitqs(c)[case_dir(op)].first; w;
	     w = w->next)
		n += w->counted;
	if (c->cap == 0) {
		uint32_t st = atomic_load_explicit(
			&c->u.cell[case_dir(op)].state, memory_order_relaxed);
		n += (st & W_VALUE) == W_WAITING;
	}
	cpat__unlock(&c->lock);
	return n;
}
