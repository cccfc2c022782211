/*
 * A Redis Streams consumer-group member as a libcpattern source: batched
 * blocking reads, a bound on entries in flight, batched XACK, reclaim of
 * idle entries, dead letters, reconnection; and its glue to pipelines and
 * pools.
 *
 * DESIGN
 *
 * Threads and locks. One thread reads: the caller of
 * cpat_redis_source_next() (the pipeline's source thread, the pool
 * feeder's thread, or the user's loop). It alone does I/O, on the
 * source's single hiredis connection, under io_mu (which also serialises
 * flush and destroy with it; no lock is ever taken while io_mu is wanted
 * by the same thread twice). Completions (ack, nack) come from any
 * thread, any number at once (the pipeline's sink and stage workers, pool
 * workers): they take only mu, update the in-flight set and queue the IDs
 * to acknowledge, and signal cv; they never touch the connection, so they
 * never block on the network and a slow broker cannot stall a sink. The
 * reader sends the queued IDs as one XACK at the start of each next(),
 * before reading more. Lock order: io_mu before mu; mu is never held
 * across I/O or a user callback.
 *
 * Invariants (under mu).
 *  - in_flight = entries read or claimed and not yet (acknowledged to the
 *    broker, dead-lettered, or nacked). Reads ask for COUNT <= bound -
 *    in_flight entries, and claims for as many, so in_flight <= bound
 *    always: the source never holds more than max_unacked entries, and
 *    while it is at the bound it waits on cv for completions instead of
 *    reading.
 *  - The in-flight set holds every ID handed out and not yet confirmed by
 *    XACK or nacked (state HANDED, or QUEUED once acked). It is an open
 *    addressing table of at least 2 x bound slots, so it never fills. It
 *    makes ack of an unknown or already acked ID harmless, and keeps the
 *    reclaim from claiming an entry this source still holds (its idle time
 *    in the broker grows while a slow sink works on it).
 *  - ackq (IDs acked, XACK not sent) and sendbuf (taken by the reader, sent
 *    or being retried) are subsets of the set: each holds at most bound.
 *  - Entries decoded but not handed out (the held reply) count in
 *    in_flight but are not in the set; the reclaim runs only when none is
 *    held.
 *
 * Delivery. An ID leaves the group's pending list only by XACK, after its
 * completion was acknowledged, or after it was copied to the dead-letter
 * stream. Everything else (a crash, a cancel, a lost reply of XREADGROUP,
 * an entry nacked) leaves it pending, to be claimed when it has been idle
 * claim_idle_ns: at-least-once.
 *
 * Why XPENDING + XCLAIM and not XAUTOCLAIM: the dead-letter decision needs
 * each entry's delivery count before it is delivered again, which
 * XAUTOCLAIM does not return (and it would count one more delivery first);
 * and XPENDING lets the source skip the IDs it holds itself. XCLAIM with
 * the same min-idle-time is atomic per entry in the broker, so when two
 * consumers race for an entry only one gets it.
 *
 * Bounded answers to the token: a read blocks at most block_ns (<= 1 s,
 * 100 ms by default) in the broker, a wait for room at most 20 ms between
 * checks, a reconnect backoff waits on the token itself; a broker that
 * stops answering is bounded by the socket timeout (block + io timeout).
 */
#include "redis_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SET_EMPTY = 0, SET_HANDED = 1, SET_QUEUED = 2 };

struct idslot {
	struct cpat_redis_id id;
	int state;
};

/* One task of the pool feeder: its item lives in slot_items[idx]. */
struct fslot {
	struct cpat_redis_source *s;
	cpat_redis_task_fn fn;
	void *arg;
	struct cpat_redis_id id;
	size_t idx;
};

struct cpat_redis_source {
	struct rconn conn;
	/* Options (read-only after create). */
	char *stream, *group, *consumer, *dlq, *start_id;
	size_t item_size, batch, bound, max_fields;
	cpat_redis_decode_fn decode;
	void *decode_arg;
	int64_t block_ns, claim_idle_ns, claim_interval_ns, idle_end_ns;
	int64_t rmin, rmax;
	unsigned max_deliveries;

	/* The reader's state, under io_mu. */
	pthread_mutex_t io_mu;
	redisReply *held_root; /* reply owning the held entries */
	redisReply *held;      /* array of entries [id, fields] */
	size_t held_pos;
	int held_claimed;           /* held came from XCLAIM */
	uint64_t *held_deliv;       /* claimed: deliveries before the claim */
	struct cpat_redis_id *cand; /* the claim's candidates (batch) */
	uint64_t *cand_deliv;       /* and their deliveries */
	struct cpat_redis_id *sendbuf;
	size_t nsend;
	struct cpat_redis_fields fields;
	const char **argv;
	size_t *argl;
	size_t argcap;
	char *idtext; /* room for argcap IDs as text */
	int64_t next_claim_ns, last_progress_ns;
	uint64_t seen_connects, seen_failures;

