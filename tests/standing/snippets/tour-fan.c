/* Harness of the README's fan-out/fan-in snippet: a closed channel `jobs`
 * of 1..10, four `results` channels, `merged`, a fan worker `square`, an
 * int `v`, a token `tok`, and for the parallel map `n` ints `in_arr` into
 * `out_arr` by `f`. */
#include <cpattern.h>
#include <stdio.h>

static int square(const void *in, void *out, unsigned worker, void *arg)
{
	(void)worker;
	(void)arg;
	int v = *(const int *)in;
	*(int *)out = v * v;
	return 0;
}

static int f(const void *in, void *out, size_t index, void *arg)
{
	(void)index;
	(void)arg;
	*(int *)out = *(const int *)in + 1;
	return 0;
}

int main(void)
{
	struct cpat_chan *jobs, *results[4], *merged;
	struct cpat_token *tok = NULL;
	if (cpat_chan_create(&jobs, sizeof(int), 16) != 0 ||
	    cpat_chan_create(&merged, sizeof(int), 0) != 0)
		return 1;
	for (int i = 0; i < 4; i++)
		if (cpat_chan_create(&results[i], sizeof(int), 4) != 0)
			return 1;
	for (int i = 1; i <= 10; i++)
		if (cpat_chan_send(jobs, &i, NULL) != 0)
			return 1;
	cpat_chan_close(jobs);
	int v;
	int in_arr[100], out_arr[100];
	size_t n = 100;
	for (int i = 0; i < 100; i++)
		in_arr[i] = i;
	/* @SNIPPET@ */
	for (int i = 0; i < 4; i++)
		cpat_chan_destroy(results[i]);
	cpat_chan_destroy(merged);
	cpat_chan_destroy(jobs);
	return out_arr[99] == 100 ? 0 : 1;
}
