/*
 * Conformance and stress tests of cpattern/fan.h: fan-out, fan-in, ordered
 * merge, broadcast and parallel map.
 *
 * Every test asserts a documented behaviour of the header: return codes,
 * which items reached which channel and in which order, that outputs are
 * closed (once, and not before their time), and that a failed start leaves
 * no thread and no allocation behind. Worker functions and consumer threads
 * record into their own structs and atomics; the main thread asserts after
 * cpat_fan_wait() / th_crew_join(). Threads start on a barrier; nothing sleeps
 * to synchronise (a consumer that spins a few microseconds per item is a
 * slow consumer: data). The one bounded poll (the ordered merge's full
 * window) can only miss a bug, never invent one.
 *
 * "No thread left" counts the entries of /proc/self/task against a baseline
 * taken at the start of the test. The counting allocator is installed
 * before anything else and never removed. Sizes are small by default,
 * smaller under sanitizers, multiplied by CPAT_TEST_SCALE; the seed is
 * printed and read back from CPAT_TEST_SEED.
 */
#include "pipeline_testlib.h" /* assert_no_threads_left, spin_ns, mktok */

#include <dirent.h>
#include <sched.h>

/* ---- helpers ------------------------------------------------------------ */

static struct cpat_chan *mk(size_t elem_size, size_t cap)
{
	struct cpat_chan *ch = NULL;
	if (cpat_chan_create(&ch, elem_size, cap) != 0 || ch == NULL)
		abort();
	return ch;
}

/* Sends 0..n-1 (uint64_t) into @p ch and closes it. */
static void fill_close(struct cpat_chan *ch, uint64_t from, uint64_t n,
		       int close)
{
	for (uint64_t i = from; i < from + n; i++)
		if (cpat_chan_send(ch, &i, NULL) != 0)
			abort();
	if (close && cpat_chan_close(ch) != 0)
		abort();
}

/* A consumer thread: receives uint64_t from its channel until -EPIPE. */
struct cons {
	struct th_barrier *start;
	struct cpat_chan *ch;
	uint64_t *got;
	uint64_t cap, n;
	int64_t spin;
	int rc;
};

static void *cons_main(void *arg)
{
	struct cons *c = arg;
	if (c->start)
		th_barrier_wait(c->start);
	uint64_t v;
	int rc;
	while ((rc = cpat_chan_recv(c->ch, &v, NULL)) == 0) {
		if (c->n < c->cap)
			c->got[c->n] = v;
		c->n++;
		if (c->spin)
			spin_ns(c->spin);
	}
	c->rc = rc;
	return NULL;
}

/* A producer thread: sends from..from+n-1 into its channel, then closes
 * it (if close). */
struct prod {
	struct th_barrier *start;
	struct cpat_chan *ch;
	uint64_t *items; /* if not NULL, these n items instead */
	size_t isize;
	uint64_t from, n;
	int close;
	int rc;
};

static void *prod_main(void *arg)
{
	struct prod *p = arg;
	if (p->start)
		th_barrier_wait(p->start);
	for (uint64_t i = 0; i < p->n; i++) {
		uint64_t v = p->from + i;
		const void *e =
			p->items ? (const void *)((const char *)p->items +
						  i * p->isize)
				 : (const void *)&v;
		int rc = cpat_chan_send(p->ch, e, NULL);
		if (rc != 0) {
			p->rc = rc;
			return NULL;
		}
	}
	if (p->close)
		p->rc = cpat_chan_close(p->ch);
	return NULL;
}

/* ---- worker functions --------------------------------------------------- */

struct fcfg {
	uint64_t fail_at;  /* item value to fail at */
	int fail_rc;       /* 0: never */
	uint64_t skip_mod; /* return 1 (send nothing) when v % mod == 0 */
	unsigned workers;
	_Atomic uint64_t calls;
	_Atomic uint64_t bad_worker;
	_Atomic uint64_t per_worker[8];
};

/* out = v * 8 + worker */
static int fan_fn(const void *in, void *out, unsigned worker, void *arg)
{
	struct fcfg *c = arg;
	uint64_t v = *(const uint64_t *)in;
	atomic_fetch_add(&c->calls, 1);
	if (worker >= c->workers || worker >= 8)
		atomic_fetch_add(&c->bad_worker, 1);
	else
		atomic_fetch_add(&c->per_worker[worker], 1);
	if (c->fail_rc && v == c->fail_at)
		return c->fail_rc;
	if (c->skip_mod && v % c->skip_mod == 0)
		return 1;
	*(uint64_t *)out = v * 8 + worker;
	return 0;
}

struct seq_item {
	uint64_t seq;
	uint64_t payload;
};

static uint64_t seq_of(const void *item, void *arg)
{
	(void)arg;
	return ((const struct seq_item *)item)->seq;
}

struct mcfg {
	uint64_t fail_at;
	int fail_rc;
	_Atomic uint64_t calls;
	_Atomic uint64_t bad_index;
	_Atomic uint64_t off_caller; /* calls not on the calling thread */
	pthread_t caller;
	int64_t spin;
};

static int map_item(const void *in, void *out, size_t index, void *arg)
{
	struct mcfg *c = arg;
	uint32_t v = *(const uint32_t *)in;
	atomic_fetch_add(&c->calls, 1);
	if (!pthread_equal(pthread_self(), c->caller))
		atomic_fetch_add(&c->off_caller, 1);
	if (v != (uint32_t)(index * 2654435761u))
		atomic_fetch_add(&c->bad_index, 1);
	if (c->spin)
		spin_ns(c->spin);
	if (c->fail_rc && index == c->fail_at)
		return c->fail_rc;
	*(uint64_t *)out = (uint64_t)v * v + index;
	return 0;
}

static uint32_t *map_input(size_t n)
{
	uint32_t *in = malloc((n ? n : 1) * sizeof *in);
	for (size_t i = 0; i < n; i++)
		in[i] = (uint32_t)(i * 2654435761u);
	return in;
}

static void mcfg_init(struct mcfg *c)
{
	memset(c, 0, sizeof *c);
	c->caller = pthread_self();
}

/* ---- fan-out ------------------------------------------------------------ */

/* Fan-out workers are named "cpat-fan-out" (top -H, gdb, perf); the worker
 * function records its thread's name, read after cpat_fan_wait() joined
 * the worker. */
static int name_fn(const void *in, void *out, unsigned worker, void *arg)
{
	(void)worker;
	pthread_getname_np(pthread_self(), arg, 16);
	memcpy(out, in, 8);
	return 0;
}

TH_TEST_FN(fan_out_worker_thread_named_cpat_fan_out)
{
	(void)state;
#ifdef __linux__
	char name[16] = "";
	struct cpat_chan *in = mk(8, 4), *out = mk(8, 4);
	uint64_t v = 7;
	assert_int_equal(cpat_chan_send(in, &v, NULL), 0);
	assert_int_equal(cpat_chan_close(in), 0);
	struct cpat_fan *f = NULL;
	assert_int_equal(cpat_fan_out(&f, in, &out, 1, 1, name_fn, name, NULL),
			 0);
	assert_int_equal(cpat_fan_wait(f), 0);
	assert_string_equal(name, "cpat-fan-out");
	uint64_t got = 0;
	assert_int_equal(cpat_chan_recv(out, &got, NULL), 0);
	assert_int_equal(got, 7);
	cpat_fan_destroy(f);
	cpat_chan_destroy(in);
	cpat_chan_destroy(out);
#else
	skip();
#endif
}

TH_TEST_FN(fan_out_shared_output_4_workers_every_item_once_then_closed)
{
	(void)state;
	long thr = th_count_threads(), live = th_alloc_live();
	uint64_t n = (uint64_t)SIZE(50000, 5000);
	struct cpat_chan *in = mk(8, 16), *out = mk(8, 16);
	struct fcfg c = {.workers = 4, .skip_mod = 7};
	struct cpat_fan *f = NULL;
	assert_int_equal(cpat_fan_out(&f, in, &out, 1, 4, fan_fn, &c, NULL), 0);
	assert_non_null(f);
	struct th_crew crew;
	th_crew_init(&crew, 2);
	struct prod p = {.start = &crew.start, .ch = in, .n = n, .close = 1};
	struct cons k = {.start = &crew.start,
			 .ch = out,
			 .cap = n,
			 .got = malloc(n * sizeof(uint64_t))};
	th_crew_add(&crew, prod_main, &p);
	th_crew_add(&crew, cons_main, &k);
	th_crew_go(&crew);
	th_crew_join(&crew);
	assert_int_equal(cpat_fan_wait(f), 0);
	assert_int_equal(p.rc, 0);
	assert_int_equal(k.rc, -EPIPE);
	assert_int_equal(atomic_load(&c.calls), n);
	assert_int_equal(atomic_load(&c.bad_worker), 0);
	uint64_t expect = n - (n + 6) / 7;
	assert_int_equal(k.n, expect);
	unsigned char *seen = calloc(n, 1);
	for (uint64_t i = 0; i < k.n; i++) {
		uint64_t v = k.got[i] / 8;
		assert_true(v < n);
		assert_true(v % 7 != 0);
		assert_int_equal(seen[v]++, 0);
	}
	/* Output closed by the fan: a second close changes nothing. */
	assert_int_equal(cpat_chan_is_closed(out), 1);
	assert_int_equal(cpat_chan_close(out), -EPIPE);
	/* Work was shared (4 workers; each took something is likely but
	 * not promised on 2 cores: not asserted). */
	assert_no_threads_left(thr);
	cpat_fan_destroy(f);
	cpat_chan_destroy(in);
	cpat_chan_destroy(out);
	free(seen);
	free(k.got);
	assert_int_equal(th_alloc_live(), live);
}

