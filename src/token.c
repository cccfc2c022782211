/*
 * DESIGN: cancellation tokens.
 *
 * State. A token is live (status 0) until it fires; then status holds the
 * cause (-ECANCELED or -ETIMEDOUT) forever. status is written once, under
 * the token's mutex, and read lock-free (acquire) by cpat_token_status() and
 * by the channel fast paths. reason holds the cause cpat_token_cause()
 * reports (the canceller's own with cpat_token_cancel_cause(), else the
 * status): written once, just before status (relaxed, published by the
 * status store), and copied from the token the walk started at into every
 * token a walk fires, so a child fired by its parent reports the parent's.
 *
 * Locks and what they guard.
 *  - The tree lock: one mutex per tree of tokens, in the root (every token
 *    points at it through lk; the root outlives its descendants, which hold
 *    references up the chain). It guards the status transitions, the watch
 *    lists and the state of each watch, the children lists (first_child,
 *    sib_next/sib_prev, nchildren), and fire_next. Each token's cv
 *    (CLOCK_MONOTONIC) waits on it: cpat_token_wait() callers, and removers
 *    waiting for a running callback to return.
 *  - g_timer.mu: the deadline heap (the hp node and in_heap of every
 *    token) and the timer thread's state.
 *  - g_sig.mu: the list of signal tokens (sig_next/sig_prev), the per-signal
 *    counts and saved handlers.
 * Lock order: a tree lock is never held while another lock is taken;
 * g_timer.mu and g_sig.mu are never held while a tree lock is taken or a
 * callback runs. No lock is held while a callback or a watch function runs.
 *
 * Why one lock per tree, not per token: a cancel must fire the whole
 * subtree before it returns, even when another thread is firing part of it
 * concurrently. With one lock, the thread that fires a token fires its whole
 * live subtree in the same critical section, so any other cancel in the
 * tree, which must take the lock first, finds it entirely fired. The cost is
 * that creating, releasing and watching tokens of one tree contend on one
 * mutex; the critical sections are a few pointer updates.
 *
 * Firing. Exactly one thread fires each token: the one that moves its
 * status from 0 under the tree lock. It queues the token (with a reference)
 * on its fire_next link, and after unlocking runs the watches of every token
 * it fired, one at a time: each is unlinked and marked RUNNING under the
 * lock, run with no lock held, then marked DONE under the lock (a broadcast
 * on cv wakes a remover waiting for it). So the cancel that fires a token
 * returns after every callback of its subtree has run, and a cancel that
 * finds the token already fired returns at once, with the subtree fired but
 * callbacks possibly still running in the firing thread. A child created
 * while its parent fires is linked (and so fired by the walk) or born fired:
 * creation reads the parent's status and links under the tree lock.
 *
 * Lifetime. refs counts references; a child holds one on its parent, a
 * handle from on_cancel one on its token, a blocked operation its own. The
 * thread that drops the last reference unregisters the token from its
 * parent (under the tree lock), the timer heap and the signal list,
 * frees the callbacks registered without a handle, and drops its reference
 * to the parent (iteratively). Walkers that find a token through a list
 * (the firing walk, the timer, the signal thread) take a reference only if
 * the count is still non-zero; a dying token is skipped, and it cannot be
 * freed under them because it must first take the lock they hold to leave
 * the list.
 *
 * Deadlines. A deadline token whose own deadline is earlier than its
 * parent's effective deadline sits in one process-wide pairing heap,
 * intrusive (no allocation), served by one timer thread started at the first
 * such token. The thread fires tokens whose deadline has come with
 * -ETIMEDOUT. cpat_token_status() and cpat_token_wait() also fire a token
 * found past its effective deadline, so lateness of the timer thread is
 * never observable through them, and nothing fires before its deadline.
 *
 * Doors. cpat_token_fd() opens the token's door (door.h) under the tree
 * lock and posts it at once if the token has fired; the walk that fires a
 * token posts its door, if it has one, in the same critical section that
 * sets the status. Both under the tree lock, so the door of a fired token
 * is always posted, exactly once. Nothing drains it: a fired token stays
 * fired. The last release closes it.
 *
 * Signals. The handler only sets a bit in an atomic mask and writes a byte
 * to a non-blocking pipe (both async-signal-safe). A helper thread, with
 * every signal blocked, reads the pipe, takes the mask and fires every
 * signal token watching a pending signal.
 */
