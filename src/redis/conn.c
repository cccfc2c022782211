/*
 * The connection of the cpattern-redis module: URL parsing, connecting
 * with a bounded timeout, reconnecting with backoff under a token, running
 * one command, and mapping the broker's errors into the library's
 * vocabulary. Also the entry ID and fields helpers.
 *
 * DESIGN
 *
 * Threads. A struct rconn belongs to one object (a source or a sink) and
 * its hiredis context is only ever used by one thread at a time: the
 * owner serialises its calls (a source under its I/O lock, a sink by its
 * contract). hiredis contexts are not thread-safe, and a single blocking
 * context per object keeps the protocol state trivially consistent. The
 * only state read from other threads is the last error (code and text),
 * which lives under its own small lock emu.
 *
 * Bounded waits. Every connection attempt has a timeout
 * (redisConnectWithTimeout / redisConnectUnixWithTimeout), and every
 * reply a socket timeout (redisSetTimeout), so no call here can hang on a
 * dead or stopped server: at worst it ends with -ETIMEDOUT and the
 * context is dropped. Name resolution is the exception (getaddrinfo() has
 * no timeout): the header says so.
 *
 * Errors. A context with err set is unusable (hiredis leaves the stream
 * in an unknown state), so any I/O error drops it; the owner reconnects
 * through rconn_ensure(). Error replies leave the connection usable and
 * are mapped by their prefix: transient conditions (LOADING while the
 * server reads its append-only file after a restart, BUSY, TRYAGAIN,
 * MASTERDOWN) to -EAGAIN so callers retry them, OOM to -ENOMEM, the rest
 * to -EINVAL (the command or its key was refused).
 */
#include "redis_internal.h"

#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

char *rdup(const char *s)
{
	if (!s)
		return NULL;
	size_t n = strlen(s) + 1;
	char *d = malloc(n);
	if (d)
		memcpy(d, s, n);
	return d;
}

void rcond_init(pthread_cond_t *cv)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(cv, &a);
	pthread_condattr_destroy(&a);
}

void rcond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t until_ns)
{
	struct timespec ts = {.tv_sec = until_ns / CPAT_SEC,
			      .tv_nsec = until_ns % CPAT_SEC};
	pthread_cond_timedwait(cv, mu, &ts);
}

int rsleep_until(struct cpat_token *tok, int64_t until_ns)
{
	if (tok) {
		int st = cpat_token_status(tok);
		if (st != 0)
			return st;
		cpat_token_wait(tok, until_ns);
		return cpat_token_status(tok);
	}
	int64_t now = cpat_now_ns();
	if (until_ns > now) {
		struct timespec ts = {.tv_sec = (until_ns - now) / CPAT_SEC,
				      .tv_nsec = (until_ns - now) % CPAT_SEC};
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
	}
	return 0;
}

/* ---- errors -------------------------------------------------------------- */

int rconn_set_error(struct rconn *rc, int code, const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&rc->emu);
	va_start(ap, fmt);
	vsnprintf(rc->err, sizeof rc->err, fmt, ap);
	va_end(ap);
	rc->last_rc = code;
	pthread_mutex_unlock(&rc->emu);
	return code;
}

int rconn_last_error(struct rconn *rc, char *buf, size_t len)
{
	pthread_mutex_lock(&rc->emu);
	int n = snprintf(buf, len, "%s", rc->err);
	pthread_mutex_unlock(&rc->emu);
	return n;
}

int rconn_last_code(struct rconn *rc)
{
	pthread_mutex_lock(&rc->emu);
	int code = rc->last_rc;
	pthread_mutex_unlock(&rc->emu);
	return code;
}

void rconn_copy_error(struct rconn *rc, char *buf, size_t len)
{
	if (buf && len)
		rconn_last_error(rc, buf, len);
}

/* Timeouts show up as EAGAIN (SO_RCVTIMEO) or ETIMEDOUT (connect); hiredis
 * keeps only the text, so it is read from there. */
