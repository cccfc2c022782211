/*
 * Scenario 6, the Go guide's real-time processing: JSON messages -> parse
 * (cJSON) -> business computation -> save in batches (100 items, or what
 * is held after 1 s; the remainder at the end), under an open-loop offered
 * load.
 *
 * The load generator (main thread) schedules message i at t0 + i / rate and
 * feeds it into the pipeline (cpat_pipeline_feed(), which blocks while the
 * pipeline is full). A message's latency is the time its batch was written
 * minus its *scheduled* time, so a pipeline that falls behind is charged
 * for the wait (no coordinated omission). One message in 1000 is malformed
 * and is counted and skipped.
 *
 * Reported: at the guide's 10,000 msg/s, the achieved rate and latency
 * p50/p99/p99.9; then the highest offered rate that keeps p99 under 100 ms
 * and achieves >= 95% of the offered rate (doubling, then bisecting; each
 * trial lasts --trial-ms, so a slow overload may pass a short trial; a
 * failed trial is retried once, since a shared machine can stall a trial:
 * a rate passes if one of its two trials does, and both are reported). The
 * sequential baseline is one thread parsing, computing and saving the same
 * messages as fast as it can (its capacity, closed loop). The outputs of
 * the sequential run and the 10k run (the same messages) must be equal.
 *
 * Needs cJSON (libcjson-dev); without it, or with CPAT_BENCH_FORCE_SKIP=
 * cjson, it reports a skip.
 */
#define _GNU_SOURCE
#include "benchutil.h"

#include <cpattern.h>
#include <cpattern/pipeline.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef HAVE_CJSON
#include <cjson/cJSON.h>

#define MSG_CAP 232
#define BATCH 100

struct msg {
	int64_t sched;
	uint32_t len;
	char json[MSG_CAP];
};

struct parsed {
	int64_t sched;
	int64_t id;
	uint32_t user;
	int32_t qty;
	double amount;
};

struct computed {
	int64_t sched;
	int64_t id;
	double total;
	int32_t risk;
};

static void make_msg(int64_t i, struct msg *m)
{
	uint64_t h = bu_mix((uint64_t)i);
	int n;
	if (h % 1000 == 7) /* malformed: cut short */
		n = snprintf(m->json, MSG_CAP,
			     "{\"id\":%lld,\"user\":\"u%05u\",\"amou",
			     (long long)i, (unsigned)(h >> 20) % 50000);
	else
		n = snprintf(m->json, MSG_CAP,
			     "{\"id\":%lld,\"user\":\"u%05u\",\"type\":"
			     "\"order\",\"amount\":%u.%02u,"
			     "\"qty\":%u,\"tags\":[\"web\",\"eu\"],\"meta\":{"
			     "\"v\":2,\"src\":\"mq\"}}",
			     (long long)i, (unsigned)(h >> 20) % 50000,
			     (unsigned)(h >> 8) % 500, (unsigned)h % 100,
			     1 + (unsigned)(h >> 40) % 9);
	m->len = (uint32_t)n;
}

/* Parse: 0, or -1 for a malformed message. */
static int parse_msg(const struct msg *m, struct parsed *p)
{
	cJSON *root = cJSON_ParseWithLength(m->json, m->len);
	if (!root)
		return -1;
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
	const cJSON *user = cJSON_GetObjectItemCaseSensitive(root, "user");
	const cJSON *amount = cJSON_GetObjectItemCaseSensitive(root, "amount");
	const cJSON *qty = cJSON_GetObjectItemCaseSensitive(root, "qty");
	int rc = -1;
	if (cJSON_IsNumber(id) && cJSON_IsString(user) &&
	    cJSON_IsNumber(amount) && cJSON_IsNumber(qty) &&
	    user->valuestring[0] == 'u') {
		p->sched = m->sched;
		p->id = (int64_t)id->valuedouble;
		p->user = (uint32_t)strtoul(user->valuestring + 1, NULL, 10);
		p->amount = amount->valuedouble;
		p->qty = (int32_t)qty->valueint;
		rc = 0;
	}
	cJSON_Delete(root);
	return rc;
}

