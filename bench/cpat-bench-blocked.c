/*
 * CPU used by a thread blocked on an empty channel (the goal: under
 * 10 ms for 1 s). The thread spins for a bounded time, then parks on a
 * futex; this measures what that costs, with getrusage around one
 * recv_until of a given length (default 1 s).
 *
 * usage: cpat-bench-blocked [milliseconds]
 * Output: blocked ms=<wall> cpu_ms=<user+system> rc=<result>
 */
#include <cpattern.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

static double cpu_ms(void)
{
	struct rusage u;
	getrusage(RUSAGE_SELF, &u);
	return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e3 +
	       (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e3;
}

int main(int argc, char **argv)
{
	long ms = argc > 1 ? strtol(argv[1], NULL, 10) : 1000;
	if (ms <= 0) {
		fprintf(stderr, "usage: %s [milliseconds > 0]\n", argv[0]);
		return 2;
	}
	struct cpat_chan *ch;
	int v, rc = cpat_chan_create(&ch, sizeof v, 16);
	if (rc != 0) {
		fprintf(stderr, "chan_create: %s\n", cpat_strerror(rc));
		return 1;
	}
	double c0 = cpu_ms();
	int64_t t0 = cpat_now_ns();
	rc = cpat_chan_recv_until(ch, &v, NULL, t0 + ms * CPAT_MSEC);
	double wall = (double)(cpat_now_ns() - t0) / 1e6, cpu = cpu_ms() - c0;
	cpat_chan_destroy(ch);
	printf("blocked ms=%.1f cpu_ms=%.3f rc=%s\n", wall, cpu,
	       cpat_strerror(rc));
	return rc == -ETIMEDOUT ? 0 : 1;
}
