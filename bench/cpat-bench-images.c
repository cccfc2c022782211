/*
 * Scenario 4, the Go guide's image batch: decode + re-encode JPEGs at
 * quality 75 (libjpeg-turbo), sequentially and on a pool of N workers
 * (default: the cores; also 8), then the guide's shape with simulated I/O
 * (tasks sleeping a few ms, 8 workers).
 *
 * Inputs: --distinct images (default 32) generated deterministically and
 * written as JPEG files (quality 90) into a temporary folder; task i reads
 * input i % distinct, decodes it, re-encodes it at quality 75 and writes
 * the result. With --corrupt K every K-th task reads a corrupt file (to
 * show the failure accounting). Every output's hash must be equal between
 * the sequential run and each pool run. Statistics as the guide's: total,
 * processed, failed, duration, errors; progress every 100 images.
 *
 * Without libjpeg-turbo (or with CPAT_BENCH_FORCE_SKIP=jpeg) the real-JPEG
 * part is skipped with a line saying what to install; the simulated-I/O
 * part still runs.
 */
#define _GNU_SOURCE
#include "benchutil.h"

#include <cpattern.h>
#include <cpattern/pool.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef HAVE_JPEG
#include <turbojpeg.h>
#endif

/* Rounds of the JPEG runs (--reps). */
#define MAX_REPS 64
/* Workers of a pool (--workers, --sim-workers). */
#define MAX_POOL 1024

struct ctx {
	char dir[400];
	long distinct, count, corrupt;
	long lo, hi;      /* the images a run processes: [lo, hi) */
	int64_t sleep_ns; /* simulated I/O: 0 for real JPEG work */
	uint64_t *hash;   /* per task */
	int *rc;          /* per task */
	atomic_ulong done, failed;
	struct bu_progress *pg;
	pthread_mutex_t mu;
	char first_err[160];
	unsigned long nerr_msgs;
};

struct targ {
	struct ctx *c;
	long i;
};

static void task_error(struct ctx *c, long i, const char *what)
{
	pthread_mutex_lock(&c->mu);
	if (!c->first_err[0])
		snprintf(c->first_err, sizeof c->first_err, "image %ld: %s", i,
			 what);
	c->nerr_msgs++;
	pthread_mutex_unlock(&c->mu);
}

#ifdef HAVE_JPEG
static int write_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	size_t w = fwrite(p, 1, n, f);
	return (fclose(f) == 0 && w == n) ? 0 : -1;
}

static int make_inputs(struct ctx *c, int w, int h)
{
	unsigned char *rgb = malloc((size_t)w * (size_t)h * 3);
	tjhandle e = tjInitCompress();
	if (!rgb || !e) {
		free(rgb);
		if (e)
			tjDestroy(e);
		return -1;
	}
	int rc = 0;
	for (long k = 0; k < c->distinct && !rc; k++) {
		/* A smooth picture with some texture: compresses like a photo
		 * rather than like noise or a flat colour. */
		for (int y = 0; y < h; y++)
			for (int x = 0; x < w; x++) {
				unsigned char *p =
					rgb +
					((size_t)y * (size_t)w + (size_t)x) * 3;
				uint64_t n = bu_mix(((uint64_t)k << 40) ^
						    ((uint64_t)y << 20) ^
						    (uint64_t)x);
				double fx = (double)x / w, fy = (double)y / h;
				p[0] = (unsigned char)(127 +
						       100 * sin(6.28 *
								 (fx * (k % 5 +
									1) +
								  fy)) +
						       (n & 15));
				p[1] = (unsigned char)(127 +
						       100 * cos(6.28 * fy *
								 (k % 3 + 2)) +
						       ((n >> 8) & 15));
				p[2] = (unsigned char)(((x ^ y) + (int)k * 13) &
						       255);
			}
		unsigned char *jb = NULL;
		unsigned long jsz = 0;
		if (tjCompress2(e, rgb, w, 0, h, TJPF_RGB, &jb, &jsz,
				TJSAMP_420, 90, 0) != 0) {
			rc = -1;
			break;
		}
		char path[512];
		snprintf(path, sizeof path, "%s/in-%ld.jpg", c->dir, k);
		rc = write_file(path, jb, jsz);
		tjFree(jb);
	}
	/* The corrupt input: a JPEG header followed by garbage. */
	char path[512];
	snprintf(path, sizeof path, "%s/corrupt.jpg", c->dir);
	unsigned char junk[4096];
	for (size_t i = 0; i < sizeof junk; i++)
		junk[i] = (unsigned char)bu_mix(i);
	junk[0] = 0xff;
	junk[1] = 0xd8;
	if (!rc)
		rc = write_file(path, junk, sizeof junk);
	tjDestroy(e);
	free(rgb);
	return rc;
}