static void compute(const struct parsed *p, struct computed *c)
{
	c->sched = p->sched;
	c->id = p->id;
	c->risk = (int32_t)(bu_mix(p->user) % 100);
	c->total = p->amount * p->qty * (1.0 + c->risk / 1000.0);
}

/* Storage: a file written one batch at a time; checksum of what was saved. */
struct store {
	FILE *f;
	struct bu_lat *lat;
	uint64_t sum, saved, batches;
	char buf[BATCH * 64];
	int err;
};

static void save(struct store *s, const struct computed *const *cs, size_t n)
{
	size_t off = 0;
	for (size_t i = 0; i < n; i++) {
		off += (size_t)snprintf(s->buf + off, sizeof s->buf - off,
					"%lld %.4f %d\n", (long long)cs[i]->id,
					cs[i]->total, cs[i]->risk);
		/* Order-independent: the pipeline may batch differently. */
		s->sum += bu_mix((uint64_t)cs[i]->id ^
				 (uint64_t)llround(cs[i]->total * 1e4));
	}
	if (s->f && fwrite(s->buf, 1, off, s->f) != off)
		s->err = 1;
	int64_t now = bu_now();
	if (s->lat)
		for (size_t i = 0; i < n; i++)
			bu_lat_add(s->lat, now - cs[i]->sched);
	s->saved += n;
	s->batches++;
}

/* ---- sequential: one thread, as fast as it can ---- */

static double run_seq(long n, struct store *st, long *malformed)
{
	struct computed held[BATCH];
	const struct computed *ptrs[BATCH];
	size_t k = 0;
	int64_t first = 0;
	long bad = 0;
	int64_t t0 = bu_now();
	for (long i = 0; i < n; i++) {
		struct msg m;
		struct parsed p;
		make_msg(i, &m);
		m.sched = bu_now();
		if (parse_msg(&m, &p) != 0) {
			bad++;
			continue;
		}
		if (k == 0)
			first = bu_now();
		compute(&p, &held[k]);
		ptrs[k] = &held[k];
		k++;
		if (k == BATCH || bu_now() - first >= CPAT_SEC) {
			save(st, ptrs, k);
			k = 0;
		}
	}
	if (k)
		save(st, ptrs, k);
	*malformed = bad;
	return (double)(bu_now() - t0) / 1e9;
}

/* ---- the pipeline under an open-loop load ---- */

struct trial {
	struct bu_load l; /* offered and achieved rate, latency, ok */
	double secs;
	long saved, malformed;
	uint64_t sum;
};

static atomic_long g_malformed;

static int st_parse(const void *in, void *out, struct cpat_stage_ctx *c)
{
	if (parse_msg(in, out) != 0) {
		atomic_fetch_add_explicit(&g_malformed, 1,
					  memory_order_relaxed);
		return CPAT_STAGE_SKIP; /* logged (counted) and skipped */
	}
	return CPAT_STAGE_EMIT;
}

static int st_compute(const void *in, void *out, struct cpat_stage_ctx *c)
{
	compute(in, out);
	return CPAT_STAGE_EMIT;
}

static int sink_save(const void *item, void *arg)
{
	struct store *s = arg;
	const struct cpat_batch *b = item;
	const struct computed *ptrs[BATCH];
	for (size_t i = 0; i < b->count; i++)
		ptrs[i] = cpat_batch_item(b, i);
	save(s, ptrs, b->count);
	return s->err ? -EIO : 0;
}

static int ordered = 1;

static int run_trial(double rate, long n, unsigned workers, FILE *out,
		     struct trial *t)
{
	memset(t, 0, sizeof *t);
	t->l.rate = rate;
	struct bu_lat lat;
	if (bu_lat_init(&lat, (size_t)n) != 0)
		return -ENOMEM;
	struct store *st = calloc(1, sizeof *st);
	if (!st)
		return -ENOMEM;
	st->f = out;
	st->lat = &lat;
	atomic_store(&g_malformed, 0);