static int code_of_io_text(const char *t)
{
	if (strstr(t, "timed out") || strstr(t, "Resource temporarily") ||
	    strstr(t, "Timeout"))
		return -ETIMEDOUT;
	if (strstr(t, "annot allocate") || strstr(t, "Out of memory"))
		return -ENOMEM;
	return -EPIPE;
}

int rconn_io_error(struct rconn *rc)
{
	int code = -EPIPE;
	if (rc->c && rc->c->err) {
		code = rc->c->err == REDIS_ERR_OOM
			       ? -ENOMEM
			       : code_of_io_text(rc->c->errstr);
		rconn_set_error(rc, code, "connection: %s", rc->c->errstr);
	} else {
		rconn_set_error(rc, code, "connection lost");
	}
	rconn_drop(rc);
	return code;
}

int rconn_reply_error(struct rconn *rc, const redisReply *r)
{
	const char *s = r->str ? r->str : "";
	int code = -EINVAL;
	if (!strncmp(s, "LOADING", 7) || !strncmp(s, "BUSY ", 5) ||
	    !strncmp(s, "TRYAGAIN", 8) || !strncmp(s, "MASTERDOWN", 10))
		code = -EAGAIN;
	else if (!strncmp(s, "OOM", 3))
		code = -ENOMEM;
	return rconn_set_error(rc, code, "%s", s);
}

/* ---- URL ----------------------------------------------------------------- */

/* Copies [s, s+n) with %XX decoded; NULL on a bad escape or no memory
 * (*bad says which). */
static char *pct_decode(const char *s, size_t n, int *bad)
{
	char *d = malloc(n + 1);
	if (!d)
		return NULL;
	size_t j = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%') {
			if (i + 2 >= n || !isxdigit((unsigned char)s[i + 1]) ||
			    !isxdigit((unsigned char)s[i + 2])) {
				free(d);
				*bad = 1;
				return NULL;
			}
			char hex[3] = {s[i + 1], s[i + 2], 0};
			d[j++] = (char)strtol(hex, NULL, 16);
			i += 2;
		} else {
			d[j++] = s[i];
		}
	}
	d[j] = '\0';
	return d;
}

/* A decimal number of [s, s+n) in [lo, hi], or -1. */
static long parse_num(const char *s, size_t n, long lo, long hi)
{
	if (n == 0 || n > 10)
		return -1;
	long v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v < lo || v > hi ? -1 : v;
}

static int bad_url(struct rconn *rc, const char *url, const char *why)
{
	return rconn_set_error(rc, -EINVAL, "bad URL '%s': %s", url, why);
}

