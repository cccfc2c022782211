/**
 * @file cpattern/redis.h
 * @brief Beyond one machine: pipelines and pools fed from a Redis Streams
 * consumer group, and a stream sink (the optional library
 * `cpattern-redis`, built when hiredis is found).
 *
 * Not included by `cpattern.h`: include this header and link
 * `cpattern-redis` (pkg-config `cpattern-redis`, Meson dependency
 * `cpattern-redis`), which links hiredis and the core library.
 *
 * **Source.** A cpat_redis_source is one consumer of a consumer group: it
 * reads entries of a stream with XREADGROUP (creating the group, and the
 * stream, if missing), decodes each into a fixed-size item with the user's
 * decode callback, and hands them out one at a time with
 * cpat_redis_source_next(). Every entry handed out is *in flight* until
 * the caller completes it: cpat_redis_source_ack() (it was processed:
 * XACK, sent in batches) or cpat_redis_source_nack() (it was not: it stays
 * pending in the group and is delivered again later, here or to another
 * consumer). At most max_unacked entries are in flight at once (read and
 * not yet acknowledged to the broker): at the bound the source stops
 * reading and waits for completions, so it never buffers without limit.
 * The same source feeds a pipeline (cpat_redis_source_attach(): the entry
 * ID is the item's ack handle) or a worker pool
 * (cpat_redis_source_feed_pool(): a task's `done` is its ack).
 *
 * **Reclaim and dead letters.** Entries that any consumer of the group
 * (this one included, after a nack) left pending longer than claim_idle_ns
 * are claimed (XPENDING with IDLE, then XCLAIM) and handed out again, so
 * the work of a crashed process continues elsewhere. An entry already
 * delivered max_deliveries times is not handed out again: it is copied to
 * the dead-letter stream (its fields plus `reason`, `source-id`,
 * `deliveries`) and acknowledged, so a poison message cannot loop. An entry
 * the decode callback refuses goes there at once.
 *
 * **Delivery guarantees.** At-least-once from the broker to the caller:
 * an entry leaves the group's pending list only when it was acknowledged
 * (or dead-lettered); one that a consumer never completed, because it
 * crashed, was cancelled or failed, is delivered again. It can therefore be
 * processed more than once (a consumer crashed after processing it but
 * before its XACK reached the server, or an entry took longer than
 * claim_idle_ns and was claimed by another consumer meanwhile). A sink that
 * is idempotent by entry ID (a set of IDs, an upsert keyed by it) makes the
 * effect exactly once; nothing here gives exactly-once processing across
 * processes.
 *
 * **Failures.** A lost connection is re-established with exponential
 * backoff (reconnect_min_ns doubling to reconnect_max_ns), cancellable by
 * the caller's token; entries in flight stay valid (an XACK may go out on
 * any connection) and acknowledgements that could not be sent are kept and
 * sent after the reconnect. cpat_redis_source_stats() counts reconnects,
 * failed attempts and the last error. On cancellation the source stops
 * reading and returns: what was not completed stays pending for the group.
 *
 * **Errors.** As everywhere in the library, 0 or a negative errno:
 *
 * | code          | here                                                    |
 * |---------------|---------------------------------------------------------|
 * | `-EINVAL`     | bad argument or URL; the broker refused a command       |
 * |               | (ERR, WRONGTYPE, NOAUTH, WRONGPASS, NOGROUP, ...)        |
 * | `-ENOMEM`     | allocation failed; the broker is out of memory (OOM)    |
 * | `-EAGAIN`     | the broker is busy for now (LOADING, BUSY, TRYAGAIN)    |
 * | `-ETIMEDOUT`  | connect or I/O timeout; the token's deadline            |
 * | `-ECANCELED`  | the token was cancelled                                 |
 * | `-EPIPE`      | cannot connect (refused, no such socket, unknown host)  |
 * |               | or the connection broke                                 |
 *
 * The broker's (or hiredis's) own message of the last error is kept:
 * cpat_redis_source_last_error(), cpat_redis_sink_last_error(), and for a
 * failed create the errbuf of the options.
 *
 * **Memory.** The module's own buffers are allocated at create, with
 * malloc() (cpat_set_allocator() does not reach it, nor hiredis). hiredis
 * allocates the replies it parses: per batch of entries, not per item.
 *
 * **Connections and threads.** Every object has one connection of its own,
 * used by one thread at a time (hiredis contexts are not thread-safe): a
 * source's by the thread in cpat_redis_source_next() (or flush), a sink's
 * by its caller. Acknowledgements only queue an ID and never touch the
 * network, so they may come from any thread.
 *
 * **URLs.** `redis://[[user]:password@]host[:port][/db]` (port 6379 and db
 * 0 by default; an IPv6 host in brackets) and `unix:///path/to/socket`
 * (or `unix:///path?db=N`). Credentials are sent with AUTH, a db other
 * than 0 with SELECT. TLS is not supported. A host name is resolved by the
 * system resolver, which connect_timeout_ns does not bound.
 *
 * @code
 * static int decode(const struct cpat_redis_id *id,
 *                   const struct cpat_redis_fields *f, void *item, void *arg) {
 *         const char *v; size_t n;
 *         if (cpat_redis_fields_find(f, "n", &v, &n) != 0 || n >= 20)
 *                 return -EINVAL;                  // poison: dead-letter it
 *         *(long *)item = strtol(v, NULL, 10);     // value is not
 * NUL-terminated return 0;
 * }
 * static int work(const void *item, const struct cpat_redis_id *id,
 *                 struct cpat_token *tok, void *arg) {
 *         printf("%ld\n", *(const long *)item);
 *         return 0;                                 // 0: acknowledge it
 * }
 *
 * struct cpat_redis_source_opts o;
 * cpat_redis_source_opts_init(&o);
 * o.url = "redis://localhost:6379"; o.stream = "jobs"; o.group = "workers";
 * o.consumer = "host-1"; o.item_size = sizeof(long); o.decode = decode;
 * struct cpat_redis_source *src;
 * if (cpat_redis_source_create(&src, &o) != 0) return 1;
 * struct cpat_pool *pool;
 * cpat_pool_create(&pool, NULL);
 * int rc = cpat_redis_source_feed_pool(src, pool, work, NULL, tok);  // until
 * tok fires cpat_pool_shutdown(pool, CPAT_POOL_DRAIN, CPAT_FOREVER, NULL);
 * cpat_pool_destroy(pool);
 * cpat_redis_source_destroy(src);               // sends the last XACKs
 * @endcode
 */
