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
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/lib/nbd_client.h"

#define BLOCK 4096u
#define BLOCK_MAGIC 0x314441304c44424eull /* "NBDL0AD1" little-endian */
#define STATE_MAGIC 0x3154535044414f4cull
#define READ_CHUNK (1u << 20)
#define MAX_SHOWN 10

struct load {
	struct nbd_client *c;
	uint64_t seed;
	uint64_t nblocks;
	uint32_t *gen; /* last acknowledged generation per block */
	uint8_t *busy; /* a write to the block is in flight */
	uint64_t writes, verified, mismatches;
};

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void put64le(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64le(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void make_block(uint8_t *b, uint64_t seed, uint64_t block, uint32_t gen)
{
	put64le(b, BLOCK_MAGIC);
	put64le(b + 8, block);
	put64le(b + 16, gen);
	put64le(b + 24, seed);
	uint64_t s = seed ^ (block * 0xd6e8feb86659fd93ull) ^ ((uint64_t)gen << 40 | gen);
	for (unsigned i = 32; i < BLOCK; i += 8)
		put64le(b + i, splitmix(&s));
}

static int usage(void)
{
	fprintf(stderr,
		"usage: nbd_load --url nbd://host:port/export --seconds S --region BYTES\n"
		"                [--qd N] [--seed N] [--state FILE] [--timeout S]\n"
		"       nbd_load --url nbd://host:port/export --verify-only --state FILE\n");
	return 64;
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k':
	case 'K':
		v <<= 10;
		end++;
		break;
	case 'm':
	case 'M':
		v <<= 20;
		end++;
		break;
	case 'g':
	case 'G':
		v <<= 30;
		end++;
		break;
	}
	if (*end)
		return -EINVAL;
	*out = v;
	return 0;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int summary(const struct load *L, int errors)
{
	printf("nbd_load: writes=%" PRIu64 " errors=%d verified=%" PRIu64 " mismatches=%" PRIu64
	       "\n",
	       L->writes, errors, L->verified, L->mismatches);
	fflush(stdout);
	return errors ? 1 : L->mismatches ? 2 : 0;
}

static int io_fail(struct load *L, const char *what)
{
	fprintf(stderr, "nbd_load: %s: %s\n", what, nbd_client_error(L->c));
	return summary(L, 1);
}

static int save_state(const struct load *L, const char *path)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "wb");
	if (!f)
		return -errno;
	uint8_t h[32] = {0};
	put64le(h, STATE_MAGIC);
	put64le(h + 8, L->seed);
	put64le(h + 16, L->nblocks);
	bool ok = fwrite(h, 1, sizeof(h), f) == sizeof(h);
	for (uint64_t b = 0; ok && b < L->nblocks; b++) {
		uint8_t g[4] = {(uint8_t)L->gen[b], (uint8_t)(L->gen[b] >> 8),
				(uint8_t)(L->gen[b] >> 16), (uint8_t)(L->gen[b] >> 24)};
		ok = fwrite(g, 1, 4, f) == 4;
	}
	if (fclose(f) != 0 || !ok || rename(tmp, path) != 0) {
		int r = -errno;
		remove(tmp);
		return r ? r : -EIO;
	}
	return 0;
}

static int load_state(struct load *L, const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -errno;
	uint8_t h[32];
	int r = -EINVAL;
	if (fread(h, 1, sizeof(h), f) != sizeof(h) || get64le(h) != STATE_MAGIC)
		goto out;
	L->seed = get64le(h + 8);
	L->nblocks = get64le(h + 16);
	if (L->nblocks == 0 || L->nblocks > (1ull << 32))
		goto out;
	L->gen = calloc(L->nblocks, sizeof(*L->gen));
	if (!L->gen) {
		r = -ENOMEM;
		goto out;
	}
	for (uint64_t b = 0; b < L->nblocks; b++) {
		uint8_t g[4];
		if (fread(g, 1, 4, f) != 4)
			goto out;
		L->gen[b] = (uint32_t)g[0] | (uint32_t)g[1] << 8 | (uint32_t)g[2] << 16 |
			    (uint32_t)g[3] << 24;
	}
	r = 0;
out:
	fclose(f);
	if (r < 0) {
		free(L->gen);
		L->gen = NULL;
	}
	return r;
}