int rconn_init(struct rconn *rc, const char *url)
{
	memset(rc, 0, sizeof *rc);
	pthread_mutex_init(&rc->emu, NULL);
	rc->connect_timeout_ns = CPAT_SEC;
	rc->io_timeout_ns = 2 * CPAT_SEC;
	rc->port = 6379;
	if (!url)
		return rconn_set_error(rc, -EINVAL, "no URL");
	if (!strncmp(url, "unix://", 7)) {
		const char *p = url + 7;
		if (*p != '/')
			return bad_url(rc, url,
				       "the socket path must be absolute "
				       "(unix:///path)");
		const char *q = strchr(p, '?');
		size_t plen = q ? (size_t)(q - p) : strlen(p);
		if (plen < 2 || plen >= 108)
			return bad_url(rc, url,
				       "socket path empty or too long");
		if (q) {
			if (strncmp(q, "?db=", 4) != 0)
				return bad_url(
					rc, url,
					"only ?db=N may follow the path");
			rc->db = parse_num(q + 4, strlen(q + 4), 0, INT_MAX);
			if (rc->db < 0)
				return bad_url(rc, url, "bad db number");
		}
		int bad = 0;
		rc->path = pct_decode(p, plen, &bad);
		if (!rc->path)
			return bad ? bad_url(rc, url, "bad %-escape")
				   : rconn_set_error(rc, -ENOMEM,
						     "out of memory");
		return 0;
	}
	if (strncmp(url, "redis://", 8) != 0)
		return bad_url(rc, url,
			       "the scheme must be redis:// or unix://");
	const char *p = url + 8;
	const char *end = p + strcspn(p, "/?#");
	if (*end == '?' || *end == '#')
		return bad_url(rc, url, "no query or fragment allowed");
	const char *at = memrchr(p, '@', (size_t)(end - p));
	int bad = 0;
	if (at) {
		const char *colon = memchr(p, ':', (size_t)(at - p));
		if (!colon)
			return bad_url(rc, url,
				       "credentials must be user:password or "
				       ":password");
		if (colon > p) {
			rc->user = pct_decode(p, (size_t)(colon - p), &bad);
			if (!rc->user)
				goto fail_dec;
		}
		rc->pass =
			pct_decode(colon + 1, (size_t)(at - colon - 1), &bad);
		if (!rc->pass)
			goto fail_dec;
		if (!rc->pass[0])
			return bad_url(rc, url, "empty password");
		p = at + 1;
	}
	const char *hend;
	const char *portp = NULL;
	if (*p == '[') {
		const char *rb = memchr(p, ']', (size_t)(end - p));
		if (!rb || rb == p + 1)
			return bad_url(rc, url, "bad [IPv6] host");
		rc->host = pct_decode(p + 1, (size_t)(rb - p - 1), &bad);
		hend = rb + 1;
		if (hend < end) {
			if (*hend != ':')
				return bad_url(rc, url,
					       "junk after the [IPv6] host");
			portp = hend + 1;
		}
	} else {
		const char *colon = memchr(p, ':', (size_t)(end - p));
		hend = colon ? colon : end;
		if (hend == p)
			return bad_url(rc, url, "no host");
		for (const char *c = p; c < hend; c++)
			if (!(isalnum((unsigned char)*c) || *c == '.' ||
			      *c == '-' || *c == '_'))
				return bad_url(rc, url,
					       "bad character in the host");
		rc->host = pct_decode(p, (size_t)(hend - p), &bad);
		if (colon)
			portp = colon + 1;
	}
	if (!rc->host)
		goto fail_dec;
	if (portp) {
		long port = parse_num(portp, (size_t)(end - portp), 1, 65535);
		if (port < 0)
			return bad_url(rc, url, "the port must be 1..65535");
		rc->port = (int)port;
	}
	if (*end == '/' && end[1] != '\0') {
		rc->db = parse_num(end + 1, strlen(end + 1), 0, INT_MAX);
		if (rc->db < 0)
			return bad_url(rc, url, "the path must be a db number");
	}
	return 0;
fail_dec:
	return bad ? bad_url(rc, url, "bad %-escape")
		   : rconn_set_error(rc, -ENOMEM, "out of memory");
}

void rconn_drop(struct rconn *rc)
{
	if (rc->c) {
		redisFree(rc->c);
		rc->c = NULL;
	}
}

void rconn_fini(struct rconn *rc)
{
	rconn_drop(rc);
	free(rc->path);
	free(rc->host);
	free(rc->user);
	free(rc->pass);
	rc->path = rc->host = rc->user = rc->pass = NULL;
	pthread_mutex_destroy(&rc->emu);
}

static struct timeval tv_of(int64_t ns)
{
	if (ns < CPAT_MSEC)
		ns = CPAT_MSEC;
	struct timeval tv = {.tv_sec = ns / CPAT_SEC,
			     .tv_usec = (ns % CPAT_SEC) / 1000};
	return tv;
}

