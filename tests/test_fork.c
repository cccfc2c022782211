/*
 * fork(): the library's service threads (the timer thread of deadline
 * tokens, the signal thread of signal tokens) work again in a child, and a
 * pre-fork server (nothing made before fork, pools in each child) works.
 *
 * Each case forks a child that reports by its exit status; the parent (the
 * main test thread) waits for it with a bound, kills it past that, and
 * asserts. The child watches for its token with on_cancel writing into a
 * pipe and poll() on the pipe, so that only the service thread can make
 * the check pass (a blocking call that also reads the deadline itself
 * would hide a dead timer thread).
 */
#include <poll.h>
#include <signal.h>

#include "harness.h"

enum { CHILD_OK = 0, CHILD_NOT_FIRED = 10, CHILD_SETUP = 11, CHILD_BAD = 12 };

/* A forked child and the read end of a pipe whose only write end the
 * child holds: the pipe hangs up when the child exits, so the parent waits
 * for that with poll() and a bound, with no sleep. */
struct child {
	pid_t pid;
	int hup;
};

static void child_start(struct child *c, int (*fn)(long), long arg)
{
	int fds[2];
	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	c->pid = fork();
	assert_true(c->pid >= 0);
	if (c->pid == 0) {
		close(fds[0]);
		_exit(fn(arg));
	}
	close(fds[1]);
	c->hup = fds[0];
}

/* Waits for the child for at most 20 s (then kills it); returns its wait
 * status, or -1 if it had to be killed. */
static int child_wait(struct child *c)
{
	struct pollfd pfd = {.fd = c->hup, .events = POLLIN};
	int n;
	do
		n = poll(&pfd, 1, 20000);
	while (n < 0 && errno == EINTR);
	close(c->hup);
	int status = 0;
	if (n == 0) {
		kill(c->pid, SIGKILL);
		waitpid(c->pid, &status, 0);
		return -1;
	}
	waitpid(c->pid, &status, 0);
	return status;
}

static void write_byte(void *arg, int cause)
{
	(void)cause;
	char b = 1;
	ssize_t n = write(*(int *)arg, &b, 1);
	(void)n;
}

/* In the child: 0 if tok's on_cancel callback runs within 5 s. */
static int fired_within(struct cpat_token *tok)
{
	int fds[2];
	if (pipe(fds) != 0)
		return CHILD_SETUP;
	struct cpat_token_cb *h = NULL;
	if (cpat_token_on_cancel(tok, write_byte, &fds[1], &h) != 0)
		return CHILD_SETUP;
	struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
	int n = poll(&pfd, 1, 5000);
	cpat_token_on_cancel_remove(h);
	return n == 1 ? CHILD_OK : CHILD_NOT_FIRED;
}

static int child_deadline(long unused)
{
	(void)unused;
	struct cpat_token *tok;
	if (cpat_token_create_deadline(&tok, NULL,
				       cpat_now_ns() + 20 * CPAT_MSEC) != 0)
		return CHILD_SETUP;
	int rc = fired_within(tok);
	if (rc == CHILD_OK && cpat_token_status(tok) != -ETIMEDOUT)
		rc = CHILD_BAD;
	cpat_token_unref(tok);
	return rc;
}

TH_TEST_FN(deadline_token_fires_in_a_forked_child)
{
	(void)state;
	/* The parent's timer thread runs before the fork. */
	struct cpat_token *mine;
	assert_int_equal(cpat_token_create_deadline(
				 &mine, NULL, cpat_now_ns() + 3600 * CPAT_SEC),
			 0);
	struct child c;
	child_start(&c, child_deadline, 0);
	int st = child_wait(&c);
	assert_true(st != -1 && WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), CHILD_OK);
	assert_int_equal(cpat_token_status(mine), 0);
	cpat_token_unref(mine);
}

static int child_signal(long unused)
{
	(void)unused;
	int sig = SIGUSR2;
	struct cpat_token *tok;
	if (cpat_token_create_signals(&tok, NULL, &sig, 1) != 0)
		return CHILD_SETUP;
	if (kill(getpid(), SIGUSR2) != 0)
		return CHILD_SETUP;
	int rc = fired_within(tok);
	cpat_token_unref(tok);
	return rc;
}

TH_TEST_FN(signal_token_fires_in_a_forked_child_and_not_in_the_parent)
{
	(void)state;
	int sig = SIGUSR2;
	struct cpat_token *mine;
	assert_int_equal(cpat_token_create_signals(&mine, NULL, &sig, 1), 0);
	struct child c;
	child_start(&c, child_signal, 0);
	int st = child_wait(&c);
	assert_true(st != -1 && WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), CHILD_OK);
	/* The child's signal went through its own pipe, not the parent's. */
	assert_int_equal(cpat_token_status(mine), 0);
	cpat_token_unref(mine);
}

/* No signal token in the child: the signal's default action (terminate)
 * applies, as it did before the parent watched it. */
