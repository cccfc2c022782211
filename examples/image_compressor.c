/*
 * The Go guide's batch image compressor: every JPEG of a folder is decoded
 * and re-encoded at quality 75 on a pool of workers, with progress every
 * 100 images and the guide's final statistics. Uses libjpeg-turbo's
 * TurboJPEG API.
 *
 * usage: image_compressor INPUT_DIR OUTPUT_DIR [WORKERS]
 *        image_compressor --generate N DIR   (N small test JPEGs)
 * Exits 1 if any image failed.
 */
#define _POSIX_C_SOURCE 200809L /* opendir() */
#include <cpattern.h>
#include <dirent.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

struct job {
	const char *in_dir, *out_dir;
	char name[256];
	char err[512]; /* empty if it succeeded */
};

static atomic_uint finished;
static unsigned total;
static int64_t start_ns;

static unsigned char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf = NULL;
	long n;
	if (f && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 &&
	    fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n)) &&
	    fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	*len = buf ? (size_t)n : 0;
	if (f)
		fclose(f);
	return buf;
}

static int write_file(const char *path, const unsigned char *buf, size_t len)
{
	FILE *f = fopen(path, "wb");
	int ok = f && fwrite(buf, 1, len, f) == len;
	return (f && fclose(f) == 0 && ok) ? 0 : -1;
}

static int compress_one(void *arg, struct cpat_token *tok)
{
	struct job *j = arg;
	char in[4096], to[4096], why[200] = "";
	size_t len = 0;
	unsigned char *src, *rgb = NULL, *out = NULL;
	unsigned long out_len = 0;
	int w, h, sub, cs;

	snprintf(in, sizeof(in), "%s/%s", j->in_dir, j->name);
	snprintf(to, sizeof(to), "%s/%s", j->out_dir, j->name);
	src = read_file(in, &len);
	tjhandle dec = tjInitDecompress(), enc = tjInitCompress();
	if (src == NULL)
		snprintf(why, sizeof(why), "cannot read");
	else if (dec == NULL || enc == NULL)
		snprintf(why, sizeof(why), "%s", tjGetErrorStr2(NULL));
	else if (tjDecompressHeader3(dec, src, len, &w, &h, &sub, &cs) != 0)
		snprintf(why, sizeof(why), "%s", tjGetErrorStr2(dec));
	else if ((rgb = malloc((size_t)w * h * 3)) == NULL)
		snprintf(why, sizeof(why), "out of memory");
	else if (tjDecompress2(dec, src, len, rgb, w, 0, h, TJPF_RGB, 0) != 0)
		snprintf(why, sizeof(why), "%s", tjGetErrorStr2(dec));
	else if (cpat_token_status(tok) != 0) /* the pool is stopping */
		snprintf(why, sizeof(why), "%s",
			 cpat_strerror(cpat_token_status(tok)));
	else if (tjCompress2(enc, rgb, w, 0, h, TJPF_RGB, &out, &out_len,
			     TJSAMP_420, 75, 0) != 0)
		snprintf(why, sizeof(why), "%s", tjGetErrorStr2(enc));
	else if (write_file(to, out, out_len) != 0)
		snprintf(why, sizeof(why), "cannot write");
	if (why[0] != '\0')
		snprintf(j->err, sizeof(j->err), "%.255s: %s", j->name, why);
	if (dec)
		tjDestroy(dec);
	if (enc)
		tjDestroy(enc);
	tjFree(out);
	free(rgb);
	free(src);
	return why[0] != '\0' ? -EIO : 0;
}

static void progress(void *arg, int rc)
{
	unsigned n = atomic_fetch_add(&finished, 1) + 1;
	if (n % 100 == 0 || n == total)
		printf("progress: %u/%u images (%.1f images/s)\n", n, total,
		       n / ((double)(cpat_now_ns() - start_ns) / 1e9));
}

