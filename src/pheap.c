/*
 * The pairing heap of pheap.h (Fredman, Sedgewick, Sleator and Tarjan),
 * with the two-pass merge of a removed node's children.
 */
#include "internal.h"

#include "pheap.h"

/* The heap of a and b (either may be NULL); the larger key becomes the
 * smaller's first child. */
static struct cpat__pheap *meld(struct cpat__pheap *a, struct cpat__pheap *b)
{
	if (!a)
		return b;
	if (!b)
		return a;
	if (b->key < a->key) {
		struct cpat__pheap *x = a;
		a = b;
		b = x;
	}
	b->prev = a;
	b->next = a->child;
	if (a->child)
		a->child->prev = b;
	a->child = b;
	return a;
}

/* Two-pass pairing of a sibling list into one heap: meld neighbours left
 * to right, then the pairs right to left. */
static struct cpat__pheap *merge_pairs(struct cpat__pheap *first)
{
	struct cpat__pheap *list = NULL;
	while (first) {
		struct cpat__pheap *a = first, *b = a->next;
		a->next = a->prev = NULL;
		if (!b) {
			a->next = list;
			list = a;
			break;
		}
		first = b->next;
		b->next = b->prev = NULL;
		struct cpat__pheap *m = meld(a, b);
		m->next = list;
		list = m;
	}
	struct cpat__pheap *res = NULL;
	while (list) {
		struct cpat__pheap *next = list->next;
		list->next = NULL;
		res = meld(res, list);
		list = next;
	}
	if (res)
		res->prev = NULL;
	return res;
}

void cpat__pheap_insert(struct cpat__pheap **root, struct cpat__pheap *n)
{
	n->child = n->next = n->prev = NULL;
	*root = meld(*root, n);
}

void cpat__pheap_remove(struct cpat__pheap **root, struct cpat__pheap *n)
{
	if (n == *root) {
		*root = merge_pairs(n->child);
	} else {
		if (n->prev->child == n)
			n->prev->child = n->next;
		else
			n->prev->next = n->next;
		if (n->next)
			n->next->prev = n->prev;
		*root = meld(*root, merge_pairs(n->child));
	}
	n->child = n->next = n->prev = NULL;
}
