/*
 * The Go guide's web crawler: fetch every URL of a list with a bounded
 * number of concurrent requests, each under an HTTP timeout, the whole
 * crawl under a 5 min deadline; keep each result (URL, size, error,
 * duration) and print the guide's statistics. Uses libcurl.
 *
 * usage: crawler URL_FILE [WORKERS] [TIMEOUT_MS] [PER_HOST_RATE]
 *        (one URL per line; PER_HOST_RATE in requests per second, default 50)
 *
 * The fetches run in an error group limited to WORKERS at once. A failed
 * URL does not cancel the others (cancel_on_error = 0); the deadline does:
 * the group's token is a child of a deadline token, and curl's progress
 * callback aborts a transfer as soon as it fires. Each host (scheme, name
 * and port) has its own rate limiter, which a fetch waits on, under the
 * group's token, before it connects: a crawler must not hammer one server.
 */
#include <cpattern.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct host {
	char name[256]; /* "http://example.com:8080" */
	struct cpat_rate *limit;
};

struct result {
	char url[1024];
	struct host *host;
	size_t bytes;  /* the content's size (the content is dropped) */
	char err[128]; /* empty on success */
	double seconds;
};

static long timeout_ms = 10000;

static size_t count_bytes(char *data, size_t size, size_t n, void *arg)
{
	*(size_t *)arg += size * n;
	return size * n;
}

static int check_token(void *arg, curl_off_t a, curl_off_t b, curl_off_t c,
		       curl_off_t d)
{
	return cpat_token_status(arg) != 0; /* non-zero aborts the transfer */
}

static int fetch(void *arg, struct cpat_token *tok)
{
	struct result *r = arg;
	int64_t t0 = cpat_now_ns();
	int rc = cpat_rate_wait(r->host->limit, tok); /* the host's turn */
	if (rc != 0) {
		snprintf(r->err, sizeof(r->err), "%s", cpat_strerror(rc));
		return -EIO;
	}
	long status = 0;
	CURL *c = curl_easy_init();
	CURLcode cc = c ? CURLE_OK : CURLE_OUT_OF_MEMORY;
	/* Each step runs only if every one before it succeeded. */
	if (cc == CURLE_OK)
		cc = curl_easy_setopt(c, CURLOPT_URL, r->url);
	if (cc == CURLE_OK)
		cc = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* threads */
	if (cc == CURLE_OK)
		cc = curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	if (cc == CURLE_OK)
		cc = curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, count_bytes);
	if (cc == CURLE_OK)
		cc = curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->bytes);
	if (cc == CURLE_OK)
		cc = curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, check_token);
	if (cc == CURLE_OK)
		cc = curl_easy_setopt(c, CURLOPT_XFERINFODATA, tok);
	if (cc == CURLE_OK)
		cc = curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	if (cc == CURLE_OK)
		cc = curl_easy_perform(c);
	if (cc == CURLE_OK)
		cc = curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c); /* NULL is a no-op */
	r->seconds = (double)(cpat_now_ns() - t0) / 1e9;
	if (cc == CURLE_ABORTED_BY_CALLBACK)
		snprintf(r->err, sizeof(r->err), "%s",
			 cpat_strerror(cpat_token_status(tok)));
	else if (cc != CURLE_OK)
		snprintf(r->err, sizeof(r->err), "%s", curl_easy_strerror(cc));
	else if (status >= 400)
		snprintf(r->err, sizeof(r->err), "HTTP %ld", status);
	return r->err[0] ? -EIO : 0;
}

/* The host of url among hosts[0..*n), added (with its limiter) if new;
 * NULL if there is no room or no limiter. */