int rconn_cmd(struct rconn *rc, int argc, const char **argv, const size_t *lens,
	      redisReply **out)
{
	*out = NULL;
	if (!rc->c)
		return rconn_set_error(rc, -EPIPE, "not connected");
	redisReply *r = redisCommandArgv(rc->c, argc, argv, lens);
	if (!r)
		return rconn_io_error(rc);
	if (r->type == REDIS_REPLY_ERROR) {
		int code = rconn_reply_error(rc, r);
		freeReplyObject(r);
		return code;
	}
	*out = r;
	return 0;
}

int rconn_connect(struct rconn *rc)
{
	rconn_drop(rc);
	struct timeval tv = tv_of(rc->connect_timeout_ns);
	redisContext *c =
		rc->path ? redisConnectUnixWithTimeout(rc->path, tv)
			 : redisConnectWithTimeout(rc->host, rc->port, tv);
	if (!c) {
		rc->failures++;
		return rconn_set_error(rc, -ENOMEM, "connect: out of memory");
	}
	if (c->err) {
		int code = c->err == REDIS_ERR_OOM ? -ENOMEM
						   : code_of_io_text(c->errstr);
		if (rc->path)
			rconn_set_error(rc, code, "connect to %s: %s", rc->path,
					c->errstr);
		else
			rconn_set_error(rc, code, "connect to %s:%d: %s",
					rc->host, rc->port, c->errstr);
		redisFree(c);
		rc->failures++;
		return code;
	}
	rc->c = c;
	if (redisSetTimeout(c, tv_of(rc->io_timeout_ns)) != REDIS_OK) {
		rc->failures++;
		return rconn_io_error(rc);
	}
	redisReply *r;
	int code = 0;
	if (rc->pass) {
		const char *av[3] = {"AUTH", rc->user ? rc->user : rc->pass,
				     rc->pass};
		code = rconn_cmd(rc, rc->user ? 3 : 2, av, NULL, &r);
		if (code == 0)
			freeReplyObject(r);
	}
	if (code == 0 && rc->db > 0) {
		char db[24];
		snprintf(db, sizeof db, "%ld", rc->db);
		const char *av[2] = {"SELECT", db};
		code = rconn_cmd(rc, 2, av, NULL, &r);
		if (code == 0)
			freeReplyObject(r);
	}
	if (code != 0) {
		rc->failures++;
		rconn_drop(rc);
		return code;
	}
	rc->connects++;
	return 0;
}

int rconn_ensure(struct rconn *rc, struct cpat_token *tok, int64_t min_ns,
		 int64_t max_ns, int64_t deadline_ns)
{
	int64_t backoff = min_ns;
	for (;;) {
		if (rc->c)
			return 0;
		int st = tok ? cpat_token_status(tok) : 0;
		if (st != 0)
			return st;
		int code = rconn_connect(rc);
		if (code == 0)
			return 0;
		/* A refused AUTH or SELECT will be refused again. */
		if (code == -EINVAL || code == -ENOMEM)
			return code;
		int64_t until = cpat_now_ns() + backoff;
		if (deadline_ns != CPAT_FOREVER && until > deadline_ns)
			return code == -ETIMEDOUT || code == -EPIPE
				       ? code
				       : -ETIMEDOUT;
		st = rsleep_until(tok, until);
		if (st != 0)
			return st;
		backoff = backoff * 2 > max_ns ? max_ns : backoff * 2;
	}
}

/* ---- IDs ----------------------------------------------------------------- */

int cpat_redis_id_format(const struct cpat_redis_id *id, char *buf, size_t len)
{
	if (!id || (!buf && len > 0))
		return -EINVAL;
	return snprintf(buf, len, "%llu-%llu", (unsigned long long)id->ms,
			(unsigned long long)id->seq);
}