#include "internal.h"
#include "pheap.h"
#include "testhooks.h"

#include "door.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

enum { W_REG = 0, W_RUNNING = 1, W_DONE = 2, W_REMOVED = 3 };

struct cpat_token {
	pthread_mutex_t mu;  /* a root's tree lock; unused in other tokens */
	pthread_mutex_t *lk; /* the tree lock: &root->mu */
	pthread_cond_t cv;
	_Atomic int status;
	_Atomic int reason; /* cpat_token_cause(): set just before status */
	_Atomic int refs;
	int64_t deadline; /* effective: min of own and ancestors' */

	struct cpat_token *parent;
	struct cpat_token *first_child;
	struct cpat_token *sib_next, *sib_prev;
	size_t nchildren;
	struct cpat_token *fire_next;

	struct cpat__watch *watches;

	/* cpat_token_fd(): opened and posted under the tree lock (never
	 * drained), closed with the token. rfd -1: not asked for. */
	struct cpat__door door;

	/* Deadline heap (g_timer.mu). */
	struct cpat__pheap hp; /* hp.key: the token's own deadline */
	bool in_heap;
	bool timed; /* was added to the heap; immutable once published */

	/* Signal tokens (g_sig.mu). */
	uint64_t sigmask;
	struct cpat_token *sig_next, *sig_prev, *sig_fire_next;
};

struct cpat_token_cb {
	struct cpat__watch w;
	cpat_token_fn fn;
	void *arg;
	struct cpat_token *tok;
	bool has_handle;
	bool orphaned; /* removed from inside its own callback */
	pthread_t runner;
};

static void token_release(struct cpat_token *t);
static void fire_tree(struct cpat_token *t, int cause);

/* ---- small helpers ---------------------------------------------------- */

static void lock(struct cpat_token *t)
{
	CPAT_CHECK(pthread_mutex_lock(t->lk) == 0);
}

static void unlock(struct cpat_token *t)
{
	CPAT_CHECK(pthread_mutex_unlock(t->lk) == 0);
}

static int load_status(struct cpat_token *t)
{
	return atomic_load_explicit(&t->status, memory_order_acquire);
}

/* Takes a reference unless the token is already dying (count 0). */
static bool try_ref(struct cpat_token *t)
{
	int r = atomic_load_explicit(&t->refs, memory_order_relaxed);
	while (r > 0) {
		if (atomic_compare_exchange_weak_explicit(&t->refs, &r, r + 1,
							  memory_order_acquire,
							  memory_order_relaxed))
			return true;
	}
	return false;
}

/* Starts a service thread with every signal blocked in it. */
static int start_service_thread(pthread_t *th, void *(*fn)(void *))
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = cpat__thread_start(th, fn, NULL, true);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

/* ---- deadline heap and timer thread ------------------------------------ */

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool cv_ready;
	bool started;
	struct cpat__pheap *root;
	pthread_t thread;
} g_timer = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void hp_remove(struct cpat_token *x)
{
	cpat__pheap_remove(&g_timer.root, &x->hp);
	x->in_heap = false;
}

static void *timer_main(void *arg)
{
	(void)arg;
	cpat__thread_name("cpat-timer");
	CPAT_CHECK(pthread_mutex_lock(&g_timer.mu) == 0);
	for (;;) {
		if (!g_timer.root) {
			pthread_cond_wait(&g_timer.cv, &g_timer.mu);
			continue;
		}
		struct cpat_token *t =
			CPAT__PHEAP_OF(g_timer.root, struct cpat_token, hp);
		if (cpat_now_ns() < t->hp.key) {
			cpat__cond_wait_until(&g_timer.cv, &g_timer.mu,
					      t->hp.key);
			continue;
		}
		hp_remove(t);
		if (!try_ref(t))
			continue; /* dying: it no longer needs firing */
		CPAT_CHECK(pthread_mutex_unlock(&g_timer.mu) == 0);
		fire_tree(t, -ETIMEDOUT);
		cpat_token_unref(t);
		CPAT_CHECK(pthread_mutex_lock(&g_timer.mu) == 0);
	}
	return NULL;
}

