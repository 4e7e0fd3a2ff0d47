/*
 * test_gateway_snap: the gateway's snapshot operations (gateway_snapshot_create / revert /
 * delete / list, nfsgw/gateway.h) on a whole gateway (gateway_start) against a real 3-node
 * cluster of blockd processes (`blockctl cluster up --no-gateway`, $BUILD or build-san), on
 * 127.0.0.82 with its own portmapper; files written and read back through a libnfs client.
 * White-box only to plant a conflicting volume snapshot (the undo path) through the
 * gateway's own filevol.
 *
 * The loop runs on its own thread; the test thread drives the gateway with loop_call_wait.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nfsc/libnfs.h>

#include "blockd/config.h"
#include "nfsgw/gateway.h"
#include "nfsgw/gateway_int.h"
#include "replica/loop.h"
#include "tests/unit/cluster_env.h"

#define HOST "127.0.0.82"
#define FSIZE (300u * 1024)

struct env {
	struct cluster c;
	struct loop_thread lt;
	struct gateway *g;
	struct nfs_context *nfs;
};

static struct env *E;

/* ---- calls on the loop thread ---- */

struct call {
	enum { C_CREATE, C_CREATE2, C_REVERT, C_DELETE, C_VSNAP, C_VSNAP_RM, C_VSNAP_READ } op;
	const char *path, *name, *vol, *snap;
	char err[256];
	struct loop_waiter *w;
	bool in_call, done;
	int res, res2;
	uint8_t buf[4096];
};

static void call_cb(void *arg, int res)
{
	struct call *c = arg;
	c->done = true;
	c->res = res;
	if (!c->in_call)
		loop_done(c->w, res);
}

static void call_fn(void *arg, struct loop_waiter *w)
{
	struct call *c = arg;
	struct gateway *g = E->g;
	c->w = w;
	c->in_call = true;
	int r = -EINVAL;
	switch (c->op) {
	case C_CREATE:
		r = gateway_snapshot_create(g, c->path, c->name, c->err, sizeof(c->err), call_cb,
					    c);
		break;
	case C_CREATE2:
		/* Two at once: the second is refused while the first runs. */
		r = gateway_snapshot_create(g, c->path, c->name, c->err, sizeof(c->err), call_cb,
					    c);
		if (r == 0) {
			char err2[256];
			c->res2 = gateway_snapshot_create(g, c->path, "other", err2, sizeof(err2),
							  call_cb, c);
		}
		break;
	case C_REVERT:
		r = gateway_snapshot_revert(g, c->name, c->err, sizeof(c->err), call_cb, c);
		break;
	case C_DELETE:
		r = gateway_snapshot_delete(g, c->name, c->err, sizeof(c->err), call_cb, c);
		break;
	case C_VSNAP:
		r = filevol_snapshot_create(g->fv, c->vol, c->snap, call_cb, c);
		break;
	case C_VSNAP_RM:
		r = filevol_snapshot_delete(g->fv, c->vol, c->snap, call_cb, c);
		break;
	case C_VSNAP_READ:
		r = filevol_snap_read(g->fv, c->vol, c->snap, 0, sizeof(c->buf), c->buf, call_cb,
				      c);
		break;
	}
	c->in_call = false;
	if (c->done)
		loop_done(w, c->res);
	else if (r)
		loop_done(w, r);
}

static int run(struct call *c)
{
	c->err[0] = 0;
	c->done = false;
	return loop_call_wait(E->lt.l, call_fn, c);
}

static int snap_create(const char *path, const char *name, char *err)
{
	struct call c = {.op = C_CREATE, .path = path, .name = name};
	int r = run(&c);
	if (err)
		strcpy(err, c.err);
	return r;
}

static int snap_op(int op, const char *name)
{
	struct call c = {.op = op, .name = name};
	return run(&c);
}

struct list_call {
	const char *path;
	json_t *list;
};

static void list_fn(void *arg)
{
	struct list_call *q = arg;
	q->list = gateway_snapshot_list(E->g, q->path);
}

static json_t *snap_list(const char *path)
{
	struct list_call q = {.path = path};
	assert_int_equal(loop_call(E->lt.l, list_fn, &q), 0);
	assert_non_null(q.list);
	return q.list;
}

struct vol_call {
	const char *path;
	char vol[64];
	int res;
};

/* The volume name of a file, from the gateway's meta. */
static void vol_fn(void *arg)
{
	struct vol_call *v = arg;
	uint64_t id = META_ROOT;
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", v->path);
	v->res = 0;
	for (char *save = NULL, *c = strtok_r(buf, "/", &save); c && !v->res;
	     c = strtok_r(NULL, "/", &save))
		v->res = meta_lookup(E->g->meta, id, c, &id);
	if (!v->res)
		meta_volume_name(E->g->meta, id, v->vol, sizeof(v->vol));
}

