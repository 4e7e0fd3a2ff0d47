/*
 * nfs3_snap: the read-only snapshot tree of every export (meta.h, "Snapshots through the
 * export") as the NFS procedures see it.
 *
 * - EXPORT/.snapshots: virtual directory, fileid META_SNAP_FILEID(META_SNAP_DIRS_INDEX,
 *   export root fileid), mode 0555 root:root, the export root's generation (its handle lives
 *   as long as the export root), mtime the newest snapshot's creation. It is listed last by
 *   READDIR of the export root (cookie NFS3_SNAPDIR_COOKIE, above every meta cookie) and not
 *   hidden: `ls -a` shows it, like NetApp's visible .snapshot. Its entries are the snapshots
 *   whose snapshotted object is the export root or lies under it (walking root_parent up
 *   reaches the export root), named by snapshot, in index order (cookie index + 3).
 * - .snapshots/NAME: meta's virtual directory META_SNAP_FILEID(idx, 0) holding the
 *   snapshotted object under its root_name; its ".." is .snapshots, its generation derives
 *   from the snapshot's creation time (a deleted snapshot's handles go stale even when a new
 *   one takes its index). Below it meta answers from the frozen copy.
 * - Every object with META_SNAP_BIT is read-only: a changing procedure on such a handle
 *   answers NFS3ERR_ROFS (nfs3_resolve), ACCESS grants no modify bits, and `.snapshots` in an
 *   export root can be neither created, nor removed, nor renamed or linked over.
 * - READ of a frozen regular file reads its live fileid's volume as of the volume snapshot
 *   meta_snap_volsnap(NAME) (filevol_snap_read); the frozen size bounds it (eof).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "nfsgw/nfs3_priv.h"

/* Enough walking for any real tree; a cycle (a corrupt meta) must not hang the loop. */
#define SNAP_WALK_MAX 4096

bool nfs3_is_snap(uint64_t fileid)
{
	return (fileid & META_SNAP_BIT) != 0;
}

uint64_t nfs3_snapdir_id(uint64_t root)
{
	return META_SNAP_FILEID(META_SNAP_DIRS_INDEX, root);
}

bool nfs3_snap_under(struct meta *m, const struct meta_snapinfo *si, uint64_t root)
{
	if (si->root == root || root == META_ROOT)
		return true;
	uint64_t id = si->root_parent;
	for (int i = 0; i < SNAP_WALK_MAX; i++) {
		if (id == root)
			return true;
		struct meta_attr a;
		if (meta_getattr(m, id, &a) || a.type != META_DIR || a.parent == id || !a.parent)
			return false;
		id = a.parent;
	}
	return false;
}

static uint64_t snap_gen(const struct meta_snapinfo *si)
{
	uint64_t g = (uint64_t)si->created.sec * 1000000000ull + si->created.nsec;
	g ^= (uint64_t)si->index << 48;
	g *= 0x9E3779B97F4A7C15ull;
	return g ? g : 1;
}

struct dirs_scan {
	struct meta *m;
	uint64_t root;
	uint32_t n;
	struct meta_time newest;
};

static int dirs_scan_fn(void *arg, const struct meta_snapinfo *si)
{
	struct dirs_scan *s = arg;
	if (!nfs3_snap_under(s->m, si, s->root))
		return 0;
	s->n++;
	if (si->created.sec > s->newest.sec ||
	    (si->created.sec == s->newest.sec && si->created.nsec > s->newest.nsec))
		s->newest = si->created;
	return 0;
}

static int snapdir_attr(struct meta *m, uint64_t root, struct meta_attr *out)
{
	struct meta_attr ra;
	if (meta_getattr(m, root, &ra))
		return -ENOENT;
	struct dirs_scan s = {.m = m, .root = root, .newest = ra.ctime};
	meta_snapshot_each(m, dirs_scan_fn, &s);
	*out = (struct meta_attr){0};
	out->fileid = nfs3_snapdir_id(root);
	out->gen = ra.gen;
	out->type = META_DIR;
	out->mode = 0555;
	out->nlink = 2 + s.n;
	out->size = 4096 + (uint64_t)s.n * 64;
	out->atime = out->mtime = out->ctime = s.newest;
	out->parent = root;
	return 0;
}