static int timer_add(struct cpat_token *t)
{
	int rc = 0;
	CPAT_CHECK(pthread_mutex_lock(&g_timer.mu) == 0);
	if (!g_timer.cv_ready) {
		rc = cpat__cond_init(&g_timer.cv);
		if (rc) {
			rc = -ENOMEM;
			goto out;
		}
		g_timer.cv_ready = true;
	}
	if (!g_timer.started) {
		if (start_service_thread(&g_timer.thread, timer_main) != 0) {
			rc = -EAGAIN;
			goto out;
		}
		g_timer.started = true;
	}
	t->in_heap = true;
	cpat__pheap_insert(&g_timer.root, &t->hp);
	if (g_timer.root == &t->hp)
		CPAT_CHECK(pthread_cond_signal(&g_timer.cv) == 0);
out:
	CPAT_CHECK(pthread_mutex_unlock(&g_timer.mu) == 0);
	return rc;
}

static void timer_del(struct cpat_token *t)
{
	CPAT_CHECK(pthread_mutex_lock(&g_timer.mu) == 0);
	if (t->in_heap)
		hp_remove(t);
	CPAT_CHECK(pthread_mutex_unlock(&g_timer.mu) == 0);
}

/* ---- signals ----------------------------------------------------------- */

#define SIG_MAX 64

static struct {
	pthread_mutex_t mu;
	bool started;
	int pipe_r, pipe_w;
	pthread_t thread;
	struct cpat_token *list;
	unsigned count[SIG_MAX + 1];
	struct sigaction saved[SIG_MAX + 1];
} g_sig = {.mu = PTHREAD_MUTEX_INITIALIZER, .pipe_r = -1, .pipe_w = -1};

/* Written by the handler; lock-free on every platform the library targets
 * (checked below), so async-signal-safe. */
static _Atomic uint64_t g_sig_pending;
static _Atomic int g_sig_pipe_w = -1;

#if !defined(__GCC_ATOMIC_LLONG_LOCK_FREE) || __GCC_ATOMIC_LLONG_LOCK_FREE != 2
#error "signal tokens need a lock-free 64-bit atomic"
#endif

static void sig_handler(int signo)
{
	int saved_errno = errno;
	if (signo >= 1 && signo <= SIG_MAX)
		atomic_fetch_or(&g_sig_pending, (uint64_t)1 << (signo - 1));
	int fd = atomic_load(&g_sig_pipe_w);
	if (fd >= 0) {
		char b = 0;
		ssize_t n = write(fd, &b, 1); /* a full pipe is already awake */
		(void)n;
	}
	errno = saved_errno;
}

static void *sig_main(void *arg)
{
	(void)arg;
	cpat__thread_name("cpat-signal");
	for (;;) {
		char buf[64];
		ssize_t n = read(g_sig.pipe_r, buf, sizeof buf);
		if (n < 0 && errno != EINTR && errno != EAGAIN)
			return NULL;
		uint64_t pending = atomic_exchange(&g_sig_pending, 0);
		if (!pending)
			continue;
		struct cpat_token *fire = NULL;
		CPAT_CHECK(pthread_mutex_lock(&g_sig.mu) == 0);
		for (struct cpat_token *t = g_sig.list; t; t = t->sig_next) {
			if ((t->sigmask & pending) && try_ref(t)) {
				t->sig_fire_next = fire;
				fire = t;
			}
		}
		CPAT_CHECK(pthread_mutex_unlock(&g_sig.mu) == 0);
		while (fire) {
			struct cpat_token *t = fire;
			fire = t->sig_fire_next;
			fire_tree(t, -ECANCELED);
			cpat_token_unref(t);
		}
	}
}

/* pipe2(O_CLOEXEC) where the system has it; elsewhere (macOS) pipe() then
 * FD_CLOEXEC, with a window in which a concurrent fork+exec of another
 * thread may inherit the descriptors (harmless: the helper's pipe carries
 * no data, and the inheriting program never reads it). */