	/* Shared with the completing threads, under mu. */
	pthread_mutex_t mu;
	pthread_cond_t cv; /* an ack, a nack or a free feeder slot */
	struct idslot *set;
	size_t set_mask;
	struct cpat_redis_id *ackq;
	size_t nackq;
	struct cpat_redis_source_stats st;
	struct fslot *slots;
	unsigned char *slot_items;
	size_t *free_slots;
	size_t nfree;
};

/* ---- the in-flight set (under mu) ---------------------------------------- */

static size_t id_hash(const struct cpat_redis_id *id)
{
	uint64_t h = id->ms * 0x9E3779B97F4A7C15ull ^
		     id->seq * 0xC2B2AE3D27D4EB4Full;
	h ^= h >> 31;
	return (size_t)h;
}

static int id_eq(const struct cpat_redis_id *a, const struct cpat_redis_id *b)
{
	return a->ms == b->ms && a->seq == b->seq;
}

static size_t set_find(struct cpat_redis_source *s,
		       const struct cpat_redis_id *id)
{
	for (size_t i = id_hash(id) & s->set_mask;; i = (i + 1) & s->set_mask) {
		if (s->set[i].state == SET_EMPTY)
			return SIZE_MAX;
		if (id_eq(&s->set[i].id, id))
			return i;
	}
}

static void set_insert(struct cpat_redis_source *s,
		       const struct cpat_redis_id *id)
{
	size_t i = id_hash(id) & s->set_mask;
	while (s->set[i].state != SET_EMPTY) {
		if (id_eq(&s->set[i].id, id))
			return; /* already held: delivered twice by a claim race
				 */
		i = (i + 1) & s->set_mask;
	}
	s->set[i].id = *id;
	s->set[i].state = SET_HANDED;
}

/* Removes slot i, shifting back the entries of its probe run so that every
 * lookup still finds them (linear probing needs no tombstones then). */
static void set_remove_at(struct cpat_redis_source *s, size_t i)
{
	size_t j = i;
	for (;;) {
		j = (j + 1) & s->set_mask;
		if (s->set[j].state == SET_EMPTY)
			break;
		size_t k = id_hash(&s->set[j].id) & s->set_mask;
		int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
		if (stays)
			continue;
		s->set[i] = s->set[j];
		i = j;
	}
	s->set[i].state = SET_EMPTY;
}

static void note_in_flight(struct cpat_redis_source *s, size_t add)
{
	s->st.in_flight += add;
	if (s->st.in_flight > s->st.in_flight_peak)
		s->st.in_flight_peak = s->st.in_flight;
}

static void done_in_flight(struct cpat_redis_source *s, size_t n)
{
	s->st.in_flight -= n;
	pthread_cond_broadcast(&s->cv);
}

/* ---- completions (any thread) -------------------------------------------- */

static int complete(struct cpat_redis_source *s, const unsigned char *h,
		    size_t n, int ack)
{
	int done = 0;
	pthread_mutex_lock(&s->mu);
	for (size_t k = 0; k < n; k++) {
		struct cpat_redis_id id;
		memcpy(&id, h + k * sizeof id, sizeof id);
		size_t i = set_find(s, &id);
		if (i == SIZE_MAX || s->set[i].state != SET_HANDED)
			continue;
		if (ack) {
			/* At most bound IDs are in the set, so ackq has room.
			 */
			s->set[i].state = SET_QUEUED;
			s->ackq[s->nackq++] = id;
		} else {
			set_remove_at(s, i);
			s->st.nacked++;
			s->st.in_flight--;
		}
		done++;
	}
	if (done)
		pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return done;
}

int cpat_redis_source_ack(struct cpat_redis_source *s,
			  const struct cpat_redis_id *ids, size_t n)
{
	if (!s || (!ids && n > 0))
		return -EINVAL;
	return complete(s, (const unsigned char *)ids, n, 1);
}

int cpat_redis_source_nack(struct cpat_redis_source *s,
			   const struct cpat_redis_id *ids, size_t n)
{
	if (!s || (!ids && n > 0))
		return -EINVAL;
	return complete(s, (const unsigned char *)ids, n, 0);
}

void cpat_redis_source_ack_fn(const void *handles, size_t n, void *arg)
{
	/* The pipeline keeps handles in its own buffers, not necessarily
	 * aligned for the struct: complete() copies each one out. */
	if (arg && handles)
		complete(arg, handles, n, 1);
}

/* ---- commands (reader, under io_mu) -------------------------------------- */

static void publish_conn_stats(struct cpat_redis_source *s)
{
	if (s->conn.connects == s->seen_connects &&
	    s->conn.failures == s->seen_failures)
		return;
	pthread_mutex_lock(&s->mu);
	/* The first connection, made by create, is not a reconnect. */
	s->st.reconnects = s->conn.connects ? s->conn.connects - 1 : 0;
	s->st.connect_failures = s->conn.failures;
	pthread_mutex_unlock(&s->mu);
	s->seen_connects = s->conn.connects;
	s->seen_failures = s->conn.failures;
}