#ifndef CPATTERN_REDIS_H
#define CPATTERN_REDIS_H

#include "cpattern/common.h"
#include "cpattern/pipeline.h"
#include "cpattern/pool.h"
#include "cpattern/token.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A stream entry ID, `ms-seq`. The ack handle of a pipeline item. */
struct cpat_redis_id {
	uint64_t ms;  /**< milliseconds part */
	uint64_t seq; /**< sequence part */
};

/** Longest text form of an ID ("ms-seq") with its NUL. */
#define CPAT_REDIS_ID_MAX 42

/**
 * Writes @p id as "ms-seq" into @p buf, like snprintf(). Never blocks;
 * thread-safe.
 * @return the length of the text (at most #CPAT_REDIS_ID_MAX - 1);
 *         -EINVAL for NULL @p id, or NULL @p buf with @p len > 0.
 */
CPAT_API int cpat_redis_id_format(const struct cpat_redis_id *id, char *buf,
				  size_t len);

/**
 * Parses "ms-seq" (or "ms", seq 0) of @p len bytes. Never blocks;
 * thread-safe.
 * @return 0; -EINVAL for NULL arguments or text that is not an ID.
 */
CPAT_API int cpat_redis_id_parse(const char *text, size_t len,
				 struct cpat_redis_id *out);

