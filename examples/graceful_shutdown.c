/*
 * The Go guide's graceful shutdown of a server: a small HTTP/1.0 server on
 * 127.0.0.1 whose requests are slow (--work-ms) and run on a pool. On
 * SIGINT or SIGTERM it stops accepting, gives the requests in flight up to
 * --grace-ms to finish (the guide's 30 s), then forces them, and says
 * which happened.
 *
 * usage: graceful_shutdown [--port N] [--work-ms MS] [--grace-ms MS]
 * The first line on stdout is the port (useful with --port 0).
 *
 * The signal token fires on the signal; the accept loop polls the token's
 * door (cpat_token_fd(): a descriptor readable once the token has fired)
 * beside the listening socket. The pool's token fires when the grace
 * period is over: requests wait on it, so a forced shutdown ends them at
 * once.
 */
#define _POSIX_C_SOURCE 200809L /* sockets, MSG_NOSIGNAL */
#include <cpattern.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int64_t work_ns = 200 * CPAT_MSEC;
static atomic_uint cut_short; /* requests stopped by the forced shutdown */

struct conn {
	int fd;
	int started;
};

static void reply(int fd, const char *status, const char *body)
{
	char buf[256];
	int n = snprintf(buf, sizeof(buf),
			 "HTTP/1.0 %s\r\nContent-Type: "
			 "text/plain\r\nContent-Length: %zu\r\n\r\n%s",
			 status, strlen(body), body);
	if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n)
		perror("send"); /* the client went away: nothing more to do */
}

static int handle(void *arg, struct cpat_token *tok)
{
	struct conn *c = arg;
	char req[2048], path[256] = "?";
	c->started = 1;
	ssize_t n = recv(c->fd, req, sizeof(req) - 1, 0); /* 2 s timeout */
	if (n <= 0)
		return -EIO;
	req[n] = '\0';
	if (sscanf(req, "GET %255s", path) != 1) {
		reply(c->fd, "400 Bad Request", "bad request\n");
		return 0;
	}
	printf("request %s started\n", path);
	/* The slow work: waits on the pool token, which fires when the grace
	 * period is over. -ETIMEDOUT: the work is done; 0: the token fired,
	 * stop now. */
	int rc = cpat_token_wait(tok, cpat_now_ns() + work_ns);
	if (rc != 0 && rc != -ETIMEDOUT)
		return rc;
	if (rc == 0) {
		reply(c->fd, "503 Service Unavailable", "shutting down\n");
		printf("request %s forced\n", path);
		atomic_fetch_add(&cut_short, 1);
		return -ECANCELED;
	}
	reply(c->fd, "200 OK", "done\n");
	printf("request %s finished\n", path);
	return 0;
}

static void finished(void *arg, int rc)
{
	struct conn *c = arg;
	if (!c->started) { /* never ran: shutdown discarded it */
		reply(c->fd, "503 Service Unavailable", "shutting down\n");
		atomic_fetch_add(&cut_short, 1);
	}
	close(c->fd);
	free(c);
}

static int fail(const char *what, int rc)
{
	fprintf(stderr, "%s: %s\n", what, cpat_strerror(rc));
	return 1;
}

int main(int argc, char **argv)
{
	int port = 8080;
	int64_t grace_ns = 30 * CPAT_SEC;
	for (int i = 1; i < argc; i += 2) {
		long v = i + 1 < argc ? atol(argv[i + 1]) : -1;
		if (strcmp(argv[i], "--port") == 0 && v >= 0 && v < 65536)
			port = (int)v;
		else if (strcmp(argv[i], "--work-ms") == 0 && v >= 0)
			work_ns = v * CPAT_MSEC;
		else if (strcmp(argv[i], "--grace-ms") == 0 && v >= 0)
			grace_ns = v * CPAT_MSEC;
		else {
			fprintf(stderr,
				"usage: %s [--port N] [--work-ms MS] "
				"[--grace-ms MS]\n",
				argv[0]);
			return 2;
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);

	int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	socklen_t alen = sizeof(a);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* 127.0.0.1 only */
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, 4) < 0 ||
	    bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(lfd, 64) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&a, &alen) < 0) {
		perror("listen on 127.0.0.1");
		return 1;
	}
	printf("%d\nlistening on http://127.0.0.1:%d/\n", ntohs(a.sin_port),
	       ntohs(a.sin_port));

	struct cpat_token *stop;
	const int sigs[] = {SIGINT, SIGTERM};
	int rc, stopfd;
	if ((rc = cpat_token_create_signals(&stop, NULL, sigs, 2)) != 0)
		return fail("token_create_signals", rc);
	/* Readable once the token has fired; owned by the token. */
	if ((rc = cpat_token_fd(stop, &stopfd)) != 0)
		return fail("token_fd", rc);

	struct cpat_pool *pool;
	struct cpat_pool_opts o;
	cpat_pool_opts_init(&o);
	o.workers = 4;
	o.policy = CPAT_POOL_REJECT; /* overloaded: answer 503 at once */
	if ((rc = cpat_pool_create(&pool, &o)) != 0)
		return fail("pool_create", rc);

	struct pollfd pfd[2] = {{lfd, POLLIN, 0}, {stopfd, POLLIN, 0}};
	while (cpat_token_status(stop) == 0) {
		/* EINTR, or the door: loop to re-check the token. */
		if (poll(pfd, 2, -1) < 0 || !(pfd[0].revents & POLLIN))
			continue;
		int fd = accept(lfd, NULL, NULL);
		/* A silent client holds a worker for 2 s at most. */
		struct timeval tv = {2, 0};
		struct conn *c = NULL;
		int ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv,
					       sizeof(tv)) == 0;
		if (!ok || (c = calloc(1, sizeof(*c))) == NULL) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		c->fd = fd;
		struct cpat_task t = {.fn = handle, .done = finished, .arg = c};
		if ((rc = cpat_pool_submit(pool, &t, NULL)) != 0) {
			reply(fd, "503 Service Unavailable", "busy\n");
			close(fd);
			free(c);
		}
	}
	close(lfd); /* stop accepting */

	struct cpat_pool_stats s;
	if ((rc = cpat_pool_stats(pool, &s)) != 0)
		return fail("pool_stats", rc);
	unsigned long long inflight = s.running + s.queued;
	printf("signal: stopped accepting, %llu requests in flight, grace "
	       "period %.1f s\n",
	       inflight, (double)grace_ns / 1e9);
	rc = cpat_pool_shutdown(pool, CPAT_POOL_DRAIN, cpat_now_ns() + grace_ns,
				NULL);
	if (rc != 0 && rc != -ETIMEDOUT)
		return fail("pool_shutdown", rc);
	/* On -ETIMEDOUT the pool token is cancelled: the requests still
	 * running stop at once, and destroy waits for them. They count
	 * themselves (the report's still_running is read after the cancel,
	 * so it misses those that have already stopped). */
	cpat_pool_destroy(pool);
	if (rc == 0)
		printf("graceful: all %llu in-flight requests finished\n",
		       inflight);
	else
		printf("forced: %u requests still running after the grace "
		       "period\n",
		       atomic_load(&cut_short));
	cpat_token_unref(stop); /* closes stopfd */
	return 0;
}
