/*
 * benchutil: shared helpers of the scenario benches (see benchutil.h).
 */
#define _GNU_SOURCE
#include "benchutil.h"

#include <cpattern.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* ---- arguments ---- */

static void usage(FILE *f, const struct bu_args *a, const char *about,
		  const struct bu_opt *opts, size_t nopts)
{
	fprintf(f,
		"usage: %s [--quick|--tiny|--full] [--json FILE] "
		"[--no-progress] [options]\n",
		a->argv0);
	if (about)
		fprintf(f, "%s\n", about);
	fprintf(f, "  --full          the guide's sizes (default)\n"
		   "  --quick         short run (seconds)\n"
		   "  --tiny          smoke-test sizes\n"
		   "  --json FILE     write machine-readable results\n"
		   "  --no-progress   no progress lines\n");
	for (size_t i = 0; i < nopts; i++)
		fprintf(f, "  --%-14s %s\n", opts[i].name, opts[i].help);
}

void bu_parse(int argc, char **argv, struct bu_args *a, const char *about,
	      const struct bu_opt *opts, size_t nopts)
{
	memset(a, 0, sizeof *a);
	a->argv0 = argv[0];
	a->progress = 1;
	for (int i = 1; i < argc; i++) {
		const char *s = argv[i];
		if (!strcmp(s, "--quick")) {
			a->mode = BU_QUICK;
		} else if (!strcmp(s, "--tiny")) {
			a->mode = BU_TINY;
		} else if (!strcmp(s, "--full")) {
			a->mode = BU_FULL;
		} else if (!strcmp(s, "--no-progress")) {
			a->progress = 0;
		} else if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
			usage(stdout, a, about, opts, nopts);
			exit(0);
		} else if (!strcmp(s, "--json") && i + 1 < argc) {
			a->json = argv[++i];
		} else {
			size_t k;
			for (k = 0; k < nopts; k++)
				if (!strncmp(s, "--", 2) &&
				    !strcmp(s + 2, opts[k].name))
					break;
			if (k == nopts || i + 1 >= argc) {
				fprintf(stderr, "%s: bad argument '%s'\n",
					a->argv0, s);
				usage(stderr, a, about, opts, nopts);
				exit(2);
			}
			const char *v = argv[++i];
			char *end = NULL;
			errno = 0;
			switch (opts[k].type) {
			case BU_LONG:
				*(long *)opts[k].ptr = strtol(v, &end, 0);
				break;
			case BU_DOUBLE:
				*(double *)opts[k].ptr = strtod(v, &end);
				break;
			case BU_STR:
				*(const char **)opts[k].ptr = v;
				end = (char *)v + strlen(v);
				break;
			}
			if (errno || !end || *end || end == v) {
				fprintf(stderr, "%s: bad value '%s' for --%s\n",
					a->argv0, v, opts[k].name);
				exit(2);
			}
		}
	}
}

const char *bu_mode_name(enum bu_mode m)
{
	return m == BU_TINY ? "tiny" : m == BU_QUICK ? "quick" : "full";
}

/* ---- time and work ---- */

int64_t bu_now(void)
{
	return cpat_now_ns();
}

