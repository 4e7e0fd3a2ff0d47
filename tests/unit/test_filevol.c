/*
 * test_filevol: filevol against a real 3-node cluster of blockd processes started with the
 * built blockctl (`cluster up`, $BUILD or build-san), driven on a loop in this process:
 * missing volumes read as zeros, the first write creates (checked through the nodes' API),
 * growth past capacity, concurrent first writes, flush/zero/delete, the meta bdev, idle close
 * and reopen, used bytes, open_all, snapshots and snapshot reads, and fencing by a second
 * instance.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockd/config.h"
#include "blockd/http_client.h"
#include "nfsgw/filevol.h"
#include "replica/loop.h"
#include "tests/unit/cluster_env.h"
#include "tests/unit/loop_wait.h"

#define GiB (1ull << 30)
#define T_MS 20000

struct env {
	struct cluster c;
	struct loop *l;
};

struct done {
	bool fired;
	int res;
};

static void done_cb(void *arg, int res)
{
	struct done *d = arg;
	d->fired = true;
	d->res = res;
}

static bool fired(void *arg)
{
	return ((struct done *)arg)->fired;
}

static int wait_done(struct env *e, struct done *d)
{
	assert_true(run_until(e->l, fired, d, T_MS));
	int r = d->res;
	*d = (struct done){0};
	return r;
}

static unsigned base_of(unsigned k, void *arg)
{
	(void)arg;
	return cluster_base(24000, 10, 100, k);
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	if (!e)
		return -1;
	int r = cluster_up(&e->c, "test_filevol", base_of, NULL);
	if (r == 0) {
		r = loop_new(&e->l);
		if (r != 0)
			cluster_down(&e->c);
	}
	if (r != 0) {
		free(e);
		return -1;
	}
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;
	if (!e)
		return 0; /* setup failed and cleaned up */
	loop_free(e->l);
	cluster_down(&e->c);
	free(e);
	return 0;
}

static struct filevol *fv_new(struct env *e, const char *id, uint32_t idle_ms)
{
	struct filevol_params p = {
	    .l = e->l, .cluster = &e->c.cfg, .replicas = 3, .engine_id = id, .idle_ms = idle_ms};
	struct filevol *fv;
	assert_int_equal(filevol_new(&p, &fv), 0);
	return fv;
}

static void fv_close(struct env *e, struct filevol *fv)
{
	struct done d = {0};
	assert_int_equal(filevol_close(fv, done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), 0);
}

/* GET /v1/volumes/VOL on node1: HTTP status, and size and member count when 200. */
static int api_volume(struct env *e, const char *vol, uint64_t *size, size_t *nmembers)
{
	char path[128];
	snprintf(path, sizeof(path), "/v1/volumes/%s", vol);
	struct http_resp r;
	const struct config_node *n = &e->c.cfg.nodes[0];
	assert_int_equal(http_request(n->host, n->http_port, "GET", path, NULL, 5000, &r), 0);
	int st = r.status;
	if (st == 200) {
		json_t *j = json_loads(r.body, 0, NULL);
		assert_non_null(j);
		if (size)
			*size = (uint64_t)json_integer_value(json_object_get(j, "size"));
		if (nmembers)
			*nmembers = json_array_size(json_object_get(j, "members"));
		json_decref(j);
	}
	http_resp_free(&r);
	return st;
}

static int fv_write(struct env *e, struct filevol *fv, const char *vol, uint64_t off, uint32_t len,
		    int pat)
{
	char *buf = malloc(len);
	assert_non_null(buf);
	memset(buf, pat, len);
	struct done d = {0};
	int r = filevol_write(fv, vol, off, len, buf, 0, done_cb, &d);
	if (r == 0)
		r = wait_done(e, &d);
	free(buf);
	return r;
}