static int parse_u64(const char *s, size_t n, uint64_t *out)
{
	if (n == 0 || n > 20)
		return -EINVAL;
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		uint64_t d = (uint64_t)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -EINVAL;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int cpat_redis_id_parse(const char *text, size_t len, struct cpat_redis_id *out)
{
	if (!text || !out)
		return -EINVAL;
	const char *dash = memchr(text, '-', len);
	struct cpat_redis_id id = {0, 0};
	if (parse_u64(text, dash ? (size_t)(dash - text) : len, &id.ms) != 0)
		return -EINVAL;
	if (dash &&
	    parse_u64(dash + 1, len - (size_t)(dash + 1 - text), &id.seq) != 0)
		return -EINVAL;
	*out = id;
	return 0;
}

/* ---- fields -------------------------------------------------------------- */

int rfields_alloc(struct cpat_redis_fields *f, size_t cap, size_t arena)
{
	memset(f, 0, sizeof *f);
	f->cap = cap;
	f->ptr = calloc(2 * cap, sizeof *f->ptr);
	f->len = calloc(2 * cap, sizeof *f->len);
	f->arena_cap = arena;
	f->arena = arena ? malloc(arena) : NULL;
	if (!f->ptr || !f->len || (arena && !f->arena)) {
		rfields_free(f);
		return -ENOMEM;
	}
	return 0;
}

void rfields_free(struct cpat_redis_fields *f)
{
	free(f->ptr);
	free(f->len);
	free(f->arena);
	memset(f, 0, sizeof *f);
}

int rfields_view(struct cpat_redis_fields *f, const redisReply *arr)
{
	f->n = 0;
	f->ro = 1;
	if (!arr || arr->type != REDIS_REPLY_ARRAY || arr->elements % 2 != 0)
		return -EINVAL;
	if (arr->elements / 2 > f->cap)
		return -EINVAL;
	for (size_t i = 0; i < arr->elements; i++) {
		const redisReply *e = arr->element[i];
		if (e->type != REDIS_REPLY_STRING)
			return -EINVAL;
		f->ptr[i] = e->str;
		f->len[i] = e->len;
	}
	f->n = arr->elements / 2;
	return 0;
}

size_t cpat_redis_fields_count(const struct cpat_redis_fields *f)
{
	return f ? f->n : 0;
}

int cpat_redis_fields_get(const struct cpat_redis_fields *f, size_t i,
			  const char **field, size_t *field_len,
			  const char **value, size_t *value_len)
{
	if (!f || i >= f->n)
		return -EINVAL;
	if (field)
		*field = f->ptr[2 * i];
	if (field_len)
		*field_len = f->len[2 * i];
	if (value)
		*value = f->ptr[2 * i + 1];
	if (value_len)
		*value_len = f->len[2 * i + 1];
	return 0;
}

int cpat_redis_fields_find(const struct cpat_redis_fields *f, const char *name,
			   const char **value, size_t *value_len)
{
	if (!f || !name)
		return -EINVAL;
	size_t n = strlen(name);
	for (size_t i = 0; i < f->n; i++) {
		if (f->len[2 * i] == n && memcmp(f->ptr[2 * i], name, n) == 0) {
			if (value)
				*value = f->ptr[2 * i + 1];
			if (value_len)
				*value_len = f->len[2 * i + 1];
			return 0;
		}
	}
	return -EINVAL;
}

int cpat_redis_fields_add(struct cpat_redis_fields *f, const char *field,
			  const void *value, size_t value_len)
{
	if (!f || !field || !field[0] || (!value && value_len > 0) || f->ro)
		return -EINVAL;
	size_t flen = strlen(field);
	if (f->n >= f->cap || flen > f->arena_cap - f->used ||
	    value_len > f->arena_cap - f->used - flen)
		return -EINVAL;
	char *d = f->arena + f->used;
	memcpy(d, field, flen);
	if (value_len)
		memcpy(d + flen, value, value_len);
	f->ptr[2 * f->n] = d;
	f->len[2 * f->n] = flen;
	f->ptr[2 * f->n + 1] = d + flen;
	f->len[2 * f->n + 1] = value_len;
	f->used += flen + value_len;
	f->n++;
	return 0;
}
