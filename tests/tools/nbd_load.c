/*
 * nbd_load: a verified NBD write load for end-to-end tests.
 *
 *   nbd_load --url nbd://host:port/export --seconds S --region BYTES
 *            [--qd N] [--seed N] [--state FILE] [--timeout S]
 *   nbd_load --url nbd://host:port/export --verify-only --state FILE [--region BYTES]
 *
 * Writes random 4 KiB blocks of the first BYTES of the export, at most one write per block
 * in flight, each block = header (magic, block, generation, seed) + fill derived from
 * (seed, block, generation). It remembers each block's last ACKNOWLEDGED generation; at the
 * end it flushes, saves those generations to --state, reads the region back and checks that
 * every written block holds exactly its last acknowledged generation. Blocks never written
 * (generation 0) are not checked. --verify-only does the read-back from a saved state.
 *
 * Exit: 0 ok, 1 I/O error, 2 mismatch, 64 usage. Last line:
 *   nbd_load: writes=N errors=N verified=N mismatches=N
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/tools/records.h"
#include "tools/lib/nbd_client.h"

#define BLOCK_MAGIC 0x314441304c44424eull /* "NBDL0AD1" little-endian */
#define STATE_MAGIC 0x3154535044414f4cull

struct load {
	struct nbd_client *c;
	struct records r;
	uint8_t *busy; /* a write to the block is in flight */
	uint64_t writes;
};

static int usage(void)
{
	fprintf(stderr,
		"usage: nbd_load --url nbd://host:port/export --seconds S --region BYTES\n"
		"                [--qd N] [--seed N] [--state FILE] [--timeout S]\n"
		"       nbd_load --url nbd://host:port/export --verify-only --state FILE\n");
	return 64;
}

static int summary(const struct load *L, int errors)
{
	printf("nbd_load: writes=%" PRIu64 " errors=%d verified=%" PRIu64 " mismatches=%" PRIu64
	       "\n",
	       L->writes, errors, L->r.verified, L->r.mismatches);
	fflush(stdout);
	return errors ? 1 : L->r.mismatches ? 2 : 0;
}

static int io_fail(struct load *L, const char *what)
{
	fprintf(stderr, "nbd_load: %s: %s\n", what, nbd_client_error(L->c));
	return summary(L, 1);
}

/* Reads the whole region back, several chunks in flight, and checks every written block. */
static int verify(struct load *L, uint32_t qd)
{
	uint64_t region = L->r.nblocks * BLOCK;
	uint64_t nchunks = (region + READ_CHUNK - 1) / READ_CHUNK;
	if (qd > 16)
		qd = 16;
	struct nbd_client_req *reqs = calloc(qd, sizeof(*reqs));
	uint8_t *bufs = malloc((size_t)qd * READ_CHUNK);
	uint8_t want[BLOCK];
	int ret = 0;
	if (!reqs || !bufs) {
		fprintf(stderr, "nbd_load: out of memory\n");
		ret = summary(L, 1);
		goto out;
	}
	uint64_t next = 0;
	for (uint32_t i = 0; i < qd && next < nchunks; i++, next++) {
		uint64_t off = next * READ_CHUNK;
		reqs[i] = (struct nbd_client_req){
		    .op = NBD_CLIENT_READ,
		    .off = off,
		    .len = (uint32_t)(region - off < READ_CHUNK ? region - off : READ_CHUNK),
		    .buf = bufs + (size_t)i * READ_CHUNK};
		if (nbd_client_submit(L->c, &reqs[i]) < 0) {
			ret = io_fail(L, "read back");
			goto out;
		}
	}
	while (nbd_client_inflight(L->c)) {
		struct nbd_client_req *d;
		if (nbd_client_collect(L->c, &d) < 0) {
			ret = io_fail(L, "read back");
			goto out;
		}
		if (d->result) {
			fprintf(stderr, "nbd_load: read back at %" PRIu64 ": %s\n", d->off,
				strerror(-d->result));
			ret = summary(L, 1);
			goto out;
		}
		for (uint32_t k = 0; k < d->len / BLOCK; k++)
			rec_check(&L->r, d->off / BLOCK + k, (uint8_t *)d->buf + (size_t)k * BLOCK,
				  want);
		if (next < nchunks) {
			uint64_t off = next++ * READ_CHUNK;
			d->off = off;
			d->len = (uint32_t)(region - off < READ_CHUNK ? region - off : READ_CHUNK);
			if (nbd_client_submit(L->c, d) < 0) {
				ret = io_fail(L, "read back");
				goto out;
			}
		}
	}
	rec_check_done(&L->r);
	ret = summary(L, 0);
out:
	free(reqs);
	free(bufs);
	return ret;
}

