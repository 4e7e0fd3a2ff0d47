/*
 * test_store: the on-disk replica store against an in-memory model of the volume. Real
 * files in a mkdtemp() directory, real io_uring through the loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include <xxhash.h>

#include "replica/loop.h"
#include "replica/store.h"

#define MIB (1024ull * 1024)
#define BS STORE_BLOCK

struct fx {
	struct loop *l;
	char root[64];
	char dir[128];
};

/* ---- driver: run the loop until N callbacks have completed ---- */

struct waiter {
	struct loop *l;
	int done;
	int want;
	int err;
	bool timed_out;
};

static void wcb(void *arg, int res)
{
	struct waiter *w = arg;
	w->done++;
	if (res < 0 && !w->err)
		w->err = res;
	if (w->done >= w->want)
		loop_stop(w->l);
}

static void wtimeout(void *arg)
{
	struct waiter *w = arg;
	w->timed_out = true;
	loop_stop(w->l);
}

static void run_until(struct waiter *w, int n)
{
	struct loop_timer *t;
	w->want = n;
	if (w->done >= n)
		return;
	assert_int_equal(loop_timer_add(w->l, 15000, wtimeout, w, &t), 0);
	while (w->done < n && !w->timed_out)
		loop_run(w->l);
	assert_false(w->timed_out);
	loop_timer_cancel(w->l, t);
}

static int s_read(struct store *s, struct loop *l, uint64_t off, uint32_t len, void *buf)
{
	struct waiter w = {.l = l};
	int r = store_read(s, off, len, buf, wcb, &w);
	if (r < 0)
		return r;
	run_until(&w, 1);
	return w.err;
}

static int s_write(struct store *s, struct loop *l, uint64_t off, uint32_t len, const void *buf)
{
	struct waiter w = {.l = l};
	int r = store_write(s, off, len, buf, wcb, &w);
	if (r < 0)
		return r;
	run_until(&w, 1);
	return w.err;
}

static int s_trim(struct store *s, struct loop *l, uint64_t off, uint64_t len, bool zero)
{
	struct waiter w = {.l = l};
	int r = store_trim(s, off, len, zero, wcb, &w);
	if (r < 0)
		return r;
	run_until(&w, 1);
	return w.err;
}

static int s_flush(struct store *s, struct loop *l)
{
	struct waiter w = {.l = l};
	int r = store_flush(s, wcb, &w);
	if (r < 0)
		return r;
	run_until(&w, 1);
	return w.err;
}

/* ---- model helpers ---- */

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (uint8_t)(seed >> 16);
	}
}

static void mwrite(struct store *s, struct loop *l, uint8_t *model, uint64_t off, uint32_t len,
		   uint32_t seed)
{
	uint8_t *buf = malloc(len);
	assert_non_null(buf);
	fill(buf, len, seed);
	assert_int_equal(s_write(s, l, off, len, buf), 0);
	memcpy(model + off, buf, len);
	free(buf);
}

