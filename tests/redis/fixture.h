/*
 * A real redis-server for the tests of the cpattern-redis module: started
 * on a unix socket in a fresh mkdtemp() directory (port 0: no TCP port),
 * with append-only persistence (fsync on every write, so a restart keeps
 * everything acknowledged) and no RDB snapshots, stopped and removed at
 * the end so that nothing is left behind. The system's redis service is
 * never used.
 *
 * Where redis-server is not installed, rfx_start() returns -1 after
 * printing the package to install: the test then skips (never passes).
 *
 * The distributed benchmark (bench/cpat-bench-distributed.c) starts its
 * server with this too, with rfx_start_fsync(f, "everysec"): Redis's
 * default append-only policy, what a deployment would run.
 */
#ifndef CPAT_REDIS_FIXTURE_H
#define CPAT_REDIS_FIXTURE_H

#include <ftw.h>
#include <stdarg.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <hiredis/hiredis.h>

#define RFX_INSTALL "apt-get install redis-server libhiredis-dev"

struct rfx {
	char dir[64];
	char sock[128];
	char url[160];
	char server[512];
	char fsync[16]; /* appendfsync: "always" (tests) or "everysec" */
	pid_t pid;
};

/* redis-server on PATH (or $REDIS_SERVER): 0 and its path, or -1. */
static inline int rfx_find_server(char *out, size_t len)
{
	const char *env = getenv("REDIS_SERVER");
	if (env && *env && access(env, X_OK) == 0) {
		snprintf(out, len, "%s", env);
		return 0;
	}
	const char *path = getenv("PATH");
	char buf[4096];
	snprintf(buf, sizeof buf, "%s", path ? path : "/usr/bin:/bin");
	for (char *save = NULL, *d = strtok_r(buf, ":", &save); d;
	     d = strtok_r(NULL, ":", &save)) {
		snprintf(out, len, "%s/redis-server", d);
		if (access(out, X_OK) == 0)
			return 0;
	}
	return -1;
}

/*
 * Starts @p path with @p argv, its standard input, output and error taken
 * from @p in, @p out and @p err (-1: inherited), tied to the calling
 * thread: it gets SIGKILL when that thread ends, so a test that aborts or
 * is killed by its timeout leaves no server or consumer process behind
 * (holding the socket, or its parent's output pipes). Call it from the
 * thread that outlives the process (the test's main thread). Returns the
 * pid, or -1. fork + exec rather than posix_spawn, for the prctl between
 * them; only async-signal-safe calls run in the child.
 */
static inline pid_t rfx_spawn_tied(const char *path, char *const argv[], int in,
				   int out, int err)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == 0) {
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 ||
		    getppid() != parent)
			_exit(127);
		if ((in >= 0 && dup2(in, 0) < 0) ||
		    (out >= 0 && dup2(out, 1) < 0) ||
		    (err >= 0 && dup2(err, 2) < 0))
			_exit(127);
		extern char **environ;
		execve(path, argv, environ);
		_exit(127);
	}
	return pid;
}

/* The program a test's processes run, named by the environment variable
 * @p env (the build sets it); aborts, saying so, when it does not name an
 * executable (@p what says which program was meant). */
static inline const char *rfx_helper_path(const char *env, const char *what)
{
	const char *p = getenv(env);
	if (!p || access(p, X_OK) != 0) {
		fprintf(stderr, "%s does not name the %s\n", env, what);
		abort();
	}
	return p;
}

static inline int rfx_spawn(struct rfx *f)
{
	char log[160];
	snprintf(log, sizeof log, "%s/redis.log", f->dir);
	char *argv[] = {f->server, "--port",           "0",   "--unixsocket",
			f->sock,   "--unixsocketperm", "700", "--dir",
			f->dir,    "--appendonly",     "yes", "--appendfsync",
			f->fsync,  "--save",           "",    "--daemonize",
			"no",      "--logfile",        log,   NULL};
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (null < 0)
		return -1;
	pid_t pid = rfx_spawn_tied(f->server, argv, null, -1, -1);
	close(null);
	if (pid < 0)
		return -1;
	f->pid = pid;
	return 0;
}

/* A fresh context on the fixture's socket, or NULL. */
static inline redisContext *rfx_connect(const struct rfx *f)
{
	struct timeval tv = {1, 0};
	redisContext *c = redisConnectUnixWithTimeout(f->sock, tv);
	if (c && c->err) {
		redisFree(c);
		return NULL;
	}
	if (c)
		redisSetTimeout(c, (struct timeval){5, 0});
	return c;
}