static int pipe_cloexec(int fds[2])
{
#if defined(__linux__) || defined(__FreeBSD__) || defined(__NetBSD__) || \
	defined(__OpenBSD__) || defined(__DragonFly__)
	return pipe2(fds, O_CLOEXEC);
#else
	if (pipe(fds) != 0)
		return -1;
	if (fcntl(fds[0], F_SETFD, FD_CLOEXEC) != 0 ||
	    fcntl(fds[1], F_SETFD, FD_CLOEXEC) != 0) {
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	return 0;
#endif
}

/* Starts the helper once; returns 0 or -EAGAIN. g_sig.mu held. */
static int sig_start_locked(void)
{
	if (g_sig.started)
		return 0;
	int fds[2];
	if (pipe_cloexec(fds) != 0)
		return -EAGAIN;
	/* Only the writer is non-blocking: the helper sleeps in read(). */
	if (fcntl(fds[1], F_SETFL, O_NONBLOCK) != 0) {
		close(fds[0]);
		close(fds[1]);
		return -EAGAIN;
	}
	g_sig.pipe_r = fds[0];
	g_sig.pipe_w = fds[1];
	if (start_service_thread(&g_sig.thread, sig_main) != 0) {
		close(fds[0]);
		close(fds[1]);
		g_sig.pipe_r = g_sig.pipe_w = -1;
		return -EAGAIN;
	}
	atomic_store(&g_sig_pipe_w, g_sig.pipe_w);
	g_sig.started = true;
	return 0;
}

static int sig_register(struct cpat_token *t)
{
	int rc = 0;
	CPAT_CHECK(pthread_mutex_lock(&g_sig.mu) == 0);
	rc = sig_start_locked();
	if (rc)
		goto out;
	int s;
	for (s = 1; s <= SIG_MAX; s++) {
		if (!(t->sigmask & ((uint64_t)1 << (s - 1))))
			continue;
		if (g_sig.count[s] == 0) {
			struct sigaction sa;
			memset(&sa, 0, sizeof sa);
			sa.sa_handler = sig_handler;
			sa.sa_flags = SA_RESTART;
			sigemptyset(&sa.sa_mask);
			if (sigaction(s, &sa, &g_sig.saved[s]) != 0) {
				rc = -EINVAL;
				break;
			}
		}
		g_sig.count[s]++;
	}
	if (rc) {
		/* Undo the signals below the one that failed. */
		for (int u = 1; u < s; u++) {
			if ((t->sigmask & ((uint64_t)1 << (u - 1))) &&
			    --g_sig.count[u] == 0)
				sigaction(u, &g_sig.saved[u], NULL);
		}
		goto out;
	}
	t->sig_prev = NULL;
	t->sig_next = g_sig.list;
	if (g_sig.list)
		g_sig.list->sig_prev = t;
	g_sig.list = t;
out:
	CPAT_CHECK(pthread_mutex_unlock(&g_sig.mu) == 0);
	return rc;
}

static void sig_unregister(struct cpat_token *t)
{
	CPAT_CHECK(pthread_mutex_lock(&g_sig.mu) == 0);
	if (t->sig_prev)
		t->sig_prev->sig_next = t->sig_next;
	else
		g_sig.list = t->sig_next;
	if (t->sig_next)
		t->sig_next->sig_prev = t->sig_prev;
	for (int s = 1; s <= SIG_MAX; s++) {
		if (!(t->sigmask & ((uint64_t)1 << (s - 1))))
			continue;
		if (--g_sig.count[s] == 0)
			sigaction(s, &g_sig.saved[s], NULL);
	}
	CPAT_CHECK(pthread_mutex_unlock(&g_sig.mu) == 0);
}

/* ---- fork --------------------------------------------------------------- */

/*
 * After fork() the child has only the thread that forked: the timer and
 * signal threads are gone, and a lock one of them held would stay held for
 * ever. The handlers below make the service state usable in the child: the
 * prepare handler takes both service locks (so no other thread holds one
 * across the fork), and the child handler forgets the threads, the heap of
 * deadlines and the list of signal tokens (those are the parent's
 * tokens, which the child must not use: token.h), closes its copy of the
 * signal pipe, which it shares with the parent, and gives back the signal
 * dispositions the parent's signal tokens had taken. The next deadline or
 * signal token the child creates starts its own thread. Registered once, at
 * the first deadline or signal token.
 */
static void fork_prepare(void)
{
	CPAT_CHECK(pthread_mutex_lock(&g_timer.mu) == 0);
	CPAT_CHECK(pthread_mutex_lock(&g_sig.mu) == 0);
}

static void fork_parent(void)
{
	CPAT_CHECK(pthread_mutex_unlock(&g_sig.mu) == 0);
	CPAT_CHECK(pthread_mutex_unlock(&g_timer.mu) == 0);
}

static void fork_child(void)
{
	g_timer.started = false;
	g_timer.root = NULL;
	/* The parent's timer thread may have been waiting on the condition
	 * variable: make a fresh one at the next use. */
	g_timer.cv_ready = false;
	if (g_sig.started) {
		atomic_store(&g_sig_pipe_w, -1);
		close(g_sig.pipe_r);
		close(g_sig.pipe_w);
		g_sig.pipe_r = g_sig.pipe_w = -1;
		g_sig.started = false;
	}
	g_sig.list = NULL;
	for (int s = 1; s <= SIG_MAX; s++) {
		if (g_sig.count[s] > 0)
			sigaction(s, &g_sig.saved[s], NULL);
		g_sig.count[s] = 0;
	}
	atomic_store(&g_sig_pending, 0);
	CPAT_CHECK(pthread_mutex_unlock(&g_sig.mu) == 0);
	CPAT_CHECK(pthread_mutex_unlock(&g_timer.mu) == 0);
}

static pthread_once_t g_fork_once = PTHREAD_ONCE_INIT;
static int g_fork_rc;

static void fork_register(void)
{
	g_fork_rc = pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* Registers the fork handlers once; 0 or -ENOMEM. Called with no service
 * lock held. */
static int fork_handlers(void)
{
	pthread_once(&g_fork_once, fork_register);
	return g_fork_rc ? -ENOMEM : 0;
}

/* ---- creation and release --------------------------------------------- */

static int token_new(struct cpat_token **out, struct cpat_token *parent,
		     int64_t deadline)
{
	struct cpat_token *t = cpat__calloc(1, sizeof *t);
	if (!t)
		return -ENOMEM;
	if (!parent && pthread_mutex_init(&t->mu, NULL) != 0) {
		cpat__free(t);
		return -ENOMEM;
	}
	t->lk = parent ? parent->lk : &t->mu;
	if (cpat__cond_init(&t->cv) != 0) {
		if (!parent)
			pthread_mutex_destroy(&t->mu);
		cpat__free(t);
		return -ENOMEM;
	}
	atomic_init(&t->refs, 1);
	atomic_init(&t->status, 0);
	atomic_init(&t->reason, 0);
	cpat__door_init(&t->door);
	t->deadline = deadline;
	t->hp.key = deadline;
	if (parent) {
		cpat_token_ref(parent);
		t->parent = parent;
		lock(parent);
		t->deadline = cpat__deadline_min(deadline, parent->deadline);
		int st = load_status(parent);
		if (st != 0) {
			atomic_store_explicit(
				&t->reason,
				atomic_load_explicit(&parent->reason,
						     memory_order_relaxed),
				memory_order_relaxed);
			atomic_store_explicit(&t->status, st,
					      memory_order_release);
		} else {
			t->sib_next = parent->first_child;
			if (parent->first_child)
				parent->first_child->sib_prev = t;
			parent->first_child = t;
			parent->nchildren++;
		}
		unlock(parent);
	}
	*out = t;
	return 0;
}

static void token_release(struct cpat_token *t)
{
	while (t) {
		if (atomic_fetch_sub_explicit(&t->refs, 1,
					      memory_order_acq_rel) != 1)
			return;
		if (t->timed)
			timer_del(t);
		if (t->sigmask)
			sig_unregister(t);
		struct cpat_token *parent = t->parent;
		if (parent) {
			lock(parent);
			/* Linked unless it was born fired. */
			if (!CPAT_PLANTED(CPAT_BUG_TOKEN_CHILD_UNREGISTER) &&
			    (t->sib_prev || parent->first_child == t)) {
				if (t->sib_prev)
					t->sib_prev->sib_next = t->sib_next;
				else
					parent->first_child = t->sib_next;
				if (t->sib_next)
					t->sib_next->sib_prev = t->sib_prev;
				parent->nchildren--;
			}
			unlock(parent);
		}
		/* Only callbacks registered without a handle can remain: the
		 * others hold references. They never run. */
		struct cpat__watch *w = t->watches;
		while (w) {
			struct cpat__watch *next = w->next;
			cpat__free(w->arg);
			w = next;
		}
		cpat__door_close(&t->door);
		pthread_cond_destroy(&t->cv);
		if (!parent)
			pthread_mutex_destroy(&t->mu);
		cpat__free(t);
		t = parent;
	}
}

int cpat_token_create(struct cpat_token **out, struct cpat_token *parent)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	return token_new(out, parent, CPAT_FOREVER);
}

int cpat_token_create_deadline(struct cpat_token **out,
			       struct cpat_token *parent, int64_t deadline_ns)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!cpat__deadline_ok(deadline_ns))
		return -EINVAL;
	struct cpat_token *t;
	int rc = token_new(&t, parent, deadline_ns);
	if (rc)
		return rc;
	/* The heap only needs the tokens whose own deadline comes before the
	 * parent's: the others fire with their parent. */
	if (deadline_ns != CPAT_FOREVER && t->deadline == deadline_ns &&
	    load_status(t) == 0 &&
	    (!parent || parent->deadline != deadline_ns)) {
		if (cpat_now_ns() >= deadline_ns) {
			fire_tree(t, -ETIMEDOUT);
		} else {
			rc = fork_handlers();
			if (!rc)
				rc = timer_add(t);
			if (rc) {
				token_release(t);
				return rc;
			}
			t->timed = true;
		}
	}
	*out = t;
	return 0;
}