static int generate(int n, const char *dir)
{
	enum { W = 64, H = 48 };
	static unsigned char rgb[W * H * 3];
	tjhandle enc = tjInitCompress();
	int rc = enc ? 0 : -1;
	for (int i = 0; i < n && rc == 0; i++) {
		for (int p = 0; p < W * H; p++) { /* a deterministic gradient */
			rgb[3 * p] = (unsigned char)(p % W * 4 + i);
			rgb[3 * p + 1] = (unsigned char)(p / W * 5);
			rgb[3 * p + 2] = (unsigned char)(i * 7);
		}
		unsigned char *jpeg = NULL;
		unsigned long len = 0;
		char path[4096];
		snprintf(path, sizeof(path), "%s/img%05d.jpg", dir, i);
		rc = tjCompress2(enc, rgb, W, 0, H, TJPF_RGB, &jpeg, &len,
				 TJSAMP_420, 95, 0);
		if (rc == 0)
			rc = write_file(path, jpeg, len);
		tjFree(jpeg);
	}
	if (enc)
		tjDestroy(enc);
	if (rc != 0)
		fprintf(stderr, "generate: cannot write %d images in %s\n", n,
			dir);
	return rc != 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct job *)a)->name,
		      ((const struct job *)b)->name);
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "--generate") == 0)
		return generate(atoi(argv[2]), argv[3]);
	if (argc < 3 || argc > 4) {
		fprintf(stderr,
			"usage: %s INPUT_DIR OUTPUT_DIR [WORKERS]\n"
			"       %s --generate N DIR\n",
			argv[0], argv[0]);
		return 2;
	}
	int workers = argc == 4 ? atoi(argv[3]) : 8;
	if (workers < 1) {
		fprintf(stderr, "WORKERS must be positive\n");
		return 2;
	}
	DIR *d = opendir(argv[1]);
	if (d == NULL) {
		perror(argv[1]);
		return 1;
	}
	struct job *jobs = NULL;
	struct dirent *e;
	size_t n = 0;
	while ((e = readdir(d)) != NULL) {
		const char *dot = strrchr(e->d_name, '.');
		if (!dot || (strcmp(dot, ".jpg") && strcmp(dot, ".jpeg")))
			continue;
		struct job *grown = realloc(jobs, (n + 1) * sizeof(*jobs));
		if (grown == NULL) {
			perror("realloc");
			return 1;
		}
		jobs = grown;
		jobs[n] = (struct job){.in_dir = argv[1], .out_dir = argv[2]};
		snprintf(jobs[n++].name, sizeof(jobs->name), "%s", e->d_name);
	}
	closedir(d);
	if (n > 0)
		qsort(jobs, n, sizeof(*jobs), by_name);

	struct cpat_pool *pool;
	struct cpat_pool_opts o;
	cpat_pool_opts_init(&o);
	o.workers = (unsigned)workers;
	int rc = cpat_pool_create(&pool, &o);
	if (rc != 0) {
		fprintf(stderr, "pool_create: %s\n", cpat_strerror(rc));
		return 1;
	}
	total = (unsigned)n;
	start_ns = cpat_now_ns();
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct cpat_task t = {compress_one, progress, &jobs[i]};
		rc = cpat_pool_submit(pool, &t, NULL);
	}
	struct cpat_pool_report r;
	int src = cpat_pool_shutdown(pool, CPAT_POOL_DRAIN, CPAT_FOREVER, &r);
	cpat_pool_destroy(pool);
	if (rc != 0 || src != 0) {
		fprintf(stderr, "submit/shutdown: %s\n",
			cpat_strerror(rc ? rc : src));
		return 1;
	}
	double secs = (double)(cpat_now_ns() - start_ns) / 1e9;
	printf("total %zu, processed %llu, failed %llu, duration %.2f s "
	       "(%.1f images/s)\n",
	       n, r.ran - r.failed, r.failed, secs, secs > 0 ? n / secs : 0.0);
	size_t nerr = 0;
	for (size_t i = 0; i < n; i++)
		if (jobs[i].err[0] != '\0' && nerr++ < 10)
			printf("error: %s\n", jobs[i].err);
	if (nerr > 10)
		printf("... and %zu more errors\n", nerr - 10);
	free(jobs);
	return r.failed == 0 ? 0 : 1;
}