/**
 * The fields of one entry (opaque): read by a decode callback, written by
 * an encode callback. Valid only during that call.
 */
struct cpat_redis_fields;

/** How many field/value pairs @p f holds (0 for NULL). Never blocks. */
CPAT_API size_t cpat_redis_fields_count(const struct cpat_redis_fields *f);

/**
 * Pair @p i of @p f. The strings are borrowed (valid during the callback)
 * and not NUL-terminated: use the lengths. Never blocks.
 * @return 0; -EINVAL for NULL @p f or @p i out of range (any of the out
 *         pointers may be NULL).
 */
CPAT_API int cpat_redis_fields_get(const struct cpat_redis_fields *f, size_t i,
				   const char **field, size_t *field_len,
				   const char **value, size_t *value_len);

/**
 * The value of the first field named @p name (NUL-terminated), borrowed
 * as for cpat_redis_fields_get(). Never blocks.
 * @return 0; -EINVAL for NULL arguments or no such field.
 */
CPAT_API int cpat_redis_fields_find(const struct cpat_redis_fields *f,
				    const char *name, const char **value,
				    size_t *value_len);

/**
 * Appends a pair to the entry an encode callback builds; both are copied
 * (into room made at create, so nothing is allocated). Never blocks.
 * @param f         the fields given to the encode callback.
 * @param field     the field name, NUL-terminated, not empty.
 * @param value     the value, @p value_len bytes (any bytes).
 * @param value_len its length.
 * @return 0; -EINVAL for NULL arguments, an empty name, fields given to a
 *         decode callback, or a pair that does not fit in max_fields /
 *         max_entry_bytes of the sink's options.
 */
CPAT_API int cpat_redis_fields_add(struct cpat_redis_fields *f,
				   const char *field, const void *value,
				   size_t value_len);

/**
 * Turns one entry into an item. Called on the thread in
 * cpat_redis_source_next(), for every entry before it is handed out.
 * @param id    the entry's ID.
 * @param f     its fields (borrowed, valid during the call).
 * @param item  item_size bytes to fill.
 * @param arg   cpat_redis_source_opts.decode_arg.
 * @return 0 for an item; a negative value when the entry can never become
 *         one (poison): it is dead-lettered at once, with this code's name
 *         as the reason, and never handed out.
 */
typedef int (*cpat_redis_decode_fn)(const struct cpat_redis_id *id,
				    const struct cpat_redis_fields *f,
				    void *item, void *arg);

/** Source options; fill with cpat_redis_source_opts_init() first. */
struct cpat_redis_source_opts {
	const char *url;      /**< the broker, see the URL forms above */
	const char *stream;   /**< stream key, required */
	const char *group;    /**< consumer group, required */
	const char *consumer; /**< this consumer's name, unique within the
				   group, required */
	const char *start_id; /**< where a group created here starts:
				   "0" the whole stream (default), "$" only
				   new entries */
	size_t item_size;     /**< bytes of a decoded item, > 0 */
	cpat_redis_decode_fn decode; /**< required */
	void *decode_arg;            /**< passed to decode */
	size_t batch;          /**< entries per read, COUNT (default 32) */
	size_t max_unacked;    /**< entries in flight at most (default 256) */
	size_t max_fields;     /**< pairs per entry at most; an entry with
				    more is dead-lettered (default 64) */
	int64_t block_ns;      /**< longest blocking read, 1 ms..1 s: the
				    token is answered within it (default
				    100 ms) */
	int64_t claim_idle_ns; /**< claim entries pending this long;
				    0: never claim (default 30 s) */
	int64_t claim_interval_ns; /**< look for them this often (default
				     claim_idle_ns / 4, at least 10 ms) */
	unsigned max_deliveries;   /**< dead-letter an entry delivered this many
				       times instead of claiming it again;
				       0: never (default 5) */
	const char *dead_letter;   /**< dead-letter stream (default
				       "<stream>:dead") */
	int64_t idle_end_ns;       /**< cpat_redis_source_next() reports the end
					of input (0) after this long with nothing
					to read or claim and nothing in flight;
					0: never, it waits for entries (default) */
	int64_t connect_timeout_ns; /**< per connection attempt (default 1 s) */
	int64_t io_timeout_ns; /**< per command beyond block_ns (default 2 s) */
	int64_t reconnect_min_ns; /**< first backoff (default 10 ms) */
	int64_t reconnect_max_ns; /**< backoff ceiling (default 1 s) */
	char *errbuf;             /**< if not NULL, a failed create writes the
				       broker's or hiredis's message here */
	size_t errlen;            /**< bytes of errbuf */
};

