/*
 * Fan-out, fan-in, ordered merge and broadcast (cpattern/fan.h).
 *
 * DESIGN
 *
 * A fan owns a token (child of the caller's), its threads, and small
 * per-thread buffers made at start; the channels stay the caller's. Nothing
 * is allocated per item.
 *
 * Start gate. Every thread first waits on `gate` (0: wait, 1: go, 2:
 * abort). The constructor opens it only once every thread has started; if
 * one could not be started it sets 2, and the threads started exit without
 * touching any channel, so a failed constructor has no effect: "nothing is
 * closed". Waiting on the gate: park on the word while it is 0; the opener
 * stores it and unparks all (start-up only, so the system call is fine).
 *
 * Stop. A worker function's negative return is recorded by fail(): a CAS
 * of `rc` from 0 (the first error wins), then the token is cancelled; an
 * error returned after the token fired is part of the stop, so fail()
 * records the token's cause instead. A thread whose channel call under the
 * fan token fails with anything but -EPIPE (an input closed and drained,
 * or an output closed by someone else) records what it returned, which is
 * the token's cause, by the same CAS (stopped()). So cpat_fan_wait()
 * returns the cause exactly when a thread was cut short by it, and 0 when
 * every input ended normally, even if the token fired afterwards. There
 * is no watch callback on the token: a token sets the status of its tree
 * before it runs any callback, so a callback could run after the threads
 * saw the status, exited and were joined (a cancel reported as 0). Threads
 * block only in channel operations under the fan token, so they all return
 * promptly.
 * A thread that stops holds at most one item (received, not yet sent): it
 * is lost to the caller, as the header says; channels keep the rest.
 *
 * Closing outputs exactly once. Shared output (fan-out with one output,
 * fan-in, merge): `live` counts the threads; the one whose exit takes it
 * to 0 closes the output. Fan-out with one output per worker: worker i
 * closes outs[i] as it exits. Broadcast: its single thread closes every
 * output as it exits. A thread exits when its input is closed and drained
 * (-EPIPE), or on a stop.
 *
 * Wait. cpat_fan_wait() joins the threads. cpat_fan_wait_until() first
 * waits for `running` to reach 0 (each thread decrements it as its last
 * touch of the fan and signals the `exited` event, cpat__event_wait()),
 * under the caller's token and deadline; if it gives up, nothing is joined
 * and the fan runs on.
 *
 * Ordered merge (one thread): items that arrive before their turn are
 * held in slots, found in order by a binary min-heap on their sequence
 * numbers. The thread selects over the open inputs; once `window` items
 * are held, only over the inputs that may still hold the next number
 * (those whose last item read is below it: each input is increasing), so
 * the window is exceeded only by an input that turns out to be ahead as
 * well (at most one item per input, hence window + nins slots). If every
 * open input is ahead and the next number is not held, or every input is
 * closed with items still held, the next number can never come: that is a
 * gap, the merge ends with -EPIPE, and the items it holds are counted as
 * dropped (cpat_fan_dropped(f, 0)). Items whose number was already passed
 * (duplicates, or out of order within their input) are dropped and
 * counted too.
 *
 * Broadcast (one thread): each item goes to every output in turn: with
 * BLOCK_ALL by a blocking send (so the slowest output paces all), with
 * DROP_SLOW by try_send, a full output missing the item (dropped[i]++). An
 * output closed by someone else also counts its missed items as dropped.
 * dropped[] has one writer (the thread): relaxed load + store; readers
 * load relaxed.
 */
#include "internal.h"
#include "spin.h"
#include "testhooks.h"

#include <limits.h>

#include "cpattern/chan.h"
#include "cpattern/fan.h"

enum { F_OUT, F_IN, F_MERGE, F_BCAST };

static _Atomic long g_live_threads;

long cpat__fan_live_threads(void)
{
	return atomic_load(&g_live_threads);
}

struct fthread {
	struct cpat_fan *f;
	unsigned id;
	pthread_t th;
	bool started;
};

