/* Harness of the README's pipeline snippet: a generator `gen` of 1..250
 * (its `state`), a map stage `square`, a sink `save` of batches writing to
 * `file`, and a token `tok`. */
#include <cpattern.h>
#include <stdio.h>

static int gen(void *out, void *arg)
{
	int *next = (int *)arg;
	if (*next > 250)
		return 0;
	*(int *)out = (*next)++;
	return 1;
}

static int square(const void *in, void *out, struct cpat_stage_ctx *ctx)
{
	(void)ctx;
	int v = *(const int *)in;
	*(int *)out = v * v;
	return CPAT_STAGE_EMIT;
}

static long long total;

static int save(const void *item, void *arg)
{
	const struct cpat_batch *b = (const struct cpat_batch *)item;
	for (size_t i = 0; i < b->count; i++)
		total += *(const int *)cpat_batch_item(b, i);
	fprintf((FILE *)arg, "batch of %zu\n", b->count);
	return 0;
}

int main(void)
{
	int state = 1;
	FILE *file = stdout;
	struct cpat_token *tok = NULL;
	/* @SNIPPET@ */
	/* 1^2 + ... + 250^2 */
	return rc == 0 && total == 250LL * 251 * 501 / 6 ? 0 : 1;
}
