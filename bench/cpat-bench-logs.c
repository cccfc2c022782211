/*
 * Scenario 2, the Go guide's log processing: read lines -> parse
 * ("LEVEL <timestamp> message", malformed lines skipped) -> keep ERROR ->
 * save in batches of 100, or of what is held after 1 s, to an output file.
 *
 * The input is a deterministic synthetic log written first (full size:
 * 10,000,000 lines, ~1 GB, as the guide's; --quick 1,000,000). Versions:
 *   sequential : one loop (in blocks of 256 lines, so that each step can
 *                be timed: those times are the per-stage costs).
 *   per-line   : cpat_pipeline, one line per hand-off: read -> parse
 *                (ordered, --workers, default the cores) -> keep-error ->
 *                batch(100, 1 s) -> save. The guide's shape.
 *   chunked    : the same stages, the reader handing on 64 lines at a time.
 *   blocks     : the source hands on 64 KB ranges of the file; parse
 *                workers (ordered) read theirs with pread, parse its lines
 *                and keep the ERROR records -> save, a block of records a
 *                hand-off (see its section below).
 *   seq-blocks : the blocks version's functions on one thread, its
 *                baseline.
 * The output files must be byte-identical. Latency of a saved line =
 * the time its batch was written - the time it was read; p50/p99.
 * A pipeline's bound = T_seq / max(serial stage costs, parallel stage
 * cost / workers, T_seq / cores), from the costs its baseline measured.
 * Each version's CPU time (the process's, user + system) and context
 * switches are printed beside its time: speedup = (T_base / CPU) x
 * (CPU / T_wall), the work a pipeline adds to its baseline's (hand-offs,
 * wake-ups, data moved between cores) and how many cores it kept busy.
 */
#define _GNU_SOURCE
#include "benchutil.h"

#include <cpattern.h>
#include <cpattern/pipeline.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LINE_CAP 128
#define MSG_CAP 112
#define CHUNK_MAX 64
#define BATCH_ITEMS 100
#define BLOCK 256

enum { L_DEBUG, L_INFO, L_WARN, L_ERROR };

struct line {
	int64_t t_read;
	uint32_t len;
	char text[LINE_CAP];
};

struct rec {
	int64_t t_read;
	int64_t ts_ms;
	int32_t level;
	uint32_t msglen;
	char msg[MSG_CAP];
};

struct lchunk {
	uint32_t n;
	struct line l[CHUNK_MAX];
};

struct rchunk {
	uint32_t n;
	struct rec r[CHUNK_MAX];
};

/* ---- time stamps: days from 1970-01-01 <-> civil date (H. Hinnant) ---- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t yy = (int64_t)yoe + era * 400;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int)(yy + (*m <= 2));
}

/* ---- the synthetic log ---- */

static const char *const words[] = {
	"connection", "reset",    "by",       "peer",     "request", "timeout",
	"user",       "session",  "cache",    "miss",     "disk",    "quota",
	"exceeded",   "retrying", "upstream", "returned", "status",  "payment",
	"order",      "shipped",  "login",    "failed",   "token",   "expired",
	"query",      "slow",     "index",    "rebuild",  "worker",  "started",
	"stopped",    "config",   "reloaded"};
#define NWORDS (sizeof words / sizeof words[0])

/* Line i of the log into buf (no newline); returns its level or -1. */
static int gen_line(uint64_t i, char *buf, size_t cap)
{
	uint64_t h = bu_mix(i + 1);
	unsigned kind = (unsigned)(h % 100);
	int level = kind < 1    ? -1
		    : kind < 11 ? L_ERROR
		    : kind < 26 ? L_WARN
		    : kind < 90 ? L_INFO
				: L_DEBUG;
	static const char *const names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
	int64_t ms = 1795000000000ll + (int64_t)i * 3;
	int y;
	unsigned mo, d;
	civil_from_days(ms / 86400000, &y, &mo, &d);
	int64_t r = ms % 86400000;
	int n;
	if (level < 0) {
		/* Malformed: alternately too few fields and an unknown level.
		 */
		if (h & 0x100)
			snprintf(buf, cap, "garbage-line-%llu",
				 (unsigned long long)i);
		else
			snprintf(buf, cap, "FATAL? 17 cannot parse %llu",
				 (unsigned long long)i);
		return -1;
	}
	n = snprintf(buf, cap, "%s %04d-%02u-%02uT%02d:%02d:%02d.%03dZ",
		     names[level], y, mo, d, (int)(r / 3600000),
		     (int)(r / 60000 % 60), (int)(r / 1000 % 60),
		     (int)(r % 1000));
	/* A message of 4..12 words plus an id: ~100 bytes a line on average. */
	unsigned nw = 6 + (unsigned)((h >> 8) % 9);
	uint64_t s = h;
	for (unsigned k = 0; k < nw && n < (int)cap - 24; k++) {
		s = bu_mix(s);
		n += snprintf(buf + n, cap - (size_t)n, " %s",
			      words[s % NWORDS]);
	}
	n += snprintf(buf + n, cap - (size_t)n, " id=%llu",
		      (unsigned long long)i);
	return level;
}

static int write_log(const char *path, long nlines, long *nerrors)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	static char fbuf[1 << 20];
	setvbuf(f, fbuf, _IOFBF, sizeof fbuf);
	char line[LINE_CAP];
	long ne = 0;
	for (long i = 0; i < nlines; i++) {
		int lv = gen_line((uint64_t)i, line, sizeof line - 1);
		ne += lv == L_ERROR;
		fputs(line, f);
		fputc('\n', f);
	}
	*nerrors = ne;
	return fclose(f) == 0 ? 0 : -1;
}

/* ---- the stages' work, shared by every version ---- */

/* Reads one line; 1, or 0 at end of file. Overlong lines are cut. */
static int read_line(FILE *f, struct line *l)
{
	if (!fgets(l->text, LINE_CAP, f))
		return 0;
	size_t n = strlen(l->text);
	if (n && l->text[n - 1] == '\n') {
		l->text[--n] = 0;
	} else if (n == LINE_CAP - 1) {
		int c;
		while ((c = getc(f)) != EOF && c != '\n')
			;
	}
	l->len = (uint32_t)n;
	return 1;
}

