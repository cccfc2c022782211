/*
 * Lines of any length through a pipeline: an item is a pointer to a heap
 * string, freed by whoever holds it (pipeline.h, "Items that own memory"):
 * a stage that replaces or filters it, the sink, or the drop callback for
 * whatever a stop, an error or the deadline leaves behind.
 * Usage: owned_lines (made-up lines) | owned_lines - < file (stdin).
 */
#define _GNU_SOURCE 1
#include <ctype.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpattern.h"

struct src {
	struct cpat_pipeline *p;
	int from_stdin;
	int n;
};

/* The generator: a line from stdin (unbuffered, so that poll() tells the
 * truth), waiting 100 ms at a time so that a stop (Ctrl-C, the deadline:
 * the run's token) is noticed while no input comes; or a made-up line. */
static int next_line(void *out, void *arg)
{
	struct src *s = arg;
	char *line = NULL;
	if (!s->from_stdin) {
		if (s->n == 20)
			return 0;
		if (asprintf(&line, "line %d:%.*s", s->n, s->n % 7 * 4,
			     " the quick brown fox jumps over a lazy dog") < 0)
			return -ENOMEM;
		s->n++;
	} else {
		struct pollfd pfd = {0, POLLIN, 0};
		struct cpat_token *tok = cpat_pipeline_token(s->p);
		while (poll(&pfd, 1, 100) == 0)
			if (cpat_token_status(tok) != 0)
				return cpat_token_status(tok);
		size_t cap = 0;
		if (getline(&line, &cap, stdin) < 0) {
			free(line);
			return 0; /* end of input */
		}
		line[strcspn(line, "\n")] = '\0';
	}
	memcpy(out, &line, sizeof line);
	return 1; /* the line is the pipeline's now */
}

/* Map, in place: the pointer is passed on. */
static int upper(const void *in, void *out, struct cpat_stage_ctx *c)
{
	char *line = *(char *const *)in;
	for (char *q = line; *q; q++)
		*q = (char)toupper((unsigned char)*q);
	memcpy(out, &line, sizeof line);
	return CPAT_STAGE_EMIT;
}

/* Flat: one new string per word, then the line is freed. On an error the
 * line is left to the drop callback. */
static int words(const void *in, struct cpat_stage_ctx *c)
{
	char *line = *(char *const *)in, *save = NULL;
	for (char *w = strtok_r(line, " ", &save); w;
	     w = strtok_r(NULL, " ", &save)) {
		char *word = strdup(w);
		int rc = word ? cpat_stage_emit(c, &word) : -ENOMEM;
		if (rc != 0) {
			free(word); /* not taken by emit: still ours */
			return rc;
		}
	}
	free(line);
	return 0;
}

/* Map, filter: drops the short words (freeing them). */
static int long_words(const void *in, void *out, struct cpat_stage_ctx *c)
{
	char *word = *(char *const *)in;
	if (strlen(word) < 4) {
		free(word);
		return CPAT_STAGE_SKIP;
	}
	memcpy(out, &word, sizeof word);
	return CPAT_STAGE_EMIT;
}

static int print_word(const void *item, void *arg)
{
	char *word = *(char *const *)item;
	int rc = printf("%s\n", word) < 0 ? -EIO : 0;
	free(word);
	return rc;
}

/* Every item the pipeline lets go: the same type at every stage here. */
static void free_item(const void *item, unsigned stage, void *arg)
{
	free(*(char *const *)item);
}

int main(int argc, char **argv)
{
	struct src s = {NULL, argc > 1 && strcmp(argv[1], "-") == 0, 0};
	struct cpat_pipeline_opts po;
	cpat_pipeline_opts_init(&po);
	po.item_size = sizeof(char *);
	po.drop = free_item;
	struct cpat_stage_opts so[3];
	for (int i = 0; i < 3; i++) {
		cpat_stage_opts_init(&so[i]);
		so[i].out_size = sizeof(char *);
	}
	so[0].name = "upper", so[0].map = upper;
	so[1].name = "words", so[1].flat = words;
	so[2].name = "long", so[2].map = long_words, so[2].workers = 2;
	so[2].ordered = true;
	struct cpat_token *sig = NULL;
	struct cpat_pipeline_result r;
	int rc;
	setvbuf(stdin, NULL, _IONBF, 0);
	if ((rc = cpat_pipeline_create(&s.p, &po)) != 0 ||
	    (rc = cpat_pipeline_set_generator(s.p, next_line, &s)) != 0 ||
	    (rc = cpat_pipeline_add_stage(s.p, &so[0])) != 0 ||
	    (rc = cpat_pipeline_add_stage(s.p, &so[1])) != 0 ||
	    (rc = cpat_pipeline_add_stage(s.p, &so[2])) != 0 ||
	    (rc = cpat_pipeline_set_sink(s.p, print_word, NULL)) != 0 ||
	    (rc = cpat_token_create_signals(&sig, NULL, (int[]){SIGINT}, 1))) {
		fprintf(stderr, "setup: %s\n", cpat_strerror(rc));
		cpat_pipeline_destroy(s.p);
		return 1;
	}
	rc = cpat_pipeline_run(s.p, sig, cpat_now_ns() + 10 * CPAT_SEC, &r);
	fprintf(stderr, "%s: %llu lines, %llu words kept, %llu not processed\n",
		cpat_strerror(rc), (unsigned long long)r.produced,
		(unsigned long long)r.delivered,
		(unsigned long long)r.not_processed);
	cpat_token_unref(sig);
	cpat_pipeline_destroy(s.p); /* nothing left to free: drop had it all */
	return rc == 0 ? 0 : 1;
}
