/*
 * DESIGN: a token bucket kept as one time.
 *
 * The state is `empty`: the time at which the bucket is (or was, or will
 * be) empty, in nanoseconds since the limiter's creation, as a double. At
 * time t the bucket holds min(burst, (t - empty) / T) tokens, T = 1e9 /
 * rate being the nanoseconds per token; a negative count is a debt that
 * reservations made in advance. Taking n tokens at now is
 *
 *     base  = max(empty, now - burst * T)    (a full bucket stays full)
 *     empty = base + n * T
 *
 * and the caller may act at max(now, empty): the time at which the bucket
 * would have had those tokens. So admissions are spaced exactly T apart
 * once the burst is spent, whatever the callers' timing, and a waiter that
 * wakes late costs nothing while the bucket refills meanwhile (base stays
 * empty when empty > now - burst * T). Times are doubles relative to the
 * creation so that the precision stays far below a nanosecond for years.
 *
 * One futex lock (cpat__lock) guards the state; every operation is a few
 * floating-point steps under it. A waiter reserves under the lock, then
 * sleeps on a word of its own stack (cpat__park with the act time as
 * deadline) with its token watched: the watch sets the word and wakes it.
 * If it gives up before its time it cancels its reservation.
 *
 * Cancelling a reservation of n tokens due at `act` (Go's Cancel): the
 * reservations made after it keep their times, and they hold the tokens
 * between act and empty, so only n - (empty - act) / T (if positive) go
 * back: empty -= that * T.
 */
#include "internal.h"

#include "spin.h"
#include "testhooks.h"

#include "cpattern/rate.h"

struct cpat_rate {
	_Atomic uint32_t lock;
	int64_t t0;   /* creation: the origin of the doubles below */
	double T;     /* ns per token */
	double burst; /* tokens */
	size_t burst_n;
	double empty; /* ns since t0 */
	size_t nwaiting;
};

/* No libm: the few functions needed, for the values met here. */
static double max_d(double a, double b)
{
	return a > b ? a : b;
}

static bool rate_ok(double rate)
{
	/* Rejects NaN, infinity, and rates so small that T overflows. */
	return rate > 0 && rate <= 1e300 && 1e9 / rate <= 1e300;
}

int cpat_rate_create(struct cpat_rate **out, double rate, size_t burst)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!rate_ok(rate) || burst == 0)
		return -EINVAL;
	struct cpat_rate *l = cpat__calloc(1, sizeof *l);
	if (!l)
		return -ENOMEM;
	atomic_init(&l->lock, 0);
	l->t0 = cpat_now_ns();
	l->T = 1e9 / rate;
	l->burst = (double)burst;
	l->burst_n = burst;
	l->empty = -l->burst * l->T; /* full */
	*out = l;
	return 0;
}

void cpat_rate_destroy(struct cpat_rate *l)
{
	cpat__free(l);
}

static double rel(const struct cpat_rate *l, int64_t t)
{
	return (double)(t - l->t0);
}

/* An absolute time from a relative one (>= 0), rounded up, saturated. */
static int64_t abs_time(const struct cpat_rate *l, double r)
{
	if (r >= 9.0e18)
		return INT64_MAX;
	int64_t i = (int64_t)r, a;
	if ((double)i < r)
		i++;
	if (__builtin_add_overflow(i, l->t0, &a))
		return INT64_MAX;
	return a;
}

/* Where a reservation of n tokens at now would leave `empty`. Lock held. */
static double empty_after(const struct cpat_rate *l, double now, size_t n)
{
	double base = max_d(l->empty, now - l->burst * l->T);
	return base + (double)n * l->T;
}

int cpat_rate_allow(struct cpat_rate *l)
{
	if (!l)
		return -EINVAL;
	int rc = 0;
	cpat__lock(&l->lock);
	double now = rel(l, cpat_now_ns());
	double e = empty_after(l, now, 1);
	if (e <= now) {
		l->empty = e;
		rc = 1;
	}
	cpat__unlock(&l->lock);
	return rc;
}

/* Takes n tokens at now (absolute); fills res. Refuses (false, nothing
 * taken) if the act time would be after deadline. Lock held. */
