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
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nfsc/libnfs.h>

#define BLOCK 4096u
#define BLOCK_MAGIC 0x314441304c53464eull /* "NFSL0AD1" little-endian */
#define STATE_MAGIC 0x3154535346414f4cull
#define READ_CHUNK (1u << 20)
#define MAX_SHOWN 10
#define CALL_TIMEOUT_MS 20000

struct load {
	const char *url;
	struct nfs_context *nfs;
	struct nfsfh *fh;
	uint64_t seed;
	uint64_t nblocks;
	uint32_t *gen; /* last acknowledged generation per block */
	uint64_t writes, reconnects, verified, mismatches;
	double timeout;
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
		"usage: nfs_load --url nfs://HOST/EXPORT/FILE[?ARGS] --seconds S --region BYTES\n"
		"                [--seed N] [--state FILE] [--timeout S]\n"
		"       nfs_load --url ... --verify-only --state FILE\n");
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
	printf("nfs_load: writes=%" PRIu64 " reconnects=%" PRIu64 " errors=%d verified=%" PRIu64
	       " mismatches=%" PRIu64 "\n",
	       L->writes, L->reconnects, errors, L->verified, L->mismatches);
	fflush(stdout);
	return errors ? 1 : L->mismatches ? 2 : 0;
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
			"nfs_load: MISMATCH block %" PRIu64 " (offset %" PRIu64
			"): want gen %u seed %" PRIu64 "; found %s block %" PRIu64 " gen %" PRIu64
			" seed %" PRIu64 "; first bad byte %u\n",
			b, b * BLOCK, L->gen[b], L->seed, magic ? "header" : "NO HEADER, raw",
			get64le(got + 8), get64le(got + 16), get64le(got + 24), first);
	}
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
	uint64_t region = L->nblocks * BLOCK;
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
			check_block(L, off / BLOCK + k, buf + k * BLOCK, want);
		off += n;
	}
	free(buf);
	if (ret >= 0)
		return ret;
	if (L->mismatches > MAX_SHOWN)
		fprintf(stderr, "nfs_load: ... %" PRIu64 " mismatches in all\n", L->mismatches);
	return summary(L, 0);
}

static int run_load(struct load *L, double seconds)
{
	uint8_t buf[BLOCK];
	uint64_t rng = L->seed ^ 0x5bd1e995ull;
	double start = now_s(), last_report = start;
	while (now_s() - start < seconds) {
		uint64_t b = splitmix(&rng) % L->nblocks;
		make_block(buf, L->seed, b, L->gen[b] + 1);
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
		L->gen[b]++;
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
	static const struct option opts[] = {
	    {"url", required_argument, NULL, 'u'},    {"seconds", required_argument, NULL, 's'},
	    {"region", required_argument, NULL, 'r'}, {"seed", required_argument, NULL, 'S'},
	    {"state", required_argument, NULL, 'f'},  {"timeout", required_argument, NULL, 't'},
	    {"verify-only", no_argument, NULL, 'V'},  {NULL, 0, NULL, 0}};
	const char *state = NULL;
	double seconds = -1;
	uint64_t region = 0, timeout = 60;
	bool verify_only = false;
	struct load L = {.seed = 1};
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'u':
			L.url = optarg;
			break;
		case 's':
			seconds = atof(optarg);
			break;
		case 'r':
			if (parse_size(optarg, &region) < 0)
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
	if (!L.url || optind != argc)
		return usage();
	L.timeout = (double)timeout;
	int ret;
	if (verify_only) {
		if (!state)
			return usage();
		int r = load_state(&L, state);
		if (r < 0) {
			fprintf(stderr, "nfs_load: state %s: %s\n", state, strerror(-r));
			return 1;
		}
		ret = verify(&L);
		goto out;
	}
	if (seconds < 0 || region < BLOCK)
		return usage();
	L.nblocks = region / BLOCK;
	L.gen = calloc(L.nblocks, sizeof(*L.gen));
	if (!L.gen)
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
	if (state && (r = save_state(&L, state)) < 0) {
		fprintf(stderr, "nfs_load: save state %s: %s\n", state, strerror(-r));
		ret = 1;
		goto out;
	}
	ret = verify(&L);
out:
	disconnect(&L);
	free(L.gen);
	return ret;
}