static void volume_of(const char *path, char *out)
{
	struct vol_call v = {.path = path};
	assert_int_equal(loop_call(E->lt.l, vol_fn, &v), 0);
	assert_int_equal(v.res, 0);
	strcpy(out, v.vol);
}

/* ---- files through NFS ---- */

static void fill(uint8_t *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)((i * 131 + seed * 7919) >> 3);
}

static void put(const char *path, unsigned seed)
{
	static uint8_t b[FSIZE];
	fill(b, sizeof(b), seed);
	struct nfsfh *fh;
	if (nfs_open(E->nfs, path, O_WRONLY, &fh) != 0)
		assert_int_equal(nfs_creat(E->nfs, path, 0644, &fh), 0);
	assert_int_equal(nfs_pwrite(E->nfs, fh, 0, sizeof(b), b), (int)sizeof(b));
	assert_int_equal(nfs_close(E->nfs, fh), 0);
}

/* The file holds what put(path, seed) wrote. */
static void check(const char *path, unsigned seed)
{
	static uint8_t want[FSIZE], got[FSIZE];
	fill(want, sizeof(want), seed);
	struct nfsfh *fh;
	assert_int_equal(nfs_open(E->nfs, path, O_RDONLY, &fh), 0);
	assert_int_equal(nfs_pread(E->nfs, fh, 0, sizeof(got), got), (int)sizeof(got));
	assert_int_equal(nfs_close(E->nfs, fh), 0);
	assert_memory_equal(got, want, sizeof(got));
}

static bool exists(const char *path)
{
	struct nfs_stat_64 st;
	return nfs_stat64(E->nfs, path, &st) == 0;
}

/* ---- setup ---- */

static unsigned base_of(unsigned k, void *arg)
{
	(void)arg;
	return cluster_base(28000, 9, 100, k);
}