static unsigned char *read_file(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	struct stat st;
	unsigned char *b = NULL;
	if (fstat(fileno(f), &st) == 0 && st.st_size > 0 &&
	    (b = malloc((size_t)st.st_size))) {
		*n = fread(b, 1, (size_t)st.st_size, f);
		if (*n != (size_t)st.st_size) {
			free(b);
			b = NULL;
		}
	}
	fclose(f);
	return b;
}

/* Decode + re-encode at quality 75 + write; 0, or -1 with *err set. */
static int process_jpeg(struct ctx *c, long i, uint64_t *hash, const char **err)
{
	char path[512];
	if (c->corrupt > 0 && i % c->corrupt == c->corrupt - 1)
		snprintf(path, sizeof path, "%s/corrupt.jpg", c->dir);
	else
		snprintf(path, sizeof path, "%s/in-%ld.jpg", c->dir,
			 i % c->distinct);
	size_t n = 0;
	unsigned char *in = read_file(path, &n);
	if (!in) {
		*err = "cannot read input";
		return -1;
	}
	int rc = -1;
	unsigned char *rgb = NULL, *jb = NULL;
	unsigned long jsz = 0;
	tjhandle d = tjInitDecompress(), e = tjInitCompress();
	int w, h, ss, cs;
	if (!d || !e) {
		*err = "tjInit failed";
	} else if (tjDecompressHeader3(d, in, n, &w, &h, &ss, &cs) != 0) {
		*err = "bad JPEG header";
	} else if (!(rgb = malloc((size_t)w * (size_t)h * 3))) {
		*err = "out of memory";
	} else if (tjDecompress2(d, in, n, rgb, w, 0, h, TJPF_RGB, 0) != 0) {
		*err = "decode failed";
	} else if (tjCompress2(e, rgb, w, 0, h, TJPF_RGB, &jb, &jsz, TJSAMP_420,
			       75, 0) != 0) {
		*err = "encode failed";
	} else {
		snprintf(path, sizeof path, "%s/out-%ld.jpg", c->dir, i);
		if (write_file(path, jb, jsz) != 0) {
			*err = "cannot write output";
		} else {
			*hash = bu_fnv(BU_FNV_INIT, jb, jsz);
			rc = 0;
		}
	}
	tjFree(jb);
	free(rgb);
	free(in);
	if (d)
		tjDestroy(d);
	if (e)
		tjDestroy(e);
	return rc;
}
#endif

static int run_one(struct ctx *c, long i)
{
	int rc = 0;
	uint64_t h = 0;
	const char *err = NULL;
	if (c->sleep_ns) {
		bu_sleep_ns(c->sleep_ns);
		h = (uint64_t)i;
	} else {
#ifdef HAVE_JPEG
		rc = process_jpeg(c, i, &h, &err);
#else
		rc = -1;
		err = "built without libjpeg-turbo";
#endif
	}
	c->hash[i] = h;
	c->rc[i] = rc;
	if (rc) {
		atomic_fetch_add(&c->failed, 1);
		task_error(c, i, err);
	}
	unsigned long d = atomic_fetch_add(&c->done, 1) + 1;
	bu_progress_update(c->pg, d);
	return rc;
}

static int pool_task(void *arg, struct cpat_token *tok)
{
	struct targ *t = arg;
	return run_one(t->c, t->i);
}

struct stats {
	char name[48];
	unsigned workers;
	double secs;
	unsigned long processed, failed;
	char err[160];
	unsigned long nerr;
	int ok;
};