void bu_sleep_ns(int64_t ns)
{
	if (ns <= 0)
		return;
	struct timespec ts = {(time_t)(ns / 1000000000),
			      (long)(ns % 1000000000)};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

void bu_sleep_until(int64_t t)
{
	for (;;) {
		int64_t d = t - bu_now();
		if (d <= 0)
			return;
		bu_sleep_ns(d);
	}
}

static double iters_per_ns; /* set by bu_work_calibrate() */

uint64_t bu_work_iters(uint64_t seed, uint64_t n)
{
	uint64_t x = seed | 1;
	for (uint64_t i = 0; i < n; i++) {
		/* xorshift: each step depends on the last, so it cannot be
		 * vectorised or skipped. */
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		__asm__ volatile("" : "+r"(x));
	}
	return x;
}

void bu_work_calibrate(void)
{
	if (iters_per_ns > 0)
		return;
	/* Best of five runs of ~10 ms: the least disturbed one. */
	uint64_t n = 1000000;
	double best = 0;
	for (int r = 0; r < 5; r++) {
		int64_t t0 = bu_now();
		uint64_t v = bu_work_iters((uint64_t)r, n);
		int64_t dt = bu_now() - t0;
		__asm__ volatile("" : : "r"(v));
		double ipn = (double)n / (double)(dt > 0 ? dt : 1);
		if (ipn > best)
			best = ipn;
	}
	iters_per_ns = best;
}

uint64_t bu_work_ns(int64_t ns)
{
	if (iters_per_ns <= 0)
		bu_work_calibrate();
	return ns <= 0 ? 0 : (uint64_t)((double)ns * iters_per_ns + 0.5);
}

int bu_ncpu(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (int)n : 1;
}

const char *bu_cpu_model(void)
{
	static char model[128];
	if (model[0])
		return model;
	snprintf(model, sizeof model, "unknown");
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (!f)
		return model;
	char line[512];
	while (fgets(line, sizeof line, f)) {
		if (!strncmp(line, "model name", 10)) {
			char *c = strchr(line, ':');
			if (c) {
				c++;
				while (*c == ' ' || *c == '\t')
					c++;
				c[strcspn(c, "\n")] = 0;
				snprintf(model, sizeof model, "%s", c);
			}
			break;
		}
	}
	fclose(f);
	return model;
}

double bu_loadavg1(void)
{
	double l[1];
	return getloadavg(l, 1) == 1 ? l[0] : NAN;
}

void bu_usage_now(struct bu_usage *u)
{
	struct rusage r;
	memset(u, 0, sizeof *u);
	if (getrusage(RUSAGE_SELF, &r) != 0)
		return;
	u->cpu_ns = (double)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e9 +
		    (double)(r.ru_utime.tv_usec + r.ru_stime.tv_usec) * 1e3;
	u->vcsw = r.ru_nvcsw;
	u->ivcsw = r.ru_nivcsw;
}

void bu_usage_sub(struct bu_usage *u, const struct bu_usage *start)
{
	u->cpu_ns -= start->cpu_ns;
	u->vcsw -= start->vcsw;
	u->ivcsw -= start->ivcsw;
}

void bu_cpu_ticks(uint64_t *total, uint64_t *steal)
{
	*total = *steal = 0;
	FILE *f = fopen("/proc/stat", "r");
	if (!f)
		return;
	/* cpu user nice system idle iowait irq softirq steal guest guest_nice;
	 * guest time is already counted in user and nice. */
	unsigned long long v[8] = {0};
	if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
		   &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
		for (int i = 0; i < 8; i++)
			*total += v[i];
		*steal = v[7];
	}
	fclose(f);
}

int bu_sync_file(const char *path)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	int e = errno;
	close(fd);
	errno = e;
	return rc;
}

size_t bu_median_index(const int64_t *v, size_t n)
{
	size_t idx[64];
	if (n > 64)
		n = 64;
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		idx[i] = i;
	/* Insertion sort of the indices by value (n is small). */
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && v[idx[j]] < v[idx[j - 1]]; j--) {
			size_t t = idx[j];
			idx[j] = idx[j - 1];
			idx[j - 1] = t;
		}
	return idx[(n - 1) / 2];
}