static void note_error(struct cpat_redis_source *s, int rc)
{
	pthread_mutex_lock(&s->mu);
	s->st.last_error = rc;
	pthread_mutex_unlock(&s->mu);
}

/*
 * Runs a command, reconnecting with backoff after a lost connection and
 * retrying what the broker calls transient (-EAGAIN: LOADING after a
 * restart), until it is answered or the token fires. With once, makes a
 * single attempt (destroy). Returns 0 with *out, the token's cause, or the
 * broker's refusal.
 */
static int exec_cmd(struct cpat_redis_source *s, struct cpat_token *tok,
		    int once, int argc, const char **argv, const size_t *lens,
		    redisReply **out)
{
	int64_t backoff = s->rmin;
	for (;;) {
		int rc = rconn_ensure(&s->conn, tok, s->rmin, s->rmax,
				      once ? cpat_now_ns() : CPAT_FOREVER);
		publish_conn_stats(s);
		if (rc != 0) {
			note_error(s, rc);
			return rc;
		}
		rc = rconn_cmd(&s->conn, argc, argv, lens, out);
		if (rc == 0)
			return 0;
		note_error(s, rc);
		if (!s->conn.c) {
			pthread_mutex_lock(&s->mu);
			s->st.io_errors++;
			pthread_mutex_unlock(&s->mu);
		} else if (rc != -EAGAIN) {
			return rc;
		} else {
			int st = rsleep_until(tok, cpat_now_ns() + backoff);
			if (st != 0)
				return st;
			backoff = backoff * 2 > s->rmax ? s->rmax : backoff * 2;
		}
		if (once)
			return rc;
	}
}

static void free_held(struct cpat_redis_source *s)
{
	if (s->held_root)
		freeReplyObject(s->held_root);
	s->held_root = s->held = NULL;
	s->held_pos = 0;
}

static const char *id_text(struct cpat_redis_source *s, size_t k,
			   const struct cpat_redis_id *id, size_t *len)
{
	char *t = s->idtext + k * CPAT_REDIS_ID_MAX;
	*len = (size_t)cpat_redis_id_format(id, t, CPAT_REDIS_ID_MAX);
	return t;
}

/* Sends the queued acknowledgements as one XACK. */
static int flush_locked(struct cpat_redis_source *s, struct cpat_token *tok,
			int once)
{
	pthread_mutex_lock(&s->mu);
	memcpy(s->sendbuf + s->nsend, s->ackq, s->nackq * sizeof *s->ackq);
	s->nsend += s->nackq;
	s->nackq = 0;
	pthread_mutex_unlock(&s->mu);
	if (s->nsend == 0)
		return 0;
	s->argv[0] = "XACK";
	s->argv[1] = s->stream;
	s->argv[2] = s->group;
	for (int i = 0; i < 3; i++)
		s->argl[i] = strlen(s->argv[i]);
	for (size_t k = 0; k < s->nsend; k++)
		s->argv[3 + k] = id_text(s, k, &s->sendbuf[k], &s->argl[3 + k]);
	redisReply *r;
	int rc = exec_cmd(s, tok, once, (int)(3 + s->nsend), s->argv, s->argl,
			  &r);
	if (rc != 0)
		return rc; /* kept in sendbuf, sent again next time */
	freeReplyObject(r);
	pthread_mutex_lock(&s->mu);
	for (size_t k = 0; k < s->nsend; k++) {
		size_t i = set_find(s, &s->sendbuf[k]);
		if (i != SIZE_MAX)
			set_remove_at(s, i);
	}
	s->st.acked += s->nsend;
	s->st.xack_calls++;
	done_in_flight(s, s->nsend);
	pthread_mutex_unlock(&s->mu);
	s->nsend = 0;
	return 0;
}

static int create_group(struct cpat_redis_source *s, struct cpat_token *tok,
			int once)
{
	const char *av[6] = {"XGROUP", "CREATE",    s->stream,
			     s->group, s->start_id, "MKSTREAM"};
	redisReply *r;
	int rc = exec_cmd(s, tok, once, 6, av, NULL, &r);
	if (rc == 0) {
		freeReplyObject(r);
		return 0;
	}
	/* The group exists already: another consumer made it. */
	if (rc == -EINVAL && !strncmp(s->conn.err, "BUSYGROUP", 9))
		return 0;
	return rc;
}

/* A command on the group; if the group vanished (the stream was deleted,
 * or a server restarted without its data) it is made again once. */
static int group_cmd(struct cpat_redis_source *s, struct cpat_token *tok,
		     int argc, const char **argv, const size_t *lens,
		     redisReply **out)
{
	int rc = exec_cmd(s, tok, 0, argc, argv, lens, out);
	if (rc == -EINVAL && !strncmp(s->conn.err, "NOGROUP", 7)) {
		rc = create_group(s, tok, 0);
		if (rc == 0)
			rc = exec_cmd(s, tok, 0, argc, argv, lens, out);
	}
	return rc;
}

