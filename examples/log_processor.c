/*
 * The Go guide's log processing, on a real file:
 *
 *   read lines -> parse "LEVEL <x> message" (skip malformed) -> keep ERROR
 *   -> save in batches of 100, or every 1 s, remainder at end of input
 *
 * usage: log_processor INPUT OUTPUT
 *
 * The source reads the file on one thread; "parse" runs on 2 ordered
 * workers, so the output keeps the input's order. Channels of 100 between
 * stages bound the memory whatever the file size; the whole run has the
 * guide's 10 min deadline. A write error fails the sink, which stops the
 * pipeline and is reported with the stage's name.
 */
#include <cpattern.h>
#include <stdio.h>
#include <string.h>

struct line {
	char text[512];
	int too_long;
};

struct entry {
	char level[16];
	char x[48];
	char msg[448];
};

static int read_line(void *out, void *arg)
{
	FILE *in = arg;
	struct line *l = out;
	if (fgets(l->text, sizeof(l->text), in) == NULL)
		return ferror(in) ? -EIO : 0;
	size_t n = strlen(l->text);
	l->too_long = 0;
	if (n > 0 && l->text[n - 1] == '\n') {
		l->text[--n] = '\0';
	} else if (!feof(in)) { /* longer than the buffer: skip the rest */
		int c;
		while ((c = getc(in)) != EOF && c != '\n')
			;
		l->too_long = 1;
	}
	return 1;
}

/* Splits "LEVEL <x> message" in three, as strings.SplitN(line, " ", 3). */
static int parse(const void *in, void *out, struct cpat_stage_ctx *ctx)
{
	const struct line *l = in;
	struct entry *e = out;
	const char *sp1 = strchr(l->text, ' ');
	const char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	if (l->too_long || sp2 == NULL || sp1 == l->text || sp2 == sp1 + 1 ||
	    (size_t)(sp1 - l->text) >= sizeof(e->level) ||
	    (size_t)(sp2 - sp1 - 1) >= sizeof(e->x))
		return CPAT_STAGE_SKIP; /* malformed: counted as filtered */
	snprintf(e->level, sizeof(e->level), "%.*s", (int)(sp1 - l->text),
		 l->text);
	snprintf(e->x, sizeof(e->x), "%.*s", (int)(sp2 - sp1 - 1), sp1 + 1);
	snprintf(e->msg, sizeof(e->msg), "%s", sp2 + 1);
	return CPAT_STAGE_EMIT;
}

static int keep_errors(const void *in, void *out, struct cpat_stage_ctx *ctx)
{
	const struct entry *e = in;
	if (strcmp(e->level, "ERROR") != 0)
		return CPAT_STAGE_SKIP;
	memcpy(out, in, sizeof(*e));
	return CPAT_STAGE_EMIT;
}

static int save_batch(const void *item, void *arg)
{
	const struct cpat_batch *b = item;
	FILE *out = arg;
	for (size_t i = 0; i < b->count; i++) {
		const struct entry *e = cpat_batch_item(b, i);
		if (fprintf(out, "%s %s %s\n", e->level, e->x, e->msg) < 0)
			return -EIO;
	}
	return fflush(out) == 0 ? 0 : -EIO; /* one write per batch */
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s INPUT OUTPUT\n", argv[0]);
		return 2;
	}
	FILE *in = fopen(argv[1], "r");
	if (in == NULL) {
		perror(argv[1]);
		return 1;
	}
	FILE *out = fopen(argv[2], "w");
	if (out == NULL) {
		perror(argv[2]);
		fclose(in);
		return 1;
	}

	struct cpat_pipeline *p = NULL;
	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	po.item_size = sizeof(struct line);
	po.source_capacity = 100;
	int rc = cpat_pipeline_create(&p, &po);
	if (rc == 0)
		rc = cpat_pipeline_set_generator(p, read_line, in);

	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.name = "parse";
	so.map = parse;
	so.out_size = sizeof(struct entry);
	so.workers = 2;
	so.ordered = 1;
	so.out_capacity = 100;
	if (rc == 0)
		rc = cpat_pipeline_add_stage(p, &so);
	so.name = "keep-errors";
	so.map = keep_errors;
	so.workers = 1;
	if (rc == 0)
		rc = cpat_pipeline_add_stage(p, &so);

	struct cpat_batch_opts bo;
	cpat_batch_opts_init(&bo);
	bo.name = "batch";
	bo.max_items = 100;
	bo.flush_ns = 1 * CPAT_SEC;
	if (rc == 0)
		rc = cpat_pipeline_add_batch(p, &bo);
	if (rc == 0)
		rc = cpat_pipeline_set_sink(p, save_batch, out);

	struct cpat_pipeline_result res = {0};
	int64_t t0 = cpat_now_ns();
	if (rc == 0)
		rc = cpat_pipeline_run(p, NULL, t0 + 600 * CPAT_SEC, &res);
	double secs = (double)(cpat_now_ns() - t0) / 1e9;

	/* Per-stage counters: parse's filtered items are the malformed lines,
	 * keep-errors' output the ERROR lines. And the table with the
	 * bottleneck. */
	struct cpat_stage_stats st[2] = {0};
	char report[2048];
	int nstages = rc == 0 ? cpat_pipeline_stats(p, st, 2) : 0;
	if (nstages < 0)
		rc = nstages;
	if (rc == 0 && cpat_pipeline_report(p, report, sizeof(report)) >= 0)
		fputs(report, stdout);
	cpat_pipeline_destroy(p);
	fclose(in);
	if (fclose(out) != 0 && rc == 0)
		rc = -EIO;
	if (rc != 0) {
		fprintf(stderr, "log_processor: %s%s%s\n",
			rc == -EIO ? "I/O error" : cpat_strerror(rc),
			res.stage[0] ? " in stage " : "", res.stage);
		return 1;
	}
	printf("lines read %llu, malformed %llu, errors kept %llu, "
	       "%.0f lines/s\n",
	       (unsigned long long)res.produced,
	       (unsigned long long)st[0].filtered,
	       (unsigned long long)st[1].items_out,
	       secs > 0 ? (double)res.produced / secs : 0.0);
	return 0;
}
