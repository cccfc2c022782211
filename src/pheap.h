/*
 * An intrusive pairing heap of deadlines: the timer threads' queue of
 * deadline tokens (token.c) and of timers (timer.c). Never installed.
 *
 * A node lives inside the object it orders (no allocation); the caller
 * keeps the root and guards the heap with its own lock. Insert and meld are
 * O(1), removing the minimum or any node O(log n) amortised, and removal of
 * an arbitrary node (a token released, a timer stopped) needs no search:
 * each node links to its first child, its next sibling, and its previous
 * sibling or, for a first child, its parent.
 */
#ifndef CPAT_PHEAP_H
#define CPAT_PHEAP_H

#include "internal.h"

struct cpat__pheap {
	struct cpat__pheap *child, *next, *prev;
	int64_t key; /* the deadline, CLOCK_MONOTONIC ns */
};

/* The container of a node: CPAT__PHEAP_OF(node, struct cpat_timer, hp). */
#define CPAT__PHEAP_OF(node, type, member) \
	((type *)(void *)((char *)(node)-offsetof(type, member)))

/* Adds n (its key set) to the heap at *root. */
CPAT_HIDDEN void cpat__pheap_insert(struct cpat__pheap **root,
				    struct cpat__pheap *n);

/* Takes n, which is in the heap at *root, out of it. */
CPAT_HIDDEN void cpat__pheap_remove(struct cpat__pheap **root,
				    struct cpat__pheap *n);

#endif /* CPAT_PHEAP_H */