static int run_load(struct load *L, double seconds, uint32_t qd)
{
	struct nbd_client_req *reqs = calloc(qd, sizeof(*reqs));
	uint8_t *bufs = malloc((size_t)qd * BLOCK);
	if (!reqs || !bufs) {
		free(reqs);
		free(bufs);
		fprintf(stderr, "nbd_load: out of memory\n");
		return summary(L, 1);
	}
	uint64_t rng = L->r.seed ^ 0x5bd1e995ull;
	double start = now_s(), last_report = start;
	int ret = 0;
	uint32_t free_slots = qd;
	uint32_t *slots = malloc(qd * sizeof(*slots));
	if (!slots) {
		ret = summary(L, 1);
		goto out;
	}
	for (uint32_t i = 0; i < qd; i++)
		slots[i] = i;
	for (;;) {
		bool running = now_s() - start < seconds;
		while (running && free_slots) {
			uint32_t s = slots[--free_slots];
			uint64_t b = splitmix(&rng) % L->r.nblocks;
			while (L->busy[b])
				b = (b + 1) % L->r.nblocks;
			L->busy[b] = 1;
			uint8_t *buf = bufs + (size_t)s * BLOCK;
			rec_make(&L->r, buf, b, L->r.gen[b] + 1);
			reqs[s] = (struct nbd_client_req){
			    .op = NBD_CLIENT_WRITE, .off = b * BLOCK, .len = BLOCK, .buf = buf};
			if (nbd_client_submit(L->c, &reqs[s]) < 0) {
				ret = io_fail(L, "write");
				goto out;
			}
		}
		if (!nbd_client_inflight(L->c))
			break;
		struct nbd_client_req *d;
		if (nbd_client_collect(L->c, &d) < 0) {
			ret = io_fail(L, "write");
			goto out;
		}
		uint64_t b = d->off / BLOCK;
		if (d->result) {
			fprintf(stderr, "nbd_load: write block %" PRIu64 " gen %u: %s\n", b,
				L->r.gen[b] + 1, strerror(-d->result));
			ret = summary(L, 1);
			goto out;
		}
		L->r.gen[b]++;
		L->busy[b] = 0;
		L->writes++;
		slots[free_slots++] = (uint32_t)(d - reqs);
		double t = now_s();
		if (t - last_report >= 10) {
			fprintf(stderr, "nbd_load: %.0fs writes=%" PRIu64 "\n", t - start,
				L->writes);
			last_report = t;
		}
	}
out:
	free(slots);
	free(reqs);
	free(bufs);
	return ret;
}

int main(int argc, char **argv)
{
	struct load_opts o = {.seconds = -1, .seed = 1, .timeout = 120, .qd = 16};
	if (load_opts_parse(argc, argv, true, &o) < 0)
		return usage();
	const char *url = o.url, *state = o.state;
	double seconds = o.seconds;
	uint64_t region = o.region, qd = o.qd, timeout = o.timeout;
	bool verify_only = o.verify_only;
	struct load L = {.r = {.tool = "nbd_load",
			       .block_magic = BLOCK_MAGIC,
			       .state_magic = STATE_MAGIC,
			       .seed = o.seed}};
	if (verify_only) {
		if (!state)
			return usage();
		int r = rec_load_state(&L.r, state);
		if (r < 0) {
			fprintf(stderr, "nbd_load: state %s: %s\n", state, strerror(-r));
			return 64;
		}
		if (region && region / BLOCK != L.r.nblocks) {
			fprintf(stderr,
				"nbd_load: --region %" PRIu64 " differs from the state's %" PRIu64
				"\n",
				region, L.r.nblocks * BLOCK);
			free(L.r.gen);
			return 64;
		}
	} else {
		if (seconds < 0 || region < BLOCK)
			return usage();
		L.r.nblocks = region / BLOCK;
		L.r.gen = calloc(L.r.nblocks, sizeof(*L.r.gen));
		L.busy = calloc(L.r.nblocks, 1);
		if (!L.r.gen || !L.busy) {
			fprintf(stderr, "nbd_load: out of memory\n");
			return 1;
		}
		if (qd > L.r.nblocks)
			qd = L.r.nblocks;
	}
	if (nbd_client_new(&L.c) < 0)
		return 1;
	nbd_client_set_timeout(L.c, (uint32_t)(timeout * 1000));
	int ret;
	if (nbd_client_connect_url(L.c, url) < 0) {
		ret = io_fail(&L, "connect");
		goto out;
	}
	if (L.r.nblocks * BLOCK > nbd_client_size(L.c)) {
		fprintf(stderr,
			"nbd_load: region %" PRIu64 " is larger than the export (%" PRIu64 ")\n",
			L.r.nblocks * BLOCK, nbd_client_size(L.c));
		ret = 64;
		goto out;
	}
	if (!verify_only) {
		ret = run_load(&L, seconds, (uint32_t)qd);
		if (ret)
			goto out;
		if (nbd_client_flush(L.c) < 0) {
			ret = io_fail(&L, "flush");
			goto out;
		}
		if (state) {
			int r = rec_save_state(&L.r, state);
			if (r < 0) {
				fprintf(stderr, "nbd_load: save %s: %s\n", state, strerror(-r));
				ret = summary(&L, 1);
				goto out;
			}
		}
	}
	ret = verify(&L, (uint32_t)qd);
out:
	nbd_client_free(L.c);
	free(L.r.gen);
	free(L.busy);
	return ret;
}