static int dig(const char *s, int n)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* Parses "LEVEL <timestamp> message"; 0 if well-formed, -1 if malformed. */
static int parse_text(const char *s, size_t len, int64_t t_read, struct rec *r)
{
	const char *sp1 = memchr(s, ' ', len);
	if (!sp1)
		return -1;
	size_t ll = (size_t)(sp1 - s);
	if (ll == 5 && !memcmp(s, "ERROR", 5))
		r->level = L_ERROR;
	else if (ll == 4 && !memcmp(s, "WARN", 4))
		r->level = L_WARN;
	else if (ll == 4 && !memcmp(s, "INFO", 4))
		r->level = L_INFO;
	else if (ll == 5 && !memcmp(s, "DEBUG", 5))
		r->level = L_DEBUG;
	else
		return -1;
	const char *t = sp1 + 1;
	size_t rest = len - ll - 1;
	const char *sp2 = memchr(t, ' ', rest);
	if (!sp2 || sp2 - t != 24 || t[4] != '-' || t[7] != '-' ||
	    t[10] != 'T' || t[13] != ':' || t[16] != ':' || t[19] != '.' ||
	    t[23] != 'Z')
		return -1;
	int y = dig(t, 4), mo = dig(t + 5, 2), d = dig(t + 8, 2),
	    hh = dig(t + 11, 2), mi = dig(t + 14, 2), ss = dig(t + 17, 2),
	    ms = dig(t + 20, 3);
	if (y < 0 || mo < 1 || mo > 12 || d < 1 || d > 31 || hh < 0 ||
	    hh > 23 || mi < 0 || mi > 59 || ss < 0 || ss > 60 || ms < 0)
		return -1;
	r->ts_ms = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400000 +
		   (int64_t)hh * 3600000 + mi * 60000 + ss * 1000 + ms;
	const char *m = sp2 + 1;
	size_t ml = len - (size_t)(m - s);
	if (ml >= MSG_CAP)
		ml = MSG_CAP - 1;
	memcpy(r->msg, m, ml);
	r->msg[ml] = 0;
	r->msglen = (uint32_t)ml;
	r->t_read = t_read;
	return 0;
}

static int parse_line(const struct line *l, struct rec *r)
{
	return parse_text(l->text, l->len, l->t_read, r);
}

/* The saver: formats a batch and writes it with one write. */
struct saver {
	FILE *f;
	struct bu_lat *lat;
	char buf[BATCH_ITEMS * (MSG_CAP + 24)];
	uint64_t batches, saved;
	int err;
};

static void save_batch(struct saver *s, const struct rec *const *rs, size_t n)
{
	size_t off = 0;
	for (size_t i = 0; i < n; i++)
		off += (size_t)snprintf(s->buf + off, sizeof s->buf - off,
					"%lld %s\n", (long long)rs[i]->ts_ms,
					rs[i]->msg);
	if (fwrite(s->buf, 1, off, s->f) != off || fflush(s->f) != 0)
		s->err = 1;
	int64_t now = bu_now();
	for (size_t i = 0; i < n; i++)
		bu_lat_add(s->lat, now - rs[i]->t_read);
	s->batches++;
	s->saved += n;
}

/* The same step for lines already rendered (the blocks version renders
 * them in its parse workers): one write, then the latencies. */
static void save_text(struct saver *s, const char *text, size_t len,
		      const int64_t *t_read, size_t n)
{
	if (fwrite(text, 1, len, s->f) != len || fflush(s->f) != 0)
		s->err = 1;
	int64_t now = bu_now();
	for (size_t i = 0; i < n; i++)
		bu_lat_add(s->lat, now - t_read[i]);
	s->batches++;
	s->saved += n;
}

/* ---- sequential ---- */

struct costs {
	double read, parse, filter, save;
};

static int run_seq(FILE *in, struct saver *sv, struct costs *c, long *nlines)
{
	static struct line lines[BLOCK];
	static struct rec recs[BLOCK];
	struct rec held[BATCH_ITEMS];
	const struct rec *ptrs[BATCH_ITEMS];
	size_t nheld = 0;
	int64_t first_held = 0;
	long total = 0;
	memset(c, 0, sizeof *c);
	for (;;) {
		int64_t t0 = bu_now();
		size_t n = 0;
		while (n < BLOCK && read_line(in, &lines[n]))
			n++;
		for (size_t i = 0; i < n; i++)
			lines[i].t_read = t0;
		int64_t t1 = bu_now();
		size_t k = 0;
		for (size_t i = 0; i < n; i++)
			if (parse_line(&lines[i], &recs[k]) == 0)
				k++;
		int64_t t2 = bu_now();
		double tsave = 0;
		for (size_t i = 0; i < k; i++) {
			if (recs[i].level != L_ERROR)
				continue;
			if (nheld == 0)
				first_held = bu_now();
			held[nheld] = recs[i];
			ptrs[nheld] = &held[nheld];
			nheld++;
			if (nheld == BATCH_ITEMS ||
			    bu_now() - first_held >= CPAT_SEC) {
				int64_t s0 = bu_now();
				save_batch(sv, ptrs, nheld);
				tsave += (double)(bu_now() - s0);
				nheld = 0;
			}
		}
		int64_t t3 = bu_now();
		c->read += (double)(t1 - t0);
		c->parse += (double)(t2 - t1);
		c->filter += (double)(t3 - t2) - tsave;
		c->save += tsave;
		total += (long)n;
		if (n < BLOCK)
			break;
	}
	if (nheld) {
		int64_t s0 = bu_now();
		save_batch(sv, ptrs, nheld);
		c->save += (double)(bu_now() - s0);
	}
	*nlines = total;
	return ferror(in) ? -1 : 0;
}

/* ---- pipeline ---- */

struct pctx {
	size_t queue;  /* blocks pipeline: channel capacities, in ranges */
	int64_t range; /* blocks pipeline: bytes per range */
	FILE *in;
	long chunk; /* lines per source item: 1 = per-line */
	struct saver *sv;
	long nlines;
	struct bu_progress *pg;
};

static size_t lchunk_size(long k)
{
	return offsetof(struct lchunk, l) + (size_t)k * sizeof(struct line);
}

static size_t rchunk_size(long k)
{
	return offsetof(struct rchunk, r) + (size_t)k * sizeof(struct rec);
}

static int src_read(void *out, void *arg)
{
	struct pctx *p = arg;
	struct lchunk *c = out;
	c->n = 0;
	int64_t now = bu_now();
	while (c->n < (uint32_t)p->chunk && read_line(p->in, &c->l[c->n])) {
		c->l[c->n].t_read = now;
		c->n++;
	}
	p->nlines += c->n;
	if (p->pg && (p->nlines & 0xffff) < (long)c->n)
		bu_progress_update(p->pg, (uint64_t)p->nlines);
	if (c->n == 0)
		return ferror(p->in) ? -EIO : 0;
	return 1;
}

