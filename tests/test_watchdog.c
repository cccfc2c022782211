/*
 * A test binary that hangs on purpose, for check-watchdog.sh: its one test
 * waits for a task that never starts (a pool of one worker held by a gated
 * task), so the harness's watchdog must fire, name the test, print every
 * thread's stack and the registered pool, and abort. Not part of the unit
 * suite: run alone it hangs until CPAT_TEST_TIMEOUT.
 */
#include "pool_testlib.h"

TH_TEST_FN(watchdog_hangs_on_purpose)
{
	(void)state;
	struct ctx c;
	ctx_init(&c);
	struct cpat_pool *p = mkpool(1, 4, CPAT_POOL_BLOCK);
	struct job j[2];
	submit_jobs(p, &c, j, 2, J_GATE);
	/* The second task waits behind the first, which waits for a gate
	 * that nobody opens. */
	wait_long(&c.started, 2);
	ctx_open(&c);
	cpat_pool_destroy(p);
	ctx_fini(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		TH_TEST(watchdog_hangs_on_purpose),
	};
	return TH_RUN("watchdog", tests);
}
