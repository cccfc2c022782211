/*
 * DESIGN: the process-wide pieces every module uses.
 *
 * The allocator hook is the only process-wide setting: two atomic
 * pointers, NULL meaning malloc() and free(). The contract forbids
 * changing the allocator while objects are alive, so nothing here makes a
 * change safe for blocks already allocated; the ordering only keeps a
 * racing caller's error from getting worse. cpat_set_allocator() stores
 * the free function first, then the malloc function, both with release;
 * cpat__malloc() and cpat__free() load them with acquire. So a block
 * allocated through the new malloc function is freed through the new free
 * function (the freeing thread got the block from the allocating one,
 * which orders it after the free function's store), and a thread that
 * calls a hook sees every write made before cpat_set_allocator() (the
 * hook's own set-up). A call racing the change may still use either
 * allocator.
 */
#include "internal.h"
#include "testhooks.h"

#include <pthread.h>
#include <stdio.h>
#include <time.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "cpattern/version.h"

static _Atomic(cpat_malloc_fn) g_malloc;
static _Atomic(cpat_free_fn) g_free;

int cpat_set_allocator(cpat_malloc_fn malloc_fn, cpat_free_fn free_fn)
{
	if ((malloc_fn == NULL) != (free_fn == NULL))
		return -EINVAL;
	/* free first: see the design note. */
	atomic_store_explicit(&g_free, free_fn, memory_order_release);
	atomic_store_explicit(&g_malloc, malloc_fn, memory_order_release);
	return 0;
}

void *cpat__malloc(size_t size)
{
	cpat_malloc_fn fn =
		atomic_load_explicit(&g_malloc, memory_order_acquire);
	if (size == 0)
		size = 1;
	return fn ? fn(size) : malloc(size);
}

void *cpat__calloc(size_t n, size_t size)
{
	if (size != 0 && n > SIZE_MAX / size)
		return NULL;
	void *p = cpat__malloc(n * size);
	if (p)
		memset(p, 0, n * size);
	return p;
}

void cpat__free(void *ptr)
{
	if (!ptr)
		return;
	cpat_free_fn fn = atomic_load_explicit(&g_free, memory_order_acquire);
	if (fn)
		fn(ptr);
	else
		free(ptr);
}

/*
 * Aligned blocks: over-allocate by align, and keep the offset back to the
 * block the hook returned in the size_t just before the aligned address.
 */
void *cpat__malloc_aligned(size_t size, size_t align)
{
	if (align < sizeof(size_t) || (align & (align - 1)) != 0 ||
	    align > 4096)
		return NULL;
	if (size > SIZE_MAX - align - sizeof(size_t))
		return NULL;
	unsigned char *raw = cpat__malloc(size + align + sizeof(size_t));
	if (!raw)
		return NULL;
	uintptr_t start = (uintptr_t)(raw + sizeof(size_t));
	uintptr_t aligned = (start + align - 1) & ~(uintptr_t)(align - 1);
	size_t off = (size_t)(aligned - (uintptr_t)raw);
	memcpy((unsigned char *)aligned - sizeof(size_t), &off, sizeof off);
	return (void *)aligned;
}

void cpat__free_aligned(void *ptr)
{
	if (!ptr)
		return;
	size_t off;
	memcpy(&off, (unsigned char *)ptr - sizeof(size_t), sizeof off);
	cpat__free((unsigned char *)ptr - off);
}

/*
 * Thread creation with failure injection for tests. The counters are
 * process-wide test state, not configuration: with injection off (k = 0)
 * they only count.
 */
static _Atomic long g_thread_starts, g_thread_fail_k;
static _Atomic bool g_thread_fail_persist;

int cpat__thread_start(pthread_t *th, void *(*fn)(void *), void *arg,
		       bool detached)
{
	long n = atomic_fetch_add(&g_thread_starts, 1) + 1;
	long k = atomic_load(&g_thread_fail_k);
	if (k > 0 && (n == k || (n > k && atomic_load(&g_thread_fail_persist))))
		return -EAGAIN;
	pthread_attr_t attr;
	if (pthread_attr_init(&attr) != 0)
		return -EAGAIN;
	if (detached)
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	int rc = pthread_create(th, &attr, fn, arg);
	pthread_attr_destroy(&attr);
	return rc == 0 ? 0 : -EAGAIN;
}

void cpat__thread_name(const char *name)
{
#ifdef __linux__
	char b[16]; /* the kernel keeps 15 bytes and a NUL */
	snprintf(b, sizeof b, "%s", name ? name : "cpat");
	(void)prctl(PR_SET_NAME, (unsigned long)b, 0, 0, 0);
#else
	(void)name;
#endif
}

void cpat__test_fail_thread_at(long k, bool persistent)
{
	atomic_store(&g_thread_fail_persist, persistent);
	atomic_store(&g_thread_fail_k,
		     k > 0 ? atomic_load(&g_thread_starts) + k : 0);
}

long cpat__test_thread_starts(void)
{
	return atomic_load(&g_thread_starts);
}

const char *cpat_strerror(int rc)
{
	if (rc > 0)
		return "success (positive result)";
	switch (rc) {
	case 0:
		return "success";
	case -EINVAL:
		return "invalid argument";
	case -ENOMEM:
		return "out of memory";
	case -EAGAIN:
		return "would block, or no thread could be created";
	case -ETIMEDOUT:
		return "deadline exceeded";
	case -ECANCELED:
		return "cancelled";
	case -EPIPE:
		return "closed";
	case -EBUSY:
		return "busy: in use, or called from its own worker";
	default:
		break;
	}
	/* Other negative errno values (a task's own -EIO, say): the C
	 * library's description, from its static table (strerror() itself
	 * may use a per-call buffer). */
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 32)
	if (rc < 0 && rc > -4096) {
		const char *d = strerrordesc_np(-rc);
		if (d)
			return d;
	}
#endif
	return "unknown error";
}

int64_t cpat_now_ns(void)
{
	struct timespec ts;
	CPAT_CHECK(clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
	return (int64_t)ts.tv_sec * CPAT_SEC + ts.tv_nsec;
}

_Noreturn void cpat__panic(const char *file, int line, const char *what)
{
	fprintf(stderr, "libcpattern: internal check failed at %s:%d: %s\n",
		file, line, what);
	abort();
}

#define CPAT_STR2(x) #x
#define CPAT_STR(x) CPAT_STR2(x)

const char *cpat_version(void)
{
	return CPAT_STR(CPAT_VERSION_MAJOR) "." CPAT_STR(
		CPAT_VERSION_MINOR) "." CPAT_STR(CPAT_VERSION_PATCH);
}

unsigned cpat_version_number(void)
{
	return CPAT_VERSION_NUMBER;
}