struct cpat_fan {
	int kind;
	struct cpat_token *tok;
	_Atomic int rc;
	_Atomic uint32_t gate;
	unsigned nthreads;
	struct fthread *th;
	struct cpat_chan *in;
	struct cpat_chan **chs; /* outputs (out, broadcast) or inputs */
	size_t nchs;
	struct cpat_chan *outch;
	cpat_fan_fn fn;
	void *arg;
	int policy;
	_Atomic unsigned live;
	_Atomic uint64_t *dropped; /* per output (broadcast), [0] (merge) */
	size_t ndropped;
	char *bufs; /* per-thread: in item + out item */
	size_t buf_stride, in_size;
	/* Ordered merge. */
	cpat_seq_fn seq;
	void *seq_arg;
	uint64_t first_seq;
	size_t window;
	bool waited;
	int final_rc;
	/* Threads not yet finished, and a word bumped as each finishes (and
	 * by a wait's token watch); a wait parks on it (see Wait). */
	_Atomic unsigned running;
	struct cpat__event exited; /* signalled as each thread exits */
};

/* ---- common ---- */

/* The first stop is what wait returns. */
static void record(struct cpat_fan *f, int rc)
{
	int zero = 0;
	atomic_compare_exchange_strong(&f->rc, &zero, rc);
}

static void fail(struct cpat_fan *f, int rc)
{
	int cause = cpat_token_status(f->tok);
	record(f, cause != 0 ? cause : rc);
	cpat_token_cancel(f->tok);
}

/* A channel call under the fan token returned rc != 0: -EPIPE is a normal
 * end; anything else is the token's cause (see "Stop"). */
static void stopped(struct cpat_fan *f, int rc)
{
	if (rc != -EPIPE)
		record(f, rc);
}

/* Waits for the start gate; false: abort, touch nothing. */
static bool gate_wait(struct cpat_fan *f)
{
	for (;;) {
		uint32_t g = atomic_load(&f->gate);
		if (g == 1)
			return true;
		if (g == 2)
			return false;
		cpat__park(&f->gate, 0, CPAT_FOREVER);
	}
}

/* A fan thread's last touch of the fan (wait may join it right after). */
static void thread_exit(struct cpat_fan *f)
{
	atomic_fetch_sub(&f->running, 1);
	cpat__event_signal(&f->exited);
	atomic_fetch_sub(&g_live_threads, 1);
}

static void dropped_add(struct cpat_fan *f, size_t i, uint64_t v)
{
	atomic_store_explicit(
		&f->dropped[i],
		atomic_load_explicit(&f->dropped[i], memory_order_relaxed) + v,
		memory_order_relaxed);
}

/* ---- the threads ---- */

static void *out_main(void *arg)
{
	struct fthread *t = arg;
	cpat__thread_name("cpat-fan-out");
	struct cpat_fan *f = t->f;
	if (gate_wait(f)) {
		struct cpat_chan *out = f->chs[f->nchs == 1 ? 0 : t->id];
		char *in = f->bufs + t->id * f->buf_stride;
		char *res = in + f->in_size;
		for (;;) {
			int rc = cpat_chan_recv(f->in, in, f->tok);
			if (rc != 0) {
				stopped(f, rc);
				break;
			}
			rc = f->fn(in, res, t->id, f->arg);
			if (rc < 0) {
				fail(f, rc);
				break;
			}
			if (rc == 0 &&
			    (rc = cpat_chan_send(out, res, f->tok)) != 0) {
				stopped(f, rc);
				break;
			}
		}
		if (f->nchs == 1) {
			if (atomic_fetch_sub(&f->live, 1) == 1)
				cpat_chan_close(out);
		} else {
			cpat_chan_close(out);
		}
	}
	thread_exit(f);
	return NULL;
}

static void *in_main(void *arg)
{
	struct fthread *t = arg;
	cpat__thread_name("cpat-fan-in");
	struct cpat_fan *f = t->f;
	if (gate_wait(f)) {
		char *buf = f->bufs + t->id * f->buf_stride;
		int rc;
		while ((rc = cpat_chan_recv(f->chs[t->id], buf, f->tok)) == 0)
			if ((rc = cpat_chan_send(f->outch, buf, f->tok)) != 0)
				break;
		stopped(f, rc);
		if (atomic_fetch_sub(&f->live, 1) == 1)
			cpat_chan_close(f->outch);
	}
	thread_exit(f);
	return NULL;
}

