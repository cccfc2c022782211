/*
 * The real-time processor's pieces, shared by its files (and linked into
 * the distributed benchmark, which runs the same code as its consumer and
 * producer processes):
 *
 *   msg.c       the message: what the producer writes, JSON parsing
 *               (cJSON) and the business computation
 *   store.c     the SQLite store: one transaction per batch, idempotent by
 *               entry ID
 *   processor.c the two modes (consumer, producer), flags, progress,
 *               graceful shutdown
 *
 * Latencies are kept in a small log-bucketed histogram (rt_hist): fixed
 * memory, cheap to add to, and histograms of several processes add up, so
 * that a benchmark can merge the percentiles of N consumer processes.
 */
#ifndef RT_H
#define RT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cpattern/redis.h"

/* Longest JSON payload a message may carry; a longer one is refused by the
 * source's decode callback and dead-lettered with its fields intact. */
#define RT_JSON_MAX 1024

/* One stream entry as the pipeline carries it (the source's item). */
struct rt_msg {
	struct cpat_redis_id id; /* the entry's ID: the row's primary key */
	int64_t sent_ns; /* producer's scheduled send time, CLOCK_REALTIME */
	uint32_t len;    /* bytes of json */
	char json[RT_JSON_MAX]; /* not NUL-terminated */
};

/* A parsed, then computed message (parse and compute stages' output). */
struct rt_rec {
	struct cpat_redis_id id;
	int64_t sent_ns;
	int64_t order_id;
	uint32_t user;
	int32_t qty;
	double amount;
	double total; /* computed */
	int32_t risk; /* computed */
};

/* ---- msg.c ---- */

/* Writes message @p seq's JSON into @p buf (malformed on purpose when
 * @p malformed: every other one cut short, the rest with a wrong type).
 * Returns its length, or -1 if it does not fit. */
int rt_msg_format(char *buf, size_t len, int64_t seq, int malformed);

/* Parses @p m into @p r: 0, or -1 with the reason in @p err. Thread-safe. */
int rt_parse(const struct rt_msg *m, struct rt_rec *r, char *err,
	     size_t errlen);

/* The business computation: risk and total, plus @p work_us of CPU time
 * spent on this thread (a CPU-bound knob for the benchmarks; 0: none). */
void rt_compute(struct rt_rec *r, long work_us);

/* CLOCK_REALTIME in ns: the clock messages are stamped with, the same on
 * every process of a machine (and across machines, as NTP keeps it). */
int64_t rt_wall_ns(void);

/* ---- store.c ---- */

struct rt_store;

/* Opens (creates) the database at @p path: WAL mode, synchronous FULL (or
 * NORMAL with @p sync_normal), busy timeout @p busy_ms, the table
 * "results". 0, or a negative errno with SQLite's message in @p err. */
int rt_store_open(struct rt_store **out, const char *path, int sync_normal,
		  int busy_ms, char *err, size_t errlen);

/* Saves @p n records in ONE transaction (INSERT OR IGNORE keyed by entry
 * ID): 0 only once COMMIT succeeded; otherwise the transaction is rolled
 * back, nothing of it is stored, and a negative errno is returned with
 * SQLite's message in @p err. *@p inserted receives the rows that were new
 * (a redelivered message is not written twice). One thread at a time. */
int rt_store_save(struct rt_store *s, const struct rt_rec *const *recs,
		  size_t n, long *inserted, char *err, size_t errlen);

/* Whether a failure of rt_store_save() may pass if tried again (busy,
 * locked, I/O error, full disk, read-only file): the data is fine, the
 * storage is not, for now. */
int rt_store_transient(int rc);

void rt_store_close(struct rt_store *s);

/* ---- latency histogram ---- */

/* Buckets: exact below 16 ns, then 16 per power of two (a bucket is at
 * most 1/16 = 6.25% wide), up to 2^40 ns (18 minutes). */
#define RT_HIST_BUCKETS (16 + 37 * 16)

struct rt_hist {
	uint64_t n[RT_HIST_BUCKETS];
	uint64_t count;
	int64_t max;
};

static inline unsigned rt_hist_index(int64_t v)
{
	if (v < 16)
		return v < 0 ? 0 : (unsigned)v;
	unsigned e = 63u - (unsigned)__builtin_clzll((unsigned long long)v);
	if (e > 40)
		return RT_HIST_BUCKETS - 1;
	unsigned mant = (unsigned)((uint64_t)v >> (e - 4)) & 15u;
	return 16 + (e - 4) * 16 + mant;
}

/* The middle of bucket @p i, in ns. */
static inline double rt_hist_value(unsigned i)
{
	if (i < 16)
		return i;
	unsigned e = (i - 16) / 16 + 4, mant = (i - 16) % 16;
	double lo = (double)((uint64_t)(16 + mant) << (e - 4));
	return lo + (double)(1ull << (e - 4)) / 2;
}

static inline void rt_hist_add(struct rt_hist *h, int64_t v)
{
	h->n[rt_hist_index(v)]++;
	h->count++;
	if (v > h->max)
		h->max = v;
}

static inline void rt_hist_merge(struct rt_hist *into, const struct rt_hist *h)
{
	for (unsigned i = 0; i < RT_HIST_BUCKETS; i++)
		into->n[i] += h->n[i];
	into->count += h->count;
	if (h->max > into->max)
		into->max = h->max;
}

/* Percentile @p p (0..100) in ns, nearest rank; -1 when empty. */
static inline double rt_hist_pct(const struct rt_hist *h, double p)
{
	if (h->count == 0)
		return -1;
	uint64_t rank = (uint64_t)(p / 100.0 * (double)h->count + 0.999999);
	if (rank < 1)
		rank = 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < RT_HIST_BUCKETS; i++) {
		seen += h->n[i];
		if (seen >= rank) {
			double v = rt_hist_value(i);
			return v > (double)h->max ? (double)h->max : v;
		}
	}
	return (double)h->max;
}

/* Writes @p h as text ("count C max M" then "i n" lines for the non-empty
 * buckets): 0, or -1 on a write error. */
int rt_hist_write(const struct rt_hist *h, FILE *f);

/* Reads what rt_hist_write() wrote, adding it to @p h: 0, or -1. */
int rt_hist_read_add(struct rt_hist *h, FILE *f);

/* ---- processor.c ---- */

/* The program: argv as main()'s. Returns the exit status. */
int rt_main(int argc, char **argv);

#endif /* RT_H */
