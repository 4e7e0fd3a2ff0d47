/*
 * records: the verified block-record format of the e2e load tools (nfs_load, nbd_load).
 * Each 4 KiB block = header (magic, block, generation, seed, little-endian u64s) + a fill
 * derived from them, so a read-back shows which write (if any) a block holds; the last
 * acknowledged generation of every block, saved to and loaded from a state file (magic,
 * seed, block count, then one u32 a block), is what a read-back must find. Also the small
 * option and clock helpers both tools use. Test-only, header-only: each tool includes it once.
 */
#ifndef BLOCKD_TEST_TOOLS_RECORDS_H
#define BLOCKD_TEST_TOOLS_RECORDS_H

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BLOCK 4096u
#define READ_CHUNK (1u << 20)
#define MAX_SHOWN 10 /* mismatches described one by one */

struct records {
	const char *tool;     /* message prefix */
	uint64_t block_magic; /* each tool its own, so one's blocks never pass for the other's */
	uint64_t state_magic;
	uint64_t seed;
	uint64_t nblocks;
	uint32_t *gen; /* last acknowledged generation per block; 0: never written */
	uint64_t verified, mismatches;
};

static inline uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline void put64le(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t get64le(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* Block b at generation gen. */
static inline void rec_make(const struct records *R, uint8_t *b, uint64_t block, uint32_t gen)
{
	put64le(b, R->block_magic);
	put64le(b + 8, block);
	put64le(b + 16, gen);
	put64le(b + 24, R->seed);
	uint64_t s = R->seed ^ (block * 0xd6e8feb86659fd93ull) ^ ((uint64_t)gen << 40 | gen);
	for (unsigned i = 32; i < BLOCK; i += 8)
		put64le(b + i, splitmix(&s));
}

/* Checks a read-back block (want: BLOCK bytes of scratch); counts it and describes the first
 * MAX_SHOWN mismatches. */
static inline void rec_check(struct records *R, uint64_t b, const uint8_t *got, uint8_t *want)
{
	if (R->gen[b] == 0)
		return;
	rec_make(R, want, b, R->gen[b]);
	if (memcmp(got, want, BLOCK) == 0) {
		R->verified++;
		return;
	}
	if (R->mismatches++ < MAX_SHOWN) {
		unsigned first = 0;
		while (got[first] == want[first])
			first++;
		bool magic = get64le(got) == R->block_magic;
		fprintf(stderr,
			"%s: MISMATCH block %" PRIu64 " (offset %" PRIu64
			"): want gen %u seed %" PRIu64 "; found %s block %" PRIu64 " gen %" PRIu64
			" seed %" PRIu64 "; first bad byte %u\n",
			R->tool, b, b * BLOCK, R->gen[b], R->seed,
			magic ? "header" : "NO HEADER, raw", get64le(got + 8), get64le(got + 16),
			get64le(got + 24), first);
	}
}

/* After a read-back: the count of mismatches rec_check() did not describe. */
static inline void rec_check_done(const struct records *R)
{
	if (R->mismatches > MAX_SHOWN)
		fprintf(stderr, "%s: ... %" PRIu64 " mismatches in all\n", R->tool, R->mismatches);
}

/* Writes the generations to path atomically (path.tmp, then rename). */
static inline int rec_save_state(const struct records *R, const char *path)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "wb");
	if (!f)
		return -errno;
	uint8_t h[32] = {0};
	put64le(h, R->state_magic);
	put64le(h + 8, R->seed);
	put64le(h + 16, R->nblocks);
	bool ok = fwrite(h, 1, sizeof(h), f) == sizeof(h);
	for (uint64_t b = 0; ok && b < R->nblocks; b++) {
		uint8_t g[4] = {(uint8_t)R->gen[b], (uint8_t)(R->gen[b] >> 8),
				(uint8_t)(R->gen[b] >> 16), (uint8_t)(R->gen[b] >> 24)};
		ok = fwrite(g, 1, 4, f) == 4;
	}
	if (fclose(f) != 0 || !ok || rename(tmp, path) != 0) {
		int r = -errno;
		remove(tmp);
		return r ? r : -EIO;
	}
	return 0;
}

/* Loads seed, block count and generations (allocated into R->gen) from path. */
static inline int rec_load_state(struct records *R, const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -errno;
	uint8_t h[32];
	int r = -EINVAL;
	if (fread(h, 1, sizeof(h), f) != sizeof(h) || get64le(h) != R->state_magic)
		goto out;
	R->seed = get64le(h + 8);
	R->nblocks = get64le(h + 16);
	if (R->nblocks == 0 || R->nblocks > (1ull << 32))
		goto out;
	R->gen = calloc(R->nblocks, sizeof(*R->gen));
	if (!R->gen) {
		r = -ENOMEM;
		goto out;
	}
	for (uint64_t b = 0; b < R->nblocks; b++) {
		uint8_t g[4];
		if (fread(g, 1, 4, f) != 4)
			goto out;
		R->gen[b] = (uint32_t)g[0] | (uint32_t)g[1] << 8 | (uint32_t)g[2] << 16 |
			    (uint32_t)g[3] << 24;
	}
	r = 0;
out:
	fclose(f);
	if (r < 0) {
		free(R->gen);
		R->gen = NULL;
	}
	return r;
}

/* A number with an optional k/m/g (binary) suffix. */
static inline int parse_size(const char *s, uint64_t *out)
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

/* The command line both tools share. */
struct load_opts {
	const char *url, *state;
	double seconds; /* < 0: not given */
	uint64_t region, seed, timeout, qd;
	bool verify_only;
};

/* Parses --url --seconds --region --seed --state --timeout --verify-only, and --qd (1..128)
 * when with_qd, into o (which holds the defaults); -1 when the line is not valid, or has no
 * --url. */
static inline int load_opts_parse(int argc, char **argv, bool with_qd, struct load_opts *o)
{
	struct option opts[] = {{"url", required_argument, NULL, 'u'},
				{"seconds", required_argument, NULL, 's'},
				{"region", required_argument, NULL, 'r'},
				{"seed", required_argument, NULL, 'S'},
				{"state", required_argument, NULL, 'f'},
				{"timeout", required_argument, NULL, 't'},
				{"verify-only", no_argument, NULL, 'V'},
				{"qd", required_argument, NULL, 'q'},
				{NULL, 0, NULL, 0}};
	if (!with_qd)
		opts[7] = (struct option){NULL, 0, NULL, 0};
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'u':
			o->url = optarg;
			break;
		case 's':
			o->seconds = atof(optarg);
			break;
		case 'r':
			if (parse_size(optarg, &o->region) < 0)
				return -1;
			break;
		case 'q':
			if (parse_size(optarg, &o->qd) < 0 || o->qd == 0 || o->qd > 128)
				return -1;
			break;
		case 'S':
			if (parse_size(optarg, &o->seed) < 0)
				return -1;
			break;
		case 'f':
			o->state = optarg;
			break;
		case 't':
			if (parse_size(optarg, &o->timeout) < 0)
				return -1;
			break;
		case 'V':
			o->verify_only = true;
			break;
		default:
			return -1;
		}
	}
	return o->url && optind == argc ? 0 : -1;
}

static inline double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