/** Counters of a source: a snapshot (cpat_redis_source_stats()). */
struct cpat_redis_source_stats {
	uint64_t read;          /**< entries read by XREADGROUP */
	uint64_t claimed;       /**< entries claimed from idle consumers */
	uint64_t delivered;     /**< items handed out by next */
	uint64_t acked;         /**< acknowledged to the broker (XACK done) */
	uint64_t nacked;        /**< completed without acknowledgement */
	uint64_t dead_lettered; /**< sent to the dead-letter stream */
	uint64_t decode_failed; /**< of those, refused by decode */
	uint64_t xack_calls;    /**< XACK commands (acked / xack_calls is
				     the batching) */
	uint64_t reconnects;    /**< connections re-established */
	uint64_t connect_failures; /**< failed connection attempts */
	uint64_t io_errors;        /**< commands that lost the connection */
	uint64_t in_flight;        /**< read, not yet acknowledged or nacked */
	uint64_t in_flight_peak;   /**< the most at once; <= max_unacked */
	int last_error;            /**< the last error's code, 0 if none */
};

/** Fills @p o with the defaults. NULL is a no-op. Never blocks. */
CPAT_API void cpat_redis_source_opts_init(struct cpat_redis_source_opts *o);

/** A stream consumer (opaque). */
struct cpat_redis_source;

/**
 * Creates a source: connects, authenticates, selects the db and creates
 * the group (XGROUP CREATE ... MKSTREAM; an existing group is kept).
 *
 * Blocks for the connection and those commands: at most about
 * connect_timeout_ns + 3 x io_timeout_ns, plus name resolution. A bad URL
 * or option fails at once, before any I/O. Thread-safe.
 * @param out  receives the source (owned by the caller:
 *             cpat_redis_source_destroy()); NULL on failure.
 * @param opts options; strings are copied.
 * @return 0; -EINVAL for NULL, a bad URL, a missing or bad option, or a
 *         command the broker refused (such as WRONGTYPE: the key is not a
 *         stream); -ENOMEM; -EPIPE if the broker cannot be reached;
 *         -ETIMEDOUT if it does not answer in time; -EAGAIN if it is busy.
 *         The message is in opts->errbuf.
 */
CPAT_API int
cpat_redis_source_create(struct cpat_redis_source **out,
			 const struct cpat_redis_source_opts *opts);

/**
 * Hands out the next entry: the oldest decoded entry on hand, else one
 * claimed from an idle consumer (every claim_interval_ns), else a new one
 * read with XREADGROUP ... BLOCK. First sends the acknowledgements queued
 * since the last call. While max_unacked entries are in flight, waits for
 * completions instead of reading.
 *
 * Blocks, answering @p tok within block_ns (and within io_timeout_ns when
 * the broker stops answering); reconnects with backoff when the
 * connection is lost. Call from one thread at a time.
 * @param s    the source.
 * @param item receives item_size bytes.
 * @param id   receives the entry's ID (the handle to complete it with), or
 *             NULL.
 * @param tok  cancellation token, or NULL.
 * @return 1 for an item (in flight until acked or nacked); 0 at the end of
 *         input (idle_end_ns, if set); -ECANCELED / -ETIMEDOUT (the token's
 *         cause: nothing was handed out); -EINVAL for NULL @p s or
 *         @p item, or a command the broker refuses (the last error says
 *         which); -ENOMEM.
 */
