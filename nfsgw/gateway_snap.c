/*
 * gateway_snap: snapshots through the export (gateway.h): create, revert and delete run as
 * one operation at a time (-EBUSY otherwise), each a chain of steps on the loop thread:
 *
 *   create: nfs3_hold -> resolve the path again (calls that were in progress may have changed
 *           it) -> filevol_snapshot_create of every regular file under it -> meta_snapshot_create
 *           -> nfs3_release. A failure deletes the volume snapshots already made.
 *   revert: nfs3_hold -> filevol_snapshot_revert of every file in the snapshot ->
 *           meta_snapshot_revert -> delete the volumes it freed -> nfs3_release. A volume revert
 *           cannot be undone: a failure half way leaves the metadata as it was and says so.
 *   delete: meta_snapshot_delete -> delete the freed volumes and the others' volume snapshots.
 *
 * Volume steps run GS_WINDOW at a time.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nfsgw/gateway_int.h"

#define GS_WINDOW 16
#define GS_DEPTH_MAX 256
#define GS_NAME_MAX 57 /* meta_snap_volsnap(NAME) stays a valid volume snapshot name */

enum gs_kind { GS_CREATE, GS_REVERT, GS_DELETE };

typedef int (*gs_vfn)(struct filevol *fv, const char *vol, const char *snap, filevol_cb cb,
		      void *arg);

struct gs_op;
struct gs_item {
	struct gs_op *op;
	size_t i;
};

struct gs_op {
	struct gateway *g;
	enum gs_kind kind;
	char name[META_NAME_MAX + 1];
	char volsnap[64];
	char path[EXPORT_PATH_MAX];
	uint64_t fileid;
	bool held;
	/* the files of the current volume step and their results */
	struct gs_item *items;
	uint64_t *ids;
	int *res;
	size_t n, cap, next, inflight;
	gs_vfn vfn;
	void (*after)(struct gs_op *op);
	/* delete: every file of the snapshot */
	uint64_t *all;
	size_t nall;
	/* files freed by the metadata step */
	uint64_t *freed;
	uint32_t nfreed, freed_cap;
	int err;
	char *errbuf;
	size_t errlen;
	gateway_cb cb;
	void *arg;
};

