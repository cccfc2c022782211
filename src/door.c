/*
 * Doors (door.h): an eventfd on Linux, a non-blocking close-on-exec pipe
 * elsewhere or with CPAT_DOOR_PIPE.
 */
#include "internal.h"

#include "door.h"

#include <fcntl.h>
#include <unistd.h>

#ifndef CPAT_DOOR_PIPE
#include <sys/eventfd.h>
#endif

/* What a failed descriptor call leaves in errno, in the library's terms. */
static int door_errno(void)
{
	int e = errno;
	return e == EMFILE || e == ENFILE ? -e : -ENOMEM;
}

#ifndef CPAT_DOOR_PIPE

int cpat__door_open(struct cpat__door *d)
{
	int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (fd < 0) {
		cpat__door_init(d);
		return door_errno();
	}
	d->rfd = d->wfd = fd;
	return 0;
}

void cpat__door_post(const struct cpat__door *d)
{
	int e = errno;
	uint64_t one = 1;
	/* EAGAIN only when the counter would overflow: readable anyway. */
	while (write(d->wfd, &one, sizeof one) < 0 && errno == EINTR)
		;
	errno = e;
}

void cpat__door_drain(const struct cpat__door *d)
{
	int e = errno;
	uint64_t n;
	/* Not a semaphore eventfd: one read takes the whole count. EAGAIN:
	 * it was zero. */
	while (read(d->rfd, &n, sizeof n) < 0 && errno == EINTR)
		;
	errno = e;
}

void cpat__door_close(struct cpat__door *d)
{
	if (d->rfd >= 0)
		close(d->rfd);
	cpat__door_init(d);
}

#else /* CPAT_DOOR_PIPE */

/* Non-blocking and close-on-exec, set at once where pipe2() exists;
 * elsewhere (macOS) with fcntl() after pipe(), with a window in which a
 * concurrent fork+exec of another thread inherits the descriptors (the
 * program it runs does not know them). */
static int pipe_nb_cloexec(int fds[2])
{
#if defined(__linux__) || defined(__FreeBSD__) || defined(__NetBSD__) || \
	defined(__OpenBSD__) || defined(__DragonFly__)
	return pipe2(fds, O_NONBLOCK | O_CLOEXEC);
#else
	if (pipe(fds) != 0)
		return -1;
	for (int i = 0; i < 2; i++) {
		int fl = fcntl(fds[i], F_GETFL);
		if (fl < 0 || fcntl(fds[i], F_SETFL, fl | O_NONBLOCK) != 0 ||
		    fcntl(fds[i], F_SETFD, FD_CLOEXEC) != 0) {
			int e = errno;
			close(fds[0]);
			close(fds[1]);
			errno = e;
			return -1;
		}
	}
	return 0;
#endif
}

int cpat__door_open(struct cpat__door *d)
{
	int fds[2];
	if (pipe_nb_cloexec(fds) != 0) {
		cpat__door_init(d);
		return door_errno();
	}
	d->rfd = fds[0];
	d->wfd = fds[1];
	return 0;
}

void cpat__door_post(const struct cpat__door *d)
{
	int e = errno;
	char b = 0;
	/* EAGAIN: the pipe is full, so readable already. */
	while (write(d->wfd, &b, 1) < 0 && errno == EINTR)
		;
	errno = e;
}

void cpat__door_drain(const struct cpat__door *d)
{
	int e = errno;
	char buf[64];
	for (;;) {
		ssize_t n = read(d->rfd, buf, sizeof buf);
		if (n == (ssize_t)sizeof buf || (n < 0 && errno == EINTR))
			continue;
		break; /* short read, or EAGAIN: empty */
	}
	errno = e;
}

void cpat__door_close(struct cpat__door *d)
{
	if (d->rfd >= 0)
		close(d->rfd);
	if (d->wfd >= 0)
		close(d->wfd);
	cpat__door_init(d);
}

#endif /* CPAT_DOOR_PIPE */