/* Copies an entry to the dead-letter stream, then acknowledges it. Two
 * round trips, so that an XADD the broker refuses never lets the XACK go
 * out: the entry then stays pending and is tried again later. */
static void dead_letter(struct cpat_redis_source *s, struct cpat_token *tok,
			const struct cpat_redis_id *id,
			const redisReply *fields, const char *reason,
			uint64_t deliveries, int decode_failed)
{
	size_t idlen, argc = 0;
	const char *idt = id_text(s, 0, id, &idlen);
	char dl[24];
	snprintf(dl, sizeof dl, "%llu", (unsigned long long)deliveries);
	s->argv[argc] = "XADD", s->argl[argc++] = 4;
	s->argv[argc] = s->dlq, s->argl[argc++] = strlen(s->dlq);
	s->argv[argc] = "*", s->argl[argc++] = 1;
	if (fields && fields->type == REDIS_REPLY_ARRAY &&
	    fields->elements % 2 == 0 &&
	    fields->elements / 2 <= s->max_fields) {
		for (size_t i = 0; i < fields->elements; i++) {
			const redisReply *e = fields->element[i];
			s->argv[argc] = e->str ? e->str : "";
			s->argl[argc++] = e->str ? e->len : 0;
		}
	}
	s->argv[argc] = "reason", s->argl[argc++] = 6;
	s->argv[argc] = reason, s->argl[argc++] = strlen(reason);
	s->argv[argc] = "source-id", s->argl[argc++] = 9;
	s->argv[argc] = idt, s->argl[argc++] = idlen;
	s->argv[argc] = "deliveries", s->argl[argc++] = 10;
	s->argv[argc] = dl, s->argl[argc++] = strlen(dl);
	redisReply *r;
	int rc = exec_cmd(s, tok, 0, (int)argc, s->argv, s->argl, &r);
	if (rc == 0) {
		freeReplyObject(r);
		const char *av[4] = {"XACK", s->stream, s->group, idt};
		size_t al[4] = {4, strlen(s->stream), strlen(s->group), idlen};
		rc = exec_cmd(s, tok, 0, 4, av, al, &r);
		if (rc == 0)
			freeReplyObject(r);
	}
	pthread_mutex_lock(&s->mu);
	if (rc == 0) {
		s->st.dead_lettered++;
		s->st.decode_failed += decode_failed != 0;
	}
	/* Either way it leaves this source: done, or pending for a retry. */
	done_in_flight(s, 1);
	pthread_mutex_unlock(&s->mu);
}

/* Hands out the next good entry of the held reply: 1, or 0 when none is
 * left (every bad one on the way was dead-lettered). */
static int take_held(struct cpat_redis_source *s, struct cpat_token *tok,
		     void *item, struct cpat_redis_id *out)
{
	while (s->held && s->held_pos < s->held->elements) {
		size_t pos = s->held_pos++;
		const redisReply *e = s->held->element[pos];
		uint64_t before = s->held_claimed ? s->held_deliv[pos] : 0;
		struct cpat_redis_id id;
		if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
		    e->element[0]->type != REDIS_REPLY_STRING ||
		    cpat_redis_id_parse(e->element[0]->str, e->element[0]->len,
					&id) != 0) {
			/* Nothing to acknowledge it by: it stays pending. */
			pthread_mutex_lock(&s->mu);
			done_in_flight(s, 1);
			pthread_mutex_unlock(&s->mu);
			continue;
		}
		const redisReply *f = e->element[1];
		char reason[96];
		if (s->max_deliveries && before >= s->max_deliveries) {
			snprintf(reason, sizeof reason, "delivered %llu times",
				 (unsigned long long)before);
			dead_letter(s, tok, &id, f, reason, before, 0);
			continue;
		}
		if (f->type == REDIS_REPLY_NIL) {
			/* Deleted from the stream (trimmed) while pending:
			 * nothing to process, clear it from the group. */
			dead_letter(s, tok, &id, NULL,
				    "deleted from the stream", before + 1, 0);
			continue;
		}
		if (rfields_view(&s->fields, f) != 0) {
			dead_letter(s, tok, &id, f,
				    "malformed or more than max_fields fields",
				    before + 1, 1);
			continue;
		}
		int rc = s->decode(&id, &s->fields, item, s->decode_arg);
		if (rc < 0) {
			snprintf(reason, sizeof reason, "decode: %s",
				 cpat_strerror(rc));
			dead_letter(s, tok, &id, f, reason, before + 1, 1);
			continue;
		}
		pthread_mutex_lock(&s->mu);
		set_insert(s, &id);
		s->st.delivered++;
		pthread_mutex_unlock(&s->mu);
		if (out)
			*out = id;
		if (s->held_pos == s->held->elements)
			free_held(s);
		return 1;
	}
	free_held(s);
	return 0;
}