TH_TEST_FN(fan_out_per_worker_outputs_worker_i_sends_to_outs_i)
{
	(void)state;
	uint64_t n = (uint64_t)SIZE(20000, 3000);
	struct cpat_chan *in = mk(8, 8), *outs[4];
	for (int i = 0; i < 4; i++)
		outs[i] = mk(8, 4);
	struct fcfg c = {.workers = 4};
	struct cpat_fan *f = NULL;
	assert_int_equal(cpat_fan_out(&f, in, outs, 4, 4, fan_fn, &c, NULL), 0);
	struct th_crew crew;
	th_crew_init(&crew, 5);
	struct prod p = {.start = &crew.start, .ch = in, .n = n, .close = 1};
	struct cons k[4];
	for (int i = 0; i < 4; i++) {
		k[i] = (struct cons){.start = &crew.start,
				     .ch = outs[i],
				     .cap = n,
				     .got = malloc(n * sizeof(uint64_t)),
				     .spin = i == 3 ? 2 * CPAT_USEC : 0};
		th_crew_add(&crew, cons_main, &k[i]);
	}
	th_crew_add(&crew, prod_main, &p);
	th_crew_go(&crew);
	th_crew_join(&crew);
	assert_int_equal(cpat_fan_wait(f), 0);
	uint64_t total = 0;
	unsigned char *seen = calloc(n, 1);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(k[i].rc, -EPIPE);
		assert_int_equal(k[i].n, atomic_load(&c.per_worker[i]));
		uint64_t last = 0;
		for (uint64_t j = 0; j < k[i].n; j++) {
			assert_int_equal(k[i].got[j] % 8, (uint64_t)i);
			uint64_t v = k[i].got[j] / 8;
			assert_true(v < n);
			assert_int_equal(seen[v]++, 0);
			/* One worker takes items in channel order. */
			if (j > 0)
				assert_true(v > last);
			last = v;
		}
		total += k[i].n;
		assert_int_equal(cpat_chan_is_closed(outs[i]), 1);
	}
	assert_int_equal(total, n);
	cpat_fan_destroy(f);
	cpat_chan_destroy(in);
	for (int i = 0; i < 4; i++) {
		cpat_chan_destroy(outs[i]);
		free(k[i].got);
	}
	free(seen);
}

TH_TEST_FN(fan_out_worker_error_stops_fan_wait_returns_it_outputs_closed)
{
	(void)state;
	long thr = th_count_threads();
	const uint64_t n = 1000;
	struct cpat_chan *in = mk(8, n), *outs[3];
	for (int i = 0; i < 3; i++)
		outs[i] = mk(8, n);
	fill_close(in, 0, n, 0); /* left open: only the error stops it */
	struct fcfg c = {.workers = 3, .fail_at = 10, .fail_rc = -EIO};
	struct cpat_fan *f = NULL;
	assert_int_equal(cpat_fan_out(&f, in, outs, 3, 3, fan_fn, &c, NULL), 0);
	assert_int_equal(cpat_fan_wait(f), -EIO);
	assert_int_equal(cpat_fan_wait(f), -EIO); /* again: same result */
	assert_no_threads_left(thr);
	uint64_t got = 0;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(cpat_chan_is_closed(outs[i]), 1);
		uint64_t v;
		while (cpat_chan_try_recv(outs[i], &v) == 0) {
			assert_true(v / 8 != 10);
			got++;
		}
		assert_int_equal(cpat_chan_try_recv(outs[i], &v), -EPIPE);
	}
	/* The caller's input is left to its owner: open, with what was not
	 * taken still in it. */
	assert_int_equal(cpat_chan_is_closed(in), 0);
	assert_true(atomic_load(&c.calls) + cpat_chan_len(in) <= n);
	assert_true(got < atomic_load(&c.calls));
	cpat_fan_destroy(f);
	cpat_chan_destroy(in);
	for (int i = 0; i < 3; i++)
		cpat_chan_destroy(outs[i]);
}

TH_TEST_FN(fan_out_token_or_cancel_stops_with_cause_outputs_closed)
{
	(void)state;
	for (int how = 0; how < 3; how++) {
		long thr = th_count_threads();
		struct cpat_chan *in = mk(8, 4), *out = mk(8, 4);
		struct cpat_token *tok = mktok();
		struct fcfg c = {.workers = 2};
		struct cpat_fan *f = NULL;
		if (how == 2)
			cpat_token_cancel(tok); /* fired before start */
		int rc = cpat_fan_out(&f, in, &out, 1, 2, fan_fn, &c, tok);
		if (how == 2 && rc != 0) {
			/* Refusing to start under a fired token is allowed
			 * only with its cause, and nothing happened. */
			assert_int_equal(rc, -ECANCELED);
			assert_null(f);
			assert_int_equal(cpat_chan_is_closed(out), 0);
		} else {
			assert_int_equal(rc, 0);
			/* Workers are blocked on the empty, open input. */
			if (how == 0)
				cpat_token_cancel(tok);
			else if (how == 1)
				assert_int_equal(cpat_fan_cancel(f), 0);
			assert_int_equal(cpat_fan_wait(f), -ECANCELED);
			assert_int_equal(cpat_chan_is_closed(out), 1);
			assert_int_equal(cpat_chan_close(out), -EPIPE);
			assert_int_equal(cpat_chan_is_closed(in), 0);
			assert_int_equal(atomic_load(&c.calls), 0);
		}
		assert_no_threads_left(thr);
		cpat_fan_destroy(f);
		cpat_token_unref(tok);
		cpat_chan_destroy(in);
		cpat_chan_destroy(out);
	}
}

/* Destroy of a running fan stops it and waits. */
TH_TEST_FN(fan_destroy_while_running_stops_and_joins)
{
	(void)state;
	long thr = th_count_threads(), live = th_alloc_live();
	struct cpat_chan *in = mk(8, 4), *out = mk(8, 1);
	struct fcfg c = {.workers = 3};
	struct cpat_fan *f = NULL;
	assert_int_equal(cpat_fan_out(&f, in, &out, 1, 3, fan_fn, &c, NULL), 0);
	fill_close(in, 0, 4, 0);
	cpat_fan_destroy(f); /* workers blocked on a full output */
	assert_no_threads_left(thr);
	assert_int_equal(cpat_chan_is_closed(out), 1);
	cpat_chan_destroy(in);
	cpat_chan_destroy(out);
	assert_int_equal(th_alloc_live(), live);
}

/* ---- fan-in ------------------------------------------------------------- */

