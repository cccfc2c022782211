/*
 * Spinning and parking: the one place where the library's threads wait.
 * Never installed; included after internal.h.
 *
 * DESIGN
 *
 * A thread that cannot proceed first spins a little (the partner it waits
 * for may be running on another CPU and be done in a few hundred
 * nanoseconds), then parks on a 32-bit word (a futex on Linux, a striped
 * table of mutex+condvar pairs elsewhere: park.c). Three shapes of
 * spinning live here:
 *
 * - cpat__cpu_relax(): one polite pause of a spin loop (x86 `pause`,
 *   aarch64 `isb`, which unlike `yield` really stalls the core for a few
 *   tens of cycles, arm `yield`, nothing elsewhere).
 * - struct cpat__backoff: exponential backoff after a lost CAS, then
 *   yields (crossbeam's Backoff shape).
 * - struct cpat__spinwait: the poll before parking, mostly pauses with a
 *   yield now and then, whose length adapts per thread where the thread
 *   asked for it (cpat__spin_adapt()).
 *
 * A pause costs 10 to 70 cycles depending on the processor, and a futex
 * hand-off costs microseconds, so: a short exponential backoff after a
 * lost CAS; and before parking, a wait of some tens of microseconds polling
 * the condition with a yield now and then (which lets a partner preempted
 * on this core run). That is longer than a futex hand-off, so that two
 * threads do not fall into a convoy where each message costs a wake-up,
 * and short enough that a thread blocked for a second burns well under a
 * millisecond of CPU.
 *
 * A thread that may run on one CPU only does not spin at all
 * (cpat__spin_pays()): its partner cannot run while it spins, and a yield
 * beside a busy thread on that CPU costs a whole time slice. With more CPUs
 * the yields stay: when threads outnumber the cores they let a partner run
 * without a futex wake-up (bounding the wait by the clock instead made
 * channels of capacity 1 with 4 producers markedly slower).
 *
 * Adaptive spinning (cpat__spin_adapt()): in the library's pipeline
 * threads, which outnumber the cores as soon as a pipeline has a few
 * stages, a spinner takes the CPU from a sibling with work to do. There
 * the number of polls adapts, per thread, to whether spinning pays: a wait
 * that ends in parking shortens the thread's next spin by a quarter (down
 * to CPAT__SPIN_MIN_POLLS); one that succeeds lengthens it by an eighth, or
 * doubles it if it succeeded in the second half (up to
 * CPAT__SPIN_WAIT_POLLS). So the spin shrinks only while more than about a
 * third of the waits park. Callers' own threads keep the fixed spin:
 * adapting it there made 4 producers on a channel of capacity 1 park more
 * and pay more per message.
 *
 * The futex lock (cpat__lock) is Drepper's three-state mutex in one 32-bit
 * word (0 free, 1 locked, 2 locked with sleepers), so that a lock fits in a
 * line beside the data it guards.
 */
#ifndef CPAT_SPIN_H
#define CPAT_SPIN_H

#include "internal.h"

#include <sched.h>

/* One pause of a spin loop. */
static inline void cpat__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("isb sy" ::: "memory");
#elif defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH >= 7
	__asm__ __volatile__("yield" ::: "memory");
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

/*
 * Parking: a 32-bit word a thread sleeps on. cpat__park() returns when
 * *word != expect (checked atomically with going to sleep), on a wake-up,
 * spuriously, or when deadline_ns (CLOCK_MONOTONIC, CPAT_FOREVER for none)
 * passes; the caller re-checks its condition. cpat__unpark_*() wake
 * sleepers of word; a wake-up of a word nobody sleeps on is harmless, even
 * on memory that is no longer in use (no store is made to it).
 */
CPAT_HIDDEN void cpat__park(_Atomic uint32_t *word, uint32_t expect,
			    int64_t deadline_ns);
CPAT_HIDDEN void cpat__unpark_one(_Atomic uint32_t *word);
CPAT_HIDDEN void cpat__unpark_all(_Atomic uint32_t *word);

/*
 * Whether spinning before parking can pay off for the calling thread:
 * false when the thread may run on one CPU only (taskset -c N, a cpuset of
 * one CPU, a 1-CPU machine). The answer is read once per thread
 * (sched_getaffinity) and cached: a thread that changes its own affinity
 * later keeps its first answer.
 */
CPAT_HIDDEN bool cpat__spin_pays(void);

/* ---- backoff after a lost CAS ---------------------------------------- */