/* Takes ownership of a reply whose array @p arr holds entries. */
static void hold(struct cpat_redis_source *s, redisReply *root, redisReply *arr,
		 int claimed)
{
	s->held_root = root;
	s->held = arr;
	s->held_pos = 0;
	s->held_claimed = claimed;
	pthread_mutex_lock(&s->mu);
	note_in_flight(s, arr->elements);
	if (claimed)
		s->st.claimed += arr->elements;
	else
		s->st.read += arr->elements;
	pthread_mutex_unlock(&s->mu);
	s->last_progress_ns = cpat_now_ns();
}

static int read_new(struct cpat_redis_source *s, struct cpat_token *tok,
		    size_t count)
{
	char cnt[24], blk[24];
	snprintf(cnt, sizeof cnt, "%zu", count);
	snprintf(blk, sizeof blk, "%lld", (long long)(s->block_ns / CPAT_MSEC));
	const char *av[11] = {"XREADGROUP", "GROUP",   s->group, s->consumer,
			      "COUNT",      cnt,       "BLOCK",  blk,
			      "STREAMS",    s->stream, ">"};
	redisReply *r;
	int rc = group_cmd(s, tok, 11, av, NULL, &r);
	if (rc != 0)
		return rc;
	/* nil: the block time passed with nothing new. */
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
	    r->element[0]->type == REDIS_REPLY_ARRAY &&
	    r->element[0]->elements == 2 &&
	    r->element[0]->element[1]->type == REDIS_REPLY_ARRAY &&
	    r->element[0]->element[1]->elements > 0) {
		hold(s, r, r->element[0]->element[1], 0);
		return 1;
	}
	freeReplyObject(r);
	return 0;
}

/* Claims up to @p room entries idle longer than claim_idle_ns, skipping
 * those this source holds: 1 if some are now held, 0 if none. */
static int claim_idle(struct cpat_redis_source *s, struct cpat_token *tok,
		      size_t room)
{
	if (room > s->batch)
		room = s->batch;
	char idle[24], cnt[24];
	snprintf(idle, sizeof idle, "%lld",
		 (long long)(s->claim_idle_ns / CPAT_MSEC));
	pthread_mutex_lock(&s->mu);
	/* Ask for as many as we might skip (our own) plus room. */
	size_t ask = room +
		     (s->st.in_flight < s->bound ? s->st.in_flight : s->bound);
	pthread_mutex_unlock(&s->mu);
	snprintf(cnt, sizeof cnt, "%zu", ask);
	const char *av[8] = {"XPENDING", s->stream, s->group, "IDLE",
			     idle,       "-",       "+",      cnt};
	redisReply *r;
	int rc = group_cmd(s, tok, 8, av, NULL, &r);
	if (rc != 0)
		return rc;
	size_t k = 0;
	if (r->type == REDIS_REPLY_ARRAY) {
		pthread_mutex_lock(&s->mu);
		for (size_t i = 0; i < r->elements && k < room; i++) {
			const redisReply *p = r->element[i];
			struct cpat_redis_id id;
			if (p->type != REDIS_REPLY_ARRAY || p->elements < 4 ||
			    p->element[0]->type != REDIS_REPLY_STRING ||
			    cpat_redis_id_parse(p->element[0]->str,
						p->element[0]->len, &id) != 0 ||
			    set_find(s, &id) != SIZE_MAX)
				continue;
			s->cand[k] = id;
			s->cand_deliv[k] =
				p->element[3]->type == REDIS_REPLY_INTEGER
					? (uint64_t)p->element[3]->integer
					: 0;
			k++;
		}
		pthread_mutex_unlock(&s->mu);
	}
	freeReplyObject(r);
	if (k == 0)
		return 0;
	size_t argc = 0;
	s->argv[argc] = "XCLAIM", s->argl[argc++] = 6;
	s->argv[argc] = s->stream, s->argl[argc++] = strlen(s->stream);
	s->argv[argc] = s->group, s->argl[argc++] = strlen(s->group);
	s->argv[argc] = s->consumer, s->argl[argc++] = strlen(s->consumer);
	s->argv[argc] = idle, s->argl[argc++] = strlen(idle);
	for (size_t i = 0; i < k; i++) {
		s->argv[argc] = id_text(s, i, &s->cand[i], &s->argl[argc]);
		argc++;
	}
	rc = group_cmd(s, tok, (int)argc, s->argv, s->argl, &r);
	if (rc != 0)
		return rc;
	if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
		freeReplyObject(r);
		return 0; /* another consumer was first */
	}
	/* The deliveries of each claimed entry, by its ID. */
	for (size_t i = 0; i < r->elements; i++) {
		const redisReply *e = r->element[i];
		struct cpat_redis_id id;
		s->held_deliv[i] = 0;
		if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
		    e->element[0]->type == REDIS_REPLY_STRING &&
		    cpat_redis_id_parse(e->element[0]->str, e->element[0]->len,
					&id) == 0)
			for (size_t j = 0; j < k; j++)
				if (id_eq(&id, &s->cand[j]))
					s->held_deliv[i] = s->cand_deliv[j];
	}
	hold(s, r, r, 1);
	return 1;
}

