/*
 * Parallel map (cpattern/parallel.h).
 *
 * DESIGN
 *
 * A map's state, heap-allocated and reference counted (caller + each pool
 * task), holds `next`, the first index not yet handed out; a worker claims
 * [i, i + chunk) with one fetch_add. `busy` counts the workers inside the
 * claiming loop: a worker increments it before it checks `stop` and claims,
 * and decrements it when it leaves; the caller works too, then sets `stop`
 * if it stopped early, and waits until busy is 0 (Dekker-style, seq_cst: a
 * worker that enters later sees stop or finds nothing left to claim, and
 * touches neither array). So the caller returns as soon as every claimed
 * chunk is finished, without waiting for pool tasks that have not started
 * (a pool whose workers are all busy, or the caller being one of them,
 * cannot deadlock it); late tasks find nothing to do and drop their
 * reference, and the last reference frees the state. Wake-up: the caller
 * sets `waiting` then re-reads busy and parks on it; a worker leaving
 * unparks if `waiting` is set.
 *
 * The map's own threads are joined before the call returns, so none
 * outlives it.
 */
#include "internal.h"
#include "spin.h"

#include "cpattern/parallel.h"
#include "cpattern/pool.h"

struct pmap {
	_Atomic int refs;
	_Atomic size_t next;
	_Atomic uint32_t busy;
	_Atomic uint32_t waiting;
	_Atomic int stop;
	_Atomic int rc;
	const char *in;
	char *out;
	size_t in_size, out_size, n, chunk;
	cpat_map_item_fn fn;
	void *arg;
	struct cpat_token *tok;
};

static void pmap_unref(struct pmap *m)
{
	if (atomic_fetch_sub(&m->refs, 1) == 1)
		cpat__free(m);
}

static void pmap_fail(struct pmap *m, int rc)
{
	int zero = 0;
	atomic_compare_exchange_strong(&m->rc, &zero, rc);
	atomic_store(&m->stop, 1);
}

static void pmap_work(struct pmap *m)
{
	atomic_fetch_add(&m->busy, 1);
	while (!atomic_load(&m->stop)) {
		/* Claim first: a helper that runs after the caller returned
		 * finds nothing and must not touch the caller's token. */
		size_t i = atomic_fetch_add(&m->next, m->chunk);
		if (i >= m->n)
			break;
		if (m->tok) {
			int c = cpat_token_status(m->tok);
			if (c < 0) {
				pmap_fail(m, c);
				break;
			}
		}
		size_t end = m->n - i < m->chunk ? m->n : i + m->chunk;
		for (; i < end; i++) {
			int rc = m->fn(m->in + i * m->in_size,
				       m->out + i * m->out_size, i, m->arg);
			if (rc < 0) {
				pmap_fail(m, rc);
				break;
			}
		}
	}
	atomic_fetch_sub(&m->busy, 1);
	if (atomic_load(&m->waiting))
		cpat__unpark_all(&m->busy);
}

static int pmap_task(void *arg, struct cpat_token *tok)
{
	(void)tok;
	pmap_work(arg);
	return 0;
}

static void pmap_task_done(void *arg, int rc)
{
	(void)rc;
	pmap_unref(arg);
}

static void *pmap_thread(void *arg)
{
	cpat__thread_name("cpat-pmap");
	pmap_work(arg);
	return NULL;
}

/* The caller has done its share: stop the others if it ended early, then
 * wait until no worker is inside a chunk. */
static void pmap_settle(struct pmap *m)
{
	if (atomic_load(&m->next) < m->n)
		atomic_store(&m->stop, 1);
	atomic_store(&m->waiting, 1);
	for (;;) {
		uint32_t b = atomic_load(&m->busy);
		if (b == 0)
			break;
		cpat__park(&m->busy, b, CPAT_FOREVER);
	}
}

int cpat_parallel_map(const void *in, size_t in_size, void *out,
		      size_t out_size, size_t n, cpat_map_item_fn fn, void *arg,
		      struct cpat_pool *pool, unsigned workers,
		      struct cpat_token *tok)
{
	if (!fn || in_size == 0 || out_size == 0 || (n > 0 && (!in || !out)) ||
	    (!pool && workers == 0))
		return -EINVAL;
	if (n > 0 && (n > SIZE_MAX / in_size || n > SIZE_MAX / out_size))
		return -EINVAL;
	if (tok) {
		int c = cpat_token_status(tok);
		if (c < 0)
			return c;
	}
	if (n == 0)
		return 0;
	unsigned par = workers;
	if (pool) {
		struct cpat_pool_stats ps;
		par = cpat_pool_stats(pool, &ps) == 0 && ps.workers > 0
			      ? ps.workers + 1
			      : 2;
	}
	struct pmap *m = cpat__calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->in = in;
	m->out = out;
	m->in_size = in_size;
	m->out_size = out_size;
	m->n = n;
	m->fn = fn;
	m->arg = arg;
	m->tok = tok;
	size_t chunk = n / ((size_t)par * 8);
	m->chunk = chunk < 1 ? 1 : chunk > 1024 ? 1024 : chunk;
	atomic_store(&m->refs, 1);

	pthread_t *th = NULL;
	unsigned started = 0;
	int rc = 0;
	if (pool) {
		for (unsigned i = 0; i + 1 < par; i++) {
			struct cpat_task t = {pmap_task, pmap_task_done, m};
			atomic_fetch_add(&m->refs, 1);
			int r = cpat_pool_try_submit(pool, &t);
			if (r != 0) {
				atomic_fetch_sub(&m->refs, 1);
				if (r == -EPIPE && i == 0)
					rc = -EPIPE;
				break;
			}
		}
	} else if (par > 1) {
		th = cpat__calloc(par - 1, sizeof(*th));
		if (!th) {
			cpat__free(m);
			return -ENOMEM;
		}
		for (unsigned i = 0; i + 1 < par; i++) {
			if (cpat__thread_start(&th[i], pmap_thread, m, false) !=
			    0)
				break;
			started++;
		}
		if (started == 0)
			rc = -EAGAIN;
	}
	if (rc == 0) {
		pmap_work(m);
		pmap_settle(m);
		rc = atomic_load(&m->rc);
	}
	for (unsigned i = 0; i < started; i++)
		CPAT_CHECK(pthread_join(th[i], NULL) == 0);
	cpat__free(th);
	pmap_unref(m);
	return rc;
}