/* Attributes of id as seen from the export rooted at root. */
static int getattr_in(struct meta *m, uint64_t root, uint64_t id, struct meta_attr *out)
{
	if (!nfs3_is_snap(id))
		return meta_getattr(m, id, out);
	if (!root)
		return -ENOENT;
	uint32_t idx = META_SNAP_INDEX(id);
	if (idx == META_SNAP_DIRS_INDEX) {
		if (META_SNAP_LIVE(id) != root)
			return -ENOENT;
		return snapdir_attr(m, root, out);
	}
	int rc = meta_getattr(m, id, out);
	if (rc || META_SNAP_LIVE(id) != 0)
		return rc;
	struct meta_snapinfo si;
	if (meta_snapshot_by_index(m, idx, &si) || !nfs3_snap_under(m, &si, root))
		return -ENOENT;
	out->gen = snap_gen(&si);
	out->parent = nfs3_snapdir_id(root);
	return 0;
}

int nfs3_getattr(struct nfs3_req *r, uint64_t id, struct meta_attr *out)
{
	return getattr_in(r->n->p.meta, nfs3_is_snap(id) ? nfs3_export_root(r) : 0, id, out);
}

bool nfs3_snap_reserved(struct nfs3_req *r, uint64_t dir, const char *name)
{
	return name && !strcmp(name, NFS3_SNAPDIR) && dir == nfs3_export_root(r);
}

/* A name in dir, as seen from the export rooted at root. */
static int lookup_in(struct meta *m, uint64_t root, uint64_t dir, const char *name, uint64_t *id)
{
	if (nfs3_is_snap(dir) && META_SNAP_INDEX(dir) == META_SNAP_DIRS_INDEX) {
		struct meta_snapinfo si;
		if (meta_snapshot_find(m, name, &si) ||
		    !nfs3_snap_under(m, &si, META_SNAP_LIVE(dir)))
			return -ENOENT;
		*id = META_SNAP_FILEID(si.index, 0);
		return 0;
	}
	if (dir == root && !strcmp(name, NFS3_SNAPDIR)) {
		*id = nfs3_snapdir_id(dir);
		return 0;
	}
	return meta_lookup(m, dir, name, id);
}

int nfs3_lookup_name(struct nfs3_req *r, uint64_t dir, const char *name, uint64_t *id)
{
	/* Only that name needs the export root (a path walk): skip it for every other. */
	uint64_t root = strcmp(name, NFS3_SNAPDIR) ? 0 : nfs3_export_root(r);
	return lookup_in(r->n->p.meta, root, dir, name, id);
}

/* Walks the components of path from id; root: the export's root (0: none yet). */
static int walk(struct meta *m, uint64_t root, const char *path, uint64_t *id)
{
	const char *p = path;
	while (*p) {
		while (*p == '/')
			p++;
		size_t len = strcspn(p, "/");
		if (!len)
			break;
		if (len > META_NAME_MAX)
			return -ENAMETOOLONG;
		char name[META_NAME_MAX + 1];
		memcpy(name, p, len);
		name[len] = 0;
		int rc = lookup_in(m, root, *id, name, id);
		if (rc)
			return rc;
		p += len;
	}
	return 0;
}

int nfs3_path_resolve(struct meta *m, const char *export_path, const char *path, uint64_t *fileid,
		      uint64_t *gen, enum meta_type *type)
{
	size_t el = strlen(export_path);
	while (el && export_path[el - 1] == '/')
		el--;
	if (strncmp(path, export_path, el) || (path[el] && path[el] != '/'))
		return -ENOENT;
	uint64_t root = META_ROOT;
	int rc = walk(m, 0, export_path, &root);
	uint64_t id = root;
	if (!rc)
		rc = walk(m, root, path + el, &id);
	struct meta_attr a;
	if (!rc)
		rc = getattr_in(m, root, id, &a);
	if (rc)
		return rc;
	*fileid = id;
	*gen = a.gen;
	*type = a.type;
	return 0;
}