int cpat_redis_source_next(struct cpat_redis_source *s, void *item,
			   struct cpat_redis_id *id, struct cpat_token *tok)
{
	if (!s || !item)
		return -EINVAL;
	pthread_mutex_lock(&s->io_mu);
	int rc;
	for (;;) {
		rc = tok ? cpat_token_status(tok) : 0;
		if (rc != 0)
			break;
		rc = flush_locked(s, tok, 0);
		if (rc != 0)
			break;
		if (take_held(s, tok, item, id)) {
			rc = 1;
			break;
		}
		pthread_mutex_lock(&s->mu);
		size_t in_flight = s->st.in_flight;
		size_t queued = s->nackq;
		if (in_flight >= s->bound && queued == 0)
			rcond_wait_until(&s->cv, &s->mu,
					 cpat_now_ns() + 20 * CPAT_MSEC);
		pthread_mutex_unlock(&s->mu);
		if (in_flight >= s->bound)
			continue; /* flush what came, or look at the token */
		size_t room = s->bound - in_flight;
		int64_t now = cpat_now_ns();
		if (in_flight > 0)
			s->last_progress_ns = now;
		if (s->claim_idle_ns > 0 && now >= s->next_claim_ns) {
			s->next_claim_ns = now + s->claim_interval_ns;
			rc = claim_idle(s, tok, room);
			if (rc < 0)
				break;
			if (rc > 0)
				continue;
		}
		if (s->idle_end_ns > 0 && in_flight == 0 &&
		    now - s->last_progress_ns >= s->idle_end_ns) {
			rc = 0;
			break;
		}
		rc = read_new(s, tok, room < s->batch ? room : s->batch);
		if (rc < 0)
			break;
	}
	pthread_mutex_unlock(&s->io_mu);
	return rc;
}

int cpat_redis_source_flush(struct cpat_redis_source *s, struct cpat_token *tok)
{
	if (!s)
		return -EINVAL;
	pthread_mutex_lock(&s->io_mu);
	int rc = flush_locked(s, tok, 0);
	pthread_mutex_unlock(&s->io_mu);
	return rc;
}

size_t cpat_redis_source_buffered(struct cpat_redis_source *s)
{
	if (!s)
		return 0;
	pthread_mutex_lock(&s->io_mu);
	size_t n = s->held ? s->held->elements - s->held_pos : 0;
	pthread_mutex_unlock(&s->io_mu);
	return n;
}

/* ---- pipeline glue ------------------------------------------------------- */

static int pipeline_source(void *out, struct cpat_source_ctx *ctx)
{
	struct cpat_redis_source *s = cpat_source_arg(ctx);
	void *handle = cpat_source_ack(ctx);
	struct cpat_redis_id id;
	/* With no decoded entry left, next() goes to the broker and may wait
	 * there (a blocking read, a wait for acks at the bound): the items
	 * the pipeline holds back for a fast source must not wait with it,
	 * or a quiet stream would leave them, and their entries, in flight
	 * for as long as it stays quiet. */
	if (cpat_redis_source_buffered(s) == 0 && cpat_source_flush(ctx) != 0)
		return -ECANCELED;
	int rc = cpat_redis_source_next(s, out, &id, cpat_source_token(ctx));
	if (rc == 1 && handle)
		memcpy(handle, &id, sizeof id);
	return rc;
}

int cpat_redis_source_attach(struct cpat_redis_source *s,
			     struct cpat_pipeline *p)
{
	if (!s || !p)
		return -EINVAL;
	struct cpat_source_opts o;
	cpat_source_opts_init(&o);
	o.fn = pipeline_source;
	o.arg = s;
	o.ack_size = sizeof(struct cpat_redis_id);
	o.ack = cpat_redis_source_ack_fn;
	o.ack_arg = s;
	o.max_unacked = s->bound;
	return cpat_pipeline_set_source(p, &o);
}

/* ---- pool feeder --------------------------------------------------------- */

static int feed_task(void *arg, struct cpat_token *tok)
{
	struct fslot *sl = arg;
	struct cpat_redis_source *s = sl->s;
	return sl->fn(s->slot_items + sl->idx * s->item_size, &sl->id, tok,
		      sl->arg);
}

/* The task's done is its acknowledgement: exactly once per accepted task,
 * with what it returned, or -ECANCELED if the pool discarded it. Only a
 * success acknowledges; anything else leaves the entry pending. */
static void feed_done(void *arg, int rc)
{
	struct fslot *sl = arg;
	struct cpat_redis_source *s = sl->s;
	struct cpat_redis_id id = sl->id;
	pthread_mutex_lock(&s->mu);
	s->free_slots[s->nfree++] = sl->idx;
	pthread_mutex_unlock(&s->mu);
	complete(s, (const unsigned char *)&id, 1, rc == 0);
}