/* Reads [off, off+len) and checks every byte is pat; returns the read's result. */
static int fv_check(struct env *e, struct filevol *fv, const char *vol, uint64_t off, uint32_t len,
		    int pat)
{
	unsigned char *buf = malloc(len);
	assert_non_null(buf);
	memset(buf, ~pat, len);
	struct done d = {0};
	int r = filevol_read(fv, vol, off, len, buf, done_cb, &d);
	if (r == 0)
		r = wait_done(e, &d);
	if (r == 0)
		for (uint32_t i = 0; i < len; i++)
			if (buf[i] != (unsigned char)pat)
				fail_msg("%s: byte %u at %llu is %#x, not %#x", vol, i,
					 (unsigned long long)off, buf[i], pat);
	free(buf);
	return r;
}

static void test_create_read_write(void **state)
{
	struct env *e = *state;
	struct filevol *fv = fv_new(e, "gw-t1", 0);
	assert_int_equal(fv_check(e, fv, "fv-basic", 0, 65536, 0), 0);
	assert_int_equal(filevol_used(fv, "fv-basic"), 0);
	assert_int_equal(filevol_epoch(fv, "fv-basic"), 0);
	assert_int_equal(api_volume(e, "fv-basic", NULL, NULL), 404);

	assert_int_equal(fv_write(e, fv, "fv-basic", 1 << 20, 65536, 0x5a), 0);
	uint64_t size = 0;
	size_t nm = 0;
	assert_int_equal(api_volume(e, "fv-basic", &size, &nm), 200);
	assert_int_equal(nm, 3);
	assert_int_equal(size, GiB);
	assert_true(filevol_epoch(fv, "fv-basic") > 0);
	assert_int_equal(fv_check(e, fv, "fv-basic", 1 << 20, 65536, 0x5a), 0);
	assert_int_equal(fv_check(e, fv, "fv-basic", 0, 65536, 0), 0);

	/* used: refreshed in the background, so poll it */
	uint64_t deadline = loop_now_ms() + 15000;
	while (filevol_used(fv, "fv-basic") < 65536 && loop_now_ms() < deadline)
		run_until(e->l, always, NULL, 200);
	assert_true(filevol_used(fv, "fv-basic") >= 65536);
	fv_close(e, fv);
}

static void test_grow(void **state)
{
	struct env *e = *state;
	struct filevol *fv = fv_new(e, "gw-t2", 0);
	assert_int_equal(fv_write(e, fv, "fv-grow", 0, 4096, 0x11), 0);
	uint64_t size = 0;
	assert_int_equal(api_volume(e, "fv-grow", &size, NULL), 200);
	assert_int_equal(size, GiB);
	/* Straddles the capacity: grown first, never split. */
	assert_int_equal(fv_write(e, fv, "fv-grow", GiB - 4096, 8192, 0x22), 0);
	assert_int_equal(api_volume(e, "fv-grow", &size, NULL), 200);
	assert_int_equal(size, 2 * GiB);
	assert_int_equal(fv_check(e, fv, "fv-grow", GiB - 4096, 8192, 0x22), 0);
	/* Far past it: to the end rounded up, more than doubling. */
	assert_int_equal(fv_write(e, fv, "fv-grow", 5 * GiB + 100, 4096, 0x33), 0);
	assert_int_equal(api_volume(e, "fv-grow", &size, NULL), 200);
	assert_int_equal(size, 6 * GiB);
	assert_int_equal(fv_check(e, fv, "fv-grow", 5 * GiB + 100, 4096, 0x33), 0);
	assert_int_equal(fv_check(e, fv, "fv-grow", 0, 4096, 0x11), 0);
	/* Past the end of the volume reads zeros. */
	assert_int_equal(fv_check(e, fv, "fv-grow", 6 * GiB - 4096, 8192, 0), 0);
	assert_int_equal(fv_write(e, fv, "fv-grow", FILEVOL_MAX_SIZE, 4096, 1), -EFBIG);
	/* empty writes create nothing */
	assert_int_equal(fv_write(e, fv, "fv-empty", 4096, 0, 1), 0);
	assert_int_equal(api_volume(e, "fv-empty", NULL, NULL), 404);
	fv_close(e, fv);
}