CPAT_API int cpat_redis_source_next(struct cpat_redis_source *s, void *item,
				    struct cpat_redis_id *id,
				    struct cpat_token *tok);

/**
 * How many entries the source holds already read from the broker and not
 * yet handed out: while it is not 0, cpat_redis_source_next() hands one out
 * without going to the network (so without blocking on the broker). A
 * pipeline source function calls cpat_source_flush() when it is 0, before
 * next(), so that the items the pipeline holds back do not wait out a
 * blocking read (cpat_redis_source_attach() does this).
 *
 * Never blocks on the network (it waits for a next() in progress in
 * another thread). Thread safety: any thread.
 * @return the count; 0 for NULL.
 */
CPAT_API size_t cpat_redis_source_buffered(struct cpat_redis_source *s);

/**
 * Completes @p n entries as processed: queues their IDs for one batched
 * XACK, sent by the next cpat_redis_source_next() or
 * cpat_redis_source_flush() (or destroy). Until sent they still count as
 * in flight. IDs not in flight here (already completed, or never handed
 * out) are ignored.
 *
 * Never blocks (a short lock; no I/O). Thread-safe: any thread, any
 * number at once.
 * @return how many of the @p n were in flight and are now queued;
 *         -EINVAL for NULL @p s, or NULL @p ids with @p n > 0.
 */
CPAT_API int cpat_redis_source_ack(struct cpat_redis_source *s,
				   const struct cpat_redis_id *ids, size_t n);

/**
 * Completes @p n entries as not processed: they leave the in-flight count
 * at once and stay pending in the group, to be claimed again after
 * claim_idle_ns (here or by another consumer) or dead-lettered after
 * max_deliveries.
 *
 * Never blocks; thread-safe, as cpat_redis_source_ack().
 * @return how many of the @p n were in flight; -EINVAL as
 *         cpat_redis_source_ack().
 */
CPAT_API int cpat_redis_source_nack(struct cpat_redis_source *s,
				    const struct cpat_redis_id *ids, size_t n);

/**
 * A cpat_ack_fn: cpat_redis_source_ack() of @p n handles, each a struct
 * cpat_redis_id; @p arg is the source. What cpat_redis_source_attach()
 * gives the pipeline.
 */
CPAT_API void cpat_redis_source_ack_fn(const void *handles, size_t n,
				       void *arg);

/**
 * Sends the queued acknowledgements now (XACK), reconnecting if need be.
 *
 * Blocks for the command (and reconnection, under @p tok). Not at the same
 * time as cpat_redis_source_next() on another thread (it waits for it).
 * @return 0 when nothing is left queued; -ECANCELED / -ETIMEDOUT (the
 *         token's cause: the rest stays queued); -EINVAL for NULL @p s or
 *         a refused XACK.
 */
CPAT_API int cpat_redis_source_flush(struct cpat_redis_source *s,
				     struct cpat_token *tok);

/**
 * Makes @p s the source of pipeline @p p (cpat_pipeline_set_source()):
 * items are decoded entries, each item's ack handle is its struct
 * cpat_redis_id (ack_size = sizeof), the pipeline's ack callback is
 * cpat_redis_source_ack_fn() and its max_unacked is the source's. The
 * pipeline's item_size must be the source's. The source function returns
 * the token's cause when the pipeline stops, and 0 at idle_end_ns.
 *
 * After cpat_pipeline_wait(), call cpat_redis_source_flush() or destroy
 * the source, so that the acknowledgements of the last items are sent.
 * Items the pipeline did not process (cancel, error) are never
 * acknowledged: they stay pending for the group.
 *
 * Never blocks. Single-threaded, as pipeline building is.
 * @return 0; -EINVAL for NULL; -EBUSY if @p p has a source or was started;
 *         what cpat_pipeline_set_source() returns otherwise.
 */