/* Polls PING until the server answers PONG (not LOADING), for at most
 * 10 s: the server's own start-up, not a thread of ours, is waited for. */
static inline int rfx_wait_ready(const struct rfx *f)
{
	int64_t end = cpat_now_ns() + 10 * CPAT_SEC;
	while (cpat_now_ns() < end) {
		redisContext *c = rfx_connect(f);
		if (c) {
			redisReply *r = redisCommand(c, "PING");
			int ok = r && r->type == REDIS_REPLY_STATUS &&
				 strcmp(r->str, "PONG") == 0;
			if (r)
				freeReplyObject(r);
			redisFree(c);
			if (ok)
				return 0;
		}
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return -1;
}

/* SIGTERM (a clean shutdown: the append-only file is flushed), then
 * SIGKILL if it has not exited after 10 s; always reaped. */
static inline void rfx_stop_server(struct rfx *f)
{
	if (f->pid <= 0)
		return;
	kill(f->pid, SIGTERM);
	int64_t end = cpat_now_ns() + 10 * CPAT_SEC;
	int st;
	for (;;) {
		pid_t w = waitpid(f->pid, &st, WNOHANG);
		if (w == f->pid || (w < 0 && errno != EINTR))
			break;
		if (cpat_now_ns() > end) {
			kill(f->pid, SIGKILL);
			waitpid(f->pid, &st, 0);
			break;
		}
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	f->pid = 0;
}

/* Runs a command that answers an integer and returns it; aborts (the test
 * fails) on anything else. */
static inline long long rfx_int(redisContext *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(c, fmt, ap);
	va_end(ap);
	if (!r || r->type != REDIS_REPLY_INTEGER) {
		fprintf(stderr, "expected an integer: %s\n",
			r ? (r->str ? r->str : "?") : c->errstr);
		abort();
	}
	long long v = r->integer;
	freeReplyObject(r);
	return v;
}

static inline int rfx_rm(const char *p, const struct stat *sb, int flag,
			 struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static inline void rfx_stop(struct rfx *f)
{
	rfx_stop_server(f);
	if (f->dir[0])
		nftw(f->dir, rfx_rm, 16, FTW_DEPTH | FTW_PHYS);
	f->dir[0] = '\0';
}

/* Stops the server and starts it again on the same socket and directory:
 * it reloads its append-only file. */
static inline int rfx_restart(struct rfx *f)
{
	rfx_stop_server(f);
	if (rfx_spawn(f) != 0)
		return -1;
	return rfx_wait_ready(f);
}

/* For a test binary's main(): without redis-server nothing in it means
 * anything, so the whole binary skips (a TAP plan of 0 with SKIP, which
 * Meson reports as a skip, never as a pass) naming @p install, the
 * packages to install. Returns true when it printed that skip. */
static inline bool rfx_skip_binary(const char *install)
{
	char server[512];
	if (rfx_find_server(server, sizeof server) == 0)
		return false;
	printf("1..0 # SKIP redis-server not found; to run these tests: "
	       "%s\n",
	       install);
	return true;
}

/* 0: running; -1: redis-server missing (a SKIP line printed). Aborts if
 * it is there but does not start. @p fsync: the appendfsync policy. */
static inline int rfx_start_fsync(struct rfx *f, const char *fsync)
{
	memset(f, 0, sizeof *f);
	snprintf(f->fsync, sizeof f->fsync, "%s", fsync);
	if (rfx_find_server(f->server, sizeof f->server) != 0) {
		printf("# SKIP: redis-server not found; to run these tests: "
		       "%s\n",
		       RFX_INSTALL);
		fflush(stdout);
		return -1;
	}
	const char *tmp = getenv("TMPDIR");
	snprintf(f->dir, sizeof f->dir, "%s/cpat-redis-XXXXXX",
		 tmp && strlen(tmp) < 32 ? tmp : "/tmp");
	if (!mkdtemp(f->dir)) {
		perror("mkdtemp");
		abort();
	}
	snprintf(f->sock, sizeof f->sock, "%s/redis.sock", f->dir);
	snprintf(f->url, sizeof f->url, "unix://%s", f->sock);
	if (rfx_spawn(f) != 0 || rfx_wait_ready(f) != 0) {
		fprintf(stderr, "redis-server did not start (log in %s)\n",
			f->dir);
		rfx_stop_server(f);
		abort();
	}
	return 0;
}

/* The tests' server: every write fsync'ed. */
static inline int rfx_start(struct rfx *f)
{
	return rfx_start_fsync(f, "always");
}

#endif /* CPAT_REDIS_FIXTURE_H */