static int st_parse(const void *in, void *out, struct cpat_stage_ctx *ctx)
{
	const struct lchunk *a = in;
	struct rchunk *b = out;
	b->n = 0;
	for (uint32_t i = 0; i < a->n; i++)
		if (parse_line(&a->l[i], &b->r[b->n]) == 0)
			b->n++;
	return b->n ? CPAT_STAGE_EMIT : CPAT_STAGE_SKIP;
}

static int st_keep_error(const void *in, struct cpat_stage_ctx *ctx)
{
	const struct rchunk *a = in;
	for (uint32_t i = 0; i < a->n; i++) {
		if (a->r[i].level != L_ERROR)
			continue;
		int rc = cpat_stage_emit(ctx, &a->r[i]);
		if (rc)
			return rc;
	}
	return 0;
}

static int sink_save(const void *item, void *arg)
{
	struct pctx *p = arg;
	const struct cpat_batch *b = item;
	const struct rec *ptrs[BATCH_ITEMS];
	for (size_t i = 0; i < b->count; i++)
		ptrs[i] = cpat_batch_item(b, i);
	save_batch(p->sv, ptrs, b->count);
	return p->sv->err ? -EIO : 0;
}

/* ---- the blocks pipeline: ranges of the file, read where they are parsed ----
 *
 * The source hands on the offsets of 64 KB ranges of the file (8 bytes a
 * hand-off); a parse worker reads its range with pread into its own
 * buffer, parses the lines that start in it, keeps the ERROR records
 * (the keep-error step, fused: it costs ~2 ns a line, less than a
 * hand-off) and renders them as output lines; the sink writes them in
 * batches of 100 (or after 1 s), the same batches and bytes as the other
 * versions. A record block is a pointer into a free list; no hand-off per
 * line or per record. Reading in the workers keeps each range's bytes on
 * the core that parses them, and only the rendered ERROR lines (a tenth
 * of the lines) cross to the saver's core: a reader thread handing on its
 * blocks made the pipeline use 1.3-1.8x the CPU time of the same work on
 * one thread, most of it in moving cache lines between cores. Rendering
 * in the workers leaves the one serial step (the saver) 13 of 66 ns a
 * line instead of 20-28: with it the cores were busy 1.92-1.99 of 2
 * instead of 1.79-1.87 (bench/RESULTS.md).
 */
#define BLOCK_BYTES (64 * 1024)
/* A range's read: the byte before it (to find where its first line
 * starts), the range, and the rest of a line that starts in it. */
#define RANGE_READ (1 + BLOCK_BYTES + LINE_CAP * 2)

/* A well-formed line is at least "INFO " + a 24-byte time stamp + " ",
 * 30 bytes, and its newline: a range of len bytes starts at most len / 31
 * + 1 records. A rendered line is shorter than its log line (a time
 * stamp of 24 bytes renders in at most 16: years up to 9999), so a
 * range's fit in RANGE_READ bytes. */
#define MIN_REC_LINE 31
#define RBLOCK_RECS (BLOCK_BYTES / MIN_REC_LINE + 1)

/* A range's ERROR records, rendered as the output lines ("<ms> <msg>\n",
 * as save_batch() writes them): line i ends at end[i] in text. */
struct rblock {
	int64_t t_read;
	size_t n, len;
	uint32_t end[RBLOCK_RECS];
	char text[RANGE_READ];
};

/*
 * Recycled record blocks: they go round (parse -> save -> free list)
 * instead of being malloc'ed and freed once each. A fresh buffer of records
 * is mostly untouched memory: malloc'ed per block and freed by another
 * thread, it came back as new pages (a page fault for every 4 KB written)
 * in the parse workers. The sequential blocks version uses the same free
 * list, so both do the same work.
 */
#define FREE_MAX 2048

struct freelist {
	pthread_mutex_t mu;
	size_t size, n;
	void *item[FREE_MAX];
};

static void fl_init(struct freelist *f, size_t size)
{
	pthread_mutex_init(&f->mu, NULL);
	f->size = size;
	f->n = 0;
}

static void *fl_get(struct freelist *f)
{
	void *p = NULL;
	pthread_mutex_lock(&f->mu);
	if (f->n)
		p = f->item[--f->n];
	pthread_mutex_unlock(&f->mu);
	return p ? p : malloc(f->size);
}

static void fl_put(struct freelist *f, void *p)
{
	pthread_mutex_lock(&f->mu);
	if (f->n < FREE_MAX) {
		f->item[f->n++] = p;
		p = NULL;
	}
	pthread_mutex_unlock(&f->mu);
	free(p);
}

static void fl_destroy(struct freelist *f)
{
	while (f->n)
		free(f->item[--f->n]);
	pthread_mutex_destroy(&f->mu);
}

#define MAX_WORKERS 256
/* Runs of each version (--reps). */
#define MAX_REPS 64

struct bctx {
	struct freelist rfree;
	int fd;
	int64_t next_off, size;
	int64_t range; /* bytes per range: BLOCK_BYTES, or less (--range) */
	char *buf[MAX_WORKERS]; /* each worker's read buffer, RANGE_READ */
	atomic_long nlines;     /* counted by the parse workers */
	struct bu_progress *pg;
};

static int bctx_init(struct bctx *b, FILE *in, unsigned workers, int64_t range,
		     struct bu_progress *pg)
{
	memset(b, 0, sizeof *b);
	b->range = range;
	atomic_init(&b->nlines, 0);
	fl_init(&b->rfree, sizeof(struct rblock));
	b->fd = fileno(in);
	b->pg = pg;
	struct stat st;
	if (workers > MAX_WORKERS || fstat(b->fd, &st) != 0)
		return -EINVAL;
	b->size = st.st_size;
	for (unsigned i = 0; i < workers; i++)
		if (!(b->buf[i] = malloc(RANGE_READ)))
			return -ENOMEM;
	return 0;
}

static void bctx_destroy(struct bctx *b)
{
	for (unsigned i = 0; i < MAX_WORKERS; i++)
		free(b->buf[i]);
	fl_destroy(&b->rfree);
}

/* The source: the next range's offset; 0 at the end. */
static int src_range(void *out, void *arg)
{
	struct bctx *b = arg;
	if (b->next_off >= b->size)
		return 0;
	*(int64_t *)out = b->next_off;
	b->next_off += b->range;
	return 1;
}