int cpat_token_create_signals(struct cpat_token **out,
			      struct cpat_token *parent, const int *signals,
			      size_t n)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!signals || n == 0 || n > SIG_MAX)
		return -EINVAL;
	uint64_t mask = 0;
	for (size_t i = 0; i < n; i++) {
		int s = signals[i];
		if (s < 1 || s > SIG_MAX || s >= NSIG || s == SIGKILL ||
		    s == SIGSTOP)
			return -EINVAL;
		mask |= (uint64_t)1 << (s - 1);
	}
	struct cpat_token *t;
	int rc = token_new(&t, parent, CPAT_FOREVER);
	if (rc)
		return rc;
	t->sigmask = mask;
	rc = fork_handlers();
	if (!rc)
		rc = sig_register(t);
	if (rc) {
		t->sigmask = 0;
		token_release(t);
		return rc;
	}
	*out = t;
	return 0;
}

struct cpat_token *cpat_token_ref(struct cpat_token *tok)
{
	if (tok)
		atomic_fetch_add_explicit(&tok->refs, 1, memory_order_relaxed);
	return tok;
}

void cpat_token_unref(struct cpat_token *tok)
{
	token_release(tok);
}

/* ---- firing ------------------------------------------------------------ */

static bool is_cb(struct cpat__watch *w);