static void *bcast_main(void *arg)
{
	struct fthread *t = arg;
	cpat__thread_name("cpat-broadcast");
	struct cpat_fan *f = t->f;
	if (gate_wait(f)) {
		char *buf = f->bufs;
		int rc;
		while ((rc = cpat_chan_recv(f->in, buf, f->tok)) == 0) {
			for (size_t i = 0; i < f->nchs && rc == 0; i++) {
				if (f->policy == CPAT_FAN_BLOCK_ALL)
					rc = cpat_chan_send(f->chs[i], buf,
							    f->tok);
				else
					rc = cpat_chan_try_send(f->chs[i], buf);
				if (rc == -EAGAIN || rc == -EPIPE) {
					dropped_add(f, i, 1);
					rc = 0;
				}
			}
			if (rc != 0)
				break;
		}
		stopped(f, rc);
		for (size_t i = 0; i < f->nchs; i++)
			cpat_chan_close(f->chs[i]);
	}
	thread_exit(f);
	return NULL;
}

/*
 * Ordered merge state: the items held out of order live in `cap` slots
 * (window + nins); a binary min-heap of (seq, slot) finds the next one;
 * free slots are a stack. All in f->bufs, owned by the one merge thread.
 */
struct mheap {
	uint64_t seq;
	size_t slot;
};

struct merge {
	struct cpat_fan *f;
	size_t esz, stride, cap, held; /* stride: esz rounded to 16 */
	uint64_t next;
	char *slots;
	struct mheap *heap;
	size_t *freel;
	size_t nfree;
	uint64_t *last; /* per input: last seq read */
	unsigned char *has_last, *closed;
};

static void heap_push(struct merge *m, uint64_t seq, const void *item)
{
	size_t slot = m->freel[--m->nfree];
	memcpy(m->slots + slot * m->stride, item, m->esz);
	size_t i = m->held++;
	while (i > 0) {
		size_t up = (i - 1) / 2;
		if (m->heap[up].seq <= seq)
			break;
		m->heap[i] = m->heap[up];
		i = up;
	}
	m->heap[i].seq = seq;
	m->heap[i].slot = slot;
}

static void heap_pop(struct merge *m)
{
	m->freel[m->nfree++] = m->heap[0].slot;
	struct mheap x = m->heap[--m->held];
	size_t i = 0, n = m->held;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && m->heap[c + 1].seq < m->heap[c].seq)
			c++;
		if (x.seq <= m->heap[c].seq)
			break;
		m->heap[i] = m->heap[c];
		i = c;
	}
	if (n > 0)
		m->heap[i] = x;
}

/* Sends every held item that is next in line; false on a stop. */
static bool merge_emit(struct merge *m)
{
	struct cpat_fan *f = m->f;
	while (m->held > 0 && m->heap[0].seq <= m->next) {
		if (m->heap[0].seq == m->next) {
			int rc = cpat_chan_send(
				f->outch,
				m->slots + m->heap[0].slot * m->stride, f->tok);
			if (rc != 0) {
				stopped(f, rc);
				return false;
			}
			m->next++;
		} else {
			dropped_add(f, 0, 1); /* a duplicate number */
		}
		heap_pop(m);
	}
	return true;
}

/* Bytes of merge state for n inputs and a window. 0 on overflow. */
static size_t merge_size(size_t esz, size_t n, size_t window)
{
	size_t cap = window + n;
	size_t stride = (esz + 15) / 16 * 16;
	if (cap < window || stride < esz ||
	    cap > (SIZE_MAX / 4) / (stride + 2 * sizeof(size_t) +
				    sizeof(struct mheap)))
		return 0;
	return (cap + 1) * stride + cap * sizeof(struct mheap) +
	       cap * sizeof(size_t) + n * sizeof(uint64_t) + 2 * n + 64;
}

