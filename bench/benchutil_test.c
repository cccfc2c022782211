/*
 * Checks of benchutil's helpers: which run a scenario reports, the fsync
 * that keeps one run's writeback out of the next, the mixer and the
 * comparator, and the offered-load search.
 * Exit status 0 if all hold; each failure is printed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "benchutil.h"

static int failures;

static void expect_median(const char *what, const int64_t *v, size_t n,
			  size_t want)
{
	size_t got = bu_median_index(v, n);
	if (got != want) {
		printf("FAIL %s: median index %zu, expected %zu\n", what, got,
		       want);
		failures++;
	}
}

static void expect_next(const char *what, double lo, double hi, double want)
{
	double got = bu_load_next(lo, hi, 400000, 100);
	if (got != want) {
		printf("FAIL %s: next rate %.1f, expected %.1f\n", what, got,
		       want);
		failures++;
	}
}

int main(void)
{
	const int64_t one[] = {42};
	expect_median("one run", one, 1, 0);
	const int64_t odd[] = {300, 100, 200};
	expect_median("odd count", odd, 3, 2);
	/* Even count: the lower of the two middle values (200 at 3). */
	const int64_t even[] = {400, 100, 300, 200};
	expect_median("even count", even, 4, 3);
	const int64_t two[] = {9, 5};
	expect_median("two runs", two, 2, 1);
	/* Equal values: any of them is the median's value. */
	const int64_t same[] = {7, 7, 7, 7, 7};
	size_t m = bu_median_index(same, 5);
	if (m >= 5) {
		printf("FAIL equal values: index %zu out of range\n", m);
		failures++;
	}
	const int64_t sorted[] = {1, 2, 3, 4, 5, 6, 7};
	expect_median("sorted", sorted, 7, 3);
	const int64_t rev[] = {7, 6, 5, 4, 3, 2, 1};
	expect_median("reversed", rev, 7, 3);
	/* Outliers on one side do not move the median. */
	const int64_t outl[] = {100, 1, 101, 99, 1000000};
	expect_median("outliers", outl, 5, 0);
	/* More than 64: the first 64 count (their median is 31 of 0..63). */
	int64_t many[80];
	for (int i = 0; i < 80; i++)
		many[i] = i < 64 ? 63 - i : -1000;
	expect_median("more than 64", many, 80, 32);
	/* bu_sync_file: 0 for a written file, -1 with ENOENT for none. */
	char tmpl[] = "/tmp/benchutil-test-XXXXXX";
	int fd = mkstemp(tmpl);
	if (fd < 0 || write(fd, "x", 1) != 1 || bu_sync_file(tmpl) != 0) {
		printf("FAIL bu_sync_file on a written file\n");
		failures++;
	}
	if (fd >= 0) {
		close(fd);
		unlink(tmpl);
	}
	errno = 0;
	if (bu_sync_file(tmpl) != -1 || errno != ENOENT) {
		printf("FAIL bu_sync_file on a missing file\n");
		failures++;
	}
	/* bu_mix: MurmurHash3's finalizer, so the scenarios' synthetic data
	 * stays what it was. */
	if (bu_mix(0) != 0 || bu_mix(1) != 0xb456bcfc34c2cb2cull ||
	    bu_mix(12345) != 0x17d2abfbf90baef9ull) {
		printf("FAIL bu_mix: not MurmurHash3's fmix64\n");
		failures++;
	}
	/* bu_cmp_double: qsort sorts ascending with it. */
	double d[] = {2.5, -1.0, 1e9, 0.0, 2.5, -3e-9};
	const double want[] = {-1.0, -3e-9, 0.0, 2.5, 2.5, 1e9};
	qsort(d, sizeof d / sizeof d[0], sizeof d[0], bu_cmp_double);
	for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) {
		if (d[i] != want[i]) {
			printf("FAIL bu_cmp_double: [%zu] = %g, expected %g\n",
			       i, d[i], want[i]);
			failures++;
		}
	}
	/* The offered-load search: up by doubling, down by quartering,
	 * then bisecting to within 10% of the highest pass. */
	expect_next("all passed", 10000, 0, 20000);
	expect_next("all passed, at the cap", 320000, 0, 0);
	expect_next("none passed", 0, 10000, 2500);
	expect_next("none passed, at the floor", 0, 200, 0);
	expect_next("bisect", 80000, 160000, 120000);
	expect_next("within 10%", 100000, 110000, 0);
	struct bu_load t = {
		.rate = 10000, .achieved = 9500, .p99 = 99e6, .ok = 1};
	if (!bu_load_passes(&t)) {
		printf("FAIL a trial at 95%% with p99 99 ms must pass\n");
		failures++;
	}
	t.achieved = 9400;
	int behind = bu_load_passes(&t);
	t.achieved = 9500, t.p99 = 100e6;
	int slow = bu_load_passes(&t);
	t.p99 = 1e6, t.ok = 0;
	int lost = bu_load_passes(&t);
	if (behind || slow || lost) {
		printf("FAIL behind %d, p99 at 100 ms %d, not ok %d: each must "
		       "fail\n",
		       behind, slow, lost);
		failures++;
	}
	printf("%s\n", failures ? "benchutil: FAILED" : "benchutil: ok");
	return failures != 0;
}
