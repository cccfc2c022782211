/* Harness of the README's pool snippet: a task body `work`, its
 * completion callback `on_done` and its argument `job`. */
#include <cpattern.h>

struct job {
	int ran, done;
};

static int work(void *arg, struct cpat_token *tok)
{
	(void)tok;
	((struct job *)arg)->ran++;
	return 0;
}

static void on_done(void *arg, int rc)
{
	((struct job *)arg)->done += rc == 0;
}

int main(void)
{
	struct job j = {0, 0}, *job = &j;
	/* @SNIPPET@ */
	return j.ran == 1 && j.done == 1 && r.ran == 1 ? 0 : 1;
}
