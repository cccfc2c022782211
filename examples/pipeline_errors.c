/*
 * The Go guide's production pipeline: errors and cancellation.
 *
 * In Go every item is a Result{value, err}, each stage passes upstream
 * errors on, and the collector returns the first. Here a stage returns a
 * negative value instead: the first one stops the whole pipeline (every
 * stage, at once), and the result names the stage and the item's index.
 * Every item that left the source is still accounted for: delivered,
 * filtered, or not processed (and handed to the drop callback).
 *
 * Run 1: the "validate" stage rejects item 42 -> -EBADMSG, stage named.
 * Run 2: an endless source under a 50 ms deadline -> -ETIMEDOUT.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep() */
#include <cpattern.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define BAD_ITEM 42

static int count_up(void *out, void *arg) /* 0, 1, 2, ... up to *arg */
{
	long *st = arg; /* st[0]: next value, st[1]: limit (-1: endless) */
	if (st[1] >= 0 && st[0] >= st[1])
		return 0;
	*(long *)out = st[0]++;
	return 1;
}

static int parse(const void *in, void *out, struct cpat_stage_ctx *ctx)
{
	*(long *)out = *(const long *)in * 10;
	return CPAT_STAGE_EMIT;
}

static int validate(const void *in, void *out, struct cpat_stage_ctx *ctx)
{
	const long *bad = cpat_stage_arg(ctx); /* NULL: every item is good */
	long v = *(const long *)in;
	if (bad != NULL && v == *bad * 10)
		return -EBADMSG; /* stops everything; the pipeline names us */
	/* Slow work watches the pipeline's token, to stop promptly. */
	struct timespec ts = {0, 100000};
	nanosleep(&ts, NULL);
	if (cpat_token_status(cpat_stage_token(ctx)) != 0)
		return cpat_token_status(cpat_stage_token(ctx));
	*(long *)out = v;
	return CPAT_STAGE_EMIT;
}

static int store(const void *item, void *arg)
{
	atomic_fetch_add((atomic_long *)arg, 1);
	return 0;
}

static void dropped(const void *item, unsigned stage, void *arg)
{
	atomic_fetch_add((atomic_long *)arg, 1);
}

/* Builds source -> parse (4 workers) -> validate (4 workers) -> store. */
static int run(long limit, const long *bad, struct cpat_token *tok,
	       struct cpat_pipeline_result *res, long *nstored, long *ndrop)
{
	atomic_long stored = 0, drops = 0;
	long st[2] = {0, limit};
	struct cpat_pipeline *p;
	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	po.item_size = sizeof(long);
	po.drop = dropped;
	po.drop_arg = &drops;
	int rc = cpat_pipeline_create(&p, &po);
	if (rc != 0)
		return rc;
	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.out_size = sizeof(long);
	so.workers = 4;
	so.name = "parse";
	so.map = parse;
	if ((rc = cpat_pipeline_set_generator(p, count_up, st)) == 0 &&
	    (rc = cpat_pipeline_add_stage(p, &so)) == 0) {
		so.name = "validate";
		so.map = validate;
		so.arg = (void *)bad;
		rc = cpat_pipeline_add_stage(p, &so);
	}
	if (rc == 0)
		rc = cpat_pipeline_set_sink(p, store, &stored);
	if (rc == 0)
		rc = cpat_pipeline_run(p, tok, CPAT_FOREVER, res);
	cpat_pipeline_destroy(p);
	*nstored = stored;
	*ndrop = drops;
	return rc;
}

static int check(const char *title, int rc, int want_rc, const char *want_stage,
		 const struct cpat_pipeline_result *r, long stored, long drops)
{
	/* cpat_strerror() names the library's codes; -EBADMSG is ours. */
	printf("%s: %s", title,
	       rc == -EBADMSG ? "bad message" : cpat_strerror(rc));
	if (r->stage[0] != '\0')
		printf(" in stage \"%s\" at item %llu", r->stage,
		       (unsigned long long)r->item_index);
	printf("\n  produced %llu = delivered %llu + filtered %llu + not "
	       "processed %llu (drop callback saw %ld)\n",
	       (unsigned long long)r->produced,
	       (unsigned long long)r->delivered,
	       (unsigned long long)r->filtered,
	       (unsigned long long)r->not_processed, drops);
	int ok = rc == want_rc && strcmp(r->stage, want_stage) == 0 &&
		 r->produced == r->delivered + r->filtered + r->not_processed &&
		 r->delivered == (unsigned long long)stored &&
		 r->not_processed == (unsigned long long)drops;
	if (ok && want_stage[0] != '\0' && r->item_index != BAD_ITEM)
		ok = 0;
	if (!ok)
		fprintf(stderr, "%s: not the expected outcome\n", title);
	return ok ? 0 : 1;
}

int main(void)
{
	struct cpat_pipeline_result r;
	long stored, drops;
	int rc, bad = 0;

	/* 1. The first error stops the pipeline and names its stage. */
	memset(&r, 0, sizeof(r));
	const long bad_item = BAD_ITEM;
	rc = run(100000, &bad_item, NULL, &r, &stored, &drops);
	bad |= check("error", rc, -EBADMSG, "validate", &r, stored, drops);

	/* 2. Cancellation: an endless source, stopped by its deadline token
	 * (a parent token could be cancelled by a signal the same way). */
	struct cpat_token *tok;
	rc = cpat_token_create_deadline(&tok, NULL,
					cpat_now_ns() + 50 * CPAT_MSEC);
	if (rc != 0) {
		fprintf(stderr, "token_create_deadline: %s\n",
			cpat_strerror(rc));
		return 1;
	}
	memset(&r, 0, sizeof(r));
	rc = run(-1, NULL, tok, &r, &stored, &drops);
	cpat_token_unref(tok);
	bad |= check("deadline", rc, -ETIMEDOUT, "", &r, stored, drops);
	return bad;
}