static int group_setup(void **state)
{
	(void)state;
	struct env *e = calloc(1, sizeof(*e));
	if (!e)
		return -1;
	if (cluster_up(&e->c, "test_gateway_snap", base_of, NULL) != 0) {
		free(e);
		return -1;
	}
	E = e;
	int r = cluster_write_file(e->c.exports, "/vm 127.0.0.0/8(rw,no_root_squash)\n");
	if (r == 0)
		r = loop_thread_start(&e->lt);
	if (r != 0) {
		fprintf(stderr, "setup failed (%d)\n", r);
		return -1; /* group_teardown cleans up */
	}
	cluster_add_gateway(&e->c, "gws", HOST, "gwsnap-meta");
	const struct gateway_params p = {.l = e->lt.l, .cluster = &e->c.cfg, .name = "gws"};
	r = gw_start_wait(e->lt.l, &p, &e->g);
	if (r == 0) {
		e->nfs = nfs_init_context();
		if (e->nfs)
			nfs_set_timeout(e->nfs, 60000);
		r = e->nfs ? nfs_mount(e->nfs, HOST, "/vm") : -1;
	}
	if (r != 0) {
		fprintf(stderr, "gateway start / mount failed (%d)\n", r);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	struct env *e = E;
	if (!e)
		return 0;
	if (e->nfs)
		nfs_destroy_context(e->nfs);
	if (e->g && gw_stop_wait(e->lt.l, &e->g) != 0)
		fprintf(stderr, "gateway stop failed\n");
	loop_thread_stop(&e->lt);
	cluster_down(&e->c);
	free(e);
	E = NULL;
	return 0;
}

/* ---- tests ---- */

static void test_create_revert_delete(void **state)
{
	(void)state;
	assert_int_equal(nfs_mkdir(E->nfs, "/d"), 0);
	assert_int_equal(nfs_mkdir(E->nfs, "/d/sub"), 0);
	put("/d/f1", 1);
	put("/d/sub/f2", 2);
	char err[256];
	assert_int_equal(snap_create("/vm/d", "s1", err), 0);
	json_t *l = snap_list(NULL);
	assert_int_equal(json_array_size(l), 1);
	json_t *s = json_array_get(l, 0);
	assert_string_equal(json_string_value(json_object_get(s, "name")), "s1");
	assert_string_equal(json_string_value(json_object_get(s, "path")), "/vm/d");
	assert_int_equal(json_integer_value(json_object_get(s, "files")), 2);
	json_decref(l);
	l = snap_list("/vm/d/sub");
	assert_int_equal(json_array_size(l), 0);
	json_decref(l);
	l = snap_list("/vm");
	assert_int_equal(json_array_size(l), 1);
	json_decref(l);

	put("/d/f1", 11);
	assert_int_equal(nfs_unlink(E->nfs, "/d/sub/f2"), 0);
	put("/d/new", 3);
	check("/d/f1", 11);
	assert_int_equal(snap_op(C_REVERT, "s1"), 0);
	check("/d/f1", 1);
	check("/d/sub/f2", 2);
	assert_false(exists("/d/new"));

	assert_int_equal(snap_op(C_DELETE, "s1"), 0);
	l = snap_list(NULL);
	assert_int_equal(json_array_size(l), 0);
	json_decref(l);
	assert_int_equal(snap_op(C_DELETE, "s1"), -ENOENT);
	assert_int_equal(snap_op(C_REVERT, "s1"), -ENOENT);
	/* Every volume snapshot went with it. */
	char vol[64];
	volume_of("/vm/d/f1", vol);
	struct call *c = calloc(1, sizeof(*c));
	*c = (struct call){.op = C_VSNAP_READ, .vol = vol, .snap = "nfsgw-s1"};
	assert_int_equal(run(c), -ENOENT);
	free(c);
	check("/d/f1", 1);
}

static void test_refusals(void **state)
{
	(void)state;
	char err[256];
	assert_int_equal(nfs_mkdir(E->nfs, "/r"), 0);
	assert_int_equal(snap_create("/vm/r/missing", "x", err), -ENOENT);
	assert_int_equal(snap_create("/elsewhere", "x", err), -ENOENT);
	assert_non_null(strstr(err, "not under any export"));
	assert_int_equal(snap_create("/vm/.snapshots/x", "x", err), -EINVAL);
	assert_int_equal(snap_create("/vm/r", ".x", err), -EINVAL);
	assert_int_equal(snap_create("/vm/r", "a/b", err), -EINVAL);
	assert_int_equal(snap_create("relative", "x", err), -EINVAL);
	assert_int_equal(snap_create("/vm/r", "r1", err), 0);
	assert_int_equal(snap_create("/vm/r", "r1", err), -EEXIST);
	/* One operation at a time. */
	struct call c = {.op = C_CREATE2, .path = "/vm/r", .name = "r2"};
	assert_int_equal(run(&c), 0);
	assert_int_equal(c.res2, -EBUSY);
	assert_int_equal(snap_op(C_DELETE, "r1"), 0);
	assert_int_equal(snap_op(C_DELETE, "r2"), 0);
}

/* A volume snapshot that cannot be made (its name is taken on one file's volume) fails the
 * create: the others made meanwhile are deleted, nothing is recorded, and the planted one is
 * left alone. */
static void test_undo(void **state)
{
	(void)state;
	assert_int_equal(nfs_mkdir(E->nfs, "/u"), 0);
	put("/u/a", 5);
	put("/u/b", 6);
	put("/u/c", 7);
	char va[64], vb[64], vc[64];
	volume_of("/vm/u/a", va);
	volume_of("/vm/u/b", vb);
	volume_of("/vm/u/c", vc);
	struct call c = {.op = C_VSNAP, .vol = vb, .snap = "nfsgw-dup"};
	assert_int_equal(run(&c), 0);
	char err[256];
	int r = snap_create("/vm/u", "dup", err);
	assert_int_equal(r, -EEXIST);
	assert_non_null(strstr(err, "volume snapshot"));
	json_t *l = snap_list(NULL);
	assert_int_equal(json_array_size(l), 0);
	json_decref(l);
	c = (struct call){.op = C_VSNAP_READ, .vol = va, .snap = "nfsgw-dup"};
	assert_int_equal(run(&c), -ENOENT);
	c = (struct call){.op = C_VSNAP_READ, .vol = vc, .snap = "nfsgw-dup"};
	assert_int_equal(run(&c), -ENOENT);
	c = (struct call){.op = C_VSNAP_READ, .vol = vb, .snap = "nfsgw-dup"};
	assert_int_equal(run(&c), 0);
	c = (struct call){.op = C_VSNAP_RM, .vol = vb, .snap = "nfsgw-dup"};
	assert_int_equal(run(&c), 0);
	/* Writes were held and released: the files still take writes. */
	put("/u/a", 8);
	check("/u/a", 8);
	assert_int_equal(snap_create("/vm/u", "dup", err), 0);
	assert_int_equal(snap_op(C_DELETE, "dup"), 0);
}

/* The export root itself: everything in the export, in one snapshot. Runs last: the revert
 * takes the export back to that moment. */
static void test_export_root(void **state)
{
	(void)state;
	put("/e1", 9);
	char err[256];
	assert_int_equal(snap_create("/vm", "whole", err), 0);
	json_t *l = snap_list("/vm");
	assert_int_equal(json_array_size(l), 1);
	json_decref(l);
	assert_int_equal(nfs_unlink(E->nfs, "/e1"), 0);
	put("/e2", 10);
	assert_int_equal(snap_op(C_REVERT, "whole"), 0);
	check("/e1", 9);
	assert_false(exists("/e2"));
	assert_true(exists("/d/f1"));
	assert_int_equal(snap_op(C_DELETE, "whole"), 0);
	check("/e1", 9);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_create_revert_delete),
	    cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_undo),
	    cmocka_unit_test(test_export_root),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