uint64_t bu_fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *c = p;
	for (size_t i = 0; i < n; i++) {
		h ^= c[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

int bu_force_skip(const char *what)
{
	const char *e = getenv("CPAT_BENCH_FORCE_SKIP");
	if (!e || !*e)
		return 0;
	size_t wl = strlen(what);
	for (const char *p = e; *p;) {
		size_t l = strcspn(p, ",");
		if ((l == wl && !strncmp(p, what, l)) ||
		    (l == 3 && !strncmp(p, "all", 3)))
			return 1;
		p += l;
		if (*p == ',')
			p++;
	}
	return 0;
}

/* ---- latencies ---- */

int bu_lat_init(struct bu_lat *l, size_t cap)
{
	l->v = malloc((cap ? cap : 1) * sizeof *l->v);
	l->cap = cap;
	atomic_init(&l->n, 0);
	l->sorted = 0;
	return l->v ? 0 : -1;
}

void bu_lat_free(struct bu_lat *l)
{
	free(l->v);
	l->v = NULL;
}

void bu_lat_reset(struct bu_lat *l)
{
	atomic_store(&l->n, 0);
	l->sorted = 0;
}

void bu_lat_add(struct bu_lat *l, int64_t ns)
{
	size_t i = atomic_fetch_add_explicit(&l->n, 1, memory_order_relaxed);
	if (i < l->cap)
		l->v[i] = ns;
}

size_t bu_lat_count(const struct bu_lat *l)
{
	size_t n = atomic_load(&l->n);
	return n < l->cap ? n : l->cap;
}

int bu_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

int64_t bu_lat_pct(struct bu_lat *l, double p)
{
	size_t n = bu_lat_count(l);
	if (n == 0)
		return -1;
	if (!l->sorted) {
		qsort(l->v, n, sizeof *l->v, cmp_i64);
		l->sorted = 1;
	}
	/* Nearest rank: the smallest value with at least p% at or below. */
	double rank = ceil(p / 100.0 * (double)n);
	size_t i = rank < 1 ? 0 : (size_t)rank - 1;
	return l->v[i < n ? i : n - 1];
}

double bu_lat_mean(const struct bu_lat *l)
{
	size_t n = bu_lat_count(l);
	if (n == 0)
		return NAN;
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += (double)l->v[i];
	return s / (double)n;
}

/* ---- JSON ---- */

struct bu_json {
	FILE *f;
	int depth;
	int first[32];   /* per level: nothing written yet */
	char closer[32]; /* per level: '}' or ']' */
	int err;
};

struct bu_json *bu_json_open(const char *path)
{
	if (!path)
		return NULL;
	struct bu_json *j = calloc(1, sizeof *j);
	if (!j)
		return NULL;
	j->f = fopen(path, "w");
	if (!j->f) {
		fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
		free(j);
		return NULL;
	}
	fputc('{', j->f);
	j->first[0] = 1;
	return j;
}

static void put_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s && *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void key(struct bu_json *j, const char *k)
{
	if (!j->first[j->depth])
		fputc(',', j->f);
	j->first[j->depth] = 0;
	if (k) {
		put_str(j->f, k);
		fputc(':', j->f);
	}
}

static void open_level(struct bu_json *j, const char *k, char c)
{
	if (!j)
		return;
	key(j, k);
	fputc(c, j->f);
	if (j->depth < 31)
		j->depth++;
	else
		j->err = 1;
	j->first[j->depth] = 1;
	j->closer[j->depth] = c == '{' ? '}' : ']';
}

void bu_json_obj(struct bu_json *j, const char *k)
{
	open_level(j, k, '{');
}

void bu_json_arr(struct bu_json *j, const char *k)
{
	open_level(j, k, '[');
}

void bu_json_end(struct bu_json *j)
{
	if (!j || j->depth == 0)
		return;
	fputc(j->closer[j->depth], j->f);
	j->depth--;
}

void bu_json_num(struct bu_json *j, const char *k, double v)
{
	if (!j)
		return;
	key(j, k);
	if (isnan(v) || isinf(v))
		fputs("null", j->f);
	else
		fprintf(j->f, "%.9g", v);
}

void bu_json_int(struct bu_json *j, const char *k, int64_t v)
{
	if (!j)
		return;
	key(j, k);
	fprintf(j->f, "%lld", (long long)v);
}

void bu_json_str(struct bu_json *j, const char *k, const char *s)
{
	if (!j)
		return;
	key(j, k);
	put_str(j->f, s);
}

void bu_json_bool(struct bu_json *j, const char *k, int v)
{
	if (!j)
		return;
	key(j, k);
	fputs(v ? "true" : "false", j->f);
}

int bu_json_close(struct bu_json *j)
{
	if (!j)
		return 0;
	while (j->depth > 0)
		bu_json_end(j);
	fputs("}\n", j->f);
	int rc = (ferror(j->f) || j->err) ? -1 : 0;
	if (fclose(j->f) != 0)
		rc = -1;
	free(j);
	return rc;
}

/* ---- report ---- */

static void json_machine(struct bu_json *j)
{
	bu_json_obj(j, "machine");
	bu_json_int(j, "nproc", bu_ncpu());
	bu_json_str(j, "cpu", bu_cpu_model());
	bu_json_num(j, "loadavg1", bu_loadavg1());
	/* The run's date (UTC), for the charts' titles. */
	char date[32] = "";
	time_t now = time(NULL);
	struct tm tm;
	if (gmtime_r(&now, &tm))
		strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", &tm);
	bu_json_str(j, "date", date);
	bu_json_end(j);
}

void bu_report_begin(struct bu_report *r, struct bu_args *a,
		     const char *scenario, const char *about)
{
	memset(r, 0, sizeof *r);
	r->scenario = scenario;
	r->args = a;
	printf("== %s (%s run)%s%s\n", scenario, bu_mode_name(a->mode),
	       about ? ": " : "", about ? about : "");
	printf("machine: %d cpus, %s, loadavg %.2f at start (other processes "
	       "may share the machine)\n",
	       bu_ncpu(), bu_cpu_model(), bu_loadavg1());
	bu_cpu_ticks(&r->ticks0, &r->steal0);
	fflush(stdout);
	if (a->json) {
		r->json = bu_json_open(a->json);
		if (!r->json)
			bu_check(r, "json_open", 0);
	}
	bu_json_str(r->json, "scenario", scenario);
	bu_json_str(r->json, "mode", bu_mode_name(a->mode));
	json_machine(r->json);
	bu_json_obj(r->json, "data");
}

void bu_summary(struct bu_report *r, const char *name, const char *claim,
		double seq, double conc, const char *unit, double speedup,
		double ideal, const char *note)
{
	if (r->nrows >= BU_MAX_SUMMARY)
		return;
	struct bu_summary_row *s = &r->rows[r->nrows++];
	snprintf(s->name, sizeof s->name, "%s", name);
	snprintf(s->claim, sizeof s->claim, "%s", claim ? claim : "");
	snprintf(s->unit, sizeof s->unit, "%s", unit);
	snprintf(s->note, sizeof s->note, "%s", note ? note : "");
	s->seq = seq;
	s->conc = conc;
	s->speedup = speedup;
	s->ideal = ideal;
	double eff = speedup / ideal;
	printf("summary: %-34s claim %-18s seq %10.4g %s  conc %10.4g %s  "
	       "speedup %6.2fx  ideal %5.2fx  efficiency %5.2f%s%s\n",
	       s->name, s->claim, seq, unit, conc, unit, speedup, ideal, eff,
	       s->note[0] ? "  " : "", s->note);
	fflush(stdout);
}

void bu_verdict(struct bu_report *r, const char *fmt, ...)
{
	if (r->nverdicts >= 4)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->verdicts[r->nverdicts], sizeof r->verdicts[0], fmt, ap);
	va_end(ap);
	printf("verdict: %s\n", r->verdicts[r->nverdicts]);
	fflush(stdout);
	r->nverdicts++;
}

void bu_check(struct bu_report *r, const char *name, int ok)
{
	printf("check %s: %s\n", name, ok ? "ok" : "FAILED");
	fflush(stdout);
	if (r->nchecks >= BU_MAX_CHECKS) {
		if (!ok)
			r->checks[BU_MAX_CHECKS - 1].ok = 0;
		return;
	}
	snprintf(r->checks[r->nchecks].name, sizeof r->checks[0].name, "%s",
		 name);
	r->checks[r->nchecks].ok = ok;
	r->nchecks++;
}

int bu_report_end(struct bu_report *r)
{
	int ok = 1;
	for (size_t i = 0; i < r->nchecks; i++)
		ok &= r->checks[i].ok;
	struct bu_json *j = r->json;
	bu_json_end(j); /* data */
	bu_json_arr(j, "summary");
	for (size_t i = 0; i < r->nrows; i++) {
		struct bu_summary_row *s = &r->rows[i];
		bu_json_obj(j, NULL);
		bu_json_str(j, "name", s->name);
		bu_json_str(j, "claim", s->claim);
		bu_json_num(j, "seq", s->seq);
		bu_json_num(j, "conc", s->conc);
		bu_json_str(j, "unit", s->unit);
		bu_json_num(j, "speedup", s->speedup);
		bu_json_num(j, "ideal", s->ideal);
		bu_json_num(j, "efficiency", s->speedup / s->ideal);
		bu_json_str(j, "note", s->note);
		bu_json_end(j);
	}
	bu_json_end(j);
	bu_json_arr(j, "verdicts");
	for (size_t i = 0; i < r->nverdicts; i++)
		bu_json_str(j, NULL, r->verdicts[i]);
	bu_json_end(j);
	bu_json_obj(j, "checks");
	for (size_t i = 0; i < r->nchecks; i++)
		bu_json_bool(j, r->checks[i].name, r->checks[i].ok);
	bu_json_end(j);
	bu_json_num(j, "loadavg1_end", bu_loadavg1());
	/* Stolen time: the hypervisor ran other guests on this machine's
	 * cpus (it shows neither in the load average nor in our CPU time, but
	 * stretches every timing). */
	uint64_t t1, s1;
	bu_cpu_ticks(&t1, &s1);
	double steal = t1 > r->ticks0 ? (double)(s1 - r->steal0) /
						(double)(t1 - r->ticks0)
				      : NAN;
	bu_json_num(j, "steal_fraction", steal);
	bu_json_bool(j, "ok", ok);
	if (steal == steal)
		printf("cpu time stolen by the hypervisor during the run: "
		       "%.1f%%%s\n",
		       100 * steal,
		       steal > 0.02 ? " (other guests ran on these cpus: the "
				      "timings above are disturbed)"
				    : "");
	printf("loadavg %.2f at end on %d cpus%s\n", bu_loadavg1(), bu_ncpu(),
	       bu_loadavg1() > bu_ncpu()
		       ? ": more runnable threads than cpus (other processes, "
			 "or this run's own), so the timings above are "
			 "disturbed; a version with more threads also gets a "
			 "larger share of a shared machine"
		       : "");
	if (bu_json_close(j) != 0) {
		fprintf(stderr, "%s: writing the JSON failed\n", r->scenario);
		ok = 0;
	}
	r->json = NULL;
	if (!ok)
		printf("%s: FAILED (a check failed)\n", r->scenario);
	fflush(stdout);
	return ok ? 0 : 1;
}

int bu_report_skip(struct bu_args *a, const char *scenario, const char *reason)
{
	printf("SKIP %s: %s\n", scenario, reason);
	fflush(stdout);
	if (a->json) {
		struct bu_json *j = bu_json_open(a->json);
		if (!j)
			return 1;
		bu_json_str(j, "scenario", scenario);
		bu_json_str(j, "skipped", reason);
		json_machine(j);
		if (bu_json_close(j) != 0)
			return 1;
	}
	return 0;
}

/* ---- tables ---- */

void bu_table(const char *title, size_t ncols, const char *const *hdr,
	      char (*cells)[48], size_t nrows)
{
	size_t w[32] = {0};
	if (ncols > 32)
		ncols = 32;
	for (size_t c = 0; c < ncols; c++) {
		w[c] = strlen(hdr[c]);
		for (size_t r = 0; r < nrows; r++) {
			size_t l = strlen(cells[r * ncols + c]);
			if (l > w[c])
				w[c] = l;
		}
	}
	if (title)
		printf("\n%s\n", title);
	for (size_t c = 0; c < ncols; c++)
		printf(c ? "  %*s" : "%-*s", (int)w[c], hdr[c]);
	printf("\n");
	for (size_t r = 0; r < nrows; r++) {
		for (size_t c = 0; c < ncols; c++)
			printf(c ? "  %*s" : "%-*s", (int)w[c],
			       cells[r * ncols + c]);
		printf("\n");
	}
	fflush(stdout);
}

const char *bu_fmt_ns(char buf[32], double ns)
{
	if (isnan(ns))
		snprintf(buf, 32, "-");
	else if (ns < 1e3)
		snprintf(buf, 32, "%.0f ns", ns);
	else if (ns < 1e6)
		snprintf(buf, 32, "%.3g us", ns / 1e3);
	else if (ns < 1e9)
		snprintf(buf, 32, "%.3g ms", ns / 1e6);
	else
		snprintf(buf, 32, "%.3g s", ns / 1e9);
	return buf;
}

/* ---- progress ---- */

void bu_progress_start(struct bu_progress *p, const struct bu_args *a,
		       const char *label, const char *unit, uint64_t total,
		       uint64_t every)
{
	memset(p, 0, sizeof *p);
	pthread_mutex_init(&p->mu, NULL);
	p->label = label;
	p->unit = unit;
	p->total = total;
	p->every = every;
	p->next_plain = every;
	p->t0 = bu_now();
	p->enabled = a->progress;
	p->tty = isatty(STDERR_FILENO);
}

static void progress_line(struct bu_progress *p, uint64_t done, int64_t now,
			  int tty)
{
	double secs = (double)(now - p->t0) / 1e9;
	double rate = secs > 0 ? (double)done / secs : 0;
	double left = rate > 0 && p->total > done
			      ? (double)(p->total - done) / rate
			      : 0;
	fprintf(stderr,
		"%s%s: %llu/%llu %s (%.0f%%), %.1f %s/s, %.1f s elapsed, ~%.1f "
		"s left%s",
		tty ? "\r" : "", p->label, (unsigned long long)done,
		(unsigned long long)p->total, p->unit,
		p->total ? 100.0 * (double)done / (double)p->total : 100.0,
		rate, p->unit, secs, left, tty ? "\033[K" : "\n");
	fflush(stderr);
}

void bu_progress_update(struct bu_progress *p, uint64_t done)
{
	if (!p->enabled)
		return;
	if (pthread_mutex_trylock(&p->mu) != 0)
		return;
	int64_t now = bu_now();
	if (p->tty) {
		if (now - p->last_tty >= 100 * CPAT_MSEC) {
			p->last_tty = now;
			p->printed_tty = 1;
			progress_line(p, done, now, 1);
		}
	} else if (p->every && done >= p->next_plain) {
		while (p->next_plain <= done)
			p->next_plain += p->every;
		progress_line(p, done, now, 0);
	}
	pthread_mutex_unlock(&p->mu);
}

void bu_progress_end(struct bu_progress *p, uint64_t done)
{
	(void)done;
	pthread_mutex_lock(&p->mu);
	if (p->enabled && p->tty && p->printed_tty) {
		fprintf(stderr, "\r\033[K");
		fflush(stderr);
	}
	pthread_mutex_unlock(&p->mu);
	pthread_mutex_destroy(&p->mu);
}

/* ---- offered-load trials ---- */

int bu_load_passes(const struct bu_load *t)
{
	return t->ok && t->p99 < 100e6 && t->achieved >= 0.95 * t->rate;
}

void bu_load_json(struct bu_json *j, const struct bu_load *t, int pass)
{
	bu_json_obj(j, NULL);
	bu_json_num(j, "offered", t->rate);
	bu_json_num(j, "achieved", t->achieved);
	bu_json_int(j, "messages", t->messages);
	bu_json_num(j, "latency_p50_ns", t->p50);
	bu_json_num(j, "latency_p99_ns", t->p99);
	bu_json_num(j, "latency_p999_ns", t->p999);
	bu_json_bool(j, "pass", pass);
	bu_json_end(j);
}

double bu_load_next(double lo, double hi, double max_rate, double min_rate)
{
	if (hi == 0)
		return lo * 2 > max_rate ? 0 : lo * 2;
	if (lo == 0)
		return hi / 4 < min_rate ? 0 : hi / 4;
	return hi - lo <= 0.1 * lo ? 0 : (lo + hi) / 2;
}