static void check_range(struct store *s, struct loop *l, const uint8_t *model, uint64_t off,
			uint64_t len)
{
	uint32_t chunk = 8 * MIB;
	uint8_t *buf = malloc(chunk);
	assert_non_null(buf);
	while (len) {
		uint32_t n = len < chunk ? (uint32_t)len : chunk;
		memset(buf, 0xa5, n);
		assert_int_equal(s_read(s, l, off, n, buf), 0);
		if (memcmp(buf, model + off, n)) {
			for (uint32_t i = 0; i < n; i++)
				if (buf[i] != model[off + i]) {
					fail_msg("mismatch at %llu: got %02x want %02x",
						 (unsigned long long)(off + i), buf[i],
						 model[off + i]);
				}
		}
		off += n;
		len -= n;
	}
	free(buf);
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(p);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	snprintf(f->root, sizeof(f->root), "/tmp/test_store.XXXXXX");
	if (!mkdtemp(f->root))
		return -1;
	snprintf(f->dir, sizeof(f->dir), "%s/vol", f->root);
	if (loop_new(&f->l) < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	loop_free(f->l);
	nftw(f->root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static uint64_t rnd(uint64_t *st)
{
	*st ^= *st << 13;
	*st ^= *st >> 7;
	*st ^= *st << 17;
	return *st;
}

/* Random offsets concentrated around 0 and the 128 MiB page boundary so ops collide. */
static void random_ops(struct store *s, struct loop *l, uint8_t *model, uint64_t size, uint64_t *st,
		       int n)
{
	for (int i = 0; i < n; i++) {
		uint64_t base = (rnd(st) & 1) ? 0 : 128 * MIB - 2 * MIB;
		uint64_t off = base + rnd(st) % (4 * MIB);
		uint32_t len =
		    (uint32_t)(rnd(st) % 3 == 0 ? 1 + rnd(st) % 600 : 1 + rnd(st) % (96 * 1024));
		if (off + len > size)
			len = (uint32_t)(size - off);
		int op = (int)(rnd(st) % 10);
		if (op < 7) {
			mwrite(s, l, model, off, len, (uint32_t)rnd(st));
		} else if (op < 9) {
			check_range(s, l, model, off, len);
		} else {
			assert_int_equal(s_trim(s, l, off, len, op & 1), 0);
			memset(model + off, 0, len);
		}
	}
}

static void test_rw_random(void **state)
{
	struct fx *f = *state;
	uint64_t size = 132 * MIB, st = 88172645463325252ull;
	uint8_t *model = calloc(1, size);
	struct store *s;
	assert_int_equal(store_create(f->l, f->dir, "vol", size, &s), 0);
	random_ops(s, f->l, model, size, &st, 300);
	check_range(s, f->l, model, 0, size);
	/* Now every partial write over old data is a read-modify-write from a lower layer. */
	assert_int_equal(store_snapshot_create(s, "s1"), 0);
	random_ops(s, f->l, model, size, &st, 300);
	assert_int_equal(store_snapshot_create(s, "s2"), 0);
	random_ops(s, f->l, model, size, &st, 200);
	check_range(s, f->l, model, 0, size);
	/* Reads and writes past the end fail. */
	uint8_t b[8];
	assert_int_equal(store_read(s, size - 4, 8, b, wcb, NULL), -EINVAL);
	assert_int_equal(store_write(s, size, 1, b, wcb, NULL), -EINVAL);
	store_close(s);
	free(model);
}

/* Many sub-block writes to one block in flight at once must all land. */
static void test_concurrent_subblock(void **state)
{
	struct fx *f = *state;
	uint64_t size = 8 * MIB;
	uint8_t *model = calloc(1, size);
	struct store *s;
	assert_int_equal(store_create(f->l, f->dir, "vol", size, &s), 0);
	mwrite(s, f->l, model, 0, 64 * 1024, 7);
	assert_int_equal(store_snapshot_create(s, "base"), 0);

	/* Block 3 is owned by the snapshot (RMW from it), block 100 by nobody (zero fill). */
	uint64_t blocks[2] = {3, 100};
	for (int round = 0; round < 2; round++) {
		uint64_t boff = blocks[round] * BS;
		uint8_t bufs[8][512];
		uint8_t rbuf[4][BS];
		struct waiter w = {.l = f->l};
		uint8_t old[BS];
		memcpy(old, model + boff, BS);
		for (int i = 0; i < 8; i++) {
			fill(bufs[i], 512, 1000u + (uint32_t)i + (uint32_t)round * 10);
			assert_int_equal(
			    store_write(s, boff + (uint64_t)i * 512, 512, bufs[i], wcb, &w), 0);
			if (i % 2 == 1)
				assert_int_equal(store_read(s, boff, BS, rbuf[i / 2], wcb, &w), 0);
		}
		run_until(&w, 12);
		assert_int_equal(w.err, 0);
		for (int i = 0; i < 8; i++)
			memcpy(model + boff + i * 512, bufs[i], 512);
		/* A read concurrent with the writes sees each byte old or new (buffered I/O may
		 * tear within a sector), never anything else such as a half-copied block. */
		for (int k = 0; k < 4; k++)
			for (int j = 0; j < (int)BS; j++)
				if (rbuf[k][j] != old[j] && rbuf[k][j] != bufs[j / 512][j % 512])
					fail_msg("round %d read %d byte %d: %02x", round, k, j,
						 rbuf[k][j]);
		check_range(s, f->l, model, 0, size);
	}

	/* Unaligned writes straddling two blocks, all concurrent, disjoint bytes. */
	struct waiter w = {.l = f->l};
	uint8_t bufs[6][3000];
	for (int i = 0; i < 6; i++) {
		uint64_t off = 8 * BS + 100 + (uint64_t)i * 3000;
		fill(bufs[i], 3000, 77u + (uint32_t)i);
		assert_int_equal(store_write(s, off, 3000, bufs[i], wcb, &w), 0);
		memcpy(model + off, bufs[i], 3000);
	}
	run_until(&w, 6);
	assert_int_equal(w.err, 0);
	check_range(s, f->l, model, 0, size);
	store_close(s);
	free(model);
}

static void merge_all(struct store *s)
{
	int r, steps = 0;
	while ((r = store_merge_step(s)) == 1)
		assert_true(++steps < 10000);
	assert_int_equal(r, 0);
}

struct cop {
	int kind; /* 0 write, 1 read, 2 trim */
	uint64_t off;
	uint32_t len;
	uint8_t *buf;
};

static bool cop_overlaps(const struct cop *ops, int n, uint64_t off, uint32_t len)
{
	for (int i = 0; i < n; i++)
		if (off < ops[i].off + ops[i].len && ops[i].off < off + len)
			return true;
	return false;
}

/*
 * Batches of concurrent ops on disjoint byte ranges that share blocks, with snapshots
 * taken, deleted and merged while the batches are in flight. Each read must return the
 * pre-batch content; after the batch the volume must equal the model.
 */
static void test_concurrent_random(void **state)
{
	struct fx *f = *state;
	uint64_t size = 8 * MIB, win = 512 * 1024, st = 0x9e3779b97f4a7c15ull;
	uint8_t *model = calloc(1, size);
	struct store *s;
	int nsnap = 0;
	assert_int_equal(store_create(f->l, f->dir, "vol", size, &s), 0);
	mwrite(s, f->l, model, 0, (uint32_t)win / 2, 5);
	assert_int_equal(store_snapshot_create(s, "base"), 0);
	for (int batch = 0; batch < 200; batch++) {
		struct cop ops[16];
		int n = 0, count = 0;
		for (int t = 0; t < 60 && n < 16; t++) {
			uint64_t off = rnd(&st) % win;
			uint32_t len = (uint32_t)(1 + rnd(&st) % ((rnd(&st) & 1) ? 700 : 20000));
			if (off + len > win)
				len = (uint32_t)(win - off);
			if (cop_overlaps(ops, n, off, len))
				continue;
			int k = (int)(rnd(&st) % 20);
			ops[n].kind = k < 12 ? 0 : k < 17 ? 1 : 2;
			ops[n].off = off;
			ops[n].len = len;
			ops[n].buf = malloc(len);
			if (ops[n].kind == 0)
				fill(ops[n].buf, len, (uint32_t)rnd(&st));
			n++;
		}
		struct waiter w = {.l = f->l};
		for (int i = 0; i < n; i++, count++) {
			struct cop *o = &ops[i];
			int r = o->kind == 0   ? store_write(s, o->off, o->len, o->buf, wcb, &w)
				: o->kind == 1 ? store_read(s, o->off, o->len, o->buf, wcb, &w)
					       : store_trim(s, o->off, o->len, i & 1, wcb, &w);
			assert_int_equal(r, 0);
			if (i == n / 2 && batch % 10 == 3) {
				char name[16];
				snprintf(name, sizeof(name), "c%d", nsnap++);
				assert_int_equal(store_snapshot_create(s, name), 0);
			}
			if (i == n / 2 && batch % 10 == 7) {
				struct store_snap *v;
				uint32_t nv;
				assert_int_equal(store_snapshot_list(s, &v, &nv), 0);
				for (uint32_t j = 0; j < nv; j++)
					if (!v[j].deleting) {
						assert_int_equal(
						    store_snapshot_delete(s, v[j].name), 0);
						break;
					}
				free(v);
				assert_true(store_merge_step(s) >= 0);
			}
		}
		if (batch % 5 == 0) {
			assert_int_equal(store_flush(s, wcb, &w), 0);
			count++;
		}
		run_until(&w, count);
		assert_int_equal(w.err, 0);
		for (int i = 0; i < n; i++) {
			struct cop *o = &ops[i];
			if (o->kind == 1 && memcmp(o->buf, model + o->off, o->len))
				fail_msg("batch %d: read at %llu+%u differs", batch,
					 (unsigned long long)o->off, o->len);
			if (o->kind == 0)
				memcpy(model + o->off, o->buf, o->len);
			if (o->kind == 2)
				memset(model + o->off, 0, o->len);
			free(o->buf);
		}
		if (batch % 20 == 19)
			check_range(s, f->l, model, 0, win);
	}
	merge_all(s);
	check_range(s, f->l, model, 0, size);
	store_close(s);
	assert_int_equal(store_open(f->l, f->dir, &s), 0);
	check_range(s, f->l, model, 0, size);
	store_close(s);
	free(model);
}

static void test_trim_zero(void **state)
{
	struct fx *f = *state;
	uint64_t size = 16 * MIB;
	uint8_t *model = calloc(1, size);
	struct store *s;
	assert_int_equal(store_create(f->l, f->dir, "vol", size, &s), 0);
	mwrite(s, f->l, model, 0, 4 * MIB, 1);
	assert_int_equal(store_snapshot_create(s, "a"), 0);
	mwrite(s, f->l, model, 2 * MIB, 4 * MIB, 2);
	struct {
		uint64_t off, len;
		bool zero;
	} t[] = {
	    {100, 5000, false},		/* partial blocks, lower layer owns */
	    {1 * MIB + 7, MIB, true},	/* lower-owned, unaligned */
	    {3 * MIB, 2 * MIB, false},	/* head owns, lower owns part */
	    {5 * MIB + 3, 10, true},	/* inside one block, head-only */
	    {10 * MIB, 2 * MIB, false}, /* nobody owns */
	    {0, 0, false},		/* empty */
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		assert_int_equal(s_trim(s, f->l, t[i].off, t[i].len, t[i].zero), 0);
		memset(model + t[i].off, 0, t[i].len);
	}
	check_range(s, f->l, model, 0, size);
	/* Writes after a trim over a lower-owned range are not shadowed by the lower layer. */
	mwrite(s, f->l, model, 1 * MIB + 9, 100, 3);
	check_range(s, f->l, model, 0, 8 * MIB);
	assert_int_equal(s_flush(s, f->l), 0);
	store_close(s);
	assert_int_equal(store_open(f->l, f->dir, &s), 0);
	check_range(s, f->l, model, 0, size);
	assert_int_equal(store_trim(s, size - 1, 2, false, wcb, NULL), -EINVAL);
	store_close(s);
	free(model);
}

static void test_flush_reopen(void **state)
{
	struct fx *f = *state;
	uint64_t size = 132 * MIB, st = 1234567;
	uint8_t *model = calloc(1, size);
	struct store *s;
	assert_int_equal(store_create(f->l, f->dir, "vol", size, &s), 0);
	random_ops(s, f->l, model, size, &st, 200);
	assert_int_equal(s_flush(s, f->l), 0);
	/* Several flushes in flight at once, with writes between them. */
	struct waiter w = {.l = f->l};
	uint8_t buf[3][BS];
	for (int i = 0; i < 3; i++) {
		fill(buf[i], BS, 50u + (uint32_t)i);
		assert_int_equal(store_write(s, (uint64_t)(i + 40) * BS, BS, buf[i], wcb, &w), 0);
		memcpy(model + (uint64_t)(i + 40) * BS, buf[i], BS);
		assert_int_equal(store_flush(s, wcb, &w), 0);
	}
	run_until(&w, 6);
	assert_int_equal(w.err, 0);
	store_close(s);
	assert_int_equal(store_open(f->l, f->dir, &s), 0);
	check_range(s, f->l, model, 0, size);
	struct store_info info;
	assert_int_equal(store_get_info(s, &info), 0);
	assert_string_equal(info.name, "vol");
	assert_int_equal(info.size, size);
	assert_true(info.clean);
	assert_true(info.allocated > 0);
	assert_int_equal(store_create(f->l, f->dir, "vol", size, &s), -EEXIST);
	store_close(s);
	free(model);
}

/* What a flush made durable is in the files: a copy of the directory taken right after
 * (as a crash would leave it, without close) reads it back. */
static void test_flush_crash_copy(void **state)
{
	struct fx *f = *state;
	uint64_t size = 16 * MIB;
	uint8_t *model = calloc(1, size);
	struct store *s, *c;
	char cdir[160], cmd[512];
	snprintf(cdir, sizeof(cdir), "%s/crash", f->root);
	assert_int_equal(store_create(f->l, f->dir, "vol", size, &s), 0);
	mwrite(s, f->l, model, 100, 3 * MIB, 61);
	assert_int_equal(store_snapshot_create(s, "a"), 0);
	mwrite(s, f->l, model, 1 * MIB + 1, 5000, 62);
	mwrite(s, f->l, model, 9 * MIB, 70000, 63);
	assert_int_equal(s_trim(s, f->l, 2 * MIB, 8192, false), 0);
	memset(model + 2 * MIB, 0, 8192);
	assert_int_equal(s_flush(s, f->l), 0);
	snprintf(cmd, sizeof(cmd), "cp -a --sparse=always %s %s", f->dir, cdir);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(store_open(f->l, cdir, &c), 0);
	check_range(c, f->l, model, 0, size);
	store_close(c);

	/* Close with I/O in flight: the requests complete, then the store closes. */
	struct waiter w = {.l = f->l};
	uint8_t buf[4][6000];
	for (int i = 0; i < 4; i++) {
		fill(buf[i], sizeof(buf[i]), 70u + (uint32_t)i);
		assert_int_equal(
		    store_write(s, 5 * MIB + 1 + (uint64_t)i * 6000, 6000, buf[i], wcb, &w), 0);
		memcpy(model + 5 * MIB + 1 + i * 6000, buf[i], 6000);
	}
	assert_int_equal(store_flush(s, wcb, &w), 0);
	store_close(s);
	run_until(&w, 5);
	assert_int_equal(w.err, 0);
	assert_int_equal(store_open(f->l, f->dir, &s), 0);
	check_range(s, f->l, model, 0, size);
	store_close(s);
	free(model);
}

static void test_snapshot_revert(void **state)
{
	struct fx *f = *state;
	uint64_t size = 8 * MIB;
	uint8_t *m1 = calloc(1, size), *m2;
	struct store *s;
	assert_int_equal(store_create(f->l, f->dir, "vol", size, &s), 0);
	mwrite(s, f->l, m1, 0, 2 * MIB, 11);
	mwrite(s, f->l, m1, 5 * MIB + 3, 1000, 12);
	assert_int_equal(store_snapshot_create(s, "s1"), 0);
	assert_int_equal(store_snapshot_create(s, "s1"), -EEXIST);
	assert_int_equal(store_snapshot_create(s, "bad/name"), -EINVAL);
	assert_int_equal(store_snapshot_create(s, ""), -EINVAL);
	m2 = malloc(size);
	memcpy(m2, m1, size);
	mwrite(s, f->l, m2, 1 * MIB + 5, 2 * MIB, 13);
	mwrite(s, f->l, m2, 7 * MIB, 10, 14);
	check_range(s, f->l, m2, 0, size);
	assert_int_equal(store_snapshot_create(s, "s2"), 0);

	struct store_snap *v;
	uint32_t n;
	assert_int_equal(store_snapshot_list(s, &v, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(v[0].name, "s1");
	assert_string_equal(v[0].parent, "");
	assert_string_equal(v[1].name, "s2");
	assert_string_equal(v[1].parent, "s1");
	assert_true(v[0].in_head_chain && v[1].in_head_chain);
	assert_true(v[0].allocated >= 2 * MIB);
	assert_false(v[0].deleting);
	free(v);

	/* Revert to s1: the head shows s1's content; s2 leaves the head chain. */
	mwrite(s, f->l, m2, 0, 100, 15); /* discarded by the revert */
	assert_int_equal(store_snapshot_revert(s, "s1"), 0);
	check_range(s, f->l, m1, 0, size);
	assert_int_equal(store_snapshot_list(s, &v, &n), 0);
	assert_int_equal(n, 2);
	assert_true(v[0].in_head_chain);
	assert_false(v[1].in_head_chain);
	free(v);
	/* Revert to s2 (another branch) and back survive a reopen. */
	assert_int_equal(store_snapshot_revert(s, "s2"), 0);
	store_close(s);
	assert_int_equal(store_open(f->l, f->dir, &s), 0);
	/* m2 holds s2's content plus the discarded 100-byte write: rebuild s2's model. */
	memcpy(m2, m1, size);
	fill(m2 + 1 * MIB + 5, 2 * MIB, 13);
	fill(m2 + 7 * MIB, 10, 14);
	check_range(s, f->l, m2, 0, size);
	assert_int_equal(store_snapshot_revert(s, "nope"), -ENOENT);
	store_close(s);
	free(m1);
	free(m2);
}

/* Snapshot identities survive a reopen; a view as of a snapshot reads and hashes exactly that
 * snapshot's content (also while a deleted ancestor merges into it, and across sub-block
 * writes); revert to the root gives an empty chain. */
static void test_snapshot_views(void **state)
{
	struct fx *f = *state;
	uint64_t size = 8 * MIB;
	uint8_t *m1 = calloc(1, size), *m2 = malloc(size), *buf = malloc(size);
	uint64_t h[8], hv[8];
	struct store *s;
	assert_int_equal(store_create(f->l, f->dir, "vol", size, &s), 0);
	mwrite(s, f->l, m1, 0, 2 * MIB, 21);
	mwrite(s, f->l, m1, 5 * MIB + 3, 1000, 22);
	assert_int_equal(store_snapshot_create_id(s, "s1", "id-1"), 0);
	assert_int_equal(store_snapshot_create_id(s, "other", "id-1"), -EEXIST);
	assert_int_equal(store_snapshot_create_id(s, "x", "bad id"), -EINVAL);
	memcpy(m2, m1, size);
	mwrite(s, f->l, m2, 1 * MIB + 5, 2 * MIB, 23);
	assert_int_equal(store_snapshot_create(s, "s2"), 0); /* a generated identity */
	mwrite(s, f->l, m2, 7 * MIB, 10, 24);		     /* head only */
	struct store_snap *v;
	uint32_t n;
	assert_int_equal(store_snapshot_list(s, &v, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(v[0].id, "id-1");
	assert_string_equal(v[0].parent_id, "");
	assert_true(strlen(v[1].id) > 8);
	assert_string_equal(v[1].parent_id, "id-1");
	char id2[STORE_SNAP_ID_MAX];
	snprintf(id2, sizeof(id2), "%s", v[1].id);
	free(v);

	store_close(s);
	assert_int_equal(store_open(f->l, f->dir, &s), 0);
	assert_int_equal(store_snapshot_list(s, &v, &n), 0);
	assert_string_equal(v[0].id, "id-1");
	assert_string_equal(v[1].id, id2);
	free(v);

	/* s1's view; s2's view lacks the head-only write. */
	assert_int_equal(store_snap_read(s, "id-1", 0, (uint32_t)size, buf), 0);
	assert_memory_equal(buf, m1, size);
	assert_int_equal(store_snap_read(s, id2, 7 * MIB, 10, buf), 0);
	assert_memory_equal(buf, m1 + 7 * MIB, 10);
	assert_int_equal(store_snap_read(s, id2, 1 * MIB + 3, 100, buf), 0);
	assert_memory_equal(buf, m2 + 1 * MIB + 3, 100);
	assert_int_equal(store_snap_read(s, "nope", 0, 4096, buf), -ENOENT);
	assert_int_equal(store_snap_read(s, "id-1", size - 10, 11, buf), -EINVAL);
	/* A view hashes like a head with the same content. */
	assert_int_equal(store_snap_hash(s, "id-1", 0, size, (uint32_t)MIB, hv), 0);
	assert_int_equal(store_hash(s, 0, size, (uint32_t)MIB, h), 0);
	assert_true(hv[0] == h[0]);
	assert_true(hv[1] != h[1]);
	for (int i = 0; i < 8; i++)
		assert_true(hv[i] == XXH3_64bits(m1 + (uint64_t)i * MIB, MIB));

	/* Deleting s1 merges it into s2: s2's view does not change. */
	uint64_t before[8], after[8];
	assert_int_equal(store_snap_hash(s, id2, 0, size, (uint32_t)MIB, before), 0);
	assert_int_equal(store_snapshot_delete(s, "s1"), 0);
	merge_all(s);
	assert_int_equal(store_snap_hash(s, id2, 0, size, (uint32_t)MIB, after), 0);
	assert_memory_equal(before, after, sizeof(before));
	assert_int_equal(store_snapshot_list(s, &v, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(v[0].parent_id, "");
	free(v);

	/* Revert to the root: an empty volume whose head has no parent. */
	assert_int_equal(store_snapshot_revert_root(s), 0);
	memset(m1, 0, size);
	check_range(s, f->l, m1, 0, size);
	assert_int_equal(store_snapshot_list(s, &v, &n), 0);
	assert_int_equal(n, 1);
	assert_false(v[0].in_head_chain);
	free(v);
	assert_int_equal(store_snapshot_create_id(s, "s1", "id-1"), 0); /* identities are free */
	store_close(s);

	/* A volume.meta from before identities: every replica derives the same one. */
	char path[256];
	snprintf(path, sizeof(path), "%s/volume.meta", f->dir);
	json_error_t jerr;
	json_t *meta = json_load_file(path, 0, &jerr);
	assert_non_null(meta);
	size_t i;
	json_t *L;
	json_array_foreach(json_object_get(meta, "layers"), i, L)
	{
		json_object_del(L, "sid");
	}
	assert_int_equal(json_dump_file(meta, path, 0), 0);
	json_decref(meta);
	assert_int_equal(store_open(f->l, f->dir, &s), 0);
	assert_int_equal(store_snapshot_list(s, &v, &n), 0);
	assert_string_equal(v[n - 1].id, "n:s1");
	free(v);
	store_close(s);
	free(m1);
	free(m2);
	free(buf);
}

static void test_delete_merge(void **state)
{
	struct fx *f = *state;
	uint64_t size = 200 * MIB;
	uint8_t *model = calloc(1, size);
	struct store *s;
	assert_int_equal(store_create(f->l, f->dir, "vol", size, &s), 0);
	/* More than one merge step's worth (64 MiB) in the oldest snapshot. */
	for (uint64_t off = 0; off < 80 * MIB; off += MIB)
		mwrite(s, f->l, model, off, MIB, (uint32_t)off);
	mwrite(s, f->l, model, 150 * MIB, 100, 1);
	assert_int_equal(store_snapshot_create(s, "s1"), 0);
	mwrite(s, f->l, model, 10 * MIB + 1, 3 * MIB, 2);
	assert_int_equal(store_snapshot_create(s, "s2"), 0);
	mwrite(s, f->l, model, 50 * MIB + 1, 5000, 3);
	assert_int_equal(store_snapshot_create(s, "s3"), 0);
	mwrite(s, f->l, model, 11 * MIB, 5000, 4);

	/* Delete the middle snapshot: merged into s3, the head unchanged. */
	assert_int_equal(store_snapshot_delete(s, "s2"), 0);
	assert_int_equal(store_snapshot_delete(s, "zz"), -ENOENT);
	struct store_snap *v;
	uint32_t n;
	assert_int_equal(store_snapshot_list(s, &v, &n), 0);
	assert_int_equal(n, 3);
	assert_true(v[1].deleting);
	free(v);
	merge_all(s);
	check_range(s, f->l, model, 0, size);
	assert_int_equal(store_snapshot_list(s, &v, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(v[1].name, "s3");
	assert_string_equal(v[1].parent, "s1");
	free(v);

	/* Delete the oldest: one step, then "crash" (close without finishing), reopen, resume. */
	assert_int_equal(store_snapshot_delete(s, "s1"), 0);
	assert_int_equal(store_merge_step(s), 1);
	store_close(s);
	assert_int_equal(store_open(f->l, f->dir, &s), 0);
	check_range(s, f->l, model, 0, size);
	mwrite(s, f->l, model, 20 * MIB + 5, 9000, 5); /* I/O between merge steps */
	merge_all(s);
	check_range(s, f->l, model, 0, size);
	assert_int_equal(store_snapshot_list(s, &v, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(v[0].name, "s3");
	assert_string_equal(v[0].parent, "");
	free(v);
	store_close(s);
	assert_int_equal(store_open(f->l, f->dir, &s), 0);
	check_range(s, f->l, model, 0, size);
	/* Deleted layers' files are gone: 2 layers left, 2 files each, plus volume.meta. */
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "test $(ls %s | wc -l) -eq 5", f->dir);
	assert_int_equal(system(cmd), 0);
	store_close(s);
	free(model);
}

/* Snapshots off the head chain, without children, and reverts to a deleting snapshot. */
static void test_delete_branches(void **state)
{
	struct fx *f = *state;
	uint64_t size = 8 * MIB;
	uint8_t *m1 = calloc(1, size), *m = malloc(size);
	struct store *s;
	assert_int_equal(store_create(f->l, f->dir, "vol", size, &s), 0);
	mwrite(s, f->l, m1, 0, 1 * MIB + 3, 81);
	assert_int_equal(store_snapshot_create(s, "s1"), 0);
	memcpy(m, m1, size);
	mwrite(s, f->l, m, 512, 3 * MIB, 82);
	assert_int_equal(store_snapshot_create(s, "s2"), 0);
	assert_int_equal(store_snapshot_revert(s, "s1"), 0);
	memcpy(m, m1, size);
	mwrite(s, f->l, m, 2 * MIB + 1, 5000, 83);
	/* s2 is off the chain and childless: its deletion just removes it. */
	assert_int_equal(store_snapshot_delete(s, "s2"), 0);
	merge_all(s);
	check_range(s, f->l, m, 0, size);
	/* Delete s1, then revert to it while it is deleting: the new head gets its blocks. */
	assert_int_equal(store_snapshot_delete(s, "s1"), 0);
	assert_int_equal(store_snapshot_revert(s, "s1"), 0);
	check_range(s, f->l, m1, 0, size);
	mwrite(s, f->l, m1, 100, 100, 84);
	merge_all(s);
	check_range(s, f->l, m1, 0, size);
	struct store_snap *v;
	uint32_t n;
	assert_int_equal(store_snapshot_list(s, &v, &n), 0);
	assert_int_equal(n, 0);
	free(v);
	store_close(s);
	assert_int_equal(store_open(f->l, f->dir, &s), 0);
	check_range(s, f->l, m1, 0, size);
	store_close(s);
	free(m1);
	free(m);
}

static void test_clone(void **state)
{
	struct fx *f = *state;
	uint64_t size = 16 * MIB;
	uint8_t *src = calloc(1, size), *snap, *cl;
	struct store *s, *c;
	char cdir[160];
	snprintf(cdir, sizeof(cdir), "%s/clone", f->root);
	assert_int_equal(store_create(f->l, f->dir, "vol", size, &s), 0);
	mwrite(s, f->l, src, 0, 3 * MIB, 21);
	assert_int_equal(store_snapshot_create(s, "s0"), 0);
	mwrite(s, f->l, src, 1 * MIB + 100, 3 * MIB, 22);
	assert_int_equal(store_snapshot_create(s, "s1"), 0);
	snap = malloc(size);
	memcpy(snap, src, size);
	mwrite(s, f->l, src, 0, 10000, 23);

	assert_int_equal(store_clone(s, "s1", cdir, "vol2"), 0);
	assert_int_equal(store_clone(s, "s1", cdir, "vol2"), -EEXIST);
	assert_int_equal(store_clone(s, "nope", cdir, "vol3"), -ENOENT);
	assert_int_equal(store_open(f->l, cdir, &c), 0);
	struct store_info info;
	assert_int_equal(store_get_info(c, &info), 0);
	assert_string_equal(info.name, "vol2");
	assert_int_equal(info.epoch, 0);
	assert_int_equal(info.size, size);
	check_range(c, f->l, snap, 0, size);

	cl = malloc(size);
	memcpy(cl, snap, size);
	mwrite(c, f->l, cl, 2 * MIB, 5000, 24);
	mwrite(s, f->l, src, 2 * MIB + 7, 5000, 25);
	check_range(c, f->l, cl, 0, size);
	check_range(s, f->l, src, 0, size);

	/* Deleting s0 in the source merges into s1, whose files the clone shares. */
	struct store_snap *v;
	uint32_t n;
	assert_int_equal(store_snapshot_list(s, &v, &n), 0);
	assert_int_equal(n, 2);
	char p[256];
	struct stat st;
	snprintf(p, sizeof(p), "%s/layer-%llu.data", cdir, (unsigned long long)v[1].layer_id);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_nlink, 2);
	assert_int_equal(store_snapshot_delete(s, "s0"), 0);
	merge_all(s);
	/* The source replaced its shared s1 files by private copies instead of merging
	 * into them: the clone's files are untouched and no longer shared. */
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_nlink, 1);
	snprintf(p, sizeof(p), "%s/layer-%llu.map", cdir, (unsigned long long)v[1].layer_id);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_nlink, 1);
	free(v);
	check_range(s, f->l, src, 0, size);
	check_range(c, f->l, cl, 0, size);
	store_close(c);
	assert_int_equal(store_open(f->l, cdir, &c), 0);
	check_range(c, f->l, cl, 0, size);
	/* And the clone can delete its shared snapshots too. */
	assert_int_equal(store_snapshot_delete(c, "s1"), 0);
	assert_int_equal(store_snapshot_delete(c, "s0"), 0);
	merge_all(c);
	check_range(c, f->l, cl, 0, size);
	check_range(s, f->l, src, 0, size);
	assert_int_equal(store_snapshot_revert(s, "s1"), 0);
	check_range(s, f->l, snap, 0, size);
	store_close(c);
	store_close(s);
	free(src);
	free(snap);
	free(cl);
}

static void test_resize(void **state)
{
	struct fx *f = *state;
	uint64_t size = 4 * MIB, big = 300 * MIB;
	uint8_t *model = calloc(1, big);
	struct store *s;
	assert_int_equal(store_create(f->l, f->dir, "vol", size, &s), 0);
	mwrite(s, f->l, model, size - 5000, 5000, 31);
	assert_int_equal(store_snapshot_create(s, "a"), 0);
	assert_int_equal(store_resize(s, size / 2), -EINVAL);
	assert_int_equal(store_resize(s, big), 0);
	mwrite(s, f->l, model, size - 100, 200, 32);
	mwrite(s, f->l, model, big - 3 * BS - 1, 3 * BS + 1, 33);
	check_range(s, f->l, model, 0, big);
	store_close(s);
	assert_int_equal(store_open(f->l, f->dir, &s), 0);
	struct store_info info;
	assert_int_equal(store_get_info(s, &info), 0);
	assert_int_equal(info.size, big);
	check_range(s, f->l, model, 0, big);
	store_close(s);
	free(model);
}

static void test_epoch_members(void **state)
{
	struct fx *f = *state;
	struct store *s;
	assert_int_equal(store_create(f->l, f->dir, "vol", MIB, &s), 0);
	assert_int_equal(store_epoch(s), 0);
	assert_int_equal(store_bump_epoch(s, 0), -ESTALE);
	assert_int_equal(store_bump_epoch(s, 5), 0);
	assert_int_equal(store_bump_epoch(s, 5), -ESTALE);
	assert_int_equal(store_bump_epoch(s, 3), -ESTALE);
	assert_int_equal(store_epoch(s), 5);
	struct store_member m[3] = {{"n1", true}, {"n2", false}, {"n3", true}};
	assert_int_equal(store_set_members(s, m, 3, 7), 0);
	assert_int_equal(store_set_clean(s, false), 0);
	store_close(s);
	assert_int_equal(store_open(f->l, f->dir, &s), 0);
	assert_int_equal(store_epoch(s), 5);
	assert_int_equal(store_bump_epoch(s, 4), -ESTALE);
	assert_int_equal(store_bump_epoch(s, 6), 0);
	struct store_info info;
	assert_int_equal(store_get_info(s, &info), 0);
	assert_int_equal(info.members_gen, 7);
	assert_int_equal(info.nmembers, 3);
	assert_string_equal(info.members[1].node, "n2");
	assert_false(info.members[1].in_sync);
	assert_true(info.members[2].in_sync);
	assert_true(info.clean); /* close marks clean */
	assert_int_equal(strlen(info.uuid), 36);
	store_close(s);
	assert_int_equal(store_open(f->l, f->dir, &s), 0);
	assert_int_equal(store_epoch(s), 6);
	store_close(s);
}

static void test_dirty(void **state)
{
	struct fx *f = *state;
	struct store *s;
	assert_int_equal(store_create(f->l, f->dir, "vol", MIB, &s), 0);
	uint8_t bits[300], *got;
	uint32_t grain;
	size_t nb;
	fill(bits, sizeof(bits), 9);
	assert_int_equal(store_get_dirty(s, "n2", &grain, &got, &nb), -ENOENT);
	assert_int_equal(store_put_dirty(s, "n2", 1 << 20, bits, sizeof(bits)), 0);
	assert_int_equal(store_put_dirty(s, "../x", 1 << 20, bits, sizeof(bits)), -EINVAL);
	bits[0] ^= 0xff;
	assert_int_equal(store_put_dirty(s, "n2", 1 << 20, bits, sizeof(bits)), 0);
	store_close(s);
	assert_int_equal(store_open(f->l, f->dir, &s), 0);
	assert_int_equal(store_get_dirty(s, "n2", &grain, &got, &nb), 0);
	assert_int_equal(grain, 1 << 20);
	assert_int_equal(nb, sizeof(bits));
	assert_memory_equal(got, bits, sizeof(bits));
	free(got);
	assert_int_equal(store_drop_dirty(s, "n2"), 0);
	assert_int_equal(store_get_dirty(s, "n2", &grain, &got, &nb), -ENOENT);
	store_close(s);
}

static void test_hash(void **state)
{
	struct fx *f = *state;
	uint64_t size = 40 * MIB, ext = 4 * MIB;
	char d2[160];
	snprintf(d2, sizeof(d2), "%s/other", f->root);
	struct store *a, *b;
	assert_int_equal(store_create(f->l, f->dir, "a", size, &a), 0);
	assert_int_equal(store_create(f->l, d2, "b", size, &b), 0);
	uint8_t *ma = calloc(1, size), *mb = calloc(1, size);
	/* Same content reached differently: b has it across a snapshot and a trim. */
	mwrite(a, f->l, ma, 5 * MIB + 3, 70000, 41);
	mwrite(b, f->l, mb, 5 * MIB + 3, 70000, 41);
	mwrite(b, f->l, mb, 30 * MIB, 8192, 42);
	assert_int_equal(store_snapshot_create(b, "x"), 0);
	assert_int_equal(s_trim(b, f->l, 30 * MIB, 8192, false), 0);
	uint64_t ha[10], hb[10];
	assert_int_equal(store_hash(a, 0, size, (uint32_t)ext, ha), 0);
	assert_int_equal(store_hash(b, 0, size, (uint32_t)ext, hb), 0);
	assert_memory_equal(ha, hb, sizeof(ha));
	uint8_t *zero = calloc(1, ext);
	assert_true(ha[0] == XXH3_64bits(zero, ext));
	assert_true(ha[1] == XXH3_64bits(ma + ext, ext));
	assert_false(store_allocated(a, 0, ext));
	assert_true(store_allocated(a, ext, ext));
	/* One byte differs: exactly that extent's hash differs. */
	mwrite(b, f->l, mb, 21 * MIB, 1, 43);
	assert_int_equal(store_hash(b, 0, size, (uint32_t)ext, hb), 0);
	for (int i = 0; i < 10; i++)
		assert_true((ha[i] != hb[i]) == (i == 5));
	/* A short last extent. */
	uint64_t h2[2];
	assert_int_equal(store_hash(a, 0, ext + 10, (uint32_t)ext, h2), 0);
	assert_true(h2[1] == XXH3_64bits(ma + ext, 10));
	store_close(a);
	store_close(b);
	free(zero);
	free(ma);
	free(mb);
}

static void write_file(const char *dir, const char *name, const char *text)
{
	char p[256];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	FILE *fp = fopen(p, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static void test_bad_meta(void **state)
{
	struct fx *f = *state;
	struct store *s;
	assert_int_equal(store_create(f->l, f->dir, "vol", MIB, &s), 0);
	store_close(s);
	const char *bad[] = {
	    "",
	    "not json{",
	    "[1,2]",
	    "{\"name\":\"vol\"}",
	    "{\"name\":\"vol\",\"uuid\":\"u\",\"size\":4096,\"block_size\":512,\"epoch\":0,"
	    "\"members_gen\":0,\"members\":[],\"clean\":true,\"next_layer_id\":2,\"head\":1,"
	    "\"layers\":[{\"id\":1,\"parent\":0,\"snapshot\":null,\"created\":0,\"deleting\":false}"
	    "]}",
	    "{\"name\":\"vol\",\"uuid\":\"u\",\"size\":4096,\"block_size\":4096,\"epoch\":0,"
	    "\"members_gen\":0,\"members\":[],\"clean\":true,\"next_layer_id\":3,\"head\":1,"
	    "\"layers\":[{\"id\":1,\"parent\":2,\"snapshot\":null,\"created\":0,\"deleting\":false}"
	    ","
	    "{\"id\":2,\"parent\":1,\"snapshot\":\"x\",\"created\":0,\"deleting\":false}]}",
	    "{\"name\":\"vol\",\"uuid\":\"u\",\"size\":4096,\"block_size\":4096,\"epoch\":0,"
	    "\"members_gen\":0,\"members\":[],\"clean\":true,\"next_layer_id\":2,\"head\":7,"
	    "\"layers\":[{\"id\":1,\"parent\":0,\"snapshot\":null,\"created\":0,\"deleting\":false}"
	    "]}",
	    "{\"name\":\"vol\",\"uuid\":\"u\",\"size\":4096,\"block_size\":4096,\"epoch\":0,"
	    "\"members_gen\":0,\"members\":[],\"clean\":true,\"next_layer_id\":2,\"head\":1,"
	    "\"layers\":[{\"id\":1,\"parent\":0,\"snapshot\":null,\"created\":0,\"deleting\":true}]"
	    "}",
	    "{\"name\":\"../x\",\"uuid\":\"u\",\"size\":4096,\"block_size\":4096,\"epoch\":0,"
	    "\"members_gen\":0,\"members\":[],\"clean\":true,\"next_layer_id\":2,\"head\":1,"
	    "\"layers\":[{\"id\":1,\"parent\":0,\"snapshot\":null,\"created\":0,\"deleting\":false}"
	    "]}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_file(f->dir, "volume.meta", bad[i]);
		s = NULL;
		assert_int_equal(store_open(f->l, f->dir, &s), -EUCLEAN);
		assert_null(s);
	}
	/* The well-formed variant opens, so the rejections above are about the content. */
	write_file(f->dir, "volume.meta",
		   "{\"name\":\"vol\",\"uuid\":\"u\",\"size\":4096,\"block_size\":4096,\"epoch\":0,"
		   "\"members_gen\":0,\"members\":[],\"clean\":true,\"next_layer_id\":2,\"head\":1,"
		   "\"layers\":[{\"id\":1,\"parent\":0,\"snapshot\":null,\"created\":0,"
		   "\"deleting\":false}]}");
	assert_int_equal(store_open(f->l, f->dir, &s), 0);
	store_close(s);
	char p[256];
	snprintf(p, sizeof(p), "%s/volume.meta", f->dir);
	unlink(p);
	assert_int_equal(store_open(f->l, f->dir, &s), -ENOENT);
}

/* A lower layer's file shorter than its bitmap claims reads as zeros past its end. */
static void test_short_lower_layer(void **state)
{
	struct fx *f = *state;
	uint64_t size = 4 * MIB;
	uint8_t *model = calloc(1, size);
	struct store *s;
	assert_int_equal(store_create(f->l, f->dir, "vol", size, &s), 0);
	mwrite(s, f->l, model, 0, 2 * MIB, 91);
	assert_int_equal(store_snapshot_create(s, "a"), 0);
	mwrite(s, f->l, model, 10, 10, 92);
	store_close(s);
	char p[256];
	snprintf(p, sizeof(p), "%s/layer-1.data", f->dir);
	assert_int_equal(truncate(p, MIB + 100), 0);
	memset(model + MIB + 100, 0, MIB - 100);
	assert_int_equal(store_open(f->l, f->dir, &s), 0);
	check_range(s, f->l, model, 0, size);
	/* A sub-block write over the cut block reads the rest of it as zeros too. */
	mwrite(s, f->l, model, MIB + 50, 10, 93);
	check_range(s, f->l, model, 0, size);
	store_close(s);
	free(model);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_big_open(void **state)
{
	struct fx *f = *state;
	uint64_t size = 1024ull * 1024 * MIB; /* 1 TiB */
	struct store *s;
	uint8_t buf[BS], got[BS];
	assert_int_equal(store_create(f->l, f->dir, "big", size, &s), 0);
	for (int i = 0; i < 10; i++) {
		char name[16];
		fill(buf, BS, (uint32_t)i);
		uint64_t off = (uint64_t)i * 97 * 1024 * MIB + (uint64_t)i * BS;
		assert_int_equal(s_write(s, f->l, off, BS, buf), 0);
		snprintf(name, sizeof(name), "snap%d", i);
		assert_int_equal(store_snapshot_create(s, name), 0);
	}
	fill(buf, BS, 99);
	assert_int_equal(s_write(s, f->l, size - BS, BS, buf), 0);
	store_close(s);
	double t0 = now_s();
	assert_int_equal(store_open(f->l, f->dir, &s), 0);
	double t1 = now_s();
	print_message("open of 1 TiB volume with 10 snapshots: %.3f ms\n", (t1 - t0) * 1e3);
	for (int i = 0; i < 10; i++) {
		fill(buf, BS, (uint32_t)i);
		uint64_t off = (uint64_t)i * 97 * 1024 * MIB + (uint64_t)i * BS;
		assert_int_equal(s_read(s, f->l, off, BS, got), 0);
		assert_memory_equal(got, buf, BS);
	}
	fill(buf, BS, 99);
	assert_int_equal(s_read(s, f->l, size - BS, BS, got), 0);
	assert_memory_equal(got, buf, BS);
	struct store_info info;
	assert_int_equal(store_get_info(s, &info), 0);
	assert_int_equal(info.allocated, 11 * BS);
	assert_int_equal(info.nsnapshots, 10);
	store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_rw_random, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent_subblock, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent_random, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_trim_zero, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flush_reopen, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flush_crash_copy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_revert, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_delete_merge, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_views, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_delete_branches, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_clone, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resize, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_epoch_members, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dirty, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hash, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_meta, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_short_lower_layer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_big_open, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
