/*
 * Doors: the descriptors a channel or a token hands out so that an event
 * loop (poll, epoll, libuv, GLib) can wait on it. Never installed;
 * included after internal.h.
 *
 * A door is an eventfd on Linux (one descriptor, EFD_NONBLOCK |
 * EFD_CLOEXEC) and elsewhere a pipe whose two ends are non-blocking and
 * close-on-exec; the user waits on rfd, the library writes wfd (the same
 * descriptor for an eventfd). Define CPAT_DOOR_PIPE to build the pipe on
 * Linux too (a compile test of the portable path).
 *
 * The door itself keeps no state: whoever owns it decides when to post
 * and when to drain, and serialises the two (chan.c: a door lock; token.c:
 * the tree lock). post() makes the descriptor readable; drain() makes it
 * unreadable again, unless a post comes after it. Both retry on EINTR and
 * never block (a full pipe is already readable; an empty one is already
 * drained).
 */
#ifndef CPAT_DOOR_H
#define CPAT_DOOR_H

#include "internal.h"

#if !defined(__linux__) && !defined(CPAT_DOOR_PIPE)
#define CPAT_DOOR_PIPE 1
#endif

struct cpat__door {
	int rfd; /* what the user waits on */
	int wfd; /* what the library writes: rfd for an eventfd */
};

/* Sets both descriptors to -1: a door not opened (close is a no-op). */
static inline void cpat__door_init(struct cpat__door *d)
{
	d->rfd = d->wfd = -1;
}

/* Opens the door, not readable. 0, or -EMFILE, -ENFILE or -ENOMEM (the
 * descriptors could not be made); on error d stays closed. */
CPAT_HIDDEN int cpat__door_open(struct cpat__door *d);
/* Makes the door readable (a no-op if it already is). */
CPAT_HIDDEN void cpat__door_post(const struct cpat__door *d);
/* Makes the door unreadable (a no-op if it already is). */
CPAT_HIDDEN void cpat__door_drain(const struct cpat__door *d);
/* Closes the descriptors; the door is then closed (-1). */
CPAT_HIDDEN void cpat__door_close(struct cpat__door *d);

#endif /* CPAT_DOOR_H */