static void test_concurrent_create(void **state)
{
	struct env *e = *state;
	struct filevol *fv = fv_new(e, "gw-t3", 0);
	enum { N = 8 };
	static char bufs[N][8192];
	struct done d[N] = {{0}};
	for (int i = 0; i < N; i++) {
		memset(bufs[i], 'a' + i, sizeof(bufs[i]));
		assert_int_equal(filevol_write(fv, "fv-conc", (uint64_t)i * 8192, 8192, bufs[i],
					       i == 0 ? BDEV_FUA : 0, done_cb, &d[i]),
				 0);
	}
	for (int i = 0; i < N; i++)
		assert_int_equal(wait_done(e, &d[i]), 0);
	size_t nm = 0;
	assert_int_equal(api_volume(e, "fv-conc", NULL, &nm), 200);
	assert_int_equal(nm, 3);
	/* A second creation would have lost the earlier writes. */
	for (int i = 0; i < N; i++)
		assert_int_equal(fv_check(e, fv, "fv-conc", (uint64_t)i * 8192, 8192, 'a' + i), 0);
	fv_close(e, fv);
}

static void test_flush_zero_delete(void **state)
{
	struct env *e = *state;
	struct filevol *fv = fv_new(e, "gw-t4", 0);
	struct done d = {0};
	assert_int_equal(filevol_flush(fv, "fv-del", done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), 0); /* missing: no-op */
	assert_int_equal(fv_write(e, fv, "fv-del", 0, 1 << 20, 0x44), 0);
	assert_int_equal(filevol_flush(fv, "fv-del", done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), 0);
	assert_int_equal(filevol_zero(fv, "fv-del", 65536, 65536, done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), 0);
	assert_int_equal(fv_check(e, fv, "fv-del", 65536, 65536, 0), 0);
	assert_int_equal(fv_check(e, fv, "fv-del", 0, 65536, 0x44), 0);
	assert_int_equal(fv_check(e, fv, "fv-del", 131072, 65536, 0x44), 0);
	/* unaligned: the partial blocks at both ends keep their other bytes */
	assert_int_equal(filevol_zero(fv, "fv-del", 300000, 5000, done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), 0);
	assert_int_equal(fv_check(e, fv, "fv-del", 290000, 10000, 0x44), 0);
	assert_int_equal(fv_check(e, fv, "fv-del", 300000, 5000, 0), 0);
	assert_int_equal(fv_check(e, fv, "fv-del", 305000, 10000, 0x44), 0);
	/* zero past the capacity: nothing there */
	assert_int_equal(filevol_zero(fv, "fv-del", 0, 4 * GiB, done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), 0);
	assert_int_equal(fv_check(e, fv, "fv-del", 0, 1 << 20, 0), 0);

	assert_int_equal(filevol_delete(fv, "fv-del", done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), 0);
	assert_int_equal(filevol_epoch(fv, "fv-del"), 0);
	assert_int_equal(api_volume(e, "fv-del", NULL, NULL), 404);
	assert_int_equal(fv_check(e, fv, "fv-del", 0, 65536, 0), 0);
	assert_int_equal(filevol_used(fv, "fv-del"), 0);
	assert_int_equal(filevol_delete(fv, "fv-del", done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), -ENOENT);
	/* and it comes back empty on the next write */
	assert_int_equal(fv_write(e, fv, "fv-del", 4096, 4096, 0x45), 0);
	assert_int_equal(fv_check(e, fv, "fv-del", 0, 4096, 0), 0);
	assert_int_equal(fv_check(e, fv, "fv-del", 4096, 4096, 0x45), 0);
	assert_int_equal(api_volume(e, "fv-del", NULL, NULL), 200);
	fv_close(e, fv);
}