CPAT_API int cpat_redis_source_attach(struct cpat_redis_source *s,
				      struct cpat_pipeline *p);

/**
 * The work of one entry in a pool (cpat_redis_source_feed_pool()).
 * @param item the decoded item (borrowed for the call).
 * @param id   the entry's ID.
 * @param tok  the pool's token.
 * @param arg  the feeder's arg.
 * @return 0 to acknowledge the entry; anything else leaves it pending (it
 *         is delivered again after claim_idle_ns, and dead-lettered after
 *         max_deliveries).
 */
typedef int (*cpat_redis_task_fn)(const void *item,
				  const struct cpat_redis_id *id,
				  struct cpat_token *tok, void *arg);

/**
 * Feeds @p pool from @p s until @p tok fires, the input ends (idle_end_ns)
 * or an error: each item becomes one task running @p fn; the task's done
 * callback acknowledges the entry when @p fn returned 0 and nacks it
 * otherwise, also when the pool discarded the task (it never ran). Item
 * copies live in slots made at create (max_unacked of them), so nothing is
 * allocated per task.
 *
 * Blocks, on the calling thread, in cpat_redis_source_next() and
 * cpat_pool_submit() (with @p tok). Tasks still queued or running when it
 * returns complete later: shut the pool down (DRAIN or DISCARD) before
 * cpat_redis_source_destroy(). One feeder per source at a time.
 * @return 0 at the end of input; the token's cause; -EPIPE if the pool
 *         was shut down; -EINVAL for NULL @p s, @p pool or @p fn, or what
 *         cpat_redis_source_next() returned. The item being fed when it
 *         stopped is nacked.
 */
CPAT_API int cpat_redis_source_feed_pool(struct cpat_redis_source *s,
					 struct cpat_pool *pool,
					 cpat_redis_task_fn fn, void *arg,
					 struct cpat_token *tok);

/**
 * Reads the counters. Never blocks (a short lock); thread-safe.
 * @return 0; -EINVAL for NULL arguments.
 */
CPAT_API int cpat_redis_source_stats(struct cpat_redis_source *s,
				     struct cpat_redis_source_stats *st);

/**
 * Copies the message of the source's last error (the broker's reply or
 * hiredis's description) into @p buf, like snprintf(); "" if none.
 * Never blocks; thread-safe.
 * @return the message's length; -EINVAL for NULL @p s, or NULL @p buf
 *         with @p len > 0.
 */
CPAT_API int cpat_redis_source_last_error(struct cpat_redis_source *s,
					  char *buf, size_t len);

/**
 * Destroys the source: sends the queued acknowledgements (one attempt,
 * bounded by the I/O timeout) and closes the connection. Entries in
 * flight stay pending in the group (delivered again later).
 *
 * Blocks for that attempt. Call it last, when no thread uses the source
 * (after the pipeline was waited for, or the pool shut down).
 * @param s the source, or NULL (no-op).
 */
CPAT_API void cpat_redis_source_destroy(struct cpat_redis_source *s);

/* ---- sink ---------------------------------------------------------------- */

/**
 * Turns one item into an entry's fields with cpat_redis_fields_add().
 * @return 0; a negative value to fail the write with it.
 */
typedef int (*cpat_redis_encode_fn)(const void *item,
				    struct cpat_redis_fields *f, void *arg);

/** Sink options; fill with cpat_redis_sink_opts_init() first. */
struct cpat_redis_sink_opts {
	const char *url;    /**< the broker */
	const char *stream; /**< stream key written with XADD, required */
	size_t item_size;   /**< bytes of an item, > 0 */
	cpat_redis_encode_fn encode; /**< required */
	void *encode_arg;            /**< passed to encode */
	size_t maxlen;               /**< trim to about this many entries
					  (MAXLEN ~ N); 0: no trimming (default) */
	size_t max_fields;           /**< pairs per entry (default 64) */
	size_t max_entry_bytes;      /**< bytes of names and values per entry
					  (default 4096) */
	int64_t connect_timeout_ns;  /**< per attempt (default 1 s) */
	int64_t io_timeout_ns;       /**< per round trip (default 2 s) */
	int64_t retry_ns;         /**< how long a write keeps reconnecting and
				       resending before it fails (default 5 s) */
	struct cpat_token *token; /**< cancels those waits, or NULL */
	char *errbuf;             /**< as in cpat_redis_source_opts */
	size_t errlen;            /**< bytes of errbuf */
};