/*
 * Reads the range at off into buf and parses the lines that start in it
 * (a line starts at 0 or after a newline), keeping the ERROR records in a
 * record block. *out is NULL when the range has none. 0, -EIO, -ENOMEM or
 * -E2BIG (a line longer than the read allows: not in this log).
 */
static int parse_range(int64_t off, char *buf, struct bctx *b,
		       struct rblock **out)
{
	*out = NULL;
	int64_t from = off > 0 ? off - 1 : 0;
	size_t want = (size_t)(off > 0 ? 1 : 0) + (size_t)b->range +
		      LINE_CAP * 2,
	       got = 0;
	while (got < want) {
		ssize_t k = pread(b->fd, buf + got, want - got,
				  (off_t)(from + (int64_t)got));
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -EIO;
		if (k == 0)
			break;
		got += (size_t)k;
	}
	int64_t t_read = bu_now();
	int eof = from + (int64_t)got >= b->size;
	const char *p = buf, *e = buf + got;
	const char *lim = buf + (off - from) + b->range; /* starts before */
	if (off > 0) { /* skip the line that started in the range before */
		const char *nl = memchr(buf, '\n', got);
		if (!nl)
			return eof ? 0 : -E2BIG;
		p = nl + 1;
	}
	struct rblock *rb = NULL;
	long lines = 0;
	while (p < e && p < lim) {
		const char *nl = memchr(p, '\n', (size_t)(e - p));
		if (!nl && !eof)
			return rb ? (fl_put(&b->rfree, rb), -E2BIG) : -E2BIG;
		size_t len = (size_t)((nl ? nl : e) - p);
		struct rec r;
		if (parse_text(p, len, t_read, &r) == 0 && r.level == L_ERROR) {
			if (!rb) {
				if (!(rb = fl_get(&b->rfree)))
					return -ENOMEM;
				rb->t_read = t_read;
				rb->n = rb->len = 0;
			}
			int k = snprintf(rb->text + rb->len,
					 sizeof rb->text - rb->len, "%lld %s\n",
					 (long long)r.ts_ms, r.msg);
			if (rb->n == RBLOCK_RECS || k < 0 ||
			    (size_t)k >= sizeof rb->text - rb->len)
				abort(); /* impossible: see MIN_REC_LINE */
			rb->len += (size_t)k;
			rb->end[rb->n++] = (uint32_t)rb->len;
		}
		p = nl ? nl + 1 : e;
		lines++;
	}
	/* Lines are counted here, in parallel, not by the source. */
	long total = atomic_fetch_add_explicit(&b->nlines, lines,
					       memory_order_relaxed) +
		     lines;
	if (b->pg)
		bu_progress_update(b->pg, (uint64_t)total);
	*out = rb;
	return 0;
}

static int st_parse_range(const void *in, void *out, struct cpat_stage_ctx *ctx)
{
	struct bctx *b = cpat_stage_arg(ctx);
	struct rblock *rb;
	int rc = parse_range(*(const int64_t *)in,
			     b->buf[cpat_stage_worker(ctx)], b, &rb);
	if (rc)
		return rc;
	if (!rb)
		return CPAT_STAGE_SKIP;
	*(struct rblock **)out = rb;
	return CPAT_STAGE_EMIT;
}

/*
 * The save step of the blocks pipeline: batches of 100 records, or what is
 * held once 1 s has passed since the first (checked as blocks arrive), the
 * remainder after the run (block_flush()). The same batches and bytes as
 * the batch stage's, without a hand-off per record; the lines come
 * rendered, so the serial step only copies and writes them.
 */
struct bsave {
	struct saver *sv;
	struct bctx *bc; /* its free list of record blocks */
	char text[BATCH_ITEMS * (MSG_CAP + 24)];
	size_t len, n;
	int64_t t_read[BATCH_ITEMS];
	int64_t first;
};

static void block_flush(struct bsave *b)
{
	if (b->n)
		save_text(b->sv, b->text, b->len, b->t_read, b->n);
	b->n = b->len = 0;
}

static int sink_block(const void *item, void *arg)
{
	struct bsave *b = arg;
	struct rblock *rb = *(struct rblock *const *)item;
	size_t from = 0;
	for (size_t i = 0; i < rb->n; i++) {
		if (b->n == 0)
			b->first = bu_now();
		size_t len = rb->end[i] - from;
		memcpy(b->text + b->len, rb->text + from, len);
		from = rb->end[i];
		b->len += len;
		b->t_read[b->n++] = rb->t_read;
		if (b->n == BATCH_ITEMS)
			block_flush(b);
	}
	/* The 1 s deadline is checked as blocks arrive, not per record. */
	if (b->n && bu_now() - b->first >= CPAT_SEC)
		block_flush(b);
	fl_put(&b->bc->rfree, rb);
	return b->sv->err ? -EIO : 0;
}

/*
 * The blocks version's own sequential baseline: the same functions (next
 * range, read and parse it keeping the ERROR records, save them in
 * batches), called one after another on one thread, each timed: the same
 * work done the same way as the blocks pipeline, and its stage costs
 * (read and parse are one step here, as in the workers: c->parse).
 */
static int run_seq_blocks(FILE *in, int64_t range, struct saver *sv,
			  struct costs *c, long *nlines)
{
	struct bctx bc;
	struct bsave *bs = calloc(1, sizeof *bs);
	int rc = bctx_init(&bc, in, 1, range, NULL);
	if (!rc && !bs)
		rc = -ENOMEM;
	if (bs)
		bs->sv = sv, bs->bc = &bc;
	memset(c, 0, sizeof *c);
	while (!rc) {
		int64_t off;
		int64_t t0 = bu_now();
		int more = src_range(&off, &bc);
		int64_t t1 = bu_now();
		c->read += (double)(t1 - t0);
		if (!more)
			break;
		struct rblock *rb;
		rc = parse_range(off, bc.buf[0], &bc, &rb);
		int64_t t2 = bu_now();
		c->parse += (double)(t2 - t1);
		if (!rc && rb)
			rc = sink_block(&rb, bs);
		c->save += (double)(bu_now() - t2);
	}
	int64_t t4 = bu_now();
	if (!rc)
		block_flush(bs);
	c->save += (double)(bu_now() - t4);
	free(bs);
	*nlines = atomic_load(&bc.nlines);
	bctx_destroy(&bc);
	return rc;
}

/*
 * The machine's own parallel headroom for this work: the seq-blocks loop
 * alone, then two copies of it at once on two threads (each its own file
 * handle, output to /dev/null), --reps times alternating; returns the
 * throughput of two copies over one, median against median (2.00 on two
 * cores that do not slow each other down; 0 if it could not run).
 */