static void test_open_bdev(void **state)
{
	struct env *e = *state;
	struct filevol *fv = fv_new(e, "gw-t5", 100);
	struct bdev b = {0};
	struct done d = {0};
	assert_int_equal(filevol_open_bdev(fv, "fv-meta", 64u << 20, &b, done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), 0);
	assert_non_null(b.ops);
	assert_int_equal(b.ops->size(b.ctx), 64u << 20);
	uint64_t size = 0;
	assert_int_equal(api_volume(e, "fv-meta", &size, NULL), 200);
	assert_int_equal(size, 64u << 20);
	static char w[4096], r[4096];
	memset(w, 0x66, sizeof(w));
	assert_int_equal(b.ops->write(b.ctx, 8192, 4096, w, BDEV_FUA, done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), 0);
	/* kept open past the idle time */
	uint64_t ep = filevol_epoch(fv, "fv-meta");
	assert_true(ep > 0);
	run_until(e->l, always, NULL, 0);
	uint64_t until = loop_now_ms() + 500;
	while (loop_now_ms() < until)
		run_until(e->l, always, NULL, 50);
	assert_int_equal(filevol_epoch(fv, "fv-meta"), ep);
	assert_int_equal(b.ops->read(b.ctx, 8192, 4096, r, done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), 0);
	assert_memory_equal(w, r, sizeof(w));
	fv_close(e, fv);

	/* an existing one is opened as it is */
	fv = fv_new(e, "gw-t5b", 0);
	assert_int_equal(filevol_open_bdev(fv, "fv-meta", 128u << 20, &b, done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), 0);
	assert_int_equal(b.ops->size(b.ctx), 64u << 20);
	fv_close(e, fv);
}

static bool closed_pred(void *arg)
{
	void **a = arg;
	return filevol_epoch(a[0], a[1]) == 0;
}

static void test_idle_reopen(void **state)
{
	struct env *e = *state;
	struct filevol *fv = fv_new(e, "gw-t6", 200);
	assert_int_equal(fv_write(e, fv, "fv-idle", 0, 4096, 0x77), 0);
	uint64_t ep = filevol_epoch(fv, "fv-idle");
	assert_true(ep > 0);
	void *a[2] = {fv, "fv-idle"};
	assert_true(run_until(e->l, closed_pred, a, 5000));
	assert_int_equal(fv_check(e, fv, "fv-idle", 0, 4096, 0x77), 0);
	assert_true(filevol_epoch(fv, "fv-idle") > ep);
	fv_close(e, fv);
}

/* I/O racing the idle close (it lands while the engine is closing or just closed) waits for
 * the close and reopens; nothing is lost. */
static void test_idle_race(void **state)
{
	struct env *e = *state;
	struct filevol *fv = fv_new(e, "gw-t6b", 30);
	unsigned seed = 7, reopened = 0;
	uint64_t last_ep = 0;
	for (int i = 0; i < 40; i++) {
		const char *vol = i % 2 ? "fv-race-a" : "fv-race-b";
		uint64_t off = (uint64_t)(i / 2) * 4096;
		assert_int_equal(fv_write(e, fv, vol, off, 4096, i), 0);
		if (i % 2) {
			uint64_t ep = filevol_epoch(fv, vol);
			reopened += last_ep && ep != last_ep;
			last_ep = ep;
		}
		uint64_t until = loop_now_ms() + rand_r(&seed) % 60;
		while (loop_now_ms() < until)
			run_until(e->l, always, NULL, 0);
	}
	for (int i = 0; i < 40; i++) {
		const char *vol = i % 2 ? "fv-race-a" : "fv-race-b";
		assert_int_equal(fv_check(e, fv, vol, (uint64_t)(i / 2) * 4096, 4096, i), 0);
	}
	assert_true(reopened > 0);
	fv_close(e, fv);
}

