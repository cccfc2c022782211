/*
 * The SQLite store: one table, one transaction per batch.
 *
 *   results(id TEXT PRIMARY KEY,  -- the stream entry's ID, "ms-seq"
 *           order_id, user, qty, amount, total, risk, sent_ns, saved_ns)
 *
 * - WAL mode: readers (a report, the tests) never block the writer, and a
 *   commit appends to the log instead of rewriting pages in place.
 * - synchronous=FULL by default: in WAL mode the log is fsync'ed at every
 *   commit, so a batch that COMMIT reported is on disk before its messages
 *   are acknowledged to the broker. With NORMAL (--synchronous normal) a
 *   commit survives the process dying (SIGKILL) but the last ones can be
 *   lost when the machine loses power, after the broker had forgotten
 *   them: those messages would be gone. One fsync per batch of 100 is
 *   cheap; losing acknowledged messages is not.
 * - INSERT OR IGNORE keyed by the entry ID: a message delivered twice (its
 *   consumer died after the commit, before the XACK) is stored once.
 * - BEGIN IMMEDIATE: the write lock is taken first, so consumer processes
 *   sharing the file wait for each other (busy timeout) instead of failing
 *   on a lock upgrade.
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "rt.h"

struct rt_store {
	sqlite3 *db;
	sqlite3_stmt *ins;
};

static int map_rc(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW:
		return 0;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_CANTOPEN:
	case SQLITE_PERM:
		return -EACCES;
	case SQLITE_IOERR:
		return -EIO;
	default:
		return -EPROTO;
	}
}

int rt_store_transient(int rc)
{
	return rc == -EBUSY || rc == -ENOSPC || rc == -EROFS || rc == -EACCES ||
	       rc == -EIO;
}

static int fail(struct rt_store *s, int rc, const char *what, char *err,
		size_t errlen)
{
	snprintf(err, errlen, "%s: %s", what,
		 s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
	return map_rc(rc) ? map_rc(rc) : -EPROTO;
}

static int exec(struct rt_store *s, const char *sql, char *err, size_t errlen)
{
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
	return rc == SQLITE_OK ? 0 : fail(s, rc, sql, err, errlen);
}

/* exec() for the set-up statements, which several processes starting at
 * once on a new file contend for (switching to WAL needs the file to
 * itself, and SQLite's busy handler is not called there): tried again
 * for up to @p busy_ms while the file is busy. */
static int exec_setup(struct rt_store *s, const char *sql, int busy_ms,
		      char *err, size_t errlen)
{
	for (int waited = 0;; waited += 10) {
		int e = exec(s, sql, err, errlen);
		if (e != -EBUSY || waited >= busy_ms)
			return e;
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

int rt_store_open(struct rt_store **out, const char *path, int sync_normal,
		  int busy_ms, char *err, size_t errlen)
{
	*out = NULL;
	struct rt_store *s = calloc(1, sizeof *s);
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	int rc = sqlite3_open_v2(path, &s->db,
				 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
					 SQLITE_OPEN_NOMUTEX,
				 NULL);
	int e = rc == SQLITE_OK ? 0 : fail(s, rc, path, err, errlen);
	if (!e && sqlite3_busy_timeout(s->db, busy_ms) != SQLITE_OK)
		e = fail(s, SQLITE_ERROR, "busy_timeout", err, errlen);
	if (!e)
		e = exec_setup(s, "PRAGMA journal_mode=WAL", busy_ms, err,
			       errlen);
	if (!e)
		e = exec_setup(s,
			       sync_normal ? "PRAGMA synchronous=NORMAL"
					   : "PRAGMA synchronous=FULL",
			       busy_ms, err, errlen);
	if (!e)
		e = exec_setup(
			s,
			"CREATE TABLE IF NOT EXISTS results ("
			"id TEXT PRIMARY KEY, order_id INTEGER, user INTEGER, "
			"qty INTEGER, amount REAL, total REAL, risk INTEGER, "
			"sent_ns INTEGER, saved_ns INTEGER) WITHOUT ROWID",
			busy_ms, err, errlen);
	if (!e) {
		rc = sqlite3_prepare_v2(s->db,
					"INSERT OR IGNORE INTO results VALUES "
					"(?,?,?,?,?,?,?,?,?)",
					-1, &s->ins, NULL);
		if (rc != SQLITE_OK)
			e = fail(s, rc, "prepare", err, errlen);
	}
	if (e) {
		rt_store_close(s);
		return e;
	}
	*out = s;
	return 0;
}

int rt_store_save(struct rt_store *s, const struct rt_rec *const *recs,
		  size_t n, long *inserted, char *err, size_t errlen)
{
	*inserted = 0;
	int e = exec(s, "BEGIN IMMEDIATE", err, errlen);
	if (e)
		return e;
	int64_t now = rt_wall_ns();
	long added = 0;
	for (size_t i = 0; i < n && !e; i++) {
		const struct rt_rec *r = recs[i];
		char id[CPAT_REDIS_ID_MAX];
		int len = cpat_redis_id_format(&r->id, id, sizeof id);
		int rc = len < 0 ? SQLITE_MISUSE
				 : sqlite3_bind_text(s->ins, 1, id, len,
						     SQLITE_TRANSIENT);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s->ins, 2, r->order_id);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s->ins, 3, r->user);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int(s->ins, 4, r->qty);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_double(s->ins, 5, r->amount);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_double(s->ins, 6, r->total);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int(s->ins, 7, r->risk);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s->ins, 8, r->sent_ns);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(s->ins, 9, now);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(s->ins);
		if (rc == SQLITE_DONE)
			added += sqlite3_changes(s->db);
		else
			e = fail(s, rc, "INSERT", err, errlen);
		sqlite3_reset(s->ins);
	}
	if (!e)
		e = exec(s, "COMMIT", err, errlen);
	if (e && !sqlite3_get_autocommit(s->db)) {
		/* Still in the transaction (a failed COMMIT may leave it
		 * open): roll back so the connection can be used again. */
		char ignore[64];
		(void)exec(s, "ROLLBACK", ignore, sizeof ignore);
	}
	if (!e)
		*inserted = added;
	return e;
}

void rt_store_close(struct rt_store *s)
{
	if (!s)
		return;
	sqlite3_finalize(s->ins);
	sqlite3_close(s->db);
	free(s);
}