/*
 * Runs the watches of t, which this thread fired. t is referenced by the
 * caller.
 */
static void run_watches(struct cpat_token *t, int cause)
{
	lock(t);
	struct cpat__watch *w;
	while ((w = t->watches) != NULL) {
		t->watches = w->next;
		if (w->next)
			w->next->prev = NULL;
		w->next = w->prev = NULL;
		atomic_store_explicit(&w->state, W_RUNNING,
				      memory_order_relaxed);
		if (is_cb(w))
			((struct cpat_token_cb *)w->arg)->runner =
				pthread_self();
		unlock(t);
		w->fn(w, cause);
		lock(t);
		/* Decide about freeing before DONE: once DONE is visible a
		 * remover may free the record. */
		struct cpat_token_cb *cb = is_cb(w) ? w->arg : NULL;
		bool free_it = cb && (!cb->has_handle || cb->orphaned);
		atomic_store_explicit(&w->state, W_DONE, memory_order_relaxed);
		CPAT_CHECK(pthread_cond_broadcast(&t->cv) == 0);
		if (free_it) {
			unlock(t);
			struct cpat_token *ht = cb->has_handle ? cb->tok : NULL;
			cpat__free(cb);
			/* An orphaned handle's reference; the caller's keeps
			 * t alive. */
			cpat_token_unref(ht);
			lock(t);
		}
	}
	unlock(t);
}

/*
 * Fires t, if live, and every live token below it, all in one critical
 * section of the tree lock: when it returns (and when any other cancel of a
 * token of this tree can next take the lock) the whole subtree has fired.
 * Then runs the watches of every token it fired, with no lock held. The
 * caller holds a reference to t. Returns whether this call fired t.
 *
 * The walk needs no memory: it follows first_child, sib_next and parent
 * (a threaded depth-first walk), and skips the subtree of a token already
 * fired, which fired whole. Each token this call fires is queued, with a
 * reference, on its fire_next link, which belongs to the thread that fired
 * it.
 */
