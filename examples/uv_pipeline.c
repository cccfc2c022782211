/*
 * A pipeline's output received on a libuv loop, whose thread never blocks
 * in the library.
 *
 * The pipeline (a generator of 1..N -> square, on 4 workers, ordered)
 * writes into its output channel (cpat_pipeline_set_output()). The loop
 * waits on that channel's door, a descriptor readable when a receive would
 * likely succeed (cpat_chan_fd()), with a uv_poll handle; each time it
 * wakes it receives with cpat_chan_try_recv() until -EAGAIN (the door is
 * then re-armed) or -EPIPE (the pipeline has stopped and everything is
 * received). A timer on the same loop shows the thread staying free for
 * other work. SIGINT or SIGTERM fire the run's token, which stops the
 * pipeline; the loop also watches the token's door (cpat_token_fd()) to
 * say so.
 *
 * usage: uv_pipeline [N]     (default 100000)
 * Prints "received N items in order, sum of squares S".
 */
#define _POSIX_C_SOURCE 200809L /* what uv.h's own headers need */
#include <cpattern.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

struct app {
	struct cpat_chan *out;
	uv_poll_t out_poll, stop_poll;
	uv_timer_t tick;
	int64_t next; /* the square expected next */
	uint64_t received, sum, ticks;
	int out_of_order;
	int interrupted;
};

static int64_t limit = 100000;

static int generate(void *out, void *arg)
{
	int64_t *next = arg;
	if (*next > limit)
		return 0; /* end of input */
	*(int64_t *)out = (*next)++;
	return 1;
}

static int square(const void *in, void *out, struct cpat_stage_ctx *ctx)
{
	int64_t v = *(const int64_t *)in;
	*(int64_t *)out = v * v;
	return CPAT_STAGE_EMIT;
}

static void stop_loop(struct app *a)
{
	uv_close((uv_handle_t *)&a->out_poll, NULL);
	if (!uv_is_closing((uv_handle_t *)&a->stop_poll))
		uv_close((uv_handle_t *)&a->stop_poll, NULL);
	uv_close((uv_handle_t *)&a->tick, NULL);
}

/* The output door is readable: take everything there is. */
static void on_output(uv_poll_t *h, int status, int events)
{
	struct app *a = h->data;
	int64_t v;
	int rc;
	if (status < 0) {
		fprintf(stderr, "uv_poll: %s\n", uv_strerror(status));
		stop_loop(a);
		return;
	}
	while ((rc = cpat_chan_try_recv(a->out, &v)) == 0) {
		a->received++;
		a->next++;
		if (v != a->next * a->next)
			a->out_of_order = 1;
		a->sum += (uint64_t)v;
	}
	/* -EAGAIN: empty for now, the door is re-armed: wait again.
	 * -EPIPE: the pipeline has stopped and its output is drained. */
	if (rc == -EPIPE)
		stop_loop(a);
}

/* The token's door: readable once a signal fired it (for good: stop
 * watching it). The pipeline stops by itself, under the same token. */
static void on_stop(uv_poll_t *h, int status, int events)
{
	struct app *a = h->data;
	a->interrupted = 1;
	fprintf(stderr, "signal: stopping the pipeline\n");
	uv_close((uv_handle_t *)h, NULL);
}

static void on_tick(uv_timer_t *t)
{
	((struct app *)t->data)->ticks++;
}

static int fail(const char *what, int rc)
{
	fprintf(stderr, "%s: %s\n", what, cpat_strerror(rc));
	return 1;
}

int main(int argc, char **argv)
{
	if (argc > 1 && (limit = atoll(argv[1])) < 1) {
		fprintf(stderr, "usage: %s [N]\n", argv[0]);
		return 2;
	}
	struct cpat_token *stop;
	const int sigs[] = {SIGINT, SIGTERM};
	int rc, stopfd, outfd;
	if ((rc = cpat_token_create_signals(&stop, NULL, sigs, 2)) != 0)
		return fail("token_create_signals", rc);

	struct cpat_pipeline *p;
	struct cpat_pipeline_opts po;
	int64_t next = 1;
	cpat_pipeline_opts_init(&po);
	po.item_size = sizeof(int64_t);
	if ((rc = cpat_pipeline_create(&p, &po)) != 0)
		return fail("pipeline_create", rc);
	if ((rc = cpat_pipeline_set_generator(p, generate, &next)) != 0)
		return fail("set_generator", rc);
	struct cpat_stage_opts so;
	cpat_stage_opts_init(&so);
	so.name = "square";
	so.map = square;
	so.out_size = sizeof(int64_t);
	so.workers = 4;
	so.ordered = true;
	if ((rc = cpat_pipeline_add_stage(p, &so)) != 0)
		return fail("add_stage", rc);
	if ((rc = cpat_pipeline_set_output(p)) != 0)
		return fail("set_output", rc);

	struct app a = {.out = cpat_pipeline_output(p)};
	if (!a.out)
		return fail("pipeline_output", -ENOMEM);
	/* The doors: owned by the channel and the token, never read. */
	if ((rc = cpat_chan_fd(a.out, CPAT_SELECT_RECV, &outfd)) != 0)
		return fail("chan_fd", rc);
	if ((rc = cpat_token_fd(stop, &stopfd)) != 0)
		return fail("token_fd", rc);

	uv_loop_t *loop = uv_default_loop();
	uv_poll_init(loop, &a.out_poll, outfd);
	uv_poll_init(loop, &a.stop_poll, stopfd);
	uv_timer_init(loop, &a.tick);
	a.out_poll.data = a.stop_poll.data = a.tick.data = &a;
	uv_poll_start(&a.out_poll, UV_READABLE, on_output);
	uv_poll_start(&a.stop_poll, UV_READABLE, on_stop);
	uv_timer_start(&a.tick, on_tick, 10, 10);

	if ((rc = cpat_pipeline_start(p, stop, CPAT_FOREVER)) != 0)
		return fail("pipeline_start", rc);
	uv_run(loop, UV_RUN_DEFAULT); /* until every handle is closed */
	uv_loop_close(loop);

	/* The output is closed: the pipeline has stopped. */
	struct cpat_pipeline_result res;
	rc = cpat_pipeline_wait(p, &res);
	cpat_pipeline_destroy(p); /* closes the channel's door */
	cpat_token_unref(stop);   /* and the token's */
	fprintf(stderr, "loop stayed free: %" PRIu64 " timer ticks\n", a.ticks);
	if (rc != 0)
		return fail(a.interrupted ? "interrupted" : "pipeline", rc);
	if (a.out_of_order || a.received != (uint64_t)limit) {
		fprintf(stderr, "received %" PRIu64 " of %" PRId64 "%s\n",
			a.received, limit,
			a.out_of_order ? ", out of order" : "");
		return 1;
	}
	printf("received %" PRIu64 " items in order, sum of squares %" PRIu64
	       "\n",
	       a.received, a.sum);
	return 0;
}
