/* Harness of the README's error-group snippet: `n` requests `reqs` of the
 * caller's own type, and the task `fetch` that takes one. */
#include <cpattern.h>

struct request {
	const char *url;
	int status;
};

static int fetch(void *arg, struct cpat_token *tok)
{
	(void)tok;
	struct request *r = (struct request *)arg;
	r->status = r->url[0] ? 200 : 404;
	return 0;
}

int main(void)
{
	struct request reqs[] = {{"a", 0}, {"b", 0}, {"c", 0}};
	size_t n = sizeof reqs / sizeof reqs[0];
	/* @SNIPPET@ */
	return first_err == 0 && reqs[2].status == 200 ? 0 : 1;
}