static struct host *host_of(const char *url, struct host *hosts, size_t *n,
			    size_t max, double rate)
{
	const char *p = strstr(url, "://");
	size_t len = p ? strcspn(p + 3, "/?#") + (size_t)(p + 3 - url) : 0;
	if (len == 0 || len >= sizeof(hosts->name))
		len = strlen(url) < sizeof(hosts->name) ? strlen(url) : 0;
	for (size_t i = 0; i < *n; i++)
		if (strlen(hosts[i].name) == len &&
		    strncmp(hosts[i].name, url, len) == 0)
			return &hosts[i];
	if (*n == max)
		return NULL;
	struct host *h = &hosts[*n];
	snprintf(h->name, sizeof(h->name), "%.*s", (int)len, url);
	int rc = cpat_rate_create(&h->limit, rate, 1); /* no bursts */
	if (rc != 0) {
		fprintf(stderr, "rate_create: %s\n", cpat_strerror(rc));
		return NULL;
	}
	(*n)++;
	return h;
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 5) {
		fprintf(stderr,
			"usage: %s URL_FILE [WORKERS] [TIMEOUT_MS] "
			"[PER_HOST_RATE]\n",
			argv[0]);
		return 2;
	}
	int workers = argc > 2 ? atoi(argv[2]) : 20;
	if (argc > 3)
		timeout_ms = atol(argv[3]);
	double rate = argc > 4 ? atof(argv[4]) : 50.0;
	if (workers < 1 || timeout_ms < 1 || !(rate > 0)) {
		fprintf(stderr, "WORKERS, TIMEOUT_MS and PER_HOST_RATE must be "
				"positive\n");
		return 2;
	}
	FILE *f = fopen(argv[1], "r");
	if (f == NULL) {
		perror(argv[1]);
		return 1;
	}
	struct result *res = NULL;
	size_t n = 0, nhosts = 0;
	static struct host hosts[256];
	char line[1024];
	while (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\r\n")] = '\0';
		if (line[0] == '\0' || line[0] == '#')
			continue;
		struct result *grown = realloc(res, (n + 1) * sizeof(*res));
		if (grown == NULL) {
			perror("realloc");
			return 1;
		}
		res = grown;
		memset(&res[n], 0, sizeof(*res));
		snprintf(res[n].url, sizeof(res->url), "%s", line);
		res[n].host = host_of(line, hosts, &nhosts, 256, rate);
		if (res[n++].host == NULL) {
			fprintf(stderr, "%s: no limiter for its host\n", line);
			return 1;
		}
	}
	fclose(f);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "curl_global_init failed\n");
		return 1;
	}

	struct cpat_token *deadline;
	struct cpat_group *g;
	struct cpat_group_opts o;
	int64_t t0 = cpat_now_ns();
	int rc = cpat_token_create_deadline(&deadline, NULL,
					    t0 + 300 * CPAT_SEC);
	if (rc != 0) {
		fprintf(stderr, "token_create_deadline: %s\n",
			cpat_strerror(rc));
		return 1;
	}
	cpat_group_opts_init(&o);
	o.limit = (size_t)workers;
	o.cancel_on_error = 0; /* one bad URL must not stop the crawl */
	o.parent = deadline;
	if ((rc = cpat_group_create(&g, &o)) != 0) {
		fprintf(stderr, "group_create: %s\n", cpat_strerror(rc));
		return 1;
	}
	size_t started = 0;
	for (; started < n; started++)
		if ((rc = cpat_group_go(g, fetch, &res[started])) != 0)
			break; /* the deadline passed: the rest never start */
	if (rc != 0 && rc != -ETIMEDOUT)
		fprintf(stderr, "group_go: %s\n", cpat_strerror(rc));
	/* Waits for every started fetch; returns the first failure (-EIO),
	 * which the results below tell in detail. */
	rc = cpat_group_wait(g);
	cpat_group_destroy(g);
	if (rc != 0 && rc != -EIO) {
		fprintf(stderr, "group_wait: %s\n", cpat_strerror(rc));
		return 1;
	}
	cpat_token_unref(deadline);
	double secs = (double)(cpat_now_ns() - t0) / 1e9;

	size_t ok = 0;
	double sum = 0;
	for (size_t i = 0; i < started; i++) {
		sum += res[i].seconds;
		if (res[i].err[0] == '\0')
			ok++;
		else
			printf("failed: %s: %s\n", res[i].url, res[i].err);
	}
	printf("total %zu, success %zu, failed %zu, not started %zu, average "
	       "duration %.3f s, crawl %.2f s\n",
	       n, ok, started - ok, n - started,
	       started ? sum / (double)started : 0.0, secs);
	free(res);
	for (size_t i = 0; i < nhosts; i++)
		cpat_rate_destroy(hosts[i].limit);
	curl_global_cleanup();
	return ok == n ? 0 : 1;
}
