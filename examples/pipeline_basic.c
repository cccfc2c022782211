/*
 * The Go guide's basic pipeline: generator(1..5) -> square -> filterEven
 * -> print. Output: 4 and 16.
 *
 * Each stage runs on its own thread and the stages are joined by bounded
 * channels. The source ends the input by returning 0; the pipeline then
 * closes each channel in turn, so every stage's loop ends by itself. With
 * one worker per stage the items arrive in source order.
 */
#include <cpattern.h>
#include <stdio.h>

static int generate(void *out, void *arg)
{
	int *next = arg;
	if (*next > 5)
		return 0; /* end of input */
	*(int *)out = (*next)++;
	return 1;
}

static int square(const void *in, void *out, struct cpat_stage_ctx *ctx)
{
	int v = *(const int *)in;
	*(int *)out = v * v;
	return CPAT_STAGE_EMIT;
}

static int filter_even(const void *in, void *out, struct cpat_stage_ctx *ctx)
{
	int v = *(const int *)in;
	*(int *)out = v;
	return v % 2 == 0 ? CPAT_STAGE_EMIT : CPAT_STAGE_SKIP;
}

static int print(const void *item, void *arg)
{
	printf("%d\n", *(const int *)item);
	return 0;
}

static int fail(const char *what, int rc)
{
	fprintf(stderr, "%s: %s\n", what, cpat_strerror(rc));
	return 1;
}

int main(void)
{
	struct cpat_pipeline *p;
	struct cpat_pipeline_opts po;
	int rc, next = 1;

	cpat_pipeline_opts_init(&po);
	po.item_size = sizeof(int);
	if ((rc = cpat_pipeline_create(&p, &po)) != 0)
		return fail("pipeline_create", rc);
	if ((rc = cpat_pipeline_set_generator(p, generate, &next)) != 0)
		return fail("set_generator", rc);

	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.name = "square";
	so.map = square;
	so.out_size = sizeof(int);
	if ((rc = cpat_pipeline_add_stage(p, &so)) != 0)
		return fail("add_stage square", rc);
	so.name = "filterEven";
	so.map = filter_even;
	if ((rc = cpat_pipeline_add_stage(p, &so)) != 0)
		return fail("add_stage filterEven", rc);
	if ((rc = cpat_pipeline_set_sink(p, print, NULL)) != 0)
		return fail("set_sink", rc);

	struct cpat_pipeline_result res;
	rc = cpat_pipeline_run(p, NULL, CPAT_FOREVER, &res);
	cpat_pipeline_destroy(p);
	if (rc != 0)
		return fail("pipeline_run", rc);
	/* Every item is accounted for: 5 produced = 2 delivered + 3 filtered.
	 */
	if (res.produced != 5 || res.delivered != 2 || res.filtered != 3) {
		fprintf(stderr,
			"unexpected accounting: %llu produced, %llu "
			"delivered, %llu filtered\n",
			(unsigned long long)res.produced,
			(unsigned long long)res.delivered,
			(unsigned long long)res.filtered);
		return 1;
	}
	return 0;
}