TH_TEST_FN(fan_in_closes_output_once_after_last_input_random_close_order)
{
	(void)state;
	struct th_rng rng;
	th_rng_init(&rng, 7);
	long rounds = SIZE(50, 10);
	for (long r = 0; r < rounds; r++) {
		long thr = th_count_threads();
		enum { N = 6 };
		struct cpat_chan *ins[N], *out = mk(8, 2);
		for (int i = 0; i < N; i++)
			ins[i] = mk(8, 4);
		struct cpat_fan *f = NULL;
		assert_int_equal(cpat_fan_in(&f, ins, N, out, NULL), 0);
		int order[N], open[N];
		for (int i = 0; i < N; i++) {
			order[i] = i;
			open[i] = 1;
		}
		for (int i = N - 1; i > 0; i--) {
			int j = (int)th_rng_below(&rng, (uint64_t)i + 1);
			int t = order[i];
			order[i] = order[j];
			order[j] = t;
		}
		uint64_t tag = 0;
		for (int s = 0; s < N; s++) {
			int c = order[s];
			if (s == N - 1) {
				/* The last input: items then close; all of
				 * them come out before the close. */
				fill_close(ins[c], 1000, 3, 1);
				break;
			}
			/* Close input c (with an item still in it). */
			uint64_t v = 500 + (uint64_t)s;
			assert_int_equal(cpat_chan_send(ins[c], &v, NULL), 0);
			assert_int_equal(cpat_chan_close(ins[c]), 0);
			open[c] = 0;
			uint64_t got;
			assert_int_equal(cpat_chan_recv(out, &got, NULL), 0);
			assert_int_equal(got, v);
			/* The output is still open: an item sent now to any
			 * open input comes through. */
			int o = order[s + 1 +
				      (int)th_rng_below(&rng,
							(uint64_t)(N - s - 1))];
			assert_true(open[o]);
			tag++;
			assert_int_equal(cpat_chan_send(ins[o], &tag, NULL), 0);
			assert_int_equal(cpat_chan_recv(out, &got, NULL), 0);
			assert_int_equal(got, tag);
			assert_int_equal(cpat_chan_is_closed(out), 0);
		}
		uint64_t got, want = 1000;
		int rc;
		while ((rc = cpat_chan_recv(out, &got, NULL)) == 0)
			assert_int_equal(got, want++);
		assert_int_equal(rc, -EPIPE);
		assert_int_equal(want, 1003);
		assert_int_equal(cpat_fan_wait(f), 0);
		assert_int_equal(cpat_chan_is_closed(out), 1);
		assert_int_equal(cpat_chan_close(out), -EPIPE);
		assert_no_threads_left(thr);
		cpat_fan_destroy(f);
		for (int i = 0; i < N; i++)
			cpat_chan_destroy(ins[i]);
		cpat_chan_destroy(out);
	}
}

TH_TEST_FN(fan_in_keeps_per_input_order_4_producers_nothing_lost)
{
	(void)state;
	uint64_t n = (uint64_t)SIZE(20000, 3000);
	enum { P = 4 };
	struct cpat_chan *ins[P], *out = mk(8, 8);
	for (int i = 0; i < P; i++)
		ins[i] = mk(8, 1 + (size_t)i * 3);
	struct cpat_fan *f = NULL;
	assert_int_equal(cpat_fan_in(&f, ins, P, out, NULL), 0);
	struct th_crew crew;
	th_crew_init(&crew, P + 1);
	struct prod p[P];
	for (int i = 0; i < P; i++) {
		p[i] = (struct prod){.start = &crew.start,
				     .ch = ins[i],
				     .from = (uint64_t)i << 32,
				     .n = n,
				     .close = 1};
		th_crew_add(&crew, prod_main, &p[i]);
	}
	struct cons k = {.start = &crew.start,
			 .ch = out,
			 .cap = P * n,
			 .got = malloc(P * n * sizeof(uint64_t))};
	th_crew_add(&crew, cons_main, &k);
	th_crew_go(&crew);
	th_crew_join(&crew);
	assert_int_equal(cpat_fan_wait(f), 0);
	assert_int_equal(k.rc, -EPIPE);
	assert_int_equal(k.n, P * n);
	uint64_t next[P] = {0};
	for (uint64_t j = 0; j < k.n; j++) {
		uint64_t src = k.got[j] >> 32, seq = k.got[j] & 0xffffffffu;
		assert_true(src < P);
		if (seq != next[src])
			fail_msg("input %llu: got %llu, expected %llu",
				 (unsigned long long)src,
				 (unsigned long long)seq,
				 (unsigned long long)next[src]);
		next[src]++;
	}
	cpat_fan_destroy(f);
	for (int i = 0; i < P; i++)
		cpat_chan_destroy(ins[i]);
	cpat_chan_destroy(out);
	free(k.got);
}

TH_TEST_FN(fan_in_token_stops_with_cause_and_closes_output)
{
	(void)state;
	long thr = th_count_threads();
	struct cpat_chan *ins[2] = {mk(8, 2), mk(8, 2)}, *out = mk(8, 2);
	struct cpat_token *tok = mktok();
	struct cpat_fan *f = NULL;
	assert_int_equal(cpat_fan_in(&f, ins, 2, out, tok), 0);
	cpat_token_cancel(tok);
	assert_int_equal(cpat_fan_wait(f), -ECANCELED);
	assert_int_equal(cpat_chan_is_closed(out), 1);
	assert_int_equal(cpat_chan_is_closed(ins[0]), 0);
	assert_int_equal(cpat_chan_is_closed(ins[1]), 0);
	assert_no_threads_left(thr);
	cpat_fan_destroy(f);
	cpat_token_unref(tok);
	cpat_chan_destroy(ins[0]);
	cpat_chan_destroy(ins[1]);
	cpat_chan_destroy(out);
}

/* ---- ordered merge ------------------------------------------------------ */

/* Consumer of seq_items: checks seq order from @p first. */
struct seq_cons {
	struct th_barrier *start;
	struct cpat_chan *ch;
	uint64_t first, n, bad;
	int rc;
};

static void *seq_cons_main(void *arg)
{
	struct seq_cons *c = arg;
	if (c->start)
		th_barrier_wait(c->start);
	struct seq_item it;
	int rc;
	while ((rc = cpat_chan_recv(c->ch, &it, NULL)) == 0) {
		if (it.seq != c->first + c->n || it.payload != it.seq * 3 + 1)
			c->bad++;
		c->n++;
	}
	c->rc = rc;
	return NULL;
}

TH_TEST_FN(fan_merge_ordered_restores_order_from_3_interleaved_inputs)
{
	(void)state;
	uint64_t n = (uint64_t)SIZE(30000, 4000);
	const uint64_t first = 1000;
	struct th_rng rng;
	th_rng_init(&rng, 33);
	size_t windows[2] = {8, 3};
	for (int w = 0; w < 2; w++) {
		long thr = th_count_threads();
		enum { NI = 3 };
		struct seq_item *items[NI];
		uint64_t cnt[NI] = {0};
		for (int i = 0; i < NI; i++)
			items[i] = malloc(n * sizeof(struct seq_item));
		/* Each sequence number goes to a random input; each input's
		 * own items are increasing. */
		for (uint64_t s = first; s < first + n; s++) {
			int i = (int)th_rng_below(&rng, NI);
			items[i][cnt[i]++] = (struct seq_item){
				.seq = s, .payload = s * 3 + 1};
		}
		struct cpat_chan *ins[NI],
			*out = mk(sizeof(struct seq_item), 4);
		for (int i = 0; i < NI; i++)
			ins[i] = mk(sizeof(struct seq_item), 1 + (size_t)i * 2);
		struct cpat_fan *f = NULL;
		assert_int_equal(cpat_fan_merge_ordered(&f, ins, NI, out,
							seq_of, NULL, first,
							windows[w], NULL),
				 0);
		struct th_crew crew;
		th_crew_init(&crew, NI + 1);
		struct prod p[NI];
		for (int i = 0; i < NI; i++) {
			p[i] = (struct prod){.start = &crew.start,
					     .ch = ins[i],
					     .items = (uint64_t *)items[i],
					     .isize = sizeof(struct seq_item),
					     .n = cnt[i],
					     .close = 1};
			th_crew_add(&crew, prod_main, &p[i]);
		}
		struct seq_cons c = {
			.start = &crew.start, .ch = out, .first = first};
		th_crew_add(&crew, seq_cons_main, &c);
		th_crew_go(&crew);
		th_crew_join(&crew);
		assert_int_equal(cpat_fan_wait(f), 0);
		for (int i = 0; i < NI; i++)
			assert_int_equal(p[i].rc, 0);
		assert_int_equal(c.rc, -EPIPE);
		assert_int_equal(c.bad, 0);
		assert_int_equal(c.n, n);
		assert_no_threads_left(thr);
		cpat_fan_destroy(f);
		for (int i = 0; i < NI; i++) {
			cpat_chan_destroy(ins[i]);
			free(items[i]);
		}
		cpat_chan_destroy(out);
	}
}

/* Numbers seen again are dropped and counted, whether the first copy was
 * still held (ahead of the next number) or already passed on. One input,
 * filled and closed before the merge starts: the order is fixed. */