static bool take_locked(struct cpat_rate *l, int64_t now_abs, size_t n,
			int64_t deadline, struct cpat_rate_reservation *res)
{
	double now = rel(l, now_abs);
	double e = empty_after(l, now, n);
	int64_t act = e <= now ? now_abs : abs_time(l, e);
	if (deadline != CPAT_FOREVER && act > deadline)
		return false;
	l->empty = e;
	res->act_ns = act;
	res->delay_ns = act - now_abs;
	res->n = n;
	return true;
}

int cpat_rate_reserve(struct cpat_rate *l, size_t n,
		      struct cpat_rate_reservation *res)
{
	if (!l || !res || n == 0 || n > l->burst_n)
		return -EINVAL;
	cpat__lock(&l->lock);
	take_locked(l, cpat_now_ns(), n, CPAT_FOREVER, res);
	cpat__unlock(&l->lock);
	return 0;
}

static void cancel_locked(struct cpat_rate *l,
			  const struct cpat_rate_reservation *res)
{
	int64_t now = cpat_now_ns();
	if (res->act_ns <= now || res->n == 0)
		return;
	double act = rel(l, res->act_ns);
	double later = (l->empty - act) / l->T; /* held by later ones */
	double back = (double)res->n - (later > 0 ? later : 0);
	if (back <= 0)
		return;
	if (back > (double)res->n)
		back = (double)res->n;
	l->empty -= back * l->T;
}

int cpat_rate_cancel(struct cpat_rate *l,
		     const struct cpat_rate_reservation *res)
{
	if (!l || !res)
		return -EINVAL;
	cpat__lock(&l->lock);
	cancel_locked(l, res);
	cpat__unlock(&l->lock);
	return 0;
}

int cpat_rate_set_rate(struct cpat_rate *l, double rate)
{
	if (!l || !rate_ok(rate))
		return -EINVAL;
	cpat__lock(&l->lock);
	double now = rel(l, cpat_now_ns());
	double base = max_d(l->empty, now - l->burst * l->T);
	double tokens = (now - base) / l->T; /* may be negative: a debt */
	l->T = 1e9 / rate;
	l->empty = now - tokens * l->T;
	cpat__unlock(&l->lock);
	return 0;
}

static void watch_fired(struct cpat__watch *w, int cause)
{
	_Atomic uint32_t *word = w->arg;
	(void)cause;
	atomic_store_explicit(word, 1, memory_order_release);
	cpat__unpark_one(word);
}

int cpat_rate_wait_until(struct cpat_rate *l, struct cpat_token *tok,
			 int64_t deadline_ns)
{
	if (!l || !cpat__deadline_ok(deadline_ns))
		return -EINVAL;
	int rc = cpat_token_status(tok);
	if (rc)
		return rc;
	struct cpat_rate_reservation res;
	int64_t now = cpat_now_ns();
	cpat__lock(&l->lock);
	bool ok = take_locked(l, now, 1, deadline_ns, &res);
	if (ok && res.delay_ns > 0)
		l->nwaiting++;
	cpat__unlock(&l->lock);
	if (!ok)
		return -ETIMEDOUT;
	if (res.delay_ns == 0)
		return 0;

	_Atomic uint32_t fired;
	atomic_init(&fired, 0);
	struct cpat__watch w = {.fn = watch_fired, .arg = &fired};
	bool watching = false;
	if (tok) {
		cpat_token_ref(tok);
		rc = cpat__token_watch(tok, &w);
		watching = rc == 0;
	}
	while (rc == 0 && !atomic_load_explicit(&fired, memory_order_acquire) &&
	       cpat_now_ns() < res.act_ns)
		cpat__park(&fired, 0, res.act_ns);
	if (watching)
		cpat__token_unwatch(tok, &w);
	if (rc == 0 && tok)
		rc = cpat_token_status(tok);
	cpat__lock(&l->lock);
	l->nwaiting--;
	if (rc != 0)
		cancel_locked(l, &res);
	cpat__unlock(&l->lock);
	cpat_token_unref(tok);
	return rc;
}

int cpat_rate_wait(struct cpat_rate *l, struct cpat_token *tok)
{
	return cpat_rate_wait_until(l, tok, CPAT_FOREVER);
}

size_t cpat__rate_waiting(struct cpat_rate *l)
{
	cpat__lock(&l->lock);
	size_t n = l->nwaiting;
	cpat__unlock(&l->lock);
	return n;
}