static void test_open_all(void **state)
{
	struct env *e = *state;
	struct filevol *fv = fv_new(e, "gw-t7", 0);
	assert_int_equal(fv_write(e, fv, "oa-one", 0, 4096, 1), 0);
	assert_int_equal(fv_write(e, fv, "oa-two", 0, 4096, 2), 0);
	assert_int_equal(fv_write(e, fv, "ob-three", 0, 4096, 3), 0);
	uint64_t ep1 = filevol_epoch(fv, "oa-one");
	fv_close(e, fv);

	fv = fv_new(e, "gw-t7b", 0);
	struct done d = {0};
	assert_int_equal(filevol_open_all(fv, "oa-", done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), 0);
	assert_true(filevol_epoch(fv, "oa-one") > ep1);
	assert_true(filevol_epoch(fv, "oa-two") > 0);
	assert_int_equal(filevol_epoch(fv, "ob-three"), 0);
	assert_int_equal(fv_check(e, fv, "oa-two", 0, 4096, 2), 0);
	fv_close(e, fv);
}

static void test_snapshots(void **state)
{
	struct env *e = *state;
	struct filevol *fv = fv_new(e, "gw-t8", 0);
	struct done d = {0};
	assert_int_equal(filevol_snapshot_delete(fv, "fv-snap", "s1", done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), -ENOENT);
	assert_int_equal(fv_write(e, fv, "fv-snap", 0, 4096, 0xa1), 0);
	assert_int_equal(filevol_snapshot_create(fv, "fv-snap", "s1", done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), 0);
	assert_int_equal(fv_write(e, fv, "fv-snap", 0, 4096, 0xb2), 0);
	assert_int_equal(fv_check(e, fv, "fv-snap", 0, 4096, 0xb2), 0);
	assert_int_equal(filevol_snapshot_revert(fv, "fv-snap", "s1", done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), 0);
	assert_int_equal(fv_check(e, fv, "fv-snap", 0, 4096, 0xa1), 0);
	assert_int_equal(filevol_snapshot_delete(fv, "fv-snap", "s1", done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), 0);
	/* a missing volume is created empty for its snapshot */
	assert_int_equal(filevol_snapshot_create(fv, "fv-snap2", "s0", done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), 0);
	assert_int_equal(api_volume(e, "fv-snap2", NULL, NULL), 200);
	fv_close(e, fv);
}

/* Reads [off, off+len) of snapshot snap and checks every byte is pat. */
static int fv_snap_check(struct env *e, struct filevol *fv, const char *vol, const char *snap,
			 uint64_t off, uint32_t len, int pat)
{
	unsigned char *buf = malloc(len);
	assert_non_null(buf);
	memset(buf, ~pat, len);
	struct done d = {0};
	int r = filevol_snap_read(fv, vol, snap, off, len, buf, done_cb, &d);
	if (r == 0) {
		assert_false(d.fired);
		r = wait_done(e, &d);
	}
	if (r == 0)
		for (uint32_t i = 0; i < len; i++)
			if (buf[i] != (unsigned char)pat)
				fail_msg("%s@%s: byte %u at %llu is %#x, not %#x", vol, snap, i,
					 (unsigned long long)off, buf[i], pat);
	free(buf);
	return r;
}

