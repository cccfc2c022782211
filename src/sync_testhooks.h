/*
 * Test hooks of the semaphore and the rate limiter (sem.c, rate.c): what
 * their tests read to know that a thread is blocked, instead of sleeping.
 * Never installed; hidden symbols, reached by the tests through the static
 * library.
 */
#ifndef CPAT_SYNC_TESTHOOKS_H
#define CPAT_SYNC_TESTHOOKS_H

#include "internal.h"

struct cpat_sem;
struct cpat_rate;

/* Callers queued in s: a caller counts from the moment its record is in the
 * queue (a release can serve it) until it leaves it (served, or gone). */
CPAT_HIDDEN size_t cpat__sem_waiters(struct cpat_sem *s);
/* Callers of cpat_rate_wait*() that reserved a token with a delay and have
 * not yet returned (sleeping, or about to). */
CPAT_HIDDEN size_t cpat__rate_waiting(struct cpat_rate *l);

#endif /* CPAT_SYNC_TESTHOOKS_H */