static void check_block(struct load *L, uint64_t b, const uint8_t *got, uint8_t *want)
{
	if (L->gen[b] == 0)
		return;
	make_block(want, L->seed, b, L->gen[b]);
	if (memcmp(got, want, BLOCK) == 0) {
		L->verified++;
		return;
	}
	if (L->mismatches++ < MAX_SHOWN) {
		unsigned first = 0;
		while (got[first] == want[first])
			first++;
		bool magic = get64le(got) == BLOCK_MAGIC;
		fprintf(stderr,
			"nbd_load: MISMATCH block %" PRIu64 " (offset %" PRIu64
			"): want gen %u seed %" PRIu64 "; found %s block %" PRIu64 " gen %" PRIu64
			" seed %" PRIu64 "; first bad byte %u\n",
			b, b * BLOCK, L->gen[b], L->seed, magic ? "header" : "NO HEADER, raw",
			get64le(got + 8), get64le(got + 16), get64le(got + 24), first);
	}
}

/* Reads the whole region back, several chunks in flight, and checks every written block. */
static int verify(struct load *L, uint32_t qd)
{
	uint64_t region = L->nblocks * BLOCK;
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
			check_block(L, d->off / BLOCK + k, (uint8_t *)d->buf + (size_t)k * BLOCK,
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
	if (L->mismatches > MAX_SHOWN)
		fprintf(stderr, "nbd_load: ... %" PRIu64 " mismatches in all\n", L->mismatches);
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
	uint64_t rng = L->seed ^ 0x5bd1e995ull;
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
			uint64_t b = splitmix(&rng) % L->nblocks;
			while (L->busy[b])
				b = (b + 1) % L->nblocks;
			L->busy[b] = 1;
			uint8_t *buf = bufs + (size_t)s * BLOCK;
			make_block(buf, L->seed, b, L->gen[b] + 1);
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
				L->gen[b] + 1, strerror(-d->result));
			ret = summary(L, 1);
			goto out;
		}
		L->gen[b]++;
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
	static const struct option opts[] = {{"url", required_argument, NULL, 'u'},
					     {"seconds", required_argument, NULL, 's'},
					     {"region", required_argument, NULL, 'r'},
					     {"qd", required_argument, NULL, 'q'},
					     {"seed", required_argument, NULL, 'S'},
					     {"state", required_argument, NULL, 'f'},
					     {"timeout", required_argument, NULL, 't'},
					     {"verify-only", no_argument, NULL, 'V'},
					     {NULL, 0, NULL, 0}};
	const char *url = NULL, *state = NULL;
	double seconds = -1;
	uint64_t region = 0, qd = 16, timeout = 120;
	bool verify_only = false;
	struct load L = {.seed = 1};
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'u':
			url = optarg;
			break;
		case 's':
			seconds = atof(optarg);
			break;
		case 'r':
			if (parse_size(optarg, &region) < 0)
				return usage();
			break;
		case 'q':
			if (parse_size(optarg, &qd) < 0 || qd == 0 || qd > 128)
				return usage();
			break;
		case 'S':
			if (parse_size(optarg, &L.seed) < 0)
				return usage();
			break;
		case 'f':
			state = optarg;
			break;
		case 't':
			if (parse_size(optarg, &timeout) < 0)
				return usage();
			break;
		case 'V':
			verify_only = true;
			break;
		default:
			return usage();
		}
	}
	if (!url || optind != argc)
		return usage();
	if (verify_only) {
		if (!state)
			return usage();
		int r = load_state(&L, state);
		if (r < 0) {
			fprintf(stderr, "nbd_load: state %s: %s\n", state, strerror(-r));
			return 64;
		}
		if (region && region / BLOCK != L.nblocks) {
			fprintf(stderr,
				"nbd_load: --region %" PRIu64 " differs from the state's %" PRIu64
				"\n",
				region, L.nblocks * BLOCK);
			free(L.gen);
			return 64;
		}
	} else {
		if (seconds < 0 || region < BLOCK)
			return usage();
		L.nblocks = region / BLOCK;
		L.gen = calloc(L.nblocks, sizeof(*L.gen));
		L.busy = calloc(L.nblocks, 1);
		if (!L.gen || !L.busy) {
			fprintf(stderr, "nbd_load: out of memory\n");
			return 1;
		}
		if (qd > L.nblocks)
			qd = L.nblocks;
	}
	if (nbd_client_new(&L.c) < 0)
		return 1;
	nbd_client_set_timeout(L.c, (uint32_t)(timeout * 1000));
	int ret;
	if (nbd_client_connect_url(L.c, url) < 0) {
		ret = io_fail(&L, "connect");
		goto out;
	}
	if (L.nblocks * BLOCK > nbd_client_size(L.c)) {
		fprintf(stderr,
			"nbd_load: region %" PRIu64 " is larger than the export (%" PRIu64 ")\n",
			L.nblocks * BLOCK, nbd_client_size(L.c));
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
			int r = save_state(&L, state);
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
	free(L.gen);
	free(L.busy);
	return ret;
}