static void *merge_main(void *arg)
{
	struct fthread *t = arg;
	cpat__thread_name("cpat-merge");
	struct cpat_fan *f = t->f;
	if (gate_wait(f)) {
		struct merge m;
		size_t n = f->nchs;
		m.f = f;
		m.esz = f->in_size;
		m.stride = (m.esz + 15) / 16 * 16;
		m.cap = f->window + n;
		m.held = 0;
		m.next = f->first_seq;
		/* Layout: heap, free list, last (8-aligned), then the item
		 * bytes and flags. */
		char *b = f->bufs;
		m.heap = (struct mheap *)b;
		b += m.cap * sizeof(struct mheap);
		m.freel = (size_t *)b;
		b += m.cap * sizeof(size_t);
		m.last = (uint64_t *)b;
		b += n * sizeof(uint64_t);
		b = f->bufs + ((size_t)(b - f->bufs) + 15) / 16 * 16;
		m.slots = b;
		b += m.cap * m.stride;
		char *tmp = b;
		b += m.stride;
		m.has_last = (unsigned char *)b;
		m.closed = m.has_last + n;
		memset(m.has_last, 0, 2 * n);
		for (size_t i = 0; i < m.cap; i++)
			m.freel[i] = m.cap - 1 - i;
		m.nfree = m.cap;
		struct cpat_select_case cs[CPAT_SELECT_MAX];
		size_t map[CPAT_SELECT_MAX];
		for (;;) {
			if (!merge_emit(&m))
				break;
			/* While the window is full, read only the inputs that
			 * may still hold the next number: those not ahead of
			 * it. */
			bool full = m.held >= f->window;
			size_t k = 0, open = 0;
			for (size_t i = 0; i < n; i++) {
				if (m.closed[i])
					continue;
				open++;
				if (full && m.has_last[i] &&
				    m.last[i] >= m.next)
					continue;
				cs[k].ch = f->chs[i];
				cs[k].op = CPAT_SELECT_RECV;
				cs[k].elem = tmp;
				map[k++] = i;
			}
			if (k == 0) {
				/* Every input is closed, or ahead of the next
				 * number: it can never come. */
				if (m.held > 0 || open > 0) {
					dropped_add(f, 0, m.held);
					fail(f, -EPIPE);
				}
				break;
			}
			int r = cpat_chan_select(cs, k, f->tok, CPAT_FOREVER);
			if (r < 0) {
				stopped(f, r);
				break;
			}
			size_t i = map[r];
			if (cs[r].rc != 0) {
				m.closed[i] = 1;
				continue;
			}
			uint64_t s = f->seq(tmp, f->seq_arg);
			m.last[i] = s;
			m.has_last[i] = 1;
			if (s == m.next) {
				int rc = cpat_chan_send(f->outch, tmp, f->tok);
				if (rc != 0) {
					stopped(f, rc);
					break;
				}
				m.next++;
			} else if (s < m.next) {
				dropped_add(f, 0, 1); /* a duplicate number */
			} else {
				heap_push(&m, s, tmp);
			}
		}
		if (atomic_fetch_sub(&f->live, 1) == 1)
			cpat_chan_close(f->outch);
	}
	thread_exit(f);
	return NULL;
}

/* ---- construction ---- */

static void fan_free(struct cpat_fan *f)
{
	if (!f)
		return;
	if (f->tok)
		cpat_token_unref(f->tok);
	cpat__free(f->th);
	cpat__free(f->chs);
	cpat__free(f->bufs);
	cpat__free(f->dropped);
	cpat__free(f);
}

static int fan_alloc(struct cpat_fan **out, int kind, unsigned nthreads,
		     struct cpat_chan **chs, size_t nchs, size_t buf_stride,
		     size_t bufs_size, size_t ndropped, struct cpat_token *tok)
{
	struct cpat_fan *f = cpat__calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->kind = kind;
	f->nthreads = nthreads;
	atomic_init(&f->running, nthreads);
	f->nchs = nchs;
	f->buf_stride = buf_stride;
	f->ndropped = ndropped;
	f->th = cpat__calloc(nthreads, sizeof(*f->th));
	f->chs = cpat__calloc(nchs, sizeof(*f->chs));
	f->bufs = cpat__malloc(bufs_size ? bufs_size : 1);
	f->dropped = cpat__calloc(ndropped ? ndropped : 1, sizeof(*f->dropped));
	int rc = (!f->th || !f->chs || !f->bufs || !f->dropped) ? -ENOMEM : 0;
	if (rc == 0)
		rc = cpat_token_create(&f->tok, tok);
	if (rc != 0) {
		fan_free(f);
		return rc;
	}
	memcpy(f->chs, chs, nchs * sizeof(*chs));
	atomic_store(&f->live, nthreads);
	*out = f;
	return 0;
}