/* workers 0: sequential. */
static void run_variant(struct ctx *c, unsigned workers,
			const struct bu_args *a, struct stats *s,
			const char *label)
{
	struct bu_progress pg;
	atomic_store(&c->done, 0);
	atomic_store(&c->failed, 0);
	c->first_err[0] = 0;
	c->nerr_msgs = 0;
	long n = c->hi - c->lo;
	memset(c->hash + c->lo, 0, (size_t)n * sizeof *c->hash);
	snprintf(s->name, sizeof s->name, "%s", label);
	s->workers = workers;
	bu_progress_start(&pg, a, label, "images", (uint64_t)n, 100);
	c->pg = &pg;
	int64_t t0 = bu_now();
	int rc = 0;
	if (workers == 0) {
		for (long i = c->lo; i < c->hi; i++)
			run_one(c, i);
	} else {
		struct targ *ta = malloc((size_t)n * sizeof *ta);
		struct cpat_pool *pool = NULL;
		struct cpat_pool_opts o;
		cpat_pool_opts_init(&o);
		o.workers = workers;
		rc = ta ? cpat_pool_create(&pool, &o) : -ENOMEM;
		for (long i = 0; i < n && !rc; i++) {
			ta[i].c = c;
			ta[i].i = c->lo + i;
			struct cpat_task t = {pool_task, NULL, &ta[i]};
			rc = cpat_pool_submit(pool, &t, NULL);
		}
		struct cpat_pool_report r;
		int src = pool ? cpat_pool_shutdown(pool, CPAT_POOL_DRAIN,
						    CPAT_FOREVER, &r)
			       : 0;
		if (!rc)
			rc = src;
		if (!rc && r.failed != atomic_load(&c->failed))
			rc = -EPROTO;
		cpat_pool_destroy(pool);
		free(ta);
	}
	s->secs = (double)(bu_now() - t0) / 1e9;
	bu_progress_end(&pg, atomic_load(&c->done));
	c->pg = NULL;
	s->failed = atomic_load(&c->failed);
	s->processed = atomic_load(&c->done) - s->failed;
	snprintf(s->err, sizeof s->err, "%s", c->first_err);
	s->nerr = c->nerr_msgs;
	s->ok = rc == 0 && atomic_load(&c->done) == (unsigned long)n;
	if (rc)
		fprintf(stderr, "images: %s: %s\n", label, cpat_strerror(rc));
	printf("%-22s total %ld, processed %lu, failed %lu, duration %.3f s, "
	       "%.1f images/s%s%s\n",
	       label, n, s->processed, s->failed, s->secs, (double)n / s->secs,
	       s->err[0] ? ", errors: " : "", s->err);
	if (s->nerr > 1)
		printf("%-22s (%lu errors in all)\n", "", s->nerr);
	fflush(stdout);
}

/* Adds a run over a later slice of the images to a version's totals
 * (the first slice's run starts them). */
static void stats_add(struct stats *tot, const struct stats *s)
{
	tot->secs += s->secs;
	tot->processed += s->processed;
	tot->failed += s->failed;
	tot->nerr += s->nerr;
	tot->ok &= s->ok;
	if (!tot->err[0])
		snprintf(tot->err, sizeof tot->err, "%s", s->err);
}

/*
 * The bound of a pool of @p lanes parallel workers (workers, or cores for
 * CPU-bound work) over @p total equal tasks run in @p slices slices, one
 * after the other: a slice of n tasks takes at least ceil(n / lanes) task
 * times, so the bound is total / the sum of those (lanes when every slice
 * divides evenly).
 */
static double pool_bound(long total, long slices, double lanes)
{
	if (total <= 0 || slices <= 0 || lanes < 1)
		return 1;
	double rounds = 0;
	for (long sl = 0; sl < slices; sl++) {
		long n = total * (sl + 1) / slices - total * sl / slices;
		rounds += ceil((double)n / floor(lanes));
	}
	return rounds > 0 ? (double)total / rounds : 1;
}

/* @p runs: every repetition's seconds (NULL if there was one run). */
static void json_stats(struct bu_json *j, const struct stats *s, double seq,
		       double ideal, long total, const double *runs, long nruns)
{
	bu_json_obj(j, NULL);
	bu_json_str(j, "name", s->name);
	bu_json_int(j, "workers", s->workers);
	bu_json_int(j, "total", total);
	bu_json_int(j, "processed", (int64_t)s->processed);
	bu_json_int(j, "failed", (int64_t)s->failed);
	bu_json_num(j, "seconds", s->secs);
	if (runs) {
		bu_json_arr(j, "runs_seconds"); /* the median is reported */
		for (long k = 0; k < nruns; k++)
			bu_json_num(j, NULL, runs[k]);
		bu_json_end(j);
	}
	bu_json_num(j, "speedup", seq / s->secs);
	bu_json_num(j, "ideal", ideal);
	bu_json_str(j, "first_error", s->err);
	bu_json_end(j);
}