static bool fire_tree_ret(struct cpat_token *t, int cause, int reason)
{
	struct cpat_token *queue = NULL, **tail = &queue;
	lock(t);
	if (load_status(t) != 0) {
		unlock(t);
		return false;
	}
	struct cpat_token *n = t;
	for (;;) {
		bool fired_now = false;
		if (load_status(n) == 0) {
			atomic_store_explicit(&n->reason, reason,
					      memory_order_relaxed);
			atomic_store_explicit(&n->status, cause,
					      memory_order_release);
			CPAT_CHECK(pthread_cond_broadcast(&n->cv) == 0);
			if (n->door.rfd >= 0)
				cpat__door_post(&n->door);
			fired_now = true;
			/* A dying token (no references left) has no watch
			 * that could run: it is not queued. */
			if (n == t || try_ref(n)) {
				n->fire_next = NULL;
				*tail = n;
				tail = &n->fire_next;
			}
		}
		if (fired_now && n->first_child) {
			n = n->first_child;
			continue;
		}
		while (n != t && !n->sib_next)
			n = n->parent;
		if (n == t)
			break;
		n = n->sib_next;
	}
	unlock(t);
	while (queue) {
		struct cpat_token *c = queue;
		queue = c->fire_next;
		run_watches(c, cause);
		if (c != t)
			cpat_token_unref(c);
	}
	return true;
}

static void fire_tree(struct cpat_token *t, int cause)
{
	(void)fire_tree_ret(t, cause, cause);
}

int cpat_token_cancel(struct cpat_token *tok)
{
	if (!tok)
		return -EINVAL;
	/* No lock-free shortcut for a fired token: its status may have been
	 * set by a walk still in its critical section, firing the rest of the
	 * subtree. fire_tree_ret() waits for the tree lock first. */
	return fire_tree_ret(tok, -ECANCELED, -ECANCELED) ? 1 : 0;
}

int cpat_token_cancel_cause(struct cpat_token *tok, int cause)
{
	if (!tok || cause >= 0)
		return -EINVAL;
	return fire_tree_ret(tok, -ECANCELED, cause) ? 1 : 0;
}

/* Fires a token found past its effective deadline; returns its status. */
static int check_deadline(struct cpat_token *t)
{
	int st = load_status(t);
	if (st == 0 && t->deadline != CPAT_FOREVER &&
	    cpat_now_ns() >= t->deadline) {
		fire_tree(t, -ETIMEDOUT);
		st = load_status(t);
	}
	return st;
}

int cpat_token_status(struct cpat_token *tok)
{
	if (!tok)
		return 0;
	return check_deadline(tok);
}

int cpat_token_cause(struct cpat_token *tok)
{
	if (!tok)
		return 0;
	/* The acquire load of status in check_deadline() publishes reason. */
	if (check_deadline(tok) == 0)
		return 0;
	return atomic_load_explicit(&tok->reason, memory_order_relaxed);
}

int cpat_token_wait(struct cpat_token *tok, int64_t deadline_ns)
{
	if (!tok || !cpat__deadline_ok(deadline_ns))
		return -EINVAL;
	cpat_token_ref(tok);
	int rc = 0;
	for (;;) {
		if (check_deadline(tok) != 0)
			break;
		int64_t now = cpat_now_ns();
		if (deadline_ns != CPAT_FOREVER && now >= deadline_ns) {
			rc = -ETIMEDOUT;
			break;
		}
		int64_t until = cpat__deadline_min(deadline_ns, tok->deadline);
		lock(tok);
		if (load_status(tok) == 0)
			cpat__cond_wait_until(&tok->cv, tok->lk, until);
		unlock(tok);
	}
	cpat_token_unref(tok);
	return rc;
}

/* ---- the door ------------------------------------------------------------ */

int cpat_token_fd(struct cpat_token *tok, int *fd)
{
	if (fd)
		*fd = -1;
	if (!tok || !fd)
		return -EINVAL;
	/* A token past its deadline fires first, so its door is posted. */
	(void)check_deadline(tok);
	int rc = 0;
	lock(tok);
	if (tok->door.rfd < 0) {
		rc = cpat__door_open(&tok->door);
		/* The walk that fires the token posts the door under this
		 * lock: if it has run already, post here. */
		if (rc == 0 && load_status(tok) != 0)
			cpat__door_post(&tok->door);
	}
	if (rc == 0)
		*fd = tok->door.rfd;
	unlock(tok);
	return rc;
}

/* ---- watches and callbacks --------------------------------------------- */