/* Starts the threads and opens the gate; on failure aborts, joins and
 * frees. */
static int fan_go(struct cpat_fan **out, struct cpat_fan *f,
		  void *(*fn)(void *))
{
	int rc = 0;
	for (unsigned i = 0; i < f->nthreads; i++) {
		f->th[i].f = f;
		f->th[i].id = i;
		atomic_fetch_add(&g_live_threads, 1);
		rc = cpat__thread_start(&f->th[i].th, fn, &f->th[i], false);
		if (rc != 0) {
			atomic_fetch_sub(&g_live_threads, 1);
			break;
		}
		f->th[i].started = true;
	}
	atomic_store(&f->gate, rc == 0 ? 1 : 2);
	cpat__unpark_all(&f->gate);
	if (rc != 0) {
		for (unsigned i = 0; i < f->nthreads; i++)
			if (f->th[i].started)
				CPAT_CHECK(pthread_join(f->th[i].th, NULL) ==
					   0);
		fan_free(f);
		return rc;
	}
	*out = f;
	return 0;
}

static bool chans_ok(struct cpat_chan **chs, size_t n)
{
	if (!chs || n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!chs[i])
			return false;
	return true;
}

int cpat_fan_out(struct cpat_fan **out, struct cpat_chan *in,
		 struct cpat_chan **outs, size_t nouts, unsigned workers,
		 cpat_fan_fn fn, void *arg, struct cpat_token *tok)
{
	if (out)
		*out = NULL;
	if (!out || !in || !fn || workers == 0 || !chans_ok(outs, nouts) ||
	    (nouts != 1 && nouts != workers))
		return -EINVAL;
	size_t isz = cpat_chan_elem_size(in), osz = 0;
	for (size_t i = 0; i < nouts; i++)
		if (cpat_chan_elem_size(outs[i]) > osz)
			osz = cpat_chan_elem_size(outs[i]);
	/* The result buffer starts at the first max_align_t boundary after
	 * the input item, so a worker may store any type through it. */
	const size_t al = _Alignof(max_align_t);
	size_t ioff = (isz + al - 1) / al * al;
	size_t stride = (ioff + osz + al - 1) / al * al;
	if (ioff < isz || stride < ioff || (size_t)workers > SIZE_MAX / stride)
		return -EINVAL;
	struct cpat_fan *f;
	int rc = fan_alloc(&f, F_OUT, workers, outs, nouts, stride,
			   stride * workers, 0, tok);
	if (rc)
		return rc;
	f->in = in;
	f->fn = fn;
	f->arg = arg;
	f->in_size = ioff; /* where the result buffer starts */
	return fan_go(out, f, out_main);
}

int cpat_fan_in(struct cpat_fan **out, struct cpat_chan **ins, size_t nins,
		struct cpat_chan *outch, struct cpat_token *tok)
{
	if (out)
		*out = NULL;
	if (!out || !outch || !chans_ok(ins, nins) || nins > UINT_MAX)
		return -EINVAL;
	size_t esz = cpat_chan_elem_size(outch);
	for (size_t i = 0; i < nins; i++)
		if (cpat_chan_elem_size(ins[i]) != esz)
			return -EINVAL;
	size_t stride = (esz + 15) / 16 * 16;
	if (nins > SIZE_MAX / stride)
		return -EINVAL;
	struct cpat_fan *f;
	int rc = fan_alloc(&f, F_IN, (unsigned)nins, ins, nins, stride,
			   stride * nins, 0, tok);
	if (rc)
		return rc;
	f->outch = outch;
	f->in_size = esz;
	return fan_go(out, f, in_main);
}

