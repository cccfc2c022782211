/*
 * The message: an order as JSON,
 *
 *   {"id":42,"user":"u01234","type":"order","amount":123.45,"qty":3,
 *    "tags":["web","eu"]}
 *
 * parsed with cJSON into a struct rt_rec, then the business computation
 * (a risk score and the total). What does not parse, or lacks a field or
 * has one of the wrong type, is malformed: the caller dead-letters it with
 * the reason written here.
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "rt.h"

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

int64_t rt_wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int rt_msg_format(char *buf, size_t len, int64_t seq, int malformed)
{
	uint64_t h = mix((uint64_t)seq);
	unsigned user = (unsigned)(h >> 20) % 50000;
	int n;
	if (malformed && h % 2 == 0) /* cut short: a syntax error */
		n = snprintf(buf, len, "{\"id\":%lld,\"user\":\"u%05u\",\"amou",
			     (long long)seq, user);
	else if (malformed) /* valid JSON, but qty is not a number */
		n = snprintf(
			buf, len,
			"{\"id\":%lld,\"user\":\"u%05u\",\"type\":\"order\","
			"\"amount\":1.50,\"qty\":\"three\"}",
			(long long)seq, user);
	else
		n = snprintf(
			buf, len,
			"{\"id\":%lld,\"user\":\"u%05u\",\"type\":\"order\","
			"\"amount\":%u.%02u,\"qty\":%u,\"tags\":[\"web\","
			"\"eu\"],\"meta\":{\"v\":2,\"src\":\"mq\"}}",
			(long long)seq, user, (unsigned)(h >> 8) % 500,
			(unsigned)h % 100, 1 + (unsigned)(h >> 40) % 9);
	return n < 0 || (size_t)n >= len ? -1 : n;
}

int rt_parse(const struct rt_msg *m, struct rt_rec *r, char *err, size_t errlen)
{
	const char *end = NULL;
	/* With a length and return_parse_end: no NUL needed, and the error's
	 * position comes back here rather than through cJSON's global. */
	cJSON *root = cJSON_ParseWithLengthOpts(m->json, m->len, &end, 0);
	if (!root) {
		size_t at = end && end >= m->json ? (size_t)(end - m->json) : 0;
		snprintf(err, errlen, "invalid JSON at byte %zu of %u", at,
			 (unsigned)m->len);
		return -1;
	}
	static const char *const need[] = {"id", "user", "amount", "qty"};
	const cJSON *v[4];
	int rc = 0;
	for (int i = 0; i < 4 && rc == 0; i++) {
		v[i] = cJSON_GetObjectItemCaseSensitive(root, need[i]);
		int ok = i == 1 ? cJSON_IsString(v[i]) : cJSON_IsNumber(v[i]);
		if (!ok) {
			snprintf(err, errlen, "field \"%s\" %s", need[i],
				 v[i] ? "has the wrong type" : "is missing");
			rc = -1;
		}
	}
	if (rc == 0 && (v[1]->valuestring[0] != 'u' || v[2]->valuedouble < 0 ||
			v[3]->valuedouble < 1 || v[3]->valuedouble > 1e6)) {
		snprintf(err, errlen, "field values out of range");
		rc = -1;
	}
	if (rc == 0) {
		r->id = m->id;
		r->sent_ns = m->sent_ns;
		r->order_id = (int64_t)v[0]->valuedouble;
		r->user = (uint32_t)strtoul(v[1]->valuestring + 1, NULL, 10);
		r->amount = v[2]->valuedouble;
		r->qty = (int32_t)v[3]->valuedouble;
		r->total = 0;
		r->risk = 0;
	}
	cJSON_Delete(root);
	return rc;
}

static int64_t thread_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void rt_compute(struct rt_rec *r, long work_us)
{
	uint64_t h = mix(r->user);
	if (work_us > 0) {
		/* CPU time, not wall time: a descheduled thread does not get
		 * its work done by the clock, so N processes on fewer cores
		 * cannot look faster than the cores allow. */
		int64_t until = thread_cpu_ns() + work_us * 1000;
		do {
			for (int i = 0; i < 256; i++)
				h = mix(h + (uint64_t)i);
		} while (thread_cpu_ns() < until);
		volatile uint64_t keep = h; /* the work is not optimised out */
		(void)keep;
	}
	r->risk = (int32_t)(mix(r->user) % 100);
	r->total = r->amount * r->qty * (1.0 + r->risk / 1000.0);
}
