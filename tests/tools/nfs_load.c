/*
 * nfs_load: a verified continuous NFS write load (libnfs sync client) for end-to-end tests.
 *
 *   nfs_load --url nfs://HOST/EXPORT/FILE[?nfsport=N&mountport=M] --seconds S --region BYTES
 *            [--seed N] [--state FILE] [--timeout S]
 *   nfs_load --url ... --verify-only --state FILE
 *
 * Writes random 4 KiB blocks of the first BYTES of FILE (created when missing), one at a
 * time; each block = header (magic, block, generation, seed) + fill derived from them. A
 * block's generation advances only when its write got a success reply (acknowledged). When a
 * call fails (the gateway died, the connection dropped, a call timed out), the tool drops the
 * connection, mounts again (retrying until --timeout seconds have passed) and rewrites the
 * same generation: NFS writes are idempotent, so an unacknowledged write that did land is
 * simply written again. At the end it COMMITs, saves the generations to --state, and on a
 * NEW connection reads the region back: every written block must hold exactly its last
 * acknowledged generation. --verify-only does that read-back from a saved state.
 *
 * Exit: 0 ok, 1 I/O error not recovered within --timeout, 2 mismatch, 64 usage. Last line:
 *   nfs_load: writes=N reconnects=N verified=N mismatches=N
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nfsc/libnfs.h>

#include "tests/tools/records.h"

#define BLOCK_MAGIC 0x314441304c53464eull /* "NFSL0AD1" little-endian */
#define STATE_MAGIC 0x3154535346414f4cull
#define CALL_TIMEOUT_MS 20000

struct load {
	const char *url;
	struct nfs_context *nfs;
	struct nfsfh *fh;
	struct records r;
	uint64_t writes, reconnects;
	double timeout;
};

static int usage(void)
{
	fprintf(stderr,
		"usage: nfs_load --url nfs://HOST/EXPORT/FILE[?ARGS] --seconds S --region BYTES\n"
		"                [--seed N] [--state FILE] [--timeout S]\n"
		"       nfs_load --url ... --verify-only --state FILE\n");
	return 64;
}

static int summary(const struct load *L, int errors)
{
	printf("nfs_load: writes=%" PRIu64 " reconnects=%" PRIu64 " errors=%d verified=%" PRIu64
	       " mismatches=%" PRIu64 "\n",
	       L->writes, L->reconnects, errors, L->r.verified, L->r.mismatches);
	fflush(stdout);
	return errors ? 1 : L->r.mismatches ? 2 : 0;
}

static void disconnect(struct load *L)
{
	if (L->nfs) {
		/* An NFSv3 close sends nothing, so it is safe on a dead connection too; the
		 * context does not free its open handles. */
		if (L->fh)
			nfs_close(L->nfs, L->fh);
		nfs_destroy_context(L->nfs);
	}
	L->nfs = NULL;
	L->fh = NULL;
}

/* One attempt: mount the URL's directory and open (or create) its file. */
static int connect_once(struct load *L, bool create, bool quiet)
{
	L->nfs = nfs_init_context();
	if (!L->nfs)
		return -ENOMEM;
	nfs_set_timeout(L->nfs, CALL_TIMEOUT_MS);
	/* The tool reconnects by itself (and says so), instead of libnfs retrying forever
	 * inside a call. */
	nfs_set_autoreconnect(L->nfs, 0);
	struct nfs_url *u = nfs_parse_url_full(L->nfs, L->url);
	if (!u) {
		fprintf(stderr, "nfs_load: bad url %s: %s\n", L->url, nfs_get_error(L->nfs));
		disconnect(L);
		return -EINVAL;
	}
	int r = nfs_mount(L->nfs, u->server, u->path);
	if (r == 0) {
		r = nfs_open(L->nfs, u->file, O_RDWR, &L->fh);
		if (r == -ENOENT && create)
			r = nfs_create(L->nfs, u->file, O_RDWR | O_CREAT, 0644, &L->fh);
	}
	if (r < 0) {
		if (!quiet)
			fprintf(stderr, "nfs_load: connect: %s (%s)\n", strerror(-r),
				nfs_get_error(L->nfs));
		disconnect(L);
	}
	nfs_destroy_url(u);
	return r;
}