/** Counters of a sink (cpat_redis_sink_stats()). */
struct cpat_redis_sink_stats {
	uint64_t written;     /**< entries the broker confirmed */
	uint64_t round_trips; /**< pipelined batches sent */
	uint64_t resent;      /**< entries sent again after a lost connection
				   (possible duplicates in the stream) */
	uint64_t reconnects;  /**< connections re-established */
	int last_error;       /**< the last error's code, 0 if none */
};

/** A stream writer (opaque). */
struct cpat_redis_sink;

/** Fills @p o with the defaults. NULL is a no-op. Never blocks. */
CPAT_API void cpat_redis_sink_opts_init(struct cpat_redis_sink_opts *o);

/**
 * Creates a sink and connects it.
 *
 * Blocks for the connection (connect_timeout_ns, plus name resolution).
 * Thread-safe.
 * @return 0; -EINVAL for NULL, a bad URL or option, or a refused AUTH or
 *         SELECT; -ENOMEM; -EPIPE / -ETIMEDOUT / -EAGAIN as for
 *         cpat_redis_source_create(). The message is in opts->errbuf.
 */
CPAT_API int cpat_redis_sink_create(struct cpat_redis_sink **out,
				    const struct cpat_redis_sink_opts *opts);

/**
 * Appends @p n items (item_size bytes each, one after another) to the
 * stream: one XADD each, all sent in one pipelined round trip, and
 * returns once the broker has confirmed every one. If the connection is
 * lost, reconnects and sends again what was not confirmed, for up to
 * retry_ns (an entry may then be written twice: at-least-once).
 *
 * Blocks for the round trip. Call from one thread at a time.
 * @return 0 when all @p n are in the stream; the encode callback's error
 *         (the items before the failing one were written); -EINVAL for NULL
 * arguments, or a refused XADD (such as WRONGTYPE); -EPIPE / -ETIMEDOUT when
 * the broker stays unreachable past retry_ns; the token's cause.
 */
CPAT_API int cpat_redis_sink_write(struct cpat_redis_sink *k, const void *items,
				   size_t n);

/**
 * A cpat_sink_fn writing one item: cpat_redis_sink_write(arg, item, 1).
 * @p arg is the sink. Returns 0 only once the entry is in the stream, so
 * a pipeline acknowledges the item's source entry after that.
 */
CPAT_API int cpat_redis_sink_fn(const void *item, void *arg);

/**
 * A cpat_sink_fn for a batch stage's output: writes every item of the
 * struct cpat_batch @p batch in one round trip. @p arg is the sink.
 */
CPAT_API int cpat_redis_sink_batch_fn(const void *batch, void *arg);

/** Reads the counters. Never blocks. @return 0; -EINVAL for NULL. */
CPAT_API int cpat_redis_sink_stats(struct cpat_redis_sink *k,
				   struct cpat_redis_sink_stats *st);

/** As cpat_redis_source_last_error(), for a sink. */
CPAT_API int cpat_redis_sink_last_error(struct cpat_redis_sink *k, char *buf,
					size_t len);

/**
 * Closes the connection and frees the sink (every write has already been
 * confirmed). Never blocks. @param k the sink, or NULL (no-op).
 */
CPAT_API void cpat_redis_sink_destroy(struct cpat_redis_sink *k);

#ifdef __cplusplus
}
#endif

#endif /* CPATTERN_REDIS_H */