static void seterr(struct gs_op *op, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void seterr(struct gs_op *op, const char *fmt, ...)
{
	if (!op->errbuf || !op->errlen || op->errbuf[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(op->errbuf, op->errlen, fmt, ap);
	va_end(ap);
}

static int name_check(const char *name)
{
	size_t n = strnlen(name, GS_NAME_MAX + 1);
	if (n == 0 || n > GS_NAME_MAX || name[0] == '.' || name[0] == '-')
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return -EINVAL;
	}
	return 0;
}

static int serving(struct gateway *g)
{
	return g->state == GW_SERVING && g->meta && g->nfs && g->fv && g->ex ? 0 : -EAGAIN;
}

/* The live fileid of path (normalised, under an export, not inside .snapshots). */
static int resolve(struct gateway *g, const char *path, uint64_t *out, char *err, size_t errlen)
{
	const char *rest;
	if (!exports_find_prefix(g->ex, path, &rest)) {
		snprintf(err, errlen, "%s is not under any export", path);
		return -ENOENT;
	}
	uint64_t id = META_ROOT;
	const char *p = path;
	while (*p) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		size_t n = strcspn(p, "/");
		char comp[META_NAME_MAX + 1];
		if (n > META_NAME_MAX)
			return -ENAMETOOLONG;
		memcpy(comp, p, n);
		comp[n] = 0;
		if (!strcmp(comp, ".snapshots")) {
			snprintf(err, errlen, "%s is inside a read-only .snapshots tree", path);
			return -EINVAL;
		}
		int r = meta_lookup(g->meta, id, comp, &id);
		if (r < 0) {
			snprintf(err, errlen, "%s: %s", path, strerror(-r));
			return r == -ENOTDIR ? -ENOENT : r;
		}
		p += n;
	}
	*out = id;
	return 0;
}

static void op_free(struct gs_op *op)
{
	free(op->items);
	free(op->ids);
	free(op->res);
	free(op->freed);
	free(op->all);
	free(op);
}

static void finish(struct gs_op *op)
{
	struct gateway *g = op->g;
	/* A gateway stopping meanwhile may have freed its NFS program already. */
	if (op->held && g->nfs)
		nfs3_release(g->nfs);
	g->snap_busy = false;
	if (op->err < 0)
		seterr(op, "%s", strerror(-op->err));
	gw_log(g, "snapshot %s %s: %s",
	       op->kind == GS_CREATE   ? "create"
	       : op->kind == GS_REVERT ? "revert"
				       : "delete",
	       op->name, op->err < 0 ? op->errbuf && op->errbuf[0] ? op->errbuf : "failed" : "ok");
	gateway_cb cb = op->cb;
	void *arg = op->arg;
	int err = op->err;
	op_free(op);
	cb(arg, err);
}

/* ---- volume steps ---- */

static int ids_add(void *arg, uint64_t fileid)
{
	struct gs_op *op = arg;
	if (op->n == op->cap) {
		size_t cap = op->cap ? op->cap * 2 : 64;
		uint64_t *v = realloc(op->ids, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		op->ids = v;
		op->cap = cap;
	}
	op->ids[op->n++] = fileid;
	return 0;
}

static void pump(struct gs_op *op);

static void item_done(void *arg, int res)
{
	struct gs_item *it = arg;
	struct gs_op *op = it->op;
	op->res[it->i] = res;
	op->inflight--;
	pump(op);
}

static void pump(struct gs_op *op)
{
	while (op->inflight < GS_WINDOW && op->next < op->n) {
		size_t i = op->next++;
		if (serving(op->g) < 0) {
			/* Stopping: no new volume work; what is in flight completes. */
			op->res[i] = -ESHUTDOWN;
			continue;
		}
		char vol[64];
		meta_volume_name(op->g->meta, op->ids[i], vol, sizeof(vol));
		op->items[i] = (struct gs_item){op, i};
		int r = op->vfn(op->g->fv, vol, op->volsnap, item_done, &op->items[i]);
		if (r < 0)
			op->res[i] = r;
		else
			op->inflight++;
	}
	if (op->inflight == 0 && op->next == op->n)
		op->after(op);
}

/* Runs vfn on every id (op->ids[0..n)), then after(op). */
static void vstep(struct gs_op *op, gs_vfn vfn, void (*after)(struct gs_op *op))
{
	free(op->items);
	free(op->res);
	op->items = calloc(op->n ? op->n : 1, sizeof(*op->items));
	op->res = calloc(op->n ? op->n : 1, sizeof(*op->res));
	if (!op->items || !op->res) {
		op->err = -ENOMEM;
		finish(op);
		return;
	}
	op->next = op->inflight = 0;
	op->vfn = vfn;
	op->after = after;
	pump(op);
}

/* The first failure of the last volume step (-ENOENT allowed when ok_enoent). */
static int vstep_err(struct gs_op *op, bool ok_enoent, size_t *nfail)
{
	int first = 0;
	size_t k = 0;
	for (size_t i = 0; i < op->n; i++) {
		if (op->res[i] == 0 || (ok_enoent && op->res[i] == -ENOENT))
			continue;
		k++;
		if (!first)
			first = op->res[i];
	}
	if (nfail)
		*nfail = k;
	return first;
}

static int vol_delete(struct filevol *fv, const char *vol, const char *snap, filevol_cb cb,
		      void *arg)
{
	(void)snap;
	return filevol_delete(fv, vol, cb, arg);
}

/* ---- create ---- */

static void create_undone(struct gs_op *op)
{
	size_t nfail = 0;
	vstep_err(op, true, &nfail);
	if (nfail)
		gw_log(op->g, "snapshot create %s: %zu volume snapshots could not be removed",
		       op->name, nfail);
	finish(op);
}

/* Deletes the volume snapshots that were made (those with res 0). */
static void create_undo(struct gs_op *op)
{
	size_t k = 0;
	for (size_t i = 0; i < op->n; i++)
		if (op->res[i] == 0)
			op->ids[k++] = op->ids[i];
	op->n = k;
	vstep(op, filevol_snapshot_delete, create_undone);
}

static void create_meta_done(void *arg, int res)
{
	struct gs_op *op = arg;
	if (res < 0) {
		op->err = res;
		seterr(op, "recording the snapshot failed: %s", strerror(-res));
		create_undo(op);
		return;
	}
	finish(op);
}

static void create_vols_done(struct gs_op *op)
{
	int r = vstep_err(op, false, NULL);
	if (r < 0) {
		op->err = r == -ENOENT ? -EIO : r;
		seterr(op, "volume snapshot failed: %s", strerror(-r));
		create_undo(op);
		return;
	}
	uint32_t idx;
	r = serving(op->g);
	if (r == 0)
		r = meta_snapshot_create(op->g->meta, op->fileid, op->name, &idx, create_meta_done,
					 op);
	if (r < 0) {
		op->err = r;
		if (r == -EFBIG)
			seterr(op, "too many objects under %s for one snapshot", op->path);
		create_undo(op);
	}
}

static void create_held(void *arg, int res)
{
	struct gs_op *op = arg;
	struct gateway *g = op->g;
	op->held = res == 0;
	int r = res;
	if (r == 0)
		r = serving(g);
	if (r == 0)
		r = resolve(g, op->path, &op->fileid, op->errbuf, op->errlen);
	struct meta_snapinfo si;
	if (r == 0 && meta_snapshot_find(g->meta, op->name, &si) == 0) {
		seterr(op, "snapshot %s exists", op->name);
		r = -EEXIST;
	}
	if (r == 0)
		r = meta_each_regular(g->meta, op->fileid, ids_add, op);
	if (r < 0) {
		op->err = r;
		finish(op);
		return;
	}
	vstep(op, filevol_snapshot_create, create_vols_done);
}

static struct gs_op *op_new(struct gateway *g, enum gs_kind kind, const char *name, char *err,
			    size_t errlen, gateway_cb cb, void *arg)
{
	struct gs_op *op = calloc(1, sizeof(*op));
	if (!op)
		return NULL;
	op->g = g;
	op->kind = kind;
	snprintf(op->name, sizeof(op->name), "%s", name);
	meta_snap_volsnap(name, op->volsnap, sizeof(op->volsnap));
	op->errbuf = err;
	op->errlen = errlen;
	op->cb = cb;
	op->arg = arg;
	return op;
}

/* Checks common to every operation; sets err. */
static int begin(struct gateway *g, const char *name, char *err, size_t errlen)
{
	if (err && errlen)
		err[0] = 0;
	int r = serving(g);
	if (r < 0) {
		snprintf(err, errlen, "the gateway is not serving");
		return r;
	}
	if (!name || name_check(name) < 0) {
		snprintf(err, errlen,
			 "bad snapshot name (1-%d of [A-Za-z0-9._-], not starting with . or -)",
			 GS_NAME_MAX);
		return -EINVAL;
	}
	if (g->snap_busy) {
		snprintf(err, errlen, "another snapshot operation is in progress");
		return -EBUSY;
	}
	return 0;
}

int gateway_snapshot_create(struct gateway *g, const char *path, const char *name, char *err,
			    size_t errlen, gateway_cb cb, void *arg)
{
	int r = begin(g, name, err, errlen);
	if (r < 0)
		return r;
	char norm[EXPORT_PATH_MAX];
	if (!path || exports_normalize_path(path, norm) < 0) {
		snprintf(err, errlen, "path must be absolute and at most %d bytes",
			 EXPORT_PATH_MAX - 1);
		return -EINVAL;
	}
	uint64_t id;
	if ((r = resolve(g, norm, &id, err, errlen)) < 0)
		return r;
	if (id == META_ROOT) {
		snprintf(err, errlen, "the root of the file system cannot be snapshotted");
		return -EINVAL;
	}
	struct meta_snapinfo si;
	if (meta_snapshot_find(g->meta, name, &si) == 0) {
		snprintf(err, errlen, "snapshot %s exists", name);
		return -EEXIST;
	}
	struct gs_op *op = op_new(g, GS_CREATE, name, err, errlen, cb, arg);
	if (!op)
		return -ENOMEM;
	snprintf(op->path, sizeof(op->path), "%s", norm);
	/* Busy first: the hold may be granted (and the operation end) within the call. */
	g->snap_busy = true;
	r = nfs3_hold(g->nfs, create_held, op);
	if (r < 0) {
		g->snap_busy = false;
		op_free(op);
	}
	return r;
}

/* ---- revert ---- */

static void revert_freed_done(struct gs_op *op)
{
	size_t nfail = 0;
	vstep_err(op, true, &nfail);
	if (nfail)
		gw_log(op->g, "snapshot revert %s: %zu freed volumes could not be deleted",
		       op->name, nfail);
	finish(op);
}

static void revert_meta_done(void *arg, int res)
{
	struct gs_op *op = arg;
	if (res < 0) {
		op->err = res;
		seterr(op, "recording the revert failed: %s", strerror(-res));
		finish(op);
		return;
	}
	/* The files created since the snapshot: their volumes go. */
	free(op->ids);
	op->ids = op->freed;
	op->n = op->cap = op->nfreed;
	op->freed = NULL;
	vstep(op, vol_delete, revert_freed_done);
}

static void revert_vols_done(struct gs_op *op)
{
	size_t nfail = 0;
	int r = vstep_err(op, false, &nfail);
	if (r < 0) {
		op->err = r == -ENOENT ? -EIO : r;
		seterr(op,
		       "%zu of %zu file volumes could not be reverted (%s); the others were: "
		       "retry the revert",
		       nfail, op->n, strerror(-r));
		finish(op);
		return;
	}
	if ((r = serving(op->g)) < 0) {
		op->err = r;
		finish(op);
		return;
	}
	struct meta_info mi;
	meta_info(op->g->meta, &mi);
	uint32_t cap = 1024;
	for (;;) {
		free(op->freed);
		op->freed = malloc(cap * sizeof(*op->freed));
		if (!op->freed) {
			op->err = -ENOMEM;
			finish(op);
			return;
		}
		op->freed_cap = cap;
		r = meta_snapshot_revert(op->g->meta, op->name, op->freed, cap, &op->nfreed,
					 revert_meta_done, op);
		if (r != -ENOBUFS || cap >= mi.files)
			break;
		cap = mi.files < UINT32_MAX / 4 ? (uint32_t)mi.files + 1 : UINT32_MAX / 4;
	}
	if (r < 0) {
		op->err = r;
		if (r == -ENOENT)
			seterr(op, "the snapshotted object's directory is gone");
		else if (r == -EBUSY)
			seterr(op, "a directory of the snapshot was moved out of it; move it back");
		finish(op);
	}
}

static void revert_held(void *arg, int res)
{
	struct gs_op *op = arg;
	struct gateway *g = op->g;
	op->held = res == 0;
	int r = res;
	if (r == 0)
		r = serving(g);
	if (r == 0)
		r = meta_each_snapfile(g->meta, op->name, ids_add, op);
	if (r < 0) {
		op->err = r;
		finish(op);
		return;
	}
	vstep(op, filevol_snapshot_revert, revert_vols_done);
}

int gateway_snapshot_revert(struct gateway *g, const char *name, char *err, size_t errlen,
			    gateway_cb cb, void *arg)
{
	int r = begin(g, name, err, errlen);
	if (r < 0)
		return r;
	struct meta_snapinfo si;
	if (meta_snapshot_find(g->meta, name, &si) < 0) {
		snprintf(err, errlen, "no snapshot %s", name);
		return -ENOENT;
	}
	struct gs_op *op = op_new(g, GS_REVERT, name, err, errlen, cb, arg);
	if (!op)
		return -ENOMEM;
	g->snap_busy = true;
	r = nfs3_hold(g->nfs, revert_held, op);
	if (r < 0) {
		g->snap_busy = false;
		op_free(op);
	}
	return r;
}

/* ---- delete ---- */

static void delete_snaps_done(struct gs_op *op)
{
	size_t nfail = 0;
	int r = vstep_err(op, true, &nfail);
	if (r < 0) {
		op->err = -EIO;
		seterr(op, "snapshot deleted, but %zu volume snapshots could not be removed (%s)",
		       nfail, strerror(-r));
	}
	finish(op);
}

static bool was_freed(const struct gs_op *op, uint64_t id)
{
	for (uint32_t i = 0; i < op->nfreed; i++)
		if (op->freed[i] == id)
			return true;
	return false;
}

static void delete_vols_done(struct gs_op *op)
{
	size_t nfail = 0;
	vstep_err(op, true, &nfail);
	if (nfail)
		gw_log(op->g, "snapshot delete %s: %zu freed volumes could not be deleted",
		       op->name, nfail);
	/* The files still in use keep their volumes; only this snapshot of them goes. */
	free(op->ids);
	op->ids = op->all;
	op->n = op->cap = 0;
	for (size_t i = 0; i < op->nall; i++)
		if (!was_freed(op, op->all[i]))
			op->ids[op->n++] = op->all[i];
	op->cap = op->nall;
	op->all = NULL;
	op->nall = 0;
	vstep(op, filevol_snapshot_delete, delete_snaps_done);
}

static void delete_meta_done(void *arg, int res)
{
	struct gs_op *op = arg;
	if (res < 0) {
		op->err = res;
		seterr(op, "recording the delete failed: %s", strerror(-res));
		finish(op);
		return;
	}
	op->all = op->ids;
	op->nall = op->n;
	op->ids = malloc((op->nfreed + 1) * sizeof(*op->ids));
	if (!op->ids) {
		op->err = -ENOMEM;
		finish(op);
		return;
	}
	memcpy(op->ids, op->freed, op->nfreed * sizeof(*op->ids));
	op->n = op->cap = op->nfreed;
	vstep(op, vol_delete, delete_vols_done);
}

int gateway_snapshot_delete(struct gateway *g, const char *name, char *err, size_t errlen,
			    gateway_cb cb, void *arg)
{
	int r = begin(g, name, err, errlen);
	if (r < 0)
		return r;
	struct meta_snapinfo si;
	if (meta_snapshot_find(g->meta, name, &si) < 0) {
		snprintf(err, errlen, "no snapshot %s", name);
		return -ENOENT;
	}
	struct gs_op *op = op_new(g, GS_DELETE, name, err, errlen, cb, arg);
	if (!op)
		return -ENOMEM;
	r = meta_each_snapfile(g->meta, name, ids_add, op);
	uint32_t cap = (uint32_t)op->n + 1;
	if (r == 0 && !(op->freed = malloc(cap * sizeof(*op->freed))))
		r = -ENOMEM;
	if (r == 0)
		r = meta_snapshot_delete(g->meta, name, op->freed, cap, &op->nfreed,
					 delete_meta_done, op);
	if (r < 0) {
		op_free(op);
		return r;
	}
	g->snap_busy = true;
	return 0;
}

/* ---- list ---- */

struct find_name {
	uint64_t want;
	char name[META_NAME_MAX + 1];
	bool found;
};

static int find_fn(void *arg, const char *name, uint64_t fileid, uint64_t cookie)
{
	(void)cookie;
	struct find_name *f = arg;
	if (fileid != f->want)
		return 0;
	snprintf(f->name, sizeof(f->name), "%s", name);
	f->found = true;
	return 1;
}

/* The path of live directory dir ("" for the root); -ENOENT when it is gone. */
static int dir_path(struct meta *m, uint64_t dir, char *buf, size_t len)
{
	char tmp[EXPORT_PATH_MAX + META_NAME_MAX + 2];
	size_t pos = sizeof(tmp) - 1;
	tmp[pos] = 0;
	for (int depth = 0; dir != META_ROOT; depth++) {
		struct meta_attr a;
		if (depth > GS_DEPTH_MAX || meta_getattr(m, dir, &a) < 0 || a.type != META_DIR)
			return -ENOENT;
		struct find_name f = {.want = dir};
		if (meta_readdir(m, a.parent, 0, find_fn, &f) < 0 || !f.found)
			return -ENOENT;
		size_t n = strlen(f.name);
		if (n + 1 > pos)
			return -ENAMETOOLONG;
		pos -= n;
		memcpy(tmp + pos, f.name, n);
		tmp[--pos] = '/';
		dir = a.parent;
	}
	if (strlen(tmp + pos) + 1 > len)
		return -ENAMETOOLONG;
	memcpy(buf, tmp + pos, strlen(tmp + pos) + 1);
	return 0;
}

struct list_ctx {
	struct gateway *g;
	const char *under;
	json_t *arr;
};

static int list_fn(void *arg, const struct meta_snapinfo *si)
{
	struct list_ctx *c = arg;
	char dir[EXPORT_PATH_MAX + META_NAME_MAX + 2];
	char path[sizeof(dir) + META_NAME_MAX + 2];
	json_t *jp = json_null();
	if (dir_path(c->g->meta, si->root_parent, dir, sizeof(dir)) == 0) {
		snprintf(path, sizeof(path), "%s/%s", dir, si->root_name);
		jp = json_string(path);
	}
	if (c->under) {
		const char *p = json_string_value(jp);
		size_t n = strlen(c->under);
		bool in = p && (!strcmp(c->under, "/") ||
				(!strncmp(p, c->under, n) && (p[n] == 0 || p[n] == '/')));
		if (!in) {
			json_decref(jp);
			return 0;
		}
	}
	char when[32];
	struct tm tm;
	time_t t = (time_t)si->created.sec;
	gmtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	json_array_append_new(c->arr, json_pack("{s:s,s:o,s:s,s:I,s:i}", "name", si->name, "path",
						jp, "created", when, "files", (json_int_t)si->files,
						"index", (int)si->index));
	return 0;
}

json_t *gateway_snapshot_list(struct gateway *g, const char *path)
{
	if (serving(g) < 0)
		return NULL;
	char norm[EXPORT_PATH_MAX];
	if (path && exports_normalize_path(path, norm) < 0)
		return NULL;
	struct list_ctx c = {g, path ? norm : NULL, json_array()};
	if (!c.arr)
		return NULL;
	meta_snapshot_each(g->meta, list_fn, &c);
	return c.arr;
}