struct copy_arg {
	const char *path;
	int64_t range;
	int64_t ns;
	int rc;
};

static void *copy_main(void *arg)
{
	struct copy_arg *a = arg;
	a->rc = -1;
	FILE *in = fopen(a->path, "r");
	FILE *out = fopen("/dev/null", "w");
	struct saver *sv = calloc(1, sizeof *sv);
	struct bu_lat lat;
	int lat_ok = bu_lat_init(&lat, 1) == 0;
	if (in && out && sv && lat_ok) {
		sv->f = out;
		sv->lat = &lat;
		struct costs c;
		long n;
		int64_t t0 = bu_now();
		a->rc = run_seq_blocks(in, a->range, sv, &c, &n);
		a->ns = bu_now() - t0;
	}
	if (lat_ok)
		bu_lat_free(&lat);
	free(sv);
	if (out)
		fclose(out);
	if (in)
		fclose(in);
	return NULL;
}

static double two_copies(const char *path, int64_t range, long reps)
{
	int64_t t[2][MAX_REPS];
	for (long k = 0; k < reps; k++)
		for (int n = 1; n <= 2; n++) {
			pthread_t th[2];
			struct copy_arg ca[2];
			int started = 0;
			int64_t t0 = bu_now();
			for (int j = 0; j < n; j++) {
				ca[j] = (struct copy_arg){path, range, 0, -1};
				if (pthread_create(&th[j], NULL, copy_main,
						   &ca[j]) == 0)
					started++;
			}
			for (int j = 0; j < started; j++)
				pthread_join(th[j], NULL);
			int64_t dt = bu_now() - t0;
			for (int j = 0; j < n; j++)
				if (j >= started || ca[j].rc != 0)
					return 0;
			t[n - 1][k] = dt;
		}
	int64_t one = t[0][bu_median_index(t[0], (size_t)reps)],
		two = t[1][bu_median_index(t[1], (size_t)reps)];
	return 2.0 * (double)one / (double)two;
}

static int run_pipe(struct pctx *p, unsigned workers, char *report, size_t rlen)
{
	struct cpat_pipeline *pl = NULL;
	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	int blocks = p->chunk == 0;
	struct bctx bc;
	struct bsave *bs = NULL;
	int rc = 0;
	if (blocks) {
		rc = bctx_init(&bc, p->in, workers, p->range, p->pg);
		bs = calloc(1, sizeof *bs);
		if (!rc && !bs)
			rc = -ENOMEM;
		if (bs)
			bs->sv = p->sv, bs->bc = &bc;
	}
	po.item_size = blocks ? sizeof(int64_t) : lchunk_size(p->chunk);
	if (blocks)
		po.source_capacity = p->queue;
	if (!rc)
		rc = cpat_pipeline_create(&pl, &po);
	if (!rc)
		rc = blocks ? cpat_pipeline_set_generator(pl, src_range, &bc)
			    : cpat_pipeline_set_generator(pl, src_read, p);
	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.name = blocks ? "read+parse+keep-error" : "parse";
	so.map = blocks ? st_parse_range : st_parse;
	so.arg = blocks ? &bc : NULL;
	so.out_size = blocks ? sizeof(struct rblock *) : rchunk_size(p->chunk);
	so.workers = workers;
	so.ordered = 1;
	if (blocks)
		so.out_capacity = p->queue;
	if (!rc)
		rc = cpat_pipeline_add_stage(pl, &so);
	if (blocks) {
		if (!rc)
			rc = cpat_pipeline_set_sink(pl, sink_block, bs);
	} else {
		cpat_stage_opts_init(&so);
		so.name = "keep-error";
		so.flat = st_keep_error;
		so.out_size = sizeof(struct rec);
		so.out_capacity = 256;
		if (!rc)
			rc = cpat_pipeline_add_stage(pl, &so);
		struct cpat_batch_opts bo;
		cpat_batch_opts_init(&bo);
		bo.name = "batch";
		bo.max_items = BATCH_ITEMS;
		bo.flush_ns = CPAT_SEC;
		if (!rc)
			rc = cpat_pipeline_add_batch(pl, &bo);
		if (!rc)
			rc = cpat_pipeline_set_sink(pl, sink_save, p);
	}
	struct cpat_pipeline_result res;
	memset(&res, 0, sizeof res);
	if (!rc)
		rc = cpat_pipeline_run(pl, NULL, bu_now() + 600 * CPAT_SEC,
				       &res);
	if (rc)
		fprintf(stderr, "logs: pipeline failed: %s (stage '%s')\n",
			cpat_strerror(rc), rc == res.rc ? res.stage : "");
	if (report && pl)
		cpat_pipeline_report(pl, report, rlen);
	cpat_pipeline_destroy(pl);
	if (blocks) {
		p->nlines = atomic_load(&bc.nlines);
		if (bs && !rc)
			block_flush(bs);
		free(bs);
		bctx_destroy(&bc);
	}
	return rc;
}

static int file_hash(const char *path, uint64_t *h, long *size)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	static char buf[1 << 16];
	size_t n;
	*h = BU_FNV_INIT;
	*size = 0;
	while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
		*h = bu_fnv(*h, buf, n);
		*size += (long)n;
	}
	fclose(f);
	return 0;
}

struct result {
	const char *name;
	int64_t ns;
	long lines;
	uint64_t saved;
	double p50, p99, mean;
	int ok;
	uint64_t hash;
	long size;
	struct bu_usage use; /* the process's CPU time, context switches */
};