	struct cpat_pipeline *p = NULL;
	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	po.item_size = sizeof(struct msg);
	po.source_capacity = 1024;
	int rc = cpat_pipeline_create(&p, &po);
	if (!rc)
		rc = cpat_pipeline_set_feed(p);
	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.name = "parse";
	so.map = st_parse;
	so.out_size = sizeof(struct parsed);
	so.workers = workers;
	so.ordered = ordered;
	so.out_capacity = 1024;
	if (!rc)
		rc = cpat_pipeline_add_stage(p, &so);
	cpat_stage_opts_init(&so);
	so.name = "compute";
	so.map = st_compute;
	so.out_size = sizeof(struct computed);
	so.out_capacity = 1024;
	if (!rc)
		rc = cpat_pipeline_add_stage(p, &so);
	struct cpat_batch_opts bo;
	cpat_batch_opts_init(&bo);
	bo.name = "batch";
	bo.max_items = BATCH;
	bo.flush_ns = CPAT_SEC;
	if (!rc)
		rc = cpat_pipeline_add_batch(p, &bo);
	if (!rc)
		rc = cpat_pipeline_set_sink(p, sink_save, st);
	if (!rc)
		rc = cpat_pipeline_start(p, NULL, CPAT_FOREVER);
	int64_t t0 = bu_now() + 2 * CPAT_MSEC;
	double period = 1e9 / rate;
	long i;
	for (i = 0; i < n && !rc; i++) {
		struct msg m;
		make_msg(i, &m);
		m.sched = t0 + (int64_t)((double)i * period);
		/* Sleep when more than 200 us ahead of schedule, otherwise feed
		 * at once: spinning to the exact time would take a core from
		 * the pipeline. A message fed early (by < 200 us) is still
		 * charged from its scheduled time; a late one (a late wake-up,
		 * or a full pipeline) is charged for the delay. */
		int64_t ahead = m.sched - bu_now();
		if (ahead > 200 * CPAT_USEC)
			bu_sleep_ns(ahead - 150 * CPAT_USEC);
		rc = cpat_pipeline_feed(p, &m, NULL);
	}
	t->l.messages = i;
	if (p && !rc)
		cpat_pipeline_feed_close(p);
	struct cpat_pipeline_result res;
	int wrc = p && !rc ? cpat_pipeline_wait(p, &res) : 0;
	int64_t t1 = bu_now();
	cpat_pipeline_destroy(p);
	t->secs = (double)(t1 - t0) / 1e9;
	t->saved = (long)st->saved;
	t->malformed = atomic_load(&g_malformed);
	t->l.achieved = (double)(t->saved + t->malformed) / t->secs;
	t->l.p50 = (double)bu_lat_pct(&lat, 50);
	t->l.p99 = (double)bu_lat_pct(&lat, 99);
	t->l.p999 = (double)bu_lat_pct(&lat, 99.9);
	t->sum = st->sum;
	t->l.ok = !rc && !wrc && !st->err && t->saved + t->malformed == n;
	if (rc || wrc)
		fprintf(stderr, "realtime: pipeline: %s\n",
			cpat_strerror(rc ? rc : wrc));
	bu_lat_free(&lat);
	free(st);
	return rc ? rc : wrc;
}

static void print_trial(const char *what, const struct trial *t, int pass)
{
	char a[32], b[32], c[32];
	printf("%-10s offered %9.0f msg/s  achieved %9.0f msg/s  latency p50 "
	       "%9s  p99 %9s  "
	       "p99.9 %9s  %s\n",
	       what, t->l.rate, t->l.achieved, bu_fmt_ns(a, t->l.p50),
	       bu_fmt_ns(b, t->l.p99), bu_fmt_ns(c, t->l.p999),
	       pass < 0 ? ""
	       : pass   ? "pass"
			: "FAIL (p99 >= 100 ms or behind)");
	fflush(stdout);
}

#endif /* HAVE_CJSON */