int cpat_fan_merge_ordered(struct cpat_fan **out, struct cpat_chan **ins,
			   size_t nins, struct cpat_chan *outch,
			   cpat_seq_fn seq, void *seq_arg, uint64_t first_seq,
			   size_t window, struct cpat_token *tok)
{
	if (out)
		*out = NULL;
	if (!out || !outch || !seq || window == 0 || !chans_ok(ins, nins) ||
	    nins > CPAT_SELECT_MAX)
		return -EINVAL;
	size_t esz = cpat_chan_elem_size(outch);
	for (size_t i = 0; i < nins; i++)
		if (cpat_chan_elem_size(ins[i]) != esz)
			return -EINVAL;
	size_t size = merge_size(esz, nins, window);
	if (size == 0)
		return -EINVAL;
	struct cpat_fan *f;
	int rc = fan_alloc(&f, F_MERGE, 1, ins, nins, size, size, 1, tok);
	if (rc)
		return rc;
	f->outch = outch;
	f->in_size = esz;
	f->seq = seq;
	f->seq_arg = seq_arg;
	f->first_seq = first_seq;
	f->window = window;
	return fan_go(out, f, merge_main);
}

int cpat_fan_broadcast(struct cpat_fan **out, struct cpat_chan *in,
		       struct cpat_chan **outs, size_t nouts,
		       enum cpat_fan_policy policy, struct cpat_token *tok)
{
	if (out)
		*out = NULL;
	if (!out || !in || !chans_ok(outs, nouts) ||
	    (policy != CPAT_FAN_BLOCK_ALL && policy != CPAT_FAN_DROP_SLOW))
		return -EINVAL;
	size_t esz = cpat_chan_elem_size(in);
	for (size_t i = 0; i < nouts; i++)
		if (cpat_chan_elem_size(outs[i]) != esz)
			return -EINVAL;
	struct cpat_fan *f;
	int rc = fan_alloc(&f, F_BCAST, 1, outs, nouts, esz, esz, nouts, tok);
	if (rc)
		return rc;
	f->in = in;
	f->in_size = esz;
	f->policy = policy;
	return fan_go(out, f, bcast_main);
}

uint64_t cpat_fan_dropped(struct cpat_fan *fan, size_t i)
{
	if (!fan || i >= fan->ndropped)
		return 0;
	return atomic_load_explicit(&fan->dropped[i], memory_order_relaxed);
}

static bool all_exited(void *arg)
{
	return atomic_load(&((struct cpat_fan *)arg)->running) == 0;
}

/* Waits until every thread has finished: 0, the token's cause or
 * -ETIMEDOUT. */
static int wait_threads(struct cpat_fan *f, struct cpat_token *tok,
			int64_t deadline)
{
	return cpat__event_wait(&f->exited, all_exited, f, tok, deadline);
}

int cpat_fan_wait_until(struct cpat_fan *fan, struct cpat_token *tok,
			int64_t deadline_ns)
{
	if (!fan || !cpat__deadline_ok(deadline_ns))
		return -EINVAL;
	if (fan->waited)
		return fan->final_rc;
	if (tok || deadline_ns != CPAT_FOREVER) {
		int rc = wait_threads(fan, tok, deadline_ns);
		if (rc != 0)
			return rc; /* the fan runs on */
	}
	for (unsigned i = 0; i < fan->nthreads; i++)
		if (fan->th[i].started)
			CPAT_CHECK(pthread_join(fan->th[i].th, NULL) == 0);
	fan->final_rc = atomic_load(&fan->rc);
	fan->waited = true;
	return fan->final_rc;
}

int cpat_fan_wait(struct cpat_fan *fan)
{
	return cpat_fan_wait_until(fan, NULL, CPAT_FOREVER);
}

int cpat_fan_cancel(struct cpat_fan *fan)
{
	if (!fan)
		return -EINVAL;
	cpat_token_cancel(fan->tok);
	return 0;
}

void cpat_fan_destroy(struct cpat_fan *fan)
{
	if (!fan)
		return;
	if (!fan->waited) {
		cpat_token_cancel(fan->tok);
		cpat_fan_wait(fan);
	}
	fan_free(fan);
}