int main(int argc, char **argv)
{
	struct bu_args a;
	long count = 0, distinct = 32, corrupt = 0, workers = 0, width = 0,
	     height = 0;
	long sim_count = 0, sim_workers = 8, reps = 0, slices = 0;
	double sim_ms = 0;
	const char *dir = NULL;
	const struct bu_opt opts[] = {
		{"images", BU_LONG, &count,
		 "images to process (full 10000, quick 200)"},
		{"distinct", BU_LONG, &distinct, "distinct input images (32)"},
		{"width", BU_LONG, &width,
		 "input width (full 1024, quick 640)"},
		{"height", BU_LONG, &height,
		 "input height (full 768, quick 480)"},
		{"corrupt", BU_LONG, &corrupt,
		 "every K-th task reads a corrupt file (0: none)"},
		{"workers", BU_LONG, &workers,
		 "pool size besides 8 (default: the cores)"},
		{"sim-tasks", BU_LONG, &sim_count,
		 "simulated I/O tasks (full 2000, quick 200)"},
		{"sim-ms", BU_DOUBLE, &sim_ms,
		 "sleep per simulated task (full 20, quick 5)"},
		{"sim-workers", BU_LONG, &sim_workers,
		 "workers for simulated I/O (8)"},
		{"reps", BU_LONG, &reps,
		 "rounds of the JPEG runs, 1..64, median kept (quick 3, else "
		 "1)"},
		{"slices", BU_LONG, &slices,
		 "JPEG runs: every version runs each slice of the images in "
		 "turn, times summed (full 10, else 1)"},
		{"dir", BU_STR, &dir,
		 "temporary folder parent (default $TMPDIR or /tmp)"},
	};
	bu_parse(argc, argv, &a, "Go guide: image batch on a worker pool", opts,
		 sizeof opts / sizeof opts[0]);
	int tiny = a.mode == BU_TINY, quick = a.mode == BU_QUICK;
	if (count <= 0)
		count = tiny ? 24 : quick ? 200 : 10000;
	if (width <= 0)
		width = tiny ? 160 : quick ? 640 : 1024;
	if (height <= 0)
		height = tiny ? 120 : quick ? 480 : 768;
	if (sim_count <= 0)
		sim_count = tiny ? 40 : quick ? 200 : 2000;
	if (sim_ms <= 0)
		sim_ms = tiny ? 2 : quick ? 5 : 20;
	if (distinct < 1)
		distinct = 1;
	if (reps == 0)
		reps = quick ? 3 : 1;
	if (reps < 1 || reps > MAX_REPS) {
		fprintf(stderr, "--reps must be 1..%d\n", MAX_REPS);
		return 2;
	}
	if (slices <= 0)
		slices = quick || tiny ? 1 : 10;
	if (slices > count)
		slices = count > 0 ? count : 1;
	int ncpu = bu_ncpu();
	if (workers == 0)
		workers = ncpu;
	if (workers < 1 || workers > MAX_POOL || sim_workers < 1 ||
	    sim_workers > MAX_POOL) {
		fprintf(stderr, "--workers and --sim-workers must be 1..%d\n",
			MAX_POOL);
		return 2;
	}
	if (!dir)
		dir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR")
							    : "/tmp";

	struct bu_report rep;
	bu_report_begin(&rep, &a, "images",
			"Go guide, claim 10,000 x 200 ms on 8 workers: 7.8x "
			"(39.7 images/s)");
	struct ctx c;
	memset(&c, 0, sizeof c);
	pthread_mutex_init(&c.mu, NULL);
	long maxcount = count > sim_count ? count : sim_count;
	c.hash = calloc((size_t)maxcount, sizeof *c.hash);
	c.rc = calloc((size_t)maxcount, sizeof *c.rc);
	uint64_t *seqhash = calloc((size_t)maxcount, sizeof *seqhash);
	if (!c.hash || !c.rc || !seqhash)
		return 1;

	bu_json_arr(rep.json, "skipped_parts");
#ifdef HAVE_JPEG
	int have_jpeg = !bu_force_skip("jpeg");
#else
	int have_jpeg = 0;
#endif
	if (!have_jpeg) {
		printf("SKIP images-jpeg: real JPEG decode/encode needs "
		       "libjpeg-turbo: install "
		       "libturbojpeg0-dev (Debian) and rebuild%s\n",
		       bu_force_skip("jpeg")
			       ? " (forced by CPAT_BENCH_FORCE_SKIP)"
			       : "");
		bu_json_str(rep.json, NULL,
			    "images-jpeg: install libturbojpeg0-dev");
	}
	bu_json_end(rep.json);

	struct stats st[3];
#ifdef HAVE_JPEG
	if (have_jpeg) {
		snprintf(c.dir, sizeof c.dir, "%s/cpat-bench-images-%d", dir,
			 (int)getpid());
		mkdir(c.dir, 0700);
		c.distinct = distinct;
		c.count = count;
		c.corrupt = corrupt;
		int64_t g0 = bu_now();
		if (make_inputs(&c, (int)width, (int)height) != 0) {
			fprintf(stderr,
				"images: cannot make the inputs in %s\n",
				c.dir);
			return 1;
		}
		printf("inputs: %ld distinct %ldx%ld JPEGs in %s (made in %.2f "
		       "s); %ld images; "
		       "decode + encode at quality 75 + write\n",
		       distinct, width, height, c.dir,
		       (double)(bu_now() - g0) / 1e9, count);
		unsigned wl[2] = {(unsigned)workers, 8};
		int nw = workers == 8 ? 1 : 2;
		/* --reps repetitions, alternating the versions; the median of
		 * each is kept (the fastest would favour the sequential run:
		 * one thread meets a quiet moment of a shared host more often
		 * than several at once do). Each
		 * repetition runs the images in --slices slices, every version
		 * on a slice before the next slice, and sums each version's
		 * times: a version does not get a minute of the machine to
		 * itself, so a drift of the shared host's speed over a long
		 * run falls on all of them alike. Every run's outputs must
		 * equal the first sequential run's. */
		int eq = 1;
		static struct stats rounds[3][MAX_REPS];
		for (long rd = 0; rd < reps; rd++) {
			struct stats tot[3];
			memset(tot, 0, sizeof tot);
			for (long sl = 0; sl < slices; sl++) {
				struct stats t;
				c.lo = count * sl / slices;
				c.hi = count * (sl + 1) / slices;
				size_t hb =
					(size_t)(c.hi - c.lo) * sizeof *seqhash;
				run_variant(&c, 0, &a, &t, "sequential");
				if (rd == 0)
					memcpy(seqhash + c.lo, c.hash + c.lo,
					       hb);
				eq &= t.ok && !memcmp(seqhash + c.lo,
						      c.hash + c.lo, hb);
				if (sl == 0)
					tot[0] = t;
				else
					stats_add(&tot[0], &t);
				for (int k = 0; k < nw; k++) {
					char label[48];
					snprintf(label, sizeof label,
						 "pool(%u)", wl[k]);
					run_variant(&c, wl[k], &a, &t, label);
					eq &= t.ok &&
					      !memcmp(seqhash + c.lo,
						      c.hash + c.lo, hb);
					if (sl == 0)
						tot[1 + k] = t;
					else
						stats_add(&tot[1 + k], &t);
				}
			}
			for (int k = 0; k <= nw; k++) {
				if (k > 0)
					eq &= tot[k].failed == tot[0].failed;
				rounds[k][rd] = tot[k];
			}
			if (slices > 1 || reps > 1)
				printf("repetition %ld, sums over %ld slices: "
				       "sequential %.3f s, pool(%u) %.3f "
				       "s%s%.3f "
				       "s\n",
				       rd + 1, slices, tot[0].secs, wl[0],
				       tot[1].secs, nw > 1 ? ", pool(8) " : "",
				       nw > 1 ? tot[2].secs : 0.0);
		}
		for (int k = 0; k <= nw; k++) {
			int64_t ns[MAX_REPS];
			for (long rd = 0; rd < reps; rd++)
				ns[rd] = (int64_t)(rounds[k][rd].secs * 1e9);
			st[k] = rounds[k][bu_median_index(ns, (size_t)reps)];
		}
		if (reps > 1)
			printf("median of %ld: sequential %.3f s, pool(%u) "
			       "%.3f s%s%.3f s\n",
			       reps, st[0].secs, wl[0], st[1].secs,
			       nw > 1 ? ", pool(8) " : "",
			       nw > 1 ? st[2].secs : 0.0);
		bu_check(&rep, "jpeg_outputs_equal", eq);
		bu_json_int(rep.json, "reps", reps);
		bu_json_arr(rep.json, "jpeg");
		double secs[3][MAX_REPS];
		for (int k = 0; k <= nw; k++)
			for (long rd = 0; rd < reps; rd++)
				secs[k][rd] = rounds[k][rd].secs;
		json_stats(rep.json, &st[0], st[0].secs, 1, count, secs[0],
			   reps);
		for (int k = 0; k < nw; k++) {
			/* CPU-bound: as many lanes as cores, or workers. */
			double ideal =
				pool_bound(count, slices,
					   fmin((double)wl[k], (double)ncpu));
			json_stats(rep.json, &st[1 + k], st[0].secs, ideal,
				   count, secs[1 + k], reps);
			char nm[64], note[128];
			snprintf(nm, sizeof nm, "images jpeg pool(%u)", wl[k]);
			snprintf(note, sizeof note,
				 "%.1f images/s, %lu failed, CPU-bound: bound "
				 "= cores",
				 (double)count / st[1 + k].secs,
				 st[1 + k].failed);
			bu_summary(&rep, nm,
				   wl[k] == 8 ? "7.8x on 8 cores" : "",
				   st[0].secs, st[1 + k].secs, "s",
				   st[0].secs / st[1 + k].secs, ideal, note);
		}
		bu_json_end(rep.json);
		/* Clean up the temporary files. */
		char path[512];
		for (long k = 0; k < distinct; k++) {
			snprintf(path, sizeof path, "%s/in-%ld.jpg", c.dir, k);
			unlink(path);
		}
		for (long i = 0; i < count; i++) {
			snprintf(path, sizeof path, "%s/out-%ld.jpg", c.dir, i);
			unlink(path);
		}
		snprintf(path, sizeof path, "%s/corrupt.jpg", c.dir);
		unlink(path);
		rmdir(c.dir);
	}
#endif

	/* The guide's shape with simulated I/O: each task sleeps. */
	c.count = sim_count;
	c.lo = 0;
	c.hi = sim_count;
	c.sleep_ns = (int64_t)(sim_ms * 1e6);
	printf("simulated I/O: %ld tasks sleeping %.1f ms each, pool of %ld\n",
	       sim_count, sim_ms, sim_workers);
	run_variant(&c, 0, &a, &st[0], "sim sequential");
	memcpy(seqhash, c.hash, (size_t)sim_count * sizeof *seqhash);
	char label[48];
	snprintf(label, sizeof label, "sim pool(%ld)", sim_workers);
	run_variant(&c, (unsigned)sim_workers, &a, &st[1], label);
	int eq = st[0].ok && st[1].ok &&
		 !memcmp(seqhash, c.hash, (size_t)sim_count * sizeof *seqhash);
	bu_check(&rep, "sim_all_processed", eq);
	double ideal = pool_bound(sim_count, 1, (double)sim_workers);
	bu_json_arr(rep.json, "simulated");
	json_stats(rep.json, &st[0], st[0].secs, 1, sim_count, NULL, 0);
	json_stats(rep.json, &st[1], st[0].secs, ideal, sim_count, NULL, 0);
	bu_json_end(rep.json);
	char nm[64], note[128];
	snprintf(nm, sizeof nm, "images sim-I/O pool(%ld)", sim_workers);
	snprintf(note, sizeof note, "%ld x %.0f ms sleeps, %.1f tasks/s",
		 sim_count, sim_ms, (double)sim_count / st[1].secs);
	bu_summary(&rep, nm, "7.8x (8 workers)", st[0].secs, st[1].secs, "s",
		   st[0].secs / st[1].secs, ideal, note);
	bu_verdict(&rep,
		   "images: guide 7.8x with 8 workers on 8 cores; simulated "
		   "I/O with %ld workers: "
		   "%.2fx (bound %.0fx)%s",
		   sim_workers, st[0].secs / st[1].secs, ideal,
		   have_jpeg ? "; real JPEG work is CPU-bound: its bound is "
			       "the cores (see the "
			       "jpeg rows)"
			     : "; real JPEG part skipped");
	free(c.hash);
	free(c.rc);
	free(seqhash);
	pthread_mutex_destroy(&c.mu);
	return bu_report_end(&rep);
}