static int child_raise(long sig)
{
	kill(getpid(), (int)sig);
	return CHILD_BAD;
}

TH_TEST_FN(forked_child_gets_back_the_default_action_of_a_watched_signal)
{
	(void)state;
	int sig = SIGUSR2;
	struct cpat_token *mine;
	assert_int_equal(cpat_token_create_signals(&mine, NULL, &sig, 1), 0);
	struct child c;
	child_start(&c, child_raise, SIGUSR2);
	int st = child_wait(&c);
	assert_true(st != -1);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGUSR2);
	cpat_token_unref(mine);
}

static int square(void *arg, struct cpat_token *tok)
{
	(void)tok;
	atomic_fetch_add((_Atomic long *)arg, 1);
	return 0;
}

/* A worker process of a pre-fork server: its own pool and deadline. */
static int child_server(long tasks)
{
	_Atomic long ran = 0;
	struct cpat_pool_opts o;
	cpat_pool_opts_init(&o);
	o.workers = 2;
	struct cpat_pool *pool;
	if (cpat_pool_create(&pool, &o) != 0)
		return CHILD_SETUP;
	struct cpat_token *tok;
	if (cpat_token_create_deadline(&tok, NULL,
				       cpat_now_ns() + 10 * CPAT_SEC) != 0)
		return CHILD_SETUP;
	for (long i = 0; i < tasks; i++) {
		struct cpat_task t = {.fn = square, .arg = (void *)&ran};
		if (cpat_pool_submit(pool, &t, tok) != 0)
			return CHILD_BAD;
	}
	struct cpat_pool_report r;
	int rc = cpat_pool_shutdown(pool, CPAT_POOL_DRAIN,
				    cpat_now_ns() + 10 * CPAT_SEC, &r);
	cpat_pool_destroy(pool);
	cpat_token_unref(tok);
	return rc == 0 && atomic_load(&ran) == tasks ? CHILD_OK : CHILD_BAD;
}

TH_TEST_FN(prefork_server_makes_its_pools_in_each_child)
{
	(void)state;
	enum { N = 3 };
	long tasks = TH_SCALED(200);
	struct child c[N];
	for (int i = 0; i < N; i++)
		child_start(&c[i], child_server, tasks);
	int st[N];
	for (int i = 0; i < N; i++)
		st[i] = child_wait(&c[i]);
	for (int i = 0; i < N; i++) {
		assert_true(st[i] != -1 && WIFEXITED(st[i]));
		assert_int_equal(WEXITSTATUS(st[i]), CHILD_OK);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		TH_TEST(deadline_token_fires_in_a_forked_child),
		TH_TEST(signal_token_fires_in_a_forked_child_and_not_in_the_parent),
		TH_TEST(forked_child_gets_back_the_default_action_of_a_watched_signal),
		TH_TEST(prefork_server_makes_its_pools_in_each_child),
	};
	size_t n = sizeof(tests) / sizeof(tests[0]);
	const struct CMUnitTest *run = tests;
	if (TSAN) {
		/* TSan's runtime loses track of thread ids in a child forked
		 * from a threaded process (the harness's watchdog runs) and
		 * stops the child ("dup thread with used id") once it starts
		 * several threads. The pools themselves are checked under
		 * TSan by the pool suite; here the last case is left out. */
		fprintf(stderr,
			"# not run under TSan: "
			"prefork_server_makes_its_pools_in_each_child\n");
		n--;
	} else if (SANITIZED && !getenv("CPAT_FORK_ALL")) {
		/* ASan's runtime here (gcc 12's libasan) takes no lock of its
		 * allocator around fork(): when another thread of
		 * the parent (the harness's watchdog, the parent's own timer
		 * thread) is inside malloc at that moment, the child inherits
		 * the size class's mutex locked, and the first allocation of
		 * that class in the child waits for ever. Looped 40 times with
		 * these cases, 8 children hung so; gdb showed the restarted
		 * timer thread inside pthread_create's calloc, blocked on
		 * __sanitizer::Mutex::Lock in the primary allocator. glibc's
		 * malloc locks its arenas around fork(), so the plain, clang,
		 * portable and TSan builds run these cases (later sanitizer
		 * runtimes install the same fork handler). The prefork case
		 * hangs the same way (1 run in 40 or fewer, more beside a
		 * busy process): gdb showed a child's pool workers all
		 * blocked on that mutex, allocating 8192 bytes, and its main
		 * thread waiting for them in cpat_pool_shutdown(). So it is
		 * left out too. CPAT_FORK_ALL=1 runs them here anyway. */
		fprintf(stderr,
			"# not run under ASan: the two service-thread restart "
			"cases and the prefork case (CPAT_FORK_ALL=1 runs "
			"them)\n");
		run = tests + 2;
		n -= 3;
	}
	th_seed();
	return th_run_selected("fork", run, n);
}
