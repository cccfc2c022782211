#!/bin/sh
# The harness's watchdog turns a hang into a named failure with evidence:
# runs test_watchdog (one test that hangs on purpose) with a 1 s timeout and
# checks that it aborts, names the test and, when gdb is installed, prints
# the stacks (the main thread in wait_long) and the registered pool.
# usage: check-watchdog.sh TEST_WATCHDOG_BINARY
bin=$1
out=$(CPAT_TEST_TIMEOUT=1 CMOCKA_MESSAGE_OUTPUT=STDOUT "$bin" 2>&1)
rc=$?
fail() { echo "not ok: $1"; echo "$out" | sed 's/^/# /' | tail -40; exit 1; }
[ "$rc" -ne 0 ] || fail "the hanging test exited 0"
echo "$out" | grep -q "WATCHDOG: test 'watchdog_hangs_on_purpose' exceeded its timeout" ||
	fail "the watchdog did not name the test"
if [ "${CPAT_TEST_WATCHDOG_GDB:-1}" != 0 ] && command -v gdb >/dev/null 2>&1; then
	echo "$out" | grep -q " wait_long (" || fail "no stack of the waiting main thread"
	echo "$out" | grep -q " worker_main (" || fail "no stack of the pool's worker"
	echo "$out" | grep -q "alive = 1" || fail "the registered pool was not printed"
	echo "ok: the watchdog named the test and printed the stacks and the pool"
else
	echo "ok: the watchdog named the test (gdb not installed: no stacks)"
fi