static void test_snap_read(void **state)
{
	struct env *e = *state;
	struct filevol *fv = fv_new(e, "gw-t12", 300);
	struct done d = {0};
	/* a missing volume reads zeros, whatever the snapshot */
	assert_int_equal(fv_snap_check(e, fv, "fv-sread", "s1", 0, 65536, 0), 0);
	unsigned char b;
	assert_int_equal(filevol_snap_read(fv, "fv-sread", "bad/name", 0, 1, &b, done_cb, &d),
			 -EINVAL);
	assert_int_equal(fv_write(e, fv, "fv-sread", 0, 1 << 20, 0xa1), 0);
	assert_int_equal(fv_write(e, fv, "fv-sread", GiB - 4096, 4096, 0xa2), 0);
	assert_int_equal(filevol_snapshot_create(fv, "fv-sread", "s1", done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), 0);
	/* overwrite, and grow past the size the snapshot had */
	assert_int_equal(fv_write(e, fv, "fv-sread", 0, 1 << 20, 0xb1), 0);
	assert_int_equal(fv_write(e, fv, "fv-sread", 2 * GiB, 4096, 0xb2), 0);
	assert_int_equal(fv_check(e, fv, "fv-sread", 0, 65536, 0xb1), 0);
	assert_int_equal(fv_snap_check(e, fv, "fv-sread", "s1", 0, 1 << 20, 0xa1), 0);
	assert_int_equal(fv_snap_check(e, fv, "fv-sread", "s1", GiB - 4096, 4096, 0xa2), 0);
	assert_int_equal(fv_snap_check(e, fv, "fv-sread", "s1", 2 * GiB, 4096, 0), 0);
	assert_int_equal(fv_snap_check(e, fv, "fv-sread", "s1", 7 * GiB, 4096, 0), 0);
	assert_int_equal(fv_snap_check(e, fv, "fv-sread", "nope", 0, 4096, 0), -ENOENT);
	/* after an idle close the engine reopens for it */
	void *a[2] = {fv, "fv-sread"};
	assert_true(run_until(e->l, closed_pred, a, 5000));
	assert_int_equal(fv_snap_check(e, fv, "fv-sread", "s1", 4096, 4096, 0xa1), 0);
	fv_close(e, fv);
}

static void test_fenced(void **state)
{
	struct env *e = *state;
	struct filevol *a = fv_new(e, "gw-a", 0);
	struct filevol *b = fv_new(e, "gw-b", 0);
	assert_int_equal(fv_write(e, a, "fv-fence", 0, 4096, 0x10), 0);
	uint64_t ep = filevol_epoch(a, "fv-fence");
	assert_int_equal(fv_check(e, b, "fv-fence", 0, 4096, 0x10), 0);
	assert_true(filevol_epoch(b, "fv-fence") > ep);
	assert_int_equal(fv_write(e, a, "fv-fence", 0, 4096, 0x20), -ESTALE);
	/* and stays so: no reopen that would fence the new owner back */
	assert_int_equal(fv_write(e, a, "fv-fence", 0, 4096, 0x20), -ESTALE);
	assert_int_equal(fv_write(e, b, "fv-fence", 4096, 4096, 0x30), 0);
	assert_int_equal(fv_check(e, b, "fv-fence", 0, 4096, 0x10), 0);

	/* a fenced bdev stays valid (failing) until close */
	struct bdev ba = {0}, bb = {0};
	struct done d = {0};
	static char buf[4096];
	assert_int_equal(filevol_open_bdev(a, "fv-fmeta", 16u << 20, &ba, done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), 0);
	assert_int_equal(filevol_delete(a, "fv-fmeta", done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), -EBUSY);
	assert_int_equal(ba.ops->write(ba.ctx, 0, 4096, buf, 0, done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), 0);
	assert_int_equal(filevol_open_bdev(b, "fv-fmeta", 16u << 20, &bb, done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), 0);
	assert_int_equal(ba.ops->write(ba.ctx, 0, 4096, buf, 0, done_cb, &d), 0);
	assert_int_equal(wait_done(e, &d), -ESTALE);
	assert_int_equal(fv_write(e, a, "fv-fmeta", 0, 4096, 1), -ESTALE);
	run_until(e->l, always, NULL, 0);
	assert_int_equal(ba.ops->read(ba.ctx, 0, 4096, buf, done_cb, &d), 0);
	wait_done(e, &d); /* whatever it answers, the engine is still there to answer */
	fv_close(e, a);
	fv_close(e, b);
}