#define CPAT__BACKOFF_SPIN_LIMIT 3
#define CPAT__BACKOFF_YIELD_LIMIT 7

struct cpat__backoff {
	unsigned step;
};

/* After a lost CAS on a contended word: 1, 2, 4, 8 pauses. */
static inline void cpat__backoff_spin(struct cpat__backoff *b)
{
	unsigned lim = b->step < CPAT__BACKOFF_SPIN_LIMIT
			       ? b->step
			       : CPAT__BACKOFF_SPIN_LIMIT;
	for (unsigned i = 0; i < (1u << lim); i++)
		cpat__cpu_relax();
	if (b->step <= CPAT__BACKOFF_SPIN_LIMIT)
		b->step++;
}

/* While waiting for another thread to finish a step: pauses, then yields. */
static inline void cpat__backoff_snooze(struct cpat__backoff *b)
{
	if (b->step <= CPAT__BACKOFF_SPIN_LIMIT) {
		for (unsigned i = 0; i < (1u << b->step); i++)
			cpat__cpu_relax();
	} else {
		sched_yield();
	}
	if (b->step <= CPAT__BACKOFF_YIELD_LIMIT)
		b->step++;
}

/* ---- the poll before parking ------------------------------------------ */

#define CPAT__SPIN_WAIT_POLLS 1024
#define CPAT__SPIN_YIELD_EVERY 64
#define CPAT__SPIN_MIN_POLLS 64

/* This thread's spin before parking, in polls (0: CPAT__SPIN_WAIT_POLLS),
 * and whether it adapts (park.c). */
CPAT_HIDDEN extern _Thread_local int cpat__tl_spin_polls;
CPAT_HIDDEN extern _Thread_local bool cpat__tl_spin_adapts;

/*
 * Makes the calling thread's waits before parking adapt how long they spin
 * to how often spinning paid off (see the design above). For the library's
 * own pipeline threads, called at their start; never undone.
 */
static inline void cpat__spin_adapt(void)
{
	cpat__tl_spin_adapts = true;
}

/* The wait before parking: `struct cpat__spinwait w = {0, 0}; while
 * (cpat__spin_more(&w)) poll();`, then cpat__spin_end(&w, whether the poll
 * succeeded). */
struct cpat__spinwait {
	int i, limit;
};

/* One step of the wait: mostly a pause, now and then a yield (a partner
 * preempted on this core can then run). False when it is time to park. */
static inline bool cpat__spin_more(struct cpat__spinwait *w)
{
	int i = w->i++;
	if (i == 0) {
		if (!cpat__spin_pays()) {
			w->limit = 0;
			return false;
		}
		w->limit = cpat__tl_spin_polls ? cpat__tl_spin_polls
					       : CPAT__SPIN_WAIT_POLLS;
	}
	if (i >= w->limit)
		return false;
	if (i % CPAT__SPIN_YIELD_EVERY != CPAT__SPIN_YIELD_EVERY - 1)
		cpat__cpu_relax();
	else
		sched_yield();
	return true;
}

/* Adapts this thread's spin to how the wait ended (see above). */
static inline void cpat__spin_end(struct cpat__spinwait *w, bool ok)
{
	if (w->limit == 0 || !cpat__tl_spin_adapts)
		return;
	int lim = w->limit;
	if (!ok)
		lim = lim - lim / 4 > CPAT__SPIN_MIN_POLLS
			      ? lim - lim / 4
			      : CPAT__SPIN_MIN_POLLS;
	else
		lim += w->i * 2 > lim ? lim : lim / 8;
	if (lim > CPAT__SPIN_WAIT_POLLS)
		lim = CPAT__SPIN_WAIT_POLLS;
	cpat__tl_spin_polls = lim;
}

/* ---- a futex lock ------------------------------------------------------ */

/* The contended path of cpat__lock(): spin, then yield (to a preempted
 * holder, maybe), then sleep (park.c). */
CPAT_HIDDEN void cpat__lock_slow(_Atomic uint32_t *m);

static inline void cpat__lock(_Atomic uint32_t *m)
{
	uint32_t c = 0;
	if (!atomic_compare_exchange_strong_explicit(
		    m, &c, 1, memory_order_acquire, memory_order_relaxed))
		cpat__lock_slow(m);
}

static inline void cpat__unlock(_Atomic uint32_t *m)
{
	if (atomic_exchange_explicit(m, 0, memory_order_release) == 2)
		cpat__unpark_one(m);
}

#endif /* CPAT_SPIN_H */