int cpat_redis_source_feed_pool(struct cpat_redis_source *s,
				struct cpat_pool *pool, cpat_redis_task_fn fn,
				void *arg, struct cpat_token *tok)
{
	if (!s || !pool || !fn)
		return -EINVAL;
	for (;;) {
		/* A slot is free whenever fewer than bound entries are in
		 * flight, which next() waits for anyway; wait here too in
		 * case the dones lag behind the acks. */
		pthread_mutex_lock(&s->mu);
		while (s->nfree == 0) {
			int st = tok ? cpat_token_status(tok) : 0;
			if (st != 0) {
				pthread_mutex_unlock(&s->mu);
				return st;
			}
			rcond_wait_until(&s->cv, &s->mu,
					 cpat_now_ns() + 20 * CPAT_MSEC);
		}
		size_t idx = s->free_slots[--s->nfree];
		pthread_mutex_unlock(&s->mu);
		struct fslot *sl = &s->slots[idx];
		sl->s = s;
		sl->fn = fn;
		sl->arg = arg;
		sl->idx = idx;
		int rc = cpat_redis_source_next(
			s, s->slot_items + idx * s->item_size, &sl->id, tok);
		if (rc == 1) {
			struct cpat_task t = {
				.fn = feed_task, .done = feed_done, .arg = sl};
			rc = cpat_pool_submit(pool, &t, tok);
			if (rc == 0)
				continue;
			/* Not accepted: done never runs; nack it here. */
			complete(s, (const unsigned char *)&sl->id, 1, 0);
		}
		pthread_mutex_lock(&s->mu);
		s->free_slots[s->nfree++] = idx;
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
		return rc;
	}
}

/* ---- life ---------------------------------------------------------------- */

void cpat_redis_source_opts_init(struct cpat_redis_source_opts *o)
{
	if (!o)
		return;
	memset(o, 0, sizeof *o);
	o->start_id = "0";
	o->batch = 32;
	o->max_unacked = 256;
	o->max_fields = 64;
	o->block_ns = 100 * CPAT_MSEC;
	o->claim_idle_ns = 30 * CPAT_SEC;
	o->max_deliveries = 5;
	o->connect_timeout_ns = CPAT_SEC;
	o->io_timeout_ns = 2 * CPAT_SEC;
	o->reconnect_min_ns = 10 * CPAT_MSEC;
	o->reconnect_max_ns = CPAT_SEC;
}

int cpat_redis_source_stats(struct cpat_redis_source *s,
			    struct cpat_redis_source_stats *st)
{
	if (!s || !st)
		return -EINVAL;
	pthread_mutex_lock(&s->mu);
	*st = s->st;
	pthread_mutex_unlock(&s->mu);
	return 0;
}

int cpat_redis_source_last_error(struct cpat_redis_source *s, char *buf,
				 size_t len)
{
	if (!s || (!buf && len > 0))
		return -EINVAL;
	return rconn_last_error(&s->conn, buf, len);
}

static void source_free(struct cpat_redis_source *s)
{
	free_held(s);
	rconn_fini(&s->conn);
	free(s->stream);
	free(s->group);
	free(s->consumer);
	free(s->dlq);
	free(s->start_id);
	free(s->held_deliv);
	free(s->cand);
	free(s->cand_deliv);
	free(s->sendbuf);
	rfields_free(&s->fields);
	free(s->argv);
	free(s->argl);
	free(s->idtext);
	free(s->set);
	free(s->ackq);
	free(s->slots);
	free(s->slot_items);
	free(s->free_slots);
	pthread_mutex_destroy(&s->io_mu);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	free(s);
}

void cpat_redis_source_destroy(struct cpat_redis_source *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->io_mu);
	flush_locked(s, NULL, 1);
	pthread_mutex_unlock(&s->io_mu);
	source_free(s);
}

static int bad_opt(const struct cpat_redis_source_opts *o, const char *what)
{
	if (o && o->errbuf && o->errlen)
		snprintf(o->errbuf, o->errlen, "bad option: %s", what);
	return -EINVAL;
}

