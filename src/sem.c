/*
 * DESIGN: a weighted semaphore with a FIFO of waiters.
 *
 * State, under one futex lock (cpat__lock): the free count and a doubly
 * linked queue of waiter records, each on its blocked caller's stack. A
 * caller takes the permits at once only if nobody waits and enough are
 * free; otherwise it queues at the tail. Whoever frees permits (a release,
 * or a waiter leaving the head of the queue) serves the queue from the
 * head while the head's request fits, and stops at the first that does not
 * (strict FIFO: see sem.h for why).
 *
 * Serving a waiter: under the lock, unlink it, take its permits from the
 * free count and set GRANTED in its state word (an RMW), then wake it
 * (futex on the state word). The waiter may return as soon as it sees
 * GRANTED, so nothing of the record is touched after the RMW (the wake-up
 * of a word nobody sleeps on is harmless, spin.h).
 *
 * Cancellation: the token is watched (cpat__token_watch, a record on the
 * stack too) after queueing; the watch sets FIRED in the state word and
 * wakes the owner. The owner leaves on FIRED or its deadline: under the
 * lock, either it was not granted (it unlinks itself; if it was the head,
 * the waiters behind it may now fit and are served), or it was granted
 * meanwhile (it gives the permits back, which serves the next waiters).
 * A waiter that finds GRANTED re-reads its token, and gives the permits
 * back if the token fired: no acquire succeeds after cpat_token_cancel()
 * returned. Either way the free count is exactly what it would be had the
 * waiter never come.
 */
#include "internal.h"

#include "spin.h"
#include "testhooks.h"

#include "cpattern/sem.h"

enum { SW_GRANTED = 1, SW_FIRED = 2 };

struct waiter {
	struct waiter *next, *prev;
	size_t k;
	_Atomic uint32_t state; /* SW_* bits; the futex word */
};

struct cpat_sem {
	_Atomic uint32_t lock;
	size_t cap;
	size_t avail;
	struct waiter *head, *tail;
	size_t nwait;
};

int cpat_sem_create(struct cpat_sem **out, size_t capacity)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (capacity == 0)
		return -EINVAL;
	struct cpat_sem *s = cpat__calloc(1, sizeof *s);
	if (!s)
		return -ENOMEM;
	atomic_init(&s->lock, 0);
	s->cap = capacity;
	s->avail = capacity;
	*out = s;
	return 0;
}

void cpat_sem_destroy(struct cpat_sem *s)
{
	cpat__free(s);
}

static void q_unlink(struct cpat_sem *s, struct waiter *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		s->head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		s->tail = w->prev;
	w->next = w->prev = NULL;
	s->nwait--;
}

/* Grants the head while it fits. Lock held. */
static void serve_locked(struct cpat_sem *s)
{
	struct waiter *w;
	while ((w = s->head) != NULL && w->k <= s->avail) {
		s->avail -= w->k;
		q_unlink(s, w);
		/* The record may be gone once GRANTED is visible. */
		_Atomic uint32_t *word = &w->state;
		atomic_fetch_or_explicit(word, SW_GRANTED,
					 memory_order_release);
		cpat__unpark_one(word);
	}
}

static void watch_fired(struct cpat__watch *cw, int cause)
{
	struct waiter *w = cw->arg;
	(void)cause;
	atomic_fetch_or_explicit(&w->state, SW_FIRED, memory_order_release);
	cpat__unpark_one(&w->state);
}

static bool args_ok(const struct cpat_sem *s, size_t k)
{
	return s && k > 0 && k <= s->cap;
}

int cpat_sem_try_acquire(struct cpat_sem *s, size_t k)
{
	if (!args_ok(s, k))
		return -EINVAL;
	int rc = -EAGAIN;
	cpat__lock(&s->lock);
	if (!s->head && s->avail >= k) {
		s->avail -= k;
		rc = 0;
	}
	cpat__unlock(&s->lock);
	return rc;
}

int cpat_sem_acquire_until(struct cpat_sem *s, size_t k, struct cpat_token *tok,
			   int64_t deadline_ns)
{
	if (!args_ok(s, k) || !cpat__deadline_ok(deadline_ns))
		return -EINVAL;
	int rc = cpat_token_status(tok);
	if (rc)
		return rc;
	struct waiter w = {.k = k};
	atomic_init(&w.state, 0);
	cpat__lock(&s->lock);
	if (!s->head && s->avail >= k) {
		s->avail -= k;
		cpat__unlock(&s->lock);
		return 0;
	}
	if (deadline_ns != CPAT_FOREVER && cpat_now_ns() >= deadline_ns) {
		cpat__unlock(&s->lock);
		return -ETIMEDOUT;
	}
	w.prev = s->tail;
	if (s->tail)
		s->tail->next = &w;
	else
		s->head = &w;
	s->tail = &w;
	s->nwait++;
	cpat__unlock(&s->lock);

	struct cpat__watch cw = {.fn = watch_fired, .arg = &w};
	bool watching = false;
	if (tok) {
		cpat_token_ref(tok);
		rc = cpat__token_watch(tok, &cw);
		watching = rc == 0;
	}
	while (rc == 0) {
		uint32_t st =
			atomic_load_explicit(&w.state, memory_order_acquire);
		if (st & SW_GRANTED)
			break;
		if (st & SW_FIRED) {
			rc = cpat_token_status(tok);
			break;
		}
		if (deadline_ns != CPAT_FOREVER &&
		    cpat_now_ns() >= deadline_ns) {
			rc = -ETIMEDOUT;
			break;
		}
		cpat__park(&w.state, st, deadline_ns);
	}
	if (watching)
		cpat__token_unwatch(tok, &cw);
	/* Granted, but the token fired meanwhile: give them back. */
	if (rc == 0 && tok)
		rc = cpat_token_status(tok);
	if (rc != 0) {
		cpat__lock(&s->lock);
		if (atomic_load_explicit(&w.state, memory_order_acquire) &
		    SW_GRANTED) {
			s->avail += k;
			serve_locked(s);
		} else {
			bool was_head = s->head == &w;
			q_unlink(s, &w);
			if (was_head)
				serve_locked(s);
		}
		cpat__unlock(&s->lock);
	}
	cpat_token_unref(tok);
	return rc;
}

int cpat_sem_acquire(struct cpat_sem *s, size_t k, struct cpat_token *tok)
{
	return cpat_sem_acquire_until(s, k, tok, CPAT_FOREVER);
}

int cpat_sem_release(struct cpat_sem *s, size_t k)
{
	if (!s || k == 0)
		return -EINVAL;
	int rc = 0;
	cpat__lock(&s->lock);
	if (k > s->cap - s->avail) {
		rc = -EINVAL;
	} else {
		s->avail += k;
		serve_locked(s);
	}
	cpat__unlock(&s->lock);
	return rc;
}

size_t cpat_sem_available(struct cpat_sem *s)
{
	if (!s)
		return 0;
	cpat__lock(&s->lock);
	size_t n = s->avail;
	cpat__unlock(&s->lock);
	return n;
}

size_t cpat__sem_waiters(struct cpat_sem *s)
{
	cpat__lock(&s->lock);
	size_t n = s->nwait;
	cpat__unlock(&s->lock);
	return n;
}