int main(int argc, char **argv)
{
	struct bu_args a;
	long lines = 0, workers = 0, keep = 0, chunk = CHUNK_MAX, reps = 0,
	     queue = 0, range = BLOCK_BYTES;
	const char *dir = NULL;
	const struct bu_opt opts[] = {
		{"lines", BU_LONG, &lines,
		 "lines in the log (full 10000000, quick 1000000)"},
		{"workers", BU_LONG, &workers,
		 "parse workers (default: the cores)"},
		{"chunk", BU_LONG, &chunk,
		 "lines per hand-off in the chunked pipeline (64)"},
		{"dir", BU_STR, &dir,
		 "where the log and outputs go (default $TMPDIR or /tmp)"},
		{"keep", BU_LONG, &keep, "1: keep the files"},
		{"reps", BU_LONG, &reps,
		 "runs of each version, 1..64, median kept (5; tiny 1)"},
		{"queue", BU_LONG, &queue,
		 "blocks pipeline: capacity of its channels, in ranges "
		 "(1024)"},
		{"range", BU_LONG, &range,
		 "blocks versions: bytes per range, 1..65536 (65536; small "
		 "ones test the range boundaries)"},
	};
	bu_parse(argc, argv, &a, "Go guide: log processing pipeline", opts,
		 sizeof opts / sizeof opts[0]);
	if (lines <= 0)
		lines = a.mode == BU_TINY    ? 20000
			: a.mode == BU_QUICK ? 1000000
					     : 10000000;
	/* Five runs: on a shared host one run of the one-thread loop can take
	 * 0.7x or 1.3x its usual time, and a median of three still moved the
	 * quick figure by 0.1 between invocations. */
	if (reps == 0)
		reps = a.mode == BU_TINY ? 1 : 5;
	int ncpu = bu_ncpu();
	if (workers <= 0)
		workers = ncpu < MAX_WORKERS ? ncpu : MAX_WORKERS;
	/* Deep channels: on 2 cores the source and the saver share the cores
	 * with the workers, and a thread woken there can wait a scheduler
	 * slice (milliseconds) for a core; 64 ranges (about 1 ms of the
	 * workers' work) let them run dry: 0.60-0.62 of the bound against
	 * 0.76-0.83 with 1024 (2026-11-27, alternating, bench/RESULTS.md). */
	if (queue <= 0)
		queue = 1024;
	if (reps < 1 || reps > MAX_REPS) {
		fprintf(stderr, "--reps must be 1..%d\n", MAX_REPS);
		return 2;
	}
	if (range < 1 || range > BLOCK_BYTES) {
		fprintf(stderr, "--range must be 1..%d\n", BLOCK_BYTES);
		return 2;
	}
	if (workers > MAX_WORKERS) {
		fprintf(stderr, "--workers must be 1..%d\n", MAX_WORKERS);
		return 2;
	}
	if (chunk < 1 || chunk > CHUNK_MAX) {
		fprintf(stderr, "--chunk must be 1..%d\n", CHUNK_MAX);
		return 2;
	}
	if (!dir)
		dir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR")
							    : "/tmp";

	/* A cut name could make an output the input: refuse a long --dir. */
	if (strlen(dir) > 400) {
		fprintf(stderr, "--dir must be at most 400 characters\n");
		return 2;
	}

	struct bu_report rep;
	bu_report_begin(&rep, &a, "logs",
			"Go guide, claim 222,222 lines/s, 8 ms avg latency, "
			"4x on 4 cores");
#define NV 5
	char logp[512], outp[NV][512];
	snprintf(logp, sizeof logp, "%s/cpat-bench-logs-%d.log", dir,
		 (int)getpid());
	/* seq-blocks is the blocks pipeline's own sequential baseline (the
	 * same block functions on one thread); the line pipelines compare
	 * with the sequential line loop. */
	static const char *const vname[NV] = {
		"sequential", "per-line", "chunked", "blocks", "seq-blocks"};
	static const int base[NV] = {0, 0, 0, 4, 4};
	for (int v = 0; v < NV; v++)
		snprintf(outp[v], sizeof outp[v],
			 "%s/cpat-bench-logs-%d.%s.out", dir, (int)getpid(),
			 vname[v]);

	long nerr = 0;
	int64_t g0 = bu_now();
	if (write_log(logp, lines, &nerr) != 0) {
		fprintf(stderr, "logs: cannot write %s\n", logp);
		unlink(logp);
		return 1;
	}
	/* On disk before any timed run: see bu_sync_file(). */
	if (bu_sync_file(logp) != 0)
		fprintf(stderr,
			"logs: fsync %s failed (timings may include "
			"its writeback)\n",
			logp);
	long logsize = 0;
	uint64_t hin;
	file_hash(logp, &hin, &logsize);
	printf("input: %s, %ld lines, %.1f MB, %ld ERROR lines (generated in "
	       "%.2f s)\n",
	       logp, lines, (double)logsize / 1e6, nerr,
	       (double)(bu_now() - g0) / 1e9);
	printf("pipelines: read -> parse (ordered, %ld workers) -> keep-error "
	       "-> batch(100, 1 s) -> save; blocks: 64 KB ranges -> "
	       "read+parse+keep-error (ordered, %ld workers, channels of "
	       "%ld) -> save; median of %ld runs each\n",
	       workers, workers, queue, reps);

	/* Each version --reps times, alternating, so that a drift of the
	 * machine falls on every version alike; the median run of each is
	 * kept (with its latencies and, for the sequential ones, its stage
	 * costs). The fastest run would favour the one-thread versions: one
	 * thread meets a quiet moment of a shared host more often than two
	 * threads at once do. */
	struct result res[NV];
	struct costs cost = {0}, bcost = {0};
	char report[4096] = "";
	int all_ok = 1;
	static struct result runs[NV][MAX_REPS];
	static struct costs rcost[NV][MAX_REPS];
	static char rreport[MAX_REPS][4096];
	for (long k = 0; k < reps; k++)
		for (int v = 0; v < NV; v++) {
			struct result *r = &runs[v][k];
			struct costs cc = {0};
			char *rep_buf = rreport[k];
			if (v == 3)
				rep_buf[0] = 0;
			memset(r, 0, sizeof *r);
			r->name = vname[v];
			struct bu_lat lat;
			struct saver *sv = calloc(1, sizeof *sv);
			FILE *in = fopen(logp, "r");
			FILE *out = fopen(outp[v], "w");
			if (!sv || !in || !out ||
			    bu_lat_init(&lat, (size_t)nerr + 1) != 0) {
				fprintf(stderr, "logs: cannot open files\n");
				free(sv);
				if (in)
					fclose(in);
				if (out)
					fclose(out);
				unlink(logp); /* up to 1 GB */
				for (int u = 0; u < NV; u++)
					unlink(outp[u]);
				return 1;
			}
			static char ibuf[1 << 20];
			setvbuf(in, ibuf, _IOFBF, sizeof ibuf);
			sv->f = out;
			sv->lat = &lat;
			struct bu_progress pg;
			bu_progress_start(
				&pg, &a, r->name, "lines", (uint64_t)lines,
				(uint64_t)(lines / 4 > 0 ? lines / 4 : 1));
			struct bu_usage u0;
			bu_usage_now(&u0);
			int64_t t0 = bu_now();
			int rc;
			if (v == 0) {
				rc = run_seq(in, sv, &cc, &r->lines);
			} else if (v == 4) {
				rc = run_seq_blocks(in, range, sv, &cc,
						    &r->lines);
			} else {
				struct pctx p = {.queue = (size_t)queue,
						 .range = range,
						 .in = in,
						 .chunk = v == 1   ? 1
							  : v == 2 ? chunk
								   : 0,
						 .sv = sv,
						 .pg = &pg};
				rc = run_pipe(&p, (unsigned)workers,
					      v == 3 ? rep_buf : NULL,
					      sizeof rreport[k]);
				r->lines = p.nlines;
			}
			r->ns = bu_now() - t0;
			bu_usage_now(&r->use);
			bu_usage_sub(&r->use, &u0);
			bu_progress_end(&pg, (uint64_t)r->lines);
			fclose(in);
			if (fclose(out) != 0)
				sv->err = 1;
			/* Untimed: this run's output is written to disk now,
			 * not during the next version's run. */
			bu_sync_file(outp[v]);
			r->saved = sv->saved;
			r->p50 = (double)bu_lat_pct(&lat, 50);
			r->p99 = (double)bu_lat_pct(&lat, 99);
			r->mean = bu_lat_mean(&lat);
			r->ok = rc == 0 && !sv->err && r->lines == lines &&
				(long)r->saved == nerr;
			file_hash(outp[v], &r->hash, &r->size);
			bu_lat_free(&lat);
			free(sv);
			/* Every run's output must equal the first sequential
			 * run's (runs[0][0], the reference). */
			all_ok &= r->ok && r->hash == runs[0][0].hash &&
				  r->size == runs[0][0].size;
			rcost[v][k] = cc;
		}
	printf("\nruns (ms, in the order run; the median is kept):\n");
	for (int v = 0; v < NV; v++) {
		int64_t ns[MAX_REPS];
		printf("  %-10s", vname[v]);
		for (long k = 0; k < reps; k++) {
			ns[k] = runs[v][k].ns;
			printf(" %7.1f", (double)ns[k] / 1e6);
		}
		printf("\n");
		size_t m = bu_median_index(ns, (size_t)reps);
		res[v] = runs[v][m];
		if (v == 0)
			cost = rcost[0][m];
		if (v == 4)
			bcost = rcost[4][m];
		if (v == 3)
			memcpy(report, rreport[m], sizeof report);
	}
	/* How much of the bound's 2x two threads get here at all. */
	double copies = ncpu >= 2 ? two_copies(logp, range, reps) : 0;
	if (copies > 0)
		printf("\nmachine check: two copies of the seq-blocks loop at "
		       "once did %.2fx the work per second of one (median of "
		       "%ld each; the bounds assume 2.00x on 2 cores)\n",
		       copies, reps);
	bu_json_num(rep.json, "two_copies_throughput",
		    copies > 0 ? copies : NAN);

	if (report[0])
		printf("\nblocks pipeline stage report (its median run):\n%s",
		       report);

	/* The pipelines' bounds, from the per-stage costs measured by the
	 * sequential run of the same work (its median run, in this
	 * invocation): the serial steps are single threads, the parallel one
	 * has the workers, and all of it shares the cores:
	 *   line pipelines:  T_seq / max(read, parse / workers, keep-error,
	 *                                save, T_seq / cores)
	 *   blocks pipeline: T_seq / max(next range, (read + parse +
	 *                                keep-error) / workers, save,
	 *                                T_seq / cores)
	 * The line pipelines use the line loop's costs; the blocks pipeline
	 * those of seq-blocks (the same functions on one thread). */
	double ideal = 0, ideal_blk = 0;
	for (int b = 0; b < 2; b++) {
		const struct costs *c = b ? &bcost : &cost;
		double t = (double)res[b ? 4 : 0].ns;
		double terms[5] = {c->read, c->parse / (double)workers,
				   c->filter, c->save, t / (double)ncpu};
		/* The steps behind the first four terms (NULL: the blocks
		 * versions keep ERROR records while parsing). */
		static const char *const step[2][4] = {
			{"read", "parse", "keep-error", "save"},
			{"next range", "read+parse+keep-error", NULL, "save"}};
		const double cost_ns[4] = {c->read, c->parse, c->filter,
					   c->save};
		int mi = 0;
		for (int i = 1; i < 5; i++)
			if (terms[i] > terms[mi])
				mi = i;
		double bound = t / terms[mi];
		*(b ? &ideal_blk : &ideal) = bound;
		printf("\n%s %s costs (ns/line):",
		       b ? "seq-blocks" : "sequential",
		       b ? "step" : "per-stage");
		for (int i = 0, n = 0; i < 4; i++)
			if (step[b][i])
				printf("%s%s %.1f", n++ ? ", " : " ",
				       step[b][i], cost_ns[i] / (double)lines);
		printf("; T_seq %.1f\nbound for the %s = T_seq / max(",
		       t / (double)lines,
		       b ? "blocks pipeline" : "line pipelines");
		for (int i = 0; i < 4; i++) {
			if (!step[b][i])
				continue;
			printf("%s", step[b][i]);
			if (i == 1)
				printf(" / %ld workers", workers);
			printf(", ");
		}
		char maxname[64];
		if (mi == 4 || !step[b][mi])
			snprintf(maxname, sizeof maxname, "T_seq / cores");
		else
			snprintf(maxname, sizeof maxname, "%s%s", step[b][mi],
				 mi == 1 ? " / workers" : "");
		printf("T_seq / %d cores) = %.1f / %.1f (%s) = %.2fx\n", ncpu,
		       t / (double)lines, terms[mi] / (double)lines, maxname,
		       bound);
	}
	const double vbound[NV] = {1, ideal, ideal, ideal_blk, 1};

	static const char *hdr[] = {"version",  "time",  "lines/s", "speedup",
				    "eff",      "saved", "lat p50", "lat p99",
				    "lat mean", "cpu",   "ctx sw",  "output"};
	char cells[NV * 12][48];
	bu_json_int(rep.json, "lines", lines);
	bu_json_int(rep.json, "bytes", logsize);
	bu_json_int(rep.json, "errors", nerr);
	bu_json_int(rep.json, "workers", workers);
	bu_json_int(rep.json, "chunk", chunk);
	bu_json_int(rep.json, "reps", reps);
	bu_json_num(rep.json, "ideal", ideal);
	bu_json_num(rep.json, "ideal_blocks", ideal_blk);
	bu_json_str(rep.json, "ideal_how",
		    "T_seq / max(serial stage costs, parallel stage cost / "
		    "workers, T_seq / cores), stage costs of the matching "
		    "sequential run (blocks: read+parse+keep-error is the "
		    "parallel stage)");
	for (int b = 0; b < 2; b++) {
		const struct costs *c = b ? &bcost : &cost;
		bu_json_obj(rep.json, b ? "stage_ns_blocks" : "stage_ns");
		bu_json_num(rep.json, "read", c->read);
		bu_json_num(rep.json, "parse", c->parse);
		bu_json_num(rep.json, "keep_error", c->filter);
		bu_json_num(rep.json, "save", c->save);
		bu_json_end(rep.json);
	}
	bu_json_arr(rep.json, "versions");
	for (int v = 0; v < NV; v++) {
		struct result *r = &res[v];
		char b[32];
		double sp = (double)res[base[v]].ns / (double)r->ns;
		char(*c)[48] = cells + v * 12;
		snprintf(c[0], 48, "%s", r->name);
		snprintf(c[1], 48, "%s", bu_fmt_ns(b, (double)r->ns));
		snprintf(c[2], 48, "%.0f",
			 (double)r->lines / ((double)r->ns / 1e9));
		snprintf(c[3], 48, "%.2f", sp);
		snprintf(c[4], 48, "%.2f", sp / vbound[v]);
		snprintf(c[5], 48, "%llu", (unsigned long long)r->saved);
		snprintf(c[6], 48, "%s", bu_fmt_ns(b, r->p50));
		snprintf(c[7], 48, "%s", bu_fmt_ns(b, r->p99));
		snprintf(c[8], 48, "%s", bu_fmt_ns(b, r->mean));
		snprintf(c[9], 48, "%s", bu_fmt_ns(b, r->use.cpu_ns));
		snprintf(c[10], 48, "%ld", r->use.vcsw + r->use.ivcsw);
		snprintf(c[11], 48, "%s",
			 !r->ok ? "FAILED"
			 : r->hash == runs[0][0].hash &&
					 r->size == runs[0][0].size
				 ? "equal"
				 : "DIFFERS");
		bu_json_obj(rep.json, NULL);
		bu_json_str(rep.json, "name", r->name);
		bu_json_num(rep.json, "seconds", (double)r->ns / 1e9);
		bu_json_arr(rep.json, "runs_seconds"); /* median kept */
		for (long k = 0; k < reps; k++)
			bu_json_num(rep.json, NULL,
				    (double)runs[v][k].ns / 1e9);
		bu_json_end(rep.json);
		bu_json_num(rep.json, "lines_per_s",
			    (double)r->lines / ((double)r->ns / 1e9));
		bu_json_num(rep.json, "speedup", sp);
		bu_json_str(rep.json, "baseline", vname[base[v]]);
		bu_json_num(rep.json, "ideal", vbound[v]);
		bu_json_int(rep.json, "saved", (int64_t)r->saved);
		bu_json_num(rep.json, "latency_p50_ns", r->p50);
		bu_json_num(rep.json, "latency_p99_ns", r->p99);
		bu_json_num(rep.json, "latency_mean_ns", r->mean);
		bu_json_num(rep.json, "cpu_seconds", r->use.cpu_ns / 1e9);
		bu_json_int(rep.json, "voluntary_switches", r->use.vcsw);
		bu_json_int(rep.json, "involuntary_switches", r->use.ivcsw);
		bu_json_bool(rep.json, "ok", r->ok);
		bu_json_end(rep.json);
	}
	bu_json_end(rep.json);
	bu_table("log processing", 12, hdr, cells, NV);

	/* Where a pipeline's time goes: speedup = T_base / T_wall =
	 * (T_base / CPU) x (CPU / T_wall), the first factor the work it does
	 * beyond its baseline's (hand-offs, wake-ups, data moved between
	 * cores), the second how many cores it kept busy. */
	printf("\nCPU time of each pipeline (the whole process, user + "
	       "system) against its baseline's:\n");
	for (int v = 1; v < NV; v++) {
		if (base[v] == v)
			continue;
		const struct result *r = &res[v], *b = &res[base[v]];
		printf("  %-9s CPU %7.1f ms = %.2fx the %s's %.1f ms; %.2f "
		       "of %d cores busy over its %.1f ms; %ld context "
		       "switches (%ld involuntary)\n",
		       r->name, r->use.cpu_ns / 1e6,
		       r->use.cpu_ns / b->use.cpu_ns, b->name,
		       b->use.cpu_ns / 1e6, r->use.cpu_ns / (double)r->ns, ncpu,
		       (double)r->ns / 1e6, r->use.vcsw + r->use.ivcsw,
		       r->use.ivcsw);
	}

	for (int v = 1; v < NV; v++) {
		if (base[v] == v)
			continue; /* a baseline, not a pipeline */
		struct result *r = &res[v], *b = &res[base[v]];
		char nm[64], note[160], b1[32], b2[32];
		snprintf(nm, sizeof nm, "logs %s pipeline", r->name);
		snprintf(note, sizeof note,
			 "%.0f lines/s, latency p50 %s p99 %s; vs %s",
			 (double)r->lines / ((double)r->ns / 1e9),
			 bu_fmt_ns(b1, r->p50), bu_fmt_ns(b2, r->p99), b->name);
		bu_summary(&rep, nm, v == 1 ? "4x, 222k lines/s, 8ms" : "",
			   (double)b->ns / 1e9, (double)r->ns / 1e9, "s",
			   (double)b->ns / (double)r->ns, vbound[v], note);
	}
	bu_verdict(&rep,
		   "logs: guide 222,222 lines/s and 4x on 4 cores; here the "
		   "sequential line loop does %.0f lines/s and the same work "
		   "in 64 KB blocks %.0f lines/s on one thread; the blocks "
		   "pipeline %.0f lines/s = %.2fx its sequential version "
		   "(bound %.2fx from the stage costs on %d cores), the "
		   "per-line pipeline %.2fx: parsing a line costs less than "
		   "handing it on",
		   (double)res[0].lines / ((double)res[0].ns / 1e9),
		   (double)res[4].lines / ((double)res[4].ns / 1e9),
		   (double)res[3].lines / ((double)res[3].ns / 1e9),
		   (double)res[4].ns / (double)res[3].ns, ideal_blk, ncpu,
		   (double)res[0].ns / (double)res[1].ns);
	bu_check(&rep, "outputs_equal", all_ok);
	if (!keep) {
		unlink(logp);
		for (int v = 0; v < NV; v++)
			unlink(outp[v]);
	}
	return bu_report_end(&rep);
}
