/*
 * Internal declarations of the cpattern-redis module: the connection every
 * source and sink owns (URL, hiredis context, timeouts, last error), the
 * fields view shared by decode and encode callbacks, and small helpers.
 * Never installed.
 */
#ifndef CPAT_REDIS_INTERNAL_H
#define CPAT_REDIS_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "cpattern/redis.h"

#define RHIDDEN __attribute__((visibility("hidden")))

/*
 * One connection to the broker. The context is used by one thread at a
 * time (its owner serialises the calls); only the error text is read from
 * other threads, under emu.
 */
struct rconn {
	/* The parsed URL. */
	char *path; /* unix socket, or NULL for TCP */
	char *host; /* TCP host (without brackets) */
	int port;
	char *user; /* AUTH user, or NULL */
	char *pass; /* AUTH password, or NULL */
	long db;    /* SELECT when > 0 */

	int64_t connect_timeout_ns;
	int64_t io_timeout_ns; /* socket timeout for every reply */
	redisContext *c;       /* NULL while disconnected */
	uint64_t connects;     /* successful connections */
	uint64_t failures;     /* failed attempts */

	pthread_mutex_t emu;
	int last_rc;
	char err[256];
};

/* Parses @p url into @p rc (zeroed first); -EINVAL with a message in
 * rc->err, or -ENOMEM. Never does I/O. */
RHIDDEN int rconn_init(struct rconn *rc, const char *url);
/* Closes the context and frees the parsed URL. */
RHIDDEN void rconn_fini(struct rconn *rc);
/* One connection attempt (plus AUTH and SELECT): 0 or an error. */
RHIDDEN int rconn_connect(struct rconn *rc);
/* Drops the context (after an I/O error, or to close). */
RHIDDEN void rconn_drop(struct rconn *rc);
/*
 * Connects if need be, retrying with backoff from min_ns doubling to
 * max_ns until it succeeds, @p tok fires (its cause is returned), or an
 * error retrying cannot cure (-EINVAL: refused AUTH or SELECT; -ENOMEM).
 * @p attempts_left: 0 means forever, else at most that many attempts (the
 * last error is returned). @p deadline_ns bounds the whole (or
 * CPAT_FOREVER): -ETIMEDOUT after it.
 */
RHIDDEN int rconn_ensure(struct rconn *rc, struct cpat_token *tok,
			 int64_t min_ns, int64_t max_ns, int64_t deadline_ns);
/*
 * Runs one command and returns its reply in *out (caller frees) when it is
 * not an error reply. An error reply gives its mapped code (the message in
 * rc->err) and, if @p err_reply is not NULL, the reply itself there for
 * the caller to inspect (else it is freed). An I/O error drops the
 * connection and gives -EPIPE or -ETIMEDOUT.
 */
RHIDDEN int rconn_cmd(struct rconn *rc, int argc, const char **argv,
		      const size_t *lens, redisReply **out);
/* After a NULL reply or c->err: records the error, drops the context and
 * returns -EPIPE or -ETIMEDOUT. */
RHIDDEN int rconn_io_error(struct rconn *rc);
/* The code of an error reply (and records its text). */
RHIDDEN int rconn_reply_error(struct rconn *rc, const redisReply *r);
/* Records an error of ours: code and message. Returns @p code. */
RHIDDEN int rconn_set_error(struct rconn *rc, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
RHIDDEN int rconn_last_error(struct rconn *rc, char *buf, size_t len);
RHIDDEN int rconn_last_code(struct rconn *rc);
RHIDDEN void rconn_copy_error(struct rconn *rc, char *buf, size_t len);

/* Sleeps until @p until_ns or @p tok fires: 0, or the token's cause. */
RHIDDEN int rsleep_until(struct cpat_token *tok, int64_t until_ns);
/* strdup through malloc; NULL in, NULL out. */
RHIDDEN char *rdup(const char *s);
/* A condition variable on CLOCK_MONOTONIC, and a timed wait on it. */
RHIDDEN void rcond_init(pthread_cond_t *cv);
RHIDDEN void rcond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu,
			      int64_t until_ns);

/*
 * The fields of one entry. For decode: pointers into the reply (ro). For
 * encode: copies in the arena, both limited by the capacities made at
 * create. ptr/len hold 2 * cap strings: name, value, name, value, ...
 */
struct cpat_redis_fields {
	size_t n, cap;
	const char **ptr;
	size_t *len;
	char *arena;
	size_t used, arena_cap;
	int ro;
};

RHIDDEN int rfields_alloc(struct cpat_redis_fields *f, size_t cap,
			  size_t arena);
RHIDDEN void rfields_free(struct cpat_redis_fields *f);
/* Points @p f at the pairs of an entry's field array (ro). -EINVAL if the
 * reply is malformed or has more than cap pairs. */
RHIDDEN int rfields_view(struct cpat_redis_fields *f, const redisReply *arr);

#endif /* CPAT_REDIS_INTERNAL_H */