/* ---- listings ---- */

struct snap_ent {
	uint32_t index;
	char name[META_NAME_MAX + 1];
};

struct snap_list {
	struct meta *m;
	uint64_t root;
	uint32_t n, cap;
	struct snap_ent *v;
	int err;
};

static int list_fn(void *arg, const struct meta_snapinfo *si)
{
	struct snap_list *l = arg;
	if (!nfs3_snap_under(l->m, si, l->root))
		return 0;
	if (l->n == l->cap) {
		uint32_t cap = l->cap ? l->cap * 2 : 16;
		struct snap_ent *v = realloc(l->v, cap * sizeof(*v));
		if (!v) {
			l->err = -ENOMEM;
			return 1;
		}
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n].index = si->index;
	strcpy(l->v[l->n].name, si->name);
	l->n++;
	return 0;
}

static int ent_cmp(const void *a, const void *b)
{
	uint32_t x = ((const struct snap_ent *)a)->index, y = ((const struct snap_ent *)b)->index;
	return x < y ? -1 : x > y;
}

static int list_snapdir(struct nfs3_req *r, uint64_t root, uint64_t after, meta_dirent_fn fn,
			void *arg)
{
	struct snap_list l = {.m = r->n->p.meta, .root = root};
	meta_snapshot_each(l.m, list_fn, &l);
	if (l.err) {
		free(l.v);
		return l.err;
	}
	if (l.n)
		qsort(l.v, l.n, sizeof(*l.v), ent_cmp);
	for (uint32_t i = 0; i < l.n; i++) {
		uint64_t cookie = (uint64_t)l.v[i].index + 3;
		if (cookie <= after)
			continue;
		if (fn(arg, l.v[i].name, META_SNAP_FILEID(l.v[i].index, 0), cookie))
			break;
	}
	free(l.v);
	return 0;
}

struct stop_watch {
	meta_dirent_fn fn;
	void *arg;
	bool stopped;
};

static int watch_fn(void *arg, const char *name, uint64_t fileid, uint64_t cookie)
{
	struct stop_watch *w = arg;
	int rc = w->fn(w->arg, name, fileid, cookie);
	if (rc)
		w->stopped = true;
	return rc;
}

int nfs3_readdir_entries(struct nfs3_req *r, uint64_t dir, uint64_t after, meta_dirent_fn fn,
			 void *arg)
{
	struct meta *m = r->n->p.meta;
	if (nfs3_is_snap(dir) && META_SNAP_INDEX(dir) == META_SNAP_DIRS_INDEX)
		return list_snapdir(r, META_SNAP_LIVE(dir), after, fn, arg);
	if (nfs3_is_snap(dir) || dir != nfs3_export_root(r))
		return meta_readdir(m, dir, after, fn, arg);
	/* The export root: its entries, then .snapshots after every meta cookie. */
	struct stop_watch w = {.fn = fn, .arg = arg};
	if (after < NFS3_SNAPDIR_COOKIE) {
		int rc = meta_readdir(m, dir, after, watch_fn, &w);
		if (rc)
			return rc;
		if (!w.stopped)
			fn(arg, NFS3_SNAPDIR, nfs3_snapdir_id(dir), NFS3_SNAPDIR_COOKIE);
	}
	return 0;
}

/* ---- READ ---- */

int nfs3_snap_read(struct nfs3_req *r, uint64_t fileid, uint64_t off, uint32_t len, void *buf,
		   filevol_cb cb)
{
	struct meta *m = r->n->p.meta;
	struct meta_snapinfo si;
	if (META_SNAP_LIVE(fileid) == 0 || meta_snapshot_by_index(m, META_SNAP_INDEX(fileid), &si))
		return -ENOENT;
	meta_volume_name(m, META_SNAP_LIVE(fileid), r->vol, sizeof(r->vol));
	meta_snap_volsnap(si.name, r->snapvol, sizeof(r->snapvol));
	return filevol_snap_read(r->n->p.fv, r->vol, r->snapvol, off, len, buf, cb, r);
}