int cpat__token_watch(struct cpat_token *tok, struct cpat__watch *w)
{
	int st = check_deadline(tok);
	if (st != 0)
		return st;
	lock(tok);
	st = load_status(tok);
	if (st == 0) {
		atomic_store_explicit(&w->state, W_REG, memory_order_relaxed);
		w->prev = NULL;
		w->next = tok->watches;
		if (tok->watches)
			tok->watches->prev = w;
		tok->watches = w;
	}
	unlock(tok);
	return st;
}

/* Unlinks w if still registered; tok locked. Returns true if it was. */
static bool unlink_watch_locked(struct cpat_token *tok, struct cpat__watch *w)
{
	if (atomic_load_explicit(&w->state, memory_order_relaxed) != W_REG)
		return false;
	if (w->prev)
		w->prev->next = w->next;
	else
		tok->watches = w->next;
	if (w->next)
		w->next->prev = w->prev;
	w->next = w->prev = NULL;
	atomic_store_explicit(&w->state, W_REMOVED, memory_order_relaxed);
	return true;
}

int cpat__token_unwatch(struct cpat_token *tok, struct cpat__watch *w)
{
	lock(tok);
	if (unlink_watch_locked(tok, w)) {
		unlock(tok);
		return 1;
	}
	while (atomic_load_explicit(&w->state, memory_order_relaxed) ==
	       W_RUNNING)
		pthread_cond_wait(&tok->cv, tok->lk);
	unlock(tok);
	return 0;
}

static void cb_trampoline(struct cpat__watch *w, int cause)
{
	struct cpat_token_cb *cb = w->arg;
	cb->fn(cb->arg, cause);
}

static bool is_cb(struct cpat__watch *w)
{
	return w->fn == cb_trampoline;
}

int cpat_token_on_cancel(struct cpat_token *tok, cpat_token_fn fn, void *arg,
			 struct cpat_token_cb **handle)
{
	if (handle)
		*handle = NULL;
	if (!tok || !fn)
		return -EINVAL;
	struct cpat_token_cb *cb = cpat__calloc(1, sizeof *cb);
	if (!cb)
		return -ENOMEM;
	cb->fn = fn;
	cb->arg = arg;
	cb->tok = tok;
	cb->has_handle = handle != NULL;
	cb->w.fn = cb_trampoline;
	cb->w.arg = cb;
	if (handle)
		cpat_token_ref(tok);
	int st = cpat__token_watch(tok, &cb->w);
	if (st != 0) {
		/* Already fired: run here, once. */
		atomic_store_explicit(&cb->w.state, W_DONE,
				      memory_order_relaxed);
		fn(arg, st);
		if (!handle) {
			cpat__free(cb);
			return 0;
		}
	}
	if (handle)
		*handle = cb;
	return 0;
}

int cpat_token_on_cancel_remove(struct cpat_token_cb *cb)
{
	if (!cb)
		return -EINVAL;
	struct cpat_token *tok = cb->tok;
	lock(tok);
	if (unlink_watch_locked(tok, &cb->w)) {
		unlock(tok);
		cpat__free(cb);
		cpat_token_unref(tok);
		return 1;
	}
	if (atomic_load_explicit(&cb->w.state, memory_order_relaxed) ==
		    W_RUNNING &&
	    pthread_equal(cb->runner, pthread_self())) {
		/* From inside the callback: the firing thread frees it when
		 * the callback returns. */
		cb->orphaned = true;
		unlock(tok);
		return 0;
	}
	while (atomic_load_explicit(&cb->w.state, memory_order_relaxed) ==
	       W_RUNNING)
		pthread_cond_wait(&tok->cv, tok->lk);
	unlock(tok);
	cpat__free(cb);
	cpat_token_unref(tok);
	return 0;
}

/* ---- test hooks ---------------------------------------------------------- */

size_t cpat__token_nchildren(struct cpat_token *tok)
{
	lock(tok);
	size_t n = tok->nchildren;
	unlock(tok);
	return n;
}

size_t cpat__token_nwatches(struct cpat_token *tok)
{
	size_t n = 0;
	lock(tok);
	for (struct cpat__watch *w = tok->watches; w; w = w->next)
		n++;
	unlock(tok);
	return n;
}

int cpat__token_refcount(struct cpat_token *tok)
{
	return atomic_load(&tok->refs);
}