TH_TEST_FN(fan_merge_ordered_duplicates_held_or_passed_dropped_and_counted)
{
	(void)state;
	long thr = th_count_threads();
	const struct seq_item items[] = {{5, 50}, {5, 51}, {3, 30},
					 {4, 40}, {3, 31}, {4, 41}};
	const size_t n = sizeof items / sizeof items[0];
	struct cpat_chan *in = mk(sizeof(struct seq_item), n),
			 *out = mk(sizeof(struct seq_item), n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(cpat_chan_send(in, &items[i], NULL), 0);
	assert_int_equal(cpat_chan_close(in), 0);
	struct cpat_fan *f = NULL;
	assert_int_equal(cpat_fan_merge_ordered(&f, &in, 1, out, seq_of, NULL,
						3, 8, NULL),
			 0);
	struct seq_item got;
	uint64_t want = 3;
	int rc;
	while ((rc = cpat_chan_recv(out, &got, NULL)) == 0) {
		assert_int_equal(got.seq, want);
		assert_int_equal(got.payload / 10, got.seq);
		want++;
	}
	assert_int_equal(rc, -EPIPE);
	assert_int_equal(want, 6); /* 3, 4, 5 once each */
	assert_int_equal(cpat_fan_wait(f), 0);
	assert_int_equal(cpat_fan_dropped(f, 0), 3);
	cpat_fan_destroy(f);
	assert_no_threads_left(thr);
	cpat_chan_destroy(in);
	cpat_chan_destroy(out);
}

/* Sizes whose byte counts overflow: -EINVAL, nothing allocated or
 * started, no item read or written. */
TH_TEST_FN(fan_sizes_that_overflow_einval_nothing_started)
{
	(void)state;
	long live = th_alloc_live(), thr = th_count_threads();
	struct cpat_chan *in = mk(sizeof(struct seq_item), 4),
			 *out = mk(sizeof(struct seq_item), 4);
	struct cpat_fan *f = (struct cpat_fan *)&f;
	const size_t windows[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX / 8,
				  SIZE_MAX / 64};
	for (size_t i = 0; i < sizeof windows / sizeof windows[0]; i++) {
		f = (struct cpat_fan *)&f;
		assert_int_equal(cpat_fan_merge_ordered(&f, &in, 1, out, seq_of,
							NULL, 0, windows[i],
							NULL),
				 -EINVAL);
		assert_null(f);
	}
	/* parallel_map: n items of in_size or out_size bytes overflow; the
	 * buffers are never touched. */
	uint64_t dummy_in = 0, dummy_out = 0;
	assert_int_equal(cpat_parallel_map(&dummy_in, 4, &dummy_out, 8,
					   SIZE_MAX / 2, map_item, NULL, NULL,
					   2, NULL),
			 -EINVAL);
	assert_int_equal(cpat_parallel_map(&dummy_in, 1, &dummy_out, 16,
					   SIZE_MAX / 4, map_item, NULL, NULL,
					   2, NULL),
			 -EINVAL);
	assert_int_equal(dummy_in, 0);
	assert_int_equal(dummy_out, 0);
	assert_int_equal(cpat_chan_len(in), 0);
	assert_int_equal(cpat_chan_is_closed(out), 0);
	cpat_chan_destroy(in);
	cpat_chan_destroy(out);
	assert_no_threads_left(thr);
	assert_int_equal(th_alloc_live(), live);
}

/* While the next expected number is missing, the merge holds at most
 * window + nins - 1 items: it stops reading the inputs that are ahead. */
TH_TEST_FN(fan_merge_ordered_full_window_stops_reading_ahead_bounded)
{
	(void)state;
	const size_t window = 4;
	const uint64_t per = 20;
	struct cpat_chan *ins[3], *out = mk(sizeof(struct seq_item), 64);
	for (int i = 0; i < 3; i++)
		ins[i] = mk(sizeof(struct seq_item), 64);
	/* ins[1]: 1, 3, 5, ...; ins[2]: 2, 4, 6, ...; ins[0]: seq 0 later. */
	for (uint64_t k = 0; k < per; k++) {
		struct seq_item a = {2 * k + 1, (2 * k + 1) * 3 + 1};
		struct seq_item b = {2 * k + 2, (2 * k + 2) * 3 + 1};
		assert_int_equal(cpat_chan_send(ins[1], &a, NULL), 0);
		assert_int_equal(cpat_chan_send(ins[2], &b, NULL), 0);
	}
	struct cpat_fan *f = NULL;
	assert_int_equal(cpat_fan_merge_ordered(&f, ins, 3, out, seq_of, NULL,
						0, window, NULL),
			 0);
	/* Let it read what it will (a bounded poll: the bound below holds
	 * whatever the timing). */
	int64_t until = cpat_now_ns() + 200 * CPAT_MSEC;
	size_t taken = 0;
	while (cpat_now_ns() < until) {
		taken = 2 * per - cpat_chan_len(ins[1]) - cpat_chan_len(ins[2]);
		if (taken >= window)
			break;
		th_relax();
	}
	until = cpat_now_ns() + 20 * CPAT_MSEC;
	while (cpat_now_ns() < until)
		th_relax();
	taken = 2 * per - cpat_chan_len(ins[1]) - cpat_chan_len(ins[2]);
	size_t early_out = cpat_chan_len(out); /* nothing before seq 0 */
	/* Finish the run before asserting, so that a failure leaves no
	 * thread behind for the next test. */
	struct seq_item z = {0, 1};
	assert_int_equal(cpat_chan_send(ins[0], &z, NULL), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(cpat_chan_close(ins[i]), 0);
	struct seq_cons c = {.ch = out, .first = 0};
	seq_cons_main(&c);
	assert_int_equal(cpat_fan_wait(f), 0);
	assert_int_equal(c.rc, -EPIPE);
	assert_int_equal(c.bad, 0);
	assert_int_equal(c.n, 2 * per + 1);
	cpat_fan_destroy(f);
	for (int i = 0; i < 3; i++)
		cpat_chan_destroy(ins[i]);
	cpat_chan_destroy(out);
	assert_int_equal(early_out, 0);
	assert_true(taken >= 1);
	/* fan.h: at most window + nins - 1 items are held (the merge must
	 * hold one item of each input to know where that input stands). */
	if (taken > window + 3 - 1)
		fail_msg("merge read %zu items ahead with window %zu", taken,
			 window);
}

TH_TEST_FN(fan_merge_ordered_gap_in_sequence_wait_epipe_output_closed)
{
	(void)state;
	struct cpat_chan *ins[2], *out = mk(sizeof(struct seq_item), 16);
	for (int i = 0; i < 2; i++)
		ins[i] = mk(sizeof(struct seq_item), 16);
	uint64_t a[] = {0, 2, 5}, b[] = {1, 4, 6}; /* 3 missing */
	for (int k = 0; k < 3; k++) {
		struct seq_item x = {a[k], a[k] * 3 + 1},
				y = {b[k], b[k] * 3 + 1};
		assert_int_equal(cpat_chan_send(ins[0], &x, NULL), 0);
		assert_int_equal(cpat_chan_send(ins[1], &y, NULL), 0);
	}
	assert_int_equal(cpat_chan_close(ins[0]), 0);
	assert_int_equal(cpat_chan_close(ins[1]), 0);
	struct cpat_fan *f = NULL;
	assert_int_equal(cpat_fan_merge_ordered(&f, ins, 2, out, seq_of, NULL,
						0, 8, NULL),
			 0);
	struct seq_cons c = {.ch = out, .first = 0};
	seq_cons_main(&c);
	assert_int_equal(c.rc, -EPIPE);
	assert_int_equal(c.bad, 0);
	assert_int_equal(c.n, 3); /* 0, 1, 2 */
	assert_int_equal(cpat_fan_wait(f), -EPIPE);
	cpat_fan_destroy(f);
	for (int i = 0; i < 2; i++)
		cpat_chan_destroy(ins[i]);
	cpat_chan_destroy(out);
}

/* ---- broadcast ---------------------------------------------------------- */

TH_TEST_FN(fan_broadcast_block_all_every_consumer_gets_every_item_in_order)
{
	(void)state;
	long thr = th_count_threads();
	uint64_t n = (uint64_t)SIZE(10000, 2000);
	enum { C = 3 };
	struct cpat_chan *in = mk(8, 8), *outs[C];
	size_t caps[C] = {2, 0, 5};
	for (int i = 0; i < C; i++)
		outs[i] = mk(8, caps[i]);
	struct cpat_fan *f = NULL;
	assert_int_equal(
		cpat_fan_broadcast(&f, in, outs, C, CPAT_FAN_BLOCK_ALL, NULL),
		0);
	struct th_crew crew;
	th_crew_init(&crew, C);
	struct cons k[C];
	for (int i = 0; i < C; i++) {
		k[i] = (struct cons){.start = &crew.start,
				     .ch = outs[i],
				     .cap = n,
				     .got = malloc(n * sizeof(uint64_t)),
				     .spin = i == 0 ? 5 * CPAT_USEC : 0};
		th_crew_add(&crew, cons_main, &k[i]);
	}
	th_crew_go(&crew);
	fill_close(in, 0, n, 1);
	th_crew_join(&crew);
	assert_int_equal(cpat_fan_wait(f), 0);
	for (int i = 0; i < C; i++) {
		assert_int_equal(k[i].rc, -EPIPE);
		assert_int_equal(k[i].n, n);
		for (uint64_t j = 0; j < n; j++)
			if (k[i].got[j] != j)
				fail_msg("consumer %d item %llu: %llu", i,
					 (unsigned long long)j,
					 (unsigned long long)k[i].got[j]);
		assert_int_equal(cpat_fan_dropped(f, (size_t)i), 0);
	}
	assert_no_threads_left(thr);
	cpat_fan_destroy(f);
	cpat_chan_destroy(in);
	for (int i = 0; i < C; i++) {
		cpat_chan_destroy(outs[i]);
		free(k[i].got);
	}
}

TH_TEST_FN(fan_broadcast_drop_slow_counts_drops_readers_get_all)
{
	(void)state;
	uint64_t n = (uint64_t)SIZE(5000, 1000);
	struct cpat_chan *in = mk(8, 16), *outs[3];
	outs[0] = mk(8, n); /* never full: gets all */
	outs[1] = mk(8, 0); /* never read, rendezvous: misses all */
	outs[2] = mk(8, 2); /* never read: holds 2, misses the rest */
	struct cpat_fan *f = NULL;
	assert_int_equal(
		cpat_fan_broadcast(&f, in, outs, 3, CPAT_FAN_DROP_SLOW, NULL),
		0);
	fill_close(in, 0, n, 1); /* never blocks for long: nobody is waited */
	assert_int_equal(cpat_fan_wait(f), 0);
	assert_int_equal(cpat_fan_dropped(f, 0), 0);
	assert_int_equal(cpat_fan_dropped(f, 1), n);
	assert_int_equal(cpat_fan_dropped(f, 2), n - 2);
	assert_int_equal(cpat_fan_dropped(f, 3), 0);
	assert_int_equal(cpat_fan_dropped(NULL, 0), 0);
	uint64_t v;
	for (uint64_t j = 0; j < n; j++) {
		assert_int_equal(cpat_chan_recv(outs[0], &v, NULL), 0);
		assert_int_equal(v, j);
	}
	assert_int_equal(cpat_chan_recv(outs[0], &v, NULL), -EPIPE);
	assert_int_equal(cpat_chan_recv(outs[1], &v, NULL), -EPIPE);
	for (uint64_t j = 0; j < 2; j++) {
		assert_int_equal(cpat_chan_recv(outs[2], &v, NULL), 0);
		assert_int_equal(v, j);
	}
	assert_int_equal(cpat_chan_recv(outs[2], &v, NULL), -EPIPE);
	cpat_fan_destroy(f);
	cpat_chan_destroy(in);
	for (int i = 0; i < 3; i++)
		cpat_chan_destroy(outs[i]);
}

/* A slow reader under DROP_SLOW: what it received plus what it missed is
 * every item, and what it received is in order. */
TH_TEST_FN(fan_broadcast_drop_slow_slow_reader_received_plus_dropped_is_all)
{
	(void)state;
	uint64_t n = (uint64_t)SIZE(5000, 1000);
	struct cpat_chan *in = mk(8, 4), *outs[2] = {mk(8, n), mk(8, 1)};
	struct cpat_fan *f = NULL;
	assert_int_equal(
		cpat_fan_broadcast(&f, in, outs, 2, CPAT_FAN_DROP_SLOW, NULL),
		0);
	struct th_crew crew;
	th_crew_init(&crew, 1);
	struct cons k = {.start = &crew.start,
			 .ch = outs[1],
			 .cap = n,
			 .got = malloc(n * sizeof(uint64_t)),
			 .spin = 10 * CPAT_USEC};
	th_crew_add(&crew, cons_main, &k);
	th_crew_go(&crew);
	fill_close(in, 0, n, 1);
	th_crew_join(&crew);
	assert_int_equal(cpat_fan_wait(f), 0);
	assert_int_equal(k.rc, -EPIPE);
	assert_int_equal(k.n + cpat_fan_dropped(f, 1), n);
	for (uint64_t j = 1; j < k.n; j++)
		assert_true(k.got[j] > k.got[j - 1]);
	assert_int_equal(cpat_fan_dropped(f, 0), 0);
	assert_int_equal(cpat_chan_len(outs[0]), n);
	cpat_fan_destroy(f);
	cpat_chan_destroy(in);
	cpat_chan_destroy(outs[0]);
	cpat_chan_destroy(outs[1]);
	free(k.got);
}

/* Every kind of fan, stopped while its threads wait on open inputs:
 * wait returns the cause and every output is closed (once). */
TH_TEST_FN(fan_every_kind_stopped_returns_cause_and_closes_outputs)
{
	(void)state;
	for (int kind = 0; kind < 4; kind++) {
		for (int how = 0; how < 2; how++) {
			long thr = th_count_threads();
			struct cpat_chan *ins[2] = {mk(16, 2), mk(16, 2)};
			struct cpat_chan *outs[2] = {mk(16, 2), mk(16, 2)};
			struct cpat_token *tok = mktok();
			struct fcfg c = {.workers = 2};
			struct cpat_fan *f = NULL;
			int rc;
			size_t nouts = 1;
			switch (kind) {
			case 0:
				rc = cpat_fan_out(&f, ins[0], outs, 2, 2,
						  fan_fn, &c, tok);
				nouts = 2;
				break;
			case 1:
				rc = cpat_fan_in(&f, ins, 2, outs[0], tok);
				break;
			case 2:
				rc = cpat_fan_merge_ordered(&f, ins, 2, outs[0],
							    seq_of, NULL, 0, 4,
							    tok);
				break;
			default:
				rc = cpat_fan_broadcast(&f, ins[0], outs, 2,
							CPAT_FAN_BLOCK_ALL,
							tok);
				nouts = 2;
				break;
			}
			assert_int_equal(rc, 0);
			if (how == 0)
				cpat_token_cancel(tok);
			else
				assert_int_equal(cpat_fan_cancel(f), 0);
			assert_int_equal(cpat_fan_wait(f), -ECANCELED);
			for (size_t i = 0; i < nouts; i++) {
				assert_int_equal(cpat_chan_is_closed(outs[i]),
						 1);
				assert_int_equal(cpat_chan_close(outs[i]),
						 -EPIPE);
			}
			assert_int_equal(cpat_chan_is_closed(ins[0]), 0);
			assert_int_equal(cpat_chan_is_closed(ins[1]), 0);
			assert_no_threads_left(thr);
			cpat_fan_destroy(f);
			cpat_token_unref(tok);
			for (int i = 0; i < 2; i++) {
				cpat_chan_destroy(ins[i]);
				cpat_chan_destroy(outs[i]);
			}
		}
	}
}

/*
 * The token fires in two steps: its status is set for its whole tree, then
 * its callbacks run. A fan thread that sees the status (a channel call
 * under the fan's token returns at once) may exit, and cpat_fan_wait() may
 * join it, before any callback ran. The window is made wide: a callback on
 * the caller's token holds the firing thread until wait has returned. The
 * worker is inside its function when the token fires (no fan thread is
 * parked: a parked one would wait for its own callback, queued behind the
 * held one), then returns 0 (its send sees the token) or -EIO (an error
 * seen after the token fired is part of the stop): both are the cancel.
 */
struct held_fn_arg {
	struct th_held_cancel held;
	int fn_rc;
	_Atomic int fn_in;
};

static int held_fn(const void *in, void *out, unsigned worker, void *arg)
{
	(void)worker;
	struct held_fn_arg *h = arg;
	atomic_store(&h->fn_in, 1);
	/* Until the callbacks run: by then the whole tree, the fan's token
	 * too, has its status (the caller's token gets it a moment before
	 * its children: a worker that returned -EIO in between would be the
	 * first error, and a send in between would succeed and the next
	 * receive park behind the held callback). */
	while (!th_held_fired(&h->held))
		th_relax();
	*(uint64_t *)out = *(const uint64_t *)in;
	return h->fn_rc;
}

TH_TEST_FN(fan_cancel_seen_before_its_callback_ran_is_still_reported)
{
	(void)state;
	for (int how = 0; how < 2; how++) {
		long thr = th_count_threads();
		struct held_fn_arg h;
		h.fn_rc = how == 0 ? 0 : -EIO;
		atomic_init(&h.fn_in, 0);
		struct cpat_token *tok = mktok();
		assert_int_equal(th_held_init(&h.held, tok), 0);
		struct cpat_chan *in = mk(8, 4), *out = mk(8, 4);
		struct cpat_fan *f = NULL;
		assert_int_equal(
			cpat_fan_out(&f, in, &out, 1, 1, held_fn, &h, tok), 0);
		uint64_t v = 7;
		assert_int_equal(cpat_chan_send(in, &v, NULL), 0);
		while (!atomic_load(&h.fn_in))
			th_relax();
		/* Fired, and its firing thread held before the fan's own
		 * callbacks. */
		th_held_fire(&h.held);
		int rc = cpat_fan_wait(f);
		th_held_release(&h.held);
		/* The input never ended: the fan was stopped by the cancel. */
		assert_int_equal(rc, -ECANCELED);
		assert_int_equal(cpat_fan_wait(f), -ECANCELED);
		assert_int_equal(cpat_chan_is_closed(out), 1);
		assert_int_equal(cpat_chan_is_closed(in), 0);
		cpat_fan_destroy(f);
		assert_no_threads_left(thr);
		cpat_token_unref(tok);
		cpat_chan_destroy(in);
		cpat_chan_destroy(out);
	}
}

/* A fan whose input ended normally returns 0 even if its token fires
 * afterwards, before wait: every item was handed on. */
TH_TEST_FN(fan_cancel_after_normal_end_before_wait_still_returns_0)
{
	(void)state;
	long thr = th_count_threads();
	struct cpat_chan *in = mk(8, 8), *out = mk(8, 8);
	struct cpat_token *tok = mktok();
	struct fcfg c = {.workers = 2};
	struct cpat_fan *f = NULL;
	assert_int_equal(cpat_fan_out(&f, in, &out, 1, 2, fan_fn, &c, tok), 0);
	fill_close(in, 0, 5, 1);
	uint64_t v, got = 0;
	while (cpat_chan_recv(out, &v, NULL) == 0)
		got++;
	assert_int_equal(got, 5);
	/* out is closed: every thread has finished its last send. */
	cpat_token_cancel(tok);
	assert_int_equal(cpat_fan_wait(f), 0);
	cpat_fan_destroy(f);
	assert_no_threads_left(thr);
	cpat_token_unref(tok);
	cpat_chan_destroy(in);
	cpat_chan_destroy(out);
}

/* ---- parallel map ------------------------------------------------------- */

static void check_map_out(const uint64_t *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t v = (uint32_t)(i * 2654435761u);
		if (out[i] != v * v + i)
			fail_msg("out[%zu] = %llu, expected %llu", i,
				 (unsigned long long)out[i],
				 (unsigned long long)(v * v + i));
	}
}

TH_TEST_FN(parallel_map_results_in_input_order_own_threads_inline_and_pool)
{
	(void)state;
	size_t n = (size_t)SIZE(200000, 20000);
	uint32_t *in = map_input(n);
	uint64_t *out = malloc(n * sizeof *out);
	long thr = th_count_threads(), live = th_alloc_live();
	unsigned ws[] = {1, 2, 4, 7};
	for (int w = 0; w < 4; w++) {
		memset(out, 0xee, n * sizeof *out);
		struct mcfg c;
		mcfg_init(&c);
		assert_int_equal(cpat_parallel_map(in, 4, out, 8, n, map_item,
						   &c, NULL, ws[w], NULL),
				 0);
		assert_int_equal(atomic_load(&c.calls), n);
		assert_int_equal(atomic_load(&c.bad_index), 0);
		if (ws[w] == 1) /* 1 runs inline */
			assert_int_equal(atomic_load(&c.off_caller), 0);
		check_map_out(out, n);
		assert_no_threads_left(thr);
		assert_int_equal(th_alloc_live(), live);
	}
	/* n = 0: nothing to do, NULL arrays allowed. */
	struct mcfg c0;
	mcfg_init(&c0);
	assert_int_equal(cpat_parallel_map(NULL, 4, NULL, 8, 0, map_item, &c0,
					   NULL, 3, NULL),
			 0);
	assert_int_equal(atomic_load(&c0.calls), 0);
	/* On a pool. */
	struct cpat_pool_opts po;
	cpat_pool_opts_init(&po);
	po.workers = 3;
	struct cpat_pool *pool = NULL;
	assert_int_equal(cpat_pool_create(&pool, &po), 0);
	long pthr = th_count_threads();
	memset(out, 0xee, n * sizeof *out);
	struct mcfg c;
	mcfg_init(&c);
	assert_int_equal(cpat_parallel_map(in, 4, out, 8, n, map_item, &c, pool,
					   0, NULL),
			 0);
	assert_int_equal(atomic_load(&c.calls), n);
	assert_int_equal(atomic_load(&c.bad_index), 0);
	check_map_out(out, n);
	struct cpat_pool_stats ps;
	assert_int_equal(cpat_pool_stats(pool, &ps), 0);
	assert_true(ps.submitted >= 1); /* it ran on the pool */
	th_assert_threads_back(pthr);   /* no threads of its own */
	cpat_pool_destroy(pool);
	assert_no_threads_left(thr);
	free(in);
	free(out);
}

TH_TEST_FN(parallel_map_first_error_stops_map_and_is_returned)
{
	(void)state;
	size_t n = (size_t)SIZE(200000, 40000);
	uint32_t *in = map_input(n);
	uint64_t *out = malloc(n * sizeof *out);
	long thr = th_count_threads();
	/* Inline: exactly the items up to the failing one ran. */
	struct mcfg c;
	mcfg_init(&c);
	c.fail_at = 1000;
	c.fail_rc = -EIO;
	assert_int_equal(cpat_parallel_map(in, 4, out, 8, n, map_item, &c, NULL,
					   1, NULL),
			 -EIO);
	assert_int_equal(atomic_load(&c.calls), 1001);
	check_map_out(out, 1000);
	/* Own threads and a pool: stops early. */
	struct cpat_pool_opts po;
	cpat_pool_opts_init(&po);
	po.workers = 2;
	struct cpat_pool *pool = NULL;
	assert_int_equal(cpat_pool_create(&pool, &po), 0);
	for (int on_pool = 0; on_pool < 2; on_pool++) {
		mcfg_init(&c);
		c.fail_at = 1000;
		c.fail_rc = -EIO;
		c.spin = 1 * CPAT_USEC;
		int rc = cpat_parallel_map(in, 4, out, 8, n, map_item, &c,
					   on_pool ? pool : NULL, 3, NULL);
		assert_int_equal(rc, -EIO);
		assert_true(atomic_load(&c.calls) < n);
		assert_int_equal(atomic_load(&c.bad_index), 0);
	}
	/* The pool is still usable. */
	assert_int_equal(cpat_pool_wait_idle(pool, NULL, CPAT_FOREVER), 0);
	mcfg_init(&c);
	assert_int_equal(cpat_parallel_map(in, 4, out, 8, 1000, map_item, &c,
					   pool, 0, NULL),
			 0);
	check_map_out(out, 1000);
	/* A token fired first: its cause, nothing computed. */
	struct cpat_token *tok = mktok();
	cpat_token_cancel(tok);
	for (int on_pool = 0; on_pool < 2; on_pool++) {
		mcfg_init(&c);
		assert_int_equal(cpat_parallel_map(in, 4, out, 8, n, map_item,
						   &c, on_pool ? pool : NULL, 2,
						   tok),
				 -ECANCELED);
		assert_int_equal(atomic_load(&c.calls), 0);
	}
	cpat_token_unref(tok);
	/* A pool that is shut down: -EPIPE. */
	assert_int_equal(
		cpat_pool_shutdown(pool, CPAT_POOL_DRAIN, CPAT_FOREVER, NULL),
		0);
	mcfg_init(&c);
	assert_int_equal(cpat_parallel_map(in, 4, out, 8, n, map_item, &c, pool,
					   0, NULL),
			 -EPIPE);
	assert_int_equal(atomic_load(&c.calls), 0);
	cpat_pool_destroy(pool);
	assert_no_threads_left(thr);
	free(in);
	free(out);
}

/* A token cancelled while the map runs stops it with -ECANCELED. */
struct canceller {
	pthread_t t;
	struct cpat_token *tok;
	struct mcfg *c;
	uint64_t after;
};

static void *canceller_main(void *arg)
{
	struct canceller *k = arg;
	while (atomic_load(&k->c->calls) < k->after)
		th_relax();
	cpat_token_cancel(k->tok);
	return NULL;
}

TH_TEST_FN(parallel_map_token_cancelled_midway_returns_ecanceled)
{
	(void)state;
	size_t n = (size_t)SIZE(100000, 20000);
	uint32_t *in = map_input(n);
	uint64_t *out = malloc(n * sizeof *out);
	struct cpat_token *tok = mktok();
	struct mcfg c;
	mcfg_init(&c);
	c.spin = 2 * CPAT_USEC;
	struct canceller k = {.tok = tok, .c = &c, .after = 100};
	th_spawn(&k.t, canceller_main, &k);
	int rc =
		cpat_parallel_map(in, 4, out, 8, n, map_item, &c, NULL, 2, tok);
	th_join(k.t);
	assert_int_equal(rc, -ECANCELED);
	assert_true(atomic_load(&c.calls) < n);
	cpat_token_unref(tok);
	free(in);
	free(out);
}

/* ---- bad arguments ------------------------------------------------------ */

TH_TEST_FN(fan_bad_arguments_einval_everywhere)
{
	(void)state;
	long live = th_alloc_live(), thr = th_count_threads();
	struct cpat_chan *in = mk(8, 4), *o8[2] = {mk(8, 4), mk(8, 4)},
			 *o4 = mk(4, 4);
	struct cpat_chan *mixed[2] = {o8[0], o4};
	struct fcfg c = {.workers = 2};
	struct cpat_fan *f = (struct cpat_fan *)&f;
	/* fan_out */
	assert_int_equal(cpat_fan_out(NULL, in, o8, 1, 2, fan_fn, &c, NULL),
			 -EINVAL);
	assert_int_equal(cpat_fan_out(&f, NULL, o8, 1, 2, fan_fn, &c, NULL),
			 -EINVAL);
	assert_null(f);
	f = (struct cpat_fan *)&f;
	assert_int_equal(cpat_fan_out(&f, in, NULL, 1, 2, fan_fn, &c, NULL),
			 -EINVAL);
	assert_null(f);
	assert_int_equal(cpat_fan_out(&f, in, o8, 1, 2, NULL, &c, NULL),
			 -EINVAL);
	assert_int_equal(cpat_fan_out(&f, in, o8, 1, 0, fan_fn, &c, NULL),
			 -EINVAL);
	assert_int_equal(cpat_fan_out(&f, in, o8, 0, 2, fan_fn, &c, NULL),
			 -EINVAL);
	assert_int_equal(cpat_fan_out(&f, in, o8, 2, 3, fan_fn, &c, NULL),
			 -EINVAL); /* nouts neither 1 nor workers */
	struct cpat_chan *withnull[2] = {o8[0], NULL};
	assert_int_equal(cpat_fan_out(&f, in, withnull, 2, 2, fan_fn, &c, NULL),
			 -EINVAL);
	/* fan_in */
	assert_int_equal(cpat_fan_in(NULL, o8, 2, in, NULL), -EINVAL);
	assert_int_equal(cpat_fan_in(&f, NULL, 2, in, NULL), -EINVAL);
	assert_int_equal(cpat_fan_in(&f, o8, 0, in, NULL), -EINVAL);
	assert_int_equal(cpat_fan_in(&f, o8, 2, NULL, NULL), -EINVAL);
	assert_int_equal(cpat_fan_in(&f, withnull, 2, in, NULL), -EINVAL);
	assert_int_equal(cpat_fan_in(&f, mixed, 2, in, NULL), -EINVAL);
	assert_int_equal(cpat_fan_in(&f, o8, 2, o4, NULL), -EINVAL);
	/* merge */
	assert_int_equal(cpat_fan_merge_ordered(NULL, o8, 2, in, seq_of, NULL,
						0, 4, NULL),
			 -EINVAL);
	assert_int_equal(cpat_fan_merge_ordered(&f, NULL, 2, in, seq_of, NULL,
						0, 4, NULL),
			 -EINVAL);
	assert_int_equal(
		cpat_fan_merge_ordered(&f, o8, 0, in, seq_of, NULL, 0, 4, NULL),
		-EINVAL);
	assert_int_equal(cpat_fan_merge_ordered(&f, o8, 2, NULL, seq_of, NULL,
						0, 4, NULL),
			 -EINVAL);
	assert_int_equal(
		cpat_fan_merge_ordered(&f, o8, 2, in, NULL, NULL, 0, 4, NULL),
		-EINVAL);
	assert_int_equal(
		cpat_fan_merge_ordered(&f, o8, 2, in, seq_of, NULL, 0, 0, NULL),
		-EINVAL); /* window 0 */
	assert_int_equal(cpat_fan_merge_ordered(&f, mixed, 2, in, seq_of, NULL,
						0, 4, NULL),
			 -EINVAL);
	/* broadcast */
	assert_int_equal(
		cpat_fan_broadcast(NULL, in, o8, 2, CPAT_FAN_BLOCK_ALL, NULL),
		-EINVAL);
	assert_int_equal(
		cpat_fan_broadcast(&f, NULL, o8, 2, CPAT_FAN_BLOCK_ALL, NULL),
		-EINVAL);
	assert_int_equal(
		cpat_fan_broadcast(&f, in, NULL, 2, CPAT_FAN_BLOCK_ALL, NULL),
		-EINVAL);
	assert_int_equal(
		cpat_fan_broadcast(&f, in, o8, 0, CPAT_FAN_BLOCK_ALL, NULL),
		-EINVAL);
	assert_int_equal(cpat_fan_broadcast(&f, in, o8, 2, 7, NULL), -EINVAL);
	assert_int_equal(cpat_fan_broadcast(&f, in, o8, 2, -1, NULL), -EINVAL);
	assert_int_equal(
		cpat_fan_broadcast(&f, in, mixed, 2, CPAT_FAN_DROP_SLOW, NULL),
		-EINVAL);
	assert_null(f);
	/* handle functions */
	assert_int_equal(cpat_fan_wait(NULL), -EINVAL);
	assert_int_equal(cpat_fan_cancel(NULL), -EINVAL);
	assert_int_equal(cpat_fan_dropped(NULL, 0), 0);
	cpat_fan_destroy(NULL);
	/* parallel map */
	uint32_t vin[4] = {0};
	uint64_t vout[4];
	struct mcfg m;
	mcfg_init(&m);
	assert_int_equal(cpat_parallel_map(NULL, 4, vout, 8, 4, map_item, &m,
					   NULL, 2, NULL),
			 -EINVAL);
	assert_int_equal(cpat_parallel_map(vin, 4, NULL, 8, 4, map_item, &m,
					   NULL, 2, NULL),
			 -EINVAL);
	assert_int_equal(cpat_parallel_map(vin, 0, vout, 8, 4, map_item, &m,
					   NULL, 2, NULL),
			 -EINVAL);
	assert_int_equal(cpat_parallel_map(vin, 4, vout, 0, 4, map_item, &m,
					   NULL, 2, NULL),
			 -EINVAL);
	assert_int_equal(
		cpat_parallel_map(vin, 4, vout, 8, 4, NULL, &m, NULL, 2, NULL),
		-EINVAL);
	assert_int_equal(cpat_parallel_map(vin, 4, vout, 8, 4, map_item, &m,
					   NULL, 0, NULL),
			 -EINVAL);
	assert_int_equal(atomic_load(&m.calls), 0);
	/* Nothing was started or closed. */
	assert_int_equal(cpat_chan_is_closed(in), 0);
	assert_int_equal(cpat_chan_is_closed(o8[0]), 0);
	assert_int_equal(cpat_chan_is_closed(o8[1]), 0);
	assert_int_equal(cpat_chan_is_closed(o4), 0);
	assert_int_equal(atomic_load(&c.calls), 0);
	assert_in_range(th_count_threads(), 0, thr);
	cpat_chan_destroy(in);
	cpat_chan_destroy(o8[0]);
	cpat_chan_destroy(o8[1]);
	cpat_chan_destroy(o4);
	assert_int_equal(th_alloc_live(), live);
}

/* ---- allocation and thread-creation failure ------------------------------ */

enum site { S_OUT, S_IN, S_MERGE, S_BCAST, S_MAP, S_NSITES };
static const char *site_name[] = {"fan_out", "fan_in", "merge_ordered",
				  "broadcast", "parallel_map"};

/*
 * Runs one construction site with failure injection armed by @p arm (and
 * disarmed by @p disarm right after the call): on failure checks that
 * nothing was closed, started or leaked; on success runs a small workload
 * to the end and checks it. Returns the call's rc.
 */
static int run_site(int site, void (*arm)(long, int), long k, int persistent)
{
	long live = th_alloc_live(), thr = th_count_threads();
	struct cpat_chan *a = mk(sizeof(struct seq_item), 64),
			 *b = mk(sizeof(struct seq_item), 64),
			 *c = mk(sizeof(struct seq_item), 64),
			 *d = mk(sizeof(struct seq_item), 64);
	long chans_live = th_alloc_live();
	struct cpat_fan *f = (struct cpat_fan *)&f;
	struct fcfg fc = {.workers = 2};
	struct cpat_chan *two[2] = {b, c};
	struct cpat_chan *three[3] = {a, b, c};
	size_t n = 1000;
	uint32_t *in = map_input(n);
	uint64_t *out = malloc(n * sizeof *out);
	struct mcfg mc;
	mcfg_init(&mc);
	int rc;
	/* fan_out/broadcast need 8-byte items: a and b, c hold seq_items
	 * (16 bytes) in all cases: fan_fn reads the first 8 bytes and
	 * writes 8 of 16: fine for the test (the rest is unused). */
	arm(k, persistent);
	switch (site) {
	case S_OUT:
		rc = cpat_fan_out(&f, a, two, 2, 2, fan_fn, &fc, NULL);
		break;
	case S_IN:
		rc = cpat_fan_in(&f, three, 3, d, NULL);
		break;
	case S_MERGE:
		rc = cpat_fan_merge_ordered(&f, three, 3, d, seq_of, NULL, 0, 4,
					    NULL);
		break;
	case S_BCAST:
		rc = cpat_fan_broadcast(&f, a, two, 2, CPAT_FAN_BLOCK_ALL,
					NULL);
		break;
	default:
		rc = cpat_parallel_map(in, 4, out, 8, n, map_item, &mc, NULL, 3,
				       NULL);
		break;
	}
	arm(0, 0);
	if (site == S_MAP) {
		if (rc == 0)
			check_map_out(out, n);
		else
			assert_true(atomic_load(&mc.calls) <= n);
	} else if (rc != 0) {
		assert_null(f);
		assert_int_equal(th_alloc_live(), chans_live);
		for (int i = 0; i < 4; i++)
			assert_int_equal(cpat_chan_is_closed(i == 0   ? a
							     : i == 1 ? b
							     : i == 2 ? c
								      : d),
					 0);
		assert_int_equal(atomic_load(&fc.calls), 0);
	} else {
		struct seq_item it, got;
		if (site == S_OUT || site == S_BCAST) {
			for (uint64_t i = 0; i < 10; i++) {
				it = (struct seq_item){i, i * 3 + 1};
				assert_int_equal(cpat_chan_send(a, &it, NULL),
						 0);
			}
			assert_int_equal(cpat_chan_close(a), 0);
			uint64_t cnt = 0;
			for (int o = 0; o < 2; o++)
				while (cpat_chan_recv(two[o], &got, NULL) == 0)
					cnt++;
			assert_int_equal(cnt, site == S_OUT ? 10 : 20);
		} else {
			for (uint64_t i = 0; i < 9; i++) {
				it = (struct seq_item){i, i * 3 + 1};
				assert_int_equal(
					cpat_chan_send(three[i % 3], &it, NULL),
					0);
			}
			for (int i = 0; i < 3; i++)
				assert_int_equal(cpat_chan_close(three[i]), 0);
			uint64_t cnt = 0;
			while (cpat_chan_recv(d, &got, NULL) == 0) {
				if (site == S_MERGE)
					assert_int_equal(got.seq, cnt);
				cnt++;
			}
			assert_int_equal(cnt, 9);
		}
		assert_int_equal(cpat_fan_wait(f), 0);
		cpat_fan_destroy(f);
	}
	assert_int_equal(cpat__fan_live_threads(), 0);
	long t = th_threads_settle(thr);
	if (t > thr)
		fail_msg("%s, k = %ld: %ld threads left, baseline %ld",
			 site_name[site], k, t, thr);
	cpat_chan_destroy(a);
	cpat_chan_destroy(b);
	cpat_chan_destroy(c);
	cpat_chan_destroy(d);
	free(in);
	free(out);
	assert_int_equal(th_alloc_live(), live);
	return rc;
}

static void arm_alloc(long k, int persistent)
{
	th_alloc_fail_at(k, persistent);
}

static void arm_thread(long k, int persistent)
{
	cpat__test_fail_thread_at(k, persistent != 0);
}

TH_TEST_FN(fan_allocation_failure_each_start_function_enomem_leaks_nothing)
{
	(void)state;
	for (int site = 0; site < S_NSITES; site++) {
		int ok = 0;
		for (long k = 1; k <= 100 && !ok; k++) {
			int rc = run_site(site, arm_alloc, k, 0);
			if (rc == 0)
				ok = 1;
			else if (rc != -ENOMEM)
				fail_msg("%s, allocation %ld failed: rc %d",
					 site_name[site], k, rc);
		}
		if (!ok)
			fail_msg("%s never succeeded", site_name[site]);
		int rc = run_site(site, arm_alloc, 1, 1);
		if (rc != -ENOMEM && rc != 0)
			fail_msg("%s, every allocation failing: rc %d",
				 site_name[site], rc);
	}
}

TH_TEST_FN(
	fan_thread_creation_failure_each_start_function_eagain_no_thread_left)
{
	(void)state;
	for (int site = 0; site < S_NSITES; site++) {
		int ok = 0;
		long failures = 0;
		for (long k = 1; k <= 16 && !ok; k++) {
			int rc = run_site(site, arm_thread, k, 0);
			if (rc == 0) {
				ok = 1;
			} else if (rc == -EAGAIN) {
				failures++;
			} else {
				fail_msg("%s, thread %ld failed: rc %d",
					 site_name[site], k, rc);
			}
		}
		if (!ok)
			fail_msg("%s never succeeded", site_name[site]);
		/* fan_out (2 workers), fan_in (3 inputs) and the others start
		 * at least one thread; parallel_map may carry on with fewer
		 * threads when some were started. */
		if (site != S_MAP && failures < 1)
			fail_msg("%s: no thread creation to fail",
				 site_name[site]);
		int rc = run_site(site, arm_thread, 1, 1);
		if (rc != -EAGAIN)
			fail_msg("%s, every thread creation failing: rc %d",
				 site_name[site], rc);
	}
}

int main(void)
{
	suite_init();
	const struct CMUnitTest tests[] = {
		TH_TEST(fan_allocation_failure_each_start_function_enomem_leaks_nothing),
		TH_TEST(fan_thread_creation_failure_each_start_function_eagain_no_thread_left),
		TH_TEST(fan_bad_arguments_einval_everywhere),
		TH_TEST(fan_out_shared_output_4_workers_every_item_once_then_closed),
		TH_TEST(fan_out_per_worker_outputs_worker_i_sends_to_outs_i),
		TH_TEST(fan_out_worker_error_stops_fan_wait_returns_it_outputs_closed),
		TH_TEST(fan_out_token_or_cancel_stops_with_cause_outputs_closed),
		TH_TEST(fan_destroy_while_running_stops_and_joins),
		TH_TEST(fan_in_closes_output_once_after_last_input_random_close_order),
		TH_TEST(fan_in_keeps_per_input_order_4_producers_nothing_lost),
		TH_TEST(fan_in_token_stops_with_cause_and_closes_output),
		TH_TEST(fan_merge_ordered_restores_order_from_3_interleaved_inputs),
		TH_TEST(fan_merge_ordered_duplicates_held_or_passed_dropped_and_counted),
		TH_TEST(fan_sizes_that_overflow_einval_nothing_started),
		TH_TEST(fan_merge_ordered_full_window_stops_reading_ahead_bounded),
		TH_TEST(fan_merge_ordered_gap_in_sequence_wait_epipe_output_closed),
		TH_TEST(fan_broadcast_block_all_every_consumer_gets_every_item_in_order),
		TH_TEST(fan_broadcast_drop_slow_counts_drops_readers_get_all),
		TH_TEST(fan_broadcast_drop_slow_slow_reader_received_plus_dropped_is_all),
		TH_TEST(fan_every_kind_stopped_returns_cause_and_closes_outputs),
		TH_TEST(fan_cancel_seen_before_its_callback_ran_is_still_reported),
		TH_TEST(fan_cancel_after_normal_end_before_wait_still_returns_0),
		TH_TEST(parallel_map_results_in_input_order_own_threads_inline_and_pool),
		TH_TEST(parallel_map_first_error_stops_map_and_is_returned),
		TH_TEST(parallel_map_token_cancelled_midway_returns_ecanceled),
		TH_TEST(fan_out_worker_thread_named_cpat_fan_out),
	};
	const char *filter = getenv("CPAT_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	return TH_RUN("fan", tests);
}