static int api_post_replica(struct env *e, unsigned node, const char *vol, uint64_t size)
{
	char body[512];
	snprintf(body, sizeof(body),
		 "{\"volume\":\"%s\",\"size\":%llu,\"members\":[\"%s\",\"%s\",\"%s\"]}", vol,
		 (unsigned long long)size, e->c.cfg.nodes[0].name, e->c.cfg.nodes[1].name,
		 e->c.cfg.nodes[2].name);
	struct http_resp r;
	const struct config_node *n = &e->c.cfg.nodes[node];
	assert_int_equal(
	    http_request(n->host, n->http_port, "POST", "/v1/replicas", body, 5000, &r), 0);
	int st = r.status;
	http_resp_free(&r);
	return st;
}

/* Created behind our back after we saw it missing (another gateway, or a crash between
 * create and first use): the create finds it exists and just opens it. */
static void test_create_finds_existing(void **state)
{
	struct env *e = *state;
	struct filevol *fv = fv_new(e, "gw-t9", 0);
	assert_int_equal(fv_check(e, fv, "fv-race", 0, 4096, 0), 0); /* known missing now */
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(api_post_replica(e, i, "fv-race", 2 * GiB), 201);
	assert_int_equal(fv_write(e, fv, "fv-race", 4096, 4096, 0x99), 0);
	assert_int_equal(fv_check(e, fv, "fv-race", 4096, 4096, 0x99), 0);
	uint64_t size = 0;
	assert_int_equal(api_volume(e, "fv-race", &size, NULL), 200);
	assert_int_equal(size, 2 * GiB);
	fv_close(e, fv);
}

static void kill_node(struct env *e, unsigned i)
{
	char p[CONFIG_PATH_MAX + 16];
	snprintf(p, sizeof(p), "%s/blockd.pid", e->c.cfg.nodes[i].data);
	FILE *f = fopen(p, "r");
	assert_non_null(f);
	int pid = 0;
	assert_int_equal(fscanf(f, "%d", &pid), 1);
	fclose(f);
	assert_int_equal(kill(pid, SIGKILL), 0);
}

/* Last: leaves node3 down. Existing volumes keep serving on a majority; a new one cannot
 * get its 3 replicas. */
static void test_node_down(void **state)
{
	struct env *e = *state;
	struct filevol *fv = fv_new(e, "gw-t10", 0);
	assert_int_equal(fv_write(e, fv, "fv-down", 0, 65536, 0x3c), 0);
	kill_node(e, 2);
	assert_int_equal(fv_write(e, fv, "fv-down", 65536, 65536, 0x3d), 0);
	assert_int_equal(fv_check(e, fv, "fv-down", 0, 65536, 0x3c), 0);
	assert_int_equal(fv_check(e, fv, "fv-down", 65536, 65536, 0x3d), 0);
	assert_int_equal(fv_write(e, fv, "fv-new-down", 0, 4096, 1), -ENOSPC);
	assert_int_equal(fv_check(e, fv, "fv-new-down", 0, 4096, 0), 0);
	assert_int_equal(fv_check(e, fv, "fv-new-down2", 0, 4096, 0), 0);
	fv_close(e, fv);

	/* a fresh instance reopens it on the two nodes left */
	fv = fv_new(e, "gw-t10b", 0);
	assert_int_equal(fv_check(e, fv, "fv-down", 65536, 65536, 0x3d), 0);
	assert_int_equal(fv_write(e, fv, "fv-down", 0, 4096, 0x3e), 0);
	fv_close(e, fv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_create_read_write),
	    cmocka_unit_test(test_grow),
	    cmocka_unit_test(test_concurrent_create),
	    cmocka_unit_test(test_flush_zero_delete),
	    cmocka_unit_test(test_open_bdev),
	    cmocka_unit_test(test_idle_reopen),
	    cmocka_unit_test(test_idle_race),
	    cmocka_unit_test(test_open_all),
	    cmocka_unit_test(test_snapshots),
	    cmocka_unit_test(test_snap_read),
	    cmocka_unit_test(test_fenced),
	    cmocka_unit_test(test_create_finds_existing),
	    cmocka_unit_test(test_node_down),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
