/*
 * The Go guide's fan-out / fan-in: the numbers 1..10 go through 4 workers
 * that square them; each worker has its own output channel (fan-out), and
 * the 4 outputs are merged into one (fan-in). Each output is closed by its
 * worker when the input is drained; the merged channel is closed once,
 * after the last of them: the receiving loop below ends by itself.
 *
 * The workers finish in any order, so the results are sorted to print.
 */
#include <cpattern.h>
#include <stdio.h>
#include <stdlib.h>

#define WORKERS 4
#define N 10

static int square(const void *in, void *out, unsigned worker, void *arg)
{
	int v = *(const int *)in;
	*(int *)out = v * v;
	return 0; /* 0: send *out */
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

static int fail(const char *what, int rc)
{
	fprintf(stderr, "%s: %s\n", what, cpat_strerror(rc));
	return 1;
}

int main(void)
{
	struct cpat_chan *in, *outs[WORKERS], *merged;
	struct cpat_fan *fout, *fin;
	int rc;

	if ((rc = cpat_chan_create(&in, sizeof(int), 4)) != 0)
		return fail("chan_create", rc);
	for (int i = 0; i < WORKERS; i++)
		if ((rc = cpat_chan_create(&outs[i], sizeof(int), 4)) != 0)
			return fail("chan_create", rc);
	if ((rc = cpat_chan_create(&merged, sizeof(int), 4)) != 0)
		return fail("chan_create", rc);

	/* Fan-out: 4 workers read `in`; worker i writes outs[i]. */
	rc = cpat_fan_out(&fout, in, outs, WORKERS, WORKERS, square, NULL,
			  NULL);
	if (rc != 0)
		return fail("fan_out", rc);
	/* Fan-in: one forwarder per output, all into `merged`. */
	if ((rc = cpat_fan_in(&fin, outs, WORKERS, merged, NULL)) != 0)
		return fail("fan_in", rc);

	/* The generator: the sender closes the channel it fills. The input
	 * holds only 4, so this overlaps with the workers. */
	for (int v = 1; v <= N; v++)
		if ((rc = cpat_chan_send(in, &v, NULL)) != 0)
			return fail("send", rc);
	if ((rc = cpat_chan_close(in)) != 0)
		return fail("close", rc);

	int results[N], n = 0, v;
	while ((rc = cpat_chan_recv(merged, &v, NULL)) == 0)
		if (n < N)
			results[n++] = v;
	if (rc != -EPIPE)
		return fail("recv", rc);

	if ((rc = cpat_fan_wait(fout)) != 0)
		return fail("fan_out wait", rc);
	if ((rc = cpat_fan_wait(fin)) != 0)
		return fail("fan_in wait", rc);
	cpat_fan_destroy(fout);
	cpat_fan_destroy(fin);

	qsort(results, (size_t)n, sizeof(int), cmp_int);
	for (int i = 0; i < n; i++)
		printf("%d\n", results[i]);

	for (int i = 0; i < WORKERS; i++)
		cpat_chan_destroy(outs[i]);
	cpat_chan_destroy(merged);
	cpat_chan_destroy(in);
	return n == N ? 0 : 1;
}