int main(int argc, char **argv)
{
	struct bu_args a;
	long workers = 0, max_trials = 0, ord = 1;
	double trial_ms = 0, rate = 10000, max_rate = 2e6;
	const struct bu_opt opts[] = {
		{"rate", BU_DOUBLE, &rate,
		 "the guide's offered load (10000 msg/s)"},
		{"trial-ms", BU_DOUBLE, &trial_ms,
		 "length of each trial (full 5000, quick 1000)"},
		{"workers", BU_LONG, &workers,
		 "parse workers (default: the cores)"},
		{"max-rate", BU_DOUBLE, &max_rate, "search no higher (2e6)"},
		{"max-trials", BU_LONG, &max_trials,
		 "search trials at most (full 14, quick 10)"},
		{"ordered", BU_LONG, &ord,
		 "1: the parse stage keeps message order (default); 0: not"},
	};
	bu_parse(
		argc, argv, &a,
		"the Go guide's real-time JSON processing under open-loop load",
		opts, sizeof opts / sizeof opts[0]);
#ifndef HAVE_CJSON
	return bu_report_skip(
		&a, "realtime",
		"needs cJSON: install libcjson-dev (Debian) and rebuild");
#else
	if (bu_force_skip("cjson") || bu_force_skip("realtime"))
		return bu_report_skip(
			&a, "realtime",
			"forced by CPAT_BENCH_FORCE_SKIP (needs libcjson-dev)");
	int tiny = a.mode == BU_TINY, quick = a.mode == BU_QUICK;
	if (trial_ms <= 0)
		trial_ms = tiny ? 150 : quick ? 1000 : 5000;
	if (max_trials <= 0)
		max_trials = tiny ? 2 : quick ? 10 : 14;
	int ncpu = bu_ncpu();
	if (workers <= 0)
		workers = ncpu;
	ordered = ord != 0;

	struct bu_report rep;
	bu_report_begin(
		&rep, &a, "realtime",
		"the Go guide's target: 10,000 msg/s with latency < 100 ms");
	printf("pipeline: feed -> parse JSON (cJSON, %s, %ld workers) -> "
	       "compute -> "
	       "batch(100, 1 s) -> save; trials of %.0f ms after a discarded "
	       "warm-up\n",
	       ordered ? "ordered" : "unordered", workers, trial_ms);
	FILE *devnull = fopen("/dev/null", "w");

	/* Sequential capacity, and the reference output for the 10k run. */
	long n10k = (long)(rate * trial_ms / 1e3);
	if (n10k < 100)
		n10k = 100;
	struct store *ss = calloc(1, sizeof *ss);
	ss->f = devnull;
	long bad = 0;
	(void)run_seq(n10k, ss, &bad);
	uint64_t seq_sum = ss->sum;
	long seq_saved = (long)ss->saved;
	free(ss);
	/* The capacity: the best of 3 warm runs of at least 100,000 messages
	 * (a short cold run, 10,000 messages in 22 ms, understated it by a
	 * quarter and put the pipeline above its bound of cores x capacity). */
	long ncap = n10k > 100000 ? n10k : 100000;
	double seq_s = 0;
	for (int r = 0; r < 3; r++) {
		struct store *cs = calloc(1, sizeof *cs);
		cs->f = devnull;
		long cbad = 0;
		double t = run_seq(ncap, cs, &cbad);
		free(cs);
		if (r == 0 || t < seq_s)
			seq_s = t;
	}
	double seq_rate = (double)ncap / seq_s;
	printf("sequential: %ld messages in %.3f s = %.0f msg/s capacity (one "
	       "thread, closed loop, best of 3 warm runs); reference output "
	       "from the same %ld messages as the 10k run, "
	       "%ld malformed skipped\n",
	       ncap, seq_s, seq_rate, n10k, bad);

	/* A short warm-up at the guide's rate (first-touch page faults, thread
	 * start-up, the allocator's arenas), not reported. */
	struct trial t10;
	run_trial(rate, n10k / 5 > 100 ? n10k / 5 : 100, (unsigned)workers,
		  devnull, &t10);

	/* The guide's load. */
	run_trial(rate, n10k, (unsigned)workers, devnull, &t10);
	int pass10 = bu_load_passes(&t10.l);
	print_trial("guide", &t10, pass10);
	if (!pass10) {
		/* A stall of the machine (other processes) or a real overload?
		 * One retry: an overload fails again. Both trials are printed
		 * and kept in the JSON; the better one is reported. */
		struct trial again;
		run_trial(rate, n10k, (unsigned)workers, devnull, &again);
		int pa = bu_load_passes(&again.l);
		print_trial("retry", &again, pa);
		if (pa || again.l.p99 < t10.l.p99) {
			t10 = again;
			pass10 = pa;
		}
	}
	int eq = t10.l.ok && t10.sum == seq_sum && t10.saved == seq_saved &&
		 t10.malformed == bad;
	bu_check(&rep, "outputs_equal", eq);

	/* The highest rate with p99 < 100 ms: double, then bisect. */
	bu_json_arr(rep.json, "trials");
	bu_load_json(rep.json, &t10.l, pass10);
	double lo = pass10 ? rate : 0, hi = pass10 ? 0 : rate;
	struct trial best = t10;
	long trials = 0;
	struct bu_progress pg;
	bu_progress_start(&pg, &a, "realtime search", "trials",
			  (uint64_t)max_trials, 1);
	while (trials < max_trials) {
		/* Up while every rate passed, down while even the guide's
		 * failed, then bisect. */
		double r = bu_load_next(lo, hi, max_rate, 100);
		if (r == 0)
			break;
		long n = (long)(r * trial_ms / 1e3);
		struct trial t;
		run_trial(r, n, (unsigned)workers, devnull, &t);
		int ps = bu_load_passes(&t.l);
		print_trial("search", &t, ps);
		bu_load_json(rep.json, &t.l, ps);
		if (!ps) {
			/* One retry, as for the guide's rate: a rate passes if
			 * one of two trials keeps p99 under 100 ms. */
			run_trial(r, n, (unsigned)workers, devnull, &t);
			ps = bu_load_passes(&t.l);
			print_trial("retry", &t, ps);
			bu_load_json(rep.json, &t.l, ps);
		}
		if (ps) {
			lo = r;
			best = t;
		} else {
			hi = r;
		}
		trials++;
		bu_progress_update(&pg, (uint64_t)trials);
	}
	bu_progress_end(&pg, (uint64_t)trials);
	bu_json_end(rep.json);
	fclose(devnull);
	if (lo > 0)
		printf("highest rate with p99 < 100 ms: %.0f msg/s (p99 %.1f "
		       "ms)%s\n",
		       lo, best.l.p99 / 1e6,
		       hi == 0 ? " (search stopped before a failing rate)"
			       : "");
	else
		printf("no tried rate kept p99 < 100 ms\n");

	bu_verdict(&rep,
		   "realtime: guide target 10,000 msg/s under 100 ms: achieved "
		   "%.0f msg/s, p99 %.1f "
		   "ms, p99.9 %.1f ms; highest offered rate with p99 < 100 ms: "
		   "%.0f msg/s%s",
		   t10.l.achieved, t10.l.p99 / 1e6, t10.l.p999 / 1e6, lo,
		   hi == 0 ? " (search capped)" : "");
	bu_json_num(rep.json, "sequential_capacity", seq_rate);
	bu_json_num(rep.json, "max_rate_p99_100ms", lo);
	bu_json_obj(rep.json, "at_guide_rate");
	bu_json_num(rep.json, "offered", t10.l.rate);
	bu_json_num(rep.json, "achieved", t10.l.achieved);
	bu_json_num(rep.json, "latency_p50_ns", t10.l.p50);
	bu_json_num(rep.json, "latency_p99_ns", t10.l.p99);
	bu_json_num(rep.json, "latency_p999_ns", t10.l.p999);
	bu_json_end(rep.json);

	char note[128], b1[32], b2[32], b3[32];
	snprintf(note, sizeof note,
		 "achieved %.0f msg/s, p50 %s p99 %s p99.9 %s", t10.l.achieved,
		 bu_fmt_ns(b1, t10.l.p50), bu_fmt_ns(b2, t10.l.p99),
		 bu_fmt_ns(b3, t10.l.p999));
	bu_summary(&rep, "realtime @10k msg/s: p99 latency", "< 100 ms", NAN,
		   t10.l.p99 / 1e6, "ms", NAN, NAN, note);
	snprintf(note, sizeof note,
		 "seq = 1-thread capacity; conc = max offered rate, p99 < 100 "
		 "ms%s",
		 hi == 0 ? " (search capped)" : "");
	bu_summary(&rep, "realtime max rate p99<100ms", "10k msg/s", seq_rate,
		   lo, "msg/s", lo / seq_rate, (double)ncpu, note);
	return bu_report_end(&rep);
#endif
}