/* Connects, retrying every 200 ms until the timeout; 0 or the last error. */
static int connect_retry(struct load *L, bool create)
{
	double start = now_s();
	for (unsigned n = 0;; n++) {
		bool last = now_s() >= start + L->timeout;
		int r = connect_once(L, create, n > 0 && !last);
		if (r == 0 && n > 0)
			fprintf(stderr, "nfs_load: connected after %.1f s (%u attempts)\n",
				now_s() - start, n + 1);
		if (r == 0 || r == -EINVAL || last)
			return r;
		struct timespec ts = {0, 200 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

/* Reconnects after a failed call; the caller retries the call. */
static int reconnect(struct load *L, const char *what, int err)
{
	fprintf(stderr, "nfs_load: %s failed: %s (%s); reconnecting\n", what, strerror(-err),
		L->nfs ? nfs_get_error(L->nfs) : "");
	disconnect(L);
	L->reconnects++;
	return connect_retry(L, false);
}

/* Reads the region back on a fresh connection and checks every written block. A read past
 * the end of the file counts as zeros (a block there mismatches if it was written). */
static int verify(struct load *L)
{
	disconnect(L);
	int r = connect_retry(L, false);
	if (r < 0) {
		fprintf(stderr, "nfs_load: verify: cannot connect: %s\n", strerror(-r));
		return summary(L, 1);
	}
	uint8_t *buf = malloc(READ_CHUNK);
	uint8_t want[BLOCK];
	if (!buf)
		return summary(L, 1);
	uint64_t region = L->r.nblocks * BLOCK;
	int ret = -1;
	for (uint64_t off = 0; off < region && ret < 0;) {
		uint64_t n = region - off < READ_CHUNK ? region - off : READ_CHUNK;
		uint64_t got = 0;
		while (got < n) {
			r = nfs_pread(L->nfs, L->fh, off + got, n - got, buf + got);
			if (r < 0) {
				fprintf(stderr, "nfs_load: read back at %" PRIu64 ": %s (%s)\n",
					off + got, strerror(-r), nfs_get_error(L->nfs));
				ret = summary(L, 1);
				break;
			}
			if (r == 0) { /* EOF */
				memset(buf + got, 0, n - got);
				break;
			}
			got += (uint64_t)r;
		}
		if (ret >= 0)
			break;
		for (uint64_t k = 0; k < n / BLOCK; k++)
			rec_check(&L->r, off / BLOCK + k, buf + k * BLOCK, want);
		off += n;
	}
	free(buf);
	if (ret >= 0)
		return ret;
	rec_check_done(&L->r);
	return summary(L, 0);
}

static int run_load(struct load *L, double seconds)
{
	uint8_t buf[BLOCK];
	uint64_t rng = L->r.seed ^ 0x5bd1e995ull;
	double start = now_s(), last_report = start;
	while (now_s() - start < seconds) {
		uint64_t b = splitmix(&rng) % L->r.nblocks;
		rec_make(&L->r, buf, b, L->r.gen[b] + 1);
		int r;
		while ((r = nfs_pwrite(L->nfs, L->fh, b * BLOCK, BLOCK, buf)) != (int)BLOCK) {
			if (r >= 0) { /* a short write of 4 KiB is a server bug, not a retry */
				fprintf(stderr, "nfs_load: write block %" PRIu64 ": short (%d)\n",
					b, r);
				return summary(L, 1);
			}
			if ((r = reconnect(L, "write", r)) < 0) {
				fprintf(stderr,
					"nfs_load: write block %" PRIu64
					": no connection within %.0f s: %s\n",
					b, L->timeout, strerror(-r));
				return summary(L, 1);
			}
		}
		L->r.gen[b]++;
		L->writes++;
		double t = now_s();
		if (t - last_report >= 5) {
			fprintf(stderr,
				"nfs_load: %.0fs writes=%" PRIu64 " reconnects=%" PRIu64 "\n",
				t - start, L->writes, L->reconnects);
			last_report = t;
		}
	}
	int r;
	while ((r = nfs_fsync(L->nfs, L->fh)) < 0) {
		if ((r = reconnect(L, "commit", r)) < 0)
			return summary(L, 1);
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct load_opts o = {.seconds = -1, .seed = 1, .timeout = 60};
	if (load_opts_parse(argc, argv, false, &o) < 0)
		return usage();
	const char *state = o.state;
	double seconds = o.seconds;
	uint64_t region = o.region;
	bool verify_only = o.verify_only;
	struct load L = {.url = o.url,
			 .r = {.tool = "nfs_load",
			       .block_magic = BLOCK_MAGIC,
			       .state_magic = STATE_MAGIC,
			       .seed = o.seed},
			 .timeout = (double)o.timeout};
	int ret;
	if (verify_only) {
		if (!state)
			return usage();
		int r = rec_load_state(&L.r, state);
		if (r < 0) {
			fprintf(stderr, "nfs_load: state %s: %s\n", state, strerror(-r));
			return 1;
		}
		ret = verify(&L);
		goto out;
	}
	if (seconds < 0 || region < BLOCK)
		return usage();
	L.r.nblocks = region / BLOCK;
	L.r.gen = calloc(L.r.nblocks, sizeof(*L.r.gen));
	if (!L.r.gen)
		return 1;
	int r = connect_retry(&L, true);
	if (r < 0) {
		fprintf(stderr, "nfs_load: cannot connect: %s\n", strerror(-r));
		ret = summary(&L, 1);
		goto out;
	}
	ret = run_load(&L, seconds);
	if (ret)
		goto out;
	if (state && (r = rec_save_state(&L.r, state)) < 0) {
		fprintf(stderr, "nfs_load: save state %s: %s\n", state, strerror(-r));
		ret = 1;
		goto out;
	}
	ret = verify(&L);
out:
	disconnect(&L);
	free(L.r.gen);
	return ret;
}