int cpat_redis_source_create(struct cpat_redis_source **out,
			     const struct cpat_redis_source_opts *o)
{
	if (out)
		*out = NULL;
	if (!out || !o)
		return bad_opt(o, "NULL");
	if (!o->stream || !o->stream[0] || !o->group || !o->group[0] ||
	    !o->consumer || !o->consumer[0])
		return bad_opt(o, "stream, group and consumer are required");
	if (!o->item_size || !o->decode)
		return bad_opt(o, "item_size and decode are required");
	if (!o->batch || !o->max_unacked || !o->max_fields ||
	    o->max_unacked > (1u << 24) || o->max_fields > 4096)
		return bad_opt(o,
			       "batch, max_unacked or max_fields out of range");
	if (o->block_ns < CPAT_MSEC || o->block_ns > CPAT_SEC)
		return bad_opt(o, "block_ns must be 1 ms .. 1 s");
	if (o->claim_idle_ns < 0 || o->claim_interval_ns < 0 ||
	    o->idle_end_ns < 0 || o->connect_timeout_ns <= 0 ||
	    o->io_timeout_ns <= 0 || o->reconnect_min_ns <= 0 ||
	    o->reconnect_max_ns < o->reconnect_min_ns)
		return bad_opt(o, "a time is out of range");
	struct cpat_redis_source *s = calloc(1, sizeof *s);
	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->io_mu, NULL);
	pthread_mutex_init(&s->mu, NULL);
	rcond_init(&s->cv);
	int rc = rconn_init(&s->conn, o->url);
	if (rc != 0) {
		rconn_copy_error(&s->conn, o->errbuf, o->errlen);
		source_free(s);
		return rc;
	}
	s->conn.connect_timeout_ns = o->connect_timeout_ns;
	s->conn.io_timeout_ns = o->block_ns + o->io_timeout_ns;
	s->item_size = o->item_size;
	s->batch = o->batch < o->max_unacked ? o->batch : o->max_unacked;
	s->bound = o->max_unacked;
	s->max_fields = o->max_fields;
	s->decode = o->decode;
	s->decode_arg = o->decode_arg;
	s->block_ns = o->block_ns;
	s->claim_idle_ns = o->claim_idle_ns;
	s->claim_interval_ns = o->claim_interval_ns ? o->claim_interval_ns
						    : o->claim_idle_ns / 4;
	if (s->claim_interval_ns < 10 * CPAT_MSEC)
		s->claim_interval_ns = 10 * CPAT_MSEC;
	s->idle_end_ns = o->idle_end_ns;
	s->rmin = o->reconnect_min_ns;
	s->rmax = o->reconnect_max_ns;
	s->max_deliveries = o->max_deliveries;
	s->stream = rdup(o->stream);
	s->group = rdup(o->group);
	s->consumer = rdup(o->consumer);
	s->start_id = rdup(o->start_id ? o->start_id : "0");
	if (o->dead_letter) {
		s->dlq = rdup(o->dead_letter);
	} else if (s->stream && (s->dlq = malloc(strlen(s->stream) + 6))) {
		strcpy(s->dlq, s->stream);
		strcat(s->dlq, ":dead");
	}
	size_t cap = 16;
	while (cap < 2 * s->bound)
		cap *= 2;
	s->set_mask = cap - 1;
	s->set = calloc(cap, sizeof *s->set);
	/* XACK of bound IDs; XADD of a dead letter; XCLAIM of a batch. */
	s->argcap = s->bound + 3;
	if (2 * s->max_fields + 12 > s->argcap)
		s->argcap = 2 * s->max_fields + 12;
	if (s->batch + 8 > s->argcap)
		s->argcap = s->batch + 8;
	s->argv = calloc(s->argcap, sizeof *s->argv);
	s->argl = calloc(s->argcap, sizeof *s->argl);
	s->idtext = calloc(s->argcap, CPAT_REDIS_ID_MAX);
	s->held_deliv = calloc(s->batch, sizeof *s->held_deliv);
	s->cand = calloc(s->batch, sizeof *s->cand);
	s->cand_deliv = calloc(s->batch, sizeof *s->cand_deliv);
	s->sendbuf = calloc(s->bound, sizeof *s->sendbuf);
	s->ackq = calloc(s->bound, sizeof *s->ackq);
	s->slots = calloc(s->bound, sizeof *s->slots);
	s->slot_items = calloc(s->bound, s->item_size);
	s->free_slots = calloc(s->bound, sizeof *s->free_slots);
	if (!s->stream || !s->group || !s->consumer || !s->start_id ||
	    !s->dlq || !s->set || !s->argv || !s->argl || !s->idtext ||
	    !s->held_deliv || !s->cand || !s->cand_deliv || !s->sendbuf ||
	    !s->ackq || !s->slots || !s->slot_items || !s->free_slots ||
	    rfields_alloc(&s->fields, s->max_fields, 0) != 0) {
		source_free(s);
		return -ENOMEM;
	}
	for (size_t i = 0; i < s->bound; i++)
		s->free_slots[i] = s->bound - 1 - i;
	s->nfree = s->bound;
	pthread_mutex_lock(&s->io_mu);
	rc = rconn_connect(&s->conn);
	if (rc == 0)
		rc = create_group(s, NULL, 1);
	publish_conn_stats(s);
	s->last_progress_ns = cpat_now_ns();
	pthread_mutex_unlock(&s->io_mu);
	if (rc != 0) {
		rconn_copy_error(&s->conn, o->errbuf, o->errlen);
		source_free(s);
		return rc;
	}
	*out = s;
	return 0;
}
